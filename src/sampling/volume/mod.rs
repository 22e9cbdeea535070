//! PVC volume stats, the whole pipeline: which PVCs the node's running pods
//! use ([`plan`]), when each is looked up and measured (two
//! [`Scheduler`](crate::sampling::scheduler::Scheduler)s), and how ([`measure`]).
//!
//! Like kubelet's volume stats cache, each volume is refreshed in the
//! background every `--volume-stats-agg-period`, jittered to between 1x and
//! 2x the period, and a scrape only reads the table. The loop sleeps until a
//! lookup or measurement is due, a result comes back, or the pod watch says
//! something changed; it never scans every volume on a timer. The statfs
//! calls due at one wake-up go out as one batch (one task, one lane job, one
//! message back), each still under its own timeout and one in flight per
//! path; walks go out one task each. A result updates its own row in place;
//! the table itself is republished only when its membership (or the API's
//! health) changes. Its seams (the pod watch, the PVC/PV API, the I/O) are
//! type parameters, so `tests.rs` runs it on fakes and a paused clock.

pub mod measure;
pub mod plan;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::model::snapshot::SnapshotHandle;
use crate::model::{
    Change, ClaimRef, Failure, FsUsage, Method, PvInfo, Reading, Reason, SourceStatus, VolumeRow,
    VolumeTable,
};
use crate::sampling::scheduler::{Outcome, Policy, Scheduler, Ticket, sleep_until};
use crate::sources::HostRoot;
use crate::sources::io::Io;
use crate::sources::kube::{ClaimState, Kube};
use crate::sources::seams::{ClaimApi, PodSource};
use measure::{Measure, Measurer, MountTable};
use plan::{Target, claims_of, host_dir, plan};

#[derive(Clone, Debug)]
pub struct VolumeConfig {
    /// The host's root filesystem (`--path.rootfs`), where host paths are
    /// resolved.
    pub host: Arc<HostRoot>,
    pub procfs: PathBuf,
    pub sysfs: PathBuf,
    /// The kubelet root dir as a host path.
    pub kubelet_root_dir: String,
    /// Refresh period of each volume (jittered to 1x-2x).
    pub period: Duration,
    /// Timeout of each statfs, device read and API call.
    pub timeout: Duration,
    /// Time budget of one usage walk.
    pub walk_budget: Duration,
}

/// A PVC, by (namespace, claim): one allocation shared by the entry and the
/// two schedulers' tables and queues, which hold a copy of the key each.
type Key = Arc<(String, String)>;

/// How long a PVC/PV lookup is trusted, jittered to 1x-2x: one GET of each
/// per PVC every 1-2 hours. Little can change while a pod runs: a bound
/// claim's `volumeName` is immutable, a claim in use is kept by its
/// `pvc-protection` finalizer, and only a walked (hostPath or local) PV's
/// declared capacity is read from the PV, which an admin may edit but no
/// controller expands. A claim newly used on the node is looked up at once.
/// At 5,000 nodes of 20 PVCs this is about 37 GETs a second from the watch
/// cache for the whole cluster (it was 220 at 10-20 minutes).
pub(crate) const REFRESH_PV: Duration = Duration::from_secs(3600);
/// The first retry of a failed lookup; doubled up to [`MAX_LOOKUP_RETRY`].
const LOOKUP_RETRY: Duration = Duration::from_secs(5);
const MAX_LOOKUP_RETRY: Duration = Duration::from_secs(300);
/// The first retry of a failed measurement (a volume not mounted yet);
/// doubled up to the period.
const MEASURE_RETRY: Duration = Duration::from_secs(5);
/// PVC/PV GETs in flight at once, so a node with many new PVCs does not
/// burst the API server.
const LOOKUPS_IN_FLIGHT: usize = 8;
/// Measurements in flight at once. Their statfs calls queue on the
/// measurement lane, which bounds the threads however many are in flight, so
/// this only bounds the queue: large enough that the keys one wake-up
/// gathers (the scheduler's slack) go out together and are drained by one
/// lane thread, not in rounds that each wake it again. A hung mount does not
/// hold a slot past its timeout.
const MEASURES_IN_FLIGHT: usize = 64;

struct Looked {
    key: Key,
    ticket: Ticket,
    result: Result<Located, Failure>,
}

/// A PV as looked up, with the host directory it is measured at (hostPath
/// and local PVs) resolved inside the host root when the lookup is made, off
/// the loop: a symlink in it is followed as the host follows it, and never
/// out of the host root.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Located {
    pv: PvInfo,
    /// `None` for PVs found under the kubelet root dir.
    host_dir: Option<Result<PathBuf, Failure>>,
}

struct Measured {
    key: Key,
    ticket: Ticket,
    result: Result<(FsUsage, Method), Failure>,
}

/// One PVC of the node: its claim, what the last lookup said, its row.
struct Entry {
    claim: ClaimRef,
    pv: Option<Located>,
    row: Arc<VolumeRow>,
}

/// The volume loop. Its seams: `P`, the node's pods (the pod watch); `A`,
/// the PVC/PV GETs; `M`, the measurements' I/O. The defaults are the real
/// ones; the unit tests hand in fakes.
pub struct VolumeSampler<P = Kube, A = Kube, M = Measurer> {
    cfg: VolumeConfig,
    pods: P,
    api: A,
    events: watch::Receiver<u64>,
    kubelet_root: PathBuf,
    /// The process's guarded calls and walk pool.
    io: Io,
    measurer: Arc<M>,
    /// Boxed, as the scheduler's slots are: most of a hash table's buckets
    /// may be empty, and an entry is a few hundred bytes.
    entries: HashMap<Key, Box<Entry>>,
    lookups: Scheduler<Key, ()>,
    measures: Scheduler<Key, Target>,
    lookups_in_flight: usize,
    measures_in_flight: usize,
    /// The pod set version the entries were last synced with.
    pods_version: Option<u64>,
    /// The table's rows or source changed since it was last published.
    membership_changed: bool,
    /// A row's reading changed since the board was last touched.
    readings_changed: bool,
    published_source: Option<SourceStatus>,
    looked_tx: mpsc::UnboundedSender<Looked>,
    looked_rx: mpsc::UnboundedReceiver<Looked>,
    /// Results come back a batch to a message.
    measured_tx: mpsc::UnboundedSender<Vec<Measured>>,
    measured_rx: mpsc::UnboundedReceiver<Vec<Measured>>,
}

impl VolumeSampler {
    pub fn new(cfg: VolumeConfig, kube: Kube, io: Io) -> Result<VolumeSampler, String> {
        // Resolved once, at start-up: kubelet does not move its root dir
        // while running. The result is a real path, as the mount table
        // names them (a local directory, never a volume, so this cannot
        // hang).
        let kubelet_root = cfg
            .host
            .resolve(&cfg.kubelet_root_dir)
            .map_err(|e| format!("--kubelet.root-dir: {e}"))?;
        let measurer = Measurer {
            rootfs: cfg.host.path().to_path_buf(),
            sysfs: cfg.sysfs.clone(),
            timeout: cfg.timeout,
            walk_budget: cfg.walk_budget,
            prober: io.prober(),
            io: io.clone(),
            mounts: MountTable::new(cfg.procfs.clone(), cfg.timeout),
        };
        Ok(VolumeSampler::with_seams(
            cfg,
            kubelet_root,
            kube.clone(),
            kube,
            io,
            measurer,
        ))
    }
}

impl<P: PodSource, A: ClaimApi, M: Measure> VolumeSampler<P, A, M> {
    /// The loop on the given seams; `kubelet_root` already resolved.
    pub fn with_seams(
        cfg: VolumeConfig,
        kubelet_root: PathBuf,
        pods: P,
        api: A,
        io: Io,
        measurer: M,
    ) -> VolumeSampler<P, A, M> {
        let (looked_tx, looked_rx) = mpsc::unbounded_channel();
        let (measured_tx, measured_rx) = mpsc::unbounded_channel();
        let lookups = Scheduler::new(Policy {
            period: REFRESH_PV,
            retry: LOOKUP_RETRY,
            max_retry: MAX_LOOKUP_RETRY,
        });
        let measures = Scheduler::new(Policy {
            period: cfg.period,
            retry: MEASURE_RETRY.min(cfg.period),
            max_retry: cfg.period,
        });
        VolumeSampler {
            events: pods.subscribe(),
            cfg,
            pods,
            api,
            kubelet_root,
            io,
            measurer: Arc::new(measurer),
            entries: HashMap::new(),
            lookups,
            measures,
            lookups_in_flight: 0,
            measures_in_flight: 0,
            pods_version: None,
            membership_changed: true,
            readings_changed: false,
            published_source: None,
            looked_tx,
            looked_rx,
            measured_tx,
            measured_rx,
        }
    }

    /// The Kubernetes API as a source.
    fn source(&self) -> SourceStatus {
        self.pods.source_status()
    }

    /// The table as it stands (its rows are shared, not copied).
    pub fn table(&self) -> VolumeTable {
        VolumeTable::new(
            self.entries.values().map(|e| Arc::clone(&e.row)).collect(),
            self.source(),
        )
    }

    /// Looks up and measures every volume once (for `kubedf metrics` and
    /// `kubedf df`), bounded in time.
    pub async fn sample_once(&mut self) -> VolumeTable {
        if !self.pods.wait_synced(self.cfg.timeout).await {
            warn!(
                "the pod list did not arrive within {:?}; reporting no volumes",
                self.cfg.timeout
            );
        }
        self.sync_claims(Instant::now());
        let deadline = Instant::now() + self.cfg.walk_budget + self.cfg.timeout * 4;
        // Everything is due now. Retries come 5 s or more after a failure
        // and are started only while other calls are still running.
        loop {
            let now = Instant::now();
            self.start_lookups(now);
            self.start_measurements(now);
            if self.lookups_in_flight == 0 && self.measures_in_flight == 0 {
                break;
            }
            tokio::select! {
                Some(done) = self.looked_rx.recv() => self.apply_lookup(done, Instant::now()),
                Some(done) = self.measured_rx.recv() => self.apply_measurements(done, Instant::now()),
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        self.table()
    }

    /// Refreshes volumes until `shutdown` changes, publishing into `board`.
    pub async fn run(mut self, board: SnapshotHandle, mut shutdown: watch::Receiver<bool>) {
        loop {
            let now = Instant::now();
            if self.pods_version != Some(self.pods.version()) {
                self.sync_claims(now);
            }
            self.start_lookups(now);
            self.start_measurements(now);
            self.publish(&board);
            // With every slot taken, what is due waits for a result, not a
            // timer (a timer already past would spin the loop).
            let lookups = (self.lookups_in_flight < LOOKUPS_IN_FLIGHT)
                .then(|| self.lookups.next_wake())
                .flatten();
            let measures = (self.measures_in_flight < MEASURES_IN_FLIGHT)
                .then(|| self.measures.next_wake())
                .flatten();
            let next = [lookups, measures].into_iter().flatten().min();
            tokio::select! {
                _ = sleep_until(next) => {}
                changed = self.events.changed() => {
                    if changed.is_err() {
                        // The watch is gone: nothing will change any more
                        // but the measurements.
                        self.events = watch::channel(0).1;
                    }
                }
                Some(done) = self.looked_rx.recv() => self.apply_lookup(done, Instant::now()),
                Some(done) = self.measured_rx.recv() => {
                    // Results come in bursts: take what is there.
                    self.apply_measurements(done, Instant::now());
                    while let Ok(done) = self.measured_rx.try_recv() {
                        self.apply_measurements(done, Instant::now());
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Republishes the table when its rows or source changed; otherwise only
    /// says that a row's reading changed.
    fn publish(&mut self, board: &SnapshotHandle) {
        let source = self.source();
        if self.published_source.as_ref() != Some(&source) {
            self.membership_changed = true;
        }
        if std::mem::take(&mut self.membership_changed) {
            self.published_source = Some(source);
            board.publish_volumes(Some(Arc::new(self.table())));
            self.readings_changed = false;
        } else if std::mem::take(&mut self.readings_changed) {
            board.changed(crate::model::Part::Volumes);
        }
    }

    /// Brings the entries in line with the running pods' claims.
    fn sync_claims(&mut self, now: Instant) {
        self.pods_version = Some(self.pods.version());
        let claims = claims_of(&self.pods.pods());
        let wanted: HashSet<(&str, &str)> = claims
            .iter()
            .map(|c| (c.namespace.as_str(), c.claim.as_str()))
            .collect();
        let wanted = |k: &Key| wanted.contains(&(k.0.as_str(), k.1.as_str()));
        let before = self.entries.len();
        self.entries.retain(|k, _| wanted(k));
        self.lookups.retain(wanted);
        self.measures.retain(wanted);
        if self.entries.len() != before {
            self.membership_changed = true;
        }
        for claim in claims {
            let key = Arc::new((claim.namespace.clone(), claim.claim.clone()));
            match self.entries.get_mut(&key) {
                None => {
                    let row = VolumeRow::new(
                        &claim.namespace,
                        &claim.claim,
                        &claim.pod,
                        Reading::default(),
                    );
                    self.entries.insert(
                        key.clone(),
                        Box::new(Entry {
                            claim,
                            pv: None,
                            row: Arc::new(row),
                        }),
                    );
                    self.lookups.plan(key, (), now);
                    self.membership_changed = true;
                }
                // The pod that holds the PVC changed (the first pod left):
                // a new row, and a new plan under the new pod's directory.
                Some(entry) if entry.claim != claim => {
                    entry.claim = claim;
                    self.replan(&key, now);
                }
                Some(_) => {}
            }
        }
    }

    /// Starts the lookups that are due, a few at a time.
    fn start_lookups(&mut self, now: Instant) {
        while self.lookups_in_flight < LOOKUPS_IN_FLIGHT {
            let Some(due) = self.lookups.pop_due(now) else {
                return;
            };
            self.lookups_in_flight += 1;
            let api = self.api.clone();
            let host = Arc::clone(&self.cfg.host);
            let io = self.io.clone();
            let timeout = self.cfg.timeout;
            let tx = self.looked_tx.clone();
            tokio::spawn(async move {
                let result = match resolve(&api, &due.key.0, &due.key.1, timeout).await {
                    Ok(pv) => locate(host, &io, pv, timeout).await,
                    Err(e) => Err(e),
                };
                let _ = tx.send(Looked {
                    key: due.key,
                    ticket: due.ticket,
                    result,
                });
            });
        }
    }

    fn apply_lookup(&mut self, done: Looked, now: Instant) {
        self.lookups_in_flight = self.lookups_in_flight.saturating_sub(1);
        let outcome = Outcome::of(&done.result);
        if !self.lookups.finish(&done.key, done.ticket, outcome, now) {
            return;
        }
        let Some(entry) = self.entries.get_mut(&done.key) else {
            return;
        };
        match done.result {
            Ok(located) => {
                if entry.pv.as_ref() != Some(&located) {
                    entry.pv = Some(located);
                    self.replan(&done.key, now);
                }
            }
            // The API did not answer: keep measuring the PV it last named.
            Err(e) if e.reason == Reason::ApiError && entry.pv.is_some() => {
                warn!(
                    namespace = %done.key.0,
                    persistentvolumeclaim = %done.key.1,
                    error = %e.message,
                    "refreshing the volume's PV failed; measuring the PV last seen"
                );
            }
            Err(e) => {
                // A row's labels are fixed for its life: a PV that is gone
                // (the claim deleted, unbound) takes its row with it.
                if entry.pv.take().is_some() {
                    self.replan(&done.key, now);
                }
                self.measures.remove(&done.key);
                self.set_error(&done.key, e);
            }
        }
    }

    /// A new row for the entry's claim and PV, and the plan to measure it.
    fn replan(&mut self, key: &Key, now: Instant) {
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        let claim = &entry.claim;
        let mut row = VolumeRow::new(
            &claim.namespace,
            &claim.claim,
            &claim.pod,
            entry.row.reading(),
        );
        let Some(Located { pv, host_dir }) = &entry.pv else {
            entry.row = Arc::new(row);
            self.membership_changed = true;
            return;
        };
        row = row.with_pv(&pv.name, &pv.source.driver(), pv.mode);
        let target = match host_dir {
            Some(Err(e)) => Err(e.clone()),
            Some(Ok(dir)) => plan_or_bad_path(&self.kubelet_root, &claim.pod_uid, pv, Some(dir)),
            None => plan_or_bad_path(&self.kubelet_root, &claim.pod_uid, pv, None),
        };
        entry.row = Arc::new(row);
        self.membership_changed = true;
        match target {
            Ok(target) => {
                if target.method != Method::LocalPath {
                    let mut reading = entry.row.reading();
                    reading.method = Some(target.method);
                    entry.row.set_reading(reading);
                }
                self.measures.plan(key.clone(), target, now);
            }
            Err(e) => {
                self.measures.remove(key);
                self.set_error(key, e);
            }
        }
    }

    fn set_error(&mut self, key: &Key, e: Failure) {
        let Some(entry) = self.entries.get(key) else {
            return;
        };
        let mut reading = entry.row.reading();
        log_change(&entry.row, &reading, Some(&e));
        // Left out rather than kept stale.
        reading.stats = Some(Err(e));
        if entry.row.set_reading(reading) {
            self.readings_changed = true;
        }
    }

    /// Starts the measurements that are due: the quick ones (a statfs of
    /// a mount point) as one batch, one task and one message for all of
    /// them; walks, block devices and searches one task each, so a long walk
    /// holds up no other result.
    fn start_measurements(&mut self, now: Instant) {
        let mut quick = Vec::new();
        while self.measures_in_flight < MEASURES_IN_FLIGHT {
            let Some(due) = self.measures.pop_due(now) else {
                break;
            };
            self.measures_in_flight += 1;
            if due.plan.is_quick() {
                quick.push(due);
                continue;
            }
            let measurer = Arc::clone(&self.measurer);
            let tx = self.measured_tx.clone();
            tokio::spawn(async move {
                let result = measurer.measure(&due.plan).await;
                let _ = tx.send(vec![Measured {
                    key: due.key,
                    ticket: due.ticket,
                    result,
                }]);
            });
        }
        if quick.is_empty() {
            return;
        }
        let measurer = Arc::clone(&self.measurer);
        let tx = self.measured_tx.clone();
        tokio::spawn(async move {
            let (keys, targets): (Vec<_>, Vec<_>) = quick
                .into_iter()
                .map(|due| ((due.key, due.ticket), due.plan))
                .unzip();
            let results = measurer.measure_batch(targets).await;
            let done = keys
                .into_iter()
                .zip(results)
                .map(|((key, ticket), result)| Measured {
                    key,
                    ticket,
                    result,
                })
                .collect();
            let _ = tx.send(done);
        });
    }

    fn apply_measurements(&mut self, done: Vec<Measured>, now: Instant) {
        for one in done {
            self.apply_measurement(one, now);
        }
    }

    fn apply_measurement(&mut self, done: Measured, now: Instant) {
        self.measures_in_flight = self.measures_in_flight.saturating_sub(1);
        let outcome = Outcome::of(&done.result);
        if !self.measures.finish(&done.key, done.ticket, outcome, now) {
            return;
        }
        let Some(entry) = self.entries.get(&done.key) else {
            return;
        };
        match done.result {
            Ok((usage, method)) => {
                log_change(&entry.row, &entry.row.reading(), None);
                let reading = Reading {
                    method: Some(method),
                    stats: Some(Ok(usage)),
                };
                if entry.row.set_reading(reading) {
                    self.readings_changed = true;
                }
            }
            Err(e) => self.set_error(&done.key, e),
        }
    }
}

/// Logs a volume that fails, fails otherwise, or is measurable again, once
/// per change.
fn log_change(row: &VolumeRow, before: &Reading, now: Option<&Failure>) {
    let before = before.stats.as_ref().and_then(|s| s.as_ref().err());
    match Change::of(before, now) {
        Change::Failed(e) => warn!(
            namespace = %row.namespace,
            persistentvolumeclaim = %row.claim,
            reason = %e.reason,
            error = %e.message,
            "volume not measured; its series are left out"
        ),
        Change::Recovered(was) => info!(
            namespace = %row.namespace,
            persistentvolumeclaim = %row.claim,
            previous_error = %was,
            "volume measurable again"
        ),
        Change::Unchanged => {}
    }
}

/// PVC -> PV name -> PV.
fn plan_or_bad_path(
    kubelet_root: &std::path::Path,
    pod_uid: &str,
    pv: &PvInfo,
    dir: Option<&std::path::Path>,
) -> Result<Target, Failure> {
    plan(kubelet_root, pod_uid, pv, dir).map_err(|e| {
        Failure::new(
            Reason::BadPath,
            format!("persistent volume {}: {e}", pv.name),
        )
    })
}

/// Resolves the PV's [`host_dir`] inside the host root, as a guarded call.
/// A path kubedf refuses is the PV's error (the lookup itself succeeded); a
/// resolution that does not answer fails the lookup, to be retried.
async fn locate(
    host: Arc<HostRoot>,
    io: &Io,
    pv: PvInfo,
    timeout: Duration,
) -> Result<Located, Failure> {
    let Some(dir) = host_dir(&pv).map(str::to_owned) else {
        return Ok(Located { pv, host_dir: None });
    };
    let of_pv = |e: Failure| {
        Failure::new(
            e.reason,
            format!("persistent volume {}: {}", pv.name, e.message),
        )
    };
    let owned = dir.clone();
    let resolved = io
        .guard
        .call("resolving host path", Path::new(&dir), timeout, move |_| {
            Ok(host.resolve(&owned).map_err(Failure::from))
        })
        .await
        .map_err(of_pv)?
        .map_err(of_pv);
    Ok(Located {
        pv,
        host_dir: Some(resolved),
    })
}

async fn resolve(
    kube: &impl ClaimApi,
    namespace: &str,
    claim: &str,
    timeout: Duration,
) -> Result<PvInfo, Failure> {
    let api = |e: String| Failure::new(Reason::ApiError, e);
    let volume_name = match kube.claim(namespace, claim, timeout).await.map_err(api)? {
        None => {
            return Err(Failure::new(
                Reason::PvcNotFound,
                format!("persistentvolumeclaim {namespace}/{claim} not found"),
            ));
        }
        Some(ClaimState::Unbound { phase }) => {
            // "Bound" without a PV name is a malformed claim, not a pending one.
            let why = if phase == "Bound" {
                "is Bound but names no volume (spec.volumeName is empty)".to_owned()
            } else {
                format!("is not bound (phase {phase})")
            };
            return Err(Failure::new(
                Reason::PvcUnbound,
                format!("persistentvolumeclaim {namespace}/{claim} {why}"),
            ));
        }
        Some(ClaimState::Bound { volume_name }) => volume_name,
    };
    match kube.volume(&volume_name, timeout).await.map_err(api)? {
        None => Err(Failure::new(
            Reason::PvNotFound,
            format!("persistentvolume {volume_name} of {namespace}/{claim} not found"),
        )),
        Some(Err(e)) => Err(Failure::new(Reason::ApiError, e)),
        Some(Ok(pv)) => Ok(pv),
    }
}

#[cfg(test)]
mod tests;
