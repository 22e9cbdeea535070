//! HTTP: `/metrics` renders the current snapshot (never samples),
//! `/stats/summary` serves it in kubelet's Summary API shape, `/` is a
//! landing page, `/healthz` says whether the sampler is keeping up. GET and
//! HEAD only; gzip (fast level) when the scraper asks for it; rendered once
//! per snapshot however many scrapers ask; TLS and basic auth from
//! `--web.config.file`, reloaded without a restart.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tracing::{debug, error, info, warn};

use crate::model::snapshot::SnapshotHandle;
use crate::registry::Registry;
use crate::web_config::{Auth, WebConfig, fingerprint};

pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long in-flight requests may take to finish on shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How often `--web.config.file` is checked for changes.
const RELOAD_POLL: Duration = Duration::from_secs(2);

pub type WebConfigHandle = Arc<ArcSwap<WebConfig>>;

#[derive(Clone)]
pub struct AppState {
    pub registry: Arc<Registry>,
    pub snapshot: SnapshotHandle,
    pub telemetry_path: String,
    /// A snapshot older than this makes /healthz fail.
    pub max_snapshot_age: Duration,
    pub web: WebConfigHandle,
    pub cache: Arc<ExpositionCache>,
    /// `node.nodeName` of `/stats/summary`.
    pub node_name: String,
}

pub fn router(state: AppState) -> Router {
    let telemetry_path = state.telemetry_path.clone();
    Router::new()
        .route(&telemetry_path, get(metrics))
        .route("/", get(landing))
        .route("/stats/summary", get(stats_summary))
        // Basic auth guards the routes above; /healthz stays open so kubelet's
        // probes need no credentials, and it tells nothing about the node.
        .route_layer(middleware::from_fn_with_state(state.clone(), basic_auth))
        .route("/healthz", get(healthz))
        .with_state(state)
}

/// The exposition of the latest snapshot, rendered once and gzipped at most
/// once however many scrapers ask: it is rendered again only when the
/// board's version says a part changed.
#[derive(Default)]
pub struct ExpositionCache {
    current: tokio::sync::Mutex<Option<Cached>>,
}

struct Cached {
    version: u64,
    plain: Bytes,
    gzip: Option<Bytes>,
}

fn gzip(body: &[u8]) -> std::io::Result<Bytes> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 8),
        flate2::Compression::fast(),
    );
    encoder.write_all(body)?;
    Ok(Bytes::from(encoder.finish()?))
}

/// Whether the client accepts gzip (`Accept-Encoding: gzip`, not with q=0).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let coding = parts.next().unwrap_or("");
            let zero = parts.any(|p| {
                p.replace(' ', "").eq_ignore_ascii_case("q=0") || p.replace(' ', "") == "q=0.0"
            });
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !zero
        })
}

async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let snapshot = state.snapshot.snapshot();
    let want_gzip = accepts_gzip(&headers);
    let mut cache = state.cache.current.lock().await;
    let fresh = matches!(&*cache, Some(c) if c.version == snapshot.version);
    if !fresh {
        let plain = Bytes::from(state.registry.render(&snapshot));
        *cache = Some(Cached {
            version: snapshot.version,
            plain,
            gzip: None,
        });
    }
    let Some(cached) = cache.as_mut() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let content_type = (header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE);
    let vary = (header::VARY, "Accept-Encoding");
    if want_gzip {
        if cached.gzip.is_none() {
            match gzip(&cached.plain) {
                Ok(body) => cached.gzip = Some(body),
                Err(e) => warn!(error = %e, "gzip failed; answering uncompressed"),
            }
        }
        if let Some(body) = &cached.gzip {
            return (
                [content_type, vary, (header::CONTENT_ENCODING, "gzip")],
                body.clone(),
            )
                .into_response();
        }
    }
    ([content_type, vary], cached.plain.clone()).into_response()
}

async fn landing(State(state): State<AppState>) -> Html<String> {
    let path = &state.telemetry_path;
    Html(format!(
        "<!DOCTYPE html>\n<html><head><title>kubedf</title></head><body>\n\
         <h1>kubedf</h1>\n<p>Disk, inode and PID headroom of this Kubernetes node and its volumes.</p>\n\
         <ul><li><a href=\"{path}\">{path}</a></li><li><a href=\"/stats/summary\">/stats/summary</a></li><li><a href=\"/healthz\">/healthz</a></li></ul>\n\
         </body></html>\n"
    ))
}

/// kubelet's Summary API shape for what kubedf measures, from the snapshot.
async fn stats_summary(State(state): State<AppState>) -> Response {
    let snapshot = state.snapshot.snapshot();
    let summary = crate::summary::summary(&snapshot, &state.node_name);
    match serde_json::to_vec_pretty(&summary) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => {
            error!(error = %e, "cannot encode /stats/summary");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

async fn healthz(State(state): State<AppState>) -> (StatusCode, String) {
    let taken_at = state.snapshot.snapshot().taken_at();
    let age = SystemTime::now()
        .duration_since(taken_at)
        .unwrap_or_default();
    if age <= state.max_snapshot_age {
        (StatusCode::OK, "ok\n".into())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("stale: the last snapshot is {}s old\n", age.as_secs()),
        )
    }
}

fn basic_credentials(request: &Request) -> Option<(String, String)> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

async fn basic_auth(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let web = state.web.load_full();
    if !web.requires_auth() {
        return next.run(request).await;
    }
    let credentials = basic_credentials(&request);
    // bcrypt is slow by design: keep it off the async threads.
    let verdict = tokio::task::spawn_blocking(move || {
        web.check(credentials.as_ref().map(|(u, p)| (u.as_str(), p.as_str())))
    })
    .await
    .unwrap_or(Auth::Denied);
    match verdict {
        Auth::Allowed | Auth::NotRequired => next.run(request).await,
        Auth::Denied => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"kubedf\"")],
            "Unauthorized\n",
        )
            .into_response(),
    }
}

/// Serves until `shutdown` resolves, then lets in-flight requests finish
/// (bounded). Each connection is served over TLS when the web config in force
/// at accept time has TLS.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(state.clone());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: pause, don't spin.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(app.clone());
        let tls = state.web.load().tls.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let http = hyper::server::conn::http1::Builder::new();
            let result = match tls {
                None => {
                    watcher
                        .watch(http.serve_connection(TokioIo::new(tcp), service))
                        .await
                }
                Some(config) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(config);
                    let stream =
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(e)) => {
                                debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        };
                    watcher
                        .watch(http.serve_connection(TokioIo::new(stream), service))
                        .await
                }
            };
            if let Err(e) = result {
                debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("some connections were still open after {DRAIN_TIMEOUT:?}; closing them");
    }
    Ok(())
}

pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Re-reads `path` when it or a file it names changes, and on SIGHUP. A bad
/// file is logged and the config in force stays.
pub async fn reload_web_config(
    path: PathBuf,
    handle: WebConfigHandle,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!(error = %e, "cannot listen for SIGHUP; the web config reloads only when its files change");
            None
        }
    };
    let mut seen = fingerprint(&path);
    loop {
        let forced = tokio::select! {
            _ = tokio::time::sleep(RELOAD_POLL) => false,
            Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
            _ = stop.changed() => return,
        };
        let current = fingerprint(&path);
        if !forced && current == seen {
            continue;
        }
        seen = current;
        let load = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || WebConfig::load(&path)).await
        };
        match load {
            Ok(Ok(config)) => {
                handle.store(Arc::new(config));
                info!(file = %path.display(), "web config reloaded");
            }
            Ok(Err(e)) => {
                error!(error = %e, "web config not reloaded; the previous one stays in force")
            }
            Err(e) => error!(error = %e, "web config not reloaded"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn accept_encoding() {
        assert!(accepts_gzip(&headers("gzip")));
        assert!(accepts_gzip(&headers("gzip, deflate, br")));
        assert!(accepts_gzip(&headers("deflate;q=0.5, GZIP;q=0.8")));
        assert!(accepts_gzip(&headers("*")));
        assert!(!accepts_gzip(&headers("gzip;q=0")));
        assert!(!accepts_gzip(&headers("identity")));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }
}
