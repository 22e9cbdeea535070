//! The I/O of one volume measurement: statfs of a mount point, a du-method
//! walk, or a block device's size, each off the async runtime (on the
//! measurement lane, or the walk pool) under a timeout with at most one call
//! in flight per path.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::plan::{Location, Target, walked_usage};
use crate::model::{Failure, FsUsage, Method, Reason};
use crate::sources::block::device_size;
use crate::sources::inflight::InFlightSet;
use crate::sources::lane::{Lane, LaneError};
use crate::sources::mounts::mount_points;
use crate::sources::statfs::{FsError, FsProber, MountRoot};
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
    /// The mount table, for kernels whose statx does not say.
    pub mounts: tokio::sync::Mutex<MountTable>,
}

fn fs_error(e: FsError) -> Failure {
    let reason = match &e {
        FsError::Timeout { .. } | FsError::StillHung { .. } => Reason::Timeout,
        FsError::Statfs { errno, .. } if *errno == nix::errno::Errno::ENOENT => Reason::NotFound,
        FsError::Statx { errno, .. } if *errno == rustix::io::Errno::NOENT => Reason::NotFound,
        _ => Reason::IoError,
    };
    Failure::new(reason, e.to_string())
}

impl Measurer {
    pub async fn measure(&self, target: &Target) -> Result<(FsUsage, Method), Failure> {
        let path = self.locate(&target.location).await?;
        match target.method {
            Method::Statfs => match self.statfs_mount(&path).await? {
                Some(usage) => Ok((usage, Method::Statfs)),
                None => Err(Failure::new(
                    Reason::NotMounted,
                    format!(
                        "{} is not a mount point; statfs would report the node's root filesystem",
                        path.display()
                    ),
                )),
            },
            Method::LocalPath => match self.statfs_mount(&path).await? {
                Some(usage) => Ok((usage, Method::Statfs)),
                None => Ok((self.walk(&path, target.capacity).await?, Method::Walk)),
            },
            Method::Walk => Ok((self.walk(&path, target.capacity).await?, Method::Walk)),
            Method::Block => Ok((self.block(&path).await?, Method::Block)),
        }
    }

    /// statfs of `path` if it is a mount point, else None. statx answers
    /// in the same guarded call as the statfs; only on kernels before 5.8
    /// is the mount table read (and kept for a second).
    async fn statfs_mount(&self, path: &Path) -> Result<Option<FsUsage>, Failure> {
        let (root, reading) = self
            .prober
            .probe_mount(path, self.timeout)
            .await
            .map_err(fs_error)?;
        match root {
            MountRoot::Yes => Ok(reading.map(|r| r.usage)),
            MountRoot::No => Ok(None),
            MountRoot::Unknown => {
                let mounts = self
                    .mounts
                    .lock()
                    .await
                    .get()
                    .await
                    .map_err(|e| Failure::new(Reason::IoError, e))?;
                if mounts.contains(path) {
                    Ok(Some(self.statfs(path).await?))
                } else {
                    Ok(None)
                }
            }
        }
    }

    async fn statfs(&self, path: &Path) -> Result<FsUsage, Failure> {
        self.prober
            .probe(path, self.timeout)
            .await
            .map(|r| r.usage)
            .map_err(fs_error)
    }

    async fn walk(&self, path: &Path, declared: Option<i64>) -> Result<FsUsage, Failure> {
        let usage = self
            .walkers
            .walk(path, self.walk_budget, self.timeout)
            .await
            .map_err(|e| {
                let reason = match (&e, e.walk_error()) {
                    (_, Some(WalkError::BudgetExceeded { .. })) => Reason::WalkBudgetExceeded,
                    (_, Some(WalkError::Root { source, .. }))
                        if source.kind() == std::io::ErrorKind::NotFound =>
                    {
                        Reason::NotFound
                    }
                    (PoolError::Timeout { .. } | PoolError::StillRunning(_), _) => Reason::Timeout,
                    _ => Reason::IoError,
                };
                Failure::new(reason, e.to_string())
            })?;
        let fs = self.statfs(path).await?;
        Ok(walked_usage(declared, usage.bytes, usage.inodes, &fs))
    }

    async fn block(&self, path: &Path) -> Result<FsUsage, Failure> {
        let rootfs = self.rootfs.clone();
        let sysfs = self.sysfs.clone();
        let owned = path.to_path_buf();
        let Some(guard) = self.reading.claim(path) else {
            return Err(Failure::new(
                Reason::Timeout,
                format!(
                    "block device {} is still hung from an earlier read",
                    path.display()
                ),
            ));
        };
        let task = Lane::global().run(self.timeout, move || {
            let _guard = guard;
            device_size(&rootfs, &sysfs, &owned)
        });
        let size = match task.await {
            Ok(Ok(size)) => size,
            Ok(Err(e)) => {
                let reason = if e.kind() == std::io::ErrorKind::NotFound {
                    Reason::NotFound
                } else {
                    Reason::IoError
                };
                return Err(Failure::new(
                    reason,
                    format!("block device {}: {e}", path.display()),
                ));
            }
            Err(LaneError::Timeout(after)) => {
                return Err(Failure::new(
                    Reason::Timeout,
                    format!(
                        "block device {} did not answer within {after:?}",
                        path.display(),
                    ),
                ));
            }
            Err(e) => {
                return Err(Failure::new(
                    Reason::IoError,
                    format!("block device {}: {e}", path.display()),
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
    async fn locate(&self, location: &Location) -> Result<PathBuf, Failure> {
        let (dir, pv) = match location {
            Location::Path(p) => return Ok(p.clone()),
            Location::AnyPlugin { dir, pv } => (dir.clone(), pv.clone()),
        };
        let shown = dir.display().to_string();
        let search =
            Lane::global().run(self.timeout, move || -> std::io::Result<Option<PathBuf>> {
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
        match search.await {
            Ok(Ok(Some(path))) => Ok(path),
            Ok(Ok(None)) => Err(Failure::new(
                Reason::NotFound,
                format!("no plugin directory under {shown} holds the volume"),
            )),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(Failure::new(Reason::NotFound, format!("{shown}: {e}")))
            }
            Ok(Err(e)) => Err(Failure::new(Reason::IoError, format!("{shown}: {e}"))),
            Err(LaneError::Timeout(_)) => Err(Failure::new(
                Reason::Timeout,
                format!("listing {shown} timed out"),
            )),
            Err(e) => Err(Failure::new(Reason::IoError, format!("{shown}: {e}"))),
        }
    }
}

/// The mount points this process sees, read from mountinfo at most once per
/// [`MOUNTS_TTL`], and only on kernels whose statx does not report
/// `STATX_ATTR_MOUNT_ROOT` (before Linux 5.8).
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
        let read = Lane::global().run(self.timeout, move || mount_points(&procfs));
        let mounts = match read.await {
            Ok(Ok(m)) => Arc::new(m),
            Ok(Err(e)) => return Err(e),
            Err(LaneError::Timeout(_)) => return Err("reading the mount table timed out".into()),
            Err(e) => return Err(format!("reading the mount table: {e}")),
        };
        self.cached = Some((tokio::time::Instant::now(), Arc::clone(&mounts)));
        Ok(mounts)
    }
}
