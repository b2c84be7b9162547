//! `lb::balance::pick` (power of two choices) over 2, 10 and 100 healthy backends.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use lb::config::BackendAddr;
use lb::topology::Backend;

fn p2c(c: &mut Criterion) {
    let mut group = c.benchmark_group("p2c/pick");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(30);
    for n in [2usize, 10, 100] {
        let backends: Vec<Arc<Backend>> = (0..n)
            .map(|i| {
                let addr: BackendAddr = format!("127.0.0.1:{}", 10_000 + i).parse().unwrap();
                Arc::new(Backend::new(addr, true))
            })
            .collect();
        // Some load so the comparison is not always a tie.
        let _guards: Vec<_> = backends
            .iter()
            .step_by(3)
            .map(|b| b.start_request())
            .collect();
        let mut rng = fastrand::Rng::with_seed(7);
        group.bench_with_input(BenchmarkId::from_parameter(n), &backends, |b, backends| {
            b.iter(|| {
                black_box(lb::balance::pick(black_box(backends), &mut rng, |b| {
                    b.in_flight() as f64
                }))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, p2c);
criterion_main!(benches);
