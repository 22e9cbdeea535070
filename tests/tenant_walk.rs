//! The usage walk against what a hostile tenant can do to the trees it
//! writes, with nothing but ordinary `mkdir`, `ln`, `truncate`, `dd` and
//! `rename` (issue 16): real tmpfs and ext4 (on a loop device) mounts, the
//! tenant's commands run by bash (whose `cd` goes on below PATH_MAX, where
//! dash's stops), and `du -sxB1` and `find -xdev` as the
//! oracle ([`testkit::du_find`]).
//!
//! Each test failed on the walk of full paths it replaced: ENAMETOOLONG
//! beyond PATH_MAX, and a directory exchanged for a symlink followed into
//! another pod's volume (or, exchanged for a file, a failed walk).

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kubedf::sources::walk::{DirUsage, walk};
use rustix::fs::{CWD, Mode, OFlags, RenameFlags};
use testkit::*;

const BUDGET: Duration = Duration::from_secs(120);
const TOOLS: &[&str] = &[
    "du",
    "find",
    "bash",
    "mkdir",
    "ln",
    "truncate",
    "dd",
    "xargs",
    "seq",
    "mkfs.ext4",
    "mount",
];

/// A tmpfs and an ext4 on a loop device, side by side in a temporary dir.
struct Filesystems {
    _dir: tempfile::TempDir,
    tmpfs: Option<Tmpfs>,
    ext4: Option<Ext4>,
}

impl Filesystems {
    fn new(tmpfs_bytes: u64, ext4_bytes: u64, ext4_inodes: u64) -> Filesystems {
        let dir = tempfile::tempdir().expect("tempdir");
        let tmpfs = Tmpfs::mount(&dir.path().join("tmpfs"), tmpfs_bytes);
        let ext4 = Ext4::mount(
            &dir.path().join("ext4"),
            &dir.path().join("ext4.img"),
            ext4_bytes,
            ext4_inodes,
        );
        Filesystems {
            _dir: dir,
            tmpfs: Some(tmpfs),
            ext4: Some(ext4),
        }
    }

    /// (name, mount point) of each.
    fn each(&self) -> Vec<(&'static str, PathBuf)> {
        let mut all = Vec::new();
        if let Some(t) = &self.tmpfs {
            all.push(("tmpfs", t.path.clone()));
        }
        if let Some(e) = &self.ext4 {
            all.push(("ext4", e.path.clone()));
        }
        all
    }
}

impl Drop for Filesystems {
    fn drop(&mut self) {
        // Unmounted before the dir is removed: the trees go with their
        // filesystems, however deep.
        self.tmpfs.take();
        self.ext4.take();
    }
}

/// Runs a tenant's shell commands in `dir`.
fn tenant(dir: &Path, script: &str) {
    let out = Command::new("bash")
        .arg("-euc")
        .arg(script)
        .current_dir(dir)
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "tenant script failed in {}: {}\n{script}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Shell that makes `$long`, a 250-character name.
const LONG: &str = "long=$(printf 'n%.0s' $(seq 250))";

/// The walk with 1 and 2 threads against du and find.
fn assert_like_du(what: &str, root: &Path) -> DirUsage {
    let (bytes, inodes) = du_find(root);
    let want = DirUsage { bytes, inodes };
    for threads in [1, 2] {
        let got = walk(root, BUDGET, threads)
            .unwrap_or_else(|e| panic!("{what}, {threads} threads: {e}"));
        assert_eq!(got, want, "{what}, {threads} threads: walk against du/find");
    }
    want
}

#[test]
fn twenty_thousand_directories_under_fourteen_long_names() {
    let test = "twenty_thousand_directories_under_fourteen_long_names";
    if !prerequisites(test, need_root_and(TOOLS)) {
        return;
    }
    let fs = Filesystems::new(256 << 20, 512 << 20, 100_000);
    for (name, mount) in fs.each() {
        let root = mount.join("emptydir");
        std::fs::create_dir(&root).expect("mkdir");
        tenant(
            &root,
            &format!(
                "{LONG}; for i in $(seq 14); do mkdir $long; cd $long; done; seq 20000 | xargs mkdir"
            ),
        );
        let usage = assert_like_du(name, &root);
        assert_eq!(usage.inodes, 1 + 14 + 20_000, "{name}");
    }
}

#[test]
fn seventeen_nested_long_names_beyond_path_max() {
    let test = "seventeen_nested_long_names_beyond_path_max";
    if !prerequisites(test, need_root_and(TOOLS)) {
        return;
    }
    let fs = Filesystems::new(64 << 20, 64 << 20, 10_000);
    for (name, mount) in fs.each() {
        let root = mount.join("emptydir");
        std::fs::create_dir(&root).expect("mkdir");
        // 17 * 251 bytes of path below the volume: over PATH_MAX (4096).
        tenant(
            &root,
            &format!(
                "{LONG}; for i in $(seq 17); do mkdir $long; cd $long; done; \
                 echo hello > small; dd if=/dev/urandom of=big bs=64k count=16 2>/dev/null; \
                 truncate -s 1G sparse; ln big big-link; mkdir $long; : > $long/empty"
            ),
        );
        let usage = assert_like_du(name, &root);
        // root, 17 levels, small, big (and big-link, one inode), sparse,
        // the last long-named directory and its empty file.
        assert_eq!(usage.inodes, 1 + 17 + 3 + 2, "{name}");
        assert!(usage.bytes >= 1 << 20, "{name}: {usage:?}");
    }
}

/// Hard links (in one directory and across directories), symlinks (to a
/// directory, outside the volume, dangling), a FIFO, empty, sparse and
/// written files, and another filesystem mounted inside (not counted, as
/// du -x does not count it).
#[test]
fn a_mixed_tree_with_links_sparse_files_and_a_nested_mount() {
    let test = "a_mixed_tree_with_links_sparse_files_and_a_nested_mount";
    if !prerequisites(test, need_root_and(&[TOOLS, &["mkfifo"]].concat())) {
        return;
    }
    let fs = Filesystems::new(256 << 20, 256 << 20, 10_000);
    for (name, mount) in fs.each() {
        let root = mount.join("emptydir");
        std::fs::create_dir(&root).expect("mkdir");
        tenant(
            &root,
            "mkdir -p a/b/c d/e mnt; \
             dd if=/dev/urandom of=a/data bs=1k count=300 2>/dev/null; \
             ln a/data a/b/data-again; ln a/data d/e/data-third; ln a/data same-dir-link; \
             : > empty; : > a/b/c/empty; \
             truncate -s 10G sparse; \
             dd if=/dev/zero of=holey bs=4k count=1 seek=1000 2>/dev/null; \
             ln -s a to-a; ln -s /etc to-etc; ln -s ../../../.. up; ln -s nowhere dangling; \
             mkfifo fifo; \
             echo 'x' > a/b/c/small",
        );
        let nested = Tmpfs::mount(&root.join("mnt"), 16 << 20);
        tenant(
            &root,
            "dd if=/dev/zero of=mnt/hidden bs=1M count=4 2>/dev/null; mkdir mnt/sub",
        );
        let usage = assert_like_du(name, &root);
        // root, a, b, c, d, e, data (once), 2 empty, sparse, holey, 4
        // symlinks, fifo, small; not mnt (the mount point, on its own
        // device) nor anything under it.
        assert_eq!(usage.inodes, 1 + 5 + 1 + 2 + 2 + 4 + 1 + 1, "{name}");
        let apparent = Command::new("du")
            .args(["-sxb"])
            .arg(&root)
            .output()
            .expect("du -b");
        let apparent: u64 = String::from_utf8_lossy(&apparent.stdout)
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .expect("du -b prints a number");
        assert!(
            apparent > usage.bytes + (10 << 30) - (1 << 20),
            "{name}: blocks, not apparent sizes: {apparent} against {usage:?}"
        );
        drop(nested);
    }
}

/// `mkdir d && cd d`, relative to a descriptor, as a tenant's program
/// would (100,000 `mkdir` processes would take minutes).
fn mkdir_in(parent: &OwnedFd, name: &str) -> OwnedFd {
    rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o755)).expect("mkdirat");
    rustix::fs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .expect("openat")
}

/// A chain 100,000 directories deep, with a side directory on either side
/// of it every 100 levels (so that, whatever the listing order, a thousand
/// frames wait on the stack for their side directory): the walk keeps
/// within a descriptor limit of 256 (set here for the whole test process)
/// and within its budget, and agrees with du.
#[test]
fn a_chain_a_hundred_thousand_deep_within_256_descriptors() {
    let test = "a_chain_a_hundred_thousand_deep_within_256_descriptors";
    if !prerequisites(test, need_root_and(TOOLS)) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mount = Tmpfs::mount(&dir.path().join("tmpfs"), 512 << 20);
    let root = mount.path.join("emptydir");
    std::fs::create_dir(&root).expect("mkdir");
    let mut fd = rustix::fs::openat(
        CWD,
        &root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .expect("open root");
    for level in 0..100_000 {
        if level % 100 == 0 {
            drop(mkdir_in(&fd, "a"));
            let next = mkdir_in(&fd, "d");
            drop(mkdir_in(&fd, "z"));
            fd = next;
        } else {
            fd = mkdir_in(&fd, "d");
        }
    }
    drop(fd);
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: Some(256),
            maximum: limit.maximum,
        },
    )
    .expect("setrlimit");
    let usage = assert_like_du("the chain", &root);
    assert_eq!(usage.inodes, 1 + 100_000 + 2 * 1000);
    drop(mount);
}

/// What the tenant exchanges its directory `d` with.
#[derive(Clone, Copy, Debug)]
enum Swap {
    /// A symlink to another pod's volume holding 50 MB.
    SymlinkToVictim,
    /// A regular file.
    File,
}

/// The tenant exchanges its directory `d` (renameat2 RENAME_EXCHANGE, in a
/// tight loop) with a symlink to another pod's volume of 50 MB on the same
/// filesystem, or with a file, while kubedf walks the tenant's volume 200
/// times. No walk may fail, follow the symlink, or count more than the
/// tree holds. A thousand files beside `d` widen the window between the
/// listing's stat of `d` and the walk's entering it, where the swap lands.
#[test]
fn a_directory_exchanged_with_a_symlink_or_a_file_is_never_followed() {
    let test = "a_directory_exchanged_with_a_symlink_or_a_file_is_never_followed";
    if !prerequisites(test, need_root_and(TOOLS)) {
        return;
    }
    let fs = Filesystems::new(256 << 20, 256 << 20, 10_000);
    for (name, mount) in fs.each() {
        let victim = mount.join("victim-pod/data");
        std::fs::create_dir_all(&victim).expect("mkdir victim");
        tenant(
            &victim,
            "dd if=/dev/urandom of=payload bs=1M count=50 2>/dev/null",
        );
        for swap in [Swap::SymlinkToVictim, Swap::File] {
            let root = mount.join(format!("tenant-{swap:?}"));
            std::fs::create_dir(&root).expect("mkdir tenant");
            tenant(
                &root,
                &format!(
                    "mkdir -p d/inner; for i in 1 2 3; do dd if=/dev/urandom of=d/f$i bs=64k count=2 2>/dev/null; done; \
                     echo x > d/inner/g; dd if=/dev/urandom of=file bs=4k count=1 2>/dev/null; \
                     ln -s {} link; for i in $(seq 1000); do echo $i > n$i; done",
                    victim.display()
                ),
            );
            let (bytes, inodes) = du_find(&root);
            let other = match swap {
                Swap::SymlinkToVictim => "link",
                Swap::File => "file",
            };
            let stop = AtomicBool::new(false);
            let swapped = AtomicU64::new(0);
            let (walks, swaps) = std::thread::scope(|scope| {
                let swapper = scope.spawn(|| {
                    let dir = rustix::fs::openat(
                        CWD,
                        &root,
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .expect("open tenant dir");
                    let deadline = Instant::now() + Duration::from_secs(60);
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        rustix::fs::renameat_with(
                            dir.as_fd(),
                            "d",
                            dir.as_fd(),
                            other,
                            RenameFlags::EXCHANGE,
                        )
                        .expect("renameat2 RENAME_EXCHANGE");
                        swapped.fetch_add(1, Ordering::Relaxed);
                    }
                });
                while swapped.load(Ordering::Relaxed) < 100 && !swapper.is_finished() {
                    std::thread::yield_now();
                }
                let before = swapped.load(Ordering::Relaxed);
                let mut walks = Vec::new();
                for i in 0..200 {
                    let threads = 1 + i % 2;
                    let got = walk(&root, BUDGET, threads);
                    walks.push((threads, got.map_err(|e| e.to_string())));
                }
                let swaps = swapped.load(Ordering::Relaxed) - before;
                stop.store(true, Ordering::Relaxed);
                swapper.join().expect("swapper");
                (walks, swaps)
            });
            assert!(
                swaps >= 1000,
                "{name} {swap:?}: only {swaps} exchanges during the walks"
            );
            let mut descended = 0;
            for (i, (threads, got)) in walks.iter().enumerate() {
                let got = got.as_ref().unwrap_or_else(|e| {
                    panic!("{name} {swap:?}: walk {i} ({threads} threads) failed: {e}")
                });
                assert!(
                    got.bytes <= bytes && got.inodes <= inodes,
                    "{name} {swap:?}: walk {i} ({threads} threads) counted {got:?}, \
                     more than the tree's own {bytes} bytes and {inodes} inodes"
                );
                // d holds 5 entries, counted only when d was entered.
                if got.inodes + 5 > inodes {
                    descended += 1;
                }
            }
            eprintln!(
                "{name} {swap:?}: {swaps} exchanges during 200 walks; {descended} walks entered d; \
                 at rest {bytes} bytes, {inodes} inodes"
            );
            // At rest again: exactly du's figures.
            assert_like_du(name, &root);
        }
    }
}
