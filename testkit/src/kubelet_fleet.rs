//! A fleet of fake kubelets in one process: each node's kubelet listens on
//! its own loopback address (127.1.x.y, port chosen by the kernel) and
//! answers `GET /stats/summary` over HTTPS with keep-alive, in the JSON shape
//! of kubelet's Summary API (`stats/v1alpha1`: its JSON tags, `omitempty`
//! figures left out, cpu/memory/network/swap present as a real kubelet
//! writes them), and `GET /configz` as kubelet does (`{"kubeletconfig":
//! {...}}`, its effective configuration in v1beta1 field names).
//!
//! Authorization as kubelet's webhook answers it: no token or an unknown one
//! is 401, [`READER_TOKEN`] (a service account without `nodes/stats` or
//! `nodes/configz`) is 403 with kubelet's message, [`FLEET_TOKEN`] is
//! allowed. Per node, a [`Behaviour`] makes its kubelet hang, answer 401 to
//! everyone, or cut its body short; [`KubeletFleet::forbid_configz`] makes
//! it refuse `/configz` only (`nodes/configz` not granted).
//!
//! The figures are functions of the node's and the pod's index
//! ([`pod_rootfs_used`], [`image_fs`] and the like), and so is each
//! kubelet's configuration ([`kubelet_settings`]), so a test can check
//! every number. Nodes differ in their filesystem layout ([`image_fs`],
//! [`container_fs`]) and their GC and eviction thresholds.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::oneshot;

/// The token of a service account with `get` on `nodes/stats`.
pub const FLEET_TOKEN: &str = "kubedf-fleet-token";
/// A valid token whose account lacks `nodes/stats`.
pub const READER_TOKEN: &str = "kubedf-reader-token";

/// What a node's kubelet does with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Behaviour {
    Answer = 0,
    /// Accepts the request and never answers.
    Hang = 1,
    /// 401 to every request (its authenticator rejects everyone).
    Unauthorized = 2,
    /// Declares the whole body's length, sends half, closes.
    Truncated = 3,
}

impl Behaviour {
    fn from_u8(v: u8) -> Behaviour {
        match v {
            1 => Behaviour::Hang,
            2 => Behaviour::Unauthorized,
            3 => Behaviour::Truncated,
            _ => Behaviour::Answer,
        }
    }
}

/// The loopback address of node `i` of a fleet: 127.1.0.1, 127.1.0.2, ...,
/// 250 per third octet.
pub fn node_ip(i: usize) -> IpAddr {
    let third = u8::try_from(i / 250).expect("at most 64,000 nodes");
    let fourth = u8::try_from(i % 250 + 1).expect("below 251");
    IpAddr::V4(Ipv4Addr::new(127, 1, third, fourth))
}

pub fn node_name(i: usize) -> String {
    format!("fleet-node-{i}")
}

struct NodeState {
    behaviour: AtomicU8,
    requests: AtomicU64,
    summary_requests: AtomicU64,
    configz_requests: AtomicU64,
    configz_forbidden: AtomicBool,
}

/// The running fleet; stops when dropped.
pub struct KubeletFleet {
    addrs: Vec<SocketAddr>,
    nodes: Arc<Vec<NodeState>>,
    connections: Arc<AtomicU64>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl KubeletFleet {
    /// `n` kubelets of `pods` pods each, with the fleet's CA and serving
    /// certificate made in `dir` (`fleet-ca.crt` is what kubedf verifies
    /// them with).
    pub fn start_in(dir: &Path, n: usize, pods: usize) -> KubeletFleet {
        let ips: Vec<IpAddr> = (0..n).map(node_ip).collect();
        crate::tls::make_fleet_certs(dir, &ips);
        KubeletFleet::start(n, pods, &dir.join("fleet.crt"), &dir.join("fleet.key"))
    }

    /// Every kubelet's Node, served by `fake`.
    pub fn put_nodes(&self, fake: &crate::fake_kube::FakeKube) {
        for i in 0..self.len() {
            fake.put_node(self.node_object(i));
        }
    }

    /// `n` kubelets of `pods` pods each, serving the certificate
    /// `cert`/`key` (see [`crate::tls::make_fleet_certs`]).
    pub fn start(n: usize, pods: usize, cert: &Path, key: &Path) -> KubeletFleet {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .expect("fleet cert file")
            .collect::<Result<_, _>>()
            .expect("fleet certs");
        let key = PrivateKeyDer::from_pem_file(key).expect("fleet key");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listeners: Vec<std::net::TcpListener> = (0..n)
            .map(|i| {
                let l = std::net::TcpListener::bind((node_ip(i), 0)).expect("bind a fleet address");
                l.set_nonblocking(true).expect("nonblocking");
                l
            })
            .collect();
        let addrs = listeners
            .iter()
            .map(|l| l.local_addr().expect("addr"))
            .collect();
        let nodes: Arc<Vec<NodeState>> = Arc::new(
            (0..n)
                .map(|_| NodeState {
                    behaviour: AtomicU8::new(Behaviour::Answer as u8),
                    requests: AtomicU64::new(0),
                    summary_requests: AtomicU64::new(0),
                    configz_requests: AtomicU64::new(0),
                    configz_forbidden: AtomicBool::new(false),
                })
                .collect(),
        );
        let connections = Arc::new(AtomicU64::new(0));
        let (tx, rx) = oneshot::channel();
        let (nodes2, conns2) = (Arc::clone(&nodes), Arc::clone(&connections));
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("fleet runtime");
            rt.block_on(async move {
                for (i, l) in listeners.into_iter().enumerate() {
                    let listener = tokio::net::TcpListener::from_std(l).expect("listener");
                    let (acceptor, nodes, conns) =
                        (acceptor.clone(), Arc::clone(&nodes2), Arc::clone(&conns2));
                    tokio::spawn(accept_loop(i, pods, listener, acceptor, nodes, conns));
                }
                let _ = rx.await;
            });
            rt.shutdown_background();
        });
        KubeletFleet {
            addrs,
            nodes,
            connections,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    pub fn len(&self) -> usize {
        self.addrs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }

    /// Node `i`'s kubelet address.
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.addrs[i]
    }

    pub fn set(&self, i: usize, behaviour: Behaviour) {
        self.nodes[i]
            .behaviour
            .store(behaviour as u8, Ordering::SeqCst);
    }

    /// Requests node `i`'s kubelet received.
    pub fn requests(&self, i: usize) -> u64 {
        self.nodes[i].requests.load(Ordering::SeqCst)
    }

    /// Requests for `/stats/summary` node `i`'s kubelet received.
    pub fn summary_requests(&self, i: usize) -> u64 {
        self.nodes[i].summary_requests.load(Ordering::SeqCst)
    }

    /// Requests for `/configz` node `i`'s kubelet received (refused ones
    /// included).
    pub fn configz_requests(&self, i: usize) -> u64 {
        self.nodes[i].configz_requests.load(Ordering::SeqCst)
    }

    /// Makes node `i`'s kubelet answer `/configz` with 403, as when the
    /// caller's account lacks `nodes/configz` (every other path as before).
    pub fn forbid_configz(&self, i: usize, forbidden: bool) {
        self.nodes[i]
            .configz_forbidden
            .store(forbidden, Ordering::SeqCst);
    }

    /// TLS connections accepted, all nodes together.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }

    /// A Node object for node `i` (the fake API server's wire format).
    pub fn node_object(&self, i: usize) -> serde_json::Value {
        let addr = self.addrs[i];
        crate::fake_kube::node(&node_name(i), &addr.ip().to_string(), addr.port())
    }
}

impl Drop for KubeletFleet {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn accept_loop(
    node: usize,
    pods: usize,
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    nodes: Arc<Vec<NodeState>>,
    connections: Arc<AtomicU64>,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, nodes, connections) = (
            acceptor.clone(),
            Arc::clone(&nodes),
            Arc::clone(&connections),
        );
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            connections.fetch_add(1, Ordering::SeqCst);
            let service = service_fn(move |req| {
                let nodes = Arc::clone(&nodes);
                async move { Ok::<_, Infallible>(answer(node, pods, &nodes, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

fn text(status: StatusCode, body: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(
            Full::new(Bytes::from(body.to_owned()))
                .map_err(|e| match e {})
                .boxed(),
        )
        .expect("response")
}

async fn answer<B>(
    node: usize,
    pods: usize,
    nodes: &[NodeState],
    req: Request<B>,
) -> Response<Body> {
    let state = &nodes[node];
    state.requests.fetch_add(1, Ordering::SeqCst);
    let behaviour = Behaviour::from_u8(state.behaviour.load(Ordering::SeqCst));
    let token = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let authenticated =
        behaviour != Behaviour::Unauthorized && matches!(token, Some(FLEET_TOKEN | READER_TOKEN));
    let (counter, subresource) = match req.uri().path() {
        "/stats/summary" => (&state.summary_requests, "stats"),
        "/configz" => (&state.configz_requests, "configz"),
        _ if authenticated => return text(StatusCode::NOT_FOUND, "404 page not found"),
        _ => return text(StatusCode::UNAUTHORIZED, "Unauthorized"),
    };
    counter.fetch_add(1, Ordering::SeqCst);
    if !authenticated {
        return text(StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    let forbidden = token == Some(READER_TOKEN)
        || (subresource == "configz" && state.configz_forbidden.load(Ordering::SeqCst));
    if forbidden {
        let user = if token == Some(READER_TOKEN) {
            "reader"
        } else {
            "kubedf"
        };
        return text(
            StatusCode::FORBIDDEN,
            &format!(
                "Forbidden (user=system:serviceaccount:monitoring:{user}, verb=get, resource=nodes, subresource(s)=[{subresource}])"
            ),
        );
    }
    if behaviour == Behaviour::Hang {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    let body = if subresource == "configz" {
        configz_json(node)
    } else {
        summary_json(node, pods)
    };
    let response = Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .header("content-length", body.len());
    if behaviour == Behaviour::Truncated {
        // The head and the first half go out; then, once they have been
        // flushed, the body fails and the server drops the connection.
        let half = Bytes::from(body[..body.len() / 2].to_owned());
        let frames = futures::stream::unfold(0u8, move |step| {
            let half = half.clone();
            async move {
                match step {
                    0 => Some((Ok(Frame::data(half)), 1)),
                    1 => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        Some((
                            Err(std::io::Error::other(
                                "the fake kubelet cuts its body short",
                            )),
                            2,
                        ))
                    }
                    _ => None,
                }
            }
        });
        return response
            .body(StreamBody::new(frames).boxed())
            .expect("response");
    }
    response
        .body(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed())
        .expect("response")
}

const GIB: u64 = 1 << 30;
const TIME: &str = "2026-12-05T20:00:00Z";

/// The node's filesystem: 100 GiB, 1 GiB more used per 100 nodes.
pub fn node_fs_used(node: usize) -> u64 {
    10 * GIB + (node as u64 % 100) * (GIB / 100)
}

/// A filesystem of a node's summary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fs {
    pub capacity: u64,
    pub used: u64,
    pub inodes: u64,
    pub inodes_used: u64,
}

impl Fs {
    pub fn available(&self) -> u64 {
        self.capacity - self.used
    }

    pub fn inodes_free(&self) -> u64 {
        self.inodes - self.inodes_used
    }
}

/// How node `node` keeps images and containers: 0 images on the node's
/// filesystem (nodes 0, 3, 4, 7, ...), 1 a dedicated image filesystem
/// holding containers too (nodes 1, 5, ...), 2 a dedicated image filesystem
/// and containers on a third one (split; nodes 2, 6, ...).
pub fn layout(node: usize) -> usize {
    match node % 4 {
        1 => 1,
        2 => 2,
        _ => 0,
    }
}

/// `node.fs`.
pub fn node_fs(node: usize) -> Fs {
    Fs {
        capacity: 100 * GIB,
        used: node_fs_used(node),
        inodes: 6_553_600,
        inodes_used: 400_000,
    }
}

/// `node.runtime.imageFs`: 20 GiB of images, on the node's filesystem
/// (its capacity and inodes, as statfs of the same filesystem gives them)
/// or on a dedicated 200 GiB one.
pub fn image_fs(node: usize) -> Fs {
    let own = node_fs(node);
    let (capacity, inodes) = match layout(node) {
        0 => (own.capacity, own.inodes),
        _ => (200 * GIB, 13_107_200),
    };
    Fs {
        capacity,
        used: 20 * GIB,
        inodes,
        inodes_used: 90_000,
    }
}

/// `node.runtime.containerFs`: the image filesystem (kubelet 1.30+ reports
/// it so when the runtime does not split them), or a 50 GiB one of its own.
pub fn container_fs(node: usize) -> Fs {
    let image = image_fs(node);
    match layout(node) {
        2 => Fs {
            capacity: 50 * GIB,
            inodes: 3_276_800,
            ..image
        },
        _ => image,
    }
}

/// `node.rlimit.maxpid`.
pub const MAX_PID: u64 = 4_194_304;

/// `node.rlimit.curproc`.
pub fn cur_proc(node: usize) -> u64 {
    300 + node as u64 % 100
}

/// What node `node`'s kubelet configuration says of image GC and
/// eviction, as its `/configz` writes it.
#[derive(Clone, Copy, Debug)]
pub struct KubeletSettings {
    pub image_gc_high: u32,
    pub image_gc_low: u32,
    pub eviction_hard: &'static [(&'static str, &'static str)],
    pub eviction_soft: &'static [(&'static str, &'static str)],
    pub eviction_soft_grace_period: &'static [(&'static str, &'static str)],
}

/// Three kinds of kubelet, by node index modulo 3: 0 kubeadm's defaults
/// (kubelet filled in `evictionHard`), 1 k3s' thresholds with a soft one
/// and an image GC that is due now, 2 quantities and a PID threshold.
pub fn kubelet_settings(node: usize) -> KubeletSettings {
    match node % 3 {
        0 => KubeletSettings {
            image_gc_high: 85,
            image_gc_low: 80,
            eviction_hard: &[
                ("imagefs.available", "15%"),
                ("imagefs.inodesFree", "5%"),
                ("memory.available", "100Mi"),
                ("nodefs.available", "10%"),
                ("nodefs.inodesFree", "5%"),
            ],
            eviction_soft: &[],
            eviction_soft_grace_period: &[],
        },
        1 => KubeletSettings {
            image_gc_high: 15,
            image_gc_low: 10,
            eviction_hard: &[("imagefs.available", "5%"), ("nodefs.available", "5%")],
            eviction_soft: &[("nodefs.available", "12.5%")],
            eviction_soft_grace_period: &[("nodefs.available", "1m30s")],
        },
        _ => KubeletSettings {
            image_gc_high: 90,
            image_gc_low: 85,
            eviction_hard: &[
                ("imagefs.available", "5Gi"),
                ("memory.available", "750Mi"),
                ("nodefs.available", "2Gi"),
                ("nodefs.inodesFree", "100k"),
                ("pid.available", "1000"),
            ],
            eviction_soft: &[("imagefs.available", "10Gi")],
            eviction_soft_grace_period: &[("imagefs.available", "2m0s")],
        },
    }
}

/// A kubelet's configuration as `/configz` serves it, but for the GC and
/// eviction fields ([`configz_json`] adds them).
const CONFIGZ_REST: &str = r#"{
  "enableServer": true,
  "staticPodPath": "/etc/kubernetes/manifests",
  "podLogsDir": "/var/log/pods",
  "syncFrequency": "1m0s",
  "fileCheckFrequency": "20s",
  "httpCheckFrequency": "20s",
  "address": "0.0.0.0",
  "port": 10250,
  "tlsCertFile": "/var/lib/kubelet/pki/kubelet.crt",
  "tlsPrivateKeyFile": "/var/lib/kubelet/pki/kubelet.key",
  "rotateCertificates": true,
  "authentication": {
    "x509": {
      "clientCAFile": "/etc/kubernetes/pki/ca.crt"
    },
    "webhook": {
      "enabled": true,
      "cacheTTL": "2m0s"
    },
    "anonymous": {
      "enabled": false
    }
  },
  "authorization": {
    "mode": "Webhook",
    "webhook": {
      "cacheAuthorizedTTL": "5m0s",
      "cacheUnauthorizedTTL": "30s"
    }
  },
  "registryPullQPS": 5,
  "registryBurst": 10,
  "eventRecordQPS": 50,
  "eventBurst": 100,
  "enableDebuggingHandlers": true,
  "healthzPort": 10248,
  "healthzBindAddress": "127.0.0.1",
  "oomScoreAdj": -999,
  "clusterDomain": "cluster.local",
  "clusterDNS": [
    "10.96.0.10"
  ],
  "streamingConnectionIdleTimeout": "4h0m0s",
  "nodeStatusUpdateFrequency": "10s",
  "nodeStatusReportFrequency": "5m0s",
  "nodeLeaseDurationSeconds": 40,
  "imageMinimumGCAge": "2m0s",
  "imageMaximumGCAge": "0s",
  "volumeStatsAggPeriod": "1m0s",
  "cgroupsPerQOS": true,
  "cgroupDriver": "systemd",
  "cpuManagerPolicy": "none",
  "cpuManagerReconcilePeriod": "10s",
  "memoryManagerPolicy": "None",
  "topologyManagerPolicy": "none",
  "topologyManagerScope": "container",
  "runtimeRequestTimeout": "2m0s",
  "hairpinMode": "promiscuous-bridge",
  "maxPods": 110,
  "podPidsLimit": -1,
  "resolvConf": "/run/systemd/resolve/resolv.conf",
  "cpuCFSQuota": true,
  "cpuCFSQuotaPeriod": "100ms",
  "nodeStatusMaxImages": 50,
  "maxOpenFiles": 1000000,
  "contentType": "application/vnd.kubernetes.protobuf",
  "kubeAPIQPS": 50,
  "kubeAPIBurst": 100,
  "serializeImagePulls": true,
  "evictionPressureTransitionPeriod": "5m0s",
  "mergeDefaultEvictionSettings": false,
  "enableControllerAttachDetach": true,
  "makeIPTablesUtilChains": true,
  "iptablesMasqueradeBit": 14,
  "iptablesDropBit": 15,
  "failSwapOn": true,
  "memorySwap": {},
  "containerLogMaxSize": "10Mi",
  "containerLogMaxFiles": 5,
  "containerLogMaxWorkers": 1,
  "containerLogMonitorInterval": "10s",
  "configMapAndSecretChangeDetectionStrategy": "Watch",
  "enforceNodeAllocatable": [
    "pods"
  ],
  "volumePluginDir": "/usr/libexec/kubernetes/kubelet-plugins/volume/exec/",
  "logging": {
    "format": "text",
    "flushFrequency": "5s",
    "verbosity": 0,
    "options": {
      "text": {
        "infoBufferSize": "0"
      },
      "json": {
        "infoBufferSize": "0"
      }
    }
  },
  "enableSystemLogHandler": true,
  "enableSystemLogQuery": false,
  "shutdownGracePeriod": "0s",
  "shutdownGracePeriodCriticalPods": "0s",
  "enableProfilingHandler": true,
  "enableDebugFlagsHandler": true,
  "seccompDefault": false,
  "memoryThrottlingFactor": 0.9,
  "registerNode": true,
  "localStorageCapacityIsolation": true,
  "containerRuntimeEndpoint": "unix:///run/containerd/containerd.sock",
  "failCgroupV1": false
}"#;

/// Node `node`'s `/configz` as its kubelet writes it (a 1.34 kubelet: no
/// `kind` or `apiVersion` in the inner object; an empty map left out).
pub fn configz_json(node: usize) -> String {
    let k = kubelet_settings(node);
    let map = |pairs: &[(&str, &str)]| {
        serde_json::Value::Object(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v)))
                .collect(),
        )
    };
    // As a 1.34 kubelet writes it, but for the GC and eviction fields.
    let mut config: serde_json::Value =
        serde_json::from_str(CONFIGZ_REST).expect("the fleet's configz parses");
    let inner = config.as_object_mut().expect("an object");
    inner.insert("imageGCHighThresholdPercent".into(), k.image_gc_high.into());
    inner.insert("imageGCLowThresholdPercent".into(), k.image_gc_low.into());
    for (field, pairs) in [
        ("evictionHard", k.eviction_hard),
        ("evictionSoft", k.eviction_soft),
        ("evictionSoftGracePeriod", k.eviction_soft_grace_period),
    ] {
        if !pairs.is_empty() {
            inner.insert(field.to_owned(), map(pairs));
        }
    }
    serde_json::json!({ "kubeletconfig": config }).to_string()
}

/// Container `app`'s writable layer in pod `pod` of node `node`.
pub fn pod_rootfs_used(node: usize, pod: usize) -> u64 {
    (node as u64 * 1000 + pod as u64 + 1) * 4096
}

/// Container `app`'s logs.
pub fn pod_logs_used(pod: usize) -> u64 {
    pod as u64 * 1024 + 512
}

/// The pod's emptyDir `cache`.
pub fn pod_cache_used(pod: usize) -> u64 {
    (pod as u64 + 1) * 8192
}

/// Pod `pod`'s name and namespace.
pub fn pod_ref(pod: usize) -> (String, String) {
    (format!("ns-{}", pod % 5), format!("app-{pod}"))
}

/// Node `node`'s `/stats/summary` as its kubelet writes it. Even pods have
/// a PVC `data-app-<pod>`.
pub fn summary_json(node: usize, pods: usize) -> String {
    use std::fmt::Write as _;
    let name = node_name(node);
    let cap = 100 * GIB;
    let used = node_fs_used(node);
    let fs = |used: u64, inodes_used: u64| {
        format!(
            r#"{{"time":"{TIME}","availableBytes":{},"capacityBytes":{cap},"usedBytes":{used},"inodesFree":{},"inodes":6553600,"inodesUsed":{inodes_used}}}"#,
            cap - used,
            6553600 - inodes_used
        )
    };
    let whole = |f: Fs| {
        format!(
            r#"{{"time":"{TIME}","availableBytes":{},"capacityBytes":{},"usedBytes":{},"inodesFree":{},"inodes":{},"inodesUsed":{}}}"#,
            f.available(),
            f.capacity,
            f.used,
            f.inodes_free(),
            f.inodes,
            f.inodes_used
        )
    };
    let cpu = r#"{"time":"2026-12-05T20:00:00Z","usageNanoCores":12345678,"usageCoreNanoSeconds":987654321000}"#;
    let memory = r#"{"time":"2026-12-05T20:00:00Z","availableBytes":1073741824,"usageBytes":268435456,"workingSetBytes":201326592,"rssBytes":134217728,"pageFaults":12345,"majorPageFaults":12}"#;
    let network = r#"{"time":"2026-12-05T20:00:00Z","name":"eth0","rxBytes":123456789,"rxErrors":0,"txBytes":98765432,"txErrors":0,"interfaces":[{"name":"eth0","rxBytes":123456789,"rxErrors":0,"txBytes":98765432,"txErrors":0}]}"#;
    let mut out = String::with_capacity(1500 * pods + 3000);
    let _ = write!(
        out,
        r#"{{"node":{{"nodeName":"{name}","systemContainers":[{{"name":"kubelet","startTime":"2026-12-01T00:00:00Z","cpu":{cpu},"memory":{memory}}},{{"name":"runtime","startTime":"2026-12-01T00:00:00Z","cpu":{cpu},"memory":{memory}}},{{"name":"pods","startTime":"2026-12-01T00:00:00Z","cpu":{cpu},"memory":{memory}}}],"startTime":"2026-12-01T00:00:00Z","cpu":{cpu},"memory":{memory},"network":{network},"fs":{},"runtime":{{"imageFs":{},"containerFs":{}}},"rlimit":{{"time":"{TIME}","maxpid":{MAX_PID},"curproc":{}}},"swap":{{"time":"{TIME}","swapAvailableBytes":0,"swapUsageBytes":0}}}},"pods":["#,
        whole(node_fs(node)),
        whole(image_fs(node)),
        whole(container_fs(node)),
        cur_proc(node),
    );
    for p in 0..pods {
        if p > 0 {
            out.push(',');
        }
        let (ns, pod_name) = pod_ref(p);
        let rootfs = pod_rootfs_used(node, p);
        let logs = pod_logs_used(p);
        let cache = pod_cache_used(p);
        let _ = write!(
            out,
            r#"{{"podRef":{{"name":"{pod_name}","namespace":"{ns}","uid":"{node:08x}-0000-4000-8000-{p:012x}"}},"startTime":"2026-12-01T00:00:00Z","containers":[{{"name":"app","startTime":"2026-12-01T00:00:01Z","cpu":{cpu},"memory":{memory},"rootfs":{},"logs":{},"swap":{{"time":"{TIME}","swapAvailableBytes":0,"swapUsageBytes":0}}}}],"cpu":{cpu},"memory":{memory},"network":{network},"volume":["#,
            fs(rootfs, 12),
            fs(logs, 2),
        );
        let _ = write!(
            out,
            r#"{{"time":"{TIME}","availableBytes":{},"capacityBytes":{cap},"usedBytes":{cache},"inodesFree":6553590,"inodes":6553600,"inodesUsed":10,"name":"cache"}}"#,
            cap - used
        );
        if p % 2 == 0 {
            let _ = write!(
                out,
                r#",{{"time":"{TIME}","availableBytes":{},"capacityBytes":{},"usedBytes":{},"inodesFree":65000,"inodes":65536,"inodesUsed":536,"name":"data","pvcRef":{{"name":"data-{pod_name}","namespace":"{ns}"}}}}"#,
                GIB - (p as u64 + 1) * 1_000_000,
                GIB,
                (p as u64 + 1) * 1_000_000
            );
        }
        let _ = write!(
            out,
            r#"],"ephemeral-storage":{{"time":"{TIME}","availableBytes":{},"capacityBytes":{cap},"usedBytes":{},"inodesFree":{},"inodes":6553600,"inodesUsed":24}},"process_stats":{{"process_count":{}}},"swap":{{"time":"{TIME}","swapUsageBytes":0}}}}"#,
            cap - used,
            rootfs + logs + cache,
            6553600 - 24,
            p % 7 + 1
        );
    }
    out.push_str("]}");
    out
}
