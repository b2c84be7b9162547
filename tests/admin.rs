//! The admin listener: metrics, liveness, readiness, status document and dashboard.

mod support;

use std::time::Duration;

use http::StatusCode;
use support::{eventually, get, Backend, Lb};

fn start_with_admin(text: &str) -> Lb {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("lb.toml");
    std::fs::write(&config, text).unwrap();
    Lb::start_at(dir, config, &["--admin", "127.0.0.1:0"])
}

fn admin_url(lb: &Lb, path: &str) -> String {
    lb.admin_url(path)
}

#[tokio::test]
async fn metrics_cover_requests_health_and_reloads() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    b.set_healthy(false);
    let lb = start_with_admin(&support::pool("/", &[a.addr, b.addr], "100ms"));
    let client = support::client();
    eventually(Duration::from_secs(5), "a serving", || async {
        get(&client, &lb.url("/")).await.0 == StatusCode::OK
    })
    .await;
    for _ in 0..9 {
        get(&client, &lb.url("/")).await;
    }
    let (status, metrics) = get(&client, &admin_url(&lb, "/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    let a_label = format!("pool=\"/\",backend=\"{}\"", a.addr);
    let b_label = format!("pool=\"/\",backend=\"{}\"", b.addr);
    assert!(
        metrics.contains(&format!("lb_requests_total{{{a_label},code=\"200\"}} 10")),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "lb_request_duration_seconds_count{{{a_label}}} 10"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("lb_backend_healthy{{{a_label}}} 1")),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("lb_backend_healthy{{{b_label}}} 0")),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("lb_backend_in_flight{{{a_label}}} 0")),
        "{metrics}"
    );
    // a passes its checks and b fails them; each probe's duration is kept.
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{metrics}"))
    };
    assert!(
        value(&format!(
            "lb_health_checks_total{{{a_label},result=\"pass\"}}"
        )) >= 1.0
    );
    assert!(
        value(&format!(
            "lb_health_checks_total{{{b_label},result=\"fail\"}}"
        )) >= 1.0
    );
    assert_eq!(
        value(&format!(
            "lb_health_checks_total{{{b_label},result=\"pass\"}}"
        )),
        0.0
    );
    let took = value(&format!("lb_health_check_duration_seconds{{{a_label}}}"));
    assert!(took > 0.0 && took < 1.0, "{took}");
    assert!(metrics.contains("lb_config_generation 1"), "{metrics}");
    assert!(
        metrics.contains("lb_config_reloads_total{result=\"error\"} 0"),
        "{metrics}"
    );

    std::fs::write(&lb.config, "[pools.\"/\"]\nbogus = 1\n").unwrap();
    eventually(Duration::from_secs(3), "reload error counted", || async {
        get(&client, &admin_url(&lb, "/metrics"))
            .await
            .1
            .contains("lb_config_reloads_total{result=\"error\"} 1")
    })
    .await;
}

#[tokio::test]
async fn liveness_readiness_status_and_dashboard() {
    let a = Backend::start("a").await;
    let lb = start_with_admin(&support::pool("/api/", &[a.addr], "100ms"));
    let client = support::client();
    assert_eq!(
        get(&client, &admin_url(&lb, "/healthz")).await,
        (StatusCode::OK, "ok\n".to_owned())
    );
    assert_eq!(
        get(&client, &admin_url(&lb, "/readyz")).await.0,
        StatusCode::OK
    );
    eventually(
        Duration::from_secs(5),
        "status shows the pool full",
        || async {
            let (_, body) = get(&client, &admin_url(&lb, "/status.json")).await;
            let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
            doc["pools"][0]["pattern"] == "/api/"
                && doc["pools"][0]["status"] == "PS_FULL"
                && doc["generation"] == 1
        },
    )
    .await;
    let (status, page) = get(&client, &admin_url(&lb, "/")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("status.json") && page.contains("<title>lb dashboard</title>"));
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "the page must be self-contained"
    );
}

#[tokio::test]
async fn the_access_log_can_go_to_a_file_as_json_lines() {
    let a = Backend::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    let access = dir.path().join("access.log");
    let config = dir.path().join("lb.toml");
    std::fs::write(
        &config,
        format!(
            "[log]\naccess = \"{}\"\nformat = \"json\"\n\n{}",
            access.display(),
            support::pool("/", &[a.addr], "100ms")
        ),
    )
    .unwrap();
    let lb = Lb::start_at(dir, config, &[]);
    let client = support::client();
    eventually(Duration::from_secs(5), "a serving", || async {
        get(&client, &lb.url("/hello?x=1")).await.0 == StatusCode::OK
    })
    .await;
    eventually(
        Duration::from_secs(5),
        "an access line with status 200",
        || async {
            std::fs::read_to_string(&access)
                .unwrap_or_default()
                .lines()
                .any(|line| {
                    serde_json::from_str::<serde_json::Value>(line).is_ok_and(|v| {
                        let f = &v["fields"];
                        f["status"] == 200
                            && f["path"] == "/hello"
                            && f["method"] == "GET"
                            && f["pool"] == "/"
                            && f["backend"] == a.addr.to_string()
                            && f["duration_ms"].is_number()
                            && f["client"].is_string()
                    })
                })
        },
    )
    .await;
    // Access lines go to the file only; the process log on stderr stays JSON too.
    assert!(
        lb.logs().iter().all(|l| !l.contains("\"lb::access\"")),
        "access lines leaked to stderr"
    );
    assert!(lb
        .logs()
        .iter()
        .any(|l| l.starts_with('{') && l.contains("listening")));
}

/// `/status.json` says what made the applied generation, which the dashboard's reload history
/// shows as "who": the file at start, a save, or the control-API change and its actor.
#[tokio::test]
async fn status_says_who_made_each_generation() {
    use lb::control::proto;
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let lb = start_with_admin(&support::pool("/", &[a.addr], "1h"));
    let client = support::client();
    let applied_by = |generation: u64| {
        let (client, url) = (client.clone(), admin_url(&lb, "/status.json"));
        async move {
            let (_, body) = get(&client, &url).await;
            let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
            (doc["generation"] == generation).then(|| doc["applied_by"].as_str().map(str::to_owned))
        }
    };
    let wait = Duration::from_secs(5);
    eventually(wait, "generation 1 by start", || async {
        applied_by(1).await == Some(Some("start".to_owned()))
    })
    .await;

    std::fs::write(&lb.config, support::pool("/", &[a.addr], "2h")).unwrap();
    eventually(wait, "generation 2 by a file save", || async {
        applied_by(2).await == Some(Some("file".to_owned()))
    })
    .await;

    let mut control = support::control(&lb).await;
    let mut request = tonic::Request::new(proto::AddBackendReq {
        pattern: "/".into(),
        backend: support::ip_backend(b.addr, ""),
        if_match: None,
    });
    request
        .metadata_mut()
        .insert("x-lb-actor", "alice".parse().unwrap());
    control.add_backend(request).await.unwrap();
    let expected = format!("AddBackend / {} by alice", b.addr);
    eventually(wait, "generation 3 by alice's AddBackend", || async {
        applied_by(3).await == Some(Some(expected.clone()))
    })
    .await;
}

/// `/status.json` gives each pool the word the dashboard shows: `down` when it has backends but
/// none in rotation (its wire status stays `PS_DEGRADED`), and the page draws that state.
#[tokio::test]
async fn status_json_says_down_for_a_pool_with_no_backend_in_rotation() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    b.set_healthy(false);
    let lb = start_with_admin(&format!(
        "{}{}",
        support::pool("/", &[a.addr], "100ms"),
        support::pool("/api/", &[b.addr], "100ms")
    ));
    let client = support::client();
    let url = admin_url(&lb, "/status.json");
    eventually(Duration::from_secs(5), "/api/ down, / up", || async {
        let (_, body) = get(&client, &url).await;
        let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
        doc["pools"][1]["state"] == "down"
            && doc["pools"][1]["status"] == "PS_DEGRADED"
            && doc["pools"][0]["state"] == "up"
    })
    .await;
    let (_, page) = get(&client, &admin_url(&lb, "/")).await;
    assert!(
        page.contains("pool.state === \"down\""),
        "the page ignores state"
    );
}
