use super::*;
use http::StatusCode;

fn check(values: &[&str]) -> HealthCheck {
    HealthCheck {
        url_path: "/healthz".to_owned(),
        healthy_values: values.iter().map(|v| (*v).to_owned()).collect(),
    }
}

#[test]
fn a_2xx_with_a_trimmed_body_equal_to_a_value_passes() {
    let ok = check(&["ok", "OK"]);
    for body in ["ok", "OK", "  ok\n", "\r\nOK\t"] {
        assert_eq!(
            judge(&ok, StatusCode::OK, body.as_bytes()),
            Ok(()),
            "{body:?}"
        );
    }
    assert_eq!(judge(&ok, StatusCode::NO_CONTENT, b"ok"), Ok(()));
}

#[test]
fn containing_a_value_is_not_equal_to_it() {
    let ok = check(&["ok", "OK"]);
    for body in ["broken", "okay", "not ok", "o k", "Ok", ""] {
        assert!(
            judge(&ok, StatusCode::OK, body.as_bytes()).is_err(),
            "{body:?}"
        );
    }
}

#[test]
fn a_status_other_than_2xx_fails_whatever_the_body() {
    let ok = check(&["ok"]);
    for status in [
        StatusCode::INTERNAL_SERVER_ERROR,
        StatusCode::MOVED_PERMANENTLY,
        StatusCode::NOT_FOUND,
    ] {
        assert!(judge(&ok, status, b"ok").is_err(), "{status}");
    }
}

#[test]
fn the_reason_says_what_was_expected_and_what_came() {
    let reason = judge(
        &check(&["ok", "up", "UP"]),
        StatusCode::INTERNAL_SERVER_ERROR,
        b"broken",
    )
    .unwrap_err();
    assert_eq!(
        reason,
        "GET /healthz answered 500 Internal Server Error with \"broken\"; expected 2xx with a body of \"ok\", \"up\" or \"UP\""
    );
    let reason = judge(&check(&["ok"]), StatusCode::OK, b"").unwrap_err();
    assert!(
        reason.contains("an empty body") && reason.contains("of \"ok\""),
        "{reason}"
    );
}

#[test]
fn the_body_in_a_reason_is_escaped_and_bounded() {
    let mut body = b"line\r\n\x1b[31mred\xff".to_vec();
    body.extend(std::iter::repeat_n(b'x', 10_000));
    let reason = judge(&check(&["ok"]), StatusCode::OK, &body).unwrap_err();
    assert!(
        reason.contains("\"line\\r\\n\\u{1b}[31mred\u{fffd}xxx"),
        "{reason}"
    );
    assert!(
        reason.contains(&format!("({} bytes)", body.len())),
        "{reason}"
    );
    assert!(reason.len() < 300, "{} bytes: {reason}", reason.len());
    assert!(!reason.contains('\n') && !reason.contains('\x1b'));
}

#[test]
fn the_phases_of_a_pool_spread_evenly_over_the_interval() {
    let interval = Duration::from_secs(2);
    let phases: Vec<Duration> = (0..4).map(|rank| phase(rank, 4, interval)).collect();
    assert_eq!(
        phases,
        [0, 500, 1000, 1500].map(Duration::from_millis).to_vec()
    );
    assert_eq!(phase(0, 1, interval), Duration::ZERO);
    assert_eq!(phase(3, 0, interval), Duration::ZERO);
    // Always inside the interval, even for a huge one.
    assert!(phase(9_999, 10_000, Duration::MAX) < Duration::MAX);
}

/// The checker closes a backend's expired idle connections on a timer of its own, not on reuse
/// and not at its next probe (here an hour away). On tokio's paused clock: no real time passes.
#[tokio::test(start_paused = true)]
async fn the_checker_closes_expired_idle_connections_between_probes() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let backend_addr: BackendAddr = addr.to_string().parse().unwrap();
    // Probed already (healthy), so the checker's first probe is one interval away.
    let backend = Arc::new(Backend::new(backend_addr.clone(), true));
    let settings = Arc::new(CheckSettings {
        interval: Duration::from_secs(3600),
        down_interval: Duration::from_secs(3600),
        checks: HealthChecks::default(),
        idle_timeout: Duration::from_secs(80),
        tls: None,
    });
    let (events, _) = tokio::sync::broadcast::channel(16);
    let mut checkers = Checkers::new(events);
    let pattern: Arc<str> = Arc::from("/");
    let wanted = vec![(backend_addr, Arc::clone(&backend), Some(settings))];
    checkers.reconcile_pool(&pattern, wanted);
    backend
        .connections
        .put_stream(crate::idle_connections::Upstream::plain(socket));

    // The sweep runs every idle_timeout / 8 = 10 s; sleeping on the paused clock lets it run.
    tokio::time::sleep(Duration::from_secs(79)).await;
    assert_eq!(backend.connections.len(), 1, "idle for 79 s of 80");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        backend.connections.is_empty(),
        "idle for 81 s of 80, swept at 80"
    );
    assert_eq!(
        backend.checks.passed() + backend.checks.failed(),
        0,
        "no probe ran"
    );
}
