//! TLS and mutual TLS on the control listener: a CA, server and client certificates are made
//! at test time with rcgen, the real lb serves them, and the real lbctl connects (or must not).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::certs::Ca;
use support::{Backend, Control, Lb};

// === test PKI ===

/// Every PEM file a test needs, written into lb's config directory.
struct Pki {
    /// Signs lb's certificate and the good client certificate.
    ca: PathBuf,
    /// An unrelated CA, and a client certificate it signed.
    other_ca: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    other_client_cert: PathBuf,
    other_client_key: PathBuf,
}

impl Pki {
    /// Writes `server.pem` and `server.key` (for 127.0.0.1 and localhost) and the rest.
    fn write(dir: &Path) -> Pki {
        let (ca, other) = (Ca::new("lb test CA"), Ca::new("someone else's CA"));
        let server = ca.server(&["127.0.0.1", "localhost"]);
        let client = ca.client("lbctl.test");
        let intruder = other.client("intruder.test");
        let put = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("write PEM");
            path
        };
        put("server.pem", &server.cert_pem);
        put("server.key", &server.key_pem);
        Pki {
            ca: put("ca.pem", &ca.pem),
            other_ca: put("other-ca.pem", &other.pem),
            client_cert: put("client.pem", &client.cert_pem),
            client_key: put("client.key", &client.key_pem),
            other_client_cert: put("other-client.pem", &intruder.cert_pem),
            other_client_key: put("other-client.key", &intruder.key_pem),
        }
    }
}

/// A `[control]` table serving `server.pem`; the paths are relative, so they must resolve
/// against lb.toml's directory (lb runs with the package root as its working directory).
fn tls_control(extra: &str) -> String {
    format!("[control]\ntls_cert = \"server.pem\"\ntls_key = \"server.key\"\n{extra}\n")
}

/// Writes certificates and `lb.toml` (`control` then one pool) and starts lb on loopback.
async fn start(control: &str) -> (Lb, Pki, Backend) {
    let backend = Backend::start("a").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = Pki::write(dir.path());
    let config = dir.path().join("lb.toml");
    let text = format!(
        "{control}\n{}",
        support::pool("/", &[backend.addr], "100ms")
    );
    std::fs::write(&config, text).expect("write config");
    let lb = Lb::start_at(dir, config, &[]);
    (lb, pki, backend)
}

/// Runs the real lbctl against `addr` with `args` and these environment variables only (no
/// token or TLS settings leak in from the test's environment). Returns (ok, stdout, stderr).
fn lbctl_at(addr: &str, args: &[&str], env: &[(&str, &Path)]) -> (bool, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_lbctl"));
    command.arg(format!("--lb={addr}")).args(args);
    for var in [
        "LB_TOKEN",
        "LB_TOKEN_FILE",
        "LB_TLS_CA",
        "LB_TLS_CERT",
        "LB_TLS_KEY",
        "LB_TLS_SERVER_NAME",
    ] {
        command.env_remove(var);
    }
    for (name, value) in env {
        command.env(name, value);
    }
    // lbctl's own --rpc-timeout (10 s) bounds this.
    let out = command.output().expect("run lbctl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn lbctl(lb: &Lb, args: &[&str]) -> (bool, String, String) {
    lbctl_at(&lb.grpc.expect("grpc").to_string(), args, &[])
}

fn flag(name: &str, path: &Path) -> String {
    format!("--{name}={}", path.display())
}

fn config_text(lb: &Lb) -> String {
    std::fs::read_to_string(&lb.config).expect("read lb.toml")
}

/// Runs lb on `config` expecting it to refuse to start; returns its stderr. Bounded: a process
/// still running after 10 s fails the test instead of hanging it.
fn refused_start(config: &Path, args: &[&str]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lb"))
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn lb");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().expect("wait for lb") {
            let out = child.wait_with_output().expect("lb output");
            assert!(!status.success(), "lb should have refused to start");
            return String::from_utf8_lossy(&out.stderr).into_owned();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("lb output");
            panic!(
                "lb did not refuse to start; log:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// === tests ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lbctl_with_the_ca_changes_pools_over_tls() {
    let (lb, pki, _backend) = start(&tls_control("")).await;
    lb.wait_for_log("control API serves TLS", Duration::from_secs(5));

    let (ok, out, err) = lbctl(
        &lb,
        &[&flag("tls-ca", &pki.ca), "--pattern=/new/", "addPool"],
    );
    assert!(ok, "addPool over TLS failed: {err}");
    assert_eq!(out, "added pool /new/\n");
    assert!(config_text(&lb).contains("[pools.\"/new/\"]"));

    // The Go-style spelling, a DNS name from the certificate, and the environment variable.
    let port = lb.grpc.expect("grpc").port();
    let (ok, out, err) = lbctl_at(
        &format!("localhost:{port}"),
        &[
            "-tls-ca",
            &pki.ca.display().to_string(),
            "-pattern=/",
            "poolHealth",
        ],
        &[],
    );
    assert!(ok, "poolHealth via localhost failed: {err}");
    assert!(out.contains("PS_"), "{out}");
    let (ok, _, err) = lbctl_at(
        &format!("https://127.0.0.1:{port}"),
        &["--pattern=/new/", "removePool"],
        &[("LB_TLS_CA", &pki.ca)],
    );
    assert!(ok, "removePool with LB_TLS_CA failed: {err}");
    assert!(!config_text(&lb).contains("/new/"));

    // Certificates are read at start: pointing lb.toml at other files asks for a restart.
    let text = config_text(&lb).replace("server.pem", "renewed.pem");
    std::fs::write(&lb.config, text).expect("write config");
    let line = lb.wait_for_log("restart lb to apply them", Duration::from_secs(5));
    assert!(line.contains("control.tls_cert"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_and_untrusted_clients_are_refused() {
    let (lb, pki, _backend) = start(&tls_control("")).await;
    let before = config_text(&lb);

    let (ok, _, err) = lbctl(&lb, &["--pattern=/x/", "addPool"]);
    assert!(!ok, "a plaintext lbctl got through");
    assert!(
        err.starts_with("lbctl: ") && err.contains("--tls-ca"),
        "{err}"
    );
    // Said as what it is: a TLS listener that lbctl spoke plaintext to.
    assert!(
        err.contains("serves TLS and lbctl spoke plaintext"),
        "{err}"
    );

    let (ok, _, err) = lbctl(
        &lb,
        &[&flag("tls-ca", &pki.other_ca), "--pattern=/x/", "addPool"],
    );
    assert!(!ok, "lbctl trusting another CA got through");
    assert!(
        err.contains("certificate") || err.contains("UnknownIssuer"),
        "the error should say the certificate is not trusted: {err}"
    );

    // A plain h2c gRPC client gets nowhere either.
    let url = format!("http://{}", lb.grpc.expect("grpc"));
    let plain = async {
        let mut client = Control::connect(url).await.map_err(|e| e.to_string())?;
        let request = lb::control::proto::RemovePoolReq {
            pattern: "/".into(),
            ..Default::default()
        };
        client.remove_pool(request).await.map_err(|e| e.to_string())
    };
    let result = tokio::time::timeout(Duration::from_secs(10), plain)
        .await
        .expect("the plaintext attempt is answered, not left hanging");
    assert!(result.is_err(), "a plaintext RemovePool succeeded");
    assert_eq!(config_text(&lb), before, "a refused client changed lb.toml");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_needs_a_client_certificate_from_client_ca() {
    let (lb, pki, _backend) = start(&tls_control("client_ca = \"ca.pem\"")).await;
    let before = config_text(&lb);
    let ca = flag("tls-ca", &pki.ca);

    let (ok, _, err) = lbctl(&lb, &[&ca, "--pattern=/m/", "addPool"]);
    assert!(!ok, "lbctl without a client certificate got through");
    assert!(
        err.starts_with("lbctl: ") && err.contains("--tls-cert"),
        "{err}"
    );

    let (ok, _, err) = lbctl(
        &lb,
        &[
            &ca,
            &flag("tls-cert", &pki.other_client_cert),
            &flag("tls-key", &pki.other_client_key),
            "--pattern=/m/",
            "addPool",
        ],
    );
    assert!(
        !ok,
        "lbctl with a certificate from another CA got through: {err}"
    );
    assert!(err.contains("client_ca"), "{err}");
    assert_eq!(config_text(&lb), before, "a refused client changed lb.toml");

    let (ok, out, err) = lbctl(
        &lb,
        &[
            &ca,
            &flag("tls-cert", &pki.client_cert),
            &flag("tls-key", &pki.client_key),
            "--pattern=/m/",
            "addPool",
        ],
    );
    assert!(ok, "lbctl with the right client certificate failed: {err}");
    assert_eq!(out, "added pool /m/\n");
    assert!(config_text(&lb).contains("[pools.\"/m/\"]"));

    // The same identity from the environment.
    let (ok, _, err) = lbctl_at(
        &lb.grpc.expect("grpc").to_string(),
        &["--pattern=/m/", "removePool"],
        &[
            ("LB_TLS_CA", &pki.ca),
            ("LB_TLS_CERT", &pki.client_cert),
            ("LB_TLS_KEY", &pki.client_key),
        ],
    );
    assert!(ok, "removePool with LB_TLS_* failed: {err}");
    assert!(!config_text(&lb).contains("/m/"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_a_configured_token_is_still_required() {
    let dir_token = tempfile::tempdir().expect("temp dir");
    let token = dir_token.path().join("token");
    std::fs::write(&token, "tls-and-token\n").expect("write token");
    let extra = format!("token_file = \"{}\"", token.display());
    let (lb, pki, _backend) = start(&tls_control(&extra)).await;
    let before = config_text(&lb);
    let ca = flag("tls-ca", &pki.ca);

    let (ok, _, err) = lbctl(&lb, &[&ca, "--pattern=/t/", "addPool"]);
    assert!(!ok, "lbctl without the token got through");
    assert!(err.contains("UNAUTHENTICATED"), "{err}");
    assert_eq!(config_text(&lb), before);

    let (ok, _, err) = lbctl(
        &lb,
        &[&ca, &flag("token-file", &token), "--pattern=/t/", "addPool"],
    );
    assert!(ok, "TLS plus the token failed: {err}");
    assert!(config_text(&lb).contains("[pools.\"/t/\"]"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_open_a_non_loopback_control_listener_without_a_token() {
    let backend = Backend::start("a").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = Pki::write(dir.path());
    let pool = support::pool("/", &[backend.addr], "100ms");

    // TLS alone hides the traffic but does not say who the client is: still refused.
    let tls_only = dir.path().join("tls-only.toml");
    std::fs::write(&tls_only, format!("{}\n{pool}", tls_control(""))).expect("write");
    let stderr = refused_start(&tls_only, &["--http", "127.0.0.1:0", "--grpc", "0.0.0.0:0"]);
    assert!(
        stderr.contains("token_file") && stderr.contains("client_ca"),
        "{stderr}"
    );

    let config = dir.path().join("lb.toml");
    let text = format!("{}\n{pool}", tls_control("client_ca = \"ca.pem\""));
    std::fs::write(&config, text).expect("write config");
    let lb = Lb::start_with_args(
        dir,
        config,
        &["--http", "127.0.0.1:0", "--grpc", "0.0.0.0:0"],
    );
    let port = lb.grpc.expect("grpc listener").port();
    let (ok, out, err) = lbctl_at(
        &format!("127.0.0.1:{port}"),
        &[
            &flag("tls-ca", &pki.ca),
            &flag("tls-cert", &pki.client_cert),
            &flag("tls-key", &pki.client_key),
            "--pattern=/",
            "poolHealth",
        ],
        &[],
    );
    assert!(ok, "{err}");
    assert!(out.contains("PS_"), "{out}");
}

#[test]
fn bad_tls_files_stop_lb_at_start_and_are_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = Pki::write(dir.path());
    let config = dir.path().join("lb.toml");
    let args = ["--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"];
    let run = |control: &str| {
        std::fs::write(&config, control).expect("write config");
        refused_start(&config, &args)
    };

    let missing = dir.path().join("missing.pem");
    let stderr = run("[control]\ntls_cert = \"missing.pem\"\ntls_key = \"server.key\"\n");
    assert!(
        stderr.contains(&format!(
            "cannot read control TLS certificate (tls_cert) {}",
            missing.display()
        )),
        "{stderr}"
    );

    // A certificate where the key should be.
    let stderr = run("[control]\ntls_cert = \"server.pem\"\ntls_key = \"ca.pem\"\n");
    assert!(
        stderr.contains(&format!(
            "control TLS key (tls_key) {} holds no PEM private key",
            pki.ca.display()
        )),
        "{stderr}"
    );

    // A key that belongs to another certificate.
    let stderr = run("[control]\ntls_cert = \"server.pem\"\ntls_key = \"client.key\"\n");
    assert!(
        stderr.contains("cannot be used") && stderr.contains("client.key"),
        "{stderr}"
    );

    std::fs::write(dir.path().join("garbage.pem"), "not a certificate\n").expect("write");
    let stderr = run(
        "[control]\ntls_cert = \"server.pem\"\ntls_key = \"server.key\"\nclient_ca = \"garbage.pem\"\n",
    );
    assert!(
        stderr.contains("control client CA (client_ca)") && stderr.contains("garbage.pem"),
        "{stderr}"
    );
}

#[test]
fn lb_check_reports_incomplete_tls_settings_with_their_position() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("lb.toml");
    std::fs::write(
        &path,
        "[control]\ntls_cert = \"cert.pem\"\nclient_ca = \"ca.pem\"\n",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_lb"))
        .arg("check")
        .arg(&path)
        .output()
        .expect("run lb check");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let p = path.display();
    assert!(
        stderr.contains(&format!("{p}:2:12: control.tls_cert needs control.tls_key")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{p}:3:13: control.client_ca needs control.tls_cert"
        )),
        "{stderr}"
    );
}

#[test]
fn lbctl_names_missing_files_and_incomplete_tls_flags() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = Pki::write(dir.path());
    // Nothing listens here; every case fails before dialling.
    let addr = "127.0.0.1:1";

    let missing = dir.path().join("nope.pem");
    let (ok, _, err) = lbctl_at(addr, &[&flag("tls-ca", &missing), "status"], &[]);
    assert!(!ok);
    assert!(
        err.contains(&format!("cannot read --tls-ca {}", missing.display())),
        "{err}"
    );

    let usage = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_lbctl"))
            .arg(format!("--lb={addr}"))
            .args(args)
            .env_remove("LB_TLS_CA")
            .env_remove("LB_TLS_CERT")
            .env_remove("LB_TLS_KEY")
            .output()
            .expect("run lbctl");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = usage(&[
        &flag("tls-ca", &pki.ca),
        &flag("tls-cert", &pki.client_cert),
        "status",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--tls-cert needs --tls-key"), "{err}");
    let (code, err) = usage(&[&flag("tls-cert", &pki.client_cert), "status"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--tls-cert needs --tls-ca"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_lbctl"))
        .args(["--lb=https://127.0.0.1:1", "status"])
        .env_remove("LB_TLS_CA")
        .output()
        .expect("run lbctl");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-ca PATH"));
}
