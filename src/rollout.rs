//! rollout: owns the judgement of a pool's rollout — where it is and what comes next
//! ([`view`]: the `[pools."P".rollout]` table of the applied file with the canary's live
//! windows over the step) and the move that follows ([`decide`]: start, advance, promote,
//! abort, pause, or nothing yet) as a `Mutation::Rollout`, conditional on the progress it was
//! decided on so no step is applied twice. Pure apart from reading the windows: it never
//! writes; `control::rollout::Controller` runs it once a second and sends the moves through
//! the control API's own writes.

use std::time::{Duration, SystemTime};

use toml_edit::Value;

use crate::apply::Mutation;
use crate::canary::stats::{Summary, WINDOW_SECONDS};
use crate::canary::verdict::{self, Thresholds, Verdict};
use crate::config::edit::RolloutEdit;
use crate::config::{
    format_duration, OnFailure, OnSuccess, PoolConfig, RolloutConfig, RolloutState,
};
use crate::topology::Topology;

/// How often the controller looks at each running rollout.
pub const TICK: Duration = Duration::from_secs(1);

/// The name the controller's changes carry (`x-lb-actor` of a person's).
pub const ACTOR: &str = "lb rollout controller";

/// Where a rollout is and what comes next, as of one look at the file and the live windows.
#[derive(Debug, Clone)]
pub struct View {
    /// The pool's pattern.
    pub pattern: String,
    /// The file's rollout table.
    pub rollout: RolloutConfig,
    /// The canary's weight as the file has it (`None`: no canary table).
    pub weight: Option<u8>,
    /// How long the current step has run (0 when it has no start time).
    pub in_step: Duration,
    /// The seconds of the windows judged: the step's so far, at most the windows' length.
    pub window: u64,
    /// The stable side over `window`.
    pub stable: Summary,
    /// The canary side over `window`.
    pub canary: Summary,
    /// The verdict on them with the rollout's thresholds.
    pub verdict: Verdict,
    /// What the controller does next.
    pub next: Next,
}

/// What the controller does about a rollout, or waits for.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Not running (paused, aborted, done): a person moves it.
    Nothing,
    /// A plan no one has started: start it at step 1.
    Start,
    /// Running without a step start time (written by hand): time the step from now.
    TimeStep,
    /// The step's bake has this long left.
    Bake(Duration),
    /// The bake is over, but the windows are too thin to judge.
    Data {
        /// Requests the canary still needs.
        canary_needs: u64,
        /// Requests stable still needs.
        stable_needs: u64,
    },
    /// The step passed: go to this step (1-based).
    Advance(usize),
    /// The last step passed: do `on_success`.
    Succeed,
    /// The step failed: do `on_failure`.
    Fail,
    /// The canary's weight in the file is not its step's: a person changed it; pause.
    HandEdited {
        /// The file's weight.
        found: u8,
        /// The step's.
        wanted: u8,
    },
}

/// The thresholds a rollout's steps are judged by.
pub fn thresholds(rollout: &RolloutConfig) -> Thresholds {
    Thresholds {
        min_requests: rollout.min_requests,
        max_error_rate: rollout.max_error_rate.0,
        max_error_increase: rollout.max_error_increase.0,
        max_p99_ratio: rollout.max_p99_ratio.0,
    }
}

/// Looks at the rollout of `pool` (which must declare one) with the live windows `topology`
/// keeps for it, at `now`.
pub fn view(pool: &PoolConfig, topology: &Topology, now: SystemTime) -> Option<View> {
    let rollout = pool.rollout.clone()?;
    let weight = pool.canary.as_ref().map(|c| c.weight);
    let progress = &rollout.progress;
    let in_step = progress
        .step_started
        .and_then(|started| now.duration_since(started).ok())
        .unwrap_or_default();
    let window = in_step.as_secs().clamp(1, WINDOW_SECONDS);
    let (stable, canary) = topology
        .pool(&pool.pattern)
        .and_then(|p| p.canary.as_ref())
        .map(|c| c.comparison.summaries(window))
        .unwrap_or_default();
    let thresholds = thresholds(&rollout);
    let verdict = if rollout.step_weight() == 100 {
        verdict::judge_alone(&canary, &thresholds)
    } else {
        verdict::judge(&canary, &stable, &thresholds)
    };
    let next = match progress.state {
        None => Next::Start,
        Some(RolloutState::Running) => {
            let wanted = rollout.step_weight();
            match weight {
                Some(found) if found != wanted => Next::HandEdited { found, wanted },
                _ if progress.step_started.is_none() => Next::TimeStep,
                _ => match &verdict {
                    Verdict::Fail { .. } => Next::Fail,
                    _ if in_step < rollout.bake => Next::Bake(rollout.bake - in_step),
                    Verdict::NotEnoughData {
                        canary_needs,
                        stable_needs,
                    } => Next::Data {
                        canary_needs: *canary_needs,
                        stable_needs: *stable_needs,
                    },
                    Verdict::Pass if progress.step < rollout.steps.len() => {
                        Next::Advance(progress.step + 1)
                    }
                    Verdict::Pass => Next::Succeed,
                },
            }
        }
        Some(_) => Next::Nothing,
    };
    Some(View {
        pattern: pool.pattern.clone(),
        rollout,
        weight,
        in_step,
        window,
        stable,
        canary,
        verdict,
        next,
    })
}

/// What the controller does next, as a person reads it.
pub fn next_text(view: &View) -> String {
    let pattern = &view.pattern;
    match &view.next {
        Next::Nothing => match view.rollout.progress.state {
            Some(RolloutState::Paused) => format!("nothing until `lbctl rollout resume {pattern}`"),
            _ => "nothing: the rollout has ended".to_owned(),
        },
        Next::Start => "starting at step 1".to_owned(),
        Next::TimeStep => "timing the step from now".to_owned(),
        Next::Bake(left) => format!(
            "baking: {} left in this step",
            format_duration(Duration::from_secs(left.as_secs().max(1)))
        ),
        Next::Data {
            canary_needs,
            stable_needs,
        } => {
            let mut needs = Vec::new();
            if *canary_needs > 0 {
                needs.push(format!("{canary_needs} more canary requests"));
            }
            if *stable_needs > 0 {
                needs.push(format!("{stable_needs} more stable requests"));
            }
            format!(
                "holding: waiting for {} before judging the step",
                needs.join(" and ")
            )
        }
        Next::Advance(step) => format!("step passed: moving to step {step}"),
        Next::Succeed => "last step passed: finishing".to_owned(),
        Next::Fail => "step failed: stopping".to_owned(),
        Next::HandEdited { found, wanted } => {
            format!("the weight is {found}% where the step wants {wanted}%: pausing")
        }
    }
}

/// One side's figures, for reasons and commit messages.
pub fn figures(side: &str, summary: &Summary) -> String {
    let p99 = summary
        .p99()
        .map_or_else(|| "-".to_owned(), |p| format!("{p:?}"));
    format!(
        "{side} {} requests, {} errors ({:.2}%), p99 {p99}",
        summary.requests,
        summary.errors(),
        summary.error_rate() * 100.0
    )
}

/// The verdict's figures on one line: both sides and, for a failure, each reason.
pub fn verdict_line(view: &View) -> String {
    let sides = format!(
        "{}; {} (last {}s)",
        figures("canary", &view.canary),
        figures("stable", &view.stable),
        view.window
    );
    match &view.verdict {
        Verdict::Fail { reasons } => {
            let reasons: Vec<String> = reasons.iter().map(ToString::to_string).collect();
            format!("{}: {sides}", reasons.join("; "))
        }
        _ => sides,
    }
}

fn now_rfc3339(now: SystemTime) -> Value {
    Value::from(humantime::format_rfc3339_seconds(now).to_string())
}

/// The progress keys of a rollout at `step`, begun `now`.
fn at_step(
    step: usize,
    state: RolloutState,
    now: SystemTime,
    reason: Option<String>,
) -> RolloutEdit {
    let mut set = vec![
        ("state", Value::from(state.as_str())),
        ("step", Value::from(step as i64)),
        ("step_started", now_rfc3339(now)),
    ];
    let mut remove = Vec::new();
    match reason {
        Some(reason) => set.push(("reason", Value::from(reason))),
        None => remove.push("reason"),
    }
    RolloutEdit {
        set,
        remove,
        ..RolloutEdit::default()
    }
}

/// A change of the rollout's `state` and `reason` only.
fn to_state(state: RolloutState, reason: String) -> RolloutEdit {
    RolloutEdit {
        set: vec![
            ("state", Value::from(state.as_str())),
            ("reason", Value::from(reason)),
        ],
        ..RolloutEdit::default()
    }
}

/// The change the controller makes for `view`, if any.
pub fn decide(view: &View, now: SystemTime) -> Option<Mutation> {
    let rollout = &view.rollout;
    let step = rollout.progress.step;
    let n = rollout.steps.len();
    let pattern = &view.pattern;
    let expect = Some((rollout.progress.state, step));
    let weight = rollout.step_weight();
    let line = verdict_line(view);
    let (change, summary, details) = match &view.next {
        Next::Nothing | Next::Bake(_) | Next::Data { .. } => return None,
        Next::Start => {
            let mut change = at_step(step, RolloutState::Running, now, None);
            change.canary_weight = Some(weight);
            (
                change,
                format!("rollout {pattern}: started, step {step} of {n}, canary weight {weight}%"),
                String::new(),
            )
        }
        Next::TimeStep => (
            RolloutEdit {
                set: vec![("step_started", now_rfc3339(now))],
                ..RolloutEdit::default()
            },
            format!("rollout {pattern}: step {step} of {n} timed from now"),
            String::new(),
        ),
        Next::Advance(to) => {
            let to_weight = rollout.weight_at(*to);
            let reason = format!("step {step} ({weight}%) passed: {line}");
            let mut change = at_step(*to, RolloutState::Running, now, Some(reason.clone()));
            change.canary_weight = Some(to_weight);
            (
                change,
                format!("rollout {pattern}: step {to} of {n}, canary weight {to_weight}%"),
                format!(
                    "Step {step} ({weight}%) passed after {} in step.\n{line}",
                    format_duration(view.in_step)
                ),
            )
        }
        Next::Succeed => {
            let reason = format!("all {n} steps passed: {line}");
            match rollout.on_success {
                OnSuccess::Promote => {
                    let mut change = to_state(RolloutState::Done, reason);
                    change.promote = true;
                    (
                        change,
                        format!("rollout {pattern}: promoted, the canary's backends are the pool's"),
                        format!("All {n} steps passed; the last at {weight}%.\n{line}"),
                    )
                }
                OnSuccess::Pause => (
                    to_state(
                        RolloutState::Paused,
                        format!("{reason}; `lbctl rollout promote {pattern}` finishes it"),
                    ),
                    format!("rollout {pattern}: all steps passed, paused for promotion"),
                    line.clone(),
                ),
            }
        }
        Next::Fail => {
            let reason = format!("step {step} ({weight}%) failed: {line}");
            match rollout.on_failure {
                OnFailure::Abort => {
                    let mut change = to_state(RolloutState::Aborted, reason);
                    change.canary_weight = Some(0);
                    change.canary_state = Some("drain");
                    (
                        change,
                        format!("rollout {pattern}: aborted at step {step} ({weight}%), canary weight 0%"),
                        format!("Step {step} ({weight}%) failed.\n{line}"),
                    )
                }
                OnFailure::Pause => (
                    to_state(RolloutState::Paused, reason),
                    format!("rollout {pattern}: paused at step {step} ({weight}%), the step failed"),
                    format!("Step {step} ({weight}%) failed.\n{line}"),
                ),
            }
        }
        Next::HandEdited { found, wanted } => (
            to_state(
                RolloutState::Paused,
                format!(
                    "the canary weight was set to {found}% in lb.toml, step {step} wants {wanted}%: paused; `lbctl rollout resume {pattern}` goes on from step {step} at {wanted}%"
                ),
            ),
            format!("rollout {pattern}: paused, the canary weight was edited by hand"),
            String::new(),
        ),
    };
    Some(Mutation::Rollout {
        pattern: pattern.clone(),
        change,
        expect,
        summary,
        details,
    })
}
