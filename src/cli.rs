//! Command line: clap derive for the fixed flags, plus one
//! `--collector.NAME` / `--no-collector.NAME` pair per collector, generated
//! from the registry so a new collector gets its flags for free.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{
    Arg, ArgAction, ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum,
};

use crate::registry::Registry;

/// kubedf's default port.
pub const DEFAULT_PORT: u16 = 9842;

#[derive(Debug, Parser)]
#[command(
    name = "kubedf",
    version,
    about = "Prometheus exporter for how close a Kubernetes node and its volumes are to running out of disk, inodes and PIDs"
)]
pub struct Cli {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve /metrics over HTTP, sampling in the background.
    Serve(ServeArgs),
    /// Sample once, print the exposition to stdout and exit.
    Metrics,
    /// Sample once and print a df-like table of the node's filesystems and PIDs,
    /// with their distance to image GC and eviction.
    Df(DfArgs),
}

#[derive(Debug, Args)]
pub struct DfArgs {
    /// Rank the node's pods by local ephemeral storage instead, with each
    /// pod's limit and headroom before kubelet evicts it.
    #[arg(long)]
    pub pods: bool,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on: host:port, or :port for every interface.
    #[arg(long = "web.listen-address", env = "KUBEDF_WEB_LISTEN_ADDRESS", default_value = ":9842", value_parser = parse_listen_address)]
    pub listen_address: SocketAddr,
    /// Path under which to expose metrics.
    #[arg(long = "web.telemetry-path", env = "KUBEDF_WEB_TELEMETRY_PATH", default_value = "/metrics", value_parser = parse_telemetry_path)]
    pub telemetry_path: String,
    /// Exporter-toolkit web config file (TLS, client certificates, basic
    /// auth); re-read when it changes and on SIGHUP.
    #[arg(long = "web.config.file", env = "KUBEDF_WEB_CONFIG_FILE")]
    pub web_config_file: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct CommonArgs {
    /// Where the host's root filesystem is mounted; host paths (kubelet root
    /// dir, kubelet config, runtime mountpoints) are read under it.
    #[arg(
        long = "path.rootfs",
        env = "KUBEDF_PATH_ROOTFS",
        default_value = "/",
        global = true
    )]
    pub rootfs: PathBuf,
    /// Where the host's /proc is mounted.
    #[arg(
        long = "path.procfs",
        env = "KUBEDF_PATH_PROCFS",
        default_value = "/proc",
        global = true
    )]
    pub procfs: PathBuf,
    /// Where the host's /sys is mounted (block volume sizes).
    #[arg(
        long = "path.sysfs",
        env = "KUBEDF_PATH_SYSFS",
        default_value = "/sys",
        global = true
    )]
    pub sysfs: PathBuf,
    /// kubelet's root directory (host path); its filesystem is nodefs.
    #[arg(
        long = "kubelet.root-dir",
        env = "KUBEDF_KUBELET_ROOT_DIR",
        default_value = "/var/lib/kubelet",
        global = true
    )]
    pub kubelet_root_dir: String,
    /// kubelet's configuration file (host path); a missing file means kubelet's defaults.
    #[arg(
        long = "kubelet.config",
        env = "KUBEDF_KUBELET_CONFIG",
        default_value = "/var/lib/kubelet/config.yaml",
        global = true
    )]
    pub kubelet_config: String,
    /// CRI endpoint of the container runtime [default: the first of
    /// unix:///run/containerd/containerd.sock and unix:///var/run/crio/crio.sock
    /// that exists].
    #[arg(long = "cri.endpoint", env = "KUBEDF_CRI_ENDPOINT", global = true)]
    pub cri_endpoint: Option<String>,
    /// How often sources are read in `serve`.
    #[arg(long = "sample-interval", env = "KUBEDF_SAMPLE_INTERVAL", default_value = "15s", value_parser = parse_positive_duration, global = true)]
    pub sample_interval: Duration,
    /// How long one source read (a CRI call, a statfs) may take before it is
    /// given up on.
    #[arg(long = "sample-timeout", env = "KUBEDF_SAMPLE_TIMEOUT", default_value = "5s", value_parser = parse_positive_duration, global = true)]
    pub sample_timeout: Duration,
    /// Name of this node, to watch only its pods (a DaemonSet sets it from
    /// the downward API). Without it the volume_stats collector is off.
    #[arg(long = "node-name", env = "NODE_NAME", global = true)]
    pub node_name: Option<String>,
    /// kubeconfig file for the Kubernetes API [default: $KUBECONFIG,
    /// ~/.kube/config, then the in-cluster service account].
    #[arg(long = "kubeconfig", global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// How often each PVC volume is measured, jittered to 1x-2x as kubelet's
    /// volumeStatsAggPeriod; 0 turns volume stats off.
    #[arg(long = "volume-stats-agg-period", env = "KUBEDF_VOLUME_STATS_AGG_PERIOD", default_value = "1m", value_parser = parse_duration, global = true)]
    pub volume_stats_agg_period: Duration,
    /// How long one volume statfs, device read or Kubernetes API call may take.
    #[arg(long = "volume-stats-timeout", env = "KUBEDF_VOLUME_STATS_TIMEOUT", default_value = "5s", value_parser = parse_positive_duration, global = true)]
    pub volume_stats_timeout: Duration,
    /// Time budget of one usage walk (hostPath-backed and plain-directory local PVs).
    #[arg(long = "volume-stats-walk-timeout", env = "KUBEDF_VOLUME_STATS_WALK_TIMEOUT", default_value = "1m", value_parser = parse_positive_duration, global = true)]
    pub volume_stats_walk_timeout: Duration,
    /// Number of low-priority threads that run usage walks.
    #[arg(long = "volume-stats-walk-workers", env = "KUBEDF_VOLUME_STATS_WALK_WORKERS", default_value = "2", value_parser = clap::value_parser!(u16).range(1..=64), global = true)]
    pub volume_stats_walk_workers: u16,
    /// Threads one usage walk may use (at most workers x threads walk at
    /// once, all at nice 19).
    #[arg(long = "volume-stats-walk-threads", env = "KUBEDF_VOLUME_STATS_WALK_THREADS", default_value = "2", value_parser = clap::value_parser!(u16).range(1..=64), global = true)]
    pub volume_stats_walk_threads: u16,
    /// Which PVCs get kubelet's kubelet_volume_stats_* names: all, uncovered
    /// (only hostPath-backed PVs, which kubelet does not report, so that a
    /// Prometheus relabelling them to job="kubelet" sees no PVC twice) or
    /// none. The others are reported as kubedf_volume_stats_*, same labels.
    #[arg(
        long = "volume-stats.kubelet-names",
        env = "KUBEDF_VOLUME_STATS_KUBELET_NAMES",
        default_value = "all",
        value_enum,
        global = true
    )]
    pub volume_kubelet_names: crate::collector::volume_stats::KubeletNames,
    /// Log format; the level comes from RUST_LOG (default info).
    #[arg(
        long = "log.format",
        env = "KUBEDF_LOG_FORMAT",
        default_value = "text",
        value_enum,
        global = true
    )]
    pub log_format: LogFormat,
}

/// The parsed command line.
#[derive(Debug)]
pub struct Parsed {
    pub cli: Cli,
    /// The collectors left enabled by `--collector.*` / `--no-collector.*`.
    pub collectors: BTreeSet<String>,
}

fn command() -> clap::Command {
    let mut cmd = Cli::command();
    for c in Registry::available() {
        let name = c.name();
        let on = format!("collector.{name}");
        let off = format!("no-collector.{name}");
        cmd = cmd
            .arg(
                Arg::new(on.clone())
                    .long(on.clone())
                    .action(ArgAction::SetTrue)
                    .global(true)
                    .overrides_with(off.clone())
                    .help(format!(
                        "Enable the {name} collector (default: enabled): {}",
                        c.description()
                    )),
            )
            .arg(
                Arg::new(off.clone())
                    .long(off.clone())
                    .action(ArgAction::SetTrue)
                    .global(true)
                    .overrides_with(on)
                    .help(format!("Disable the {name} collector")),
            );
    }
    cmd
}

fn enabled_collectors(matches: &ArgMatches) -> BTreeSet<String> {
    // Global args are visible from the subcommand's matches too; either may hold them.
    let sub = matches.subcommand().map(|(_, m)| m);
    Registry::available()
        .iter()
        .map(|c| c.name())
        .filter(|name| {
            let off = format!("no-collector.{name}");
            let disabled = matches.get_flag(&off) || sub.is_some_and(|m| m.get_flag(&off));
            !disabled
        })
        .map(str::to_owned)
        .collect()
}

pub fn parse_from<I, T>(args: I) -> Result<Parsed, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let matches = command().try_get_matches_from(args)?;
    let cli = Cli::from_arg_matches(&matches)?;
    Ok(Parsed {
        collectors: enabled_collectors(&matches),
        cli,
    })
}

pub fn parse() -> Parsed {
    parse_from(std::env::args_os()).unwrap_or_else(|e| e.exit())
}

fn parse_listen_address(s: &str) -> Result<SocketAddr, String> {
    let full = if s.starts_with(':') {
        format!("0.0.0.0{s}")
    } else {
        s.to_owned()
    };
    full.parse().map_err(|_| {
        format!(
            "{s:?} is not host:port or :port (e.g. :{DEFAULT_PORT} or 127.0.0.1:{DEFAULT_PORT})"
        )
    })
}

fn parse_telemetry_path(s: &str) -> Result<String, String> {
    if s.starts_with('/') && s.len() > 1 && !s.contains(char::is_whitespace) {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} must be an absolute URL path other than /, such as /metrics"
        ))
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e} (e.g. 15s, 1m, 500ms)"))
}

fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err(format!("{s:?} must be longer than 0"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let p = parse_from(["kubedf", "serve"]).unwrap();
        let Command::Serve(serve) = &p.cli.command else {
            panic!("not serve")
        };
        assert_eq!(serve.listen_address, "0.0.0.0:9842".parse().unwrap());
        assert_eq!(serve.telemetry_path, "/metrics");
        assert_eq!(p.cli.common.rootfs, PathBuf::from("/"));
        assert_eq!(p.cli.common.procfs, PathBuf::from("/proc"));
        assert_eq!(p.cli.common.kubelet_root_dir, "/var/lib/kubelet");
        assert_eq!(p.cli.common.kubelet_config, "/var/lib/kubelet/config.yaml");
        assert_eq!(p.cli.common.sample_interval, Duration::from_secs(15));
        assert_eq!(p.cli.common.sample_timeout, Duration::from_secs(5));
        assert_eq!(
            p.cli.common.volume_stats_agg_period,
            Duration::from_secs(60)
        );
        assert_eq!(p.cli.common.volume_stats_timeout, Duration::from_secs(5));
        assert_eq!(
            p.cli.common.volume_stats_walk_timeout,
            Duration::from_secs(60)
        );
        assert_eq!(p.cli.common.volume_stats_walk_workers, 2);
        assert_eq!(p.cli.common.volume_stats_walk_threads, 2);
        assert_eq!(p.cli.common.kubeconfig, None);
        use crate::collector::volume_stats::KubeletNames;
        assert_eq!(p.cli.common.volume_kubelet_names, KubeletNames::All);
        let p = parse_from(["kubedf", "df", "--volume-stats.kubelet-names", "uncovered"]).unwrap();
        assert_eq!(p.cli.common.volume_kubelet_names, KubeletNames::Uncovered);
        let p = parse_from(["kubedf", "df", "--volume-stats-agg-period", "0"]).unwrap();
        assert!(p.cli.common.volume_stats_agg_period.is_zero());
        assert_eq!(p.collectors.len(), Registry::available().len());
    }

    #[test]
    fn collector_flags_last_one_wins() {
        let p = parse_from([
            "kubedf",
            "--no-collector.imagefs",
            "metrics",
            "--no-collector.rlimit",
        ])
        .unwrap();
        assert!(!p.collectors.contains("imagefs"));
        assert!(!p.collectors.contains("rlimit"));
        assert!(p.collectors.contains("nodefs"));
        let p = parse_from([
            "kubedf",
            "df",
            "--no-collector.imagefs",
            "--collector.imagefs",
        ])
        .unwrap();
        assert!(p.collectors.contains("imagefs"));
        assert!(parse_from(["kubedf", "df", "--no-collector.bogus"]).is_err());
    }

    #[test]
    fn bad_values_are_refused_with_the_flag_named() {
        for args in [
            vec!["kubedf", "serve", "--web.listen-address", "nonsense"],
            vec!["kubedf", "serve", "--web.telemetry-path", "metrics"],
            vec!["kubedf", "df", "--sample-timeout", "0s"],
            vec!["kubedf", "df", "--sample-interval", "soon"],
            vec!["kubedf", "df", "--volume-stats.kubelet-names", "some"],
        ] {
            let err = parse_from(args.clone()).unwrap_err().to_string();
            assert!(err.contains(args[2]), "{args:?}: {err}");
        }
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(
            parse_listen_address(":9000"),
            Ok("0.0.0.0:9000".parse().unwrap())
        );
        assert_eq!(
            parse_listen_address("127.0.0.1:0"),
            Ok("127.0.0.1:0".parse().unwrap())
        );
        assert_eq!(
            parse_listen_address("[::1]:9842"),
            Ok("[::1]:9842".parse().unwrap())
        );
    }
}
