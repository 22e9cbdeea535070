//! Cluster mode sharded, measured end to end: N fake kubelets of 30 pods
//! each (testkit's fleet, in this process), the fake API server serving
//! their Node objects, and K real `kubedf serve --mode=cluster
//! --total-shards=K --shard=i` processes polling them every
//! `--cluster.poll-interval`. Waits until every replica has polled each of
//! its nodes, then for one more interval, and reports per replica: the
//! nodes it holds (and that none is held twice and none is missed), its CPU
//! over that interval (from /proc/PID/stat: the process alone, not the
//! fleet) per node poll, its RSS, and its `/metrics` size.
//!
//! `cargo build --release && cargo run --release --example fleet_shards --
//! 5000 4` (N, K; needs openssl). Bounded: gives up after 10 minutes.
//! `KUBEDF_BIN` names another kubedf binary (default: target/release/kubedf).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PODS: usize = 30;
const INTERVAL: Duration = Duration::from_secs(30);
const GIVE_UP: Duration = Duration::from_secs(600);

struct Replica {
    shard: usize,
    child: Child,
    addr: String,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("N and K, numbers"))
        .collect();
    let (n, k) = (
        args.first().copied().unwrap_or(5000),
        args.get(1).copied().unwrap_or(4),
    );
    let bin = std::env::var("KUBEDF_BIN")
        .unwrap_or_else(|_| format!("{}/target/release/kubedf", env!("CARGO_MANIFEST_DIR")));
    let dir = tempfile::tempdir().expect("tempdir");
    let fleet = testkit::kubelet_fleet::KubeletFleet::start_in(dir.path(), n, PODS);
    let fake = testkit::fake_kube::FakeKube::start();
    fleet.put_nodes(&fake);
    let kubeconfig = dir.path().join("kubeconfig");
    fake.write_kubeconfig_with_token(&kubeconfig, testkit::kubelet_fleet::FLEET_TOKEN)
        .expect("kubeconfig");
    let replicas: Vec<Replica> = (0..k)
        .map(|shard| start(&bin, &kubeconfig, dir.path(), shard, k))
        .collect();
    println!(
        "N={n} kubelets x {PODS} pods, K={k} replicas, --cluster.poll-interval={}s",
        INTERVAL.as_secs()
    );

    // Until every replica has polled each of its nodes once.
    let started = Instant::now();
    let held = loop {
        let held: Vec<BTreeSet<String>> = replicas.iter().map(polled_nodes).collect();
        let total: usize = held.iter().map(BTreeSet::len).sum();
        if total >= n {
            break held;
        }
        assert!(
            started.elapsed() < GIVE_UP,
            "only {total}/{n} nodes polled after {GIVE_UP:?}"
        );
        std::thread::sleep(Duration::from_secs(2));
    };
    println!(
        "every node polled once after {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // One more interval, steady: the CPU it costs each replica.
    let cpu0: Vec<f64> = replicas.iter().map(|r| cpu_ms(r.child.id())).collect();
    let t0 = Instant::now();
    std::thread::sleep(INTERVAL);
    let wall = t0.elapsed();
    let mut all = BTreeMap::<String, usize>::new();
    println!(
        "| shard | nodes held | share | CPU over one interval | CPU-ms per node poll | RSS | /metrics |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (r, c0) in replicas.iter().zip(&cpu0) {
        let cpu = cpu_ms(r.child.id()) - c0;
        let nodes = &held[r.shard];
        for node in nodes {
            *all.entry(node.clone()).or_default() += 1;
        }
        // Polls in the interval: each node once per interval.
        let polls = nodes.len() as f64 * wall.as_secs_f64() / INTERVAL.as_secs_f64();
        let body = get(&r.addr, "/metrics");
        println!(
            "| {} | {} | {:.1}% | {:.0} ms | {:.3} | {:.1} MiB | {:.1} MiB |",
            r.shard,
            nodes.len(),
            100.0 * nodes.len() as f64 / n as f64,
            cpu,
            cpu / polls.max(1.0),
            rss_kib(r.child.id()) as f64 / 1024.0,
            body.len() as f64 / (1 << 20) as f64,
        );
    }
    let twice = all.values().filter(|c| **c > 1).count();
    let missed = (0..n)
        .filter(|i| !all.contains_key(&testkit::kubelet_fleet::node_name(*i)))
        .count();
    println!("nodes held by two replicas: {twice}; nodes held by none: {missed}");
    assert_eq!((twice, missed), (0, 0), "shards overlap or leave nodes out");
}

fn start(
    bin: &str,
    kubeconfig: &std::path::Path,
    dir: &std::path::Path,
    shard: usize,
    total: usize,
) -> Replica {
    let mut child = Command::new(bin)
        .args([
            "serve",
            "--mode=cluster",
            "--web.listen-address=127.0.0.1:0",
            "--log.format=json",
            &format!("--cluster.poll-interval={}s", INTERVAL.as_secs()),
            &format!("--kubeconfig={}", kubeconfig.display()),
            &format!("--kubelet.ca-file={}", dir.join("fleet-ca.crt").display()),
            &format!("--shard={shard}"),
            &format!("--total-shards={total}"),
        ])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{bin}: {e} (cargo build --release first)"));
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines
            .next()
            .and_then(Result::ok)
            .unwrap_or_else(|| panic!("shard {shard}: kubedf exited before serving"));
        if line.contains("serving metrics") {
            let v: serde_json::Value = serde_json::from_str(&line).expect("json log line");
            break v["fields"]["address"].as_str().expect("address").to_owned();
        }
    };
    // Keep draining its log so that it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Replica { shard, child, addr }
}

/// The nodes a replica has polled successfully, from its landing page (a
/// line per node, `<li><a href=...>NAME</a> ok</li>`), which is far
/// lighter to read every few seconds than `/metrics`. The fleet's node
/// names need no HTML escaping.
fn polled_nodes(r: &Replica) -> BTreeSet<String> {
    get(&r.addr, "/")
        .lines()
        .filter_map(|l| l.strip_suffix("</a> ok</li>"))
        .filter_map(|l| l.rsplit_once('>'))
        .map(|(_, node)| node.to_owned())
        .collect()
}

fn get(addr: &str, path: &str) -> String {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
        .get(format!("http://{addr}{path}"))
        .send()
        .and_then(|r| r.text())
        .unwrap_or_default()
}

fn cpu_ms(pid: u32) -> f64 {
    testkit::procstat::cpu_ms(pid).unwrap_or(0.0)
}

fn rss_kib(pid: u32) -> u64 {
    testkit::procstat::status_number(pid, "VmRSS").unwrap_or(0)
}
