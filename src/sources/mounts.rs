//! The mount points this process sees, from `<procfs>/self/mountinfo`.
//! Reading the table never touches the mounts themselves, so it cannot hang
//! on a dead NFS server the way a stat of the mount point can.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use procfs_core::FromRead;
use procfs_core::process::MountInfos;

/// Mount points (as this process sees them).
pub fn mount_points(procfs: &Path) -> Result<HashSet<PathBuf>, String> {
    let file = procfs.join("self/mountinfo");
    let infos =
        MountInfos::from_file(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    Ok(infos.0.into_iter().map(|m| m.mount_point).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_proc_are_mount_points() {
        let mounts = mount_points(Path::new("/proc")).unwrap();
        assert!(mounts.contains(Path::new("/")));
        assert!(mounts.contains(Path::new("/proc")));
        assert!(!mounts.contains(Path::new("/proc/self")));
        assert!(
            mount_points(Path::new("/nonexistent"))
                .unwrap_err()
                .contains("/nonexistent/self/mountinfo")
        );
    }
}
