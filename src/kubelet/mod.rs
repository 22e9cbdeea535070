//! What kubelet computes, reproduced: quantities, eviction thresholds, the
//! image GC trigger, and the configuration file they come from. Pure code,
//! no I/O but reading the configuration file.

pub mod config;
pub mod eviction;
pub mod image_gc;
pub mod quantity;
