//! `GET /stats/summary`: kubelet's Summary API shape (`stats/v1alpha1`) for
//! what kubedf measures, built from the snapshot only (no I/O). Keys and
//! types follow kubelet's JSON tags; a figure kubedf does not have is left
//! out, never written as 0, and cpu, memory, network and the like are absent.

use std::time::SystemTime;

use serde::Serialize;

use crate::model::pod::{Measured, PodRow, Usage};
use crate::model::{Filesystem, FsUsage, Snapshot};

#[derive(Debug, Serialize, PartialEq)]
pub struct Summary {
    pub node: NodeStats,
    pub pods: Vec<PodStats>,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeStats {
    pub node_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fs: Option<FsStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rlimit: Option<RlimitStats>,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeStats {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_fs: Option<FsStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_fs: Option<FsStats>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct RlimitStats {
    pub time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maxpid: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub curproc: Option<i64>,
}

/// kubelet's FsStats: every number is a pointer there, omitted when unset.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FsStats {
    pub time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub used_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inodes_free: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inodes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inodes_used: Option<u64>,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodStats {
    pub pod_ref: PodReference,
    pub containers: Vec<ContainerStats>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volume: Vec<VolumeStats>,
    #[serde(rename = "ephemeral-storage", skip_serializing_if = "Option::is_none")]
    pub ephemeral_storage: Option<FsStats>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct PodReference {
    pub name: String,
    pub namespace: String,
    pub uid: String,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct ContainerStats {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<FsStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logs: Option<FsStats>,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VolumeStats {
    #[serde(flatten)]
    pub fs: FsStats,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pvc_ref: Option<PvcReference>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct PvcReference {
    pub name: String,
    pub namespace: String,
}

/// metav1.Time's JSON form: RFC 3339 in UTC, whole seconds.
fn time(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A whole filesystem: statfs figures, with kubelet's used.
fn whole(fs: &FsUsage, at: SystemTime) -> FsStats {
    FsStats {
        time: time(at),
        available_bytes: Some(fs.available_bytes),
        capacity_bytes: Some(fs.capacity_bytes),
        used_bytes: Some(fs.used_bytes),
        inodes_free: Some(fs.inodes_free),
        inodes: Some(fs.inodes),
        inodes_used: Some(fs.inodes_used),
    }
}

/// A part measured on a filesystem: its own used figures, the filesystem's
/// capacity and free space (kubelet fills these from the filesystem that
/// holds the part).
fn part(usage: &Usage, on: Option<&Filesystem>) -> FsStats {
    let fs = on.map(|f| &f.usage);
    FsStats {
        time: time(usage.time),
        available_bytes: fs.map(|f| f.available_bytes),
        capacity_bytes: fs.map(|f| f.capacity_bytes),
        used_bytes: Some(usage.bytes),
        inodes_free: fs.map(|f| f.inodes_free),
        inodes: fs.map(|f| f.inodes),
        inodes_used: Some(usage.inodes),
    }
}

fn measured(m: &Measured, on: Option<&Filesystem>) -> Option<FsStats> {
    match m {
        Some(Ok(u)) => Some(part(u, on)),
        _ => None,
    }
}

/// The summary of a snapshot, for the node `node_name`.
pub fn summary(snapshot: &Snapshot, node_name: &str) -> Summary {
    let at = snapshot.taken_at();
    let nodefs = snapshot.nodefs().ok();
    let image_fs = snapshot.image_fs().ok();
    let container_fs = snapshot.container_fs().ok();
    let runtime = (image_fs.is_some() || container_fs.is_some()).then(|| RuntimeStats {
        image_fs: image_fs.map(|f| whole(&f.usage, at)),
        container_fs: container_fs.map(|f| whole(&f.usage, at)),
    });
    let rlimit = snapshot.rlimit().ok().map(|r| RlimitStats {
        time: time(at),
        maxpid: Some(r.maxpid),
        curproc: Some(r.curproc),
    });
    let node = NodeStats {
        node_name: node_name.to_owned(),
        fs: nodefs.map(|f| whole(&f.usage, at)),
        runtime,
        rlimit,
    };
    let pods = snapshot
        .pods
        .iter()
        .flat_map(|t| t.rows.iter())
        .map(|row| pod_stats(snapshot, row, nodefs, container_fs))
        .collect();
    Summary { node, pods }
}

fn pod_stats(
    snapshot: &Snapshot,
    row: &PodRow,
    nodefs: Option<&Filesystem>,
    container_fs: Option<&Filesystem>,
) -> PodStats {
    let containers = row
        .containers
        .iter()
        .map(|c| ContainerStats {
            name: c.name.clone(),
            rootfs: c.rootfs.as_ref().ok().map(|u| part(u, container_fs)),
            logs: measured(&c.logs, nodefs),
        })
        .collect();
    let mut volume: Vec<VolumeStats> = row
        .volumes
        .iter()
        .filter_map(|v| {
            measured(&v.usage, nodefs).map(|fs| VolumeStats {
                fs,
                name: v.name.clone(),
                pvc_ref: None,
            })
        })
        .collect();
    // The PVCs of the pod, from the volume_stats table when it is on.
    if let Some(table) = &snapshot.volumes {
        for (name, claim) in &row.pod.storage.claims {
            let stats = table
                .rows
                .iter()
                .find(|r| r.namespace == row.pod.namespace && &r.claim == claim)
                .and_then(|r| r.reading().stats)
                .and_then(Result::ok);
            if let Some(usage) = stats {
                volume.push(VolumeStats {
                    fs: whole(&usage, snapshot.taken_at()),
                    name: name.clone(),
                    pvc_ref: Some(PvcReference {
                        name: claim.clone(),
                        namespace: row.pod.namespace.clone(),
                    }),
                });
            }
        }
    }
    // kubelet's calcEphemeralStorage takes capacity and free from nodefs.
    let ephemeral_storage = match row.ephemeral_storage() {
        Some(Ok(total)) => Some(part(&total, nodefs)),
        _ => None,
    };
    PodStats {
        pod_ref: PodReference {
            name: row.pod.name.clone(),
            namespace: row.pod.namespace.clone(),
            uid: row.pod.uid.clone(),
        },
        containers,
        volume,
        ephemeral_storage,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::pod::tests::{row, snapshot};
    use crate::model::pod::{Failure, Reason};

    #[test]
    fn keys_follow_kubelets_json_tags_and_unset_numbers_are_absent() {
        let mut r = row();
        r.containers[1].logs = Some(Err(Failure::new(Reason::NotFound, "gone")));
        let s = snapshot(vec![r]);
        let v = serde_json::to_value(summary(&s, "node-1")).unwrap();
        assert_eq!(v["node"]["nodeName"], "node-1");
        assert!(v["node"].get("fs").is_none(), "nodefs not sampled: absent");
        assert!(v["node"].get("cpu").is_none());
        let pod = &v["pods"][0];
        assert_eq!(pod["podRef"]["uid"], "u-1");
        assert_eq!(pod["containers"][0]["name"], "app");
        assert_eq!(pod["containers"][0]["rootfs"]["usedBytes"], 4096);
        assert_eq!(pod["containers"][0]["rootfs"]["inodesUsed"], 3);
        assert!(
            pod["containers"][0]["rootfs"]
                .get("capacityBytes")
                .is_none()
        );
        assert_eq!(pod["containers"][0]["logs"]["time"], "1970-01-01T00:01:41Z");
        assert!(pod["containers"][1].get("logs").is_none());
        assert_eq!(pod["volume"][0]["name"], "cache");
        assert_eq!(pod["volume"][0]["usedBytes"], 40960);
        assert!(pod["volume"][0].get("pvcRef").is_none());
        assert!(
            pod.get("ephemeral-storage").is_none(),
            "a part failed: no total"
        );
    }

    #[test]
    fn the_pods_total() {
        let s = snapshot(vec![row()]);
        let v = serde_json::to_value(summary(&s, "n")).unwrap();
        let total = &v["pods"][0]["ephemeral-storage"];
        assert_eq!(total["usedBytes"], 58344);
        assert_eq!(total["inodesUsed"], 18);
        assert_eq!(total["time"], "1970-01-01T00:01:45Z");
    }
}
