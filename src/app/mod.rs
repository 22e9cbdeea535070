//! Builds kubedf from the command line: kubelet config, registry, samplers;
//! and, while `kubedf serve` runs, builds the samplers again when the
//! kubelet settings they were built from change (a [`Generation`]). How
//! `kubedf serve` runs, in either mode, is [`serve`]'s.

mod serve;

pub use serve::{ServeError, serve_cluster};

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::cli::CommonArgs;
use crate::collector::filter::{FamilyFilter, FilterError};
use crate::kubelet::config::{ConfigSource, DEFAULT_ROOT_DIR, KubeletConfig};
use crate::model::snapshot::SnapshotHandle;
use crate::model::{Board, Snapshot, SourceId};
use crate::registry::{Registry, RegistryError};
use crate::sampling::node::{Sampler, SamplerConfig};
use crate::sampling::pods::sampler::{PodConfig, PodSampler};
use crate::sampling::volume::{VolumeConfig, VolumeSampler};
use crate::sources::HostRoot;
use crate::sources::configz::{Configz, ConfigzOptions};
use crate::sources::cri::{CriClient, CriError, DEFAULT_ENDPOINTS};
use crate::sources::io::Io;
use crate::sources::kube::{Kube, client};
use crate::sources::kubelet_config::{
    DEFAULT_VOLUME_STATS_AGG_PERIOD, Host, KubeletSourceError, ProcessId, Reading, Sources,
};

/// The collectors that need the Kubernetes API.
pub const VOLUME_STATS: &str = "volume_stats";
pub const POD_STORAGE: &str = "pod_storage";

#[derive(Debug, Error)]
pub enum BuildError {
    #[error(transparent)]
    KubeletConfig(#[from] KubeletSourceError),
    #[error(transparent)]
    Configz(#[from] crate::sources::configz::ConfigzError),
    #[error("CRI endpoint (--cri.endpoint, else kubelet's): {0}")]
    Cri(#[from] CriError),
    #[error("--collector: {0}")]
    Registry(#[from] RegistryError),
    #[error("--path.rootfs {path}: {problem}")]
    Rootfs { path: String, problem: String },
    #[error("cannot start the walk threads: {0}")]
    Walkers(#[source] std::io::Error),
    #[error(transparent)]
    Filter(#[from] FilterError),
}

pub struct App {
    pub registry: Arc<Registry>,
    pub kubelet: Arc<KubeletConfig>,
    /// Where kubelet's configuration is read again from (`serve`).
    pub kubelet_sources: Sources,
    /// The kubelet process `kubelet` was read with, if one was found.
    pub kubelet_process: Option<ProcessId>,
    /// The watch of this node's pods, when a collector needs it and the
    /// cluster can be reached.
    pub kube: Option<Kube>,
    /// `--node-name`, for the summary's `node.nodeName`.
    pub node_name: String,
    /// The samplers built from the kubelet settings in force at start.
    pub generation: Generation,
    /// How another generation is built when those settings change.
    wiring: Wiring,
}

impl App {
    pub async fn build(
        args: &CommonArgs,
        collectors: &BTreeSet<String>,
    ) -> Result<App, BuildError> {
        check_rootfs(&args.rootfs)?;
        let mut collectors = collectors.clone();
        let options = crate::collector::Options {
            volume_kubelet_names: args.volume_kubelet_names,
        };
        let filter = FamilyFilter::new(
            args.metric_allowlist.as_deref(),
            args.metric_denylist.as_deref(),
        )?;
        drop_filtered_out(&mut collectors, &filter, &options);
        // Every host path is resolved inside the host root, as the host
        // would resolve it (a symlinked /var/lib/containerd included).
        let host_root = Arc::new(
            HostRoot::open(&args.rootfs).map_err(|e| BuildError::Rootfs {
                path: args.rootfs.display().to_string(),
                problem: e.to_string(),
            })?,
        );
        let io = Io::new(
            usize::from(args.volume_stats_walk_workers),
            usize::from(args.volume_stats_walk_threads),
        )
        .map_err(BuildError::Walkers)?;
        let host = Host::on(Arc::clone(&host_root), &args.rootfs, &args.procfs);
        let kubelet_sources = Sources {
            host: host.clone(),
            file: args.kubelet_config.clone(),
            configz: configz(args).await?,
        };
        let reading = kubelet_sources.read().await?;
        log_reading(&reading);
        let kubelet_process = reading.process;
        let kubelet = reading.config;
        let pinned = Pinned::of(args);
        let settings = Settings::of(&pinned, &host, &kubelet);
        let wants_kube = [VOLUME_STATS, POD_STORAGE]
            .iter()
            .any(|c| collectors.contains(*c));
        let mut switched_off = false;
        let kube = if wants_kube {
            match kube_side(args, &settings).await {
                KubeSide::On(kube) => Some(kube),
                KubeSide::SwitchedOff => {
                    switched_off = true;
                    collectors.remove(VOLUME_STATS);
                    collectors.remove(POD_STORAGE);
                    None
                }
                // The collectors stay, with no table: their
                // kubedf_scrape_collector_success is 0, so an alert sees that
                // the main feature is off. The reason was logged once.
                KubeSide::Failed => None,
            }
        } else {
            None
        };
        let registry = Registry::with_options(Some(&collectors), &options)?.with_filter(filter);
        let wiring = Wiring {
            host,
            host_root,
            pinned,
            procfs: args.procfs.clone(),
            sysfs: args.sysfs.clone(),
            sources: registry.sources(),
            sample_interval: args.sample_interval,
            sample_timeout: args.sample_timeout,
            volume_stats_timeout: args.volume_stats_timeout,
            walk_budget: args.volume_stats_walk_timeout,
            io,
            volumes_on: kube.is_some() && collectors.contains(VOLUME_STATS),
            pods_on: kube.is_some() && collectors.contains(POD_STORAGE),
            switched_off,
            kube: kube.clone(),
        };
        let generation = wiring.generation(settings, &kubelet)?;
        Ok(App {
            registry: Arc::new(registry),
            kubelet: Arc::new(kubelet),
            kubelet_sources,
            kubelet_process,
            kube: (generation.volumes.is_some() || generation.pods.is_some())
                .then_some(kube)
                .flatten(),
            node_name: args.node_name.clone().unwrap_or_default(),
            generation,
            wiring,
        })
    }

    /// Samples everything once (`kubedf metrics`, `kubedf df`); the pods
    /// only when `with_pods`.
    pub async fn snapshot_once(self, with_pods: bool) -> Snapshot {
        let (stop_tx, stop_rx) = watch::channel(false);
        if let Some(kube) = &self.kube {
            tokio::spawn(kube.clone().watch_pods(stop_rx));
        }
        let Generation {
            sampler,
            volumes,
            pods,
            ..
        } = self.generation;
        let node = sampler.sample().await;
        let table = match volumes {
            Some(mut v) => Some(v.sample_once().await),
            None => None,
        };
        let mut snapshot = Snapshot::new(self.kubelet, node, table);
        if with_pods && let Some(mut p) = pods {
            snapshot.pods = Some(Arc::new(p.sample_once().await));
        }
        let _ = stop_tx.send(true);
        snapshot
    }

    /// Starts everything `kubedf serve` samples, until `shutdown` changes:
    /// the pod watch, the kubelet watch and the samplers, rebuilt whenever
    /// the kubelet settings they were built from change. Returns the board
    /// they publish on, and the task to await after `shutdown` (it stops
    /// the samplers).
    pub async fn start(
        self,
        kubelet_refresh: Duration,
        shutdown: watch::Receiver<bool>,
    ) -> (SnapshotHandle, JoinHandle<()>) {
        if let Some(kube) = &self.kube {
            tokio::spawn(kube.clone().watch_pods(shutdown.clone()));
        }
        let node = self.generation.sampler.sample().await;
        let board = Arc::new(Board::new(Arc::clone(&self.kubelet), node));
        let (changes_tx, changes) = watch::channel(Arc::clone(&self.kubelet));
        tokio::spawn(crate::sampling::kubelet_watch::run(
            self.kubelet_sources,
            Arc::clone(&board),
            changes_tx,
            self.kubelet_process,
            kubelet_refresh,
            shutdown.clone(),
        ));
        let running = self.generation.start(&board, self.wiring.sample_interval);
        let follow = tokio::spawn(follow(
            self.wiring,
            Arc::clone(&board),
            running,
            changes,
            shutdown,
        ));
        (board, follow)
    }
}

/// kubedf's flags that pin what would otherwise follow kubelet.
#[derive(Clone, Debug, Default)]
struct Pinned {
    root_dir: Option<String>,
    cri_endpoint: Option<String>,
    volume_stats_agg_period: Option<Duration>,
}

impl Pinned {
    fn of(args: &CommonArgs) -> Pinned {
        Pinned {
            root_dir: args.kubelet_root_dir.clone(),
            cri_endpoint: args.cri_endpoint.clone(),
            volume_stats_agg_period: args.volume_stats_agg_period,
        }
    }
}

/// What kubedf takes from kubelet, each from kubedf's flag when given,
/// else from kubelet's configuration, else kubedf's default. The samplers
/// are built from these; a change of any is a new [`Generation`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// kubelet's root dir, a host path.
    pub root_dir: String,
    /// The CRI endpoint in this process's view.
    pub cri_endpoint: String,
    /// Where kubelet keeps the pods' logs, a host path.
    pub pod_logs_dir: String,
    pub volume_stats_agg_period: Duration,
}

impl Settings {
    fn of(pinned: &Pinned, host: &Host, kubelet: &KubeletConfig) -> Settings {
        let root_dir = pinned
            .root_dir
            .clone()
            .or_else(|| kubelet.root_dir.clone())
            .unwrap_or_else(|| DEFAULT_ROOT_DIR.into());
        let cri_endpoint = match (&pinned.cri_endpoint, &kubelet.container_runtime_endpoint) {
            (Some(flag), _) => flag.clone(),
            (None, Some(kubelets)) => endpoint_under_rootfs(host, kubelets),
            (None, None) => default_endpoint_under_rootfs(host),
        };
        let volume_stats_agg_period = pinned
            .volume_stats_agg_period
            .or(kubelet
                .volume_stats_agg_period
                .map(crate::cli::clamp_agg_period))
            .unwrap_or(DEFAULT_VOLUME_STATS_AGG_PERIOD);
        Settings {
            root_dir,
            cri_endpoint,
            pod_logs_dir: kubelet.pod_logs_dir.clone(),
            volume_stats_agg_period,
        }
    }

    /// Each setting that differs in `new`, as `name old -> new`.
    pub fn changes(&self, new: &Settings) -> String {
        let mut said = Vec::new();
        let mut diff = |name: &str, old: &dyn std::fmt::Debug, new: &dyn std::fmt::Debug| {
            let (old, new) = (format!("{old:?}"), format!("{new:?}"));
            if old != new {
                said.push(format!("{name} {old} -> {new}"));
            }
        };
        diff("root dir", &self.root_dir, &new.root_dir);
        diff("CRI endpoint", &self.cri_endpoint, &new.cri_endpoint);
        diff("podLogsDir", &self.pod_logs_dir, &new.pod_logs_dir);
        diff(
            "volumeStatsAggPeriod",
            &self.volume_stats_agg_period,
            &new.volume_stats_agg_period,
        );
        said.join(", ")
    }
}

/// What a generation is built from besides kubelet's settings: kubedf's
/// own flags, and what lives as long as kubedf does (the host root, the
/// pod watch).
struct Wiring {
    host: Host,
    host_root: Arc<HostRoot>,
    pinned: Pinned,
    procfs: PathBuf,
    sysfs: PathBuf,
    sources: BTreeSet<SourceId>,
    sample_interval: Duration,
    sample_timeout: Duration,
    volume_stats_timeout: Duration,
    walk_budget: Duration,
    /// The process's guarded calls and walk pool, shared by every
    /// generation's samplers.
    io: Io,
    /// The collectors are on and the pod watch runs.
    volumes_on: bool,
    /// volumeStatsAggPeriod was 0 at start: the pod watch was not started.
    switched_off: bool,
    pods_on: bool,
    kube: Option<Kube>,
}

/// The part of kubedf built from kubelet's settings: the node sampler (its
/// CRI client and kubelet root dir) and the volume and pod samplers. When
/// the settings change, the app stops this one and starts another; the
/// server, registry, board and pod watch stay.
pub struct Generation {
    pub settings: Settings,
    pub sampler: Arc<Sampler>,
    /// The PVC side, when volume_stats is on.
    pub volumes: Option<VolumeSampler>,
    /// The pod half, when pod_storage is on.
    pub pods: Option<PodSampler>,
}

impl Wiring {
    fn generation(
        &self,
        settings: Settings,
        kubelet: &KubeletConfig,
    ) -> Result<Generation, BuildError> {
        let period_on = !settings.volume_stats_agg_period.is_zero();
        let volumes = match &self.kube {
            Some(kube) if self.volumes_on && period_on => {
                self.volume_sampler(&settings, kube.clone())
            }
            _ => None,
        };
        let pods = match &self.kube {
            Some(kube) if self.pods_on && period_on => {
                self.pod_sampler(&settings, kube.clone(), kubelet)?
            }
            _ => None,
        };
        let sampler = Sampler::new(
            SamplerConfig {
                host: Arc::clone(&self.host_root),
                procfs: self.procfs.clone(),
                kubelet_root_dir: settings.root_dir.clone(),
                timeout: self.sample_timeout,
                sources: self.sources.clone(),
            },
            CriClient::new(&settings.cri_endpoint)?,
            self.io.guard.clone(),
        );
        Ok(Generation {
            settings,
            sampler: Arc::new(sampler),
            volumes,
            pods,
        })
    }

    fn volume_sampler(&self, settings: &Settings, kube: Kube) -> Option<VolumeSampler> {
        let cfg = VolumeConfig {
            host: Arc::clone(&self.host_root),
            procfs: self.procfs.clone(),
            sysfs: self.sysfs.clone(),
            kubelet_root_dir: settings.root_dir.clone(),
            period: settings.volume_stats_agg_period,
            timeout: self.volume_stats_timeout,
            walk_budget: self.walk_budget,
        };
        match VolumeSampler::new(cfg, kube, self.io.clone()) {
            Ok(sampler) => Some(sampler),
            Err(e) => {
                warn!(error = %e, "volume_stats collector failing");
                None
            }
        }
    }

    fn pod_sampler(
        &self,
        settings: &Settings,
        kube: Kube,
        kubelet: &KubeletConfig,
    ) -> Result<Option<PodSampler>, BuildError> {
        let cfg = PodConfig {
            host: Arc::clone(&self.host_root),
            kubelet_root_dir: settings.root_dir.clone(),
            pod_logs_dir: kubelet.pod_logs_dir.clone(),
            period: settings.volume_stats_agg_period,
            cri_period: self.sample_interval,
            timeout: self.volume_stats_timeout,
            walk_budget: self.walk_budget,
        };
        Ok(
            match PodSampler::new(
                cfg,
                kube,
                CriClient::new(&settings.cri_endpoint)?,
                self.io.clone(),
            ) {
                Ok(sampler) => Some(sampler),
                Err(e) => {
                    warn!(error = %e, "pod_storage collector failing");
                    None
                }
            },
        )
    }
}

/// How long a generation's tasks get to return after being told to stop
/// (each returns at its next await) before they are aborted.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// A generation's tasks, running.
struct Running {
    settings: Settings,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Generation {
    /// Publishes this generation's tables (replacing another generation's
    /// rows) and starts its samplers on `board`.
    fn start(self, board: &SnapshotHandle, sample_interval: Duration) -> Running {
        let (stop, stopped) = watch::channel(false);
        let mut tasks = vec![tokio::spawn(Arc::clone(&self.sampler).run(
            Arc::clone(board),
            sample_interval,
            stopped.clone(),
        ))];
        // Until the first list of pods arrives, volume_stats says so.
        board.publish_volumes(self.volumes.as_ref().map(|v| Arc::new(v.table())));
        if let Some(v) = self.volumes {
            tasks.push(tokio::spawn(v.run(Arc::clone(board), stopped.clone())));
        }
        match self.pods {
            Some(mut p) => {
                board.publish_pods(Some(Arc::new(p.table())));
                tasks.push(tokio::spawn(p.run(Arc::clone(board), stopped)));
            }
            None => board.publish_pods(None),
        }
        Running {
            settings: self.settings,
            stop,
            tasks,
        }
    }
}

impl Running {
    /// Stops every task and waits until none runs, so that none publishes
    /// after its successor.
    async fn stop(self) {
        let _ = self.stop.send(true);
        for mut task in self.tasks {
            if tokio::time::timeout(STOP_GRACE, &mut task).await.is_err() {
                task.abort();
                let _ = task.await;
            }
        }
    }
}

/// Rebuilds the samplers whenever the settings they were built from change
/// with kubelet's configuration, until `shutdown` changes; then stops them.
async fn follow(
    wiring: Wiring,
    board: SnapshotHandle,
    mut running: Running,
    mut changes: watch::Receiver<Arc<KubeletConfig>>,
    mut shutdown: watch::Receiver<bool>,
) {
    // A generation that cannot be built is said once per settings.
    let mut refused: Option<Settings> = None;
    loop {
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    // The kubelet watch is gone: nothing changes any more.
                    let _ = shutdown.changed().await;
                    break;
                }
            }
            _ = shutdown.changed() => break,
        }
        let kubelet = Arc::clone(&changes.borrow_and_update());
        let settings = Settings::of(&wiring.pinned, &wiring.host, &kubelet);
        if settings == running.settings || refused.as_ref() == Some(&settings) {
            continue;
        }
        match wiring.generation(settings.clone(), &kubelet) {
            Err(e) => {
                warn!(
                    error = %e,
                    change = %running.settings.changes(&settings),
                    "kubelet's settings changed, but kubedf cannot follow them; the samplers keep the last ones"
                );
                refused = Some(settings);
            }
            Ok(next) => {
                refused = None;
                info!(
                    change = %running.settings.changes(&next.settings),
                    "kubelet's settings changed; kubedf's samplers now use the new ones"
                );
                let period = next.settings.volume_stats_agg_period;
                if period.is_zero() && (wiring.volumes_on || wiring.pods_on) {
                    info!("volume_stats and pod_storage off: kubelet's volumeStatsAggPeriod is 0");
                } else if wiring.switched_off && running.settings.volume_stats_agg_period.is_zero()
                {
                    warn!(
                        ?period,
                        "volume_stats and pod_storage were switched off at start (volumeStatsAggPeriod 0); they come on when kubedf restarts"
                    );
                }
                running.stop().await;
                // The first sample of the new root dir and runtime replaces
                // the last one of the old at once, not a sample interval on.
                board.publish_node(next.sampler.sample().await);
                running = next.start(&board, wiring.sample_interval);
            }
        }
    }
    running.stop().await;
}

/// kubelet's endpoint names a socket on the host: this process reaches it
/// under --path.rootfs. Anything but a unix socket path is left for the
/// CRI client to refuse.
fn endpoint_under_rootfs(host: &Host, endpoint: &str) -> String {
    let path = endpoint.strip_prefix("unix://").unwrap_or(endpoint);
    match host.host_file(path) {
        Ok(local) => format!("unix://{}", local.display()),
        Err(_) => endpoint.to_owned(),
    }
}

/// kubelet named no endpoint: the first of containerd's and CRI-O's whose
/// socket exists on the host, or containerd's when none does (it may appear
/// later), reached under --path.rootfs as kubelet's own would be.
fn default_endpoint_under_rootfs(host: &Host) -> String {
    let under: Vec<String> = DEFAULT_ENDPOINTS
        .iter()
        .map(|e| endpoint_under_rootfs(host, e))
        .collect();
    let exists = |e: &&String| Path::new(e.strip_prefix("unix://").unwrap_or(e)).exists();
    under
        .iter()
        .find(exists)
        .or(under.first())
        .cloned()
        .unwrap_or_default()
}

/// The `/configz` client when `--kubelet.endpoint` is set, with the API
/// server's credentials; none (said once) when those cannot be had.
/// A bad --kubelet.endpoint or --kubelet.ca-file stops kubedf at start,
/// as any other bad flag does.
async fn configz(args: &CommonArgs) -> Result<Option<Configz>, BuildError> {
    let Some(endpoint) = args.kubelet_endpoint.as_deref() else {
        return Ok(None);
    };
    let api = match crate::sources::kube::config(args.kubeconfig.as_deref()).await {
        Ok(api) => api,
        Err(e) => {
            warn!(error = %e, endpoint, "--kubelet.endpoint: no credentials for kubelet's /configz; it is not read");
            return Ok(None);
        }
    };
    let opts = ConfigzOptions {
        endpoint,
        ca_file: args.kubelet_ca_file.as_deref(),
        insecure_skip_tls_verify: args.kubelet_insecure_skip_tls_verify,
        timeout: args.sample_timeout,
    };
    Configz::new(api, &opts).map(Some).map_err(BuildError::from)
}

/// Says which sources were passed over and why, then which is in force.
fn log_reading(reading: &Reading) {
    for (source, cause) in &reading.passed_over {
        warn!(source = source.name(), error = %cause, "kubelet configuration source passed over");
    }
    log_in_force(&reading.config);
}

fn log_in_force(kubelet: &KubeletConfig) {
    let shown = kubelet.path.display().to_string();
    let source = kubelet.source.name();
    if kubelet.source == ConfigSource::Defaults {
        warn!(
            path = %shown,
            source,
            "no kubelet configuration could be read and the kubelet config file does not exist; kubelet's defaults are in force"
        );
    } else {
        info!(path = %shown, source, origin = %kubelet.origin, "kubelet config in force");
    }
}

/// Refuses a --path.rootfs that is not a directory: every host path would
/// silently be missing under it.
fn check_rootfs(rootfs: &Path) -> Result<(), BuildError> {
    let problem = match std::fs::metadata(rootfs) {
        Ok(meta) if meta.is_dir() => return Ok(()),
        Ok(_) => "not a directory".to_owned(),
        Err(e) => e.to_string(),
    };
    Err(BuildError::Rootfs {
        path: rootfs.display().to_string(),
        problem,
    })
}

/// What became of the Kubernetes side.
enum KubeSide {
    On(Kube),
    /// Switched off on purpose (`--volume-stats-agg-period 0`).
    SwitchedOff,
    /// Wanted but cannot work here; one log line says why.
    Failed,
}

/// The watch of this node's pods, or why not (with one log line saying
/// why); the rest of kubedf runs either way.
async fn kube_side(args: &CommonArgs, settings: &Settings) -> KubeSide {
    const FAILING: &str = "volume_stats collector failing (and pod_storage): kubedf_scrape_collector_success is 0 for both";
    if settings.volume_stats_agg_period.is_zero() {
        info!(
            "volume_stats and pod_storage collectors off: --volume-stats-agg-period (or kubelet's volumeStatsAggPeriod) is 0"
        );
        return KubeSide::SwitchedOff;
    }
    let Some(node) = args.node_name.as_deref().filter(|n| !n.is_empty()) else {
        warn!("{FAILING}: no node name (set --node-name or NODE_NAME)");
        return KubeSide::Failed;
    };
    match client(args.kubeconfig.as_deref()).await {
        Ok(c) => KubeSide::On(Kube::new(c, node)),
        Err(e) => {
            warn!(error = %e, "{FAILING}: cannot use the Kubernetes API");
            KubeSide::Failed
        }
    }
}

/// Takes out of `collectors` those none of whose families `filter` keeps:
/// they are not run, and the sources only they need (the pod watch, the
/// volume walks) are not started.
fn drop_filtered_out(
    collectors: &mut BTreeSet<String>,
    filter: &FamilyFilter,
    options: &crate::collector::Options,
) {
    if matches!(filter, FamilyFilter::All) {
        return;
    }
    info!(families = %filter.describe(), "--metric-allowlist/--metric-denylist");
    for c in crate::collector::all_with(options) {
        if collectors.contains(c.name()) && !c.descs().iter().any(|d| filter.includes(d.name)) {
            info!(
                collector = c.name(),
                "no family of this collector is exported: it is not run"
            );
            collectors.remove(c.name());
        }
    }
}

/// True when at least one source was read successfully.
pub fn collected_anything(snapshot: &Snapshot) -> bool {
    snapshot.source_statuses().any(|s| s.up)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    /// A wiring over a host root `root` that samples nodefs only (no
    /// runtime, no cluster needed).
    fn wiring(root: &Path, pinned: Pinned) -> Wiring {
        Wiring {
            host: Host::new(root, "/proc"),
            host_root: Arc::new(HostRoot::open(root).expect("host root")),
            pinned,
            procfs: "/proc".into(),
            sysfs: "/sys".into(),
            sources: [SourceId::NodeFs].into_iter().collect(),
            sample_interval: Duration::from_millis(50),
            sample_timeout: Duration::from_secs(5),
            volume_stats_timeout: Duration::from_secs(5),
            walk_budget: Duration::from_secs(5),
            io: Io::new(1, 1).expect("walk pool"),
            volumes_on: false,
            pods_on: false,
            switched_off: false,
            kube: None,
        }
    }

    fn kubelet(root_dir: Option<&str>, endpoint: Option<&str>) -> Arc<KubeletConfig> {
        let mut c = KubeletConfig::defaults("/var/lib/kubelet/config.yaml".into());
        c.source = ConfigSource::Process;
        c.root_dir = root_dir.map(Into::into);
        c.container_runtime_endpoint = endpoint.map(Into::into);
        Arc::new(c)
    }

    /// The nodefs path on the board once it is `want`, within 10 s.
    async fn nodefs_becomes(board: &SnapshotHandle, want: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let seen = board.snapshot().nodefs().map(|fs| fs.path.clone());
            if seen.as_deref() == Ok(want) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nodefs is {seen:?}, not {want}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts the follower on `first`; returns the board, the sender of
    /// kubelet's configurations, the shutdown sender and the task.
    async fn following(
        wiring: Wiring,
        first: Arc<KubeletConfig>,
    ) -> (
        SnapshotHandle,
        watch::Sender<Arc<KubeletConfig>>,
        watch::Sender<bool>,
        JoinHandle<()>,
        std::sync::Weak<Sampler>,
    ) {
        let settings = Settings::of(&wiring.pinned, &wiring.host, &first);
        let generation = wiring.generation(settings, &first).expect("generation");
        let first_sampler = Arc::downgrade(&generation.sampler);
        let board = Arc::new(Board::new(
            Arc::clone(&first),
            generation.sampler.sample().await,
        ));
        let running = generation.start(&board, wiring.sample_interval);
        let (changes_tx, changes) = watch::channel(first);
        let (stop_tx, stop) = watch::channel(false);
        let task = tokio::spawn(follow(wiring, Arc::clone(&board), running, changes, stop));
        (board, changes_tx, stop_tx, task, first_sampler)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_new_root_dir_is_a_new_generation_and_the_old_one_is_gone() {
        let root = tempfile::tempdir().expect("tempdir");
        for dir in ["var/lib/kubelet", "var/lib/k0s/kubelet"] {
            std::fs::create_dir_all(root.path().join(dir)).expect("mkdir");
        }
        let (board, changes, stop, task, first) =
            following(wiring(root.path(), Pinned::default()), kubelet(None, None)).await;
        nodefs_becomes(&board, "/var/lib/kubelet").await;
        let before = board.snapshot().node.taken_at;
        // Only a threshold changed: the same generation samples on.
        let mut thresholds_only = (*kubelet(None, None)).clone();
        thresholds_only.image_gc.high_threshold_percent = 70;
        changes.send_replace(Arc::new(thresholds_only));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(first.upgrade().is_some(), "the first generation still runs");
        assert!(board.snapshot().node.taken_at > before, "it still samples");
        changes.send_replace(kubelet(Some("/var/lib/k0s/kubelet"), None));
        nodefs_becomes(&board, "/var/lib/k0s/kubelet").await;
        // Its task returned and dropped the sampler: nothing of the old
        // root dir is published again.
        assert!(first.upgrade().is_none(), "the first generation is dropped");
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(60)).await;
            assert_eq!(
                board
                    .snapshot()
                    .nodefs()
                    .map(|fs| fs.path.clone())
                    .as_deref(),
                Ok("/var/lib/k0s/kubelet")
            );
        }
        stop.send_replace(true);
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the follower stops")
            .expect("no panic");
        let at_stop = board.snapshot().node.taken_at;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            board.snapshot().node.taken_at,
            at_stop,
            "nothing samples after the stop"
        );
        assert!(at_stop <= SystemTime::now());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pinned_root_dir_is_not_followed() {
        let root = tempfile::tempdir().expect("tempdir");
        for dir in ["pinned", "var/lib/k0s/kubelet"] {
            std::fs::create_dir_all(root.path().join(dir)).expect("mkdir");
        }
        let pinned = Pinned {
            root_dir: Some("/pinned".into()),
            ..Pinned::default()
        };
        let (board, changes, stop, task, first) =
            following(wiring(root.path(), pinned), kubelet(None, None)).await;
        nodefs_becomes(&board, "/pinned").await;
        changes.send_replace(kubelet(Some("/var/lib/k0s/kubelet"), None));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(first.upgrade().is_some(), "no new generation");
        nodefs_becomes(&board, "/pinned").await;
        stop.send_replace(true);
        task.await.expect("no panic");
    }

    #[test]
    fn settings_follow_kubelet_unless_pinned_and_say_what_changed() {
        let root = tempfile::tempdir().expect("tempdir");
        let host = Host::new(root.path(), "/proc");
        let k0s = kubelet(
            Some("/var/lib/k0s/kubelet"),
            Some("unix:///run/k0s/containerd.sock"),
        );
        let followed = Settings::of(&Pinned::default(), &host, &k0s);
        assert_eq!(followed.root_dir, "/var/lib/k0s/kubelet");
        let real = root.path().canonicalize().expect("real path");
        assert_eq!(
            followed.cri_endpoint,
            format!("unix://{}/run/k0s/containerd.sock", real.display())
        );
        let pinned = Pinned {
            root_dir: Some("/srv/kubelet".into()),
            cri_endpoint: Some("unix:///host/run/crio/crio.sock".into()),
            volume_stats_agg_period: Some(Duration::from_secs(30)),
        };
        let kept = Settings::of(&pinned, &host, &k0s);
        assert_eq!(kept.root_dir, "/srv/kubelet");
        assert_eq!(kept.cri_endpoint, "unix:///host/run/crio/crio.sock");
        assert_eq!(kept.volume_stats_agg_period, Duration::from_secs(30));
        let defaults = Settings::of(&Pinned::default(), &host, &kubelet(None, None));
        // kubelet named none: containerd's, under the host root.
        assert_eq!(
            defaults.cri_endpoint,
            format!("unix://{}/run/containerd/containerd.sock", real.display())
        );
        // CRI-O's when only its socket exists on the host.
        std::fs::create_dir_all(root.path().join("var/run/crio")).expect("mkdir");
        let _crio =
            std::os::unix::net::UnixListener::bind(root.path().join("var/run/crio/crio.sock"))
                .expect("bind");
        assert_eq!(
            Settings::of(&Pinned::default(), &host, &kubelet(None, None)).cri_endpoint,
            format!("unix://{}/var/run/crio/crio.sock", real.display())
        );
        assert_eq!(
            defaults.changes(&followed),
            format!(
                "root dir \"/var/lib/kubelet\" -> \"/var/lib/k0s/kubelet\", CRI endpoint {:?} -> {:?}",
                defaults.cri_endpoint, followed.cri_endpoint
            )
        );
    }
}
