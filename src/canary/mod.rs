//! canary: owns a pool's stable/canary comparison in the data plane — the first level of the
//! two-level selection ([`split`]: which side a request goes to), the per-side counters over a
//! sliding window ([`stats`]) and the judgement of the two windows ([`verdict`]). Pure and
//! lock-free; it knows no backend, no topology and no request type: the caller (`proxy`) passes
//! a header's bytes, whether each side has a backend in rotation, and each response's outcome,
//! and picks within the chosen side itself.

pub mod split;
pub mod stats;
pub mod verdict;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The window operators' views compare over unless asked for another: long enough to hold a
/// p99 at a modest rate, short enough to show a change within a minute.
pub const COMPARISON_SECONDS: u64 = 60;

/// A pool's live comparison: its split counter, each side's window and how many requests each
/// side handed to the other for want of a backend. Shared by every snapshot of the pool while
/// it has a canary, so a weight change keeps the counter's exactness and the figures.
#[derive(Debug, Default)]
pub struct Comparison {
    /// The seconds the windows are counted in.
    pub clock: stats::Clock,
    /// The first level of the selection.
    pub split: split::Split,
    stable: stats::SideStats,
    canary: stats::SideStats,
    /// Requests the split meant for `[stable, canary]` that went to the other side.
    fell_back: [AtomicU64; 2],
}

impl Comparison {
    /// An empty comparison, its clock at zero.
    pub fn new() -> Comparison {
        Comparison::default()
    }

    /// One side's window.
    pub fn side(&self, side: Side) -> &stats::SideStats {
        match side {
            Side::Stable => &self.stable,
            Side::Canary => &self.canary,
        }
    }

    /// Counts one finished request of `side`.
    pub fn record(&self, side: Side, outcome: stats::Outcome, latency: Duration) {
        self.side(side)
            .record(self.clock.second(), outcome, latency);
    }

    /// Counts a failed connect to a backend of `side`.
    pub fn record_connect_failure(&self, side: Side) {
        self.side(side).record_connect_failure(self.clock.second());
    }

    /// Counts a backend of `side` that sent no head within the request timeout.
    pub fn record_timeout(&self, side: Side) {
        self.side(side).record_timeout(self.clock.second());
    }

    /// Counts a request the split meant for `wanted` that went to the other side.
    pub fn record_fallback(&self, wanted: Side) {
        self.fell_back[wanted as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Requests meant for `wanted` that went to the other side, since the comparison began.
    pub fn fallbacks(&self, wanted: Side) -> u64 {
        self.fell_back[wanted as usize].load(Ordering::Relaxed)
    }

    /// Both sides' summaries over the last `seconds` (at most [`stats::WINDOW_SECONDS`]).
    pub fn summaries(&self, seconds: u64) -> (stats::Summary, stats::Summary) {
        let now = self.clock.second();
        (
            self.stable.summary(now, seconds),
            self.canary.summary(now, seconds),
        )
    }
}

/// One side of a pool with a canary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The pool's `backends`.
    Stable = 0,
    /// The pool's `canary.backends`.
    Canary = 1,
}

impl Side {
    /// The label value metrics and tables use: `stable` | `canary`.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Stable => "stable",
            Side::Canary => "canary",
        }
    }

    /// The other side.
    pub fn other(self) -> Side {
        match self {
            Side::Stable => Side::Canary,
            Side::Canary => Side::Stable,
        }
    }
}
