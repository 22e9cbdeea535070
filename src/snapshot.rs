//! The snapshot: everything the sampler last saw, immutable once built and
//! swapped in atomically. Collectors read only this, so a scrape never does I/O.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;

use crate::kubelet::config::KubeletConfig;
use crate::kubelet::eviction::FsLayout;
use crate::pods::model::PodTable;
use crate::sources::SourceId;
use crate::sources::cri::RuntimeVersion;
use crate::sources::procfs::Rlimit;
use crate::sources::statfs::FsUsage;
use crate::volume_sampler::VolumeTable;

/// A source's figures, or why there are none. `None` in a snapshot field means
/// the source was not sampled at all (no enabled collector needs it).
pub type Sampled<T> = Option<Result<T, String>>;

/// A filesystem kubedf reports: where it is and how full.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filesystem {
    /// The path on the host (the runtime's mountpoint, the kubelet root dir).
    pub path: String,
    pub usage: FsUsage,
    /// st_dev of the path, to tell whether two filesystems are the same one.
    pub device: u64,
}

/// The container runtime's view: its version and its filesystems, with
/// kubelet's merge of runtime figures (used) and statfs (capacity, free).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Runtime {
    pub version: RuntimeVersion,
    /// The first image filesystem the runtime reports, as kubelet uses it.
    pub image_fs: Result<Filesystem, String>,
    /// The first container filesystem, when the runtime splits them.
    pub container_fs: Option<Result<Filesystem, String>>,
}

/// How one source fared in the latest sample, and when it last succeeded.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceStatus {
    pub source: SourceId,
    pub up: bool,
    pub last_success: Option<SystemTime>,
    /// How long the latest read took, where a read has a duration.
    pub duration: Option<Duration>,
    pub error: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Snapshot {
    pub taken_at: SystemTime,
    pub kubelet: Arc<KubeletConfig>,
    pub runtime: Sampled<Runtime>,
    pub nodefs: Sampled<Filesystem>,
    pub rlimit: Sampled<Rlimit>,
    /// PVC volume stats, published by the volume sampler on its own
    /// schedule; `None` when the volume_stats collector is off.
    pub volumes: Option<Arc<VolumeTable>>,
    /// The pod half (per-pod ephemeral storage), published by the pod
    /// sampler on its own schedule; `None` when pod_storage is off.
    pub pods: Option<Arc<PodTable>>,
    pub sources: Vec<SourceStatus>,
}

impl Snapshot {
    /// The image filesystem, if the runtime and its statfs both answered.
    pub fn image_fs(&self) -> Result<&Filesystem, String> {
        match &self.runtime {
            None => Err("the container runtime was not sampled".into()),
            Some(Err(e)) => Err(e.clone()),
            Some(Ok(rt)) => rt.image_fs.as_ref().map_err(Clone::clone),
        }
    }

    /// The filesystem holding container writable layers: the runtime's
    /// container filesystem when it reports one, else the image filesystem.
    pub fn container_fs(&self) -> Result<&Filesystem, String> {
        match &self.runtime {
            Some(Ok(Runtime {
                container_fs: Some(fs),
                ..
            })) => fs.as_ref().map_err(Clone::clone),
            _ => self.image_fs(),
        }
    }

    pub fn nodefs(&self) -> Result<&Filesystem, String> {
        sampled(&self.nodefs, "the kubelet root dir")
    }

    /// Every source's status: the sampler's and the Kubernetes API's.
    pub fn source_statuses(&self) -> impl Iterator<Item = &SourceStatus> {
        self.sources
            .iter()
            .chain(self.volumes.as_ref().map(|v| &v.source))
            // One watch feeds both tables: report it once.
            .chain(
                self.pods
                    .as_ref()
                    .filter(|_| self.volumes.is_none())
                    .map(|p| &p.source),
            )
    }

    pub fn rlimit(&self) -> Result<&Rlimit, String> {
        sampled(&self.rlimit, "/proc")
    }

    /// Where images and writable layers live, as kubelet's eviction manager
    /// decides it: a dedicated image filesystem is on another device than the
    /// kubelet root dir.
    pub fn fs_layout(&self) -> FsLayout {
        let split_image_fs = matches!(
            &self.runtime,
            Some(Ok(Runtime {
                container_fs: Some(_),
                ..
            }))
        );
        let dedicated_image_fs = match (self.image_fs(), self.nodefs()) {
            (Ok(image), Ok(node)) => image.device != node.device,
            _ => false,
        };
        FsLayout {
            dedicated_image_fs,
            split_image_fs,
        }
    }
}

fn sampled<'a, T>(value: &'a Sampled<T>, what: &str) -> Result<&'a T, String> {
    match value {
        None => Err(format!("{what} was not sampled")),
        Some(r) => r.as_ref().map_err(Clone::clone),
    }
}

/// The current snapshot, shared between the sampler (writer) and scrapes (readers).
pub type SnapshotHandle = Arc<ArcSwap<Snapshot>>;
