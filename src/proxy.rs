//! proxy: owns the data plane — accepting client connections (HTTP/1.1 and h2c), forwarding each
//! request to a backend picked by `balance`, and draining on shutdown. It reads the topology
//! snapshot and backend atomics only; it never parses config or runs health checks.

mod body;
mod conn;
mod framing;
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

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use conn::{ClientIo, IdleClock, Tracked, WatchdogTimer};
use stall::ReadTimed;

/// Limits and timeouts of the client side.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// A client must send its whole request head within this (HTTP/1.1: hyper's header timer;
    /// before the first byte of any connection: the idle clock).
    pub header_timeout: Duration,
    /// A client connection with no request in flight and no byte received for this long is
    /// closed.
    pub idle_timeout: Duration,
    pub drain_timeout: Duration,
    pub max_connections: usize,
}

/// Largest request head accepted; larger ones get 431 from hyper.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Accepts and serves until `shutdown` resolves, then lets open connections finish their
/// in-flight requests for at most `drain_timeout`.
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    settings: ServerSettings,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        // One flat write per response: with small bodies, queueing the body as its own iovec
        // cost ~1.5% more instructions per request (callgrind), and a 1 MiB body costs no more
        // CPU per byte flat than queued (/tmp bench against nginx serving a file, 3 rounds).
        .writev(false)
        .timer(WatchdogTimer)
        .header_read_timeout(settings.header_timeout)
        .max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32);
    let builder = Arc::new(builder);
    let settings = Arc::new(settings);
    // Connection tasks, so the drain can wait for them; `drain` asks each to finish gracefully.
    let connections = TaskTracker::new();
    let drain = CancellationToken::new();
    // Bounds open client connections: a permit is taken before accept, as mini-redis does, and
    // travels with the socket (into an upgrade tunnel too).
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
        connections.spawn(async move {
            let mut stream = stream;
            let served = h1::serve(&mut stream, client, &proxy, &settings, &drain).await;
            if let Some(read) = served {
                let io = ClientIo::new(stream, read, permit);
                serve_with_hyper(io, client, proxy, &builder, &settings, drain).await;
            }
        });
    }
    drop(listener);
    let tunnels = proxy.tunnels();
    tracing::info!(
        open = connections.len(),
        tunnels = tunnels.len(),
        "draining client connections"
    );
    drain.cancel();
    connections.close();
    tunnels.close();
    let drained = async {
        connections.wait().await;
        tunnels.wait().await;
    };
    if tokio::time::timeout(settings.drain_timeout, drained)
        .await
        .is_err()
    {
        tracing::warn!(timeout = ?settings.drain_timeout, "drain timeout passed; closing remaining connections");
    }
}

/// Serves a connection `proxy::h1` handed over, with hyper, until it ends or `drain` asks it to
/// finish; closes it once idle past the settings' limits.
async fn serve_with_hyper(
    io: ClientIo,
    client: SocketAddr,
    proxy: Arc<Proxy>,
    builder: &auto::Builder<TokioExecutor>,
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
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
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
