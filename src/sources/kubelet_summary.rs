//! kubelet's `/stats/summary` (Summary API, `stats/v1alpha1`) decoded into
//! the few figures kubedf exports in cluster mode: the node's filesystems
//! (`node.fs`, `node.runtime.imageFs`/`containerFs`), its PIDs
//! (`node.rlimit`), and per pod its reference, ephemeral storage, process
//! count, containers' rootfs and logs, and volumes (with their `pvcRef`).
//! cpu, memory, network, swap, accelerators and the like are skipped by the
//! parser, never held.
//!
//! A figure kubelet leaves out stays `None`, never 0: kubelet omits what it
//! could not measure (`omitempty` on every pointer). One malformed pod (no
//! `podRef`, a number that is not one) is skipped with an error naming it;
//! the other pods are kept. Memory is bounded by the body, which the client
//! caps ([`super::kubelet_client`]); pods are decoded one at a time from the
//! borrowed body, so a bad one costs only itself.

use serde::Deserialize;
use serde_json::value::RawValue;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SummaryError {
    #[error("node {node}: /stats/summary is not a Summary: {reason}")]
    Document { node: String, reason: String },
    #[error("node {node}: /stats/summary is node {answered:?}'s")]
    OtherNode { node: String, answered: String },
    #[error("node {node}: /stats/summary pods[{index}] ({pod}) skipped: {reason}")]
    Pod {
        node: String,
        index: usize,
        pod: String,
        reason: String,
    },
}

/// One filesystem's figures, as kubelet's `FsStats`; the model's type, as
/// cluster mode keeps it.
pub use crate::model::cluster::FsFigures;

/// `node.rlimit`: the node's PID limit and the processes running.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct Rlimit {
    #[serde(rename = "maxpid")]
    pub max_pid: Option<i64>,
    #[serde(rename = "curproc")]
    pub cur_proc: Option<i64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeFigures {
    pub node_name: String,
    pub fs: Option<FsFigures>,
    pub image_fs: Option<FsFigures>,
    pub container_fs: Option<FsFigures>,
    pub rlimit: Option<Rlimit>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerFigures {
    pub name: String,
    pub rootfs: Option<FsFigures>,
    pub logs: Option<FsFigures>,
}

/// A volume of a pod; `pvc` is `(namespace, name)` of its claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeFigures {
    pub name: String,
    pub pvc: Option<(String, String)>,
    pub fs: FsFigures,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodFigures {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub ephemeral_storage: Option<FsFigures>,
    pub process_count: Option<u64>,
    pub containers: Vec<ContainerFigures>,
    pub volumes: Vec<VolumeFigures>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub node: NodeFigures,
    pub pods: Vec<PodFigures>,
}

/// A summary and the pods it had to skip.
#[derive(Debug, Default)]
pub struct Decoded {
    pub summary: Summary,
    pub skipped: Vec<SummaryError>,
}

// The wire shapes, borrowed from the body where they can be.

#[derive(Deserialize)]
struct WireSummary<'a> {
    node: WireNode,
    #[serde(borrow, default)]
    pods: Option<Vec<&'a RawValue>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireNode {
    #[serde(default)]
    node_name: String,
    fs: Option<FsFigures>,
    runtime: Option<WireRuntime>,
    rlimit: Option<Rlimit>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireRuntime {
    image_fs: Option<FsFigures>,
    container_fs: Option<FsFigures>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WirePod {
    pod_ref: WirePodRef,
    #[serde(default)]
    containers: Option<Vec<WireContainer>>,
    #[serde(default)]
    volume: Option<Vec<WireVolume>>,
    #[serde(rename = "ephemeral-storage")]
    ephemeral_storage: Option<FsFigures>,
    #[serde(rename = "process_stats")]
    process_stats: Option<WireProcessStats>,
}

#[derive(Deserialize)]
struct WirePodRef {
    name: String,
    namespace: String,
    #[serde(default)]
    uid: String,
}

#[derive(Deserialize)]
struct WireContainer {
    name: String,
    rootfs: Option<FsFigures>,
    logs: Option<FsFigures>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireVolume {
    name: String,
    pvc_ref: Option<WirePvcRef>,
    // FsStats is inlined in VolumeStats.
    #[serde(flatten)]
    fs: FsFigures,
}

#[derive(Deserialize)]
struct WirePvcRef {
    name: String,
    namespace: String,
}

#[derive(Deserialize)]
struct WireProcessStats {
    process_count: Option<u64>,
}

/// Only the pod's reference, to name a pod that does not decode.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodNameOnly {
    pod_ref: Option<PodRefLoose>,
}

#[derive(Deserialize)]
struct PodRefLoose {
    name: Option<serde_json::Value>,
    namespace: Option<serde_json::Value>,
}

/// Decodes `body`, the answer of `node`'s kubelet. A body from another node
/// (`node.nodeName` set and different) is an error: an address reused by
/// another node must not lend it this one's name.
pub fn decode(body: &[u8], node: &str) -> Result<Decoded, SummaryError> {
    let wire: WireSummary<'_> =
        serde_json::from_slice(body).map_err(|e| SummaryError::Document {
            node: node.to_owned(),
            reason: e.to_string(),
        })?;
    if !wire.node.node_name.is_empty() && wire.node.node_name != node {
        return Err(SummaryError::OtherNode {
            node: node.to_owned(),
            answered: wire.node.node_name,
        });
    }
    let runtime = wire.node.runtime;
    let mut decoded = Decoded {
        summary: Summary {
            node: NodeFigures {
                node_name: node.to_owned(),
                fs: wire.node.fs,
                image_fs: runtime.as_ref().and_then(|r| r.image_fs),
                container_fs: runtime.as_ref().and_then(|r| r.container_fs),
                rlimit: wire.node.rlimit,
            },
            pods: Vec::new(),
        },
        skipped: Vec::new(),
    };
    let raw_pods = wire.pods.unwrap_or_default();
    decoded.summary.pods.reserve_exact(raw_pods.len());
    for (index, raw) in raw_pods.into_iter().enumerate() {
        match serde_json::from_str::<WirePod>(raw.get()) {
            Ok(pod) => decoded.summary.pods.push(pod_figures(pod)),
            Err(e) => decoded.skipped.push(SummaryError::Pod {
                node: node.to_owned(),
                index,
                pod: pod_name(raw),
                reason: e.to_string(),
            }),
        }
    }
    Ok(decoded)
}

fn pod_figures(pod: WirePod) -> PodFigures {
    PodFigures {
        namespace: pod.pod_ref.namespace,
        name: pod.pod_ref.name,
        uid: pod.pod_ref.uid,
        ephemeral_storage: pod.ephemeral_storage,
        process_count: pod.process_stats.and_then(|p| p.process_count),
        containers: pod
            .containers
            .unwrap_or_default()
            .into_iter()
            .map(|c| ContainerFigures {
                name: c.name,
                rootfs: c.rootfs,
                logs: c.logs,
            })
            .collect(),
        volumes: pod
            .volume
            .unwrap_or_default()
            .into_iter()
            .map(|v| VolumeFigures {
                name: v.name,
                pvc: v.pvc_ref.map(|r| (r.namespace, r.name)),
                fs: v.fs,
            })
            .collect(),
    }
}

/// `namespace/name` of a pod that did not decode, as far as it can be read
/// (escaped: names are data), or "no podRef".
fn pod_name(raw: &RawValue) -> String {
    let Ok(PodNameOnly { pod_ref: Some(r) }) = serde_json::from_str::<PodNameOnly>(raw.get())
    else {
        return "no podRef".into();
    };
    let show = |v: Option<serde_json::Value>| match v {
        Some(serde_json::Value::String(s)) => s.escape_debug().to_string(),
        Some(other) => other.to_string(),
        None => "?".into(),
    };
    format!("{}/{}", show(r.namespace), show(r.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A summary as kubelet 1.33 writes it (stats/v1alpha1 JSON tags), with
    /// the figures kubedf does not keep (cpu, memory, network, swap) present
    /// so that skipping them is tested.
    fn body() -> String {
        r#"{
  "node": {
    "nodeName": "n1",
    "systemContainers": [{"name": "kubelet", "startTime": "2026-01-01T00:00:00Z",
      "cpu": {"time": "2026-01-01T00:01:00Z", "usageNanoCores": 1, "usageCoreNanoSeconds": 2}}],
    "startTime": "2026-01-01T00:00:00Z",
    "cpu": {"time": "2026-01-01T00:01:00Z", "usageNanoCores": 123},
    "memory": {"time": "2026-01-01T00:01:00Z", "workingSetBytes": 456},
    "network": {"time": "2026-01-01T00:01:00Z", "name": "eth0", "rxBytes": 1, "interfaces": []},
    "fs": {"time": "2026-01-01T00:01:00Z", "availableBytes": 100, "capacityBytes": 300,
      "usedBytes": 200, "inodesFree": 10, "inodes": 30, "inodesUsed": 20},
    "runtime": {"imageFs": {"time": "2026-01-01T00:01:00Z", "availableBytes": 1, "capacityBytes": 3,
      "usedBytes": 2}, "containerFs": {"availableBytes": 7, "capacityBytes": 9, "usedBytes": 0}},
    "rlimit": {"time": "2026-01-01T00:01:00Z", "maxpid": 4194304, "curproc": 321},
    "swap": {"time": "2026-01-01T00:01:00Z", "swapUsageBytes": 0}
  },
  "pods": [
    {"podRef": {"name": "web-0", "namespace": "shop", "uid": "u-1"},
     "startTime": "2026-01-01T00:00:00Z",
     "containers": [{"name": "app", "startTime": "2026-01-01T00:00:00Z",
        "cpu": {"usageNanoCores": 5}, "memory": {"rssBytes": 6},
        "rootfs": {"availableBytes": 100, "capacityBytes": 300, "usedBytes": 40, "inodesFree": 10,
          "inodes": 30, "inodesUsed": 4},
        "logs": {"availableBytes": 100, "capacityBytes": 300, "usedBytes": 12, "inodesUsed": 1}}],
     "cpu": {"usageNanoCores": 5},
     "network": {"name": "eth0", "rxBytes": 9},
     "volume": [
        {"time": "2026-01-01T00:01:00Z", "availableBytes": 50, "capacityBytes": 60, "usedBytes": 10,
         "inodesFree": 5, "inodes": 6, "inodesUsed": 1, "name": "data",
         "pvcRef": {"name": "data-web-0", "namespace": "shop"}},
        {"usedBytes": 4096, "inodesUsed": 2, "name": "cache"}
     ],
     "ephemeral-storage": {"availableBytes": 100, "capacityBytes": 300, "usedBytes": 4154,
        "inodesUsed": 7},
     "process_stats": {"process_count": 3},
     "swap": {"swapUsageBytes": 0}},
    {"podRef": {"name": "bad", "namespace": "shop", "uid": "u-2"},
     "containers": [{"name": "x", "rootfs": {"usedBytes": "lots"}}]},
    {"containers": []},
    {"podRef": {"name": "bare", "namespace": "kube-system", "uid": "u-3"}}
  ]
}"#
        .into()
    }

    #[test]
    fn decodes_what_kubedf_exports() {
        let d = decode(body().as_bytes(), "n1").expect("decodes");
        let node = &d.summary.node;
        assert_eq!(node.node_name, "n1");
        assert_eq!(
            node.fs,
            Some(FsFigures {
                available_bytes: Some(100),
                capacity_bytes: Some(300),
                used_bytes: Some(200),
                inodes_free: Some(10),
                inodes: Some(30),
                inodes_used: Some(20),
            })
        );
        assert_eq!(node.image_fs.and_then(|f| f.used_bytes), Some(2));
        assert_eq!(node.image_fs.and_then(|f| f.inodes), None);
        assert_eq!(node.container_fs.and_then(|f| f.used_bytes), Some(0));
        assert_eq!(
            node.rlimit,
            Some(Rlimit {
                max_pid: Some(4194304),
                cur_proc: Some(321)
            })
        );
        let names: Vec<&str> = d.summary.pods.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["web-0", "bare"]);
        let web = &d.summary.pods[0];
        assert_eq!((web.namespace.as_str(), web.uid.as_str()), ("shop", "u-1"));
        assert_eq!(web.process_count, Some(3));
        assert_eq!(web.ephemeral_storage.and_then(|f| f.used_bytes), Some(4154));
        assert_eq!(web.ephemeral_storage.and_then(|f| f.inodes_free), None);
        assert_eq!(web.containers.len(), 1);
        assert_eq!(
            web.containers[0].rootfs.and_then(|f| f.used_bytes),
            Some(40)
        );
        assert_eq!(web.containers[0].logs.and_then(|f| f.used_bytes), Some(12));
        assert_eq!(web.containers[0].logs.and_then(|f| f.inodes), None);
        assert_eq!(web.volumes.len(), 2);
        assert_eq!(
            web.volumes[0].pvc,
            Some(("shop".to_owned(), "data-web-0".to_owned()))
        );
        assert_eq!(web.volumes[0].fs.capacity_bytes, Some(60));
        assert_eq!(web.volumes[1].pvc, None);
        assert_eq!(web.volumes[1].fs.used_bytes, Some(4096));
        assert_eq!(web.volumes[1].fs.capacity_bytes, None);
        let bare = &d.summary.pods[1];
        assert!(bare.containers.is_empty() && bare.volumes.is_empty());
        assert_eq!((bare.ephemeral_storage, bare.process_count), (None, None));
    }

    #[test]
    fn a_malformed_pod_is_skipped_and_named() {
        let d = decode(body().as_bytes(), "n1").expect("decodes");
        assert_eq!(d.skipped.len(), 2, "{:?}", d.skipped);
        let first = d.skipped[0].to_string();
        assert!(
            first.starts_with("node n1: /stats/summary pods[1] (shop/bad) skipped: invalid type"),
            "{first}"
        );
        let second = d.skipped[1].to_string();
        assert!(
            second.starts_with(
                "node n1: /stats/summary pods[2] (no podRef) skipped: missing field `podRef`"
            ),
            "{second}"
        );
    }

    #[test]
    fn a_node_without_figures_has_none() {
        let d = decode(br#"{"node": {"nodeName": "n1"}}"#, "n1").expect("decodes");
        assert_eq!(
            d.summary.node,
            NodeFigures {
                node_name: "n1".into(),
                ..NodeFigures::default()
            }
        );
        assert!(d.summary.pods.is_empty() && d.skipped.is_empty());
        let d = decode(br#"{"node": {"nodeName": "n1"}, "pods": null}"#, "n1").expect("null pods");
        assert!(d.summary.pods.is_empty());
    }

    #[test]
    fn not_a_summary() {
        for (body, want) in [
            (
                &b"{\"node\": {\"nodeName\": \"n1\"}, \"pods\": [{\"podRef\""[..],
                "EOF while parsing",
            ),
            (b"<html>", "expected value"),
            (b"{}", "missing field `node`"),
            (
                b"{\"node\": {\"fs\": {\"usedBytes\": -1}}}",
                "invalid value",
            ),
        ] {
            let e = decode(body, "n1").expect_err("not a summary").to_string();
            assert!(
                e.starts_with("node n1: /stats/summary is not a Summary: "),
                "{e}"
            );
            assert!(e.contains(want), "{e} lacks {want}");
        }
        let e = decode(br#"{"node": {"nodeName": "n2"}}"#, "n1").expect_err("other node");
        assert_eq!(
            e,
            SummaryError::OtherNode {
                node: "n1".into(),
                answered: "n2".into()
            }
        );
    }

    #[test]
    fn a_hostile_pod_name_is_escaped() {
        let body = br#"{"node": {}, "pods": [{"podRef": {"name": "a\nb", "namespace": 7}}]}"#;
        let d = decode(body, "n1").expect("decodes");
        let e = d.skipped[0].to_string();
        assert!(e.contains("(7/a\\nb)"), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }
}
