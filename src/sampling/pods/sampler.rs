//! When and how the parts of each running pod are measured, on the
//! measurement [`Scheduler`](crate::sampling::scheduler::Scheduler) the
//! volume sampler also uses, waking on the same grid. Like kubelet's volume
//! stats cache: each du-method walk (a container's log dir, a local
//! ephemeral volume, the pod's log files, etc-hosts) is refreshed every
//! `--volume-stats-agg-period`, jittered to between 1x and 2x, at most one in
//! flight per path; a failed one is retried with backoff. Walks run on the
//! walk pool's low-priority threads within the walk budget. A pod's own
//! files (its log files and etc-hosts) are one key of the schedule, and the
//! files of every pod due at one wake-up go out as one batch, as the volume
//! loop's statfs calls do. The runtime is asked for its running containers
//! and their writable layers every 1x-2x `cri_period`; a pod the runtime
//! cannot answer for (its own answer too large) has no containers, only an
//! error. The loop sleeps until something is due, a result comes back or
//! the pod watch changes; it never scans every part on a timer. A scrape
//! only reads the last published table. Its seams (the pod watch, the
//! runtime, [`PartIo`]) are type parameters, so `pods/tests.rs` runs it on
//! fakes and a paused clock.

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use indexmap::IndexMap;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::exec::guard::Guard;
use crate::model::SourceStatus;
use crate::model::pod::{
    ContainerRow, EphemeralVolumeRow, Failure, Measured, PodRow, PodTable, Reason, Usage,
};
use crate::model::snapshot::SnapshotHandle;
use crate::model::{Change, PodVolumes};
use crate::sampling::scheduler::{Outcome, Policy, Scheduler, Ticket, sleep_until};
use crate::sources::HostRoot;
use crate::sources::cri::{CriClient, RunningContainer, RuntimeContainers};
use crate::sources::io::Io;
use crate::sources::kube::Kube;
use crate::sources::seams::{ContainerRuntime, PodSource};
use crate::sources::walk::PoolError;

#[derive(Clone, Debug)]
pub struct PodConfig {
    /// The host's root filesystem (`--path.rootfs`), where host paths are
    /// resolved.
    pub host: Arc<HostRoot>,
    /// The kubelet root dir as a host path.
    pub kubelet_root_dir: String,
    /// kubelet's `podLogsDir` as a host path.
    pub pod_logs_dir: String,
    /// Refresh period of each walk (jittered to 1x-2x).
    pub period: Duration,
    /// How often the runtime is asked for writable layers (jittered to 1x-2x).
    pub cri_period: Duration,
    /// Timeout of each CRI call and file stat.
    pub timeout: Duration,
    /// Time budget of one walk.
    pub walk_budget: Duration,
}

/// The first retry of a failed walk (a directory not there yet); doubled up
/// to the period.
const WALK_RETRY: Duration = Duration::from_secs(5);
/// Results arrive in batches, spread over the period by the jitter: the
/// table is republished at most this often (a scrape reads it every 15 s or
/// so), so a node with thousands of parts does not republish per result.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);
/// A change of times only (a part measured again with the same figures) is
/// republished at most this often: only `/stats/summary` shows it, and its
/// readings are up to twice the period old anyway. Republished at each
/// wake-up, every few seconds, the table of 1,000 pods was rebuilt for it.
const TIMES_EVERY: Duration = Duration::from_secs(30);
/// Walks in flight at once. They queue on the walk pool's threads, so this
/// bounds only that queue: small enough that a walk queued behind others
/// keeps most of its budget.
const WALKS_IN_FLIGHT: usize = 32;
/// Pods whose files are being measured at once. Their stats are a few
/// microseconds each, queued on the measurement lane as one job per
/// wake-up, so this is set well above what one wake-up gathers (about 60
/// pods at 1,000 pods and a 1 m period): bounded by the walks' 32 as well,
/// the stats went out in rounds, each with its task, lane job and message.
const FILES_IN_FLIGHT: usize = 1024;

/// What changed in the table since it was last published.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Dirty {
    Clean,
    /// Only the times of readings, which only `/stats/summary` shows: the
    /// exposition's pod families are not rendered again for them.
    Times,
    /// Figures, errors, pods or containers.
    Figures,
}

/// One du-method measurement of a pod.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Part {
    /// A container's log dir, by container name.
    Logs(String),
    /// A local ephemeral volume's dir, by volume name.
    Volume(String),
    /// The files directly in the pod's log dir.
    PodLogs,
    EtcHosts,
}

/// A walked part of a pod ([`Part::Logs`], [`Part::Volume`]), by the pod's
/// uid: what the walk scheduler plans. Its plan is the part's path; a new
/// path is a new plan. The uid is shared by the pod's parts and the
/// scheduler's copies of their keys (its table and its queue), not one
/// string each.
type Key = (Arc<str>, Part);

/// A pod's own files, planned as one key under the pod's uid: the files
/// directly in its log dir ([`Part::PodLogs`]) and etc-hosts
/// ([`Part::EtcHosts`]), each a stat of microseconds. Measured together,
/// the pod's files cost one key, one deadline and one result per pod
/// instead of two; each path is still its own guarded call (its own
/// timeout and one call in flight), in the wake-up's one lane job. A path
/// that cannot be formed is `None`, reported in its part's slot.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FilePaths {
    pod_logs: Option<PathBuf>,
    etc_hosts: Option<PathBuf>,
}

impl FilePaths {
    /// The parts and their paths, in order.
    fn parts(&self) -> impl Iterator<Item = (Part, &PathBuf)> {
        let pod_logs = self.pod_logs.iter().map(|p| (Part::PodLogs, p));
        pod_logs.chain(self.etc_hosts.iter().map(|p| (Part::EtcHosts, p)))
    }
}

struct Entry {
    /// The pod as the watch's store holds it (shared, not copied).
    pod: Arc<PodVolumes>,
    /// Every part the pod has, with its last result (`None` before the first).
    results: PartResults,
    /// The row as last built; `None` once anything in it changed.
    row: Option<Arc<PodRow>>,
}

/// A pod's parts and their last results: a few (two, plus one per running
/// container and local volume), so a vector searched in order, allocated
/// to fit. A `BTreeMap` of them took a node of 11 slots per pod: 0.8 MB
/// at 1,000 pods (massif, `docs/performance.md`).
#[derive(Debug, Default)]
struct PartResults(Vec<(Part, Measured)>);

impl PartResults {
    fn get(&self, part: &Part) -> Option<&Measured> {
        self.0.iter().find(|(p, _)| p == part).map(|(_, m)| m)
    }

    fn get_mut(&mut self, part: &Part) -> Option<&mut Measured> {
        self.0.iter_mut().find(|(p, _)| p == part).map(|(_, m)| m)
    }

    fn insert(&mut self, part: Part, result: Measured) {
        match self.get_mut(&part) {
            Some(slot) => *slot = result,
            None => {
                self.0.reserve_exact(1);
                self.0.push((part, result));
            }
        }
    }

    fn remove(&mut self, part: &Part) {
        self.0.retain(|(p, _)| p != part);
    }

    fn parts(&self) -> impl Iterator<Item = &Part> {
        self.0.iter().map(|(p, _)| p)
    }
}

/// The runtime's running containers, by pod uid; an error for a pod the
/// runtime could not answer for.
type Containers = HashMap<String, Result<Vec<RunningContainer>, Failure>>;

/// A measurement that came back.
enum Done {
    Walk {
        key: Key,
        ticket: Ticket,
        result: Result<Usage, Failure>,
    },
    /// A pod's files: a result per part that had a path.
    Files {
        uid: Arc<str>,
        ticket: Ticket,
        results: Vec<(Part, Result<Usage, Failure>)>,
    },
}

/// How a part of a pod is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartKind {
    /// A du-method walk of a directory (a container's logs, a volume).
    Walk,
    /// The du of the files directly in a directory (the pod's log files).
    Files,
    /// The du of one file (etc-hosts).
    File,
}

/// The I/O seam of the pod loop: one measurement of one part.
pub trait PartIo: Send + Sync + 'static {
    fn measure(
        &self,
        kind: PartKind,
        path: PathBuf,
    ) -> impl std::future::Future<Output = Result<Usage, Failure>> + Send;

    /// Several stats ([`PartKind::Files`], [`PartKind::File`]) due at one
    /// wake-up, answered in order. By default each on its own.
    fn measure_batch(
        &self,
        parts: Vec<(PartKind, PathBuf)>,
    ) -> impl std::future::Future<Output = Vec<Result<Usage, Failure>>> + Send {
        async move {
            futures::future::join_all(parts.into_iter().map(|(k, p)| self.measure(k, p))).await
        }
    }
}

/// The real I/O: walks on the process's walk pool within the walk budget,
/// stats as guarded calls.
pub struct PodIo {
    pub io: Io,
    pub walk_budget: Duration,
    pub timeout: Duration,
}

impl PartIo for PodIo {
    fn measure(
        &self,
        kind: PartKind,
        path: PathBuf,
    ) -> impl std::future::Future<Output = Result<Usage, Failure>> + Send {
        let (io, budget, timeout) = (self.io.clone(), self.walk_budget, self.timeout);
        async move {
            match kind {
                PartKind::Walk => walked(io.walkers.walk(&path, budget, timeout).await),
                PartKind::Files => stat_files(&io.guard, &path, true, timeout).await,
                PartKind::File => stat_files(&io.guard, &path, false, timeout).await,
            }
        }
    }

    /// The stats as one guarded batch: one lane job, the per-path timeout
    /// and one-in-flight rule kept. A walk, should one be handed in, is
    /// measured on its own.
    async fn measure_batch(&self, parts: Vec<(PartKind, PathBuf)>) -> Vec<Result<Usage, Failure>> {
        let mut answers: Vec<Option<Result<Usage, Failure>>> = vec![None; parts.len()];
        let (mut stats_at, mut stats, mut walks) = (Vec::new(), Vec::new(), Vec::new());
        for (i, (kind, path)) in parts.into_iter().enumerate() {
            let files_only = match kind {
                PartKind::Files => true,
                PartKind::File => false,
                PartKind::Walk => {
                    walks.push((i, path));
                    continue;
                }
            };
            stats_at.push(i);
            let call = move |p: &Path| count(p, files_only);
            stats.push((stat_kind(files_only), path, call));
        }
        let counted = self.io.guard.call_batch(stats, self.timeout).await;
        for (i, r) in stats_at.into_iter().zip(counted) {
            answers[i] = Some(r.map(counted_usage));
        }
        for (i, path) in walks {
            answers[i] = Some(self.measure(PartKind::Walk, path).await);
        }
        answers
            .into_iter()
            .map(|a| {
                a.unwrap_or_else(|| Err(Failure::new(Reason::IoError, "a part was not measured")))
            })
            .collect()
    }
}

/// The pod loop. Its seams: `P`, the node's pods (the pod watch); `R`, the
/// container runtime; `M`, the parts' I/O. The defaults are the real ones;
/// the unit tests hand in fakes.
pub struct PodSampler<P = Kube, R = CriClient, M = PodIo> {
    cfg: PodConfig,
    source: P,
    events: watch::Receiver<u64>,
    cri: R,
    kubelet_root: PathBuf,
    logs_root: PathBuf,
    io: Arc<M>,
    /// By uid, kept sorted by namespace and name (the table's order), so a
    /// publication walks them in order without a lookup each.
    entries: IndexMap<Arc<str>, Entry>,
    /// The runtime's last answer; `None` before the first.
    containers: Option<Result<Containers, Failure>>,
    /// The runtime was last asked pod by pod (its node-wide answer too large).
    per_pod: bool,
    /// When the runtime is asked next (one key).
    cri_calls: Scheduler<(), ()>,
    walks: Scheduler<Key, PathBuf>,
    /// Each pod's files, by uid.
    files: Scheduler<Arc<str>, FilePaths>,
    /// Walks started whose result has not come back.
    walks_in_flight: usize,
    /// Pods whose files are being measured.
    files_in_flight: usize,
    pods_version: Option<u64>,
    /// What in the table changed since it was last published.
    dirty: Dirty,
    published_at: Option<Instant>,
    published_source: Option<SourceStatus>,
    /// Results come back a batch to a message.
    tx: mpsc::UnboundedSender<Vec<Done>>,
    rx: mpsc::UnboundedReceiver<Vec<Done>>,
}

impl PodSampler {
    pub fn new(cfg: PodConfig, kube: Kube, cri: CriClient, io: Io) -> Result<PodSampler, String> {
        // Both resolved once, at start-up: kubelet does not move them while
        // running. A log dir that does not exist yet keeps its path as
        // written below its last existing directory.
        let kubelet_root = cfg
            .host
            .resolve(&cfg.kubelet_root_dir)
            .map_err(|e| format!("--kubelet.root-dir: {e}"))?;
        let logs_root = cfg
            .host
            .resolve(&cfg.pod_logs_dir)
            .map_err(|e| format!("kubelet config podLogsDir: {e}"))?;
        let part_io = PodIo {
            io,
            walk_budget: cfg.walk_budget,
            timeout: cfg.timeout,
        };
        Ok(PodSampler::with_seams(
            cfg,
            (kubelet_root, logs_root),
            kube,
            cri,
            part_io,
        ))
    }
}

impl<P: PodSource, R: ContainerRuntime, M: PartIo> PodSampler<P, R, M> {
    /// The loop on the given seams; `(kubelet root, pod logs dir)` already
    /// resolved.
    pub fn with_seams(
        cfg: PodConfig,
        (kubelet_root, logs_root): (PathBuf, PathBuf),
        source: P,
        cri: R,
        io: M,
    ) -> PodSampler<P, R, M> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut cri_calls = Scheduler::new(Policy {
            period: cfg.cri_period,
            retry: cfg.cri_period,
            max_retry: cfg.cri_period,
        });
        cri_calls.plan((), (), Instant::now());
        let policy = Policy {
            period: cfg.period,
            retry: WALK_RETRY.min(cfg.period),
            max_retry: cfg.period,
        };
        let (walks, files) = (Scheduler::new(policy), Scheduler::new(policy));
        PodSampler {
            events: source.subscribe(),
            cfg,
            source,
            cri,
            kubelet_root,
            logs_root,
            io: Arc::new(io),
            entries: IndexMap::new(),
            containers: None,
            per_pod: false,
            cri_calls,
            walks,
            files,
            walks_in_flight: 0,
            files_in_flight: 0,
            pods_version: None,
            dirty: Dirty::Figures,
            published_at: None,
            published_source: None,
            tx,
            rx,
        }
    }

    /// The Kubernetes API as a source.
    fn source(&self) -> SourceStatus {
        self.source.source_status()
    }

    /// The table as it stands: the rows of pods that changed are built
    /// anew, the others shared.
    pub fn table(&mut self) -> PodTable {
        let mut rows = Vec::with_capacity(self.entries.len());
        for entry in self.entries.values_mut() {
            let row = match &entry.row {
                Some(row) => Arc::clone(row),
                None => {
                    let row = Arc::new(build_row(&entry.pod, &entry.results, &self.containers));
                    entry.row = Some(Arc::clone(&row));
                    row
                }
            };
            rows.push(row);
        }
        PodTable {
            rows,
            source: self.source(),
        }
    }

    /// Measures every pod once (for `kubedf metrics` and `kubedf df`).
    pub async fn sample_once(&mut self) -> PodTable {
        if !self.source.wait_synced(self.cfg.timeout).await {
            warn!(
                "the pod list did not arrive within {:?}; reporting no pods",
                self.cfg.timeout
            );
        }
        self.reconcile().await;
        // Everything was due at once; retries come 5 s or more after a
        // failure, so this waits only for the first walks.
        let deadline = Instant::now() + self.cfg.walk_budget + self.cfg.timeout * 3;
        while self.walks_in_flight + self.files_in_flight > 0 {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(done)) => {
                    self.apply_all(done, Instant::now());
                    self.start_due(Instant::now());
                }
                _ => break,
            }
        }
        self.table()
    }

    /// Refreshes pods until `shutdown` changes, publishing changes into the
    /// snapshot (at most once per [`PUBLISH_EVERY`]).
    pub async fn run(mut self, handle: SnapshotHandle, mut shutdown: watch::Receiver<bool>) {
        loop {
            self.reconcile().await;
            let publish_at = self.publish(&handle, Instant::now());
            // With every slot taken, what is due waits for a result.
            let walks = (self.walks_in_flight < WALKS_IN_FLIGHT)
                .then(|| self.walks.next_wake())
                .flatten();
            let files = (self.files_in_flight < FILES_IN_FLIGHT)
                .then(|| self.files.next_wake())
                .flatten();
            let next = [walks, files, self.cri_calls.next_wake(), publish_at]
                .into_iter()
                .flatten()
                .min();
            tokio::select! {
                _ = sleep_until(next) => {}
                changed = self.events.changed() => {
                    if changed.is_err() {
                        // The watch is gone: only the timers are left.
                        self.events = watch::channel(0).1;
                    }
                }
                Some(done) = self.rx.recv() => {
                    // Results come in bursts: take what is there.
                    self.apply_all(done, Instant::now());
                    while let Ok(done) = self.rx.try_recv() {
                        self.apply_all(done, Instant::now());
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Publishes the table if it changed and the last publication is old
    /// enough; otherwise says when it may be published.
    fn publish(&mut self, handle: &SnapshotHandle, now: Instant) -> Option<Instant> {
        let source = self.source();
        if self.published_source.as_ref() != Some(&source) {
            self.dirty = Dirty::Figures;
        }
        if self.dirty == Dirty::Clean {
            return None;
        }
        let wait = match self.dirty {
            Dirty::Times => TIMES_EVERY,
            _ => PUBLISH_EVERY,
        };
        if let Some(at) = self.published_at
            && now < at + wait
        {
            return Some(at + wait);
        }
        let dirty = std::mem::replace(&mut self.dirty, Dirty::Clean);
        self.published_at = Some(now);
        self.published_source = Some(source);
        let table = Arc::new(self.table());
        match dirty {
            Dirty::Times => handle.publish_pod_times(table),
            Dirty::Figures | Dirty::Clean => handle.publish_pods(Some(table)),
        }
        None
    }

    /// Asks the runtime when that is due, brings the entries in line with
    /// the running pods and their containers, starts the due walks.
    async fn reconcile(&mut self) {
        let mut resync = false;
        if let Some(due) = self.cri_calls.pop_due(Instant::now()) {
            let answer = self
                .cri
                .running_containers(self.cfg.timeout)
                .await
                .map(|r| self.by_pod(r))
                .map_err(|e| Failure::new(Reason::CriUnavailable, e));
            let outcome = Outcome::of(&answer);
            self.cri_calls
                .finish(&due.key, due.ticket, outcome, Instant::now());
            let before = self.containers.as_ref().and_then(|c| c.as_ref().err());
            match Change::of(before, answer.as_ref().err()) {
                Change::Failed(e) => {
                    warn!(error = %e.message, "container runtime failed; pods' rootfs and logs are not reported")
                }
                Change::Recovered(_) => info!("container runtime answers again"),
                Change::Unchanged => {}
            }
            if let Ok(new) = &answer {
                self.log_pod_failures(new);
            }
            if self.containers.as_ref() != Some(&answer) {
                match (&self.containers, &answer) {
                    // Only the pods whose containers changed get new rows.
                    (Some(Ok(old)), Ok(new)) => {
                        for (uid, entry) in &mut self.entries {
                            if old.get(&**uid) != new.get(&**uid) {
                                entry.row = None;
                            }
                        }
                    }
                    _ => self.entries.values_mut().for_each(|e| e.row = None),
                }
                self.containers = Some(answer);
                resync = true;
            }
        }
        let version = self.source.version();
        if self.pods_version != Some(version) {
            self.pods_version = Some(version);
            resync = true;
        }
        // Once, whether the containers, the pods or both changed.
        if resync {
            self.sync(Instant::now());
        }
        self.start_due(Instant::now());
    }

    /// Which parts each running pod has: its volumes, its running
    /// containers' log dirs, its log files and etc-hosts. A part that is new
    /// or has a new path is planned (due at once); a part whose path cannot
    /// be formed is reported as such and not planned.
    fn sync(&mut self, now: Instant) {
        self.dirty = Dirty::Figures;
        let pods: Vec<Arc<PodVolumes>> = self
            .source
            .pods()
            .into_iter()
            .filter(|p| p.running)
            .collect();
        let wanted: HashSet<&str> = pods.iter().map(|p| p.uid.as_str()).collect();
        self.entries.retain(|uid, _| wanted.contains(&**uid));
        self.walks.retain(|(uid, _)| wanted.contains(&**uid));
        self.files.retain(|uid| wanted.contains(&**uid));
        for pod in pods {
            let parts = self.parts_of(&pod);
            let index = match self.entries.get_index_of(pod.uid.as_str()) {
                Some(index) => index,
                None => {
                    let entry = Entry {
                        pod: Arc::clone(&pod),
                        results: PartResults::default(),
                        row: None,
                    };
                    self.entries
                        .insert_full(Arc::from(pod.uid.as_str()), entry)
                        .0
                }
            };
            let Some((uid, entry)) = self.entries.get_index_mut(index) else {
                continue;
            };
            // The entry's uid, which the scheduler's keys share.
            let uid = Arc::clone(uid);
            if entry.pod != pod {
                entry.pod = Arc::clone(&pod);
                entry.row = None;
            }
            let keep: HashSet<&Part> = parts.iter().map(|(p, _)| p).collect();
            let gone: Vec<Part> = entry
                .results
                .parts()
                .filter(|p| !keep.contains(p))
                .cloned()
                .collect();
            for part in gone {
                entry.results.remove(&part);
                entry.row = None;
                self.walks.remove(&(uid.clone(), part));
            }
            let mut files = FilePaths {
                pod_logs: None,
                etc_hosts: None,
            };
            for (part, path) in parts {
                let result = match (&part, path) {
                    (Part::PodLogs, Ok(path)) => {
                        files.pod_logs = Some(path);
                        continue;
                    }
                    (Part::EtcHosts, Ok(path)) => {
                        files.etc_hosts = Some(path);
                        continue;
                    }
                    (Part::PodLogs | Part::EtcHosts, Err(e)) => Some(Err(e)),
                    (_, Ok(path)) => {
                        if !self.walks.plan((uid.clone(), part.clone()), path, now) {
                            continue;
                        }
                        // A new path: the last figure was for the old one.
                        None
                    }
                    (_, Err(e)) => {
                        self.walks.remove(&(uid.clone(), part.clone()));
                        Some(Err(e))
                    }
                };
                entry.set(part, result);
            }
            if files.pod_logs.is_none() && files.etc_hosts.is_none() {
                self.files.remove(&uid);
            } else if self.files.plan(uid, files.clone(), now) {
                // New paths: the last figures were for the old ones.
                for (part, _) in files.parts() {
                    entry.set(part, None);
                }
            }
        }
        self.entries.sort_by(|_, a, _, b| {
            (&a.pod.namespace, &a.pod.name).cmp(&(&b.pod.namespace, &b.pod.name))
        });
    }

    fn parts_of(&self, pod: &PodVolumes) -> Vec<(Part, Result<PathBuf, Failure>)> {
        let mut parts = Vec::new();
        let log_dir = pod_log_dir(&self.logs_root, pod);
        if let Some(Ok(containers)) = &self.containers {
            let running = containers.get(&pod.uid).and_then(|r| r.as_ref().ok());
            for c in running.into_iter().flatten() {
                let path = log_dir.clone().and_then(|d| join(d, &c.name));
                parts.push((Part::Logs(c.name.clone()), path));
            }
        }
        let pod_dir = join(self.kubelet_root.join("pods"), &pod.uid);
        for v in &pod.storage.volumes {
            let path = pod_dir
                .clone()
                .and_then(|d| join(d.join("volumes").join(v.kind.plugin_dir()), &v.name));
            parts.push((Part::Volume(v.name.clone()), path));
        }
        parts.push((Part::PodLogs, log_dir));
        parts.push((Part::EtcHosts, pod_dir.map(|d| d.join("etc-hosts"))));
        parts
    }

    /// Starts the parts that are due: the pods' files as one batch, one
    /// task and one message for all of them; the walks one task each, so a
    /// long walk holds up no other result.
    fn start_due(&mut self, now: Instant) {
        while self.walks_in_flight < WALKS_IN_FLIGHT {
            let Some(due) = self.walks.pop_due(now) else {
                break;
            };
            self.walks_in_flight += 1;
            let (io, tx) = (Arc::clone(&self.io), self.tx.clone());
            tokio::spawn(async move {
                let result = io.measure(PartKind::Walk, due.plan).await;
                let _ = tx.send(vec![Done::Walk {
                    key: due.key,
                    ticket: due.ticket,
                    result,
                }]);
            });
        }
        let mut pods = Vec::new();
        while self.files_in_flight < FILES_IN_FLIGHT {
            let Some(due) = self.files.pop_due(now) else {
                break;
            };
            self.files_in_flight += 1;
            pods.push(due);
        }
        if pods.is_empty() {
            return;
        }
        let (io, tx) = (Arc::clone(&self.io), self.tx.clone());
        tokio::spawn(async move {
            let stats = pods
                .iter()
                .flat_map(|due| due.plan.parts())
                .map(|(part, path)| (file_kind(&part), path.clone()))
                .collect();
            let mut results = io.measure_batch(stats).await.into_iter();
            let done = pods
                .into_iter()
                .map(|due| Done::Files {
                    results: due
                        .plan
                        .parts()
                        .map(|(part, _)| {
                            let result = results.next().unwrap_or_else(|| {
                                Err(Failure::new(Reason::IoError, "a part was not measured"))
                            });
                            (part, result)
                        })
                        .collect(),
                    uid: due.key,
                    ticket: due.ticket,
                })
                .collect();
            let _ = tx.send(done);
        });
    }

    /// The runtime's answer by pod, logging when it starts or stops being
    /// asked pod by pod.
    fn by_pod(&mut self, answer: RuntimeContainers) -> Containers {
        let why = answer.per_pod_because.as_ref().map(|_| ());
        match Change::of(self.per_pod.then_some(&()), why.as_ref()) {
            Change::Failed(()) => {
                let why = answer.per_pod_because.as_deref().unwrap_or_default();
                warn!(error = %why, "the runtime's node-wide answer is too large; asking it pod by pod")
            }
            Change::Recovered(()) => info!("the runtime's node-wide answer fits again"),
            Change::Unchanged => {}
        }
        self.per_pod = answer.per_pod_because.is_some();
        group_by_pod(answer)
    }

    /// Logs each pod whose containers the runtime cannot tell, or can again,
    /// once per change.
    fn log_pod_failures(&self, new: &Containers) {
        let old = match &self.containers {
            Some(Ok(old)) => Some(old),
            _ => None,
        };
        let failed = |all: Option<&Containers>, uid: &str| {
            all.and_then(|a| a.get(uid))
                .and_then(|r| r.as_ref().err())
                .cloned()
        };
        let uids = new.keys().chain(old.into_iter().flat_map(|o| o.keys()));
        for uid in uids.collect::<HashSet<_>>() {
            let pod = self
                .entries
                .get(uid.as_str())
                .map(|e| format!("{}/{}", e.pod.namespace, e.pod.name))
                .unwrap_or_else(|| uid.clone());
            let (before, now) = (failed(old, uid), failed(Some(new), uid));
            match Change::of(before.as_ref(), now.as_ref()) {
                Change::Failed(e) => warn!(
                    pod = %pod,
                    error = %e.message,
                    "the runtime cannot tell this pod's containers; its rootfs and logs are not reported"
                ),
                // A pod that is gone has not recovered.
                Change::Recovered(_) if new.contains_key(uid) => {
                    info!(pod = %pod, "the runtime tells this pod's containers again")
                }
                _ => {}
            }
        }
    }

    fn apply_all(&mut self, done: Vec<Done>, now: Instant) {
        for one in done {
            self.apply(one, now);
        }
    }

    fn apply(&mut self, done: Done, now: Instant) {
        let (uid, results) = match done {
            Done::Walk {
                key,
                ticket,
                result,
            } => {
                self.walks_in_flight = self.walks_in_flight.saturating_sub(1);
                if !self.walks.finish(&key, ticket, Outcome::of(&result), now) {
                    return;
                }
                (key.0, vec![(key.1, result)])
            }
            Done::Files {
                uid,
                ticket,
                results,
            } => {
                self.files_in_flight = self.files_in_flight.saturating_sub(1);
                // A failed stat retries both, with backoff.
                let outcome = match results.iter().all(|(_, r)| r.is_ok()) {
                    true => Outcome::Done,
                    false => Outcome::Failed,
                };
                if !self.files.finish(&uid, ticket, outcome, now) {
                    return;
                }
                (uid, results)
            }
        };
        let Some(entry) = self.entries.get_mut(&*uid) else {
            return;
        };
        for (part, result) in results {
            let change = entry.record(&uid, &part, result);
            self.dirty = self.dirty.max(change);
        }
    }
}

impl Entry {
    /// Sets a part's slot (planned, or not measurable), dropping the row
    /// when it changes.
    fn set(&mut self, part: Part, result: Measured) {
        if self.results.get(&part) != Some(&result) {
            self.results.insert(part, result);
            self.row = None;
        }
    }

    /// Records a part's new result, logging a change of failure, and says
    /// what of the table it changed.
    fn record(&mut self, uid: &str, part: &Part, result: Result<Usage, Failure>) -> Dirty {
        let Some(slot) = self.results.get_mut(part) else {
            return Dirty::Clean;
        };
        let before = slot.as_ref().and_then(|r| r.as_ref().err());
        match Change::of(before, result.as_ref().err()) {
            Change::Failed(e) => {
                warn!(pod = %uid, reason = %e.reason, error = %e.message, "cannot measure a part of a pod")
            }
            Change::Recovered(was) => {
                info!(pod = %uid, previous_error = %was, "a part of a pod is measurable again")
            }
            Change::Unchanged => {}
        }
        if slot.as_ref() == Some(&result) {
            return Dirty::Clean;
        }
        let change = match (slot.as_ref(), &result) {
            (Some(Ok(was)), Ok(now)) if (was.bytes, was.inodes) == (now.bytes, now.inodes) => {
                Dirty::Times
            }
            _ => Dirty::Figures,
        };
        *slot = Some(result);
        self.row = None;
        change
    }
}

/// How a pod's file is measured.
fn file_kind(part: &Part) -> PartKind {
    match part {
        Part::PodLogs => PartKind::Files,
        _ => PartKind::File,
    }
}

/// The runtime's answer, grouped by pod: a pod it could not answer for has
/// its error, even beside containers from another of its sandboxes (its
/// containers would be incomplete).
fn group_by_pod(answer: RuntimeContainers) -> Containers {
    let mut grouped = Containers::new();
    for c in answer.running {
        if let Ok(list) = grouped.entry(c.pod_uid.clone()).or_insert(Ok(Vec::new())) {
            list.push(c);
        }
    }
    for pod in answer.unanswered {
        let message = format!(
            "pod {}/{} (sandbox {}): {}",
            pod.namespace, pod.name, pod.sandbox_id, pod.error
        );
        grouped.insert(pod.uid, Err(Failure::new(Reason::CriUnavailable, message)));
    }
    grouped
}

/// One pod's row from its spec, its parts' results and its containers.
fn build_row(
    pod: &Arc<PodVolumes>,
    results: &PartResults,
    containers: &Option<Result<Containers, Failure>>,
) -> PodRow {
    let slot = |part: &Part| results.get(part).cloned().flatten();
    let (containers_pending, containers, containers_error) = match containers {
        None => (true, Vec::new(), None),
        Some(Err(e)) => (false, Vec::new(), Some(e.clone())),
        Some(Ok(all)) => match all.get(&pod.uid) {
            Some(Err(e)) => (false, Vec::new(), Some(e.clone())),
            running => (
                false,
                running
                    .and_then(|r| r.as_ref().ok())
                    .into_iter()
                    .flatten()
                    .map(|c| ContainerRow {
                        name: c.name.clone(),
                        rootfs: rootfs(c),
                        logs: slot(&Part::Logs(c.name.clone())),
                    })
                    .collect(),
                None,
            ),
        },
    };
    PodRow {
        pod: Arc::clone(pod),
        containers,
        containers_pending,
        containers_error,
        volumes: pod
            .storage
            .volumes
            .iter()
            .map(|v| EphemeralVolumeRow {
                name: v.name.clone(),
                kind: v.kind,
                size_limit: v.size_limit,
                usage: slot(&Part::Volume(v.name.clone())),
            })
            .collect(),
        pod_logs: slot(&Part::PodLogs),
        etc_hosts: slot(&Part::EtcHosts),
    }
}

/// The writable layer as the runtime reported it.
fn rootfs(c: &RunningContainer) -> Result<Usage, Failure> {
    let no_stats = || {
        Failure::new(
            Reason::NoCriStats,
            format!(
                "container {} of pod {}/{}: the runtime reports no writable layer usage",
                c.name, c.pod_namespace, c.pod_name
            ),
        )
    };
    let layer = c.writable_layer.ok_or_else(no_stats)?;
    let bytes = layer.used_bytes.ok_or_else(no_stats)?;
    let time = SystemTime::UNIX_EPOCH
        + Duration::from_nanos(u64::try_from(layer.timestamp).unwrap_or_default());
    Ok(Usage {
        bytes,
        inodes: layer.inodes_used.unwrap_or(0),
        time,
    })
}

/// `<podLogsDir>/<namespace>_<name>_<uid>`, as kubelet names it.
fn pod_log_dir(logs_root: &Path, pod: &PodVolumes) -> Result<PathBuf, Failure> {
    join(
        logs_root.to_path_buf(),
        &format!("{}_{}_{}", pod.namespace, pod.name, pod.uid),
    )
}

/// `dir/name`, refusing a name that would leave `dir` (API objects and
/// runtime labels are input).
fn join(dir: PathBuf, name: &str) -> Result<PathBuf, Failure> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(Failure::new(
            Reason::BadPath,
            format!(
                "{name:?} cannot be a path component under {}",
                dir.display()
            ),
        ));
    }
    Ok(dir.join(name))
}

/// A walk's outcome as a part's figure. A walk still running from an
/// earlier period is a hung filesystem, reported as `timeout` (the volume
/// half's policy), not hidden behind the last figure.
fn walked(result: Result<crate::sources::walk::DirUsage, PoolError>) -> Result<Usage, Failure> {
    let u = result?;
    Ok(Usage {
        bytes: u.bytes,
        inodes: u.inodes,
        time: SystemTime::now(),
    })
}

/// The du of single files, as kubelet's du of each file: etc-hosts (a
/// missing file adds nothing), or the regular entries directly in the pod's
/// log dir (subdirectories are containers' log dirs, measured on their own;
/// a missing dir adds nothing). A guarded call.
async fn stat_files(
    guard: &Guard,
    path: &Path,
    files_only: bool,
    timeout: Duration,
) -> Result<Usage, Failure> {
    let counted = guard
        .call(stat_kind(files_only), path, timeout, move |p| {
            count(p, files_only)
        })
        .await?;
    Ok(counted_usage(counted))
}

fn stat_kind(files_only: bool) -> &'static str {
    if files_only {
        "listing the files of"
    } else {
        "stat"
    }
}

/// Blocking: (bytes, inodes) of the files directly in `path`, or of `path`.
fn count(path: &Path, files_only: bool) -> Result<(u64, u64), Failure> {
    let counted = if files_only {
        dir_files(path)
    } else {
        one_file(path)
    };
    counted.map_err(|e| Failure::new(Reason::of_io(&e), format!("{}: {e}", path.display())))
}

fn counted_usage((bytes, inodes): (u64, u64)) -> Usage {
    Usage {
        bytes,
        inodes,
        time: SystemTime::now(),
    }
}

fn one_file(path: &Path) -> io::Result<(u64, u64)> {
    match std::fs::symlink_metadata(path) {
        Ok(m) => Ok((m.blocks() * 512, 1)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok((0, 0)),
        Err(e) => Err(e),
    }
}

fn dir_files(dir: &Path) -> io::Result<(u64, u64)> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(e),
    };
    let (mut bytes, mut inodes) = (0u64, 0u64);
    for entry in entries {
        let entry = entry?;
        let meta = match entry.metadata() {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if meta.is_dir() {
            continue;
        }
        bytes += meta.blocks() * 512;
        inodes += 1;
    }
    Ok((bytes, inodes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::seams::fakes::pod;

    #[test]
    fn path_components_from_input_cannot_leave_their_dir() {
        let root = PathBuf::from("/var/log/pods");
        assert_eq!(
            join(root.clone(), "ns_p_u").unwrap(),
            PathBuf::from("/var/log/pods/ns_p_u")
        );
        for bad in ["", ".", "..", "a/b", "../x"] {
            assert_eq!(
                join(root.clone(), bad).unwrap_err().reason,
                Reason::BadPath,
                "{bad}"
            );
        }
    }

    #[test]
    fn part_results_keep_one_result_per_part_in_a_vector_that_fits() {
        let mut r = PartResults::default();
        assert_eq!(r.get(&Part::EtcHosts), None);
        r.insert(Part::PodLogs, None);
        r.insert(Part::EtcHosts, None);
        assert_eq!(r.0.capacity(), 2, "allocated to fit, not doubled");
        let figure = Some(Ok(Usage {
            bytes: 4096,
            inodes: 1,
            time: std::time::SystemTime::UNIX_EPOCH,
        }));
        r.insert(Part::EtcHosts, figure.clone());
        assert_eq!(r.get(&Part::EtcHosts), Some(&figure));
        assert_eq!(r.get(&Part::PodLogs), Some(&None));
        if let Some(slot) = r.get_mut(&Part::PodLogs) {
            *slot = figure.clone();
        }
        assert_eq!(r.get(&Part::PodLogs), Some(&figure));
        assert_eq!(r.get(&Part::Logs("app".into())), None);
        r.remove(&Part::PodLogs);
        r.remove(&Part::Volume("gone".into()));
        assert_eq!(r.parts().collect::<Vec<_>>(), [&Part::EtcHosts]);
    }

    #[test]
    fn a_walk_still_running_is_a_timeout_as_for_volumes_not_the_last_figure() {
        let hung = walked(Err(PoolError::StillRunning(PathBuf::from("/pods/u/v"))));
        let e = hung.unwrap_err();
        assert_eq!(e.reason, Reason::Timeout);
        assert!(e.message.contains("/pods/u/v"), "{e}");
        let budget = walked(Err(PoolError::Walk(Arc::new(
            crate::sources::walk::WalkError::BudgetExceeded {
                path: PathBuf::from("/pods/u/v"),
                budget: Duration::from_secs(60),
                inodes: 7,
            },
        ))));
        assert_eq!(budget.unwrap_err().reason, Reason::WalkBudgetExceeded);
    }

    #[tokio::test]
    async fn a_missing_etc_hosts_adds_nothing_and_a_denied_read_is_an_io_error() {
        let guard = Guard::on_global_lane();
        let dir = tempfile::tempdir().unwrap();
        let t = Duration::from_secs(5);
        let gone = stat_files(&guard, &dir.path().join("etc-hosts"), false, t).await;
        assert_eq!(gone.map(|u| (u.bytes, u.inodes)), Ok((0, 0)));
        let not_a_dir = dir.path().join("file");
        std::fs::write(&not_a_dir, b"x").unwrap();
        let e = stat_files(&guard, &not_a_dir, true, t).await.unwrap_err();
        assert_eq!(e.reason, Reason::IoError);
        assert!(e.message.contains(&not_a_dir.display().to_string()), "{e}");
    }

    #[test]
    fn pod_files_count_only_files_and_a_missing_dir_adds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pod.log"), vec![1u8; 10_000]).unwrap();
        std::fs::create_dir(dir.path().join("app")).unwrap();
        std::fs::write(dir.path().join("app/0.log"), vec![1u8; 50_000]).unwrap();
        let (bytes, inodes) = dir_files(dir.path()).unwrap();
        let want = std::fs::metadata(dir.path().join("pod.log"))
            .unwrap()
            .blocks()
            * 512;
        assert_eq!((bytes, inodes), (want, 1));
        assert_eq!(dir_files(&dir.path().join("gone")).unwrap(), (0, 0));
        assert_eq!(one_file(&dir.path().join("gone")).unwrap(), (0, 0));
    }

    fn container(uid: &str, name: &str, bytes: u64) -> RunningContainer {
        RunningContainer {
            id: format!("{uid}-{name}"),
            pod_uid: uid.into(),
            pod_name: "p".into(),
            pod_namespace: "shop".into(),
            name: name.into(),
            attempt: 0,
            created_at: 1,
            writable_layer: Some(crate::sources::cri::WritableLayer {
                timestamp: 1_000_000_000,
                used_bytes: Some(bytes),
                inodes_used: Some(1),
            }),
        }
    }

    #[test]
    fn a_pod_the_runtime_cannot_answer_for_loses_only_its_own_containers() {
        let answer = RuntimeContainers {
            running: vec![container("u-a", "app", 4096), container("u-b", "app", 8192)],
            unanswered: vec![crate::sources::cri::UnansweredPod {
                uid: "u-b".into(),
                namespace: "shop".into(),
                name: "huge".into(),
                sandbox_id: "sb".into(),
                error: crate::sources::cri::CriError::TooLarge {
                    endpoint: "unix:///run/cri.sock".into(),
                    call: "RuntimeService/ListContainers",
                    message: "ResourceExhausted: grpc: trying to send message larger than max"
                        .into(),
                },
            }],
            per_pod_because: Some("node-wide too large".into()),
        };
        let containers = Some(Ok(group_by_pod(answer)));
        let results = PartResults::default();

        let fine = build_row(&Arc::new(pod("fine", "u-a", &[])), &results, &containers);
        assert_eq!(fine.containers_error, None);
        assert_eq!(fine.containers.len(), 1);
        assert_eq!(fine.containers[0].rootfs.as_ref().unwrap().bytes, 4096);

        // Its containers from another sandbox would be a partial list: none.
        let huge = build_row(&Arc::new(pod("huge", "u-b", &[])), &results, &containers);
        assert!(huge.containers.is_empty());
        assert!(!huge.containers_pending);
        let e = huge.containers_error.expect("an error for the pod");
        assert_eq!(e.reason, Reason::CriUnavailable);
        assert!(
            e.message.contains("pod shop/huge (sandbox sb)"),
            "{}",
            e.message
        );
        assert!(e.message.contains("too large"), "{}", e.message);

        // A pod without running containers is neither pending nor failed.
        let idle = build_row(&Arc::new(pod("idle", "u-c", &[])), &results, &containers);
        assert!(idle.containers.is_empty() && idle.containers_error.is_none());
    }

    #[test]
    fn a_writable_layer_without_used_bytes_is_no_figure() {
        let c = RunningContainer {
            id: "c".into(),
            pod_uid: "u".into(),
            pod_name: "p".into(),
            pod_namespace: "ns".into(),
            name: "app".into(),
            attempt: 0,
            created_at: 1,
            writable_layer: Some(crate::sources::cri::WritableLayer {
                timestamp: 1_000_000_000,
                used_bytes: None,
                inodes_used: Some(1),
            }),
        };
        assert_eq!(rootfs(&c).unwrap_err().reason, Reason::NoCriStats);
        let mut c = c;
        c.writable_layer = Some(crate::sources::cri::WritableLayer {
            timestamp: 1_000_000_000,
            used_bytes: Some(8192),
            inodes_used: Some(2),
        });
        let u = rootfs(&c).unwrap();
        assert_eq!((u.bytes, u.inodes), (8192, 2));
        assert_eq!(u.time, SystemTime::UNIX_EPOCH + Duration::from_secs(1));
    }
}
