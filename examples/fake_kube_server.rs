//! The tests' fake Kubernetes API server as a standalone process, for the
//! benchmark harness (`bench/run.sh`) and for trying kubedf by hand.
//!
//! ```text
//! fake_kube_server --kubeconfig FILE [--objects FILE.json]
//!                  [--generate N --mapping FILE.json [--node NODE] [--namespace NS]
//!                   [--driver DRIVER] [--capacity QUANTITY]]
//!                  [--bookmark-interval SECONDS]
//! ```
//!
//! It starts the server on 127.0.0.1 (a free port), loads the objects, writes
//! a kubeconfig pointing at itself, prints `ready` on stdout and serves until
//! SIGTERM or SIGINT.
//!
//! - `--objects FILE.json`: Pods, PersistentVolumeClaims and
//!   PersistentVolumes as the API server returns them, either a JSON array of
//!   objects or an object with an `items` array; each object's `kind` says
//!   what it is.
//! - `--generate N`: N running pods `pod-<i>` on `--node` (default `node-1`)
//!   in `--namespace` (default `bench`), each with one PVC `claim-<i>` bound
//!   to a CSI PV `pv-<i>` (Filesystem mode). `--mapping FILE.json` receives
//!   where kubelet would mount each volume, relative to kubelet's root dir:
//!   `{"node": .., "volumes": [{"namespace", "pod", "pod_uid", "claim", "pv",
//!   "path": "pods/<uid>/volumes/kubernetes.io~csi/<pv>/mount"}]}`.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use nix::sys::signal::{SigSet, Signal};
use serde_json::{Value, json};
use testkit::fake_kube;

#[derive(Parser, Debug)]
#[command(about = "The fake Kubernetes API server of kubedf's tests, as a process")]
struct Args {
    /// Where to write a kubeconfig that points at this server.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Pods, PVCs and PVs to load (a JSON array, or an object with `items`).
    #[arg(long)]
    objects: Vec<PathBuf>,
    /// Generate this many running pods, each with one bound CSI PVC.
    #[arg(long, default_value_t = 0)]
    generate: usize,
    /// Where to write the generated volumes' paths (needed with --generate).
    #[arg(long)]
    mapping: Option<PathBuf>,
    #[arg(long, default_value = "node-1")]
    node: String,
    #[arg(long, default_value = "bench")]
    namespace: String,
    #[arg(long, default_value = "bench.csi.kubedf.invalid")]
    driver: String,
    #[arg(long, default_value = "1Mi")]
    capacity: String,
    /// Seconds between two bookmarks of a watch (a real API server sends one
    /// about every 60).
    #[arg(long, default_value_t = 1.0)]
    bookmark_interval: f64,
}

fn load(kube: &fake_kube::FakeKube, path: &PathBuf) -> Result<usize> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let value: Value =
        serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
    let items = match value {
        Value::Array(items) => items,
        Value::Object(mut map) => match map.remove("items") {
            Some(Value::Array(items)) => items,
            _ => bail!("{}: an object must have an `items` array", path.display()),
        },
        _ => bail!("{}: expected an array of objects", path.display()),
    };
    // PVs and PVCs first, so that a pod never refers to a missing claim.
    let rank = |o: &Value| match o["kind"].as_str() {
        Some("PersistentVolume") => 0,
        Some("PersistentVolumeClaim") => 1,
        _ => 2,
    };
    let mut items = items;
    items.sort_by_key(rank);
    for obj in &items {
        match obj["kind"].as_str() {
            Some("PersistentVolume") => kube.put_pv(obj.clone()),
            Some("PersistentVolumeClaim") => kube.put_pvc(obj.clone()),
            Some("Pod") => kube.put_pod(obj.clone()),
            other => bail!("{}: unsupported kind {other:?}", path.display()),
        };
    }
    Ok(items.len())
}

fn generate(kube: &fake_kube::FakeKube, args: &Args) -> Value {
    let mut volumes = Vec::with_capacity(args.generate);
    for i in 0..args.generate {
        let pod_name = format!("pod-{i}");
        let claim = format!("claim-{i}");
        let pv_name = format!("pv-{i}");
        let uid = fake_kube::fake_uid(&format!("{}/{pod_name}", args.namespace));
        let pvc = fake_kube::pvc(&args.namespace, &claim, Some(&pv_name), "Bound");
        let pv = fake_kube::pv_csi(
            &pv_name,
            &args.driver,
            &format!("vol-{i}"),
            &args.capacity,
            "Filesystem",
        );
        kube.put_pv(fake_kube::bind_pv(pv, &pvc));
        kube.put_pvc(pvc);
        kube.put_pod(fake_kube::pod(
            &args.namespace,
            &pod_name,
            &uid,
            &args.node,
            "Running",
            vec![fake_kube::pvc_volume("data", &claim)],
        ));
        volumes.push(json!({
            "namespace": args.namespace,
            "pod": pod_name,
            "pod_uid": uid,
            "claim": claim,
            "pv": pv_name,
            "path": format!("pods/{uid}/volumes/kubernetes.io~csi/{pv_name}/mount"),
        }));
    }
    json!({"node": args.node, "volumes": volumes})
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.generate > 0 && args.mapping.is_none() {
        bail!("--generate needs --mapping FILE");
    }
    // Block the stop signals before any thread starts, so every thread
    // inherits the mask and sigwait below receives them.
    let mut stop = SigSet::empty();
    stop.add(Signal::SIGTERM);
    stop.add(Signal::SIGINT);
    stop.thread_block().context("block SIGTERM/SIGINT")?;

    let kube = fake_kube::FakeKube::start();
    let every = std::time::Duration::try_from_secs_f64(args.bookmark_interval)
        .ok()
        .filter(|d| !d.is_zero())
        .context("--bookmark-interval: want a positive number of seconds")?;
    kube.set_bookmark_interval(every);
    let mut loaded = 0;
    for path in &args.objects {
        loaded += load(&kube, path)?;
    }
    if let Some(mapping) = &args.mapping {
        let map = generate(&kube, &args);
        let text = serde_json::to_string_pretty(&map)?;
        std::fs::write(mapping, text).with_context(|| format!("write {}", mapping.display()))?;
    }
    kube.write_kubeconfig(&args.kubeconfig)
        .with_context(|| format!("write {}", args.kubeconfig.display()))?;
    eprintln!(
        "fake_kube_server: {} ({} objects loaded, {} pods generated)",
        kube.url(),
        loaded,
        args.generate
    );
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")?;
    out.flush()?;
    drop(out);

    let signal = stop.wait().context("wait for SIGTERM/SIGINT")?;
    eprintln!("fake_kube_server: {signal}, stopping");
    drop(kube);
    Ok(())
}
