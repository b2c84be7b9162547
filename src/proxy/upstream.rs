//! lb's HTTP/1.1 client, the one way both engines' requests and the health probes speak to a
//! backend: connect (over TLS for a pool with `backend_tls`: [`Upstream`]), send a head and
//! body, read the response head and body (`client`), and keep the idle connections for the
//! next request. It knows nothing of the client side. Each
//! [`Backend`] owns its [`IdleConnections`](crate::idle_connections::IdleConnections), so they
//! live exactly as long as
//! the backend does across reloads and close when it leaves the file.
//!
//! Why not hyper's client: hyper-util's pooled `Client` looks every request up by scheme and
//! authority in a mutex-guarded map and moves several large futures around, and a second
//! client would mean a second idle set, error type and body per backend. Here the request
//! already knows its backend, so a checkout is one lock-free pop, and both engines' requests
//! (and their retries) speak to a backend the same way.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;

pub(super) mod client;

pub use self::client::ExchangeError;
use self::client::PlainBody;
pub use crate::idle_connections::Upstream;
use crate::tls::BackendConnector;

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

/// Why a health probe got no answer to judge.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// No connection, or no response head that lb would relay.
    #[error(transparent)]
    Exchange(#[from] ExchangeError),
    /// The body broke off or broke its framing.
    #[error("reading the body failed")]
    Body(#[source] client::BodyError),
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
    let mut upstream = client::connect(addr, tls)
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
    let read = client::read_final_head(&mut upstream, &mut buffer, false, |head| head.status);
    let (head, status) = read.await?;
    let mut body = PlainBody::new(upstream, &head, &buffer, None);
    let mut collected = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(ProbeError::Body)?;
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

    use tokio::net::TcpStream;

    use super::*;
    use crate::config::BackendAddr;
    use crate::topology::{Backend, Pool};

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
            n_stable: 0,
            canary: None,
            rate_limit: None,
        }
    }

    async fn sample_backend() -> Arc<Backend> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: BackendAddr = listener.local_addr().unwrap().to_string().parse().unwrap();
        tokio::spawn(sample_web::serve(listener, "t".into()));
        Arc::new(Backend::new(addr, true))
    }

    /// One bodiless exchange through the client, its body read to its end.
    async fn get(backend: &Arc<Backend>) -> u16 {
        let request = b"GET / HTTP/1.1\r\nhost: t\r\n\r\n";
        let mut upstream = client::send_request(backend, request, &[], &pool())
            .await
            .expect("the request goes");
        let mut buffer = Vec::new();
        let read = client::read_final_head(&mut upstream, &mut buffer, false, |h| h.status);
        let (head, status) = read.await.expect("a response head");
        let in_flight = Some(backend.start_request());
        let mut body = PlainBody::new(upstream, &head, &buffer, in_flight);
        while let Some(frame) = body.frame().await {
            frame.expect("the body");
        }
        status
    }

    /// A plain socket to `backend`, as `upstream::client` would hand back after an exchange.
    async fn plain_socket(backend: &Backend) -> Upstream {
        Upstream::plain(TcpStream::connect(backend.addr.addr).await.unwrap())
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
}
