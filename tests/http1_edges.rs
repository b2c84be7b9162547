//! Edges of the native HTTP/1.1 path (`proxy::h1`) found in review, where it first answered
//! differently from the hyper path: `Connection` options naming framing headers or `Host`, odd
//! statuses, 204 lengths, repeated lengths and codings, a request the backend drops, a drain
//! mid-exchange, and a pipelined half head. Each test states the expected behaviour.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::Lb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(5);

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn header(head: &str, name: &str) -> Option<String> {
    head.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

/// A raw backend: answers `GET /healthz` with `ok` and closes; every other request head is
/// reported and answered with `reply(head)`, keeping the connection open.
async fn raw_backend<F>(reply: F) -> (SocketAddr, mpsc::UnboundedReceiver<String>)
where
    F: Fn(&str) -> Vec<u8> + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let reply = Arc::new(reply);
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let (reply, tx) = (Arc::clone(&reply), tx.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let end = loop {
                        if let Some(end) = find(&buf, b"\r\n\r\n") {
                            break end + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end);
                    if head.starts_with("GET /healthz ") {
                        let _ = stream
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                            .await;
                        return;
                    }
                    let bytes = reply(&head);
                    let _ = tx.send(head);
                    if stream.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, rx)
}

async fn start(backend: SocketAddr, server: &str) -> Lb {
    let lb = Lb::start(&format!(
        "{server}[pools.\"/\"]\ninterval = \"1h\"\nbackends = [\"{backend}\"]\n"
    ));
    lb.log_eventually(&format!("backend healthy pool=/ backend={backend}"), WAIT)
        .await;
    lb
}

async fn connect(lb: &Lb) -> TcpStream {
    timeout(WAIT, TcpStream::connect(lb.http))
        .await
        .unwrap()
        .unwrap()
}

/// Reads one response head (through its blank line) off `stream`, keeping what follows in `buf`.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> String {
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
            buf.drain(..end + 4);
            return head;
        }
        let mut chunk = [0u8; 4096];
        let n = timeout(WAIT, stream.read(&mut chunk))
            .await
            .expect("a response within the deadline")
            .unwrap();
        assert!(n > 0, "lb closed before a response head: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A backend whose `Connection` lists `Content-Length` (legal, if odd: RFC 9110 7.6.1 makes the
/// named field hop-by-hop). The hyper path strips the field and frames the body itself; the h1
/// path strips it and frames nothing, so the client reads to the connection's close, which never
/// comes (lb keeps it alive), and the next response is glued onto this body.
#[tokio::test]
async fn a_connection_option_naming_content_length_keeps_the_response_framed() {
    let (backend, _seen) = raw_backend(|_| {
        b"HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 2\r\n\r\nok".to_vec()
    })
    .await;
    let lb = start(backend, "").await;
    let mut client = connect(&lb).await;
    client
        .write_all(b"GET /a HTTP/1.1\r\nHost: x.test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let head = read_head(&mut client, &mut buf).await;
    assert!(
        header(&head, "content-length").is_some() || header(&head, "transfer-encoding").is_some(),
        "a keep-alive response with no framing: {head:?}"
    );
}

/// hyper's client refuses a status under 100 (502); the h1 path relays `HTTP/1.1 99 ...`, which
/// is not a status line.
#[tokio::test]
async fn a_status_under_100_is_a_bad_gateway() {
    let (backend, _seen) =
        raw_backend(|_| b"HTTP/1.1 099 Odd\r\nContent-Length: 0\r\n\r\n".to_vec()).await;
    let lb = start(backend, "").await;
    let mut client = connect(&lb).await;
    client
        .write_all(b"GET /a HTTP/1.1\r\nHost: x.test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let head = read_head(&mut client, &mut buf).await;
    assert!(head.starts_with("HTTP/1.1 502 "), "{head:?}");
}

/// `Connection: host` from a client: the hyper path drops the field and sets `Host` again from
/// the client's; the h1 path sends the backend an HTTP/1.1 request without `Host`.
#[tokio::test]
async fn a_connection_option_naming_host_keeps_host() {
    let (backend, mut seen) =
        raw_backend(|_| b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec()).await;
    let lb = start(backend, "").await;
    let mut client = connect(&lb).await;
    client
        .write_all(b"GET /a HTTP/1.1\r\nHost: x.test\r\nConnection: host\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = read_head(&mut client, &mut buf).await;
    let head = timeout(WAIT, seen.recv()).await.unwrap().unwrap();
    assert_eq!(header(&head, "host").as_deref(), Some("x.test"), "{head:?}");
}

/// The start of a next head pipelined behind a request gets `idle_timeout` (60 s here) instead of
/// `header_timeout` (1 s): h1::serve resets `limit` to the idle timeout after a request and only
/// sets it back to the header timeout when a read starts on an empty buffer.
#[tokio::test]
async fn a_pipelined_partial_head_gets_the_header_timeout() {
    let (backend, _seen) =
        raw_backend(|_| b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec()).await;
    let lb = start(
        backend,
        "[server]\nheader_timeout = \"1s\"\nidle_timeout = \"60s\"\n",
    )
    .await;
    let mut client = connect(&lb).await;
    client
        .write_all(b"GET /a HTTP/1.1\r\nHost: x.test\r\n\r\nGET /b HTTP/1.1\r\nHo")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = read_head(&mut client, &mut buf).await;
    let started = Instant::now();
    let mut rest = [0u8; 1024];
    let closed = timeout(Duration::from_secs(4), async {
        loop {
            match client.read(&mut rest).await {
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
    let (backend, _seen) =
        raw_backend(|_| b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n".to_vec()).await;
    let lb = start(backend, "").await;
    let mut client = connect(&lb).await;
    client
        .write_all(b"GET /a HTTP/1.1\r\nHost: x.test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let head = read_head(&mut client, &mut buf).await;
    assert_eq!(header(&head, "content-length"), None, "{head:?}");
}

/// A `Content-Length` list (`2, 2`, allowed by RFC 9110 8.6 when the values agree) or repeated
/// field: the hyper path sends the client one plain length.
#[tokio::test]
async fn a_content_length_list_reaches_the_client_as_one_length() {
    let (backend, _seen) = raw_backend(|_| {
        b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\nContent-Length: 2\r\n\r\nok".to_vec()
    })
    .await;
    let lb = start(backend, "").await;
    let mut client = connect(&lb).await;
    client
        .write_all(b"GET /a HTTP/1.1\r\nHost: x.test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let head = read_head(&mut client, &mut buf).await;
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
    let (backend, _seen) = raw_backend(|_| {
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n".to_vec()
    })
    .await;
    let lb = start(backend, "").await;
    let mut client = connect(&lb).await;
    client
        .write_all(b"GET /a HTTP/1.1\r\nHost: x.test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let head = read_head(&mut client, &mut buf).await;
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
async fn closing_backend() -> (SocketAddr, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let end = loop {
                        if let Some(end) = find(&buf, b"\r\n\r\n") {
                            break end + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end);
                    if head.starts_with("GET /healthz ") {
                        let _ = stream
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                            .await;
                        return;
                    }
                    let _ = tx.send(head.clone());
                    if head.starts_with("GET /444 ") {
                        return;
                    }
                    if head.starts_with("GET /slow ") {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                    if stream
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (addr, rx)
}

/// A GET the backend drops without answering is sent once per idle backend connection, then
/// once more on a fresh one: `h1::exchange` retries `Reset`/`ClosedEarly` on a reused socket for
/// any idempotent method, with no bound but the idle queue (128). The hyper path sends it twice
/// (once on the idle connection, once on a fresh one).
#[tokio::test]
async fn a_dropped_get_is_not_replayed_on_every_idle_connection() {
    let (backend, mut seen) = closing_backend().await;
    let lb = start(backend, "").await;
    // Eight concurrent slow requests: eight backend connections, idle afterwards.
    let mut clients = Vec::new();
    for _ in 0..8 {
        let mut client = connect(&lb).await;
        client
            .write_all(b"GET /slow HTTP/1.1\r\nHost: x.test\r\n\r\n")
            .await
            .unwrap();
        clients.push(client);
    }
    for client in &mut clients {
        let mut buf = Vec::new();
        let head = read_head(client, &mut buf).await;
        assert!(head.starts_with("HTTP/1.1 200 "), "{head:?}");
    }
    while seen.try_recv().is_ok() {}

    let mut client = connect(&lb).await;
    client
        .write_all(b"GET /444 HTTP/1.1\r\nHost: x.test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let head = read_head(&mut client, &mut buf).await;
    assert!(head.starts_with("HTTP/1.1 502 "), "{head:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut n_sent = 0;
    while let Ok(head) = seen.try_recv() {
        assert!(head.starts_with("GET /444 "), "{head:?}");
        n_sent += 1;
    }
    // The hyper path: once, plus one replay on a fresh connection.
    assert!(
        n_sent <= 2,
        "the backend got the dropped GET {n_sent} times"
    );
}

/// A response in flight when the drain begins: the hyper path's graceful shutdown turns keep-alive
/// off, so that response says `connection: close` and the client knows not to send more on it.
/// The h1 path decides `close` before forwarding, so the response claims keep-alive and the
/// connection is then closed under the client.
#[tokio::test]
async fn a_response_in_flight_at_drain_says_connection_close() {
    let (backend, _seen) = closing_backend().await;
    let lb = start(backend, "").await;
    let mut client = connect(&lb).await;
    client
        .write_all(b"GET /slow HTTP/1.1\r\nHost: x.test\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    lb.send_term();
    let mut buf = Vec::new();
    let head = read_head(&mut client, &mut buf).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head:?}");
    assert_eq!(
        header(&head, "connection").map(|v| v.to_ascii_lowercase()),
        Some("close".to_owned()),
        "{head:?}"
    );
}
