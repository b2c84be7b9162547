//! Bodiless requests hyper serves, sent to the backend by lb's own HTTP/1.1 code on a plain
//! socket (`upstream::send_plain`, `h1::backend::PlainBody`): HTTP/2 clients over h2c prior
//! knowledge, and HTTP/1.1 connections hyper took over. Every response framing a backend may use
//! (length, chunked, close-delimited, bodiless), a body cut short, a large body, the request head
//! the backend gets, and backend connection reuse. Backends are raw TCP, so the bytes lb reads are
//! exactly the ones written here.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::Lb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// The bound on every wait for lb or a backend; a test that needs it has already failed.
const WAIT: Duration = Duration::from_secs(5);

// === helpers ===

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Every value of header `name` in a raw head, case-insensitively, in order.
fn headers_named(head: &str, name: &str) -> Vec<String> {
    head.lines()
        .skip(1)
        .filter_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
        .collect()
}

/// The first value of header `name` in a raw head.
fn header(head: &str, name: &str) -> Option<String> {
    headers_named(head, name).into_iter().next()
}

fn status_of(head: &str) -> u16 {
    head.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"))
}

/// A body of `n` bytes that is not periodic over any short span, so a dropped or repeated
/// piece shows.
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8 ^ (i >> 12) as u8).collect()
}

/// One end of a raw TCP connection with its read buffer.
struct Wire {
    stream: TcpStream,
    buf: Vec<u8>,
    /// How long one read may wait: `Some` for a test's client, which must never hang; `None` in a
    /// backend, whose idle keep-alive connection waits as long as lb keeps it.
    patience: Option<Duration>,
}

// === impl Wire ===

impl Wire {
    fn new(stream: TcpStream, patience: Option<Duration>) -> Wire {
        Wire {
            stream,
            buf: Vec::new(),
            patience,
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        timeout(WAIT, self.stream.write_all(bytes))
            .await
            .expect("write within the deadline")
            .expect("write");
    }

    /// Reads more bytes into the buffer; false once the peer has closed (a reset counts).
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        let read = self.stream.read(&mut chunk);
        let n = match self.patience {
            Some(patience) => timeout(patience, read).await.unwrap_or_else(|_| {
                panic!(
                    "nothing more within {patience:?}; have {:?}",
                    String::from_utf8_lossy(&self.buf)
                )
            }),
            None => read.await,
        }
        .unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// One head through its blank line; `None` if the peer closed first.
    async fn head(&mut self) -> Option<String> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head: Vec<u8> = self.buf.drain(..end + 4).collect();
                return Some(String::from_utf8_lossy(&head).into_owned());
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// `n` bytes; `None` if the peer closed first.
    async fn exact(&mut self, n: usize) -> Option<Vec<u8>> {
        while self.buf.len() < n {
            if !self.fill().await {
                return None;
            }
        }
        Some(self.buf.drain(..n).collect())
    }

    /// One request as a backend reads it (bodies by `Content-Length` only: lb's HTTP/1.1
    /// clients here send no other); `None` once the peer closed between requests.
    async fn request(&mut self) -> Option<(String, Vec<u8>)> {
        let head = self.head().await?;
        let body = match header(&head, "content-length") {
            Some(length) => {
                self.exact(length.parse().expect("numeric Content-Length"))
                    .await?
            }
            None => Vec::new(),
        };
        Some((head, body))
    }

    /// One `Content-Length` response as a client reads it: head and body.
    async fn response(&mut self) -> (String, Vec<u8>) {
        let head = self.head().await.expect("a response head before the close");
        let length = header(&head, "content-length")
            .unwrap_or_else(|| panic!("no Content-Length in {head:?}"));
        let body = self
            .exact(length.parse().expect("numeric Content-Length"))
            .await
            .expect("the whole body before the close");
        (head, body)
    }
}

// === raw backends ===

/// What a raw backend saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    /// Which accepted connection it came on (health-check connections count too).
    conn: usize,
    head: String,
    body: Vec<u8>,
}

impl Seen {
    fn request_line(&self) -> &str {
        self.head.lines().next().unwrap_or("")
    }

    fn method(&self) -> &str {
        self.head.split(' ').next().unwrap_or("")
    }

    fn target(&self) -> &str {
        self.head.split(' ').nth(1).unwrap_or("")
    }
}

/// The exact bytes a raw backend answers one request with, written piece by piece.
struct Reply {
    pieces: Vec<Vec<u8>>,
    /// A pause between pieces, so each arrives as a read of its own.
    pause: Duration,
    /// Close the connection after the reply instead of reading the next request.
    close: bool,
}

impl Reply {
    fn raw(bytes: impl Into<Vec<u8>>) -> Reply {
        Reply {
            pieces: vec![bytes.into()],
            pause: Duration::ZERO,
            close: false,
        }
    }

    /// `200 OK` with a `Content-Length` body.
    fn ok(body: &str) -> Reply {
        Reply::raw(format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ))
    }

    fn closing(self) -> Reply {
        Reply {
            close: true,
            ..self
        }
    }
}

/// A hand-written HTTP/1.1 backend on 127.0.0.1:0. `GET /healthz` answers `ok` and closes; every
/// other request is reported on `requests` and answered with `reply`'s bytes.
struct RawBackend {
    addr: SocketAddr,
    requests: mpsc::UnboundedReceiver<Seen>,
    accept: JoinHandle<()>,
}

// === impl RawBackend ===

impl RawBackend {
    async fn start<F>(reply: F) -> RawBackend
    where
        F: Fn(&Seen) -> Reply + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (requests_tx, requests) = mpsc::unbounded_channel();
        let reply = Arc::new(reply);
        let accept = tokio::spawn(async move {
            let mut n_conns = 0;
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                n_conns += 1;
                let conn = n_conns;
                let (reply, requests_tx) = (Arc::clone(&reply), requests_tx.clone());
                tokio::spawn(async move {
                    let mut wire = Wire::new(stream, None);
                    while let Some((head, body)) = wire.request().await {
                        if head.starts_with("GET /healthz ") {
                            let _ = wire
                                .stream
                                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                                .await;
                            break;
                        }
                        let seen = Seen { conn, head, body };
                        let answer = reply(&seen);
                        // Reported before answering: once the client has the response, the
                        // request is on the channel.
                        let _ = requests_tx.send(seen);
                        let mut failed = false;
                        for (i, piece) in answer.pieces.iter().enumerate() {
                            if i > 0 && !answer.pause.is_zero() {
                                tokio::time::sleep(answer.pause).await;
                            }
                            if wire.stream.write_all(piece).await.is_err() {
                                failed = true;
                                break;
                            }
                        }
                        if failed || answer.close {
                            break;
                        }
                    }
                });
            }
        });
        RawBackend {
            addr,
            requests,
            accept,
        }
    }

    /// The next request the backend saw, within [`WAIT`].
    async fn next(&mut self) -> Seen {
        timeout(WAIT, self.requests.recv())
            .await
            .expect("the backend saw a request within the deadline")
            .expect("backend running")
    }
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// A raw backend answering `reply`, and lb (one pool `/`, an hour-long check interval so only
/// the first check runs) in front of it, once the backend passed that check.
async fn setup<F>(reply: F) -> (RawBackend, Lb)
where
    F: Fn(&Seen) -> Reply + Send + Sync + 'static,
{
    let backend = RawBackend::start(reply).await;
    let lb = Lb::start(&format!(
        "[pools.\"/\"]\ninterval = \"1h\"\nbackends = [\"{}\"]\n",
        backend.addr
    ));
    lb.log_eventually(
        &format!("backend healthy pool=/ backend={}", backend.addr),
        WAIT,
    )
    .await;
    (backend, lb)
}

// === HTTP/2 client ===

/// What an HTTP/2 client got: the head, and the body or why reading it failed.
struct Got {
    status: StatusCode,
    headers: HeaderMap,
    body: Result<Bytes, String>,
}

impl Got {
    fn body(&self) -> &Bytes {
        self.body
            .as_ref()
            .unwrap_or_else(|error| panic!("body failed: {error}"))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(self.body()).into_owned()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

/// One HTTP/2 connection to lb with prior knowledge (h2c, no upgrade dance).
async fn h2(lb: &Lb) -> SendRequest<Empty<Bytes>> {
    let stream = timeout(WAIT, TcpStream::connect(lb.http))
        .await
        .expect("connect within the deadline")
        .expect("connect to lb");
    let (sender, connection) = timeout(
        WAIT,
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)),
    )
    .await
    .expect("handshake within the deadline")
    .expect("HTTP/2 handshake");
    tokio::spawn(connection);
    sender
}

/// Sends `request` and reads its whole body, each within [`WAIT`].
async fn send(sender: &mut SendRequest<Empty<Bytes>>, request: Request<Empty<Bytes>>) -> Got {
    try_send(sender, request)
        .await
        .unwrap_or_else(|error| panic!("response head: {error}"))
}

/// [`send`], with the stream failing before its head as an `Err`.
async fn try_send(
    sender: &mut SendRequest<Empty<Bytes>>,
    request: Request<Empty<Bytes>>,
) -> Result<Got, String> {
    timeout(WAIT, sender.ready())
        .await
        .expect("connection ready within the deadline")
        .expect("connection open");
    let response = timeout(WAIT, sender.send_request(request))
        .await
        .expect("response head within the deadline")
        .map_err(|error| format!("{error:?}"))?;
    assert_eq!(response.version(), Version::HTTP_2);
    let (parts, body) = response.into_parts();
    let body = timeout(WAIT, body.collect())
        .await
        .expect("the body ended (whole or failed) within the deadline")
        .map(|collected| collected.to_bytes())
        .map_err(|error| format!("{error:?}"));
    Ok(Got {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

/// `method path` to lb, bodiless.
async fn fetch(sender: &mut SendRequest<Empty<Bytes>>, lb: &Lb, method: Method, path: &str) -> Got {
    let request = Request::builder()
        .method(method)
        .uri(lb.url(path))
        .body(Empty::new())
        .unwrap();
    send(sender, request).await
}

async fn get(sender: &mut SendRequest<Empty<Bytes>>, lb: &Lb, path: &str) -> Got {
    fetch(sender, lb, Method::GET, path).await
}

// === 1. Content-Length ===

#[tokio::test]
async fn a_length_body_arrives_with_end_to_end_headers_and_the_connection_is_reused() {
    let (mut backend, lb) = setup(|seen| {
        let body = seen.target().to_owned();
        Reply::raw(format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-App: 1\r\nConnection: x-internal\r\n\
             X-Internal: secret\r\nKeep-Alive: timeout=5\r\nCache-Control: no-store\r\n\r\n{body}",
            body.len()
        ))
    })
    .await;
    let mut client = h2(&lb).await;
    let mut conns = Vec::new();
    for path in ["/len/1", "/len/2"] {
        let got = get(&mut client, &lb, path).await;
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(got.text(), path);
        assert_eq!(got.header("content-length"), Some("6"));
        assert_eq!(got.header("x-app"), Some("1"));
        assert_eq!(got.header("cache-control"), Some("no-store"));
        for hop in ["connection", "x-internal", "keep-alive"] {
            assert!(
                !got.headers.contains_key(hop),
                "{hop} reached the client: {:?}",
                got.headers
            );
        }
        let seen = backend.next().await;
        assert_eq!(seen.target(), path);
        conns.push(seen.conn);
    }
    assert_eq!(
        conns[0], conns[1],
        "both requests on one backend connection"
    );
}

// === 2. chunked ===

#[tokio::test]
async fn a_chunked_body_arrives_decoded_and_the_connection_is_reused() {
    let (mut backend, lb) = setup(|_| {
        Reply::raw(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\nX-App: 1\r\n\r\n\
             5;name=value\r\nhello\r\n1\r\n,\r\n6\r\n world\r\n0\r\nX-Checksum: abc\r\n\r\n",
        )
    })
    .await;
    let mut client = h2(&lb).await;
    let mut conns = Vec::new();
    for path in ["/chunked/1", "/chunked/2"] {
        let got = get(&mut client, &lb, path).await;
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(got.text(), "hello, world");
        assert_eq!(got.header("x-app"), Some("1"));
        for coding in ["transfer-encoding", "trailer", "content-length"] {
            assert!(
                !got.headers.contains_key(coding),
                "{coding} reached the client: {:?}",
                got.headers
            );
        }
        let seen = backend.next().await;
        assert_eq!(seen.target(), path);
        conns.push(seen.conn);
    }
    assert_eq!(
        conns[0], conns[1],
        "the chunked body's end (trailer included) left the connection reusable"
    );
}

// === 3. close-delimited ===

#[tokio::test]
async fn a_close_delimited_body_arrives_whole_and_the_next_request_gets_a_new_connection() {
    let big = pattern(50_000);
    let reply_big = big.clone();
    let (mut backend, lb) = setup(move |seen| {
        if seen.target() == "/close" {
            let mut bytes = b"HTTP/1.1 200 OK\r\nX-App: 1\r\n\r\n".to_vec();
            bytes.extend_from_slice(&reply_big);
            Reply::raw(bytes).closing()
        } else {
            Reply::ok("after")
        }
    })
    .await;
    let mut client = h2(&lb).await;

    let got = get(&mut client, &lb, "/close").await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body().len(), big.len());
    assert!(got.body()[..] == big[..], "close-delimited body differs");
    assert_eq!(got.header("x-app"), Some("1"));
    assert_eq!(got.header("content-length"), None);
    let first = backend.next().await;

    let got = get(&mut client, &lb, "/after").await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.text(), "after");
    let second = backend.next().await;
    assert_eq!(second.target(), "/after");
    assert_ne!(
        first.conn, second.conn,
        "a close-delimited body's connection is never reused"
    );
}

// === 4. HEAD ===

#[tokio::test]
async fn a_head_answer_keeps_its_length_without_a_body_and_the_connection_is_reused() {
    let (mut backend, lb) = setup(|seen| {
        if seen.method() == "HEAD" {
            Reply::raw("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-App: 1\r\n\r\n")
        } else {
            Reply::ok("hello")
        }
    })
    .await;
    let mut client = h2(&lb).await;

    let got = fetch(&mut client, &lb, Method::HEAD, "/head").await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.header("content-length"), Some("5"));
    assert_eq!(got.header("x-app"), Some("1"));
    assert!(got.body().is_empty(), "HEAD got a body: {:?}", got.body());
    let head = backend.next().await;
    assert_eq!(head.request_line(), "HEAD /head HTTP/1.1");

    let got = get(&mut client, &lb, "/get").await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.text(), "hello");
    let next = backend.next().await;
    assert_eq!(next.request_line(), "GET /get HTTP/1.1");
    assert_eq!(
        head.conn, next.conn,
        "the HEAD answer's connection was reused"
    );
}

// === 5. 204 ===

#[tokio::test]
async fn a_204_loses_a_bogus_content_length() {
    let (mut backend, lb) = setup(|seen| {
        if seen.target() == "/204" {
            Reply::raw("HTTP/1.1 204 No Content\r\nContent-Length: 3\r\nX-App: 1\r\n\r\n")
        } else {
            Reply::ok("next")
        }
    })
    .await;
    let mut client = h2(&lb).await;

    let got = get(&mut client, &lb, "/204").await;
    assert_eq!(got.status, StatusCode::NO_CONTENT);
    assert_eq!(
        got.header("content-length"),
        None,
        "204 carried a length: {:?}",
        got.headers
    );
    assert_eq!(got.header("x-app"), Some("1"));
    assert!(got.body().is_empty());
    let first = backend.next().await;

    // A 204 has no body whatever its head says, so the connection stays in step.
    let got = get(&mut client, &lb, "/next").await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.text(), "next");
    let second = backend.next().await;
    assert_eq!(first.conn, second.conn, "the 204's connection was reused");
}

// === 6. a body cut short ===

#[tokio::test]
async fn a_body_cut_short_by_the_backend_fails_the_stream_and_lb_serves_on() {
    let (mut backend, lb) = setup(|seen| {
        if seen.target() == "/short" {
            let mut bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n".to_vec();
            bytes.extend_from_slice(&[b'x'; 50]);
            Reply::raw(bytes).closing()
        } else {
            Reply::ok("whole")
        }
    })
    .await;
    let mut client = h2(&lb).await;

    // `try_send` bounds the head and the body by WAIT, so a hang fails there. The stream ends
    // in a reset: after the head and the first bytes, or before the head reached the client
    // when h2 had not flushed it yet (a reset drops a stream's queued frames). Either way the
    // client never sees a clean, short body.
    let request = Request::get(lb.url("/short")).body(Empty::new()).unwrap();
    match try_send(&mut client, request).await {
        Ok(got) => {
            assert_eq!(got.status, StatusCode::OK);
            assert_eq!(got.header("content-length"), Some("100"));
            assert!(
                got.body.is_err(),
                "a truncated body ended cleanly with {:?} bytes",
                got.body.as_ref().map(Bytes::len)
            );
        }
        Err(error) => assert!(error.contains("Reset"), "{error}"),
    }
    let first = backend.next().await;

    // The same client connection, and lb, take the next request; the backend gets it on a new
    // connection (the cut one is closed).
    let got = get(&mut client, &lb, "/whole").await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.text(), "whole");
    let second = backend.next().await;
    assert_eq!(second.target(), "/whole");
    assert_ne!(first.conn, second.conn);

    // And a new client connection too.
    let mut other = h2(&lb).await;
    assert_eq!(get(&mut other, &lb, "/whole").await.text(), "whole");
}

// === 7. a large body ===

#[tokio::test]
async fn a_two_mib_length_body_streamed_in_pieces_arrives_byte_exact() {
    const SIZE: usize = 2 * 1024 * 1024;
    let big = pattern(SIZE);
    let reply_big = big.clone();
    let (mut backend, lb) = setup(move |_| {
        let mut pieces =
            vec![format!("HTTP/1.1 200 OK\r\nContent-Length: {SIZE}\r\n\r\n").into_bytes()];
        // Uneven pieces, so piece and read boundaries fall anywhere.
        pieces.extend(reply_big.chunks(61_441).map(<[u8]>::to_vec));
        Reply {
            pieces,
            pause: Duration::from_millis(2),
            close: false,
        }
    })
    .await;
    let mut client = h2(&lb).await;

    let got = get(&mut client, &lb, "/big").await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(
        got.header("content-length"),
        Some(SIZE.to_string().as_str())
    );
    assert_eq!(got.body().len(), SIZE);
    let first_diff = got.body().iter().zip(&big).position(|(a, b)| a != b);
    assert_eq!(
        first_diff, None,
        "body differs from the first differing byte on"
    );
    let first = backend.next().await;

    // The whole body was read, so the connection is reused.
    let got = get(&mut client, &lb, "/big").await;
    assert_eq!(got.body().len(), SIZE);
    assert_eq!(backend.next().await.conn, first.conn);
}

// === 8. the request side ===

#[tokio::test]
async fn the_backend_gets_an_http11_head_with_host_and_forwarding_headers() {
    let (mut backend, lb) = setup(|_| Reply::ok("ok")).await;
    let mut client = h2(&lb).await;

    let request = Request::get(lb.url("/path?q"))
        .header("te", "trailers")
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-custom", "kept")
        .body(Empty::new())
        .unwrap();
    let got = send(&mut client, request).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.text(), "ok");

    let seen = backend.next().await;
    assert_eq!(seen.request_line(), "GET /path?q HTTP/1.1", "{}", seen.head);
    let authority = lb.http.to_string();
    assert_eq!(
        headers_named(&seen.head, "host"),
        [authority.as_str()],
        "{}",
        seen.head
    );
    assert_eq!(
        header(&seen.head, "x-forwarded-host").as_deref(),
        Some(authority.as_str())
    );
    let forwarded_for = headers_named(&seen.head, "x-forwarded-for");
    assert_eq!(forwarded_for.len(), 1, "{}", seen.head);
    assert_eq!(forwarded_for[0], "203.0.113.7, 127.0.0.1");
    assert_eq!(
        header(&seen.head, "x-forwarded-proto").as_deref(),
        Some("http")
    );
    assert_eq!(header(&seen.head, "x-custom").as_deref(), Some("kept"));
    for gone in ["te", "connection", "transfer-encoding", "content-length"] {
        assert_eq!(header(&seen.head, gone), None, "{gone} sent: {}", seen.head);
    }
    assert!(seen.body.is_empty());
}

// === 9. HTTP/1.1 taken over by hyper ===

#[tokio::test]
async fn a_get_after_a_post_on_a_connection_hyper_took_over_reaches_the_backend() {
    let (mut backend, lb) = setup(|seen| {
        let body = format!("{} {}", seen.method(), seen.target());
        Reply::raw(format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-App: 1\r\nConnection: x-internal\r\n\
             X-Internal: secret\r\n\r\n{body}",
            body.len()
        ))
    })
    .await;
    let stream = timeout(WAIT, TcpStream::connect(lb.http))
        .await
        .expect("connect within the deadline")
        .expect("connect to lb");
    let mut client = Wire::new(stream, Some(WAIT));

    // A body: lb's own HTTP/1.1 path hands the connection to hyper.
    client
        .send(b"POST /up HTTP/1.1\r\nHost: x.test\r\nContent-Length: 5\r\n\r\nhello")
        .await;
    let (head, body) = client.response().await;
    assert_eq!(status_of(&head), 200, "{head}");
    assert_eq!(body, b"POST /up");
    let post = backend.next().await;
    assert_eq!(post.body, b"hello");

    // Bodiless, on the same connection: hyper serves it, and it goes on a plain socket.
    let mut get_conns = Vec::new();
    for path in ["/after/1", "/after/2"] {
        client
            .send(format!("GET {path} HTTP/1.1\r\nHost: x.test\r\n\r\n").as_bytes())
            .await;
        let (head, body) = client.response().await;
        assert_eq!(status_of(&head), 200, "{head}");
        assert_eq!(String::from_utf8_lossy(&body), format!("GET {path}"));
        assert_eq!(header(&head, "x-app").as_deref(), Some("1"), "{head}");
        assert_eq!(header(&head, "x-internal"), None, "{head}");
        assert_eq!(
            header(&head, "content-length"),
            Some(body.len().to_string())
        );
        let seen = backend.next().await;
        assert_eq!(seen.request_line(), format!("GET {path} HTTP/1.1"));
        assert_eq!(header(&seen.head, "host").as_deref(), Some("x.test"));
        assert_eq!(
            header(&seen.head, "x-forwarded-for").as_deref(),
            Some("127.0.0.1")
        );
        // NOTE: the POST went through hyper's client, whose idle connections are kept apart
        // from the plain sockets; a GET on a connection other than the POST's shows it took
        // the plain path.
        assert_ne!(
            seen.conn, post.conn,
            "the GET went on hyper's client connection"
        );
        get_conns.push(seen.conn);
    }
    assert_eq!(
        get_conns[0], get_conns[1],
        "the plain socket was reused for the second GET"
    );
}
