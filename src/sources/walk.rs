//! Disk usage of a directory tree the way kubelet's du method measures it:
//! stay on the directory's device, never follow symlinks, count every
//! hard-linked inode once, sum `st_blocks * 512`, count entries. Used for
//! volumes kubelet cannot measure (hostPath-backed PVs, plain-directory
//! `local` PVs) and for the pod half's emptyDirs and log dirs. Bounded by a
//! time budget so a huge tree cannot run forever.
//!
//! Tenants write these trees, so the walk goes about it as du's fts does:
//! - Each directory is opened relative to its parent's descriptor with
//!   `O_DIRECTORY | O_NOFOLLOW`, and the opened directory's `fstat` must be
//!   what the listing's `fstatat` saw (same device and inode, a directory). A
//!   directory swapped meanwhile for a symlink, a file or a mount point is
//!   counted as what the listing saw and not descended: nothing is followed
//!   out of the tree, and a swap never fails the walk.
//! - Only names are kept, never paths: there is no `PATH_MAX` limit, and
//!   memory is bounded by the depth times one listing buffer, not by path
//!   length times width. A directory is listed one `getdents64` buffer at a
//!   time and the subdirectories that buffer named are walked before the
//!   next one is read; a directory whose last subdirectory is being walked
//!   leaves the stack, so a chain of any depth costs one frame.
//! - At most [`OPEN_FDS_PER_WALK`] directories are open per walk. A frame
//!   whose descriptor was closed is reopened on the way back up with
//!   `openat(child, "..")` and must match its recorded device and inode; if
//!   it does not (the tenant moved it meanwhile), the rest of that directory
//!   is skipped rather than followed to wherever `..` leads now.
//! - The walk's threads share work only when one of them is idle: a busy
//!   thread hands it half of the subdirectories its current directory
//!   listed, with a duplicate of that directory's descriptor to open them
//!   by, through a queue of at most one share per thread. Handing over
//!   names, not single directories, keeps a wide tree of small directories
//!   from costing a wake-up per directory.

use std::collections::HashSet;
use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags, RawDir, SeekFrom, Stat};
use rustix::io::Errno;
use thiserror::Error;

use crate::exec::inflight::{Flights, Joined, Pilot, Unanswered};
use crate::model::{Failure, Reason};

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
    /// Only names are kept, so the entry is named by its name and its depth
    /// below the walked directory (`"."` for the directory being listed).
    #[error("walk of {path}: cannot {op} {entry:?} {depth} levels down: {source}")]
    Entry {
        path: PathBuf,
        op: &'static str,
        entry: String,
        depth: usize,
        #[source]
        source: io::Error,
    },
}

/// How often the clock is read within a directory, in entries (it is also
/// read once per directory): reading it per entry would cost more than the
/// lstat of a cached inode.
const CLOCK_EVERY: u64 = 256;

/// Bytes one `getdents64` call may fill, per walking thread (glibc's readdir
/// reads 32 KiB at a time too).
const LISTING_BUFFER: usize = 32 * 1024;

/// Directory descriptors one walk keeps open at most, shared among its
/// threads (plus one per thread in the hand-over queue). Deeper trees
/// reopen closed ancestors with `..` on the way up.
pub const OPEN_FDS_PER_WALK: usize = 64;

/// ... but never fewer than this per thread, so that `..` stays rare.
const MIN_OPEN_FDS_PER_THREAD: usize = 4;

/// How every directory is opened: never through a symlink, never anything
/// but a directory (a FIFO or device swapped in fails with ENOTDIR before
/// it could block), and never inherited by a child process.
const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC)
    .union(OFlags::NOCTTY)
    .union(OFlags::NONBLOCK);

/// Walks `root` (blocking) with up to `threads` threads, which inherit the
/// calling thread's priority. Entries removed while the walk runs are
/// skipped, as kubelet does, and so are directories swapped for something
/// else (see the module's header); any other error on an entry fails the
/// walk, because a partial sum would under-report.
pub fn walk(root: &Path, budget: Duration, threads: usize) -> Result<DirUsage, WalkError> {
    let threads = threads.max(1);
    let tuning = Tuning {
        buffer: LISTING_BUFFER,
        open_per_thread: (OPEN_FDS_PER_WALK / threads).max(MIN_OPEN_FDS_PER_THREAD),
    };
    walk_tuned(root, budget, threads, tuning).map(|(usage, _)| usage)
}

/// The sizes [`walk`] picks, set apart so that tests can make them tiny.
#[derive(Clone, Copy, Debug)]
struct Tuning {
    /// Bytes of one listing (at least one entry of a 255-byte name: 280).
    buffer: usize,
    /// Descriptors of frames each thread keeps open (at least 2: its root
    /// and its top frame).
    open_per_thread: usize,
}

/// How a walk went about it, for tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Stats {
    /// Frames reopened with `..`.
    reopened: u64,
    /// ... of which the listing was not over: resumed at its cookie.
    resumed: u64,
    /// Frames whose rest was skipped: not the directory they were when
    /// reopened.
    skipped: u64,
    /// Directories handed to an idle thread.
    handed_over: u64,
    /// Most frames on one thread's stack at once.
    max_frames: usize,
    /// Most descriptors of frames one thread had open at once.
    max_open: usize,
}

impl Stats {
    fn merge(&mut self, other: &Stats) {
        self.reopened += other.reopened;
        self.resumed += other.resumed;
        self.skipped += other.skipped;
        self.handed_over += other.handed_over;
        self.max_frames = self.max_frames.max(other.max_frames);
        self.max_open = self.max_open.max(other.max_open);
    }
}

fn walk_tuned(
    root: &Path,
    budget: Duration,
    threads: usize,
    tuning: Tuning,
) -> Result<(DirUsage, Stats), WalkError> {
    let started = Instant::now();
    let threads = threads.max(1);
    let (fd, stat) = open_root(root)?;
    let meta = Meta::of(&stat);
    let shared = Shared {
        root,
        device: meta.dev,
        budget,
        started,
        threads,
        tuning,
        state: Mutex::new(Handoff {
            shares: vec![Frame::new(Opened {
                fd,
                dev: meta.dev,
                ino: meta.ino,
                depth: 0,
            })],
            busy: 0,
            failed: None,
            finished: false,
        }),
        wake: Condvar::new(),
        idle: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        linked: Mutex::default(),
        bytes: AtomicU64::new(meta.bytes),
        inodes: AtomicU64::new(1),
        stats: Mutex::default(),
    };
    std::thread::scope(|scope| {
        for _ in 1..threads {
            scope.spawn(|| shared.work());
        }
        shared.work();
    });
    let state = shared
        .state
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    match state.failed {
        Some(e) => Err(e),
        None => Ok((
            DirUsage {
                bytes: shared.bytes.into_inner(),
                inodes: shared.inodes.into_inner(),
            },
            shared
                .stats
                .into_inner()
                .unwrap_or_else(PoisonError::into_inner),
        )),
    }
}

/// Opens the walked directory itself, refusing a symlink as its last
/// component (the components above it are the operator's, not a tenant's).
fn open_root(root: &Path) -> Result<(OwnedFd, Stat), WalkError> {
    let root_error = |e: Errno| WalkError::Root {
        path: root.to_path_buf(),
        source: e.into(),
    };
    match rustix::fs::openat(CWD, root, DIR_FLAGS, Mode::empty()) {
        Ok(fd) => {
            let stat = rustix::fs::fstat(&fd).map_err(root_error)?;
            Ok((fd, stat))
        }
        // O_NOFOLLOW | O_DIRECTORY fail alike (ELOOP or ENOTDIR) for a
        // symlink and a file; lstat tells which it was.
        Err(e) => Err(match rustix::fs::lstat(root).map(|s| file_type(&s)) {
            Ok(FileType::Symlink) => WalkError::RootIsSymlink(root.to_path_buf()),
            Ok(t) if t != FileType::Directory => WalkError::NotADirectory(root.to_path_buf()),
            _ => root_error(e),
        }),
    }
}

fn file_type(stat: &Stat) -> FileType {
    FileType::from_raw_mode(stat.st_mode)
}

/// The fields of a `stat` the walk uses, as `u64` whatever the
/// architecture's field widths.
struct Meta {
    dev: u64,
    ino: u64,
    nlink: u64,
    bytes: u64,
    dir: bool,
}

impl Meta {
    // The casts are no-ops on x86_64 and widenings elsewhere.
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    fn of(stat: &Stat) -> Meta {
        Meta {
            dev: stat.st_dev as u64,
            ino: stat.st_ino as u64,
            nlink: stat.st_nlink as u64,
            // Saturating: st_blocks is whatever the filesystem says.
            bytes: u64::try_from(stat.st_blocks)
                .unwrap_or(0)
                .saturating_mul(512),
            dir: file_type(stat) == FileType::Directory,
        }
    }
}

/// A directory opened and checked, not yet listed.
struct Opened {
    fd: OwnedFd,
    dev: u64,
    ino: u64,
    /// Levels below the walked directory.
    depth: usize,
}

/// What the threads of one walk share.
struct Shared<'a> {
    root: &'a Path,
    device: u64,
    budget: Duration,
    started: Instant,
    threads: usize,
    tuning: Tuning,
    state: Mutex<Handoff>,
    wake: Condvar,
    /// Threads waiting for work; a busy thread hands work over only then,
    /// so a walk that needs no help pays one atomic load per directory.
    idle: AtomicUsize,
    /// Set when the walk failed: the other threads stop at their next step.
    stop: AtomicBool,
    /// Inodes with more than one link already counted, by (device, inode).
    linked: Mutex<HashSet<(u64, u64)>>,
    bytes: AtomicU64,
    inodes: AtomicU64,
    stats: Mutex<Stats>,
}

/// Work handed from a busy thread to an idle one.
struct Handoff {
    /// The walked directory, then shares of listed frames (see
    /// [`Walker::share`]); at most one per thread.
    shares: Vec<Frame>,
    /// Threads walking a directory (they may hand more over).
    busy: usize,
    failed: Option<WalkError>,
    finished: bool,
}

impl Shared<'_> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Handoff> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One thread of the walk: takes handed-over directories until the walk
    /// is done or has failed.
    fn work(&self) {
        let mut walker = Walker::new(self);
        let mut walked = false;
        while let Some(share) = self.next_share(walked) {
            walked = true;
            let outcome = walker.subtree(share);
            walker.flush();
            if let Err(e) = outcome {
                self.fail(e);
            }
        }
        self.stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .merge(&walker.stats);
    }

    /// Waits for work; `None` when the walk is over.
    fn next_share(&self, walked: bool) -> Option<Frame> {
        let mut state = self.lock();
        if walked {
            state.busy -= 1;
        }
        loop {
            if state.finished || state.failed.is_some() {
                return None;
            }
            if let Some(share) = state.shares.pop() {
                state.busy += 1;
                return Some(share);
            }
            if state.busy == 0 {
                state.finished = true;
                self.wake.notify_all();
                return None;
            }
            self.idle.fetch_add(1, Ordering::Relaxed);
            state = self
                .wake
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            self.idle.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Hands what `share` makes to an idle thread, if one is waiting and
    /// the queue has room; whether it did.
    fn offer(&self, share: impl FnOnce() -> Option<Frame>) -> bool {
        let mut state = self.lock();
        if self.idle.load(Ordering::Relaxed) <= state.shares.len()
            || state.shares.len() >= self.threads
        {
            return false;
        }
        let Some(share) = share() else {
            return false;
        };
        state.shares.push(share);
        self.wake.notify_one();
        true
    }

    fn fail(&self, e: WalkError) {
        self.stop.store(true, Ordering::Relaxed);
        self.lock().failed.get_or_insert(e);
        self.wake.notify_all();
    }

    /// Whether this is the first link of a multiply-linked inode seen.
    fn first_link(&self, dev: u64, ino: u64) -> bool {
        self.linked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((dev, ino))
    }

    /// `uncounted`: what the calling thread counted but has not added yet.
    fn check_budget(&self, uncounted: u64) -> Result<(), WalkError> {
        if self.started.elapsed() <= self.budget {
            return Ok(());
        }
        Err(WalkError::BudgetExceeded {
            path: self.root.to_path_buf(),
            budget: self.budget,
            inodes: self.inodes.load(Ordering::Relaxed) + uncounted,
        })
    }

    fn entry_error(&self, op: &'static str, name: &CStr, depth: usize, e: Errno) -> WalkError {
        WalkError::Entry {
            path: self.root.to_path_buf(),
            op,
            entry: String::from_utf8_lossy(name.to_bytes()).into_owned(),
            depth,
            source: e.into(),
        }
    }
}

/// One directory on a thread's stack.
struct Frame {
    /// `None` once closed to bound the walk's descriptors (see
    /// [`Walker::push`]); reopened from below on the way up.
    fd: Option<OwnedFd>,
    dev: u64,
    ino: u64,
    depth: usize,
    /// Where its listing goes on: the `d_off` cookie after the last entry
    /// read, to seek to when it is reopened.
    cookie: u64,
    /// Listed to the end.
    eof: bool,
    pending: Pending,
}

impl Frame {
    fn new(dir: Opened) -> Frame {
        Frame {
            fd: Some(dir.fd),
            dev: dir.dev,
            ino: dir.ino,
            depth: dir.depth,
            cookie: 0,
            eof: false,
            pending: Pending::default(),
        }
    }
}

/// Subdirectories listed and not yet walked: one buffer of records
/// `name NUL dev ino len` (dev and ino little-endian u64s, len a u16 that
/// counts the name and its NUL), so a listing buffer's names cost one
/// allocation, not one each.
#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    count: usize,
}

impl Pending {
    fn len(&self) -> usize {
        self.count
    }

    fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn push(&mut self, name: &CStr, dev: u64, ino: u64) {
        let name = name.to_bytes_with_nul();
        // Names are at most 255 bytes on Linux, and getdents64 gives them
        // a u16 record length: the length always fits.
        let Ok(len) = u16::try_from(name.len()) else {
            return;
        };
        self.bytes.extend_from_slice(name);
        self.bytes.extend_from_slice(&dev.to_le_bytes());
        self.bytes.extend_from_slice(&ino.to_le_bytes());
        self.bytes.extend_from_slice(&len.to_le_bytes());
        self.count += 1;
    }

    /// Moves the first half of the records (the ones `pop` would reach
    /// last) into a `Pending` of their own.
    fn split_front(&mut self) -> Pending {
        let give = self.count / 2;
        let mut at = 0;
        for _ in 0..give {
            let Some(nul) = self
                .bytes
                .get(at..)
                .and_then(|b| b.iter().position(|&c| c == 0))
            else {
                return Pending::default();
            };
            at += nul + 1 + 8 + 8 + 2;
        }
        let front = Pending {
            bytes: self.bytes.drain(..at.min(self.bytes.len())).collect(),
            count: give,
        };
        self.count -= give;
        front
    }

    /// Calls `f` with the last record pushed, then removes it.
    fn pop<R>(&mut self, f: impl FnOnce(&CStr, u64, u64) -> R) -> Option<R> {
        let end = self.bytes.len();
        let len_at = end.checked_sub(2)?;
        let ino_at = len_at.checked_sub(8)?;
        let dev_at = ino_at.checked_sub(8)?;
        let u64_at = |at: usize| {
            self.bytes
                .get(at..at + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
        };
        let len = self
            .bytes
            .get(len_at..end)
            .and_then(|b| b.try_into().ok())
            .map(u16::from_le_bytes)?;
        let (dev, ino) = (u64_at(dev_at)?, u64_at(ino_at)?);
        let start = dev_at.checked_sub(usize::from(len))?;
        let name = CStr::from_bytes_with_nul(&self.bytes[start..dev_at]).ok()?;
        let result = f(name, dev, ino);
        self.count -= 1;
        if self.count == 0 {
            // Frames wait on the stack for as long as their subtrees take:
            // an emptied one keeps no buffer.
            self.bytes = Vec::new();
        } else {
            self.bytes.truncate(start);
        }
        Some(result)
    }
}

/// What one thread of a walk owns: its stack of frames, its listing buffer
/// and what it counted and has not yet added to the walk's totals.
struct Walker<'s, 'a> {
    shared: &'s Shared<'a>,
    buffer: Vec<u8>,
    stack: Vec<Frame>,
    /// Frames `1..closed_below` have had their descriptor closed; frame 0
    /// (the directory this thread was given) and the frames from
    /// `closed_below` on are open.
    closed_below: usize,
    open_cap: usize,
    /// Inodes counted from the current listing buffer: a directory lists an
    /// inode twice only when it was renamed meanwhile (a tenant exchanging a
    /// directory with a symlink), and it counts once.
    listed: HashSet<u64>,
    bytes: u64,
    inodes: u64,
    stats: Stats,
}

impl<'s, 'a> Walker<'s, 'a> {
    fn new(shared: &'s Shared<'a>) -> Self {
        Walker {
            shared,
            buffer: Vec::with_capacity(shared.tuning.buffer),
            stack: Vec::new(),
            closed_below: 1,
            open_cap: shared.tuning.open_per_thread.max(2),
            listed: HashSet::new(),
            bytes: 0,
            inodes: 0,
            stats: Stats::default(),
        }
    }

    /// Adds what this thread counted to the walk's totals.
    fn flush(&mut self) {
        let bytes = std::mem::take(&mut self.bytes);
        // fetch_add would wrap; the closure always returns Some.
        let _ = self
            .shared
            .bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_add(bytes))
            });
        self.shared
            .inodes
            .fetch_add(std::mem::take(&mut self.inodes), Ordering::Relaxed);
    }

    /// Walks what is below `share`: the directory, or the subdirectories
    /// it lists (the directory itself was counted by whoever listed it).
    fn subtree(&mut self, share: Frame) -> Result<(), WalkError> {
        self.stack.push(share);
        self.closed_below = 1;
        let outcome = self.run();
        // Closes whatever a failure left open.
        self.stack.clear();
        outcome
    }

    fn run(&mut self) -> Result<(), WalkError> {
        while let Some(top) = self.stack.last() {
            if self.shared.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            if top.pending.len() <= 1 && !top.eof {
                // With one subdirectory left, list on first: if the listing
                // is over, the frame can leave the stack as its last
                // subdirectory is entered (see `down`).
                self.list()?;
                self.flush();
            } else if top.pending.is_empty() {
                self.up()?;
            } else {
                self.down()?;
            }
        }
        Ok(())
    }

    /// Reads one listing buffer of the top frame and counts its entries.
    fn list(&mut self) -> Result<(), WalkError> {
        let shared = self.shared;
        shared.check_budget(self.inodes)?;
        let Some(frame) = self.stack.last_mut() else {
            return Ok(());
        };
        let Frame {
            fd,
            depth,
            cookie,
            eof,
            pending,
            ..
        } = frame;
        let Some(fd) = fd.as_ref().map(|fd| fd.as_fd()) else {
            // Not reached: the top frame is always open. Were it not, its
            // rest is skipped as a moved directory's would be.
            *eof = true;
            *pending = Pending::default();
            return Ok(());
        };
        let depth = *depth;
        let mut dir = RawDir::new(fd, self.buffer.spare_capacity_mut());
        self.listed.clear();
        let mut read = false;
        loop {
            // One getdents64 call per listing: the subdirectories it named
            // are walked before the next.
            if read && dir.is_buffer_empty() {
                return Ok(());
            }
            let entry = match dir.next() {
                // Removed while being listed: as good as empty.
                None | Some(Err(Errno::NOENT)) => {
                    *eof = true;
                    return Ok(());
                }
                Some(Err(e)) => return Err(shared.entry_error("list", c".", depth, e)),
                Some(Ok(entry)) => entry,
            };
            read = true;
            *cookie = entry.next_entry_cookie();
            let name = entry.file_name();
            if name == c"." || name == c".." {
                continue;
            }
            let stat = match rustix::fs::statat(fd, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(stat) => stat,
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(shared.entry_error("stat", name, depth + 1, e)),
            };
            let meta = Meta::of(&stat);
            if meta.dev != shared.device {
                // Another filesystem mounted inside: not this volume's usage.
                continue;
            }
            if !self.listed.insert(meta.ino) {
                continue;
            }
            if meta.nlink > 1 && !meta.dir && !shared.first_link(meta.dev, meta.ino) {
                continue;
            }
            self.bytes = self.bytes.saturating_add(meta.bytes);
            self.inodes += 1;
            if meta.dir {
                pending.push(name, meta.dev, meta.ino);
            }
            if self.inodes.is_multiple_of(CLOCK_EVERY) {
                shared.check_budget(self.inodes)?;
            }
        }
    }

    /// Enters the top frame's last listed subdirectory, first handing half
    /// of the others to an idle thread if there is one.
    fn down(&mut self) -> Result<(), WalkError> {
        let shared = self.shared;
        if shared.idle.load(Ordering::Relaxed) > 0 {
            self.share();
        }
        let Some(frame) = self.stack.last_mut() else {
            return Ok(());
        };
        let last = frame.eof && frame.pending.len() == 1;
        let depth = frame.depth + 1;
        let Frame { fd, pending, .. } = frame;
        let Some(parent) = fd.as_ref().map(|fd| fd.as_fd()) else {
            // Not reached: the top frame is always open.
            *pending = Pending::default();
            return Ok(());
        };
        let Some(opened) = pending.pop(|name, dev, ino| {
            open_child(shared, parent, name, dev, ino, depth).map(|fd| {
                fd.map(|fd| Opened {
                    fd,
                    dev,
                    ino,
                    depth,
                })
            })
        }) else {
            return Ok(());
        };
        let Some(child) = opened? else {
            return Ok(());
        };
        if last {
            // Nothing else to do in the parent: the child takes its place,
            // and a chain of any depth costs one frame.
            self.stack.pop();
        }
        self.push(child);
        Ok(())
    }

    /// Gives an idle thread the first half of the top frame's listed
    /// subdirectories, with a duplicate of the frame's descriptor (which it
    /// only opens them by: the listing goes on here).
    fn share(&mut self) {
        let Some(frame) = self.stack.last_mut() else {
            return;
        };
        if frame.pending.len() < 2 {
            return;
        }
        let given = self.shared.offer(|| {
            let fd = frame.fd.as_ref()?;
            let fd = rustix::io::fcntl_dupfd_cloexec(fd, 0).ok()?;
            Some(Frame {
                fd: Some(fd),
                dev: frame.dev,
                ino: frame.ino,
                depth: frame.depth,
                cookie: 0,
                eof: true,
                pending: frame.pending.split_front(),
            })
        });
        if given {
            self.stats.handed_over += 1;
        }
    }

    /// Pushes a frame, closing the shallowest open descriptor beyond the
    /// thread's share (never the thread's own root's, never the top's).
    fn push(&mut self, dir: Opened) {
        self.stack.push(Frame::new(dir));
        let mut open = 1 + self.stack.len() - self.closed_below;
        if open > self.open_cap && self.closed_below + 1 < self.stack.len() {
            self.stack[self.closed_below].fd = None;
            self.closed_below += 1;
            open -= 1;
        }
        self.stats.max_frames = self.stats.max_frames.max(self.stack.len());
        self.stats.max_open = self.stats.max_open.max(open.min(self.stack.len()));
    }

    /// Leaves the finished top frame, reopening the next one if its
    /// descriptor was closed.
    fn up(&mut self) -> Result<(), WalkError> {
        let Some(done) = self.stack.pop() else {
            return Ok(());
        };
        let mut from = done.fd;
        let mut at = done.depth;
        while let Some(frame) = self.stack.last_mut() {
            if frame.fd.is_some() {
                break;
            }
            let reached = match from.take() {
                Some(fd) => climb(fd, at - frame.depth)
                    .map_err(|e| self.shared.entry_error("reopen", c"..", at, e))?,
                None => None,
            };
            at = frame.depth;
            match reached {
                Some(fd) if is_dir(&fd, frame.dev, frame.ino) => {
                    if !frame.eof {
                        rustix::fs::seek(&fd, SeekFrom::Start(frame.cookie)).map_err(|e| {
                            self.shared
                                .entry_error("resume listing", c".", frame.depth, e)
                        })?;
                        self.stats.resumed += 1;
                    }
                    frame.fd = Some(fd);
                    self.stats.reopened += 1;
                    break;
                }
                // Moved or removed meanwhile: the rest of that directory is
                // skipped (its subtree may well be counted where it went),
                // never followed to wherever `..` leads now. Climbing on
                // from here is safe: a frame is only resumed if it is the
                // very directory it was.
                reached => {
                    from = reached;
                    self.stack.pop();
                    self.stats.skipped += 1;
                }
            }
        }
        let len = self.stack.len();
        if len > 0 && self.closed_below > len - 1 {
            self.closed_below = (len - 1).max(1);
        }
        Ok(())
    }
}

/// Opens a listed subdirectory if it still is what the listing saw.
fn open_child(
    shared: &Shared<'_>,
    parent: BorrowedFd<'_>,
    name: &CStr,
    dev: u64,
    ino: u64,
    depth: usize,
) -> Result<Option<OwnedFd>, WalkError> {
    shared.check_budget(0)?;
    match rustix::fs::openat(parent, name, DIR_FLAGS, Mode::empty()) {
        Ok(fd) => Ok(is_dir(&fd, dev, ino).then_some(fd)),
        // Removed, or swapped for a symlink or a non-directory since it was
        // listed: it was counted as what the listing saw, and there is
        // nothing of it to walk.
        Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => Ok(None),
        Err(e) => Err(shared.entry_error("open", name, depth, e)),
    }
}

/// Whether `fd` is the directory (dev, ino).
fn is_dir(fd: &OwnedFd, dev: u64, ino: u64) -> bool {
    rustix::fs::fstat(fd).is_ok_and(|stat| {
        let meta = Meta::of(&stat);
        meta.dir && meta.dev == dev && meta.ino == ino
    })
}

/// `steps` times `openat(.., "..")` from `fd`; `None` if a directory on
/// the way was removed.
fn climb(mut fd: OwnedFd, steps: usize) -> Result<Option<OwnedFd>, Errno> {
    for _ in 0..steps {
        fd = match rustix::fs::openat(&fd, c"..", DIR_FLAGS, Mode::empty()) {
            Ok(up) => up,
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(e),
        };
    }
    Ok(Some(fd))
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

impl From<PoolError> for Failure {
    /// The one mapping of a walk's outcome to a reason, for volumes and pods
    /// alike: a walk still running from an earlier period is hung, as one
    /// that did not answer in time is.
    fn from(e: PoolError) -> Failure {
        let reason = match &e {
            PoolError::Walk(w) => match &**w {
                WalkError::BudgetExceeded { .. } => Reason::WalkBudgetExceeded,
                WalkError::Root { source, .. } => Reason::of_io(source),
                _ => Reason::IoError,
            },
            PoolError::Timeout { .. } | PoolError::StillRunning(_) => Reason::Timeout,
            PoolError::Stopped => Reason::IoError,
        };
        Failure::new(reason, e.to_string())
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
        let passenger = match self.in_flight.join(path.to_path_buf(), wait) {
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
    use std::fs;
    use std::os::unix::fs::{MetadataExt, symlink};

    const SECOND: Duration = Duration::from_secs(10);

    /// The plainest walk there is, on paths (short trees only): what du -sx
    /// and the distinct inodes of find -xdev say.
    fn reference(root: &Path) -> DirUsage {
        fn visit(dir: &Path, dev: u64, seen: &mut HashSet<(u64, u64)>, usage: &mut DirUsage) {
            for entry in fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                let meta = fs::symlink_metadata(&path).unwrap();
                if meta.dev() != dev || !seen.insert((meta.dev(), meta.ino())) {
                    continue;
                }
                usage.bytes += meta.blocks() * 512;
                usage.inodes += 1;
                if meta.is_dir() {
                    visit(&path, dev, seen, usage);
                }
            }
        }
        let meta = fs::symlink_metadata(root).unwrap();
        let mut usage = DirUsage {
            bytes: meta.blocks() * 512,
            inodes: 1,
        };
        visit(root, meta.dev(), &mut HashSet::new(), &mut usage);
        usage
    }

    /// `mkdir name && cd name`, relative to a descriptor: no path is ever
    /// longer than one name.
    fn mkdir_at(parent: BorrowedFd<'_>, name: &str) -> OwnedFd {
        rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o755)).unwrap();
        rustix::fs::openat(parent, name, DIR_FLAGS, Mode::empty()).unwrap()
    }

    fn write_at(parent: BorrowedFd<'_>, name: &str, len: usize) {
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(parent, name, flags, Mode::from_raw_mode(0o644)).unwrap();
        rustix::io::write(&fd, &vec![7u8; len]).unwrap();
    }

    fn bytes_at(parent: BorrowedFd<'_>, name: &str) -> u64 {
        Meta::of(&rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW).unwrap()).bytes
    }

    fn tiny(open_per_thread: usize) -> Tuning {
        Tuning {
            buffer: 300,
            open_per_thread,
        }
    }

    #[test]
    fn pending_names_come_back_last_first_with_their_ids() {
        let mut pending = Pending::default();
        let long = std::ffi::CString::new("x".repeat(255)).unwrap();
        pending.push(c"a", 1, 2);
        pending.push(&long, u64::MAX, 0);
        pending.push(c"b", 5, 6);
        assert_eq!(pending.len(), 3);
        let mut popped = Vec::new();
        while let Some(()) = pending.pop(|name, dev, ino| {
            popped.push((name.to_bytes().len(), dev, ino));
        }) {}
        assert_eq!(popped, [(1, 5, 6), (255, u64::MAX, 0), (1, 1, 2)]);
        assert!(pending.is_empty());
        assert_eq!(
            pending.bytes.capacity(),
            0,
            "an emptied frame keeps no buffer"
        );
    }

    #[test]
    fn a_share_takes_the_first_half_of_the_names() {
        let mut pending = Pending::default();
        let names: Vec<std::ffi::CString> = (0..7)
            .map(|i| std::ffi::CString::new("n".repeat(i * 40 + 1)).unwrap())
            .collect();
        for (i, name) in names.iter().enumerate() {
            pending.push(name, 0, i as u64);
        }
        let mut front = pending.split_front();
        let drain = |p: &mut Pending| {
            let mut inos = Vec::new();
            while let Some(ino) = p.pop(|name, _, ino| {
                assert_eq!(name.to_bytes().len(), ino as usize * 40 + 1);
                ino
            }) {
                inos.push(ino);
            }
            inos
        };
        assert_eq!((front.len(), pending.len()), (3, 4));
        assert_eq!(drain(&mut front), [2, 1, 0]);
        assert_eq!(drain(&mut pending), [6, 5, 4, 3]);
        assert_eq!(Pending::default().split_front().len(), 0);
    }

    #[test]
    fn counts_entries_and_blocks_and_hard_links_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir(root.join("sub")).unwrap();
        fs::write(root.join("sub/a"), vec![1u8; 100_000]).unwrap();
        fs::write(root.join("b"), b"hello").unwrap();
        fs::hard_link(root.join("sub/a"), root.join("a-link")).unwrap();
        symlink("/etc", root.join("to-etc")).unwrap();
        let usage = walk(root, SECOND, 1).unwrap();
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
        assert_eq!(usage, reference(root));
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
        let one = walk(dir.path(), SECOND, 1).unwrap();
        for threads in [2, 4] {
            assert_eq!(walk(dir.path(), SECOND, threads).unwrap(), one);
        }
        assert_eq!(one.inodes, 1 + 30 + 30 + 30 * 20, "links counted once");
        assert_eq!(one, reference(dir.path()));
    }

    /// Tiny listings and two descriptors per thread: every directory is
    /// listed in many buffers, its frame closed in the middle of its
    /// listing and reopened with `..` and resumed at its cookie; the sums
    /// must not move.
    #[test]
    fn tiny_buffers_and_few_descriptors_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = fastrand::Rng::with_seed(16);
        let mut dirs = vec![dir.path().to_path_buf()];
        let mut files = Vec::new();
        for i in 0..400 {
            let parent = dirs[rng.usize(..dirs.len())].clone();
            let name = format!("{i}{}", "n".repeat(rng.usize(0..200)));
            let path = parent.join(&name);
            match rng.u8(0..10) {
                0..=3 if path.as_os_str().len() < 3000 => {
                    fs::create_dir(&path).unwrap();
                    dirs.push(path);
                }
                4 if !files.is_empty() => {
                    let target: &PathBuf = &files[rng.usize(..files.len())];
                    fs::hard_link(target, &path).unwrap();
                }
                5 => symlink("/etc/passwd", &path).unwrap(),
                6 => {
                    let f = fs::File::create(&path).unwrap();
                    f.set_len(rng.u64(0..10_000_000)).unwrap();
                    files.push(path);
                }
                _ => {
                    fs::write(&path, vec![1u8; rng.usize(0..20_000)]).unwrap();
                    files.push(path);
                }
            }
        }
        let want = reference(dir.path());
        assert_eq!(walk(dir.path(), SECOND, 2).unwrap(), want);
        for threads in [1, 2, 3] {
            let (usage, stats) = walk_tuned(dir.path(), SECOND, threads, tiny(2)).unwrap();
            assert_eq!(usage, want, "{threads} threads: {stats:?}");
            assert!(stats.max_open <= 2, "{stats:?}");
            if threads == 1 {
                assert!(stats.resumed > 0 && stats.skipped == 0, "{stats:?}");
            }
        }
    }

    /// 120 nested 250-character names (30,000 bytes of path, seven times
    /// PATH_MAX), each level with two more directories and a file beside
    /// the next level, so that most frames wait on the stack.
    #[test]
    fn deeper_than_path_max_and_the_descriptor_cap() {
        let dir = tempfile::tempdir().unwrap();
        let mut levels =
            vec![rustix::fs::openat(CWD, dir.path(), DIR_FLAGS, Mode::empty()).unwrap()];
        for level in 0..120 {
            let parent = levels[level].as_fd();
            mkdir_at(parent, "a");
            write_at(parent, "f", 3000);
            let next = mkdir_at(parent, &format!("{level:03}{}", "n".repeat(247)));
            mkdir_at(parent, "z");
            levels.push(next);
        }
        let mut want = DirUsage {
            bytes: Meta::of(&rustix::fs::fstat(&levels[0]).unwrap()).bytes,
            inodes: 1,
        };
        for (level, fd) in levels.iter().enumerate().skip(1) {
            let parent = levels[level - 1].as_fd();
            want.bytes += Meta::of(&rustix::fs::fstat(fd).unwrap()).bytes
                + ["a", "f", "z"]
                    .iter()
                    .map(|n| bytes_at(parent, n))
                    .sum::<u64>();
            want.inodes += 4;
        }
        drop(levels);
        assert_eq!(walk(dir.path(), SECOND, 2).unwrap(), want);
        // Which frames wait depends on the listing's order (ext4's is a
        // hash); a third to two thirds of them do, well over 8.
        let few = Tuning {
            buffer: LISTING_BUFFER,
            open_per_thread: 8,
        };
        let (usage, stats) = walk_tuned(dir.path(), SECOND, 1, few).unwrap();
        assert_eq!(usage, want, "{stats:?}");
        assert!(stats.max_frames > 8, "{stats:?}");
        assert!(stats.max_open <= 8 && stats.reopened > 0, "{stats:?}");
    }

    #[test]
    fn a_chain_costs_one_frame() {
        let dir = tempfile::tempdir().unwrap();
        let mut fd = rustix::fs::openat(CWD, dir.path(), DIR_FLAGS, Mode::empty()).unwrap();
        for _ in 0..2000 {
            fd = mkdir_at(fd.as_fd(), "d");
        }
        write_at(fd.as_fd(), "f", 10);
        let (usage, stats) = walk_tuned(dir.path(), SECOND, 1, tiny(4)).unwrap();
        assert_eq!(usage.inodes, 1 + 2000 + 1);
        assert!(stats.max_frames <= 2, "{stats:?}");
    }

    /// A frame reopened with `..` is resumed only if it is still the
    /// directory it was; otherwise its rest is skipped, and the walk goes
    /// on from its nearest open ancestor.
    #[test]
    fn a_frame_moved_meanwhile_is_skipped_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::create_dir(root.join("x")).unwrap();
        let open = |p: &Path| rustix::fs::openat(CWD, p, DIR_FLAGS, Mode::empty()).unwrap();
        let opened = |p: &Path, depth: usize| {
            let meta = fs::metadata(p).unwrap();
            Opened {
                fd: open(p),
                dev: meta.dev(),
                ino: meta.ino(),
                depth,
            }
        };
        let (fd, stat) = open_root(root).unwrap();
        let shared = Shared {
            root,
            device: Meta::of(&stat).dev,
            budget: SECOND,
            started: Instant::now(),
            threads: 1,
            tuning: tiny(2),
            state: Mutex::new(Handoff {
                shares: Vec::new(),
                busy: 0,
                failed: None,
                finished: false,
            }),
            wake: Condvar::new(),
            idle: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            linked: Mutex::default(),
            bytes: AtomicU64::new(0),
            inodes: AtomicU64::new(0),
            stats: Mutex::default(),
        };
        drop(fd);
        // The frame at depth 1 says it is `a` (the truth) or `x` (what it
        // would say had the tenant swapped a and x meanwhile).
        for (claimed, resumed) in [("a", true), ("x", false)] {
            let mut walker = Walker::new(&shared);
            walker.stack.push(Frame::new(opened(root, 0)));
            let mut middle = Frame::new(opened(&root.join(claimed), 1));
            middle.fd = None;
            middle.eof = true;
            middle.pending.push(c"b", 0, 0);
            walker.stack.push(middle);
            walker.closed_below = 2;
            let mut top = Frame::new(opened(&root.join("a/b"), 2));
            top.eof = true;
            walker.stack.push(top);
            walker.up().unwrap();
            if resumed {
                assert_eq!(walker.stack.len(), 2);
                let a = fs::metadata(root.join("a")).unwrap();
                let fd = walker.stack[1].fd.as_ref().unwrap();
                assert!(is_dir(fd, a.dev(), a.ino()));
                assert_eq!((walker.stats.reopened, walker.stats.skipped), (1, 0));
            } else {
                assert_eq!(walker.stack.len(), 1, "x's frame is not resumed from a");
                assert_eq!((walker.stats.reopened, walker.stats.skipped), (0, 1));
            }
        }
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
        assert!(
            matches!(&err, WalkError::Root { source, .. } if source.kind() == io::ErrorKind::NotFound),
            "{err:?}"
        );
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[test]
    fn an_entry_error_names_the_entry_and_its_depth() {
        let err = Shared {
            root: Path::new("/v"),
            device: 0,
            budget: SECOND,
            started: Instant::now(),
            threads: 1,
            tuning: tiny(2),
            state: Mutex::new(Handoff {
                shares: Vec::new(),
                busy: 0,
                failed: None,
                finished: false,
            }),
            wake: Condvar::new(),
            idle: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            linked: Mutex::default(),
            bytes: AtomicU64::new(0),
            inodes: AtomicU64::new(0),
            stats: Mutex::default(),
        }
        .entry_error("stat", c"a\nb", 3, Errno::IO);
        assert_eq!(
            err.to_string(),
            "walk of /v: cannot stat \"a\\nb\" 3 levels down: Input/output error (os error 5)"
        );
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
        let Joined::Lead(pilot, _) = pool.in_flight.join(dir.path().to_path_buf(), budget) else {
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
