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
use crate::sources::io::Io;
use crate::sources::mounts::mount_points;
use crate::sources::statfs::{FsProber, MountRoot};

/// How a planned volume is measured: the I/O seam of the volume loop.
pub trait Measure: Send + Sync + 'static {
    fn measure(
        &self,
        target: &Target,
    ) -> impl std::future::Future<Output = Result<(FsUsage, Method), Failure>> + Send;

    /// Several quick measurements (see [`Target::is_quick`]) due at one
    /// wake-up, answered in order. By default each on its own.
    fn measure_batch(
        &self,
        targets: Vec<Target>,
    ) -> impl std::future::Future<Output = Vec<Result<(FsUsage, Method), Failure>>> + Send {
        async move { futures::future::join_all(targets.iter().map(|t| self.measure(t))).await }
    }
}

impl Measure for Measurer {
    fn measure(
        &self,
        target: &Target,
    ) -> impl std::future::Future<Output = Result<(FsUsage, Method), Failure>> + Send {
        Measurer::measure(self, target)
    }

    /// The statx+statfs of every mounted volume as one guarded batch; a
    /// kernel that does not say whether a path is a mount root (before
    /// 5.8) falls back to the mount table, one target at a time.
    async fn measure_batch(&self, targets: Vec<Target>) -> Vec<Result<(FsUsage, Method), Failure>> {
        let paths = targets
            .iter()
            .map(|t| match &t.location {
                Location::Path(p) => p.clone(),
                Location::AnyPlugin { dir, pv } => dir.join(pv),
            })
            .collect();
        let probed = self.prober.probe_mounts(paths, self.timeout).await;
        let mut out = Vec::with_capacity(targets.len());
        for (target, probed) in targets.iter().zip(probed) {
            out.push(match probed {
                Ok((MountRoot::Yes, Some(reading))) => Ok((reading.usage, Method::Statfs)),
                Ok((MountRoot::Unknown, _)) => self.measure(target).await,
                Ok(_) => Err(not_mounted(&target.location)),
                Err(e) => Err(e),
            });
        }
        out
    }
}

fn not_mounted(location: &Location) -> Failure {
    let path = match location {
        Location::Path(p) => p.display().to_string(),
        Location::AnyPlugin { dir, pv } => format!("{}/*/{pv}", dir.display()),
    };
    Failure::new(
        Reason::NotMounted,
        format!("{path} is not a mount point; statfs would report the node's root filesystem"),
    )
}

/// The I/O of one measurement, shared by the spawned tasks.
pub struct Measurer {
    pub rootfs: PathBuf,
    pub sysfs: PathBuf,
    pub timeout: Duration,
    pub walk_budget: Duration,
    /// The process's guarded calls and walk pool.
    pub io: Io,
    pub prober: FsProber,
    /// The mount table, for kernels whose statx does not say.
    pub mounts: MountTable,
}

impl Measurer {
    pub async fn measure(&self, target: &Target) -> Result<(FsUsage, Method), Failure> {
        let path = self.locate(&target.location).await?;
        match target.method {
            Method::Statfs => match self.statfs_mount(&path).await? {
                Some(usage) => Ok((usage, Method::Statfs)),
                None => Err(not_mounted(&Location::Path(path))),
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
        let (root, reading) = self.prober.probe_mount(path, self.timeout).await?;
        match root {
            MountRoot::Yes => Ok(reading.map(|r| r.usage)),
            MountRoot::No => Ok(None),
            MountRoot::Unknown => {
                if self.mounts.get(&self.io).await?.contains(path) {
                    Ok(Some(self.statfs(path).await?))
                } else {
                    Ok(None)
                }
            }
        }
    }

    async fn statfs(&self, path: &Path) -> Result<FsUsage, Failure> {
        Ok(self.prober.probe(path, self.timeout).await?.usage)
    }

    async fn walk(&self, path: &Path, declared: Option<i64>) -> Result<FsUsage, Failure> {
        let usage = self
            .io
            .walkers
            .walk(path, self.walk_budget, self.timeout)
            .await?;
        let fs = self.statfs(path).await?;
        Ok(walked_usage(declared, usage.bytes, usage.inodes, &fs))
    }

    async fn block(&self, path: &Path) -> Result<FsUsage, Failure> {
        let rootfs = self.rootfs.clone();
        let sysfs = self.sysfs.clone();
        let size = self
            .io
            .guard
            .call("reading block device", path, self.timeout, move |p| {
                device_size(&rootfs, &sysfs, p).map_err(|e| {
                    Failure::new(
                        Reason::of_io(&e),
                        format!("block device {}: {e}", p.display()),
                    )
                })
            })
            .await?;
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
        // Keyed by `dir/<pv>`: listings for two PVs under one dir are two calls.
        let key = dir.join(&pv);
        self.io
            .guard
            .call(
                "listing the plugin dirs of",
                &key,
                self.timeout,
                move |_| {
                    let failed = |e: std::io::Error| {
                        Failure::new(Reason::of_io(&e), format!("{}: {e}", dir.display()))
                    };
                    // Only directory listings of kubelet's own (local) directories:
                    // the volume itself is never stat'ed here, since on a dead NFS
                    // mount that would hang outside the one-call-per-path guard.
                    for plugin in std::fs::read_dir(&dir).map_err(failed)? {
                        let plugin = plugin.map_err(failed)?.path();
                        let Ok(entries) = std::fs::read_dir(&plugin) else {
                            continue;
                        };
                        if entries
                            .filter_map(Result::ok)
                            .any(|e| e.file_name() == pv.as_str())
                        {
                            return Ok(plugin.join(&pv));
                        }
                    }
                    Err(Failure::new(
                        Reason::NotFound,
                        format!(
                            "no plugin directory under {} holds the volume",
                            dir.display()
                        ),
                    ))
                },
            )
            .await
    }
}

/// The mount points this process sees, read from mountinfo at most once per
/// [`MOUNTS_TTL`], and only on kernels whose statx does not report
/// `STATX_ATTR_MOUNT_ROOT` (before Linux 5.8).
pub struct MountTable {
    procfs: PathBuf,
    timeout: Duration,
    cached: std::sync::Mutex<Option<(tokio::time::Instant, Arc<HashSet<PathBuf>>)>>,
}

/// How long the mount table is trusted.
const MOUNTS_TTL: Duration = Duration::from_secs(1);

impl MountTable {
    pub fn new(procfs: PathBuf, timeout: Duration) -> MountTable {
        MountTable {
            procfs,
            timeout,
            cached: std::sync::Mutex::new(None),
        }
    }

    pub async fn get(&self, io: &Io) -> Result<Arc<HashSet<PathBuf>>, Failure> {
        let cached = |c: &Self| {
            c.cached
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone()
        };
        if let Some((at, mounts)) = cached(self)
            && at.elapsed() < MOUNTS_TTL
        {
            return Ok(mounts);
        }
        // Callers that arrive together share one read (the guard joins them).
        let mounts = io
            .guard
            .call(
                "reading the mount table",
                &self.procfs,
                self.timeout,
                |procfs| {
                    mount_points(procfs)
                        .map(Arc::new)
                        .map_err(|e| Failure::new(Reason::IoError, e))
                },
            )
            .await?;
        *self
            .cached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((tokio::time::Instant::now(), Arc::clone(&mounts)));
        Ok(mounts)
    }
}
