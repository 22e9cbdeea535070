//! `--metric-allowlist` and `--metric-denylist`: which of the collectors'
//! families are rendered, with kube-state-metrics' meaning, so one
//! setting reads the same in both tools:
//!
//! - each flag is a comma-separated list of regular expressions (spaces
//!   around an entry and empty entries are ignored);
//! - an expression matches a family name anywhere in it (unanchored, as
//!   Go's `MatchString`): `kubedf_pod` keeps every `kubedf_pod_*` family,
//!   and `^kubedf_pod_ephemeral_storage_used_bytes$` exactly one;
//! - with an allowlist only matching families are kept, with a denylist
//!   matching ones are dropped, and both at once is an error.
//!
//! The expressions are Rust's `regex` syntax, which is RE2's, as Go's is
//! (no look-around or backreferences in either).
//!
//! kubedf's own health families (`kubedf_scrape_*`, `kubedf_source_*`,
//! `kubedf_build_info`, the web config's and kubelet config's) are never
//! filtered: they are a handful of series per node, and the alerts that
//! tell a silent exporter from a healthy one read them.

use regex::Regex;
use thiserror::Error;

use crate::exposition::Families;

#[derive(Debug, Error)]
pub enum FilterError {
    #[error(
        "--metric-allowlist and --metric-denylist are both set; they are mutually exclusive, set only one"
    )]
    Both,
    #[error("{flag}: {pattern:?} is not a regular expression: {reason}")]
    Pattern {
        flag: &'static str,
        pattern: String,
        reason: String,
    },
}

/// Which families are rendered.
#[derive(Clone, Debug, Default)]
pub enum FamilyFilter {
    /// Every family (neither flag set, or set to nothing).
    #[default]
    All,
    /// Only families matching one of these.
    Allow(Vec<Regex>),
    /// Every family but those matching one of these.
    Deny(Vec<Regex>),
}

impl FamilyFilter {
    /// The filter the two flags give (each the flag's raw value, if set).
    pub fn new(allow: Option<&str>, deny: Option<&str>) -> Result<FamilyFilter, FilterError> {
        let allow = patterns("--metric-allowlist", allow)?;
        let deny = patterns("--metric-denylist", deny)?;
        match (allow.is_empty(), deny.is_empty()) {
            (false, false) => Err(FilterError::Both),
            (false, true) => Ok(FamilyFilter::Allow(allow)),
            (true, false) => Ok(FamilyFilter::Deny(deny)),
            (true, true) => Ok(FamilyFilter::All),
        }
    }

    /// Whether the family `name` is rendered.
    pub fn includes(&self, name: &str) -> bool {
        match self {
            FamilyFilter::All => true,
            FamilyFilter::Allow(list) => list.iter().any(|r| r.is_match(name)),
            FamilyFilter::Deny(list) => !list.iter().any(|r| r.is_match(name)),
        }
    }

    /// For the start-up log line: what is kept or dropped.
    pub fn describe(&self) -> String {
        let joined = |list: &[Regex]| {
            list.iter()
                .map(Regex::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            FamilyFilter::All => "every family".to_owned(),
            FamilyFilter::Allow(list) => format!("only families matching: {}", joined(list)),
            FamilyFilter::Deny(list) => {
                format!("every family but those matching: {}", joined(list))
            }
        }
    }
}

impl Families for FamilyFilter {
    fn includes(&self, family: &str) -> bool {
        FamilyFilter::includes(self, family)
    }
}

fn patterns(flag: &'static str, value: Option<&str>) -> Result<Vec<Regex>, FilterError> {
    value
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            Regex::new(p).map_err(|e| FilterError::Pattern {
                flag,
                pattern: p.to_owned(),
                reason: e.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neither_or_empty_keeps_everything() {
        for (a, d) in [
            (None, None),
            (Some(""), None),
            (None, Some(" , ,")),
            (Some(","), Some("")),
        ] {
            let f = FamilyFilter::new(a, d).expect("valid");
            assert!(matches!(f, FamilyFilter::All), "{a:?} {d:?}");
            assert!(f.includes("kubedf_nodefs_size_bytes"));
        }
    }

    #[test]
    fn matches_are_unanchored_as_in_kube_state_metrics() {
        let f = FamilyFilter::new(Some("kubedf_pod, ^kubelet_volume_stats_used_bytes$"), None)
            .expect("valid");
        assert!(f.includes("kubedf_pod_ephemeral_storage_used_bytes"));
        // Unanchored: the expression may match in the middle of a name.
        assert!(f.includes("x_kubedf_pod"));
        assert!(f.includes("kubelet_volume_stats_used_bytes"));
        assert!(!f.includes("kubelet_volume_stats_used_bytes_total"));
        assert!(!f.includes("kubedf_nodefs_size_bytes"));
    }

    #[test]
    fn a_denylist_drops_what_matches() {
        let f = FamilyFilter::new(None, Some("kubedf_container_.*,kubedf_ephemeral_volume"))
            .expect("valid");
        assert!(!f.includes("kubedf_container_logs_used_bytes"));
        assert!(!f.includes("kubedf_ephemeral_volume_inodes_used"));
        assert!(f.includes("kubedf_pod_ephemeral_storage_used_bytes"));
    }

    #[test]
    fn both_at_once_is_an_error() {
        let e = FamilyFilter::new(Some("a"), Some("b")).expect_err("both");
        assert!(e.to_string().contains("mutually exclusive"), "{e}");
        // An empty one beside a real one is not "both".
        assert!(FamilyFilter::new(Some("a"), Some(" ")).is_ok());
    }

    #[test]
    fn a_bad_pattern_names_the_flag_and_the_pattern() {
        let e = FamilyFilter::new(None, Some("ok,kubedf_(")).expect_err("bad");
        let text = e.to_string();
        assert!(
            text.starts_with("--metric-denylist: \"kubedf_(\""),
            "{text}"
        );
    }
}
