//! Sources do the I/O: the container runtime over CRI, the Kubernetes API,
//! statfs of filesystems, and /proc. Each is called by a sampler, off the
//! scrape path, under a timeout; what they return are [`crate::model`] types.
//! Every path on the host is resolved inside the host root first
//! ([`hostroot`]).

pub mod block;
pub mod configz;
pub mod cri;
pub mod fleet;
pub mod hostroot;
pub mod io;
pub mod kube;
pub mod kubelet_client;
pub mod kubelet_config;
pub mod kubelet_summary;
pub mod mounts;
pub mod nodes;
pub mod pod_spec;
pub mod procfs;
pub mod seams;
pub mod shard;
pub mod statfs;
pub mod walk;

pub use hostroot::{HostPathError, HostRoot};
