//! Builds kubedf from the command line: kubelet config, registry, sampler.

use std::path::Path;
use std::sync::Arc;

use thiserror::Error;

use crate::cli::CommonArgs;
use crate::kubelet::config::{ConfigError, KubeletConfig};
use crate::registry::{Registry, RegistryError};
use crate::sampler::{Sampler, SamplerConfig};
use crate::snapshot::Snapshot;
use crate::sources::cri::{CriClient, CriError, default_endpoint};
use crate::sources::{HostPathError, host_path};

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
    pub sampler: Arc<Sampler>,
}

impl App {
    pub fn build(
        args: &CommonArgs,
        collectors: &std::collections::BTreeSet<String>,
    ) -> Result<App, BuildError> {
        let registry = Registry::new(Some(collectors))?;
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
            Arc::new(kubelet),
            cri,
        );
        Ok(App {
            registry: Arc::new(registry),
            sampler: Arc::new(sampler),
        })
    }
}

/// True when at least one source was read successfully.
pub fn collected_anything(snapshot: &Snapshot) -> bool {
    snapshot.sources.iter().any(|s| s.up)
}
