//! The sampler decides when sources are read: once per `--sample-interval`,
//! every source concurrently and under `--sample-timeout`, and swaps the
//! result in as the new snapshot. A failing source is logged once per change
//! of state, not once per sample.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;
use tracing::{info, warn};

use crate::exec::guard::Guard;
use crate::model::snapshot::SnapshotHandle;
use crate::model::{
    Change, Failure, Filesystem, FsUsage, NodeSample, Reason, Rlimit, Runtime, Sampled, SourceId,
    SourceStatus,
};
use crate::sources::HostRoot;
use crate::sources::cri::{CriClient, ReportedFs};
use crate::sources::procfs::read_rlimit;
use crate::sources::statfs::FsProber;

#[derive(Clone, Debug)]
pub struct SamplerConfig {
    /// The host's root filesystem (`--path.rootfs`), where host paths are
    /// resolved.
    pub host: Arc<HostRoot>,
    /// Where the host's /proc is mounted (`--path.procfs`).
    pub procfs: PathBuf,
    /// The kubelet root dir as a host path (`--kubelet.root-dir`).
    pub kubelet_root_dir: String,
    /// Timeout of each source read.
    pub timeout: Duration,
    /// The sources to read; others are left unsampled.
    pub sources: BTreeSet<SourceId>,
}

/// What became of one source in one sample.
enum Outcome {
    Ok,
    Failed(String),
    /// Not read because a source it depends on failed; not logged again.
    Skipped(String),
}

struct Report {
    source: SourceId,
    outcome: Outcome,
    duration: Duration,
}

#[derive(Default)]
struct History {
    last_success: Option<SystemTime>,
    last_error: Option<String>,
}

pub struct Sampler {
    cfg: SamplerConfig,
    cri: CriClient,
    /// `--kubelet.root-dir` resolved inside the host root, once at start-up
    /// (kubelet does not move it while running).
    kubelet_root: Result<PathBuf, String>,
    /// The process's guarded calls (shared with the volume and pod halves).
    guard: Guard,
    prober: FsProber,
    history: Mutex<BTreeMap<SourceId, History>>,
}

impl Sampler {
    pub fn new(cfg: SamplerConfig, cri: CriClient, guard: Guard) -> Sampler {
        let kubelet_root = cfg
            .host
            .resolve(&cfg.kubelet_root_dir)
            .map_err(|e| format!("--kubelet.root-dir: {e}"));
        Sampler {
            cfg,
            cri,
            kubelet_root,
            prober: FsProber::new(guard.clone()),
            guard,
            history: Mutex::new(BTreeMap::new()),
        }
    }

    /// Reads every configured source once: the sampler's part of the snapshot.
    pub async fn sample(&self) -> NodeSample {
        let ((runtime, mut reports), (nodefs, nodefs_report), (rlimit, rlimit_report)) = tokio::join!(
            self.sample_runtime(),
            self.sample_nodefs(),
            self.sample_procfs()
        );
        reports.extend(nodefs_report);
        reports.extend(rlimit_report);
        let sources = self.record(reports);
        NodeSample {
            taken_at: SystemTime::now(),
            runtime,
            nodefs,
            rlimit,
            sources,
        }
    }

    /// Samples every `interval` until `shutdown` changes, publishing each
    /// sample as the node part of the board.
    pub async fn run(
        self: Arc<Self>,
        board: SnapshotHandle,
        interval: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate; the caller has just taken a snapshot.
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = ticker.tick() => board.publish_node(self.sample().await),
                _ = shutdown.changed() => return,
            }
        }
    }

    fn wants(&self, source: SourceId) -> bool {
        self.cfg.sources.contains(&source)
    }

    async fn sample_runtime(&self) -> (Sampled<Runtime>, Vec<Report>) {
        let mut reports = Vec::new();
        if !self.wants(SourceId::Cri) {
            return (None, reports);
        }
        let timeout = self.cfg.timeout;
        let start = Instant::now();
        let (version, info) =
            tokio::join!(self.cri.version(timeout), self.cri.image_fs_info(timeout));
        let answered = version.and_then(|v| info.map(|i| (v, i)));
        let (version, info) = match answered {
            Ok(pair) => {
                reports.push(report(SourceId::Cri, Outcome::Ok, start));
                pair
            }
            Err(e) => {
                let message = e.to_string();
                reports.push(report(
                    SourceId::Cri,
                    Outcome::Failed(message.clone()),
                    start,
                ));
                if self.wants(SourceId::ImageFs) {
                    let why = "not read: the container runtime did not answer".to_owned();
                    reports.push(report(SourceId::ImageFs, Outcome::Skipped(why), start));
                }
                return (Some(Err(message)), reports);
            }
        };
        let start = Instant::now();
        let image_fs = match info.image_filesystems.first() {
            Some(fs) => self.runtime_fs(fs, "image").await,
            None => Err(format!(
                "the container runtime at {} reports no image filesystem",
                self.cri.endpoint()
            )),
        };
        let container_fs = match info.container_filesystems.first() {
            Some(fs) => Some(self.runtime_fs(fs, "container").await),
            None => None,
        };
        let failures: Vec<String> = [Some(&image_fs), container_fs.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|r| r.as_ref().err().cloned())
            .collect();
        let outcome = if failures.is_empty() {
            Outcome::Ok
        } else {
            Outcome::Failed(failures.join("; "))
        };
        reports.push(report(SourceId::ImageFs, outcome, start));
        let runtime = Runtime {
            version,
            image_fs,
            container_fs,
        };
        (Some(Ok(runtime)), reports)
    }

    /// kubelet's merge: used bytes and inodes from the runtime, the rest
    /// from statfs of the mountpoint it names.
    async fn runtime_fs(&self, reported: &ReportedFs, what: &str) -> Result<Filesystem, String> {
        if reported.mountpoint.is_empty() {
            return Err(format!(
                "the container runtime reports a {what} filesystem without a mountpoint"
            ));
        }
        let local = self
            .resolve(&reported.mountpoint)
            .await
            .map_err(|e| format!("{what} filesystem mountpoint from the container runtime: {e}"))?;
        let reading = self
            .prober
            .probe(&local, self.cfg.timeout)
            .await
            .map_err(|e| e.message)?;
        Ok(Filesystem {
            path: reported.mountpoint.clone(),
            usage: FsUsage {
                used_bytes: reported.used_bytes,
                inodes_used: reported.inodes_used,
                ..reading.usage
            },
            device: reading.device,
        })
    }

    /// A host path the runtime names, resolved inside the host root on each
    /// sample (a few syscalls), so a symlink changed on the host is
    /// followed. Off the async runtime and under the sample timeout: a path
    /// lookup can hang on a dead mount like any other call.
    async fn resolve(&self, host: &str) -> Result<PathBuf, String> {
        let root = Arc::clone(&self.cfg.host);
        let owned = host.to_owned();
        self.guard
            .call(
                "resolving host path",
                Path::new(host),
                self.cfg.timeout,
                move |_| root.resolve(&owned).map_err(Into::into),
            )
            .await
            .map_err(|e| e.message)
    }

    async fn sample_nodefs(&self) -> (Sampled<Filesystem>, Option<Report>) {
        if !self.wants(SourceId::NodeFs) {
            return (None, None);
        }
        let start = Instant::now();
        let result = match &self.kubelet_root {
            Err(e) => Err(e.clone()),
            Ok(local) => self
                .prober
                .probe(local, self.cfg.timeout)
                .await
                .map(|reading| Filesystem {
                    path: self.cfg.kubelet_root_dir.clone(),
                    usage: reading.usage,
                    device: reading.device,
                })
                .map_err(|e| e.message),
        };
        let r = report(SourceId::NodeFs, outcome_of(&result), start);
        (Some(result), Some(r))
    }

    async fn sample_procfs(&self) -> (Sampled<Rlimit>, Option<Report>) {
        if !self.wants(SourceId::Procfs) {
            return (None, None);
        }
        let start = Instant::now();
        let result = self
            .guard
            .call("reading", &self.cfg.procfs, self.cfg.timeout, |procfs| {
                read_rlimit(procfs).map_err(|e| Failure::new(Reason::IoError, e.to_string()))
            })
            .await
            .map_err(|e| e.message);
        let r = report(SourceId::Procfs, outcome_of(&result), start);
        (Some(result), Some(r))
    }

    /// Logs changes of state and returns every sampled source's status.
    fn record(&self, reports: Vec<Report>) -> Vec<SourceStatus> {
        let mut history = self.history.lock().unwrap_or_else(PoisonError::into_inner);
        let now = SystemTime::now();
        reports
            .into_iter()
            .map(|r| {
                let h = history.entry(r.source).or_default();
                let error = match r.outcome {
                    Outcome::Ok => None,
                    Outcome::Failed(message) => Some(message),
                    // Not read because another source failed: that one was logged.
                    Outcome::Skipped(message) => {
                        return status(r.source, r.duration, h.last_success, Some(message));
                    }
                };
                match Change::of(h.last_error.as_ref(), error.as_ref()) {
                    Change::Failed(e) => warn!(source = %r.source, error = %e, "source failed; its series are left out until it recovers"),
                    Change::Recovered(was) => info!(source = %r.source, previous_error = %was, "source recovered"),
                    Change::Unchanged => {}
                }
                h.last_error.clone_from(&error);
                if error.is_none() {
                    h.last_success = Some(now);
                }
                status(r.source, r.duration, h.last_success, error)
            })
            .collect()
    }
}

fn status(
    source: SourceId,
    duration: Duration,
    last_success: Option<SystemTime>,
    error: Option<String>,
) -> SourceStatus {
    SourceStatus {
        source,
        up: error.is_none(),
        last_success,
        duration: Some(duration),
        error,
    }
}

fn report(source: SourceId, outcome: Outcome, start: Instant) -> Report {
    Report {
        source,
        outcome,
        duration: start.elapsed(),
    }
}

fn outcome_of<T>(result: &Result<T, String>) -> Outcome {
    match result {
        Ok(_) => Outcome::Ok,
        Err(e) => Outcome::Failed(e.clone()),
    }
}
