//! Reading what kubedf exposes: the one parser of a text exposition's sample
//! lines, and `promtool check metrics`.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Command, Stdio};

/// `promtool check metrics` on an exposition.
pub fn promtool_check(text: &str) -> Result<(), String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("run promtool: {e}"))?;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .map_err(|e| format!("write to promtool: {e}"))?;
    let out = child
        .wait_with_output()
        .map_err(|e| format!("wait promtool: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "promtool check metrics failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// One parsed sample line of an exposition.
#[derive(Debug, Clone)]
pub struct Line {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: String,
}

/// Parses the sample lines (comments skipped) of a text exposition.
///
/// Panics on two samples of one series (the same name and labels): every
/// test that reads an exposition checks that there is one series per label
/// set, which Prometheus requires and kubedf promises.
pub fn samples(text: &str) -> Vec<Line> {
    let mut seen = std::collections::HashSet::new();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("sample has a value");
            // Text formats have no timestamps here, so the series is all but
            // the value; kubedf writes a family's labels in one order.
            assert!(
                seen.insert(series),
                "duplicate series in the exposition: {series}"
            );
            let (name, labels) = match series.split_once('{') {
                None => (series.to_owned(), BTreeMap::new()),
                Some((name, rest)) => {
                    let body = rest.strip_suffix('}').expect("closing brace");
                    let labels = body
                        .split("\",")
                        .filter(|p| !p.is_empty())
                        .map(|p| {
                            let (k, v) = p.split_once("=\"").expect("label pair");
                            (k.to_owned(), v.trim_end_matches('"').to_owned())
                        })
                        .collect();
                    (name.to_owned(), labels)
                }
            };
            Line {
                name,
                labels,
                value: value.to_owned(),
            }
        })
        .collect()
}

/// The value of the one series of `name` whose labels include `labels`.
pub fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<String> {
    let found: Vec<Line> = samples(text)
        .into_iter()
        .filter(|l| {
            l.name == name
                && labels
                    .iter()
                    .all(|(k, v)| l.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect();
    assert!(
        found.len() <= 1,
        "more than one series of {name} with {labels:?}: {found:?}"
    );
    found.into_iter().next().map(|l| l.value)
}

/// [`value`] as a number; None also when it does not parse.
pub fn number(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    value(text, name, labels).and_then(|v| v.parse().ok())
}

pub fn has_family(text: &str, name: &str) -> bool {
    samples(text).iter().any(|l| l.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "duplicate series in the exposition: a{x=\"1\"}")]
    fn a_duplicate_series_fails_the_parse() {
        samples("a{x=\"1\"} 1\na{x=\"2\"} 1\na{x=\"1\"} 2\n");
    }

    #[test]
    fn distinct_series_parse() {
        let lines = samples("# HELP a A.\na{x=\"1\"} 1\na{x=\"2\"} 1\nb 3\n");
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[1].labels["x"], "2");
    }
}
