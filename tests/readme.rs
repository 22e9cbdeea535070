//! Keeps the README true: every metric family, flag and collector is in it.

use kubedf::registry::{Registry, SELF_DESCS};

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md")
}

#[test]
fn every_metric_family_is_documented() {
    let readme = readme();
    let collectors = Registry::available();
    let names = collectors
        .iter()
        .flat_map(|c| c.descs().iter().map(|d| d.name))
        .chain(SELF_DESCS.iter().map(|d| d.name));
    let missing: Vec<&str> = names
        .filter(|n| !readme.contains(&format!("`{n}`")))
        .collect();
    assert!(missing.is_empty(), "README lacks metrics: {missing:?}");
}

#[test]
fn every_collector_is_documented() {
    let readme = readme();
    for c in Registry::available() {
        assert!(
            readme.contains(&format!("| `{}` |", c.name())),
            "README's collectors table lacks {}",
            c.name()
        );
    }
}

#[test]
fn every_flag_is_documented() {
    let readme = readme();
    for sub in ["serve", "metrics", "df"] {
        let out = testkit::kubedf!().run(&[sub, "--help"]);
        let help = String::from_utf8_lossy(&out.stdout);
        for flag in help
            .split_whitespace()
            .filter(|w| w.starts_with("--") && !w.contains("collector."))
            .map(|w| w.trim_end_matches(|c: char| !c.is_alphanumeric()))
        {
            if flag == "--help" || flag == "--version" {
                continue;
            }
            assert!(
                readme.contains(&format!("`{flag}`")),
                "README lacks flag {flag} (from `kubedf {sub} --help`)"
            );
        }
    }
}
