//! statfs of a filesystem, turned into kubelet's figures, run off the async
//! runtime under a timeout with at most one call in flight per path: a hung
//! mount (dead NFS) costs one blocked thread, not one per sample.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::stat::stat;
use nix::sys::statvfs::statvfs;
use thiserror::Error;

use super::inflight::InFlightSet;
use crate::model::FsUsage;

/// One statfs reading, with the device the path is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsReading {
    pub usage: FsUsage,
    pub device: u64,
}

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum FsError {
    #[error("statfs {path}: {errno}")]
    Statfs {
        path: PathBuf,
        errno: nix::errno::Errno,
    },
    #[error("statfs {path} did not answer within {after:?}")]
    Timeout { path: PathBuf, after: Duration },
    #[error("statfs {path} is still hung from an earlier call")]
    StillHung { path: PathBuf },
    #[error("statfs {path} failed: {message}")]
    Task { path: PathBuf, message: String },
}

/// Blocking statfs + stat of `path`.
pub fn read_fs(path: &Path) -> Result<FsReading, FsError> {
    let err = |errno| FsError::Statfs {
        path: path.to_path_buf(),
        errno,
    };
    let vfs = statvfs(path).map_err(err)?;
    let st = stat(path).map_err(err)?;
    // The statvfs field types differ between targets; all widen to u64.
    #[allow(clippy::useless_conversion)]
    let usage = FsUsage::from_statfs(
        u64::from(vfs.fragment_size()),
        u64::from(vfs.blocks()),
        u64::from(vfs.blocks_free()),
        u64::from(vfs.blocks_available()),
        u64::from(vfs.files()),
        u64::from(vfs.files_free()),
    );
    #[allow(clippy::useless_conversion)]
    let device = u64::from(st.st_dev);
    Ok(FsReading { usage, device })
}

/// Runs statfs calls on the blocking pool, each under a timeout, never more
/// than one at a time for the same path.
#[derive(Clone, Debug, Default)]
pub struct FsProber {
    in_flight: InFlightSet,
}

impl FsProber {
    pub async fn probe(&self, path: &Path, timeout: Duration) -> Result<FsReading, FsError> {
        let Some(guard) = self.in_flight.claim(path) else {
            return Err(FsError::StillHung {
                path: path.to_path_buf(),
            });
        };
        let owned = path.to_path_buf();
        let task = tokio::task::spawn_blocking(move || {
            let _guard = guard;
            read_fs(&owned)
        });
        match tokio::time::timeout(timeout, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(FsError::Task {
                path: path.to_path_buf(),
                message: join.to_string(),
            }),
            Err(_) => Err(FsError::Timeout {
                path: path.to_path_buf(),
                after: timeout,
            }),
        }
    }

    /// Paths whose statfs has not returned yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_path_is_an_error_naming_it() {
        let err = FsProber::default()
            .probe(
                Path::new("/nonexistent/kubedf-test"),
                Duration::from_secs(5),
            )
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/kubedf-test"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn probing_twice_leaves_nothing_in_flight() {
        let prober = FsProber::default();
        let dir = tempfile::tempdir().unwrap();
        prober
            .probe(dir.path(), Duration::from_secs(5))
            .await
            .unwrap();
        prober
            .probe(dir.path(), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(prober.in_flight(), 0);
    }
}
