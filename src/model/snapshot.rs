//! What scrapes read. Each writer owns one part and swaps in its own part
//! only: the sampler the [`NodeSample`], the volume sampler the
//! [`VolumeTable`] (whose rows it also updates in place, one per result),
//! the kubelet watch the [`KubeletConfig`] in force, the web config's
//! reload loop its [`WebConfigStatus`].
//! Nobody clones another writer's part. A scrape takes a [`Snapshot`], a
//! handful of `Arc`s, and never does I/O.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use arc_swap::{ArcSwap, ArcSwapOption};

use super::cluster::ClusterTable;
use super::fs::Filesystem;
use super::node::{Rlimit, Runtime};
use super::pod::PodTable;
use super::source::{Sampled, SourceStatus};
use super::volume::VolumeTable;
use super::web::WebConfigStatus;
use crate::kubelet::config::KubeletConfig;
use crate::kubelet::eviction::FsLayout;

/// The sampler's part: the node's filesystems, runtime and limits.
#[derive(Clone, Debug)]
pub struct NodeSample {
    pub taken_at: SystemTime,
    pub runtime: Sampled<Runtime>,
    pub nodefs: Sampled<Filesystem>,
    pub rlimit: Sampled<Rlimit>,
    /// The statuses of the sources the sampler reads.
    pub sources: Vec<SourceStatus>,
}

impl NodeSample {
    /// Nothing sampled yet.
    pub fn unsampled(taken_at: SystemTime) -> NodeSample {
        NodeSample {
            taken_at,
            runtime: None,
            nodefs: None,
            rlimit: None,
            sources: Vec::new(),
        }
    }
}

/// One consistent view of every part, as a scrape renders it.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub kubelet: Arc<KubeletConfig>,
    pub node: Arc<NodeSample>,
    /// PVC volume stats; `None` when the volume_stats collector is off.
    pub volumes: Option<Arc<VolumeTable>>,
    /// The pod half (per-pod ephemeral storage); `None` when pod_storage is off.
    pub pods: Option<Arc<PodTable>>,
    /// How the loads of `--web.config.file` went; `None` without one.
    pub web_config: Option<Arc<WebConfigStatus>>,
    /// Cluster mode's table; `None` in DaemonSet mode.
    pub cluster: Option<Arc<ClusterTable>>,
    /// The board's change count when this view was taken: two views with
    /// the same version render the same exposition.
    pub version: u64,
    /// Each part's change count when this view was taken, by [`Part`], and
    /// the board they count on (0: a hand-built view, which no render keeps).
    pub parts: PartVersions,
}

/// The parts of the board, each published by one writer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Kubelet,
    Node,
    Volumes,
    /// The pod table, but for the times of its readings (see
    /// [`Board::publish_pod_times`]).
    Pods,
    WebConfig,
    Cluster,
}

impl Part {
    const COUNT: usize = 6;

    fn index(self) -> usize {
        self as usize
    }
}

/// The change counts of a view's parts: a collector that reads only some
/// parts renders the same text from two views whose counts agree on them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PartVersions {
    /// Which board counted; 0 for a hand-built view.
    board: u64,
    counts: [u64; Part::COUNT],
}

impl PartVersions {
    /// The counts of `parts`, tagged with the board's identity, or `None`
    /// for a hand-built view (whose parts have no counts to compare).
    pub fn key(&self, parts: &[Part]) -> Option<PartsKey> {
        if self.board == 0 {
            return None;
        }
        let mut counts = [0; Part::COUNT];
        for part in parts {
            counts[part.index()] = self.counts[part.index()];
        }
        Some(PartsKey {
            board: self.board,
            counts,
        })
    }
}

/// What a render read, as [`PartVersions::key`] says it: equal keys, equal
/// text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartsKey {
    board: u64,
    counts: [u64; Part::COUNT],
}

impl Snapshot {
    /// A view of hand-built parts (tests, `kubedf metrics`, `kubedf df`).
    pub fn new(
        kubelet: Arc<KubeletConfig>,
        node: NodeSample,
        volumes: Option<VolumeTable>,
    ) -> Snapshot {
        Snapshot {
            kubelet,
            node: Arc::new(node),
            volumes: volumes.map(Arc::new),
            pods: None,
            web_config: None,
            cluster: None,
            version: 0,
            parts: PartVersions::default(),
        }
    }

    pub fn taken_at(&self) -> SystemTime {
        self.node.taken_at
    }

    pub fn runtime(&self) -> &Sampled<Runtime> {
        &self.node.runtime
    }

    /// The image filesystem, if the runtime and its statfs both answered.
    pub fn image_fs(&self) -> Result<&Filesystem, String> {
        match &self.node.runtime {
            None => Err("the container runtime was not sampled".into()),
            Some(Err(e)) => Err(e.clone()),
            Some(Ok(rt)) => rt.image_fs.as_ref().map_err(Clone::clone),
        }
    }

    /// The filesystem holding container writable layers: the runtime's
    /// container filesystem when it reports one, else the image filesystem.
    pub fn container_fs(&self) -> Result<&Filesystem, String> {
        match &self.node.runtime {
            Some(Ok(Runtime {
                container_fs: Some(fs),
                ..
            })) => fs.as_ref().map_err(Clone::clone),
            _ => self.image_fs(),
        }
    }

    pub fn nodefs(&self) -> Result<&Filesystem, String> {
        sampled(&self.node.nodefs, "the kubelet root dir")
    }

    pub fn rlimit(&self) -> Result<&Rlimit, String> {
        sampled(&self.node.rlimit, "/proc")
    }

    /// Every source's status: the sampler's and the Kubernetes API's.
    pub fn source_statuses(&self) -> impl Iterator<Item = &SourceStatus> {
        self.node
            .sources
            .iter()
            .chain(self.volumes.as_ref().map(|v| &v.source))
            // One watch feeds both tables: report it once.
            .chain(
                self.pods
                    .as_ref()
                    .filter(|_| self.volumes.is_none())
                    .map(|p| &p.source),
            )
    }

    /// Where images and writable layers live, as kubelet's eviction manager
    /// decides it: a dedicated image filesystem is on another device than the
    /// kubelet root dir.
    pub fn fs_layout(&self) -> FsLayout {
        let split_image_fs = matches!(
            &self.node.runtime,
            Some(Ok(Runtime {
                container_fs: Some(_),
                ..
            }))
        );
        let dedicated_image_fs = match (self.image_fs(), self.nodefs()) {
            (Ok(image), Ok(node)) => image.device != node.device,
            _ => false,
        };
        FsLayout {
            dedicated_image_fs,
            split_image_fs,
        }
    }
}

fn sampled<'a, T>(value: &'a Sampled<T>, what: &str) -> Result<&'a T, String> {
    match value {
        None => Err(format!("{what} was not sampled")),
        Some(r) => r.as_ref().map_err(Clone::clone),
    }
}

/// Where the parts are published. Writers swap in their own part (or say it
/// changed after updating a row in place); readers take a [`Snapshot`].
#[derive(Debug)]
pub struct Board {
    /// kubelet's configuration in force; the kubelet watch's part.
    kubelet: ArcSwap<KubeletConfig>,
    node: ArcSwap<NodeSample>,
    volumes: ArcSwapOption<VolumeTable>,
    pods: ArcSwapOption<PodTable>,
    /// The web config reload loop's part.
    web_config: ArcSwapOption<WebConfigStatus>,
    /// Cluster mode's poll loop's part.
    cluster: ArcSwapOption<ClusterTable>,
    /// Bumped after every change, so a scrape renders only when something
    /// changed since the last render.
    version: AtomicU64,
    /// Bumped after a change of the part, by [`Part`] (before `version`).
    counts: [AtomicU64; Part::COUNT],
    /// Tells this board's counts from another's (two boards in one process:
    /// tests, cluster mode's shards).
    id: u64,
}

/// The next board's identity; 0 is no board's.
static NEXT_BOARD: AtomicU64 = AtomicU64::new(1);

impl Board {
    pub fn new(kubelet: Arc<KubeletConfig>, node: NodeSample) -> Board {
        Board {
            kubelet: ArcSwap::new(kubelet),
            node: ArcSwap::from_pointee(node),
            volumes: ArcSwapOption::empty(),
            pods: ArcSwapOption::empty(),
            web_config: ArcSwapOption::empty(),
            cluster: ArcSwapOption::empty(),
            version: AtomicU64::new(1),
            counts: Default::default(),
            id: NEXT_BOARD.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The current view of every part.
    pub fn snapshot(&self) -> Snapshot {
        // The version is read before the parts: a change that lands in
        // between shows up in the parts and bumps the version again, so the
        // next scrape renders once more rather than missing it.
        let version = self.version.load(Ordering::Acquire);
        // Each count likewise before its part.
        let parts = PartVersions {
            board: self.id,
            counts: std::array::from_fn(|i| self.counts[i].load(Ordering::Acquire)),
        };
        Snapshot {
            kubelet: self.kubelet.load_full(),
            node: self.node.load_full(),
            volumes: self.volumes.load_full(),
            pods: self.pods.load_full(),
            web_config: self.web_config.load_full(),
            cluster: self.cluster.load_full(),
            version,
            parts,
        }
    }

    /// The change count (see [`Snapshot::version`]).
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// The kubelet watch's part: the configuration now in force.
    pub fn publish_kubelet(&self, kubelet: Arc<KubeletConfig>) {
        self.kubelet.store(kubelet);
        self.changed(Part::Kubelet);
    }

    /// The kubelet configuration in force.
    pub fn kubelet(&self) -> Arc<KubeletConfig> {
        self.kubelet.load_full()
    }

    /// The sampler's part.
    pub fn publish_node(&self, node: NodeSample) {
        self.node.store(Arc::new(node));
        self.changed(Part::Node);
    }

    /// Cluster mode's poll loop's part.
    pub fn publish_cluster(&self, table: Arc<ClusterTable>) {
        self.cluster.store(Some(table));
        self.changed(Part::Cluster);
    }

    /// The volume sampler's part.
    pub fn publish_volumes(&self, table: Option<Arc<VolumeTable>>) {
        self.volumes.store(table);
        self.changed(Part::Volumes);
    }

    /// The pod sampler's part.
    pub fn publish_pods(&self, table: Option<Arc<PodTable>>) {
        self.pods.store(table);
        self.changed(Part::Pods);
    }

    /// The pod sampler's part, when only the times of its readings changed
    /// (which only `/stats/summary` shows): the count of [`Part::Pods`] stays,
    /// so the exposition's pod families are not rendered again.
    pub fn publish_pod_times(&self, table: Arc<PodTable>) {
        self.pods.store(Some(table));
        self.bump();
    }

    /// The web config reload loop's part.
    pub fn publish_web_config(&self, status: WebConfigStatus) {
        self.web_config.store(Some(Arc::new(status)));
        self.changed(Part::WebConfig);
    }

    /// Says that `part` changed in place (a row's reading).
    pub fn changed(&self, part: Part) {
        self.counts[part.index()].fetch_add(1, Ordering::AcqRel);
        self.bump();
    }

    /// Moves the board's version: every reader renders anew what it shows.
    fn bump(&self) {
        self.version.fetch_add(1, Ordering::AcqRel);
    }
}

/// The board, shared between its writers and the server.
pub type SnapshotHandle = Arc<Board>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Reading, SourceId, VolumeRow};

    fn status() -> SourceStatus {
        SourceStatus {
            source: SourceId::Kubernetes,
            up: true,
            last_success: None,
            duration: None,
            error: None,
        }
    }

    #[test]
    fn each_change_bumps_the_version_and_parts_stay_apart() {
        let board = Board::new(
            Arc::new(KubeletConfig::defaults(
                "/var/lib/kubelet/config.yaml".into(),
            )),
            NodeSample::unsampled(SystemTime::UNIX_EPOCH),
        );
        let first = board.snapshot();
        assert!(first.volumes.is_none());
        let row = Arc::new(VolumeRow::new("ns", "data", "pod", Reading::default()));
        board.publish_volumes(Some(Arc::new(VolumeTable::new(
            vec![Arc::clone(&row)],
            status(),
        ))));
        let second = board.snapshot();
        assert!(second.version > first.version);
        assert!(
            Arc::ptr_eq(&first.node, &second.node),
            "the node part is not touched by the volume sampler"
        );
        board.publish_node(NodeSample::unsampled(SystemTime::now()));
        let third = board.snapshot();
        assert!(third.version > second.version);
        assert!(Arc::ptr_eq(
            second.volumes.as_ref().unwrap(),
            third.volumes.as_ref().unwrap()
        ));
        row.set_reading(Reading {
            method: None,
            stats: Some(Ok(Default::default())),
        });
        board.changed(Part::Volumes);
        let fourth = board.snapshot();
        assert!(fourth.version > third.version);
        let volumes = [Part::Volumes];
        assert_ne!(fourth.parts.key(&volumes), third.parts.key(&volumes));
        assert_eq!(
            fourth.parts.key(&[Part::Node]),
            third.parts.key(&[Part::Node]),
            "the node part did not change"
        );
        assert_eq!(
            third.volumes.as_ref().unwrap().rows[0].reading().stats,
            Some(Ok(Default::default())),
            "a row's reading is shared by every view of the table"
        );
    }

    #[test]
    fn part_keys_tell_boards_apart_and_hand_built_views_have_none() {
        let board = || {
            Board::new(
                Arc::new(KubeletConfig::defaults(
                    "/var/lib/kubelet/config.yaml".into(),
                )),
                NodeSample::unsampled(SystemTime::UNIX_EPOCH),
            )
        };
        let (a, b) = (board().snapshot(), board().snapshot());
        let node = [Part::Node];
        assert!(a.parts.key(&node).is_some());
        assert_ne!(a.parts.key(&node), b.parts.key(&node), "two boards");
        let hand_built = Snapshot::new(
            Arc::clone(&a.kubelet),
            NodeSample::unsampled(SystemTime::UNIX_EPOCH),
            None,
        );
        assert_eq!(hand_built.parts.key(&node), None);
    }

    #[test]
    fn the_web_config_status_is_a_part_like_the_others() {
        let board = Board::new(
            Arc::new(KubeletConfig::defaults(
                "/var/lib/kubelet/config.yaml".into(),
            )),
            NodeSample::unsampled(SystemTime::UNIX_EPOCH),
        );
        let before = board.snapshot();
        assert_eq!(before.web_config, None, "absent without a web config");
        let loaded = WebConfigStatus::loaded(SystemTime::UNIX_EPOCH);
        board.publish_web_config(loaded);
        let after = board.snapshot();
        assert!(after.version > before.version, "a render sees the change");
        assert_eq!(after.web_config.as_deref(), Some(&loaded));
        assert!(Arc::ptr_eq(&before.node, &after.node));
        let failed = loaded.failed().failed();
        assert_eq!((failed.last_ok, failed.failures), (false, 2));
        assert_eq!(failed.last_success, SystemTime::UNIX_EPOCH, "kept");
        let later = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(60);
        let ok = failed.succeeded(later);
        assert_eq!((ok.last_ok, ok.failures, ok.last_success), (true, 2, later));
    }
}
