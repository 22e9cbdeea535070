//! Integration-test support: a real containerd (Debian `containerd` 1.6.x) on a
//! private socket, with its root directory on a dedicated tmpfs, plus a tiny OCI
//! image that the test builds itself and imports into the CRI snapshotter so that
//! CRI `ImageFsInfo` reports non-zero used bytes.
//!
//! Requirements: root (to mount the tmpfs and for containerd itself) and the
//! `containerd` and `ctr` binaries in `PATH`. Check prerequisites with [`crate::prerequisites`] first.
//!
//! Everything containerd touches lives under the caller's `base` directory:
//!
//! ```text
//! base/config.toml        generated config (see `write_config`)
//! base/containerd.log     containerd stdout+stderr, tail included in start errors
//! base/containerd.sock    gRPC socket (CRI runtime.v1 + containerd API);
//!                         containerd also creates containerd.sock.ttrpc
//! base/root/              tmpfs mount point = containerd root
//! base/state/             containerd state dir
//! base/cni/{bin,conf}/    empty CNI dirs (keeps CRI away from /etc/cni, /opt/cni)
//! base/images/            OCI archives built by `import_tiny_image`
//! ```
//!
//! Notes for users of this module:
//! * Drop the [`Containerd`] before the `TempDir` holding `base` (declare the
//!   `TempDir` first), so the tmpfs is unmounted before the directory is removed.
//! * CRI refreshes image-fs usage in the background every `stats_collect_period`
//!   seconds, which is set to 1 here (default 10): after an import, poll
//!   `ImageFsInfo` for a couple of seconds instead of expecting it immediately.
//! * No parent-death signal is installed on the child: cargo runs each test on
//!   its own thread and `PR_SET_PDEATHSIG` fires when the *spawning thread*
//!   exits, which would break a containerd shared between tests. If the test
//!   binary is killed hard, containerd and the mount are leaked.

use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::mount::{MntFlags, MsFlags};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use sha2::{Digest, Sha256};

/// Upper bound for containerd to answer on its socket with the CRI plugin up.
/// It normally takes well under a second.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long `stop` waits after SIGTERM before falling back to SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Per-attempt bound for the readiness probes (`ctr version`, `ctr plugins ls`).
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound for any other `ctr` invocation (image import, listings).
const CTR_TIMEOUT: Duration = Duration::from_secs(60);
/// The CRI plugin answers ImageFsInfo/Version for this namespace.
const CRI_NAMESPACE: &str = "k8s.io";
/// The pod sandbox image in the CRI config (containerd's default would be
/// pulled from registry.k8s.io); [`crate::cri`] builds and imports it.
const SANDBOX_IMAGE: &str = "docker.io/kubedf-test/pause:latest";
/// Forces the snapshotter (`overlayfs` or `native`) instead of probing, e.g.
/// to exercise the native fallback on a machine where overlayfs works.
const SNAPSHOTTER_ENV: &str = "KUBEDF_TEST_SNAPSHOTTER";
/// sun_path is 108 bytes including the NUL, and containerd also listens on
/// `<socket>.ttrpc`, so leave room for that suffix.
const MAX_SOCKET_PATH: usize = 107 - ".ttrpc".len();

/// A containerd daemon owned by a test. See the module docs for the layout.
pub struct Containerd {
    /// `None` once the process has been reaped (after `kill`/`stop`).
    child: Option<Child>,
    pid: u32,
    base: PathBuf,
    root: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    snapshotter: &'static str,
    /// Whether `root` still carries our tmpfs (so `Drop` must unmount it).
    mounted: bool,
}

impl Containerd {
    /// Starts containerd with its root on a freshly mounted tmpfs of exactly
    /// `tmpfs_bytes` bytes at `base/root` (state dir, config, log and gRPC socket
    /// are under `base` too) and waits until it serves with the CRI plugin loaded.
    ///
    /// Snapshotter: `overlayfs` when the kernel can mount overlay with upper and
    /// work dirs on tmpfs (true on any modern kernel, including the Debian 12 dev
    /// VM: tmpfs supports d_type and the `trusted.*` xattrs overlay needs), else
    /// `native` (plain directory copies, works on any filesystem). The choice is
    /// made by doing the same probe mount as containerd's overlay snapshotter
    /// (two lowers, upper, work) on the tmpfs before starting it, because the CRI
    /// snapshotter is fixed in the config; containerd's own verdict is enforced
    /// through `required_plugins`. Set `KUBEDF_TEST_SNAPSHOTTER` to force one.
    pub fn start(base: &Path, tmpfs_bytes: u64) -> Result<Containerd, String> {
        let containerd_bin = find_in_path("containerd")
            .ok_or("`containerd` not found in PATH (apt-get install -y containerd)")?;
        find_in_path("ctr").ok_or("`ctr` not found in PATH (apt-get install -y containerd)")?;

        fs::create_dir_all(base).map_err(|e| format!("create {}: {e}", base.display()))?;
        // Canonical so paths match /proc/self/mountinfo (e.g. if /tmp is a symlink).
        let base = base
            .canonicalize()
            .map_err(|e| format!("canonicalize {}: {e}", base.display()))?;
        let root = base.join("root");
        let state = base.join("state");
        let socket = base.join("containerd.sock");
        let log = base.join("containerd.log");
        let config = base.join("config.toml");

        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(format!(
                "socket path {} is longer than {MAX_SOCKET_PATH} bytes; use a shorter base dir",
                socket.display()
            ));
        }
        for dir in [&root, &state, &base.join("cni/bin"), &base.join("cni/conf")] {
            fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        }
        // Mounting over a live mount would make the older instance's Drop
        // (lazy unmount of the same path) take down this instance's root.
        if is_mountpoint(&root)? {
            return Err(format!(
                "{} is already a mount point (earlier instance not dropped?); use a fresh base dir",
                root.display()
            ));
        }

        let size = format!("size={tmpfs_bytes},mode=0711");
        nix::mount::mount(
            Some("tmpfs"),
            &root,
            Some("tmpfs"),
            MsFlags::empty(),
            Some(size.as_str()),
        )
        .map_err(|e| format!("mount tmpfs ({size}) on {}: {e}", root.display()))?;

        // From here on `Drop` cleans up (stops the child, unmounts) on error.
        let mut cd = Containerd {
            child: None,
            pid: 0,
            base: base.clone(),
            root,
            socket,
            log,
            snapshotter: "native",
            mounted: true,
        };

        cd.snapshotter = match std::env::var(SNAPSHOTTER_ENV).as_deref() {
            Ok("native") => "native",
            Ok("overlayfs") => "overlayfs",
            Ok("") | Err(_) => match probe_overlay(&cd.root) {
                Ok(()) => "overlayfs",
                Err(e) => {
                    eprintln!(
                        "containerd harness: overlayfs unusable on tmpfs ({e}); using native"
                    );
                    "native"
                }
            },
            Ok(other) => {
                return Err(format!(
                    "{SNAPSHOTTER_ENV}={other:?}: expected \"overlayfs\" or \"native\""
                ));
            }
        };

        write_config(&config, &cd.root, &state, &cd.socket, &base, cd.snapshotter)?;
        cd.spawn(&containerd_bin)?;
        Ok(cd)
    }

    /// Starts containerd again after [`Containerd::kill`] or
    /// [`Containerd::stop`], with the same config, socket, root and state, as
    /// a supervisor restarts a crashed daemon; waits until it serves CRI.
    /// The log file starts afresh (its readiness line is looked for in it).
    pub fn restart(&mut self) -> Result<(), String> {
        if self.child.is_some() {
            return Err(format!("containerd (pid {}) is still running", self.pid));
        }
        let containerd_bin = find_in_path("containerd")
            .ok_or("`containerd` not found in PATH (apt-get install -y containerd)")?;
        self.spawn(&containerd_bin)
    }

    /// Spawns containerd on `base/config.toml` and waits until it is ready.
    fn spawn(&mut self, containerd_bin: &Path) -> Result<(), String> {
        let config = self.base.join("config.toml");
        let log_file = fs::File::create(&self.log)
            .map_err(|e| format!("create log file {}: {e}", self.log.display()))?;
        let log_file2 = log_file
            .try_clone()
            .map_err(|e| format!("dup log file {}: {e}", self.log.display()))?;
        let started = Instant::now();
        let child = Command::new(containerd_bin)
            .arg("--config")
            .arg(&config)
            .current_dir(&self.base)
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_file2)
            .spawn()
            .map_err(|e| {
                format!(
                    "spawn {} --config {}: {e}",
                    containerd_bin.display(),
                    config.display()
                )
            })?;
        self.pid = child.id();
        self.child = Some(child);

        self.wait_ready(started)?;
        Ok(())
    }

    /// The containerd gRPC unix socket (also serves CRI `runtime.v1`).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The containerd root directory, i.e. the tmpfs mount point.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `"overlayfs"` or `"native"`; see [`Containerd::start`].
    pub fn snapshotter(&self) -> &str {
        self.snapshotter
    }

    /// The directory CRI reports as the image filesystem mountpoint in
    /// `ImageFsInfo`: `<root>/io.containerd.snapshotter.v1.<snapshotter>`.
    pub fn snapshotter_dir(&self) -> PathBuf {
        self.root
            .join(format!("io.containerd.snapshotter.v1.{}", self.snapshotter))
    }

    /// PID of the containerd process (stays valid as a number after it exited).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Builds a tiny single-layer OCI image archive for the host platform and
    /// imports it with `ctr -n k8s.io images import --snapshotter <snapshotter>`,
    /// which also unpacks it into the CRI snapshotter. The layer is an
    /// uncompressed tar of a few files with `layer_bytes` of pseudo-random content
    /// in total (seeded by `name`, so the same name gives the same digests and
    /// different names give distinct snapshots). `name` must be a valid image
    /// path component (`[a-z0-9._-]+`). Returns the image reference,
    /// `docker.io/kubedf-test/<name>:latest`, after checking that the image and
    /// its committed snapshot are listed.
    pub fn import_tiny_image(&self, name: &str, layer_bytes: usize) -> Result<String, String> {
        check_image_name(name)?;
        let reference = image_reference(name);
        let dir = self.base.join("images");
        fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let archive = dir.join(format!("{name}.oci.tar"));
        let layer_digest = write_oci_archive(&archive, &reference, name, layer_bytes)?;

        self.import_archive(&archive, &reference, &layer_digest)?;
        Ok(reference)
    }

    /// Assembles `image` (one uncompressed layer, written directly as an OCI
    /// layout; no Docker engine, no registry) and imports it as
    /// [`Containerd::import_tiny_image`] does. Returns the image reference,
    /// `docker.io/kubedf-test/<name>:latest`.
    pub fn import_image(&self, image: &Image) -> Result<String, String> {
        check_image_name(&image.name)?;
        let reference = image_reference(&image.name);
        let dir = self.base.join("images");
        fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let archive = dir.join(format!("{}.oci.tar", image.name));
        let layer = image.layer()?;
        let layer_digest = write_image_archive(&archive, &reference, layer, image.run_config())?;
        self.import_archive(&archive, &reference, &layer_digest)?;
        Ok(reference)
    }

    /// The reference of the pod sandbox ("pause") image this containerd is
    /// configured with; [`crate::cri::Cri::connect`] imports it.
    pub(crate) fn sandbox_image(&self) -> &'static str {
        SANDBOX_IMAGE
    }

    /// `ctr images import` of a single-layer archive into the CRI namespace
    /// and snapshotter, then checks that the image and its committed snapshot
    /// are listed.
    fn import_archive(
        &self,
        archive: &Path,
        reference: &str,
        layer_digest: &str,
    ) -> Result<(), String> {
        self.ctr_ns()
            .args(["images", "import", "--snapshotter", self.snapshotter])
            .arg(archive)
            .run(CTR_TIMEOUT)?;

        let images = self
            .ctr_ns()
            .args(["images", "ls", "-q"])
            .run(CTR_TIMEOUT)?;
        if !images.lines().any(|l| l.trim() == reference) {
            return Err(format!(
                "{reference} missing from `ctr images ls` after import:\n{images}"
            ));
        }
        // For a single-layer image the snapshot key (chain ID) is the layer's
        // diff ID, which equals its digest because the layer is uncompressed.
        let snapshots = self
            .ctr_ns()
            .args(["snapshots", "--snapshotter", self.snapshotter, "ls"])
            .run(CTR_TIMEOUT)?;
        let committed = snapshots.lines().any(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.first() == Some(&layer_digest) && cols.last() == Some(&"Committed")
        });
        if !committed {
            return Err(format!(
                "no committed {} snapshot {layer_digest} after importing {reference}:\n{snapshots}",
                self.snapshotter
            ));
        }
        Ok(())
    }

    /// A `ctr` command bound to this instance's socket (no namespace set).
    fn ctr(&self) -> Ctr {
        let mut cmd = Command::new("ctr");
        // Keep the caller's environment from redirecting ctr elsewhere.
        for var in [
            "CONTAINERD_ADDRESS",
            "CONTAINERD_NAMESPACE",
            "CONTAINERD_SNAPSHOTTER",
        ] {
            cmd.env_remove(var);
        }
        cmd.arg("--address").arg(&self.socket);
        Ctr(cmd)
    }

    /// A `ctr` command bound to this instance's socket and the CRI namespace.
    pub fn ctr_ns(&self) -> Ctr {
        let mut ctr = self.ctr();
        ctr.0.args(["--namespace", CRI_NAMESPACE]);
        ctr
    }

    /// SIGKILLs containerd (simulating a crash) and reaps it. The tmpfs stays
    /// mounted (until drop) and the socket file is left behind, as after a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // std's Child::kill sends SIGKILL; it only fails if already reaped.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits up to 10 s for containerd to exit before SIGKILL.
    /// Reaps the process. The tmpfs stays mounted until drop.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        // Signal by PID only while the child is unreaped, so the PID is ours.
        let pid = Pid::from_raw(self.pid as i32);
        if nix::sys::signal::kill(pid, Signal::SIGTERM).is_ok()
            && wait_timeout(&mut child, STOP_TIMEOUT).is_some()
        {
            return;
        }
        eprintln!(
            "containerd harness: pid {} ignored SIGTERM for {STOP_TIMEOUT:?}; sending SIGKILL",
            self.pid
        );
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Polls until the socket answers `ctr version`, `ctr plugins ls` shows the
    /// CRI plugin (and our snapshotter) as ok, and the CRI service has started.
    fn wait_ready(&mut self, started: Instant) -> Result<(), String> {
        let deadline = started + START_TIMEOUT;
        let mut last_err = String::from("socket not created yet");
        loop {
            if let Some(child) = self.child.as_mut() {
                match child.try_wait() {
                    Ok(Some(status)) => {
                        self.child = None;
                        return Err(
                            self.fail(&format!("containerd exited during startup ({status})"))
                        );
                    }
                    Ok(None) => {}
                    Err(e) => return Err(self.fail(&format!("waitpid containerd: {e}"))),
                }
            }
            if self.socket.exists() {
                match self.probe() {
                    Ok(()) => return Ok(()),
                    Err(Probe::Fatal(e)) => return Err(self.fail(&e)),
                    Err(Probe::Retry(e)) => last_err = e,
                }
            }
            if Instant::now() >= deadline {
                let msg = format!("containerd not ready after {START_TIMEOUT:?}: {last_err}");
                return Err(self.fail(&msg));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn probe(&self) -> Result<(), Probe> {
        // Short connect timeout: ctr's default is 10 s per attempt.
        self.ctr()
            .args(["--connect-timeout", "1s", "version"])
            .run(PROBE_TIMEOUT)
            .map_err(Probe::Retry)?;
        let plugins = self
            .ctr()
            .args(["--connect-timeout", "1s", "plugins", "ls"])
            .run(PROBE_TIMEOUT)
            .map_err(Probe::Retry)?;
        // Plugins are all initialised before the socket serves, so the
        // statuses are final now. Columns: TYPE ID PLATFORMS STATUS.
        let status = |typ: &str, id: &str| {
            plugins.lines().find_map(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                (cols.len() >= 3 && cols[0] == typ && cols[1] == id).then(|| cols[cols.len() - 1])
            })
        };
        for (typ, id) in [
            ("io.containerd.grpc.v1", "cri"),
            ("io.containerd.snapshotter.v1", self.snapshotter),
        ] {
            if status(typ, id) != Some("ok") {
                return Err(Probe::Fatal(format!(
                    "plugin {typ}.{id} is not ok in `ctr plugins ls`:\n{plugins}"
                )));
            }
        }
        // The CRI service finishes starting asynchronously after containerd
        // serves; until then CRI calls fail with "server is not initialized yet".
        // 1.6 logs this line just before marking itself initialised.
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        if !log.contains("Start streaming server") {
            return Err(Probe::Retry("CRI service not started yet".into()));
        }
        Ok(())
    }

    /// Builds a startup error including the log tail.
    fn fail(&self, msg: &str) -> String {
        format!(
            "{msg}\n--- last lines of {} ---\n{}",
            self.log.display(),
            log_tail(&self.log, 40)
        )
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.stop();
        if self.mounted {
            // Lazy: detaches the whole subtree even if something still has a
            // file open in it, so a failing test cannot leave a busy mount.
            match nix::mount::umount2(&self.root, MntFlags::MNT_DETACH) {
                Ok(()) => self.mounted = false,
                Err(e) => eprintln!("containerd harness: umount {}: {e}", self.root.display()),
            }
        }
    }
}

/// Whether `path` is a mount point in this mount namespace, according to
/// /proc/self/mountinfo. `path` should be canonical.
fn is_mountpoint(path: &Path) -> Result<bool, String> {
    let info = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("read /proc/self/mountinfo: {e}"))?;
    let want = path.as_os_str().as_encoded_bytes();
    Ok(info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mp| unescape_mountinfo(mp) == want))
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
pub fn unescape_mountinfo(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|o| o.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(o)) => {
                out.push(
                    o.iter()
                        .fold(0u8, |acc, c| acc.wrapping_mul(8) + (c - b'0')),
                );
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// A `ctr` invocation; `run` enforces a timeout and names the command in errors.
pub struct Ctr(Command);

impl Ctr {
    fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.0.arg(arg);
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, args: I) -> Self {
        self.0.args(args);
        self
    }

    /// Runs to completion (killing it after `timeout`) and returns stdout, or
    /// an error with the command line, exit status and stderr.
    pub fn run(mut self, timeout: Duration) -> Result<String, String> {
        let cmd = &mut self.0;
        let shown = format!("{cmd:?}");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn {shown}: {e}"))?;
        // Drain both pipes on threads so a chatty child cannot block on a full pipe.
        let drain = |pipe: Option<Box<dyn Read + Send>>| {
            thread::spawn(move || {
                let mut buf = Vec::new();
                if let Some(mut p) = pipe {
                    let _ = p.read_to_end(&mut buf);
                }
                String::from_utf8_lossy(&buf).into_owned()
            })
        };
        let out = drain(
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        );
        let err = drain(
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        );
        let status = wait_timeout(&mut child, timeout);
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let stdout = out.join().unwrap_or_default();
        let stderr = err.join().unwrap_or_default();
        match status {
            None => Err(format!(
                "{shown} timed out after {timeout:?}; stderr: {stderr}"
            )),
            Some(s) if !s.success() => Err(format!("{shown} failed ({s}): {}", stderr.trim())),
            Some(_) => Ok(stdout),
        }
    }
}

enum Probe {
    /// Not ready yet; try again until the deadline.
    Retry(String),
    /// Will not get better; fail now.
    Fatal(String),
}

/// Waits for `child` up to `timeout`; `None` on timeout (child left running).
fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            _ => return None,
        }
    }
}

/// The probe containerd 1.6's overlay snapshotter runs (overlayutils.Supported):
/// mount overlay with two lowers, upper and work dirs under `root`.
fn probe_overlay(root: &Path) -> Result<(), String> {
    let dir = root.join(".overlay-probe");
    let result = (|| {
        for sub in ["lower1", "lower2", "upper", "work", "merged"] {
            let p = dir.join(sub);
            fs::create_dir_all(&p).map_err(|e| format!("create {}: {e}", p.display()))?;
        }
        let opts = format!(
            "lowerdir={}:{},upperdir={},workdir={}",
            dir.join("lower2").display(),
            dir.join("lower1").display(),
            dir.join("upper").display(),
            dir.join("work").display()
        );
        let merged = dir.join("merged");
        nix::mount::mount(
            Some("overlay"),
            &merged,
            Some("overlay"),
            MsFlags::empty(),
            Some(opts.as_str()),
        )
        .map_err(|e| format!("mount overlay on {}: {e}", merged.display()))?;
        nix::mount::umount2(&merged, MntFlags::MNT_DETACH)
            .map_err(|e| format!("umount {}: {e}", merged.display()))
    })();
    // Leave the root clean for containerd whatever happened.
    let _ = fs::remove_dir_all(&dir);
    result
}

fn write_config(
    path: &Path,
    root: &Path,
    state: &Path,
    socket: &Path,
    base: &Path,
    snapshotter: &str,
) -> Result<(), String> {
    let q = |p: &Path| -> Result<String, String> {
        let s = p
            .to_str()
            .ok_or_else(|| format!("path {} is not UTF-8", p.display()))?;
        // A JSON string literal is also a valid TOML basic string.
        serde_json::to_string(s).map_err(|e| format!("quote {s:?}: {e}"))
    };
    let config = format!(
        r#"# Generated by the kubedf containerd test harness.
version = 2
root = {root}
state = {state}
oom_score = 0
# Plugins that cannot work here (no btrfs/zfs/aufs/devmapper) or that would
# touch the host (opt creates /opt/containerd).
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.internal.v1.opt",
]
# Exit at startup (instead of serving without them) if these fail to load.
required_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.{snapshotter}",
]

[grpc]
  address = {socket}

[debug]
  level = "info"

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    # Seconds between CRI snapshot usage refreshes behind ImageFsInfo and
    # ListContainerStats' writable_layer (default 10).
    stats_collect_period = 1
    # The sandbox ("pause") image, built and imported by the tests.
    sandbox_image = "{sandbox_image}"
    # Root here lacks CAP_SYS_RESOURCE, so containerd may not lower a
    # process' oom_score_adj below its own (the sandbox's default is -998):
    # clamp to containerd's own score instead of failing RunPodSandbox.
    restrict_oom_score_adj = true
    [plugins."io.containerd.grpc.v1.cri".containerd]
      # The snapshotter CRI uses and reports as the image filesystem.
      snapshotter = "{snapshotter}"
    # Keep CRI away from /etc/cni and /opt/cni; CNI stays unconfigured.
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = {cni_bin}
      conf_dir = {cni_conf}
"#,
        root = q(root)?,
        state = q(state)?,
        socket = q(socket)?,
        cni_bin = q(&base.join("cni/bin"))?,
        cni_conf = q(&base.join("cni/conf"))?,
        sandbox_image = SANDBOX_IMAGE,
    );
    fs::write(path, config).map_err(|e| format!("write {}: {e}", path.display()))
}

fn check_image_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(format!("invalid image name {name:?}: use [a-z0-9._-]+"))
    }
}

fn image_reference(name: &str) -> String {
    format!("docker.io/kubedf-test/{name}:latest")
}

/// A single-layer image that a test assembles from files of this machine,
/// e.g. Debian's `busybox-static` or kubedf's release binary, imported with
/// [`Containerd::import_image`]. Parent directories are added (mode 0755);
/// every entry is owned by root, with mtime 0, so digests are reproducible.
#[derive(Clone, Debug)]
pub struct Image {
    name: String,
    entries: std::collections::BTreeMap<String, Entry>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    env: Vec<String>,
    user: Option<String>,
}

#[derive(Clone, Debug)]
enum Entry {
    Dir(u32),
    File { data: Vec<u8>, mode: u32 },
    Symlink(String),
}

impl Image {
    /// An empty image named `name` (`[a-z0-9._-]+`), with `PATH=/bin`.
    pub fn new(name: &str) -> Image {
        Image {
            name: name.to_owned(),
            entries: Default::default(),
            entrypoint: Vec::new(),
            cmd: Vec::new(),
            env: vec!["PATH=/bin".to_owned()],
            user: None,
        }
    }

    /// Debian's static busybox at `/bin/busybox`, with a `/bin/<applet>`
    /// symlink for each applet it lists, plus the empty directories a root
    /// filesystem has (`/etc`, `/proc`, `/sys`, `/dev`, `/tmp`).
    pub fn busybox(name: &str) -> Result<Image, String> {
        let bin = Path::new(BUSYBOX);
        let mut image = Image::new(name).host_binary("/bin/busybox", bin)?;
        let out = Command::new(bin).arg("--list").output().map_err(|e| {
            format!("run {BUSYBOX} --list: {e} (apt-get install -y busybox-static)")
        })?;
        if !out.status.success() {
            return Err(format!("{BUSYBOX} --list failed ({})", out.status));
        }
        for applet in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if applet != "busybox" {
                image = image.symlink(&format!("/bin/{applet}"), "busybox");
            }
        }
        for dir in ["/etc", "/proc", "/sys", "/dev", "/tmp"] {
            image = image.dir(dir, 0o755);
        }
        Ok(image)
    }

    pub fn dir(mut self, path: &str, mode: u32) -> Image {
        self.entries.insert(clean(path), Entry::Dir(mode));
        self
    }

    pub fn file(mut self, path: &str, data: impl Into<Vec<u8>>, mode: u32) -> Image {
        let data = data.into();
        self.entries.insert(clean(path), Entry::File { data, mode });
        self
    }

    fn symlink(mut self, path: &str, target: &str) -> Image {
        self.entries
            .insert(clean(path), Entry::Symlink(target.to_owned()));
        self
    }

    /// An executable from this machine at `path` (mode 0755), plus the shared
    /// libraries and dynamic loader it needs (from `ldd`) at their own paths,
    /// so a dynamically linked binary runs in an image with nothing else.
    pub fn host_binary(self, path: &str, host: &Path) -> Result<Image, String> {
        let data = fs::read(host).map_err(|e| format!("read {}: {e}", host.display()))?;
        let mut image = self.file(path, data, 0o755);
        for lib in shared_libraries(host)? {
            let data = fs::read(&lib).map_err(|e| format!("read {}: {e}", lib.display()))?;
            let in_image = lib
                .to_str()
                .ok_or_else(|| format!("library path {} is not UTF-8", lib.display()))?;
            image = image.file(in_image, data, 0o755);
        }
        Ok(image)
    }

    pub fn entrypoint(mut self, argv: &[&str]) -> Image {
        self.entrypoint = argv.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn cmd(mut self, argv: &[&str]) -> Image {
        self.cmd = argv.iter().map(|s| s.to_string()).collect();
        self
    }

    /// The image's `User` (e.g. `"65532:65532"`).
    pub fn user(mut self, user: &str) -> Image {
        self.user = Some(user.to_owned());
        self
    }

    fn run_config(&self) -> serde_json::Value {
        let mut config = serde_json::json!({ "Env": self.env });
        if !self.entrypoint.is_empty() {
            config["Entrypoint"] = serde_json::json!(self.entrypoint);
        }
        if !self.cmd.is_empty() {
            config["Cmd"] = serde_json::json!(self.cmd);
        }
        if let Some(user) = &self.user {
            config["User"] = serde_json::json!(user);
        }
        config
    }

    /// The layer tar: every entry after its parent directories.
    fn layer(&self) -> Result<Vec<u8>, String> {
        let mut entries = self.entries.clone();
        for path in self.entries.keys() {
            let mut parent = Path::new(path).parent();
            while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
                let key = p.to_string_lossy().into_owned();
                entries.entry(key).or_insert(Entry::Dir(0o755));
                parent = p.parent();
            }
        }
        let mut ar = tar::Builder::new(Vec::new());
        // BTreeMap order puts "a" before "a/b": parents come first.
        for (path, entry) in &entries {
            let mut h = tar::Header::new_ustar();
            h.set_mtime(0);
            h.set_uid(0);
            h.set_gid(0);
            let result = match entry {
                Entry::Dir(mode) => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(*mode);
                    h.set_size(0);
                    ar.append_data(&mut h, format!("{path}/"), std::io::empty())
                }
                Entry::File { data, mode } => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(*mode);
                    h.set_size(data.len() as u64);
                    ar.append_data(&mut h, path, data.as_slice())
                }
                Entry::Symlink(target) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_mode(0o777);
                    h.set_size(0);
                    ar.append_link(&mut h, path, target)
                }
            };
            result.map_err(|e| format!("image {}: layer entry {path}: {e}", self.name))?;
        }
        ar.into_inner()
            .map_err(|e| format!("image {}: layer tar: {e}", self.name))
    }
}

/// Debian's `busybox-static` installs its binary here.
const BUSYBOX: &str = "/bin/busybox";

/// A path inside an image as a tar member name: no leading or trailing `/`.
fn clean(path: &str) -> String {
    path.trim_matches('/').to_owned()
}

/// The shared libraries (and the dynamic loader) `ldd` lists for `binary`,
/// as absolute paths; none for a static binary.
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>, String> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|e| format!("run ldd {}: {e}", binary.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    // ldd exits 1 with "not a dynamic executable" for a static binary.
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if text.contains("not a dynamic executable") || err.contains("not a dynamic executable") {
            return Ok(Vec::new());
        }
        return Err(format!(
            "ldd {} failed ({}): {err}",
            binary.display(),
            out.status
        ));
    }
    // Lines: "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)",
    // "/lib64/ld-linux-x86-64.so.2 (0x...)", "linux-vdso.so.1 (0x...)".
    let mut libs = Vec::new();
    for line in text.lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        } else if line.contains("not found") {
            return Err(format!("ldd {}: {line}", binary.display()));
        }
    }
    Ok(libs)
}

/// Writes an OCI image-layout tar archive at `path` holding one image for the
/// host platform named `reference`; returns the layer digest (`sha256:...`).
fn write_oci_archive(
    path: &Path,
    reference: &str,
    seed: &str,
    layer_bytes: usize,
) -> Result<String, String> {
    let layer = build_layer(seed, layer_bytes)?;
    let config = serde_json::json!({ "Env": ["PATH=/bin"], "Cmd": ["/bin/true"] });
    write_image_archive(path, reference, layer, config)
}

/// Writes an OCI image-layout tar archive at `path` holding one single-layer
/// image for the host platform, named `reference`, whose image config's
/// `config` object (Entrypoint, Cmd, Env, User, ...) is `run_config`; returns
/// the layer digest (`sha256:...`), which is also its diff ID.
fn write_image_archive(
    path: &Path,
    reference: &str,
    layer: Vec<u8>,
    run_config: serde_json::Value,
) -> Result<String, String> {
    let layer_digest = sha256_digest(&layer);
    let arch = go_arch();

    let config = serde_json::to_vec(&serde_json::json!({
        "created": "1970-01-01T00:00:00Z",
        "architecture": arch,
        "os": "linux",
        "config": run_config,
        // Uncompressed layer: diff ID == layer digest.
        "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
        "history": [{ "created": "1970-01-01T00:00:00Z", "created_by": "kubedf test harness" }],
    }))
    .map_err(|e| format!("serialize image config: {e}"))?;

    let config_digest = sha256_digest(&config);

    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer_digest,
            "size": layer.len(),
        }],
    }))
    .map_err(|e| format!("serialize image manifest: {e}"))?;
    let manifest_digest = sha256_digest(&manifest);

    // `io.containerd.image.name` is used verbatim by `ctr images import`; the
    // OCI `ref.name` annotation would instead get an `import-<date>` prefix.
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "platform": { "architecture": arch, "os": "linux" },
            "annotations": { "io.containerd.image.name": reference },
        }],
    }))
    .map_err(|e| format!("serialize image index: {e}"))?;

    let file = fs::File::create(path).map_err(|e| format!("create {}: {e}", path.display()))?;
    let mut ar = tar::Builder::new(std::io::BufWriter::new(file));
    let blob = |d: &str| format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
    let entries: [(String, &[u8]); 5] = [
        ("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#),
        ("index.json".into(), &index),
        (blob(&manifest_digest), &manifest),
        (blob(&config_digest), &config),
        (blob(&layer_digest), &layer),
    ];
    for (name, data) in entries {
        append_file(&mut ar, &name, data)
            .map_err(|e| format!("write {name} into {}: {e}", path.display()))?;
    }
    ar.into_inner()
        .and_then(|mut w| w.flush())
        .map_err(|e| format!("finish {}: {e}", path.display()))?;
    Ok(layer_digest)
}

/// An uncompressed layer tar: a marker file plus four data files splitting
/// `layer_bytes` of xorshift output (incompressible, so no filesystem or
/// transport can shortcut it).
fn build_layer(seed: &str, layer_bytes: usize) -> Result<Vec<u8>, String> {
    let mut ar = tar::Builder::new(Vec::with_capacity(layer_bytes + 16 * 1024));
    let mut dir = tar::Header::new_ustar();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_size(0);
    dir.set_mtime(0);
    ar.append_data(&mut dir, "data/", std::io::empty())
        .map_err(|e| format!("layer tar: {e}"))?;
    let marker = format!("kubedf test image {seed}\n");
    append_file(&mut ar, "kubedf-test", marker.as_bytes())
        .map_err(|e| format!("layer tar: {e}"))?;

    // Seed from the name so images are reproducible but distinct per name.
    let h = Sha256::digest(seed.as_bytes());
    let mut state = u64::from_le_bytes(h[..8].try_into().unwrap_or([1; 8])) | 1;
    const FILES: usize = 4;
    for i in 0..FILES {
        let len = layer_bytes / FILES
            + if i == FILES - 1 {
                layer_bytes % FILES
            } else {
                0
            };
        let mut data = Vec::with_capacity(len + 8);
        while data.len() < len {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            data.extend_from_slice(&state.to_le_bytes());
        }
        data.truncate(len);
        append_file(&mut ar, &format!("data/blob-{i}"), &data)
            .map_err(|e| format!("layer tar: {e}"))?;
    }
    ar.into_inner().map_err(|e| format!("layer tar: {e}"))
}

/// Appends a regular file with fixed metadata, for reproducible digests.
fn append_file<W: Write>(ar: &mut tar::Builder<W>, name: &str, data: &[u8]) -> std::io::Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_mtime(0);
    ar.append_data(&mut h, name, data)
}

fn sha256_digest(data: &[u8]) -> String {
    let hex: String = Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// The host architecture in GOARCH terms, as OCI platforms use.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "loongarch64" => "loong64",
        other => other, // arm, riscv64, s390x, mips64 match GOARCH already
    }
}

fn find_in_path(bin: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

fn log_tail(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}
