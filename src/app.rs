//! Builds kubedf from the command line: kubelet config, registry, samplers.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use thiserror::Error;
use tracing::warn;

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
        let mut collectors = collectors.clone();
        let volumes = if collectors.contains(VOLUME_STATS) {
            let volumes = volume_side(args).await;
            if volumes.is_none() {
                collectors.remove(VOLUME_STATS);
            }
            volumes
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

/// The Kubernetes side, or None (with one log line saying why) when volume
/// stats cannot work here; the rest of kubedf runs either way.
async fn volume_side(args: &CommonArgs) -> Option<(Kube, VolumeSampler)> {
    if args.volume_stats_agg_period.is_zero() {
        warn!("volume_stats collector off: --volume-stats-agg-period is 0");
        return None;
    }
    let Some(node) = args.node_name.as_deref().filter(|n| !n.is_empty()) else {
        warn!("volume_stats collector off: no node name (set --node-name or NODE_NAME)");
        return None;
    };
    let client = match client(args.kubeconfig.as_deref()).await {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "volume_stats collector off: cannot reach the Kubernetes API");
            return None;
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
        Ok(sampler) => Some((kube, sampler)),
        Err(e) => {
            warn!(error = %e, "volume_stats collector off");
            None
        }
    }
}

/// True when at least one source was read successfully.
pub fn collected_anything(snapshot: &Snapshot) -> bool {
    snapshot.source_statuses().any(|s| s.up)
}
