//! rate_limit: owns a pool's per-client request limit — a token bucket per key in a bounded,
//! lock-free table. Pure: it is told a key and the time, and answers whether the request may go
//! and, if not, when the key may try again. It knows no request, header or config: `proxy`
//! derives the key from a request, `topology` keeps a [`Limiter`] beside its pool.
//!
//! Each bucket is one number, its *theoretical arrival time* (GCRA, the generic cell rate
//! algorithm, which is a token bucket written as a time): a request at `now` is allowed when
//! `max(tat, now) - now <= burst × interval`, and then moves `tat` on by one `interval`. A key
//! whose `tat` has passed holds a full bucket, exactly as a key never seen; so a table entry is
//! worth keeping only while its `tat` is ahead of the clock, and evicting one whose `tat` has
//! passed changes no answer. This allows `burst + 1` requests at once and then one per
//! interval, as nginx's `limit_req ... burst=B nodelay` does.
//!
//! The table is set-associative: [`SETS`] sets of [`WAYS`] entries, each a pair of atomics
//! (the key's 64-bit keyed hash, its `tat`), a set filling one cache line. A key lives in the
//! set its hash picks; a key new to a full set takes the place of the entry with the smallest
//! `tat`: the bucket nearest to full, whose loss lets the fewest requests through — none when
//! it has refilled, as the entry of a key gone quiet has; among keys that came alike, the least
//! recently used. A key that spent its burst holds an entry furthest ahead, so a stream of
//! new keys replaces it last. Its memory is fixed when the pool is applied ([`Limiter::MEMORY`]), whatever the
//! traffic. No lock: a check is a hash, one cache line read and one compare-and-swap. Two
//! requests racing for one entry may lose a step of one bucket (a request more let through),
//! never an answer or a panic.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Entries per set: a set's keys and `tat`s fill one 64-byte cache line.
pub const WAYS: usize = 4;
/// Sets per table (a power of two).
pub const SETS: usize = 16_384;

/// One set: the hashes (0: empty) and their buckets' theoretical arrival times, in
/// nanoseconds since the limiter's epoch.
#[repr(align(64))]
#[derive(Default)]
struct Set {
    keys: [AtomicU64; WAYS],
    tats: [AtomicU64; WAYS],
}

/// Why a request may not go: the key's bucket is empty for this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// Until the bucket holds a request again.
    pub wait: Duration,
}

impl Limited {
    /// `Retry-After` in whole seconds: the wait rounded up, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        let secs = self.wait.as_secs() + u64::from(self.wait.subsec_nanos() > 0);
        secs.max(1)
    }
}

/// A token bucket per key, for one pool's `rate_limit`.
pub struct Limiter {
    /// Nanoseconds between two requests at the rate (at least 1).
    interval: u64,
    /// How far ahead of the clock a bucket's `tat` may be for a request to go: `burst`
    /// intervals.
    tolerance: u64,
    /// `now` is counted from here, so a `tat` of 0 is free to mean "empty".
    epoch: Instant,
    /// The hash's random keys, per table: a client cannot pick values that collide.
    seeds: [u64; 3],
    sets: Box<[Set]>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("interval", &self.interval)
            .field("tolerance", &self.tolerance)
            .finish_non_exhaustive()
    }
}

impl Limiter {
    /// How many keys a table holds at most.
    pub const CAPACITY: usize = SETS * WAYS;
    /// The bytes a table takes, whatever the traffic.
    pub const MEMORY: usize = SETS * std::mem::size_of::<Set>();

    /// A table allowing `requests_per_second` (above zero) per key, `burst` more at once. The
    /// interval is rounded to the nanosecond, at least 1.
    pub fn new(requests_per_second: f64, burst: u32) -> Limiter {
        let interval = (1e9 / requests_per_second).round();
        // A NaN or a rate below 1/u64::MAX ns saturates; config refuses both anyway.
        let interval = if interval.is_finite() && interval >= 1.0 {
            interval as u64
        } else if interval.is_finite() {
            1
        } else {
            u64::MAX / 4
        };
        Limiter {
            interval,
            tolerance: interval.saturating_mul(u64::from(burst)),
            epoch: Instant::now(),
            seeds: std::array::from_fn(|i| {
                let mut hasher = std::hash::RandomState::new().build_hasher();
                hasher.write_usize(i);
                hasher.finish()
            }),
            sets: (0..SETS).map(|_| Set::default()).collect(),
        }
    }

    /// The key of a request identified by `bytes` of kind `kind` (a tag keeping an address
    /// and a header value that happen to share bytes apart): a keyed multiply-fold hash, 8
    /// bytes a step, as foldhash and wyhash mix: a short key costs a few multiplies where
    /// SipHash's rounds cost more than the rest of the check. Its keys are random per table, so
    /// where a value lands cannot be known from outside.
    pub fn key(&self, kind: u8, bytes: &[u8]) -> u64 {
        let [start, step, last] = self.seeds;
        let mut hash = start ^ u64::from(kind) ^ ((bytes.len() as u64) << 8);
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            hash = folded_multiply(hash ^ u64::from_le_bytes(word), step);
        }
        folded_multiply(hash, last)
    }

    /// Takes one request from `key`'s bucket at `now` (a request's start), or says how long
    /// until it holds one. A limited request takes nothing.
    pub fn check(&self, key: u64, now: Instant) -> Result<(), Limited> {
        let now = u64::try_from(now.saturating_duration_since(self.epoch).as_nanos())
            .unwrap_or(u64::MAX / 2);
        self.check_at(key, now)
    }

    /// [`Limiter::check`] at `now` nanoseconds since the epoch.
    fn check_at(&self, key: u64, now: u64) -> Result<(), Limited> {
        // The set from the high bits, the tag from all of them (never 0, the empty mark).
        let set = &self.sets[(key >> 32) as usize & (SETS - 1)];
        let tag = key | 1;
        // A few rounds at most: each is lost only to another request's move on this set.
        for _ in 0..4 {
            if let Some(way) = (0..WAYS).find(|&w| set.keys[w].load(Ordering::Relaxed) == tag) {
                match self.take(set, way, tag, now) {
                    Some(answer) => return answer,
                    None => continue,
                }
            }
            // New to the table (or evicted): it takes the entry whose bucket refilled first.
            let way = (0..WAYS)
                .min_by_key(|&w| set.tats[w].load(Ordering::Relaxed))
                .unwrap_or(0);
            let old = set.keys[way].load(Ordering::Relaxed);
            if set.keys[way]
                .compare_exchange(old, tag, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            // A full bucket: this first request goes.
            set.tats[way].store(now.saturating_add(self.interval), Ordering::Release);
            return Ok(());
        }
        // Lost every round to other keys' moves: let it go rather than spin.
        Ok(())
    }

    /// One request from the bucket at `set.keys[way]` (which held `tag`); `None` when the entry
    /// went to another key meanwhile.
    fn take(&self, set: &Set, way: usize, tag: u64, now: u64) -> Option<Result<(), Limited>> {
        let mut tat = set.tats[way].load(Ordering::Acquire);
        loop {
            if set.keys[way].load(Ordering::Relaxed) != tag {
                return None;
            }
            let from = tat.max(now);
            let ahead = from - now;
            if ahead > self.tolerance {
                return Some(Err(Limited {
                    wait: Duration::from_nanos(ahead - self.tolerance),
                }));
            }
            match set.tats[way].compare_exchange_weak(
                tat,
                from.saturating_add(self.interval),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(Ok(())),
                Err(now_there) => tat = now_there,
            }
        }
    }
}

/// The 128-bit product of `x` and `y`, its halves folded into one: every input bit moves
/// every output bit.
fn folded_multiply(x: u64, y: u64) -> u64 {
    let product = u128::from(x) * u128::from(y);
    (product as u64) ^ ((product >> 64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const SEC: u64 = 1_000_000_000;

    fn allowed(limiter: &Limiter, key: u64, now: u64, n: usize) -> usize {
        (0..n)
            .filter(|_| limiter.check_at(key, now).is_ok())
            .count()
    }

    #[test]
    fn a_full_bucket_lets_burst_plus_one_go_then_one_per_interval() {
        let limiter = Limiter::new(10.0, 5);
        let key = limiter.key(0, b"10.0.0.1");
        let start = SEC;
        assert_eq!(allowed(&limiter, key, start, 20), 6);
        let refused = limiter.check_at(key, start).expect_err("bucket empty");
        assert_eq!(refused.wait, Duration::from_millis(100));
        assert_eq!(refused.retry_after_secs(), 1);
        // 99 ms on: still nothing; 100 ms on: exactly one more.
        assert_eq!(allowed(&limiter, key, start + 99 * MS, 5), 0);
        assert_eq!(allowed(&limiter, key, start + 100 * MS, 5), 1);
        // A second later the bucket is full again (10 intervals refill 5 + 1 and more).
        assert_eq!(allowed(&limiter, key, start + 2 * SEC, 20), 6);
    }

    #[test]
    fn a_steady_client_at_the_rate_is_never_limited() {
        let limiter = Limiter::new(100.0, 0);
        let key = limiter.key(0, b"client");
        for i in 0..1_000 {
            assert!(
                limiter.check_at(key, SEC + i * 10 * MS).is_ok(),
                "request {i}"
            );
        }
        assert!(limiter.check_at(key, SEC + 9_990 * MS + MS).is_err());
    }

    #[test]
    fn keys_have_buckets_of_their_own() {
        let limiter = Limiter::new(1.0, 2);
        let (a, b) = (limiter.key(0, b"a"), limiter.key(0, b"b"));
        assert_eq!(allowed(&limiter, a, SEC, 10), 3);
        assert_eq!(allowed(&limiter, b, SEC, 10), 3);
        assert!(limiter.check_at(a, SEC).is_err());
        // The same bytes of another kind, or another length, are another key.
        assert_ne!(limiter.key(0, b"a"), limiter.key(1, b"a"));
        assert_ne!(limiter.key(0, b"a"), limiter.key(0, b"a\0"));
        assert_eq!(limiter.key(0, b"a"), limiter.key(0, b"a"));
        // Another table, other seeds.
        assert_ne!(limiter.key(0, b"a"), Limiter::new(1.0, 2).key(0, b"a"));
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds_and_is_at_least_one() {
        let limiter = Limiter::new(0.4, 0);
        let key = limiter.key(0, b"slow");
        assert!(limiter.check_at(key, SEC).is_ok());
        let refused = limiter.check_at(key, SEC + 500 * MS).expect_err("limited");
        assert_eq!(refused.wait, Duration::from_millis(2_000));
        assert_eq!(refused.retry_after_secs(), 2);
        let refused = limiter.check_at(key, SEC + 501 * MS).expect_err("limited");
        assert_eq!(refused.retry_after_secs(), 2);
        let short = Limited {
            wait: Duration::from_nanos(1),
        };
        assert_eq!(short.retry_after_secs(), 1);
        let exact = Limited {
            wait: Duration::from_secs(3),
        };
        assert_eq!(exact.retry_after_secs(), 3);
    }

    /// Keys sharing one set: the table is bounded, entries that refilled go first, and a key
    /// that spent its burst outlasts keys that came once.
    #[test]
    fn a_full_set_evicts_the_bucket_nearest_to_full() {
        let limiter = Limiter::new(1.0, 10);
        // Keys that all land in set 7.
        let in_set = |i: u64| (7u64 << 32) | (i << 1);
        let limited = in_set(1);
        assert_eq!(allowed(&limiter, limited, SEC, 20), 11);
        // Far more one-off keys than the set holds, each a little later.
        for i in 0..100 {
            assert!(limiter.check_at(in_set(100 + i), SEC + i * MS).is_ok());
        }
        assert!(
            limiter.check_at(limited, SEC + 200 * MS).is_err(),
            "the limited key kept its entry"
        );
        let set = &limiter.sets[7];
        let present = |key: u64| (0..WAYS).any(|w| set.keys[w].load(Ordering::Relaxed) == key | 1);
        assert!(present(in_set(199)) && !present(in_set(100)));
        // A replaced one-off key comes back with a full bucket, as a new key does.
        assert_eq!(allowed(&limiter, in_set(100), SEC + 300 * MS, 20), 11);
        // Once every bucket has refilled, any entry may go without changing an answer.
        let later = 30 * SEC;
        for i in 0..8 {
            assert_eq!(allowed(&limiter, in_set(1_000 + i), later, 20), 11);
        }
        assert!(!present(limited));
        assert_eq!(allowed(&limiter, limited, later, 20), 11);
    }

    /// Addresses in one /24 (what one attacker holds) spread over the sets as a uniform hash
    /// would: no set gets far more than its share.
    #[test]
    fn neighbouring_addresses_spread_over_the_sets() {
        let limiter = Limiter::new(1.0, 0);
        let mut per_set = vec![0u32; SETS];
        for i in 0..(SETS as u32 * 4) {
            let key = limiter.key(0, &(0x0a00_0000u32 + i).to_be_bytes());
            per_set[(key >> 32) as usize & (SETS - 1)] += 1;
        }
        let fullest = per_set.iter().max().copied().unwrap_or(0);
        let empty = per_set.iter().filter(|&&n| n == 0).count();
        // Poisson with mean 4: a set above 20 or more than 4% of sets empty would be a bias.
        assert!(fullest <= 20, "{fullest}");
        assert!(empty < SETS / 25, "{empty}");
    }

    #[test]
    fn the_table_s_memory_is_fixed() {
        assert_eq!(std::mem::size_of::<Set>(), 64);
        assert_eq!(Limiter::MEMORY, 1024 * 1024);
        assert_eq!(Limiter::CAPACITY, 65_536);
        let limiter = Limiter::new(1e9, 0);
        assert_eq!(limiter.interval, 1);
        let limiter = Limiter::new(3.0, 1);
        assert_eq!(limiter.interval, 333_333_333);
    }

    #[test]
    fn racing_threads_let_through_at_most_a_few_more_than_the_bucket_holds() {
        let limiter = Limiter::new(1.0, 99);
        let key = limiter.key(0, b"shared");
        let now = SEC;
        let total: usize = std::thread::scope(|s| {
            let threads: Vec<_> = (0..4)
                .map(|_| s.spawn(|| allowed(&limiter, key, now, 1_000)))
                .collect();
            threads.into_iter().map(|t| t.join().unwrap_or(0)).sum()
        });
        // One key's first requests may race for its entry (each taking a full bucket's first
        // request); after that every step is a compare-and-swap.
        assert!((100..=104).contains(&total), "{total}");
    }
}
