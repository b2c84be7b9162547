//! h1: lb's own HTTP/1.1 path for plain requests — an HTTP/1.1 request with an origin-form
//! target, one `Host`, and no body or a `Content-Length` one of at most 64 KiB, which is nearly
//! all proxied traffic. One task per client connection reads the request (a body whole, as
//! nginx buffers it), routes, picks, writes the backend's request on a pooled plain socket, and
//! relays the response bytes back, with no `http` types, header maps or task hops in between.
//!
//! Anything else (a chunked or larger body, `Expect`, an upgrade, HTTP/1.0, HTTP/2's preface, a
//! head httparse or [`wire::parse_request`] refuses) is handed, with the bytes read so far, to
//! hyper, which then serves the connection for the rest of its life: one authority for the
//! unusual and the hostile, and one short path for the common case.
//!
//! Why: under wrk, hyper's server and client, the header maps between them and the wake-ups
//! between the client's and the backend connection's tasks were most of lb's own cost per
//! request (callgrind: ~36k instructions a request, ~60% of it in hyper, `http` and the
//! allocator); nginx and HAProxy proxy the same request for a fraction of that.
//!
//! It owns nothing shared: it reads the topology snapshot and backend atomics as the hyper path
//! does, and keeps plain sockets in each backend's idle set.

pub(super) mod backend;
pub(super) mod chunked;
pub(super) mod wire;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use http::{Method, StatusCode};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use self::backend::BODY_READ;
use self::chunked::{Chunked, Scan};
use self::wire::{Framing, RequestHead, ResponseHead};
use super::handler::{attempt_failed, is_idempotent, Failure, Proxy, Replay};
use super::stall::{AfterHead, Cut, Timeout};
use super::upstream::SendError;
use super::{ServerSettings, MAX_HEADER_BYTES};
use crate::config::PoolType;
use crate::routing::Route;
use crate::topology::{Backend, Pool};

/// Room kept free in a buffer before each read.
const READ_ROOM: usize = 4096;
/// Request bodies up to this are read whole and sent from lb's buffer; larger ones go to hyper.
const MAX_BUFFERED_BODY: usize = 64 * 1024;
/// Buffers that grew past this for one large head are shrunk back afterwards.
const KEEP_CAPACITY: usize = 64 * 1024;

/// Serves `stream` until it closes, or until a request needs hyper: then returns the bytes read
/// and not yet served, which hyper must see first.
pub(super) async fn serve(
    stream: &mut TcpStream,
    client: SocketAddr,
    proxy: &Proxy,
    settings: &ServerSettings,
    drain: &CancellationToken,
) -> Option<Vec<u8>> {
    // The client's address as `X-Forwarded-For` gets it, written once per connection.
    let mut client_ip = String::with_capacity(15);
    crate::access_log::push_ip(&mut client_ip, client.ip());
    let mut conn = Connection {
        client,
        proxy,
        drain,
        input: Vec::new(),
        scratch: Scratch::default(),
        rng: fastrand::Rng::new(),
    };
    // One coarse tick per connection for the head and idle deadlines, as the hyper path's
    // watchdog does: no timer is registered per request.
    let step = super::conn::watch_step(settings.header_timeout, settings.idle_timeout);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + step, step);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let draining = drain.cancelled();
    tokio::pin!(draining);

    // Until the first byte, a connection gets the header timeout; between requests, the shorter
    // of the idle and header timeouts; once a head has begun, the header timeout from its first
    // byte.
    let mut waiting_since = Instant::now();
    let mut limit = settings.header_timeout;
    // Whether the input may hold a whole head: a head ends at a line feed, so a read without
    // one is not parsed again (a dribbled head costs one parse per line, not per byte).
    let mut may_be_whole = false;
    loop {
        let head = loop {
            if may_be_whole {
                match wire::parse_request(
                    &conn.input,
                    client_ip.as_bytes(),
                    &mut conn.scratch.headers,
                ) {
                    Ok(Some(head)) if head.len <= MAX_HEADER_BYTES => break head,
                    Ok(None) => {}
                    // Too large (hyper answers 431), or not plain.
                    Ok(Some(_)) | Err(_) => return Some(conn.input),
                }
            }
            if conn.input.len() >= MAX_HEADER_BYTES {
                // hyper answers 431.
                return Some(conn.input);
            }
            let before = conn.input.len();
            let deadline = waiting_since + limit;
            let read = read_more(
                stream,
                &mut conn.input,
                &mut tick,
                draining.as_mut(),
                deadline,
            );
            match read.await {
                ClientRead::Bytes => {}
                ClientRead::Quiet => {
                    if conn.input.is_empty() {
                        // Idle for a tick: a kept-alive connection holds no buffers while it
                        // waits (under load, the next request comes sooner and reuses them).
                        conn.input = Vec::new();
                        conn.scratch = Scratch::default();
                    }
                    continue;
                }
                ClientRead::Closed | ClientRead::TimedOut | ClientRead::Draining => return None,
            }
            if before == 0 {
                waiting_since = Instant::now();
                limit = settings.header_timeout;
            }
            may_be_whole = conn.input[before..].contains(&b'\n');
        };
        // A body is read whole before a backend is picked, as nginx buffers request bodies: a
        // retry can send it again and a slow client holds no backend connection. One too large
        // for that goes to hyper, which streams it. The body is held to its head's deadline.
        let body_len = usize::try_from(head.body_len).unwrap_or(usize::MAX);
        if body_len > MAX_BUFFERED_BODY {
            return Some(conn.input);
        }
        let message_len = head.len + body_len;
        while conn.input.len() < message_len {
            let deadline = waiting_since + settings.header_timeout;
            let read = read_more(
                stream,
                &mut conn.input,
                &mut tick,
                draining.as_mut(),
                deadline,
            );
            match read.await {
                ClientRead::Bytes | ClientRead::Quiet => {}
                ClientRead::Closed | ClientRead::TimedOut | ClientRead::Draining => return None,
            }
        }
        let served = conn.serve_request(stream, &head).await;
        // A drain that began during the exchange made the response say `connection: close`.
        if !served || head.close || drain.is_cancelled() {
            return None;
        }
        conn.input.drain(..message_len);
        conn.scratch.shrink();
        // The tick counts from the end of the exchange: `Quiet` then means a whole tick without
        // a request (a long exchange would otherwise end right on a tick and free the buffers).
        tick.reset();
        if conn.input.capacity() > KEEP_CAPACITY {
            conn.input.shrink_to(READ_ROOM);
        }
        may_be_whole = !conn.input.is_empty();
        waiting_since = Instant::now();
        // The next head is held to the header timeout as well, as hyper's header timer does on
        // a kept-alive connection (and HAProxy's `http-keep-alive`, by default); one already
        // begun (pipelined) has the header timeout alone.
        limit = if conn.input.is_empty() {
            settings.header_timeout.min(settings.idle_timeout)
        } else {
            settings.header_timeout
        };
    }
}

enum ClientRead {
    Bytes,
    /// The connection's tick passed with nothing read and the deadline not reached.
    Quiet,
    Closed,
    TimedOut,
    Draining,
}

/// Reads more of the client's bytes, giving up at `deadline` (checked on the connection's tick),
/// or on a drain while no request has begun; a tick without bytes returns [`ClientRead::Quiet`].
async fn read_more(
    stream: &mut TcpStream,
    input: &mut Vec<u8>,
    tick: &mut Interval,
    mut draining: Pin<&mut WaitForCancellationFuture<'_>>,
    deadline: Instant,
) -> ClientRead {
    loop {
        tokio::select! {
            biased;
            // Readiness first, then the read: an idle connection holds no buffer while it waits.
            ready = stream.readable() => {
                if ready.is_err() {
                    return ClientRead::Closed;
                }
                input.reserve(READ_ROOM);
                match stream.try_read_buf(input) {
                    Ok(0) => return ClientRead::Closed,
                    Ok(_) => return ClientRead::Bytes,
                    // Readiness that was stale: wait again.
                    Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return ClientRead::Closed,
                }
            }
            () = draining.as_mut(), if input.is_empty() => return ClientRead::Draining,
            _ = tick.tick() => {
                return if Instant::now() >= deadline {
                    ClientRead::TimedOut
                } else {
                    ClientRead::Quiet
                };
            }
        }
    }
}

/// A connection's reusable buffers besides its input: allocated once, reused for every request.
#[derive(Default)]
struct Scratch {
    /// The backend's header lines for the current request.
    headers: Vec<u8>,
    /// The request as the backend gets it.
    request: Vec<u8>,
    /// The backend's bytes.
    response: Vec<u8>,
    /// What goes to the client next.
    out: Vec<u8>,
}

impl Scratch {
    /// Gives back what one large message grew.
    fn shrink(&mut self) {
        for buffer in [
            &mut self.headers,
            &mut self.request,
            &mut self.response,
            &mut self.out,
        ] {
            if buffer.capacity() > KEEP_CAPACITY {
                buffer.clear();
                buffer.shrink_to(READ_ROOM);
            }
        }
    }
}

struct Connection<'p> {
    client: SocketAddr,
    proxy: &'p Proxy,
    drain: &'p CancellationToken,
    /// The client's bytes not yet served; a served head is removed once its exchange is over.
    input: Vec<u8>,
    scratch: Scratch,
    rng: fastrand::Rng,
}

/// The request being served, borrowed from the connection's input.
struct Request<'a> {
    method: &'a Method,
    /// Path and query, as sent.
    target: &'a [u8],
    path: &'a str,
    host: &'a str,
    /// The client asked to close after this exchange.
    close: bool,
    /// The whole body (empty for most requests).
    body: &'a [u8],
}

impl Request<'_> {
    fn is_head(&self) -> bool {
        *self.method == Method::HEAD
    }
}

impl Connection<'_> {
    /// Serves one request whose head is at the start of the input; false when the connection
    /// must close (the client left, or a response was cut short).
    async fn serve_request(&mut self, stream: &mut TcpStream, head: &RequestHead) -> bool {
        let started = Instant::now();
        let topology = self.proxy.topology.load_full();
        let input = &self.input;
        let request = Request {
            method: &head.method,
            target: &input[head.target.clone()],
            // The head's text was checked to be visible ASCII; the fallbacks are never used.
            path: std::str::from_utf8(&input[head.target.start..head.path_end]).unwrap_or("/"),
            host: std::str::from_utf8(&input[head.host.clone()]).unwrap_or(""),
            close: head.close,
            // Read whole before this is called (see `serve`); the fallback is never used.
            body: usize::try_from(head.body_len)
                .ok()
                .and_then(|n| input.get(head.len..head.len + n))
                .unwrap_or_default(),
        };
        let exchange = Exchange {
            proxy: self.proxy,
            drain: self.drain,
            client: self.client,
            request: &request,
            started,
        };
        let scratch = &mut self.scratch;
        scratch.out.clear();
        let status = match topology
            .routes
            .route(request.method, request.host, request.path)
        {
            Route::Matched(&idx) if idx < topology.pools.len() => {
                let pool = &topology.pools[idx];
                return exchange.forward(stream, pool, scratch, &mut self.rng).await;
            }
            Route::Redirect(location) => {
                let query = &request.target[request.path.len()..];
                let mut value = location.into_bytes();
                value.extend_from_slice(query);
                let status = StatusCode::MOVED_PERMANENTLY;
                exchange.push_local(&mut scratch.out, status, &[(b"location", &value)], "");
                status
            }
            Route::MethodNotAllowed => {
                let allowed = topology
                    .routes
                    .allowed_methods(request.host, request.path)
                    .join(", ");
                let status = StatusCode::METHOD_NOT_ALLOWED;
                let allow: &[u8] = allowed.as_bytes();
                exchange.push_local(
                    &mut scratch.out,
                    status,
                    &[(b"allow", allow)],
                    "method not allowed\n",
                );
                status
            }
            Route::Matched(_) | Route::NotFound => {
                let status = StatusCode::NOT_FOUND;
                exchange.push_local(&mut scratch.out, status, &[], "404 page not found\n");
                status
            }
        };
        exchange.account(status.as_u16(), None, None);
        stream.write_all(&scratch.out).await.is_ok()
    }
}

/// One request's way through a pool, borrowed from its connection.
struct Exchange<'a> {
    proxy: &'a Proxy,
    drain: &'a CancellationToken,
    client: SocketAddr,
    request: &'a Request<'a>,
    started: Instant,
}

impl Exchange<'_> {
    /// Forwards to a backend of `pool`, retrying as the hyper path does (a failed connect on
    /// another backend; a failed exchange too when the method is idempotent), relays the
    /// response and accounts for it. False when the client connection must close.
    async fn forward(
        &self,
        client: &mut TcpStream,
        pool: &Pool,
        scratch: &mut Scratch,
        rng: &mut fastrand::Rng,
    ) -> bool {
        let request = self.request;
        let mut attempt = 0;
        // The last failed attempt: its backend is avoided by the retry, and its answer is given
        // when no backend is left to retry on.
        let mut failed: Option<(Arc<Backend>, Failure)> = None;
        let failure = loop {
            let picked = match &failed {
                Some((last, _)) => pool.pick_other(rng, last),
                None => pool.pick(rng),
            };
            let Some(backend) = picked else {
                break failed.map_or_else(Failure::no_backend, |(_, failure)| failure);
            };
            let backend = Arc::clone(backend);
            scratch.request.clear();
            wire::push_request_line(
                &mut scratch.request,
                request.method,
                &backend.addr.url_path,
                request.target,
            );
            scratch.request.extend_from_slice(&scratch.headers);
            scratch.request.extend_from_slice(b"\r\n");
            scratch.request.extend_from_slice(request.body);

            let in_flight = backend.start_request();
            let attempt_started = Instant::now();
            scratch.out.clear();
            let Scratch {
                request: request_bytes,
                response,
                out,
                ..
            } = &mut *scratch;
            let drain = self.drain;
            let exchanged = tokio::time::timeout(
                pool.request_timeout,
                backend::exchange(
                    &backend,
                    request_bytes,
                    response,
                    request.is_head(),
                    pool.connect_timeout,
                    // A drain begun while the backend worked closes the connection after this
                    // response.
                    |head| wire::push_client_head(out, head, request.close || drain.is_cancelled()),
                ),
            )
            .await;
            let error = match exchanged {
                Ok(Ok((mut upstream, head, ()))) => {
                    if pool.pool_type == PoolType::P2cEwma {
                        backend.latency.observe(attempt_started.elapsed());
                    }
                    self.account(head.status, Some(pool), Some(&backend));
                    let after_head = &self.proxy.after_head;
                    let relayed = relay(client, &mut upstream, &head, scratch, after_head).await;
                    drop(in_flight);
                    return match relayed {
                        Relayed::Whole { reusable } => {
                            if reusable && head.reusable {
                                backend.connections.put_stream(upstream);
                            }
                            true
                        }
                        Relayed::Broken => false,
                        Relayed::TimedOut(timeout) => {
                            self.proxy.timed_out(timeout, Some(&backend));
                            self.account_timeout(head.status, pool, &backend, timeout);
                            false
                        }
                    };
                }
                Ok(Err(error)) => SendError::from(error),
                Err(_elapsed) => break Failure::timed_out(pool, backend),
            };
            // The body was read whole: it can always be sent again.
            let replay = Replay {
                unsent: true,
                sent: is_idempotent(request.method),
            };
            let metrics = &self.proxy.metrics;
            let (retry, failure) = attempt_failed(pool, &backend, &error, replay, metrics);
            if !(retry && attempt < pool.retries) {
                break failure;
            }
            failed = Some((backend, failure));
            attempt += 1;
            self.proxy.metrics.retries.fetch_add(1, Ordering::Relaxed);
        };
        scratch.out.clear();
        self.push_local(&mut scratch.out, failure.status, &[], failure.text);
        self.account(
            failure.status.as_u16(),
            Some(pool),
            failure.backend.as_ref(),
        );
        client.write_all(&scratch.out).await.is_ok()
    }

    /// A short answer lb makes itself, in `out`.
    fn push_local(
        &self,
        out: &mut Vec<u8>,
        status: StatusCode,
        extra: &[(&[u8], &[u8])],
        text: &str,
    ) {
        let request = self.request;
        wire::push_local_response(
            out,
            status,
            extra,
            text.as_bytes(),
            request.is_head(),
            request.close || self.drain.is_cancelled(),
        );
    }

    /// The access line of a response cut short by `timeout` (its first line went at the head).
    fn account_timeout(&self, status: u16, pool: &Pool, backend: &Backend, timeout: Timeout) {
        let request = self.request;
        self.proxy.access_log.write(&crate::access_log::Line {
            client: self.client,
            method: request.method,
            path: request.path,
            status,
            pool: Some(&pool.pattern),
            backend: Some(backend.authority.as_str()),
            duration: self.started.elapsed(),
            timeout: Some(timeout.key()),
        });
    }

    fn account(&self, status: u16, pool: Option<&Pool>, backend: Option<&Arc<Backend>>) {
        let request = self.request;
        self.proxy.account(
            self.client,
            request.method,
            request.path,
            status,
            pool,
            backend,
            self.started.elapsed(),
        );
    }
}

/// How relaying a response body ended.
enum Relayed {
    /// The client has the whole response; `reusable`: the backend sent nothing past it.
    Whole { reusable: bool },
    /// Either side failed mid-body: the client's connection must close (its response is cut
    /// short) and the backend's too.
    Broken,
    /// As `Broken`, because a side was silent past a timeout.
    TimedOut(Timeout),
}

impl From<Cut> for Relayed {
    fn from(cut: Cut) -> Relayed {
        match cut {
            Cut::Io => Relayed::Broken,
            Cut::TimedOut(timeout) => Relayed::TimedOut(timeout),
        }
    }
}

/// Writes the client's head (in `scratch.out`) and the body behind it, as the head's framing
/// says, reading the backend until the body ends.
async fn relay(
    client: &mut TcpStream,
    upstream: &mut TcpStream,
    head: &ResponseHead,
    scratch: &mut Scratch,
    after_head: &AfterHead,
) -> Relayed {
    match relay_within(client, upstream, head, scratch, after_head).await {
        Ok(relayed) => relayed,
        Err(cut) => cut.into(),
    }
}

/// [`relay`], with every wait bounded by `after_head`.
async fn relay_within(
    client: &mut TcpStream,
    upstream: &mut TcpStream,
    head: &ResponseHead,
    scratch: &mut Scratch,
    after_head: &AfterHead,
) -> Result<Relayed, Cut> {
    let Scratch { response, out, .. } = scratch;
    let first = &response[head.len..];
    match head.framing {
        Framing::Empty => {
            let reusable = first.is_empty();
            after_head.send(client, out).await?;
            Ok(Relayed::Whole { reusable })
        }
        Framing::Length(length) => {
            let take = first
                .len()
                .min(usize::try_from(length).unwrap_or(usize::MAX));
            out.extend_from_slice(&first[..take]);
            let mut reusable = take == first.len();
            after_head.send(client, out).await?;
            let mut left = length - take as u64;
            while left > 0 {
                let read = read_body(upstream, response, after_head).await?;
                let take = read.min(usize::try_from(left).unwrap_or(usize::MAX));
                reusable &= take == read;
                after_head.send(client, &response[..take]).await?;
                left -= take as u64;
            }
            Ok(Relayed::Whole { reusable })
        }
        Framing::Chunked => {
            let mut chunked = Chunked::new();
            let mut start = head.len;
            loop {
                let pending = &response[start..];
                let scanned = chunked.scan(pending);
                let (take, ended) = match scanned {
                    Ok(Scan::More) => (pending.len(), false),
                    Ok(Scan::End(n)) => (n, true),
                    Err(error) => {
                        tracing::warn!(%error, "backend sent a malformed chunked body; response cut short");
                        return Ok(Relayed::Broken);
                    }
                };
                out.extend_from_slice(&pending[..take]);
                after_head.send(client, out).await?;
                out.clear();
                if ended {
                    return Ok(Relayed::Whole {
                        reusable: take == pending.len(),
                    });
                }
                read_body(upstream, response, after_head).await?;
                start = 0;
            }
        }
        Framing::UntilClose => {
            // The backend's close ends the body; the client's connection stays open, so the
            // body goes out chunked.
            let mut first_len = first.len();
            let mut from = head.len;
            loop {
                if first_len > 0 {
                    push_chunk(out, &response[from..from + first_len]);
                    after_head.send(client, out).await?;
                }
                out.clear();
                response.clear();
                response.reserve(BODY_READ);
                match after_head.read(upstream, response).await? {
                    0 => {
                        after_head.send(client, b"0\r\n\r\n").await?;
                        return Ok(Relayed::Whole { reusable: false });
                    }
                    n => {
                        first_len = n;
                        from = 0;
                    }
                }
            }
        }
    }
}

/// Reads the next body bytes into `response` (emptied first); a cut when the backend closed,
/// failed or was silent past `read_timeout` before the body's end.
async fn read_body(
    upstream: &mut TcpStream,
    response: &mut Vec<u8>,
    after_head: &AfterHead,
) -> Result<usize, Cut> {
    response.clear();
    response.reserve(BODY_READ);
    match after_head.read(upstream, response).await? {
        0 => Err(Cut::Io),
        n => Ok(n),
    }
}

/// Appends one chunk of a chunked body.
fn push_chunk(out: &mut Vec<u8>, data: &[u8]) {
    use std::io::Write as _;
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{:x}\r\n", data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}
