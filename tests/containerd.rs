//! kubedf against a real containerd (Debian's package) on a private socket,
//! with its root on a tmpfs of known size: imagefs figures, the HTTP server,
//! and a runtime that starts late and then dies.

use std::io::Read as _;
use std::path::Path;
use std::time::Duration;

use kubedf::sources::cri::CriClient;
use testkit::containerd::Containerd;
use testkit::*;

const TOOLS: &[&str] = &["containerd", "ctr", "promtool"];

/// The runtime's own answer to ImageFsInfo, asked directly over CRI.
fn runtime_answer(socket: &Path) -> (String, u64, u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let client = CriClient::new(socket.to_str().expect("utf-8 socket path")).expect("client");
    let info = rt
        .block_on(client.image_fs_info(Duration::from_secs(5)))
        .expect("ImageFsInfo");
    let fs = info
        .image_filesystems
        .first()
        .expect("an image filesystem")
        .clone();
    (fs.mountpoint, fs.used_bytes, fs.inodes_used)
}

#[test]
fn imagefs_equals_the_runtime_and_statfs() {
    let test = "imagefs_equals_the_runtime_and_statfs";
    if !prerequisites(test, need_root_and(TOOLS)) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let kubelet_root = Tmpfs::mount(&dir.path().join("kubelet"), 32 << 20);
    let containerd =
        Containerd::start(&dir.path().join("cd"), 256 << 20).expect("start containerd");
    containerd
        .import_tiny_image("kubedf-imagefs", 2 << 20)
        .expect("import image");
    let socket = format!("unix://{}", containerd.socket().display());
    let root = kubelet_root.path.to_str().expect("utf-8").to_owned();
    let served = kubedf!().serve(&[
        "--cri.endpoint",
        &socket,
        "--kubelet.root-dir",
        &root,
        "--kubelet.config",
        NO_KUBELET_CONFIG,
        "--sample-interval",
        "500ms",
    ]);
    let mountpoint = containerd
        .snapshotter_dir()
        .to_str()
        .expect("utf-8")
        .to_owned();
    let labels = [("mountpoint", mountpoint.as_str())];

    // containerd refreshes its usage figure in the background; wait until
    // kubedf shows the imported layer, then until kubedf, the runtime and an
    // independent statfs agree on one reading (the tmpfs is otherwise quiet).
    let mut last = String::new();
    let agreed = (0..100).any(|_| {
        let text = served.scrape();
        let (reported_mountpoint, used, inodes_used) = runtime_answer(containerd.socket());
        assert_eq!(
            reported_mountpoint, mountpoint,
            "the runtime reports its snapshotter dir"
        );
        let fs = statfs_figures(&containerd.snapshotter_dir());
        let want = [
            ("kubedf_imagefs_capacity_bytes", fs[0]),
            ("kubedf_imagefs_available_bytes", fs[1]),
            ("kubedf_imagefs_used_bytes", used),
            ("kubedf_imagefs_inodes", fs[3]),
            ("kubedf_imagefs_inodes_free", fs[4]),
            ("kubedf_imagefs_inodes_used", inodes_used),
        ];
        let ok = used > 0
            && want
                .iter()
                .all(|(name, v)| value(&text, name, &labels) == Some(v.to_string()));
        last = format!("{want:?}\n{text}");
        if !ok {
            std::thread::sleep(Duration::from_millis(200));
        }
        ok
    });
    assert!(
        agreed,
        "kubedf never agreed with the runtime and statfs:\n{last}"
    );
    let text = served.scrape();
    assert_eq!(
        value(&text, "kubedf_imagefs_capacity_bytes", &labels),
        Some((256u64 << 20).to_string())
    );
    let info = samples(&text)
        .into_iter()
        .find(|l| l.name == "kubedf_cri_info")
        .expect("kubedf_cri_info");
    assert_eq!(info.labels["runtime_name"], "containerd");
    assert_eq!(info.labels["runtime_api_version"], "v1");
    assert!(!info.labels["runtime_version"].is_empty());
    // containerd 1.6 keeps images and writable layers together.
    assert!(!has_family(&text, "kubedf_containerfs_capacity_bytes"));
    for collector in ["imagefs", "nodefs", "rlimit", "image_gc", "eviction"] {
        assert_eq!(
            value(
                &text,
                "kubedf_scrape_collector_success",
                &[("collector", collector)]
            )
            .as_deref(),
            Some("1"),
            "{collector}"
        );
    }
    let usage: i64 = value(&text, "kubedf_image_gc_usage_percent", &[])
        .expect("usage")
        .parse()
        .expect("integer");
    let cap = 256i64 << 20;
    let avail: i64 = value(&text, "kubedf_imagefs_available_bytes", &labels)
        .expect("avail")
        .parse()
        .expect("integer");
    assert_eq!(usage, 100 - avail * 100 / cap, "kubelet's integer formula");
    // Dedicated imagefs (its own tmpfs): containerfs follows imagefs' 15% default.
    assert_eq!(
        value(
            &text,
            "kubedf_eviction_threshold",
            &[("signal", "containerfs.available"), ("kind", "hard")]
        ),
        Some(((cap as f64 * f64::from(15f32 / 100.0)) as i64).to_string())
    );
    promtool_check(&text).unwrap();
    http_behaviour(&served);
    drop(served);
    drop(containerd);
}

/// The HTTP side of `serve`: content type, gzip, HEAD, 405, landing page, healthz.
fn http_behaviour(served: &Served) {
    let client = http();
    let plain = client.get(served.url("/metrics")).send().expect("scrape");
    assert_eq!(plain.status(), 200);
    // No format asked for: the Prometheus text format.
    assert_eq!(
        plain.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert!(plain.headers().get("content-encoding").is_none());
    let plain = plain.text().expect("body");

    let gz = client
        .get(served.url("/metrics"))
        .header("Accept-Encoding", "gzip")
        .header("Accept", "application/openmetrics-text;version=1.0.0")
        .send()
        .expect("gzip scrape");
    assert_eq!(gz.headers()["content-encoding"], "gzip");
    let compressed = gz.bytes().expect("body");
    let mut text = String::new();
    flate2::read::GzDecoder::new(&compressed[..])
        .read_to_string(&mut text)
        .expect("valid gzip");
    assert!(
        compressed.len() * 3 < text.len(),
        "gzip compresses: {} -> {}",
        text.len(),
        compressed.len()
    );
    assert!(text.contains("kubedf_imagefs_capacity_bytes") && text.ends_with("# EOF\n"));
    assert_eq!(samples(&text).len(), samples(&plain).len());

    let head = client.head(served.url("/metrics")).send().expect("HEAD");
    assert_eq!(head.status(), 200);
    let post = client.post(served.url("/metrics")).send().expect("POST");
    assert_eq!(post.status(), 405);
    let landing = client
        .get(served.url("/"))
        .send()
        .expect("landing")
        .text()
        .expect("body");
    assert!(landing.contains("href=\"/metrics\""), "{landing}");
    let health = client.get(served.url("/healthz")).send().expect("healthz");
    assert_eq!(health.status(), 200);
    assert_eq!(
        client
            .get(served.url("/nonesuch"))
            .send()
            .expect("404")
            .status(),
        404
    );
}

#[test]
fn a_late_runtime_appears_and_a_dead_one_disappears() {
    let test = "a_late_runtime_appears_and_a_dead_one_disappears";
    if !prerequisites(test, need_root_and(TOOLS)) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("cd");
    // The socket containerd will create, before it exists.
    let socket = format!("unix://{}", base.join("containerd.sock").display());
    let root = dir.path().join("kubelet");
    std::fs::create_dir_all(&root).expect("mkdir");
    let mut served = kubedf!().serve(&[
        "--cri.endpoint",
        &socket,
        "--kubelet.root-dir",
        root.to_str().expect("utf-8"),
        "--sample-interval",
        "300ms",
        "--sample-timeout",
        "2s",
    ]);
    let success =
        |text: &str, c: &str| value(text, "kubedf_scrape_collector_success", &[("collector", c)]);

    let text = served.scrape();
    assert!(!has_family(&text, "kubedf_imagefs_capacity_bytes"));
    assert_eq!(success(&text, "imagefs").as_deref(), Some("0"));
    assert_eq!(success(&text, "nodefs").as_deref(), Some("1"));
    assert_eq!(
        value(&text, "kubedf_source_up", &[("source", "cri")]).as_deref(),
        Some("0")
    );
    assert!(
        !has_family(&text, "kubedf_source_last_success_timestamp_seconds")
            || value(
                &text,
                "kubedf_source_last_success_timestamp_seconds",
                &[("source", "cri")]
            )
            .is_none()
    );

    let mut containerd = Containerd::start(&base, 128 << 20).expect("start containerd");
    let text = served.scrape_until(Duration::from_secs(15), "imagefs to appear", |t| {
        has_family(t, "kubedf_imagefs_capacity_bytes")
            && success(t, "imagefs").as_deref() == Some("1")
    });
    assert!(
        value(
            &text,
            "kubedf_source_last_success_timestamp_seconds",
            &[("source", "cri")]
        )
        .is_some()
    );

    containerd.kill();
    let text = served.scrape_until(Duration::from_secs(15), "imagefs to disappear", |t| {
        !has_family(t, "kubedf_imagefs_capacity_bytes")
            && success(t, "imagefs").as_deref() == Some("0")
    });
    assert!(!has_family(&text, "kubedf_cri_info"));
    assert_eq!(success(&text, "nodefs").as_deref(), Some("1"));
    assert!(has_family(&text, "kubedf_nodefs_capacity_bytes"));
    assert!(has_family(&text, "kubedf_rlimit_maxpid"));
    // The last success stays visible, so staleness can be alerted on.
    assert!(
        value(
            &text,
            "kubedf_source_last_success_timestamp_seconds",
            &[("source", "cri")]
        )
        .is_some()
    );
    promtool_check(&text).unwrap();

    // One warning per change of state, not one per sample.
    std::thread::sleep(Duration::from_secs(2));
    let log = served.log_text();
    let failures = log
        .lines()
        .filter(|l| l.contains("source failed") && l.contains("\"source\":\"cri\""))
        .count();
    assert!(
        (1..=3).contains(&failures),
        "cri failures logged {failures} times:\n{log}"
    );
    assert!(log.contains("source recovered"), "{log}");

    assert!(served.terminate(), "kubedf exits 0 on SIGTERM");
    drop(containerd);
}

#[test]
fn df_against_containerd() {
    let test = "df_against_containerd";
    if !prerequisites(test, need_root_and(TOOLS)) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let containerd =
        Containerd::start(&dir.path().join("cd"), 128 << 20).expect("start containerd");
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "evictionHard:\n  imagefs.available: 20%\n").expect("write config");
    let socket = format!("unix://{}", containerd.socket().display());
    let out = kubedf!().run(&[
        "df",
        "--cri.endpoint",
        &socket,
        "--kubelet.root-dir",
        dir.path().to_str().expect("utf-8"),
        "--kubelet.config",
        config.to_str().expect("utf-8"),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&containerd.snapshotter_dir().display().to_string()),
        "{text}"
    );
    assert!(text.contains("image GC: imagefs usage is"), "{text}");
    assert!(text.contains("128M"), "{text}");
    assert!(
        text.contains("does not name nodefs.available, nodefs.inodesFree, imagefs.inodesFree"),
        "{text}"
    );
    drop(containerd);
}
