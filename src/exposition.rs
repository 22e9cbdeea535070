//! The two text formats a scrape can get.
//!
//! - OpenMetrics 1.0.0 text: `# UNIT` lines, `# EOF` at the end, HELP with
//!   `\`, `"` and newlines escaped;
//! - the Prometheus text format 0.0.4: no `# UNIT`, no `# EOF`, HELP with only
//!   `\` and newlines escaped.
//!
//! Both escape label values the same way (`\`, `"`, newline). Integers are
//! written exactly; floats as Go's `strconv.FormatFloat(f, 'g', -1, 64)`
//! writes them, which is what client_golang (and so node_exporter and
//! kubelet) emit, with OpenMetrics' `.0` on integral floats.
//!
//! Which one a scraper gets is HTTP's business (src/http/negotiate.rs):
//! this module is also what `kubedf metrics` writes, with no HTTP at all.

/// A text format of the exposition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// The Prometheus text format, version 0.0.4.
    Text,
    /// OpenMetrics text 1.0.0.
    OpenMetrics100,
    /// OpenMetrics text 0.0.1: the same body as 1.0.0 (as client_golang
    /// writes both), answered with the version the scraper asked for.
    OpenMetrics001,
}

pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
pub const OPENMETRICS_1_0_0_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const OPENMETRICS_0_0_1_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=0.0.1; charset=utf-8";

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => TEXT_CONTENT_TYPE,
            Format::OpenMetrics100 => OPENMETRICS_1_0_0_CONTENT_TYPE,
            Format::OpenMetrics001 => OPENMETRICS_0_0_1_CONTENT_TYPE,
        }
    }

    pub fn is_openmetrics(self) -> bool {
        !matches!(self, Format::Text)
    }
}

use std::fmt::Write as _;
use std::sync::Arc;

/// The unit of a metric family: its name's suffix and, in OpenMetrics, its
/// `# UNIT` line. Only the units kubedf's families use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Bytes,
    Seconds,
}

impl Unit {
    pub fn as_str(&self) -> &'static str {
        match self {
            Unit::Bytes => "bytes",
            Unit::Seconds => "seconds",
        }
    }
}

/// Kubernetes' metric stability levels; HELP is prefixed with `[LEVEL] ` as
/// Kubernetes' metrics framework does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stability {
    Alpha,
    Beta,
    Stable,
}

impl Stability {
    pub fn help_prefix(self) -> &'static str {
        match self {
            Stability::Alpha => "[ALPHA] ",
            Stability::Beta => "[BETA] ",
            Stability::Stable => "[STABLE] ",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    Gauge,
    /// Named with its `_total` suffix.
    Counter,
}

/// A metric family's descriptor.
#[derive(Debug)]
pub struct Desc {
    /// The full name, including the unit suffix when there is a unit.
    pub name: &'static str,
    /// A full sentence, without the stability prefix.
    pub help: &'static str,
    pub kind: MetricKind,
    pub unit: Option<Unit>,
    pub stability: Stability,
    /// Label names, in the order samples give their values.
    pub labels: &'static [&'static str],
}

impl Desc {
    /// An ALPHA gauge, the common case.
    pub const fn gauge(
        name: &'static str,
        help: &'static str,
        unit: Option<Unit>,
        labels: &'static [&'static str],
    ) -> Desc {
        Desc {
            name,
            help,
            kind: MetricKind::Gauge,
            unit,
            stability: Stability::Alpha,
            labels,
        }
    }

    /// An ALPHA counter; `name` ends in `_total`.
    pub const fn counter(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> Desc {
        Desc {
            name,
            help,
            kind: MetricKind::Counter,
            unit: None,
            stability: Stability::Alpha,
            labels,
        }
    }
}

/// A sample value, kept as an integer where it is one so that byte counts
/// render exactly.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    Int(i64),
    Uint(u64),
    Float(f64),
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::Uint(v)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}

/// Where collectors put their samples: each sample is written as its text
/// line at once, with borrowed labels and no sample kept in between.
///
/// Families render in the order they were declared (or first emitted, if
/// never declared), whatever order samples arrive in, and a family with no
/// samples is not rendered. A sample of the family written last goes straight
/// to the end of the text; so does the first sample of a family declared
/// after it, which opens that family. Any other sample (a family emitted out
/// of order) goes to that family's side buffer, and [`Sink::finish`] puts the
/// text from the first such family on back in order. Collectors emit family
/// by family, in their declaration order, so that at 10,000 PVCs nothing is
/// copied twice; out of order is correct, only slower.
#[derive(Debug)]
pub struct Sink {
    out: String,
    openmetrics: bool,
    families: Vec<Family>,
    /// The family of the last sample: nearly always the next one's too.
    last: usize,
    /// The family whose lines are at the end of `out`.
    open: Option<usize>,
    /// The first family (by declaration) with lines in a side buffer.
    first_spilled: Option<usize>,
    /// Families first seen while this is set and not included by it are
    /// dropped: their samples are not written (`--metric-allowlist`,
    /// `--metric-denylist`).
    filter: Option<Arc<dyn Families>>,
}

/// Which families a [`Sink`] writes: `--metric-allowlist` and
/// `--metric-denylist` (`collector::filter`) say it by name.
pub trait Families: Send + Sync + std::fmt::Debug {
    fn includes(&self, family: &str) -> bool;
}

#[derive(Debug)]
struct Family {
    desc: &'static Desc,
    /// Where the family's header starts in `out`, once opened there.
    start: Option<usize>,
    /// Lines emitted while another family was open.
    spill: String,
    /// Excluded by the filter in force when the family was first seen.
    dropped: bool,
}

impl Sink {
    /// A sink for `format`. `capacity` is a guess of the text's length (the
    /// last render's): one allocation of the right size beats growing one.
    pub fn new(format: Format, capacity: usize) -> Sink {
        Sink {
            out: String::with_capacity(capacity),
            openmetrics: format.is_openmetrics(),
            families: Vec::new(),
            last: 0,
            open: None,
            first_spilled: None,
            filter: None,
        }
    }

    /// A sink that appends to `out`, which holds other families already
    /// (another collector's, written by another sink): one buffer for the
    /// whole exposition, no part copied into it afterwards. The families
    /// written here must not be among those.
    pub fn continuing(format: Format, out: String) -> Sink {
        Sink {
            out,
            ..Sink::new(format, 0)
        }
    }

    /// Drops the families first seen from now on that `filter` excludes
    /// (None: keeps every one). A family seen before keeps its fate.
    pub fn set_filter(&mut self, filter: Option<Arc<dyn Families>>) {
        self.filter = filter;
    }

    /// Reserves a family's place in the order. Declaring twice is harmless.
    pub fn declare(&mut self, desc: &'static Desc) {
        self.slot(desc);
    }

    /// Writes one sample of `desc`, with the values of `desc.labels` in
    /// order; an unlabelled sample is written without `{}`.
    pub fn add<'l, I>(&mut self, desc: &'static Desc, labels: I, value: impl Into<Value>)
    where
        I: IntoIterator<Item = &'l str>,
    {
        let i = self.slot(desc);
        if self.families[i].dropped {
            return;
        }
        let value = value.into();
        let openmetrics = self.openmetrics;
        if self.open == Some(i) {
            push_sample(&mut self.out, desc, labels, value, openmetrics);
        } else if self.families[i].start.is_none() && self.open.is_none_or(|open| i > open) {
            self.families[i].start = Some(self.out.len());
            push_header(&mut self.out, desc, openmetrics);
            push_sample(&mut self.out, desc, labels, value, openmetrics);
            self.open = Some(i);
        } else {
            push_sample(
                &mut self.families[i].spill,
                desc,
                labels,
                value,
                openmetrics,
            );
            self.first_spilled = Some(self.first_spilled.map_or(i, |f| f.min(i)));
        }
    }

    /// Writes one sample of `desc` with label set `id` of `sets`, which were
    /// written (and escaped) once for every family that shares them.
    pub fn add_with(
        &mut self,
        desc: &'static Desc,
        sets: &LabelSets,
        id: LabelSetId,
        value: impl Into<Value>,
    ) {
        debug_assert_eq!(sets.names, desc.labels, "labels of {}", desc.name);
        let i = self.slot(desc);
        if self.families[i].dropped {
            return;
        }
        let value = value.into();
        let openmetrics = self.openmetrics;
        let labels = sets.get(id);
        if self.open == Some(i) {
            push_line(&mut self.out, desc.name, labels, value, openmetrics);
        } else if self.families[i].start.is_none() && self.open.is_none_or(|open| i > open) {
            self.families[i].start = Some(self.out.len());
            push_header(&mut self.out, desc, openmetrics);
            push_line(&mut self.out, desc.name, labels, value, openmetrics);
            self.open = Some(i);
        } else {
            push_line(
                &mut self.families[i].spill,
                desc.name,
                labels,
                value,
                openmetrics,
            );
            self.first_spilled = Some(self.first_spilled.map_or(i, |f| f.min(i)));
        }
    }

    /// The index of `desc`'s family, created if new.
    fn slot(&mut self, desc: &'static Desc) -> usize {
        if let Some(f) = self.families.get(self.last)
            && std::ptr::eq(f.desc, desc)
        {
            return self.last;
        }
        self.last = match self
            .families
            .iter()
            .position(|f| std::ptr::eq(f.desc, desc))
        {
            Some(i) => i,
            None => {
                let dropped = self.filter.as_ref().is_some_and(|f| !f.includes(desc.name));
                self.families.push(Family {
                    desc,
                    start: None,
                    spill: String::new(),
                    dropped,
                });
                self.families.len() - 1
            }
        };
        self.last
    }

    /// How many bytes [`Sink::finish`] will move to put families emitted out
    /// of order in place (0 when every family came in order).
    pub fn reordered_bytes(&self) -> usize {
        match self.first_spilled {
            Some(first) => self.out.len() - self.tail_start(first),
            None => 0,
        }
    }

    /// Where the text of the families from `first` on starts in `out`: opened
    /// families' headers are in `out` in declaration order.
    fn tail_start(&self, first: usize) -> usize {
        self.families[first..]
            .iter()
            .find_map(|f| f.start)
            .unwrap_or(self.out.len())
    }

    /// The finished exposition, `# EOF` included in OpenMetrics.
    pub fn finish(self) -> String {
        let openmetrics = self.openmetrics;
        let mut out = self.finish_part();
        if openmetrics {
            out.push_str("# EOF\n");
        }
        out
    }

    /// The families written, in order, without `# EOF`: one part of an
    /// exposition whose other parts other sinks write.
    pub fn finish_part(mut self) -> String {
        if let Some(first) = self.first_spilled {
            let from = self.tail_start(first);
            let tail = self.out.split_off(from);
            let families = &self.families[first..];
            for (k, f) in families.iter().enumerate() {
                if let Some(start) = f.start {
                    let end = families[k + 1..]
                        .iter()
                        .find_map(|next| next.start)
                        .unwrap_or(from + tail.len());
                    self.out.push_str(&tail[start - from..end - from]);
                } else if !f.spill.is_empty() {
                    push_header(&mut self.out, f.desc, self.openmetrics);
                }
                self.out.push_str(&f.spill);
            }
        }
        self.out
    }
}

/// A family's HELP, TYPE and (in OpenMetrics, when it has one) UNIT lines.
fn push_header(out: &mut String, desc: &Desc, openmetrics: bool) {
    // An OpenMetrics counter family is named without its `_total` suffix,
    // which only its samples carry; the text format names the family as its
    // samples.
    let (kind, name) = match desc.kind {
        MetricKind::Gauge => ("gauge", desc.name),
        MetricKind::Counter if openmetrics => (
            "counter",
            desc.name.strip_suffix("_total").unwrap_or(desc.name),
        ),
        MetricKind::Counter => ("counter", desc.name),
    };
    out.push_str("# HELP ");
    out.push_str(name);
    out.push(' ');
    // OpenMetrics escapes `"` in HELP too; the text format does not.
    push_escaped(out, desc.stability.help_prefix(), openmetrics);
    push_escaped(out, desc.help, openmetrics);
    out.push_str("\n# TYPE ");
    out.push_str(name);
    out.push(' ');
    out.push_str(kind);
    out.push('\n');
    if openmetrics && let Some(unit) = &desc.unit {
        out.push_str("# UNIT ");
        out.push_str(name);
        out.push(' ');
        out.push_str(Unit::as_str(unit));
        out.push('\n');
    }
}

/// Label sets of one list of label names, each written once as its
/// `{name="value",...}` text, for collectors whose rows appear in several
/// families (a PVC's six figures): the values are escaped once, not once per
/// family.
#[derive(Debug)]
pub struct LabelSets {
    names: &'static [&'static str],
    text: String,
    /// Where each set ends in `text`.
    ends: Vec<usize>,
}

/// One set of a [`LabelSets`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LabelSetId(usize);

impl LabelSets {
    /// Room for `capacity` sets of the label `names`.
    pub fn new(names: &'static [&'static str], capacity: usize) -> LabelSets {
        LabelSets {
            names,
            text: String::with_capacity(capacity * 64),
            ends: Vec::with_capacity(capacity),
        }
    }

    /// Adds a set with the values of `names`, in order.
    pub fn push<'l>(&mut self, values: impl IntoIterator<Item = &'l str>) -> LabelSetId {
        push_labels(&mut self.text, self.names, values);
        self.ends.push(self.text.len());
        LabelSetId(self.ends.len() - 1)
    }

    fn get(&self, id: LabelSetId) -> &str {
        let start = match id.0 {
            0 => 0,
            k => self.ends[k - 1],
        };
        &self.text[start..self.ends[id.0]]
    }
}

/// `{name="value",...}`, nothing for no labels.
fn push_labels<'l>(out: &mut String, names: &[&str], values: impl IntoIterator<Item = &'l str>) {
    let mut given = 0;
    for (label, value) in names.iter().zip(values) {
        out.push(if given == 0 { '{' } else { ',' });
        out.push_str(label);
        out.push_str("=\"");
        push_escaped(out, value, true);
        out.push('"');
        given += 1;
    }
    debug_assert_eq!(given, names.len(), "label values of {names:?}");
    if given > 0 {
        out.push('}');
    }
}

/// A sample line from its name, its labels' text and its value.
fn push_line(out: &mut String, name: &str, labels: &str, value: Value, openmetrics: bool) {
    out.push_str(name);
    out.push_str(labels);
    push_value(out, value, openmetrics);
}

/// ` value` and the newline.
fn push_value(out: &mut String, value: Value, openmetrics: bool) {
    out.push(' ');
    match value {
        Value::Int(v) => out.push_str(itoa::Buffer::new().format(v)),
        Value::Uint(v) => out.push_str(itoa::Buffer::new().format(v)),
        Value::Float(v) => push_float(out, v, openmetrics),
    }
    out.push('\n');
}

/// One sample line.
fn push_sample<'l>(
    out: &mut String,
    desc: &Desc,
    labels: impl IntoIterator<Item = &'l str>,
    value: Value,
    openmetrics: bool,
) {
    out.push_str(desc.name);
    push_labels(out, desc.labels, labels);
    push_value(out, value, openmetrics);
}

/// Appends `s` with `\` and newline escaped, and `"` when `quote`: a vector
/// scan (memchr) for the characters to escape, and the runs between them
/// copied whole.
fn push_escaped(out: &mut String, s: &str, quote: bool) {
    if quote {
        push_escaped_at(
            out,
            s,
            memchr::memchr3_iter(b'\\', b'\n', b'"', s.as_bytes()),
        );
    } else {
        push_escaped_at(out, s, memchr::memchr2_iter(b'\\', b'\n', s.as_bytes()));
    }
}

/// Appends `s` with the ASCII characters at `specials` escaped.
fn push_escaped_at(out: &mut String, s: &str, specials: impl Iterator<Item = usize>) {
    let mut start = 0;
    for i in specials {
        // `i` is at an ASCII byte, so a char boundary.
        out.push_str(&s[start..i]);
        out.push_str(match s.as_bytes()[i] {
            b'\\' => "\\\\",
            b'\n' => "\\n",
            _ => "\\\"",
        });
        start = i + 1;
    }
    out.push_str(&s[start..]);
}

/// Appends a float as Go's `strconv.FormatFloat(v, 'g', -1, 64)` writes it
/// (shortest digits that round-trip; exponent form below 1e-4 and from 1e6
/// on, with a signed exponent of at least two digits), as client_golang's
/// text encoders do; OpenMetrics adds `.0` where that has neither `.` nor `e`.
fn push_float(out: &mut String, v: f64, openmetrics: bool) {
    if v.is_nan() {
        out.push_str("NaN");
        return;
    }
    if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
        return;
    }
    let start = out.len();
    go_format_g(out, v);
    if openmetrics && !out[start..].contains(['.', 'e']) {
        out.push_str(".0");
    }
}

/// A fixed buffer for `{:e}` of an f64 (at most 24 bytes:
/// `-1.7976931348623157e308`), so formatting a float allocates nothing.
struct SciBuf {
    bytes: [u8; 32],
    len: usize,
}

impl std::fmt::Write for SciBuf {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let slot = self.bytes.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        slot.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

fn go_format_g(out: &mut String, v: f64) {
    // Rust's `{:e}` gives the shortest round-tripping digits, as Go's
    // shortest mode does: `-1.795e9`, `3e-3`, `0e0`.
    let mut sci = SciBuf {
        bytes: [0; 32],
        len: 0,
    };
    if write!(sci, "{v:e}").is_err() {
        // Cannot happen (see SciBuf); Display round-trips as well.
        out.push_str(&v.to_string());
        return;
    }
    let sci = &sci.bytes[..sci.len];
    let (negative, sci) = match sci.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, sci),
    };
    let e = sci.iter().position(|b| *b == b'e').unwrap_or(sci.len());
    let (mantissa, exp) = (&sci[..e], sci.get(e + 1..).unwrap_or_default());
    let exp: i32 = std::str::from_utf8(exp)
        .ok()
        .and_then(|e| e.parse().ok())
        .unwrap_or(0);
    // The mantissa's digits without the point: at most 17.
    let mut digit_buf = [0u8; 32];
    let mut n = 0;
    for &b in mantissa.iter().filter(|b| b.is_ascii_digit()) {
        digit_buf[n] = b;
        n += 1;
    }
    // ASCII digits only.
    let digits = std::str::from_utf8(&digit_buf[..n]).unwrap_or("0");
    if negative {
        out.push('-');
    }
    if !(-4..6).contains(&exp) {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        let magnitude = exp.unsigned_abs();
        if magnitude < 10 {
            out.push('0');
        }
        out.push_str(itoa::Buffer::new().format(magnitude));
    } else if exp >= 0 {
        // exp + 1 digits before the point, zero-padded.
        let point = exp.unsigned_abs() as usize + 1;
        if digits.len() <= point {
            out.push_str(digits);
            for _ in digits.len()..point {
                out.push('0');
            }
        } else {
            out.push_str(&digits[..point]);
            out.push('.');
            out.push_str(&digits[point..]);
        }
    } else {
        out.push_str("0.");
        for _ in 0..(exp.unsigned_abs() - 1) {
            out.push('0');
        }
        out.push_str(digits);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn float(v: f64, openmetrics: bool) -> String {
        let mut s = String::new();
        push_float(&mut s, v, openmetrics);
        s
    }

    #[test]
    fn floats_as_go_writes_them() {
        // Expected strings are Go's fmt/strconv output for these values.
        for (v, text, om) in [
            (0.0, "0", "0.0"),
            (1.0, "1", "1.0"),
            (-1.0, "-1", "-1.0"),
            (0.003, "0.003", "0.003"),
            (1.5, "1.5", "1.5"),
            (100.0, "100", "100.0"),
            (123_456.0, "123456", "123456.0"),
            (1_000_000.0, "1e+06", "1e+06"),
            (1_234_567.0, "1.234567e+06", "1.234567e+06"),
            (1_795_000_000.0, "1.795e+09", "1.795e+09"),
            (1_795_000_000.25, "1.79500000025e+09", "1.79500000025e+09"),
            (0.0001, "0.0001", "0.0001"),
            (0.00001, "1e-05", "1e-05"),
            (-0.000_012_5, "-1.25e-05", "-1.25e-05"),
            (1e300, "1e+300", "1e+300"),
            (
                f64::MAX,
                "1.7976931348623157e+308",
                "1.7976931348623157e+308",
            ),
            (5e-324, "5e-324", "5e-324"),
            (f64::INFINITY, "+Inf", "+Inf"),
            (f64::NEG_INFINITY, "-Inf", "-Inf"),
            (f64::NAN, "NaN", "NaN"),
        ] {
            assert_eq!(float(v, false), text, "{v:?} in the text format");
            assert_eq!(float(v, true), om, "{v:?} in OpenMetrics");
            if v.is_finite() {
                assert_eq!(text.parse::<f64>().ok(), Some(v), "{text} round-trips");
            }
        }
    }

    /// The escaping kubedf shipped before the memchr scan, byte by byte: the
    /// oracle the new one must match.
    fn escaped_before(s: &str, quote: bool) -> String {
        let mut out = String::new();
        for c in s.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '"' if quote => out.push_str("\\\""),
                c => out.push(c),
            }
        }
        out
    }

    /// The float formatting kubedf shipped before it stopped allocating
    /// (`format!` and a `String` of digits): the oracle for `go_format_g`.
    fn go_format_g_before(v: f64) -> String {
        let mut out = String::new();
        let sci = format!("{v:e}");
        let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
        let exp: i32 = exp.parse().unwrap_or(0);
        let (negative, mantissa) = match mantissa.strip_prefix('-') {
            Some(m) => (true, m),
            None => (false, mantissa),
        };
        let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
        if negative {
            out.push('-');
        }
        if !(-4..6).contains(&exp) {
            out.push_str(&digits[..1]);
            if digits.len() > 1 {
                out.push('.');
                out.push_str(&digits[1..]);
            }
            out.push_str(&format!(
                "e{}{:02}",
                if exp < 0 { '-' } else { '+' },
                exp.abs()
            ));
        } else if exp >= 0 {
            let point = exp as usize + 1;
            if digits.len() <= point {
                out.push_str(&digits);
                out.push_str(&"0".repeat(point - digits.len()));
            } else {
                out.push_str(&digits[..point]);
                out.push('.');
                out.push_str(&digits[point..]);
            }
        } else {
            out.push_str("0.");
            out.push_str(&"0".repeat(exp.unsigned_abs() as usize - 1));
            out.push_str(&digits);
        }
        out
    }

    fn escaped(s: &str, quote: bool) -> String {
        let mut out = String::new();
        push_escaped(&mut out, s, quote);
        out
    }

    #[test]
    fn escaping_per_format() {
        assert_eq!(escaped("a\\b\"c\nd", true), "a\\\\b\\\"c\\nd");
        assert_eq!(escaped("a\\b\"c\nd", false), "a\\\\b\"c\\nd");
        assert_eq!(escaped("plain — ünïcode", true), "plain — ünïcode");
        assert_eq!(escaped("", true), "");
        assert_eq!(escaped("\"", true), "\\\"");
        assert_eq!(escaped("\\\\\n\n", true), "\\\\\\\\\\n\\n");
        // Next to multi-byte characters, and past memchr's vector width.
        assert_eq!(escaped("ü\"ß\\€\n日本", true), "ü\\\"ß\\\\€\\n日本");
        let long = format!("{}\"{}\n", "x".repeat(70), "é".repeat(40));
        assert_eq!(escaped(&long, true), escaped_before(&long, true));
        assert_eq!(escaped(&long, false), escaped_before(&long, false));
    }

    proptest::proptest! {
        #[test]
        fn escaping_matches_the_byte_by_byte_escaping(
            s in "(\\PC|[\\\\\"\n]){0,80}",
            quote: bool,
        ) {
            proptest::prop_assert_eq!(escaped(&s, quote), escaped_before(&s, quote));
        }

        #[test]
        fn floats_match_the_allocating_formatting(bits: u64) {
            let v = f64::from_bits(bits);
            proptest::prop_assume!(v.is_finite());
            let mut s = String::new();
            go_format_g(&mut s, v);
            proptest::prop_assert_eq!(s, go_format_g_before(v));
        }

        #[test]
        fn float32_percentages_match_the_allocating_formatting(v in 0f32..=100.0) {
            // kubelet's percentages are float32 widened to float64.
            let v = f64::from(v);
            let mut s = String::new();
            go_format_g(&mut s, v);
            proptest::prop_assert_eq!(s, go_format_g_before(v));
        }
    }

    static X_BYTES: Desc = Desc::gauge(
        "x_bytes",
        "Says \"hi\"\\ on\ntwo lines.",
        Some(Unit::Bytes),
        &["a", "b"],
    );
    static X_TOTAL: Desc = Desc::counter("x_total", "Counts.", &[]);
    static Y: Desc = Desc::gauge("y", "Y.", None, &["l"]);
    static EMPTY: Desc = Desc::gauge("empty", "Never emitted.", None, &[]);

    #[test]
    fn families_and_samples_per_format() {
        for format in [Format::Text, Format::OpenMetrics100] {
            let mut sink = Sink::new(format, 0);
            sink.declare(&X_BYTES);
            sink.declare(&EMPTY);
            sink.add(&X_BYTES, ["q\"", "x\\\n"], u64::MAX);
            sink.add(&X_BYTES, ["ü", ""], i64::MIN);
            sink.add(&X_TOTAL, [""; 0], 1.0);
            let text = sink.finish();
            let want = if format == Format::Text {
                "# HELP x_bytes [ALPHA] Says \"hi\"\\\\ on\\ntwo lines.\n# TYPE x_bytes gauge\n\
                 x_bytes{a=\"q\\\"\",b=\"x\\\\\\n\"} 18446744073709551615\n\
                 x_bytes{a=\"ü\",b=\"\"} -9223372036854775808\n\
                 # HELP x_total [ALPHA] Counts.\n# TYPE x_total counter\nx_total 1\n"
            } else {
                "# HELP x_bytes [ALPHA] Says \\\"hi\\\"\\\\ on\\ntwo lines.\n# TYPE x_bytes gauge\n\
                 # UNIT x_bytes bytes\n\
                 x_bytes{a=\"q\\\"\",b=\"x\\\\\\n\"} 18446744073709551615\n\
                 x_bytes{a=\"ü\",b=\"\"} -9223372036854775808\n\
                 # HELP x [ALPHA] Counts.\n# TYPE x counter\nx_total 1.0\n# EOF\n"
            };
            assert_eq!(text, want, "{format:?}");
        }
    }

    #[test]
    fn shared_label_sets_write_what_labels_given_each_time_write() {
        for format in [Format::Text, Format::OpenMetrics100] {
            let values = [["q\"ü", "x\\\n"], ["plain", ""]];
            let mut each = Sink::new(format, 0);
            let mut shared = Sink::new(format, 0);
            let mut sets = LabelSets::new(X_BYTES.labels, 2);
            let ids = values.map(|v| sets.push(v));
            for (v, id) in values.iter().zip(ids) {
                each.add(&X_BYTES, *v, 7u64);
                shared.add_with(&X_BYTES, &sets, id, 7u64);
            }
            // Out of order too.
            each.add(&Y, ["a"], 1.5);
            each.add(&X_BYTES, values[1], 8u64);
            shared.add(&Y, ["a"], 1.5);
            shared.add_with(&X_BYTES, &sets, ids[1], 8u64);
            assert_eq!(shared.finish(), each.finish(), "{format:?}");
        }
    }

    /// Renders `emit`'s samples, and says how many bytes were put back in order.
    fn render(emit: impl Fn(&mut Sink)) -> (String, usize) {
        let mut sink = Sink::new(Format::Text, 0);
        for desc in [&X_BYTES, &X_TOTAL, &Y] {
            sink.declare(desc);
        }
        emit(&mut sink);
        let moved = sink.reordered_bytes();
        (sink.finish(), moved)
    }

    #[test]
    fn families_render_in_declaration_order_whatever_order_samples_come_in() {
        let in_order = |s: &mut Sink| {
            s.add(&X_BYTES, ["1", "1"], 1u64);
            s.add(&X_BYTES, ["2", "2"], 2u64);
            s.add(&X_TOTAL, [""; 0], 3u64);
            s.add(&Y, ["a"], 4u64);
            s.add(&Y, ["b"], 5u64);
        };
        let (want, moved) = render(in_order);
        assert_eq!(moved, 0, "in order, nothing moves");
        let orders: [&dyn Fn(&mut Sink); 3] = [
            // Interleaved.
            &|s| {
                s.add(&X_BYTES, ["1", "1"], 1u64);
                s.add(&Y, ["a"], 4u64);
                s.add(&X_TOTAL, [""; 0], 3u64);
                s.add(&X_BYTES, ["2", "2"], 2u64);
                s.add(&Y, ["b"], 5u64);
            },
            // Backwards.
            &|s| {
                s.add(&Y, ["a"], 4u64);
                s.add(&Y, ["b"], 5u64);
                s.add(&X_TOTAL, [""; 0], 3u64);
                s.add(&X_BYTES, ["1", "1"], 1u64);
                s.add(&X_BYTES, ["2", "2"], 2u64);
            },
            // The first family last.
            &|s| {
                s.add(&X_TOTAL, [""; 0], 3u64);
                s.add(&Y, ["a"], 4u64);
                s.add(&X_BYTES, ["1", "1"], 1u64);
                s.add(&Y, ["b"], 5u64);
                s.add(&X_BYTES, ["2", "2"], 2u64);
            },
        ];
        for (k, emit) in orders.iter().enumerate() {
            let (got, moved) = render(emit);
            assert_eq!(got, want, "order {k}");
            assert!(moved > 0, "order {k} moved something");
        }
        // A family never declared goes after the declared ones.
        let mut sink = Sink::new(Format::Text, 0);
        sink.declare(&Y);
        sink.add(&X_TOTAL, [""; 0], 3u64);
        sink.add(&Y, ["a"], 4u64);
        assert_eq!(
            sink.finish(),
            "# HELP y [ALPHA] Y.\n# TYPE y gauge\ny{l=\"a\"} 4\n\
             # HELP x_total [ALPHA] Counts.\n# TYPE x_total counter\nx_total 3\n"
        );
    }

    #[test]
    fn sinks_continuing_one_buffer_write_what_one_sink_writes() {
        // One sink for X_BYTES and X_TOTAL, out of order; the next for Y.
        let first = |s: &mut Sink| {
            s.declare(&X_BYTES);
            s.declare(&X_TOTAL);
            s.add(&X_TOTAL, [""; 0], 3u64);
            s.add(&X_BYTES, ["1", "1"], 1u64);
        };
        let second = |s: &mut Sink| {
            s.declare(&Y);
            s.add(&Y, ["a"], 4u64);
        };
        for format in [Format::Text, Format::OpenMetrics100] {
            let mut one = Sink::new(format, 0);
            one.declare(&X_BYTES);
            one.declare(&X_TOTAL);
            one.declare(&Y);
            first(&mut one);
            second(&mut one);
            let want = one.finish();

            let mut sink = Sink::new(format, 0);
            first(&mut sink);
            let text = sink.finish_part();
            let mut sink = Sink::continuing(format, text);
            second(&mut sink);
            assert_eq!(sink.finish(), want, "{format:?}");
            assert_eq!(
                want.matches("# EOF").count(),
                usize::from(format.is_openmetrics())
            );
        }
    }
}
