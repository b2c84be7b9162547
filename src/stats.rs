//! stats: owns the per-backend counters, requests by status code with a latency histogram
//! ([`RequestStats`]) and active-check outcomes ([`CheckStats`]), as relaxed atomics. A leaf:
//! `topology` keeps them in each `Backend` (so they survive reloads with it), `proxy` and
//! `health` record into them, `metrics` renders them. It renders nothing and decides nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;

/// Now, in milliseconds since the Unix epoch (0 for a clock before it).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Upper bounds (seconds) of the request-duration histogram buckets: 100 µs to 10 s on a
/// 1-2.5-5 ladder, so a backend on the same host (well under a millisecond) is resolved too.
pub const BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Status codes 100..=599 each get a counter; anything else is counted as 0 ("other").
const N_CODES: usize = 500;

/// Counts of requests by status code and a latency histogram.
pub struct RequestStats {
    codes: Box<[AtomicU64]>,
    buckets: [AtomicU64; BUCKETS.len()],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Default for RequestStats {
    fn default() -> Self {
        RequestStats {
            codes: (0..=N_CODES).map(|_| AtomicU64::new(0)).collect(),
            buckets: Default::default(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }
}

impl std::fmt::Debug for RequestStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestStats")
            .field("count", &self.count.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl RequestStats {
    /// Records one response: its status and how long until its head was ready.
    pub fn record(&self, code: u16, duration: Duration) {
        let idx = usize::from(code)
            .checked_sub(99)
            .filter(|i| *i <= N_CODES)
            .unwrap_or(0);
        if let Some(counter) = self.codes.get(idx) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        let seconds = duration.as_secs_f64();
        if let Some(bucket) = BUCKETS.iter().position(|b| seconds <= *b) {
            self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        }
        let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// `(code, count)` for every code seen at least once.
    pub fn codes(&self) -> impl Iterator<Item = (u16, u64)> + '_ {
        self.codes.iter().enumerate().filter_map(|(i, c)| {
            let n = c.load(Ordering::Relaxed);
            let code = if i == 0 { 0 } else { (i + 99) as u16 };
            (n > 0).then_some((code, n))
        })
    }

    /// Responses that count as errors: 5xx (a backend's, or lb's own 502/504 after a backend
    /// failed) and codes outside 100..=599.
    pub fn errors(&self) -> u64 {
        let server = self.codes.get(500 - 99..=599 - 99).unwrap_or_default();
        let other = self.codes.first().map_or(0, |c| c.load(Ordering::Relaxed));
        other
            + server
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .sum::<u64>()
    }

    /// How many requests are recorded.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// How many requests fell in each bucket of [`BUCKETS`] (not cumulative).
    pub fn bucket_counts(&self) -> [u64; BUCKETS.len()] {
        std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed))
    }

    /// The recorded durations added up, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
    }
}

/// The bytes lb's HTTP/1.1 client sent to and received from one backend on request
/// connections (HTTP bytes: under TLS, the plaintext; health probes are not counted). Shared
/// by the backend and each of its connections, counted as each read or write completes.
#[derive(Debug, Default)]
pub struct Traffic {
    sent: AtomicU64,
    received: AtomicU64,
}

impl Traffic {
    /// Counts bytes written to the backend.
    pub fn add_sent(&self, n: usize) {
        self.sent.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Counts bytes read from the backend.
    pub fn add_received(&self, n: usize) {
        self.received.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Bytes written to the backend so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Bytes read from the backend so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

/// Active health-check outcomes of one backend, how long its last probe took, and what the
/// last probe found (for the dashboard and `/status.json`).
#[derive(Debug, Default)]
pub struct CheckStats {
    passed: AtomicU64,
    failed: AtomicU64,
    last_micros: AtomicU64,
    /// When the last probe ended, milliseconds since the Unix epoch; 0 before the first.
    last_at_ms: AtomicU64,
    /// Why the last probe failed; `None` when it passed (or none ran). Written by the
    /// backend's one checker, only when the reason changes.
    last_failure: ArcSwapOption<String>,
}

impl CheckStats {
    /// Counts one probe's outcome and keeps how long it took.
    pub fn record(&self, passed: bool, took: Duration) {
        let counter = if passed { &self.passed } else { &self.failed };
        counter.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.last_micros.store(micros, Ordering::Relaxed);
        self.last_at_ms.store(unix_ms(), Ordering::Relaxed);
    }

    /// Keeps why the last probe failed (`None`: it passed); a reason equal to the one kept is
    /// not copied again.
    pub fn record_failure(&self, reason: Option<&str>) {
        let kept = self.last_failure.load();
        if kept.as_deref().map(String::as_str) != reason {
            self.last_failure
                .store(reason.map(|r| Arc::new(r.to_owned())));
        }
    }

    /// Why the last probe failed; `None` when it passed or none ran yet.
    pub fn last_failure(&self) -> Option<Arc<String>> {
        self.last_failure.load_full()
    }

    /// When the last probe ended, milliseconds since the Unix epoch; `None` before the first.
    pub fn last_at_ms(&self) -> Option<u64> {
        Some(self.last_at_ms.load(Ordering::Relaxed)).filter(|ms| *ms > 0)
    }

    /// Probes that passed.
    pub fn passed(&self) -> u64 {
        self.passed.load(Ordering::Relaxed)
    }

    /// Probes that failed.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// How long the last probe took, in seconds.
    pub fn last_seconds(&self) -> f64 {
        self.last_micros.load(Ordering::Relaxed) as f64 / 1e6
    }
}
