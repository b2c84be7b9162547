//! A pool's canary in the data plane, through real lb processes and real backends, over both
//! protocols: the weighted split's share, sticky keys (the same side through two lb processes,
//! kept as the weight grows), the force header, the fallback of a side with no backend in
//! rotation, and weight changes under load.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::{Request, StatusCode};
use support::{eventually, generation_reached, healthy_eventually, Backend, Lb, Load};

const WAIT: Duration = Duration::from_secs(10);

/// One pool `/` over `stable` with `canary` beside it; `extra`: more lines of the canary table.
fn config(stable: SocketAddr, canary: SocketAddr, weight: u8, extra: &str) -> String {
    format!(
        "[pools.\"/\"]\ninterval = \"100ms\"\nbackends = [\"{stable}\"]\n\n\
         [pools.\"/\".canary]\nbackends = [\"{canary}\"]\nweight = {weight}\n{extra}"
    )
}

/// Starts lb on `text` and waits until both backends take traffic.
async fn start(text: &str, stable: &Backend, canary: &Backend) -> Lb {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("lb.toml");
    std::fs::write(&path, text).expect("write lb.toml");
    let lb = Lb::start_at(dir, path, &["--admin", "127.0.0.1:0"]);
    healthy_eventually(&lb, "/", stable.addr, WAIT).await;
    healthy_eventually(&lb, "/", canary.addr, WAIT).await;
    lb
}

/// Writes `text` as lb's file and waits until it is applied (the generation after `from`).
async fn reload(lb: &Lb, text: &str, from: u64) -> u64 {
    std::fs::write(&lb.config, text).expect("write lb.toml");
    generation_reached(lb, from + 1, WAIT).await.generation
}

/// `n` GETs of `/` over HTTP/1.1, on `lanes` keep-alive connections at once; every answer must
/// be a 200. Returns how many `canary` answered.
async fn canary_hits_http1(lb: &Lb, canary: &Backend, n: usize, lanes: usize) -> usize {
    let before = canary.hits();
    let url = lb.url("/");
    let tasks: Vec<_> = (0..lanes)
        .map(|lane| {
            let url = url.clone();
            let count = n / lanes + usize::from(lane < n % lanes);
            tokio::spawn(async move {
                let client = support::client();
                for _ in 0..count {
                    let (status, body) = support::get(&client, &url).await;
                    assert_eq!(status, StatusCode::OK, "{body}");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("client task");
    }
    canary.hits() - before
}

/// [`canary_hits_http1`] over h2c: `lanes` streams at once on one connection.
async fn canary_hits_http2(lb: &Lb, canary: &Backend, n: usize, lanes: usize) -> usize {
    let before = canary.hits();
    let stream = tokio::net::TcpStream::connect(lb.http)
        .await
        .expect("connect");
    let sender = support::h2_connection(stream).await;
    let uri = format!("http://{}/", lb.http);
    let tasks: Vec<_> = (0..lanes)
        .map(|lane| {
            let (mut sender, uri) = (sender.clone(), uri.clone());
            let count = n / lanes + usize::from(lane < n % lanes);
            tokio::spawn(async move {
                for _ in 0..count {
                    let (status, _, body) = support::h2_get(&mut sender, &uri).await;
                    assert_eq!(status, StatusCode::OK, "{body:?}");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("client task");
    }
    canary.hits() - before
}

/// One HTTP/1.1 GET with `headers`; the answering backend's name.
async fn answered_by(lb: &Lb, headers: &[(&str, &str)]) -> String {
    let mut request = Request::get(lb.url("/"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(Bytes::new())).expect("request");
    let (status, body) = support::send(&support::client(), request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// One h2c GET with `headers` on `sender`; the answering backend's name.
async fn answered_by_http2(
    sender: &mut hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    lb: &Lb,
    headers: &[(&str, &str)],
) -> String {
    let mut request = Request::get(format!("http://{}/", lb.http));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Empty::new()).expect("request");
    let response = tokio::time::timeout(WAIT, sender.send_request(request))
        .await
        .expect("answer in time")
        .expect("answer");
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.expect("body");
    String::from_utf8_lossy(&body.to_bytes()).into_owned()
}

fn share(hits: usize, n: usize) -> f64 {
    hits as f64 / n as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_split_holds_the_weight_within_a_point_over_both_protocols() {
    let (stable, canary) = (
        Backend::start("stable").await,
        Backend::start("canary").await,
    );
    let lb = start(&config(stable.addr, canary.addr, 5, ""), &stable, &canary).await;
    let mut generation = support::status(&lb).await.generation;
    for weight in [5u8, 25, 50] {
        if weight != 5 {
            let text = config(stable.addr, canary.addr, weight, "");
            generation = reload(&lb, &text, generation).await;
        }
        // 20,000 requests a weight: half over HTTP/1.1, half over h2c, through one split.
        let http1 = canary_hits_http1(&lb, &canary, 10_000, 8).await;
        let http2 = canary_hits_http2(&lb, &canary, 10_000, 8).await;
        let wanted = f64::from(weight) / 100.0;
        for (protocol, hits) in [("HTTP/1.1", http1), ("h2c", http2)] {
            let got = share(hits, 10_000);
            assert!(
                (got - wanted).abs() <= 0.01,
                "{protocol} at weight {weight}: canary share {got}"
            );
        }
        let got = share(http1 + http2, 20_000);
        assert!((got - wanted).abs() <= 0.01, "weight {weight}: {got}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_keys_stay_on_their_side_across_processes_and_as_the_weight_grows() {
    let (stable, canary) = (
        Backend::start("stable").await,
        Backend::start("canary").await,
    );
    let sticky = "sticky = \"header:x-user-id\"\n";
    let text = config(stable.addr, canary.addr, 5, sticky);
    let first = start(&text, &stable, &canary).await;
    let second = start(&text, &stable, &canary).await;

    // One key: 1,000 requests, one side.
    let mut sides = std::collections::HashSet::new();
    for _ in 0..1_000 {
        sides.insert(answered_by(&first, &[("x-user-id", "user-42")]).await);
    }
    assert_eq!(sides.len(), 1, "one key reached {sides:?}");

    // 400 keys split the same way by both processes, over both protocols.
    let stream = tokio::net::TcpStream::connect(second.http)
        .await
        .expect("connect");
    let mut h2 = support::h2_connection(stream).await;
    let keys: Vec<String> = (0..400).map(|i| format!("user-{i}")).collect();
    let mut on_canary = Vec::new();
    for key in &keys {
        let here = answered_by(&first, &[("x-user-id", key)]).await;
        let there = answered_by_http2(&mut h2, &second, &[("x-user-id", key)]).await;
        assert_eq!(here, there, "{key} split differently by two lb processes");
        if here == "canary" {
            on_canary.push(key.clone());
        }
    }
    assert!(
        !on_canary.is_empty() && on_canary.len() < 60,
        "{} of 400 keys on a 5% canary",
        on_canary.len()
    );

    // At 25%, every key that was on the canary is still there, and more join it.
    let generation = support::status(&first).await.generation;
    reload(
        &first,
        &config(stable.addr, canary.addr, 25, sticky),
        generation,
    )
    .await;
    let mut now_on_canary = 0;
    for key in &keys {
        let side = answered_by(&first, &[("x-user-id", key)]).await;
        if on_canary.contains(key) {
            assert_eq!(side, "canary", "{key} left the canary when the weight grew");
        }
        now_on_canary += usize::from(side == "canary");
    }
    assert!(
        now_on_canary > on_canary.len(),
        "{now_on_canary} keys at 25%"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sticky_cookie_keeps_a_client_on_its_side() {
    let (stable, canary) = (
        Backend::start("stable").await,
        Backend::start("canary").await,
    );
    let text = config(
        stable.addr,
        canary.addr,
        50,
        "sticky = \"cookie:session\"\n",
    );
    let lb = start(&text, &stable, &canary).await;
    let mut seen = std::collections::HashMap::new();
    for i in 0..200 {
        let cookie = format!("theme=dark; session=s{}; lang=en", i % 20);
        let side = answered_by(&lb, &[("cookie", &cookie)]).await;
        let first = seen.entry(i % 20).or_insert_with(|| side.clone());
        assert_eq!(*first, side, "session s{} moved", i % 20);
    }
    let sides: std::collections::HashSet<_> = seen.values().collect();
    assert_eq!(
        sides.len(),
        2,
        "20 sessions at 50% all on one side: {sides:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_force_header_overrides_weight_and_stickiness() {
    let (stable, canary) = (
        Backend::start("stable").await,
        Backend::start("canary").await,
    );
    let extra = "sticky = \"header:x-user-id\"\nforce_header = \"X-LB-Canary\"\n";
    let lb = start(
        &config(stable.addr, canary.addr, 0, extra),
        &stable,
        &canary,
    )
    .await;
    let stream = tokio::net::TcpStream::connect(lb.http)
        .await
        .expect("connect");
    let mut h2 = support::h2_connection(stream).await;
    for _ in 0..20 {
        assert_eq!(answered_by(&lb, &[]).await, "stable", "weight 0");
        let forced = [("x-lb-canary", "always"), ("x-user-id", "user-1")];
        assert_eq!(answered_by(&lb, &forced).await, "canary");
        assert_eq!(answered_by_http2(&mut h2, &lb, &forced).await, "canary");
    }
    let generation = support::status(&lb).await.generation;
    reload(
        &lb,
        &config(stable.addr, canary.addr, 100, extra),
        generation,
    )
    .await;
    for _ in 0..20 {
        assert_eq!(answered_by(&lb, &[]).await, "canary", "weight 100");
        let forced = [("X-LB-Canary", "Never")];
        assert_eq!(answered_by(&lb, &forced).await, "stable");
        assert_eq!(answered_by_http2(&mut h2, &lb, &forced).await, "stable");
    }
}

/// The value of the sample `name{labels}` in lb's metrics, if present.
async fn metric(lb: &Lb, sample: &str) -> Option<f64> {
    let (_, text) = support::get(&support::client(), &lb.admin_url("/metrics")).await;
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_with_no_backend_in_rotation_hands_its_share_to_stable_and_counts_it() {
    let (stable, canary) = (
        Backend::start("stable").await,
        Backend::start("canary").await,
    );
    let lb = start(&config(stable.addr, canary.addr, 50, ""), &stable, &canary).await;
    canary.set_healthy(false);
    eventually(WAIT, "the canary out of rotation", || async {
        !support::backend_is_healthy(&lb, "/", canary.addr).await
    })
    .await;
    let before = canary.hits();
    assert_eq!(canary_hits_http1(&lb, &canary, 200, 4).await, 0);
    assert_eq!(canary_hits_http2(&lb, &canary, 200, 4).await, 0);
    assert_eq!(canary.hits(), before);
    let fallbacks = metric(&lb, "lb_canary_fallbacks_total{pool=\"/\",side=\"canary\"}").await;
    assert_eq!(
        fallbacks,
        Some(200.0),
        "half of 400 requests were the canary's"
    );

    // And a stable side with nothing in rotation hands everything to the canary.
    canary.set_healthy(true);
    healthy_eventually(&lb, "/", canary.addr, WAIT).await;
    stable.set_healthy(false);
    eventually(WAIT, "stable out of rotation", || async {
        !support::backend_is_healthy(&lb, "/", stable.addr).await
    })
    .await;
    assert_eq!(canary_hits_http1(&lb, &canary, 100, 4).await, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weight_changes_under_load_fail_no_request() {
    let (stable, canary) = (
        Backend::start("stable").await,
        Backend::start("canary").await,
    );
    let lb = Arc::new(start(&config(stable.addr, canary.addr, 0, ""), &stable, &canary).await);
    let load = Load::start(&lb, 4);
    let mut generation = support::status(&lb).await.generation;
    for weight in [10u8, 50, 100, 25, 0, 75] {
        generation = reload(
            &lb,
            &config(stable.addr, canary.addr, weight, ""),
            generation,
        )
        .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (ok, failed) = load.finish().await;
    assert_eq!(failed, 0, "{failed} of {} failed", ok + failed);
    assert!(ok > 0 && canary.hits() > 0 && stable.hits() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_each_side_over_the_window() {
    let (stable, canary) = (
        Backend::start("stable").await,
        Backend::start("canary").await,
    );
    let lb = start(&config(stable.addr, canary.addr, 20, ""), &stable, &canary).await;
    let hits = canary_hits_http1(&lb, &canary, 500, 2).await;
    assert_eq!(hits, 100);
    assert_eq!(
        metric(&lb, "lb_canary_weight_percent{pool=\"/\"}").await,
        Some(20.0)
    );
    let requests = |side: &'static str| {
        let lb = &lb;
        async move {
            metric(
                lb,
                &format!("lb_canary_window_requests{{pool=\"/\",side=\"{side}\"}}"),
            )
            .await
        }
    };
    assert_eq!(requests("canary").await, Some(100.0));
    assert_eq!(requests("stable").await, Some(400.0));
    let p99 = metric(
        &lb,
        "lb_canary_window_p99_seconds{pool=\"/\",side=\"canary\"}",
    )
    .await;
    assert!(p99.is_some_and(|s| s > 0.0), "{p99:?}");
}

#[test]
fn lb_check_refuses_a_bad_canary_with_its_position() {
    let stable = "127.0.0.1:9001";
    let cases = [
        (
            "weight = 101",
            "canary weight must be a whole percent from 0 to 100",
        ),
        (
            "weight = -1",
            "canary weight must be a whole percent from 0 to 100",
        ),
        ("", "canary needs a weight"),
        (
            "weight = 5\nsticky = \"ip\"",
            "is not \"cookie:NAME\" or \"header:NAME\"",
        ),
        (
            "weight = 5\nsticky = \"header:\"",
            "is not \"cookie:NAME\" or \"header:NAME\"",
        ),
        (
            "weight = 5\nforce_header = \"x lb\"",
            "is not a valid header name",
        ),
        ("weight = 5\nstep = 1", "unknown field `step`"),
    ];
    for (table, wanted) in cases {
        let text = format!(
            "[pools.\"/\"]\nbackends = [\"{stable}\"]\n[pools.\"/\".canary]\nbackends = [\"127.0.0.1:9002\"]\n{table}\n"
        );
        let (ok, output) = support::lb_check(&text);
        assert!(!ok, "{table:?} passed: {output}");
        assert!(output.contains(wanted), "{table:?}: {output}");
        assert!(output.contains("PATH:"), "no position: {output}");
    }
    let both = format!(
        "[pools.\"/\"]\nbackends = [\"{stable}\"]\n[pools.\"/\".canary]\nbackends = [\"{stable}\"]\nweight = 5\n"
    );
    let (ok, output) = support::lb_check(&both);
    assert!(
        !ok && output.contains("is both stable and canary"),
        "{output}"
    );
    assert!(output.contains("PATH:4:"), "the canary line: {output}");

    let good = format!(
        "[pools.\"/\"]\nbackends = [\"{stable}\"]\n[pools.\"/\".canary]\nbackends = [{{ addr = \"127.0.0.1:9002\", state = \"drain\" }}]\nweight = 5\nsticky = \"cookie:session\"\nforce_header = \"X-LB-Canary\"\n"
    );
    let (ok, output) = support::lb_check(&good);
    assert!(ok, "{output}");
}

/// `lbctl canary status / ARGS` against `lb`: (exit ok, stdout).
fn canary_status(lb: &Lb, args: &[&str]) -> (bool, String) {
    let mut all = vec!["canary", "status", "/"];
    all.extend_from_slice(args);
    let (ok, out, err) = support::lbctl(lb, &all);
    (ok, format!("{out}{err}"))
}

/// Sends `n` GETs over HTTP/1.1 on `lanes` connections; every answer counts, 500s included.
async fn send_all(lb: &Lb, n: usize, lanes: usize) {
    let url = lb.url("/");
    let tasks: Vec<_> = (0..lanes)
        .map(|lane| {
            let url = url.clone();
            let count = n / lanes + usize::from(lane < n % lanes);
            tokio::spawn(async move {
                let client = support::client();
                for _ in 0..count {
                    let (status, _) = support::get(&client, &url).await;
                    assert!(
                        status == StatusCode::OK || status == StatusCode::INTERNAL_SERVER_ERROR
                    );
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("client task");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_status_fails_an_erroring_canary_with_its_figures() {
    let stable = support::SampleWeb::start(&["--node", "stable"]);
    let canary = support::SampleWeb::start(&["--node", "canary", "--error-rate", "0.2"]);
    let lb = Lb::start(&config(stable.addr, canary.addr, 50, ""));
    healthy_eventually(&lb, "/", stable.addr, WAIT).await;
    healthy_eventually(&lb, "/", canary.addr, WAIT).await;

    // Before traffic: never a failure, only what is missing.
    let (ok, out) = canary_status(&lb, &[]);
    assert!(ok, "{out}");
    assert!(out.contains("verdict: not enough data"), "{out}");
    assert!(
        out.contains("waiting for 100 more canary and 100 more stable"),
        "{out}"
    );

    send_all(&lb, 400, 4).await;
    let (ok, out) = canary_status(&lb, &[]);
    assert!(ok, "{out}");
    assert!(out.contains("verdict: fail"), "{out}");
    assert!(
        out.contains("canary error rate 20.00% (40 of 200) is above the maximum 5.00%"),
        "{out}"
    );
    let canary_row = out
        .lines()
        .find(|l| l.starts_with("canary "))
        .expect("canary row");
    assert!(
        canary_row.contains("200") && canary_row.contains("20.00%"),
        "{canary_row}"
    );
    let stable_row = out
        .lines()
        .find(|l| l.starts_with("stable "))
        .expect("stable row");
    assert!(stable_row.contains("0.00%"), "{stable_row}");

    // JSON carries the same, and looser thresholds pass the same window.
    let (ok, json) = canary_status(
        &lb,
        &[
            "--output",
            "json",
            "--max-error-rate",
            "0.5",
            "--max-error-increase",
            "0.5",
            "--max-p99-ratio",
            "1000",
        ],
    );
    assert!(ok, "{json}");
    let value: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(value["verdict"], "pass", "{json}");
    assert_eq!(value["canary"]["requests"], 200);
    assert_eq!(value["canary"]["responses_by_class"][3], 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_status_fails_a_slow_canary_by_its_p99() {
    let stable = support::SampleWeb::start(&["--node", "stable"]);
    let canary = support::SampleWeb::start(&["--node", "canary", "--delay", "200ms"]);
    let lb = Lb::start(&config(stable.addr, canary.addr, 50, ""));
    healthy_eventually(&lb, "/", stable.addr, WAIT).await;
    healthy_eventually(&lb, "/", canary.addr, WAIT).await;
    send_all(&lb, 240, 24).await;
    let (ok, out) = canary_status(&lb, &["--min-requests", "100"]);
    assert!(ok, "{out}");
    assert!(out.contains("verdict: fail"), "{out}");
    let reason = out
        .lines()
        .find(|l| l.contains("canary p99"))
        .unwrap_or_else(|| panic!("no p99 reason: {out}"));
    assert!(reason.contains("(maximum 1.50x)"), "{reason}");
    assert!(!out.contains("error rate 0.00% is"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_status_names_a_pool_without_a_canary() {
    let backend = Backend::start("only").await;
    let lb = Lb::start(&support::pool("/", &[backend.addr], "100ms"));
    let (ok, out) = canary_status(&lb, &[]);
    assert!(!ok, "{out}");
    assert!(out.contains("has no canary"), "{out}");
    let (ok, out, err) = support::lbctl(&lb, &["canary", "status", "/nope/"]);
    assert!(!ok && err.contains("no pool"), "{out}{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_health_and_status_json_name_each_backend_s_side() {
    let (stable, canary) = (
        Backend::start("stable").await,
        Backend::start("canary").await,
    );
    let lb = start(&config(stable.addr, canary.addr, 30, ""), &stable, &canary).await;
    let (ok, out, err) = support::lbctl(&lb, &["pool", "health", "/"]);
    assert!(ok, "{err}");
    let line = |addr: SocketAddr| {
        out.lines()
            .find(|l| l.contains(&addr.to_string()))
            .unwrap_or_else(|| panic!("{addr} not listed: {out}"))
            .to_owned()
    };
    assert!(line(canary.addr).contains("(canary)"), "{out}");
    assert!(!line(stable.addr).contains("(canary)"), "{out}");

    canary_hits_http1(&lb, &canary, 100, 2).await;
    let (_, doc) = support::get(&support::client(), &lb.admin_url("/status.json")).await;
    let doc: serde_json::Value = serde_json::from_str(&doc).expect("status.json");
    let pool = &doc["pools"][0];
    assert_eq!(pool["canary"]["weight_percent"], 30.0, "{pool}");
    assert_eq!(pool["canary"]["canary"]["requests"], 30, "{pool}");
    assert_eq!(pool["canary"]["stable"]["requests"], 70, "{pool}");
    let sides: Vec<&str> = pool["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .map(|b| b["side"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(sides, ["stable", "canary"]);
}
