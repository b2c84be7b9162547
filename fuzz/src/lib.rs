//! The invariants the fuzz targets check, one function per target.
//!
//! Each function takes raw bytes and panics only when lb breaks an invariant; everything else
//! (invalid UTF-8, invalid TOML, invalid patterns) is a normal outcome. The libFuzzer targets in
//! `fuzz_targets/` call these, and so does the stable-toolchain random runner in
//! `tests/random.rs`, so both check exactly the same things.
//!
//! Input layouts (also what the seeds in `seeds/` look like):
//!
//! - `config`: the whole input is lb.toml text.
//! - `pattern`: newline-separated lines; the last three are the request's method, host and path,
//!   the ones before them (at most [`MAX_PATTERNS`]) are patterns.
//! - `edit`: the first byte picks the edit (`% 4`: add_backend, remove_backend, add_pool,
//!   remove_pool); then a line with the pattern, a line with the backend (or the health-check
//!   path for add_pool), and the rest is the file text.
//! - `request_head`: the whole input is what a client sends (a head, maybe more).
//! - `chunked`: the first byte picks where the body is split into reads (see [`chunked`]); the
//!   rest is the body's bytes.
//! - `response_head`: the first byte's low bits say HEAD request and close; the rest is what a
//!   backend sends.

use lb::config::edit::{self, HealthCheckSpec, PoolSpec};
use lb::routing::{Pattern, Route, Router};

/// How many patterns the `pattern` target compiles at most.
pub const MAX_PATTERNS: usize = 8;

/// `lb::config::parse` on arbitrary UTF-8: never panics, and every diagnostic it returns has a
/// position inside the text and renders.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match lb::config::parse(text) {
        Ok(config) => {
            // A valid config's router is usable.
            assert_eq!(config.routes.len(), config.pools.len());
            for pool in &config.pools {
                assert!(config.pool(&pool.pattern).is_some());
                for backend in &pool.backends {
                    // A backend renders to text that parses back to itself.
                    let again: lb::config::BackendAddr = backend
                        .addr
                        .to_string()
                        .parse()
                        .expect("a parsed backend's text parses again");
                    assert_eq!(again, backend.addr);
                }
            }
            let _ = config.routes.route(&http::Method::GET, "example.com", "/");
        }
        Err(diagnostics) => {
            assert!(!diagnostics.is_empty(), "an invalid config says why");
            let lines = text.split('\n').count();
            for d in &diagnostics {
                if let Some((line, col)) = d.position {
                    assert!(line >= 1 && line <= lines, "line {line} of {lines}: {d}");
                    assert!(col >= 1, "{d}");
                }
                let _ = d.display_with(std::path::Path::new("lb.toml")).to_string();
            }
        }
    }
}

/// Pattern parsing, router building and routing: never panic, a match names one of the routes,
/// and redirects do not loop.
pub fn pattern(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines: Vec<&str> = text.split('\n').collect();
    let path = lines.pop().unwrap_or("/");
    let host = lines.pop().unwrap_or("");
    let method = lines.pop().unwrap_or("GET");
    lines.truncate(MAX_PATTERNS);

    let mut routes = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if let Ok(p) = Pattern::parse(line) {
            assert_eq!(p.as_str(), *line);
            let _ = (p.method(), p.host());
            routes.push((p, i));
        }
    }
    let count = lines.len();
    let Ok(router) = Router::new(routes) else {
        return;
    };

    let method = http::Method::from_bytes(method.as_bytes()).unwrap_or(http::Method::GET);
    for m in [
        method,
        http::Method::GET,
        http::Method::HEAD,
        http::Method::CONNECT,
    ] {
        route_and_follow(&router, &m, host, path, count);
    }
    let _ = router.allowed_methods(host, path);
}

fn route_and_follow(
    router: &Router<usize>,
    method: &http::Method,
    host: &str,
    path: &str,
    n: usize,
) {
    let mut path = path.to_owned();
    // A redirect is either to the cleaned path or to path + "/"; both at once is two hops.
    for _ in 0..4 {
        match router.route(method, host, &path) {
            Route::Matched(&i) => {
                assert!(i < n);
                return;
            }
            Route::Redirect(location) => {
                assert_ne!(
                    location, path,
                    "redirect to itself: {method} {host:?} {path:?}"
                );
                path = location;
            }
            Route::MethodNotAllowed => {
                let _ = router.allowed_methods(host, &path);
                return;
            }
            Route::NotFound => return,
        }
    }
    panic!("redirect loop: {method} {host:?} ending at {path:?}");
}

/// The control API's text edits on arbitrary text: never panic; on a valid lb.toml, a successful
/// edit's output is valid TOML, and add-then-remove restores the input byte for byte.
pub fn edit(data: &[u8]) {
    let Some((&op, rest)) = data.split_first() else {
        return;
    };
    let rest = String::from_utf8_lossy(rest);
    let (pattern, rest) = rest.split_once('\n').unwrap_or((&rest, ""));
    let (arg, text) = rest.split_once('\n').unwrap_or((rest, ""));
    let valid = lb::config::parse(text).is_ok();

    let out = match op % 4 {
        0 => edit::add_backend(text, pattern, arg),
        1 => edit::remove_backend(text, pattern, &|entry| entry == arg),
        2 => edit::add_pool(text, pattern, &spec(arg)),
        _ => edit::remove_pool(text, pattern),
    };
    let Ok(out) = out else {
        return;
    };
    if !valid {
        return;
    }
    if let Err(e) = out.parse::<toml_edit::DocumentMut>() {
        panic!("edit {op} of a valid file gave invalid TOML: {e}\n--- out:\n{out}");
    }

    match op % 4 {
        // A pool without a `backends` key gets one; removing the backend leaves `backends = []`
        // (same meaning, by design), so the byte-for-byte round trip needs the key to exist.
        0 if backends_key(text, pattern, arg).is_some_and(|has| !has) => {
            let back = edit::remove_backend(&out, pattern, &|entry| entry == arg)
                .expect("a backend just added can be removed");
            assert_eq!(
                back, text,
                "add_backend then remove_backend\n--- added:\n{out}"
            );
        }
        2 if text.is_empty() || text.ends_with('\n') => {
            let back = edit::remove_pool(&out, pattern).expect("a pool just added can be removed");
            assert_eq!(back, text, "add_pool then remove_pool\n--- added:\n{out}");
        }
        _ => {}
    }
}

fn spec(arg: &str) -> PoolSpec {
    PoolSpec {
        pool_type: "p2c".to_owned(),
        interval: "10s".to_owned(),
        health_checks: vec![HealthCheckSpec {
            url_path: arg.to_owned(),
            healthy_values: vec![arg.to_owned(), "ok".to_owned()],
        }],
    }
}

/// `None` when the pool has no `backends` array, or when it is a multi-line array whose last
/// element has no trailing comma: adding must put a comma after that element and removing keeps
/// it (a one-line diff, by design; see `multiline_without_trailing_comma` in src/config/edit), so
/// the round trip is not byte for byte there. Otherwise whether the array already lists an entry
/// with this exact address (then removing "it" removes the first one, a different line).
fn backends_key(text: &str, pattern: &str, addr: &str) -> Option<bool> {
    let doc = text.parse::<toml_edit::DocumentMut>().ok()?;
    let array = doc
        .get("pools")?
        .get(pattern)?
        .get("backends")?
        .as_array()?;
    if !array.is_empty() && !array.trailing_comma() && array.to_string().contains('\n') {
        return None;
    }
    let listed = array.iter().any(|v| edit::entry_addr(v) == Some(addr));
    Some(listed)
}

// === HTTP/1 wire (lb::proxy::fuzzing) ===

use lb::proxy::fuzzing::{self as wire, ChunkedEnd, RelayFraming};

/// Hop-by-hop fields (RFC 9110 7.6.1): never forwarded as received.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn is_tchar(b: &u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b)
}

/// Every field of a complete request head, by httparse; panics if `head` is not exactly one.
fn fields_of(head: &[u8], what: &str) -> Vec<(String, Vec<u8>)> {
    let mut fields = [httparse::EMPTY_HEADER; 256];
    let mut request = httparse::Request::new(&mut fields);
    match request.parse(head) {
        Ok(httparse::Status::Complete(n)) => {
            assert_eq!(n, head.len(), "{what}: bytes after the head")
        }
        other => panic!("{what}: not a head httparse reads: {other:?} in {head:?}"),
    }
    request
        .headers
        .iter()
        .map(|f| (f.name.to_ascii_lowercase(), f.value.to_vec()))
        .collect()
}

/// The request-head parser against httparse: when lb takes a head, httparse reads the same
/// length, method and version, the target lb forwards is the origin-form target or the tail of
/// an absolute-form one, `Host` is one field (HTTP/1.1) and the length the one `Content-Length`
/// says; every prefix of the head is incomplete to lb. The backend's header lines are
/// well-formed fields, with no hop-by-hop one but the framing and upgrade lb sets, one framing,
/// at most one `Host` (the request's), and the forwarding fields lb sets.
pub fn request_head(data: &[u8]) {
    const CLIENT: &[u8] = b"192.0.2.7";
    let Ok(Some(view)) = wire::parse_request_head(data, CLIENT) else {
        return;
    };
    let mut fields = [httparse::EMPTY_HEADER; 256];
    let mut oracle = httparse::Request::new(&mut fields);
    let Ok(httparse::Status::Complete(len)) = oracle.parse(data) else {
        panic!("lb took a head httparse does not: {data:?}");
    };
    assert_eq!(view.len, len);
    assert_eq!(Some(view.method.as_str()), oracle.method);
    assert_eq!(oracle.version, Some(u8::from(view.http11)));
    let path = oracle.path.unwrap_or("").as_bytes();
    if path.starts_with(b"/") || path == b"*" {
        assert_eq!(view.target, path, "the target changed");
    } else {
        assert!(
            path.ends_with(&view.target),
            "an absolute-form target's tail {:?} is not the forwarded {:?}",
            String::from_utf8_lossy(path),
            String::from_utf8_lossy(&view.target)
        );
    }
    let named = |n: &str| -> Vec<&[u8]> {
        oracle
            .headers
            .iter()
            .filter(|f| f.name.eq_ignore_ascii_case(n))
            .map(|f| f.value)
            .collect()
    };
    let hosts = named("host");
    assert!(
        hosts.len() <= 1,
        "lb took a head with {} Host fields",
        hosts.len()
    );
    if view.http11 {
        assert_eq!(hosts.len(), 1, "lb took an HTTP/1.1 head without Host");
    }
    if let (Some(host), true) = (&view.host, path.starts_with(b"/")) {
        assert_eq!(hosts, [host.as_slice()]);
    }
    let lengths = named("content-length");
    let codings = named("transfer-encoding");
    assert!(
        lengths.is_empty() || codings.is_empty(),
        "lb took both framings"
    );
    match view.body_len {
        None => assert!(!codings.is_empty(), "chunked without Transfer-Encoding"),
        Some(0) if lengths.is_empty() => {}
        Some(n) => {
            assert_eq!(
                lengths.len(),
                1,
                "lb took {} Content-Length fields",
                lengths.len()
            );
            let value = std::str::from_utf8(lengths[0]).expect("an ASCII length");
            assert_eq!(value.trim().parse::<u64>().ok(), Some(n));
        }
    }
    for cut in [len / 2, len.saturating_sub(1), len.saturating_sub(2)] {
        if cut < len {
            assert!(
                matches!(wire::parse_request_head(&data[..cut], CLIENT), Ok(None)),
                "a prefix of {cut} of a head lb takes is not incomplete to it"
            );
        }
    }

    let mut backend_head = b"GET / HTTP/1.1\r\n".to_vec();
    backend_head.extend_from_slice(&view.backend_fields);
    backend_head.extend_from_slice(b"\r\n");
    let forwarded = fields_of(&backend_head, "the backend's head");
    let sent = |n: &str| -> Vec<&[u8]> {
        forwarded
            .iter()
            .filter(|(name, _)| name == n)
            .map(|(_, v)| v.as_slice())
            .collect()
    };
    for (name, value) in &forwarded {
        let lbs_own = match name.as_str() {
            "transfer-encoding" => view.body_len.is_none() && value == b"chunked",
            "connection" => view.upgrade && value == b"upgrade",
            "upgrade" => view.upgrade,
            _ => false,
        };
        assert!(
            lbs_own || !HOP_BY_HOP.contains(&name.as_str()),
            "{name}: {:?} forwarded",
            String::from_utf8_lossy(value)
        );
    }
    assert!(sent("content-length").len() <= 1);
    assert!(sent("content-length").is_empty() || sent("transfer-encoding").is_empty());
    match &view.host {
        Some(host) => {
            assert_eq!(sent("host"), [host.as_slice()]);
            assert_eq!(sent("x-forwarded-host"), [host.as_slice()]);
        }
        None => assert!(sent("host").is_empty()),
    }
    assert_eq!(sent("x-forwarded-proto"), [&b"http"[..]]);
    let forwarded_for = sent("x-forwarded-for");
    assert_eq!(forwarded_for.len(), 1);
    assert!(forwarded_for[0].ends_with(CLIENT));
}

/// A strict reference decoder (RFC 9112 7.1: CRLF line ends only, nothing but visible ASCII and
/// HTAB in a size line, trailer fields `token ":" value` with visible values, at most 32 of them; chunk sizes
/// by `httparse::parse_chunk_size`): the data and the length of the body, or `None` if it is
/// malformed or incomplete.
fn reference_dechunk(body: &[u8]) -> Option<(Vec<u8>, usize)> {
    let is_control = |b: &u8| (*b < 0x20 && *b != b'\t') || *b == 0x7f;
    let mut data = Vec::new();
    let mut at = 0;
    loop {
        // httparse takes an empty size as 0; RFC 9112's chunk-size is 1*HEXDIG.
        if !body.get(at)?.is_ascii_hexdigit() {
            return None;
        }
        let httparse::Status::Complete((line, size)) =
            httparse::parse_chunk_size(&body[at..]).ok()?
        else {
            return None;
        };
        // httparse takes any byte in an extension, a bare LF, a control byte or a non-ASCII one
        // too; the reference (like lb) takes visible ASCII and HTAB only.
        if body[at..at + line - 2]
            .iter()
            .any(|b| is_control(b) || !b.is_ascii())
        {
            return None;
        }
        at += line;
        if size == 0 {
            break;
        }
        let end = at.checked_add(usize::try_from(size).ok()?)?;
        data.extend_from_slice(body.get(at..end)?);
        if body.get(end..end + 2)? != b"\r\n" {
            return None;
        }
        at = end + 2;
    }
    let mut n_fields = 0;
    loop {
        let line_end = at + body.get(at..)?.windows(2).position(|w| w == b"\r\n")?;
        let line = &body[at..line_end];
        at = line_end + 2;
        if line.is_empty() {
            return Some((data, at));
        }
        let colon = line.iter().position(|&b| b == b':')?;
        if colon == 0 || !line[..colon].iter().all(is_tchar) || line.iter().any(is_control) {
            return None;
        }
        n_fields += 1;
        if n_fields > 32 {
            return None;
        }
    }
}

/// The chunked decoder: the same bytes split into reads anywhere give the same data, end and
/// error; any body the strict reference decoder reads, lb reads alike; and lb's own chunked
/// framing of a body is one the reference reads back to the same data.
pub fn chunked(data: &[u8]) {
    let Some((&split, body)) = data.split_first() else {
        return;
    };
    let whole = wire::decode_chunked(&[body], false);
    // Reads of `step` bytes: every byte, up to 17 at a time.
    let step = usize::from(split % 17) + 1;
    let pieces: Vec<&[u8]> = body.chunks(step).collect();
    assert_eq!(
        whole,
        wire::decode_chunked(&pieces, false),
        "reads of {step} bytes give another result"
    );
    if let ChunkedEnd::End(n) = whole.1 {
        assert!(n <= body.len());
        assert!(whole.0.len() <= n);
        let (framed, end) = wire::decode_chunked(&[body], true);
        assert_eq!(end, whole.1);
        assert_eq!(
            reference_dechunk(&framed),
            Some((whole.0.clone(), framed.len())),
            "lb's own chunked framing does not read back: {framed:?}"
        );
    }
    // lb's limits (a 4 KiB size line, 64 KiB of trailers) are out of reach below this.
    if body.len() <= 4096 {
        if let Some((reference, end)) = reference_dechunk(body) {
            assert_eq!(
                whole,
                (reference, ChunkedEnd::End(end)),
                "the reference decoder disagrees"
            );
        }
    }
}

/// The response-head rewrite: a head lb relays is one httparse reads back whole, with the same
/// status, no hop-by-hop field but the framing, persistence and switch lb means, and one
/// framing that says what lb relays; lb refuses what httparse refuses.
pub fn response_head(data: &[u8]) {
    let Some((&flags, response)) = data.split_first() else {
        return;
    };
    let head_request = flags & 1 == 1;
    let close = flags & 2 == 2;
    let http11 = flags & 4 == 0;
    let upgrade = flags & 8 == 8;
    let mut fields = [httparse::EMPTY_HEADER; 100];
    let mut oracle = httparse::Response::new(&mut fields);
    let oracle_status = oracle.parse(response);
    let Ok(Some(view)) =
        wire::rewrite_response_head(response, head_request, upgrade, http11, close)
    else {
        return;
    };
    let Ok(httparse::Status::Complete(len)) = oracle_status else {
        panic!("lb took a response head httparse does not: {oracle_status:?}");
    };
    assert_eq!(view.len, len);
    assert_eq!(Some(view.status), oracle.code);
    let Some(framing) = view.framing else {
        assert!((100..=199).contains(&view.status) && view.status != 101);
        return;
    };
    assert!(
        (101..=999).contains(&view.status),
        "relayed status {}",
        view.status
    );
    assert!(view.status != 101 || framing == RelayFraming::Tunnel);

    let mut client_fields = [httparse::EMPTY_HEADER; 128];
    let mut client = httparse::Response::new(&mut client_fields);
    match client.parse(&view.client_head) {
        Ok(httparse::Status::Complete(n)) => assert_eq!(n, view.client_head.len()),
        other => panic!(
            "the client's head is not one head: {other:?} {:?}",
            String::from_utf8_lossy(&view.client_head)
        ),
    }
    assert_eq!(client.code, Some(view.status));
    let named = |n: &str| -> Vec<&[u8]> {
        client
            .headers
            .iter()
            .filter(|f| f.name.eq_ignore_ascii_case(n))
            .map(|f| f.value)
            .collect()
    };
    for name in ["keep-alive", "proxy-connection", "te"] {
        assert!(named(name).is_empty(), "{name} relayed");
    }
    if framing != RelayFraming::Tunnel {
        assert!(named("upgrade").is_empty(), "upgrade relayed");
        let connection = named("connection");
        let expected: &[&[u8]] = if close {
            &[b"close"]
        } else if !http11 {
            &[b"keep-alive"]
        } else {
            &[]
        };
        assert_eq!(connection, expected);
    }
    let lengths = named("content-length");
    let codings = named("transfer-encoding");
    assert!(lengths.len() <= 1, "{lengths:?}");
    assert!(
        lengths.is_empty() || codings.is_empty(),
        "the client gets both framings"
    );
    let length = lengths
        .first()
        .map(|v| std::str::from_utf8(v).unwrap().parse::<u64>().unwrap());
    let chunked_last = codings.last().is_some_and(|c| {
        c.rsplit(|&b| b == b',')
            .next()
            .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"))
    });
    match framing {
        RelayFraming::Length(n) => assert_eq!((length, codings.len()), (Some(n), 0)),
        RelayFraming::Chunked | RelayFraming::UntilClose if http11 => {
            assert!(chunked_last && length.is_none())
        }
        // An HTTP/1.0 client reads the data to the close.
        RelayFraming::Chunked | RelayFraming::UntilClose => {
            assert!(codings.is_empty() && length.is_none())
        }
        RelayFraming::Empty | RelayFraming::Tunnel => assert!(codings.is_empty()),
    }
}
