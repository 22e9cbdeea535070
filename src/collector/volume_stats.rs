//! volume_stats: `kubelet_volume_stats_*` for every PVC of the node's running
//! pods, under kubelet's names, HELP and labels (so the kubernetes-mixin
//! dashboards and alerts work unchanged), plus kubedf's own facts about each
//! volume in separate families.
//!
//! Source: the volume sampler's table (Kubernetes API for pods, PVCs and PVs;
//! statfs, du-method walks and block device sizes for the figures).
//!
//! Families: `kubelet_volume_stats_capacity_bytes`, `_available_bytes`,
//! `_used_bytes`, `_inodes`, `_inodes_free`, `_inodes_used`;
//! `kubedf_volume_info`, `kubedf_volume_stats_error`.

use super::{Collector, Desc, Incomplete, Sink};
use crate::snapshot::Snapshot;
use crate::sources::SourceId;

const LABELS: &[&str] = &["namespace", "persistentvolumeclaim"];

// kubelet's descriptors, HELP text verbatim. kubelet exposes no UNIT.
pub static CAPACITY: Desc = Desc::gauge(
    "kubelet_volume_stats_capacity_bytes",
    "Capacity in bytes of the volume",
    None,
    LABELS,
);
pub static AVAILABLE: Desc = Desc::gauge(
    "kubelet_volume_stats_available_bytes",
    "Number of available bytes in the volume",
    None,
    LABELS,
);
pub static USED: Desc = Desc::gauge(
    "kubelet_volume_stats_used_bytes",
    "Number of used bytes in the volume",
    None,
    LABELS,
);
pub static INODES: Desc = Desc::gauge(
    "kubelet_volume_stats_inodes",
    "Maximum number of inodes in the volume",
    None,
    LABELS,
);
pub static INODES_FREE: Desc = Desc::gauge(
    "kubelet_volume_stats_inodes_free",
    "Number of free inodes in the volume",
    None,
    LABELS,
);
pub static INODES_USED: Desc = Desc::gauge(
    "kubelet_volume_stats_inodes_used",
    "Number of used inodes in the volume",
    None,
    LABELS,
);
pub static INFO: Desc = Desc::gauge(
    "kubedf_volume_info",
    "A PVC of a running pod on this node and how kubedf measures it (method statfs, walk or block); always 1.",
    None,
    &[
        "namespace",
        "persistentvolumeclaim",
        "persistentvolume",
        "pod",
        "driver",
        "volume_mode",
        "method",
    ],
);
pub static ERROR: Desc = Desc::gauge(
    "kubedf_volume_stats_error",
    "A PVC kubedf cannot measure now, and why; its kubelet_volume_stats series are left out meanwhile. Always 1.",
    None,
    &["namespace", "persistentvolumeclaim", "reason"],
);

static DESCS: [&Desc; 8] = [
    &CAPACITY,
    &AVAILABLE,
    &USED,
    &INODES,
    &INODES_FREE,
    &INODES_USED,
    &INFO,
    &ERROR,
];

#[derive(Debug)]
pub struct VolumeStatsCollector;

impl Collector for VolumeStatsCollector {
    fn name(&self) -> &'static str {
        "volume_stats"
    }

    fn description(&self) -> &'static str {
        "kubelet_volume_stats_* for every PVC of the node's running pods, hostPath-backed PVs included"
    }

    fn descs(&self) -> &'static [&'static Desc] {
        &DESCS
    }

    fn sources(&self) -> &'static [SourceId] {
        &[SourceId::Kubernetes]
    }

    fn collect<'s>(&self, snapshot: &'s Snapshot, out: &mut Sink<'s>) -> Result<(), Incomplete> {
        let Some(table) = &snapshot.volumes else {
            return Err(Incomplete("no volume table yet".into()));
        };
        let mut failed = 0usize;
        for row in &table.rows {
            let key = [row.namespace.as_str(), row.claim.as_str()];
            if let (Some(pv), Some(driver), Some(mode), Some(method)) =
                (&row.pv, &row.driver, row.mode, row.method)
            {
                out.add(
                    &INFO,
                    [
                        row.namespace.as_str(),
                        row.claim.as_str(),
                        pv.as_str(),
                        row.pod.as_str(),
                        driver.as_str(),
                        mode.name(),
                        method.name(),
                    ],
                    1i64,
                );
            }
            match &row.stats {
                Some(Ok(u)) => {
                    out.add(&CAPACITY, key, u.capacity_bytes);
                    out.add(&AVAILABLE, key, u.available_bytes);
                    out.add(&USED, key, u.used_bytes);
                    out.add(&INODES, key, u.inodes);
                    out.add(&INODES_FREE, key, u.inodes_free);
                    out.add(&INODES_USED, key, u.inodes_used);
                }
                Some(Err(e)) => {
                    failed += 1;
                    out.add(
                        &ERROR,
                        [row.namespace.as_str(), row.claim.as_str(), e.reason.name()],
                        1i64,
                    );
                }
                None => {}
            }
        }
        match (&table.source.error, failed) {
            (Some(e), _) => Err(Incomplete(e.clone())),
            (None, 0) => Ok(()),
            (None, n) => Err(Incomplete(format!("{n} volume(s) cannot be measured"))),
        }
    }
}
