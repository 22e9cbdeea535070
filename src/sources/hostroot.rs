//! Host paths resolved as the host resolves them, with `--path.rootfs` as `/`.
//!
//! kubelet, the runtime and PV specs name paths on the host. Under
//! `--path.rootfs=/host`, joining `/host` and `/var/lib/containerd/...`
//! lexically is not enough: if the host's `/var/lib/containerd` is a symlink
//! to `/mnt/disk2/containerd`, the kernel follows it in kubedf's own root, to
//! a `/mnt/disk2` that is not the host's (or to nothing). And a symlink in a
//! hostPath PV, or a `..`, would lead out of the host root altogether.
//!
//! [`HostRoot::resolve`] resolves every symlink of a host path inside the
//! root: `..` at the root stays at the root, an absolute symlink restarts at
//! the root, a relative one from its own directory, at most 40 of them (the
//! kernel's limit; more is `ELOOP`). It returns the real path as this process
//! sees it (under the root, with no symlink left in it), so the callers'
//! statfs, walks and opens need no further resolution. A path that does not
//! exist (yet) keeps its missing tail as written, like `realpath -m`, so a
//! log directory or a mountpoint that appears later is found then.
//!
//! Where the kernel has it (Linux 5.6+), `openat2` with `RESOLVE_IN_ROOT`
//! does the resolution in one call and the result is read back from
//! `/proc/self/fd`; `RESOLVE_NO_MAGICLINKS` refuses `/proc` links such as
//! `/proc/<pid>/root`, which would jump out of any root. Where it answers
//! `ENOSYS` (an older kernel) or `EPERM` (a seccomp profile that predates it),
//! and for paths that do not exist, the same rules run component by
//! component in userspace, one `openat(.., O_PATH | O_NOFOLLOW)` per
//! component relative to its parent's descriptor, so a directory swapped for
//! a symlink during the walk is read as a symlink, never followed.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{FileType, Mode, OFlags, ResolveFlags, fstat, openat, openat2, readlinkat};
use rustix::io::Errno;
use thiserror::Error;

/// The kernel's limit on symlinks followed in one resolution (`MAXSYMLINKS`).
pub const MAX_SYMLINKS: usize = 40;

/// The longest host path accepted, as the kernel's `PATH_MAX`: it bounds the
/// work of one resolution.
const PATH_MAX: usize = 4096;

/// How often `openat2` is retried when it answers `EAGAIN` (a rename raced
/// with a `..` in the path) before the emulation takes over.
const EAGAIN_RETRIES: usize = 3;

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum HostPathError {
    #[error("host path {0:?} is not absolute")]
    NotAbsolute(String),
    #[error("host path {path:?} is longer than {PATH_MAX} bytes")]
    TooLong { path: String },
    #[error("host path {path:?}: more than {MAX_SYMLINKS} symbolic links, or a /proc magic link")]
    Loop { path: String },
    #[error("host path {path:?} under {root}: {errno}")]
    Io {
        path: String,
        root: PathBuf,
        #[source]
        errno: Errno,
    },
    #[error("host path {path:?} resolved to {resolved}, outside the host root {root}")]
    Outside {
        path: String,
        resolved: PathBuf,
        root: PathBuf,
    },
    #[error("host root {root}: {errno}")]
    Root {
        root: PathBuf,
        #[source]
        errno: Errno,
    },
}

impl From<HostPathError> for crate::model::Failure {
    /// A failed read of the host root is `io_error`; a path kubedf refuses
    /// (relative, too long, a loop, outside the root) is `bad_path`.
    fn from(e: HostPathError) -> crate::model::Failure {
        use crate::model::Reason;
        let reason = match e {
            HostPathError::Io { .. } | HostPathError::Root { .. } => Reason::IoError,
            _ => Reason::BadPath,
        };
        crate::model::Failure::new(reason, e.to_string())
    }
}

/// The host's root filesystem (`--path.rootfs`), opened once.
#[derive(Debug)]
pub struct HostRoot {
    fd: OwnedFd,
    /// The root's real path as this process sees it: resolved paths begin
    /// with it.
    real: PathBuf,
    /// Set once `openat2` was found missing, so it is not tried again.
    no_openat2: AtomicBool,
}

impl HostRoot {
    /// Opens `root` (its own symlinks are this process's to follow).
    pub fn open(root: &Path) -> Result<HostRoot, HostPathError> {
        let err = |errno| HostPathError::Root {
            root: root.to_path_buf(),
            errno,
        };
        let fd = openat(
            rustix::fs::CWD,
            root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(err)?;
        let real = match read_back(&fd) {
            Some(real) => real,
            None => std::fs::canonicalize(root)
                .map_err(|e| err(Errno::from_io_error(&e).unwrap_or(Errno::IO)))?,
        };
        Ok(HostRoot {
            fd,
            real,
            no_openat2: AtomicBool::new(false),
        })
    }

    /// The root's real path.
    pub fn path(&self) -> &Path {
        &self.real
    }

    /// The real path of host path `host` as this process sees it: the root
    /// joined with `host` resolved inside it. Relative paths are refused: a
    /// host path has no working directory to be relative to.
    pub fn resolve(&self, host: &str) -> Result<PathBuf, HostPathError> {
        let rel = relative_part(host)?;
        if !self.no_openat2.load(Ordering::Relaxed) {
            match self.kernel_resolve(host, rel) {
                Kernel::Resolved(path) => return Ok(path),
                Kernel::Failed(e) => return Err(e),
                Kernel::Unsupported => self.no_openat2.store(true, Ordering::Relaxed),
                Kernel::Missing => {}
            }
        }
        self.emulate(host, rel)
    }

    /// What [`HostRoot::resolve`] does where `openat2` is unavailable, on
    /// its own (tests compare it with the kernel's resolution).
    pub fn resolve_emulated(&self, host: &str) -> Result<PathBuf, HostPathError> {
        let rel = relative_part(host)?;
        self.emulate(host, rel)
    }

    fn kernel_resolve(&self, host: &str, rel: &OsStr) -> Kernel {
        let rel = if rel.is_empty() { OsStr::new(".") } else { rel };
        let mut tries = 0;
        let fd = loop {
            match openat2(
                &self.fd,
                rel,
                OFlags::PATH | OFlags::CLOEXEC,
                Mode::empty(),
                ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
            ) {
                Ok(fd) => break fd,
                Err(Errno::AGAIN) if tries < EAGAIN_RETRIES => tries += 1,
                // Paths that do not exist yet keep their tail (emulated).
                Err(Errno::NOENT | Errno::NOTDIR | Errno::AGAIN) => return Kernel::Missing,
                Err(Errno::NOSYS | Errno::PERM) => return Kernel::Unsupported,
                Err(Errno::LOOP) => {
                    return Kernel::Failed(HostPathError::Loop {
                        path: host.to_owned(),
                    });
                }
                Err(errno) => return Kernel::Failed(self.io(host, errno)),
            }
        };
        // Without /proc there is no reading back: the emulation answers.
        let Some(resolved) = read_back(&fd) else {
            return Kernel::Missing;
        };
        if resolved.starts_with(&self.real) {
            Kernel::Resolved(resolved)
        } else {
            Kernel::Failed(HostPathError::Outside {
                path: host.to_owned(),
                resolved,
                root: self.real.clone(),
            })
        }
    }

    /// Component by component: `names` are the components resolved so far
    /// below the root; the first `present` of them exist as directories,
    /// `dir` is the descriptor of the last of those (the root's when none).
    /// Below a component that does not exist, the rest is taken as written.
    fn emulate(&self, host: &str, rel: &OsStr) -> Result<PathBuf, HostPathError> {
        let mut todo: Vec<OsString> = Vec::new();
        push_components(&mut todo, rel);
        let mut names: Vec<OsString> = Vec::new();
        let mut present = 0;
        let mut dir: Option<OwnedFd> = None;
        let mut links = 0;
        while let Some(name) = todo.pop() {
            if name == "." {
                continue;
            }
            if name == ".." {
                // At the root, `..` is the root.
                names.pop();
                if present > names.len() {
                    present = names.len();
                    dir = self.reopen(host, &names)?;
                }
                continue;
            }
            if present < names.len() {
                names.push(name);
                continue;
            }
            let parent = dir.as_ref().map_or(self.fd.as_fd(), |d| d.as_fd());
            let fd = match openat(
                parent,
                name.as_os_str(),
                OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => {
                    names.push(name);
                    continue;
                }
                Err(errno) => return Err(self.io(host, errno)),
            };
            let kind = fstat(&fd)
                .map(|st| FileType::from_raw_mode(st.st_mode))
                .map_err(|errno| self.io(host, errno))?;
            match kind {
                FileType::Symlink => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(HostPathError::Loop {
                            path: host.to_owned(),
                        });
                    }
                    // An O_PATH descriptor of the link itself: its target,
                    // whatever the name now points to.
                    let target =
                        readlinkat(&fd, "", Vec::new()).map_err(|errno| self.io(host, errno))?;
                    let target = OsStr::from_bytes(target.as_bytes());
                    if target.as_bytes().starts_with(b"/") {
                        names.clear();
                        present = 0;
                        dir = None;
                    }
                    push_components(&mut todo, target);
                }
                FileType::Directory => {
                    names.push(name);
                    present += 1;
                    dir = Some(fd);
                }
                // A file ends the lookups: nothing is below it.
                _ => names.push(name),
            }
        }
        let mut out = self.real.clone();
        out.extend(&names);
        Ok(out)
    }

    /// The descriptor of the directory `names` (all present directories),
    /// opened again from the root without following anything, for a `..`:
    /// a directory moved away meanwhile cannot take the walk out of the root.
    fn reopen(&self, host: &str, names: &[OsString]) -> Result<Option<OwnedFd>, HostPathError> {
        let mut dir: Option<OwnedFd> = None;
        for name in names {
            let parent = dir.as_ref().map_or(self.fd.as_fd(), |d| d.as_fd());
            let fd = openat(
                parent,
                name.as_os_str(),
                OFlags::PATH | OFlags::NOFOLLOW | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|errno| self.io(host, errno))?;
            dir = Some(fd);
        }
        Ok(dir)
    }

    fn io(&self, host: &str, errno: Errno) -> HostPathError {
        HostPathError::Io {
            path: host.to_owned(),
            root: self.real.clone(),
            errno,
        }
    }
}

/// What `openat2` made of a path.
enum Kernel {
    Resolved(PathBuf),
    Failed(HostPathError),
    /// The kernel (or a seccomp profile) has no `openat2`.
    Unsupported,
    /// Not there (in whole or in part), or not readable back: emulated.
    Missing,
}

/// `host` without its leading slashes, or why it is not a host path.
fn relative_part(host: &str) -> Result<&OsStr, HostPathError> {
    if !host.starts_with('/') {
        return Err(HostPathError::NotAbsolute(host.to_owned()));
    }
    if host.len() > PATH_MAX {
        return Err(HostPathError::TooLong {
            path: host.to_owned(),
        });
    }
    Ok(OsStr::new(host.trim_start_matches('/')))
}

/// Pushes the components of `path` on the stack `todo`, so that the first
/// component is popped first. Empty components (`a//b`) are left out.
fn push_components(todo: &mut Vec<OsString>, path: &OsStr) {
    let parts = path
        .as_bytes()
        .split(|b| *b == b'/')
        .filter(|p| !p.is_empty());
    let start = todo.len();
    todo.extend(parts.map(|p| OsStr::from_bytes(p).to_os_string()));
    todo[start..].reverse();
}

/// The path of an open descriptor, as the kernel names it in
/// `/proc/self/fd`; `None` without /proc or for what has no path.
fn read_back(fd: &OwnedFd) -> Option<PathBuf> {
    let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
    // "pipe:[..]", "anon_inode:..", a deleted file's " (deleted)": no path.
    (link.is_absolute() && !link.as_os_str().as_bytes().ends_with(b" (deleted)")).then_some(link)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    /// A root with `var/lib/containerd -> /mnt/disk2/containerd` (absolute),
    /// `opt/lp -> ../data/lp` (relative), `opt/up -> ../../..`,
    /// `data/lp/pv/etc -> /etc`, a loop `l1 <-> l2`, and a file.
    fn tree() -> (tempfile::TempDir, HostRoot) {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = dir.path();
        for d in [
            "var/lib",
            "mnt/disk2/containerd/snap",
            "opt",
            "data/lp/pv",
            "etc",
        ] {
            std::fs::create_dir_all(r.join(d)).expect("mkdir");
        }
        symlink("/mnt/disk2/containerd", r.join("var/lib/containerd")).expect("symlink");
        symlink("../data/lp", r.join("opt/lp")).expect("symlink");
        symlink("../../..", r.join("opt/up")).expect("symlink");
        symlink("/etc", r.join("data/lp/pv/etc")).expect("symlink");
        symlink("l2", r.join("l1")).expect("symlink");
        symlink("l1", r.join("l2")).expect("symlink");
        std::fs::write(r.join("etc/file"), b"x").expect("write");
        let root = HostRoot::open(r).expect("open root");
        (dir, root)
    }

    /// Both ways of resolving, which must agree.
    fn both(root: &HostRoot, host: &str) -> Result<PathBuf, HostPathError> {
        let kernel = root.resolve(host);
        let emulated = root.resolve_emulated(host);
        assert_eq!(kernel, emulated, "{host}: openat2 and the emulation differ");
        kernel
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let (_dir, root) = tree();
        let r = root.path().to_path_buf();
        let cases = [
            ("/", r.clone()),
            ("/var/lib/containerd", r.join("mnt/disk2/containerd")),
            (
                "/var/lib/containerd/snap/",
                r.join("mnt/disk2/containerd/snap"),
            ),
            (
                "/var/lib/containerd/../containerd",
                r.join("mnt/disk2/containerd"),
            ),
            ("/opt/lp/pv", r.join("data/lp/pv")),
            ("/opt/./lp//pv/../pv", r.join("data/lp/pv")),
            ("/opt/up", r.clone()),
            ("/opt/up/etc/file", r.join("etc/file")),
            ("/opt/lp/pv/etc", r.join("etc")),
            ("/../../..", r.clone()),
            ("/a/../../etc", r.join("etc")),
        ];
        for (host, want) in cases {
            assert_eq!(both(&root, host), Ok(want), "{host}");
        }
    }

    #[test]
    fn missing_tails_are_kept_as_written() {
        let (_dir, root) = tree();
        let r = root.path().to_path_buf();
        assert_eq!(
            both(&root, "/var/lib/containerd/not/yet"),
            Ok(r.join("mnt/disk2/containerd/not/yet"))
        );
        assert_eq!(
            both(&root, "/nothing/../opt/lp"),
            Ok(r.join("data/lp")),
            "back out of a missing directory, symlinks resolve again"
        );
        assert_eq!(both(&root, "/etc/file/x"), Ok(r.join("etc/file/x")));
    }

    #[test]
    fn loops_and_relative_paths_are_refused_naming_the_path() {
        let (_dir, root) = tree();
        let e = both(&root, "/l1/x").expect_err("a loop");
        assert!(matches!(e, HostPathError::Loop { .. }), "{e:?}");
        assert!(e.to_string().contains("\"/l1/x\""), "{e}");
        for bad in ["", "var/lib", "./x"] {
            let e = root.resolve(bad).expect_err("relative");
            assert_eq!(e, HostPathError::NotAbsolute(bad.to_owned()));
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
        let long = format!("/{}", "a/".repeat(PATH_MAX));
        assert!(matches!(
            root.resolve(&long),
            Err(HostPathError::TooLong { .. })
        ));
    }

    #[test]
    fn the_kernel_refuses_magic_links() {
        // /proc/self/root is a magic link: the kernel would jump through it
        // to whatever root the process has, whatever the resolution's root.
        let root = HostRoot::open(Path::new("/")).expect("open /");
        assert!(matches!(
            root.resolve("/proc/self/root/etc"),
            Err(HostPathError::Loop { .. })
        ));
    }

    #[test]
    fn the_root_itself_may_be_slash() {
        let root = HostRoot::open(Path::new("/")).expect("open /");
        assert_eq!(root.resolve("/proc/.."), Ok(PathBuf::from("/")));
        assert_eq!(root.resolve_emulated("/"), Ok(PathBuf::from("/")));
    }

    #[test]
    fn a_root_that_is_not_there_is_an_error_naming_it() {
        let e = HostRoot::open(Path::new("/nonexistent/kubedf-root")).expect_err("missing");
        assert!(e.to_string().contains("/nonexistent/kubedf-root"), "{e}");
    }
}
