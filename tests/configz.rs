//! kubelet's `/configz` from a fake kubelet over TLS: the real JSON shapes
//! (1.35's, and 1.36's with `kind`/`apiVersion` inside), the API server's
//! bearer token sent, the serving certificate verified against the cluster
//! CA by default; and each failure (401, 403, a hang, a certificate from
//! another CA, a truncated body) an error with its cause, after which kubedf
//! uses the next source: never a half-read configuration.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kubedf::kubelet::config::ConfigSource;
use kubedf::sources::configz::{Configz, ConfigzOptions};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use testkit::tls::make_certs;
use testkit::*;

const TOKEN: &str = "kubedf-test-token";

/// kubelet 1.35's body: no kind or apiVersion inside.
const V135: &str = r#"{"kubeletconfig":{"enableServer":true,"staticPodPath":"/etc/kubernetes/manifests","syncFrequency":"1m0s","address":"0.0.0.0","port":10250,"authentication":{"webhook":{"enabled":true,"cacheTTL":"2m0s"},"anonymous":{"enabled":false}},"authorization":{"mode":"Webhook"},"imageMinimumGCAge":"2m0s","imageGCHighThresholdPercent":70,"imageGCLowThresholdPercent":60,"volumeStatsAggPeriod":"1m0s","cgroupDriver":"systemd","evictionHard":{"imagefs.available":"5%","nodefs.available":"5%"},"evictionPressureTransitionPeriod":"5m0s","mergeDefaultEvictionSettings":false,"containerRuntimeEndpoint":"unix:///run/k3s/containerd/containerd.sock","podLogsDir":"/var/log/pods"}}"#;

/// kubelet 1.36's body: the same, with kind and apiVersion inside.
const V136: &str = r#"{"kubeletconfig":{"kind":"KubeletConfiguration","apiVersion":"kubelet.config.k8s.io/v1beta1","enableServer":true,"imageGCHighThresholdPercent":75,"imageGCLowThresholdPercent":65,"volumeStatsAggPeriod":"2m0s","evictionHard":{"memory.available":"100Mi","nodefs.available":"10%","nodefs.inodesFree":"5%"},"containerRuntimeEndpoint":"unix:///run/containerd/containerd.sock","podLogsDir":"/var/log/pods"}}"#;

/// What the fake kubelet does with the next request.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Ok(&'static str),
    Unauthorized,
    Forbidden,
    Hang,
    Truncated,
}

/// A kubelet's HTTPS port answering `/configz` as `mode` says; requests
/// without the bearer token get 401, as a kubelet with webhook
/// authentication answers them.
struct FakeKubelet {
    addr: SocketAddr,
    mode: Arc<Mutex<Mode>>,
    seen: Arc<Mutex<Vec<String>>>,
}

impl FakeKubelet {
    fn start(cert: &Path, key: &Path) -> FakeKubelet {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .expect("cert file")
            .collect::<Result<_, _>>()
            .expect("certs");
        let key = PrivateKeyDer::from_pem_file(key).expect("key");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mode = Arc::new(Mutex::new(Mode::Ok(V135)));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (m, s) = (Arc::clone(&mode), Arc::clone(&seen));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (config, m, s) = (Arc::clone(&config), Arc::clone(&m), Arc::clone(&s));
                std::thread::spawn(move || serve(stream, config, &m, &s));
            }
        });
        FakeKubelet { addr, mode, seen }
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().expect("mode") = mode;
    }

    fn endpoint(&self) -> String {
        format!("https://{}", self.addr)
    }
}

fn serve(
    mut tcp: std::net::TcpStream,
    config: Arc<rustls::ServerConfig>,
    mode: &Mutex<Mode>,
    seen: &Mutex<Vec<String>>,
) {
    let Ok(mut conn) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match tls.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&request).into_owned();
    seen.lock().expect("seen").push(head.clone());
    let authorized = head
        .lines()
        .any(|l| l.eq_ignore_ascii_case(&format!("authorization: Bearer {TOKEN}")));
    let current = *mode.lock().expect("mode");
    let (status, body, declared) = match current {
        _ if !authorized => ("401 Unauthorized", "Unauthorized".to_owned(), None),
        Mode::Unauthorized => ("401 Unauthorized", "Unauthorized".to_owned(), None),
        Mode::Forbidden => (
            "403 Forbidden",
            "Forbidden (user=system:serviceaccount:kubedf:kubedf, verb=get, resource=nodes, subresource(s)=[configz])".to_owned(),
            None,
        ),
        Mode::Hang => {
            std::thread::sleep(Duration::from_secs(30));
            return;
        }
        Mode::Truncated => ("200 OK", V135[..V135.len() / 2].to_owned(), Some(V135.len())),
        Mode::Ok(body) => ("200 OK", body.to_owned(), None),
    };
    let length = declared.unwrap_or(body.len());
    let _ = write!(
        tls,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n{body}"
    );
    let _ = tls.flush();
    conn.send_close_notify();
    let _ = conn.complete_io(&mut tcp);
}

/// Certificates in `dir`: a CA and a serving certificate for 127.0.0.1
/// (testkit's), and a kubeconfig whose cluster CA is that CA and whose user
/// has the bearer token.
fn set_up(dir: &Path) -> std::path::PathBuf {
    make_certs(dir);
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:1\n    certificate-authority: {}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\nusers:\n- name: u\n  user:\n    token: {TOKEN}\n",
            dir.join("ca.crt").display()
        ),
    )
    .expect("write kubeconfig");
    kubeconfig
}

fn opts<'a>(endpoint: &'a str, ca: Option<&'a Path>, insecure: bool) -> ConfigzOptions<'a> {
    ConfigzOptions {
        endpoint,
        ca_file: ca,
        insecure_skip_tls_verify: insecure,
        timeout: Duration::from_secs(2),
    }
}

async fn client(kubeconfig: &Path, opts: &ConfigzOptions<'_>) -> Configz {
    let api = kubedf::sources::kube::config(Some(kubeconfig))
        .await
        .expect("kubeconfig");
    Configz::new(api, opts).expect("configz client")
}

fn need_openssl(test: &str) -> bool {
    prerequisites(test, need_tools(&["openssl"]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_shapes_with_the_api_servers_token_and_ca() {
    if !need_openssl("both_shapes_with_the_api_servers_token_and_ca") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = set_up(dir.path());
    let kubelet = FakeKubelet::start(
        &dir.path().join("server.crt"),
        &dir.path().join("server.key"),
    );
    let endpoint = kubelet.endpoint();
    // No --kubelet.ca-file: the kubeconfig's cluster CA verifies kubelet.
    let configz = client(&kubeconfig, &opts(&endpoint, None, false)).await;
    let cfg = configz.fetch().await.expect("1.35 body");
    assert_eq!(cfg.source, ConfigSource::Configz);
    assert_eq!(cfg.image_gc.high_threshold_percent, 70);
    assert_eq!(cfg.eviction.hard.len(), 2, "{:?}", cfg.eviction.hard);
    assert_eq!(
        cfg.container_runtime_endpoint.as_deref(),
        Some("unix:///run/k3s/containerd/containerd.sock")
    );
    kubelet.set(Mode::Ok(V136));
    let cfg = configz.fetch().await.expect("1.36 body");
    assert_eq!(
        (
            cfg.image_gc.high_threshold_percent,
            cfg.image_gc.low_threshold_percent
        ),
        (75, 65)
    );
    assert_eq!(cfg.volume_stats_agg_period, Some(Duration::from_secs(120)));
    let seen = kubelet.seen.lock().expect("seen").clone();
    assert!(
        seen.iter().all(|r| r.starts_with("GET /configz HTTP/1.1")),
        "{seen:?}"
    );
    // An explicit --kubelet.ca-file works the same.
    let ca = dir.path().join("ca.crt");
    let configz = client(&kubeconfig, &opts(&endpoint, Some(&ca), false)).await;
    assert!(configz.fetch().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failure_is_an_error_with_its_cause() {
    if !need_openssl("each_failure_is_an_error_with_its_cause") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = set_up(dir.path());
    let kubelet = FakeKubelet::start(
        &dir.path().join("server.crt"),
        &dir.path().join("server.key"),
    );
    let endpoint = kubelet.endpoint();
    let configz = client(&kubeconfig, &opts(&endpoint, None, false)).await;
    for (mode, want) in [
        (Mode::Unauthorized, "HTTP 401: unauthorized"),
        (
            Mode::Forbidden,
            "HTTP 403: forbidden: kubedf's service account needs get on nodes/configz",
        ),
        (Mode::Hang, "no answer within 2s"),
        (Mode::Truncated, "end of file before message length reached"),
        (
            Mode::Ok(r#"{"kubeletconfig": "#),
            "not kubelet's configuration",
        ),
    ] {
        kubelet.set(mode);
        let err = configz.fetch().await.expect_err("a failure").to_string();
        assert!(
            err.contains(&format!("{endpoint}/configz")),
            "{mode:?}: {err}"
        );
        assert!(err.contains(want), "{mode:?}: {err}");
    }
    // A certificate from another CA is refused; only when asked is it not
    // verified.
    let other = tempfile::tempdir().expect("tempdir");
    make_certs(other.path());
    let impostor = FakeKubelet::start(
        &other.path().join("server.crt"),
        &other.path().join("server.key"),
    );
    let endpoint = impostor.endpoint();
    let configz = client(&kubeconfig, &opts(&endpoint, None, false)).await;
    let err = configz.fetch().await.expect_err("another CA").to_string();
    assert!(
        err.contains("certificate") || err.contains("UnknownIssuer"),
        "{err}"
    );
    let configz = client(&kubeconfig, &opts(&endpoint, None, true)).await;
    assert!(configz.fetch().await.is_ok());
    // A CA file with no certificate is a flag error.
    let empty = dir.path().join("empty.crt");
    std::fs::write(&empty, "").expect("write");
    let api = kubedf::sources::kube::config(Some(&kubeconfig))
        .await
        .expect("kubeconfig");
    let err = Configz::new(api, &opts(&endpoint, Some(&empty), false))
        .expect_err("empty CA file")
        .to_string();
    assert!(
        err.contains("--kubelet.ca-file") && err.contains("empty.crt"),
        "{err}"
    );
}

#[test]
fn kubedf_reads_configz_first_and_falls_back_with_the_cause() {
    if !need_openssl("kubedf_reads_configz_first_and_falls_back_with_the_cause") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = set_up(dir.path());
    let kubelet = FakeKubelet::start(
        &dir.path().join("server.crt"),
        &dir.path().join("server.key"),
    );
    let endpoint = kubelet.endpoint();
    let kc = kubeconfig.to_str().expect("utf-8");
    let run = || {
        kubedf!().run(&[
            "metrics",
            "--kubelet.endpoint",
            &endpoint,
            "--kubeconfig",
            kc,
            "--kubelet.config",
            NO_KUBELET_CONFIG,
            "--cri.endpoint",
            NO_RUNTIME,
        ])
    };
    let out = run();
    let text = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let url = format!("{endpoint}/configz");
    assert_eq!(
        value(
            &text,
            "kubedf_kubelet_config_info",
            &[("path", url.as_str()), ("source", "configz")]
        )
        .as_deref(),
        Some("1"),
        "{text}\n{stderr}"
    );
    kubelet.set(Mode::Forbidden);
    let out = run();
    let text = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        value(
            &text,
            "kubedf_kubelet_config_info",
            &[("source", "defaults")]
        )
        .as_deref(),
        Some("1"),
        "{text}\n{stderr}"
    );
    assert!(
        stderr.contains("passed over")
            && stderr.contains("403")
            && stderr.contains("nodes/configz"),
        "{stderr}"
    );
}
