//! A kubelet process for tests: a tiny static program that does nothing,
//! copied into a fixture host root at the kubelet's path and started there
//! with `chroot`, so that `/proc/<pid>/cmdline` is exactly the distribution's
//! command line and `/proc/<pid>/root` is the fixture root. Needs root
//! (chroot) and gcc (the program is compiled once per test process, linked
//! statically so that it runs inside an empty root).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::prerequisites::need_root_and;

/// Why fake kubelets cannot run here, if they cannot.
pub fn kubelet_prerequisites() -> Option<String> {
    need_root_and(&["gcc", "chroot"])
}

/// Waits for signals until killed; ignores its arguments.
const IDLE_C: &str = "#include <unistd.h>\nint main(void) { for (;;) pause(); }\n";

/// The static do-nothing program, compiled on first use.
fn idle_program() -> &'static Path {
    static PROGRAM: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, path) = PROGRAM.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = dir.path().join("idle.c");
        std::fs::write(&source, IDLE_C).expect("write idle.c");
        let out = dir.path().join("idle");
        let status = Command::new("gcc")
            .args(["-static", "-O2", "-o"])
            .arg(&out)
            .arg(&source)
            .status()
            .expect("run gcc");
        assert!(status.success(), "gcc -static idle.c failed");
        (dir, out)
    });
    path
}

/// A process in a fixture root whose command line is `exe args...`; killed
/// (by its pid) on drop.
pub struct FakeKubelet {
    child: Child,
}

impl FakeKubelet {
    /// Copies the idle program to `exe` (a path inside `root`) and starts
    /// `chroot root exe args...`, returning once the exec is done.
    pub fn start(root: &Path, exe: &str, args: &[&str]) -> FakeKubelet {
        let inside = root.join(exe.trim_start_matches('/'));
        std::fs::create_dir_all(inside.parent().expect("exe has a directory")).expect("mkdir");
        std::fs::copy(idle_program(), &inside).expect("copy the idle program");
        let child = Command::new("chroot")
            .arg(root)
            .arg(exe)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chroot");
        let kubelet = FakeKubelet { child };
        // chroot(1) execs the program in place: wait until the pid shows it.
        let cmdline = PathBuf::from(format!("/proc/{}/cmdline", kubelet.pid()));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let argv0 = std::fs::read(&cmdline).unwrap_or_default();
            if argv0.split(|b| *b == 0).next() == Some(exe.as_bytes()) {
                break;
            }
            assert!(Instant::now() < deadline, "{exe} did not start in {root:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
        kubelet
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid fits i32")
    }
}

impl Drop for FakeKubelet {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.pid()), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// Writes `files` (host path, content) under `root`.
pub fn write_host_files(root: &Path, files: &[(&str, &str)]) {
    for (path, content) in files {
        let file = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(file.parent().expect("file has a directory")).expect("mkdir");
        std::fs::write(&file, content).expect("write fixture file");
    }
}
