//! health: owns active probing and the table of checker tasks, keyed by backend identity. It
//! feeds each [`Backend`] its probe results and closes its expired idle connections; it never
//! selects backends and never touches lb.toml.
//!
//! A check is `GET http://IP:PORT{url_path}` (over TLS, on a new connection, for a pool with
//! `backend_tls`: [`probe_over`]); it passes when, within the pool's `check_timeout`,
//! the status is 2xx and the body with surrounding whitespace trimmed equals one of the healthy
//! values (the original tool's rule; see `judge`). A probe passes when all its pool's checks
//! pass; `rise` and `fall` consecutive probes change a backend's state
//! ([`Backend::record_check`]). A new backend is probed as soon as it is declared and takes
//! traffic only after passing; then each checker probes at its own phase of the interval, so a
//! pool's probes are spread over it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::config::BackendTls;
use crate::config::{AdminState, BackendAddr, HealthCheck, HealthChecks};
use crate::errors::error_chain;
use crate::tls::BackendConnector;
use crate::topology::{Backend, BackendKey, CheckSettings};

/// Health bodies are small; reading more than this is a misconfiguration, not health.
const MAX_BODY: usize = 64 * 1024;

/// Runs every check once against `addr`, each within `checks.timeout`, over TLS through `tls`
/// when the pool has `backend_tls`: each check on a new connection, with the proxy's own client
/// and handshake (`proxy::probe`), so a backend is judged by how it answers lb's requests and a
/// certificate the proxy would refuse makes the backend sick with the same reason. `Err` says
/// why the backend is sick.
pub async fn probe_over(
    addr: SocketAddr,
    checks: &HealthChecks,
    tls: Option<&BackendConnector>,
) -> Result<(), String> {
    for check in &checks.checks {
        probe_one(addr, check, checks.timeout, tls).await?;
    }
    Ok(())
}

async fn probe_one(
    addr: SocketAddr,
    check: &HealthCheck,
    timeout: Duration,
    tls: Option<&BackendConnector>,
) -> Result<(), String> {
    let path = &check.url_path;
    let fetch = crate::proxy::probe(addr, tls, path, MAX_BODY);
    let (status, body) = tokio::time::timeout(timeout, fetch)
        .await
        .map_err(|_| format!("GET {path}: no answer within {timeout:?}"))?
        .map_err(|e| format!("GET {path}: {}", error_chain(&e)))?;
    let status = http::StatusCode::from_u16(status)
        .map_err(|_| format!("GET {path}: answered status {status}"))?;
    judge(check, status, &body)
}

/// The original tool's rule: a check passes when the status is 2xx and the body, with
/// surrounding whitespace trimmed, equals one of the healthy values. A body that merely contains
/// one (`broken` contains `ok`) is not healthy. `Err` says what was expected and what came.
fn judge(check: &HealthCheck, status: http::StatusCode, body: &[u8]) -> Result<(), String> {
    let trimmed = body.trim_ascii();
    let matches = check
        .healthy_values
        .iter()
        .any(|value| value.as_bytes() == trimmed);
    if status.is_success() && matches {
        return Ok(());
    }
    Err(format!(
        "GET {} answered {status} with {}; expected 2xx with a body of {}",
        check.url_path,
        excerpt(body),
        one_of(&check.healthy_values)
    ))
}

/// How much of a failing body a reason shows: enough to recognise it, bounded for logs.
const EXCERPT_CHARS: usize = 80;

/// The body as an escaped, quoted excerpt (control characters and invalid UTF-8 shown as
/// escapes), cut at [`EXCERPT_CHARS`] with the full length noted.
fn excerpt(body: &[u8]) -> String {
    if body.is_empty() {
        return "an empty body".to_owned();
    }
    let text = String::from_utf8_lossy(body);
    let shown: String = text.chars().take(EXCERPT_CHARS).collect();
    if shown.len() < text.len() {
        format!("{shown:?}... ({} bytes)", body.len())
    } else {
        format!("{shown:?}")
    }
}

/// `"ok" or "OK"`, `"ok", "up" or "UP"`.
fn one_of(values: &[String]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
    match quoted.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => "(no value)".to_owned(),
    }
}

/// A health transition, streamed to `WatchHealth` subscribers.
#[derive(Debug, Clone)]
pub struct HealthEvent {
    /// The pool the backend belongs to.
    pub pattern: Arc<str>,
    /// The backend whose health changed.
    pub backend: BackendAddr,
    /// Its health after the transition.
    pub healthy: bool,
    /// Why, e.g. the failing probe's error.
    pub reason: String,
    /// What moved it.
    pub cause: Cause,
    /// When the transition happened.
    pub at: std::time::SystemTime,
}

/// What moved a backend into or out of rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// Its active checks, with `rise` and `fall` applied.
    Check,
    /// Passive health: a request could not connect to it ([`crate::topology::Pool::eject`]).
    Ejection,
    /// Back in rotation through its checks after an ejection.
    Readmission,
    /// Its administrative state changed (drain, enable, disable), by the file or the API.
    Admin,
    /// A reload added it to its pool or removed it from the file.
    Reload,
}

/// Sends one [`HealthEvent`] about `backend` now: its health as it is, or sick when it left
/// its pool (`in_pool` false).
pub fn announce(
    events: &Events,
    pattern: &Arc<str>,
    (backend, in_pool): (&crate::topology::Backend, bool),
    cause: Cause,
    reason: String,
) {
    let _ = events.send(HealthEvent {
        pattern: Arc::clone(pattern),
        backend: backend.addr.clone(),
        healthy: in_pool && backend.is_healthy(),
        reason,
        cause,
        at: std::time::SystemTime::now(),
    });
}

/// Fan-out of health transitions; sending never blocks and nobody listening is fine.
pub type Events = tokio::sync::broadcast::Sender<HealthEvent>;

/// The checker tasks, one per (pool, backend). Lives on the control path, owned by `apply`.
pub struct Checkers {
    /// By pool pattern, then backend: a pool's checkers are reconciled together, so an apply that
    /// changes one pool of thousands touches only that pool's entries.
    pools: HashMap<Arc<str>, HashMap<BackendAddr, Checker>>,
    events: Events,
}

struct Checker {
    backend: Arc<Backend>,
    /// `None` for a disabled backend: kept (with its counters) but not probed.
    settings: Option<Arc<CheckSettings>>,
    /// The admin state at the last reconcile: a backend enabled since is probed at once.
    admin: AdminState,
    /// Wakes the task for a probe now, off its schedule.
    probe_now: Arc<tokio::sync::Notify>,
    task: Option<JoinHandle<()>>,
}

impl Drop for Checker {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// One backend a pool should have checked: its address, its live state and its settings
/// (`None`: disabled, tracked but not probed).
pub type Wanted = (BackendAddr, Arc<Backend>, Option<Arc<CheckSettings>>);

impl Checkers {
    /// No checkers yet; transitions go to `events`.
    pub fn new(events: Events) -> Checkers {
        Checkers {
            pools: HashMap::new(),
            events,
        }
    }

    /// Where health transitions go.
    pub fn events(&self) -> &Events {
        &self.events
    }

    /// The live state of a declared backend, if it is being checked and lb still speaks to it as
    /// `tls` says (its pool's resolved `backend_tls`). When the pool changed that, the backend
    /// gets a new state: it is probed anew the new way, and its old connections (idle, or in
    /// flight on an older snapshot and handed back later) are retired with the old state, so
    /// none made the old way is ever reused.
    pub fn backend_speaking(
        &self,
        key: &BackendKey,
        tls: Option<&BackendTls>,
    ) -> Option<&Arc<Backend>> {
        let checker = self.pools.get(&*key.pattern)?.get(&key.backend)?;
        match &checker.settings {
            Some(settings) if settings.tls.as_deref().map(BackendConnector::settings) != tls => {
                None
            }
            // A disabled backend's connections are closed and it takes no traffic.
            _ => Some(&checker.backend),
        }
    }

    /// The live state of a declared backend, if it is being checked.
    pub fn backend(&self, key: &BackendKey) -> Option<&Arc<Backend>> {
        self.pools
            .get(&*key.pattern)?
            .get(&key.backend)
            .map(|c| &c.backend)
    }

    /// Makes pool `pattern`'s checkers exactly `wanted`: keeps unchanged ones (and their state),
    /// restarts those whose settings changed, starts new ones, stops removed ones.
    pub fn reconcile_pool(&mut self, pattern: &Arc<str>, wanted: Vec<Wanted>) {
        let mut running = self.pools.remove(&**pattern).unwrap_or_default();
        let n_wanted = wanted.len();
        let mut next = HashMap::with_capacity(n_wanted);
        for (rank, (addr, backend, settings)) in wanted.into_iter().enumerate() {
            if let Some(settings) = &settings {
                backend.connections.set_idle_timeout(settings.idle_timeout);
            }
            let admin = backend.admin();
            let checker = match running.remove(&addr) {
                Some(mut c) if c.settings == settings && Arc::ptr_eq(&c.backend, &backend) => {
                    // Re-enabled (from drain): README promises a probe at once, not at its slot
                    // of the interval, so a backend that went sick while drained comes back now.
                    if admin == AdminState::Enabled && c.admin != AdminState::Enabled {
                        c.probe_now.notify_one();
                    }
                    c.admin = admin;
                    c
                }
                previous => {
                    // A new state for the same address: the old one is in no snapshot.
                    if let Some(previous) = &previous {
                        if !Arc::ptr_eq(&previous.backend, &backend) {
                            previous.backend.connections.retire();
                        } else if tls_of(&previous.settings) != tls_of(&settings) {
                            // Its idle connections were opened with the pool's former
                            // `backend_tls` (or none): the next requests connect afresh.
                            backend.connections.close_all();
                        }
                    }
                    let probe_now = Arc::new(tokio::sync::Notify::new());
                    let task = settings.clone().map(|settings| {
                        let key = BackendKey {
                            pattern: Arc::clone(pattern),
                            backend: addr.clone(),
                        };
                        let phase = phase(rank, n_wanted, settings.interval);
                        tokio::spawn(run(
                            key,
                            Arc::clone(&backend),
                            settings,
                            phase,
                            self.events.clone(),
                            Arc::clone(&probe_now),
                        ))
                    });
                    Checker {
                        backend,
                        settings,
                        admin,
                        probe_now,
                        task,
                    }
                }
            };
            next.insert(addr, checker);
        }
        // Whatever is left was removed from the file: its connections close now (a request
        // still in flight may hold its state a while), and dropping aborts its task.
        for (addr, checker) in running {
            checker.backend.connections.retire();
            tracing::info!(pool = %pattern, backend = %addr, "backend removed; checker stopped");
        }
        self.pools.insert(Arc::clone(pattern), next);
    }

    /// Stops the checkers of every pool for which `keep` says no (pools gone from the file).
    pub fn retain_pools(&mut self, keep: impl Fn(&str) -> bool) {
        self.pools.retain(|pattern, checkers| {
            let kept = keep(pattern);
            if !kept {
                for (addr, checker) in checkers.iter() {
                    checker.backend.connections.retire();
                    tracing::info!(pool = %pattern, backend = %addr, "pool removed; checker stopped");
                }
            }
            kept
        });
    }

    /// Backends being probed (disabled ones are tracked but not probed).
    pub fn len(&self) -> usize {
        self.pools
            .values()
            .flat_map(HashMap::values)
            .filter(|c| c.task.is_some())
            .count()
    }

    /// Whether no backend is being probed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The `backend_tls` a checker's settings carry.
fn tls_of(settings: &Option<Arc<CheckSettings>>) -> Option<&BackendConnector> {
    settings.as_ref().and_then(|s| s.tls.as_deref())
}

/// Where in the interval the checker of a pool's `rank`-th of `n_backends` backends probes:
/// spread evenly, so a pool's probes arrive one after another rather than all at the same
/// instant (HAProxy staggers its first checks by server position the same way).
fn phase(rank: usize, n_backends: usize, interval: Duration) -> Duration {
    if n_backends == 0 {
        return Duration::ZERO;
    }
    let nanos = interval.as_nanos() * (rank % n_backends) as u128 / n_backends as u128;
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// Checks one backend every `interval` at `phase` into it, logging each transition. A backend
/// no probe has judged yet is also probed at once, so it takes traffic as soon as it passes;
/// one out of rotation (sick or ejected) is probed every `down_interval`, so it returns soon
/// after it recovers; `probe_now` asks for a probe off schedule. Between probes it closes the
/// backend's expired idle connections.
async fn run(
    key: BackendKey,
    backend: Arc<Backend>,
    settings: Arc<CheckSettings>,
    phase: Duration,
    events: Events,
    probe_now: Arc<tokio::sync::Notify>,
) {
    let start = tokio::time::Instant::now();
    // A backend probed before it was declared (at start, on a reload) is not probed again at
    // once: a zero phase then starts one interval on. An interval of centuries has no instant
    // to add up to: then the phase is skipped.
    let offset = if phase.is_zero() && backend.is_checked() {
        settings.interval
    } else {
        phase
    };
    let first_tick = start.checked_add(offset).unwrap_or(start);
    let mut ticker = tokio::time::interval_at(first_tick, settings.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Idle connections are closed at most an eighth of `idle_timeout` late, by a timer of their
    // own: no probe (the interval may be an hour) and no request needs to come by.
    let sweep_every = (settings.idle_timeout / 8).max(Duration::from_millis(10));
    let mut sweep =
        tokio::time::interval_at(start.checked_add(sweep_every).unwrap_or(start), sweep_every);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The immediate probe of a new backend, unless its phase is zero and the ticker gives it.
    let mut now = !backend.is_checked() && !phase.is_zero();
    // When the last probe ended: a backend out of rotation is probed again `down_interval` on.
    let mut probed_at = start;
    loop {
        if !std::mem::take(&mut now) {
            let down_probe = probed_at
                .checked_add(settings.down_interval)
                .unwrap_or(probed_at);
            // Only when it would come before the regular tick (down_interval < interval).
            let down = backend.is_checked()
                && !backend.is_healthy()
                && settings.down_interval < settings.interval;
            tokio::select! {
                _ = ticker.tick() => {}
                _ = tokio::time::sleep_until(down_probe), if down => {}
                _ = probe_now.notified() => {}
                _ = backend.ejected() => {
                    // A stale wake (the backend came back in between) reports nothing.
                    if backend.is_ejected() {
                        tracing::debug!(pool = %key.pattern, backend = %key.backend, "ejection reported");
                        let _ = events.send(HealthEvent {
                            pattern: Arc::clone(&key.pattern),
                            backend: key.backend.clone(),
                            healthy: false,
                            reason: "ejected: a request could not connect to it".to_owned(),
                            cause: Cause::Ejection,
                            at: std::time::SystemTime::now(),
                        });
                    }
                    continue;
                }
                _ = sweep.tick() => {
                    backend.connections.close_expired();
                    continue;
                }
            }
        }
        let started = std::time::Instant::now();
        let outcome =
            probe_over(backend.addr.addr, &settings.checks, settings.tls.as_deref()).await;
        record(
            &key,
            &backend,
            &settings.checks,
            &outcome,
            started.elapsed(),
            &events,
        );
        probed_at = tokio::time::Instant::now();
    }
}

/// Records one probe of `backend` (the checker's, or the first probe before a snapshot declares
/// it): its counters, its health under `rise` and `fall`, and, when its health changed or this
/// was its first judgement, a log line and a [`HealthEvent`].
pub fn record(
    key: &BackendKey,
    backend: &Backend,
    checks: &HealthChecks,
    outcome: &Result<(), String>,
    took: Duration,
    events: &Events,
) {
    let first = !backend.is_checked();
    let ejected = backend.is_ejected();
    let passed = outcome.is_ok();
    backend.checks.record(passed, took);
    backend
        .checks
        .record_failure(outcome.as_ref().err().map(String::as_str));
    let (was, healthy) = backend.record_check(passed, checks.rise, checks.fall);
    let reason = match outcome {
        Ok(()) if healthy && ejected => {
            tracing::info!(pool = %key.pattern, backend = %key.backend, "backend back in rotation after an ejection");
            Some((
                "passed its health check after an ejection".to_owned(),
                Cause::Readmission,
            ))
        }
        Ok(()) if healthy && (!was || first) => {
            tracing::info!(pool = %key.pattern, backend = %key.backend, "backend healthy");
            Some(("passed its health check".to_owned(), Cause::Check))
        }
        Err(reason) if !healthy && (was || first) => {
            tracing::warn!(pool = %key.pattern, backend = %key.backend, %reason, "backend sick");
            Some((reason.clone(), Cause::Check))
        }
        Err(reason) => {
            tracing::debug!(pool = %key.pattern, backend = %key.backend, %reason, healthy, "check failed");
            None
        }
        Ok(()) => None,
    };
    if let Some((reason, cause)) = reason {
        let _ = events.send(HealthEvent {
            pattern: Arc::clone(&key.pattern),
            backend: key.backend.clone(),
            healthy,
            reason,
            cause,
            at: std::time::SystemTime::now(),
        });
    }
}

#[cfg(test)]
mod tests;
