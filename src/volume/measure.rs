//! The I/O of one volume measurement: statfs of a mount point, a du-method
//! walk, or a block device's size, each off the async runtime under a
//! timeout with at most one call in flight per path.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::plan::{Location, Target, walked_usage};
use crate::model::{FsUsage, Method, Reason, VolumeError};
use crate::sources::block::device_size;
use crate::sources::inflight::InFlightSet;
use crate::sources::mounts::mount_points;
use crate::sources::statfs::{FsError, FsProber};
use crate::sources::walk::{PoolError, WalkError, WalkPool};

/// The I/O of one measurement, shared by the spawned tasks.
pub struct Measurer {
    pub rootfs: PathBuf,
    pub sysfs: PathBuf,
    pub timeout: Duration,
    pub walk_budget: Duration,
    pub prober: FsProber,
    pub walkers: WalkPool,
    /// Block devices being read, one read at a time per device.
    pub reading: InFlightSet,
}

fn fs_error(e: FsError) -> VolumeError {
    let reason = match &e {
        FsError::Timeout { .. } | FsError::StillHung { .. } => Reason::Timeout,
        FsError::Statfs { errno, .. } if *errno == nix::errno::Errno::ENOENT => Reason::NotFound,
        _ => Reason::IoError,
    };
    VolumeError::new(reason, e.to_string())
}

impl Measurer {
    pub async fn measure(
        &self,
        target: &Target,
        mounts: &HashSet<PathBuf>,
    ) -> Result<(FsUsage, Method), VolumeError> {
        let path = self.locate(&target.location).await?;
        match target.method {
            Method::Statfs => {
                if !mounts.contains(&path) {
                    return Err(VolumeError::new(
                        Reason::NotMounted,
                        format!(
                            "{} is not a mount point; statfs would report the node's root filesystem",
                            path.display()
                        ),
                    ));
                }
                Ok((self.statfs(&path).await?, Method::Statfs))
            }
            Method::LocalPath if mounts.contains(&path) => {
                Ok((self.statfs(&path).await?, Method::Statfs))
            }
            Method::Walk | Method::LocalPath => {
                Ok((self.walk(&path, target.capacity).await?, Method::Walk))
            }
            Method::Block => Ok((self.block(&path).await?, Method::Block)),
        }
    }

    async fn statfs(&self, path: &Path) -> Result<FsUsage, VolumeError> {
        self.prober
            .probe(path, self.timeout)
            .await
            .map(|r| r.usage)
            .map_err(fs_error)
    }

    async fn walk(&self, path: &Path, declared: Option<i64>) -> Result<FsUsage, VolumeError> {
        let usage = self
            .walkers
            .walk(path, self.walk_budget, self.timeout)
            .await
            .map_err(|e| {
                let reason = match &e {
                    PoolError::Walk(WalkError::BudgetExceeded { .. }) => Reason::WalkBudgetExceeded,
                    PoolError::Walk(WalkError::Root { source, .. })
                        if source.kind() == std::io::ErrorKind::NotFound =>
                    {
                        Reason::NotFound
                    }
                    PoolError::Timeout { .. } | PoolError::StillRunning(_) => Reason::Timeout,
                    _ => Reason::IoError,
                };
                VolumeError::new(reason, e.to_string())
            })?;
        let fs = self.statfs(path).await?;
        Ok(walked_usage(declared, usage.bytes, usage.inodes, &fs))
    }

    async fn block(&self, path: &Path) -> Result<FsUsage, VolumeError> {
        let rootfs = self.rootfs.clone();
        let sysfs = self.sysfs.clone();
        let owned = path.to_path_buf();
        let Some(guard) = self.reading.claim(path) else {
            return Err(VolumeError::new(
                Reason::Timeout,
                format!(
                    "block device {} is still hung from an earlier read",
                    path.display()
                ),
            ));
        };
        let task = tokio::task::spawn_blocking(move || {
            let _guard = guard;
            device_size(&rootfs, &sysfs, &owned)
        });
        let size = match tokio::time::timeout(self.timeout, task).await {
            Ok(Ok(Ok(size))) => size,
            Ok(Ok(Err(e))) => {
                let reason = if e.kind() == std::io::ErrorKind::NotFound {
                    Reason::NotFound
                } else {
                    Reason::IoError
                };
                return Err(VolumeError::new(
                    reason,
                    format!("block device {}: {e}", path.display()),
                ));
            }
            Ok(Err(e)) => {
                return Err(VolumeError::new(
                    Reason::IoError,
                    format!("block device {}: {e}", path.display()),
                ));
            }
            Err(_) => {
                return Err(VolumeError::new(
                    Reason::Timeout,
                    format!(
                        "block device {} did not answer within {:?}",
                        path.display(),
                        self.timeout
                    ),
                ));
            }
        };
        // kubelet reports only the capacity of a block volume.
        Ok(FsUsage {
            capacity_bytes: size,
            ..FsUsage::default()
        })
    }

    /// The volume's path: given, or found as `dir/<plugin>/<pv>`.
    async fn locate(&self, location: &Location) -> Result<PathBuf, VolumeError> {
        let (dir, pv) = match location {
            Location::Path(p) => return Ok(p.clone()),
            Location::AnyPlugin { dir, pv } => (dir.clone(), pv.clone()),
        };
        let shown = dir.display().to_string();
        let search = tokio::task::spawn_blocking(move || -> std::io::Result<Option<PathBuf>> {
            // Only directory listings of kubelet's own (local) directories:
            // the volume itself is never stat'ed here, since on a dead NFS
            // mount that would hang outside the one-call-per-path guard.
            for plugin in std::fs::read_dir(&dir)? {
                let plugin = plugin?.path();
                let Ok(entries) = std::fs::read_dir(&plugin) else {
                    continue;
                };
                if entries
                    .filter_map(Result::ok)
                    .any(|e| e.file_name() == pv.as_str())
                {
                    return Ok(Some(plugin.join(&pv)));
                }
            }
            Ok(None)
        });
        match tokio::time::timeout(self.timeout, search).await {
            Ok(Ok(Ok(Some(path)))) => Ok(path),
            Ok(Ok(Ok(None))) => Err(VolumeError::new(
                Reason::NotFound,
                format!("no plugin directory under {shown} holds the volume"),
            )),
            Ok(Ok(Err(e))) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(VolumeError::new(Reason::NotFound, format!("{shown}: {e}")))
            }
            Ok(Ok(Err(e))) => Err(VolumeError::new(Reason::IoError, format!("{shown}: {e}"))),
            Ok(Err(e)) => Err(VolumeError::new(Reason::IoError, format!("{shown}: {e}"))),
            Err(_) => Err(VolumeError::new(
                Reason::Timeout,
                format!("listing {shown} timed out"),
            )),
        }
    }
}

/// The mount points this process sees, read from mountinfo at most once per
/// [`MOUNTS_TTL`] and only when a measurement is due.
pub struct MountTable {
    procfs: PathBuf,
    timeout: Duration,
    cached: Option<(tokio::time::Instant, Arc<HashSet<PathBuf>>)>,
}

/// How long the mount table is trusted.
const MOUNTS_TTL: Duration = Duration::from_secs(1);

impl MountTable {
    pub fn new(procfs: PathBuf, timeout: Duration) -> MountTable {
        MountTable {
            procfs,
            timeout,
            cached: None,
        }
    }

    pub async fn get(&mut self) -> Result<Arc<HashSet<PathBuf>>, String> {
        if let Some((at, mounts)) = &self.cached
            && at.elapsed() < MOUNTS_TTL
        {
            return Ok(Arc::clone(mounts));
        }
        let procfs = self.procfs.clone();
        let read = tokio::task::spawn_blocking(move || mount_points(&procfs));
        let mounts = match tokio::time::timeout(self.timeout, read).await {
            Ok(Ok(Ok(m))) => Arc::new(m),
            Ok(Ok(Err(e))) => return Err(e),
            Ok(Err(e)) => return Err(format!("reading the mount table: {e}")),
            Err(_) => return Err("reading the mount table timed out".into()),
        };
        self.cached = Some((tokio::time::Instant::now(), Arc::clone(&mounts)));
        Ok(mounts)
    }
}
