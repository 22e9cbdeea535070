//! Listening: the accept loop, the TLS handshake (under a timeout) and
//! HTTP/1.1 or, over TLS when ALPN says so, HTTP/2 on each connection, each
//! connection admitted and watched by [`super::conn`]. On shutdown, requests
//! in flight get a bounded time to finish.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tower::ServiceExt as _;
use tracing::{debug, error, warn};

use super::conn::{ConnGuard, DEFAULT_MAX_CONNECTIONS, HEADER_READ_TIMEOUT, IDLE_TIMEOUT, Tracker};
use super::router::{AppState, router};

/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long in-flight requests may take to finish on shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

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

pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves until `shutdown` resolves, then lets in-flight requests finish
/// (bounded). TLS is on or off for the whole run, as the web config in
/// force at start says (a reload cannot change it, see [`super::reload`]);
/// each handshake uses the config in force then.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(state.clone());
    let graceful = GracefulShutdown::new();
    let tls_on = state.web.load().tls.is_some();
    let tracker = Arc::new(Tracker::new(options.max_connections));
    let reaper = {
        let tracker = Arc::clone(&tracker);
        tokio::spawn(async move { tracker.run_reaper().await })
    };
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = accept(&listener) => accepted,
            _ = &mut shutdown => break,
        };
        let Some(guard) = tracker.admit() else {
            debug!(%peer, "connection refused: every connection has a request in flight");
            drop(tcp);
            continue;
        };
        let tls = if tls_on {
            let Some(config) = state.web.load().tls.clone() else {
                // Unreachable by construction; fail closed all the same.
                error!("TLS is on but the web config in force has none; refusing the connection");
                continue;
            };
            Some(config)
        } else {
            None
        };
        tokio::spawn(connection(
            tcp,
            peer,
            tls,
            app.clone(),
            graceful.watcher(),
            guard,
        ));
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

/// The next connection. A failed accept (out of file descriptors and the
/// like) pauses the loop rather than spinning it.
async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(pair) => return pair,
            Err(e) => {
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One connection, from its handshake to its end: served until the client
/// goes, the server shuts down, or the tracker closes it (idle, too slow,
/// or evicted at the cap).
async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: Router,
    watcher: Watcher,
    guard: ConnGuard,
) {
    let conn = guard.handle();
    let io = conn.watch(tcp);
    let service = {
        let conn = conn.clone();
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let in_flight = conn.request();
            let app = app.clone();
            async move {
                let response = app.oneshot(request.map(axum::body::Body::new)).await;
                drop(in_flight);
                response
            }
        })
    };
    let served = async {
        let Some(config) = tls else {
            return watcher
                .watch(http1().serve_connection(TokioIo::new(io), service))
                .await;
        };
        let Some(stream) = handshake(config, io, peer).await else {
            return Ok(());
        };
        if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
            conn.speaks_h2();
            let mut http = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            http.timer(TokioTimer::new());
            watcher
                .watch(http.serve_connection(TokioIo::new(stream), service))
                .await
        } else {
            watcher
                .watch(http1().serve_connection(TokioIo::new(stream), service))
                .await
        }
    };
    let result = tokio::select! {
        r = served => r,
        () = conn.closed() => {
            debug!(%peer, "connection closed: idle, too slow, or evicted at the cap");
            Ok(())
        }
    };
    if let Err(e) = result {
        debug!(%peer, error = %e, "connection ended with an error");
    }
    drop(guard);
}

/// HTTP/1.1. hyper's own header-read timeout is set past the tracker's
/// two, as a backstop only: the tracker enforces them.
fn http1() -> hyper::server::conn::http1::Builder {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT + IDLE_TIMEOUT);
    http
}

/// The TLS handshake under [`HANDSHAKE_TIMEOUT`]; None when it failed or
/// took too long (logged at debug: a port scan is no news).
async fn handshake<IO>(
    config: Arc<rustls::ServerConfig>,
    io: IO,
    peer: SocketAddr,
) -> Option<TlsStream<IO>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            debug!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}
