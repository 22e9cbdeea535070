//! HTTP: `/metrics` renders the current snapshot (never samples), `/` is a
//! landing page, `/healthz` says whether the sampler is keeping up. GET and
//! HEAD only; gzip when the scraper asks for it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tower_http::CompressionLevel;
use tower_http::compression::CompressionLayer;

use crate::registry::Registry;
use crate::snapshot::SnapshotHandle;

pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone)]
pub struct AppState {
    pub registry: Arc<Registry>,
    pub snapshot: SnapshotHandle,
    pub telemetry_path: String,
    /// A snapshot older than this makes /healthz fail.
    pub max_snapshot_age: Duration,
}

pub fn router(state: AppState) -> Router {
    let telemetry_path = state.telemetry_path.clone();
    Router::new()
        .route(&telemetry_path, get(metrics))
        .route("/", get(landing))
        .route("/healthz", get(healthz))
        .layer(
            CompressionLayer::new()
                .gzip(true)
                .quality(CompressionLevel::Fastest),
        )
        .with_state(state)
}

async fn metrics(State(state): State<AppState>) -> Response {
    let snapshot = state.snapshot.load();
    let body = state.registry.render(&snapshot);
    ([(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], body).into_response()
}

async fn landing(State(state): State<AppState>) -> Html<String> {
    let path = &state.telemetry_path;
    Html(format!(
        "<!DOCTYPE html>\n<html><head><title>kubedf</title></head><body>\n\
         <h1>kubedf</h1>\n<p>Disk, inode and PID headroom of this Kubernetes node.</p>\n\
         <ul><li><a href=\"{path}\">{path}</a></li><li><a href=\"/healthz\">/healthz</a></li></ul>\n\
         </body></html>\n"
    ))
}

async fn healthz(State(state): State<AppState>) -> (StatusCode, String) {
    let taken_at = state.snapshot.load().taken_at;
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

/// Serves until `shutdown` resolves, then finishes in-flight requests.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
