//! Where kubelet's configuration is read from on the host, and the reading:
//! the running kubelet found in the host's `/proc` (its command line, its
//! `--config` file and `--config-dir` drop-ins, merged by
//! [`crate::kubelet::effective`]), else the file `--kubelet.config` names,
//! else kubelet's defaults. `/configz` is [`super::configz`].
//!
//! A kubelet is a process whose argv\[0\] is named `kubelet`. k3s and RKE2
//! may run theirs inside their own process (`k3s server|agent`, `rke2
//! server|agent`): its command line is then their `--config-dir`
//! (`<data-dir>/agent/etc/kubelet.conf.d`, which they rewrite at every start
//! and into which they copy a `--kubelet-arg=config=` file) followed by their
//! `--kubelet-arg` flags, from their config files first and then from their
//! command line. Their config files are read as k3s's `configfilearg` reads
//! them: `--config`/`-c` (default `/etc/rancher/{k3s,rke2}/config.yaml`),
//! then the `*.yaml`/`*.yml` files of `<config>.d` by name, each key of a
//! later file replacing the earlier value unless written `key+:`, which
//! appends. (Their `K3S_CONFIG_FILE`/`RKE2_CONFIG_FILE` environment variable
//! is not seen: another process's environment needs ptrace permission.) A
//! separate kubelet process is preferred when both exist (RKE2 runs one).
//!
//! Reading `/proc/<pid>/cmdline` and `stat` needs only the host's `/proc`
//! mounted. Every path the kubelet names is a host path, reached under
//! `--path.rootfs` through [`Host::host_file`], never through the
//! process's own root (`/proc/<pid>/root` would need ptrace permission). Only
//! to choose between several kubelets (a test machine; a real node has one) is
//! that root compared with `--path.rootfs`, where it can be read.

use std::io;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use procfs_core::FromRead as _;
use procfs_core::process::Stat;
use serde_json::Value;
use thiserror::Error;

pub use crate::kubelet::config::DEFAULT_VOLUME_STATS_AGG_PERIOD;
use crate::kubelet::config::{
    ConfigError, ConfigSource, DEFAULT_CONTAINER_RUNTIME_ENDPOINT, DEFAULT_ROOT_DIR, KubeletConfig,
};
use crate::kubelet::effective::{Document, EffectiveError, Layers, effective};
use crate::kubelet::flags::{self, FlagError};
use crate::sources::{HostPathError, HostRoot};

/// The most drop-in files kubedf reads from one `--config-dir`: a real one
/// holds a handful; a directory with more is not a drop-in directory.
const MAX_DROP_INS: usize = 256;

#[derive(Debug, Error)]
pub enum KubeletSourceError {
    #[error("{what} {host:?}: {source}")]
    HostPath {
        what: String,
        host: String,
        #[source]
        source: HostPathError,
    },
    #[error("cannot list kubelet config drop-in directory {dir}: {source}")]
    Walk {
        dir: String,
        #[source]
        source: io::Error,
    },
    #[error("kubelet config drop-in directory {dir} holds more than {MAX_DROP_INS} .conf files")]
    TooManyDropIns { dir: String },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Effective(#[from] EffectiveError),
    #[error("{process}: {source}")]
    Flags {
        process: String,
        #[source]
        source: FlagError,
    },
    #[error("{path}: {message}")]
    DistroConfig { path: String, message: String },
}

/// The host as kubedf sees it: its root filesystem and its `/proc`.
#[derive(Clone, Debug)]
pub struct Host {
    pub rootfs: PathBuf,
    pub procfs: PathBuf,
    /// The host root, opened once (on first use, or given), shared by every
    /// clone: one descriptor, not one per file read.
    root: Arc<OnceLock<Arc<HostRoot>>>,
}

impl Host {
    pub fn new(rootfs: impl Into<PathBuf>, procfs: impl Into<PathBuf>) -> Host {
        Host {
            rootfs: rootfs.into(),
            procfs: procfs.into(),
            root: Arc::default(),
        }
    }

    /// A host whose root is `root`, already open (the app's).
    pub fn on(root: Arc<HostRoot>, rootfs: impl Into<PathBuf>, procfs: impl Into<PathBuf>) -> Host {
        let host = Host::new(rootfs, procfs);
        let _ = host.root.set(root);
        host
    }

    /// The one way from a host path kubelet names to the path this process
    /// reads.
    /// Resolved inside the host root as the host resolves it (a symlinked
    /// /etc/kubernetes included). A root that cannot be opened is tried
    /// again on the next call.
    pub fn host_file(&self, host: &str) -> Result<PathBuf, HostPathError> {
        let root = match self.root.get() {
            Some(root) => root,
            None => {
                let opened = Arc::new(HostRoot::open(&self.rootfs)?);
                self.root.get_or_init(|| opened)
            }
        };
        root.resolve(host)
    }

    fn host_file_for(&self, what: &str, host: &str) -> Result<PathBuf, KubeletSourceError> {
        self.host_file(host)
            .map_err(|source| KubeletSourceError::HostPath {
                what: what.to_owned(),
                host: host.to_owned(),
                source,
            })
    }

    /// A configuration file kubelet read at start: it must exist.
    fn document(&self, what: &str, host: &str) -> Result<Document, KubeletSourceError> {
        let file = self.host_file_for(what, host)?;
        let text = crate::yaml::read_file(&file).map_err(|source| ConfigError::Read {
            path: host.into(),
            source,
        })?;
        Ok(Document {
            path: host.to_owned(),
            text,
        })
    }

    /// The `.conf` files of a `--config-dir`, as host paths, in
    /// `filepath.WalkDir` order: each directory's entries by name (bytes),
    /// subdirectories entered where their name sorts, symlinks not followed
    /// into.
    ///
    /// kubelet's `filepath.WalkDir` lstats its root: a `--config-dir` that is
    /// itself a symlink is not walked into (no drop-in is read), unless it
    /// ends in `/`, which makes lstat follow it. Every step, that lstat
    /// included, is resolved inside the host root.
    pub fn drop_in_files(&self, dir: &str) -> Result<Vec<String>, KubeletSourceError> {
        let mut out = Vec::new();
        let top = dir.trim_end_matches('/');
        if !dir.ends_with('/') && self.is_symlink(top)? {
            return Ok(out);
        }
        self.walk(top, dir, &mut out)?;
        Ok(out)
    }

    /// Whether host path `host`'s last component is a symlink (its parent
    /// resolved inside the host root); a missing one is not.
    fn is_symlink(&self, host: &str) -> Result<bool, KubeletSourceError> {
        let Some((parent, name)) = host.rsplit_once('/') else {
            return Ok(false);
        };
        if name.is_empty() || name == "." || name == ".." {
            return Ok(false);
        }
        let parent = if parent.is_empty() { "/" } else { parent };
        let local = self.host_file_for("kubelet --config-dir", parent)?;
        Ok(std::fs::symlink_metadata(local.join(name)).is_ok_and(|m| m.file_type().is_symlink()))
    }

    fn walk(
        &self,
        host_dir: &str,
        top: &str,
        out: &mut Vec<String>,
    ) -> Result<(), KubeletSourceError> {
        let walk_error = |source| KubeletSourceError::Walk {
            dir: top.to_owned(),
            source,
        };
        let local = self.host_file_for("kubelet --config-dir", host_dir)?;
        let mut entries: Vec<(Vec<u8>, bool)> = Vec::new();
        for entry in std::fs::read_dir(&local).map_err(walk_error)? {
            let entry = entry.map_err(walk_error)?;
            let is_dir = entry.file_type().map_err(walk_error)?.is_dir();
            use std::os::unix::ffi::OsStrExt as _;
            entries.push((entry.file_name().as_bytes().to_vec(), is_dir));
        }
        entries.sort();
        for (name, is_dir) in entries {
            let name = String::from_utf8_lossy(&name).into_owned();
            let host = format!("{host_dir}/{name}");
            if is_dir {
                self.walk(&host, top, out)?;
            } else if go_ext(&name) == ".conf" {
                if out.len() == MAX_DROP_INS {
                    return Err(KubeletSourceError::TooManyDropIns {
                        dir: top.to_owned(),
                    });
                }
                out.push(host);
            }
        }
        Ok(())
    }
}

/// Go's `filepath.Ext`: from the last `.` of the name on (`.conf` of a
/// file named `.conf` too).
fn go_ext(name: &str) -> &str {
    name.rfind('.').map_or("", |i| &name[i..])
}

/// How the kubelet runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// A kubelet binary of its own.
    Kubelet,
    /// Inside `k3s server|agent`.
    K3s,
    /// Inside `rke2 server|agent`.
    Rke2,
}

impl Flavor {
    fn name(self) -> &'static str {
        match self {
            Flavor::Kubelet => "kubelet",
            Flavor::K3s => "k3s",
            Flavor::Rke2 => "rke2",
        }
    }

    /// `--data-dir`'s default (as root), and the default config file.
    fn distro_defaults(self) -> Option<(&'static str, &'static str)> {
        match self {
            Flavor::Kubelet => None,
            Flavor::K3s => Some(("/var/lib/rancher/k3s", "/etc/rancher/k3s/config.yaml")),
            Flavor::Rke2 => Some(("/var/lib/rancher/rke2", "/etc/rancher/rke2/config.yaml")),
        }
    }
}

/// A running kubelet (or k3s/RKE2) found in the host's `/proc`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeletProcess {
    pub pid: i32,
    /// `/proc/<pid>/stat`'s starttime (clock ticks since boot): with the
    /// pid, tells a restarted kubelet from the one read before.
    pub start_time: u64,
    pub flavor: Flavor,
    pub argv: Vec<String>,
}

impl KubeletProcess {
    /// "kubelet (pid 4242)", "k3s agent (pid 17)".
    pub fn describe(&self) -> String {
        match self.flavor {
            Flavor::Kubelet => format!("kubelet (pid {})", self.pid),
            other => format!(
                "{} {} (pid {})",
                other.name(),
                subcommand(&self.argv).unwrap_or(""),
                self.pid
            ),
        }
    }
}

/// The first argument after argv\[0\] that is not a flag.
fn subcommand(argv: &[String]) -> Option<&str> {
    argv.iter()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .map(String::as_str)
}

/// What runs the kubelet, from a command line.
pub fn flavor_of(argv: &[String]) -> Option<Flavor> {
    let base = argv.first()?.rsplit('/').next()?;
    let flavor = match base {
        "kubelet" => return Some(Flavor::Kubelet),
        "k3s" => Flavor::K3s,
        "rke2" => Flavor::Rke2,
        _ => return None,
    };
    matches!(subcommand(argv), Some("server" | "agent")).then_some(flavor)
}

/// The program names [`flavor_of`] knows.
const PROGRAMS: [&[u8]; 3] = [b"kubelet", b"k3s", b"rke2"];

/// Whether a raw `/proc/<pid>/cmdline` may be a kubelet's: its program's
/// base name is one [`flavor_of`] knows. Checked on the bytes, before the
/// command line is split into strings: on a node, almost every process is
/// another program, and a refresh looks at all of them.
fn may_be_kubelet(cmdline: &[u8]) -> bool {
    let program = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    let base = program.rsplit(|b| *b == b'/').next().unwrap_or_default();
    PROGRAMS.contains(&base)
}

/// `/proc/<pid>/cmdline`, split on NULs, if it may be a kubelet's
/// ([`may_be_kubelet`]).
fn cmdline(procfs: &Path, pid: i32) -> Option<Vec<String>> {
    let bytes = std::fs::read(procfs.join(pid.to_string()).join("cmdline")).ok()?;
    if !may_be_kubelet(&bytes) {
        return None;
    }
    let argv: Vec<String> = bytes
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let argv = match argv.split_last() {
        Some((last, rest)) if last.is_empty() => rest.to_vec(),
        _ => argv,
    };
    (!argv.is_empty()).then_some(argv)
}

fn start_time(procfs: &Path, pid: i32) -> Option<u64> {
    let file = std::fs::File::open(procfs.join(pid.to_string()).join("stat")).ok()?;
    Stat::from_read(file).ok().map(|s| s.starttime)
}

/// Whether the process's root is `rootfs` (same device and inode), when
/// its root can be read at all.
fn root_is(procfs: &Path, pid: i32, rootfs: &std::fs::Metadata) -> Option<bool> {
    let root = std::fs::metadata(procfs.join(pid.to_string()).join("root")).ok()?;
    Some(root.dev() == rootfs.dev() && root.ino() == rootfs.ino())
}

/// The kubelet of the host: a `kubelet` process if there is one, else
/// k3s's or RKE2's. Among several of a kind, those whose root is
/// `--path.rootfs` (where that can be read) and then the latest started.
pub fn find_kubelet(host: &Host) -> Option<KubeletProcess> {
    let entries = std::fs::read_dir(&host.procfs).ok()?;
    let rootfs = std::fs::metadata(&host.rootfs).ok();
    let mut found: Vec<(KubeletProcess, bool)> = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Some(argv) = cmdline(&host.procfs, pid) else {
            continue;
        };
        let Some(flavor) = flavor_of(&argv) else {
            continue;
        };
        let Some(start_time) = start_time(&host.procfs, pid) else {
            continue;
        };
        let elsewhere = rootfs.as_ref().and_then(|r| root_is(&host.procfs, pid, r)) == Some(false);
        found.push((
            KubeletProcess {
                pid,
                start_time,
                flavor,
                argv,
            },
            elsewhere,
        ));
    }
    // A lone candidate is taken whatever its root (a containerised kubelet,
    // as Talos runs, has a root of its own); among several, one in
    // --path.rootfs first.
    let several = found.len() > 1;
    found
        .into_iter()
        .filter(|(_, elsewhere)| !(several && *elsewhere))
        .map(|(p, _)| p)
        .max_by_key(|p| (p.flavor == Flavor::Kubelet, p.start_time, p.pid))
}

/// Flags of a k3s/RKE2 command line kubedf reads: (`--data-dir`,
/// `--config`, every `--kubelet-arg`). urfave/cli takes `-flag` and
/// `--flag`, with `=value` or the next argument.
fn distro_flags(argv: &[String]) -> (Option<String>, Option<String>, Vec<String>) {
    let (mut data_dir, mut config, mut kubelet_args) = (None, None, Vec::new());
    let mut rest = argv.iter().skip(1);
    while let Some(arg) = rest.next() {
        let Some(body) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            continue;
        };
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_owned())),
            None => (body, None),
        };
        let slot = match name {
            "data-dir" | "d" => &mut data_dir,
            "config" | "c" => &mut config,
            "kubelet-arg" => {
                if let Some(v) = inline.or_else(|| rest.next().cloned()) {
                    kubelet_args.push(v);
                }
                continue;
            }
            _ => continue,
        };
        *slot = inline.or_else(|| rest.next().cloned());
    }
    (data_dir, config, kubelet_args)
}

/// The most files k3s/RKE2 config drop-ins kubedf reads (`config.yaml.d`).
const MAX_DISTRO_DROP_INS: usize = 256;

/// A YAML mapping's entries in the file's order (k3s reads a file as a
/// `yaml.MapSlice`: the order of `kubelet-arg` and `kubelet-arg+` matters).
struct Ordered(Vec<(String, Value)>);

impl<'de> serde::Deserialize<'de> for Ordered {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Ordered, D::Error> {
        struct Entries;
        impl<'de> serde::de::Visitor<'de> for Entries {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_unit<E>(self) -> Result<Ordered, E> {
                Ok(Ordered(Vec::new()))
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut m: M,
            ) -> Result<Ordered, M::Error> {
                let mut out = Vec::new();
                while let Some(entry) = m.next_entry::<String, Value>()? {
                    out.push(entry);
                }
                Ok(Ordered(out))
            }
        }
        d.deserialize_any(Entries)
    }
}

/// k3s's `toSlice`: a list as it is, anything else one item (an empty
/// scalar none).
fn to_items(v: Value) -> Vec<Value> {
    match v {
        Value::Array(items) => items,
        Value::Null => Vec::new(),
        Value::String(s) => vec![Value::String(s)],
        other => vec![other],
    }
}

/// A scalar as k3s's `convert.ToString` writes it.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => Some(String::new()),
        _ => None,
    }
}

/// The files k3s/RKE2 read their flags from, as host paths, in order: the
/// config file when it exists, then `<config>.d`'s `*.yaml` and `*.yml`
/// files (any case; directories skipped) by name, as k3s's `dotDFiles`
/// lists them with `os.ReadDir`.
fn distro_config_files(host: &Host, path: &str) -> Result<Vec<String>, KubeletSourceError> {
    let mut files = Vec::new();
    let local = host.host_file_for("config file", path)?;
    match std::fs::symlink_metadata(&local) {
        Ok(_) => files.push(path.to_owned()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.into(),
                source,
            }
            .into());
        }
    }
    let dir = format!("{path}.d");
    let list_error = |source| KubeletSourceError::Walk {
        dir: dir.clone(),
        source,
    };
    let local = host.host_file_for("config drop-in directory", &dir)?;
    let entries = match std::fs::read_dir(&local) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(files),
        Err(e) => return Err(list_error(e)),
    };
    let mut names: Vec<Vec<u8>> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(list_error)?;
        if entry.file_type().map_err(list_error)?.is_dir() {
            continue;
        }
        use std::os::unix::ffi::OsStrExt as _;
        let name = entry.file_name().as_bytes().to_vec();
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(b".yaml") || lower.ends_with(b".yml") {
            names.push(name);
        }
    }
    if names.len() > MAX_DISTRO_DROP_INS {
        return Err(KubeletSourceError::DistroConfig {
            path: dir,
            message: format!("more than {MAX_DISTRO_DROP_INS} .yaml files"),
        });
    }
    names.sort();
    files.extend(
        names
            .into_iter()
            .map(|n| format!("{dir}/{}", String::from_utf8_lossy(&n))),
    );
    Ok(files)
}

/// The `kubelet-arg` list and `data-dir` of k3s's/RKE2's config file and its
/// `.d` drop-ins, merged as k3s's `readConfigFile` merges them: per key, a
/// later value replaces an earlier one, unless its key ends in `+`, which
/// appends to it. No file is none.
fn distro_config(
    host: &Host,
    path: &str,
) -> Result<(Option<String>, Vec<String>), KubeletSourceError> {
    let mut values: indexmap::IndexMap<String, Value> = indexmap::IndexMap::new();
    for file in distro_config_files(host, path)? {
        let bad = |message: String| KubeletSourceError::DistroConfig {
            path: file.clone(),
            message,
        };
        let local = host.host_file_for("config file", &file)?;
        let text = crate::yaml::read_file(&local).map_err(|source| ConfigError::Read {
            path: file.clone().into(),
            source,
        })?;
        let entries: Ordered = if text.trim().is_empty() {
            Ordered(Vec::new())
        } else {
            serde_saphyr::from_str(&text).map_err(|e| bad(format!("not a YAML mapping: {e}")))?
        };
        for (key, value) in entries.0 {
            let (key, append) = match key.strip_suffix('+') {
                Some(k) => (k.to_owned(), true),
                None => (key, false),
            };
            match values.get_mut(&key) {
                Some(old) if append => {
                    let mut items = to_items(std::mem::take(old));
                    items.extend(to_items(value));
                    *old = Value::Array(items);
                }
                Some(old) => *old = value,
                None => {
                    values.insert(key, value);
                }
            }
        }
    }
    let bad = |message: String| KubeletSourceError::DistroConfig {
        path: path.to_owned(),
        message,
    };
    let args = match values.shift_remove("kubelet-arg") {
        None => Vec::new(),
        Some(v) => to_items(v)
            .iter()
            .map(|item| {
                scalar(item)
                    .ok_or_else(|| bad(format!("kubelet-arg: expected strings, found {item}")))
            })
            .collect::<Result<_, _>>()?,
    };
    let data_dir = match values.shift_remove("data-dir") {
        None => None,
        Some(v) => {
            Some(scalar(&v).ok_or_else(|| bad(format!("data-dir: expected a string, found {v}")))?)
        }
    };
    Ok((data_dir, args))
}

/// The kubelet's command line (without argv\[0\]): a kubelet's own, or
/// the one k3s/RKE2 give the kubelet they run.
pub fn kubelet_argv(
    host: &Host,
    process: &KubeletProcess,
) -> Result<Vec<String>, KubeletSourceError> {
    let Some((default_data_dir, default_config)) = process.flavor.distro_defaults() else {
        return Ok(process.argv[1..].to_vec());
    };
    let (cli_data_dir, config, cli_args) = distro_flags(&process.argv);
    let config = config.unwrap_or_else(|| default_config.to_owned());
    let (file_data_dir, file_args) = distro_config(host, &config)?;
    let data_dir = cli_data_dir
        .or(file_data_dir)
        .unwrap_or_else(|| default_data_dir.to_owned());
    let mut argv = vec![format!(
        "--config-dir={}/agent/etc/kubelet.conf.d",
        data_dir.trim_end_matches('/')
    )];
    for arg in file_args.into_iter().chain(cli_args) {
        let arg = arg.trim_start_matches('-');
        let name = arg.split('=').next().unwrap_or("");
        // They copy these into the drop-in directory instead.
        if matches!(name, "config" | "config-dir") {
            continue;
        }
        argv.push(format!("--{arg}"));
    }
    Ok(argv)
}

/// kubelet's effective configuration as the running `process` built it.
pub fn read_process(
    host: &Host,
    process: &KubeletProcess,
) -> Result<KubeletConfig, KubeletSourceError> {
    let who = process.describe();
    let argv = kubelet_argv(host, process)?;
    let args = flags::parse(&argv).map_err(|source| KubeletSourceError::Flags {
        process: who.clone(),
        source,
    })?;
    let mut layers = Layers {
        flags: args.settings.clone(),
        ..Layers::default()
    };
    let mut said = Vec::new();
    if let Some(config) = &args.config {
        layers.config = Some(host.document("kubelet --config", config)?);
        said.push(format!("--config {config}"));
    }
    if let Some(dir) = &args.config_dir {
        for file in host.drop_in_files(dir)? {
            layers
                .drop_ins
                .push(host.document("kubelet drop-in", &file)?);
        }
        said.push(format!(
            "--config-dir {dir} ({} drop-ins)",
            layers.drop_ins.len()
        ));
    }
    said.push(format!("{} flags", layers.flags.len()));
    let origin = format!("{who}: {}", said.join(", "));
    let mut cfg = effective(&layers, Path::new(&origin))?;
    cfg.source = ConfigSource::Process;
    cfg.path = args
        .config
        .clone()
        .or_else(|| args.config_dir.clone())
        .unwrap_or_default()
        .into();
    cfg.origin = origin;
    cfg.root_dir = Some(args.root_dir.unwrap_or_else(|| DEFAULT_ROOT_DIR.into()));
    // The running kubelet's defaults are its effective values.
    cfg.container_runtime_endpoint = Some(
        cfg.container_runtime_endpoint
            .take()
            .unwrap_or_else(|| DEFAULT_CONTAINER_RUNTIME_ENDPOINT.into()),
    );
    cfg.volume_stats_agg_period = Some(
        cfg.volume_stats_agg_period
            .unwrap_or(DEFAULT_VOLUME_STATS_AGG_PERIOD),
    );
    Ok(cfg)
}

/// The file `--kubelet.config` names (a host path); kubelet's defaults when
/// it does not exist.
pub fn read_file(host: &Host, path: &str) -> Result<KubeletConfig, KubeletSourceError> {
    let file = host.host_file_for("--kubelet.config", path)?;
    Ok(KubeletConfig::load(&file, Path::new(path))?)
}

/// kubelet's `--root-dir` as the running `process` has it (k3s/RKE2: their
/// `--kubelet-arg=root-dir=`), default `/var/lib/kubelet`; `/configz` lacks
/// it.
pub fn root_dir_of(host: &Host, process: &KubeletProcess) -> Option<String> {
    let argv = kubelet_argv(host, process).ok()?;
    let args = flags::parse(&argv).ok()?;
    Some(args.root_dir.unwrap_or_else(|| DEFAULT_ROOT_DIR.into()))
}

/// Which running kubelet a configuration was read from: its pid and start
/// time. Another value means kubelet restarted.
pub type ProcessId = (i32, u64);

/// Every source of kubelet's configuration, in kubedf's order: `/configz`
/// (when `--kubelet.endpoint` is set), the running kubelet, the file
/// `--kubelet.config` names, kubelet's defaults.
#[derive(Clone, Debug)]
pub struct Sources {
    pub host: Host,
    /// `--kubelet.config`.
    pub file: String,
    pub configz: Option<super::configz::Configz>,
}

/// What one read of the sources found.
#[derive(Debug)]
pub struct Reading {
    /// The configuration from the first source that had one.
    pub config: KubeletConfig,
    /// The running kubelet, if one was found.
    pub process: Option<ProcessId>,
    /// The sources before it that failed, each with its cause.
    pub passed_over: Vec<(ConfigSource, String)>,
}

impl Sources {
    /// Reads the sources in order. An error only when the last resort,
    /// `--kubelet.config`, exists and is invalid.
    pub async fn read(&self) -> Result<Reading, KubeletSourceError> {
        let mut passed_over = Vec::new();
        let host = self.host.clone();
        let process = tokio::task::spawn_blocking(move || find_kubelet(&host))
            .await
            .ok()
            .flatten();
        let process_id = process.as_ref().map(|p| (p.pid, p.start_time));
        if let Some(configz) = &self.configz {
            match configz.fetch().await {
                Ok(mut config) => {
                    // /configz has no root dir: the process's command line does.
                    config.root_dir = process.as_ref().and_then(|p| root_dir_of(&self.host, p));
                    return Ok(Reading {
                        config,
                        process: process_id,
                        passed_over,
                    });
                }
                Err(e) => passed_over.push((ConfigSource::Configz, e.to_string())),
            }
        }
        let host = self.host.clone();
        let file = self.file.clone();
        let read = tokio::task::spawn_blocking(move || {
            let mut passed = Vec::new();
            if let Some(process) = &process {
                match read_process(&host, process) {
                    Ok(config) => return (Ok(config), passed),
                    Err(e) => passed.push((ConfigSource::Process, e.to_string())),
                }
            }
            (read_file(&host, &file), passed)
        })
        .await;
        let (config, passed) = match read {
            Ok(done) => done,
            // The blocking task panicked: a bug, said as the error it is.
            Err(e) => (
                Err(KubeletSourceError::DistroConfig {
                    path: self.file.clone(),
                    message: format!("reading kubelet's configuration failed: {e}"),
                }),
                Vec::new(),
            ),
        };
        passed_over.extend(passed);
        Ok(Reading {
            config: config?,
            process: process_id,
            passed_over,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn only_command_lines_of_known_programs_are_parsed() {
        for (cmdline, want) in [
            (
                &b"/usr/bin/kubelet\0--config=/var/lib/kubelet/config.yaml\0"[..],
                true,
            ),
            (b"kubelet\0", true),
            (b"/usr/local/bin/k3s\0server\0", true),
            (b"rke2\0agent\0", true),
            (b"/usr/bin/containerd\0", false),
            (b"/usr/bin/kubelet-wrapper\0", false),
            (b"/opt/kubelet/bin/sh\0-c\0kubelet\0", false),
            (b"", false),
        ] {
            assert_eq!(
                may_be_kubelet(cmdline),
                want,
                "{:?}",
                String::from_utf8_lossy(cmdline)
            );
            // Never one that flavor_of would take.
            let argv: Vec<String> = cmdline
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            if flavor_of(&argv).is_some() {
                assert!(may_be_kubelet(cmdline), "{argv:?}");
            }
        }
    }

    #[test]
    fn flavors() {
        for (cmd, want) in [
            (
                &["/usr/bin/kubelet", "--config=/x"][..],
                Some(Flavor::Kubelet),
            ),
            (&["kubelet"], Some(Flavor::Kubelet)),
            (&["/usr/local/bin/k3s", "server"], Some(Flavor::K3s)),
            (
                &["/usr/local/bin/k3s", "--debug", "agent"],
                Some(Flavor::K3s),
            ),
            (&["/usr/local/bin/k3s", "kubectl", "get"], None),
            (&["/usr/local/bin/rke2", "agent"], Some(Flavor::Rke2)),
            (&["/usr/bin/kubelet-wrapper"], None),
            (&["/bin/sh", "-c", "kubelet"], None),
        ] {
            assert_eq!(flavor_of(&argv(cmd)), want, "{cmd:?}");
        }
    }

    /// `distro_config` over a host root holding `files`.
    fn k3s_config(files: &[(&str, &str)]) -> Result<(Option<String>, Vec<String>), String> {
        let root = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let p = root.path().join(path.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        let host = Host::new(root.path(), "/proc");
        distro_config(&host, "/etc/rancher/k3s/config.yaml").map_err(|e| e.to_string())
    }

    #[test]
    fn k3s_config_files_merge_as_k3s_merges_them() {
        let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // No file at all: nothing.
        assert_eq!(k3s_config(&[]), Ok((None, vec![])));
        // Drop-ins alone, by name (bytes: "10" before "9"), any case of
        // .yaml/.yml; `+` appends, a string is one item.
        assert_eq!(
            k3s_config(&[
                (
                    "/etc/rancher/k3s/config.yaml.d/9-b.YAML",
                    "kubelet-arg+: b=2\n"
                ),
                (
                    "/etc/rancher/k3s/config.yaml.d/10-a.yml",
                    "kubelet-arg: [a=1]\n"
                ),
                (
                    "/etc/rancher/k3s/config.yaml.d/11-c.yaml.bak",
                    "kubelet-arg: [c=3]\n"
                ),
            ]),
            Ok((None, args(&["a=1", "b=2"])))
        );
        // A later plain key replaces the list, even in the same file after
        // its `+` (the file's order, not the keys' sorted order).
        assert_eq!(
            k3s_config(&[
                (
                    "/etc/rancher/k3s/config.yaml",
                    "kubelet-arg: [a=1]\ndata-dir: /d1\n"
                ),
                (
                    "/etc/rancher/k3s/config.yaml.d/1.yaml",
                    "kubelet-arg+: [b=2]\nkubelet-arg: [c=3]\n"
                ),
                (
                    "/etc/rancher/k3s/config.yaml.d/2.yaml",
                    "kubelet-arg+: [d=4, 5]\ndata-dir: /d2\n"
                ),
            ]),
            Ok((Some("/d2".into()), args(&["c=3", "d=4", "5"])))
        );
        // A value that is no string names the file.
        let err =
            k3s_config(&[("/etc/rancher/k3s/config.yaml", "kubelet-arg: [{a: 1}]\n")]).unwrap_err();
        assert!(
            err.contains("/etc/rancher/k3s/config.yaml") && err.contains("kubelet-arg"),
            "{err}"
        );
        let err = k3s_config(&[("/etc/rancher/k3s/config.yaml.d/x.yaml", "- a\n")]).unwrap_err();
        assert!(
            err.contains("/etc/rancher/k3s/config.yaml.d/x.yaml"),
            "{err}"
        );
    }

    #[test]
    fn k3s_flags() {
        let (d, c, a) = distro_flags(&argv(&[
            "k3s",
            "agent",
            "-d",
            "/data/k3s",
            "--kubelet-arg=image-gc-high-threshold=70",
            "--kubelet-arg",
            "eviction-hard=nodefs.available<3%",
            "--config=/etc/k3s.yaml",
        ]));
        assert_eq!(d.as_deref(), Some("/data/k3s"));
        assert_eq!(c.as_deref(), Some("/etc/k3s.yaml"));
        assert_eq!(
            a,
            argv(&[
                "image-gc-high-threshold=70",
                "eviction-hard=nodefs.available<3%"
            ])
        );
    }

    #[test]
    fn a_symlinked_config_dir_is_resolved_in_the_host_root_and_walked_as_kubelet_walks_it() {
        let root = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        // The link's absolute target exists on this machine too, with
        // another file: read from there, it would be an escape.
        let target = elsewhere.path().join("dropins");
        std::fs::create_dir_all(&target).unwrap();
        std::fs::write(target.join("evil.conf"), "").unwrap();
        let inside = root.path().join(target.strip_prefix("/").unwrap());
        std::fs::create_dir_all(&inside).unwrap();
        std::fs::write(inside.join("good.conf"), "").unwrap();
        std::fs::create_dir_all(root.path().join("etc")).unwrap();
        std::os::unix::fs::symlink(&target, root.path().join("etc/kubelet.conf.d")).unwrap();
        let host = Host::new(root.path(), "/proc");
        // kubelet's filepath.WalkDir lstats its root: a symlink is not
        // walked into, and no drop-in is read ...
        assert_eq!(
            host.drop_in_files("/etc/kubelet.conf.d").unwrap(),
            Vec::<String>::new()
        );
        // ... unless a trailing slash makes lstat follow it. Its files are
        // those inside the host root.
        assert_eq!(
            host.drop_in_files("/etc/kubelet.conf.d/").unwrap(),
            ["/etc/kubelet.conf.d/good.conf"]
        );
        let doc = host
            .document("kubelet drop-in", "/etc/kubelet.conf.d/good.conf")
            .unwrap();
        assert_eq!(doc.text, "");
    }

    #[test]
    fn a_host_opens_its_root_once_for_all_its_clones() {
        let root = tempfile::tempdir().unwrap();
        let host = Host::new(root.path(), "/proc");
        let clone = host.clone();
        assert!(host.root.get().is_none(), "opened on first use");
        for path in ["/etc", "/var/lib/kubelet", "/"] {
            clone.host_file(path).unwrap();
            host.host_file(path).unwrap();
        }
        let opened = host.root.get().expect("opened");
        assert!(Arc::ptr_eq(opened, clone.root.get().unwrap()));
        assert_eq!(Arc::strong_count(opened), 1, "one HostRoot, no other");
        // A host root that cannot be opened is an error naming it, each time.
        let gone = Host::new("/nonexistent/kubedf-root", "/proc");
        for _ in 0..2 {
            let err = gone.host_file("/etc").unwrap_err().to_string();
            assert!(err.contains("/nonexistent/kubedf-root"), "{err}");
        }
        let shared = Arc::new(HostRoot::open(root.path()).unwrap());
        let given = Host::on(Arc::clone(&shared), root.path(), "/proc");
        given.host_file("/etc").unwrap();
        assert!(Arc::ptr_eq(given.root.get().unwrap(), &shared));
    }

    #[test]
    fn drop_ins_in_walk_order() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("etc/kubelet.conf.d");
        for f in [
            "9-b.conf",
            "10-a.conf",
            "a.conf",
            "sub/x.conf",
            "sub/0.conf",
            "a/z.conf",
            "README",
            "x.conf.bak",
            ".conf",
        ] {
            let p = dir.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "").unwrap();
        }
        let host = Host::new(root.path(), "/proc");
        let files = host.drop_in_files("/etc/kubelet.conf.d/").unwrap();
        let d = "/etc/kubelet.conf.d";
        assert_eq!(
            files,
            [
                ".conf",
                "10-a.conf",
                "9-b.conf",
                "a/z.conf",
                "a.conf",
                "sub/0.conf",
                "sub/x.conf"
            ]
            .map(|f| format!("{d}/{f}"))
        );
        let err = host.drop_in_files("/nonexistent").unwrap_err().to_string();
        assert!(err.contains("/nonexistent"), "{err}");
    }
}
