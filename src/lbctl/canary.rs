//! `lbctl canary status POOL`: the CanaryStatus answer as a side-by-side table with its verdict,
//! or as JSON.

use super::{paint, table};
use crate::control::proto;

/// The verdict's name as a person reads it.
pub fn verdict_name(verdict: i32) -> &'static str {
    match proto::CanaryVerdict::try_from(verdict) {
        Ok(proto::CanaryVerdict::CvPass) => "pass",
        Ok(proto::CanaryVerdict::CvFail) => "fail",
        Ok(proto::CanaryVerdict::CvNotEnoughData) => "not enough data",
        _ => "unknown",
    }
}

fn millis(micros: u64) -> String {
    if micros == 0 {
        "-".to_owned()
    } else {
        format!("{:.1}ms", micros as f64 / 1000.0)
    }
}

/// The pool's canary settings, each side's figures over the window, and the verdict with its
/// reasons or what it still waits for.
pub fn render_canary_status(status: &proto::CanaryStatusResp, colour: bool) -> String {
    let mut out = format!(
        "pool {}  canary weight {}%  sticky {}  force header {}  window {}s\n\n",
        status.pattern,
        status.weight_percent,
        if status.sticky.is_empty() {
            "-"
        } else {
            &status.sticky
        },
        if status.force_header.is_empty() {
            "-"
        } else {
            &status.force_header
        },
        status.window_seconds,
    );
    let mut rows = vec![[
        "SIDE",
        "BACKENDS",
        "REQUESTS",
        "ERRORS",
        "ERROR RATE",
        "P50",
        "P95",
        "P99",
        "FELL BACK",
    ]
    .map(String::from)
    .to_vec()];
    for (name, side) in [("stable", &status.stable), ("canary", &status.canary)] {
        let side = side.clone().unwrap_or_default();
        rows.push(vec![
            name.to_owned(),
            format!("{}/{}", side.in_rotation, side.backends),
            side.requests.to_string(),
            side.errors.to_string(),
            format!("{:.2}%", side.error_rate * 100.0),
            millis(side.p50_micros),
            millis(side.p95_micros),
            millis(side.p99_micros),
            side.fallbacks.to_string(),
        ]);
    }
    out.push_str(&table(&rows));
    let verdict = verdict_name(status.verdict);
    let painted = match (colour, status.verdict) {
        (true, v) if v == proto::CanaryVerdict::CvPass as i32 => {
            format!("\x1b[32m{verdict}\x1b[0m")
        }
        (true, v) if v == proto::CanaryVerdict::CvFail as i32 => {
            format!("\x1b[31m{verdict}\x1b[0m")
        }
        _ => paint(verdict, false),
    };
    out.push_str(&format!("\nverdict: {painted}\n"));
    for reason in &status.reasons {
        out.push_str(&format!("  - {reason}\n"));
    }
    if status.verdict == proto::CanaryVerdict::CvNotEnoughData as i32 {
        out.push_str(&format!(
            "  waiting for {} more canary and {} more stable requests in the window\n",
            status.canary_needs, status.stable_needs
        ));
    }
    if let Some(t) = &status.thresholds {
        out.push_str(&format!(
            "thresholds: min {} requests a side, error rate <= {:.2}%, <= {:.2} points over stable, p99 <= {:.2}x stable\n",
            t.min_requests,
            t.max_error_rate * 100.0,
            t.max_error_increase * 100.0,
            t.max_p99_ratio
        ));
    }
    out
}

fn side_json(side: &proto::CanarySide) -> serde_json::Value {
    serde_json::json!({
        "backends": side.backends,
        "in_rotation": side.in_rotation,
        "requests": side.requests,
        "errors": side.errors,
        "error_rate": side.error_rate,
        "p50_micros": side.p50_micros,
        "p95_micros": side.p95_micros,
        "p99_micros": side.p99_micros,
        "responses_by_class": side.responses_by_class,
        "lb_answers": side.lb_answers,
        "connect_failures": side.connect_failures,
        "timeouts": side.timeouts,
        "fell_back": side.fallbacks,
    })
}

/// [`render_canary_status`] as JSON.
pub fn canary_json(status: &proto::CanaryStatusResp) -> serde_json::Value {
    let thresholds = status.thresholds.unwrap_or_default();
    serde_json::json!({
        "pool": status.pattern,
        "weight_percent": status.weight_percent,
        "sticky": status.sticky,
        "force_header": status.force_header,
        "window_seconds": status.window_seconds,
        "stable": side_json(&status.stable.clone().unwrap_or_default()),
        "canary": side_json(&status.canary.clone().unwrap_or_default()),
        "verdict": verdict_name(status.verdict),
        "reasons": status.reasons,
        "canary_needs": status.canary_needs,
        "stable_needs": status.stable_needs,
        "thresholds": {
            "min_requests": thresholds.min_requests,
            "max_error_rate": thresholds.max_error_rate,
            "max_error_increase": thresholds.max_error_increase,
            "max_p99_ratio": thresholds.max_p99_ratio,
        },
    })
}
