//! PVC volumes: the pods' claims, the PVs behind them, and the table of rows the volume sampler publishes.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use super::failure::Failure;
use super::fs::FsUsage;
use super::source::SourceStatus;

/// A PVC used by a running pod on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimRef {
    pub namespace: String,
    pub claim: String,
    pub pod: String,
    pub pod_uid: String,
}

/// One pod as the PVC logic needs it: only the fields kubedf uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodVolumes {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub running: bool,
    /// Claim names of the pod's PVC-backed volumes, in spec order.
    pub claims: Vec<String>,
    /// What the pod half needs: local ephemeral volumes and limits.
    pub storage: super::pod::PodStorageSpec,
}

/// The `driver` label of hostPath-backed PVs, the ones kubelet reports no
/// volume stats for.
pub const HOST_PATH_DRIVER: &str = "kubernetes.io/host-path";

/// Where a PV's data comes from, as far as measuring it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PvSource {
    Csi {
        driver: String,
    },
    HostPath {
        path: String,
    },
    Local {
        path: String,
    },
    /// Any other in-tree plugin (nfs, iscsi, rbd, ...), by its spec field name.
    InTree {
        plugin: String,
    },
}

impl PvSource {
    /// The `driver` label: the CSI driver, or `kubernetes.io/<plugin>`.
    pub fn driver(&self) -> String {
        match self {
            PvSource::Csi { driver } => driver.clone(),
            PvSource::HostPath { .. } => HOST_PATH_DRIVER.into(),
            PvSource::Local { .. } => "kubernetes.io/local-volume".into(),
            PvSource::InTree { plugin } => format!("kubernetes.io/{plugin}"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VolumeMode {
    Filesystem,
    Block,
}

impl VolumeMode {
    pub fn name(self) -> &'static str {
        match self {
            VolumeMode::Filesystem => "Filesystem",
            VolumeMode::Block => "Block",
        }
    }
}

/// The parts of a PV kubedf uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PvInfo {
    pub name: String,
    pub source: PvSource,
    pub mode: VolumeMode,
    /// `spec.capacity.storage`, when set and parseable.
    pub capacity: Option<i64>,
}

/// How a volume is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Method {
    /// statfs of a mounted filesystem, with kubelet's formulas.
    Statfs,
    /// A du-method walk for used bytes and inodes, statfs for the rest.
    Walk,
    /// The size of a block device.
    Block,
    /// A `local` PV: statfs when its path is a mount point, else a walk.
    /// Decided when measuring, since it depends on the mount table.
    LocalPath,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Statfs => "statfs",
            Method::Walk => "walk",
            Method::Block => "block",
            Method::LocalPath => "local",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A volume's latest figures and how they were taken.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reading {
    /// How it was last measured (statfs, walk or block).
    pub method: Option<Method>,
    /// `None` until the first measurement finishes.
    pub stats: Option<Result<FsUsage, Failure>>,
}

/// One PVC of the node. Who it is (the labels) is fixed for the row's life;
/// a row whose pod or PV changes is replaced. Its latest [`Reading`] is a
/// cell that only the volume sampler writes, so a measurement updates its
/// own row and nothing else is copied or republished.
#[derive(Debug)]
pub struct VolumeRow {
    pub namespace: String,
    pub claim: String,
    pub pod: String,
    pub pv: Option<String>,
    pub driver: Option<String>,
    pub mode: Option<VolumeMode>,
    reading: Mutex<Reading>,
}

impl VolumeRow {
    pub fn new(namespace: &str, claim: &str, pod: &str, reading: Reading) -> VolumeRow {
        VolumeRow {
            namespace: namespace.to_owned(),
            claim: claim.to_owned(),
            pod: pod.to_owned(),
            pv: None,
            driver: None,
            mode: None,
            reading: Mutex::new(reading),
        }
    }

    /// The row of a PVC bound to a known PV.
    pub fn with_pv(mut self, pv: &str, driver: &str, mode: VolumeMode) -> VolumeRow {
        self.pv = Some(pv.to_owned());
        self.driver = Some(driver.to_owned());
        self.mode = Some(mode);
        self
    }

    /// The latest reading (a copy: figures are plain numbers, errors rare).
    pub fn reading(&self) -> Reading {
        self.reading
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the reading; returns whether it changed.
    pub fn set_reading(&self, reading: Reading) -> bool {
        let mut cell = self.reading.lock().unwrap_or_else(PoisonError::into_inner);
        if *cell == reading {
            return false;
        }
        *cell = reading;
        true
    }
}

/// What the volume sampler last published: the PVCs of the node's running
/// pods, sorted by (namespace, claim), and the Kubernetes API as a source.
#[derive(Debug)]
pub struct VolumeTable {
    pub rows: Vec<Arc<VolumeRow>>,
    pub source: SourceStatus,
}

impl VolumeTable {
    /// A table of the given rows, sorted as scrapes list them.
    pub fn new(mut rows: Vec<Arc<VolumeRow>>, source: SourceStatus) -> VolumeTable {
        rows.sort_by(|a, b| (&a.namespace, &a.claim).cmp(&(&b.namespace, &b.claim)));
        VolumeTable { rows, source }
    }
}
