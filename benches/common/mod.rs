//! A large lb.toml shared by the control-path benches: 1,000 pools x 10 backends.

#![allow(dead_code)]

use std::fmt::Write;
use std::time::Duration;

pub const POOLS: usize = 1_000;
/// The `[listen]` section every bench config starts with: ephemeral loopback ports.
pub const LISTEN: &str = "[listen]\nhttp = \"127.0.0.1:0\"\ngrpc = \"127.0.0.1:0\"\n";
pub const BACKENDS_PER_POOL: usize = 10;

/// The pattern of pool `i`: exact, subtree, wildcard, and host + method shapes in turn.
pub fn pattern(i: usize) -> String {
    match i % 4 {
        0 => format!("/svc{i}/items"),
        1 => format!("/svc{i}/"),
        2 => format!("/svc{i}/users/{{id}}"),
        _ => format!("GET api{i}.example.com/v1/{{rest...}}"),
    }
}

/// The text of the file. Backends are loopback ports nothing listens on (their one probe is
/// refused at once); the interval is long so checkers stay quiet while benches run.
/// `extra` adds one backend to the last pool, to make a second, slightly different file.
pub fn large_config(listen: &str, extra: bool) -> String {
    let mut text = String::with_capacity(600 * 1024);
    text.push_str("# 1,000 pools and 10,000 backends for the control-path benches\n");
    text.push_str(listen);
    for i in 0..POOLS {
        let _ = writeln!(text, "\n[pools.\"{}\"]", pattern(i));
        text.push_str("interval = \"1h\"\nbackends = [\n");
        for j in 0..BACKENDS_PER_POOL {
            let _ = writeln!(text, "  \"127.0.0.1:{}\",", backend_port(i, j));
        }
        if extra && i == POOLS - 1 {
            text.push_str("  \"127.0.0.1:9\",\n");
        }
        text.push_str("]\n");
    }
    text
}

pub fn backend_port(pool: usize, backend: usize) -> u16 {
    (20_000 + pool * BACKENDS_PER_POOL + backend) as u16
}

/// Nearest-rank percentile of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn report(name: &str, samples: &mut [Duration]) {
    samples.sort();
    eprintln!(
        "{name}: n={} p50={:.2?} p99={:.2?} max={:.2?}",
        samples.len(),
        percentile(samples, 50.0),
        percentile(samples, 99.0),
        samples.last().copied().unwrap_or_default()
    );
}

/// The runtime the control-path benches drive lb's async API on: two workers, as lb on a
/// 2-core machine.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}
