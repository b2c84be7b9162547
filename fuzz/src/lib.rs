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
