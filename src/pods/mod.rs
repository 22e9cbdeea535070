//! The pod half of kubelet's disk statistics: each running pod's local
//! ephemeral storage (container writable layers and logs, emptyDir/configMap/
//! gitRepo volumes, pod log files, etc-hosts) and the limits kubelet's
//! eviction manager enforces on it.
//!
//! - [`spec`]: what a pod's spec says (pure).
//! - [`model`]: the table the sampler publishes and kubelet's sum (pure).
//! - [`sampler`]: the per-pod refresh loop (I/O: CRI, du-method walks).

pub mod model;
pub mod sampler;
pub mod spec;
