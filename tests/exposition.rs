//! The exposition: a golden file for a fixed snapshot, `kubedf metrics` on a
//! tmpfs of known size, and what happens on bad input.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use kubedf::exposition::Format;
use kubedf::model::Snapshot;
use kubedf::registry::Registry;
use testkit::*;

/// The golden node, shared with benches/render.rs.
fn fixed_snapshot() -> Snapshot {
    kubedf::fixtures::node()
}

/// Durations measured during the render vary; everything else is fixed.
fn normalize(text: &str) -> String {
    text.lines()
        .map(|l| {
            if l.starts_with("kubedf_scrape_collector_duration_seconds{") {
                let (series, _) = l.rsplit_once(' ').expect("value");
                format!("{series} <duration>")
            } else if l.starts_with("kubedf_build_info{") {
                "kubedf_build_info{version=\"<version>\"} 1".to_owned()
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// Compares a render with its golden file (UPDATE_GOLDEN=1 rewrites it).
fn check_golden(file: &str, rendered: &str) {
    let got = normalize(rendered);
    let golden = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(file);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &got).expect("write golden");
    }
    let want = std::fs::read_to_string(&golden).expect("golden file (UPDATE_GOLDEN=1 writes it)");
    assert!(
        got == want,
        "exposition differs from {} (UPDATE_GOLDEN=1 to accept):\n{}",
        golden.display(),
        diff(&want, &got)
    );
}

#[test]
fn golden_exposition_of_a_fixed_snapshot() {
    let registry = Registry::new(None).expect("registry");
    let rendered = registry.render(&fixed_snapshot());
    check_golden("exposition.txt", &rendered);
    assert!(rendered.ends_with("# EOF\n"));
    assert_eq!(
        normalize(&rendered),
        normalize(&registry.render_as(&fixed_snapshot(), Format::OpenMetrics100))
    );
}

#[test]
fn golden_text_exposition_of_a_fixed_snapshot() {
    let registry = Registry::new(None).expect("registry");
    let text = registry.render_as(&fixed_snapshot(), Format::Text);
    check_golden("exposition-text-0.0.4.txt", &text);
    assert!(!text.contains("# EOF"), "no # EOF in the text format");
    assert!(!text.contains("# UNIT"), "no # UNIT in the text format");
    // The same samples as the OpenMetrics one, line for line.
    let openmetrics = registry.render(&fixed_snapshot());
    let series = |t: &str| -> Vec<String> {
        normalize(t)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                // Floats differ only in OpenMetrics' `.0`.
                l.strip_suffix(".0").unwrap_or(l).to_owned()
            })
            .collect()
    };
    assert_eq!(series(&text), series(&openmetrics));
}

#[test]
fn label_values_and_help_are_escaped_per_format() {
    let snapshot = kubedf::fixtures::first_pvc_renamed("shop", "we\\ird\"claim\nname");
    let registry = Registry::new(None).expect("registry");
    for format in [Format::Text, Format::OpenMetrics100] {
        let text = registry.render_as(&snapshot, format);
        assert!(
            text.contains(
                "kubelet_volume_stats_capacity_bytes{namespace=\"shop\",persistentvolumeclaim=\"we\\\\ird\\\"claim\\nname\"} 10737418240\n"
            ),
            "{format:?}: {text}"
        );
        if format == Format::Text
            && prerequisites(
                "label_values_and_help_are_escaped_per_format (promtool)",
                need_tools(&["promtool"]),
            )
        {
            promtool_check(&text).unwrap();
        }
    }
}

fn diff(want: &str, got: &str) -> String {
    let w: Vec<&str> = want.lines().collect();
    let g: Vec<&str> = got.lines().collect();
    let mut out = String::new();
    for i in 0..w.len().max(g.len()) {
        let (a, b) = (
            w.get(i).copied().unwrap_or("<none>"),
            g.get(i).copied().unwrap_or("<none>"),
        );
        if a != b {
            out.push_str(&format!("line {}:\n  want {a}\n  got  {b}\n", i + 1));
        }
    }
    out
}

#[test]
fn fixed_snapshot_figures_follow_kubelet() {
    let text = Registry::new(None)
        .expect("registry")
        .render(&fixed_snapshot());
    // usage 20% from the real /stats/summary figures.
    assert_eq!(
        value(&text, "kubedf_image_gc_usage_percent", &[]).as_deref(),
        Some("20")
    );
    assert_eq!(
        value(&text, "kubedf_image_gc_bytes_to_free", &[]).as_deref(),
        Some("0")
    );
    // 15% of 21462233088 through float32, as kubelet.
    assert_eq!(
        value(
            &text,
            "kubedf_eviction_threshold",
            &[("signal", "imagefs.available"), ("kind", "hard")]
        )
        .as_deref(),
        Some("3219335091")
    );
    // Split image filesystem: containerfs follows nodefs (10% of 100 GiB).
    assert_eq!(
        value(
            &text,
            "kubedf_eviction_threshold",
            &[("signal", "containerfs.available"), ("kind", "hard")]
        )
        .as_deref(),
        value(
            &text,
            "kubedf_eviction_threshold",
            &[("signal", "nodefs.available"), ("kind", "hard")]
        )
        .as_deref()
    );
    // The partial evictionHard names no imagefs.inodesFree: no series.
    assert_eq!(
        value(
            &text,
            "kubedf_eviction_threshold",
            &[("signal", "imagefs.inodesFree")]
        ),
        None
    );
    assert_eq!(
        value(
            &text,
            "kubedf_eviction_signal_available",
            &[("signal", "pid.available")]
        )
        .as_deref(),
        Some("253564")
    );
    assert_eq!(
        value(
            &text,
            "kubedf_eviction_threshold",
            &[("signal", "pid.available"), ("kind", "hard")]
        )
        .as_deref(),
        Some("1000")
    );
    assert!(text.contains("# HELP kubedf_imagefs_capacity_bytes [ALPHA] "));
    // kubelet's names, HELP and labels, so kubernetes-mixin works unchanged.
    assert!(text.contains(
        "# HELP kubelet_volume_stats_capacity_bytes [ALPHA] Capacity in bytes of the volume\n"
    ));
    assert!(text.contains(
        "# HELP kubelet_volume_stats_inodes_used [ALPHA] Number of used inodes in the volume\n"
    ));
    assert_eq!(
        value(
            &text,
            "kubelet_volume_stats_used_bytes",
            &[("namespace", "shop"), ("persistentvolumeclaim", "uploads")]
        )
        .as_deref(),
        Some("52428800")
    );
    let labels: Vec<String> = samples(&text)
        .into_iter()
        .filter(|l| l.name.starts_with("kubelet_volume_stats_"))
        .map(|l| l.labels.keys().cloned().collect::<Vec<_>>().join(","))
        .collect();
    assert!(
        labels
            .iter()
            .all(|l| l == "namespace,persistentvolumeclaim"),
        "{labels:?}"
    );
    // The hung volume: no stats, an error saying why.
    assert_eq!(
        value(
            &text,
            "kubelet_volume_stats_capacity_bytes",
            &[("persistentvolumeclaim", "nfs-share")]
        ),
        None
    );
    assert_eq!(
        value(
            &text,
            "kubedf_volume_stats_error",
            &[
                ("persistentvolumeclaim", "nfs-share"),
                ("reason", "timeout")
            ]
        )
        .as_deref(),
        Some("1")
    );
    assert_eq!(
        value(
            &text,
            "kubelet_volume_stats_used_bytes",
            &[("persistentvolumeclaim", "raw")]
        )
        .as_deref(),
        Some("0"),
        "block volumes: capacity only, the rest 0"
    );
    assert!(!has_family(
        &text,
        "kubelet_volume_stats_health_status_abnormal"
    ));
}

#[test]
fn a_failed_source_leaves_its_series_out_and_says_so() {
    let mut snapshot = fixed_snapshot();
    Arc::make_mut(&mut snapshot.node).runtime = Some(Err(
        "CRI unix:///run/containerd/containerd.sock: connection refused".into(),
    ));
    let text = Registry::new(None).expect("registry").render(&snapshot);
    for family in [
        "kubedf_imagefs_used_bytes",
        "kubedf_containerfs_used_bytes",
        "kubedf_cri_info",
        "kubedf_image_gc_usage_percent",
    ] {
        assert!(!has_family(&text, family), "{family} should be left out");
    }
    assert!(has_family(&text, "kubedf_nodefs_capacity_bytes"));
    assert!(has_family(&text, "kubedf_image_gc_high_threshold_percent"));
    assert_eq!(
        value(
            &text,
            "kubedf_scrape_collector_success",
            &[("collector", "imagefs")]
        )
        .as_deref(),
        Some("0")
    );
    assert_eq!(
        value(
            &text,
            "kubedf_scrape_collector_success",
            &[("collector", "nodefs")]
        )
        .as_deref(),
        Some("1")
    );
    assert_eq!(
        value(
            &text,
            "kubedf_scrape_collector_success",
            &[("collector", "eviction")]
        )
        .as_deref(),
        Some("0")
    );
    assert!(
        value(
            &text,
            "kubedf_eviction_signal_available",
            &[("signal", "imagefs.available")]
        )
        .is_none()
    );
    assert!(
        value(
            &text,
            "kubedf_eviction_signal_available",
            &[("signal", "nodefs.available")]
        )
        .is_some()
    );
}

#[test]
fn zero_capacity_is_reported_as_a_failure_not_a_division() {
    let mut snapshot = fixed_snapshot();
    if let Some(Ok(rt)) = &mut Arc::make_mut(&mut snapshot.node).runtime
        && let Ok(fs) = &mut rt.image_fs
    {
        fs.usage.capacity_bytes = 0;
        fs.usage.available_bytes = 0;
    }
    let text = Registry::new(None).expect("registry").render(&snapshot);
    assert!(!has_family(&text, "kubedf_image_gc_usage_percent"));
    assert_eq!(
        value(
            &text,
            "kubedf_scrape_collector_success",
            &[("collector", "image_gc")]
        )
        .as_deref(),
        Some("0")
    );
}

#[test]
fn golden_exposition_passes_promtool() {
    if !prerequisites(
        "golden_exposition_passes_promtool",
        need_tools(&["promtool"]),
    ) {
        return;
    }
    let registry = Registry::new(None).expect("registry");
    promtool_check(&registry.render(&fixed_snapshot())).unwrap();
    promtool_check(&registry.render_as(&fixed_snapshot(), Format::Text)).unwrap();
}

#[test]
fn df_shows_headroom_and_the_dropped_defaults() {
    let text = kubedf::df::render(&fixed_snapshot());
    assert!(text.contains("imagefs usage is 20%"), "{text}");
    assert!(text.contains("imagefs.available"), "{text}");
    assert!(
        text.contains(
            "warning: evictionHard in /var/lib/kubelet/config.yaml does not name imagefs.inodesFree"
        ),
        "{text}"
    );
    assert!(text.contains("containerfs"), "{text}");
    assert!(text.contains("shop/uploads"), "{text}");
    assert!(text.contains("walk"), "{text}");
    assert!(
        text.contains("shop/nfs-share") && text.contains("statfs (timeout)"),
        "{text}"
    );
}

#[test]
fn df_shows_thresholds_as_written() {
    let text = kubedf::df::render(&fixed_snapshot());
    // 15% is the float32 0.15: shown as 15%, not 15.000001%.
    assert!(text.contains("(15%)"), "{text}");
    assert!(text.contains("(10%)") && text.contains("(20%)"), "{text}");
    assert!(!text.contains("15.000001"), "{text}");
    assert!(text.contains("(1000)"), "a quantity as it is: {text}");
}

#[test]
fn df_survives_odd_figures() {
    let mut snapshot = fixed_snapshot();
    // A filesystem whose used and available add up past u64 (a broken FUSE
    // driver), and more processes than PIDs (a racy /proc): df says what
    // it sees instead of overflowing.
    let node = Arc::make_mut(&mut snapshot.node);
    if let Some(Ok(fs)) = &mut node.nodefs {
        fs.usage.used_bytes = u64::MAX;
        fs.usage.available_bytes = 4096;
    }
    node.rlimit = Some(Ok(kubedf::model::Rlimit {
        maxpid: 10,
        curproc: i64::MAX,
    }));
    let text = kubedf::df::render(&snapshot);
    let pids = text
        .lines()
        .find(|l| l.starts_with("pid.available"))
        .expect("pid.available row");
    assert!(pids.contains("MET by 9.2E"), "{pids}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("nodefs ") && l.contains("100%")),
        "{text}"
    );
}

#[test]
fn df_says_each_error_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = "/nonexistent/kubedf/df-once.sock";
    let out = kubedf!().run(&[
        "df",
        "--kubelet.root-dir",
        dir.path().to_str().expect("utf-8"),
        "--cri.endpoint",
        &format!("unix://{socket}"),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let said = stdout.matches(socket).count() + stderr.matches(socket).count();
    assert_eq!(said, 1, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("error: imagefs: "), "{stdout}");
}

#[test]
fn metrics_on_a_tmpfs_kubelet_root_equals_its_statfs() {
    let test = "metrics_on_a_tmpfs_kubelet_root_equals_its_statfs";
    if !prerequisites(test, need_root_and(&["promtool"])) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("kubelet");
    let tmpfs = Tmpfs::mount(&root, 64 << 20);
    std::fs::write(tmpfs.path.join("data"), vec![7u8; 3 << 20]).expect("write data");
    for i in 0..10 {
        std::fs::create_dir(tmpfs.path.join(format!("d{i}"))).expect("mkdir");
    }
    let root_str = root.to_str().expect("utf-8 path");
    let out = kubedf!().run(&[
        "metrics",
        "--kubelet.root-dir",
        root_str,
        "--kubelet.config",
        NO_KUBELET_CONFIG,
        "--cri.endpoint",
        NO_RUNTIME,
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "kubedf metrics failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = statfs_figures(&root);
    assert_eq!(want[0], 64 << 20, "the tmpfs has the size it was given");
    for (name, want) in FS_FIGURES.iter().zip(want) {
        let got = value(
            &text,
            &format!("kubedf_nodefs_{name}"),
            &[("path", root_str)],
        );
        assert_eq!(got, Some(want.to_string()), "kubedf_nodefs_{name}");
    }
    // The runtime is missing: its series are left out, the rest is served.
    assert!(!has_family(&text, "kubedf_imagefs_capacity_bytes"));
    assert_eq!(
        value(&text, "kubedf_source_up", &[("source", "cri")]).as_deref(),
        Some("0")
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/kubedf/cri.sock"));
    promtool_check(&text).unwrap();
    drop(tmpfs);
}

#[test]
fn metrics_exits_non_zero_only_when_nothing_was_collected() {
    let out = kubedf!().run(&[
        "metrics",
        "--kubelet.root-dir",
        "/nonexistent/kubelet",
        "--path.procfs",
        "/nonexistent/proc",
        "--cri.endpoint",
        NO_RUNTIME,
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/proc"), "{stderr}");
    assert!(stderr.contains("/nonexistent/kubelet"), "{stderr}");
    // The exposition is still printed: success 0 everywhere.
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        value(
            &text,
            "kubedf_scrape_collector_success",
            &[("collector", "rlimit")]
        )
        .as_deref(),
        Some("0")
    );
}

#[test]
fn a_bad_kubelet_config_is_a_startup_error_naming_file_and_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("config.yaml");
    std::fs::write(
        &file,
        "kind: KubeletConfiguration\nevictionHard:\n  nodefs.available: plenty\n",
    )
    .expect("write");
    let out = kubedf!().run(&["metrics", "--kubelet.config", file.to_str().expect("utf-8")]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(file.to_str().expect("utf-8")), "{stderr}");
    assert!(stderr.contains("nodefs.available"), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "nothing is served from a config kubedf cannot read"
    );

    std::fs::write(&file, "imageGCHighThresholdPercent: [90]\n").expect("write");
    let out = kubedf!().run(&["df", "--kubelet.config", file.to_str().expect("utf-8")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("imageGCHighThresholdPercent"));
}

#[test]
fn bad_flags_are_refused() {
    let out = kubedf!().run(&["metrics", "--cri.endpoint", "tcp://127.0.0.1:1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--cri.endpoint"));
    let out = kubedf!().run(&["metrics", "--no-collector.nonesuch"]);
    assert!(!out.status.success());
}

#[test]
fn snapshot_times_are_plausible() {
    // Guards the fixed snapshot against drifting into the future of this machine.
    assert!(fixed_snapshot().taken_at() <= SystemTime::now());
}

/// `--volume-stats.kubelet-names`: which PVCs of the fixed snapshot (a CSI
/// filesystem, a hostPath walk, a CSI block volume) are under kubelet's names
/// and which under kubedf's, with the same figures and labels.
#[test]
fn kubelet_names_choose_the_family_of_each_pvc() {
    use kubedf::collector::Options;
    use kubedf::collector::volume_stats::KubeletNames;

    let render = |names| {
        Registry::with_options(
            None,
            &Options {
                volume_kubelet_names: names,
            },
        )
        .expect("registry")
        .render(&fixed_snapshot())
    };
    let claims = |text: &str, family: &str| -> Vec<(String, String)> {
        samples(text)
            .into_iter()
            .filter(|l| l.name == family)
            .map(|l| (l.labels["persistentvolumeclaim"].clone(), l.value.clone()))
            .collect()
    };
    let all = render(KubeletNames::All);
    let everything = claims(&all, "kubelet_volume_stats_used_bytes");
    assert_eq!(everything.len(), 3, "{everything:?}");
    assert!(!has_family(&all, "kubedf_volume_stats_used_bytes"));
    assert_eq!(
        normalize(&all),
        normalize(
            &Registry::new(None)
                .expect("registry")
                .render(&fixed_snapshot())
        ),
        "all is the default"
    );

    let uncovered = render(KubeletNames::Uncovered);
    let hostpath = ("uploads".to_owned(), "52428800".to_owned());
    for suffix in FS_FIGURES {
        let kubelet = claims(&uncovered, &format!("kubelet_volume_stats_{suffix}"));
        let own = claims(&uncovered, &format!("kubedf_volume_stats_{suffix}"));
        assert_eq!(
            kubelet.iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>(),
            ["uploads"],
            "{suffix}: only the hostPath PVC under kubelet's name"
        );
        let mut own_claims: Vec<&str> = own.iter().map(|(c, _)| c.as_str()).collect();
        own_claims.sort_unstable();
        assert_eq!(own_claims, ["data-db-0", "raw"], "{suffix}");
        // Each figure is the one `all` reports under kubelet's name.
        let before = claims(&all, &format!("kubelet_volume_stats_{suffix}"));
        for pvc in kubelet.iter().chain(&own) {
            assert!(before.contains(pvc), "{suffix}: {pvc:?} not in {before:?}");
        }
    }
    assert_eq!(
        claims(&uncovered, "kubelet_volume_stats_used_bytes"),
        [hostpath]
    );
    // Same labels on both families.
    for l in samples(&uncovered).iter().filter(|l| {
        l.name.starts_with("kubedf_volume_stats_") && l.name != "kubedf_volume_stats_error"
    }) {
        let mut keys: Vec<&str> = l.labels.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["namespace", "persistentvolumeclaim"], "{}", l.name);
        assert_eq!(l.labels["namespace"], "shop");
    }
    promtool_check(&uncovered).expect("promtool check metrics");

    let none = render(KubeletNames::None);
    assert!(!has_family(&none, "kubelet_volume_stats_used_bytes"));
    assert_eq!(claims(&none, "kubedf_volume_stats_used_bytes").len(), 3);
}
