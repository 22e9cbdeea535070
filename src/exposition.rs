//! The two text formats a scrape can get, and which one it gets.
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
//! [`Format::negotiate`] picks the format from the `Accept` header the way
//! client_golang's promhttp does with OpenMetrics enabled
//! (`expfmt.NegotiateIncludingOpenMetrics`).

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

    /// The format to answer a request with this `Accept` header (None when
    /// the request has none): the first acceptable clause, by descending q,
    /// that names a format kubedf writes; the text format otherwise.
    ///
    /// As promhttp: `text/plain` with version 0.0.4 or no version is the text
    /// format; `application/openmetrics-text` with version 1.0.0, 0.0.1 or
    /// none is OpenMetrics (0.0.1 unless 1.0.0 is asked for); `*/*` and
    /// anything else never choose, so they fall through to the text format.
    /// Unlike promhttp, a clause with `q=0` is skipped (RFC 9110: "not
    /// acceptable"), and media types compare case-insensitively.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Text;
        };
        let mut clauses: Vec<Clause<'_>> = accept.split(',').filter_map(Clause::parse).collect();
        // A stable sort keeps the header's order among equal preferences.
        clauses.sort_by(|a, b| b.q.total_cmp(&a.q).then(a.wildcards.cmp(&b.wildcards)));
        for clause in clauses.iter().filter(|c| c.q > 0.0) {
            let version = clause.version;
            if clause.is("text", "plain") && matches!(version, None | Some("0.0.4")) {
                return Format::Text;
            }
            if clause.is("application", "openmetrics-text") {
                match version {
                    Some("1.0.0") => return Format::OpenMetrics100,
                    None | Some("0.0.1") => return Format::OpenMetrics001,
                    Some(_) => {}
                }
            }
        }
        Format::Text
    }
}

/// One media range of an `Accept` header.
struct Clause<'a> {
    kind: &'a str,
    subtype: &'a str,
    version: Option<&'a str>,
    q: f32,
    /// How many of type and subtype are `*`: a more specific range comes
    /// first among equal q.
    wildcards: u8,
}

impl<'a> Clause<'a> {
    fn parse(text: &'a str) -> Option<Clause<'a>> {
        let mut parts = text.split(';');
        let range = parts.next()?.trim();
        let (kind, subtype) = match range.split_once('/') {
            Some((k, s)) => (k.trim(), s.trim()),
            None if range == "*" => ("*", "*"),
            None => return None,
        };
        if kind.is_empty() || subtype.is_empty() {
            return None;
        }
        let mut clause = Clause {
            kind,
            subtype,
            version: None,
            q: 1.0,
            wildcards: u8::from(kind == "*") + u8::from(subtype == "*"),
        };
        for param in parts {
            let Some((key, value)) = param.split_once('=') else {
                continue;
            };
            let value = value.trim().trim_matches('"');
            match key.trim() {
                k if k.eq_ignore_ascii_case("q") => {
                    // An unparsable q counts as 0, as Go's ParseFloat error
                    // leaves it.
                    clause.q = value
                        .parse::<f32>()
                        .ok()
                        .filter(|q| q.is_finite())
                        .unwrap_or(0.0);
                }
                k if k.eq_ignore_ascii_case("version") => clause.version = Some(value),
                _ => {}
            }
        }
        Some(clause)
    }

    fn is(&self, kind: &str, subtype: &str) -> bool {
        self.kind.eq_ignore_ascii_case(kind) && self.subtype.eq_ignore_ascii_case(subtype)
    }
}

use crate::collector::Value;

/// Writes one exposition, family by family, into a growing string.
#[derive(Debug)]
pub struct Writer {
    out: String,
    openmetrics: bool,
}

impl Writer {
    pub fn new(format: Format) -> Writer {
        Writer {
            // Not pre-sized: a fresh multi-megabyte buffer costs a page
            // fault per page, where growing one is a cheap mremap (measured
            // twice as slow pre-sized, benches/render.rs).
            out: String::new(),
            openmetrics: format.is_openmetrics(),
        }
    }

    /// A family's metadata lines. `unit` is written only in OpenMetrics.
    pub fn family(&mut self, name: &str, help: [&str; 2], kind: &str, unit: Option<&str>) {
        let out = &mut self.out;
        out.push_str("# HELP ");
        out.push_str(name);
        out.push(' ');
        for part in help {
            // OpenMetrics escapes `"` in HELP too; the text format does not.
            push_escaped(out, part, self.openmetrics);
        }
        out.push_str("\n# TYPE ");
        out.push_str(name);
        out.push(' ');
        out.push_str(kind);
        out.push('\n');
        if self.openmetrics
            && let Some(unit) = unit
        {
            out.push_str("# UNIT ");
            out.push_str(name);
            out.push(' ');
            out.push_str(unit);
            out.push('\n');
        }
    }

    /// One sample line; an unlabelled one is written without `{}`.
    pub fn sample(
        &mut self,
        name: &str,
        label_names: &[&str],
        label_values: &[&str],
        value: Value,
    ) {
        let out = &mut self.out;
        out.push_str(name);
        if !label_names.is_empty() {
            out.push('{');
            for (i, (label, value)) in label_names.iter().zip(label_values).enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(label);
                out.push_str("=\"");
                push_escaped(out, value, true);
                out.push('"');
            }
            out.push('}');
        }
        out.push(' ');
        match value {
            Value::Int(v) => out.push_str(itoa::Buffer::new().format(v)),
            Value::Uint(v) => out.push_str(itoa::Buffer::new().format(v)),
            Value::Float(v) => push_float(out, v, self.openmetrics),
        }
        out.push('\n');
    }

    /// The finished exposition, `# EOF` included in OpenMetrics.
    pub fn finish(mut self) -> String {
        if self.openmetrics {
            self.out.push_str("# EOF\n");
        }
        self.out
    }
}

/// Appends `s` with `\` and newline escaped, and `"` when `quote`.
fn push_escaped(out: &mut String, s: &str, quote: bool) {
    let special = |b: u8| b == b'\\' || b == b'\n' || (quote && b == b'"');
    if !s.bytes().any(special) {
        out.push_str(s);
        return;
    }
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escaped = match b {
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'"' if quote => "\\\"",
            _ => continue,
        };
        // `i` is at an ASCII byte, so a char boundary.
        out.push_str(&s[start..i]);
        out.push_str(escaped);
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

fn go_format_g(out: &mut String, v: f64) {
    // Rust's `{:e}` gives the shortest round-tripping digits, as Go's
    // shortest mode does: `-1.795e9`, `3e-3`, `0e0`.
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
            out.push_str(&digits);
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
        out.push_str(&digits);
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

    #[test]
    fn escaping_per_format() {
        let mut s = String::new();
        push_escaped(&mut s, "a\\b\"c\nd", true);
        assert_eq!(s, "a\\\\b\\\"c\\nd");
        let mut s = String::new();
        push_escaped(&mut s, "a\\b\"c\nd", false);
        assert_eq!(s, "a\\\\b\"c\\nd");
        let mut s = String::new();
        push_escaped(&mut s, "plain — ünïcode", true);
        assert_eq!(s, "plain — ünïcode");
    }

    #[test]
    fn families_and_samples_per_format() {
        for format in [Format::Text, Format::OpenMetrics100] {
            let mut w = Writer::new(format);
            w.family(
                "x_bytes",
                ["[ALPHA] ", "Says \"hi\"\\ on\ntwo lines."],
                "gauge",
                Some("bytes"),
            );
            w.sample(
                "x_bytes",
                &["a", "b"],
                &["q\"", "x\\\n"],
                Value::Uint(u64::MAX),
            );
            w.sample("x_bytes", &[], &[], Value::Int(i64::MIN));
            let text = w.finish();
            let want = if format == Format::Text {
                "# HELP x_bytes [ALPHA] Says \"hi\"\\\\ on\\ntwo lines.\n# TYPE x_bytes gauge\n\
                 x_bytes{a=\"q\\\"\",b=\"x\\\\\\n\"} 18446744073709551615\nx_bytes -9223372036854775808\n"
            } else {
                "# HELP x_bytes [ALPHA] Says \\\"hi\\\"\\\\ on\\ntwo lines.\n# TYPE x_bytes gauge\n\
                 # UNIT x_bytes bytes\n\
                 x_bytes{a=\"q\\\"\",b=\"x\\\\\\n\"} 18446744073709551615\nx_bytes -9223372036854775808\n# EOF\n"
            };
            assert_eq!(text, want, "{format:?}");
        }
    }

    #[test]
    fn negotiation_follows_promhttp() {
        use Format::*;
        let cases = [
            (None, Text),
            (Some(""), Text),
            (Some("*/*"), Text),
            (Some("text/plain"), Text),
            (Some("text/plain; version=0.0.4"), Text),
            (Some("application/json"), Text),
            (Some("application/openmetrics-text"), OpenMetrics001),
            (
                Some("application/openmetrics-text; version=1.0.0"),
                OpenMetrics100,
            ),
            (
                Some("application/openmetrics-text;version=0.0.1"),
                OpenMetrics001,
            ),
            (Some("application/openmetrics-text;version=2.0.0"), Text),
            // Prometheus 2.x (up to 2.48, and 2.49+ by default).
            (
                Some(
                    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
                ),
                OpenMetrics100,
            ),
            // Prometheus 3.x by default.
            (
                Some(
                    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1",
                ),
                OpenMetrics100,
            ),
            // Prometheus with scrape_protocols: [PrometheusText0.0.4].
            (Some("text/plain;version=0.0.4;q=0.5,*/*;q=0.4"), Text),
            // Preference by q, whatever the order.
            (
                Some("text/plain;q=0.5, application/openmetrics-text;version=1.0.0;q=0.9"),
                OpenMetrics100,
            ),
            (
                Some("application/openmetrics-text;version=1.0.0;q=0.2, text/plain;q=0.5"),
                Text,
            ),
            // Protobuf is not offered: the next clause decides.
            (
                Some(
                    "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited,application/openmetrics-text;version=1.0.0;q=0.5",
                ),
                OpenMetrics100,
            ),
            // Unacceptable and malformed clauses choose nothing.
            (Some("application/openmetrics-text;q=0"), Text),
            (
                Some("application/openmetrics-text;q=abc, text/plain;q=0.1"),
                Text,
            ),
            (Some("openmetrics, ;;, /, a/"), Text),
            (
                Some("APPLICATION/OpenMetrics-Text; Version=1.0.0"),
                OpenMetrics100,
            ),
        ];
        for (accept, want) in cases {
            assert_eq!(Format::negotiate(accept), want, "Accept: {accept:?}");
        }
    }
}
