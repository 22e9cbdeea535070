//! The size of a block device (a block-mode volume): from sysfs
//! (`/sys/dev/block/MAJ:MIN/size`, in 512-byte sectors), which needs no
//! access to the device itself (an unprivileged container cannot open it);
//! else by seeking to the end of the device. No ioctl, so no unsafe code.

use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use crate::sources::HostRoot;

/// The size in bytes of the device (or file) at `path`, a path under
/// `rootfs`. kubelet publishes block volumes as symlinks or device nodes; a
/// symlink names a host path, so the path is resolved inside `rootfs` as the
/// host resolves it ([`HostRoot`]), never in this process's own root.
pub fn device_size(rootfs: &Path, sysfs: &Path, path: &Path) -> io::Result<u64> {
    let root = HostRoot::open(rootfs).map_err(io::Error::other)?;
    let host = path
        .strip_prefix(rootfs)
        .or_else(|_| path.strip_prefix(root.path()))
        .ok()
        .and_then(|rest| rest.to_str())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "block device {} is not a UTF-8 path under the host root {}",
                    path.display(),
                    rootfs.display()
                ),
            )
        })?;
    let target = root
        .resolve(&format!("/{host}"))
        .map_err(io::Error::other)?;
    // Resolved: no symlink is left to follow, and one put there since is not.
    let meta = std::fs::symlink_metadata(&target)?;
    if meta.file_type().is_block_device() {
        let rdev = meta.rdev();
        let (major, minor) = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
        let sectors = sysfs.join(format!("dev/block/{major}:{minor}/size"));
        if let Ok(text) = std::fs::read_to_string(&sectors)
            && let Ok(n) = text.trim().parse::<u64>()
        {
            // A size no device has is bad input, not a figure to wrap.
            return n.checked_mul(512).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: {n} sectors of 512 bytes is more bytes than 64 bits hold",
                        sectors.display()
                    ),
                )
            });
        }
    }
    let mut file = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&target)?;
    file.seek(SeekFrom::End(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_of_a_file_and_through_symlinks_under_rootfs() {
        let root = tempfile::tempdir().unwrap();
        let dev = root.path().join("dev");
        std::fs::create_dir(&dev).unwrap();
        std::fs::write(dev.join("disk"), vec![0u8; 12_345]).unwrap();
        assert_eq!(
            device_size(root.path(), Path::new("/sys"), &dev.join("disk")).unwrap(),
            12_345
        );
        std::os::unix::fs::symlink("/dev/disk", root.path().join("abs")).unwrap();
        assert_eq!(
            device_size(root.path(), Path::new("/sys"), &root.path().join("abs")).unwrap(),
            12_345
        );
        std::os::unix::fs::symlink("dev/disk", root.path().join("rel")).unwrap();
        assert_eq!(
            device_size(root.path(), Path::new("/sys"), &root.path().join("rel")).unwrap(),
            12_345
        );
        assert!(device_size(root.path(), Path::new("/sys"), &root.path().join("missing")).is_err());
        // A symlink that climbs past the root stays inside it: the file
        // beside the root is not reached.
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("disk"), vec![0u8; 7]).unwrap();
        let up = "../".repeat(root.path().components().count() + 2);
        let escape = format!("{up}{}/disk", outside.path().display());
        std::os::unix::fs::symlink(&escape, root.path().join("escape")).unwrap();
        let e = device_size(root.path(), Path::new("/sys"), &root.path().join("escape"))
            .expect_err("the file outside the root must not be sized");
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
    }

    #[test]
    fn a_sysfs_size_past_u64_is_an_error_not_an_overflow() {
        use nix::sys::stat::{Mode, SFlag, makedev, mknod};
        let root = tempfile::tempdir().unwrap();
        let node = root.path().join("disk");
        // A block device node of a device that need not exist: only its
        // numbers are used, to find the size in the fake sysfs below.
        if mknod(
            &node,
            SFlag::S_IFBLK,
            Mode::from_bits_truncate(0o600),
            makedev(250, 77),
        )
        .is_err()
        {
            assert!(
                std::env::var_os("CI").is_none(),
                "mknod needs root, which CI has"
            );
            return;
        }
        let sysfs = root.path().join("sys");
        let dev = sysfs.join("dev/block/250:77");
        std::fs::create_dir_all(&dev).unwrap();
        std::fs::write(dev.join("size"), format!("{}\n", u64::MAX / 256)).unwrap();
        let err = device_size(root.path(), &sysfs, &node).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("250:77/size"), "{err}");
        std::fs::write(dev.join("size"), "8\n").unwrap();
        assert_eq!(device_size(root.path(), &sysfs, &node).unwrap(), 4096);
    }

    #[test]
    fn a_block_device_is_sized_from_sysfs_without_opening_it() {
        use nix::mount::{MntFlags, MsFlags, mount, umount2};
        use nix::sys::stat::{Mode, SFlag, makedev, mknod};
        // Any block device the kernel lists will do.
        let Some(dev) = std::fs::read_dir("/sys/dev/block")
            .ok()
            .and_then(|mut d| d.next())
            .and_then(Result::ok)
        else {
            return;
        };
        let name = dev.file_name().to_string_lossy().into_owned();
        let (major, minor) = name.split_once(':').unwrap();
        let want = std::fs::read_to_string(dev.path().join("size"))
            .unwrap()
            .trim()
            .parse::<u64>()
            .unwrap()
            * 512;
        // A device node on a nodev tmpfs cannot be opened, not even by root,
        // as a container without device access cannot open the real one.
        let root = tempfile::tempdir().unwrap();
        if mount(
            Some("tmpfs"),
            root.path(),
            Some("tmpfs"),
            MsFlags::MS_NODEV,
            Some("size=1m"),
        )
        .is_err()
        {
            return; // not root
        }
        let node = root.path().join("disk");
        mknod(
            &node,
            SFlag::S_IFBLK,
            Mode::from_bits_truncate(0o600),
            makedev(major.parse().unwrap(), minor.parse().unwrap()),
        )
        .unwrap();
        let opened = File::open(&node);
        let size = device_size(root.path(), Path::new("/sys"), &node);
        umount2(root.path(), MntFlags::MNT_DETACH).unwrap();
        assert!(
            opened.is_err(),
            "the node must not be openable for this test to mean anything"
        );
        assert_eq!(size.unwrap(), want);
    }
}
