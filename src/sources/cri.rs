//! The container runtime over CRI (gRPC on a unix socket): `RuntimeService/Version`,
//! `ListContainers` and `ListContainerStats` (writable layers, for the pod
//! half; pod by pod through `ListPodSandbox` when the node-wide answer is too
//! large), and `ImageService/ImageFsInfo`, from the subset of `runtime.v1` in
//! `proto/cri.proto`.
//!
//! The runtime's answers carry what tenants wrote in their pod specs (kubelet
//! copies lifecycle hooks and ports into container annotations), so they are
//! accepted up to kubelet's own limit, their annotations are skipped unread
//! (left out of the proto), and one pod whose answer is too large even alone
//! loses only its own figures.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use thiserror::Error;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::model::RuntimeVersion;

#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("runtime.v1");
}

use proto::image_service_client::ImageServiceClient;
use proto::runtime_service_client::RuntimeServiceClient;

/// kubelet's default socket for containerd, then CRI-O's.
pub const DEFAULT_ENDPOINTS: [&str; 2] = [
    "unix:///run/containerd/containerd.sock",
    "unix:///var/run/crio/crio.sock",
];

/// The CRI API version kubedf speaks.
const CRI_API_VERSION: &str = "v1";

/// The largest CRI message kubedf accepts: kubelet's (cri-client's
/// `maxMsgSize`, 16 MiB), where gRPC's default is 4 MiB. A few pods with a
/// large preStop command pass 4 MiB in one `ListContainers` answer.
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;

#[derive(Debug, Error)]
pub enum CriError {
    #[error(
        "unsupported CRI endpoint {0:?}: only unix sockets (unix:///path or /path) are supported"
    )]
    Endpoint(String),
    #[error("CRI {endpoint} {call}: {message}")]
    Call {
        endpoint: String,
        call: &'static str,
        message: String,
    },
    /// The answer passed the runtime's send limit or kubedf's receive limit.
    #[error("CRI {endpoint} {call}: the answer is too large: {message}")]
    TooLarge {
        endpoint: String,
        call: &'static str,
        message: String,
    },
    #[error("CRI {endpoint} {call} did not answer within {after:?}")]
    Timeout {
        endpoint: String,
        call: &'static str,
        after: Duration,
    },
}

fn socket_path(endpoint: &str) -> Option<PathBuf> {
    let path = endpoint.strip_prefix("unix://").unwrap_or(endpoint);
    let path = Path::new(path);
    path.is_absolute().then(|| path.to_path_buf())
}

/// One filesystem as the runtime reports it; a missing field reads as 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportedFs {
    pub mountpoint: String,
    pub used_bytes: u64,
    pub inodes_used: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageFsInfo {
    pub image_filesystems: Vec<ReportedFs>,
    pub container_filesystems: Vec<ReportedFs>,
}

impl From<proto::ImageFsInfoResponse> for ImageFsInfo {
    fn from(r: proto::ImageFsInfoResponse) -> Self {
        let convert = |fs: proto::FilesystemUsage| ReportedFs {
            mountpoint: fs.fs_id.map(|id| id.mountpoint).unwrap_or_default(),
            used_bytes: fs.used_bytes.map(|v| v.value).unwrap_or(0),
            inodes_used: fs.inodes_used.map(|v| v.value).unwrap_or(0),
        };
        ImageFsInfo {
            image_filesystems: r.image_filesystems.into_iter().map(convert).collect(),
            container_filesystems: r.container_filesystems.into_iter().map(convert).collect(),
        }
    }
}

/// The labels kubelet puts on every container it creates.
pub const LABEL_POD_UID: &str = "io.kubernetes.pod.uid";
pub const LABEL_POD_NAME: &str = "io.kubernetes.pod.name";
pub const LABEL_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const LABEL_CONTAINER_NAME: &str = "io.kubernetes.container.name";

/// A running container, mapped to its pod by kubelet's labels, with its
/// writable layer as the runtime reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunningContainer {
    pub id: String,
    pub pod_uid: String,
    pub pod_name: String,
    pub pod_namespace: String,
    /// The container's name in the pod spec.
    pub name: String,
    /// Its restart count (`metadata.attempt`).
    pub attempt: u32,
    /// When the runtime created it, in nanoseconds since the epoch.
    pub created_at: i64,
    /// `None` when the runtime has no stats for it (yet).
    pub writable_layer: Option<WritableLayer>,
}

/// A pod the runtime could not answer for: its own containers' answer is
/// too large even alone.
#[derive(Debug)]
pub struct UnansweredPod {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub sandbox_id: String,
    pub error: CriError,
}

/// The runtime's answer for the node's pods.
#[derive(Debug, Default)]
pub struct RuntimeContainers {
    /// One running container per pod and name ([`newest_per_name`]),
    /// sorted by pod uid and name.
    pub running: Vec<RunningContainer>,
    /// Pods whose containers are unknown; empty when the node-wide answer came.
    pub unanswered: Vec<UnansweredPod>,
    /// Why the runtime was asked pod by pod (the node-wide call's error);
    /// `None` when the node-wide answer came.
    pub per_pod_because: Option<String>,
}

/// `ContainerStats.writable_layer`; a field the runtime leaves unset is `None`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WritableLayer {
    /// Nanoseconds since the epoch, when the runtime measured it.
    pub timestamp: i64,
    pub used_bytes: Option<u64>,
    pub inodes_used: Option<u64>,
}

/// Joins running containers with their stats, as kubelet's CRI stats
/// provider does: only running containers count (kubelet drops terminated
/// ones), containers without kubelet's pod labels are not pods' containers.
/// Unsorted, and a name may come twice: see [`newest_per_name`].
pub fn running_containers(
    containers: Vec<proto::Container>,
    stats: Vec<proto::ContainerStats>,
) -> Vec<RunningContainer> {
    let mut layers: std::collections::HashMap<String, Option<WritableLayer>> = stats
        .into_iter()
        .filter_map(|s| {
            let id = s.attributes?.id;
            let layer = s.writable_layer.map(|w| WritableLayer {
                timestamp: w.timestamp,
                used_bytes: w.used_bytes.map(|v| v.value),
                inodes_used: w.inodes_used.map(|v| v.value),
            });
            Some((id, layer))
        })
        .collect();
    let running = proto::ContainerState::ContainerRunning as i32;
    containers
        .into_iter()
        .filter(|c| c.state == running)
        .filter_map(|c| {
            let label = |k: &str| c.labels.get(k).filter(|v| !v.is_empty()).cloned();
            Some(RunningContainer {
                pod_uid: label(LABEL_POD_UID)?,
                pod_name: label(LABEL_POD_NAME)?,
                pod_namespace: label(LABEL_POD_NAMESPACE)?,
                name: label(LABEL_CONTAINER_NAME)?,
                attempt: c.metadata.as_ref().map_or(0, |m| m.attempt),
                created_at: c.created_at,
                writable_layer: layers.remove(&c.id).flatten(),
                id: c.id,
            })
        })
        .collect()
}

/// One running container per pod and container name, sorted by pod uid and
/// name. Two run at once when a restart overlaps (the old one not yet
/// stopped). kubelet's summary lists both (its `removeTerminatedContainers`
/// keeps every running one), under one name; a series per label set needs
/// one, and this is the most recently created (then the highest attempt,
/// then the greatest id, so the choice is stable): the container kubelet's
/// pod status shows under that name, whose restart count the user sees.
pub fn newest_per_name(mut all: Vec<RunningContainer>) -> Vec<RunningContainer> {
    all.sort_by(|a, b| {
        (&a.pod_uid, &a.name)
            .cmp(&(&b.pod_uid, &b.name))
            .then_with(|| (b.created_at, b.attempt, &b.id).cmp(&(a.created_at, a.attempt, &a.id)))
    });
    all.dedup_by(|later, kept| later.pod_uid == kept.pod_uid && later.name == kept.name);
    all
}

/// Whether a failed call failed on the size of its answer: the runtime's
/// gRPC refuses to send past its limit (`ResourceExhausted`, grpc-go's
/// "trying to send message larger than max"), tonic refuses to decode past
/// kubedf's (`OutOfRange`, "decoded message length too large").
fn answer_too_large(status: &tonic::Status) -> bool {
    match status.code() {
        tonic::Code::ResourceExhausted => true,
        tonic::Code::OutOfRange => status.message().contains("message length too large"),
        _ => false,
    }
}

/// A CRI client on a unix socket. The connection is made on first use and
/// dropped after a failed call, so a runtime that starts (or restarts) later
/// is picked up on the next call.
#[derive(Debug)]
pub struct CriClient {
    endpoint: String,
    socket: PathBuf,
    channel: Mutex<Option<Channel>>,
}

impl CriClient {
    pub fn new(endpoint: &str) -> Result<CriClient, CriError> {
        let socket =
            socket_path(endpoint).ok_or_else(|| CriError::Endpoint(endpoint.to_owned()))?;
        Ok(CriClient {
            endpoint: endpoint.to_owned(),
            socket,
            channel: Mutex::new(None),
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn channel(&self, timeout: Duration) -> Channel {
        let mut slot = self.channel.lock().unwrap_or_else(PoisonError::into_inner);
        slot.get_or_insert_with(|| {
            let socket = self.socket.clone();
            // The URI is required by tonic but unused: the connector below
            // always dials the unix socket.
            Endpoint::from_static("http://cri.invalid")
                .connect_timeout(timeout)
                .timeout(timeout)
                .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                    let socket = socket.clone();
                    async move { UnixStream::connect(socket).await.map(TokioIo::new) }
                }))
        })
        .clone()
    }

    fn forget_channel(&self) {
        *self.channel.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// A RuntimeService client that accepts answers up to [`MAX_MESSAGE_BYTES`].
    fn runtime(&self, timeout: Duration) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel(timeout))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
    }

    async fn call<T, F>(&self, call: &'static str, timeout: Duration, fut: F) -> Result<T, CriError>
    where
        F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let outcome = tokio::time::timeout(timeout, fut).await;
        let err = match outcome {
            Ok(Ok(response)) => return Ok(response.into_inner()),
            // The connection is sound: keep it for the smaller calls that follow.
            Ok(Err(status)) if answer_too_large(&status) => {
                return Err(CriError::TooLarge {
                    endpoint: self.endpoint.clone(),
                    call,
                    message: describe_status(&status),
                });
            }
            Ok(Err(status)) => CriError::Call {
                endpoint: self.endpoint.clone(),
                call,
                message: describe_status(&status),
            },
            Err(_) => CriError::Timeout {
                endpoint: self.endpoint.clone(),
                call,
                after: timeout,
            },
        };
        self.forget_channel();
        Err(err)
    }

    pub async fn version(&self, timeout: Duration) -> Result<RuntimeVersion, CriError> {
        let mut client = self.runtime(timeout);
        let request = proto::VersionRequest {
            version: CRI_API_VERSION.to_owned(),
        };
        let r = self
            .call("RuntimeService/Version", timeout, client.version(request))
            .await?;
        Ok(RuntimeVersion {
            runtime_name: r.runtime_name,
            runtime_version: r.runtime_version,
            runtime_api_version: r.runtime_api_version,
        })
    }

    /// The running containers of kubelet's pods with their writable layers:
    /// `ListContainers` (running only) joined with `ListContainerStats`, one
    /// container per pod and name. Node-wide first; when that answer is too
    /// large, pod by pod (every ready sandbox), so that only a pod whose own
    /// answer is too large goes unanswered. Any other failure fails the
    /// whole answer: the runtime, not a pod, is then at fault.
    pub async fn running_containers(
        &self,
        timeout: Duration,
    ) -> Result<RuntimeContainers, CriError> {
        let running = match self.containers_of("", timeout).await {
            Ok(running) => running,
            Err(e @ CriError::TooLarge { .. }) => return self.pod_by_pod(e, timeout).await,
            Err(e) => return Err(e),
        };
        Ok(RuntimeContainers {
            running: newest_per_name(running),
            ..Default::default()
        })
    }

    /// The running containers of one sandbox, or of the node for `""`.
    async fn containers_of(
        &self,
        sandbox: &str,
        timeout: Duration,
    ) -> Result<Vec<RunningContainer>, CriError> {
        let mut client = self.runtime(timeout);
        let filter = proto::ContainerFilter {
            state: Some(proto::ContainerStateValue {
                state: proto::ContainerState::ContainerRunning as i32,
            }),
            pod_sandbox_id: sandbox.to_owned(),
            ..Default::default()
        };
        let containers = self
            .call(
                "RuntimeService/ListContainers",
                timeout,
                client.list_containers(proto::ListContainersRequest {
                    filter: Some(filter),
                }),
            )
            .await?
            .containers;
        let filter = proto::ContainerStatsFilter {
            pod_sandbox_id: sandbox.to_owned(),
            ..Default::default()
        };
        let stats = self
            .call(
                "RuntimeService/ListContainerStats",
                timeout,
                client.list_container_stats(proto::ListContainerStatsRequest {
                    filter: Some(filter),
                }),
            )
            .await?
            .stats;
        Ok(running_containers(containers, stats))
    }

    /// [`CriClient::running_containers`] sandbox by sandbox, after the
    /// node-wide answer failed with `because`.
    async fn pod_by_pod(
        &self,
        because: CriError,
        timeout: Duration,
    ) -> Result<RuntimeContainers, CriError> {
        let mut client = self.runtime(timeout);
        let filter = proto::PodSandboxFilter {
            state: Some(proto::PodSandboxStateValue {
                state: proto::PodSandboxState::SandboxReady as i32,
            }),
            ..Default::default()
        };
        let sandboxes = self
            .call(
                "RuntimeService/ListPodSandbox",
                timeout,
                client.list_pod_sandbox(proto::ListPodSandboxRequest {
                    filter: Some(filter),
                }),
            )
            .await?
            .items;
        let mut running = Vec::new();
        let mut unanswered = Vec::new();
        for sandbox in sandboxes {
            match self.containers_of(&sandbox.id, timeout).await {
                Ok(some) => running.extend(some),
                Err(error @ CriError::TooLarge { .. }) => {
                    let meta = sandbox.metadata.unwrap_or_default();
                    unanswered.push(UnansweredPod {
                        uid: meta.uid,
                        namespace: meta.namespace,
                        name: meta.name,
                        sandbox_id: sandbox.id,
                        error,
                    });
                }
                Err(e) => return Err(e),
            }
        }
        Ok(RuntimeContainers {
            running: newest_per_name(running),
            unanswered,
            per_pod_because: Some(because.to_string()),
        })
    }

    pub async fn image_fs_info(&self, timeout: Duration) -> Result<ImageFsInfo, CriError> {
        let mut client = ImageServiceClient::new(self.channel(timeout))
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let r = self
            .call(
                "ImageService/ImageFsInfo",
                timeout,
                client.image_fs_info(proto::ImageFsInfoRequest {}),
            )
            .await?;
        Ok(r.into())
    }
}

/// A one-line description of a gRPC failure, with the transport cause when
/// there is one (tonic's own message for a refused socket is only
/// "transport error").
fn describe_status(status: &tonic::Status) -> String {
    use std::error::Error as _;
    let mut message = format!("{}: {}", status.code(), status.message());
    let mut cause = status.source();
    while let Some(e) = cause {
        let text = e.to_string();
        // Transport errors repeat their cause in their own text; say it once.
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        cause = e.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            socket_path("unix:///run/containerd/containerd.sock"),
            Some(PathBuf::from("/run/containerd/containerd.sock"))
        );
        assert_eq!(
            socket_path("/run/crio.sock"),
            Some(PathBuf::from("/run/crio.sock"))
        );
        assert!(CriClient::new("tcp://127.0.0.1:1234").is_err());
        assert!(CriClient::new("unix://relative.sock").is_err());
    }

    #[test]
    fn missing_fields_read_as_zero() {
        let info: ImageFsInfo = proto::ImageFsInfoResponse {
            image_filesystems: vec![proto::FilesystemUsage {
                timestamp: 1,
                fs_id: None,
                used_bytes: None,
                inodes_used: Some(proto::UInt64Value { value: 7 }),
            }],
            container_filesystems: vec![],
        }
        .into();
        assert_eq!(
            info.image_filesystems,
            vec![ReportedFs {
                mountpoint: String::new(),
                used_bytes: 0,
                inodes_used: 7
            }]
        );
    }

    #[test]
    fn running_containers_are_joined_with_their_stats_by_id() {
        let labels = |uid: &str, name: &str| {
            [
                (LABEL_POD_UID, uid),
                (LABEL_POD_NAME, "web-0"),
                (LABEL_POD_NAMESPACE, "shop"),
                (LABEL_CONTAINER_NAME, name),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
        };
        let container = |id: &str, state: proto::ContainerState, labels| proto::Container {
            id: id.into(),
            state: state as i32,
            labels,
            ..Default::default()
        };
        let containers = vec![
            container(
                "c1",
                proto::ContainerState::ContainerRunning,
                labels("u", "app"),
            ),
            container(
                "c0",
                proto::ContainerState::ContainerExited,
                labels("u", "app"),
            ),
            container(
                "c2",
                proto::ContainerState::ContainerRunning,
                labels("u", "side"),
            ),
            container(
                "c3",
                proto::ContainerState::ContainerRunning,
                Default::default(),
            ),
        ];
        let stat = |id: &str, used: Option<u64>| proto::ContainerStats {
            attributes: Some(proto::ContainerAttributes {
                id: id.into(),
                ..Default::default()
            }),
            writable_layer: Some(proto::FilesystemUsage {
                timestamp: 7,
                fs_id: None,
                used_bytes: used.map(|value| proto::UInt64Value { value }),
                inodes_used: Some(proto::UInt64Value { value: 3 }),
            }),
        };
        let got = newest_per_name(running_containers(
            containers,
            vec![stat("c0", Some(1)), stat("c1", Some(4096))],
        ));
        assert_eq!(
            got.len(),
            2,
            "exited and unlabelled containers are left out"
        );
        assert_eq!(got[0].name, "app");
        assert_eq!(
            got[0].writable_layer,
            Some(WritableLayer {
                timestamp: 7,
                used_bytes: Some(4096),
                inodes_used: Some(3)
            })
        );
        assert_eq!(got[1].name, "side");
        assert_eq!(got[1].writable_layer, None, "no stats for c2");
    }

    fn running(uid: &str, name: &str, id: &str, attempt: u32, created_at: i64) -> RunningContainer {
        RunningContainer {
            id: id.into(),
            pod_uid: uid.into(),
            pod_name: format!("pod-{uid}"),
            pod_namespace: "shop".into(),
            name: name.into(),
            attempt,
            created_at,
            writable_layer: None,
        }
    }

    #[test]
    fn two_running_containers_of_one_name_are_one_the_newest() {
        let all = vec![
            running("u1", "app", "old", 0, 100),
            running("u2", "app", "other-pod", 0, 50),
            running("u1", "side", "s", 0, 10),
            running("u1", "app", "new", 1, 200),
            // Created in the same nanosecond: the higher attempt, then the id.
            running("u3", "app", "b", 2, 7),
            running("u3", "app", "c", 3, 7),
            running("u3", "app", "a", 3, 7),
        ];
        let kept = newest_per_name(all.clone());
        let got: Vec<(&str, &str, &str)> = kept
            .iter()
            .map(|c| (c.pod_uid.as_str(), c.name.as_str(), c.id.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("u1", "app", "new"),
                ("u1", "side", "s"),
                ("u2", "app", "other-pod"),
                ("u3", "app", "c"),
            ]
        );
        // The order the runtime lists them in does not matter.
        let mut reversed = all;
        reversed.reverse();
        let again: Vec<String> = newest_per_name(reversed)
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(again, ["new", "s", "other-pod", "c"]);
    }

    #[test]
    fn an_answer_too_large_is_told_from_other_failures() {
        // grpc-go on the runtime's side, past its send limit.
        assert!(answer_too_large(&tonic::Status::resource_exhausted(
            "grpc: trying to send message larger than max (18874368 vs. 16777216)"
        )));
        // tonic on kubedf's side, past MAX_MESSAGE_BYTES.
        assert!(answer_too_large(&tonic::Status::out_of_range(
            "Error, decoded message length too large: found 17000000 bytes, the limit is: 16777216 bytes"
        )));
        assert!(!answer_too_large(&tonic::Status::out_of_range("offset")));
        assert!(!answer_too_large(&tonic::Status::unavailable(
            "connection refused"
        )));
        assert!(!answer_too_large(&tonic::Status::unimplemented(
            "ListPodSandbox"
        )));
    }

    #[tokio::test]
    async fn a_missing_socket_is_an_error_naming_the_endpoint() {
        let client = CriClient::new("unix:///nonexistent/kubedf/cri.sock").unwrap();
        let err = client
            .version(Duration::from_secs(2))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/kubedf/cri.sock"), "{err}");
        assert!(err.contains("Version"), "{err}");
    }
}
