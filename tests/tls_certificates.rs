//! The data plane's `[tls]` certificates in the real lb: `lb check` validates the files, a
//! broken pair stops lb at start naming the file, `/status.json` and `/metrics` show each
//! certificate's names and expiry, and a renewed file is picked up (a broken renewal is not).

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rcgen::{CertificateParams, KeyPair};
use support::{client, eventually, get, lbctl, Lb};

/// A self-signed certificate for `names`, valid until 2099, and its key, as PEM.
fn self_signed(names: &[&str]) -> (String, String) {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let mut params = CertificateParams::new(names).expect("params");
    params.not_after = rcgen::date_time_ymd(2099, 1, 1);
    let key = KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("certificate");
    (cert.pem(), key.serialize_pem())
}

fn write_pair(dir: &Path, (cert, key): &(String, String)) {
    std::fs::write(dir.join("site.pem"), cert).expect("write cert");
    std::fs::write(dir.join("site.key"), key).expect("write key");
}

const CONFIG: &str = "[pools.\"/\"]\nbackends = [\"127.0.0.1:9\"]\n\n[[tls.certificates]]\ncert = \"site.pem\"\nkey = \"site.key\"\n";

fn check(dir: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lb"))
        .arg("check")
        .arg(dir.join("lb.toml"))
        .output()
        .expect("run lb check");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_validates_the_certificate_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("lb.toml"), CONFIG).expect("write config");
    write_pair(dir.path(), &self_signed(&["a.test"]));
    // A key file others may read is valid but warned about; 0600 is quiet.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.path().join("site.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    let (ok, stderr) = check(dir.path());
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("tls key file is readable by group or others")
            && stderr.contains("mode=\"644\""),
        "{stderr}"
    );

    std::fs::set_permissions(
        dir.path().join("site.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .expect("chmod");
    assert_eq!(check(dir.path()), (true, String::new()));

    // The key of another certificate: refused, naming both files.
    let (_, other_key) = self_signed(&["a.test"]);
    std::fs::write(dir.path().join("site.key"), &other_key).expect("write key");
    let (ok, stderr) = check(dir.path());
    assert!(!ok);
    let key = dir.path().join("site.key");
    assert!(
        stderr.contains(&format!(
            "tls.certificates key {} does not belong to certificate",
            key.display()
        )),
        "{stderr}"
    );
    let body = other_key.lines().nth(1).expect("key body");
    assert!(!stderr.contains(body), "the key never appears: {stderr}");
}

#[test]
fn a_broken_pair_stops_lb_at_start_naming_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("lb.toml");
    std::fs::write(&config, CONFIG).expect("write config");
    std::fs::write(dir.path().join("site.pem"), "not a certificate\n").expect("write cert");
    std::fs::write(dir.path().join("site.key"), self_signed(&["a.test"]).1).expect("write key");
    let out = Command::new(env!("CARGO_BIN_EXE_lb"))
        .arg("--config")
        .arg(&config)
        .args(["--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"])
        .output()
        .expect("run lb");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "tls.certificates cert {} holds no PEM certificate",
            dir.path().join("site.pem").display()
        )),
        "{stderr}"
    );
}

fn admin_addr(lb: &Lb) -> SocketAddr {
    let line = lb.wait_for_log("listener=\"admin\"", Duration::from_secs(10));
    let start = line.find("addr=").expect("addr") + "addr=".len();
    line[start..]
        .split_whitespace()
        .next()
        .and_then(|a| a.parse().ok())
        .expect("admin address")
}

#[tokio::test]
async fn status_and_metrics_show_names_and_expiry_and_follow_renewals() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("lb.toml");
    std::fs::write(&config, CONFIG).expect("write config");
    write_pair(dir.path(), &self_signed(&["a.test", "*.a.test"]));
    let lb = Lb::start_at(dir, config, &["--admin", "127.0.0.1:0"]);
    let admin = admin_addr(&lb);
    let http = client();
    let expiry = rcgen::date_time_ymd(2099, 1, 1).unix_timestamp();

    let (_, status) = get(&http, &format!("http://{admin}/status.json")).await;
    let status: serde_json::Value = serde_json::from_str(&status).expect("json");
    let certificate = &status["certificates"][0];
    assert_eq!(
        certificate["names"],
        serde_json::json!(["a.test", "*.a.test"])
    );
    assert_eq!(certificate["not_after_unix"], serde_json::json!(expiry));
    let (_, metrics) = get(&http, &format!("http://{admin}/metrics")).await;
    // A timestamp, named as one; the former name stays for one release.
    for name in [
        "lb_tls_certificate_expiry_timestamp_seconds",
        "lb_tls_certificate_expiry_seconds",
    ] {
        assert!(
            metrics.contains(&format!("{name}{{name=\"*.a.test\"}} {expiry}")),
            "{metrics}"
        );
    }

    let (ok, stdout, stderr) = lbctl(&lb, &["status"]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("(default)  a.test,*.a.test  Thu, 01 Jan 2099 00:00:00 GMT"),
        "{stdout}"
    );

    let (_, metrics) = get(&http, &format!("http://{admin}/metrics")).await;
    assert!(metrics.contains("\nlb_tls_last_reload_ok 1\n"), "{metrics}");

    // A broken renewal (a key of another certificate) changes nothing and is reported: in the
    // log, `lbctl status`, `/status.json` and the metrics.
    let original = std::fs::read(lb.dir().join("site.pem")).expect("read cert");
    let renewed = self_signed(&["b.test"]);
    std::fs::write(lb.dir().join("site.pem"), &renewed.0).expect("write cert");
    lb.log_eventually("tls reload rejected", Duration::from_secs(10))
        .await;
    let (_, status) = get(&http, &format!("http://{admin}/status.json")).await;
    assert!(status.contains("\"a.test\""), "{status}");
    let doc: serde_json::Value = serde_json::from_str(&status).expect("json");
    let error = doc["tls_reload_error"].as_str().unwrap_or_default();
    assert!(error.contains("site.key"), "{status}");
    let (_, metrics) = get(&http, &format!("http://{admin}/metrics")).await;
    assert!(metrics.contains("\nlb_tls_last_reload_ok 0\n"), "{metrics}");
    assert!(
        !metrics.contains("\nlb_tls_reload_failures_total 0\n"),
        "{metrics}"
    );
    let (_, stdout, _) = lbctl(&lb, &["status"]);
    assert!(
        stdout.contains("tls reload:  FAILED, still serving the previous certificates"),
        "{stdout}"
    );
    let (_, json, _) = lbctl(&lb, &["status", "--output=json"]);
    let json: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(json["tls_reload_ok"], false, "{json}");

    // Putting back the files being served ends the failure.
    std::fs::write(lb.dir().join("site.pem"), &original).expect("write cert");
    eventually(Duration::from_secs(10), "the failure cleared", || async {
        let (_, stdout, _) = lbctl(&lb, &["status"]);
        stdout.contains("tls reload:  ok")
    })
    .await;
    let (_, status) = get(&http, &format!("http://{admin}/status.json")).await;
    let doc: serde_json::Value = serde_json::from_str(&status).expect("json");
    assert!(doc["tls_reload_error"].is_null(), "{status}");
    let (_, metrics) = get(&http, &format!("http://{admin}/metrics")).await;
    assert!(metrics.contains("\nlb_tls_last_reload_ok 1\n"), "{metrics}");
    std::fs::write(lb.dir().join("site.pem"), &renewed.0).expect("write cert");

    // The matching key arrives: the renewal is served.
    std::fs::write(lb.dir().join("site.key"), &renewed.1).expect("write key");
    eventually(Duration::from_secs(10), "the renewed certificate", || {
        let http = http.clone();
        async move {
            let (_, status) = get(&http, &format!("http://{admin}/status.json")).await;
            status.contains("\"b.test\"")
        }
    })
    .await;
}
