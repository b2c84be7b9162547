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
        metrics.contains("lb_config_reloads_total{source=\"file\",result=\"error\"} 0"),
        "{metrics}"
    );
    // What an SRE looks for first: the build and the process.
    assert!(
        metrics.contains(&format!(
            "lb_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{metrics}"
    );
    // CPU time counts in 10 ms ticks: a young lb may have used less.
    assert!(value("process_cpu_seconds_total") >= 0.0);
    for name in [
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ] {
        assert!(value(name) > 0.0, "{name} in\n{metrics}");
    }
    // Latency buckets start at 100 µs.
    assert!(
        metrics.contains(&format!(
            "lb_request_duration_seconds_bucket{{{a_label},le=\"0.0001\"}}"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("lb_passive_ejections_total{{{a_label}}} 0")),
        "{metrics}"
    );
    // Retries are counted against the backend whose attempt failed; open connections by the
    // listener that accepted them (the client's keep-alive one may still be open).
    assert!(
        metrics.contains(&format!("lb_retries_total{{{a_label}}} 0")),
        "{metrics}"
    );
    let http = lb
        .url("")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    assert!(
        value(&format!(
            "lb_listener_connections_open{{listener=\"{http}\"}}"
        )) >= 0.0,
        "{metrics}"
    );

    // A control-API change counts as an application by the API.
    support::control(&lb)
        .await
        .add_pool(support::add_pool_req("/x/"))
        .await
        .unwrap();
    let (_, metrics) = get(&client, &admin_url(&lb, "/metrics")).await;
    assert!(
        metrics.contains("lb_config_reloads_total{source=\"api\",result=\"ok\"} 1"),
        "{metrics}"
    );

    std::fs::write(&lb.config, "[pools.\"/\"]\nbogus = 1\n").unwrap();
    eventually(Duration::from_secs(3), "reload error counted", || async {
        get(&client, &admin_url(&lb, "/metrics"))
            .await
            .1
            .contains("lb_config_reloads_total{source=\"file\",result=\"error\"} 1")
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

/// README's metrics table names every family `/metrics` serves, with its type and labels, and
/// every family it lists without "with `[tls]`" / "with `[sync]`" is served by a plain lb.
#[tokio::test]
async fn the_readme_lists_every_metric_with_its_type_and_labels() {
    use std::collections::{BTreeMap, BTreeSet};
    let readme = include_str!("../README.md");
    let table = readme
        .split("<!-- metrics-table -->")
        .nth(1)
        .expect("README has the metrics table");
    // name -> (type, labels, only with [tls] or [sync])
    let mut listed: BTreeMap<String, (String, BTreeSet<String>, bool)> = BTreeMap::new();
    let rows = table.lines().skip_while(|l| !l.starts_with('|')).skip(2);
    for row in rows.take_while(|l| l.starts_with('|')) {
        let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
        let name = cells[0].trim_matches('`').to_owned();
        let labels = cells[2]
            .split(',')
            .map(|l| l.trim().trim_matches('`').to_owned())
            .filter(|l| !l.is_empty())
            .collect();
        let optional = cells[3].starts_with("with `[");
        listed.insert(name, (cells[1].to_owned(), labels, optional));
    }
    let a = Backend::start("a").await;
    let lb = start_with_admin(&support::pool("/", &[a.addr], "100ms"));
    let client = support::client();
    eventually(Duration::from_secs(5), "a serving", || async {
        get(&client, &lb.url("/")).await.0 == StatusCode::OK
    })
    .await;
    let (_, metrics) = get(&client, &admin_url(&lb, "/metrics")).await;
    let mut served: BTreeMap<String, (String, BTreeSet<String>)> = BTreeMap::new();
    for line in metrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            served.insert(name.to_owned(), (kind.to_owned(), BTreeSet::new()));
        }
    }
    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
        let Some((sample, labels)) = line.split_once('{') else {
            continue;
        };
        let family = served
            .keys()
            .filter(|name| sample.starts_with(name.as_str()))
            .max_by_key(|name| name.len())
            .cloned()
            .unwrap_or_else(|| panic!("no family for {line}"));
        let names = labels
            .split(',')
            .filter_map(|l| l.split_once('=').map(|(n, _)| n.to_owned()))
            .filter(|n| n != "le");
        served.get_mut(&family).unwrap().1.extend(names);
    }
    for (name, (kind, labels)) in &served {
        let (listed_kind, listed_labels, _) = listed
            .get(name)
            .unwrap_or_else(|| panic!("README does not list {name} ({kind})"));
        assert_eq!(listed_kind, kind, "{name}'s type");
        assert_eq!(listed_labels, labels, "{name}'s labels");
    }
    for (name, (_, _, optional)) in &listed {
        assert!(
            *optional || served.contains_key(name),
            "README lists {name}, which /metrics does not serve"
        );
    }
}

/// lb keeps the last minutes per pool and backend: after traffic, `/history.json` holds it,
/// one sample a second in a ring of bounded size, and `/status.json` has what an operator
/// looks for first (codes, errors, the last check and its reason, down-since, uptime).
#[tokio::test]
async fn history_json_keeps_the_last_minutes_and_status_has_the_operators_fields() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    b.set_healthy(false);
    let lb = start_with_admin(&support::pool("/", &[a.addr, b.addr], "100ms"));
    let client = support::client();
    eventually(Duration::from_secs(5), "a serving", || async {
        get(&client, &lb.url("/")).await.0 == StatusCode::OK
    })
    .await;
    for _ in 0..19 {
        assert_eq!(get(&client, &lb.url("/")).await.0, StatusCode::OK);
    }
    let a_addr = a.addr.to_string();
    let b_addr = b.addr.to_string();
    let history = |seconds: Option<u32>| {
        let url = match seconds {
            Some(n) => admin_url(&lb, &format!("/history.json?seconds={n}")),
            None => admin_url(&lb, "/history.json"),
        };
        let client = client.clone();
        async move {
            let (status, body) = get(&client, &url).await;
            assert_eq!(status, StatusCode::OK);
            serde_json::from_str::<serde_json::Value>(&body).unwrap()
        }
    };
    let total = |series: &serde_json::Value, field: &str| -> u64 {
        series[field]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .sum()
    };
    // Every request lands in the second it finished: once the sampler has passed it, the
    // samples add up to all 20, the pool's and the backend's alike.
    eventually(
        Duration::from_secs(5),
        "20 requests in the history",
        || async {
            let doc = history(None).await;
            let pool = &doc["pools"][0];
            total(pool, "requests") == 20 && total(&pool["backends"][0], "requests") == 20
        },
    )
    .await;
    let doc = history(None).await;
    assert_eq!(doc["capacity"], 900);
    let times = doc["times_unix_ms"].as_array().unwrap();
    assert!(!times.is_empty() && times.len() <= 900, "{doc}");
    let pool = &doc["pools"][0];
    assert_eq!(pool["pattern"], "/");
    assert_eq!(pool["backends"][0]["addr"], a_addr.as_str());
    assert_eq!(pool["backends"][1]["addr"], b_addr.as_str());
    // Each series ends with the newest sample, no longer than the times.
    for series in [pool, &pool["backends"][0], &pool["backends"][1]] {
        let n = series["requests"].as_array().unwrap().len();
        assert!(n >= 1 && n <= times.len(), "{series}");
        assert_eq!(series["p99_ms"].as_array().unwrap().len(), n);
        assert_eq!(series["in_rotation"].as_array().unwrap().len(), n);
    }
    assert_eq!(total(pool, "errors"), 0);
    assert_eq!(pool["healthy"].as_array().unwrap().last().unwrap(), 1);
    assert_eq!(
        pool["backends"][1]["healthy"]
            .as_array()
            .unwrap()
            .last()
            .unwrap(),
        0
    );
    let p99 = pool["p99_ms"].as_array().unwrap();
    assert!(
        p99.iter()
            .any(|v| v.as_f64().is_some_and(|ms| ms > 0.0 && ms <= 10_000.0)),
        "{doc}"
    );
    // The window asked for, at most.
    let short = history(Some(2)).await;
    assert!(
        short["times_unix_ms"].as_array().unwrap().len() <= 2,
        "{short}"
    );
    assert!(short["pools"][0]["requests"].as_array().unwrap().len() <= 2);

    let (_, body) = get(&client, &admin_url(&lb, "/status.json")).await;
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert!(status["started_at_unix"].as_u64().unwrap() > 0);
    assert!(status["uptime_seconds"].is_u64());
    assert!(status["connections_open"].is_u64());
    assert_eq!(status["listeners"].as_array().unwrap().len(), 1);
    let backends = &status["pools"][0]["backends"];
    let (up, sick) = (&backends[0], &backends[1]);
    assert_eq!(up["codes"]["200"], 20, "{up}");
    // 20 requests and their answers crossed lb's connections to a; nothing went to b.
    let (sent, received) = (
        up["bytes_sent"].as_u64().unwrap(),
        up["bytes_received"].as_u64().unwrap(),
    );
    assert!(sent >= 20 * 16 && received >= 20 * 16, "{up}");
    assert_eq!(
        total(&pool["backends"][0], "bytes_received"),
        received,
        "{doc}"
    );
    assert_eq!(sick["bytes_sent"], 0);
    assert_eq!(up["errors"], 0);
    assert_eq!(up["retries"], 0);
    assert_eq!(up["ejections"], 0);
    assert_eq!(up["last_check"]["result"], "pass", "{up}");
    assert!(up["down_since_unix_ms"].is_null());
    assert_eq!(sick["last_check"]["result"], "fail", "{sick}");
    assert!(
        sick["last_check"]["reason"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{sick}"
    );
    assert!(sick["checks_failed"].as_u64().unwrap() >= 1);
    let down_since = sick["down_since_unix_ms"].as_u64().expect("down since");
    assert!(down_since >= status["started_at_unix"].as_u64().unwrap() * 1000);
}

/// A refused connect is retried on the other backend and ejects the first: the retry is
/// counted against the backend that failed, in `/metrics`, `/status.json` and the history.
#[tokio::test]
async fn a_retry_and_an_ejection_are_counted_against_the_backend_that_failed() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let lb = start_with_admin(&support::pool("/", &[a.addr, b.addr], "10s"));
    let client = support::client();
    for backend in [a.addr, b.addr] {
        support::healthy_eventually(&lb, "/", backend, Duration::from_secs(5)).await;
    }
    let a_addr = a.kill().await;
    // P2C picks either; until a is picked once, b answers directly.
    let ejected = format!("connect failed; backend out of rotation pool=/ backend={a_addr}");
    let mut sent = 0;
    while lb.find_log(&ejected).is_none() {
        assert!(sent < 60, "a was never picked and ejected");
        assert_eq!(
            get(&client, &lb.url("/")).await,
            (StatusCode::OK, "b".to_owned())
        );
        sent += 1;
    }
    let a_label = format!("pool=\"/\",backend=\"{a_addr}\"");
    let b_label = format!("pool=\"/\",backend=\"{}\"", b.addr);
    let (_, metrics) = get(&client, &admin_url(&lb, "/metrics")).await;
    for expected in [
        format!("lb_retries_total{{{a_label}}} 1"),
        format!("lb_retries_total{{{b_label}}} 0"),
        format!("lb_passive_ejections_total{{{a_label}}} 1"),
    ] {
        assert!(metrics.contains(&expected), "{expected} in\n{metrics}");
    }
    let (_, body) = get(&client, &admin_url(&lb, "/status.json")).await;
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    let first = &status["pools"][0]["backends"][0];
    assert_eq!(first["addr"], a_addr.to_string());
    assert_eq!(first["retries"], 1, "{first}");
    assert_eq!(first["ejections"], 1, "{first}");
    assert_eq!(first["ejected"], true, "{first}");
    assert!(first["down_since_unix_ms"].as_u64().is_some(), "{first}");
    eventually(
        Duration::from_secs(5),
        "the retry in the history",
        || async {
            let (_, body) = get(&client, &admin_url(&lb, "/history.json")).await;
            let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
            let sum = |series: &serde_json::Value, field: &str| -> u64 {
                series[field]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|v| v.as_u64())
                    .sum()
            };
            let pool = &doc["pools"][0];
            sum(pool, "retries") == 1
                && sum(pool, "ejections") == 1
                && sum(&pool["backends"][0], "retries") == 1
                && pool["in_rotation"].as_array().unwrap().last() == Some(&1.into())
        },
    )
    .await;
}
