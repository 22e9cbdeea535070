//! kubelet's image garbage collection trigger: the integer usage percentage
//! of the image filesystem, and how much GC must free to get back under the
//! low threshold (`ImageGCManager.GarbageCollect`).

use thiserror::Error;

/// kubelet's defaults for `imageGCHighThresholdPercent` / `imageGCLowThresholdPercent`.
pub const DEFAULT_HIGH_THRESHOLD_PERCENT: i32 = 85;
pub const DEFAULT_LOW_THRESHOLD_PERCENT: i32 = 80;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageGcPolicy {
    pub high_threshold_percent: i32,
    pub low_threshold_percent: i32,
}

impl Default for ImageGcPolicy {
    fn default() -> Self {
        ImageGcPolicy {
            high_threshold_percent: DEFAULT_HIGH_THRESHOLD_PERCENT,
            low_threshold_percent: DEFAULT_LOW_THRESHOLD_PERCENT,
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ImageGcError {
    #[error("image filesystem reports a capacity of 0 bytes; usage is undefined")]
    ZeroCapacity,
}

/// Where the image filesystem stands relative to image GC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageGcStatus {
    /// `100 - int(available*100/capacity)`, as kubelet computes it.
    pub usage_percent: i64,
    /// What GC would have to free now: kubelet's amountToFree when usage is
    /// at or over the high threshold, else 0.
    pub bytes_to_free: i64,
    /// How many more bytes can be used before usage reaches the high
    /// threshold (0 when it already has).
    pub bytes_until_gc: i64,
}

impl ImageGcPolicy {
    pub fn evaluate(&self, capacity: i64, available: i64) -> Result<ImageGcStatus, ImageGcError> {
        if capacity <= 0 {
            return Err(ImageGcError::ZeroCapacity);
        }
        // kubelet clamps available to capacity and works in int64; i128 keeps
        // `available*100` from overflowing where Go's int64 would not either.
        let capacity = i128::from(capacity);
        let available = i128::from(available).min(capacity);
        let usage_percent = 100 - available * 100 / capacity;
        let high = i128::from(self.high_threshold_percent);
        let bytes_to_free = if usage_percent >= high {
            capacity * i128::from(100 - self.low_threshold_percent) / 100 - available
        } else {
            0
        };
        // Usage reaches `high` once floor(available*100/capacity) <= 100-high,
        // i.e. once available < (101-high)*capacity/100. The largest such
        // available is ceil((101-high)*capacity/100) - 1.
        let trigger = ((101 - high) * capacity + 99) / 100 - 1;
        let bytes_until_gc = (available - trigger).max(0);
        let narrow = |v: i128| i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX });
        Ok(ImageGcStatus {
            usage_percent: narrow(usage_percent),
            bytes_to_free: narrow(bytes_to_free),
            bytes_until_gc: narrow(bytes_until_gc),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_of_a_real_node() {
        // From a node's /stats/summary: imageFs capacity and available.
        let status = ImageGcPolicy::default()
            .evaluate(21_462_233_088, 17_310_752_768)
            .unwrap();
        assert_eq!(status.usage_percent, 20);
        assert_eq!(status.bytes_to_free, 0);
    }

    #[test]
    fn amount_to_free_matches_a_kubelet_log_line() {
        // kubelet logged: usage=93 highThreshold=85 amountToFree=69382155468
        // lowThreshold=80. capacity*20/100 - available = 69382155468 with
        // usage 93 holds for this capacity/available pair.
        let status = ImageGcPolicy::default()
            .evaluate(550_000_000_000, 40_617_844_532)
            .unwrap();
        assert_eq!(status.usage_percent, 93);
        assert_eq!(status.bytes_to_free, 69_382_155_468);
        assert_eq!(status.bytes_until_gc, 0);
    }

    #[test]
    fn available_is_clamped_to_capacity() {
        let status = ImageGcPolicy::default().evaluate(1000, 5000).unwrap();
        assert_eq!(status.usage_percent, 0);
    }

    #[test]
    fn zero_capacity_is_an_error_not_a_division() {
        assert_eq!(
            ImageGcPolicy::default().evaluate(0, 0),
            Err(ImageGcError::ZeroCapacity)
        );
    }

    #[test]
    fn bytes_until_gc_is_exactly_the_step_to_the_high_threshold() {
        let policy = ImageGcPolicy::default();
        for (capacity, available) in [
            (1000, 900),
            (21_462_233_088, 17_310_752_768),
            (997, 160),
            (100, 16),
        ] {
            let status = policy.evaluate(capacity, available).unwrap();
            let until = status.bytes_until_gc;
            assert!(until > 0, "{capacity}/{available}");
            let at = policy.evaluate(capacity, available - until).unwrap();
            assert!(
                at.usage_percent >= 85,
                "{capacity}/{available}: usage at trigger {}",
                at.usage_percent
            );
            let before = policy.evaluate(capacity, available - until + 1).unwrap();
            assert!(
                before.usage_percent < 85,
                "{capacity}/{available}: one byte earlier {}",
                before.usage_percent
            );
        }
    }
}
