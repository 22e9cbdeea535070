//! The pod half of kubelet's disk statistics: each running pod's local
//! ephemeral storage (container writable layers and logs, emptyDir/configMap/
//! gitRepo volumes, pod log files, etc-hosts) and the limits kubelet's
//! eviction manager enforces on it.
//!
//! - [`crate::sources::pod_spec`]: what a pod's spec says (pure), read by
//!   the Kubernetes source as each pod is decoded; its types and the table
//!   the sampler publishes, with kubelet's sum, are in [`crate::model::pod`].
//! - [`sampler`]: the per-pod refresh loop (I/O: CRI, du-method walks).

pub mod sampler;

#[cfg(test)]
mod tests;
