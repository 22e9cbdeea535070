//! The container runtime over CRI (gRPC on a unix socket): `RuntimeService/Version`
//! and `ImageService/ImageFsInfo`, from the subset of `runtime.v1` in `proto/cri.proto`.

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
    #[error("CRI {endpoint} {call} did not answer within {after:?}")]
    Timeout {
        endpoint: String,
        call: &'static str,
        after: Duration,
    },
}

/// The first endpoint of containerd's and CRI-O's whose socket exists, or
/// containerd's when none does (it may appear later).
pub fn default_endpoint() -> String {
    DEFAULT_ENDPOINTS
        .into_iter()
        .find(|e| socket_path(e).is_some_and(|p| p.exists()))
        .unwrap_or(DEFAULT_ENDPOINTS[0])
        .to_owned()
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

    async fn call<T, F>(&self, call: &'static str, timeout: Duration, fut: F) -> Result<T, CriError>
    where
        F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let outcome = tokio::time::timeout(timeout, fut).await;
        let err = match outcome {
            Ok(Ok(response)) => return Ok(response.into_inner()),
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
        let mut client = RuntimeServiceClient::new(self.channel(timeout));
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

    pub async fn image_fs_info(&self, timeout: Duration) -> Result<ImageFsInfo, CriError> {
        let mut client = ImageServiceClient::new(self.channel(timeout));
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
