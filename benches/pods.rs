//! The pod half at rest, with real containers (issue 10): what a node pays
//! for kubedf's `pod_storage` collector, CPU per minute and RSS.
//!
//! ```text
//! cargo bench --bench pods [-- --pods 100 --files 10000 --minutes 3 --bin target/release/kubedf]
//! ```
//!
//! As root. It builds a node under a fresh `/tmp/kubedf-podbench.*` dir:
//! - a real containerd (testkit/src/containerd.rs) running PODS pods of
//!   CONTAINERS busybox-static containers each, through the CRI as kubelet
//!   runs them (testkit/src/cri.rs: kubelet's labels, log dirs under
//!   podLogsDir, `<root>/pods/<uid>/etc-hosts`). Each container writes
//!   LOG_BYTES to stdout, then sleeps;
//! - one emptyDir of FILES one-byte files per pod, at kubelet's path
//!   `<root>/pods/<uid>/volumes/kubernetes.io~empty-dir/cache/`;
//! - the fake API server serving the same pods (same uids, names and
//!   namespace as the sandboxes' labels), each container with an
//!   ephemeral-storage limit and the emptyDir with a sizeLimit.
//!
//! Then it runs `kubedf serve` twice side by side on that node,
//! `--collector.pod_storage` and `--no-collector.pod_storage`, everything
//! else equal and at its default (`--volume-stats-agg-period` 1m), waits
//! until every pod's emptyDir, container logs and rootfs are in the on-run's
//! `/metrics`, checks those figures, and measures for MINUTES minutes with a
//! gzip scrape of each every 15 s: CPU seconds per minute (utime+stime,
//! /proc/PID/stat), VmRSS and VmHWM. Over the same window it measures
//! containerd and its shims; then, with the on-run stopped, it measures them
//! again for as long (what the node's runtime pays for kubedf's
//! ListContainers/ListContainerStats calls is the difference). It prints
//! Markdown tables and fails (exit 1) when a figure is missing or wrong.
//!
//! Everything it started (containers, sandboxes, shims, containerd and its
//! tmpfs, kubedf, the fake API server, the tree) is stopped and removed at
//! the end, also on failure, a panic or SIGINT/SIGTERM; a last sweep kills
//! any process whose command line names the run's dir (the shims, should
//! containerd have died first) and unmounts whatever is still mounted under
//! it. Under `cargo test` (no `--bench` argument) it only says so and exits.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use nix::mount::MntFlags;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use testkit::containerd::{Containerd, Image, unescape_mountinfo};
use testkit::cri::{ContainerSpec, Cri, Pod, PodSpec, Started};
use testkit::fake_kube::{self, FakeKube};
use testkit::{Kubedf, Line, Served, samples};

const NODE: &str = "node-1";
const NS: &str = "bench";
const VOLUME: &str = "cache";
/// Prometheus' default-ish scrape interval, as the issue's rest figures use.
const SCRAPE_EVERY: Duration = Duration::from_secs(15);
/// Files per directory of an emptyDir tree.
const PER_DIR: usize = 100;
/// The last line each container writes, after its LOG_BYTES.
const DONE: &str = "kubedf-bench-done";
const MIB: f64 = 1024.0 * 1024.0;

/// The cost of kubedf's pod half at rest, with real containers.
#[derive(Parser, Debug)]
#[command(name = "pods")]
struct Args {
    /// Pods to run.
    #[arg(long, default_value_t = 100)]
    pods: usize,
    /// Containers per pod.
    #[arg(long, default_value_t = 3)]
    containers: usize,
    /// Files in each pod's emptyDir.
    #[arg(long, default_value_t = 10_000)]
    files: usize,
    /// Bytes each container writes to stdout (its log) before it sleeps.
    #[arg(long, default_value_t = 1 << 20)]
    log_bytes: u64,
    /// Minutes measured (twice: side by side, then containerd's baseline).
    #[arg(long, default_value_t = 3.0)]
    minutes: f64,
    /// The kubedf binary [default: the one cargo built for this bench, target/release/kubedf].
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Pods started or removed at once.
    #[arg(long, default_value_t = 4)]
    parallel: usize,
    /// Passed by `cargo bench`; without it (`cargo test`) nothing runs.
    #[arg(long, hide = true)]
    bench: bool,
    /// A benchmark name filter `cargo bench` may pass; there is one benchmark.
    #[arg(hide = true)]
    filter: Vec<String>,
}

/// The signal that interrupted the run, 0 while none did.
static INTERRUPTED: AtomicI32 = AtomicI32::new(0);

fn main() {
    // Checked before parsing: `cargo test -- ARGS` hands its test harness's
    // arguments to this binary too.
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "benches/pods.rs runs only under `cargo bench --bench pods` (as root; 100 pods, about 15 minutes); nothing to do under cargo test"
        );
        return;
    }
    if let Err(e) = watch_signals() {
        eprintln!("pods bench: {e}");
        std::process::exit(1);
    }
    let args = Args::parse();
    let code = match run(&args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("pods bench FAILED: {e}");
            1
        }
    };
    // Every guard of `run` has been dropped (and has cleaned up) by now.
    std::process::exit(code);
}

/// Turns SIGINT, SIGTERM and SIGHUP into [`INTERRUPTED`], which every loop
/// checks, so that the stack unwinds and everything is cleaned up. Handlers,
/// not a blocked mask: children inherit a mask (and would then ignore their
/// own SIGTERM), while exec resets handlers. Returns once they are installed.
fn watch_signals() -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    let (ready, installed) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                let _ = ready.send(Err(format!("tokio runtime for signals: {e}")));
                return;
            }
        };
        rt.block_on(async move {
            let mut waits = Vec::new();
            for (kind, name) in [
                (SignalKind::interrupt(), Signal::SIGINT),
                (SignalKind::terminate(), Signal::SIGTERM),
                (SignalKind::hangup(), Signal::SIGHUP),
            ] {
                match signal(kind) {
                    Ok(mut s) => waits.push(Box::pin(async move {
                        s.recv().await;
                        name
                    })),
                    Err(e) => {
                        let _ = ready.send(Err(format!("handle {name}: {e}")));
                        return;
                    }
                }
            }
            let _ = ready.send(Ok(()));
            let (s, _, _) = futures::future::select_all(waits).await;
            INTERRUPTED.store(s as i32, Ordering::SeqCst);
            eprintln!("pods bench: {s}: stopping and cleaning up");
        });
    });
    installed
        .recv()
        .map_err(|_| "the signal thread ended".to_owned())?
}

/// An error once SIGINT/SIGTERM/SIGHUP arrived; every loop calls it.
fn check_interrupt() -> Result<(), String> {
    match INTERRUPTED.load(Ordering::SeqCst) {
        0 => Ok(()),
        s => Err(format!(
            "interrupted by {}",
            Signal::try_from(s).map_or("a signal", |s| s.as_str())
        )),
    }
}

/// Sleeps `d`, waking each second to notice an interrupt.
fn sleep(d: Duration) -> Result<(), String> {
    let end = Instant::now() + d;
    loop {
        check_interrupt()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_secs(1)));
    }
}

fn run(args: &Args) -> Result<(), String> {
    if args.pods == 0 || args.containers == 0 || args.files == 0 || args.minutes <= 0.0 {
        return Err("--pods, --containers, --files and --minutes must be positive".into());
    }
    let bin = args
        .bin
        .clone()
        .unwrap_or_else(|| testkit::kubedf!().path().to_path_buf());
    if !bin.is_file() {
        return Err(format!(
            "kubedf binary {} is missing (cargo build --release --bin kubedf)",
            bin.display()
        ));
    }
    if let Some(missing) = testkit::need_root_and(&[
        "containerd",
        "ctr",
        "runc",
        "containerd-shim-runc-v2",
        "busybox",
        "du",
        "getconf",
    ]) {
        return Err(missing);
    }
    let tick = clock_ticks()?;
    let started = Instant::now();
    let load_start = loadavg();

    // Guards, dropped in reverse order: kubedf, pods, containerd, fake API,
    // then the sweep and the tree.
    let base = tempfile::Builder::new()
        .prefix("kubedf-podbench.")
        .tempdir_in("/tmp")
        .map_err(|e| format!("create a dir under /tmp: {e}"))?
        .keep();
    let _sweep = Sweep { base: base.clone() };
    let node = NodeDirs::create(&base)?;

    let t = Instant::now();
    let pods: Vec<BenchPod> = (0..args.pods).map(BenchPod::new).collect();
    build_empty_dirs(&node, &pods, args.files)?;
    eprintln!(
        "pods bench: {} emptyDirs of {} files in {:.0?}",
        pods.len(),
        args.files,
        t.elapsed()
    );

    let kube = FakeKube::start();
    for p in &pods {
        kube.put_pod(p.api_object(args.containers));
    }
    kube.write_kubeconfig(&node.kubeconfig)
        .map_err(|e| format!("write {}: {e}", node.kubeconfig.display()))?;

    let containerd = Containerd::start(&base.join("cd"), 1 << 30)?;
    let cri = Cri::connect(&containerd)?;
    let image = containerd.import_image(&Image::busybox("app")?)?;
    let t = Instant::now();
    let mut running = Running::new(args.parallel);
    let logs = running.start(&cri, &node, &pods, args, &image)?;
    eprintln!(
        "pods bench: {} pods, {} containers started in {:.0?}",
        pods.len(),
        logs.len(),
        t.elapsed()
    );
    wait_for_logs(&logs)?;
    eprintln!("pods bench: every container wrote its log");

    // kubedf, both ways, side by side on the same node.
    let socket = format!("unix://{}", containerd.socket().display());
    let common = [
        "--node-name",
        NODE,
        "--kubeconfig",
        path_str(&node.kubeconfig)?,
        "--kubelet.root-dir",
        path_str(&node.root)?,
        "--kubelet.config",
        path_str(&node.config)?,
        "--cri.endpoint",
        &socket,
    ];
    let serve = |flag: &str| {
        let mut argv = common.to_vec();
        argv.push(flag);
        Kubedf::at(&bin).serve(&argv)
    };
    let t = Instant::now();
    let mut on = serve("--collector.pod_storage");
    let off = serve("--no-collector.pod_storage");
    let client = gzip_client()?;
    let expect = Expect::new(args, &pods);
    let first = wait_for_figures(&client, &mut on, &expect)?;
    let warm_up = t.elapsed();
    eprintln!("pods bench: every figure in /metrics after {warm_up:.0?}");
    check_on(&first, &expect, &node, &pods, &logs, &cri)?;
    let off_text = scrape(&client, &off)?.text;
    check_off(&off_text)?;

    // Side by side: both kubedf, containerd and its shims.
    let shims = shim_pids(containerd.socket())?;
    let window = Duration::from_secs_f64(args.minutes * 60.0);
    let mut meters = vec![
        Meter::new("kubedf, pod_storage on", vec![on.child.id()])?,
        Meter::new("kubedf, pod_storage off", vec![off.child.id()])?,
        Meter::new("containerd", vec![containerd.pid()])?,
        Meter::new(&format!("its {} shims", shims.len()), shims.clone())?,
    ];
    let busy0 = machine_busy_ticks()?;
    let t0 = Instant::now();
    let mut scrapes = Scrapes::default();
    while t0.elapsed() < window {
        let tick_at = Instant::now();
        for (served, side) in [(&on, &mut scrapes.on), (&off, &mut scrapes.off)] {
            let s = scrape(&client, served)?;
            side.push(s);
        }
        sleep(SCRAPE_EVERY.saturating_sub(tick_at.elapsed()))?;
    }
    let side_by_side = t0.elapsed();
    let busy1 = machine_busy_ticks()?;
    for m in &mut meters {
        m.stop()?;
    }
    // The on-run's figures are still all there, and still right.
    let last = scrapes
        .on
        .last()
        .map(|s| s.text.clone())
        .unwrap_or_default();
    check_on(&last, &expect, &node, &pods, &logs, &cri)?;

    // containerd's baseline: the same window with pod_storage off only.
    stop_kubedf(&mut on, "pod_storage on")?;
    let mut baseline = vec![
        Meter::new("containerd", vec![containerd.pid()])?,
        Meter::new("shims", shims)?,
    ];
    let t1 = Instant::now();
    while t1.elapsed() < window {
        let tick_at = Instant::now();
        scrape(&client, &off)?;
        sleep(SCRAPE_EVERY.saturating_sub(tick_at.elapsed()))?;
    }
    for m in &mut baseline {
        m.stop()?;
    }

    let report = Report {
        args,
        bin: &bin,
        warm_up,
        side_by_side,
        meters: &meters,
        baseline: &baseline,
        scrapes: &scrapes,
        tick,
        others_per_min: {
            let ours: u64 = meters.iter().map(|m| m.ticks()).sum();
            let busy = busy1.saturating_sub(busy0).saturating_sub(ours);
            busy as f64 / tick / (side_by_side.as_secs_f64() / 60.0)
        },
        load_start,
        load_end: loadavg(),
    };
    drop(off);
    report.print();
    eprintln!("pods bench: stopping {} pods", pods.len());
    running.remove_all()?;
    drop(containerd);
    drop(kube);
    eprintln!("pods bench: done in {:.0?}", started.elapsed());
    Ok(())
}

/// SIGTERM, and an error unless kubedf exits 0 within 30 s.
fn stop_kubedf(served: &mut Served, what: &str) -> Result<(), String> {
    let t = Instant::now();
    let _ = kill(Pid::from_raw(served.child.id() as i32), Signal::SIGTERM);
    while t.elapsed() < Duration::from_secs(30) {
        match served.child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                return Err(format!(
                    "kubedf ({what}) exited with {status} on SIGTERM after {:.1?}:\n{}",
                    t.elapsed(),
                    tail(&served.log_text(), 20)
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(format!("wait for kubedf ({what}): {e}")),
        }
    }
    Err(format!(
        "kubedf ({what}) still running 30 s after SIGTERM:\n{}",
        tail(&served.log_text(), 20)
    ))
}

/// The node's directories under the run's base dir.
struct NodeDirs {
    root: PathBuf,
    logs: PathBuf,
    config: PathBuf,
    kubeconfig: PathBuf,
}

impl NodeDirs {
    fn create(base: &Path) -> Result<NodeDirs, String> {
        let node = NodeDirs {
            root: base.join("kubelet"),
            logs: base.join("log-pods"),
            config: base.join("config.yaml"),
            kubeconfig: base.join("kubeconfig"),
        };
        for d in [&node.root, &node.logs] {
            std::fs::create_dir_all(d).map_err(|e| format!("create {}: {e}", d.display()))?;
        }
        let config = format!(
            "kind: KubeletConfiguration\npodLogsDir: {}\n",
            node.logs.display()
        );
        std::fs::write(&node.config, config)
            .map_err(|e| format!("write {}: {e}", node.config.display()))?;
        Ok(node)
    }

    fn empty_dir(&self, uid: &str) -> PathBuf {
        self.root
            .join("pods")
            .join(uid)
            .join("volumes/kubernetes.io~empty-dir")
            .join(VOLUME)
    }
}

/// One pod, as the API server and the CRI both know it.
struct BenchPod {
    name: String,
    uid: String,
}

impl BenchPod {
    fn new(i: usize) -> BenchPod {
        let name = format!("pod-{i:03}");
        BenchPod {
            uid: fake_kube::fake_uid(&name),
            name,
        }
    }

    /// The pod as the API server serves it: CONTAINERS containers with an
    /// ephemeral-storage limit each, the emptyDir with a sizeLimit.
    fn api_object(&self, containers: usize) -> Value {
        let volume = json!({"name": VOLUME, "emptyDir": {"sizeLimit": "1Gi"}});
        let mut pod = fake_kube::pod(NS, &self.name, &self.uid, NODE, "Running", vec![volume]);
        pod["spec"]["containers"] = (0..containers)
            .map(|c| {
                json!({
                    "name": container_name(c),
                    "image": "docker.io/kubedf-test/app:latest",
                    "resources": {"limits": {"ephemeral-storage": "512Mi", "memory": "64Mi"}},
                })
            })
            .collect();
        pod
    }
}

fn container_name(c: usize) -> String {
    format!("c{c}")
}

/// FILES one-byte files per pod, PER_DIR to a directory, on two threads.
fn build_empty_dirs(node: &NodeDirs, pods: &[BenchPod], files: usize) -> Result<(), String> {
    let next = AtomicUsize::new(0);
    let build = || -> Result<(), String> {
        while let Some(pod) = pods.get(next.fetch_add(1, Ordering::SeqCst)) {
            check_interrupt()?;
            let dir = node.empty_dir(&pod.uid);
            for i in 0..files {
                let sub = dir.join(format!("d{:03}", i / PER_DIR));
                if i % PER_DIR == 0 {
                    std::fs::create_dir_all(&sub)
                        .map_err(|e| format!("create {}: {e}", sub.display()))?;
                }
                let f = sub.join(format!("f{:03}", i % PER_DIR));
                std::fs::write(&f, b"x").map_err(|e| format!("write {}: {e}", f.display()))?;
            }
        }
        Ok(())
    };
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..2).map(|_| s.spawn(build)).collect();
        workers.into_iter().try_for_each(|w| {
            w.join()
                .unwrap_or_else(|_| Err("tree builder panicked".into()))
        })
    })
}

/// The running pods; stopped and removed, `parallel` at a time, by
/// [`Running::remove_all`] or on drop.
struct Running {
    pods: Arc<Mutex<Vec<Pod>>>,
    parallel: usize,
}

impl Running {
    fn new(parallel: usize) -> Running {
        Running {
            pods: Arc::new(Mutex::new(Vec::new())),
            parallel: parallel.max(1),
        }
    }

    /// Runs every pod and its containers as kubelet would; returns each
    /// container's log path. One CRI client serves all workers (a
    /// current-thread runtime lets several threads `block_on` at once).
    fn start(
        &mut self,
        cri: &Cri,
        node: &NodeDirs,
        pods: &[BenchPod],
        args: &Args,
        image: &str,
    ) -> Result<Vec<PathBuf>, String> {
        // Write LOG_BYTES as 64-byte lines, end the last one, mark the end,
        // then wait for SIGTERM (trap first: the shell is PID 1 of its
        // namespace and would ignore an untrapped TERM).
        let script = format!(
            "trap 'exit 0' TERM; \
             yes 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde | head -c {}; \
             echo; echo {DONE}; \
             while :; do sleep 3600 & wait $!; done",
            args.log_bytes
        );
        let next = AtomicUsize::new(0);
        let logs = Mutex::new(Vec::new());
        let work = || -> Result<(), String> {
            while let Some(p) = pods.get(next.fetch_add(1, Ordering::SeqCst)) {
                check_interrupt()?;
                let mut spec = PodSpec::new(NS, &p.name, &p.uid, &node.logs);
                spec.kubelet_root = Some(node.root.clone());
                let mut pod = cri.run_pod(&spec)?;
                let started: Result<Vec<Started>, String> = (0..args.containers)
                    .map(|c| {
                        pod.start(&ContainerSpec::new(&container_name(c), image).shell(&script))
                    })
                    .collect();
                // Kept for cleanup whatever happened to its containers.
                lock(&self.pods).push(pod);
                lock(&logs).extend(started?.into_iter().map(|s| s.log_path));
            }
            Ok(())
        };
        std::thread::scope(|s| {
            let workers: Vec<_> = (0..self.parallel).map(|_| s.spawn(work)).collect();
            workers.into_iter().try_for_each(|w| {
                w.join()
                    .unwrap_or_else(|_| Err("pod starter panicked".into()))
            })
        })?;
        Ok(logs.into_inner().unwrap_or_else(|e| e.into_inner()))
    }

    /// Stops and removes every container and sandbox; the first error and
    /// how many failed.
    fn remove_all(&mut self) -> Result<(), String> {
        let pods = std::mem::take(&mut *lock(&self.pods));
        if pods.is_empty() {
            return Ok(());
        }
        let queue = Mutex::new(pods);
        let errors = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for _ in 0..self.parallel {
                s.spawn(|| {
                    loop {
                        let Some(pod) = lock(&queue).pop() else { break };
                        if let Err(e) = pod.remove() {
                            lock(&errors).push(e);
                        }
                    }
                });
            }
        });
        let errors = errors.into_inner().unwrap_or_else(|e| e.into_inner());
        match errors.first() {
            None => Ok(()),
            Some(e) => Err(format!(
                "removing pods: {} failed, the first: {e}",
                errors.len()
            )),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Err(e) = self.remove_all() {
            eprintln!("pods bench: {e}");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits (bounded) until every container's log ends with the DONE line.
fn wait_for_logs(logs: &[PathBuf]) -> Result<(), String> {
    let limit = Duration::from_secs(300);
    let t = Instant::now();
    loop {
        let pending: Vec<&PathBuf> = logs.iter().filter(|p| !log_done(p)).collect();
        if pending.is_empty() {
            return Ok(());
        }
        if t.elapsed() > limit {
            return Err(format!(
                "{} of {} container logs did not end with {DONE} within {limit:?}, e.g. {}",
                pending.len(),
                logs.len(),
                pending[0].display()
            ));
        }
        sleep(Duration::from_secs(1))?;
    }
}

/// Whether a CRI log file's last line is `... stdout F kubedf-bench-done`.
fn log_done(path: &Path) -> bool {
    use std::io::{Seek as _, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    let mut tail = Vec::new();
    let from = f
        .metadata()
        .map(|m| m.len().saturating_sub(64))
        .unwrap_or(0);
    f.seek(SeekFrom::Start(from))
        .and_then(|_| f.read_to_end(&mut tail))
        .is_ok()
        && String::from_utf8_lossy(&tail).ends_with(&format!(" F {DONE}\n"))
}

/// What the on-run's exposition must hold.
struct Expect {
    pods: usize,
    containers: usize,
    /// Inodes of one emptyDir: its files, its subdirectories and itself.
    volume_inodes: u64,
    log_bytes: u64,
}

impl Expect {
    fn new(args: &Args, pods: &[BenchPod]) -> Expect {
        Expect {
            pods: pods.len(),
            containers: pods.len() * args.containers,
            volume_inodes: (args.files + args.files.div_ceil(PER_DIR) + 1) as u64,
            log_bytes: args.log_bytes,
        }
    }
}

/// The bench namespace's series of `name`.
fn series<'a>(lines: &'a [Line], name: &str) -> Vec<&'a Line> {
    lines
        .iter()
        .filter(|l| l.name == name && l.labels.get("namespace").map(String::as_str) == Some(NS))
        .collect()
}

fn number(l: &Line) -> Result<u64, String> {
    l.value
        .parse()
        .map_err(|_| format!("{} {:?}: not an integer: {}", l.name, l.labels, l.value))
}

/// What is still missing from an exposition for every pod to be measured.
fn missing(text: &str, expect: &Expect) -> Option<String> {
    let lines = samples(text);
    let want = [
        ("kubedf_ephemeral_volume_used_bytes", expect.pods),
        ("kubedf_ephemeral_volume_inodes_used", expect.pods),
        ("kubedf_container_logs_used_bytes", expect.containers),
        ("kubedf_container_logs_inodes_used", expect.containers),
        ("kubedf_container_rootfs_used_bytes", expect.containers),
        ("kubedf_container_rootfs_inodes_used", expect.containers),
        ("kubedf_pod_ephemeral_storage_used_bytes", expect.pods),
        ("kubedf_pod_ephemeral_storage_inodes_used", expect.pods),
    ];
    let short: Vec<String> = want
        .iter()
        .filter_map(|(name, n)| {
            let got = series(&lines, name).len();
            (got != *n).then(|| format!("{name}: {got} of {n} series"))
        })
        .collect();
    (!short.is_empty()).then(|| short.join(", "))
}

/// Scrapes the on-run until every pod's figures are there (bounded).
fn wait_for_figures(client: &Client, on: &mut Served, expect: &Expect) -> Result<String, String> {
    // The first walk of each volume and log dir comes within one to two
    // aggregation periods (1m, jittered), on a loaded machine later.
    let limit = Duration::from_secs(900);
    let t = Instant::now();
    loop {
        let text = scrape(client, on)?.text;
        match missing(&text, expect) {
            None => return Ok(text),
            Some(what) if t.elapsed() > limit => {
                return Err(format!(
                    "after {limit:?} the on-run still lacks {what}; its log:\n{}",
                    tail(&on.log_text(), 30)
                ));
            }
            Some(_) => sleep(Duration::from_secs(2))?,
        }
        if let Ok(Some(status)) = on.child.try_wait() {
            return Err(format!("kubedf (pod_storage on) exited: {status}"));
        }
    }
}

/// The on-run's exposition is complete and its figures are right: counts of
/// every family, limits, no error series, the emptyDir inode count, logs of
/// at least LOG_BYTES, and for one pod the figures against `du -sxB1` and
/// containerd's own ListContainerStats answer.
fn check_on(
    text: &str,
    expect: &Expect,
    node: &NodeDirs,
    pods: &[BenchPod],
    logs: &[PathBuf],
    cri: &Cri,
) -> Result<(), String> {
    if let Some(what) = missing(text, expect) {
        return Err(format!("on-run exposition lacks {what}"));
    }
    let lines = samples(text);
    for (name, n) in [
        (
            "kubedf_container_ephemeral_storage_limit_bytes",
            expect.containers,
        ),
        ("kubedf_pod_ephemeral_storage_limit_bytes", expect.pods),
        ("kubedf_ephemeral_volume_size_limit_bytes", expect.pods),
    ] {
        let got = series(&lines, name).len();
        if got != n {
            return Err(format!("{name}: {got} series, expected {n}"));
        }
    }
    let errors = series(&lines, "kubedf_pod_storage_error");
    if let Some(e) = errors.first() {
        return Err(format!(
            "{} kubedf_pod_storage_error series, e.g. {:?}",
            errors.len(),
            e.labels
        ));
    }
    let success = lines.iter().find(|l| {
        l.name == "kubedf_scrape_collector_success"
            && l.labels.get("collector").map(String::as_str) == Some("pod_storage")
    });
    if success.map(|l| l.value.as_str()) != Some("1") {
        return Err(format!("pod_storage collector success: {success:?}"));
    }
    for l in series(&lines, "kubedf_ephemeral_volume_inodes_used") {
        if number(l)? != expect.volume_inodes {
            return Err(format!(
                "emptyDir {:?}: {} inodes, the tree has {}",
                l.labels, l.value, expect.volume_inodes
            ));
        }
    }
    for l in series(&lines, "kubedf_container_logs_used_bytes") {
        if number(l)? < expect.log_bytes {
            return Err(format!(
                "logs of {:?}: {} bytes, each container wrote {}",
                l.labels, l.value, expect.log_bytes
            ));
        }
    }

    // One pod against du and containerd's own answer.
    let p = &pods[0];
    let pick = |name: &str, extra: (&str, &str)| -> Result<u64, String> {
        let found: Vec<&Line> = series(&lines, name)
            .into_iter()
            .filter(|l| {
                l.labels.get("pod") == Some(&p.name)
                    && l.labels.get(extra.0).map(String::as_str) == Some(extra.1)
            })
            .collect();
        match found[..] {
            [l] => number(l),
            _ => Err(format!(
                "{name} of {}/{}: {} series",
                p.name,
                extra.1,
                found.len()
            )),
        }
    };
    let dir = node.empty_dir(&p.uid);
    let (du, got) = (
        du_bytes(&dir)?,
        pick("kubedf_ephemeral_volume_used_bytes", ("volume", VOLUME))?,
    );
    if du != got {
        return Err(format!(
            "{}: kubedf {got} bytes, du -sxB1 {du}",
            dir.display()
        ));
    }
    let c0 = container_name(0);
    let log_dir = logs
        .iter()
        .filter_map(|l| l.parent())
        .find(|d| {
            d.ends_with(&c0)
                && d.parent()
                    .and_then(Path::file_name)
                    .is_some_and(|n| n.to_string_lossy().ends_with(&p.uid))
        })
        .ok_or_else(|| format!("no log dir of {}/{c0}", p.name))?;
    let (du, got) = (
        du_bytes(log_dir)?,
        pick("kubedf_container_logs_used_bytes", ("container", &c0))?,
    );
    if du != got {
        return Err(format!(
            "{}: kubedf {got} bytes, du -sxB1 {du}",
            log_dir.display()
        ));
    }
    let filter = testkit::cri::proto::ContainerStatsFilter {
        label_selector: [
            ("io.kubernetes.pod.uid".to_owned(), p.uid.clone()),
            ("io.kubernetes.container.name".to_owned(), c0.clone()),
        ]
        .into(),
        ..Default::default()
    };
    let stats = cri.list_container_stats(filter)?;
    let [stats] = &stats[..] else {
        return Err(format!(
            "ListContainerStats for {}/{c0}: {} answers",
            p.name,
            stats.len()
        ));
    };
    let layer = stats
        .writable_layer
        .as_ref()
        .and_then(|w| w.used_bytes.as_ref())
        .map(|v| v.value)
        .ok_or("ListContainerStats: no writable_layer.used_bytes")?;
    let got = pick("kubedf_container_rootfs_used_bytes", ("container", &c0))?;
    if got != layer {
        return Err(format!(
            "{}/{c0} rootfs: kubedf {got} bytes, ListContainerStats {layer}",
            p.name
        ));
    }
    Ok(())
}

/// The off-run has no pod-half series at all.
fn check_off(text: &str) -> Result<(), String> {
    let pod_half = samples(text)
        .into_iter()
        .filter(|l| {
            l.name.starts_with("kubedf_pod_")
                || l.name.starts_with("kubedf_container_")
                || l.name.starts_with("kubedf_ephemeral_volume_")
        })
        .count();
    if pod_half > 0 {
        return Err(format!("the off-run exposes {pod_half} pod-half series"));
    }
    Ok(())
}

fn du_bytes(path: &Path) -> Result<u64, String> {
    let out = Command::new("du")
        .arg("-sxB1")
        .arg(path)
        .output()
        .map_err(|e| format!("run du: {e}"))?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| {
            format!(
                "du -sxB1 {}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

type Client = reqwest::blocking::Client;

fn gzip_client() -> Result<Client, String> {
    // Decompressed here, not by reqwest, to see that kubedf did gzip.
    Client::builder()
        .timeout(Duration::from_secs(30))
        .gzip(false)
        .build()
        .map_err(|e| format!("http client: {e}"))
}

/// One gzip scrape and the scraped process' memory right after it.
struct Scrape {
    text: String,
    gzip_bytes: usize,
    rss_kib: u64,
}

#[derive(Default)]
struct Scrapes {
    on: Vec<Scrape>,
    off: Vec<Scrape>,
}

fn scrape(client: &Client, served: &Served) -> Result<Scrape, String> {
    let url = served.url("/metrics");
    let r = client
        .get(&url)
        .header("Accept-Encoding", "gzip")
        .send()
        .map_err(|e| format!("GET {url}: {e}"))?;
    if r.status() != 200 {
        return Err(format!("GET {url}: {}", r.status()));
    }
    let encoding = r
        .headers()
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if encoding != "gzip" {
        return Err(format!(
            "GET {url}: Content-Encoding {encoding:?}, asked for gzip"
        ));
    }
    let body = r.bytes().map_err(|e| format!("GET {url}: body: {e}"))?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(&body[..])
        .read_to_string(&mut text)
        .map_err(|e| format!("GET {url}: gunzip: {e}"))?;
    Ok(Scrape {
        text,
        gzip_bytes: body.len(),
        rss_kib: testkit::procstat::status_number(served.child.id(), "VmRSS")?,
    })
}

/// CPU ticks of a set of processes over a window, their VmRSS and VmHWM at
/// its end.
struct Meter {
    name: String,
    pids: Vec<u32>,
    start_ticks: u64,
    start: Instant,
    end_ticks: u64,
    elapsed: Duration,
    rss_kib: u64,
    hwm_kib: u64,
}

impl Meter {
    fn new(name: &str, pids: Vec<u32>) -> Result<Meter, String> {
        let start_ticks = cpu_ticks(&pids)?;
        Ok(Meter {
            name: name.to_owned(),
            pids,
            start_ticks,
            start: Instant::now(),
            end_ticks: start_ticks,
            elapsed: Duration::ZERO,
            rss_kib: 0,
            hwm_kib: 0,
        })
    }

    fn stop(&mut self) -> Result<(), String> {
        self.end_ticks = cpu_ticks(&self.pids)?;
        self.elapsed = self.start.elapsed();
        self.rss_kib = self
            .pids
            .iter()
            .map(|p| testkit::procstat::status_number(*p, "VmRSS"))
            .sum::<Result<u64, String>>()?;
        self.hwm_kib = self
            .pids
            .iter()
            .map(|p| testkit::procstat::status_number(*p, "VmHWM"))
            .sum::<Result<u64, String>>()?;
        Ok(())
    }

    fn ticks(&self) -> u64 {
        self.end_ticks - self.start_ticks
    }

    fn cpu_per_min(&self, tick: f64) -> f64 {
        self.ticks() as f64 / tick / (self.elapsed.as_secs_f64() / 60.0)
    }
}

/// utime+stime of every thread of the processes, living and dead.
fn cpu_ticks(pids: &[u32]) -> Result<u64, String> {
    pids.iter()
        .map(|pid| {
            let path = format!("/proc/{pid}/stat");
            let stat = std::fs::read_to_string(&path).map_err(|e| format!("read {path}: {e}"))?;
            // Fields after the command, which may hold spaces and parens.
            let fields: Vec<&str> = stat
                .rsplit_once(')')
                .map(|(_, rest)| rest.split_whitespace().collect())
                .unwrap_or_default();
            let field = |i: usize| -> Result<u64, String> {
                fields
                    .get(i)
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| format!("{path}: no field {}", i + 3))
            };
            // utime and stime are fields 14 and 15; `fields` starts at 3.
            Ok(field(11)? + field(12)?)
        })
        .sum()
}

/// Ticks the whole machine spent busy (user, nice, system, irq, softirq,
/// steal), from /proc/stat.
fn machine_busy_ticks() -> Result<u64, String> {
    let stat =
        std::fs::read_to_string("/proc/stat").map_err(|e| format!("read /proc/stat: {e}"))?;
    let cpu: Vec<u64> = stat
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("cpu "))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    match cpu[..] {
        [user, nice, system, _idle, _iowait, irq, softirq, steal, ..] => {
            Ok(user + nice + system + irq + softirq + steal)
        }
        _ => Err(format!("/proc/stat: cpu line {cpu:?}")),
    }
}

/// `getconf CLK_TCK`: the unit of /proc's CPU times.
fn clock_ticks() -> Result<f64, String> {
    let out = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .map_err(|e| format!("run getconf CLK_TCK: {e}"))?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|t| *t > 0.0)
        .ok_or_else(|| "getconf CLK_TCK printed no number".into())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The shims of this run's containerd: `containerd-shim-runc-v2` processes
/// whose command line names its socket.
fn shim_pids(socket: &Path) -> Result<Vec<u32>, String> {
    let socket = socket.to_string_lossy();
    let shims: Vec<u32> = processes()
        .into_iter()
        .filter(|(_, argv, _)| {
            argv.first()
                .is_some_and(|a| a.ends_with("containerd-shim-runc-v2"))
                && argv.iter().any(|a| a.contains(&*socket))
        })
        .map(|(pid, _, _)| pid)
        .collect();
    if shims.is_empty() {
        return Err(format!("no containerd-shim-runc-v2 names {socket}"));
    }
    Ok(shims)
}

/// Every process: (pid, argv, parent pid).
fn processes() -> Vec<(u32, Vec<String>, u32)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let argv = cmdline
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let ppid = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some((pid, argv, ppid))
        })
        .collect()
}

/// The last line of defence, dropped last: kills what is still running of
/// this run (processes whose command line names the run's dir, i.e. shims
/// whose containerd died first, and their children, the containers' init
/// processes), unmounts what is still mounted under the dir, removes it.
struct Sweep {
    base: PathBuf,
}

impl Drop for Sweep {
    fn drop(&mut self) {
        let base = self.base.to_string_lossy().into_owned();
        let all = processes();
        let ours: Vec<u32> = all
            .iter()
            .filter(|(pid, argv, _)| {
                *pid != std::process::id() && argv.iter().any(|a| a.contains(&base))
            })
            .map(|(pid, _, _)| *pid)
            .collect();
        let children: Vec<u32> = all
            .iter()
            .filter(|(pid, _, ppid)| ours.contains(ppid) && !ours.contains(pid))
            .map(|(pid, _, _)| *pid)
            .collect();
        if !ours.is_empty() {
            eprintln!(
                "pods bench: killing {} leftover processes of this run and {} children",
                ours.len(),
                children.len()
            );
        }
        for pid in children.iter().chain(&ours) {
            let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
        }
        // runc's cgroups of the tasks this run's containerd knew (removed by
        // the runtime on a clean stop; left behind when it died first).
        let tasks = self
            .base
            .join("cd/state/io.containerd.runtime.v2.task/k8s.io");
        let ids: Vec<String> = std::fs::read_dir(&tasks)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        let controllers: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
            .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        for id in &ids {
            for c in controllers.iter().chain([&PathBuf::from("/sys/fs/cgroup")]) {
                let cgroup = c.join("k8s.io").join(id);
                // Killed processes take a moment to leave their cgroup.
                for _ in 0..20 {
                    if !cgroup.is_dir() || std::fs::remove_dir(&cgroup).is_ok() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                if cgroup.is_dir() {
                    eprintln!("pods bench: cannot remove cgroup {}", cgroup.display());
                }
            }
        }
        if let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") {
            let mut mounts: Vec<PathBuf> = info
                .lines()
                .filter_map(|l| l.split(' ').nth(4))
                .map(|m| {
                    PathBuf::from(String::from_utf8_lossy(&unescape_mountinfo(m)).into_owned())
                })
                .filter(|m| m.starts_with(&self.base))
                .collect();
            // Deepest first.
            mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
            for m in mounts {
                eprintln!("pods bench: unmounting leftover {}", m.display());
                if let Err(e) = nix::mount::umount2(&m, MntFlags::MNT_DETACH) {
                    eprintln!("pods bench: umount {}: {e}", m.display());
                }
            }
        }
        // The pods' trees first, 8 at a time: on a filesystem mounted with
        // `discard` (as here) each unlink waits for the disk, and 1,000,000
        // of them one after the other take a quarter of an hour.
        let pods: Vec<PathBuf> = std::fs::read_dir(self.base.join("kubelet/pods"))
            .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        let next = AtomicUsize::new(0);
        let t = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    while let Some(p) = pods.get(next.fetch_add(1, Ordering::SeqCst)) {
                        let _ = std::fs::remove_dir_all(p);
                    }
                });
            }
        });
        match std::fs::remove_dir_all(&self.base) {
            Ok(()) => eprintln!("pods bench: removed the tree in {:.0?}", t.elapsed()),
            Err(e) => eprintln!("pods bench: remove {}: {e}", self.base.display()),
        }
    }
}

fn path_str(p: &Path) -> Result<&str, String> {
    p.to_str()
        .ok_or_else(|| format!("path {} is not UTF-8", p.display()))
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The figures, as Markdown.
struct Report<'a> {
    args: &'a Args,
    bin: &'a Path,
    warm_up: Duration,
    side_by_side: Duration,
    /// kubedf on, kubedf off, containerd, shims (side by side).
    meters: &'a [Meter],
    /// containerd, shims, with kubedf on stopped.
    baseline: &'a [Meter],
    scrapes: &'a Scrapes,
    tick: f64,
    others_per_min: f64,
    load_start: String,
    load_end: String,
}

impl Report<'_> {
    fn print(&self) {
        let a = self.args;
        let [on, off, containerd, shims] = self.meters else {
            return;
        };
        let [containerd_base, shims_base] = self.baseline else {
            return;
        };
        let cpu = |m: &Meter| m.cpu_per_min(self.tick);
        let mib = |kib: u64| kib as f64 * 1024.0 / MIB;
        let mean = |v: &[Scrape], f: fn(&Scrape) -> f64| {
            v.iter().map(f).sum::<f64>() / v.len().max(1) as f64
        };
        let minutes = self.side_by_side.as_secs_f64() / 60.0;
        println!(
            "\n### {} pods × {} containers under containerd, {} emptyDir files, {:.1} minutes\n",
            a.pods,
            a.pods * a.containers,
            thousands(a.pods * a.files),
            minutes
        );
        println!(
            "| pods | containers | emptyDir files | minutes | CPU s/min on | CPU s/min off | CPU difference | RSS MiB on | RSS MiB off | RSS difference |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|");
        println!(
            "| {} | {} | {} | {:.1} | {:.3} | {:.3} | {:+.3} | {:.1} | {:.1} | {:+.1} |",
            a.pods,
            a.pods * a.containers,
            thousands(a.pods * a.files),
            minutes,
            cpu(on),
            cpu(off),
            cpu(on) - cpu(off),
            mib(on.rss_kib),
            mib(off.rss_kib),
            mib(on.rss_kib) - mib(off.rss_kib)
        );
        println!();
        println!("| | pod_storage on | pod_storage off | difference |");
        println!("|---|---|---|---|");
        println!(
            "| VmHWM MiB | {:.1} | {:.1} | {:+.1} |",
            mib(on.hwm_kib),
            mib(off.hwm_kib),
            mib(on.hwm_kib) - mib(off.hwm_kib)
        );
        let lines = |s: &Scrape| s.text.lines().filter(|l| !l.starts_with('#')).count() as f64;
        let (son, soff) = (&self.scrapes.on[..], &self.scrapes.off[..]);
        println!(
            "| series per scrape | {:.0} | {:.0} | {:+.0} |",
            mean(son, lines),
            mean(soff, lines),
            mean(son, lines) - mean(soff, lines)
        );
        let gz = |s: &Scrape| s.gzip_bytes as f64 / 1024.0;
        println!(
            "| gzip KiB per scrape | {:.1} | {:.1} | {:+.1} |",
            mean(son, gz),
            mean(soff, gz),
            mean(son, gz) - mean(soff, gz)
        );
        let rss = |s: &Scrape| s.rss_kib as f64 / 1024.0;
        println!(
            "| VmRSS MiB, mean of the {} scrapes | {:.1} | {:.1} | {:+.1} |",
            son.len(),
            mean(son, rss),
            mean(soff, rss),
            mean(son, rss) - mean(soff, rss)
        );
        println!(
            "| until every pod's figures were in /metrics | {:.0} s | | |",
            self.warm_up.as_secs_f64()
        );
        println!();
        println!(
            "| the runtime, CPU s/min | with kubedf on and off running | with kubedf off only | difference |"
        );
        println!("|---|---|---|---|");
        for (name, with, without) in [
            ("containerd", containerd, containerd_base),
            (shims.name.as_str(), shims, shims_base),
        ] {
            println!(
                "| {name} | {:.3} | {:.3} | {:+.3} |",
                cpu(with),
                cpu(without),
                cpu(with) - cpu(without)
            );
        }
        println!(
            "| containerd RSS MiB (end of each window) | {:.1} | {:.1} | |",
            mib(containerd.rss_kib),
            mib(containerd_base.rss_kib)
        );
        println!();
        println!(
            "kubedf: {} ({}), git {}; load average at start {} / end {}; {} CPUs; \
             other processes used {:.2} CPU s/min during the side-by-side window.",
            self.bin.display(),
            profile(self.bin),
            git_revision(),
            self.load_start,
            self.load_end,
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            self.others_per_min
        );
    }
}

fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn profile(bin: &Path) -> &'static str {
    let s = bin.to_string_lossy();
    if s.contains("/release/") {
        "release build"
    } else if s.contains("/debug/") {
        "debug build"
    } else {
        "build profile unknown"
    }
}

fn git_revision() -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let rev = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    match git(&["status", "--porcelain", "--untracked-files=no"]) {
        Some(s) if !s.is_empty() => format!("{rev} with uncommitted changes"),
        _ => rev,
    }
}
