//! The dashboards and alert rules against a real Prometheus (Debian's
//! package) scraping a running kubedf every second, which itself reads a
//! real containerd, a fake Kubernetes API server and real mounts. Every
//! panel query must parse and return data; every rule must load.
//!
//! Prometheus scrapes kubedf as the Prometheus Operator would from
//! deploy/'s ServiceMonitor: with the operator's target labels (namespace,
//! pod, service, endpoint, container of kubedf's own pod), the
//! ServiceMonitor's relabelings, honorLabels and metricRelabelings. So the
//! PVC's own namespace must survive kubedf's, and with the kubelet-compat
//! component the unmodified kubernetes-mixin alerts must see hostPath PVCs
//! once and CSI PVCs not at all (kubelet reports those itself).
//!
//! In cluster mode (a fleet of fake kubelets, deploy/cluster/'s
//! ServiceMonitor), one target reports every node: the dashboards' node
//! variable must offer the nodes, not the poller, and a picked node's panels
//! must show that node.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::containerd::Containerd;
use testkit::fake_kube::{self, FakeKube};
use testkit::manifests::{self, ScrapedPod};
use testkit::*;

const NODE: &str = "node-1";
const JOB: &str = "kubedf";
/// kubedf's own pod, as the operator's service discovery names it.
const KUBEDF_POD: ScrapedPod = ScrapedPod {
    namespace: "kubedf",
    service: "kubedf",
    pod: "kubedf-7xk2p",
    container: "kubedf",
    node: NODE,
};

struct Prometheus {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Prometheus {
    /// Prometheus with one scrape config and `rules` as rule files.
    fn start(dir: &Path, scrape: Value, rules: &[PathBuf]) -> Prometheus {
        let config = dir.join("prometheus.yml");
        // JSON is YAML.
        let text = json!({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": rules,
            "scrape_configs": [scrape],
        });
        std::fs::write(&config, text.to_string()).expect("write prometheus.yml");
        // Prometheus cannot report a port it picked itself: take a free one.
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let log = dir.join("prometheus.log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start prometheus");
        Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// An instant query: Ok(result vector) or the error Prometheus gave.
    fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let r = http()
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", expr)])
            .send()
            .map_err(|e| e.to_string())?;
        let v: Value = r.json().map_err(|e| e.to_string())?;
        if v["status"] != "success" {
            return Err(format!("{}: {}", v["errorType"], v["error"]));
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// Waits until `expr` returns something, and returns it.
    fn wait_for(&self, what: &str, limit: Duration, expr: &str) -> Vec<Value> {
        let start = Instant::now();
        loop {
            if let Ok(r) = self.query(expr)
                && !r.is_empty()
            {
                return r;
            }
            assert!(
                start.elapsed() < limit,
                "waited {limit:?} for {what} ({expr})\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

/// The values of `label` across a query result.
fn label_set(result: &[Value], label: &str) -> BTreeSet<String> {
    result
        .iter()
        .filter_map(|s| s["metric"][label].as_str().map(str::to_owned))
        .collect()
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

/// Grafana's variables, as a person viewing "All" would have them.
fn substitute(expr: &str) -> String {
    expr.replace("${job}", JOB)
        .replace("$job", JOB)
        .replace("${node}", ".*")
        .replace("$node", ".*")
        .replace("${namespace}", ".*")
        .replace("$namespace", ".*")
        .replace("${volume}", ".*")
        .replace("$volume", ".*")
        .replace("$__rate_interval", "1m")
        .replace("$__range", "1h")
        .replace("$__interval", "15s")
}

/// Every (title, refId, expr) of the panels of a dashboard, rows included.
fn panel_queries(dashboard: &Value) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    fn walk(panels: &Value, out: &mut Vec<(String, String, String)>) {
        for panel in panels.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("?").to_owned();
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    let ref_id = target["refId"].as_str().unwrap_or("").to_owned();
                    out.push((title.clone(), ref_id, expr.to_owned()));
                }
            }
            walk(&panel["panels"], out);
        }
    }
    walk(&dashboard["panels"], &mut out);
    out
}

/// `label_values(selector, label)` -> (selector, label).
fn label_values(query: &str) -> Option<(String, String)> {
    let inner = query
        .trim()
        .strip_prefix("label_values(")?
        .strip_suffix(')')?;
    let (selector, label) = inner.rsplit_once(',')?;
    Some((selector.trim().to_owned(), label.trim().to_owned()))
}

/// A node with three PVCs of pod shop/web-0: "data" on a CSI volume (a
/// 32 MiB tmpfs, 4 MiB used), "uploads" on a hostPath PV (`uploads_bytes`
/// written, `uploads_capacity` declared) and "gone", whose volume is not
/// mounted; kubedf serving it with `args` added.
struct Node {
    served: Served,
    _kube: FakeKube,
    _mounts: Vec<Tmpfs>,
    _containerd: Containerd,
    _nodefs: Tmpfs,
}

fn node_with_pvcs(d: &Path, uploads_bytes: usize, uploads_capacity: &str, args: &[&str]) -> Node {
    let kubelet_root = d.join("kubelet");
    let nodefs = Tmpfs::mount(&kubelet_root, 64 << 20);
    let containerd = Containerd::start(&d.join("cd"), 128 << 20).expect("containerd");
    containerd
        .import_tiny_image("kubedf-prom", 1 << 20)
        .expect("import");

    let kube = FakeKube::start();
    let uid = fake_kube::fake_uid("web-0");
    let mut web = fake_kube::pod(
        "shop",
        "web-0",
        &uid,
        NODE,
        "Running",
        vec![
            fake_kube::pvc_volume("data", "data"),
            fake_kube::pvc_volume("uploads", "uploads"),
            fake_kube::pvc_volume("gone", "unmounted"),
            serde_json::json!({"name": "cache", "emptyDir": {"sizeLimit": "16Mi"}}),
        ],
    );
    // The pod half: a pod limit and an emptyDir with a sizeLimit.
    web["spec"]["containers"][0]["resources"] =
        serde_json::json!({"limits": {"ephemeral-storage": "64Mi"}});
    kube.put_pod(web);
    let cache = kubelet_root
        .join("pods")
        .join(&uid)
        .join("volumes/kubernetes.io~empty-dir/cache");
    std::fs::create_dir_all(&cache).expect("mkdir");
    std::fs::write(cache.join("f"), vec![3u8; 1 << 20]).expect("write");
    let mut mounts = Vec::new();
    let mount = kubelet_root
        .join("pods")
        .join(&uid)
        .join("volumes/kubernetes.io~csi/pv-data/mount");
    mounts.push(Tmpfs::mount(&mount, 32 << 20));
    std::fs::write(mount.join("f"), vec![1u8; 4 << 20]).expect("write");
    let host = d.join("local-path/pv-up");
    std::fs::create_dir_all(&host).expect("mkdir");
    std::fs::write(host.join("f"), vec![2u8; uploads_bytes]).expect("write");
    std::fs::create_dir_all(
        kubelet_root
            .join("pods")
            .join(&uid)
            .join("volumes/kubernetes.io~csi/pv-gone/mount"),
    )
    .expect("mkdir");
    for (claim, pv) in [
        (
            "data",
            fake_kube::pv_csi("pv-data", "ebs.csi.aws.com", "v1", "32Mi", "Filesystem"),
        ),
        (
            "uploads",
            fake_kube::pv_host_path("pv-up", host.to_str().expect("utf-8"), uploads_capacity),
        ),
        (
            "unmounted",
            fake_kube::pv_csi("pv-gone", "ebs.csi.aws.com", "v2", "1Gi", "Filesystem"),
        ),
    ] {
        let name = pv["metadata"]["name"].as_str().expect("name").to_owned();
        let pvc = fake_kube::pvc("shop", claim, Some(&name), "Bound");
        kube.put_pv(fake_kube::bind_pv(pv, &pvc));
        kube.put_pvc(pvc);
    }
    let kubeconfig = d.join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let socket = format!("unix://{}", containerd.socket().display());
    let cadence = ["--sample-interval", "1s", "--volume-stats-agg-period", "1s"];
    let served = kubedf!()
        .on_node(NODE, &kubeconfig, &kubelet_root, &socket)
        .serve(&[&cadence[..], args].concat());
    served.scrape_until(Duration::from_secs(20), "volumes and imagefs", |t| {
        (has_family(t, "kubelet_volume_stats_capacity_bytes")
            || has_family(t, "kubedf_volume_stats_capacity_bytes"))
            && has_family(t, "kubedf_imagefs_used_bytes")
            && has_family(t, "kubedf_pod_ephemeral_storage_used_bytes")
    });
    Node {
        served,
        _kube: kube,
        _mounts: mounts,
        _containerd: containerd,
        _nodefs: nodefs,
    }
}

/// What both tests need: root, the peers, and kubectl for deploy/.
fn ready(test: &str) -> bool {
    prerequisites(
        test,
        need_root_and(&["prometheus", "containerd", "ctr", "kubectl"]),
    )
}

/// Prometheus scraping `node` with the scrape config the operator generates
/// from deploy/'s ServiceMonitor (with `components`) for kubedf's pod, with
/// `rules` loaded; None when skipped.
fn scraped_by_operator(
    test: &str,
    d: &Path,
    node: &Node,
    components: &[&str],
    rules: &[PathBuf],
) -> Option<Prometheus> {
    let objs = manifests::kustomize(test, components)?;
    let monitor = manifests::the(&objs, "ServiceMonitor");
    let scrape = manifests::operator_scrape_config(
        monitor,
        &node.served.addr.to_string(),
        &KUBEDF_POD,
        "1s",
    );
    assert_eq!(scrape["honor_labels"], true, "deploy/servicemonitor.yaml");
    Some(Prometheus::start(d, scrape, rules))
}

fn deploy_rules() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/rules/kubedf-alerts.yaml")
}

/// Every rule loaded and evaluates without error.
fn assert_rules_healthy(prometheus: &Prometheus) {
    let rules: Value = http()
        .get(format!("{}/api/v1/rules", prometheus.url))
        .send()
        .expect("rules")
        .json()
        .expect("json");
    let groups = rules["data"]["groups"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        !groups.is_empty(),
        "no rule groups loaded:\n{}",
        prometheus.log()
    );
    for group in &groups {
        for rule in group["rules"].as_array().into_iter().flatten() {
            assert_eq!(
                rule["health"], "ok",
                "rule {} : {}",
                rule["name"], rule["lastError"]
            );
        }
    }
}

/// Every variable and panel query of dashboards/ returns data (but the
/// OPTIONAL ones), and the persistent-volumes dashboard shows every PVC of
/// `pvcs` in its own namespace, shop.
fn assert_dashboards_work(prometheus: &Prometheus, pvcs: &[&str]) {
    let dashboards = Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards");
    let mut checked = 0;
    let mut failures = Vec::new();
    let mut shown = BTreeSet::new();
    for entry in std::fs::read_dir(&dashboards).expect("dashboards/") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("read"))
            .expect("dashboard JSON");
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .to_string();
        for variable in dashboard["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let query = variable["query"]
                .as_str()
                .or_else(|| variable["query"]["query"].as_str())
                .unwrap_or("");
            if let Some((selector, label)) = label_values(query) {
                let selector = substitute(&selector);
                match prometheus.query(&selector) {
                    Ok(r) if r.iter().any(|s| s["metric"][&label].is_string()) => {
                        if label == "namespace" {
                            assert!(
                                label_set(&r, "namespace").contains("shop"),
                                "{name}: variable namespace offers the PVC's own namespace: {r:?}"
                            );
                        }
                        checked += 1;
                    }
                    other => failures.push(format!(
                        "{name}: variable {}: {selector} has no {label}: {other:?}",
                        variable["name"]
                    )),
                }
            }
        }
        for (title, ref_id, expr) in panel_queries(&dashboard) {
            let expr = substitute(&expr);
            checked += 1;
            match prometheus.query(&expr) {
                Err(e) => failures.push(format!("{name}: panel {title:?}: {expr}: {e}")),
                Ok(r) if r.is_empty() && !ref_id.starts_with("OPTIONAL") => {
                    failures.push(format!("{name}: panel {title:?}: {expr}: no data"))
                }
                Ok(r) => {
                    for s in &r {
                        if let Some(pvc) = s["metric"]["persistentvolumeclaim"].as_str() {
                            assert_eq!(
                                s["metric"]["namespace"], "shop",
                                "{name}: panel {title:?}: {pvc} is in shop, not kubedf's namespace: {s}"
                            );
                            shown.insert(format!("{title}/{pvc}"));
                        }
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} queries failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked >= 10, "only {checked} queries found in dashboards/");
    for title in ["Used space", "Free space", "Space used %", "Inodes used"] {
        for pvc in pvcs {
            assert!(
                shown.contains(&format!("{title}/{pvc}")),
                "panel {title:?} does not show PVC {pvc}: {shown:?}"
            );
        }
    }
}

#[test]
fn every_dashboard_query_returns_data_from_a_real_prometheus() {
    let test = "every_dashboard_query_returns_data_from_a_real_prometheus";
    if !ready(test) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let node = node_with_pvcs(d, 100_000, "1Gi", &[]);
    let Some(prometheus) = scraped_by_operator(test, d, &node, &[], &[deploy_rules()]) else {
        return;
    };
    // The operator's target labels are on the target...
    prometheus.wait_for(
        "a scrape of kubedf",
        Duration::from_secs(60),
        &format!(
            "up{{job=\"{JOB}\", namespace=\"kubedf\", service=\"kubedf\", pod=\"kubedf-7xk2p\", \
             container=\"kubedf\", endpoint=\"metrics\", instance=\"{NODE}\", node=\"{NODE}\"}} == 1"
        ),
    );
    // ...and the PVCs keep their own namespace.
    let volumes = prometheus.wait_for(
        "volume samples",
        Duration::from_secs(30),
        &format!("kubelet_volume_stats_used_bytes{{job=\"{JOB}\"}}"),
    );
    assert_eq!(label_set(&volumes, "namespace"), ["shop".to_owned()].into());
    // ...and so do the pod series, whose pod label the operator also sets.
    let pods = prometheus.wait_for(
        "pod samples",
        Duration::from_secs(30),
        &format!("kubedf_pod_ephemeral_storage_used_bytes{{job=\"{JOB}\"}}"),
    );
    assert_eq!(label_set(&pods, "namespace"), ["shop".to_owned()].into());
    assert_eq!(label_set(&pods, "pod"), ["web-0".to_owned()].into());
    assert_eq!(
        prometheus.query("{exported_namespace!=\"\"} or {exported_pod!=\"\"}"),
        Ok(vec![]),
        "honorLabels keeps the series' own labels"
    );
    // Range functions (rate, predict_linear, deriv) want a few samples.
    std::thread::sleep(Duration::from_secs(5));
    assert_rules_healthy(&prometheus);
    assert_dashboards_work(&prometheus, &["data", "uploads"]);
    drop(prometheus);
    drop(node);
}

#[test]
fn the_kubernetes_mixin_sees_hostpath_pvcs_once_and_csi_pvcs_not_at_all() {
    let test = "the_kubernetes_mixin_sees_hostpath_pvcs_once_and_csi_pvcs_not_at_all";
    if !ready(test) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    // uploads: 1 MiB declared, 1,040,000 bytes written (over 99% used).
    let node = node_with_pvcs(
        d,
        1_040_000,
        "1Mi",
        &["--volume-stats.kubelet-names", "uncovered"],
    );
    let mixin = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mixin/kubernetes-storage.yaml");
    let Some(prometheus) = scraped_by_operator(
        test,
        d,
        &node,
        &["kubelet-compat"],
        &[deploy_rules(), mixin],
    ) else {
        return;
    };
    prometheus.wait_for(
        "a scrape of kubedf",
        Duration::from_secs(60),
        &format!("up{{job=\"{JOB}\"}} == 1"),
    );
    // The hostPath PVC, and only it, under kubelet's names and selectors.
    let kubelet = prometheus.wait_for(
        "kubelet-named samples",
        Duration::from_secs(30),
        "kubelet_volume_stats_capacity_bytes{job=\"kubelet\", metrics_path=\"/metrics\"}",
    );
    assert_eq!(kubelet.len(), 1, "{kubelet:?}");
    let m = &kubelet[0]["metric"];
    assert_eq!(m["persistentvolumeclaim"], "uploads");
    assert_eq!(m["namespace"], "shop");
    assert_eq!(m["kubedf_job"], JOB, "kubedf's job is kept");
    assert_eq!(kubelet[0]["value"][1], "1048576");
    // The CSI PVC: no kubelet names from kubedf at all, its figures as
    // kubedf_volume_stats_* under kubedf's job.
    assert_eq!(
        prometheus.query("{__name__=~\"kubelet_volume_stats_.+\", persistentvolumeclaim=\"data\"}"),
        Ok(vec![])
    );
    let own = prometheus.wait_for(
        "kubedf-named samples",
        Duration::from_secs(30),
        &format!("kubedf_volume_stats_capacity_bytes{{job=\"{JOB}\", persistentvolumeclaim=\"data\", namespace=\"shop\"}}"),
    );
    assert_eq!(own[0]["value"][1], (32u64 << 20).to_string());
    // Only the volume stats samples moved: kubelet's up is not masked. (The
    // mixin's ALERTS series carry the alerting series' job="kubelet".)
    assert_eq!(
        prometheus.query(
            "{job=\"kubelet\", __name__!~\"kubelet_volume_stats_.+|ALERTS|ALERTS_FOR_STATE\"}"
        ),
        Ok(vec![])
    );
    // The unmodified mixin alert fires, once, for the hostPath PVC. for: 1m.
    let firing = prometheus.wait_for(
        "KubePersistentVolumeFillingUp to fire",
        Duration::from_secs(180),
        "ALERTS{alertname=\"KubePersistentVolumeFillingUp\", alertstate=\"firing\"}",
    );
    assert_eq!(firing.len(), 1, "fires once: {firing:?}");
    let a = &firing[0]["metric"];
    assert_eq!(a["persistentvolumeclaim"], "uploads");
    assert_eq!(a["namespace"], "shop");
    assert_eq!(a["severity"], "critical");
    assert_eq!(
        prometheus.query("ALERTS{persistentvolumeclaim=\"data\"}"),
        Ok(vec![]),
        "nothing about the CSI PVC, which kubelet reports itself"
    );
    assert_rules_healthy(&prometheus);
    // kubedf's own dashboards still show both PVCs.
    assert_dashboards_work(&prometheus, &["data", "uploads"]);
    drop(prometheus);
    drop(node);
}

/// A plain scrape config of one target, as a Prometheus without the
/// operator has it.
fn static_scrape(target: &str) -> Value {
    json!({"job_name": JOB, "static_configs": [{"targets": [target]}]})
}

/// Answers the first HTTP request on `listener` (within `limit`) with an
/// empty exposition and returns its `Accept` header.
fn first_accept_header(listener: &TcpListener, limit: Duration) -> String {
    use std::io::{Read as _, Write as _};
    listener.set_nonblocking(true).expect("nonblocking");
    let start = Instant::now();
    let mut stream = loop {
        match listener.accept() {
            Ok((stream, _)) => break stream,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(start.elapsed() < limit, "no scrape within {limit:?}");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("accept: {e}"),
        }
    };
    stream.set_nonblocking(false).expect("blocking");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).expect("read the request");
        assert!(n > 0, "the scraper hung up mid-request");
        head.extend_from_slice(&buf[..n]);
    }
    let _ = stream.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    let head = String::from_utf8_lossy(&head).into_owned();
    head.lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("accept")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no Accept header in {head}"))
}

/// Content negotiation with real peers: the exact Accept header a real
/// Prometheus sends gets OpenMetrics, a real Prometheus scraping kubedf
/// stores the units only OpenMetrics carries, and plain curl gets the
/// Prometheus text format, which promtool accepts.
#[test]
fn scrapers_get_the_format_they_ask_for() {
    let test = "scrapers_get_the_format_they_ask_for";
    if !prerequisites(test, need_tools(&["prometheus", "promtool", "curl"])) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // What Prometheus asks for, recorded by a listener in kubedf's place.
    let recorder = TcpListener::bind("127.0.0.1:0").expect("bind");
    let recorder_addr = recorder.local_addr().expect("addr").to_string();
    let accept = {
        let probe = dir.path().join("probe");
        std::fs::create_dir(&probe).expect("mkdir");
        let prometheus = Prometheus::start(&probe, static_scrape(&recorder_addr), &[]);
        let accept = first_accept_header(&recorder, Duration::from_secs(60));
        drop(prometheus);
        accept
    };
    assert!(
        accept.contains("application/openmetrics-text"),
        "Prometheus asks for OpenMetrics: {accept}"
    );

    let root = dir.path().join("kubelet");
    std::fs::create_dir(&root).expect("mkdir");
    let served = kubedf!().serve(&[
        "--kubelet.root-dir",
        root.to_str().expect("utf-8"),
        "--cri.endpoint",
        NO_RUNTIME,
    ]);
    let url = served.url("/metrics");
    let r = http()
        .get(&url)
        .header("Accept", &accept)
        .send()
        .expect("scrape as Prometheus");
    assert_eq!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        "for Accept: {accept}"
    );
    let openmetrics = r.text().expect("body");
    assert!(openmetrics.ends_with("# EOF\n"));
    assert!(openmetrics.contains("# UNIT kubedf_nodefs_capacity_bytes bytes\n"));

    // Plain curl sends `Accept: */*`: the text format.
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-D", "-", &url])
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reply = String::from_utf8_lossy(&out.stdout);
    let (head, body) = reply.split_once("\r\n\r\n").expect("headers and body");
    assert!(
        head.lines()
            .any(|l| l
                .eq_ignore_ascii_case("content-type: text/plain; version=0.0.4; charset=utf-8")),
        "{head}"
    );
    assert!(
        !body.contains("# EOF") && !body.contains("# UNIT"),
        "{body}"
    );
    assert!(has_family(body, "kubedf_nodefs_capacity_bytes"), "{body}");
    promtool_check(body).unwrap();

    // A real Prometheus scraping kubedf: the units it stores come only with
    // OpenMetrics.
    let scraping = dir.path().join("scraping");
    std::fs::create_dir(&scraping).expect("mkdir");
    let prometheus = Prometheus::start(&scraping, static_scrape(&served.addr.to_string()), &[]);
    prometheus.wait_for(
        "kubedf's series",
        Duration::from_secs(90),
        &format!("kubedf_nodefs_capacity_bytes{{job=\"{JOB}\"}}"),
    );
    let start = Instant::now();
    let unit = loop {
        let v: Value = http()
            .get(format!("{}/api/v1/targets/metadata", prometheus.url))
            .query(&[("metric", "kubedf_nodefs_capacity_bytes")])
            .send()
            .and_then(|r| r.json())
            .expect("target metadata");
        if let Some(unit) = v["data"][0]["unit"].as_str() {
            break unit.to_owned();
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no metadata: {v}\n{}",
            prometheus.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(unit, "bytes", "Prometheus parsed OpenMetrics");
    let up = prometheus
        .query(&format!("up{{job=\"{JOB}\"}}"))
        .expect("query up");
    assert_eq!(up[0]["value"][1], "1", "{up:?}");
}

/// The kubedf and kubelet families a PromQL expression names.
fn families_named(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
        if is_word(bytes[i]) && (i == 0 || !is_word(bytes[i - 1])) {
            let start = i;
            while i < bytes.len() && is_word(bytes[i]) {
                i += 1;
            }
            let word = &expr[start..i];
            if word.starts_with("kubedf_") || word.starts_with("kubelet_") {
                out.insert(word.to_owned());
            }
        } else {
            i += 1;
        }
    }
    out
}

/// Cluster mode (`kubedf serve --mode=cluster`, deploy/cluster/'s
/// ServiceMonitor): one target for every node, each series with its own
/// `node`. The dashboards' node variable lists the fleet's nodes (not the
/// poller), every panel whose families cluster mode emits returns data (a
/// selector on the wrong label would return none), and every rule
/// evaluates without error (a `by (instance)` join over many nodes of one
/// target would fail with a many-to-one match).
#[test]
fn the_dashboards_and_rules_work_in_cluster_mode() {
    let test = "the_dashboards_and_rules_work_in_cluster_mode";
    if !prerequisites(test, need_tools(&["prometheus", "kubectl", "openssl"])) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let n = 3;
    let fleet = testkit::kubelet_fleet::KubeletFleet::start_in(d, n, 4);
    let kube = FakeKube::start();
    fleet.put_nodes(&kube);
    let kubeconfig = d.join("kubeconfig");
    kube.write_kubeconfig_with_token(&kubeconfig, testkit::kubelet_fleet::FLEET_TOKEN)
        .expect("kubeconfig");
    let kubeconfig = format!("--kubeconfig={}", kubeconfig.display());
    let ca = format!("--kubelet.ca-file={}", d.join("fleet-ca.crt").display());
    let served = kubedf!().serve_with(
        &[],
        &[],
        &[
            "--mode=cluster",
            kubeconfig.as_str(),
            ca.as_str(),
            "--cluster.poll-interval=1s",
            "--kubelet.timeout=500ms",
        ],
    );
    let Some(objs) = manifests::kustomize_with(test, "deploy/cluster", &[]) else {
        return;
    };
    let poller = ScrapedPod {
        namespace: "kubedf",
        service: "kubedf",
        pod: "kubedf-5c8d7-q2x9z",
        container: "kubedf",
        node: "poller-node",
    };
    let scrape = manifests::operator_scrape_config(
        manifests::the(&objs, "ServiceMonitor"),
        &served.addr.to_string(),
        &poller,
        "1s",
    );
    let prometheus = Prometheus::start(d, scrape, &[deploy_rules()]);
    let nodes: BTreeSet<String> = (0..n).map(testkit::kubelet_fleet::node_name).collect();
    let start = Instant::now();
    loop {
        let seen = prometheus
            .query(&format!("kubedf_eviction_threshold{{job=\"{JOB}\"}}"))
            .map(|r| label_set(&r, "node"))
            .unwrap_or_default();
        if seen == nodes {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "every node's series, headroom included, scraped: {seen:?}\n{}",
            prometheus.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // Range functions (rate, predict_linear, deriv) want a few samples.
    std::thread::sleep(Duration::from_secs(5));
    assert_rules_healthy(&prometheus);

    let present: BTreeSet<String> = prometheus
        .query(&format!("count by (__name__) ({{job=\"{JOB}\"}})"))
        .expect("names")
        .iter()
        .filter_map(|s| s["metric"]["__name__"].as_str().map(str::to_owned))
        .collect();
    let dashboards = Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards");
    let picked = testkit::kubelet_fleet::node_name(1);
    let mut failures = Vec::new();
    let mut required = 0;
    for entry in std::fs::read_dir(&dashboards).expect("dashboards/") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .to_string();
        let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("read"))
            .expect("dashboard JSON");
        // Grafana's node variable must offer the fleet's nodes, whatever
        // label it reads (the poller's `instance` would be one value).
        for variable in dashboard["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|v| v["name"] == "node")
        {
            let query = variable["query"]
                .as_str()
                .or_else(|| variable["query"]["query"].as_str())
                .unwrap_or("");
            let Some((selector, label)) = label_values(query) else {
                failures.push(format!(
                    "{name}: variable node: {query:?} is not label_values"
                ));
                continue;
            };
            let offered = prometheus
                .query(&substitute(&selector))
                .map(|r| label_set(&r, &label))
                .unwrap_or_default();
            if offered != nodes {
                failures.push(format!(
                    "{name}: variable node offers {label} values {offered:?}, not the fleet's nodes {nodes:?}"
                ));
            }
        }
        // One node picked, as a person would: the panels show that node.
        for (title, ref_id, expr) in panel_queries(&dashboard) {
            let expr = substitute(&expr.replace("${node}", &picked).replace("$node", &picked));
            let named = families_named(&expr);
            let must =
                !ref_id.starts_with("OPTIONAL") && !named.is_empty() && named.is_subset(&present);
            required += usize::from(must);
            match prometheus.query(&expr) {
                Err(e) => failures.push(format!("{name}: panel {title:?}: {expr}: {e}")),
                Ok(r) if r.is_empty() && must => failures.push(format!(
                    "{name}: panel {title:?}: every family it names is scraped, yet no data for node {picked}: {expr}"
                )),
                Ok(r) => {
                    let shown = label_set(&r, "node");
                    if shown.iter().any(|n| *n != picked) {
                        failures.push(format!(
                            "{name}: panel {title:?} shows nodes {shown:?} with {picked} picked: {expr}"
                        ));
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "in cluster mode:\n{}",
        failures.join("\n")
    );
    assert!(
        required >= 5,
        "only {required} panels query families cluster mode emits"
    );
    drop(prometheus);
    drop(served);
}
