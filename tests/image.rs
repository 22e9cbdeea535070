//! Real containers under a real containerd (Debian's package, private socket),
//! run through the CRI as kubelet runs them (testkit/src/cri.rs), from
//! images the tests assemble themselves from Debian's `busybox-static`.

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use testkit::containerd::{Containerd, Image};
use testkit::cri::{ContainerSpec, Cri, PodSpec, proto};
use testkit::*;

const TOOLS: &[&str] = &[
    "containerd",
    "ctr",
    "runc",
    "containerd-shim-runc-v2",
    "busybox",
];
const MIB: u64 = 1 << 20;

/// The overlay upper dir behind a running container's rootfs, from the host's
/// mountinfo (the shim mounts `<state>/.../<id>/rootfs` in this namespace).
fn upper_dir(container_id: &str) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let suffix = format!("/{container_id}/rootfs");
    info.lines().find_map(|l| {
        let mut parts = l.split(" - ");
        let head = parts.next()?;
        let tail = parts.next()?;
        if !head.split(' ').nth(4)?.ends_with(&suffix) {
            return None;
        }
        tail.split(' ')
            .nth(2)?
            .split(',')
            .find_map(|o| o.strip_prefix("upperdir=").map(str::to_owned))
    })
}

#[test]
fn a_pod_writes_its_rootfs_and_logs_as_under_kubelet() {
    let test = "a_pod_writes_its_rootfs_and_logs_as_under_kubelet";
    if !prerequisites(test, need_root_and(TOOLS)) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let containerd = Containerd::start(&dir.path().join("cd"), 256 << 20).expect("containerd");
    let cri = Cri::connect(&containerd).expect("CRI");
    let image = containerd
        .import_image(&Image::busybox("writer").expect("busybox image"))
        .expect("import");
    let logs = dir.path().join("log-pods");
    let kubelet_root = dir.path().join("kubelet");
    let mut spec = PodSpec::new(
        "team-a",
        "writer",
        "0b1c2d3e-0000-4000-8000-000000000001",
        &logs,
    );
    spec.kubelet_root = Some(kubelet_root.clone());
    let mut pod = cri.run_pod(&spec).expect("RunPodSandbox");

    // 8 MiB into the writable layer, then 2 MiB to stdout in 64-byte lines,
    // then stay up until stopped (ListContainerStats covers running containers).
    const ROOTFS_MIB: u64 = 8;
    const STDOUT_LINES: usize = (2 * MIB / 64) as usize;
    let line = "0123456789abcdef".repeat(4)[..63].to_owned();
    let script = format!(
        "dd if=/dev/urandom of=/written bs=1048576 count={ROOTFS_MIB} 2>/dev/null && \
         yes {line} | head -c {} && \
         trap 'exit 0' TERM; while :; do sleep 3600 & wait $!; done",
        2 * MIB
    );
    let container = ContainerSpec::new("writer", &image).shell(&script);
    let started = pod.start(&container).expect("start container");
    assert_eq!(
        pod.log_dir(),
        logs.join("team-a_writer_0b1c2d3e-0000-4000-8000-000000000001")
    );
    assert_eq!(started.log_path, pod.log_dir().join("writer/0.log"));
    // containerd's own view of it: running, logging where kubelet said.
    let status = cri.container_status(&started.id).expect("ContainerStatus");
    assert_eq!(status.state, proto::ContainerState::ContainerRunning as i32);
    assert_eq!(Path::new(&status.log_path), started.log_path);

    // The CRI log file: one `<time> stdout F <line>` record per line.
    let deadline = Instant::now() + Duration::from_secs(120);
    let records = loop {
        let text = std::fs::read_to_string(&started.log_path).unwrap_or_default();
        let n = text
            .lines()
            .filter(|l| l.split(' ').skip(1).collect::<Vec<_>>() == ["stdout", "F", &line])
            .count();
        if n >= STDOUT_LINES || Instant::now() > deadline {
            break n;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        records,
        STDOUT_LINES,
        "log records in {}",
        started.log_path.display()
    );
    let log_size = std::fs::metadata(&started.log_path).expect("log").len();
    assert!(
        log_size > 2 * MIB,
        "log file holds the 2 MiB plus CRI prefixes"
    );

    // containerd's own answer: the writable layer holds the 8 MiB, and agrees
    // with an independent du/find of the overlay upper dir once refreshed.
    let upper = (containerd.snapshotter() == "overlayfs")
        .then(|| upper_dir(&started.id).expect("overlay upper dir of the container"));
    let deadline = Instant::now() + Duration::from_secs(120);
    let (stats, independent) = loop {
        let stats = cri
            .container_stats(&started.id)
            .expect("ListContainerStats");
        let layer = stats.writable_layer.clone().expect("writable_layer");
        let used = layer.used_bytes.map(|v| v.value).unwrap_or(0);
        let inodes = layer.inodes_used.map(|v| v.value).unwrap_or(0);
        let independent = upper.as_ref().map(|u| du_find(Path::new(u)));
        let agreed =
            used >= ROOTFS_MIB * MIB && independent.is_none_or(|(b, i)| (b, i) == (used, inodes));
        if agreed || Instant::now() > deadline {
            break (stats, independent);
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let layer = stats.writable_layer.clone().expect("writable_layer");
    let used = layer.used_bytes.map(|v| v.value).unwrap_or(0);
    let inodes = layer.inodes_used.map(|v| v.value).unwrap_or(0);
    eprintln!(
        "writable layer: {used} bytes, {inodes} inodes; du/find of {upper:?}: {independent:?}"
    );
    assert!(
        (ROOTFS_MIB * MIB..(ROOTFS_MIB + 1) * MIB).contains(&used),
        "writable layer used bytes {used}"
    );
    assert!(inodes >= 2, "writable layer inodes {inodes}");
    if let Some(independent) = independent {
        assert_eq!(independent, (used, inodes), "du -sxB1 / find of {upper:?}");
    }
    let attrs = stats.attributes.expect("attributes");
    assert_eq!(attrs.id, started.id);
    assert_eq!(attrs.metadata.expect("metadata").name, "writer");
    for (k, v) in [
        ("io.kubernetes.pod.name", "writer"),
        ("io.kubernetes.pod.namespace", "team-a"),
        (
            "io.kubernetes.pod.uid",
            "0b1c2d3e-0000-4000-8000-000000000001",
        ),
        ("io.kubernetes.container.name", "writer"),
    ] {
        assert_eq!(
            attrs.labels.get(k).map(String::as_str),
            Some(v),
            "label {k}"
        );
    }
    // The sandbox itself is no container of ListContainerStats.
    let all = cri
        .list_container_stats(proto::ContainerStatsFilter {
            pod_sandbox_id: pod.sandbox_id().to_owned(),
            ..Default::default()
        })
        .expect("ListContainerStats by sandbox");
    assert_eq!(all.len(), 1);
    assert!(
        kubelet_root
            .join("pods/0b1c2d3e-0000-4000-8000-000000000001/etc-hosts")
            .is_file()
    );

    let sandbox = pod.sandbox_id().to_owned();
    pod.remove().expect("stop and remove");
    let left = containerd
        .ctr_ns()
        .args(["containers", "ls", "-q"])
        .run(Duration::from_secs(60))
        .expect("ctr containers ls");
    assert!(
        !left.contains(&sandbox) && !left.contains(&started.id),
        "containers left after cleanup: {left}"
    );
}

// ---- kubedf's own image, run as deploy/daemonset.yaml runs it (issue 11) ----

const NODE: &str = "node-1";
const NS: &str = "shop";
/// The PVs: a hostPath directory of another user, mode 0700 (walked), and a
/// CSI volume that kubelet mounts only after kubedf has started.
const PRIVATE_PV_PATH: &str = "/srv/pv-private";
const LATE_PV: &str = "pv-late";
const LATE_BYTES: u64 = 24 << 20;

/// The kubedf binary packaged into the image: `KUBEDF_IMAGE_BINARY` (the
/// release build; scripts/test.sh sets it), else, outside CI, the binary cargo
/// built for this test, said so on stderr.
fn image_binary() -> std::path::PathBuf {
    if let Some(path) = std::env::var_os("KUBEDF_IMAGE_BINARY") {
        return path.into();
    }
    assert_ne!(
        std::env::var("CI").as_deref(),
        Ok("true"),
        "KUBEDF_IMAGE_BINARY must name the release binary under CI (scripts/test.sh sets it)"
    );
    let test_build = kubedf!().path().to_path_buf();
    let _ = writeln!(
        std::io::stderr(),
        "image test: KUBEDF_IMAGE_BINARY unset; packaging the test build {}",
        test_build.display()
    );
    test_build
}

/// Debian's CA bundle (package ca-certificates), which the distroless base
/// also ships: the Kubernetes client loads the system roots when it is built
/// and fails without any, even for a plain-HTTP API server.
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The Dockerfile's runtime shape (checked against it by
/// `the_dockerfile_has_the_test_images_runtime_shape`).
const BINARY: &str = "/kubedf";
const USER: &str = "65532:65532";
const ENTRYPOINT: &[&str] = &["/kubedf"];
const CMD: &[&str] = &["serve"];

/// The Dockerfile's runtime shape: `/kubedf`, the libraries it links (the
/// distroless cc base has glibc, libgcc_s and libm) and the CA bundle, user
/// 65532, entrypoint `/kubedf`, command `serve`.
fn kubedf_image(binary: &Path) -> Image {
    let ca = std::fs::read(CA_BUNDLE)
        .unwrap_or_else(|e| panic!("read {CA_BUNDLE}: {e} (apt-get install ca-certificates)"));
    let mut image = Image::new("kubedf")
        .file(CA_BUNDLE, ca, 0o644)
        .host_binary(BINARY, binary)
        .expect("package kubedf")
        .entrypoint(ENTRYPOINT)
        .cmd(CMD)
        .user(USER);
    for dir in ["/etc", "/proc", "/sys", "/dev", "/tmp", "/run"] {
        image = image.dir(dir, 0o755);
    }
    image
}

/// The Dockerfile's final stage says what the test image does: the binary's
/// path, the user, the entrypoint and command, and the port the probe uses.
#[test]
fn the_dockerfile_has_the_test_images_runtime_shape() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile"))
        .expect("read Dockerfile");
    let last_stage: Vec<&str> = text
        .lines()
        .collect::<Vec<_>>()
        .rsplit(|l| l.starts_with("FROM "))
        .next()
        .expect("a final stage")
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let instruction = |name: &str| -> Vec<&str> {
        last_stage
            .iter()
            .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .collect()
    };
    let json = |v: &str| serde_json::from_str::<Vec<String>>(v).expect("exec-form JSON array");
    assert_eq!(
        instruction("COPY"),
        [format!("--from=builder /kubedf {BINARY}")]
    );
    assert_eq!(instruction("USER"), [USER]);
    assert_eq!(
        instruction("ENTRYPOINT")
            .iter()
            .map(|v| json(v))
            .collect::<Vec<_>>(),
        [ENTRYPOINT]
    );
    assert_eq!(
        instruction("CMD")
            .iter()
            .map(|v| json(v))
            .collect::<Vec<_>>(),
        [CMD]
    );
    let port = manifest().probe_port.to_string();
    assert_eq!(instruction("EXPOSE"), [port.as_str()]);
}

/// The test's stand-in for the node's `/`: a directory bind-mounted onto
/// itself and made rshared, so that a mount made under it after a container
/// started reaches a HostToContainer (rslave) copy, as on a node whose `/` is
/// shared (systemd makes it so). This machine's own `/` is private and shared
/// with other developers, so it is not used. Inside: kubelet's root dir (a
/// tmpfs at /var/lib/kubelet), the containerd root at its real path (so that
/// the imagefs mountpoint the CRI reports resolves under /host), containerd's
/// socket directory where k3s keeps its own (`/run/k3s/containerd`, not
/// kubedf's default: kubedf must take it from the kubelet), the PV dirs, and
/// an empty /proc for the /host/proc mount. Detached on drop.
struct HostRoot {
    path: std::path::PathBuf,
}

impl HostRoot {
    fn new(path: &Path, containerd: &Containerd) -> HostRoot {
        use nix::mount::{MsFlags, mount};
        std::fs::create_dir_all(path).expect("mkdir host root");
        mount(
            Some(path),
            path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .expect("bind host root");
        let host = HostRoot {
            path: path.to_path_buf(),
        };
        mount(
            None::<&str>,
            path,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
        .expect("make host root rshared");
        let kubelet = host.at("/var/lib/kubelet");
        std::fs::create_dir_all(&kubelet).expect("mkdir kubelet root");
        let options = format!("size={},mode=0755", 64u64 << 20);
        mount(
            Some("tmpfs"),
            &kubelet,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(options.as_str()),
        )
        .expect("mount kubelet root");
        let cd_root = host.at(containerd.root().to_str().expect("utf-8"));
        std::fs::create_dir_all(&cd_root).expect("mkdir containerd root");
        mount(
            Some(containerd.root()),
            &cd_root,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .expect("bind containerd root");
        let socket_dir = host.at(K3S_SOCKET_DIR);
        std::fs::create_dir_all(&socket_dir).expect("mkdir socket dir");
        mount(
            containerd.socket().parent(),
            &socket_dir,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .expect("bind containerd's socket dir");
        std::fs::create_dir_all(host.at("/proc")).expect("mkdir proc");
        host
    }

    /// A host path under this root.
    fn at(&self, host_path: &str) -> std::path::PathBuf {
        self.path.join(host_path.trim_start_matches('/'))
    }
}

impl Drop for HostRoot {
    fn drop(&mut self) {
        if let Err(e) = nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH) {
            eprintln!("umount {}: {e}", self.path.display());
        }
    }
}

/// Where the test's host keeps containerd's socket, and the endpoint its
/// kubelet names.
const K3S_SOCKET_DIR: &str = "/run/k3s/containerd";
const K3S_ENDPOINT: &str = "unix:///run/k3s/containerd/containerd.sock";

/// The kubedf container of deploy/daemonset.yaml, translated for the CRI as
/// kubelet translates it.
struct Manifest {
    args: Vec<String>,
    env: Vec<(String, String)>,
    security: testkit::cri::Security,
    seccomp: Option<proto::security_profile::ProfileType>,
    /// (volume host path, container path, read-only, propagation)
    mounts: Vec<(String, String, bool, proto::MountPropagation)>,
    probe_path: String,
    probe_port: u16,
    probe_timeout: Duration,
}

fn manifest() -> Manifest {
    use serde_json::Value;
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/daemonset.yaml"
    ))
    .expect("read deploy/daemonset.yaml");
    let ds: Value = serde_saphyr::from_str(&text).expect("parse deploy/daemonset.yaml");
    let pod = &ds["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let sc = &c["securityContext"];
    let profile = |v: &Value| match v["seccompProfile"]["type"].as_str() {
        Some("RuntimeDefault") => Some(proto::security_profile::ProfileType::RuntimeDefault),
        Some("Unconfined") => Some(proto::security_profile::ProfileType::Unconfined),
        None => None,
        Some(other) => panic!("seccompProfile {other} is not translated here"),
    };
    let seccomp = profile(sc).or_else(|| profile(&pod["securityContext"]));
    assert_eq!(sc["privileged"], Value::Bool(false));
    let security = testkit::cri::Security {
        run_as_user: sc["runAsUser"].as_i64(),
        run_as_group: sc["runAsGroup"].as_i64(),
        readonly_rootfs: sc["readOnlyRootFilesystem"] == Value::Bool(true),
        no_new_privs: sc["allowPrivilegeEscalation"] == Value::Bool(false),
        add_capabilities: strings(&sc["capabilities"]["add"]),
        drop_capabilities: strings(&sc["capabilities"]["drop"]),
        privileged: false,
        seccomp,
    };
    let volumes = pod["volumes"].as_array().expect("volumes");
    let mounts = c["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
        .iter()
        .map(|m| {
            let name = m["name"].as_str().expect("mount name");
            let volume = volumes
                .iter()
                .find(|v| v["name"] == name)
                .unwrap_or_else(|| panic!("volume {name}"));
            let host = volume["hostPath"]["path"]
                .as_str()
                .unwrap_or_else(|| panic!("volume {name} is not a hostPath"));
            let propagation = match m["mountPropagation"].as_str() {
                None | Some("None") => proto::MountPropagation::PropagationPrivate,
                Some("HostToContainer") => proto::MountPropagation::PropagationHostToContainer,
                Some("Bidirectional") => proto::MountPropagation::PropagationBidirectional,
                Some(other) => panic!("mountPropagation {other}"),
            };
            (
                host.to_owned(),
                m["mountPath"].as_str().expect("mountPath").to_owned(),
                m["readOnly"] == Value::Bool(true),
                propagation,
            )
        })
        .collect();
    let env: Vec<(String, String)> = c["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| {
            let name = e["name"].as_str().expect("env name").to_owned();
            let value = match (
                e["value"].as_str(),
                e["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
            ) {
                (Some(v), _) => v.to_owned(),
                (None, Some("spec.nodeName")) => NODE.to_owned(),
                // No kubelet listens there in the test: /configz fails and
                // the next source is used, as on a node whose kubelet
                // refuses it.
                (None, Some("status.hostIP")) => "127.0.0.1".to_owned(),
                other => panic!("env {name}: {other:?} is not translated here"),
            };
            (name, value)
        })
        .collect();
    let probe = &c["livenessProbe"];
    // kubelet expands $(VAR) in args from the container's env.
    let args = strings(&c["args"])
        .into_iter()
        .map(|a| {
            env.iter().fold(a, |a, (name, value)| {
                a.replace(&format!("$({name})"), value)
            })
        })
        .collect();
    Manifest {
        args,
        env,
        security,
        seccomp,
        mounts,
        probe_path: probe["httpGet"]["path"]
            .as_str()
            .expect("probe path")
            .to_owned(),
        probe_port: probe["httpGet"]["port"].as_u64().expect("probe port") as u16,
        probe_timeout: Duration::from_secs(probe["timeoutSeconds"].as_u64().unwrap_or(1)),
    }
}

/// One way of running the image: the manifest's, or the manifest with one
/// line taken away.
struct Variant {
    name: &'static str,
    security: testkit::cri::Security,
    mounts: Vec<(String, String, bool, proto::MountPropagation)>,
    extra_args: Vec<String>,
}

/// A kubedf container running in its own pod.
struct Running {
    name: &'static str,
    pod: testkit::cri::Pod,
    log: std::path::PathBuf,
    port: u16,
}

impl Running {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn scrape(&self) -> String {
        http()
            .get(self.url("/metrics"))
            .send()
            .and_then(|r| r.text())
            .unwrap_or_default()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Scrapes until `done` holds, or panics with the last scrape and the log.
    fn until(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let text = self.scrape();
            if done(&text) {
                return text;
            }
            if Instant::now() > deadline {
                panic!(
                    "{}: waited for {what}; last scrape:\n{text}\ncontainer log:\n{}",
                    self.name,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// The host PID of this container's kubedf process.
    fn pid(&self) -> u32 {
        let needle = format!("--web.listen-address=127.0.0.1:{}", self.port);
        std::fs::read_dir("/proc")
            .expect("read /proc")
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .find(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| c.split(|b| *b == 0).any(|a| a == needle.as_bytes()))
                    .unwrap_or(false)
            })
            .unwrap_or_else(|| panic!("{}: no kubedf process with {needle}", self.name))
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// `/proc/<pid>/status` fields.
fn status_field(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .trim()
        .to_owned()
}

/// The mountinfo line of `mount_point` as process `pid` sees it:
/// (mount options, optional fields).
fn mount_of(pid: u32, mount_point: &str) -> (String, String) {
    let info = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("mountinfo");
    info.lines()
        .filter_map(|l| {
            let (head, _) = l.split_once(" - ")?;
            let f: Vec<&str> = head.split(' ').collect();
            (f.get(4) == Some(&mount_point)).then(|| (f[5].to_owned(), f[6..].join(" ")))
        })
        .next_back()
        .unwrap_or_else(|| panic!("{mount_point} not in /proc/{pid}/mountinfo"))
}

#[test]
fn the_image_does_its_job_under_the_daemonsets_security_context() {
    let test = "the_image_does_its_job_under_the_daemonsets_security_context";
    if !prerequisites(
        test,
        need_root_and(TOOLS).or_else(testkit::kubelet::kubelet_prerequisites),
    ) {
        return;
    }
    let m = manifest();
    // What the manifest says, checked here so that a change to it is a
    // decision this test sees.
    assert_eq!(m.security.run_as_user, Some(0));
    assert!(m.security.readonly_rootfs && m.security.no_new_privs);
    assert_eq!(m.security.drop_capabilities, ["ALL"]);
    assert_eq!(m.security.add_capabilities, ["DAC_READ_SEARCH"]);
    assert!(m.mounts.iter().any(|(h, c, ro, p)| h == "/"
        && c == "/host"
        && *ro
        && *p == proto::MountPropagation::PropagationHostToContainer));
    assert!(
        m.args
            .contains(&format!("--web.listen-address=:{}", m.probe_port))
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let containerd = Containerd::start(&dir.path().join("cd"), 1 << 30).expect("containerd");
    let host = HostRoot::new(&dir.path().join("host"), &containerd);
    // The node's kubelet, whose command line names the runtime's socket:
    // the manifest pins none, so kubedf must find it in the host's /proc.
    let _kubelet = testkit::kubelet::FakeKubelet::start(
        &host.path,
        "/usr/bin/kubelet",
        &[
            "--kubeconfig=/etc/kubernetes/kubelet.conf",
            &format!("--container-runtime-endpoint={K3S_ENDPOINT}"),
        ],
    );
    assert!(
        !m.args.iter().any(|a| a.starts_with("--cri.endpoint")),
        "the manifest pins no runtime: {:?}",
        m.args
    );
    let cri = Cri::connect(&containerd).expect("CRI");
    let binary = image_binary();
    let image = containerd
        .import_image(&kubedf_image(&binary))
        .expect("import kubedf image");

    // The API server's view: one pod on this node with the two PVCs.
    let kube = testkit::fake_kube::FakeKube::start();
    let uid = testkit::fake_kube::fake_uid("data-user");
    kube.put_pod(testkit::fake_kube::pod(
        NS,
        "data-user",
        &uid,
        NODE,
        "Running",
        vec![
            testkit::fake_kube::pvc_volume("private", "private"),
            testkit::fake_kube::pvc_volume("late", "late"),
        ],
    ));
    for (claim, pv) in [
        (
            "private",
            testkit::fake_kube::pv_host_path("pv-private", PRIVATE_PV_PATH, "1Gi"),
        ),
        (
            "late",
            testkit::fake_kube::pv_csi(LATE_PV, "ebs.csi.aws.com", "vol-1", "24Mi", "Filesystem"),
        ),
    ] {
        let pvc = testkit::fake_kube::pvc(
            NS,
            claim,
            Some(pv["metadata"]["name"].as_str().unwrap()),
            "Bound",
        );
        kube.put_pv(testkit::fake_kube::bind_pv(pv, &pvc));
        kube.put_pvc(pvc);
    }
    let kubeconfig = dir.path().join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig).expect("kubeconfig");

    // The hostPath PV: another user's directory, mode 0700.
    let private = host.at(PRIVATE_PV_PATH);
    std::fs::create_dir_all(private.join("sub")).expect("mkdir pv");
    for i in 0..5 {
        std::fs::write(
            private.join(format!("sub/f{i}")),
            vec![7u8; 10_000 * (i + 1)],
        )
        .expect("write pv file");
    }
    for p in [private.join("sub"), private.clone()] {
        nix::unistd::chown(
            &p,
            Some(nix::unistd::Uid::from_raw(1234)),
            Some(nix::unistd::Gid::from_raw(1234)),
        )
        .expect("chown");
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .expect("chmod 0700");
    }
    // The CSI volume's mount dir exists; kubelet mounts it later.
    let late = host.at(&format!(
        "/var/lib/kubelet/pods/{uid}/volumes/kubernetes.io~csi/{LATE_PV}/mount"
    ));
    std::fs::create_dir_all(&late).expect("mkdir csi mount dir");

    let host_path = |path: &str| -> String {
        match path {
            "/" => host.path.display().to_string(),
            "/proc" => "/proc".to_owned(),
            other => panic!("hostPath {other} is not mapped by this test"),
        }
    };
    let without_cap = testkit::cri::Security {
        add_capabilities: Vec::new(),
        ..m.security.clone()
    };
    let image_user = testkit::cri::Security {
        run_as_user: None,
        run_as_group: None,
        ..m.security.clone()
    };
    let private_propagation = m
        .mounts
        .iter()
        .cloned()
        .map(|(h, c, ro, p)| {
            let p = if c == "/host" {
                proto::MountPropagation::PropagationPrivate
            } else {
                p
            };
            (h, c, ro, p)
        })
        .collect();
    let no_host_proc = m
        .mounts
        .iter()
        .filter(|x| x.1 != "/host/proc")
        .cloned()
        .collect();
    let variants = vec![
        Variant {
            name: "daemonset",
            security: m.security.clone(),
            mounts: m.mounts.clone(),
            extra_args: vec![],
        },
        Variant {
            name: "no-dac-read-search",
            security: without_cap,
            mounts: m.mounts.clone(),
            extra_args: vec![],
        },
        Variant {
            name: "image-user",
            security: image_user,
            mounts: m.mounts.clone(),
            extra_args: vec![],
        },
        Variant {
            name: "private-propagation",
            security: m.security.clone(),
            mounts: private_propagation,
            extra_args: vec![],
        },
        Variant {
            name: "no-host-proc",
            security: m.security.clone(),
            mounts: no_host_proc,
            extra_args: vec![],
        },
    ];
    let logs = dir.path().join("log-pods");
    let running: Vec<Running> = variants
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let mut spec = PodSpec::new(
                "kubedf",
                &format!("kubedf-{}", v.name),
                &format!("0000000{i}-kubedf"),
                &logs,
            );
            spec.seccomp = m.seccomp;
            let mut pod = cri
                .run_pod(&spec)
                .unwrap_or_else(|e| panic!("{}: {e}", v.name));
            let port = free_port();
            // The manifest's args; the listen address moves to a free port on
            // 127.0.0.1 (this sandbox is in the node's network namespace),
            // the API server is the fake one, and the sample periods shrink.
            let mut args: Vec<String> = m
                .args
                .iter()
                .map(|a| {
                    if a.starts_with("--web.listen-address=") {
                        format!("--web.listen-address=127.0.0.1:{port}")
                    } else {
                        a.clone()
                    }
                })
                .collect();
            args.extend([
                "--kubeconfig=/etc/kubedf/kubeconfig".to_owned(),
                "--sample-interval=500ms".to_owned(),
                "--volume-stats-agg-period=300ms".to_owned(),
            ]);
            args.extend(v.extra_args);
            let mut c = ContainerSpec::new("kubedf", &image);
            c.args = args;
            c.env = m.env.clone();
            c.security = v.security;
            for (h, ct, ro, p) in &v.mounts {
                c = c.mount(Path::new(&host_path(h)), ct, *ro, *p);
            }
            c = c.mount(
                &kubeconfig,
                "/etc/kubedf/kubeconfig",
                true,
                proto::MountPropagation::PropagationPrivate,
            );
            let started = pod.start(&c).unwrap_or_else(|e| panic!("{}: {e}", v.name));
            Running {
                name: v.name,
                pod,
                log: started.log_path,
                port,
            }
        })
        .collect();
    let by = |name: &str| running.iter().find(|r| r.name == name).expect("variant");

    for r in &running {
        // The liveness probe, as kubelet sends it.
        let deadline = Instant::now() + Duration::from_secs(60);
        let ok = loop {
            let answer = http()
                .get(format!("http://127.0.0.1:{}{}", r.port, m.probe_path))
                .timeout(m.probe_timeout)
                .send()
                .map(|a| a.status().as_u16())
                .map_err(|e| e.to_string());
            if answer == Ok(200) || Instant::now() > deadline {
                break answer;
            }
            std::thread::sleep(Duration::from_millis(300));
        };
        assert_eq!(
            ok.ok(),
            Some(200),
            "{}: liveness probe; log:\n{}",
            r.name,
            r.log_text()
        );
    }

    // As the DaemonSet runs it: uid 0, only DAC_READ_SEARCH, no new privileges,
    // seccomp on, a read-only root, /host read-only and a slave of the host.
    let ds = by("daemonset");
    let pid = ds.pid();
    assert_eq!(
        status_field(pid, "Uid").split_whitespace().next(),
        Some("0")
    );
    for set in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(
            status_field(pid, set),
            format!("{:016x}", 1u64 << 2),
            "{set}: CAP_DAC_READ_SEARCH alone"
        );
    }
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
    let _ = writeln!(
        std::io::stderr(),
        "image test: kubedf in its container: VmRSS {}, image binary {} bytes",
        status_field(pid, "VmRSS"),
        std::fs::metadata(&binary).map(|m| m.len()).unwrap_or(0)
    );
    assert_eq!(status_field(pid, "Seccomp"), "2");
    let (root_opts, _) = mount_of(pid, "/");
    assert!(
        root_opts.split(',').any(|o| o == "ro"),
        "root mount {root_opts}"
    );
    let (host_opts, host_fields) = mount_of(pid, "/host");
    assert!(
        host_opts.split(',').any(|o| o == "ro"),
        "/host mount {host_opts}"
    );
    assert!(
        host_fields.contains("master:"),
        "/host is a slave mount: {host_fields}"
    );

    // kubelet's configuration from its process, found in /host/proc with no
    // hostPID and no ptrace; the runtime it names, reached under the
    // read-only /host (connecting needs write permission on the socket,
    // not a writable mount).
    let t = ds.until("the kubelet process as the source", |t| {
        value(t, "kubedf_kubelet_config_info", &[("source", "process")]).as_deref() == Some("1")
    });
    assert!(has_family(&t, "kubedf_cri_info"), "{t}");
    // The runtime's imagefs, through the CRI socket.
    let mountpoint = containerd.snapshotter_dir().display().to_string();
    let labels = [("mountpoint", mountpoint.as_str())];
    let capacity = statfs_figures(&containerd.snapshotter_dir())[0].to_string();
    // Capacity from statfs under /host; used bytes as containerd answers
    // ImageFsInfo (asked here directly; stable once the containers are idle).
    let client = kubedf::sources::cri::CriClient::new(
        containerd.socket().to_str().expect("utf-8 socket path"),
    )
    .expect("CRI client");
    ds.until("imagefs: statfs and the runtime's figure", |t| {
        let runtime = cri
            .block_on(client.image_fs_info(Duration::from_secs(10)))
            .expect("ImageFsInfo");
        let used = runtime.image_filesystems[0].used_bytes.to_string();
        value(t, "kubedf_imagefs_capacity_bytes", &labels).as_deref() == Some(capacity.as_str())
            && value(t, "kubedf_imagefs_used_bytes", &labels).as_deref() == Some(used.as_str())
    });

    // The 0700 hostPath PV of uid 1234, walked: du's figures.
    let (bytes, inodes) = du_find(&private);
    let claim = |t: &str, name: &str, pvc: &str| {
        value(
            t,
            &format!("kubelet_volume_stats_{name}"),
            &[("namespace", NS), ("persistentvolumeclaim", pvc)],
        )
    };
    let text = ds.until("the private PV walked", |t| {
        claim(t, "used_bytes", "private").is_some()
    });
    assert_eq!(
        claim(&text, "used_bytes", "private"),
        Some(bytes.to_string())
    );
    assert_eq!(
        claim(&text, "inodes_used", "private"),
        Some(inodes.to_string())
    );

    // The CSI volume is not mounted yet; then kubelet mounts it on the host.
    let error_of = |t: &str, pvc: &str| {
        samples(t)
            .into_iter()
            .find(|l| {
                l.name == "kubedf_volume_stats_error"
                    && l.labels.get("persistentvolumeclaim").map(String::as_str) == Some(pvc)
            })
            .map(|l| l.labels["reason"].clone())
    };
    for r in [ds, by("private-propagation")] {
        r.until("the late volume reported unmounted", |t| {
            error_of(t, "late").as_deref() == Some("not_mounted")
        });
    }
    let late_mount = Tmpfs::mount(&late, LATE_BYTES);
    let text = ds.until("the late volume's statfs", |t| {
        claim(t, "capacity_bytes", "late").is_some()
    });
    assert_eq!(
        claim(&text, "capacity_bytes", "late"),
        Some(LATE_BYTES.to_string())
    );

    // Each line of the security context, taken away, breaks its check.
    // Without DAC_READ_SEARCH, root cannot read another user's 0700 dir.
    let t = by("no-dac-read-search").until("the private PV to fail", |t| {
        error_of(t, "private").is_some()
    });
    assert_eq!(error_of(&t, "private").as_deref(), Some("io_error"));
    // As the image's own user (65532), the root-owned CRI socket is refused.
    let uid = status_field(by("image-user").pid(), "Uid");
    assert_eq!(uid.split_whitespace().next(), Some("65532"), "{uid}");
    let t = by("image-user").until("imagefs to fail", |t| {
        value(
            t,
            "kubedf_scrape_collector_success",
            &[("collector", "imagefs")],
        )
        .as_deref()
            == Some("0")
    });
    assert!(!has_family(&t, "kubedf_imagefs_capacity_bytes"));
    // Without HostToContainer, the volume mounted after start stays invisible.
    std::thread::sleep(Duration::from_secs(3));
    let t = by("private-propagation").scrape();
    assert_eq!(error_of(&t, "late").as_deref(), Some("not_mounted"), "{t}");
    // Without /host/proc, the PID figures are gone.
    by("no-host-proc").until("rlimit to fail", |t| {
        value(
            t,
            "kubedf_scrape_collector_success",
            &[("collector", "rlimit")],
        )
        .as_deref()
            == Some("0")
    });
    // ... while the DaemonSet's way still has them all.
    let t = ds.scrape();
    for collector in ["imagefs", "rlimit", "nodefs"] {
        assert_eq!(
            value(
                &t,
                "kubedf_scrape_collector_success",
                &[("collector", collector)]
            )
            .as_deref(),
            Some("1"),
            "{collector}"
        );
    }
    promtool_check(&t).expect("promtool");

    for r in running {
        r.pod.remove().unwrap_or_else(|e| panic!("{}: {e}", r.name));
    }
    drop(late_mount);
    drop(host);
}
