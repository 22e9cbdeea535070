//! A node's summary turned into what kubedf exports of it, at once, so the
//! decoded summary is dropped as soon as its poll ends; and a failed poll
//! (or `/configz` read) turned into its reason.

use std::collections::BTreeSet;

use crate::model::cluster::NodeFigures;
use crate::model::{Failure, Reason};
use crate::sources::fleet::{ConfigzPollError, PollError};
use crate::sources::kubelet_client::KubeletClientError;
use crate::sources::kubelet_summary::{Summary, SummaryError};

/// The figures kubedf exports of `summary`, which is consumed. A PVC used by
/// several pods is kept once, for the first pod (as kubelet's collector
/// does).
pub fn figures(summary: Summary) -> NodeFigures {
    let node = summary.node;
    let mut seen_pvcs = BTreeSet::new();
    let mut out = NodeFigures::default();
    out.nodefs = node.fs;
    out.imagefs = node.image_fs;
    out.containerfs = node.container_fs;
    out.max_pid = node.rlimit.and_then(|r| r.max_pid);
    out.cur_proc = node.rlimit.and_then(|r| r.cur_proc);
    out.pods.reserve_exact(summary.pods.len());
    for pod in summary.pods {
        out.push_pod(
            &pod.namespace,
            &pod.name,
            pod.ephemeral_storage.and_then(|f| f.used_bytes),
            pod.ephemeral_storage.and_then(|f| f.inodes_used),
        );
        for c in &pod.containers {
            out.push_container(
                &c.name,
                [
                    c.rootfs.and_then(|f| f.used_bytes),
                    c.rootfs.and_then(|f| f.inodes_used),
                    c.logs.and_then(|f| f.used_bytes),
                    c.logs.and_then(|f| f.inodes_used),
                ],
            );
        }
        for v in pod.volumes {
            match v.pvc {
                Some(claim) => {
                    if !seen_pvcs.contains(&claim) {
                        out.push_pvc(&claim.0, &claim.1, v.fs);
                        seen_pvcs.insert(claim);
                    }
                }
                None => out.push_volume(&v.name, v.fs.used_bytes, v.fs.inodes_used),
            }
        }
    }
    out.shrink();
    out
}

/// Why a poll failed, in the one reason vocabulary, with its message.
pub fn failure(e: &PollError) -> Failure {
    let reason = match e {
        PollError::Kubelet(k) => kubelet_reason(k),
        PollError::Summary(s) => match s {
            SummaryError::Document { .. } | SummaryError::OtherNode { .. } => Reason::BadBody,
            SummaryError::Pod { .. } => Reason::BadBody,
        },
    };
    Failure::new(reason, e.to_string())
}

/// Why a read of `/configz` failed, in the same vocabulary.
pub fn configz_failure(e: &ConfigzPollError) -> Failure {
    let reason = match e {
        ConfigzPollError::Kubelet(k) => kubelet_reason(k),
        // Not kubelet's configuration, or one kubelet itself would refuse.
        ConfigzPollError::Configz(_) => Reason::BadBody,
    };
    Failure::new(reason, e.to_string())
}

fn kubelet_reason(e: &KubeletClientError) -> Reason {
    match e {
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
    }
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
        assert_eq!(
            (f.text(f.pvcs[0].namespace), f.text(f.pvcs[0].name)),
            ("ns", "claim")
        );
        let a = &f.pods[0];
        assert_eq!((f.text(a.namespace), f.text(a.name)), ("ns", "a"));
        assert_eq!(
            (a.ephemeral_used_bytes, a.ephemeral_inodes_used),
            (Some(70), Some(5))
        );
        let containers = f.containers(a);
        assert_eq!(containers.len(), 1);
        assert_eq!(f.text(containers[0].name), "c");
        assert_eq!(containers[0].rootfs_used_bytes, Some(10));
        assert_eq!(containers[0].logs_inodes_used, None);
        let volumes = f.volumes(a);
        assert_eq!(volumes.len(), 1);
        assert_eq!(f.text(volumes[0].name), "cache");
        assert_eq!(volumes[0].used_bytes, Some(40));
        let b = &f.pods[1];
        assert_eq!(f.text(b.name), "b");
        assert_eq!(b.ephemeral_used_bytes, None);
        assert!(f.containers(b).is_empty() && f.volumes(b).is_empty());
    }
}
