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
//! the key (the README lists each case). This file parses and validates;
//! the TLS section is built by [`super::tls`], the file is re-read by
//! [`super::reload`], and [`WebConfig::downgrade`] says when a new file would
//! weaken what is in force (TLS off, basic auth dropped), in which case the
//! reload is refused.

use std::collections::BTreeMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::http::{HeaderName, HeaderValue};
use serde::Deserialize;
use thiserror::Error;
use tracing::warn;

use super::guard::RateLimit;
use super::tls::{RawTls, tls_config, tls_enabled};
use crate::kubelet::duration::parse_go_duration;
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

pub(super) fn set(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.is_empty())
}

/// Makes the error for a field of the file being parsed.
pub(super) type FieldError<'a> = dyn Fn(&str, String) -> WebConfigError + 'a;

/// The response headers exporter-toolkit lets a web config set, with the
/// values it allows (none listed: any value).
const ALLOWED_HEADERS: [(&str, &[&str]); 5] = [
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

/// The web config in force, swapped by a reload.
pub type WebConfigHandle = Arc<ArcSwap<WebConfig>>;

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
            parse_go_duration(s).map_err(|e| field("rate_limit.interval", e.to_string()))?
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
        let t0 = std::time::Instant::now();
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

    }
}
