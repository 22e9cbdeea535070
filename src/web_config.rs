//! `--web.config.file`: TLS, client certificates, basic auth, response
//! headers and a rate limit for the HTTP endpoint, in the format of the
//! Prometheus exporter-toolkit, so one file serves kubedf and node_exporter:
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt          # relative paths are relative to this file
//!   key_file: server.key
//!   client_auth_type: RequireAndVerifyClientCert
//!   client_ca_file: ca.crt
//!   min_version: TLS12
//! http_server_config:
//!   headers:
//!     X-Frame-Options: deny
//! rate_limit:
//!   burst: 10
//!   interval: 1s
//! basic_auth_users:
//!   prometheus: $2y$10$...          # bcrypt
//! ```
//!
//! Every file exporter-toolkit accepts is accepted with the same meaning,
//! except where rustls cannot do what a value asks: that is an error naming
//! the key (the README lists each case). The file is re-read when it (or a
//! file it names) changes, and on SIGHUP; [`WebConfig::downgrade`] says when
//! a new file would weaken what is in force (TLS off, basic auth dropped), in
//! which case the reload is refused.

use std::collections::BTreeMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderName, HeaderValue};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::UnixTime;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use thiserror::Error;
use tracing::warn;

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
    http_server_config: Option<RawHttp>,
    rate_limit: Option<RawRateLimit>,
    basic_auth_users: Option<BTreeMap<String, String>>,
}

/// exporter-toolkit's `TLSConfig`. Go's zero values mean "unset", so an
/// empty string is the same as a missing key.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: Option<String>,
    key: Option<String>,
    client_ca: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
    client_auth_type: Option<String>,
    client_ca_file: Option<String>,
    cipher_suites: Option<Vec<String>>,
    curve_preferences: Option<Vec<String>>,
    min_version: Option<String>,
    max_version: Option<String>,
    prefer_server_cipher_suites: Option<bool>,
    client_allowed_sans: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    http2: Option<bool>,
    /// Any YAML scalar, as yaml.v2 decodes one into exporter-toolkit's
    /// `map[string]string` (see [`header_text`]).
    headers: Option<BTreeMap<String, serde_json::Value>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    burst: Option<i64>,
    /// A Go duration string (`1m30s`, `1.5s`) or an integer of nanoseconds,
    /// as yaml.v2 decodes a `time.Duration`.
    interval: Option<serde_json::Value>,
}

fn set(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.is_empty())
}

/// The response headers exporter-toolkit lets a web config set, with the
/// values it allows (none listed: any value).
const ALLOWED_HEADERS: [(&str, &[&str]); 5] = [
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

/// A validated web configuration.
pub struct WebConfig {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// `http_server_config.http2`: offer h2 over TLS (exporter-toolkit's
    /// default is true). Fixed at start, as in exporter-toolkit.
    pub http2: bool,
    /// `http_server_config.headers`, set on every response.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// `rate_limit`, when `interval` is positive. Fixed at start, as in
    /// exporter-toolkit.
    pub rate_limit: Option<Arc<RateLimit>>,
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
            .field("http2", &self.http2)
            .field("headers", &self.headers)
            .field("rate_limit", &self.rate_limit)
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

/// A bcrypt hash checked when the user is unknown, so that the time a
/// refusal takes does not tell which users exist (exporter-toolkit does the
/// same). Made once, at cost 10 like `htpasswd -B`.
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| bcrypt::hash("kubedf-decoy", 10).unwrap_or_default())
}

impl WebConfig {
    /// No TLS and no auth: what kubedf serves without `--web.config.file`.
    pub fn plain() -> WebConfig {
        WebConfig {
            tls: None,
            http2: false,
            headers: Vec::new(),
            rate_limit: None,
            users: BTreeMap::new(),
            verified: Mutex::default(),
            salt: RandomState::new(),
        }
    }

    pub fn requires_auth(&self) -> bool {
        !self.users.is_empty()
    }

    /// Why replacing `self` by `next` would weaken security, if it would:
    /// TLS turned off (or on: TLS is fixed at start, as in exporter-toolkit)
    /// or basic auth dropped. Such a reload takes a restart.
    pub fn downgrade(&self, next: &WebConfig) -> Option<&'static str> {
        match (self.tls.is_some(), next.tls.is_some()) {
            (true, false) => {
                return Some("it has no TLS certificate, and turning TLS off takes a restart");
            }
            (false, true) => return Some("turning TLS on takes a restart"),
            _ => {}
        }
        if self.requires_auth() && !next.requires_auth() {
            return Some("it has no basic_auth_users, and dropping basic auth takes a restart");
        }
        None
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
            let _ = bcrypt::verify(password, decoy_hash());
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
        Self::parse(path, &text)
    }

    /// Validates `text`, the content of `path` (relative file names are
    /// relative to its directory).
    pub fn parse(path: &Path, text: &str) -> Result<WebConfig, WebConfigError> {
        let invalid = |message: String| WebConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let field = |field: &str, message: String| WebConfigError::Field {
            path: path.to_path_buf(),
            field: field.to_owned(),
            message,
        };
        let raw: RawConfig = crate::yaml::from_str(text).map_err(|e| match e {
            YamlError::Syntax(e) => invalid(format!("not valid YAML: {e}")),
            YamlError::NotAMapping => invalid("expected a mapping at the top level".into()),
            YamlError::Field { path, message } => field(&path, message),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let http = raw.http_server_config.unwrap_or_default();
        let http2 = http.http2.unwrap_or(true);
        let tls = match raw.tls_server_config {
            Some(tls) if tls_enabled(&tls) => {
                Some(Arc::new(tls_config(base, &tls, http2, &field)?))
            }
            _ => None,
        };
        let headers = headers(http.headers.unwrap_or_default(), &field)?;
        let rate_limit = match raw.rate_limit {
            None => None,
            Some(r) => rate_limit(&r, &field)?.map(Arc::new),
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
            http2,
            headers,
            rate_limit,
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

/// exporter-toolkit's `IsEnabled`: any TLS key set turns TLS on (and then
/// a certificate and key are required).
fn tls_enabled(tls: &RawTls) -> bool {
    [
        &tls.cert_file,
        &tls.cert,
        &tls.key_file,
        &tls.key,
        &tls.client_ca_file,
        &tls.client_ca,
        &tls.client_auth_type,
    ]
    .iter()
    .any(|v| set(v).is_some())
}

type FieldError<'a> = dyn Fn(&str, String) -> WebConfigError + 'a;

/// PEM certificates from `file` (relative to `base`) or else from `inline`,
/// as exporter-toolkit prefers the file when both are set.
fn pem_certs(
    base: &Path,
    file: Option<&str>,
    inline: Option<&str>,
    keys: (&str, &str),
    field: &FieldError<'_>,
) -> Result<Vec<CertificateDer<'static>>, WebConfigError> {
    let (certs, key, what) = match (file, inline) {
        (Some(f), _) => {
            let p = base.join(f);
            let certs =
                CertificateDer::pem_file_iter(&p).and_then(|c| c.collect::<Result<Vec<_>, _>>());
            (certs, keys.0, p.display().to_string())
        }
        (None, Some(text)) => {
            let certs = CertificateDer::pem_slice_iter(text.as_bytes()).collect();
            (certs, keys.1, "inline PEM".to_owned())
        }
        (None, None) => return Ok(Vec::new()),
    };
    let certs = certs.map_err(|e| field(key, format!("{what}: {e}")))?;
    if certs.is_empty() {
        return Err(field(key, format!("{what}: no PEM certificate in it")));
    }
    Ok(certs)
}

fn tls_config(
    base: &Path,
    tls: &RawTls,
    http2: bool,
    field: &FieldError<'_>,
) -> Result<rustls::ServerConfig, WebConfigError> {
    let cert_keys = ("tls_server_config.cert_file", "tls_server_config.cert");
    if set(&tls.cert_file).is_none() && set(&tls.cert).is_none() {
        return Err(field(
            "tls_server_config.cert_file",
            "missing: TLS needs one of cert or cert_file".into(),
        ));
    }
    if set(&tls.key_file).is_none() && set(&tls.key).is_none() {
        return Err(field(
            "tls_server_config.key_file",
            "missing: TLS needs one of key or key_file".into(),
        ));
    }
    let certs = pem_certs(base, set(&tls.cert_file), set(&tls.cert), cert_keys, field)?;
    let key = match (set(&tls.key_file), set(&tls.key)) {
        (Some(f), _) => {
            let p = base.join(f);
            PrivateKeyDer::from_pem_file(&p).map_err(|e| {
                field(
                    "tls_server_config.key_file",
                    format!("{}: {e}", p.display()),
                )
            })?
        }
        (None, Some(text)) => PrivateKeyDer::from_pem_slice(text.as_bytes())
            .map_err(|e| field("tls_server_config.key", format!("inline PEM: {e}")))?,
        (None, None) => unreachable_key(field)?,
    };

    let provider = Arc::new(crypto_provider(tls, field)?);
    let versions = protocol_versions(tls, field)?;
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&versions)
        .map_err(|e| {
            field(
                "tls_server_config.cipher_suites",
                format!("no cipher suite left for the TLS versions allowed: {e}"),
            )
        })?;

    let auth_type = set(&tls.client_auth_type).unwrap_or("NoClientCert");
    let ca_keys = (
        "tls_server_config.client_ca_file",
        "tls_server_config.client_ca",
    );
    let cas = pem_certs(
        base,
        set(&tls.client_ca_file),
        set(&tls.client_ca),
        ca_keys,
        field,
    )?;
    let sans = tls.client_allowed_sans.clone();
    let verify = match auth_type {
        "NoClientCert" => None,
        "RequestClientCert" => Some((false, false)),
        "RequireAnyClientCert" | "RequireClientCert" => Some((true, false)),
        "VerifyClientCertIfGiven" => Some((false, true)),
        "RequireAndVerifyClientCert" => Some((true, true)),
        other => {
            return Err(field(
                "tls_server_config.client_auth_type",
                format!(
                    "unknown value {other:?} (NoClientCert, RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert)"
                ),
            ));
        }
    };
    if verify.is_none() && !cas.is_empty() {
        return Err(field(
            ca_keys.0,
            "client CAs are set, but client_auth_type is NoClientCert; client certificates would not be checked".into(),
        ));
    }
    if sans.is_some() && !matches!(verify, Some((true, _))) {
        return Err(field(
            "tls_server_config.client_allowed_sans",
            "needs client_auth_type RequireAnyClientCert or RequireAndVerifyClientCert".into(),
        ));
    }
    let builder = match verify {
        None => builder.with_no_client_auth(),
        Some((mandatory, verified)) => {
            let algorithms = provider.signature_verification_algorithms;
            let (inner, anchors) = if verified {
                let (roots, anchors) = if cas.is_empty() {
                    // Go verifies against the system's roots when
                    // ClientCAs is nil, and so does exporter-toolkit.
                    system_roots(field)?
                } else {
                    (cas.clone(), cas.clone())
                };
                let mut store = RootCertStore::empty();
                for ca in roots {
                    store
                        .add(ca)
                        .map_err(|e| field(ca_keys.0, format!("a CA certificate: {e}")))?;
                }
                let mut v = WebPkiClientVerifier::builder_with_provider(
                    Arc::new(store),
                    Arc::clone(&provider),
                );
                if !mandatory {
                    v = v.allow_unauthenticated();
                }
                let v = v.build().map_err(|e| field(ca_keys.0, e.to_string()))?;
                (Some(v), anchors)
            } else {
                (None, Vec::new())
            };
            builder.with_client_cert_verifier(Arc::new(ClientVerifier {
                inner,
                anchors,
                mandatory,
                hint_roots: !cas.is_empty(),
                allowed_sans: sans,
                algorithms,
            }))
        }
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        field(
            "tls_server_config.key_file",
            format!("does not match the certificate: {e}"),
        )
    })?;
    config.ignore_client_order = tls.prefer_server_cipher_suites.unwrap_or(true);
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(config)
}

fn unreachable_key(field: &FieldError<'_>) -> Result<PrivateKeyDer<'static>, WebConfigError> {
    Err(field(
        "tls_server_config.key_file",
        "missing: TLS needs one of key or key_file".into(),
    ))
}

/// The trust store Go's crypto/x509 uses when no CA is configured: the
/// system's (SSL_CERT_FILE, SSL_CERT_DIR, then the distribution's bundle).
type Roots = (Vec<CertificateDer<'static>>, Vec<CertificateDer<'static>>);
fn system_roots(field: &FieldError<'_>) -> Result<Roots, WebConfigError> {
    let found = rustls_native_certs::load_native_certs();
    if found.certs.is_empty() {
        return Err(field(
            "tls_server_config.client_ca_file",
            format!(
                "not set, so client certificates are verified against the system's CA certificates, and none were found ({})",
                found
                    .errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        ));
    }
    Ok((found.certs.clone(), found.certs))
}

/// The ring provider with the configured cipher suites and curves.
fn crypto_provider(tls: &RawTls, field: &FieldError<'_>) -> Result<CryptoProvider, WebConfigError> {
    use rustls::crypto::ring::{cipher_suite as cs, kx_group};
    let mut provider = rustls::crypto::ring::default_provider();
    if let Some(names) = tls.cipher_suites.as_ref().filter(|n| !n.is_empty()) {
        // Go's names for the TLS 1.2 suites rustls has. Go applies
        // cipher_suites to TLS 1.2 only (TLS 1.3's are not configurable), so
        // TLS 1.3 names are accepted and change nothing.
        let tls12 = [
            (
                "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
                cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            ),
            (
                "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
                cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            ),
            (
                "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
                cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            ),
            (
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            ),
            (
                "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
                cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            ),
            (
                "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
                cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
            ),
        ];
        let tls13 = [
            "TLS_AES_128_GCM_SHA256",
            "TLS_AES_256_GCM_SHA384",
            "TLS_CHACHA20_POLY1305_SHA256",
        ];
        // Go knows these (tls.CipherSuites()), rustls does not offer them.
        let go_only = [
            "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
            "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
            "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
            "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
            "TLS_RSA_WITH_AES_128_CBC_SHA",
            "TLS_RSA_WITH_AES_256_CBC_SHA",
            "TLS_RSA_WITH_AES_128_GCM_SHA256",
            "TLS_RSA_WITH_AES_256_GCM_SHA384",
        ];
        let mut wanted = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let key = format!("tls_server_config.cipher_suites[{i}]");
            if let Some((_, suite)) = tls12.iter().find(|(n, _)| n == name) {
                wanted.push(*suite);
            } else if tls13.contains(&name.as_str()) {
            } else if go_only.contains(&name.as_str()) {
                return Err(field(
                    &key,
                    format!(
                        "{name} is not offered by rustls, kubedf's TLS library (CBC and RSA key exchange suites are not); it offers {}",
                        tls12.map(|(n, _)| n).join(", ")
                    ),
                ));
            } else {
                return Err(field(&key, format!("unknown cipher: {name}")));
            }
        }
        provider.cipher_suites.retain(|s| match s {
            rustls::SupportedCipherSuite::Tls13(_) => true,
            rustls::SupportedCipherSuite::Tls12(_) => wanted.contains(s),
        });
    }
    if let Some(names) = tls.curve_preferences.as_ref().filter(|n| !n.is_empty()) {
        let mut groups = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let key = format!("tls_server_config.curve_preferences[{i}]");
            let group: &'static dyn rustls::crypto::SupportedKxGroup = match name.as_str() {
                "X25519" => kx_group::X25519,
                "CurveP256" => kx_group::SECP256R1,
                "CurveP384" => kx_group::SECP384R1,
                "CurveP521" => {
                    return Err(field(
                        &key,
                        "CurveP521 is not offered by rustls' ring backend, kubedf's TLS library; it offers X25519, CurveP256 and CurveP384".into(),
                    ));
                }
                other => return Err(field(&key, format!("unknown curve: {other}"))),
            };
            if !groups
                .iter()
                .any(|g: &&dyn rustls::crypto::SupportedKxGroup| g.name() == group.name())
            {
                groups.push(group);
            }
        }
        provider.kx_groups = groups;
    }
    Ok(provider)
}

/// min_version and max_version. rustls speaks TLS 1.2 and 1.3: a minimum of
/// TLS10 or TLS11 is served as TLS 1.2 (with a warning); a maximum below 1.2
/// is an error, since rustls cannot do it.
fn protocol_versions(
    tls: &RawTls,
    field: &FieldError<'_>,
) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, WebConfigError> {
    let rank = |v: Option<&str>, name: &str, default: u8| -> Result<u8, WebConfigError> {
        match v {
            None => Ok(default),
            Some("TLS10") => Ok(10),
            Some("TLS11") => Ok(11),
            Some("TLS12") => Ok(12),
            Some("TLS13") => Ok(13),
            Some(other) => Err(field(
                name,
                format!("unknown TLS version: {other} (TLS10, TLS11, TLS12, TLS13)"),
            )),
        }
    };
    let min = rank(set(&tls.min_version), "tls_server_config.min_version", 12)?;
    let max = rank(set(&tls.max_version), "tls_server_config.max_version", 13)?;
    if max < 12 {
        return Err(field(
            "tls_server_config.max_version",
            "rustls, kubedf's TLS library, speaks only TLS 1.2 and 1.3".into(),
        ));
    }
    if min > max {
        return Err(field(
            "tls_server_config.min_version",
            "is above max_version; every handshake would fail".into(),
        ));
    }
    if min < 12 {
        warn!(
            "web config: tls_server_config.min_version TLS1{} is served as TLS12: rustls has no older TLS",
            min - 10
        );
    }
    Ok(
        [(12, &rustls::version::TLS12), (13, &rustls::version::TLS13)]
            .into_iter()
            .filter(|(v, _)| (min.max(12)..=max).contains(v))
            .map(|(_, p)| p)
            .collect(),
    )
}

/// A header's value as exporter-toolkit reads it: yaml.v2 decodes any
/// scalar into a Go string, so `X-XSS-Protection: 1` is the string "1" and
/// a null is "". The text is the number or boolean as parsed (a YAML `1.0`
/// is "1.0", a `1e3` "1000.0", where yaml.v2 would keep the written text);
/// a list or a mapping is no header value.
fn header_text(value: serde_json::Value) -> Result<String, String> {
    use serde_json::Value;
    match value {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Null => Ok(String::new()),
        Value::Array(_) => Err("expected a string, got a list".into()),
        Value::Object(_) => Err("expected a string, got a mapping".into()),
    }
}

fn headers(
    raw: BTreeMap<String, serde_json::Value>,
    field: &FieldError<'_>,
) -> Result<Vec<(HeaderName, HeaderValue)>, WebConfigError> {
    let mut out = Vec::new();
    for (name, value) in raw {
        let key = format!("http_server_config.headers.{name}");
        let value = header_text(value).map_err(|e| field(&key, e))?;
        let Some((_, allowed)) = ALLOWED_HEADERS.iter().find(|(n, _)| *n == name) else {
            return Err(field(
                &key,
                format!(
                    "HTTP header {name:?} can not be configured (only {})",
                    ALLOWED_HEADERS.map(|(n, _)| n).join(", ")
                ),
            ));
        };
        if !allowed.is_empty() && !allowed.contains(&value.as_str()) {
            return Err(field(
                &key,
                format!("invalid value {value:?}, expected one of {allowed:?}"),
            ));
        }
        let header_name =
            HeaderName::from_bytes(name.as_bytes()).map_err(|e| field(&key, e.to_string()))?;
        let header_value = HeaderValue::from_str(&value)
            .map_err(|e| field(&key, format!("not a valid header value: {e}")))?;
        out.push((header_name, header_value));
    }
    Ok(out)
}

fn rate_limit(
    raw: &RawRateLimit,
    field: &FieldError<'_>,
) -> Result<Option<RateLimit>, WebConfigError> {
    let interval = match &raw.interval {
        None | Some(serde_json::Value::Null) => 0,
        Some(serde_json::Value::Number(n)) => n.as_i64().ok_or_else(|| {
            field(
                "rate_limit.interval",
                format!("{n} is not a whole number of nanoseconds"),
            )
        })?,
        Some(serde_json::Value::String(s)) => {
            go_duration_nanos(s).map_err(|e| field("rate_limit.interval", format!("{s:?}: {e}")))?
        }
        Some(other) => {
            return Err(field(
                "rate_limit.interval",
                format!("expected a duration such as 1s, got {other}"),
            ));
        }
    };
    // exporter-toolkit: no limiter when interval is 0; rate.Every of a
    // negative interval is an infinite rate, so no limit either.
    if interval <= 0 {
        return Ok(None);
    }
    let burst = raw.burst.unwrap_or(0).max(0);
    if burst == 0 {
        warn!(
            "web config: rate_limit.burst is 0, so every request is refused with 429 (as in exporter-toolkit)"
        );
    }
    Ok(Some(RateLimit::new(
        Duration::from_nanos(interval.unsigned_abs()),
        u64::try_from(burst).unwrap_or(0),
    )))
}

/// Go's `time.ParseDuration`: `[-+]` then one or more `<decimal><unit>`
/// (ns, us, µs, ms, s, m, h), or `0`. Returns nanoseconds.
pub fn go_duration_nanos(s: &str) -> Result<i64, String> {
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err("not a duration (e.g. 1s, 500ms, 1m30s)".into());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err("not a duration (e.g. 1s, 500ms, 1m30s)".into());
        }
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err("missing unit (ns, us, ms, s, m, h)".into()),
            other => return Err(format!("unknown unit {other:?} (ns, us, ms, s, m, h)")),
        };
        let value: f64 = num
            .parse()
            .map_err(|_| "not a duration (e.g. 1s, 500ms, 1m30s)".to_owned())?;
        total += value * scale;
        rest = tail;
    }
    if total > i64::MAX as f64 {
        return Err("out of range".into());
    }
    // Truncation to whole nanoseconds, as Go keeps them.
    let nanos = total as i64;
    Ok(if neg { -nanos } else { nanos })
}

/// A token bucket as Go's `rate.NewLimiter(rate.Every(interval), burst)`:
/// one token per interval, at most `burst`, full at start; a request
/// without a token gets 429. One bucket for the whole server, as in
/// exporter-toolkit.
#[derive(Debug)]
pub struct RateLimit {
    interval: Duration,
    burst: u64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimit {
    pub fn new(interval: Duration, burst: u64) -> RateLimit {
        RateLimit {
            interval,
            burst,
            state: Mutex::new((burst as f64, Instant::now())),
        }
    }

    /// Takes a token if there is one.
    pub fn allow(&self) -> bool {
        self.allow_at(Instant::now())
    }

    fn allow_at(&self, now: Instant) -> bool {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (tokens, last) = &mut *state;
        let elapsed = now.saturating_duration_since(*last);
        *last = now.max(*last);
        let refill = elapsed.as_secs_f64() / self.interval.as_secs_f64();
        *tokens = (*tokens + refill).min(self.burst as f64);
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Client certificates as Go's crypto/tls checks them for exporter-toolkit:
/// verified against the CAs when `inner` is set (the Verify* types), only
/// parsed otherwise (Request/RequireAny), then `client_allowed_sans`.
#[derive(Debug)]
struct ClientVerifier {
    inner: Option<Arc<dyn ClientCertVerifier>>,
    /// The trust anchors, to accept a certificate that is itself one of
    /// them: Go trusts a certificate found in its root pool as a chain of
    /// one, where webpki refuses a CA certificate as an end entity
    /// (CaUsedAsEndEntity), as for a self-signed client certificate with
    /// CA:TRUE listed as its own CA.
    anchors: Vec<CertificateDer<'static>>,
    mandatory: bool,
    /// Whether the CAs came from the file (named in the certificate
    /// request) rather than from the system.
    hint_roots: bool,
    allowed_sans: Option<Vec<String>>,
    algorithms: WebPkiSupportedAlgorithms,
}

fn bad_cert(message: String) -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
        Arc::new(std::io::Error::other(message)),
    )))
}

impl ClientVerifier {
    /// Go's checks of a certificate that is itself a root: within its
    /// validity period, and an extended key usage (if any) allowing client
    /// authentication.
    fn anchor_is_valid(
        cert: &x509_parser::certificate::X509Certificate<'_>,
        now: UnixTime,
    ) -> bool {
        let Ok(secs) = i64::try_from(now.as_secs()) else {
            return false;
        };
        let Ok(now) = x509_parser::time::ASN1Time::from_timestamp(secs) else {
            return false;
        };
        if !cert.validity().is_valid_at(now) {
            return false;
        }
        match cert.extended_key_usage() {
            Ok(None) => true,
            Ok(Some(eku)) => eku.value.any || eku.value.client_auth,
            Err(_) => false,
        }
    }

    /// The SAN values Go compares with client_allowed_sans: DNS names,
    /// e-mail addresses, IP addresses and URIs, as strings.
    fn sans(cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
        use x509_parser::extensions::GeneralName;
        let Ok(Some(san)) = cert.subject_alternative_name() else {
            return Vec::new();
        };
        san.value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(s) | GeneralName::RFC822Name(s) | GeneralName::URI(s) => {
                    Some((*s).to_owned())
                }
                GeneralName::IPAddress(b) => match b.len() {
                    4 => <[u8; 4]>::try_from(*b)
                        .ok()
                        .map(|a| IpAddr::from(a).to_string()),
                    16 => <[u8; 16]>::try_from(*b).ok().map(|a| {
                        let v6 = std::net::Ipv6Addr::from(a);
                        // Go prints an IPv4-mapped address as IPv4.
                        v6.to_ipv4_mapped()
                            .map_or_else(|| v6.to_string(), |v4| v4.to_string())
                    }),
                    _ => None,
                },
                _ => None,
            })
            .collect()
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Go names the configured CAs in its certificate request, and none
        // when it falls back to the system's roots.
        match &self.inner {
            Some(v) if self.hint_roots => v.root_hint_subjects(),
            _ => &[],
        }
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let (_, cert) = x509_parser::parse_x509_certificate(end_entity)
            .map_err(|e| bad_cert(format!("cannot parse the client certificate: {e}")))?;
        if let Some(inner) = &self.inner
            && let Err(e) = inner.verify_client_cert(end_entity, intermediates, now)
        {
            let is_anchor = self
                .anchors
                .iter()
                .any(|a| a.as_ref() == end_entity.as_ref());
            if !(is_anchor && Self::anchor_is_valid(&cert, now)) {
                return Err(e);
            }
        }
        if let Some(allowed) = &self.allowed_sans {
            let found = Self::sans(&cert);
            if !found.iter().any(|s| allowed.contains(s)) {
                return Err(bad_cert(format!(
                    "could not find allowed SANs in client cert, found: {found:?}"
                )));
            }
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Reads the config file. Developer "config"'s shared reader (regular files
/// only, size cap) replaces this when it lands in src/yaml.rs.
/// A fingerprint of the config file and the files it names, to notice a change.
pub fn fingerprint(path: &Path) -> Vec<Option<Vec<u8>>> {
    WebConfig::watched_files(path)
        .iter()
        .map(|f| std::fs::read(f).ok())
        .collect()
}

/// The outcome of reloads, exposed as `kubedf_web_config_*`.
#[derive(Debug, Default)]
pub struct ReloadStatus {
    last_ok: AtomicBool,
    last_success: AtomicU64,
    failures: AtomicU64,
}

impl ReloadStatus {
    /// The status right after the config was loaded at start.
    pub fn loaded() -> ReloadStatus {
        let s = ReloadStatus::default();
        s.succeeded();
        s
    }

    pub fn succeeded(&self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        self.last_success.store(now, Ordering::Relaxed);
        self.last_ok.store(true, Ordering::Relaxed);
    }

    /// A reload that failed validation or was refused as a downgrade.
    pub fn failed(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.last_ok.store(false, Ordering::Relaxed);
    }

    /// (last reload successful, unix time of the last success, failed reloads).
    pub fn values(&self) -> (bool, u64, u64) {
        (
            self.last_ok.load(Ordering::Relaxed),
            self.last_success.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
        )
    }
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
            (
                "tls_server_config:\n  client_auth_type: Sometimes\n",
                "cert_file",
            ),
            ("tls_sever_config: {}\n", "tls_sever_config"),
            ("basic_auth_users: [1]\n", "basic_auth_users"),
            (": : :\n", "web.yml"),
            (
                "http_server_config:\n  headers:\n    X-Powered-By: kubedf\n",
                "http_server_config.headers.X-Powered-By",
            ),
            (
                "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
                "http_server_config.headers.X-Frame-Options",
            ),
            ("http_server_config:\n  http2: maybe\n", "http2"),
            (
                "http_server_config:\n  headers:\n    X-XSS-Protection: [1]\n",
                "http_server_config.headers.X-XSS-Protection: expected a string, got a list",
            ),
            (
                "http_server_config:\n  headers:\n    Content-Security-Policy: {default-src: self}\n",
                "http_server_config.headers.Content-Security-Policy: expected a string, got a mapping",
            ),
            (
                "http_server_config:\n  headers:\n    X-Frame-Options: 1\n",
                "http_server_config.headers.X-Frame-Options: invalid value \"1\"",
            ),
            ("rate_limit:\n  interval: soon\n", "rate_limit.interval"),
            ("rate_limit:\n  burst: 1.5\n", "rate_limit.burst"),
            ("rate_limit:\n  every: 1s\n", "every"),
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

    #[test]
    fn a_header_written_as_a_yaml_number_or_boolean_is_its_text() {
        // exporter-toolkit's headers are a map[string]string: yaml.v2 reads
        // `1` into the string "1".
        let dir = tempfile::tempdir().unwrap();
        let cfg = WebConfig::load(&write(
            dir.path(),
            "http_server_config:\n  headers:\n    X-XSS-Protection: 1\n    Strict-Transport-Security: true\n    Content-Security-Policy:\n",
        ))
        .unwrap();
        let got: Vec<(&str, &str)> = cfg
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
            .collect();
        assert_eq!(
            got,
            [
                ("content-security-policy", ""),
                ("strict-transport-security", "true"),
                ("x-xss-protection", "1"),
            ]
        );
        assert_eq!(header_text(serde_json::json!(0)).unwrap(), "0");
        assert_eq!(
            header_text(serde_json::json!("1; mode=block")).unwrap(),
            "1; mode=block"
        );
    }

    #[test]
    fn http_headers_and_rate_limits_as_exporter_toolkit() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = WebConfig::load(&write(
            dir.path(),
            "http_server_config:\n  http2: false\n  headers:\n    X-Frame-Options: deny\n    Content-Security-Policy: \"default-src 'self'\"\nrate_limit:\n  burst: 2\n  interval: 1m30s\n",
        ))
        .unwrap();
        assert!(!cfg.http2);
        assert_eq!(cfg.headers.len(), 2);
        let limit = cfg.rate_limit.as_ref().unwrap();
        assert_eq!(limit.interval, Duration::from_secs(90));
        let t0 = Instant::now();
        assert!(limit.allow_at(t0) && limit.allow_at(t0));
        assert!(!limit.allow_at(t0), "burst spent");
        assert!(!limit.allow_at(t0 + Duration::from_secs(89)));
        assert!(
            limit.allow_at(t0 + Duration::from_secs(91)),
            "one token per interval"
        );
        // interval 0, or negative, means no limit; nanoseconds as integers.
        for text in [
            "rate_limit:\n  burst: 5\n",
            "rate_limit:\n  interval: -1s\n",
        ] {
            assert!(
                WebConfig::load(&write(dir.path(), text))
                    .unwrap()
                    .rate_limit
                    .is_none()
            );
        }
        let cfg =
            WebConfig::load(&write(dir.path(), "rate_limit:\n  interval: 1000000000\n")).unwrap();
        let limit = cfg.rate_limit.unwrap();
        assert_eq!(limit.interval, Duration::from_secs(1));
        assert!(
            !limit.allow(),
            "burst 0 refuses everything, as Go's limiter does"
        );
    }

    #[test]
    fn go_durations() {
        for (s, ns) in [
            ("0", 0),
            ("1s", 1_000_000_000),
            ("1.5s", 1_500_000_000),
            ("1m30s", 90_000_000_000),
            ("-2ms", -2_000_000),
            ("3µs", 3_000),
            ("1h2m3s4ms5us6ns", 3_723_004_005_006),
        ] {
            assert_eq!(go_duration_nanos(s), Ok(ns), "{s}");
        }
        for s in ["", "1", "s", "1x", "1..2s", "-", "1s2"] {
            assert!(go_duration_nanos(s).is_err(), "{s}");
        }
    }

    #[test]
    fn downgrades_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let hash = bcrypt::hash("x", 4).unwrap();
        let auth = WebConfig::load(&write(
            dir.path(),
            &format!("basic_auth_users:\n  prom: '{hash}'\n"),
        ))
        .unwrap();
        let plain = WebConfig::plain();
        assert!(auth.downgrade(&plain).unwrap().contains("basic_auth_users"));
        assert_eq!(plain.downgrade(&auth), None, "adding auth is fine");
        assert_eq!(auth.downgrade(&auth), None);
    }

    fn yaml_value() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            Just("".to_owned()),
            Just("null".to_owned()),
            Just("{}".to_owned()),
            Just("[]".to_owned()),
            Just("[1, x]".to_owned()),
            Just("true".to_owned()),
            Just("-1".to_owned()),
            Just("1.5".to_owned()),
            Just("'1s'".to_owned()),
            Just("TLS13".to_owned()),
            Just("[X25519, CurveP521]".to_owned()),
            Just("[TLS_AES_128_GCM_SHA256]".to_owned()),
            Just("{cert_file: a, key_file: b}".to_owned()),
            Just("{X-Frame-Options: deny}".to_owned()),
            Just("{burst: 1, interval: 1h}".to_owned()),
            Just("{u: '$2y$04$abcdefghijklmnopqrstuu'}".to_owned()),
            "[ -~]{0,16}".prop_map(|s| format!("{s:?}")),
        ]
    }

    proptest::proptest! {
        #[test]
        fn any_text_is_a_config_or_an_error_naming_the_file(text in "\\PC{0,200}") {
            if let Err(e) = WebConfig::parse(Path::new("/nonexistent/web.yml"), &text) {
                proptest::prop_assert!(e.to_string().contains("/nonexistent/web.yml"), "{}", e);
            }
        }

        #[test]
        fn any_mix_of_keys_is_a_config_or_an_error_naming_file_and_key(
            entries in proptest::collection::vec(
                (
                    proptest::sample::select(vec![
                        "tls_server_config", "http_server_config", "rate_limit",
                        "basic_auth_users", "bogus",
                    ]),
                    proptest::sample::select(vec![
                        "", "cert_file", "key", "client_auth_type", "cipher_suites",
                        "curve_preferences", "min_version", "headers", "http2", "burst",
                        "interval", "client_allowed_sans", "nope",
                    ]),
                    yaml_value(),
                ),
                0..6,
            )
        ) {
            let mut text = String::new();
            for (top, sub, value) in &entries {
                if sub.is_empty() {
                    text.push_str(&format!("{top}: {value}\n"));
                } else {
                    text.push_str(&format!("{top}:\n  {sub}: {value}\n"));
                }
            }
            match WebConfig::parse(Path::new("/nonexistent/web.yml"), &text) {
                Ok(_) => {}
                Err(e) => {
                    let msg = e.to_string();
                    proptest::prop_assert!(msg.contains("/nonexistent/web.yml"), "{}", msg);
                    if let WebConfigError::Field { field, .. } = &e {
                        proptest::prop_assert!(!field.is_empty(), "{}", msg);
                    }
                }
            }
        }

        #[test]
        fn go_durations_never_panic(s in "[-+0-9.a-zµ]{0,12}") {
            let _ = go_duration_nanos(&s);
        }
    }
}
