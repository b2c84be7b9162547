//! h2: lb's HTTP/2 server engine, on the `h2` crate's server directly. It owns an HTTP/2 client
//! connection's life (handshake, accepting streams, GOAWAY on drain or idleness) and each
//! stream's exchange: the request handed to `Proxy::handle` with its body's stream, the response head sent as HTTP/2 wants it (`date`, `content-length`, no body
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
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use h2::server::{Builder, SendResponse};
use h2::{Reason, RecvStream, SendStream};
use http::header::{CONTENT_LENGTH, DATE};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body::{Body, Frame};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

mod body;
mod request;

use super::budget::Ticket;
use super::conn::{Active, ClientIo, IdleClock};
use super::http1::wire;
use super::stall::{within_once, Timeout};
use super::timer::{self, StreamTimer};
use super::{ClientStream, Peer, Proxy, ServerSettings, MAX_HEADER_BYTES};
pub use body::ResponseBody;

/// How long an evicted connection's GOAWAY may wait for the client to take it.
const EVICTED_FLUSH: std::time::Duration = std::time::Duration::from_secs(1);

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
/// in-flight streams finish) or it idles past the settings' limits (the same), or the budget
/// evicts it while it has no open stream (`ticket`: GOAWAY, then the close).
pub async fn serve<S>(
    io: ClientIo<S>,
    peer: Peer<'_>,
    ticket: &Ticket,
    proxy: &Proxy,
    builder: &Builder,
    settings: &ServerSettings,
    drain: CancellationToken,
) where
    S: ClientStream + 'static,
{
    let client = peer.addr;
    let activity = Arc::clone(io.activity());
    let mut clock = IdleClock::new(settings.header_timeout, settings.idle_timeout);
    // One timer and one drain registration for the connection's life, not one per event.
    let mut tick = pin!(tokio::time::sleep(clock.step()));
    let mut drained = pin!(drain.cancelled());
    // GOAWAY is (or is to be) sent: no idle clock any more, only the in-flight streams.
    let mut closing = false;

    // In a block of its own: the handshake's state (the codec, before it moves into the
    // connection) then shares its room in this future with the serving state instead of
    // sitting beside it for the connection's life (a KiB per idle connection).
    let mut connection = {
        let mut handshake = builder.handshake::<_, Bytes>(io);
        loop {
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
        }
    };
    if closing {
        connection.graceful_shutdown();
    }

    // The streams' kept timers for their backends' answers: each stream's future takes one and
    // hands it back as its output.
    let mut timers = timer::Spares::default();
    // Each stream's future boxed: the set keeps a spare task sized for its future for its whole
    // life, which an idle connection would otherwise carry inline (~1.9 KiB).
    let mut streams: FuturesUnordered<Pin<Box<dyn Future<Output = StreamTimer> + Send + '_>>> =
        FuturesUnordered::new();
    // `tick` and `drained` have been polled here (the handshake may have needed none).
    let mut armed = false;
    // `poll_accept` said the connection is over (closed, or GOAWAY sent and no stream left).
    let mut accepting = true;
    // No stream open, and the budget told so: the connection may be evicted.
    let mut idle = false;
    // Evicted: `tick` now bounds the GOAWAY's flush, which a client that reads nothing could
    // hold; its slot is what a new client waits for.
    let mut evicted = false;
    let ended = poll_fn(|cx| {
        // The streams first: what they queue goes out when the connection is polled below.
        while let Poll::Ready(Some(timer)) = streams.poll_next_unpin(cx) {
            timers.give(timer);
        }
        if !closing {
            if streams.is_empty() && !idle {
                ticket.idle(std::time::Instant::now());
                idle = true;
            }
            if idle && ticket.poll_evicted(cx).is_ready() {
                // No stream is open: GOAWAY with the last stream processed, at once (no PING
                // round trip, which a silent client would never answer), then the close. A
                // request still unread in the socket is above that id, so its client may
                // retry it elsewhere (RFC 9113 §6.8).
                tracing::debug!(%client, "idle client connection evicted for a new one");
                connection.abrupt_shutdown(Reason::NO_ERROR);
                closing = true;
                evicted = true;
                tick.as_mut().reset(Instant::now() + EVICTED_FLUSH);
            }
        }
        if evicted && tick.as_mut().poll(cx).is_ready() {
            tracing::debug!(%client, "evicted client connection took no GOAWAY; closing");
            return Poll::Ready(Ok(()));
        }
        if !closing {
            // Once polled, each holds this task's waker until it fires; between firings a flag
            // is cheaper to read than polling them on every pass.
            let fired = if armed {
                drain.is_cancelled()
            } else {
                armed = true;
                let _ = tick.as_mut().poll(cx);
                drained.as_mut().poll(cx).is_ready()
            };
            if fired {
                closing = true;
            } else {
                while tick.is_elapsed() {
                    if clock.expired(&activity) {
                        tracing::debug!(%client, "client connection idle; closing");
                        closing = true;
                        break;
                    }
                    tick.as_mut().reset(Instant::now() + clock.step());
                    // A fired timer keeps no waker: the poll registers it for the new deadline.
                    let _ = tick.as_mut().poll(cx);
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
                    if idle {
                        idle = false;
                        if !ticket.busy() && !closing {
                            // Evicted as this stream came: it is served, and the connection
                            // closes after it.
                            connection.graceful_shutdown();
                            closing = true;
                        }
                    }
                    streams.push(Box::pin(exchange(
                        request,
                        respond,
                        proxy,
                        peer,
                        S::HTTPS,
                        activity.start(),
                        timers.take(),
                    )));
                    accepted = true;
                }
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Err(error)),
                Poll::Ready(None) => accepting = false,
                Poll::Pending => break,
            }
        }
        if accepted {
            // The new streams get their first poll, and the connection is not polled again for
            // them: what they queue for the client wakes this task (h2 registered it with the
            // flush above), which most (waiting on their backend) do not.
            while let Poll::Ready(Some(timer)) = streams.poll_next_unpin(cx) {
                timers.give(timer);
            }
        }
        if !accepting && streams.is_empty() {
            return Poll::Ready(Ok(()));
        }
        Poll::Pending
    })
    .await;
    if let Err(error) = ended {
        tracing::debug!(%client, %error, "client connection ended with error");
    }
}

/// One stream: the request to the handler, its response to the client. Ends when the response
/// is sent whole, or the stream is reset (by the client, or by lb on a body error or timeout);
/// `active` keeps the connection busy for its idle clock until then. `timer`, a kept timer of
/// the connection's (`proxy::timer`), times the backend's answer and is handed back at the end.
fn exchange<'a>(
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    proxy: &'a Proxy,
    peer: Peer<'a>,
    https: bool,
    active: Active,
    mut timer: StreamTimer,
) -> impl Future<Output = StreamTimer> + 'a {
    let (head, recv) = request.into_parts();
    // A CONNECT's stream is a tunnel, not a body; lb forwards no tunnel over HTTP/2, and hyper
    // handed its service no body for it either. A stream its HEADERS frame ended (a GET, say)
    // has none either, and its `content-length` is not looked up.
    let body = if head.method == Method::CONNECT || recv.is_end_stream() {
        None
    } else {
        Some((recv, announced_length(&head.headers)))
    };
    // A block, not an `async fn`: an async fn's arguments are moved into a second copy
    // of themselves inside its future, and this future is copied whole when boxed.
    async move {
        let _active = active;
        let head_request = head.method == Method::HEAD;
        let response = {
            // The handler's future lives inside the stream's, borrowing the request's head:
            // the stream's future is the one allocation a request makes here.
            let mut handled = pin!(proxy.handle(&head, body, peer, https, timer.as_mut()));
            // The client may reset the stream while the backend is still to answer: then the
            // request is dropped (and its backend connection closed) at once, with this block.
            poll_fn(|cx| match handled.as_mut().poll(cx) {
                Poll::Ready(response) => Poll::Ready(Some(response)),
                Poll::Pending => respond.poll_reset(cx).map(|_| None),
            })
            .await
        };
        if let Some(response) = response {
            answer(response, respond, head_request, proxy, peer.addr).await;
        }
        timer
    }
}

/// Sends the handler's response on the stream (see [`exchange`]).
async fn answer(
    response: http::Response<ResponseBody>,
    mut respond: SendResponse<Bytes>,
    head_request: bool,
    proxy: &Proxy,
    client: SocketAddr,
) {
    let (mut head, mut body) = response.into_parts();
    // Hop-by-hop fields, which h2 refuses to send, are gone already: `handler` strips a
    // backend's, and lb's own answers carry none.
    // 204 and 304 never have content, so no `content-length` is made up for them either.
    let no_content =
        head.status == StatusCode::NO_CONTENT || head.status == StatusCode::NOT_MODIFIED;
    let bodiless = head_request || no_content || head.status.is_informational();
    if !head.headers.contains_key(DATE) {
        head.headers.insert(DATE, wire::http_date());
    }
    let end = body.is_end_stream();
    if !end && !no_content && !head.headers.contains_key(CONTENT_LENGTH) {
        if let Some(length) = body.size_hint().exact() {
            head.headers
                .insert(CONTENT_LENGTH, HeaderValue::from(length));
        }
    }
    let head = http::Response::from_parts(head, ());
    let mut send = match respond.send_response(head, end || bodiless) {
        Ok(send) => send,
        Err(error) => {
            tracing::debug!(%client, %error, "HTTP/2 response head refused");
            respond.send_reset(Reason::INTERNAL_ERROR);
            return;
        }
    };
    if end || bodiless {
        // A body not read to its end closes its backend connection when dropped here.
        return;
    }
    match first_frame(&mut body, &mut send).await {
        Ok(None) => {}
        // Boxed: only a body that has to wait needs the pipe's state (its timers among it).
        Ok(Some(step)) => Box::pin(pipe(body, send, step, proxy)).await,
        Err(stop) => stopped(stop, &mut send, proxy),
    }
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

/// What one frame of a body came to, once offered to the stream without waiting.
enum Step {
    /// Sent (or skipped); the body has more.
    More,
    /// The stream is complete.
    Done,
    /// A chunk waits for room in the client's window; `true`: it is the body's last.
    Room(Bytes, bool),
}

/// Offers `frame` (the body's next, or its end) to the stream: sent at once when it needs no
/// room in the client's window or there is some, else handed back to wait for it.
fn offer(
    frame: Option<Frame<Bytes>>,
    last: bool,
    send: &mut SendStream<Bytes>,
) -> Result<Step, Stop> {
    let Some(frame) = frame else {
        // No trailers: an empty DATA frame ends the stream.
        send.send_data(Bytes::new(), true)
            .map_err(|_| Stop::Client)?;
        return Ok(Step::Done);
    };
    let frame = match frame.into_data() {
        Ok(data) => {
            // The body's last chunk goes at once: h2 holds it until the client's window has
            // room, which keeps the stream at most a chunk ahead of the client, as waiting for
            // room would, and frees the backend connection sooner (and saves h2 a second pass
            // over the window: `send_data` claims what it buffers).
            if !data.is_empty() && !last {
                // A claim of one byte rather than the chunk's length: h2 raises it to what is
                // buffered in `send_data`, and a small claim cannot pin the connection's window
                // for a stream that is not ready (hyper #4003). The chunk goes only once the
                // stream has some room, so its buffered data stays at most a chunk ahead of the
                // client, as with hyper's `PipeToSendStream`.
                send.reserve_capacity(1);
                if send.capacity() == 0 {
                    return Ok(Step::Room(data, last));
                }
            }
            send.send_data(data, last).map_err(|_| Stop::Client)?;
            return Ok(if last { Step::Done } else { Step::More });
        }
        Err(frame) => frame,
    };
    if let Ok(trailers) = frame.into_trailers() {
        // No more DATA: give back any capacity asked for.
        send.reserve_capacity(0);
        send.send_trailers(trailers).map_err(|_| Stop::Client)?;
        return Ok(Step::Done);
    }
    // Any other kind of frame has no meaning here and is skipped.
    Ok(Step::More)
}

/// Sends a body's first frame if it is ready, without waiting for anything; `None` when that
/// finished the stream, else where the pipe goes on from. Most bodies are one frame read with
/// the head, so most responses never need the pipe's state.
async fn first_frame(
    body: &mut ResponseBody,
    send: &mut SendStream<Bytes>,
) -> Result<Option<Step>, Stop> {
    let polled = poll_fn(|cx| Poll::Ready(Pin::new(&mut *body).poll_frame(cx))).await;
    match polled {
        Poll::Pending => Ok(Some(Step::More)),
        Poll::Ready(Some(Err(error))) => {
            tracing::debug!(%error, "backend body failed; resetting the stream");
            Err(Stop::Backend)
        }
        Poll::Ready(frame) => {
            let frame = frame.and_then(Result::ok);
            match offer(frame, body.is_end_stream(), send)? {
                Step::Done => Ok(None),
                step => Ok(Some(step)),
            }
        }
    }
}

/// Ends a stream whose body stopped short, counting a send timeout.
fn stopped(stop: Stop, send: &mut SendStream<Bytes>, proxy: &Proxy) {
    match stop {
        Stop::Backend => send.send_reset(Reason::INTERNAL_ERROR),
        Stop::SendTimeout => {
            proxy.timed_out(Timeout::Send, None);
            // As h2 does for a stream dropped unfinished.
            send.send_reset(Reason::CANCEL);
        }
        Stop::Client => {}
    }
}

/// Sends the rest of `body` on `send` frame by frame from `step` (see [`offer`]), each wait
/// timed: on the backend's next frame by `read_timeout`, on room in the client's window by
/// `send_timeout`. A body that stops short resets the stream (see [`Stop`]), and dropping it
/// unfinished closes its backend connection.
async fn pipe(mut body: ResponseBody, mut send: SendStream<Bytes>, step: Step, proxy: &Proxy) {
    if let Err(stop) = pipe_frames(&mut body, &mut send, step, proxy).await {
        stopped(stop, &mut send, proxy);
    }
}

async fn pipe_frames(
    body: &mut ResponseBody,
    send: &mut SendStream<Bytes>,
    mut step: Step,
    proxy: &Proxy,
) -> Result<(), Stop> {
    let limits = &proxy.after_head;
    loop {
        match step {
            Step::Done => return Ok(()),
            Step::Room(data, last) => {
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
                match within_once(limits.send, room).await {
                    Some(room) => room?,
                    None => return Err(Stop::SendTimeout),
                }
                send.send_data(data, last).map_err(|_| Stop::Client)?;
                step = if last { Step::Done } else { Step::More };
            }
            Step::More => {
                // The backend's next frame; a client's RST_STREAM ends the wait too.
                let next = poll_fn(|cx| match Pin::new(&mut *body).poll_frame(cx) {
                    Poll::Ready(frame) => Poll::Ready(Ok(frame)),
                    Poll::Pending => match send.poll_reset(cx) {
                        Poll::Ready(_) => Poll::Ready(Err(Stop::Client)),
                        Poll::Pending => Poll::Pending,
                    },
                });
                let frame = match within_once(limits.read, next).await {
                    Some(Ok(Some(Ok(frame)))) => Some(frame),
                    Some(Ok(None)) => None,
                    Some(Ok(Some(Err(error)))) => {
                        tracing::debug!(%error, "backend body failed; resetting the stream");
                        return Err(Stop::Backend);
                    }
                    Some(Err(stop)) => return Err(stop),
                    None => {
                        proxy.timed_out(Timeout::Read, None);
                        return Err(Stop::Backend);
                    }
                };
                step = offer(frame, body.is_end_stream(), send)?;
            }
        }
    }
}
