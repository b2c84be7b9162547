//! Operator UX over the control API: status, pools and the health stream (plan: tests/plan.rs).

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{eventually, Backend, Lb};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_pools_show_the_file_generation_and_health() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    b.set_healthy(false);
    let lb = Lb::start(&support::pool("/", &[a.addr, b.addr], "100ms"));
    eventually(Duration::from_secs(5), "a healthy", || async {
        support::backend_is_healthy(&lb, "/", a.addr).await
    })
    .await;

    let (ok, out, err) = support::lbctl(&lb, &["status"]);
    assert!(ok, "{err}");
    assert!(out.contains(&lb.config.display().to_string()), "{out}");
    assert!(
        out.contains("generation:  1") && out.contains("last reload: ok"),
        "{out}"
    );
    assert!(out.contains("PS_DEGRADED") && out.contains("1/2"), "{out}");
    assert!(!out.contains("\x1b["), "no colour when not a terminal");

    // A broken save shows up as the last reload outcome, with its position.
    std::fs::write(&lb.config, "[pools.\"/\"]\nbackends = [\"nope\"]\n").unwrap();
    support::reload_error(&lb, Duration::from_secs(3)).await;
    let (_, out, _) = support::lbctl(&lb, &["status"]);
    assert!(
        out.contains("FAILED") && out.contains("lb.toml:2:"),
        "{out}"
    );
    let (ok, json, _) = support::lbctl(&lb, &["status", "--output", "json"]);
    assert!(ok);
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(doc["last_reload_ok"], false);
    assert_eq!(doc["pools"][0]["total"], 2);

    let (ok, out, _) = support::lbctl(&lb, &["pools"]);
    assert!(ok);
    assert!(
        out.contains(&format!("{}  BS_HEALTHY  AS_ENABLED", a.addr)),
        "{out}"
    );
    let (_, json, _) = support::lbctl(&lb, &["pools", "--output", "json"]);
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(doc["pools"][0]["backends"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_health_transitions() {
    let a = Backend::start("a").await;
    let lb = Lb::start(&support::pool("/", &[a.addr], "100ms"));
    eventually(Duration::from_secs(5), "a healthy", || async {
        support::backend_is_healthy(&lb, "/", a.addr).await
    })
    .await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_lbctl"))
        .arg(format!("--lb={}", lb.grpc.unwrap()))
        .args(["watch", "--pattern=/"])
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
    // The stream is subscribed once the RPC is up; keep flipping health until a line arrives.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let line = loop {
        a.set_healthy(false);
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(400)) {
            break line;
        }
        a.set_healthy(true);
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(400)) {
            break line;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no health event streamed"
        );
    };
    assert!(
        line.contains(&a.addr.to_string())
            && (line.contains("BS_SICK") || line.contains("BS_HEALTHY")),
        "{line}"
    );
    // The time first, as RFC 3339 in UTC (`2025-01-02T03:04:05.678Z`), not epoch milliseconds.
    let at = line.split_whitespace().next().unwrap_or_default();
    assert!(
        humantime::parse_rfc3339(at).is_ok() && at.ends_with('Z'),
        "{line}"
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// A pool with backends but none in rotation answers 503: what a person reads says `down`
/// (the wire enum stays `PS_DEGRADED`, the original tool's), in `status`, `poolHealth` and JSON.
#[tokio::test]
async fn a_pool_with_no_backend_in_rotation_reads_down() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    b.set_healthy(false);
    let lb = Lb::start(&format!(
        "{}{}",
        support::pool("/", &[a.addr], "100ms"),
        support::pool("/api/", &[b.addr], "100ms")
    ));
    eventually(Duration::from_secs(5), "/api/ sick", || async {
        let (_, out, _) = support::lbctl(&lb, &["--pattern=/api/", "poolHealth"]);
        out.contains("BS_SICK")
    })
    .await;
    let (ok, out, err) = support::lbctl(&lb, &["status"]);
    assert!(ok, "{err}");
    let row = |pattern: &str| {
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(pattern))
            .unwrap_or_else(|| panic!("no row for {pattern} in {out}"))
            .to_owned()
    };
    assert!(row("/api/").contains("down (PS_DEGRADED)"), "{out}");
    assert!(!row("/").contains("down"), "{out}");
    let (ok, out, err) = support::lbctl(&lb, &["--pattern=/api/", "poolHealth"]);
    assert!(ok, "{err}");
    assert!(out.contains("down (PS_DEGRADED)"), "{out}");
    let (ok, out, err) = support::lbctl(&lb, &["--output=json", "status"]);
    assert!(ok, "{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["pools"][1]["status"], "PS_DEGRADED");
    assert_eq!(doc["pools"][1]["down"], true);
    assert_eq!(doc["pools"][0]["down"], false);
}

/// `WatchHealth` carries what moves a backend out of rotation and back: a passive ejection (a
/// request's connect failed) as `BS_SICK` with its cause, and its return through the checks as
/// `BS_HEALTHY`, a re-admission.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_passive_ejections_and_their_return() {
    use lb::control::proto::{BackendStatus, EventCause, WatchHealthReq};
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    // Checks far apart: only a request can notice that a is gone before the down_interval probe.
    let lb = Lb::start(&support::pool("/", &[a.addr, b.addr], "1h"));
    support::healthy_eventually(&lb, "/", a.addr, Duration::from_secs(5)).await;
    support::healthy_eventually(&lb, "/", b.addr, Duration::from_secs(5)).await;
    // Subscribed once the RPC answers (the service subscribes before it does).
    let mut events = support::control(&lb)
        .await
        .watch_health(WatchHealthReq::default())
        .await
        .unwrap()
        .into_inner();
    let a_addr = a.kill().await;
    let client = support::client();
    for _ in 0..50 {
        support::get(&client, &lb.url("/")).await;
        let (_, out, _) = support::lbctl(&lb, &["pools"]);
        if out.contains(&format!("{a_addr}  BS_SICK")) {
            break;
        }
    }
    let ejected = next_event(&mut events).await;
    assert_eq!(ejected.status, BackendStatus::BsSick as i32, "{ejected:?}");
    assert_eq!(ejected.cause, EventCause::EcEjection as i32, "{ejected:?}");
    assert!(ejected.reason.contains("connect"), "{ejected:?}");
    let _back = Backend::start_on(a_addr, "a").await;
    let back = next_event(&mut events).await;
    assert_eq!(back.status, BackendStatus::BsHealthy as i32, "{back:?}");
    assert_eq!(back.cause, EventCause::EcReadmission as i32, "{back:?}");
}

/// The stream's next event, within 10 s.
async fn next_event(
    events: &mut tonic::Streaming<lb::control::proto::HealthEvent>,
) -> lb::control::proto::HealthEvent {
    tokio::time::timeout(Duration::from_secs(10), events.message())
        .await
        .expect("an event within 10 s")
        .expect("stream open")
        .expect("an event")
}

/// Every move of a backend into or out of rotation is in the stream, not only the checks':
/// a drain and an enable (EC_ADMIN, health unchanged), a backend added by a save and one
/// removed by the next (EC_RELOAD), each with its reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_admin_state_changes_and_reloads() {
    use lb::control::proto::{BackendStatus, EventCause, WatchHealthReq};
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let lb = Lb::start(&support::pool("/", &[a.addr], "1h"));
    support::healthy_eventually(&lb, "/", a.addr, Duration::from_secs(5)).await;
    let mut events = support::control(&lb)
        .await
        .watch_health(WatchHealthReq::default())
        .await
        .unwrap()
        .into_inner();
    let a_arg = format!("--ip=127.0.0.1 --port={}", a.addr.port());
    let a_flags: Vec<&str> = a_arg.split(' ').collect();
    let lbctl = |verb: &str| {
        let mut args = vec!["--pattern=/"];
        args.extend(&a_flags);
        args.push(verb);
        let (ok, _, err) = support::lbctl(&lb, &args);
        assert!(ok, "{verb}: {err}");
    };

    lbctl("drain");
    let drained = next_event(&mut events).await;
    assert_eq!(drained.cause, EventCause::EcAdmin as i32, "{drained:?}");
    assert_eq!(
        drained.status,
        BackendStatus::BsHealthy as i32,
        "{drained:?}"
    );
    assert!(
        drained
            .reason
            .starts_with("enabled -> drain: out of rotation"),
        "{drained:?}"
    );
    lbctl("enable");
    let enabled = next_event(&mut events).await;
    assert_eq!(enabled.cause, EventCause::EcAdmin as i32, "{enabled:?}");
    assert!(
        enabled
            .reason
            .starts_with("drain -> enabled: back in rotation"),
        "{enabled:?}"
    );

    // A save adding b: its first probe's judgement, and the reload that added it.
    std::fs::write(&lb.config, support::pool("/", &[a.addr, b.addr], "1h")).unwrap();
    let mut added = Vec::new();
    while added.len() < 2 {
        let event = next_event(&mut events).await;
        assert_eq!(port_of(&event), Some(b.addr.port()), "{event:?}");
        added.push(event);
    }
    assert!(
        added.iter().any(|e| e.cause == EventCause::EcReload as i32
            && e.reason.starts_with("added to the pool")
            && e.status == BackendStatus::BsHealthy as i32),
        "{added:?}"
    );
    // A save removing it again.
    std::fs::write(&lb.config, support::pool("/", &[a.addr], "1h")).unwrap();
    let removed = next_event(&mut events).await;
    assert_eq!(removed.cause, EventCause::EcReload as i32, "{removed:?}");
    assert_eq!(removed.status, BackendStatus::BsSick as i32, "{removed:?}");
    assert_eq!(removed.reason, "removed from the pool", "{removed:?}");
    assert_eq!(port_of(&removed), Some(b.addr.port()));
}

/// The port of the backend an event is about.
fn port_of(event: &lb::control::proto::HealthEvent) -> Option<u16> {
    use lb::control::proto::backend::Backend as Kind;
    match event.backend.as_ref()?.backend.as_ref()? {
        Kind::IpBackend(ip) => u16::try_from(ip.port).ok(),
    }
}
