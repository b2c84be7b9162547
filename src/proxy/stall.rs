//! stall: owns the timeouts after a response head — a backend silent while lb waits for body
//! bytes (`read_timeout`), a client not taking bytes (`send_timeout`), an upgrade tunnel with no
//! traffic either way (`tunnel_idle_timeout`) — and their count. It never decides what a timeout
//! does to an exchange; the caller closes both sides.
//!
//! Each wait is bounded by its own `tokio::time::timeout`: a read or write that is ready at once
//! (most of them) never registers a timer, and one that waits registers one entry for as long as
//! it waits, as nginx's `proxy_read_timeout` and `send_timeout` time each read and write.
//!
//! On HTTP/2 the engine (`proxy::h2`) pipes each response body itself and times its two waits
//! with [`within_once`]: the backend's next frame, and room in the client's window.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::MissedTickBehavior;

use crate::metrics::Global;

/// The limits after a response head, from `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct AfterHead {
    /// A backend may be silent this long while its body is awaited (`read_timeout`).
    pub read: Duration,
    /// A client may take no response byte for this long (`send_timeout`).
    pub send: Duration,
    /// An upgrade tunnel may carry no byte either way for this long (`tunnel_idle_timeout`).
    pub tunnel_idle: Duration,
}

impl Default for AfterHead {
    fn default() -> AfterHead {
        let server = crate::config::Server::default();
        AfterHead {
            read: server.read_timeout,
            send: server.send_timeout,
            tunnel_idle: server.tunnel_idle_timeout,
        }
    }
}

/// Which limit ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    Read,
    Send,
    TunnelIdle,
}

impl Timeout {
    /// The `[server]` key, as the access line and the process log name it.
    pub fn key(self) -> &'static str {
        match self {
            Timeout::Read => "read_timeout",
            Timeout::Send => "send_timeout",
            Timeout::TunnelIdle => "tunnel_idle_timeout",
        }
    }

    /// Counts it in `lb_timeouts_total{kind}`.
    pub fn count(self, metrics: &Global) {
        let counter = match self {
            Timeout::Read => &metrics.timeouts_read,
            Timeout::Send => &metrics.timeouts_send,
            Timeout::TunnelIdle => &metrics.timeouts_tunnel_idle,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Why a body could not go on.
#[derive(Debug)]
pub enum Cut {
    /// The peer closed or failed.
    Io,
    TimedOut(Timeout),
}

/// Runs `io` within `limit`, naming `kind` when it runs out.
async fn within<T>(
    limit: Duration,
    kind: Timeout,
    io: impl Future<Output = io::Result<T>>,
) -> Result<T, Cut> {
    match tokio::time::timeout(limit, io).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(_)) => Err(Cut::Io),
        Err(_elapsed) => Err(Cut::TimedOut(kind)),
    }
}

impl AfterHead {
    /// Reads the backend's next body bytes into `buf`; 0 at its close.
    pub async fn read<R: AsyncRead + Unpin>(
        &self,
        upstream: &mut R,
        buf: &mut Vec<u8>,
    ) -> Result<usize, Cut> {
        within(self.read, Timeout::Read, upstream.read_buf(buf)).await
    }

    /// Writes `bytes` to the client.
    pub async fn send<W: AsyncWrite + Unpin>(
        &self,
        client: &mut W,
        bytes: &[u8],
    ) -> Result<(), Cut> {
        within(self.send, Timeout::Send, client.write_all(bytes)).await
    }
}

/// Copies bytes both ways between `client` and `backend` until either side closes, or until
/// neither has sent a byte for `tunnel_idle`: then it returns, and dropping the two closes them.
/// Idleness is sampled on one coarse tick (a quarter of the limit), as `conn::IdleClock` does,
/// so a read costs one relaxed store and the tunnel one timer.
pub async fn tunnel<C, B>(client: C, backend: B, after_head: &AfterHead) -> Result<(u64, u64), Cut>
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let touched = AtomicBool::new(false);
    let mut client = Touching {
        io: client,
        touched: &touched,
    };
    let mut backend = Touching {
        io: backend,
        touched: &touched,
    };
    let copy = tokio::io::copy_bidirectional(&mut client, &mut backend);
    tokio::pin!(copy);
    let limit = after_head.tunnel_idle;
    let step = (limit / 4).max(Duration::from_millis(10));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + step, step);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut idle_for = Duration::ZERO;
    loop {
        tokio::select! {
            copied = &mut copy => return copied.map_err(|_| Cut::Io),
            _ = tick.tick() => {
                if touched.swap(false, Ordering::Relaxed) {
                    idle_for = Duration::ZERO;
                } else {
                    idle_for += step;
                    if idle_for >= limit {
                        return Err(Cut::TimedOut(Timeout::TunnelIdle));
                    }
                }
            }
        }
    }
}

/// An I/O that marks `touched` whenever bytes are read from it.
struct Touching<'a, T> {
    io: T,
    touched: &'a AtomicBool,
}

impl<T: AsyncRead + Unpin> AsyncRead for Touching<'_, T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.touched.store(true, Ordering::Relaxed);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Touching<'_, T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Runs `wait` to its end, allowing it `limit` once it has to wait: a wait that is over at its
/// first poll (most are) creates no timer at all. `None`: the limit ran out (the caller counts
/// and acts). The HTTP/2 engine (`proxy::h2`) times each wait of a response body with it: on
/// the backend's next frame (`read_timeout`), on the client's window (`send_timeout`).
pub async fn within_once<F: Future>(limit: Duration, wait: F) -> Option<F::Output> {
    let mut wait = std::pin::pin!(wait);
    let first = std::future::poll_fn(|cx| {
        Poll::Ready(match wait.as_mut().poll(cx) {
            Poll::Ready(output) => Some(output),
            Poll::Pending => None,
        })
    })
    .await;
    match first {
        Some(output) => Some(output),
        None => tokio::time::timeout(limit, wait).await.ok(),
    }
}
