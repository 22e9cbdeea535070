//! Sampling: everything that reads the sources in the background and
//! publishes what it saw on the board, so that a scrape never waits on a
//! filesystem.
//!
//! - [`node`]: the node's own sources (runtime, imagefs, nodefs, /proc),
//!   read every `--sample-interval`, concurrently, bounded.
//! - [`scheduler`]: the one timer queue for everything measured on its own
//!   schedule (jitter, one call in flight per key, replans, backoff).
//! - [`volume`]: PVC volume stats: plan, schedule and measure each PVC of the
//!   node's running pods.
//! - [`pods`]: the pod half, the parts kubelet counts as local ephemeral
//!   storage, with the volume half's shape (plan, loop, I/O).
//! - [`kubelet_watch`]: kubelet's configuration in force, read again every
//!   `--kubelet.config-refresh-interval` and when kubelet restarts.
//!
//! The loops take their pod watch, PVC/PV API, runtime and I/O as seams
//! (`crate::sources::seams`), so they are unit-tested on fakes with tokio's
//! paused clock.

pub mod kubelet_watch;
pub mod node;
pub mod pods;
pub mod scheduler;
pub mod volume;
