//! Rendering `/metrics` for 1,000 pools x 10 backends, every backend with requests of two status
//! codes recorded: what one scrape costs the admin listener.

mod common;

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use lb::apply::Applier;

fn metrics(c: &mut Criterion) {
    let rt = common::runtime();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.toml");
    let listen = common::LISTEN;
    std::fs::write(&path, common::large_config(listen, false)).unwrap();
    let applier = rt.block_on(async { Applier::load(&path).await.unwrap().0 });
    let topology = applier.topology().load_full();
    for pool in &topology.pools {
        for backend in &pool.backends {
            backend.stats.record(200, Duration::from_millis(3));
            backend.stats.record(503, Duration::from_millis(40));
        }
    }

    let mut group = c.benchmark_group("metrics");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(20);
    group.bench_function("render_1000_pools_10000_backends", |b| {
        b.iter(|| {
            black_box(lb::metrics::render(
                topology.clone(),
                applier.status(),
                applier.metrics().clone(),
                None,
            ))
        })
    });
    group.finish();
}

criterion_group!(benches, metrics);
criterion_main!(benches);
