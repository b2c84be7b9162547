//! control::rollout: the rollout's side of the control API — RolloutStatus's answer from
//! `rollout::view`, the `Mutation::Rollout` each of start, pause, resume, promote, abort and
//! SetCanaryWeight asks for (checked against where the rollout is), and the [`Controller`]
//! task that moves running rollouts by `rollout::decide`, through the same [`Writes`] as the
//! RPCs (never on a proxy worker; a read-only instance drives nothing). With `[sync]` the
//! controller moves only the rollouts this instance drives, judged on the fleet's windows
//! (`control::peers`), and `resume` on another instance takes a rollout over.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use toml_edit::Value;
use tonic::Status;

use super::canary::{proto_side, proto_thresholds, thresholds_from, wire_verdict};
use super::proto;
use super::Writes;
use crate::apply::{Applier, MutateOptions, Mutation};
use crate::canary::Side;
use crate::config::edit::RolloutEdit;
use crate::config::{format_duration, BackendAddr, PoolConfig, RolloutConfig, RolloutState};
use crate::rollout;
use crate::topology::Topology;

/// A rollout's steps when neither the request nor the file gives any.
pub const DEFAULT_STEPS: [u8; 4] = [5, 25, 50, 100];

/// RolloutStatus of `pool` (which must declare a rollout) at `now`, answered by instance
/// `instance`, one of a fleet when `fleet`: the controller's last look when recent, else
/// this instance's own windows.
pub fn status(
    pool: &PoolConfig,
    topology: &Topology,
    looks: &rollout::Looks,
    (instance, fleet): (&str, bool),
    now: SystemTime,
) -> Result<proto::RolloutStatusResp, Status> {
    let me = fleet.then_some(instance);
    let view = rollout::status_view(pool, topology, looks, me, now)
        .ok_or_else(|| no_rollout(&pool.pattern))?;
    let rollout = &view.rollout;
    let progress = &rollout.progress;
    let mut response = proto::RolloutStatusResp {
        pattern: view.pattern.clone(),
        state: progress
            .state
            .map_or("new", RolloutState::as_str)
            .to_owned(),
        step: u32::try_from(progress.step).unwrap_or(u32::MAX),
        steps: rollout.steps.iter().map(|s| u32::from(*s)).collect(),
        weight_percent: view.weight.map_or(0, u32::from),
        step_started_unix_ms: progress
            .step_started
            .and_then(|at| at.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        in_step_ms: u64::try_from(view.in_step.as_millis()).unwrap_or(u64::MAX),
        bake_seconds: u32::try_from(rollout.bake.as_secs()).unwrap_or(u32::MAX),
        reason: progress.reason.clone().unwrap_or_default(),
        next: rollout::next_text(&view),
        window_seconds: u32::try_from(view.window).unwrap_or(u32::MAX),
        thresholds: Some(proto_thresholds(&rollout::thresholds(rollout))),
        on_failure: rollout.on_failure.as_str().to_owned(),
        on_success: rollout.on_success.as_str().to_owned(),
        driver: progress.driver.clone().unwrap_or_default(),
        instance: instance.to_owned(),
        peers_summed: view.peers.summed.clone(),
        peers_down: view.peers.down_addrs(),
        peers_unreachable: view.peers.unreachable_addrs(),
        ..Default::default()
    };
    if let Some((live, canary)) = topology
        .pool(&pool.pattern)
        .and_then(|live| live.canary.as_ref().map(|canary| (live, canary)))
    {
        response.stable = Some(proto_side(live, Side::Stable, &view.stable, canary));
        response.canary = Some(proto_side(live, Side::Canary, &view.canary, canary));
    }
    let wire = wire_verdict(&view.verdict);
    response.verdict = wire.verdict;
    response.verdict_reasons = wire.reasons;
    response.canary_needs = wire.canary_needs;
    response.stable_needs = wire.stable_needs;
    Ok(response)
}

fn no_rollout(pattern: &str) -> Status {
    Status::failed_precondition(format!(
        "pool {pattern:?} has no rollout: start one with `lbctl rollout start {pattern}` or declare [pools.{pattern:?}.rollout]"
    ))
}

fn now_value() -> Value {
    Value::from(humantime::format_rfc3339_millis(SystemTime::now()).to_string())
}

/// A manual action on a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Hold a running rollout.
    Pause,
    /// Go on with a paused rollout.
    Resume,
    /// Skip the remaining steps.
    Promote,
    /// Stop it.
    Abort,
}

/// The change `action` on `pool`'s rollout asks for, by `actor`, sent to instance `me` (its
/// name with `[sync]`, `None` alone); FAILED_PRECONDITION when the rollout is not where the
/// action applies. With `[sync]`, resume makes `me` the driver: of a paused rollout, or of a
/// running one another instance drives (a takeover, its step and its start time kept).
pub fn action(
    pool: &PoolConfig,
    action: Action,
    actor: &str,
    me: Option<&str>,
) -> Result<Mutation, Status> {
    let pattern = &pool.pattern;
    let rollout = pool.rollout.as_ref().ok_or_else(|| no_rollout(pattern))?;
    let progress = &rollout.progress;
    let (state, step) = (progress.state, progress.step);
    let takeover = state == Some(RolloutState::Running)
        && me.is_some_and(|me| progress.driver.as_deref() != Some(me));
    let weight = rollout.step_weight();
    let n = rollout.steps.len();
    let live = matches!(
        state,
        Some(RolloutState::Running | RolloutState::Paused) | None
    );
    let refuse = |what: &str| {
        Err(Status::failed_precondition(format!(
            "the rollout of {pattern:?} is {}: {what}",
            state.map_or("not started", RolloutState::as_str)
        )))
    };
    let set_state = |to: RolloutState, reason: String| RolloutEdit {
        set: vec![
            ("state", Value::from(to.as_str())),
            ("reason", Value::from(reason)),
        ],
        ..RolloutEdit::default()
    };
    let (change, summary) = match action {
        Action::Pause => {
            if state != Some(RolloutState::Running) {
                return refuse("only a running rollout can be paused");
            }
            (
                set_state(
                    RolloutState::Paused,
                    format!("paused by {actor} at step {step} ({weight}%)"),
                ),
                format!("rollout {pattern}: paused at step {step} of {n}"),
            )
        }
        Action::Resume if takeover => {
            let me = me.unwrap_or_default();
            let from = progress
                .driver
                .as_deref()
                .map_or_else(|| "no instance".to_owned(), |d| format!("instance {d}"));
            let change = RolloutEdit {
                set: vec![
                    ("driver", Value::from(me)),
                    (
                        "reason",
                        Value::from(format!(
                            "taken over by {actor} on instance {me} from {from} at step {step} ({weight}%)"
                        )),
                    ),
                ],
                ..RolloutEdit::default()
            };
            (
                change,
                format!("rollout {pattern}: driven by {me} from step {step} of {n} (taken over from {from})"),
            )
        }
        Action::Resume => {
            if state != Some(RolloutState::Paused) {
                return refuse("only a paused rollout can be resumed (start an ended one again with `lbctl rollout start`)");
            }
            let mut set = vec![
                ("state", Value::from(RolloutState::Running.as_str())),
                ("step_started", now_value()),
            ];
            if let Some(me) = me {
                set.push(("driver", Value::from(me)));
            }
            let change = RolloutEdit {
                canary_weight: Some(weight),
                set,
                remove: vec!["reason"],
                ..RolloutEdit::default()
            };
            (
                change,
                format!(
                    "rollout {pattern}: resumed at step {step} of {n}, canary weight {weight}%"
                ),
            )
        }
        Action::Promote => {
            if !live {
                return refuse("there is nothing to promote");
            }
            let mut change = set_state(
                RolloutState::Done,
                format!("promoted by {actor} at step {step} ({weight}%)"),
            );
            change.promote = true;
            (
                change,
                format!("rollout {pattern}: promoted by hand at step {step} of {n}"),
            )
        }
        Action::Abort => {
            if !live {
                return refuse("there is nothing to abort");
            }
            let mut change = set_state(
                RolloutState::Aborted,
                format!("aborted by {actor} at step {step} ({weight}%)"),
            );
            change.canary_weight = Some(0);
            change.canary_state = Some("drain");
            (
                change,
                format!(
                    "rollout {pattern}: aborted by hand at step {step} of {n}, canary weight 0%"
                ),
            )
        }
    };
    Ok(Mutation::Rollout {
        pattern: pattern.clone(),
        change,
        expect: Some(progress.at()),
        summary,
        details: String::new(),
    })
}

/// The change RolloutStart asks for on `pool`, sent to instance `me` (its name with
/// `[sync]`, which becomes the driver; `None` alone): the canary (its backends, enabled, at the
/// first step's weight), the plan's keys the request sets, and the progress at step 1.
pub fn start(
    pattern: &str,
    rollout: Option<&RolloutConfig>,
    has_canary: bool,
    request: &proto::RolloutStartReq,
    canary: Vec<BackendAddr>,
    me: Option<&str>,
) -> Result<Mutation, Status> {
    if canary.is_empty() && !has_canary {
        return Err(Status::failed_precondition(format!(
            "pool {pattern:?} has no canary backends: name them (lbctl rollout start {pattern} --canary IP:PORT)"
        )));
    }
    let steps: Vec<u8> = if request.steps.is_empty() {
        rollout.map_or_else(|| DEFAULT_STEPS.to_vec(), |r| r.steps.clone())
    } else {
        request
            .steps
            .iter()
            .map(|s| u8::try_from(*s).ok().filter(|s| (1..=100).contains(s)))
            .collect::<Option<Vec<u8>>>()
            .filter(|steps| steps.windows(2).all(|w| w[0] < w[1]))
            .ok_or_else(|| {
                Status::invalid_argument(
                    "steps must be whole percents from 1 to 100, each larger than the one before",
                )
            })?
    };
    let first = steps.first().copied().unwrap_or(0);
    let mut set = Vec::new();
    if !request.steps.is_empty() || rollout.is_none() {
        set.push((
            "steps",
            Value::Array(steps.iter().map(|s| i64::from(*s)).collect()),
        ));
    }
    if request.bake_seconds > 0 {
        let bake = std::time::Duration::from_secs(u64::from(request.bake_seconds));
        set.push(("bake", Value::from(format_duration(bake))));
    }
    if let Some(wire) = &request.thresholds {
        let thresholds = thresholds_from(wire)?;
        set.push((
            "min_requests",
            Value::from(i64::try_from(thresholds.min_requests).unwrap_or(i64::MAX)),
        ));
        set.push(("max_error_rate", Value::from(thresholds.max_error_rate)));
        set.push((
            "max_error_increase",
            Value::from(thresholds.max_error_increase),
        ));
        set.push(("max_p99_ratio", Value::from(thresholds.max_p99_ratio)));
    }
    for (key, value, allowed) in [
        ("on_failure", &request.on_failure, ["abort", "pause"]),
        ("on_success", &request.on_success, ["promote", "pause"]),
    ] {
        if value.is_empty() {
            continue;
        }
        if !allowed.contains(&value.as_str()) {
            return Err(Status::invalid_argument(format!(
                "{key} must be {:?} or {:?}, not {value:?}",
                allowed[0], allowed[1]
            )));
        }
        set.push((key, Value::from(value.as_str())));
    }
    set.push(("state", Value::from(RolloutState::Running.as_str())));
    set.push(("step", Value::from(1i64)));
    set.push(("step_started", now_value()));
    let mut remove = vec!["reason"];
    match me {
        Some(me) => set.push(("driver", Value::from(me))),
        None => remove.push("driver"),
    }
    let change = RolloutEdit {
        canary_backends: (!canary.is_empty())
            .then(|| canary.iter().map(ToString::to_string).collect()),
        canary_weight: Some(first),
        canary_state: Some("enabled"),
        set,
        remove,
        promote: false,
    };
    Ok(Mutation::Rollout {
        pattern: pattern.to_owned(),
        change,
        expect: None,
        summary: format!(
            "rollout {pattern}: started, step 1 of {}, canary weight {first}%",
            steps.len()
        ),
        details: String::new(),
    })
}

/// The change SetCanaryWeight asks for on pool `pattern`, which has a canary or not.
pub fn set_weight(pattern: &str, has_canary: bool, weight: u32) -> Result<Mutation, Status> {
    if !has_canary {
        return Err(Status::failed_precondition(format!(
            "pool {pattern:?} has no canary: declare [pools.{pattern:?}.canary] in lb.toml"
        )));
    }
    let weight = u8::try_from(weight)
        .ok()
        .filter(|w| *w <= 100)
        .ok_or_else(|| {
            Status::invalid_argument(format!("weight {weight} is not a percent from 0 to 100"))
        })?;
    Ok(Mutation::Rollout {
        pattern: pattern.to_owned(),
        change: RolloutEdit {
            canary_weight: Some(weight),
            ..RolloutEdit::default()
        },
        expect: None,
        summary: format!("canary {pattern}: weight {weight}%"),
        details: String::new(),
    })
}

/// The change `lbctl rollout start PATTERN --canary CANARY --steps STEPS` asks for.
pub fn start_mutation(
    pattern: &str,
    steps: &[u32],
    canary: BackendAddr,
) -> Result<Mutation, Status> {
    let request = proto::RolloutStartReq {
        pattern: pattern.to_owned(),
        steps: steps.to_vec(),
        ..Default::default()
    };
    start(pattern, None, true, &request, vec![canary], None)
}

/// The controller: every [`rollout::TICK`], each running rollout of the applied file that
/// this instance drives is looked at and moved when its step is decided. Changes go where the
/// control API's go ([`Writes`]); a read-only instance never drives a rollout. With `[sync]`
/// the look sums the windows of `[sync] peers` ([`super::peers`]).
pub struct Controller {
    applier: Arc<Applier>,
    writes: Writes,
    looks: Arc<rollout::Looks>,
}

impl Controller {
    /// A controller over `applier`'s file, writing through `writes`, keeping its looks in
    /// `looks` for the status answers.
    pub fn new(applier: Arc<Applier>, writes: Writes, looks: Arc<rollout::Looks>) -> Controller {
        Controller {
            applier,
            writes,
            looks,
        }
    }

    /// Runs until `stopping` is cancelled.
    pub async fn run(self, stopping: CancellationToken) {
        if self.writes.read_only {
            return;
        }
        let mut tick = tokio::time::interval(rollout::TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stopping.cancelled() => return,
                _ = tick.tick() => {}
            }
            self.look().await;
        }
    }

    /// One look at every rollout of the applied file this instance may move.
    async fn look(&self) {
        let pools = self.applier.rollout_pools();
        let me = self.writes.fleet_name();
        let mut looked = Vec::new();
        for pool in pools.iter() {
            let Some(plan) = &pool.rollout else { continue };
            if !rollout::drives(plan, me) {
                continue;
            }
            let topology = self.applier.topology().load_full();
            let now = SystemTime::now();
            let (_, seconds) = rollout::timing(plan, now);
            let local = rollout::local_windows(&pool.pattern, &topology, seconds);
            let peers = self.applier.sync_peers();
            let windows = match me {
                // Only a running step is judged; a plan is started without figures.
                Some(me) if plan.progress.state.is_some() && !peers.is_empty() => {
                    super::peers::fleet_windows(&peers, me, &pool.pattern, seconds, local).await
                }
                _ => rollout::Windows {
                    stable: local.0,
                    canary: local.1,
                    peers: rollout::Peers::default(),
                },
            };
            let now = SystemTime::now();
            let Some(view) = rollout::view(pool, windows, me, now) else {
                continue;
            };
            let decided = rollout::decide(&view, now);
            looked.push(view);
            let Some(mutation) = decided else {
                continue;
            };
            let summary = mutation.describe();
            let options = MutateOptions {
                actor: Some(rollout::ACTOR.to_owned()),
                ..MutateOptions::default()
            };
            match self.writes.mutate(&self.applier, mutation, options).await {
                Ok(_) => {
                    tracing::info!(pattern = %pool.pattern, change = %summary, "rollout moved")
                }
                // ABORTED: the file moved since the look (a person, or another instance of
                // the fleet, got there first); the next look starts from what it is now.
                Err(status) => {
                    tracing::warn!(pattern = %pool.pattern, change = %summary, error = %status.message(), "rollout change not made; looking again")
                }
            }
        }
        self.looks.record(SystemTime::now(), looked);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "[listen]\nhttp = \"127.0.0.1:0\"\ngrpc = \"127.0.0.1:0\"\n\n\
        [pools.\"/\"]\ninterval = \"1h\"\nbackends = [\"127.0.0.1:1\"]\n\n\
        [pools.\"/\".canary]\nbackends = [\"127.0.0.1:2\"]\nweight = 10\n\n\
        [pools.\"/\".rollout]\nsteps = [10, 100]\nbake = \"1s\"\nmin_requests = 1\n\
        state = \"running\"\nstep = 1\nstep_started = \"2026-01-01T00:00:00Z\"\ndriver = \"a\"\n";

    fn rollout_pool(applier: &Applier) -> PoolConfig {
        applier.rollout_pools()[0].clone()
    }

    #[tokio::test]
    async fn a_takeover_and_the_old_driver_s_move_cannot_both_land() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("lb.toml");
        std::fs::write(&path, FILE).expect("write");
        let (applier, _) = Applier::load(&path).await.expect("load");
        let seen = rollout_pool(&applier);

        // b was sent `resume` on what a drives: a takeover, step and start time kept.
        assert!(
            action(&seen, Action::Resume, "alice", Some("a")).is_err(),
            "the driver itself has nothing to resume"
        );
        let takeover = action(&seen, Action::Resume, "alice", Some("b")).expect("takeover");
        // Meanwhile a decided to advance, on the same view of the file.
        let (stable, canary) = (
            crate::canary::stats::Summary {
                requests: 5,
                classes: [5, 0, 0, 0],
                ..Default::default()
            },
            crate::canary::stats::Summary {
                requests: 5,
                classes: [5, 0, 0, 0],
                ..Default::default()
            },
        );
        let windows = rollout::Windows {
            stable,
            canary,
            peers: rollout::Peers::default(),
        };
        let now = SystemTime::now();
        let view = rollout::view(&seen, windows, Some("a"), now).expect("view");
        assert_eq!(view.next, rollout::Next::Advance(2));
        let advance = rollout::decide(&view, now).expect("a's move");

        let options = MutateOptions::default();
        applier
            .mutate(takeover, &options)
            .await
            .expect("the takeover lands");
        let after = rollout_pool(&applier);
        let progress = &after.rollout.as_ref().expect("rollout").progress;
        assert_eq!(progress.driver.as_deref(), Some("b"));
        assert_eq!(
            (progress.state, progress.step),
            (seen.rollout.as_ref().unwrap().progress.state, 1)
        );
        assert_eq!(
            progress.step_started,
            seen.rollout.as_ref().unwrap().progress.step_started
        );
        let refused = applier
            .mutate(advance, &options)
            .await
            .expect_err("a's move was decided on a's driving");
        assert!(refused.to_string().contains("driven by b"), "{refused}");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(
            text.contains("step = 1\n") && text.contains("driver = \"b\""),
            "{text}"
        );
    }
}
