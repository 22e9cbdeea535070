//! imagefs: the container runtime's image filesystem (and container
//! filesystem, when the runtime splits them), and the runtime's identity.
//!
//! Source: CRI `ImageService/ImageFsInfo` for used bytes and used inodes,
//! statfs of the reported mountpoint (a host path, resolved inside
//! `--path.rootfs`) for capacity, available and inodes (as
//! kubelet merges them), CRI `RuntimeService/Version` for `kubedf_cri_info`.
//!
//! Families: `kubedf_imagefs_*`, `kubedf_containerfs_*` (six each, label
//! `mountpoint`), `kubedf_cri_info`.

use super::{Collector, Desc, FsDescs, Incomplete, Sink, emit_fs_usage, fs_descs};
use crate::model::SourceId;
use crate::model::{Filesystem, Snapshot};

fs_descs!(
    IMAGEFS,
    "kubedf_imagefs",
    "image filesystem",
    "as the container runtime reports it (ImageFsInfo)",
    &["mountpoint"]
);
fs_descs!(
    CONTAINERFS,
    "kubedf_containerfs",
    "container filesystem (container writable layers, when the runtime keeps them apart from images)",
    "as the container runtime reports it (ImageFsInfo)",
    &["mountpoint"]
);

pub static CRI_INFO: Desc = Desc::gauge(
    "kubedf_cri_info",
    "Container runtime that answers on the CRI socket; always 1.",
    None,
    &["runtime_name", "runtime_version", "runtime_api_version"],
);

static DESCS: [&Desc; 13] = {
    let i = IMAGEFS.all();
    let c = CONTAINERFS.all();
    [
        i[0], i[1], i[2], i[3], i[4], i[5], c[0], c[1], c[2], c[3], c[4], c[5], &CRI_INFO,
    ]
};

#[derive(Debug)]
pub struct ImageFsCollector;

fn emit(out: &mut Sink, descs: &FsDescs, fs: &Filesystem) {
    emit_fs_usage(out, descs, &[fs.path.as_str()], &fs.usage);
}

impl Collector for ImageFsCollector {
    fn name(&self) -> &'static str {
        "imagefs"
    }

    fn description(&self) -> &'static str {
        "Image and container filesystems of the container runtime, and its version"
    }

    fn descs(&self) -> &'static [&'static Desc] {
        &DESCS
    }

    fn sources(&self) -> &'static [SourceId] {
        &[SourceId::Cri, SourceId::ImageFs]
    }

    fn collect(&self, snapshot: &Snapshot, out: &mut Sink) -> Result<(), Incomplete> {
        let runtime = match snapshot.runtime() {
            Some(Ok(rt)) => rt,
            Some(Err(e)) => return Err(Incomplete(e.clone())),
            None => return Err(Incomplete("the container runtime was not sampled".into())),
        };
        let mut missing = Vec::new();
        match &runtime.image_fs {
            Ok(fs) => emit(out, &IMAGEFS, fs),
            Err(e) => missing.push(e.clone()),
        }
        match &runtime.container_fs {
            Some(Ok(fs)) => emit(out, &CONTAINERFS, fs),
            Some(Err(e)) => missing.push(e.clone()),
            None => {}
        }
        // Last, as declared.
        let v = &runtime.version;
        out.add(
            &CRI_INFO,
            [
                v.runtime_name.as_str(),
                v.runtime_version.as_str(),
                v.runtime_api_version.as_str(),
            ],
            1i64,
        );
        if missing.is_empty() {
            Ok(())
        } else {
            Err(Incomplete(missing.join("; ")))
        }
    }
}
