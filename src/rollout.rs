//! rollout: owns the judgement of a pool's rollout — where it is and what comes next
//! ([`view`]: the `[pools."P".rollout]` table of the applied file with the canary's live
//! windows over the step) and the move that follows ([`decide`]: start, advance, promote,
//! abort, pause, or nothing yet) as a `Mutation::Rollout`, conditional on the progress it was
//! decided on so no step is applied twice. With `[sync]` it also decides who moves a rollout
//! (its `driver`) and judges on [`Windows`] the caller summed over the fleet, holding a pass
//! while a peer is unreachable. Pure apart from reading the local windows: it never writes
//! and never reaches a peer (`control::rollout` fetches their windows);
//! `control::rollout::Controller` runs it once a second and sends the moves through the
//! control API's own writes.

use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
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

/// A peer of `[sync] peers` whose windows are not in the sums, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unheard {
    /// The peer's `HOST:PORT`.
    pub peer: String,
    /// What the fetch met.
    pub error: String,
}

/// What the peers of `[sync] peers` gave to a look at the fleet's windows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peers {
    /// The instances whose windows were added, by the name each answered with (this
    /// instance's own name is never among them: its windows are the sums' start).
    pub summed: Vec<String>,
    /// Peers where nothing listens (connection refused): no lb runs there, so it holds no
    /// windows and serves no traffic; the sums go without it.
    pub down: Vec<Unheard>,
    /// Peers that did not answer (a timeout, an error, a bad answer): the sums may miss their
    /// traffic, so a step does not pass until they answer (a failure found without them still
    /// fails).
    pub unreachable: Vec<Unheard>,
}

impl Peers {
    /// The `HOST:PORT` of each peer found down, as status shows them.
    pub fn down_addrs(&self) -> Vec<String> {
        self.down.iter().map(|u| u.peer.clone()).collect()
    }

    /// The `HOST:PORT` of each peer that did not answer, as status shows them.
    pub fn unreachable_addrs(&self) -> Vec<String> {
        self.unreachable.iter().map(|u| u.peer.clone()).collect()
    }
}

/// The evidence a step is judged on: each side's window over the step, this instance's own
/// plus every peer's that answered, and what the peers gave.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Windows {
    /// The stable side, summed.
    pub stable: Summary,
    /// The canary side, summed.
    pub canary: Summary,
    /// Which peers are in the sums and which are not.
    pub peers: Peers,
}

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
    /// Which peers' windows are in `stable` and `canary` (empty alone or without peers).
    pub peers: Peers,
    /// With `[sync]`: this instance's name, which every move it makes writes as `driver`.
    pub me: Option<String>,
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
    /// With `[sync]`, another instance drives the rollout: nothing moves here.
    Driven {
        /// The `driver` the file names.
        by: String,
    },
    /// The step would pass, but these peers did not answer: hold until they do.
    Unreachable(Vec<Unheard>),
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

/// How long the current step of `rollout` has run at `now` (0 without a start time), and the
/// seconds of the windows it is judged over: the step's so far, at least 1, at most the
/// windows' length.
pub fn timing(rollout: &RolloutConfig, now: SystemTime) -> (Duration, u64) {
    let in_step = rollout
        .progress
        .step_started
        .and_then(|started| now.duration_since(started).ok())
        .unwrap_or_default();
    (in_step, in_step.as_secs().clamp(1, WINDOW_SECONDS))
}

/// This instance's own windows of pool `pattern` over the last `seconds`: stable, canary
/// (empty when the pool has no canary or is not running).
pub fn local_windows(pattern: &str, topology: &Topology, seconds: u64) -> (Summary, Summary) {
    topology
        .pool(pattern)
        .and_then(|p| p.canary.as_ref())
        .map(|c| c.comparison.summaries(seconds))
        .unwrap_or_default()
}

/// Whether this instance's controller may move `rollout`: it is not started, or running and
/// driven by this instance (`me`, with `[sync]`), or by none yet. Alone (`me` is `None`)
/// the one instance moves every rollout.
pub fn drives(rollout: &RolloutConfig, me: Option<&str>) -> bool {
    let progress = &rollout.progress;
    let live = matches!(progress.state, None | Some(RolloutState::Running));
    let ours = match (me, &progress.driver) {
        (Some(me), Some(driver)) => driver == me,
        _ => true,
    };
    live && ours
}

/// Looks at the rollout of `pool` (which must declare one) with this instance's own windows
/// only, at `now`: what a status answer shows where no look of the fleet's is at hand.
pub fn local_view(
    pool: &PoolConfig,
    topology: &Topology,
    me: Option<&str>,
    now: SystemTime,
) -> Option<View> {
    let rollout = pool.rollout.as_ref()?;
    let (_, window) = timing(rollout, now);
    let (stable, canary) = local_windows(&pool.pattern, topology, window);
    let windows = Windows {
        stable,
        canary,
        peers: Peers::default(),
    };
    view(pool, windows, me, now)
}

/// Looks at the rollout of `pool` (which must declare one) with `windows` over its step (the
/// seconds [`timing`] gives), at `now`, by instance `me` (its name with `[sync]`, `None`
/// alone).
pub fn view(
    pool: &PoolConfig,
    windows: Windows,
    me: Option<&str>,
    now: SystemTime,
) -> Option<View> {
    let rollout = pool.rollout.clone()?;
    let weight = pool.canary.as_ref().map(|c| c.weight);
    let progress = &rollout.progress;
    let (in_step, window) = timing(&rollout, now);
    let Windows {
        stable,
        canary,
        peers,
    } = windows;
    let thresholds = thresholds(&rollout);
    let verdict = if rollout.step_weight() == 100 {
        verdict::judge_alone(&canary, &thresholds)
    } else {
        verdict::judge(&canary, &stable, &thresholds)
    };
    let other_driver = match (me, &progress.driver) {
        (Some(me), Some(driver)) if driver != me => Some(driver.clone()),
        _ => None,
    };
    let next = match progress.state {
        None => Next::Start,
        Some(RolloutState::Running) if other_driver.is_some() => Next::Driven {
            by: other_driver.unwrap_or_default(),
        },
        Some(RolloutState::Running) => {
            let wanted = rollout.step_weight();
            match weight {
                Some(found) if found != wanted => Next::HandEdited { found, wanted },
                _ if progress.step_started.is_none() => Next::TimeStep,
                _ => match &verdict {
                    // Evidence is evidence: a failure in the windows at hand fails, whoever
                    // did not answer.
                    Verdict::Fail { .. } => Next::Fail,
                    _ if in_step < rollout.bake => Next::Bake(rollout.bake - in_step),
                    _ if !peers.unreachable.is_empty() => {
                        Next::Unreachable(peers.unreachable.clone())
                    }
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
        peers,
        me: me.map(str::to_owned),
        verdict,
        next,
    })
}

/// The controller's last look at each rollout it drives, the fleet's windows included: what
/// the driver's status answers show, so a status request reaches no peer.
#[derive(Debug, Default)]
pub struct Looks(ArcSwap<Vec<(SystemTime, View)>>);

impl Looks {
    /// Keeps `views`, looked at `at`, in place of the last look's.
    pub fn record(&self, at: SystemTime, views: Vec<View>) {
        self.0.store(std::sync::Arc::new(
            views.into_iter().map(|v| (at, v)).collect(),
        ));
    }

    /// The last look at the rollout of `pool` when it is recent (a few ticks) and was of the
    /// progress the file has now.
    pub fn latest(&self, pool: &PoolConfig, now: SystemTime) -> Option<View> {
        let at = pool.rollout.as_ref()?.progress.at();
        self.0
            .load()
            .iter()
            .find(|(looked, view)| {
                view.pattern == pool.pattern
                    && view.rollout.progress.at() == at
                    && now.duration_since(*looked).is_ok_and(|age| age <= TICK * 3)
            })
            .map(|(_, view)| view.clone())
    }
}

/// The view a status answer shows: the controller's last look when it is recent (the
/// fleet's windows on the driver), else this instance's own windows now.
pub fn status_view(
    pool: &PoolConfig,
    topology: &Topology,
    looks: &Looks,
    me: Option<&str>,
    now: SystemTime,
) -> Option<View> {
    looks
        .latest(pool, now)
        .or_else(|| local_view(pool, topology, me, now))
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
        Next::Driven { by } => format!(
            "driven by {by}: its controller moves the rollout (step {} began {} ago); `lbctl rollout resume {pattern}` sent to this instance takes it over",
            view.rollout.progress.step,
            format_duration(Duration::from_secs(view.in_step.as_secs()))
        ),
        Next::Unreachable(peers) => {
            let peers: Vec<String> = peers
                .iter()
                .map(|u| format!("peer {} unreachable ({})", u.peer, u.error))
                .collect();
            format!(
                "holding: {}; the step passes only on every peer's windows",
                peers.join("; ")
            )
        }
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

/// Which instances a fleet's verdict was judged on, for commit messages: empty alone.
pub fn peers_line(view: &View) -> String {
    let Some(me) = &view.me else {
        return String::new();
    };
    let mut line = format!(
        "Judged on the windows of {}",
        std::iter::once(me.as_str())
            .chain(view.peers.summed.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for (what, peers) in [
        ("down", &view.peers.down),
        ("unreachable", &view.peers.unreachable),
    ] {
        if !peers.is_empty() {
            let list: Vec<&str> = peers.iter().map(|u| u.peer.as_str()).collect();
            line.push_str(&format!("; {what}: {}", list.join(", ")));
        }
    }
    line.push('.');
    line
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
    Value::from(humantime::format_rfc3339_millis(now).to_string())
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
    let expect = Some(rollout.progress.at());
    let weight = rollout.step_weight();
    let line = verdict_line(view);
    let (mut change, summary, mut details) = match &view.next {
        Next::Nothing
        | Next::Bake(_)
        | Next::Data { .. }
        | Next::Driven { .. }
        | Next::Unreachable(_) => return None,
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
    // With [sync], whoever moves a rollout drives it: the instance that started a plan, or
    // claimed one no instance drove.
    if let Some(me) = &view.me {
        if rollout.progress.driver.as_deref() != Some(me) {
            change.set.push(("driver", Value::from(me.as_str())));
        }
        let peers = peers_line(view);
        if !details.is_empty() {
            details.push('\n');
            details.push_str(&peers);
        }
    }
    Some(Mutation::Rollout {
        pattern: pattern.clone(),
        change,
        expect,
        summary,
        details,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse, Config};

    /// A pool `/` whose rollout is at step 1 of `[10, 100]`, running for a minute (past its
    /// 1 s bake), with the progress keys `extra`.
    fn running_pool(extra: &str) -> (PoolConfig, SystemTime) {
        let text = format!(
            "[pools.\"/\"]\nbackends = [\"127.0.0.1:1\"]\n\n[pools.\"/\".canary]\nbackends = [\"127.0.0.1:2\"]\nweight = 10\n\n\
             [pools.\"/\".rollout]\nsteps = [10, 100]\nbake = \"1s\"\nmin_requests = 10\nstate = \"running\"\nstep = 1\n\
             step_started = \"2026-01-01T00:00:00Z\"\n{extra}"
        );
        let config: Config = parse(&text).unwrap_or_else(|d| panic!("{d:?}"));
        let now = humantime::parse_rfc3339("2026-01-01T00:01:00Z").expect("time");
        (config.pools[0].clone(), now)
    }

    fn side(requests: u64, errors: u64) -> Summary {
        Summary {
            seconds: 60,
            requests,
            classes: [requests - errors, 0, 0, errors],
            latency: {
                let mut buckets = [0; crate::canary::stats::LATENCY_BUCKETS];
                buckets[0] = requests;
                buckets
            },
            ..Summary::default()
        }
    }

    fn unheard(peer: &str) -> Unheard {
        Unheard {
            peer: peer.to_owned(),
            error: "no answer within 1s".to_owned(),
        }
    }

    fn windows(canary_errors: u64, unreachable: &[&str]) -> Windows {
        Windows {
            stable: side(100, 0),
            canary: side(100, canary_errors),
            peers: Peers {
                summed: vec!["b".to_owned()],
                down: Vec::new(),
                unreachable: unreachable.iter().map(|p| unheard(p)).collect(),
            },
        }
    }

    #[test]
    fn a_pass_holds_while_a_peer_is_unreachable_and_moves_once_all_answer() {
        let (pool, now) = running_pool("driver = \"a\"\n");
        let held = view(&pool, windows(0, &["10.0.0.3:9090"]), Some("a"), now).expect("view");
        assert_eq!(held.verdict, Verdict::Pass, "the figures in hand pass");
        assert_eq!(held.next, Next::Unreachable(vec![unheard("10.0.0.3:9090")]));
        assert!(decide(&held, now).is_none(), "nothing moves");
        assert_eq!(
            next_text(&held),
            "holding: peer 10.0.0.3:9090 unreachable (no answer within 1s); the step passes only on every peer's windows"
        );
        let all = view(&pool, windows(0, &[]), Some("a"), now).expect("view");
        assert_eq!(all.next, Next::Advance(2));
        let Some(Mutation::Rollout {
            expect, details, ..
        }) = decide(&all, now)
        else {
            panic!("a move");
        };
        assert_eq!(expect, Some(pool.rollout.as_ref().unwrap().progress.at()));
        assert!(
            details.contains("Judged on the windows of a, b."),
            "{details}"
        );
    }

    #[test]
    fn a_failure_in_the_windows_at_hand_fails_whoever_did_not_answer() {
        let (pool, now) = running_pool("driver = \"a\"\n");
        let failing = view(&pool, windows(30, &["10.0.0.3:9090"]), Some("a"), now).expect("view");
        assert_eq!(failing.next, Next::Fail);
        let Some(Mutation::Rollout { summary, .. }) = decide(&failing, now) else {
            panic!("a move");
        };
        assert!(summary.contains("aborted at step 1"), "{summary}");
    }

    #[test]
    fn only_the_driver_moves_a_running_rollout_and_a_claim_writes_the_driver() {
        let (pool, now) = running_pool("driver = \"a\"\n");
        let plan = pool.rollout.as_ref().expect("rollout");
        assert!(drives(plan, Some("a")));
        assert!(!drives(plan, Some("b")));
        assert!(drives(plan, None), "alone, the one instance drives");
        let other = view(&pool, windows(0, &[]), Some("b"), now).expect("view");
        assert_eq!(other.next, Next::Driven { by: "a".to_owned() });
        assert!(decide(&other, now).is_none());
        assert!(
            next_text(&other).starts_with("driven by a: "),
            "{}",
            next_text(&other)
        );
        assert!(
            next_text(&other).contains("began 1m ago"),
            "{}",
            next_text(&other)
        );

        // No driver yet: whoever moves it claims it in the same change.
        let (unclaimed, now) = running_pool("");
        assert!(drives(unclaimed.rollout.as_ref().unwrap(), Some("b")));
        let claimed = view(&unclaimed, windows(0, &[]), Some("b"), now).expect("view");
        let Some(Mutation::Rollout { change, .. }) = decide(&claimed, now) else {
            panic!("a move");
        };
        assert!(
            change
                .set
                .iter()
                .any(|(k, v)| *k == "driver" && v.as_str() == Some("b")),
            "{change:?}"
        );
        // Alone, no driver is written.
        let alone = view(&unclaimed, windows(0, &[]), None, now).expect("view");
        let Some(Mutation::Rollout { change, .. }) = decide(&alone, now) else {
            panic!("a move");
        };
        assert!(
            !change.set.iter().any(|(k, _)| *k == "driver"),
            "{change:?}"
        );
    }
}
