//! Command line: clap derive for the fixed flags, plus one
//! `--collector.NAME` / `--no-collector.NAME` pair per collector, generated
//! from the registry so a new collector gets its flags for free.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{
    Arg, ArgAction, ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum,
};

use crate::registry::Registry;
use crate::sources::nodes::AddressTypes;
use crate::sources::shard::{Shard, ShardError};

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
    #[command(flatten)]
    pub web: WebArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve /metrics over HTTP, sampling in the background.
    Serve,
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

/// The `--web.*` flags. Only `serve` uses them; they are global so that
/// they may come before the subcommand too.
#[derive(Debug, Args)]
pub struct WebArgs {
    /// Address to listen on: host:port (a host name is resolved, IPv4
    /// first), or :port for every interface.
    #[arg(long = "web.listen-address", env = "KUBEDF_WEB_LISTEN_ADDRESS", default_value = ":9842", value_parser = parse_listen_address, global = true)]
    pub listen_address: SocketAddr,
    /// Path under which to expose metrics: a plain path other than /,
    /// /healthz and /stats/summary.
    #[arg(long = "web.telemetry-path", env = "KUBEDF_WEB_TELEMETRY_PATH", default_value = "/metrics", value_parser = parse_telemetry_path, global = true)]
    pub telemetry_path: String,
    /// Exporter-toolkit web config file (TLS, client certificates, basic
    /// auth, headers, rate limit); re-read when it changes and on SIGHUP.
    #[arg(
        long = "web.config.file",
        env = "KUBEDF_WEB_CONFIG_FILE",
        global = true
    )]
    pub web_config_file: Option<PathBuf>,
    /// Most connections open at once; at the cap, a new connection closes
    /// the longest-idle one, so a flood of idle clients cannot lock
    /// scrapers out.
    #[arg(long = "web.max-connections", env = "KUBEDF_WEB_MAX_CONNECTIONS", default_value = "64", value_parser = clap::value_parser!(u16).range(1..=4096), global = true)]
    pub max_connections: u16,
}

/// Where kubedf reads its figures from (`--mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// One kubedf per node, measuring its own node (host paths, CRI).
    #[default]
    Daemonset,
    /// One kubedf (or a few shards) for the cluster, reading every node's
    /// kubelet `/stats/summary`.
    Cluster,
}

/// Cluster mode's flags (`--mode=cluster`): their own block, so that the
/// DaemonSet's flags stay as they are.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// daemonset: measure this node (host paths, CRI, the kubelet's
    /// configuration); cluster: read every node's kubelet /stats/summary from
    /// one place (serve only).
    #[arg(
        long = "mode",
        env = "KUBEDF_MODE",
        default_value = "daemonset",
        value_enum,
        global = true
    )]
    pub mode: Mode,
    /// Cluster mode: how often every node's kubelet is polled; each node at
    /// its own fixed offset within the interval.
    #[arg(long = "cluster.poll-interval", env = "KUBEDF_CLUSTER_POLL_INTERVAL", default_value = "1m", value_parser = parse_sample_interval, global = true)]
    pub poll_interval: Duration,
    /// Cluster mode: most kubelets polled at once; a hung kubelet holds one
    /// of these until --kubelet.timeout.
    #[arg(long = "cluster.concurrency", env = "KUBEDF_CLUSTER_CONCURRENCY", default_value = "64", value_parser = clap::value_parser!(u16).range(1..=4096), global = true)]
    pub concurrency: u16,
    /// Cluster mode: polls in a row a node may fail before its figures are
    /// dropped (its kubedf_kubelet_poll_* series stay, saying it fails).
    #[arg(long = "cluster.down-after", env = "KUBEDF_CLUSTER_DOWN_AFTER", default_value = "3", value_parser = clap::value_parser!(u32).range(1..=1000), global = true)]
    pub down_after: u32,
    /// Cluster mode: the deadline of one kubelet request (connect, answer and
    /// whole body); must be below --cluster.poll-interval.
    #[arg(long = "kubelet.timeout", env = "KUBEDF_KUBELET_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration, global = true)]
    pub kubelet_timeout: Duration,
    /// Cluster mode: the Node address types to reach kubelets at, in order of
    /// preference, comma-separated (InternalIP, ExternalIP, Hostname,
    /// InternalDNS, ExternalDNS).
    #[arg(long = "kubelet.address-types", env = "KUBEDF_KUBELET_ADDRESS_TYPES", default_value = "InternalIP", value_parser = AddressTypes::parse, global = true)]
    pub address_types: AddressTypes,
    /// Cluster mode: this replica's shard, below --total-shards [default: 0,
    /// or with --total-shards above 1 the StatefulSet ordinal of $POD_NAME].
    #[arg(long = "shard", env = "KUBEDF_SHARD", global = true)]
    pub shard: Option<u32>,
    /// Cluster mode: how many replicas share the nodes; each polls the nodes
    /// whose name hashes to its shard.
    #[arg(long = "total-shards", env = "KUBEDF_TOTAL_SHARDS", default_value = "1", value_parser = clap::value_parser!(u32).range(1..=10000), global = true)]
    pub total_shards: u32,
    /// Cluster mode: reach each kubelet through the API server's
    /// nodes/proxy instead of directly, where kubelets cannot be reached
    /// from the pod. Needs get on nodes/proxy, which also allows exec into
    /// every pod of the cluster.
    #[arg(
        long = "cluster.via-api-server-proxy",
        env = "KUBEDF_CLUSTER_VIA_API_SERVER_PROXY",
        global = true
    )]
    pub via_api_server_proxy: bool,
}

/// Cluster mode's settings, checked across flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterSettings {
    pub poll_interval: Duration,
    pub kubelet_timeout: Duration,
    pub concurrency: usize,
    pub down_after: u32,
    pub address_types: AddressTypes,
    pub shard: Shard,
    pub via_api_server_proxy: bool,
}

/// A cluster mode setting that contradicts another.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClusterFlagError {
    #[error(
        "--kubelet.timeout {timeout} must be below --cluster.poll-interval {interval}: a poll must end before the next one is due"
    )]
    TimeoutNotBelowInterval { timeout: String, interval: String },
    #[error("--shard/--total-shards: {0}")]
    Shard(#[from] ShardError),
    #[error(
        "--total-shards {total} without --shard: the shard comes from POD_NAME's StatefulSet ordinal, and {reason}"
    )]
    NoOrdinal { total: u32, reason: String },
}

impl ClusterArgs {
    /// The settings, or which flags contradict each other. `pod_name` is
    /// `$POD_NAME`, read only when `--total-shards` is above 1 and `--shard`
    /// is not given.
    pub fn settings(&self, pod_name: Option<&str>) -> Result<ClusterSettings, ClusterFlagError> {
        if self.kubelet_timeout >= self.poll_interval {
            return Err(ClusterFlagError::TimeoutNotBelowInterval {
                timeout: humantime::format_duration(self.kubelet_timeout).to_string(),
                interval: humantime::format_duration(self.poll_interval).to_string(),
            });
        }
        let shard = match (self.shard, self.total_shards) {
            (Some(i), total) => Shard::new(i, total)?,
            (None, 1) => Shard::ALL,
            (None, total) => match pod_name {
                None => {
                    return Err(ClusterFlagError::NoOrdinal {
                        total,
                        reason: "POD_NAME is not set".into(),
                    });
                }
                Some(name) => Shard::from_pod_name(name, total).map_err(|e| match e {
                    ShardError::NoOrdinal { .. } => ClusterFlagError::NoOrdinal {
                        total,
                        reason: e.to_string(),
                    },
                    other => ClusterFlagError::Shard(other),
                })?,
            },
        };
        Ok(ClusterSettings {
            poll_interval: self.poll_interval,
            kubelet_timeout: self.kubelet_timeout,
            concurrency: usize::from(self.concurrency),
            down_after: self.down_after,
            address_types: self.address_types.clone(),
            shard,
            via_api_server_proxy: self.via_api_server_proxy,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct CommonArgs {
    /// Where the host's root filesystem is mounted; host paths (kubelet root
    /// dir, kubelet config, runtime mountpoints, hostPath PVs) are resolved
    /// inside it, symlinks included, as the host resolves them.
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
    /// kubelet's root directory (host path); its filesystem is nodefs
    /// [default: the running kubelet's root dir, else /var/lib/kubelet].
    #[arg(
        long = "kubelet.root-dir",
        env = "KUBEDF_KUBELET_ROOT_DIR",
        global = true
    )]
    pub kubelet_root_dir: Option<String>,
    /// kubelet's configuration file (host path), read when no running
    /// kubelet is found; a missing file means kubelet's defaults.
    #[arg(
        long = "kubelet.config",
        env = "KUBEDF_KUBELET_CONFIG",
        default_value = "/var/lib/kubelet/config.yaml",
        global = true
    )]
    pub kubelet_config: String,
    /// kubelet's address, to read its effective configuration from
    /// `<endpoint>/configz` before any other source (e.g.
    /// https://10.0.0.1:10250; a DaemonSet sets https://$(HOST_IP):10250).
    #[arg(
        long = "kubelet.endpoint",
        env = "KUBEDF_KUBELET_ENDPOINT",
        global = true
    )]
    pub kubelet_endpoint: Option<String>,
    /// CA file to verify kubelet's serving certificate with [default: the
    /// cluster CA of the in-cluster config or kubeconfig].
    #[arg(
        long = "kubelet.ca-file",
        env = "KUBEDF_KUBELET_CA_FILE",
        global = true
    )]
    pub kubelet_ca_file: Option<PathBuf>,
    /// Do not verify kubelet's serving certificate (kubelets with
    /// self-signed certificates); the credentials are still sent.
    #[arg(
        long = "kubelet.insecure-skip-tls-verify",
        env = "KUBEDF_KUBELET_INSECURE_SKIP_TLS_VERIFY",
        global = true
    )]
    pub kubelet_insecure_skip_tls_verify: bool,
    /// How often `serve` reads kubelet's configuration again (and at once
    /// when the kubelet process is another one): 100ms to 24h.
    #[arg(long = "kubelet.config-refresh-interval", env = "KUBEDF_KUBELET_CONFIG_REFRESH_INTERVAL", default_value = "1m", value_parser = parse_sample_interval, global = true)]
    pub kubelet_config_refresh_interval: Duration,
    /// CRI endpoint of the container runtime, in this process's view; given,
    /// it pins the endpoint [default: kubelet's containerRuntimeEndpoint
    /// (followed when kubelet restarts with another), else the first of
    /// unix:///run/containerd/containerd.sock and
    /// unix:///var/run/crio/crio.sock that exists on the host; either reached
    /// under --path.rootfs].
    #[arg(long = "cri.endpoint", env = "KUBEDF_CRI_ENDPOINT", global = true)]
    pub cri_endpoint: Option<String>,
    /// How often sources are read in `serve`.
    #[arg(long = "sample-interval", env = "KUBEDF_SAMPLE_INTERVAL", default_value = "15s", value_parser = parse_sample_interval, global = true)]
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
    /// volumeStatsAggPeriod; 0 turns volume stats off [default: kubelet's
    /// volumeStatsAggPeriod, else 1m].
    #[arg(long = "volume-stats-agg-period", env = "KUBEDF_VOLUME_STATS_AGG_PERIOD", value_parser = parse_agg_period, global = true)]
    pub volume_stats_agg_period: Option<Duration>,
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
    /// Comma-separated regular expressions: only the collectors' families
    /// whose name one matches (anywhere in it, as kube-state-metrics
    /// matches) are exported. kubedf's own health families always are.
    /// Not with --metric-denylist.
    #[arg(
        long = "metric-allowlist",
        env = "KUBEDF_METRIC_ALLOWLIST",
        value_name = "REGEXES",
        global = true
    )]
    pub metric_allowlist: Option<String>,
    /// Comma-separated regular expressions: the collectors' families whose
    /// name one matches are not exported. Not with --metric-allowlist.
    #[arg(
        long = "metric-denylist",
        env = "KUBEDF_METRIC_DENYLIST",
        value_name = "REGEXES",
        global = true
    )]
    pub metric_denylist: Option<String>,
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
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let matches = command()
        .try_get_matches_from(&args)
        .map_err(|e| blame_environment(e, &args))?;
    let cli = Cli::from_arg_matches(&matches)?;
    Ok(Parsed {
        collectors: enabled_collectors(&matches),
        cli,
    })
}

pub fn parse() -> Parsed {
    parse_from(std::env::args_os()).unwrap_or_else(|e| e.exit())
}

/// A value that failed validation and came from an environment variable
/// (not from the command line) is reported under the variable's name.
fn blame_environment(e: clap::Error, args: &[OsString]) -> clap::Error {
    if !matches!(
        e.kind(),
        ErrorKind::ValueValidation | ErrorKind::InvalidValue
    ) {
        return e;
    }
    let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) else {
        return e;
    };
    let long = arg
        .split_whitespace()
        .next()
        .unwrap_or("")
        .trim_start_matches("--")
        .to_owned();
    let cmd = command();
    let Some(env) = cmd
        .get_arguments()
        .find(|a| a.get_long() == Some(long.as_str()))
        .and_then(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
    else {
        return e;
    };
    let flag = format!("--{long}");
    let on_command_line = args.iter().skip(1).any(|a| {
        let a = a.to_string_lossy();
        a == flag || a.starts_with(&format!("{flag}="))
    });
    let Some(value) = std::env::var_os(&env) else {
        return e;
    };
    if on_command_line {
        return e;
    }
    let reason = std::error::Error::source(&e)
        .map(ToString::to_string)
        .unwrap_or_else(|| "invalid value".into());
    let mut cmd = cmd;
    cmd.error(
        ErrorKind::ValueValidation,
        format!(
            "invalid value {:?} in environment variable {env} (which sets {flag}): {reason}",
            value.to_string_lossy()
        ),
    )
}

/// host:port, [v6]:port or :port; a host name is resolved (IPv4 first, as
/// Go's net.Listen does for localhost).
fn parse_listen_address(s: &str) -> Result<SocketAddr, String> {
    let usage = || {
        format!(
            "{s:?} is not host:port or :port (e.g. :{DEFAULT_PORT}, localhost:{DEFAULT_PORT} or 127.0.0.1:{DEFAULT_PORT})"
        )
    };
    if let Some(port) = s.strip_prefix(':') {
        let port: u16 = port.parse().map_err(|_| usage())?;
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    if let Ok(addr) = s.parse() {
        return Ok(addr);
    }
    let (host, port) = s.rsplit_once(':').ok_or_else(usage)?;
    if host.is_empty()
        || port.parse::<u16>().is_err()
        || host.contains(|c: char| c.is_whitespace() || c == '/')
    {
        return Err(usage());
    }
    let addrs: Vec<SocketAddr> = s
        .to_socket_addrs()
        .map_err(|e| format!("{s:?}: cannot resolve {host:?}: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("{s:?}: {host:?} resolves to no address"))
}

fn parse_telemetry_path(s: &str) -> Result<String, String> {
    crate::http::check_telemetry_path(s).map(|()| s.to_owned())
}

/// A duration within [min, max], with an error that says which bound.
fn bounded(s: &str, d: Duration, min: Duration, max: Duration) -> Result<Duration, String> {
    if d < min {
        return Err(format!(
            "{s:?} is too short: the minimum is {}",
            humantime::format_duration(min)
        ));
    }
    if d > max {
        return Err(format!(
            "{s:?} is too long: the maximum is {}",
            humantime::format_duration(max)
        ));
    }
    Ok(d)
}

const DAY: Duration = Duration::from_secs(24 * 3600);

/// The shortest period between two samples. Each sample reads every
/// source; `1ns` kept a core busy. 100ms (a few percent of a core at most)
/// still lets tests and demos see changes quickly; production uses 15s.
const MIN_PERIOD: Duration = Duration::from_millis(100);

/// A period taken from kubelet's volumeStatsAggPeriod, within the bounds
/// the flag has: 0 stays off, anything else is held to 100ms..1 day.
pub fn clamp_agg_period(d: Duration) -> Duration {
    if d.is_zero() {
        d
    } else {
        d.clamp(MIN_PERIOD, DAY)
    }
}

fn parse_sample_interval(s: &str) -> Result<Duration, String> {
    bounded(s, parse_duration(s)?, MIN_PERIOD, DAY)
}

/// 0 (off), or 100ms to a day, as for the sample interval.
fn parse_agg_period(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Ok(d);
    }
    bounded(s, d, MIN_PERIOD, DAY)
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e} (e.g. 15s, 1m, 500ms)"))
}

/// A timeout: longer than 0 and at most a day (longer ones are mistakes,
/// and would overflow the arithmetic on them). A tiny timeout costs no CPU:
/// the read just gives up.
fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err(format!("{s:?} must be longer than 0"));
    }
    bounded(s, d, Duration::from_nanos(1), DAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let p = parse_from(["kubedf", "serve"]).unwrap();
        assert!(matches!(p.cli.command, Command::Serve));
        let serve = &p.cli.web;
        assert_eq!(serve.listen_address, "0.0.0.0:9842".parse().unwrap());
        assert_eq!(serve.telemetry_path, "/metrics");
        assert_eq!(serve.max_connections, 64);
        assert_eq!(p.cli.common.rootfs, PathBuf::from("/"));
        assert_eq!(p.cli.common.procfs, PathBuf::from("/proc"));
        assert_eq!(p.cli.common.kubelet_root_dir, None);
        assert_eq!(p.cli.common.kubelet_config, "/var/lib/kubelet/config.yaml");
        assert_eq!(p.cli.common.sample_interval, Duration::from_secs(15));
        assert_eq!(p.cli.common.sample_timeout, Duration::from_secs(5));
        assert_eq!(p.cli.common.volume_stats_agg_period, None);
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
        assert_eq!(p.cli.common.volume_stats_agg_period, Some(Duration::ZERO));
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

    #[test]
    fn web_flags_may_come_before_the_subcommand() {
        let p = parse_from([
            "kubedf",
            "--web.listen-address",
            "127.0.0.1:9999",
            "--web.telemetry-path",
            "/kubedf/metrics",
            "--web.max-connections",
            "8",
            "serve",
        ])
        .unwrap();
        assert_eq!(p.cli.web.listen_address, "127.0.0.1:9999".parse().unwrap());
        assert_eq!(p.cli.web.telemetry_path, "/kubedf/metrics");
        assert_eq!(p.cli.web.max_connections, 8);
        assert!(parse_from(["kubedf", "--web.max-connections", "0", "serve"]).is_err());
    }

    #[test]
    fn host_names_are_resolved() {
        let addr = parse_listen_address("localhost:9860").unwrap();
        assert_eq!(addr.port(), 9860);
        assert!(addr.ip().is_loopback(), "{addr}");
        for bad in [
            "localhost",
            "localhost:",
            "localhost:99999",
            ":x",
            "a b:1",
            "no-such-host.invalid:1",
        ] {
            let err = parse_listen_address(bad).unwrap_err();
            assert!(err.contains(bad), "{bad}: {err}");
        }
    }

    #[test]
    fn absurd_durations_are_refused() {
        for (flag, value) in [
            ("--sample-interval", "1ns"),
            ("--sample-interval", "99ms"),
            ("--sample-interval", "0"),
            ("--sample-interval", "1000y"),
            ("--sample-timeout", "0s"),
            ("--sample-timeout", "2days"),
            ("--volume-stats-agg-period", "1ms"),
            ("--volume-stats-agg-period", "1000y"),
            ("--volume-stats-timeout", "100y"),
            ("--volume-stats-walk-timeout", "25h"),
        ] {
            let err = parse_from(["kubedf", "df", flag, value])
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(flag) && err.contains(value),
                "{flag} {value}: {err}"
            );
        }
        let p = parse_from(["kubedf", "df", "--sample-interval", "100ms"]).unwrap();
        assert_eq!(p.cli.common.sample_interval, Duration::from_millis(100));
    }

    #[test]
    fn cluster_flags_defaults_and_checks() {
        let p = parse_from(["kubedf", "serve"]).unwrap();
        let c = &p.cli.cluster;
        assert_eq!(c.mode, Mode::Daemonset);
        let s = c.settings(None).unwrap();
        assert_eq!(s.poll_interval, Duration::from_secs(60));
        assert_eq!(s.kubelet_timeout, Duration::from_secs(10));
        assert_eq!(s.concurrency, 64);
        assert_eq!(s.down_after, 3);
        assert_eq!(s.address_types, AddressTypes::default());
        assert_eq!(s.shard, Shard::ALL);
        let p = parse_from([
            "kubedf",
            "serve",
            "--mode=cluster",
            "--cluster.poll-interval=2s",
            "--kubelet.timeout=1s",
            "--kubelet.address-types=Hostname,InternalIP",
            "--shard=1",
            "--total-shards=3",
            "--cluster.down-after=5",
            "--cluster.concurrency=8",
        ])
        .unwrap();
        let c = &p.cli.cluster;
        assert_eq!(c.mode, Mode::Cluster);
        let s = c.settings(None).unwrap();
        assert_eq!(s.shard, Shard::new(1, 3).unwrap());
        assert_eq!((s.down_after, s.concurrency), (5, 8));
        assert_eq!(
            s.address_types,
            AddressTypes::parse("Hostname,InternalIP").unwrap()
        );
    }

    #[test]
    fn cluster_flags_that_contradict_are_named() {
        let settings = |args: &[&str], pod: Option<&str>| {
            let mut all = vec!["kubedf", "serve", "--mode", "cluster"];
            all.extend_from_slice(args);
            parse_from(all).unwrap().cli.cluster.settings(pod)
        };
        let e = settings(
            &["--cluster.poll-interval=5s", "--kubelet.timeout=5s"],
            None,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "--kubelet.timeout 5s must be below --cluster.poll-interval 5s: a poll must end before the next one is due"
        );
        let e = settings(&["--shard=2", "--total-shards=2"], None)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "--shard/--total-shards: --shard 2 is not below --total-shards 2"
        );
        // The shard from the StatefulSet pod's name.
        let s = settings(&["--total-shards=4"], Some("kubedf-cluster-3")).unwrap();
        assert_eq!(s.shard, Shard::new(3, 4).unwrap());
        let e = settings(&["--total-shards=4"], Some("kubedf-abc"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--total-shards 4 without --shard: ") && e.contains("kubedf-abc"),
            "{e}"
        );
        let e = settings(&["--total-shards=4"], None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("POD_NAME is not set"), "{e}");
        let e = settings(&["--total-shards=2"], Some("kubedf-5"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--shard 5 is not below --total-shards 2"), "{e}");
        // An explicit --shard wins over POD_NAME.
        let s = settings(&["--total-shards=2", "--shard=0"], Some("kubedf-1")).unwrap();
        assert_eq!(s.shard, Shard::new(0, 2).unwrap());
    }

    #[test]
    fn bad_cluster_values_are_refused_with_the_flag_named() {
        for (flag, value) in [
            ("--mode", "cloud"),
            ("--cluster.poll-interval", "often"),
            ("--cluster.poll-interval", "1ms"),
            ("--cluster.concurrency", "0"),
            ("--cluster.concurrency", "many"),
            ("--cluster.down-after", "0"),
            ("--kubelet.timeout", "0s"),
            ("--kubelet.address-types", "InternalIp"),
            ("--kubelet.address-types", ","),
            ("--shard", "x"),
            ("--total-shards", "0"),
        ] {
            let err = parse_from(["kubedf", "serve", flag, value])
                .unwrap_err()
                .to_string();
            assert!(err.contains(flag), "{flag} {value}: {err}");
        }
    }

    #[test]
    fn telemetry_paths_are_plain_and_free() {
        for bad in [
            "/healthz",
            "/",
            "/stats/summary",
            "/*rest",
            "/:x",
            "/{x}",
            "/{*rest}",
            "/metrics?x=1",
            "/metrics#x",
            "metrics",
            "",
            "/a b",
            "/%2e",
            "//",
            "/a/../b",
        ] {
            let err = parse_from(["kubedf", "serve", "--web.telemetry-path", bad])
                .unwrap_err()
                .to_string();
            assert!(err.contains("--web.telemetry-path"), "{bad:?}: {err}");
        }
        for good in ["/metrics", "/kubedf/metrics", "/metrics/", "/x-y_z.~1"] {
            assert!(
                parse_from(["kubedf", "serve", "--web.telemetry-path", good]).is_ok(),
                "{good}"
            );
        }
    }
}
