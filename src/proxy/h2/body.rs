//! Body types at the two edges of the proxy: an HTTP/2 client's request body on its way to a
//! backend ([`RequestBody`]) and what lb answers an HTTP/2 client with ([`ResponseBody`]).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use h2::RecvStream;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

use super::super::http1::{chunked, wire};
pub use super::super::sequence::MAX_BUFFERED_BODY;
use super::super::timer::within;
use super::super::upstream::client::PlainBody;

/// A response to the client: a backend's body read from its socket by lb's own HTTP/1.1 code,
/// or a short body lb made itself.
pub enum ResponseBody {
    /// A backend's body.
    Plain(PlainBody),
    /// A body lb made itself (an error page), sent in one frame; `None` once sent or when empty.
    Local(Option<Bytes>),
}

/// Why a backend's body stopped short; the engine resets the client's stream with it.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

impl ResponseBody {
    /// A short fixed body lb answers with itself.
    pub fn local(text: &'static str) -> ResponseBody {
        ResponseBody::Local(Some(Bytes::from_static(text.as_bytes())))
    }

    /// No body at all.
    pub fn empty() -> ResponseBody {
        ResponseBody::Local(None)
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            ResponseBody::Plain(plain) => Pin::new(plain).poll_frame(cx).map_err(Into::into),
            ResponseBody::Local(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Plain(plain) => plain.is_end_stream(),
            ResponseBody::Local(data) => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Plain(plain) => plain.size_hint(),
            ResponseBody::Local(Some(data)) => SizeHint::with_exact(data.len() as u64),
            ResponseBody::Local(None) => SizeHint::with_exact(0),
        }
    }
}

/// An HTTP/2 client's request body, framed as its backend gets it over HTTP/1.1.
///
/// A body up to [`MAX_BUFFERED_BODY`] is read whole before any backend is picked ([`read`]):
/// `h2` checks DATA against `content-length` and the trailers as they arrive, so a malformed
/// request is refused (the stream reset) before a backend sees a byte of it, as RFC 9113
/// §8.1.1 requires, and any attempt can send it again. A larger body streams: its first part
/// goes with the head, the rest as it comes (`h2::request`); once any of it went, it is
/// the attempt's and is never sent again.
pub enum RequestBody {
    /// The HEADERS frame ended the stream (a GET, say): no framing field, no body.
    None,
    /// Read whole: `framed` is what goes behind the head (`content-length` bytes, or chunked
    /// with the trailers).
    Whole { framed: Vec<u8>, chunked: bool },
    /// Larger: `first` (framed) goes with the head, then the rest of `recv`.
    Streamed(Streamed),
}

/// The rest of a body larger than [`MAX_BUFFERED_BODY`].
pub struct Streamed {
    /// What was read before the body turned out large, framed as it goes.
    pub first: Vec<u8>,
    pub recv: RecvStream,
    /// No `content-length` was announced: the body goes chunked (its trailers too).
    pub chunked: bool,
    /// The announced length, when there was one.
    pub length: Option<u64>,
    /// Some of it went to a backend: it cannot be sent again.
    pub started: bool,
}

/// The client's stream failed while its body was read: it is malformed (`h2` has reset the
/// stream) or the client went away or was silent past the deadline.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("request body refused: {0}")]
    Stream(#[from] h2::Error),
    #[error("request body not received in time")]
    TimedOut,
}

impl RequestBody {
    /// Whether an attempt that failed may send this body again.
    pub fn replayable(&self) -> bool {
        !matches!(self, RequestBody::Streamed(s) if s.started)
    }

    /// Writes the framing field the backend's head gets for this body.
    pub fn push_framing(&self, out: &mut Vec<u8>) {
        let (chunked, length) = match self {
            RequestBody::None => return,
            RequestBody::Whole { framed, chunked } => (*chunked, Some(framed.len() as u64)),
            RequestBody::Streamed(s) => (s.chunked, s.length),
        };
        match (chunked, length) {
            (false, Some(n)) => {
                out.extend_from_slice(b"content-length: ");
                out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            _ => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        }
    }

    /// What goes behind the head in the first write.
    pub fn first(&self) -> &[u8] {
        match self {
            RequestBody::None => &[],
            RequestBody::Whole { framed, .. } => framed,
            RequestBody::Streamed(s) => &s.first,
        }
    }
}

/// Reads the body of a stream whose HEADERS frame did not end it, by `deadline` (on `timer`):
/// whole when it ends within [`MAX_BUFFERED_BODY`], else its first part (see [`RequestBody`]).
/// `length`: what `content-length` announced.
pub async fn read(
    mut recv: RecvStream,
    length: Option<u64>,
    timer: Pin<&mut tokio::time::Sleep>,
    deadline: Instant,
) -> Result<RequestBody, ReadError> {
    // A body announced as larger than can be held streams from its first byte.
    let holdable = length.is_none_or(|n| n <= MAX_BUFFERED_BODY as u64);
    let mut data = Vec::new();
    let read = async {
        if !holdable {
            return Ok(None);
        }
        loop {
            match recv.data().await {
                Some(Ok(chunk)) => {
                    let _ = recv.flow_control().release_capacity(chunk.len());
                    data.extend_from_slice(&chunk);
                    if data.len() > MAX_BUFFERED_BODY {
                        return Ok(None);
                    }
                }
                // RST_STREAM(NO_ERROR) is an early end the client asks for (RFC 9113 §8.1).
                Some(Err(error)) if error.reason() == Some(h2::Reason::NO_ERROR) => break,
                Some(Err(error)) => return Err(ReadError::Stream(error)),
                None => break,
            }
        }
        // The DATA frames are over: trailers, if any, and `h2`'s last checks, come next.
        Ok(Some(recv.trailers().await?))
    };
    let whole = within(timer, deadline, read)
        .await
        .ok_or(ReadError::TimedOut)??;
    let chunked = length.is_none();
    let Some(trailers) = whole else {
        let first = if chunked {
            let mut first = Vec::with_capacity(data.len() + 16);
            if !data.is_empty() {
                chunked::push_chunk(&mut first, &data);
            }
            first
        } else {
            data
        };
        return Ok(RequestBody::Streamed(Streamed {
            first,
            recv,
            chunked,
            length,
            started: false,
        }));
    };
    Ok(match trailers {
        // Trailers go only in chunked framing.
        Some(trailers) => {
            let mut framed = Vec::with_capacity(data.len() + 64);
            if !data.is_empty() {
                chunked::push_chunk(&mut framed, &data);
            }
            push_last_chunk(&mut framed, Some(&trailers));
            RequestBody::Whole {
                framed,
                chunked: true,
            }
        }
        None => RequestBody::Whole {
            framed: data,
            chunked: false,
        },
    })
}

/// The last chunk of a chunked body, with its trailer section when there is one (hop-by-hop
/// fields left out, as a head's).
pub fn push_last_chunk(out: &mut Vec<u8>, trailers: Option<&HeaderMap>) {
    out.extend_from_slice(b"0\r\n");
    if let Some(trailers) = trailers {
        for (name, value) in trailers {
            if !super::super::headers::is_hop_by_hop_name(name.as_str().as_bytes()) {
                wire::push_field(out, name.as_str().as_bytes(), value.as_bytes());
            }
        }
    }
    out.extend_from_slice(b"\r\n");
}
