//! Cluster mode's table: per node of this shard, the figures its kubelet's
//! last good `/stats/summary` gave (only those kubedf exports, the summary
//! itself dropped as soon as they are taken) and how its polls fare. The
//! poll loop is its one writer and publishes it whole, immutable; a scrape
//! renders it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use super::failure::Failure;

/// One filesystem's figures, as kubelet's `FsStats` (`time` left out). A
/// figure kubelet left out is `None`, never 0.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FsFigures {
    pub available_bytes: Option<u64>,
    pub capacity_bytes: Option<u64>,
    pub used_bytes: Option<u64>,
    pub inodes_free: Option<u64>,
    pub inodes: Option<u64>,
    pub inodes_used: Option<u64>,
}

/// Where a name is in its node's [`NodeFigures::names`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    start: u32,
    len: u32,
}

/// What kubedf exports of one node's summary, in a few allocations per
/// node rather than several per pod: every name in one string, every
/// container and volume in one list each, a pod naming its share by span.
/// (At 5,000 nodes of 30 pods, one allocation per name and list cost more
/// in the allocator's overhead than the figures themselves.)
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeFigures {
    pub nodefs: Option<FsFigures>,
    pub imagefs: Option<FsFigures>,
    pub containerfs: Option<FsFigures>,
    pub max_pid: Option<i64>,
    pub cur_proc: Option<i64>,
    pub pods: Vec<PodFigures>,
    /// One row per PVC, the first pod using it winning (as kubelet does).
    pub pvcs: Vec<PvcFigures>,
    names: String,
    containers: Vec<ContainerFigures>,
    volumes: Vec<VolumeFigures>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodFigures {
    pub namespace: Span,
    pub name: Span,
    pub ephemeral_used_bytes: Option<u64>,
    pub ephemeral_inodes_used: Option<u64>,
    containers: Span,
    /// The pod's volumes without a `pvcRef`.
    volumes: Span,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerFigures {
    pub name: Span,
    pub rootfs_used_bytes: Option<u64>,
    pub rootfs_inodes_used: Option<u64>,
    pub logs_used_bytes: Option<u64>,
    pub logs_inodes_used: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeFigures {
    pub name: Span,
    pub used_bytes: Option<u64>,
    pub inodes_used: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PvcFigures {
    pub namespace: Span,
    pub name: Span,
    pub fs: FsFigures,
}

/// A container's four figures: rootfs used bytes and inodes, logs used
/// bytes and inodes.
pub type ContainerFigureSet = [Option<u64>; 4];

impl NodeFigures {
    /// The name at `span` ("" for a span of another node's).
    pub fn text(&self, span: Span) -> &str {
        let start = span.start as usize;
        self.names
            .get(start..start.saturating_add(span.len as usize))
            .unwrap_or("")
    }

    pub fn containers(&self, pod: &PodFigures) -> &[ContainerFigures] {
        slice(&self.containers, pod.containers)
    }

    pub fn volumes(&self, pod: &PodFigures) -> &[VolumeFigures] {
        slice(&self.volumes, pod.volumes)
    }

    fn name(&mut self, s: &str) -> Span {
        // A summary is at most the body cap (16 MiB): its names fit in u32.
        let start = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        let len = u32::try_from(s.len()).unwrap_or(0);
        if start == u32::MAX || len == 0 {
            return Span { start, len: 0 };
        }
        self.names.push_str(s);
        Span { start, len }
    }

    /// Adds a pod; its containers and volumes are the ones pushed next.
    pub fn push_pod(
        &mut self,
        namespace: &str,
        name: &str,
        ephemeral_used_bytes: Option<u64>,
        ephemeral_inodes_used: Option<u64>,
    ) {
        let (namespace, name) = (self.name(namespace), self.name(name));
        let containers = Span {
            start: u32::try_from(self.containers.len()).unwrap_or(u32::MAX),
            len: 0,
        };
        let volumes = Span {
            start: u32::try_from(self.volumes.len()).unwrap_or(u32::MAX),
            len: 0,
        };
        self.pods.push(PodFigures {
            namespace,
            name,
            ephemeral_used_bytes,
            ephemeral_inodes_used,
            containers,
            volumes,
        });
    }

    /// Adds a container to the last pod pushed.
    pub fn push_container(&mut self, name: &str, figures: ContainerFigureSet) {
        let name = self.name(name);
        let [
            rootfs_used_bytes,
            rootfs_inodes_used,
            logs_used_bytes,
            logs_inodes_used,
        ] = figures;
        if let Some(pod) = self.pods.last_mut() {
            pod.containers.len += 1;
            self.containers.push(ContainerFigures {
                name,
                rootfs_used_bytes,
                rootfs_inodes_used,
                logs_used_bytes,
                logs_inodes_used,
            });
        }
    }

    /// Adds a volume (without a PVC) to the last pod pushed.
    pub fn push_volume(&mut self, name: &str, used_bytes: Option<u64>, inodes_used: Option<u64>) {
        let name = self.name(name);
        if let Some(pod) = self.pods.last_mut() {
            pod.volumes.len += 1;
            self.volumes.push(VolumeFigures {
                name,
                used_bytes,
                inodes_used,
            });
        }
    }

    pub fn push_pvc(&mut self, namespace: &str, name: &str, fs: FsFigures) {
        let (namespace, name) = (self.name(namespace), self.name(name));
        self.pvcs.push(PvcFigures {
            namespace,
            name,
            fs,
        });
    }

    /// Gives back the spare room of every list once the node is built.
    pub fn shrink(&mut self) {
        self.pods.shrink_to_fit();
        self.pvcs.shrink_to_fit();
        self.names.shrink_to_fit();
        self.containers.shrink_to_fit();
        self.volumes.shrink_to_fit();
    }

    /// The bytes this node's figures allocate (without the allocator's
    /// own overhead).
    pub fn allocated(&self) -> usize {
        use std::mem::size_of;
        size_of::<NodeFigures>()
            + self.pods.capacity() * size_of::<PodFigures>()
            + self.pvcs.capacity() * size_of::<PvcFigures>()
            + self.names.capacity()
            + self.containers.capacity() * size_of::<ContainerFigures>()
            + self.volumes.capacity() * size_of::<VolumeFigures>()
    }
}

fn slice<T>(all: &[T], span: Span) -> &[T] {
    let start = span.start as usize;
    all.get(start..start.saturating_add(span.len as usize))
        .unwrap_or(&[])
}

/// How a node's polls fare.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PollHealth {
    /// The last poll's outcome: `None` when it succeeded (or none was made
    /// and the node is not skipped).
    pub failure: Option<Failure>,
    /// Whether a poll was made (a node the watch skipped has none).
    pub polled: bool,
    /// How long the last poll took.
    pub duration: Option<Duration>,
    pub last_success: Option<SystemTime>,
    /// Polls failed in a row since the last success.
    pub failures_in_a_row: u32,
    /// Pods of the last good summary that could not be decoded.
    pub skipped_pods: usize,
}

/// One node's row.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeEntry {
    pub health: PollHealth,
    /// The last good summary's figures; dropped after
    /// `--cluster.down-after` failed polls in a row.
    pub figures: Option<Arc<NodeFigures>>,
}

/// The poll loop's part of the board.
#[derive(Clone, Debug, Default)]
pub struct ClusterTable {
    /// This shard's nodes, by name: those polled and those the watch
    /// skipped (no address or port).
    pub nodes: BTreeMap<String, Arc<NodeEntry>>,
    /// A whole list of Nodes was received.
    pub synced: bool,
    /// The last failure of the Node watch, if it is failing.
    pub watch_error: Option<String>,
}
