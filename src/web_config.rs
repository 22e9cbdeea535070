//! `--web.config.file`: TLS and basic auth for the HTTP endpoint, in the
//! format of the Prometheus exporter-toolkit, so the same file works for
//! kubedf and node_exporter:
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt          # relative paths are relative to this file
//!   key_file: server.key
//!   client_auth_type: RequireAndVerifyClientCert
//!   client_ca_file: ca.crt
//!   min_version: TLS12
//! basic_auth_users:
//!   prometheus: $2y$10$...          # bcrypt
//! ```
//!
//! The file is re-read when it (or a file it names) changes, and on SIGHUP.
//! A bad file is an error naming the file and field; the config in force
//! stays in force.

use std::collections::BTreeMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use thiserror::Error;

use crate::yaml::YamlError;

#[derive(Debug, Error)]
pub enum WebConfigError {
    #[error("web config {path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("web config {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("web config {path}: field {field}: {message}")]
    Field {
        path: PathBuf,
        field: String,
        message: String,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    tls_server_config: Option<RawTls>,
    basic_auth_users: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: String,
    key_file: String,
    client_auth_type: Option<String>,
    client_ca_file: Option<String>,
    min_version: Option<String>,
    max_version: Option<String>,
}

/// A validated web configuration.
pub struct WebConfig {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    users: BTreeMap<String, String>,
    /// Successful checks, keyed by a salted hash of user, password and
    /// bcrypt hash, so a scrape every few seconds does not pay bcrypt's cost
    /// each time and no password is kept.
    verified: Mutex<std::collections::HashSet<u64>>,
    salt: RandomState,
}

impl std::fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebConfig")
            .field("tls", &self.tls.is_some())
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Whether a request's credentials pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    NotRequired,
    Allowed,
    Denied,
}

impl WebConfig {
    /// No TLS and no auth: what kubedf serves without `--web.config.file`.
    pub fn plain() -> WebConfig {
        WebConfig {
            tls: None,
            users: BTreeMap::new(),
            verified: Mutex::default(),
            salt: RandomState::new(),
        }
    }

    pub fn requires_auth(&self) -> bool {
        !self.users.is_empty()
    }

    /// Checks basic-auth credentials (blocking: bcrypt is slow on purpose).
    pub fn check(&self, credentials: Option<(&str, &str)>) -> Auth {
        if self.users.is_empty() {
            return Auth::NotRequired;
        }
        let Some((user, password)) = credentials else {
            return Auth::Denied;
        };
        let Some(hash) = self.users.get(user) else {
            return Auth::Denied;
        };
        let key = self.salt.hash_one((user, password, hash));
        if self
            .verified
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&key)
        {
            return Auth::Allowed;
        }
        if bcrypt::verify(password, hash).unwrap_or(false) {
            self.verified
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(key);
            Auth::Allowed
        } else {
            Auth::Denied
        }
    }

    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
        let text = crate::yaml::read_file(path).map_err(|source| WebConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let invalid = |message: String| WebConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let field = |field: &str, message: String| WebConfigError::Field {
            path: path.to_path_buf(),
            field: field.to_owned(),
            message,
        };
        let raw: RawConfig = crate::yaml::from_str(&text).map_err(|e| match e {
            YamlError::Syntax(e) => invalid(format!("not valid YAML: {e}")),
            YamlError::NotAMapping => invalid("expected a mapping at the top level".into()),
            YamlError::Field { path, message } => field(&path, message),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let tls = match raw.tls_server_config {
            None => None,
            Some(tls) => Some(Arc::new(tls_config(base, &tls, &field)?)),
        };
        let users = raw.basic_auth_users.unwrap_or_default();
        for (user, hash) in &users {
            hash.parse::<bcrypt::HashParts>().map_err(|e| {
                field(
                    &format!("basic_auth_users.{user}"),
                    format!("not a bcrypt hash: {e}"),
                )
            })?;
        }
        Ok(WebConfig {
            tls,
            users,
            verified: Mutex::default(),
            salt: RandomState::new(),
        })
    }

    /// The files whose change means the config must be re-read.
    pub fn watched_files(path: &Path) -> Vec<PathBuf> {
        let mut files = vec![path.to_path_buf()];
        let Ok(text) = crate::yaml::read_file(path) else {
            return files;
        };
        let Ok(raw) = serde_saphyr::from_str::<serde_json::Value>(&text) else {
            return files;
        };
        let base = path.parent().unwrap_or(Path::new("."));
        if let Some(tls) = raw.get("tls_server_config") {
            for key in ["cert_file", "key_file", "client_ca_file"] {
                if let Some(f) = tls.get(key).and_then(|v| v.as_str()) {
                    files.push(base.join(f));
                }
            }
        }
        files
    }
}

type FieldError<'a> = dyn Fn(&str, String) -> WebConfigError + 'a;

fn tls_config(
    base: &Path,
    tls: &RawTls,
    field: &FieldError<'_>,
) -> Result<rustls::ServerConfig, WebConfigError> {
    let cert_path = base.join(&tls.cert_file);
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| {
            field(
                "tls_server_config.cert_file",
                format!("{}: {e}", cert_path.display()),
            )
        })?;
    if certs.is_empty() {
        return Err(field(
            "tls_server_config.cert_file",
            format!("{}: no certificate in it", cert_path.display()),
        ));
    }
    let key_path = base.join(&tls.key_file);
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| {
        field(
            "tls_server_config.key_file",
            format!("{}: {e}", key_path.display()),
        )
    })?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions = protocol_versions(tls, field)?;
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&versions)
        .map_err(|e| field("tls_server_config.min_version", e.to_string()))?;

    let auth_type = tls.client_auth_type.as_deref().unwrap_or("NoClientCert");
    let builder = match auth_type {
        "NoClientCert" => builder.with_no_client_auth(),
        "VerifyClientCertIfGiven" | "RequireAndVerifyClientCert" => {
            let ca_file = tls.client_ca_file.as_ref().ok_or_else(|| {
                field(
                    "tls_server_config.client_ca_file",
                    format!("required by client_auth_type {auth_type}"),
                )
            })?;
            let ca_path = base.join(ca_file);
            let mut roots = RootCertStore::empty();
            let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&ca_path)
                .and_then(|c| c.collect::<Result<_, _>>())
                .map_err(|e| {
                    field(
                        "tls_server_config.client_ca_file",
                        format!("{}: {e}", ca_path.display()),
                    )
                })?;
            for ca in cas {
                roots.add(ca).map_err(|e| {
                    field(
                        "tls_server_config.client_ca_file",
                        format!("{}: {e}", ca_path.display()),
                    )
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if auth_type == "VerifyClientCertIfGiven" {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier
                .build()
                .map_err(|e| field("tls_server_config.client_ca_file", e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        "RequestClientCert" | "RequireAnyClientCert" => {
            return Err(field(
                "tls_server_config.client_auth_type",
                format!(
                    "{auth_type} (a client certificate that is not verified) is not supported; use VerifyClientCertIfGiven or RequireAndVerifyClientCert"
                ),
            ));
        }
        other => {
            return Err(field(
                "tls_server_config.client_auth_type",
                format!(
                    "unknown value {other:?} (NoClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert)"
                ),
            ));
        }
    };
    if tls.client_ca_file.is_some() && auth_type == "NoClientCert" {
        return Err(field(
            "tls_server_config.client_ca_file",
            "set, but client_auth_type is NoClientCert; client certificates would not be checked"
                .into(),
        ));
    }
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        field(
            "tls_server_config.key_file",
            format!("does not match cert_file: {e}"),
        )
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// rustls speaks TLS 1.2 and 1.3; TLS10/TLS11 minimums mean 1.2 here.
fn protocol_versions(
    tls: &RawTls,
    field: &FieldError<'_>,
) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, WebConfigError> {
    let rank = |v: Option<&str>, name: &str, default: u8| -> Result<u8, WebConfigError> {
        match v {
            None => Ok(default),
            Some("TLS10" | "TLS11" | "TLS12") => Ok(12),
            Some("TLS13") => Ok(13),
            Some(other) => Err(field(
                name,
                format!("unknown TLS version {other:?} (TLS10, TLS11, TLS12, TLS13)"),
            )),
        }
    };
    let min = rank(
        tls.min_version.as_deref(),
        "tls_server_config.min_version",
        12,
    )?;
    let max = rank(
        tls.max_version.as_deref(),
        "tls_server_config.max_version",
        13,
    )?;
    let versions: Vec<_> = [(12, &rustls::version::TLS12), (13, &rustls::version::TLS13)]
        .into_iter()
        .filter(|(v, _)| (min..=max).contains(v))
        .map(|(_, p)| p)
        .collect();
    if versions.is_empty() {
        return Err(field(
            "tls_server_config.max_version",
            "is below min_version".into(),
        ));
    }
    Ok(versions)
}

/// A fingerprint of the config file and the files it names, to notice a change.
pub fn fingerprint(path: &Path) -> Vec<Option<Vec<u8>>> {
    WebConfig::watched_files(path)
        .iter()
        .map(|f| std::fs::read(f).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("web.yml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn an_empty_file_means_plain_http() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = WebConfig::load(&write(dir.path(), "")).unwrap();
        assert!(cfg.tls.is_none() && !cfg.requires_auth());
        assert_eq!(cfg.check(None), Auth::NotRequired);
    }

    #[test]
    fn basic_auth_checks_bcrypt_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let cfg = WebConfig::load(&write(
            dir.path(),
            &format!("basic_auth_users:\n  prom: '{hash}'\n"),
        ))
        .unwrap();
        assert_eq!(cfg.check(Some(("prom", "s3cret"))), Auth::Allowed);
        assert_eq!(cfg.check(Some(("prom", "s3cret"))), Auth::Allowed, "cached");
        assert_eq!(cfg.check(Some(("prom", "wrong"))), Auth::Denied);
        assert_eq!(cfg.check(Some(("other", "s3cret"))), Auth::Denied);
        assert_eq!(cfg.check(None), Auth::Denied);
    }

    #[test]
    fn bad_files_name_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (
                "basic_auth_users:\n  prom: plaintext\n",
                "basic_auth_users.prom",
            ),
            (
                "tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n",
                "tls_server_config.cert_file",
            ),
            ("tls_server_config:\n  key_file: x\n", "cert_file"),
            ("tls_sever_config: {}\n", "tls_sever_config"),
            ("basic_auth_users: [1]\n", "basic_auth_users"),
            (": : :\n", "web.yml"),
        ];
        for (text, want) in cases {
            let err = WebConfig::load(&write(dir.path(), text))
                .unwrap_err()
                .to_string();
            assert!(err.contains("web.yml"), "{text:?}: {err}");
            assert!(err.contains(want), "{text:?}: {err}");
        }
        let err = WebConfig::load(&dir.path().join("nope.yml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope.yml"), "{err}");
    }
}
