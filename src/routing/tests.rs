//! Table-driven tests for routing; most tables are ported from Go's `net/http` tests
//! (pattern_test.go, routing_tree_test.go, server_test.go) and the ServeMux docs.

use std::time::Instant;

use http::Method;

use super::pattern::{clean_path, common_path, difference_path, is_clean, Relationship, Segment};
use super::*;

fn parse(s: &str) -> Pattern {
    match Pattern::parse(s) {
        Ok(p) => p,
        Err(e) => panic!("{s:?}: {e}"),
    }
}

fn router(patterns: &[&str]) -> Router<String> {
    let routes = patterns.iter().map(|p| (parse(p), p.to_string())).collect();
    match Router::new(routes) {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    }
}

fn method(m: &str) -> Method {
    Method::from_bytes(m.as_bytes()).expect("test method")
}

/// Renders a route as a table cell: the matched pattern, `-> location`, `405` or `404`.
fn show(route: Route<'_, String>) -> String {
    match route {
        Route::Matched(p) => p.clone(),
        Route::Redirect(location) => format!("-> {location}"),
        Route::MethodNotAllowed => "405".to_owned(),
        Route::NotFound => "404".to_owned(),
    }
}

/// Checks `(method, host, path, want)` rows against a router built from `patterns`.
fn check(patterns: &[&str], cases: &[(&str, &str, &str, &str)]) {
    let r = router(patterns);
    for &(m, host, path, want) in cases {
        let got = show(r.route(&method(m), host, path));
        assert_eq!(
            got, want,
            "{m} host={host:?} path={path:?} with {patterns:?}"
        );
    }
}

/// Renders segments the way Go's pattern_test.go spells them.
fn segments(p: &Pattern) -> Vec<String> {
    p.segments
        .iter()
        .map(|s| match s {
            Segment::Literal(b) => format!("lit({})", String::from_utf8_lossy(b)),
            Segment::Wild(n) => format!("wild({n})"),
            Segment::Multi(n) => format!("multi({n})"),
            Segment::Dollar => "lit(/)".to_owned(),
        })
        .collect()
}

// --- pattern_test.go ---

#[test]
fn routing_parse_pattern() {
    /// (input, method, host, segments)
    type Case<'a> = (&'a str, Option<&'a str>, Option<&'a str>, &'a [&'a str]);
    let cases: &[Case] = &[
        ("/", None, None, &["multi()"]),
        ("/a", None, None, &["lit(a)"]),
        ("/a/", None, None, &["lit(a)", "multi()"]),
        (
            "/path/to/something",
            None,
            None,
            &["lit(path)", "lit(to)", "lit(something)"],
        ),
        (
            "/{w1}/lit/{w2}",
            None,
            None,
            &["wild(w1)", "lit(lit)", "wild(w2)"],
        ),
        (
            "/{w1}/lit/{w2}/",
            None,
            None,
            &["wild(w1)", "lit(lit)", "wild(w2)", "multi()"],
        ),
        ("example.com/", None, Some("example.com"), &["multi()"]),
        ("GET /", Some("GET"), None, &["multi()"]),
        (
            "POST example.com/foo/{w}",
            Some("POST"),
            Some("example.com"),
            &["lit(foo)", "wild(w)"],
        ),
        ("/{$}", None, None, &["lit(/)"]),
        (
            "DELETE example.com/a/{foo12}/{$}",
            Some("DELETE"),
            Some("example.com"),
            &["lit(a)", "wild(foo12)", "lit(/)"],
        ),
        ("/foo/{$}", None, None, &["lit(foo)", "lit(/)"]),
        (
            "/{a}/foo/{rest...}",
            None,
            None,
            &["wild(a)", "lit(foo)", "multi(rest)"],
        ),
        ("//", None, None, &["lit()", "multi()"]),
        (
            "/foo///./../bar",
            None,
            None,
            &[
                "lit(foo)", "lit()", "lit()", "lit(.)", "lit(..)", "lit(bar)",
            ],
        ),
        (
            "a.com/foo//",
            None,
            Some("a.com"),
            &["lit(foo)", "lit()", "multi()"],
        ),
        (
            "/%61%62/%7b/%",
            None,
            None,
            &["lit(ab)", "lit({)", "lit(%)"],
        ),
        ("GET\t  /", Some("GET"), None, &["multi()"]),
        (
            "POST \t  example.com/foo/{w}",
            Some("POST"),
            Some("example.com"),
            &["lit(foo)", "wild(w)"],
        ),
        (
            "DELETE    \texample.com/a/{foo12}/{$}",
            Some("DELETE"),
            Some("example.com"),
            &["lit(a)", "wild(foo12)", "lit(/)"],
        ),
        // Beyond Go: hosts are case-insensitive, so they are stored lowercased.
        ("Example.COM/", None, Some("example.com"), &["multi()"]),
        (
            "CONNECT example.com:443/",
            Some("CONNECT"),
            Some("example.com:443"),
            &["multi()"],
        ),
        ("[::1]/", None, Some("[::1]"), &["multi()"]),
        ("/{ünï_1}", None, None, &["wild(ünï_1)"]),
    ];
    for &(input, want_method, want_host, want_segments) in cases {
        let p = parse(input);
        assert_eq!(p.as_str(), input);
        assert_eq!(p.method(), want_method, "{input:?} method");
        assert_eq!(p.host(), want_host, "{input:?} host");
        assert_eq!(segments(&p), want_segments, "{input:?} segments");
    }
}

#[test]
fn routing_parse_pattern_error() {
    let cases: &[(&str, &str)] = &[
        ("", "empty pattern"),
        ("A=B /", "at offset 0: invalid method \"A=B\""),
        (" ", "at offset 1: host/path missing /"),
        ("example.com", "at offset 0: host/path missing /"),
        (
            "/{w}x",
            "at offset 1: bad wildcard segment \"{w}x\" (must end with '}')",
        ),
        (
            "/x{w}",
            "at offset 1: bad wildcard segment \"x{w}\" (must start with '{')",
        ),
        ("/{wx", "at offset 1: bad wildcard segment"),
        ("/a/{/}/c", "at offset 3: bad wildcard segment"),
        // Wildcard names are not unescaped.
        ("/a/{%61}/c", "at offset 3: bad wildcard name \"%61\""),
        ("/{a$}", "at offset 1: bad wildcard name"),
        ("/{1a}", "at offset 1: bad wildcard name \"1a\""),
        ("/{}", "at offset 1: empty wildcard"),
        ("POST a.com/x/{}/y", "at offset 13: empty wildcard"),
        ("/{...}", "at offset 1: empty wildcard"),
        ("/{$...}", "at offset 1: bad wildcard"),
        ("/{$}/", "at offset 1: {$} not at end"),
        ("/{$}/x", "at offset 1: {$} not at end"),
        ("/abc/{$}/x", "at offset 5: {$} not at end"),
        ("/{a...}/", "at offset 1: {...} wildcard not at end"),
        ("/{a...}/x", "at offset 1: {...} wildcard not at end"),
        (
            "{a}/b",
            "at offset 0: host contains '{' (missing initial '/'?)",
        ),
        (
            "/a/{x}/b/{x...}",
            "at offset 9: duplicate wildcard name \"x\"",
        ),
        (
            "GET //",
            "at offset 4: path \"//\" is not clean (it would be \"/\")",
        ),
        ("GET /a/../b", "not clean"),
        ("GET   /a/./b", "at offset 6: path"),
        // Beyond Go: a port in the host can never match.
        (
            "example.com:8080/",
            "at offset 0: host \"example.com:8080\" includes a port",
        ),
        (
            "GET [::1]:80/",
            "at offset 4: host \"[::1]:80\" includes a port",
        ),
    ];
    for &(input, want) in cases {
        match Pattern::parse(input) {
            Ok(p) => panic!("{input:?}: parsed as {p:?}, want error containing {want:?}"),
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.contains(want), "{input:?}: got {msg:?}, want {want:?}");
                assert!(!msg.ends_with('.'), "{msg:?} ends with a period");
            }
        }
    }
    let deep = "/a".repeat(MAX_SEGMENTS + 1);
    assert!(matches!(
        Pattern::parse(&deep),
        Err(PatternError::TooManySegments { .. })
    ));
    assert!(Pattern::parse(&"/a".repeat(MAX_SEGMENTS)).is_ok());
}

#[test]
fn routing_compare_methods() {
    use Relationship::*;
    let cases = [
        ("/", "/", Equivalent),
        ("GET /", "GET /", Equivalent),
        ("HEAD /", "HEAD /", Equivalent),
        ("POST /", "POST /", Equivalent),
        ("GET /", "POST /", Disjoint),
        ("GET /", "/", MoreSpecific),
        ("HEAD /", "/", MoreSpecific),
        ("GET /", "HEAD /", MoreGeneral),
    ];
    for (p1, p2, want) in cases {
        let (a, b) = (parse(p1), parse(p2));
        assert_eq!(a.compare_methods(&b), want, "{p1} vs {p2}");
        assert_eq!(b.compare_methods(&a), want.inverse(), "{p2} vs {p1}");
    }
}

#[test]
fn routing_compare_paths() {
    use Relationship::*;
    let cases = [
        // A literal is more specific than anything it overlaps, except itself.
        ("/a", "/a", Equivalent),
        ("/a", "/b", Disjoint),
        ("/a", "/", MoreSpecific),
        ("/a", "/{$}", Disjoint),
        ("/a", "/{x}", MoreSpecific),
        ("/a", "/{x...}", MoreSpecific),
        // Adding a segment doesn't change that.
        ("/b/a", "/b/a", Equivalent),
        ("/b/a", "/b/b", Disjoint),
        ("/b/a", "/b/", MoreSpecific),
        ("/b/a", "/b/{$}", Disjoint),
        ("/b/a", "/b/{x}", MoreSpecific),
        ("/b/a", "/b/{x...}", MoreSpecific),
        ("/{z}/a", "/{z}/a", Equivalent),
        ("/{z}/a", "/{z}/b", Disjoint),
        ("/{z}/a", "/{z}/", MoreSpecific),
        ("/{z}/a", "/{z}/{$}", Disjoint),
        ("/{z}/a", "/{z}/{x}", MoreSpecific),
        ("/{z}/a", "/{z}/{x...}", MoreSpecific),
        // Single wildcard on left.
        ("/{z}", "/a", MoreGeneral),
        ("/{z}", "/a/b", Disjoint),
        ("/{z}", "/{$}", Disjoint),
        ("/{z}", "/{x}", Equivalent),
        ("/{z}", "/", MoreSpecific),
        ("/{z}", "/{x...}", MoreSpecific),
        ("/b/{z}", "/b/a", MoreGeneral),
        ("/b/{z}", "/b/a/b", Disjoint),
        ("/b/{z}", "/b/{$}", Disjoint),
        ("/b/{z}", "/b/{x}", Equivalent),
        ("/b/{z}", "/b/", MoreSpecific),
        ("/b/{z}", "/b/{x...}", MoreSpecific),
        // Trailing slash on left.
        ("/", "/a", MoreGeneral),
        ("/", "/a/b", MoreGeneral),
        ("/", "/{$}", MoreGeneral),
        ("/", "/{x}", MoreGeneral),
        ("/", "/", Equivalent),
        ("/", "/{x...}", Equivalent),
        ("/b/", "/b/a", MoreGeneral),
        ("/b/", "/b/a/b", MoreGeneral),
        ("/b/", "/b/{$}", MoreGeneral),
        ("/b/", "/b/{x}", MoreGeneral),
        ("/b/", "/b/", Equivalent),
        ("/b/", "/b/{x...}", Equivalent),
        ("/{z}/", "/{z}/a", MoreGeneral),
        ("/{z}/", "/{z}/a/b", MoreGeneral),
        ("/{z}/", "/{z}/{$}", MoreGeneral),
        ("/{z}/", "/{z}/{x}", MoreGeneral),
        ("/{z}/", "/{z}/", Equivalent),
        ("/{z}/", "/a/", MoreGeneral),
        ("/{z}/", "/{z}/{x...}", Equivalent),
        ("/{z}/", "/a/{x...}", MoreGeneral),
        ("/a/{z}/", "/{z}/a/", Overlaps),
        ("/a/{z}/b/", "/{x}/c/{y...}", Overlaps),
        // Multi wildcard on left.
        ("/{m...}", "/a", MoreGeneral),
        ("/{m...}", "/a/b", MoreGeneral),
        ("/{m...}", "/{$}", MoreGeneral),
        ("/{m...}", "/{x}", MoreGeneral),
        ("/{m...}", "/", Equivalent),
        ("/{m...}", "/{x...}", Equivalent),
        ("/b/{m...}", "/b/a", MoreGeneral),
        ("/b/{m...}", "/b/a/b", MoreGeneral),
        ("/b/{m...}", "/b/{$}", MoreGeneral),
        ("/b/{m...}", "/b/{x}", MoreGeneral),
        ("/b/{m...}", "/b/", Equivalent),
        ("/b/{m...}", "/b/{x...}", Equivalent),
        ("/b/{m...}", "/a/{x...}", Disjoint),
        ("/{z}/{m...}", "/{z}/a", MoreGeneral),
        ("/{z}/{m...}", "/{z}/a/b", MoreGeneral),
        ("/{z}/{m...}", "/{z}/{$}", MoreGeneral),
        ("/{z}/{m...}", "/{z}/{x}", MoreGeneral),
        ("/{z}/{m...}", "/{w}/", Equivalent),
        ("/{z}/{m...}", "/a/", MoreGeneral),
        ("/{z}/{m...}", "/{z}/{x...}", Equivalent),
        ("/{z}/{m...}", "/a/{x...}", MoreGeneral),
        ("/a/{m...}", "/a/b/{y...}", MoreGeneral),
        ("/a/{m...}", "/a/{x}/{y...}", MoreGeneral),
        ("/a/{z}/{m...}", "/a/b/{y...}", MoreGeneral),
        ("/a/{z}/{m...}", "/{z}/a/", Overlaps),
        ("/a/{z}/{m...}", "/{z}/b/{y...}", Overlaps),
        ("/a/{z}/b/{m...}", "/{x}/c/{y...}", Overlaps),
        ("/a/{z}/a/{m...}", "/{x}/b", Disjoint),
        // Dollar on left.
        ("/{$}", "/a", Disjoint),
        ("/{$}", "/a/b", Disjoint),
        ("/{$}", "/{$}", Equivalent),
        ("/{$}", "/{x}", Disjoint),
        ("/{$}", "/", MoreSpecific),
        ("/{$}", "/{x...}", MoreSpecific),
        ("/b/{$}", "/b", Disjoint),
        ("/b/{$}", "/b/a", Disjoint),
        ("/b/{$}", "/b/a/b", Disjoint),
        ("/b/{$}", "/b/{$}", Equivalent),
        ("/b/{$}", "/b/{x}", Disjoint),
        ("/b/{$}", "/b/", MoreSpecific),
        ("/b/{$}", "/b/{x...}", MoreSpecific),
        ("/b/{$}", "/b/c/{x...}", Disjoint),
        ("/b/{x}/a/{$}", "/{x}/c/{y...}", Overlaps),
        ("/{x}/b/{$}", "/a/{x}/{y}", Disjoint),
        ("/{x}/b/{$}", "/a/{x}/c", Disjoint),
        ("/{z}/{$}", "/{z}/a", Disjoint),
        ("/{z}/{$}", "/{z}/a/b", Disjoint),
        ("/{z}/{$}", "/{z}/{$}", Equivalent),
        ("/{z}/{$}", "/{z}/{x}", Disjoint),
        ("/{z}/{$}", "/{z}/", MoreSpecific),
        ("/{z}/{$}", "/a/", Overlaps),
        ("/{z}/{$}", "/a/{x...}", Overlaps),
        ("/{z}/{$}", "/{z}/{x...}", MoreSpecific),
        ("/a/{z}/{$}", "/{z}/a/", Overlaps),
    ];
    for (p1, p2, want) in cases {
        let (a, b) = (parse(p1), parse(p2));
        assert_eq!(a.compare_paths(&a), Equivalent, "{p1} vs itself");
        assert_eq!(b.compare_paths(&b), Equivalent, "{p2} vs itself");
        assert_eq!(a.compare_paths(&b), want, "{p1} vs {p2}");
        assert_eq!(b.compare_paths(&a), want.inverse(), "{p2} vs {p1}");
    }
}

#[test]
fn routing_conflicts_with() {
    let cases = [
        ("/a", "/a", true),
        ("/a", "/ab", false),
        ("/a/b/cd", "/a/b/cd", true),
        ("/a/b/cd", "/a/b/c", false),
        ("/a/b/c", "/a/c/c", false),
        ("/{x}", "/{y}", true),
        ("/{x}", "/a", false),
        ("/{x}/{y}", "/{x}/a", false),
        ("/{x}/{y}", "/{x}/a/b", false),
        ("/{x}", "/a/{y}", false),
        ("/{x}/{y}", "/{x}/a/", false),
        ("/{x}", "/a/{y...}", false),
        ("/{x}/a/{y}", "/{x}/a/{y...}", false),
        ("/{x}/{y}", "/{x}/a/{$}", false),
        ("/{x}/{y}/{$}", "/{x}/a/{$}", false),
        ("/a/{x}", "/{x}/b", true),
        ("/", "GET /", false),
        ("/", "GET /foo", false),
        ("GET /", "GET /foo", false),
        ("GET /", "/foo", true),
        ("GET /foo", "HEAD /", true),
        // Hosts: a host beats no host; different hosts never meet.
        ("example.com/a", "/a", false),
        ("a.com/{x}", "b.com/{x}", false),
        ("a.com/{x}", "A.com/{y}", true),
    ];
    for (p1, p2, want) in cases {
        let (a, b) = (parse(p1), parse(p2));
        assert_eq!(a.conflicts_with(&b), want, "{p1} conflicts with {p2}");
        assert_eq!(b.conflicts_with(&a), want, "{p2} conflicts with {p1}");
    }
}

#[test]
fn routing_describe_conflict() {
    let cases = [
        ("/a/{x}", "/a/{y}", "both match the same requests"),
        ("/", "/{m...}", "both match the same requests"),
        ("/a", "/a", "duplicate pattern"),
        (
            "/a/{x}",
            "/{y}/b",
            "both match some paths, like \"/a/b\", but neither is more specific",
        ),
        (
            "/a",
            "GET /{x}",
            "\"/a\" matches more methods than \"GET /{x}\", but has a more specific path",
        ),
        (
            "GET /a",
            "HEAD /",
            "\"GET /a\" matches more methods than \"HEAD /\", but has a more specific path",
        ),
        (
            "POST /",
            "/a",
            "\"POST /\" matches fewer methods than \"/a\", but has a more general path",
        ),
    ];
    for (p1, p2, want) in cases {
        let got = describe_conflict(&parse(p1), &parse(p2));
        assert!(
            got.contains(want),
            "{p1} vs {p2}: got {got:?}, want {want:?}"
        );
    }
}

#[test]
fn routing_common_path() {
    let cases = [
        ("/a/{x}", "/{x}/a", "/a/a"),
        ("/a/{z}/", "/{z}/a/", "/a/a/"),
        ("/a/{z}/{m...}", "/{z}/a/", "/a/a/"),
        ("/{z}/{$}", "/a/", "/a/"),
        ("/{z}/{$}", "/a/{x...}", "/a/"),
        ("/a/{z}/{$}", "/{z}/a/", "/a/a/"),
        ("/a/{x}/b/{y...}", "/{x}/c/{y...}", "/a/c/b/"),
        ("/a/{x}/b/", "/{x}/c/{y...}", "/a/c/b/"),
        ("/a/{x}/b/{$}", "/{x}/c/{y...}", "/a/c/b/"),
        ("/a/{z}/{x...}", "/{z}/b/{y...}", "/a/b/"),
        ("/{x}/{y}/{$}", "/a/", "/a/y/"),
        ("/a/", "/{x}/{y}/{$}", "/a/y/"),
    ];
    for (p1, p2, want) in cases {
        let (a, b) = (parse(p1), parse(p2));
        assert_eq!(a.compare_paths(&b), Relationship::Overlaps, "{p1} vs {p2}");
        assert_eq!(common_path(&a, &b), want, "{p1} vs {p2}");
    }
}

#[test]
fn routing_difference_path() {
    let cases = [
        ("/a/{x}", "/{x}/a", "/a/x"),
        ("/{x}/a", "/a/{x}", "/x/a"),
        ("/a/{z}/", "/{z}/a/", "/a/z/"),
        ("/{z}/a/", "/a/{z}/", "/z/a/"),
        ("/{a}/a/", "/a/{z}/", "/ax/a/"),
        ("/a/{z}/{x...}", "/{z}/b/{y...}", "/a/z/"),
        ("/{z}/b/{y...}", "/a/{z}/{x...}", "/z/b/"),
        ("/a/b/", "/a/b/c", "/a/b/"),
        ("/a/b/{x...}", "/a/b/c", "/a/b/"),
        ("/a/b/{x...}", "/a/b/c/d", "/a/b/"),
        ("/a/b/{x...}", "/a/b/c/d/", "/a/b/"),
        ("/a/{z}/{m...}", "/{z}/a/", "/a/z/"),
        ("/{z}/a/", "/a/{z}/{m...}", "/z/a/"),
        ("/{z}/{$}", "/a/", "/z/"),
        ("/a/", "/{z}/{$}", "/a/x"),
        ("/{z}/{$}", "/a/{x...}", "/z/"),
        ("/a/{foo...}", "/{z}/{$}", "/a/foo"),
        ("/a/{z}/{$}", "/{z}/a/", "/a/z/"),
        ("/{z}/a/", "/a/{z}/{$}", "/z/a/x"),
        ("/a/{x}/b/{y...}", "/{x}/c/{y...}", "/a/x/b/"),
        ("/{x}/c/{y...}", "/a/{x}/b/{y...}", "/x/c/"),
        ("/a/{c}/b/", "/{x}/c/{y...}", "/a/cx/b/"),
        ("/{x}/c/{y...}", "/a/{c}/b/", "/x/c/"),
        ("/a/{x}/b/{$}", "/{x}/c/{y...}", "/a/x/b/"),
        ("/{x}/c/{y...}", "/a/{x}/b/{$}", "/x/c/"),
    ];
    for (p1, p2, want) in cases {
        let (a, b) = (parse(p1), parse(p2));
        let rel = a.compare_paths(&b);
        assert!(
            matches!(rel, Relationship::Overlaps | Relationship::MoreGeneral),
            "{p1} vs {p2}: {rel:?}"
        );
        assert_eq!(difference_path(&a, &b), want, "{p1} vs {p2}");
    }
}

// --- Router::new: conflicts ---

#[test]
fn routing_router_conflicts() {
    /// (patterns, `Some((existing_index, new_index, reason fragment))`, or `None` when they
    /// coexist)
    type Case<'a> = (&'a [&'a str], Option<(usize, usize, &'a str)>);
    let cases: &[Case] = &[
        // The ServeMux docs' examples.
        (&["/images/", "/images/thumbnails/"], None),
        (
            &["GET /", "/index.html"],
            Some((0, 1, "\"/index.html\" matches more methods than \"GET /\"")),
        ),
        (
            &["/b/{bucket}/o/default", "/b/{bucket}/o/{objectname...}"],
            None,
        ),
        (&["GET /", "/"], None),
        (&["/{x}", "/a"], None),
        (
            &["/posts/{id}", "/{resource}/latest"],
            Some((0, 1, "both match some paths, like \"/posts/latest\"")),
        ),
        // Go's TestRegisterConflict.
        (
            &["/a/{x}/", "/a/{y}/{z...}"],
            Some((0, 1, "both match the same requests")),
        ),
        // Duplicates, however spelled.
        (&["/a", "/b", "/a"], Some((0, 2, "duplicate pattern"))),
        (
            &["GET /a", "GET\t/a"],
            Some((0, 1, "both match the same requests")),
        ),
        (
            &["a.com/", "A.COM/"],
            Some((0, 1, "both match the same requests")),
        ),
        (&["/x/{$}", "/x/{$}"], Some((0, 1, "duplicate pattern"))),
        // A host beats no host; different methods never meet; GET covers HEAD.
        (&["example.com/{x}", "GET /a"], None),
        (&["a.com/{x}", "b.com/{y}"], None),
        (&["GET /a/{x}", "POST /{y}/b"], None),
        (
            &["GET /a/{x}", "HEAD /{y}/b"],
            Some((0, 1, "both match some paths")),
        ),
        (&["GET /a", "HEAD /"], Some((0, 1, "matches fewer methods"))),
        (&["/a/{$}", "/{x}/"], None),
        (&["/a/{$}", "/{x}/{$}"], None),
        (
            &["/{x}/{$}", "/a/"],
            Some((0, 1, "both match some paths, like \"/a/\"")),
        ),
        // The earliest conflicting pattern is the one reported.
        (
            &["/a/{x}", "/c", "/{x}/b", "/{y}/b"],
            Some((0, 2, "both match some paths")),
        ),
        (
            &["/{p}/b", "/a/{x}", "/q"],
            Some((0, 1, "both match some paths")),
        ),
        // A multi registered last meets everything below it.
        (&["/a/b/c/d", "/a/{x}/c/", "/a/{y}/{z...}"], None),
        (
            &["/a/b/c/d", "/a/{x}/c/", "/{y}/b/{z...}"],
            Some((1, 2, "both match some paths")),
        ),
    ];
    for (patterns, want) in cases {
        let routes = patterns.iter().map(|p| (parse(p), ())).collect();
        match (Router::new(routes), want) {
            (Ok(r), None) => assert_eq!(r.len(), patterns.len()),
            (Ok(_), Some(_)) => panic!("{patterns:?}: built, want a conflict"),
            (Err(e), None) => panic!("{patterns:?}: {e}"),
            (Err(e), Some((existing, new, reason))) => {
                assert_eq!(
                    (e.existing_index, e.new_index),
                    (*existing, *new),
                    "{patterns:?}: {e}"
                );
                assert_eq!(e.existing, patterns[*existing]);
                assert_eq!(e.new, patterns[*new]);
                assert!(e.reason.contains(reason), "{patterns:?}: {e}");
                let msg = e.to_string();
                assert!(
                    msg.starts_with(&format!(
                        "pattern {:?} conflicts with pattern {:?}: ",
                        e.new, e.existing
                    )),
                    "{msg}"
                );
            }
        }
    }
}

// --- Router::route ---

#[test]
fn routing_serve_mux_docs() {
    check(
        &[
            "/images/",
            "/images/thumbnails/",
            "/b/{bucket}/o/default",
            "/b/{bucket}/o/{objectname...}",
        ],
        &[
            ("GET", "", "/images/thumbnails/a.png", "/images/thumbnails/"),
            ("GET", "", "/images/a.png", "/images/"),
            ("GET", "", "/images/thumbnails", "-> /images/thumbnails/"),
            ("GET", "", "/images", "-> /images/"),
            ("GET", "", "/b/k/o/default", "/b/{bucket}/o/default"),
            ("GET", "", "/b/k/o/a/b/c", "/b/{bucket}/o/{objectname...}"),
            ("GET", "", "/b/k/o/", "/b/{bucket}/o/{objectname...}"),
            ("GET", "", "/b/k/o", "-> /b/k/o/"),
            ("GET", "", "/b/k", "404"),
            ("GET", "", "/", "404"),
        ],
    );
    check(
        &["GET /", "/"],
        &[
            ("GET", "", "/x", "GET /"),
            ("HEAD", "", "/x", "GET /"),
            ("POST", "", "/x", "/"),
        ],
    );
    check(
        &["/{x}", "/a"],
        &[
            ("GET", "", "/a", "/a"),
            ("GET", "", "/b", "/{x}"),
            ("GET", "", "/a/b", "404"),
            // A single wildcard never matches the trailing slash.
            ("GET", "", "/", "404"),
        ],
    );
    check(
        &["/{$}", "/"],
        &[
            ("GET", "", "/", "/{$}"),
            ("GET", "", "/a", "/"),
            ("GET", "", "/a/", "/"),
        ],
    );
}

#[test]
fn routing_tree_match() {
    // Go's getTestTree.
    check(
        &[
            "/a",
            "/a/b",
            "/a/{x}",
            "/g/h/i",
            "/g/{x}/j",
            "/a/b/{x...}",
            "/a/b/{y}",
            "/a/b/{$}",
        ],
        &[
            ("GET", "", "/a", "/a"),
            ("Get", "", "/b", "404"),
            ("Get", "", "/a/b", "/a/b"),
            ("Get", "", "/a/c", "/a/{x}"),
            ("Get", "", "/a/b/", "/a/b/{$}"),
            ("Get", "", "/a/b/c", "/a/b/{y}"),
            ("Get", "", "/a/b/c/d", "/a/b/{x...}"),
            ("Get", "", "/g/h/i", "/g/h/i"),
            ("Get", "", "/g/h/j", "/g/{x}/j"),
        ],
    );
    check(
        &[
            "/item/",
            "POST /item/{user}",
            "GET /item/{user}",
            "/item/{user}",
            "/item/{user}/{id}",
            "/item/{user}/new",
            "/item/{$}",
            "POST alt.com/item/{user}",
            "GET /headwins",
            "HEAD /headwins",
            "/path/{p...}",
        ],
        &[
            ("GET", "", "/item/jba", "GET /item/{user}"),
            ("POST", "", "/item/jba", "POST /item/{user}"),
            ("HEAD", "", "/item/jba", "GET /item/{user}"),
            // Method matches are case-sensitive.
            ("get", "", "/item/jba", "/item/{user}"),
            ("POST", "", "/item/jba/17", "/item/{user}/{id}"),
            ("GET", "", "/item/jba/new", "/item/{user}/new"),
            ("GET", "", "/item/", "/item/{$}"),
            ("GET", "", "/item/jba/17/line2", "/item/"),
            ("POST", "alt.com", "/item/jba", "POST alt.com/item/{user}"),
            ("GET", "alt.com", "/item/jba", "GET /item/{user}"),
            ("GET", "", "/item", "-> /item/"),
            ("GET", "", "/headwins", "GET /headwins"),
            // HEAD is more specific than GET.
            ("HEAD", "", "/headwins", "HEAD /headwins"),
            ("GET", "", "/path/to/file", "/path/{p...}"),
            ("GET", "", "/path/*", "/path/{p...}"),
        ],
    );
    let (pat1, pat2, pat3) = ("/a/b/{$}", "/a/b/{w}", "/a/b/{w...}");
    // {$} matches only the trailing slash.
    check(
        &[pat1],
        &[
            ("GET", "", "/a/b", "-> /a/b/"),
            ("GET", "", "/a/b/", pat1),
            ("GET", "", "/a/b/c", "404"),
            ("GET", "", "/a/b/c/d", "404"),
        ],
    );
    // A single wildcard does not match the trailing slash.
    check(
        &[pat2],
        &[
            ("GET", "", "/a/b", "404"),
            ("GET", "", "/a/b/", "404"),
            ("GET", "", "/a/b/c", pat2),
            ("GET", "", "/a/b/c/d", "404"),
        ],
    );
    // A multi wildcard matches both.
    check(
        &[pat3],
        &[
            ("GET", "", "/a/b", "-> /a/b/"),
            ("GET", "", "/a/b/", pat3),
            ("GET", "", "/a/b/c", pat3),
            ("GET", "", "/a/b/c/d", pat3),
        ],
    );
    check(
        &[pat1, pat2, pat3],
        &[
            ("GET", "", "/a/b", "-> /a/b/"),
            ("GET", "", "/a/b/", pat1),
            ("GET", "", "/a/b/c", pat2),
            ("GET", "", "/a/b/c/d", pat3),
        ],
    );
    // CONNECT paths are not cleaned, so they can have empty segments: a single wildcard
    // matches an empty segment, and an empty literal matches only an empty segment.
    let (pat4, pat5, pat6, pat7) = (
        "CONNECT /a//b",
        "/a/{x}/b",
        "/{x}/{y...}",
        "CONNECT /a/{x}/b",
    );
    check(
        &[pat4, pat5, pat6],
        &[
            ("CONNECT", "", "/a//b", pat4),
            ("CONNECT", "", "/a/z/b", pat5),
            ("CONNECT", "", "//c", pat6),
            ("CONNECT", "", "/a//c", pat6),
        ],
    );
    check(&[pat4], &[("CONNECT", "", "/a/z/b", "404")]);
    check(
        &[pat4, pat7],
        &[
            ("CONNECT", "", "/a//b", pat4),
            ("CONNECT", "", "/a/z/b", pat7),
        ],
    );
    check(
        &[pat5, "/{x}/", "/{x}/{y}/{z}"],
        &[
            ("CONNECT", "", "/a//b", pat5),
            ("CONNECT", "", "//", "/{x}/"),
            ("CONNECT", "", "///c", "/{x}/{y}/{z}"),
        ],
    );
}

#[test]
fn routing_find_handler() {
    // Go's TestFindHandler (server_test.go), with Host example.com.
    let patterns = ["/", "/foo/", "/foo", "/bar/", "//foo"];
    check(
        &patterns,
        &[
            ("GET", "example.com", "/", "/"),
            ("GET", "example.com", "//", "-> /"),
            ("GET", "example.com", "/foo/../bar/./..//baz", "-> /baz"),
            ("GET", "example.com", "/foo", "/foo"),
            ("GET", "example.com", "/foo/x", "/foo/"),
            ("GET", "example.com", "/bar/x", "/bar/"),
            ("GET", "example.com", "/bar", "-> /bar/"),
            ("CONNECT", "example.com", "", "404"),
            ("CONNECT", "example.com", "/", "/"),
            ("CONNECT", "example.com", "//", "/"),
            ("CONNECT", "example.com", "//foo", "//foo"),
            ("CONNECT", "example.com", "/foo/../bar/./..//baz", "/foo/"),
            ("CONNECT", "example.com", "/foo", "/foo"),
            ("CONNECT", "example.com", "/foo/x", "/foo/"),
            ("CONNECT", "example.com", "/bar/x", "/bar/"),
            ("CONNECT", "example.com", "/bar", "-> /bar/"),
        ],
    );
}

#[test]
fn routing_escaped_paths_and_patterns() {
    // Go's TestEscapedPathsAndPatterns: patterns and paths are unescaped segment by segment.
    let patterns = ["/a", "/%62", "/%7B/%7D", "/%x", "/a%2Fb/"];
    let cases: &[(&str, &[&str])] = &[
        ("/a", &["/a", "/%61"]),
        ("/%62", &["/b", "/%62"]),
        ("/%7B/%7D", &["/{/}", "/%7b/}", "/{/%7d", "/%7B/%7D"]),
        ("/%x", &["/%25x"]),
        // The ServeMux docs: "/a%2Fb/100%25" has two segments, "a/b" and "100%".
        ("/a%2Fb/", &["/a%2Fb/100%25", "/a%2fb/"]),
    ];
    let r = router(&patterns);
    for &(pattern, paths) in cases {
        for path in paths {
            assert_eq!(show(r.route(&Method::GET, "", path)), pattern, "{path}");
        }
    }
    // An escaped slash is not a separator.
    assert_eq!(show(r.route(&Method::GET, "", "/a/b/c")), "404");
    assert_eq!(show(r.route(&Method::GET, "", "/%2F")), "404");
}

#[test]
fn routing_hosts() {
    check(
        &[
            "example.com/",
            "/",
            "api.example.com/v1/",
            "GET /v1/{x}",
            "[::1]/local/",
        ],
        &[
            ("GET", "example.com", "/x", "example.com/"),
            ("GET", "example.com:8080", "/x", "example.com/"),
            ("GET", "EXAMPLE.com", "/x", "example.com/"),
            ("GET", "other.com", "/x", "/"),
            ("GET", "", "/x", "/"),
            // A host-specific pattern beats a host-less one even where neither path is more
            // specific; when it does not match, host-less patterns are tried.
            ("GET", "api.example.com", "/v1/a", "api.example.com/v1/"),
            ("GET", "api.example.com", "/v2", "/"),
            ("GET", "example.com", "/v1/a", "example.com/"),
            ("GET", "[::1]:8080", "/local/x", "[::1]/local/"),
            ("GET", "[::1]", "/local/x", "[::1]/local/"),
            ("GET", "[::1]:8080", "/x", "/"),
            // Odd hosts are matched as they are.
            ("GET", "a:b:c", "/x", "/"),
            ("GET", ":80", "/x", "/"),
        ],
    );
}

#[test]
fn routing_methods_and_405() {
    check(
        &[
            "GET /only",
            "POST /items/",
            "PUT /items/{id}",
            "DELETE example.com/x",
        ],
        &[
            ("GET", "", "/only", "GET /only"),
            ("HEAD", "", "/only", "GET /only"),
            ("POST", "", "/only", "405"),
            ("POST", "", "/items/1", "POST /items/"),
            ("PUT", "", "/items/1", "PUT /items/{id}"),
            ("GET", "", "/items/1", "405"),
            // 405 when only the trailing-slash form would match this method's patterns.
            ("GET", "", "/items", "405"),
            ("POST", "", "/items", "-> /items/"),
            ("GET", "", "/nothing", "404"),
            ("DELETE", "example.com", "/x", "DELETE example.com/x"),
            ("GET", "example.com", "/x", "405"),
            ("GET", "other.com", "/x", "404"),
        ],
    );
}

#[test]
fn routing_allowed_methods() {
    // Go's TestMatchingMethods.
    let host_tree = ["GET a.com/", "PUT b.com/", "POST /foo/{x}"];
    let cases: &[(&[&str], &str, &str, &[&str])] = &[
        (&["POST /"], "", "/foo", &["POST"]),
        (&["GET /"], "", "/foo", &["GET", "HEAD"]),
        (&host_tree, "", "/foo", &[]),
        (&host_tree, "", "/foo/bar", &["POST"]),
        (&host_tree, "a.com", "/foo/bar", &["GET", "HEAD", "POST"]),
        (&host_tree, "b.com:443", "/bar", &["PUT"]),
        (&["/"], "", "/", &[]),
        (&["GET /x/", "DELETE /x/{id}"], "", "/x", &["GET", "HEAD"]),
        (
            &["GET /x/", "DELETE /x/{id}"],
            "",
            "/x/../x/1",
            &["DELETE", "GET", "HEAD"],
        ),
    ];
    for &(patterns, host, path, want) in cases {
        assert_eq!(
            router(patterns).allowed_methods(host, path),
            want,
            "{patterns:?} {host} {path}"
        );
    }
}

#[test]
fn routing_redirects() {
    check(
        &["/api/", "/docs/", "/docs", "/v/{x}/", "GET /g/"],
        &[
            // To the slash form when only the subtree exists.
            ("GET", "", "/api", "-> /api/"),
            ("POST", "", "/api", "-> /api/"),
            ("GET", "", "/api/", "/api/"),
            // Not when the path without the slash is registered too.
            ("GET", "", "/docs", "/docs"),
            ("GET", "", "/v/1", "-> /v/1/"),
            ("HEAD", "", "/g", "-> /g/"),
            ("POST", "", "/g", "405"),
            // Unclean paths go to their cleaned form, whether or not it matches.
            ("GET", "", "/a/../api/x", "-> /api/x"),
            ("GET", "", "//api/x", "-> /api/x"),
            ("GET", "", "/api/./x", "-> /api/x"),
            ("GET", "", "/api/x/.", "-> /api/x"),
            ("GET", "", "/api/x/..", "-> /api/"),
            ("GET", "", "/nope/../../x", "-> /x"),
            ("GET", "", "/x//", "-> /x/"),
            ("POST", "", "/a/..", "-> /"),
            ("GET", "", "", "-> /"),
            ("GET", "", "relative", "-> /relative"),
            // Both at once: the slash redirect is computed on the cleaned path.
            ("GET", "", "/x/../api", "-> /api/"),
            ("GET", "", "//docs", "-> /docs"),
            // Escapes are not dot segments.
            ("GET", "", "/api/%2E%2E/x", "/api/"),
            ("OPTIONS", "", "*", "404"),
        ],
    );
}

#[test]
fn routing_exact_match() {
    // Go's TestExactMatch, through the trailing-slash redirect that depends on it: a pattern
    // that matches the path exactly means no redirect.
    let cases = [
        ("/", "/a", false),
        ("/a", "/a", true),
        ("/a/{x...}", "/a/b", false),
        ("/a/{x}", "/a/b", true),
        ("/a/b/", "/a/b/", true),
        ("/a/b/{$}", "/a/b/", true),
        ("/a/", "/a/b/", false),
    ];
    for (pattern, path, want) in cases {
        let r = router(&[pattern]);
        let found = r.tree.lookup("", "GET", Cursor::new(path, false));
        assert!(found.is_some(), "{pattern} should match {path}");
        assert_eq!(r.is_exact(found, path, false), want, "{pattern} {path}");
    }
}

#[test]
fn routing_clean_path() {
    let cases = [
        ("//", "/"),
        ("/x", "/x"),
        ("//x", "/x"),
        ("x//", "/x/"),
        ("a//b/////c", "/a/b/c"),
        ("/foo/../bar/./..//baz", "/baz"),
        ("", "/"),
        ("/..", "/"),
        ("/a/..", "/"),
        ("/a/../", "/"),
        ("/a/./", "/a/"),
        ("/a/.", "/a"),
        ("/./a/", "/a/"),
    ];
    for (input, want) in cases {
        assert_eq!(clean_path(input), want, "{input:?}");
    }
    // is_clean agrees with clean_path on every short path over the interesting bytes.
    let alphabet = ['/', '.', 'a'];
    let mut paths = vec![String::new()];
    for _ in 0..7 {
        let longer: Vec<String> = paths
            .iter()
            .flat_map(|p| alphabet.iter().map(move |c| format!("{p}{c}")))
            .collect();
        for p in &longer {
            assert_eq!(is_clean(p), clean_path(p) == *p, "{p:?}");
        }
        paths = longer;
    }
}

#[test]
fn routing_no_panics_on_odd_input() {
    let patterns = [
        "/",
        "/{$}",
        "/a/",
        "/a/{x}/{y...}",
        "GET /b/{x}/c",
        "example.com/{p...}",
        "/%zz/",
        "//",
        "CONNECT /c//",
        "/b/{x}/{$}",
    ];
    let r = router(&patterns);
    let long = "/x".repeat(10_000);
    let paths = [
        "",
        "*",
        "/",
        "//",
        "///",
        "/%",
        "/%2",
        "/%zz",
        "/%2F",
        "/%2f/",
        "/..",
        "/../..",
        "/.",
        "/a/..%2F",
        "/\u{1F600}/\u{e9}",
        "/a b",
        "a",
        "?",
        "/a/b/c/d/e/f",
        &long,
    ];
    let hosts = [
        "",
        ":",
        "[",
        "[::1",
        "[::1]:",
        "a:b:c",
        "EXAMPLE.COM:1",
        "\u{c4}\u{d6}",
        "h\0st",
    ];
    let methods = [
        "GET", "HEAD", "POST", "CONNECT", "OPTIONS", "get", "X-CUSTOM",
    ];
    for m in methods {
        for host in hosts {
            for path in paths {
                let _ = r.route(&method(m), host, path);
                let _ = r.allowed_methods(host, path);
            }
        }
    }
    // Every short string over the syntax's bytes either parses or says why, and never panics.
    let alphabet = ['/', '{', '}', '.', '$', 'a', ' ', '%'];
    let mut inputs = vec![String::new()];
    for _ in 0..5 {
        inputs = inputs
            .iter()
            .flat_map(|p| alphabet.iter().map(move |c| format!("{p}{c}")))
            .collect();
        for input in &inputs {
            if let Ok(p) = Pattern::parse(input) {
                assert_eq!(p.as_str(), input);
                let r = Router::new(vec![(p, ())]).expect("one pattern cannot conflict");
                for path in ["/", "/a", "/a/", "/a/a", "/$", "//"] {
                    let _ = r.route(&Method::GET, "", path);
                }
            }
        }
    }
}

#[test]
fn routing_ten_thousand_patterns() {
    const N: usize = 2_500;
    let mut texts = Vec::with_capacity(4 * N);
    for i in 0..N {
        texts.push(format!("/svc{i}/"));
        texts.push(format!("/svc{i}/items/{{id}}"));
        texts.push(format!("GET /svc{i}/health"));
        texts.push(format!("h{i}.example.com/{{rest...}}"));
    }
    let routes: Vec<(Pattern, usize)> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| (parse(t), i))
        .collect();
    let start = Instant::now();
    let r = match Router::new(routes) {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    };
    let elapsed = start.elapsed();
    assert_eq!(r.len(), 10_000);
    // Generous for debug builds on a busy machine; a release build takes a few milliseconds.
    assert!(elapsed.as_millis() < 1_000, "building took {elapsed:?}");

    let lookup = |m: Method, host: &str, path: &str| match r.route(&m, host, path) {
        Route::Matched(&i) => texts[i].clone(),
        other => format!("{other:?}"),
    };
    for i in [0, 17, 1234, N - 1] {
        assert_eq!(
            lookup(Method::GET, "", &format!("/svc{i}/items/42")),
            format!("/svc{i}/items/{{id}}")
        );
        assert_eq!(
            lookup(Method::GET, "", &format!("/svc{i}/other/x")),
            format!("/svc{i}/")
        );
        assert_eq!(
            lookup(Method::GET, "", &format!("/svc{i}/health")),
            format!("GET /svc{i}/health")
        );
        assert_eq!(
            lookup(Method::POST, "", &format!("/svc{i}/health")),
            format!("/svc{i}/")
        );
        assert_eq!(
            lookup(Method::GET, "", &format!("/svc{i}")),
            format!("Redirect(\"/svc{i}/\")")
        );
        assert_eq!(
            lookup(
                Method::GET,
                &format!("h{i}.example.com"),
                &format!("/svc{i}/health")
            ),
            format!("h{i}.example.com/{{rest...}}")
        );
    }
    assert_eq!(lookup(Method::GET, "", "/svc"), "NotFound");

    // Shapes that make simpler conflict searches quadratic: wildcard-first patterns beside many
    // literal-first ones, and same-method-family patterns whose paths differ only in length.
    let mut adversarial = Vec::new();
    for i in 0..2_500 {
        adversarial.push(format!("/svc{i}/x/"));
        adversarial.push(format!("POST /{{tenant}}/op{i}"));
        adversarial.push(format!("GET /x{i}/{{a}}"));
        adversarial.push(format!("HEAD /{{a}}/x{i}/{{$}}"));
    }
    let routes = adversarial.iter().map(|t| (parse(t), ())).collect();
    let start = Instant::now();
    let built = Router::new(routes).map(|r| r.len());
    let elapsed = start.elapsed();
    assert_eq!(built, Ok(10_000));
    assert!(elapsed.as_millis() < 1_000, "building took {elapsed:?}");

    // A conflict deep in a large set is still found, against the right pattern.
    let mut routes: Vec<(Pattern, usize)> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| (parse(t), i))
        .collect();
    routes.push((parse("/svc77/{kind}/{id}"), 0));
    routes.push((parse("/svc77/items/{other}"), 0));
    match Router::new(routes) {
        Ok(_) => panic!("want a conflict"),
        Err(e) => {
            assert_eq!(e.existing, "/svc77/items/{id}");
            assert_eq!(e.new, "/svc77/items/{other}");
            assert_eq!((e.existing_index, e.new_index), (77 * 4 + 1, 10_001));
        }
    }
}

// --- differential: the tree against brute force ---

/// A random small pattern over a tiny alphabet, so that random sets overlap often.
fn random_pattern(rng: &mut fastrand::Rng) -> String {
    let method = ["", "GET ", "HEAD ", "POST "][rng.usize(..4)];
    let host = ["", "", "a.com"][rng.usize(..3)];
    let mut path = String::new();
    // Distinct wildcard names, as a pattern requires.
    for name in ["x", "y", "z"].iter().take(rng.usize(0..3)) {
        match rng.usize(..3) {
            0 => path.push_str("/a"),
            1 => path.push_str("/b"),
            _ => path.push_str(&format!("/{{{name}}}")),
        }
    }
    match rng.usize(..4) {
        0 if !path.is_empty() => {}
        1 => path.push('/'),
        2 => path.push_str("/{m...}"),
        _ => path.push_str("/{$}"),
    }
    format!("{method}{host}{path}")
}

/// The path pieces of a clean path: segments, and `None` for a trailing slash.
fn pieces(path: &str) -> Vec<Option<&str>> {
    if path == "/" {
        return vec![None];
    }
    let mut out: Vec<Option<&str>> = path[1..].split('/').map(Some).collect();
    if out.last() == Some(&Some("")) {
        out.pop();
        out.push(None);
    }
    out
}

/// Whether `segments` match `pieces`, straight from the ServeMux docs.
fn naive_match(segments: &[Segment], pieces: &[Option<&str>]) -> bool {
    match (segments.split_first(), pieces.split_first()) {
        (None, None) => true,
        (Some((Segment::Multi(_), _)), Some(_)) => true,
        (Some((Segment::Dollar, _)), Some((None, rest))) => rest.is_empty(),
        (Some((Segment::Wild(_), segs)), Some((Some(_), rest))) => naive_match(segs, rest),
        (Some((Segment::Literal(lit), segs)), Some((Some(piece), rest))) => {
            **lit == *super::pattern::unescape(piece) && naive_match(segs, rest)
        }
        _ => false,
    }
}

fn naive_matches(p: &Pattern, method: &str, host: &str, path: &str) -> bool {
    let method_ok = match p.method() {
        None => true,
        Some(m) => m == method || (m == "GET" && method == "HEAD"),
    };
    let host_ok = p.host().is_none_or(|h| h == host);
    method_ok && host_ok && naive_match(&p.segments, &pieces(path))
}

#[test]
fn routing_conflicts_match_brute_force() {
    let mut rng = fastrand::Rng::with_seed(0x5EED);
    let mut n_conflicts = 0;
    for _ in 0..3_000 {
        let texts: Vec<String> = (0..rng.usize(2..8))
            .map(|_| random_pattern(&mut rng))
            .collect();
        let patterns: Vec<Pattern> = texts.iter().map(|t| parse(t)).collect();
        let mut want = None;
        'outer: for new in 0..patterns.len() {
            for existing in 0..new {
                if patterns[new].conflicts_with(&patterns[existing]) {
                    want = Some((existing, new));
                    break 'outer;
                }
            }
        }
        let got = Router::new(patterns.into_iter().map(|p| (p, ())).collect())
            .err()
            .map(|e| (e.existing_index, e.new_index));
        assert_eq!(got, want, "{texts:?}");
        n_conflicts += usize::from(want.is_some());
    }
    // Both outcomes are well represented, or the comparison proves little.
    assert!(
        (500..2_500).contains(&n_conflicts),
        "{n_conflicts} conflicts"
    );
}

#[test]
fn routing_lookup_matches_brute_force() {
    let mut rng = fastrand::Rng::with_seed(0xC0FFEE);
    let mut paths = vec!["/".to_owned()];
    for a in ["a", "b", "c", "%61"] {
        paths.push(format!("/{a}"));
        paths.push(format!("/{a}/"));
        for b in ["a", "b", "c"] {
            paths.push(format!("/{a}/{b}"));
            paths.push(format!("/{a}/{b}/"));
            for c in ["a", "b"] {
                paths.push(format!("/{a}/{b}/{c}"));
                paths.push(format!("/{a}/{b}/{c}/"));
            }
        }
    }
    let (mut routers, mut n_matched, mut n_lookups) = (0, 0, 0);
    while routers < 1_500 {
        let texts: Vec<String> = (0..rng.usize(2..10))
            .map(|_| random_pattern(&mut rng))
            .collect();
        let patterns: Vec<Pattern> = texts.iter().map(|t| parse(t)).collect();
        let Ok(r) = Router::new(patterns.iter().cloned().map(|p| (p, ())).collect()) else {
            continue;
        };
        routers += 1;
        for method in ["GET", "HEAD", "POST", "PUT"] {
            for host in ["", "a.com", "b.com"] {
                for path in &paths {
                    let matching: Vec<&Pattern> = patterns
                        .iter()
                        .filter(|p| naive_matches(p, method, host, path))
                        .collect();
                    // Rule 1: a host-specific match beats every host-less one.
                    let with_host: Vec<&Pattern> = matching
                        .iter()
                        .copied()
                        .filter(|p| p.host().is_some())
                        .collect();
                    let candidates = if with_host.is_empty() {
                        matching
                    } else {
                        with_host
                    };
                    // Rule 2: the one more specific than every other; conflict-free sets have one.
                    let want = candidates.iter().find(|p| {
                        candidates.iter().all(|q| {
                            std::ptr::eq(**p, *q)
                                || p.compare_paths_and_methods(q) == Relationship::MoreSpecific
                        })
                    });
                    assert_eq!(
                        candidates.is_empty(),
                        want.is_none(),
                        "no unique winner among {candidates:?}"
                    );
                    let got = r.tree.lookup(host, method, Cursor::new(path, false));
                    let got = got.map(|i| texts[i].as_str());
                    n_lookups += 1;
                    n_matched += usize::from(got.is_some());
                    assert_eq!(
                        got,
                        want.map(|p| p.as_str()),
                        "{method} {host} {path} with {texts:?}"
                    );
                }
            }
        }
    }
    assert!(
        n_matched * 10 > n_lookups,
        "{n_matched} of {n_lookups} lookups matched"
    );
}

#[test]
fn strip_port_takes_off_one_port_and_leaves_addresses_whole() {
    assert_eq!(strip_port("example.com:8080"), "example.com");
    assert_eq!(strip_port("example.com"), "example.com");
    assert_eq!(strip_port("example.com:"), "example.com");
    assert_eq!(strip_port("127.0.0.1:31022"), "127.0.0.1");
    assert_eq!(strip_port("[::1]:8080"), "[::1]");
    assert_eq!(strip_port("[::1"), "[::1");
    // A bare IPv6 address has no port to strip.
    assert_eq!(strip_port("::1"), "::1");
    assert_eq!(strip_port("fe80::1:2"), "fe80::1:2");
    assert_eq!(strip_port(""), "");
}
