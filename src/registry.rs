//! The one registry: the enabled collectors, plus kubedf's own health
//! families, rendered from a snapshot in either text format ([`crate::exposition`]).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, UNIX_EPOCH};

use thiserror::Error;

use crate::collector::filter::FamilyFilter;
use crate::collector::{self, Collector, Desc, Sink};
use crate::exposition::Format;
use crate::model::{PartsKey, Snapshot, SourceId};

pub static COLLECTOR_SUCCESS: Desc = Desc::gauge(
    "kubedf_scrape_collector_success",
    "Whether the collector had everything it reports in the latest snapshot (1) or left series out because a source failed (0).",
    None,
    &["collector"],
);
pub static COLLECTOR_DURATION: Desc = Desc::gauge(
    "kubedf_scrape_collector_duration_seconds",
    "Time the collector took to produce its series; it runs once per snapshot whose inputs it reads changed (the volume and pod tables change far less often than the node's filesystems), and the scrapes that follow share its series and this time.",
    Some(crate::exposition::Unit::Seconds),
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
    Some(crate::exposition::Unit::Seconds),
    &["source"],
);
pub static SOURCE_DURATION: Desc = Desc::gauge(
    "kubedf_source_sample_duration_seconds",
    "Time the latest read of the source took, timeouts included.",
    Some(crate::exposition::Unit::Seconds),
    &["source"],
);
pub static BUILD_INFO: Desc = Desc::gauge(
    "kubedf_build_info",
    "kubedf's version; always 1.",
    None,
    &["version"],
);

pub static WEB_CONFIG_RELOAD_OK: Desc = Desc::gauge(
    "kubedf_web_config_last_reload_successful",
    "Whether the last reload of --web.config.file put it in force (1), or was refused because the file was invalid or would have turned TLS off or dropped basic auth (0); absent without --web.config.file.",
    None,
    &[],
);
pub static WEB_CONFIG_RELOAD_SUCCESS: Desc = Desc::gauge(
    "kubedf_web_config_last_reload_success_timestamp_seconds",
    "Unix time at which --web.config.file was last loaded successfully, at start or on a reload.",
    Some(crate::exposition::Unit::Seconds),
    &[],
);
pub static WEB_CONFIG_RELOADS_FAILED: Desc = Desc::counter(
    "kubedf_web_config_reloads_failed_total",
    "Reloads of --web.config.file that were refused (invalid file, or one that would turn TLS off or drop basic auth); the config in force stayed.",
    &[],
);

pub static KUBELET_CONFIG_INFO: Desc = Desc::gauge(
    "kubedf_kubelet_config_info",
    "The kubelet configuration kubedf's thresholds, GC percents, root dir and CRI endpoint come from: source is configz (the running kubelet's /configz, path its URL), process (the running kubelet's command line, --config file and drop-ins merged as kubelet merges them, path its --config), file (the file --kubelet.config names, path) or defaults (nothing could be read; kubelet's defaults apply). Always 1.",
    None,
    &["path", "source"],
);

/// kubedf's own families, after the collectors'.
pub static SELF_DESCS: [&Desc; 10] = [
    &COLLECTOR_SUCCESS,
    &COLLECTOR_DURATION,
    &SOURCE_UP,
    &SOURCE_LAST_SUCCESS,
    &SOURCE_DURATION,
    &BUILD_INFO,
    &WEB_CONFIG_RELOAD_OK,
    &WEB_CONFIG_RELOAD_SUCCESS,
    &WEB_CONFIG_RELOADS_FAILED,
    &KUBELET_CONFIG_INFO,
];

#[derive(Debug, Error, PartialEq, Eq)]
pub enum RegistryError {
    #[error("unknown collector {0:?} (known: {1})")]
    UnknownCollector(String, String),
}

#[derive(Debug)]
pub struct Registry {
    collectors: Arc<Vec<Box<dyn Collector>>>,
    /// The families the collectors' output keeps; None keeps them all.
    /// kubedf's own families are never filtered.
    filter: Option<Arc<FamilyFilter>>,
    /// The length of the last [`Registry::render_as`], to size the next.
    last_len: AtomicUsize,
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
        Ok(Registry::of(collectors))
    }

    /// This registry with `filter` applied to the collectors' families
    /// (`--metric-allowlist`, `--metric-denylist`); kubedf's own families
    /// are never filtered.
    pub fn with_filter(mut self, filter: FamilyFilter) -> Registry {
        self.filter = match filter {
            FamilyFilter::All => None,
            filter => Some(Arc::new(filter)),
        };
        self
    }

    /// A registry of exactly `collectors` (cluster mode's, which are not
    /// among the DaemonSet's `--collector.*`).
    pub fn of(collectors: Vec<Box<dyn Collector>>) -> Registry {
        Registry {
            collectors: Arc::new(collectors),
            filter: None,
            last_len: AtomicUsize::new(0),
        }
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

    /// The OpenMetrics text exposition of a snapshot, `# EOF` included.
    pub fn render(&self, snapshot: &Snapshot) -> String {
        self.render_as(snapshot, Format::OpenMetrics100)
    }

    /// The exposition of a snapshot in `format`, in one string: every
    /// collector runs, each appending to one buffer sized from the last
    /// render's length (the same text as [`Registry::render_parts`] joined).
    pub fn render_as(&self, snapshot: &Snapshot, format: Format) -> String {
        let guess = self.last_len.load(Ordering::Relaxed);
        // A little headroom, so a table that grew a few rows is not copied.
        let mut text = String::with_capacity(guess + guess / 16);
        let mut outcomes = Vec::with_capacity(self.collectors.len());
        for c in self.collectors.iter() {
            let (part, complete, took) = self.run(&**c, snapshot, Sink::continuing(format, text));
            text = part;
            outcomes.push((c.name(), complete, took));
        }
        let mut sink = Sink::continuing(format, text);
        write_own(&outcomes, snapshot, &mut sink);
        let text = sink.finish();
        self.last_len.store(text.len(), Ordering::Relaxed);
        text
    }

    /// The exposition of a snapshot in `format`, in parts: each collector's
    /// families, then kubedf's own (and `# EOF` in OpenMetrics), each part
    /// made into what the caller keeps of it by `make` (the HTTP cache keeps
    /// a part's gzip, not its text).
    ///
    /// A collector that says which parts of the board it reads
    /// ([`Collector::reads`]) is not run again while none of them changed:
    /// `store` gives back what `make` made of it last time. So a scrape that
    /// follows a new node sample renders the node's families, not 1,000
    /// PVCs'. Collectors write their samples' text straight into their part,
    /// no sample is kept in between, and each part's buffer is sized from
    /// its last length. kubedf does not use prometheus-client (the README
    /// says why): at 10,000 PVCs its per-sample dispatch was most of a render
    /// (benches/render.rs), it writes no 0.0.4 text format, and its floats
    /// are not written as client_golang writes them.
    pub fn render_parts<T>(
        &self,
        snapshot: &Snapshot,
        format: Format,
        store: &mut PartStore<T>,
        mut make: impl FnMut(String) -> T,
    ) -> Vec<Arc<T>> {
        store.parts.resize_with(self.collectors.len(), || None);
        let mut parts = Vec::with_capacity(self.collectors.len() + 1);
        let mut outcomes = Vec::with_capacity(self.collectors.len());
        for (c, slot) in self.collectors.iter().zip(store.parts.iter_mut()) {
            // A hand-built view has no part counts: it is rendered, and what
            // is stored stays for the board's next view.
            let key = c.reads().and_then(|read| snapshot.parts.key(read));
            if let (Some(kept), Some(key)) = (&*slot, key)
                && kept.key == key
            {
                parts.push(Arc::clone(&kept.value));
                outcomes.push((c.name(), kept.complete, kept.took));
                continue;
            }
            let last_len = slot.as_ref().map_or(0, |k| k.len);
            // A little headroom, so a table that grew a few rows is not copied.
            let sink = Sink::new(format, last_len + last_len / 16);
            let (text, complete, took) = self.run(&**c, snapshot, sink);
            let len = text.len();
            let value = Arc::new(make(text));
            if let Some(key) = key {
                *slot = Some(Stored {
                    key,
                    complete,
                    took,
                    len,
                    value: Arc::clone(&value),
                });
            }
            parts.push(value);
            outcomes.push((c.name(), complete, took));
        }
        let guess = store.own_len;
        let mut sink = Sink::new(format, guess + guess / 16);
        write_own(&outcomes, snapshot, &mut sink);
        let own = sink.finish();
        store.own_len = own.len();
        parts.push(Arc::new(make(own)));
        parts
    }

    /// Runs one collector on the snapshot into `sink`: its families
    /// (declared first, so they come in its order), filtered. Returns the
    /// sink's text, whether the collector had everything, and how long it
    /// took.
    fn run(
        &self,
        c: &dyn Collector,
        snapshot: &Snapshot,
        mut sink: Sink,
    ) -> (String, bool, Duration) {
        let start = Instant::now();
        sink.set_filter(
            self.filter
                .as_ref()
                .map(|f| Arc::clone(f) as Arc<dyn crate::exposition::Families>),
        );
        for desc in c.descs() {
            sink.declare(desc);
        }
        let complete = c.collect(snapshot, &mut sink).is_ok();
        (sink.finish_part(), complete, start.elapsed())
    }
}

/// What a caller keeps of each collector's part between renders of one
/// board's views in one format (see [`Registry::render_parts`]).
#[derive(Debug)]
pub struct PartStore<T> {
    /// By collector.
    parts: Vec<Option<Stored<T>>>,
    /// The length of kubedf's own families, to size the next.
    own_len: usize,
}

impl<T> Default for PartStore<T> {
    fn default() -> Self {
        PartStore {
            parts: Vec::new(),
            own_len: 0,
        }
    }
}

/// A collector's part as the caller keeps it, the counts of the board's
/// parts it was rendered from, and how its run went.
#[derive(Debug)]
struct Stored<T> {
    key: PartsKey,
    complete: bool,
    took: Duration,
    /// The text's length, to size the next render's buffer.
    len: usize,
    value: Arc<T>,
}

/// kubedf's own families: how each collector went (`outcomes`: name,
/// complete, time taken), the sources, the build, the web config and the
/// kubelet configuration in force. They are never filtered: the alerts that
/// tell a silent exporter from a healthy one read them.
fn write_own(outcomes: &[(&'static str, bool, Duration)], snapshot: &Snapshot, sink: &mut Sink) {
    // Emitted as before (their order is that of first emission), the sink
    // puts them in order; they are small.
    for &(name, complete, took) in outcomes {
        sink.add(&COLLECTOR_SUCCESS, [name], i64::from(complete));
        sink.add(&COLLECTOR_DURATION, [name], took.as_secs_f64());
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
    if let Some(web) = &snapshot.web_config {
        let last_success = web
            .last_success
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        sink.add(&WEB_CONFIG_RELOAD_OK, [""; 0], i64::from(web.last_ok));
        sink.add(&WEB_CONFIG_RELOAD_SUCCESS, [""; 0], last_success);
        sink.add(&WEB_CONFIG_RELOADS_FAILED, [""; 0], web.failures);
    }
    let kubelet = &snapshot.kubelet;
    let source = kubelet.source.name();
    // The path comes from a UTF-8 flag; a label value must borrow it.
    // Cluster mode reads no kubelet configuration of its own.
    if snapshot.cluster.is_none()
        && let Some(path) = kubelet.path.to_str()
    {
        sink.add(&KUBELET_CONFIG_INFO, [path, source], 1i64);
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
    fn only_kubedfs_own_small_families_are_put_back_in_order() {
        // Collectors emit family by family, so a render copies nothing twice
        // but kubedf's own families (emitted interleaved).
        let registry = Registry::new(None).unwrap();
        let snapshot = crate::fixtures::node_with_pvcs(1_000);
        for c in registry.collectors() {
            let mut sink = Sink::new(Format::OpenMetrics100, 0);
            for desc in c.descs() {
                sink.declare(desc);
            }
            let _ = c.collect(&snapshot, &mut sink);
            assert_eq!(sink.reordered_bytes(), 0, "{} at 1,000 PVCs", c.name());
        }
        let outcomes: Vec<_> = registry
            .collectors()
            .map(|c| (c.name(), true, Duration::from_micros(1)))
            .collect();
        let mut sink = Sink::new(Format::OpenMetrics100, 0);
        write_own(&outcomes, &snapshot, &mut sink);
        assert!(sink.reordered_bytes() < 8_192, "{}", sink.reordered_bytes());
    }

    /// A board holding `snapshot`'s parts.
    fn board_of(snapshot: &Snapshot) -> crate::model::Board {
        let board =
            crate::model::Board::new(Arc::clone(&snapshot.kubelet), (*snapshot.node).clone());
        board.publish_volumes(snapshot.volumes.clone());
        board.publish_pods(snapshot.pods.clone());
        board
    }

    /// A render without the collectors' timings, which differ run to run.
    fn steady(text: &str) -> String {
        text.lines()
            .filter(|l| !l.starts_with("kubedf_scrape_collector_duration_seconds{"))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    #[test]
    fn a_part_is_kept_until_a_part_of_the_board_it_reads_changes() {
        let fixture = crate::fixtures::node_with_pvcs(50);
        let board = board_of(&fixture);
        let registry = Registry::new(None).unwrap();
        let format = Format::OpenMetrics100;
        let mut store = PartStore::default();
        let mut render = |snapshot: &Snapshot| {
            let parts = registry.render_parts(snapshot, format, &mut store, |t| t);
            let text: String = parts.iter().map(|p| p.as_str()).collect();
            (parts, text)
        };
        let at = |collector: &str| {
            registry
                .collectors()
                .position(|c| c.name() == collector)
                .expect(collector)
        };
        let (volumes, nodefs) = (at("volume_stats"), at("nodefs"));
        let (first, text) = render(&board.snapshot());
        // In parts or at once, the same text.
        assert_eq!(steady(&text), steady(&registry.render_as(&fixture, format)));
        assert!(text.ends_with("# EOF\n"));

        // The node sample changed: the PVCs are not rendered again, the
        // node's families are.
        let mut node = (*fixture.node).clone();
        node.taken_at += Duration::from_secs(15);
        board.publish_node(node);
        let (second, _) = render(&board.snapshot());
        assert!(Arc::ptr_eq(&first[volumes], &second[volumes]));
        assert!(!Arc::ptr_eq(&first[nodefs], &second[nodefs]));

        // A row's reading changed in place: rendered again, and it shows.
        let row = &fixture.volumes.as_ref().unwrap().rows[0];
        let mut reading = row.reading();
        reading.stats = Some(Ok(crate::model::FsUsage {
            capacity_bytes: 987_654_321,
            ..Default::default()
        }));
        assert!(row.set_reading(reading));
        board.changed(crate::model::Part::Volumes);
        let (third, text) = render(&board.snapshot());
        assert!(!Arc::ptr_eq(&second[volumes], &third[volumes]));
        assert!(
            third[volumes].contains(" 987654321\n"),
            "{}",
            third[volumes]
        );
        assert_eq!(
            steady(&text),
            steady(&registry.render_as(&fixture, format)),
            "a kept part renders as a fresh one"
        );

        // A hand-built view is rendered afresh and leaves the board's parts
        // kept.
        let hand_built = crate::fixtures::node_with_pvcs(3);
        let (_, text) = render(&hand_built);
        assert_eq!(
            steady(&text),
            steady(&registry.render_as(&hand_built, format))
        );
        let (fourth, _) = render(&board.snapshot());
        assert!(Arc::ptr_eq(&third[volumes], &fourth[volumes]));
    }

    /// The family names (HELP lines) of a render.
    fn families(text: &str) -> Vec<&str> {
        text.lines()
            .filter_map(|l| l.strip_prefix("# HELP "))
            .filter_map(|l| l.split(' ').next())
            .collect()
    }

    #[test]
    fn the_filter_drops_collector_families_and_never_kubedfs_own() {
        let snapshot = crate::fixtures::node_with_pvcs(3);
        let all = Registry::new(None).unwrap().render(&snapshot);
        let all = families(&all);
        assert!(all.contains(&"kubedf_nodefs_capacity_bytes"), "{all:?}");

        let deny =
            FamilyFilter::new(None, Some("kubedf_nodefs, kubelet_volume_stats_inodes")).unwrap();
        let text = Registry::new(None)
            .unwrap()
            .with_filter(deny)
            .render(&snapshot);
        let kept = families(&text);
        for f in &all {
            let dropped = f.contains("kubedf_nodefs") || f.contains("kubelet_volume_stats_inodes");
            assert_eq!(kept.contains(f), !dropped, "{f} in {kept:?}");
        }
        // No sample of a dropped family either.
        assert!(!text.contains("\nkubedf_nodefs_"), "{text}");

        let allow = FamilyFilter::new(Some("^kubedf_imagefs_capacity_bytes$"), None).unwrap();
        let text = Registry::new(None)
            .unwrap()
            .with_filter(allow)
            .render(&snapshot);
        let kept = families(&text);
        let own: Vec<&str> = SELF_DESCS.iter().map(|d| d.name).collect();
        for f in &kept {
            assert!(
                *f == "kubedf_imagefs_capacity_bytes" || own.contains(f),
                "{f} kept by an allowlist of imagefs_capacity only"
            );
        }
        assert!(kept.contains(&"kubedf_imagefs_capacity_bytes"), "{kept:?}");
        assert!(kept.contains(&"kubedf_build_info"), "{kept:?}");
        assert!(
            kept.contains(&"kubedf_scrape_collector_success"),
            "{kept:?}"
        );
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
