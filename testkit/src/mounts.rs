//! Real mounts of known sizes, and their figures measured independently of
//! kubedf's code.

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
