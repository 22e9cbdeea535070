//! The exposition: a golden file for a fixed snapshot, `kubedf metrics` on a
//! tmpfs of known size, and what happens on bad input.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kubedf::kubelet::config::KubeletConfig;
use kubedf::model::FsUsage;
use kubedf::model::Rlimit;
use kubedf::model::RuntimeVersion;
use kubedf::model::SourceId;
use kubedf::model::{Filesystem, NodeSample, Reading, Runtime, Snapshot, SourceStatus};
use kubedf::model::{Method, Reason, VolumeError, VolumeMode};
use kubedf::model::{VolumeRow, VolumeTable};
use kubedf::registry::Registry;
use support::*;

/// A node with a split image filesystem, a dedicated imagefs and custom
/// thresholds, figures taken from a real node's /stats/summary.
fn fixed_snapshot() -> Snapshot {
    let config = KubeletConfig::parse(
        "kind: KubeletConfiguration\n\
         imageGCHighThresholdPercent: 85\n\
         imageGCLowThresholdPercent: 80\n\
         evictionHard:\n  nodefs.available: 10%\n  imagefs.available: 15%\n  nodefs.inodesFree: 5%\n  pid.available: 1k\n\
         evictionSoft:\n  imagefs.available: 20%\nevictionSoftGracePeriod:\n  imagefs.available: 1m\n",
        Path::new("/var/lib/kubelet/config.yaml"),
    )
    .expect("valid config");
    let at = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
    let status = |source, up: bool| SourceStatus {
        source,
        up,
        last_success: Some(at),
        duration: Some(Duration::from_millis(3)),
        error: None,
    };
    let node = NodeSample {
        taken_at: at,
        runtime: Some(Ok(Runtime {
            version: RuntimeVersion {
                runtime_name: "containerd".into(),
                runtime_version: "v1.7.20".into(),
                runtime_api_version: "v1".into(),
            },
            image_fs: Ok(Filesystem {
                path: "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs".into(),
                usage: FsUsage {
                    capacity_bytes: 21_462_233_088,
                    available_bytes: 17_310_752_768,
                    used_bytes: 2_846_437_376,
                    inodes: 1_310_720,
                    inodes_free: 1_227_393,
                    inodes_used: 41_513,
                },
                device: 2049,
            }),
            container_fs: Some(Ok(Filesystem {
                path: "/var/lib/containers/storage/overlay-containers".into(),
                usage: FsUsage {
                    capacity_bytes: 107_374_182_400,
                    available_bytes: 96_636_764_160,
                    used_bytes: 524_288_000,
                    inodes: 6_553_600,
                    inodes_free: 6_500_000,
                    inodes_used: 2_048,
                },
                device: 2065,
            })),
        })),
        nodefs: Some(Ok(Filesystem {
            path: "/var/lib/kubelet".into(),
            usage: FsUsage {
                capacity_bytes: 107_374_182_400,
                available_bytes: 96_636_764_160,
                used_bytes: 10_737_418_240,
                inodes: 6_553_600,
                inodes_free: 6_500_000,
                inodes_used: 53_600,
            },
            device: 2065,
        })),
        rlimit: Some(Ok(Rlimit {
            maxpid: 254_751,
            curproc: 1_187,
        })),
        sources: vec![
            status(SourceId::Cri, true),
            status(SourceId::ImageFs, true),
            status(SourceId::NodeFs, true),
            status(SourceId::Procfs, true),
        ],
    };
    let mut snapshot = Snapshot::new(Arc::new(config), node, Some(fixed_volumes(at)));
    snapshot.pods = Some(Arc::new(fixed_pods(at)));
    snapshot
}

fn fixed_volumes(at: SystemTime) -> VolumeTable {
    let row = |claim: &str, pv: &str, driver: &str, mode, method, stats| {
        let reading = Reading {
            method: Some(method),
            stats: Some(stats),
        };
        Arc::new(
            VolumeRow::new("shop", claim, &format!("{claim}-pod"), reading)
                .with_pv(pv, driver, mode),
        )
    };
    let fs = |capacity: u64, used: u64| FsUsage {
        capacity_bytes: capacity,
        available_bytes: capacity - used,
        used_bytes: used,
        inodes: 655_360,
        inodes_free: 655_000,
        inodes_used: 360,
    };
    VolumeTable {
        rows: vec![
            row(
                "data-db-0",
                "pvc-6d1c",
                "ebs.csi.aws.com",
                VolumeMode::Filesystem,
                Method::Statfs,
                Ok(fs(10_737_418_240, 1_073_741_824)),
            ),
            row(
                "uploads",
                "pvc-77aa",
                "kubernetes.io/host-path",
                VolumeMode::Filesystem,
                Method::Walk,
                Ok(fs(2_147_483_648, 52_428_800)),
            ),
            row(
                "raw",
                "pvc-0b0e",
                "ebs.csi.aws.com",
                VolumeMode::Block,
                Method::Block,
                Ok(FsUsage {
                    capacity_bytes: 5_368_709_120,
                    ..FsUsage::default()
                }),
            ),
            row(
                "nfs-share",
                "pvc-4e21",
                "kubernetes.io/nfs",
                VolumeMode::Filesystem,
                Method::Statfs,
                Err(VolumeError::new(
                    Reason::Timeout,
                    "statfs did not answer within 5s",
                )),
            ),
        ],
        source: SourceStatus {
            source: SourceId::Kubernetes,
            up: true,
            last_success: Some(at),
            duration: None,
            error: None,
        },
    }
}

/// Durations measured during the render vary; everything else is fixed.
/// One measured pod with a limit, an emptyDir with a sizeLimit and a
/// configMap, and one pod whose rootfs the runtime does not report.
fn fixed_pods(at: SystemTime) -> kubedf::model::pod::PodTable {
    use kubedf::model::pod::VolumeKind;
    use kubedf::model::pod::{
        ContainerRow, EphemeralVolumeRow, Failure, PodRow, PodTable, Reason as PodReason, Usage,
    };
    let usage = |bytes, inodes| Usage {
        bytes,
        inodes,
        time: at,
    };
    let pod = |name: &str, rootfs: Result<Usage, Failure>| PodRow {
        namespace: "shop".into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        limit: Some(2 << 30),
        container_limits: vec![("app".into(), 2 << 30)],
        containers: vec![ContainerRow {
            name: "app".into(),
            rootfs,
            logs: Some(Ok(usage(1_052_672, 3))),
        }],
        containers_pending: false,
        containers_error: None,
        volumes: vec![
            EphemeralVolumeRow {
                name: "cache".into(),
                kind: VolumeKind::EmptyDir,
                size_limit: Some(1 << 30),
                usage: Some(Ok(usage(524_288_000, 1_001))),
            },
            EphemeralVolumeRow {
                name: "config".into(),
                kind: VolumeKind::ConfigMap,
                size_limit: None,
                usage: Some(Ok(usage(12_288, 5))),
            },
        ],
        pod_logs: Some(Ok(usage(0, 0))),
        etc_hosts: Some(Ok(usage(4_096, 1))),
        claims: vec![],
    };
    PodTable {
        rows: vec![
            pod("web-0", Ok(usage(73_728, 12))),
            pod(
                "web-1",
                Err(Failure::new(
                    PodReason::NoCriStats,
                    "the runtime reports no writable layer usage",
                )),
            ),
        ],
        source: SourceStatus {
            source: SourceId::Kubernetes,
            up: true,
            last_success: Some(at),
            duration: None,
            error: None,
        },
    }
}

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

#[test]
fn golden_exposition_of_a_fixed_snapshot() {
    let registry = Registry::new(None).expect("registry");
    let rendered = registry.render(&fixed_snapshot());
    let got = normalize(&rendered);
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/exposition.txt");
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
    assert!(rendered.ends_with("# EOF\n"));
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
        (!have_tool("promtool")).then(|| {
            "`promtool` is not installed (the README's test command installs it)".to_owned()
        }),
    ) {
        return;
    }
    let text = Registry::new(None)
        .expect("registry")
        .render(&fixed_snapshot());
    promtool_check(&text).unwrap();
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
    let out = run_kubedf(&[
        "metrics",
        "--kubelet.root-dir",
        root_str,
        "--kubelet.config",
        "/nonexistent/config.yaml",
        "--cri.endpoint",
        "unix:///nonexistent/kubedf/cri.sock",
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
    let out = run_kubedf(&[
        "metrics",
        "--kubelet.root-dir",
        "/nonexistent/kubelet",
        "--path.procfs",
        "/nonexistent/proc",
        "--cri.endpoint",
        "unix:///nonexistent/kubedf/cri.sock",
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
    let out = run_kubedf(&["metrics", "--kubelet.config", file.to_str().expect("utf-8")]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(file.to_str().expect("utf-8")), "{stderr}");
    assert!(stderr.contains("nodefs.available"), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "nothing is served from a config kubedf cannot read"
    );

    std::fs::write(&file, "imageGCHighThresholdPercent: [90]\n").expect("write");
    let out = run_kubedf(&["df", "--kubelet.config", file.to_str().expect("utf-8")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("imageGCHighThresholdPercent"));
}

#[test]
fn bad_flags_are_refused() {
    let out = run_kubedf(&["metrics", "--cri.endpoint", "tcp://127.0.0.1:1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--cri.endpoint"));
    let out = run_kubedf(&["metrics", "--no-collector.nonesuch"]);
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
