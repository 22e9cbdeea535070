//! The pod loop on fakes and tokio's paused clock: no runtime, no API
//! server, no mounts. Each test drives `PodSampler::run` and reads what it
//! published on a board.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::sampler::{PartIo, PartKind, PodConfig, PodSampler};
use crate::kubelet::config::KubeletConfig;
use crate::model::pod::{PodRow, Usage};
use crate::model::snapshot::SnapshotHandle;
use crate::model::{Board, Failure, NodeSample, Part, Reason};
use crate::sources::HostRoot;
use crate::sources::cri::{RunningContainer, RuntimeContainers, WritableLayer};
use crate::sources::seams::ContainerRuntime;
use crate::sources::seams::fakes::{FakePods, lock, pod};

const CRI_PERIOD: Duration = Duration::from_secs(10);

/// The runtime: its answer, as set by the test.
#[derive(Clone)]
struct FakeRuntime {
    answer: Arc<Mutex<Result<Vec<RunningContainer>, String>>>,
}

impl FakeRuntime {
    fn set(&self, answer: Result<Vec<RunningContainer>, String>) {
        *lock(&self.answer) = answer;
    }
}

impl ContainerRuntime for FakeRuntime {
    fn running_containers(
        &self,
        _timeout: Duration,
    ) -> impl Future<Output = Result<RuntimeContainers, String>> + Send {
        let answer = lock(&self.answer).clone().map(|running| RuntimeContainers {
            running,
            unanswered: Vec::new(),
            per_pod_because: None,
        });
        std::future::ready(answer)
    }
}

/// Every part measures 4096 bytes, 1 inode; a path containing `hang` does
/// not answer, and, as the real guarded call does, reports a timeout after
/// 5 s. With `moving_time`, each reading is a second later than the last
/// (as a real one is later), its figures the same.
#[derive(Clone, Default)]
struct FakeParts {
    calls: Arc<Mutex<Vec<(PartKind, PathBuf)>>>,
    /// The size of each batch of stats.
    batches: Arc<Mutex<Vec<usize>>>,
    moving_time: bool,
}

impl PartIo for FakeParts {
    fn measure(
        &self,
        kind: PartKind,
        path: PathBuf,
    ) -> impl Future<Output = Result<Usage, Failure>> + Send {
        let hang = path.to_string_lossy().contains("hang");
        let mut calls = lock(&self.calls);
        calls.push((kind, path));
        let time = match self.moving_time {
            true => SystemTime::UNIX_EPOCH + Duration::from_secs(calls.len() as u64),
            false => SystemTime::UNIX_EPOCH,
        };
        drop(calls);
        async move {
            if hang {
                tokio::time::sleep(Duration::from_secs(5)).await;
                return Err(Failure::new(Reason::Timeout, "did not answer within 5s"));
            }
            Ok(Usage {
                bytes: 4096,
                inodes: 1,
                time,
            })
        }
    }

    fn measure_batch(
        &self,
        parts: Vec<(PartKind, PathBuf)>,
    ) -> impl Future<Output = Vec<Result<Usage, Failure>>> + Send {
        lock(&self.batches).push(parts.len());
        let calls: Vec<_> = parts.into_iter().map(|(k, p)| self.measure(k, p)).collect();
        futures::future::join_all(calls)
    }
}

fn container(uid: &str, pod: &str, name: &str, bytes: u64) -> RunningContainer {
    RunningContainer {
        id: format!("{uid}-{name}"),
        pod_uid: uid.into(),
        pod_name: pod.into(),
        pod_namespace: "shop".into(),
        name: name.into(),
        attempt: 0,
        created_at: 1,
        writable_layer: Some(WritableLayer {
            timestamp: 1_000_000_000,
            used_bytes: Some(bytes),
            inodes_used: Some(1),
        }),
    }
}

struct Harness {
    board: SnapshotHandle,
    shutdown: watch::Sender<bool>,
}

impl Harness {
    fn start(pods: &FakePods, runtime: &FakeRuntime, parts: &FakeParts) -> Harness {
        let cfg = PodConfig {
            host: Arc::new(HostRoot::open(Path::new("/")).unwrap()),
            kubelet_root_dir: "/var/lib/kubelet".into(),
            pod_logs_dir: "/var/log/pods".into(),
            period: Duration::from_secs(60),
            cri_period: CRI_PERIOD,
            timeout: Duration::from_secs(5),
            walk_budget: Duration::from_secs(60),
        };
        let sampler = PodSampler::with_seams(
            cfg,
            ("/var/lib/kubelet".into(), "/var/log/pods".into()),
            pods.clone(),
            runtime.clone(),
            parts.clone(),
        );
        let board: SnapshotHandle = Arc::new(Board::new(
            Arc::new(KubeletConfig::defaults(
                "/var/lib/kubelet/config.yaml".into(),
            )),
            NodeSample::unsampled(SystemTime::UNIX_EPOCH),
        ));
        let (shutdown, stop) = watch::channel(false);
        tokio::spawn(sampler.run(Arc::clone(&board), stop));
        Harness { board, shutdown }
    }

    fn rows(&self) -> Vec<Arc<PodRow>> {
        self.board
            .snapshot()
            .pods
            .map(|t| t.rows.clone())
            .unwrap_or_default()
    }

    fn row(&self, name: &str) -> Arc<PodRow> {
        let rows = self.rows();
        let row = rows
            .iter()
            .find(|r| r.pod.name == name)
            .expect("a row for the pod");
        Arc::clone(row)
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

fn two_pods() -> (FakePods, FakeRuntime) {
    let pods = FakePods::new(vec![pod("a", "u-a", &[]), pod("b", "u-b", &[])]);
    let runtime = FakeRuntime {
        answer: Arc::new(Mutex::new(Ok(vec![
            container("u-a", "a", "app", 100),
            container("u-b", "b", "app", 200),
        ]))),
    };
    (pods, runtime)
}

/// A runtime with no running containers.
fn no_containers() -> FakeRuntime {
    FakeRuntime {
        answer: Arc::new(Mutex::new(Ok(Vec::new()))),
    }
}

/// `n` pods without containers (each has its log files and etc-hosts).
fn pods_without_containers(n: usize) -> (FakePods, FakeRuntime) {
    let list = (0..n)
        .map(|i| pod(&format!("p{i}"), &format!("u-{i}"), &[]))
        .collect();
    (FakePods::new(list), no_containers())
}

#[tokio::test(start_paused = true)]
async fn each_pods_parts_are_measured_and_summed() {
    let (pods, runtime) = two_pods();
    let parts = FakeParts::default();
    let h = Harness::start(&pods, &runtime, &parts);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let a = h.row("a");
    // rootfs 100 + logs, pod log files and etc-hosts at 4096 each.
    let total = a.ephemeral_storage().unwrap().unwrap();
    assert_eq!(total.bytes, 100 + 3 * 4096);
    let kinds: Vec<PartKind> = lock(&parts.calls)
        .iter()
        .filter(|(_, p)| p.to_string_lossy().contains("u-a"))
        .map(|(k, _)| *k)
        .collect();
    assert!(kinds.contains(&PartKind::Walk) && kinds.contains(&PartKind::Files));
    assert!(kinds.contains(&PartKind::File));
}

#[tokio::test(start_paused = true)]
async fn only_the_pod_whose_containers_changed_gets_a_new_row() {
    let (pods, runtime) = two_pods();
    let h = Harness::start(&pods, &runtime, &FakeParts::default());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (a, b) = (h.row("a"), h.row("b"));
    runtime.set(Ok(vec![
        container("u-a", "a", "app", 100),
        container("u-b", "b", "app", 999),
    ]));
    // The runtime is asked again within 1x-2x its period (plus slack).
    tokio::time::sleep(CRI_PERIOD * 2 + Duration::from_secs(3)).await;
    assert!(
        Arc::ptr_eq(&a, &h.row("a")),
        "pod a's row is shared, not rebuilt"
    );
    let b_now = h.row("b");
    assert!(!Arc::ptr_eq(&b, &b_now));
    assert_eq!(b_now.containers[0].rootfs.as_ref().unwrap().bytes, 999);
}

#[tokio::test(start_paused = true)]
async fn the_table_is_published_at_most_once_a_second() {
    let (pods, runtime) = two_pods();
    let h = Harness::start(&pods, &runtime, &FakeParts::default());
    tokio::time::sleep(Duration::from_secs(2)).await;
    // A pod set that changes every 100 ms for 3 s: 30 changes.
    let mut published = Vec::new();
    for i in 0..30 {
        let mut list = vec![pod("a", "u-a", &[]), pod("b", "u-b", &[])];
        list.push(pod(&format!("c{i}"), &format!("u-c{i}"), &[]));
        pods.set(list);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let table = h.board.snapshot().pods.unwrap();
        if !published.iter().any(|t| Arc::ptr_eq(t, &table)) {
            published.push(table);
        }
    }
    assert!(
        (2..=4).contains(&published.len()),
        "{} publications in 3 s",
        published.len()
    );
}

#[tokio::test(start_paused = true)]
async fn a_runtime_that_fails_fails_every_pod_until_it_answers_again() {
    let (pods, runtime) = two_pods();
    runtime.set(Err("connection refused".into()));
    let h = Harness::start(&pods, &runtime, &FakeParts::default());
    tokio::time::sleep(Duration::from_secs(2)).await;
    for row in h.rows() {
        let e = row.ephemeral_storage().unwrap().unwrap_err();
        assert_eq!(e.reason, Reason::CriUnavailable);
    }
    runtime.set(Ok(vec![container("u-a", "a", "app", 1)]));
    tokio::time::sleep(CRI_PERIOD * 2 + Duration::from_secs(3)).await;
    assert!(h.row("a").containers_error.is_none());
    assert_eq!(h.row("a").containers.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_part_that_hangs_fails_its_pod_with_timeout_and_holds_up_no_other() {
    let pods = FakePods::new(vec![pod("hang", "u-hang", &[]), pod("b", "u-b", &[])]);
    let runtime = no_containers();
    let parts = FakeParts::default();
    let h = Harness::start(&pods, &runtime, &parts);
    tokio::time::sleep(Duration::from_secs(300)).await;
    // Reported as a hung call, as for a volume: never the last figure, never
    // a partial sum.
    let e = h.row("hang").ephemeral_storage().unwrap().unwrap_err();
    assert_eq!(e.reason, Reason::Timeout);
    assert!(h.row("b").ephemeral_storage().unwrap().is_ok());
    let calls = |uid: &str| {
        lock(&parts.calls)
            .iter()
            .filter(|(_, p)| p.to_string_lossy().contains(uid))
            .count()
    };
    // Pod b's two parts, every 1x-2x minute for 5 minutes, batched with the
    // hung pod's or not.
    assert!(calls("u-b") >= 6, "{} calls for pod b", calls("u-b"));
}

#[tokio::test(start_paused = true)]
async fn readings_that_only_move_in_time_leave_the_pod_families_rendered() {
    let (pods, runtime) = two_pods();
    let parts = FakeParts {
        moving_time: true,
        ..FakeParts::default()
    };
    let h = Harness::start(&pods, &runtime, &parts);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pods_key = |h: &Harness| h.board.snapshot().parts.key(&[Part::Pods]);
    let time = |h: &Harness| h.row("a").ephemeral_storage().unwrap().unwrap().time;
    let (key, at, version) = (pods_key(&h), time(&h), h.board.version());
    // Every part is measured again within 1x-2x the period, plus slack.
    tokio::time::sleep(Duration::from_secs(130)).await;
    assert!(time(&h) > at, "/stats/summary sees the new times");
    assert!(h.board.version() > version);
    assert_eq!(
        pods_key(&h),
        key,
        "what the exposition reads did not change"
    );
    // A figure that changes moves the count.
    runtime.set(Ok(vec![
        container("u-a", "a", "app", 100),
        container("u-b", "b", "app", 999),
    ]));
    tokio::time::sleep(CRI_PERIOD * 2 + Duration::from_secs(3)).await;
    assert_ne!(pods_key(&h), key);
}

#[tokio::test(start_paused = true)]
async fn the_files_of_every_pod_due_at_one_wake_up_go_out_as_one_batch() {
    let (pods, runtime) = pods_without_containers(100);
    let parts = FakeParts::default();
    let h = Harness::start(&pods, &runtime, &parts);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(h.rows().len(), 100);
    assert!(
        h.rows()
            .iter()
            .all(|r| r.pod_logs.is_some() && r.etc_hosts.is_some())
    );
    // All due at start: one batch of both files of each pod, not rounds
    // bounded by the walks' limit.
    assert_eq!(*lock(&parts.batches), [200]);
    // Then each wake-up takes every pod due by then, both files together.
    tokio::time::sleep(Duration::from_secs(240)).await;
    let batches = lock(&parts.batches).clone();
    assert!(batches.iter().all(|n| n % 2 == 0), "{batches:?}");
    let measured: usize = batches.iter().sum();
    assert!(
        measured >= 2 * 200,
        "every pod at least twice in 4 min: {measured}"
    );
    // One wake-up per grid step (5 s) at most: 48 in 4 min, however many
    // pods; one per pod's file was 200 a period before the files of a pod
    // became one key and deadlines one grid.
    assert!(batches.len() <= 1 + 48, "{} batches", batches.len());
}

#[tokio::test(start_paused = true)]
async fn a_change_of_times_only_is_published_at_most_every_30_s() {
    let (pods, runtime) = pods_without_containers(20);
    let parts = FakeParts {
        moving_time: true,
        ..FakeParts::default()
    };
    let h = Harness::start(&pods, &runtime, &parts);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let first = h.board.snapshot().pods.unwrap();
    let mut tables = vec![Arc::clone(&first)];
    for _ in 0..300 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let table = h.board.snapshot().pods.unwrap();
        if !Arc::ptr_eq(tables.last().unwrap(), &table) {
            tables.push(table);
        }
    }
    // Pods are measured again at many wake-ups in 5 minutes; their new
    // times are shown, at most every 30 s.
    assert!(tables.len() >= 4, "{} tables in 300 s", tables.len());
    assert!(
        tables.len() <= 1 + 300 / 30,
        "{} tables in 300 s",
        tables.len()
    );
    let time = |t: &crate::model::pod::PodTable| t.rows[0].etc_hosts.clone().unwrap().unwrap().time;
    assert!(time(tables.last().unwrap()) > time(&first));
}
