//! proxy: owns the data plane — accepting client connections (HTTP/1.x and h2c), forwarding each
//! request to a backend picked by `balance`, and draining on shutdown. It reads the topology
//! snapshot and backend atomics only; it never parses config or runs health checks.
//!
//! A cleartext connection's first bytes choose its engine, once: the HTTP/2 preface (h2c prior
//! knowledge) goes to lb's HTTP/2 engine (`proxy::h2`, on the `h2` crate's server), anything else
//! to lb's own HTTP/1.x engine (`proxy::h1`) for the connection's whole life. A TLS connection
//! (`listen.https`) is chosen by its negotiated ALPN protocol instead: `h2` goes to `proxy::h2`,
//! anything else to `proxy::h1`. The
//! handshake uses the certificate store's current `ServerConfig` (`crate::tls`), which this
//! module only reads.

mod budget;
mod conn;
#[doc(hidden)]
pub mod fuzzing;
mod h1;
mod h2;
mod headers;
mod http1;
mod sequence;
mod stall;
mod timer;
mod upstream;

pub use h2::ResponseBody;
pub use sequence::Proxy;
pub use stall::AfterHead;
pub use upstream::{probe, ProbeError};

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use budget::{Budget, Ticket};
use conn::ClientIo;

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
    /// Client connections served at once; past it, the connections idle longest are closed to
    /// admit new ones (`proxy::budget`), and while none is idle more wait in the listen backlog.
    pub max_connections: usize,
    /// Client connections open at once from one address; more are closed at accept.
    pub max_connections_per_ip: Option<u32>,
}

/// The client listeners of the data plane.
pub struct Listeners {
    /// Cleartext HTTP/1.x and h2c (`listen.http`).
    pub http: TcpListener,
    /// TLS (`listen.https`): each handshake uses the store's current config.
    pub https: Vec<TcpListener>,
    /// The certificates `https` serves; `None` leaves `https` unserved (lb refuses that at
    /// start).
    pub certificates: Option<Arc<crate::tls::Store>>,
}

/// A client connection the engines serve: plain TCP, or TLS over it. Static dispatch keeps the
/// cleartext path free of any indirection.
pub(crate) trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send {
    /// Whether the client came over TLS: its requests go on with `X-Forwarded-Proto: https`.
    const HTTPS: bool;

    /// Reads what the client sent into `buf` after growing it by `room`; `Ok(0)` when the client
    /// closed. Cancel safe. On plain TCP it waits for readiness before growing the buffer, so an
    /// idle connection holds no buffer while it waits.
    fn read_ready(
        &mut self,
        buf: &mut Vec<u8>,
        room: usize,
    ) -> impl Future<Output = io::Result<usize>> + Send;

    /// Waits until a read would find something (or the connection's end), so a caller can hold
    /// no buffer until then. On TLS it is ready at once while rustls holds decrypted bytes.
    fn wait_readable(&self) -> impl Future<Output = io::Result<()>> + Send;

    /// [`ClientStream::wait_readable`] as a poll, for a waiter that keeps no state of its own
    /// (the socket's reader waker slot holds the task): an idle connection's future stays small.
    /// Only one task may poll it.
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl ClientStream for TcpStream {
    const HTTPS: bool = false;

    async fn read_ready(&mut self, buf: &mut Vec<u8>, room: usize) -> io::Result<usize> {
        self.readable().await?;
        buf.reserve(room);
        // Through `AsyncRead`, not `try_read_buf`: a read that leaves room in `buf` drained the
        // socket, and tokio then clears its readiness, so the next `readable()` waits for new
        // bytes instead of reporting the ones just read (a stale readiness would make
        // `wait_readable` useless). Readiness that was stale anyway makes this wait, holding
        // `buf`.
        self.read_buf(buf).await
    }

    async fn wait_readable(&self) -> io::Result<()> {
        self.readable().await
    }

    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_read_ready(cx)
    }
}

impl ClientStream for TlsStream<TcpStream> {
    const HTTPS: bool = true;

    async fn read_ready(&mut self, buf: &mut Vec<u8>, room: usize) -> io::Result<usize> {
        // Decrypted bytes may wait inside rustls with the socket not readable: no readiness
        // shortcut here.
        buf.reserve(room);
        self.read_buf(buf).await
    }

    async fn wait_readable(&self) -> io::Result<()> {
        let (tcp, tls) = self.get_ref();
        // rustls wants more bytes only when it holds no decrypted ones (and at most part of a
        // record): then nothing can be read before the socket turns readable.
        if tls.wants_read() {
            tcp.readable().await?;
        }
        Ok(())
    }

    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let (tcp, tls) = self.get_ref();
        if tls.wants_read() {
            tcp.poll_read_ready(cx)
        } else {
            Poll::Ready(Ok(()))
        }
    }
}

/// A connection's client, as its requests' access lines name it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer<'a> {
    /// The client's address.
    pub addr: SocketAddr,
    /// Its IP as `X-Forwarded-For` gets it, written once per connection rather than per
    /// request.
    pub ip: &'a str,
    /// The subject of the certificate the client presented over TLS, verified against
    /// `[tls] client_ca`; `None` without one.
    pub cert: Option<&'a str>,
}

/// What lb makes of a peer's `X-Forwarded-For` (`[server] trusted_proxies`):
/// [`Proxy::peer_trust`]. Asked per request rather than kept in [`Peer`], which every idle
/// connection's future holds: without `trusted_proxies` it is one branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PeerTrust {
    /// No `trusted_proxies`: the field goes on with the peer appended, and is never read.
    Unset,
    /// The peer is a trusted proxy: the field goes on with the peer appended, and a
    /// `rate_limit` keyed by `"ip"` reads the client from it.
    Trusted,
    /// The peer is not one: the field is replaced by the peer's address.
    Untrusted,
}

impl PeerTrust {
    /// Whether the client's `X-Forwarded-For` goes on to the backend (with the peer appended)
    /// rather than being replaced by the peer's address.
    pub fn keeps_forwarded_for(self) -> bool {
        self != PeerTrust::Untrusted
    }
}

/// Largest request head accepted; larger ones get 431.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Accepts and serves until `shutdown` resolves, then lets open connections finish their
/// in-flight requests for at most `drain_timeout`; connections still open at that deadline are
/// dropped (closed), not waited on.
pub async fn serve(
    listeners: Listeners,
    proxy: Arc<Proxy>,
    settings: ServerSettings,
    shutdown: impl Future<Output = ()>,
) {
    let engines = Arc::new(Engines {
        h2: h2::builder(),
        settings,
    });
    let settings = &engines.settings;
    // Connection tasks, so the drain can wait for them; `drain` asks each to finish gracefully.
    let connections = TaskTracker::new();
    let drain = CancellationToken::new();
    // Cancelled at the drain deadline: each connection task then drops its connection.
    let cut = CancellationToken::new();
    // Bounds open client connections: each holds a ticket, taken after accept (evicting idle
    // connections when the budget is spent), which travels with the socket's task (through a
    // TLS handshake and an upgrade tunnel too).
    let budget = Budget::new(
        settings.max_connections,
        settings.max_connections_per_ip,
        Arc::clone(&proxy.metrics),
    );
    let Listeners {
        http,
        https,
        certificates,
    } = listeners;
    let https = if certificates.is_some() {
        https
    } else {
        Vec::new()
    };
    // Listener 0 is `http`; the rest are `https`. One loop takes the first connection of any
    // listener, then its ticket; while it waits for a ticket, more clients wait in the backlog.
    let mut all = Vec::with_capacity(1 + https.len());
    all.push(http);
    all.extend(https);
    proxy.metrics.set_listeners(all.iter().map(|l| {
        l.local_addr()
            .map_or_else(|_| "-".to_owned(), |a| a.to_string())
    }));
    let mut first = 0;
    tokio::pin!(shutdown);

    loop {
        let (which, accepted) = tokio::select! {
            accepted = std::future::poll_fn(|cx| poll_accept_any(&all, first, cx)) => accepted,
            () = &mut shutdown => break,
        };
        // The next round starts at the next listener: a busy one does not starve the others.
        first = (first + 1) % all.len();
        let (stream, client) = match accepted {
            Ok(a) => a,
            Err(error) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Refused before it costs a slot, a handshake or a read: closed without a word, as
        // HAProxy's `tcp-request connection reject` does (an HTTP answer would need its request
        // read, and over TLS a whole handshake, for the client that is over its limit).
        let Some(admitted) = budget.admit(client.ip(), which) else {
            tracing::debug!(%client, "over max_connections_per_ip; closed");
            continue;
        };
        let ticket = tokio::select! {
            ticket = budget.ticket(admitted) => ticket,
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let proxy = Arc::clone(&proxy);
        let engines = Arc::clone(&engines);
        let drain = drain.clone();
        let cut = cut.clone();
        let tls = match (which, &certificates) {
            (1.., Some(store)) => Some(TlsAcceptor::from(store.server_config())),
            _ => None,
        };
        // A task of its own kind per listener kind, so an idle cleartext connection's task is
        // sized for the cleartext engine and not for a TLS handshake. Each connection's future
        // is built in place inside the `select!`: one bound to a variable first would be stored
        // twice in the task.
        match tls {
            None => connections.spawn(async move {
                tokio::select! {
                    () = serve_plain(stream, client, ticket, proxy, &engines, drain) => {}
                    () = cut.cancelled() => {}
                }
            }),
            Some(acceptor) => connections.spawn(async move {
                tokio::select! {
                    () = serve_tls(stream, acceptor, client, ticket, proxy, &engines, drain) => {}
                    () = cut.cancelled() => {}
                }
            }),
        };
    }
    drop(all);
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

/// What every connection's task reads: the HTTP/2 server's settings and the client-side limits.
struct Engines {
    h2: ::h2::server::Builder,
    settings: ServerSettings,
}

/// Accepts from the first of `listeners` with a connection waiting, looking at them from index
/// `first` on.
fn poll_accept_any(
    listeners: &[TcpListener],
    first: usize,
    cx: &mut Context<'_>,
) -> Poll<(usize, io::Result<(TcpStream, SocketAddr)>)> {
    for offset in 0..listeners.len() {
        let which = (first + offset) % listeners.len();
        if let Poll::Ready(accepted) = listeners[which].poll_accept(cx) {
            return Poll::Ready((which, accepted));
        }
    }
    Poll::Pending
}

/// Serves a cleartext connection: HTTP/2 when it opens with the preface, HTTP/1.x otherwise.
async fn serve_plain(
    mut stream: TcpStream,
    client: SocketAddr,
    ticket: Ticket,
    proxy: Arc<Proxy>,
    engines: &Engines,
    drain: CancellationToken,
) {
    let settings = &engines.settings;
    let Some(h2_preface) = opens_with_h2_preface(&stream, &ticket, settings, &drain).await else {
        return;
    };
    let ip = crate::access_log::ip_text(client.ip());
    let peer = Peer {
        addr: client,
        ip: &ip,
        cert: None,
    };
    if h2_preface {
        let io = ClientIo::new(stream);
        // Boxed: the HTTP/2 connection's state would otherwise sit in every cleartext
        // connection's task, HTTP/1.x ones included.
        Box::pin(h2::serve(
            io,
            peer,
            &ticket,
            &proxy,
            &engines.h2,
            settings,
            drain,
        ))
        .await;
    } else {
        h1::serve(&mut stream, peer, &ticket, &proxy, settings, &drain).await;
        drop(stream);
    }
    // The slot goes only after the socket has closed.
    drop(ticket);
}

/// Serves a TLS connection: the handshake first, bounded by the header timeout and holding only
/// the connection's ticket (evictable until the client's first byte); then HTTP/2 when ALPN
/// chose `h2`, HTTP/1.x otherwise.
async fn serve_tls(
    stream: TcpStream,
    acceptor: TlsAcceptor,
    client: SocketAddr,
    ticket: Ticket,
    proxy: Arc<Proxy>,
    engines: &Engines,
    drain: CancellationToken,
) {
    let settings = &engines.settings;
    let deadline = tokio::time::Instant::now() + settings.header_timeout;
    // Until its ClientHello the connection is idle, and may be evicted. A peek, not
    // `readable()`, whose readiness may be spurious (a fresh socket's is).
    let mut first = [0u8; 1];
    let first = tokio::select! {
        first = until_first_byte(
            &ticket,
            tokio::time::timeout_at(deadline, stream.peek(&mut first)),
        ) => match first {
            Some(first) => first,
            None => return,
        },
        () = drain.cancelled() => return,
    };
    let global = &proxy.metrics;
    match first {
        Ok(Ok(n)) if n > 0 => {}
        Ok(_) => {
            global.tls_handshakes_closed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        Err(_) => {
            tracing::debug!(%client, "no TLS handshake begun within the header timeout");
            global
                .tls_handshakes_timed_out
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
    if !ticket.busy() {
        return;
    }
    let handshake = tokio::time::timeout_at(deadline, acceptor.accept(stream));
    let mut stream = tokio::select! {
        handshake = handshake => match handshake {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                tracing::debug!(%client, %error, "TLS handshake failed");
                let failures = match error.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
                    Some(rustls::Error::NoCertificatesPresented | rustls::Error::InvalidCertificate(_)) => {
                        &global.tls_handshakes_client_certificate
                    }
                    Some(_) => &global.tls_handshakes_protocol,
                    // Not a TLS error: the socket's (a close or reset mid-handshake).
                    None => &global.tls_handshakes_closed,
                };
                failures.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(_) => {
                tracing::debug!(%client, "TLS handshake not finished within the header timeout");
                global.tls_handshakes_timed_out.fetch_add(1, Ordering::Relaxed);
                return;
            }
        },
        () = drain.cancelled() => return,
    };
    let session = stream.get_ref().1;
    let alpn_h2 = session.alpn_protocol() == Some(b"h2");
    // Verified by the handshake against `client_ca`; its subject goes into the access lines.
    let cert = session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| crate::tls::subject_of(leaf));
    let ip = crate::access_log::ip_text(client.ip());
    let peer = Peer {
        addr: client,
        ip: &ip,
        cert: cert.as_deref(),
    };
    if alpn_h2 {
        let io = ClientIo::new(stream);
        h2::serve(io, peer, &ticket, &proxy, &engines.h2, settings, drain).await;
    } else {
        h1::serve(&mut stream, peer, &ticket, &proxy, settings, &drain).await;
        // close_notify, so the client can tell lb's close from a cut (a response that ends at
        // the close needs it); bounded, as a client that reads nothing could hold it.
        let _ = tokio::time::timeout(CLOSE_NOTIFY, stream.shutdown()).await;
    }
    drop(ticket);
}

/// Runs `wait` (for a connection's first byte), the connection evictable while it waits: marked
/// idle once `wait` is pending (not before: a connection whose bytes wait already is not idle,
/// and one whose task has not run yet may have some). `None`: evicted first. The caller marks
/// the connection busy (`Ticket::busy`) once bytes came.
async fn until_first_byte<F: Future>(ticket: &Ticket, wait: F) -> Option<F::Output> {
    let mut wait = std::pin::pin!(wait);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = wait.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        ticket.idle_now();
        ticket.poll_evicted(cx).map(|()| None)
    })
    .await
}

/// How long a TLS connection's closing alert may wait for the client to take it.
const CLOSE_NOTIFY: Duration = Duration::from_secs(1);

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether a connection opens with the HTTP/2 preface: looked at with `peek`, so the bytes stay
/// in the socket for the engine that serves it. `None`: the connection closed, went silent past
/// the header timeout, was evicted before its first byte, or lb is draining.
///
/// NOTE: a preface split across segments (rare: clients write it whole) is peeked again every
/// few milliseconds until it is whole, since a socket with unread bytes is always readable.
async fn opens_with_h2_preface(
    stream: &TcpStream,
    ticket: &Ticket,
    settings: &ServerSettings,
    drain: &CancellationToken,
) -> Option<bool> {
    let deadline = tokio::time::Instant::now() + settings.header_timeout;
    let mut first = [0u8; H2_PREFACE.len()];
    loop {
        let peeked = tokio::select! {
            peeked = until_first_byte(
                ticket,
                tokio::time::timeout_at(deadline, stream.peek(&mut first)),
            ) => peeked?,
            () = drain.cancelled() => return None,
        };
        let n = match peeked {
            Ok(Ok(n)) if n > 0 => n,
            _ => return None,
        };
        // The client has begun: no longer evictable (the engine marks it idle again between
        // requests). `false`: evicted just before.
        if !ticket.busy() {
            return None;
        }
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
