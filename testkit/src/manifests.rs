//! Manifests as the tests see them: `deploy/` rendered by `kubectl
//! kustomize`, the chart rendered and linted by the real Helm v4 engine (PyPI
//! helm-python-sdk, driven by tests/helm/helm.py), built-in kinds checked by
//! `kubernetes-validate --strict`, and a ServiceMonitor turned into the scrape
//! config the Prometheus Operator generates from it.
//!
//! A missing tool fails the test under CI=true and skips it elsewhere.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Map, Value, json};

/// The release name and namespace the chart is rendered with, which are
/// deploy/'s names.
const RELEASE: &str = "kubedf";
pub const NAMESPACE: &str = "kubedf";

/// The repository's root: the testkit lives in its `testkit/` dir.
pub fn root() -> PathBuf {
    let testkit = Path::new(env!("CARGO_MANIFEST_DIR"));
    testkit
        .parent()
        .expect("testkit/ has a parent")
        .to_path_buf()
}

pub fn chart_dir() -> PathBuf {
    root().join("charts/kubedf")
}

/// The one skip policy of the testkit (fails under CI=true).
fn skip_or_fail(test: &str, reason: &str) {
    crate::prerequisites(
        test,
        Some(format!("{reason} (scripts/test.sh installs it)")),
    );
}

/// Runs `cmd`. When its program is not installed, fails under CI=true and
/// otherwise prints the skip line and returns None.
pub fn run(test: &str, cmd: &mut Command) -> Option<Output> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    match cmd.output() {
        Ok(out) => Some(out),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            skip_or_fail(test, &format!("{program} is not installed"));
            None
        }
        Err(e) => panic!("{test}: cannot run {program}: {e}"),
    }
}

pub fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The non-empty documents of a multi-document YAML stream.
fn parse_docs(what: &str, text: &str) -> Vec<Value> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text)
        .unwrap_or_else(|e| panic!("{what} is not YAML: {e}\n{text}"));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

/// `kubectl kustomize deploy`, plus the named components of deploy/ (e.g.
/// "kubelet-compat"); None when skipped. A component sits inside the base it
/// patches, which kustomize will not load as an overlay of itself, so the
/// kustomization that joins them lives in a temporary dir that links deploy/.
pub fn kustomize(test: &str, components: &[&str]) -> Option<Vec<Value>> {
    kustomize_with(test, "deploy", components)
}

/// `kubectl kustomize` of `base`, a directory of the repository (e.g.
/// "deploy/cluster"), plus the named components of deploy/; None when
/// skipped.
pub fn kustomize_with(test: &str, base: &str, components: &[&str]) -> Option<Vec<Value>> {
    let dir = tempfile::tempdir().expect("tempdir");
    std::os::unix::fs::symlink(root().join("deploy"), dir.path().join("deploy")).expect("link");
    std::os::unix::fs::symlink(root().join(base), dir.path().join("base")).expect("link");
    let components: Vec<String> = components.iter().map(|c| format!("deploy/{c}")).collect();
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        json!({"resources": ["base"], "components": components}).to_string(),
    )
    .expect("kustomization.yaml");
    let out = run(
        test,
        Command::new("kubectl").arg("kustomize").arg(dir.path()),
    )?;
    assert_success(&format!("kubectl kustomize {base}"), &out);
    Some(parse_docs(
        "kustomize output",
        &String::from_utf8(out.stdout).expect("UTF-8"),
    ))
}

/// Whether tests/helm/helm.py can load the Helm engine (skips or fails the
/// test when not).
fn helm_ready(test: &str) -> bool {
    let Some(out) = run(
        test,
        Command::new("python3").args(["-c", "import helm_python"]),
    ) else {
        return false;
    };
    if out.status.success() {
        return true;
    }
    skip_or_fail(
        test,
        &format!(
            "python3 cannot import helm_python (pip install helm-python-sdk): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    );
    false
}

fn helm_py(args: &[&str], values: Option<&Path>) -> Output {
    let mut cmd = Command::new("python3");
    cmd.arg(root().join("tests/helm/helm.py")).args(args);
    if let Some(v) = values {
        cmd.arg(v);
    }
    cmd.output().expect("python3 tests/helm/helm.py")
}

/// `helm lint --strict` of the chart with a values file: the report.
pub fn helm_lint(test: &str, values: Option<&Path>) -> Option<Value> {
    if !helm_ready(test) {
        return None;
    }
    let chart = chart_dir();
    let out = helm_py(&["lint", chart.to_str().expect("UTF-8")], values);
    assert_success(&format!("helm lint with {values:?}"), &out);
    Some(serde_json::from_slice(&out.stdout).expect("lint report JSON"))
}

/// The chart rendered as `helm install kubedf --namespace kubedf [-f values]`
/// would: Ok(objects), or Err(Helm's error) when the chart refuses the
/// values. None when skipped.
pub fn helm_render(test: &str, values: Option<&Path>) -> Option<Result<Vec<Value>, String>> {
    if !helm_ready(test) {
        return None;
    }
    let chart = chart_dir();
    let out = helm_py(
        &["render", chart.to_str().expect("UTF-8"), RELEASE, NAMESPACE],
        values,
    );
    if !out.status.success() {
        return Some(Err(String::from_utf8_lossy(&out.stderr).into_owned()));
    }
    let files: Map<String, Value> = serde_json::from_slice(&out.stdout).expect("render JSON");
    let mut objs = Vec::new();
    for (path, text) in files {
        if path.ends_with("NOTES.txt") {
            continue;
        }
        objs.extend(parse_docs(&path, text.as_str().expect("manifest text")));
    }
    Some(Ok(objs))
}

/// `kubernetes-validate --strict` of the built-in kinds among `objs` (the
/// Prometheus Operator's CRDs are unknown to it); returns how many it checked.
pub fn kubernetes_validate(test: &str, what: &str, objs: &[Value]) -> Option<usize> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut files = Vec::new();
    for (i, obj) in objs.iter().enumerate() {
        if obj["apiVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("monitoring.coreos.com/"))
        {
            continue;
        }
        let file = dir
            .path()
            .join(format!("{i}-{}.yaml", kind(obj).to_lowercase()));
        // JSON is YAML.
        std::fs::write(&file, serde_json::to_string_pretty(obj).expect("JSON")).expect("write");
        files.push(file);
    }
    let out = run(
        test,
        Command::new("kubernetes-validate")
            .arg("--strict")
            .arg("--quiet")
            .args(&files),
    )?;
    assert_success(&format!("kubernetes-validate --strict of {what}"), &out);
    Some(files.len())
}

pub fn kind(obj: &Value) -> &str {
    obj["kind"].as_str().unwrap_or("")
}

pub fn name(obj: &Value) -> &str {
    obj["metadata"]["name"].as_str().unwrap_or("")
}

/// The one object of kind `k`.
pub fn the<'a>(objs: &'a [Value], k: &str) -> &'a Value {
    let found: Vec<&Value> = objs.iter().filter(|o| kind(o) == k).collect();
    assert_eq!(found.len(), 1, "expected exactly one {k}");
    found[0]
}

pub fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// What a ClusterRole grants, as "resource:verb", checking that every rule
/// is of the core API group, with neither resourceNames nor
/// nonResourceURLs.
pub fn granted(role: &Value) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for rule in role["rules"].as_array().expect("ClusterRole rules") {
        assert_eq!(
            strs(&rule["apiGroups"]),
            [""],
            "core API group only: {rule}"
        );
        assert!(
            rule.get("resourceNames").is_none() && rule.get("nonResourceURLs").is_none(),
            "{rule}"
        );
        for res in strs(&rule["resources"]) {
            for verb in strs(&rule["verbs"]) {
                out.insert(format!("{res}:{verb}"));
            }
        }
    }
    out
}

pub fn by_name<'a>(list: &'a Value, wanted: &str) -> &'a Value {
    list.as_array()
        .and_then(|a| a.iter().find(|x| x["name"] == wanted))
        .unwrap_or_else(|| panic!("no entry named {wanted} in {list}"))
}

/// The pod and Service a scraped kubedf stands for, as the operator's
/// service discovery sees them.
pub struct ScrapedPod<'a> {
    pub namespace: &'a str,
    pub service: &'a str,
    pub pod: &'a str,
    pub container: &'a str,
    pub node: &'a str,
}

/// One relabel rule of a ServiceMonitor in Prometheus' spelling.
fn relabel_rule(rule: &Value) -> Value {
    let mut out = Map::new();
    for (k, v) in rule.as_object().expect("relabel rule is a map") {
        let key = match k.as_str() {
            "sourceLabels" => "source_labels",
            "targetLabel" => "target_label",
            "separator" | "regex" | "replacement" | "modulus" => k.as_str(),
            // The operator lowercases the action (it accepts "Replace").
            "action" => {
                out.insert(
                    "action".into(),
                    v.as_str().expect("action").to_lowercase().into(),
                );
                continue;
            }
            other => panic!("relabel field {other} is not translated: {rule}"),
        };
        out.insert(key.into(), v.clone());
    }
    Value::Object(out)
}

/// The scrape config the Prometheus Operator generates for endpoint 0 of
/// `monitor`, with `target` standing for the pod behind it: the operator's
/// own target labels (namespace, service, pod, container, endpoint, job from
/// the Service's name) first, then the ServiceMonitor's relabelings, its
/// honorLabels and its metricRelabelings. Only the interval is the test's
/// (`interval`), so that the test need not wait 30s a scrape.
pub fn operator_scrape_config(
    monitor: &Value,
    target: &str,
    pod: &ScrapedPod,
    interval: &str,
) -> Value {
    let endpoints = monitor["spec"]["endpoints"]
        .as_array()
        .expect("ServiceMonitor endpoints");
    assert_eq!(endpoints.len(), 1, "one endpoint");
    let ep = &endpoints[0];
    let port = ep["port"].as_str().expect("named port");
    let meta = |label: &str, target_label: &str| json!({"source_labels": [label], "target_label": target_label});
    let mut relabel = vec![
        meta("__meta_kubernetes_namespace", "namespace"),
        meta("__meta_kubernetes_service_name", "service"),
        meta("__meta_kubernetes_pod_name", "pod"),
        meta("__meta_kubernetes_pod_container_name", "container"),
        // No jobLabel: the job is the Service's name.
        meta("__meta_kubernetes_service_name", "job"),
        json!({"target_label": "endpoint", "replacement": port}),
    ];
    relabel.extend(
        ep["relabelings"]
            .as_array()
            .into_iter()
            .flatten()
            .map(relabel_rule),
    );
    let metric_relabel: Vec<Value> = ep["metricRelabelings"]
        .as_array()
        .into_iter()
        .flatten()
        .map(relabel_rule)
        .collect();
    for key in ep.as_object().expect("endpoint").keys() {
        assert!(
            matches!(
                key.as_str(),
                "port"
                    | "path"
                    | "interval"
                    | "scrapeTimeout"
                    | "honorLabels"
                    | "relabelings"
                    | "metricRelabelings"
            ),
            "endpoint field {key} is not translated"
        );
    }
    json!({
        "job_name": format!("serviceMonitor/{}/{}/0", pod.namespace, name(monitor)),
        "honor_labels": ep["honorLabels"].as_bool().unwrap_or(false),
        "metrics_path": ep["path"].as_str().unwrap_or("/metrics"),
        "scrape_interval": interval,
        "scrape_timeout": interval,
        "static_configs": [{
            "targets": [target],
            "labels": {
                "__meta_kubernetes_namespace": pod.namespace,
                "__meta_kubernetes_service_name": pod.service,
                "__meta_kubernetes_pod_name": pod.pod,
                "__meta_kubernetes_pod_container_name": pod.container,
                "__meta_kubernetes_pod_node_name": pod.node,
                "__meta_kubernetes_endpoint_port_name": port,
            },
        }],
        "relabel_configs": relabel,
        "metric_relabel_configs": metric_relabel,
    })
}
