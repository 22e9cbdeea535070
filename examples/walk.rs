//! kubedf's usage walk (the du method it uses for hostPath-backed PVs) on one
//! directory, for the benchmark harness: `walk DIR [--budget SECONDS] [--threads N]`.
//!
//! Prints one JSON line: `{"bytes": .., "inodes": .., "elapsed_seconds": ..}`.
//! It calls `kubedf::sources::walk::walk` directly, so process start-up and
//! the Kubernetes side are not part of the figure. kubedf runs walks at
//! nice 19; run this under `nice -n 19` to match.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Run kubedf's du-method walk on a directory")]
struct Args {
    dir: PathBuf,
    /// The walk's time budget, as --volume-stats-walk-timeout.
    #[arg(long, default_value_t = 600.0)]
    budget: f64,
    /// Threads of the walk, as --volume-stats-walk-threads (default 2).
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let started = Instant::now();
    let usage = kubedf::sources::walk::walk(
        &args.dir,
        Duration::from_secs_f64(args.budget),
        args.threads,
    )
    .with_context(|| format!("walk {}", args.dir.display()))?;
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "bytes": usage.bytes,
            "inodes": usage.inodes,
            "elapsed_seconds": elapsed,
        })
    );
    Ok(())
}
