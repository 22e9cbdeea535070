//! The process's executors for the blocking calls of measurements, built
//! once by the app and handed to every sampler: one [`Guard`] (the lane and
//! the one-call-in-flight-per-path table) and one [`WalkPool`]. Shared, so
//! "one statfs in flight per path" and "walks take at most `workers`
//! threads" hold for the whole process, not per sampler.

use std::sync::Arc;

use super::statfs::FsProber;
use super::walk::WalkPool;
use crate::exec::guard::Guard;

#[derive(Clone, Debug)]
pub struct Io {
    pub guard: Guard,
    pub walkers: Arc<WalkPool>,
}

impl Io {
    /// The guard on the process's measurement lane, and a walk pool of
    /// `walk_workers` walks at a time, each with up to `walk_threads`
    /// threads.
    pub fn new(walk_workers: usize, walk_threads: usize) -> std::io::Result<Io> {
        Ok(Io {
            guard: Guard::on_global_lane(),
            walkers: Arc::new(WalkPool::new(walk_workers, walk_threads)?),
        })
    }

    /// statfs/statx through the shared guard.
    pub fn prober(&self) -> FsProber {
        FsProber::new(self.guard.clone())
    }
}
