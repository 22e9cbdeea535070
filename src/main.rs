use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tracing::info;

use kubedf::app::{App, collected_anything};
use kubedf::cli::{self, Command, LogFormat, Mode};
use kubedf::model::Snapshot;

fn init_tracing(format: LogFormat, quiet_sampler: bool) {
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let asked_for_sampler =
        std::env::var("RUST_LOG").is_ok_and(|v| v.contains("kubedf::sampling::node"));
    if quiet_sampler
        && !asked_for_sampler
        && let Ok(directive) = "kubedf::sampling::node=error".parse()
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
    kubedf::exec::heap::configure();
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
            app.serve(&parsed.cli.common, &parsed.cli.web, shutdown_signal())
                .await?;
            info!("stopped");
            // Exit now rather than return: dropping the runtime would wait for
            // every blocking thread, and one stuck in a hung mount's statfs
            // may never come back.
            std::process::exit(0)
        }
    }
}

/// `kubedf serve --mode=cluster`: every node's kubelet instead of this one.
async fn serve_cluster(parsed: &cli::Parsed) -> anyhow::Result<std::process::ExitCode> {
    if !matches!(parsed.cli.command, Command::Serve) {
        anyhow::bail!(
            "--mode=cluster works with `kubedf serve` only (`metrics` and `df` measure this node)"
        );
    }
    let pod_name = std::env::var("POD_NAME").ok();
    kubedf::app::serve_cluster(
        &parsed.cli.common,
        &parsed.cli.cluster,
        &parsed.cli.web,
        pod_name.as_deref(),
        shutdown_signal(),
    )
    .await?;
    info!("stopped");
    std::process::exit(0)
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
