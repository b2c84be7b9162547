//! Keep-alive HTTP/1.1 connections to one backend: connect (over TLS for a pool with
//! `backend_tls`: [`Upstream`]), send, and keep the idle ones for the next request. Each [`Backend`] owns its [`IdleConnections`], so they live exactly as long as
//! the backend does across reloads and close when it leaves the file.
//!
//! Why not hyper-util's pooled `Client`: it looks every request up by scheme and authority in a
//! mutex-guarded map, re-parses the URI and moves several large futures around; on the proxy's
//! hot path that was ~8k instructions a request (callgrind under wrk), more than hyper's own
//! parsing and writing. Here the request already knows its backend, so a checkout is one
//! lock-free pop.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use http::{HeaderMap, Method, Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::body::RequestBody;
use super::h1;
use super::h1::backend::ExchangeError;
use super::h1::wire::{self, ResponseHead};
use super::headers::{self, Forwarding};
use crate::topology::{Backend, Pool};

/// Idle connections kept per backend at most; more are closed when their request ends.
const MAX_IDLE: usize = 128;

/// A backend's idle keep-alive connections, ready for a request.
///
/// Two kinds: hyper's client connections (HTTP/2 requests that carry a body)
/// and plain sockets for lb's own HTTP/1.1 code (`proxy::h1`, `send_plain`), which reads and
/// writes the bytes itself.
///
/// A connection idle past the pool's `idle_timeout` is never reused, and the backend's health
/// checker closes it on a timer ([`IdleConnections::close_expired`]): the backend may have
/// forgotten it, and an idle fleet of sockets helps nobody.
pub struct IdleConnections {
    /// Allocated on first use: a file may declare thousands of backends that never see traffic.
    queue: OnceLock<ArrayQueue<Idle>>,
    streams: OnceLock<ArrayQueue<IdleStream>>,
    /// The pool's `idle_timeout` in milliseconds, set by the checker from the applied config.
    idle_timeout_ms: AtomicU64,
    /// Set when the backend leaves the file: every connection is closed, and one whose exchange
    /// ends later is closed then instead of kept.
    retired: AtomicBool,
}

impl Default for IdleConnections {
    fn default() -> IdleConnections {
        IdleConnections {
            queue: OnceLock::new(),
            streams: OnceLock::new(),
            idle_timeout_ms: AtomicU64::new(crate::config::DEFAULT_IDLE_TIMEOUT.as_millis() as u64),
            retired: AtomicBool::new(false),
        }
    }
}

struct Idle {
    sender: SendRequest<RequestBody>,
    since: Instant,
}

struct IdleStream {
    stream: Upstream,
    since: Instant,
}

/// A connection to a backend for lb's own HTTP/1.1 code: plain TCP, or TLS over it for a pool
/// with `backend_tls`. The TLS state is boxed, so the plain case stays a socket and a tag.
pub enum Upstream {
    /// Cleartext.
    Plain(TcpStream),
    /// TLS, verified against the pool's `backend_tls` at connect.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Upstream {
    /// Whether an idle connection is still good: it has nothing to read. Readable means the
    /// backend closed it (or sent bytes nobody asked for: over TLS, a close_notify). tokio
    /// answers from the readiness its reactor recorded, so a quiet socket costs no system call.
    fn is_quiet(&self) -> bool {
        match self {
            Upstream::Plain(stream) => {
                let mut byte = [0u8; 1];
                matches!(stream.try_read(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
            Upstream::Tls(stream) => {
                // The session holds no plaintext nobody asked for and no close_notify (then it
                // wants to read), has sent all it wrote, and the socket has nothing more:
                // peeked, not read, as the bytes belong to the session. Nothing waits on an
                // idle socket, so the no-op waker replaces no one.
                let (tcp, session) = stream.get_ref();
                let mut byte = [0u8; 1];
                let mut buf = tokio::io::ReadBuf::new(&mut byte);
                let mut cx = Context::from_waker(std::task::Waker::noop());
                session.wants_read()
                    && !session.wants_write()
                    && tcp.poll_peek(&mut cx, &mut buf).is_pending()
            }
        }
    }

    /// Resolves when the backend has sent something (or closed) while a request body still goes
    /// to it: an early answer. Plain TCP only: over TLS the socket's readiness may be a session
    /// ticket, not an answer, so a TLS backend's answer is read once its body has gone.
    pub async fn answered(&self) {
        match self {
            Upstream::Plain(stream) => {
                let _ = stream.readable().await;
            }
            Upstream::Tls(_) => std::future::pending().await,
        }
    }

    /// Writes some of `buf` (at least one byte, or an error) and, over TLS, pushes it out, for a
    /// body streamed as it comes. On plain TCP it returns `Ok(None)` instead when the backend
    /// answers first ([`Upstream::answered`]). Cancel safe on plain TCP; over TLS a write may
    /// have been taken when cancelled, which only a failing deadline does.
    pub async fn write_some(&mut self, buf: &[u8]) -> io::Result<Option<usize>> {
        match self {
            Upstream::Plain(stream) => loop {
                tokio::select! {
                    biased;
                    _ = stream.readable() => return Ok(None),
                    ready = stream.writable() => {
                        ready?;
                        match stream.try_write(buf) {
                            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                            written => return written.map(Some),
                        }
                    }
                }
            },
            Upstream::Tls(stream) => {
                let n = stream.write(buf).await?;
                stream.flush().await?;
                Ok(Some(n))
            }
        }
    }
}

impl AsyncRead for Upstream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Upstream::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Upstream::Tls(stream) => {
                // What was written and still waits in the TLS session goes out before an
                // answer is awaited: a request written whole (`write_all`) may not have left.
                if let Poll::Ready(Err(error)) = Pin::new(&mut **stream).poll_flush(cx) {
                    return Poll::Ready(Err(error));
                }
                Pin::new(&mut **stream).poll_read(cx, buf)
            }
        }
    }
}

impl AsyncWrite for Upstream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Upstream::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Upstream::Tls(stream) => Pin::new(&mut **stream).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Upstream::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Upstream::Tls(stream) => Pin::new(&mut **stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Upstream::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Upstream::Tls(stream) => Pin::new(&mut **stream).poll_shutdown(cx),
        }
    }
}

impl std::fmt::Debug for IdleConnections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdleConnections")
            .field("idle", &self.len())
            .finish()
    }
}

impl IdleConnections {
    /// Idle connections held now, of both kinds (hyper and plain socket).
    pub fn len(&self) -> usize {
        self.queue.get().map_or(0, ArrayQueue::len) + self.streams.get().map_or(0, ArrayQueue::len)
    }

    /// No idle connection is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How long a connection may stay idle and still be reused.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms.load(Ordering::Relaxed))
    }

    /// Sets the pool's `idle_timeout` from the applied config.
    pub fn set_idle_timeout(&self, timeout: Duration) {
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self.idle_timeout_ms.store(ms, Ordering::Relaxed);
    }

    /// An idle connection that can take a request now, if there is one.
    fn take(&self) -> Option<SendRequest<RequestBody>> {
        let queue = self.queue.get()?;
        let idle_timeout = self.idle_timeout();
        while let Some(idle) = queue.pop() {
            // Closed by the backend while idle, or idle too long: dropping it closes it.
            if idle.sender.is_ready() && idle.since.elapsed() < idle_timeout {
                return Some(idle.sender);
            }
        }
        None
    }

    /// Keeps a connection whose exchange has ended for the next request.
    fn put(&self, sender: SendRequest<RequestBody>) {
        if self.retired.load(Ordering::Relaxed) {
            return;
        }
        let queue = self.queue.get_or_init(|| ArrayQueue::new(MAX_IDLE));
        // Full: this one is closed; the idle set already covers the concurrency seen.
        let _ = queue.push(Idle {
            sender,
            since: Instant::now(),
        });
        self.close_if_retired();
    }

    /// A connection handed back while [`IdleConnections::retire`] ran is closed all the same.
    fn close_if_retired(&self) {
        if self.retired.load(Ordering::SeqCst) {
            self.close_all();
        }
    }

    /// An idle plain socket that can take a request now, if there is one.
    pub(super) fn take_stream(&self) -> Option<Upstream> {
        let queue = self.streams.get()?;
        let idle_timeout = self.idle_timeout();
        while let Some(idle) = queue.pop() {
            if idle.since.elapsed() < idle_timeout && idle.stream.is_quiet() {
                return Some(idle.stream);
            }
        }
        None
    }

    /// Keeps a plain socket whose exchange has ended (its response read to the last byte).
    pub(super) fn put_stream(&self, stream: Upstream) {
        if self.retired.load(Ordering::Relaxed) {
            return;
        }
        let queue = self.streams.get_or_init(|| ArrayQueue::new(MAX_IDLE));
        let _ = queue.push(IdleStream {
            stream,
            since: Instant::now(),
        });
        self.close_if_retired();
    }

    /// Closes every idle connection: a disabled backend takes no request to reuse them for.
    pub fn close_all(&self) {
        if let Some(queue) = self.queue.get() {
            while queue.pop().is_some() {}
        }
        if let Some(queue) = self.streams.get() {
            while queue.pop().is_some() {}
        }
    }

    /// Closes every connection now and every one handed back later: the backend has left the
    /// file, and whatever still holds its state (a request in flight) must not keep sockets.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::SeqCst);
        self.close_all();
    }

    /// Closes connections idle past the idle timeout or closed by the backend. Called on a
    /// timer by the backend's health checker, off the request path.
    pub fn close_expired(&self) {
        let idle_timeout = self.idle_timeout();
        if let Some(queue) = self.queue.get() {
            // Each entry is looked at once: popped, and pushed back behind the others if kept
            // (the queue's order stays oldest first). A request may take one meanwhile.
            for _ in 0..queue.len() {
                match queue.pop() {
                    Some(idle)
                        if !idle.sender.is_closed() && idle.since.elapsed() < idle_timeout =>
                    {
                        let _ = queue.push(idle);
                    }
                    Some(_) => {}
                    None => break,
                }
            }
        }
        if let Some(queue) = self.streams.get() {
            for _ in 0..queue.len() {
                match queue.pop() {
                    Some(idle) if idle.stream.is_quiet() && idle.since.elapsed() < idle_timeout => {
                        let _ = queue.push(idle);
                    }
                    Some(_) => {}
                    None => break,
                }
            }
        }
    }
}

/// A connection lent to one exchange; [`Lease::release`] gives it back when the response has
/// been read to its end, dropping it closes it.
pub struct Lease {
    sender: SendRequest<RequestBody>,
}

impl Lease {
    /// Back to `backend`'s idle set, once the connection can take another request.
    pub fn release(self, backend: &Arc<Backend>) {
        let mut sender = self.sender;
        if sender.is_ready() {
            backend.connections.put(sender);
        } else if !sender.is_closed() {
            // The connection task has not yet finished the exchange (it runs separately from
            // this body); wait for it off the request path rather than close a good connection.
            // Outside a runtime (a body dropped at shutdown) the connection just closes.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let backend = Arc::clone(backend);
                runtime.spawn(async move {
                    if sender.ready().await.is_ok() {
                        backend.connections.put(sender);
                    }
                });
            }
        }
    }
}

/// Why a request got no response from its backend.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could be made (refused, unreachable, or `connect_timeout` passed, which
    /// shows as [`io::ErrorKind::TimedOut`]). The request was not sent.
    #[error("cannot connect to {addr}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// The connection failed during the exchange; the backend may have seen the request.
    #[error(transparent)]
    Exchange(#[from] hyper::Error),
    /// The same, on a plain socket ([`send_plain`]).
    #[error(transparent)]
    Plain(ExchangeError),
}

impl SendError {
    /// The backend answered with something lb cannot relay (a malformed head): it is not
    /// asked again for this request.
    pub fn is_malformed(&self) -> bool {
        match self {
            SendError::Connect { .. } => false,
            SendError::Exchange(error) => error.is_parse() || error.is_parse_status(),
            SendError::Plain(error) => error.is_malformed(),
        }
    }
}

impl From<ExchangeError> for SendError {
    fn from(error: ExchangeError) -> SendError {
        match error {
            ExchangeError::Connect { addr, source } => SendError::Connect { addr, source },
            other => SendError::Plain(other),
        }
    }
}

/// What [`send_plain`] brought back: the response head for hyper's client, and the socket and
/// bytes its body continues from (see [`h1::backend::PlainBody::new`]).
pub struct PlainResponse {
    pub response: Response<()>,
    pub upstream: Upstream,
    pub head: ResponseHead,
    /// The response head and whatever body bytes were read behind it.
    pub buffer: Vec<u8>,
}

/// Sends a bodiless request on a plain socket with lb's own HTTP/1.1 code (`h1::backend`)
/// rather than hyper's client: no header map built for the backend, no task of its own per
/// connection to hop to and back (about a quarter of an HTTP/2 request's cost, callgrind).
/// `target` is the client's path and query; the backend's `url_path` goes in front.
pub async fn send_plain(
    backend: &Backend,
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    forwarding: &Forwarding<'_>,
    pool: &Pool,
) -> Result<PlainResponse, SendError> {
    let mut request = Vec::with_capacity(512);
    wire::push_request_line(
        &mut request,
        method,
        &backend.addr.url_path,
        target.as_bytes(),
    );
    if forwarding.host.is_none() {
        // A request without a host: name the backend, as HTTP/1.1 requires.
        wire::push_field(&mut request, b"host", backend.authority.as_str().as_bytes());
    }
    headers::push_upstream_fields(&mut request, || headers::map_fields(headers), forwarding);
    request.extend_from_slice(b"\r\n");
    let mut buffer = Vec::new();
    let head_request = method == Method::HEAD;
    let (upstream, head, response) = h1::backend::exchange(
        backend,
        &request,
        &mut buffer,
        head_request,
        pool,
        wire::response_parts,
    )
    .await?;
    Ok(PlainResponse {
        response: response.map_err(ExchangeError::from)?,
        upstream,
        head,
        buffer,
    })
}

/// A failed [`send`]: why, and the request itself when it never reached hyper's connection (a
/// failed connect or handshake, or an idle connection found closed with no fresh one to take
/// it), so that another attempt can send it, body and all.
pub struct SendFailure {
    pub error: SendError,
    pub unsent: Option<Request<RequestBody>>,
}

/// Sends `request` (origin-form URI, `Host` set) to `backend` on an idle connection or a new
/// one, and returns the response head with the connection it came on.
pub async fn send(
    backend: &Backend,
    mut request: Request<RequestBody>,
    pool: &Pool,
) -> Result<(Response<Incoming>, Lease), SendFailure> {
    loop {
        let (mut sender, reused) = match backend.connections.take() {
            Some(sender) => (sender, true),
            // Boxed: connecting and the handshake make a large future that only a new
            // connection needs; inline, every request's future would carry (and move) it.
            None => match Box::pin(connect(backend.addr.addr, pool)).await {
                Ok(sender) => (sender, false),
                Err(error) => {
                    return Err(SendFailure {
                        error,
                        unsent: Some(request),
                    })
                }
            },
        };
        match sender.try_send_request(request).await {
            Ok(response) => return Ok((response, Lease { sender })),
            Err(mut error) => match error.take_message() {
                // An idle connection the backend closed just before the request went out: the
                // request was not sent, so it goes on another connection (a fresh one at the
                // latest, which does not loop).
                Some(unsent) if reused => request = unsent,
                unsent => {
                    return Err(SendFailure {
                        error: SendError::Exchange(error.into_error()),
                        unsent,
                    })
                }
            },
        }
    }
}

async fn connect(addr: SocketAddr, pool: &Pool) -> Result<SendRequest<RequestBody>, SendError> {
    let stream = connect_upstream(addr, pool)
        .await
        .map_err(|source| SendError::Connect { addr, source })?;
    let (sender, connection) = http1::Builder::new()
        // Flat writes, as on the client side (see `proxy::serve`).
        .writev(false)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(SendError::Exchange)?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%addr, %error, "backend connection ended with error");
        }
    });
    Ok(sender)
}

/// A new connection to `addr`, a backend of `pool`: TCP with Nagle off, then the TLS handshake
/// when the pool has `backend_tls`, all within its `connect_timeout` (which shows as
/// [`io::ErrorKind::TimedOut`]). A certificate the pool does not trust is a failed connect,
/// whose message says why.
pub(super) async fn connect_upstream(addr: SocketAddr, pool: &Pool) -> io::Result<Upstream> {
    let timeout = pool.connect_timeout;
    let connect = async {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        match &pool.backend_tls {
            None => Ok(Upstream::Plain(stream)),
            Some(tls) => Ok(Upstream::Tls(Box::new(
                tls.handshake(stream, addr.ip()).await?,
            ))),
        }
    };
    match tokio::time::timeout(timeout, connect).await {
        Ok(connected) => connected,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no connection within {timeout:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BackendAddr;
    use http_body_util::BodyExt;

    /// A cleartext pool to connect with (its backends are the test's own).
    fn pool() -> Pool {
        Pool {
            pattern: Arc::from("/"),
            pool_type: crate::config::PoolType::P2c,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            retries: 0,
            backend_tls: None,
            backends: Box::new([]),
        }
    }

    async fn sample_backend() -> Arc<Backend> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: BackendAddr = listener.local_addr().unwrap().to_string().parse().unwrap();
        tokio::spawn(sample_web::serve(listener, "t".into()));
        Arc::new(Backend::new(addr, true))
    }

    /// One exchange through `send`, the body read to its end, the connection released.
    async fn exchange(backend: &Arc<Backend>) -> String {
        let mut request = Request::new(RequestBody::empty());
        *request.uri_mut() = "/".parse().unwrap();
        request
            .headers_mut()
            .insert(http::header::HOST, "t".parse().unwrap());
        let Ok((response, lease)) = send(backend, request, &pool()).await else {
            panic!("the exchange failed");
        };
        let body = response.into_body().collect().await.unwrap().to_bytes();
        lease.release(backend);
        String::from_utf8_lossy(&body).into_owned()
    }

    #[tokio::test]
    async fn a_released_connection_is_reused_and_close_all_empties_the_set() {
        let backend = sample_backend().await;
        assert!(exchange(&backend).await.contains("node t"));
        // The connection task finishes the exchange on its own schedule; allow it a moment.
        for _ in 0..100 {
            if backend.connections.len() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(backend.connections.len(), 1);
        let first = backend.connections.take().map(|s| s.is_ready());
        assert_eq!(first, Some(true));
        assert!(backend.connections.is_empty());

        assert!(exchange(&backend).await.contains("node t"));
        for _ in 0..100 {
            if backend.connections.len() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        backend.connections.close_all();
        assert!(backend.connections.is_empty());
    }

    /// A plain socket to `backend`, as `h1::backend` would hand back after an exchange.
    async fn plain_socket(backend: &Backend) -> Upstream {
        Upstream::Plain(TcpStream::connect(backend.addr.addr).await.unwrap())
    }

    #[tokio::test]
    async fn close_expired_closes_plain_sockets_idle_past_the_timeout() {
        // Only plain sockets, no hyper connection ever made: both kinds are swept.
        let backend = sample_backend().await;
        backend.connections.put_stream(plain_socket(&backend).await);
        backend.connections.close_expired();
        assert_eq!(backend.connections.len(), 1, "not idle for 90 s yet");
        backend.connections.set_idle_timeout(Duration::ZERO);
        backend.connections.close_expired();
        assert!(backend.connections.is_empty());
        assert!(backend.connections.take_stream().is_none());
    }

    #[tokio::test]
    async fn a_retired_set_closes_what_it_has_and_what_comes_back_later() {
        let backend = sample_backend().await;
        backend.connections.put_stream(plain_socket(&backend).await);
        backend.connections.retire();
        assert!(backend.connections.is_empty());
        // A request that was in flight hands its connection back: it is closed, not kept.
        backend.connections.put_stream(plain_socket(&backend).await);
        assert!(exchange(&backend).await.contains("node t"));
        assert!(backend.connections.is_empty());
    }

    #[tokio::test]
    async fn a_refused_connect_is_a_connect_error_that_gives_the_request_back() {
        // Bind then drop: nothing listens on the port any more.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: BackendAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let backend = Arc::new(Backend::new(addr, true));
        let mut request = Request::new(RequestBody::empty());
        *request.uri_mut() = "/body-stays".parse().unwrap();
        let Err(failure) = send(&backend, request, &pool()).await else {
            panic!("a refused connect answered");
        };
        assert!(
            matches!(failure.error, SendError::Connect { .. }),
            "{:?}",
            failure.error
        );
        let unsent = failure.unsent.expect("the unsent request comes back");
        assert_eq!(unsent.uri().path(), "/body-stays");
    }
}
