//! balance: owns backend selection — power of two choices over the healthy backends of one side
//! of a pool (all of a pool without a canary; which side a request goes to is `canary::split`'s
//! to say). It reads health and in-flight atomics and never writes them; it does no I/O.
//!
//! P2C (Mitzenmacher, "The Power of Two Choices in Randomized Load Balancing"; as in Finagle
//! and tower's `p2c`): pick two distinct backends at random and take the one with fewer requests
//! in flight. It avoids the herd behaviour of "least loaded" while needing no global state.

use std::sync::Arc;

use crate::canary::Side;
use crate::config::PoolType;
use crate::topology::{Backend, Pool};

/// Picks a backend of `pool`'s `side` for a new request with the pool's balancing rule.
pub fn pick_backend<'a>(
    pool: &'a Pool,
    side: Side,
    rng: &mut fastrand::Rng,
) -> Option<&'a Arc<Backend>> {
    pick_by_pool_type(pool, side, rng, Backend::in_rotation)
}

/// Picks for a retry: another backend of `pool`'s `side` than `failed` when one is in
/// rotation, else `failed` itself if it still is.
pub fn pick_other<'a>(
    pool: &'a Pool,
    side: Side,
    rng: &mut fastrand::Rng,
    failed: &Backend,
) -> Option<&'a Arc<Backend>> {
    pick_by_pool_type(pool, side, rng, |b| {
        b.in_rotation() && !std::ptr::eq(b, failed)
    })
    .or_else(|| pick_backend(pool, side, rng))
}

/// Whether `pool`'s `side` has a backend in rotation.
pub fn side_in_rotation(pool: &Pool, side: Side) -> bool {
    pool.side(side).iter().any(|b| b.in_rotation())
}

/// [`pick_among`] over `side` with the load `pool`'s type compares.
fn pick_by_pool_type<'a>(
    pool: &'a Pool,
    side: Side,
    rng: &mut fastrand::Rng,
    eligible: impl Fn(&Backend) -> bool,
) -> Option<&'a Arc<Backend>> {
    let backends = pool.side(side);
    match pool.pool_type {
        PoolType::P2c => pick_among(backends, rng, |b| b.in_flight() as f64, eligible),
        PoolType::P2cEwma => pick_among(backends, rng, Backend::ewma_load, eligible),
    }
}

/// Picks a backend in rotation (healthy, not drained or disabled), or `None` when there is none.
/// `load` is what is compared: requests in flight for `p2c`, weighted latency for `p2c_ewma`.
///
/// Shaped like tower's `p2c_ready_index`: the cases 0, 1 and n candidates. Candidates are
/// addressed by rank among those in rotation, so no list is allocated per request.
pub fn pick<'a>(
    backends: &'a [Arc<Backend>],
    rng: &mut fastrand::Rng,
    load: impl Fn(&Backend) -> f64,
) -> Option<&'a Arc<Backend>> {
    pick_among(backends, rng, load, Backend::in_rotation)
}

/// [`pick`] over the backends for which `eligible` holds (a retry leaves out the one that just
/// failed).
pub fn pick_among<'a>(
    backends: &'a [Arc<Backend>],
    rng: &mut fastrand::Rng,
    load: impl Fn(&Backend) -> f64,
    eligible: impl Fn(&Backend) -> bool,
) -> Option<&'a Arc<Backend>> {
    let n_ready = backends.iter().filter(|b| eligible(b)).count();
    let nth_ready = |rank| backends.iter().filter(|b| eligible(b)).nth(rank);
    let picked = match n_ready {
        0 => return None,
        1 => nth_ready(0),
        n => {
            let (a_rank, b_rank) = distinct_pair(n, rng);
            match (nth_ready(a_rank), nth_ready(b_rank)) {
                (Some(a), Some(b)) => Some(less_loaded(a, b, &load)),
                _ => None,
            }
        }
    };
    // Health and admin state change under our feet (checkers, reloads): a backend that left
    // rotation between the count and the scan shifts the ranks, and a rank can point past the
    // end. Rather than answer 503 with backends still in rotation, pick again in one pass.
    picked.or_else(|| pick_in_one_pass(backends, rng, &load, &eligible))
}

fn less_loaded<'a>(
    a: &'a Arc<Backend>,
    b: &'a Arc<Backend>,
    load: impl Fn(&Backend) -> f64,
) -> &'a Arc<Backend> {
    let (a_load, b_load) = (load(a), load(b));
    tracing::trace!(a = %a.addr, a_load, b = %b.addr, b_load, "p2c");
    if b_load < a_load {
        b
    } else {
        a
    }
}

/// P2C reading each backend's eligibility once: reservoir sampling of two (Vitter's algorithm R
/// with k = 2) gives a uniformly random pair in a single pass. Slower than picking by rank (a
/// random draw per eligible backend), so it is only the fallback.
fn pick_in_one_pass<'a>(
    backends: &'a [Arc<Backend>],
    rng: &mut fastrand::Rng,
    load: impl Fn(&Backend) -> f64,
    eligible: impl Fn(&Backend) -> bool,
) -> Option<&'a Arc<Backend>> {
    let (mut a, mut b) = (None, None);
    for (seen, backend) in backends.iter().filter(|b| eligible(b)).enumerate() {
        match seen {
            0 => a = Some(backend),
            1 => b = Some(backend),
            _ => match rng.usize(..=seen) {
                0 => a = Some(backend),
                1 => b = Some(backend),
                _ => {}
            },
        }
    }
    match (a, b) {
        // The slots are not symmetric (the first backend starts in `a`); a coin decides which
        // one wins a tie, as the rank draw does in `pick_among`.
        (Some(a), Some(b)) if rng.bool() => Some(less_loaded(a, b, load)),
        (Some(a), Some(b)) => Some(less_loaded(b, a, load)),
        (a, _) => a,
    }
}

/// Two distinct indices in `0..n` (n >= 2), uniformly: draw the second from `n - 1` slots and
/// skip over the first.
pub fn distinct_pair(n: usize, rng: &mut fastrand::Rng) -> (usize, usize) {
    let a = rng.usize(..n);
    let mut b = rng.usize(..n - 1);
    if b >= a {
        b += 1;
    }
    debug_assert_ne!(a, b);
    (a, b)
}

#[cfg(test)]
mod tests;
