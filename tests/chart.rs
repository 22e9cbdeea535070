//! The Helm chart (`charts/kubedf`) through the real Helm v4 engine (PyPI
//! helm-python-sdk; no helm binary): lint, render with the defaults and with
//! each `ci/*-values.yaml`, validate every render with `kubernetes-validate
//! --strict`, and check it against `deploy/`, which must describe the same
//! objects: the default render field by field against `kubectl kustomize
//! deploy`, and kubeletCompat against deploy/ with its kubelet-compat
//! component. Each values file must change exactly what it is for. Cluster
//! mode (`ci/cluster*-values.yaml`) is checked for its workload kind, its
//! flags, its exact RBAC (never `nodes/proxy`, in either mode) and the
//! absence of any host access.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use testkit::manifests::{self, *};

/// Labels only Helm adds (chart version, release bookkeeping); every other
/// field of every object must be equal to deploy/'s.
const HELM_LABELS: &[&str] = &[
    "helm.sh/chart",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/version",
    "app.kubernetes.io/instance",
];

fn values_file(name: &str) -> PathBuf {
    chart_dir().join("ci").join(name)
}

/// Every values file under ci/, by file name.
fn ci_values() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(chart_dir().join("ci"))
        .expect("charts/kubedf/ci")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with("-values.yaml"))
        .collect();
    names.sort();
    names
}

fn render(test: &str, values: Option<&Path>) -> Option<Vec<Value>> {
    Some(
        manifests::helm_render(test, values)?
            .unwrap_or_else(|e| panic!("helm template with {values:?} failed: {e}")),
    )
}

/// Objects by "Kind/name".
fn keyed(objs: &[Value]) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for o in objs {
        let key = format!("{}/{}", kind(o), name(o));
        assert!(out.insert(key.clone(), o.clone()).is_none(), "{key} twice");
    }
    out
}

fn strip_helm_labels(map: &mut Value) {
    if let Some(m) = map.as_object_mut() {
        for l in HELM_LABELS {
            m.remove(*l);
        }
    }
}

/// An object without Helm's own labels, wherever labels or label selectors
/// are.
fn without_helm_labels(obj: &Value) -> Value {
    let mut o = obj.clone();
    strip_helm_labels(&mut o["metadata"]["labels"]);
    match kind(obj) {
        "DaemonSet" | "Deployment" | "StatefulSet" => {
            strip_helm_labels(&mut o["spec"]["selector"]["matchLabels"]);
            strip_helm_labels(&mut o["spec"]["template"]["metadata"]["labels"]);
        }
        "Service" => strip_helm_labels(&mut o["spec"]["selector"]),
        "ServiceMonitor" => strip_helm_labels(&mut o["spec"]["selector"]["matchLabels"]),
        _ => {}
    }
    o
}

/// Every leaf path at which `a` and `b` differ, e.g.
/// `spec.template.spec.containers[0].args[4]`.
fn differences(a: &Value, b: &Value, path: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                differences(
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    &p,
                    out,
                );
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            for i in 0..x.len().max(y.len()) {
                differences(
                    x.get(i).unwrap_or(&Value::Null),
                    y.get(i).unwrap_or(&Value::Null),
                    &format!("{path}[{i}]"),
                    out,
                );
            }
        }
        _ if a == b => {}
        _ => out.push(path.to_owned()),
    }
}

/// "Kind/name path" for every difference between two sets of objects; an
/// object only one side has is "Kind/name" alone.
fn object_differences(a: &[Value], b: &[Value]) -> BTreeSet<String> {
    let (a, b) = (keyed(a), keyed(b));
    let mut out = BTreeSet::new();
    for key in a.keys().chain(b.keys()).collect::<BTreeSet<_>>() {
        match (a.get(key), b.get(key)) {
            (Some(x), Some(y)) => {
                let mut d = Vec::new();
                differences(x, y, "", &mut d);
                out.extend(d.into_iter().map(|p| format!("{key} {p}")));
            }
            _ => {
                out.insert(key.clone());
            }
        }
    }
    out
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// deploy/ (with `components`) against the chart rendered with `values`:
/// every object of deploy/ but its Namespace (`helm install
/// --create-namespace` makes it) must be the chart's, field for field, Helm's
/// labels aside. The chart's only other objects are the dashboard ConfigMaps.
fn assert_same_objects_as_deploy(test: &str, components: &[&str], values: Option<&Path>) {
    assert_same_objects_as("deploy", test, components, values);
}

/// `base` (a kustomization of the repository) against the chart, as
/// [`assert_same_objects_as_deploy`].
fn assert_same_objects_as(base: &str, test: &str, components: &[&str], values: Option<&Path>) {
    let Some(deploy) = manifests::kustomize_with(test, base, components) else {
        return;
    };
    let Some(chart) = render(test, values) else {
        return;
    };
    let deploy: Vec<Value> = deploy
        .into_iter()
        .filter(|o| kind(o) != "Namespace")
        .collect();
    let chart: Vec<Value> = chart
        .iter()
        .filter(|o| kind(o) != "ConfigMap")
        .map(without_helm_labels)
        .collect();
    let diffs = object_differences(&deploy, &chart);
    let (deploy, chart) = (keyed(&deploy), keyed(&chart));
    let shown: Vec<String> = diffs
        .iter()
        .map(|d| {
            let key = d.split(' ').next().unwrap_or("");
            format!(
                "{d}\n  deploy/: {}\n  chart:   {}",
                deploy.get(key).map_or("(none)".into(), |o| o.to_string()),
                chart.get(key).map_or("(none)".into(), |o| o.to_string())
            )
        })
        .take(5)
        .collect();
    assert!(
        diffs.is_empty(),
        "{base}/ (components {components:?}) and the chart (values {values:?}) differ at:\n{}",
        shown.join("\n")
    );
}

#[test]
fn default_render_is_deploy_field_by_field() {
    assert_same_objects_as_deploy("default_render_is_deploy_field_by_field", &[], None);
}

#[test]
fn kubelet_compat_render_is_deploy_with_its_component() {
    assert_same_objects_as_deploy(
        "kubelet_compat_render_is_deploy_with_its_component",
        &["kubelet-compat"],
        Some(&values_file("kubelet-compat-values.yaml")),
    );
}

#[test]
fn cluster_mode_render_is_deploy_cluster_field_by_field() {
    let test = "cluster_mode_render_is_deploy_cluster_field_by_field";
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("values.yaml");
    // deploy/cluster/ leaves the alerts to ../rules (kustomize loads nothing
    // outside its directory) and the dashboards to the user.
    std::fs::write(
        &file,
        "mode: cluster\nprometheusRule: {enabled: false}\ndashboards: {enabled: false}\n",
    )
    .expect("write");
    assert_same_objects_as("deploy/cluster", test, &[], Some(&file));
}

#[test]
fn chart_lints_clean_with_every_values_file() {
    let test = "chart_lints_clean_with_every_values_file";
    let mut files: Vec<Option<PathBuf>> = vec![None];
    files.extend(ci_values().iter().map(|n| Some(values_file(n))));
    assert!(files.len() >= 8, "defaults and seven ci/ values files");
    for values in files {
        let Some(report) = manifests::helm_lint(test, values.as_deref()) else {
            return;
        };
        assert_eq!(report["total_charts_linted"], 1, "{values:?}: {report}");
        assert_eq!(report["errors"], json!([]), "{values:?}: {report}");
        // Severity 1 is info (e.g. "icon is recommended"); 2 warning, 3 error.
        for m in report["messages"].as_array().into_iter().flatten() {
            assert!(
                m["severity"].as_u64().unwrap_or(3) < 2,
                "helm lint --strict with {values:?}: {m}"
            );
        }
    }
}

#[test]
fn every_render_passes_kubernetes_validate() {
    let test = "every_render_passes_kubernetes_validate";
    let mut files: Vec<Option<PathBuf>> = vec![None];
    files.extend(ci_values().iter().map(|n| Some(values_file(n))));
    for values in files {
        let Some(objs) = render(test, values.as_deref()) else {
            return;
        };
        let Some(checked) =
            manifests::kubernetes_validate(test, &format!("the chart with {values:?}"), &objs)
        else {
            return;
        };
        assert!(checked >= 5, "{values:?}: only {checked} built-in objects");
    }
}

fn args_of(objs: &[Value]) -> Vec<String> {
    strs(&the(objs, "DaemonSet")["spec"]["template"]["spec"]["containers"][0]["args"])
        .into_iter()
        .map(str::to_owned)
        .collect()
}

/// What `values` changes in the default render, and the render.
fn changes(test: &str, file: &str) -> Option<(BTreeSet<String>, Vec<Value>)> {
    let base = render(test, None)?;
    let objs = render(test, Some(&values_file(file)))?;
    Some((object_differences(&base, &objs), objs))
}

const DS: &str = "DaemonSet/kubedf spec.template.spec";
const SM: &str = "ServiceMonitor/kubedf spec.endpoints[0]";

/// The pinned runtime's flag and mount, if any: (--cri.endpoint, the
/// cri-socket volume's hostPath, its mount).
fn pinned_runtime(objs: &[Value]) -> (Option<String>, Option<Value>, Option<Value>) {
    let flag = args_of(objs)
        .into_iter()
        .find(|a| a.starts_with("--cri.endpoint="));
    let pod = &the(objs, "DaemonSet")["spec"]["template"]["spec"];
    let named = |list: &Value| {
        list.as_array()
            .into_iter()
            .flatten()
            .find(|v| v["name"] == "cri-socket")
            .cloned()
    };
    (
        flag,
        named(&pod["volumes"]).map(|v| v["hostPath"].clone()),
        named(&pod["containers"][0]["volumeMounts"]),
    )
}

#[test]
fn the_default_pins_no_runtime_and_follows_the_kubelets() {
    let test = "the_default_pins_no_runtime_and_follows_the_kubelets";
    let Some(objs) = render(test, None) else {
        return;
    };
    // No --cri.endpoint, no socket mount: the kubelet's endpoint is reached
    // under /host (k3s's, k0s's, CRI-O's alike).
    assert_eq!(pinned_runtime(&objs), (None, None, None));
    // Without the host root, the kubelet cannot be seen: kubelet's default
    // socket is pinned and its directory mounted.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("values.yaml");
    std::fs::write(&file, "hostRootFsMount:\n  enabled: false\n").expect("write");
    let Some(objs) = render(test, Some(&file)) else {
        return;
    };
    assert_eq!(
        pinned_runtime(&objs),
        (
            Some("--cri.endpoint=unix:///run/containerd/containerd.sock".to_owned()),
            Some(json!({"path": "/run/containerd", "type": "Directory"})),
            Some(json!({"name": "cri-socket", "mountPath": "/run/containerd", "readOnly": true})),
        )
    );
}

#[test]
fn crio_values_pin_the_runtime_and_mount_its_socket_directory() {
    let test = "crio_values_pin_the_runtime_and_mount_its_socket_directory";
    let Some((diffs, objs)) = changes(test, "crio-values.yaml") else {
        return;
    };
    // The flag goes in before --kubelet.endpoint, which moves one on.
    assert_eq!(
        diffs,
        set(&[
            &format!("{DS}.containers[0].args[4]"),
            &format!("{DS}.containers[0].args[5]"),
            &format!("{DS}.containers[0].volumeMounts[2]"),
            &format!("{DS}.volumes[2]"),
        ])
    );
    // The directory, not the socket file: a runtime that restarts makes a
    // new socket, which a bind mount of the old file would not show.
    assert_eq!(
        pinned_runtime(&objs),
        (
            Some("--cri.endpoint=unix:///var/run/crio/crio.sock".to_owned()),
            Some(json!({"path": "/var/run/crio", "type": "Directory"})),
            Some(json!({"name": "cri-socket", "mountPath": "/var/run/crio", "readOnly": true})),
        )
    );
}

#[test]
fn cri_socket_is_a_path_or_a_unix_url() {
    let test = "cri_socket_is_a_path_or_a_unix_url";
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("values.yaml");
    for given in [
        "/run/k3s/containerd/containerd.sock",
        "unix:///run/k3s/containerd/containerd.sock",
    ] {
        std::fs::write(&file, format!("criSocket: {given}\n")).expect("write");
        let Some(objs) = render(test, Some(&file)) else {
            return;
        };
        assert_eq!(
            pinned_runtime(&objs),
            (
                Some("--cri.endpoint=unix:///run/k3s/containerd/containerd.sock".to_owned()),
                Some(json!({"path": "/run/k3s/containerd", "type": "Directory"})),
                Some(
                    json!({"name": "cri-socket", "mountPath": "/run/k3s/containerd", "readOnly": true})
                ),
            ),
            "{given}"
        );
    }
    // Neither a socket kubedf can dial nor a path the pod can mount.
    for given in [
        "tcp://10.0.0.1:1234",
        "run/crio.sock",
        "unix://run/crio.sock",
    ] {
        std::fs::write(&file, format!("criSocket: {given:?}\n")).expect("write");
        let Some(result) = manifests::helm_render(test, Some(&file)) else {
            return;
        };
        match result {
            Ok(_) => panic!("the chart rendered criSocket {given:?}"),
            Err(e) => assert!(
                e.contains("criSocket must be an absolute path or a unix:// URL")
                    && e.contains(given),
                "{given}: {e}"
            ),
        }
    }
}

#[test]
fn kubelet_root_dir_values_move_root_dir_and_config() {
    let test = "kubelet_root_dir_values_move_root_dir_and_config";
    let Some((diffs, objs)) = changes(test, "kubelet-root-dir-values.yaml") else {
        return;
    };
    // The default names neither (the running kubelet's are used); the
    // values add both flags after --kubelet.endpoint.
    assert_eq!(
        diffs,
        set(&[
            &format!("{DS}.containers[0].args[5]"),
            &format!("{DS}.containers[0].args[6]"),
        ])
    );
    let args = args_of(&objs);
    assert_eq!(
        args[5..7],
        [
            "--kubelet.root-dir=/var/lib/k0s/kubelet".to_owned(),
            "--kubelet.config=/var/lib/k0s/kubelet/config.yaml".to_owned()
        ]
    );
}

#[test]
fn monitor_off_values_drop_the_operator_objects_and_dashboards() {
    let test = "monitor_off_values_drop_the_operator_objects_and_dashboards";
    let Some((diffs, objs)) = changes(test, "monitor-off-values.yaml") else {
        return;
    };
    let base = render(test, None).unwrap_or_default();
    let dropped: BTreeSet<String> = base
        .iter()
        .filter(|o| matches!(kind(o), "ServiceMonitor" | "PrometheusRule" | "ConfigMap"))
        .map(|o| format!("{}/{}", kind(o), name(o)))
        .collect();
    assert_eq!(
        dropped.len(),
        4,
        "ServiceMonitor, PrometheusRule, 2 dashboards"
    );
    assert_eq!(diffs, dropped, "only those objects go");
    let kinds: BTreeSet<&str> = objs.iter().map(kind).collect();
    assert_eq!(
        kinds,
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "DaemonSet",
            "Service",
            "ServiceAccount"
        ]
        .into()
    );
}

#[test]
fn kubelet_compat_values_relabel_kubelet_volume_stats_only() {
    let test = "kubelet_compat_values_relabel_kubelet_volume_stats_only";
    let Some((diffs, objs)) = changes(test, "kubelet-compat-values.yaml") else {
        return;
    };
    // A subtree only one side has is one difference, at its root.
    assert_eq!(
        diffs,
        set(&[
            &format!("{DS}.containers[0].args[5]"),
            &format!("{SM}.metricRelabelings"),
        ])
    );
    assert_eq!(args_of(&objs)[5], "--volume-stats.kubelet-names=uncovered");
    let ep = &the(&objs, "ServiceMonitor")["spec"]["endpoints"][0];
    assert_eq!(ep["honorLabels"], true);
    let rules = ep["metricRelabelings"]
        .as_array()
        .expect("metricRelabelings");
    let mut set_to = BTreeMap::new();
    for r in rules {
        assert_eq!(
            strs(&r["sourceLabels"])[0],
            "__name__",
            "every rule is keyed on the metric name: {r}"
        );
        let regex = r["regex"].as_str().expect("regex");
        assert!(
            regex.starts_with("kubelet_volume_stats_.+"),
            "only kubelet_volume_stats_* samples: {r}"
        );
        set_to.insert(
            r["targetLabel"].as_str().expect("targetLabel").to_owned(),
            r["replacement"].as_str().expect("replacement").to_owned(),
        );
    }
    assert_eq!(set_to["job"], "kubelet");
    assert_eq!(set_to["metrics_path"], "/metrics");
    assert_eq!(set_to["kubedf_job"], "$1", "kubedf's job is kept");
}

#[test]
fn web_config_values_add_the_secret_flag_mount_and_https() {
    let test = "web_config_values_add_the_secret_flag_mount_and_https";
    let Some((diffs, objs)) = changes(test, "web-config-values.yaml") else {
        return;
    };
    assert_eq!(
        diffs,
        set(&[
            "Secret/kubedf-web-config",
            "DaemonSet/kubedf spec.template.metadata.annotations",
            &format!("{DS}.containers[0].args[5]"),
            &format!("{DS}.containers[0].livenessProbe.httpGet.scheme"),
            &format!("{DS}.containers[0].readinessProbe.httpGet.scheme"),
            &format!("{DS}.containers[0].volumeMounts[2]"),
            &format!("{DS}.volumes[2]"),
            &format!("{SM}.scheme"),
            &format!("{SM}.tlsConfig"),
            &format!("{SM}.basicAuth"),
        ])
    );
    let values: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(values_file("web-config-values.yaml")).expect("values"),
    )
    .expect("values YAML");
    let secret = objs
        .iter()
        .find(|o| kind(o) == "Secret")
        .expect("the web config Secret");
    let stored: Value = serde_saphyr::from_str(
        secret["stringData"]["web-config.yml"]
            .as_str()
            .expect("web-config.yml"),
    )
    .expect("stored web config is YAML");
    assert_eq!(stored, values["webConfig"], "the Secret holds webConfig");

    let pod = &the(&objs, "DaemonSet")["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let flag = "--web.config.file=/etc/kubedf/web-config.yml";
    assert!(args_of(&objs).contains(&flag.to_owned()));
    let mount = by_name(&c["volumeMounts"], "web-config");
    assert_eq!(mount["mountPath"], "/etc/kubedf");
    assert_eq!(mount["readOnly"], true);
    assert_eq!(
        by_name(&pod["volumes"], "web-config")["secret"]["secretName"],
        name(secret)
    );
    assert_eq!(c["livenessProbe"]["httpGet"]["scheme"], "HTTPS");
    assert_eq!(c["readinessProbe"]["httpGet"]["scheme"], "HTTPS");
    assert_eq!(
        the(&objs, "ServiceMonitor")["spec"]["endpoints"][0]["scheme"],
        "https"
    );
}

#[test]
fn the_chart_refuses_kubelet_names_that_would_duplicate_pvcs() {
    let test = "the_chart_refuses_kubelet_names_that_would_duplicate_pvcs";
    let dir = tempfile::tempdir().expect("tempdir");
    for (values, wanted) in [
        (
            "prometheus: {monitor: {kubeletCompat: true}}\nvolumeStats: {kubeletNames: all}\n",
            "seen twice",
        ),
        (
            "volumeStats: {kubeletNames: some}\n",
            "all, uncovered or none",
        ),
    ] {
        let file = dir.path().join("values.yaml");
        std::fs::write(&file, values).expect("write");
        let Some(result) = manifests::helm_render(test, Some(&file)) else {
            return;
        };
        match result {
            Ok(_) => panic!("the chart rendered {values:?}"),
            Err(e) => assert!(e.contains(wanted), "{values:?}: {e}"),
        }
    }
    // Without kubeletCompat, uncovered and none are plain choices.
    for mode in ["uncovered", "none"] {
        let file = dir.path().join("values.yaml");
        std::fs::write(&file, format!("volumeStats: {{kubeletNames: {mode}}}\n")).expect("write");
        let Some(objs) = render(test, Some(&file)) else {
            return;
        };
        assert!(
            args_of(&objs).contains(&format!("--volume-stats.kubelet-names={mode}")),
            "{mode}"
        );
    }
}

#[test]
fn dashboards_and_rules_are_the_repository_files() {
    let test = "dashboards_and_rules_are_the_repository_files";
    let Some(objs) = render(test, None) else {
        return;
    };
    let mut shipped = BTreeMap::new();
    for cm in objs.iter().filter(|o| kind(o) == "ConfigMap") {
        assert_eq!(
            cm["metadata"]["labels"]["grafana_dashboard"],
            "1",
            "{}: Grafana's sidecar label",
            name(cm)
        );
        for (file, text) in cm["data"].as_object().expect("data") {
            shipped.insert(file.clone(), text.as_str().expect("text").to_owned());
        }
    }
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(root().join("dashboards")).expect("dashboards/") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) == Some("json") {
            let file = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            let text = std::fs::read_to_string(&path).expect("read");
            files.insert(file, text.trim_end().to_owned());
        }
    }
    assert!(!files.is_empty());
    assert_eq!(
        shipped.keys().collect::<Vec<_>>(),
        files.keys().collect::<Vec<_>>(),
        "one ConfigMap entry per dashboards/*.json"
    );
    for (file, text) in &files {
        assert_eq!(&shipped[file], text, "{file} is shipped verbatim");
    }
    let rules: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(root().join("deploy/rules/kubedf-alerts.yaml")).expect("rules"),
    )
    .expect("rules YAML");
    assert_eq!(
        the(&objs, "PrometheusRule")["spec"]["groups"],
        rules["groups"],
        "the PrometheusRule holds deploy/rules/kubedf-alerts.yaml"
    );
}

#[test]
fn values_follow_the_node_exporter_chart_and_are_documented() {
    let values: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(chart_dir().join("values.yaml")).expect("values.yaml"),
    )
    .expect("values YAML");
    let readme = std::fs::read_to_string(chart_dir().join("README.md")).expect("chart README");
    let mut leaves = Vec::new();
    /// Values whose content is a Kubernetes or kubedf object of its own,
    /// documented as a whole.
    const WHOLE: &[&str] = &[
        "podSecurityContext",
        "securityContext",
        "resources",
        "env",
        "updateStrategy",
        "tolerations",
        "cluster.resources",
        "cluster.securityContext",
    ];
    fn walk(v: &Value, path: &str, out: &mut Vec<String>) {
        match v.as_object() {
            Some(m) if !m.is_empty() && !WHOLE.contains(&path) => {
                for (k, x) in m {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    walk(x, &p, out);
                }
            }
            _ => out.push(path.to_owned()),
        }
    }
    walk(&values, "", &mut leaves);
    for want in [
        "image.repository",
        "image.tag",
        "image.pullPolicy",
        "imagePullSecrets",
        "nameOverride",
        "fullnameOverride",
        "rbac.create",
        "serviceAccount.create",
        "serviceAccount.name",
        "serviceAccount.annotations",
        "podSecurityContext",
        "securityContext",
        "hostRootFsMount.enabled",
        "hostRootFsMount.mountPropagation",
        "resources",
        "tolerations",
        "nodeSelector",
        "affinity",
        "priorityClassName",
        "extraArgs",
        "env",
        "service.port",
        "service.annotations",
        "prometheus.monitor.enabled",
        "prometheus.monitor.interval",
        "prometheus.monitor.scrapeTimeout",
        "prometheus.monitor.relabelings",
        "prometheus.monitor.metricRelabelings",
        "prometheus.monitor.additionalLabels",
        "prometheus.monitor.kubeletCompat",
        "prometheusRule.enabled",
        "prometheusRule.additionalLabels",
        "kubeletEndpoint",
        "kubeletRootDir",
        "kubeletConfig",
        "criSocket",
        "webConfig",
        "dashboards.enabled",
        "mode",
        "cluster.pollInterval",
        "cluster.concurrency",
        "cluster.downAfter",
        "cluster.shards",
        "cluster.resources",
        "cluster.securityContext",
        "cluster.tolerations",
        "kubelet.timeout",
        "kubelet.addressTypes",
        "kubelet.caFile",
        "kubelet.insecureSkipTLSVerify",
        "metricAllowlist",
        "metricDenylist",
        "extraVolumes",
        "extraVolumeMounts",
    ] {
        assert!(leaves.iter().any(|l| l == want), "values.yaml lacks {want}");
    }
    for leaf in &leaves {
        assert!(
            readme.contains(&format!("`{leaf}`")),
            "charts/kubedf/README.md does not document `{leaf}`"
        );
    }
}

/// Renders the chart with `values` (YAML text): Ok(objects) or Err(Helm's
/// error). None when skipped.
fn render_text(test: &str, values: &str) -> Option<Result<Vec<Value>, String>> {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("values.yaml");
    std::fs::write(&file, values).expect("write");
    manifests::helm_render(test, Some(&file))
}

/// The render's error, which must name `wanted`; panics when it renders.
fn assert_refused(test: &str, values: &str, wanted: &[&str]) {
    let Some(result) = render_text(test, values) else {
        return;
    };
    match result {
        Ok(_) => panic!("the chart rendered {values:?}"),
        Err(e) => {
            for w in wanted {
                assert!(e.contains(w), "{values:?}: {e:?} lacks {w:?}");
            }
        }
    }
}

/// The one workload: DaemonSet, Deployment or StatefulSet.
fn workload(objs: &[Value]) -> &Value {
    let found: Vec<&Value> = objs
        .iter()
        .filter(|o| matches!(kind(o), "DaemonSet" | "Deployment" | "StatefulSet"))
        .collect();
    assert_eq!(found.len(), 1, "exactly one workload");
    found[0]
}

fn workload_args(objs: &[Value]) -> Vec<String> {
    strs(&workload(objs)["spec"]["template"]["spec"]["containers"][0]["args"])
        .into_iter()
        .map(str::to_owned)
        .collect()
}

/// What the render's ClusterRole grants, as "resource:verb".
fn granted(objs: &[Value]) -> BTreeSet<String> {
    manifests::granted(the(objs, "ClusterRole"))
}

const DAEMONSET_RBAC: &[&str] = &[
    "pods:get",
    "pods:list",
    "pods:watch",
    "persistentvolumeclaims:get",
    "persistentvolumes:get",
    "nodes/configz:get",
];
const CLUSTER_RBAC: &[&str] = &[
    "nodes:get",
    "nodes:list",
    "nodes:watch",
    "nodes/stats:get",
    "nodes/configz:get",
];

/// A cluster-mode pod: nothing of the host, not root, nothing writable, no
/// capabilities, RuntimeDefault seccomp.
fn assert_no_host_access(what: &str, objs: &[Value]) {
    let pod = &workload(objs)["spec"]["template"]["spec"];
    for host in ["hostNetwork", "hostPID", "hostIPC"] {
        assert_ne!(pod[host], true, "{what}: {host}");
    }
    for v in pod["volumes"].as_array().into_iter().flatten() {
        assert!(v.get("hostPath").is_none(), "{what}: hostPath volume {v}");
    }
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
        "{what}"
    );
    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1, "{what}");
    assert!(pod.get("initContainers").is_none(), "{what}");
    let sc = &containers[0]["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true, "{what}");
    assert_ne!(sc["runAsUser"], 0, "{what}: not root");
    assert_eq!(sc["readOnlyRootFilesystem"], true, "{what}");
    assert_eq!(sc["allowPrivilegeEscalation"], false, "{what}");
    assert_ne!(sc["privileged"], true, "{what}");
    assert_eq!(strs(&sc["capabilities"]["drop"]), ["ALL"], "{what}");
    assert!(
        sc["capabilities"].get("add").is_none(),
        "{what}: capabilities added: {sc}"
    );
}

/// The Service selects the workload's pods and is headless; the
/// ServiceMonitor selects the Service and scrapes /metrics on its port.
fn assert_scraped(what: &str, objs: &[Value]) {
    let pod_labels = &workload(objs)["spec"]["template"]["metadata"]["labels"];
    let svc = the(objs, "Service");
    assert_eq!(svc["spec"]["clusterIP"], "None", "{what}: headless");
    for (k, v) in svc["spec"]["selector"].as_object().expect("selector") {
        assert_eq!(&pod_labels[k], v, "{what}: the Service selects the pods");
    }
    let sm = the(objs, "ServiceMonitor");
    for (k, v) in sm["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels")
    {
        assert_eq!(
            &svc["metadata"]["labels"][k], v,
            "{what}: selects the Service"
        );
    }
    let ep = &sm["spec"]["endpoints"][0];
    assert_eq!(ep["port"], "metrics", "{what}");
    assert_eq!(ep["path"], "/metrics", "{what}");
    assert_eq!(
        ep["honorLabels"], true,
        "{what}: series keep their node label"
    );
}

#[test]
fn cluster_values_render_a_deployment_with_no_host_access() {
    let test = "cluster_values_render_a_deployment_with_no_host_access";
    let Some(objs) = render(test, Some(&values_file("cluster-values.yaml"))) else {
        return;
    };
    let kinds: BTreeSet<&str> = objs.iter().map(kind).collect();
    assert_eq!(
        kinds,
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "Deployment",
            "PrometheusRule",
            "Service",
            "ServiceAccount",
            "ServiceMonitor",
        ]
        .into(),
        "one shard: a Deployment, no DaemonSet, no StatefulSet"
    );
    let deployment = the(&objs, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(
        workload_args(&objs),
        [
            "serve",
            "--mode=cluster",
            "--web.listen-address=:9842",
            "--cluster.poll-interval=1m",
            "--cluster.concurrency=64",
            "--cluster.down-after=3",
            "--kubelet.timeout=10s",
            "--kubelet.address-types=InternalIP",
            "--kubelet.insecure-skip-tls-verify",
        ],
        "no --shard, no --total-shards, none of the DaemonSet's host flags"
    );
    let pod = &deployment["spec"]["template"]["spec"];
    let env = &pod["containers"][0]["env"];
    for absent in ["POD_NAME", "NODE_NAME", "HOST_IP"] {
        assert!(
            env.as_array()
                .into_iter()
                .flatten()
                .all(|e| e["name"] != absent),
            "{absent} in {env}"
        );
    }
    assert!(pod.get("volumes").is_none(), "no volumes at all: {pod}");
    assert!(
        pod.get("tolerations").is_none(),
        "not the DaemonSet's tolerate-everything"
    );
    assert_eq!(
        pod["serviceAccountName"],
        name(the(&objs, "ServiceAccount"))
    );
    assert!(pod["containers"][0]["resources"]["limits"]["memory"].is_string());
    assert_no_host_access("cluster-values.yaml", &objs);
    assert_eq!(
        granted(&objs),
        set(CLUSTER_RBAC),
        "cluster mode's RBAC, exactly"
    );
    assert_scraped("cluster-values.yaml", &objs);
    // The DaemonSet's relabelings would stamp every node's series with the
    // poller's node.
    let ep = &the(&objs, "ServiceMonitor")["spec"]["endpoints"][0];
    assert!(ep.get("relabelings").is_none(), "{ep}");
}

#[test]
fn cluster_shards_render_a_statefulset_that_takes_its_shard_from_pod_name() {
    let test = "cluster_shards_render_a_statefulset_that_takes_its_shard_from_pod_name";
    let Some(objs) = render(test, Some(&values_file("cluster-shards-values.yaml"))) else {
        return;
    };
    assert!(
        objs.iter()
            .all(|o| !matches!(kind(o), "DaemonSet" | "Deployment")),
        "shards: a StatefulSet only"
    );
    let sts = the(&objs, "StatefulSet");
    assert_eq!(sts["spec"]["replicas"], 3);
    assert_eq!(sts["spec"]["serviceName"], name(the(&objs, "Service")));
    assert_eq!(sts["spec"]["podManagementPolicy"], "Parallel");
    let c = &sts["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        by_name(&c["env"], "POD_NAME")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name",
        "the shard is the pod's StatefulSet ordinal"
    );
    assert_eq!(
        workload_args(&objs),
        [
            "serve",
            "--mode=cluster",
            "--web.listen-address=:9842",
            "--cluster.poll-interval=30s",
            "--cluster.concurrency=64",
            "--cluster.down-after=3",
            "--kubelet.timeout=10s",
            "--kubelet.address-types=InternalIP,Hostname",
            "--kubelet.ca-file=/etc/kubedf/kubelet-ca/ca.crt",
            "--total-shards=3",
            "--metric-denylist=^kubedf_pod_,kubedf_volume_stats_inodes",
        ],
        "--total-shards and no --shard"
    );
    let mount = by_name(&c["volumeMounts"], "kubelet-ca");
    assert_eq!(mount["mountPath"], "/etc/kubedf/kubelet-ca");
    let pod = &sts["spec"]["template"]["spec"];
    assert_eq!(
        by_name(&pod["volumes"], "kubelet-ca")["configMap"]["name"],
        "kubelet-ca"
    );
    assert_no_host_access("cluster-shards-values.yaml", &objs);
    assert_eq!(
        granted(&objs),
        set(CLUSTER_RBAC),
        "cluster mode's RBAC, exactly"
    );
    assert_scraped("cluster-shards-values.yaml", &objs);
}

#[test]
fn no_render_grants_nodes_proxy_and_each_mode_its_exact_rbac() {
    let test = "no_render_grants_nodes_proxy_and_each_mode_its_exact_rbac";
    let mut files: Vec<Option<PathBuf>> = vec![None];
    files.extend(ci_values().iter().map(|n| Some(values_file(n))));
    let mut modes = BTreeSet::new();
    for values in files {
        let Some(objs) = render(test, values.as_deref()) else {
            return;
        };
        let rbac = granted(&objs);
        for (grant, why) in [
            (
                "nodes/proxy",
                "every kubelet API, exec into every pod included",
            ),
            ("*", "everything"),
        ] {
            assert!(
                rbac.iter()
                    .all(|g| g.split(':').next() != Some(grant) && !g.ends_with(":*")),
                "{values:?} grants {grant} ({why}): {rbac:?}"
            );
        }
        let mode = kind(workload(&objs)).to_owned();
        let wanted = if mode == "DaemonSet" {
            DAEMONSET_RBAC
        } else {
            CLUSTER_RBAC
        };
        assert_eq!(rbac, set(wanted), "{values:?} ({mode})");
        modes.insert(mode);
    }
    assert_eq!(
        modes,
        set(&["DaemonSet", "Deployment", "StatefulSet"]),
        "every workload kind is rendered by some values file"
    );
}

#[test]
fn explicit_daemonset_mode_is_the_default_render() {
    let test = "explicit_daemonset_mode_is_the_default_render";
    let Some(base) = render(test, None) else {
        return;
    };
    let Some(explicit) = render_text(test, "mode: daemonset\n") else {
        return;
    };
    let explicit = explicit.expect("mode: daemonset renders");
    assert_eq!(object_differences(&base, &explicit), BTreeSet::new());
    // The cluster values do not leak into the DaemonSet.
    let Some(tuned) = render_text(
        test,
        "cluster: {shards: 4, pollInterval: 5m}\nkubelet: {timeout: 3s, addressTypes: [Hostname]}\n",
    ) else {
        return;
    };
    let tuned = tuned.expect("renders");
    assert_eq!(object_differences(&base, &tuned), BTreeSet::new());
}

#[test]
fn the_chart_refuses_an_unknown_mode_and_bad_shards() {
    let test = "the_chart_refuses_an_unknown_mode_and_bad_shards";
    for bad in ["sidecar", "Cluster", "deployment"] {
        assert_refused(
            test,
            &format!("mode: {bad}\n"),
            &["mode must be daemonset", &format!("{bad:?}")],
        );
    }
    for bad in ["0", "-1", "1.5", "\"3\""] {
        assert_refused(
            test,
            &format!("mode: cluster\ncluster: {{shards: {bad}}}\n"),
            &["cluster.shards must be a whole number of at least 1"],
        );
    }
    assert_refused(
        test,
        "mode: cluster\nprometheus: {monitor: {kubeletCompat: true}}\n",
        &["kubeletCompat", "mode: daemonset"],
    );
}

#[test]
fn metric_filters_are_passed_in_both_modes_and_never_both() {
    let test = "metric_filters_are_passed_in_both_modes_and_never_both";
    let filters = |objs: &[Value]| -> Vec<String> {
        workload_args(objs)
            .into_iter()
            .filter(|a| a.starts_with("--metric-"))
            .collect()
    };
    for mode in ["daemonset", "cluster"] {
        let Some(plain) = render_text(test, &format!("mode: {mode}\n")) else {
            return;
        };
        assert_eq!(
            filters(&plain.expect("renders")),
            Vec::<String>::new(),
            "{mode}: none by default"
        );
        for (value, flag) in [
            ("metricAllowlist", "--metric-allowlist"),
            ("metricDenylist", "--metric-denylist"),
        ] {
            let values = format!(
                "mode: {mode}\n{value}:\n  - kubedf_node_\n  - '^kubedf_pod_ephemeral_storage_used_bytes$'\n"
            );
            let Some(objs) = render_text(test, &values) else {
                return;
            };
            assert_eq!(
                filters(&objs.expect("renders")),
                [format!(
                    "{flag}=kubedf_node_,^kubedf_pod_ephemeral_storage_used_bytes$"
                )],
                "{mode}: {value}"
            );
        }
        assert_refused(
            test,
            &format!("mode: {mode}\nmetricAllowlist: [a]\nmetricDenylist: [b]\n"),
            &["metricAllowlist and metricDenylist are both set"],
        );
        // kubedf splits the flag on commas.
        assert_refused(
            test,
            &format!("mode: {mode}\nmetricDenylist: ['kubedf_[a-z]{{2,3}}']\n"),
            &["metricDenylist", "holds a comma"],
        );
    }
}

#[test]
fn kubelet_tls_and_web_config_values_reach_both_modes() {
    let test = "kubelet_tls_and_web_config_values_reach_both_modes";
    for mode in ["daemonset", "cluster"] {
        let values = format!(
            "mode: {mode}\nkubelet: {{caFile: /etc/kubelet-ca/ca.crt, insecureSkipTLSVerify: true}}\n\
             webConfig: {{tls_server_config: {{cert_file: /c, key_file: /k}}}}\n"
        );
        let Some(objs) = render_text(test, &values) else {
            return;
        };
        let objs = objs.expect("renders");
        let args = workload_args(&objs);
        for flag in [
            "--kubelet.ca-file=/etc/kubelet-ca/ca.crt",
            "--kubelet.insecure-skip-tls-verify",
            "--web.config.file=/etc/kubedf/web-config.yml",
        ] {
            assert_eq!(
                args.iter().filter(|a| *a == flag).count(),
                1,
                "{mode}: {flag} in {args:?}"
            );
        }
        let pod = &workload(&objs)["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        assert_eq!(
            by_name(&c["volumeMounts"], "web-config")["mountPath"],
            "/etc/kubedf"
        );
        assert_eq!(
            by_name(&pod["volumes"], "web-config")["secret"]["secretName"],
            "kubedf-web-config"
        );
        assert_eq!(c["livenessProbe"]["httpGet"]["scheme"], "HTTPS", "{mode}");
        assert_eq!(
            the(&objs, "ServiceMonitor")["spec"]["endpoints"][0]["scheme"],
            "https",
            "{mode}"
        );
    }
}

/// The cluster workloads' rendered flags, given to the real binary (with
/// only the listen address, the CA path and the API server replaced by the
/// test's): kubedf starts, takes its shard from `POD_NAME` as the
/// StatefulSet gives it, and serves. A chart whose flags kubedf refused
/// would install a crash-looping pod.
#[test]
fn cluster_renders_flags_are_accepted_by_kubedf() {
    let test = "cluster_renders_flags_are_accepted_by_kubedf";
    if !testkit::prerequisites(test, testkit::need_tools(&["openssl"])) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    testkit::tls::make_fleet_certs(dir.path(), &["127.0.0.1".parse().expect("ip")]);
    let ca = dir.path().join("fleet-ca.crt");
    let fake = testkit::fake_kube::FakeKube::start();
    let kubeconfig = dir.path().join("kubeconfig");
    fake.write_kubeconfig_with_token(&kubeconfig, "t")
        .expect("kubeconfig");
    for (values, shard) in [
        ("cluster-values.yaml", None),
        ("cluster-shards-values.yaml", Some("2")),
    ] {
        let Some(objs) = render(test, Some(&values_file(values))) else {
            return;
        };
        let mut args: Vec<String> = workload_args(&objs)
            .into_iter()
            .filter(|a| a != "serve" && !a.starts_with("--web.listen-address"))
            .map(|a| match a.strip_prefix("--kubelet.ca-file=") {
                Some(_) => format!("--kubelet.ca-file={}", ca.display()),
                None => a,
            })
            .collect();
        args.push(format!("--kubeconfig={}", kubeconfig.display()));
        let env: Vec<(&str, &str)> = match shard {
            Some(_) => vec![("POD_NAME", "kubedf-2")],
            None => vec![],
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let served = testkit::kubedf!().serve_with(&[], &env, &args);
        // Once the (empty) Node list is read, the collector has all it needs.
        let text = served.scrape_until(
            std::time::Duration::from_secs(20),
            "the Node list read",
            |t| t.contains("kubedf_scrape_collector_success{collector=\"cluster\"} 1"),
        );
        assert!(text.contains("kubedf_build_info{"), "{values}: {text}");
        let log = served.log_text();
        let started = log
            .lines()
            .find(|l| l.contains("cluster mode: reading"))
            .unwrap_or_else(|| panic!("{values}: no cluster mode start line: {log}"));
        let want = shard.unwrap_or("0");
        assert!(
            started.contains(&format!("\"shard\":{want}")),
            "{values}: {started}"
        );
    }
}

/// `cluster.viaApiServerProxy`: the one way the chart grants `nodes/proxy`,
/// asked for by name, with the flag that uses it and without the kubelet
/// TLS flags (refused beside it); the DaemonSet never gets it.
#[test]
fn nodes_proxy_is_granted_only_with_via_api_server_proxy_in_cluster_mode() {
    let test = "nodes_proxy_is_granted_only_with_via_api_server_proxy_in_cluster_mode";
    let Some(result) = render_text(test, "mode: cluster\ncluster:\n  viaApiServerProxy: true\n")
    else {
        return;
    };
    let objs = result.expect("renders");
    let mut wanted = set(CLUSTER_RBAC);
    wanted.insert("nodes/proxy:get".to_owned());
    assert_eq!(granted(&objs), wanted);
    let args = workload_args(&objs);
    assert!(
        args.iter().any(|a| a == "--cluster.via-api-server-proxy"),
        "{args:?}"
    );
    assert!(
        !args.iter().any(
            |a| a.starts_with("--kubelet.ca-file") || a == "--kubelet.insecure-skip-tls-verify"
        )
    );
    assert_no_host_access("viaApiServerProxy", &objs);

    for tls in [
        "  insecureSkipTLSVerify: true\n",
        "  caFile: /etc/kubedf/kubelet-ca/ca.crt\n",
    ] {
        assert_refused(
            test,
            &format!("mode: cluster\ncluster:\n  viaApiServerProxy: true\nkubelet:\n{tls}"),
            &["cluster.viaApiServerProxy", "kubelet.caFile"],
        );
    }
    // In DaemonSet mode the value grants nothing.
    let Some(result) = render_text(test, "cluster:\n  viaApiServerProxy: true\n") else {
        return;
    };
    let objs = result.expect("renders");
    assert_eq!(granted(&objs), set(DAEMONSET_RBAC));
}
