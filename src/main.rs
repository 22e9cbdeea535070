use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use tracing::info;

use kubedf::app::{App, collected_anything};
use kubedf::cli::{self, Command, LogFormat};
use kubedf::model::{Board, Snapshot};
use kubedf::server::{self, AppState};
use kubedf::web_config::WebConfig;

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    let parsed = cli::parse();
    init_tracing(parsed.cli.common.log_format);
    let app = App::build(&parsed.cli.common, &parsed.collectors).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if let Some(kube) = &app.kube {
        tokio::spawn(kube.clone().watch_pods(stop_rx.clone()));
    }
    let mut volumes = app.volumes;
    let mut pods = app.pods;
    let node = app.sampler.sample().await;
    let once = |snapshot: &Snapshot| exit_code(collected_anything(snapshot));
    match parsed.cli.command {
        Command::Metrics => {
            let table = match volumes.as_mut() {
                Some(v) => Some(v.sample_once().await),
                None => None,
            };
            let mut snapshot = Snapshot::new(Arc::clone(&app.kubelet), node, table);
            if let Some(p) = pods.as_mut() {
                snapshot.pods = Some(Arc::new(p.sample_once().await));
            }
            print!("{}", app.registry.render(&snapshot));
            Ok(once(&snapshot))
        }
        Command::Df(args) => {
            let table = match volumes.as_mut() {
                Some(v) => Some(v.sample_once().await),
                None => None,
            };
            let mut snapshot = Snapshot::new(Arc::clone(&app.kubelet), node, table);
            if args.pods {
                if let Some(p) = pods.as_mut() {
                    snapshot.pods = Some(Arc::new(p.sample_once().await));
                }
                print!("{}", kubedf::df::render_pods(&snapshot));
            } else {
                print!("{}", kubedf::df::render(&snapshot));
            }
            Ok(once(&snapshot))
        }
        Command::Serve(args) => {
            let common = &parsed.cli.common;
            let board = Arc::new(Board::new(Arc::clone(&app.kubelet), node));
            if let Some(v) = &volumes {
                // Until the first list of pods arrives, volume_stats says so.
                board.publish_volumes(Some(Arc::new(v.table())));
            }
            if let Some(p) = &pods {
                board.publish_pods(Some(Arc::new(p.table())));
            }
            let sampler = tokio::spawn(Arc::clone(&app.sampler).run(
                Arc::clone(&board),
                common.sample_interval,
                stop_rx.clone(),
            ));
            if let Some(v) = volumes {
                tokio::spawn(v.run(Arc::clone(&board), stop_rx.clone()));
            }
            if let Some(p) = pods {
                tokio::spawn(p.run(Arc::clone(&board), stop_rx.clone()));
            }
            let web = match &args.web_config_file {
                None => WebConfig::plain(),
                Some(path) => WebConfig::load(path).context("--web.config.file")?,
            };
            let web = Arc::new(ArcSwap::from_pointee(web));
            if let Some(path) = &args.web_config_file {
                tokio::spawn(server::reload_web_config(
                    path.clone(),
                    Arc::clone(&web),
                    stop_rx.clone(),
                ));
            }
            let listener = server::bind(args.listen_address).await.with_context(|| {
                format!(
                    "--web.listen-address: cannot listen on {}",
                    args.listen_address
                )
            })?;
            let tls = web.load().tls.is_some();
            info!(address = %listener.local_addr()?, path = %args.telemetry_path, tls, "serving metrics");
            let state = AppState {
                registry: Arc::clone(&app.registry),
                snapshot: board,
                telemetry_path: args.telemetry_path.clone(),
                max_snapshot_age: common.sample_interval * 3
                    + common.sample_timeout * 2
                    + Duration::from_secs(5),
                web,
                cache: Arc::default(),
                node_name: app.node_name.clone(),
            };
            server::serve(listener, state, shutdown_signal()).await?;
            let _ = stop_tx.send(true);
            let _ = sampler.await;
            info!("stopped");
            // Exit now rather than return: dropping the runtime would wait for
            // every blocking thread, and one stuck in a hung mount's statfs
            // may never come back.
            std::process::exit(0)
        }
    }
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
