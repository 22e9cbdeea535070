//! Start-up on bad or missing input, as `kubedf metrics` sees it: config
//! files kubedf must not read, a missing --path.rootfs, a missing kubelet
//! config (defaults, said out loud), volume stats that cannot run (said in
//! the exposition), and logs without colour codes when stderr is a pipe.

use std::time::{Duration, Instant};

use testkit::*;

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_kubelet_config_that_is_not_a_regular_file_is_refused_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("config.yaml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let fifo = fifo.to_str().expect("utf-8");
    for (file, want) in [
        ("/dev/zero", "not a regular file (a character device)"),
        (fifo, "not a regular file (a FIFO)"),
    ] {
        let start = Instant::now();
        // run_kubedf kills a kubedf that runs past 60 s: a hang fails here.
        let out = kubedf!().run(&[
            "metrics",
            "--kubelet.config",
            file,
            "--cri.endpoint",
            NO_RUNTIME,
        ]);
        let took = start.elapsed();
        let stderr = stderr_of(&out);
        assert!(!out.status.success(), "{file}: {stderr}");
        assert!(
            stderr.contains(file) && stderr.contains(want),
            "{file}: {stderr}"
        );
        assert!(took < Duration::from_secs(50), "{file}: took {took:?}");
        assert!(out.stdout.is_empty(), "{file}: nothing is served");
    }
}

#[test]
fn a_missing_rootfs_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("plain");
    std::fs::write(&file, "").expect("write");
    for (rootfs, want) in [
        ("/nonexistent/kubedf/host", "No such file or directory"),
        (file.to_str().expect("utf-8"), "not a directory"),
    ] {
        let out = kubedf!().run(&[
            "metrics",
            "--path.rootfs",
            rootfs,
            "--cri.endpoint",
            NO_RUNTIME,
        ]);
        let stderr = stderr_of(&out);
        assert!(!out.status.success(), "{rootfs}: {stderr}");
        assert!(
            stderr.contains(&format!("--path.rootfs {rootfs}")) && stderr.contains(want),
            "{rootfs}: {stderr}"
        );
    }
}

#[test]
fn the_kubelet_config_in_force_is_logged_and_exposed() {
    let out = kubedf!().run(&[
        "metrics",
        "--kubelet.config",
        "/nonexistent/kubedf/config.yaml",
        "--cri.endpoint",
        NO_RUNTIME,
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    let stderr = stderr_of(&out);
    assert_eq!(
        value(
            &text,
            "kubedf_kubelet_config_info",
            &[
                ("path", "/nonexistent/kubedf/config.yaml"),
                ("source", "defaults")
            ]
        )
        .as_deref(),
        Some("1"),
        "{text}"
    );
    assert!(
        stderr.contains("kubelet's defaults are in force"),
        "{stderr}"
    );
    assert!(
        stderr.contains("/nonexistent/kubedf/config.yaml"),
        "{stderr}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, "kind: KubeletConfiguration\n").expect("write");
    let file = file.to_str().expect("utf-8");
    let out = kubedf!().run(&[
        "metrics",
        "--kubelet.config",
        file,
        "--cri.endpoint",
        NO_RUNTIME,
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        value(
            &text,
            "kubedf_kubelet_config_info",
            &[("path", file), ("source", "file")]
        )
        .as_deref(),
        Some("1"),
        "{text}"
    );
    assert!(stderr_of(&out).contains("kubelet config in force"));
    promtool_check(&text).unwrap();
}

#[test]
fn volume_stats_that_cannot_run_say_so_in_the_exposition() {
    let dir = tempfile::tempdir().expect("tempdir");
    let garbage = dir.path().join("garbage.kubeconfig");
    std::fs::write(&garbage, "clusters: [unclosed\n").expect("write");
    let missing_ca = dir.path().join("missing-ca.kubeconfig");
    std::fs::write(
        &missing_ca,
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n\
         clusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:1\n    certificate-authority: /nonexistent/kubedf/ca.crt\n\
         contexts:\n- name: c\n  context:\n    cluster: c\n    user: u\n\
         users:\n- name: u\n  user:\n    token: t\n",
    )
    .expect("write");
    let garbage = garbage.to_str().expect("utf-8");
    let missing_ca = missing_ca.to_str().expect("utf-8");
    let success = |text: &str| {
        value(
            text,
            "kubedf_scrape_collector_success",
            &[("collector", "volume_stats")],
        )
    };
    for args in [
        vec!["--node-name", "node-1", "--kubeconfig", garbage],
        vec!["--node-name", "node-1", "--kubeconfig", missing_ca],
        vec!["--kubeconfig", garbage],
    ] {
        let mut all = vec!["metrics", "--cri.endpoint", NO_RUNTIME];
        all.extend(&args);
        let out = kubedf!().run(&all);
        let text = String::from_utf8_lossy(&out.stdout);
        let stderr = stderr_of(&out);
        assert_eq!(
            success(&text).as_deref(),
            Some("0"),
            "{args:?}: {text}\n{stderr}"
        );
        assert_eq!(
            stderr.matches("volume_stats collector failing").count(),
            1,
            "{args:?}: the reason is logged once: {stderr}"
        );
        promtool_check(&text).unwrap();
    }
    // Switched off on purpose: the collector is left out, not failing.
    let out = kubedf!().run(&[
        "metrics",
        "--cri.endpoint",
        NO_RUNTIME,
        "--volume-stats-agg-period",
        "0",
    ]);
    assert_eq!(success(&String::from_utf8_lossy(&out.stdout)), None);
}

#[test]
fn logs_carry_no_colour_codes_when_stderr_is_a_pipe() {
    let out = kubedf!().run(&[
        "metrics",
        "--cri.endpoint",
        NO_RUNTIME,
        "--log.format",
        "text",
    ]);
    let stderr = stderr_of(&out);
    assert!(
        stderr.contains("WARN") || stderr.contains("INFO"),
        "{stderr}"
    );
    assert!(!stderr.contains('\u{1b}'), "escape codes in: {stderr:?}");
}

#[test]
fn metric_allow_and_deny_lists_keep_kubedfs_own_families_and_refuse_bad_input() {
    let base = [
        "metrics",
        "--kubelet.config",
        NO_KUBELET_CONFIG,
        "--cri.endpoint",
        NO_RUNTIME,
    ];
    let help_names = |text: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix("# HELP "))
            .filter_map(|l| l.split(' ').next())
            .map(str::to_owned)
            .collect()
    };

    // Only the PID families, plus kubedf's own; the collectors with no family
    // kept are not run, and the log says so.
    let out = kubedf!().run(&[&base[..], &["--metric-allowlist", " kubedf_rlimit_ , "]].concat());
    let text = String::from_utf8_lossy(&out.stdout);
    let stderr = stderr_of(&out);
    let families = help_names(&text);
    assert!(
        families.iter().any(|f| f.starts_with("kubedf_rlimit_")),
        "{text}"
    );
    for f in &families {
        assert!(
            f.starts_with("kubedf_rlimit_")
                || f.starts_with("kubedf_scrape_")
                || f.starts_with("kubedf_source_")
                || f == "kubedf_build_info"
                || f == "kubedf_kubelet_config_info",
            "{f} is not kept by --metric-allowlist=kubedf_rlimit_"
        );
    }
    assert!(!text.contains("collector=\"nodefs\""), "nodefs ran: {text}");
    assert!(
        stderr.contains("no family of this collector is exported") && stderr.contains("nodefs"),
        "{stderr}"
    );
    promtool_check(&text).unwrap();

    // A denylist drops just what it matches.
    let out = kubedf!().run(&[&base[..], &["--metric-denylist", "curproc$"]].concat());
    let text = String::from_utf8_lossy(&out.stdout);
    let families = help_names(&text);
    assert!(
        families.iter().any(|f| f == "kubedf_rlimit_maxpid"),
        "{text}"
    );
    assert!(!text.contains("kubedf_rlimit_curproc"), "{text}");

    // Both at once, and an expression that does not parse: refused, named.
    let out = kubedf!().run(
        &[
            &base[..],
            &[
                "--metric-allowlist",
                "kubedf_nodefs",
                "--metric-denylist",
                "inodes",
            ],
        ]
        .concat(),
    );
    assert!(!out.status.success());
    let stderr = stderr_of(&out);
    assert!(
        stderr.contains("--metric-allowlist and --metric-denylist are both set"),
        "{stderr}"
    );
    let out = kubedf!().run(&[&base[..], &["--metric-denylist", "kubedf_(nodefs"]].concat());
    assert!(!out.status.success());
    let stderr = stderr_of(&out);
    assert!(
        stderr.contains("--metric-denylist") && stderr.contains("kubedf_(nodefs"),
        "{stderr}"
    );
}
