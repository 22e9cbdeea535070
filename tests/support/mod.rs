//! Shared test support: real peers (containerd, tmpfs mounts, promtool) and a
//! driver for the kubedf binary. Each test binary uses part of it.
// Each test binary compiles this module with `mod support;` and uses only
// part of it, so per-binary dead-code warnings are noise here. What no binary
// (nor examples/fake_kube_server.rs) uses is deleted instead.
#![allow(dead_code)]

pub mod containerd;
pub mod cri;
pub mod fake_kube;
pub mod manifests;
pub mod tls;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::mount::{MntFlags, MsFlags};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

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

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|u| u.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

pub fn have_tool(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

/// Root and the given tools, or a reason.
pub fn need_root_and(tools: &[&str]) -> Option<String> {
    if !is_root() {
        return Some("needs root (mounts filesystems)".into());
    }
    tools
        .iter()
        .find(|t| !have_tool(t))
        .map(|t| format!("`{t}` is not installed (the README's test command installs it)"))
}

/// A tmpfs of a known size, unmounted on drop.
pub struct Tmpfs {
    pub path: PathBuf,
}

impl Tmpfs {
    pub fn mount(path: &Path, bytes: u64) -> Tmpfs {
        std::fs::create_dir_all(path).expect("create tmpfs mount point");
        let options = format!("size={bytes},mode=0755");
        nix::mount::mount(
            Some("tmpfs"),
            path,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(options.as_str()),
        )
        .unwrap_or_else(|e| panic!("mount tmpfs at {}: {e}", path.display()));
        Tmpfs {
            path: path.to_path_buf(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if let Err(e) = nix::mount::umount2(&self.path, MntFlags::MNT_DETACH) {
            eprintln!("umount {}: {e}", self.path.display());
        }
    }
}

/// statvfs of a path, computed here independently of kubedf's code:
/// (capacity, available, used, inodes, inodes free, inodes used).
pub fn statfs_figures(path: &Path) -> [u64; 6] {
    let out = Command::new("stat")
        .args(["-f", "-c", "%S %b %f %a %c %d"])
        .arg(path)
        .output()
        .expect("run stat -f");
    assert!(
        out.status.success(),
        "stat -f {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Vec<u64> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|n| n.parse().expect("stat -f prints numbers"))
        .collect();
    let [frsize, blocks, bfree, bavail, files, ffree] = v[..] else {
        panic!("stat -f printed {v:?}")
    };
    [
        blocks * frsize,
        bavail * frsize,
        (blocks - bfree) * frsize,
        files,
        ffree,
        files - ffree,
    ]
}

pub fn kubedf_bin() -> &'static str {
    env!("CARGO_BIN_EXE_kubedf")
}

/// Runs `kubedf ARGS` to completion (bounded).
pub fn run_kubedf(args: &[&str]) -> Output {
    let mut child = Command::new(kubedf_bin())
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kubedf");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        if rx.recv_timeout(Duration::from_secs(60)).is_err() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    });
    let stdout = std::io::read_to_string(child.stdout.take().expect("stdout")).unwrap_or_default();
    let stderr = std::io::read_to_string(child.stderr.take().expect("stderr")).unwrap_or_default();
    let status = child.wait().expect("wait kubedf");
    let _ = tx.send(());
    Output {
        status,
        stdout: stdout.into_bytes(),
        stderr: stderr.into_bytes(),
    }
}

/// A running `kubedf serve`, stopped (SIGTERM, then SIGKILL) on drop.
pub struct Served {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Served {
    /// Starts `kubedf serve` on 127.0.0.1:0 with the given extra arguments and
    /// waits for it to say where it listens.
    pub fn start(args: &[&str]) -> Served {
        Served::start_with(&[], &[], args)
    }

    /// As [`Served::start`], run through `wrapper` (e.g. `sh -c 'ulimit -n
    /// 128; exec "$0" "$@"'`) with extra environment variables.
    pub fn start_with(wrapper: &[&str], env: &[(&str, &str)], args: &[&str]) -> Served {
        Served::start_program(Path::new(kubedf_bin()), wrapper, env, args)
    }

    /// As [`Served::start_with`], running the kubedf binary at `bin` (e.g. a
    /// release build given to a benchmark) instead of cargo's.
    pub fn start_program(
        bin: &Path,
        wrapper: &[&str],
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Served {
        let mut command = match wrapper.split_first() {
            None => Command::new(bin),
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(bin);
                c
            }
        };
        let mut child = command
            .envs(env.iter().copied())
            .arg("serve")
            .args([
                "--web.listen-address",
                "127.0.0.1:0",
                "--log.format",
                "json",
            ])
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kubedf serve");
        let stderr = child.stderr.take().expect("stderr");
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = std::sync::Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("serving metrics") {
                    let v: serde_json::Value = serde_json::from_str(&line).expect("json log line");
                    let addr = v["fields"]["address"]
                        .as_str()
                        .expect("address field")
                        .to_owned();
                    let _ = tx.send(addr);
                }
                sink.lock().expect("log lock").push(line);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(a) => a.parse().expect("socket address"),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "kubedf serve did not start: {:?}",
                    log.lock().map(|l| l.clone())
                );
            }
        };
        Served { child, addr, log }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn scrape(&self) -> String {
        let r = http().get(self.url("/metrics")).send().expect("scrape");
        assert_eq!(r.status(), 200);
        r.text().expect("body")
    }

    /// Scrapes asking for OpenMetrics, whose `# EOF` shows the body is whole.
    pub fn scrape_openmetrics(&self) -> String {
        let r = http()
            .get(self.url("/metrics"))
            .header("Accept", OPENMETRICS_ACCEPT)
            .send()
            .expect("scrape");
        assert_eq!(r.status(), 200);
        r.text().expect("body")
    }

    /// Scrapes until `done` holds for the exposition, or panics after `limit`.
    pub fn scrape_until(&self, limit: Duration, what: &str, done: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let text = self.scrape();
            if done(&text) {
                return text;
            }
            if start.elapsed() > limit {
                panic!(
                    "waited {limit:?} for {what}; last scrape:\n{text}\nlog:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn log_text(&self) -> String {
        self.log.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    /// SIGTERM and wait (bounded); returns whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        stop_child(&mut self.child)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
        }
    }
}

/// Stops a child we started: SIGTERM, up to 10 s to exit, then SIGKILL.
/// Returns whether it exited successfully on SIGTERM.
pub fn stop_child(child: &mut Child) -> bool {
    if let Ok(Some(status)) = child.try_wait() {
        return status.success();
    }
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if let Ok(Some(status)) = child.try_wait() {
            return status.success();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

/// The six figures of a filesystem, in the order of [`statfs_figures`].
pub const FS_FIGURES: [&str; 6] = [
    "capacity_bytes",
    "available_bytes",
    "used_bytes",
    "inodes",
    "inodes_free",
    "inodes_used",
];

/// The Accept header of a scraper that wants OpenMetrics 1.0.0.
pub const OPENMETRICS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0";

pub fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .gzip(false)
        .build()
        .expect("http client")
}

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
pub fn samples(text: &str) -> Vec<Line> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("sample has a value");
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

pub fn has_family(text: &str, name: &str) -> bool {
    samples(text).iter().any(|l| l.name == name)
}
