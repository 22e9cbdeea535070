//! The pod half end to end: a fake Kubernetes API server with pods whose
//! limits and volumes kubelet would read, real directory trees at kubelet's
//! paths (hard links, a nested tmpfs, a symlink out of the tree), real
//! containers under a real containerd run through the CRI, and `kubedf
//! serve`'s /metrics and /stats/summary, checked against `du -sxB1`, `find
//! -xdev` and containerd's own ListContainerStats answer.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::containerd::{Containerd, Image};
use testkit::cri::{ContainerSpec, Cri, PodSpec};
use testkit::fake_kube::{self, FakeKube};
use testkit::*;

const NODE: &str = "node-1";
const NS: &str = "shop";
const MIB: u64 = 1 << 20;

/// `kubedf serve` on the node, its pod logs dir from the kubelet config.
fn serve(node: &TestNode, kube: &FakeKube, cri: &str) -> Served {
    let kubeconfig = node.dir().join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig)
        .expect("write kubeconfig");
    kubedf!()
        .on_node(NODE, &kubeconfig, &node.root(), cri)
        .kubelet_config(node.config())
        .serve(&[
            "--sample-interval",
            "500ms",
            "--volume-stats-agg-period",
            "300ms",
            "--volume-stats-timeout",
            "2s",
        ])
}

fn pod_with(name: &str, uid: &str, containers: Value, volumes: Vec<Value>) -> Value {
    let mut pod = fake_kube::pod(NS, name, uid, NODE, "Running", volumes);
    pod["spec"]["containers"] = containers;
    pod
}

fn container(name: &str, limit: Option<&str>) -> Value {
    let limits = match limit {
        Some(l) => json!({"ephemeral-storage": l, "memory": "64Mi"}),
        None => json!({"memory": "64Mi"}),
    };
    json!({"name": name, "image": "registry.k8s.io/pause:3.10", "resources": {"limits": limits}})
}

fn pod_value(text: &str, name: &str, pod: &str) -> Option<String> {
    value(text, name, &[("namespace", NS), ("pod", pod)])
}

fn volume_value(text: &str, name: &str, pod: &str, volume: &str, kind: &str) -> Option<String> {
    value(
        text,
        name,
        &[
            ("namespace", NS),
            ("pod", pod),
            ("volume", volume),
            ("kind", kind),
        ],
    )
}

fn container_value(text: &str, name: &str, pod: &str, c: &str) -> Option<String> {
    value(
        text,
        name,
        &[("namespace", NS), ("pod", pod), ("container", c)],
    )
}

fn summary(served: &Served) -> Value {
    let r = http()
        .get(served.url("/stats/summary"))
        .send()
        .expect("GET /stats/summary");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    r.json().expect("summary is JSON")
}

fn summary_pod<'a>(summary: &'a Value, name: &str) -> &'a Value {
    summary["pods"]
        .as_array()
        .expect("pods[]")
        .iter()
        .find(|p| p["podRef"]["name"] == name)
        .unwrap_or_else(|| panic!("pod {name} in {summary:#}"))
}

/// Keys and JSON types of kubelet's stats/v1alpha1 FsStats: `time` a string,
/// every number an unsigned integer; nothing else.
fn assert_fs_stats(fs: &Value, what: &str) {
    let obj = fs.as_object().unwrap_or_else(|| panic!("{what}: {fs}"));
    assert!(obj["time"].is_string(), "{what}.time");
    for (k, v) in obj {
        match k.as_str() {
            "time" | "name" | "pvcRef" => {}
            "availableBytes" | "capacityBytes" | "usedBytes" | "inodesFree" | "inodes"
            | "inodesUsed" => assert!(v.is_u64(), "{what}.{k} is a uint64: {v}"),
            other => panic!("{what}: key {other} is not in kubelet's FsStats"),
        }
    }
}

#[test]
fn ephemeral_volumes_and_limits_by_kubelets_rules() {
    let test = "ephemeral_volumes_and_limits_by_kubelets_rules";
    if !prerequisites(test, need_root_and(&["du", "find", "promtool"])) {
        return;
    }
    let kube = FakeKube::start();
    let mut node = TestNode::new();

    // A container limit, an emptyDir with a sizeLimit, a configMap; a
    // memory emptyDir and a secret that are not local ephemeral storage.
    let uid = fake_kube::fake_uid("limited");
    let cache = node.volume(&uid, "kubernetes.io~empty-dir", "cache");
    node.fill(&cache);
    let cfg = node.volume(&uid, "kubernetes.io~configmap", "cfg");
    // kubelet's atomic-writer layout: a timestamped dir, ..data and key links.
    let ts = cfg.join("..2026_12_01_00_00_00.000000001");
    std::fs::create_dir(&ts).expect("mkdir");
    std::fs::write(ts.join("settings.yaml"), vec![b'x'; 9_000]).expect("write");
    std::os::unix::fs::symlink(ts.file_name().expect("name"), cfg.join("..data")).expect("link");
    std::os::unix::fs::symlink("..data/settings.yaml", cfg.join("settings.yaml")).expect("link");
    let shm = node.volume(&uid, "kubernetes.io~empty-dir", "shm");
    std::fs::write(shm.join("x"), vec![0u8; 10_000]).expect("write");
    kube.put_pod(pod_with(
        "limited",
        &uid,
        json!([container("app", Some("1Gi"))]),
        vec![
            json!({"name": "cache", "emptyDir": {"sizeLimit": "64Mi"}}),
            json!({"name": "cfg", "configMap": {"name": "settings"}}),
            json!({"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}}),
            json!({"name": "token", "secret": {"secretName": "t"}}),
        ],
    ));
    // Every container has a limit: the pod's limit is their sum.
    let uid_all = fake_kube::fake_uid("all-limits");
    kube.put_pod(pod_with(
        "all-limits",
        &uid_all,
        json!([container("a", Some("100Mi")), container("b", Some("200Mi"))]),
        vec![],
    ));
    // Some have none: PodLimits adds what the others name, and kubelet
    // enforces that sum on the whole pod.
    let uid_some = fake_kube::fake_uid("some-limits");
    kube.put_pod(pod_with(
        "some-limits",
        &uid_some,
        json!([container("a", Some("100Mi")), container("b", None)]),
        vec![],
    ));
    // No limits at all, an emptyDir without a sizeLimit.
    let uid_none = fake_kube::fake_uid("no-limits");
    let scratch = node.volume(&uid_none, "kubernetes.io~empty-dir", "scratch");
    std::fs::write(scratch.join("f"), vec![5u8; 40_000]).expect("write");
    kube.put_pod(pod_with(
        "no-limits",
        &uid_none,
        json!([container("a", None)]),
        vec![fake_kube::emptydir_volume("scratch")],
    ));

    let served = serve(&node, &kube, NO_RUNTIME);
    let text = served.scrape_until(Duration::from_secs(30), "volumes measured", |t| {
        volume_value(
            t,
            "kubedf_ephemeral_volume_used_bytes",
            "limited",
            "cache",
            "emptyDir",
        )
        .is_some()
            && volume_value(
                t,
                "kubedf_ephemeral_volume_used_bytes",
                "limited",
                "cfg",
                "configMap",
            )
            .is_some()
            && volume_value(
                t,
                "kubedf_ephemeral_volume_used_bytes",
                "no-limits",
                "scratch",
                "emptyDir",
            )
            .is_some()
    });
    promtool_check(&text).expect("promtool check metrics");

    for (pod, volume, kind, path) in [
        ("limited", "cache", "emptyDir", &cache),
        ("limited", "cfg", "configMap", &cfg),
        ("no-limits", "scratch", "emptyDir", &scratch),
    ] {
        let (bytes, inodes) = du_find(path);
        assert_eq!(
            volume_value(
                &text,
                "kubedf_ephemeral_volume_used_bytes",
                pod,
                volume,
                kind
            ),
            Some(bytes.to_string()),
            "{pod}/{volume}: du -sxB1 {}",
            path.display()
        );
        assert_eq!(
            volume_value(
                &text,
                "kubedf_ephemeral_volume_inodes_used",
                pod,
                volume,
                kind
            ),
            Some(inodes.to_string()),
            "{pod}/{volume}: find -xdev {}",
            path.display()
        );
    }
    let (cache_bytes, _) = du_find(&cache);
    assert!(
        cache_bytes < 2 * MIB,
        "the nested tmpfs's 2 MiB are not counted: {cache_bytes}"
    );
    // Memory-medium emptyDirs and secrets are not local ephemeral storage.
    for v in ["shm", "token"] {
        assert!(
            !text.contains(&format!("volume=\"{v}\"")),
            "{v} reported:\n{text}"
        );
    }

    // Limits: only where kubelet's eviction manager would enforce one.
    let limit = |pod: &str| pod_value(&text, "kubedf_pod_ephemeral_storage_limit_bytes", pod);
    assert_eq!(limit("limited"), Some((1u64 << 30).to_string()));
    assert_eq!(limit("all-limits"), Some((300 * MIB).to_string()));
    assert_eq!(limit("some-limits"), Some((100 * MIB).to_string()));
    assert_eq!(limit("no-limits"), None);
    let climit = |pod: &str, c: &str| {
        container_value(
            &text,
            "kubedf_container_ephemeral_storage_limit_bytes",
            pod,
            c,
        )
    };
    assert_eq!(climit("limited", "app"), Some((1u64 << 30).to_string()));
    assert_eq!(climit("all-limits", "a"), Some((100 * MIB).to_string()));
    assert_eq!(climit("all-limits", "b"), Some((200 * MIB).to_string()));
    assert_eq!(climit("some-limits", "a"), Some((100 * MIB).to_string()));
    assert_eq!(climit("some-limits", "b"), None);
    assert_eq!(climit("no-limits", "a"), None);
    assert_eq!(
        volume_value(
            &text,
            "kubedf_ephemeral_volume_size_limit_bytes",
            "limited",
            "cache",
            "emptyDir"
        ),
        Some((64 * MIB).to_string())
    );
    assert_eq!(
        volume_value(
            &text,
            "kubedf_ephemeral_volume_size_limit_bytes",
            "no-limits",
            "scratch",
            "emptyDir"
        ),
        None
    );

    // The runtime is down: no pod total (never 0), an error with a reason.
    assert_eq!(
        pod_value(&text, "kubedf_pod_ephemeral_storage_used_bytes", "limited"),
        None
    );
    assert_eq!(
        value(
            &text,
            "kubedf_pod_storage_error",
            &[
                ("namespace", NS),
                ("pod", "limited"),
                ("part", "containers")
            ]
        )
        .as_deref(),
        Some("1")
    );
    assert!(text.contains(
        r#"kubedf_pod_storage_error{namespace="shop",pod="limited",part="containers",name="",reason="cri_unavailable"} 1"#
    ));
    assert_eq!(
        value(
            &text,
            "kubedf_scrape_collector_success",
            &[("collector", "pod_storage")]
        )
        .as_deref(),
        Some("0")
    );

    // /stats/summary: kubelet's keys and types, the same figures.
    let s = summary(&served);
    assert_eq!(s["node"]["nodeName"], NODE);
    let limited = summary_pod(&s, "limited");
    assert_eq!(limited["podRef"]["namespace"], NS);
    assert_eq!(limited["podRef"]["uid"], uid.as_str());
    assert!(
        limited.get("ephemeral-storage").is_none(),
        "no total without the runtime"
    );
    assert!(limited.get("cpu").is_none() && limited.get("memory").is_none());
    let vols = limited["volume"].as_array().expect("volume[]");
    for v in vols {
        assert_fs_stats(v, "volume[]");
    }
    let cache_stats = vols
        .iter()
        .find(|v| v["name"] == "cache")
        .expect("cache in volume[]");
    assert_eq!(
        Some(cache_stats["usedBytes"].to_string()),
        volume_value(
            &text,
            "kubedf_ephemeral_volume_used_bytes",
            "limited",
            "cache",
            "emptyDir"
        )
    );
    assert_eq!(
        Some(cache_stats["inodesUsed"].to_string()),
        volume_value(
            &text,
            "kubedf_ephemeral_volume_inodes_used",
            "limited",
            "cache",
            "emptyDir"
        )
    );

    // Series go away with the pod.
    kube.delete_pod(NS, "limited");
    served.scrape_until(
        Duration::from_secs(20),
        "the deleted pod's series gone",
        |t| !t.contains("pod=\"limited\""),
    );
    let s = summary(&served);
    assert!(
        s["pods"]
            .as_array()
            .expect("pods")
            .iter()
            .all(|p| p["podRef"]["name"] != "limited"),
        "{s:#}"
    );
}

const CONTAINERD_TOOLS: &[&str] = &[
    "containerd",
    "ctr",
    "runc",
    "containerd-shim-runc-v2",
    "busybox",
    "du",
    "find",
];

#[test]
fn real_containers_rootfs_logs_and_kubelets_sum() {
    let test = "real_containers_rootfs_logs_and_kubelets_sum";
    if !prerequisites(test, need_root_and(CONTAINERD_TOOLS)) {
        return;
    }
    let mut node = TestNode::new();
    let containerd = Containerd::start(&node.dir().join("cd"), 256 << 20).expect("containerd");
    let cri = Cri::connect(&containerd).expect("CRI");
    let image = containerd
        .import_image(&Image::busybox("writer").expect("busybox image"))
        .expect("import");
    let uid = "5e7a1c2d-0000-4000-8000-00000000beef";
    let mut spec = PodSpec::new(NS, "writer", uid, &node.logs());
    spec.kubelet_root = Some(node.root());
    let kube = FakeKube::start();
    let scratch = node.volume(uid, "kubernetes.io~empty-dir", "scratch");
    std::fs::write(scratch.join("f"), vec![6u8; 123_456]).expect("write");
    kube.put_pod(pod_with(
        "writer",
        uid,
        json!([container("app", Some("512Mi")), container("idle", None)]),
        vec![json!({"name": "scratch", "emptyDir": {"sizeLimit": "16Mi"}})],
    ));
    let mut pod = cri.run_pod(&spec).expect("RunPodSandbox");
    // 3 MiB into the writable layer, 1 MiB to stdout, then stay up.
    let script = format!(
        "dd if=/dev/urandom of=/written bs=1048576 count=3 2>/dev/null && \
         yes 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde | head -c {} && \
         trap 'exit 0' TERM; while :; do sleep 3600 & wait $!; done",
        MIB
    );
    let app = pod
        .start(&ContainerSpec::new("app", &image).shell(&script))
        .expect("start app");
    let idle = pod
        .start(
            &ContainerSpec::new("idle", &image)
                .shell("trap 'exit 0' TERM; while :; do sleep 3600 & wait $!; done"),
        )
        .expect("start idle");
    // Wait for the 1 MiB of stdout to land in the log.
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::fs::metadata(&app.log_path)
        .map(|m| m.len())
        .unwrap_or(0)
        < MIB
    {
        assert!(
            Instant::now() < deadline,
            "no log at {}",
            app.log_path.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The log tree gets the awkward cases too: a rotated hard link, a
    // symlink out of the tree, a nested mount; and a pod-level log file.
    let app_logs = app
        .log_path
        .parent()
        .expect("container log dir")
        .to_path_buf();
    std::fs::hard_link(&app.log_path, app_logs.join("0.log.20261201-000000")).expect("link");
    std::os::unix::fs::symlink("/etc", app_logs.join("escape")).expect("symlink");
    let nested = app_logs.join("nested");
    node.mount(&nested, 4 * MIB);
    std::fs::write(nested.join("big"), vec![1u8; MIB as usize]).expect("write");
    let pod_log_dir = app_logs.parent().expect("pod log dir").to_path_buf();
    std::fs::write(pod_log_dir.join("sandbox.log"), vec![b'l'; 20_000]).expect("write");

    // containerd's own answer, once it has refreshed past the 3 MiB.
    let deadline = Instant::now() + Duration::from_secs(120);
    let layer = |id: &str| {
        let stats = cri.container_stats(id).expect("ListContainerStats");
        let w = stats.writable_layer.expect("writable_layer");
        (
            w.used_bytes.map(|v| v.value).unwrap_or(0),
            w.inodes_used.map(|v| v.value).unwrap_or(0),
        )
    };
    while layer(&app.id).0 < 3 * MIB {
        assert!(
            Instant::now() < deadline,
            "writable layer never reached 3 MiB"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // And settled: containerd refreshes its usage figures every second, and
    // runc adds mount-point files to a layer just after a container starts,
    // so a figure read by kubedf and one read by the test later can differ
    // while a layer still changes. Both are compared once two answers 2.5 s
    // apart agree.
    let both = || (layer(&app.id), layer(&idle.id));
    let mut last = both();
    loop {
        std::thread::sleep(Duration::from_millis(2500));
        let now = both();
        if now == last {
            break;
        }
        assert!(Instant::now() < deadline, "writable layers never settled");
        last = now;
    }

    let socket = format!("unix://{}", containerd.socket().display());
    let served = serve(&node, &kube, &socket);
    let text = served.scrape_until(Duration::from_secs(60), "the pod's total", |t| {
        pod_value(t, "kubedf_pod_ephemeral_storage_used_bytes", "writer").is_some()
            && container_value(t, "kubedf_container_logs_used_bytes", "writer", "app").is_some()
    });
    let figure = |t: &str, name: &str, c: &str| -> u64 {
        container_value(t, name, "writer", c)
            .unwrap_or_else(|| panic!("{name}{{container={c}}} in\n{t}"))
            .parse()
            .expect("integer")
    };

    // rootfs: containerd's ListContainerStats answer, for each container.
    for (c, id) in [("app", &app.id), ("idle", &idle.id)] {
        let (used, inodes) = layer(id);
        assert_eq!(
            figure(&text, "kubedf_container_rootfs_used_bytes", c),
            used,
            "{c} rootfs bytes"
        );
        assert_eq!(
            figure(&text, "kubedf_container_rootfs_inodes_used", c),
            inodes,
            "{c} rootfs inodes"
        );
    }
    assert!(figure(&text, "kubedf_container_rootfs_used_bytes", "app") >= 3 * MIB);

    // logs: du -sxB1 and find -xdev of the log dir (the hard link once, the
    // symlink not followed, the nested tmpfs not counted).
    let mut log_figures = 0u64;
    let mut log_inodes = 0u64;
    for c in ["app", "idle"] {
        let dir = pod_log_dir.join(c);
        let (bytes, inodes) = du_find(&dir);
        assert_eq!(
            figure(&text, "kubedf_container_logs_used_bytes", c),
            bytes,
            "du -sxB1 {}",
            dir.display()
        );
        assert_eq!(
            figure(&text, "kubedf_container_logs_inodes_used", c),
            inodes,
            "find -xdev {}",
            dir.display()
        );
        log_figures += bytes;
        log_inodes += inodes;
    }
    assert!(figure(&text, "kubedf_container_logs_used_bytes", "app") > MIB);
    assert!(
        figure(&text, "kubedf_container_logs_used_bytes", "app") < 2 * MIB + 64 * 1024,
        "nested mount counted?"
    );

    // The pod's total: kubelet's sum, computed here from independent figures.
    let (scratch_bytes, scratch_inodes) = du_find(&scratch);
    let blocks = |p: &Path| {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::symlink_metadata(p)
            .map(|m| m.blocks() * 512)
            .unwrap_or(0)
    };
    let pod_files = blocks(&pod_log_dir.join("sandbox.log"));
    let etc_hosts = node.root().join("pods").join(uid).join("etc-hosts");
    let etc_hosts_bytes = blocks(&etc_hosts);
    let etc_hosts_inodes = u64::from(etc_hosts.exists());
    let (app_rootfs, app_rootfs_inodes) = layer(&app.id);
    let (idle_rootfs, idle_rootfs_inodes) = layer(&idle.id);
    let want_bytes =
        app_rootfs + idle_rootfs + log_figures + scratch_bytes + pod_files + etc_hosts_bytes;
    let want_inodes =
        app_rootfs_inodes + idle_rootfs_inodes + log_inodes + scratch_inodes + 1 + etc_hosts_inodes;
    assert_eq!(
        pod_value(&text, "kubedf_pod_ephemeral_storage_used_bytes", "writer"),
        Some(want_bytes.to_string()),
        "rootfs {app_rootfs}+{idle_rootfs}, logs {log_figures}, emptyDir {scratch_bytes}, pod log files {pod_files}, etc-hosts {etc_hosts_bytes}"
    );
    assert_eq!(
        pod_value(&text, "kubedf_pod_ephemeral_storage_inodes_used", "writer"),
        Some(want_inodes.to_string())
    );
    assert!(!text.contains("kubedf_pod_storage_error{"), "{text}");

    // /stats/summary: the same figures in kubelet's shape.
    let s = summary(&served);
    let p = summary_pod(&s, "writer");
    assert_eq!(p["podRef"]["uid"], uid);
    let total = &p["ephemeral-storage"];
    assert_fs_stats(total, "ephemeral-storage");
    assert_eq!(total["usedBytes"], want_bytes);
    assert_eq!(total["inodesUsed"], want_inodes);
    for c in p["containers"].as_array().expect("containers[]") {
        let name = c["name"].as_str().expect("name");
        assert_fs_stats(&c["rootfs"], "rootfs");
        assert_fs_stats(&c["logs"], "logs");
        assert_eq!(
            c["rootfs"]["usedBytes"],
            figure(&text, "kubedf_container_rootfs_used_bytes", name)
        );
        assert_eq!(
            c["logs"]["usedBytes"],
            figure(&text, "kubedf_container_logs_used_bytes", name)
        );
        assert!(c.get("cpu").is_none() && c.get("memory").is_none());
    }

    // Stop and remove: the pod's containers and sandbox go away.
    drop(served);
    let sandbox = pod.sandbox_id().to_owned();
    pod.remove().expect("stop and remove");
    let left = containerd
        .ctr_ns()
        .args(["containers", "ls", "-q"])
        .run(Duration::from_secs(60))
        .expect("ctr containers ls");
    assert!(
        !left.contains(&sandbox) && !left.contains(&app.id) && !left.contains(&idle.id),
        "containers left: {left}"
    );
}

#[test]
fn the_summary_is_behind_the_same_web_config_as_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("web.yml");
    let hash = bcrypt::hash("s3cret", 4).expect("bcrypt");
    std::fs::write(
        &config,
        format!("basic_auth_users:\n  prometheus: '{hash}'\n"),
    )
    .expect("write web config");
    let served = kubedf!().serve(&[
        "--web.config.file",
        config.to_str().expect("utf-8"),
        "--kubelet.config",
        NO_KUBELET_CONFIG,
        "--cri.endpoint",
        NO_RUNTIME,
        "--node-name",
        NODE,
        "--no-collector.volume_stats",
        "--no-collector.pod_storage",
    ]);
    for path in ["/metrics", "/stats/summary"] {
        let r = http().get(served.url(path)).send().expect("GET");
        assert_eq!(r.status(), 401, "{path} without credentials");
    }
    let r = http()
        .get(served.url("/stats/summary"))
        .basic_auth("prometheus", Some("s3cret"))
        .send()
        .expect("GET /stats/summary");
    assert_eq!(r.status(), 200);
    let s: Value = r.json().expect("JSON");
    assert_eq!(s["node"]["nodeName"], NODE);
    assert_eq!(s["pods"], json!([]), "no pod half: no pods, not an error");
    assert!(s["node"]["rlimit"]["maxpid"].is_u64(), "{s:#}");
}

/// The annotation kubelet writes a container's `lifecycle.preStop` into,
/// as the handler's JSON.
const PRE_STOP: &str = "io.kubernetes.container.preStopHandler";

/// A preStop exec handler whose JSON is about `bytes` long.
fn pre_stop_handler(bytes: usize) -> String {
    let script = format!("echo {}", "x".repeat(bytes));
    json!({"exec": {"command": ["/bin/sh", "-c", script]}}).to_string()
}

/// A shell that waits for SIGTERM.
const IDLE: &str = "trap 'exit 0' TERM; while :; do sleep 3600 & wait $!; done";

#[test]
fn a_large_pod_spec_blinds_no_other_pod() {
    let test = "a_large_pod_spec_blinds_no_other_pod";
    if !prerequisites(test, need_root_and(CONTAINERD_TOOLS)) {
        return;
    }
    let node = TestNode::new();
    let containerd = Containerd::start(&node.dir().join("cd"), 512 << 20).expect("containerd");
    let cri = Cri::connect(&containerd).expect("CRI");
    let image = containerd
        .import_image(&Image::busybox("idle").expect("busybox image"))
        .expect("import");
    let kube = FakeKube::start();
    let mut pods = Vec::new();
    let mut run = |name: &str, containers: &[(&str, usize)]| {
        let uid = fake_kube::fake_uid(name);
        let spec = PodSpec::new(NS, name, &uid, &node.logs());
        let names: Vec<Value> = containers.iter().map(|(c, _)| container(c, None)).collect();
        kube.put_pod(pod_with(name, &uid, Value::Array(names), vec![]));
        let mut pod = cri.run_pod(&spec).expect("RunPodSandbox");
        for (c, pre_stop) in containers {
            let mut spec = ContainerSpec::new(c, &image).shell(IDLE);
            if *pre_stop > 0 {
                spec = spec.annotation(PRE_STOP, &pre_stop_handler(*pre_stop));
            }
            pod.start(&spec).expect("start container");
        }
        pods.push(pod);
    };
    // Three pods with a 1.4 MB preStop command and a plain one.
    for name in ["hook-0", "hook-1", "hook-2"] {
        run(name, &[("app", 1_400_000)]);
    }
    run("plain", &[("app", 0)]);

    // The node-wide answer passes gRPC's default 4 MiB, not kubelet's 16 MiB.
    let err = cri
        .list_running_containers(4 << 20)
        .expect_err("a 4 MiB client refuses the answer");
    assert!(err.contains("too large"), "{err}");
    let all = cri.list_running_containers(16 << 20).expect("16 MiB");
    assert_eq!(all.len(), 4, "{err}");

    let socket = format!("unix://{}", containerd.socket().display());
    let served = serve(&node, &kube, &socket);
    let total = |t: &str, pod: &str| pod_value(t, "kubedf_pod_ephemeral_storage_used_bytes", pod);
    let everyone = ["hook-0", "hook-1", "hook-2", "plain"];
    let text = served.scrape_until(Duration::from_secs(60), "every pod's total", |t| {
        everyone.iter().all(|p| total(t, p).is_some())
    });
    for pod in everyone {
        assert!(
            container_value(&text, "kubedf_container_rootfs_used_bytes", pod, "app").is_some(),
            "{pod}: rootfs\n{text}"
        );
    }
    assert!(!text.contains("kubedf_pod_storage_error{"), "{text}");

    // One pod whose own answer passes 16 MiB (containerd's send limit too):
    // three containers with a 6 MB preStop each. It alone loses its figures.
    run(
        "huge",
        &[("a", 6_000_000), ("b", 6_000_000), ("c", 6_000_000)],
    );
    let err = cri
        .list_running_containers(64 << 20)
        .expect_err("containerd refuses to send the node-wide answer");
    assert!(err.contains("ResourceExhausted"), "{err}");
    let huge_error = |t: &str| {
        value(
            t,
            "kubedf_pod_storage_error",
            &[("namespace", NS), ("pod", "huge"), ("part", "containers")],
        )
    };
    let text = served.scrape_until(Duration::from_secs(60), "the huge pod's error", |t| {
        huge_error(t).is_some() && everyone.iter().all(|p| total(t, p).is_some())
    });
    assert!(text.contains(
        r#"kubedf_pod_storage_error{namespace="shop",pod="huge",part="containers",name="",reason="cri_unavailable"} 1"#
    ), "{text}");
    assert_eq!(total(&text, "huge"), None, "no total for the huge pod");
    for c in ["a", "b", "c"] {
        assert_eq!(
            container_value(&text, "kubedf_container_rootfs_used_bytes", "huge", c),
            None
        );
    }
    for pod in everyone {
        assert!(
            container_value(&text, "kubedf_container_rootfs_used_bytes", pod, "app").is_some(),
            "{pod}: rootfs\n{text}"
        );
    }
    let errors: Vec<_> = samples(&text)
        .into_iter()
        .filter(|l| l.name == "kubedf_pod_storage_error")
        .collect();
    assert_eq!(errors.len(), 1, "only the huge pod fails: {errors:?}");
    // The log names the pod and why.
    let log = served.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("shop/huge") && l.contains("too large"))
        .unwrap_or_else(|| panic!("no log line names the huge pod:\n{log}"));
    assert!(line.contains("WARN") || line.contains("warn"), "{line}");
    assert!(
        log.contains("asking it pod by pod"),
        "the fallback is logged:\n{log}"
    );

    drop(served);
    for pod in pods {
        pod.remove().expect("stop and remove");
    }
}

#[test]
fn two_running_containers_of_one_name_are_one_series() {
    let test = "two_running_containers_of_one_name_are_one_series";
    if !prerequisites(test, need_root_and(CONTAINERD_TOOLS)) {
        return;
    }
    let node = TestNode::new();
    let containerd = Containerd::start(&node.dir().join("cd"), 256 << 20).expect("containerd");
    let cri = Cri::connect(&containerd).expect("CRI");
    let image = containerd
        .import_image(&Image::busybox("overlap").expect("busybox image"))
        .expect("import");
    let kube = FakeKube::start();
    let uid = fake_kube::fake_uid("overlap");
    kube.put_pod(pod_with(
        "overlap",
        &uid,
        json!([container("app", None)]),
        vec![],
    ));
    let mut pod = cri
        .run_pod(&PodSpec::new(NS, "overlap", &uid, &node.logs()))
        .expect("RunPodSandbox");
    // A restart overlap: attempt 0 still runs when attempt 1 starts. Each
    // writes a different amount into its writable layer, so the figure
    // tells which one kubedf reports.
    let writer = |mib: u32| {
        format!("dd if=/dev/urandom of=/written bs=1048576 count={mib} 2>/dev/null && {IDLE}")
    };
    let old = pod
        .start(&ContainerSpec::new("app", &image).shell(&writer(3)))
        .expect("start attempt 0");
    std::thread::sleep(Duration::from_millis(50));
    let new = pod
        .start(
            &ContainerSpec::new("app", &image)
                .shell(&writer(1))
                .attempt(1),
        )
        .expect("start attempt 1");
    let status = |id: &str| cri.container_status(id).expect("ContainerStatus");
    assert!(status(&new.id).created_at > status(&old.id).created_at);
    for id in [&old.id, &new.id] {
        assert_eq!(
            status(id).state,
            testkit::cri::proto::ContainerState::ContainerRunning as i32
        );
    }
    // Both layers written and settled (containerd refreshes every second).
    let layer = |id: &str| {
        let w = cri
            .container_stats(id)
            .expect("ListContainerStats")
            .writable_layer
            .expect("writable_layer");
        (
            w.used_bytes.map(|v| v.value).unwrap_or(0),
            w.inodes_used.map(|v| v.value).unwrap_or(0),
        )
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = (layer(&old.id), layer(&new.id));
    loop {
        std::thread::sleep(Duration::from_millis(2500));
        let now = (layer(&old.id), layer(&new.id));
        if now == last && now.0.0 >= 3 * MIB && now.1.0 >= MIB {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "writable layers never settled: {now:?}"
        );
        last = now;
    }
    let (new_bytes, new_inodes) = layer(&new.id);
    assert!(new_bytes < 3 * MIB, "the layers differ: {new_bytes}");

    let socket = format!("unix://{}", containerd.socket().display());
    let served = serve(&node, &kube, &socket);
    let text = served.scrape_until(Duration::from_secs(60), "the pod's total", |t| {
        samples(t).iter().any(|l| {
            l.name == "kubedf_pod_ephemeral_storage_used_bytes"
                && l.labels.get("pod").map(String::as_str) == Some("overlap")
        })
    });
    // One series per family for the container, whatever the families.
    let mut seen = std::collections::HashSet::new();
    for l in samples(&text) {
        if l.labels.get("pod").map(String::as_str) == Some("overlap") {
            assert!(
                seen.insert((l.name.clone(), l.labels.clone())),
                "a duplicate series: {l:?}\n{text}"
            );
        }
    }
    let figure = |name: &str| container_value(&text, name, "overlap", "app");
    assert_eq!(
        figure("kubedf_container_rootfs_used_bytes"),
        Some(new_bytes.to_string()),
        "the newer container's layer (the older one has {:?})",
        layer(&old.id)
    );
    assert_eq!(
        figure("kubedf_container_rootfs_inodes_used"),
        Some(new_inodes.to_string())
    );
    for family in [
        "kubedf_container_logs_used_bytes",
        "kubedf_container_logs_inodes_used",
    ] {
        assert!(figure(family).is_some(), "{family}\n{text}");
    }
    // The summary lists it once, with the same figure.
    let s = summary(&served);
    let p = summary_pod(&s, "overlap");
    let apps: Vec<&Value> = p["containers"]
        .as_array()
        .expect("containers[]")
        .iter()
        .filter(|c| c["name"] == "app")
        .collect();
    assert_eq!(apps.len(), 1, "{p:#}");
    assert_eq!(apps[0]["rootfs"]["usedBytes"], new_bytes);

    drop(served);
    pod.remove().expect("stop and remove");
}
