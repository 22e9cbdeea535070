//! A filesystem's size and use, as kubelet computes them.

/// A filesystem's size and use, computed as kubelet does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FsUsage {
    pub capacity_bytes: u64,
    pub available_bytes: u64,
    pub used_bytes: u64,
    pub inodes: u64,
    pub inodes_free: u64,
    pub inodes_used: u64,
}

impl FsUsage {
    /// kubelet's statfs formulas: capacity = blocks*frsize, available =
    /// bavail*frsize, used = (blocks-bfree)*frsize, inodes used = files-ffree.
    pub fn from_statfs(
        frsize: u64,
        blocks: u64,
        bfree: u64,
        bavail: u64,
        files: u64,
        ffree: u64,
    ) -> FsUsage {
        FsUsage {
            capacity_bytes: blocks.saturating_mul(frsize),
            available_bytes: bavail.saturating_mul(frsize),
            used_bytes: blocks.saturating_sub(bfree).saturating_mul(frsize),
            inodes: files,
            inodes_free: ffree,
            inodes_used: files.saturating_sub(ffree),
        }
    }
}

/// A filesystem kubedf reports: where it is and how full.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filesystem {
    /// The path on the host (the runtime's mountpoint, the kubelet root dir).
    pub path: String,
    pub usage: FsUsage,
    /// st_dev of the path, to tell whether two filesystems are the same one.
    pub device: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_formulas() {
        let u = FsUsage::from_statfs(4096, 1000, 400, 350, 500, 120);
        assert_eq!(u.capacity_bytes, 4_096_000);
        assert_eq!(u.available_bytes, 1_433_600);
        assert_eq!(u.used_bytes, 2_457_600);
        assert_eq!(u.inodes, 500);
        assert_eq!(u.inodes_free, 120);
        assert_eq!(u.inodes_used, 380);
    }

    #[test]
    fn nonsense_from_a_broken_filesystem_does_not_underflow() {
        let u = FsUsage::from_statfs(4096, 10, 20, 5, 1, 2);
        assert_eq!(u.used_bytes, 0);
        assert_eq!(u.inodes_used, 0);
    }
}
