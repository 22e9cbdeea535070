//! Content negotiation: which text format (`Accept`) and whether gzip
//! (`Accept-Encoding`) a scraper gets. Both headers are lists of elements
//! with parameters and a q-value; one parser reads both, so a q-value means
//! the same in each (RFC 9110 section 12.4.2).

use axum::http::{HeaderMap, header};

use crate::exposition::Format;

/// q=1, in thousandths.
const Q_MAX: u16 = 1000;

/// An RFC 9110 qvalue in thousandths: `0`, `0.`, up to three decimals after
/// `0.`, or `1` with only zeros after the point; anything else is None.
pub fn qvalue(s: &str) -> Option<u16> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = format!("{frac:0<3}");
    let thousandths: u16 = digits.parse().ok()?;
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(Q_MAX),
        _ => None,
    }
}

/// One element of an `Accept` or `Accept-Encoding` list: a media range or
/// a content coding, its q-value, and its other parameters.
#[derive(Debug, PartialEq, Eq)]
struct Element<'a> {
    value: &'a str,
    /// In thousandths; 1000 when absent. A malformed q-value is 0: the
    /// element is refused rather than guessed at (Go's ParseFloat error
    /// leaves promhttp's q at 0 too).
    q: u16,
    params: &'a str,
}

impl<'a> Element<'a> {
    fn parse(item: &'a str) -> Element<'a> {
        let (value, params) = item.split_once(';').unwrap_or((item, ""));
        let mut element = Element {
            value: value.trim(),
            q: Q_MAX,
            params,
        };
        if let Some(q) = element.param("q") {
            element.q = qvalue(q).unwrap_or(0);
        }
        element
    }

    /// The value of the last parameter named `name` (case-insensitive),
    /// trimmed, quotes removed but for q, whose grammar has none.
    fn param(&self, name: &str) -> Option<&'a str> {
        self.params
            .rsplit(';')
            .map(|p| p.split_once('=').unwrap_or((p, "")))
            .filter(|(key, _)| key.trim().eq_ignore_ascii_case(name))
            .map(|(_, value)| {
                let value = value.trim();
                if name.eq_ignore_ascii_case("q") {
                    value
                } else {
                    value.trim_matches('"')
                }
            })
            .next()
    }

    fn accepted(&self) -> bool {
        self.q > 0
    }
}

/// The elements of every value of `name` in `headers`, in order.
fn elements<'h>(
    headers: &'h HeaderMap,
    name: header::HeaderName,
) -> impl Iterator<Item = Element<'h>> {
    headers
        .get_all(name)
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter(|item| !item.trim().is_empty())
        .map(Element::parse)
}

/// Whether the client accepts gzip, per RFC 9110 section 12.5.3: `gzip`
/// (or its alias `x-gzip`) with a q-value above 0, or else `*` with one; an
/// explicit `gzip;q=0` wins over `*`. A malformed q-value makes its element
/// count as a refusal.
pub fn accepts_gzip(headers: &HeaderMap) -> bool {
    let mut gzip: Option<bool> = None;
    let mut any: Option<bool> = None;
    for element in elements(headers, header::ACCEPT_ENCODING) {
        let coding = element.value;
        let slot = if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
            &mut gzip
        } else if coding == "*" {
            &mut any
        } else {
            continue;
        };
        // Repeated elements: the most favourable one counts.
        *slot = Some(slot.unwrap_or(false) || element.accepted());
    }
    gzip.or(any).unwrap_or(false)
}

/// The format to answer a request with (see [`format_for`]), from its
/// `Accept` headers.
pub fn format(headers: &HeaderMap) -> Format {
    let mut clauses: Vec<Clause<'_>> = elements(headers, header::ACCEPT)
        .filter_map(Clause::new)
        .collect();
    choose(&mut clauses)
}

/// The format to answer a request with this `Accept` header (None when
/// the request has none): the first acceptable clause, by descending q,
/// that names a format kubedf writes; the text format otherwise.
///
/// As client_golang's promhttp with OpenMetrics enabled
/// (`expfmt.NegotiateIncludingOpenMetrics`): `text/plain` with version
/// 0.0.4 or no version is the text format; `application/openmetrics-text`
/// with version 1.0.0, 0.0.1 or none is OpenMetrics (0.0.1 unless 1.0.0 is
/// asked for); `*/*` and anything else never choose, so they fall through
/// to the text format. Unlike promhttp, a clause with `q=0` is skipped
/// (RFC 9110: "not acceptable"), q-values follow RFC 9110's grammar (a
/// malformed one, such as `q=2`, refuses its clause), and media types
/// compare case-insensitively.
pub fn format_for(accept: Option<&str>) -> Format {
    let mut headers = HeaderMap::new();
    if let Some(value) = accept.and_then(|a| header::HeaderValue::from_str(a).ok()) {
        headers.insert(header::ACCEPT, value);
    }
    format(&headers)
}

fn choose(clauses: &mut [Clause<'_>]) -> Format {
    // A stable sort keeps the header's order among equal preferences.
    clauses.sort_by(|a, b| b.q.cmp(&a.q).then(a.wildcards.cmp(&b.wildcards)));
    for clause in clauses.iter().filter(|c| c.q > 0) {
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

/// One media range of an `Accept` header.
struct Clause<'a> {
    kind: &'a str,
    subtype: &'a str,
    version: Option<&'a str>,
    q: u16,
    /// How many of type and subtype are `*`: a more specific range comes
    /// first among equal q.
    wildcards: u8,
}

impl<'a> Clause<'a> {
    fn new(element: Element<'a>) -> Option<Clause<'a>> {
        let range = element.value;
        let (kind, subtype) = match range.split_once('/') {
            Some((k, s)) => (k.trim(), s.trim()),
            None if range == "*" => ("*", "*"),
            None => return None,
        };
        if kind.is_empty() || subtype.is_empty() {
            return None;
        }
        Some(Clause {
            kind,
            subtype,
            version: element.param("version"),
            q: element.q,
            wildcards: u8::from(kind == "*") + u8::from(subtype == "*"),
        })
    }

    fn is(&self, kind: &str, subtype: &str) -> bool {
        self.kind.eq_ignore_ascii_case(kind) && self.subtype.eq_ignore_ascii_case(subtype)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn accept_encoding() {
        assert!(accepts_gzip(&headers("gzip")));
        assert!(accepts_gzip(&headers("gzip, deflate, br")));
        assert!(accepts_gzip(&headers("deflate;q=0.5, GZIP;q=0.8")));
        assert!(accepts_gzip(&headers("*")));
        assert!(!accepts_gzip(&headers("gzip;q=0")));
        assert!(!accepts_gzip(&headers("identity")));
        assert!(!accepts_gzip(&HeaderMap::new()));
        // RFC 9110 qvalues: every spelling of zero refuses.
        for zero in ["0", "0.", "0.0", "0.00", "0.000"] {
            assert!(!accepts_gzip(&headers(&format!("gzip;q={zero}"))), "{zero}");
            assert!(
                !accepts_gzip(&headers(&format!("gzip ; Q = {zero}"))),
                "{zero}"
            );
            assert!(!accepts_gzip(&headers(&format!("*;q={zero}"))), "{zero}");
        }
        assert!(accepts_gzip(&headers("gzip;q=0.001")));
        assert!(accepts_gzip(&headers("gzip;q=1.000")));
        assert!(accepts_gzip(&headers("x-gzip")));
        // An explicit refusal beats the wildcard; malformed q-values refuse.
        assert!(!accepts_gzip(&headers("gzip;q=0, *")));
        assert!(accepts_gzip(&headers("br, *;q=0.1")));
        for bad in [
            "gzip;q=2",
            "gzip;q=1.5",
            "gzip;q=0.0001",
            "gzip;q=",
            "gzip;q=-1",
            "gzip;q=abc",
        ] {
            assert!(!accepts_gzip(&headers(bad)), "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn accept_encoding_never_panics(v in "[ -~]{0,64}") {
            if let Ok(value) = HeaderValue::from_str(&v) {
                let mut h = HeaderMap::new();
                h.insert(header::ACCEPT_ENCODING, value);
                let _ = accepts_gzip(&h);
            }
        }

        #[test]
        fn qvalues_match_the_grammar(int in 0u8..3, frac in "[0-9]{0,4}") {
            let s = format!("{int}.{frac}");
            let got = qvalue(&s);
            let digits_ok = frac.len() <= 3;
            let want = match (int, digits_ok) {
                (0, true) => Some(format!("{frac:0<3}").parse::<u16>().unwrap()),
                (1, true) if frac.bytes().all(|b| b == b'0') => Some(1000),
                _ => None,
            };
            proptest::prop_assert_eq!(got, want);
            let zero = got == Some(0);
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(&format!("gzip;q={s}")).unwrap());
            proptest::prop_assert_eq!(accepts_gzip(&h), got.is_some() && !zero);
        }
    }

    #[test]
    fn negotiation_follows_promhttp() {
        use crate::exposition::Format::*;
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
            assert_eq!(format_for(accept), want, "Accept: {accept:?}");
        }
    }

    #[test]
    fn one_qvalue_grammar_for_both_headers() {
        // What refuses gzip refuses a format, and the other way round.
        for (q, accepted) in [
            ("1", true),
            ("0.5", true),
            ("0.001", true),
            ("0", false),
            ("0.000", false),
            ("2", false),
            ("1.5", false),
            ("0.0001", false),
            ("\"0.5\"", false),
            ("", false),
            ("abc", false),
        ] {
            assert_eq!(
                accepts_gzip(&headers(&format!("gzip;q={q}"))),
                accepted,
                "gzip;q={q}"
            );
            let want = if accepted {
                crate::exposition::Format::OpenMetrics100
            } else {
                crate::exposition::Format::Text
            };
            assert_eq!(
                format_for(Some(&format!(
                    "application/openmetrics-text;version=1.0.0;q={q}"
                ))),
                want,
                "q={q}"
            );
        }
        // A q-value is compared in thousandths: 0.101 beats 0.1.
        assert_eq!(
            format_for(Some(
                "text/plain;q=0.1, application/openmetrics-text;version=1.0.0;q=0.101"
            )),
            crate::exposition::Format::OpenMetrics100
        );
    }

    #[test]
    fn elements_and_their_parameters() {
        let e = Element::parse(" application/openmetrics-text ; Version=\"1.0.0\" ;Q=0.5;q=0.25");
        assert_eq!(e.value, "application/openmetrics-text");
        assert_eq!(e.param("version"), Some("1.0.0"));
        assert_eq!(e.q, 250, "the last q counts");
        assert_eq!(Element::parse("gzip").q, 1000);
        assert_eq!(Element::parse("gzip;q").q, 0, "a q with no value refuses");
        assert_eq!(Element::parse("gzip;level=9").param("q"), None);
    }

    #[test]
    fn every_accept_header_line_counts() {
        let mut h = HeaderMap::new();
        h.append(header::ACCEPT, HeaderValue::from_static("text/plain;q=0.5"));
        h.append(
            header::ACCEPT,
            HeaderValue::from_static("application/openmetrics-text;version=1.0.0"),
        );
        assert_eq!(format(&h), crate::exposition::Format::OpenMetrics100);
        let mut h = HeaderMap::new();
        h.append(header::ACCEPT_ENCODING, HeaderValue::from_static("br"));
        h.append(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
        assert!(accepts_gzip(&h));
    }

    proptest::proptest! {
        #[test]
        fn accept_never_panics(v in "[ -~]{0,64}") {
            let _ = format_for(Some(&v));
        }
    }
}
