//! Integration-test support: runs pods through a real containerd's CRI the way
//! kubelet runs them, so tests see what a node shows (writable layers, log
//! files, mounts, security contexts) without a kubelet.
//!
//! What kubelet does and this module does too, for a `hostNetwork` pod:
//! * the sandbox is in the node's network namespace (no CNI), with no
//!   hostname (kubelet sends none then), its own IPC namespace and a PID
//!   namespace per container (kubelet's defaults);
//! * the labels kubelet sets: `io.kubernetes.pod.{name,namespace,uid}` on the
//!   sandbox and the containers, plus `io.kubernetes.container.name`;
//! * logs in `<podLogsDir>/<namespace>_<pod>_<uid>/` (the sandbox's
//!   `log_directory`, created 0755 before RunPodSandbox), each container's in
//!   `<container>/<restart count>.log` (its `log_path`, relative to it);
//! * with a kubelet root dir, `<root>/pods/<uid>/etc-hosts` mounted at
//!   `/etc/hosts`, as kubelet does for a pod with IPs;
//! * kubelet's default masked and read-only `/proc` and `/sys` paths, and the
//!   security context a pod spec asks for ([`Security`]);
//! * cleanup: stop and remove every container, then stop and remove the
//!   sandbox, also on panic ([`Pod`]'s `Drop`).
//!
//! The sandbox image is the one the harness configures
//! ([`Containerd::sandbox_image`]): busybox-static running a shell that waits
//! for SIGTERM, built and imported by [`Cri::connect`]. Container images are
//! built by the tests with [`crate::containerd::Image`].

use std::collections::HashMap;
use std::fs;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use kubedf::sources::cri::proto::runtime_service_client::RuntimeServiceClient;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

pub use kubedf::sources::cri::proto;

use crate::containerd::{Containerd, Image};

/// Bound for one CRI call. Generous: the machine may be loaded, and
/// RunPodSandbox starts a shim and a process.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// StopContainer's grace period (kubelet passes the pod's
/// terminationGracePeriodSeconds); the runtime SIGKILLs after it.
const STOP_GRACE_SECONDS: i64 = 5;

/// kubelet's default masked paths (`securitycontext.ConvertToRuntimeMaskedPaths`
/// for the Default procMount).
const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
/// kubelet's default read-only paths (`ConvertToRuntimeReadonlyPaths`).
const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// A CRI client for one containerd, with its own Tokio runtime so that tests
/// stay synchronous. Cheap to clone.
#[derive(Clone)]
pub struct Cri {
    rt: Arc<tokio::runtime::Runtime>,
    channel: Channel,
}

impl Cri {
    /// Connects to `containerd`'s CRI socket and imports the sandbox image
    /// unless it is there already.
    pub fn connect(containerd: &Containerd) -> Result<Cri, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("tokio runtime: {e}"))?;
        let socket = containerd.socket().to_path_buf();
        let shown = socket.display().to_string();
        let channel = rt
            .block_on(
                // The URI is required by tonic but unused: the connector dials
                // the unix socket.
                Endpoint::from_static("http://cri.invalid")
                    .connect_timeout(CALL_TIMEOUT)
                    .connect_with_connector(tower::service_fn(move |_: Uri| {
                        let socket = socket.clone();
                        async move { UnixStream::connect(socket).await.map(TokioIo::new) }
                    })),
            )
            .map_err(|e| format!("connect to CRI at {shown}: {e}"))?;
        let images = containerd
            .ctr_ns()
            .args(["images", "ls", "-q"])
            .run(CALL_TIMEOUT)?;
        let sandbox = containerd.sandbox_image();
        if !images.lines().any(|l| l.trim() == sandbox) {
            let pause = Image::busybox("pause")?.entrypoint(&[
                "/bin/sh",
                "-c",
                "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done",
            ]);
            let imported = containerd.import_image(&pause)?;
            if imported != sandbox {
                return Err(format!(
                    "imported {imported}, but containerd expects {sandbox}"
                ));
            }
        }
        Ok(Cri {
            rt: Arc::new(rt),
            channel,
        })
    }

    /// A RuntimeService client for calls this module does not wrap; run its
    /// futures with [`Cri::block_on`].
    fn runtime(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel.clone())
    }

    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.rt.block_on(future)
    }

    /// Runs one CRI call under [`CALL_TIMEOUT`], naming it in errors.
    fn call<T, F>(&self, what: &str, future: F) -> Result<T, String>
    where
        F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        // The timer must be made inside the runtime.
        let bounded = async { tokio::time::timeout(CALL_TIMEOUT, future).await };
        match self.rt.block_on(bounded) {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(format!(
                "CRI {what}: {:?}: {}",
                status.code(),
                status.message()
            )),
            Err(_) => Err(format!("CRI {what}: no answer within {CALL_TIMEOUT:?}")),
        }
    }

    /// containerd's own `ListContainerStats` answer for `filter`.
    pub fn list_container_stats(
        &self,
        filter: proto::ContainerStatsFilter,
    ) -> Result<Vec<proto::ContainerStats>, String> {
        let mut client = self.runtime();
        let request = proto::ListContainerStatsRequest {
            filter: Some(filter),
        };
        self.call("ListContainerStats", client.list_container_stats(request))
            .map(|r| r.stats)
    }

    /// The stats of one container, from `ListContainerStats` filtered by id.
    pub fn container_stats(&self, id: &str) -> Result<proto::ContainerStats, String> {
        let filter = proto::ContainerStatsFilter {
            id: id.to_owned(),
            ..Default::default()
        };
        let mut stats = self.list_container_stats(filter)?;
        match (stats.pop(), stats.is_empty()) {
            (Some(s), true) => Ok(s),
            (None, _) => Err(format!("ListContainerStats has no container {id}")),
            (Some(_), false) => Err(format!("ListContainerStats: several answers for {id}")),
        }
    }

    /// The running containers as `ListContainers` answers, to a client that
    /// decodes answers up to `max_bytes` (gRPC's default is 4 MiB, kubelet's
    /// 16 MiB); the error names the size when the answer is larger.
    pub fn list_running_containers(
        &self,
        max_bytes: usize,
    ) -> Result<Vec<proto::Container>, String> {
        let mut client = self.runtime().max_decoding_message_size(max_bytes);
        let request = proto::ListContainersRequest {
            filter: Some(proto::ContainerFilter {
                state: Some(proto::ContainerStateValue {
                    state: proto::ContainerState::ContainerRunning as i32,
                }),
                ..Default::default()
            }),
        };
        self.call("ListContainers", client.list_containers(request))
            .map(|r| r.containers)
    }

    pub fn container_status(&self, id: &str) -> Result<proto::ContainerStatus, String> {
        let mut client = self.runtime();
        let request = proto::ContainerStatusRequest {
            container_id: id.to_owned(),
            verbose: false,
        };
        self.call("ContainerStatus", client.container_status(request))?
            .status
            .ok_or_else(|| format!("CRI ContainerStatus {id}: answer has no status"))
    }

    /// Starts a pod sandbox as kubelet does for `spec` (see the module docs).
    pub fn run_pod(&self, spec: &PodSpec) -> Result<Pod, String> {
        let log_dir = spec
            .logs_dir
            .join(format!("{}_{}_{}", spec.namespace, spec.name, spec.uid));
        mkdir_0755(&log_dir)?;
        let etc_hosts = match &spec.kubelet_root {
            Some(root) => {
                let dir = root.join("pods").join(&spec.uid);
                mkdir_0755(&dir)?;
                let path = dir.join("etc-hosts");
                // kubelet's file for a host-network pod: the node's own hosts file
                // under kubelet's header.
                let node = fs::read_to_string("/etc/hosts").unwrap_or_default();
                let text = format!("# Kubernetes-managed hosts file (host network).\n{node}");
                fs::write(&path, text).map_err(|e| format!("write {}: {e}", path.display()))?;
                Some(path)
            }
            None => None,
        };
        let metadata = proto::PodSandboxMetadata {
            name: spec.name.clone(),
            uid: spec.uid.clone(),
            namespace: spec.namespace.clone(),
            attempt: 0,
        };
        let mut labels = spec.labels.clone();
        labels.extend(pod_labels(&metadata));
        let config = proto::PodSandboxConfig {
            metadata: Some(metadata),
            // No hostname: kubelet sends none for a host-network pod, and
            // containerd refuses to set one in the node's UTS namespace.
            hostname: String::new(),
            log_directory: path_str(&log_dir)?,
            dns_config: None,
            labels,
            annotations: HashMap::new(),
            linux: Some(proto::LinuxPodSandboxConfig {
                cgroup_parent: String::new(),
                security_context: Some(proto::LinuxSandboxSecurityContext {
                    namespace_options: Some(namespaces()),
                    seccomp: spec.seccomp.map(profile),
                    ..Default::default()
                }),
                sysctls: HashMap::new(),
            }),
        };
        let mut client = self.runtime();
        let request = proto::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        };
        let id = self
            .call("RunPodSandbox", client.run_pod_sandbox(request))?
            .pod_sandbox_id;
        Ok(Pod {
            cri: self.clone(),
            sandbox_id: id,
            config,
            log_dir,
            etc_hosts,
            containers: Vec::new(),
            removed: false,
        })
    }
}

/// The kubelet-set labels of a pod's sandbox and containers.
fn pod_labels(meta: &proto::PodSandboxMetadata) -> [(String, String); 3] {
    [
        ("io.kubernetes.pod.name".into(), meta.name.clone()),
        ("io.kubernetes.pod.namespace".into(), meta.namespace.clone()),
        ("io.kubernetes.pod.uid".into(), meta.uid.clone()),
    ]
}

/// kubelet's namespaces for a host-network pod without hostPID/hostIPC.
fn namespaces() -> proto::NamespaceOption {
    proto::NamespaceOption {
        network: proto::NamespaceMode::Node as i32,
        pid: proto::NamespaceMode::Container as i32,
        ipc: proto::NamespaceMode::Pod as i32,
        target_id: String::new(),
    }
}

fn profile(kind: proto::security_profile::ProfileType) -> proto::SecurityProfile {
    proto::SecurityProfile {
        profile_type: kind as i32,
        localhost_ref: String::new(),
    }
}

fn mkdir_0755(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt as _;
    fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("chmod 0755 {}: {e}", dir.display()))
}

fn path_str(path: &Path) -> Result<String, String> {
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("path {} is not UTF-8", path.display()))
}

/// What kubelet knows of a pod before it runs it.
#[derive(Clone, Debug)]
pub struct PodSpec {
    name: String,
    namespace: String,
    uid: String,
    /// kubelet's `podLogsDir` (default `/var/log/pods`).
    logs_dir: PathBuf,
    /// kubelet's root dir: when set, the pod gets `<root>/pods/<uid>/etc-hosts`.
    pub kubelet_root: Option<PathBuf>,
    /// The pod's own labels (kubelet's are added).
    labels: HashMap<String, String>,
    /// The pod's seccomp profile; `None` is kubelet's default, Unconfined.
    pub seccomp: Option<proto::security_profile::ProfileType>,
}

impl PodSpec {
    pub fn new(namespace: &str, name: &str, uid: &str, logs_dir: &Path) -> PodSpec {
        PodSpec {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            uid: uid.to_owned(),
            logs_dir: logs_dir.to_path_buf(),
            kubelet_root: None,
            labels: HashMap::new(),
            seccomp: None,
        }
    }
}

/// A container's `securityContext`, as kubelet translates it for the CRI.
#[derive(Clone, Debug, Default)]
pub struct Security {
    /// `runAsUser` / `runAsGroup`; `None` keeps the image's user.
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    /// `readOnlyRootFilesystem`.
    pub readonly_rootfs: bool,
    /// `allowPrivilegeEscalation: false`.
    pub no_new_privs: bool,
    /// `capabilities.add` / `.drop`, as written in the pod spec (`"ALL"`,
    /// `"DAC_READ_SEARCH"`); the runtime adds the `CAP_` prefix.
    pub add_capabilities: Vec<String>,
    pub drop_capabilities: Vec<String>,
    pub privileged: bool,
    /// The container's seccomp profile (`seccompProfile.type`).
    pub seccomp: Option<proto::security_profile::ProfileType>,
}

/// A container of a pod spec.
#[derive(Clone, Debug)]
pub struct ContainerSpec {
    name: String,
    /// An image reference, as returned by `Containerd::import_image`.
    image: String,
    /// `command` and `args`; empty keeps the image's entrypoint and cmd.
    command: Vec<String>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    mounts: Vec<proto::Mount>,
    pub security: Security,
    /// The restart count: the container's attempt and its log file name.
    restart_count: u32,
    /// Annotations beside kubelet's restart count, as kubelet adds the pod
    /// spec's lifecycle hooks (`io.kubernetes.container.preStopHandler`).
    pub annotations: HashMap<String, String>,
}

impl ContainerSpec {
    pub fn new(name: &str, image: &str) -> ContainerSpec {
        ContainerSpec {
            name: name.to_owned(),
            image: image.to_owned(),
            command: Vec::new(),
            args: Vec::new(),
            env: Vec::new(),
            mounts: Vec::new(),
            security: Security::default(),
            restart_count: 0,
            annotations: HashMap::new(),
        }
    }

    /// The restart count, as kubelet gives a container it starts again.
    pub fn attempt(mut self, restart_count: u32) -> ContainerSpec {
        self.restart_count = restart_count;
        self
    }

    /// An annotation on the container.
    pub fn annotation(mut self, key: &str, value: &str) -> ContainerSpec {
        self.annotations.insert(key.to_owned(), value.to_owned());
        self
    }

    /// `sh -c script` (the image must have `/bin/sh`).
    pub fn shell(mut self, script: &str) -> ContainerSpec {
        self.command = vec!["/bin/sh".into(), "-c".into(), script.into()];
        self
    }

    /// A hostPath mount.
    pub fn mount(
        mut self,
        host: &Path,
        container: &str,
        readonly: bool,
        propagation: proto::MountPropagation,
    ) -> ContainerSpec {
        self.mounts.push(proto::Mount {
            container_path: container.to_owned(),
            host_path: host.to_string_lossy().into_owned(),
            readonly,
            propagation: propagation as i32,
            ..Default::default()
        });
        self
    }
}

/// A started container.
#[derive(Clone, Debug)]
pub struct Started {
    pub id: String,
    /// `<pod log dir>/<container>/<restart count>.log`, written by containerd.
    pub log_path: PathBuf,
}

/// A running pod sandbox and its containers; stopped and removed by
/// [`Pod::remove`] or, best effort, on drop.
pub struct Pod {
    cri: Cri,
    sandbox_id: String,
    config: proto::PodSandboxConfig,
    log_dir: PathBuf,
    etc_hosts: Option<PathBuf>,
    containers: Vec<String>,
    removed: bool,
}

impl Pod {
    pub fn sandbox_id(&self) -> &str {
        &self.sandbox_id
    }

    /// `<podLogsDir>/<namespace>_<pod>_<uid>`.
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// Creates and starts a container in this pod as kubelet does.
    pub fn start(&mut self, spec: &ContainerSpec) -> Result<Started, String> {
        let meta = self.config.metadata.clone().unwrap_or_default();
        mkdir_0755(&self.log_dir.join(&spec.name))?;
        let log_path = format!("{}/{}.log", spec.name, spec.restart_count);
        let mut labels: HashMap<String, String> = pod_labels(&meta).into();
        labels.insert("io.kubernetes.container.name".into(), spec.name.clone());
        let mut annotations = spec.annotations.clone();
        annotations.insert(
            "io.kubernetes.container.restartCount".to_owned(),
            spec.restart_count.to_string(),
        );
        let mut mounts = spec.mounts.clone();
        if let Some(hosts) = &self.etc_hosts {
            mounts.push(proto::Mount {
                container_path: "/etc/hosts".into(),
                host_path: path_str(hosts)?,
                ..Default::default()
            });
        }
        let sec = &spec.security;
        let config = proto::ContainerConfig {
            metadata: Some(proto::ContainerMetadata {
                name: spec.name.clone(),
                attempt: spec.restart_count,
            }),
            image: Some(proto::ImageSpec {
                image: spec.image.clone(),
                annotations: HashMap::new(),
            }),
            command: spec.command.clone(),
            args: spec.args.clone(),
            working_dir: String::new(),
            envs: spec
                .env
                .iter()
                .map(|(k, v)| proto::KeyValue {
                    key: k.clone(),
                    value: v.clone().into_bytes(),
                })
                .collect(),
            mounts,
            labels,
            annotations,
            log_path: log_path.clone(),
            linux: Some(proto::LinuxContainerConfig {
                resources: None,
                security_context: Some(proto::LinuxContainerSecurityContext {
                    capabilities: Some(proto::Capability {
                        add_capabilities: sec.add_capabilities.clone(),
                        drop_capabilities: sec.drop_capabilities.clone(),
                        add_ambient_capabilities: Vec::new(),
                    }),
                    privileged: sec.privileged,
                    namespace_options: Some(namespaces()),
                    run_as_user: sec.run_as_user.map(|value| proto::Int64Value { value }),
                    run_as_group: sec.run_as_group.map(|value| proto::Int64Value { value }),
                    run_as_username: String::new(),
                    readonly_rootfs: sec.readonly_rootfs,
                    supplemental_groups: Vec::new(),
                    no_new_privs: sec.no_new_privs,
                    masked_paths: MASKED_PATHS.iter().map(|p| p.to_string()).collect(),
                    readonly_paths: READONLY_PATHS.iter().map(|p| p.to_string()).collect(),
                    seccomp: sec.seccomp.map(profile),
                }),
            }),
        };
        let mut client = self.cri.runtime();
        let request = proto::CreateContainerRequest {
            pod_sandbox_id: self.sandbox_id.clone(),
            config: Some(config),
            sandbox_config: Some(self.config.clone()),
        };
        let what = format!("CreateContainer {}", spec.name);
        let id = self
            .cri
            .call(&what, client.create_container(request))?
            .container_id;
        self.containers.push(id.clone());
        let request = proto::StartContainerRequest {
            container_id: id.clone(),
        };
        let what = format!("StartContainer {} ({id})", spec.name);
        self.cri.call(&what, client.start_container(request))?;
        Ok(Started {
            id,
            log_path: self.log_dir.join(log_path),
        })
    }

    /// Stops and removes the containers, then the sandbox; the first error.
    pub fn remove(mut self) -> Result<(), String> {
        self.cleanup()
    }

    fn cleanup(&mut self) -> Result<(), String> {
        if self.removed {
            return Ok(());
        }
        self.removed = true;
        let mut client = self.cri.runtime();
        let mut first_err = None;
        let mut note = |r: Result<(), String>| {
            if let Err(e) = r {
                first_err.get_or_insert(e);
            }
        };
        for id in self.containers.iter().rev() {
            let stop = proto::StopContainerRequest {
                container_id: id.clone(),
                timeout: STOP_GRACE_SECONDS,
            };
            note(
                self.cri
                    .call(&format!("StopContainer {id}"), client.stop_container(stop))
                    .map(drop),
            );
            let remove = proto::RemoveContainerRequest {
                container_id: id.clone(),
            };
            note(
                self.cri
                    .call(
                        &format!("RemoveContainer {id}"),
                        client.remove_container(remove),
                    )
                    .map(drop),
            );
        }
        let id = self.sandbox_id.clone();
        let stop = proto::StopPodSandboxRequest {
            pod_sandbox_id: id.clone(),
        };
        note(
            self.cri
                .call(
                    &format!("StopPodSandbox {id}"),
                    client.stop_pod_sandbox(stop),
                )
                .map(drop),
        );
        let remove = proto::RemovePodSandboxRequest {
            pod_sandbox_id: id.clone(),
        };
        note(
            self.cri
                .call(
                    &format!("RemovePodSandbox {id}"),
                    client.remove_pod_sandbox(remove),
                )
                .map(drop),
        );
        first_err.map_or(Ok(()), Err)
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        if let Err(e) = self.cleanup() {
            eprintln!(
                "cri harness: cleaning up pod sandbox {}: {e}",
                self.sandbox_id
            );
        }
    }
}
