//! The TLS section of the web config (`tls_server_config`) as a rustls
//! server configuration: certificates and key from files or inline PEM, the
//! client-certificate policy (the five `client_auth_type`s, the CAs or the
//! system's roots, `client_allowed_sans`), cipher suites, curves and
//! versions, each checked the way exporter-toolkit (Go's crypto/tls) checks
//! them, or refused naming the key where rustls cannot do what it asks.
//! The handshake itself is [`super::listen`]'s.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::UnixTime;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use tracing::warn;

use super::web_config::{FieldError, WebConfigError, set};

/// exporter-toolkit's `TLSConfig`. Go's zero values mean "unset", so an
/// empty string is the same as a missing key.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
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

/// exporter-toolkit's `IsEnabled`: any TLS key set turns TLS on (and then
/// a certificate and key are required).
pub(super) fn tls_enabled(tls: &RawTls) -> bool {
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

/// The rustls server configuration `tls_server_config` describes: the
/// server's certificate and key, the cipher suites, curves and versions,
/// the client-certificate policy, and ALPN (h2 only when `http2`).
pub(super) fn tls_config(
    base: &Path,
    tls: &RawTls,
    http2: bool,
    field: &FieldError<'_>,
) -> Result<rustls::ServerConfig, WebConfigError> {
    let (certs, key) = identity(base, tls, field)?;
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
    let builder = match client_verifier(base, tls, &provider, field)? {
        None => builder.with_no_client_auth(),
        Some(verifier) => builder.with_client_cert_verifier(Arc::new(verifier)),
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

/// The server's certificate chain and private key, each from its file or
/// else inline (both required once TLS is on).
fn identity(
    base: &Path,
    tls: &RawTls,
    field: &FieldError<'_>,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), WebConfigError> {
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
        // Refused above.
        (None, None) => {
            return Err(field(
                "tls_server_config.key_file",
                "missing: TLS needs one of key or key_file".into(),
            ));
        }
    };
    Ok((certs, key))
}

/// What `client_auth_type` asks of a client certificate: whether one is
/// required, and whether it is verified against the CAs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ClientAuth {
    mandatory: bool,
    verified: bool,
}

/// exporter-toolkit's client auth types (Go's `tls.ClientAuthType` names);
/// None for `NoClientCert`, the default.
fn client_auth(tls: &RawTls, field: &FieldError<'_>) -> Result<Option<ClientAuth>, WebConfigError> {
    let auth = |mandatory, verified| {
        Ok(Some(ClientAuth {
            mandatory,
            verified,
        }))
    };
    match set(&tls.client_auth_type).unwrap_or("NoClientCert") {
        "NoClientCert" => Ok(None),
        "RequestClientCert" => auth(false, false),
        "RequireAnyClientCert" | "RequireClientCert" => auth(true, false),
        "VerifyClientCertIfGiven" => auth(false, true),
        "RequireAndVerifyClientCert" => auth(true, true),
        other => Err(field(
            "tls_server_config.client_auth_type",
            format!(
                "unknown value {other:?} (NoClientCert, RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert)"
            ),
        )),
    }
}

/// The client-certificate verifier, or None when client certificates are
/// not asked for. Settings that would check nothing (CAs without a client
/// auth type that verifies, allowed SANs without a required certificate)
/// are errors rather than silently ignored.
fn client_verifier(
    base: &Path,
    tls: &RawTls,
    provider: &Arc<CryptoProvider>,
    field: &FieldError<'_>,
) -> Result<Option<ClientVerifier>, WebConfigError> {
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
    let auth = client_auth(tls, field)?;
    if auth.is_none() && !cas.is_empty() {
        return Err(field(
            ca_keys.0,
            "client CAs are set, but client_auth_type is NoClientCert; client certificates would not be checked".into(),
        ));
    }
    if sans.is_some() && !auth.is_some_and(|a| a.mandatory) {
        return Err(field(
            "tls_server_config.client_allowed_sans",
            "needs client_auth_type RequireAnyClientCert or RequireAndVerifyClientCert".into(),
        ));
    }
    let Some(ClientAuth {
        mandatory,
        verified,
    }) = auth
    else {
        return Ok(None);
    };
    let (inner, anchors) = if verified {
        let (roots, anchors) = if cas.is_empty() {
            // Go verifies against the system's roots when ClientCAs is nil,
            // and so does exporter-toolkit.
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
        let mut v =
            WebPkiClientVerifier::builder_with_provider(Arc::new(store), Arc::clone(provider));
        if !mandatory {
            v = v.allow_unauthenticated();
        }
        let v = v.build().map_err(|e| field(ca_keys.0, e.to_string()))?;
        (Some(v), anchors)
    } else {
        (None, Vec::new())
    };
    Ok(Some(ClientVerifier {
        inner,
        anchors,
        mandatory,
        hint_roots: !cas.is_empty(),
        allowed_sans: sans,
        algorithms: provider.signature_verification_algorithms,
    }))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn field(field: &str, message: String) -> WebConfigError {
        WebConfigError::Field {
            path: "web.yml".into(),
            field: field.to_owned(),
            message,
        }
    }

    #[test]
    fn client_auth_types_as_go_names_them() {
        let auth = |name: &str| {
            let tls = RawTls {
                client_auth_type: Some(name.to_owned()),
                ..RawTls::default()
            };
            client_auth(&tls, &field).map(|a| a.map(|a| (a.mandatory, a.verified)))
        };
        assert_eq!(auth("").unwrap(), None, "empty is Go's zero value: unset");
        assert_eq!(auth("NoClientCert").unwrap(), None);
        assert_eq!(auth("RequestClientCert").unwrap(), Some((false, false)));
        assert_eq!(auth("RequireAnyClientCert").unwrap(), Some((true, false)));
        assert_eq!(auth("RequireClientCert").unwrap(), Some((true, false)));
        assert_eq!(
            auth("VerifyClientCertIfGiven").unwrap(),
            Some((false, true))
        );
        assert_eq!(
            auth("RequireAndVerifyClientCert").unwrap(),
            Some((true, true))
        );
        let err = auth("Sometimes").unwrap_err().to_string();
        assert!(
            err.contains("tls_server_config.client_auth_type") && err.contains("Sometimes"),
            "{err}"
        );
    }

    #[test]
    fn allowed_sans_without_a_required_certificate_are_refused() {
        for name in [
            "NoClientCert",
            "RequestClientCert",
            "VerifyClientCertIfGiven",
        ] {
            let tls = RawTls {
                client_auth_type: Some(name.to_owned()),
                client_allowed_sans: Some(vec!["prometheus".into()]),
                ..RawTls::default()
            };
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let err = client_verifier(Path::new("."), &tls, &provider, &field)
                .err()
                .unwrap_or_else(|| panic!("{name}: accepted"))
                .to_string();
            assert!(err.contains("client_allowed_sans"), "{name}: {err}");
        }
    }
}
