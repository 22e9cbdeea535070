//! nodefs: the filesystem holding the kubelet root dir, as kubelet sees it.
//!
//! Source: statfs of `--kubelet.root-dir` (resolved inside `--path.rootfs`).
//!
//! Families: `kubedf_nodefs_*` (six, label `path`).

use super::{Collector, Desc, Incomplete, Sink, emit_fs_usage, fs_descs};
use crate::model::Snapshot;
use crate::model::SourceId;

fs_descs!(
    NODEFS,
    "kubedf_nodefs",
    "node filesystem (the one holding the kubelet root dir)",
    "from statfs",
    &["path"]
);

static DESCS: [&Desc; 6] = NODEFS.all();

#[derive(Debug)]
pub struct NodeFsCollector;

impl Collector for NodeFsCollector {
    fn name(&self) -> &'static str {
        "nodefs"
    }

    fn description(&self) -> &'static str {
        "The filesystem of the kubelet root dir"
    }

    fn descs(&self) -> &'static [&'static Desc] {
        &DESCS
    }

    fn sources(&self) -> &'static [SourceId] {
        &[SourceId::NodeFs]
    }

    fn collect(&self, snapshot: &Snapshot, out: &mut Sink) -> Result<(), Incomplete> {
        let fs = snapshot.nodefs()?;
        emit_fs_usage(out, &NODEFS, &[fs.path.as_str()], &fs.usage);
        Ok(())
    }
}
