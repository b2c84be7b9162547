//! canary::stats: owns one side's counters over a sliding window, one slot a second for the
//! last [`WINDOW_SECONDS`] seconds: requests, responses by class, lb's own 502/503/504, connect
//! failures, timeouts and a latency histogram. Relaxed atomics only; the caller passes the
//! current second (from [`Clock`], or any injected one in tests), so it keeps no timer and
//! reads no clock. Rendering and judging are the caller's (`metrics`, [`super::verdict`]).
//!
//! A slot is reused when its second comes round again: the first recorder of a new second
//! claims it (compare-and-swap on its tag) and zeroes it. A request recorded by another thread
//! in the instant between the claim and the zeroing may be lost; a window's figures are a
//! comparison's evidence, not an account.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How many one-second slots a side keeps: the longest window a summary can cover.
pub const WINDOW_SECONDS: u64 = 300;

/// Upper bounds (milliseconds) of the latency buckets; the last bucket holds everything slower.
pub const LATENCY_BOUNDS_MS: [u64; 16] = [
    1, 2, 5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 1000, 2500, 10_000,
];

/// How many latency buckets there are: one per bound and one beyond the last.
pub const LATENCY_BUCKETS: usize = LATENCY_BOUNDS_MS.len() + 1;

/// The seconds a process has been counting, for [`SideStats`]: monotonic, from its creation.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
}

impl Clock {
    /// A clock at second zero now.
    pub fn new() -> Clock {
        Clock {
            start: Instant::now(),
        }
    }

    /// Whole seconds since [`Clock::new`].
    pub fn second(&self) -> u64 {
        self.start.elapsed().as_secs()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// How one request ended, as a side's statistics count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A backend's response with this status code.
    Backend(u16),
    /// lb's own answer (502, 503 or 504) when no backend answered; other codes count as 502.
    Lb(u16),
}

/// Not a tag any slot is claimed with: the slot for a second never recorded.
const UNCLAIMED: u64 = u64::MAX;

#[derive(Debug)]
struct Slot {
    /// The second this slot's counts belong to.
    second: AtomicU64,
    requests: AtomicU64,
    /// Backend responses 2xx, 3xx, 4xx, 5xx (a 1xx or out-of-range code counts as 5xx).
    classes: [AtomicU64; 4],
    /// lb's own 502, 503, 504.
    own: [AtomicU64; 3],
    connect_failures: AtomicU64,
    timeouts: AtomicU64,
    latency: [AtomicU64; LATENCY_BUCKETS],
}

impl Slot {
    fn new() -> Slot {
        Slot {
            second: AtomicU64::new(UNCLAIMED),
            requests: AtomicU64::new(0),
            classes: Default::default(),
            own: Default::default(),
            connect_failures: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    fn counters(&self) -> impl Iterator<Item = &AtomicU64> {
        std::iter::once(&self.requests)
            .chain(&self.classes)
            .chain(&self.own)
            .chain([&self.connect_failures, &self.timeouts])
            .chain(&self.latency)
    }
}

/// One side's counters over the last [`WINDOW_SECONDS`] seconds.
#[derive(Debug)]
pub struct SideStats {
    slots: Box<[Slot]>,
}

impl Default for SideStats {
    fn default() -> Self {
        SideStats::new()
    }
}

impl SideStats {
    /// Empty counters (allocated once, here).
    pub fn new() -> SideStats {
        SideStats {
            slots: (0..WINDOW_SECONDS).map(|_| Slot::new()).collect(),
        }
    }

    fn slot(&self, second: u64) -> &Slot {
        let slot = &self.slots[(second % WINDOW_SECONDS) as usize];
        let tag = slot.second.load(Ordering::Acquire);
        if tag != second
            && slot
                .second
                .compare_exchange(tag, second, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            for counter in slot.counters() {
                counter.store(0, Ordering::Relaxed);
            }
        }
        slot
    }

    /// Counts one finished request at `second`: its outcome and how long it took. Three
    /// relaxed `fetch_add`s (and a slot's zeroing once a second).
    pub fn record(&self, second: u64, outcome: Outcome, latency: Duration) {
        let slot = self.slot(second);
        slot.requests.fetch_add(1, Ordering::Relaxed);
        match outcome {
            Outcome::Backend(status) => {
                let class = match status {
                    200..=299 => 0,
                    300..=399 => 1,
                    400..=499 => 2,
                    _ => 3,
                };
                slot.classes[class].fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Lb(status) => {
                let own = match status {
                    503 => 1,
                    504 => 2,
                    _ => 0,
                };
                slot.own[own].fetch_add(1, Ordering::Relaxed);
            }
        }
        slot.latency[latency_bucket(latency)].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one failed connection attempt to a backend of this side at `second` (an attempt,
    /// not a request: a retried request may count several).
    pub fn record_connect_failure(&self, second: u64) {
        self.slot(second)
            .connect_failures
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one attempt that ran out of time at `second`.
    pub fn record_timeout(&self, second: u64) {
        self.slot(second).timeouts.fetch_add(1, Ordering::Relaxed);
    }

    /// The sums over the last `seconds` seconds up to and including `now` (at most
    /// [`WINDOW_SECONDS`]).
    pub fn summary(&self, now: u64, seconds: u64) -> Summary {
        let seconds = seconds.clamp(1, WINDOW_SECONDS);
        let oldest = now.saturating_sub(seconds - 1);
        let mut sum = Summary {
            seconds,
            ..Summary::default()
        };
        for slot in self.slots.iter() {
            let tag = slot.second.load(Ordering::Acquire);
            if tag == UNCLAIMED || tag < oldest || tag > now {
                continue;
            }
            let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
            sum.requests += read(&slot.requests);
            for (total, c) in sum.classes.iter_mut().zip(&slot.classes) {
                *total += read(c);
            }
            for (total, c) in sum.own.iter_mut().zip(&slot.own) {
                *total += read(c);
            }
            sum.connect_failures += read(&slot.connect_failures);
            sum.timeouts += read(&slot.timeouts);
            for (total, c) in sum.latency.iter_mut().zip(&slot.latency) {
                *total += read(c);
            }
        }
        sum
    }
}

fn latency_bucket(latency: Duration) -> usize {
    let ms = latency.as_micros().div_ceil(1000);
    LATENCY_BOUNDS_MS
        .iter()
        .position(|&bound| ms <= u128::from(bound))
        .unwrap_or(LATENCY_BOUNDS_MS.len())
}

/// One side's sums over a window. Plain counters and histogram buckets, so the summaries of
/// several instances over the same window add up to the fleet's ([`Summary::add`]); serialised
/// as the admin listener's `/rollout/windows` answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    /// The window's length in seconds.
    pub seconds: u64,
    /// Finished requests.
    pub requests: u64,
    /// Backend responses 2xx, 3xx, 4xx, 5xx.
    pub classes: [u64; 4],
    /// lb's own 502, 503, 504.
    pub own: [u64; 3],
    /// Failed connection attempts.
    pub connect_failures: u64,
    /// Attempts that ran out of time.
    pub timeouts: u64,
    /// Requests per latency bucket (bounds [`LATENCY_BOUNDS_MS`], then the overflow).
    pub latency: [u64; LATENCY_BUCKETS],
}

impl std::ops::AddAssign<&Summary> for Summary {
    fn add_assign(&mut self, other: &Summary) {
        self.seconds = self.seconds.max(other.seconds);
        self.requests += other.requests;
        for (total, n) in self.classes.iter_mut().zip(&other.classes) {
            *total += n;
        }
        for (total, n) in self.own.iter_mut().zip(&other.own) {
            *total += n;
        }
        self.connect_failures += other.connect_failures;
        self.timeouts += other.timeouts;
        for (total, n) in self.latency.iter_mut().zip(&other.latency) {
            *total += n;
        }
    }
}

impl std::ops::Add<&Summary> for Summary {
    type Output = Summary;

    /// Both summaries' counters and buckets added (the window is the longer of the two).
    fn add(mut self, other: &Summary) -> Summary {
        self += other;
        self
    }
}

impl Summary {
    /// Failed requests: backend 5xx and lb's own 502/503/504.
    pub fn errors(&self) -> u64 {
        self.classes[3] + self.own.iter().sum::<u64>()
    }

    /// `errors / requests`, 0 without requests.
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors() as f64 / self.requests as f64
        }
    }

    /// The latency below which `quantile` (0..=1) of requests fell, as the upper bound of its
    /// bucket (an upper estimate); the last bound for the overflow bucket; None without requests.
    pub fn percentile(&self, quantile: f64) -> Option<Duration> {
        let total: u64 = self.latency.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((quantile.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, count) in self.latency.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let bound = LATENCY_BOUNDS_MS[i.min(LATENCY_BOUNDS_MS.len() - 1)];
                return Some(Duration::from_millis(bound));
            }
        }
        LATENCY_BOUNDS_MS
            .last()
            .map(|&ms| Duration::from_millis(ms))
    }

    /// The median, by [`Summary::percentile`].
    pub fn p50(&self) -> Option<Duration> {
        self.percentile(0.50)
    }

    /// The 95th percentile, by [`Summary::percentile`].
    pub fn p95(&self) -> Option<Duration> {
        self.percentile(0.95)
    }

    /// The 99th percentile, by [`Summary::percentile`].
    pub fn p99(&self) -> Option<Duration> {
        self.percentile(0.99)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn responses_are_counted_by_class_and_lbs_own_apart() {
        let stats = SideStats::new();
        for status in [200, 204, 301, 404, 500, 503] {
            stats.record(10, Outcome::Backend(status), ms(3));
        }
        for status in [502, 503, 504, 504] {
            stats.record(10, Outcome::Lb(status), ms(3));
        }
        stats.record_connect_failure(10);
        stats.record_timeout(10);
        stats.record_timeout(10);
        let sum = stats.summary(10, 60);
        assert_eq!(sum.requests, 10);
        assert_eq!(sum.classes, [2, 1, 1, 2]);
        assert_eq!(sum.own, [1, 1, 2]);
        assert_eq!((sum.connect_failures, sum.timeouts), (1, 2));
        assert_eq!(sum.errors(), 6);
        assert!((sum.error_rate() - 0.6).abs() < 1e-9);
    }

    #[test]
    fn the_window_covers_the_last_seconds_asked_and_old_slots_are_reused() {
        let stats = SideStats::new();
        for second in 0..10 {
            stats.record(second, Outcome::Backend(200), ms(1));
        }
        assert_eq!(stats.summary(9, 5).requests, 5, "seconds 5..=9");
        assert_eq!(stats.summary(9, 60).requests, 10);
        assert_eq!(
            stats.summary(100, 60).requests,
            0,
            "all older than the window"
        );
        // Second 305 reuses second 5's slot: 5's count is gone, not added to.
        stats.record(WINDOW_SECONDS + 5, Outcome::Backend(500), ms(1));
        let sum = stats.summary(WINDOW_SECONDS + 5, WINDOW_SECONDS);
        assert_eq!(
            (sum.requests, sum.errors()),
            (5, 1),
            "seconds 6..=9 and 305"
        );
    }

    #[test]
    fn percentiles_come_from_the_histogram() {
        let stats = SideStats::new();
        assert_eq!(stats.summary(0, 60).p99(), None);
        for i in 0..100u64 {
            // 90 fast, 9 at 200 ms, 1 very slow.
            let latency = match i {
                0..=89 => ms(4),
                90..=98 => ms(180),
                _ => Duration::from_secs(30),
            };
            stats.record(1, Outcome::Backend(200), latency);
        }
        let sum = stats.summary(1, 60);
        assert_eq!(sum.p50(), Some(ms(5)));
        assert_eq!(sum.p95(), Some(ms(200)));
        assert_eq!(sum.p99(), Some(ms(200)));
        assert_eq!(
            sum.percentile(1.0),
            Some(ms(10_000)),
            "the overflow reads as the last bound"
        );
    }

    #[test]
    fn summaries_add_counter_by_counter_and_bucket_by_bucket() {
        let (a, b) = (SideStats::new(), SideStats::new());
        for _ in 0..90 {
            a.record(3, Outcome::Backend(200), ms(4));
        }
        for _ in 0..9 {
            b.record(3, Outcome::Backend(500), ms(180));
        }
        b.record(3, Outcome::Lb(503), Duration::from_secs(30));
        b.record_timeout(3);
        let sum = a.summary(3, 10) + &b.summary(3, 20);
        assert_eq!(sum.seconds, 20);
        assert_eq!(sum.requests, 100);
        assert_eq!(sum.classes, [90, 0, 0, 9]);
        assert_eq!(sum.own, [0, 1, 0]);
        assert_eq!((sum.connect_failures, sum.timeouts), (0, 1));
        assert_eq!(sum.errors(), 10);
        assert_eq!(sum.p50(), Some(ms(5)));
        assert_eq!(
            sum.p95(),
            Some(ms(200)),
            "the buckets add: 90 fast, 10 slow"
        );
        let mut folded = Summary::default();
        folded += &a.summary(3, 10);
        folded += &b.summary(3, 20);
        assert_eq!(folded, sum);
    }

    #[test]
    fn the_process_clock_counts_whole_seconds_from_zero() {
        assert_eq!(Clock::new().second(), 0);
    }
}
