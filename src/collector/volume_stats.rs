//! volume_stats: `kubelet_volume_stats_*` for every PVC of the node's running
//! pods, under kubelet's names, HELP and labels (so the kubernetes-mixin
//! dashboards and alerts work unchanged), plus kubedf's own facts about each
//! volume in separate families.
//!
//! Source: the volume sampler's table (Kubernetes API for pods, PVCs and PVs;
//! statfs, du-method walks and block device sizes for the figures).
//!
//! Families: `kubelet_volume_stats_capacity_bytes`, `_available_bytes`,
//! `_used_bytes`, `_inodes`, `_inodes_free`, `_inodes_used`; the same six as
//! `kubedf_volume_stats_*` for the PVCs that `--volume-stats.kubelet-names`
//! leaves out of kubelet's names; `kubedf_volume_info`,
//! `kubedf_volume_stats_error`.

use super::{Collector, Desc, Incomplete, Sink};
use crate::exposition::{LabelSetId, LabelSets};
use crate::model::FsUsage;
use crate::model::SourceId;
use crate::model::volume::HOST_PATH_DRIVER;
use crate::model::{Part, Snapshot};
use crate::model::{Reading, VolumeRow};

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

/// Which PVCs get kubelet's `kubelet_volume_stats_*` names
/// (`--volume-stats.kubelet-names`); the others keep their figures as
/// `kubedf_volume_stats_*`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum KubeletNames {
    /// Every PVC: kubedf reads as a kubelet that also reports hostPath PVs.
    #[default]
    All,
    /// Only the PVCs kubelet does not report: those bound to hostPath PVs.
    /// kubelet reports every other kind (CSI, in-tree, and `local` PVs, which
    /// it statfs's even when they are plain directories), so a Prometheus
    /// that scrapes both sees each PVC once under kubelet's names.
    Uncovered,
    /// None: every PVC as `kubedf_volume_stats_*`.
    None,
}

impl KubeletNames {
    /// Whether `row`'s figures go under kubelet's names.
    fn named_as_kubelet(self, row: &VolumeRow) -> bool {
        match self {
            KubeletNames::All => true,
            KubeletNames::Uncovered => row.driver.as_deref() == Some(HOST_PATH_DRIVER),
            KubeletNames::None => false,
        }
    }
}

/// kubedf's own names for the figures of PVCs that do not get kubelet's.
/// Same labels, kubelet's unit-less style, so a query can `or` the two.
macro_rules! own_desc {
    ($name:ident, $family:literal, $help:literal) => {
        pub static $name: Desc = Desc::gauge(
            concat!("kubedf_volume_stats_", $family),
            concat!(
                $help,
                " (kubelet_volume_stats_",
                $family,
                " for the PVCs that --volume-stats.kubelet-names gives kubelet's names)."
            ),
            None,
            LABELS,
        );
    };
}
own_desc!(
    OWN_CAPACITY,
    "capacity_bytes",
    "Capacity in bytes of the volume"
);
own_desc!(
    OWN_AVAILABLE,
    "available_bytes",
    "Number of available bytes in the volume"
);
own_desc!(OWN_USED, "used_bytes", "Number of used bytes in the volume");
own_desc!(
    OWN_INODES,
    "inodes",
    "Maximum number of inodes in the volume"
);
own_desc!(
    OWN_INODES_FREE,
    "inodes_free",
    "Number of free inodes in the volume"
);
own_desc!(
    OWN_INODES_USED,
    "inodes_used",
    "Number of used inodes in the volume"
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

static DESCS: [&Desc; 14] = [
    &CAPACITY,
    &AVAILABLE,
    &USED,
    &INODES,
    &INODES_FREE,
    &INODES_USED,
    &OWN_CAPACITY,
    &OWN_AVAILABLE,
    &OWN_USED,
    &OWN_INODES,
    &OWN_INODES_FREE,
    &OWN_INODES_USED,
    &INFO,
    &ERROR,
];

/// Reads one figure of a volume's usage.
type Figure = fn(&FsUsage) -> u64;

#[derive(Debug, Default)]
pub struct VolumeStatsCollector {
    pub kubelet_names: KubeletNames,
}

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

    fn reads(&self) -> Option<&'static [Part]> {
        Some(&[Part::Volumes])
    }

    fn collect(&self, snapshot: &Snapshot, out: &mut Sink) -> Result<(), Incomplete> {
        let Some(table) = &snapshot.volumes else {
            return Err(Incomplete("no volume table yet".into()));
        };
        // Each row's reading is read once, so all its families agree.
        let readings: Vec<(&VolumeRow, Reading)> =
            table.rows.iter().map(|r| (&**r, r.reading())).collect();
        // Family by family, so each family's samples go in one run.
        // The labels of a measured row are escaped and written once, for its
        // six families.
        let mut labels = LabelSets::new(LABELS, readings.len());
        let measured: Vec<(&VolumeRow, FsUsage, LabelSetId)> = readings
            .iter()
            .filter_map(|(r, reading)| match &reading.stats {
                Some(Ok(u)) => Some((
                    *r,
                    *u,
                    labels.push([r.namespace.as_str(), r.claim.as_str()]),
                )),
                _ => None,
            })
            .collect();
        // (kubelet's name, kubedf's name, figure).
        let figures: [(&'static Desc, &'static Desc, Figure); 6] = [
            (&CAPACITY, &OWN_CAPACITY, |u| u.capacity_bytes),
            (&AVAILABLE, &OWN_AVAILABLE, |u| u.available_bytes),
            (&USED, &OWN_USED, |u| u.used_bytes),
            (&INODES, &OWN_INODES, |u| u.inodes),
            (&INODES_FREE, &OWN_INODES_FREE, |u| u.inodes_free),
            (&INODES_USED, &OWN_INODES_USED, |u| u.inodes_used),
        ];
        // kubelet's six families, then kubedf's six, each in one run.
        let passes: &[bool] = match self.kubelet_names {
            KubeletNames::All => &[true],
            KubeletNames::Uncovered => &[true, false],
            KubeletNames::None => &[false],
        };
        for &as_kubelet in passes {
            for (kubelet, own, figure) in figures {
                let desc = if as_kubelet { kubelet } else { own };
                for (row, usage, id) in &measured {
                    if self.kubelet_names.named_as_kubelet(row) == as_kubelet {
                        out.add_with(desc, &labels, *id, figure(usage));
                    }
                }
            }
        }
        for (row, reading) in &readings {
            if let (Some(pv), Some(driver), Some(mode), Some(method)) =
                (&row.pv, &row.driver, row.mode, reading.method)
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
        }
        let mut failed = 0usize;
        for (row, reading) in &readings {
            if let Some(Err(e)) = &reading.stats {
                failed += 1;
                out.add(
                    &ERROR,
                    [row.namespace.as_str(), row.claim.as_str(), e.reason.name()],
                    1i64,
                );
            }
        }
        match (&table.source.error, failed) {
            (Some(e), _) => Err(Incomplete(e.clone())),
            (None, 0) => Ok(()),
            (None, n) => Err(Incomplete(format!("{n} volume(s) cannot be measured"))),
        }
    }
}
