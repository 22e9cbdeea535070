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

/// What kubedf exports of one node's summary.
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
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodFigures {
    pub namespace: Box<str>,
    pub name: Box<str>,
    pub ephemeral_used_bytes: Option<u64>,
    pub ephemeral_inodes_used: Option<u64>,
    pub containers: Vec<ContainerFigures>,
    /// The pod's volumes without a `pvcRef`.
    pub volumes: Vec<VolumeFigures>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerFigures {
    pub name: Box<str>,
    pub rootfs_used_bytes: Option<u64>,
    pub rootfs_inodes_used: Option<u64>,
    pub logs_used_bytes: Option<u64>,
    pub logs_inodes_used: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeFigures {
    pub name: Box<str>,
    pub used_bytes: Option<u64>,
    pub inodes_used: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PvcFigures {
    pub namespace: Box<str>,
    pub name: Box<str>,
    pub fs: FsFigures,
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
