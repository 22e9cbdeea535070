//! The collector trait, and the family descriptors collectors declare (defined
//! with the formats in [`crate::exposition`]). A collector is a pure function of a
//! [`Snapshot`]: it emits samples for the families it
//! declared and says whether everything it needed was there.

pub mod cluster;
pub mod eviction;
pub mod filter;
pub mod image_gc;
pub mod imagefs;
pub mod nodefs;
pub mod pod_storage;
pub mod rlimit;
pub mod volume_stats;

use std::fmt;

// The family descriptors live with the formats that render them; collectors
// name them from here.
pub use crate::exposition::{Desc, MetricKind, Sink, Stability, Value};
use crate::model::SourceId;
use crate::model::{Part, Snapshot};

/// Why a collector could not report everything it covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incomplete(pub String);

impl fmt::Display for Incomplete {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for Incomplete {
    fn from(s: String) -> Self {
        Incomplete(s)
    }
}

/// One collector. Implementations live one per file in this module.
pub trait Collector: Send + Sync + fmt::Debug {
    /// The name used in `--collector.NAME` and `kubedf_scrape_collector_*{collector}`.
    fn name(&self) -> &'static str;
    /// One line for `--help` and the README.
    fn description(&self) -> &'static str;
    /// Every family the collector may emit.
    fn descs(&self) -> &'static [&'static Desc];
    /// The sources the sampler must read for this collector.
    fn sources(&self) -> &'static [SourceId];
    /// The parts of the snapshot [`Collector::collect`] reads, when it reads
    /// nothing else: its text is then kept until one of them changes. `None`
    /// (the default) renders it for every new snapshot.
    fn reads(&self) -> Option<&'static [Part]> {
        None
    }
    /// Writes what the snapshot supports into `out`, family by family in the
    /// order of [`Collector::descs`] (any order is rendered right, but that
    /// one copies nothing twice; see [`Sink`]). Series whose data is missing
    /// are left out, and the collector returns `Err` saying what was missing.
    fn collect(&self, snapshot: &Snapshot, out: &mut Sink) -> Result<(), Incomplete>;
}

/// Emits the six figures of a filesystem under a family set.
pub fn emit_fs_usage(
    out: &mut Sink,
    descs: &FsDescs,
    labels: &[&str],
    usage: &crate::model::FsUsage,
) {
    out.add(descs.capacity, labels.iter().copied(), usage.capacity_bytes);
    out.add(
        descs.available,
        labels.iter().copied(),
        usage.available_bytes,
    );
    out.add(descs.used, labels.iter().copied(), usage.used_bytes);
    out.add(descs.inodes, labels.iter().copied(), usage.inodes);
    out.add(descs.inodes_free, labels.iter().copied(), usage.inodes_free);
    out.add(descs.inodes_used, labels.iter().copied(), usage.inodes_used);
}

/// The six families every filesystem has.
pub struct FsDescs {
    pub capacity: &'static Desc,
    pub available: &'static Desc,
    pub used: &'static Desc,
    pub inodes: &'static Desc,
    pub inodes_free: &'static Desc,
    pub inodes_used: &'static Desc,
}

impl FsDescs {
    pub const fn all(&'static self) -> [&'static Desc; 6] {
        [
            self.capacity,
            self.available,
            self.used,
            self.inodes,
            self.inodes_free,
            self.inodes_used,
        ]
    }
}

/// The settings some collectors take from the command line.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// `--volume-stats.kubelet-names`.
    pub volume_kubelet_names: volume_stats::KubeletNames,
}

/// Every collector kubedf has, in registration order, with default options.
pub fn all() -> Vec<Box<dyn Collector>> {
    all_with(&Options::default())
}

/// Every collector kubedf has, in registration order.
pub fn all_with(options: &Options) -> Vec<Box<dyn Collector>> {
    vec![
        Box::new(imagefs::ImageFsCollector),
        Box::new(nodefs::NodeFsCollector),
        Box::new(rlimit::RlimitCollector),
        Box::new(image_gc::ImageGcCollector),
        Box::new(eviction::EvictionCollector),
        Box::new(volume_stats::VolumeStatsCollector {
            kubelet_names: options.volume_kubelet_names,
        }),
        Box::new(pod_storage::PodStorageCollector),
    ]
}

/// Declares the six families of a filesystem: `<prefix>_capacity_bytes`,
/// `_available_bytes`, `_used_bytes`, `_inodes`, `_inodes_free`, `_inodes_used`.
macro_rules! fs_descs {
    ($name:ident, $prefix:literal, $what:literal, $used_from:literal, $labels:expr) => {
        pub static $name: $crate::collector::FsDescs = $crate::collector::FsDescs {
            capacity: &$crate::collector::Desc::gauge(
                concat!($prefix, "_capacity_bytes"),
                concat!("Capacity in bytes of the ", $what, ", from statfs."),
                Some(crate::exposition::Unit::Bytes),
                $labels,
            ),
            available: &$crate::collector::Desc::gauge(
                concat!($prefix, "_available_bytes"),
                concat!(
                    "Bytes available to unprivileged users on the ",
                    $what,
                    ", from statfs."
                ),
                Some(crate::exposition::Unit::Bytes),
                $labels,
            ),
            used: &$crate::collector::Desc::gauge(
                concat!($prefix, "_used_bytes"),
                concat!("Bytes used on the ", $what, ", ", $used_from, "."),
                Some(crate::exposition::Unit::Bytes),
                $labels,
            ),
            inodes: &$crate::collector::Desc::gauge(
                concat!($prefix, "_inodes"),
                concat!("Number of inodes of the ", $what, ", from statfs."),
                None,
                $labels,
            ),
            inodes_free: &$crate::collector::Desc::gauge(
                concat!($prefix, "_inodes_free"),
                concat!("Number of free inodes of the ", $what, ", from statfs."),
                None,
                $labels,
            ),
            inodes_used: &$crate::collector::Desc::gauge(
                concat!($prefix, "_inodes_used"),
                concat!(
                    "Number of used inodes of the ",
                    $what,
                    ", ",
                    $used_from,
                    "."
                ),
                None,
                $labels,
            ),
        };
    };
}
pub(crate) use fs_descs;
