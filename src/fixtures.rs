//! Hand-built snapshots shared by the golden tests (tests/exposition.rs) and
//! the render benchmark (benches/render.rs), so both look at the same node.
//! Not part of kubedf's interface.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::kubelet::config::KubeletConfig;
use crate::model::pod::PodTable;
use crate::model::{
    Failure, Filesystem, FsUsage, Method, NodeSample, Reading, Reason, Rlimit, Runtime,
    RuntimeVersion, Snapshot, SourceId, SourceStatus, VolumeMode, VolumeRow, VolumeTable,
};

/// When the fixed snapshot was taken (November 2026).
pub fn taken_at() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_795_000_000)
}

fn status(source: SourceId) -> SourceStatus {
    SourceStatus {
        source,
        up: true,
        last_success: Some(taken_at()),
        duration: Some(Duration::from_millis(3)),
        error: None,
    }
}

/// A node with a split image filesystem, a dedicated imagefs and custom
/// thresholds, figures taken from a real node's /stats/summary, and four
/// PVCs: a CSI one, a walked hostPath one, a block one and a hung NFS one.
/// Its pods: see [`golden_pods`].
pub fn node() -> Snapshot {
    let mut snapshot = with_volumes(golden_volumes());
    snapshot.pods = Some(Arc::new(golden_pods()));
    snapshot
}

/// The same node with `n` statfs-measured CSI PVCs named as a real cluster
/// names them, for the render benchmark.
pub fn node_with_pvcs(n: usize) -> Snapshot {
    with_volumes((0..n).map(pvc).collect())
}

/// [`node`] with its first PVC (`shop/data-db-0`, 10 GiB, 10% used) under
/// another namespace and name, for tests of escaping.
pub fn first_pvc_renamed(namespace: &str, claim: &str) -> Snapshot {
    let mut rows = golden_volumes();
    let first = &rows[0];
    let renamed = VolumeRow::new(namespace, claim, &first.pod, first.reading());
    let renamed = match (&first.pv, &first.driver, first.mode) {
        (Some(pv), Some(driver), Some(mode)) => renamed.with_pv(pv, driver, mode),
        _ => renamed,
    };
    rows[0] = Arc::new(renamed);
    with_volumes(rows)
}

fn with_volumes(rows: Vec<Arc<VolumeRow>>) -> Snapshot {
    // A literal that parses: a failure here is a bug in this file.
    let config = KubeletConfig::parse(
        "kind: KubeletConfiguration\n\
         imageGCHighThresholdPercent: 85\n\
         imageGCLowThresholdPercent: 80\n\
         evictionHard:\n  nodefs.available: 10%\n  imagefs.available: 15%\n  nodefs.inodesFree: 5%\n  pid.available: 1k\n\
         evictionSoft:\n  imagefs.available: 20%\nevictionSoftGracePeriod:\n  imagefs.available: 1m\n",
        Path::new("/var/lib/kubelet/config.yaml"),
    )
    .expect("the fixture's kubelet config is valid");
    let node = NodeSample {
        taken_at: taken_at(),
        runtime: Some(Ok(Runtime {
            version: RuntimeVersion {
                runtime_name: "containerd".into(),
                runtime_version: "v1.7.20".into(),
                runtime_api_version: "v1".into(),
            },
            image_fs: Ok(Filesystem {
                path: "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs".into(),
                usage: FsUsage {
                    capacity_bytes: 21_462_233_088,
                    available_bytes: 17_310_752_768,
                    used_bytes: 2_846_437_376,
                    inodes: 1_310_720,
                    inodes_free: 1_227_393,
                    inodes_used: 41_513,
                },
                device: 2049,
            }),
            container_fs: Some(Ok(Filesystem {
                path: "/var/lib/containers/storage/overlay-containers".into(),
                usage: FsUsage {
                    capacity_bytes: 107_374_182_400,
                    available_bytes: 96_636_764_160,
                    used_bytes: 524_288_000,
                    inodes: 6_553_600,
                    inodes_free: 6_500_000,
                    inodes_used: 2_048,
                },
                device: 2065,
            })),
        })),
        nodefs: Some(Ok(Filesystem {
            path: "/var/lib/kubelet".into(),
            usage: FsUsage {
                capacity_bytes: 107_374_182_400,
                available_bytes: 96_636_764_160,
                used_bytes: 10_737_418_240,
                inodes: 6_553_600,
                inodes_free: 6_500_000,
                inodes_used: 53_600,
            },
            device: 2065,
        })),
        rlimit: Some(Ok(Rlimit {
            maxpid: 254_751,
            curproc: 1_187,
        })),
        sources: vec![
            status(SourceId::Cri),
            status(SourceId::ImageFs),
            status(SourceId::NodeFs),
            status(SourceId::Procfs),
        ],
    };
    // Not `VolumeTable::new`: the golden order is the order given here.
    let volumes = VolumeTable {
        rows,
        source: SourceStatus {
            duration: None,
            ..status(SourceId::Kubernetes)
        },
    };
    Snapshot::new(Arc::new(config), node, Some(volumes))
}

fn golden_volumes() -> Vec<Arc<VolumeRow>> {
    let row = |claim: &str, pv: &str, driver: &str, mode, method, stats| {
        let reading = Reading {
            method: Some(method),
            stats: Some(stats),
        };
        Arc::new(
            VolumeRow::new("shop", claim, &format!("{claim}-pod"), reading)
                .with_pv(pv, driver, mode),
        )
    };
    let fs = |capacity: u64, used: u64| FsUsage {
        capacity_bytes: capacity,
        available_bytes: capacity - used,
        used_bytes: used,
        inodes: 655_360,
        inodes_free: 655_000,
        inodes_used: 360,
    };
    vec![
        row(
            "data-db-0",
            "pvc-6d1c",
            "ebs.csi.aws.com",
            VolumeMode::Filesystem,
            Method::Statfs,
            Ok(fs(10_737_418_240, 1_073_741_824)),
        ),
        row(
            "uploads",
            "pvc-77aa",
            "kubernetes.io/host-path",
            VolumeMode::Filesystem,
            Method::Walk,
            Ok(fs(2_147_483_648, 52_428_800)),
        ),
        row(
            "raw",
            "pvc-0b0e",
            "ebs.csi.aws.com",
            VolumeMode::Block,
            Method::Block,
            Ok(FsUsage {
                capacity_bytes: 5_368_709_120,
                ..FsUsage::default()
            }),
        ),
        row(
            "nfs-share",
            "pvc-4e21",
            "kubernetes.io/nfs",
            VolumeMode::Filesystem,
            Method::Statfs,
            Err(Failure::new(
                Reason::Timeout,
                "statfs did not answer within 5s",
            )),
        ),
    ]
}

/// A StatefulSet's claim, its pod, and a dynamically provisioned `pvc-<uid>`
/// PV, with realistic label lengths.
fn pvc(i: usize) -> Arc<VolumeRow> {
    let capacity = 10_737_418_240 + (i as u64) * 4096;
    let used = capacity / 3 + i as u64;
    let pv = format!(
        "pvc-{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        i.wrapping_mul(2_654_435_761) % (1 << 32),
        i % 65_536,
        i % 4096,
        (i * 7) % 4096,
        i * 1_000_003
    );
    let reading = Reading {
        method: Some(Method::Statfs),
        stats: Some(Ok(FsUsage {
            capacity_bytes: capacity,
            available_bytes: capacity - used,
            used_bytes: used,
            inodes: 6_553_600,
            inodes_free: 6_500_000,
            inodes_used: 53_600,
        })),
    };
    Arc::new(
        VolumeRow::new(
            &format!("team-{}", i % 50),
            &format!("data-postgres-{i}"),
            &format!("postgres-{i}"),
            reading,
        )
        .with_pv(&pv, "ebs.csi.aws.com", VolumeMode::Filesystem),
    )
}

/// One measured pod with a limit, an emptyDir with a sizeLimit and a
/// configMap, and one pod whose rootfs the runtime does not report.
pub fn golden_pods() -> PodTable {
    let at = taken_at();
    use crate::model::PodVolumes;
    use crate::model::pod::{
        ContainerRow, EphemeralVolumeRow, Failure, PodRow, PodStorageSpec, Usage, VolumeKind,
    };
    let usage = |bytes, inodes| Usage {
        bytes,
        inodes,
        time: at,
    };
    let pod = |name: &str, rootfs: Result<Usage, Failure>| PodRow {
        pod: Arc::new(PodVolumes {
            namespace: "shop".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            running: true,
            claims: vec![],
            storage: PodStorageSpec {
                limit: Some(2 << 30),
                container_limits: [("app".into(), 2 << 30)].into(),
                ..PodStorageSpec::default()
            },
        }),
        containers: vec![ContainerRow {
            name: "app".into(),
            rootfs,
            logs: Some(Ok(usage(1_052_672, 3))),
        }],
        containers_pending: false,
        containers_error: None,
        volumes: vec![
            EphemeralVolumeRow {
                name: "cache".into(),
                kind: VolumeKind::EmptyDir,
                size_limit: Some(1 << 30),
                usage: Some(Ok(usage(524_288_000, 1_001))),
            },
            EphemeralVolumeRow {
                name: "config".into(),
                kind: VolumeKind::ConfigMap,
                size_limit: None,
                usage: Some(Ok(usage(12_288, 5))),
            },
        ],
        pod_logs: Some(Ok(usage(0, 0))),
        etc_hosts: Some(Ok(usage(4_096, 1))),
    };
    PodTable {
        rows: vec![
            Arc::new(pod("web-0", Ok(usage(73_728, 12)))),
            Arc::new(pod(
                "web-1",
                Err(Failure::new(
                    Reason::NoCriStats,
                    "the runtime reports no writable layer usage",
                )),
            )),
        ],
        source: SourceStatus {
            duration: None,
            ..status(SourceId::Kubernetes)
        },
    }
}

/// A busy node as the series table of docs/performance.md counts it:
/// `pods` pods of two containers (each with a limit, a rootfs and logs),
/// two emptyDirs and a configMap each, and `pvcs` CSI PVCs, everything
/// measured.
pub fn busy_node(pods: usize, pvcs: usize) -> Snapshot {
    use crate::model::PodVolumes;
    use crate::model::pod::{
        ContainerRow, EphemeralVolumeRow, PodRow, PodStorageSpec, Usage, VolumeKind,
    };
    let at = taken_at();
    let usage = |bytes, inodes| {
        Ok(Usage {
            bytes,
            inodes,
            time: at,
        })
    };
    let container = |name: &str| ContainerRow {
        name: name.into(),
        rootfs: usage(73_728, 12),
        logs: Some(usage(1_052_672, 3)),
    };
    let volume = |name: &str, kind| EphemeralVolumeRow {
        name: name.into(),
        kind,
        size_limit: Some(1 << 30),
        usage: Some(usage(524_288_000, 1_001)),
    };
    let rows = (0..pods)
        .map(|i| {
            Arc::new(PodRow {
                pod: Arc::new(PodVolumes {
                    namespace: format!("team-{}", i % 10),
                    name: format!("api-7d9c8b6f5-{i:05}"),
                    uid: format!("6f1c0a52-1d3e-4b7a-9c1e-{i:012}"),
                    running: true,
                    claims: vec![],
                    storage: PodStorageSpec {
                        limit: Some(4 << 30),
                        container_limits: [("app".into(), 2 << 30), ("sidecar".into(), 2 << 30)]
                            .into(),
                        ..PodStorageSpec::default()
                    },
                }),
                containers: vec![container("app"), container("sidecar")],
                containers_pending: false,
                containers_error: None,
                volumes: vec![
                    volume("cache", VolumeKind::EmptyDir),
                    volume("tmp", VolumeKind::EmptyDir),
                    volume("config", VolumeKind::ConfigMap),
                ],
                pod_logs: Some(usage(0, 0)),
                etc_hosts: Some(usage(4_096, 1)),
            })
        })
        .collect();
    let mut snapshot = node_with_pvcs(pvcs);
    snapshot.pods = Some(Arc::new(PodTable {
        rows,
        source: SourceStatus {
            duration: None,
            ..status(SourceId::Kubernetes)
        },
    }));
    snapshot
}
