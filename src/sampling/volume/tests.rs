//! The volume loop on fakes and tokio's paused clock: no API server, no
//! mounts, no root. Each test drives `VolumeSampler::run` and reads what it
//! published on a board.

use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{Semaphore, watch};

use super::measure::Measure;
use super::plan::{Location, Target};
use super::{REFRESH_PV, VolumeConfig, VolumeSampler};
use crate::kubelet::config::KubeletConfig;
use crate::model::snapshot::SnapshotHandle;
use crate::model::{
    Board, Failure, FsUsage, Method, NodeSample, PvInfo, PvSource, Reason, VolumeMode,
};
use crate::sources::HostRoot;
use crate::sources::io::Io;
use crate::sources::kube::ClaimState;
use crate::sources::seams::ClaimApi;
use crate::sources::seams::fakes::{FakePods, pod};

const PERIOD: Duration = Duration::from_secs(60);

use crate::sources::seams::fakes::lock;

/// PVCs bound to CSI PVs of the same name (`pv-<claim>`), until the API
/// goes down or a claim is deleted.
#[derive(Clone, Default)]
struct FakeApi {
    down: Arc<Mutex<bool>>,
    deleted: Arc<Mutex<Vec<String>>>,
    gets: Arc<Mutex<usize>>,
}

impl ClaimApi for FakeApi {
    fn claim(
        &self,
        _namespace: &str,
        name: &str,
        _timeout: Duration,
    ) -> impl Future<Output = Result<Option<ClaimState>, String>> + Send {
        *lock(&self.gets) += 1;
        let answer = if *lock(&self.down) {
            Err(format!(
                "GET persistentvolumeclaim {name}: connection refused"
            ))
        } else if lock(&self.deleted).iter().any(|d| d == name) {
            Ok(None)
        } else {
            Ok(Some(ClaimState::Bound {
                volume_name: format!("pv-{name}"),
            }))
        };
        std::future::ready(answer)
    }
    fn volume(
        &self,
        name: &str,
        _timeout: Duration,
    ) -> impl Future<Output = Result<Option<Result<PvInfo, String>>, String>> + Send {
        std::future::ready(Ok(Some(Ok(PvInfo {
            name: name.to_owned(),
            source: PvSource::Csi {
                driver: "csi.example.com".into(),
            },
            mode: VolumeMode::Filesystem,
            capacity: None,
        }))))
    }
}

#[derive(Clone)]
enum Behaviour {
    Answer(Result<FsUsage, Failure>),
    /// Answers once the semaphore gives a permit.
    Gated(Arc<Semaphore>, FsUsage),
    /// Does not answer: reports a timeout after 5 s, as the real guarded
    /// call does.
    Hang,
}

/// Measurements by a substring of the target's path (a PV or a pod uid),
/// recording the path of every call.
#[derive(Clone, Default)]
struct FakeMeasure {
    rules: Arc<Mutex<Vec<(String, Behaviour)>>>,
    calls: Arc<Mutex<Vec<String>>>,
}

impl FakeMeasure {
    fn on(&self, part: &str, behaviour: Behaviour) {
        lock(&self.rules).insert(0, (part.to_owned(), behaviour));
    }

    fn calls_of(&self, part: &str) -> usize {
        lock(&self.calls)
            .iter()
            .filter(|c| c.contains(part))
            .count()
    }
}

impl Measure for FakeMeasure {
    fn measure(
        &self,
        target: &Target,
    ) -> impl Future<Output = Result<(FsUsage, Method), Failure>> + Send {
        let path = match &target.location {
            Location::Path(p) => p.display().to_string(),
            Location::AnyPlugin { dir, pv } => format!("{}/*/{pv}", dir.display()),
        };
        lock(&self.calls).push(path.clone());
        let behaviour = lock(&self.rules)
            .iter()
            .find(|(part, _)| path.contains(part.as_str()))
            .map(|(_, b)| b.clone())
            .unwrap_or(Behaviour::Answer(Ok(usage(1))));
        async move {
            let answer = match behaviour {
                Behaviour::Answer(answer) => answer,
                Behaviour::Gated(gate, usage) => {
                    let _permit = gate.acquire().await;
                    Ok(usage)
                }
                Behaviour::Hang => {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    Err(Failure::new(Reason::Timeout, "did not answer within 5s"))
                }
            };
            answer.map(|u| (u, Method::Statfs))
        }
    }
}

fn usage(used: u64) -> FsUsage {
    FsUsage {
        capacity_bytes: 1 << 20,
        available_bytes: (1 << 20) - used,
        used_bytes: used,
        ..FsUsage::default()
    }
}

/// A published row as the tests compare it: (pod, PV, used bytes or reason).
type Seen = (String, Option<String>, Option<Result<u64, Reason>>);

struct Harness {
    board: SnapshotHandle,
    shutdown: watch::Sender<bool>,
}

impl Harness {
    fn start(pods: &FakePods, api: &FakeApi, io: &FakeMeasure) -> Harness {
        let cfg = VolumeConfig {
            host: Arc::new(HostRoot::open(Path::new("/")).unwrap()),
            procfs: "/proc".into(),
            sysfs: "/sys".into(),
            kubelet_root_dir: "/var/lib/kubelet".into(),
            period: PERIOD,
            timeout: Duration::from_secs(5),
            walk_budget: Duration::from_secs(60),
        };
        let sampler = VolumeSampler::with_seams(
            cfg,
            "/var/lib/kubelet".into(),
            pods.clone(),
            api.clone(),
            Io::new(1, 1).unwrap(),
            io.clone(),
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

    /// (pod, pv, figures or reason) of a claim's row as published.
    fn row(&self, claim: &str) -> Option<Seen> {
        let table = self.board.snapshot().volumes?;
        let row = table.rows.iter().find(|r| r.claim == claim)?;
        let stats = row
            .reading()
            .stats
            .map(|s| s.map(|u| u.used_bytes).map_err(|e| e.reason));
        Some((row.pod.clone(), row.pv.clone(), stats))
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

async fn wait(d: Duration) {
    tokio::time::sleep(d).await;
}

#[tokio::test(start_paused = true)]
async fn each_pvc_is_looked_up_measured_and_published() {
    let pods = FakePods::new(vec![pod("web-0", "u-1", &["data"])]);
    let (api, io) = (FakeApi::default(), FakeMeasure::default());
    io.on("pv-data", Behaviour::Answer(Ok(usage(4096))));
    let h = Harness::start(&pods, &api, &io);
    wait(Duration::from_secs(1)).await;
    assert_eq!(
        h.row("data"),
        Some(("web-0".into(), Some("pv-data".into()), Some(Ok(4096))))
    );
    assert_eq!(
        io.calls_of("/pods/u-1/volumes/kubernetes.io~csi/pv-data/mount"),
        1
    );
    // Every 1x-2x period (plus the wake-up slack), not more often.
    wait(PERIOD * 5).await;
    let calls = io.calls_of("pv-data");
    assert!(
        (3..=6).contains(&calls),
        "{calls} measurements in 5 periods"
    );
}

#[tokio::test(start_paused = true)]
async fn an_api_error_keeps_the_last_pv_but_a_deleted_claim_does_not() {
    let pods = FakePods::new(vec![pod("web-0", "u-1", &["data"])]);
    let (api, io) = (FakeApi::default(), FakeMeasure::default());
    let h = Harness::start(&pods, &api, &io);
    wait(Duration::from_secs(1)).await;
    assert_eq!(lock(&api.gets).clone(), 1);
    *lock(&api.down) = true;
    // The PV is looked up again after 1-2 refresh periods: that GET fails.
    wait(REFRESH_PV * 2 + Duration::from_secs(100)).await;
    assert!(*lock(&api.gets) >= 2, "the PV was not looked up again");
    let measured = io.calls_of("pv-data");
    assert_eq!(
        h.row("data"),
        Some(("web-0".into(), Some("pv-data".into()), Some(Ok(1)))),
        "the PV last seen is kept and measured"
    );
    wait(PERIOD * 3).await;
    assert!(io.calls_of("pv-data") > measured, "measurements went on");
    // The API answers again, and says the claim is gone: no PV, an error.
    lock(&api.deleted).push("data".into());
    *lock(&api.down) = false;
    wait(REFRESH_PV * 2).await;
    assert_eq!(
        h.row("data"),
        Some(("web-0".into(), None, Some(Err(Reason::PvcNotFound))))
    );
}

#[tokio::test(start_paused = true)]
async fn a_pod_change_replans_and_the_result_under_the_old_plan_is_dropped() {
    let pods = FakePods::new(vec![pod("web-0", "u-1", &["data"])]);
    let (api, io) = (FakeApi::default(), FakeMeasure::default());
    let gate = Arc::new(Semaphore::new(0));
    io.on("/u-1/", Behaviour::Gated(Arc::clone(&gate), usage(111)));
    io.on("/u-2/", Behaviour::Answer(Ok(usage(222))));
    let h = Harness::start(&pods, &api, &io);
    wait(Duration::from_secs(1)).await;
    assert_eq!(io.calls_of("/u-1/"), 1);
    // The pod is replaced while its measurement is in flight.
    pods.set(vec![pod("web-0-new", "u-2", &["data"])]);
    wait(Duration::from_secs(1)).await;
    assert_eq!(
        h.row("data").map(|r| r.0),
        Some("web-0-new".into()),
        "a new row for the new pod"
    );
    assert_eq!(io.calls_of("/u-2/"), 0, "one call in flight per volume");
    gate.add_permits(1);
    wait(Duration::from_secs(1)).await;
    // The old call's 111 was dropped; the new plan is measured at once.
    assert_eq!(io.calls_of("/u-2/"), 1);
    assert_eq!(
        h.row("data"),
        Some(("web-0-new".into(), Some("pv-data".into()), Some(Ok(222))))
    );
}

#[tokio::test(start_paused = true)]
async fn a_hung_measurement_fails_its_own_volume_and_no_other() {
    let pods = FakePods::new(vec![pod("web-0", "u-1", &["dead", "live"])]);
    let (api, io) = (FakeApi::default(), FakeMeasure::default());
    io.on("pv-dead", Behaviour::Hang);
    let h = Harness::start(&pods, &api, &io);
    wait(PERIOD * 6).await;
    assert!(io.calls_of("pv-live") >= 3);
    assert_eq!(h.row("dead").unwrap().2, Some(Err(Reason::Timeout)));
    assert_eq!(h.row("live").unwrap().2, Some(Ok(1)));
}

#[tokio::test(start_paused = true)]
async fn a_failing_measurement_is_retried_with_backoff_and_reported() {
    let pods = FakePods::new(vec![pod("web-0", "u-1", &["data"])]);
    let (api, io) = (FakeApi::default(), FakeMeasure::default());
    io.on(
        "pv-data",
        Behaviour::Answer(Err(Failure::new(Reason::NotMounted, "not a mount point"))),
    );
    let h = Harness::start(&pods, &api, &io);
    // Retries after 5-10 s, then 10-20 s, then 20-40 s (plus at most 5 s of
    // wake-up slack each): two or three calls in the first 34 s, where a
    // fixed 5 s retry would make six or more and no retry one.
    wait(Duration::from_secs(34)).await;
    let calls = io.calls_of("pv-data");
    assert!((2..=3).contains(&calls), "{calls} calls in 34 s");
    assert_eq!(h.row("data").unwrap().2, Some(Err(Reason::NotMounted)));
    // Mounted now: the next retry finds it, and the error is gone.
    io.on("pv-data", Behaviour::Answer(Ok(usage(7))));
    wait(PERIOD * 2).await;
    assert_eq!(h.row("data").unwrap().2, Some(Ok(7)));
}

#[tokio::test(start_paused = true)]
async fn claims_are_read_again_once_every_one_to_two_refresh_periods() {
    // What a DaemonSet costs the API server at rest: each PVC's claim is
    // read once at start, then once every 1x-2x REFRESH_PV.
    let pods = FakePods::new(vec![pod("web-0", "u-1", &["a", "b", "c"])]);
    let (api, io) = (FakeApi::default(), FakeMeasure::default());
    let _h = Harness::start(&pods, &api, &io);
    wait(Duration::from_secs(1)).await;
    assert_eq!(*lock(&api.gets), 3, "one read per claim at start");
    let periods = 20;
    wait(REFRESH_PV * periods).await;
    let again = *lock(&api.gets) - 3;
    let per_claim = periods as usize;
    assert!(
        (3 * per_claim / 2..=3 * per_claim).contains(&again),
        "{again} reads of 3 claims in {periods} refresh periods"
    );
}
