//! The model: the plain types that sources and samplers produce and that
//! collectors, `kubedf df` and the server read. It depends on no other
//! module of kubedf but [`crate::kubelet`]'s settings, so sources and samplers
//! depend on it and never on each other.
//!
//! - [`source`]: the sources kubedf reads and how each one fared.
//! - [`failure`]: why a measurement has no figure: one reason vocabulary
//!   for both error families.
//! - [`fs`]: a filesystem's figures, computed as kubelet does.
//! - [`node`]: the container runtime and process limits.
//! - [`pod`]: the pod half: a pod's storage spec and the per-pod table.
//! - [`volume`]: PVCs, PVs, measurement plans' vocabulary and the volume table.
//! - [`cluster`]: cluster mode's table: per node the figures of its
//!   kubelet's summary, the GC and eviction thresholds of its `/configz`,
//!   and how its polls and reads fare.
//! - [`web`]: how the loads of `--web.config.file` went.
//! - [`snapshot`]: what scrapes read: one part per writer, published on a
//!   [`Board`].

pub mod cluster;
pub mod failure;
pub mod fs;
pub mod node;
pub mod pod;
pub mod snapshot;
pub mod source;
pub mod volume;
pub mod web;

pub use failure::{Change, Failure, Reason};
pub use fs::{Filesystem, FsUsage};
pub use node::{Rlimit, Runtime, RuntimeVersion};
pub use snapshot::{Board, NodeSample, Part, PartVersions, PartsKey, Snapshot};
pub use source::{Sampled, SourceId, SourceStatus};
pub use volume::{
    ClaimRef, Method, PodVolumes, PvInfo, PvSource, Reading, VolumeMode, VolumeRow, VolumeTable,
};
pub use web::WebConfigStatus;
