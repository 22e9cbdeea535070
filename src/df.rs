//! `kubedf df` and the landing page: the snapshot as tables a person reads,
//! like df(1), with the distance of each filesystem and of PIDs to image GC
//! and eviction, and the PVCs of the node's pods.
//!
//! [`report`] builds one model of what is shown ([`Report`]: sections of
//! tables and lines, notes, errors); [`Report::text`] and [`Report::html`]
//! only lay it out. A new view (pods, say) is one more [`Section`].

use std::borrow::Cow;
use std::fmt::Write as _;

use crate::collector::eviction::observe;
use crate::kubelet::eviction::{Kind, Signal, SignalUnit, ThresholdValue};
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

/// A signed amount (i128, so that differences of i64 figures never
/// overflow) in a signal's unit.
fn in_unit(value: i128, unit: SignalUnit) -> String {
    let clamped = i64::try_from(value).unwrap_or(if value < 0 { i64::MIN } else { i64::MAX });
    match unit {
        SignalUnit::Bytes => human_bytes(clamped),
        SignalUnit::Inodes | SignalUnit::Pids => human_count(clamped),
    }
}

/// A threshold as the kubelet config means it: `15%` for the float32 0.15
/// (the shortest decimal that is that float32, moved two places), not the
/// `15.000001%` that multiplying in float32 gives; quantities as they are.
pub fn threshold_text(value: ThresholdValue) -> String {
    match value {
        ThresholdValue::Quantity(q) => q.to_string(),
        ThresholdValue::Percentage(p) => format!("{}%", shift_decimal(&format!("{p:e}"), 2)),
    }
}

/// `mantissa e exp` (Rust's `{:e}` of a float, shortest digits) times
/// 10^`by`, as a plain decimal.
fn shift_decimal(sci: &str, by: i32) -> String {
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci, "0"));
    let exp = exp.parse::<i32>().unwrap_or(0) + by;
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    if digits.chars().all(|c| c == '0') {
        return "0".into();
    }
    // The point goes after `exp + 1` digits.
    let point = exp + 1;
    let body = if point <= 0 {
        format!("0.{}{digits}", "0".repeat(point.unsigned_abs() as usize))
    } else {
        let point = point.unsigned_abs() as usize;
        if digits.len() <= point {
            format!("{digits}{}", "0".repeat(point - digits.len()))
        } else {
            format!("{}.{}", &digits[..point], &digits[point..])
        }
    };
    format!("{sign}{body}")
}

/// How full something is, as df shows it and as a bar.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Usage {
    /// Whole percent, rounded up as df does.
    pub percent: u128,
    /// The exact fraction, for a bar (0..=1 unless the figures are odd).
    pub fraction: f64,
}

impl Usage {
    /// `used` of `total`; None when total is 0.
    pub fn of(used: u64, total: u64) -> Option<Usage> {
        if total == 0 {
            return None;
        }
        Some(Usage {
            // u128: `used * 100` never overflows.
            percent: (u128::from(used) * 100).div_ceil(u128::from(total)),
            fraction: used as f64 / total as f64,
        })
    }

    /// The colour a person reads: orange from 80%, red from 90%, as the
    /// kubernetes-mixin's Persistent Volumes dashboard.
    pub fn level(&self) -> Level {
        if self.percent >= 90 {
            Level::Critical
        } else if self.percent >= 80 {
            Level::Warning
        } else {
            Level::Ok
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Ok,
    Warning,
    Critical,
}

/// One table cell: its text and, for a use% cell, how full.
#[derive(Clone, Debug, PartialEq)]
pub struct Cell {
    pub text: String,
    pub usage: Option<Usage>,
    /// A threshold met, GC due: shown as an alarm.
    pub alert: bool,
}

impl Cell {
    pub fn text(text: impl Into<String>) -> Cell {
        Cell {
            text: text.into(),
            usage: None,
            alert: false,
        }
    }

    /// A use% cell (`-` when there is no total).
    pub fn usage(used: u64, total: u64) -> Cell {
        let usage = Usage::of(used, total);
        Cell {
            text: usage.map_or_else(|| "-".into(), |u| format!("{}%", u.percent)),
            usage,
            alert: false,
        }
    }

    fn alert(text: impl Into<String>) -> Cell {
        Cell {
            alert: true,
            ..Cell::text(text)
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Column {
    pub title: &'static str,
    pub align: Align,
}

/// A table: a title (the landing page's heading; the text table has none),
/// columns, rows of cells (one per column).
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    pub title: &'static str,
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Cell>>,
}

impl Table {
    /// Columns named `titles`, aligned right except those in `left`.
    pub fn new(title: &'static str, titles: &[&'static str], left: &[usize]) -> Table {
        Table {
            title,
            columns: titles
                .iter()
                .enumerate()
                .map(|(i, title)| Column {
                    title,
                    align: if left.contains(&i) {
                        Align::Left
                    } else {
                        Align::Right
                    },
                })
                .collect(),
            rows: Vec::new(),
        }
    }
}

/// One part of the report, in the order shown.
#[derive(Clone, Debug, PartialEq)]
pub enum Section {
    Table(Table),
    /// A sentence on its own (the image GC verdict, "no PVCs"), with its
    /// heading on the landing page, and whether it is an alarm.
    Line {
        title: &'static str,
        text: String,
        alert: bool,
    },
}

/// Everything `kubedf df` and the landing page show.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    pub sections: Vec<Section>,
    /// Where the thresholds come from, and warnings about them.
    pub notes: Vec<String>,
    /// Each failure once, naming what failed.
    pub errors: Vec<String>,
}

/// Builds the report of a snapshot.
pub fn report(snapshot: &Snapshot) -> Report {
    let mut report = Report::default();
    let fs = filesystems(snapshot, &mut report.errors);
    report.sections.push(Section::Table(fs));
    report.sections.push(image_gc(snapshot));
    report.sections.push(Section::Table(eviction(snapshot)));
    if let Some(volumes) = &snapshot.volumes {
        report.sections.push(pvcs(volumes, &mut report.errors));
    }
    let config = &snapshot.kubelet;
    report.notes.push(format!(
        "thresholds from {}{}",
        config.path.display(),
        if config.from_file {
            ""
        } else {
            " (not found: kubelet defaults)"
        }
    ));
    report.notes.push(format!(
        "kubelet config source: {} ({})",
        config.source.name(),
        config.origin
    ));
    let eviction = &config.eviction;
    if !eviction.dropped_defaults.is_empty() {
        let names: Vec<&str> = eviction.dropped_defaults.iter().map(|s| s.name()).collect();
        report.notes.push(format!(
            "warning: evictionHard in {} does not name {}; kubelet then leaves them without a threshold \
             instead of its defaults, so those filesystems are not protected by eviction. \
             Name them, or set mergeDefaultEvictionSettings: true.",
            config.path.display(),
            names.join(", ")
        ));
    }
    report
}

/// The `kubedf df` text of a snapshot.
pub fn render(snapshot: &Snapshot) -> String {
    report(snapshot).text()
}

fn fs_cells(kind: &str, fs: Result<&Filesystem, String>, errors: &mut Vec<String>) -> Vec<Cell> {
    match fs {
        Ok(fs) => {
            let u = &fs.usage;
            vec![
                Cell::text(kind),
                Cell::text(human_bytes(int64(u.capacity_bytes))),
                Cell::text(human_bytes(int64(u.used_bytes))),
                Cell::text(human_bytes(int64(u.available_bytes))),
                // df's use%: used of what unprivileged users can have.
                Cell::usage(u.used_bytes, u.used_bytes.saturating_add(u.available_bytes)),
                Cell::text(human_count(int64(u.inodes))),
                Cell::text(human_count(int64(u.inodes_used))),
                Cell::text(human_count(int64(u.inodes_free))),
                Cell::usage(u.inodes_used, u.inodes),
                Cell::text(fs.path.clone()),
            ]
        }
        Err(e) => {
            errors.push(format!("{kind}: {e}"));
            let mut row = vec![Cell::text(kind)];
            row.extend(std::iter::repeat_n(Cell::text("?"), 8));
            row.push(Cell::text("(unavailable, see below)"));
            row
        }
    }
}

fn filesystems(snapshot: &Snapshot, errors: &mut Vec<String>) -> Table {
    let mut table = Table::new(
        "Filesystems and PIDs",
        &[
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
        ],
        &[0, 9],
    );
    table
        .rows
        .push(fs_cells("nodefs", snapshot.nodefs(), errors));
    // The runtime's failure is said once, under imagefs: containerfs is the
    // runtime's too.
    table
        .rows
        .push(fs_cells("imagefs", snapshot.image_fs(), errors));
    if let Some(Ok(rt)) = snapshot.runtime()
        && let Some(container_fs) = &rt.container_fs
    {
        table.rows.push(fs_cells(
            "containerfs",
            container_fs.as_ref().map_err(Clone::clone),
            errors,
        ));
    }
    match snapshot.rlimit() {
        Ok(r) => table.rows.push(vec![
            Cell::text("pids"),
            Cell::text(human_count(r.maxpid)),
            Cell::text(human_count(r.curproc)),
            Cell::text(in_unit(
                i128::from(r.maxpid) - i128::from(r.curproc),
                SignalUnit::Pids,
            )),
            Cell::usage(
                r.curproc.max(0).unsigned_abs(),
                r.maxpid.max(0).unsigned_abs(),
            ),
            Cell::text(""),
            Cell::text(""),
            Cell::text(""),
            Cell::text(""),
            Cell::text("(maxpid, processes and threads)"),
        ]),
        Err(e) => errors.push(format!("pids: {e}")),
    }
    table
}

fn image_gc(snapshot: &Snapshot) -> Section {
    let title = "Image garbage collection";
    let policy = snapshot.kubelet.image_gc;
    let (text, alert) = match snapshot.image_fs() {
        Ok(fs) => match policy.evaluate(
            int64(fs.usage.capacity_bytes),
            int64(fs.usage.available_bytes),
        ) {
            Ok(gc) if gc.usage_percent >= i64::from(policy.high_threshold_percent) => (
                format!(
                    "image GC: DUE. imagefs usage is {}% (kubelet's rounding), at or over the high threshold {}%; \
                     GC must free {} to get down to {}%.",
                    gc.usage_percent,
                    policy.high_threshold_percent,
                    human_bytes(gc.bytes_to_free),
                    policy.low_threshold_percent
                ),
                true,
            ),
            Ok(gc) => (
                format!(
                    "image GC: imagefs usage is {}% (kubelet's rounding); GC starts at {}% (in {}) and frees down to {}%.",
                    gc.usage_percent,
                    policy.high_threshold_percent,
                    human_bytes(gc.bytes_until_gc),
                    policy.low_threshold_percent
                ),
                false,
            ),
            Err(e) => (format!("image GC: unknown: {e}"), false),
        },
        // The imagefs error itself is in the errors, once.
        Err(_) => ("image GC: unknown (imagefs unavailable)".into(), false),
    };
    Section::Line { title, text, alert }
}

fn eviction(snapshot: &Snapshot) -> Table {
    let layout = snapshot.fs_layout();
    let eviction = &snapshot.kubelet.eviction;
    let mut table = Table::new(
        "Eviction",
        &[
            "EVICTION SIGNAL",
            "AVAILABLE",
            "HARD AT",
            "HEADROOM",
            "SOFT AT",
            "HEADROOM",
        ],
        &[0],
    );
    for signal in Signal::ALL {
        let Ok((available, capacity)) = observe(snapshot, signal) else {
            continue;
        };
        let unit = signal.unit();
        let mut row = vec![
            Cell::text(signal.name()),
            Cell::text(in_unit(available.into(), unit)),
        ];
        for kind in [Kind::Hard, Kind::Soft] {
            match eviction.threshold(kind, signal, layout) {
                Some(t) => {
                    let at = t.resolve(capacity);
                    // i128: odd figures (a negative available, a huge
                    // quantity) never overflow.
                    let headroom = i128::from(available) - i128::from(at);
                    row.push(Cell::text(format!(
                        "{} ({})",
                        in_unit(at.into(), unit),
                        threshold_text(t)
                    )));
                    row.push(if headroom < 0 {
                        Cell::alert(format!("MET by {}", in_unit(-headroom, unit)))
                    } else {
                        Cell::text(in_unit(headroom, unit))
                    });
                }
                None => {
                    row.push(Cell::text("-"));
                    row.push(Cell::text("-"));
                }
            }
        }
        table.rows.push(row);
    }
    table
}

fn pvcs(volumes: &VolumeTable, errors: &mut Vec<String>) -> Section {
    if let Some(e) = &volumes.source.error {
        errors.push(format!("kubernetes: {e}"));
    }
    if volumes.rows.is_empty() {
        return Section::Line {
            title: "PVCs",
            text: "no PVCs in use by running pods on this node".into(),
            alert: false,
        };
    }
    let mut table = Table::new(
        "PVCs",
        &[
            "PVC", "SIZE", "USED", "AVAIL", "USE%", "INODES", "IUSED", "IUSE%", "METHOD",
        ],
        &[0, 8],
    );
    for row in &volumes.rows {
        let name = format!("{}/{}", row.namespace, row.claim);
        let reading = row.reading();
        let method = reading.method.map(|m| m.name()).unwrap_or("-").to_owned();
        match &reading.stats {
            Some(Ok(u)) => table.rows.push(vec![
                Cell::text(name),
                Cell::text(human_bytes(int64(u.capacity_bytes))),
                Cell::text(human_bytes(int64(u.used_bytes))),
                Cell::text(human_bytes(int64(u.available_bytes))),
                Cell::usage(u.used_bytes, u.capacity_bytes),
                Cell::text(human_count(int64(u.inodes))),
                Cell::text(human_count(int64(u.inodes_used))),
                Cell::usage(u.inodes_used, u.inodes),
                Cell::text(method),
            ]),
            other => {
                let why = match other {
                    Some(Err(e)) => {
                        errors.push(format!("{name}: {e}"));
                        e.reason.name().to_owned()
                    }
                    _ => "not measured yet".to_owned(),
                };
                let mut cells = vec![Cell::text(name)];
                cells.extend(std::iter::repeat_n(Cell::text("?"), 7));
                cells.push(Cell::text(format!("{method} ({why})")));
                table.rows.push(cells);
            }
        }
    }
    Section::Table(table)
}

/// `text` with every control character (C0, DEL, C1) and every Unicode
/// bidirectional override or isolate written as a visible escape (`\n`,
/// `\u{1b}`, `\u{202e}`). Names come from tenants (a namespace, a PVC, a
/// container) and reach a person's terminal and text logs: an escape
/// sequence must be seen, never obeyed, and a newline must not forge a line.
pub fn printable(text: &str) -> Cow<'_, str> {
    fn hidden(c: char) -> bool {
        c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    }
    if !text.contains(hidden) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if hidden(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

impl Table {
    /// The table aligned in columns, as df(1) does, header first.
    fn text(&self, out: &mut String) {
        let header: Vec<Cow<'_, str>> = self
            .columns
            .iter()
            .map(|c| Cow::Borrowed(c.title))
            .collect();
        let rows = std::iter::once(header).chain(
            self.rows
                .iter()
                .map(|r| r.iter().map(|c| printable(&c.text)).collect()),
        );
        let rows: Vec<Vec<Cow<'_, str>>> = rows.collect();
        let widths: Vec<usize> = (0..self.columns.len())
            .map(|c| {
                rows.iter()
                    .filter_map(|r| r.get(c))
                    .map(|s| s.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for row in &rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                if c > 0 {
                    line.push_str("  ");
                }
                let pad = widths
                    .get(c)
                    .copied()
                    .unwrap_or(0)
                    .saturating_sub(cell.chars().count());
                let left = self
                    .columns
                    .get(c)
                    .is_some_and(|col| col.align == Align::Left);
                if left {
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

impl Report {
    /// The `kubedf df` text: sections apart by a blank line, then the notes
    /// and each error once.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for (i, section) in self.sections.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            match section {
                Section::Table(table) => table.text(&mut out),
                Section::Line { text, .. } => {
                    let _ = writeln!(out, "{}", printable(text));
                }
            }
        }
        if !self.notes.is_empty() {
            out.push('\n');
        }
        for note in &self.notes {
            let _ = writeln!(out, "{}", printable(note));
        }
        for e in &self.errors {
            let _ = writeln!(out, "error: {}", printable(e));
        }
        out
    }

    /// The landing page: the same sections as HTML tables, use% as bars
    /// drawn with CSS only (no JavaScript), every text escaped. `links` are
    /// (href, label) pairs shown at the top.
    pub fn html(&self, title: &str, links: &[(&str, &str)]) -> String {
        let mut out = String::with_capacity(16 << 10);
        out.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>");
        push_html(&mut out, title);
        out.push_str("</title>\n<style>\n");
        out.push_str(STYLE);
        out.push_str("</style></head>\n<body>\n<h1>");
        push_html(&mut out, title);
        out.push_str("</h1>\n<p>Disk, inode and PID headroom of this Kubernetes node and its volumes.</p>\n<nav>");
        for (href, label) in links {
            out.push_str("<a href=\"");
            push_html(&mut out, href);
            out.push_str("\">");
            push_html(&mut out, label);
            out.push_str("</a> ");
        }
        out.push_str("</nav>\n");
        for section in &self.sections {
            match section {
                Section::Table(table) => table.html(&mut out),
                Section::Line { title, text, alert } => {
                    out.push_str("<h2>");
                    push_html(&mut out, title);
                    out.push_str(if *alert {
                        "</h2>\n<p class=\"alert\">"
                    } else {
                        "</h2>\n<p>"
                    });
                    push_html(&mut out, text);
                    out.push_str("</p>\n");
                }
            }
        }
        for note in &self.notes {
            out.push_str("<p class=\"note\">");
            push_html(&mut out, note);
            out.push_str("</p>\n");
        }
        for e in &self.errors {
            out.push_str("<p class=\"error\">error: ");
            push_html(&mut out, e);
            out.push_str("</p>\n");
        }
        out.push_str("</body></html>\n");
        out
    }
}

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em;color:#222}\n\
table{border-collapse:collapse;margin-bottom:1em}\n\
th,td{padding:.2em .6em;border-bottom:1px solid #ddd;white-space:nowrap}\n\
th{background:#f3f3f3}\n\
td.r,th.r{text-align:right}td.l,th.l{text-align:left}\n\
.bar{display:inline-block;width:6em;height:.8em;background:#e6e6e6;margin-right:.4em;vertical-align:middle}\n\
.bar>span{display:block;height:100%;background:#3c8d2f}\n\
.bar>span.warning{background:#e08a00}.bar>span.critical{background:#c62828}\n\
.alert,td.alert{color:#c62828;font-weight:bold}\n\
.error{color:#c62828}.note{color:#555}\n\
nav a{margin-right:1em}\n";

impl Table {
    fn html(&self, out: &mut String) {
        out.push_str("<h2>");
        push_html(out, self.title);
        out.push_str("</h2>\n<table>\n<thead><tr>");
        for column in &self.columns {
            out.push_str(match column.align {
                Align::Left => "<th class=\"l\">",
                Align::Right => "<th class=\"r\">",
            });
            push_html(out, column.title);
            out.push_str("</th>");
        }
        out.push_str("</tr></thead>\n<tbody>\n");
        for row in &self.rows {
            out.push_str("<tr>");
            for (cell, column) in row.iter().zip(&self.columns) {
                let class = match (column.align, cell.alert) {
                    (Align::Left, false) => "l",
                    (Align::Right, false) => "r",
                    (Align::Left, true) => "l alert",
                    (Align::Right, true) => "r alert",
                };
                let _ = write!(out, "<td class=\"{class}\">");
                if let Some(usage) = cell.usage {
                    let level = match usage.level() {
                        Level::Ok => "ok",
                        Level::Warning => "warning",
                        Level::Critical => "critical",
                    };
                    let width = (usage.fraction.clamp(0.0, 1.0) * 100.0).round();
                    let _ = write!(
                        out,
                        "<span class=\"bar\"><span class=\"{level}\" style=\"width:{width}%\"></span></span>"
                    );
                }
                push_html(out, &cell.text);
                out.push_str("</td>");
            }
            out.push_str("</tr>\n");
        }
        out.push_str("</tbody></table>\n");
    }
}

/// `s` escaped for HTML text and attribute values.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    push_html(&mut out, s);
    out
}

/// Appends `s` escaped for HTML text and attribute values.
fn push_html(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

/// `kubedf df --pods`: the node's pods ranked by local ephemeral storage,
/// each with its limit and headroom (what is left before kubelet evicts it),
/// then the emptyDirs that have a sizeLimit.
pub fn render_pods(snapshot: &Snapshot) -> String {
    Report {
        sections: pod_sections(snapshot),
        ..Report::default()
    }
    .text()
}

/// The pod part of the report: a ranked table of pods, then one of the
/// emptyDirs with a sizeLimit (when any has one).
pub fn pod_sections(snapshot: &Snapshot) -> Vec<Section> {
    let Some(table) = &snapshot.pods else {
        return vec![Section::Line {
            title: "Pods",
            text: "pods: not measured (the pod_storage collector is off or has no cluster access)"
                .into(),
            alert: true,
        }];
    };
    let mut pods: Vec<(&crate::model::pod::PodRow, Option<u64>)> = table
        .rows
        .iter()
        .map(|r| {
            (
                &**r,
                r.ephemeral_storage().and_then(Result::ok).map(|u| u.bytes),
            )
        })
        .collect();
    // Largest first; pods without a figure last.
    pods.sort_by(|a, b| {
        b.1.cmp(&a.1).then_with(|| {
            (&a.0.pod.namespace, &a.0.pod.name).cmp(&(&b.0.pod.namespace, &b.0.pod.name))
        })
    });
    let mut t = Table::new(
        "Pod ephemeral storage",
        &[
            "NAMESPACE",
            "POD",
            "EPHEMERAL",
            "INODES",
            "LIMIT",
            "HEADROOM",
            "USE%",
            "NOTE",
        ],
        &[0, 1, 7],
    );
    for (row, used) in &pods {
        let total = row.ephemeral_storage();
        let inodes = match &total {
            Some(Ok(u)) => human_count(int64(u.inodes)),
            _ => "?".into(),
        };
        let note = match &total {
            None => Cell::text("not measured yet"),
            Some(Ok(_)) => Cell::text(""),
            Some(Err(e)) => Cell::alert(format!("{}: {}", e.reason.name(), e.message)),
        };
        let (limit, headroom, use_pct) = match (row.pod.storage.limit, used) {
            (Some(l), Some(u)) => (
                Cell::text(human_bytes(l)),
                Cell::text(human_bytes(l.saturating_sub(int64(*u)))),
                Cell::usage(*u, u64::try_from(l).unwrap_or(0)),
            ),
            (Some(l), None) => (Cell::text(human_bytes(l)), Cell::text("?"), Cell::text("?")),
            (None, _) => (Cell::text("-"), Cell::text("-"), Cell::text("-")),
        };
        t.rows.push(vec![
            Cell::text(row.pod.namespace.clone()),
            Cell::text(row.pod.name.clone()),
            Cell::text(used.map_or_else(|| "?".into(), |u| human_bytes(int64(u)))),
            Cell::text(inodes),
            limit,
            headroom,
            use_pct,
            note,
        ]);
    }
    let mut sections = vec![Section::Table(t)];
    let mut dirs = Table::new(
        "emptyDirs against their sizeLimit",
        &[
            "NAMESPACE",
            "POD",
            "EMPTYDIR",
            "USED",
            "SIZELIMIT",
            "HEADROOM",
            "USE%",
        ],
        &[0, 1, 2],
    );
    for (row, _) in &pods {
        for v in row.volumes.iter() {
            let Some(limit) = v.size_limit else { continue };
            let (used, headroom, pct) = match &v.usage {
                Some(Ok(u)) => (
                    Cell::text(human_bytes(int64(u.bytes))),
                    Cell::text(human_bytes(limit.saturating_sub(int64(u.bytes)))),
                    Cell::usage(u.bytes, u64::try_from(limit).unwrap_or(0)),
                ),
                _ => (Cell::text("?"), Cell::text("?"), Cell::text("?")),
            };
            dirs.rows.push(vec![
                Cell::text(row.pod.namespace.clone()),
                Cell::text(row.pod.name.clone()),
                Cell::text(v.name.clone()),
                used,
                Cell::text(human_bytes(limit)),
                headroom,
                pct,
            ]);
        }
    }
    if !dirs.rows.is_empty() {
        sections.push(Section::Table(dirs));
    }
    sections
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
        assert_eq!(human_bytes(i64::MIN), "-8.0E");
    }

    #[test]
    fn percent_rounds_up_like_df() {
        assert_eq!(Cell::usage(1, 3).text, "34%");
        assert_eq!(Cell::usage(0, 0).text, "-");
        assert_eq!(Cell::usage(5, 5).text, "100%");
        assert_eq!(Cell::usage(u64::MAX, u64::MAX).text, "100%");
        assert_eq!(Usage::of(9, 10).map(|u| u.level()), Some(Level::Critical));
        assert_eq!(Usage::of(8, 10).map(|u| u.level()), Some(Level::Warning));
        assert_eq!(Usage::of(79, 100).map(|u| u.level()), Some(Level::Ok));
    }

    #[test]
    fn thresholds_read_as_written() {
        for (written, want) in [
            (0.15f32, "15%"),
            (0.1, "10%"),
            (0.05, "5%"),
            (0.105, "10.5%"),
            (0.0001, "0.01%"),
            (0.333_333_34, "33.333334%"),
            (1.0, "100%"),
            (0.0, "0%"),
        ] {
            assert_eq!(
                threshold_text(ThresholdValue::Percentage(written)),
                want,
                "{written}"
            );
        }
        assert_eq!(threshold_text(ThresholdValue::Quantity(1000)), "1000");
    }

    #[test]
    fn control_characters_are_shown_not_obeyed() {
        assert!(matches!(printable("shop/data-0"), Cow::Borrowed(_)));
        assert_eq!(
            printable("a\nb\u{1b}[31mc\u{7f}\u{9b}\u{202e}d\té"),
            "a\\nb\\u{1b}[31mc\\u{7f}\\u{9b}\\u{202e}d\\té"
        );
        let mut report = Report::default();
        report
            .errors
            .push("pvc evil\u{1b}]0;owned\u{7}\nerror: forged".into());
        let text = report.text();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{7}'),
            "{text}"
        );
    }

    #[test]
    fn html_escapes_everything() {
        let mut out = String::new();
        push_html(&mut out, "<a href=\"x\">&'</a>");
        assert_eq!(out, "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;");
    }
}
