//! The pod half: what a pod's spec says about its local ephemeral storage
//! (read by `sources::pod_spec` from the API object), and, as last measured, one row
//! per running pod: its containers' rootfs and logs, its local ephemeral
//! volumes, and kubelet's sum of them. Built by the pod sampler, read by the
//! pod_storage collector, the summary endpoint and `kubedf df --pods`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use super::source::SourceStatus;
use super::volume::PodVolumes;

/// The local ephemeral volume kinds current kubelet counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum VolumeKind {
    /// An emptyDir with the default medium (not Memory, not HugePages).
    EmptyDir,
    ConfigMap,
    GitRepo,
}

impl VolumeKind {
    /// The `kind` label.
    pub fn name(self) -> &'static str {
        match self {
            VolumeKind::EmptyDir => "emptyDir",
            VolumeKind::ConfigMap => "configMap",
            VolumeKind::GitRepo => "gitRepo",
        }
    }

    /// kubelet's plugin directory under `pods/<uid>/volumes/`.
    pub fn plugin_dir(self) -> &'static str {
        match self {
            VolumeKind::EmptyDir => "kubernetes.io~empty-dir",
            VolumeKind::ConfigMap => "kubernetes.io~configmap",
            VolumeKind::GitRepo => "kubernetes.io~git-repo",
        }
    }
}

/// One local ephemeral volume of a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EphemeralVolume {
    pub name: String,
    pub kind: VolumeKind,
    /// An emptyDir's `sizeLimit`, only when positive: kubelet's eviction
    /// manager ignores a zero or negative one.
    pub size_limit: Option<i64>,
}

/// The storage side of a pod's spec.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodStorageSpec {
    /// Regular containers with a non-zero ephemeral-storage limit, by name:
    /// the only ones kubelet checks against rootfs + logs.
    pub container_limits: BTreeMap<String, i64>,
    /// The pod's ephemeral-storage limit as `PodLimits` computes it, when
    /// any container (or the overhead of none) names one.
    pub limit: Option<i64>,
    /// The pod's local ephemeral volumes, in spec order.
    pub volumes: Vec<EphemeralVolume>,
    /// PVC-backed volumes as (volume name, claim name); a generic ephemeral
    /// volume's claim is `<pod>-<volume>`.
    pub claims: Vec<(String, String)>,
    /// Spec fields kubedf could not read (an unparseable quantity), so the
    /// limit they would set is unknown rather than absent.
    pub problems: Vec<String>,
}

/// Used bytes and inodes of one part of a pod, and when they were measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    pub inodes: u64,
    pub time: SystemTime,
}

pub use super::failure::{Failure, Reason};

/// A figure, why there is none, or `None` until the first measurement ends.
pub type Measured = Option<Result<Usage, Failure>>;

/// One running container of a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerRow {
    pub name: String,
    /// The writable layer, from the runtime's ListContainerStats.
    pub rootfs: Result<Usage, Failure>,
    /// The du of `<podLogsDir>/<ns>_<pod>_<uid>/<container>/`.
    pub logs: Measured,
}

/// One local ephemeral volume of a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EphemeralVolumeRow {
    pub name: String,
    pub kind: VolumeKind,
    pub size_limit: Option<i64>,
    pub usage: Measured,
}

/// One part of a pod that kubedf failed to measure, for the error family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Rootfs,
    Logs,
    Volume,
    PodLogs,
    EtcHosts,
    Containers,
}

impl Part {
    pub fn name(self) -> &'static str {
        match self {
            Part::Rootfs => "rootfs",
            Part::Logs => "logs",
            Part::Volume => "volume",
            Part::PodLogs => "pod_logs",
            Part::EtcHosts => "etc_hosts",
            Part::Containers => "containers",
        }
    }
}

/// One running pod of the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRow {
    /// The pod as the watch's store holds it, shared rather than copied
    /// into each row: its namespace, name and uid, and its spec's limits
    /// (`storage.limit`, kubelet's `PodLimits`; `storage.container_limits`,
    /// whether or not the container is running now) and PVC-backed volumes
    /// (`storage.claims`, for the summary's `volume[].pvcRef`).
    pub pod: Arc<PodVolumes>,
    /// The running containers as the runtime lists them; empty when
    /// `containers_error` says the runtime could not be asked.
    pub containers: Vec<ContainerRow>,
    /// The runtime has not answered yet, so the containers are unknown.
    pub containers_pending: bool,
    pub containers_error: Option<Failure>,
    pub volumes: Vec<EphemeralVolumeRow>,
    /// Files directly in the pod's log dir (runtimes such as kata keep
    /// pod-level logs there).
    pub pod_logs: Measured,
    /// `<kubelet root>/pods/<uid>/etc-hosts`; a missing file counts 0, as
    /// it adds nothing in kubelet.
    pub etc_hosts: Measured,
}

impl PodRow {
    /// The pod's local ephemeral storage by kubelet's `calcEphemeralStorage`:
    /// every running container's rootfs plus its logs (bytes and, on the CRI
    /// path, inodes), the local ephemeral volumes, the pod's own log files
    /// and etc-hosts. `None` while a part awaits its first measurement; an
    /// error when a part cannot be measured, since a partial sum would
    /// under-report.
    pub fn ephemeral_storage(&self) -> Option<Result<Usage, Failure>> {
        if let Some(e) = &self.containers_error {
            return Some(Err(e.clone()));
        }
        if self.containers_pending {
            return None;
        }
        let mut total = Usage {
            bytes: 0,
            inodes: 0,
            time: SystemTime::UNIX_EPOCH,
        };
        let mut add = |part: &Measured| -> Option<Result<(), Failure>> {
            match part {
                None => None,
                Some(Err(e)) => Some(Err(e.clone())),
                Some(Ok(u)) => {
                    total.bytes = total.bytes.saturating_add(u.bytes);
                    total.inodes = total.inodes.saturating_add(u.inodes);
                    total.time = total.time.max(u.time);
                    Some(Ok(()))
                }
            }
        };
        for c in &self.containers {
            if let Err(e) = add(&Some(c.rootfs.clone()))? {
                return Some(Err(e));
            }
            if let Err(e) = add(&c.logs)? {
                return Some(Err(e));
            }
        }
        for v in &self.volumes {
            if let Err(e) = add(&v.usage)? {
                return Some(Err(e));
            }
        }
        for part in [&self.pod_logs, &self.etc_hosts] {
            if let Err(e) = add(part)? {
                return Some(Err(e));
            }
        }
        Some(Ok(total))
    }

    /// Every part that failed, with the name of its container or volume.
    pub fn failures(&self) -> Vec<(Part, &str, &Failure)> {
        let mut out = Vec::new();
        if let Some(e) = &self.containers_error {
            out.push((Part::Containers, "", e));
        }
        for c in &self.containers {
            if let Err(e) = &c.rootfs {
                out.push((Part::Rootfs, c.name.as_str(), e));
            }
            if let Some(Err(e)) = &c.logs {
                out.push((Part::Logs, c.name.as_str(), e));
            }
        }
        for v in &self.volumes {
            if let Some(Err(e)) = &v.usage {
                out.push((Part::Volume, v.name.as_str(), e));
            }
        }
        if let Some(Err(e)) = &self.pod_logs {
            out.push((Part::PodLogs, "", e));
        }
        if let Some(Err(e)) = &self.etc_hosts {
            out.push((Part::EtcHosts, "", e));
        }
        out
    }
}

/// What the pod sampler last published.
#[derive(Clone, Debug, PartialEq)]
pub struct PodTable {
    /// Sorted by namespace and name. Shared: the sampler rebuilds only the
    /// rows of pods that changed, and publishes the others as they were.
    pub rows: Vec<std::sync::Arc<PodRow>>,
    /// The Kubernetes API as the pod sampler saw it.
    pub source: SourceStatus,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::Duration;

    pub fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    pub fn usage(bytes: u64, inodes: u64, secs: u64) -> Usage {
        Usage {
            bytes,
            inodes,
            time: at(secs),
        }
    }

    pub fn row() -> PodRow {
        PodRow {
            pod: Arc::new(PodVolumes {
                namespace: "shop".into(),
                name: "web-0".into(),
                uid: "u-1".into(),
                running: true,
                claims: vec![],
                storage: PodStorageSpec {
                    limit: Some(2 << 30),
                    container_limits: [("app".into(), 1 << 30)].into(),
                    ..PodStorageSpec::default()
                },
            }),
            containers: vec![
                ContainerRow {
                    name: "app".into(),
                    rootfs: Ok(usage(4096, 3, 100)),
                    logs: Some(Ok(usage(8192, 2, 101))),
                },
                ContainerRow {
                    name: "sidecar".into(),
                    rootfs: Ok(usage(1000, 1, 99)),
                    logs: Some(Ok(usage(0, 1, 90))),
                },
            ],
            containers_pending: false,
            containers_error: None,
            volumes: vec![EphemeralVolumeRow {
                name: "cache".into(),
                kind: VolumeKind::EmptyDir,
                size_limit: Some(1 << 20),
                usage: Some(Ok(usage(40960, 10, 105))),
            }],
            pod_logs: Some(Ok(usage(0, 0, 102))),
            etc_hosts: Some(Ok(usage(4096, 1, 103))),
        }
    }

    /// A snapshot with nothing sampled but these pods.
    pub fn snapshot(rows: Vec<PodRow>) -> crate::model::Snapshot {
        use crate::model::{NodeSample, SourceId};
        let at = at(200);
        let mut s = crate::model::Snapshot::new(
            std::sync::Arc::new(crate::kubelet::config::KubeletConfig::defaults(
                "/var/lib/kubelet/config.yaml".into(),
            )),
            NodeSample::unsampled(at),
            None,
        );
        s.pods = Some(std::sync::Arc::new(PodTable {
            rows: rows.into_iter().map(std::sync::Arc::new).collect(),
            source: SourceStatus {
                source: SourceId::Kubernetes,
                up: true,
                last_success: Some(at),
                duration: None,
                error: None,
            },
        }));
        s
    }

    #[test]
    fn kubelets_sum() {
        let total = row().ephemeral_storage().unwrap().unwrap();
        assert_eq!(total.bytes, 4096 + 8192 + 1000 + 40960 + 4096);
        assert_eq!(total.inodes, 3 + 2 + 1 + 1 + 10 + 1);
        assert_eq!(total.time, at(105), "the newest part's time");
    }

    #[test]
    fn a_failed_or_pending_part_is_never_summed_as_zero() {
        let mut r = row();
        r.volumes[0].usage = None;
        assert_eq!(r.ephemeral_storage(), None);
        r.volumes[0].usage = Some(Err(Failure::new(Reason::WalkBudgetExceeded, "walk")));
        let e = r.ephemeral_storage().unwrap().unwrap_err();
        assert_eq!(e.reason, Reason::WalkBudgetExceeded);
        assert_eq!(r.failures().len(), 1);
        assert_eq!(r.failures()[0].1, "cache");
        let mut r = row();
        r.containers.clear();
        r.containers_error = Some(Failure::new(Reason::CriUnavailable, "down"));
        assert_eq!(
            r.ephemeral_storage().unwrap().unwrap_err().reason,
            Reason::CriUnavailable
        );
    }
}
