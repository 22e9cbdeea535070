//! kubelet's `/configz`: its effective configuration as it built it at
//! start, `{"kubeletconfig": {...}}` in v1beta1 field names (from 1.36 the
//! inner object also carries `kind` and `apiVersion`).
//!
//! Fetched from `--kubelet.endpoint` (the DaemonSet sets
//! `https://$(HOST_IP):10250`) with the credentials kubedf uses for the API
//! server (the service account token in a pod, the kubeconfig's user
//! otherwise), verifying kubelet's serving certificate against
//! `--kubelet.ca-file` or else the cluster CA kubedf already has;
//! `--kubelet.insecure-skip-tls-verify` only when asked. kube's client does
//! the TLS and the authentication, so a rotated token is re-read as it is
//! for the API. Authorization: `get` on `nodes/configz` (kubelet's
//! fine-grained authorization, on by default from 1.33); never `nodes/proxy`.
//!
//! Any failure (401, 403, a timeout, a certificate from another CA, a body
//! that is not the whole JSON object) is an error with its cause, and no
//! configuration: the caller falls back to the next source.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use thiserror::Error;

use crate::kubelet::config::{AbsentEvictionHard, ConfigError, ConfigSource, KubeletConfig};

/// The largest `/configz` body kubedf reads: a kubelet's is a few KiB.
const MAX_BODY: usize = 1 << 20;

#[derive(Debug, Error)]
pub enum ConfigzError {
    #[error("--kubelet.endpoint {endpoint:?} is not an https:// or http:// URL: {reason}")]
    Endpoint { endpoint: String, reason: String },
    #[error("--kubelet.ca-file {path}: {reason}")]
    CaFile { path: PathBuf, reason: String },
    #[error("{url}: cannot build a client: {reason}")]
    Client { url: String, reason: String },
    #[error("{url}: HTTP {code}: {reason}")]
    Status {
        url: String,
        code: u16,
        reason: String,
    },
    #[error("{url}: {reason}")]
    Request { url: String, reason: String },
    #[error("{url}: no answer within {after:?}")]
    Timeout { url: String, after: Duration },
    #[error("{url}: the body is not kubelet's configuration: {reason}")]
    Body { url: String, reason: String },
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// How to reach one kubelet's `/configz`.
#[derive(Clone)]
pub struct Configz {
    client: kube::Client,
    url: String,
    timeout: Duration,
}

impl std::fmt::Debug for Configz {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Configz").field("url", &self.url).finish()
    }
}

/// The `--kubelet.*` flags for `/configz`.
#[derive(Clone, Debug)]
pub struct ConfigzOptions<'a> {
    pub endpoint: &'a str,
    pub ca_file: Option<&'a Path>,
    pub insecure_skip_tls_verify: bool,
    pub timeout: Duration,
}

impl Configz {
    /// A client for `opts.endpoint` with `api`'s credentials (the API
    /// server's configuration kubedf already has).
    pub fn new(api: kube::Config, opts: &ConfigzOptions<'_>) -> Result<Configz, ConfigzError> {
        let endpoint = opts.endpoint.trim_end_matches('/');
        let bad = |reason: String| ConfigzError::Endpoint {
            endpoint: opts.endpoint.to_owned(),
            reason,
        };
        let uri: hyper::Uri = endpoint.parse().map_err(|e| bad(format!("{e}")))?;
        if !matches!(uri.scheme_str(), Some("https" | "http")) || uri.host().is_none() {
            return Err(bad("expected e.g. https://10.0.0.1:10250".into()));
        }
        let url = format!("{endpoint}/configz");
        let mut config = api;
        config.cluster_url = uri;
        // The API server's name is not the kubelet's.
        config.tls_server_name = None;
        // A kubelet on the node's own address is never reached through the
        // API server's proxy.
        config.proxy_url = None;
        config.default_retry = false;
        // The one deadline is `fetch`'s, over the whole request; kube's own
        // are only a backstop behind it. Equal to it, they raced it on a
        // busy machine and a hang was reported as a connection error.
        let backstop = opts.timeout * 2;
        config.connect_timeout = Some(backstop);
        config.read_timeout = Some(backstop);
        config.write_timeout = Some(backstop);
        config.accept_invalid_certs = opts.insecure_skip_tls_verify;
        if let Some(path) = opts.ca_file {
            config.root_cert = Some(read_ca_file(path)?);
            config.root_cert_file = None;
        }
        let client = kube::Client::try_from(config).map_err(|e| ConfigzError::Client {
            url: url.clone(),
            reason: chain(&e),
        })?;
        Ok(Configz {
            client,
            url,
            timeout: opts.timeout,
        })
    }

    /// The URL read.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// kubelet's configuration, whole or not at all.
    pub async fn fetch(&self) -> Result<KubeletConfig, ConfigzError> {
        let url = self.url.clone();
        let request = hyper::Request::get("/configz")
            .header(hyper::header::ACCEPT, "application/json")
            .body(Vec::new())
            .map_err(|e| ConfigzError::Request {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        let text = match tokio::time::timeout(self.timeout, self.client.request_text(request)).await
        {
            Err(_) => {
                return Err(ConfigzError::Timeout {
                    url,
                    after: self.timeout,
                });
            }
            Ok(Err(kube::Error::Api(status))) => {
                let reason = match status.code {
                    401 => format!(
                        "unauthorized: kubelet refused kubedf's credentials ({})",
                        status.message.trim()
                    ),
                    403 => format!(
                        "forbidden: kubedf's service account needs get on nodes/configz ({})",
                        status.message.trim()
                    ),
                    _ => status.message.trim().to_owned(),
                };
                return Err(ConfigzError::Status {
                    url,
                    code: status.code,
                    reason,
                });
            }
            Ok(Err(e)) => {
                return Err(ConfigzError::Request {
                    url,
                    reason: chain(&e),
                });
            }
            Ok(Ok(text)) => text,
        };
        parse(&text, &url)
    }
}

/// The body of `/configz` into kubedf's settings.
pub fn parse(text: &str, url: &str) -> Result<KubeletConfig, ConfigzError> {
    let body = |reason: String| ConfigzError::Body {
        url: url.to_owned(),
        reason,
    };
    if text.len() > MAX_BODY {
        return Err(body(format!("larger than {MAX_BODY} bytes")));
    }
    let value: Value = serde_json::from_str(text).map_err(|e| body(e.to_string()))?;
    let Some(Value::Object(inner)) = value.get("kubeletconfig").cloned() else {
        return Err(body("no \"kubeletconfig\" object".into()));
    };
    let mut inner = inner;
    // Already applied by kubelet to the map it serves.
    inner.remove("mergeDefaultEvictionSettings");
    if let Some(Value::String(api_version)) = inner.get("apiVersion")
        && api_version != crate::kubelet::effective::API_VERSION
    {
        return Err(body(format!(
            "apiVersion {api_version:?}, expected {}",
            crate::kubelet::effective::API_VERSION
        )));
    }
    // An empty evictionHard map is left out of the JSON: no thresholds.
    let mut cfg = KubeletConfig::from_tree(inner, Path::new(url), AbsentEvictionHard::Empty)?;
    cfg.source = ConfigSource::Configz;
    cfg.origin = format!("kubelet's {url}");
    // kubelet's own defaults are the effective values when it leaves a
    // field out.
    cfg.container_runtime_endpoint = Some(
        cfg.container_runtime_endpoint
            .take()
            .unwrap_or_else(|| crate::kubelet::config::DEFAULT_CONTAINER_RUNTIME_ENDPOINT.into()),
    );
    cfg.volume_stats_agg_period = Some(
        cfg.volume_stats_agg_period
            .unwrap_or(crate::kubelet::config::DEFAULT_VOLUME_STATS_AGG_PERIOD),
    );
    Ok(cfg)
}

/// PEM certificates, as DER.
fn read_ca_file(path: &Path) -> Result<Vec<Vec<u8>>, ConfigzError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;
    let bad = |reason: String| ConfigzError::CaFile {
        path: path.to_path_buf(),
        reason,
    };
    let certs: Vec<Vec<u8>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(e.to_string()))?
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<_, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no PEM certificate in it".into()));
    }
    Ok(certs)
}

/// An error and its causes, as one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubelet::eviction::{Signal, ThresholdValue};

    const URL: &str = "https://10.0.0.1:10250/configz";

    #[test]
    fn both_shapes_are_read() {
        let v135 = r#"{"kubeletconfig":{"enableServer":true,"imageGCHighThresholdPercent":70,"imageGCLowThresholdPercent":60,"evictionHard":{"imagefs.available":"5%","nodefs.available":"5%"},"containerRuntimeEndpoint":"unix:///run/k3s/containerd/containerd.sock","podLogsDir":"/var/log/pods","volumeStatsAggPeriod":"1m0s","mergeDefaultEvictionSettings":false}}"#;
        let v136 = r#"{"kubeletconfig":{"kind":"KubeletConfiguration","apiVersion":"kubelet.config.k8s.io/v1beta1","imageGCHighThresholdPercent":70,"imageGCLowThresholdPercent":60,"evictionHard":{"imagefs.available":"5%","nodefs.available":"5%"},"containerRuntimeEndpoint":"unix:///run/k3s/containerd/containerd.sock","volumeStatsAggPeriod":"1m0s"}}"#;
        for text in [v135, v136] {
            let cfg = parse(text, URL).unwrap();
            assert_eq!(cfg.source, ConfigSource::Configz);
            assert_eq!(cfg.image_gc.high_threshold_percent, 70);
            assert_eq!(cfg.eviction.hard.len(), 2);
            assert_eq!(
                cfg.eviction.hard[&Signal::NodeFsAvailable],
                ThresholdValue::Percentage(0.05)
            );
            assert_eq!(
                cfg.container_runtime_endpoint.as_deref(),
                Some("unix:///run/k3s/containerd/containerd.sock")
            );
        }
        // No evictionHard at all: kubelet's map was empty.
        let cfg = parse(r#"{"kubeletconfig":{}}"#, URL).unwrap();
        assert!(cfg.eviction.hard.is_empty());
    }

    #[test]
    fn anything_else_is_refused_whole() {
        for (text, want) in [
            (
                r#"{"kubeletconfig":{"imageGCHighThresholdPercent":7"#,
                "not kubelet's configuration",
            ),
            ("", "not kubelet's configuration"),
            (r#"{"kind":"Status"}"#, "no \"kubeletconfig\" object"),
            (r#"{"kubeletconfig":{"kind":"Pod"}}"#, "field kind"),
            (
                r#"{"kubeletconfig":{"apiVersion":"kubelet.config.k8s.io/v2"}}"#,
                "apiVersion",
            ),
            (
                r#"{"kubeletconfig":{"imageGCHighThresholdPercent":"high"}}"#,
                "field imageGCHighThresholdPercent",
            ),
        ] {
            let err = parse(text, URL).unwrap_err().to_string();
            assert!(err.contains(URL), "{text}: {err}");
            assert!(err.contains(want), "{text}: {err}");
        }
    }
}
