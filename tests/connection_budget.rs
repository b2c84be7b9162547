//! The client connection budget in the real lb (`[server] max_connections`,
//! `max_connections_per_ip`): connections that send nothing, kept-alive HTTP/1 connections
//! between requests and HTTP/2 connections with no open stream cannot lock a new client out — the
//! one idle longest is closed for it, at once, far below `header_timeout`; a connection with a
//! request in flight or a head begun is never closed for it; one address over its limit is closed
//! at accept, and others are unaffected.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::raw::{status_of, Wire};
use support::{Backend, Lb};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;

/// Every wait in these tests ends within this.
const PATIENCE: Duration = Duration::from_secs(10);
/// How soon a client that finds the budget spent by idle connections is answered (the issue's
/// bound; `header_timeout` here is 30 s).
const PROMPTLY: Duration = Duration::from_secs(1);

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";

/// lb with `[server]` `server` (a 30 s header timeout and an hour of idle timeout unless it says
/// otherwise), an admin listener and one pool `/` to a backend answering `web`, checked healthy.
async fn start(server: &str) -> (Backend, Lb) {
    let backend = Backend::start("web").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("lb.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nheader_timeout = \"30s\"\nidle_timeout = \"1h\"\n{server}\n\n{}",
            support::pool("/", &[backend.addr], "1h")
        ),
    )
    .expect("write config");
    let lb = Lb::start_at(dir, config, &["--admin", "127.0.0.1:0"]);
    lb.log_eventually(
        &format!("backend healthy pool=/ backend={}", backend.addr),
        PATIENCE,
    )
    .await;
    (backend, lb)
}

/// lb's `/metrics` text, over a raw connection to its admin listener (which has no budget).
async fn metrics(lb: &Lb) -> String {
    let line = lb.wait_for_log("listener=\"admin\"", PATIENCE);
    let addr = line
        .split("addr=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the admin address in the log");
    let mut stream = timeout(PATIENCE, TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut text = String::new();
    timeout(PATIENCE, stream.read_to_string(&mut text))
        .await
        .expect("metrics in time")
        .expect("read");
    text
}

/// The value of the sample `name` (with its labels) in lb's `/metrics`.
async fn sample(lb: &Lb, name: &str) -> u64 {
    let text = metrics(lb).await;
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// Waits until lb holds `n` client connections open (accepted, each with its slot).
async fn open_connections(lb: &Lb, n: u64) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let open = sample(lb, "lb_client_connections_open").await;
        if open == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{open} connections open, not {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A connection from `ip` to lb's cleartext listener.
async fn connect_from(ip: [u8; 4], lb: &Lb) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from((ip, 0)))
        .expect("bind a loopback address");
    timeout(PATIENCE, socket.connect(lb.http))
        .await
        .expect("connect in time")
        .expect("connect")
}

/// Whether the peer closed `stream` within `within` (end of stream or a reset), reading and
/// dropping what came before.
async fn closes_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// A new client's `GET /` on a connection of its own, and how long its answer took from the
/// connect.
async fn new_client(lb: &Lb) -> (u16, Duration) {
    let started = Instant::now();
    let mut wire = Wire::connect(lb).await;
    wire.send(GET).await;
    let head = wire.head().await.unwrap_or_default();
    (status_of(&head), started.elapsed())
}

#[tokio::test]
async fn silent_connections_holding_the_budget_give_way_to_a_new_client() {
    let (_backend, lb) = start("max_connections = 4").await;
    // Four connections that never send a byte hold every slot; each is accepted before the
    // next, so the first is the one idle longest.
    let mut silent = Vec::new();
    for n in 1..=4 {
        silent.push(TcpStream::connect(lb.http).await.expect("connect"));
        open_connections(&lb, n).await;
    }

    let (status, took) = new_client(&lb).await;
    assert_eq!(status, 200);
    assert!(took < PROMPTLY, "answered after {took:?}");

    // The oldest was closed for it, without a word; the other three stay open.
    assert!(closes_within(&mut silent[0], PATIENCE).await);
    for stream in &mut silent[1..] {
        assert!(!closes_within(stream, Duration::from_millis(200)).await);
    }
    assert_eq!(sample(&lb, "lb_client_connections_evicted_total").await, 1);
}

#[tokio::test]
async fn kept_alive_connections_between_requests_give_way_longest_idle_first() {
    let (_backend, lb) = start("max_connections = 3").await;
    let mut kept = Vec::new();
    for _ in 0..3 {
        let mut wire = Wire::connect(&lb).await;
        assert_eq!(
            wire.exchange(std::str::from_utf8(GET).unwrap())
                .await
                .text(),
            "web"
        );
        kept.push(wire);
    }
    // The second connection serves again: now the first is the one idle longest.
    assert_eq!(
        kept[1]
            .exchange(std::str::from_utf8(GET).unwrap())
            .await
            .text(),
        "web"
    );

    let (status, took) = new_client(&lb).await;
    assert_eq!(status, 200);
    assert!(took < PROMPTLY, "answered after {took:?}");
    kept[0].expect_close().await;
    // The others serve on.
    assert_eq!(
        kept[1]
            .exchange(std::str::from_utf8(GET).unwrap())
            .await
            .text(),
        "web"
    );
    assert_eq!(
        kept[2]
            .exchange(std::str::from_utf8(GET).unwrap())
            .await
            .text(),
        "web"
    );
    assert_eq!(sample(&lb, "lb_client_connections_evicted_total").await, 1);
}

/// An HTTP/2 frame as read off the wire: its type and payload.
fn frames(bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 9 {
        let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
        if rest.len() < 9 + len {
            break;
        }
        frames.push((rest[3], rest[9..9 + len].to_vec()));
        rest = &rest[9 + len..];
    }
    frames
}

#[tokio::test]
async fn an_http2_connection_with_no_open_stream_gets_goaway_and_gives_way() {
    let (_backend, lb) = start("max_connections = 1").await;
    let mut h2 = TcpStream::connect(lb.http).await.expect("connect");
    // The preface and an empty SETTINGS frame, then nothing: no stream is ever opened.
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .expect("write");
    let mut seen = vec![0u8; 9];
    timeout(PATIENCE, h2.read_exact(&mut seen))
        .await
        .expect("lb's SETTINGS in time")
        .expect("read");
    assert_eq!(seen[3], 0x4, "lb's first frame is SETTINGS");

    let (status, took) = new_client(&lb).await;
    assert_eq!(status, 200);
    assert!(took < PROMPTLY, "answered after {took:?}");

    // GOAWAY with NO_ERROR and the last stream id 0, then the close.
    let mut rest = Vec::new();
    timeout(PATIENCE, h2.read_to_end(&mut rest))
        .await
        .expect("closed in time")
        .expect("read to the close");
    seen.extend_from_slice(&rest);
    let goaway = frames(&seen)
        .into_iter()
        .find(|(kind, _)| *kind == 0x7)
        .map(|(_, payload)| payload);
    assert_eq!(goaway.as_deref(), Some(&[0u8; 8][..]), "{seen:?}");
}

#[tokio::test]
async fn connections_with_a_request_in_flight_or_a_head_begun_are_never_evicted() {
    let (_backend, lb) = start("max_connections = 2").await;
    // A request in flight to a backend that takes its time.
    let mut in_flight = Wire::connect(&lb).await;
    in_flight
        .send(b"GET /slow/1500 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    open_connections(&lb, 1).await;
    // A head begun and not finished.
    let mut begun = Wire::connect(&lb).await;
    begun.send(b"GET / HTTP/1.1\r\nHo").await;
    open_connections(&lb, 2).await;

    let third = tokio::spawn({
        let http = lb.http;
        async move {
            let stream = TcpStream::connect(http).await.expect("connect");
            let mut wire = Wire::new(stream, Some(PATIENCE));
            wire.send(GET).await;
            let head = wire.head().await.unwrap_or_default();
            (status_of(&head), Instant::now())
        }
    });
    // The request in flight is answered whole; only then is its connection idle, and it is the
    // one closed for the third client.
    let response = in_flight.response(false).await;
    let answered = Instant::now();
    assert_eq!(status_of(&response.head), 200, "{}", response.head);
    let (status, third_answered) = timeout(PATIENCE, third)
        .await
        .expect("the third client is answered")
        .expect("its task");
    assert_eq!(status, 200);
    assert!(third_answered >= answered, "the third client waited");
    in_flight.expect_close().await;

    // The head begun was left alone: finished now, it is served.
    begun.send(b"st: x\r\n\r\n").await;
    let head = begun.head().await.unwrap_or_default();
    assert_eq!(status_of(&head), 200, "{head}");
    assert_eq!(sample(&lb, "lb_client_connections_evicted_total").await, 1);
}

#[tokio::test]
async fn an_address_over_max_connections_per_ip_is_closed_at_accept_and_others_are_served() {
    let (_backend, lb) = start("max_connections_per_ip = 2").await;
    let mut first = connect_from([127, 0, 0, 1], &lb).await;
    let _second = connect_from([127, 0, 0, 1], &lb).await;
    open_connections(&lb, 2).await;

    // A third from the same address: closed without a byte, before it sends anything.
    let mut third = connect_from([127, 0, 0, 1], &lb).await;
    assert!(closes_within(&mut third, PATIENCE).await);
    assert_eq!(
        sample(
            &lb,
            "lb_client_connections_refused_total{reason=\"per_ip\"}"
        )
        .await,
        1
    );

    // Another address is served.
    let mut other = Wire::new(connect_from([127, 0, 0, 2], &lb).await, Some(PATIENCE));
    other.send(GET).await;
    assert_eq!(status_of(&other.head().await.unwrap_or_default()), 200);
    drop(other);

    // Once one of the address's connections has closed, it may open another.
    first.shutdown().await.expect("shutdown");
    drop(first);
    open_connections(&lb, 1).await;
    let mut again = Wire::new(connect_from([127, 0, 0, 1], &lb).await, Some(PATIENCE));
    again.send(GET).await;
    assert_eq!(status_of(&again.head().await.unwrap_or_default()), 200);
}
