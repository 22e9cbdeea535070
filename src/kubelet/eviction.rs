//! kubelet's eviction signals and thresholds for disks and PIDs: which signals
//! exist, how `evictionHard` / `evictionSoft` statements are parsed, merged
//! with the Linux defaults, and resolved against a signal's capacity.
//!
//! Faithful to kubelet down to its float32 percentages: a `10%` threshold on a
//! 21462233088-byte filesystem is 2146223340 bytes in kubelet, not 2146223308.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use thiserror::Error;

use super::duration::{DurationError, parse_go_duration};
use super::quantity::{QuantityError, parse_quantity};

/// The disk and PID signals kubedf reports. Memory signals are accepted in the
/// configuration but not reported: kubedf is about running out of disk and PIDs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Signal {
    NodeFsAvailable,
    NodeFsInodesFree,
    ImageFsAvailable,
    ImageFsInodesFree,
    ContainerFsAvailable,
    ContainerFsInodesFree,
    PidAvailable,
}

/// The unit a signal is measured in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignalUnit {
    Bytes,
    Inodes,
    Pids,
}

impl Signal {
    pub const ALL: [Signal; 7] = [
        Signal::NodeFsAvailable,
        Signal::NodeFsInodesFree,
        Signal::ImageFsAvailable,
        Signal::ImageFsInodesFree,
        Signal::ContainerFsAvailable,
        Signal::ContainerFsInodesFree,
        Signal::PidAvailable,
    ];

    /// kubelet's name for the signal.
    pub fn name(self) -> &'static str {
        match self {
            Signal::NodeFsAvailable => "nodefs.available",
            Signal::NodeFsInodesFree => "nodefs.inodesFree",
            Signal::ImageFsAvailable => "imagefs.available",
            Signal::ImageFsInodesFree => "imagefs.inodesFree",
            Signal::ContainerFsAvailable => "containerfs.available",
            Signal::ContainerFsInodesFree => "containerfs.inodesFree",
            Signal::PidAvailable => "pid.available",
        }
    }

    pub fn unit(self) -> SignalUnit {
        match self {
            Signal::NodeFsAvailable | Signal::ImageFsAvailable | Signal::ContainerFsAvailable => {
                SignalUnit::Bytes
            }
            Signal::NodeFsInodesFree
            | Signal::ImageFsInodesFree
            | Signal::ContainerFsInodesFree => SignalUnit::Inodes,
            Signal::PidAvailable => SignalUnit::Pids,
        }
    }

    /// Where the signal is in [`Signal::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    fn from_name(name: &str) -> Option<Signal> {
        Signal::ALL.into_iter().find(|s| s.name() == name)
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Signals kubelet accepts that kubedf does not report.
const OTHER_VALID_SIGNALS: [&str; 2] = ["memory.available", "allocatableMemory.available"];

/// kubelet's Linux defaults for `evictionHard`, as (signal, statement).
pub const DEFAULT_EVICTION_HARD: [(&str, &str); 5] = [
    ("memory.available", "100Mi"),
    ("nodefs.available", "10%"),
    ("nodefs.inodesFree", "5%"),
    ("imagefs.available", "15%"),
    ("imagefs.inodesFree", "5%"),
];

/// A threshold as written: a quantity, or a fraction of capacity.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ThresholdValue {
    Quantity(i64),
    /// kubelet keeps percentages as float32 fractions (10% is 0.1f32).
    Percentage(f32),
}

impl ThresholdValue {
    /// The threshold in the signal's own unit, as kubelet's
    /// `GetThresholdQuantity`: `int64(float64(capacity) * float64(percentage))`.
    pub fn resolve(self, capacity: i64) -> i64 {
        match self {
            ThresholdValue::Quantity(q) => q,
            // `as` truncates toward zero like Go's int64() conversion.
            ThresholdValue::Percentage(p) => (capacity as f64 * f64::from(p)) as i64,
        }
    }
}

impl fmt::Display for ThresholdValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ThresholdValue::Quantity(q) => write!(f, "{q}"),
            ThresholdValue::Percentage(p) => write!(f, "{}%", p * 100.0),
        }
    }
}

/// Refusals of kubelet's `ParseThresholdConfig`, in kubelet's words, each
/// naming the signal and the value.
#[derive(Debug, Error, PartialEq)]
pub enum ThresholdError {
    #[error("unsupported eviction signal {0}")]
    UnsupportedSignal(String),
    #[error(
        "eviction threshold {signal} has an invalid percentage {value:?}: strconv.ParseFloat: parsing {number:?}: {reason}"
    )]
    BadPercentage {
        signal: String,
        value: String,
        number: String,
        reason: &'static str,
    },
    #[error("eviction percentage threshold {signal} must be >= 0%: {value}")]
    PercentageBelowZero { signal: String, value: String },
    #[error("eviction percentage threshold {signal} must be <= 100%: {value}")]
    PercentageAboveHundred { signal: String, value: String },
    #[error("eviction threshold {signal} has an invalid quantity: {source}")]
    BadQuantity {
        signal: String,
        #[source]
        source: QuantityError,
    },
    #[error("eviction threshold {signal} must be positive: {value}")]
    NotPositive { signal: String, value: String },
    #[error("grace period must be specified for the soft eviction threshold {0}")]
    MissingGracePeriod(String),
    #[error("evictionSoftGracePeriod {signal}: {source}")]
    BadGracePeriod {
        signal: String,
        #[source]
        source: DurationError,
    },
    #[error(
        "invalid eviction grace period specified: {value}, must be a positive value (evictionSoftGracePeriod {signal})"
    )]
    NegativeGracePeriod { signal: String, value: String },
    #[error("eviction percentage minimum reclaim {signal} must be positive: {value}")]
    MinimumReclaimNotPositive { signal: String, value: String },
    #[error("negative eviction minimum reclaim specified for {signal}: {value}")]
    MinimumReclaimNegative { signal: String, value: String },
}

/// Resolved disk and PID thresholds of one kind (hard or soft).
pub type Thresholds = BTreeMap<Signal, ThresholdValue>;

/// Whether kubelet knows the signal (`validSignal`).
fn check_signal(signal: &str) -> Result<Option<Signal>, ThresholdError> {
    let known = Signal::from_name(signal);
    if known.is_none() && !OTHER_VALID_SIGNALS.contains(&signal) {
        return Err(ThresholdError::UnsupportedSignal(signal.to_owned()));
    }
    Ok(known)
}

/// kubelet's `parsePercentage`: every trailing `%` trimmed, then Go's
/// `strconv.ParseFloat(s, 32)`, then `float32(value) / 100`.
fn parse_percentage(signal: &str, value: &str) -> Result<f32, ThresholdError> {
    let number = value.trim_end_matches('%');
    let bad = |reason| ThresholdError::BadPercentage {
        signal: signal.to_owned(),
        value: value.to_owned(),
        number: number.to_owned(),
        reason,
    };
    let unsigned = number.strip_prefix(['+', '-']).unwrap_or(number);
    let spelled_special = ["inf", "infinity", "nan"]
        .iter()
        .any(|w| unsigned.eq_ignore_ascii_case(w));
    // Rust's float syntax is Go's minus hex floats; Go refuses a signed NaN.
    if (unsigned.eq_ignore_ascii_case("nan") && unsigned.len() != number.len())
        || unsigned.starts_with(['i', 'I', 'n', 'N']) && !spelled_special
    {
        return Err(bad("invalid syntax"));
    }
    let percent: f32 = number.parse().map_err(|_| bad("invalid syntax"))?;
    // Go returns ErrRange where a finite number overflows float32; an
    // explicit Inf parses and is refused below as above 100%.
    if percent.is_infinite() && !spelled_special {
        return Err(bad("value out of range"));
    }
    Ok(percent / 100.0)
}

/// Parses one `signal: value` statement as kubelet's `parseThresholdStatement`.
/// `Ok(None)` means kubelet ignores it (`0%`, `100%`) or it is a signal kubedf
/// does not report.
fn parse_statement(
    signal: &str,
    value: &str,
) -> Result<Option<(Signal, ThresholdValue)>, ThresholdError> {
    let known = check_signal(signal)?;
    let parsed = if value.ends_with('%') {
        if value == "0%" || value == "100%" {
            return Ok(None);
        }
        let fraction = parse_percentage(signal, value)?;
        // kubelet's two checks; a NaN passes both, as it does in kubelet
        // (its threshold then resolves to no bytes and is never met).
        if fraction < 0.0 {
            return Err(ThresholdError::PercentageBelowZero {
                signal: signal.to_owned(),
                value: value.to_owned(),
            });
        }
        if fraction > 1.0 {
            return Err(ThresholdError::PercentageAboveHundred {
                signal: signal.to_owned(),
                value: value.to_owned(),
            });
        }
        ThresholdValue::Percentage(fraction)
    } else {
        let quantity = parse_quantity(value).map_err(|source| ThresholdError::BadQuantity {
            signal: signal.to_owned(),
            source,
        })?;
        if quantity <= 0 {
            return Err(ThresholdError::NotPositive {
                signal: signal.to_owned(),
                value: value.to_owned(),
            });
        }
        ThresholdValue::Quantity(quantity)
    };
    Ok(known.map(|s| (s, parsed)))
}

/// kubelet's `parseGracePeriods`: every key a known signal, every value a
/// Go duration that is not negative.
fn parse_grace_periods(
    statements: &HashMap<String, String>,
) -> Result<BTreeMap<String, i64>, ThresholdError> {
    let mut out = BTreeMap::new();
    for (signal, value) in statements {
        check_signal(signal)?;
        let nanos = parse_go_duration(value).map_err(|source| ThresholdError::BadGracePeriod {
            signal: signal.clone(),
            source,
        })?;
        if nanos < 0 {
            return Err(ThresholdError::NegativeGracePeriod {
                signal: signal.clone(),
                value: value.clone(),
            });
        }
        out.insert(signal.clone(), nanos);
    }
    Ok(out)
}

/// kubelet's `parseMinimumReclaims`, for its refusals only: kubedf does
/// not report minimum reclaims.
fn check_minimum_reclaims(statements: &HashMap<String, String>) -> Result<(), ThresholdError> {
    for (signal, value) in statements {
        check_signal(signal)?;
        if value.ends_with('%') {
            let fraction = parse_percentage(signal, value)?;
            // `percentage <= 0` in Go is false for NaN, as here.
            if fraction <= 0.0 {
                return Err(ThresholdError::MinimumReclaimNotPositive {
                    signal: signal.clone(),
                    value: value.clone(),
                });
            }
        } else {
            let quantity = parse_quantity(value).map_err(|source| ThresholdError::BadQuantity {
                signal: signal.clone(),
                source,
            })?;
            if quantity < 0 {
                return Err(ThresholdError::MinimumReclaimNegative {
                    signal: signal.clone(),
                    value: value.clone(),
                });
            }
        }
    }
    Ok(())
}

fn parse_statements<'a>(
    statements: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<Thresholds, ThresholdError> {
    let mut out = Thresholds::new();
    for (signal, value) in statements {
        if let Some((signal, threshold)) = parse_statement(signal, value)? {
            out.insert(signal, threshold);
        }
    }
    Ok(out)
}

/// The eviction maps of a KubeletConfiguration, as written.
#[derive(Clone, Copy, Debug, Default)]
pub struct EvictionStatements<'a> {
    pub hard: Option<&'a HashMap<String, String>>,
    pub soft: Option<&'a HashMap<String, String>>,
    pub soft_grace: Option<&'a HashMap<String, String>>,
    pub minimum_reclaim: Option<&'a HashMap<String, String>>,
    pub merge_defaults: bool,
}

/// The eviction settings of a kubelet configuration, merged as kubelet does.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EvictionConfig {
    pub hard: Thresholds,
    pub soft: Thresholds,
    /// Grace periods of the soft thresholds, as written.
    pub soft_grace: BTreeMap<Signal, String>,
    /// Default disk signals that a partial `evictionHard` left without a
    /// threshold (kubelet does not fill them in unless told to merge).
    pub dropped_defaults: Vec<Signal>,
}

impl EvictionConfig {
    /// Builds the configuration from the raw maps of a KubeletConfiguration.
    ///
    /// When `evictionHard` is absent the defaults apply. When it is present,
    /// every signal it does not name has no threshold, unless
    /// `mergeDefaultEvictionSettings` is true. `evictionSoft` has no defaults
    /// and each soft threshold needs a grace period.
    pub fn from_kubelet(
        hard: Option<&HashMap<String, String>>,
        soft: Option<&HashMap<String, String>>,
        soft_grace: Option<&HashMap<String, String>>,
        merge_defaults: bool,
    ) -> Result<EvictionConfig, ThresholdError> {
        EvictionConfig::from_statements(EvictionStatements {
            hard,
            soft,
            soft_grace,
            minimum_reclaim: None,
            merge_defaults,
        })
    }

    /// [`EvictionConfig::from_kubelet`] with every map kubelet's
    /// `ParseThresholdConfig` validates.
    pub fn from_statements(raw: EvictionStatements<'_>) -> Result<EvictionConfig, ThresholdError> {
        let EvictionStatements {
            hard,
            soft,
            soft_grace,
            minimum_reclaim,
            merge_defaults,
        } = raw;
        let mut dropped_defaults = Vec::new();
        let hard = match hard {
            None => parse_statements(DEFAULT_EVICTION_HARD)?,
            Some(named) => {
                let mut merged: Vec<(&str, &str)> = named
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                for (signal, value) in DEFAULT_EVICTION_HARD {
                    if named.contains_key(signal) {
                        continue;
                    }
                    if merge_defaults {
                        merged.push((signal, value));
                    } else if let Some(s) = Signal::from_name(signal) {
                        dropped_defaults.push(s);
                    }
                }
                parse_statements(merged)?
            }
        };
        let soft = match soft {
            None => Thresholds::new(),
            Some(map) => parse_statements(map.iter().map(|(k, v)| (k.as_str(), v.as_str())))?,
        };
        let periods = match soft_grace {
            None => BTreeMap::new(),
            Some(map) => parse_grace_periods(map)?,
        };
        if let Some(map) = minimum_reclaim {
            check_minimum_reclaims(map)?;
        }
        let mut grace = BTreeMap::new();
        for signal in soft.keys() {
            if !periods.contains_key(signal.name()) {
                return Err(ThresholdError::MissingGracePeriod(signal.name().to_owned()));
            }
            if let Some(period) = soft_grace.and_then(|g| g.get(signal.name())) {
                grace.insert(*signal, period.clone());
            }
        }
        Ok(EvictionConfig {
            hard,
            soft,
            soft_grace: grace,
            dropped_defaults,
        })
    }

    /// The kubelet defaults, as when no configuration file exists.
    pub fn kubelet_defaults() -> EvictionConfig {
        // The defaults are constants known to parse; a failure is a bug here.
        EvictionConfig::from_kubelet(None, None, None, false)
            .unwrap_or_else(|e| unreachable!("kubelet's default thresholds must parse: {e}"))
    }

    /// The thresholds in force for a signal of the given kind. containerfs
    /// thresholds are not user-set: kubelet overrides them with nodefs', or
    /// imagefs' when containers live on a dedicated image filesystem.
    pub fn threshold(
        &self,
        kind: Kind,
        signal: Signal,
        layout: FsLayout,
    ) -> Option<ThresholdValue> {
        let map = match kind {
            Kind::Hard => &self.hard,
            Kind::Soft => &self.soft,
        };
        map.get(&layout.threshold_signal(signal)).copied()
    }
}

/// The disk and PID thresholds of an [`EvictionConfig`] and nothing else:
/// what headroom needs of it, in a fixed 224 bytes with no allocation
/// (cluster mode keeps one per node).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SignalThresholds {
    /// By [`Signal::index`].
    hard: [Option<ThresholdValue>; Signal::ALL.len()],
    soft: [Option<ThresholdValue>; Signal::ALL.len()],
}

impl SignalThresholds {
    pub fn of(config: &EvictionConfig) -> SignalThresholds {
        let mut out = SignalThresholds::default();
        for (signal, value) in &config.hard {
            out.hard[signal.index()] = Some(*value);
        }
        for (signal, value) in &config.soft {
            out.soft[signal.index()] = Some(*value);
        }
        out
    }

    /// As [`EvictionConfig::threshold`].
    pub fn threshold(self, kind: Kind, signal: Signal, layout: FsLayout) -> Option<ThresholdValue> {
        let map = match kind {
            Kind::Hard => &self.hard,
            Kind::Soft => &self.soft,
        };
        map[layout.threshold_signal(signal).index()]
    }
}

/// Hard or soft.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Hard,
    Soft,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Hard => "hard",
            Kind::Soft => "soft",
        }
    }
}

/// Where the runtime keeps images and container writable layers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FsLayout {
    /// The image filesystem is on another device than the kubelet root dir.
    pub dedicated_image_fs: bool,
    /// The runtime reports a separate container filesystem (split image fs).
    pub split_image_fs: bool,
}

impl FsLayout {
    /// Whose threshold a signal has. containerfs thresholds are not
    /// user-set: kubelet (`UpdateContainerFsThresholds`) gives them
    /// imagefs' when containers live on a dedicated image filesystem, else
    /// nodefs'.
    pub fn threshold_signal(self, signal: Signal) -> Signal {
        let containers_on_imagefs = self.dedicated_image_fs && !self.split_image_fs;
        match (signal, containers_on_imagefs) {
            (Signal::ContainerFsAvailable, true) => Signal::ImageFsAvailable,
            (Signal::ContainerFsAvailable, false) => Signal::NodeFsAvailable,
            (Signal::ContainerFsInodesFree, true) => Signal::ImageFsInodesFree,
            (Signal::ContainerFsInodesFree, false) => Signal::NodeFsInodesFree,
            (other, _) => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_thresholds_keep_what_the_config_says_in_every_layout() {
        assert!(Signal::ALL.iter().enumerate().all(|(i, s)| s.index() == i));
        let hard = map(&[("nodefs.available", "1Gi"), ("imagefs.inodesFree", "7%")]);
        let soft = map(&[("imagefs.available", "20%")]);
        let grace = map(&[("imagefs.available", "1m")]);
        let config =
            EvictionConfig::from_kubelet(Some(&hard), Some(&soft), Some(&grace), true).unwrap();
        let kept = SignalThresholds::of(&config);
        for dedicated_image_fs in [false, true] {
            for split_image_fs in [false, true] {
                let layout = FsLayout {
                    dedicated_image_fs,
                    split_image_fs,
                };
                for signal in Signal::ALL {
                    for kind in [Kind::Hard, Kind::Soft] {
                        assert_eq!(
                            kept.threshold(kind, signal, layout),
                            config.threshold(kind, signal, layout),
                            "{signal} {kind:?} {layout:?}"
                        );
                    }
                }
            }
        }
        // containerfs follows imagefs only on a dedicated, unsplit image fs.
        let on_imagefs = FsLayout {
            dedicated_image_fs: true,
            split_image_fs: false,
        };
        assert_eq!(
            kept.threshold(Kind::Soft, Signal::ContainerFsAvailable, on_imagefs),
            Some(ThresholdValue::Percentage(0.2))
        );
        assert_eq!(
            kept.threshold(
                Kind::Hard,
                Signal::ContainerFsAvailable,
                FsLayout::default()
            ),
            Some(ThresholdValue::Quantity(1 << 30))
        );
        assert_eq!(std::mem::size_of::<SignalThresholds>(), 224);
    }

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_apply_when_eviction_hard_is_absent() {
        let cfg = EvictionConfig::kubelet_defaults();
        assert_eq!(cfg.hard.len(), 4, "memory.available is not reported");
        assert_eq!(
            cfg.hard[&Signal::NodeFsAvailable],
            ThresholdValue::Percentage(0.1)
        );
        assert_eq!(
            cfg.hard[&Signal::NodeFsInodesFree],
            ThresholdValue::Percentage(0.05)
        );
        assert_eq!(
            cfg.hard[&Signal::ImageFsAvailable],
            ThresholdValue::Percentage(0.15)
        );
        assert_eq!(
            cfg.hard[&Signal::ImageFsInodesFree],
            ThresholdValue::Percentage(0.05)
        );
        assert!(
            !cfg.hard.contains_key(&Signal::PidAvailable),
            "no pid default"
        );
        assert!(cfg.soft.is_empty());
        assert!(cfg.dropped_defaults.is_empty());
    }

    #[test]
    fn partial_eviction_hard_drops_unnamed_defaults() {
        let hard = map(&[("imagefs.available", "20%")]);
        let cfg = EvictionConfig::from_kubelet(Some(&hard), None, None, false).unwrap();
        assert_eq!(cfg.hard.len(), 1);
        assert_eq!(
            cfg.hard[&Signal::ImageFsAvailable],
            ThresholdValue::Percentage(0.2)
        );
        assert_eq!(
            cfg.dropped_defaults,
            vec![
                Signal::NodeFsAvailable,
                Signal::NodeFsInodesFree,
                Signal::ImageFsInodesFree
            ]
        );
    }

    #[test]
    fn empty_eviction_hard_means_no_thresholds() {
        let cfg = EvictionConfig::from_kubelet(Some(&HashMap::new()), None, None, false).unwrap();
        assert!(cfg.hard.is_empty());
        assert_eq!(cfg.dropped_defaults.len(), 4);
    }

    #[test]
    fn merge_default_eviction_settings_fills_unnamed_signals() {
        let hard = map(&[("imagefs.available", "20%"), ("pid.available", "1k")]);
        let cfg = EvictionConfig::from_kubelet(Some(&hard), None, None, true).unwrap();
        assert_eq!(
            cfg.hard[&Signal::ImageFsAvailable],
            ThresholdValue::Percentage(0.2)
        );
        assert_eq!(
            cfg.hard[&Signal::NodeFsAvailable],
            ThresholdValue::Percentage(0.1)
        );
        assert_eq!(
            cfg.hard[&Signal::PidAvailable],
            ThresholdValue::Quantity(1000)
        );
        assert!(cfg.dropped_defaults.is_empty());
    }

    #[test]
    fn zero_and_hundred_percent_are_ignored_like_kubelet() {
        let hard = map(&[("nodefs.available", "0%"), ("imagefs.available", "100%")]);
        let cfg = EvictionConfig::from_kubelet(Some(&hard), None, None, false).unwrap();
        assert!(cfg.hard.is_empty());
    }

    #[test]
    fn bad_statements_name_the_signal() {
        let cases = [
            (
                ("disk.available", "10%"),
                "unsupported eviction signal disk.available",
            ),
            (("nodefs.available", "ten%"), "nodefs.available"),
            (("nodefs.available", "150%"), "must be <= 100%: 150%"),
            (("nodefs.available", "-5%"), "must be >= 0%: -5%"),
            (("nodefs.available", "inf%"), "must be <= 100%"),
            (("nodefs.available", "1e39%"), "value out of range"),
            (("nodefs.available", "-nan%"), "invalid syntax"),
            (("nodefs.available", "0x1p-2%"), "invalid syntax"),
            (("nodefs.available", "%"), "invalid syntax"),
            (
                ("nodefs.available", "1Gi "),
                "must match the regular expression",
            ),
            (
                ("nodefs.available", " 1Gi"),
                "must match the regular expression",
            ),
            (
                ("nodefs.available", "10% "),
                "must match the regular expression",
            ),
            (("nodefs.available", "Mi"), "must be positive: Mi"),
            (("nodefs.available", "0"), "must be positive"),
            (("nodefs.available", "-1Gi"), "must be positive"),
            (("nodefs.available", "1GB"), "invalid quantity"),
        ];
        for ((signal, value), want) in cases {
            let hard = map(&[(signal, value)]);
            let err = EvictionConfig::from_kubelet(Some(&hard), None, None, false).unwrap_err();
            assert!(err.to_string().contains(want), "{signal}={value}: {err}");
        }
    }

    #[test]
    fn memory_signals_are_valid_but_not_reported() {
        let hard = map(&[("memory.available", "500Mi"), ("nodefs.available", "1Gi")]);
        let cfg = EvictionConfig::from_kubelet(Some(&hard), None, None, false).unwrap();
        assert_eq!(cfg.hard.len(), 1);
        assert_eq!(
            cfg.hard[&Signal::NodeFsAvailable],
            ThresholdValue::Quantity(1 << 30)
        );
    }

    #[test]
    fn soft_thresholds_need_a_grace_period() {
        let soft = map(&[("nodefs.available", "15%")]);
        let err = EvictionConfig::from_kubelet(None, Some(&soft), None, false).unwrap_err();
        assert_eq!(
            err,
            ThresholdError::MissingGracePeriod("nodefs.available".into())
        );
        let grace = map(&[("nodefs.available", "1m30s")]);
        let cfg = EvictionConfig::from_kubelet(None, Some(&soft), Some(&grace), false).unwrap();
        assert_eq!(
            cfg.soft[&Signal::NodeFsAvailable],
            ThresholdValue::Percentage(0.15)
        );
        assert_eq!(cfg.soft_grace[&Signal::NodeFsAvailable], "1m30s");
    }

    #[test]
    fn percentages_resolve_through_float32_like_kubelet() {
        // Capacity from a real node's /stats/summary. 10% as float32 is
        // 0.100000001490116..., so kubelet's threshold is 32 bytes above 10%.
        let capacity = 21_462_233_088;
        assert_eq!(
            ThresholdValue::Percentage(10.0 / 100.0).resolve(capacity),
            2_146_223_340
        );
        assert_eq!(
            ThresholdValue::Percentage(15.0 / 100.0).resolve(capacity),
            3_219_335_091
        );
        assert_eq!(
            ThresholdValue::Percentage(5.0 / 100.0).resolve(1_310_720),
            65_536
        );
        assert_eq!(
            ThresholdValue::Quantity(104_857_600).resolve(capacity),
            104_857_600
        );
    }

    #[test]
    fn containerfs_follows_nodefs_or_dedicated_imagefs() {
        let hard = map(&[
            ("nodefs.available", "1Gi"),
            ("nodefs.inodesFree", "1k"),
            ("imagefs.available", "2Gi"),
            ("imagefs.inodesFree", "2k"),
            ("containerfs.available", "9Gi"),
        ]);
        let cfg = EvictionConfig::from_kubelet(Some(&hard), None, None, false).unwrap();
        let single = FsLayout::default();
        let dedicated = FsLayout {
            dedicated_image_fs: true,
            split_image_fs: false,
        };
        let split = FsLayout {
            dedicated_image_fs: true,
            split_image_fs: true,
        };
        let t = |signal, layout| cfg.threshold(Kind::Hard, signal, layout);
        assert_eq!(
            t(Signal::ContainerFsAvailable, single),
            Some(ThresholdValue::Quantity(1 << 30))
        );
        assert_eq!(
            t(Signal::ContainerFsAvailable, dedicated),
            Some(ThresholdValue::Quantity(2 << 30))
        );
        assert_eq!(
            t(Signal::ContainerFsAvailable, split),
            Some(ThresholdValue::Quantity(1 << 30))
        );
        assert_eq!(
            t(Signal::ContainerFsInodesFree, dedicated),
            Some(ThresholdValue::Quantity(2000))
        );
        assert_eq!(
            t(Signal::ContainerFsInodesFree, single),
            Some(ThresholdValue::Quantity(1000))
        );
        assert_eq!(t(Signal::PidAvailable, single), None);
    }

    #[test]
    fn grace_periods_follow_kubelets_parse_grace_periods() {
        let soft = map(&[("nodefs.available", "15%")]);
        let with = |grace: &[(&str, &str)]| {
            let grace = map(grace);
            EvictionConfig::from_kubelet(None, Some(&soft), Some(&grace), false)
        };
        assert!(with(&[("nodefs.available", "1m30s")]).is_ok());
        assert!(with(&[("nodefs.available", "0")]).is_ok());
        // A grace period for a signal with no soft threshold is fine.
        assert!(with(&[("nodefs.available", "1m"), ("memory.available", "1h")]).is_ok());
        for (grace, want) in [
            (
                ("nodefs.available", "abc"),
                "time: invalid duration \"abc\"",
            ),
            (
                ("nodefs.available", "-1m"),
                "invalid eviction grace period specified: -1m, must be a positive value",
            ),
            (
                ("nodefs.available", "90"),
                "time: missing unit in duration \"90\"",
            ),
            (("nodefs.available", "1d"), "time: unknown unit \"d\""),
            (("nodefs.available", ""), "time: invalid duration \"\""),
            (("nodefs.available", " 1m"), "time: invalid duration"),
            (
                ("nodefs.avail", "1m"),
                "unsupported eviction signal nodefs.avail",
            ),
        ] {
            let err = with(&[grace]).unwrap_err().to_string();
            assert!(err.contains(want), "{grace:?}: {err}");
            assert!(err.contains(grace.0), "{grace:?} names the signal: {err}");
        }
        // The missing grace period is reported even when others are valid.
        let err = with(&[("imagefs.available", "1m")]).unwrap_err();
        assert_eq!(
            err,
            ThresholdError::MissingGracePeriod("nodefs.available".into())
        );
    }

    #[test]
    fn minimum_reclaims_are_validated_like_kubelet() {
        let check = |pairs: &[(&str, &str)]| {
            let reclaim = map(pairs);
            EvictionConfig::from_statements(EvictionStatements {
                minimum_reclaim: Some(&reclaim),
                ..EvictionStatements::default()
            })
        };
        assert!(check(&[("nodefs.available", "500Mi"), ("imagefs.available", "2%")]).is_ok());
        assert!(
            check(&[("nodefs.available", "0")]).is_ok(),
            "zero is not negative"
        );
        for (pair, want) in [
            (
                ("nodefs.available", "0%"),
                "minimum reclaim nodefs.available must be positive: 0%",
            ),
            (
                ("nodefs.available", "-1Gi"),
                "negative eviction minimum reclaim specified for nodefs.available",
            ),
            (
                ("nodefs.available", "1 Gi"),
                "must match the regular expression",
            ),
            (
                ("disk.free", "1Gi"),
                "unsupported eviction signal disk.free",
            ),
        ] {
            let err = check(&[pair]).unwrap_err().to_string();
            assert!(err.contains(want), "{pair:?}: {err}");
        }
    }

    #[test]
    fn percentages_kubelet_accepts() {
        for (value, want) in [
            ("10%%", 0.1f32),
            ("+5%", 0.05),
            ("1e1%", 0.1),
            ("0.0%", 0.0),
            ("-0%", 0.0),
        ] {
            let hard = map(&[("nodefs.available", value)]);
            let cfg = EvictionConfig::from_kubelet(Some(&hard), None, None, false).unwrap();
            assert_eq!(
                cfg.hard[&Signal::NodeFsAvailable],
                ThresholdValue::Percentage(want),
                "{value}"
            );
        }
        // NaN passes both of kubelet's range checks; it resolves to no bytes.
        let hard = map(&[("nodefs.available", "NaN%")]);
        let cfg = EvictionConfig::from_kubelet(Some(&hard), None, None, false).unwrap();
        assert_eq!(cfg.hard[&Signal::NodeFsAvailable].resolve(1 << 30), 0);
    }
}
