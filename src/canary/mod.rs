//! canary: owns a pool's stable/canary comparison in the data plane — the first level of the
//! two-level selection ([`split`]: which side a request goes to), the per-side counters over a
//! sliding window ([`stats`]) and the judgement of the two windows ([`verdict`]). Pure and
//! lock-free; it knows no backend, no topology and no request type: the caller (`proxy`) passes
//! a header's bytes, whether each side has a backend in rotation, and each response's outcome,
//! and picks within the chosen side itself.

pub mod split;
pub mod stats;
pub mod verdict;

/// One side of a pool with a canary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The pool's `backends`.
    Stable,
    /// The pool's `canary.backends`.
    Canary,
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
