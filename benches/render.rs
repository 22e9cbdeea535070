//! What a scrape costs kubedf: rendering a snapshot with 1,000 and 10,000
//! PVCs into the OpenMetrics text (`cargo bench --bench render`).
//!
//! - `render/<n>`: `Registry::render`, everything a scrape does but HTTP and gzip;
//! - `collect/<n>`: only the collectors (`Registry::collect`), no text;
//! - `render_gzip/<n>`: render, then gzip at the fastest level, as a scrape
//!   with `Accept-Encoding: gzip` gets it.
//!
//! The snapshot has every collector's data (a split image filesystem, nodefs,
//! rlimit) and `n` statfs-measured CSI volumes with realistic label lengths.
//! `bench/run.sh` runs this and reports criterion's estimates.

use std::hint::black_box;
use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use kubedf::kubelet::config::KubeletConfig;
use kubedf::model::FsUsage;
use kubedf::model::Rlimit;
use kubedf::model::RuntimeVersion;
use kubedf::model::SourceId;
use kubedf::model::{Filesystem, NodeSample, Reading, Runtime, Snapshot, SourceStatus};
use kubedf::model::{Method, VolumeMode};
use kubedf::model::{VolumeRow, VolumeTable};
use kubedf::registry::Registry;

const SIZES: [usize; 2] = [1_000, 10_000];

fn usage(capacity: u64, used: u64) -> FsUsage {
    FsUsage {
        capacity_bytes: capacity,
        available_bytes: capacity - used,
        used_bytes: used,
        inodes: 6_553_600,
        inodes_free: 6_500_000,
        inodes_used: 53_600,
    }
}

fn status(source: SourceId, at: SystemTime) -> SourceStatus {
    SourceStatus {
        source,
        up: true,
        last_success: Some(at),
        duration: Some(Duration::from_millis(3)),
        error: None,
    }
}

/// A volume as a real cluster names it: a StatefulSet's claim, its pod, and
/// a dynamically provisioned `pvc-<uid>` PV.
fn row(i: usize) -> Arc<VolumeRow> {
    let capacity = 10_737_418_240 + (i as u64) * 4096;
    let reading = Reading {
        method: Some(Method::Statfs),
        stats: Some(Ok(usage(capacity, capacity / 3 + i as u64))),
    };
    let row = VolumeRow::new(
        &format!("team-{}", i % 50),
        &format!("data-postgres-{i}"),
        &format!("postgres-{i}"),
        reading,
    );
    Arc::new(row.with_pv(
        &format!(
            "pvc-{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            i * 2_654_435_761 % (1 << 32),
            i % 65_536,
            i % 4096,
            (i * 7) % 4096,
            i * 1_000_003
        ),
        "ebs.csi.aws.com",
        VolumeMode::Filesystem,
    ))
}

fn snapshot(volumes: usize) -> Snapshot {
    let at = SystemTime::now();
    let kubelet = KubeletConfig::defaults("/var/lib/kubelet/config.yaml".into());
    let node = NodeSample {
        taken_at: at,
        runtime: Some(Ok(Runtime {
            version: RuntimeVersion {
                runtime_name: "containerd".into(),
                runtime_version: "v1.7.20".into(),
                runtime_api_version: "v1".into(),
            },
            image_fs: Ok(Filesystem {
                path: "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs".into(),
                usage: usage(21_462_233_088, 2_846_437_376),
                device: 2049,
            }),
            container_fs: None,
        })),
        nodefs: Some(Ok(Filesystem {
            path: "/var/lib/kubelet".into(),
            usage: usage(107_374_182_400, 10_737_418_240),
            device: 2049,
        })),
        rlimit: Some(Ok(Rlimit {
            maxpid: 254_751,
            curproc: 1_187,
        })),
        sources: vec![
            status(SourceId::Cri, at),
            status(SourceId::ImageFs, at),
            status(SourceId::NodeFs, at),
            status(SourceId::Procfs, at),
        ],
    };
    let table = VolumeTable {
        rows: (0..volumes).map(row).collect(),
        source: SourceStatus {
            duration: None,
            ..status(SourceId::Kubernetes, at)
        },
    };
    Snapshot::new(Arc::new(kubelet), node, Some(table))
}

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
        let snap = snapshot(n);
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
        let mut collect = c.benchmark_group("collect");
        collect.bench_with_input(BenchmarkId::from_parameter(n), &snap, |b, s| {
            b.iter(|| registry.collect(black_box(s)).families.len());
        });
        collect.finish();
        let mut gzip = c.benchmark_group("render_gzip");
        gzip.bench_with_input(BenchmarkId::from_parameter(n), &snap, |b, s| {
            b.iter(|| gzip_fast(&registry.render(black_box(s))));
        });
        gzip.finish();
    }
}

criterion_group!(render, benches);
criterion_main!(render);
