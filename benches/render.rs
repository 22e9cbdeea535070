//! What a scrape costs kubedf: rendering a snapshot with 1,000 and 10,000
//! PVCs into the OpenMetrics text (`cargo bench --bench render`).
//!
//! - `render/<n>`: `Registry::render`, everything a scrape does but HTTP and
//!   gzip, in OpenMetrics (what Prometheus asks for);
//! - `render_text/<n>`: the same in the Prometheus text format 0.0.4;
//! - `render_gzip/<n>`: render, then gzip at the fastest level, as a scrape
//!   with `Accept-Encoding: gzip` gets it.
//!
//! The snapshot is the golden test's node (`kubedf::fixtures`: a split image
//! filesystem, nodefs, rlimit) with `n` statfs-measured CSI volumes with
//! realistic label lengths.
//! `bench/run.sh` runs this and reports criterion's estimates.
//!
//! There is no separate "collectors alone" figure: collectors write their
//! samples' text straight into the exposition, so collecting is rendering.

use std::hint::black_box;
use std::io::Write as _;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use kubedf::exposition::Format;
use kubedf::fixtures;
use kubedf::registry::Registry;

const SIZES: [usize; 2] = [1_000, 10_000];

fn gzip_fast(text: &str) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(text.len() / 8),
        flate2::Compression::fast(),
    );
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(text.as_bytes());
    enc.finish().unwrap_or_default()
}

fn benches(c: &mut Criterion) {
    let registry = Registry::new(None).expect("every collector");
    for n in SIZES {
        let snap = fixtures::node_with_pvcs(n);
        // The snapshot must render one series set per PVC.
        let text = registry.render(&snap);
        let series = text
            .lines()
            .filter(|l| l.starts_with("kubelet_volume_stats_used_bytes{"))
            .count();
        assert_eq!(series, n, "rendered PVCs");
        let mut render = c.benchmark_group("render");
        render.bench_with_input(BenchmarkId::from_parameter(n), &snap, |b, s| {
            b.iter(|| registry.render(black_box(s)));
        });
        render.finish();
        let mut text = c.benchmark_group("render_text");
        text.bench_with_input(BenchmarkId::from_parameter(n), &snap, |b, s| {
            b.iter(|| registry.render_as(black_box(s), Format::Text));
        });
        text.finish();
        let mut gzip = c.benchmark_group("render_gzip");
        gzip.bench_with_input(BenchmarkId::from_parameter(n), &snap, |b, s| {
            b.iter(|| gzip_fast(&registry.render(black_box(s))));
        });
        gzip.finish();
    }
}

criterion_group!(render, benches);
criterion_main!(render);
