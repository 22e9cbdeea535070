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
//!   `--kubelet.config`), and cluster mode's kubelet client. The guard and
//!   the one walk pool are built once by the app (`sources::io`) and handed
//!   to every sampler.
//! - [`exec`]: how blocking work runs: the measurement lane, one call in
//!   flight per path, the one guarded blocking call (`exec::guard`: on the
//!   lane, under a timeout, one mapping to a reason), and the heap handed
//!   back to the kernel after a peak.
//! - [`kubelet`]: what kubelet computes, reproduced: quantities, eviction
//!   thresholds and their merging, the image GC trigger, its configuration
//!   merged from flags, the config file and drop-ins as kubelet merges it.
//! - [`sampling`]: the background readers that publish on the board: the
//!   node's sources (`sampling::node`), kubelet's configuration
//!   (`sampling::kubelet_watch`), the one scheduler, and the PVC and pod
//!   loops (`sampling::volume`, `sampling::pods`), each a pure plan, a loop
//!   and its I/O, unit-tested on fakes with tokio's paused clock.
//! - [`cluster`]: cluster mode's pipeline: the Node watch, every kubelet's
//!   `/stats/summary` polled (bounded, jittered, under a deadline), each
//!   turned into its node's figures at once and published as one table;
//!   each kubelet's `/configz` read rarely, for its GC and eviction
//!   thresholds.
//! - [`collector`]: one file per collector, pure functions of a snapshot.
//! - [`registry`]: the enabled collectors and kubedf's own families.
//! - [`exposition`]: the OpenMetrics and Prometheus text formats (collectors
//!   write into them; [`http`] picks one per scrape).
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

// `deny`, not `forbid`: the one exception is `exec::heap::glibc`, the calls into
// glibc's allocator, allowed where it stands with its SAFETY comment.
#![deny(unsafe_code)]

pub mod app;
pub mod cli;
pub mod cluster;
pub mod collector;
pub mod df;
pub mod exec;
pub mod exposition;
#[cfg(any(test, feature = "fixtures"))]
#[doc(hidden)]
pub mod fixtures;
pub mod http;
pub mod kubelet;
pub mod model;
pub mod registry;
pub mod sampling;
pub mod sources;
pub mod summary;
pub mod yaml;
