//! h1: lb's HTTP/1.x engine, the only one: every HTTP/1.0 and 1.1 request any client sends is
//! read, checked and forwarded here; HTTP/2 is `proxy::h2`'s.
//!
//! One task per client connection reads a request head (httparse, in `h1::wire`, which also
//! decides everything RFC 9112 leaves to the server: `Host`, targets, framing fields), routes,
//! picks, writes the backend's request on a pooled plain socket and relays the response back,
//! with no `http` types, header maps or task hops in between. Request bodies: `Content-Length`
//! ones and chunked ones (decoded and framed again, `h1::chunked`) up to 64 KiB are read whole
//! before a backend is picked (as nginx buffers them: a retry can send them again, a malformed
//! one is refused before any backend sees it); larger ones stream with backpressure, and a
//! backend that answers early stops the upload. `Expect: 100-continue` is answered by lb when it
//! starts reading the body. An accepted upgrade turns the connection into a tunnel.
//!
//! Every request lb refuses gets its answer and the connection closes, so nothing that follows
//! a head in doubt is ever read as a request.
//!
//! Why its own: under wrk, hyper's server and client, the header maps between them and the
//! wake-ups between the client's and the backend connection's tasks were most of lb's own cost
//! per request (callgrind: ~36k instructions a request, ~60% of it in hyper, `http` and the
//! allocator), and two HTTP/1 parsers in one proxy must agree on every byte.
//!
//! It owns nothing shared: it reads the topology snapshot and backend atomics, and keeps plain
//! sockets in each backend's idle set.

use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Sleep;

use super::budget::Ticket;
use super::ClientStream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use super::http1::chunked::{self, Decoder, Output};
use super::http1::wire::{
    self, BodyFraming, ClientSide, Framing, HeadError, Refusal, RequestHead, Response, ResponseHead,
};
use super::sequence::{
    is_idempotent, route, Attempts, Failure, Fields, LocalAnswer, Placed, Proxy, Replay, Routed,
    MAX_BUFFERED_BODY,
};
use super::stall::{self, AfterHead, Cut, Timeout};
use super::timer::{self, until, within};
use super::upstream::client::{self as backend, BODY_READ};
use super::upstream::Upstream;
use super::{Peer, ServerSettings, MAX_HEADER_BYTES};
use crate::config::PoolType;
use crate::topology::{Backend, Pool, Topology};

/// Room kept free in a buffer before each read.
const READ_ROOM: usize = 4096;
/// Buffers that grew past this for one large message are shrunk back afterwards.
const KEEP_CAPACITY: usize = 64 * 1024;
/// What lb says to a client that waits for it before sending its body.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Serves `stream` until it closes, a request asks to close, lb refuses a request, or the
/// budget evicts it while it waits for a head (`ticket`).
///
/// A connection waiting for its client holds only this small future: the state that reads and
/// serves requests (buffers, the exchange, its timers) is boxed per burst of requests, from the
/// client's first byte until the connection is idle again, and dropped then.
pub(super) async fn serve<S: ClientStream>(
    stream: &mut S,
    client: Peer<'_>,
    ticket: &Ticket,
    proxy: &Proxy,
    settings: &ServerSettings,
    drain: &CancellationToken,
) {
    let draining = drain.cancelled();
    tokio::pin!(draining);
    // Until the first byte, a connection gets the header timeout.
    let mut due = HeadDue {
        since: Instant::now(),
        limit: settings.header_timeout,
        may_be_whole: false,
    };
    // One timer for the connection's life, re-armed for each wait on either side
    // (`proxy::timer`). A second, for the backend alone, would save re-filing it when a wait
    // for the next head follows a later backend deadline (`request_timeout` past the header
    // timeout), but would add its 112 bytes to every idle connection.
    let mut timer = pin!(timer::kept());
    loop {
        let deadline = due.since + due.limit;
        if !wait_for_client(stream, ticket, draining.as_mut(), timer.as_mut(), deadline).await
            || !ticket.busy()
        {
            return;
        }
        let burst = Box::pin(serve_burst(
            stream,
            Connection {
                client,
                proxy,
                drain,
                settings,
                input: Vec::new(),
                scratch: Scratch::default(),
                rng: fastrand::Rng::new(),
                timer: timer.as_mut(),
            },
            draining.as_mut(),
            due,
        ));
        let Some(idle_since) = burst.await else {
            return;
        };
        due = HeadDue {
            since: idle_since,
            // The next head is held to the header timeout as well, as hyper's header timer
            // does on a kept-alive connection (and HAProxy's `http-keep-alive`, by default).
            limit: settings.header_timeout.min(settings.idle_timeout),
            may_be_whole: false,
        };
    }
}

/// Waits, holding no buffer, until the client sends something (or closes): `false` when
/// `deadline` passed first, the connection was evicted, lb began draining, or the socket failed.
/// Once a poll finds nothing to read, the connection is idle for the budget: a head with
/// nothing of it sent is what the longest waits are evicted for.
///
/// A plain function around one `poll_fn`, not an `async fn` with a `select!`: the future then
/// holds its four references once, and an idle connection holds this future.
fn wait_for_client<'a, 'd: 'a, S: ClientStream>(
    stream: &'a S,
    ticket: &'a Ticket,
    mut draining: Pin<&'a mut WaitForCancellationFuture<'d>>,
    mut timer: Pin<&'a mut Sleep>,
    deadline: Instant,
) -> impl Future<Output = bool> + use<'a, 'd, S> {
    // Re-armed before the wait, not on it: it needs no state of its own in this future.
    timer.as_mut().reset(deadline.into());
    std::future::poll_fn(move |cx| {
        // The client first: bytes that came with a drain, an eviction or the deadline are
        // still served.
        if let Poll::Ready(ready) = stream.poll_readable(cx) {
            return Poll::Ready(ready.is_ok());
        }
        ticket.idle_now();
        if ticket.poll_evicted(cx).is_ready()
            || draining.as_mut().poll(cx).is_ready()
            || timer.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(false);
        }
        Poll::Pending
    })
}

/// Serves the requests a client sends from its first byte (`due` as the idle wait had it) until
/// it has none in flight: `Some(since when it is idle)`, or `None` when the connection ends.
async fn serve_burst<S: ClientStream>(
    stream: &mut S,
    mut conn: Connection<'_>,
    mut draining: Pin<&mut WaitForCancellationFuture<'_>>,
    mut due: HeadDue,
) -> Option<Instant> {
    let settings = conn.settings;
    let drain = conn.drain;
    loop {
        let read = conn.read_head(stream, draining.as_mut(), &mut due);
        let head = read.await?;
        // Boxed: an exchange's state is most of the engine's, and a connection between a
        // request's end and the next head then holds only what reading a head needs.
        let exchange = Box::pin(conn.serve_request(stream, &head, due.since));
        let Next::Keep { consumed } = exchange.await else {
            if head.body != BodyFraming::None {
                // The client may still be sending a body lb did not read.
                linger(stream).await;
            }
            return None;
        };
        // A drain that began during the exchange made the response say `connection: close`.
        if head.close || drain.is_cancelled() {
            return None;
        }
        if conn.next_request(consumed) {
            // Idle: the burst's state goes (its buffers to this thread's spares) until the
            // client sends again.
            return Some(Instant::now());
        }
        // A head already begun (pipelined) has the header timeout alone.
        due = HeadDue {
            since: Instant::now(),
            limit: settings.header_timeout,
            may_be_whole: true,
        };
    }
}

/// When the next request head is due, and whether the input may hold it already.
struct HeadDue {
    /// Since when the connection waits: the end of the last exchange, then the head's first
    /// byte.
    since: Instant,
    /// How long it may wait from `since`: between requests the shorter of the idle and header
    /// timeouts; once a head has begun, the header timeout.
    limit: Duration,
    /// A head ends at a line feed, so a read without one is not parsed again (a dribbled head
    /// costs one parse per line, not per byte).
    may_be_whole: bool,
}

/// How long a closing connection whose client may still be sending is read and drained.
const LINGER: Duration = Duration::from_secs(1);

/// Closes a connection whose client may still be sending (a refused head, a body lb did not
/// read): the write side first, then what arrives is read and dropped until the client closes,
/// for at most [`LINGER`], so that closing with unread bytes does not reset the connection
/// before the client has read lb's answer (nginx's `lingering_close`).
async fn linger<S: ClientStream>(stream: &mut S) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let deadline = tokio::time::Instant::now() + LINGER;
    // On the heap: an array here would sit in every connection's future, lingering or not.
    let mut sink = vec![0u8; 4096];
    while let Ok(Ok(1..)) = tokio::time::timeout_at(deadline, stream.read(&mut sink)).await {}
}

/// What follows an exchange on the client's connection.
enum Next {
    /// The next request starts after `consumed` bytes of the input.
    Keep {
        consumed: usize,
    },
    Close,
}

enum ClientRead {
    Bytes,
    Closed,
    TimedOut,
    Draining,
}

/// Reads more of the client's bytes, giving up at `deadline`, or on a drain (when given one)
/// while no request has begun. The deadline's timer is registered only when the read has to
/// wait: a request that arrives whole costs none. A connection that holds no buffers (it was
/// idle) takes them, from this thread's spares when there are any, once its client has sent
/// something.
async fn read_more<S: ClientStream>(
    stream: &mut S,
    input: &mut Vec<u8>,
    scratch: &mut Scratch,
    mut draining: Option<Pin<&mut WaitForCancellationFuture<'_>>>,
    timer: Pin<&mut Sleep>,
    deadline: Instant,
) -> ClientRead {
    let drain_watched = draining.is_some() && input.is_empty();
    tokio::select! {
        biased;
        read = async {
            if input.capacity() == 0 {
                stream.wait_readable().await?;
                spare::take(input, scratch);
            }
            stream.read_ready(input, READ_ROOM).await
        } => match read {
            Ok(1..) => ClientRead::Bytes,
            Ok(0) | Err(_) => ClientRead::Closed,
        },
        () = async {
            match draining.as_mut() {
                Some(draining) => draining.as_mut().await,
                None => std::future::pending().await,
            }
        }, if drain_watched => ClientRead::Draining,
        () = until(timer, deadline) => ClientRead::TimedOut,
    }
}

/// A connection's reusable buffers besides its input: allocated once, reused for every request.
#[derive(Default)]
struct Scratch {
    /// The backend's header lines for the current request.
    headers: Vec<u8>,
    /// The request as the backend gets it.
    request: Vec<u8>,
    /// A chunked request body read whole, framed again for the backend.
    body: Vec<u8>,
    /// Client bytes read while a body streams, not yet sent on; after the body, the start of
    /// the next request.
    body_in: Vec<u8>,
    /// The backend's bytes.
    response: Vec<u8>,
    /// What goes to the client (or, while a body streams, the backend) next.
    out: Vec<u8>,
}

/// The buffers of idle connections, kept per thread for the next connection that reads: a kept-alive
/// connection holds no buffer between requests (so an idle one costs its task and socket only),
/// and under load a request takes warm buffers instead of allocating them.
mod spare {
    use std::cell::RefCell;

    use super::Scratch;

    /// Buffer sets kept per thread; more are freed.
    const MAX_SETS: usize = 32;
    /// A buffer that grew past this is freed rather than kept.
    const MAX_CAPACITY: usize = 16 * 1024;

    thread_local! {
        static SETS: RefCell<Vec<(Vec<u8>, Scratch)>> = const { RefCell::new(Vec::new()) };
    }

    /// Fills `input` and `scratch` (both empty, with nothing allocated) with a spare set, if
    /// this thread has one.
    pub(super) fn take(input: &mut Vec<u8>, scratch: &mut Scratch) {
        let set = SETS
            .try_with(|sets| sets.try_borrow_mut().ok()?.pop())
            .ok()
            .flatten();
        if let Some((spare_input, spare_scratch)) = set {
            *input = spare_input;
            *scratch = spare_scratch;
        }
    }

    /// Takes the buffers of `input` and `scratch` (their contents dropped), leaving both with
    /// nothing allocated, and keeps them for this thread's next [`take`] while there is room.
    pub(super) fn give(input: &mut Vec<u8>, scratch: &mut Scratch) {
        let mut input = std::mem::take(input);
        let mut scratch = std::mem::take(scratch);
        if input.capacity() == 0 {
            return;
        }
        for buffer in scratch.buffers().into_iter().chain([&mut input]) {
            buffer.clear();
            if buffer.capacity() > MAX_CAPACITY {
                *buffer = Vec::new();
            }
        }
        let _ = SETS.try_with(|sets| {
            if let Ok(mut sets) = sets.try_borrow_mut() {
                if sets.len() < MAX_SETS {
                    sets.push((input, scratch));
                }
            }
        });
    }
}

impl Scratch {
    fn buffers(&mut self) -> [&mut Vec<u8>; 6] {
        [
            &mut self.headers,
            &mut self.request,
            &mut self.body,
            &mut self.body_in,
            &mut self.response,
            &mut self.out,
        ]
    }

    /// Gives back what one large message grew.
    fn shrink(&mut self) {
        for buffer in [
            &mut self.headers,
            &mut self.request,
            &mut self.body,
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
    client: Peer<'p>,
    proxy: &'p Proxy,
    drain: &'p CancellationToken,
    settings: &'p ServerSettings,
    /// The client's bytes not yet served; a served head is removed once its exchange is over.
    input: Vec<u8>,
    scratch: Scratch,
    rng: fastrand::Rng,
    /// The connection's kept timer (`proxy::timer`), for its waits on the client and on the
    /// backend alike.
    timer: Pin<&'p mut Sleep>,
}

impl Drop for Connection<'_> {
    fn drop(&mut self) {
        self.input.clear();
        spare::give(&mut self.input, &mut self.scratch);
    }
}

/// The request being served, borrowed from the connection's input.
struct Request<'a> {
    /// The head's bytes through its blank line, for the few fields read after parsing.
    head: &'a [u8],
    method: &'a Method,
    /// What the backend's request line gets as its target (see `RequestHead::target`).
    target: &'a [u8],
    path: &'a str,
    /// The host the request is for; empty for an HTTP/1.0 request without one.
    host: &'a str,
    has_host: bool,
    http11: bool,
    /// The client asked to close after this exchange.
    close: bool,
}

impl Request<'_> {
    fn is_head(&self) -> bool {
        *self.method == Method::HEAD
    }
}

/// The canary split's fields (a sticky key, a force header) are read again from the head's
/// bytes, by the parser that read them first, only for a pool whose canary asks for one: the
/// parse that writes the backend's head keeps no field it does not use.
impl Fields for Request<'_> {
    fn find<'a, T>(&'a self, name: &str, f: impl FnMut(&'a [u8]) -> Option<T>) -> Option<T> {
        find_in_head(self.head, name, f)
    }
}

/// A request head's bytes (through its blank line) read as [`Fields`], for the policy that
/// reads fields before the request's other parts are wanted (a pool's `rate_limit`).
struct HeadFields<'h>(&'h [u8]);

impl Fields for HeadFields<'_> {
    fn find<'a, T>(&'a self, name: &str, f: impl FnMut(&'a [u8]) -> Option<T>) -> Option<T> {
        find_in_head(self.0, name, f)
    }
}

/// [`Fields::find`] over a head's bytes, parsed again.
fn find_in_head<'a, T>(
    head: &'a [u8],
    name: &str,
    f: impl FnMut(&'a [u8]) -> Option<T>,
) -> Option<T> {
    let mut fields = [httparse::EMPTY_HEADER; wire::MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut fields);
    match parsed.parse(head) {
        Ok(httparse::Status::Complete(_)) => parsed
            .headers
            .iter()
            .filter(|field| field.name.eq_ignore_ascii_case(name))
            .map(|field| field.value)
            .find_map(f),
        _ => None,
    }
}

/// Where a request's body is, once the engine has looked at it.
enum Body {
    /// No body, or one read whole: the `in_input` bytes after its head, sent as they are
    /// (`Content-Length`, or chunked already in lb's framing), or, when `framed`, `scratch.body`
    /// (chunked, framed again).
    Whole { in_input: usize, framed: bool },
    /// Larger: the rest comes from the client while the backend's request is sent.
    Streamed(Stream),
}

/// A request body being streamed: what is left of it.
enum Stream {
    Length(u64),
    Chunked(Decoder),
}

/// The request `head` describes, borrowed from the input it was read from.
fn request<'a>(input: &'a [u8], head: &'a RequestHead) -> Request<'a> {
    let path = &input[head.target.start..head.path_end];
    Request {
        head: &input[..head.len],
        method: &head.method,
        target: &input[head.target.clone()],
        // The head's text was checked to be visible ASCII; the fallbacks are never used.
        path: if path.is_empty() {
            "/"
        } else {
            std::str::from_utf8(path).unwrap_or("/")
        },
        host: head
            .host
            .clone()
            .and_then(|h| std::str::from_utf8(&input[h]).ok())
            .unwrap_or(""),
        has_host: head.host.is_some(),
        http11: head.http11,
        close: head.close,
    }
}

impl<'p> Connection<'p> {
    /// Reads until the input starts with a whole request head, and parses it (writing the
    /// backend's header lines into `scratch.headers`). `None`: the connection ends (the client
    /// closed or was silent past `due`, lb is draining, or a refused head was answered).
    async fn read_head<S: ClientStream>(
        &mut self,
        stream: &mut S,
        mut draining: Pin<&mut WaitForCancellationFuture<'_>>,
        due: &mut HeadDue,
    ) -> Option<RequestHead> {
        loop {
            if due.may_be_whole {
                let headers = &mut self.scratch.headers;
                let client_ip = self.client.ip.as_bytes();
                let trust = self.proxy.peer_trust(self.client.addr.ip());
                let keep = trust.keeps_forwarded_for();
                match wire::parse_request(&self.input, client_ip, keep, S::HTTPS, headers) {
                    Ok(Some(head)) if head.len <= MAX_HEADER_BYTES => return Some(head),
                    Ok(Some(_)) => {
                        self.refuse(stream, wire::HEAD_TOO_LARGE).await;
                        return None;
                    }
                    Ok(None) => {}
                    Err(HeadError::LaterMinor(at)) => {
                        self.input[at] = b'1';
                        continue;
                    }
                    Err(HeadError::Refused(refusal)) => {
                        self.refuse(stream, refusal).await;
                        return None;
                    }
                }
            }
            if self.input.len() >= MAX_HEADER_BYTES {
                self.refuse(stream, wire::HEAD_TOO_LARGE).await;
                return None;
            }
            let before = self.input.len();
            let read = read_more(
                stream,
                &mut self.input,
                &mut self.scratch,
                Some(draining.as_mut()),
                self.timer.as_mut(),
                due.since + due.limit,
            );
            match read.await {
                ClientRead::Bytes => {}
                // A head begun and cut off is told why; a connection that asked nothing is
                // closed without a word.
                ClientRead::TimedOut if before > 0 => {
                    self.refuse(stream, wire::HEAD_TIMED_OUT).await;
                    return None;
                }
                ClientRead::Closed | ClientRead::TimedOut | ClientRead::Draining => return None,
            }
            if before == 0 {
                due.since = Instant::now();
                due.limit = self.settings.header_timeout;
            }
            due.may_be_whole = self.input[before..].contains(&b'\n');
        }
    }

    /// Readies the connection for its next request once an exchange kept it: the served
    /// request's `consumed` bytes go. `true`: nothing of the next request has come yet (the
    /// connection is idle; its buffers go back when the connection's burst ends).
    fn next_request(&mut self, consumed: usize) -> bool {
        self.input.drain(..consumed);
        // Bytes read past a streamed body belong to the next request.
        self.input.append(&mut self.scratch.body_in);
        if self.input.is_empty() {
            return true;
        }
        self.scratch.shrink();
        if self.input.capacity() > KEEP_CAPACITY {
            self.input.shrink_to(READ_ROOM);
        }
        false
    }

    /// Answers a head lb refuses, then the connection closes.
    async fn refuse<S: ClientStream>(&mut self, stream: &mut S, refusal: Refusal) {
        self.scratch.out.clear();
        let closing = ClientSide {
            http11: true,
            close: true,
        };
        wire::push_local_response(
            &mut self.scratch.out,
            refusal.status,
            &[],
            refusal.text.as_bytes(),
            false,
            closing,
        );
        let method = Method::from_bytes(b"-").unwrap_or_default();
        self.proxy.account(
            self.client,
            &method,
            "-",
            refusal.status.as_u16(),
            Placed::nowhere(),
            Duration::ZERO,
        );
        let _ = stream.write_all(&self.scratch.out).await;
        linger(stream).await;
    }

    /// Serves one request whose head is at the start of the input.
    async fn serve_request<S: ClientStream>(
        &mut self,
        stream: &mut S,
        head: &RequestHead,
        head_started: Instant,
    ) -> Next {
        let started = Instant::now();
        let topology = self.proxy.topology.load_full();
        let pool = match self.route::<S>(head, &topology) {
            Routed::Pool(pool) => pool,
            Routed::Local(answer) => {
                return self
                    .answer(stream, head, &answer, started, Placed::nowhere())
                    .await
            }
        };
        if pool.rate_limit.is_some() {
            // Only the head's bytes: a key read from the fields parses them, `ip` does not.
            let fields = HeadFields(&self.input[..head.len]);
            let limited = self
                .proxy
                .over_rate_limit(pool, self.client, &fields, started);
            if let Some(answer) = limited {
                let placed = Placed::refused(pool);
                return self.answer(stream, head, &answer, started, placed).await;
            }
        }

        // The body: read whole when small, else streamed from the client during the exchange.
        let body = match self.take_body(stream, head, head_started).await {
            Ok(body) => body,
            Err(refusal) => {
                let request = request(&self.input, head);
                let exchange = self.exchange(&request, started);
                if let Some(refusal) = refusal {
                    let out = &mut self.scratch.out;
                    out.clear();
                    exchange.push_local(out, refusal.status, &[], refusal.text, true);
                    let _ = stream.write_all(out).await;
                    exchange.account(refusal.status.as_u16(), Placed::refused(pool));
                }
                return Next::Close;
            }
        };
        let (whole, streamed, consumed) = match body {
            Body::Whole { in_input, framed } => {
                let whole = if framed {
                    std::mem::take(&mut self.scratch.body)
                } else {
                    Vec::new()
                };
                (Some((whole, framed, in_input)), None, head.len + in_input)
            }
            Body::Streamed(rest) => (None, Some(rest), self.input.len()),
        };
        let Connection {
            client,
            proxy,
            drain,
            settings,
            input,
            scratch,
            rng,
            timer,
            ..
        } = self;
        let request = request(input, head);
        let exchange = Exchange {
            proxy,
            drain,
            settings,
            client: *client,
            request: &request,
            started,
        };
        let body_bytes: Option<&[u8]> = whole.as_ref().map(|(framed_body, framed, in_input)| {
            if *framed {
                &framed_body[..]
            } else {
                &input[head.len..head.len + in_input]
            }
        });
        let upgrade = head.upgrade.is_some();
        let forwarded = exchange
            .forward(
                stream,
                pool,
                scratch,
                rng,
                timer.as_mut(),
                body_bytes,
                streamed,
                upgrade,
            )
            .await;
        if let Some((framed_body, true, _)) = whole {
            // The buffer goes back for the next request.
            self.scratch.body = framed_body;
        }
        match forwarded {
            Forwarded::Keep => Next::Keep { consumed },
            Forwarded::Close => Next::Close,
            Forwarded::Tunnel(upstream, in_flight) => {
                self.tunnel(stream, upstream, in_flight, consumed).await;
                Next::Close
            }
        }
    }

    /// Where the request whose head is `head` goes: a pool of `topology`, or an answer of lb's
    /// own (an HTTPS redirect, 404, 405, a route's redirect).
    fn route<'t, S: ClientStream>(&self, head: &RequestHead, topology: &'t Topology) -> Routed<'t> {
        let request = request(&self.input, head);
        // `OPTIONS *` is routed as its host's `/`.
        let (path, query) = if request.path == "*" {
            ("/", None)
        } else {
            let query = &request.target[request.path.len().min(request.target.len())..];
            let query = std::str::from_utf8(query)
                .ok()
                .and_then(|q| q.strip_prefix('?'));
            (request.path, query)
        };
        match self
            .proxy
            .https_redirect(S::HTTPS, request.host, path, query)
        {
            Some(answer) => Routed::Local(answer),
            None => route(topology, request.method, request.host, path, query),
        }
    }

    /// Sends lb's own `answer` to the request whose head is `head`, accounted as `placed` says.
    /// A body not read yet is not read at all: the connection closes after the answer.
    async fn answer<S: ClientStream>(
        &mut self,
        stream: &mut S,
        head: &RequestHead,
        answer: &LocalAnswer,
        started: Instant,
        placed: Placed<'_>,
    ) -> Next {
        let body_in_input = match head.body {
            BodyFraming::None => Some(0),
            BodyFraming::Length(n) => usize::try_from(n)
                .ok()
                .filter(|&n| self.input.len() - head.len >= n),
            BodyFraming::Chunked => None,
        };
        let request = request(&self.input, head);
        let exchange = self.exchange(&request, started);
        let out = &mut self.scratch.out;
        out.clear();
        let extra: &[(&[u8], &[u8])] = match &answer.header {
            Some((name, value)) => &[(name.as_bytes(), value.as_bytes())],
            None => &[],
        };
        let status = answer.status;
        exchange.push_local(out, status, extra, answer.text, body_in_input.is_none());
        exchange.account(status.as_u16(), placed);
        match (stream.write_all(out).await, body_in_input) {
            (Ok(()), Some(n)) => Next::Keep {
                consumed: head.len + n,
            },
            _ => Next::Close,
        }
    }

    /// Carries an accepted upgrade's bytes both ways until either side closes or the tunnel
    /// idles past `tunnel_idle_timeout`; the client's bytes past `consumed` go first.
    async fn tunnel<S: ClientStream>(
        &self,
        stream: &mut S,
        mut upstream: Upstream,
        in_flight: crate::topology::InFlight,
        consumed: usize,
    ) {
        let early = &self.input[consumed..];
        if !early.is_empty() && upstream.write_all(early).await.is_err() {
            return;
        }
        let metrics = &self.proxy.metrics;
        metrics.upgrades_open.fetch_add(1, Ordering::Relaxed);
        let copied = stall::tunnel(&mut *stream, &mut upstream, &self.proxy.after_head).await;
        metrics.upgrades_open.fetch_sub(1, Ordering::Relaxed);
        let backend = &in_flight.backend().addr;
        match copied {
            Ok((up, down)) => tracing::debug!(%backend, up, down, "tunnel closed"),
            Err(Cut::TimedOut(timeout)) => self.proxy.timed_out(timeout, Some(in_flight.backend())),
            Err(Cut::Io) => tracing::debug!(%backend, "tunnel ended with an error"),
        }
    }

    fn exchange<'a>(&self, request: &'a Request<'a>, started: Instant) -> Exchange<'a>
    where
        'p: 'a,
    {
        Exchange {
            proxy: self.proxy,
            drain: self.drain,
            settings: self.settings,
            client: self.client,
            request,
            started,
        }
    }

    /// Reads a small body whole (into the input, or decoded into `scratch.body`), or prepares a
    /// larger one for streaming (its bytes read so far moved to `scratch.body_in`). `Err`: the
    /// connection closes, after the refusal if there is one (a malformed chunked body).
    async fn take_body<S: ClientStream>(
        &mut self,
        stream: &mut S,
        head: &RequestHead,
        head_started: Instant,
    ) -> Result<Body, Option<Refusal>> {
        let deadline = head_started + self.settings.header_timeout;
        let nothing_yet = self.input.len() == head.len;
        if head.expect_continue && nothing_yet && stream.write_all(CONTINUE).await.is_err() {
            return Err(None);
        }
        match head.body {
            BodyFraming::None => Ok(Body::Whole {
                in_input: 0,
                framed: false,
            }),
            BodyFraming::Length(n) => match usize::try_from(n) {
                Ok(n) if n <= MAX_BUFFERED_BODY => {
                    // Room for the whole body at once, not doubled read by read.
                    let room = head.len + n + READ_ROOM;
                    self.input.reserve(room.saturating_sub(self.input.len()));
                    while self.input.len() < head.len + n {
                        self.read_body(stream, deadline).await?;
                    }
                    Ok(Body::Whole {
                        in_input: n,
                        framed: false,
                    })
                }
                _ => {
                    self.scratch.body_in.clear();
                    self.scratch
                        .body_in
                        .extend_from_slice(&self.input[head.len..]);
                    self.input.truncate(head.len);
                    Ok(Body::Streamed(Stream::Length(n)))
                }
            },
            BodyFraming::Chunked => {
                // Checked as it arrives, framed again only if it is not already in lb's framing.
                let mut decoder = Decoder::new(Output::Check);
                let mut at = head.len;
                loop {
                    let decoded = decoder
                        .decode(&self.input[at..], &mut self.scratch.body)
                        .map_err(|_| Some(wire::BAD_CHUNKED))?;
                    at += decoded.consumed;
                    let in_input = at - head.len;
                    if decoded.ended {
                        let framed = !decoder.verbatim();
                        if framed {
                            self.frame_again(head.len, at)?;
                        }
                        return Ok(Body::Whole { in_input, framed });
                    }
                    if in_input > MAX_BUFFERED_BODY {
                        // Too large to hold: what is framed goes first, the rest streams.
                        let decoder = self.frame_again(head.len, at)?;
                        self.scratch.body_in.clear();
                        self.scratch.body_in.extend_from_slice(&self.input[at..]);
                        self.input.truncate(at);
                        return Ok(Body::Streamed(Stream::Chunked(decoder)));
                    }
                    // Room for the whole of a body that may be held, allocated once rather than
                    // doubled (and copied) read by read.
                    let room = head.len + MAX_BUFFERED_BODY + READ_ROOM;
                    self.input.reserve(room.saturating_sub(self.input.len()));
                    self.read_body(stream, deadline).await?;
                }
            }
        }
    }

    /// Frames the chunked body at `input[from..to]` (checked already) again into `scratch.body`;
    /// returns the decoder, ready for what follows.
    fn frame_again(&mut self, from: usize, to: usize) -> Result<Decoder, Option<Refusal>> {
        let mut decoder = Decoder::new(Output::Chunked);
        self.scratch.body.clear();
        match decoder.decode(&self.input[from..to], &mut self.scratch.body) {
            Ok(decoded) if decoded.consumed == to - from => Ok(decoder),
            _ => Err(Some(wire::BAD_CHUNKED)),
        }
    }

    /// Reads more of a body held to its head's deadline into the input.
    async fn read_body<S: ClientStream>(
        &mut self,
        stream: &mut S,
        deadline: Instant,
    ) -> Result<(), Option<Refusal>> {
        let read = read_more(
            stream,
            &mut self.input,
            &mut self.scratch,
            None,
            self.timer.as_mut(),
            deadline,
        );
        match read.await {
            ClientRead::Bytes => Ok(()),
            ClientRead::Closed | ClientRead::TimedOut | ClientRead::Draining => Err(None),
        }
    }
}

/// How an exchange left the client's connection.
enum Forwarded {
    Keep,
    Close,
    /// The backend accepted an upgrade: both sockets are a tunnel from here on.
    Tunnel(Upstream, crate::topology::InFlight),
}

/// One request's way through a pool, borrowed from its connection.
struct Exchange<'a> {
    proxy: &'a Proxy,
    drain: &'a CancellationToken,
    settings: &'a ServerSettings,
    client: Peer<'a>,
    request: &'a Request<'a>,
    started: Instant,
}

/// Why no final response head came from the backend.
enum HeadWait {
    /// The backend failed or answered malformed: the retry rules decide.
    Failed(backend::ExchangeError),
    /// The backend sent no head within the request timeout.
    TimedOut,
    /// The client left while a 1xx went to it.
    ClientGone,
}

/// How streaming a request body to the backend ended.
enum Streamed {
    /// The whole body went.
    Sent,
    /// The backend answered (or closed) before the body's end; the rest is not sent.
    Early,
}

/// Why a request body could not be streamed on.
enum StreamError {
    /// The client left or went silent past the header timeout.
    Client,
    Malformed,
    /// The backend took no byte for its request timeout.
    Backend,
}

impl Exchange<'_> {
    /// Forwards to a backend of `pool` by the retry rules both protocols share
    /// (`sequence::Attempts`), relays the response and accounts for it. `whole`: a body read
    /// whole (framed as the backend gets it); `streamed`: one that comes from the client as the
    /// exchange goes.
    #[allow(clippy::too_many_arguments)]
    async fn forward<S: ClientStream>(
        &self,
        client: &mut S,
        pool: &Pool,
        scratch: &mut Scratch,
        rng: &mut fastrand::Rng,
        mut timer: Pin<&mut Sleep>,
        whole: Option<&[u8]>,
        mut streamed: Option<Stream>,
        upgrade: bool,
    ) -> Forwarded {
        let request = self.request;
        let mut attempts = Attempts::default();
        // Bytes of a streamed body were sent: the request cannot go again, and the client's
        // connection closes unless the body was sent whole.
        let mut body_started = false;
        let mut body_whole = streamed.is_none();
        let failure = loop {
            let backend = match attempts.pick(pool, request, rng) {
                Ok(backend) => backend,
                Err(failure) => break failure,
            };
            self.push_backend_request(&mut scratch.request, &scratch.headers, &backend);

            let in_flight = backend.start_request();
            // Only P2C-EWMA reads an attempt's latency.
            let attempt_started = (pool.pool_type == PoolType::P2cEwma).then(Instant::now);
            let mut deadline = Instant::now() + pool.request_timeout;
            let send =
                backend::send_request(&backend, &scratch.request, whole.unwrap_or(&[]), pool);
            let mut upstream = match within(timer.as_mut(), deadline, send).await {
                Some(Ok(upstream)) => upstream,
                Some(Err(error)) => {
                    let replay = Replay {
                        unsent: true,
                        sent: whole.is_some() && is_idempotent(request.method),
                    };
                    match attempts.failed(pool, backend, &error, replay) {
                        Some(failure) => break failure,
                        None => continue,
                    }
                }
                None => break attempts.timed_out(pool, backend),
            };
            if let Some(rest) = streamed.as_mut() {
                body_started = true;
                match self
                    .stream_request_body(client, &mut upstream, rest, scratch, pool)
                    .await
                {
                    Ok(Streamed::Sent) => body_whole = true,
                    Ok(Streamed::Early) => {}
                    Err(error) => {
                        // The backend sees a cut-off request (the socket closes with it).
                        drop(upstream);
                        drop(in_flight);
                        let placed = Placed::answered(pool, attempts.side(), &backend);
                        self.answer_stream_error(client, error, scratch, placed)
                            .await;
                        return Forwarded::Close;
                    }
                }
                streamed = None;
                deadline = Instant::now() + pool.request_timeout;
            }

            let close = request.close || !body_whole;
            let read = self.read_final_head(
                client,
                &mut upstream,
                scratch,
                close,
                upgrade,
                timer.as_mut(),
                deadline,
            );
            let head = match read.await {
                Ok(head) => head,
                Err(HeadWait::ClientGone) => return Forwarded::Close,
                Err(HeadWait::TimedOut) => break attempts.timed_out(pool, backend),
                Err(HeadWait::Failed(error)) => {
                    let replay = Replay {
                        unsent: false,
                        sent: !body_started && is_idempotent(request.method),
                    };
                    match attempts.failed(pool, backend, &error, replay) {
                        Some(failure) => break failure,
                        None => continue,
                    }
                }
            };
            if let Some(started) = attempt_started {
                backend.latency.observe(started.elapsed());
            }
            self.account(
                head.status,
                Placed::answered(pool, attempts.side(), &backend),
            );
            return self
                .deliver(
                    client, upstream, in_flight, &head, scratch, close, pool, &backend,
                )
                .await;
        };
        self.answer_failure(client, &failure, scratch, pool, !body_whole)
            .await
    }

    /// Writes into `out` the head of the request `backend` gets: the request line (its
    /// `url_path` joined), the header lines already written for this request (`headers`), and a
    /// `Host` for a request without one. A body read whole goes behind it, uncopied
    /// (`backend::send_request`).
    fn push_backend_request(&self, out: &mut Vec<u8>, headers: &[u8], backend: &Backend) {
        let request = self.request;
        out.clear();
        wire::push_request_line(out, request.method, &backend.addr.url_path, request.target);
        out.extend_from_slice(headers);
        if !request.has_host {
            // An HTTP/1.0 request without a host: name the backend, as HTTP/1.1 requires.
            wire::push_field(out, b"host", backend.authority.as_str().as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }

    /// Streams the rest of a large request body to the backend (see [`stream_body`]).
    async fn stream_request_body<S: ClientStream>(
        &self,
        client: &mut S,
        upstream: &mut Upstream,
        rest: &mut Stream,
        scratch: &mut Scratch,
        pool: &Pool,
    ) -> Result<Streamed, StreamError> {
        // What a chunked body had framed before it turned out large goes first.
        std::mem::swap(&mut scratch.out, &mut scratch.body);
        scratch.body.clear();
        stream_body(
            client,
            upstream,
            rest,
            &mut scratch.body_in,
            &mut scratch.out,
            self.settings.header_timeout,
            pool.request_timeout,
        )
        .await
    }

    /// Answers (a malformed chunked body gets its 400) and accounts for a request whose body
    /// could not be streamed on; the connection then closes.
    async fn answer_stream_error<S: ClientStream>(
        &self,
        client: &mut S,
        error: StreamError,
        scratch: &mut Scratch,
        placed: Placed<'_>,
    ) {
        let status = match error {
            StreamError::Malformed => {
                let refusal = wire::BAD_CHUNKED;
                scratch.out.clear();
                self.push_local(&mut scratch.out, refusal.status, &[], refusal.text, true);
                let _ = client.write_all(&scratch.out).await;
                refusal.status
            }
            StreamError::Client => StatusCode::BAD_REQUEST,
            StreamError::Backend => StatusCode::GATEWAY_TIMEOUT,
        };
        // lb's answer either way; only a backend's silence counts against its side.
        let side = matches!(error, StreamError::Backend)
            .then_some(placed.side)
            .flatten();
        self.account(
            status.as_u16(),
            Placed {
                side,
                by_lb: true,
                ..placed
            },
        );
    }

    /// Reads the backend's final response head by `deadline`, writing the client's head for it
    /// into `scratch.out`; a 1xx before it goes on to an HTTP/1.1 client. `close`: the client's
    /// connection closes after this response.
    #[allow(clippy::too_many_arguments)]
    async fn read_final_head<S: ClientStream>(
        &self,
        client: &mut S,
        upstream: &mut Upstream,
        scratch: &mut Scratch,
        close: bool,
        upgrade: bool,
        mut timer: Pin<&mut Sleep>,
        deadline: Instant,
    ) -> Result<ResponseHead, HeadWait> {
        let request = self.request;
        let drain = self.drain;
        let http11 = request.http11;
        let Scratch { response, out, .. } = scratch;
        response.clear();
        loop {
            out.clear();
            let mut emit = |head: &wire::FinalHead<'_, '_>| {
                let side = ClientSide {
                    http11,
                    // A drain begun while the backend worked closes the connection after this
                    // response.
                    close: close || drain.is_cancelled() || closes_client(http11, head.framing),
                };
                wire::push_client_head(out, head, side)
            };
            let read =
                backend::read_head(upstream, response, request.is_head(), upgrade, &mut emit);
            let read = within(timer.as_mut(), deadline, read).await;
            match read.ok_or(HeadWait::TimedOut)?.map_err(HeadWait::Failed)? {
                Response::Informational { len, status } => {
                    if http11 && status != 100 {
                        out.clear();
                        wire::push_informational(out, &response[..len]);
                        if client.write_all(out).await.is_err() {
                            return Err(HeadWait::ClientGone);
                        }
                    }
                    response.drain(..len);
                }
                Response::Final(head, ()) => {
                    let check = backend::check_first_chunk(upstream, response, &head);
                    let checked = within(timer.as_mut(), deadline, check).await;
                    checked
                        .ok_or(HeadWait::TimedOut)?
                        .map_err(HeadWait::Failed)?;
                    return Ok(head);
                }
            }
        }
    }

    /// Sends the client the response whose head is in `scratch.out`: the body relayed, or the
    /// connection turned into a tunnel; the backend's connection goes back to its idle set
    /// when the response ended cleanly on it.
    #[allow(clippy::too_many_arguments)]
    async fn deliver<S: ClientStream>(
        &self,
        client: &mut S,
        mut upstream: Upstream,
        in_flight: crate::topology::InFlight,
        head: &ResponseHead,
        scratch: &mut Scratch,
        close: bool,
        pool: &Pool,
        backend: &Arc<Backend>,
    ) -> Forwarded {
        let http11 = self.request.http11;
        if head.framing == Framing::Tunnel {
            let first = &scratch.response[head.len..];
            scratch.out.extend_from_slice(first);
            if client.write_all(&scratch.out).await.is_err() {
                return Forwarded::Close;
            }
            return Forwarded::Tunnel(upstream, in_flight);
        }
        let after_head = &self.proxy.after_head;
        let relayed = relay(client, &mut upstream, head, scratch, http11, after_head)
            .await
            .unwrap_or_else(Relayed::from);
        drop(in_flight);
        match relayed {
            Relayed::Whole { reusable } => {
                if reusable && head.reusable {
                    backend.connections.put_stream(upstream);
                }
                if close || closes_client(http11, head.framing) {
                    Forwarded::Close
                } else {
                    Forwarded::Keep
                }
            }
            Relayed::Broken => Forwarded::Close,
            Relayed::TimedOut(timeout) => {
                self.proxy.timed_out(timeout, Some(backend));
                self.account_timeout(head.status, pool, backend, timeout);
                Forwarded::Close
            }
        }
    }

    /// Answers a request no backend answered with lb's own response (`failure`); `close`
    /// closes the connection after it (a request body was not read or sent whole).
    async fn answer_failure<S: ClientStream>(
        &self,
        client: &mut S,
        failure: &Failure,
        scratch: &mut Scratch,
        pool: &Pool,
        close: bool,
    ) -> Forwarded {
        scratch.out.clear();
        self.push_local(&mut scratch.out, failure.status, &[], failure.text, close);
        self.account(failure.status.as_u16(), Placed::failed(pool, failure));
        match client.write_all(&scratch.out).await {
            Ok(()) if !close && !self.request.close => Forwarded::Keep,
            _ => Forwarded::Close,
        }
    }

    /// A short answer lb makes itself, in `out`; `close` closes the connection after it.
    fn push_local(
        &self,
        out: &mut Vec<u8>,
        status: StatusCode,
        extra: &[(&[u8], &[u8])],
        text: &str,
        close: bool,
    ) {
        let request = self.request;
        let side = ClientSide {
            http11: request.http11,
            close: close || request.close || self.drain.is_cancelled(),
        };
        wire::push_local_response(out, status, extra, text.as_bytes(), request.is_head(), side);
    }

    /// The access line of a response cut short by `timeout` (its first line went at the head).
    fn account_timeout(&self, status: u16, pool: &Pool, backend: &Backend, timeout: Timeout) {
        let request = self.request;
        self.proxy.access_log.write(&crate::access_log::Line {
            client: self.client.addr,
            client_cert: self.client.cert,
            method: request.method,
            path: request.path,
            status,
            pool: Some(&pool.pattern),
            backend: Some(backend.authority.as_str()),
            duration: self.started.elapsed(),
            timeout: Some(timeout.key()),
            error: None,
        });
    }

    fn account(&self, status: u16, placed: Placed<'_>) {
        let request = self.request;
        let elapsed = self.started.elapsed();
        let (method, path) = (request.method, request.path);
        self.proxy
            .account(self.client, method, path, status, placed, elapsed);
    }
}

/// Whether a response with `framing` ends the client's connection: an HTTP/1.0 client takes a
/// body of unknown length only as one that ends with the connection.
fn closes_client(http11: bool, framing: Framing) -> bool {
    !http11 && matches!(framing, Framing::Chunked | Framing::UntilClose)
}

/// Sends the rest of a request body from the client to the backend as it arrives, framed as the
/// backend gets it (`out` holds what goes first), and stops when the backend answers early.
/// Reads from the client only when what it sent before has gone: a backend that reads slowly
/// slows the client down.
async fn stream_body<S: ClientStream>(
    client: &mut S,
    upstream: &mut Upstream,
    rest: &mut Stream,
    body_in: &mut Vec<u8>,
    out: &mut Vec<u8>,
    client_idle: Duration,
    backend_idle: Duration,
) -> Result<Streamed, StreamError> {
    let mut written = 0;
    loop {
        if written == out.len() {
            out.clear();
            written = 0;
            let ended = match rest {
                Stream::Length(left) => {
                    let take = body_in
                        .len()
                        .min(usize::try_from(*left).unwrap_or(usize::MAX));
                    if take == body_in.len() {
                        // All of it is body: the buffers trade places instead of copying.
                        std::mem::swap(out, body_in);
                    } else {
                        out.extend_from_slice(&body_in[..take]);
                        body_in.drain(..take);
                    }
                    *left -= take as u64;
                    *left == 0
                }
                Stream::Chunked(decoder) => {
                    let decoded = decoder
                        .decode(body_in, out)
                        .map_err(|_| StreamError::Malformed)?;
                    body_in.drain(..decoded.consumed);
                    decoded.ended
                }
            };
            if out.is_empty() {
                if ended {
                    return Ok(Streamed::Sent);
                }
                tokio::select! {
                    biased;
                    () = upstream.answered() => return Ok(Streamed::Early),
                    read = client.read_ready(body_in, BODY_READ) => {
                        if !matches!(read, Ok(1..)) {
                            return Err(StreamError::Client);
                        }
                    }
                    () = tokio::time::sleep(client_idle) => return Err(StreamError::Client),
                }
                continue;
            }
        }
        tokio::select! {
            biased;
            sent = upstream.write_some(&out[written..]) => match sent {
                Ok(Some(n)) => written += n,
                // An early answer; or a failed write, and reading the answer tells what the
                // backend made of it.
                Ok(None) | Err(_) => return Ok(Streamed::Early),
            },
            () = tokio::time::sleep(backend_idle) => return Err(StreamError::Backend),
        }
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
/// says, reading the backend until the body ends. A chunked body is decoded and framed again
/// (for an HTTP/1.0 client: its data only, ended by the close).
/// Every wait is bounded by `after_head`; a cut says which side failed or timed out.
async fn relay<S: ClientStream>(
    client: &mut S,
    upstream: &mut Upstream,
    head: &ResponseHead,
    scratch: &mut Scratch,
    http11: bool,
    after_head: &AfterHead,
) -> Result<Relayed, Cut> {
    let Scratch { response, out, .. } = scratch;
    let first = &response[head.len..];
    match head.framing {
        Framing::Empty | Framing::Tunnel => {
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
            let mut decoder = Decoder::new(if http11 {
                Output::Chunked
            } else {
                Output::Data
            });
            response.drain(..head.len);
            loop {
                let decoded = match decoder.decode(response, out) {
                    Ok(decoded) => decoded,
                    Err(error) => {
                        tracing::warn!(%error, "backend sent a malformed chunked body; response cut short");
                        return Ok(Relayed::Broken);
                    }
                };
                response.drain(..decoded.consumed);
                if !out.is_empty() {
                    after_head.send(client, out).await?;
                }
                out.clear();
                if decoded.ended {
                    return Ok(Relayed::Whole {
                        reusable: response.is_empty(),
                    });
                }
                response.reserve(BODY_READ);
                if after_head.read(upstream, response).await? == 0 {
                    return Ok(Relayed::Broken);
                }
            }
        }
        Framing::UntilClose => {
            // The backend's close ends the body; an HTTP/1.1 client's connection stays open, so
            // the body goes out chunked.
            let mut first_len = first.len();
            let mut from = head.len;
            loop {
                if first_len > 0 {
                    let data = &response[from..from + first_len];
                    if http11 {
                        chunked::push_chunk(out, data);
                    } else {
                        out.extend_from_slice(data);
                    }
                }
                if !out.is_empty() {
                    after_head.send(client, out).await?;
                }
                out.clear();
                response.clear();
                response.reserve(BODY_READ);
                match after_head.read(upstream, response).await? {
                    0 => {
                        let end: &[u8] = if http11 { b"0\r\n\r\n" } else { b"" };
                        after_head.send(client, end).await?;
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
    upstream: &mut Upstream,
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

#[cfg(test)]
mod tests {
    use std::future::Future;

    /// The size of the future `f` returns, without calling it.
    fn future_size<A, B, C, D, E, G, F: Future>(_: impl FnOnce(A, B, C, D, E, G) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// What an idle HTTP/1 connection's task holds is `serve`'s future alone: the per-request
    /// state is boxed while a burst of requests lasts (1,216 bytes inline before, 496 after).
    /// The connection's kept timer (`proxy::timer`) took the place of the idle wait's own timer
    /// and added 40 bytes (536); a second one, for the backend alone, would add 112 more. The
    /// idle wait as one `poll_fn` (watching the budget's eviction too) holds each reference once
    /// (488).
    #[test]
    fn an_idle_connection_holds_a_small_future() {
        let serve = future_size(super::serve::<tokio::net::TcpStream>);
        println!("serve: {serve} bytes");
        assert!(serve <= 496, "serve's future is {serve} bytes");
    }
}
