//! idle_connections: owns a backend's idle keep-alive connections ([`IdleConnections`]), the
//! connection type lb's own HTTP/1.1 code speaks to a backend over ([`Upstream`]: TCP, or TLS
//! over it), which counts its bytes into its backend's `stats::Traffic`. It never connects,
//! sends or reads: `proxy` makes
//! the connections and lends them out, `health` closes the expired ones on its timer. It sits
//! below `topology` (each `Backend` owns its set, so the connections live exactly as long as the
//! backend across reloads) and below `proxy`, and imports neither.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::stats::Traffic;

/// Idle connections kept per backend at most; more are closed when their request ends.
const MAX_IDLE: usize = 128;

/// A backend's idle keep-alive connections, ready for a request.
///
/// Sockets for lb's own HTTP/1.1 client, which reads and writes the bytes itself for the
/// requests of both engines.
///
/// A connection idle past the pool's `idle_timeout` is never reused, and the backend's health
/// checker closes it on a timer ([`IdleConnections::close_expired`]): the backend may have
/// forgotten it, and an idle fleet of sockets helps nobody.
pub struct IdleConnections {
    /// Allocated on first use: a file may declare thousands of backends that never see traffic.
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
            streams: OnceLock::new(),
            idle_timeout_ms: AtomicU64::new(crate::config::DEFAULT_IDLE_TIMEOUT.as_millis() as u64),
            retired: AtomicBool::new(false),
        }
    }
}

struct IdleStream {
    stream: Upstream,
    since: Instant,
}

/// A connection to a backend for lb's own HTTP/1.1 code: plain TCP, or TLS over it for a pool
/// with `backend_tls`, and where its bytes are counted (a request connection counts into its
/// backend's [`Traffic`]; a probe's counts nowhere).
pub struct Upstream {
    io: Io,
    traffic: Option<Arc<Traffic>>,
}

/// The TLS state is boxed, so the plain case stays a socket and a tag.
enum Io {
    /// Cleartext.
    Plain(TcpStream),
    /// TLS, verified against the pool's `backend_tls` at connect.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Upstream {
    /// A cleartext connection, its bytes not counted yet.
    pub fn plain(stream: TcpStream) -> Upstream {
        Upstream {
            io: Io::Plain(stream),
            traffic: None,
        }
    }

    /// A TLS connection (verified against the pool's `backend_tls`), its bytes not counted yet.
    pub fn tls(stream: tokio_rustls::client::TlsStream<TcpStream>) -> Upstream {
        Upstream {
            io: Io::Tls(Box::new(stream)),
            traffic: None,
        }
    }

    /// Counts the connection's bytes from now on into `traffic` (its backend's).
    pub fn count_into(&mut self, traffic: &Arc<Traffic>) {
        self.traffic = Some(Arc::clone(traffic));
    }

    fn sent(&self, n: usize) {
        if let Some(traffic) = &self.traffic {
            traffic.add_sent(n);
        }
    }

    /// Whether an idle connection is still good: it has nothing to read. Readable means the
    /// backend closed it (or sent bytes nobody asked for: over TLS, a close_notify). tokio
    /// answers from the readiness its reactor recorded, so a quiet socket costs no system call.
    fn is_quiet(&self) -> bool {
        match &self.io {
            Io::Plain(stream) => {
                let mut byte = [0u8; 1];
                matches!(stream.try_read(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
            Io::Tls(stream) => {
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
        match &self.io {
            Io::Plain(stream) => {
                let _ = stream.readable().await;
            }
            Io::Tls(_) => std::future::pending().await,
        }
    }

    /// Writes some of `buf` (at least one byte, or an error) and, over TLS, pushes it out, for a
    /// body streamed as it comes. On plain TCP it returns `Ok(None)` instead when the backend
    /// answers first ([`Upstream::answered`]). Cancel safe on plain TCP; over TLS a write may
    /// have been taken when cancelled, which only a failing deadline does.
    pub async fn write_some(&mut self, buf: &[u8]) -> io::Result<Option<usize>> {
        let written = match &mut self.io {
            Io::Plain(stream) => loop {
                tokio::select! {
                    biased;
                    _ = stream.readable() => return Ok(None),
                    ready = stream.writable() => {
                        ready?;
                        match stream.try_write(buf) {
                            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                            written => break written?,
                        }
                    }
                }
            },
            Io::Tls(stream) => {
                let n = stream.write(buf).await?;
                stream.flush().await?;
                n
            }
        };
        self.sent(written);
        Ok(Some(written))
    }
}

impl AsyncRead for Upstream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = match &mut this.io {
            Io::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Io::Tls(stream) => {
                // What was written and still waits in the TLS session goes out before an
                // answer is awaited: a request written whole (`write_all`) may not have left.
                if let Poll::Ready(Err(error)) = Pin::new(&mut **stream).poll_flush(cx) {
                    return Poll::Ready(Err(error));
                }
                Pin::new(&mut **stream).poll_read(cx, buf)
            }
        };
        if let (Poll::Ready(Ok(())), Some(traffic)) = (&read, &this.traffic) {
            traffic.add_received(buf.filled().len().saturating_sub(before));
        }
        read
    }
}

impl AsyncWrite for Upstream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = match &mut this.io {
            Io::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Io::Tls(stream) => Pin::new(&mut **stream).poll_write(cx, buf),
        };
        if let Poll::Ready(Ok(n)) = written {
            this.sent(n);
        }
        written
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = match &mut this.io {
            Io::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Io::Tls(stream) => Pin::new(&mut **stream).poll_write_vectored(cx, bufs),
        };
        if let Poll::Ready(Ok(n)) = written {
            this.sent(n);
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(stream) => stream.is_write_vectored(),
            Io::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Io::Tls(stream) => Pin::new(&mut **stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Io::Tls(stream) => Pin::new(&mut **stream).poll_shutdown(cx),
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
    /// Idle connections held now.
    pub fn len(&self) -> usize {
        self.streams.get().map_or(0, ArrayQueue::len)
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

    /// A connection handed back while [`IdleConnections::retire`] ran is closed all the same.
    fn close_if_retired(&self) {
        if self.retired.load(Ordering::SeqCst) {
            self.close_all();
        }
    }

    /// An idle plain socket that can take a request now, if there is one.
    pub fn take_stream(&self) -> Option<Upstream> {
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
    pub fn put_stream(&self, stream: Upstream) {
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
        // Each entry is looked at once: popped, and pushed back behind the others if kept
        // (the queue's order stays oldest first). A request may take one meanwhile.
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

#[cfg(test)]
mod tests;
