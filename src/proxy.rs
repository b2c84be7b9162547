//! proxy: owns the data plane — accepting client connections (HTTP/1.x and h2c), forwarding each
//! request to a backend picked by `balance`, and draining on shutdown. It reads the topology
//! snapshot and backend atomics only; it never parses config or runs health checks.
//!
//! A connection's first bytes choose its engine, once: the HTTP/2 preface (h2c prior knowledge)
//! goes to hyper's HTTP/2 server, anything else to lb's own HTTP/1.x engine (`proxy::h1`) for the
//! connection's whole life.

mod body;
mod conn;
#[doc(hidden)]
pub mod fuzzing;
mod h1;
mod handler;
mod headers;
mod stall;
mod upstream;

pub use body::{RequestBody, ResponseBody};
pub use handler::Proxy;
pub use stall::AfterHead;
pub use upstream::IdleConnections;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use conn::{ClientIo, IdleClock, Tracked};
use stall::ReadTimed;

/// Limits and timeouts of the client side.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// A client must send its whole request head within this (and a body read whole, with it),
    /// counted from its first byte; before the first byte of a connection, the idle clock.
    pub header_timeout: Duration,
    /// A client connection with no request in flight and no byte received for this long is
    /// closed.
    pub idle_timeout: Duration,
    /// After shutdown begins, open connections may finish for this long; then they are closed.
    pub drain_timeout: Duration,
    /// Client connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
}

/// Largest request head accepted; larger ones get 431.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Accepts and serves until `shutdown` resolves, then lets open connections finish their
/// in-flight requests for at most `drain_timeout`; connections still open at that deadline are
/// dropped (closed), not waited on.
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    settings: ServerSettings,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32);
    let builder = Arc::new(builder);
    let settings = Arc::new(settings);
    // Connection tasks, so the drain can wait for them; `drain` asks each to finish gracefully.
    let connections = TaskTracker::new();
    let drain = CancellationToken::new();
    // Cancelled at the drain deadline: each connection task then drops its connection.
    let cut = CancellationToken::new();
    // Bounds open client connections: a permit is taken before accept, as mini-redis does, and
    // travels with the socket's task (through an upgrade tunnel too).
    let permits = Arc::new(Semaphore::new(settings.max_connections));
    tokio::pin!(shutdown);

    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let proxy = Arc::clone(&proxy);
        let builder = Arc::clone(&builder);
        let settings = Arc::clone(&settings);
        let drain = drain.clone();
        let cut = cut.clone();
        connections.spawn(async move {
            let connection = async {
                let mut stream = stream;
                match opens_with_h2_preface(&stream, &settings, &drain).await {
                    Some(false) => {
                        h1::serve(&mut stream, client, &proxy, &settings, &drain).await;
                        drop(permit);
                    }
                    Some(true) => {
                        let io = ClientIo::new(stream, permit);
                        serve_h2(io, client, proxy, &builder, &settings, drain).await;
                    }
                    None => {}
                }
            };
            tokio::select! {
                () = connection => {}
                () = cut.cancelled() => {}
            }
        });
    }
    drop(listener);
    tracing::info!(open = connections.len(), "draining client connections");
    drain.cancel();
    connections.close();
    // Upgrade tunnels run in their connection's task, so they are waited for here too.
    let drained = connections.wait();
    if tokio::time::timeout(settings.drain_timeout, drained)
        .await
        .is_err()
    {
        tracing::warn!(timeout = ?settings.drain_timeout, "drain timeout passed; closing remaining connections");
        // Dropping each connection's future closes its sockets, an upgrade tunnel's included.
        cut.cancel();
    }
}

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether a connection opens with the HTTP/2 preface: looked at with `peek`, so the bytes stay
/// in the socket for the engine that serves it. `None`: the connection closed, went silent past
/// the header timeout, or lb is draining.
///
/// NOTE: a preface split across segments (rare: clients write it whole) is peeked again every
/// few milliseconds until it is whole, since a socket with unread bytes is always readable.
async fn opens_with_h2_preface(
    stream: &TcpStream,
    settings: &ServerSettings,
    drain: &CancellationToken,
) -> Option<bool> {
    let deadline = tokio::time::Instant::now() + settings.header_timeout;
    let mut first = [0u8; H2_PREFACE.len()];
    loop {
        let peeked = tokio::select! {
            peeked = tokio::time::timeout_at(deadline, stream.peek(&mut first)) => peeked,
            () = drain.cancelled() => return None,
        };
        let n = match peeked {
            Ok(Ok(n)) if n > 0 => n,
            _ => return None,
        };
        if first[..n] != H2_PREFACE[..n] {
            return Some(false);
        }
        if n == H2_PREFACE.len() {
            return Some(true);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
    }
}

/// Serves an HTTP/2 connection with hyper until it ends or `drain` asks it to finish; closes it
/// once idle past the settings' limits.
async fn serve_h2(
    io: ClientIo,
    client: SocketAddr,
    proxy: Arc<Proxy>,
    builder: &http2::Builder<TokioExecutor>,
    settings: &ServerSettings,
    drain: CancellationToken,
) {
    let activity = Arc::clone(io.activity());
    let requests = Arc::clone(&activity);
    let service = service_fn(move |request| {
        let handler = Arc::clone(&proxy);
        let active = requests.start();
        async move {
            let response = handler.handle(request, client).await;
            let response = response.map(|body| ReadTimed::new(body, handler));
            Ok::<_, Infallible>(response.map(|body| Tracked::new(body, active)))
        }
    });
    let connection = builder.serve_connection(TokioIo::new(io), service);
    let mut clock = IdleClock::new(settings.header_timeout, settings.idle_timeout);
    tokio::pin!(connection);
    let mut ended = None;
    while ended.is_none() {
        tokio::select! {
            result = connection.as_mut() => ended = Some(result),
            () = drain.cancelled() => break,
            () = tokio::time::sleep(clock.step()) => {
                if clock.expired(&activity) {
                    tracing::debug!(%client, "client connection idle; closing");
                    break;
                }
            }
        }
    }
    let result = match ended {
        Some(result) => result,
        None => {
            // Finish what is in flight, then close (HTTP/2: GOAWAY).
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%client, error = %error, "client connection ended with error");
    }
}
