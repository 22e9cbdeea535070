//! Keeps what ships beside the binary sound: the kustomize manifests in
//! `deploy/` and `deploy/cluster/` (cluster mode), the alert rules (`deploy/rules/`, twice: as a rule file and in
//! the PrometheusRule) and the Grafana dashboards in `dashboards/`.
//!
//! The manifests are rendered with `kubectl kustomize` and the built-in kinds
//! validated with `kubernetes-validate --strict`; the rules go through
//! `promtool check rules` and `promtool test rules`. A missing tool fails the
//! test under `CI=true` and skips it elsewhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use kubedf::collector::Collector as _;
use kubedf::collector::cluster::ClusterCollector;
use kubedf::registry::{Registry, SELF_DESCS};
use serde_json::{Value, json};
use testkit::manifests::{
    NAMESPACE, assert_success, by_name, granted, kind, kustomize, kustomize_with, name, root, run,
    strs, the,
};

/// The job the alerts select (the ServiceMonitor's Service name).
const JOB: &str = "kubedf";
const PORT: u64 = 9842;
const DATASOURCE: &str = "${datasource}";
/// Grafana variables a dashboard query may use.
const QUERY_VARIABLES: &[&str] = &[
    "job",
    "node",
    "namespace",
    "volume",
    "__rate_interval",
    "__range",
];

fn read(rel: &str) -> String {
    let path = root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The metric reference: docs/metrics.md, and docs/cluster-mode.md for the
/// families only cluster mode has (`kubedf_kubelet_poll_*`).
fn metric_docs() -> String {
    read("docs/metrics.md") + &read("docs/cluster-mode.md")
}

fn yaml(rel: &str) -> Value {
    serde_saphyr::from_str::<Value>(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// `kubectl kustomize deploy`, parsed; None when skipped.
fn render(test: &str) -> Option<Vec<Value>> {
    kustomize(test, &[])
}

#[test]
fn kustomize_renders_the_expected_objects() {
    let test = "kustomize_renders_the_expected_objects";
    let Some(objs) = render(test) else { return };

    let kinds: BTreeSet<&str> = objs.iter().map(kind).collect();
    let expected: BTreeSet<&str> = [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "DaemonSet",
        "Service",
        "ServiceMonitor",
        "PrometheusRule",
    ]
    .into();
    assert_eq!(kinds, expected, "rendered kinds");
    assert_eq!(objs.len(), expected.len(), "one object of each kind");

    assert_eq!(name(the(&objs, "Namespace")), NAMESPACE);
    for obj in &objs {
        let cluster_scoped = matches!(
            kind(obj),
            "Namespace" | "ClusterRole" | "ClusterRoleBinding"
        );
        let ns = obj["metadata"]["namespace"].as_str();
        if cluster_scoped {
            assert_eq!(ns, None, "{} is cluster-scoped", kind(obj));
        } else {
            assert_eq!(ns, Some(NAMESPACE), "namespace of {}", kind(obj));
        }
    }

    // RBAC: exactly pods get/list/watch, PVC get, PV get and nodes/configz
    // get (kubelet's /configz; never nodes/proxy), bound to the DaemonSet's
    // service account.
    let role = the(&objs, "ClusterRole");
    let granted = granted(role);
    let least: BTreeSet<String> = [
        "pods:get",
        "pods:list",
        "pods:watch",
        "persistentvolumeclaims:get",
        "persistentvolumes:get",
        "nodes/configz:get",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(granted, least, "ClusterRole grants exactly this");

    let sa = the(&objs, "ServiceAccount");
    let binding = the(&objs, "ClusterRoleBinding");
    assert_eq!(binding["roleRef"]["kind"], "ClusterRole");
    assert_eq!(binding["roleRef"]["name"], name(role));
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": name(sa), "namespace": NAMESPACE}])
    );

    // The DaemonSet.
    let ds = the(&objs, "DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    let pod_labels = &ds["spec"]["template"]["metadata"]["labels"];
    assert_eq!(pod["serviceAccountName"], name(sa));
    let tolerations = pod["tolerations"].as_array().expect("tolerations");
    assert!(
        tolerations.contains(&json!({"operator": "Exists"})),
        "a bare `operator: Exists` toleration runs kubedf on every node: {tolerations:?}"
    );
    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    let args = strs(&c["args"]);
    assert_eq!(args.first(), Some(&"serve"), "args start with serve");
    let flag = |f: &str| -> &str {
        let prefix = format!("--{f}=");
        args.iter()
            .find_map(|a| a.strip_prefix(prefix.as_str()))
            .unwrap_or_else(|| panic!("no --{f}= in args {args:?}"))
    };

    let env = &c["env"];
    assert_eq!(
        by_name(env, "NODE_NAME")["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );
    assert_eq!(by_name(env, "KUBEDF_LOG_FORMAT")["value"], "json");
    // kubelet's /configz on the node's own address, from the downward API;
    // kubelet expands $(HOST_IP) in args.
    assert_eq!(
        by_name(env, "HOST_IP")["valueFrom"]["fieldRef"]["fieldPath"],
        "status.hostIP"
    );
    assert_eq!(flag("kubelet.endpoint"), "https://$(HOST_IP):10250");
    // The root dir, config file and runtime are the running kubelet's: not
    // pinned.
    for pinned in ["kubelet.root-dir", "kubelet.config", "cri.endpoint"] {
        assert!(
            !args.iter().any(|a| a.starts_with(&format!("--{pinned}="))),
            "--{pinned} would override the running kubelet's: {args:?}"
        );
    }

    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_ne!(sc["privileged"], true);
    assert_eq!(sc["runAsUser"], 0, "root, to read kubelet's 0750 pod dirs");
    assert_eq!(strs(&sc["capabilities"]["drop"]), ["ALL"]);
    assert_eq!(strs(&sc["capabilities"]["add"]), ["DAC_READ_SEARCH"]);
    assert_ne!(pod["hostNetwork"], true);
    assert_ne!(pod["hostPID"], true);

    // Host mounts: / read-only with HostToContainer at --path.rootfs, /proc at
    // --path.procfs, and nothing else: the CRI socket is the one the kubelet
    // names, reached under /host (on k3s, k0s and CRI-O nodes too).
    let volumes = pod["volumes"].as_array().expect("volumes");
    let mount_of_host_path = |host: &str| -> &Value {
        let vol = volumes
            .iter()
            .find(|v| v["hostPath"]["path"] == host)
            .unwrap_or_else(|| panic!("no hostPath volume for {host}"));
        by_name(&c["volumeMounts"], vol["name"].as_str().unwrap())
    };
    let rootfs = mount_of_host_path("/");
    assert_eq!(rootfs["readOnly"], true, "rootfs read-only");
    assert_eq!(rootfs["mountPropagation"], "HostToContainer");
    assert_eq!(rootfs["mountPath"], flag("path.rootfs"));
    let proc_ = mount_of_host_path("/proc");
    assert_eq!(proc_["readOnly"], true, "proc read-only");
    assert_eq!(proc_["mountPath"], flag("path.procfs"));
    let host_paths: Vec<&str> = volumes
        .iter()
        .filter_map(|v| v["hostPath"]["path"].as_str())
        .collect();
    assert_eq!(host_paths, ["/", "/proc"], "no runtime socket is mounted");
    for m in c["volumeMounts"].as_array().unwrap() {
        assert_ne!(
            m["mountPropagation"], "Bidirectional",
            "kubedf never mounts"
        );
    }

    // Probes on /healthz of the metrics port.
    let port = by_name(&c["ports"], "metrics");
    assert_eq!(port["containerPort"], PORT);
    for probe in ["livenessProbe", "readinessProbe"] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"], "/healthz", "{probe}");
        assert!(
            get["port"] == PORT || get["port"] == "metrics",
            "{probe} port: {}",
            get["port"]
        );
    }
    assert!(c["resources"]["requests"]["cpu"].is_string());
    assert!(c["resources"]["limits"]["memory"].is_string());

    // Headless Service on the pods, and the ServiceMonitor on the Service.
    let svc = the(&objs, "Service");
    assert_eq!(svc["spec"]["clusterIP"], "None", "headless");
    for (k, v) in svc["spec"]["selector"].as_object().expect("selector") {
        assert_eq!(&pod_labels[k], v, "Service selects the pods");
    }
    let svc_port = by_name(&svc["spec"]["ports"], "metrics");
    assert_eq!(svc_port["port"], PORT);
    let sm = the(&objs, "ServiceMonitor");
    for (k, v) in sm["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels")
    {
        assert_eq!(
            &svc["metadata"]["labels"][k], v,
            "ServiceMonitor selects the Service"
        );
    }
    assert_eq!(name(svc), JOB, "the Service name becomes the job label");
    let endpoints = sm["spec"]["endpoints"].as_array().expect("endpoints");
    assert_eq!(endpoints.len(), 1);
    let ep = &endpoints[0];
    assert_eq!(ep["port"], "metrics");
    assert_eq!(ep["interval"], "30s");
    assert_eq!(
        ep["honorLabels"], true,
        "series keep their own namespace, pod and container under the operator's target labels"
    );
    for target in ["instance", "node"] {
        let relabeled = ep["relabelings"].as_array().into_iter().flatten().any(|r| {
            r["targetLabel"] == target
                && strs(&r["sourceLabels"]) == ["__meta_kubernetes_pod_node_name"]
                && r.get("action").is_none_or(|a| a == "replace")
        });
        assert!(relabeled, "ServiceMonitor sets {target} from the node name");
    }

    let pr = the(&objs, "PrometheusRule");
    assert!(!pr["spec"]["groups"].as_array().expect("groups").is_empty());
}

#[test]
fn rendered_objects_pass_kubernetes_validate() {
    let test = "rendered_objects_pass_kubernetes_validate";
    let Some(objs) = render(test) else { return };
    let Some(checked) = testkit::manifests::kubernetes_validate(test, "deploy/", &objs) else {
        return;
    };
    assert_eq!(checked, 6, "six built-in objects");
}

#[test]
fn alert_rules_pass_promtool_check() {
    let test = "alert_rules_pass_promtool_check";
    let Some(out) = run(
        test,
        Command::new("promtool").current_dir(root()).args([
            "check",
            "rules",
            "deploy/rules/kubedf-alerts.yaml",
        ]),
    ) else {
        return;
    };
    assert_success("promtool check rules", &out);
}

#[test]
fn alert_rules_pass_their_unit_tests() {
    let test = "alert_rules_pass_their_unit_tests";
    let Some(out) = run(
        test,
        Command::new("promtool").current_dir(root()).args([
            "test",
            "rules",
            "deploy/rules/kubedf-alerts.test.yaml",
        ]),
    ) else {
        return;
    };
    assert_success("promtool test rules", &out);
}

#[test]
fn prometheusrule_holds_the_rules_file() {
    let file = yaml("deploy/rules/kubedf-alerts.yaml");
    let pr = yaml("deploy/prometheusrule.yaml");
    assert_eq!(pr["kind"], "PrometheusRule");
    assert_eq!(pr["apiVersion"], "monitoring.coreos.com/v1");
    assert!(file["groups"].is_array(), "rules file has groups");
    assert_eq!(
        file.as_object().unwrap().len(),
        1,
        "rules file holds only groups"
    );
    assert_eq!(
        pr["spec"]["groups"], file["groups"],
        "deploy/prometheusrule.yaml spec.groups must equal deploy/rules/kubedf-alerts.yaml groups"
    );
}

fn alert_rules() -> Vec<Value> {
    yaml("deploy/rules/kubedf-alerts.yaml")["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules").clone())
        .collect()
}

#[test]
fn every_alert_is_labelled_scoped_and_documented() {
    let readme = metric_docs();
    let rules = alert_rules();
    assert!(!rules.is_empty());
    for rule in &rules {
        let alert = rule["alert"].as_str().expect("only alerting rules");
        let expr = rule["expr"].as_str().expect("expr");
        assert!(
            matches!(
                rule["labels"]["severity"].as_str(),
                Some("warning" | "critical")
            ),
            "{alert}: severity"
        );
        for a in ["summary", "description"] {
            assert!(
                rule["annotations"][a]
                    .as_str()
                    .is_some_and(|s| !s.is_empty()),
                "{alert}: {a}"
            );
        }
        assert!(
            rule["annotations"]["description"]
                .as_str()
                .unwrap()
                .contains("$labels"),
            "{alert}: description names the series"
        );
        assert!(rule["for"].is_string(), "{alert}: for");
        assert_selectors_have(alert, expr, &format!("job=\"{JOB}\""));
        assert!(
            expr.contains(&format!("job=\"{JOB}\"")),
            "{alert} selects job=\"{JOB}\""
        );
        assert_documented(&readme, alert, expr);
    }
}

#[test]
fn every_alert_has_a_firing_and_a_quiet_unit_test() {
    let tests = yaml("deploy/rules/kubedf-alerts.test.yaml");
    let mut cases: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    for t in tests["tests"].as_array().expect("tests") {
        for case in t["alert_rule_test"].as_array().into_iter().flatten() {
            let alert = case["alertname"].as_str().expect("alertname").to_string();
            let fires = case["exp_alerts"].as_array().is_some_and(|a| !a.is_empty());
            let entry = cases.entry(alert).or_default();
            if fires {
                entry.0 = true;
            } else {
                entry.1 = true;
            }
        }
    }
    for rule in alert_rules() {
        let alert = rule["alert"].as_str().unwrap();
        assert_eq!(
            cases.get(alert),
            Some(&(true, true)),
            "{alert}: needs a case where it fires and one where it must not (firing, quiet)"
        );
    }
}

/// kubedf's own families: about a kubedf target (its sources, collectors,
/// build), not about a node. In cluster mode they carry no node label.
fn target_families() -> BTreeSet<&'static str> {
    SELF_DESCS.iter().map(|d| d.name).collect()
}

/// Whether `expr` reads a family about a node (anything but kubedf's own
/// families and `up`, which `metric_names` does not see).
fn about_nodes(expr: &str) -> bool {
    let own = target_families();
    metric_names(expr)
        .iter()
        .any(|(m, _)| !own.contains(m.as_str()))
}

/// The label lists of the `by (...)` and `on (...)` clauses of `expr`.
fn groupings(expr: &str) -> Vec<Vec<String>> {
    let b = expr.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut out = Vec::new();
    for kw in ["by", "on"] {
        for (i, _) in expr.match_indices(kw) {
            let end = i + kw.len();
            if (i > 0 && ident(b[i - 1])) || (end < b.len() && ident(b[end])) {
                continue;
            }
            let Some(rest) = expr[end..].trim_start().strip_prefix('(') else {
                continue;
            };
            let list = &rest[..rest.find(')').expect("closing parenthesis")];
            out.push(list.split(',').map(|l| l.trim().to_string()).collect());
        }
    }
    out
}

/// In cluster mode one target (instance) reports many nodes, each series
/// with its own node label, which the DaemonSet's ServiceMonitor sets too:
/// an alert about a node must name and group it by node, or it would speak
/// of the poller and lump its nodes together.
#[test]
fn alerts_about_a_node_name_and_group_it_by_the_node_label() {
    for rule in alert_rules() {
        let alert = rule["alert"].as_str().unwrap();
        let expr = rule["expr"].as_str().unwrap();
        let description = rule["annotations"]["description"].as_str().unwrap();
        if !about_nodes(expr) {
            continue;
        }
        assert!(
            description.contains("$labels.node"),
            "{alert}: the description names the node ($labels.node)"
        );
        for labels in groupings(expr) {
            assert!(
                labels.iter().any(|l| l == "node"),
                "{alert}: groups by {labels:?}, without node"
            );
        }
    }
    assert_eq!(
        groupings("sum by (job, node) (x) < on(job,instance) y or bon (z)"),
        [vec!["job", "node"], vec!["job", "instance"]]
    );
}

/// Names matching `(kubedf|kubelet_volume_stats)_[a-z_]+`, with the byte
/// offset just past each name.
fn metric_names(expr: &str) -> Vec<(String, usize)> {
    let b = expr.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let at_boundary = i == 0 || !ident(b[i - 1]);
        if at_boundary
            && (b[i..].starts_with(b"kubedf_") || b[i..].starts_with(b"kubelet_volume_stats_"))
        {
            let end = (i..b.len()).find(|&j| !ident(b[j])).unwrap_or(b.len());
            // A label name (kubedf_job="...") is followed by its matcher.
            let is_label = expr[end..].trim_start().starts_with(['=', '!']);
            if !is_label {
                out.push((expr[i..end].to_string(), end));
            }
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

/// Every kubedf/kubelet metric selector in `expr` carries `matcher`.
fn assert_selectors_have(what: &str, expr: &str, matcher: &str) {
    for (metric, end) in metric_names(expr) {
        let rest = &expr[end..];
        let selector = rest
            .strip_prefix('{')
            .and_then(|r| r.find('}').map(|n| &r[..n]))
            .unwrap_or_else(|| panic!("{what}: {metric} has no label selector in {expr}"));
        // kubelet_volume_stats_* relabelled to job="kubelet" (kubeletCompat)
        // keep kubedf's job in kubedf_job.
        let compat = format!("kubedf_{matcher}");
        let has = selector
            .split(',')
            .map(str::trim)
            .any(|m| m == matcher || (metric.starts_with("kubelet_volume_stats_") && m == compat));
        assert!(has, "{what}: {metric}{{{selector}}} lacks {matcher}");
    }
}

fn assert_documented(readme: &str, what: &str, expr: &str) {
    for (metric, _) in metric_names(expr) {
        assert!(
            readme.contains(&format!("`{metric}`")),
            "{what}: {metric} is not in docs/metrics.md or docs/cluster-mode.md"
        );
    }
}

fn dashboards() -> Vec<(String, Value)> {
    let dir = root().join("dashboards");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("dashboards/") {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()));
        out.push((file_name(&path), v));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn file_name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

fn all_panels(panels: &Value, out: &mut Vec<Value>) {
    for p in panels.as_array().into_iter().flatten() {
        out.push(p.clone());
        all_panels(&p["panels"], out);
    }
}

/// `$name` and `${name}` references in a query.
fn variables_used(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find('$') {
        rest = &rest[i + 1..];
        let (name, tail) = if let Some(r) = rest.strip_prefix('{') {
            let end = r.find('}').unwrap_or(r.len());
            (&r[..end], &r[end..])
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            (&rest[..end], &rest[end..])
        };
        out.push(name.to_string());
        rest = tail;
    }
    out
}

fn variable_query(v: &Value) -> &str {
    v["query"]
        .as_str()
        .or_else(|| v["query"]["query"].as_str())
        .unwrap_or_else(|| panic!("variable {} has no query", v["name"]))
}

#[test]
fn dashboards_are_importable_and_query_only_documented_metrics() {
    let readme = metric_docs();
    let dashboards = dashboards();
    let files: BTreeSet<&str> = dashboards.iter().map(|(f, _)| f.as_str()).collect();
    for want in [
        "kubedf-persistent-volumes.json",
        "kubedf-node-disk-pressure.json",
    ] {
        assert!(files.contains(want), "dashboards/{want} is missing");
    }
    let ds = json!({"type": "prometheus", "uid": DATASOURCE});
    let mut uids = BTreeSet::new();
    for (file, d) in &dashboards {
        assert_eq!(d["schemaVersion"], 39, "{file}: schemaVersion");
        assert!(
            d["id"].is_null(),
            "{file}: no dashboard id, so it imports as new"
        );
        let uid = d["uid"].as_str().unwrap_or_else(|| panic!("{file}: uid"));
        assert!(!uid.is_empty() && uid.len() <= 40, "{file}: uid {uid:?}");
        assert!(uids.insert(uid.to_string()), "{file}: uid {uid} taken");
        assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()));

        // Variables.
        let vars = d["templating"]["list"].as_array().expect("templating.list");
        let var = |n: &str| vars.iter().find(|v| v["name"] == n);
        let dsv = var("datasource").unwrap_or_else(|| panic!("{file}: datasource variable"));
        assert_eq!(dsv["type"], "datasource");
        assert_eq!(dsv["query"], "prometheus");
        let job = var("job").unwrap_or_else(|| panic!("{file}: job variable"));
        assert_eq!(job["type"], "query");
        assert_eq!(
            variable_query(job).replace(' ', ""),
            "label_values(kubedf_build_info,job)",
            "{file}: job variable"
        );
        let mut all_vars = BTreeSet::new();
        for v in vars {
            let n = v["name"].as_str().expect("variable name");
            all_vars.insert(n);
            if v["type"] != "query" {
                continue;
            }
            assert_eq!(v["datasource"], ds, "{file}: variable {n} datasource");
            let q = variable_query(v);
            if n != "job" {
                assert!(
                    q.contains("job=\"$job\""),
                    "{file}: variable {n} is scoped to $job"
                );
            }
            assert_documented(&readme, &format!("{file}: variable {n}"), q);
            if v["includeAll"] == true {
                assert_eq!(v["allValue"], ".*", "{file}: variable {n} allValue");
            }
        }

        // Panels.
        let mut panels = Vec::new();
        all_panels(&d["panels"], &mut panels);
        assert!(!panels.is_empty(), "{file}: no panels");
        let mut ids = BTreeSet::new();
        let mut boxes: Vec<(String, [u64; 4])> = Vec::new();
        for p in &panels {
            let title = p["title"].as_str().unwrap_or("?").to_string();
            let what = format!("{file}: panel {title:?}");
            let id = p["id"].as_u64().unwrap_or_else(|| panic!("{what}: id"));
            assert!(ids.insert(id), "{what}: id {id} collides");
            assert_eq!(p["datasource"], ds, "{what}: datasource");
            let g = &p["gridPos"];
            let b = ["x", "y", "w", "h"].map(|k| {
                g[k].as_u64()
                    .unwrap_or_else(|| panic!("{what}: gridPos.{k}"))
            });
            assert!(b[0] + b[2] <= 24, "{what}: wider than the grid");
            for (other, o) in &boxes {
                let overlap = b[0] < o[0] + o[2]
                    && o[0] < b[0] + b[2]
                    && b[1] < o[1] + o[3]
                    && o[1] < b[1] + b[3];
                assert!(!overlap, "{what} overlaps {other:?}");
            }
            boxes.push((title.clone(), b));
            if p["type"] == "row" {
                continue;
            }
            let targets = p["targets"]
                .as_array()
                .unwrap_or_else(|| panic!("{what}: targets"));
            assert!(!targets.is_empty(), "{what}: no targets");
            let mut refs = BTreeSet::new();
            for t in targets {
                let r = t["refId"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{what}: refId"));
                assert!(refs.insert(r), "{what}: refId {r} twice");
                if let Some(tds) = t.get("datasource") {
                    assert_eq!(tds, &ds, "{what}: target datasource");
                }
                let expr = t["expr"].as_str().unwrap_or_else(|| panic!("{what}: expr"));
                assert!(expr.contains("$job"), "{what}: {expr} does not use $job");
                assert_selectors_have(&what, expr, "job=\"$job\"");
                assert_documented(&readme, &what, expr);
                for used in variables_used(expr) {
                    assert!(
                        QUERY_VARIABLES.contains(&used.as_str()),
                        "{what}: uses ${used}, not one of {QUERY_VARIABLES:?}"
                    );
                    if let Some(v) = var(&used) {
                        if v["includeAll"] == true {
                            assert!(
                                !expr.contains(&format!("=\"${used}\"")),
                                "{what}: ${used} can be All (.*): match it with =~"
                            );
                        }
                    } else {
                        assert!(
                            used.starts_with("__"),
                            "{what}: ${used} is not a variable of {file}"
                        );
                    }
                }
            }
        }
        for n in all_vars {
            let used = n == "datasource"
                || panels.iter().any(|p| {
                    p["targets"].as_array().into_iter().flatten().any(|t| {
                        variables_used(t["expr"].as_str().unwrap_or(""))
                            .iter()
                            .any(|u| u == n)
                    })
                })
                || vars.iter().any(|v| {
                    v["type"] == "query" && variables_used(variable_query(v)).iter().any(|u| u == n)
                });
            assert!(used, "{file}: variable {n} is never used");
        }
    }
}

/// The dashboards work in both modes: the node variable comes from a family
/// both modes emit per node, with a node label (the DaemonSet's from the
/// ServiceMonitor, cluster mode's its own), every use of it matches the node
/// label (in cluster mode instance is the poller), and a legend shows
/// instance only for kubedf's own families.
#[test]
fn dashboards_select_nodes_by_the_node_label_in_both_modes() {
    let cluster: BTreeSet<&str> = ClusterCollector
        .descs()
        .iter()
        .filter(|d| d.labels.contains(&"node"))
        .map(|d| d.name)
        .collect();
    let daemonset: BTreeSet<&str> = Registry::available()
        .iter()
        .flat_map(|c| c.descs().iter().map(|d| d.name))
        .collect();
    let mut node_variables = 0;
    for (file, d) in dashboards() {
        let vars = d["templating"]["list"].as_array().expect("templating.list");
        let mut exprs: Vec<(String, String)> = Vec::new();
        for v in vars.iter().filter(|v| v["type"] == "query") {
            let q = variable_query(v);
            exprs.push((format!("variable {}", v["name"]), q.to_string()));
            if v["name"] != "node" {
                continue;
            }
            node_variables += 1;
            let q = q.replace(' ', "");
            let (selector, label) = q
                .strip_prefix("label_values(")
                .and_then(|r| r.strip_suffix(')'))
                .and_then(|r| r.rsplit_once(','))
                .unwrap_or_else(|| panic!("{file}: node variable {q}"));
            assert_eq!(label, "node", "{file}: the node variable reads node");
            let family = selector.split('{').next().unwrap();
            assert!(
                cluster.contains(family) && daemonset.contains(family),
                "{file}: the node variable reads {family}, which not both modes emit per node"
            );
        }
        let mut panels = Vec::new();
        all_panels(&d["panels"], &mut panels);
        for p in &panels {
            for t in p["targets"].as_array().into_iter().flatten() {
                let what = format!("panel {:?}", p["title"].as_str().unwrap_or("?"));
                let expr = t["expr"].as_str().unwrap_or("");
                let legend = t["legendFormat"].as_str().unwrap_or("");
                assert!(
                    !legend.contains("{{instance}}") || !about_nodes(expr),
                    "{file}: {what}: legend {legend:?} names a node by instance"
                );
                exprs.push((what, expr.to_string()));
            }
        }
        for (what, expr) in exprs {
            for (i, _) in expr.match_indices("$node") {
                assert!(
                    expr[..i].ends_with("node=~\""),
                    "{file}: {what}: $node matches another label than node: {expr}"
                );
            }
        }
    }
    assert!(node_variables > 0, "no dashboard has a node variable");
}

#[test]
fn metric_names_are_found_in_queries() {
    let names: Vec<String> = metric_names(
        "kubedf_a_b{job=\"kubedf\"} / kubelet_volume_stats_x{kubedf_job=\"kubedf\"} or kubelet_up + my_kubedf_x",
    )
    .into_iter()
    .map(|(n, _)| n)
    .collect();
    assert_eq!(names, ["kubedf_a_b", "kubelet_volume_stats_x"]);
    assert_eq!(
        variables_used("a{x=~\"$node\", y=\"${job}\"}[$__rate_interval]"),
        ["node", "job", "__rate_interval"]
    );
}

#[test]
fn cluster_kustomization_polls_kubelets_with_no_host_access() {
    let test = "cluster_kustomization_polls_kubelets_with_no_host_access";
    let Some(objs) = kustomize_with(test, "deploy/cluster", &[]) else {
        return;
    };
    let kinds: BTreeSet<&str> = objs.iter().map(kind).collect();
    let expected: BTreeSet<&str> = [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "Service",
        "ServiceMonitor",
    ]
    .into();
    assert_eq!(kinds, expected, "rendered kinds");
    assert_eq!(objs.len(), expected.len(), "one object of each kind");
    for obj in &objs {
        if !matches!(
            kind(obj),
            "Namespace" | "ClusterRole" | "ClusterRoleBinding"
        ) {
            assert_eq!(obj["metadata"]["namespace"], NAMESPACE, "{}", kind(obj));
        }
    }
    // Nothing of the host: the strictest Pod Security profile.
    assert_eq!(
        the(&objs, "Namespace")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "restricted"
    );

    // RBAC: exactly the Nodes, their kubelets' /stats/summary and /configz;
    // never nodes/proxy (every kubelet API, exec into every pod).
    let role = the(&objs, "ClusterRole");
    let grants = granted(role);
    assert!(!grants.iter().any(|g| g.starts_with("nodes/proxy:")));
    let wanted: BTreeSet<String> = [
        "nodes:get",
        "nodes:list",
        "nodes:watch",
        "nodes/stats:get",
        "nodes/configz:get",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(grants, wanted, "ClusterRole grants exactly this");
    let sa = the(&objs, "ServiceAccount");
    let binding = the(&objs, "ClusterRoleBinding");
    assert_eq!(binding["roleRef"]["name"], name(role));
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": name(sa), "namespace": NAMESPACE}])
    );

    let deployment = the(&objs, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 1);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], name(sa));
    for host in ["hostNetwork", "hostPID", "hostIPC"] {
        assert_ne!(pod[host], true, "{host}");
    }
    assert!(pod.get("volumes").is_none(), "no volumes, no hostPath");
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let c = &pod["containers"][0];
    let sc = &c["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_ne!(sc["runAsUser"], 0);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(strs(&sc["capabilities"]["drop"]), ["ALL"]);
    assert!(sc["capabilities"].get("add").is_none());
    let args = strs(&c["args"]);
    assert_eq!(&args[..2], ["serve", "--mode=cluster"]);
    for flag in [
        "--cluster.poll-interval=1m",
        "--cluster.concurrency=64",
        "--cluster.down-after=3",
        "--kubelet.timeout=10s",
        "--kubelet.address-types=InternalIP",
    ] {
        assert!(args.contains(&flag), "{flag} in {args:?}");
    }
    assert!(
        !args
            .iter()
            .any(|a| a.starts_with("--path.") || a.starts_with("--shard")),
        "{args:?}"
    );

    let svc = the(&objs, "Service");
    assert_eq!(name(svc), JOB, "the Service name becomes the job label");
    assert_eq!(svc["spec"]["clusterIP"], "None");
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    for (k, v) in svc["spec"]["selector"].as_object().expect("selector") {
        assert_eq!(&pod_labels[k], v, "Service selects the pod");
    }
    let ep = &the(&objs, "ServiceMonitor")["spec"]["endpoints"][0];
    assert_eq!(ep["port"], "metrics");
    assert_eq!(ep["path"], "/metrics");
    assert_eq!(ep["honorLabels"], true, "series keep their own node label");
    assert!(
        ep.get("relabelings").is_none(),
        "the poller's node is not the series'"
    );

    let Some(checked) = testkit::manifests::kubernetes_validate(test, "deploy/cluster/", &objs)
    else {
        return;
    };
    assert_eq!(checked, 6, "six built-in objects");
}
