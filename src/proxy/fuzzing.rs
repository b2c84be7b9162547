//! fuzzing: the HTTP/1 wire functions of `proxy::h1` (request head, chunked bodies, response
//! head rewrite) behind plain types, for the targets in `fuzz/`. Not an API: hidden from the
//! docs, it only calls the request path's own functions and adds no behaviour.

use super::h1::chunked::{Chunked, Scan};
use super::h1::wire::{self, Framing, Response};

/// What lb made of a request head it takes.
#[derive(Debug)]
pub struct RequestView {
    /// Bytes of the head, through its blank line.
    pub len: usize,
    pub method: String,
    pub target: Vec<u8>,
    pub host: Vec<u8>,
    pub body_len: u64,
    pub close: bool,
    /// The header lines the backend gets, each ending CRLF.
    pub backend_fields: Vec<u8>,
}

/// The request head at the start of `buf` as lb reads it: `Err(())` when lb does not take it
/// (refused, or left to another engine), `Ok(None)` when it is not complete yet.
#[allow(clippy::result_unit_err)]
pub fn parse_request_head(buf: &[u8], client_ip: &[u8]) -> Result<Option<RequestView>, ()> {
    let mut backend_fields = Vec::new();
    let Some(head) = wire::parse_request(buf, client_ip, &mut backend_fields).map_err(|_| ())?
    else {
        return Ok(None);
    };
    Ok(Some(RequestView {
        len: head.len,
        method: head.method.as_str().to_owned(),
        target: buf[head.target].to_vec(),
        host: buf[head.host].to_vec(),
        body_len: head.body_len,
        close: head.close,
        backend_fields,
    }))
}

/// Where a chunked body ended, as [`scan_chunked`] saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkedEnd {
    /// Every byte given belongs to the body, which goes on.
    More,
    /// The body's last byte is this many bytes into the input.
    End(usize),
    /// Malformed: the stream cannot be framed past it.
    Error,
}

/// Scans `pieces` (one body's bytes, in order) as lb follows a chunked body: the chunk data
/// decoded, and where the body ended (counted over the concatenated pieces).
pub fn scan_chunked(pieces: &[&[u8]]) -> (Vec<u8>, ChunkedEnd) {
    let mut chunked = Chunked::new();
    let mut data = Vec::new();
    let mut offset = 0;
    for piece in pieces {
        let scanned = chunked.scan_with(piece, |range| data.extend_from_slice(&piece[range]));
        match scanned {
            Ok(Scan::More) => offset += piece.len(),
            Ok(Scan::End(n)) => return (data, ChunkedEnd::End(offset + n)),
            Err(_) => return (data, ChunkedEnd::Error),
        }
    }
    (data, ChunkedEnd::More)
}

/// How lb delimits a response body it relays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

/// What lb made of a backend's response head.
#[derive(Debug)]
pub struct ResponseView {
    pub len: usize,
    /// The final status; 0 for an interim (1xx) head.
    pub status: u16,
    /// `None` for an interim (1xx) head.
    pub framing: Option<BodyFraming>,
    /// The head the HTTP/1.1 client gets (empty for an interim head).
    pub client_head: Vec<u8>,
    pub reusable: bool,
}

/// The response head at the start of `buf` as lb reads and rewrites it for its client: `Err(())`
/// when lb refuses it (a bad gateway), `Ok(None)` when it is not complete yet.
#[allow(clippy::result_unit_err)]
pub fn rewrite_response_head(
    buf: &[u8],
    head_request: bool,
    close_client: bool,
) -> Result<Option<ResponseView>, ()> {
    let parsed = wire::parse_response(buf, head_request, |head| {
        let mut out = Vec::new();
        wire::push_client_head(&mut out, head, close_client);
        out
    })
    .map_err(|_| ())?;
    Ok(parsed.map(|response| match response {
        Response::Informational { len } => ResponseView {
            len,
            status: 0,
            framing: None,
            client_head: Vec::new(),
            reusable: true,
        },
        Response::Final(head, client_head) => ResponseView {
            len: head.len,
            status: head.status,
            framing: Some(match head.framing {
                Framing::Empty => BodyFraming::Empty,
                Framing::Length(n) => BodyFraming::Length(n),
                Framing::Chunked => BodyFraming::Chunked,
                Framing::UntilClose => BodyFraming::UntilClose,
            }),
            client_head,
            reusable: head.reusable,
        },
    }))
}
