//! What lbctl tells the operator when the input or the target is wrong: errors that name the
//! real cause, and the actor recorded for a change when the environment names nobody.

mod support;

use std::process::Command;
use std::time::Duration;

use support::{eventually, Backend, Lb};

/// `--url_path=v1` (no leading slash) is refused saying what is wrong with the path, not that
/// the glued `127.0.0.1:8082v1` is not `IP:PORT`.
#[tokio::test]
async fn a_url_path_without_a_leading_slash_is_refused_naming_the_path() {
    let lb = Lb::start("[pools.\"/\"]\nbackends = []\n");
    let (ok, _, err) = support::lbctl(
        &lb,
        &[
            "--pattern=/",
            "--ip=127.0.0.1",
            "--port=8082",
            "--url_path=v1",
            "addBackend",
        ],
    );
    assert!(!ok, "accepted a relative url_path");
    assert!(
        err.contains("url_path \"v1\" must start with \"/\"") && !err.contains("8082v1"),
        "{err}"
    );
}

/// With `$USER` and `$LOGNAME` empty, the commit names the OS user (as `id -un` does), not
/// "unknown".
#[tokio::test]
async fn the_actor_falls_back_to_the_os_user_name() {
    let b = Backend::start("b").await;
    let dir = tempfile::tempdir().unwrap();
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .current_dir(dir.path())
            .args(args)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@t")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@t")
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    git(&["init", "-q"]);
    let config = dir.path().join("lb.toml");
    std::fs::write(
        &config,
        "[control]\ngit_commit = true\n\n[pools.\"/\"]\nbackends = [\n]\n",
    )
    .unwrap();
    git(&["add", "lb.toml"]);
    git(&["commit", "-qm", "initial"]);
    let lb = Lb::start_at(dir, config, &[]);
    let out = Command::new(env!("CARGO_BIN_EXE_lbctl"))
        .arg(format!("--lb={}", lb.grpc.expect("grpc listener")))
        .args(["backend", "add", "/", &b.addr.to_string()])
        .env("USER", "")
        .env("LOGNAME", "")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let whoami = Command::new("id").arg("-un").output().unwrap();
    let whoami = String::from_utf8_lossy(&whoami.stdout).trim().to_owned();
    assert!(!whoami.is_empty());
    let log = |args: &[&str]| {
        let out = Command::new("git")
            .current_dir(lb.dir())
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    eventually(Duration::from_secs(5), "a commit", || async {
        log(&["log", "--oneline"]).lines().count() == 2
    })
    .await;
    let message = log(&["log", "-1", "--format=%B"]);
    assert!(
        message.contains(&format!("Requested by {whoami} ")),
        "{message}"
    );
}

/// Runs lbctl `status` against `addr` with extra flags: (ok, stderr).
fn lbctl_status_at(addr: &str, flags: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lbctl"))
        .arg(format!("--lb={addr}"))
        .args(flags)
        .arg("status")
        .env_remove("LB_TLS_CA")
        .env_remove("LB_TOKEN")
        .output()
        .expect("run lbctl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `--lb` at the data port or the admin port is named as such (an HTTP/1 answer), not a gRPC
/// "invalid compression flag" or a TLS hint; `--tls-ca` against the plaintext control port
/// says it is plaintext, not that lb wants client certificates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lbctl_names_the_listener_it_reached_by_mistake() {
    let b = Backend::start("b").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("lb.toml");
    std::fs::write(&config, support::pool("/", &[b.addr], "1h")).unwrap();
    let lb = Lb::start_at(dir, config, &["--admin", "127.0.0.1:0"]);
    let admin = lb.admin_url("");
    let admin = admin.trim_start_matches("http://");

    let (ok, err) = lbctl_status_at(&lb.http.to_string(), &[]);
    assert!(!ok);
    assert!(
        err.starts_with(&format!(
            "lbctl: error: {} answered in HTTP/1 (HTTP/1.1 ",
            lb.http
        )) && err.contains("data port")
            && !err.contains("--tls-ca"),
        "{err}"
    );

    let (ok, err) = lbctl_status_at(admin, &[]);
    assert!(!ok);
    assert!(
        err.starts_with(&format!("lbctl: error: {admin} is lb's admin port"))
            && !err.contains("--tls-ca PATH"),
        "{err}"
    );

    let ca = support::certs::Ca::new("some CA");
    let ca_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca_file.path(), &ca.pem).unwrap();
    let grpc = lb.grpc.unwrap().to_string();
    let (ok, err) = lbctl_status_at(&grpc, &[&format!("--tls-ca={}", ca_file.path().display())]);
    assert!(!ok);
    assert!(
        err.starts_with(&format!("lbctl: error: {grpc} does not serve TLS"))
            && !err.contains("client certificates"),
        "{err}"
    );
}
