//! The exposition cache: the body of the latest snapshot, rendered once
//! per format and gzipped once per format however many scrapers ask. The
//! board's version says when to render again, so anything a render shows
//! must be on the board (a value read from elsewhere would be served stale).
//! A gzip body is joined from its parts' deflated blocks ([`super::gzip`]),
//! each kept until a part of the board its collector reads changes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, Weak};

use axum::body::Bytes;
use tracing::warn;

use super::gzip::{self, Deflated, Deflater};
use crate::exposition::Format;
use crate::model::Snapshot;
use crate::model::cluster::{ClusterTable, NodeEntry};
use crate::registry::{PartStore, Registry};

/// The exposition of the latest snapshot, rendered once per format and
/// gzipped at most once per format however many scrapers ask: it is
/// rendered again only when the board's version says a part changed, and
/// then only the collectors whose parts of the board changed run again.
///
/// Only the bodies that were asked for are kept: a scraper that asks for
/// gzip (Prometheus always does) leaves the gzip body and its parts' deflated
/// blocks cached, not the plain text (about ten times their size, which at
/// 5,000 volumes is megabytes).
#[derive(Default)]
pub struct ExpositionCache {
    current: tokio::sync::Mutex<Cached>,
    /// Renders, gzip bodies and deflated parts made so far, for the tests
    /// of this cache.
    renders: AtomicU64,
    gzips: AtomicU64,
    deflated: AtomicU64,
    /// The size of the plain text when a render last reported a peak.
    peak_len: AtomicUsize,
}

#[derive(Default)]
struct Cached {
    /// The board version of the bodies; None before the first.
    version: Option<u64>,
    text: FormatCache,
    /// OpenMetrics 1.0.0 and 0.0.1 share one body.
    openmetrics: FormatCache,
}

/// One format's bodies, and the deflated parts of its gzip body, kept
/// across versions.
#[derive(Default)]
struct FormatCache {
    bodies: Rendered,
    /// `None` for a part that would not deflate.
    parts: PartStore<Option<Deflated>>,
}

/// One format's bodies, each kept once a scraper asked for it.
#[derive(Default)]
struct Rendered {
    plain: Option<Bytes>,
    gzip: Option<Bytes>,
}

/// A render whose size differs from the last reported one by more than
/// this fraction (and [`PEAK_MIN_BYTES`]) reports a peak to [`crate::exec::heap`].
const PEAK_FRACTION: usize = 4;
const PEAK_MIN_BYTES: usize = 256 << 10;

impl ExpositionCache {
    /// The body for `snapshot` in `format`, gzipped when `want_gzip` (and
    /// gzip worked), and whether it is gzipped.
    pub async fn body(
        &self,
        registry: &Registry,
        snapshot: &Snapshot,
        format: Format,
        want_gzip: bool,
    ) -> (Bytes, bool) {
        let mut guard = self.current.lock().await;
        let cached = &mut *guard;
        if cached.version != Some(snapshot.version) {
            cached.version = Some(snapshot.version);
            cached.text.bodies = Rendered::default();
            cached.openmetrics.bodies = Rendered::default();
        }
        let FormatCache { bodies, parts } = if format.is_openmetrics() {
            &mut cached.openmetrics
        } else {
            &mut cached.text
        };
        if want_gzip {
            if bodies.gzip.is_none() {
                bodies.gzip = self.gzip(registry, snapshot, format, parts);
            }
            if let Some(body) = &bodies.gzip {
                return (body.clone(), true);
            }
        }
        let plain = bodies
            .plain
            .get_or_insert_with(|| self.render(registry, snapshot, format))
            .clone();
        (plain, false)
    }

    /// The gzip body, from the parts kept in `parts` and the collectors'
    /// parts that changed; `None` if a part would not deflate.
    fn gzip(
        &self,
        registry: &Registry,
        snapshot: &Snapshot,
        format: Format,
        parts: &mut PartStore<Option<Deflated>>,
    ) -> Option<Bytes> {
        self.renders.fetch_add(1, Ordering::Relaxed);
        self.gzips.fetch_add(1, Ordering::Relaxed);
        // One compressor for the parts that changed, reset between them.
        let mut deflater = Deflater::default();
        let parts = registry.render_parts(snapshot, format, parts, |text| {
            self.deflated.fetch_add(1, Ordering::Relaxed);
            deflater
                .deflate(text.as_bytes())
                .inspect_err(|e| warn!(error = %e, "gzip failed; answering uncompressed"))
                .ok()
        });
        let parts: Vec<&Deflated> = parts
            .iter()
            .map(|p| p.as_ref().as_ref())
            .collect::<Option<_>>()?;
        let text_len = parts.iter().map(|p| p.text_len()).sum::<u64>();
        self.after_render(usize::try_from(text_len).unwrap_or(usize::MAX));
        Some(Bytes::from(gzip::member(parts.iter().copied())))
    }

    fn render(&self, registry: &Registry, snapshot: &Snapshot, format: Format) -> Bytes {
        self.renders.fetch_add(1, Ordering::Relaxed);
        let mut text = registry.render_as(snapshot, format);
        // The text grew by doubling: up to half of its buffer is spare.
        text.shrink_to_fit();
        self.after_render(text.len());
        Bytes::from(text)
    }

    /// A render at a new size leaves the buffers of its growth behind: hand
    /// them back once things are quiet (not per scrape).
    fn after_render(&self, text_len: usize) {
        let last = self.peak_len.load(Ordering::Relaxed);
        if text_len.abs_diff(last) > (last / PEAK_FRACTION).max(PEAK_MIN_BYTES) {
            self.peak_len.store(text_len, Ordering::Relaxed);
            crate::exec::heap::after_peak();
        }
    }

    /// (renders, gzip bodies) made so far.
    pub fn work_done(&self) -> (u64, u64) {
        (
            self.renders.load(Ordering::Relaxed),
            self.gzips.load(Ordering::Relaxed),
        )
    }

    /// Parts deflated so far.
    pub fn parts_deflated(&self) -> u64 {
        self.deflated.load(Ordering::Relaxed)
    }
}

impl Rendered {
    /// The body, gzipped when `want_gzip` (and gzip worked), and whether it
    /// is; `render` makes the plain text when it is not kept. For a body
    /// rendered in one piece (cluster mode's per-node bodies).
    fn body(
        &mut self,
        want_gzip: bool,
        gzips: &AtomicU64,
        render: impl FnOnce() -> Bytes,
    ) -> (Bytes, bool) {
        // Rendered at most once per call.
        let mut render = Some(render);
        let mut make = move || render.take().map(|r| r()).unwrap_or_default();
        if want_gzip {
            if self.gzip.is_none() {
                // From the cached plain text if a scraper asked for it, else
                // from a render that is not kept.
                let plain = self.plain.clone().unwrap_or_else(&mut make);
                gzips.fetch_add(1, Ordering::Relaxed);
                match gzip::gzip(&plain) {
                    Ok(body) => self.gzip = Some(Bytes::from(body)),
                    Err(e) => {
                        warn!(error = %e, "gzip failed; answering uncompressed");
                        self.plain = Some(plain);
                    }
                }
            }
            if let Some(body) = &self.gzip {
                return (body.clone(), true);
            }
        }
        let plain = self.plain.get_or_insert_with(make).clone();
        (plain, false)
    }
}

/// Cluster mode's per-node expositions (`/nodes/<node>/metrics`), each
/// rendered and gzipped once per format until its node's row changes. A
/// row is told by its allocation (held weakly, so its address is not
/// reused while cached); the rows of nodes gone are dropped.
#[derive(Default)]
pub struct NodeCache {
    nodes: std::sync::Mutex<HashMap<String, NodeCached>>,
    renders: AtomicU64,
    gzips: AtomicU64,
}

struct NodeCached {
    entry: Weak<NodeEntry>,
    text: Rendered,
    openmetrics: Rendered,
}

impl NodeCache {
    /// `node`'s body in `format` (gzipped when `want_gzip` and gzip worked)
    /// and whether it is gzipped; `None` for a node `table` lacks.
    pub fn body(
        &self,
        table: &ClusterTable,
        node: &str,
        format: Format,
        want_gzip: bool,
    ) -> Option<(Bytes, bool)> {
        let entry = table.nodes.get(node)?;
        let mut nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        if nodes.len() > table.nodes.len() {
            nodes.retain(|name, _| table.nodes.contains_key(name));
        }
        let cached = match nodes.get_mut(node) {
            Some(c) if std::ptr::eq(c.entry.as_ptr(), Arc::as_ptr(entry)) => c,
            _ => {
                nodes.insert(
                    node.to_owned(),
                    NodeCached {
                        entry: Arc::downgrade(entry),
                        text: Rendered::default(),
                        openmetrics: Rendered::default(),
                    },
                );
                nodes.get_mut(node)?
            }
        };
        let rendered = if format.is_openmetrics() {
            &mut cached.openmetrics
        } else {
            &mut cached.text
        };
        Some(rendered.body(want_gzip, &self.gzips, || {
            self.renders.fetch_add(1, Ordering::Relaxed);
            let text =
                crate::collector::cluster::render_node(table, node, format).unwrap_or_default();
            Bytes::from(text)
        }))
    }

    /// (renders, gzips) done so far.
    pub fn work_done(&self) -> (u64, u64) {
        (
            self.renders.load(Ordering::Relaxed),
            self.gzips.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text of a gzip body.
    fn gunzip(body: &[u8]) -> String {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(body), &mut text)
            .expect("gunzip");
        text
    }

    /// A render without the collectors' timings, which differ run to run.
    fn steady(body: &str) -> Vec<&str> {
        body.lines()
            .filter(|l| !l.starts_with("kubedf_scrape_collector_duration_seconds{"))
            .collect()
    }

    #[tokio::test]
    async fn each_format_is_rendered_and_gzipped_once_per_snapshot() {
        let registry = Registry::new(None).expect("registry");
        let cache = ExpositionCache::default();
        let first = crate::fixtures::node();
        for _ in 0..3 {
            for format in [Format::OpenMetrics100, Format::OpenMetrics001, Format::Text] {
                for gzip in [false, true] {
                    let (body, gzipped) = cache.body(&registry, &first, format, gzip).await;
                    assert_eq!(gzipped, gzip);
                    let text = match gzip {
                        true => gunzip(&body),
                        false => String::from_utf8(body.to_vec()).expect("utf-8"),
                    };
                    assert_eq!(text.ends_with("# EOF\n"), format.is_openmetrics());
                }
            }
        }
        // OpenMetrics 1.0.0 and 0.0.1 share their bodies: one plain render
        // and one gzip body per format.
        assert_eq!(cache.work_done(), (4, 2));
        // A new snapshot is rendered anew, and only in the format asked for.
        let second = Snapshot {
            version: first.version + 1,
            ..crate::fixtures::node()
        };
        cache.body(&registry, &second, Format::Text, false).await;
        assert_eq!(cache.work_done(), (5, 2));
        // Asked only for gzip (as Prometheus asks), the cache keeps no plain
        // text: a plain answer is rendered anew, then kept.
        let third = Snapshot {
            version: first.version + 2,
            ..crate::fixtures::node()
        };
        let (gzipped, _) = cache.body(&registry, &third, Format::Text, true).await;
        assert_eq!(cache.work_done(), (6, 3));
        {
            let kept = cache.current.lock().await;
            assert!(kept.text.bodies.plain.is_none() && kept.text.bodies.gzip.is_some());
        }
        let (plain, _) = cache.body(&registry, &third, Format::Text, false).await;
        cache.body(&registry, &third, Format::Text, false).await;
        cache.body(&registry, &third, Format::Text, true).await;
        assert_eq!(cache.work_done(), (7, 3));
        let plain = std::str::from_utf8(&plain).expect("utf-8");
        assert_eq!(steady(&gunzip(&gzipped)), steady(plain));
    }

    #[tokio::test]
    async fn a_new_node_sample_deflates_the_node_parts_not_the_pvcs() {
        let fixture = crate::fixtures::node_with_pvcs(200);
        let board = crate::model::Board::new(Arc::clone(&fixture.kubelet), (*fixture.node).clone());
        board.publish_volumes(fixture.volumes.clone());
        let registry = Registry::new(None).expect("registry");
        let cache = ExpositionCache::default();
        let parts = registry.collectors().count() as u64 + 1;
        let format = Format::OpenMetrics100;

        let (first, _) = cache.body(&registry, &board.snapshot(), format, true).await;
        assert_eq!(cache.parts_deflated(), parts, "every part at first");
        let mut node = (*fixture.node).clone();
        node.taken_at += std::time::Duration::from_secs(15);
        board.publish_node(node);
        let (second, _) = cache.body(&registry, &board.snapshot(), format, true).await;
        // Every part but the PVCs' and the pods' (whose parts of the board
        // did not change) is deflated again.
        assert_eq!(cache.parts_deflated(), 2 * parts - 2);
        assert_eq!(steady(&gunzip(&first)), steady(&gunzip(&second)));
        let fresh = registry.render_as(&board.snapshot(), format);
        assert_eq!(
            steady(&gunzip(&second)),
            steady(&fresh),
            "joined as rendered at once"
        );
        // The text format keeps its own parts.
        cache
            .body(&registry, &board.snapshot(), Format::Text, true)
            .await;
        assert_eq!(cache.parts_deflated(), 3 * parts - 2);
    }
}

#[cfg(test)]
mod node_cache_tests {
    use super::*;
    use crate::model::cluster::{NodeEntry, NodeFigures};

    fn table(names: &[&str]) -> ClusterTable {
        let mut t = ClusterTable::default();
        for n in names {
            t.nodes.insert(
                (*n).to_owned(),
                Arc::new(NodeEntry {
                    figures: Some(Arc::new({
                        let mut f = NodeFigures::default();
                        f.max_pid = Some(7);
                        f
                    })),
                    ..NodeEntry::default()
                }),
            );
        }
        t
    }

    #[test]
    fn a_node_is_rendered_once_until_its_row_changes() {
        let cache = NodeCache::default();
        let t = table(&["a", "b"]);
        for _ in 0..3 {
            let (body, gz) = cache.body(&t, "a", Format::Text, false).expect("a");
            assert!(!gz);
            assert!(
                std::str::from_utf8(&body)
                    .expect("utf-8")
                    .contains("node=\"a\"")
            );
        }
        assert_eq!(cache.work_done(), (1, 0));
        cache.body(&t, "a", Format::Text, true).expect("a");
        cache.body(&t, "a", Format::Text, true).expect("a");
        assert_eq!(cache.work_done(), (1, 1));
        cache
            .body(&t, "a", Format::OpenMetrics100, false)
            .expect("a");
        assert_eq!(cache.work_done(), (2, 1));
        assert!(cache.body(&t, "zz", Format::Text, false).is_none());
        // A new row for a: rendered anew; b's row unchanged.
        let mut t2 = t.clone();
        t2.nodes.insert("a".into(), Arc::new(NodeEntry::default()));
        cache.body(&t2, "a", Format::Text, false).expect("a");
        assert_eq!(cache.work_done(), (3, 1));
        cache.body(&t2, "b", Format::Text, false).expect("b");
        cache.body(&t2, "b", Format::Text, false).expect("b");
        assert_eq!(cache.work_done(), (4, 1));
        // A node gone is dropped from the cache.
        let t3 = table(&["c"]);
        cache.body(&t3, "c", Format::Text, false).expect("c");
        let kept = cache.nodes.lock().expect("lock");
        assert_eq!(kept.keys().collect::<Vec<_>>(), ["c"]);
    }
}
