//! A node's summary turned into what kubedf exports of it, at once, so the
//! decoded summary is dropped as soon as its poll ends; and a failed poll
//! turned into its reason.

use std::collections::BTreeSet;

use crate::model::cluster::{ContainerFigures, NodeFigures, PodFigures, PvcFigures, VolumeFigures};
use crate::model::{Failure, Reason};
use crate::sources::fleet::PollError;
use crate::sources::kubelet_client::KubeletClientError;
use crate::sources::kubelet_summary::{Summary, SummaryError};

/// The figures kubedf exports of `summary`, which is consumed. A PVC used by
/// several pods is kept once, for the first pod (as kubelet's collector
/// does).
pub fn figures(summary: Summary) -> NodeFigures {
    let node = summary.node;
    let mut seen_pvcs = BTreeSet::new();
    let mut pvcs = Vec::new();
    let mut pods = Vec::with_capacity(summary.pods.len());
    for pod in summary.pods {
        let mut volumes = Vec::new();
        for v in pod.volumes {
            match v.pvc {
                Some((namespace, name)) => {
                    if seen_pvcs.insert((namespace.clone(), name.clone())) {
                        pvcs.push(PvcFigures {
                            namespace: namespace.into(),
                            name: name.into(),
                            fs: v.fs,
                        });
                    }
                }
                None => volumes.push(VolumeFigures {
                    name: v.name.into(),
                    used_bytes: v.fs.used_bytes,
                    inodes_used: v.fs.inodes_used,
                }),
            }
        }
        pods.push(PodFigures {
            namespace: pod.namespace.into(),
            name: pod.name.into(),
            ephemeral_used_bytes: pod.ephemeral_storage.and_then(|f| f.used_bytes),
            ephemeral_inodes_used: pod.ephemeral_storage.and_then(|f| f.inodes_used),
            containers: pod
                .containers
                .into_iter()
                .map(|c| ContainerFigures {
                    name: c.name.into(),
                    rootfs_used_bytes: c.rootfs.and_then(|f| f.used_bytes),
                    rootfs_inodes_used: c.rootfs.and_then(|f| f.inodes_used),
                    logs_used_bytes: c.logs.and_then(|f| f.used_bytes),
                    logs_inodes_used: c.logs.and_then(|f| f.inodes_used),
                })
                .collect(),
            volumes,
        });
    }
    NodeFigures {
        nodefs: node.fs,
        imagefs: node.image_fs,
        containerfs: node.container_fs,
        max_pid: node.rlimit.and_then(|r| r.max_pid),
        cur_proc: node.rlimit.and_then(|r| r.cur_proc),
        pods,
        pvcs,
    }
}

/// Why a poll failed, in the one reason vocabulary, with its message.
pub fn failure(e: &PollError) -> Failure {
    let reason = match e {
        PollError::Kubelet(k) => match k {
            KubeletClientError::Unauthorized { .. } => Reason::Unauthorized,
            KubeletClientError::Forbidden { .. } => Reason::Forbidden,
            KubeletClientError::Status { .. } => Reason::HttpError,
            KubeletClientError::Timeout { .. } => Reason::Timeout,
            KubeletClientError::Tls { .. } => Reason::Tls,
            // A body cut short is the connection breaking mid-answer.
            KubeletClientError::Connection { .. } | KubeletClientError::Body { .. } => {
                Reason::Connection
            }
            KubeletClientError::TooLarge { .. } => Reason::TooLarge,
            KubeletClientError::Url { .. } => Reason::NoAddress,
            KubeletClientError::CaFile { .. } | KubeletClientError::Build { .. } => Reason::Tls,
        },
        PollError::Summary(s) => match s {
            SummaryError::Document { .. } | SummaryError::OtherNode { .. } => Reason::BadBody,
            SummaryError::Pod { .. } => Reason::BadBody,
        },
    };
    Failure::new(reason, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::kubelet_summary::decode;

    #[test]
    fn only_exported_figures_are_kept_and_a_pvc_once() {
        let body = br#"{"node": {"nodeName": "n1",
            "fs": {"availableBytes": 1, "capacityBytes": 3, "usedBytes": 2},
            "runtime": {"imageFs": {"usedBytes": 5}},
            "rlimit": {"maxpid": 100, "curproc": 7}},
          "pods": [
            {"podRef": {"name": "a", "namespace": "ns", "uid": "u1"},
             "containers": [{"name": "c", "rootfs": {"usedBytes": 10, "inodesUsed": 1},
                              "logs": {"usedBytes": 20}}],
             "volume": [{"name": "data", "usedBytes": 30, "capacityBytes": 90,
                         "pvcRef": {"name": "claim", "namespace": "ns"}},
                        {"name": "cache", "usedBytes": 40, "inodesUsed": 4}],
             "ephemeral-storage": {"usedBytes": 70, "inodesUsed": 5}},
            {"podRef": {"name": "b", "namespace": "ns", "uid": "u2"},
             "volume": [{"name": "data", "usedBytes": 31,
                         "pvcRef": {"name": "claim", "namespace": "ns"}}]}
          ]}"#;
        let f = figures(decode(body, "n1").expect("decodes").summary);
        assert_eq!(f.nodefs.and_then(|fs| fs.used_bytes), Some(2));
        assert_eq!(f.imagefs.and_then(|fs| fs.used_bytes), Some(5));
        assert_eq!(f.imagefs.and_then(|fs| fs.capacity_bytes), None);
        assert_eq!(f.containerfs, None);
        assert_eq!((f.max_pid, f.cur_proc), (Some(100), Some(7)));
        assert_eq!(f.pvcs.len(), 1, "{:?}", f.pvcs);
        assert_eq!(f.pvcs[0].fs.used_bytes, Some(30));
        let a = &f.pods[0];
        assert_eq!(
            (a.ephemeral_used_bytes, a.ephemeral_inodes_used),
            (Some(70), Some(5))
        );
        assert_eq!(a.containers[0].rootfs_used_bytes, Some(10));
        assert_eq!(a.containers[0].logs_inodes_used, None);
        assert_eq!(a.volumes.len(), 1);
        assert_eq!(&*a.volumes[0].name, "cache");
        assert_eq!(f.pods[1].ephemeral_used_bytes, None);
    }
}
