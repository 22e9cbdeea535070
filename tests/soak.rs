//! The soak test: a churning node. Pods and PVCs come and go through the fake
//! API's watch, their tmpfs volumes are mounted and unmounted, the API's
//! watches are cut and its history compacted, while Prometheus-style scrapes
//! (gzip, OpenMetrics Accept) run. Bounded: KUBEDF_SOAK_SECS seconds (default
//! 60; the benchmark's long mode sets more). Figures are printed at the end
//! and recorded in docs/soak.md.
//!
//! Passes when every scrape answers 200 and sampled scrapes are
//! promtool-clean, no PVC series outlives its pod, the one PVC that lives
//! throughout is never missing once it appeared, and RSS, open fds and
//! threads stay flat (bounds below).

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::fake_kube::{self, FakeKube};
use support::*;

const NODE: &str = "node-1";
const NS: &str = "soak";
/// Pods created (and later deleted) per round.
const BATCH: usize = 4;
/// How long one PVC may take to appear or to go (generous: the machine is shared).
const WAIT: Duration = Duration::from_secs(30);

fn csi_mount(root: &Path, uid: &str, pv: &str) -> PathBuf {
    root.join("pods")
        .join(uid)
        .join("volumes/kubernetes.io~csi")
        .join(pv)
        .join("mount")
}

fn claim_series(text: &str, claim: &str) -> bool {
    value(
        text,
        "kubelet_volume_stats_capacity_bytes",
        &[("namespace", NS), ("persistentvolumeclaim", claim)],
    )
    .is_some()
}

/// (RSS kB, threads, open fds) of a process.
fn resources(pid: u32) -> (u64, u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0);
    (field("VmRSS:"), field("Threads:"), fds)
}

struct Pod {
    name: String,
    claim: String,
    mount: Tmpfs,
}

fn add_pod(kube: &FakeKube, root: &Path, n: usize) -> Pod {
    let name = format!("churn-{n}");
    let claim = format!("data-{n}");
    let pv = format!("pv-{n}");
    let uid = fake_kube::fake_uid(&name);
    let mount = Tmpfs::mount(&csi_mount(root, &uid, &pv), 4 << 20);
    let pvc = fake_kube::pvc(NS, &claim, Some(&pv), "Bound");
    kube.put_pv(fake_kube::bind_pv(
        fake_kube::pv_csi(
            &pv,
            "soak.csi.example",
            &format!("vol-{n}"),
            "4Mi",
            "Filesystem",
        ),
        &pvc,
    ));
    kube.put_pvc(pvc);
    let volumes: Vec<Value> = vec![fake_kube::pvc_volume("d", &claim)];
    kube.put_pod(fake_kube::pod(NS, &name, &uid, NODE, "Running", volumes));
    Pod { name, claim, mount }
}

#[test]
fn a_churning_node_keeps_answering_with_flat_resources() {
    if !prerequisites(
        "a_churning_node_keeps_answering_with_flat_resources",
        need_root_and(&["promtool"]),
    ) {
        return;
    }
    let secs: u64 = std::env::var("KUBEDF_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("kubelet");
    std::fs::create_dir_all(&root).expect("mkdir");
    let kube = FakeKube::start();
    let kubeconfig = dir.path().join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig).expect("kubeconfig");

    // One PVC that lives throughout: it must never go missing.
    let keeper = add_pod(&kube, &root, 0);
    let served = Served::start(&[
        "--node-name",
        NODE,
        "--kubeconfig",
        kubeconfig.to_str().expect("utf-8"),
        "--kubelet.root-dir",
        root.to_str().expect("utf-8"),
        "--kubelet.config",
        "/nonexistent/config.yaml",
        "--cri.endpoint",
        "unix:///nonexistent/kubedf/cri.sock",
        "--sample-interval",
        "500ms",
        "--volume-stats-agg-period",
        "300ms",
        "--volume-stats-timeout",
        "1s",
    ]);
    let pid = served.child.id();
    let client = http();
    let mut scrapes = 0u64;
    let mut checked = 0u64;
    let mut keeper_lost = 0u64;
    let mut scrape = || {
        let r = client
            .get(served.url("/metrics"))
            .header(
                "Accept",
                "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
            )
            .send()
            .expect("every scrape answers");
        assert_eq!(r.status(), 200, "scrape {scrapes}");
        let text = r.text().expect("body");
        scrapes += 1;
        if scrapes % 25 == 1 {
            promtool_check(&text).unwrap_or_else(|e| panic!("scrape {scrapes}: {e}"));
            checked += 1;
        }
        text
    };
    let wait_for = |scrape: &mut dyn FnMut() -> String, what: &str, done: &dyn Fn(&str) -> bool| {
        let start = Instant::now();
        loop {
            let text = scrape();
            if done(&text) {
                return text;
            }
            assert!(start.elapsed() < WAIT, "waited {WAIT:?} for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for(&mut scrape, "the first PVC", &|t| {
        claim_series(t, &keeper.claim)
    });

    let started = Instant::now();
    let mut baseline = None;
    let mut peak = (0, 0, 0);
    let (mut pods_churned, mut faults, mut rounds) = (0usize, 0usize, 0usize);
    let mut next = 1;
    while started.elapsed() < Duration::from_secs(secs) {
        rounds += 1;
        let batch: Vec<Pod> = (0..BATCH)
            .map(|_| {
                next += 1;
                add_pod(&kube, &root, next)
            })
            .collect();
        // A fault in every other round: a cut watch, or a compacted history
        // that forces a re-list (the API server restarting).
        if rounds % 2 == 0 {
            if rounds % 4 == 0 {
                kube.compact();
            }
            kube.cut_watches();
            faults += 1;
        }
        let text = wait_for(&mut scrape, "a round's PVCs", &|t| {
            batch.iter().all(|p| claim_series(t, &p.claim))
        });
        if !claim_series(&text, &keeper.claim) {
            keeper_lost += 1;
        }
        for p in &batch {
            kube.delete_pod(NS, &p.name);
        }
        // Their mounts go too, as kubelet unmounts a deleted pod's volumes.
        drop(batch.into_iter().map(|p| p.mount).collect::<Vec<_>>());
        let text = wait_for(&mut scrape, "deleted pods' PVCs to go", &|t| {
            (next + 1 - BATCH..=next).all(|n| !claim_series(t, &format!("data-{n}")))
        });
        if !claim_series(&text, &keeper.claim) {
            keeper_lost += 1;
        }
        pods_churned += BATCH;
        let now = resources(pid);
        if rounds == 3 {
            baseline = Some(now);
        }
        peak = (peak.0.max(now.0), peak.1.max(now.1), peak.2.max(now.2));
    }
    let end = resources(pid);
    let base = baseline.unwrap_or(end);
    println!(
        "soak: {secs} s, {rounds} rounds, {pods_churned} pods and PVCs churned, {faults} API faults, \
         {scrapes} scrapes ({checked} promtool-checked), keeper PVC lost {keeper_lost} times; \
         RSS kB {} -> {} (peak {}), threads {} -> {} (peak {}), fds {} -> {} (peak {})",
        base.0, end.0, peak.0, base.1, end.1, peak.1, base.2, end.2, peak.2
    );
    assert_eq!(keeper_lost, 0, "the live PVC went missing");
    assert!(rounds >= 3, "too few rounds to judge: {rounds}");
    // Flat: a leak of one fd, thread or 100 kB per round would break these.
    assert!(end.2 <= base.2 + 16, "fds grew: {base:?} -> {end:?}");
    assert!(end.1 <= base.1 + 8, "threads grew: {base:?} -> {end:?}");
    assert!(
        end.0 <= base.0 + base.0 / 2 + 16 * 1024,
        "RSS grew: {base:?} -> {end:?}"
    );
    drop(keeper);
}
