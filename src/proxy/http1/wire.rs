//! The bytes of lb's HTTP/1.x engine: reading a client's request head and writing the backend's,
//! reading a backend's response head and writing the client's. Pure functions over buffers; no
//! I/O, no topology.
//!
//! Heads are read by httparse, the one HTTP/1 parser in lb; what httparse leaves to its caller
//! (RFC 9112's rules on `Host`, framing fields, targets, versions) is decided here, once, for
//! every request, and a request lb refuses never reaches a backend.

use std::ops::Range;
use std::time::SystemTime;

use http::{Method, StatusCode};

pub use super::super::headers::push_field;
use super::super::headers::{
    connection_names_others, is_hop_by_hop, is_hop_by_hop_name, list_tokens,
};
use super::super::headers::{push_upstream_fields, Forwarding};

/// Header fields read per head at most, as hyper's default; more is a 431 on the client side,
/// and a bad gateway on the backend side.
pub const MAX_HEADERS: usize = 100;

/// A request head lb answers itself, then closes the connection: what follows the head cannot be
/// framed with confidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub text: &'static str,
}

impl Refusal {
    const fn bad(text: &'static str) -> Refusal {
        Refusal {
            status: StatusCode::BAD_REQUEST,
            text,
        }
    }
}

/// Why [`parse_request`] took no head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// Answer and close.
    Refused(Refusal),
    /// The request line says `HTTP/1.x` with x above 1, at this offset: served as HTTP/1.1
    /// (RFC 9110 §2.5) once the caller has written `1` there and parsed again.
    LaterMinor(usize),
}

impl From<Refusal> for HeadError {
    fn from(refusal: Refusal) -> HeadError {
        HeadError::Refused(refusal)
    }
}

/// How a request's body is framed (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    None,
    Length(u64),
    Chunked,
}

/// A request head the engine serves.
#[derive(Debug)]
pub struct RequestHead {
    /// Bytes of the head, through its blank line.
    pub len: usize,
    pub method: Method,
    /// HTTP/1.1 (or a later 1.x); false for HTTP/1.0.
    pub http11: bool,
    /// The target the backend gets, within the buffer: the path and query (of an origin-form
    /// target, or what follows an absolute-form target's authority, possibly empty: then `/`),
    /// or `*`.
    pub target: Range<usize>,
    /// Where the path ends within the buffer (the query starts).
    pub path_end: usize,
    /// The host the request is for: an absolute-form target's authority, else `Host`; `None`
    /// for an HTTP/1.0 request without either.
    pub host: Option<Range<usize>>,
    /// The connection closes after this exchange (HTTP/1.1 `close`, HTTP/1.0 without
    /// `keep-alive`).
    pub close: bool,
    pub body: BodyFraming,
    /// An HTTP/1.1 client waits for `100 Continue` before sending its body.
    pub expect_continue: bool,
    /// The protocol an HTTP/1.1 client asks to switch to (`Connection: upgrade` + `Upgrade`).
    pub upgrade: Option<Range<usize>>,
}

const NO_HOST: Refusal = Refusal::bad("missing Host header\n");
const TWO_HOSTS: Refusal = Refusal::bad("more than one Host header\n");
const BAD_HOST: Refusal = Refusal::bad("invalid Host header\n");
const BAD_TARGET: Refusal = Refusal::bad("invalid request target\n");
const BAD_LENGTH: Refusal = Refusal::bad("invalid Content-Length\n");
const LENGTH_AND_CODING: Refusal = Refusal::bad("Content-Length with Transfer-Encoding\n");
const CODING_NOT_CHUNKED: Refusal = Refusal::bad("Transfer-Encoding does not end in chunked\n");
const CODING_IN_HTTP10: Refusal = Refusal::bad("Transfer-Encoding in an HTTP/1.0 request\n");
const MALFORMED: Refusal = Refusal::bad("malformed request\n");
const TOO_LARGE: Refusal = Refusal {
    status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
    text: "request header fields too large\n",
};
const UNKNOWN_CODING: Refusal = Refusal {
    status: StatusCode::NOT_IMPLEMENTED,
    text: "transfer coding not implemented\n",
};
const NO_CONNECT: Refusal = Refusal {
    status: StatusCode::NOT_IMPLEMENTED,
    text: "CONNECT not supported\n",
};
const BAD_EXPECT: Refusal = Refusal {
    status: StatusCode::EXPECTATION_FAILED,
    text: "expectation not supported\n",
};
/// A head over the size limit.
pub const HEAD_TOO_LARGE: Refusal = TOO_LARGE;
/// A head begun and not finished within `header_timeout` (HAProxy answers the same).
pub const HEAD_TIMED_OUT: Refusal = Refusal {
    status: StatusCode::REQUEST_TIMEOUT,
    text: "request head timed out\n",
};
/// A chunked request body that breaks its framing.
pub const BAD_CHUNKED: Refusal = Refusal::bad("malformed chunked body\n");

/// What a request head's fields ask of the connection and say of the body, from one pass.
struct HeadFields<'b> {
    host: Option<&'b [u8]>,
    length: Option<u64>,
    codings: Codings,
    close: bool,
    keep_alive: bool,
    connection_upgrade: bool,
    upgrade: Option<&'b [u8]>,
    expect_continue: bool,
}

impl<'b> HeadFields<'b> {
    /// Reads `fields`, refusing a repeated or invalid `Host` (a missing one in HTTP/1.1), a
    /// repeated or invalid `Content-Length` and an expectation other than `100-continue`.
    fn read(fields: &[httparse::Header<'b>], http11: bool) -> Result<HeadFields<'b>, Refusal> {
        let mut said = HeadFields {
            host: None,
            length: None,
            codings: Codings::default(),
            close: false,
            keep_alive: false,
            connection_upgrade: false,
            upgrade: None,
            expect_continue: false,
        };
        for field in fields {
            let name = field.name.as_bytes();
            if name.eq_ignore_ascii_case(b"host") {
                if said.host.is_some() {
                    return Err(TWO_HOSTS);
                }
                said.host = Some(field.value);
            } else if name.eq_ignore_ascii_case(b"content-length") {
                // One decimal, once: RFC 9110 §8.6 lets a recipient take a repeated equal
                // value, and nginx refuses it; lb is the stricter.
                if said.length.is_some() {
                    return Err(BAD_LENGTH);
                }
                said.length = Some(parse_length(field.value).ok_or(BAD_LENGTH)?);
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                said.codings.add(field.value);
            } else if name.eq_ignore_ascii_case(b"connection") {
                for token in list_tokens(field.value) {
                    if token.eq_ignore_ascii_case(b"close") {
                        said.close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        said.keep_alive = true;
                    } else if token.eq_ignore_ascii_case(b"upgrade") {
                        said.connection_upgrade = true;
                    }
                }
            } else if name.eq_ignore_ascii_case(b"upgrade") {
                said.upgrade = said.upgrade.or(Some(field.value));
            } else if name.eq_ignore_ascii_case(b"expect") {
                if !field
                    .value
                    .trim_ascii()
                    .eq_ignore_ascii_case(b"100-continue")
                {
                    return Err(BAD_EXPECT);
                }
                said.expect_continue = http11;
            }
        }
        match said.host {
            // An empty `Host` names no host for an `http` target, which always has one (nginx
            // refuses it too).
            Some(value) if !is_authority(value) => Err(BAD_HOST),
            None if http11 => Err(NO_HOST),
            _ => Ok(said),
        }
    }

    /// How the body is framed (RFC 9112 §6.3), or why lb refuses the framing fields.
    fn body_framing(&self, http11: bool) -> Result<BodyFraming, Refusal> {
        Ok(match (self.codings.seen, self.length) {
            (false, None) => BodyFraming::None,
            (false, Some(n)) => BodyFraming::Length(n),
            (true, _) if !http11 => return Err(CODING_IN_HTTP10),
            (true, Some(_)) => return Err(LENGTH_AND_CODING),
            (true, None) if self.codings.only_chunked() => BodyFraming::Chunked,
            // Another coding before `chunked`: one lb does not implement (RFC 9112 §6.1).
            (true, None) if self.codings.chunked_last => return Err(UNKNOWN_CODING),
            // No `chunked` at the end: the body's length cannot be known (RFC 9112 §6.3).
            (true, None) => return Err(CODING_NOT_CHUNKED),
        })
    }
}

/// Writes into `headers` the backend's header lines for a request with `fields`: the rules
/// both protocols share, then the framing lb sends and an accepted `upgrade`.
fn push_backend_fields(
    headers: &mut Vec<u8>,
    fields: &[httparse::Header<'_>],
    forwarding: &Forwarding<'_>,
    body: BodyFraming,
    upgrade: Option<&[u8]>,
) {
    headers.clear();
    let fields = || fields.iter().map(|f| (f.name.as_bytes(), f.value));
    push_upstream_fields(headers, fields, forwarding);
    match body {
        BodyFraming::None => {}
        BodyFraming::Length(n) => {
            headers.extend_from_slice(b"content-length: ");
            headers.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            headers.extend_from_slice(b"\r\n");
        }
        BodyFraming::Chunked => headers.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    if let Some(protocol) = upgrade {
        headers.extend_from_slice(b"connection: upgrade\r\n");
        push_field(headers, b"upgrade", protocol);
    }
}

/// Reads a request head from the start of `buf`. On success, `headers` holds the header lines
/// the backend gets, each ending CRLF, without the request line and the final blank line:
/// the client's end-to-end fields (hop-by-hop ones, those `Connection` names, `Expect` and the
/// framing fields left out), `Host` (an absolute-form target's authority replacing the
/// client's), the body's framing as lb sends it, the upgrade pair, and `X-Forwarded-*`. An
/// HTTP/1.0 request without a host gets its backend's `Host` from the caller.
///
/// `Ok(None)`: the head is not complete yet. `client` is the client's address as text, `https`
/// whether it came over TLS, `keep_forwarded_for` whether the client's own `X-Forwarded-For`
/// goes on (all for `X-Forwarded-*`: [`Forwarding`]).
pub fn parse_request(
    buf: &[u8],
    client: &[u8],
    keep_forwarded_for: bool,
    https: bool,
    headers: &mut Vec<u8>,
) -> Result<Option<RequestHead>, HeadError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut fields);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(TOO_LARGE.into()),
        Err(httparse::Error::Version) => {
            return Err(later_minor(buf).map_or(MALFORMED.into(), HeadError::LaterMinor))
        }
        Err(_) => return Err(MALFORMED.into()),
    };
    let http11 = request.version == Some(1);
    let (Some(method), Some(raw_target)) = (request.method, request.path) else {
        return Err(MALFORMED.into());
    };
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| MALFORMED)?;
    if method == Method::CONNECT {
        return Err(NO_CONNECT.into());
    }
    let target = Target::parse(raw_target.as_bytes(), &method).ok_or(BAD_TARGET)?;

    let said = HeadFields::read(request.headers, http11)?;
    // An absolute-form target's authority replaces `Host` (RFC 9112 §3.2.2).
    let host = target
        .authority
        .clone()
        .map(|a| &raw_target.as_bytes()[a])
        .or(said.host);
    let body = said.body_framing(http11)?;
    // `h2c` is HTTP/2's deprecated upgrade (RFC 9113 §3.1): ignored, the request is served as is.
    let upgrade = said.upgrade.filter(|protocol| {
        http11 && said.connection_upgrade && !protocol.trim_ascii().eq_ignore_ascii_case(b"h2c")
    });
    let forwarding = Forwarding {
        client,
        host,
        https,
        keep_forwarded_for,
    };
    push_backend_fields(headers, request.headers, &forwarding, body, upgrade);

    let target_in = offset_in(buf, raw_target.as_bytes());
    let rest = target_in.start + target.rest;
    Ok(Some(RequestHead {
        len,
        method,
        http11,
        target: rest..target_in.end,
        path_end: rest + target.path_len,
        host: host.map(|h| offset_in(buf, h)),
        close: if http11 { said.close } else { !said.keep_alive },
        body,
        expect_continue: said.expect_continue && body != BodyFraming::None,
        upgrade: upgrade.map(|u| offset_in(buf, u)),
    }))
}

/// The place of the minor version digit of a request line that says `HTTP/1.2` to `HTTP/1.9`.
fn later_minor(buf: &[u8]) -> Option<usize> {
    let line_end = buf.iter().position(|&b| b == b'\n')?;
    let line = buf[..line_end]
        .strip_suffix(b"\r")
        .unwrap_or(&buf[..line_end]);
    let version = line.get(line.len().checked_sub(9)?..)?;
    let later = version.starts_with(b" HTTP/1.") && matches!(version[8], b'2'..=b'9');
    later.then_some(line.len() - 1)
}

/// The `Transfer-Encoding` codings of a request, over all its fields.
#[derive(Default)]
struct Codings {
    seen: bool,
    n_codings: usize,
    n_chunked: usize,
    /// The last coding so far is `chunked`.
    chunked_last: bool,
}

impl Codings {
    fn add(&mut self, value: &[u8]) {
        self.seen = true;
        for coding in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            self.n_codings += 1;
            self.chunked_last = coding.eq_ignore_ascii_case(b"chunked");
            if self.chunked_last {
                self.n_chunked += 1;
            }
        }
    }

    /// `chunked`, once, and nothing else: the only coding lb implements (RFC 9112 §6.1).
    fn only_chunked(&self) -> bool {
        self.n_codings == 1 && self.n_chunked == 1
    }
}

/// A request target, as offsets within its own text.
struct Target {
    /// Where the part the backend gets starts (after an absolute-form target's authority).
    rest: usize,
    /// The path's length within that part.
    path_len: usize,
    /// An absolute-form target's authority, within the buffer.
    authority: Option<Range<usize>>,
}

impl Target {
    /// Origin-form, absolute-form (`http` or `https`) or, for OPTIONS only, `*` (RFC 9112
    /// §3.2); `None` for anything else.
    fn parse(target: &[u8], method: &Method) -> Option<Target> {
        if target == b"*" {
            return (*method == Method::OPTIONS).then_some(Target {
                rest: 0,
                path_len: 1,
                authority: None,
            });
        }
        if target.first() == Some(&b'/') {
            return Some(Target {
                rest: 0,
                path_len: origin_path_len(target)?,
                authority: None,
            });
        }
        let after_scheme = [&b"http://"[..], b"https://"]
            .into_iter()
            .find_map(|scheme| {
                let head = target.get(..scheme.len())?;
                head.eq_ignore_ascii_case(scheme).then_some(scheme.len())
            })?;
        let rest = &target[after_scheme..];
        let authority_len = rest
            .iter()
            .position(|&b| b == b'/' || b == b'?')
            .unwrap_or(rest.len());
        let authority = &rest[..authority_len];
        if !is_authority(authority) {
            return None;
        }
        let path = &rest[authority_len..];
        let path_len = if path.is_empty() || path[0] == b'?' {
            // `http://h?q`: the path is empty and sent as `/`.
            check_query(path)?;
            0
        } else {
            origin_path_len(path)?
        };
        Some(Target {
            rest: after_scheme + authority_len,
            path_len,
            authority: Some(after_scheme..after_scheme + authority_len),
        })
    }
}

/// Whether `value` is `uri-host [ ":" port ]` (RFC 9112 §3.2, RFC 3986 §3.2.2): a reg-name or
/// IPv4 address, or an IP literal in brackets; no userinfo, no blanks.
fn is_authority(value: &[u8]) -> bool {
    if value.is_empty() {
        return false;
    }
    let (host, port) = if value[0] == b'[' {
        let Some(close) = value.iter().position(|&b| b == b']') else {
            return false;
        };
        let literal = &value[1..close];
        let literal_ok = !literal.is_empty()
            && literal
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        if !literal_ok {
            return false;
        }
        (&value[..=close], &value[close + 1..])
    } else {
        let colon = value.iter().position(|&b| b == b':').unwrap_or(value.len());
        let host = &value[..colon];
        let host_ok = !host.is_empty()
            && host.iter().all(|&b| {
                b.is_ascii_alphanumeric()
                    || matches!(
                        b,
                        b'-' | b'.'
                            | b'_'
                            | b'~'
                            | b'%'
                            | b'!'
                            | b'$'
                            | b'&'
                            | b'\''
                            | b'('
                            | b')'
                            | b'*'
                            | b'+'
                            | b','
                            | b';'
                            | b'='
                    )
            });
        if !host_ok {
            return false;
        }
        (host, &value[colon..])
    };
    let _ = host;
    match port.split_first() {
        None => true,
        Some((b':', digits)) => digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    }
}

/// Writes the request line a backend gets: the backend's `url_path` joined in front of the
/// client's target (`/v1/` + `/users` = `/v1/users`, never a doubled slash at the seam); an
/// empty target (`http://h` or `http://h?q`) is given its `/`; `*` goes as it is.
pub fn push_request_line(out: &mut Vec<u8>, method: &Method, prefix: &str, target: &[u8]) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    push_target(out, prefix, target);
    out.extend_from_slice(b" HTTP/1.1\r\n");
}

/// The `url_path` join, for both protocols: a backend's `url_path` in front of the client's
/// target, with one slash at the seam.
pub fn push_target(out: &mut Vec<u8>, prefix: &str, target: &[u8]) {
    if target == b"*" {
        out.push(b'*');
        return;
    }
    let target = target.strip_prefix(b"/").unwrap_or(target);
    out.extend_from_slice(prefix.as_bytes());
    if !prefix.ends_with('/') {
        out.push(b'/');
    }
    out.extend_from_slice(target);
}

/// How a response's body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: a response to HEAD, 204, 304.
    Empty,
    Length(u64),
    /// Chunked: decoded and framed again by lb (`h1::chunked`); an HTTP/1.1 client gets the
    /// same `Transfer-Encoding`.
    Chunked,
    /// Until the backend closes; framed as chunked for an HTTP/1.1 client.
    UntilClose,
    /// A 101 to an upgrade request: the connection is a tunnel from here on.
    Tunnel,
}

/// A backend's response head, as read.
#[derive(Debug)]
pub enum Response<T> {
    /// A 1xx other than 101, `len` bytes: forwarded to an HTTP/1.1 client (RFC 9110 §15.2).
    Informational { len: usize, status: u16 },
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
            } else if self.framing == Framing::Tunnel
                && (name.eq_ignore_ascii_case("connection") || name.eq_ignore_ascii_case("upgrade"))
            {
                // The switch itself: the client needs the pair to take the 101.
                true
            } else {
                let fields = || self.fields.iter().map(|f| (f.name.as_bytes(), f.value));
                !is_hop_by_hop(name.as_bytes(), fields, self.connection_names_others)
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
    #[error("Content-Length with Transfer-Encoding")]
    LengthAndCoding,
}

/// Reads a response head from the start of `buf`; for a final one, `emit` makes of it what the
/// caller needs (the client's head in bytes, or `http` parts) while the fields are borrowed.
///
/// `Ok(None)`: the head is not complete yet.
pub fn parse_response<T>(
    buf: &[u8],
    head_request: bool,
    upgrade: bool,
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
        101 if !upgrade => return Err(BadResponse::UnexpectedUpgrade),
        101 => {}
        100..=199 => return Ok(Some(Response::Informational { len, status })),
        1000.. => return Err(BadResponse::Malformed),
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
            for token in list_tokens(field.value) {
                if token.eq_ignore_ascii_case(b"close") {
                    backend_close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && version == 0 {
                    // HTTP/1.0 keep-alive: rare from a backend; not worth trusting.
                    backend_close = true;
                }
                // As `headers::connection_names_others`, in the pass this loop makes anyway.
                connection_names_others |= !is_hop_by_hop_name(token);
            }
        }
    }
    if length.is_some() && last_coding_field.is_some() {
        // Two framings: which one the backend meant is in doubt (RFC 9112 §6.3 says the coding
        // wins, but a sender that writes both is broken, or smuggling).
        return Err(BadResponse::LengthAndCoding);
    }
    let no_body = head_request || status == 204 || status == 304;
    let framing = if status == 101 {
        Framing::Tunnel
    } else if no_body {
        Framing::Empty
    } else if let Some(codings) = last_coding_field {
        let chunked_last = codings
            .rsplit(|&b| b == b',')
            .next()
            .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
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
        reusable: !backend_close && !matches!(framing, Framing::UntilClose | Framing::Tunnel),
    };
    Ok(Some(Response::Final(head, emitted)))
}

/// Writes the head an HTTP/1.1 client gets for `head`: the status line, the end-to-end headers
/// (a chunked body's codings included: it is relayed as is), the length, `Date` if the backend
/// sent none, `Transfer-Encoding: chunked` for a close-delimited body (re-chunked), and
/// `Connection: close` when `close_client`.
pub fn push_client_head(out: &mut Vec<u8>, head: &FinalHead<'_, '_>, client: ClientSide) {
    out.extend_from_slice(b"HTTP/1.1 ");
    let mut number = itoa::Buffer::new();
    out.extend_from_slice(number.format(head.status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(head.reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    // Whether a `Date` went out (one a `Connection` option named does not).
    let mut date = false;
    for (name, value) in head.end_to_end(client.http11) {
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
    if head.framing == Framing::UntilClose && client.http11 {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if head.framing != Framing::Tunnel {
        client.push_persistence(out);
    }
    out.extend_from_slice(b"\r\n");
}

/// What a client's response head must say about its connection.
#[derive(Debug, Clone, Copy)]
pub struct ClientSide {
    /// The client speaks HTTP/1.1: it takes chunked bodies and 1xx responses.
    pub http11: bool,
    /// The connection closes after this response.
    pub close: bool,
}

impl ClientSide {
    /// `Connection: close` when closing; `Connection: keep-alive` to an HTTP/1.0 client that
    /// keeps the connection (RFC 9112 §9.3).
    fn push_persistence(self, out: &mut Vec<u8>) {
        if self.close {
            out.extend_from_slice(b"connection: close\r\n");
        } else if !self.http11 {
            out.extend_from_slice(b"connection: keep-alive\r\n");
        }
    }
}

/// Writes a backend's 1xx head (`head`: its bytes) for an HTTP/1.1 client: the status line and
/// its end-to-end fields. Nothing for a head that does not parse as one.
pub fn push_informational(out: &mut Vec<u8>, head: &[u8]) {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut fields);
    let (Ok(httparse::Status::Complete(_)), Some(status)) = (response.parse(head), response.code)
    else {
        return;
    };
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(response.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let fields = || {
        response
            .headers
            .iter()
            .map(|f| (f.name.as_bytes(), f.value))
    };
    let names_others = connection_names_others(fields());
    for field in response.headers.iter() {
        if !is_hop_by_hop(field.name.as_bytes(), fields, names_others) {
            push_field(out, field.name.as_bytes(), field.value);
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// The response head an HTTP/2 client gets for `head`: its status, the end-to-end headers and
/// the length (HTTP/2 has no reason phrase). The body goes decoded (`h1::backend::PlainBody`),
/// so no coding is named.
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
    Ok(response)
}

/// Writes a short response lb makes itself (404, 502, ...), in the same shape hyper gives it.
pub fn push_local_response(
    out: &mut Vec<u8>,
    status: http::StatusCode,
    extra: &[(&[u8], &[u8])],
    body: &[u8],
    head_request: bool,
    client: ClientSide,
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
    client.push_persistence(out);
    out.extend_from_slice(b"\r\n");
    if !head_request {
        out.extend_from_slice(body);
    }
}

/// The length of the path of an origin-form target (`/` and on) whose every byte `http::Uri`
/// accepts too, by the same tables (so HTTP/1 and HTTP/2 requests route the same text); `None`
/// for any other, including one with a fragment or non-ASCII bytes.
fn origin_path_len(target: &[u8]) -> Option<usize> {
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
    (path_ok && check_query(query).is_some()).then_some(path_len)
}

/// `Some` when `query` (empty, or `?` and on) holds only bytes a query may.
fn check_query(query: &[u8]) -> Option<()> {
    query
        .iter()
        .all(|&b| matches!(b, 0x21 | 0x24..=0x3B | 0x3D | 0x3F..=0x7E))
        .then_some(())
}

/// Where `part` (a sub-slice of `buf`) sits in `buf`.
fn offset_in(buf: &[u8], part: &[u8]) -> Range<usize> {
    let start = (part.as_ptr() as usize).saturating_sub(buf.as_ptr() as usize);
    start..start + part.len()
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
    with_http_date(|date| out.extend_from_slice(date.as_bytes()));
}

/// The current time as an HTTP date, for a `date` field of an HTTP/2 response (`proxy::h2`): the
/// same once-a-second cache, so a clone is a reference count.
pub fn http_date() -> http::HeaderValue {
    with_http_date(http::HeaderValue::clone)
}

/// Calls `f` with the current HTTP date, formatted at most once a second per thread.
fn with_http_date<T>(f: impl FnOnce(&http::HeaderValue) -> T) -> T {
    use std::cell::RefCell;
    thread_local! {
        static CACHE: RefCell<(u64, http::HeaderValue)> =
            const { RefCell::new((u64::MAX, http::HeaderValue::from_static(""))) };
    }
    let now = SystemTime::now();
    let second = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.0 != second {
            // An HTTP date is ASCII letters, digits, spaces, commas and colons: always a valid
            // field value.
            if let Ok(value) = http::HeaderValue::try_from(httpdate::fmt_http_date(now)) {
                *cache = (second, value);
            }
        }
        f(&cache.1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(text: &str) -> (Result<Option<RequestHead>, HeadError>, String) {
        let mut headers = Vec::new();
        let parsed = parse_request(text.as_bytes(), b"192.0.2.7", true, false, &mut headers);
        (parsed, String::from_utf8(headers).unwrap())
    }

    fn refused(text: &str) -> Option<u16> {
        match request(text).0 {
            Err(HeadError::Refused(refusal)) => Some(refusal.status.as_u16()),
            _ => None,
        }
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
        assert_eq!(&text[head.host.clone().unwrap()], "example.com");
        assert!(!head.close && head.http11);
        assert_eq!(
            headers,
            "host: example.com\r\nAccept: */*\r\nx-forwarded-host: example.com\r\n\
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
            "host: h\r\nX-Kept: 2\r\nx-forwarded-host: h\r\nx-forwarded-for: 192.0.2.7\r\n\
             x-forwarded-proto: http\r\n"
        );
        let (parsed, _) = request("GET / HTTP/1.1\r\nHost: h\r\nConnection: Close\r\n\r\n");
        assert!(parsed.unwrap().unwrap().close);
    }

    #[test]
    fn rfc_9112_refusals() {
        for (text, status) in [
            ("GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: user@a\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a:8x\r\n\r\n", 400),
            ("GET http://u@h/ HTTP/1.1\r\nHost: h\r\n\r\n", 400),
            ("GET ftp://h/ HTTP/1.1\r\nHost: h\r\n\r\n", 400),
            ("GET * HTTP/1.1\r\nHost: h\r\n\r\n", 400),
            ("GET /a#frag HTTP/1.1\r\nHost: h\r\n\r\n", 400),
            ("CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n", 501),
            ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400),
            ("PUT / HTTP/1.1\r\nHost: h\r\nExpect: magic\r\n\r\n", 417),
            ("GET / HTTP/1.1\r\nHost: h\r\nBad Name: x\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
            ("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
            ("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 501),
            ("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: identity\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost:\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400),
        ] {
            assert_eq!(refused(text), Some(status), "{text:?}");
        }
        for odd in ["+5", "5, 6", "5, 5", "0x5", " ", "99999999999999999999"] {
            let text = format!("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: {odd}\r\n\r\n");
            assert_eq!(refused(&text), Some(400), "{odd}");
        }
    }

    #[test]
    fn every_kind_of_request_is_taken() {
        let (parsed, headers) =
            request("GET http://Other.example:81?q HTTP/1.1\r\nHost: a\r\n\r\n");
        let head = parsed.unwrap().unwrap();
        let text = "GET http://Other.example:81?q HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(&text[head.host.clone().unwrap()], "Other.example:81");
        assert_eq!(&text[head.target.clone()], "?q");
        assert!(
            headers.starts_with("host: Other.example:81\r\n"),
            "{headers}"
        );

        let text = "OPTIONS * HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n";
        let head = request(text).0.unwrap().unwrap();
        assert_eq!(&text[head.target.clone()], "*");

        let head = request("GET / HTTP/1.0\r\n\r\n").0.unwrap().unwrap();
        assert!(!head.http11 && head.close && head.host.is_none());
        let head = request("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .0
            .unwrap()
            .unwrap();
        assert!(!head.close);

        let text = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\nExpect: 100-continue\r\n\r\n";
        let (parsed, headers) = request(text);
        let head = parsed.unwrap().unwrap();
        assert_eq!(head.body, BodyFraming::Chunked);
        assert!(head.expect_continue);
        assert!(
            headers.contains("transfer-encoding: chunked\r\n") && !headers.contains("Expect"),
            "{headers}"
        );

        let text =
            "GET /chat HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
        let (parsed, headers) = request(text);
        assert_eq!(
            &text[parsed.unwrap().unwrap().upgrade.unwrap()],
            "websocket"
        );
        assert!(
            headers.contains("connection: upgrade\r\nupgrade: websocket\r\n"),
            "{headers}"
        );

        // A length named by `Connection` still frames the body.
        let text = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nConnection: content-length\r\n\r\nhello";
        let (parsed, headers) = request(text);
        assert_eq!(parsed.unwrap().unwrap().body, BodyFraming::Length(5));
        assert!(headers.contains("content-length: 5\r\n"), "{headers}");

        assert_eq!(
            request("GET / HTTP/1.3\r\nHost: h\r\n\r\n").0.err(),
            Some(HeadError::LaterMinor(13))
        );
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
        assert_eq!(line("", "?q"), "GET /?q HTTP/1.1\r\n");
        assert_eq!(
            line("/v1", "*"),
            "OPTIONS * HTTP/1.1\r\n".replace("OPTIONS", "GET")
        );
    }

    fn response(
        text: &str,
        head: bool,
        close: bool,
    ) -> (Result<Option<Response<()>>, BadResponse>, String) {
        let mut out = Vec::new();
        let parsed = parse_response(text.as_bytes(), head, false, |h| {
            push_client_head(
                &mut out,
                h,
                ClientSide {
                    http11: true,
                    close,
                },
            )
        });
        (parsed, String::from_utf8(out).unwrap())
    }

    fn final_head(parsed: Result<Option<Response<()>>, BadResponse>) -> ResponseHead {
        match parsed {
            Ok(Some(Response::Final(head, ()))) => head,
            other => panic!("not a final head: {other:?}"),
        }
    }

    /// The bytes path (`FinalHead::end_to_end`) and the map path (`headers::strip_hop_by_hop`,
    /// hyper's responses) keep the same fields: one rule.
    #[test]
    fn a_response_keeps_the_same_fields_on_both_paths() {
        let text = "HTTP/1.1 200 OK\r\nConnection: close, X-Named\r\nConnection: upgrade\r\n\
                    Keep-Alive: timeout=5\r\nX-Named: 1\r\nclose: 2\r\nUpgrade: h2c\r\n\
                    Proxy-Connection: x\r\nTE: trailers\r\nX-Kept: 3\r\nServer: s\r\n\
                    Content-Length: 0\r\n\r\n";
        let parsed = parse_response(text.as_bytes(), false, false, |head| {
            let kept: Vec<String> = head
                .end_to_end(false)
                .map(|(name, _)| name.to_ascii_lowercase())
                .collect();
            kept
        });
        let Ok(Some(Response::Final(_, bytes_kept))) = parsed else {
            panic!("not a final head: {parsed:?}");
        };
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut fields);
        response.parse(text.as_bytes()).unwrap();
        let mut map = http::HeaderMap::new();
        for field in response.headers.iter() {
            if !field.name.eq_ignore_ascii_case("content-length") {
                map.append(
                    http::HeaderName::from_bytes(field.name.as_bytes()).unwrap(),
                    http::HeaderValue::from_bytes(field.value).unwrap(),
                );
            }
        }
        super::super::super::headers::strip_hop_by_hop(&mut map);
        // A map's order after removals is its own; the set is what must agree.
        let mut map_kept: Vec<&str> = map.keys().map(|k| k.as_str()).collect();
        map_kept.sort_unstable();
        assert_eq!(bytes_kept, ["x-kept", "server"]);
        assert_eq!(map_kept, ["server", "x-kept"]);
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
        // Two framings: which the backend meant is in doubt.
        assert_eq!(
            response(&both, false, false).0.err(),
            Some(BadResponse::LengthAndCoding)
        );

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
            Ok(Some(Response::Informational {
                len: 37,
                status: 103
            }))
        ));
        assert!(response("HTTP/1.1 200 OK\r\n", false, false)
            .0
            .unwrap()
            .is_none());
    }

    // === edge cases ===

    #[test]
    fn odd_request_heads_are_refused() {
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
            assert!(refused(text).is_some(), "{text:?}");
        }
    }

    /// RFC 9110 7.6.1: a `Connection` option naming `Host` must not make the backend's request lose
    /// its `Host`.
    #[test]
    fn connection_naming_host_keeps_host() {
        let (parsed, headers) = request("GET / HTTP/1.1\r\nHost: h\r\nConnection: host\r\n\r\n");
        assert!(parsed.unwrap().is_some());
        assert!(
            headers.to_ascii_lowercase().contains("host: h\r\n"),
            "{headers}"
        );
        assert!(headers.starts_with("host: h\r\n"), "{headers}");
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
    /// (an HTTP/2 client gets the body decoded, without them).
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
