//! image_gc: how close the image filesystem is to kubelet's image garbage
//! collection, computed with kubelet's integer formula.
//!
//! Source: the image filesystem (CRI + statfs) and `imageGCHighThresholdPercent`
//! / `imageGCLowThresholdPercent` from the kubelet configuration file.
//!
//! Families: `kubedf_image_gc_usage_percent`, `kubedf_image_gc_high_threshold_percent`,
//! `kubedf_image_gc_low_threshold_percent`, `kubedf_image_gc_bytes_to_free`.

use super::{Collector, Desc, Incomplete, Sink};
use crate::kubelet::eviction::Signal;
use crate::kubelet::image_gc::{ImageGcPolicy, ImageGcStatus};
use crate::model::Snapshot;
use crate::model::SourceId;

// Names and help shared with cluster mode's families (which add `node`).
pub const USAGE_PERCENT_NAME: &str = "kubedf_image_gc_usage_percent";
pub const USAGE_PERCENT_HELP: &str = "Image filesystem usage in whole percent, as kubelet computes it to decide on image garbage collection: 100 - int(available*100/capacity).";
pub const HIGH_THRESHOLD_PERCENT_NAME: &str = "kubedf_image_gc_high_threshold_percent";
pub const HIGH_THRESHOLD_PERCENT_HELP: &str = "Image filesystem usage percent at or above which kubelet garbage-collects images (imageGCHighThresholdPercent).";
pub const LOW_THRESHOLD_PERCENT_NAME: &str = "kubedf_image_gc_low_threshold_percent";
pub const LOW_THRESHOLD_PERCENT_HELP: &str = "Image filesystem usage percent that image garbage collection frees down to (imageGCLowThresholdPercent).";
pub const BYTES_TO_FREE_NAME: &str = "kubedf_image_gc_bytes_to_free";
pub const BYTES_TO_FREE_HELP: &str = "Bytes kubelet's image garbage collection would have to free now to reach the low threshold; 0 while usage is under the high threshold.";

pub static USAGE_PERCENT: Desc = Desc::gauge(USAGE_PERCENT_NAME, USAGE_PERCENT_HELP, None, &[]);
pub static HIGH_THRESHOLD_PERCENT: Desc = Desc::gauge(
    HIGH_THRESHOLD_PERCENT_NAME,
    HIGH_THRESHOLD_PERCENT_HELP,
    None,
    &[],
);
pub static LOW_THRESHOLD_PERCENT: Desc = Desc::gauge(
    LOW_THRESHOLD_PERCENT_NAME,
    LOW_THRESHOLD_PERCENT_HELP,
    None,
    &[],
);
pub static BYTES_TO_FREE: Desc = Desc::gauge(
    BYTES_TO_FREE_NAME,
    BYTES_TO_FREE_HELP,
    // The name is kubedf's contract and does not end in _bytes, so no UNIT.
    None,
    &[],
);

static DESCS: [&Desc; 4] = [
    &USAGE_PERCENT,
    &HIGH_THRESHOLD_PERCENT,
    &LOW_THRESHOLD_PERCENT,
    &BYTES_TO_FREE,
];

#[derive(Debug)]
pub struct ImageGcCollector;

impl Collector for ImageGcCollector {
    fn name(&self) -> &'static str {
        "image_gc"
    }

    fn description(&self) -> &'static str {
        "Image filesystem usage against kubelet's image garbage collection thresholds"
    }

    fn descs(&self) -> &'static [&'static Desc] {
        &DESCS
    }

    fn sources(&self) -> &'static [SourceId] {
        &[SourceId::Cri, SourceId::ImageFs]
    }

    fn collect(&self, snapshot: &Snapshot, out: &mut Sink) -> Result<(), Incomplete> {
        let policy = snapshot.kubelet.image_gc;
        let status = gc_status(
            policy,
            super::eviction::observe(snapshot, Signal::ImageFsAvailable),
        );
        // Family by family, as declared; the thresholds even without a
        // filesystem.
        if let Ok(status) = &status {
            out.add(&USAGE_PERCENT, [""; 0], status.usage_percent);
        }
        out.add(
            &HIGH_THRESHOLD_PERCENT,
            [""; 0],
            i64::from(policy.high_threshold_percent),
        );
        out.add(
            &LOW_THRESHOLD_PERCENT,
            [""; 0],
            i64::from(policy.low_threshold_percent),
        );
        let status = status?;
        out.add(&BYTES_TO_FREE, [""; 0], status.bytes_to_free);
        Ok(())
    }
}

/// Where an image filesystem observed as (available, capacity) (the
/// `imagefs.available` signal's observation) stands against `policy`, by
/// kubelet's integer formula; as the DaemonSet and cluster mode report it.
pub fn gc_status(
    policy: ImageGcPolicy,
    image_fs: Result<(i64, i64), String>,
) -> Result<ImageGcStatus, String> {
    let (available, capacity) = image_fs?;
    policy
        .evaluate(capacity, available)
        .map_err(|e| e.to_string())
}
