//! lb's HTTP/1.1 client for HTTP/2 requests, on the same plain sockets as `proxy::h1`'s
//! (`h1::backend`): connect (over TLS for a pool with `backend_tls`: [`Upstream`]), send the
//! head and body, read the response head, and keep the idle connections for the next request. Each
//! [`Backend`] owns its [`IdleConnections`](crate::idle_connections::IdleConnections), so they
//! live exactly as long as
//! the backend does across reloads and close when it leaves the file.
//!
//! Why not hyper's client: hyper-util's pooled `Client` looks every request up by scheme and
//! authority in a mutex-guarded map and moves several large futures around, and a second
//! client would mean a second idle set, error type and body per backend. Here the request
//! already knows its backend, so a checkout is one lock-free pop, and both engines' requests
//! (and their retries) speak to a backend the same way.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::body::{push_last_chunk, RequestBody, Streamed};
use super::h1;
pub use super::h1::backend::ExchangeError;
use super::h1::backend::PlainBody;
use super::h1::chunked;
use super::h1::wire::{self, ResponseHead};
pub use crate::idle_connections::Upstream;
use crate::tls::BackendConnector;
use crate::topology::{Backend, Pool};

/// What [`exchange`] brought back: the response head for the HTTP/2 client, and the socket and
/// bytes its body continues from (see [`h1::backend::PlainBody::new`]).
pub struct PlainResponse {
    pub response: Response<()>,
    pub upstream: Upstream,
    pub head: ResponseHead,
    /// The response head and whatever body bytes were read behind it.
    pub buffer: Vec<u8>,
}

/// Sends an HTTP/2 client's request to `backend`: `request` is its head, as the backend gets
/// it (framing field included), and `body` goes behind it (in the same write when whole or
/// begun; a larger body's rest as the client sends it, until the backend answers). Returns the
/// final response head (1xx heads dropped), parsed into `http` parts.
pub async fn exchange(
    backend: &Backend,
    request: &[u8],
    body: &mut RequestBody,
    head_request: bool,
    pool: &Pool,
) -> Result<PlainResponse, ExchangeError> {
    let mut upstream = h1::backend::send_request(backend, request, body.first(), pool).await?;
    let mut whole = true;
    if let RequestBody::Streamed(rest) = body {
        rest.started = true;
        whole = pump(&mut upstream, rest, pool.request_timeout).await?;
    }
    let mut buffer = spare::take();
    let read = h1::backend::read_final_head(
        &mut upstream,
        &mut buffer,
        head_request,
        wire::response_parts,
    );
    let (mut head, response) = match read.await {
        Ok(read) => read,
        Err(error) => {
            spare::give(buffer);
            return Err(error);
        }
    };
    // An answer before the request's end leaves the connection mid-request: not reusable.
    head.reusable &= whole;
    Ok(PlainResponse {
        response: response?,
        upstream,
        head,
        buffer,
    })
}

/// Sends the rest of a streamed body (`rest.recv`) to the backend, framed as its head said.
/// `Ok(false)`: the backend answered (or its socket failed) before the end, and the rest is not
/// sent; reading its answer tells what it made of the request. `backend_idle`: how long the
/// backend may take no byte of it.
async fn pump(
    upstream: &mut Upstream,
    rest: &mut Streamed,
    backend_idle: Duration,
) -> Result<bool, ExchangeError> {
    let mut out = Vec::new();
    loop {
        let next = tokio::select! {
            biased;
            () = upstream.answered() => return Ok(false),
            next = rest.recv.data() => next,
        };
        let chunk = match next {
            Some(Ok(chunk)) => chunk,
            // RST_STREAM(NO_ERROR): the client asks to end early (RFC 9113 §8.1).
            Some(Err(error)) if error.reason() == Some(h2::Reason::NO_ERROR) => break,
            Some(Err(error)) => return Err(ExchangeError::ClientBody(error)),
            None => break,
        };
        let taken = chunk.len();
        let sent = if rest.chunked {
            out.clear();
            chunked::push_chunk(&mut out, &chunk);
            write_within(upstream, &out, backend_idle).await?
        } else {
            write_within(upstream, &chunk, backend_idle).await?
        };
        if !sent {
            return Ok(false);
        }
        // The client may send as much again once the backend took it.
        let _ = rest.recv.flow_control().release_capacity(taken);
    }
    let trailers = tokio::select! {
        biased;
        () = upstream.answered() => return Ok(false),
        trailers = rest.recv.trailers() => trailers.map_err(ExchangeError::ClientBody)?,
    };
    if rest.chunked {
        out.clear();
        push_last_chunk(&mut out, trailers.as_ref());
        return write_within(upstream, &out, backend_idle).await;
    }
    Ok(true)
}

/// Writes `buf` whole; `Ok(false)` when the backend answered or failed first.
async fn write_within(
    upstream: &mut Upstream,
    mut buf: &[u8],
    idle: Duration,
) -> Result<bool, ExchangeError> {
    while !buf.is_empty() {
        match tokio::time::timeout(idle, upstream.write_some(buf)).await {
            Ok(Ok(Some(n))) => buf = &buf[n..],
            Ok(Ok(None) | Err(_)) => return Ok(false),
            Err(_) => return Err(ExchangeError::Io(io::ErrorKind::TimedOut.into())),
        }
    }
    Ok(true)
}

/// The response buffers of [`exchange`], kept per thread for the next request:
/// under load it takes warm ones instead of allocating, where 64 requests in flight each
/// allocating and freeing its own made the allocator refill and flush its cache (callgrind).
pub mod spare {
    use std::cell::RefCell;

    /// Buffers kept per thread; more are freed.
    const MAX_KEPT: usize = 128;
    /// A buffer that grew past this (a large response head) is freed rather than kept.
    const MAX_CAPACITY: usize = 16 * 1024;

    thread_local! {
        static KEPT: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    }

    /// An empty buffer: a kept one if this thread has one.
    pub fn take() -> Vec<u8> {
        KEPT.try_with(|kept| kept.try_borrow_mut().ok()?.pop())
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    /// Keeps `buffer` (emptied) for this thread's next [`take`] while there is room.
    pub fn give(mut buffer: Vec<u8>) {
        if buffer.capacity() == 0 || buffer.capacity() > MAX_CAPACITY {
            return;
        }
        buffer.clear();
        let _ = KEPT.try_with(|kept| {
            if let Ok(mut kept) = kept.try_borrow_mut() {
                if kept.len() < MAX_KEPT {
                    kept.push(buffer);
                }
            }
        });
    }
}

/// A new connection to `addr`, a backend of `pool`: TCP with Nagle off, then the TLS handshake
/// when the pool has `backend_tls`, all within its `connect_timeout` (which shows as
/// [`io::ErrorKind::TimedOut`]). A certificate the pool does not trust is a failed connect,
/// whose message says why.
pub(super) async fn connect_upstream(addr: SocketAddr, pool: &Pool) -> io::Result<Upstream> {
    let timeout = pool.connect_timeout;
    let connect = connect(addr, pool.backend_tls.as_deref());
    match tokio::time::timeout(timeout, connect).await {
        Ok(connected) => connected,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no connection within {timeout:?}"),
        )),
    }
}

/// TCP with Nagle off, then the TLS handshake through `tls` when there is one.
async fn connect(addr: SocketAddr, tls: Option<&BackendConnector>) -> io::Result<Upstream> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    match tls {
        None => Ok(Upstream::Plain(stream)),
        Some(tls) => Ok(Upstream::Tls(Box::new(
            tls.handshake(stream, addr.ip()).await?,
        ))),
    }
}

/// Why a health probe got no answer to judge.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// No connection, or no response head that lb would relay.
    #[error(transparent)]
    Exchange(#[from] ExchangeError),
    /// The body broke off or broke its framing.
    #[error("reading the body failed")]
    Body(#[source] super::body::BodyError),
    /// A health body is short; this many bytes is a misconfiguration, not health.
    #[error("body over {0} bytes")]
    BodyTooLarge(usize),
}

/// One health probe: `GET path` to `addr` on a new connection (over TLS through `tls`, the
/// pool's `backend_tls`), with this same client and handshake as a request, so a backend is
/// judged by how it answers lb's requests. Returns the status and a body of at most `limit`
/// bytes. The caller bounds the whole probe, connect included, by its `check_timeout`.
pub async fn probe(
    addr: SocketAddr,
    tls: Option<&BackendConnector>,
    path: &str,
    limit: usize,
) -> Result<(u16, Bytes), ProbeError> {
    let mut upstream = connect(addr, tls)
        .await
        .map_err(|source| ExchangeError::Connect { addr, source })?;
    let mut request = Vec::with_capacity(64 + path.len());
    request.extend_from_slice(b"GET ");
    request.extend_from_slice(path.as_bytes());
    request.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    request.extend_from_slice(addr.to_string().as_bytes());
    request.extend_from_slice(b"\r\nconnection: close\r\n\r\n");
    upstream
        .write_all(&request)
        .await
        .map_err(ExchangeError::Unsent)?;
    let mut buffer = Vec::new();
    let read = h1::backend::read_final_head(&mut upstream, &mut buffer, false, |head| head.status);
    let (head, status) = read.await?;
    let mut body = PlainBody::new(upstream, &head, &buffer, None);
    let mut collected = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ProbeError::Body(e.into()))?;
        if let Ok(data) = frame.into_data() {
            if collected.len() + data.len() > limit {
                return Err(ProbeError::BodyTooLarge(limit));
            }
            collected.extend_from_slice(&data);
        }
    }
    Ok((status, Bytes::from(collected)))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::config::BackendAddr;

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

    /// One bodiless exchange through [`exchange`]; the socket goes back as a whole body would.
    async fn get(backend: &Arc<Backend>) -> u16 {
        let request = b"GET / HTTP/1.1\r\nhost: t\r\n\r\n";
        let Ok(answer) = exchange(backend, request, &mut RequestBody::None, false, &pool()).await
        else {
            panic!("the exchange failed");
        };
        answer.response.status().as_u16()
    }

    /// A plain socket to `backend`, as `h1::backend` would hand back after an exchange.
    async fn plain_socket(backend: &Backend) -> Upstream {
        Upstream::Plain(TcpStream::connect(backend.addr.addr).await.unwrap())
    }

    #[tokio::test]
    async fn close_expired_closes_plain_sockets_idle_past_the_timeout() {
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
        assert_eq!(get(&backend).await, 200);
        assert!(backend.connections.is_empty());
    }

    #[tokio::test]
    async fn a_refused_connect_is_a_connect_error() {
        // Bind then drop: nothing listens on the port any more.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: BackendAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let backend = Arc::new(Backend::new(addr, true));
        let mut body = RequestBody::Whole {
            framed: b"kept".to_vec(),
            chunked: false,
        };
        let request = b"POST / HTTP/1.1\r\nhost: t\r\ncontent-length: 4\r\n\r\n";
        let Err(error) = exchange(&backend, request, &mut body, false, &pool()).await else {
            panic!("a refused connect answered");
        };
        assert!(matches!(error, ExchangeError::Connect { .. }), "{error:?}");
        assert!(body.replayable(), "a body that never went can go again");
    }
}
