//! kubedf: a Prometheus exporter that tells how close a Kubernetes node and
//! its volumes are to running out of disk, inodes and PIDs.
//!
//! Data flows one way:
//!
//! - [`model`]: the plain types everyone shares (filesystem figures, source
//!   statuses, why a measurement has no figure, volume rows, the snapshot
//!   and the board it is published on); it depends on no other module but
//!   [`kubelet`]'s settings.
//! - [`sources`]: the I/O: CRI over a unix socket, the Kubernetes API (each
//!   object decoded into the few fields kubedf uses, including what a pod's
//!   spec says about its ephemeral storage), statfs, /proc, kubelet's
//!   configuration (its `/configz`, its process's command line and files,
//!   `--kubelet.config`). Every blocking call of a measurement is one
//!   guarded call (`sources::guard`: on the lane, under a timeout, one call
//!   in flight per path in the process); the guard and the one walk pool are
//!   built once by the app (`sources::io`) and handed to every sampler.
//! - [`kubelet`]: what kubelet computes, reproduced: quantities, eviction
//!   thresholds and their merging, the image GC trigger, its configuration
//!   merged from flags, the config file and drop-ins as kubelet merges it.
//! - [`sampler`]: the node's sources, read periodically, concurrently, bounded.
//! - [`kubelet_watch`]: kubelet's configuration in force, read again every
//!   minute and when kubelet restarts; the last good one kept, each new one
//!   published and announced to the app.
//! - [`scheduler`]: the one timer queue for everything measured on its own
//!   schedule (jitter, one call in flight per key, replans, backoff).
//! - [`volume`]: PVC volume stats: plan, schedule and measure each PVC of the
//!   node's running pods; the loop takes its pod watch, PVC/PV API and I/O
//!   as seams (`sources::seams`, `volume::measure::Measure`) and is
//!   unit-tested on fakes with tokio's paused clock.
//! - [`pods`]: the pod half: the per-pod refresh loop of the parts kubelet
//!   counts as local ephemeral storage, on the same seams (the runtime and
//!   `pods::sampler::PartIo` for its I/O) and tested the same way.
//! - [`cluster`]: cluster mode's pipeline: the Node watch, every kubelet's
//!   `/stats/summary` polled (bounded, jittered, under a deadline), each
//!   turned into its node's figures at once and published as one table.
//! - [`collector`]: one file per collector, pure functions of a snapshot.
//! - [`registry`]: the enabled collectors and kubedf's own families.
//! - [`exposition`]: the OpenMetrics and Prometheus text formats (collectors
//!   write into them; [`http`] picks one per scrape).
//! - [`heap`]: hands freed heap pages back to the kernel after a transient
//!   peak (the first list of pods, a render at a new size).
//! - [`http`]: the HTTP edge, one room per file: listening and TLS,
//!   connections, auth and rate limit, the routes (`/metrics`, `/healthz`,
//!   a landing page, `/stats/summary`), content negotiation, the exposition
//!   cache, `--web.config.file` and its reload.
//! - [`summary`]: `/stats/summary` in kubelet's Summary API shape.
//! - [`df`]: the `kubedf df` table.
//! - [`yaml`]: configuration files into typed settings, errors naming the field.
//! - [`cli`], [`app`]: the command line and the wiring of the above; the app
//!   builds the samplers again (a generation) when the kubelet settings they
//!   use (root dir, CRI endpoint, `podLogsDir`, `volumeStatsAggPeriod`)
//!   change.

// `deny`, not `forbid`: the one exception is `heap::glibc`, the calls into
// glibc's allocator, allowed where it stands with its SAFETY comment.
#![deny(unsafe_code)]

pub mod app;
pub mod cli;
pub mod cluster;
pub mod collector;
pub mod df;
pub mod exposition;
#[doc(hidden)]
pub mod fixtures;
pub mod heap;
pub mod http;
pub mod kubelet;
pub mod kubelet_watch;
pub mod model;
pub mod pods;
pub mod registry;
pub mod sampler;
pub mod scheduler;
pub mod sources;
pub mod summary;
pub mod volume;
pub mod yaml;
