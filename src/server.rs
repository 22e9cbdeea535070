//! HTTP: `/metrics` renders the current snapshot (never samples),
//! `/stats/summary` serves it in kubelet's Summary API shape, `/` is a
//! landing page, `/healthz` says whether the sampler is keeping up. GET and
//! HEAD only; gzip (fast level) when the scraper asks for it; rendered once
//! per snapshot however many scrapers ask; TLS, basic auth, headers and a
//! rate limit from `--web.config.file`, reloaded without a restart but never
//! weakened by a reload. Every connection is bounded: a header-read and an
//! idle timeout, and a cap on how many are open at once, where a new
//! connection evicts the longest-idle one so that scrapers always get in.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tower::ServiceExt as _;
use tracing::{debug, error, info, warn};

use crate::exposition::Format;
use crate::model::Snapshot;
use crate::model::snapshot::SnapshotHandle;
use crate::registry::Registry;
use crate::web_config::{Auth, RateLimit, ReloadStatus, WebConfig, fingerprint};

/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send a request's headers, from its first
/// byte (slowloris).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection may sit with no request in flight and nothing sent
/// (keep-alive, or connected and silent). Longer than common scrape
/// intervals, so Prometheus keeps its connection between scrapes.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(75);
/// The default of `--web.max-connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;
/// Paths kubedf serves besides the exposition, which `--web.telemetry-path`
/// must not take.
pub const RESERVED_PATHS: [&str; 3] = ["/", "/healthz", "/stats/summary"];
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
    /// `rate_limit` of the web config in force at start (fixed at start, as
    /// in exporter-toolkit).
    pub rate_limit: Option<Arc<RateLimit>>,
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
        .layer(middleware::from_fn_with_state(state.clone(), web_policy))
        .with_state(state)
}

/// Whether `path` may be the telemetry path: a plain absolute path (no
/// pattern syntax, query, fragment or escapes) that collides with none of
/// kubedf's other paths. Checked at start, so the router cannot panic on it.
pub fn check_telemetry_path(path: &str) -> Result<(), String> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-._~!$&'()+,;=@/".contains(c);
    if !path.starts_with('/') {
        return Err(format!("{path:?} must start with / (such as /metrics)"));
    }
    if let Some(bad) = path.chars().find(|c| !plain(*c)) {
        return Err(format!(
            "{path:?} must be a plain URL path such as /metrics: {bad:?} is not allowed (no patterns such as /{{x}}, /:x or /*x, no query, fragment, %-escapes or spaces)"
        ));
    }
    if path[1..].split('/').any(|seg| seg == "." || seg == "..") || path.contains("//") {
        return Err(format!(
            "{path:?} must be a plain URL path such as /metrics: no empty, . or .. segments"
        ));
    }
    if RESERVED_PATHS.contains(&path) {
        return Err(format!(
            "{path:?} is taken by kubedf itself ({}); choose another path such as /metrics",
            RESERVED_PATHS.join(", ")
        ));
    }
    Ok(())
}

/// The exposition of the latest snapshot, rendered once per format and
/// gzipped at most once per format however many scrapers ask: it is
/// rendered again only when the board's version says a part changed.
///
/// Only the bodies that were asked for are kept: a scraper that asks for
/// gzip (Prometheus always does) leaves only the gzip body cached, about a
/// tenth of the plain text, which at 5,000 volumes is megabytes.
#[derive(Default)]
pub struct ExpositionCache {
    current: tokio::sync::Mutex<Option<Cached>>,
    /// Renders and gzips done so far, for the tests of this cache.
    renders: AtomicU64,
    gzips: AtomicU64,
    /// The size of the plain text when a render last reported a peak.
    peak_len: AtomicUsize,
}

impl ExpositionCache {
    /// Drops the cached exposition, for when something it shows changed
    /// between snapshots (the web config reload status).
    pub async fn invalidate(&self) {
        *self.current.lock().await = None;
    }
}

struct Cached {
    version: u64,
    text: Rendered,
    /// OpenMetrics 1.0.0 and 0.0.1 share one body.
    openmetrics: Rendered,
}

/// One format's bodies, each kept once a scraper asked for it.
#[derive(Default)]
struct Rendered {
    plain: Option<Bytes>,
    gzip: Option<Bytes>,
}

/// A render whose size differs from the last reported one by more than
/// this fraction (and [`PEAK_MIN_BYTES`]) reports a peak to [`crate::heap`].
const PEAK_FRACTION: usize = 4;
const PEAK_MIN_BYTES: usize = 256 << 10;

impl ExpositionCache {
    /// The body for `snapshot` in `format`, gzipped when `want_gzip` (and
    /// gzip worked), and whether it is gzipped.
    pub async fn body(
        &self,
        registry: &Registry,
        snapshot: &Snapshot,
        format: Format,
        want_gzip: bool,
    ) -> (Bytes, bool) {
        let mut guard = self.current.lock().await;
        let cached = match &mut *guard {
            Some(c) if c.version == snapshot.version => c,
            slot => slot.insert(Cached {
                version: snapshot.version,
                text: Rendered::default(),
                openmetrics: Rendered::default(),
            }),
        };
        let rendered = if format.is_openmetrics() {
            &mut cached.openmetrics
        } else {
            &mut cached.text
        };
        if want_gzip {
            if rendered.gzip.is_none() {
                // From the cached plain text if a scraper asked for it, else
                // from a render that is not kept.
                let plain = match &rendered.plain {
                    Some(plain) => plain.clone(),
                    None => self.render(registry, snapshot, format),
                };
                self.gzips.fetch_add(1, Ordering::Relaxed);
                match gzip(&plain) {
                    Ok(body) => rendered.gzip = Some(body),
                    Err(e) => {
                        warn!(error = %e, "gzip failed; answering uncompressed");
                        rendered.plain = Some(plain);
                    }
                }
            }
            if let Some(body) = &rendered.gzip {
                return (body.clone(), true);
            }
        }
        let plain = rendered
            .plain
            .get_or_insert_with(|| self.render(registry, snapshot, format));
        (plain.clone(), false)
    }

    fn render(&self, registry: &Registry, snapshot: &Snapshot, format: Format) -> Bytes {
        self.renders.fetch_add(1, Ordering::Relaxed);
        let mut text = registry.render_as(snapshot, format);
        // The text grew by doubling: up to half of its buffer is spare.
        text.shrink_to_fit();
        // A render at a new size leaves the buffers of its growth behind:
        // hand them back once things are quiet (not per scrape).
        let last = self.peak_len.load(Ordering::Relaxed);
        if text.len().abs_diff(last) > (last / PEAK_FRACTION).max(PEAK_MIN_BYTES) {
            self.peak_len.store(text.len(), Ordering::Relaxed);
            crate::heap::after_peak();
        }
        Bytes::from(text)
    }

    /// (renders, gzips) done so far.
    pub fn work_done(&self) -> (u64, u64) {
        (
            self.renders.load(Ordering::Relaxed),
            self.gzips.load(Ordering::Relaxed),
        )
    }
}

fn gzip(body: &[u8]) -> std::io::Result<Bytes> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 8),
        flate2::Compression::fast(),
    );
    encoder.write_all(body)?;
    let mut out = encoder.finish()?;
    out.shrink_to_fit();
    Ok(Bytes::from(out))
}

/// Whether the client accepts gzip, per RFC 9110 section 12.5.3: `gzip`
/// (or its alias `x-gzip`) with a q-value above 0, or else `*` with one; an
/// explicit `gzip;q=0` wins over `*`. A malformed q-value makes its element
/// count as a refusal.
pub fn accepts_gzip(headers: &HeaderMap) -> bool {
    let mut gzip: Option<bool> = None;
    let mut any: Option<bool> = None;
    for item in headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
    {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim();
        let mut q = Some(1000);
        for param in parts {
            let (name, value) = param.split_once('=').unwrap_or((param, ""));
            if name.trim().eq_ignore_ascii_case("q") {
                q = qvalue(value.trim());
            }
        }
        let accepted = q.is_some_and(|q| q > 0);
        let slot = if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
            &mut gzip
        } else if coding == "*" {
            &mut any
        } else {
            continue;
        };
        // Repeated elements: the most favourable one counts.
        *slot = Some(slot.unwrap_or(false) || accepted);
    }
    gzip.or(any).unwrap_or(false)
}

/// An RFC 9110 qvalue in thousandths: `0`, `0.`, up to three decimals after
/// `0.`, or `1` with only zeros after the point; anything else is None.
pub fn qvalue(s: &str) -> Option<u16> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = format!("{frac:0<3}");
    let thousandths: u16 = digits.parse().ok()?;
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// The exposition in the format the scraper asks for (`Accept`, as
/// promhttp negotiates it: OpenMetrics for Prometheus, the text format
/// 0.0.4 for anything that does not ask for OpenMetrics).
async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let snapshot = state.snapshot.snapshot();
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = Format::negotiate(accept);
    let (body, gzipped) = state
        .cache
        .body(&state.registry, &snapshot, format, accepts_gzip(&headers))
        .await;
    let content_type = (header::CONTENT_TYPE, format.content_type());
    let vary = (header::VARY, "Accept, Accept-Encoding");
    if gzipped {
        (
            [content_type, vary, (header::CONTENT_ENCODING, "gzip")],
            body,
        )
            .into_response()
    } else {
        ([content_type, vary], body).into_response()
    }
}

/// What `kubedf df` shows, as a page: the latest snapshot's filesystems,
/// PIDs, GC and eviction headroom and PVCs, with links to the endpoints.
async fn landing(State(state): State<AppState>) -> Html<String> {
    let snapshot = state.snapshot.snapshot();
    let path = state.telemetry_path.as_str();
    Html(crate::df::report(&snapshot).html(
        "kubedf",
        &[
            (path, path),
            ("/stats/summary", "/stats/summary"),
            ("/healthz", "/healthz"),
        ],
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

/// What the web config asks of every response, on every path: the rate
/// limit first (429, as exporter-toolkit), then its headers.
async fn web_policy(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(limit) = &state.rate_limit
        && !limit.allow()
    {
        return (StatusCode::TOO_MANY_REQUESTS, "Too Many Requests\n").into_response();
    }
    let web = state.web.load_full();
    let mut response = next.run(request).await;
    for (name, value) in &web.headers {
        response.headers_mut().insert(name.clone(), value.clone());
    }
    response
}

/// One open connection, as the connection tracker sees it.
struct Conn {
    /// Requests being answered.
    in_flight: AtomicUsize,
    /// When it last became idle (accepted, or a response done), in ms since
    /// the tracker's epoch.
    idle_since: AtomicU64,
    /// When the first byte of the next request arrived while idle (ms since
    /// the epoch, plus one; 0 = none): the header-read timeout runs from it.
    reading_since: AtomicU64,
    /// HTTP/2: reads are frames (pings, settings), so any read is activity
    /// and only the idle timeout applies.
    h2: AtomicBool,
    close: tokio::sync::Notify,
}

/// The open connections: the cap, and the two timeouts.
struct Tracker {
    epoch: Instant,
    max: usize,
    conns: Mutex<(u64, HashMap<u64, Arc<Conn>>)>,
    /// Whether the cap was hit since the last time the count fell below it,
    /// so that reaching it is logged once per episode.
    at_cap: AtomicBool,
    /// Wakes the reaper when a deadline may have come nearer: a connection
    /// admitted, a request starting to arrive, a response done. Between
    /// those, the reaper sleeps until the earliest deadline, or for good
    /// when there is none (an idle exporter wakes for nothing).
    wake: tokio::sync::Notify,
}

impl Tracker {
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Admits a new connection. At the cap, the longest-idle connection is
    /// closed to make room; with none idle, the new one is refused (None).
    fn admit(self: &Arc<Self>) -> Option<ConnGuard> {
        let mut guard = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
        let (next_id, conns) = &mut *guard;
        if conns.len() >= self.max {
            if !self.at_cap.swap(true, Ordering::Relaxed) {
                warn!(
                    max = self.max,
                    "--web.max-connections reached; closing the longest-idle connections to admit new ones"
                );
            }
            let victim = conns
                .iter()
                .filter(|(_, c)| c.in_flight.load(Ordering::Relaxed) == 0)
                .min_by_key(|(_, c)| c.idle_since.load(Ordering::Relaxed))
                .map(|(id, _)| *id);
            let victim = victim.and_then(|id| conns.remove(&id))?;
            victim.close.notify_one();
        } else if conns.len() + 1 < self.max {
            self.at_cap.store(false, Ordering::Relaxed);
        }
        let id = *next_id;
        *next_id += 1;
        let conn = Arc::new(Conn {
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(self.now()),
            reading_since: AtomicU64::new(0),
            h2: AtomicBool::new(false),
            close: tokio::sync::Notify::new(),
        });
        conns.insert(id, Arc::clone(&conn));
        self.wake.notify_one();
        Some(ConnGuard {
            tracker: Arc::clone(self),
            id,
            conn,
        })
    }

    /// Closes the connections past their header-read or idle timeout, and
    /// says when the next one of those that remain expires (ms since the
    /// epoch; `None`: no deadline, only connections answering a request).
    fn reap(&self) -> Option<u64> {
        let now = self.now();
        let header = u64::try_from(HEADER_READ_TIMEOUT.as_millis()).unwrap_or(u64::MAX);
        let idle = u64::try_from(IDLE_TIMEOUT.as_millis()).unwrap_or(u64::MAX);
        let mut next: Option<u64> = None;
        let mut guard = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
        guard.1.retain(|_, c| {
            if c.in_flight.load(Ordering::Relaxed) > 0 {
                return true;
            }
            let reading = c.reading_since.load(Ordering::Relaxed);
            // Expired once more than the timeout has passed.
            let expires = if reading > 0 {
                (reading - 1).saturating_add(header).saturating_add(1)
            } else {
                c.idle_since
                    .load(Ordering::Relaxed)
                    .saturating_add(idle)
                    .saturating_add(1)
            };
            if now >= expires {
                c.close.notify_one();
                return false;
            }
            next = Some(next.map_or(expires, |n| n.min(expires)));
            true
        });
        next
    }

    /// Reaps at each deadline and whenever woken; never on a fixed tick.
    async fn run_reaper(&self) {
        loop {
            let deadline = self
                .reap()
                .map(|ms| tokio::time::Instant::from_std(self.epoch + Duration::from_millis(ms)));
            tokio::select! {
                _ = crate::scheduler::sleep_until(deadline) => {}
                _ = self.wake.notified() => {}
            }
        }
    }
}

/// A tracked connection; leaving the tracker when dropped.
struct ConnGuard {
    tracker: Arc<Tracker>,
    id: u64,
    conn: Arc<Conn>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.tracker
            .conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .1
            .remove(&self.id);
    }
}

/// Marks a request in flight until dropped (answered or abandoned).
struct InFlight {
    tracker: Arc<Tracker>,
    conn: Arc<Conn>,
}

impl InFlight {
    fn new(tracker: &Arc<Tracker>, conn: &Arc<Conn>) -> InFlight {
        conn.in_flight.fetch_add(1, Ordering::Relaxed);
        conn.reading_since.store(0, Ordering::Relaxed);
        InFlight {
            tracker: Arc::clone(tracker),
            conn: Arc::clone(conn),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.conn
            .idle_since
            .store(self.tracker.now(), Ordering::Relaxed);
        self.conn.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.tracker.wake.notify_one();
    }
}

/// A socket that tells the tracker when a request starts to arrive.
struct Watched<T> {
    io: T,
    tracker: Arc<Tracker>,
    conn: Arc<Conn>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let c = &self.conn;
            let now = self.tracker.now();
            if c.h2.load(Ordering::Relaxed) {
                c.idle_since.store(now, Ordering::Relaxed);
            } else if c.in_flight.load(Ordering::Relaxed) == 0
                && c.reading_since
                    .compare_exchange(0, now + 1, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                // A header-read deadline, nearer than the idle one.
                self.tracker.wake.notify_one();
            }
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// How the server runs: fixed at start.
#[derive(Clone, Copy, Debug)]
pub struct ServeOptions {
    /// `--web.max-connections`.
    pub max_connections: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Serves until `shutdown` resolves, then lets in-flight requests finish
/// (bounded). TLS is on or off for the whole run, as the web config in
/// force at start says (a reload cannot change it, see
/// [`reload_web_config`]); each handshake uses the config in force then.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(state.clone());
    let graceful = GracefulShutdown::new();
    let tls_on = state.web.load().tls.is_some();
    let tracker = Arc::new(Tracker {
        epoch: Instant::now(),
        max: options.max_connections.max(1),
        conns: Mutex::default(),
        at_cap: AtomicBool::new(false),
        wake: tokio::sync::Notify::new(),
    });
    let reaper = {
        let tracker = Arc::clone(&tracker);
        tokio::spawn(async move { tracker.run_reaper().await })
    };
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
        let Some(guard) = tracker.admit() else {
            debug!(%peer, "connection refused: every connection has a request in flight");
            drop(tcp);
            continue;
        };
        let tls = if tls_on {
            match state.web.load().tls.clone() {
                Some(config) => Some(config),
                None => {
                    // Unreachable by construction; fail closed all the same.
                    error!(
                        "TLS is on but the web config in force has none; refusing the connection"
                    );
                    continue;
                }
            }
        } else {
            None
        };
        let watcher = graceful.watcher();
        let app = app.clone();
        let tracker = Arc::clone(&tracker);
        tokio::spawn(async move {
            let conn = Arc::clone(&guard.conn);
            let io = Watched {
                io: tcp,
                tracker: Arc::clone(&tracker),
                conn: Arc::clone(&conn),
            };
            let clock = Arc::clone(&tracker);
            let service = {
                let conn = Arc::clone(&conn);
                hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let in_flight = InFlight::new(&tracker, &conn);
                    let app = app.clone();
                    async move {
                        let response = app.oneshot(request.map(axum::body::Body::new)).await;
                        drop(in_flight);
                        response
                    }
                })
            };
            let served =
                async {
                    match tls {
                        None => {
                            let mut http = hyper::server::conn::http1::Builder::new();
                            http.timer(TokioTimer::new())
                                .header_read_timeout(HEADER_READ_TIMEOUT + IDLE_TIMEOUT);
                            watcher
                                .watch(http.serve_connection(TokioIo::new(io), service))
                                .await
                        }
                        Some(config) => {
                            let acceptor = tokio_rustls::TlsAcceptor::from(config);
                            let stream =
                                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io))
                                    .await
                                {
                                    Ok(Ok(stream)) => stream,
                                    Ok(Err(e)) => {
                                        debug!(%peer, error = %e, "TLS handshake failed");
                                        return Ok(());
                                    }
                                    Err(_) => {
                                        debug!(%peer, "TLS handshake timed out");
                                        return Ok(());
                                    }
                                };
                            if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                                // From now on reads are frames: only the idle timeout applies.
                                conn.h2.store(true, Ordering::Relaxed);
                                conn.reading_since.store(0, Ordering::Relaxed);
                                conn.idle_since.store(clock.now(), Ordering::Relaxed);
                                let mut http =
                                    hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                                http.timer(TokioTimer::new());
                                watcher
                                    .watch(http.serve_connection(TokioIo::new(stream), service))
                                    .await
                            } else {
                                let mut http = hyper::server::conn::http1::Builder::new();
                                http.timer(TokioTimer::new())
                                    .header_read_timeout(HEADER_READ_TIMEOUT + IDLE_TIMEOUT);
                                watcher
                                    .watch(http.serve_connection(TokioIo::new(stream), service))
                                    .await
                            }
                        }
                    }
                };
            let result = tokio::select! {
                r = served => r,
                () = conn.close.notified() => {
                    debug!(%peer, "connection closed: idle, too slow, or evicted at the cap");
                    Ok(())
                }
            };
            if let Err(e) = result {
                debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(guard);
        });
    }
    reaper.abort();
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
/// file, or one that would turn TLS off (or on) or drop basic auth, is
/// logged, counted in `status`, and the config in force stays: a
/// half-written or truncated file never weakens what is served.
pub async fn reload_web_config(
    path: PathBuf,
    handle: WebConfigHandle,
    status: Arc<ReloadStatus>,
    cache: Arc<ExpositionCache>,
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
        let outcome = match load {
            Ok(Ok(next)) => apply_reload(&handle, next),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match outcome {
            Ok(()) => {
                status.succeeded();
                info!(file = %path.display(), "web config reloaded");
            }
            Err(e) => {
                status.failed();
                error!(file = %path.display(), error = %e, "web config not reloaded; the previous one stays in force");
            }
        }
        cache.invalidate().await;
    }
}

/// Puts `next` in force unless it would weaken the one in force. What
/// exporter-toolkit fixes at start (http2, rate_limit) stays as it was.
fn apply_reload(handle: &WebConfigHandle, mut next: WebConfig) -> Result<(), String> {
    let current = handle.load_full();
    if let Some(why) = current.downgrade(&next) {
        return Err(format!("refused: {why}"));
    }
    if next.http2 != current.http2 {
        warn!("web config: http_server_config.http2 takes effect on restart only");
        next.http2 = current.http2;
        if let (Some(tls), Some(old)) = (next.tls.as_mut(), current.tls.as_ref())
            && let Some(tls) = Arc::get_mut(tls)
        {
            tls.alpn_protocols = old.alpn_protocols.clone();
        }
    }
    if next.rate_limit.is_some() != current.rate_limit.is_some() {
        warn!("web config: rate_limit takes effect on restart only");
    }
    handle.store(Arc::new(next));
    Ok(())
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
        // RFC 9110 qvalues: every spelling of zero refuses.
        for zero in ["0", "0.", "0.0", "0.00", "0.000"] {
            assert!(!accepts_gzip(&headers(&format!("gzip;q={zero}"))), "{zero}");
            assert!(
                !accepts_gzip(&headers(&format!("gzip ; Q = {zero}"))),
                "{zero}"
            );
            assert!(!accepts_gzip(&headers(&format!("*;q={zero}"))), "{zero}");
        }
        assert!(accepts_gzip(&headers("gzip;q=0.001")));
        assert!(accepts_gzip(&headers("gzip;q=1.000")));
        assert!(accepts_gzip(&headers("x-gzip")));
        // An explicit refusal beats the wildcard; malformed q-values refuse.
        assert!(!accepts_gzip(&headers("gzip;q=0, *")));
        assert!(accepts_gzip(&headers("br, *;q=0.1")));
        for bad in [
            "gzip;q=2",
            "gzip;q=1.5",
            "gzip;q=0.0001",
            "gzip;q=",
            "gzip;q=-1",
            "gzip;q=abc",
        ] {
            assert!(!accepts_gzip(&headers(bad)), "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn accept_encoding_never_panics(v in "[ -~]{0,64}") {
            if let Ok(value) = HeaderValue::from_str(&v) {
                let mut h = HeaderMap::new();
                h.insert(header::ACCEPT_ENCODING, value);
                let _ = accepts_gzip(&h);
            }
        }

        #[test]
        fn qvalues_match_the_grammar(int in 0u8..3, frac in "[0-9]{0,4}") {
            let s = format!("{int}.{frac}");
            let got = qvalue(&s);
            let digits_ok = frac.len() <= 3;
            let want = match (int, digits_ok) {
                (0, true) => Some(format!("{frac:0<3}").parse::<u16>().unwrap()),
                (1, true) if frac.bytes().all(|b| b == b'0') => Some(1000),
                _ => None,
            };
            proptest::prop_assert_eq!(got, want);
            let zero = got == Some(0);
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(&format!("gzip;q={s}")).unwrap());
            proptest::prop_assert_eq!(accepts_gzip(&h), got.is_some() && !zero);
        }

        #[test]
        fn telemetry_path_check_never_panics(p in "\\PC{0,24}") {
            if check_telemetry_path(&p).is_ok() {
                // Whatever passes, the router takes without panicking.
                let _ = axum::Router::<()>::new().route(&p, get(|| async { "" }));
            }
        }
    }

    #[test]
    fn trackers_close_idle_and_slow_connections_and_evict_at_the_cap() {
        let tracker = Arc::new(Tracker {
            epoch: Instant::now() - Duration::from_secs(1000),
            max: 2,
            conns: Mutex::default(),
            at_cap: AtomicBool::new(false),
            wake: tokio::sync::Notify::new(),
        });
        let a = tracker.admit().unwrap();
        let b = tracker.admit().unwrap();
        // b is answering a request: at the cap, the idle one (a) goes.
        let busy = InFlight::new(&tracker, &b.conn);
        a.conn.idle_since.store(0, Ordering::Relaxed);
        let c = tracker.admit().expect("room made by evicting a");
        assert!(!tracker.conns.lock().unwrap().1.contains_key(&a.id));
        // All busy: a new connection is refused.
        let busy_c = InFlight::new(&tracker, &c.conn);
        assert!(tracker.admit().is_none());
        drop((busy, busy_c));
        // Idle past IDLE_TIMEOUT, or reading headers past HEADER_READ_TIMEOUT: reaped.
        let now = tracker.now();
        b.conn
            .idle_since
            .store(now - IDLE_TIMEOUT.as_millis() as u64 - 1, Ordering::Relaxed);
        c.conn.reading_since.store(
            now - HEADER_READ_TIMEOUT.as_millis() as u64 - 1 + 1,
            Ordering::Relaxed,
        );
        assert_eq!(
            tracker.reap(),
            None,
            "nothing left: no deadline to wake for"
        );
        assert!(tracker.conns.lock().unwrap().1.is_empty());
        // A fresh one stays, and the reaper is told when it expires.
        let before = tracker.now();
        let d = tracker.admit().unwrap();
        let next = tracker.reap().expect("an idle connection has a deadline");
        let idle = IDLE_TIMEOUT.as_millis() as u64;
        assert!(
            next > before + idle && next <= tracker.now() + idle + 1,
            "{next}"
        );
        assert!(tracker.conns.lock().unwrap().1.contains_key(&d.id));
        // A request starting to arrive brings the deadline nearer.
        d.conn
            .reading_since
            .store(tracker.now() + 1, Ordering::Relaxed);
        let reading = tracker.reap().expect("a header-read deadline");
        assert!(reading <= tracker.now() + HEADER_READ_TIMEOUT.as_millis() as u64 + 1);
        assert!(reading < next);
        // Answering a request has no deadline.
        let _busy = InFlight::new(&tracker, &d.conn);
        assert_eq!(tracker.reap(), None);
    }

    #[tokio::test]
    async fn each_format_is_rendered_and_gzipped_once_per_snapshot() {
        let registry = Registry::new(None).expect("registry");
        let cache = ExpositionCache::default();
        let first = crate::fixtures::node();
        for _ in 0..3 {
            for format in [Format::OpenMetrics100, Format::OpenMetrics001, Format::Text] {
                for gzip in [false, true] {
                    let (body, gzipped) = cache.body(&registry, &first, format, gzip).await;
                    assert_eq!(gzipped, gzip);
                    if !gzip {
                        let text = std::str::from_utf8(&body).expect("utf-8");
                        assert_eq!(text.ends_with("# EOF\n"), format.is_openmetrics());
                    }
                }
            }
        }
        // OpenMetrics 1.0.0 and 0.0.1 share their body.
        assert_eq!(cache.work_done(), (2, 2));
        // A new snapshot is rendered anew, and only in the format asked for.
        let second = Snapshot {
            version: first.version + 1,
            ..crate::fixtures::node()
        };
        cache.body(&registry, &second, Format::Text, false).await;
        assert_eq!(cache.work_done(), (3, 2));
        // Asked only for gzip (as Prometheus asks), the cache keeps no plain
        // text: a plain answer is rendered anew, then kept.
        let third = Snapshot {
            version: first.version + 2,
            ..crate::fixtures::node()
        };
        let (gzipped, _) = cache.body(&registry, &third, Format::Text, true).await;
        assert_eq!(cache.work_done(), (4, 3));
        {
            let kept = cache.current.lock().await;
            let kept = &kept.as_ref().expect("cached").text;
            assert!(kept.plain.is_none() && kept.gzip.is_some());
        }
        let (plain, _) = cache.body(&registry, &third, Format::Text, false).await;
        cache.body(&registry, &third, Format::Text, false).await;
        cache.body(&registry, &third, Format::Text, true).await;
        assert_eq!(cache.work_done(), (5, 3));
        let mut unzipped = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::GzDecoder::new(&gzipped[..]),
            &mut unzipped,
        )
        .expect("gunzip");
        // Two renders of one snapshot differ only in the collectors' timings.
        let steady = |body: &[u8]| -> Vec<String> {
            std::str::from_utf8(body)
                .expect("utf-8")
                .lines()
                .filter(|l| !l.starts_with("kubedf_scrape_collector_duration_seconds{"))
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(steady(&unzipped), steady(&plain));
    }
}
