//! The `lb` binary's own commands: `lb check` and `lb demo`.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use http::StatusCode;

#[test]
fn check_accepts_the_repository_example() {
    let out = Command::new(env!("CARGO_BIN_EXE_lb"))
        .arg("check")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/lb.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `lb check` with no path checks `lb.toml`, the file `lb` serves by default.
#[test]
fn check_defaults_to_lb_toml_as_lb_does() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/lb.toml"),
        dir.path().join("lb.toml"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lb"))
        .arg("check")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "lb.toml: ok");
    std::fs::write(dir.path().join("lb.toml"), "[pools.\"/\"]\nrise = 0\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lb"))
        .arg("check")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success(), "a broken lb.toml passed");
}

#[test]
fn check_reports_every_error_with_line_and_column() {
    let text = "\
[pools.\"/\"]
backends = [
  \"127.0.0.1:0\",
  \"not-an-ip:80\",
  \"127.0.0.1:8082\",
  \"127.0.0.1:8082\",
  \"127.0.0.1:70000\",
]
interval = \"10 parsecs\"
";
    let (ok, stderr) = support::lb_check(text);
    assert!(!ok);
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("PATH:3:3: ") && l.contains("outside 1-65535")),
        "{stderr}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("PATH:4:3: ") && l.contains("not an IP")),
        "{stderr}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("PATH:6:3: ") && l.contains("duplicate backend")),
        "{stderr}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("PATH:7:3: ") && l.contains("outside 1-65535")),
        "{stderr}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("PATH:9:12: ") && l.contains("duration")),
        "{stderr}"
    );
}

#[test]
fn check_reports_syntax_unknown_keys_and_bad_values_with_position() {
    let cases = [
        (
            "[pools.\"/\"]\nbackend = []\n",
            "PATH:2:1: ",
            "unknown field",
        ),
        (
            "[listen]\nhttp = \"0.0.0.0:8080\"\n[pools.\"/\"\nbackends = []\n",
            "PATH:3:",
            "",
        ),
        (
            "[pools.\"/\"]\nhealth_checks = [{ url_path = \"/h\", healthy_values = [] }]\n",
            "PATH:2:",
            "healthy_values",
        ),
        ("[pools.\"no-slash\"]\n", "PATH:1:8: ", "pattern"),
        (
            "[pools.\"/\"]\ntype = \"round-robin\"\n",
            "PATH:2:8: ",
            "unknown pool type",
        ),
    ];
    for (text, prefix, needle) in cases {
        let (ok, stderr) = support::lb_check(text);
        assert!(!ok, "{text:?} should be invalid");
        assert!(
            stderr.starts_with(prefix) && stderr.contains(needle),
            "{text:?}: {stderr}"
        );
    }
}

#[test]
fn check_rejects_conflicting_patterns() {
    let (ok, stderr) =
        support::lb_check("[pools.\"/posts/{id}\"]\n[pools.\"/{resource}/latest\"]\n");
    assert!(!ok);
    assert!(stderr.contains("conflicts"), "{stderr}");
    assert!(stderr.starts_with("PATH:"), "{stderr}");
}

#[tokio::test]
async fn demo_serves_from_both_sample_backends() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lb"))
        .args([
            "demo",
            "--http",
            "127.0.0.1:0",
            "--grpc",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("demo printed nothing");
    let addr = first
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no address in {first:?}"))
        .to_owned();
    let client = support::client();
    let url = format!("http://{addr}/");
    let mut seen = std::collections::HashSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !(seen.contains("Hello web from node a\n") && seen.contains("Hello web from node b\n")) {
        assert!(std::time::Instant::now() < deadline, "only saw {seen:?}");
        let (status, body) = support::get(&client, &url).await;
        if status == StatusCode::OK {
            seen.insert(body);
        } else {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // sample-web greets on every path and method, so any request through the demo names a node.
    let request = http::Request::post(format!("http://{addr}/any/path?x=1"))
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"body",
        )))
        .unwrap();
    let (status, body) = support::send(&client, request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.starts_with("Hello web from node "), "{body}");

    // The printed command works as printed right after `cargo run --release --bin lb -- demo`,
    // which builds only lb: it is a cargo command that builds lbctl too, and what it passes to
    // lbctl works.
    let drive = std::iter::from_fn(|| rx.recv_timeout(Duration::from_secs(5)).ok())
        .find(|line| line.starts_with("drive:"))
        .expect("no drive: line");
    let command = drive.trim_start_matches("drive:").trim();
    let lbctl_args = command
        .strip_prefix("cargo run --release --bin lbctl -- ")
        .unwrap_or_else(|| panic!("{command:?} needs a binary the demo's command did not build"));
    let out = Command::new(env!("CARGO_BIN_EXE_lbctl"))
        .args(lbctl_args.split_whitespace())
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && printed.contains("BS_HEALTHY"),
        "{command}: {printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// With `workers` unset, lb runs as many workers as the CPUs it may use: pinned to one core
/// (`taskset`), one, on a single-threaded runtime, not one per core of the machine.
#[test]
fn workers_follow_the_cpus_lb_may_run_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.toml");
    std::fs::write(&path, "[pools.\"/\"]\nbackends = [\"127.0.0.1:9\"]\n").unwrap();
    let mut child = Command::new("taskset")
        .args(["-c", "0", env!("CARGO_BIN_EXE_lb"), "--config"])
        .arg(&path)
        .args(["--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("taskset (util-linux) runs lb");
    let stderr = child.stderr.take().unwrap();
    // Reading stops at the line or at the end of stderr; the kill below bounds the wait if lb
    // hangs before logging, as `wait_for_line` does elsewhere.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let line = BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .find(|line| line.contains("runtime started"));
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(10));
    let _ = child.kill();
    let _ = child.wait();
    let line = line
        .expect("lb logs its runtime within 10 s")
        .expect("a 'runtime started' line");
    assert!(line.contains("workers=1"), "{line}");
}

#[tokio::test]
async fn demo_rollout_starts_a_rollout_lbctl_can_follow() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lb"))
        .args([
            "demo",
            "--rollout",
            "--http",
            "127.0.0.1:0",
            "--grpc",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let follow = std::iter::from_fn(|| rx.recv_timeout(Duration::from_secs(20)).ok())
        .find(|line| line.starts_with("follow:"))
        .expect("no follow: line");
    let command = follow.trim_start_matches("follow:").trim();
    let lbctl_args: Vec<&str> = command
        .strip_prefix("cargo run --release --bin lbctl -- ")
        .unwrap_or_else(|| panic!("{command:?}"))
        .split_whitespace()
        .collect();
    assert_eq!(lbctl_args[1..], ["rollout", "watch", "/"], "{command}");
    // The watch runs until the rollout ends; its first line says where the rollout is.
    let mut watch = Command::new(env!("CARGO_BIN_EXE_lbctl"))
        .args(&lbctl_args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let watch_out = watch.stdout.take().unwrap();
    let (wtx, wrx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(watch_out).lines().map_while(Result::ok) {
            let _ = wtx.send(line);
        }
    });
    let line = std::iter::from_fn(|| wrx.recv_timeout(Duration::from_secs(20)).ok())
        .find(|line| line.contains("running step 1/3 weight 10%"))
        .expect("the rollout running at its first step");
    assert!(line.starts_with("/ running"), "{line}");
    let _ = watch.kill();
    let _ = watch.wait();
    let _ = child.kill();
    let _ = child.wait();
}
