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

use crate::model::snapshot::SnapshotHandle;
use crate::model::{
    Filesystem, FsUsage, NodeSample, Rlimit, Runtime, Sampled, SourceId, SourceStatus,
};
use crate::sources::HostRoot;
use crate::sources::cri::{CriClient, ReportedFs};
use crate::sources::inflight::InFlightSet;
use crate::sources::lane::{Lane, LaneError};
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
    prober: FsProber,
    /// The runtime's mountpoints being resolved, one call at a time each.
    resolving: InFlightSet,
    history: Mutex<BTreeMap<SourceId, History>>,
}

impl Sampler {
    pub fn new(cfg: SamplerConfig, cri: CriClient) -> Sampler {
        let kubelet_root = cfg
            .host
            .resolve(&cfg.kubelet_root_dir)
            .map_err(|e| format!("--kubelet.root-dir: {e}"));
        Sampler {
            cfg,
            cri,
            kubelet_root,
            prober: FsProber::default(),
            resolving: InFlightSet::default(),
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
            .map_err(|e| e.to_string())?;
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
        let Some(guard) = self.resolving.claim(Path::new(host)) else {
            return Err(format!(
                "resolving {host:?} is still hung from an earlier call"
            ));
        };
        let root = Arc::clone(&self.cfg.host);
        let owned = host.to_owned();
        let task = Lane::global().run(self.cfg.timeout, move || {
            let _guard = guard;
            root.resolve(&owned)
        });
        match task.await {
            Ok(resolved) => resolved.map_err(|e| e.to_string()),
            Err(e) => Err(format!("resolving {host:?}: {e}")),
        }
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
                .map_err(|e| e.to_string()),
        };
        let r = report(SourceId::NodeFs, outcome_of(&result), start);
        (Some(result), Some(r))
    }

    async fn sample_procfs(&self) -> (Sampled<Rlimit>, Option<Report>) {
        if !self.wants(SourceId::Procfs) {
            return (None, None);
        }
        let start = Instant::now();
        let procfs = self.cfg.procfs.clone();
        let task = Lane::global().run(self.cfg.timeout, move || read_rlimit(&procfs));
        let result = match task.await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(LaneError::Timeout(after)) => Err(format!(
                "reading {} did not finish within {after:?}",
                self.cfg.procfs.display(),
            )),
            Err(e) => Err(format!("reading {}: {e}", self.cfg.procfs.display())),
        };
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
                    Outcome::Ok => {
                        if let Some(previous) = h.last_error.take() {
                            info!(source = %r.source, previous_error = %previous, "source recovered");
                        }
                        h.last_success = Some(now);
                        None
                    }
                    Outcome::Failed(message) => {
                        if h.last_error.as_deref() != Some(message.as_str()) {
                            warn!(source = %r.source, error = %message, "source failed; its series are left out until it recovers");
                            h.last_error = Some(message.clone());
                        }
                        Some(message)
                    }
                    Outcome::Skipped(message) => Some(message),
                };
                SourceStatus {
                    source: r.source,
                    up: error.is_none(),
                    last_success: h.last_success,
                    duration: Some(r.duration),
                    error,
                }
            })
            .collect()
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
