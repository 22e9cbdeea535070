//! `kubedf serve`, in either mode: the HTTP edge opened before anything
//! starts (a bad web config or a taken address stops kubedf at once), the
//! mode's background work started, HTTP served until shutdown, then the
//! background work stopped. The DaemonSet's work is the app's samplers
//! ([`App::serve`]); cluster mode's is the Node watch and the kubelet poll
//! loop ([`serve_cluster`]). Both are served by the same edge.

use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

use super::App;
use crate::cli::{ClusterArgs, ClusterFlagError, CommonArgs, WebArgs};
use crate::cluster::{ClusterConfig, StartError};
use crate::collector::filter::{FamilyFilter, FilterError};
use crate::http::web_config::WebConfigError;
use crate::http::{self, AppState, ServeOptions, WebConfig};
use crate::model::snapshot::SnapshotHandle;
use crate::registry::Registry;
use crate::sources::kubelet_client::KubeletClientOptions;

/// Why `kubedf serve` stopped with an error.
#[derive(Debug, Error)]
pub enum ServeError {
    #[error("--web.config.file: {0}")]
    WebConfig(#[from] WebConfigError),
    #[error("--web.listen-address: cannot listen on {address}: {source}")]
    Listen {
        address: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("serving HTTP: {0}")]
    Http(#[source] std::io::Error),
    #[error(transparent)]
    ClusterFlags(#[from] ClusterFlagError),
    #[error(transparent)]
    Filter(#[from] FilterError),
    #[error(transparent)]
    Cluster(#[from] StartError),
    #[error(
        "--cluster.via-api-server-proxy: {flag} does not apply, as kubelets are then reached through the API server, verified as for every API call; remove {flag}"
    )]
    KubeletTlsThroughProxy { flag: &'static str },
}

impl App {
    /// `kubedf serve`: starts the samplers ([`App::start`]) and serves HTTP
    /// until `shutdown` resolves; then stops the samplers and returns.
    pub async fn serve(
        self,
        common: &CommonArgs,
        web_args: &WebArgs,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let edge = Edge::open(web_args).await?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let registry = Arc::clone(&self.registry);
        let node_name = self.node_name.clone();
        let (board, samplers) = self
            .start(common.kubelet_config_refresh_interval, stop_rx.clone())
            .await;
        let served = Served {
            registry,
            board,
            node_name,
            max_snapshot_age: common.sample_interval * 3
                + common.sample_timeout * 2
                + Duration::from_secs(5),
        };
        let result = edge.serve(web_args, served, stop_rx, shutdown).await;
        let _ = stop_tx.send(true);
        let _ = samplers.await;
        result
    }
}

/// `kubedf serve --mode=cluster`: the Node watch and the kubelet poll loop
/// instead of the node's samplers, behind the same HTTP edge. No host path,
/// CRI socket or kubelet configuration file is read. `pod_name` is
/// `$POD_NAME` (the StatefulSet's ordinal, when it gives the shard).
pub async fn serve_cluster(
    common: &CommonArgs,
    cluster: &ClusterArgs,
    web_args: &WebArgs,
    pod_name: Option<&str>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let settings = cluster.settings(pod_name)?;
    if settings.via_api_server_proxy {
        // Silently ignored, either would look like it took effect; and
        // skipping verification must never reach the API server's.
        if common.kubelet_ca_file.is_some() {
            return Err(ServeError::KubeletTlsThroughProxy {
                flag: "--kubelet.ca-file",
            });
        }
        if common.kubelet_insecure_skip_tls_verify {
            return Err(ServeError::KubeletTlsThroughProxy {
                flag: "--kubelet.insecure-skip-tls-verify",
            });
        }
    }
    let filter = FamilyFilter::new(
        common.metric_allowlist.as_deref(),
        common.metric_denylist.as_deref(),
    )?;
    let edge = Edge::open(web_args).await?;
    let client_options = KubeletClientOptions {
        ca_file: common.kubelet_ca_file.clone(),
        insecure_skip_tls_verify: common.kubelet_insecure_skip_tls_verify,
        timeout: settings.kubelet_timeout,
        // Longer than the interval, or every poll pays a TLS handshake.
        idle_timeout: (settings.poll_interval + Duration::from_secs(30))
            .max(KubeletClientOptions::default().idle_timeout),
        via_api_server: settings.via_api_server_proxy,
        ..KubeletClientOptions::default()
    };
    let config = ClusterConfig {
        poll_interval: settings.poll_interval,
        kubelet_timeout: settings.kubelet_timeout,
        concurrency: settings.concurrency,
        down_after: settings.down_after,
        shard: settings.shard,
    };
    info!(
        interval = ?config.poll_interval,
        timeout = ?config.kubelet_timeout,
        concurrency = config.concurrency,
        down_after = config.down_after,
        shard = config.shard.index(),
        total_shards = config.shard.total(),
        via_api_server_proxy = settings.via_api_server_proxy,
        "cluster mode: reading every node's kubelet /stats/summary"
    );
    if settings.via_api_server_proxy {
        warn!(
            "--cluster.via-api-server-proxy: kubelets are read through the API server's nodes/proxy; the RBAC that allows it also allows exec into every pod of the cluster"
        );
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let started = crate::cluster::start(
        common.kubeconfig.as_deref(),
        client_options,
        settings.address_types.clone(),
        config,
        stop_rx.clone(),
    )
    .await?;
    let registry = Registry::of(vec![Box::new(crate::collector::cluster::ClusterCollector)])
        .with_filter(filter);
    let served = Served {
        registry: Arc::new(registry),
        board: started.board,
        node_name: String::new(),
        max_snapshot_age: settings.poll_interval * 3
            + settings.kubelet_timeout * 2
            + Duration::from_secs(5),
    };
    let result = edge.serve(web_args, served, stop_rx, shutdown).await;
    let _ = stop_tx.send(true);
    for task in started.tasks {
        let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
    }
    result
}

/// What the HTTP edge serves, whichever the mode.
struct Served {
    registry: Arc<Registry>,
    board: SnapshotHandle,
    /// This node's name (the DaemonSet), or empty (cluster mode).
    node_name: String,
    /// How old the newest snapshot may be before `/healthz` says so.
    max_snapshot_age: Duration,
}

/// The HTTP edge, opened: the web config read and the address bound.
struct Edge {
    web: WebConfig,
    listener: TcpListener,
}

impl Edge {
    async fn open(web_args: &WebArgs) -> Result<Edge, ServeError> {
        let web = match &web_args.web_config_file {
            None => WebConfig::plain(),
            Some(path) => WebConfig::load(path)?,
        };
        let listener = http::bind(web_args.listen_address)
            .await
            .map_err(|source| ServeError::Listen {
                address: web_args.listen_address,
                source,
            })?;
        Ok(Edge { web, listener })
    }

    /// Serves `served` until `shutdown` resolves, with the web config's
    /// reload and the heap trimmer running until `stop` turns true.
    async fn serve(
        self,
        web_args: &WebArgs,
        served: Served,
        stop: watch::Receiver<bool>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let Edge { web, listener } = self;
        tokio::spawn(crate::exec::heap::run(
            crate::exec::heap::QUIET,
            stop.clone(),
        ));
        let rate_limit = web.rate_limit.clone();
        let (tls, http2) = (web.tls.is_some(), web.tls.is_some() && web.http2);
        let web = Arc::new(arc_swap::ArcSwap::from_pointee(web));
        if let Some(path) = &web_args.web_config_file {
            tokio::spawn(http::reload_web_config(
                path.clone(),
                Arc::clone(&web),
                Arc::clone(&served.board),
                stop,
            ));
        }
        let address = listener.local_addr().map_err(ServeError::Http)?;
        info!(%address, path = %web_args.telemetry_path, tls, http2, max_connections = web_args.max_connections, "serving metrics");
        let state = AppState {
            registry: served.registry,
            snapshot: served.board,
            telemetry_path: web_args.telemetry_path.clone(),
            max_snapshot_age: served.max_snapshot_age,
            web,
            cache: Arc::default(),
            rate_limit,
            node_name: served.node_name,
            node_cache: Arc::default(),
        };
        let options = ServeOptions {
            max_connections: usize::from(web_args.max_connections),
        };
        http::serve(listener, state, options, shutdown)
            .await
            .map_err(ServeError::Http)
    }
}
