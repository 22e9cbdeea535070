//! PVC volume stats end to end: a fake Kubernetes API server speaking the
//! real wire format, real tmpfs mounts at kubelet's volume paths, a real loop
//! device, a real directory tree for a hostPath PV, and `kubedf serve`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use testkit::fake_kube::{self, FakeKube};
use testkit::*;

const NODE: &str = "node-1";
const NS: &str = "shop";

fn running_pod(name: &str, volumes: Vec<Value>) -> (String, Value) {
    let uid = fake_kube::fake_uid(name);
    let pod = fake_kube::pod(NS, name, &uid, NODE, "Running", volumes);
    (uid, pod)
}

/// A bound PVC and its PV.
fn bound(kube: &FakeKube, claim: &str, pv: Value) {
    let pv_name = pv["metadata"]["name"].as_str().expect("pv name").to_owned();
    let pvc = fake_kube::pvc(NS, claim, Some(&pv_name), "Bound");
    kube.put_pv(fake_kube::bind_pv(pv, &pvc));
    kube.put_pvc(pvc);
}

fn serve(kube: &FakeKube, node: &TestNode, extra: &[&str]) -> Served {
    let kubeconfig = node.dir().join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig)
        .expect("write kubeconfig");
    let args = [
        "--sample-interval",
        "500ms",
        "--volume-stats-agg-period",
        "300ms",
        "--volume-stats-timeout",
        "1s",
    ];
    kubedf!()
        .on_node(NODE, &kubeconfig, &node.root(), NO_RUNTIME)
        .kubelet_config(NO_KUBELET_CONFIG)
        .serve(&[&args[..], extra].concat())
}

fn stat(text: &str, name: &str, claim: &str) -> Option<String> {
    value(
        text,
        &format!("kubelet_volume_stats_{name}"),
        &[("namespace", NS), ("persistentvolumeclaim", claim)],
    )
}

fn volume_error(text: &str, claim: &str) -> Option<String> {
    samples(text)
        .into_iter()
        .find(|l| {
            l.name == "kubedf_volume_stats_error"
                && l.labels.get("persistentvolumeclaim").map(String::as_str) == Some(claim)
        })
        .map(|l| l.labels["reason"].clone())
}

/// Asserts the six kubelet figures of `claim` equal an independent statfs of `path`.
fn assert_statfs(text: &str, claim: &str, path: &Path) {
    let want = statfs_figures(path);
    for (name, want) in FS_FIGURES.iter().zip(want) {
        assert_eq!(
            stat(text, name, claim),
            Some(want.to_string()),
            "{claim}: kubelet_volume_stats_{name}"
        );
    }
}

#[test]
fn every_pvc_of_running_pods_under_kubelets_names() {
    let test = "every_pvc_of_running_pods_under_kubelets_names";
    if !prerequisites(test, need_root_and(&["promtool", "losetup", "du", "find"])) {
        return;
    }
    let kube = FakeKube::start();
    let mut node = TestNode::new();

    // Two pods share one CSI PVC: one series set, the first pod's.
    let (uid_a, pod_a) = running_pod(
        "db-0",
        vec![
            fake_kube::pvc_volume("data", "data"),
            fake_kube::emptydir_volume("cache"),
        ],
    );
    let (_, pod_b) = running_pod("db-reader", vec![fake_kube::pvc_volume("data", "data")]);
    bound(
        &kube,
        "data",
        fake_kube::pv_csi("pv-data", "ebs.csi.aws.com", "vol-1", "64Mi", "Filesystem"),
    );
    let data = node.mount_csi(&uid_a, "pv-data", 64 << 20, 5 << 20);
    // A generic ephemeral volume: its PVC is <pod>-<volume>.
    let (uid_e, pod_e) = running_pod("builder", vec![fake_kube::ephemeral_volume("scratch")]);
    bound(
        &kube,
        "builder-scratch",
        fake_kube::pv_csi(
            "pv-scratch",
            "ebs.csi.aws.com",
            "vol-2",
            "32Mi",
            "Filesystem",
        ),
    );
    let scratch = node.mount_csi(&uid_e, "pv-scratch", 32 << 20, 1 << 20);
    // A pod that is not Running: nothing.
    let pending = fake_kube::pod(
        NS,
        "waiting",
        &fake_kube::fake_uid("waiting"),
        NODE,
        "Pending",
        vec![fake_kube::pvc_volume("d", "pending-claim")],
    );
    bound(
        &kube,
        "pending-claim",
        fake_kube::pv_csi(
            "pv-pending",
            "ebs.csi.aws.com",
            "vol-3",
            "1Gi",
            "Filesystem",
        ),
    );
    // A pod without PVCs: nothing.
    let (_, plain) = running_pod("plain", vec![fake_kube::emptydir_volume("tmp")]);
    // An unbound PVC: an error saying so.
    let (_, pod_u) = running_pod("orphan", vec![fake_kube::pvc_volume("d", "unbound")]);
    kube.put_pvc(fake_kube::pvc(NS, "unbound", None, "Pending"));
    // A CSI volume whose directory is not a mount point: never statfs'ed.
    let (uid_n, pod_n) = running_pod("unmounted", vec![fake_kube::pvc_volume("d", "not-mounted")]);
    bound(
        &kube,
        "not-mounted",
        fake_kube::pv_csi("pv-nm", "ebs.csi.aws.com", "vol-4", "1Gi", "Filesystem"),
    );
    std::fs::create_dir_all(node.csi_mount(&uid_n, "pv-nm")).expect("mkdir");
    // A hostPath-backed PV (local-path-provisioner): walked.
    let host_dir = node.dir().join("local-path/pv-hp");
    for d in 0..20 {
        let sub = host_dir.join(format!("d{d}"));
        std::fs::create_dir_all(&sub).expect("mkdir");
        for f in 0..10 {
            std::fs::write(sub.join(format!("f{f}")), vec![2u8; 1000 * (f + 1)]).expect("write");
        }
    }
    std::os::unix::fs::symlink("/etc", host_dir.join("escape")).expect("symlink");
    let (_, pod_h) = running_pod("uploader", vec![fake_kube::pvc_volume("d", "uploads")]);
    bound(
        &kube,
        "uploads",
        fake_kube::pv_host_path("pv-hp", host_dir.to_str().expect("utf-8"), "1Gi"),
    );
    // A local PV that is a plain directory (walked) and one that is a mount (statfs).
    let local_dir = node.dir().join("disks/plain");
    std::fs::create_dir_all(&local_dir).expect("mkdir");
    std::fs::write(local_dir.join("x"), vec![3u8; 70_000]).expect("write");
    let (_, pod_l) = running_pod(
        "local-plain",
        vec![fake_kube::pvc_volume("d", "local-plain")],
    );
    bound(
        &kube,
        "local-plain",
        fake_kube::pv_local("pv-lp", local_dir.to_str().expect("utf-8"), "512Mi"),
    );
    let local_mount = node.dir().join("disks/ssd1");
    node.mount(&local_mount, 16 << 20);
    std::fs::write(local_mount.join("x"), vec![4u8; 2 << 20]).expect("write");
    let (_, pod_m) = running_pod(
        "local-mounted",
        vec![fake_kube::pvc_volume("d", "local-mounted")],
    );
    bound(
        &kube,
        "local-mounted",
        fake_kube::pv_local("pv-lm", local_mount.to_str().expect("utf-8"), "16Mi"),
    );
    // A block PVC on a real loop device.
    let (uid_b, pod_blk) = running_pod("raw", vec![fake_kube::pvc_volume("d", "raw")]);
    bound(
        &kube,
        "raw",
        fake_kube::pv_csi("pv-raw", "ebs.csi.aws.com", "vol-5", "24Mi", "Block"),
    );
    node.block_device(&uid_b, "pv-raw", 24 << 20);
    // A pod on another node: never seen.
    let elsewhere = fake_kube::pod(
        NS,
        "elsewhere",
        &fake_kube::fake_uid("elsewhere"),
        "node-2",
        "Running",
        vec![fake_kube::pvc_volume("d", "data")],
    );

    for pod in [
        pod_a, pod_b, pod_e, pending, plain, pod_u, pod_n, pod_h, pod_l, pod_m, pod_blk, elsewhere,
    ] {
        kube.put_pod(pod);
    }
    let served = serve(&kube, &node, &[]);
    let text = served.scrape_until(Duration::from_secs(20), "every volume measured", |t| {
        [
            "data",
            "builder-scratch",
            "uploads",
            "local-plain",
            "local-mounted",
            "raw",
        ]
        .iter()
        .all(|c| stat(t, "capacity_bytes", c).is_some())
            && volume_error(t, "unbound").is_some()
            && volume_error(t, "not-mounted").is_some()
    });

    assert_statfs(&text, "data", &data);
    assert_statfs(&text, "builder-scratch", &scratch);
    assert_statfs(&text, "local-mounted", &local_mount);
    let data_rows = samples(&text)
        .into_iter()
        .filter(|l| {
            l.name == "kubelet_volume_stats_capacity_bytes"
                && l.labels["persistentvolumeclaim"] == "data"
        })
        .count();
    assert_eq!(data_rows, 1, "one series set per PVC");
    let info = |claim: &str| {
        samples(&text)
            .into_iter()
            .find(|l| l.name == "kubedf_volume_info" && l.labels["persistentvolumeclaim"] == claim)
            .unwrap_or_else(|| panic!("kubedf_volume_info for {claim}"))
    };
    assert_eq!(info("data").labels["pod"], "db-0", "the first pod wins");
    assert_eq!(info("data").labels["method"], "statfs");
    assert_eq!(info("data").labels["driver"], "ebs.csi.aws.com");
    assert_eq!(info("uploads").labels["method"], "walk");
    assert_eq!(info("local-plain").labels["method"], "walk");
    assert_eq!(info("local-mounted").labels["method"], "statfs");
    assert_eq!(info("raw").labels["method"], "block");
    assert_eq!(info("raw").labels["volume_mode"], "Block");
    assert_eq!(
        stat(&text, "capacity_bytes", "pending-claim"),
        None,
        "pods not Running are left out"
    );
    assert_eq!(
        volume_error(&text, "unbound").as_deref(),
        Some("pvc_unbound")
    );
    assert_eq!(
        volume_error(&text, "not-mounted").as_deref(),
        Some("not_mounted")
    );
    assert_eq!(
        stat(&text, "capacity_bytes", "not-mounted"),
        None,
        "never the node's root filesystem"
    );

    // hostPath: du-method figures, declared capacity, statfs inodes.
    let (bytes, inodes) = du_find(&host_dir);
    assert_eq!(
        stat(&text, "used_bytes", "uploads"),
        Some(bytes.to_string())
    );
    assert_eq!(
        stat(&text, "inodes_used", "uploads"),
        Some(inodes.to_string())
    );
    assert_eq!(
        stat(&text, "capacity_bytes", "uploads"),
        Some((1u64 << 30).to_string())
    );
    let fs = statfs_figures(&host_dir);
    let available: u64 = stat(&text, "available_bytes", "uploads")
        .expect("available")
        .parse()
        .expect("number");
    assert!(
        available <= (1u64 << 30) - bytes && available <= fs[1] + (64 << 20),
        "available {available}"
    );
    let (bytes, inodes) = du_find(&local_dir);
    assert_eq!(
        stat(&text, "used_bytes", "local-plain"),
        Some(bytes.to_string())
    );
    assert_eq!(
        stat(&text, "inodes_used", "local-plain"),
        Some(inodes.to_string())
    );
    assert_eq!(
        stat(&text, "capacity_bytes", "local-plain"),
        Some((512u64 << 20).to_string())
    );

    // Block: the device size, used and available 0.
    assert_eq!(
        stat(&text, "capacity_bytes", "raw"),
        Some((24u64 << 20).to_string())
    );
    assert_eq!(stat(&text, "used_bytes", "raw").as_deref(), Some("0"));
    assert_eq!(stat(&text, "available_bytes", "raw").as_deref(), Some("0"));
    promtool_check(&text).unwrap();

    // Only node-scoped pod requests; PVCs and PVs by GET, never listed.
    for request in kube.request_log() {
        if request.contains("/pods") {
            assert!(
                request.contains("fieldSelector=spec.nodeName=node-1"),
                "{request}"
            );
        }
        if request.contains("persistentvolume") {
            assert!(
                request.split('?').next().expect("path").split('/').count() >= 5,
                "a GET of one object: {request}"
            );
        }
    }

    // A pod deleted through the watch: its PVC's series go.
    kube.delete_pod(NS, "uploader");
    served.scrape_until(Duration::from_secs(10), "uploads to disappear", |t| {
        stat(t, "capacity_bytes", "uploads").is_none()
    });
    // The first pod of a shared PVC leaves: the PVC stays, now the second pod's.
    kube.delete_pod(NS, "db-0");
    served.scrape_until(Duration::from_secs(10), "data to move to db-reader", |t| {
        samples(t).iter().any(|l| {
            l.name == "kubedf_volume_info"
                && l.labels["persistentvolumeclaim"] == "data"
                && l.labels["pod"] == "db-reader"
        })
    });

    // The watch stream is cut: kubedf re-watches and carries on.
    assert!(kube.wait_for_open_watches(1, Duration::from_secs(10)));
    kube.cut_watches();
    let (uid_late, late) = running_pod("late", vec![fake_kube::pvc_volume("d", "late")]);
    bound(
        &kube,
        "late",
        fake_kube::pv_csi("pv-late", "ebs.csi.aws.com", "vol-6", "8Mi", "Filesystem"),
    );
    let late_path = node.mount_csi(&uid_late, "pv-late", 8 << 20, 100_000);
    kube.put_pod(late);
    let text = served.scrape_until(Duration::from_secs(15), "a pod added after the cut", |t| {
        stat(t, "capacity_bytes", "late").is_some()
    });
    assert_statfs(&text, "late", &late_path);

    // History compacted and the stream cut: kubedf re-lists.
    let lists_before = kube
        .request_log()
        .iter()
        .filter(|r| r.contains("/pods") && !r.contains("watch="))
        .count();
    kube.compact();
    assert!(kube.wait_for_open_watches(1, Duration::from_secs(10)));
    kube.cut_watches();
    kube.delete_pod(NS, "late");
    served.scrape_until(
        Duration::from_secs(15),
        "late to go after the re-list",
        |t| stat(t, "capacity_bytes", "late").is_none(),
    );
    let lists_after = kube
        .request_log()
        .iter()
        .filter(|r| r.contains("/pods") && !r.contains("watch="))
        .count();
    assert!(
        lists_after > lists_before,
        "a re-list after 410 Expired ({lists_before} -> {lists_after})"
    );
    assert!(
        served.log_text().contains("kubernetes"),
        "{}",
        served.log_text()
    );
}

#[test]
fn without_cluster_access_the_rest_still_works() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, "this: is not a kubeconfig\n").expect("write");
    let out = kubedf!().run(&[
        "metrics",
        "--node-name",
        NODE,
        "--kubeconfig",
        kubeconfig.to_str().expect("utf-8"),
        "--kubelet.root-dir",
        dir.path().to_str().expect("utf-8"),
        "--cri.endpoint",
        NO_RUNTIME,
    ]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.matches("volume_stats collector failing").count(),
        1,
        "{stderr}"
    );
    assert!(
        stderr.contains(kubeconfig.to_str().expect("utf-8")),
        "the error names the file: {stderr}"
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(has_family(&text, "kubedf_nodefs_capacity_bytes"));
    // The main feature is off: an alert on collector success sees it.
    assert_eq!(
        value(
            &text,
            "kubedf_scrape_collector_success",
            &[("collector", "volume_stats")]
        )
        .as_deref(),
        Some("0")
    );
}

#[test]
fn metrics_and_df_measure_volumes_once() {
    let test = "metrics_and_df_measure_volumes_once";
    if !prerequisites(test, need_root_and(&["promtool"])) {
        return;
    }
    let kube = FakeKube::start();
    let mut node = TestNode::new();
    let (uid, pod) = running_pod("one-shot", vec![fake_kube::pvc_volume("d", "once")]);
    bound(
        &kube,
        "once",
        fake_kube::pv_csi("pv-once", "ebs.csi.aws.com", "vol-7", "16Mi", "Filesystem"),
    );
    let path = node.mount_csi(&uid, "pv-once", 16 << 20, 3 << 20);
    kube.put_pod(pod);
    let kubeconfig = node.dir().join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let root = node.root().display().to_string();
    let args = |cmd: &'static str| {
        vec![
            cmd.to_owned(),
            "--node-name".into(),
            NODE.into(),
            "--kubeconfig".into(),
            kubeconfig.display().to_string(),
            "--kubelet.root-dir".into(),
            root.clone(),
            "--cri.endpoint".into(),
            NO_RUNTIME.into(),
        ]
    };
    let metrics = args("metrics");
    let out = kubedf!().run(&metrics.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_statfs(&text, "once", &path);
    promtool_check(&text).unwrap();

    // A walk that runs out of its budget reports nothing and says why.
    let tree = node.dir().join("local-path/big");
    for d in 0..5 {
        std::fs::create_dir_all(tree.join(format!("d{d}"))).expect("mkdir");
    }
    let (_, walker) = running_pod("walker", vec![fake_kube::pvc_volume("d", "big")]);
    bound(
        &kube,
        "big",
        fake_kube::pv_host_path("pv-big", tree.to_str().expect("utf-8"), "1Gi"),
    );
    kube.put_pod(walker);
    let mut tight = args("metrics");
    tight.extend(["--volume-stats-walk-timeout".to_owned(), "1ns".to_owned()]);
    let out = kubedf!().run(&tight.iter().map(String::as_str).collect::<Vec<_>>());
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        volume_error(&text, "big").as_deref(),
        Some("walk_budget_exceeded"),
        "{text}"
    );
    assert_eq!(stat(&text, "used_bytes", "big"), None);
    assert_statfs(&text, "once", &path);
    assert!(String::from_utf8_lossy(&out.stderr).contains("budget"));

    let df = args("df");
    let out = kubedf!().run(&df.iter().map(String::as_str).collect::<Vec<_>>());
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("shop/once") && table.contains("16M") && table.contains("statfs"),
        "{table}"
    );
}

/// `examples/hangfs`. The test command builds it (`cargo build --examples`);
/// a plain `cargo test` builds examples only as test harnesses, so build it
/// here when it is missing.
fn hangfs_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = profile_dir.join("examples/hangfs");
    if !bin.is_file() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--example", "hangfs"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cargo build --example hangfs");
        assert!(status.success(), "cargo build --example hangfs failed");
    }
    bin
}

/// A FUSE mount whose statfs never answers until recovered.
struct HungMount {
    child: std::process::Child,
}

impl HungMount {
    fn mount(path: &Path) -> HungMount {
        std::fs::create_dir_all(path).expect("mkdir");
        let mut child = Command::new(hangfs_bin())
            .arg(path)
            .args(["--hang", "statfs", "--size", &(256u64 << 20).to_string()])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start hangfs");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
            .expect("read hangfs");
        assert_eq!(line.trim(), "ready", "hangfs did not mount");
        HungMount { child }
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal)
            .expect("signal hangfs");
    }
}

impl Drop for HungMount {
    fn drop(&mut self) {
        // SIGTERM answers parked requests and unmounts, even while callers hang.
        stop_child(&mut self.child);
    }
}

/// kubedf's threads blocked in a FUSE request (the hung statfs).
fn threads_blocked_in_fuse(pid: u32) -> usize {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter(|t| {
            std::fs::read_to_string(t.path().join("wchan"))
                .map(|w| w.contains("fuse") || w.contains("request_wait_answer"))
                .unwrap_or(false)
        })
        .count()
}

#[test]
fn a_hung_mount_never_slows_a_scrape() {
    let test = "a_hung_mount_never_slows_a_scrape";
    if !prerequisites(test, need_root_and(&["promtool", "fusermount3"])) {
        return;
    }
    assert!(
        hangfs_bin().is_file(),
        "{} is built by cargo test",
        hangfs_bin().display()
    );
    let kube = FakeKube::start();
    let mut node = TestNode::new();
    let (uid, pod) = running_pod(
        "nfs-client",
        vec![
            fake_kube::pvc_volume("share", "share"),
            fake_kube::pvc_volume("local", "fresh"),
        ],
    );
    bound(
        &kube,
        "share",
        fake_kube::pv_nfs("pv-share", "10.0.0.9", "/export", "256Mi"),
    );
    bound(
        &kube,
        "fresh",
        fake_kube::pv_csi("pv-fresh", "ebs.csi.aws.com", "vol-8", "32Mi", "Filesystem"),
    );
    let fresh = node.mount_csi(&uid, "pv-fresh", 32 << 20, 1 << 20);
    let share_path = node
        .root()
        .join("pods")
        .join(&uid)
        .join("volumes/kubernetes.io~nfs/pv-share");
    let hung = HungMount::mount(&share_path);
    kube.put_pod(pod);

    let served = serve(&kube, &node, &[]);
    // Scrapes answer from the very first one; a hang would hit the client's timeout.
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .expect("client");
    for _ in 0..5 {
        let r = client
            .get(served.url("/metrics"))
            .send()
            .expect("a scrape answers while the mount hangs");
        assert_eq!(r.status(), 200);
    }
    let text = served.scrape_until(Duration::from_secs(15), "the hung volume reported", |t| {
        volume_error(t, "share").as_deref() == Some("timeout")
            && stat(t, "capacity_bytes", "fresh").is_some()
    });
    assert_eq!(
        stat(&text, "capacity_bytes", "share"),
        None,
        "no stale figures for the hung volume"
    );
    assert_statfs(&text, "fresh", &fresh);
    promtool_check(&text).unwrap();

    // The other volume keeps being refreshed.
    let before: u64 = stat(&text, "used_bytes", "fresh")
        .expect("used")
        .parse()
        .expect("number");
    std::fs::write(fresh.join("more"), vec![9u8; 2 << 20]).expect("write more");
    served.scrape_until(Duration::from_secs(10), "the fresh volume to update", |t| {
        stat(t, "used_bytes", "fresh")
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|v| v > before)
    });
    // Many periods later, still one thread stuck in the hung statfs, not one per period.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        threads_blocked_in_fuse(served.child.id()),
        1,
        "one blocked thread for the hung mount"
    );
    let r = client.get(served.url("/metrics")).send().expect("scrape");
    assert_eq!(r.status(), 200);

    // The mount recovers: its series come back, its error goes.
    hung.signal(nix::sys::signal::Signal::SIGUSR1);
    let text = served.scrape_until(Duration::from_secs(15), "the recovered volume", |t| {
        stat(t, "capacity_bytes", "share").is_some() && volume_error(t, "share").is_none()
    });
    assert_eq!(
        stat(&text, "capacity_bytes", "share"),
        Some((256u64 << 20).to_string())
    );
    assert_eq!(threads_blocked_in_fuse(served.child.id()), 0);
    let log = served.log_text();
    assert!(
        log.contains("volume not measured") && log.contains("volume measurable again"),
        "{log}"
    );
    drop(served);
    drop(hung);
}

/// Issue 9, finding 3: with the API server unreachable, nothing counts as a
/// success of the kubernetes source, and the failure is logged once (kube's
/// watcher emits `Init` before each list attempt; that used to "recover" the
/// source every retry and advance its last-success timestamp).
#[test]
fn an_unreachable_api_server_never_looks_healthy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\n\
         clusters:\n- name: gone\n  cluster:\n    server: https://127.0.0.1:1\n\
         users:\n- name: gone\n  user: {}\n\
         contexts:\n- name: gone\n  context:\n    cluster: gone\n    user: gone\n\
         current-context: gone\n",
    )
    .expect("write kubeconfig");
    let served = kubedf!()
        .on_node(NODE, &kubeconfig, dir.path(), NO_RUNTIME)
        .serve(&[]);
    let up = |text: &str| value(text, "kubedf_source_up", &[("source", "kubernetes")]);
    // Several of the watcher's retries (its backoff starts below a second).
    let text = served.scrape_until(Duration::from_secs(30), "a failed kubernetes source", |t| {
        up(t).as_deref() == Some("0")
    });
    std::thread::sleep(Duration::from_secs(6));
    let text2 = served.scrape();
    for t in [&text, &text2] {
        assert_eq!(up(t).as_deref(), Some("0"), "{t}");
        assert_eq!(
            value(
                t,
                "kubedf_source_last_success_timestamp_seconds",
                &[("source", "kubernetes")]
            ),
            None,
            "the API was never reached: no last success\n{t}"
        );
    }
    let log = served.log_text();
    assert_eq!(
        log.matches("kubernetes API failed").count(),
        1,
        "one failure, logged once:\n{log}"
    );
    assert!(!log.contains("kubernetes API recovered"), "{log}");
}
