//! canary::split: the first level of the two-level selection — which side of a pool a request
//! goes to. Owns the weighted counter and the sticky-key hash; it never looks at backends beyond
//! the two "has a backend in rotation" flags the caller passes, and never picks a backend.
//!
//! Without a sticky key, the n-th request goes to the canary when `floor(n * w)` steps up
//! (`w` the weight as a share), so every run of requests is within one request of the weight:
//! exact in the long run, with no per-request coin. With a sticky key, the key's stable hash
//! (FNV-1a 64, fixed offset basis: the same on every instance and every run) picks one of
//! [`BUCKETS`] buckets and the canary takes the lowest `w * BUCKETS` of them, so a key on the
//! canary at one weight is still on it at any higher weight.

use std::sync::atomic::{AtomicU64, Ordering};

use super::Side;

/// How many buckets sticky keys are hashed into; a weight's resolution is one bucket.
pub const BUCKETS: u32 = 10_000;

/// The canary's share of a pool's requests, in hundredths of a percent (0..=[`BUCKETS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Weight(u32);

impl Weight {
    /// From a percentage as the file writes it (`weight = 5`); above 100 is taken as 100.
    pub fn from_percent(percent: u8) -> Weight {
        Weight(u32::from(percent.min(100)) * (BUCKETS / 100))
    }

    /// From buckets (hundredths of a percent); above [`BUCKETS`] is taken as all of them.
    pub fn from_buckets(buckets: u32) -> Weight {
        Weight(buckets.min(BUCKETS))
    }

    /// In buckets (hundredths of a percent).
    pub fn buckets(self) -> u32 {
        self.0
    }
}

/// What a request's `force_header` says, read by [`force_from_header`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Force {
    /// `always`: to the canary.
    Always,
    /// `never`: to stable.
    Never,
}

/// `always` / `never` (ASCII case-insensitive, surrounding spaces ignored); any other value
/// forces nothing.
pub fn force_from_header(value: &[u8]) -> Option<Force> {
    let value = value.trim_ascii();
    if value.eq_ignore_ascii_case(b"always") {
        Some(Force::Always)
    } else if value.eq_ignore_ascii_case(b"never") {
        Some(Force::Never)
    } else {
        None
    }
}

/// The bucket (0..[`BUCKETS`]) of a sticky key: FNV-1a 64 with its standard offset basis, so
/// every instance and every run agrees.
pub fn bucket_of(key: &[u8]) -> u32 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET_BASIS;
    for &byte in key {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(PRIME);
    }
    // The high bits mix best in FNV; fold them in before the modulo.
    ((hash ^ (hash >> 32)) % u64::from(BUCKETS)) as u32
}

/// Which side a request goes to and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    /// The side to pick a backend from.
    pub side: Side,
    /// True when the split chose the other side, which had no backend in rotation.
    pub fell_back: bool,
}

/// What the caller knows of one request, for [`Split::choose`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Request<'a> {
    /// The sticky key's bytes (the cookie's or header's value), when the pool is sticky and the
    /// request carries one; a request without one is split by the counter.
    pub sticky_key: Option<&'a [u8]>,
    /// What the `force_header` says, when the pool has one and the request carries it.
    pub force: Option<Force>,
}

/// Which sides have a backend in rotation right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Available {
    /// Stable has at least one backend in rotation.
    pub stable: bool,
    /// The canary has at least one backend in rotation.
    pub canary: bool,
}

/// A pool's split counter: one atomic, shared by every request of the pool. Keep it across
/// reloads that only change the weight, so the long-run share stays exact.
#[derive(Debug, Default)]
pub struct Split {
    unsticky: AtomicU64,
}

impl Split {
    /// A counter at zero.
    pub fn new() -> Split {
        Split::default()
    }

    /// The side for one request at `weight`: the force header first, then the sticky key's
    /// bucket, then the counter; a side with no backend in rotation hands the request to the
    /// other side when that one has any (`fell_back`). No allocation, no lock: one relaxed
    /// `fetch_add`, only for requests without a sticky key or a force.
    pub fn choose(&self, weight: Weight, request: Request<'_>, available: Available) -> Choice {
        let wanted = match (request.force, request.sticky_key) {
            (Some(Force::Always), _) => Side::Canary,
            (Some(Force::Never), _) => Side::Stable,
            (None, Some(key)) => side_of_bucket(bucket_of(key), weight),
            (None, None) => self.next_unsticky(weight),
        };
        let has = |side| match side {
            Side::Stable => available.stable,
            Side::Canary => available.canary,
        };
        if !has(wanted) && has(wanted.other()) {
            Choice {
                side: wanted.other(),
                fell_back: true,
            }
        } else {
            Choice {
                side: wanted,
                fell_back: false,
            }
        }
    }

    fn next_unsticky(&self, weight: Weight) -> Side {
        let total = u64::from(BUCKETS);
        let w = u64::from(weight.buckets());
        // The position within a cycle of BUCKETS requests; the wrap of the u64 after 2^64
        // requests shifts the cycle once, which no share can notice.
        let k = self.unsticky.fetch_add(1, Ordering::Relaxed) % total;
        if (k + 1) * w / total > k * w / total {
            Side::Canary
        } else {
            Side::Stable
        }
    }
}

fn side_of_bucket(bucket: u32, weight: Weight) -> Side {
    if bucket < weight.buckets() {
        Side::Canary
    } else {
        Side::Stable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOTH: Available = Available {
        stable: true,
        canary: true,
    };

    fn canary_share(split: &Split, weight: Weight, draws: u32) -> f64 {
        let canary = (0..draws)
            .filter(|_| split.choose(weight, Request::default(), BOTH).side == Side::Canary)
            .count();
        canary as f64 / f64::from(draws)
    }

    #[test]
    fn the_counter_is_within_one_point_of_the_weight_over_20000_draws() {
        for percent in [0, 5, 25, 50, 100] {
            let share = canary_share(&Split::new(), Weight::from_percent(percent), 20_000);
            let wanted = f64::from(percent) / 100.0;
            assert!((share - wanted).abs() <= 0.01, "{percent}%: {share}");
        }
        // Exact, not merely close, over whole cycles; and still close after a weight change.
        let split = Split::new();
        assert_eq!(canary_share(&split, Weight::from_percent(5), 20_000), 0.05);
        assert!((canary_share(&split, Weight::from_percent(25), 20_000) - 0.25).abs() <= 0.01);
    }

    #[test]
    fn sticky_keys_split_near_the_weight_and_stay_on_the_canary_as_it_grows() {
        let keys: Vec<String> = (0..20_000).map(|i| format!("user-{i}")).collect();
        let split = Split::new();
        let side = |key: &String, percent| {
            let request = Request {
                sticky_key: Some(key.as_bytes()),
                force: None,
            };
            split
                .choose(Weight::from_percent(percent), request, BOTH)
                .side
        };
        for percent in [5, 25, 50] {
            let on_canary = keys
                .iter()
                .filter(|k| side(k, percent) == Side::Canary)
                .count();
            let share = on_canary as f64 / keys.len() as f64;
            assert!(
                (share - f64::from(percent) / 100.0).abs() <= 0.01,
                "{percent}%: {share}"
            );
        }
        for key in &keys {
            let first = side(key, 5);
            assert_eq!(first, side(key, 5), "{key} moved at the same weight");
            if first == Side::Canary {
                assert_eq!(side(key, 25), Side::Canary, "{key} left the canary at 25%");
            }
        }
    }

    #[test]
    fn the_bucket_hash_is_fixed_not_seeded() {
        // FNV-1a 64 of "" is the offset basis itself; of "a" a published test vector.
        assert_eq!(
            bucket_of(b""),
            ((0xcbf2_9ce4_8422_2325u64 ^ 0xcbf2_9ce4) % 10_000) as u32
        );
        let a: u64 = 0xaf63_dc4c_8601_ec8c;
        assert_eq!(bucket_of(b"a"), ((a ^ (a >> 32)) % 10_000) as u32);
    }

    #[test]
    fn the_force_header_overrides_weight_and_stickiness() {
        let split = Split::new();
        let key = Some(&b"user-1"[..]);
        for (value, side) in [
            (&b"always"[..], Side::Canary),
            (b" Never ", Side::Stable),
            (b"ALWAYS", Side::Canary),
        ] {
            let force = force_from_header(value);
            assert!(force.is_some(), "{value:?}");
            for percent in [0, 100] {
                let request = Request {
                    sticky_key: key,
                    force,
                };
                let choice = split.choose(Weight::from_percent(percent), request, BOTH);
                assert_eq!(choice.side, side, "{value:?} at {percent}%");
            }
        }
        assert_eq!(force_from_header(b"sometimes"), None);
        assert_eq!(force_from_header(b""), None);
    }

    #[test]
    fn a_side_without_backends_hands_its_share_to_the_other_and_says_so() {
        let split = Split::new();
        let no_canary = Available {
            stable: true,
            canary: false,
        };
        let forced = Request {
            sticky_key: None,
            force: Some(Force::Always),
        };
        assert_eq!(
            split.choose(Weight::from_percent(50), forced, no_canary),
            Choice {
                side: Side::Stable,
                fell_back: true
            }
        );
        let no_stable = Available {
            stable: false,
            canary: true,
        };
        let choices: Vec<Choice> = (0..100)
            .map(|_| split.choose(Weight::from_percent(10), Request::default(), no_stable))
            .collect();
        assert!(choices.iter().all(|c| c.side == Side::Canary));
        assert_eq!(choices.iter().filter(|c| c.fell_back).count(), 90);
        // Neither side: the split's own choice stands, not a fallback; the caller answers 503.
        let neither = Available {
            stable: false,
            canary: false,
        };
        let choice = split.choose(Weight::from_percent(100), Request::default(), neither);
        assert_eq!(
            choice,
            Choice {
                side: Side::Canary,
                fell_back: false
            }
        );
    }
}
