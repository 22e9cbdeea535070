//! pod_storage: each running pod's local ephemeral storage by kubelet's sum,
//! its containers' writable layers and logs, its local ephemeral volumes, and
//! the limits kubelet's eviction manager enforces on them.
//!
//! Source: the pod sampler's table (the pod watch of the Kubernetes API for
//! specs and limits; CRI ListContainers / ListContainerStats for writable
//! layers; du-method walks of log dirs, volume dirs and etc-hosts).
//!
//! Families: `kubedf_pod_ephemeral_storage_used_bytes`, `_inodes_used`,
//! `_limit_bytes`; `kubedf_container_rootfs_used_bytes`, `_inodes_used`;
//! `kubedf_container_logs_used_bytes`, `_inodes_used`;
//! `kubedf_container_ephemeral_storage_limit_bytes`;
//! `kubedf_ephemeral_volume_used_bytes`, `_inodes_used`, `_size_limit_bytes`;
//! `kubedf_pod_storage_error`.

use crate::exposition::Unit;

use super::{Collector, Desc, Incomplete, Sink};
use crate::model::pod::{PodRow, Usage};
use crate::model::{Part, Snapshot, SourceId};

const P: &[&str] = &["namespace", "pod"];
const C: &[&str] = &["namespace", "pod", "container"];
const V: &[&str] = &["namespace", "pod", "volume", "kind"];

pub static POD_USED: Desc = Desc::gauge(
    "kubedf_pod_ephemeral_storage_used_bytes",
    "Bytes of local ephemeral storage the pod uses by kubelet's sum: its running containers' writable layers and logs, its emptyDir (disk medium), configMap and gitRepo volumes, its own log files and etc-hosts.",
    Some(Unit::Bytes),
    P,
);
pub static POD_INODES: Desc = Desc::gauge(
    "kubedf_pod_ephemeral_storage_inodes_used",
    "Inodes of local ephemeral storage the pod uses, summed as kubelet sums them.",
    None,
    P,
);
pub static POD_LIMIT: Desc = Desc::gauge(
    "kubedf_pod_ephemeral_storage_limit_bytes",
    "The pod's ephemeral-storage limit as kubelet computes it from its containers' limits (PodLimits); kubelet evicts the pod when its usage exceeds it. Present only when the pod has one.",
    Some(Unit::Bytes),
    P,
);
pub static ROOTFS_USED: Desc = Desc::gauge(
    "kubedf_container_rootfs_used_bytes",
    "Bytes used by the container's writable layer, as the container runtime reports it over CRI.",
    Some(Unit::Bytes),
    C,
);
pub static ROOTFS_INODES: Desc = Desc::gauge(
    "kubedf_container_rootfs_inodes_used",
    "Inodes used by the container's writable layer, as the container runtime reports it over CRI.",
    None,
    C,
);
pub static LOGS_USED: Desc = Desc::gauge(
    "kubedf_container_logs_used_bytes",
    "Bytes used by the container's log directory, measured as kubelet does (du method).",
    Some(Unit::Bytes),
    C,
);
pub static LOGS_INODES: Desc = Desc::gauge(
    "kubedf_container_logs_inodes_used",
    "Inodes used by the container's log directory, measured as kubelet does (du method).",
    None,
    C,
);
pub static CONTAINER_LIMIT: Desc = Desc::gauge(
    "kubedf_container_ephemeral_storage_limit_bytes",
    "The container's ephemeral-storage limit; kubelet evicts the pod when the container's logs plus writable layer (logs only on a dedicated image filesystem) exceed it. Present only when the container has one.",
    Some(Unit::Bytes),
    C,
);
pub static VOLUME_USED: Desc = Desc::gauge(
    "kubedf_ephemeral_volume_used_bytes",
    "Bytes used by one local ephemeral volume of a pod (emptyDir on disk, configMap, gitRepo), measured as kubelet does (du method).",
    Some(Unit::Bytes),
    V,
);
pub static VOLUME_INODES: Desc = Desc::gauge(
    "kubedf_ephemeral_volume_inodes_used",
    "Inodes used by one local ephemeral volume of a pod, measured as kubelet does (du method).",
    None,
    V,
);
pub static VOLUME_LIMIT: Desc = Desc::gauge(
    "kubedf_ephemeral_volume_size_limit_bytes",
    "An emptyDir's sizeLimit; kubelet evicts the pod when the volume's usage exceeds it. Present only for an emptyDir with a positive sizeLimit.",
    Some(Unit::Bytes),
    V,
);
pub static ERROR: Desc = Desc::gauge(
    "kubedf_pod_storage_error",
    "A part of a pod kubedf cannot measure now (part rootfs, logs, volume, pod_logs, etc_hosts or containers; name is the container or volume), and why; the pod's total is left out meanwhile. Always 1.",
    None,
    &["namespace", "pod", "part", "name", "reason"],
);

static DESCS: [&Desc; 12] = [
    &POD_USED,
    &POD_INODES,
    &POD_LIMIT,
    &ROOTFS_USED,
    &ROOTFS_INODES,
    &LOGS_USED,
    &LOGS_INODES,
    &CONTAINER_LIMIT,
    &VOLUME_USED,
    &VOLUME_INODES,
    &VOLUME_LIMIT,
    &ERROR,
];

#[derive(Debug)]
pub struct PodStorageCollector;

impl Collector for PodStorageCollector {
    fn name(&self) -> &'static str {
        "pod_storage"
    }

    fn description(&self) -> &'static str {
        "each running pod's local ephemeral storage, container rootfs and logs, emptyDir/configMap/gitRepo volumes, and their limits, by kubelet's rules"
    }

    fn descs(&self) -> &'static [&'static Desc] {
        &DESCS
    }

    fn sources(&self) -> &'static [SourceId] {
        &[SourceId::Kubernetes]
    }

    fn reads(&self) -> Option<&'static [Part]> {
        Some(&[Part::Pods])
    }

    fn collect(&self, snapshot: &Snapshot, out: &mut Sink) -> Result<(), Incomplete> {
        let Some(table) = &snapshot.pods else {
            return Err(Incomplete("no pod table yet".into()));
        };
        for desc in DESCS {
            out.declare(desc);
        }
        let mut failed = 0usize;
        for row in &table.rows {
            failed += usize::from(!row.failures().is_empty());
            emit_pod(row, out);
        }
        match (&table.source.error, failed) {
            (Some(e), _) => Err(Incomplete(e.clone())),
            (None, 0) => Ok(()),
            (None, n) => Err(Incomplete(format!("{n} pod(s) cannot be measured in full"))),
        }
    }
}

fn emit_pod(row: &PodRow, out: &mut Sink) {
    let (ns, pod) = (row.pod.namespace.as_str(), row.pod.name.as_str());
    if let Some(Ok(total)) = row.ephemeral_storage() {
        out.add(&POD_USED, [ns, pod], total.bytes);
        out.add(&POD_INODES, [ns, pod], total.inodes);
    }
    if let Some(limit) = row.pod.storage.limit {
        out.add(&POD_LIMIT, [ns, pod], limit);
    }
    for c in &row.containers {
        let labels = [ns, pod, c.name.as_str()];
        if let Ok(u) = &c.rootfs {
            figures(out, &ROOTFS_USED, &ROOTFS_INODES, &labels, u);
        }
        if let Some(Ok(u)) = &c.logs {
            figures(out, &LOGS_USED, &LOGS_INODES, &labels, u);
        }
    }
    for (name, limit) in &row.pod.storage.container_limits {
        out.add(&CONTAINER_LIMIT, [ns, pod, name.as_str()], *limit);
    }
    for v in &row.volumes {
        let labels = [ns, pod, v.name.as_str(), v.kind.name()];
        if let Some(Ok(u)) = &v.usage {
            figures(out, &VOLUME_USED, &VOLUME_INODES, &labels, u);
        }
        if let Some(limit) = v.size_limit {
            out.add(&VOLUME_LIMIT, labels, limit);
        }
    }
    for (part, name, failure) in row.failures() {
        out.add(
            &ERROR,
            [ns, pod, part.name(), name, failure.reason.name()],
            1i64,
        );
    }
}

fn figures(
    out: &mut Sink,
    bytes: &'static Desc,
    inodes: &'static Desc,
    labels: &[&str],
    u: &Usage,
) {
    out.add(bytes, labels.iter().copied(), u.bytes);
    out.add(inodes, labels.iter().copied(), u.inodes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::pod::tests::{row, snapshot};
    use crate::model::pod::{Failure, Reason};

    /// The collector's sample lines in the text format.
    fn samples(s: &Snapshot) -> Vec<String> {
        let mut sink = Sink::new(crate::exposition::Format::Text, 0);
        let _ = PodStorageCollector.collect(s, &mut sink);
        sink.finish()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn a_measured_pod() {
        let got = samples(&snapshot(vec![row()]));
        let want = [
            r#"kubedf_pod_ephemeral_storage_used_bytes{namespace="shop",pod="web-0"} 58344"#,
            r#"kubedf_pod_ephemeral_storage_inodes_used{namespace="shop",pod="web-0"} 18"#,
            r#"kubedf_pod_ephemeral_storage_limit_bytes{namespace="shop",pod="web-0"} 2147483648"#,
            r#"kubedf_container_rootfs_used_bytes{namespace="shop",pod="web-0",container="app"} 4096"#,
            r#"kubedf_container_rootfs_used_bytes{namespace="shop",pod="web-0",container="sidecar"} 1000"#,
            r#"kubedf_container_logs_used_bytes{namespace="shop",pod="web-0",container="app"} 8192"#,
            r#"kubedf_container_ephemeral_storage_limit_bytes{namespace="shop",pod="web-0",container="app"} 1073741824"#,
            r#"kubedf_ephemeral_volume_used_bytes{namespace="shop",pod="web-0",volume="cache",kind="emptyDir"} 40960"#,
            r#"kubedf_ephemeral_volume_size_limit_bytes{namespace="shop",pod="web-0",volume="cache",kind="emptyDir"} 1048576"#,
        ];
        for w in want {
            assert!(got.iter().any(|g| g == w), "missing {w} in {got:#?}");
        }
        assert!(
            !got.iter()
                .any(|g| g.contains("sidecar") && g.contains("limit"))
        );
        assert!(
            !got.iter()
                .any(|g| g.starts_with("kubedf_pod_storage_error"))
        );
    }

    #[test]
    fn an_unmeasurable_part_is_an_error_and_no_total() {
        let mut r = row();
        r.containers[1].rootfs = Err(Failure::new(Reason::NoCriStats, "no writable layer"));
        let s = snapshot(vec![r]);
        let got = samples(&s);
        assert!(
            !got.iter()
                .any(|g| g.starts_with("kubedf_pod_ephemeral_storage_used"))
        );
        assert!(
            !got.iter()
                .any(|g| g.starts_with("kubedf_container_rootfs") && g.contains("sidecar"))
        );
        assert!(got.contains(&r#"kubedf_pod_storage_error{namespace="shop",pod="web-0",part="rootfs",name="sidecar",reason="no_cri_stats"} 1"#.to_owned()), "{got:#?}");
        let mut sink = Sink::new(crate::exposition::Format::Text, 0);
        assert!(PodStorageCollector.collect(&s, &mut sink).is_err());
    }

    #[test]
    fn series_go_with_the_pod() {
        assert!(samples(&snapshot(vec![])).is_empty());
        let mut bare = snapshot(vec![]);
        bare.pods = None;
        let mut sink = Sink::new(crate::exposition::Format::Text, 0);
        assert!(PodStorageCollector.collect(&bare, &mut sink).is_err());
    }
}
