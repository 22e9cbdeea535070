//! Builds kubedf from the command line: kubelet config, registry, samplers.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use thiserror::Error;
use tracing::{info, warn};

use crate::cli::CommonArgs;
use crate::kubelet::config::{ConfigError, KubeletConfig};
use crate::model::Snapshot;
use crate::registry::{Registry, RegistryError};
use crate::sampler::{Sampler, SamplerConfig};
use crate::sources::cri::{CriClient, CriError, default_endpoint};
use crate::sources::kube::{Kube, client};
use crate::sources::{HostPathError, host_path};
use crate::volume::{VolumeConfig, VolumeSampler};

/// The collector that needs the Kubernetes API.
pub const VOLUME_STATS: &str = "volume_stats";

#[derive(Debug, Error)]
pub enum BuildError {
    #[error(transparent)]
    KubeletConfig(#[from] ConfigError),
    #[error("--kubelet.config: {0}")]
    KubeletConfigPath(#[source] HostPathError),
    #[error("--cri.endpoint: {0}")]
    Cri(#[from] CriError),
    #[error("--collector: {0}")]
    Registry(#[from] RegistryError),
    #[error("--path.rootfs {path}: {problem}")]
    Rootfs { path: String, problem: String },
}

pub struct App {
    pub registry: Arc<Registry>,
    pub kubelet: Arc<KubeletConfig>,
    pub sampler: Arc<Sampler>,
    /// The PVC side, when volume_stats is on and the cluster can be reached.
    pub volumes: Option<(Kube, VolumeSampler)>,
}

impl App {
    pub async fn build(
        args: &CommonArgs,
        collectors: &BTreeSet<String>,
    ) -> Result<App, BuildError> {
        check_rootfs(&args.rootfs)?;
        let mut collectors = collectors.clone();
        let volumes = if collectors.contains(VOLUME_STATS) {
            match volume_side(args).await {
                VolumeSide::On(kube, sampler) => Some((kube, *sampler)),
                VolumeSide::SwitchedOff => {
                    collectors.remove(VOLUME_STATS);
                    None
                }
                // The collector stays, with no volume table: its
                // kubedf_scrape_collector_success is 0, so an alert sees
                // that the main feature is off. The reason was logged.
                VolumeSide::Failed => None,
            }
        } else {
            None
        };
        let options = crate::collector::Options {
            volume_kubelet_names: args.volume_kubelet_names,
        };
        let registry = Registry::with_options(Some(&collectors), &options)?;
        let config_file =
            host_path(&args.rootfs, &args.kubelet_config).map_err(BuildError::KubeletConfigPath)?;
        let kubelet = KubeletConfig::load(&config_file, Path::new(&args.kubelet_config))?;
        let shown = kubelet.path.display().to_string();
        if kubelet.from_file {
            info!(path = %shown, source = "file", "kubelet config in force");
        } else {
            warn!(
                path = %shown,
                source = "defaults",
                "kubelet config file does not exist; kubelet's defaults are in force"
            );
        }
        let endpoint = args.cri_endpoint.clone().unwrap_or_else(default_endpoint);
        let cri = CriClient::new(&endpoint)?;
        let sampler = Sampler::new(
            SamplerConfig {
                rootfs: args.rootfs.clone(),
                procfs: args.procfs.clone(),
                kubelet_root_dir: args.kubelet_root_dir.clone(),
                timeout: args.sample_timeout,
                sources: registry.sources(),
            },
            cri,
        );
        Ok(App {
            registry: Arc::new(registry),
            kubelet: Arc::new(kubelet),
            sampler: Arc::new(sampler),
            volumes,
        })
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
enum VolumeSide {
    On(Kube, Box<VolumeSampler>),
    /// Switched off on purpose (`--volume-stats-agg-period 0`).
    SwitchedOff,
    /// Wanted but cannot work here; one log line says why.
    Failed,
}

/// The Kubernetes side, or why not (with one log line saying why); the rest
/// of kubedf runs either way.
async fn volume_side(args: &CommonArgs) -> VolumeSide {
    if args.volume_stats_agg_period.is_zero() {
        info!("volume_stats collector off: --volume-stats-agg-period is 0");
        return VolumeSide::SwitchedOff;
    }
    let Some(node) = args.node_name.as_deref().filter(|n| !n.is_empty()) else {
        warn!(
            "volume_stats collector failing: no node name (set --node-name or NODE_NAME); kubedf_scrape_collector_success{{collector=\"volume_stats\"}} is 0"
        );
        return VolumeSide::Failed;
    };
    let client = match client(args.kubeconfig.as_deref()).await {
        Ok(c) => c,
        Err(e) => {
            warn!(
                error = %e,
                "volume_stats collector failing: cannot use the Kubernetes API; kubedf_scrape_collector_success{{collector=\"volume_stats\"}} is 0"
            );
            return VolumeSide::Failed;
        }
    };
    let kube = Kube::new(client, node);
    let cfg = VolumeConfig {
        rootfs: args.rootfs.clone(),
        procfs: args.procfs.clone(),
        sysfs: args.sysfs.clone(),
        kubelet_root_dir: args.kubelet_root_dir.clone(),
        period: args.volume_stats_agg_period,
        timeout: args.volume_stats_timeout,
        walk_budget: args.volume_stats_walk_timeout,
        walk_workers: usize::from(args.volume_stats_walk_workers),
        walk_threads: usize::from(args.volume_stats_walk_threads),
    };
    match VolumeSampler::new(cfg, kube.clone()) {
        Ok(sampler) => VolumeSide::On(kube, Box::new(sampler)),
        Err(e) => {
            warn!(error = %e, "volume_stats collector failing");
            VolumeSide::Failed
        }
    }
}

/// True when at least one source was read successfully.
pub fn collected_anything(snapshot: &Snapshot) -> bool {
    snapshot.source_statuses().any(|s| s.up)
}
