//! Body types at the two edges of the proxy: what lb sends upstream and what it answers with.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::h1::backend::PlainBody;
use super::upstream::Lease;
pub use crate::idle_connections::RequestBody;
use crate::topology::InFlight;

/// A response to the client: a backend's streamed body (through hyper's client, or read from a
/// plain socket by lb's own HTTP/1.1 code), or a short body lb made itself.
pub enum ResponseBody {
    /// A backend's body read by hyper's client.
    Hyper(HyperBody),
    /// A backend's body read by lb's own HTTP/1.1 code.
    Plain(PlainBody),
    /// A body lb made itself (an error page), sent in one frame; `None` once sent or when empty.
    Local(Option<Bytes>),
}

/// Why a backend's body stopped short; hyper ends the client's stream (or connection) with it.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// Streams a backend's body read by hyper's client. The in-flight guard lives exactly as long as
/// the body, so the backend counts as busy until its response has been fully relayed (or
/// dropped); the connection goes back to the backend's idle set only if the body was read to its
/// end.
pub struct HyperBody {
    body: Incoming,
    ended: bool,
    lease: Option<Lease>,
    in_flight: InFlight,
}

impl HyperBody {
    /// Wraps a backend's body with the connection's lease and the backend's in-flight guard.
    pub fn new(body: Incoming, lease: Lease, in_flight: InFlight) -> HyperBody {
        HyperBody {
            body,
            ended: false,
            lease: Some(lease),
            in_flight,
        }
    }
}

impl Drop for HyperBody {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            // A body cut short (client gone) leaves the connection mid-message: close it.
            if self.ended || self.body.is_end_stream() {
                lease.release(self.in_flight.backend());
            }
        }
    }
}

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
            ResponseBody::Hyper(upstream) => {
                let polled = Pin::new(&mut upstream.body).poll_frame(cx);
                if let Poll::Ready(None) = polled {
                    upstream.ended = true;
                }
                polled.map_err(Into::into)
            }
            ResponseBody::Plain(plain) => Pin::new(plain).poll_frame(cx).map_err(Into::into),
            ResponseBody::Local(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Hyper(upstream) => upstream.body.is_end_stream(),
            ResponseBody::Plain(plain) => plain.is_end_stream(),
            ResponseBody::Local(data) => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Hyper(upstream) => upstream.body.size_hint(),
            ResponseBody::Plain(plain) => plain.size_hint(),
            ResponseBody::Local(Some(data)) => SizeHint::with_exact(data.len() as u64),
            ResponseBody::Local(None) => SizeHint::with_exact(0),
        }
    }
}
