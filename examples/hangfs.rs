//! `hangfs`: a one-directory FUSE filesystem whose `statfs` can be made to
//! never answer, the way `statfs(2)` blocks forever on a dead NFS hard mount.
//! Integration tests and benchmarks use it to prove that kubedf's scrapes stay
//! fast while one of the mounts it watches hangs.
//!
//! ```text
//! hangfs <MOUNTPOINT> [--hang statfs|none] [--size BYTES]
//! ```
//!
//! * Mounts an empty directory on `MOUNTPOINT` (source `hangfs`, fstype
//!   `fuse.hangfs`, options `rw,nosuid,nodev`), then prints one line `ready`
//!   on stdout. Once that line is out the mount is in `/proc/self/mountinfo`
//!   and answers requests.
//! * `--hang statfs` (default): every STATFS request is parked and never
//!   answered, so `statfs(2)`/`statvfs(3)`/`df` on the mount block. LOOKUP,
//!   GETATTR and READDIR of the root still answer at once, so `stat(2)` and
//!   `ls` of the mountpoint work.
//! * `--hang none`: STATFS answers at once with `bsize = frsize = 4096`,
//!   `blocks = BYTES / 4096`, `bfree = bavail = blocks / 2`,
//!   `files = 1_000_000`, `ffree = 500_000`. `--size` defaults to 1 GiB.
//!
//! Signals (all handled synchronously by the main thread with `sigwait`):
//!
//! * `SIGUSR1`: recover. Parked STATFS requests are answered with the figures
//!   above and later ones are answered at once (as with `--hang none`).
//! * `SIGUSR2`: hang (again). Later STATFS requests are parked.
//! * `SIGTERM` / `SIGINT`: fail parked requests with `ENOTCONN`, unmount,
//!   exit 0. This works while callers are blocked in `statfs`.
//!
//! The process also exits (status 0) when the filesystem is unmounted from the
//! outside and the kernel tears the connection down.
//!
//! Like a dead NFS hard mount, a caller blocked in `statfs` is in
//! uninterruptible sleep (`D`, `request_wait_answer`) once hangfs has read the
//! request: not even SIGKILL (or `timeout`) frees it. What frees it:
//!
//! * hangfs answering (`SIGUSR1`, or `SIGTERM`: then `ENOTCONN`);
//! * hangfs dying, even by SIGKILL: closing `/dev/fuse` aborts the connection
//!   and the caller gets `ECONNABORTED` (`ENOTCONN` on older kernels). The
//!   mount stays behind, dead (`ENOTCONN`), until someone unmounts it;
//! * writing to `/sys/fs/fuse/connections/<N>/abort`, `N` being the minor of
//!   the mount's `st_dev` (needs fusectl mounted): `ECONNABORTED`, and hangfs
//!   then unmounts and exits by itself.
//!
//! A lazy unmount (`umount -l`, `fusermount3 -u -z`) alone does NOT free it:
//! it only hides the mount, the request stays pending. A plain `umount(8)`
//! even hangs itself, because it calls `statfs` on the target first.
//!
//! Run it as root (direct `mount(2)` on `/dev/fuse`, `allow_other`), or as a
//! user with `fusermount3` and access to `/dev/fuse` (then only that user's
//! statfs calls hang). No libfuse is linked.

use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, INodeNo, MountOption, ReplyAttr,
    ReplyDirectory, ReplyEntry, ReplyStatfs, Request, Session, SessionACL, SessionUnmounter,
};
use nix::errno::Errno as NixErrno;
use nix::mount::{MntFlags, MsFlags, mount as nix_mount, umount2};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::unistd::{Pid, getegid, geteuid};

/// `eprintln!` panics when stderr is a closed pipe; a panic in the session
/// thread would take the whole filesystem down, so log best-effort instead.
macro_rules! log {
    ($($arg:tt)*) => {{
        let _ = writeln!(io::stderr(), "hangfs: {}", format_args!($($arg)*));
    }};
}

const USAGE: &str = "usage: hangfs <MOUNTPOINT> [--hang statfs|none] [--size BYTES]";

/// Block size reported by STATFS (both `f_bsize` and `f_frsize`).
const BSIZE: u32 = 4096;
/// Inode totals reported by STATFS. Fixed, so tests can assert on them.
const FILES: u64 = 1_000_000;
const FFREE: u64 = 500_000;
const DEFAULT_SIZE: u64 = 1 << 30;

/// How long shutdown waits for the FUSE session thread after unmounting.
const SESSION_JOIN_TIMEOUT: Duration = Duration::from_secs(5);

struct Args {
    mountpoint: PathBuf,
    hang: bool,
    size: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut mountpoint = None;
    let mut hang = true;
    let mut size = DEFAULT_SIZE;
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        let arg_str = arg.to_string_lossy();
        // Accept both `--flag value` and `--flag=value`.
        let (flag, inline) = match arg_str.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg_str.to_string(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => args
                    .next()
                    .map(|v| v.to_string_lossy().into_owned())
                    .ok_or_else(|| format!("{name} needs a value")),
            }
        };
        match flag.as_str() {
            "-h" | "--help" => return Err(String::new()),
            "--hang" => {
                hang = match value("--hang")?.as_str() {
                    "statfs" => true,
                    "none" => false,
                    other => return Err(format!("--hang: unknown value {other:?}")),
                }
            }
            "--size" => {
                let v = value("--size")?;
                size = v.parse().map_err(|e| format!("--size {v:?}: {e}"))?;
            }
            f if f.starts_with('-') => return Err(format!("unknown option {f:?}")),
            _ if mountpoint.is_none() => mountpoint = Some(PathBuf::from(arg)),
            _ => return Err(format!("unexpected argument {arg_str:?}")),
        }
    }
    let mountpoint = mountpoint.ok_or("missing MOUNTPOINT")?;
    Ok(Args {
        mountpoint,
        hang,
        size,
    })
}

/// State shared between the FUSE session thread and the signal-handling main
/// thread. One mutex covers both the mode and the parked replies so that a
/// STATFS can never be parked after `SIGUSR1`/`SIGTERM` drained the list.
struct State {
    hang: bool,
    stopping: bool,
    /// Requests we deliberately never answered. A `ReplyStatfs` answers EIO
    /// when dropped, so keeping it alive is what keeps the caller blocked;
    /// it is `Send`, so the main thread can answer it later.
    parked: Vec<ReplyStatfs>,
}

struct Shared {
    state: Mutex<State>,
    blocks: u64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave `State` inconsistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn answer(&self, reply: ReplyStatfs) {
        let free = self.blocks / 2;
        reply.statfs(self.blocks, free, free, FILES, FFREE, BSIZE, 255, BSIZE);
    }

    /// Stops hanging and answers every parked request with real figures.
    fn recover(&self) -> usize {
        let parked = {
            let mut st = self.lock();
            st.hang = false;
            std::mem::take(&mut st.parked)
        };
        let n = parked.len();
        for reply in parked {
            self.answer(reply);
        }
        n
    }

    /// Fails every parked and future request, so nothing pins the mount
    /// while we unmount it.
    fn stop(&self) -> usize {
        let parked = {
            let mut st = self.lock();
            st.stopping = true;
            std::mem::take(&mut st.parked)
        };
        let n = parked.len();
        for reply in parked {
            reply.error(Errno::ENOTCONN);
        }
        n
    }
}

struct HangFs {
    shared: Arc<Shared>,
    root: FileAttr,
}

/// Zero TTL: every `stat` of the mountpoint really reaches this process, so a
/// test that sees `stat` answer while STATFS hangs proves the FUSE server is
/// alive and not just that the kernel had the attributes cached.
const TTL: Duration = Duration::ZERO;

impl Filesystem for HangFs {
    fn lookup(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEntry) {
        // The root directory is empty.
        reply.error(Errno::ENOENT);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        if ino == INodeNo::ROOT {
            reply.attr(&TTL, &self.root);
        } else {
            reply.error(Errno::ENOENT);
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if ino != INodeNo::ROOT {
            reply.error(Errno::ENOTDIR);
            return;
        }
        // Offsets handed to the kernel are "index of the next entry".
        for (next, name) in (1u64..).zip([".", ".."]).skip_while(|(n, _)| *n <= offset) {
            if reply.add(INodeNo::ROOT, next, FileType::Directory, name) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let mut st = self.shared.lock();
        if st.stopping {
            drop(st);
            reply.error(Errno::ENOTCONN);
        } else if st.hang {
            // Park it and return: the single session thread keeps serving
            // LOOKUP/GETATTR/READDIR while the caller stays blocked.
            st.parked.push(reply);
            let n = st.parked.len();
            drop(st);
            log!("statfs parked ({n} pending)");
        } else {
            drop(st);
            self.shared.answer(reply);
        }
    }
}

fn root_attr() -> FileAttr {
    let now = SystemTime::now();
    FileAttr {
        ino: INodeNo::ROOT,
        size: 0,
        blocks: 0,
        atime: now,
        mtime: now,
        ctime: now,
        crtime: now,
        kind: FileType::Directory,
        perm: 0o755,
        nlink: 2,
        uid: geteuid().as_raw(),
        gid: getegid().as_raw(),
        rdev: 0,
        blksize: BSIZE,
        flags: 0,
    }
}

/// How the filesystem got mounted, which decides how it is unmounted.
enum Mounted {
    /// Mounted by us with mount(2) (root). `dev` is the mount's `maj:min`.
    Direct { path: PathBuf, dev: String },
    /// Mounted by fuser through `fusermount3` (non-root).
    Fuser(SessionUnmounter),
}

/// Mounts `fs` and completes the FUSE INIT handshake: once this returns the
/// mount is live (requests queue until the session loop runs).
fn mount(fs: HangFs, mountpoint: &Path) -> io::Result<(Session<HangFs>, Mounted)> {
    if !geteuid().is_root() {
        // fusermount3 understands `subtype=`; allow_other would need
        // user_allow_other in /etc/fuse.conf, so stay owner-only. Beware: the
        // kernel then answers statfs from other uids (root too) with zeros,
        // without asking us, so only the mounting user sees the hang.
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("hangfs".into()),
            MountOption::Subtype("hangfs".into()),
        ];
        let mut session = Session::new(fs, mountpoint, &config)?;
        let unmounter = session.unmount_callable();
        return Ok((session, Mounted::Fuser(unmounter)));
    }

    // As root we mount /dev/fuse ourselves instead of letting fuser do it:
    // fuser's unmount-on-drop runs a plain umount(2) on the path even after
    // the connection is gone, which would unmount whatever lies underneath
    // (e.g. a tmpfs hangfs was stacked on).
    let path = mountpoint.canonicalize()?;
    let dev = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")?;
    // allow_other: otherwise the kernel answers statfs from any uid but the
    // mounter's with zeros instead of asking us, and they would not hang.
    let opts = format!(
        "fd={},rootmode=40000,user_id={},group_id={},allow_other,subtype=hangfs",
        dev.as_raw_fd(),
        geteuid(),
        getegid()
    );
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    nix_mount(
        Some("hangfs"),
        &path,
        Some("fuse"),
        flags,
        Some(opts.as_str()),
    )?;
    let Some(majmin) = top_mount_dev(&path) else {
        let _ = umount2(&path, MntFlags::MNT_DETACH);
        return Err(io::Error::other("mounted, but not found in mountinfo"));
    };
    let config = Config::default();
    match Session::from_fd(fs, OwnedFd::from(dev), SessionACL::All, config) {
        Ok(session) => Ok((session, Mounted::Direct { path, dev: majmin })),
        Err(e) => {
            let _ = umount2(&path, MntFlags::MNT_DETACH);
            Err(e)
        }
    }
}

/// `maj:min` of the topmost mount on `path` (already canonical), read from
/// /proc/self/mountinfo, which never touches the (possibly hung) filesystem.
fn top_mount_dev(path: &Path) -> Option<String> {
    let want = mountinfo_escape(path.to_str()?);
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    // Later lines are mounted later, i.e. on top.
    info.lines().rev().find_map(|line| {
        let mut fields = line.split(' ');
        let dev = fields.nth(2)?;
        (fields.nth(1)? == want).then(|| dev.to_owned())
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn mountinfo_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            ' ' => out.push_str("\\040"),
            '\t' => out.push_str("\\011"),
            '\n' => out.push_str("\\012"),
            '\\' => out.push_str("\\134"),
            c => out.push(c),
        }
    }
    out
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            let _ = writeln!(io::stdout(), "{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            log!("{e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };

    // Block the signals before any thread exists: threads inherit the mask,
    // so they are delivered only through `sigwait` below and never interrupt
    // the FUSE session thread. (std resets the mask for spawned `fusermount3`.)
    let mut sigs = SigSet::empty();
    for s in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
    ] {
        sigs.add(s);
    }
    if let Err(e) = sigs.thread_block() {
        log!("blocking signals: {e}");
        return ExitCode::FAILURE;
    }

    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            hang: args.hang,
            stopping: false,
            parked: Vec::new(),
        }),
        blocks: args.size / u64::from(BSIZE),
    });
    let fs = HangFs {
        shared: shared.clone(),
        root: root_attr(),
    };
    let (session, mut mounted) = match mount(fs, &args.mountpoint) {
        Ok(m) => m,
        Err(e) => {
            log!("mounting {}: {e}", args.mountpoint.display());
            return ExitCode::FAILURE;
        }
    };
    // Not `Session::spawn`: its handle takes the mount away from the
    // unmounter and its `umount_and_join` could wait forever.
    let spawned = thread::Builder::new()
        .name("hangfs-session".into())
        .spawn(move || {
            let res = session.run();
            // The loop ends when the kernel drops the connection, e.g. after
            // an external unmount: wake the main thread so the process exits.
            let _ = kill(Pid::this(), Signal::SIGTERM);
            res
        });
    let session_thread = match spawned {
        Ok(t) => t,
        Err(e) => {
            log!("spawning session thread: {e}");
            unmount(&mut mounted);
            return ExitCode::FAILURE;
        }
    };

    // Ignore errors: a caller that stopped reading stdout must not kill us.
    let mut stdout = io::stdout().lock();
    let _ = writeln!(stdout, "ready").and_then(|()| stdout.flush());
    drop(stdout);

    wait_for_signals(&sigs, &shared);

    // Shutdown. Answer the parked requests first: a caller blocked in statfs
    // holds a reference on the mount, so a plain umount(2) would fail EBUSY.
    let n = shared.stop();
    if n > 0 {
        log!("failed {n} parked statfs with ENOTCONN");
    }
    let mut ok = unmount(&mut mounted);
    ok &= join_session(session_thread);
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Serves signals until SIGTERM/SIGINT (or a `sigwait` failure).
fn wait_for_signals(sigs: &SigSet, shared: &Shared) {
    loop {
        match sigs.wait() {
            Ok(Signal::SIGUSR1) => {
                let n = shared.recover();
                log!("SIGUSR1: statfs answers now, released {n} parked");
            }
            Ok(Signal::SIGUSR2) => {
                shared.lock().hang = true;
                log!("SIGUSR2: statfs hangs now");
            }
            Ok(Signal::SIGTERM | Signal::SIGINT) => return,
            Ok(_) | Err(NixErrno::EINTR) => {}
            Err(e) => {
                log!("sigwait: {e}");
                return;
            }
        }
    }
}

/// Waits (bounded) for the session thread. Returns false if it failed.
fn join_session(session_thread: thread::JoinHandle<io::Result<()>>) -> bool {
    let deadline = Instant::now() + SESSION_JOIN_TIMEOUT;
    while !session_thread.is_finished() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    if !session_thread.is_finished() {
        // Exiting closes /dev/fuse, which aborts the connection anyway.
        log!("session still busy after unmount; exiting anyway");
        return true;
    }
    match session_thread.join() {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            log!("session ended with error: {e}");
            false
        }
        Err(_) => {
            log!("session thread panicked");
            false
        }
    }
}

/// Unmounts after `Shared::stop`. Returns false if the mount may be left.
fn unmount(mounted: &mut Mounted) -> bool {
    let (path, dev) = match mounted {
        Mounted::Direct { path, dev } => (path, dev),
        Mounted::Fuser(unmounter) => {
            // umount(2), or `fusermount3 -u -z` when that is not permitted.
            return match unmounter.unmount() {
                Ok(()) => true,
                Err(e) => {
                    log!("unmount: {e}");
                    false
                }
            };
        }
    };
    // Only ever unmount our own mount: after an external unmount the path
    // may show the mount underneath.
    let ours = || top_mount_dev(path).as_ref() == Some(dev);
    // The callers we just failed still pin the mount until the kernel has
    // woken them, so a plain umount(2) can see EBUSY for a moment.
    for _ in 0..50 {
        if !ours() {
            return true;
        }
        match umount2(path.as_path(), MntFlags::empty()) {
            Ok(()) => return true,
            Err(NixErrno::EBUSY) => thread::sleep(Duration::from_millis(10)),
            Err(e) => {
                log!("umount: {e}");
                break;
            }
        }
    }
    if !ours() {
        return true;
    }
    // Still busy (e.g. a process has its cwd inside): detach it; the kernel
    // drops the mount once the last user is gone, or when this process exits
    // and closes /dev/fuse.
    log!("mount busy, detaching lazily");
    match umount2(path.as_path(), MntFlags::MNT_DETACH) {
        Ok(()) => true,
        Err(e) => {
            log!("umount2(MNT_DETACH): {e}");
            false
        }
    }
}
