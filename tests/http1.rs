//! HTTP/1.1 on the wire through lb, pinned byte by byte: keep-alive and pipelining, every response
//! framing a backend may use (length, chunked, close-delimited, bodiless), 1xx answers, hop-by-hop
//! and `X-Forwarded-*` rewriting, backend connection reuse, malformed backends and the odd request
//! forms. Both sides are raw TCP, so nothing polite sits between the test and lb.
//!
//! These tests describe lb's behaviour as it is today (hyper's server and client), so that another
//! HTTP/1.1 data path can be checked against it. Where today's behaviour is not what nginx or
//! HAProxy would do, the assertion still pins it and a `NOTE:` says so.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// The first value of header `name` in a raw head, case-insensitively.
fn header(head: &str, name: &str) -> Option<String> {
    head.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

fn status_of(head: &str) -> u16 {
    head.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"))
}

fn status_line(head: &str) -> &str {
    head.lines().next().unwrap_or("")
}

/// One end of a raw TCP connection with its read buffer, so messages can be taken off it one at
/// a time (pipelined bytes stay buffered for the next one).
struct Wire {
    stream: TcpStream,
    buf: Vec<u8>,
    /// How long one read may wait: `Some` for a test's client, which must never hang; `None` in a
    /// backend, whose idle keep-alive connection waits as long as lb keeps it.
    patience: Option<Duration>,
}

/// How a response's body was delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body by definition: HEAD, 204, 304.
    Bodiless,
    ContentLength,
    Chunked,
    /// Read until the connection closed.
    Close,
}

/// A response as the client read it.
#[derive(Debug)]
struct Response {
    /// 1xx heads (other than 101) that arrived before the final one.
    interim: Vec<String>,
    /// The final head, through its blank line.
    head: String,
    status: u16,
    /// The body, de-chunked when chunked.
    body: Vec<u8>,
    framing: Framing,
    /// Trailer lines of a chunked body.
    trailers: Vec<String>,
}

impl Response {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
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

    /// A client connection to lb.
    async fn connect(lb: &Lb) -> Wire {
        let stream = timeout(WAIT, TcpStream::connect(lb.http))
            .await
            .expect("connect within the deadline")
            .expect("connect to lb");
        Wire::new(stream, Some(WAIT))
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

    /// One line without its CRLF.
    async fn line(&mut self) -> String {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..end + 2).collect();
                return String::from_utf8_lossy(&line[..end]).into_owned();
            }
            assert!(self.fill().await, "closed mid-line");
        }
    }

    async fn exact(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(
                self.fill().await,
                "closed after {} of {n} bytes",
                self.buf.len()
            );
        }
        self.buf.drain(..n).collect()
    }

    /// A chunked body, de-chunked, with its trailer lines.
    async fn chunked(&mut self) -> (Vec<u8>, Vec<String>) {
        let mut body = Vec::new();
        loop {
            let line = self.line().await;
            let size = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size, 16)
                .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
            if size == 0 {
                break;
            }
            body.extend(self.exact(size).await);
            assert_eq!(self.exact(2).await, b"\r\n", "chunk not followed by CRLF");
        }
        let mut trailers = Vec::new();
        loop {
            let line = self.line().await;
            if line.is_empty() {
                return (body, trailers);
            }
            trailers.push(line);
        }
    }

    /// Everything until the peer closes.
    async fn until_close(&mut self) -> Vec<u8> {
        while self.fill().await {}
        std::mem::take(&mut self.buf)
    }

    /// Asserts that the peer closes without sending another byte.
    async fn expect_close(&mut self) {
        let rest = self.until_close().await;
        assert!(
            rest.is_empty(),
            "bytes before the close: {:?}",
            String::from_utf8_lossy(&rest)
        );
    }

    /// The final response to a request (`bodiless` for HEAD), framed as a client would.
    async fn response(&mut self, bodiless: bool) -> Response {
        let mut interim = Vec::new();
        loop {
            let head = self
                .head()
                .await
                .expect("a response head before the connection closed");
            let status = status_of(&head);
            if (100..200).contains(&status) && status != 101 {
                interim.push(head);
                continue;
            }
            let chunked = header(&head, "transfer-encoding")
                .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
            let (framing, body, trailers) = if bodiless || status == 204 || status == 304 {
                (Framing::Bodiless, Vec::new(), Vec::new())
            } else if chunked {
                let (body, trailers) = self.chunked().await;
                (Framing::Chunked, body, trailers)
            } else if let Some(length) = header(&head, "content-length") {
                let length = length.parse().expect("numeric Content-Length");
                (Framing::ContentLength, self.exact(length).await, Vec::new())
            } else {
                (Framing::Close, self.until_close().await, Vec::new())
            };
            return Response {
                interim,
                head,
                status,
                body,
                framing,
                trailers,
            };
        }
    }

    /// Sends a request and reads its response.
    async fn exchange(&mut self, request: &str) -> Response {
        self.send(request.as_bytes()).await;
        self.response(request.starts_with("HEAD ")).await
    }

    /// One request as a backend reads it: head and body (by length or chunked); `None` once the
    /// peer closed between requests.
    async fn request(&mut self) -> Option<(String, Vec<u8>)> {
        let head = self.head().await?;
        let chunked = header(&head, "transfer-encoding")
            .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
        let body = if chunked {
            self.chunked().await.0
        } else if let Some(length) = header(&head, "content-length") {
            self.exact(length.parse().expect("numeric Content-Length"))
                .await
        } else {
            Vec::new()
        };
        Some((head, body))
    }
}

/// `GET PATH` with a Host, as one string.
fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: x.test\r\n\r\n")
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
        status_line(&self.head)
    }

    fn method(&self) -> &str {
        self.head.split(' ').next().unwrap_or("")
    }

    fn target(&self) -> &str {
        self.head.split(' ').nth(1).unwrap_or("")
    }
}

/// What a raw backend does with its connection after writing a reply.
#[derive(Debug, Clone, Copy)]
enum Then {
    /// Reads the next request on it, whatever the reply said.
    KeepAlive,
    Close,
    /// Waits, then closes: a backend whose own keep-alive timeout is short.
    CloseAfter(Duration),
}

/// The exact bytes a raw backend answers one request with.
struct Reply {
    bytes: Vec<u8>,
    then: Then,
}

impl Reply {
    fn raw(bytes: impl Into<Vec<u8>>) -> Reply {
        Reply {
            bytes: bytes.into(),
            then: Then::KeepAlive,
        }
    }

    /// `200 OK` with a `Content-Length` body.
    fn ok(body: &str) -> Reply {
        Reply::raw(format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ))
    }

    fn then(self, then: Then) -> Reply {
        Reply { then, ..self }
    }
}

/// A hand-written HTTP/1.1 backend on 127.0.0.1:0. `GET /healthz` answers `ok` and closes; every
/// other request is reported on `requests` and answered with `reply`'s bytes, over as many
/// requests per connection as the replies allow. A connection that served a request reports its
/// close on `closed`.
struct RawBackend {
    addr: SocketAddr,
    requests: mpsc::UnboundedReceiver<Seen>,
    closed: mpsc::UnboundedReceiver<usize>,
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
        let (closed_tx, closed) = mpsc::unbounded_channel();
        let reply = Arc::new(reply);
        let accept = tokio::spawn(async move {
            let mut n_conns = 0;
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                n_conns += 1;
                let conn = n_conns;
                let (reply, requests_tx, closed_tx) =
                    (Arc::clone(&reply), requests_tx.clone(), closed_tx.clone());
                tokio::spawn(async move {
                    let mut wire = Wire::new(stream, None);
                    let mut served = false;
                    while let Some((head, body)) = wire.request().await {
                        if head.starts_with("GET /healthz ") {
                            let _ = wire
                                .stream
                                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                                .await;
                            break;
                        }
                        served = true;
                        let seen = Seen { conn, head, body };
                        let answer = reply(&seen);
                        // Reported before answering: once the client has the response, the
                        // request is on the channel.
                        let _ = requests_tx.send(seen);
                        if wire.stream.write_all(&answer.bytes).await.is_err() {
                            break;
                        }
                        match answer.then {
                            Then::KeepAlive => {}
                            Then::Close => break,
                            Then::CloseAfter(linger) => {
                                tokio::time::sleep(linger).await;
                                break;
                            }
                        }
                    }
                    drop(wire);
                    if served {
                        let _ = closed_tx.send(conn);
                    }
                });
            }
        });
        RawBackend {
            addr,
            requests,
            closed,
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

    /// Requests seen so far that were not taken yet.
    fn taken_all(&mut self) -> Vec<Seen> {
        let mut seen = Vec::new();
        while let Ok(s) = self.requests.try_recv() {
            seen.push(s);
        }
        seen
    }

    /// The next connection the backend closed after serving on it, within [`WAIT`].
    async fn next_closed(&mut self) -> usize {
        timeout(WAIT, self.closed.recv())
            .await
            .expect("the backend closed a connection within the deadline")
            .expect("backend running")
    }
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Starts lb with one pool `/` over `backends` (`IP:PORT[/url_path]`) and an hour-long check
/// interval (only the first check runs), and waits until each passed it.
async fn start(backends: &[String]) -> Lb {
    let list: Vec<String> = backends.iter().map(|b| format!("\"{b}\"")).collect();
    let lb = Lb::start(&format!(
        "[pools.\"/\"]\ninterval = \"1h\"\nbackends = [{}]\n",
        list.join(", ")
    ));
    for backend in backends {
        lb.log_eventually(&format!("backend healthy pool=/ backend={backend}"), WAIT)
            .await;
    }
    lb
}

/// A raw backend answering `reply`, and lb in front of it.
async fn setup<F>(reply: F) -> (RawBackend, Lb)
where
    F: Fn(&Seen) -> Reply + Send + Sync + 'static,
{
    let backend = RawBackend::start(reply).await;
    let lb = start(&[backend.addr.to_string()]).await;
    (backend, lb)
}

/// Answers `200` with the request target as the body.
fn echo_target(seen: &Seen) -> Reply {
    Reply::ok(seen.target())
}

// === 1. keep-alive and pipelining ===

#[tokio::test]
async fn sequential_requests_share_one_client_connection() {
    let (mut backend, lb) = setup(echo_target).await;
    let mut client = Wire::connect(&lb).await;
    for i in 0..3 {
        let path = format!("/ka/{i}");
        let response = client.exchange(&get(&path)).await;
        assert_eq!(response.status, 200, "{}", response.head);
        assert_eq!(response.text(), path);
        assert_eq!(
            response.framing,
            Framing::ContentLength,
            "{}",
            response.head
        );
        // Today: lb adds a `Date` when the backend sent none.
        assert!(
            header(&response.head, "date").is_some(),
            "{}",
            response.head
        );
        assert_eq!(backend.next().await.target(), path);
    }
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let (mut backend, lb) = setup(echo_target).await;
    let mut client = Wire::connect(&lb).await;
    let pipeline = format!("{}{}{}", get("/p/1"), get("/p/2"), get("/p/3"));
    client.send(pipeline.as_bytes()).await;
    for i in 1..=3 {
        let response = client.response(false).await;
        assert_eq!(response.status, 200, "{}", response.head);
        assert_eq!(response.text(), format!("/p/{i}"));
    }
    for i in 1..=3 {
        assert_eq!(backend.next().await.target(), format!("/p/{i}"));
    }
    // The connection still takes a request after the pipeline.
    assert_eq!(client.exchange(&get("/p/4")).await.text(), "/p/4");
}

// === 2. chunked responses ===

#[tokio::test]
async fn a_chunked_response_arrives_whole_and_the_connection_stays_usable() {
    let (mut backend, lb) = setup(|seen| {
        let trailer = if seen.target() == "/trailer" {
            "X-Checksum: abc\r\n"
        } else {
            ""
        };
        Reply::raw(format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n\
             5;name=value\r\nhello\r\n1\r\n,\r\n6\r\n world\r\n0\r\n{trailer}\r\n"
        ))
    })
    .await;
    let mut client = Wire::connect(&lb).await;
    let mut conns = Vec::new();
    for path in ["/trailer", "/plain", "/plain"] {
        let response = client.exchange(&get(path)).await;
        assert_eq!(response.status, 200, "{}", response.head);
        assert_eq!(response.text(), "hello, world");
        // Relayed chunked as it came: extensions, the trailer and its `Trailer` announcement
        // reach the client (as HAProxy does; nginx drops trailers).
        assert_eq!(response.framing, Framing::Chunked, "{}", response.head);
        if path == "/trailer" {
            assert_eq!(response.trailers, ["X-Checksum: abc"]);
            assert_eq!(
                header(&response.head, "trailer").as_deref(),
                Some("X-Checksum"),
                "{}",
                response.head
            );
        } else {
            assert!(response.trailers.is_empty(), "{:?}", response.trailers);
        }
        conns.push(backend.next().await.conn);
    }
    // A response ending in trailers is read to its end like any other: the connection is kept.
    assert_eq!(
        conns[0], conns[1],
        "a response with trailers keeps its connection"
    );
    assert_eq!(
        conns[1], conns[2],
        "a plain chunked response keeps its connection"
    );
}

// === 3. close-delimited responses ===

#[tokio::test]
async fn a_close_delimited_response_arrives_whole() {
    let body: String = (0..20_000)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let sent = body.clone();
    let (_backend, lb) = setup(move |_| {
        Reply::raw(format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n{sent}"
        ))
        .then(Then::Close)
    })
    .await;
    let mut client = Wire::connect(&lb).await;
    let response = client.exchange(&get("/eof")).await;
    assert_eq!(response.status, 200, "{}", response.head);
    assert_eq!(response.body.len(), body.len());
    assert!(response.text() == body, "body differs");
    // Either framing is right; when chunked, the client connection must still be usable.
    assert!(
        matches!(response.framing, Framing::Chunked | Framing::Close),
        "{:?}",
        response.framing
    );
    if response.framing == Framing::Chunked {
        let again = client.exchange(&get("/eof")).await;
        assert_eq!(again.status, 200, "{}", again.head);
        assert!(again.text() == body, "second body differs");
    }
}

// === 4. HEAD ===

#[tokio::test]
async fn head_gets_the_length_header_without_body_bytes() {
    let (mut backend, lb) = setup(|seen| {
        if seen.method() == "HEAD" {
            Reply::raw("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
        } else {
            echo_target(seen)
        }
    })
    .await;
    let mut client = Wire::connect(&lb).await;
    let response = client
        .exchange("HEAD /h HTTP/1.1\r\nHost: x.test\r\n\r\n")
        .await;
    assert_eq!(response.status, 200, "{}", response.head);
    assert_eq!(
        header(&response.head, "content-length").as_deref(),
        Some("5")
    );
    assert_eq!(header(&response.head, "transfer-encoding"), None);
    assert_eq!(backend.next().await.request_line(), "HEAD /h HTTP/1.1");

    // Any stray body byte would sit in front of the next response's status line.
    let response = client.exchange(&get("/after")).await;
    assert!(
        response.head.starts_with("HTTP/1.1 200 OK\r\n"),
        "{:?}",
        response.head
    );
    assert_eq!(response.text(), "/after");
}

// === 5. 204 and 304 ===

#[tokio::test]
async fn no_content_and_not_modified_carry_no_body() {
    let (_backend, lb) = setup(|seen| match seen.target() {
        "/204" => Reply::raw("HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n"),
        "/304" => Reply::raw("HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\r\n"),
        _ => echo_target(seen),
    })
    .await;
    let mut client = Wire::connect(&lb).await;

    let response = client.exchange(&get("/204")).await;
    assert_eq!(status_line(&response.head), "HTTP/1.1 204 No Content");
    assert_eq!(header(&response.head, "x-a").as_deref(), Some("1"));
    assert_eq!(header(&response.head, "content-length"), None);
    assert_eq!(header(&response.head, "transfer-encoding"), None);

    let response = client
        .exchange("GET /304 HTTP/1.1\r\nHost: x.test\r\nIf-None-Match: \"v1\"\r\n\r\n")
        .await;
    assert_eq!(status_line(&response.head), "HTTP/1.1 304 Not Modified");
    assert_eq!(header(&response.head, "etag").as_deref(), Some("\"v1\""));
    assert_eq!(header(&response.head, "transfer-encoding"), None);

    // A stray body (even an empty chunk) would break the next status line.
    let response = client.exchange(&get("/after")).await;
    assert!(
        response.head.starts_with("HTTP/1.1 200 OK\r\n"),
        "{:?}",
        response.head
    );
    assert_eq!(response.text(), "/after");
}

// === 6. 1xx before the final response ===

#[tokio::test]
async fn early_hints_before_the_final_response() {
    let (_backend, lb) = setup(|_| {
        Reply::raw(
            "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n\
             HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal",
        )
    })
    .await;
    let mut client = Wire::connect(&lb).await;
    for _ in 0..2 {
        let response = client.exchange(&get("/hints")).await;
        assert_eq!(status_line(&response.head), "HTTP/1.1 200 OK");
        assert_eq!(response.text(), "final");
        // NOTE: today the 103 is swallowed (hyper's client drops 1xx answers); HAProxy and
        // nginx >= 1.29 forward Early Hints to HTTP/1.1 clients.
        assert!(response.interim.is_empty(), "{:?}", response.interim);
    }
}

// === 7. hop-by-hop headers and X-Forwarded-* ===

#[tokio::test]
async fn hop_by_hop_headers_are_dropped_both_ways_and_a_closing_backend_is_not_reused() {
    let (mut backend, lb) = setup(|_| {
        // `Connection: close`, yet the socket stays open: only lb's own reading of the header
        // keeps it from sending the next request here.
        Reply::raw(
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close, x-internal\r\n\
             X-Internal: 1\r\nKeep-Alive: timeout=1\r\nX-Kept: yes\r\n\r\nhi",
        )
    })
    .await;
    let mut client = Wire::connect(&lb).await;
    let response = client
        .exchange(
            "GET /hop HTTP/1.1\r\nHost: app.test\r\nConnection: keep-alive, x-secret\r\n\
             X-Secret: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Connection: x\r\n\
             X-Forwarded-For: 10.0.0.1\r\nX-Kept-Request: yes\r\n\r\n",
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.head);
    assert_eq!(response.text(), "hi");
    assert_eq!(header(&response.head, "x-kept").as_deref(), Some("yes"));
    for name in ["x-internal", "keep-alive"] {
        assert_eq!(
            header(&response.head, name),
            None,
            "{name} leaked to the client"
        );
    }
    // Today: no `Connection` header at all towards the client; the backend's close concerned
    // only the backend connection, and the client connection stays open.
    assert_eq!(
        header(&response.head, "connection"),
        None,
        "{}",
        response.head
    );

    let seen = backend.next().await;
    assert_eq!(seen.request_line(), "GET /hop HTTP/1.1");
    assert_eq!(header(&seen.head, "host").as_deref(), Some("app.test"));
    assert_eq!(
        header(&seen.head, "x-forwarded-for").as_deref(),
        Some("10.0.0.1, 127.0.0.1")
    );
    assert_eq!(
        header(&seen.head, "x-forwarded-proto").as_deref(),
        Some("http")
    );
    assert_eq!(
        header(&seen.head, "x-forwarded-host").as_deref(),
        Some("app.test")
    );
    assert_eq!(header(&seen.head, "x-kept-request").as_deref(), Some("yes"));
    for name in [
        "connection",
        "x-secret",
        "keep-alive",
        "te",
        "proxy-connection",
    ] {
        assert_eq!(
            header(&seen.head, name),
            None,
            "{name} leaked to the backend"
        );
    }

    // The next request on the same client connection goes on a new backend connection.
    let response = client.exchange(&get("/hop2")).await;
    assert_eq!(response.status, 200, "{}", response.head);
    let second = backend.next().await;
    assert_eq!(second.target(), "/hop2");
    assert_ne!(
        second.conn, seen.conn,
        "lb reused a connection the backend closed"
    );
}

// === 8. backend url_path ===

#[tokio::test]
async fn the_backend_url_path_is_joined_in_front_of_the_target() {
    let mut backend = RawBackend::start(echo_target).await;
    let lb = start(&[format!("{}/v1/", backend.addr)]).await;
    let mut client = Wire::connect(&lb).await;
    for (asked, sent) in [("/users?a=1", "/v1/users?a=1"), ("/", "/v1/")] {
        let response = client.exchange(&get(asked)).await;
        assert_eq!(response.status, 200, "{}", response.head);
        assert_eq!(response.text(), sent);
        assert_eq!(
            backend.next().await.request_line(),
            format!("GET {sent} HTTP/1.1")
        );
    }
}

// === 9. client Connection: close ===

#[tokio::test]
async fn a_client_connection_close_ends_the_connection_after_the_response() {
    let (mut backend, lb) = setup(echo_target).await;
    let mut client = Wire::connect(&lb).await;
    let response = client
        .exchange("GET /bye HTTP/1.1\r\nHost: x.test\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(response.status, 200, "{}", response.head);
    assert_eq!(response.text(), "/bye");
    // Today: the close is announced.
    assert_eq!(
        header(&response.head, "connection").as_deref(),
        Some("close"),
        "{}",
        response.head
    );
    client.expect_close().await;
    assert_eq!(header(&backend.next().await.head, "connection"), None);
}

// === 10. request bodies between bodiless requests ===

#[tokio::test]
async fn get_post_get_on_one_connection() {
    let (mut backend, lb) = setup(|seen| {
        Reply::ok(&format!(
            "{} {} {}",
            seen.method(),
            seen.target(),
            String::from_utf8_lossy(&seen.body)
        ))
    })
    .await;
    let mut client = Wire::connect(&lb).await;
    let requests = [
        (get("/one"), "GET /one "),
        (
            "POST /two HTTP/1.1\r\nHost: x.test\r\nContent-Length: 5\r\n\r\nhello".to_owned(),
            "POST /two hello",
        ),
        (get("/three"), "GET /three "),
    ];
    for (request, answer) in &requests {
        let response = client.exchange(request).await;
        assert_eq!(response.status, 200, "{}", response.head);
        assert_eq!(response.text(), *answer);
    }
    let seen: Vec<Seen> = vec![
        backend.next().await,
        backend.next().await,
        backend.next().await,
    ];
    let lines: Vec<&str> = seen.iter().map(Seen::request_line).collect();
    assert_eq!(
        lines,
        [
            "GET /one HTTP/1.1",
            "POST /two HTTP/1.1",
            "GET /three HTTP/1.1"
        ]
    );
    assert_eq!(seen[1].body, b"hello");
    assert_eq!(
        header(&seen[1].head, "content-length").as_deref(),
        Some("5")
    );
    assert!(seen[0].body.is_empty() && seen[2].body.is_empty());
    // Bodiless requests go without framing headers.
    for s in [&seen[0], &seen[2]] {
        assert_eq!(header(&s.head, "content-length"), None, "{}", s.head);
        assert_eq!(header(&s.head, "transfer-encoding"), None, "{}", s.head);
    }
}

// === 11. a backend closing its idle connection ===

#[tokio::test]
async fn a_backend_connection_closed_while_idle_is_not_used_again() {
    let (mut backend, lb) = setup(|seen| {
        Reply::raw(format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n{}",
            seen.target().len(),
            seen.target()
        ))
        .then(Then::CloseAfter(Duration::from_millis(50)))
    })
    .await;
    let mut client = Wire::connect(&lb).await;
    let response = client.exchange(&get("/first")).await;
    assert_eq!((response.status, response.text().as_str()), (200, "/first"));
    let first = backend.next().await;
    assert_eq!(backend.next_closed().await, first.conn);

    let response = client.exchange(&get("/second")).await;
    assert_eq!(
        (response.status, response.text().as_str()),
        (200, "/second"),
        "{}",
        response.head
    );
    let second = backend.next().await;
    assert_eq!(second.target(), "/second");
    assert_ne!(second.conn, first.conn);
    assert!(backend.taken_all().is_empty(), "a request was sent twice");
}

// === 12. broken backends ===

#[tokio::test]
async fn a_backend_answering_garbage_gets_502() {
    let (mut backend, lb) = setup(|_| Reply::raw("hello\r\n\r\n").then(Then::Close)).await;
    let mut client = Wire::connect(&lb).await;
    let response = client.exchange(&get("/garbage")).await;
    assert_eq!(status_line(&response.head), "HTTP/1.1 502 Bad Gateway");
    assert_eq!(response.text(), "backend failed\n");
    // NOTE: a GET is idempotent and `retries` defaults to 1, and with no other backend the
    // retry goes to the same one: the backend sees the request twice.
    assert_eq!(backend.next().await.target(), "/garbage");
    assert_eq!(backend.next().await.target(), "/garbage");
    // The client connection survives the 502.
    let response = client.exchange(&get("/garbage")).await;
    assert_eq!(response.status, 502, "{}", response.head);
}

#[tokio::test]
async fn an_oversized_backend_response_head() {
    let (_backend, lb) = setup(|seen| {
        let kib: usize = seen.target().trim_start_matches('/').parse().unwrap_or(1);
        let big = "v".repeat(kib * 1024);
        Reply::raw(format!(
            "HTTP/1.1 200 OK\r\nX-Big: {big}\r\nContent-Length: 2\r\n\r\nhi"
        ))
        .then(Then::Close)
    })
    .await;

    // NOTE: a 110 KiB response head is relayed whole, though lb refuses request heads over
    // 64 KiB with 431; nginx (proxy_buffer_size, 4-8 KiB) and HAProxy (tune.bufsize, 16 KiB)
    // answer 502 to such a head.
    let mut client = Wire::connect(&lb).await;
    let response = client.exchange(&get("/110")).await;
    assert_eq!(response.status, 200, "{}", status_line(&response.head));
    assert_eq!(
        header(&response.head, "x-big").map(|v| v.len()),
        Some(110 * 1024)
    );
    assert_eq!(response.text(), "hi");

    // Past hyper's client buffer (~400 KiB) it is a 502.
    let mut client = Wire::connect(&lb).await;
    let response = client.exchange(&get("/1024")).await;
    assert_eq!(status_line(&response.head), "HTTP/1.1 502 Bad Gateway");
    assert_eq!(response.text(), "backend failed\n");
}

// === 13. absolute-form targets ===

#[tokio::test]
async fn an_absolute_form_target_is_sent_in_origin_form() {
    let (mut backend, lb) = setup(echo_target).await;
    let mut client = Wire::connect(&lb).await;
    let response = client
        .exchange("GET http://x.test/abc?q=1 HTTP/1.1\r\nHost: x.test\r\n\r\n")
        .await;
    assert_eq!(status_line(&response.head), "HTTP/1.1 200 OK");
    assert_eq!(response.text(), "/abc?q=1");
    let seen = backend.next().await;
    assert_eq!(seen.request_line(), "GET /abc?q=1 HTTP/1.1");
    assert_eq!(header(&seen.head, "host").as_deref(), Some("x.test"));
    assert_eq!(
        header(&seen.head, "x-forwarded-host").as_deref(),
        Some("x.test")
    );
}

// === 14. HTTP/1.0 ===

#[tokio::test]
async fn an_http10_request_without_host() {
    let (mut backend, lb) = setup(echo_target).await;
    let mut client = Wire::connect(&lb).await;
    let response = client.exchange("GET /old HTTP/1.0\r\n\r\n").await;
    // Today: the answer is in the client's version.
    assert_eq!(status_line(&response.head), "HTTP/1.0 200 OK");
    assert_eq!(response.text(), "/old");
    assert_eq!(
        response.framing,
        Framing::ContentLength,
        "{}",
        response.head
    );
    assert_eq!(
        header(&response.head, "connection"),
        None,
        "{}",
        response.head
    );
    // HTTP/1.0 without keep-alive: lb closes after the response.
    client.expect_close().await;

    let seen = backend.next().await;
    assert_eq!(seen.request_line(), "GET /old HTTP/1.1");
    assert_eq!(
        header(&seen.head, "host"),
        Some(backend.addr.to_string()),
        "{}",
        seen.head
    );
    assert_eq!(
        header(&seen.head, "x-forwarded-host"),
        None,
        "{}",
        seen.head
    );
}

// === 15. Expect: 100-continue ===

#[tokio::test]
async fn expect_100_continue_like_curl() {
    let (mut backend, lb) = setup(|seen| {
        Reply::ok(&format!(
            "{} {}",
            seen.method(),
            String::from_utf8_lossy(&seen.body)
        ))
    })
    .await;
    let mut client = Wire::connect(&lb).await;
    client
        .send(
            b"POST /upload HTTP/1.1\r\nHost: x.test\r\nContent-Length: 5\r\n\
              Expect: 100-continue\r\n\r\n",
        )
        .await;
    let interim = timeout(Duration::from_secs(2), client.head())
        .await
        .expect("100 Continue within 2 s")
        .expect("a head before the close");
    assert_eq!(interim, "HTTP/1.1 100 Continue\r\n\r\n");
    client.send(b"hello").await;
    let response = client.response(false).await;
    assert_eq!(response.status, 200, "{}", response.head);
    assert_eq!(response.text(), "POST hello");

    let seen = backend.next().await;
    assert_eq!(seen.body, b"hello");
    // NOTE: `Expect` is forwarded to the backend as well, after lb has already sent its own
    // `100 Continue`; nginx answers the expectation itself and does not pass `Expect` on.
    assert_eq!(
        header(&seen.head, "expect").as_deref(),
        Some("100-continue"),
        "{}",
        seen.head
    );
}

// === keep-alive deadlines ===

/// A kept-alive connection waits for its next head at most `header_timeout` (shorter than
/// `idle_timeout` here), as hyper's header timer and HAProxy's `http-keep-alive` do; a head
/// begun is cut off at `header_timeout` too.
#[tokio::test]
async fn a_kept_alive_connection_waits_header_timeout_for_its_next_head() {
    let backend = RawBackend::start(echo_target).await;
    let lb = Lb::start(&format!(
        "[server]\nheader_timeout = \"400ms\"\nidle_timeout = \"1h\"\n\n\
         [pools.\"/\"]\ninterval = \"1h\"\nbackends = [\"{}\"]\n",
        backend.addr
    ));
    lb.log_eventually(
        &format!("backend healthy pool=/ backend={}", backend.addr),
        WAIT,
    )
    .await;

    let mut client = Wire::connect(&lb).await;
    assert_eq!(client.exchange(&get("/one")).await.text(), "/one");
    let idle = Instant::now();
    client.expect_close().await;
    let waited = idle.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(3),
        "closed after {waited:?}"
    );

    let mut client = Wire::connect(&lb).await;
    assert_eq!(client.exchange(&get("/two")).await.text(), "/two");
    client.send(b"GET /three HTTP/1.1\r\nHost: x\r\n").await;
    let begun = Instant::now();
    client.expect_close().await;
    assert!(
        begun.elapsed() < Duration::from_secs(3),
        "{:?}",
        begun.elapsed()
    );
}

/// A head over the 64 KiB limit gets 431 even when its last read completes it (the native
/// path must not serve a whole head just because it parsed).
#[tokio::test]
async fn a_head_over_the_limit_completed_by_one_read_gets_431() {
    let (_backend, lb) = setup(echo_target).await;
    let mut client = Wire::connect(&lb).await;
    let start = "GET / HTTP/1.1\r\nHost: x\r\nX-Big: ";
    let filler = "v".repeat(64 * 1024 - start.len() - 8);
    client.send(format!("{start}{filler}").as_bytes()).await;
    // NOTE: a pause, not a signal (lb shows none): it lets lb read the first part, so the last
    // read brings the head past the limit and whole at once. Without it the head is refused on
    // the other branch (too long before it ends), which this test accepts as well.
    tokio::time::sleep(Duration::from_millis(100)).await;
    client.send(b"vvvvvvvvvvvvvvvvvvvv\r\n\r\n").await;
    let head = client.head().await.unwrap_or_default();
    assert_eq!(status_of(&head), 431, "{head}");
}
