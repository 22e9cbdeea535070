//! The parts of kubelet's configuration file (`KubeletConfiguration`,
//! `kubelet.config.k8s.io/v1beta1`) that decide image GC and eviction.
//!
//! A missing file means kubelet's defaults. An unreadable or invalid file is
//! an error naming the file and the field, because guessing would report
//! thresholds the node does not have.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};
use thiserror::Error;

use super::duration::parse_go_duration;
use super::eviction::{EvictionConfig, EvictionStatements, SignalThresholds, ThresholdError};
use super::image_gc::ImageGcPolicy;
use crate::yaml::YamlError;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read kubelet config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// kubelet refuses an empty file too ("no configuration is an error").
    #[error("kubelet config file {path} was empty")]
    Empty { path: PathBuf },
    #[error("kubelet config {path} is not valid YAML: {message}")]
    Yaml { path: PathBuf, message: String },
    #[error("kubelet config {path}: field {field}: {message}")]
    Field {
        path: PathBuf,
        field: String,
        message: String,
    },
    #[error("kubelet config {path}: {source}")]
    Eviction {
        path: PathBuf,
        #[source]
        source: ThresholdError,
    },
}

/// The fields kubedf reads; every other field of the file is ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RawConfig {
    pub(crate) kind: Option<String>,
    #[serde(rename = "imageGCHighThresholdPercent")]
    image_gc_high_threshold_percent: Option<i32>,
    #[serde(rename = "imageGCLowThresholdPercent")]
    image_gc_low_threshold_percent: Option<i32>,
    eviction_hard: Option<HashMap<String, String>>,
    eviction_soft: Option<HashMap<String, String>>,
    eviction_soft_grace_period: Option<HashMap<String, String>>,
    eviction_minimum_reclaim: Option<HashMap<String, String>>,
    merge_default_eviction_settings: Option<bool>,
    pod_logs_dir: Option<String>,
    container_runtime_endpoint: Option<String>,
    volume_stats_agg_period: Option<String>,
}

/// kubelet's default `podLogsDir`.
pub const DEFAULT_POD_LOGS_DIR: &str = "/var/log/pods";

/// kubelet's default `containerRuntimeEndpoint` (v1beta1 defaults, 1.27+).
pub const DEFAULT_CONTAINER_RUNTIME_ENDPOINT: &str = "unix:///run/containerd/containerd.sock";

/// kubelet's default `volumeStatsAggPeriod`.
pub const DEFAULT_VOLUME_STATS_AGG_PERIOD: Duration = Duration::from_secs(60);

/// kubelet's default `--root-dir`.
pub const DEFAULT_ROOT_DIR: &str = "/var/lib/kubelet";

/// Where kubedf's view of the kubelet configuration came from, in the order
/// kubedf tries them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigSource {
    /// The running kubelet's `/configz`: its effective configuration.
    Configz,
    /// The running kubelet's command line, its `--config` file and its
    /// `--config-dir` drop-ins, merged as kubelet merges them.
    Process,
    /// The file `--kubelet.config` names.
    File,
    /// kubelet's defaults: nothing could be read.
    Defaults,
}

impl ConfigSource {
    /// The `source` label of `kubedf_kubelet_config_info`.
    pub fn name(self) -> &'static str {
        match self {
            ConfigSource::Configz => "configz",
            ConfigSource::Process => "process",
            ConfigSource::File => "file",
            ConfigSource::Defaults => "defaults",
        }
    }
}

/// What kubedf knows of the node's kubelet configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct KubeletConfig {
    /// Where it was read: the file (as given, before `--path.rootfs`), the
    /// process's `--config` file, or the `/configz` URL.
    pub path: PathBuf,
    /// False when nothing was read and kubelet's defaults apply.
    pub from_file: bool,
    pub source: ConfigSource,
    /// What was read, said in full (the process, its files and flags).
    pub origin: String,
    pub image_gc: ImageGcPolicy,
    pub eviction: EvictionConfig,
    /// `podLogsDir` (a host path): where container logs live, in
    /// `<namespace>_<pod>_<uid>/<container>/` directories.
    pub pod_logs_dir: String,
    /// `containerRuntimeEndpoint`, when the source says it (kubelet's
    /// default counts only when the source is the running kubelet).
    pub container_runtime_endpoint: Option<String>,
    /// `volumeStatsAggPeriod`, when the source says it; zero when kubelet
    /// does not compute volume stats (a period of 0 or less).
    pub volume_stats_agg_period: Option<Duration>,
    /// kubelet's `--root-dir`, when a kubelet process was found.
    pub root_dir: Option<String>,
}

/// What the headroom families need of a kubelet's configuration and
/// nothing else: its image GC thresholds and its disk and PID eviction
/// thresholds (232 bytes, no allocation; cluster mode keeps one per node).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HeadroomPolicy {
    pub image_gc: ImageGcPolicy,
    pub eviction: SignalThresholds,
}

/// Whether an absent `evictionHard` means kubelet's defaults (a file read
/// by `loadConfigFile`) or no thresholds (`/configz`, which omits an empty
/// map).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AbsentEvictionHard {
    Defaults,
    Empty,
}

impl KubeletConfig {
    /// What the headroom families need of it.
    pub fn headroom(&self) -> HeadroomPolicy {
        HeadroomPolicy {
            image_gc: self.image_gc,
            eviction: SignalThresholds::of(&self.eviction),
        }
    }

    /// kubelet's defaults, used when there is no configuration file.
    pub fn defaults(path: PathBuf) -> KubeletConfig {
        KubeletConfig {
            origin: format!("kubelet's defaults ({} not found)", path.display()),
            path,
            from_file: false,
            source: ConfigSource::Defaults,
            image_gc: ImageGcPolicy::default(),
            eviction: EvictionConfig::kubelet_defaults(),
            pod_logs_dir: DEFAULT_POD_LOGS_DIR.into(),
            container_runtime_endpoint: None,
            volume_stats_agg_period: None,
            root_dir: None,
        }
    }

    /// Reads `file` (the path on this machine); `shown` is the name errors use.
    /// Only a regular file of bounded size is read (see [`crate::yaml::read_file`]).
    pub fn load(file: &Path, shown: &Path) -> Result<KubeletConfig, ConfigError> {
        match crate::yaml::read_file(file) {
            Ok(text) if text.is_empty() => Err(ConfigError::Empty { path: shown.into() }),
            Ok(text) => KubeletConfig::parse(&text, shown),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Ok(KubeletConfig::defaults(shown.into()))
            }
            Err(source) => Err(ConfigError::Read {
                path: shown.into(),
                source,
            }),
        }
    }

    /// One configuration file on its own, as `--kubelet.config` names it.
    pub fn parse(text: &str, path: &Path) -> Result<KubeletConfig, ConfigError> {
        let tree = parse_tree(text, path)?.unwrap_or_default();
        KubeletConfig::from_tree(tree, path, AbsentEvictionHard::Defaults)
    }

    /// A configuration object (v1beta1 field names) checked and turned into
    /// kubedf's settings with kubelet's validation; `path` names it in
    /// errors. The result says [`ConfigSource::File`]; callers that read it
    /// elsewhere say so.
    pub fn from_tree(
        tree: Map<String, Value>,
        path: &Path,
        absent_hard: AbsentEvictionHard,
    ) -> Result<KubeletConfig, ConfigError> {
        let raw = raw_config(tree, path)?;
        KubeletConfig::from_raw(raw, path, absent_hard)
    }

    fn from_raw(
        raw: RawConfig,
        path: &Path,
        absent_hard: AbsentEvictionHard,
    ) -> Result<KubeletConfig, ConfigError> {
        let path_buf = || path.to_path_buf();
        let field_error = |field: &str, message: String| ConfigError::Field {
            path: path_buf(),
            field: field.into(),
            message,
        };
        if let Some(kind) = &raw.kind
            && kind != "KubeletConfiguration"
        {
            return Err(field_error(
                "kind",
                format!("expected KubeletConfiguration, found {kind:?}"),
            ));
        }
        let image_gc = ImageGcPolicy {
            high_threshold_percent: raw
                .image_gc_high_threshold_percent
                .unwrap_or(ImageGcPolicy::default().high_threshold_percent),
            low_threshold_percent: raw
                .image_gc_low_threshold_percent
                .unwrap_or(ImageGcPolicy::default().low_threshold_percent),
        };
        // kubelet's own validation of these two fields, in its words.
        for (field, flag, value) in [
            (
                "imageGCHighThresholdPercent",
                "--image-gc-high-threshold",
                image_gc.high_threshold_percent,
            ),
            (
                "imageGCLowThresholdPercent",
                "--image-gc-low-threshold",
                image_gc.low_threshold_percent,
            ),
        ] {
            if !(0..=100).contains(&value) {
                return Err(field_error(
                    field,
                    format!(
                        "invalid configuration: {field} ({flag}) {value} must be between 0 and 100, inclusive"
                    ),
                ));
            }
        }
        if image_gc.low_threshold_percent >= image_gc.high_threshold_percent {
            return Err(field_error(
                "imageGCLowThresholdPercent",
                format!(
                    "invalid configuration: imageGCLowThresholdPercent (--image-gc-low-threshold) {} must be less than imageGCHighThresholdPercent (--image-gc-high-threshold) {}",
                    image_gc.low_threshold_percent, image_gc.high_threshold_percent
                ),
            ));
        }
        let empty = HashMap::new();
        let hard = match (&raw.eviction_hard, absent_hard) {
            (Some(map), _) => Some(map),
            (None, AbsentEvictionHard::Defaults) => None,
            (None, AbsentEvictionHard::Empty) => Some(&empty),
        };
        let eviction = EvictionConfig::from_statements(EvictionStatements {
            hard,
            soft: raw.eviction_soft.as_ref(),
            soft_grace: raw.eviction_soft_grace_period.as_ref(),
            minimum_reclaim: raw.eviction_minimum_reclaim.as_ref(),
            merge_defaults: raw.merge_default_eviction_settings.unwrap_or(false),
        })
        .map_err(|source| ConfigError::Eviction {
            path: path_buf(),
            source,
        })?;
        let pod_logs_dir = raw
            .pod_logs_dir
            .unwrap_or_else(|| DEFAULT_POD_LOGS_DIR.into());
        // kubelet's own validation of podLogsDir.
        if !pod_logs_dir.starts_with('/') {
            return Err(field_error(
                "podLogsDir",
                format!("pod logs path {pod_logs_dir:?} must be absolute path"),
            ));
        }
        if !is_normalized(&pod_logs_dir) {
            return Err(field_error(
                "podLogsDir",
                format!("pod logs path {pod_logs_dir:?} must be normalized"),
            ));
        }
        let volume_stats_agg_period = match &raw.volume_stats_agg_period {
            None => None,
            Some(text) => {
                let nanos = parse_go_duration(text)
                    .map_err(|e| field_error("volumeStatsAggPeriod", e.to_string()))?;
                // kubelet's resource analyzer computes nothing for a period
                // of 0 or less.
                Some(Duration::from_nanos(u64::try_from(nanos).unwrap_or(0)))
            }
        };
        Ok(KubeletConfig {
            path: path_buf(),
            from_file: true,
            source: ConfigSource::File,
            origin: format!("file {}", path.display()),
            image_gc,
            eviction,
            pod_logs_dir,
            container_runtime_endpoint: raw.container_runtime_endpoint,
            volume_stats_agg_period,
            root_dir: None,
        })
    }
}

/// `text` as a tree (`None` when empty), errors naming `path`.
pub(crate) fn parse_tree(
    text: &str,
    path: &Path,
) -> Result<Option<Map<String, Value>>, ConfigError> {
    crate::yaml::tree(text).map_err(|e| yaml_error(e, path))
}

/// The fields kubedf reads, typed, errors naming `path` and the field.
pub(crate) fn raw_config(tree: Map<String, Value>, path: &Path) -> Result<RawConfig, ConfigError> {
    crate::yaml::from_tree(Value::Object(tree)).map_err(|e| yaml_error(e, path))
}

fn yaml_error(e: YamlError, path: &Path) -> ConfigError {
    match e {
        YamlError::Syntax(message) => ConfigError::Yaml {
            path: path.to_path_buf(),
            message,
        },
        YamlError::NotAMapping => ConfigError::Yaml {
            path: path.to_path_buf(),
            message: "expected a mapping (a KubeletConfiguration object) at the top level".into(),
        },
        YamlError::Field {
            path: field,
            message,
        } => ConfigError::Field {
            path: path.to_path_buf(),
            field,
            message,
        },
    }
}

/// Whether an absolute path equals Go's `filepath.Clean` of itself: no
/// empty, `.` or `..` components and no trailing slash (except "/").
fn is_normalized(path: &str) -> bool {
    path == "/"
        || path[1..]
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

#[cfg(test)]
mod tests {
    use super::super::eviction::{Signal, ThresholdValue};
    use super::*;

    fn parse(text: &str) -> Result<KubeletConfig, ConfigError> {
        KubeletConfig::parse(text, Path::new("/var/lib/kubelet/config.yaml"))
    }

    #[test]
    fn a_full_config() {
        let cfg = parse(
            r#"
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: systemd
imageGCHighThresholdPercent: 90
imageGCLowThresholdPercent: 70
evictionHard:
  memory.available: "200Mi"
  nodefs.available: "5%"
  nodefs.inodesFree: "4%"
  imagefs.available: "10Gi"
  imagefs.inodesFree: "5%"
  pid.available: "1000"
evictionSoft:
  nodefs.available: "15%"
evictionSoftGracePeriod:
  nodefs.available: "2m"
"#,
        )
        .unwrap();
        assert!(cfg.from_file);
        assert_eq!(cfg.image_gc.high_threshold_percent, 90);
        assert_eq!(cfg.image_gc.low_threshold_percent, 70);
        assert_eq!(
            cfg.eviction.hard[&Signal::ImageFsAvailable],
            ThresholdValue::Quantity(10 << 30)
        );
        assert_eq!(
            cfg.eviction.hard[&Signal::PidAvailable],
            ThresholdValue::Quantity(1000)
        );
        assert_eq!(
            cfg.eviction.soft[&Signal::NodeFsAvailable],
            ThresholdValue::Percentage(0.15)
        );
        assert!(cfg.eviction.dropped_defaults.is_empty());
    }

    #[test]
    fn minimal_files_mean_defaults() {
        for text in ["kind: KubeletConfiguration\n", "{}", "# nothing set\n"] {
            let cfg = parse(text).unwrap();
            assert_eq!(cfg.image_gc, ImageGcPolicy::default());
            assert_eq!(cfg.eviction, EvictionConfig::kubelet_defaults());
        }
    }

    #[test]
    fn a_partial_eviction_hard_is_reported_as_dropping_defaults() {
        let cfg = parse("evictionHard:\n  imagefs.available: 20%\n").unwrap();
        assert_eq!(cfg.eviction.hard.len(), 1);
        assert_eq!(cfg.eviction.dropped_defaults.len(), 3);
        let merged =
            parse("mergeDefaultEvictionSettings: true\nevictionHard:\n  imagefs.available: 20%\n")
                .unwrap();
        assert_eq!(merged.eviction.hard.len(), 4);
    }

    #[test]
    fn files_kubelet_would_not_read_are_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("config.yaml");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let empty = dir.path().join("empty.yaml");
        std::fs::write(&empty, "").unwrap();
        for (file, want) in [
            (
                Path::new("/dev/zero"),
                "not a regular file (a character device)",
            ),
            (fifo.as_path(), "not a regular file (a FIFO)"),
            (dir.path(), "not a regular file (a directory)"),
            (empty.as_path(), "was empty"),
        ] {
            let err = KubeletConfig::load(file, Path::new("/var/lib/kubelet/config.yaml"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("/var/lib/kubelet/config.yaml"), "{err}");
            assert!(err.contains(want), "{file:?}: {err}");
        }
    }

    #[test]
    fn a_missing_file_means_defaults() {
        let cfg = KubeletConfig::load(
            Path::new("/nonexistent/kubedf/config.yaml"),
            Path::new("/x"),
        )
        .unwrap();
        assert!(!cfg.from_file);
        assert_eq!(cfg.image_gc, ImageGcPolicy::default());
    }

    #[test]
    fn garbage_names_the_file_and_field() {
        let cases = [
            (
                "imageGCHighThresholdPercent: lots\n",
                "field imageGCHighThresholdPercent",
            ),
            ("evictionHard: [1, 2]\n", "field evictionHard"),
            ("imageGCHighThresholdPercent: 150\n", "between 0 and 100"),
            (
                "imageGCHighThresholdPercent: 70\nimageGCLowThresholdPercent: 75\n",
                "must be less than",
            ),
            ("kind: Pod\n", "field kind"),
            (
                "evictionHard:\n  disk.free: 1Gi\n",
                "unsupported eviction signal",
            ),
            (
                "evictionHard: {nodefs.available: \"\"}\n",
                "nodefs.available",
            ),
            ("- just\n- a list\n", "mapping"),
            ("key: [unclosed\n", "not valid YAML"),
            (
                "imageGCHighThresholdPercent: 50\nimageGCLowThresholdPercent: 50\n",
                "invalid configuration: imageGCLowThresholdPercent (--image-gc-low-threshold) 50 must be less than imageGCHighThresholdPercent (--image-gc-high-threshold) 50",
            ),
            (
                "imageGCLowThresholdPercent: -1\n",
                "(--image-gc-low-threshold) -1 must be between 0 and 100, inclusive",
            ),
            (
                "evictionHard:\n  nodefs.available: \"1Gi \"\n",
                "must match the regular expression",
            ),
            (
                "evictionHard:\n  nodefs.available: 0\n",
                "field evictionHard.nodefs.available",
            ),
            (
                "evictionSoft:\n  nodefs.available: 1Gi\nevictionSoftGracePeriod:\n  nodefs.available: abc\n",
                "time: invalid duration \"abc\"",
            ),
            (
                "evictionSoft:\n  nodefs.available: 1Gi\nevictionSoftGracePeriod:\n  nodefs.available: -1m\n",
                "must be a positive value",
            ),
            (
                "evictionSoftGracePeriod:\n  disk.free: 1m\n",
                "unsupported eviction signal disk.free",
            ),
            (
                "evictionMinimumReclaim:\n  nodefs.available: -1Gi\n",
                "negative eviction minimum reclaim",
            ),
        ];
        for (text, want) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(
                err.contains("/var/lib/kubelet/config.yaml"),
                "{text:?}: {err}"
            );
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn pod_logs_dir() {
        assert_eq!(
            parse("kind: KubeletConfiguration\n").unwrap().pod_logs_dir,
            "/var/log/pods"
        );
        assert_eq!(
            parse("podLogsDir: /data/pod-logs\n").unwrap().pod_logs_dir,
            "/data/pod-logs"
        );
        for bad in ["logs", "/var/log/../pods", "/var/log/pods/", "/var//log"] {
            let err = parse(&format!("podLogsDir: {bad:?}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("podLogsDir") && err.contains(bad), "{err}");
        }
    }
}
