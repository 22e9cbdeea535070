//! Cluster mode's building blocks against real-wire peers: a fleet of fake
//! kubelets answering `/stats/summary` over HTTPS (testkit::kubelet_fleet)
//! and the fake API server serving Node objects and their watch events.
//! Polls every node through the one client and checks every figure; a hung
//! kubelet costs its slot until the deadline and nothing else; 401, 403, a
//! truncated body and a certificate from another CA are errors naming the
//! node; a node deleted mid-run leaves the node list; two shards split the
//! nodes without overlap.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kubedf::sources::fleet::{PollError, poll_all, poll_summary};
use kubedf::sources::kubelet_client::{KubeletClient, KubeletClientError, KubeletClientOptions};
use kubedf::sources::nodes::{AddressTypes, KubeletNode, NodeList};
use kubedf::sources::shard::Shard;
use testkit::fake_kube::FakeKube;
use testkit::kubelet_fleet::{self as fleet, Behaviour, KubeletFleet};
use testkit::{need_tools, prerequisites};

const PODS: usize = 30;

fn need_openssl(test: &str) -> bool {
    prerequisites(test, need_tools(&["openssl"]))
}

/// The fleet's certificates in `dir` and a fleet of `n` kubelets.
fn start_fleet(dir: &Path, n: usize) -> KubeletFleet {
    KubeletFleet::start_in(dir, n, PODS)
}

/// A fleet of `n` kubelets and the fake API server serving their Nodes.
fn fleet_with_nodes(dir: &Path, n: usize) -> (KubeletFleet, FakeKube) {
    let fleet = start_fleet(dir, n);
    let fake = FakeKube::start();
    fleet.put_nodes(&fake);
    (fleet, fake)
}

/// A Node `no-port`, whose kubelet port the API does not say.
fn put_portless(fake: &FakeKube, fleet: &KubeletFleet) {
    let mut portless = fleet.node_object(0);
    portless["metadata"]["name"] = "no-port".into();
    portless["status"]["daemonEndpoints"] = serde_json::json!({});
    fake.put_node(portless);
}

/// The API server's configuration as kubedf has it from a kubeconfig: its
/// user's bearer token, and `ca` as the cluster's CA.
async fn api_config(token: &str, ca: &Path) -> kube::Config {
    let yaml = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:6443\n    certificate-authority: {ca}\nusers:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\n",
        ca = ca.display()
    );
    let kc = kube::config::Kubeconfig::from_yaml(&yaml).expect("kubeconfig");
    kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .expect("config")
}

fn options(timeout: Duration) -> KubeletClientOptions {
    KubeletClientOptions {
        timeout,
        ..KubeletClientOptions::default()
    }
}

fn kubelet(fleet: &KubeletFleet, i: usize) -> KubeletNode {
    let addr = fleet.addr(i);
    KubeletNode {
        name: fleet::node_name(i),
        uid: format!("uid-{i}"),
        address: addr.ip().to_string(),
        port: addr.port(),
    }
}

fn api_client(fake: &FakeKube) -> kube::Client {
    let config = kube::Config::new(fake.url().parse().expect("url"));
    kube::Client::try_from(config).expect("client")
}

/// Waits until `list` satisfies `ok`.
async fn wait_for(
    list: &NodeList,
    what: &str,
    ok: impl Fn(&kubedf::sources::nodes::NodeState) -> bool,
) {
    let mut changes = list.subscribe();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok(&list.state()) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "{what}: node list {:?}", list.state());
        let _ = tokio::time::timeout(left, changes.changed()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_polled_with_its_figures_over_kept_alive_connections() {
    if !need_openssl("every_node_polled_with_its_figures_over_kept_alive_connections") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let n = 24;
    let fleet = start_fleet(dir.path(), n);
    // The kubelets' CA is the cluster CA of the kubeconfig.
    let config = api_config(fleet::FLEET_TOKEN, &dir.path().join("fleet-ca.crt")).await;
    let client = KubeletClient::new(config, &options(Duration::from_secs(10))).expect("client");
    let nodes: Vec<KubeletNode> = (0..n).map(|i| kubelet(&fleet, i)).collect();
    for cycle in 0..2 {
        let polls = poll_all(&client, nodes.clone(), 8, Duration::from_millis(200)).await;
        assert_eq!(polls.len(), n);
        for poll in polls {
            let i: usize = poll
                .node
                .trim_start_matches("fleet-node-")
                .parse()
                .expect("index");
            let decoded = poll.result.unwrap_or_else(|e| panic!("cycle {cycle}: {e}"));
            assert!(decoded.skipped.is_empty(), "{:?}", decoded.skipped);
            let s = decoded.summary;
            assert_eq!(s.node.node_name, fleet::node_name(i));
            assert_eq!(
                s.node.fs.and_then(|f| f.used_bytes),
                Some(fleet::node_fs_used(i))
            );
            assert_eq!(
                s.node.rlimit.and_then(|r| r.cur_proc),
                Some(300 + i as i64 % 100)
            );
            assert_eq!(s.pods.len(), PODS);
            for (p, pod) in s.pods.iter().enumerate() {
                let (ns, name) = fleet::pod_ref(p);
                assert_eq!((&pod.namespace, &pod.name), (&ns, &name));
                let app = &pod.containers[0];
                assert_eq!(
                    app.rootfs.and_then(|f| f.used_bytes),
                    Some(fleet::pod_rootfs_used(i, p))
                );
                assert_eq!(
                    app.logs.and_then(|f| f.used_bytes),
                    Some(fleet::pod_logs_used(p))
                );
                assert_eq!(
                    pod.ephemeral_storage.and_then(|f| f.used_bytes),
                    Some(
                        fleet::pod_rootfs_used(i, p)
                            + fleet::pod_logs_used(p)
                            + fleet::pod_cache_used(p)
                    )
                );
                let pvcs: Vec<_> = pod.volumes.iter().filter_map(|v| v.pvc.clone()).collect();
                if p % 2 == 0 {
                    assert_eq!(pvcs, [(ns.clone(), format!("data-{name}"))]);
                } else {
                    assert!(pvcs.is_empty());
                }
            }
        }
    }
    // One TLS connection per kubelet, kept alive across both cycles.
    assert_eq!(fleet.connections(), n as u64);
    for i in 0..n {
        assert_eq!(fleet.requests(i), 2, "node {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_kubelet_costs_one_slot_and_each_failure_names_its_node() {
    if !need_openssl("a_hung_kubelet_costs_one_slot_and_each_failure_names_its_node") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let n = 12;
    let fleet = start_fleet(dir.path(), n);
    fleet.set(3, Behaviour::Hang);
    fleet.set(5, Behaviour::Unauthorized);
    fleet.set(7, Behaviour::Truncated);
    let config = api_config(fleet::FLEET_TOKEN, &dir.path().join("fleet-ca.crt")).await;
    let timeout = Duration::from_secs(3);
    let client = KubeletClient::new(config, &options(timeout)).expect("client");
    let nodes: Vec<KubeletNode> = (0..n).map(|i| kubelet(&fleet, i)).collect();
    let start = Instant::now();
    // Two slots: were the hung kubelet to hold the cycle (or more than its
    // slot), the eleven others could not all finish before its deadline.
    let polls = poll_all(&client, nodes, 2, Duration::ZERO).await;
    let cycle = start.elapsed();
    assert!(cycle < timeout * 2, "the cycle took {cycle:?}");
    assert_eq!(polls.len(), n);
    for poll in &polls {
        let url = format!(
            "https://{}/stats/summary",
            fleet.addr(
                poll.node
                    .trim_start_matches("fleet-node-")
                    .parse()
                    .expect("index"),
            )
        );
        match (poll.node.as_str(), &poll.result) {
            ("fleet-node-3", Err(PollError::Kubelet(e @ KubeletClientError::Timeout { .. }))) => {
                assert_eq!(
                    e.to_string(),
                    format!("node fleet-node-3: {url}: no whole answer within 3s")
                );
                assert!(poll.duration >= timeout, "{:?}", poll.duration);
            }
            (
                "fleet-node-5",
                Err(PollError::Kubelet(e @ KubeletClientError::Unauthorized { .. })),
            ) => {
                assert_eq!(
                    e.to_string(),
                    format!(
                        "node fleet-node-5: {url}: HTTP 401 unauthorized: the kubelet refused kubedf's credentials (Unauthorized)"
                    )
                );
            }
            ("fleet-node-7", Err(PollError::Kubelet(e @ KubeletClientError::Body { .. }))) => {
                assert!(
                    e.to_string().starts_with(&format!(
                        "node fleet-node-7: {url}: the body could not be read whole: "
                    )),
                    "{e}"
                );
            }
            (node, Ok(d)) if !["fleet-node-3", "fleet-node-5", "fleet-node-7"].contains(&node) => {
                assert_eq!(d.summary.pods.len(), PODS);
                assert!(poll.duration < timeout, "{node}: {:?}", poll.duration);
            }
            (node, other) => panic!("{node}: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_other_ca_insecure_and_ca_file() {
    if !need_openssl("forbidden_other_ca_insecure_and_ca_file") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let fleet = start_fleet(dir.path(), 2);
    let node = kubelet(&fleet, 1);
    let url =
        kubedf::sources::kubelet_client::kubelet_url(&node.address, node.port, "/stats/summary");
    let fleet_ca = dir.path().join("fleet-ca.crt");

    // A valid token of an account without nodes/stats.
    let config = api_config(fleet::READER_TOKEN, &fleet_ca).await;
    let client = KubeletClient::new(config, &options(Duration::from_secs(5))).expect("client");
    let e = poll_summary(&client, &node).await.expect_err("403");
    assert_eq!(
        e.to_string(),
        format!(
            "node fleet-node-1: {url}: HTTP 403 forbidden: kubedf's service account needs get on nodes/stats (Forbidden (user=system:serviceaccount:monitoring:reader, verb=get, resource=nodes, subresource(s)=[stats]))"
        )
    );

    // The cluster CA is another CA: the kubelet's certificate is refused...
    let other = tempfile::tempdir().expect("tempdir");
    testkit::tls::make_certs(other.path());
    let config = api_config(fleet::FLEET_TOKEN, &other.path().join("ca.crt")).await;
    let client =
        KubeletClient::new(config.clone(), &options(Duration::from_secs(5))).expect("client");
    let e = poll_summary(&client, &node).await.expect_err("unknown CA");
    assert!(
        matches!(e, PollError::Kubelet(KubeletClientError::Tls { .. })),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .starts_with(&format!("node fleet-node-1: {url}: TLS: ")),
        "{e}"
    );
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");
    // ...unless --kubelet.ca-file names the kubelets' CA...
    let with_ca = KubeletClientOptions {
        ca_file: Some(fleet_ca.clone()),
        ..options(Duration::from_secs(5))
    };
    let client = KubeletClient::new(config.clone(), &with_ca).expect("client");
    poll_summary(&client, &node)
        .await
        .expect("verified against --kubelet.ca-file");
    // ...or verification is skipped, as asked.
    let insecure = KubeletClientOptions {
        insecure_skip_tls_verify: true,
        ..options(Duration::from_secs(5))
    };
    let client = KubeletClient::new(config, &insecure).expect("client");
    poll_summary(&client, &node).await.expect("unverified");

    // A body over the cap.
    let config = api_config(fleet::FLEET_TOKEN, &fleet_ca).await;
    let small = KubeletClientOptions {
        max_body: 4096,
        ..options(Duration::from_secs(5))
    };
    let client = KubeletClient::new(config, &small).expect("client");
    let e = poll_summary(&client, &node).await.expect_err("too large");
    assert_eq!(
        e.to_string(),
        format!("node fleet-node-1: {url}: the body is larger than 4096 bytes")
    );

    // Nothing listening.
    let config = api_config(fleet::FLEET_TOKEN, &fleet_ca).await;
    let client = KubeletClient::new(config, &options(Duration::from_secs(5))).expect("client");
    let gone = KubeletNode { port: 1, ..node };
    let e = poll_summary(&client, &gone).await.expect_err("refused");
    assert!(
        matches!(e, PollError::Kubelet(KubeletClientError::Connection { .. })),
        "{e:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_list_follows_the_api_and_two_shards_split_it() {
    if !need_openssl("the_node_list_follows_the_api_and_two_shards_split_it") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let n = 40;
    let (fleet, fake) = fleet_with_nodes(dir.path(), n);
    // A node whose kubelet port the API does not know: named and skipped.
    put_portless(&fake, &fleet);

    let list = NodeList::new(AddressTypes::default());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(Arc::clone(&list).run(api_client(&fake), stopped));
    wait_for(&list, "all nodes listed", |s| {
        s.synced && s.nodes.len() == n
    })
    .await;
    let state = list.state();
    assert_eq!(
        state.skipped.get("no-port").map(String::as_str),
        Some("node no-port: no status.daemonEndpoints.kubeletEndpoint.Port")
    );
    // Listed from the watch cache, whole.
    let log = fake.request_log();
    let listed: Vec<_> = log
        .iter()
        .filter(|l| l.starts_with("GET /api/v1/nodes?") && !l.contains("watch=true"))
        .collect();
    assert!(!listed.is_empty(), "{log:?}");
    for l in &listed {
        assert!(
            l.contains("resourceVersion=0") && !l.contains("limit="),
            "{l}"
        );
    }

    // The client reaches every listed node.
    let config = api_config(fleet::FLEET_TOKEN, &dir.path().join("fleet-ca.crt")).await;
    let client = KubeletClient::new(config, &options(Duration::from_secs(10))).expect("client");
    let polls = poll_all(&client, list.targets(Shard::ALL), 8, Duration::ZERO).await;
    assert_eq!(polls.iter().filter(|p| p.result.is_ok()).count(), n);

    // Two shards: disjoint, together the whole fleet, each a real share.
    let a: BTreeSet<String> = list
        .targets(Shard::new(0, 2).expect("shard"))
        .into_iter()
        .map(|k| k.name)
        .collect();
    let b: BTreeSet<String> = list
        .targets(Shard::new(1, 2).expect("shard"))
        .into_iter()
        .map(|k| k.name)
        .collect();
    assert!(a.is_disjoint(&b), "{a:?} {b:?}");
    assert_eq!(a.len() + b.len(), n);
    assert!(a.len() >= 8 && b.len() >= 8, "{} / {}", a.len(), b.len());

    // A node deleted mid-run leaves the list; one added joins it.
    fake.delete_node(&fleet::node_name(7));
    wait_for(&list, "node 7 gone", |s| {
        !s.nodes.contains_key("fleet-node-7")
    })
    .await;
    assert_eq!(list.state().nodes.len(), n - 1);
    assert!(
        list.targets(Shard::ALL)
            .iter()
            .all(|k| k.name != "fleet-node-7")
    );
    stop.send(true).expect("stop");
    task.await.expect("watch task");
}

// ---- `kubedf serve --mode=cluster`, the real process ----------------------

use std::collections::BTreeMap;

use testkit::exposition::{promtool_check, samples};
use testkit::{Served, http, kubedf};

const GIB: u64 = 1 << 30;

/// A kubeconfig for the fake API server whose user has the fleet's token.
fn fleet_kubeconfig(dir: &Path, fake: &FakeKube) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    fake.write_kubeconfig_with_token(&path, fleet::FLEET_TOKEN)
        .expect("kubeconfig");
    path
}

/// `kubedf serve --mode=cluster` against `fake` and the fleet whose CA is in
/// `dir`, polling every 2 s under a 1 s deadline.
fn serve_cluster(dir: &Path, fake: &FakeKube, env: &[(&str, &str)], extra: &[&str]) -> Served {
    let kubeconfig = fleet_kubeconfig(dir, fake);
    let ca = dir.join("fleet-ca.crt");
    let mut args = vec![
        "--mode=cluster".to_owned(),
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--kubelet.ca-file={}", ca.display()),
        "--cluster.poll-interval=2s".to_owned(),
        "--kubelet.timeout=1s".to_owned(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    kubedf!().serve_with(&[], env, &args)
}

fn have_promtool() -> bool {
    need_tools(&["promtool"]).is_none()
}

/// Runs `cmd` to its end, killed after 30 s (a refusal is immediate).
fn run_bounded(mut cmd: std::process::Command) -> std::process::Output {
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kubedf");
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

/// An exposition's series: (name, labels) -> value.
type Series = BTreeMap<(String, BTreeMap<String, String>), f64>;

fn series(text: &str) -> Series {
    samples(text)
        .into_iter()
        .map(|l| {
            let v: f64 = l.value.parse().expect("a number");
            ((l.name, l.labels), v)
        })
        .collect()
}

fn get(s: &Series, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let key = (
        name.to_owned(),
        labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
    );
    s.get(&key).copied()
}

/// The nodes with a series of `family`, and its value.
fn per_node(text: &str, family: &str) -> BTreeMap<String, f64> {
    samples(text)
        .into_iter()
        .filter(|l| l.name == family)
        .map(|l| {
            (
                l.labels.get("node").cloned().unwrap_or_default(),
                l.value.parse().expect("a number"),
            )
        })
        .collect()
}

/// Every node of the fleet polled successfully.
fn all_polled(n: usize) -> impl Fn(&str) -> bool {
    move |text: &str| {
        let ok = per_node(text, "kubedf_kubelet_poll_success");
        (0..n).all(|i| ok.get(&fleet::node_name(i)) == Some(&1.0))
    }
}

fn check_node_figures(s: &Series, i: usize) {
    let node = fleet::node_name(i);
    let node = node.as_str();
    let f = |v: u64| Some(v as f64);
    for (family, want) in [
        ("kubedf_nodefs_capacity_bytes", 100 * GIB),
        ("kubedf_nodefs_used_bytes", fleet::node_fs_used(i)),
        (
            "kubedf_nodefs_available_bytes",
            100 * GIB - fleet::node_fs_used(i),
        ),
        ("kubedf_nodefs_inodes", 6553600),
        ("kubedf_nodefs_inodes_used", 400_000),
        ("kubedf_nodefs_inodes_free", 6553600 - 400_000),
    ] {
        assert_eq!(
            get(s, family, &[("path", ""), ("node", node)]),
            f(want),
            "{node} {family}"
        );
    }
    for family in ["kubedf_imagefs", "kubedf_containerfs"] {
        assert_eq!(
            get(
                s,
                &format!("{family}_used_bytes"),
                &[("mountpoint", ""), ("node", node)]
            ),
            f(20 * GIB),
            "{node} {family}"
        );
        assert_eq!(
            get(
                s,
                &format!("{family}_inodes_used"),
                &[("mountpoint", ""), ("node", node)]
            ),
            f(90_000),
            "{node} {family}"
        );
    }
    assert_eq!(
        get(s, "kubedf_rlimit_maxpid", &[("node", node)]),
        f(4194304)
    );
    assert_eq!(
        get(s, "kubedf_rlimit_curproc", &[("node", node)]),
        f(300 + i as u64 % 100)
    );
    for p in 0..PODS {
        let (ns, pod) = fleet::pod_ref(p);
        let (ns, pod) = (ns.as_str(), pod.as_str());
        let rootfs = fleet::pod_rootfs_used(i, p);
        let logs = fleet::pod_logs_used(p);
        let cache = fleet::pod_cache_used(p);
        let pl = [("namespace", ns), ("pod", pod), ("node", node)];
        assert_eq!(
            get(s, "kubedf_pod_ephemeral_storage_used_bytes", &pl),
            f(rootfs + logs + cache),
            "{node} {pod}"
        );
        assert_eq!(
            get(s, "kubedf_pod_ephemeral_storage_inodes_used", &pl),
            f(24)
        );
        let cl = [
            ("namespace", ns),
            ("pod", pod),
            ("container", "app"),
            ("node", node),
        ];
        assert_eq!(get(s, "kubedf_container_rootfs_used_bytes", &cl), f(rootfs));
        assert_eq!(get(s, "kubedf_container_rootfs_inodes_used", &cl), f(12));
        assert_eq!(get(s, "kubedf_container_logs_used_bytes", &cl), f(logs));
        assert_eq!(get(s, "kubedf_container_logs_inodes_used", &cl), f(2));
        let vl = [
            ("namespace", ns),
            ("pod", pod),
            ("volume", "cache"),
            ("kind", ""),
            ("node", node),
        ];
        assert_eq!(get(s, "kubedf_ephemeral_volume_used_bytes", &vl), f(cache));
        assert_eq!(get(s, "kubedf_ephemeral_volume_inodes_used", &vl), f(10));
        let claim = format!("data-{pod}");
        let cl = [
            ("namespace", ns),
            ("persistentvolumeclaim", claim.as_str()),
            ("node", node),
        ];
        let pvc_used = (p as u64 + 1) * 1_000_000;
        let want = |v: u64| if p % 2 == 0 { f(v) } else { None };
        assert_eq!(
            get(s, "kubelet_volume_stats_capacity_bytes", &cl),
            want(GIB)
        );
        assert_eq!(
            get(s, "kubelet_volume_stats_used_bytes", &cl),
            want(pvc_used)
        );
        assert_eq!(
            get(s, "kubelet_volume_stats_available_bytes", &cl),
            want(GIB - pvc_used)
        );
        assert_eq!(get(s, "kubelet_volume_stats_inodes", &cl), want(65536));
        assert_eq!(get(s, "kubelet_volume_stats_inodes_free", &cl), want(65000));
        assert_eq!(get(s, "kubelet_volume_stats_inodes_used", &cl), want(536));
    }
}

/// The headroom families, with a `node` label in cluster mode.
const HEADROOM: [&str; 7] = [
    "kubedf_image_gc_usage_percent",
    "kubedf_image_gc_high_threshold_percent",
    "kubedf_image_gc_low_threshold_percent",
    "kubedf_image_gc_bytes_to_free",
    "kubedf_eviction_signal_available",
    "kubedf_eviction_signal_capacity",
    "kubedf_eviction_threshold",
];

/// A threshold statement of the fake kubelets' configurations in the
/// signal's unit for `capacity`, worked out here by kubelet's rules: a
/// percentage is a float32 fraction (`ParseFloat(.., 32)`, then `/100` in
/// float32) taken of the capacity in float64 and truncated; a quantity is
/// its value.
fn resolve_by_hand(statement: &str, capacity: u64) -> f64 {
    if let Some(number) = statement.strip_suffix('%') {
        let fraction = number.parse::<f32>().expect("a percentage") / 100f32;
        return ((capacity as f64 * f64::from(fraction)) as i64) as f64;
    }
    let value: u64 = match statement {
        "2Gi" => 2 * GIB,
        "5Gi" => 5 * GIB,
        "10Gi" => 10 * GIB,
        "100k" => 100_000,
        "1000" => 1000,
        other => panic!("the fleet writes no {other}"),
    };
    value as f64
}

/// Node `i`'s image GC and eviction series, against kubelet's formulas
/// worked out here from the fake kubelet's figures and configuration.
fn check_node_headroom(s: &Series, i: usize) {
    let node = fleet::node_name(i);
    let node = node.as_str();
    let k = fleet::kubelet_settings(i);
    let (nodefs, imagefs, containerfs) = (
        fleet::node_fs(i),
        fleet::image_fs(i),
        fleet::container_fs(i),
    );
    // Image GC: usage = 100 - int(available*100/capacity); at or over the
    // high threshold, capacity*(100-low)/100 - available to free.
    let (cap, avail) = (imagefs.capacity, imagefs.available());
    let usage = 100 - avail * 100 / cap;
    let to_free = if usage >= u64::from(k.image_gc_high) {
        cap * (100 - u64::from(k.image_gc_low)) / 100 - avail
    } else {
        0
    };
    let n = [("node", node)];
    assert_eq!(
        get(s, "kubedf_image_gc_usage_percent", &n),
        Some(usage as f64),
        "{node}"
    );
    assert_eq!(
        get(s, "kubedf_image_gc_high_threshold_percent", &n),
        Some(f64::from(k.image_gc_high)),
        "{node}"
    );
    assert_eq!(
        get(s, "kubedf_image_gc_low_threshold_percent", &n),
        Some(f64::from(k.image_gc_low)),
        "{node}"
    );
    assert_eq!(
        get(s, "kubedf_image_gc_bytes_to_free", &n),
        Some(to_free as f64),
        "{node}"
    );
    // Eviction: each signal's (available, capacity) as the summary gives
    // them; containerfs takes imagefs' thresholds when containers live on a
    // dedicated image filesystem (layout 1), else nodefs'.
    let pid_available = fleet::MAX_PID - fleet::cur_proc(i);
    let containers_on = if fleet::layout(i) == 1 {
        "imagefs"
    } else {
        "nodefs"
    };
    for (signal, available, capacity, threshold_of) in [
        (
            "nodefs.available",
            nodefs.available(),
            nodefs.capacity,
            "nodefs.available",
        ),
        (
            "nodefs.inodesFree",
            nodefs.inodes_free(),
            nodefs.inodes,
            "nodefs.inodesFree",
        ),
        (
            "imagefs.available",
            imagefs.available(),
            imagefs.capacity,
            "imagefs.available",
        ),
        (
            "imagefs.inodesFree",
            imagefs.inodes_free(),
            imagefs.inodes,
            "imagefs.inodesFree",
        ),
        (
            "containerfs.available",
            containerfs.available(),
            containerfs.capacity,
            if containers_on == "imagefs" {
                "imagefs.available"
            } else {
                "nodefs.available"
            },
        ),
        (
            "containerfs.inodesFree",
            containerfs.inodes_free(),
            containerfs.inodes,
            if containers_on == "imagefs" {
                "imagefs.inodesFree"
            } else {
                "nodefs.inodesFree"
            },
        ),
        (
            "pid.available",
            pid_available,
            fleet::MAX_PID,
            "pid.available",
        ),
    ] {
        let l = [("signal", signal), ("node", node)];
        assert_eq!(
            get(s, "kubedf_eviction_signal_available", &l),
            Some(available as f64),
            "{node} {signal}"
        );
        assert_eq!(
            get(s, "kubedf_eviction_signal_capacity", &l),
            Some(capacity as f64),
            "{node} {signal}"
        );
        for (kind, statements) in [("hard", k.eviction_hard), ("soft", k.eviction_soft)] {
            let want = statements
                .iter()
                .find(|(sig, _)| *sig == threshold_of)
                .map(|(_, statement)| resolve_by_hand(statement, capacity));
            assert_eq!(
                get(
                    s,
                    "kubedf_eviction_threshold",
                    &[("signal", signal), ("kind", kind), ("node", node)]
                ),
                want,
                "{node} {signal} {kind}"
            );
        }
    }
}

#[test]
fn cluster_mode_serves_every_nodes_figures_and_each_node_alone() {
    if !need_openssl("cluster_mode_serves_every_nodes_figures_and_each_node_alone") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let n = 20;
    let (fleet, fake) = fleet_with_nodes(dir.path(), n);
    put_portless(&fake, &fleet);
    let served = serve_cluster(dir.path(), &fake, &[], &[]);
    let text = served.scrape_until(Duration::from_secs(30), "every node polled", all_polled(n));
    let s = series(&text);
    for i in 0..n {
        check_node_figures(&s, i);
        check_node_headroom(&s, i);
        let node = fleet::node_name(i);
        let last = get(
            &s,
            "kubedf_kubelet_last_success_timestamp_seconds",
            &[("node", &node)],
        );
        assert!(last.is_some_and(|t| t > 1.7e9), "{node}: {last:?}");
        assert!(
            get(
                &s,
                "kubedf_kubelet_poll_duration_seconds",
                &[("node", &node)]
            )
            .is_some()
        );
    }
    // The node the watch could not place: health series saying why, nothing else.
    assert_eq!(
        get(&s, "kubedf_kubelet_poll_success", &[("node", "no-port")]),
        Some(0.0)
    );
    assert_eq!(
        get(
            &s,
            "kubedf_kubelet_poll_error",
            &[("node", "no-port"), ("reason", "no_address")]
        ),
        Some(1.0)
    );
    assert!(
        !samples(&text).iter().any(
            |l| l.labels.get("node").map(String::as_str) == Some("no-port")
                && !l.name.starts_with("kubedf_kubelet_poll")
        )
    );
    // Nothing the summary and /configz cannot say: no limits, no kubelet
    // configuration of kubedf's own.
    for absent in [
        "kubedf_pod_ephemeral_storage_limit_bytes",
        "kubedf_container_ephemeral_storage_limit_bytes",
        "kubedf_ephemeral_volume_size_limit_bytes",
        "kubedf_kubelet_config_info",
        "kubedf_cri_info",
    ] {
        assert!(!text.contains(absent), "{absent} in cluster mode");
    }
    // kubedf's own families.
    assert_eq!(
        get(
            &s,
            "kubedf_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    assert!(text.contains("kubedf_scrape_collector_success{collector=\"cluster\"}"));
    if have_promtool() {
        promtool_check(&text).expect("promtool accepts /metrics");
    }

    // One node alone, OpenMetrics and gzip as /metrics.
    let one = http()
        .get(served.url("/nodes/fleet-node-3/metrics"))
        .header("Accept", testkit::OPENMETRICS_ACCEPT)
        .send()
        .expect("scrape one node");
    assert_eq!(one.status(), 200);
    assert!(
        one.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("application/openmetrics-text; version=1.0.0"),
        "{:?}",
        one.headers()
    );
    let one = one.text().expect("body");
    assert!(one.ends_with("# EOF\n"), "{one}");
    let nodes: BTreeSet<String> = samples(&one)
        .into_iter()
        .filter_map(|l| l.labels.get("node").cloned())
        .collect();
    assert_eq!(nodes, BTreeSet::from(["fleet-node-3".to_owned()]));
    check_node_figures(&series(&one), 3);
    check_node_headroom(&series(&one), 3);
    let plain = http()
        .get(served.url("/nodes/fleet-node-3/metrics"))
        .send()
        .expect("scrape one node");
    let plain = plain.text().expect("body");
    if have_promtool() {
        promtool_check(&plain).expect("promtool accepts /nodes/<node>/metrics");
    }
    let gz = http()
        .get(served.url("/nodes/fleet-node-3/metrics"))
        .header("Accept-Encoding", "gzip")
        .send()
        .expect("scrape one node, gzipped");
    assert_eq!(gz.headers()["content-encoding"], "gzip");
    let mut unzipped = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(&gz.bytes().expect("body")[..]),
        &mut unzipped,
    )
    .expect("gunzip");
    assert_eq!(series(&unzipped).len(), series(&plain).len());
    // An unknown node: 404, saying so.
    let missing = http()
        .get(served.url("/nodes/no-such-node/metrics"))
        .send()
        .expect("scrape");
    assert_eq!(missing.status(), 404);
    let why = missing.text().expect("body");
    // The landing page lists the nodes; no /stats/summary of kubedf's own.
    let landing = http().get(served.url("/")).send().expect("landing");
    let landing = landing.text().expect("body");
    assert!(
        landing.contains("<a href=\"/nodes/fleet-node-3/metrics\">fleet-node-3</a> ok"),
        "{landing}"
    );
    assert!(landing.contains("no-port</a> no_address"), "{landing}");
    let summary = http()
        .get(served.url("/stats/summary"))
        .send()
        .expect("summary");
    assert_eq!(summary.status(), 404);
    assert!(
        why.contains("\"no-such-node\" is not one of this kubedf's nodes"),
        "{why}"
    );
}

#[test]
fn cluster_mode_reads_configz_rarely_and_a_refused_one_costs_the_headroom_only() {
    if !need_openssl("cluster_mode_reads_configz_rarely_and_a_refused_one_costs_the_headroom_only")
    {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let n = 6;
    let fleet = start_fleet(dir.path(), n);
    let refusing = 2;
    fleet.forbid_configz(refusing, true);
    let fake = FakeKube::start();
    for i in 0..n {
        fake.put_node(fleet.node_object(i));
    }
    let served = serve_cluster(dir.path(), &fake, &[], &[]);
    let refusing_name = fleet::node_name(refusing);
    let text = served.scrape_until(
        Duration::from_secs(30),
        "every node polled, configz read",
        |t| {
            let read = per_node(t, "kubedf_kubelet_configz_success");
            all_polled(n)(t) && (0..n).all(|i| read.contains_key(&fleet::node_name(i)))
        },
    );
    let s = series(&text);
    for i in (0..n).filter(|i| *i != refusing) {
        let node = fleet::node_name(i);
        assert_eq!(
            get(&s, "kubedf_kubelet_configz_success", &[("node", &node)]),
            Some(1.0),
            "{node}"
        );
        check_node_headroom(&s, i);
    }
    // The refusing node: its figures, no headroom, and the health says why.
    check_node_figures(&s, refusing);
    assert_eq!(
        get(
            &s,
            "kubedf_kubelet_poll_success",
            &[("node", &refusing_name)]
        ),
        Some(1.0)
    );
    assert_eq!(
        get(
            &s,
            "kubedf_kubelet_configz_success",
            &[("node", &refusing_name)]
        ),
        Some(0.0)
    );
    assert_eq!(
        get(
            &s,
            "kubedf_kubelet_configz_error",
            &[("node", &refusing_name), ("reason", "forbidden")]
        ),
        Some(1.0)
    );
    for family in HEADROOM {
        let nodes = per_node(&text, family);
        assert!(
            !nodes.contains_key(&refusing_name),
            "{family} for {refusing_name}"
        );
        assert_eq!(nodes.len(), n - 1, "{family}: {nodes:?}");
    }
    // A refused /configz is not a failing node: the collector is whole.
    assert_eq!(
        get(
            &s,
            "kubedf_scrape_collector_success",
            &[("collector", "cluster")]
        ),
        Some(1.0)
    );
    // Read once, at the first good poll, not at every poll: the refused
    // node backs off too.
    let deadline = Instant::now() + Duration::from_secs(30);
    while (0..n).any(|i| fleet.summary_requests(i) < 4) {
        assert!(Instant::now() < deadline, "four polls of every node");
        std::thread::sleep(Duration::from_millis(100));
    }
    for i in 0..n {
        assert_eq!(fleet.configz_requests(i), 1, "{}", fleet::node_name(i));
    }
    let later = served.scrape_until(Duration::from_secs(5), "the headroom still there", |t| {
        per_node(t, "kubedf_eviction_signal_capacity").len() == n - 1
    });
    check_node_headroom(&series(&later), 0);
}

#[test]
fn cluster_mode_failures_cost_their_node_only_and_deleted_nodes_go() {
    if !need_openssl("cluster_mode_failures_cost_their_node_only_and_deleted_nodes_go") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let n = 8;
    let fleet = start_fleet(dir.path(), n);
    fleet.set(1, Behaviour::Hang);
    fleet.set(2, Behaviour::Unauthorized);
    let fake = FakeKube::start();
    for i in 0..n {
        fake.put_node(fleet.node_object(i));
    }
    // One slot: a hung kubelet holding the cycle would starve the others.
    let served = serve_cluster(
        dir.path(),
        &fake,
        &[],
        &["--cluster.concurrency=2", "--cluster.down-after=3"],
    );
    let healthy = [0usize, 3, 4, 5, 6, 7];
    let text = served.scrape_until(Duration::from_secs(30), "failures named", |t| {
        let s = series(t);
        get(
            &s,
            "kubedf_kubelet_poll_error",
            &[("node", "fleet-node-1"), ("reason", "timeout")],
        ) == Some(1.0)
            && get(
                &s,
                "kubedf_kubelet_poll_error",
                &[("node", "fleet-node-2"), ("reason", "unauthorized")],
            ) == Some(1.0)
            && healthy.iter().all(|i| {
                get(
                    &s,
                    "kubedf_kubelet_poll_success",
                    &[("node", &fleet::node_name(*i))],
                ) == Some(1.0)
            })
    });
    let s = series(&text);
    for i in [1, 2] {
        let node = fleet::node_name(i);
        assert_eq!(
            get(&s, "kubedf_kubelet_poll_success", &[("node", &node)]),
            Some(0.0)
        );
        // Never polled well: no figures, no last success.
        assert!(!per_node(&text, "kubedf_nodefs_used_bytes").contains_key(&node));
        assert!(
            get(
                &s,
                "kubedf_kubelet_last_success_timestamp_seconds",
                &[("node", &node)]
            )
            .is_none()
        );
    }
    let hung = get(
        &s,
        "kubedf_kubelet_poll_duration_seconds",
        &[("node", "fleet-node-1")],
    )
    .expect("duration");
    assert!(
        (1.0..5.0).contains(&hung),
        "the hung poll took {hung}s, its deadline is 1s"
    );
    // The others stay fresh: each healthy node's last success moves on
    // within a few intervals of 2 s, the hung kubelet notwithstanding.
    let before = per_node(&text, "kubedf_kubelet_last_success_timestamp_seconds");
    served.scrape_until(Duration::from_secs(15), "healthy nodes polled again", |t| {
        let after = per_node(t, "kubedf_kubelet_last_success_timestamp_seconds");
        healthy.iter().all(|i| {
            let node = fleet::node_name(*i);
            after.get(&node) > before.get(&node)
        })
    });

    // A node that starts failing keeps its figures for down-after - 1
    // failed polls, then loses them; its health series stay, saying why.
    fleet.set(3, Behaviour::Unauthorized);
    let first_failure = served.scrape_until(Duration::from_secs(15), "node 3 failing", |t| {
        get(
            &series(t),
            "kubedf_kubelet_poll_error",
            &[("node", "fleet-node-3"), ("reason", "unauthorized")],
        ) == Some(1.0)
    });
    assert!(
        per_node(&first_failure, "kubedf_nodefs_used_bytes").contains_key("fleet-node-3"),
        "the first failure keeps the figures"
    );
    let dropped = served.scrape_until(Duration::from_secs(20), "node 3's figures dropped", |t| {
        !per_node(t, "kubedf_nodefs_used_bytes").contains_key("fleet-node-3")
    });
    let s = series(&dropped);
    assert_eq!(
        get(
            &s,
            "kubedf_kubelet_poll_success",
            &[("node", "fleet-node-3")]
        ),
        Some(0.0)
    );
    assert_eq!(
        get(
            &s,
            "kubedf_kubelet_poll_error",
            &[("node", "fleet-node-3"), ("reason", "unauthorized")]
        ),
        Some(1.0)
    );
    assert!(
        get(
            &s,
            "kubedf_kubelet_last_success_timestamp_seconds",
            &[("node", "fleet-node-3")]
        )
        .is_some()
    );
    assert!(
        !samples(&dropped)
            .iter()
            .any(
                |l| l.labels.get("node").map(String::as_str) == Some("fleet-node-3")
                    && !l.name.starts_with("kubedf_kubelet_")
            )
    );
    // It recovers: figures back.
    fleet.set(3, Behaviour::Answer);
    served.scrape_until(Duration::from_secs(15), "node 3 back", |t| {
        per_node(t, "kubedf_nodefs_used_bytes").get("fleet-node-3")
            == Some(&(fleet::node_fs_used(3) as f64))
    });

    // A node deleted mid-run loses every series at the watch's event.
    fake.delete_node(&fleet::node_name(4));
    let gone = served.scrape_until(Duration::from_secs(5), "node 4 gone", |t| {
        !t.contains("node=\"fleet-node-4\"")
    });
    assert!(gone.contains("node=\"fleet-node-5\""));
    let one = http()
        .get(served.url("/nodes/fleet-node-4/metrics"))
        .send()
        .expect("scrape");
    assert_eq!(one.status(), 404);
}

#[test]
fn two_cluster_shards_cover_every_node_once() {
    if !need_openssl("two_cluster_shards_cover_every_node_once") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let n = 16;
    let (_fleet, fake) = fleet_with_nodes(dir.path(), n);
    // Shard 0 by flag; shard 1 from its StatefulSet pod's name.
    let a = serve_cluster(dir.path(), &fake, &[], &["--total-shards=2", "--shard=0"]);
    let b = serve_cluster(
        dir.path(),
        &fake,
        &[("POD_NAME", "kubedf-cluster-1")],
        &["--total-shards=2"],
    );
    let expected: Vec<String> = (0..n).map(fleet::node_name).collect();
    let want_a: BTreeSet<String> = expected
        .iter()
        .filter(|name| Shard::new(0, 2).expect("shard").owns(name))
        .cloned()
        .collect();
    let polled = |s: &Served, want: usize| {
        let text = s.scrape_until(Duration::from_secs(30), "the shard's nodes polled", |t| {
            per_node(t, "kubedf_kubelet_poll_success")
                .values()
                .filter(|v| **v == 1.0)
                .count()
                == want
        });
        per_node(&text, "kubedf_nodefs_used_bytes")
            .into_keys()
            .collect::<BTreeSet<String>>()
    };
    let in_a = polled(&a, want_a.len());
    let in_b = polled(&b, n - want_a.len());
    assert_eq!(in_a, want_a);
    assert!(in_a.is_disjoint(&in_b), "{in_a:?} {in_b:?}");
    let all: BTreeSet<String> = in_a.union(&in_b).cloned().collect();
    assert_eq!(all, expected.into_iter().collect::<BTreeSet<_>>());
    assert!(!in_a.is_empty() && !in_b.is_empty());
    // A node of the other shard is not served here.
    let other = in_b.iter().next().expect("a node of shard 1");
    let r = http()
        .get(a.url(&format!("/nodes/{other}/metrics")))
        .send()
        .expect("scrape");
    assert_eq!(r.status(), 404);
}

#[test]
fn cluster_mode_refuses_bad_flags_naming_them() {
    for (args, env, want) in [
        (
            vec![
                "serve",
                "--mode=cluster",
                "--cluster.poll-interval=5s",
                "--kubelet.timeout=5s",
            ],
            None,
            "--kubelet.timeout 5s must be below --cluster.poll-interval 5s",
        ),
        (
            vec!["serve", "--mode=cluster", "--total-shards=3"],
            None,
            "--total-shards 3 without --shard: the shard comes from POD_NAME's StatefulSet ordinal, and POD_NAME is not set",
        ),
        (
            vec!["serve", "--mode=cluster", "--total-shards=3"],
            Some("kubedf-x"),
            "pod name \"kubedf-x\" does not end in a StatefulSet ordinal",
        ),
        (
            vec!["serve", "--mode=cluster", "--shard=3", "--total-shards=3"],
            None,
            "--shard 3 is not below --total-shards 3",
        ),
        (
            vec!["serve", "--mode=cluster", "--cluster.concurrency=0"],
            None,
            "--cluster.concurrency",
        ),
        (
            vec!["serve", "--mode=cluster", "--cluster.down-after=0"],
            None,
            "--cluster.down-after",
        ),
        (
            vec![
                "serve",
                "--mode=cluster",
                "--kubelet.address-types=Internal",
            ],
            None,
            "--kubelet.address-types",
        ),
        (vec!["serve", "--mode=clustered"], None, "--mode"),
        (
            vec!["metrics", "--mode=cluster"],
            None,
            "--mode=cluster works with `kubedf serve` only",
        ),
    ] {
        let mut cmd = std::process::Command::new(kubedf!().path());
        cmd.args(&args)
            .env_remove("POD_NAME")
            .env_remove("KUBECONFIG");
        if let Some(pod) = env {
            cmd.env("POD_NAME", pod);
        }
        let out = run_bounded(cmd);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
}

#[test]
fn cluster_mode_node_pages_sit_behind_the_web_configs_basic_auth() {
    if !need_openssl("cluster_mode_node_pages_sit_behind_the_web_configs_basic_auth") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let fleet = start_fleet(dir.path(), 2);
    let fake = FakeKube::start();
    for i in 0..2 {
        fake.put_node(fleet.node_object(i));
    }
    let hash = bcrypt::hash("s3cret", 4).expect("bcrypt");
    let web = dir.path().join("web.yml");
    std::fs::write(&web, format!("basic_auth_users:\n  prometheus: '{hash}'\n"))
        .expect("web config");
    let web_flag = format!("--web.config.file={}", web.display());
    let served = serve_cluster(dir.path(), &fake, &[], &[&web_flag]);
    let url = served.url("/nodes/fleet-node-1/metrics");
    let refused = http().get(&url).send().expect("scrape");
    assert_eq!(refused.status(), 401);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = http()
            .get(&url)
            .basic_auth("prometheus", Some("s3cret"))
            .send()
            .expect("scrape");
        let status = r.status();
        let text = r.text().expect("body");
        if status == 200 && text.contains("kubedf_nodefs_used_bytes") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{status}: {text}\n{}",
            served.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn cluster_mode_honours_the_metric_allow_and_deny_lists() {
    if !need_openssl("cluster_mode_honours_the_metric_allow_and_deny_lists") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let n = 3;
    let (_fleet, fake) = fleet_with_nodes(dir.path(), n);
    let served = serve_cluster(
        dir.path(),
        &fake,
        &[],
        &[
            "--metric-allowlist=^kubedf_nodefs_,^kubedf_container_rootfs_,^kubedf_kubelet_poll_success$",
        ],
    );
    let text = served.scrape_until(Duration::from_secs(30), "every node polled", all_polled(n));
    let families: BTreeSet<String> = samples(&text).into_iter().map(|l| l.name).collect();
    assert!(
        families.contains("kubedf_nodefs_capacity_bytes"),
        "{families:?}"
    );
    assert!(
        families.contains("kubedf_container_rootfs_used_bytes"),
        "{families:?}"
    );
    for gone in [
        "kubedf_container_logs_used_bytes",
        "kubedf_imagefs_capacity_bytes",
        "kubedf_pod_ephemeral_storage_used_bytes",
        "kubelet_volume_stats_used_bytes",
        "kubedf_kubelet_poll_duration_seconds",
    ] {
        assert!(
            !families.contains(gone),
            "{gone} was filtered out: {families:?}"
        );
    }
    // kubedf's own families are never filtered.
    assert!(families.contains("kubedf_build_info"), "{families:?}");
    drop(served);

    // The lists are checked before anything starts.
    let out = run_bounded({
        let mut cmd = std::process::Command::new(kubedf!().path());
        cmd.args([
            "serve",
            "--mode=cluster",
            "--web.listen-address=127.0.0.1:0",
            "--metric-denylist=kubedf_(",
        ]);
        cmd
    });
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("--metric-denylist"), "{stderr}");
}

/// `--cluster.via-api-server-proxy`: every kubelet read through the API
/// server's `nodes/<node>/proxy/stats/summary` (the nodes' own addresses
/// are unreachable here), with the same figures; a 403 there names
/// `nodes/proxy`; kubelet TLS flags that would not apply are refused.
#[test]
fn cluster_mode_through_the_api_servers_proxy_only_when_asked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeKube::start();
    let n = 3;
    for i in 0..n {
        let name = fleet::node_name(i);
        // TEST-NET-1: never reachable, so a direct poll could not succeed.
        fake.put_node(testkit::fake_kube::node(&name, "192.0.2.1", 10250));
        let (status, body) = if i == 2 {
            (
                403,
                format!(
                    "nodes \"{name}\" is forbidden: User \"system:serviceaccount:kubedf:kubedf\" cannot get resource \"nodes/proxy\""
                ),
            )
        } else {
            (200, fleet::summary_json(i, PODS))
        };
        fake.set_node_proxy(&name, "/stats/summary", status, body);
    }
    let kubeconfig = fleet_kubeconfig(dir.path(), &fake);
    let kubeconfig = format!("--kubeconfig={}", kubeconfig.display());
    let args = [
        "--mode=cluster",
        kubeconfig.as_str(),
        "--cluster.poll-interval=2s",
        "--kubelet.timeout=1s",
        "--cluster.via-api-server-proxy",
    ];
    let served = kubedf!().serve_with(&[], &[], &args);
    let forbidden = fleet::node_name(2);
    let text = served.scrape_until(
        Duration::from_secs(30),
        "two nodes polled, one refused",
        |t| {
            let ok = per_node(t, "kubedf_kubelet_poll_success");
            ok.get(&fleet::node_name(0)) == Some(&1.0)
                && ok.get(&fleet::node_name(1)) == Some(&1.0)
                && ok.get(&forbidden) == Some(&0.0)
        },
    );
    let s = series(&text);
    for i in 0..2 {
        check_node_figures(&s, i);
    }
    assert_eq!(
        get(
            &s,
            "kubedf_kubelet_poll_error",
            &[("node", &forbidden), ("reason", "forbidden")]
        ),
        Some(1.0)
    );
    let proxied: BTreeSet<String> = fake
        .request_log()
        .into_iter()
        .filter(|r| r.contains("/proxy/"))
        .collect();
    for i in 0..n {
        let want = format!("/api/v1/nodes/{}/proxy/stats/summary", fleet::node_name(i));
        assert!(
            proxied.iter().any(|r| r.contains(&want)),
            "{want} not asked: {proxied:?}"
        );
    }
    let log = served.log_text();
    assert!(
        log.contains("nodes/proxy") && log.contains("exec into every pod"),
        "the risk is logged: {log}"
    );
    drop(served);

    // The kubelet TLS flags would not apply: refused, not ignored.
    for flag in [
        "--kubelet.insecure-skip-tls-verify".to_owned(),
        format!(
            "--kubelet.ca-file={}",
            dir.path().join("nonesuch.crt").display()
        ),
    ] {
        let mut cmd = std::process::Command::new(kubedf!().path());
        cmd.args(["serve", "--web.listen-address=127.0.0.1:0"])
            .args(args)
            .arg(&flag);
        let out = run_bounded(cmd);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag} accepted");
        let name = flag.split('=').next().unwrap_or_default();
        assert!(
            stderr.contains("--cluster.via-api-server-proxy") && stderr.contains(name),
            "{flag}: {stderr}"
        );
    }
}
