//! Cluster mode's cost, measured: N fake kubelets of 30 pods each (testkit's
//! fleet, in a child process so that its CPU is not counted) polled through
//! kubedf's one client and the summary decoder, with bounded concurrency.
//! Reports, per cycle, the wall time of a full cycle, kubedf's CPU-ms per
//! node poll (getrusage of this process: all its threads) and its RSS.
//! Cycle 1 pays a TLS handshake per kubelet; later cycles reuse the pooled
//! keep-alive connections.
//!
//! `cargo run --release --example fleet -- 500 5000` (N values; needs
//! openssl). Every run is bounded: three cycles per N.
//!
//! `--wired` (before the N values) measures cluster mode's pipeline as
//! `kubedf serve --mode=cluster` wires it: each poll turned into its node's
//! figures in its own task (`cluster::Polled::of`) and applied to the
//! per-node table (`cluster::apply`), the summaries dropped as they come;
//! then the table held (RSS), `/metrics` rendered from it (the cluster
//! collector, as a scrape renders it) and one node's page. Wired cycle 2
//! reads every kubelet's `/configz` too (as `serve` does at a node's first
//! good poll), so cycles 2 and 3 differ by that read alone.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kubedf::sources::fleet::poll_all;
use kubedf::sources::kubelet_client::{KubeletClient, KubeletClientOptions};
use kubedf::sources::nodes::KubeletNode;

const PODS: usize = 30;
const CONCURRENCY: usize = 64;
const CYCLES: usize = 3;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // As `kubedf serve` sets up its allocator.
    kubedf::exec::heap::configure();
    if args.first().map(String::as_str) == Some("--serve") {
        serve(&args[1..]);
        return;
    }
    let wired = args.first().map(String::as_str) == Some("--wired");
    let args = if wired { &args[1..] } else { &args[..] };
    let sizes: Vec<usize> = if args.is_empty() {
        vec![500, 5000]
    } else {
        args.iter().map(|a| a.parse().expect("N")).collect()
    };
    for n in sizes {
        measure(n, wired);
    }
}

/// The child: the fleet, its ports on stdout, until stdin closes.
fn serve(args: &[String]) {
    let n: usize = args[0].parse().expect("N");
    let dir = std::path::PathBuf::from(&args[1]);
    let fleet = testkit::kubelet_fleet::KubeletFleet::start(
        n,
        PODS,
        &dir.join("fleet.crt"),
        &dir.join("fleet.key"),
    );
    let mut out = String::new();
    for i in 0..n {
        out.push_str(&format!("{}\n", fleet.addr(i)));
    }
    println!("{out}ready");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

/// This process's CPU time (user + system, all threads), in ms; 10 ms
/// resolution.
fn cpu_ms() -> f64 {
    testkit::procstat::cpu_ms(std::process::id()).unwrap_or(0.0)
}

/// `field` (`VmRSS`, `VmHWM`) of this process, in KiB.
fn rss_kib(field: &str) -> u64 {
    testkit::procstat::status_number(std::process::id(), field).unwrap_or(0)
}

fn measure(n: usize, wired: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let ips: Vec<_> = (0..n).map(testkit::kubelet_fleet::node_ip).collect();
    testkit::tls::make_fleet_certs(dir.path(), &ips);
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .args(["--serve", &n.to_string(), &dir.path().display().to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("fleet process");
    let mut nodes = Vec::with_capacity(n);
    let stdout = child.stdout.take().expect("stdout");
    for (i, line) in BufReader::new(stdout).lines().enumerate() {
        let line = line.expect("line");
        if line == "ready" {
            break;
        }
        let addr: std::net::SocketAddr = line.parse().expect("addr");
        nodes.push(KubeletNode {
            name: testkit::kubelet_fleet::node_name(i),
            uid: String::new(),
            address: addr.ip().to_string(),
            port: addr.port(),
        });
    }
    assert_eq!(nodes.len(), n);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (_stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(kubedf::exec::heap::run(Duration::from_millis(100), stopped));
        let mut config = kube::Config::new("https://127.0.0.1:6443".parse().expect("url"));
        config.auth_info.token = Some(testkit::kubelet_fleet::FLEET_TOKEN.to_owned().into());
        let opts = KubeletClientOptions {
            ca_file: Some(dir.path().join("fleet-ca.crt")),
            timeout: Duration::from_secs(10),
            // FLEET_KEEPALIVE=0: a new connection per poll, to compare.
            max_idle_per_kubelet: std::env::var("FLEET_KEEPALIVE")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(1),
            ..KubeletClientOptions::default()
        };
        let client = KubeletClient::new(config, &opts).expect("client");
        println!(
            "N={n} nodes x {PODS} pods, concurrency {CONCURRENCY}, RSS before: {} KiB",
            rss_kib("VmRSS")
        );
        if wired {
            measure_wired(&client, &nodes).await;
            return;
        }
        for cycle in 1..=CYCLES {
            let (cpu0, t0) = (cpu_ms(), Instant::now());
            let polls = poll_all(&client, nodes.clone(), CONCURRENCY, Duration::ZERO).await;
            let wall = t0.elapsed();
            let cpu = cpu_ms() - cpu0;
            let ok = polls.iter().filter(|p| p.result.is_ok()).count();
            let pods: usize = polls
                .iter()
                .filter_map(|p| p.result.as_ref().ok())
                .map(|d| d.summary.pods.len())
                .sum();
            let mut durations: Vec<Duration> = polls.iter().map(|p| p.duration).collect();
            durations.sort();
            let p99 = durations.get(durations.len() * 99 / 100).copied().unwrap_or_default();
            if let Some(bad) = polls.iter().find(|p| p.result.is_err()) {
                println!("  first failure: {:?}", bad.result.as_ref().err());
            }
            println!(
                "  cycle {cycle}: {ok}/{n} nodes ({pods} pods) in {:.2} s wall, {:.3} CPU-ms per node poll, p99 poll {:.1} ms, RSS {} KiB (peak {} KiB)",
                wall.as_secs_f64(),
                cpu / n as f64,
                p99.as_secs_f64() * 1000.0,
                rss_kib("VmRSS"),
                rss_kib("VmHWM")
            );
            drop(polls);
            // As kubedf serve trims its heap after a peak.
            kubedf::exec::heap::after_peak();
            tokio::time::sleep(Duration::from_millis(500)).await;
            println!(
                "    after the cycle's results are dropped and the heap trimmed: RSS {} KiB",
                rss_kib("VmRSS")
            );
        }
    });
    drop(child.stdin.take());
    let _ = child.wait();
}

/// The bytes the table's figures allocate (without the allocator's own
/// overhead).
fn table_bytes(
    table: &std::collections::BTreeMap<String, std::sync::Arc<kubedf::model::cluster::NodeEntry>>,
) -> usize {
    table
        .iter()
        .map(|(name, entry)| {
            name.len()
                + std::mem::size_of::<kubedf::model::cluster::NodeEntry>()
                + entry.figures.as_ref().map_or(0, |f| f.allocated())
        })
        .sum()
}

/// Cluster mode's pipeline as `serve` wires it: polls turned into figures
/// and applied to the table as they come, then the table rendered.
async fn measure_wired(client: &KubeletClient, nodes: &[KubeletNode]) {
    use kubedf::cluster::{Polled, apply};
    use kubedf::model::cluster::{ClusterTable, NodeEntry};
    use std::collections::BTreeMap;
    use std::sync::Arc;
    let n = nodes.len();
    let mut table: BTreeMap<String, Arc<NodeEntry>> = BTreeMap::new();
    for cycle in 1..=CYCLES {
        let (cpu0, t0) = (cpu_ms(), Instant::now());
        let (mut ok, mut configz) = (0usize, 0usize);
        kubedf::sources::fleet::poll_each(
            client,
            nodes.to_vec(),
            CONCURRENCY,
            |_| Duration::ZERO,
            |_| cycle == 2,
            Polled::of,
            |polled| {
                ok += usize::from(polled.result.is_ok());
                configz += usize::from(matches!(polled.configz, Some(Ok(_))));
                let name = polled.node.clone();
                let entry = apply(table.get(&name).map(|e| &**e), polled, 3);
                table.insert(name, Arc::new(entry));
            },
        )
        .await;
        let wall = t0.elapsed();
        let cpu = cpu_ms() - cpu0;
        println!(
            "  wired cycle {cycle}: {ok}/{n} nodes ({configz} /configz read) in {:.2} s wall, {:.3} CPU-ms per node poll (decode + figures + table), RSS {} KiB (peak {} KiB)",
            wall.as_secs_f64(),
            cpu / n as f64,
            rss_kib("VmRSS"),
            rss_kib("VmHWM")
        );
        kubedf::exec::heap::after_peak();
        tokio::time::sleep(Duration::from_millis(500)).await;
        println!(
            "    the table of {n} nodes held, heap trimmed: RSS {} KiB; the table's own allocations: {} KiB",
            rss_kib("VmRSS"),
            table_bytes(&table) / 1024
        );
    }
    let mut snapshot = kubedf::model::Snapshot::new(
        Arc::new(kubedf::kubelet::config::KubeletConfig::defaults(
            std::path::PathBuf::new(),
        )),
        kubedf::model::NodeSample::unsampled(std::time::SystemTime::now()),
        None,
    );
    snapshot.cluster = Some(Arc::new(ClusterTable {
        nodes: table.clone(),
        synced: true,
        watch_error: None,
    }));
    let registry = kubedf::registry::Registry::of(vec![Box::new(
        kubedf::collector::cluster::ClusterCollector,
    )]);
    for _ in 0..2 {
        let (cpu0, t0) = (cpu_ms(), Instant::now());
        let text = registry.render_as(&snapshot, kubedf::exposition::Format::OpenMetrics100);
        println!(
            "  /metrics of {n} nodes: {} series, {:.1} MiB, rendered in {:.0} ms wall, {:.0} CPU-ms, RSS {} KiB (peak {} KiB)",
            text.lines().filter(|l| !l.starts_with('#')).count(),
            text.len() as f64 / (1 << 20) as f64,
            t0.elapsed().as_secs_f64() * 1000.0,
            cpu_ms() - cpu0,
            rss_kib("VmRSS"),
            rss_kib("VmHWM")
        );
    }
    let table = snapshot.cluster.as_ref().expect("table");
    let name = testkit::kubelet_fleet::node_name(n / 2);
    let t0 = Instant::now();
    let rounds = 200u32;
    let mut len = 0;
    for _ in 0..rounds {
        len = kubedf::collector::cluster::render_node(
            table,
            &name,
            kubedf::exposition::Format::OpenMetrics100,
        )
        .map_or(0, |t| t.len());
    }
    println!(
        "  /nodes/{name}/metrics: {len} bytes, {:.3} ms per render",
        t0.elapsed().as_secs_f64() * 1000.0 / f64::from(rounds)
    );
}
