use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use tracing::info;

use kubedf::app::{App, collected_anything};
use kubedf::cli::{self, Command, LogFormat, Mode};
use kubedf::cluster::ClusterConfig;
use kubedf::http::{self, AppState, ServeOptions, WebConfig};
use kubedf::model::Snapshot;
use kubedf::sources::kubelet_client::KubeletClientOptions;

fn init_tracing(format: LogFormat, quiet_sampler: bool) {
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let asked_for_sampler = std::env::var("RUST_LOG").is_ok_and(|v| v.contains("kubedf::sampler"));
    if quiet_sampler
        && !asked_for_sampler
        && let Ok(directive) = "kubedf::sampler=error".parse()
    {
        filter = filter.add_directive(directive);
    }
    // Colour only for a person at a terminal: a log collector reading a pipe
    // or a file would otherwise store escape codes.
    use std::io::IsTerminal as _;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        // Field values are tenants' names (a namespace, a PVC, a path): a
        // newline or an escape sequence in one is written visibly, so it
        // cannot forge a log line or drive the reader's terminal. JSON
        // escapes them already.
        LogFormat::Text => {
            use tracing_subscriber::field::MakeExt as _;
            let fields = tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
                let text = format!("{value:?}");
                let text = kubedf::df::printable(&text);
                if field.name() == "message" {
                    write!(w, "{text}")
                } else {
                    write!(w, "{field}={text}")
                }
            })
            .delimited(" ");
            builder.fmt_fields(fields).init()
        }
        LogFormat::Json => builder.json().init(),
    }
}

/// Async worker threads: kubedf's async work is light (a scrape renders a
/// cached exposition), and tokio's default of one per core would cost a
/// 64-core node 64 stacks and allocator arenas.
const WORKER_THREADS: usize = 2;
/// Threads for blocking calls (statfs, /proc, directory listings): each call
/// runs under a timeout with one in flight per path, so only hung mounts
/// keep threads; tokio's default cap of 512 would let a burst of due
/// volumes grow the process by hundreds of threads.
const MAX_BLOCKING_THREADS: usize = 32;
/// How long an idle blocking thread is kept. tokio's default (10 s) is
/// shorter than the default sample interval (15 s), so every sample would
/// create its threads anew (clone, stack, guard page, signal stack) only for
/// them to exit 10 s later; kept past the longest volume period's jitter
/// (2x the 1 m default), the few threads a quiet node needs are reused.
const BLOCKING_KEEP_ALIVE: Duration = Duration::from_secs(180);

fn main() -> anyhow::Result<std::process::ExitCode> {
    // Before any thread starts: see heap::configure.
    kubedf::heap::configure();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .thread_keep_alive(BLOCKING_KEEP_ALIVE)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(run())
}

async fn run() -> anyhow::Result<std::process::ExitCode> {
    let parsed = cli::parse();
    // `df` reports every source failure itself, once, among its errors: the
    // sampler's warnings would say each one a second time (unless RUST_LOG
    // asks for them by name).
    let quiet_sampler = matches!(parsed.cli.command, Command::Df(_));
    init_tracing(parsed.cli.common.log_format, quiet_sampler);
    if parsed.cli.cluster.mode == Mode::Cluster {
        return serve_cluster(&parsed).await;
    }
    let app = App::build(&parsed.cli.common, &parsed.collectors).await?;
    let once = |snapshot: &Snapshot| exit_code(collected_anything(snapshot));
    match parsed.cli.command {
        Command::Metrics => {
            let registry = Arc::clone(&app.registry);
            let snapshot = app.snapshot_once(true).await;
            print!("{}", registry.render(&snapshot));
            Ok(once(&snapshot))
        }
        Command::Df(args) => {
            let snapshot = app.snapshot_once(args.pods).await;
            if args.pods {
                print!("{}", kubedf::df::render_pods(&snapshot));
            } else {
                print!("{}", kubedf::df::render(&snapshot));
            }
            Ok(once(&snapshot))
        }
        Command::Serve => {
            let common = &parsed.cli.common;
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            let registry = Arc::clone(&app.registry);
            let node_name = app.node_name.clone();
            let (board, samplers) = app
                .start(common.kubelet_config_refresh_interval, stop_rx.clone())
                .await;
            let max_snapshot_age =
                common.sample_interval * 3 + common.sample_timeout * 2 + Duration::from_secs(5);
            let served = Served {
                registry,
                board,
                node_name,
                max_snapshot_age,
            };
            serve(&parsed.cli.web, served, stop_rx).await?;
            let _ = stop_tx.send(true);
            let _ = samplers.await;
            info!("stopped");
            // Exit now rather than return: dropping the runtime would wait for
            // every blocking thread, and one stuck in a hung mount's statfs
            // may never come back.
            std::process::exit(0)
        }
    }
}

/// `kubedf serve --mode=cluster`: the Node watch and the kubelet poll loop
/// instead of the node's samplers; the same HTTP edge.
async fn serve_cluster(parsed: &cli::Parsed) -> anyhow::Result<std::process::ExitCode> {
    if !matches!(parsed.cli.command, Command::Serve) {
        anyhow::bail!(
            "--mode=cluster works with `kubedf serve` only (`metrics` and `df` measure this node)"
        );
    }
    let common = &parsed.cli.common;
    let pod_name = std::env::var("POD_NAME").ok();
    let settings = parsed.cli.cluster.settings(pod_name.as_deref())?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let client_options = KubeletClientOptions {
        ca_file: common.kubelet_ca_file.clone(),
        insecure_skip_tls_verify: common.kubelet_insecure_skip_tls_verify,
        timeout: settings.kubelet_timeout,
        // Longer than the interval, or every poll pays a TLS handshake.
        idle_timeout: (settings.poll_interval + Duration::from_secs(30))
            .max(KubeletClientOptions::default().idle_timeout),
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
        "cluster mode: reading every node's kubelet /stats/summary"
    );
    let started = kubedf::cluster::start(
        common.kubeconfig.as_deref(),
        client_options,
        settings.address_types.clone(),
        config,
        stop_rx.clone(),
    )
    .await?;
    let served = Served {
        registry: started.registry,
        board: started.board,
        node_name: String::new(),
        max_snapshot_age: settings.poll_interval * 3
            + settings.kubelet_timeout * 2
            + Duration::from_secs(5),
    };
    serve(&parsed.cli.web, served, stop_rx).await?;
    let _ = stop_tx.send(true);
    for task in started.tasks {
        let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
    }
    info!("stopped");
    std::process::exit(0)
}

/// What the HTTP edge serves, whichever the mode.
struct Served {
    registry: Arc<kubedf::registry::Registry>,
    board: kubedf::model::snapshot::SnapshotHandle,
    node_name: String,
    max_snapshot_age: Duration,
}

/// Serves until SIGTERM or SIGINT.
async fn serve(
    args: &cli::WebArgs,
    served: Served,
    stop_rx: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    tokio::spawn(kubedf::heap::run(kubedf::heap::QUIET, stop_rx.clone()));
    let web = match &args.web_config_file {
        None => WebConfig::plain(),
        Some(path) => WebConfig::load(path).context("--web.config.file")?,
    };
    let rate_limit = web.rate_limit.clone();
    let web = Arc::new(ArcSwap::from_pointee(web));
    let cache: Arc<http::ExpositionCache> = Arc::default();
    if let Some(path) = &args.web_config_file {
        tokio::spawn(http::reload_web_config(
            path.clone(),
            Arc::clone(&web),
            Arc::clone(&served.board),
            stop_rx.clone(),
        ));
    }
    let listener = http::bind(args.listen_address).await.with_context(|| {
        format!(
            "--web.listen-address: cannot listen on {}",
            args.listen_address
        )
    })?;
    let (tls, http2) = {
        let w = web.load();
        (w.tls.is_some(), w.tls.is_some() && w.http2)
    };
    info!(address = %listener.local_addr()?, path = %args.telemetry_path, tls, http2, max_connections = args.max_connections, "serving metrics");
    let state = AppState {
        registry: served.registry,
        snapshot: served.board,
        telemetry_path: args.telemetry_path.clone(),
        max_snapshot_age: served.max_snapshot_age,
        web,
        cache,
        rate_limit,
        node_name: served.node_name,
        node_cache: Arc::default(),
    };
    let options = ServeOptions {
        max_connections: usize::from(args.max_connections),
    };
    http::serve(listener, state, options, shutdown_signal()).await?;
    Ok(())
}

fn exit_code(ok: bool) -> std::process::ExitCode {
    if ok {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

/// Resolves on SIGTERM (kubelet stopping the pod) or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM; stop with SIGINT");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received, shutting down"),
        _ = tokio::signal::ctrl_c() => info!("SIGINT received, shutting down"),
    }
}
