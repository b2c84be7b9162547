//! Edges of the HTTP/1.x engine (`proxy::h1`) found in review: `Connection` options naming
//! framing headers or `Host`, odd statuses, 204 lengths, repeated lengths and codings, a request
//! the backend drops, a drain mid-exchange, a pipelined half head, and a refused request whose
//! client goes on sending. Each test states the expected behaviour.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::raw::{header, start_with, RawBackend, Reply, Wire};
use support::Lb;
use tokio::io::AsyncReadExt;
use tokio::time::timeout;

/// Starts lb over one backend, with `server` (a `[server]` table, or nothing) before its pool.
async fn start(backend: SocketAddr, server: &str) -> Lb {
    start_with(server, &[backend.to_string()]).await
}

/// The response head a client gets for `GET /a` through lb from a backend that answers every
/// request with `reply`.
async fn head_through(reply: &'static [u8]) -> String {
    let backend = RawBackend::start(move |_| Reply::raw(reply)).await;
    let lb = start(backend.addr, "").await;
    let mut client = Wire::connect(&lb).await;
    client
        .send(b"GET /a HTTP/1.1\r\nHost: x.test\r\n\r\n")
        .await;
    client.response_head().await
}

/// A backend whose `Connection` lists `Content-Length` (legal, if odd: RFC 9110 7.6.1 makes the
/// named field hop-by-hop). The hyper path strips the field and frames the body itself; the h1
/// path strips it and frames nothing, so the client reads to the connection's close, which never
/// comes (lb keeps it alive), and the next response is glued onto this body.
#[tokio::test]
async fn a_connection_option_naming_content_length_keeps_the_response_framed() {
    let head = head_through(
        b"HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 2\r\n\r\nok",
    )
    .await;
    assert!(
        header(&head, "content-length").is_some() || header(&head, "transfer-encoding").is_some(),
        "a keep-alive response with no framing: {head:?}"
    );
}

/// hyper's client refuses a status under 100 (502); the h1 path relays `HTTP/1.1 99 ...`, which
/// is not a status line.
#[tokio::test]
async fn a_status_under_100_is_a_bad_gateway() {
    let head = head_through(b"HTTP/1.1 099 Odd\r\nContent-Length: 0\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 502 "), "{head:?}");
}

/// `Connection: host` from a client: the hyper path drops the field and sets `Host` again from
/// the client's; the h1 path sends the backend an HTTP/1.1 request without `Host`.
#[tokio::test]
async fn a_connection_option_naming_host_keeps_host() {
    let mut backend =
        RawBackend::start(|_| Reply::raw(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")).await;
    let lb = start(backend.addr, "").await;
    let mut client = Wire::connect(&lb).await;
    client
        .send(b"GET /a HTTP/1.1\r\nHost: x.test\r\nConnection: host\r\n\r\n")
        .await;
    let _ = client.response_head().await;
    let head = backend.next().await.head;
    assert_eq!(header(&head, "host").as_deref(), Some("x.test"), "{head:?}");
}

/// The start of a next head pipelined behind a request gets `idle_timeout` (60 s here) instead of
/// `header_timeout` (1 s): h1::serve resets `limit` to the idle timeout after a request and only
/// sets it back to the header timeout when a read starts on an empty buffer.
#[tokio::test]
async fn a_pipelined_partial_head_gets_the_header_timeout() {
    let backend =
        RawBackend::start(|_| Reply::raw(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")).await;
    let lb = start(
        backend.addr,
        "[server]\nheader_timeout = \"1s\"\nidle_timeout = \"60s\"\n",
    )
    .await;
    let mut client = Wire::connect(&lb).await;
    client
        .send(b"GET /a HTTP/1.1\r\nHost: x.test\r\n\r\nGET /b HTTP/1.1\r\nHo")
        .await;
    let _ = client.response_head().await;
    let started = Instant::now();
    let mut rest = [0u8; 1024];
    let closed = timeout(Duration::from_secs(4), async {
        loop {
            match client.stream.read(&mut rest).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "a half-sent head still open {:?} after a 1 s header timeout",
        started.elapsed()
    );
}

/// RFC 9110 8.6: a server must not send Content-Length in a 204; the hyper path drops it.
#[tokio::test]
async fn a_204_carries_no_content_length() {
    let head = head_through(b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n").await;
    assert_eq!(header(&head, "content-length"), None, "{head:?}");
}

/// A `Content-Length` list (`2, 2`, allowed by RFC 9110 8.6 when the values agree) or repeated
/// field: the hyper path sends the client one plain length.
#[tokio::test]
async fn a_content_length_list_reaches_the_client_as_one_length() {
    let head =
        head_through(b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\nContent-Length: 2\r\n\r\nok")
            .await;
    let lengths: Vec<&str> = head
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("content-length:"))
        .collect();
    // The hyper path sends one field (`content-length: 2, 2`: the list itself is not new).
    assert_eq!(lengths.len(), 1, "{head:?}");
}

/// Transfer codings in several fields: the client must not get a gzip-coded body labelled as
/// only `chunked`.
#[tokio::test]
async fn transfer_codings_in_several_fields() {
    let head = head_through(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n").await;
    // The chunked body goes through as is, with every coding field it came with.
    let codings: Vec<String> = head
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .filter(|(name, _)| name.trim().eq_ignore_ascii_case("transfer-encoding"))
        .map(|(_, value)| value.trim().to_ascii_lowercase())
        .collect();
    assert_eq!(codings, ["gzip", "chunked"], "{head}");
}

/// A backend that answers `/slow` after 300 ms (so concurrent requests open several backend
/// connections, which then idle in lb's pool) and closes the connection without a response on
/// `/444` (nginx's `return 444`, a worker that dies on a query of death).
async fn closing_backend() -> RawBackend {
    RawBackend::start(|seen| match seen.target() {
        "/444" => Reply::raw(Vec::new()).closing(),
        // NOTE: an empty first piece, so that the pause comes before the response.
        "/slow" => Reply::pieces(
            vec![Vec::new(), OK_EMPTY.to_vec()],
            Duration::from_millis(300),
        ),
        _ => Reply::raw(OK_EMPTY),
    })
    .await
}

/// `200 OK` with an empty body.
const OK_EMPTY: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";

/// A GET the backend drops without answering is sent once per idle backend connection, then
/// once more on a fresh one: `h1::exchange` retries `Reset`/`ClosedEarly` on a reused socket for
/// any idempotent method, with no bound but the idle queue (128). The hyper path sends it twice
/// (once on the idle connection, once on a fresh one).
#[tokio::test]
async fn a_dropped_get_is_not_replayed_on_every_idle_connection() {
    let mut backend = closing_backend().await;
    let lb = start(backend.addr, "").await;
    // Eight concurrent slow requests: eight backend connections, idle afterwards.
    let mut clients = Vec::new();
    for _ in 0..8 {
        let mut client = Wire::connect(&lb).await;
        client
            .send(b"GET /slow HTTP/1.1\r\nHost: x.test\r\n\r\n")
            .await;
        clients.push(client);
    }
    for client in &mut clients {
        let head = client.response_head().await;
        assert!(head.starts_with("HTTP/1.1 200 "), "{head:?}");
    }
    backend.taken_all();

    let mut client = Wire::connect(&lb).await;
    client
        .send(b"GET /444 HTTP/1.1\r\nHost: x.test\r\n\r\n")
        .await;
    let head = client.response_head().await;
    assert!(head.starts_with("HTTP/1.1 502 "), "{head:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut n_sent = 0;
    for seen in backend.taken_all() {
        let head = seen.head;
        assert!(head.starts_with("GET /444 "), "{head:?}");
        n_sent += 1;
    }
    // The hyper path: once, plus one replay on a fresh connection.
    assert!(
        n_sent <= 2,
        "the backend got the dropped GET {n_sent} times"
    );
}

/// A response in flight when the drain begins says `connection: close`, so the client knows not
/// to send more on the connection lb is about to close.
#[tokio::test]
async fn a_response_in_flight_at_drain_says_connection_close() {
    let backend = closing_backend().await;
    let lb = start(backend.addr, "").await;
    let mut client = Wire::connect(&lb).await;
    client
        .send(b"GET /slow HTTP/1.1\r\nHost: x.test\r\n\r\n")
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    lb.send_term();
    let head = client.response_head().await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head:?}");
    assert_eq!(
        header(&head, "connection").map(|v| v.to_ascii_lowercase()),
        Some("close".to_owned()),
        "{head:?}"
    );
}

/// A refused request whose client goes on sending (here, a megabyte of the body of a request
/// with two `Host` fields): lb answers, half-closes and drains what still arrives, so the client
/// reads the 400 rather than a reset, and then sees the connection close.
#[tokio::test]
async fn a_refused_request_with_a_large_body_still_gets_its_answer() {
    let backend = closing_backend().await;
    let lb = start(backend.addr, "").await;
    let mut client = Wire::connect(&lb).await;
    let mut send =
        b"POST /a HTTP/1.1\r\nHost: a\r\nHost: b\r\nContent-Length: 1048576\r\n\r\n".to_vec();
    send.resize(send.len() + 1024 * 1024, b'z');
    let (mut reader, mut writer) = client.stream.split();
    let write = async {
        let _ = tokio::io::AsyncWriteExt::write_all(&mut writer, &send).await;
    };
    let read = async {
        let mut got = Vec::new();
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut got),
        )
        .await;
        got
    };
    let ((), got) = tokio::join!(write, read);
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text:?}");
    assert_eq!(
        header(&text, "connection").as_deref(),
        Some("close"),
        "{text:?}"
    );
}
