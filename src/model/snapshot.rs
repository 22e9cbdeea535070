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

/// Where the parts are published. Writers swap in their own part (or touch
/// the board after updating a row in place); readers take a [`Snapshot`].
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
}

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
        }
    }

    /// The current view of every part.
    pub fn snapshot(&self) -> Snapshot {
        // The version is read before the parts: a change that lands in
        // between shows up in the parts and bumps the version again, so the
        // next scrape renders once more rather than missing it.
        let version = self.version.load(Ordering::Acquire);
        Snapshot {
            kubelet: self.kubelet.load_full(),
            node: self.node.load_full(),
            volumes: self.volumes.load_full(),
            pods: self.pods.load_full(),
            web_config: self.web_config.load_full(),
            cluster: self.cluster.load_full(),
            version,
        }
    }

    /// The change count (see [`Snapshot::version`]).
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// The kubelet watch's part: the configuration now in force.
    pub fn publish_kubelet(&self, kubelet: Arc<KubeletConfig>) {
        self.kubelet.store(kubelet);
        self.touch();
    }

    /// The kubelet configuration in force.
    pub fn kubelet(&self) -> Arc<KubeletConfig> {
        self.kubelet.load_full()
    }

    /// The sampler's part.
    pub fn publish_node(&self, node: NodeSample) {
        self.node.store(Arc::new(node));
        self.touch();
    }

    /// Cluster mode's poll loop's part.
    pub fn publish_cluster(&self, table: Arc<ClusterTable>) {
        self.cluster.store(Some(table));
        self.touch();
    }

    /// The volume sampler's part.
    pub fn publish_volumes(&self, table: Option<Arc<VolumeTable>>) {
        self.volumes.store(table);
        self.touch();
    }

    /// The pod sampler's part.
    pub fn publish_pods(&self, table: Option<Arc<PodTable>>) {
        self.pods.store(table);
        self.touch();
    }

    /// The web config reload loop's part.
    pub fn publish_web_config(&self, status: WebConfigStatus) {
        self.web_config.store(Some(Arc::new(status)));
        self.touch();
    }

    /// Says that a part changed in place (a row's reading).
    pub fn touch(&self) {
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
        board.touch();
        assert!(board.snapshot().version > third.version);
        assert_eq!(
            third.volumes.as_ref().unwrap().rows[0].reading().stats,
            Some(Ok(Default::default())),
            "a row's reading is shared by every view of the table"
        );
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
