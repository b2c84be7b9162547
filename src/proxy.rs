//! proxy: owns the data plane — accepting client connections (HTTP/1.1 and h2c), forwarding each
//! request to a backend picked by `balance`, and draining on shutdown. It reads the topology
//! snapshot and backend atomics only; it never parses config or runs health checks.

mod body;
mod handler;
mod headers;
mod upstream;

pub use body::{RequestBody, ResponseBody};
pub use handler::Proxy;
pub use upstream::Upstream;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Limits and timeouts of the client side.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub header_timeout: Duration,
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
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_timeout)
        .max_buf_size(MAX_HEADER_BYTES);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    // Bounds open client connections: a permit is taken before accept, as mini-redis does.
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
        let handler = Arc::clone(&proxy);
        let service = service_fn(move |request| {
            let handler = Arc::clone(&handler);
            async move { Ok::<_, Infallible>(handler.handle(request, client).await) }
        });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%client, error = %error, "client connection ended with error");
            }
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!(
        open = graceful.count(),
        tunnels = proxy.tunnels().len(),
        "draining client connections"
    );
    let tunnels = proxy.tunnels();
    tunnels.close();
    let drained = async {
        graceful.shutdown().await;
        tunnels.wait().await;
    };
    if tokio::time::timeout(settings.drain_timeout, drained)
        .await
        .is_err()
    {
        tracing::warn!(timeout = ?settings.drain_timeout, "drain timeout passed; closing remaining connections");
    }
}
