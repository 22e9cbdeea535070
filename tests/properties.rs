//! Property tests of the parsers of kubelet-side input: quantities, Go
//! durations, the kubelet configuration file, and the pod, PVC and PV
//! objects of the API. For any input: nothing panics, and every error names
//! its input (the file, the value or the object). Where a second way to
//! compute the answer exists, the two agree.

use std::path::Path;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kubedf::kubelet::config::KubeletConfig;
use kubedf::kubelet::duration::parse_go_duration;
use kubedf::kubelet::eviction::ThresholdValue;
use kubedf::kubelet::quantity::parse_quantity;
use kubedf::sources::kube::{claim_state, pod_volumes, pv_info};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Value, json};

const CONFIG: &str = "/var/lib/kubelet/config.yaml";

fn config() -> ProptestConfig {
    // The machine is shared: enough cases to find edges, few enough to be quick.
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Characters quantities are made of, and a few that break them.
fn quantity_text() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[0-9.+eEinumkKMGTP% \t-]{0,24}").expect("regex")
}

/// (text, exact value) of well-formed quantities small enough to compute
/// with u128 in the test: whole digits, fraction digits, a suffix.
fn valid_quantity() -> impl Strategy<Value = (String, i64)> {
    let suffixes: Vec<(&str, u32, i32)> = vec![
        ("", 0, 0),
        ("Ki", 10, 0),
        ("Mi", 20, 0),
        ("Gi", 30, 0),
        ("Ti", 40, 0),
        ("n", 0, -9),
        ("u", 0, -6),
        ("m", 0, -3),
        ("k", 0, 3),
        ("M", 0, 6),
        ("G", 0, 9),
        ("e2", 0, 2),
        ("e-4", 0, -4),
        ("E+1", 0, 1),
    ];
    (
        "[0-9]{0,9}",
        proptest::option::of("[0-9]{0,6}"),
        proptest::sample::select(suffixes),
    )
        .prop_map(|(whole, frac, (suffix, shift, exp))| {
            let text = match &frac {
                Some(f) => format!("{whole}.{f}{suffix}"),
                None => format!("{whole}{suffix}"),
            };
            let frac = frac.unwrap_or_default();
            let digits: u128 = format!("0{whole}{frac}").parse().expect("digits");
            let scaled = digits << shift;
            let e = exp - frac.len() as i32;
            let value = if e >= 0 {
                scaled * 10u128.pow(e as u32)
            } else {
                scaled.div_ceil(10u128.pow((-e) as u32))
            };
            (text, i64::try_from(value).unwrap_or(i64::MAX))
        })
        // The one empty text is ErrFormatWrong, tested in the unit tests.
        .prop_filter("not empty", |(text, _)| !text.is_empty())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn quantities_never_panic_and_errors_quote_the_input(s in any::<String>()) {
        if let Err(e) = parse_quantity(&s) {
            let quoted = format!("{s:?}");
            prop_assert!(e.to_string().contains(&quoted), "{}", e);
        }
    }

    #[test]
    fn quantity_like_text_never_panics(s in quantity_text()) {
        match parse_quantity(&s) {
            Ok(_) => prop_assert!(!s.contains([' ', '\t', '%']), "{s:?} accepted"),
            Err(e) => {
                let quoted = format!("{s:?}");
                prop_assert!(e.to_string().contains(&quoted), "{}", e);
            }
        }
    }

    #[test]
    fn quantities_have_their_exact_value((text, want) in valid_quantity()) {
        prop_assert_eq!(parse_quantity(&text), Ok(want), "{}", text);
        prop_assert_eq!(parse_quantity(&format!("-{text}")), Ok(-want));
        prop_assert_eq!(parse_quantity(&format!("+{text}")), Ok(want));
    }

    #[test]
    fn whitespace_anywhere_is_refused(
        (text, _) in valid_quantity(),
        at in any::<Index>(),
        ws in proptest::sample::select(vec![" ", "\t", "\n", "\u{a0}"]),
    ) {
        let mut t = text.clone();
        let i = at.index(t.len() + 1);
        t.insert_str(i, ws);
        prop_assert!(parse_quantity(&t).is_err(), "{:?} accepted", t);
    }

    #[test]
    fn integers_round_trip(n in any::<i64>().prop_filter("not MIN", |n| *n != i64::MIN)) {
        prop_assert_eq!(parse_quantity(&n.to_string()), Ok(n));
        prop_assert_eq!(
            parse_quantity(&format!("{n}Ki")),
            Ok(n.checked_mul(1024).unwrap_or(if n < 0 { -i64::MAX } else { i64::MAX }))
        );
    }

    #[test]
    fn durations_never_panic_and_errors_quote_the_input(s in any::<String>()) {
        if let Err(e) = parse_go_duration(&s) {
            let quoted = format!("{s:?}");
            prop_assert!(e.to_string().contains(&quoted), "{}", e);
        }
    }

    #[test]
    fn durations_sum_their_parts(
        parts in proptest::collection::vec(
            (0u64..100_000, proptest::sample::select(vec![
                ("h", 3_600_000_000_000u64), ("m", 60_000_000_000), ("s", 1_000_000_000),
                ("ms", 1_000_000), ("us", 1_000), ("\u{b5}s", 1_000), ("ns", 1),
            ])),
            1..5,
        ),
        negative in any::<bool>(),
    ) {
        let text: String = parts.iter().map(|(n, (u, _))| format!("{n}{u}")).collect();
        let total: i64 = parts.iter().map(|(n, (_, scale))| (n * scale) as i64).sum();
        let sign = if negative { "-" } else { "" };
        prop_assert_eq!(
            parse_go_duration(&format!("{sign}{text}")),
            Ok(if negative { -total } else { total })
        );
    }

    #[test]
    fn any_text_as_a_kubelet_config_names_the_file(s in any::<String>()) {
        if let Err(e) = KubeletConfig::parse(&s, Path::new(CONFIG)) {
            prop_assert!(e.to_string().contains(CONFIG), "{e}");
        }
    }

    #[test]
    fn any_json_document_as_a_kubelet_config_names_the_file(v in json_value()) {
        check_config(&v.to_string())?;
    }

    #[test]
    fn mutated_kubelet_configs_name_the_file_and_stay_in_range(
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        let mut doc = valid_config();
        for m in &mutations {
            m.apply(&mut doc);
        }
        check_config(&doc.to_string())?;
        // The same document as YAML block text.
        let yaml = serde_saphyr::to_string(&doc).expect("yaml");
        check_config(&yaml)?;
    }

    #[test]
    fn mutated_pods_never_panic_and_errors_name_the_field(
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        let mut doc = valid_pod();
        for m in &mutations {
            m.apply(&mut doc);
        }
        if let Ok(pod) = serde_json::from_value::<Pod>(doc)
            && let Err(e) = pod_volumes(&pod)
        {
            prop_assert!(e.contains("pod") && e.contains("metadata."), "{e}");
        }
    }

    #[test]
    fn mutated_pvcs_and_pvs_never_panic_and_errors_name_the_volume(
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        let mut pvc = valid_pvc();
        let mut pv = valid_pv();
        for m in &mutations {
            m.apply(&mut pvc);
            m.apply(&mut pv);
        }
        if let Ok(pvc) = serde_json::from_value::<PersistentVolumeClaim>(pvc) {
            let _ = claim_state(&pvc);
        }
        if let Ok(pv) = serde_json::from_value::<PersistentVolume>(pv)
            && let Err(e) = pv_info(&pv)
        {
            prop_assert!(e.contains("persistent volume"), "{e}");
        }
    }
}

/// Parses a config text: an error names the file; a success holds only
/// thresholds kubelet would hold (positive quantities, fractions in 0..=1 or
/// NaN, as kubelet lets NaN through) and valid image GC percents.
fn check_config(text: &str) -> Result<(), TestCaseError> {
    match KubeletConfig::parse(text, Path::new(CONFIG)) {
        Err(e) => prop_assert!(e.to_string().contains(CONFIG), "{e}"),
        Ok(cfg) => {
            for t in cfg.eviction.hard.values().chain(cfg.eviction.soft.values()) {
                match *t {
                    ThresholdValue::Quantity(q) => prop_assert!(q > 0, "{q}"),
                    ThresholdValue::Percentage(p) => {
                        prop_assert!(p.is_nan() || (0.0..=1.0).contains(&p), "{p}")
                    }
                }
            }
            for s in cfg.eviction.soft.keys() {
                prop_assert!(cfg.eviction.soft_grace.contains_key(s));
            }
            let gc = cfg.image_gc;
            prop_assert!((0..=100).contains(&gc.high_threshold_percent));
            prop_assert!(gc.low_threshold_percent < gc.high_threshold_percent);
        }
    }
    Ok(())
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        quantity_text().prop_map(Value::String),
        proptest::sample::select(vec![
            "nodefs.available",
            "imagefs.inodesFree",
            "pid.available",
            "memory.available",
            "evictionHard",
            "evictionSoft",
            "evictionSoftGracePeriod",
            "evictionMinimumReclaim",
            "imageGCHighThresholdPercent",
            "kind",
            "KubeletConfiguration",
            "1m30s",
            "-1m",
            "abc",
            "10%",
            "100%",
            "0%",
            "150%",
            "NaN%",
            "1Gi ",
        ])
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(
                proptest::sample::select(vec![
                    "kind",
                    "evictionHard",
                    "evictionSoft",
                    "evictionSoftGracePeriod",
                    "evictionMinimumReclaim",
                    "mergeDefaultEvictionSettings",
                    "imageGCHighThresholdPercent",
                    "imageGCLowThresholdPercent",
                    "nodefs.available",
                    "imagefs.available",
                    "pid.available",
                    "other",
                ])
                .prop_map(str::to_owned),
                inner,
                0..5,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// One change to a JSON document: at the n-th node (in document order),
/// remove it, replace it with another value, or add a key beside it.
#[derive(Clone, Debug)]
enum Mutation {
    Remove(Index),
    Replace(Index, Value),
    AddKey(Index, String, Value),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<Index>().prop_map(Mutation::Remove),
        (any::<Index>(), json_value()).prop_map(|(i, v)| Mutation::Replace(i, v)),
        (any::<Index>(), "[a-zA-Z.]{1,20}", json_value())
            .prop_map(|(i, k, v)| Mutation::AddKey(i, k, v)),
    ]
}

impl Mutation {
    fn apply(&self, doc: &mut Value) {
        let mut pointers = Vec::new();
        collect_pointers(doc, String::new(), &mut pointers);
        let pick = |i: &Index| pointers[i.index(pointers.len())].clone();
        match self {
            Mutation::Remove(i) => {
                let p = pick(i);
                if let Some((parent, key)) = p.rsplit_once('/')
                    && let Some(node) = doc.pointer_mut(parent)
                {
                    let key = key.replace("~1", "/").replace("~0", "~");
                    match node {
                        Value::Object(m) => {
                            m.remove(&key);
                        }
                        Value::Array(a) => {
                            if let Ok(k) = key.parse::<usize>()
                                && k < a.len()
                            {
                                a.remove(k);
                            }
                        }
                        _ => {}
                    }
                }
            }
            Mutation::Replace(i, v) => {
                if let Some(node) = doc.pointer_mut(&pick(i)) {
                    *node = v.clone();
                }
            }
            Mutation::AddKey(i, k, v) => {
                if let Some(Value::Object(m)) = doc.pointer_mut(&pick(i)) {
                    m.insert(k.clone(), v.clone());
                }
            }
        }
    }
}

fn collect_pointers(v: &Value, at: String, out: &mut Vec<String>) {
    out.push(at.clone());
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let k = k.replace('~', "~0").replace('/', "~1");
                collect_pointers(child, format!("{at}/{k}"), out);
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                collect_pointers(child, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

fn valid_config() -> Value {
    json!({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "imageGCHighThresholdPercent": 90,
        "imageGCLowThresholdPercent": 70,
        "mergeDefaultEvictionSettings": false,
        "evictionHard": {
            "memory.available": "200Mi",
            "nodefs.available": "5%",
            "nodefs.inodesFree": "4%",
            "imagefs.available": "10Gi",
            "pid.available": "1k"
        },
        "evictionSoft": {"nodefs.available": "15%", "imagefs.inodesFree": "1.5e3"},
        "evictionSoftGracePeriod": {"nodefs.available": "1m30s", "imagefs.inodesFree": "2h"},
        "evictionMinimumReclaim": {"nodefs.available": "500Mi", "imagefs.available": "2%"}
    })
}

fn valid_pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web-0", "namespace": "shop", "uid": "5f1c-4e2a"},
        "spec": {
            "nodeName": "node-1",
            "containers": [{"name": "web", "image": "nginx"}],
            "volumes": [
                {"name": "data", "persistentVolumeClaim": {"claimName": "data-web-0"}},
                {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Gi"}}
                }}}},
                {"name": "tmp", "emptyDir": {}}
            ]
        },
        "status": {"phase": "Running"}
    })
}

fn valid_pvc() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data-web-0", "namespace": "shop"},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "10Gi"}},
            "volumeName": "pv-data"
        },
        "status": {"phase": "Bound"}
    })
}

fn valid_pv() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": "pv-data"},
        "spec": {
            "capacity": {"storage": "10Gi"},
            "accessModes": ["ReadWriteOnce"],
            "hostPath": {"path": "/srv/data"},
            "volumeMode": "Filesystem",
            "claimRef": {"namespace": "shop", "name": "data-web-0"}
        }
    })
}

// ---- kubelet's command line and drop-ins (kubelet::flags, kubelet::effective) ----

use kubedf::kubelet::effective::{Document, Layers, effective};
use kubedf::kubelet::flags::{Setting, apply, parse};
use kubedf::sources::kubelet_config::Host;

/// A kubelet scalar flag and a value it accepts.
fn scalar_flag() -> impl Strategy<Value = (Setting, String)> {
    prop_oneof![
        (0i32..=100).prop_map(|n| (Setting::ImageGcHighThreshold, n.to_string())),
        (0i32..=100).prop_map(|n| (Setting::ImageGcLowThreshold, n.to_string())),
        // Any text: quotes, spaces, '=', ',' and leading dashes pass
        // through both forms unchanged (argv has no quoting left in it).
        any::<String>()
            .prop_filter("no NUL in argv", |s| !s.contains('\0'))
            .prop_map(|s| (Setting::ContainerRuntimeEndpoint, s)),
        (1u32..100_000).prop_map(|s| (Setting::VolumeStatsAggPeriod, format!("{s}s"))),
    ]
}

/// Flags kubedf does not know, in the shapes kubelet command lines have.
fn unknown_flag() -> impl Strategy<Value = Vec<String>> {
    prop_oneof![
        "[a-z][a-z-]{0,12}".prop_map(|n| vec![format!("--x-{n}")]),
        ("[a-z][a-z-]{0,12}", "[a-zA-Z0-9/.:=,]{0,12}")
            .prop_map(|(n, v)| vec![format!("--x-{n}={v}")]),
        ("[a-z][a-z-]{0,12}", "[a-zA-Z0-9/.:][a-zA-Z0-9/.:=,]{0,12}")
            .prop_map(|(n, v)| vec![format!("--x-{n}"), v]),
        Just(vec!["-v".to_owned(), "4".to_owned()]),
    ]
}

/// One argument list: each known flag in a random form (`=` or separate,
/// `-` or `_` in its name), unknown flags in between.
fn command_line() -> impl Strategy<Value = (Vec<String>, Vec<(Setting, String)>)> {
    proptest::collection::vec(
        (scalar_flag(), any::<bool>(), any::<bool>(), unknown_flag()),
        0..12,
    )
    .prop_map(|items| {
        let mut argv = Vec::new();
        let mut known = Vec::new();
        for ((setting, value), equals, underscores, unknown) in items {
            argv.extend(unknown);
            let mut name = setting.flag().to_owned();
            if underscores {
                name = name.replace('-', "_");
            }
            if equals {
                argv.push(format!("--{name}={value}"));
            } else {
                argv.push(format!("--{name}"));
                argv.push(value.clone());
            }
            known.push((setting, value));
        }
        (argv, known)
    })
}

proptest! {
    #![proptest_config(config())]

    /// Both forms, `_` for `-`, unknown flags skipped, and the last of a
    /// repeated flag wins.
    #[test]
    fn kubelet_flags_in_either_form_last_one_wins((argv, known) in command_line()) {
        let args = parse(&argv).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&args.settings, &known);
        let mut obj = serde_json::Map::new();
        apply(&args.settings, &mut obj).map_err(|e| TestCaseError::fail(e.to_string()))?;
        for setting in Setting::ALL {
            let last = known.iter().rev().find(|(s, _)| *s == setting).map(|(_, v)| v);
            let got = obj.get(setting.field());
            match (last, got) {
                (None, None) => {}
                (Some(v), Some(Value::String(g))) => prop_assert_eq!(v, g),
                (Some(v), Some(Value::Number(n))) => prop_assert_eq!(v, &n.to_string()),
                (last, got) => prop_assert!(false, "{setting:?}: {last:?} vs {got:?}"),
            }
        }
    }

    /// A map flag replaces the whole map at its first occurrence and adds
    /// to it after; keys and values are trimmed; empty items are skipped.
    #[test]
    fn kubelet_map_flags_replace_then_accumulate(
        occurrences in proptest::collection::vec(
            proptest::collection::vec(("[a-z.]{1,8}", "[0-9]{1,3}%?", "[ ]{0,2}", any::<bool>()), 0..4),
            1..4,
        ),
    ) {
        let mut obj = serde_json::Map::new();
        obj.insert("evictionHard".into(), json!({"memory.available": "100Mi", "zzz": "1"}));
        let mut want = serde_json::Map::new();
        let mut settings = Vec::new();
        for items in &occurrences {
            let mut text = Vec::new();
            for (k, v, pad, empty_after) in items {
                text.push(format!("{pad}{k}{pad}<{pad}{v}{pad}"));
                if *empty_after {
                    text.push(String::new());
                }
                want.insert(k.clone(), Value::String(v.clone()));
            }
            settings.push((Setting::EvictionHard, text.join(",")));
        }
        apply(&settings, &mut obj).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&obj["evictionHard"], &Value::Object(want));
    }

    /// Drop-ins: only `.conf` files count, in WalkDir order (each
    /// directory's names sorted as bytes, subdirectories where their name
    /// sorts); the last one's value wins. The other files hold text that is
    /// not even YAML: reading one would fail the case.
    #[test]
    fn drop_ins_count_conf_files_only_in_walk_order(
        files in proptest::collection::btree_map(
            ("(sub/)?[0-9a-z-]{1,6}", prop_oneof![Just(".conf"), Just(".yaml"), Just(".conf.bak"), Just("")]),
            1u8..=100,
            1..10,
        ),
    ) {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = "/etc/kubernetes/kubelet.conf.d";
        let mut confs: Vec<(std::path::PathBuf, u8)> = Vec::new();
        for ((name, ext), high) in &files {
            let rel = format!("{name}{ext}");
            let file = root.path().join(dir.trim_start_matches('/')).join(&rel);
            // A name that is a file and a directory at once ("sub" and
            // "sub/x") keeps whichever came first.
            if std::fs::create_dir_all(file.parent().expect("parent")).is_err() || file.is_dir() {
                continue;
            }
            if *ext == ".conf" {
                let text = format!(
                    "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nimageGCHighThresholdPercent: {high}\nimageGCLowThresholdPercent: 0\n"
                );
                std::fs::write(&file, text).expect("write");
                confs.push((std::path::PathBuf::from(&rel), *high));
            } else {
                std::fs::write(&file, "key: [unclosed\n").expect("write");
            }
        }
        // A name may be both a file and a directory prefix; keep only the
        // files that exist as files.
        confs.retain(|(rel, _)| root.path().join(dir.trim_start_matches('/')).join(rel).is_file());
        // std's Path order compares component by component: WalkDir's order.
        confs.sort();
        let host = Host::new(root.path(), "/proc");
        let listed = host.drop_in_files(dir).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let want: Vec<String> = confs.iter().map(|(rel, _)| format!("{dir}/{}", rel.display())).collect();
        prop_assert_eq!(&listed, &want);
        let layers = Layers {
            drop_ins: listed
                .iter()
                .map(|p| Document {
                    path: p.clone(),
                    text: std::fs::read_to_string(root.path().join(p.trim_start_matches('/'))).expect("read"),
                })
                .collect(),
            ..Layers::default()
        };
        let cfg = effective(&layers, Path::new("kubelet")).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let high = confs.last().map_or(85, |(_, h)| i32::from(*h));
        prop_assert_eq!(cfg.image_gc.high_threshold_percent, high);
    }

    /// A drop-in that is not a KubeletConfiguration mapping is refused with
    /// an error naming the file, whatever its text.
    #[test]
    fn bad_drop_ins_name_the_file(s in any::<String>()) {
        let layers = Layers {
            drop_ins: vec![Document { path: "/etc/kubelet.conf.d/50-x.conf".into(), text: s.clone() }],
            ..Layers::default()
        };
        if let Err(e) = effective(&layers, Path::new("kubelet")) {
            let e = e.to_string();
            prop_assert!(e.contains("/etc/kubelet.conf.d/50-x.conf"), "{s:?}: {e}");
        } else {
            // Only a document with both apiVersion and kind passes.
            prop_assert!(s.contains("KubeletConfiguration"), "{s:?}");
        }
    }
}
