//! When and how PVC volumes are measured. Like kubelet's volume stats cache:
//! each volume is refreshed in the background every `--volume-stats-agg-period`,
//! jittered to between 1x and 2x the period, and a scrape only reads the last
//! table. Every filesystem call runs off the async runtime under a timeout,
//! with at most one in flight per volume, so a hung mount costs one thread
//! and leaves every other volume fresh.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::snapshot::{SnapshotHandle, SourceStatus};
use crate::sources::SourceId;
use crate::sources::block::device_size;
use crate::sources::host_path;
use crate::sources::inflight::InFlightSet;
use crate::sources::kube::{ApiHealth, ClaimState, Kube};
use crate::sources::mounts::mount_points;
use crate::sources::statfs::{FsError, FsProber, FsUsage};
use crate::sources::walk::{PoolError, WalkError, WalkPool};
use crate::volumes::{
    ClaimRef, Location, Method, PvInfo, Reason, Target, VolumeError, VolumeMode, claims_of, plan,
    walked_usage,
};

#[derive(Clone, Debug)]
pub struct VolumeConfig {
    pub rootfs: PathBuf,
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
    pub walk_workers: usize,
    /// Threads one walk may use.
    pub walk_threads: usize,
}

/// One PVC of the node, as last measured.
#[derive(Clone, Debug, PartialEq)]
pub struct VolumeRow {
    pub namespace: String,
    pub claim: String,
    pub pod: String,
    pub pv: Option<String>,
    pub driver: Option<String>,
    pub mode: Option<VolumeMode>,
    /// How it was last measured (statfs, walk or block).
    pub method: Option<Method>,
    /// `None` until the first measurement finishes.
    pub stats: Option<Result<FsUsage, VolumeError>>,
}

/// What the volume sampler last published.
#[derive(Clone, Debug, PartialEq)]
pub struct VolumeTable {
    pub rows: Vec<VolumeRow>,
    /// The Kubernetes API as a source.
    pub source: SourceStatus,
}

type Key = (String, String);

/// How long a failed PVC/PV lookup is trusted before it is retried.
const RETRY_LOOKUP: Duration = Duration::from_secs(10);
/// How long a PV lookup is trusted (its capacity can grow on expansion).
const REFRESH_PV: Duration = Duration::from_secs(600);
/// How often the loop looks for due volumes even without other events.
const TICK: Duration = Duration::from_millis(500);
/// How long the mount table is trusted.
const MOUNTS_TTL: Duration = Duration::from_secs(1);

struct Lookup {
    result: Result<PvInfo, VolumeError>,
    fetched: Instant,
}

struct Entry {
    claim: ClaimRef,
    generation: u64,
    target: Option<Result<Target, VolumeError>>,
    pv: Option<PvInfo>,
    row: VolumeRow,
    next_due: Instant,
    in_flight: bool,
}

struct Measured {
    key: Key,
    generation: u64,
    result: Result<(FsUsage, Method), VolumeError>,
}

/// The I/O of one measurement, shared by the spawned tasks.
struct Measurer {
    rootfs: PathBuf,
    sysfs: PathBuf,
    timeout: Duration,
    walk_budget: Duration,
    prober: FsProber,
    walkers: WalkPool,
    /// Block devices being read, one read at a time per device.
    reading: InFlightSet,
}

pub struct VolumeSampler {
    cfg: VolumeConfig,
    kube: Kube,
    kubelet_root: PathBuf,
    measurer: Arc<Measurer>,
    lookups: HashMap<Key, Lookup>,
    entries: HashMap<Key, Entry>,
    generation: u64,
    mounts: Option<(Instant, Arc<HashSet<PathBuf>>)>,
    /// The pod set version the entries were last synced with.
    pods_version: Option<u64>,
    /// When the oldest lookup must be redone.
    next_lookup: Option<Instant>,
    /// Something changed since the table was last published.
    dirty: bool,
    results_tx: mpsc::UnboundedSender<Measured>,
    results_rx: mpsc::UnboundedReceiver<Measured>,
}

impl VolumeSampler {
    pub fn new(cfg: VolumeConfig, kube: Kube) -> Result<VolumeSampler, String> {
        let kubelet_root = host_path(&cfg.rootfs, &cfg.kubelet_root_dir)
            .map_err(|e| format!("--kubelet.root-dir: {e}"))?;
        // The mount table names real paths: resolve symlinks in the root
        // dir once (it is a local directory, never a volume).
        let kubelet_root = std::fs::canonicalize(&kubelet_root).unwrap_or(kubelet_root);
        let walkers = WalkPool::new(cfg.walk_workers, cfg.walk_threads)
            .map_err(|e| format!("cannot start walk threads: {e}"))?;
        let measurer = Arc::new(Measurer {
            rootfs: cfg.rootfs.clone(),
            sysfs: cfg.sysfs.clone(),
            timeout: cfg.timeout,
            walk_budget: cfg.walk_budget,
            prober: FsProber::default(),
            walkers,
            reading: InFlightSet::default(),
        });
        let (results_tx, results_rx) = mpsc::unbounded_channel();
        Ok(VolumeSampler {
            cfg,
            kube,
            kubelet_root,
            measurer,
            lookups: HashMap::new(),
            entries: HashMap::new(),
            generation: 0,
            mounts: None,
            pods_version: None,
            next_lookup: None,
            dirty: true,
            results_tx,
            results_rx,
        })
    }

    /// The table as it stands.
    pub fn table(&self) -> VolumeTable {
        let mut rows: Vec<VolumeRow> = self.entries.values().map(|e| e.row.clone()).collect();
        rows.sort_by(|a, b| (&a.namespace, &a.claim).cmp(&(&b.namespace, &b.claim)));
        let api: ApiHealth = self.kube.health();
        let error = api
            .error
            .or_else(|| (!api.synced).then(|| "the first list of pods has not arrived".to_owned()));
        VolumeTable {
            rows,
            source: SourceStatus {
                source: SourceId::Kubernetes,
                up: error.is_none(),
                last_success: api.last_success,
                duration: None,
                error,
            },
        }
    }

    /// Measures every volume once (for `kubedf metrics` and `kubedf df`).
    pub async fn sample_once(&mut self) -> VolumeTable {
        if !self.kube.wait_synced(self.cfg.timeout).await {
            warn!(
                "the pod list did not arrive within {:?}; reporting no volumes",
                self.cfg.timeout
            );
        }
        self.reconcile().await;
        let deadline = tokio::time::Instant::now() + self.cfg.walk_budget + self.cfg.timeout * 3;
        while self.entries.values().any(|e| e.in_flight) {
            match tokio::time::timeout_at(deadline, self.results_rx.recv()).await {
                Ok(Some(done)) => self.apply(done),
                _ => break,
            }
        }
        self.table()
    }

    /// Refreshes volumes until `shutdown` changes, publishing each change
    /// into the snapshot.
    pub async fn run(mut self, handle: SnapshotHandle, mut shutdown: watch::Receiver<bool>) {
        let kube = self.kube.clone();
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut published: Option<Arc<VolumeTable>> = None;
        loop {
            tokio::select! {
                _ = ticker.tick() => self.reconcile().await,
                _ = kube.changed() => self.reconcile().await,
                Some(done) = self.results_rx.recv() => {
                    // Results come in bursts; take them all, publish on the
                    // next tick: per-result work would be O(volumes) each.
                    self.apply(done);
                    while let Ok(done) = self.results_rx.try_recv() {
                        self.apply(done);
                    }
                    continue;
                }
                _ = shutdown.changed() => return,
            }
            if !std::mem::take(&mut self.dirty) {
                continue;
            }
            let table = self.table();
            if published.as_deref() != Some(&table) {
                let table = Arc::new(table);
                handle.rcu(|old| {
                    let mut next = (**old).clone();
                    next.volumes = Some(Arc::clone(&table));
                    next
                });
                published = Some(table);
            }
        }
    }

    /// Brings the entries in line with the running pods and looks up new
    /// PVCs (only when the pods changed or a lookup is due), then starts the
    /// measurements that are due.
    async fn reconcile(&mut self) {
        let now = Instant::now();
        let version = self.kube.version();
        let lookup_due = self.next_lookup.is_some_and(|t| t <= now);
        if self.pods_version != Some(version) || lookup_due {
            self.pods_version = Some(version);
            self.sync_claims().await;
            self.dirty = true;
        }
        self.start_due(Instant::now()).await;
    }

    async fn sync_claims(&mut self) {
        let claims = claims_of(&self.kube.pods());
        let wanted: HashSet<Key> = claims
            .iter()
            .map(|c| (c.namespace.clone(), c.claim.clone()))
            .collect();
        self.entries.retain(|k, _| wanted.contains(k));
        self.lookups.retain(|k, _| wanted.contains(k));
        self.look_up(&claims).await;
        let now = Instant::now();
        for claim in claims {
            let key = (claim.namespace.clone(), claim.claim.clone());
            let lookup = self.lookups.get(&key).map(|l| &l.result);
            let entry = self.entries.entry(key.clone()).or_insert_with(|| {
                self.generation += 1;
                Entry {
                    row: VolumeRow {
                        namespace: claim.namespace.clone(),
                        claim: claim.claim.clone(),
                        pod: claim.pod.clone(),
                        pv: None,
                        driver: None,
                        mode: None,
                        method: None,
                        stats: None,
                    },
                    claim: claim.clone(),
                    generation: self.generation,
                    target: None,
                    pv: None,
                    next_due: now,
                    in_flight: false,
                }
            });
            // The pod that holds the PVC may change (first pod left).
            if entry.claim != claim {
                entry.row.pod = claim.pod.clone();
                entry.claim = claim;
                entry.target = None;
            }
            match lookup {
                Some(Ok(pv)) if entry.pv.as_ref() != Some(pv) || entry.target.is_none() => {
                    // A measurement of the old plan may still be running: its
                    // result is dropped (its path stays guarded until it returns).
                    self.generation += 1;
                    entry.generation = self.generation;
                    entry.in_flight = false;
                    entry.pv = Some(pv.clone());
                    entry.row.pv = Some(pv.name.clone());
                    entry.row.driver = Some(pv.source.driver());
                    entry.row.mode = Some(pv.mode);
                    let target = plan(
                        &self.cfg.rootfs,
                        &self.kubelet_root,
                        &entry.claim.pod_uid,
                        pv,
                    )
                    .map_err(|e| {
                        VolumeError::new(
                            Reason::BadPath,
                            format!("persistent volume {}: {e}", pv.name),
                        )
                    });
                    if let Ok(t) = &target
                        && t.method != Method::LocalPath
                    {
                        entry.row.method = Some(t.method);
                    }
                    entry.target = Some(target);
                    entry.next_due = now;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    if entry.row.stats.as_ref().and_then(|s| s.as_ref().err()) != Some(e) {
                        log_error(&entry.row, e);
                    }
                    entry.target = None;
                    entry.pv = None;
                    entry.row.stats = Some(Err(e.clone()));
                }
                None => {}
            }
        }
        self.next_lookup = self
            .lookups
            .values()
            .map(|l| {
                l.fetched
                    + if l.result.is_ok() {
                        REFRESH_PV
                    } else {
                        RETRY_LOOKUP
                    }
            })
            .min();
    }

    /// GETs the PVC and PV of every claim whose lookup is missing or stale.
    async fn look_up(&mut self, claims: &[ClaimRef]) {
        let now = Instant::now();
        let stale: Vec<Key> = claims
            .iter()
            .map(|c| (c.namespace.clone(), c.claim.clone()))
            .filter(|k| match self.lookups.get(k) {
                None => true,
                Some(l) => {
                    let ttl = if l.result.is_ok() {
                        REFRESH_PV
                    } else {
                        RETRY_LOOKUP
                    };
                    now.duration_since(l.fetched) >= ttl
                }
            })
            .collect();
        let kube = &self.kube;
        let timeout = self.cfg.timeout;
        let results: Vec<(Key, Result<PvInfo, VolumeError>)> = futures::stream::iter(stale)
            .map(|key| async move {
                let result = resolve(kube, &key.0, &key.1, timeout).await;
                (key, result)
            })
            .buffer_unordered(8)
            .collect()
            .await;
        for (key, result) in results {
            self.lookups.insert(
                key,
                Lookup {
                    result,
                    fetched: now,
                },
            );
        }
    }

    async fn start_due(&mut self, now: Instant) {
        let due: Vec<Key> = self
            .entries
            .iter()
            .filter(|(_, e)| !e.in_flight && e.next_due <= now && matches!(e.target, Some(Ok(_))))
            .map(|(k, _)| k.clone())
            .collect();
        if due.is_empty() {
            return;
        }
        let mounts = self.mount_points().await;
        for key in due {
            let Some(entry) = self.entries.get_mut(&key) else {
                continue;
            };
            let Some(Ok(target)) = entry.target.clone() else {
                continue;
            };
            entry.in_flight = true;
            let measurer = Arc::clone(&self.measurer);
            let mounts = mounts.clone();
            let tx = self.results_tx.clone();
            let generation = entry.generation;
            tokio::spawn(async move {
                let result = match mounts {
                    Ok(mounts) => measurer.measure(&target, &mounts).await,
                    Err(e) => Err(VolumeError::new(Reason::IoError, e)),
                };
                let _ = tx.send(Measured {
                    key,
                    generation,
                    result,
                });
            });
        }
    }

    async fn mount_points(&mut self) -> Result<Arc<HashSet<PathBuf>>, String> {
        if let Some((at, mounts)) = &self.mounts
            && at.elapsed() < MOUNTS_TTL
        {
            return Ok(Arc::clone(mounts));
        }
        let procfs = self.cfg.procfs.clone();
        let read = tokio::task::spawn_blocking(move || mount_points(&procfs));
        let mounts = match tokio::time::timeout(self.cfg.timeout, read).await {
            Ok(Ok(Ok(m))) => Arc::new(m),
            Ok(Ok(Err(e))) => return Err(e),
            Ok(Err(e)) => return Err(format!("reading the mount table: {e}")),
            Err(_) => return Err("reading the mount table timed out".into()),
        };
        self.mounts = Some((Instant::now(), Arc::clone(&mounts)));
        Ok(mounts)
    }

    fn apply(&mut self, done: Measured) {
        let period = self.cfg.period;
        let Some(entry) = self.entries.get_mut(&done.key) else {
            return;
        };
        if entry.generation != done.generation {
            return;
        }
        self.dirty = true;
        entry.in_flight = false;
        // kubelet jitters each volume's next refresh to between 1x and 2x the period.
        entry.next_due = Instant::now() + period + period.mul_f64(fastrand::f64());
        match done.result {
            Ok((usage, method)) => {
                if let Some(Err(previous)) = &entry.row.stats {
                    info!(
                        namespace = %entry.row.namespace,
                        persistentvolumeclaim = %entry.row.claim,
                        previous_error = %previous,
                        "volume measurable again"
                    );
                }
                entry.row.method = Some(method);
                entry.row.stats = Some(Ok(usage));
            }
            Err(e) => {
                if entry.row.stats.as_ref().and_then(|s| s.as_ref().err()) != Some(&e) {
                    log_error(&entry.row, &e);
                }
                // Left out rather than kept stale.
                entry.row.stats = Some(Err(e));
            }
        }
    }
}

fn log_error(row: &VolumeRow, e: &VolumeError) {
    warn!(
        namespace = %row.namespace,
        persistentvolumeclaim = %row.claim,
        reason = %e.reason,
        error = %e.message,
        "volume not measured; its series are left out"
    );
}

/// PVC -> PV name -> PV.
async fn resolve(
    kube: &Kube,
    namespace: &str,
    claim: &str,
    timeout: Duration,
) -> Result<PvInfo, VolumeError> {
    let api = |e: String| VolumeError::new(Reason::ApiError, e);
    let volume_name = match kube.claim(namespace, claim, timeout).await.map_err(api)? {
        None => {
            return Err(VolumeError::new(
                Reason::PvcNotFound,
                format!("persistentvolumeclaim {namespace}/{claim} not found"),
            ));
        }
        Some(ClaimState::Unbound { phase }) => {
            return Err(VolumeError::new(
                Reason::PvcUnbound,
                format!("persistentvolumeclaim {namespace}/{claim} is not bound (phase {phase})"),
            ));
        }
        Some(ClaimState::Bound { volume_name }) => volume_name,
    };
    match kube.volume(&volume_name, timeout).await.map_err(api)? {
        None => Err(VolumeError::new(
            Reason::PvNotFound,
            format!("persistentvolume {volume_name} of {namespace}/{claim} not found"),
        )),
        Some(Err(e)) => Err(VolumeError::new(Reason::ApiError, e)),
        Some(Ok(pv)) => Ok(pv),
    }
}

fn fs_error(e: FsError) -> VolumeError {
    let reason = match &e {
        FsError::Timeout { .. } | FsError::StillHung { .. } => Reason::Timeout,
        FsError::Statfs { errno, .. } if *errno == nix::errno::Errno::ENOENT => Reason::NotFound,
        _ => Reason::IoError,
    };
    VolumeError::new(reason, e.to_string())
}

impl Measurer {
    async fn measure(
        &self,
        target: &Target,
        mounts: &HashSet<PathBuf>,
    ) -> Result<(FsUsage, Method), VolumeError> {
        let path = self.locate(&target.location).await?;
        match target.method {
            Method::Statfs => {
                if !mounts.contains(&path) {
                    return Err(VolumeError::new(
                        Reason::NotMounted,
                        format!(
                            "{} is not a mount point; statfs would report the node's root filesystem",
                            path.display()
                        ),
                    ));
                }
                Ok((self.statfs(&path).await?, Method::Statfs))
            }
            Method::LocalPath if mounts.contains(&path) => {
                Ok((self.statfs(&path).await?, Method::Statfs))
            }
            Method::Walk | Method::LocalPath => {
                Ok((self.walk(&path, target.capacity).await?, Method::Walk))
            }
            Method::Block => Ok((self.block(&path).await?, Method::Block)),
        }
    }

    async fn statfs(&self, path: &Path) -> Result<FsUsage, VolumeError> {
        self.prober
            .probe(path, self.timeout)
            .await
            .map(|r| r.usage)
            .map_err(fs_error)
    }

    async fn walk(&self, path: &Path, declared: Option<i64>) -> Result<FsUsage, VolumeError> {
        let usage = self
            .walkers
            .walk(path, self.walk_budget, self.timeout)
            .await
            .map_err(|e| {
                let reason = match &e {
                    PoolError::Walk(WalkError::BudgetExceeded { .. }) => Reason::WalkBudgetExceeded,
                    PoolError::Walk(WalkError::Root { source, .. })
                        if source.kind() == std::io::ErrorKind::NotFound =>
                    {
                        Reason::NotFound
                    }
                    PoolError::Timeout { .. } | PoolError::StillRunning(_) => Reason::Timeout,
                    _ => Reason::IoError,
                };
                VolumeError::new(reason, e.to_string())
            })?;
        let fs = self.statfs(path).await?;
        Ok(walked_usage(declared, usage.bytes, usage.inodes, &fs))
    }

    async fn block(&self, path: &Path) -> Result<FsUsage, VolumeError> {
        let rootfs = self.rootfs.clone();
        let sysfs = self.sysfs.clone();
        let owned = path.to_path_buf();
        let Some(guard) = self.reading.claim(path) else {
            return Err(VolumeError::new(
                Reason::Timeout,
                format!(
                    "block device {} is still hung from an earlier read",
                    path.display()
                ),
            ));
        };
        let task = tokio::task::spawn_blocking(move || {
            let _guard = guard;
            device_size(&rootfs, &sysfs, &owned)
        });
        let size = match tokio::time::timeout(self.timeout, task).await {
            Ok(Ok(Ok(size))) => size,
            Ok(Ok(Err(e))) => {
                let reason = if e.kind() == std::io::ErrorKind::NotFound {
                    Reason::NotFound
                } else {
                    Reason::IoError
                };
                return Err(VolumeError::new(
                    reason,
                    format!("block device {}: {e}", path.display()),
                ));
            }
            Ok(Err(e)) => {
                return Err(VolumeError::new(
                    Reason::IoError,
                    format!("block device {}: {e}", path.display()),
                ));
            }
            Err(_) => {
                return Err(VolumeError::new(
                    Reason::Timeout,
                    format!(
                        "block device {} did not answer within {:?}",
                        path.display(),
                        self.timeout
                    ),
                ));
            }
        };
        // kubelet reports only the capacity of a block volume.
        Ok(FsUsage {
            capacity_bytes: size,
            ..FsUsage::default()
        })
    }

    /// The volume's path: given, or found as `dir/<plugin>/<pv>`.
    async fn locate(&self, location: &Location) -> Result<PathBuf, VolumeError> {
        let (dir, pv) = match location {
            Location::Path(p) => return Ok(p.clone()),
            Location::AnyPlugin { dir, pv } => (dir.clone(), pv.clone()),
        };
        let shown = dir.display().to_string();
        let search = tokio::task::spawn_blocking(move || -> std::io::Result<Option<PathBuf>> {
            // Only directory listings of kubelet's own (local) directories:
            // the volume itself is never stat'ed here, since on a dead NFS
            // mount that would hang outside the one-call-per-path guard.
            for plugin in std::fs::read_dir(&dir)? {
                let plugin = plugin?.path();
                let Ok(entries) = std::fs::read_dir(&plugin) else {
                    continue;
                };
                if entries
                    .filter_map(Result::ok)
                    .any(|e| e.file_name() == pv.as_str())
                {
                    return Ok(Some(plugin.join(&pv)));
                }
            }
            Ok(None)
        });
        match tokio::time::timeout(self.timeout, search).await {
            Ok(Ok(Ok(Some(path)))) => Ok(path),
            Ok(Ok(Ok(None))) => Err(VolumeError::new(
                Reason::NotFound,
                format!("no plugin directory under {shown} holds the volume"),
            )),
            Ok(Ok(Err(e))) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(VolumeError::new(Reason::NotFound, format!("{shown}: {e}")))
            }
            Ok(Ok(Err(e))) => Err(VolumeError::new(Reason::IoError, format!("{shown}: {e}"))),
            Ok(Err(e)) => Err(VolumeError::new(Reason::IoError, format!("{shown}: {e}"))),
            Err(_) => Err(VolumeError::new(
                Reason::Timeout,
                format!("listing {shown} timed out"),
            )),
        }
    }
}
