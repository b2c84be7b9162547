//! stall: owns the timeouts after a response head — a backend silent while lb waits for body
//! bytes (`read_timeout`), a client not taking bytes (`send_timeout`), an upgrade tunnel with no
//! traffic either way (`tunnel_idle_timeout`) — and their count. It never decides what a timeout
//! does to an exchange; the caller closes both sides.
//!
//! Each wait is bounded by its own `tokio::time::timeout`: a read or write that is ready at once
//! (most of them) never registers a timer, and one that waits registers one entry for as long as
//! it waits, as nginx's `proxy_read_timeout` and `send_timeout` time each read and write.
//!
//! On HTTP/2, hyper pipes a response body to the client in each stream's own task and stops
//! polling the body while the client's flow-control window is shut, so `send_timeout` is kept
//! around that task ([`StreamExecutor`], [`SendTimed`]): the body ([`ReadTimed`]) tells the task,
//! through a task-local [`Turn`], whether the stream waits on the backend or has handed hyper a
//! frame that the client has not yet made room for.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::{Instant, MissedTickBehavior, Sleep};

use super::body::BodyError;
use super::Proxy;

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

/// A response body hyper sends (the HTTP/2 path, and what hyper serves of HTTP/1.1), held to
/// `read_timeout`: a timer is armed when the backend's body has nothing ready and disarmed when it
/// yields, and boxed only for a body that ever waits. On expiry the body ends with an error, so
/// hyper closes the client's connection (HTTP/1.1) or resets its stream (HTTP/2), and dropping
/// the backend's body closes its connection.
pub struct ReadTimed<B> {
    body: B,
    /// The request's handle on the proxy (for the limit and the count), moved in rather than
    /// cloned: the service clones it once per request already.
    proxy: Arc<Proxy>,
    sleep: Option<Pin<Box<Sleep>>>,
    /// The sleep is armed for the current wait.
    waiting: bool,
}

tokio::task_local! {
    /// The turn of the HTTP/2 stream whose task runs (see [`SendTimed`]).
    static TURN: Turn;
}

/// Who an HTTP/2 stream waits on, written by its response body ([`ReadTimed`]) and read by its
/// task ([`SendTimed`]).
#[derive(Default)]
pub struct Turn {
    /// Frames the body has handed hyper; a new one means the client made room for the last.
    frames: Cell<u64>,
    /// The body handed hyper a frame and was not asked for the next: the client's window decides.
    on_client: Cell<bool>,
}

impl Turn {
    /// Records what the body's poll came to, when it runs in a stream's task.
    fn record(yielded: bool) {
        let _ = TURN.try_with(|turn| {
            if yielded {
                turn.frames.set(turn.frames.get() + 1);
            }
            turn.on_client.set(yielded);
        });
    }
}

/// hyper's executor for the HTTP/2 server: runs each stream's task (hyper's `H2Stream`) held to
/// `send_timeout` ([`SendTimed`]).
#[derive(Clone)]
pub struct StreamExecutor {
    proxy: Arc<Proxy>,
}

impl StreamExecutor {
    pub fn new(proxy: Arc<Proxy>) -> StreamExecutor {
        StreamExecutor { proxy }
    }
}

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, stream: F) {
        let timed = SendTimed {
            stream,
            proxy: Arc::clone(&self.proxy),
            sleep: None,
            frames: 0,
            armed: false,
        };
        tokio::spawn(TURN.scope(Turn::default(), timed));
    }
}

pin_project_lite::pin_project! {
    /// An HTTP/2 stream's task, ended when the stream has waited on the client for
    /// `send_timeout` with no new frame taken: dropping hyper's stream resets it (`RST_STREAM`,
    /// as h2 does for a stream dropped unfinished), and dropping its body closes the backend's
    /// connection. The timer is armed only while the stream waits on the client, and boxed only
    /// for a stream that ever does.
    pub struct SendTimed<F> {
        #[pin]
        stream: F,
        proxy: Arc<Proxy>,
        sleep: Option<Pin<Box<Sleep>>>,
        // `Turn::frames` when the timer was last armed.
        frames: u64,
        // The timer runs for the current wait on the client.
        armed: bool,
    }
}

impl<F: Future> Future for SendTimed<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        if this.stream.poll(cx).is_ready() {
            return Poll::Ready(());
        }
        let (frames, on_client) = TURN
            .try_with(|turn| (turn.frames.get(), turn.on_client.get()))
            .unwrap_or((0, false));
        if !on_client {
            *this.armed = false;
            return Poll::Pending;
        }
        let limit = this.proxy.after_head.send;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if !*this.armed || frames != *this.frames {
            sleep.as_mut().reset(Instant::now() + limit);
            *this.armed = true;
            *this.frames = frames;
        }
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        this.proxy.timed_out(Timeout::Send, None);
        Poll::Ready(())
    }
}

impl<B> ReadTimed<B> {
    pub fn new(body: B, proxy: Arc<Proxy>) -> ReadTimed<B> {
        ReadTimed {
            body,
            proxy,
            sleep: None,
            waiting: false,
        }
    }
}

impl<B> Body for ReadTimed<B>
where
    B: Body<Data = Bytes, Error = BodyError> + Unpin,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            this.waiting = false;
            Turn::record(true);
            return Poll::Ready(frame);
        }
        Turn::record(false);
        let limit = this.proxy.after_head.read;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if !this.waiting {
            sleep.as_mut().reset(tokio::time::Instant::now() + limit);
            this.waiting = true;
        }
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        this.proxy.timed_out(Timeout::Read, None);
        Poll::Ready(Some(Err(Timeout::Read.key().into())))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
