//! The sources kubedf reads, and how each one fared.

use std::fmt;
use std::time::{Duration, SystemTime};

/// A source's figures, or why there are none. `None` means the source was
/// not sampled at all (no enabled collector needs it).
pub type Sampled<T> = Option<Result<T, String>>;

/// The things kubedf reads, as named in `kubedf_source_*{source}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SourceId {
    /// The container runtime's CRI socket (Version, ImageFsInfo).
    Cri,
    /// statfs of the image (and container) filesystem the runtime reports.
    ImageFs,
    /// statfs of the kubelet root dir.
    NodeFs,
    /// /proc: pid_max, threads-max, loadavg.
    Procfs,
    /// The Kubernetes API: the watch of this node's pods, PVC and PV GETs.
    Kubernetes,
}

impl SourceId {
    pub const ALL: [SourceId; 5] = [
        SourceId::Cri,
        SourceId::ImageFs,
        SourceId::NodeFs,
        SourceId::Procfs,
        SourceId::Kubernetes,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SourceId::Cri => "cri",
            SourceId::ImageFs => "imagefs",
            SourceId::NodeFs => "nodefs",
            SourceId::Procfs => "procfs",
            SourceId::Kubernetes => "kubernetes",
        }
    }
}

impl fmt::Display for SourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How one source fared in its latest read, and when it last succeeded.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceStatus {
    pub source: SourceId,
    pub up: bool,
    pub last_success: Option<SystemTime>,
    /// How long the latest read took, where a read has a duration.
    pub duration: Option<Duration>,
    pub error: Option<String>,
}
