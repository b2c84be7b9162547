//! canary::verdict: owns the judgement of a canary against stable from their window
//! summaries — pass, fail with the reasons and their figures, or not enough data. Pure: it reads
//! two [`Summary`]s and [`Thresholds`] and decides; it never records, reads a clock or acts on
//! its answer (the controller does). It never fails a canary for lack of traffic.

use std::time::Duration;

use super::stats::Summary;

/// What a canary must meet; the file's `[pools."P".rollout]` keys.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Requests each side needs in the window before anything is judged.
    pub min_requests: u64,
    /// The canary's error rate must not exceed this share (0..=1).
    pub max_error_rate: f64,
    /// The canary's error rate must not exceed stable's by more than this share (0..=1, so
    /// 0.01 is one percentage point).
    pub max_error_increase: f64,
    /// The canary's p99 must not exceed stable's times this.
    pub max_p99_ratio: f64,
}

/// Why a canary failed, with the figures that made it fail.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reason {
    /// The canary's error rate is above `max_error_rate`.
    ErrorRate {
        /// The canary's errors and requests in the window.
        errors: u64,
        /// The canary's requests in the window.
        requests: u64,
        /// Its error rate.
        rate: f64,
        /// The threshold.
        max: f64,
    },
    /// The canary's error rate is more than `max_error_increase` above stable's.
    ErrorIncrease {
        /// The canary's error rate.
        canary: f64,
        /// Stable's error rate.
        stable: f64,
        /// The threshold on `canary - stable`.
        max: f64,
    },
    /// The canary's p99 is more than `max_p99_ratio` times stable's.
    P99Ratio {
        /// The canary's p99.
        canary: Duration,
        /// Stable's p99.
        stable: Duration,
        /// `canary / stable`.
        ratio: f64,
        /// The threshold.
        max: f64,
    },
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Reason::ErrorRate {
                errors,
                requests,
                rate,
                max,
            } => write!(
                f,
                "canary error rate {:.2}% ({errors} of {requests}) is above the maximum {:.2}%",
                rate * 100.0,
                max * 100.0
            ),
            Reason::ErrorIncrease {
                canary,
                stable,
                max,
            } => write!(
                f,
                "canary error rate {:.2}% is {:.2} points above stable's {:.2}% (maximum {:.2})",
                canary * 100.0,
                (canary - stable) * 100.0,
                stable * 100.0,
                max * 100.0
            ),
            Reason::P99Ratio {
                canary,
                stable,
                ratio,
                max,
            } => write!(
                f,
                "canary p99 {canary:?} is {ratio:.2}x stable's {stable:?} (maximum {max:.2}x)"
            ),
        }
    }
}

/// The judgement of a canary's window.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Every threshold is met.
    Pass,
    /// At least one threshold is missed; every missed one is listed.
    Fail {
        /// The thresholds missed, with figures.
        reasons: Vec<Reason>,
    },
    /// Too few requests to judge; never a failure.
    NotEnoughData {
        /// Requests the canary still needs in the window.
        canary_needs: u64,
        /// Requests stable still needs in the window.
        stable_needs: u64,
    },
}

/// A canary's p99 within this of stable's is never a failure, whatever the ratio: below it the
/// latency buckets are 1, 2 and 5 ms wide, so one bucket's step is a ratio of 2-2.5x, and a
/// loaded machine's scheduling moves a millisecond-scale p99 by that much.
pub const P99_NOISE: Duration = Duration::from_millis(5);

/// Judges `canary` against `stable` (the same window of each side).
pub fn judge(canary: &Summary, stable: &Summary, thresholds: &Thresholds) -> Verdict {
    let canary_needs = thresholds.min_requests.saturating_sub(canary.requests);
    let stable_needs = thresholds.min_requests.saturating_sub(stable.requests);
    if canary_needs > 0 || stable_needs > 0 || canary.requests == 0 || stable.requests == 0 {
        return Verdict::NotEnoughData {
            canary_needs: canary_needs.max(u64::from(canary.requests == 0)),
            stable_needs: stable_needs.max(u64::from(stable.requests == 0)),
        };
    }
    let mut reasons = Vec::new();
    let canary_rate = canary.error_rate();
    let stable_rate = stable.error_rate();
    if canary_rate > thresholds.max_error_rate {
        reasons.push(Reason::ErrorRate {
            errors: canary.errors(),
            requests: canary.requests,
            rate: canary_rate,
            max: thresholds.max_error_rate,
        });
    }
    if canary_rate - stable_rate > thresholds.max_error_increase {
        reasons.push(Reason::ErrorIncrease {
            canary: canary_rate,
            stable: stable_rate,
            max: thresholds.max_error_increase,
        });
    }
    if let (Some(canary_p99), Some(stable_p99)) = (canary.p99(), stable.p99()) {
        let ratio = canary_p99.as_secs_f64() / stable_p99.as_secs_f64();
        if ratio > thresholds.max_p99_ratio && canary_p99 > stable_p99 + P99_NOISE {
            reasons.push(Reason::P99Ratio {
                canary: canary_p99,
                stable: stable_p99,
                ratio,
                max: thresholds.max_p99_ratio,
            });
        }
    }
    if reasons.is_empty() {
        Verdict::Pass
    } else {
        Verdict::Fail { reasons }
    }
}

/// Judges a canary that takes all of its pool's requests (a step of 100%): there is no stable
/// traffic to compare it with, so only its own error rate counts, once it has served
/// `min_requests`.
pub fn judge_alone(canary: &Summary, thresholds: &Thresholds) -> Verdict {
    let canary_needs = thresholds.min_requests.saturating_sub(canary.requests);
    if canary_needs > 0 || canary.requests == 0 {
        return Verdict::NotEnoughData {
            canary_needs: canary_needs.max(1),
            stable_needs: 0,
        };
    }
    let rate = canary.error_rate();
    if rate > thresholds.max_error_rate {
        return Verdict::Fail {
            reasons: vec![Reason::ErrorRate {
                errors: canary.errors(),
                requests: canary.requests,
                rate,
                max: thresholds.max_error_rate,
            }],
        };
    }
    Verdict::Pass
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canary::stats::{Outcome, SideStats};

    const THRESHOLDS: Thresholds = Thresholds {
        min_requests: 100,
        max_error_rate: 0.05,
        max_error_increase: 0.02,
        max_p99_ratio: 1.5,
    };

    /// A side's window: `requests` of which `errors` answered 500, `slow` of them in 200 ms and
    /// the rest in 4 ms.
    fn side(requests: u64, errors: u64, slow: u64) -> Summary {
        let stats = SideStats::new();
        for i in 0..requests {
            let status = if i < errors { 500 } else { 200 };
            let latency = Duration::from_millis(if i >= requests - slow { 200 } else { 4 });
            stats.record(i % 60, Outcome::Backend(status), latency);
        }
        stats.summary(59, 60)
    }

    #[test]
    fn a_canary_like_stable_passes() {
        assert_eq!(
            judge(&side(500, 5, 2), &side(5000, 40, 20), &THRESHOLDS),
            Verdict::Pass
        );
    }

    #[test]
    fn too_many_errors_fails_naming_the_rate() {
        // 4% on stable too: only the absolute maximum is missed.
        let verdict = judge(&side(1000, 60, 0), &side(1000, 45, 0), &THRESHOLDS);
        let Verdict::Fail { reasons } = verdict else {
            panic!("{verdict:?}");
        };
        assert_eq!(
            reasons,
            vec![Reason::ErrorRate {
                errors: 60,
                requests: 1000,
                rate: 0.06,
                max: 0.05
            }]
        );
        assert!(
            reasons[0].to_string().contains("6.00% (60 of 1000)"),
            "{}",
            reasons[0]
        );
    }

    #[test]
    fn an_error_increase_over_stable_fails_though_under_the_maximum() {
        let verdict = judge(&side(1000, 40, 0), &side(1000, 10, 0), &THRESHOLDS);
        let Verdict::Fail { reasons } = verdict else {
            panic!("{verdict:?}");
        };
        assert_eq!(reasons.len(), 1, "{reasons:?}");
        let Reason::ErrorIncrease { canary, stable, .. } = reasons[0] else {
            panic!("{reasons:?}");
        };
        assert!((canary - 0.04).abs() < 1e-9 && (stable - 0.01).abs() < 1e-9);
        assert!(
            reasons[0].to_string().contains("3.00 points above"),
            "{}",
            reasons[0]
        );
    }

    #[test]
    fn a_slow_tail_fails_by_the_p99_ratio() {
        // 5% of the canary's requests take 200 ms; stable's p99 is 5 ms.
        let verdict = judge(&side(1000, 0, 50), &side(1000, 0, 0), &THRESHOLDS);
        let Verdict::Fail { reasons } = verdict else {
            panic!("{verdict:?}");
        };
        assert_eq!(
            reasons,
            vec![Reason::P99Ratio {
                canary: Duration::from_millis(200),
                stable: Duration::from_millis(5),
                ratio: 40.0,
                max: 1.5
            }]
        );
    }

    #[test]
    fn a_millisecond_scale_p99_is_judged_only_past_the_noise_floor() {
        let fast = |p99_ms: u64| {
            let stats = SideStats::new();
            for i in 0..1000u64 {
                let ms = if i < 980 { 1 } else { p99_ms };
                stats.record(i % 60, Outcome::Backend(200), Duration::from_millis(ms));
            }
            stats.summary(59, 60)
        };
        // 5 ms against 2 ms is 2.5x, one bucket's step: not a failure.
        assert_eq!(judge(&fast(5), &fast(2), &THRESHOLDS), Verdict::Pass);
        // 20 ms against 2 ms is past the floor as well as the ratio.
        assert!(matches!(
            judge(&fast(20), &fast(2), &THRESHOLDS),
            Verdict::Fail { .. }
        ));
    }

    #[test]
    fn every_missed_threshold_is_listed() {
        let verdict = judge(&side(1000, 300, 50), &side(1000, 0, 0), &THRESHOLDS);
        let Verdict::Fail { reasons } = verdict else {
            panic!("{verdict:?}");
        };
        assert_eq!(reasons.len(), 3, "{reasons:?}");
    }

    #[test]
    fn too_little_traffic_is_not_enough_data_never_a_failure() {
        // All of the canary's few requests failed: still no verdict.
        assert_eq!(
            judge(&side(30, 30, 30), &side(5000, 0, 0), &THRESHOLDS),
            Verdict::NotEnoughData {
                canary_needs: 70,
                stable_needs: 0
            }
        );
        assert_eq!(
            judge(&side(0, 0, 0), &side(0, 0, 0), &THRESHOLDS),
            Verdict::NotEnoughData {
                canary_needs: 100,
                stable_needs: 100
            }
        );
        // Even with no minimum, a side without requests cannot be compared.
        let any = Thresholds {
            min_requests: 0,
            ..THRESHOLDS
        };
        assert_eq!(
            judge(&side(0, 0, 0), &side(10, 0, 0), &any),
            Verdict::NotEnoughData {
                canary_needs: 1,
                stable_needs: 0
            }
        );
    }

    #[test]
    fn sparse_errors_on_a_quiet_stable_side_do_not_fail_the_canary() {
        // One error in the canary's minimum sample, none on stable: 1% — under both the maximum
        // and the allowed increase, so a lone error is not taken for a regression.
        assert_eq!(
            judge(&side(100, 1, 0), &side(100, 0, 0), &THRESHOLDS),
            Verdict::Pass
        );
        // Errors on stable alone never fail the canary.
        assert_eq!(
            judge(&side(200, 0, 0), &side(200, 40, 0), &THRESHOLDS),
            Verdict::Pass
        );
    }

    #[test]
    fn a_canary_alone_is_judged_on_its_own_error_rate() {
        let empty = Summary::default();
        assert!(matches!(
            judge_alone(&side(99, 0, 0), &THRESHOLDS),
            Verdict::NotEnoughData {
                canary_needs: 1,
                ..
            }
        ));
        assert!(matches!(
            judge_alone(&empty, &THRESHOLDS),
            Verdict::NotEnoughData { .. }
        ));
        assert_eq!(judge_alone(&side(200, 10, 200), &THRESHOLDS), Verdict::Pass);
        let Verdict::Fail { reasons } = judge_alone(&side(200, 11, 0), &THRESHOLDS) else {
            panic!("11 errors in 200 is above 5%");
        };
        assert!(matches!(
            reasons[..],
            [Reason::ErrorRate {
                errors: 11,
                requests: 200,
                ..
            }]
        ));
    }
}
