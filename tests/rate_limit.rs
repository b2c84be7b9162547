//! A pool's `rate_limit` over real lb processes, for HTTP/1.1 and HTTP/2 clients alike: a
//! limit of 10/s with a burst of 5 answers 429 with `Retry-After` beyond it, no backend sees
//! those requests, other keys (client addresses, header values) keep their own buckets, and
//! the 429s are counted in `/metrics`, `/status.json` and the access log. Behind a proxy in
//! `[server] trusted_proxies`, the client comes from `X-Forwarded-For`; from any other peer
//! the field is ignored for the key and replaced on the way to the backend. A reload that
//! keeps the limit keeps the buckets.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::{eventually, Backend, Lb};
use tokio::net::TcpSocket;

const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug)]
enum Protocol {
    Http1,
    Http2,
}

/// One client connection to lb, made from a chosen loopback address (127.0.0.0/8 is all
/// loopback on Linux, so each address is a client of its own).
enum Conn {
    Http1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    Http2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

/// What a request got.
struct Got {
    status: StatusCode,
    retry_after: Option<String>,
    body: String,
}

impl Conn {
    async fn open(lb: SocketAddr, from: Ipv4Addr, protocol: Protocol) -> Conn {
        let socket = TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::new(IpAddr::V4(from), 0))
            .expect("bind the client's address");
        let stream = tokio::time::timeout(TIMEOUT, socket.connect(lb))
            .await
            .expect("connect in time")
            .expect("connect");
        let io = TokioIo::new(stream);
        match protocol {
            Protocol::Http1 => {
                let (sender, connection) = hyper::client::conn::http1::handshake(io)
                    .await
                    .expect("h1 handshake");
                tokio::spawn(connection);
                Conn::Http1(sender)
            }
            Protocol::Http2 => {
                let (sender, connection) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                        .await
                        .expect("h2 handshake");
                tokio::spawn(connection);
                Conn::Http2(sender)
            }
        }
    }

    async fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Got {
        let mut request = Request::get(match self {
            Conn::Http1(_) => path.to_owned(),
            Conn::Http2(_) => format!("http://app.test{path}"),
        });
        if let Conn::Http1(_) = self {
            request = request.header("host", "app.test");
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Empty::<Bytes>::new()).expect("request");
        let response = match self {
            Conn::Http1(sender) => {
                sender.ready().await.expect("connection ready");
                tokio::time::timeout(TIMEOUT, sender.send_request(request)).await
            }
            Conn::Http2(sender) => {
                tokio::time::timeout(TIMEOUT, sender.send_request(request)).await
            }
        }
        .expect("response in time")
        .expect("response");
        let status = response.status();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap_or("?").to_owned());
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        Got {
            status,
            retry_after,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }
}

fn start(config: &str) -> Lb {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("lb.toml");
    std::fs::write(&path, config).expect("write config");
    Lb::start_at(dir, path, &["--admin", "127.0.0.1:0"])
}

async fn admin_get(lb: &Lb, path: &str) -> String {
    let (status, body) = support::get(&support::client(), &lb.admin_url(path)).await;
    assert_eq!(status, StatusCode::OK, "{path}");
    body
}

/// `lb_rate_limited_total{pool="/"}`, or `None` when /metrics has no such sample.
async fn limited_metric(lb: &Lb) -> Option<u64> {
    let metrics = admin_get(lb, "/metrics").await;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("lb_rate_limited_total{pool=\"/\"} "))
        .map(|n| n.trim().parse().expect("a count"))
}

async fn status_doc(lb: &Lb) -> serde_json::Value {
    serde_json::from_str(&admin_get(lb, "/status.json").await).expect("status.json")
}

const CLIENT: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const OTHER_CLIENT: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// 10/s with a burst of 5: a client's first 6 requests go (a full bucket holds burst + 1),
/// then about one every 100 ms, and the rest get 429 with `Retry-After: 1` from lb.
async fn limit_of_ten_a_second(protocol: Protocol) {
    let a = Backend::start("a").await;
    let lb = start(&format!(
        "{}rate_limit = {{ requests_per_second = 10, burst = 5 }}\n",
        support::pool("/", &[a.addr], "1h")
    ));
    assert_eq!(limited_metric(&lb).await, Some(0));

    let mut conn = Conn::open(lb.http, CLIENT, protocol).await;
    let began = Instant::now();
    let mut got = Vec::new();
    for _ in 0..40 {
        got.push(conn.get("/", &[]).await);
    }
    let elapsed = began.elapsed();
    let passed = got.iter().filter(|g| g.status == StatusCode::OK).count();
    let refused: Vec<&Got> = got
        .iter()
        .filter(|g| g.status == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert_eq!(passed + refused.len(), got.len(), "only 200s and 429s");
    assert!(
        got[..6].iter().all(|g| g.status == StatusCode::OK),
        "the burst goes"
    );
    // What refilled while the requests went: one per 100 ms, and one for the partial interval.
    let refilled = (elapsed.as_millis() / 100) as usize + 1;
    assert!(
        (6..=6 + refilled).contains(&passed),
        "{passed} passed in {elapsed:?}"
    );
    assert!(!refused.is_empty(), "none refused in {elapsed:?}");
    for g in &refused {
        assert_eq!(g.retry_after.as_deref(), Some("1"));
        assert_eq!(g.body, "too many requests\n");
    }
    // No backend saw a refused request.
    assert_eq!(a.hits(), passed);

    // Another client has a bucket of its own: its whole burst goes at once.
    let mut other = Conn::open(lb.http, OTHER_CLIENT, protocol).await;
    for i in 0..6 {
        let g = other.get("/", &[]).await;
        assert_eq!(g.status, StatusCode::OK, "the other client's request {i}");
    }

    // Counted per pool, in /metrics and /status.json.
    assert_eq!(limited_metric(&lb).await, Some(refused.len() as u64));
    let doc = status_doc(&lb).await;
    let limit = &doc["pools"][0]["rate_limit"];
    assert_eq!(limit["requests_per_second"], 10.0);
    assert_eq!(limit["burst"], 5);
    assert_eq!(limit["key"], "ip");
    assert_eq!(limit["limited"], refused.len() as u64);
    // The access line says 429 and the pool.
    lb.log_eventually("status=429 pool=\"/\" backend=-", TIMEOUT)
        .await;
}

#[tokio::test]
async fn http1_a_limit_of_ten_a_second_with_a_burst_of_five_answers_429_beyond_it() {
    limit_of_ten_a_second(Protocol::Http1).await;
}

#[tokio::test]
async fn http2_a_limit_of_ten_a_second_with_a_burst_of_five_answers_429_beyond_it() {
    limit_of_ten_a_second(Protocol::Http2).await;
}

/// A limit slow enough that nothing refills during a test: two requests per key, then 429.
fn slow_limit(server: &str, backend: SocketAddr, key: &str) -> String {
    format!(
        "{server}{}rate_limit = {{ requests_per_second = 0.05, burst = 1, key = \"{key}\" }}\n",
        support::pool("/", &[backend], "1h")
    )
}

async fn statuses(conn: &mut Conn, n: usize, headers: &[(&str, &str)]) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(conn.get("/", headers).await.status.as_u16());
    }
    out
}

/// From a peer in `trusted_proxies`, the client is the right-most `X-Forwarded-For` entry
/// that is not a trusted proxy; each such client has its bucket; the field goes on to the
/// backend with the peer appended.
async fn trusted_forwarded_for(protocol: Protocol) {
    let a = Backend::start("a").await;
    let lb = start(&slow_limit(
        "[server]\ntrusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\"]\n",
        a.addr,
        "ip",
    ));
    let mut proxy = Conn::open(lb.http, CLIENT, protocol).await;
    let first = [("x-forwarded-for", "203.0.113.1")];
    assert_eq!(statuses(&mut proxy, 3, &first).await, [200, 200, 429]);
    // An entry the client wrote left of its own address changes nothing; nor do trusted hops
    // right of it.
    let spoofed = [("x-forwarded-for", "198.51.100.9, 203.0.113.1, 10.1.2.3")];
    assert_eq!(statuses(&mut proxy, 1, &spoofed).await, [429]);
    let second = [("x-forwarded-for", "203.0.113.2")];
    assert_eq!(statuses(&mut proxy, 3, &second).await, [200, 200, 429]);
    let last = a.seen().pop().expect("a request reached the backend");
    assert_eq!(
        last.headers.get("x-forwarded-for").map(String::as_str),
        Some("203.0.113.2, 127.0.0.1")
    );
    // Without the field (or with a malformed entry right of the client's), the proxy itself
    // is the client.
    assert_eq!(statuses(&mut proxy, 2, &[]).await, [200, 200]);
    let malformed = [("x-forwarded-for", "203.0.113.3, unknown")];
    assert_eq!(statuses(&mut proxy, 1, &malformed).await, [429]);
}

#[tokio::test]
async fn http1_a_trusted_proxy_s_forwarded_for_names_the_client() {
    trusted_forwarded_for(Protocol::Http1).await;
}

#[tokio::test]
async fn http2_a_trusted_proxy_s_forwarded_for_names_the_client() {
    trusted_forwarded_for(Protocol::Http2).await;
}

/// From a peer outside `trusted_proxies`, `X-Forwarded-For` is not believed: every value
/// shares the peer's bucket, and the backend gets the peer's address alone.
async fn untrusted_forwarded_for(protocol: Protocol) {
    let a = Backend::start("a").await;
    let lb = start(&slow_limit(
        "[server]\ntrusted_proxies = [\"10.0.0.0/8\"]\n",
        a.addr,
        "ip",
    ));
    let mut client = Conn::open(lb.http, CLIENT, protocol).await;
    let mut got = Vec::new();
    for i in 1..=3 {
        let forged = format!("203.0.113.{i}");
        got.extend(statuses(&mut client, 1, &[("x-forwarded-for", &forged)]).await);
    }
    assert_eq!(got, [200, 200, 429]);
    let seen = a.seen();
    assert_eq!(seen.len(), 2);
    for s in &seen {
        assert_eq!(
            s.headers.get("x-forwarded-for").map(String::as_str),
            Some("127.0.0.1"),
            "the forged entry was replaced"
        );
    }
}

#[tokio::test]
async fn http1_an_untrusted_peer_s_forwarded_for_is_ignored_and_replaced() {
    untrusted_forwarded_for(Protocol::Http1).await;
}

#[tokio::test]
async fn http2_an_untrusted_peer_s_forwarded_for_is_ignored_and_replaced() {
    untrusted_forwarded_for(Protocol::Http2).await;
}

/// `key = "header:NAME"`: a bucket per value; a request without the header is keyed by its
/// client's address. A reload that keeps the limit keeps every bucket; one that changes it
/// starts afresh.
#[tokio::test]
async fn a_header_key_has_a_bucket_per_value_and_a_reload_keeps_them() {
    let a = Backend::start("a").await;
    let lb = start(&slow_limit("", a.addr, "header:X-Api-Key"));
    let mut conn = Conn::open(lb.http, CLIENT, Protocol::Http1).await;
    let key_a = [("x-api-key", "a")];
    assert_eq!(statuses(&mut conn, 3, &key_a).await, [200, 200, 429]);
    let refused = conn.get("/", &key_a).await;
    // 1 / 0.05 = 20 s until the bucket holds a request again.
    let wait: u64 = refused.retry_after.expect("Retry-After").parse().unwrap();
    assert!((19..=20).contains(&wait), "{wait}");
    assert_eq!(
        statuses(&mut conn, 2, &[("x-api-key", "b")]).await,
        [200, 200]
    );
    assert_eq!(statuses(&mut conn, 3, &[]).await, [200, 200, 429]);
    let doc = status_doc(&lb).await;
    assert_eq!(doc["pools"][0]["rate_limit"]["key"], "header:x-api-key");

    // Another key of the pool changes: the pool is rebuilt, its buckets carried over.
    let text = std::fs::read_to_string(&lb.config).unwrap();
    std::fs::write(&lb.config, text.replace("\"1h\"", "\"30m\"")).unwrap();
    eventually(TIMEOUT, "generation 2", || async {
        status_doc(&lb).await["generation"] == 2
    })
    .await;
    assert_eq!(statuses(&mut conn, 1, &key_a).await, [429]);
    assert_eq!(limited_metric(&lb).await, Some(4));

    // A changed limit is new buckets; the count goes on.
    let text = std::fs::read_to_string(&lb.config).unwrap();
    std::fs::write(&lb.config, text.replace("burst = 1", "burst = 2")).unwrap();
    eventually(TIMEOUT, "generation 3", || async {
        status_doc(&lb).await["generation"] == 3
    })
    .await;
    assert_eq!(statuses(&mut conn, 4, &key_a).await, [200, 200, 200, 429]);
    assert_eq!(limited_metric(&lb).await, Some(5));
    assert_eq!(
        status_doc(&lb).await["pools"][0]["rate_limit"]["limited"],
        5
    );
}
