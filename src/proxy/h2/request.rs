//! An HTTP/2 stream's request on its way through the shared policy (`proxy::sequence`): routed,
//! its body read (whole when small: `proxy::body::read`), its backend's HTTP/1.1 request written
//! from the request's fields, sent through lb's client (`proxy::upstream`) by the retry rules,
//! and the answer handed back to `proxy::h2` as a response whose body it pipes.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use h2::RecvStream;
use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{request, Method, Response, StatusCode};
use tokio::time::Sleep;

use super::super::headers;
use super::super::http1::chunked;
use super::super::http1::wire::{self, ResponseHead};
use super::super::sequence::{
    is_idempotent, route, Attempts, Failure, LocalAnswer, Placed, Proxy, Replay, Routed,
};
use super::super::timer::within;
use super::super::upstream::client::{self, PlainBody};
use super::super::upstream::{self, ExchangeError, Upstream};
use super::super::Peer;
use super::body::{self, push_last_chunk, RequestBody, ResponseBody, Streamed};
use crate::config::PoolType;
use crate::topology::{Backend, Pool, Topology};

impl Proxy {
    /// Serves one HTTP/2 request (`proxy::h2` reads it off its stream): `head` is borrowed for
    /// the whole exchange and `body` is the request's body; `https`: the client came over TLS.
    /// Never fails: every problem becomes a short error response. `timer`: the stream's kept
    /// timer for the backend's answer (`proxy::timer`).
    ///
    /// Nothing here is boxed and the request is never moved whole: `proxy::h2` boxes the
    /// stream's future once, with this one inside it. A boxed future is copied whole when
    /// boxed, and an owned request is copied at each call it is handed down (264 bytes); with
    /// a box per layer that was 5 KiB of copying per request (perf probe on `memcpy`).
    pub(crate) async fn handle(
        &self,
        head: &request::Parts,
        body: Option<(RecvStream, Option<u64>)>,
        client: Peer<'_>,
        https: bool,
        timer: Pin<&mut Sleep>,
    ) -> Response<ResponseBody> {
        let started = Instant::now();
        // One snapshot for the whole request: a reload mid-request does not change its pool.
        let topology = self.topology.load_full();
        let routed = self.dispatch(&topology, head, https);
        let (response, pool, backend, error, side, by_lb) = match routed {
            Routed::Local(answer) => (local_answer(answer), None, None, None, None, true),
            Routed::Pool(pool) => {
                match self.over_rate_limit(pool, client, &head.headers, started) {
                    Some(limited) => (local_answer(limited), Some(pool), None, None, None, true),
                    None => {
                        let keep = self.peer_trust(client.addr.ip()).keeps_forwarded_for();
                        let f = forward(pool, head, body, client, (https, keep), timer).await;
                        (f.response, Some(pool), f.backend, f.error, f.side, f.by_lb)
                    }
                }
            }
        };
        let placed = Placed {
            pool,
            side,
            backend: backend.as_ref(),
            by_lb,
            error: error.as_deref(),
        };
        self.account(
            client,
            &head.method,
            head.uri.path(),
            response.status().as_u16(),
            placed,
            started.elapsed(),
        );
        response
    }

    /// Where an HTTP/2 request goes: lb's own answer (an HTTPS redirect, 404, ...) or a pool.
    fn dispatch<'t>(
        &self,
        topology: &'t Topology,
        head: &request::Parts,
        https: bool,
    ) -> Routed<'t> {
        let host = head
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| head.uri.authority().map(|a| a.as_str()))
            .unwrap_or("");
        let uri = &head.uri;
        match self.https_redirect(https, host, uri.path(), uri.query()) {
            Some(answer) => Routed::Local(answer),
            None => route(topology, &head.method, host, uri.path(), uri.query()),
        }
    }
}

/// What [`forward`] produced.
struct Forwarded {
    response: Response<ResponseBody>,
    /// The backend that answered, if any did.
    backend: Option<Arc<Backend>>,
    /// Why lb answered itself after a backend failed, for the access line.
    error: Option<Box<str>>,
    /// The side of the pool's canary split, once a backend was picked.
    side: Option<crate::canary::Side>,
    /// The answer is lb's own, not a backend's.
    by_lb: bool,
}

impl Forwarded {
    fn local(status: StatusCode, text: &'static str) -> Forwarded {
        Failure::new(status, text).into()
    }
}

impl From<Failure> for Forwarded {
    fn from(failure: Failure) -> Forwarded {
        Forwarded {
            response: local(failure.status, failure.text),
            backend: failure.backend,
            error: failure.error,
            side: failure.side,
            by_lb: true,
        }
    }
}

/// Forwards to a backend of `pool` by the retry rules of [`Attempts`]: a failed connect goes
/// again, and a failed exchange too when the request is idempotent and its body can be sent
/// again. The body is read first (whole when small: see [`body::read`]), so a malformed one
/// reaches no backend. `(https, keep_forwarded_for)`: what the `X-Forwarded-*` fields say
/// ([`headers::Forwarding`]).
async fn forward(
    pool: &Pool,
    parts: &request::Parts,
    body: Option<(RecvStream, Option<u64>)>,
    client: Peer<'_>,
    (https, keep_forwarded_for): (bool, bool),
    mut timer: Pin<&mut Sleep>,
) -> Forwarded {
    let mut body = match body {
        None => RequestBody::None,
        Some((recv, length)) => {
            let deadline = Instant::now() + pool.request_timeout;
            match body::read(recv, length, timer.as_mut(), deadline).await {
                Ok(body) => body,
                Err(body::ReadError::TimedOut) => {
                    return Forwarded::local(
                        StatusCode::REQUEST_TIMEOUT,
                        "request body timed out\n",
                    )
                }
                // `h2` has reset the stream already; this answer is for the access line.
                Err(error) => {
                    tracing::debug!(%error, "HTTP/2 request refused before forwarding");
                    return Forwarded::local(StatusCode::BAD_REQUEST, "malformed request body\n");
                }
            }
        }
    };
    // HTTP/2 clients send :authority instead of Host; HTTP/1.1 backends need Host.
    let host = parts
        .headers
        .get(header::HOST)
        .map(HeaderValue::as_bytes)
        .or_else(|| parts.uri.authority().map(|a| a.as_str().as_bytes()));
    let forwarding = headers::Forwarding {
        client: client.ip.as_bytes(),
        host,
        https,
        keep_forwarded_for,
    };
    let target = parts.uri.path_and_query().map_or("/", PathAndQuery::as_str);
    let head_request = parts.method == Method::HEAD;
    let mut rng = fastrand::Rng::new();
    // Only P2C-EWMA reads an attempt's latency.
    let ewma = pool.pool_type == PoolType::P2cEwma;
    let mut request = upstream::spare::take();

    let mut attempts = Attempts::default();
    let forwarded = loop {
        let backend = match attempts.pick(pool, &parts.headers, &mut rng) {
            Ok(backend) => backend,
            Err(failure) => break failure.into(),
        };
        request.clear();
        let url_path = &backend.addr.url_path;
        wire::push_request_line(&mut request, &parts.method, url_path, target.as_bytes());
        if host.is_none() {
            // A request without a host: name the backend, as HTTP/1.1 requires.
            wire::push_field(&mut request, b"host", backend.authority.as_str().as_bytes());
        }
        let fields = || headers::map_fields(&parts.headers);
        headers::push_upstream_fields(&mut request, fields, &forwarding);
        body.push_framing(&mut request);
        request.extend_from_slice(b"\r\n");

        let in_flight = backend.start_request();
        let attempt_started = ewma.then(Instant::now);
        let deadline = Instant::now() + pool.request_timeout;
        let sent = exchange(&backend, &request, &mut body, head_request, pool);
        match within(timer.as_mut(), deadline, sent).await {
            Some(Ok(answer)) => {
                if let Some(started) = attempt_started {
                    backend.latency.observe(started.elapsed());
                }
                let response_body = PlainBody::new(
                    answer.upstream,
                    &answer.head,
                    &answer.buffer,
                    Some(in_flight),
                );
                upstream::spare::give(answer.buffer);
                let (head, ()) = answer.response.into_parts();
                break Forwarded {
                    response: Response::from_parts(head, ResponseBody::Plain(response_body)),
                    backend: Some(backend),
                    error: None,
                    side: Some(attempts.side()),
                    by_lb: false,
                };
            }
            Some(Err(ExchangeError::ClientBody(error))) => {
                // `h2` has reset the stream; the backend saw a cut-off request, on a connection
                // dropped with this attempt.
                tracing::debug!(%error, "HTTP/2 request body failed while it streamed");
                break Forwarded::local(StatusCode::BAD_REQUEST, "malformed request body\n");
            }
            Some(Err(error)) => {
                let replay = Replay {
                    unsent: body.replayable(),
                    sent: body.replayable() && is_idempotent(&parts.method),
                };
                if let Some(failure) = attempts.failed(pool, backend, &error, replay) {
                    break failure.into();
                }
            }
            None => break attempts.timed_out(pool, backend).into(),
        }
    };
    upstream::spare::give(request);
    forwarded
}

/// lb's own answer as an HTTP/2 response, with its header if it has one.
fn local_answer(answer: LocalAnswer) -> Response<ResponseBody> {
    let mut response = local(answer.status, answer.text);
    if let Some((name, value)) = answer.header {
        if let Ok(value) = HeaderValue::try_from(value) {
            let name = header::HeaderName::from_static(name);
            response.headers_mut().insert(name, value);
        }
    }
    response
}

fn local(status: StatusCode, text: &'static str) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::local(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// What [`exchange`] brought back: the response head for the HTTP/2 client, and the socket and
/// bytes its body continues from (see [`PlainBody::new`]).
struct PlainResponse {
    response: Response<()>,
    upstream: Upstream,
    head: ResponseHead,
    /// The response head and whatever body bytes were read behind it.
    buffer: Vec<u8>,
}

/// Sends an HTTP/2 client's request to `backend`: `request` is its head, as the backend gets
/// it (framing field included), and `body` goes behind it (in the same write when whole or
/// begun; a larger body's rest as the client sends it, until the backend answers). Returns the
/// final response head (1xx heads dropped), parsed into `http` parts.
async fn exchange(
    backend: &Backend,
    request: &[u8],
    body: &mut RequestBody,
    head_request: bool,
    pool: &Pool,
) -> Result<PlainResponse, ExchangeError> {
    let mut upstream = client::send_request(backend, request, body.first(), pool).await?;
    let mut whole = true;
    if let RequestBody::Streamed(rest) = body {
        rest.started = true;
        whole = pump(&mut upstream, rest, pool.request_timeout).await?;
    }
    let mut buffer = upstream::spare::take();
    let read = client::read_final_head(
        &mut upstream,
        &mut buffer,
        head_request,
        wire::response_parts,
    );
    let (mut head, response) = match read.await {
        Ok(read) => read,
        Err(error) => {
            upstream::spare::give(buffer);
            return Err(error);
        }
    };
    // An answer before the request's end leaves the connection mid-request: not reusable.
    head.reusable &= whole;
    Ok(PlainResponse {
        response: response?,
        upstream,
        head,
        buffer,
    })
}

/// Sends the rest of a streamed body (`rest.recv`) to the backend, framed as its head said.
/// `Ok(false)`: the backend answered (or its socket failed) before the end, and the rest is not
/// sent; reading its answer tells what it made of the request. `backend_idle`: how long the
/// backend may take no byte of it.
async fn pump(
    upstream: &mut Upstream,
    rest: &mut Streamed,
    backend_idle: Duration,
) -> Result<bool, ExchangeError> {
    let mut out = Vec::new();
    loop {
        let next = tokio::select! {
            biased;
            () = upstream.answered() => return Ok(false),
            next = rest.recv.data() => next,
        };
        let chunk = match next {
            Some(Ok(chunk)) => chunk,
            // RST_STREAM(NO_ERROR): the client asks to end early (RFC 9113 §8.1).
            Some(Err(error)) if error.reason() == Some(h2::Reason::NO_ERROR) => break,
            Some(Err(error)) => return Err(ExchangeError::ClientBody(error)),
            None => break,
        };
        let taken = chunk.len();
        let sent = if rest.chunked {
            out.clear();
            chunked::push_chunk(&mut out, &chunk);
            write_within(upstream, &out, backend_idle).await?
        } else {
            write_within(upstream, &chunk, backend_idle).await?
        };
        if !sent {
            return Ok(false);
        }
        // The client may send as much again once the backend took it.
        let _ = rest.recv.flow_control().release_capacity(taken);
    }
    let trailers = tokio::select! {
        biased;
        () = upstream.answered() => return Ok(false),
        trailers = rest.recv.trailers() => trailers.map_err(ExchangeError::ClientBody)?,
    };
    if rest.chunked {
        out.clear();
        push_last_chunk(&mut out, trailers.as_ref());
        return write_within(upstream, &out, backend_idle).await;
    }
    Ok(true)
}

/// Writes `buf` whole; `Ok(false)` when the backend answered or failed first.
async fn write_within(
    upstream: &mut Upstream,
    mut buf: &[u8],
    idle: Duration,
) -> Result<bool, ExchangeError> {
    while !buf.is_empty() {
        match tokio::time::timeout(idle, upstream.write_some(buf)).await {
            Ok(Ok(Some(n))) => buf = &buf[n..],
            Ok(Ok(None) | Err(_)) => return Ok(false),
            Err(_) => return Err(ExchangeError::Io(io::ErrorKind::TimedOut.into())),
        }
    }
    Ok(true)
}
