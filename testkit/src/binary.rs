//! The kubedf binary under test: one-shot runs, `kubedf serve` processes, and
//! the flags of a test node whose pods the fake API server holds.

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The kubedf binary cargo built for the calling integration test or
/// benchmark, as a [`Kubedf`]. Cargo sets `CARGO_BIN_EXE_kubedf` only while
/// it compiles those targets of the kubedf package, so the path is read where
/// this expands, not in the testkit.
#[macro_export]
macro_rules! kubedf {
    () => {
        $crate::Kubedf::at(env!("CARGO_BIN_EXE_kubedf"))
    };
}

/// A `--cri.endpoint` where no runtime listens.
pub const NO_RUNTIME: &str = "unix:///nonexistent/kubedf/cri.sock";

/// A `--kubelet.config` that does not exist: kubelet's defaults apply.
pub const NO_KUBELET_CONFIG: &str = "/nonexistent/config.yaml";

/// The Accept header of a scraper that wants OpenMetrics 1.0.0.
pub const OPENMETRICS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0";

/// A kubedf binary to run: [`kubedf!`] names cargo's, [`Kubedf::at`] any
/// other (e.g. a release build given to a benchmark).
#[derive(Debug, Clone)]
pub struct Kubedf {
    bin: PathBuf,
}

impl Kubedf {
    pub fn at(bin: impl Into<PathBuf>) -> Kubedf {
        Kubedf { bin: bin.into() }
    }

    pub fn path(&self) -> &Path {
        &self.bin
    }

    /// Runs `kubedf ARGS` to completion (killed after 60 s).
    pub fn run(&self, args: &[&str]) -> Output {
        let mut child = Command::new(&self.bin)
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
        let stdout =
            std::io::read_to_string(child.stdout.take().expect("stdout")).unwrap_or_default();
        let stderr =
            std::io::read_to_string(child.stderr.take().expect("stderr")).unwrap_or_default();
        let status = child.wait().expect("wait kubedf");
        let _ = tx.send(());
        Output {
            status,
            stdout: stdout.into_bytes(),
            stderr: stderr.into_bytes(),
        }
    }

    /// Starts `kubedf serve` on 127.0.0.1:0 with the given extra arguments and
    /// waits for it to say where it listens.
    pub fn serve(&self, args: &[&str]) -> Served {
        self.serve_with(&[], &[], args)
    }

    /// As [`Kubedf::serve`], run through `wrapper` (e.g. `sh -c 'ulimit -n
    /// 128; exec "$0" "$@"'`) with extra environment variables.
    pub fn serve_with(&self, wrapper: &[&str], env: &[(&str, &str)], args: &[&str]) -> Served {
        Served::start(&self.bin, wrapper, env, args)
    }

    /// `kubedf serve` on a test node: `--node-name node`, `--kubeconfig`
    /// (the fake API server's), `--kubelet.root-dir root` and
    /// `--cri.endpoint cri` ([`NO_RUNTIME`] where the test has none).
    pub fn on_node(&self, node: &str, kubeconfig: &Path, root: &Path, cri: &str) -> OnNode<'_> {
        let args = [
            ("--node-name", OsStr::new(node)),
            ("--kubeconfig", kubeconfig.as_os_str()),
            ("--kubelet.root-dir", root.as_os_str()),
            ("--cri.endpoint", OsStr::new(cri)),
        ];
        OnNode {
            kubedf: self,
            args: args
                .iter()
                .flat_map(|(flag, v)| [OsString::from(flag), v.to_os_string()])
                .collect(),
        }
    }
}

/// The flags of `kubedf serve` on a test node; see [`Kubedf::on_node`].
pub struct OnNode<'a> {
    kubedf: &'a Kubedf,
    args: Vec<OsString>,
}

impl OnNode<'_> {
    /// `--kubelet.config path` ([`NO_KUBELET_CONFIG`] for kubelet's
    /// defaults); without it kubedf reads its default path.
    pub fn kubelet_config(mut self, path: impl AsRef<OsStr>) -> Self {
        self.args.push("--kubelet.config".into());
        self.args.push(path.as_ref().to_os_string());
        self
    }

    /// Starts `kubedf serve` with the node's flags and then `extra`.
    pub fn serve(self, extra: &[&str]) -> Served {
        let args: Vec<&OsStr> = self
            .args
            .iter()
            .map(OsString::as_os_str)
            .chain(extra.iter().map(OsStr::new))
            .collect();
        Served::start(&self.kubedf.bin, &[], &[], &args)
    }
}

/// A running `kubedf serve`, stopped (SIGTERM, then SIGKILL) on drop.
pub struct Served {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Served {
    fn start(
        bin: &Path,
        wrapper: &[&str],
        env: &[(&str, &str)],
        args: &[impl AsRef<OsStr>],
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
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = Arc::clone(&log);
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

/// A blocking HTTP client for talking to a served kubedf (10 s timeout, no
/// gzip).
pub fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .gzip(false)
        .build()
        .expect("http client")
}
