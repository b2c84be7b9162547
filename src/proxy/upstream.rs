//! Keep-alive HTTP/1.1 connections to one backend: connect (over TLS for a pool with
//! `backend_tls`: [`Upstream`]), send, and keep the idle ones for the next request. Each
//! [`Backend`] owns its [`IdleConnections`](crate::idle_connections::IdleConnections), so they
//! live exactly as long as
//! the backend does across reloads and close when it leaves the file.
//!
//! Why not hyper-util's pooled `Client`: it looks every request up by scheme and authority in a
//! mutex-guarded map, re-parses the URI and moves several large futures around; on the proxy's
//! hot path that was ~8k instructions a request (callgrind under wrk), more than hyper's own
//! parsing and writing. Here the request already knows its backend, so a checkout is one
//! lock-free pop.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderMap, Method, Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::body::RequestBody;
use super::h1;
use super::h1::backend::ExchangeError;
use super::h1::wire::{self, ResponseHead};
use super::headers::{self, Forwarding};
pub use crate::idle_connections::Upstream;
use crate::topology::{Backend, Pool};

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
    let mut request = spare::take();
    request.reserve(512);
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
    let mut buffer = spare::take();
    let head_request = method == Method::HEAD;
    let exchanged = h1::backend::exchange(
        backend,
        &request,
        &mut buffer,
        head_request,
        pool,
        wire::response_parts,
    )
    .await;
    spare::give(request);
    let (upstream, head, response) = match exchanged {
        Ok(exchanged) => exchanged,
        Err(error) => {
            spare::give(buffer);
            return Err(error.into());
        }
    };
    Ok(PlainResponse {
        response: response.map_err(ExchangeError::from)?,
        upstream,
        head,
        buffer,
    })
}

/// The request and response buffers of [`send_plain`], kept per thread for the next request:
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
    use std::time::Duration;

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
