//! Raw HTTP/1.1 over TCP for tests that pin lb's bytes: a client or backend connection end with
//! its read buffer (`Wire`), a hand-written backend that records request heads and answers
//! given bytes (`RawBackend`), raw-head helpers, and lb started in front of such backends.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;

use super::Lb;

/// The bound on every wait for lb or a backend; a test that needs it has already failed.
pub const WAIT: Duration = Duration::from_secs(5);

// === helpers ===

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Every value of header `name` in a raw head, case-insensitively, in order.
pub fn headers_named(head: &str, name: &str) -> Vec<String> {
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

/// The first value of header `name` in a raw head, case-insensitively.
pub fn header(head: &str, name: &str) -> Option<String> {
    headers_named(head, name).into_iter().next()
}

pub fn status_of(head: &str) -> u16 {
    head.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"))
}

pub fn status_line(head: &str) -> &str {
    head.lines().next().unwrap_or("")
}

/// One head off `stream` through its blank line, read a byte at a time so that nothing behind it
/// is consumed: a tunnel or a body the test reads itself stays on the stream. What arrived
/// (possibly nothing) when the peer closed first; each read waits at most [`WAIT`].
pub async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = timeout(WAIT, stream.read(&mut byte))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no whole head within {WAIT:?}; have {:?}",
                    String::from_utf8_lossy(&head)
                )
            })
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// One end of a raw TCP connection with its read buffer, so messages can be taken off it one at
/// a time (pipelined bytes stay buffered for the next one).
pub struct Wire {
    pub stream: TcpStream,
    pub buf: Vec<u8>,
    /// How long one read may wait: `Some` for a test's client, which must never hang; `None` in a
    /// backend, whose idle keep-alive connection waits as long as lb keeps it.
    pub patience: Option<Duration>,
}

/// How a response's body was delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body by definition: HEAD, 204, 304.
    Bodiless,
    ContentLength,
    Chunked,
    /// Read until the connection closed.
    Close,
}

/// A response as the client read it.
#[derive(Debug)]
pub struct Response {
    /// 1xx heads (other than 101) that arrived before the final one.
    pub interim: Vec<String>,
    /// The final head, through its blank line.
    pub head: String,
    pub status: u16,
    /// The body, de-chunked when chunked.
    pub body: Vec<u8>,
    pub framing: Framing,
    /// Trailer lines of a chunked body.
    pub trailers: Vec<String>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

// === impl Wire ===

impl Wire {
    pub fn new(stream: TcpStream, patience: Option<Duration>) -> Wire {
        Wire {
            stream,
            buf: Vec::new(),
            patience,
        }
    }

    /// A client connection to lb.
    pub async fn connect(lb: &Lb) -> Wire {
        let stream = timeout(WAIT, TcpStream::connect(lb.http))
            .await
            .expect("connect within the deadline")
            .expect("connect to lb");
        Wire::new(stream, Some(WAIT))
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        timeout(WAIT, self.stream.write_all(bytes))
            .await
            .expect("write within the deadline")
            .expect("write");
    }

    /// Reads more bytes into the buffer; false once the peer has closed (a reset counts).
    pub async fn fill(&mut self) -> bool {
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
    pub async fn head(&mut self) -> Option<String> {
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

    /// One response head, which must come before the peer closes.
    pub async fn response_head(&mut self) -> String {
        self.head()
            .await
            .expect("a response head before the connection closed")
    }

    /// One line without its CRLF.
    pub async fn line(&mut self) -> String {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..end + 2).collect();
                return String::from_utf8_lossy(&line[..end]).into_owned();
            }
            assert!(self.fill().await, "closed mid-line");
        }
    }

    pub async fn exact(&mut self, n: usize) -> Vec<u8> {
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
    pub async fn chunked(&mut self) -> (Vec<u8>, Vec<String>) {
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
    pub async fn until_close(&mut self) -> Vec<u8> {
        while self.fill().await {}
        std::mem::take(&mut self.buf)
    }

    /// Echoes what is buffered and then every byte that comes until the peer closes its side;
    /// then closes (an upgraded connection's far end).
    pub async fn echo(mut self) {
        if self.stream.write_all(&self.buf).await.is_err() {
            return;
        }
        let (mut read, mut write) = self.stream.split();
        let _ = tokio::io::copy(&mut read, &mut write).await;
    }

    /// Asserts that the peer closes without sending another byte.
    pub async fn expect_close(&mut self) {
        let rest = self.until_close().await;
        assert!(
            rest.is_empty(),
            "bytes before the close: {:?}",
            String::from_utf8_lossy(&rest)
        );
    }

    /// The final response to a request (`bodiless` for HEAD), framed as a client would.
    pub async fn response(&mut self, bodiless: bool) -> Response {
        let mut interim = Vec::new();
        loop {
            let head = self.response_head().await;
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

    /// One `Content-Length` response as a client reads it: head and body.
    pub async fn length_response(&mut self) -> (String, Vec<u8>) {
        let response = self.response(false).await;
        assert_eq!(
            response.framing,
            Framing::ContentLength,
            "no Content-Length in {:?}",
            response.head
        );
        (response.head, response.body)
    }

    /// Sends a request and reads its response.
    pub async fn exchange(&mut self, request: &str) -> Response {
        self.send(request.as_bytes()).await;
        self.response(request.starts_with("HEAD ")).await
    }

    /// One request as a backend reads it: head and body (by length or chunked); `None` once the
    /// peer closed between requests.
    pub async fn request(&mut self) -> Option<(String, Vec<u8>)> {
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

// === raw backends ===

/// What a raw backend saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Which accepted connection it came on (health-check connections count too).
    pub conn: usize,
    pub head: String,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn request_line(&self) -> &str {
        status_line(&self.head)
    }

    pub fn method(&self) -> &str {
        self.head.split(' ').next().unwrap_or("")
    }

    pub fn target(&self) -> &str {
        self.head.split(' ').nth(1).unwrap_or("")
    }
}

/// What a raw backend does with its connection after writing a reply.
#[derive(Debug, Clone, Copy)]
pub enum Then {
    /// Reads the next request on it, whatever the reply said.
    KeepAlive,
    Close,
    /// Waits, then closes: a backend whose own keep-alive timeout is short.
    CloseAfter(Duration),
}

/// The exact bytes a raw backend answers one request with, written piece by piece.
pub struct Reply {
    pub pieces: Vec<Vec<u8>>,
    /// A pause between pieces, so each arrives as a read of its own.
    pub pause: Duration,
    pub then: Then,
}

impl Reply {
    pub fn raw(bytes: impl Into<Vec<u8>>) -> Reply {
        Reply::pieces(vec![bytes.into()], Duration::ZERO)
    }

    /// `pieces` written one after another with `pause` between them.
    pub fn pieces(pieces: Vec<Vec<u8>>, pause: Duration) -> Reply {
        Reply {
            pieces,
            pause,
            then: Then::KeepAlive,
        }
    }

    /// `200 OK` with a `Content-Length` body.
    pub fn ok(body: &str) -> Reply {
        Reply::raw(format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ))
    }

    pub fn then(self, then: Then) -> Reply {
        Reply { then, ..self }
    }

    /// Close the connection after the reply instead of reading the next request.
    pub fn closing(self) -> Reply {
        self.then(Then::Close)
    }
}

/// A hand-written HTTP/1.1 backend on 127.0.0.1:0. `GET /healthz` answers `ok` and closes; every
/// other request is reported on `requests` and then answered with given bytes
/// ([`RawBackend::start`]) or handed over to the test's own code ([`RawBackend::handing_over`]).
/// A connection that served a request reports its close on `closed`.
pub struct RawBackend {
    pub addr: SocketAddr,
    requests: mpsc::UnboundedReceiver<Seen>,
    closed: mpsc::UnboundedReceiver<usize>,
    accept: JoinHandle<()>,
}

// === impl RawBackend ===

impl RawBackend {
    /// Answers every request with `reply`'s bytes.
    pub async fn start<F>(reply: F) -> RawBackend
    where
        F: Fn(&Seen) -> Reply + Send + Sync + 'static,
    {
        let reply = Arc::new(reply);
        RawBackend::serving(move |wire, conn, requests| {
            answer_each(wire, conn, Arc::clone(&reply), requests)
        })
    }

    /// Reads each connection's first request head, reports it, and hands the connection over to
    /// `serve` with whatever followed the head still buffered in the [`Wire`]: for backends that
    /// stream, tunnel, hang up mid-request or count their own exchanges.
    pub async fn handing_over<F, Fut>(serve: F) -> RawBackend
    where
        F: Fn(Seen, Wire) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let serve = Arc::new(serve);
        RawBackend::serving(move |mut wire, conn, requests| {
            let serve = Arc::clone(&serve);
            async move {
                let Some(head) = wire.head().await else {
                    return false;
                };
                if head.starts_with("GET /healthz ") {
                    let _ = wire.stream.write_all(HEALTHY).await;
                    return false;
                }
                let seen = Seen {
                    conn,
                    head,
                    body: Vec::new(),
                };
                let _ = requests.send(seen.clone());
                serve(seen, wire).await;
                true
            }
        })
    }

    /// The accept loop: each connection (numbered from 1, health checks included) goes to
    /// `connection`, which reports the requests it serves and says whether it served one; the
    /// close of such a connection is reported once `connection` has dropped it.
    fn serving<H, Fut>(connection: H) -> RawBackend
    where
        H: Fn(Wire, usize, mpsc::UnboundedSender<Seen>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = bool> + Send + 'static,
    {
        let listener = super::backend_listener(super::LOOPBACK_ANY);
        let addr = listener.local_addr().unwrap();
        let (requests_tx, requests) = mpsc::unbounded_channel();
        let (closed_tx, closed) = mpsc::unbounded_channel();
        let accept = super::spawn_backend(async move {
            let mut n_conns = 0;
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                n_conns += 1;
                let conn = n_conns;
                let served = connection(Wire::new(stream, None), conn, requests_tx.clone());
                let closed_tx = closed_tx.clone();
                tokio::spawn(async move {
                    if served.await {
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
    pub async fn next(&mut self) -> Seen {
        timeout(WAIT, self.requests.recv())
            .await
            .expect("the backend saw a request within the deadline")
            .expect("backend running")
    }

    /// Requests seen so far that were not taken yet.
    pub fn taken_all(&mut self) -> Vec<Seen> {
        let mut seen = Vec::new();
        while let Ok(s) = self.requests.try_recv() {
            seen.push(s);
        }
        seen
    }

    /// The next connection the backend closed after serving on it, within [`WAIT`].
    pub async fn next_closed(&mut self) -> usize {
        timeout(WAIT, self.closed.recv())
            .await
            .expect("the backend closed a connection within the deadline")
            .expect("backend running")
    }
}

impl RawBackend {
    /// Stops accepting and waits until the listener is closed: a connect after this is refused
    /// (dropping only asks the backends' runtime to stop it, which may take a moment).
    pub async fn kill(mut self) {
        self.accept.abort();
        let accept = std::mem::replace(&mut self.accept, super::spawn_backend(async {}));
        let _ = accept.await;
    }
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// What a raw backend answers a health check with, closing the connection after it.
const HEALTHY: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";

/// [`RawBackend::start`]'s connection: every request reported on `requests` and answered with
/// `reply`'s bytes, until a reply closes or the peer does; true when it served a request.
async fn answer_each<F>(
    mut wire: Wire,
    conn: usize,
    reply: Arc<F>,
    requests: mpsc::UnboundedSender<Seen>,
) -> bool
where
    F: Fn(&Seen) -> Reply + Send + Sync + 'static,
{
    let mut served = false;
    while let Some((head, body)) = wire.request().await {
        if head.starts_with("GET /healthz ") {
            let _ = wire.stream.write_all(HEALTHY).await;
            break;
        }
        served = true;
        let seen = Seen { conn, head, body };
        let answer = reply(&seen);
        // Reported before answering: once the client has the response, the request is on the
        // channel.
        let _ = requests.send(seen);
        for (i, piece) in answer.pieces.iter().enumerate() {
            if i > 0 && !answer.pause.is_zero() {
                tokio::time::sleep(answer.pause).await;
            }
            if wire.stream.write_all(piece).await.is_err() {
                return served;
            }
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
    served
}

/// Starts lb with one pool `/` over `backends` (`IP:PORT[/url_path]`) and an hour-long check
/// interval (only the first check runs), and waits until each passed it.
pub async fn start(backends: &[String]) -> Lb {
    start_with("", backends).await
}

/// [`start`], with `prefix` (say a `[server]` table) written before the pool in lb.toml.
pub async fn start_with(prefix: &str, backends: &[String]) -> Lb {
    let list: Vec<String> = backends.iter().map(|b| format!("\"{b}\"")).collect();
    let lb = Lb::start(&format!(
        "{prefix}[pools.\"/\"]\ninterval = \"1h\"\nbackends = [{}]\n",
        list.join(", ")
    ));
    for backend in backends {
        lb.log_eventually(&format!("backend healthy pool=/ backend={backend}"), WAIT)
            .await;
    }
    lb
}

/// A raw backend answering `reply`, and lb in front of it.
pub async fn setup<F>(reply: F) -> (RawBackend, Lb)
where
    F: Fn(&Seen) -> Reply + Send + Sync + 'static,
{
    let backend = RawBackend::start(reply).await;
    let lb = start(&[backend.addr.to_string()]).await;
    (backend, lb)
}
