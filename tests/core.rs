//! The core: routing to pools, P2C spreading, health checks taking backends in and out of
//! rotation, url_path joining, and the fixed error answers.

mod support;

use std::time::Duration;

use http::StatusCode;
use support::{eventually, get, Backend, Lb};

#[tokio::test]
async fn spreads_requests_over_both_backends() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let lb = Lb::start(&support::pool("/", &[a.addr, b.addr], "100ms"));
    let client = support::client();
    eventually(Duration::from_secs(5), "both backends healthy", || async {
        a.hits() + b.hits() == 0
            && support::backend_is_healthy(&lb, "/", b.addr).await
            && support::backend_is_healthy(&lb, "/", a.addr).await
    })
    .await;
    for _ in 0..200 {
        let (status, body) = get(&client, &lb.url("/")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body == "a" || body == "b", "unexpected body {body:?}");
    }
    assert_eq!(a.hits() + b.hits(), 200);
    assert!(
        a.hits() >= 50 && b.hits() >= 50,
        "a={} b={}",
        a.hits(),
        b.hits()
    );
}

#[tokio::test]
async fn a_killed_backend_leaves_rotation_and_a_recovered_one_returns() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let lb = Lb::start(&support::pool("/", &[a.addr, b.addr], "200ms"));
    let client = support::client();
    eventually(Duration::from_secs(5), "a and b both serve", || async {
        get(&client, &lb.url("/")).await;
        a.hits() > 0 && b.hits() > 0
    })
    .await;

    // Kill b. It leaves rotation by its failing active check (within interval + check timeout)
    // or at once by passive health when a request finds it refusing; once lb has logged either,
    // no request may fail.
    let b_addr = b.kill().await;
    let b_label = format!("backend={b_addr}");
    eventually(Duration::from_secs(5), "b out of rotation", || async {
        get(&client, &lb.url("/")).await;
        lb.logs().iter().any(|line| {
            line.contains(&b_label)
                && (line.contains("backend sick") || line.contains("out of rotation"))
        })
    })
    .await;
    for _ in 0..50 {
        let (status, body) = get(&client, &lb.url("/")).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "a"));
    }

    // Bring b back on the same port: the active check returns it to rotation.
    let b = Backend::start_on(b_addr, "b").await;
    eventually(Duration::from_secs(5), "b back in rotation", || async {
        get(&client, &lb.url("/")).await;
        b.hits() > 0
    })
    .await;
}

#[tokio::test]
async fn a_sick_backend_takes_no_traffic() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    b.set_healthy(false);
    let lb = Lb::start(&support::pool("/", &[a.addr, b.addr], "100ms"));
    let client = support::client();
    eventually(Duration::from_secs(5), "a in rotation", || async {
        get(&client, &lb.url("/")).await.0 == StatusCode::OK
    })
    .await;
    for _ in 0..40 {
        assert_eq!(get(&client, &lb.url("/")).await.1, "a");
    }
    assert_eq!(b.hits(), 0);
    b.set_healthy(true);
    eventually(
        Duration::from_secs(5),
        "b enters rotation after passing",
        || async {
            get(&client, &lb.url("/")).await;
            b.hits() > 0
        },
    )
    .await;
}

#[tokio::test]
async fn no_healthy_backend_answers_503() {
    let a = Backend::start("a").await;
    a.set_healthy(false);
    let lb = Lb::start(&support::pool("/", &[a.addr], "100ms"));
    let client = support::client();
    lb.wait_for_log("listening", Duration::from_secs(5));
    let (status, body) = get(&client, &lb.url("/")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("no healthy backend"), "{body:?}");
    assert_eq!(a.hits(), 0);
}

#[tokio::test]
async fn url_path_is_joined_in_front_and_the_query_kept() {
    let a = Backend::start("a").await;
    let config = format!(
        "[pools.\"/api/\"]\ninterval = \"100ms\"\nbackends = [\"{}/v1/\"]\n",
        a.addr
    );
    let lb = Lb::start(&config);
    let client = support::client();
    eventually(Duration::from_secs(5), "backend healthy", || async {
        get(&client, &lb.url("/api/users?id=7&x=%20y")).await.0 == StatusCode::OK
    })
    .await;
    let seen = a.seen();
    let last = seen.last().unwrap();
    assert_eq!(last.path_and_query, "/v1/api/users?id=7&x=%20y");
    assert_eq!(
        last.headers.get("host").map(String::as_str),
        Some(lb.http.to_string().as_str())
    );
    assert_eq!(
        last.headers.get("x-forwarded-for").map(String::as_str),
        Some("127.0.0.1")
    );
}

#[tokio::test]
async fn unmatched_paths_get_404_and_subtree_roots_redirect() {
    let a = Backend::start("a").await;
    let config = format!(
        "[pools.\"/api/\"]\ninterval = \"100ms\"\nbackends = [\"{}\"]\n",
        a.addr
    );
    let lb = Lb::start(&config);
    let client = support::client();
    let (status, _) = get(&client, &lb.url("/elsewhere")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let request = http::Request::get(lb.url("/api?q=1"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::MOVED_PERMANENTLY);
    assert_eq!(response.headers()["location"], "/api/?q=1");
    assert_eq!(a.hits(), 0);
}

#[tokio::test]
async fn the_most_specific_pool_wins() {
    let (root, api, exact) = (
        Backend::start("root").await,
        Backend::start("api").await,
        Backend::start("exact").await,
    );
    let config = format!(
        "{}\n{}\n{}",
        support::pool("/", &[root.addr], "100ms"),
        support::pool("/api/", &[api.addr], "100ms"),
        support::pool("GET /api/health", &[exact.addr], "100ms"),
    );
    let lb = Lb::start(&config);
    let client = support::client();
    eventually(Duration::from_secs(5), "all pools serve", || async {
        get(&client, &lb.url("/")).await.0 == StatusCode::OK
            && get(&client, &lb.url("/api/x")).await.0 == StatusCode::OK
            && get(&client, &lb.url("/api/health")).await.0 == StatusCode::OK
    })
    .await;
    assert_eq!(get(&client, &lb.url("/anything")).await.1, "root");
    assert_eq!(get(&client, &lb.url("/api/users")).await.1, "api");
    assert_eq!(get(&client, &lb.url("/api/health")).await.1, "exact");
}
