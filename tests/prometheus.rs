//! The dashboards and alert rules against a real Prometheus (Debian's
//! package) scraping a running kubedf every second, which itself reads a
//! real containerd, a fake Kubernetes API server and real mounts. Every
//! panel query must parse and return data; every rule must load.

mod support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::containerd::Containerd;
use support::fake_kube::{self, FakeKube};
use support::*;

const NODE: &str = "node-1";
const JOB: &str = "kubedf";

struct Prometheus {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Prometheus {
    fn start(dir: &Path, target: &str) -> Prometheus {
        let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/rules/kubedf-alerts.yaml");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: {JOB}\n    static_configs:\n      - targets: ['{target}']\n",
                rules.display()
            ),
        )
        .expect("write prometheus.yml");
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

    fn wait_for(&self, what: &str, limit: Duration, expr: &str) {
        let start = Instant::now();
        loop {
            if matches!(self.query(expr), Ok(r) if !r.is_empty()) {
                return;
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

#[test]
fn every_dashboard_query_returns_data_from_a_real_prometheus() {
    let test = "every_dashboard_query_returns_data_from_a_real_prometheus";
    if !prerequisites(test, need_root_and(&["prometheus", "containerd", "ctr"])) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let kubelet_root = d.join("kubelet");
    let _nodefs = Tmpfs::mount(&kubelet_root, 64 << 20);
    let containerd = Containerd::start(&d.join("cd"), 128 << 20).expect("containerd");
    containerd
        .import_tiny_image("kubedf-prom", 1 << 20)
        .expect("import");

    // Two measurable PVCs (CSI mount and hostPath walk) and one that is not.
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
    std::fs::write(host.join("f"), vec![2u8; 100_000]).expect("write");
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
            fake_kube::pv_host_path("pv-up", host.to_str().expect("utf-8"), "1Gi"),
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
    let served = Served::start(&[
        "--node-name",
        NODE,
        "--kubeconfig",
        kubeconfig.to_str().expect("utf-8"),
        "--kubelet.root-dir",
        kubelet_root.to_str().expect("utf-8"),
        "--cri.endpoint",
        &socket,
        "--sample-interval",
        "1s",
        "--volume-stats-agg-period",
        "1s",
    ]);
    served.scrape_until(Duration::from_secs(20), "volumes and imagefs", |t| {
        has_family(t, "kubelet_volume_stats_capacity_bytes")
            && has_family(t, "kubedf_imagefs_used_bytes")
            && has_family(t, "kubedf_pod_ephemeral_storage_used_bytes")
    });

    let prometheus = Prometheus::start(d, &served.addr.to_string());
    prometheus.wait_for(
        "a scrape of kubedf",
        Duration::from_secs(60),
        &format!("up{{job=\"{JOB}\"}} == 1"),
    );
    prometheus.wait_for(
        "volume samples",
        Duration::from_secs(30),
        &format!("kubelet_volume_stats_used_bytes{{job=\"{JOB}\"}}"),
    );
    // Range functions (rate, predict_linear, deriv) want a few samples.
    std::thread::sleep(Duration::from_secs(5));

    // Every rule loaded and evaluates without error.
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

    let dashboards = Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards");
    let mut checked = 0;
    let mut failures = Vec::new();
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
                    Ok(r) if r.iter().any(|s| s["metric"][&label].is_string()) => checked += 1,
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
                Ok(_) => {}
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
    drop(prometheus);
    drop(served);
    drop(mounts);
    drop(containerd);
}
