//! admin::recent: owns the dashboard's memory, the last [`RING_SECONDS`] of figures per pool
//! and per backend, one sample a second, served as `/history.json`, so a page opened after an
//! incident shows it at once.
//!
//! A task on the control side ([`run`]) takes each sample on tokio's blocking pool, never on a
//! proxy worker: it loads the topology once and reads the counters the request path already
//! keeps (`stats`, `Backend`'s atomics), so recording costs a request nothing. Each series is a
//! ring of fixed capacity allocated when the series first appears; at most [`MAX_SERIES`]
//! rings exist (pools take theirs before the backends that appear with them; a series that
//! finds none is left out of `/history.json`, its pool's sums still count it), so the memory
//! is bounded whatever the topology ([`MAX_BYTES`], plus a few hundred bytes of totals per
//! backend). A series whose pool or backend leaves the file is
//! dropped at the next sample. The lock here is held by the sampler and the admin handler only,
//! each on the blocking pool; the request path never sees it.
//!
//! It never changes health, routing or a counter.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::apply::Applier;
use crate::metrics::Global;
use crate::stats::{unix_ms, BUCKETS};
use crate::topology::{Backend, Topology};

/// Samples kept per series: fifteen minutes at one a second.
pub const RING_SECONDS: usize = 900;
/// Series kept at most (pools and backends together); the rest are not recorded.
pub const MAX_SERIES: usize = 1024;
/// The bound on the rings' memory: every series full.
pub const MAX_BYTES: usize = MAX_SERIES * RING_SECONDS * std::mem::size_of::<Sample>();

/// One second of one pool or backend. Counts are what happened during the second; gauges are
/// what was true at its end.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Sample {
    /// Responses finished.
    requests: u32,
    /// Of those, errors: 5xx (a backend's or lb's own 502/504) and malformed codes.
    errors: u32,
    /// 99th percentile time to the response head, microseconds; `u32::MAX` without requests.
    p99_us: u32,
    /// Attempts retried on another backend.
    retries: u32,
    /// Passive ejections.
    ejections: u32,
    /// Requests (and tunnels) open to the backend(s).
    in_flight: u32,
    /// Bytes sent to the backend(s) (saturating at `u32::MAX` a second).
    bytes_sent: u32,
    /// Bytes received from the backend(s).
    bytes_received: u32,
    /// Backends healthy (a backend's series: 0 or 1).
    healthy: u16,
    /// Backends in rotation: healthy and enabled.
    in_rotation: u16,
}

const NO_P99: u32 = u32::MAX;

/// The cumulative counters of one backend at the last sample.
#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    requests: u64,
    errors: u64,
    buckets: [u64; BUCKETS.len()],
    retries: u64,
    ejections: u64,
    bytes_sent: u64,
    bytes_received: u64,
}

impl Totals {
    fn of(backend: &Backend) -> Totals {
        Totals {
            requests: backend.stats.count(),
            errors: backend.stats.errors(),
            buckets: backend.stats.bucket_counts(),
            retries: backend.retries(),
            ejections: backend.ejections(),
            bytes_sent: backend.traffic.sent(),
            bytes_received: backend.traffic.received(),
        }
    }

    /// What happened since `before` (a counter that went down is read as restarted).
    fn since(&self, before: &Totals) -> Totals {
        let d = |now: u64, then: u64| if now >= then { now - then } else { now };
        Totals {
            requests: d(self.requests, before.requests),
            errors: d(self.errors, before.errors),
            buckets: std::array::from_fn(|i| d(self.buckets[i], before.buckets[i])),
            retries: d(self.retries, before.retries),
            ejections: d(self.ejections, before.ejections),
            bytes_sent: d(self.bytes_sent, before.bytes_sent),
            bytes_received: d(self.bytes_received, before.bytes_received),
        }
    }

    fn add(&mut self, other: &Totals) {
        self.requests += other.requests;
        self.errors += other.errors;
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets) {
            *mine += theirs;
        }
        self.retries += other.retries;
        self.ejections += other.ejections;
        self.bytes_sent += other.bytes_sent;
        self.bytes_received += other.bytes_received;
    }
}

/// The 0.99 quantile of `requests` responses whose durations fell in `buckets` (not cumulative;
/// responses past the last bound are in `requests` only), interpolated linearly within its
/// bucket as Prometheus' `histogram_quantile` does; `None` without responses.
fn p99(buckets: &[u64; BUCKETS.len()], requests: u64) -> Option<Duration> {
    if requests == 0 {
        return None;
    }
    let rank = 0.99 * requests as f64;
    let (mut lower, mut below) = (0.0, 0u64);
    for (bound, n) in BUCKETS.iter().zip(buckets) {
        let cumulative = below + n;
        if cumulative as f64 >= rank {
            let within = (rank - below as f64) / (*n).max(1) as f64;
            return Some(Duration::from_secs_f64(lower + (bound - lower) * within));
        }
        (lower, below) = (*bound, cumulative);
    }
    // Beyond the last bound: the last bound is all that is known.
    Some(Duration::from_secs_f64(lower))
}

fn sample_of(delta: &Totals, in_flight: u64, healthy: usize, in_rotation: usize) -> Sample {
    let small = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
    Sample {
        requests: small(delta.requests),
        errors: small(delta.errors),
        p99_us: p99(&delta.buckets, delta.requests).map_or(NO_P99, |d| {
            u32::try_from(d.as_micros()).unwrap_or(NO_P99 - 1)
        }),
        retries: small(delta.retries),
        ejections: small(delta.ejections),
        in_flight: small(in_flight),
        bytes_sent: small(delta.bytes_sent),
        bytes_received: small(delta.bytes_received),
        healthy: u16::try_from(healthy).unwrap_or(u16::MAX),
        in_rotation: u16::try_from(in_rotation).unwrap_or(u16::MAX),
    }
}

/// A fixed-capacity ring: allocated once, the oldest sample overwritten when full.
#[derive(Debug)]
struct Ring<T> {
    items: VecDeque<T>,
}

impl<T> Ring<T> {
    fn new() -> Ring<T> {
        Ring {
            items: VecDeque::with_capacity(RING_SECONDS),
        }
    }

    fn push(&mut self, item: T) {
        if self.items.len() == RING_SECONDS {
            self.items.pop_front();
        }
        self.items.push_back(item);
    }

    fn last(&self, n: usize) -> impl Iterator<Item = &T> {
        self.items.iter().skip(self.items.len().saturating_sub(n))
    }
}

#[derive(Debug)]
struct BackendSeries {
    /// The `Backend` whose counters `totals` are: another one (re-declared) starts from zero.
    identity: usize,
    totals: Totals,
    /// `None` when there was no room for it (see [`MAX_SERIES`]): only its totals are kept,
    /// for its pool's sums.
    samples: Option<Ring<Sample>>,
    /// The tick of the last sample, to drop a series whose backend is gone.
    seen: u64,
}

#[derive(Debug)]
struct PoolSeries {
    samples: Option<Ring<Sample>>,
    seen: u64,
}

/// Every series, and the time of each sample.
#[derive(Debug, Default)]
struct Rings {
    /// Unix milliseconds of each sample, the newest last.
    times: Option<Ring<u64>>,
    /// Client connections open, at each sample.
    connections_open: Option<Ring<u32>>,
    pools: HashMap<Arc<str>, PoolSeries>,
    /// By (pool, `IP:PORT` and url_path).
    backends: HashMap<(Arc<str>, String), BackendSeries>,
    /// Rings allocated, of [`MAX_SERIES`].
    allocated: usize,
    tick: u64,
}

/// The rings and who reads them: shared by the sampler task and the admin handler.
#[derive(Debug, Default)]
pub struct Recorder {
    rings: tokio::sync::Mutex<Rings>,
}

fn backend_key(pattern: &Arc<str>, backend: &Backend) -> (Arc<str>, String) {
    (
        Arc::clone(pattern),
        format!("{}{}", backend.addr.host_port(), backend.addr.url_path),
    )
}

impl Rings {
    /// A new ring when fewer than [`MAX_SERIES`] are allocated.
    fn ring(&mut self) -> Option<Ring<Sample>> {
        (self.allocated < MAX_SERIES).then(|| {
            self.allocated += 1;
            Ring::new()
        })
    }

    /// Takes one sample of every pool and backend of `topology`, at `now_ms`.
    fn sample(&mut self, topology: &Topology, global: &Global, now_ms: u64) {
        self.tick += 1;
        let tick = self.tick;
        self.times.get_or_insert_with(Ring::new).push(now_ms);
        let open = global.connections_open.load(Ordering::Relaxed);
        self.connections_open
            .get_or_insert_with(Ring::new)
            .push(u32::try_from(open).unwrap_or(u32::MAX));
        // Pools take their rings before any backend new this tick.
        for pool in &topology.pools {
            if !self.pools.contains_key(&pool.pattern) {
                let samples = self.ring();
                let series = PoolSeries {
                    samples,
                    seen: tick,
                };
                self.pools.insert(Arc::clone(&pool.pattern), series);
            }
        }
        for pool in &topology.pools {
            let mut sum = Totals::default();
            let (mut in_flight, mut healthy, mut in_rotation) = (0, 0, 0);
            for backend in pool.backends.iter() {
                let totals = Totals::of(backend);
                let identity = Arc::as_ptr(backend) as usize;
                let key = backend_key(&pool.pattern, backend);
                if !self.backends.contains_key(&key) {
                    let samples = self.ring();
                    let series = BackendSeries {
                        identity,
                        totals: Totals::default(),
                        samples,
                        seen: tick,
                    };
                    self.backends.insert(key.clone(), series);
                }
                let Some(series) = self.backends.get_mut(&key) else {
                    continue;
                };
                let before = if series.identity == identity {
                    series.totals
                } else {
                    Totals::default()
                };
                let delta = totals.since(&before);
                (series.identity, series.totals, series.seen) = (identity, totals, tick);
                let (up, serving) = (backend.is_healthy(), backend.in_rotation());
                if let Some(samples) = &mut series.samples {
                    let sample = sample_of(&delta, backend.in_flight(), up.into(), serving.into());
                    samples.push(sample);
                }
                sum.add(&delta);
                in_flight += backend.in_flight();
                healthy += usize::from(up);
                in_rotation += usize::from(serving);
            }
            if let Some(series) = self.pools.get_mut(&pool.pattern) {
                series.seen = tick;
                if let Some(samples) = &mut series.samples {
                    samples.push(sample_of(&sum, in_flight, healthy, in_rotation));
                }
            }
        }
        // What left the file gives its room back.
        let before = self.pools.len() + self.backends.len();
        self.pools.retain(|_, s| s.seen == tick);
        self.backends.retain(|_, s| s.seen == tick);
        if self.pools.len() + self.backends.len() < before {
            self.allocated = self.pools.values().filter(|s| s.samples.is_some()).count()
                + self
                    .backends
                    .values()
                    .filter(|s| s.samples.is_some())
                    .count();
        }
    }

    /// The last `seconds` samples (at most [`RING_SECONDS`]) as `/history.json` has them.
    fn document(&self, topology: &Topology, seconds: usize) -> HistoryDoc {
        let times: Vec<u64> = self
            .times
            .as_ref()
            .map(|r| r.last(seconds).copied().collect())
            .unwrap_or_default();
        let connections_open = self
            .connections_open
            .as_ref()
            .map(|r| r.last(seconds).copied().collect())
            .unwrap_or_default();
        let pools = topology
            .pools
            .iter()
            .filter_map(|pool| {
                let samples = self.pools.get(&pool.pattern)?.samples.as_ref()?;
                let backends = pool
                    .backends
                    .iter()
                    .filter_map(|b| {
                        let key = backend_key(&pool.pattern, b);
                        let samples = self.backends.get(&key)?.samples.as_ref()?;
                        Some(BackendHistory {
                            addr: key.1,
                            series: columns(samples, seconds),
                        })
                    })
                    .collect();
                Some(PoolHistory {
                    pattern: pool.pattern.to_string(),
                    series: columns(samples, seconds),
                    backends,
                })
            })
            .collect();
        HistoryDoc {
            interval_seconds: 1,
            capacity: RING_SECONDS,
            times_unix_ms: times,
            connections_open,
            pools,
        }
    }
}

fn columns(ring: &Ring<Sample>, seconds: usize) -> Series {
    let samples: Vec<&Sample> = ring.last(seconds).collect();
    let column = |f: fn(&Sample) -> u32| samples.iter().map(|s| f(s)).collect();
    Series {
        requests: column(|s| s.requests),
        errors: column(|s| s.errors),
        p99_ms: samples
            .iter()
            .map(|s| (s.p99_us != NO_P99).then(|| f64::from(s.p99_us) / 1000.0))
            .collect(),
        retries: column(|s| s.retries),
        ejections: column(|s| s.ejections),
        in_flight: column(|s| s.in_flight),
        bytes_sent: column(|s| s.bytes_sent),
        bytes_received: column(|s| s.bytes_received),
        healthy: column(|s| u32::from(s.healthy)),
        in_rotation: column(|s| u32::from(s.in_rotation)),
    }
}

/// `/history.json`: the last minutes, one sample a second. Every array of a series ends with
/// the newest sample, aligned with the end of `times_unix_ms`; a series that appeared later is
/// shorter.
#[derive(Debug, Serialize)]
pub struct HistoryDoc {
    /// Seconds between two samples (a late tick makes a longer one: see the times).
    pub interval_seconds: u64,
    /// Samples kept at most per series.
    pub capacity: usize,
    /// When each sample was taken, Unix milliseconds, oldest first.
    pub times_unix_ms: Vec<u64>,
    /// Client connections open at each sample.
    pub connections_open: Vec<u32>,
    /// In file order.
    pub pools: Vec<PoolHistory>,
}

/// One pool's series (its backends summed) and each backend's.
#[derive(Debug, Serialize)]
pub struct PoolHistory {
    /// The pool's pattern.
    pub pattern: String,
    /// The pool's figures.
    #[serde(flatten)]
    pub series: Series,
    /// Stable then canary, each in file order.
    pub backends: Vec<BackendHistory>,
}

/// One backend's series.
#[derive(Debug, Serialize)]
pub struct BackendHistory {
    /// `IP:PORT` and the url_path.
    pub addr: String,
    /// Its figures.
    #[serde(flatten)]
    pub series: Series,
}

/// The figures of one series, a value per sample, oldest first.
#[derive(Debug, Serialize)]
pub struct Series {
    /// Responses finished in the second.
    pub requests: Vec<u32>,
    /// Of those, errors (5xx, lb's own 502/504).
    pub errors: Vec<u32>,
    /// 99th percentile time to the response head, milliseconds; `null` without requests.
    pub p99_ms: Vec<Option<f64>>,
    /// Attempts retried on another backend.
    pub retries: Vec<u32>,
    /// Passive ejections.
    pub ejections: Vec<u32>,
    /// Requests open to the backend(s) at the sample.
    pub in_flight: Vec<u32>,
    /// Bytes sent to the backend(s) in the second.
    pub bytes_sent: Vec<u32>,
    /// Bytes received from the backend(s) in the second.
    pub bytes_received: Vec<u32>,
    /// Backends healthy (a backend: 0 or 1).
    pub healthy: Vec<u32>,
    /// Backends in rotation (healthy and enabled).
    pub in_rotation: Vec<u32>,
}

impl Recorder {
    /// The document for the last `seconds` samples of the pools and backends in `topology`.
    /// Call on the blocking pool (it waits for the sampler's lock).
    pub fn document(&self, topology: &Topology, seconds: usize) -> HistoryDoc {
        self.rings.blocking_lock().document(topology, seconds)
    }
}

/// Samples every second until `stopping` is cancelled.
pub async fn run(
    recorder: Arc<Recorder>,
    applier: Arc<Applier>,
    global: Arc<Global>,
    stopping: CancellationToken,
) {
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = stopping.cancelled() => return,
        }
        let topology = applier.topology().load_full();
        let (recorder, global) = (Arc::clone(&recorder), Arc::clone(&global));
        let taken = tokio::task::spawn_blocking(move || {
            recorder
                .rings
                .blocking_lock()
                .sample(&topology, &global, unix_ms());
        });
        if taken.await.is_err() {
            tracing::warn!("a dashboard history sample failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PoolType;
    use crate::topology::Pool;

    fn topology(backends: &[Arc<Backend>]) -> Topology {
        let mut topology = Topology::empty();
        topology.pools.push(Arc::new(Pool {
            pattern: "/".into(),
            pool_type: PoolType::P2c,
            connect_timeout: Duration::from_secs(1),
            backend_tls: None,
            request_timeout: Duration::from_secs(1),
            retries: 0,
            backends: backends.iter().cloned().collect(),
            n_stable: backends.len(),
            canary: None,
            rate_limit: None,
        }));
        topology
    }

    #[test]
    fn the_p99_is_interpolated_within_its_bucket() {
        let mut buckets = [0; BUCKETS.len()];
        // 100 responses in (1 ms, 2.5 ms]: the 99th is 99% of the way through it.
        buckets[4] = 100;
        let p = p99(&buckets, 100).unwrap().as_secs_f64();
        assert!((p - (0.001 + 0.0015 * 0.99)).abs() < 1e-9, "{p}");
        assert_eq!(p99(&buckets, 0), None);
        // Past the last bound: the last bound.
        assert_eq!(
            p99(&[0; BUCKETS.len()], 5),
            Some(Duration::from_secs_f64(10.0))
        );
    }

    #[test]
    fn samples_are_per_second_deltas_and_the_ring_is_bounded() {
        let a = Arc::new(Backend::new("127.0.0.1:9001".parse().unwrap(), true));
        let b = Arc::new(Backend::new("127.0.0.1:9002".parse().unwrap(), false));
        let topology = topology(&[Arc::clone(&a), Arc::clone(&b)]);
        let global = Global::default();
        let mut rings = Rings::default();
        for second in 0..RING_SECONDS as u64 + 10 {
            for _ in 0..3 {
                a.stats.record(200, Duration::from_millis(2));
            }
            b.stats.record(503, Duration::from_millis(1));
            rings.sample(&topology, &global, second * 1000);
        }
        let doc = rings.document(&topology, usize::MAX);
        assert_eq!(doc.times_unix_ms.len(), RING_SECONDS);
        assert_eq!(doc.times_unix_ms[0], 10_000);
        let pool = &doc.pools[0];
        assert_eq!(pool.series.requests.len(), RING_SECONDS);
        assert!(pool.series.requests.iter().all(|n| *n == 4));
        assert!(pool.series.errors.iter().all(|n| *n == 1));
        assert!(pool.series.healthy.iter().all(|n| *n == 1));
        assert_eq!(pool.backends.len(), 2);
        assert!(pool.backends[0].series.requests.iter().all(|n| *n == 3));
        assert!(pool.backends[1].series.in_rotation.iter().all(|n| *n == 0));
        let p = pool.backends[0].series.p99_ms[0].unwrap();
        assert!(p > 1.0 && p <= 2.5, "{p}");
        // Asked for the last few seconds only.
        let doc = rings.document(&topology, 5);
        assert_eq!(doc.times_unix_ms.len(), 5);
        assert_eq!(doc.pools[0].backends[1].series.errors, vec![1; 5]);
        // A backend that leaves the file leaves the history.
        rings.sample(&topology_of_one(&a), &global, 2_000_000);
        assert_eq!(rings.backends.len(), 1);
    }

    fn topology_of_one(a: &Arc<Backend>) -> Topology {
        topology(std::slice::from_ref(a))
    }

    #[test]
    fn no_more_than_max_series_rings_are_kept_and_the_pool_still_counts_every_backend() {
        let backends: Vec<Arc<Backend>> = (0..MAX_SERIES + 10)
            .map(|i| {
                let port = 10_000 + i;
                Arc::new(Backend::new(
                    format!("127.0.0.1:{port}").parse().unwrap(),
                    true,
                ))
            })
            .collect();
        let topology = topology(&backends);
        let mut rings = Rings::default();
        for b in &backends {
            b.stats.record(200, Duration::from_millis(1));
        }
        rings.sample(&topology, &Global::default(), 1000);
        assert_eq!(rings.allocated, MAX_SERIES);
        let doc = rings.document(&topology, usize::MAX);
        // The pool's ring first, then as many backends as fit.
        assert_eq!(doc.pools[0].backends.len(), MAX_SERIES - 1);
        assert_eq!(doc.pools[0].series.requests, vec![(MAX_SERIES + 10) as u32]);
    }

    #[test]
    fn the_memory_bound_is_stated() {
        // README says: at most 1,024 series of 900 samples of 36 bytes (about 33 MB).
        assert_eq!(std::mem::size_of::<Sample>(), 36);
        assert_eq!(MAX_BYTES, 1024 * 900 * 36);
    }
}
