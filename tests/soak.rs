//! The soak test: a churning node. Pods and PVCs come and go through the fake
//! API's watch, their tmpfs volumes are mounted and unmounted, the API's
//! watches are cut and its history compacted, a real containerd is killed
//! (SIGKILL) and restarted, malformed pods, PVCs and PVs go through the API
//! among the good ones, and the web config (TLS and basic auth) is rewritten
//! non-atomically over and over, and a tenant keeps exchanging a directory
//! of a walked hostPath volume with a symlink to another pod's data and
//! with a file (renameat2), nesting directories beyond PATH_MAX and creating
//! and removing files in it, while Prometheus-style scrapes (HTTPS with the
//! password, gzip, OpenMetrics Accept) run back to back. Bounded:
//! KUBEDF_SOAK_SECS seconds (default 60; the benchmark's long mode sets
//! more). Figures are printed at the end and recorded in docs/soak.md.
//!
//! Passes when every authenticated scrape answers 200 and sampled scrapes
//! are promtool-clean; TLS never turns off and no unauthenticated request
//! gets through; every refused reload is counted; no PVC series outlives its
//! pod; no live PVC is missing from any scrape once it appeared; the CRI
//! source reports down while containerd is, and is back after its restart;
//! every malformed object is logged by name and kubedf outlives them all;
//! the tenant's volume is in every scrape, never in error, never counting the
//! other pod's data; and RSS, open fds and threads stay flat (bounds below).

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::os::fd::{AsFd, OwnedFd};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rustix::fs::{CWD, Mode, OFlags, RenameFlags};
use serde_json::{Value, json};
use testkit::containerd::Containerd;
use testkit::fake_kube::{self, FakeKube};
use testkit::tls::{curl, make_certs};
use testkit::*;

const NODE: &str = "node-1";
const NS: &str = "soak";
/// Pods created (and later deleted) per round.
const BATCH: usize = 4;
/// How long one PVC may take to appear or to go (generous: the machine is shared).
const WAIT: Duration = Duration::from_secs(30);
/// How long the CRI source may take to say containerd is down, or back
/// after it answers again (a few sample intervals; generous under load).
const CRI_BOUND: Duration = Duration::from_secs(15);
/// containerd is killed in every round divisible by this.
const CRI_EVERY: usize = 3;
const PASSWORD: &str = "s3cret";
const ACCEPT: &str = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
const TEXT_ACCEPT: &str = "text/plain;version=0.0.4";

fn claim_series(text: &str, claim: &str) -> bool {
    value(
        text,
        "kubelet_volume_stats_capacity_bytes",
        &[("namespace", NS), ("persistentvolumeclaim", claim)],
    )
    .is_some()
}

/// (RSS kB, threads, open fds) of a process.
fn resources(pid: u32) -> (u64, u64, u64) {
    let field = |name: &str| testkit::procstat::status_number(pid, name).unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0);
    (field("VmRSS"), field("Threads"), fds)
}

struct Pod {
    name: String,
    claim: String,
    mount: Tmpfs,
}

/// What the tenant's volume may hold at most (its own files); the other
/// pod's data is twice as much, so counting it would show.
const TENANT_MAX: u64 = 8 << 20;

/// A pod whose hostPath PV (a directory on a tmpfs of its own, beside
/// another pod's data) kubedf walks, and the tenant that misbehaves in it.
struct Walked {
    claim: String,
    volume: PathBuf,
    victim: PathBuf,
    _mount: Tmpfs,
}

fn add_walked_pod(kube: &FakeKube, dir: &Path) -> Walked {
    let mount = Tmpfs::mount(&dir.join("host-disk"), 64 << 20);
    let volume = mount.path.join("local-path/pv-tenant");
    let victim = mount.path.join("local-path/pv-victim");
    std::fs::create_dir_all(&volume).expect("mkdir tenant volume");
    std::fs::create_dir_all(&victim).expect("mkdir victim volume");
    std::fs::write(victim.join("data"), vec![9u8; 2 * TENANT_MAX as usize]).expect("victim data");
    let (name, claim, pv) = ("tenant", "tenant-data", "pv-tenant");
    let pvc = fake_kube::pvc(NS, claim, Some(pv), "Bound");
    kube.put_pv(fake_kube::bind_pv(
        fake_kube::pv_host_path(pv, volume.to_str().expect("utf-8"), "1Gi"),
        &pvc,
    ));
    kube.put_pvc(pvc);
    kube.put_pod(fake_kube::pod(
        NS,
        name,
        &fake_kube::fake_uid(name),
        NODE,
        "Running",
        vec![fake_kube::pvc_volume("d", claim)],
    ));
    Walked {
        claim: claim.into(),
        volume,
        victim,
        _mount: mount,
    }
}

/// What the tenant did.
#[derive(Default, Debug)]
struct TenantDid {
    cycles: u64,
    exchanges: u64,
    nests: u64,
    files: u64,
}

fn open_dir(parent: impl AsFd, name: &str) -> OwnedFd {
    rustix::fs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .expect("open dir")
}

/// The tenant of issue 16, until `stop`: in each cycle it nests 20
/// directories of 250-character names (5,000 bytes of path) with a file at
/// the bottom, replacing the last cycle's nest; rewrites 50 files; and
/// exchanges its directory `d` 500 times with a symlink to the other pod's
/// data and 500 times with a file (renameat2 RENAME_EXCHANGE). A short pause
/// between cycles leaves the shared machine's CPUs to the rest of the test.
fn misbehave(volume: &Path, victim: &Path, stop: &AtomicBool) -> TenantDid {
    std::fs::create_dir_all(volume.join("d/inner")).expect("mkdir d");
    std::fs::write(volume.join("d/inner/f"), vec![1u8; 100_000]).expect("write d");
    std::fs::write(volume.join("file"), vec![2u8; 4096]).expect("write file");
    std::os::unix::fs::symlink(victim, volume.join("link")).expect("symlink");
    let dir = open_dir(CWD, volume.to_str().expect("utf-8"));
    let long = "n".repeat(250);
    let mut did = TenantDid::default();
    while !stop.load(Ordering::Relaxed) {
        did.cycles += 1;
        let nest = format!("nest{}", did.cycles % 2);
        // std's remove_dir_all goes by descriptors: no PATH_MAX limit.
        let _ = std::fs::remove_dir_all(volume.join(&nest));
        let mut fd = {
            rustix::fs::mkdirat(&dir, nest.as_str(), Mode::from_raw_mode(0o755))
                .expect("mkdir nest");
            open_dir(&dir, &nest)
        };
        for _ in 0..20 {
            rustix::fs::mkdirat(&fd, long.as_str(), Mode::from_raw_mode(0o755)).expect("mkdir");
            fd = open_dir(&fd, &long);
        }
        let bottom = rustix::fs::openat(
            &fd,
            "bottom",
            OFlags::WRONLY | OFlags::CREATE | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
        .expect("create bottom");
        rustix::io::write(&bottom, &[3u8; 5000]).expect("write bottom");
        did.nests += 1;
        for f in 0..50 {
            std::fs::write(volume.join(format!("c{f}")), vec![4u8; 1000 + f * 100]).expect("write");
            did.files += 1;
        }
        for other in ["link", "file"] {
            for _ in 0..500 {
                rustix::fs::renameat_with(&dir, "d", &dir, other, RenameFlags::EXCHANGE)
                    .expect("renameat2 RENAME_EXCHANGE");
                did.exchanges += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    did
}

/// The tenant's thread, stopped and joined when dropped (before the mount
/// it works in goes).
struct Tenant {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<TenantDid>>,
}

impl Tenant {
    fn finish(mut self) -> TenantDid {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().expect("tenant thread");
        thread.join().expect("tenant")
    }
}

impl Drop for Tenant {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn add_pod(kube: &FakeKube, root: &Path, n: usize) -> Pod {
    let name = format!("churn-{n}");
    let claim = format!("data-{n}");
    let pv = format!("pv-{n}");
    let uid = fake_kube::fake_uid(&name);
    let mount = Tmpfs::mount(&csi_mount_path(root, &uid, &pv), 4 << 20);
    let pvc = fake_kube::pvc(NS, &claim, Some(&pv), "Bound");
    kube.put_pv(fake_kube::bind_pv(
        fake_kube::pv_csi(
            &pv,
            "soak.csi.example",
            &format!("vol-{n}"),
            "4Mi",
            "Filesystem",
        ),
        &pvc,
    ));
    kube.put_pvc(pvc);
    let volumes: Vec<Value> = vec![fake_kube::pvc_volume("d", &claim)];
    kube.put_pod(fake_kube::pod(NS, &name, &uid, NODE, "Running", volumes));
    Pod { name, claim, mount }
}

/// Malformed objects of one round, put through the API among the good ones.
struct BadInputs {
    /// (kind of bad input, the name its error must mention).
    tried: Vec<(&'static str, String)>,
    /// Pods to delete at the end of the round.
    pods: Vec<String>,
    /// A claim that must be served all the same (its PV's capacity does
    /// not parse, but statfs needs none), and its mount.
    served: (String, Tmpfs),
}

/// Each is something a broken controller, a version skew or a hand-edited
/// object could hand kubedf.
fn add_bad_inputs(kube: &FakeKube, root: &Path, round: usize) -> BadInputs {
    let uid = |name: &str| fake_kube::fake_uid(name);
    let good_pod = |name: &str, volumes: Vec<Value>| {
        fake_kube::pod(NS, name, &uid(name), NODE, "Running", volumes)
    };
    let mut tried = Vec::new();

    // A pod whose spec.volumes is a string, not a list.
    let name = format!("bad-volumes-{round}");
    let mut pod = good_pod(&name, vec![fake_kube::pvc_volume("d", "data-0")]);
    pod["spec"]["volumes"] = json!("data-0");
    kube.put_pod(pod);
    tried.push(("pod with spec.volumes a string", name));

    // A pod seen well-formed, then modified so that spec.containers is a
    // string.
    let name = format!("bad-containers-{round}");
    kube.put_pod(good_pod(&name, Vec::new()));
    let mut pod = good_pod(&name, Vec::new());
    pod["spec"]["containers"] = json!("app");
    kube.put_pod(pod);
    tried.push(("pod modified to spec.containers a string", name));

    // A pod with no metadata.uid.
    let name = format!("no-uid-{round}");
    let mut pod = good_pod(&name, vec![fake_kube::pvc_volume("d", "data-0")]);
    pod["metadata"]
        .as_object_mut()
        .expect("metadata")
        .remove("uid");
    kube.put_pod(pod);
    tried.push(("pod without metadata.uid", name));

    // A pod whose labels are a list and whose phase is a number.
    let name = format!("bad-types-{round}");
    let mut pod = good_pod(&name, Vec::new());
    pod["metadata"]["labels"] = json!(["app", "soak"]);
    pod["status"]["phase"] = json!(7);
    kube.put_pod(pod);
    tried.push(("pod with labels a list and status.phase a number", name));

    // A good pod whose claims are malformed: a PVC without spec, a PVC
    // whose status is a string, a PVC bound to a PV whose capacity is an
    // object, and one bound to a PV whose capacity does not parse (but
    // whose volume is mounted, so it can be measured).
    let name = format!("bad-claims-{round}");
    let nospec = format!("nospec-{round}");
    let badstatus = format!("badstatus-{round}");
    let mut pvc = fake_kube::pvc(NS, &nospec, Some("pv-none"), "Bound");
    pvc.as_object_mut().expect("pvc").remove("spec");
    kube.put_pvc(pvc);
    let mut pvc = fake_kube::pvc(NS, &badstatus, Some("pv-none"), "Bound");
    pvc["status"] = json!("Bound");
    kube.put_pvc(pvc);
    let uid = uid(&name);
    let mut claims = Vec::new();
    let mut mount = None;
    for (claim, capacity) in [
        (format!("captype-{round}"), json!({"value": 4})),
        (format!("badcap-{round}"), json!("lots")),
    ] {
        let pv = format!("pv-{claim}");
        let pvc = fake_kube::pvc(NS, &claim, Some(&pv), "Bound");
        let mut pv_obj = fake_kube::bind_pv(
            fake_kube::pv_csi(&pv, "soak.csi.example", &pv, "4Mi", "Filesystem"),
            &pvc,
        );
        pv_obj["spec"]["capacity"]["storage"] = capacity.clone();
        kube.put_pv(pv_obj);
        kube.put_pvc(pvc);
        if capacity.is_string() {
            mount = Some(Tmpfs::mount(&csi_mount_path(root, &uid, &pv), 4 << 20));
        }
        claims.push(claim);
    }
    let volumes = [&nospec, &badstatus, &claims[0], &claims[1]]
        .iter()
        .enumerate()
        .map(|(i, c)| fake_kube::pvc_volume(&format!("v{i}"), c))
        .collect();
    kube.put_pod(fake_kube::pod(NS, &name, &uid, NODE, "Running", volumes));
    tried.push(("PVC without spec", nospec));
    tried.push(("PVC with status a string", badstatus));
    tried.push(("PV with capacity an object", format!("pv-{}", claims[0])));
    tried.push((
        "PV with a capacity that does not parse",
        format!("pv-{}", claims[1]),
    ));
    let pods = [
        "bad-volumes",
        "bad-containers",
        "no-uid",
        "bad-types",
        "bad-claims",
    ]
    .map(|p| format!("{p}-{round}"))
    .to_vec();
    BadInputs {
        tried,
        pods,
        served: (claims.remove(1), mount.expect("a mount")),
    }
}

/// Scrapes kubedf as Prometheus does (HTTPS with the password, gzip,
/// OpenMetrics Accept), keeps count, and every few scrapes probes that TLS
/// and basic auth are still in force.
struct Scraper<'a> {
    dir: &'a Path,
    https: String,
    plain: String,
    client: reqwest::blocking::Client,
    keeper: String,
    /// Claims that must be in every scrape (the keeper once it appeared,
    /// and each round's claims while they live).
    live: Vec<String>,
    keeper_seen: bool,
    /// The tenant's walked claim: in every scrape once it appeared, never
    /// in error, never more than the tenant's own bytes.
    walked: String,
    walked_seen: bool,
    walked_wrong: u64,
    walked_max: f64,
    /// kubedf's log, shown when a wait fails.
    log: Arc<Mutex<Vec<String>>>,
    scrapes: u64,
    checked: u64,
    probes: u64,
    series_lost: u64,
    /// Scrapes that said the (reachable) Kubernetes API was down.
    api_down: u64,
}

impl Scraper<'_> {
    fn scrape(&mut self) -> String {
        // promtool lints the text format only (it reads an OpenMetrics
        // counter's `_total` sample as a family of its own), so the sampled
        // scrapes ask for text, as Prometheus does of a target without
        // OpenMetrics; the others must end in OpenMetrics' `# EOF`.
        let sampled = self.scrapes.is_multiple_of(25);
        let accept = if sampled { TEXT_ACCEPT } else { ACCEPT };
        let out = Command::new("curl")
            .args([
                "-s",
                "--max-time",
                "10",
                "--compressed",
                "--cacert",
                "ca.crt",
            ])
            .args(["-u", &format!("prometheus:{PASSWORD}")])
            // Prometheus' headers; --compressed decodes the gzip it asks for.
            .args(["-H", &format!("Accept: {accept}")])
            .args(["-H", "Accept-Encoding: gzip"])
            .args(["-o", "-", "-w", "\n%{http_code} %header{content-encoding}"])
            .arg(&self.https)
            .current_dir(self.dir)
            .output()
            .expect("run curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, trailer) = text.rsplit_once('\n').unwrap_or(("", ""));
        self.scrapes += 1;
        let n = self.scrapes;
        // kubedf keeps the last good web config, so no rewrite may fail a scrape.
        assert_eq!(
            (out.status.code(), trailer.trim()),
            (Some(0), "200 gzip"),
            "scrape {n}: every authenticated scrape answers 200, gzipped: {} {}",
            String::from_utf8_lossy(&out.stderr),
            body.chars().take(300).collect::<String>()
        );
        if sampled {
            promtool_check(body).unwrap_or_else(|e| panic!("scrape {n}: {e}"));
            self.checked += 1;
        } else {
            assert!(body.ends_with("# EOF\n"), "scrape {n}: not whole: {body}");
        }
        if claim_series(body, &self.keeper) {
            self.keeper_seen = true;
        }
        let walked = [
            ("namespace", NS),
            ("persistentvolumeclaim", self.walked.as_str()),
        ];
        if let Some(used) = number(body, "kubelet_volume_stats_used_bytes", &walked) {
            self.walked_seen = true;
            self.walked_max = self.walked_max.max(used);
            if used > TENANT_MAX as f64 {
                eprintln!("scrape {n}: the tenant's volume counts {used} bytes");
                self.walked_wrong += 1;
            }
        } else if self.walked_seen {
            eprintln!("scrape {n}: the tenant's volume is missing");
            self.walked_wrong += 1;
        }
        if value(body, "kubedf_volume_stats_error", &walked).is_some() {
            eprintln!("scrape {n}: the tenant's volume in error");
            self.walked_wrong += 1;
        }
        if self.keeper_seen {
            // A cut watch or a 410 Expired re-list is the API answering:
            // the source stays up.
            let api = value(body, "kubedf_source_up", &[("source", "kubernetes")]);
            if api.as_deref() != Some("1") {
                eprintln!("scrape {n}: kubedf_source_up{{source=\"kubernetes\"}} {api:?}");
                self.api_down += 1;
            }
            for claim in std::iter::once(&self.keeper).chain(&self.live) {
                if !claim_series(body, claim) {
                    eprintln!("scrape {n}: {claim} missing");
                    self.series_lost += 1;
                }
            }
        }
        if n.is_multiple_of(4) {
            self.probe();
        }
        body.to_owned()
    }

    /// TLS never turns off and basic auth never goes, whatever the file says.
    fn probe(&mut self) {
        self.probes += 1;
        if let Ok(r) = self.client.get(&self.plain).send() {
            assert_ne!(r.status(), 200, "TLS turned off: plain HTTP got a 200");
        }
        let (_, status, _) = curl(self.dir, &self.https, &["--cacert", "ca.crt"]);
        assert_eq!(status, 401, "a scrape without the password got {status}");
    }

    /// Waits until kubedf's log has a warning or error naming each input.
    fn wait_log(&self, tried: &[(&str, String)]) {
        let start = Instant::now();
        loop {
            let missing: Vec<&(&str, String)> = {
                let log = self.log.lock().expect("log lock");
                tried
                    .iter()
                    .filter(|(_, name)| {
                        !log.iter().any(|l| {
                            (l.contains("\"WARN\"") || l.contains("\"ERROR\""))
                                && [
                                    format!("/{name}:"),
                                    format!("/{name} "),
                                    format!(" {name}:"),
                                    format!("\"{name}\""),
                                ]
                                .iter()
                                .any(|n| l.contains(n.as_str()))
                        })
                    })
                    .collect()
            };
            if missing.is_empty() {
                return;
            }
            assert!(
                start.elapsed() < WAIT,
                "no warning names {missing:?} after {WAIT:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_for(&mut self, what: &str, done: impl Fn(&str) -> bool) -> String {
        self.wait_within(WAIT, what, done).1
    }

    /// Scrapes until `done`, at most `limit`; returns how long it took.
    fn wait_within(
        &mut self,
        limit: Duration,
        what: &str,
        done: impl Fn(&str) -> bool,
    ) -> (Duration, String) {
        let start = Instant::now();
        loop {
            let text = self.scrape();
            if done(&text) {
                return (start.elapsed(), text);
            }
            if start.elapsed() > limit {
                let log = self.log.lock().map(|l| l.clone()).unwrap_or_default();
                let tail = &log[log.len().saturating_sub(40)..];
                panic!(
                    "waited {limit:?} for {what}; kubedf's log ends:\n{}",
                    tail.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The CRI half as a scrape shows it: (source up, imagefs collector
/// success, imagefs capacity series present).
fn cri_state(text: &str) -> (Option<String>, Option<String>, bool) {
    (
        value(text, "kubedf_source_up", &[("source", "cri")]),
        value(
            text,
            "kubedf_scrape_collector_success",
            &[("collector", "imagefs")],
        ),
        has_family(text, "kubedf_imagefs_capacity_bytes"),
    )
}

fn cri_down(text: &str) -> bool {
    cri_state(text) == (Some("0".into()), Some("0".into()), false)
}

fn cri_up(text: &str) -> bool {
    cri_state(text) == (Some("1".into()), Some("1".into()), true)
}

/// The web config writer's thread. Dropped before `Served` (declared after
/// it), it is stopped and joined even when the test fails, so that it never
/// signals a kubedf that is gone (whose PID may be another process's by then).
struct Writer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Rewrites>>,
}

impl Writer {
    fn finish(mut self) -> Rewrites {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().expect("writer thread");
        thread.join().expect("web config writer")
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What the web config writer did.
#[derive(Default, Debug)]
struct Rewrites {
    /// Files written in full, by what they held.
    written: BTreeMap<&'static str, u64>,
    /// Bad states (empty, half-written, or a bad file) that kubedf was made
    /// to read (SIGHUP) and had to refuse.
    refusals_forced: u64,
}

/// Rewrites the web config in place, as `cp`, editors and config management
/// do: truncate, pause, write half, pause, write the rest. Mostly the good
/// file, sometimes a bad one that then stays a while. Every other bad state
/// is followed by a SIGHUP, and the refusal must show in the log. Runs until
/// `stop`.
fn rewrite_web_config(
    path: &Path,
    good: &str,
    bad: &[(&'static str, String)],
    served: &Mutex<Vec<String>>,
    pid: u32,
    stop: &AtomicBool,
) -> Rewrites {
    let mut rng = fastrand::Rng::with_seed(9);
    let mut done = Rewrites::default();
    let refused = || {
        served
            .lock()
            .expect("log lock")
            .iter()
            .filter(|l| l.contains("web config not reloaded"))
            .count()
    };
    let mut hup_next = false;
    let mut bad_state = |done: &mut Rewrites, rng: &mut fastrand::Rng| {
        hup_next = !hup_next;
        if hup_next && !stop.load(Ordering::Relaxed) {
            let before = refused();
            kill(Pid::from_raw(pid as i32), Signal::SIGHUP).expect("SIGHUP kubedf");
            let deadline = Instant::now() + Duration::from_secs(15);
            while refused() <= before {
                assert!(
                    Instant::now() < deadline,
                    "kubedf did not refuse a bad web config within 15 s of SIGHUP"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            done.refusals_forced += 1;
        }
        std::thread::sleep(Duration::from_millis(rng.u64(0..1500)));
    };
    let mut cycle = 0u64;
    while !stop.load(Ordering::Relaxed) {
        cycle += 1;
        let (what, text) = if cycle.is_multiple_of(3) {
            let (what, text) = &bad[(cycle as usize / 3) % bad.len()];
            (*what, text.as_str())
        } else {
            ("the good file", good)
        };
        let mut f = OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(path)
            .expect("open web config");
        bad_state(&mut done, &mut rng);
        // Any strict prefix of the good file lacks a whole bcrypt hash (the
        // last line), so it is a bad state too.
        let cut = if text.len() > 2 {
            rng.usize(1..text.len() - 1)
        } else {
            text.len()
        };
        f.write_all(&text.as_bytes()[..cut]).expect("write half");
        if cut < text.len() || what != "the good file" {
            bad_state(&mut done, &mut rng);
        }
        f.write_all(&text.as_bytes()[cut..])
            .expect("write the rest");
        drop(f);
        *done.written.entry(what).or_default() += 1;
        if what != "the good file" {
            bad_state(&mut done, &mut rng);
        }
        std::thread::sleep(Duration::from_millis(rng.u64(200..2500)));
    }
    // Leave the good file in force.
    std::fs::write(path, good).expect("restore web config");
    done
}

#[test]
fn a_churning_node_keeps_answering_with_flat_resources() {
    if !prerequisites(
        "a_churning_node_keeps_answering_with_flat_resources",
        need_root_and(&["promtool", "containerd", "ctr", "openssl", "curl"]),
    ) {
        return;
    }
    let secs: u64 = std::env::var("KUBEDF_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let root = d.join("kubelet");
    std::fs::create_dir_all(&root).expect("mkdir");
    let kube = FakeKube::start();
    let kubeconfig = d.join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let mut containerd = Containerd::start(&d.join("cd"), 64 << 20).expect("start containerd");
    let cri = format!("unix://{}", containerd.socket().display());

    make_certs(d);
    let hash = bcrypt::hash(PASSWORD, 4).expect("bcrypt");
    let tls = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n";
    // The hash last, unquoted: every strict prefix of the file is bad.
    let good = format!("{tls}basic_auth_users:\n  prometheus: {hash}\n");
    let bad: Vec<(&'static str, String)> = vec![
        ("an empty file", String::new()),
        (
            "a comment only",
            "# rewritten by config management\n".into(),
        ),
        (
            "tls_server_config empty",
            format!("tls_server_config:\nbasic_auth_users:\n  prometheus: {hash}\n"),
        ),
        (
            "basic_auth_users empty",
            format!("{tls}basic_auth_users:\n"),
        ),
        (
            "garbage",
            "tls_server_config: [\u{1}\u{7f}{{ :: \n\t- ]]\n".into(),
        ),
    ];
    let web_config = d.join("web.yml");
    std::fs::write(&web_config, &good).expect("write web config");

    // One PVC that lives throughout: it must never go missing.
    let keeper = add_pod(&kube, &root, 0);
    let walked = add_walked_pod(&kube, d);
    let mut served = kubedf!()
        .on_node(NODE, &kubeconfig, &root, &cri)
        .kubelet_config(NO_KUBELET_CONFIG)
        .serve(&[
            "--web.config.file",
            web_config.to_str().expect("utf-8"),
            "--sample-interval",
            "500ms",
            "--volume-stats-agg-period",
            "300ms",
            "--volume-stats-timeout",
            "1s",
        ]);
    let pid = served.child.id();
    let mut s = Scraper {
        dir: d,
        https: format!("https://{}/metrics", served.addr),
        plain: served.url("/metrics"),
        client: http(),
        keeper: keeper.claim.clone(),
        live: Vec::new(),
        keeper_seen: false,
        walked: walked.claim.clone(),
        walked_seen: false,
        walked_wrong: 0,
        walked_max: 0.0,
        log: Arc::clone(&served.log),
        scrapes: 0,
        checked: 0,
        probes: 0,
        series_lost: 0,
        api_down: 0,
    };
    let first = s.wait_for("the first PVCs and the CRI source", |t| {
        claim_series(t, &keeper.claim) && claim_series(t, &walked.claim) && cri_up(t)
    });
    assert_eq!(
        number(&first, "kubedf_web_config_reloads_failed_total", &[]),
        Some(0.0)
    );

    let stop = Arc::new(AtomicBool::new(false));
    let writer = Writer {
        stop: Arc::clone(&stop),
        thread: Some({
            let (path, good, bad) = (web_config.clone(), good.clone(), bad.clone());
            let (log, stop) = (Arc::clone(&served.log), Arc::clone(&stop));
            std::thread::spawn(move || rewrite_web_config(&path, &good, &bad, &log, pid, &stop))
        }),
    };
    let tenant_stop = Arc::new(AtomicBool::new(false));
    let tenant = Tenant {
        stop: Arc::clone(&tenant_stop),
        thread: Some({
            let (volume, victim) = (walked.volume.clone(), walked.victim.clone());
            std::thread::spawn(move || misbehave(&volume, &victim, &tenant_stop))
        }),
    };

    let started = Instant::now();
    let mut baseline = None;
    let mut peak = (0, 0, 0);
    let (mut pods_churned, mut api_faults, mut rounds) = (0usize, 0usize, 0usize);
    let (mut cri_kills, mut cri_back_max) = (0usize, Duration::ZERO);
    let mut bad_inputs: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut next = 1;
    while started.elapsed() < Duration::from_secs(secs) {
        rounds += 1;
        let batch: Vec<Pod> = (0..BATCH)
            .map(|_| {
                next += 1;
                add_pod(&kube, &root, next)
            })
            .collect();
        let bad = add_bad_inputs(&kube, &root, rounds);
        for (kind, _) in &bad.tried {
            *bad_inputs.entry(kind).or_default() += 1;
        }
        // A fault in every other round: a cut watch, or a compacted history
        // that forces a re-list (the API server restarting).
        if rounds % 2 == 0 {
            if rounds % 4 == 0 {
                kube.compact();
            }
            kube.cut_watches();
            api_faults += 1;
        }
        let crash = rounds % CRI_EVERY == 0;
        if crash {
            containerd.kill();
            cri_kills += 1;
        }
        s.wait_for("a round's PVCs", |t| {
            batch.iter().all(|p| claim_series(t, &p.claim)) && claim_series(t, &bad.served.0)
        });
        s.live = batch.iter().map(|p| p.claim.clone()).collect();
        s.live.push(bad.served.0.clone());
        if crash {
            // Down: reported down, no healthy-looking imagefs series, and
            // the volume half untouched (every scrape checks the PVCs).
            s.wait_within(CRI_BOUND, "the CRI source to report down", cri_down);
            assert!(
                cri_down(&s.scrape()),
                "CRI back up while containerd is dead"
            );
            containerd.restart().expect("restart containerd");
            let (took, _) = s.wait_within(CRI_BOUND, "the CRI source to come back", cri_up);
            cri_back_max = cri_back_max.max(took);
        }
        s.live.clear();
        for p in &batch {
            kube.delete_pod(NS, &p.name);
        }
        // Each bad input has had its error logged, naming it (a watch cut
        // can lose events, and only a re-list, after a backoff, shows them).
        s.wait_log(&bad.tried);
        for name in &bad.pods {
            assert!(kube.delete_pod(NS, name).is_some(), "no pod {name}");
        }
        drop(bad.served);
        // Their mounts go too, as kubelet unmounts a deleted pod's volumes.
        drop(batch.into_iter().map(|p| p.mount).collect::<Vec<_>>());
        s.wait_for("deleted pods' PVCs to go", |t| {
            (next + 1 - BATCH..=next).all(|n| !claim_series(t, &format!("data-{n}")))
        });
        pods_churned += BATCH;
        let now = resources(pid);
        if rounds == 3 {
            baseline = Some(now);
        }
        peak = (peak.0.max(now.0), peak.1.max(now.1), peak.2.max(now.2));
    }
    let end = resources(pid);
    let rewrites = writer.finish();
    let did = tenant.finish();
    // Scrapes went on while the writer finished its last rewrite.
    let text = s.scrape();
    let failed = number(&text, "kubedf_web_config_reloads_failed_total", &[]).unwrap_or(0.0) as u64;
    let logged_refusals = served.log_text().matches("web config not reloaded").count() as u64;
    let base = baseline.unwrap_or(end);
    let written: u64 = rewrites.written.values().sum();
    let bad_total: usize = bad_inputs.values().sum();
    println!(
        "soak: {secs} s, {rounds} rounds, {pods_churned} pods and PVCs churned, \
         {scrapes} HTTPS scrapes ({checked} promtool-checked, {probes} TLS/auth probes); \
         faults: {api_faults} API (watch cuts, a half with re-lists), {cri_kills} containerd \
         SIGKILLs (CRI back within {cri_back_max:.1?} at worst), {written} non-atomic web config \
         rewrites {written_by:?}, {forced} forced refusals, {failed} refused reloads counted; \
         {bad_total} bad inputs {bad_inputs:?}; series lost {lost}, API source down {api_down}; \
         the tenant {did:?}, its volume wrong in {walked_wrong} scrapes (at most {walked_max} bytes); \
         RSS kB {} -> {} (peak {}), threads {} -> {} (peak {}), fds {} -> {} (peak {}) \
         (bounds: RSS +50% +16 MiB, threads +8, fds +16, from round 3 to the end)",
        base.0,
        end.0,
        peak.0,
        base.1,
        end.1,
        peak.1,
        base.2,
        end.2,
        peak.2,
        scrapes = s.scrapes,
        checked = s.checked,
        probes = s.probes,
        written_by = rewrites.written,
        forced = rewrites.refusals_forced,
        lost = s.series_lost,
        api_down = s.api_down,
        walked_wrong = s.walked_wrong,
        walked_max = s.walked_max,
    );
    assert_eq!(s.series_lost, 0, "a live PVC went missing");
    assert!(
        s.walked_seen && s.walked_wrong == 0,
        "the tenant's volume was missing, in error or over {TENANT_MAX} bytes in {} scrapes",
        s.walked_wrong
    );
    assert!(
        did.cycles >= 3 && did.exchanges >= 3000,
        "the tenant did too little: {did:?}"
    );
    assert_eq!(
        s.api_down, 0,
        "the API's routine faults made its source look down"
    );
    let warned = served.log_text().matches("kubernetes API failed").count();
    assert_eq!(
        warned, 0,
        "the API never failed, yet kubedf warned {warned} times"
    );
    assert!(rounds >= 3, "too few rounds to judge: {rounds}");
    assert!(cri_kills >= 1, "containerd was never killed");
    // Refused reloads are counted, one for each refusal logged.
    assert!(
        failed >= rewrites.refusals_forced && rewrites.refusals_forced > 0,
        "{failed} refused reloads counted, {} forced",
        rewrites.refusals_forced
    );
    assert!(
        failed <= logged_refusals,
        "{failed} counted, {logged_refusals} logged"
    );
    // kubedf outlived every malformed object.
    assert!(matches!(served.child.try_wait(), Ok(None)), "kubedf exited");
    // Flat: a leak of one fd, thread or 100 kB per round would break these.
    assert!(end.2 <= base.2 + 16, "fds grew: {base:?} -> {end:?}");
    assert!(end.1 <= base.1 + 8, "threads grew: {base:?} -> {end:?}");
    assert!(
        end.0 <= base.0 + base.0 / 2 + 16 * 1024,
        "RSS grew: {base:?} -> {end:?}"
    );
    drop(keeper);
    drop(containerd);
}

/// The finding behind src/sources/kube.rs' `WatchedPod`: one malformed pod
/// on the node (a field of the wrong type) made every list of the node's
/// pods fail to decode, so the watcher re-listed forever while it existed,
/// no other pod came or went, and kube's client logged the whole list on
/// each attempt.
#[test]
fn a_malformed_pod_never_hides_the_nodes_other_pods() {
    if !prerequisites(
        "a_malformed_pod_never_hides_the_nodes_other_pods",
        need_root_and(&[]),
    ) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("kubelet");
    let kube = FakeKube::start();
    let kubeconfig = dir.path().join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let bad = add_bad_inputs(&kube, &root, 0);
    let first = add_pod(&kube, &root, 1);
    let served = kubedf!()
        .on_node(NODE, &kubeconfig, &root, NO_RUNTIME)
        .kubelet_config(NO_KUBELET_CONFIG)
        .serve(&["--volume-stats-agg-period", "300ms"]);
    // The first list carries the malformed pods.
    served.scrape_until(WAIT, "the PVC listed beside malformed pods", |t| {
        claim_series(t, &first.claim)
    });
    // A re-list (history compacted, watch cut) with them still there.
    kube.compact();
    kube.cut_watches();
    let second = add_pod(&kube, &root, 2);
    served.scrape_until(WAIT, "a PVC added after the re-list", |t| {
        claim_series(t, &second.claim) && claim_series(t, &first.claim)
    });
    let log = served.log_text();
    for name in ["bad-volumes-0", "bad-containers-0", "bad-types-0"] {
        let named = log
            .lines()
            .any(|l| l.contains("not a valid pod") && l.contains(&format!("pod {NS}/{name}: ")));
        assert!(named, "no error names {name}:\n{log}");
    }
    assert!(log.contains("spec.volumes"), "{log}");
    // The PVC without spec says what it lacks.
    served.scrape_until(WAIT, "the PVC without spec to be reported", |_| {
        served.log_text().contains(&format!(
            "{NS}/nospec-0 is Bound but names no volume (spec.volumeName is empty)"
        ))
    });
    drop((first, second, bad.served));
}
