//! `--web.config.file`: TLS with client certificates and basic auth, checked
//! with real peers (openssl-made certificates, curl as the scraper), and
//! reloading without a restart.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate.
fn make_certs(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=kubedf test CA",
    ]);
    openssl(dir, &ca);
    for (name, ext) in [
        (
            "server",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        ),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ] {
        std::fs::write(dir.join(format!("{name}.ext")), ext).expect("write ext");
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let crt = format!("{name}.crt");
        let ext = format!("{name}.ext");
        let subject = format!("/CN={name}");
        let mut req = vec!["req"];
        req.extend(ec);
        req.extend(["-keyout", &key, "-out", &csr, "-subj", &subject]);
        openssl(dir, &req);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        );
    }
}

/// curl's view of one request: (exit code, HTTP status, body).
fn curl(dir: &Path, url: &str, extra: &[&str]) -> (i32, u16, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}"])
        .args(extra)
        .arg(url)
        .current_dir(dir)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        out.status.code().unwrap_or(-1),
        code.trim().parse().unwrap_or(0),
        body.to_owned(),
    )
}

fn write_config(path: &Path, text: &str) {
    // Write then rename, as config management does, so kubedf never reads half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write web config");
    std::fs::rename(&tmp, path).expect("rename web config");
}

#[test]
fn tls_client_certificates_and_basic_auth() {
    let test = "tls_client_certificates_and_basic_auth";
    if !prerequisites(
        test,
        ["openssl", "curl"]
            .iter()
            .find(|t| !have_tool(t))
            .map(|t| format!("`{t}` is not installed")),
    ) {
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

    let mut served = Served::start(&[
        "--web.config.file",
        config.to_str().expect("utf-8"),
        "--kubelet.root-dir",
        d.to_str().expect("utf-8"),
        "--cri.endpoint",
        "unix:///nonexistent/kubedf/cri.sock",
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

    // Dropping basic auth takes effect without a restart.
    write_config(&config, tls);
    let deadline = Instant::now() + Duration::from_secs(15);
    while curl(d, &https, &with_cert).1 != 200 {
        assert!(
            Instant::now() < deadline,
            "reload never took effect:\n{}",
            served.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(served.log_text().contains("web config reloaded"));
    assert!(served.terminate());
}

#[test]
fn a_bad_web_config_is_a_startup_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("web.yml");
    std::fs::write(&config, "basic_auth_users:\n  prometheus: not-a-hash\n").expect("write");
    let out = run_kubedf(&[
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
