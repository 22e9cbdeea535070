//! `--web.config.file`: TLS with client certificates and basic auth, checked
//! with real peers (openssl-made certificates, curl as the scraper), and
//! reloading without a restart.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use testkit::tls::{curl, make_certs, openssl};
use testkit::*;

fn write_config(path: &Path, text: &str) {
    // Write then rename, as config management does, so kubedf never reads half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write web config");
    std::fs::rename(&tmp, path).expect("rename web config");
}

#[test]
fn tls_client_certificates_and_basic_auth() {
    let test = "tls_client_certificates_and_basic_auth";
    if !tls_tools(test) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    make_certs(d);
    let hash = bcrypt::hash("s3cret", 4).expect("bcrypt");
    let config: PathBuf = d.join("web.yml");
    let tls = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n  min_version: TLS12\n";
    write_config(
        &config,
        &format!("{tls}basic_auth_users:\n  prometheus: '{hash}'\n"),
    );

    let mut served = kubedf!().serve(&[
        "--web.config.file",
        config.to_str().expect("utf-8"),
        "--kubelet.root-dir",
        d.to_str().expect("utf-8"),
        "--cri.endpoint",
        NO_RUNTIME,
    ]);
    let https = format!("https://{}/metrics", served.addr);
    let http_url = format!("http://{}/metrics", served.addr);
    let with_cert = [
        "--cacert",
        "ca.crt",
        "--cert",
        "client.crt",
        "--key",
        "client.key",
    ];

    // Plain HTTP to a TLS port is refused.
    let (code, status, _) = curl(d, &http_url, &[]);
    assert!(code != 0 || status != 200, "plain HTTP answered {status}");
    // No client certificate: the handshake fails.
    let (code, _, _) = curl(
        d,
        &https,
        &["--cacert", "ca.crt", "-u", "prometheus:s3cret"],
    );
    assert_ne!(code, 0, "a client without a certificate got through");
    // Right certificate, no or wrong password: 401.
    let (code, status, _) = curl(d, &https, &with_cert);
    assert_eq!((code, status), (0, 401));
    let mut wrong = with_cert.to_vec();
    wrong.extend(["-u", "prometheus:guess"]);
    assert_eq!(curl(d, &https, &wrong).1, 401);
    // Right certificate and password: the exposition.
    let mut right = with_cert.to_vec();
    right.extend(["-u", "prometheus:s3cret"]);
    let (code, status, body) = curl(d, &https, &right);
    assert_eq!((code, status), (0, 200));
    // curl asks for no format: the text format, which ends with kubedf_build_info.
    assert!(
        body.contains("kubedf_nodefs_capacity_bytes") && body.contains("\nkubedf_build_info{"),
        "{body}"
    );
    // Probes need no password (still TLS with a client certificate).
    assert_eq!(
        curl(d, &format!("https://{}/healthz", served.addr), &with_cert).1,
        200
    );

    // A broken file is refused and the config in force stays.
    write_config(
        &config,
        "tls_server_config:\n  cert_file: missing.crt\n  key_file: server.key\n",
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while !served.log_text().contains("web config not reloaded") {
        assert!(
            Instant::now() < deadline,
            "no reload error logged:\n{}",
            served.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        served.log_text().contains("missing.crt"),
        "{}",
        served.log_text()
    );
    assert_eq!(
        curl(d, &https, &right).1,
        200,
        "the previous config still serves"
    );
    assert_eq!(
        curl(d, &https, &with_cert).1,
        401,
        "and still requires the password"
    );

    // A new password takes effect without a restart.
    let new_hash = bcrypt::hash("n3w", 4).expect("bcrypt");
    write_config(
        &config,
        &format!("{tls}basic_auth_users:\n  prometheus: '{new_hash}'\n"),
    );
    let mut renewed = with_cert.to_vec();
    renewed.extend(["-u", "prometheus:n3w"]);
    let deadline = Instant::now() + Duration::from_secs(15);
    while curl(d, &https, &renewed).1 != 200 {
        assert!(
            Instant::now() < deadline,
            "reload never took effect:\n{}",
            served.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(curl(d, &https, &right).1, 401, "the old password is gone");
    assert!(served.log_text().contains("web config reloaded"));
    assert!(served.terminate());
}

#[test]
fn a_bad_web_config_is_a_startup_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("web.yml");
    std::fs::write(&config, "basic_auth_users:\n  prometheus: not-a-hash\n").expect("write");
    let out = kubedf!().run(&[
        "serve",
        "--web.listen-address",
        "127.0.0.1:0",
        "--web.config.file",
        config.to_str().expect("utf-8"),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("web.yml") && stderr.contains("basic_auth_users.prometheus"),
        "{stderr}"
    );
}

/// A self-signed client certificate with CA:TRUE (self.crt, self.key), as
/// people make for a single scraper.
fn make_self_signed_ca_client(dir: &Path) {
    std::fs::write(
        dir.join("self.cnf"),
        "[req]\ndistinguished_name=dn\nx509_extensions=v3\nprompt=no\n[dn]\nCN=self-signed scraper\n[v3]\nbasicConstraints=critical,CA:TRUE\nkeyUsage=digitalSignature,keyCertSign\n",
    )
    .expect("write self.cnf");
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-config",
            "self.cnf",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "self.key",
            "-out",
            "self.crt",
            "-days",
            "2",
        ],
    );
}

fn tls_tools(test: &str) -> bool {
    prerequisites(test, need_tools(&["openssl", "curl"]))
}

fn base_args(d: &Path, config: &Path) -> Vec<String> {
    vec![
        "--web.config.file".into(),
        config.to_str().expect("utf-8").into(),
        "--kubelet.root-dir".into(),
        d.to_str().expect("utf-8").into(),
        "--cri.endpoint".into(),
        NO_RUNTIME.into(),
    ]
}

fn start(d: &Path, config: &Path, env: &[(&str, &str)]) -> Served {
    let args = base_args(d, config);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    kubedf!().serve_with(&[], env, &args)
}

/// Rewrites the config as config management and editors do: in place, so
/// that kubedf may see it empty or half-written.
fn rewrite_in_place(d: &Path, config: &Path, text: &str) {
    if text.is_empty() {
        let st = Command::new("sh")
            .arg("-c")
            .arg(format!(": > '{}'", config.display()))
            .current_dir(d)
            .status()
            .expect("sh");
        assert!(st.success());
    } else {
        std::fs::write(config, text).expect("rewrite web config");
    }
}

fn count(served: &Served, needle: &str) -> usize {
    served.log_text().matches(needle).count()
}

/// Waits until the log says `needle` once more than `before` times.
fn wait_log(served: &Served, needle: &str, before: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(served, needle) <= before {
        assert!(
            Instant::now() < deadline,
            "waited for {needle:?}:\n{}",
            served.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_reload_never_turns_tls_off_or_drops_basic_auth() {
    if !tls_tools("a_reload_never_turns_tls_off_or_drops_basic_auth") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    make_certs(d);
    let hash = bcrypt::hash("s3cret", 4).expect("bcrypt");
    let config = d.join("web.yml");
    let tls = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n";
    let good = format!("{tls}basic_auth_users:\n  prometheus: '{hash}'\n");
    write_config(&config, &good);
    let served = start(d, &config, &[]);
    let https = format!("https://{}/metrics", served.addr);
    let http_url = format!("http://{}/metrics", served.addr);
    let creds = ["--cacert", "ca.crt", "-u", "prometheus:s3cret"];
    let (_, status, body) = curl(d, &https, &creds);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        number(&body, "kubedf_web_config_last_reload_successful", &[]),
        Some(1.0)
    );
    assert_eq!(
        number(&body, "kubedf_web_config_reloads_failed_total", &[]),
        Some(0.0)
    );

    let downgrades = [
        String::new(),
        "# nothing but a comment\n".to_owned(),
        "tls_server_config:\nbasic_auth_users:\n".to_owned(),
        format!("tls_server_config:\nbasic_auth_users:\n  prometheus: '{hash}'\n"),
        tls.to_owned(),
        format!("{tls}basic_auth_users: {{}}\n"),
    ];
    for (i, text) in downgrades.iter().enumerate() {
        let before = count(&served, "web config not reloaded");
        rewrite_in_place(d, &config, text);
        wait_log(&served, "web config not reloaded", before);
        assert!(
            served.log_text().contains("takes a restart"),
            "{}",
            served.log_text()
        );
        let (code, status, _) = curl(d, &http_url, &[]);
        assert!(
            code != 0 || status != 200,
            "{text:?}: plain HTTP answered {status}"
        );
        assert_eq!(
            curl(d, &https, &["--cacert", "ca.crt"]).1,
            401,
            "{text:?}: no password needed"
        );
        let (_, status, body) = curl(d, &https, &creds);
        assert_eq!(status, 200, "{text:?}");
        assert_eq!(
            number(&body, "kubedf_web_config_last_reload_successful", &[]),
            Some(0.0),
            "{text:?}"
        );
        assert!(
            number(&body, "kubedf_web_config_reloads_failed_total", &[]) >= Some((i + 1) as f64),
            "{text:?}: {body}"
        );
        // And back, so that the next case is a change again.
        let ok_before = count(&served, "web config reloaded");
        rewrite_in_place(d, &config, &good);
        wait_log(&served, "web config reloaded", ok_before);
    }
    let (_, _, body) = curl(d, &https, &creds);
    assert_eq!(
        number(&body, "kubedf_web_config_last_reload_successful", &[]),
        Some(1.0)
    );
}

#[test]
fn a_flood_of_idle_connections_never_locks_scrapers_out() {
    // Under a low file-descriptor limit, as in the finding: 300 idle
    // sockets against the default --web.max-connections (64).
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("utf-8");
    let served = kubedf!().serve_with(
        &["sh", "-c", "ulimit -n 160 && exec \"$0\" \"$@\""],
        &[],
        &["--kubelet.root-dir", d, "--cri.endpoint", NO_RUNTIME],
    );
    let idle: Vec<TcpStream> = (0..300)
        .filter_map(|_| TcpStream::connect(served.addr).ok())
        .collect();
    assert!(idle.len() >= 250, "only {} connections", idle.len());
    std::thread::sleep(Duration::from_millis(500));
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(20))
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    for i in 0..5 {
        let r = client
            .get(served.url("/metrics"))
            .header("Accept", OPENMETRICS_ACCEPT)
            .send()
            .unwrap_or_else(|e| {
                panic!(
                    "scrape {i} with 300 idle sockets open: {e}\n{}",
                    served.log_text()
                )
            });
        assert_eq!(r.status(), 200);
        assert!(r.text().expect("body").ends_with("# EOF\n"));
    }
    assert!(
        served.log_text().contains("--web.max-connections reached"),
        "{}",
        served.log_text()
    );
    drop(idle);
}

#[test]
fn a_client_that_sends_headers_slowly_is_cut_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("utf-8");
    let served = kubedf!().serve(&["--kubelet.root-dir", d, "--cri.endpoint", NO_RUNTIME]);
    let mut slow = TcpStream::connect(served.addr).expect("connect");
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: kubedf\r\n")
        .expect("write");
    // HEADER_READ_TIMEOUT is 10s; the bound is generous.
    slow.set_read_timeout(Some(Duration::from_secs(40)))
        .expect("timeout");
    let mut buf = [0u8; 64];
    let start = Instant::now();
    match slow.read(&mut buf) {
        Ok(0) | Err(_) if start.elapsed() < Duration::from_secs(39) => {}
        other => panic!("a half-sent request was kept open: {other:?}"),
    }
    // Meanwhile scrapes answer.
    assert!(served.scrape_openmetrics().ends_with("# EOF\n"));
}

#[test]
fn bad_telemetry_paths_are_startup_errors_not_panics() {
    for path in [
        "/healthz",
        "/*rest",
        "/:x",
        "/{x}",
        "/{*rest}",
        "/metrics?x=1",
        "/",
        "/stats/summary",
    ] {
        let out = kubedf!().run(&[
            "serve",
            "--web.listen-address",
            "127.0.0.1:0",
            "--web.telemetry-path",
            path,
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{path}: {stderr}");
        assert!(
            stderr.contains("--web.telemetry-path") && stderr.contains(path),
            "{path}: {stderr}"
        );
    }
}

#[test]
fn a_bad_environment_variable_is_named() {
    for (var, value) in [
        ("KUBEDF_WEB_LISTEN_ADDRESS", "nonsense"),
        ("KUBEDF_SAMPLE_INTERVAL", "1ns"),
        ("KUBEDF_WEB_TELEMETRY_PATH", "/{x}"),
    ] {
        let out = Command::new(kubedf!().path())
            .arg("serve")
            .env(var, value)
            .output()
            .expect("run kubedf");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{var}: {stderr}");
        assert!(
            stderr.contains(&format!("environment variable {var}")) && stderr.contains(value),
            "{var}: {stderr}"
        );
    }
}

#[test]
fn exporter_toolkit_http_server_config_and_rate_limit() {
    if !tls_tools("exporter_toolkit_http_server_config_and_rate_limit") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    make_certs(d);
    let indent = |f: &str| {
        std::fs::read_to_string(d.join(f))
            .expect("read pem")
            .lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    };
    // Inline PEM, every header exporter-toolkit allows, and a rate limit.
    let config = d.join("web.yml");
    let text = format!(
        "tls_server_config:\n  cert: |\n{}  key: |\n{}  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_AES_128_GCM_SHA256]\n  curve_preferences: [X25519, CurveP256]\n  prefer_server_cipher_suites: false\n  min_version: TLS12\n  max_version: TLS13\nhttp_server_config:\n  headers:\n    X-Frame-Options: deny\n    X-Content-Type-Options: nosniff\n    Strict-Transport-Security: max-age=31536000\n    X-XSS-Protection: '1; mode=block'\n    Content-Security-Policy: \"default-src 'none'\"\nrate_limit:\n  burst: 4\n  interval: 1h\n",
        indent("server.crt"),
        indent("server.key")
    );
    write_config(&config, &text);
    let served = start(d, &config, &[]);
    let url = format!("https://{}/healthz", served.addr);
    let out = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "10",
            "--cacert",
            "ca.crt",
            "--http2",
            "-D",
            "-",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version}",
        ])
        .arg(&url)
        .current_dir(d)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(
        text.ends_with('2'),
        "h2 over TLS (http2 defaults to true): {text}"
    );
    for h in [
        "x-frame-options: deny",
        "x-content-type-options: nosniff",
        "strict-transport-security: max-age=31536000",
        "x-xss-protection: 1; mode=block",
        "content-security-policy: default-src 'none'",
    ] {
        assert!(text.contains(h), "{h}: {text}");
    }
    // TLS 1.2 with a suite left out of cipher_suites fails; the listed one works.
    let tls12 = |cipher: &str| {
        curl(
            d,
            &url,
            &[
                "--cacert",
                "ca.crt",
                "--tls-max",
                "1.2",
                "--ciphers",
                cipher,
            ],
        )
        .1
    };
    assert_eq!(tls12("ECDHE-ECDSA-AES128-GCM-SHA256"), 200);
    // Four tokens: two spent above (a failed handshake costs none), two
    // more below, and the fifth request is refused.
    assert_ne!(tls12("ECDHE-ECDSA-AES256-GCM-SHA384"), 200);
    assert_eq!(curl(d, &url, &["--cacert", "ca.crt"]).1, 200);
    assert_eq!(curl(d, &url, &["--cacert", "ca.crt"]).1, 200);
    assert_eq!(curl(d, &url, &["--cacert", "ca.crt"]).1, 429);
    drop(served);

    // http2: false serves HTTP/1.1 only.
    write_config(
        &config,
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\nhttp_server_config:\n  http2: false\n",
    );
    let served = start(d, &config, &[]);
    let out = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "10",
            "--cacert",
            "ca.crt",
            "--http2",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version}",
        ])
        .arg(format!("https://{}/healthz", served.addr))
        .current_dir(d)
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1.1");
}

#[test]
fn exporter_toolkit_client_certificates() {
    if !tls_tools("exporter_toolkit_client_certificates") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    make_certs(d);
    make_self_signed_ca_client(d);
    let config = d.join("web.yml");
    let tls = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n";
    // No client_ca_file: verified against the system's roots, as Go does
    // (SSL_CERT_FILE points Go and kubedf alike at a bundle).
    write_config(
        &config,
        &format!("{tls}  client_auth_type: VerifyClientCertIfGiven\n"),
    );
    let ca = d.join("ca.crt");
    let served = start(
        d,
        &config,
        &[("SSL_CERT_FILE", ca.to_str().expect("utf-8"))],
    );
    let url = format!("https://{}/healthz", served.addr);
    let with = |cert: &str| {
        let (crt, key) = (format!("{cert}.crt"), format!("{cert}.key"));
        curl(
            d,
            &url,
            &["--cacert", "ca.crt", "--cert", &crt, "--key", &key],
        )
    };
    assert_eq!(
        curl(d, &url, &["--cacert", "ca.crt"]).1,
        200,
        "no certificate: allowed if not given"
    );
    assert_eq!(with("client").1, 200, "signed by a system root");
    assert_ne!(with("self").0, 0, "not signed by a system root");

    let reload = |text: String| {
        let before = count(&served, "web config reloaded");
        write_config(&config, &text);
        wait_log(&served, "web config reloaded", before);
    };
    // A self-signed CA:TRUE client certificate listed as its own CA.
    reload(format!(
        "{tls}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: self.crt\n"
    ));
    assert_eq!(with("self").1, 200, "{}", served.log_text());
    assert_ne!(with("client").0, 0, "signed by a CA not listed");
    assert_ne!(
        curl(d, &url, &["--cacert", "ca.crt"]).0,
        0,
        "no certificate"
    );

    // client_allowed_sans, matched against the certificate's SANs.
    let sans = |san: &str| {
        format!(
            "{tls}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n  client_allowed_sans: [{san}]\n"
        )
    };
    reload(sans("prometheus.example"));
    assert_eq!(with("client").1, 200);
    reload(sans("other.example"));
    assert_ne!(with("client").0, 0, "SAN not allowed");

    // RequireAnyClientCert: any certificate, not verified.
    reload(format!("{tls}  client_auth_type: RequireAnyClientCert\n"));
    assert_eq!(with("self").1, 200);
    assert_ne!(
        curl(d, &url, &["--cacert", "ca.crt"]).0,
        0,
        "no certificate"
    );
}

#[test]
fn web_config_values_rustls_cannot_serve_are_errors_naming_the_key() {
    if !tls_tools("web_config_values_rustls_cannot_serve_are_errors_naming_the_key") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    make_certs(d);
    let tls = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n";
    let config = d.join("web.yml");
    for (extra, key) in [
        (
            "  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA]\n",
            "tls_server_config.cipher_suites[0]",
        ),
        (
            "  cipher_suites: [TLS_FANCY]\n",
            "tls_server_config.cipher_suites[0]",
        ),
        (
            "  curve_preferences: [X25519, CurveP521]\n",
            "tls_server_config.curve_preferences[1]",
        ),
        ("  max_version: TLS11\n", "tls_server_config.max_version"),
        (
            "  min_version: TLS13\n  max_version: TLS12\n",
            "tls_server_config.min_version",
        ),
        (
            "  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: ca.crt\n  client_allowed_sans: [x]\n",
            "tls_server_config.client_allowed_sans",
        ),
        (
            "  client_ca_file: ca.crt\n",
            "tls_server_config.client_ca_file",
        ),
        (
            "  client_auth_type: Sometimes\n",
            "tls_server_config.client_auth_type",
        ),
    ] {
        write_config(&config, &format!("{tls}{extra}"));
        let out = kubedf!().run(&[
            "serve",
            "--web.listen-address",
            "127.0.0.1:0",
            "--web.config.file",
            config.to_str().expect("utf-8"),
            "--cri.endpoint",
            NO_RUNTIME,
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra}: started");
        assert!(
            stderr.contains(key) && stderr.contains("web.yml"),
            "{extra}: {stderr}"
        );
    }
}
