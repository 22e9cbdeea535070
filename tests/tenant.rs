//! What a tenant can put in front of kubedf through the API: two PVCs whose
//! PVs name one directory, and names holding control characters. The fake
//! API server speaks the real wire format; the volume is a real tmpfs.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use testkit::fake_kube::{self, FakeKube};
use testkit::*;

const NODE: &str = "node-1";
const NS: &str = "shop";

fn bound(kube: &FakeKube, claim: &str, pv: serde_json::Value) {
    let pv_name = pv["metadata"]["name"].as_str().expect("pv name").to_owned();
    let pvc = fake_kube::pvc(NS, claim, Some(&pv_name), "Bound");
    kube.put_pv(fake_kube::bind_pv(pv, &pvc));
    kube.put_pvc(pvc);
}

fn running_pod(kube: &FakeKube, name: &str, claim: &str) {
    let uid = fake_kube::fake_uid(name);
    kube.put_pod(fake_kube::pod(
        NS,
        name,
        &uid,
        NODE,
        "Running",
        vec![fake_kube::pvc_volume("data", claim)],
    ));
}

fn claim_value(text: &str, name: &str, claim: &str) -> Option<String> {
    value(
        text,
        name,
        &[("namespace", NS), ("persistentvolumeclaim", claim)],
    )
}

fn claim_error(text: &str, claim: &str) -> Option<String> {
    samples(text)
        .into_iter()
        .find(|l| {
            l.name == "kubedf_volume_stats_error"
                && l.labels.get("persistentvolumeclaim").map(String::as_str) == Some(claim)
        })
        .map(|l| l.labels["reason"].clone())
}

#[test]
fn two_pvcs_on_one_host_path_both_report_it() {
    let test = "two_pvcs_on_one_host_path_both_report_it";
    if !prerequisites(test, need_root_and(&["du", "find"])) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let shared = dir.path().join("local-path/shared");
    let _mount = Tmpfs::mount(&shared, 64 << 20);
    for d in 0..40 {
        let sub = shared.join(format!("d{d}"));
        std::fs::create_dir_all(&sub).expect("mkdir");
        std::fs::write(sub.join("f"), vec![7u8; 50_000]).expect("write");
    }
    let kube = FakeKube::start();
    let path = shared.to_str().expect("utf-8").to_owned();
    // The same directory, written two ways, as two PVs.
    bound(
        &kube,
        "one",
        fake_kube::pv_host_path("pv-one", &path, "1Gi"),
    );
    bound(
        &kube,
        "two",
        fake_kube::pv_host_path("pv-two", &format!("{path}/./"), "1Gi"),
    );
    running_pod(&kube, "a-0", "one");
    running_pod(&kube, "b-0", "two");
    let kubeconfig = dir.path().join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let root: PathBuf = dir.path().join("kubelet");
    std::fs::create_dir_all(&root).expect("kubelet root");
    let served = kubedf!()
        .on_node(NODE, &kubeconfig, &root, NO_RUNTIME)
        .kubelet_config(NO_KUBELET_CONFIG)
        .serve(&[
            "--volume-stats-agg-period",
            "200ms",
            "--volume-stats-timeout",
            "2s",
        ]);
    let (bytes, inodes) = du_find(&shared);
    let want = |text: &str| {
        ["one", "two"].iter().all(|c| {
            claim_value(text, "kubelet_volume_stats_used_bytes", c) == Some(bytes.to_string())
        })
    };
    served.scrape_until(Duration::from_secs(20), "both PVCs measured", want);
    // Measured again and again over many periods (both at once, as the
    // first time): neither is ever told the path is hung.
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        let text = served.scrape();
        for claim in ["one", "two"] {
            assert_eq!(claim_error(&text, claim), None, "{claim}:\n{text}");
            assert_eq!(
                claim_value(&text, "kubelet_volume_stats_used_bytes", claim),
                Some(bytes.to_string()),
                "{claim}"
            );
            assert_eq!(
                claim_value(&text, "kubelet_volume_stats_inodes_used", claim),
                Some(inodes.to_string()),
                "{claim}"
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn control_characters_in_names_are_shown_not_obeyed() {
    let test = "control_characters_in_names_are_shown_not_obeyed";
    if !prerequisites(test, need_root_and(&[])) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let kube = FakeKube::start();
    // A claim name no API server would accept, as a misbehaving one (or a
    // hand-edited object) could serve it: an escape sequence, a newline
    // that would forge a log line, and a path climb.
    let claim = "x\u{1b}[2J\u{1b}]0;owned\u{7}\nERROR forged line/../../secrets";
    running_pod(&kube, "evil-0", claim);
    let kubeconfig = dir.path().join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let root = dir.path().join("kubelet");
    std::fs::create_dir_all(&root).expect("kubelet root");
    let out = kubedf!().run(&[
        "df",
        "--node-name",
        NODE,
        "--kubeconfig",
        kubeconfig.to_str().expect("utf-8"),
        "--kubelet.root-dir",
        root.to_str().expect("utf-8"),
        "--kubelet.config",
        NO_KUBELET_CONFIG,
        "--cri.endpoint",
        NO_RUNTIME,
    ]);
    let table = String::from_utf8_lossy(&out.stdout);
    let log = String::from_utf8_lossy(&out.stderr);
    for (what, text) in [("kubedf df", &table), ("the log", &log)] {
        assert!(
            !text.contains(['\u{1b}', '\u{7}']),
            "{what} holds a raw control character:\n{text:?}"
        );
        assert!(
            !text.lines().any(|l| l.starts_with("ERROR forged")),
            "{what} has a forged line:\n{text}"
        );
    }
    assert!(table.contains("\\u{1b}[2J"), "{table}");
    assert!(
        log.contains("\\u{1b}[2J"),
        "the log names the claim, escaped:\n{log}"
    );
    // The name never reached another path of the API.
    assert!(
        kube.request_log().iter().all(|r| !r.contains("secrets")),
        "{:?}",
        kube.request_log()
    );
}
