//! An AddBackend RPC end to end on the large file (1,000 pools, 10,000 backends): tonic client →
//! in-process `lb::Lb` → probe → validate → edit → fsync → rename → re-apply. Target (issue 5):
//! p99 under 20 ms excluding the backend's health probe.
//!
//! The probe is part of AddBackend (a failing backend is refused), so three things are timed:
//! the AddBackend RPC (probe included), the probe alone against the same backend, and the
//! RemoveBackend RPC (the same validate/edit/fsync/rename/re-apply work with no probe).

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use lb::config::HealthChecks;
use lb::control::proto::{self, load_balancer_client::LoadBalancerClient};
use tonic::transport::Channel;

fn ip_backend(addr: SocketAddr) -> Option<proto::Backend> {
    Some(proto::Backend {
        backend: Some(proto::backend::Backend::IpBackend(proto::IpBackend {
            ip: addr.ip().to_string(),
            port: i32::from(addr.port()),
            url_path: String::new(),
        })),
    })
}

fn add_backend(c: &mut Criterion) {
    let rt = common::runtime();
    // Under the target dir, not /tmp: the fsync should hit a real disk, not a tmpfs.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("lb.toml");
    let listen = common::LISTEN;
    std::fs::write(&path, common::large_config(listen, false)).unwrap();

    let (backend, mut client) = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend = listener.local_addr().unwrap();
        tokio::spawn(sample_web::serve(listener, "bench".into()));
        let lb = lb::Lb::bind(lb::Options {
            config: path.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
        let grpc = lb.grpc_addr();
        tokio::spawn(lb.run(std::future::pending()));
        let client: LoadBalancerClient<Channel> =
            LoadBalancerClient::connect(format!("http://{grpc}"))
                .await
                .unwrap();
        (backend, client)
    });
    let pattern = common::pattern(501); // a subtree pool in the middle of the file
    let add = || proto::AddBackendReq {
        pattern: pattern.clone(),
        backend: ip_backend(backend),
        ..Default::default()
    };
    let remove = || proto::RemoveBackendReq {
        pattern: pattern.clone(),
        backend: ip_backend(backend),
        ..Default::default()
    };

    let mut group = c.benchmark_group("add_backend");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(10);

    let (mut adds, mut removes) = (Vec::new(), Vec::new());
    group.bench_function("add_backend_rpc_with_probe", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let started = Instant::now();
                    client.add_backend(add()).await.unwrap();
                    let took = started.elapsed();
                    total += took;
                    adds.push(took);
                    let started = Instant::now();
                    client.remove_backend(remove()).await.unwrap();
                    removes.push(started.elapsed());
                }
                total
            })
        })
    });

    let checks = HealthChecks::default();
    let mut probes = Vec::new();
    group.bench_function("probe_alone", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let started = Instant::now();
                    lb::health::probe_over(backend, &checks, None)
                        .await
                        .unwrap();
                    let took = started.elapsed();
                    total += took;
                    probes.push(took);
                }
                total
            })
        })
    });
    group.finish();

    common::report("AddBackend RPC (probe included)", &mut adds);
    common::report(
        "RemoveBackend RPC (same write path, no probe)",
        &mut removes,
    );
    common::report("health probe alone", &mut probes);
}

criterion_group!(benches, add_backend);
criterion_main!(benches);
