//! control::canary: the CanaryStatus RPC's answer — a pool's canary settings, each side's
//! window summary and the verdict on them, read from the running topology. It reads and judges;
//! it never changes a weight (that is an edit of lb.toml, through `apply`).

use tonic::Status;

use super::proto;
use crate::canary::stats::{Summary, WINDOW_SECONDS};
use crate::canary::verdict::{self, Thresholds, Verdict};
use crate::canary::{Side, COMPARISON_SECONDS};
use crate::topology::{Pool, Topology};

/// What a canary must meet when the caller names no thresholds: enough requests for a p99 to
/// mean something, and the error and latency margins a first canary is usually held to.
pub const DEFAULT_THRESHOLDS: Thresholds = Thresholds {
    min_requests: 100,
    max_error_rate: 0.05,
    max_error_increase: 0.01,
    max_p99_ratio: 1.5,
};

/// The comparison of pool `request.pattern`'s two sides. NOT_FOUND for an unknown pool,
/// FAILED_PRECONDITION for one without a canary, INVALID_ARGUMENT for thresholds out of range.
pub fn status(
    topology: &Topology,
    request: &proto::CanaryStatusReq,
) -> Result<proto::CanaryStatusResp, Status> {
    let pool = topology
        .pool(&request.pattern)
        .ok_or_else(|| Status::not_found(format!("no pool {:?}", request.pattern)))?;
    let canary = pool.canary.as_ref().ok_or_else(|| {
        Status::failed_precondition(format!(
            "pool {:?} has no canary: declare [pools.{:?}.canary] in lb.toml",
            request.pattern, request.pattern
        ))
    })?;
    let thresholds = request
        .thresholds
        .as_ref()
        .map_or(Ok(DEFAULT_THRESHOLDS), thresholds_from)?;
    let window = match u64::from(request.window_seconds) {
        0 => COMPARISON_SECONDS,
        n => n.min(WINDOW_SECONDS),
    };
    let (stable, canary_summary) = canary.comparison.summaries(window);
    let judged = verdict::judge(&canary_summary, &stable, &thresholds);
    let side = |side, summary: &Summary| proto_side(pool, side, summary, canary);
    let mut response = proto::CanaryStatusResp {
        pattern: request.pattern.clone(),
        weight_percent: f64::from(canary.weight.buckets()) / 100.0,
        sticky: canary
            .sticky
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        force_header: canary
            .force_header
            .as_deref()
            .unwrap_or_default()
            .to_owned(),
        window_seconds: u32::try_from(window).unwrap_or(u32::MAX),
        stable: Some(side(Side::Stable, &stable)),
        canary: Some(side(Side::Canary, &canary_summary)),
        thresholds: Some(proto_thresholds(&thresholds)),
        ..Default::default()
    };
    let wire = wire_verdict(&judged);
    response.verdict = wire.verdict;
    response.reasons = wire.reasons;
    response.canary_needs = wire.canary_needs;
    response.stable_needs = wire.stable_needs;
    Ok(response)
}

/// A verdict as the wire carries it, in CanaryStatus and RolloutStatus alike.
pub(super) struct WireVerdict {
    pub verdict: i32,
    pub reasons: Vec<String>,
    pub canary_needs: u64,
    pub stable_needs: u64,
}

pub(super) fn wire_verdict(verdict: &Verdict) -> WireVerdict {
    let mut wire = WireVerdict {
        verdict: proto::CanaryVerdict::CvPass as i32,
        reasons: Vec::new(),
        canary_needs: 0,
        stable_needs: 0,
    };
    match verdict {
        Verdict::Pass => {}
        Verdict::Fail { reasons } => {
            wire.verdict = proto::CanaryVerdict::CvFail as i32;
            wire.reasons = reasons.iter().map(ToString::to_string).collect();
        }
        Verdict::NotEnoughData {
            canary_needs,
            stable_needs,
        } => {
            wire.verdict = proto::CanaryVerdict::CvNotEnoughData as i32;
            wire.canary_needs = *canary_needs;
            wire.stable_needs = *stable_needs;
        }
    }
    wire
}

pub(super) fn thresholds_from(wire: &proto::CanaryThresholds) -> Result<Thresholds, Status> {
    let share = |value: f64, name: &str| {
        if (0.0..=1.0).contains(&value) {
            Ok(value)
        } else {
            Err(Status::invalid_argument(format!(
                "{name} must be a share from 0 to 1, not {value}"
            )))
        }
    };
    if !(wire.max_p99_ratio.is_finite() && wire.max_p99_ratio >= 1.0) {
        return Err(Status::invalid_argument(format!(
            "max_p99_ratio must be at least 1, not {}",
            wire.max_p99_ratio
        )));
    }
    Ok(Thresholds {
        min_requests: wire.min_requests.max(1),
        max_error_rate: share(wire.max_error_rate, "max_error_rate")?,
        max_error_increase: share(wire.max_error_increase, "max_error_increase")?,
        max_p99_ratio: wire.max_p99_ratio,
    })
}

pub(super) fn proto_thresholds(thresholds: &Thresholds) -> proto::CanaryThresholds {
    proto::CanaryThresholds {
        min_requests: thresholds.min_requests,
        max_error_rate: thresholds.max_error_rate,
        max_error_increase: thresholds.max_error_increase,
        max_p99_ratio: thresholds.max_p99_ratio,
    }
}

pub(super) fn proto_side(
    pool: &Pool,
    side: Side,
    summary: &Summary,
    canary: &crate::topology::Canary,
) -> proto::CanarySide {
    let micros = |d: Option<std::time::Duration>| {
        d.map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
    };
    let backends = pool.side(side);
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    proto::CanarySide {
        requests: summary.requests,
        errors: summary.errors(),
        error_rate: summary.error_rate(),
        p50_micros: micros(summary.p50()),
        p95_micros: micros(summary.p95()),
        p99_micros: micros(summary.p99()),
        responses_by_class: summary.classes.to_vec(),
        lb_answers: summary.own.to_vec(),
        connect_failures: summary.connect_failures,
        timeouts: summary.timeouts,
        fallbacks: canary.comparison.fallbacks(side),
        backends: count(backends.len()),
        in_rotation: count(backends.iter().filter(|b| b.in_rotation()).count()),
    }
}
