//! eviction: how far each disk and PID eviction signal is from kubelet's
//! thresholds.
//!
//! Source: nodefs, imagefs/containerfs (CRI + statfs) and /proc, observed as
//! kubelet's eviction manager observes them, and `evictionHard` /
//! `evictionSoft` from the kubelet configuration file, merged with kubelet's
//! defaults by kubelet's rules.
//!
//! Families: `kubedf_eviction_signal_available{signal}`,
//! `kubedf_eviction_signal_capacity{signal}`, `kubedf_eviction_threshold{signal,kind}`.

use super::{Collector, Desc, Incomplete, Sink};
use crate::kubelet::eviction::{FsLayout, Kind, Signal, SignalThresholds};
use crate::kubelet::int64;
use crate::model::Snapshot;
use crate::model::SourceId;

// Names and help shared with cluster mode's families (which add `node`).
pub const SIGNAL_AVAILABLE_NAME: &str = "kubedf_eviction_signal_available";
pub const SIGNAL_AVAILABLE_HELP: &str = "What an eviction signal observes as available, in the signal's unit (bytes, inodes or PIDs), as kubelet's eviction manager observes it.";
pub const SIGNAL_CAPACITY_NAME: &str = "kubedf_eviction_signal_capacity";
pub const SIGNAL_CAPACITY_HELP: &str = "Capacity behind an eviction signal, in the signal's unit; percentage thresholds are taken of it.";
pub const THRESHOLD_NAME: &str = "kubedf_eviction_threshold";
pub const THRESHOLD_HELP: &str = "Eviction threshold in the signal's unit: kubelet evicts (hard) or starts the grace period (soft) when available falls below it. Signals without a threshold have no series.";

pub static SIGNAL_AVAILABLE: Desc = Desc::gauge(
    SIGNAL_AVAILABLE_NAME,
    SIGNAL_AVAILABLE_HELP,
    None,
    &["signal"],
);
pub static SIGNAL_CAPACITY: Desc = Desc::gauge(
    SIGNAL_CAPACITY_NAME,
    SIGNAL_CAPACITY_HELP,
    None,
    &["signal"],
);
pub static THRESHOLD: Desc = Desc::gauge(THRESHOLD_NAME, THRESHOLD_HELP, None, &["signal", "kind"]);

static DESCS: [&Desc; 3] = [&SIGNAL_AVAILABLE, &SIGNAL_CAPACITY, &THRESHOLD];

/// (available, capacity) of a signal, as kubelet's `makeSignalObservations`.
pub fn observe(snapshot: &Snapshot, signal: Signal) -> Result<(i64, i64), String> {
    let fs_pair = |fs: Result<&crate::model::Filesystem, String>, inodes: bool| {
        fs.map(|fs| {
            let u = &fs.usage;
            if inodes {
                (int64(u.inodes_free), int64(u.inodes))
            } else {
                (int64(u.available_bytes), int64(u.capacity_bytes))
            }
        })
    };
    match signal {
        Signal::NodeFsAvailable => fs_pair(snapshot.nodefs(), false),
        Signal::NodeFsInodesFree => fs_pair(snapshot.nodefs(), true),
        Signal::ImageFsAvailable => fs_pair(snapshot.image_fs(), false),
        Signal::ImageFsInodesFree => fs_pair(snapshot.image_fs(), true),
        Signal::ContainerFsAvailable => fs_pair(snapshot.container_fs(), false),
        Signal::ContainerFsInodesFree => fs_pair(snapshot.container_fs(), true),
        Signal::PidAvailable => snapshot.rlimit().map(|r| (r.available(), r.maxpid)),
    }
}

/// One signal as kubelet's eviction manager sees it, with its thresholds
/// resolved against its capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignalRow {
    pub signal: Signal,
    pub available: i64,
    pub capacity: i64,
    /// The hard and the soft threshold in the signal's unit, if it has them.
    pub hard: Option<i64>,
    pub soft: Option<i64>,
}

impl SignalRow {
    pub fn threshold(&self, kind: Kind) -> Option<i64> {
        match kind {
            Kind::Hard => self.hard,
            Kind::Soft => self.soft,
        }
    }
}

/// Every disk and PID signal, as the DaemonSet and cluster mode report it:
/// those `observe` gives as (available, capacity), in [`Signal::ALL`]
/// order, each with the thresholds in force for it on `layout`, resolved
/// against its capacity as kubelet's `GetThresholdQuantity`; and why the
/// others are missing, each reason once.
pub fn signal_rows(
    observe: impl Fn(Signal) -> Result<(i64, i64), String>,
    thresholds: SignalThresholds,
    layout: FsLayout,
) -> (Vec<SignalRow>, Vec<String>) {
    let mut rows = Vec::with_capacity(Signal::ALL.len());
    let mut missing: Vec<String> = Vec::new();
    for signal in Signal::ALL {
        match observe(signal) {
            Ok((available, capacity)) => {
                let resolve = |kind| {
                    thresholds
                        .threshold(kind, signal, layout)
                        .map(|t| t.resolve(capacity))
                };
                rows.push(SignalRow {
                    signal,
                    available,
                    capacity,
                    hard: resolve(Kind::Hard),
                    soft: resolve(Kind::Soft),
                });
            }
            Err(e) => {
                if !missing.contains(&e) {
                    missing.push(e);
                }
            }
        }
    }
    (rows, missing)
}

#[derive(Debug)]
pub struct EvictionCollector;

impl Collector for EvictionCollector {
    fn name(&self) -> &'static str {
        "eviction"
    }

    fn description(&self) -> &'static str {
        "Disk and PID eviction signals against kubelet's hard and soft thresholds"
    }

    fn descs(&self) -> &'static [&'static Desc] {
        &DESCS
    }

    fn sources(&self) -> &'static [SourceId] {
        &[
            SourceId::Cri,
            SourceId::ImageFs,
            SourceId::NodeFs,
            SourceId::Procfs,
        ]
    }

    fn collect(&self, snapshot: &Snapshot, out: &mut Sink) -> Result<(), Incomplete> {
        let (rows, missing) = signal_rows(
            |signal| observe(snapshot, signal),
            SignalThresholds::of(&snapshot.kubelet.eviction),
            snapshot.fs_layout(),
        );
        // Family by family, as declared.
        for row in &rows {
            out.add(&SIGNAL_AVAILABLE, [row.signal.name()], row.available);
        }
        for row in &rows {
            out.add(&SIGNAL_CAPACITY, [row.signal.name()], row.capacity);
        }
        for row in &rows {
            for kind in [Kind::Hard, Kind::Soft] {
                if let Some(threshold) = row.threshold(kind) {
                    out.add(&THRESHOLD, [row.signal.name(), kind.name()], threshold);
                }
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(Incomplete(missing.join("; ")))
        }
    }
}
