//! `lbctl rollout status|watch POOL`: a RolloutStatus answer as text — the step ladder, the
//! step's verdict so far with both sides' figures, and what lb does next — or as JSON.

use super::canary::verdict_name;
use crate::control::proto;

fn millis(micros: u64) -> String {
    if micros == 0 {
        "-".to_owned()
    } else {
        format!("{:.1}ms", micros as f64 / 1000.0)
    }
}

/// The ladder of steps with the current one marked: `5% > [25%] > 50% > 100%`.
pub fn ladder(status: &proto::RolloutStatusResp) -> String {
    let current = usize::try_from(status.step).unwrap_or(0);
    status
        .steps
        .iter()
        .enumerate()
        .map(|(i, weight)| {
            if i + 1 == current && status.state != "done" {
                format!("[{weight}%]")
            } else {
                format!("{weight}%")
            }
        })
        .collect::<Vec<_>>()
        .join(" > ")
}

/// The whole status: state, step and weight, time in step against the bake, the verdict on
/// the step so far, both sides, and the next move.
pub fn render_rollout_status(status: &proto::RolloutStatusResp) -> String {
    let mut out = format!(
        "pool {}  rollout {}  step {} of {}  canary weight {}%\n",
        status.pattern,
        status.state,
        status.step,
        status.steps.len(),
        status.weight_percent
    );
    out.push_str(&format!("steps: {}\n", ladder(status)));
    if !status.driver.is_empty() {
        let here = if status.driver == status.instance {
            " (this instance)".to_owned()
        } else {
            format!(" (this is {})", status.instance)
        };
        out.push_str(&format!("driver: {}{here}\n", status.driver));
    }
    if !(status.peers_summed.is_empty()
        && status.peers_down.is_empty()
        && status.peers_unreachable.is_empty())
    {
        let list = |peers: &[String]| {
            if peers.is_empty() {
                "-".to_owned()
            } else {
                peers.join(", ")
            }
        };
        out.push_str(&format!(
            "fleet: summed {}; down {}; unreachable {}\n",
            list(&status.peers_summed),
            list(&status.peers_down),
            list(&status.peers_unreachable)
        ));
    }
    out.push_str(&format!(
        "in step: {}s of a {}s bake (judged over the last {}s)\n",
        status.in_step_ms / 1000,
        status.bake_seconds,
        status.window_seconds
    ));
    for (name, side) in [("stable", &status.stable), ("canary", &status.canary)] {
        let side = side.clone().unwrap_or_default();
        out.push_str(&format!(
            "  {name:<6} {} requests, {} errors ({:.2}%), p50 {} p99 {}\n",
            side.requests,
            side.errors,
            side.error_rate * 100.0,
            millis(side.p50_micros),
            millis(side.p99_micros)
        ));
    }
    out.push_str(&format!(
        "verdict so far: {}\n",
        verdict_name(status.verdict)
    ));
    for reason in &status.verdict_reasons {
        out.push_str(&format!("  - {reason}\n"));
    }
    out.push_str(&format!("next: {}\n", status.next));
    if !status.reason.is_empty() {
        out.push_str(&format!("why: {}\n", status.reason));
    }
    out
}

/// One line of `lbctl rollout watch`.
pub fn render_rollout_line(status: &proto::RolloutStatusResp) -> String {
    format!(
        "{} {} step {}/{} weight {}% {}: {}",
        status.pattern,
        status.state,
        status.step,
        status.steps.len(),
        status.weight_percent,
        verdict_name(status.verdict),
        status.next
    )
}

fn side_json(side: Option<&proto::CanarySide>) -> serde_json::Value {
    let side = side.cloned().unwrap_or_default();
    serde_json::json!({
        "requests": side.requests,
        "errors": side.errors,
        "error_rate": side.error_rate,
        "p50_micros": side.p50_micros,
        "p95_micros": side.p95_micros,
        "p99_micros": side.p99_micros,
    })
}

/// [`render_rollout_status`] as JSON.
pub fn rollout_json(status: &proto::RolloutStatusResp) -> serde_json::Value {
    let thresholds = status.thresholds.unwrap_or_default();
    serde_json::json!({
        "pool": status.pattern,
        "state": status.state,
        "step": status.step,
        "steps": status.steps,
        "weight_percent": status.weight_percent,
        "step_started_unix_ms": status.step_started_unix_ms,
        "in_step_ms": status.in_step_ms,
        "bake_seconds": status.bake_seconds,
        "window_seconds": status.window_seconds,
        "verdict": verdict_name(status.verdict),
        "verdict_reasons": status.verdict_reasons,
        "canary_needs": status.canary_needs,
        "stable_needs": status.stable_needs,
        "stable": side_json(status.stable.as_ref()),
        "canary": side_json(status.canary.as_ref()),
        "next": status.next,
        "reason": status.reason,
        "on_failure": status.on_failure,
        "on_success": status.on_success,
        "driver": status.driver,
        "instance": status.instance,
        "peers_summed": status.peers_summed,
        "peers_down": status.peers_down,
        "peers_unreachable": status.peers_unreachable,
        "thresholds": {
            "min_requests": thresholds.min_requests,
            "max_error_rate": thresholds.max_error_rate,
            "max_error_increase": thresholds.max_error_increase,
            "max_p99_ratio": thresholds.max_p99_ratio,
        },
    })
}
