//! topology: owns the immutable snapshot the request path reads — routes, pools and their
//! backends — behind one `ArcSwap`, and the shared [`Backend`] state that outlives snapshots.
//! It does no I/O and never probes: the health checker feeds it probe results, whose rules
//! (`rise`, `fall`) it applies in [`Backend::record_check`]; the proxy reports failed connects
//! to [`Pool::eject`], which never empties a pool's rotation; `balance` reads the result. It
//! imports only `config`, `routing`, `stats`, `canary`, `rate_limit` and `idle_connections`.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use arc_swap::ArcSwap;
use http::uri::Authority;

use crate::canary::split::Weight;
use crate::canary::{Comparison, Side};
use crate::config::{
    AdminState, BackendAddr, HealthChecks, PoolConfig, PoolType, RateLimitConfig, RateLimitKey,
    Sticky,
};
use crate::idle_connections::IdleConnections;
use crate::rate_limit::Limiter;
use crate::routing::Router;
use crate::stats::{CheckStats, RequestStats, Traffic};
use crate::tls::BackendConnector;

/// The handle the proxy and the control API read, and only `apply` stores into.
pub type SharedTopology = Arc<ArcSwap<Topology>>;

/// Everything a request needs, built once per applied config and never mutated.
pub struct Topology {
    /// Counts applied configs; 0 is the empty topology before the first load.
    pub generation: u64,
    /// Every pool's pattern; the value is the index into `pools`. Shared with the applied
    /// `Config` it was built from.
    pub routes: Arc<Router<usize>>,
    /// Shared with the next snapshot when its config is unchanged, so an apply that changes
    /// one pool of thousands builds one pool.
    pub pools: Vec<Arc<Pool>>,
}

impl Topology {
    /// The topology with no pool, served before the first config is applied.
    pub fn empty() -> Topology {
        Topology {
            generation: 0,
            // An empty route list cannot conflict.
            routes: Arc::new(Router::new(Vec::new()).unwrap_or_else(|_| unreachable!())),
            pools: Vec::new(),
        }
    }

    /// The pool whose pattern is exactly `pattern`.
    pub fn pool(&self, pattern: &str) -> Option<&Pool> {
        self.pools
            .iter()
            .find(|p| &*p.pattern == pattern)
            .map(|p| &**p)
    }
}

/// A pool as the request path sees it.
pub struct Pool {
    /// The pattern as written in the file; the pool's identity.
    pub pattern: Arc<str>,
    /// How a backend is picked.
    pub pool_type: PoolType,
    /// How long connecting to a backend may take.
    pub connect_timeout: Duration,
    /// How long a backend may take to send its response head.
    pub request_timeout: Duration,
    /// How many times a failed connect is retried on another backend.
    pub retries: u32,
    /// `backend_tls`: connections to this pool's backends speak TLS through it.
    pub backend_tls: Option<Arc<BackendConnector>>,
    /// The stable backends, then the canary's, each in file order. Shared with the health
    /// checker, which flips `healthy`.
    pub backends: Box<[Arc<Backend>]>,
    /// How many of `backends` are stable; the rest are the canary's.
    pub n_stable: usize,
    /// `[pools."P".canary]`: how requests split between the two sides.
    pub canary: Option<Canary>,
    /// `rate_limit`: the buckets of the pool's clients; `None` without a limit.
    pub rate_limit: Option<RateLimit>,
}

/// A pool's `rate_limit` as the request path reads it.
pub struct RateLimit {
    /// What a request's bucket is chosen by.
    pub key: RateLimitKey,
    /// The limit as the file has it: a reload keeps `limiter` while it is unchanged.
    pub config: RateLimitConfig,
    /// The buckets, kept across reloads of the pool while the limit is unchanged.
    pub limiter: Arc<Limiter>,
    /// Requests answered 429, for `lb_rate_limited_total`; kept across every reload of a pool
    /// that keeps a limit.
    pub limited: Arc<AtomicU64>,
}

impl RateLimit {
    /// The limit `config` declares, keeping `previous`'s buckets when it declares the same
    /// one, and its count whatever it declared.
    pub fn of(config: &RateLimitConfig, previous: Option<&RateLimit>) -> RateLimit {
        let limiter = previous.filter(|p| p.config == *config).map_or_else(
            || Arc::new(Limiter::new(config.requests_per_second.0, config.burst)),
            |p| Arc::clone(&p.limiter),
        );
        RateLimit {
            key: config.key.clone(),
            config: config.clone(),
            limiter,
            limited: previous.map_or_else(Arc::default, |p| Arc::clone(&p.limited)),
        }
    }

    /// Requests of the pool answered 429.
    pub fn limited(&self) -> u64 {
        self.limited.load(Ordering::Relaxed)
    }
}

/// A pool's canary as the request path reads it.
pub struct Canary {
    /// The canary's share of the pool's requests.
    pub weight: Weight,
    /// What keeps a client on one side.
    pub sticky: Option<Sticky>,
    /// The header (lowercase) whose `always` / `never` chooses the side.
    pub force_header: Option<Box<str>>,
    /// The split counter and both sides' windows; kept across reloads of the pool.
    pub comparison: Arc<Comparison>,
}

impl Pool {
    /// One side's backends: all of them for a pool without a canary's stable side.
    pub fn side(&self, side: Side) -> &[Arc<Backend>] {
        let (stable, canary) = self
            .backends
            .split_at(self.n_stable.min(self.backends.len()));
        match side {
            Side::Stable => stable,
            Side::Canary => canary,
        }
    }

    /// Which side `backend` is on (by identity), or `None` when it is not this pool's.
    pub fn side_of(&self, backend: &Backend) -> Option<Side> {
        let at = self
            .backends
            .iter()
            .position(|b| std::ptr::eq(&**b, backend))?;
        Some(if at < self.n_stable {
            Side::Stable
        } else {
            Side::Canary
        })
    }

    /// How many backends are healthy (checks passing, not ejected).
    pub fn n_healthy(&self) -> usize {
        self.backends.iter().filter(|b| b.is_healthy()).count()
    }

    /// Takes `backend` out of rotation after a failed connect (passive health) unless no other
    /// backend of the pool is in rotation; returns whether it did. A burst of refused connects
    /// (a restart, a full accept queue) then costs the failing requests, never the whole pool: the
    /// last backend in rotation stays until its active checks fail `fall` times, as Envoy's
    /// outlier detection keeps `max_ejection_percent` of a cluster in place.
    ///
    /// Two requests failing at once on the last two backends must not both eject: each marks
    /// its backend first and then looks for another in rotation (sequentially consistent), so
    /// at least one of them sees the other's mark and puts its own backend back.
    pub fn eject(&self, backend: &Backend) -> bool {
        if !backend.in_rotation() || backend.ejected.swap(true, Ordering::SeqCst) {
            return false;
        }
        if self.backends.iter().any(|b| b.in_rotation()) {
            // `rise` passing checks from now on bring it back.
            backend.streak.store(0, Ordering::Relaxed);
            // Once per ejection, never per request: the checker reports it and probes on
            // `down_interval` from now.
            backend.ejections.notify_one();
            backend.ejected_total.fetch_add(1, Ordering::Relaxed);
            backend.note_health();
            return true;
        }
        backend.ejected.store(false, Ordering::SeqCst);
        false
    }
}

/// Health is per (pool, backend): the same address in two pools is checked with each pool's
/// checks and can be healthy in one and sick in the other.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackendKey {
    /// The pool's pattern.
    pub pattern: Arc<str>,
    /// The backend's address within that pool.
    pub backend: BackendAddr,
}

/// One backend of one pool: its identity plus the live state that outlives any one snapshot.
///
/// The same `Arc<Backend>` is carried into every new topology that still declares it, which is
/// how health, in-flight counts and pooled connections survive reloads.
#[derive(Debug)]
pub struct Backend {
    /// The backend as declared.
    pub addr: BackendAddr,
    /// `IP:PORT`, precomputed for upstream URIs, logs and labels.
    pub authority: Authority,
    /// The active checks' verdict, with the pool's `rise` and `fall` applied.
    healthy: AtomicBool,
    /// Taken out of rotation by a failed connect (passive health, [`Pool::eject`]) while the
    /// active checks may still call it healthy; cleared by `rise` passing checks in a row. Kept
    /// apart from `healthy` so an ejection never overwrites the checks' verdict.
    ejected: AtomicBool,
    /// Woken by each ejection, for the backend's checker: it streams the event (`WatchHealth`)
    /// and starts probing on `down_interval`.
    ejections: tokio::sync::Notify,
    /// Ejections since the backend was declared, for `lb_passive_ejections_total`.
    ejected_total: AtomicU64,
    /// Requests whose attempt here failed and went on to another backend, for
    /// `lb_retries_total`.
    retried: AtomicU64,
    /// Since when [`Backend::is_healthy`] has been false, milliseconds since the Unix epoch; 0
    /// while healthy (or never judged). Kept by the writers of health, never by a request.
    down_since_ms: AtomicU64,
    /// Active check results in a row: passes when positive, failures when negative. Written by
    /// the backend's one checker (and reset by an ejection).
    streak: AtomicI32,
    /// Whether the state came from a probe (a check, or the probe that preceded the backend's
    /// declaration). Until then the first check decides it outright, whatever `rise` says, so a
    /// new backend takes traffic as soon as it passes once.
    checked: AtomicBool,
    in_flight: AtomicU64,
    /// The file's administrative state (`AdminState as u8`), updated in place on reload so a
    /// drain takes effect for the next request without a new `Backend`.
    admin: AtomicU8,
    /// Peak-EWMA of response-head latency, for `p2c_ewma` pools.
    pub latency: PeakEwma,
    /// Requests answered by this backend; survives reloads with the backend.
    pub stats: RequestStats,
    /// Active health-check outcomes; survive reloads with the backend.
    pub checks: CheckStats,
    /// Bytes sent to it and received from it on request connections (each connection holds
    /// it too); survive reloads with the backend.
    pub traffic: Arc<Traffic>,
    /// Keep-alive connections waiting for the next request; survive reloads with the backend.
    pub connections: IdleConnections,
}

impl Backend {
    /// `healthy`: a probe has just passed (AddBackend's, say), so the backend takes traffic at
    /// once; `false`: no probe yet, and the first check decides.
    pub fn new(addr: BackendAddr, healthy: bool) -> Backend {
        let authority = Authority::try_from(addr.addr.to_string())
            .unwrap_or_else(|_| Authority::from_static("invalid"));
        Backend {
            addr,
            authority,
            healthy: AtomicBool::new(healthy),
            ejected: AtomicBool::new(false),
            ejections: tokio::sync::Notify::new(),
            ejected_total: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            down_since_ms: AtomicU64::new(0),
            streak: AtomicI32::new(0),
            checked: AtomicBool::new(healthy),
            in_flight: AtomicU64::new(0),
            admin: AtomicU8::new(AdminState::Enabled as u8),
            latency: PeakEwma::default(),
            stats: RequestStats::default(),
            checks: CheckStats::default(),
            traffic: Arc::default(),
            connections: IdleConnections::default(),
        }
    }

    /// What the operator declared about this backend.
    pub fn admin(&self) -> AdminState {
        match self.admin.load(Ordering::Relaxed) {
            x if x == AdminState::Drain as u8 => AdminState::Drain,
            x if x == AdminState::Disabled as u8 => AdminState::Disabled,
            _ => AdminState::Enabled,
        }
    }

    /// Records the operator's declared state; read on the next pick.
    pub fn set_admin(&self, state: AdminState) {
        self.admin.store(state as u8, Ordering::Relaxed);
    }

    /// Whether new requests may be sent here: healthy and not drained or disabled.
    pub fn in_rotation(&self) -> bool {
        self.is_healthy() && self.admin.load(Ordering::Relaxed) == AdminState::Enabled as u8
    }

    /// Healthy by its active checks and not ejected by a failed connect: what the balancer,
    /// the control API and the metrics call healthy.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed) && !self.ejected.load(Ordering::SeqCst)
    }

    /// Taken out of rotation by a failed connect ([`Pool::eject`]) and not back yet.
    pub fn is_ejected(&self) -> bool {
        self.ejected.load(Ordering::SeqCst)
    }

    /// How many times [`Pool::eject`] has taken it out of rotation.
    pub fn ejections(&self) -> u64 {
        self.ejected_total.load(Ordering::Relaxed)
    }

    /// Counts a failed attempt here that was retried on another backend.
    pub fn count_retry(&self) {
        self.retried.fetch_add(1, Ordering::Relaxed);
    }

    /// Attempts here retried on another backend since it was declared.
    pub fn retries(&self) -> u64 {
        self.retried.load(Ordering::Relaxed)
    }

    /// Since when (milliseconds since the Unix epoch) the backend has been out of health: sick
    /// by its checks or ejected; `None` while healthy.
    pub fn down_since_ms(&self) -> Option<u64> {
        Some(self.down_since_ms.load(Ordering::Relaxed)).filter(|ms| *ms > 0)
    }

    /// Keeps `down_since_ms` in step with [`Backend::is_healthy`], after each change of it.
    fn note_health(&self) {
        if self.is_healthy() {
            self.down_since_ms.store(0, Ordering::Relaxed);
        } else if self.down_since_ms.load(Ordering::Relaxed) == 0 {
            self.down_since_ms
                .store(crate::stats::unix_ms(), Ordering::Relaxed);
        }
    }

    /// Completes after the next ejection (or at once when one happened since the last call).
    pub async fn ejected(&self) {
        self.ejections.notified().await;
    }

    /// Sets the state outright, not from a probe (a disabled backend is sick until it passes
    /// again), clearing any ejection: the next probe decides at once, and a checker started
    /// for it probes at once. Returns the previous [`Backend::is_healthy`], so callers can log
    /// transitions.
    pub fn set_healthy(&self, healthy: bool) -> bool {
        let was = self.is_healthy();
        self.healthy.store(healthy, Ordering::Relaxed);
        self.ejected.store(false, Ordering::SeqCst);
        self.streak.store(0, Ordering::Relaxed);
        self.checked.store(false, Ordering::Relaxed);
        self.note_health();
        was
    }

    /// Whether a probe has judged this backend yet (see `checked`).
    pub fn is_checked(&self) -> bool {
        self.checked.load(Ordering::Relaxed)
    }

    /// Records one active check: `fall` failures in a row make a healthy backend sick, `rise`
    /// passes in a row make a sick (or ejected) one healthy; the first check of a backend never
    /// probed decides at once. Returns [`Backend::is_healthy`] before and after.
    pub fn record_check(&self, passed: bool, rise: u32, fall: u32) -> (bool, bool) {
        let was = self.is_healthy();
        let streak = self.streak.load(Ordering::Relaxed);
        let streak = if passed {
            streak.max(0).saturating_add(1)
        } else {
            streak.min(0).saturating_sub(1)
        };
        self.streak.store(streak, Ordering::Relaxed);
        let first = !self.checked.swap(true, Ordering::Relaxed);
        if passed && (first || streak.unsigned_abs() >= rise) {
            self.healthy.store(true, Ordering::Relaxed);
            self.ejected.store(false, Ordering::SeqCst);
        } else if !passed && (first || streak.unsigned_abs() >= fall) {
            self.healthy.store(false, Ordering::Relaxed);
        }
        self.note_health();
        (was, self.is_healthy())
    }

    /// Requests sent here and not yet finished.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a request until the returned guard drops (at response-body end).
    pub fn start_request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            backend: Arc::clone(self),
        }
    }
}

impl Backend {
    /// Peak-EWMA latency weighted by requests in flight, as Finagle and linkerd do: a backend
    /// that is slow *or* busy costs more.
    pub fn ewma_load(&self) -> f64 {
        self.latency.get() * (self.in_flight() as f64 + 1.0)
    }
}

/// Peak-sensitive exponentially weighted moving average of latency (Finagle's `PeakEwma`,
/// linkerd's `PeakEwma`): a sample above the average replaces it at once; below, it decays
/// towards the sample with time constant [`PeakEwma::DECAY`]. Updates are two relaxed atomics;
/// a lost race loses one sample, which an average tolerates.
#[derive(Debug)]
pub struct PeakEwma {
    /// f64 bits, nanoseconds.
    value: AtomicU64,
    /// Nanoseconds since [`PeakEwma::epoch`] of the last update.
    updated: AtomicU64,
}

impl Default for PeakEwma {
    fn default() -> Self {
        PeakEwma {
            // Start at a modest 1 ms so a new backend is neither shunned nor flooded.
            value: AtomicU64::new(1_000_000f64.to_bits()),
            updated: AtomicU64::new(0),
        }
    }
}

impl PeakEwma {
    /// The time constant with which the average decays towards lower samples.
    pub const DECAY: Duration = Duration::from_secs(10);

    fn epoch() -> Instant {
        static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *EPOCH.get_or_init(Instant::now)
    }

    /// The current average, in nanoseconds.
    pub fn get(&self) -> f64 {
        f64::from_bits(self.value.load(Ordering::Relaxed))
    }

    /// Folds one latency sample into the average.
    pub fn observe(&self, sample: Duration) {
        let now = Self::epoch().elapsed().as_nanos() as u64;
        let sample = sample.as_nanos() as f64;
        let previous = self.get();
        let last = self.updated.swap(now, Ordering::Relaxed);
        let next = if sample > previous {
            sample
        } else {
            let elapsed = now.saturating_sub(last) as f64;
            let weight = (-elapsed / Self::DECAY.as_nanos() as f64).exp();
            previous * weight + sample * (1.0 - weight)
        };
        self.value.store(next.to_bits(), Ordering::Relaxed);
    }
}

/// Holds one unit of a backend's in-flight count; releases it on drop.
#[derive(Debug)]
pub struct InFlight {
    backend: Arc<Backend>,
}

impl InFlight {
    /// The backend this request counts against.
    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.backend.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The checker settings of a pool; a change restarts that pool's checkers only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckSettings {
    /// Time between two probes of a backend.
    pub interval: Duration,
    /// Time between two probes of a backend out of rotation (sick or ejected), at most
    /// `interval`.
    pub down_interval: Duration,
    /// What a probe checks and how results change a backend's state.
    pub checks: HealthChecks,
    /// How long the backend's idle connections are kept; the checker closes them on time.
    pub idle_timeout: Duration,
    /// `backend_tls`: probes speak TLS through it, as requests do.
    pub tls: Option<Arc<BackendConnector>>,
}

impl CheckSettings {
    /// The checker settings `pool` declares, with its `backend_tls` built as `tls`.
    pub fn of(pool: &PoolConfig, tls: Option<Arc<BackendConnector>>) -> CheckSettings {
        CheckSettings {
            interval: pool.interval,
            down_interval: pool.down_interval.min(pool.interval),
            checks: pool.health_checks.clone(),
            idle_timeout: pool.idle_timeout,
            tls,
        }
    }
}

#[cfg(test)]
mod tests;
