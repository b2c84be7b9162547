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

use lb::proxy::fuzzing::{self as wire, BodyFraming, ChunkedEnd};

/// Hop-by-hop fields (RFC 9110 7.6.1) and the ones lb sets itself: never forwarded as received.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Every field of a complete head, by httparse; panics if `head` is not exactly one head.
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
/// length, method, target and `Host`, and every prefix of it is incomplete to lb; the backend's
/// header lines are well-formed fields with no hop-by-hop one, one `Host`, and the forwarding
/// fields lb sets.
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
    assert_eq!(Some(view.target.as_slice()), oracle.path.map(str::as_bytes));
    assert_eq!(
        oracle.version,
        Some(1),
        "lb took a head that is not HTTP/1.1"
    );
    let hosts: Vec<&[u8]> = oracle
        .headers
        .iter()
        .filter(|f| f.name.eq_ignore_ascii_case("host"))
        .map(|f| f.value)
        .collect();
    assert_eq!(
        hosts,
        [view.host.as_slice()],
        "lb took a head without exactly one Host"
    );
    let lengths: Vec<&[u8]> = oracle
        .headers
        .iter()
        .filter(|f| f.name.eq_ignore_ascii_case("content-length"))
        .map(|f| f.value)
        .collect();
    match lengths.as_slice() {
        [] => assert_eq!(view.body_len, 0),
        [one] => assert_eq!(
            std::str::from_utf8(one)
                .ok()
                .and_then(|t| t.trim().parse().ok()),
            Some(view.body_len)
        ),
        _ => panic!(
            "lb took a head with {} Content-Length fields",
            lengths.len()
        ),
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
    for (name, _) in &forwarded {
        assert!(!HOP_BY_HOP.contains(&name.as_str()), "{name} forwarded");
    }
    let named = |n: &str| -> Vec<&[u8]> {
        forwarded
            .iter()
            .filter(|(name, _)| name == n)
            .map(|(_, v)| v.as_slice())
            .collect()
    };
    assert_eq!(named("host"), [view.host.as_slice()]);
    assert_eq!(named("x-forwarded-host"), [view.host.as_slice()]);
    assert_eq!(named("x-forwarded-proto"), [&b"http"[..]]);
    let forwarded_for = named("x-forwarded-for");
    assert_eq!(forwarded_for.len(), 1);
    assert!(forwarded_for[0].ends_with(CLIENT));
}

/// A strict reference decoder (RFC 9112 7.1 with CRLF line ends only; chunk sizes by
/// `httparse::parse_chunk_size`): the data and the length of the body, or `None` if it is
/// malformed or incomplete.
fn reference_dechunk(body: &[u8]) -> Option<(Vec<u8>, usize)> {
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
        // httparse takes any byte in an extension, a bare LF too; RFC 9112 allows none there,
        // and lb's scanner ends the line at it.
        if body[at..at + line - 2].contains(&b'\n') {
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
    // Trailer fields up to the empty line: each `token ":" value`, ending CRLF, with no CR, LF
    // or NUL of its own.
    let is_tchar = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
    loop {
        let line_end = at + body.get(at..)?.windows(2).position(|w| w == b"\r\n")?;
        let line = &body[at..line_end];
        if line.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
            return None;
        }
        if let Some(colon) = line.iter().position(|&b| b == b':') {
            if colon == 0 || !line[..colon].iter().all(is_tchar) {
                return None;
            }
        } else if !line.is_empty() {
            return None;
        }
        let empty = line_end == at;
        at = line_end + 2;
        if empty {
            return Some((data, at));
        }
    }
}

/// The chunked decoder: the same bytes split into reads anywhere give the same data, end and
/// error; and any body the strict reference decoder reads, lb reads the same.
pub fn chunked(data: &[u8]) {
    let Some((&split, body)) = data.split_first() else {
        return;
    };
    let whole = wire::scan_chunked(&[body]);
    // Split points: every `step` bytes, from 1 (every byte) up.
    let step = usize::from(split % 17) + 1;
    let pieces: Vec<&[u8]> = body.chunks(step).collect();
    let split_scan = wire::scan_chunked(&pieces);
    assert_eq!(
        whole, split_scan,
        "reads of {step} bytes give another result"
    );
    if let ChunkedEnd::End(n) = whole.1 {
        assert!(n <= body.len());
        assert!(whole.0.len() <= n);
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
/// status, no hop-by-hop field but the framing lb chose, and one framing that says what lb relays;
/// and lb refuses what httparse refuses.
pub fn response_head(data: &[u8]) {
    let Some((&flags, response)) = data.split_first() else {
        return;
    };
    let (head_request, close_client) = (flags & 1 == 1, flags & 2 == 2);
    let mut fields = [httparse::EMPTY_HEADER; 100];
    let mut oracle = httparse::Response::new(&mut fields);
    let oracle_status = oracle.parse(response);
    let Ok(Some(view)) = wire::rewrite_response_head(response, head_request, close_client) else {
        return;
    };
    let Ok(httparse::Status::Complete(len)) = oracle_status else {
        panic!("lb took a response head httparse does not: {oracle_status:?}");
    };
    assert_eq!(view.len, len);
    let Some(framing) = view.framing else {
        assert!(matches!(oracle.code, Some(100..=199)) && oracle.code != Some(101));
        return;
    };
    assert_eq!(Some(view.status), oracle.code);
    assert!(
        (200..=999).contains(&view.status),
        "relayed status {}",
        view.status
    );

    let mut client_fields = [httparse::EMPTY_HEADER; 128];
    let mut client = httparse::Response::new(&mut client_fields);
    match client.parse(&view.client_head) {
        Ok(httparse::Status::Complete(n)) => assert_eq!(n, view.client_head.len()),
        other => panic!(
            "the client's head is not one head: {other:?} {:?}",
            view.client_head
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
    for name in ["keep-alive", "proxy-connection", "upgrade", "te"] {
        assert!(named(name).is_empty(), "{name} relayed");
    }
    let connection = named("connection");
    assert!(
        connection.is_empty() || (close_client && connection == [&b"close"[..]]),
        "{connection:?}"
    );
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
        BodyFraming::Length(n) => assert_eq!((length, codings.len()), (Some(n), 0)),
        BodyFraming::Chunked | BodyFraming::UntilClose => assert!(chunked_last && length.is_none()),
        BodyFraming::Empty => assert!(codings.is_empty()),
    }
}
