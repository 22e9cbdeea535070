//! Series per node by setting, for docs/performance.md: a busy node (110
//! pods of two containers, two emptyDirs and a configMap each, 5 PVCs),
//! rendered by the real registry under the filters a user would set, and
//! multiplied out to a 5,000-node cluster.
//!
//! `cargo run --release --example series`

use kubedf::collector::filter::FamilyFilter;
use kubedf::registry::Registry;

/// (setting, --metric-allowlist, --metric-denylist)
const SETTINGS: [(&str, Option<&str>, Option<&str>); 6] = [
    ("default (every family)", None, None),
    ("no inode series", None, Some("inodes")),
    (
        "pods' totals only (no per-container or per-volume series)",
        None,
        Some("^kubedf_container_,^kubedf_ephemeral_volume_"),
    ),
    (
        "pods' totals only, bytes only",
        None,
        Some("^kubedf_container_,^kubedf_ephemeral_volume_,inodes"),
    ),
    (
        "no pod series",
        None,
        Some("^kubedf_pod_,^kubedf_container_,^kubedf_ephemeral_volume_"),
    ),
    (
        "node filesystems, headroom and PVCs only",
        Some(
            "^kubedf_(nodefs|imagefs|containerfs|rlimit|eviction|image_gc)_,^kubelet_volume_stats_",
        ),
        None,
    ),
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (pods, pvcs, nodes) = (110, 5, 5_000u64);
    let snapshot = kubedf::fixtures::busy_node(pods, pvcs);
    println!(
        "A node of {pods} pods (2 containers, 2 emptyDirs and a configMap each) and {pvcs} PVCs.\n"
    );
    println!("| setting | flag | series per node | series per {nodes}-node cluster |");
    println!("|---|---|---|---|");
    for (name, allow, deny) in SETTINGS {
        let registry = Registry::new(None)?.with_filter(FamilyFilter::new(allow, deny)?);
        let text = registry.render(&snapshot);
        let series = text.lines().filter(|l| !l.starts_with('#')).count() as u64;
        let flag = match (allow, deny) {
            (Some(a), _) => format!("`--metric-allowlist={a}`"),
            (_, Some(d)) => format!("`--metric-denylist={d}`"),
            _ => "none".to_owned(),
        };
        // A `|` inside a table cell must be escaped.
        let flag = flag.replace('|', "\\|");
        println!("| {name} | {flag} | {series} | {} |", series * nodes);
    }
    Ok(())
}
