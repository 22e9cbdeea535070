//! Cluster mode's table: per node of this shard, the figures its kubelet's
//! last good `/stats/summary` gave (only those kubedf exports, the summary
//! itself dropped as soon as they are taken), what its last good `/configz`
//! said of image GC and eviction (nothing else of it), and how its polls
//! and reads fare. The poll loop is its one writer and publishes it whole,
//! immutable; a scrape renders it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use super::failure::Failure;
use crate::kubelet::config::HeadroomPolicy;
use crate::kubelet::eviction::{FsLayout, Signal};
use crate::kubelet::int64;

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

impl NodeFigures {
    /// (available, capacity) of a signal, as kubelet's eviction manager
    /// observes it (`makeSignalObservations` reads this same summary):
    /// nodefs from `node.fs`, imagefs from `node.runtime.imageFs`,
    /// containerfs from `node.runtime.containerFs` (else `imageFs`, as the
    /// DaemonSet does when the runtime reports no container filesystem),
    /// pid from `node.rlimit` (maxpid - curproc of maxpid).
    pub fn observe(&self, signal: Signal) -> Result<(i64, i64), String> {
        let fs = |fs: Option<&FsFigures>, what: &str, inodes: bool| {
            let fs = fs.ok_or_else(|| format!("the summary has no {what}"))?;
            let (available, capacity, names) = if inodes {
                (fs.inodes_free, fs.inodes, ("inodesFree", "inodes"))
            } else {
                (
                    fs.available_bytes,
                    fs.capacity_bytes,
                    ("availableBytes", "capacityBytes"),
                )
            };
            match (available, capacity) {
                (Some(a), Some(c)) => Ok((int64(a), int64(c))),
                (None, _) => Err(format!("the summary's {what} has no {}", names.0)),
                (_, None) => Err(format!("the summary's {what} has no {}", names.1)),
            }
        };
        let container_fs = match &self.containerfs {
            Some(c) => (Some(c), "node.runtime.containerFs"),
            None => (self.imagefs.as_ref(), "node.runtime.imageFs"),
        };
        match signal {
            Signal::NodeFsAvailable => fs(self.nodefs.as_ref(), "node.fs", false),
            Signal::NodeFsInodesFree => fs(self.nodefs.as_ref(), "node.fs", true),
            Signal::ImageFsAvailable => fs(self.imagefs.as_ref(), "node.runtime.imageFs", false),
            Signal::ImageFsInodesFree => fs(self.imagefs.as_ref(), "node.runtime.imageFs", true),
            Signal::ContainerFsAvailable => fs(container_fs.0, container_fs.1, false),
            Signal::ContainerFsInodesFree => fs(container_fs.0, container_fs.1, true),
            Signal::PidAvailable => match (self.max_pid, self.cur_proc) {
                (Some(max), Some(cur)) => Ok((max.saturating_sub(cur), max)),
                _ => Err("the summary's node.rlimit has no maxpid or curproc".into()),
            },
        }
    }

    /// Where images and writable layers live, as near as the summary tells
    /// it. kubelet decides from devices (imagefs dedicated when its device
    /// is not the root dir's; split when the container filesystem's device
    /// is not the image filesystem's), which the summary does not name; it
    /// does give each filesystem's statfs capacity and inode count, and two
    /// of its filesystems are taken to be one when those agree (see
    /// [`one_filesystem`]). A kubelet that reports no `containerFs` (before
    /// 1.30) is not split.
    pub fn fs_layout(&self) -> FsLayout {
        let differ = |a: Option<&FsFigures>, b: Option<&FsFigures>| match (a, b) {
            (Some(a), Some(b)) => !one_filesystem(a, b),
            _ => false,
        };
        FsLayout {
            dedicated_image_fs: differ(self.imagefs.as_ref(), self.nodefs.as_ref()),
            split_image_fs: differ(self.containerfs.as_ref(), self.imagefs.as_ref()),
        }
    }
}

/// Whether two filesystems of a summary are one: the same capacity in bytes
/// and the same inode count (statfs of one filesystem, whatever the path).
/// When a figure is missing on either side it does not count; with no
/// figure to compare they are taken to be one (the common layout). Two
/// distinct filesystems of exactly the same size and inode count (twin
/// disks made alike) are taken to be one: the limit of this rule.
pub fn one_filesystem(a: &FsFigures, b: &FsFigures) -> bool {
    let same = |x: Option<u64>, y: Option<u64>| match (x, y) {
        (Some(x), Some(y)) => x == y,
        _ => true,
    };
    same(a.capacity_bytes, b.capacity_bytes) && same(a.inodes, b.inodes)
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

/// What a node's kubelet `/configz` said of image GC and eviction, and how
/// its reads fare. Read at the node's first good poll and then rarely (see
/// `cluster::configz`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConfigzEntry {
    /// The last good read's thresholds; kept through failed re-reads (a
    /// kubelet's configuration changes only when it restarts).
    pub policy: Option<HeadroomPolicy>,
    /// Whether a read was made.
    pub read: bool,
    /// The last read's outcome: `None` when it succeeded (or none was made).
    pub failure: Option<Failure>,
    /// Reads failed in a row since the last good one.
    pub failures_in_a_row: u32,
    /// Polls of the node since the last read.
    pub polls_since: u32,
}

/// One node's row.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeEntry {
    pub health: PollHealth,
    /// The last good summary's figures; dropped after
    /// `--cluster.down-after` failed polls in a row.
    pub figures: Option<Arc<NodeFigures>>,
    pub configz: ConfigzEntry,
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

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn fs(capacity: u64, inodes: u64, used: u64) -> FsFigures {
        FsFigures {
            available_bytes: Some(capacity - used),
            capacity_bytes: Some(capacity),
            used_bytes: Some(used),
            inodes_free: Some(inodes - 10),
            inodes: Some(inodes),
            inodes_used: Some(10),
        }
    }

    fn node(imagefs: Option<FsFigures>, containerfs: Option<FsFigures>) -> NodeFigures {
        NodeFigures {
            nodefs: Some(fs(100 * GIB, 6_553_600, 30 * GIB)),
            imagefs,
            containerfs,
            ..NodeFigures::default()
        }
    }

    #[test]
    fn the_layout_rule_compares_capacity_and_inodes() {
        let shared = fs(100 * GIB, 6_553_600, 20 * GIB);
        let dedicated = fs(200 * GIB, 13_107_200, 20 * GIB);
        let third = fs(50 * GIB, 3_276_800, 5 * GIB);
        let layout = |i, c| node(i, c).fs_layout();
        let want = |dedicated_image_fs, split_image_fs| FsLayout {
            dedicated_image_fs,
            split_image_fs,
        };
        // Images on the node's filesystem (its used bytes are the images'):
        // kubelet 1.30+ repeats imageFs as containerFs; older ones omit it.
        assert_eq!(layout(Some(shared), Some(shared)), want(false, false));
        assert_eq!(layout(Some(shared), None), want(false, false));
        // A dedicated image filesystem holding containers too.
        assert_eq!(layout(Some(dedicated), Some(dedicated)), want(true, false));
        assert_eq!(layout(Some(dedicated), None), want(true, false));
        // Split: containers elsewhere than images.
        assert_eq!(layout(Some(dedicated), Some(third)), want(true, true));
        // Same size, other inode count: two filesystems.
        let same_size = fs(100 * GIB, 100_000, 20 * GIB);
        assert_eq!(layout(Some(same_size), None), want(true, false));
        // Nothing to compare: the common layout.
        let blank = FsFigures {
            used_bytes: Some(1),
            ..FsFigures::default()
        };
        assert_eq!(layout(Some(blank), Some(blank)), want(false, false));
        assert_eq!(layout(None, None), want(false, false));
        // Inodes unknown on one side: capacity alone decides.
        let no_inodes = FsFigures {
            inodes: None,
            ..dedicated
        };
        assert!(one_filesystem(&dedicated, &no_inodes));
        assert!(!one_filesystem(&shared, &no_inodes));
    }

    #[test]
    fn signals_are_observed_as_kubelet_does_from_the_summary() {
        let dedicated = fs(200 * GIB, 13_107_200, 20 * GIB);
        let mut f = node(Some(dedicated), None);
        f.max_pid = Some(4_194_304);
        f.cur_proc = Some(300);
        assert_eq!(
            f.observe(Signal::NodeFsAvailable),
            Ok((70 * GIB as i64, 100 * GIB as i64))
        );
        assert_eq!(
            f.observe(Signal::ImageFsInodesFree),
            Ok((13_107_190, 13_107_200))
        );
        // No containerFs: the image filesystem's.
        assert_eq!(
            f.observe(Signal::ContainerFsAvailable),
            Ok((180 * GIB as i64, 200 * GIB as i64))
        );
        assert_eq!(f.observe(Signal::PidAvailable), Ok((4_194_004, 4_194_304)));
        f.containerfs = Some(fs(50 * GIB, 1000, 5 * GIB));
        assert_eq!(f.observe(Signal::ContainerFsInodesFree), Ok((990, 1000)));
        // What the summary leaves out is missing, said by its field.
        f.nodefs = Some(FsFigures {
            inodes_free: None,
            ..fs(10, 20, 0)
        });
        assert_eq!(
            f.observe(Signal::NodeFsInodesFree),
            Err("the summary's node.fs has no inodesFree".into())
        );
        f.imagefs = None;
        assert_eq!(
            f.observe(Signal::ImageFsAvailable),
            Err("the summary has no node.runtime.imageFs".into())
        );
        f.cur_proc = None;
        assert!(f.observe(Signal::PidAvailable).is_err());
    }

    #[test]
    fn a_node_rows_configz_state_is_small() {
        // What cluster mode keeps per node of a kubelet's configuration:
        // 280 bytes on x86_64, 232 of them the thresholds.
        let size = std::mem::size_of::<ConfigzEntry>();
        assert!(size <= 320, "{size} bytes");
    }
}
