//! Body types at the two edges of the proxy: what lb sends upstream and what it answers with.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::h1::backend::PlainBody;
use super::upstream::Lease;
use crate::topology::InFlight;

/// A response to the client: a backend's streamed body (through hyper's client, or read from a
/// plain socket by lb's own HTTP/1.1 code), or a short body lb made itself.
pub enum ResponseBody {
    Hyper(HyperBody),
    Plain(PlainBody),
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
    pub fn local(text: &'static str) -> ResponseBody {
        ResponseBody::Local(Some(Bytes::from_static(text.as_bytes())))
    }

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

/// A request body that can be offered to a second backend if the first connect failed.
///
/// The client's body sits in a shared slot until the upstream connection first polls it. A
/// connect failure happens before any poll, so the slot still holds the body and a retry can
/// send it elsewhere; once polled, the body belongs to that attempt and is never replayed.
pub struct RequestBody {
    state: RequestState,
    size_hint: SizeHint,
}

enum RequestState {
    Empty,
    Waiting(BodySlot),
    Streaming(Incoming),
    Gone,
}

/// NOTE: a per-request, uncontended mutex, locked once when the body is first polled; it is
/// never shared between requests.
#[allow(clippy::disallowed_types)]
pub type BodySlot = Arc<std::sync::Mutex<Option<Incoming>>>;

impl RequestBody {
    /// Wraps a client body. `None` for the slot when the request has no body at all.
    pub fn new(body: Incoming) -> (RequestBody, Option<BodySlot>) {
        if body.is_end_stream() {
            return (RequestBody::empty(), None);
        }
        let size_hint = body.size_hint();
        #[allow(clippy::disallowed_types)]
        let slot: BodySlot = Arc::new(std::sync::Mutex::new(Some(body)));
        (RequestBody::from_slot(&slot, size_hint), Some(slot))
    }

    pub fn empty() -> RequestBody {
        RequestBody {
            state: RequestState::Empty,
            size_hint: SizeHint::with_exact(0),
        }
    }

    pub fn from_slot(slot: &BodySlot, size_hint: SizeHint) -> RequestBody {
        RequestBody {
            state: RequestState::Waiting(Arc::clone(slot)),
            size_hint,
        }
    }

    pub fn size_hint_of(&self) -> SizeHint {
        self.size_hint
    }
}

/// True while nobody has started sending the slot's body.
pub fn slot_untouched(slot: &BodySlot) -> bool {
    slot.lock().map(|s| s.is_some()).unwrap_or(false)
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                RequestState::Empty | RequestState::Gone => return Poll::Ready(None),
                RequestState::Streaming(body) => return Pin::new(body).poll_frame(cx),
                RequestState::Waiting(slot) => {
                    let taken = slot.lock().ok().and_then(|mut s| s.take());
                    this.state = match taken {
                        Some(body) => RequestState::Streaming(body),
                        // Another attempt owns it; this one has nothing to send.
                        None => RequestState::Gone,
                    };
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.state {
            RequestState::Empty | RequestState::Gone => true,
            RequestState::Streaming(body) => body.is_end_stream(),
            RequestState::Waiting(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.state {
            RequestState::Streaming(body) => body.size_hint(),
            _ => self.size_hint,
        }
    }
}
