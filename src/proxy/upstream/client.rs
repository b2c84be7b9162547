//! The backend side of lb's own HTTP/1.1 code: a plain socket from the backend's idle set (or a
//! new one), a request written on it, response heads read from it, and a streamed response body
//! for HTTP/2 clients. Used by `proxy::h1` for every HTTP/1.x request and, through
//! `upstream::exchange`, for every HTTP/2 request; knows nothing of the client side.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::super::http1::chunked::{ChunkError, Decoder, Output};
use super::super::http1::wire::{self, BadResponse, FinalHead, Framing, Response, ResponseHead};
pub use crate::idle_connections::Upstream;
use crate::tls::BackendConnector;
use crate::topology::{Backend, InFlight, Pool};

/// A backend response head longer than this is a bad gateway (hyper's client default is ~400
/// KiB).
pub const MAX_RESPONSE_HEAD: usize = 400 * 1024;
/// Room kept free in a buffer before each read of a head.
const HEAD_READ: usize = 4096;
/// Bytes read per read while a body streams.
pub const BODY_READ: usize = 16 * 1024;

/// Why an exchange with a backend produced no response to relay.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("cannot connect to {addr}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// Writing the request failed: the backend did not get it.
    #[error("sending the request failed")]
    Unsent(#[source] io::Error),
    /// The connection failed before any byte of a response arrived.
    #[error("backend connection failed before responding")]
    Reset(#[source] io::Error),
    #[error("backend closed the connection before responding")]
    ClosedEarly,
    #[error("backend connection failed while responding")]
    Io(#[source] io::Error),
    #[error("backend closed the connection in the middle of the response head")]
    Truncated,
    #[error("response head over {MAX_RESPONSE_HEAD} bytes")]
    HeadTooLarge,
    #[error(transparent)]
    Response(#[from] BadResponse),
    /// A chunked body's first size line is malformed: nothing of the response has gone to the
    /// client yet, so it is a bad gateway like a malformed head.
    #[error("malformed chunked body from the backend: {0}")]
    FirstChunk(#[source] ChunkError),
    /// The client's request body failed while it streamed (an HTTP/2 stream reset, or a body
    /// that broke its announced length): the backend saw a cut-off request. Not the backend's
    /// fault, so never retried and never an ejection.
    #[error("the client's request body failed")]
    ClientBody(#[source] h2::Error),
}

/// A connection to `backend`, of `pool`: an idle one (`true`) or a new one.
pub async fn checkout(backend: &Backend, pool: &Pool) -> Result<(Upstream, bool), ExchangeError> {
    if let Some(stream) = backend.connections.take_stream() {
        return Ok((stream, true));
    }
    let addr = backend.addr.addr;
    // Boxed: a connect (with its TLS handshake) is ~1.5 KiB of future, which inline would
    // make every request's future that large, and be copied with it, for a path that kept
    // connections rarely take (print-type-sizes; memcpy was ~5 KiB an HTTP/2 request).
    let mut stream = Box::pin(connect_upstream(addr, pool))
        .await
        .map_err(|source| ExchangeError::Connect { addr, source })?;
    stream.count_into(&backend.traffic);
    Ok((stream, false))
}

/// A new connection to `addr`, a backend of `pool`: TCP with Nagle off, then the TLS handshake
/// when the pool has `backend_tls`, all within its `connect_timeout` (which shows as
/// [`io::ErrorKind::TimedOut`]). A certificate the pool does not trust is a failed connect,
/// whose message says why.
async fn connect_upstream(addr: SocketAddr, pool: &Pool) -> io::Result<Upstream> {
    let timeout = pool.connect_timeout;
    let connect = connect(addr, pool.backend_tls.as_deref());
    match tokio::time::timeout(timeout, connect).await {
        Ok(connected) => connected,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no connection within {timeout:?}"),
        )),
    }
}

/// TCP with Nagle off, then the TLS handshake through `tls` when there is one.
pub async fn connect(addr: SocketAddr, tls: Option<&BackendConnector>) -> io::Result<Upstream> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    match tls {
        None => Ok(Upstream::plain(stream)),
        Some(tls) => Ok(Upstream::tls(tls.handshake(stream, addr.ip()).await?)),
    }
}

/// Writes a request (its `head`, and a `body` or its first part, empty for none) on a
/// connection of `backend`, in one vectored write where the socket takes it: the body is not
/// copied behind the head first. A kept connection the backend closed just before the request
/// went out leaves it unsent, and it goes on another connection (a fresh one at the latest,
/// which does not loop). One that took the request and gave no answer is a failed attempt, which
/// the caller retries by its rules (so a request the backend drops is not sent once per idle
/// socket). A close while idle is seen before use (`IdleConnections::take_stream`).
pub async fn send_request(
    backend: &Backend,
    head: &[u8],
    body: &[u8],
    pool: &Pool,
) -> Result<Upstream, ExchangeError> {
    loop {
        let (mut upstream, reused) = checkout(backend, pool).await?;
        match write_all_two(&mut upstream, head, body).await {
            Ok(()) => return Ok(upstream),
            Err(_) if reused => {}
            Err(error) => return Err(ExchangeError::Unsent(error)),
        }
    }
}

/// Writes `first` then `second`, both whole, gathering them into each write while both last.
async fn write_all_two(
    upstream: &mut Upstream,
    mut first: &[u8],
    mut second: &[u8],
) -> io::Result<()> {
    while !first.is_empty() || !second.is_empty() {
        let written = if first.is_empty() {
            upstream.write(second).await?
        } else if second.is_empty() {
            upstream.write(first).await?
        } else {
            let both = [io::IoSlice::new(first), io::IoSlice::new(second)];
            upstream.write_vectored(&both).await?
        };
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let from_first = written.min(first.len());
        first = &first[from_first..];
        second = &second[written - from_first..];
    }
    Ok(())
}

/// Reads the final response head from `upstream` into `response` (emptied first), with
/// whatever body bytes came behind it; 1xx heads before it are dropped. `emit` makes of the
/// final head what the caller needs, while it is parsed.
pub async fn read_final_head<T>(
    upstream: &mut Upstream,
    response: &mut Vec<u8>,
    head_request: bool,
    mut emit: impl FnMut(&FinalHead<'_, '_>) -> T,
) -> Result<(ResponseHead, T), ExchangeError> {
    response.clear();
    loop {
        match read_head(upstream, response, head_request, false, &mut emit).await? {
            Response::Final(head, emitted) => {
                check_first_chunk(upstream, response, &head).await?;
                return Ok((head, emitted));
            }
            Response::Informational { len, .. } => {
                response.drain(..len);
            }
        }
    }
}

/// For a chunked response whose `head` is at the start of `response`: reads until the body's
/// first size line is whole and refuses it when it is malformed, so that a broken body is a bad
/// gateway while nothing has gone to the client yet. The bytes stay in `response` for the relay.
pub async fn check_first_chunk(
    upstream: &mut Upstream,
    response: &mut Vec<u8>,
    head: &ResponseHead,
) -> Result<(), ExchangeError> {
    if head.framing != Framing::Chunked {
        return Ok(());
    }
    loop {
        let rest = &response[head.len..];
        // Only the size line: what follows is the relay's to judge (and to cut short).
        let line = match rest.iter().position(|&b| b == b'\n') {
            Some(end) => &rest[..=end],
            None if rest.len() > HEAD_READ => rest,
            None => &[],
        };
        if !line.is_empty() {
            let mut decoder = Decoder::new(Output::Check);
            decoder
                .decode(line, &mut Vec::new())
                .map_err(ExchangeError::FirstChunk)?;
            return Ok(());
        }
        response.reserve(HEAD_READ);
        match upstream.read_buf(response).await {
            Ok(0) => return Err(ExchangeError::Truncated),
            Ok(_) => {}
            Err(error) => return Err(ExchangeError::Io(error)),
        }
    }
}

/// Reads the next response head at the start of `response` (bytes already there first, then
/// from `upstream`). `upgrade`: the request asked to switch protocols, so a 101 is a final head.
pub async fn read_head<T>(
    upstream: &mut Upstream,
    response: &mut Vec<u8>,
    head_request: bool,
    upgrade: bool,
    emit: &mut impl FnMut(&FinalHead<'_, '_>) -> T,
) -> Result<Response<T>, ExchangeError> {
    let mut received = !response.is_empty();
    loop {
        if !response.is_empty() {
            if let Some(head) = wire::parse_response(response, head_request, upgrade, &mut *emit)? {
                return Ok(head);
            }
            if response.len() > MAX_RESPONSE_HEAD {
                return Err(ExchangeError::HeadTooLarge);
            }
        }
        response.reserve(HEAD_READ);
        match upstream.read_buf(response).await {
            Ok(0) if received => return Err(ExchangeError::Truncated),
            Ok(0) => return Err(ExchangeError::ClosedEarly),
            Ok(_) => received = true,
            Err(error) if received => return Err(ExchangeError::Io(error)),
            Err(error) => return Err(ExchangeError::Reset(error)),
        }
    }
}

impl ExchangeError {
    /// The backend answered, but with something lb cannot relay: it is not asked again.
    pub fn is_malformed(&self) -> bool {
        matches!(
            self,
            ExchangeError::Response(_)
                | ExchangeError::FirstChunk(_)
                | ExchangeError::Truncated
                | ExchangeError::HeadTooLarge
        )
    }
}

/// Why a streamed body ended before its end.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("backend closed the connection before the end of the body")]
    Truncated,
    #[error("backend connection failed during the body")]
    Io(#[from] io::Error),
    #[error("malformed chunked body from the backend: {0}")]
    Chunked(#[from] ChunkError),
}

/// A backend's response body read from its plain socket, for an HTTP/2 client's stream.
/// Chunked bodies are decoded (HTTP/2 frames the body its own way). The in-flight guard lives
/// as long as the body; the socket goes back to the backend's idle set only after the body's
/// last byte, with nothing behind it.
pub struct PlainBody {
    /// `None` once the body ended (the socket went back to the idle set or was closed).
    upstream: Option<Upstream>,
    /// Bytes read and not yet given out.
    buffer: BytesMut,
    state: BodyState,
    /// The backend connection may take another request after this body.
    reusable: bool,
    /// The request's claim on its backend; `None` for a health probe, whose socket is not kept.
    in_flight: Option<InFlight>,
}

enum BodyState {
    Length(u64),
    Chunked(Decoder),
    UntilClose,
    Done,
}

impl PlainBody {
    /// The body behind `head`, whose first bytes are `response[head.len..]`.
    pub fn new(
        upstream: Upstream,
        head: &ResponseHead,
        response: &[u8],
        in_flight: Option<InFlight>,
    ) -> PlainBody {
        let state = match head.framing {
            Framing::Empty | Framing::Length(0) => BodyState::Done,
            Framing::Length(n) => BodyState::Length(n),
            Framing::Chunked => BodyState::Chunked(Decoder::new(Output::Data)),
            Framing::UntilClose | Framing::Tunnel => BodyState::UntilClose,
        };
        let first = response.get(head.len..).unwrap_or_default();
        let mut body = PlainBody {
            upstream: Some(upstream),
            buffer: BytesMut::from(first),
            state,
            reusable: head.reusable,
            in_flight,
        };
        if matches!(body.state, BodyState::Done) {
            body.finish();
        }
        body
    }

    /// The body ended: the socket goes back if nothing but the body came on it.
    fn finish(&mut self) {
        self.state = BodyState::Done;
        if let Some(upstream) = self.upstream.take() {
            if let (true, true, Some(in_flight)) =
                (self.reusable, self.buffer.is_empty(), &self.in_flight)
            {
                in_flight.backend().connections.put_stream(upstream);
            }
        }
    }

    /// The body cannot go on: the socket closes, and the body ends after this error.
    fn fail(&mut self, error: BodyError) -> BodyError {
        self.upstream = None;
        self.state = BodyState::Done;
        error
    }

    /// Reads more of the body into the buffer; `Ok(0)` at the backend's close.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Some(upstream) = self.upstream.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        self.buffer.reserve(BODY_READ);
        tokio_util::io::poll_read_buf(Pin::new(upstream), cx, &mut self.buffer)
    }
}

impl Body for PlainBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                BodyState::Done => return Poll::Ready(None),
                BodyState::Length(left) => {
                    if !this.buffer.is_empty() {
                        let take = this
                            .buffer
                            .len()
                            .min(usize::try_from(*left).unwrap_or(usize::MAX));
                        let data = this.buffer.split_to(take).freeze();
                        *left -= take as u64;
                        if *left == 0 {
                            this.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                BodyState::Chunked(chunked) => {
                    if !this.buffer.is_empty() {
                        let mut data = Vec::new();
                        match chunked.decode(&this.buffer, &mut data) {
                            Ok(decoded) => {
                                let _ = this.buffer.split_to(decoded.consumed);
                                if decoded.ended {
                                    this.finish();
                                }
                                if !data.is_empty() {
                                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(data)))));
                                }
                                if decoded.ended {
                                    continue;
                                }
                                // Only part of a size line or trailer section: read more.
                            }
                            Err(error) => return Poll::Ready(Some(Err(this.fail(error.into())))),
                        }
                    }
                }
                BodyState::UntilClose => {
                    if !this.buffer.is_empty() {
                        let data = this.buffer.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
            }
            // The buffer is empty and the body goes on: read.
            match ready!(this.poll_fill(cx)) {
                Ok(0) if matches!(this.state, BodyState::UntilClose) => {
                    this.reusable = false;
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(0) => return Poll::Ready(Some(Err(this.fail(BodyError::Truncated)))),
                Ok(_) => {}
                Err(error) => return Poll::Ready(Some(Err(this.fail(error.into())))),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, BodyState::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            BodyState::Done => SizeHint::with_exact(0),
            BodyState::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}
