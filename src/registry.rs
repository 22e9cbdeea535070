//! The one registry: the enabled collectors, rendered from a snapshot with
//! prometheus-client (OpenMetrics text), plus kubedf's own health families.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Instant, UNIX_EPOCH};

use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabel as _, EncodeLabelSet, LabelSetEncoder, MetricEncoder,
};
use prometheus_client::metrics::MetricType;
use thiserror::Error;

use crate::collector::{self, Collector, Desc, Incomplete, MetricKind, Sample, Sink, Value};
use crate::model::Snapshot;
use crate::model::SourceId;

pub static COLLECTOR_SUCCESS: Desc = Desc::gauge(
    "kubedf_scrape_collector_success",
    "Whether the collector had everything it reports in the latest snapshot (1) or left series out because a source failed (0).",
    None,
    &["collector"],
);
pub static COLLECTOR_DURATION: Desc = Desc::gauge(
    "kubedf_scrape_collector_duration_seconds",
    "Time the collector took to produce its series from the latest snapshot; the exposition is rendered once per snapshot and shared by the scrapes that follow.",
    Some(prometheus_client::registry::Unit::Seconds),
    &["collector"],
);
pub static SOURCE_UP: Desc = Desc::gauge(
    "kubedf_source_up",
    "Whether the latest read of the source succeeded (1) or failed (0).",
    None,
    &["source"],
);
pub static SOURCE_LAST_SUCCESS: Desc = Desc::gauge(
    "kubedf_source_last_success_timestamp_seconds",
    "Unix time of the last successful read of the source; absent until it first succeeds.",
    Some(prometheus_client::registry::Unit::Seconds),
    &["source"],
);
pub static SOURCE_DURATION: Desc = Desc::gauge(
    "kubedf_source_sample_duration_seconds",
    "Time the latest read of the source took, timeouts included.",
    Some(prometheus_client::registry::Unit::Seconds),
    &["source"],
);
pub static BUILD_INFO: Desc = Desc::gauge(
    "kubedf_build_info",
    "kubedf's version; always 1.",
    None,
    &["version"],
);

/// kubedf's own families, after the collectors'.
pub static SELF_DESCS: [&Desc; 6] = [
    &COLLECTOR_SUCCESS,
    &COLLECTOR_DURATION,
    &SOURCE_UP,
    &SOURCE_LAST_SUCCESS,
    &SOURCE_DURATION,
    &BUILD_INFO,
];

#[derive(Debug, Error, PartialEq, Eq)]
pub enum RegistryError {
    #[error("unknown collector {0:?} (known: {1})")]
    UnknownCollector(String, String),
}

/// The outcome of collecting one snapshot.
#[derive(Debug)]
pub struct Collected<'s> {
    pub families: Vec<(&'static Desc, Vec<Sample<'s>>)>,
    /// (collector, error) for every collector that left something out.
    pub incomplete: Vec<(&'static str, Incomplete)>,
}

#[derive(Debug)]
pub struct Registry {
    collectors: Arc<Vec<Box<dyn Collector>>>,
}

impl Registry {
    /// Every collector kubedf has, enabled or not.
    pub fn available() -> Vec<Box<dyn Collector>> {
        collector::all()
    }

    /// A registry of the named collectors (all of them when `enabled` is
    /// None), with default options.
    pub fn new(enabled: Option<&BTreeSet<String>>) -> Result<Registry, RegistryError> {
        Registry::with_options(enabled, &collector::Options::default())
    }

    /// A registry of the named collectors (all of them when `enabled` is None).
    pub fn with_options(
        enabled: Option<&BTreeSet<String>>,
        options: &collector::Options,
    ) -> Result<Registry, RegistryError> {
        let all = collector::all_with(options);
        if let Some(names) = enabled {
            let known: Vec<&str> = all.iter().map(|c| c.name()).collect();
            if let Some(unknown) = names.iter().find(|n| !known.contains(&n.as_str())) {
                return Err(RegistryError::UnknownCollector(
                    unknown.clone(),
                    known.join(", "),
                ));
            }
        }
        let collectors = all
            .into_iter()
            .filter(|c| enabled.is_none_or(|names| names.contains(c.name())))
            .collect();
        Ok(Registry {
            collectors: Arc::new(collectors),
        })
    }

    pub fn collectors(&self) -> impl Iterator<Item = &dyn Collector> {
        self.collectors.iter().map(AsRef::as_ref)
    }

    /// The sources the enabled collectors need.
    pub fn sources(&self) -> BTreeSet<SourceId> {
        self.collectors
            .iter()
            .flat_map(|c| c.sources().iter().copied())
            .collect()
    }

    /// Runs every collector on the snapshot, then adds kubedf's own families.
    pub fn collect<'s>(&self, snapshot: &'s Snapshot) -> Collected<'s> {
        collect_with(&self.collectors, snapshot)
    }

    /// The OpenMetrics text exposition of a snapshot, `# EOF` included.
    pub fn render(&self, snapshot: &Snapshot) -> String {
        // prometheus-client's collectors must be 'static: hand it shared
        // handles (a snapshot clone is cheap, its volume table is shared)
        // and let it collect and encode in one pass, with no copy of the
        // samples in between.
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(Exposition {
            collectors: Arc::clone(&self.collectors),
            snapshot: Arc::new(snapshot.clone()),
        }));
        // Not pre-sized: a fresh multi-megabyte buffer costs a page fault
        // per page, where growing one is a cheap mremap (measured: twice as
        // slow pre-sized, benches/render.rs).
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

/// Runs `collectors` on the snapshot, then adds kubedf's own families.
fn collect_with<'s>(collectors: &[Box<dyn Collector>], snapshot: &'s Snapshot) -> Collected<'s> {
    let mut sink = Sink::default();
    let mut outcomes = Vec::with_capacity(collectors.len());
    for c in collectors {
        for desc in c.descs() {
            sink.declare(desc);
        }
    }
    for c in collectors {
        let start = Instant::now();
        let result = c.collect(snapshot, &mut sink);
        outcomes.push((c.name(), result, start.elapsed()));
    }
    let mut incomplete = Vec::new();
    for (name, result, elapsed) in outcomes {
        sink.add(&COLLECTOR_SUCCESS, [name], i64::from(result.is_ok()));
        sink.add(&COLLECTOR_DURATION, [name], elapsed.as_secs_f64());
        if let Err(e) = result {
            incomplete.push((name, e));
        }
    }
    for status in snapshot.source_statuses() {
        let source = status.source.name();
        sink.add(&SOURCE_UP, [source], i64::from(status.up));
        if let Some(t) = status.last_success {
            let secs = t
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64();
            sink.add(&SOURCE_LAST_SUCCESS, [source], secs);
        }
        if let Some(d) = status.duration {
            sink.add(&SOURCE_DURATION, [source], d.as_secs_f64());
        }
    }
    sink.add(&BUILD_INFO, [env!("CARGO_PKG_VERSION")], 1i64);
    Collected {
        families: sink.into_families(),
        incomplete,
    }
}

/// What one render encodes.
#[derive(Debug)]
struct Exposition {
    collectors: Arc<Vec<Box<dyn Collector>>>,
    snapshot: Arc<Snapshot>,
}

/// A sample's labels, zipped from the descriptor's names and the sample's
/// values as prometheus-client encodes them, without building pairs.
struct SampleLabels<'a> {
    names: &'static [&'static str],
    values: &'a [&'a str],
}

impl EncodeLabelSet for SampleLabels<'_> {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        for (name, value) in self.names.iter().zip(self.values) {
            (*name, *value).encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

/// The family name prometheus-client wants: without the unit suffix, which
/// it appends itself.
pub fn base_name(desc: &Desc) -> Cow<'static, str> {
    match &desc.unit {
        Some(unit) => {
            let suffix = format!("_{}", unit.as_str());
            Cow::Owned(
                desc.name
                    .strip_suffix(&suffix)
                    .unwrap_or(desc.name)
                    .to_owned(),
            )
        }
        None => Cow::Borrowed(desc.name),
    }
}

impl prometheus_client::collector::Collector for Exposition {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let collected = collect_with(&self.collectors, &self.snapshot);
        for (desc, samples) in collected.families.iter().filter(|(_, s)| !s.is_empty()) {
            let metric_type = match desc.kind {
                MetricKind::Gauge => MetricType::Gauge,
            };
            let name = base_name(desc);
            let help = format!("{}{}", desc.stability.help_prefix(), desc.help);
            let mut metric =
                encoder.encode_descriptor(&name, &help, desc.unit.as_ref(), metric_type)?;
            for sample in samples {
                // An unlabelled series is written without `{}`.
                if sample.labels.is_empty() {
                    encode_value(&mut metric, sample.value)?;
                } else {
                    let labels = SampleLabels {
                        names: desc.labels,
                        values: &sample.labels,
                    };
                    encode_value(&mut metric.encode_family(&labels)?, sample.value)?;
                }
            }
        }
        Ok(())
    }
}

fn encode_value(metric: &mut MetricEncoder<'_>, value: Value) -> Result<(), std::fmt::Error> {
    match value {
        Value::Int(v) => metric.encode_gauge(&v),
        Value::Uint(v) => metric.encode_gauge(&v),
        Value::Float(v) => metric.encode_gauge(&v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_descs() -> Vec<&'static Desc> {
        collector::all()
            .iter()
            .flat_map(|c| c.descs().iter().copied())
            .chain(SELF_DESCS)
            .collect()
    }

    #[test]
    fn names_are_unique_and_units_match_suffixes() {
        let descs = all_descs();
        let mut names: Vec<&str> = descs.iter().map(|d| d.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len(), "duplicate family names");
        for d in descs {
            if let Some(unit) = &d.unit {
                assert!(
                    d.name.ends_with(&format!("_{}", unit.as_str())),
                    "{} has unit {unit:?}",
                    d.name
                );
                assert_eq!(format!("{}_{}", base_name(d), unit.as_str()), d.name);
            }
            // kubelet's own HELP texts are kept verbatim, without a full stop.
            if !d.name.starts_with("kubelet_") {
                assert!(
                    d.help.ends_with('.'),
                    "help of {} is a full sentence",
                    d.name
                );
            }
            assert!(
                d.name.starts_with("kubedf_") || d.name.starts_with("kubelet_"),
                "{}",
                d.name
            );
        }
    }

    #[test]
    fn collector_names_are_unique() {
        let mut names: Vec<&str> = collector::all().iter().map(|c| c.name()).collect();
        let before = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(before, names.len());
    }

    #[test]
    fn unknown_collectors_are_refused() {
        let names: BTreeSet<String> = ["nodefs".to_owned(), "bogus".to_owned()].into();
        assert!(
            matches!(Registry::new(Some(&names)), Err(RegistryError::UnknownCollector(n, _)) if n == "bogus")
        );
    }

    #[test]
    fn only_the_sources_of_enabled_collectors_are_read() {
        let names: BTreeSet<String> = ["rlimit".to_owned()].into();
        let r = Registry::new(Some(&names)).unwrap();
        assert_eq!(r.sources(), [SourceId::Procfs].into());
    }
}
