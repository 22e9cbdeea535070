//! One HTTPS client for a fleet of kubelets (cluster mode): every node's
//! `/stats/summary` (or `/configz`) read directly from the kubelet at the
//! node's address; through the API server's `nodes/proxy` only when asked
//! (`--cluster.via-api-server-proxy`, [`KubeletClient::url`]).
//!
//! One client for all nodes, not a `kube::Client` per node: it holds one TLS
//! configuration, one credential and one connection pool, and the pool keeps
//! at most one idle keep-alive connection per kubelet, so a poll every
//! interval reuses its connection instead of a TLS handshake per node and
//! cycle. Credentials are the API server's (kube's own authentication
//! layer): the service account's token, re-read from its file as kube does
//! (every minute, so a rotated token is picked up), or the kubeconfig's
//! bearer token, client certificate or exec plugin. The kubelet's serving
//! certificate is verified against `--kubelet.ca-file`, else the cluster CA;
//! `--kubelet.insecure-skip-tls-verify` skips that, only when asked
//! (kubelets' certificates are often self-signed per node).
//!
//! Every request has one deadline for connecting, the answer and the whole
//! body, and a cap on the body, so a hung or runaway kubelet costs its own
//! poll and no more. Every error names the node and the URL and says which
//! of 401, 403, another status, a timeout, TLS, the connection or the body.

use std::error::Error as StdError;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::client::ConfigExt as _;
use thiserror::Error;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, ServiceBuilder, ServiceExt as _};

use super::nodes::KubeletNode;

/// What a name (a node's) escapes as one segment of a URL path: all but
/// RFC 3986's unreserved characters.
pub const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The read buffer of each connection.
const READ_BUF: usize = 16 << 10;

/// How much of an error answer's body goes into the error.
const ERROR_BODY: usize = 512;

#[derive(Debug, Error)]
pub enum KubeletClientError {
    #[error("--kubelet.ca-file {path}: {reason}")]
    CaFile { path: PathBuf, reason: String },
    #[error("cannot build the kubelet client: {reason}")]
    Build { reason: String },
    #[error("node {node}: {url}: not a URL: {reason}")]
    Url {
        node: String,
        url: String,
        reason: String,
    },
    #[error(
        "node {node}: {url}: HTTP 401 unauthorized: the kubelet refused kubedf's credentials ({message})"
    )]
    Unauthorized {
        node: String,
        url: String,
        message: String,
    },
    #[error(
        "node {node}: {url}: HTTP 403 forbidden: kubedf's service account needs get on nodes/{subresource} ({message})"
    )]
    Forbidden {
        node: String,
        url: String,
        subresource: &'static str,
        message: String,
    },
    #[error("node {node}: {url}: HTTP {code} ({message})")]
    Status {
        node: String,
        url: String,
        code: u16,
        message: String,
    },
    #[error("node {node}: {url}: no whole answer within {after:?}")]
    Timeout {
        node: String,
        url: String,
        after: Duration,
    },
    #[error("node {node}: {url}: TLS: {reason}")]
    Tls {
        node: String,
        url: String,
        reason: String,
    },
    #[error("node {node}: {url}: the connection failed: {reason}")]
    Connection {
        node: String,
        url: String,
        reason: String,
    },
    #[error("node {node}: {url}: the body is larger than {limit} bytes")]
    TooLarge {
        node: String,
        url: String,
        limit: usize,
    },
    #[error("node {node}: {url}: the body could not be read whole: {reason}")]
    Body {
        node: String,
        url: String,
        reason: String,
    },
}

impl KubeletClientError {
    /// The HTTP status of an error answer, if the kubelet answered one.
    pub fn status(&self) -> Option<u16> {
        match self {
            KubeletClientError::Unauthorized { .. } => Some(401),
            KubeletClientError::Forbidden { .. } => Some(403),
            KubeletClientError::Status { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// The `--kubelet.*` settings of the fleet's client.
#[derive(Clone, Debug)]
pub struct KubeletClientOptions {
    pub ca_file: Option<PathBuf>,
    pub insecure_skip_tls_verify: bool,
    /// One deadline per request: connect, answer and whole body.
    pub timeout: Duration,
    /// The largest body read; a kubelet's summary of 110 pods is a few
    /// hundred KiB.
    pub max_body: usize,
    /// How long an idle keep-alive connection is kept: above the poll
    /// interval, or every poll pays a TLS handshake.
    pub idle_timeout: Duration,
    /// Idle keep-alive connections kept per kubelet: 1, or 0 for a new
    /// connection (and TLS handshake) at every poll.
    pub max_idle_per_kubelet: usize,
    /// Every kubelet through the API server's `nodes/proxy`: the API
    /// server is verified as for any API call, and the kubelet TLS
    /// settings above do not apply.
    pub via_api_server: bool,
}

impl Default for KubeletClientOptions {
    fn default() -> Self {
        KubeletClientOptions {
            ca_file: None,
            insecure_skip_tls_verify: false,
            timeout: Duration::from_secs(10),
            max_body: 16 << 20,
            idle_timeout: Duration::from_secs(90),
            max_idle_per_kubelet: 1,
            via_api_server: false,
        }
    }
}

type Http = BoxCloneSyncService<Request<Empty<Bytes>>, Response<Incoming>, BoxError>;

/// The fleet's one client; cheap to clone (all clones share the pool).
#[derive(Clone)]
pub struct KubeletClient {
    http: Http,
    timeout: Duration,
    max_body: usize,
    /// The API server's URL (no trailing `/`), when kubelets are reached
    /// through its `nodes/proxy`.
    api_server: Option<String>,
}

impl std::fmt::Debug for KubeletClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeletClient")
            .field("timeout", &self.timeout)
            .field("max_body", &self.max_body)
            .finish()
    }
}

/// `https://<address>:<port><path>`, an IPv6 address in brackets.
pub fn kubelet_url(address: &str, port: u16, path: &str) -> String {
    match address.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("https://[{v6}]:{port}{path}"),
        _ => format!("https://{address}:{port}{path}"),
    }
}

impl KubeletClient {
    /// A client with `api`'s credentials (the API server's configuration
    /// kubedf already has: in-cluster or the kubeconfig's).
    pub fn new(
        api: kube::Config,
        opts: &KubeletClientOptions,
    ) -> Result<KubeletClient, KubeletClientError> {
        let build = |e: &dyn StdError| KubeletClientError::Build { reason: chain(e) };
        let mut config = api;
        config.proxy_url = None;
        let api_server = if opts.via_api_server {
            // Every request goes to the API server, verified as kube
            // verifies it for any API call.
            Some(
                config
                    .cluster_url
                    .to_string()
                    .trim_end_matches('/')
                    .to_owned(),
            )
        } else {
            // The API server's name is not a kubelet's: each kubelet is
            // checked against the address it is reached at.
            config.tls_server_name = None;
            config.accept_invalid_certs = opts.insecure_skip_tls_verify;
            if let Some(path) = &opts.ca_file {
                config.root_cert = Some(read_ca_file(path)?);
                config.root_cert_file = None;
            }
            None
        };
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        // `get`'s deadline covers connecting; this is only a backstop
        // behind it (equal, the two would race and a kubelet that never
        // answers could read as a connection error rather than a timeout).
        tcp.set_connect_timeout(Some(opts.timeout * 2));
        tcp.set_nodelay(true);
        // Finds a kubelet gone without a FIN between two polls.
        tcp.set_keepalive(Some(Duration::from_secs(30)));
        let https = config
            .rustls_https_connector_with_connector(tcp)
            .map_err(|e| build(&e))?;
        let pool = HyperClient::builder(TokioExecutor::new())
            .pool_idle_timeout(opts.idle_timeout)
            .pool_max_idle_per_host(opts.max_idle_per_kubelet)
            // A fixed read buffer: hyper's default grows with the bodies
            // read (a summary is tens of KiB) and each idle connection of
            // the pool keeps what it grew to, ~100 KiB times 5,000 kubelets.
            .http1_read_buf_exact_size(READ_BUF)
            .build(https);
        let auth = config.auth_layer().map_err(|e| build(&e))?;
        let service = ServiceBuilder::new()
            .option_layer(auth)
            .map_err(BoxError::from)
            .service(pool);
        Ok(KubeletClient {
            http: BoxCloneSyncService::new(service),
            timeout: opts.timeout,
            max_body: opts.max_body,
            api_server,
        })
    }

    /// The URL of `path` on `node`'s kubelet: `https://<address>:<port><path>`,
    /// or through the API server, `<api>/api/v1/nodes/<name>/proxy<path>`.
    pub fn url(&self, node: &KubeletNode, path: &str) -> String {
        match &self.api_server {
            None => kubelet_url(&node.address, node.port, path),
            Some(api) => {
                // A Node's name is a DNS subdomain; encoded all the same, so
                // that no name can leave its path segment (`.` and `..`
                // alone would be dot-segments).
                let name = match node.name.as_str() {
                    "." => "%2E".to_owned(),
                    ".." => "%2E%2E".to_owned(),
                    name => percent_encoding::utf8_percent_encode(name, PATH_SEGMENT).to_string(),
                };
                format!("{api}/api/v1/nodes/{name}/proxy{path}")
            }
        }
    }

    /// `GET url` from `node`'s kubelet: the whole body of a 2xx answer.
    pub async fn get(&self, node: &str, url: &str) -> Result<Bytes, KubeletClientError> {
        let uri: Uri = url.parse().map_err(|e| KubeletClientError::Url {
            node: node.to_owned(),
            url: url.to_owned(),
            reason: format!("{e}"),
        })?;
        let fetch = self.fetch(node, url, uri);
        match tokio::time::timeout(self.timeout, fetch).await {
            Ok(result) => result,
            Err(_) => Err(KubeletClientError::Timeout {
                node: node.to_owned(),
                url: url.to_owned(),
                after: self.timeout,
            }),
        }
    }

    async fn fetch(&self, node: &str, url: &str, uri: Uri) -> Result<Bytes, KubeletClientError> {
        let path = uri.path().to_owned();
        let request = Request::get(uri)
            .header(hyper::header::ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|e| KubeletClientError::Url {
                node: node.to_owned(),
                url: url.to_owned(),
                reason: e.to_string(),
            })?;
        let response = self
            .http
            .clone()
            .oneshot(request)
            .await
            .map_err(|e| classify(node, url, e.as_ref()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(status_error(node, url, &path, status, response).await);
        }
        match Limited::new(response.into_body(), self.max_body)
            .collect()
            .await
        {
            Ok(body) => Ok(body.to_bytes()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                Err(KubeletClientError::TooLarge {
                    node: node.to_owned(),
                    url: url.to_owned(),
                    limit: self.max_body,
                })
            }
            Err(e) => Err(KubeletClientError::Body {
                node: node.to_owned(),
                url: url.to_owned(),
                reason: chain(e.as_ref()),
            }),
        }
    }
}

/// The subresource kubelet's authorizer checks for a path (kubelet-facts
/// §17): what kubedf's RBAC lacks when the answer is 403.
pub fn subresource(path: &str) -> &'static str {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    match first {
        "stats" => "stats",
        "metrics" => "metrics",
        "configz" => "configz",
        "pods" => "pods",
        "healthz" => "healthz",
        _ => "proxy",
    }
}

async fn status_error(
    node: &str,
    url: &str,
    path: &str,
    status: StatusCode,
    response: Response<Incoming>,
) -> KubeletClientError {
    // The start of the answer says why (kubelet writes one line of text);
    // more is not read.
    let message = match Limited::new(response.into_body(), ERROR_BODY)
        .collect()
        .await
    {
        Ok(body) => String::from_utf8_lossy(&body.to_bytes())
            .trim()
            .escape_debug()
            .to_string(),
        Err(_) => String::new(),
    };
    let message = if message.is_empty() {
        status.canonical_reason().unwrap_or("").to_owned()
    } else {
        message
    };
    let (node, url) = (node.to_owned(), url.to_owned());
    match status {
        StatusCode::UNAUTHORIZED => KubeletClientError::Unauthorized { node, url, message },
        StatusCode::FORBIDDEN => KubeletClientError::Forbidden {
            node,
            url,
            subresource: subresource(path),
            message,
        },
        _ => KubeletClientError::Status {
            node,
            url,
            code: status.as_u16(),
            message,
        },
    }
}

/// A failed request: TLS if rustls is anywhere in its causes, else the
/// connection.
fn classify(node: &str, url: &str, e: &(dyn StdError + 'static)) -> KubeletClientError {
    let (node, url, reason) = (node.to_owned(), url.to_owned(), chain(e));
    let mut cause: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(c) = cause {
        if is_tls(c) {
            return KubeletClientError::Tls { node, url, reason };
        }
        cause = c.source();
    }
    KubeletClientError::Connection { node, url, reason }
}

/// rustls's error, or an `io::Error` wrapping one (at any depth: the TLS
/// stream and the connector each wrap it, and `io::Error::source` skips the
/// error it wraps).
fn is_tls(e: &(dyn StdError + 'static)) -> bool {
    if e.is::<rustls::Error>() {
        return true;
    }
    match e
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
    {
        Some(inner) => is_tls(inner),
        None => false,
    }
}

fn read_ca_file(path: &Path) -> Result<Vec<Vec<u8>>, KubeletClientError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;
    let bad = |reason: String| KubeletClientError::CaFile {
        path: path.to_path_buf(),
        reason,
    };
    let certs: Vec<Vec<u8>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(e.to_string()))?
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<_, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no PEM certificate in it".into()));
    }
    Ok(certs)
}

/// An error and its causes, as one line, each cause once.
fn chain(e: &dyn StdError) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn through_the_api_server_only_when_asked() {
        let api = || kube::Config::new("https://api.example:6443/".parse().expect("url"));
        let node = KubeletNode {
            name: "node-1.zone".into(),
            uid: String::new(),
            address: "10.0.0.1".into(),
            port: 10250,
        };
        let direct = KubeletClient::new(api(), &KubeletClientOptions::default()).expect("client");
        assert_eq!(
            direct.url(&node, "/stats/summary"),
            "https://10.0.0.1:10250/stats/summary"
        );
        let opts = KubeletClientOptions {
            via_api_server: true,
            ..KubeletClientOptions::default()
        };
        let proxied = KubeletClient::new(api(), &opts).expect("client");
        assert_eq!(
            proxied.url(&node, "/stats/summary"),
            "https://api.example:6443/api/v1/nodes/node-1.zone/proxy/stats/summary"
        );
        // No name leaves its path segment.
        let odd = KubeletNode {
            name: "../x?y#z".into(),
            ..node
        };
        assert_eq!(
            proxied.url(&odd, "/configz"),
            "https://api.example:6443/api/v1/nodes/..%2Fx%3Fy%23z/proxy/configz"
        );
        let dots = KubeletNode {
            name: "..".into(),
            ..odd
        };
        assert_eq!(
            proxied.url(&dots, "/configz"),
            "https://api.example:6443/api/v1/nodes/%2E%2E/proxy/configz"
        );
    }

    #[test]
    fn urls_of_kubelets() {
        assert_eq!(
            kubelet_url("10.0.0.1", 10250, "/stats/summary"),
            "https://10.0.0.1:10250/stats/summary"
        );
        assert_eq!(
            kubelet_url("fd00::1", 10250, "/stats/summary"),
            "https://[fd00::1]:10250/stats/summary"
        );
        assert_eq!(
            kubelet_url("node-1.example", 10250, "/configz"),
            "https://node-1.example:10250/configz"
        );
    }

    #[test]
    fn subresources_kubelet_checks() {
        assert_eq!(subresource("/stats/summary"), "stats");
        assert_eq!(subresource("/configz"), "configz");
        assert_eq!(subresource("/metrics/resource"), "metrics");
        assert_eq!(subresource("/pods"), "pods");
        assert_eq!(subresource("/exec/ns/pod/c"), "proxy");
    }

    #[test]
    fn a_ca_file_without_certificates_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ca.crt");
        std::fs::write(&path, "not a certificate\n").expect("write");
        let e = read_ca_file(&path).expect_err("no certificate").to_string();
        assert_eq!(
            e,
            format!(
                "--kubelet.ca-file {}: no PEM certificate in it",
                path.display()
            )
        );
        let missing = dir.path().join("missing.crt");
        let e = read_ca_file(&missing).expect_err("missing").to_string();
        assert!(
            e.starts_with(&format!("--kubelet.ca-file {}: ", missing.display())),
            "{e}"
        );
    }
}
