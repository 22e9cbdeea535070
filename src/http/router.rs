//! The routes and what each answers, all from the board's latest snapshot
//! (a request never does I/O): the exposition at `--web.telemetry-path`,
//! `/stats/summary` in kubelet's Summary API shape, `/` a landing page,
//! `/healthz` whether the sampler is keeping up. GET and HEAD only. Basic
//! auth guards all but `/healthz`; the web config's rate limit and headers
//! apply to all ([`super::guard`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use tracing::error;

use super::cache::{ExpositionCache, NodeCache};
use super::guard::{RateLimit, basic_auth, web_policy};
use super::negotiate::{accepts_gzip, format};
use super::web_config::WebConfigHandle;
use crate::model::snapshot::SnapshotHandle;
use crate::registry::Registry;

/// Paths kubedf serves besides the exposition, which `--web.telemetry-path`
/// must not take.
pub const RESERVED_PATHS: [&str; 3] = ["/", "/healthz", "/stats/summary"];

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
    /// Cluster mode's per-node expositions (`/nodes/<node>/metrics`).
    pub node_cache: Arc<NodeCache>,
}

/// Where cluster mode serves one node's exposition: `/nodes/<node>/metrics`.
pub const NODES_PREFIX: &str = "/nodes/";

pub fn router(state: AppState) -> Router {
    let telemetry_path = state.telemetry_path.clone();
    Router::new()
        .route(&telemetry_path, get(metrics))
        .route("/", get(landing))
        .route("/stats/summary", get(stats_summary))
        .route("/nodes/{node}/metrics", get(node_metrics))
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
    if path.starts_with(NODES_PREFIX) {
        return Err(format!(
            "{path:?} is under {NODES_PREFIX}, where cluster mode serves each node's metrics; choose another path such as /metrics"
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

/// The exposition in the format the scraper asks for (`Accept`, as
/// promhttp negotiates it: OpenMetrics for Prometheus, the text format
/// 0.0.4 for anything that does not ask for OpenMetrics).
async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let snapshot = state.snapshot.snapshot();
    let format = format(&headers);
    let (body, gzipped) = state
        .cache
        .body(&state.registry, &snapshot, format, accepts_gzip(&headers))
        .await;
    exposition(format, body, gzipped)
}

/// An exposition's response: its format's content type, gzipped or not,
/// varying on the two headers that chose them.
fn exposition(format: crate::exposition::Format, body: bytes::Bytes, gzipped: bool) -> Response {
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

/// One node's exposition in cluster mode (`/nodes/<node>/metrics`), so a
/// Prometheus can scrape each node as its own target (its own `up`),
/// negotiated, gzipped and cached as `/metrics` is.
async fn node_metrics(
    State(state): State<AppState>,
    Path(node): Path<String>,
    headers: HeaderMap,
) -> Response {
    let snapshot = state.snapshot.snapshot();
    let not_found = |text: String| {
        (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            text,
        )
            .into_response()
    };
    let Some(table) = &snapshot.cluster else {
        return not_found(
            "per-node metrics are served in cluster mode only (kubedf serve --mode=cluster)\n"
                .into(),
        );
    };
    let format = format(&headers);
    let Some((body, gzipped)) = state
        .node_cache
        .body(table, &node, format, accepts_gzip(&headers))
    else {
        return not_found(format!(
            "node {:?} is not one of this kubedf's nodes: unknown to the API server, or another shard's (--shard/--total-shards)\n",
            node.escape_debug().to_string()
        ));
    };
    exposition(format, body, gzipped)
}

/// What `kubedf df` shows, as a page: the latest snapshot's filesystems,
/// PIDs, GC and eviction headroom and PVCs, with links to the endpoints.
async fn landing(State(state): State<AppState>) -> Html<String> {
    let snapshot = state.snapshot.snapshot();
    let path = state.telemetry_path.as_str();
    if let Some(table) = &snapshot.cluster {
        return Html(cluster_landing(table, path));
    }
    Html(crate::df::report(&snapshot).html(
        "kubedf",
        &[
            (path, path),
            ("/stats/summary", "/stats/summary"),
            ("/healthz", "/healthz"),
        ],
    ))
}

/// Cluster mode's landing page: the endpoints and each node's page, with
/// whether its last poll succeeded.
fn cluster_landing(table: &crate::model::cluster::ClusterTable, path: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>kubedf (cluster mode)</title></head>\n<body>\n<h1>kubedf (cluster mode)</h1>\n<nav>",
    );
    let _ = write!(
        out,
        "<a href=\"{p}\">{p}</a> <a href=\"/healthz\">/healthz</a></nav>\n<h2>{} nodes</h2>\n<ul>\n",
        table.nodes.len(),
        p = crate::df::html_escape(path)
    );
    for (name, entry) in &table.nodes {
        let state = match (&entry.health.failure, entry.health.polled) {
            (Some(f), _) => f.reason.name(),
            (None, true) => "ok",
            (None, false) => "not polled yet",
        };
        // A node name is data: escaped, and percent-encoded in the link.
        let href = percent_encoding::utf8_percent_encode(
            name,
            crate::sources::kubelet_client::PATH_SEGMENT,
        );
        let _ = writeln!(
            out,
            "<li><a href=\"/nodes/{}/metrics\">{}</a> {state}</li>",
            crate::df::html_escape(&href.to_string()),
            crate::df::html_escape(name)
        );
    }
    out.push_str("</ul>\n</body></html>\n");
    out
}

/// kubelet's Summary API shape for what kubedf measures, from the snapshot.
/// Cluster mode measures no node of its own: each kubelet has its own.
async fn stats_summary(State(state): State<AppState>) -> Response {
    let snapshot = state.snapshot.snapshot();
    if snapshot.cluster.is_some() {
        return (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "cluster mode has no /stats/summary of its own: each node's kubelet serves its own; kubedf serves /nodes/<node>/metrics\n",
        )
            .into_response();
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_landing_page_escapes_node_names() {
        let mut table = crate::model::cluster::ClusterTable::default();
        table.nodes.insert(
            "<b>\"x\"&".into(),
            Arc::new(crate::model::cluster::NodeEntry::default()),
        );
        let page = cluster_landing(&table, "/metrics");
        assert!(
            page.contains("&lt;b&gt;&quot;x&quot;&amp;</a> not polled yet"),
            "{page}"
        );
        assert!(!page.contains("<b>"), "{page}");
        assert!(page.contains("/nodes/%3Cb%3E%22x%22%26/metrics"), "{page}");
    }

    proptest::proptest! {
        #[test]
        fn telemetry_path_check_never_panics(p in "\\PC{0,24}") {
            if check_telemetry_path(&p).is_ok() {
                // Whatever passes, the router takes without panicking.
                let _ = axum::Router::<()>::new().route(&p, get(|| async { "" }));
            }
        }
    }
}
