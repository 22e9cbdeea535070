//! The landing page at `/`: what `kubedf df` shows, as a page a person reads
//! in a browser. Rendered by a real headless Chromium from a real
//! `kubedf serve` with a PVC from the fake API server, and guarded by the
//! same basic auth as /metrics.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testkit::fake_kube::{self, FakeKube};
use testkit::*;

const NODE: &str = "node-1";

/// Runs headless Chromium on `url` with `mode` (`--dump-dom` or
/// `--screenshot=<file>`), with a fresh profile and nothing that reaches out
/// to the network, bounded to a minute. Returns stdout.
fn chromium(url: &str, mode: &str, profile: &Path) -> String {
    let mut child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1400,1100",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(mode)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn chromium");
    let stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let out = reader.join().unwrap_or_default();
            let err = child
                .stderr
                .take()
                .map(|e| std::io::read_to_string(e).unwrap_or_default())
                .unwrap_or_default();
            assert!(status.success(), "chromium {mode} failed: {status}: {err}");
            return out;
        }
        if start.elapsed() > Duration::from_secs(60) {
            // Our own child, by its PID.
            stop_child(&mut child);
            panic!("chromium {mode} did not finish within 60s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The visible text of a DOM dump: tags dropped, entities decoded, runs of
/// whitespace made one space.
fn visible_text(html: &str) -> String {
    let mut text = String::new();
    let mut in_tag = false;
    let mut in_style = false;
    let mut rest = html;
    while let Some(c) = rest.chars().next() {
        if !in_tag && rest.starts_with("<style") {
            in_style = true;
        }
        if in_style && rest.starts_with("</style>") {
            in_style = false;
        }
        match c {
            '<' => {
                in_tag = true;
                text.push(' ');
            }
            '>' => in_tag = false,
            c if !in_tag && !in_style => text.push(c),
            _ => {}
        }
        rest = &rest[c.len_utf8()..];
    }
    let text = text
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&");
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The cells of the table row whose first cell is `first`, from a DOM dump.
fn row_cells(dom: &str, first: &str) -> Option<Vec<String>> {
    dom.split("<tr>").skip(1).find_map(|row| {
        let row = row.split("</tr>").next()?;
        let cells: Vec<String> = row
            .split("<td")
            .skip(1)
            .map(|c| visible_text(&format!("<td{c}")))
            .collect();
        (cells.first().map(String::as_str) == Some(first)).then_some(cells)
    })
}

/// df's use%: used of capacity, rounded up.
fn use_percent(used: u64, capacity: u64) -> String {
    format!("{}%", (used * 100).div_ceil(capacity))
}

#[test]
fn the_landing_page_shows_the_node_in_chromium() {
    let test = "the_landing_page_shows_the_node_in_chromium";
    if !prerequisites(test, need_tools(&["chromium"])) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let kube = FakeKube::start();
    // A hostPath PV (local-path-provisioner) with 3 MiB in it, of 10 MiB.
    let host_dir = dir.path().join("local-path/pv-web");
    std::fs::create_dir_all(&host_dir).expect("mkdir");
    std::fs::write(host_dir.join("data"), vec![5u8; 3 << 20]).expect("write");
    let pv = fake_kube::pv_host_path("pv-web", host_dir.to_str().expect("utf-8"), "10Mi");
    let pvc = fake_kube::pvc("web", "site-content", Some("pv-web"), "Bound");
    kube.put_pv(fake_kube::bind_pv(pv, &pvc));
    kube.put_pvc(pvc);
    let uid = fake_kube::fake_uid("site");
    kube.put_pod(fake_kube::pod(
        "web",
        "site",
        &uid,
        NODE,
        "Running",
        vec![fake_kube::pvc_volume("content", "site-content")],
    ));
    let kubeconfig = dir.path().join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let root = dir.path().join("kubelet");
    std::fs::create_dir_all(&root).expect("mkdir");
    let served = kubedf!()
        .on_node(NODE, &kubeconfig, &root, NO_RUNTIME)
        .kubelet_config(NO_KUBELET_CONFIG)
        .serve(&[
            "--sample-interval",
            "500ms",
            "--volume-stats-agg-period",
            "300ms",
        ]);
    let used_name = "kubelet_volume_stats_used_bytes";
    let labels = [
        ("namespace", "web"),
        ("persistentvolumeclaim", "site-content"),
    ];
    let text = served.scrape_until(Duration::from_secs(60), "the PVC's stats", |t| {
        value(t, used_name, &labels).is_some()
    });
    let figure = |name: &str| -> u64 {
        value(&text, name, &labels)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {text}"))
    };
    let used = figure(used_name);
    let capacity = figure("kubelet_volume_stats_capacity_bytes");
    assert_eq!(capacity, 10 << 20, "a hostPath PV's declared capacity");
    let want_use = use_percent(used, capacity);

    let url = served.url("/");
    let plain = http().get(&url).send().expect("GET /");
    assert_eq!(plain.status(), 200);
    assert!(
        plain
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/html")),
        "{:?}",
        plain.headers()
    );
    let page = plain.text().expect("body");
    assert!(!page.contains("<script"), "no JavaScript");

    let profile = tempfile::tempdir().expect("profile dir");
    let dom = chromium(&url, "--dump-dom", profile.path());
    let seen = visible_text(&dom);
    for want in [
        "Filesystems and PIDs",
        "nodefs",
        "pids",
        "Image garbage collection",
        "Eviction",
        "nodefs.available",
        "web/site-content",
    ] {
        assert!(seen.contains(want), "{want:?} not on the page: {seen}");
    }
    let row = row_cells(&dom, "web/site-content").expect("a row for the PVC");
    assert_eq!(row.get(4), Some(&want_use), "the PVC's use%: {row:?}");
    assert_eq!(row.get(8).map(String::as_str), Some("walk"), "{row:?}");
    // The bar is as wide as the use.
    let bar = format!(
        "width:{}%",
        ((used as f64 / capacity as f64) * 100.0).round()
    );
    assert!(dom.contains(&bar), "{bar} in {dom}");

    let shot: PathBuf = Path::new(env!("CARGO_TARGET_TMPDIR")).join("landing.png");
    let _ = std::fs::remove_file(&shot);
    let profile = tempfile::tempdir().expect("profile dir");
    chromium(
        &url,
        &format!("--screenshot={}", shot.display()),
        profile.path(),
    );
    let png = std::fs::read(&shot).expect("the screenshot was written");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    assert!(
        png.len() > 10_000,
        "a page with content: {} bytes",
        png.len()
    );
}

#[test]
fn the_landing_page_needs_the_same_auth_as_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hash = bcrypt::hash("s3cret", 4).expect("bcrypt");
    let config = dir.path().join("web.yml");
    std::fs::write(
        &config,
        format!("basic_auth_users:\n  prometheus: '{hash}'\n"),
    )
    .expect("write web config");
    let served = kubedf!().serve(&[
        "--web.config.file",
        config.to_str().expect("utf-8"),
        "--kubelet.root-dir",
        dir.path().to_str().expect("utf-8"),
        "--cri.endpoint",
        NO_RUNTIME,
    ]);
    for path in ["/", "/metrics"] {
        let r = http().get(served.url(path)).send().expect("GET");
        assert_eq!(r.status(), 401, "{path} without credentials");
        let r = http()
            .get(served.url(path))
            .basic_auth("prometheus", Some("wrong"))
            .send()
            .expect("GET");
        assert_eq!(r.status(), 401, "{path} with a wrong password");
        let r = http()
            .get(served.url(path))
            .basic_auth("prometheus", Some("s3cret"))
            .send()
            .expect("GET");
        assert_eq!(r.status(), 200, "{path} with the password");
    }
    let page = http()
        .get(served.url("/"))
        .basic_auth("prometheus", Some("s3cret"))
        .send()
        .expect("GET /")
        .text()
        .expect("body");
    assert!(page.contains("nodefs"), "{page}");
    // The probe endpoint stays open and tells nothing about the node.
    let r = http().get(served.url("/healthz")).send().expect("GET");
    assert_eq!(r.status(), 200);
}

#[test]
fn names_on_the_page_are_html_escaped() {
    let snapshot = kubedf::fixtures::first_pvc_renamed("<script>alert(1)</script>", "a&b\"c'd");
    let page = kubedf::df::report(&snapshot).html("kubedf", &[("/metrics", "/metrics")]);
    assert!(!page.contains("<script"), "{page}");
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;/a&amp;b&quot;c&#39;d"),
        "{page}"
    );
    // Everything `kubedf df` shows is on the page.
    let text = visible_text(&page);
    for line in kubedf::df::render(&snapshot).lines() {
        for word in line.split_whitespace() {
            if word.starts_with("shop/") || word.ends_with('%') {
                assert!(text.contains(word), "{word:?} from df is not on the page");
            }
        }
    }
}
