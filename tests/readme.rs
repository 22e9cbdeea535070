//! Keeps the docs true: every metric family is in docs/metrics.md, every
//! flag in docs/flags.md, every collector in the README's table, and every
//! page under docs/ is reachable from the README by links that resolve.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use kubedf::registry::{Registry, SELF_DESCS};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn every_metric_family_is_documented() {
    let page = read("docs/metrics.md");
    let mut collectors = Registry::available();
    // Cluster mode's collector, which --collector.* does not list.
    collectors.push(Box::new(kubedf::collector::cluster::ClusterCollector));
    let names = collectors
        .iter()
        .flat_map(|c| c.descs().iter().map(|d| d.name))
        .chain(SELF_DESCS.iter().map(|d| d.name));
    let missing: Vec<&str> = names
        .filter(|n| !page.contains(&format!("`{n}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/metrics.md lacks metrics: {missing:?}"
    );
}

#[test]
fn every_collector_is_documented() {
    let readme = read("README.md");
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
    let page = read("docs/flags.md");
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
                page.contains(&format!("| `{flag}`")),
                "docs/flags.md's table lacks flag {flag} (from `kubedf {sub} --help`)"
            );
        }
    }
}

/// The targets of the relative Markdown links `[text](target)` in `text`,
/// without their `#fragment`.
fn relative_links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        let Some(end) = rest.find(')') else { break };
        let target = &rest[..end];
        if !target.contains("://") && !target.starts_with('#') && !target.starts_with("mailto:") {
            let path = target.split('#').next().unwrap_or_default();
            if !path.is_empty() {
                out.push(path.to_owned());
            }
        }
    }
    out
}

#[test]
fn relative_links_resolve() {
    let mut pages = vec![PathBuf::from("README.md"), PathBuf::from("CHANGELOG.md")];
    for entry in std::fs::read_dir(root().join("docs")).expect("docs/") {
        let path = entry.expect("docs/ entry").path();
        if path.extension().is_some_and(|e| e == "md") {
            pages.push(path.strip_prefix(root()).expect("under root").to_path_buf());
        }
    }
    for page in &pages {
        let text = read(&page.to_string_lossy());
        let dir = page.parent().unwrap_or(Path::new(""));
        for link in relative_links(&text) {
            assert!(
                root().join(dir).join(&link).exists(),
                "{}: link to {link} leads nowhere",
                page.display()
            );
        }
    }
}

#[test]
fn every_docs_page_is_linked_from_the_readme() {
    let linked: BTreeSet<String> = relative_links(&read("README.md")).into_iter().collect();
    for entry in std::fs::read_dir(root().join("docs")).expect("docs/") {
        let name = entry.expect("docs/ entry").file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".md") {
            assert!(
                linked.contains(&format!("docs/{name}")),
                "docs/{name} is not linked from the README"
            );
        }
    }
    assert!(
        linked.contains("CHANGELOG.md"),
        "CHANGELOG.md is not linked from the README"
    );
}

#[test]
fn the_first_screen_shows_install_run_and_test() {
    // What a newcomer looks for first, within the README's first 60 lines.
    let readme = read("README.md");
    let first: String = readme.lines().take(60).collect::<Vec<_>>().join("\n");
    for want in [
        "helm install kubedf",
        "kubedf -- serve",
        "./scripts/test.sh",
    ] {
        assert!(
            first.contains(want),
            "the README's first screen lacks {want:?}"
        );
    }
}
