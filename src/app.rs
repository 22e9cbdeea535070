//! Builds kubedf from the command line: kubelet config, registry, samplers.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tracing::{info, warn};

use crate::cli::CommonArgs;
use crate::kubelet::config::{ConfigSource, DEFAULT_ROOT_DIR, KubeletConfig};
use crate::model::Snapshot;
use crate::pods::sampler::{PodConfig, PodSampler};
use crate::registry::{Registry, RegistryError};
use crate::sampler::{Sampler, SamplerConfig};
use crate::sources::HostRoot;
use crate::sources::configz::{Configz, ConfigzOptions};
use crate::sources::cri::{CriClient, CriError, default_endpoint};
use crate::sources::io::Io;
use crate::sources::kube::{Kube, client};
use crate::sources::kubelet_config::{
    DEFAULT_VOLUME_STATS_AGG_PERIOD, Host, KubeletSourceError, ProcessId, Reading, Sources,
};
use crate::volume::{VolumeConfig, VolumeSampler};

/// The collectors that need the Kubernetes API.
pub const VOLUME_STATS: &str = "volume_stats";
pub const POD_STORAGE: &str = "pod_storage";

#[derive(Debug, Error)]
pub enum BuildError {
    #[error(transparent)]
    KubeletConfig(#[from] KubeletSourceError),
    #[error(transparent)]
    Configz(#[from] crate::sources::configz::ConfigzError),
    #[error("--cri.endpoint: {0}")]
    Cri(#[from] CriError),
    #[error("--collector: {0}")]
    Registry(#[from] RegistryError),
    #[error("--path.rootfs {path}: {problem}")]
    Rootfs { path: String, problem: String },
    #[error("cannot start the walk threads: {0}")]
    Walkers(#[source] std::io::Error),
}

pub struct App {
    pub registry: Arc<Registry>,
    pub kubelet: Arc<KubeletConfig>,
    /// Where kubelet's configuration is read again from (`serve`).
    pub kubelet_sources: Sources,
    /// The kubelet process `kubelet` was read with, if one was found.
    pub kubelet_process: Option<ProcessId>,
    pub sampler: Arc<Sampler>,
    /// The watch of this node's pods, when a collector needs it and the
    /// cluster can be reached.
    pub kube: Option<Kube>,
    /// The PVC side, when volume_stats is on.
    pub volumes: Option<VolumeSampler>,
    /// The pod half, when pod_storage is on.
    pub pods: Option<PodSampler>,
    /// `--node-name`, for the summary's `node.nodeName`.
    pub node_name: String,
    /// The process's guarded calls and walk pool, shared by every sampler
    /// (a sampler built again later takes this one too).
    pub io: Io,
}

impl App {
    pub async fn build(
        args: &CommonArgs,
        collectors: &BTreeSet<String>,
    ) -> Result<App, BuildError> {
        check_rootfs(&args.rootfs)?;
        let mut collectors = collectors.clone();
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
        let host = Host::new(&args.rootfs, &args.procfs);
        let kubelet_sources = Sources {
            host: host.clone(),
            file: args.kubelet_config.clone(),
            configz: configz(args).await?,
        };
        let reading = kubelet_sources.read().await?;
        log_reading(&reading);
        let kubelet_process = reading.process;
        let kubelet = reading.config;
        let settings = Settings::of(args, &host, &kubelet);
        let endpoint = settings.cri_endpoint.clone();
        let wants_kube = [VOLUME_STATS, POD_STORAGE]
            .iter()
            .any(|c| collectors.contains(*c));
        let kube = if wants_kube {
            match kube_side(args, &settings).await {
                KubeSide::On(kube) => Some(kube),
                KubeSide::SwitchedOff => {
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
        let volumes = match (&kube, collectors.contains(VOLUME_STATS)) {
            (Some(kube), true) => volume_sampler(args, &host_root, &settings, kube.clone(), &io),
            _ => None,
        };
        let pods = match (&kube, collectors.contains(POD_STORAGE)) {
            (Some(kube), true) => {
                pod_sampler(args, &host_root, &settings, kube.clone(), &kubelet, &io)?
            }
            _ => None,
        };
        let options = crate::collector::Options {
            volume_kubelet_names: args.volume_kubelet_names,
        };
        let registry = Registry::with_options(Some(&collectors), &options)?;
        let cri = CriClient::new(&endpoint)?;
        let sampler = Sampler::new(
            SamplerConfig {
                host: host_root,
                procfs: args.procfs.clone(),
                kubelet_root_dir: settings.root_dir.clone(),
                timeout: args.sample_timeout,
                sources: registry.sources(),
            },
            cri,
            io.guard.clone(),
        );
        Ok(App {
            registry: Arc::new(registry),
            kubelet: Arc::new(kubelet),
            kubelet_sources,
            kubelet_process,
            sampler: Arc::new(sampler),
            kube: (volumes.is_some() || pods.is_some())
                .then_some(kube)
                .flatten(),
            volumes,
            pods,
            node_name: args.node_name.clone().unwrap_or_default(),
            io,
        })
    }
}

/// What kubedf takes from kubelet, each from kubedf's flag when given,
/// else from kubelet's configuration, else kubedf's default.
struct Settings {
    /// kubelet's root dir, a host path.
    root_dir: String,
    /// The CRI endpoint in this process's view.
    cri_endpoint: String,
    volume_stats_agg_period: Duration,
}

impl Settings {
    fn of(args: &CommonArgs, host: &Host, kubelet: &KubeletConfig) -> Settings {
        let root_dir = args
            .kubelet_root_dir
            .clone()
            .or_else(|| kubelet.root_dir.clone())
            .unwrap_or_else(|| DEFAULT_ROOT_DIR.into());
        let cri_endpoint = match (&args.cri_endpoint, &kubelet.container_runtime_endpoint) {
            (Some(flag), _) => flag.clone(),
            (None, Some(kubelets)) => endpoint_under_rootfs(host, kubelets),
            (None, None) => default_endpoint(),
        };
        let volume_stats_agg_period = args
            .volume_stats_agg_period
            .or(kubelet
                .volume_stats_agg_period
                .map(crate::cli::clamp_agg_period))
            .unwrap_or(DEFAULT_VOLUME_STATS_AGG_PERIOD);
        Settings {
            root_dir,
            cri_endpoint,
            volume_stats_agg_period,
        }
    }
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

fn volume_sampler(
    args: &CommonArgs,
    host: &Arc<HostRoot>,
    settings: &Settings,
    kube: Kube,
    io: &Io,
) -> Option<VolumeSampler> {
    let cfg = VolumeConfig {
        host: Arc::clone(host),
        procfs: args.procfs.clone(),
        sysfs: args.sysfs.clone(),
        kubelet_root_dir: settings.root_dir.clone(),
        period: settings.volume_stats_agg_period,
        timeout: args.volume_stats_timeout,
        walk_budget: args.volume_stats_walk_timeout,
    };
    match VolumeSampler::new(cfg, kube, io.clone()) {
        Ok(sampler) => Some(sampler),
        Err(e) => {
            warn!(error = %e, "volume_stats collector failing");
            None
        }
    }
}

fn pod_sampler(
    args: &CommonArgs,
    host: &Arc<HostRoot>,
    settings: &Settings,
    kube: Kube,
    kubelet: &KubeletConfig,
    io: &Io,
) -> Result<Option<PodSampler>, BuildError> {
    let cfg = PodConfig {
        host: Arc::clone(host),
        kubelet_root_dir: settings.root_dir.clone(),
        pod_logs_dir: kubelet.pod_logs_dir.clone(),
        period: settings.volume_stats_agg_period,
        cri_period: args.sample_interval,
        timeout: args.volume_stats_timeout,
        walk_budget: args.volume_stats_walk_timeout,
    };
    Ok(
        match PodSampler::new(
            cfg,
            kube,
            CriClient::new(&settings.cri_endpoint)?,
            io.clone(),
        ) {
            Ok(sampler) => Some(sampler),
            Err(e) => {
                warn!(error = %e, "pod_storage collector failing");
                None
            }
        },
    )
}

/// True when at least one source was read successfully.
pub fn collected_anything(snapshot: &Snapshot) -> bool {
    snapshot.source_statuses().any(|s| s.up)
}
