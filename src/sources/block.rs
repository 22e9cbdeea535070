//! The size of a block device (a block-mode volume), by seeking to its end:
//! no ioctl, so no unsafe code.

use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::sources::host_path;

/// Opens `path` read-only and returns its size in bytes. kubelet publishes
/// block volumes as symlinks or device nodes; an absolute symlink names a
/// host path, so it is followed under `rootfs` rather than in this process's
/// own root.
pub fn device_size(rootfs: &Path, path: &Path) -> io::Result<u64> {
    let mut target = path.to_path_buf();
    for _ in 0..8 {
        match std::fs::read_link(&target) {
            Ok(link) if link.is_absolute() => {
                let host = link.to_str().ok_or_else(|| invalid(&link))?;
                target = host_path(rootfs, host)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            }
            Ok(link) => {
                target = target
                    .parent()
                    .map(|p| p.join(&link))
                    .ok_or_else(|| invalid(&link))?
            }
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => break,
            Err(e) => return Err(e),
        }
    }
    let mut file = File::open(&target)?;
    file.seek(SeekFrom::End(0))
}

fn invalid(link: &Path) -> io::Error {
    let shown: PathBuf = link.to_path_buf();
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("unusable symlink target {}", shown.display()),
    )
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
        assert_eq!(device_size(root.path(), &dev.join("disk")).unwrap(), 12_345);
        std::os::unix::fs::symlink("/dev/disk", root.path().join("abs")).unwrap();
        assert_eq!(
            device_size(root.path(), &root.path().join("abs")).unwrap(),
            12_345
        );
        std::os::unix::fs::symlink("dev/disk", root.path().join("rel")).unwrap();
        assert_eq!(
            device_size(root.path(), &root.path().join("rel")).unwrap(),
            12_345
        );
        assert!(device_size(root.path(), &root.path().join("missing")).is_err());
    }
}
