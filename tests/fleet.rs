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
use testkit::tls::make_fleet_certs;
use testkit::{need_tools, prerequisites};

const PODS: usize = 30;

fn need_openssl(test: &str) -> bool {
    prerequisites(test, need_tools(&["openssl"]))
}

/// The fleet's certificates in `dir` and a fleet of `n` kubelets.
fn start_fleet(dir: &Path, n: usize) -> KubeletFleet {
    let ips: Vec<_> = (0..n).map(fleet::node_ip).collect();
    make_fleet_certs(dir, &ips);
    KubeletFleet::start(n, PODS, &dir.join("fleet.crt"), &dir.join("fleet.key"))
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
    let url = node.url("/stats/summary");
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
    let fleet = start_fleet(dir.path(), n);
    let fake = FakeKube::start();
    for i in 0..n {
        fake.put_node(fleet.node_object(i));
    }
    // A node whose kubelet port the API does not know: named and skipped.
    let mut portless = fleet.node_object(0);
    portless["metadata"]["name"] = "no-port".into();
    portless["status"]["daemonEndpoints"] = serde_json::json!({});
    fake.put_node(portless);

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
