//! kubedf's test support, one library for the integration tests
//! (`tests/*.rs`), the pod benchmark (`benches/pods.rs`) and the fake API
//! server's process (`examples/fake_kube_server.rs`). As a crate of its own
//! it is compiled and linted once, so whatever none of it uses warns like any
//! other code.
//!
//! - [`prerequisites`]: the one skip policy (fail under `CI=true`, skip
//!   loudly elsewhere) and the one root check.
//! - [`binary`]: the kubedf binary under test ([`kubedf!`]): one-shot runs,
//!   `kubedf serve` processes ([`Served`]) and a test node's flags
//!   ([`OnNode`]).
//! - [`exposition`]: the one parser of a text exposition, and `promtool
//!   check metrics`.
//! - [`mounts`]: tmpfs mounts of a known size, an independent statfs, and
//!   the du/find oracle of the du method ([`du_find`]).
//! - [`node`]: a test node's disk layout ([`TestNode`]): kubelet's root
//!   dir, pod logs dir and config, and where kubelet puts volumes.
//! - [`containerd`]: a real containerd on a private socket, and OCI images
//!   built from busybox-static.
//! - [`cri`]: pods run through that containerd's CRI the way kubelet runs
//!   them.
//! - [`fake_kube`]: a fake Kubernetes API server speaking the real wire
//!   format.
//! - [`manifests`]: `deploy/` and the chart as kustomize, Helm and the
//!   Prometheus Operator render them.
//! - [`tls`]: certificates from the real `openssl`, requests with the real
//!   `curl`.
//! - [`kubelet_fleet`]: many fake kubelets answering `/stats/summary` over
//!   HTTPS from one process, each on its own loopback address.
//! - [`kubelet`]: kubelet processes of fixture host roots (a static idle
//!   program run under `chroot` with a distribution's command line).

pub mod binary;
pub mod containerd;
pub mod cri;
pub mod exposition;
pub mod fake_kube;
pub mod kubelet;
pub mod kubelet_fleet;
pub mod manifests;
pub mod mounts;
pub mod node;
pub mod prerequisites;
pub mod procstat;
pub mod tls;

pub use binary::*;
pub use exposition::*;
pub use mounts::*;
pub use node::*;
pub use prerequisites::*;
