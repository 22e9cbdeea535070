//! Real mounts of known sizes, and their figures measured independently of
//! kubedf's code: statfs (`stat -f`) and the du method (`du` and `find`).

use std::path::{Path, PathBuf};
use std::process::Command;

use nix::mount::{MntFlags, MsFlags};

/// A tmpfs of a known size, unmounted on drop.
pub struct Tmpfs {
    pub path: PathBuf,
}

impl Tmpfs {
    pub fn mount(path: &Path, bytes: u64) -> Tmpfs {
        std::fs::create_dir_all(path).expect("create tmpfs mount point");
        let options = format!("size={bytes},mode=0755");
        nix::mount::mount(
            Some("tmpfs"),
            path,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(options.as_str()),
        )
        .unwrap_or_else(|e| panic!("mount tmpfs at {}: {e}", path.display()));
        Tmpfs {
            path: path.to_path_buf(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if let Err(e) = nix::mount::umount2(&self.path, MntFlags::MNT_DETACH) {
            eprintln!("umount {}: {e}", self.path.display());
        }
    }
}

/// An ext4 filesystem on a loop device (`mount -o loop` of a sparse image
/// file), for what differs from tmpfs: directories that take blocks, a
/// hashed listing order, inodes fixed at mkfs time. Unmounted on drop, which
/// frees the loop device (mount sets it to clear itself) and the image.
pub struct Ext4 {
    pub path: PathBuf,
    image: PathBuf,
}

impl Ext4 {
    /// `bytes` of filesystem with room for `inodes` inodes; the image file
    /// goes at `image` (on a disk, not on the tmpfs under test).
    pub fn mount(path: &Path, image: &Path, bytes: u64, inodes: u64) -> Ext4 {
        std::fs::create_dir_all(path).expect("create ext4 mount point");
        std::fs::File::create(image)
            .and_then(|f| f.set_len(bytes))
            .unwrap_or_else(|e| panic!("create image {}: {e}", image.display()));
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0", "-N", &inodes.to_string()])
            .arg(image));
        run(Command::new("mount")
            .args(["-t", "ext4", "-o", "loop"])
            .arg(image)
            .arg(path));
        Ext4 {
            path: path.to_path_buf(),
            image: image.to_path_buf(),
        }
    }
}

impl Drop for Ext4 {
    fn drop(&mut self) {
        if nix::mount::umount(&self.path).is_err()
            && let Err(e) = nix::mount::umount2(&self.path, MntFlags::MNT_DETACH)
        {
            eprintln!("umount {}: {e}", self.path.display());
        }
        let _ = std::fs::remove_file(&self.image);
    }
}

fn run(command: &mut Command) {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("run {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The du method's figures of a tree, measured by the tools kubelet's
/// method is defined by: (`du -sxB1`, the distinct inodes `find -xdev`
/// lists on the tree's own device). Distinct, because a hard-linked file is
/// one inode (kubelet counts it once); on the tree's device, because find
/// lists a nested mount point itself (it only does not descend into it)
/// while du -x, and kubelet's walk, skip it.
pub fn du_find(path: &Path) -> (u64, u64) {
    let du = Command::new("du")
        .arg("-sxB1")
        .arg(path)
        .output()
        .expect("du");
    let bytes = String::from_utf8_lossy(&du.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "du -sxB1 {}: {}",
                path.display(),
                String::from_utf8_lossy(&du.stderr)
            )
        });
    let find = Command::new("find")
        .arg(path)
        .args(["-xdev", "-printf", "%D %i\\n"])
        .output()
        .expect("find");
    let text = String::from_utf8_lossy(&find.stdout);
    let root_dev = text
        .lines()
        .next()
        .and_then(|l| l.split(' ').next())
        .unwrap_or_else(|| {
            panic!(
                "find {} listed nothing: {}",
                path.display(),
                String::from_utf8_lossy(&find.stderr)
            )
        })
        .to_owned();
    let inodes = text
        .lines()
        .filter(|l| l.split(' ').next() == Some(root_dev.as_str()))
        .collect::<std::collections::HashSet<_>>()
        .len() as u64;
    (bytes, inodes)
}

/// The six figures of a filesystem, in the order of [`statfs_figures`].
pub const FS_FIGURES: [&str; 6] = [
    "capacity_bytes",
    "available_bytes",
    "used_bytes",
    "inodes",
    "inodes_free",
    "inodes_used",
];

/// statvfs of a path, computed here independently of kubedf's code:
/// (capacity, available, used, inodes, inodes free, inodes used).
pub fn statfs_figures(path: &Path) -> [u64; 6] {
    let out = Command::new("stat")
        .args(["-f", "-c", "%S %b %f %a %c %d"])
        .arg(path)
        .output()
        .expect("run stat -f");
    assert!(
        out.status.success(),
        "stat -f {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Vec<u64> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|n| n.parse().expect("stat -f prints numbers"))
        .collect();
    let [frsize, blocks, bfree, bavail, files, ffree] = v[..] else {
        panic!("stat -f printed {v:?}")
    };
    [
        blocks * frsize,
        bavail * frsize,
        (blocks - bfree) * frsize,
        files,
        ffree,
        files - ffree,
    ]
}
