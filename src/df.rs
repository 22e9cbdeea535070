//! `kubedf df`: the snapshot as a table a person reads, like df(1), with the
//! distance of each filesystem and of PIDs to image GC and eviction.

use std::fmt::Write as _;

use crate::collector::eviction::observe;
use crate::kubelet::eviction::{Kind, Signal, SignalUnit};
use crate::kubelet::int64;
use crate::model::VolumeTable;
use crate::model::{Filesystem, Snapshot};

/// Bytes the way df -h writes them: 1024-based, one decimal under 10.
pub fn human_bytes(bytes: i64) -> String {
    human(bytes, 1024.0, &["B", "K", "M", "G", "T", "P", "E"])
}

/// Counts (inodes, PIDs) with SI suffixes.
pub fn human_count(n: i64) -> String {
    human(n, 1000.0, &["", "k", "M", "G", "T", "P", "E"])
}

fn human(value: i64, base: f64, units: &[&str]) -> String {
    let sign = if value < 0 { "-" } else { "" };
    let mut v = value.unsigned_abs() as f64;
    let mut unit = 0;
    while v >= base && unit + 1 < units.len() {
        v /= base;
        unit += 1;
    }
    if unit == 0 {
        format!("{sign}{}{}", value.unsigned_abs(), units[0])
    } else if v < 10.0 {
        format!("{sign}{v:.1}{}", units[unit])
    } else {
        format!("{sign}{v:.0}{}", units[unit])
    }
}

fn in_unit(value: i64, unit: SignalUnit) -> String {
    match unit {
        SignalUnit::Bytes => human_bytes(value),
        SignalUnit::Inodes | SignalUnit::Pids => human_count(value),
    }
}

fn percent(used: u64, total: u64) -> String {
    if total == 0 {
        "-".into()
    } else {
        // df rounds use% up.
        format!("{}%", (u128::from(used) * 100).div_ceil(u128::from(total)))
    }
}

/// A simple left/right aligned table.
struct Table {
    rows: Vec<Vec<String>>,
    /// Columns aligned left; the rest align right.
    left: Vec<usize>,
}

impl Table {
    fn render(&self, out: &mut String) {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|s| s.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for row in &self.rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                if c > 0 {
                    line.push_str("  ");
                }
                let pad = widths[c].saturating_sub(cell.chars().count());
                if self.left.contains(&c) {
                    line.push_str(cell);
                    if c + 1 < row.len() {
                        line.push_str(&" ".repeat(pad));
                    }
                } else {
                    line.push_str(&" ".repeat(pad));
                    line.push_str(cell);
                }
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
    }
}

fn fs_row(kind: &str, fs: Result<&Filesystem, String>, errors: &mut Vec<String>) -> Vec<String> {
    match fs {
        Ok(fs) => {
            let u = &fs.usage;
            vec![
                kind.into(),
                human_bytes(int64(u.capacity_bytes)),
                human_bytes(int64(u.used_bytes)),
                human_bytes(int64(u.available_bytes)),
                percent(u.used_bytes, u.used_bytes + u.available_bytes),
                human_count(int64(u.inodes)),
                human_count(int64(u.inodes_used)),
                human_count(int64(u.inodes_free)),
                percent(u.inodes_used, u.inodes),
                fs.path.clone(),
            ]
        }
        Err(e) => {
            errors.push(format!("{kind}: {e}"));
            let mut row = vec![kind.to_owned()];
            row.extend(std::iter::repeat_n("?".to_owned(), 8));
            row.push("(unavailable, see below)".into());
            row
        }
    }
}

/// Renders the whole report.
pub fn render(snapshot: &Snapshot) -> String {
    let mut out = String::new();
    let mut errors = Vec::new();

    let mut usage = Table {
        rows: vec![
            [
                "FILESYSTEM",
                "SIZE",
                "USED",
                "AVAIL",
                "USE%",
                "INODES",
                "IUSED",
                "IFREE",
                "IUSE%",
                "PATH",
            ]
            .map(String::from)
            .to_vec(),
        ],
        left: vec![0, 9],
    };
    usage
        .rows
        .push(fs_row("nodefs", snapshot.nodefs(), &mut errors));
    usage
        .rows
        .push(fs_row("imagefs", snapshot.image_fs(), &mut errors));
    if let Some(Ok(rt)) = snapshot.runtime()
        && let Some(container_fs) = &rt.container_fs
    {
        usage.rows.push(fs_row(
            "containerfs",
            container_fs.as_ref().map_err(Clone::clone),
            &mut errors,
        ));
    }
    match snapshot.rlimit() {
        Ok(r) => usage.rows.push(vec![
            "pids".into(),
            human_count(r.maxpid),
            human_count(r.curproc),
            human_count(r.available()),
            percent(
                r.curproc.max(0).unsigned_abs(),
                r.maxpid.max(0).unsigned_abs(),
            ),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            "(maxpid, processes and threads)".into(),
        ]),
        Err(e) => errors.push(format!("pids: {e}")),
    }
    usage.render(&mut out);

    let policy = snapshot.kubelet.image_gc;
    out.push('\n');
    match snapshot.image_fs() {
        Ok(fs) => match policy.evaluate(
            int64(fs.usage.capacity_bytes),
            int64(fs.usage.available_bytes),
        ) {
            Ok(gc) if gc.usage_percent >= i64::from(policy.high_threshold_percent) => {
                let _ = writeln!(
                    out,
                    "image GC: DUE. imagefs usage is {}% (kubelet's rounding), at or over the high threshold {}%; \
                     GC must free {} to get down to {}%.",
                    gc.usage_percent,
                    policy.high_threshold_percent,
                    human_bytes(gc.bytes_to_free),
                    policy.low_threshold_percent
                );
            }
            Ok(gc) => {
                let _ = writeln!(
                    out,
                    "image GC: imagefs usage is {}% (kubelet's rounding); GC starts at {}% (in {}) and frees down to {}%.",
                    gc.usage_percent,
                    policy.high_threshold_percent,
                    human_bytes(gc.bytes_until_gc),
                    policy.low_threshold_percent
                );
            }
            Err(e) => {
                let _ = writeln!(out, "image GC: unknown: {e}");
            }
        },
        Err(_) => {
            let _ = writeln!(out, "image GC: unknown (imagefs unavailable)");
        }
    }

    out.push('\n');
    let layout = snapshot.fs_layout();
    let eviction = &snapshot.kubelet.eviction;
    let mut table = Table {
        rows: vec![
            [
                "EVICTION SIGNAL",
                "AVAILABLE",
                "HARD AT",
                "HEADROOM",
                "SOFT AT",
                "HEADROOM",
            ]
            .map(String::from)
            .to_vec(),
        ],
        left: vec![0],
    };
    for signal in Signal::ALL {
        let Ok((available, capacity)) = observe(snapshot, signal) else {
            continue;
        };
        let unit = signal.unit();
        let mut row = vec![signal.name().to_owned(), in_unit(available, unit)];
        for kind in [Kind::Hard, Kind::Soft] {
            match eviction.threshold(kind, signal, layout) {
                Some(t) => {
                    let at = t.resolve(capacity);
                    let headroom = available - at;
                    row.push(format!("{} ({t})", in_unit(at, unit)));
                    row.push(if headroom < 0 {
                        format!("MET by {}", in_unit(-headroom, unit))
                    } else {
                        in_unit(headroom, unit)
                    });
                }
                None => {
                    row.push("-".into());
                    row.push("-".into());
                }
            }
        }
        table.rows.push(row);
    }
    table.render(&mut out);

    if let Some(volumes) = &snapshot.volumes {
        render_volumes(&mut out, volumes, &mut errors);
    }

    let config = &snapshot.kubelet;
    let _ = writeln!(
        out,
        "\nthresholds from {}{}",
        config.path.display(),
        if config.from_file {
            ""
        } else {
            " (not found: kubelet defaults)"
        }
    );
    if !eviction.dropped_defaults.is_empty() {
        let names: Vec<&str> = eviction.dropped_defaults.iter().map(|s| s.name()).collect();
        let _ = writeln!(
            out,
            "warning: evictionHard in {} does not name {}; kubelet then leaves them without a threshold \
             instead of its defaults, so those filesystems are not protected by eviction. \
             Name them, or set mergeDefaultEvictionSettings: true.",
            config.path.display(),
            names.join(", ")
        );
    }
    for e in errors {
        let _ = writeln!(out, "error: {e}");
    }
    out
}

fn render_volumes(out: &mut String, volumes: &VolumeTable, errors: &mut Vec<String>) {
    out.push('\n');
    if let Some(e) = &volumes.source.error {
        errors.push(format!("kubernetes: {e}"));
    }
    if volumes.rows.is_empty() {
        let _ = writeln!(out, "no PVCs in use by running pods on this node");
        return;
    }
    let mut table = Table {
        rows: vec![
            [
                "PVC", "SIZE", "USED", "AVAIL", "USE%", "INODES", "IUSED", "IUSE%", "METHOD",
            ]
            .map(String::from)
            .to_vec(),
        ],
        left: vec![0, 8],
    };
    for row in &volumes.rows {
        let name = format!("{}/{}", row.namespace, row.claim);
        let reading = row.reading();
        let method = reading.method.map(|m| m.name()).unwrap_or("-").to_owned();
        match &reading.stats {
            Some(Ok(u)) => table.rows.push(vec![
                name,
                human_bytes(int64(u.capacity_bytes)),
                human_bytes(int64(u.used_bytes)),
                human_bytes(int64(u.available_bytes)),
                percent(u.used_bytes, u.capacity_bytes),
                human_count(int64(u.inodes)),
                human_count(int64(u.inodes_used)),
                percent(u.inodes_used, u.inodes),
                method,
            ]),
            other => {
                let why = match other {
                    Some(Err(e)) => {
                        errors.push(format!("{name}: {e}"));
                        e.reason.name().to_owned()
                    }
                    _ => "not measured yet".to_owned(),
                };
                let mut cells = vec![name];
                cells.extend(std::iter::repeat_n("?".to_owned(), 7));
                cells.push(format!("{method} ({why})"));
                table.rows.push(cells);
            }
        }
    }
    table.render(out);
}

/// `kubedf df --pods`: the node's pods ranked by local ephemeral storage,
/// each with its limit and headroom (what is left before kubelet evicts it),
/// then the emptyDirs that have a sizeLimit.
pub fn render_pods(snapshot: &Snapshot) -> String {
    let mut out = String::new();
    let Some(table) = &snapshot.pods else {
        out.push_str(
            "pods: not measured (the pod_storage collector is off or has no cluster access)\n",
        );
        return out;
    };
    let mut pods: Vec<(&crate::model::pod::PodRow, Option<u64>)> = table
        .rows
        .iter()
        .map(|r| {
            (
                r,
                r.ephemeral_storage().and_then(Result::ok).map(|u| u.bytes),
            )
        })
        .collect();
    // Largest first; pods without a figure last.
    pods.sort_by(|a, b| {
        b.1.cmp(&a.1)
            .then_with(|| (&a.0.namespace, &a.0.name).cmp(&(&b.0.namespace, &b.0.name)))
    });
    let mut t = Table {
        rows: vec![
            [
                "NAMESPACE",
                "POD",
                "EPHEMERAL",
                "INODES",
                "LIMIT",
                "HEADROOM",
                "USE%",
                "NOTE",
            ]
            .map(String::from)
            .to_vec(),
        ],
        left: vec![0, 1, 7],
    };
    for (row, used) in &pods {
        let total = row.ephemeral_storage();
        let inodes = match &total {
            Some(Ok(u)) => human_count(int64(u.inodes)),
            _ => "?".into(),
        };
        let note = match &total {
            None => "not measured yet".to_owned(),
            Some(Ok(_)) => String::new(),
            Some(Err(e)) => format!("{}: {}", e.reason.name(), e.message),
        };
        let (limit, headroom, use_pct) = match (row.limit, used) {
            (Some(l), Some(u)) => {
                let l64 = u64::try_from(l).unwrap_or(0);
                (
                    human_bytes(l),
                    human_bytes(l.saturating_sub(int64(*u))),
                    percent(*u, l64),
                )
            }
            (Some(l), None) => (human_bytes(l), "?".into(), "?".into()),
            (None, _) => ("-".into(), "-".into(), "-".into()),
        };
        t.rows.push(vec![
            row.namespace.clone(),
            row.name.clone(),
            used.map_or_else(|| "?".into(), |u| human_bytes(int64(u))),
            inodes,
            limit,
            headroom,
            use_pct,
            note,
        ]);
    }
    t.render(&mut out);
    let mut dirs = Table {
        rows: vec![
            [
                "NAMESPACE",
                "POD",
                "EMPTYDIR",
                "USED",
                "SIZELIMIT",
                "HEADROOM",
                "USE%",
            ]
            .map(String::from)
            .to_vec(),
        ],
        left: vec![0, 1, 2],
    };
    for (row, _) in &pods {
        for v in row.volumes.iter().filter(|v| v.size_limit.is_some()) {
            let limit = v.size_limit.unwrap_or(0);
            let (used, headroom, pct) = match &v.usage {
                Some(Ok(u)) => (
                    human_bytes(int64(u.bytes)),
                    human_bytes(limit.saturating_sub(int64(u.bytes))),
                    percent(u.bytes, u64::try_from(limit).unwrap_or(0)),
                ),
                _ => ("?".into(), "?".into(), "?".into()),
            };
            dirs.rows.push(vec![
                row.namespace.clone(),
                row.name.clone(),
                v.name.clone(),
                used,
                human_bytes(limit),
                headroom,
                pct,
            ]);
        }
    }
    if dirs.rows.len() > 1 {
        out.push('\n');
        dirs.render(&mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(0), "0B");
        assert_eq!(human_bytes(1023), "1023B");
        assert_eq!(human_bytes(1536), "1.5K");
        assert_eq!(human_bytes(21_462_233_088), "20G");
        assert_eq!(human_bytes(-2048), "-2.0K");
        assert_eq!(human_count(1187), "1.2k");
        assert_eq!(human_count(4_194_304), "4.2M");
        assert_eq!(human_count(999), "999");
    }

    #[test]
    fn percent_rounds_up_like_df() {
        assert_eq!(percent(1, 3), "34%");
        assert_eq!(percent(0, 0), "-");
        assert_eq!(percent(5, 5), "100%");
    }
}
