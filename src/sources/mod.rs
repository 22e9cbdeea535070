//! Sources do the I/O: the container runtime over CRI, the Kubernetes API,
//! statfs of filesystems, and /proc. Each is called by a sampler, off the
//! scrape path, under a timeout; what they return are [`crate::model`] types.

pub mod block;
pub mod configz;
pub mod cri;
pub mod inflight;
pub mod kube;
pub mod kubelet_config;
pub mod lane;
pub mod mounts;
pub mod pod_spec;
pub mod procfs;
pub mod statfs;
pub mod walk;

use std::path::{Component, Path, PathBuf};

use thiserror::Error;

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
