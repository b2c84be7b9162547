//! Route lookup cost as the number of pools grows: 10, 1,000 and 10,000 patterns, a mix of
//! exact, subtree, wildcard and host+method patterns. Target (issue 5): the per-lookup time at
//! 10,000 pools within 2x of the time at 10.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::Method;
use lb::routing::{Pattern, Route, Router};

/// The pattern of pool `i`: one of four shapes, each under its own first segment.
fn pattern(i: usize) -> String {
    match i % 4 {
        0 => format!("/svc{i}/items"),                         // exact
        1 => format!("/svc{i}/"),                              // subtree
        2 => format!("/svc{i}/users/{{id}}"),                  // wildcard
        _ => format!("GET api{i}.example.com/v1/{{rest...}}"), // host + method + rest wildcard
    }
}

/// A request that pattern `i` matches: (method, host, path).
fn request(i: usize) -> (Method, String, String) {
    match i % 4 {
        0 => (Method::GET, "lb.local".into(), format!("/svc{i}/items")),
        1 => (Method::POST, "lb.local".into(), format!("/svc{i}/a/b/c")),
        2 => (Method::GET, "lb.local".into(), format!("/svc{i}/users/42")),
        _ => (
            Method::GET,
            format!("api{i}.example.com:8080"),
            "/v1/x/y".to_owned(),
        ),
    }
}

fn router(n: usize) -> Router<usize> {
    let routes = (0..n)
        .map(|i| (Pattern::parse(&pattern(i)).expect("valid pattern"), i))
        .collect();
    Router::new(routes).expect("no conflicts")
}

fn lookups(c: &mut Criterion) {
    let mut group = c.benchmark_group("router/lookup");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(30);
    for n in [10usize, 1_000, 10_000] {
        let router = router(n);
        // Requests spread over the table: every shape, first and last pools, plus a miss.
        let mut requests: Vec<(Method, String, String, Option<usize>)> = (0..n)
            .step_by((n / 8).max(1))
            .chain([n - 4, n - 3, n - 2, n - 1])
            .map(|i| {
                let (m, h, p) = request(i);
                (m, h, p, Some(i))
            })
            .collect();
        requests.push((
            Method::GET,
            "lb.local".into(),
            "/nowhere/at/all".into(),
            None,
        ));
        for (m, h, p, want) in &requests {
            let got = match router.route(m, h, p) {
                Route::Matched(&i) => Some(i),
                _ => None,
            };
            assert_eq!(got, *want, "{m} {h}{p}");
        }
        group.bench_with_input(BenchmarkId::from_parameter(n), &requests, |b, requests| {
            let mut k = 0;
            b.iter(|| {
                k = (k + 1) % requests.len();
                let (m, h, p, _) = &requests[k];
                black_box(router.route(black_box(m), black_box(h), black_box(p)))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, lookups);
criterion_main!(benches);
