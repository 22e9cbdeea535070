//! What kubedf costs the API server: every read is one a DaemonSet of
//! thousands of nodes can afford. Pods are watched by node from the watch
//! cache; PVCs and PVs are read one by one, from the watch cache too
//! (`resourceVersion=0`), never with a quorum read from etcd, never listed.
//! Needs no root: the PV is a hostPath directory that kubedf walks.

use std::time::Duration;

use testkit::fake_kube::{self, FakeKube};
use testkit::*;

const NODE: &str = "node-1";
const NS: &str = "shop";

#[test]
fn every_read_is_node_scoped_or_from_the_watch_cache() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("pv-data");
    std::fs::create_dir_all(&data).expect("pv dir");
    std::fs::write(data.join("f"), vec![1u8; 8192]).expect("a file");
    let root = dir.path().join("kubelet");
    std::fs::create_dir_all(&root).expect("kubelet root");

    let kube = FakeKube::start();
    let pvc = fake_kube::pvc(NS, "data", Some("pv-data"), "Bound");
    let pv = fake_kube::pv_host_path("pv-data", &data.to_string_lossy(), "1Gi");
    kube.put_pv(fake_kube::bind_pv(pv, &pvc));
    kube.put_pvc(pvc);
    let uid = fake_kube::fake_uid("db-0");
    kube.put_pod(fake_kube::pod(
        NS,
        "db-0",
        &uid,
        NODE,
        "Running",
        vec![fake_kube::pvc_volume("d", "data")],
    ));
    let kubeconfig = dir.path().join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig).expect("kubeconfig");

    let served = kubedf!()
        .on_node(NODE, &kubeconfig, &root, NO_RUNTIME)
        .kubelet_config(NO_KUBELET_CONFIG)
        .serve(&[
            "--volume-stats-agg-period",
            "300ms",
            "--sample-interval",
            "500ms",
        ]);
    served.scrape_until(Duration::from_secs(20), "the hostPath PVC's series", |t| {
        samples(t).iter().any(|s| {
            s.name == "kubelet_volume_stats_used_bytes"
                && s.labels["persistentvolumeclaim"] == "data"
        })
    });

    let log = kube.request_log();
    let gets: Vec<&String> = log
        .iter()
        .filter(|r| r.contains("/persistentvolume"))
        .collect();
    assert!(
        gets.iter()
            .any(|r| r.contains("/persistentvolumeclaims/data")),
        "the PVC was read: {log:?}"
    );
    assert!(
        gets.iter()
            .any(|r| r.contains("/persistentvolumes/pv-data")),
        "the PV was read: {log:?}"
    );
    for request in &gets {
        assert!(
            request.contains("resourceVersion=0"),
            "a PVC or PV read from etcd rather than the watch cache: {request}"
        );
    }
    for request in log.iter().filter(|r| r.contains("/pods")) {
        assert!(
            request.contains("fieldSelector=spec.nodeName=node-1"),
            "a pod read not scoped to the node: {request}"
        );
        if !request.contains("watch=") {
            assert!(
                request.contains("resourceVersion=0"),
                "a pod list from etcd rather than the watch cache: {request}"
            );
        }
    }
}

#[test]
fn the_fake_api_server_refuses_a_malformed_resource_version_as_the_real_one_does() {
    // The check above is only as good as the fake's handling of the
    // parameter: an invalid one is a 400, a future one a 504.
    let kube = FakeKube::start();
    kube.put_pv(fake_kube::pv_host_path("pv-a", "/data", "1Gi"));
    let base = format!("{}/api/v1/persistentvolumes/pv-a", kube.url());
    let status = |query: &str| {
        let out = std::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .arg(format!("{base}{query}"))
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(status(""), "200");
    assert_eq!(status("?resourceVersion=0"), "200");
    assert_eq!(status("?resourceVersion=abc"), "400");
    assert_eq!(status("?resourceVersion=999999999"), "504");
}
