//! `lbctl plan FILE`: a semantic diff of FILE against the config lb runs, key by key (every
//! pool key, every health-check field, backends and their states, `[listen]`, `[server]`,
//! `[log]`, `[control]`, `[tls]`), start-only keys named as such, a forecast of a changed health
//! check probed against the pool's backends, `--output json` and `--detailed-exitcode`.

mod support;

use std::process::Command;
use std::time::Duration;

use support::{Backend, Lb};

fn base(a: std::net::SocketAddr) -> String {
    format!(
        "[control]\ngit_commit = false\n\n[log]\nformat = \"text\"\n\n\
         [pools.\"/\"]\ninterval = \"2s\"\nretries = 1\nbackends = [\"{a}\"]\n\n\
         [pools.\"/old/\"]\nbackends = [\"{a}\"]\n"
    )
}

/// Runs `lbctl ARGS` and returns (exit code, stdout, stderr).
fn lbctl(lb: &Lb, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lbctl"))
        .arg(format!("--lb={}", lb.grpc.expect("grpc listener")))
        .args(args)
        .output()
        .expect("run lbctl");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_prints_a_change_of_every_field_class() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let lb = Lb::start(&base(a.addr));
    let pool = "[pools.\"/\"]\n";
    let a_entry = format!("backends = [\"{}\"]", a.addr);
    // (what the candidate replaces, with what, a line the plan must print)
    let cases: Vec<(&str, String, String)> = vec![
        (pool, format!("{pool}type = \"p2c_ewma\"\n"), "~ pools.\"/\".type: \"p2c\" -> \"p2c_ewma\"".into()),
        ("interval = \"2s\"", "interval = \"30s\"".into(), "~ pools.\"/\".interval: \"2s\" -> \"30s\"".into()),
        (pool, format!("{pool}down_interval = \"500ms\"\n"), "~ pools.\"/\".down_interval: \"1s\" -> \"500ms\"".into()),
        (
            pool,
            format!("{pool}health_checks = [{{ url_path = \"/status\", healthy_values = [\"up\"] }}]\n"),
            "~ pools.\"/\".health_checks[0].url_path: \"/healthz\" -> \"/status\"".into(),
        ),
        (
            pool,
            format!("{pool}health_checks = [{{ url_path = \"/healthz\", healthy_values = [\"up\"] }}]\n"),
            "~ pools.\"/\".health_checks[0].healthy_values: [\"ok\", \"OK\"] -> [\"up\"]".into(),
        ),
        (
            pool,
            format!("{pool}health_checks = [{{ url_path = \"/healthz\" }}, {{ url_path = \"/ready\" }}]\n"),
            "+ pools.\"/\".health_checks[1] = { url_path = \"/ready\", healthy_values = [\"ok\", \"OK\"] }".into(),
        ),
        (pool, format!("{pool}check_timeout = \"3s\"\n"), "~ pools.\"/\".check_timeout: \"1s\" -> \"3s\"".into()),
        (pool, format!("{pool}rise = 2\n"), "~ pools.\"/\".rise: 1 -> 2".into()),
        (pool, format!("{pool}fall = 3\n"), "~ pools.\"/\".fall: 1 -> 3".into()),
        (pool, format!("{pool}connect_timeout = \"2s\"\n"), "~ pools.\"/\".connect_timeout: \"1s\" -> \"2s\"".into()),
        (pool, format!("{pool}request_timeout = \"5s\"\n"), "~ pools.\"/\".request_timeout: \"1m\" -> \"5s\"".into()),
        ("retries = 1", "retries = 3".into(), "~ pools.\"/\".retries: 1 -> 3".into()),
        (pool, format!("{pool}idle_timeout = \"5s\"\n"), "~ pools.\"/\".idle_timeout: \"1m 30s\" -> \"5s\"".into()),
        (
            pool,
            format!("{pool}backend_tls = {{ server_name = \"api.internal\" }}\n"),
            "+ pools.\"/\".backend_tls = { server_name = \"api.internal\" }".into(),
        ),
        (
            &a_entry,
            format!("backends = [{{ addr = \"{}\", state = \"drain\" }}]", a.addr),
            format!("~ pools.\"/\".backends.\"{}\".state: \"enabled\" -> \"drain\"", a.addr),
        ),
        (
            &a_entry,
            format!("backends = [\"{}\", \"{}\"]", a.addr, b.addr),
            format!("+ pools.\"/\".backends.\"{}\" = {{ state = \"enabled\" }}", b.addr),
        ),
        (
            &a_entry,
            format!("backends = [\"{}\"]", b.addr),
            format!("- pools.\"/\".backends.\"{}\" = {{ state = \"enabled\" }}", a.addr),
        ),
        (
            "[pools.\"/old/\"]",
            "[pools.\"/new/\"]".into(),
            "+ pools.\"/new/\" = { type = \"p2c\", backends = 1 }".into(),
        ),
        (
            "[pools.\"/old/\"]",
            "[pools.\"/new/\"]".into(),
            "- pools.\"/old/\" = { type = \"p2c\", backends = 1 }".into(),
        ),
        (
            "[log]",
            "[listen]\nhttp = \"127.0.0.1:9\"\n\n[log]".into(),
            "~ listen.http: \"0.0.0.0:8080\" -> \"127.0.0.1:9\" (restart needed)".into(),
        ),
        (
            "[log]",
            "[server]\nheader_timeout = \"3s\"\n\n[log]".into(),
            "~ server.header_timeout: \"10s\" -> \"3s\" (restart needed)".into(),
        ),
        ("format = \"text\"", "format = \"json\"".into(), "~ log.format: \"text\" -> \"json\" (restart needed)".into()),
        ("git_commit = false", "git_commit = true".into(), "~ control.git_commit: false -> true".into()),
        ("[control]", "allow_empty = true\n\n[control]".into(), "~ allow_empty: false -> true".into()),
    ];
    let candidate = lb.dir().join("candidate.toml");
    let running = base(a.addr);
    for (from, to, expected) in &cases {
        assert!(running.contains(from), "the base has no {from:?}");
        std::fs::write(&candidate, running.replacen(from, to, 1)).unwrap();
        let (code, out, err) = lbctl(&lb, &["plan", candidate.to_str().unwrap()]);
        assert_eq!(code, Some(0), "{err}");
        assert!(
            out.lines().any(|l| l == expected),
            "replacing {from:?} with {to:?}: missing {expected:?} in:\n{out}"
        );
    }
    // The running file itself: no change, exit 0 with --detailed-exitcode too.
    let (code, out, err) = lbctl(
        &lb,
        &["plan", "--detailed-exitcode", lb.config.to_str().unwrap()],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("no changes"), "{out}");
    // Changes: exit 2 with --detailed-exitcode, as `terraform plan -detailed-exitcode`.
    std::fs::write(&candidate, running.replace("retries = 1", "retries = 2")).unwrap();
    let (code, _, err) = lbctl(
        &lb,
        &["plan", "--detailed-exitcode", candidate.to_str().unwrap()],
    );
    assert_eq!(code, Some(2), "{err}");
    // JSON: one object per change.
    let (code, out, err) = lbctl(&lb, &["plan", "--output=json", candidate.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["changes"][0]["key"], "pools.\"/\".retries");
    assert_eq!(doc["changes"][0]["kind"], "change");
    assert_eq!(doc["changes"][0]["before"], "1");
    assert_eq!(doc["changes"][0]["after"], "2");
    assert_eq!(doc["changes"][0]["restart"], false);
    // An invalid candidate: its own positions, exit 1.
    std::fs::write(&candidate, "[pools.\"/\"]\nbogus = 1\n").unwrap();
    let (code, _, err) = lbctl(
        &lb,
        &["plan", "--detailed-exitcode", candidate.to_str().unwrap()],
    );
    assert!(
        code == Some(1) && err.contains("candidate.toml:2:1"),
        "{code:?} {err}"
    );
}

/// A changed health check is probed against the pool's backends: the plan says how many would
/// fail it and that the pool would go down, and a reload of that file logs the same changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_forecasts_a_health_check_the_backends_would_fail() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let lb = Lb::start(&support::pool("/", &[a.addr, b.addr], "2s"));
    support::healthy_eventually(&lb, "/", a.addr, Duration::from_secs(5)).await;
    let candidate = lb.dir().join("candidate.toml");
    let text = support::pool("/", &[a.addr, b.addr], "30s").replace(
        "interval",
        "retries = 3\nhealth_checks = [{ url_path = \"/status\", healthy_values = [\"up\"] }]\ninterval",
    );
    std::fs::write(&candidate, &text).unwrap();
    let (code, out, err) = lbctl(&lb, &["plan", candidate.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("2 of 2 backends would fail the new check: pool \"/\" would go down"),
        "{out}"
    );
    assert!(
        out.contains("~ pools.\"/\".interval: \"2s\" -> \"30s\""),
        "{out}"
    );
    // A check they pass: no warning.
    std::fs::write(
        &candidate,
        text.replace("/status", "/healthz")
            .replace("[\"up\"]", "[\"ok\"]"),
    )
    .unwrap();
    let (_, out, _) = lbctl(&lb, &["plan", candidate.to_str().unwrap()]);
    assert!(
        out.contains("0 of 2 backends would fail the new check"),
        "{out}"
    );
    assert!(!out.contains("would go down"), "{out}");
    // What plan showed is what the reload logs.
    std::fs::write(&lb.config, &text).unwrap();
    lb.log_eventually("key=pools.\"/\".retries", Duration::from_secs(5))
        .await;
}
