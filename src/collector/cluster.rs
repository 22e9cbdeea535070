//! cluster: every node of this shard as its kubelet's `/stats/summary`
//! gives it (cluster mode), under the DaemonSet's family names, units and
//! label names, each series with an added `node` label; and per node how its
//! polls fare.
//!
//! Source: the cluster poll loop's table (`model::cluster`): kubelet's
//! Summary API, `node.fs`, `node.runtime.imageFs`/`containerFs`,
//! `node.rlimit`, `pods[]."ephemeral-storage"`, `pods[].containers[].rootfs`
//! and `logs`, `pods[].volume[]` (with a `pvcRef`: `kubelet_volume_stats_*`;
//! without: `kubedf_ephemeral_volume_*`).
//!
//! Image GC and eviction headroom, for a node whose kubelet's `/configz`
//! was read: the DaemonSet's families and formulas (`image_gc::gc_status`,
//! `eviction::signal_rows`), from the summary's figures observed as
//! kubelet's eviction manager observes them and the layout the summary
//! tells (`NodeFigures::observe`, `NodeFigures::fs_layout`).
//!
//! What the summary does not say is not reported: the nodefs `path` and
//! imagefs `mountpoint` labels are empty, an ephemeral volume's `kind` is
//! empty (the summary lists every volume without a PVC: emptyDir, configMap,
//! but also secret and projected ones), and there are no limit families
//! (they need the pod spec), no headroom for a node whose `/configz` was
//! not read, and no `kubedf_cri_info`. A figure the summary leaves out is
//! left out, never written as 0.
//!
//! Families: `kubedf_nodefs_*`, `kubedf_imagefs_*`, `kubedf_containerfs_*`
//! (six each), `kubedf_rlimit_maxpid`, `kubedf_rlimit_curproc`,
//! `kubedf_pod_ephemeral_storage_used_bytes`, `_inodes_used`,
//! `kubedf_container_rootfs_*`, `kubedf_container_logs_*`,
//! `kubedf_ephemeral_volume_*` (used bytes and inodes),
//! `kubelet_volume_stats_*` (six), `kubedf_image_gc_*` (four),
//! `kubedf_eviction_signal_available`, `_signal_capacity`,
//! `kubedf_eviction_threshold`; `kubedf_kubelet_poll_success`,
//! `kubedf_kubelet_poll_duration_seconds`,
//! `kubedf_kubelet_last_success_timestamp_seconds`,
//! `kubedf_kubelet_poll_error`, `kubedf_kubelet_configz_success`,
//! `kubedf_kubelet_configz_error`.

use std::time::UNIX_EPOCH;

use super::eviction::{SignalRow, signal_rows};
use super::image_gc::gc_status;
use super::{Collector, Desc, FsDescs, Incomplete, Sink, eviction, fs_descs, image_gc};
use crate::exposition::{Format, Unit};
use crate::kubelet::eviction::{Kind, Signal};
use crate::kubelet::image_gc::ImageGcStatus;
use crate::model::cluster::{ClusterTable, FsFigures, NodeEntry, NodeFigures};
use crate::model::{Part, Snapshot, SourceId};

fs_descs!(
    NODEFS,
    "kubedf_nodefs",
    "node filesystem (the one holding the kubelet root dir), as the node's kubelet reports it",
    "from the kubelet's /stats/summary",
    &["path", "node"]
);
fs_descs!(
    IMAGEFS,
    "kubedf_imagefs",
    "image filesystem, as the node's kubelet reports it",
    "from the kubelet's /stats/summary",
    &["mountpoint", "node"]
);
fs_descs!(
    CONTAINERFS,
    "kubedf_containerfs",
    "container filesystem, as the node's kubelet reports it",
    "from the kubelet's /stats/summary",
    &["mountpoint", "node"]
);

const N: &[&str] = &["node"];
const P: &[&str] = &["namespace", "pod", "node"];
const C: &[&str] = &["namespace", "pod", "container", "node"];
const V: &[&str] = &["namespace", "pod", "volume", "kind", "node"];
const PVC: &[&str] = &["namespace", "persistentvolumeclaim", "node"];

pub static MAXPID: Desc = Desc::gauge(
    "kubedf_rlimit_maxpid",
    "Maximum number of process IDs on the node, as its kubelet reports it (node.rlimit.maxpid).",
    None,
    N,
);
pub static CURPROC: Desc = Desc::gauge(
    "kubedf_rlimit_curproc",
    "Number of processes and threads on the node, as its kubelet reports it (node.rlimit.curproc).",
    None,
    N,
);
pub static POD_USED: Desc = Desc::gauge(
    "kubedf_pod_ephemeral_storage_used_bytes",
    "Bytes of local ephemeral storage the pod uses, as its node's kubelet sums them (the summary's ephemeral-storage).",
    Some(Unit::Bytes),
    P,
);
pub static POD_INODES: Desc = Desc::gauge(
    "kubedf_pod_ephemeral_storage_inodes_used",
    "Inodes of local ephemeral storage the pod uses, as its node's kubelet sums them.",
    None,
    P,
);
pub static ROOTFS_USED: Desc = Desc::gauge(
    "kubedf_container_rootfs_used_bytes",
    "Bytes used by the container's writable layer, as its node's kubelet reports it.",
    Some(Unit::Bytes),
    C,
);
pub static ROOTFS_INODES: Desc = Desc::gauge(
    "kubedf_container_rootfs_inodes_used",
    "Inodes used by the container's writable layer, as its node's kubelet reports it.",
    None,
    C,
);
pub static LOGS_USED: Desc = Desc::gauge(
    "kubedf_container_logs_used_bytes",
    "Bytes used by the container's logs, as its node's kubelet reports them.",
    Some(Unit::Bytes),
    C,
);
pub static LOGS_INODES: Desc = Desc::gauge(
    "kubedf_container_logs_inodes_used",
    "Inodes used by the container's logs, as its node's kubelet reports them.",
    None,
    C,
);
pub static VOLUME_USED: Desc = Desc::gauge(
    "kubedf_ephemeral_volume_used_bytes",
    "Bytes used by a volume of the pod that has no PVC, as its node's kubelet reports it; kind is empty (the summary does not say it).",
    Some(Unit::Bytes),
    V,
);
pub static VOLUME_INODES: Desc = Desc::gauge(
    "kubedf_ephemeral_volume_inodes_used",
    "Inodes used by a volume of the pod that has no PVC, as its node's kubelet reports it; kind is empty.",
    None,
    V,
);

// kubelet's descriptors, HELP verbatim, plus the node label.
static PVC_CAPACITY: Desc = Desc::gauge(
    "kubelet_volume_stats_capacity_bytes",
    "Capacity in bytes of the volume",
    None,
    PVC,
);
static PVC_AVAILABLE: Desc = Desc::gauge(
    "kubelet_volume_stats_available_bytes",
    "Number of available bytes in the volume",
    None,
    PVC,
);
static PVC_USED: Desc = Desc::gauge(
    "kubelet_volume_stats_used_bytes",
    "Number of used bytes in the volume",
    None,
    PVC,
);
static PVC_INODES: Desc = Desc::gauge(
    "kubelet_volume_stats_inodes",
    "Maximum number of inodes in the volume",
    None,
    PVC,
);
static PVC_INODES_FREE: Desc = Desc::gauge(
    "kubelet_volume_stats_inodes_free",
    "Number of free inodes in the volume",
    None,
    PVC,
);
static PVC_INODES_USED: Desc = Desc::gauge(
    "kubelet_volume_stats_inodes_used",
    "Number of used inodes in the volume",
    None,
    PVC,
);
static PVC_DESCS: FsDescs = FsDescs {
    capacity: &PVC_CAPACITY,
    available: &PVC_AVAILABLE,
    used: &PVC_USED,
    inodes: &PVC_INODES,
    inodes_free: &PVC_INODES_FREE,
    inodes_used: &PVC_INODES_USED,
};

// The DaemonSet's headroom families, names and help its own, plus `node`.
pub static GC_USAGE_PERCENT: Desc = Desc::gauge(
    image_gc::USAGE_PERCENT_NAME,
    image_gc::USAGE_PERCENT_HELP,
    None,
    N,
);
pub static GC_HIGH_THRESHOLD_PERCENT: Desc = Desc::gauge(
    image_gc::HIGH_THRESHOLD_PERCENT_NAME,
    image_gc::HIGH_THRESHOLD_PERCENT_HELP,
    None,
    N,
);
pub static GC_LOW_THRESHOLD_PERCENT: Desc = Desc::gauge(
    image_gc::LOW_THRESHOLD_PERCENT_NAME,
    image_gc::LOW_THRESHOLD_PERCENT_HELP,
    None,
    N,
);
pub static GC_BYTES_TO_FREE: Desc = Desc::gauge(
    image_gc::BYTES_TO_FREE_NAME,
    image_gc::BYTES_TO_FREE_HELP,
    None,
    N,
);
pub static SIGNAL_AVAILABLE: Desc = Desc::gauge(
    eviction::SIGNAL_AVAILABLE_NAME,
    eviction::SIGNAL_AVAILABLE_HELP,
    None,
    &["signal", "node"],
);
pub static SIGNAL_CAPACITY: Desc = Desc::gauge(
    eviction::SIGNAL_CAPACITY_NAME,
    eviction::SIGNAL_CAPACITY_HELP,
    None,
    &["signal", "node"],
);
pub static EVICTION_THRESHOLD: Desc = Desc::gauge(
    eviction::THRESHOLD_NAME,
    eviction::THRESHOLD_HELP,
    None,
    &["signal", "kind", "node"],
);

pub static POLL_SUCCESS: Desc = Desc::gauge(
    "kubedf_kubelet_poll_success",
    "Whether the last poll of the node's kubelet /stats/summary succeeded (1) or failed (0); 0 too for a node whose kubelet cannot be reached from its Node object.",
    None,
    N,
);
pub static POLL_DURATION: Desc = Desc::gauge(
    "kubedf_kubelet_poll_duration_seconds",
    "How long the last poll of the node's kubelet took, its deadline included.",
    Some(Unit::Seconds),
    N,
);
pub static LAST_SUCCESS: Desc = Desc::gauge(
    "kubedf_kubelet_last_success_timestamp_seconds",
    "Unix time of the last successful poll of the node's kubelet; absent until one succeeds.",
    Some(Unit::Seconds),
    N,
);
pub static POLL_ERROR: Desc = Desc::gauge(
    "kubedf_kubelet_poll_error",
    "Why the last poll of the node's kubelet failed (reason unauthorized, forbidden, http_error, timeout, tls, connection, too_large, bad_body or no_address); always 1, present only while it fails.",
    None,
    &["node", "reason"],
);
pub static CONFIGZ_SUCCESS: Desc = Desc::gauge(
    "kubedf_kubelet_configz_success",
    "Whether the last read of the node's kubelet /configz (for image GC and eviction headroom, read at the first good poll and then every 10 polls and 10 minutes at most) succeeded (1) or failed (0); absent until one is made.",
    None,
    N,
);
pub static CONFIGZ_ERROR: Desc = Desc::gauge(
    "kubedf_kubelet_configz_error",
    "Why the last read of the node's kubelet /configz failed (reason forbidden when nodes/configz is not granted; unauthorized, http_error, timeout, tls, connection, too_large or bad_body); always 1, present only while it fails. The node has no headroom series until a read succeeds.",
    None,
    &["node", "reason"],
);

static DESCS: [&Desc; 47] = {
    let n = NODEFS.all();
    let i = IMAGEFS.all();
    let c = CONTAINERFS.all();
    let v = PVC_DESCS.all();
    [
        n[0],
        n[1],
        n[2],
        n[3],
        n[4],
        n[5],
        i[0],
        i[1],
        i[2],
        i[3],
        i[4],
        i[5],
        c[0],
        c[1],
        c[2],
        c[3],
        c[4],
        c[5],
        &MAXPID,
        &CURPROC,
        &POD_USED,
        &POD_INODES,
        &ROOTFS_USED,
        &ROOTFS_INODES,
        &LOGS_USED,
        &LOGS_INODES,
        &VOLUME_USED,
        &VOLUME_INODES,
        v[0],
        v[1],
        v[2],
        v[3],
        v[4],
        v[5],
        &GC_USAGE_PERCENT,
        &GC_HIGH_THRESHOLD_PERCENT,
        &GC_LOW_THRESHOLD_PERCENT,
        &GC_BYTES_TO_FREE,
        &SIGNAL_AVAILABLE,
        &SIGNAL_CAPACITY,
        &EVICTION_THRESHOLD,
        &POLL_SUCCESS,
        &POLL_DURATION,
        &LAST_SUCCESS,
        &POLL_ERROR,
        &CONFIGZ_SUCCESS,
        &CONFIGZ_ERROR,
    ]
};

/// The six figures of a filesystem, in [`FsDescs`] order.
type Pick = fn(&FsFigures) -> Option<u64>;
const FS_FIELDS: [Pick; 6] = [
    |f| f.capacity_bytes,
    |f| f.available_bytes,
    |f| f.used_bytes,
    |f| f.inodes,
    |f| f.inodes_free,
    |f| f.inodes_used,
];

#[derive(Debug)]
pub struct ClusterCollector;

impl Collector for ClusterCollector {
    fn name(&self) -> &'static str {
        "cluster"
    }

    fn description(&self) -> &'static str {
        "every node of this shard from its kubelet's /stats/summary (cluster mode)"
    }

    fn descs(&self) -> &'static [&'static Desc] {
        &DESCS
    }

    fn sources(&self) -> &'static [SourceId] {
        &[SourceId::Kubernetes]
    }

    fn reads(&self) -> Option<&'static [Part]> {
        Some(&[Part::Cluster])
    }

    fn collect(&self, snapshot: &Snapshot, out: &mut Sink) -> Result<(), Incomplete> {
        let Some(table) = &snapshot.cluster else {
            return Err(Incomplete("no node list yet".into()));
        };
        let nodes: Vec<(&str, &NodeEntry)> = table
            .nodes
            .iter()
            .map(|(name, e)| (name.as_str(), &**e))
            .collect();
        emit(&nodes, out);
        if let Some(e) = &table.watch_error {
            return Err(Incomplete(e.clone()));
        }
        if !table.synced {
            return Err(Incomplete("the Node list has not been received yet".into()));
        }
        let failing = nodes
            .iter()
            .filter(|(_, e)| e.health.failure.is_some())
            .count();
        if failing > 0 {
            return Err(Incomplete(format!("{failing} node(s) failing")));
        }
        Ok(())
    }
}

/// One node's exposition (`/nodes/<node>/metrics`), or `None` for a node
/// this shard does not have.
pub fn render_node(table: &ClusterTable, node: &str, format: Format) -> Option<String> {
    let (name, entry) = table.nodes.get_key_value(node)?;
    let mut sink = Sink::new(format, 16 << 10);
    emit(&[(name.as_str(), &**entry)], &mut sink);
    Some(sink.finish())
}

/// Every family of `nodes`, family by family (each family's samples for all
/// nodes together, so the sink copies nothing twice).
fn emit(nodes: &[(&str, &NodeEntry)], out: &mut Sink) {
    for desc in &DESCS {
        out.declare(desc);
    }
    let figures: Vec<(&str, &NodeFigures)> = nodes
        .iter()
        .filter_map(|(n, e)| e.figures.as_deref().map(|f| (*n, f)))
        .collect();
    let node_fs =
        |out: &mut Sink, descs: &'static FsDescs, pick: fn(&NodeFigures) -> Option<&FsFigures>| {
            for (desc, field) in descs.all().into_iter().zip(FS_FIELDS) {
                for (node, f) in &figures {
                    if let Some(v) = pick(f).and_then(field) {
                        out.add(desc, ["", node], v);
                    }
                }
            }
        };
    node_fs(out, &NODEFS, |f| f.nodefs.as_ref());
    node_fs(out, &IMAGEFS, |f| f.imagefs.as_ref());
    node_fs(out, &CONTAINERFS, |f| f.containerfs.as_ref());
    for (desc, pick) in [
        (&MAXPID, (|f| f.max_pid) as fn(&NodeFigures) -> Option<i64>),
        (&CURPROC, |f| f.cur_proc),
    ] {
        for (node, f) in &figures {
            if let Some(v) = pick(f) {
                out.add(desc, [*node], v);
            }
        }
    }
    type PodPick = fn(&crate::model::cluster::PodFigures) -> Option<u64>;
    for (desc, pick) in [
        (&POD_USED, (|p| p.ephemeral_used_bytes) as PodPick),
        (&POD_INODES, |p| p.ephemeral_inodes_used),
    ] {
        for (node, f) in &figures {
            for p in &f.pods {
                if let Some(v) = pick(p) {
                    out.add(desc, [f.text(p.namespace), f.text(p.name), node], v);
                }
            }
        }
    }
    type ContainerPick = fn(&crate::model::cluster::ContainerFigures) -> Option<u64>;
    for (desc, pick) in [
        (&ROOTFS_USED, (|c| c.rootfs_used_bytes) as ContainerPick),
        (&ROOTFS_INODES, |c| c.rootfs_inodes_used),
        (&LOGS_USED, |c| c.logs_used_bytes),
        (&LOGS_INODES, |c| c.logs_inodes_used),
    ] {
        for (node, f) in &figures {
            for p in &f.pods {
                for c in f.containers(p) {
                    if let Some(v) = pick(c) {
                        out.add(
                            desc,
                            [f.text(p.namespace), f.text(p.name), f.text(c.name), node],
                            v,
                        );
                    }
                }
            }
        }
    }
    type VolumePick = fn(&crate::model::cluster::VolumeFigures) -> Option<u64>;
    for (desc, pick) in [
        (&VOLUME_USED, (|v| v.used_bytes) as VolumePick),
        (&VOLUME_INODES, |v| v.inodes_used),
    ] {
        for (node, f) in &figures {
            for p in &f.pods {
                for v in f.volumes(p) {
                    if let Some(value) = pick(v) {
                        out.add(
                            desc,
                            [
                                f.text(p.namespace),
                                f.text(p.name),
                                f.text(v.name),
                                "",
                                node,
                            ],
                            value,
                        );
                    }
                }
            }
        }
    }
    for (desc, field) in PVC_DESCS.all().into_iter().zip(FS_FIELDS) {
        for (node, f) in &figures {
            for pvc in &f.pvcs {
                if let Some(v) = field(&pvc.fs) {
                    out.add(desc, [f.text(pvc.namespace), f.text(pvc.name), node], v);
                }
            }
        }
    }
    headroom(nodes, out);
    for (node, e) in nodes {
        // A node listed and not yet polled has no poll to tell of.
        if e.health.polled || e.health.failure.is_some() {
            out.add(
                &POLL_SUCCESS,
                [*node],
                i64::from(e.health.failure.is_none()),
            );
        }
    }
    for (node, e) in nodes {
        if let Some(d) = e.health.duration {
            out.add(&POLL_DURATION, [*node], d.as_secs_f64());
        }
    }
    for (node, e) in nodes {
        if let Some(t) = e.health.last_success {
            let secs = t
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64();
            out.add(&LAST_SUCCESS, [*node], secs);
        }
    }
    for (node, e) in nodes {
        if let Some(f) = &e.health.failure {
            out.add(&POLL_ERROR, [*node, f.reason.name()], 1i64);
        }
    }
    for (node, e) in nodes {
        if e.configz.read {
            out.add(
                &CONFIGZ_SUCCESS,
                [*node],
                i64::from(e.configz.failure.is_none()),
            );
        }
    }
    for (node, e) in nodes {
        if let Some(f) = &e.configz.failure {
            out.add(&CONFIGZ_ERROR, [*node, f.reason.name()], 1i64);
        }
    }
}

/// One node's headroom: its image GC thresholds and where its image
/// filesystem stands, and its eviction signals.
struct Headroom<'a> {
    node: &'a str,
    high: i32,
    low: i32,
    gc: Option<ImageGcStatus>,
    signals: Vec<SignalRow>,
}

/// The image GC and eviction families of every node with figures and a
/// kubelet configuration read, computed as the DaemonSet computes them.
fn headroom(nodes: &[(&str, &NodeEntry)], out: &mut Sink) {
    let rows: Vec<Headroom<'_>> = nodes
        .iter()
        .filter_map(|(node, e)| {
            let (f, policy) = (e.figures.as_deref()?, e.configz.policy?);
            let observe = |signal| f.observe(signal);
            let gc = gc_status(policy.image_gc, observe(Signal::ImageFsAvailable)).ok();
            let (signals, _missing) = signal_rows(observe, policy.eviction, f.fs_layout());
            Some(Headroom {
                node,
                high: policy.image_gc.high_threshold_percent,
                low: policy.image_gc.low_threshold_percent,
                gc,
                signals,
            })
        })
        .collect();
    for h in &rows {
        if let Some(gc) = &h.gc {
            out.add(&GC_USAGE_PERCENT, [h.node], gc.usage_percent);
        }
    }
    for h in &rows {
        out.add(&GC_HIGH_THRESHOLD_PERCENT, [h.node], i64::from(h.high));
    }
    for h in &rows {
        out.add(&GC_LOW_THRESHOLD_PERCENT, [h.node], i64::from(h.low));
    }
    for h in &rows {
        if let Some(gc) = &h.gc {
            out.add(&GC_BYTES_TO_FREE, [h.node], gc.bytes_to_free);
        }
    }
    for h in &rows {
        for r in &h.signals {
            out.add(&SIGNAL_AVAILABLE, [r.signal.name(), h.node], r.available);
        }
    }
    for h in &rows {
        for r in &h.signals {
            out.add(&SIGNAL_CAPACITY, [r.signal.name(), h.node], r.capacity);
        }
    }
    for h in &rows {
        for r in &h.signals {
            for kind in [Kind::Hard, Kind::Soft] {
                if let Some(t) = r.threshold(kind) {
                    out.add(
                        &EVICTION_THRESHOLD,
                        [r.signal.name(), kind.name(), h.node],
                        t,
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubelet::config::KubeletConfig;
    use crate::model::cluster::{ConfigzEntry, PollHealth};
    use crate::model::{Failure, Reason};
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    fn fs(used: u64) -> FsFigures {
        FsFigures {
            available_bytes: Some(100 - used),
            capacity_bytes: Some(100),
            used_bytes: Some(used),
            inodes_free: None,
            inodes: Some(10),
            inodes_used: Some(1),
        }
    }

    fn table() -> ClusterTable {
        let good = NodeEntry {
            health: PollHealth {
                failure: None,
                polled: true,
                duration: Some(Duration::from_millis(250)),
                last_success: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)),
                failures_in_a_row: 0,
                skipped_pods: 0,
            },
            figures: Some(Arc::new({
                let mut f = NodeFigures::default();
                f.nodefs = Some(fs(40));
                f.imagefs = Some(fs(20));
                f.max_pid = Some(4194304);
                f.push_pod("shop", "web-0", Some(4096), None);
                f.push_container("app", [Some(1024), Some(3), None, None]);
                f.push_volume("cache", Some(512), Some(2));
                f.push_pvc("shop", "data-web-0", fs(60));
                f.shrink();
                f
            })),
            configz: ConfigzEntry::default(),
        };
        let failing = NodeEntry {
            health: PollHealth {
                failure: Some(Failure::new(Reason::Forbidden, "node n2: HTTP 403")),
                polled: true,
                duration: Some(Duration::from_millis(5)),
                last_success: None,
                failures_in_a_row: 4,
                skipped_pods: 0,
            },
            figures: None,
            configz: ConfigzEntry::default(),
        };
        let mut t = ClusterTable {
            synced: true,
            ..ClusterTable::default()
        };
        t.nodes.insert("n1".into(), Arc::new(good));
        t.nodes.insert("n2".into(), Arc::new(failing));
        t.nodes.insert("n3".into(), Arc::new(NodeEntry::default()));
        t
    }

    fn lines(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    #[test]
    fn every_figure_with_its_node_and_nothing_the_summary_left_out() {
        let text = render_node(&table(), "n1", Format::Text).expect("n1");
        let got = lines(&text);
        for want in [
            r#"kubedf_nodefs_capacity_bytes{path="",node="n1"} 100"#,
            r#"kubedf_nodefs_used_bytes{path="",node="n1"} 40"#,
            r#"kubedf_imagefs_available_bytes{mountpoint="",node="n1"} 80"#,
            r#"kubedf_rlimit_maxpid{node="n1"} 4194304"#,
            r#"kubedf_pod_ephemeral_storage_used_bytes{namespace="shop",pod="web-0",node="n1"} 4096"#,
            r#"kubedf_container_rootfs_used_bytes{namespace="shop",pod="web-0",container="app",node="n1"} 1024"#,
            r#"kubedf_container_rootfs_inodes_used{namespace="shop",pod="web-0",container="app",node="n1"} 3"#,
            r#"kubedf_ephemeral_volume_used_bytes{namespace="shop",pod="web-0",volume="cache",kind="",node="n1"} 512"#,
            r#"kubelet_volume_stats_used_bytes{namespace="shop",persistentvolumeclaim="data-web-0",node="n1"} 60"#,
            r#"kubedf_kubelet_poll_success{node="n1"} 1"#,
            r#"kubedf_kubelet_poll_duration_seconds{node="n1"} 0.25"#,
            r#"kubedf_kubelet_last_success_timestamp_seconds{node="n1"} 1.8e+09"#,
        ] {
            assert!(got.contains(&want), "missing {want} in {got:#?}");
        }
        // Left out by the summary: no series, never 0.
        for absent in [
            "kubedf_nodefs_inodes_free{",
            "kubedf_containerfs_",
            "kubedf_rlimit_curproc{",
            "kubedf_pod_ephemeral_storage_inodes_used{",
            "kubedf_container_logs_",
            "kubedf_kubelet_poll_error{",
            "n2",
        ] {
            assert!(!text.contains(absent), "{absent} in {text}");
        }
        assert!(render_node(&table(), "n4", Format::Text).is_none());
        // Listed, not yet polled: a page with no series.
        let pending = render_node(&table(), "n3", Format::Text).expect("n3");
        assert!(lines(&pending).is_empty(), "{pending}");
    }

    #[test]
    fn a_failing_node_has_its_health_and_the_collector_says_so() {
        let mut snapshot = crate::fixtures::node();
        snapshot.cluster = Some(Arc::new(table()));
        let mut sink = Sink::new(Format::OpenMetrics100, 0);
        let result = ClusterCollector.collect(&snapshot, &mut sink);
        assert_eq!(result, Err(Incomplete("1 node(s) failing".into())));
        let text = sink.finish();
        let got = lines(&text);
        for want in [
            r#"kubedf_kubelet_poll_success{node="n2"} 0"#,
            r#"kubedf_kubelet_poll_error{node="n2",reason="forbidden"} 1"#,
            r#"kubedf_kubelet_poll_success{node="n1"} 1"#,
        ] {
            assert!(got.contains(&want), "missing {want} in {got:#?}");
        }
        assert!(!text.contains(r#"kubedf_nodefs_used_bytes{path="",node="n2"}"#));
        assert!(text.contains("# UNIT kubedf_nodefs_used_bytes bytes"));
        // Family by family: nothing moved at the end.
        let mut sink = Sink::new(Format::OpenMetrics100, 0);
        let _ = ClusterCollector.collect(&snapshot, &mut sink);
        assert_eq!(sink.reordered_bytes(), 0);
    }

    #[test]
    fn headroom_for_a_node_whose_configz_was_read_and_none_for_one_refused() {
        let figures = {
            let mut f = NodeFigures::default();
            f.nodefs = Some(FsFigures {
                available_bytes: Some(5000),
                capacity_bytes: Some(10_000),
                inodes_free: Some(100),
                inodes: Some(1000),
                ..FsFigures::default()
            });
            // A dedicated image filesystem, no containerFs: containers on it.
            f.imagefs = Some(FsFigures {
                available_bytes: Some(100),
                capacity_bytes: Some(1000),
                inodes_free: Some(50),
                inodes: Some(500),
                ..FsFigures::default()
            });
            f.max_pid = Some(100);
            f.cur_proc = Some(40);
            Arc::new(f)
        };
        let polled = PollHealth {
            polled: true,
            ..PollHealth::default()
        };
        let read = NodeEntry {
            health: polled.clone(),
            figures: Some(Arc::clone(&figures)),
            configz: ConfigzEntry {
                policy: Some(KubeletConfig::defaults(std::path::PathBuf::new()).headroom()),
                read: true,
                polls_since: 1,
                ..ConfigzEntry::default()
            },
        };
        let refused = NodeEntry {
            health: polled,
            figures: Some(figures),
            configz: ConfigzEntry {
                read: true,
                failure: Some(Failure::new(Reason::Forbidden, "node b: HTTP 403")),
                failures_in_a_row: 1,
                polls_since: 1,
                ..ConfigzEntry::default()
            },
        };
        let mut t = ClusterTable {
            synced: true,
            ..ClusterTable::default()
        };
        t.nodes.insert("a".into(), Arc::new(read));
        t.nodes.insert("b".into(), Arc::new(refused));
        let mut snapshot = crate::fixtures::node();
        snapshot.cluster = Some(Arc::new(t));
        let mut sink = Sink::new(Format::Text, 0);
        // A refused /configz is not a failing node.
        assert_eq!(ClusterCollector.collect(&snapshot, &mut sink), Ok(()));
        assert_eq!(sink.reordered_bytes(), 0);
        let text = sink.finish();
        let got = lines(&text);
        // usage 100 - 100*100/1000 = 90 >= 85: 1000*20/100 - 100 to free.
        // Thresholds: kubelet's defaults, 10% of 10000 and 15% of 1000;
        // containerfs takes imagefs' (dedicated, not split).
        for want in [
            r#"kubedf_image_gc_usage_percent{node="a"} 90"#,
            r#"kubedf_image_gc_high_threshold_percent{node="a"} 85"#,
            r#"kubedf_image_gc_low_threshold_percent{node="a"} 80"#,
            r#"kubedf_image_gc_bytes_to_free{node="a"} 100"#,
            r#"kubedf_eviction_signal_available{signal="nodefs.available",node="a"} 5000"#,
            r#"kubedf_eviction_signal_capacity{signal="nodefs.available",node="a"} 10000"#,
            r#"kubedf_eviction_signal_available{signal="containerfs.available",node="a"} 100"#,
            r#"kubedf_eviction_signal_available{signal="pid.available",node="a"} 60"#,
            r#"kubedf_eviction_signal_capacity{signal="pid.available",node="a"} 100"#,
            r#"kubedf_eviction_threshold{signal="nodefs.available",kind="hard",node="a"} 1000"#,
            r#"kubedf_eviction_threshold{signal="imagefs.available",kind="hard",node="a"} 150"#,
            r#"kubedf_eviction_threshold{signal="containerfs.available",kind="hard",node="a"} 150"#,
            r#"kubedf_eviction_threshold{signal="containerfs.inodesFree",kind="hard",node="a"} 25"#,
            r#"kubedf_kubelet_configz_success{node="a"} 1"#,
            r#"kubedf_kubelet_configz_success{node="b"} 0"#,
            r#"kubedf_kubelet_configz_error{node="b",reason="forbidden"} 1"#,
        ] {
            assert!(got.contains(&want), "missing {want} in {got:#?}");
        }
        // No default for pid.available, no soft thresholds.
        assert!(!text.contains(r#"signal="pid.available",kind"#), "{text}");
        assert!(!text.contains(r#"kind="soft""#), "{text}");
        // The refused node: its figures, no headroom.
        assert!(text.contains(r#"kubedf_nodefs_available_bytes{path="",node="b"} 5000"#));
        for line in &got {
            if line.contains(r#"node="b""#) {
                assert!(
                    !line.starts_with("kubedf_image_gc") && !line.starts_with("kubedf_eviction"),
                    "{line}"
                );
            }
        }
    }
}
