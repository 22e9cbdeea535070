//! What kubelet computes, reproduced: quantities, eviction thresholds, the
//! image GC trigger, and the configuration file they come from. Pure code,
//! no I/O but reading the configuration file.

pub mod config;
pub mod duration;
pub mod eviction;
pub mod image_gc;
pub mod quantity;

/// kubelet converts its uint64 byte and inode counts with `int64()`; no real
/// filesystem reaches 2^63, so saturating only guards against nonsense.
pub fn int64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
