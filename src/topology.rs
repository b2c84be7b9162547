//! topology: owns the immutable snapshot the request path reads — routes, pools and their
//! backends — behind one `ArcSwap`. It does no I/O and never decides health; it only carries the
//! shared [`Backend`] state that the health checker writes and the balancer reads.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::uri::Authority;

use crate::config::{BackendAddr, HealthCheck, PoolConfig, PoolType};
use crate::metrics::RequestStats;
use crate::proxy::Upstream;
use crate::routing::Router;

/// The handle the proxy and the control API read, and only `apply` stores into.
pub type SharedTopology = Arc<ArcSwap<Topology>>;

/// Everything a request needs, built once per applied config and never mutated.
pub struct Topology {
    /// Counts applied configs; 0 is the empty topology before the first load.
    pub generation: u64,
    pub routes: Router<usize>,
    pub pools: Vec<Pool>,
}

impl Topology {
    pub fn empty() -> Topology {
        Topology {
            generation: 0,
            // An empty route list cannot conflict.
            routes: Router::new(Vec::new()).unwrap_or_else(|_| unreachable!()),
            pools: Vec::new(),
        }
    }

    pub fn pool(&self, pattern: &str) -> Option<&Pool> {
        self.pools.iter().find(|p| &*p.pattern == pattern)
    }
}

/// A pool as the request path sees it.
pub struct Pool {
    pub pattern: Arc<str>,
    pub pool_type: PoolType,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub retries: u32,
    /// In file order. Shared with the health checker, which flips `healthy`.
    pub backends: Box<[Arc<Backend>]>,
    /// The connection pool to backends; shared across pools and topologies (see `Upstream`).
    pub upstream: Upstream,
}

impl Pool {
    pub fn n_healthy(&self) -> usize {
        self.backends.iter().filter(|b| b.is_healthy()).count()
    }
}

/// Health is per (pool, backend): the same address in two pools is checked with each pool's
/// checks and can be healthy in one and sick in the other.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackendKey {
    pub pattern: Arc<str>,
    pub backend: BackendAddr,
}

/// One backend of one pool: its identity plus the live state that outlives any one snapshot.
///
/// The same `Arc<Backend>` is carried into every new topology that still declares it, which is
/// how health, in-flight counts and pooled connections survive reloads.
#[derive(Debug)]
pub struct Backend {
    pub addr: BackendAddr,
    /// `IP:PORT`, precomputed for upstream URIs, logs and labels.
    pub authority: Authority,
    healthy: AtomicBool,
    in_flight: AtomicU64,
    /// Requests answered by this backend; survives reloads with the backend.
    pub stats: RequestStats,
}

impl Backend {
    pub fn new(addr: BackendAddr, healthy: bool) -> Backend {
        let authority = Authority::try_from(addr.addr.to_string())
            .unwrap_or_else(|_| Authority::from_static("invalid"));
        Backend {
            addr,
            authority,
            healthy: AtomicBool::new(healthy),
            in_flight: AtomicU64::new(0),
            stats: RequestStats::default(),
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Returns the previous value, so callers can log transitions only.
    pub fn set_healthy(&self, healthy: bool) -> bool {
        self.healthy.swap(healthy, Ordering::Relaxed)
    }

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

/// Holds one unit of a backend's in-flight count; releases it on drop.
#[derive(Debug)]
pub struct InFlight {
    backend: Arc<Backend>,
}

impl InFlight {
    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.backend.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The health-check settings of a pool; a change restarts that pool's checkers only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckSettings {
    pub interval: Duration,
    pub checks: Vec<HealthCheck>,
}

impl CheckSettings {
    pub fn of(pool: &PoolConfig) -> CheckSettings {
        CheckSettings {
            interval: pool.interval,
            checks: pool.health_checks.clone(),
        }
    }
}
