//! kubelet's effective configuration, merged the way kubelet's
//! `cmd/kubelet/app/server.go` merges it at start (facts §16). Pure code:
//! the caller reads the files and hands their text in.
//!
//! 1. Built-in defaults.
//! 2. The `--config` file (`loadConfigFile`): an absent `evictionHard`
//!    becomes the Linux defaults; a partial one stays partial unless this
//!    file sets `mergeDefaultEvictionSettings: true`, which adds each missing
//!    default signal. Only this step fills defaults.
//! 3. The `--config-dir` drop-ins (`mergeKubeletConfigurations`), in
//!    `filepath.WalkDir` order, each a JSON merge patch (RFC 7386) over the
//!    configuration so far: maps merge key by key, anything else is
//!    replaced. Each must say `apiVersion: kubelet.config.k8s.io/v1beta1` and
//!    `kind: KubeletConfiguration`.
//! 4. Every command-line flag ([`super::flags`]).
//!
//! Validation ([`KubeletConfig::from_tree`]) runs on the result only.
//!
//! One edge of kubelet's merge that RFC 7386 alone gets wrong: kubelet
//! unmarshals the merged JSON back into the configuration it had (Go's
//! `json.Unmarshal` into an existing struct and its maps), so a `null` in a
//! drop-in, which the patch turns into a removed key, leaves the value as it
//! was. Nulls are therefore dropped from each drop-in before it is applied.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use thiserror::Error;

use super::config::{AbsentEvictionHard, ConfigError, KubeletConfig, parse_tree, raw_config};
use super::eviction::DEFAULT_EVICTION_HARD;
use super::flags::{FlagError, Setting, apply};

/// The `apiVersion` and `kind` every drop-in must carry.
pub const API_VERSION: &str = "kubelet.config.k8s.io/v1beta1";
pub const KIND: &str = "KubeletConfiguration";

#[derive(Debug, Error)]
pub enum EffectiveError {
    /// A file (the `--config` file or a drop-in) kubelet would refuse.
    #[error(transparent)]
    File(#[from] ConfigError),
    #[error("kubelet config drop-in {path}: {field} must be {want:?}, found {found}")]
    DropInType {
        path: PathBuf,
        field: &'static str,
        want: &'static str,
        found: String,
    },
    #[error("kubelet config drop-in {path} was empty")]
    EmptyDropIn { path: PathBuf },
    #[error("kubelet flag: {0}")]
    Flag(#[from] FlagError),
}

/// A file's host path (as named in errors) and its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Document {
    pub path: String,
    pub text: String,
}

/// What kubelet read at start, in the order it applies them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Layers {
    /// The `--config` file, when the command line names one.
    pub config: Option<Document>,
    /// The `.conf` files of `--config-dir`, in `filepath.WalkDir` order.
    pub drop_ins: Vec<Document>,
    /// The command line's flags, in order.
    pub flags: Vec<(Setting, String)>,
}

/// Merges `layers` into one configuration object (v1beta1 field names).
pub fn merge(layers: &Layers) -> Result<Map<String, Value>, EffectiveError> {
    let mut obj = match &layers.config {
        None => Map::new(),
        Some(doc) => {
            let path = Path::new(&doc.path);
            if doc.text.is_empty() {
                return Err(ConfigError::Empty { path: path.into() }.into());
            }
            let tree = parse_tree(&doc.text, path)?.unwrap_or_default();
            // Types checked now, so that an error names this file; values
            // are validated on the result only, as kubelet does.
            check_kind(raw_config(tree.clone(), path)?.kind.as_deref(), path)?;
            tree
        }
    };
    fill_eviction_hard_defaults(&mut obj);
    for doc in &layers.drop_ins {
        let patch = drop_in(doc)?;
        let mut merged = Value::Object(std::mem::take(&mut obj));
        json_patch::merge(&mut merged, &Value::Object(patch));
        if let Value::Object(map) = merged {
            obj = map;
        }
    }
    apply(&layers.flags, &mut obj)?;
    // Applied in step 2 already; in a drop-in or on the result it changes
    // nothing in kubelet.
    obj.remove("mergeDefaultEvictionSettings");
    Ok(obj)
}

/// kubelet's effective configuration from `layers`, validated; `origin`
/// names it in errors about the result.
pub fn effective(layers: &Layers, origin: &Path) -> Result<KubeletConfig, EffectiveError> {
    let obj = merge(layers)?;
    Ok(KubeletConfig::from_tree(
        obj,
        origin,
        AbsentEvictionHard::Empty,
    )?)
}

/// `loadConfigFile`'s eviction defaults (and, with no `--config`, the
/// built-in ones): no `evictionHard` means the Linux defaults;
/// `mergeDefaultEvictionSettings: true` adds the default of each signal
/// the file does not name.
fn fill_eviction_hard_defaults(obj: &mut Map<String, Value>) {
    let merge = obj
        .get("mergeDefaultEvictionSettings")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    match obj.get_mut("evictionHard") {
        Some(Value::Object(map)) => {
            if merge {
                for (signal, value) in DEFAULT_EVICTION_HARD {
                    map.entry(signal)
                        .or_insert_with(|| Value::String(value.into()));
                }
            }
        }
        // A null is Go's nil map: the defaults apply.
        None | Some(Value::Null) => {
            let defaults = DEFAULT_EVICTION_HARD
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
                .collect();
            obj.insert("evictionHard".into(), Value::Object(defaults));
        }
        // Wrong types were refused when the file was checked.
        Some(_) => {}
    }
}

/// kubelet decodes only a `KubeletConfiguration`.
fn check_kind(kind: Option<&str>, path: &Path) -> Result<(), ConfigError> {
    match kind {
        Some(kind) if kind != KIND => Err(ConfigError::Field {
            path: path.into(),
            field: "kind".into(),
            message: format!("expected {KIND}, found {kind:?}"),
        }),
        _ => Ok(()),
    }
}

/// A drop-in as a merge patch: checked as kubelet checks it, nulls dropped.
fn drop_in(doc: &Document) -> Result<Map<String, Value>, EffectiveError> {
    let path = Path::new(&doc.path);
    let Some(tree) = parse_tree(&doc.text, path)? else {
        return Err(EffectiveError::EmptyDropIn { path: path.into() });
    };
    for (field, want) in [("apiVersion", API_VERSION), ("kind", KIND)] {
        match tree.get(field) {
            Some(Value::String(s)) if s == want => {}
            other => {
                return Err(EffectiveError::DropInType {
                    path: path.into(),
                    field,
                    want,
                    found: other.map_or_else(|| "nothing".into(), |v| format!("{v}")),
                });
            }
        }
    }
    let mut patch = Value::Object(tree);
    drop_nulls(&mut patch);
    let Value::Object(patch) = patch else {
        return Ok(Map::new());
    };
    // The fields kubedf reads must have their types (a null is no value).
    raw_config(patch.clone(), path)?;
    Ok(patch)
}

fn drop_nulls(value: &mut Value) {
    if let Value::Object(map) = value {
        map.retain(|_, v| !v.is_null());
        for v in map.values_mut() {
            drop_nulls(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::config::ConfigSource;
    use super::super::eviction::{Signal, ThresholdValue};
    use super::*;

    fn doc(path: &str, text: &str) -> Document {
        Document {
            path: path.into(),
            text: text.into(),
        }
    }

    fn head() -> String {
        format!("apiVersion: {API_VERSION}\nkind: {KIND}\n")
    }

    fn hard(cfg: &KubeletConfig) -> Vec<(Signal, ThresholdValue)> {
        cfg.eviction.hard.iter().map(|(s, v)| (*s, *v)).collect()
    }

    fn origin() -> &'static Path {
        Path::new("kubelet pid 1")
    }

    #[test]
    fn nothing_at_all_is_kubelets_defaults() {
        let cfg = effective(&Layers::default(), origin()).unwrap();
        let defaults = KubeletConfig::defaults("/x".into());
        assert_eq!(cfg.eviction, defaults.eviction);
        assert_eq!(cfg.image_gc, defaults.image_gc);
        assert_eq!(cfg.source, ConfigSource::File, "callers set the source");
    }

    #[test]
    fn a_partial_map_stays_partial_unless_the_file_merges_defaults() {
        let partial = Layers {
            config: Some(doc(
                "/etc/kubernetes/kubelet/config.json",
                r#"{"evictionHard": {"memory.available": "100Mi", "nodefs.available": "10%", "nodefs.inodesFree": "5%"}}"#,
            )),
            ..Layers::default()
        };
        let cfg = effective(&partial, origin()).unwrap();
        assert_eq!(cfg.eviction.hard.len(), 2);
        assert!(!cfg.eviction.hard.contains_key(&Signal::ImageFsAvailable));
        assert_eq!(
            cfg.eviction.dropped_defaults,
            vec![Signal::ImageFsAvailable, Signal::ImageFsInodesFree]
        );
        let merged = Layers {
            config: Some(doc(
                "/c",
                "mergeDefaultEvictionSettings: true\nevictionHard:\n  nodefs.available: 7%\n",
            )),
            ..Layers::default()
        };
        let cfg = effective(&merged, origin()).unwrap();
        assert_eq!(
            cfg.eviction.hard[&Signal::NodeFsAvailable],
            ThresholdValue::Percentage(0.07)
        );
        assert_eq!(
            cfg.eviction.hard[&Signal::ImageFsAvailable],
            ThresholdValue::Percentage(0.15)
        );
        // In a drop-in the setting has no effect: the drop-in's key merges
        // into the defaults the file already has.
        let in_drop_in = Layers {
            config: Some(doc("/c", "evictionHard:\n  nodefs.available: 7%\n")),
            drop_ins: vec![doc(
                "/d/10.conf",
                &format!("{}mergeDefaultEvictionSettings: true\n", head()),
            )],
            ..Layers::default()
        };
        assert_eq!(
            effective(&in_drop_in, origin())
                .unwrap()
                .eviction
                .hard
                .len(),
            1
        );
    }

    #[test]
    fn drop_ins_merge_key_by_key_in_order_and_flags_win() {
        let layers = Layers {
            config: Some(doc(
                "/etc/kubernetes/kubelet.conf",
                "imageGCHighThresholdPercent: 90\nimageGCLowThresholdPercent: 70\n",
            )),
            drop_ins: vec![
                doc(
                    "/etc/openshift/kubelet.conf.d/10-a.conf",
                    &format!(
                        "{}evictionHard:\n  imagefs.available: 20%\nimageGCHighThresholdPercent: 80\n",
                        head()
                    ),
                ),
                doc(
                    "/etc/openshift/kubelet.conf.d/9-b.conf",
                    &format!(
                        r#"{{"apiVersion": "{API_VERSION}", "kind": "{KIND}", "imageGCHighThresholdPercent": 75, "evictionHard": {{"nodefs.available": null}}}}"#
                    ),
                ),
            ],
            flags: vec![(Setting::ImageGcLowThreshold, "60".into())],
        };
        let cfg = effective(&layers, origin()).unwrap();
        assert_eq!(cfg.image_gc.high_threshold_percent, 75);
        assert_eq!(cfg.image_gc.low_threshold_percent, 60);
        // Defaults, then 10-a's imagefs; 9-b's null keeps nodefs as it was.
        assert_eq!(
            hard(&cfg),
            vec![
                (Signal::NodeFsAvailable, ThresholdValue::Percentage(0.10)),
                (Signal::NodeFsInodesFree, ThresholdValue::Percentage(0.05)),
                (Signal::ImageFsAvailable, ThresholdValue::Percentage(0.20)),
                (Signal::ImageFsInodesFree, ThresholdValue::Percentage(0.05)),
            ]
        );
        let replaced = Layers {
            flags: vec![(Setting::EvictionHard, "imagefs.available<5%".into())],
            ..layers
        };
        assert_eq!(
            hard(&effective(&replaced, origin()).unwrap()),
            vec![(Signal::ImageFsAvailable, ThresholdValue::Percentage(0.05))]
        );
    }

    #[test]
    fn drop_ins_without_their_type_are_refused_naming_the_file() {
        for (text, want) in [
            ("imageGCHighThresholdPercent: 70\n", "apiVersion must be"),
            (
                "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: Pod\n",
                "kind must be \"KubeletConfiguration\", found \"Pod\"",
            ),
            ("", "was empty"),
            ("a: [unclosed\n", "not valid YAML"),
            (
                &format!("{}imageGCHighThresholdPercent: lots\n", head()),
                "field imageGCHighThresholdPercent",
            ),
        ] {
            let layers = Layers {
                drop_ins: vec![doc("/etc/kubelet.conf.d/50-x.conf", text)],
                ..Layers::default()
            };
            let err = effective(&layers, origin()).unwrap_err().to_string();
            assert!(err.contains("/etc/kubelet.conf.d/50-x.conf"), "{err}");
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn validation_runs_on_the_result_only() {
        // High 70 with the default low 80 is invalid on its own; the flag
        // makes the result valid, and kubelet validates only the result.
        let layers = Layers {
            config: Some(doc("/c", "imageGCHighThresholdPercent: 70\n")),
            flags: vec![(Setting::ImageGcLowThreshold, "60".into())],
            ..Layers::default()
        };
        let cfg = effective(&layers, origin()).unwrap();
        assert_eq!(cfg.image_gc.low_threshold_percent, 60);
        let layers = Layers {
            config: Some(doc("/c", "imageGCHighThresholdPercent: 90\n")),
            flags: vec![(Setting::ImageGcLowThreshold, "95".into())],
            ..Layers::default()
        };
        let err = effective(&layers, origin()).unwrap_err().to_string();
        assert!(err.contains("kubelet pid 1"), "{err}");
        assert!(err.contains("must be less than"), "{err}");
        let layers = Layers {
            config: Some(doc("/c", "kind: Pod\n")),
            ..Layers::default()
        };
        let err = effective(&layers, origin()).unwrap_err().to_string();
        assert!(err.contains("/c") && err.contains("field kind"), "{err}");
    }
}
