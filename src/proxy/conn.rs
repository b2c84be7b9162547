//! One HTTP/2 connection's state outside the protocol (`proxy::h2` and `h2` hold that): the socket
//! wrapper (which notices reads), the count of
//! responses still being sent, and the idle clock the connection task consults; and the step of
//! every connection's coarse clock.
//!
//! Everything here is per connection and touched by that connection's task only (plus relaxed
//! atomics read by its own watchdog), so nothing is shared across connections.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What the connection's watchdog needs to tell idle from busy.
#[derive(Debug, Default)]
pub struct Activity {
    /// Responses not yet fully sent: HTTP/1.1 requests or HTTP/2 streams in progress.
    active: AtomicUsize,
    /// Bytes arrived or a response finished since the watchdog last looked.
    touched: AtomicBool,
}

impl Activity {
    /// Counts a request as active until the returned guard drops (with its stream's future, once
    /// the response is sent).
    pub fn start(self: &Arc<Self>) -> Active {
        self.active.fetch_add(1, Ordering::Relaxed);
        Active(Arc::clone(self))
    }
}

/// One active request of a connection; see [`Activity::start`].
#[derive(Debug)]
pub struct Active(Arc<Activity>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
        // Idle time counts from the end of the last response, not from its start.
        self.0.touched.store(true, Ordering::Relaxed);
    }
}

/// Decides when a connection has idled out. Before its first byte a connection gets
/// `header_timeout`; after that, `idle_timeout` with no request in flight and no byte received.
///
/// NOTE: sampled every quarter of the shorter limit rather than timed to the byte, so a
/// connection closes up to a quarter step late; that keeps it to one timer per connection and one
/// relaxed store per read.
#[derive(Debug)]
pub struct IdleClock {
    header_timeout: Duration,
    idle_timeout: Duration,
    idle_for: Duration,
    started: bool,
}

impl IdleClock {
    pub fn new(header_timeout: Duration, idle_timeout: Duration) -> IdleClock {
        IdleClock {
            header_timeout,
            idle_timeout,
            idle_for: Duration::ZERO,
            started: false,
        }
    }

    fn limit(&self) -> Duration {
        if self.started {
            self.idle_timeout
        } else {
            self.header_timeout
        }
    }

    /// How long to sleep before the next [`IdleClock::expired`]: a quarter of the shorter
    /// limit, so a connection that just started is never asleep past its idle limit.
    pub fn step(&self) -> Duration {
        watch_step(self.header_timeout, self.idle_timeout)
    }

    /// Called after sleeping one [`IdleClock::step`]: true once the connection has been idle
    /// past its limit.
    pub fn expired(&mut self, activity: &Activity) -> bool {
        let step = self.step();
        let touched = activity.touched.swap(false, Ordering::Relaxed);
        if touched || activity.active.load(Ordering::Relaxed) > 0 {
            self.started |= touched;
            self.idle_for = Duration::ZERO;
            return false;
        }
        self.idle_for += step;
        self.idle_for >= self.limit()
    }
}

/// How often a connection's deadlines are looked at: a quarter of the shorter limit, so a
/// connection is never asleep past either.
pub fn watch_step(header_timeout: Duration, idle_timeout: Duration) -> Duration {
    (header_timeout.min(idle_timeout) / 4).max(Duration::from_millis(10))
}

/// The client connection (plain TCP, or TLS over it) as `h2` sees it.
pub struct ClientIo<S> {
    stream: S,
    activity: Arc<Activity>,
}

impl<S> ClientIo<S> {
    pub fn new(stream: S) -> ClientIo<S> {
        ClientIo {
            stream,
            activity: Arc::default(),
        }
    }
}

impl<S> ClientIo<S> {
    pub fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ClientIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            if buf.filled().len() > before {
                this.activity.touched.store(true, Ordering::Relaxed);
            }
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ClientIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idles_out_only_without_requests_or_bytes() {
        let activity = Arc::new(Activity::default());
        let mut clock = IdleClock::new(Duration::from_millis(400), Duration::from_secs(4));
        // Silent from the start: the header timeout applies.
        assert_eq!(clock.step(), Duration::from_millis(100));
        assert!(!(0..3).any(|_| clock.expired(&activity)));
        assert!(clock.expired(&activity));

        // Bytes arrived: the idle timeout applies, counted in the same steps.
        let mut clock = IdleClock::new(Duration::from_millis(400), Duration::from_secs(1));
        activity.touched.store(true, Ordering::Relaxed);
        assert!(!clock.expired(&activity));
        let active = activity.start();
        assert!(!(0..40).any(|_| clock.expired(&activity)));
        drop(active);
        assert!(!(0..10).any(|_| clock.expired(&activity)));
        assert!(clock.expired(&activity));
    }
}
