//! `lbctl rollout rolling POOL --run CMD`: the original Go tool's rolling upgrade workflow
//! (`rollout/workflow.go`), driven from the operator's machine over the control API.
//!
//! Owns the order of the upgrade ([`waves`]: the canaries one at a time, then the rest
//! `concurrency` at a time), each backend's steps (drain, wait until drained, run the operator's
//! command, wait for a health check passed after it, enable, bake), the bake's judgement (the
//! backend's traffic over the bake against the rest of the pool's, by
//! [`canary::verdict::judge`](crate::canary::verdict::judge)), when to stop, and the report.
//! It reaches lb only through [`Control`] (lbctl's tonic client implements it) and never edits
//! lb.toml itself: every drain and enable is one control-API change. The command runs here, on
//! the operator's machine ([`run_command`]); lb itself never runs commands.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::canary::stats::{Summary, LATENCY_BOUNDS_MS, LATENCY_BUCKETS};
use crate::canary::verdict::{judge, Thresholds, Verdict};
use crate::config::BackendAddr;
use crate::control::proto;

/// How often the wait loops ask PoolHealth again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// What `lbctl rollout rolling` was asked to do.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The pool's pattern.
    pub pattern: String,
    /// The command run (by `sh -c`) for each backend, between its drain and its enable.
    pub command: String,
    /// Backends upgraded first, one at a time; any failure among them stops the rollout.
    pub canaries: usize,
    /// Backends upgraded at once after the canaries.
    pub concurrency: usize,
    /// Failures tolerated after the canaries; one more stops the rollout.
    pub max_failures: usize,
    /// How long an enabled backend's traffic is watched before it is judged.
    pub bake: Duration,
    /// The bound on each backend's drain, command and health wait together.
    pub timeout: Duration,
    /// What the bake must meet.
    pub thresholds: Thresholds,
}

/// One step of the upgrade: a set of backends (indices into the rollout's list) started
/// together; the next wave starts when all of them are done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wave {
    /// A canary wave: a failure stops the rollout.
    pub canary: bool,
    /// Indices of the backends, in pool order.
    pub members: Vec<usize>,
}

/// The order of a rolling upgrade of `n` backends, as the original workflow had it: the first
/// `canaries` one at a time, then the rest `concurrency` at a time (at least one).
pub fn waves(n: usize, canaries: usize, concurrency: usize) -> Vec<Wave> {
    let canaries = canaries.min(n);
    let mut out: Vec<Wave> = (0..canaries)
        .map(|i| Wave {
            canary: true,
            members: vec![i],
        })
        .collect();
    let rest: Vec<usize> = (canaries..n).collect();
    out.extend(rest.chunks(concurrency.max(1)).map(|chunk| Wave {
        canary: false,
        members: chunk.to_vec(),
    }));
    out
}

/// The control API failed or answered something the rollout cannot use.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ControlError(pub String);

/// What the rollout needs of lb and of the operator's machine. lbctl implements it over its
/// tonic client; the unit tests over a fake pool.
#[allow(async_fn_in_trait)] // Driven on lbctl's single-threaded runtime: no Send needed.
pub trait Control {
    /// Every backend of the pool, healthy and sick, with its counters.
    async fn pool_health(&self) -> Result<proto::PoolHealth, ControlError>;
    /// Drains `backend`; answers the `[sync]` commit carrying the change (empty without).
    async fn drain(&self, backend: &BackendAddr) -> Result<String, ControlError>;
    /// Enables `backend`; answers the commit as [`Control::drain`].
    async fn enable(&self, backend: &BackendAddr) -> Result<String, ControlError>;
    /// Runs the operator's command for `backend` within `timeout`, stopping it on `cancel`.
    async fn run(
        &self,
        backend: &BackendAddr,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<(), CommandError>;
    /// Reports one step as it happens.
    fn say(&self, line: &str);
}

/// Why the operator's command did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// It could not be started.
    #[error("cannot run sh: {0}")]
    Spawn(String),
    /// It exited with a failure (the code, or the signal that ended it).
    #[error("the command failed ({0})")]
    Failed(String),
    /// It was still running at the deadline and was stopped.
    #[error("the command did not finish within {0:?} and was stopped")]
    TimedOut(Duration),
    /// The rollout was interrupted while it ran; it was stopped.
    #[error("interrupted while the command ran; it was stopped")]
    Interrupted,
}

/// The step a backend was at when it failed or the rollout was interrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Draining it.
    Drain,
    /// Waiting for its requests in flight to finish.
    WaitDrained,
    /// Running the command.
    Command,
    /// Waiting for it to pass its health check.
    WaitHealthy,
    /// Enabling it.
    Enable,
    /// Watching its traffic.
    Bake,
}

impl Step {
    /// The step's name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Step::Drain => "drain",
            Step::WaitDrained => "wait drained",
            Step::Command => "command",
            Step::WaitHealthy => "wait healthy",
            Step::Enable => "enable",
            Step::Bake => "bake",
        }
    }
}

/// The state lb was left in for a backend, as the report says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Left {
    /// In rotation.
    Enabled,
    /// Drained: out of rotation, still checked.
    Drained,
}

impl Left {
    fn name(self) -> &'static str {
        match self {
            Left::Enabled => "enabled",
            Left::Drained => "drained",
        }
    }
}

/// One side of a bake: its requests, errors and p99 over the bake.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BakeSide {
    /// Requests answered in the bake.
    pub requests: u64,
    /// Of those, errors (5xx, lb's 502/504 included).
    pub errors: u64,
    /// The 99th percentile (a bucket's upper bound), `None` without requests.
    pub p99: Option<Duration>,
}

impl BakeSide {
    fn of(summary: &Summary) -> BakeSide {
        BakeSide {
            requests: summary.requests,
            errors: summary.errors(),
            p99: summary.p99(),
        }
    }
}

impl std::fmt::Display for BakeSide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rate = if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 * 100.0 / self.requests as f64
        };
        write!(
            f,
            "{} requests, {} errors ({rate:.2}%), p99 {}",
            self.requests,
            self.errors,
            self.p99.map_or("-".to_owned(), |p| format!("{p:?}"))
        )
    }
}

/// A bake's judgement with its figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Bake {
    /// The upgraded backend's traffic over the bake.
    pub backend: BakeSide,
    /// The rest of the pool's (the backends not upgraded in the same wave).
    pub rest: BakeSide,
    /// The verdict; not enough data counts as a pass.
    pub verdict: Verdict,
}

impl Bake {
    /// Whether the backend stays: a pass, or too little traffic to judge.
    pub fn passed(&self) -> bool {
        !matches!(self.verdict, Verdict::Fail { .. })
    }

    /// The verdict's name as the report says it.
    pub fn verdict_name(&self) -> &'static str {
        match self.verdict {
            Verdict::Pass => "pass",
            Verdict::Fail { .. } => "fail",
            Verdict::NotEnoughData { .. } => "not enough data",
        }
    }

    /// The failed thresholds with their figures; empty unless failed.
    pub fn reasons(&self) -> Vec<String> {
        match &self.verdict {
            Verdict::Fail { reasons } => reasons.iter().map(ToString::to_string).collect(),
            _ => Vec::new(),
        }
    }
}

impl std::fmt::Display for Bake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: backend {}; rest of the pool {}",
            self.verdict_name(),
            self.backend,
            self.rest
        )?;
        match &self.verdict {
            Verdict::NotEnoughData {
                canary_needs,
                stable_needs,
            } => write!(
                f,
                " (needs {canary_needs} more on the backend and {stable_needs} more on the rest; \
                 counted as a pass: too little traffic is never a failure)"
            ),
            Verdict::Fail { reasons } => {
                for reason in reasons {
                    write!(f, "; {reason}")?;
                }
                Ok(())
            }
            Verdict::Pass => Ok(()),
        }
    }
}

/// How one backend's upgrade ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Its wave never started: the rollout stopped first.
    NotStarted,
    /// Disabled in lb.toml when the rollout began: left alone.
    Skipped,
    /// Upgraded, enabled, and its bake passed (or had too little traffic).
    Upgraded {
        /// The bake's figures and verdict.
        bake: Bake,
    },
    /// A step failed; the backend was left drained (or, when even the drain failed, as it was).
    Failed {
        /// The step that failed.
        step: Step,
        /// Why.
        reason: String,
        /// What lb was left with.
        left: Left,
        /// The bake, when it was the bake that failed.
        bake: Option<Bake>,
    },
    /// The rollout was interrupted during this step; lb was left as it was.
    Interrupted {
        /// The step it was at.
        step: Step,
        /// What lb was left with.
        left: Left,
    },
}

impl Outcome {
    /// The outcome's name in the report.
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::NotStarted => "not started",
            Outcome::Skipped => "skipped (disabled)",
            Outcome::Upgraded { .. } => "upgraded",
            Outcome::Failed { .. } => "failed",
            Outcome::Interrupted { .. } => "interrupted",
        }
    }
}

/// One backend in the report.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendReport {
    /// The backend.
    pub backend: BackendAddr,
    /// Its wave (counted from 1), 0 when skipped.
    pub wave: usize,
    /// Upgraded as a canary.
    pub canary: bool,
    /// How it ended.
    pub outcome: Outcome,
}

/// What the rollout did.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The pool.
    pub pattern: String,
    /// Every backend of the pool, in pool order.
    pub backends: Vec<BackendReport>,
    /// Why the rollout stopped before its end; `None` when every wave ran.
    pub stopped: Option<String>,
}

impl Report {
    /// Backends whose upgrade failed.
    pub fn failures(&self) -> usize {
        self.backends
            .iter()
            .filter(|b| matches!(b.outcome, Outcome::Failed { .. }))
            .count()
    }

    /// Every backend that was not skipped was upgraded.
    pub fn complete(&self) -> bool {
        self.stopped.is_none()
            && self
                .backends
                .iter()
                .all(|b| matches!(b.outcome, Outcome::Upgraded { .. } | Outcome::Skipped))
    }

    /// The report as text: one line per backend, then the totals.
    pub fn render(&self) -> String {
        let mut rows = vec![["BACKEND", "WAVE", "OUTCOME", "DETAIL"]
            .map(String::from)
            .to_vec()];
        for b in &self.backends {
            let detail = match &b.outcome {
                Outcome::Upgraded { bake } => format!("bake {}", bake.verdict_name()),
                Outcome::Failed {
                    step, reason, left, ..
                } => format!("at {}: {reason}; left {}", step.name(), left.name()),
                Outcome::Interrupted { step, left } => {
                    format!("at {}; left {}", step.name(), left.name())
                }
                Outcome::NotStarted | Outcome::Skipped => String::new(),
            };
            let wave = match (b.wave, b.canary) {
                (0, _) => "-".to_owned(),
                (n, true) => format!("{n} (canary)"),
                (n, false) => n.to_string(),
            };
            rows.push(vec![
                b.backend.to_string(),
                wave,
                b.outcome.name().to_owned(),
                detail,
            ]);
        }
        let upgraded = self
            .backends
            .iter()
            .filter(|b| matches!(b.outcome, Outcome::Upgraded { .. }))
            .count();
        let mut out = super::table(&rows);
        let _ = write!(
            out,
            "\npool {}: {upgraded} of {} backends upgraded, {} failed",
            self.pattern,
            self.backends.len(),
            self.failures()
        );
        match &self.stopped {
            Some(why) => {
                let _ = writeln!(out, "; stopped: {why}");
            }
            None => out.push('\n'),
        }
        out
    }

    /// The report as JSON.
    pub fn json(&self) -> serde_json::Value {
        let side = |s: &BakeSide| {
            serde_json::json!({
                "requests": s.requests,
                "errors": s.errors,
                "p99_micros": s.p99.map(|p| u64::try_from(p.as_micros()).unwrap_or(u64::MAX)),
            })
        };
        let bake = |b: &Bake| {
            serde_json::json!({
                "verdict": b.verdict_name(),
                "backend": side(&b.backend),
                "rest": side(&b.rest),
                "reasons": b.reasons(),
            })
        };
        let backends: Vec<serde_json::Value> = self
            .backends
            .iter()
            .map(|b| {
                let mut entry = serde_json::json!({
                    "backend": b.backend.to_string(),
                    "wave": b.wave,
                    "canary": b.canary,
                    "outcome": b.outcome.name(),
                });
                match &b.outcome {
                    Outcome::Upgraded { bake: done } => {
                        entry["bake"] = bake(done);
                        entry["left"] = "enabled".into();
                    }
                    Outcome::Failed {
                        step,
                        reason,
                        left,
                        bake: done,
                    } => {
                        entry["step"] = step.name().into();
                        entry["reason"] = reason.as_str().into();
                        entry["left"] = left.name().into();
                        if let Some(done) = done {
                            entry["bake"] = bake(done);
                        }
                    }
                    Outcome::Interrupted { step, left } => {
                        entry["step"] = step.name().into();
                        entry["left"] = left.name().into();
                    }
                    Outcome::NotStarted | Outcome::Skipped => {}
                }
                entry
            })
            .collect();
        serde_json::json!({
            "pool": self.pattern,
            "complete": self.complete(),
            "stopped": self.stopped,
            "failures": self.failures(),
            "backends": backends,
        })
    }
}

/// The backend a PoolHealth entry names, if it names one this lbctl can address.
pub fn backend_of(health: &proto::BackendHealth) -> Option<BackendAddr> {
    let Some(proto::backend::Backend::IpBackend(ip)) =
        health.backend.as_ref().and_then(|b| b.backend.as_ref())
    else {
        return None;
    };
    let port = u16::try_from(ip.port).ok()?;
    BackendAddr::new(ip.ip.parse().ok()?, port, &ip.url_path).ok()
}

fn find<'a>(
    health: &'a proto::PoolHealth,
    backend: &BackendAddr,
) -> Option<&'a proto::BackendHealth> {
    health
        .backends
        .iter()
        .find(|b| backend_of(b).as_ref() == Some(backend))
}

fn is_healthy(entry: &proto::BackendHealth) -> bool {
    entry.status == proto::BackendStatus::BsHealthy as i32
}

fn in_rotation(entry: &proto::BackendHealth) -> bool {
    is_healthy(entry) && entry.admin_state == proto::AdminState::AsEnabled as i32
}

/// The canary bucket (of [`LATENCY_BOUNDS_MS`]) that holds everything up to `bound_seconds`:
/// the first whose bound is at least it, or the overflow. An upper estimate, the same for both
/// sides of a comparison.
fn canary_bucket(bound_seconds: f64) -> usize {
    let ms = bound_seconds * 1000.0;
    LATENCY_BOUNDS_MS
        .iter()
        .position(|&bound| ms <= bound as f64 + 1e-9)
        .unwrap_or(LATENCY_BUCKETS - 1)
}

/// The traffic between two readings of one backend's counters (`before` may be `None`: zero),
/// as a canary [`Summary`] over `seconds`. A counter that went backwards (the backend was
/// declared afresh in between) counts from zero.
pub fn traffic(
    before: Option<&proto::BackendStats>,
    after: &proto::BackendStats,
    seconds: u64,
) -> Summary {
    let zero = proto::BackendStats::default();
    let before = before.unwrap_or(&zero);
    let reset = after.requests < before.requests;
    let before = if reset { &zero } else { before };
    let delta = |a: u64, b: u64| a.saturating_sub(b);
    let mut summary = Summary {
        seconds,
        requests: delta(after.requests, before.requests),
        ..Summary::default()
    };
    for (i, class) in summary.classes.iter_mut().enumerate() {
        let at = |s: &proto::BackendStats| s.responses_by_class.get(i).copied().unwrap_or(0);
        *class = delta(at(after), at(before));
    }
    for (i, &count) in after.latency_counts.iter().enumerate() {
        let earlier = before.latency_counts.get(i).copied().unwrap_or(0);
        let bucket = after
            .latency_bounds_seconds
            .get(i)
            .map_or(LATENCY_BUCKETS - 1, |&bound| canary_bucket(bound));
        summary.latency[bucket] += delta(count, earlier);
    }
    summary
}

/// Adds `more` into `sum` (the same window).
fn add(sum: &mut Summary, more: &Summary) {
    sum.requests += more.requests;
    for (a, b) in sum.classes.iter_mut().zip(more.classes) {
        *a += b;
    }
    for (a, b) in sum.latency.iter_mut().zip(more.latency) {
        *a += b;
    }
}

/// The bake of `backend` between two readings of the pool: its traffic against that of every
/// other backend not in `wave`.
pub fn judge_bake(
    backend: &BackendAddr,
    wave: &[BackendAddr],
    before: &proto::PoolHealth,
    after: &proto::PoolHealth,
    seconds: u64,
    thresholds: &Thresholds,
) -> Bake {
    let stats_in = |health: &proto::PoolHealth| -> HashMap<BackendAddr, proto::BackendStats> {
        health
            .backends
            .iter()
            .filter_map(|b| Some((backend_of(b)?, b.stats.clone().unwrap_or_default())))
            .collect()
    };
    let (before, after) = (stats_in(before), stats_in(after));
    let mut mine = Summary {
        seconds,
        ..Summary::default()
    };
    let mut rest = mine;
    for (addr, now) in &after {
        let summary = traffic(before.get(addr), now, seconds);
        if addr == backend {
            mine = summary;
        } else if !wave.contains(addr) {
            add(&mut rest, &summary);
        }
    }
    Bake {
        backend: BakeSide::of(&mine),
        rest: BakeSide::of(&rest),
        verdict: judge(&mine, &rest, thresholds),
    }
}

/// Runs the rollout of `settings.pattern` through `control`, until every wave is done, a stop
/// condition is met, or `cancel` (Ctrl-C): then no new backend starts, and those in progress
/// stop where they are. Errors only when the rollout cannot begin (the pool cannot be read or
/// is too small); every later failure is in the report.
pub async fn run<C: Control>(
    control: &C,
    settings: &Settings,
    cancel: &CancellationToken,
) -> Result<Report, ControlError> {
    let health = control.pool_health().await?;
    let mut backends = Vec::new();
    let mut skipped = Vec::new();
    for entry in &health.backends {
        let addr = backend_of(entry).ok_or_else(|| {
            ControlError(format!(
                "pool {} lists a backend lbctl cannot address: {}",
                settings.pattern,
                super::backend_label(entry)
            ))
        })?;
        if entry.admin_state == proto::AdminState::AsDisabled as i32 {
            skipped.push(addr);
        } else {
            backends.push(addr);
        }
    }
    if backends.len() < 2 {
        return Err(ControlError(format!(
            "pool {} has {} backend(s) to upgrade (disabled ones are skipped); a rolling upgrade \
             needs at least two, so one serves while the other is drained",
            settings.pattern,
            backends.len()
        )));
    }
    let plan = waves(backends.len(), settings.canaries, settings.concurrency);
    let mut reports: Vec<BackendReport> = backends
        .iter()
        .map(|b| BackendReport {
            backend: b.clone(),
            wave: 0,
            canary: false,
            outcome: Outcome::NotStarted,
        })
        .collect();
    for (n, wave) in plan.iter().enumerate() {
        for &i in &wave.members {
            reports[i].wave = n + 1;
            reports[i].canary = wave.canary;
        }
    }
    let say_plan = plan
        .iter()
        .map(|w| {
            let names: Vec<String> = w.members.iter().map(|&i| backends[i].to_string()).collect();
            format!(
                "{}{}",
                names.join(" + "),
                if w.canary { " (canary)" } else { "" }
            )
        })
        .collect::<Vec<_>>()
        .join(", then ");
    control.say(&format!(
        "rolling upgrade of pool {}: {say_plan}",
        settings.pattern
    ));
    for addr in &skipped {
        control.say(&format!("{addr}: disabled in lb.toml, skipped"));
    }
    let mut failures = 0;
    let mut stopped = None;
    for wave in &plan {
        if cancel.is_cancelled() {
            stopped = Some("interrupted".to_owned());
            break;
        }
        let members: Vec<BackendAddr> = wave.members.iter().map(|&i| backends[i].clone()).collect();
        let health = control.pool_health().await?;
        let serving = health
            .backends
            .iter()
            .filter(|b| in_rotation(b) && backend_of(b).is_some_and(|a| !members.contains(&a)))
            .count();
        if serving == 0 {
            let names: Vec<String> = members.iter().map(ToString::to_string).collect();
            stopped = Some(format!(
                "draining {} would leave pool {} with no backend in rotation",
                names.join(" and "),
                settings.pattern
            ));
            break;
        }
        // Drained in order, one commit each, before any of them goes on.
        let mut drained = Vec::new();
        for (&i, addr) in wave.members.iter().zip(&members) {
            match control.drain(addr).await {
                Ok(commit) => {
                    control.say(&format!("{addr}: draining{}", super::in_commit(&commit)));
                    drained.push((i, addr));
                }
                Err(error) => {
                    control.say(&format!("{addr}: drain failed: {error}"));
                    reports[i].outcome = Outcome::Failed {
                        step: Step::Drain,
                        reason: error.to_string(),
                        left: Left::Enabled,
                        bake: None,
                    };
                }
            }
        }
        let outcomes = futures_util::future::join_all(
            drained
                .iter()
                .map(|(_, addr)| upgrade(control, settings, addr, &members, cancel)),
        )
        .await;
        for ((i, _), outcome) in drained.iter().zip(outcomes) {
            reports[*i].outcome = outcome;
        }
        let failed: Vec<&BackendReport> = wave
            .members
            .iter()
            .map(|&i| &reports[i])
            .filter(|r| matches!(r.outcome, Outcome::Failed { .. }))
            .collect();
        failures += failed.len();
        if wave.canary {
            if let Some(canary) = failed.first() {
                stopped = Some(format!("canary {} failed", canary.backend));
                break;
            }
        } else if failures > settings.max_failures {
            stopped = Some(format!(
                "{failures} backends failed, more than --max-failures {}",
                settings.max_failures
            ));
            break;
        }
        if cancel.is_cancelled() {
            stopped = Some("interrupted".to_owned());
            break;
        }
    }
    reports.extend(skipped.into_iter().map(|backend| BackendReport {
        backend,
        wave: 0,
        canary: false,
        outcome: Outcome::Skipped,
    }));
    Ok(Report {
        pattern: settings.pattern.clone(),
        backends: reports,
        stopped,
    })
}

/// What a wait loop ended with, short of its condition.
enum Waited {
    TimedOut(String),
    Interrupted,
    Failed(String),
}

/// Polls PoolHealth every [`POLL_INTERVAL`] until `done` holds for `backend`'s entry (answering
/// what it extracts), `deadline` passes, or `cancel`.
async fn wait_for<C: Control, T>(
    control: &C,
    backend: &BackendAddr,
    deadline: Instant,
    cancel: &CancellationToken,
    mut done: impl FnMut(&proto::BackendHealth) -> Result<T, String>,
) -> Result<T, Waited> {
    loop {
        let health = control
            .pool_health()
            .await
            .map_err(|e| Waited::Failed(e.to_string()))?;
        let entry = find(&health, backend)
            .ok_or_else(|| Waited::Failed(format!("{backend} is no longer in the pool")))?;
        let not_yet = match done(entry) {
            Ok(value) => return Ok(value),
            Err(not_yet) => not_yet,
        };
        if Instant::now() >= deadline {
            return Err(Waited::TimedOut(not_yet));
        }
        tokio::select! {
            () = cancel.cancelled() => return Err(Waited::Interrupted),
            () = tokio::time::sleep(POLL_INTERVAL.min(deadline - Instant::now())) => {}
        }
    }
}

/// One drained backend's upgrade: wait drained, command, health, enable, bake.
async fn upgrade<C: Control>(
    control: &C,
    settings: &Settings,
    backend: &BackendAddr,
    wave: &[BackendAddr],
    cancel: &CancellationToken,
) -> Outcome {
    let started = Instant::now();
    let deadline = started + settings.timeout;
    let fail = |step: Step, reason: String| {
        control.say(&format!(
            "{backend}: {} failed: {reason}; left drained",
            step.name()
        ));
        Outcome::Failed {
            step,
            reason,
            left: Left::Drained,
            bake: None,
        }
    };
    let interrupted = |step: Step, left: Left| {
        control.say(&format!(
            "{backend}: interrupted at {}; left {}",
            step.name(),
            left.name()
        ));
        Outcome::Interrupted { step, left }
    };
    let waited = |step: Step, waited: Waited| match waited {
        Waited::Interrupted => interrupted(step, Left::Drained),
        Waited::TimedOut(why) => fail(step, format!("{why} after {:?}", settings.timeout)),
        Waited::Failed(why) => fail(step, why),
    };

    let drained = wait_for(control, backend, deadline, cancel, |entry| {
        if entry.in_flight == 0 {
            Ok(())
        } else {
            Err(format!("still {} request(s) in flight", entry.in_flight))
        }
    })
    .await;
    if let Err(why) = drained {
        return waited(Step::WaitDrained, why);
    }
    control.say(&format!(
        "{backend}: drained (no request in flight) after {:.1}s",
        started.elapsed().as_secs_f64()
    ));

    let remaining = deadline.saturating_duration_since(Instant::now());
    match control.run(backend, remaining, cancel).await {
        Ok(()) => control.say(&format!("{backend}: command succeeded")),
        Err(CommandError::Interrupted) => return interrupted(Step::Command, Left::Drained),
        Err(error) => return fail(Step::Command, error.to_string()),
    }

    // A check that began after the command ended must pass: a status still showing the old
    // process's health proves nothing. Checks of one backend run one after another, so the
    // second pass counted after this reading began after it.
    let mut passed_after = None;
    let healthy = wait_for(control, backend, deadline, cancel, |entry| {
        let passed = entry.stats.as_ref().map_or(0, |s| s.checks_passed);
        let since = *passed_after.get_or_insert(passed);
        if is_healthy(entry) && passed >= since + 2 {
            Ok(())
        } else if is_healthy(entry) {
            Err("no health check passed since the command yet".to_owned())
        } else {
            Err("not healthy".to_owned())
        }
    })
    .await;
    if let Err(why) = healthy {
        return waited(Step::WaitHealthy, why);
    }
    control.say(&format!("{backend}: healthy"));

    let commit = match control.enable(backend).await {
        Ok(commit) => commit,
        Err(error) => return fail(Step::Enable, error.to_string()),
    };
    // The bake's first reading; a failed one leaves nothing to compare, so the backend is
    // judged from zero against the rest from zero (not enough data).
    let before = control.pool_health().await.unwrap_or_default();
    control.say(&format!(
        "{backend}: enabled{}; baking for {:?}",
        super::in_commit(&commit),
        settings.bake
    ));
    tokio::select! {
        () = cancel.cancelled() => return interrupted(Step::Bake, Left::Enabled),
        () = tokio::time::sleep(settings.bake) => {}
    }
    let after = match control.pool_health().await {
        Ok(after) => after,
        Err(error) => return drain_after_bake(control, backend, error.to_string(), None).await,
    };
    if !find(&after, backend).is_some_and(is_healthy) {
        return drain_after_bake(
            control,
            backend,
            "it went sick during the bake".to_owned(),
            None,
        )
        .await;
    }
    let bake = judge_bake(
        backend,
        wave,
        &before,
        &after,
        settings.bake.as_secs().max(1),
        &settings.thresholds,
    );
    control.say(&format!("{backend}: bake {bake}"));
    if bake.passed() {
        Outcome::Upgraded { bake }
    } else {
        let reason = bake.reasons().join("; ");
        drain_after_bake(control, backend, reason, Some(bake)).await
    }
}

/// A backend that failed its bake is drained again.
async fn drain_after_bake<C: Control>(
    control: &C,
    backend: &BackendAddr,
    reason: String,
    bake: Option<Bake>,
) -> Outcome {
    let (left, reason) = match control.drain(backend).await {
        Ok(commit) => {
            control.say(&format!(
                "{backend}: bake failed: {reason}; draining{}",
                super::in_commit(&commit)
            ));
            (Left::Drained, reason)
        }
        Err(error) => {
            control.say(&format!(
                "{backend}: bake failed: {reason}; drain failed too: {error}; left enabled"
            ));
            (Left::Enabled, format!("{reason}; drain failed: {error}"))
        }
    };
    Outcome::Failed {
        step: Step::Bake,
        reason,
        left,
        bake,
    }
}

/// How long a stopped command gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// How long the command's output is still read after it exits: a background process it
/// started may hold its pipes open (it should redirect its own output).
const OUTPUT_GRACE: Duration = Duration::from_secs(1);

/// Runs `command` with `sh -c` in a process group of its own, with `env` added to lbctl's
/// environment. Each line it writes goes to lbctl's stdout or stderr (stdout to stderr when
/// `stdout_to_stderr`, keeping lbctl's stdout for JSON), prefixed with `prefix`. Past `timeout`
/// or on `cancel`, the whole group gets SIGTERM, then SIGKILL after a grace.
pub async fn run_command(
    command: &str,
    env: &[(&str, String)],
    prefix: &str,
    stdout_to_stderr: bool,
    timeout: Duration,
    cancel: &CancellationToken,
) -> Result<(), CommandError> {
    use std::process::Stdio;

    let mut child = tokio::process::Command::new("sh");
    child
        .arg("-c")
        .arg(command)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    #[cfg(unix)]
    child.process_group(0);
    let mut child = child
        .spawn()
        .map_err(|e| CommandError::Spawn(e.to_string()))?;
    let group = child.id();
    let mut readers = Vec::new();
    if let Some(pipe) = child.stdout.take() {
        readers.push(relay(pipe, prefix, stdout_to_stderr));
    }
    if let Some(pipe) = child.stderr.take() {
        readers.push(relay(pipe, prefix, true));
    }
    let stop = tokio::select! {
        status = child.wait() => Ok(status),
        () = tokio::time::sleep(timeout) => Err(CommandError::TimedOut(timeout)),
        () = cancel.cancelled() => Err(CommandError::Interrupted),
    };
    let result = match stop {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(CommandError::Failed(exit_text(status))),
        Ok(Err(error)) => Err(CommandError::Failed(error.to_string())),
        Err(stopped) => {
            signal_group(group, false);
            if tokio::time::timeout(STOP_GRACE, child.wait())
                .await
                .is_err()
            {
                signal_group(group, true);
                let _ = child.wait().await;
            }
            Err(stopped)
        }
    };
    for reader in readers {
        let abort = reader.abort_handle();
        if tokio::time::timeout(OUTPUT_GRACE, reader).await.is_err() {
            abort.abort();
        }
    }
    result
}

/// Copies `pipe`'s lines to lbctl's stderr (or stdout), each after `prefix`.
fn relay(
    pipe: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    prefix: &str,
    to_stderr: bool,
) -> tokio::task::JoinHandle<()> {
    use tokio::io::AsyncBufReadExt;
    let prefix = prefix.to_owned();
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if to_stderr {
                eprintln!("{prefix}{line}");
            } else {
                println!("{prefix}{line}");
            }
        }
    })
}

/// Sends SIGTERM (or SIGKILL) to the process group led by `leader`: the command and whatever
/// it started.
fn signal_group(leader: Option<u32>, kill: bool) {
    #[cfg(unix)]
    if let Some(leader) = leader
        .and_then(|id| i32::try_from(id).ok())
        .and_then(rustix::process::Pid::from_raw)
    {
        let signal = if kill {
            rustix::process::Signal::KILL
        } else {
            rustix::process::Signal::TERM
        };
        // ESRCH: the whole group has already exited.
        let _ = rustix::process::kill_process_group(leader, signal);
    }
    #[cfg(not(unix))]
    let _ = (leader, kill);
}

fn exit_text(status: std::process::ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return format!("killed by signal {signal}");
        }
    }
    match status.code() {
        Some(code) => format!("exit status {code}"),
        None => status.to_string(),
    }
}

#[cfg(test)]
mod tests;
