//! The bytes of the native HTTP/1.1 path: reading a client's request head and writing the
//! backend's, reading a backend's response head and writing the client's. Pure functions over
//! buffers; no I/O, no topology.
//!
//! A request head is taken only when it is plainly ordinary (see [`parse_request`]); anything
//! else is left to hyper, so the strict cases (smuggling, odd targets, HTTP/1.0, upgrades,
//! chunked or oddly framed bodies) keep one authority.

use std::ops::Range;
use std::time::SystemTime;

use http::Method;

use super::super::headers::is_hop_by_hop_name as is_hop_by_hop;

/// Header fields read per head at most, as hyper's default; more is hyper's to refuse (431) on
/// the client side, and a bad gateway on the backend side.
pub const MAX_HEADERS: usize = 100;

/// Why a request head is not for this path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandOff {
    /// Not HTTP/1.1, a chunked or oddly framed body, an upgrade, an unusual target or header, or a
    /// head httparse refuses: hyper decides what to do with it.
    NotPlain,
}

/// A request head this path serves: an HTTP/1.1 request with an origin-form target, one `Host`,
/// and no body or one of a single plain `Content-Length`.
#[derive(Debug)]
pub struct RequestHead {
    /// Bytes of the head, through its blank line.
    pub len: usize,
    pub method: Method,
    /// The request target (path and query) within the buffer.
    pub target: Range<usize>,
    /// Where the path ends within the target (the query starts).
    pub path_end: usize,
    /// The `Host` value within the buffer.
    pub host: Range<usize>,
    /// The client asked to close the connection after this exchange.
    pub close: bool,
    /// The body's length (`Content-Length`; 0 without one): it follows the head.
    pub body_len: u64,
}

/// Reads a request head from the start of `buf`. On success, `headers` holds the header lines
/// the backend gets (hop-by-hop ones and those `Connection` names left out, `X-Forwarded-*`
/// added), each ending CRLF, without the request line and without the final blank line.
///
/// `Ok(None)`: the head is not complete yet.
pub fn parse_request(
    buf: &[u8],
    client: &[u8],
    headers: &mut Vec<u8>,
) -> Result<Option<RequestHead>, HandOff> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut fields);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(HandOff::NotPlain),
    };
    if request.version != Some(1) {
        return Err(HandOff::NotPlain);
    }
    let (Some(method), Some(target)) = (request.method, request.path) else {
        return Err(HandOff::NotPlain);
    };
    let method = match method {
        "GET" => Method::GET,
        "HEAD" => Method::HEAD,
        "DELETE" => Method::DELETE,
        "OPTIONS" => Method::OPTIONS,
        "POST" => Method::POST,
        "PUT" => Method::PUT,
        "PATCH" => Method::PATCH,
        // CONNECT, TRACE and extension methods: rare, and hyper knows them.
        _ => return Err(HandOff::NotPlain),
    };
    let path_len = plain_target(target.as_bytes()).ok_or(HandOff::NotPlain)?;
    let target = offset_in(buf, target.as_bytes());

    // First pass: what the head asks of the connection, and which names `Connection` lists.
    let mut host = None;
    let mut body_len = None;
    let mut close = false;
    let mut connection_names_others = false;
    for field in request.headers.iter() {
        let name = field.name;
        if name.eq_ignore_ascii_case("host") {
            if host.is_some() {
                return Err(HandOff::NotPlain);
            }
            host = Some(field.value);
        } else if name.eq_ignore_ascii_case("content-length") {
            // One plain decimal; a list, a sign, a second field are hyper's to judge.
            if body_len.is_some() {
                return Err(HandOff::NotPlain);
            }
            body_len = Some(parse_length(field.value).ok_or(HandOff::NotPlain)?);
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            || name.eq_ignore_ascii_case("upgrade")
            || name.eq_ignore_ascii_case("expect")
        {
            return Err(HandOff::NotPlain);
        } else if name.eq_ignore_ascii_case("connection") {
            for token in tokens(field.value) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if !is_hop_by_hop(token) {
                    connection_names_others = true;
                }
            }
        }
    }
    let Some(host) = host.filter(|h| !h.is_empty() && h.iter().all(|&b| is_visible(b))) else {
        return Err(HandOff::NotPlain);
    };

    // Second pass: the backend's header lines.
    headers.clear();
    let mut forwarded_for_prior = false;
    for field in request.headers.iter() {
        let name = field.name;
        if is_hop_by_hop(name.as_bytes())
            || name.eq_ignore_ascii_case("x-forwarded-host")
            || name.eq_ignore_ascii_case("x-forwarded-proto")
        {
            continue;
        }
        if name.eq_ignore_ascii_case("x-forwarded-for") {
            forwarded_for_prior = true;
            continue;
        }
        // A `Connection` option naming `Host` would leave the backend's request without one,
        // and one naming `Content-Length` without its framing.
        if connection_names_others
            && !name.eq_ignore_ascii_case("host")
            && !name.eq_ignore_ascii_case("content-length")
            && named_by_connection(request.headers, name)
        {
            continue;
        }
        push_field(headers, name.as_bytes(), field.value);
    }
    push_field(headers, b"x-forwarded-host", host);
    headers.extend_from_slice(b"x-forwarded-for: ");
    if forwarded_for_prior {
        // Every earlier field's list, in order, then the client.
        for field in request.headers.iter() {
            if field.name.eq_ignore_ascii_case("x-forwarded-for") {
                let prior = field.value.trim_ascii();
                if !prior.is_empty() {
                    headers.extend_from_slice(prior);
                    headers.extend_from_slice(b", ");
                }
            }
        }
    }
    headers.extend_from_slice(client);
    headers.extend_from_slice(b"\r\nx-forwarded-proto: http\r\n");

    Ok(Some(RequestHead {
        len,
        method,
        path_end: target.start + path_len,
        target,
        host: offset_in(buf, host),
        close,
        body_len: body_len.unwrap_or(0),
    }))
}

/// Writes the request line a backend gets: the backend's `url_path` joined in front of the
/// client's target (`/v1/` + `/users` = `/v1/users`, never a doubled slash at the seam).
pub fn push_request_line(out: &mut Vec<u8>, method: &Method, prefix: &str, target: &[u8]) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    if prefix.ends_with('/') {
        out.extend_from_slice(prefix.as_bytes());
        out.extend_from_slice(target.strip_prefix(b"/").unwrap_or(target));
    } else {
        out.extend_from_slice(prefix.as_bytes());
        out.extend_from_slice(target);
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
}

/// How a response's body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: a response to HEAD, 204, 304.
    Empty,
    Length(u64),
    /// Chunked; relayed as is (the client gets the same `Transfer-Encoding`).
    Chunked,
    /// Until the backend closes; re-framed as chunked for the client.
    UntilClose,
}

/// A backend's response head, as read.
#[derive(Debug)]
pub enum Response<T> {
    /// A 1xx other than 101, `len` bytes: skipped, as hyper's client does.
    Informational { len: usize },
    /// A final head, and what the caller made of it (see [`parse_response`]).
    Final(ResponseHead, T),
}

/// A final response head while it is parsed, for the caller to write on in its own form.
pub struct FinalHead<'b, 'h> {
    pub status: u16,
    pub reason: &'b str,
    fields: &'h [httparse::Header<'b>],
    pub framing: Framing,
    /// What `Content-Length` said, if anything.
    length: Option<u64>,
    /// A `Connection` field names other headers than the hop-by-hop ones.
    connection_names_others: bool,
}

impl<'b> FinalHead<'b, '_> {
    /// The fields that go on to the client: not hop-by-hop or named by `Connection`, and not
    /// `Content-Length` (see [`FinalHead::announced_length`]). With `keep_codings`, a chunked
    /// body's `Transfer-Encoding` fields and its `Trailer` go too, for a body relayed as is.
    pub fn end_to_end(&self, keep_codings: bool) -> impl Iterator<Item = (&'b str, &'b [u8])> + '_ {
        self.fields.iter().filter_map(move |field| {
            let name = field.name;
            let keep = if name.eq_ignore_ascii_case("content-length") {
                false
            } else if name.eq_ignore_ascii_case("transfer-encoding")
                || name.eq_ignore_ascii_case("trailer")
            {
                keep_codings && self.framing == Framing::Chunked
            } else {
                let dropped = is_hop_by_hop(name.as_bytes())
                    || (self.connection_names_others && named_by_connection(self.fields, name));
                !dropped
            };
            keep.then_some((name, field.value))
        })
    }

    /// The `Content-Length` the client gets: the body's, or for a HEAD or 304 answer the one the
    /// backend announced; a 204 has none (RFC 9110 §8.6).
    pub fn announced_length(&self) -> Option<u64> {
        match self.framing {
            Framing::Length(n) => Some(n),
            Framing::Empty if self.status != 204 => self.length,
            _ => None,
        }
    }
}

#[derive(Debug)]
pub struct ResponseHead {
    pub len: usize,
    pub status: u16,
    pub framing: Framing,
    /// The backend connection can take another request after this body.
    pub reusable: bool,
}

/// Why a backend's response cannot be relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadResponse {
    #[error("malformed response head")]
    Malformed,
    #[error("response head over {MAX_HEADERS} fields")]
    TooManyHeaders,
    #[error("unexpected 101 Switching Protocols")]
    UnexpectedUpgrade,
    #[error("invalid Content-Length")]
    BadLength,
}

/// Reads a response head from the start of `buf`; for a final one, `emit` makes of it what the
/// caller needs (the client's head in bytes, or `http` parts) while the fields are borrowed.
///
/// `Ok(None)`: the head is not complete yet.
pub fn parse_response<T>(
    buf: &[u8],
    head_request: bool,
    emit: impl FnOnce(&FinalHead<'_, '_>) -> T,
) -> Result<Option<Response<T>>, BadResponse> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut fields);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(BadResponse::TooManyHeaders),
        Err(_) => return Err(BadResponse::Malformed),
    };
    let (Some(version), Some(status)) = (response.version, response.code) else {
        return Err(BadResponse::Malformed);
    };
    match status {
        // hyper's client refuses these too; relayed, they would be a malformed status line.
        0..=99 => return Err(BadResponse::Malformed),
        101 => return Err(BadResponse::UnexpectedUpgrade),
        100..=199 => return Ok(Some(Response::Informational { len })),
        _ => {}
    }

    let mut length: Option<u64> = None;
    let mut last_coding_field: Option<&[u8]> = None;
    let mut backend_close = version == 0;
    let mut connection_names_others = false;
    for field in response.headers.iter() {
        let name = field.name;
        if name.eq_ignore_ascii_case("content-length") {
            // Repeated fields (or a list) must agree, as RFC 9110 §8.6 allows.
            for value in field.value.split(|&b| b == b',') {
                let n = parse_length(value.trim_ascii()).ok_or(BadResponse::BadLength)?;
                if length.is_some_and(|l| l != n) {
                    return Err(BadResponse::BadLength);
                }
                length = Some(n);
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Several fields form one list; the last coding is what counts.
            last_coding_field = Some(field.value);
        } else if name.eq_ignore_ascii_case("connection") {
            for token in tokens(field.value) {
                if token.eq_ignore_ascii_case(b"close") {
                    backend_close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    if version == 0 {
                        // HTTP/1.0 keep-alive: rare from a backend; not worth trusting.
                        backend_close = true;
                    }
                } else if !is_hop_by_hop(token) {
                    connection_names_others = true;
                }
            }
        }
    }
    let no_body = head_request || status == 204 || status == 304;
    let framing = if no_body {
        Framing::Empty
    } else if let Some(codings) = last_coding_field {
        let chunked_last = codings
            .rsplit(|&b| b == b',')
            .next()
            .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        // Both lengths: the coding wins (RFC 9112 §6.3) and the connection is not trusted after.
        backend_close |= length.is_some();
        if chunked_last {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };

    let head = FinalHead {
        status,
        reason: response.reason.unwrap_or(""),
        fields: response.headers,
        framing,
        length,
        connection_names_others,
    };
    let emitted = emit(&head);
    let head = ResponseHead {
        len,
        status,
        framing,
        reusable: !backend_close && framing != Framing::UntilClose,
    };
    Ok(Some(Response::Final(head, emitted)))
}

/// Writes the head an HTTP/1.1 client gets for `head`: the status line, the end-to-end headers
/// (a chunked body's codings included: it is relayed as is), the length, `Date` if the backend
/// sent none, `Transfer-Encoding: chunked` for a close-delimited body (re-chunked), and
/// `Connection: close` when `close_client`.
pub fn push_client_head(out: &mut Vec<u8>, head: &FinalHead<'_, '_>, close_client: bool) {
    out.extend_from_slice(b"HTTP/1.1 ");
    let mut number = itoa::Buffer::new();
    out.extend_from_slice(number.format(head.status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(head.reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    // Whether a `Date` went out (one a `Connection` option named does not).
    let mut date = false;
    for (name, value) in head.end_to_end(true) {
        push_field(out, name.as_bytes(), value);
        date |= name.eq_ignore_ascii_case("date");
    }
    if let Some(n) = head.announced_length() {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(number.format(n).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !date {
        out.extend_from_slice(b"date: ");
        push_http_date(out);
        out.extend_from_slice(b"\r\n");
    }
    if head.framing == Framing::UntilClose {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if close_client {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The response head hyper sends to its client for `head`: its status, the end-to-end headers
/// and the length. The body goes decoded (`h1::backend::PlainBody`), so no coding is named.
pub fn response_parts(head: &FinalHead<'_, '_>) -> Result<http::Response<()>, BadResponse> {
    use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH};
    let mut response = http::Response::new(());
    *response.status_mut() =
        http::StatusCode::from_u16(head.status).map_err(|_| BadResponse::Malformed)?;
    let headers = response.headers_mut();
    for (name, value) in head.end_to_end(false) {
        // httparse checked the name's and value's bytes already; hyper's client refused a head
        // whose field would not convert, and so does this.
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| BadResponse::Malformed)?;
        let value = HeaderValue::from_bytes(value).map_err(|_| BadResponse::Malformed)?;
        headers.append(name, value);
    }
    if let Some(n) = head.announced_length() {
        headers.insert(CONTENT_LENGTH, HeaderValue::from(n));
    }
    // A reason of the backend's own goes on to HTTP/1.1 clients, as hyper's client keeps it.
    if !head.reason.is_empty() && Some(head.reason) != response.status().canonical_reason() {
        if let Ok(reason) = hyper::ext::ReasonPhrase::try_from(head.reason.as_bytes()) {
            response.extensions_mut().insert(reason);
        }
    }
    Ok(response)
}

/// Writes a short response lb makes itself (404, 502, ...), in the same shape hyper gives it.
pub fn push_local_response(
    out: &mut Vec<u8>,
    status: http::StatusCode,
    extra: &[(&[u8], &[u8])],
    body: &[u8],
    head_request: bool,
    close_client: bool,
) {
    let mut number = itoa::Buffer::new();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(number.format(status.as_u16()).as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in extra {
        push_field(out, name, value);
    }
    if !body.is_empty() {
        out.extend_from_slice(b"content-type: text/plain; charset=utf-8\r\n");
    }
    out.extend_from_slice(b"content-length: ");
    out.extend_from_slice(number.format(body.len()).as_bytes());
    out.extend_from_slice(b"\r\ndate: ");
    push_http_date(out);
    out.extend_from_slice(b"\r\n");
    if close_client {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_request {
        out.extend_from_slice(body);
    }
}

/// The length of the path of an origin-form target whose every byte `http::Uri` accepts too, by
/// the same tables (so both paths route the same text); `None` for any other target, including
/// a fragment or non-ASCII bytes.
fn plain_target(target: &[u8]) -> Option<usize> {
    if target.first() != Some(&b'/') {
        return None;
    }
    let path_len = target
        .iter()
        .position(|&b| b == b'?')
        .unwrap_or(target.len());
    let (path, query) = target.split_at(path_len);
    let path_ok = path.iter().all(|&b| {
        matches!(b, 0x21 | 0x24..=0x3B | 0x3D | 0x40..=0x5F | 0x61..=0x7A | 0x7C | 0x7E | b'"' | b'{' | b'}')
    });
    let query_ok = query
        .iter()
        .all(|&b| matches!(b, 0x21 | 0x24..=0x3B | 0x3D | 0x3F..=0x7E));
    (path_ok && query_ok).then_some(path_len)
}

/// Where `part` (a sub-slice of `buf`) sits in `buf`.
fn offset_in(buf: &[u8], part: &[u8]) -> Range<usize> {
    let start = (part.as_ptr() as usize).saturating_sub(buf.as_ptr() as usize);
    start..start + part.len()
}

fn is_visible(b: u8) -> bool {
    (0x21..0x7F).contains(&b)
}

/// The comma-separated tokens of a list header, trimmed, empty ones skipped.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// Whether any `Connection` field among `fields` lists `name`.
fn named_by_connection(fields: &[httparse::Header<'_>], name: &str) -> bool {
    fields
        .iter()
        .filter(|f| f.name.eq_ignore_ascii_case("connection"))
        .flat_map(|f| tokens(f.value))
        .any(|token| token.eq_ignore_ascii_case(name.as_bytes()))
}

pub fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A decimal length with no sign or space, as RFC 9110 §8.6 writes it.
fn parse_length(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > 19 || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// The current time as an HTTP date, formatted once a second per thread (hyper does the same).
fn push_http_date(out: &mut Vec<u8>) {
    use std::cell::RefCell;
    thread_local! {
        static CACHE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let second = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.0 != second {
            *cache = (second, httpdate::fmt_http_date(now));
        }
        out.extend_from_slice(cache.1.as_bytes());
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(text: &str) -> (Result<Option<RequestHead>, HandOff>, String) {
        let mut headers = Vec::new();
        let parsed = parse_request(text.as_bytes(), b"192.0.2.7", &mut headers);
        (parsed, String::from_utf8(headers).unwrap())
    }

    #[test]
    fn a_plain_get_is_taken_with_forwarding_headers() {
        let text = "GET /a/b?x=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\
                    X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-For: 10.0.0.2 \r\n\
                    X-Forwarded-Host: spoofed\r\n\r\nGET /next";
        let (parsed, headers) = request(text);
        let head = parsed.unwrap().unwrap();
        assert_eq!(head.len, text.len() - "GET /next".len());
        assert_eq!(head.method, Method::GET);
        assert_eq!(&text[head.target.clone()], "/a/b?x=1");
        assert_eq!(&text[head.target.start..head.path_end], "/a/b");
        assert_eq!(&text[head.host.clone()], "example.com");
        assert!(!head.close);
        assert_eq!(
            headers,
            "Host: example.com\r\nAccept: */*\r\nx-forwarded-host: example.com\r\n\
             x-forwarded-for: 10.0.0.1, 10.0.0.2, 192.0.2.7\r\nx-forwarded-proto: http\r\n"
        );
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_stay_behind() {
        let text = "GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Secret\r\n\
                    X-Secret: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\n\
                    Proxy-Connection: x\r\nX-Kept: 2\r\n\r\n";
        let (parsed, headers) = request(text);
        assert!(!parsed.unwrap().unwrap().close);
        assert_eq!(
            headers,
            "Host: h\r\nX-Kept: 2\r\nx-forwarded-host: h\r\nx-forwarded-for: 192.0.2.7\r\n\
             x-forwarded-proto: http\r\n"
        );
        let (parsed, _) = request("GET / HTTP/1.1\r\nHost: h\r\nConnection: Close\r\n\r\n");
        assert!(parsed.unwrap().unwrap().close);
    }

    #[test]
    fn anything_unusual_goes_to_hyper() {
        for text in [
            "GET / HTTP/1.0\r\nHost: h\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /chat HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET / HTTP/1.1\r\nAccept: */*\r\n\r\n",
            "GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET /a#frag HTTP/1.1\r\nHost: h\r\n\r\n",
            "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
            "CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nBad Name: x\r\n\r\n",
        ] {
            assert_eq!(request(text).0.err(), Some(HandOff::NotPlain), "{text}");
        }
        let (parsed, _) = request("DELETE /x HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(parsed.unwrap().unwrap().method, Method::DELETE);
        // A plain length is taken; its field goes to the backend, even if `Connection` names it.
        let text = "POST / HTTP/1.1\r\nHost: h\r\nConnection: content-length\r\n\
                    Content-Length: 5\r\n\r\nhello";
        let (parsed, headers) = request(text);
        let head = parsed.unwrap().unwrap();
        assert_eq!((head.body_len, &text[head.len..]), (5, "hello"));
        assert!(headers.contains("Content-Length: 5\r\n"), "{headers}");
        for odd in ["+5", "5, 5", "0x5", " ", "99999999999999999999"] {
            let text = format!("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: {odd}\r\n\r\n");
            assert_eq!(request(&text).0.err(), Some(HandOff::NotPlain), "{odd}");
        }
        let twice = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(request(twice).0.err(), Some(HandOff::NotPlain));
        assert!(request("GET / HTTP/1.1\r\nHost: h\r\n")
            .0
            .unwrap()
            .is_none());
    }

    #[test]
    fn the_request_line_joins_the_url_path_without_a_doubled_slash() {
        let line = |prefix: &str, target: &str| {
            let mut out = Vec::new();
            push_request_line(&mut out, &Method::GET, prefix, target.as_bytes());
            String::from_utf8(out).unwrap()
        };
        assert_eq!(line("", "/x?q"), "GET /x?q HTTP/1.1\r\n");
        assert_eq!(line("/v1/", "/users?a=1"), "GET /v1/users?a=1 HTTP/1.1\r\n");
        assert_eq!(line("/v1", "/users"), "GET /v1/users HTTP/1.1\r\n");
    }

    fn response(
        text: &str,
        head: bool,
        close: bool,
    ) -> (Result<Option<Response<()>>, BadResponse>, String) {
        let mut out = Vec::new();
        let parsed = parse_response(text.as_bytes(), head, |h| {
            push_client_head(&mut out, h, close)
        });
        (parsed, String::from_utf8(out).unwrap())
    }

    fn final_head(parsed: Result<Option<Response<()>>, BadResponse>) -> ResponseHead {
        match parsed {
            Ok(Some(Response::Final(head, ()))) => head,
            other => panic!("not a final head: {other:?}"),
        }
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let date = "Date: Mon, 30 Nov 2026 10:00:00 GMT\r\n";
        let (parsed, out) = response(
            &format!("HTTP/1.1 200 OK\r\n{date}Content-Length: 3\r\n\r\nok\n"),
            false,
            false,
        );
        let head = final_head(parsed);
        assert_eq!(
            (head.framing, head.reusable, head.status),
            (Framing::Length(3), true, 200)
        );
        assert_eq!(
            out,
            format!("HTTP/1.1 200 OK\r\n{date}content-length: 3\r\n\r\n")
        );

        let (parsed, out) = response(
            &format!("HTTP/1.1 200 OK\r\n{date}Transfer-Encoding: chunked\r\n\r\n"),
            false,
            true,
        );
        assert_eq!(final_head(parsed).framing, Framing::Chunked);
        assert_eq!(
            out,
            format!(
                "HTTP/1.1 200 OK\r\n{date}Transfer-Encoding: chunked\r\nconnection: close\r\n\r\n"
            )
        );

        let (parsed, out) = response(&format!("HTTP/1.1 200 OK\r\n{date}\r\n"), false, false);
        let head = final_head(parsed);
        assert_eq!((head.framing, head.reusable), (Framing::UntilClose, false));
        assert!(out.contains("transfer-encoding: chunked\r\n"));

        let both = format!(
            "HTTP/1.1 200 OK\r\n{date}Content-Length: 9\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        let (parsed, out) = response(&both, false, false);
        let head = final_head(parsed);
        assert_eq!((head.framing, head.reusable), (Framing::Chunked, false));
        assert!(!out.to_ascii_lowercase().contains("content-length"));

        let (parsed, out) = response(
            &format!("HTTP/1.1 304 Not Modified\r\n{date}Content-Length: 9\r\n\r\n"),
            false,
            false,
        );
        assert_eq!(final_head(parsed).framing, Framing::Empty);
        assert!(out.contains("content-length: 9"));
        let (parsed, _) = response(
            &format!("HTTP/1.1 200 OK\r\n{date}Content-Length: 9\r\n\r\n"),
            true,
            false,
        );
        assert_eq!(final_head(parsed).framing, Framing::Empty);
    }

    #[test]
    fn response_hop_by_hop_headers_are_dropped_and_date_added() {
        let text = "HTTP/1.1 201 Made It\r\nConnection: close, X-Internal\r\nX-Internal: 1\r\n\
                    Keep-Alive: timeout=1\r\nX-Kept: 1\r\nContent-Length: 0\r\n\r\n";
        let (parsed, out) = response(text, false, false);
        let head = final_head(parsed);
        assert!(!head.reusable);
        assert!(out.starts_with("HTTP/1.1 201 Made It\r\nX-Kept: 1\r\ncontent-length: 0\r\ndate: "));
        assert!(!out.contains("X-Internal") && !out.contains("Keep-Alive"));
        assert!(!out.to_ascii_lowercase().contains("connection"));
    }

    #[test]
    fn bad_responses_are_named() {
        assert_eq!(
            response("hello\r\n\r\n", false, false).0.err(),
            Some(BadResponse::Malformed)
        );
        assert_eq!(
            response(
                "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                false,
                false
            )
            .0
            .err(),
            Some(BadResponse::BadLength)
        );
        assert_eq!(
            response(
                "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
                false,
                false
            )
            .0
            .err(),
            Some(BadResponse::BadLength)
        );
        assert_eq!(
            response("HTTP/1.1 101 Switching Protocols\r\n\r\n", false, false)
                .0
                .err(),
            Some(BadResponse::UnexpectedUpgrade)
        );
        assert!(matches!(
            response("HTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\n", false, false).0,
            Ok(Some(Response::Informational { len: 37 }))
        ));
        assert!(response("HTTP/1.1 200 OK\r\n", false, false)
            .0
            .unwrap()
            .is_none());
    }

    // === edge cases ===

    #[test]
    fn odd_request_heads_are_handed_off() {
        for text in [
            "GET / HTTP/1.1\r\nHost: h\r\nContent-Length : 5\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding : chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n",
            "GET / HTTP/1.1\r\n Transfer-Encoding: chunked\r\nHost: h\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: +0\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nContent-Length: 1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nTRANSFER-ENCODING: identity\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\rX: 1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n",
        ] {
            assert_eq!(request(text).0.err(), Some(HandOff::NotPlain), "{text:?}");
        }
    }

    /// RFC 9110 7.6.1: a `Connection` option naming `Host` must not make the backend's request lose
    /// its `Host` (the hyper path sets it again from the client's).
    #[test]
    fn connection_naming_host_keeps_host() {
        let (parsed, headers) = request("GET / HTTP/1.1\r\nHost: h\r\nConnection: host\r\n\r\n");
        assert!(parsed.unwrap().is_some());
        assert!(
            headers.to_ascii_lowercase().contains("host: h\r\n"),
            "{headers}"
        );
        assert!(
            headers.starts_with("Host: ")
                || headers.contains("\r\nhost: ")
                || headers.contains("\r\nHost: "),
            "{headers}"
        );
    }

    /// A response whose `Connection` names `Content-Length` must still reach the client framed.
    #[test]
    fn connection_naming_content_length_keeps_the_framing() {
        let (parsed, out) = response(
            "HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 2\r\n\r\nok",
            false,
            false,
        );
        let head = final_head(parsed);
        assert_eq!(head.framing, Framing::Length(2));
        let lower = out.to_ascii_lowercase();
        assert!(
            lower.contains("content-length: 2") || lower.contains("transfer-encoding: chunked"),
            "client head has no framing: {out:?}"
        );
    }

    /// hyper's client refuses a status under 100 (`StatusCode::from_u16`); relayed, it is a
    /// malformed status line for the client.
    #[test]
    fn a_status_under_100_is_refused() {
        let (parsed, out) = response(
            "HTTP/1.1 099 Odd\r\nContent-Length: 0\r\n\r\n",
            false,
            false,
        );
        assert!(parsed.is_err(), "relayed as {out:?}");
    }

    /// Several `Transfer-Encoding` fields are one list; the client gets all of them as they were
    /// (the hyper path drops every coding label).
    #[test]
    fn every_transfer_coding_reaches_the_client() {
        let (parsed, out) = response(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
            false,
        );
        assert_eq!(final_head(parsed).framing, Framing::Chunked);
        assert!(out.contains("gzip"), "{out:?}");
    }

    /// A Content-Length list or repeated field the backend sent is relayed as one canonical
    /// `content-length: N`.
    #[test]
    fn a_content_length_list_is_normalised() {
        let (parsed, out) = response(
            "HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\nContent-Length: 2\r\n\r\nok",
            false,
            false,
        );
        assert_eq!(final_head(parsed).framing, Framing::Length(2));
        assert_eq!(
            out.to_ascii_lowercase().matches("content-length").count(),
            1,
            "{out:?}"
        );
        assert!(!out.contains("2, 2"), "{out:?}");
    }

    /// RFC 9110 8.6: no Content-Length in a 204.
    #[test]
    fn no_content_length_on_204() {
        let (parsed, out) = response(
            "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
            false,
            false,
        );
        assert_eq!(final_head(parsed).framing, Framing::Empty);
        assert!(
            !out.to_ascii_lowercase().contains("content-length"),
            "{out:?}"
        );
    }
}
