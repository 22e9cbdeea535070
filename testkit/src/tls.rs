//! TLS test support: certificates made with the real `openssl` and requests
//! made with the real `curl` (tests/web.rs, tests/soak.rs).

use std::path::Path;
use std::process::Command;

pub fn openssl(dir: &Path, args: &[&str]) {
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
pub fn make_certs(dir: &Path) {
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
        (
            "client",
            "extendedKeyUsage=clientAuth\nsubjectAltName=DNS:prometheus.example\n",
        ),
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
pub fn curl(dir: &Path, url: &str, extra: &[&str]) -> (i32, u16, String) {
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

/// A CA (`fleet-ca.crt`) and one serving certificate (`fleet.crt`,
/// `fleet.key`) whose subjectAltNames are all of `ips`: the fake kubelet
/// fleet's, verified as kubedf verifies a kubelet's.
pub fn make_fleet_certs(dir: &Path, ips: &[std::net::IpAddr]) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "fleet-ca.key",
            "-out",
            "fleet-ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=kubedf test kubelet CA",
        ],
    );
    let sans: Vec<String> = ips.iter().map(|ip| format!("IP:{ip}")).collect();
    let ext = format!(
        "subjectAltName={}\nextendedKeyUsage=serverAuth\n",
        sans.join(",")
    );
    std::fs::write(dir.join("fleet.ext"), ext).expect("write ext");
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "fleet.key",
            "-out",
            "fleet.csr",
            "-subj",
            "/CN=kubelet",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "fleet.csr",
            "-CA",
            "fleet-ca.crt",
            "-CAkey",
            "fleet-ca.key",
            "-CAcreateserial",
            "-out",
            "fleet.crt",
            "-days",
            "2",
            "-extfile",
            "fleet.ext",
        ],
    );
}
