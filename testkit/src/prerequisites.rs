//! Whether a test may run here: the one skip policy and the one root check.

use std::io::Write as _;

/// Says whether a test that needs `what` may run. Missing prerequisites fail
/// the test under CI=true (a skipped test proves nothing there) and skip it,
/// loudly, elsewhere.
pub fn prerequisites(test: &str, missing: Option<String>) -> bool {
    let Some(reason) = missing else { return true };
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: {reason}; refusing to skip because CI=true");
    }
    let _ = writeln!(std::io::stderr(), "skipping {test}: {reason}");
    false
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|u| u.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

fn have_tool(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

/// The given tools in PATH, or a reason.
pub fn need_tools(tools: &[&str]) -> Option<String> {
    tools
        .iter()
        .find(|t| !have_tool(t))
        .map(|t| format!("`{t}` is not installed (the README's test command installs it)"))
}

/// Root and the given tools, or a reason.
pub fn need_root_and(tools: &[&str]) -> Option<String> {
    if !is_root() {
        return Some("needs root (mounts filesystems)".into());
    }
    need_tools(tools)
}
