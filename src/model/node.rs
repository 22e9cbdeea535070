//! The node's container runtime and process limits.

use super::fs::Filesystem;

/// What the runtime says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeVersion {
    pub runtime_name: String,
    pub runtime_version: String,
    pub runtime_api_version: String,
}

/// The container runtime's view: its version and its filesystems, with
/// kubelet's merge of runtime figures (used) and statfs (capacity, free).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Runtime {
    pub version: RuntimeVersion,
    /// The first image filesystem the runtime reports, as kubelet uses it.
    pub image_fs: Result<Filesystem, String>,
    /// The first container filesystem, when the runtime splits them.
    pub container_fs: Option<Result<Filesystem, String>>,
}

/// kubelet's rlimit stats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rlimit {
    pub maxpid: i64,
    pub curproc: i64,
}

impl Rlimit {
    /// kubelet's pid.available: maxpid - curproc.
    pub fn available(&self) -> i64 {
        self.maxpid - self.curproc
    }
}
