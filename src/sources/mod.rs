//! Sources do the I/O: the container runtime over CRI, statfs of filesystems,
//! and /proc. Each is called by the sampler, off the scrape path, under a
//! timeout.

pub mod block;
pub mod cri;
pub mod inflight;
pub mod kube;
pub mod mounts;
pub mod procfs;
pub mod statfs;
pub mod walk;

use std::fmt;
use std::path::{Component, Path, PathBuf};

use thiserror::Error;

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

#[derive(Debug, Error, PartialEq, Eq)]
pub enum HostPathError {
    #[error("host path {0:?} is not absolute")]
    NotAbsolute(String),
    #[error("host path {0:?} contains '..'")]
    ParentDir(String),
}

/// Maps a path on the host (as kubelet or the runtime name it) to the path
/// this process sees, under `--path.rootfs`. Relative paths and `..` are
/// refused so that nothing outside the host root can be named.
pub fn host_path(rootfs: &Path, host: &str) -> Result<PathBuf, HostPathError> {
    let path = Path::new(host);
    if !path.is_absolute() {
        return Err(HostPathError::NotAbsolute(host.to_owned()));
    }
    let mut out = rootfs.to_path_buf();
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => return Err(HostPathError::ParentDir(host.to_owned())),
            Component::Prefix(_) => return Err(HostPathError::NotAbsolute(host.to_owned())),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_paths_resolve_under_rootfs() {
        let root = Path::new("/host");
        assert_eq!(
            host_path(root, "/var/lib/kubelet"),
            Ok(PathBuf::from("/host/var/lib/kubelet"))
        );
        assert_eq!(
            host_path(Path::new("/"), "/var/lib/kubelet/"),
            Ok(PathBuf::from("/var/lib/kubelet"))
        );
        assert_eq!(host_path(root, "/"), Ok(PathBuf::from("/host")));
        assert_eq!(host_path(root, "/a/./b"), Ok(PathBuf::from("/host/a/b")));
        assert!(matches!(
            host_path(root, "var/lib"),
            Err(HostPathError::NotAbsolute(_))
        ));
        assert!(matches!(
            host_path(root, ""),
            Err(HostPathError::NotAbsolute(_))
        ));
        assert!(matches!(
            host_path(root, "/a/../../etc"),
            Err(HostPathError::ParentDir(_))
        ));
    }
}
