//! What one node's kubedf asks of the API server, counted on the fake API
//! server's request log: a pod of `PVCS` hostPath PVCs, kubedf serving with
//! its defaults, the requests of the first 30 s (start) and of the rest of
//! the window (at rest), by kind, and per hour.
//!
//! `cargo run --release --example api_reads -- [KUBEDF_BINARY] [PVCS] [WINDOW_SECONDS]`
//! (defaults: target/release/kubedf, 20, 360). Bounded by the window.

use std::time::{Duration, Instant};

use testkit::Kubedf;
use testkit::fake_kube::{self, FakeKube};

const NODE: &str = "node-1";
const NS: &str = "shop";
const START: Duration = Duration::from_secs(30);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bin = args
        .first()
        .cloned()
        .unwrap_or_else(|| "target/release/kubedf".into());
    let pvcs: usize = args.get(1).map_or(Ok(20), |s| s.parse())?;
    let window = Duration::from_secs(args.get(2).map_or(Ok(360), |s| s.parse())?);
    if window <= START {
        return Err(format!("the window must be longer than {START:?}").into());
    }

    let dir = tempfile::tempdir()?;
    let root = dir.path().join("kubelet");
    std::fs::create_dir_all(&root)?;
    let kube = FakeKube::start();
    let mut volumes = Vec::new();
    for i in 0..pvcs {
        let (claim, pv_name) = (format!("data-{i}"), format!("pv-{i}"));
        let data = dir.path().join(&pv_name);
        std::fs::create_dir_all(&data)?;
        std::fs::write(data.join("f"), vec![1u8; 4096])?;
        let pvc = fake_kube::pvc(NS, &claim, Some(&pv_name), "Bound");
        let pv = fake_kube::pv_host_path(&pv_name, &data.to_string_lossy(), "1Gi");
        kube.put_pv(fake_kube::bind_pv(pv, &pvc));
        kube.put_pvc(pvc);
        volumes.push(fake_kube::pvc_volume(&format!("v{i}"), &claim));
    }
    let uid = fake_kube::fake_uid("db-0");
    kube.put_pod(fake_kube::pod(NS, "db-0", &uid, NODE, "Running", volumes));
    let kubeconfig = dir.path().join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig)?;

    let began = Instant::now();
    let served = Kubedf::at(&bin)
        .on_node(NODE, &kubeconfig, &root, testkit::NO_RUNTIME)
        .kubelet_config(testkit::NO_KUBELET_CONFIG)
        .serve(&[]);
    std::thread::sleep(START.saturating_sub(began.elapsed()));
    let at_start = kube.request_log();
    std::thread::sleep(window.saturating_sub(began.elapsed()));
    let all = kube.request_log();
    drop(served);

    let rest = &all[at_start.len().min(all.len())..];
    let rest_secs = (window - START).as_secs_f64();
    println!(
        "kubedf {bin}, one node, {pvcs} hostPath PVCs of one running pod, defaults; window {}s\n",
        window.as_secs()
    );
    println!("| request | first 30 s | next {rest_secs:.0} s | per hour at rest |");
    println!("|---|---|---|---|");
    for (kind, matches) in KINDS {
        let (s, r) = (
            at_start.iter().filter(|q| matches(q)).count(),
            rest.iter().filter(|q| matches(q)).count(),
        );
        println!(
            "| {kind} | {s} | {r} | {:.1} |",
            r as f64 * 3600.0 / rest_secs
        );
    }
    let quorum = all
        .iter()
        .filter(|q| !q.contains("watch=") && !q.contains("resourceVersion=0"))
        .count();
    println!(
        "\nrequests not answered from the watch cache (no resourceVersion=0, not a watch): {quorum}"
    );
    Ok(())
}

type Matches = fn(&str) -> bool;

const KINDS: [(&str, Matches); 5] = [
    ("pod list", |q| q.contains("/pods") && !q.contains("watch=")),
    ("pod watch", |q| q.contains("/pods") && q.contains("watch=")),
    ("PVC GET", |q| q.contains("/persistentvolumeclaims/")),
    ("PV GET", |q| q.contains("/persistentvolumes/")),
    ("other", |q| {
        !q.contains("/pods")
            && !q.contains("/persistentvolumeclaims/")
            && !q.contains("/persistentvolumes/")
    }),
];
