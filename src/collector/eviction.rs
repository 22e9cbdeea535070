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
use crate::kubelet::eviction::{Kind, Signal};
use crate::kubelet::int64;
use crate::model::Snapshot;
use crate::model::SourceId;

pub static SIGNAL_AVAILABLE: Desc = Desc::gauge(
    "kubedf_eviction_signal_available",
    "What an eviction signal observes as available, in the signal's unit (bytes, inodes or PIDs), as kubelet's eviction manager observes it.",
    None,
    &["signal"],
);
pub static SIGNAL_CAPACITY: Desc = Desc::gauge(
    "kubedf_eviction_signal_capacity",
    "Capacity behind an eviction signal, in the signal's unit; percentage thresholds are taken of it.",
    None,
    &["signal"],
);
pub static THRESHOLD: Desc = Desc::gauge(
    "kubedf_eviction_threshold",
    "Eviction threshold in the signal's unit: kubelet evicts (hard) or starts the grace period (soft) when available falls below it. Signals without a threshold have no series.",
    None,
    &["signal", "kind"],
);

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
        let layout = snapshot.fs_layout();
        let eviction = &snapshot.kubelet.eviction;
        let mut missing: Vec<String> = Vec::new();
        let mut observed = Vec::with_capacity(Signal::ALL.len());
        for signal in Signal::ALL {
            match observe(snapshot, signal) {
                Ok((available, capacity)) => observed.push((signal, available, capacity)),
                Err(e) => {
                    if !missing.contains(&e) {
                        missing.push(e);
                    }
                }
            }
        }
        // Family by family, as declared.
        for &(signal, available, _) in &observed {
            out.add(&SIGNAL_AVAILABLE, [signal.name()], available);
        }
        for &(signal, _, capacity) in &observed {
            out.add(&SIGNAL_CAPACITY, [signal.name()], capacity);
        }
        for &(signal, _, capacity) in &observed {
            for kind in [Kind::Hard, Kind::Soft] {
                if let Some(threshold) = eviction.threshold(kind, signal, layout) {
                    out.add(
                        &THRESHOLD,
                        [signal.name(), kind.name()],
                        threshold.resolve(capacity),
                    );
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
