//! Property tests (proptest, fixed seeds so a run is reproducible):
//!
//! - the router against a simple reference model for the classic subset (paths only, exact and
//!   subtree patterns: the longest matching pattern wins; `/a` redirects to `/a/` when only the
//!   subtree exists);
//! - random add/remove backend and add/remove pool sequences through `lb::config::edit` against
//!   an in-memory model: after every step the file parses with `lb::config::parse` and its pools
//!   and backends equal the model, comments elsewhere are kept; removing everything that was
//!   added gives back the original text byte for byte.

use http::Method;
use lb::config::edit::{self, EditError, HealthCheckSpec, PoolSpec};
use lb::config::BackendAddr;
use lb::routing::{Pattern, Route, Router};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

fn config(cases: u32, seed: u64) -> Config {
    Config {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        // Keep shrunk failures in tests/properties.proptest-regressions for replay.
        ..Config::default()
    }
}

// === router vs reference model ===

/// Segments from a tiny alphabet, so patterns and paths overlap often; `ab` checks that `/a/`
/// does not match `/ab`.
const SEGMENTS: &[&str] = &["a", "b", "ab"];

fn segments() -> impl Strategy<Value = Vec<&'static str>> {
    prop::collection::vec(prop::sample::select(SEGMENTS), 0..4)
}

/// `/s1/s2` (exact) or `/s1/s2/` (subtree); `/` is the root subtree.
fn classic_pattern() -> impl Strategy<Value = String> {
    (segments(), any::<bool>()).prop_map(|(segs, subtree)| {
        let mut p = format!("/{}", segs.join("/"));
        if subtree && !p.ends_with('/') {
            p.push('/');
        }
        p
    })
}

/// What the router should answer, computed the obvious way.
#[derive(Debug, PartialEq, Eq)]
enum Expected {
    Matched(usize),
    Redirect(String),
    NotFound,
}

fn reference(patterns: &[String], path: &str) -> Expected {
    let matches = |p: &str| {
        if p.ends_with('/') {
            path.starts_with(p)
        } else {
            path == p
        }
    };
    let exact = patterns.iter().any(|p| p == path);
    if !path.ends_with('/') && !exact {
        let with_slash = format!("{path}/");
        if patterns.contains(&with_slash) {
            return Expected::Redirect(with_slash);
        }
    }
    patterns
        .iter()
        .enumerate()
        .filter(|(_, p)| matches(p))
        .max_by_key(|(_, p)| p.len())
        .map_or(Expected::NotFound, |(i, _)| Expected::Matched(i))
}

proptest! {
    #![proptest_config(config(2000, 0x00c0_ffee))]

    #[test]
    fn router_agrees_with_the_longest_match_model(
        patterns in prop::collection::vec(classic_pattern(), 0..8),
        paths in prop::collection::vec((segments(), any::<bool>()), 1..8),
    ) {
        let mut patterns = patterns;
        let mut seen = std::collections::HashSet::new();
        patterns.retain(|p| seen.insert(p.clone()));
        let routes = patterns
            .iter()
            .enumerate()
            .map(|(i, p)| (Pattern::parse(p).expect("classic pattern parses"), i))
            .collect();
        let router = Router::new(routes).expect("distinct classic patterns never conflict");
        for (segs, slash) in paths {
            let mut path = format!("/{}", segs.join("/"));
            if slash && !path.ends_with('/') {
                path.push('/');
            }
            let got = match router.route(&Method::GET, "", &path) {
                Route::Matched(&i) => Expected::Matched(i),
                Route::Redirect(to) => Expected::Redirect(to),
                Route::NotFound => Expected::NotFound,
                Route::MethodNotAllowed => panic!("no method in the classic subset: {path}"),
            };
            prop_assert_eq!(got, reference(&patterns, &path), "path {} patterns {:?}", path, patterns);
        }
    }
}

// === edit sequences vs an in-memory model ===

const ORIGINAL: &str = r#"# lb.toml for the property tests; this line must survive everything.
[listen]
http = "127.0.0.1:8080"   # data plane comment

# the root pool
[pools."/"]
interval = "10s"   # root interval comment
backends = [
  "127.0.0.1:8082",   # first backend comment
  "127.0.0.1:8083",
]

# the api pool
[pools."/api/"]
backends = ["127.0.0.1:9000/v1/"]   # api backends comment

# server settings
[server]
drain_timeout = "1s"   # drain comment
"#;

/// Who a comment of `ORIGINAL` belongs to: it must be in the text while its owner is.
enum Owner {
    File,
    Pool(&'static str),
    Backend(&'static str, &'static str),
}

const COMMENTS: &[(&str, Owner)] = &[
    (
        "# lb.toml for the property tests; this line must survive everything.",
        Owner::File,
    ),
    ("# data plane comment", Owner::File),
    ("# the root pool", Owner::Pool("/")),
    ("# root interval comment", Owner::Pool("/")),
    (
        "# first backend comment",
        Owner::Backend("/", "127.0.0.1:8082"),
    ),
    ("# the api pool", Owner::Pool("/api/")),
    ("# api backends comment", Owner::Pool("/api/")),
    ("# server settings", Owner::File),
    ("# drain comment", Owner::File),
];

/// Patterns a sequence may add (and the originals, which it may also remove and re-add).
const PATTERNS: &[&str] = &[
    "/",
    "/api/",
    "/p0/",
    "/p1/exact",
    "GET /p2/{id}",
    "example.com/p3/",
    "POST /p4/{rest...}",
];

const BACKENDS: &[&str] = &[
    "127.0.0.1:8082",
    "127.0.0.1:8083",
    "127.0.0.1:9000/v1/",
    "127.0.0.1:9101",
    "127.0.0.1:9102",
    "10.0.0.7:80/v2/",
    "[::1]:9300",
    "[2001:db8::1]:443/x/",
];

#[derive(Debug, Clone)]
struct ModelPool {
    pattern: &'static str,
    original: bool,
    backends: Vec<(&'static str, bool)>,
}

fn original_model() -> Vec<ModelPool> {
    vec![
        ModelPool {
            pattern: "/",
            original: true,
            backends: vec![("127.0.0.1:8082", true), ("127.0.0.1:8083", true)],
        },
        ModelPool {
            pattern: "/api/",
            original: true,
            backends: vec![("127.0.0.1:9000/v1/", true)],
        },
    ]
}

#[derive(Debug, Clone)]
enum Op {
    AddBackend(usize, usize),
    /// Removes an added backend (indices taken modulo what exists).
    RemoveAddedBackend(usize, usize),
    AddPool(usize),
    RemoveAddedPool(usize),
    /// Removes something of the original file: a backend, or a whole pool.
    RemoveOriginal(usize, usize, bool),
    /// An edit that must fail and change nothing.
    Invalid(usize, usize),
}

fn op() -> impl Strategy<Value = Op> {
    let i = || 0..64usize;
    prop_oneof![
        5 => (i(), i()).prop_map(|(a, b)| Op::AddBackend(a, b)),
        3 => (i(), i()).prop_map(|(a, b)| Op::RemoveAddedBackend(a, b)),
        2 => i().prop_map(Op::AddPool),
        2 => i().prop_map(Op::RemoveAddedPool),
        1 => (i(), i(), any::<bool>()).prop_map(|(a, b, c)| Op::RemoveOriginal(a, b, c)),
        1 => (i(), i()).prop_map(|(a, b)| Op::Invalid(a, b)),
    ]
}

fn spec() -> PoolSpec {
    PoolSpec {
        pool_type: "p2c".into(),
        interval: "5s".into(),
        health_checks: vec![HealthCheckSpec {
            url_path: "/healthz".into(),
            healthy_values: vec!["ok".into()],
        }],
    }
}

fn is(addr: &'static str) -> impl Fn(&str) -> bool {
    move |entry| entry == addr
}

/// Checks the text against the model: it parses, its pools (in file order) and their backends
/// equal the model, and every comment whose owner is still there is still there.
fn check(text: &str, model: &[ModelPool]) -> Result<(), TestCaseError> {
    let config = lb::config::parse(text)
        .map_err(|d| TestCaseError::fail(format!("does not parse: {d:?}\n{text}")))?;
    let got: Vec<(String, Vec<BackendAddr>)> = config
        .pools
        .iter()
        .map(|p| {
            (
                p.pattern.clone(),
                p.backends.iter().map(|b| b.addr.clone()).collect(),
            )
        })
        .collect();
    let want: Vec<(String, Vec<BackendAddr>)> = model
        .iter()
        .map(|p| {
            let backends = p.backends.iter().map(|(b, _)| b.parse().unwrap()).collect();
            (p.pattern.to_owned(), backends)
        })
        .collect();
    prop_assert_eq!(got, want, "text:\n{}", text);
    for (comment, owner) in COMMENTS {
        let pool = |pattern: &str| model.iter().find(|p| p.pattern == pattern && p.original);
        let present = match owner {
            Owner::File => true,
            Owner::Pool(pattern) => pool(pattern).is_some(),
            Owner::Backend(pattern, addr) => {
                pool(pattern).is_some_and(|p| p.backends.iter().any(|(b, o)| b == addr && *o))
            }
        };
        if present {
            prop_assert!(text.contains(comment), "lost {:?}:\n{}", comment, text);
        }
    }
    Ok(())
}

/// Applies one op to both the text and the model; returns whether it touched the original.
fn apply(text: &mut String, model: &mut Vec<ModelPool>, op: &Op) -> Result<bool, TestCaseError> {
    let edited = |r: Result<String, EditError>, what: &str| {
        r.map_err(|e| TestCaseError::fail(format!("{what}: {e}\n{text}")))
    };
    match *op {
        Op::AddBackend(p, b) => {
            let pool = p % model.len().max(1);
            let Some(pool) = model.get_mut(pool) else {
                return Ok(false);
            };
            let addr = BACKENDS[b % BACKENDS.len()];
            if pool.backends.iter().any(|(x, _)| *x == addr) {
                return Ok(false); // duplicates are refused by the control API, not by edit
            }
            *text = edited(edit::add_backend(text, pool.pattern, addr), "add_backend")?;
            pool.backends.push((addr, false));
        }
        Op::RemoveAddedBackend(p, b) => {
            let added: Vec<(usize, usize)> = model
                .iter()
                .enumerate()
                .flat_map(|(i, pool)| {
                    pool.backends
                        .iter()
                        .enumerate()
                        .filter(|(_, (_, original))| !original)
                        .map(move |(j, _)| (i, j))
                })
                .collect();
            if added.is_empty() {
                return Ok(false);
            }
            let (i, j) = added[(p * 64 + b) % added.len()];
            let (addr, _) = model[i].backends[j];
            *text = edited(
                edit::remove_backend(text, model[i].pattern, &is(addr)),
                "remove_backend",
            )?;
            model[i].backends.remove(j);
        }
        Op::AddPool(p) => {
            let pattern = PATTERNS[p % PATTERNS.len()];
            if model.iter().any(|x| x.pattern == pattern) {
                return Ok(false);
            }
            *text = edited(edit::add_pool(text, pattern, &spec()), "add_pool")?;
            model.push(ModelPool {
                pattern,
                original: false,
                backends: Vec::new(),
            });
        }
        Op::RemoveAddedPool(p) => {
            let added: Vec<usize> = (0..model.len()).filter(|&i| !model[i].original).collect();
            if added.is_empty() {
                return Ok(false);
            }
            let i = added[p % added.len()];
            *text = edited(edit::remove_pool(text, model[i].pattern), "remove_pool")?;
            model.remove(i);
        }
        Op::RemoveOriginal(p, b, whole_pool) => {
            let originals: Vec<usize> = (0..model.len()).filter(|&i| model[i].original).collect();
            if originals.is_empty() {
                return Ok(false);
            }
            let i = originals[p % originals.len()];
            let backends: Vec<usize> = (0..model[i].backends.len())
                .filter(|&j| model[i].backends[j].1)
                .collect();
            if whole_pool || backends.is_empty() {
                *text = edited(edit::remove_pool(text, model[i].pattern), "remove_pool")?;
                model.remove(i);
            } else {
                let j = backends[b % backends.len()];
                let (addr, _) = model[i].backends[j];
                *text = edited(
                    edit::remove_backend(text, model[i].pattern, &is(addr)),
                    "remove_backend",
                )?;
                model[i].backends.remove(j);
            }
            return Ok(true);
        }
        Op::Invalid(p, kind) => {
            let pattern = PATTERNS[p % PATTERNS.len()];
            let exists = model.iter().any(|x| x.pattern == pattern);
            let result = match (kind % 3, exists) {
                (0, true) => edit::add_pool(text, pattern, &spec()),
                (0, false) | (1, false) => edit::add_backend(text, pattern, "127.0.0.1:1"),
                (1, true) => edit::remove_backend(text, pattern, &is("127.0.0.1:1")),
                _ if exists => edit::remove_backend(text, pattern, &is("127.0.0.1:2")),
                _ => edit::remove_pool(text, pattern),
            };
            prop_assert!(
                matches!(
                    result,
                    Err(EditError::PoolExists { .. }
                        | EditError::PoolNotFound { .. }
                        | EditError::BackendNotFound { .. })
                ),
                "{:?} on {}: {:?}",
                op,
                pattern,
                result
            );
        }
    }
    Ok(false)
}

proptest! {
    #![proptest_config(config(400, 0x0001_b70e))]

    #[test]
    fn edit_sequences_match_the_model(ops in prop::collection::vec(op(), 1..32)) {
        let mut text = ORIGINAL.to_owned();
        let mut model = original_model();
        let mut touched_original = false;
        check(&text, &model)?;
        for op in &ops {
            touched_original |= apply(&mut text, &mut model, op)?;
            check(&text, &model)?;
        }

        // Remove everything that was added, backends first (newest first), then pools.
        for i in 0..model.len() {
            while let Some(j) = model[i].backends.iter().rposition(|(_, original)| !original) {
                let (addr, _) = model[i].backends[j];
                text = edit::remove_backend(&text, model[i].pattern, &is(addr))
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                model[i].backends.remove(j);
                check(&text, &model)?;
            }
        }
        while let Some(i) = model.iter().rposition(|p| !p.original) {
            text = edit::remove_pool(&text, model[i].pattern)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            model.remove(i);
            check(&text, &model)?;
        }
        if !touched_original {
            prop_assert_eq!(&text, ORIGINAL, "after {:?}", ops);
        }
    }
}
