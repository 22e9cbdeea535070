//! Keeps kubelet's configuration in force current while `kubedf serve`
//! runs: the sources ([`crate::sources::kubelet_config::Sources`]) are read
//! again every `--kubelet.config-refresh-interval`, and at once when the
//! running kubelet is another process than the one read (its pid or start
//! time changed: kubelet restarted, perhaps with other flags). The check for
//! that is one read of `/proc/<pid>/stat` every tick (at most 10 s).
//!
//! A new configuration is published on the board, so the next scrape renders
//! with it. One from a source ranked below the one in force (configz, then
//! process, then file, then defaults) does not replace it: the source in
//! force could not be read (kubelet restarting, a file being rewritten, a
//! token rotating), and the last good configuration stays, with an error
//! naming the source and its cause, logged once per change.
//!
//! The thresholds, grace periods and GC percents follow at once (a scrape
//! renders with the board's configuration). Each new configuration is also
//! sent on `changes`, for the app to build its samplers again when the root
//! dir, CRI endpoint, `podLogsDir` or `volumeStatsAggPeriod` changed (the
//! app's `follow` loop, which starts this one).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use procfs_core::FromRead as _;
use procfs_core::process::Stat;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::kubelet::config::{ConfigSource, KubeletConfig};
use crate::model::snapshot::SnapshotHandle;
use crate::sources::kubelet_config::{ProcessId, Sources};

/// The longest time between two checks that the kubelet is the same process.
const MAX_CHECK: Duration = Duration::from_secs(10);

/// kubedf's order of the sources: lower is preferred.
fn rank(source: ConfigSource) -> u8 {
    match source {
        ConfigSource::Configz => 0,
        ConfigSource::Process => 1,
        ConfigSource::File => 2,
        ConfigSource::Defaults => 3,
    }
}

/// Whether `new` replaces the configuration in force: only a source ranked
/// at least as high does.
pub fn replaces(in_force: &KubeletConfig, new: &KubeletConfig) -> bool {
    rank(new.source) <= rank(in_force.source)
}

/// Whether the process `id` still runs (same pid, same start time).
fn still_running(procfs: &Path, (pid, start): ProcessId) -> bool {
    std::fs::File::open(procfs.join(pid.to_string()).join("stat"))
        .ok()
        .and_then(|f| Stat::from_read(f).ok())
        .is_some_and(|s| s.starttime == start)
}

/// Watches until `shutdown` changes; `process` is the kubelet the
/// configuration in force was read with. Each configuration published on
/// `board` is sent on `changes` too.
pub async fn run(
    sources: Sources,
    board: SnapshotHandle,
    changes: watch::Sender<Arc<KubeletConfig>>,
    process: Option<ProcessId>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(every.min(MAX_CHECK));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut process = process;
    let mut last_read = Instant::now();
    let mut last_problem: Option<String> = None;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => return,
        }
        let restarted = match process {
            Some(id) => {
                let procfs = sources.host.procfs.clone();
                !tokio::task::spawn_blocking(move || still_running(&procfs, id))
                    .await
                    .unwrap_or(false)
            }
            None => false,
        };
        if !restarted && last_read.elapsed() < every {
            continue;
        }
        last_read = Instant::now();
        let in_force = board.kubelet();
        let problem = match sources.read().await {
            Err(e) => Some(format!(
                "{e}; the configuration from {} stays in force",
                in_force.origin
            )),
            Ok(reading) => {
                process = reading.process;
                let failures: Vec<String> = reading
                    .passed_over
                    .iter()
                    .map(|(source, cause)| format!("{}: {cause}", source.name()))
                    .collect();
                if replaces(&in_force, &reading.config) {
                    if *in_force != reading.config {
                        info!(
                            source = reading.config.source.name(),
                            origin = %reading.config.origin,
                            restarted,
                            "kubelet configuration changed; now in force"
                        );
                        let config = Arc::new(reading.config);
                        board.publish_kubelet(Arc::clone(&config));
                        changes.send_replace(config);
                    }
                    (!failures.is_empty()).then(|| failures.join("; "))
                } else {
                    Some(format!(
                        "kubelet configuration source {} cannot be read ({}); the configuration from {} stays in force",
                        in_force.source.name(),
                        failures.join("; "),
                        in_force.origin
                    ))
                }
            }
        };
        if problem != last_problem {
            match &problem {
                Some(p) => warn!(error = %p, "kubelet configuration"),
                None => info!("kubelet configuration read again from every source before it"),
            }
            last_problem = problem;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_source(source: ConfigSource) -> KubeletConfig {
        let mut c = KubeletConfig::defaults("/var/lib/kubelet/config.yaml".into());
        c.source = source;
        c
    }

    #[test]
    fn only_a_source_as_good_replaces_the_one_in_force() {
        use ConfigSource::*;
        for (in_force, new, want) in [
            (Process, Process, true),
            (Process, Configz, true),
            (Process, File, false),
            (Process, Defaults, false),
            (Configz, Process, false),
            (File, Process, true),
            (Defaults, File, true),
            (File, Defaults, false),
        ] {
            assert_eq!(
                replaces(&with_source(in_force), &with_source(new)),
                want,
                "{in_force:?} then {new:?}"
            );
        }
    }

    #[test]
    fn this_process_is_still_running_and_another_start_time_is_not() {
        let me = std::process::id() as i32;
        let stat = Stat::from_read(std::fs::File::open("/proc/self/stat").unwrap()).unwrap();
        assert!(still_running(Path::new("/proc"), (me, stat.starttime)));
        assert!(!still_running(Path::new("/proc"), (me, stat.starttime + 1)));
        assert!(!still_running(
            Path::new("/nonexistent"),
            (me, stat.starttime)
        ));
    }
}
