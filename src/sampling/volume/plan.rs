//! Which PVCs the running pods of this node use, and how each is measured:
//! the pure half of PVC volume stats (no I/O). kubelet's volume layout (facts §2):
//!
//! - CSI, filesystem mode: `<root>/pods/<uid>/volumes/kubernetes.io~csi/<pv>/mount`
//! - in-tree plugins: `<root>/pods/<uid>/volumes/kubernetes.io~<plugin>/<pv>`
//! - block mode: `<root>/pods/<uid>/volumeDevices/kubernetes.io~<plugin>/<pv>`
//! - hostPath PVs: bind-mounted from `spec.hostPath.path`, nothing under pods/.
//!
//! hostPath and local PVs name a directory on the host ([`host_dir`]); the
//! caller resolves it inside the host root (I/O) and hands the result in.

use std::borrow::Borrow;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::model::{ClaimRef, FsUsage, Method, PodVolumes, PvInfo, PvSource, VolumeMode};

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum PlanError {
    /// The caller did not resolve the PV's host directory (a bug, reported
    /// rather than measured somewhere else).
    #[error("host path {0:?} was not resolved inside the host root")]
    Unresolved(String),
}

/// The claims of running pods, one per PVC: the first pod (in the given
/// order) wins, as in kubelet.
pub fn claims_of<P: Borrow<PodVolumes>>(pods: &[P]) -> Vec<ClaimRef> {
    let mut seen: HashSet<(&str, &str)> = HashSet::new();
    let mut out = Vec::new();
    for pod in pods.iter().map(Borrow::borrow).filter(|p| p.running) {
        for claim in &pod.claims {
            if seen.insert((pod.namespace.as_str(), claim.as_str())) {
                out.push(ClaimRef {
                    namespace: pod.namespace.clone(),
                    claim: claim.clone(),
                    pod: pod.name.clone(),
                    pod_uid: pod.uid.clone(),
                });
            }
        }
    }
    out
}

/// Where to look for a volume under the kubelet root dir when kubedf does
/// not know the plugin's directory name: any `kubernetes.io~*` dir holding
/// the PV name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    Path(PathBuf),
    /// Search `dir/*/<pv>` (the one plugin directory that has it).
    AnyPlugin {
        dir: PathBuf,
        pv: String,
    },
}

/// A volume's measurement plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub method: Method,
    pub location: Location,
    /// Declared capacity for walked volumes.
    pub capacity: Option<i64>,
}

impl Target {
    /// The plan with its paths' buffers cut to their length: each `join`
    /// above may double a buffer, and a plan is kept for the volume's life
    /// (about 110 bytes a volume).
    fn fit(mut self) -> Target {
        match &mut self.location {
            Location::Path(path) => path.shrink_to_fit(),
            Location::AnyPlugin { dir, .. } => dir.shrink_to_fit(),
        }
        self
    }

    /// A statfs of a known mount point: a call of microseconds (unless the
    /// mount hangs), measured with the others due at the same wake-up as
    /// one batch. Walks, block devices and searches are measured alone.
    pub fn is_quick(&self) -> bool {
        self.method == Method::Statfs && matches!(self.location, Location::Path(_))
    }
}

/// The host directory a PV is measured at (hostPath and local PVs in
/// filesystem mode), to be resolved inside the host root before [`plan`].
pub fn host_dir(pv: &PvInfo) -> Option<&str> {
    match (&pv.source, pv.mode) {
        (PvSource::HostPath { path } | PvSource::Local { path }, VolumeMode::Filesystem) => {
            Some(path)
        }
        _ => None,
    }
}

/// Plans the measurement of a PV mounted into pod `pod_uid`. `kubelet_root`
/// is the kubelet root dir as this process sees it (resolved under
/// `--path.rootfs`), `resolved` the PV's [`host_dir`] resolved the same way.
pub fn plan(
    kubelet_root: &Path,
    pod_uid: &str,
    pv: &PvInfo,
    resolved: Option<&Path>,
) -> Result<Target, PlanError> {
    let resolved = |path: &str| {
        resolved
            .map(Path::to_path_buf)
            .ok_or_else(|| PlanError::Unresolved(path.to_owned()))
    };
    let pod_dir = kubelet_root.join("pods").join(pod_uid);
    let target = match (&pv.source, pv.mode) {
        (PvSource::Csi { .. }, VolumeMode::Block) => Target {
            method: Method::Block,
            location: Location::Path(
                pod_dir
                    .join("volumeDevices/kubernetes.io~csi")
                    .join(&pv.name),
            ),
            capacity: pv.capacity,
        },
        (_, VolumeMode::Block) => Target {
            method: Method::Block,
            location: Location::AnyPlugin {
                dir: pod_dir.join("volumeDevices"),
                pv: pv.name.clone(),
            },
            capacity: pv.capacity,
        },
        (PvSource::Csi { .. }, VolumeMode::Filesystem) => Target {
            method: Method::Statfs,
            location: Location::Path(
                pod_dir
                    .join("volumes/kubernetes.io~csi")
                    .join(&pv.name)
                    .join("mount"),
            ),
            capacity: pv.capacity,
        },
        (PvSource::HostPath { path }, VolumeMode::Filesystem) => Target {
            method: Method::Walk,
            location: Location::Path(resolved(path)?),
            capacity: pv.capacity,
        },
        (PvSource::Local { path }, VolumeMode::Filesystem) => Target {
            method: Method::LocalPath,
            location: Location::Path(resolved(path)?),
            capacity: pv.capacity,
        },
        (PvSource::InTree { .. }, VolumeMode::Filesystem) => Target {
            method: Method::Statfs,
            location: Location::AnyPlugin {
                dir: pod_dir.join("volumes"),
                pv: pv.name.clone(),
            },
            capacity: pv.capacity,
        },
    };
    Ok(target.fit())
}

/// kubelet's figures for a walked volume: capacity as declared (else the
/// filesystem's), available = max(0, min(capacity - used, fs available)).
pub fn walked_usage(
    declared: Option<i64>,
    used_bytes: u64,
    used_inodes: u64,
    fs: &FsUsage,
) -> FsUsage {
    let capacity = declared
        .and_then(|c| u64::try_from(c).ok())
        .unwrap_or(fs.capacity_bytes);
    FsUsage {
        capacity_bytes: capacity,
        available_bytes: capacity.saturating_sub(used_bytes).min(fs.available_bytes),
        used_bytes,
        inodes: fs.inodes,
        inodes_free: fs.inodes_free,
        inodes_used: used_inodes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ns: &str, name: &str, running: bool, claims: &[&str]) -> PodVolumes {
        PodVolumes {
            namespace: ns.into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            running,
            claims: claims.iter().map(|c| (*c).to_owned()).collect(),
            storage: Default::default(),
        }
    }

    #[test]
    fn first_running_pod_wins_and_others_are_ignored() {
        let pods = [
            pod("a", "stopped", false, &["data"]),
            pod("a", "first", true, &["data", "logs"]),
            pod("a", "second", true, &["data"]),
            pod("b", "other-ns", true, &["data"]),
            pod("a", "no-claims", true, &[]),
        ];
        let claims = claims_of(&pods);
        let got: Vec<(&str, &str, &str)> = claims
            .iter()
            .map(|c| (c.namespace.as_str(), c.claim.as_str(), c.pod.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("a", "data", "first"),
                ("a", "logs", "first"),
                ("b", "data", "other-ns")
            ]
        );
    }

    fn pv(source: PvSource, mode: VolumeMode) -> PvInfo {
        PvInfo {
            name: "pv-1".into(),
            source,
            mode,
            capacity: Some(1 << 30),
        }
    }

    #[test]
    fn plans_follow_kubelets_layout() {
        let root = Path::new("/host/var/lib/kubelet");
        let csi = PvSource::Csi {
            driver: "ebs.csi.aws.com".into(),
        };
        let csi_fs = pv(csi.clone(), VolumeMode::Filesystem);
        assert_eq!(host_dir(&csi_fs), None);
        let t = plan(root, "u1", &csi_fs, None).unwrap();
        assert_eq!(t.method, Method::Statfs);
        assert_eq!(
            t.location,
            Location::Path(
                "/host/var/lib/kubelet/pods/u1/volumes/kubernetes.io~csi/pv-1/mount".into()
            )
        );
        let t = plan(root, "u1", &pv(csi, VolumeMode::Block), None).unwrap();
        assert_eq!(t.method, Method::Block);
        assert_eq!(
            t.location,
            Location::Path(
                "/host/var/lib/kubelet/pods/u1/volumeDevices/kubernetes.io~csi/pv-1".into()
            )
        );
        let hp = pv(
            PvSource::HostPath {
                path: "/opt/local-path/pv-1".into(),
            },
            VolumeMode::Filesystem,
        );
        assert_eq!(host_dir(&hp), Some("/opt/local-path/pv-1"));
        // Measured where the host path resolved to, not where it was written.
        let t = plan(
            root,
            "u1",
            &hp,
            Some(Path::new("/host/data/local-path/pv-1")),
        )
        .unwrap();
        assert_eq!(
            (t.method, t.location),
            (
                Method::Walk,
                Location::Path("/host/data/local-path/pv-1".into())
            )
        );
        assert_eq!(
            plan(root, "u1", &hp, None),
            Err(PlanError::Unresolved("/opt/local-path/pv-1".into()))
        );
        let local = pv(
            PvSource::Local {
                path: "/mnt/disks/ssd1".into(),
            },
            VolumeMode::Filesystem,
        );
        assert_eq!(host_dir(&local), Some("/mnt/disks/ssd1"));
        let t = plan(root, "u1", &local, Some(Path::new("/host/mnt/disks/ssd1"))).unwrap();
        assert_eq!(
            (t.method, t.location),
            (
                Method::LocalPath,
                Location::Path("/host/mnt/disks/ssd1".into())
            )
        );
        let local_block = pv(
            PvSource::Local {
                path: "/dev/sdb".into(),
            },
            VolumeMode::Block,
        );
        assert_eq!(
            host_dir(&local_block),
            None,
            "block PVs are found under pods/"
        );
        let t = plan(
            root,
            "u1",
            &pv(
                PvSource::InTree {
                    plugin: "nfs".into(),
                },
                VolumeMode::Filesystem,
            ),
            None,
        )
        .unwrap();
        assert_eq!(
            t.location,
            Location::AnyPlugin {
                dir: "/host/var/lib/kubelet/pods/u1/volumes".into(),
                pv: "pv-1".into()
            }
        );
    }

    #[test]
    fn walked_volumes_use_declared_capacity() {
        let fs = FsUsage {
            capacity_bytes: 100_000,
            available_bytes: 30_000,
            used_bytes: 70_000,
            inodes: 1000,
            inodes_free: 400,
            inodes_used: 600,
        };
        let u = walked_usage(Some(50_000), 8_000, 12, &fs);
        assert_eq!(
            (u.capacity_bytes, u.used_bytes, u.available_bytes),
            (50_000, 8_000, 30_000)
        );
        assert_eq!((u.inodes, u.inodes_free, u.inodes_used), (1000, 400, 12));
        let u = walked_usage(Some(50_000), 60_000, 12, &fs);
        assert_eq!(u.available_bytes, 0, "never negative");
        let u = walked_usage(Some(50_000), 45_000, 12, &fs);
        assert_eq!(u.available_bytes, 5_000);
        let u = walked_usage(None, 8_000, 12, &fs);
        assert_eq!(
            u.capacity_bytes, 100_000,
            "no declared capacity: the filesystem's"
        );
    }
}
