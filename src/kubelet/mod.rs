//! What kubelet computes, reproduced: quantities, eviction thresholds, the
//! image GC trigger, and the configuration they come from, merged from the
//! command line, the `--config` file and the drop-ins as kubelet merges them.
//! Pure code, no I/O but reading `--kubelet.config`.

pub mod config;
pub mod duration;
pub mod effective;
pub mod eviction;
pub mod flags;
pub mod image_gc;
pub mod quantity;

/// kubelet converts its uint64 byte and inode counts with `int64()`; no real
/// filesystem reaches 2^63, so saturating only guards against nonsense.
pub fn int64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
