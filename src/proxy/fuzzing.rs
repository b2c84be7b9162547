//! fuzzing: the HTTP/1 wire functions of `proxy::h1` (request head, chunked bodies, response
//! head rewrite) behind plain types, for the targets in `fuzz/`. Not an API: hidden from the
//! docs, it only calls the engine's own functions and adds no behaviour.

use super::http1::chunked::{Decoder, Output};
use super::http1::wire::{self, BodyFraming, ClientSide, Framing, Response};

/// What lb made of a request head it takes.
#[derive(Debug)]
pub struct RequestView {
    /// Bytes of the head, through its blank line.
    pub len: usize,
    pub method: String,
    pub http11: bool,
    /// The target the backend gets (an absolute-form target's path and query).
    pub target: Vec<u8>,
    /// An absolute-form target's authority, else `Host`; `None` for HTTP/1.0 without either.
    pub host: Option<Vec<u8>>,
    /// `Some(n)` for a `Content-Length` body (0 without a body), `None` for a chunked one.
    pub body_len: Option<u64>,
    pub close: bool,
    pub upgrade: bool,
    /// The header lines the backend gets, each ending CRLF.
    pub backend_fields: Vec<u8>,
}

/// The request head at the start of `buf` as lb reads it: `Err(())` when lb does not take it as
/// is (refused, or an `HTTP/1.x` above 1.1 it parses again), `Ok(None)` when it is not complete.
#[allow(clippy::result_unit_err)]
pub fn parse_request_head(buf: &[u8], client_ip: &[u8]) -> Result<Option<RequestView>, ()> {
    let mut backend_fields = Vec::new();
    let Some(head) =
        wire::parse_request(buf, client_ip, true, false, &mut backend_fields).map_err(|_| ())?
    else {
        return Ok(None);
    };
    Ok(Some(RequestView {
        len: head.len,
        method: head.method.as_str().to_owned(),
        http11: head.http11,
        target: buf[head.target].to_vec(),
        host: head.host.map(|host| buf[host].to_vec()),
        body_len: match head.body {
            BodyFraming::None => Some(0),
            BodyFraming::Length(n) => Some(n),
            BodyFraming::Chunked => None,
        },
        close: head.close,
        upgrade: head.upgrade.is_some(),
        backend_fields,
    }))
}

/// Where a chunked body ended, as [`decode_chunked`] saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkedEnd {
    /// Every byte given belongs to the body, which goes on.
    More,
    /// The body's last byte is this many bytes into the input.
    End(usize),
    /// Malformed: the stream cannot be framed past it.
    Error,
}

/// Decodes `pieces` (one body's bytes, in order, as reads deliver them) as the engine does,
/// keeping what the decoder leaves unconsumed for the next piece: what it wrote (the data, or
/// lb's own chunked framing with `rechunk`), and where the body ended over the whole input.
pub fn decode_chunked(pieces: &[&[u8]], rechunk: bool) -> (Vec<u8>, ChunkedEnd) {
    let mut decoder = Decoder::new(if rechunk {
        Output::Chunked
    } else {
        Output::Data
    });
    let mut out = Vec::new();
    let mut pending = Vec::new();
    let mut consumed_total = 0;
    for piece in pieces {
        pending.extend_from_slice(piece);
        match decoder.decode(&pending, &mut out) {
            Ok(decoded) => {
                consumed_total += decoded.consumed;
                if decoded.ended {
                    return (out, ChunkedEnd::End(consumed_total));
                }
                pending.drain(..decoded.consumed);
            }
            Err(_) => return (out, ChunkedEnd::Error),
        }
    }
    (out, ChunkedEnd::More)
}

/// How lb delimits a response body it relays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayFraming {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
    Tunnel,
}

/// What lb made of a backend's response head.
#[derive(Debug)]
pub struct ResponseView {
    pub len: usize,
    pub status: u16,
    /// `None` for an interim (1xx) head.
    pub framing: Option<RelayFraming>,
    /// The head the client gets (empty for an interim head).
    pub client_head: Vec<u8>,
    pub reusable: bool,
}

/// The response head at the start of `buf` as lb reads it and rewrites it for a client
/// (`http11`, and closing after it with `close`): `Err(())` when lb refuses it (a bad gateway),
/// `Ok(None)` when it is not complete yet.
#[allow(clippy::result_unit_err)]
pub fn rewrite_response_head(
    buf: &[u8],
    head_request: bool,
    upgrade: bool,
    http11: bool,
    close: bool,
) -> Result<Option<ResponseView>, ()> {
    let parsed = wire::parse_response(buf, head_request, upgrade, |head| {
        let mut out = Vec::new();
        wire::push_client_head(&mut out, head, ClientSide { http11, close });
        out
    })
    .map_err(|_| ())?;
    Ok(parsed.map(|response| match response {
        Response::Informational { len, status } => ResponseView {
            len,
            status,
            framing: None,
            client_head: Vec::new(),
            reusable: true,
        },
        Response::Final(head, client_head) => ResponseView {
            len: head.len,
            status: head.status,
            framing: Some(match head.framing {
                Framing::Empty => RelayFraming::Empty,
                Framing::Length(n) => RelayFraming::Length(n),
                Framing::Chunked => RelayFraming::Chunked,
                Framing::UntilClose => RelayFraming::UntilClose,
                Framing::Tunnel => RelayFraming::Tunnel,
            }),
            client_head,
            reusable: head.reusable,
        },
    }))
}
