//! kubelet's command line as pflag reads it (`cmd/kubelet/app/options`):
//! the flags that decide what kubedf reports, taken from a running kubelet's
//! argv (or from the `--kubelet-arg` flags of k3s), and applied over a
//! configuration the way kubelet's `kubeletConfigFlagPrecedence` re-parses
//! them: every flag given wins.
//!
//! What pflag does and kubedf follows:
//! - `--flag=value` and `--flag value` (a value flag takes the next argument
//!   even when it starts with `-`); `_` in a name reads as `-`
//!   (`WordSepNormalizeFunc`); `--` ends the flags.
//! - A repeated scalar flag: the last one wins.
//! - The map flags (`--eviction-hard`, `--eviction-soft`: `key<value`;
//!   `--eviction-soft-grace-period`, `--eviction-minimum-reclaim`:
//!   `key=value`) split on `,`, trim keys and values, skip empty items; the
//!   first occurrence replaces the configuration's whole map, later ones add
//!   to it (cliflag's `initialized`).
//!
//! Flags kubedf does not know are skipped. A running kubelet refuses
//! positional arguments, so an unknown flag followed by an argument that
//! does not start with `-` took that argument as its value.

use std::collections::BTreeSet;

use serde_json::{Map, Value};
use thiserror::Error;

use super::duration::parse_go_duration;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FlagError {
    #[error("flag needs an argument: --{0}")]
    MissingValue(String),
    /// pflag's wording: `invalid argument "x" for "--flag" flag: reason`.
    #[error("invalid argument {value:?} for \"--{flag}\" flag: {reason}")]
    Invalid {
        flag: &'static str,
        value: String,
        reason: String,
    },
}

/// A kubelet flag that sets a field of the `KubeletConfiguration`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Setting {
    EvictionHard,
    EvictionSoft,
    EvictionSoftGracePeriod,
    EvictionMinimumReclaim,
    ImageGcHighThreshold,
    ImageGcLowThreshold,
    ContainerRuntimeEndpoint,
    ImageServiceEndpoint,
    VolumeStatsAggPeriod,
}

/// How a flag's value is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ValueKind {
    /// cliflag's map types, with the separator between key and value.
    Map(char),
    Int32,
    Duration,
    Text,
}

impl Setting {
    pub const ALL: [Setting; 9] = [
        Setting::EvictionHard,
        Setting::EvictionSoft,
        Setting::EvictionSoftGracePeriod,
        Setting::EvictionMinimumReclaim,
        Setting::ImageGcHighThreshold,
        Setting::ImageGcLowThreshold,
        Setting::ContainerRuntimeEndpoint,
        Setting::ImageServiceEndpoint,
        Setting::VolumeStatsAggPeriod,
    ];

    /// The flag's name, without dashes.
    pub fn flag(self) -> &'static str {
        match self {
            Setting::EvictionHard => "eviction-hard",
            Setting::EvictionSoft => "eviction-soft",
            Setting::EvictionSoftGracePeriod => "eviction-soft-grace-period",
            Setting::EvictionMinimumReclaim => "eviction-minimum-reclaim",
            Setting::ImageGcHighThreshold => "image-gc-high-threshold",
            Setting::ImageGcLowThreshold => "image-gc-low-threshold",
            Setting::ContainerRuntimeEndpoint => "container-runtime-endpoint",
            Setting::ImageServiceEndpoint => "image-service-endpoint",
            Setting::VolumeStatsAggPeriod => "volume-stats-agg-period",
        }
    }

    /// The `KubeletConfiguration` (v1beta1) field the flag sets.
    pub fn field(self) -> &'static str {
        match self {
            Setting::EvictionHard => "evictionHard",
            Setting::EvictionSoft => "evictionSoft",
            Setting::EvictionSoftGracePeriod => "evictionSoftGracePeriod",
            Setting::EvictionMinimumReclaim => "evictionMinimumReclaim",
            Setting::ImageGcHighThreshold => "imageGCHighThresholdPercent",
            Setting::ImageGcLowThreshold => "imageGCLowThresholdPercent",
            Setting::ContainerRuntimeEndpoint => "containerRuntimeEndpoint",
            Setting::ImageServiceEndpoint => "imageServiceEndpoint",
            Setting::VolumeStatsAggPeriod => "volumeStatsAggPeriod",
        }
    }

    fn kind(self) -> ValueKind {
        match self {
            Setting::EvictionHard | Setting::EvictionSoft => ValueKind::Map('<'),
            Setting::EvictionSoftGracePeriod | Setting::EvictionMinimumReclaim => {
                ValueKind::Map('=')
            }
            Setting::ImageGcHighThreshold | Setting::ImageGcLowThreshold => ValueKind::Int32,
            Setting::VolumeStatsAggPeriod => ValueKind::Duration,
            Setting::ContainerRuntimeEndpoint | Setting::ImageServiceEndpoint => ValueKind::Text,
        }
    }

    fn from_flag(name: &str) -> Option<Setting> {
        Setting::ALL.into_iter().find(|s| s.flag() == name)
    }
}

/// What a kubelet command line says, as far as kubedf is concerned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KubeletArgs {
    /// `--config`: the configuration file.
    pub config: Option<String>,
    /// `--config-dir`: the drop-in directory.
    pub config_dir: Option<String>,
    /// `--root-dir` (a `KubeletFlags` field, not in the configuration, so
    /// `/configz` does not have it).
    pub root_dir: Option<String>,
    /// Every flag that sets a configuration field, in command-line order.
    pub settings: Vec<(Setting, String)>,
}

/// A flag as written: its normalised name and its value, if it had one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawFlag {
    pub name: String,
    pub value: Option<String>,
}

/// Whether kubedf knows `name` as a flag that takes a value.
fn takes_value(name: &str) -> bool {
    matches!(name, "config" | "config-dir" | "root-dir") || Setting::from_flag(name).is_some()
}

/// Splits `args` (argv without argv\[0\]) into flags as pflag does.
pub fn split(args: &[String]) -> Result<Vec<RawFlag>, FlagError> {
    let mut out = Vec::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        if arg == "--" {
            break;
        }
        let Some(body) = arg
            .strip_prefix("--")
            .or_else(|| arg.strip_prefix('-').filter(|b| !b.is_empty()))
        else {
            // A positional argument: kubelet would have refused to start.
            continue;
        };
        // pflag's WordSepNormalizeFunc: `_` and `-` are the same.
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n.replace('_', "-"), Some(v.to_owned())),
            None => (body.replace('_', "-"), None),
        };
        let value = match value {
            Some(v) => Some(v),
            None if takes_value(&name) => match rest.next() {
                Some(v) => Some(v.clone()),
                None => return Err(FlagError::MissingValue(name)),
            },
            // An unknown flag: the next argument is its value unless it is
            // another flag (see the module doc).
            None => match rest.as_slice().first() {
                Some(next) if !next.starts_with('-') => rest.next().cloned(),
                _ => None,
            },
        };
        out.push(RawFlag { name, value });
    }
    Ok(out)
}

/// Reads a kubelet command line (argv without argv\[0\]).
pub fn parse(args: &[String]) -> Result<KubeletArgs, FlagError> {
    let mut out = KubeletArgs::default();
    for flag in split(args)? {
        let value = flag.value.unwrap_or_default();
        match flag.name.as_str() {
            "config" => out.config = Some(value),
            "config-dir" => out.config_dir = Some(value),
            "root-dir" => out.root_dir = Some(value),
            name => {
                if let Some(setting) = Setting::from_flag(name) {
                    out.settings.push((setting, value));
                }
            }
        }
    }
    Ok(out)
}

/// Applies `settings` over a configuration (v1beta1 field names), as
/// kubelet's flag precedence does. Each value is checked as pflag checks it.
pub fn apply(
    settings: &[(Setting, String)],
    obj: &mut Map<String, Value>,
) -> Result<(), FlagError> {
    let mut initialized = BTreeSet::new();
    for &(setting, ref value) in settings {
        let invalid = |reason: String| FlagError::Invalid {
            flag: setting.flag(),
            value: value.clone(),
            reason,
        };
        let field = setting.field();
        match setting.kind() {
            ValueKind::Map(sep) => {
                if initialized.insert(setting) || !obj.get(field).is_some_and(Value::is_object) {
                    obj.insert(field.into(), Value::Object(Map::new()));
                }
                let pairs = parse_pairs(value, sep).map_err(invalid)?;
                if let Some(Value::Object(map)) = obj.get_mut(field) {
                    for (k, v) in pairs {
                        map.insert(k, Value::String(v));
                    }
                }
            }
            ValueKind::Int32 => {
                let n = parse_go_int32(value).map_err(invalid)?;
                obj.insert(field.into(), Value::from(n));
            }
            ValueKind::Duration => {
                parse_go_duration(value).map_err(|e| invalid(e.to_string()))?;
                obj.insert(field.into(), Value::String(value.clone()));
            }
            ValueKind::Text => {
                obj.insert(field.into(), Value::String(value.clone()));
            }
        }
    }
    Ok(())
}

/// cliflag's map `Set`: comma-separated `key<sep>value` items, empty items
/// skipped, key and value trimmed.
fn parse_pairs(value: &str, sep: char) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for item in value.split(',') {
        if item.is_empty() {
            continue;
        }
        let (k, v) = item
            .split_once(sep)
            .ok_or_else(|| format!("malformed pair, expect string{sep}string"))?;
        out.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    Ok(out)
}

/// Go's `strconv.ParseInt(s, 0, 32)`, as pflag's Int32 flags use it: a
/// sign, then decimal, `0x`, `0o`, `0b` or a leading-`0` octal number,
/// with `_` allowed between digits.
fn parse_go_int32(s: &str) -> Result<i32, String> {
    let syntax = || format!("strconv.ParseInt: parsing {s:?}: invalid syntax");
    let (negative, body) = match s.strip_prefix(['+', '-']) {
        Some(rest) => (s.starts_with('-'), rest),
        None => (false, s),
    };
    let lower = body.to_ascii_lowercase();
    let (radix, digits) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d)
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, &lower[1..])
    } else {
        (10, lower.as_str())
    };
    // Go allows underscores only between digits (and after a base prefix).
    let prefixed = radix != 10;
    if digits.is_empty()
        || digits.ends_with('_')
        || digits.contains("__")
        || (digits.starts_with('_') && !prefixed)
    {
        return Err(syntax());
    }
    let clean: String = digits.chars().filter(|&c| c != '_').collect();
    if clean.is_empty() || !clean.chars().all(|c| c.is_digit(radix)) {
        return Err(syntax());
    }
    let magnitude = u64::from_str_radix(&clean, radix).unwrap_or(u64::MAX);
    let value = if negative {
        -(i128::from(magnitude))
    } else {
        i128::from(magnitude)
    };
    i32::try_from(value).map_err(|_| format!("strconv.ParseInt: parsing {s:?}: value out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn both_forms_and_the_last_one_wins() {
        let a = parse(&args(&[
            "--config=/var/lib/kubelet/config.yaml",
            "--root-dir",
            "/var/lib/k0s/kubelet",
            "--image-gc-high-threshold",
            "70",
            "--image_gc_high_threshold=75",
            "--config",
            "/etc/kubernetes/kubelet.conf",
        ]))
        .unwrap();
        assert_eq!(a.config.as_deref(), Some("/etc/kubernetes/kubelet.conf"));
        assert_eq!(a.root_dir.as_deref(), Some("/var/lib/k0s/kubelet"));
        let mut obj = Map::new();
        apply(&a.settings, &mut obj).unwrap();
        assert_eq!(obj["imageGCHighThresholdPercent"], 75);
    }

    #[test]
    fn unknown_flags_are_skipped_with_their_values() {
        let a = parse(&args(&[
            "--node-labels",
            "a=b",
            "--fail-swap-on",
            "--v=2",
            "-v",
            "4",
            "--cgroup-driver",
            "systemd",
            "--eviction-hard=nodefs.available<5%",
            "--",
            "--image-gc-high-threshold=1",
        ]))
        .unwrap();
        assert_eq!(
            a.settings,
            vec![(Setting::EvictionHard, "nodefs.available<5%".to_owned())]
        );
        // A value flag takes the next argument even when it looks like a flag.
        let a = parse(&args(&["--root-dir", "--x"])).unwrap();
        assert_eq!(a.root_dir.as_deref(), Some("--x"));
        assert_eq!(
            parse(&args(&["--config"])),
            Err(FlagError::MissingValue("config".into()))
        );
    }

    #[test]
    fn map_flags_replace_the_map_then_accumulate() {
        let mut obj = Map::new();
        obj.insert(
            "evictionHard".into(),
            serde_json::json!({"memory.available": "100Mi", "imagefs.available": "15%"}),
        );
        let settings = vec![
            (
                Setting::EvictionHard,
                "nodefs.available<10%, nodefs.inodesFree < 5%,".to_owned(),
            ),
            (Setting::EvictionHard, "nodefs.available<7%".to_owned()),
            (
                Setting::EvictionMinimumReclaim,
                "imagefs.available=10%".to_owned(),
            ),
        ];
        apply(&settings, &mut obj).unwrap();
        assert_eq!(
            obj["evictionHard"],
            serde_json::json!({"nodefs.available": "7%", "nodefs.inodesFree": "5%"})
        );
        assert_eq!(
            obj["evictionMinimumReclaim"],
            serde_json::json!({"imagefs.available": "10%"})
        );
        // An empty --eviction-hard empties the map.
        apply(&[(Setting::EvictionHard, String::new())], &mut obj).unwrap();
        assert_eq!(obj["evictionHard"], serde_json::json!({}));
    }

    #[test]
    fn bad_values_are_refused_in_pflags_words() {
        let mut obj = Map::new();
        for (setting, value, want) in [
            (
                Setting::EvictionHard,
                "nodefs.available=5%",
                "invalid argument \"nodefs.available=5%\" for \"--eviction-hard\" flag: malformed pair, expect string<string",
            ),
            (
                Setting::ImageGcHighThreshold,
                "high",
                "invalid argument \"high\" for \"--image-gc-high-threshold\" flag: strconv.ParseInt: parsing \"high\": invalid syntax",
            ),
            (
                Setting::ImageGcLowThreshold,
                "3000000000",
                "value out of range",
            ),
            (
                Setting::VolumeStatsAggPeriod,
                "1",
                "time: missing unit in duration \"1\"",
            ),
        ] {
            let err = apply(&[(setting, value.to_owned())], &mut obj)
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{err}");
        }
    }

    #[test]
    fn go_integers() {
        for (s, want) in [
            ("85", Some(85)),
            ("+85", Some(85)),
            ("-1", Some(-1)),
            ("0x55", Some(85)),
            ("0125", Some(85)),
            ("0o125", Some(85)),
            ("0b1010101", Some(85)),
            ("8_5", Some(85)),
            ("0x_55", Some(85)),
            ("0", Some(0)),
            ("", None),
            ("_85", None),
            ("85_", None),
            ("8__5", None),
            ("089", None),
            ("85.0", None),
            (" 85", None),
            ("2147483648", None),
            ("-2147483648", Some(i32::MIN)),
        ] {
            assert_eq!(parse_go_int32(s).ok(), want, "{s:?}");
        }
    }
}
