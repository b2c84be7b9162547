//! Timeouts after the response head (`[server]` `read_timeout`, `send_timeout`,
//! `tunnel_idle_timeout`): a backend that goes silent mid-body, a client that stops reading, and
//! an idle upgrade tunnel each get both sides closed, the `max_connections` permit back, an access
//! line naming the timeout and a count in `lb_timeouts_total{kind}`.

mod support;

use std::time::{Duration, Instant};

use support::raw::{RawBackend, Reply, Wire, WAIT};
use support::Lb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// lb over `backend`, with `server` as its `[server]` table and an admin listener.
async fn start(backend: &RawBackend, server: &str) -> Lb {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("lb.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\n{server}\n[pools.\"/\"]\ninterval = \"1h\"\nbackends = [\"{}\"]\n",
            backend.addr
        ),
    )
    .unwrap();
    let lb = Lb::start_at(dir, config, &["--admin", "127.0.0.1:0"]);
    lb.log_eventually(
        &format!("backend healthy pool=/ backend={}", backend.addr),
        WAIT,
    )
    .await;
    lb
}

/// lb's `/metrics` text, over a raw connection to its admin listener.
async fn metrics(lb: &Lb) -> String {
    let line = lb.wait_for_log("listener=\"admin\"", WAIT);
    let addr = line
        .split("addr=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    let mut stream = timeout(WAIT, TcpStream::connect(addr))
        .await
        .unwrap()
        .unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    timeout(WAIT, stream.read_to_string(&mut text))
        .await
        .unwrap()
        .unwrap();
    text
}

/// Waits for the peer to close, reading (and discarding) what comes first; how long it took.
async fn closed_within(wire: &mut Wire, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match timeout(limit, wire.stream.read(&mut chunk)).await {
            Ok(Ok(0) | Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => {}
            Err(_) => panic!("still open after {limit:?}"),
        }
    }
}

/// A head and part of a body, then silence (the backend keeps its socket open).
const HEAD_AND_PART: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npart";

#[tokio::test]
async fn a_backend_silent_mid_body_is_cut_after_read_timeout() {
    let mut backend = RawBackend::start(|seen| match seen.target() {
        "/stall" => Reply::raw(HEAD_AND_PART),
        _ => Reply::ok("whole"),
    })
    .await;
    let lb = start(&backend, "read_timeout = \"1s\"\nmax_connections = 1\n").await;
    let mut client = Wire::connect(&lb).await;
    client
        .send(b"GET /stall HTTP/1.1\r\nHost: x.test\r\n\r\n")
        .await;
    let head = client.head().await.expect("the response head");
    assert!(head.starts_with("HTTP/1.1 200 "), "{head:?}");
    let waited = closed_within(&mut client, Duration::from_secs(4)).await;
    assert!(
        waited >= Duration::from_millis(700),
        "closed after {waited:?}"
    );
    // The backend's socket is closed too.
    let _ = backend.next().await;
    backend.next_closed().await;
    // The one `max_connections` permit is back: another client is served.
    let mut next = Wire::connect(&lb).await;
    let response = next
        .exchange("GET /b HTTP/1.1\r\nHost: x.test\r\n\r\n")
        .await;
    assert_eq!((response.status, response.text().as_str()), (200, "whole"));
    lb.log_eventually("timeout=read_timeout", WAIT).await;
    let text = metrics(&lb).await;
    assert!(
        text.contains("lb_timeouts_total{kind=\"read\"} 1"),
        "{text}"
    );
}

/// The same on the HTTP/2 path (hyper serves the client, lb reads the backend's plain socket):
/// the stream ends in an error after `read_timeout` and the backend's socket is closed.
#[tokio::test]
async fn an_http2_stream_whose_backend_goes_silent_is_cut_after_read_timeout() {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let mut backend = RawBackend::start(|_| Reply::raw(HEAD_AND_PART)).await;
    let lb = start(&backend, "read_timeout = \"1s\"\n").await;
    let stream = timeout(WAIT, TcpStream::connect(lb.http))
        .await
        .unwrap()
        .unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("HTTP/2 handshake");
    tokio::spawn(connection);
    let request = http::Request::get("http://x.test/stall")
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = timeout(WAIT, sender.send_request(request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 200);
    let started = Instant::now();
    let body = timeout(Duration::from_secs(4), response.into_body().collect())
        .await
        .expect("the stream ended within 4 s");
    assert!(body.is_err(), "a cut-off body must not end cleanly");
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "{:?}",
        started.elapsed()
    );
    let _ = backend.next().await;
    backend.next_closed().await;
    lb.log_eventually("timeout=\"read_timeout\"", WAIT).await;
    let text = metrics(&lb).await;
    assert!(
        text.contains("lb_timeouts_total{kind=\"read\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_after_send_timeout() {
    // 64 MiB: far more than the socket buffers on both sides hold.
    const LEN: usize = 64 << 20;
    let mut backend = RawBackend::start(|_| {
        let mut reply = format!("HTTP/1.1 200 OK\r\nContent-Length: {LEN}\r\n\r\n").into_bytes();
        reply.resize(reply.len() + LEN, b'x');
        Reply::raw(reply)
    })
    .await;
    let lb = start(&backend, "send_timeout = \"1s\"\nmax_connections = 1\n").await;
    let mut client = Wire::connect(&lb).await;
    client
        .send(b"GET /big HTTP/1.1\r\nHost: x.test\r\n\r\n")
        .await;
    let _ = backend.next().await;
    // The client reads nothing; lb gives up on it after send_timeout and closes the backend too.
    timeout(Duration::from_secs(10), backend.next_closed())
        .await
        .expect("the backend connection closed after send_timeout");
    lb.log_eventually("timeout=send_timeout", WAIT).await;
    let waited = closed_within(&mut client, Duration::from_secs(10)).await;
    assert!(waited < Duration::from_secs(10));
    let mut next = Wire::connect(&lb).await;
    next.send(b"GET /b HTTP/1.1\r\nHost: x.test\r\n\r\n").await;
    let head = next.head().await.expect("another client is served");
    assert!(head.starts_with("HTTP/1.1 200 "), "{head:?}");
    let text = metrics(&lb).await;
    assert!(
        text.contains("lb_timeouts_total{kind=\"send\"} 1"),
        "{text}"
    );
}

/// A client that stops reading a large response for a while (lb then holds only the unsent rest
/// and reads the backend in small steps) and then reads on gets every byte in order, and its
/// connection serves the next request.
#[tokio::test]
async fn a_client_that_pauses_mid_download_gets_the_whole_body() {
    // Far more than the socket buffers on both sides hold, so lb waits on the client.
    const LEN: usize = 24 << 20;
    let body: Vec<u8> = (0..LEN).map(|i| (i % 251) as u8).collect();
    let expected = body.clone();
    let mut backend = RawBackend::start(move |_| {
        let mut reply = format!("HTTP/1.1 200 OK\r\nContent-Length: {LEN}\r\n\r\n").into_bytes();
        reply.extend_from_slice(&body);
        Reply::raw(reply)
    })
    .await;
    let lb = start(&backend, "send_timeout = \"10s\"\n").await;
    let mut client = Wire::connect(&lb).await;
    for _ in 0..2 {
        client
            .send(b"GET /big HTTP/1.1\r\nHost: x.test\r\n\r\n")
            .await;
        let _ = backend.next().await;
        let head = client.response_head().await;
        assert!(head.starts_with("HTTP/1.1 200 "), "{head:?}");
        // The pause is the behaviour under test: lb fills the socket buffers and waits.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let got = client.exact(LEN).await;
        assert!(got == expected, "the body arrived altered");
    }
}

/// The same on an HTTP/2 stream: a client that stops taking the body (its stream window stays
/// full) has that stream reset after `send_timeout`, the backend's socket closed and the count
/// made; the connection's other streams go on.
#[tokio::test]
async fn an_http2_stream_the_client_stops_reading_is_reset_after_send_timeout() {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};

    // 32 MiB: far more than the socket buffers and the stream's 64 KiB window hold.
    const LEN: usize = 32 << 20;
    let mut backend = RawBackend::start(|seen| match seen.target() {
        "/big" => {
            let mut reply =
                format!("HTTP/1.1 200 OK\r\nContent-Length: {LEN}\r\n\r\n").into_bytes();
            reply.resize(reply.len() + LEN, b'x');
            Reply::raw(reply)
        }
        _ => Reply::ok("small"),
    })
    .await;
    let lb = start(&backend, "send_timeout = \"1s\"\n").await;
    let stream = timeout(WAIT, TcpStream::connect(lb.http))
        .await
        .unwrap()
        .unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(65_535)
        .handshake(TokioIo::new(stream))
        .await
        .expect("HTTP/2 handshake");
    tokio::spawn(connection);
    let request = http::Request::get("http://x.test/big")
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = timeout(WAIT, sender.send_request(request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 200);
    let _ = backend.next().await;
    // The body is not read: its window stays full, and lb gives up on the stream.
    timeout(Duration::from_secs(10), backend.next_closed())
        .await
        .expect("the backend connection closed after send_timeout");
    let body = timeout(WAIT, response.into_body().collect())
        .await
        .expect("the stream ended");
    assert!(body.is_err(), "a reset stream must not end cleanly");
    // The connection itself still serves.
    let request = http::Request::get("http://x.test/small")
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = timeout(WAIT, sender.send_request(request))
        .await
        .unwrap()
        .expect("another stream on the same connection");
    assert_eq!(response.status(), 200);
    lb.log_eventually("timeout=\"send_timeout\"", WAIT).await;
    let text = metrics(&lb).await;
    assert!(
        text.contains("lb_timeouts_total{kind=\"send\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn an_idle_tunnel_is_closed_after_tunnel_idle_timeout() {
    let mut backend = RawBackend::start(|_| {
        Reply::raw(&b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n"[..])
    })
    .await;
    let lb = start(&backend, "tunnel_idle_timeout = \"1s\"\n").await;
    let mut client = Wire::connect(&lb).await;
    client
        .send(b"GET /ws HTTP/1.1\r\nHost: x.test\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n")
        .await;
    let head = client.head().await.expect("the 101");
    assert!(head.starts_with("HTTP/1.1 101 "), "{head:?}");
    let _ = backend.next().await;
    let waited = closed_within(&mut client, Duration::from_secs(5)).await;
    assert!(
        waited >= Duration::from_millis(700),
        "closed after {waited:?}"
    );
    let text = metrics(&lb).await;
    assert!(
        text.contains("lb_timeouts_total{kind=\"tunnel_idle\"} 1"),
        "{text}"
    );
}

/// Traffic keeps a tunnel open past its idle limit.
#[tokio::test]
async fn a_busy_tunnel_outlives_tunnel_idle_timeout() {
    let backend = RawBackend::start(|_| {
        Reply::raw(&b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n"[..])
    })
    .await;
    let lb = start(&backend, "tunnel_idle_timeout = \"1s\"\n").await;
    let mut client = Wire::connect(&lb).await;
    client
        .send(b"GET /ws HTTP/1.1\r\nHost: x.test\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n")
        .await;
    let head = client.head().await.expect("the 101");
    assert!(head.starts_with("HTTP/1.1 101 "), "{head:?}");
    // Bytes up every 300 ms for 2.4 s: never idle for the whole second.
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        client
            .stream
            .write_all(b"ping")
            .await
            .expect("the tunnel is still open");
    }
    let mut byte = [0u8; 1];
    let open = timeout(Duration::from_millis(100), client.stream.read(&mut byte)).await;
    assert!(open.is_err(), "the tunnel closed while busy: {open:?}");
}
