//! parse + validate + build snapshot + swap for a file of 1,000 pools and 10,000 backends, with
//! health carried over for every unchanged backend. Target (issue 5): under 100 ms.

mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use lb::apply::{Applier, Reloaded};

fn reload(c: &mut Criterion) {
    let rt = common::runtime();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.toml");
    let listen = common::LISTEN;
    let texts = [
        common::large_config(listen, false),
        common::large_config(listen, true),
    ];
    std::fs::write(&path, &texts[0]).unwrap();

    let mut group = c.benchmark_group("reload");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(10);

    group.bench_function("parse_1000_pools_10000_backends", |b| {
        b.iter(|| black_box(lb::config::parse(black_box(&texts[0])).unwrap()))
    });

    let applier = rt.block_on(async {
        let (applier, _) = Applier::load(&path).await.unwrap();
        applier
    });
    let checkers = rt.block_on(applier.n_checkers());
    assert_eq!(checkers, common::POOLS * common::BACKENDS_PER_POOL);
    // A backend that every reload keeps: its Arc (health, in-flight, stats) must survive.
    let kept = Arc::clone(&applier.topology().load().pools[5].backends[3]);

    let mut flip = 0usize;
    let mut samples = Vec::new();
    group.bench_function("reload_1000_pools_10000_backends", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                flip += 1;
                std::fs::write(&path, &texts[flip % 2]).unwrap();
                let started = Instant::now();
                let outcome = rt.block_on(applier.reload()).unwrap();
                let took = started.elapsed();
                assert!(matches!(outcome, Reloaded::Applied { .. }));
                total += took;
                samples.push(took);
            }
            total
        })
    });
    group.finish();

    let topology = applier.topology().load();
    assert!(
        Arc::ptr_eq(&kept, &topology.pools[5].backends[3]),
        "an unchanged backend lost its state across reloads"
    );
    let checkers = rt.block_on(applier.n_checkers());
    assert_eq!(
        checkers,
        common::POOLS * common::BACKENDS_PER_POOL + flip % 2
    );
    common::report(
        "reload (read + parse + validate + build + swap)",
        &mut samples,
    );
    eprintln!("health carried over: {checkers} checkers, unchanged backends keep their state");
}

criterion_group!(benches, reload);
criterion_main!(benches);
