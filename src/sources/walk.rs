//! Disk usage of a directory tree the way kubelet's du method measures it:
//! stay on the directory's device, never follow symlinks, count every
//! hard-linked inode once, sum `st_blocks * 512`, count entries. Used for
//! volumes kubelet cannot measure (hostPath-backed PVs, plain-directory
//! `local` PVs). Bounded by a time budget so a huge tree cannot run forever.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use thiserror::Error;

use super::inflight::{Flights, Joined, Pilot, Unanswered};

/// What a walk found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirUsage {
    /// Sum of `st_blocks * 512` over every counted inode.
    pub bytes: u64,
    /// Number of counted inodes (the directory itself included).
    pub inodes: u64,
}

#[derive(Debug, Error)]
pub enum WalkError {
    #[error("walk of {path}: {source}")]
    Root {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("walk of {0}: it is a symlink, which kubedf does not follow")]
    RootIsSymlink(PathBuf),
    #[error("walk of {0}: not a directory")]
    NotADirectory(PathBuf),
    #[error("walk of {path} ran out of its {budget:?} budget after {inodes} entries")]
    BudgetExceeded {
        path: PathBuf,
        budget: Duration,
        inodes: u64,
    },
    #[error("walk of {path}: {entry}: {source}")]
    Entry {
        path: PathBuf,
        entry: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// How often the clock is read within a directory, in entries (it is also
/// read once per directory): reading it per entry would cost more than the
/// lstat of a cached inode.
const CLOCK_EVERY: u64 = 256;

/// What the threads of one walk share.
struct Shared<'a> {
    root: &'a Path,
    device: u64,
    budget: Duration,
    started: Instant,
    state: Mutex<Queue>,
    wake: Condvar,
    /// Inodes with more than one link already counted.
    linked: Mutex<HashSet<u64>>,
    bytes: AtomicU64,
    inodes: AtomicU64,
}

#[derive(Default)]
struct Queue {
    dirs: Vec<PathBuf>,
    /// Threads working on a directory (they may push more).
    busy: usize,
    failed: Option<WalkError>,
    finished: bool,
}

/// Walks `root` (blocking) with up to `threads` threads, which inherit the
/// calling thread's priority. Entries removed while the walk runs are
/// skipped, as kubelet does; any other error on an entry fails the walk,
/// because a partial sum would under-report.
pub fn walk(root: &Path, budget: Duration, threads: usize) -> Result<DirUsage, WalkError> {
    let started = Instant::now();
    let meta = fs::symlink_metadata(root).map_err(|source| WalkError::Root {
        path: root.to_path_buf(),
        source,
    })?;
    if meta.file_type().is_symlink() {
        return Err(WalkError::RootIsSymlink(root.to_path_buf()));
    }
    if !meta.is_dir() {
        return Err(WalkError::NotADirectory(root.to_path_buf()));
    }
    let shared = Shared {
        root,
        device: meta.dev(),
        budget,
        started,
        state: Mutex::new(Queue {
            dirs: vec![root.to_path_buf()],
            ..Queue::default()
        }),
        wake: Condvar::new(),
        linked: Mutex::default(),
        bytes: AtomicU64::new(meta.blocks().saturating_mul(512)),
        inodes: AtomicU64::new(1),
    };
    std::thread::scope(|scope| {
        for _ in 1..threads.max(1) {
            scope.spawn(|| shared.work());
        }
        shared.work();
    });
    let queue = shared
        .state
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    match queue.failed {
        Some(e) => Err(e),
        None => Ok(DirUsage {
            bytes: shared.bytes.into_inner(),
            inodes: shared.inodes.into_inner(),
        }),
    }
}

impl Shared<'_> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes directories until the walk is done or has failed.
    fn work(&self) {
        loop {
            let dir = {
                let mut queue = self.lock();
                loop {
                    if queue.finished || queue.failed.is_some() {
                        return;
                    }
                    if let Some(dir) = queue.dirs.pop() {
                        queue.busy += 1;
                        break dir;
                    }
                    if queue.busy == 0 {
                        queue.finished = true;
                        self.wake.notify_all();
                        return;
                    }
                    queue = self
                        .wake
                        .wait(queue)
                        .unwrap_or_else(PoisonError::into_inner);
                }
            };
            let outcome = self.directory(&dir);
            let mut queue = self.lock();
            queue.busy -= 1;
            match outcome {
                Ok(subdirs) => queue.dirs.extend(subdirs),
                Err(e) => {
                    queue.failed.get_or_insert(e);
                }
            }
            self.wake.notify_all();
        }
    }

    /// Counts one directory's entries; returns its subdirectories.
    fn directory(&self, dir: &Path) -> Result<Vec<PathBuf>, WalkError> {
        if self.started.elapsed() > self.budget {
            return Err(self.over_budget());
        }
        let entry_error = |entry: &Path, source: io::Error| WalkError::Entry {
            path: self.root.to_path_buf(),
            entry: entry.to_path_buf(),
            source,
        };
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(entry_error(dir, e)),
        };
        let (mut bytes, mut inodes) = (0u64, 0u64);
        let mut subdirs = Vec::new();
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(entry_error(dir, e)),
            };
            // DirEntry::metadata is fstatat(dirfd, name, AT_SYMLINK_NOFOLLOW):
            // symlinks are counted, never followed.
            let meta = match entry.metadata() {
                Ok(meta) => meta,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(entry_error(&entry.path(), e)),
            };
            if meta.dev() != self.device {
                // Another filesystem mounted inside: not this volume's usage.
                continue;
            }
            if meta.nlink() > 1
                && !meta.is_dir()
                && !self
                    .linked
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(meta.ino())
            {
                continue;
            }
            // Saturating: st_blocks is whatever the filesystem says.
            bytes = bytes.saturating_add(meta.blocks().saturating_mul(512));
            inodes += 1;
            if meta.is_dir() {
                subdirs.push(entry.path());
            }
            if inodes.is_multiple_of(CLOCK_EVERY) && self.started.elapsed() > self.budget {
                return Err(self.over_budget());
            }
        }
        // fetch_add would wrap; the closure always returns Some.
        let _ = self
            .bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_add(bytes))
            });
        self.inodes.fetch_add(inodes, Ordering::Relaxed);
        Ok(subdirs)
    }

    fn over_budget(&self) -> WalkError {
        WalkError::BudgetExceeded {
            path: self.root.to_path_buf(),
            budget: self.budget,
            inodes: self.inodes.load(Ordering::Relaxed),
        }
    }
}

/// Lowers the calling thread's CPU priority to nice 19, as kubelet runs du
/// with `nice -n 19`, so a walk yields to the node's workloads.
pub fn lower_thread_priority() -> io::Result<()> {
    let tid = rustix::thread::gettid();
    // On Linux, PRIO_PROCESS with a thread id applies to that thread only.
    rustix::process::setpriority_process(Some(tid), 19).map_err(io::Error::from)
}

/// A fixed number of low-priority threads that run walks, so walks never
/// take more than `workers` threads (or CPUs) however many volumes need one.
/// One walk per path at a time: a caller that asks for a path while its walk
/// is younger than the caller's wait joins it and gets the same answer (two
/// PVCs whose PVs share one directory are one walk); only a walk that has
/// outlived that wait makes the path [`PoolError::StillRunning`].
#[derive(Debug)]
pub struct WalkPool {
    jobs: std::sync::mpsc::Sender<Job>,
    threads_per_walk: usize,
    in_flight: Flights<PathBuf, Result<DirUsage, Arc<WalkError>>>,
}

struct Job {
    path: PathBuf,
    budget: Duration,
    threads: usize,
    pilot: Pilot<PathBuf, Result<DirUsage, Arc<WalkError>>>,
}

#[derive(Debug, Error)]
pub enum PoolError {
    /// Shared: every caller that joined the walk holds the same error.
    #[error(transparent)]
    Walk(Arc<WalkError>),
    #[error("walk of {0} is still running from an earlier period")]
    StillRunning(PathBuf),
    #[error("walk of {path} did not finish within {after:?} (hung filesystem?)")]
    Timeout { path: PathBuf, after: Duration },
    #[error("walk pool stopped")]
    Stopped,
}

impl PoolError {
    /// The walk's own error, when the walk ran and failed.
    pub fn walk_error(&self) -> Option<&WalkError> {
        match self {
            PoolError::Walk(e) => Some(e),
            _ => None,
        }
    }
}

impl WalkPool {
    /// `workers` walks at a time, each with up to `threads_per_walk` threads.
    pub fn new(workers: usize, threads_per_walk: usize) -> std::io::Result<WalkPool> {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..workers.max(1) {
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name(format!("kubedf-walk-{n}"))
                .spawn(move || {
                    if let Err(e) = lower_thread_priority() {
                        tracing::warn!(error = %e, "cannot lower the priority of a walk thread");
                    }
                    loop {
                        let job = {
                            let queue = queue.lock().unwrap_or_else(PoisonError::into_inner);
                            queue.recv()
                        };
                        let Ok(Job {
                            path,
                            budget,
                            threads,
                            pilot,
                        }) = job
                        else {
                            return;
                        };
                        // Landing frees the path, then answers every caller
                        // still waiting (none, if all gave up).
                        pilot.land(walk(&path, budget, threads).map_err(Arc::new));
                    }
                })?;
        }
        Ok(WalkPool {
            jobs,
            threads_per_walk: threads_per_walk.max(1),
            in_flight: Flights::default(),
        })
    }

    /// Walks `path` on a pool thread, or joins the walk of `path` already
    /// running. Waits at most `budget + grace` (the walk itself stops at
    /// `budget`; `grace` covers queueing and a filesystem call that hangs).
    pub async fn walk(
        &self,
        path: &Path,
        budget: Duration,
        grace: Duration,
    ) -> Result<DirUsage, PoolError> {
        let wait = budget + grace;
        let passenger = match self.in_flight.join(&path.to_path_buf(), wait) {
            Joined::Hung(_) => return Err(PoolError::StillRunning(path.to_path_buf())),
            Joined::Follow(passenger) => passenger,
            Joined::Lead(pilot, passenger) => {
                self.jobs
                    .send(Job {
                        path: path.to_path_buf(),
                        budget,
                        threads: self.threads_per_walk,
                        pilot,
                    })
                    .map_err(|_| PoolError::Stopped)?;
                passenger
            }
        };
        match passenger.wait(wait).await {
            Ok(outcome) => (*outcome).clone().map_err(PoolError::Walk),
            Err(Unanswered::Abandoned) => Err(PoolError::Stopped),
            Err(Unanswered::Timeout) => Err(PoolError::Timeout {
                path: path.to_path_buf(),
                after: wait,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn counts_entries_and_blocks_and_hard_links_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir(root.join("sub")).unwrap();
        fs::write(root.join("sub/a"), vec![1u8; 100_000]).unwrap();
        fs::write(root.join("b"), b"hello").unwrap();
        fs::hard_link(root.join("sub/a"), root.join("a-link")).unwrap();
        symlink("/etc", root.join("to-etc")).unwrap();
        let usage = walk(root, Duration::from_secs(10), 1).unwrap();
        // root, sub, sub/a (once, despite the link), b, to-etc.
        assert_eq!(usage.inodes, 5);
        let blocks: u64 = [
            root.to_path_buf(),
            root.join("sub"),
            root.join("sub/a"),
            root.join("b"),
            root.join("to-etc"),
        ]
        .iter()
        .map(|p| fs::symlink_metadata(p).unwrap().blocks() * 512)
        .sum();
        assert_eq!(usage.bytes, blocks);
    }

    #[test]
    fn threads_find_what_one_thread_finds() {
        let dir = tempfile::tempdir().unwrap();
        for d in 0..30 {
            let sub = dir.path().join(format!("d{d}/e{}", d % 3));
            fs::create_dir_all(&sub).unwrap();
            for f in 0..20 {
                fs::write(sub.join(format!("f{f}")), vec![0u8; 100 * f]).unwrap();
            }
            fs::hard_link(sub.join("f1"), dir.path().join(format!("link{d}"))).unwrap();
        }
        let one = walk(dir.path(), Duration::from_secs(10), 1).unwrap();
        for threads in [2, 4] {
            assert_eq!(
                walk(dir.path(), Duration::from_secs(10), threads).unwrap(),
                one
            );
        }
        assert_eq!(one.inodes, 1 + 30 + 30 + 30 * 20, "links counted once");
    }

    #[test]
    fn refuses_symlinked_roots_and_files() {
        let dir = tempfile::tempdir().unwrap();
        symlink("/etc", dir.path().join("link")).unwrap();
        assert!(matches!(
            walk(&dir.path().join("link"), Duration::from_secs(1), 1),
            Err(WalkError::RootIsSymlink(_))
        ));
        fs::write(dir.path().join("f"), b"x").unwrap();
        assert!(matches!(
            walk(&dir.path().join("f"), Duration::from_secs(1), 1),
            Err(WalkError::NotADirectory(_))
        ));
        let err = walk(&dir.path().join("missing"), Duration::from_secs(1), 1).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[test]
    fn a_spent_budget_stops_the_walk() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..600 {
            fs::write(dir.path().join(format!("f{i}")), b"x").unwrap();
        }
        let err = walk(dir.path(), Duration::ZERO, 2).unwrap_err();
        assert!(matches!(err, WalkError::BudgetExceeded { .. }), "{err}");
    }

    #[tokio::test]
    async fn the_pool_shares_a_running_walk_and_refuses_a_hung_one() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("f"), vec![0u8; 10_000]).unwrap();
        let pool = WalkPool::new(2, 2).unwrap();
        let alone = walk(dir.path(), Duration::from_secs(10), 1).unwrap();
        // Two PVCs on one directory, measured at once: one walk, one answer.
        let (budget, grace) = (Duration::from_secs(10), Duration::from_secs(5));
        let (a, b) = tokio::join!(
            pool.walk(dir.path(), budget, grace),
            pool.walk(dir.path(), budget, grace)
        );
        assert_eq!((a.unwrap(), b.unwrap()), (alone, alone));
        assert!(pool.in_flight.is_empty());
        // A walk older than a caller's wait is hung for that caller.
        let Joined::Lead(pilot, _) = pool.in_flight.join(&dir.path().to_path_buf(), budget) else {
            panic!("nothing was in flight");
        };
        std::thread::sleep(Duration::from_millis(5));
        let err = pool
            .walk(dir.path(), Duration::ZERO, Duration::from_millis(1))
            .await
            .unwrap_err();
        assert!(matches!(err, PoolError::StillRunning(_)), "{err}");
        drop(pilot);
        let missing = dir.path().join("missing");
        let (a, b) = tokio::join!(
            pool.walk(&missing, budget, grace),
            pool.walk(&missing, budget, grace)
        );
        for err in [a.unwrap_err(), b.unwrap_err()] {
            assert!(
                matches!(err.walk_error(), Some(WalkError::Root { .. })),
                "{err}"
            );
        }
    }

    #[test]
    fn priority_can_be_lowered() {
        std::thread::spawn(|| lower_thread_priority().unwrap())
            .join()
            .unwrap();
    }
}
