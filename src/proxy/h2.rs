//! h2: lb's HTTP/2 server engine, on the `h2` crate's server directly. It owns an HTTP/2 client
//! connection's life (handshake, accepting streams, GOAWAY on drain or idleness) and each
//! stream's exchange: the request handed to `Proxy::handle` with its body as a
//! [`RequestBody`], the response head sent as HTTP/2 wants it (`date`, `content-length`, no body
//! for HEAD, 204 and 304), and the body piped with flow control, held to `read_timeout` and
//! `send_timeout` (`stall::within_once`). It never routes, picks a backend or rewrites a request
//! (`handler` does, for both engines' policy), and never touches the socket but through `h2`.
//!
//! One task per connection: the connection's streams are futures in a `FuturesUnordered` inside
//! it, polled in the same pass as the connection itself (which `poll_accept` drives: reading
//! frames, writing what the streams queued), so a stream costs no task, no spawn and no hop
//! between tasks. Frames the HTTP/2 protocol checks (pseudo-headers, `content-length` against
//! DATA, header list size, flow control) are `h2`'s: what it refuses never reaches a stream.

use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use h2::server::{Builder, SendResponse};
use h2::{Reason, RecvStream, SendStream};
use http::header::{CONTENT_LENGTH, DATE};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body::Body;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::body::{RequestBody, ResponseBody};
use super::conn::{Active, ClientIo, IdleClock};
use super::h1::wire;
use super::stall::{within_once, Timeout};
use super::{ClientStream, Peer, Proxy, ServerSettings, MAX_HEADER_BYTES};

/// h2's server settings, as hyper's HTTP/2 server set them for lb (its defaults, with lb's
/// header list limit), so clients see the same SETTINGS as before.
pub fn builder() -> Builder {
    let mut builder = Builder::new();
    builder
        // 1 MiB windows: the spec's 64 KiB limits a fast client on a long path (hyper's choice).
        .initial_window_size(1024 * 1024)
        .initial_connection_window_size(1024 * 1024)
        .max_frame_size(16 * 1024)
        .max_concurrent_streams(200)
        .max_send_buffer_size(400 * 1024)
        // A client that makes lb reset streams again and again (malformed ones) loses the
        // connection after this many (CVE-2023-44487-style abuse).
        .max_local_error_reset_streams(Some(1024))
        .max_header_list_size(MAX_HEADER_BYTES as u32);
    builder
}

/// Serves an HTTP/2 connection until it ends, `drain` asks it to finish (GOAWAY, then its
/// in-flight streams finish) or it idles past the settings' limits (the same).
pub async fn serve<S>(
    io: ClientIo<S>,
    client: SocketAddr,
    cert: Option<Arc<str>>,
    proxy: &Proxy,
    builder: &Builder,
    settings: &ServerSettings,
    drain: CancellationToken,
) where
    S: ClientStream + 'static,
{
    let activity = Arc::clone(io.activity());
    let peer = Peer {
        addr: client,
        cert: cert.as_deref(),
    };
    let mut clock = IdleClock::new(settings.header_timeout, settings.idle_timeout);
    // One timer and one drain registration for the connection's life, not one per event.
    let mut tick = pin!(tokio::time::sleep(clock.step()));
    let mut drained = pin!(drain.cancelled());
    // GOAWAY is (or is to be) sent: no idle clock any more, only the in-flight streams.
    let mut closing = false;

    let mut handshake = builder.handshake::<_, Bytes>(io);
    let mut connection = loop {
        tokio::select! {
            biased;
            done = &mut handshake => match done {
                Ok(connection) => break connection,
                Err(error) => {
                    tracing::debug!(%client, %error, "HTTP/2 handshake failed");
                    return;
                }
            },
            // As hyper did: a drain during the handshake sends GOAWAY once it is done.
            () = &mut drained, if !closing => closing = true,
            () = &mut tick, if !closing => {
                if clock.expired(&activity) {
                    tracing::debug!(%client, "client connection idle; closing");
                    return;
                }
                tick.as_mut().reset(Instant::now() + clock.step());
            }
        }
    };
    if closing {
        connection.graceful_shutdown();
    }

    let mut streams = FuturesUnordered::new();
    // `poll_accept` said the connection is over (closed, or GOAWAY sent and no stream left).
    let mut accepting = true;
    let ended = poll_fn(|cx| loop {
        // The streams first: what they queue goes out when the connection is polled below.
        while let Poll::Ready(Some(())) = streams.poll_next_unpin(cx) {}
        if !closing {
            if drained.as_mut().poll(cx).is_ready() {
                closing = true;
            } else {
                while tick.as_mut().poll(cx).is_ready() {
                    if clock.expired(&activity) {
                        tracing::debug!(%client, "client connection idle; closing");
                        closing = true;
                        break;
                    }
                    tick.as_mut().reset(Instant::now() + clock.step());
                }
            }
            if closing {
                // Finish what is in flight, then close.
                connection.graceful_shutdown();
            }
        }
        let mut accepted = false;
        while accepting {
            match connection.poll_accept(cx) {
                Poll::Ready(Some(Ok((request, respond)))) => {
                    streams.push(exchange(
                        request,
                        respond,
                        proxy,
                        peer,
                        S::HTTPS,
                        activity.start(),
                    ));
                    accepted = true;
                }
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Err(error)),
                Poll::Ready(None) => accepting = false,
                Poll::Pending => break,
            }
        }
        if accepted {
            // The new streams get their first poll.
            continue;
        }
        if !accepting && streams.is_empty() {
            return Poll::Ready(Ok(()));
        }
        return Poll::Pending;
    })
    .await;
    if let Err(error) = ended {
        tracing::debug!(%client, %error, "client connection ended with error");
    }
}

/// One stream: the request to the handler, its response to the client. Ends when the response
/// is sent whole, or the stream is reset (by the client, or by lb on a body error or timeout);
/// `_active` keeps the connection busy for its idle clock until then.
async fn exchange(
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    proxy: &Proxy,
    peer: Peer<'_>,
    https: bool,
    _active: Active,
) {
    let head_request = request.method() == Method::HEAD;
    let (parts, recv) = request.into_parts();
    // A CONNECT's stream is a tunnel, not a body; lb forwards no tunnel over HTTP/2, and hyper
    // handed its service no body for it either.
    let body = if parts.method == Method::CONNECT {
        RequestBody::empty()
    } else {
        RequestBody::new(recv, announced_length(&parts.headers))
    };
    let handled = proxy.handle(Request::from_parts(parts, body), peer, https);
    let mut handled = pin!(handled);
    // The client may reset the stream while the backend is still to answer: then the request
    // is dropped (and its backend connection closed) at once.
    let response = poll_fn(|cx| match handled.as_mut().poll(cx) {
        Poll::Ready(response) => Poll::Ready(Some(response)),
        Poll::Pending => respond.poll_reset(cx).map(|_| None),
    })
    .await;
    let Some(response) = response else {
        return;
    };
    let (mut head, body) = response.into_parts();
    // Hop-by-hop fields, which h2 refuses to send, are gone already: `handler` strips a
    // backend's, and lb's own answers carry none.
    let bodiless = head_request
        || head.status == StatusCode::NO_CONTENT
        || head.status == StatusCode::NOT_MODIFIED
        || head.status.is_informational();
    if !head.headers.contains_key(DATE) {
        head.headers.insert(DATE, wire::http_date());
    }
    let end = body.is_end_stream();
    if !end
        && head.status != StatusCode::NO_CONTENT
        && head.status != StatusCode::NOT_MODIFIED
        && !head.headers.contains_key(CONTENT_LENGTH)
    {
        if let Some(length) = body.size_hint().exact() {
            head.headers
                .insert(CONTENT_LENGTH, HeaderValue::from(length));
        }
    }
    let head = http::Response::from_parts(head, ());
    let send = match respond.send_response(head, end || bodiless) {
        Ok(send) => send,
        Err(error) => {
            tracing::debug!(client = %peer.addr, %error, "HTTP/2 response head refused");
            respond.send_reset(Reason::INTERNAL_ERROR);
            return;
        }
    };
    if end || bodiless {
        // A body not read to its end closes its backend connection when dropped here.
        return;
    }
    pipe(body, send, proxy).await;
}

/// The length a request's `content-length` announces; h2 has refused a stream whose field is
/// not one number, and checks the DATA frames against it.
fn announced_length(headers: &HeaderMap) -> Option<u64> {
    std::str::from_utf8(headers.get(CONTENT_LENGTH)?.as_bytes())
        .ok()?
        .parse()
        .ok()
}

/// Why a body's piping stopped short.
enum Stop {
    /// The backend's body failed, or was silent past `read_timeout`: the stream is reset.
    Backend,
    /// The client reset the stream or the connection ended: nothing more to send.
    Client,
    /// The client's window stayed shut past `send_timeout`: the stream is reset.
    SendTimeout,
}

/// Sends `body` on `send` frame by frame, each DATA frame only once the client's window has
/// room for part of it, as hyper's `PipeToSendStream` did (so a stream's buffered data is at most
/// one frame ahead of the client); each wait is timed (see [`Stop`]).
async fn pipe(mut body: ResponseBody, mut send: SendStream<Bytes>, proxy: &Proxy) {
    let stopped = match pipe_frames(&mut body, &mut send, proxy).await {
        Ok(()) => return,
        Err(stop) => stop,
    };
    match stopped {
        Stop::Backend => send.send_reset(Reason::INTERNAL_ERROR),
        Stop::SendTimeout => {
            proxy.timed_out(Timeout::Send, None);
            // As h2 does for a stream dropped unfinished.
            send.send_reset(Reason::CANCEL);
        }
        Stop::Client => {}
    }
    // Dropping `body` unfinished closes its backend connection.
}

async fn pipe_frames(
    body: &mut ResponseBody,
    send: &mut SendStream<Bytes>,
    proxy: &Proxy,
) -> Result<(), Stop> {
    let limits = &proxy.after_head;
    loop {
        // The backend's next frame; a client's RST_STREAM ends the wait too.
        let next = poll_fn(|cx| match std::pin::Pin::new(&mut *body).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(Ok(frame)),
            Poll::Pending => match send.poll_reset(cx) {
                Poll::Ready(_) => Poll::Ready(Err(Stop::Client)),
                Poll::Pending => Poll::Pending,
            },
        });
        let frame = match within_once(limits.read, next).await {
            Some(Ok(Some(Ok(frame)))) => frame,
            Some(Ok(Some(Err(error)))) => {
                tracing::debug!(%error, "backend body failed; resetting the stream");
                return Err(Stop::Backend);
            }
            Some(Ok(None)) => {
                // No trailers: an empty DATA frame ends the stream.
                return send.send_data(Bytes::new(), true).map_err(|_| Stop::Client);
            }
            Some(Err(stop)) => return Err(stop),
            None => {
                proxy.timed_out(Timeout::Read, None);
                return Err(Stop::Backend);
            }
        };
        let frame = match frame.into_data() {
            Ok(data) => {
                let last = body.is_end_stream();
                send_chunk(send, data, last, limits.send).await?;
                if last {
                    return Ok(());
                }
                continue;
            }
            Err(frame) => frame,
        };
        if let Ok(trailers) = frame.into_trailers() {
            // No more DATA: give back any capacity asked for.
            send.reserve_capacity(0);
            return send.send_trailers(trailers).map_err(|_| Stop::Client);
        }
        // Any other kind of frame has no meaning here and is skipped.
    }
}

/// Sends one chunk once the stream has some room in the client's window (h2 keeps the rest
/// until the window opens, and asks for it); the wait for room is held to `send_timeout`.
async fn send_chunk(
    send: &mut SendStream<Bytes>,
    data: Bytes,
    last: bool,
    limit: std::time::Duration,
) -> Result<(), Stop> {
    if !data.is_empty() {
        // A claim of one byte rather than the chunk's length: h2 raises it to what is buffered
        // in `send_data`, and a small claim cannot pin the connection's window for a stream
        // that is not ready (hyper #4003).
        send.reserve_capacity(1);
        if send.capacity() == 0 {
            let room = poll_fn(|cx| loop {
                if send.capacity() > 0 {
                    return Poll::Ready(Ok(()));
                }
                match send.poll_capacity(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Some(Ok(_))) => {}
                    // The stream was reset or the connection ended.
                    Poll::Ready(Some(Err(_)) | None) => return Poll::Ready(Err(Stop::Client)),
                }
            });
            match within_once(limit, room).await {
                Some(room) => room?,
                None => return Err(Stop::SendTimeout),
            }
        }
    }
    send.send_data(data, last).map_err(|_| Stop::Client)
}
