//! metrics: owns lock-free request statistics and their Prometheus text rendering. Counters live
//! beside the state they describe (per backend, per pool) as atomics, so recording costs the
//! request path a few relaxed increments and no lock; a scrape walks the current topology.
//! It never decides health or routing.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::topology::Topology;

/// What the last reload attempt did: written by `apply`, read by the status APIs and rendered
/// here. It lives here, below `apply`, so that metrics never imports `apply`.
#[derive(Debug, Clone)]
pub struct Status {
    /// The applied generation; 0 before the first load.
    pub generation: u64,
    /// SHA-256 of the applied file content, lowercase hex.
    pub content_hash: String,
    /// When that generation was applied.
    pub applied_at: std::time::SystemTime,
    /// The last reload error (every diagnostic as `PATH:LINE:COL: message`), cleared by the
    /// next successful apply.
    pub last_error: Option<String>,
}

/// Upper bounds (seconds) of the request-duration histogram buckets.
pub const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Status codes 100..=599 each get a counter; anything else is counted as 0 ("other").
const N_CODES: usize = 500;

/// Counts of requests by status code and a latency histogram.
pub struct RequestStats {
    codes: Box<[AtomicU64]>,
    buckets: [AtomicU64; BUCKETS.len()],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Default for RequestStats {
    fn default() -> Self {
        RequestStats {
            codes: (0..=N_CODES).map(|_| AtomicU64::new(0)).collect(),
            buckets: Default::default(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }
}

impl std::fmt::Debug for RequestStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestStats")
            .field("count", &self.count.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl RequestStats {
    /// Records one response: its status and how long until its head was ready.
    pub fn record(&self, code: u16, duration: Duration) {
        let idx = usize::from(code)
            .checked_sub(99)
            .filter(|i| *i <= N_CODES)
            .unwrap_or(0);
        if let Some(counter) = self.codes.get(idx) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        let seconds = duration.as_secs_f64();
        if let Some(bucket) = BUCKETS.iter().position(|b| seconds <= *b) {
            self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        }
        let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// `(code, count)` for every code seen at least once.
    fn codes(&self) -> impl Iterator<Item = (u16, u64)> + '_ {
        self.codes.iter().enumerate().filter_map(|(i, c)| {
            let n = c.load(Ordering::Relaxed);
            let code = if i == 0 { 0 } else { (i + 99) as u16 };
            (n > 0).then_some((code, n))
        })
    }

    /// How many requests are recorded.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// Active health-check outcomes of one backend and how long its last probe took.
#[derive(Debug, Default)]
pub struct CheckStats {
    passed: AtomicU64,
    failed: AtomicU64,
    last_micros: AtomicU64,
}

impl CheckStats {
    /// Counts one probe's outcome and keeps how long it took.
    pub fn record(&self, passed: bool, took: Duration) {
        let counter = if passed { &self.passed } else { &self.failed };
        counter.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.last_micros.store(micros, Ordering::Relaxed);
    }
}

/// Process-wide counters that are not per backend.
#[derive(Default, Debug)]
pub struct Global {
    /// Reloads from the file that applied a new config.
    pub reloads_ok: AtomicU64,
    /// Reloads from the file that failed.
    pub reloads_error: AtomicU64,
    /// Requests answered without a backend (404, 301, 405, 503), by status code.
    pub local: RequestStats,
    /// Requests retried on another backend after a failed attempt.
    pub retries: AtomicU64,
    /// Backends taken out of rotation by a failed connect.
    pub ejections: AtomicU64,
    /// Upgrade tunnels (e.g. WebSocket) open now.
    pub upgrades_open: AtomicU64,
    /// Exchanges and tunnels closed by a timeout after the response head, by `[server]` key.
    pub timeouts_read: AtomicU64,
    /// Closed by `send_timeout`.
    pub timeouts_send: AtomicU64,
    /// Closed by `tunnel_idle_timeout`.
    pub timeouts_tunnel_idle: AtomicU64,
    /// Control-API changes committed to git.
    pub git_commits_ok: AtomicU64,
    /// Control-API changes whose git commit failed.
    pub git_commits_failed: AtomicU64,
}

/// Escapes a label value per the Prometheus text format.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders every metric in Prometheus text exposition format (version 0.0.4).
pub fn render(topology: &Topology, status: &Status, global: &Global) -> String {
    let mut out = String::with_capacity(4096);
    let backends = || {
        topology.pools.iter().flat_map(|pool| {
            let pattern = label(&pool.pattern);
            pool.backends
                .iter()
                .map(move |b| (pattern.clone(), label(&b.addr.host_port()), b))
        })
    };

    out.push_str("# HELP lb_requests_total Requests answered, by pool, backend and status code.\n");
    out.push_str("# TYPE lb_requests_total counter\n");
    for (pool, backend, b) in backends() {
        for (code, n) in b.stats.codes() {
            let _ = writeln!(
                out,
                "lb_requests_total{{pool=\"{pool}\",backend=\"{backend}\",code=\"{code}\"}} {n}"
            );
        }
    }
    for (code, n) in global.local.codes() {
        let _ = writeln!(
            out,
            "lb_requests_total{{pool=\"\",backend=\"\",code=\"{code}\"}} {n}"
        );
    }

    out.push_str("# HELP lb_request_duration_seconds Time from request to response head, by pool and backend.\n");
    out.push_str("# TYPE lb_request_duration_seconds histogram\n");
    for (pool, backend, b) in backends() {
        let mut cumulative = 0;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += b.stats.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "lb_request_duration_seconds_bucket{{pool=\"{pool}\",backend=\"{backend}\",le=\"{bound}\"}} {cumulative}");
        }
        let count = b.stats.count();
        let sum = b.stats.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "lb_request_duration_seconds_bucket{{pool=\"{pool}\",backend=\"{backend}\",le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "lb_request_duration_seconds_sum{{pool=\"{pool}\",backend=\"{backend}\"}} {sum}"
        );
        let _ = writeln!(
            out,
            "lb_request_duration_seconds_count{{pool=\"{pool}\",backend=\"{backend}\"}} {count}"
        );
    }

    out.push_str("# HELP lb_backend_healthy Whether the backend is in rotation (1) or not (0).\n");
    out.push_str("# TYPE lb_backend_healthy gauge\n");
    for (pool, backend, b) in backends() {
        let _ = writeln!(
            out,
            "lb_backend_healthy{{pool=\"{pool}\",backend=\"{backend}\"}} {}",
            u8::from(b.is_healthy())
        );
    }
    out.push_str(
        "# HELP lb_backend_in_flight Requests (and upgrade tunnels) open to the backend.\n",
    );
    out.push_str("# TYPE lb_backend_in_flight gauge\n");
    for (pool, backend, b) in backends() {
        let _ = writeln!(
            out,
            "lb_backend_in_flight{{pool=\"{pool}\",backend=\"{backend}\"}} {}",
            b.in_flight()
        );
    }

    out.push_str(
        "# HELP lb_health_checks_total Active health checks, by pool, backend and result.\n",
    );
    out.push_str("# TYPE lb_health_checks_total counter\n");
    for (pool, backend, b) in backends() {
        for (result, counter) in [("pass", &b.checks.passed), ("fail", &b.checks.failed)] {
            let _ = writeln!(
                out,
                "lb_health_checks_total{{pool=\"{pool}\",backend=\"{backend}\",result=\"{result}\"}} {}",
                counter.load(Ordering::Relaxed)
            );
        }
    }
    out.push_str("# HELP lb_health_check_duration_seconds How long the last health check took.\n");
    out.push_str("# TYPE lb_health_check_duration_seconds gauge\n");
    for (pool, backend, b) in backends() {
        let _ = writeln!(
            out,
            "lb_health_check_duration_seconds{{pool=\"{pool}\",backend=\"{backend}\"}} {}",
            b.checks.last_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
    }

    out.push_str("# HELP lb_config_reloads_total Config applications from the file, by result.\n");
    out.push_str("# TYPE lb_config_reloads_total counter\n");
    let _ = writeln!(
        out,
        "lb_config_reloads_total{{result=\"ok\"}} {}",
        global.reloads_ok.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "lb_config_reloads_total{{result=\"error\"}} {}",
        global.reloads_error.load(Ordering::Relaxed)
    );
    out.push_str("# HELP lb_config_generation The generation of the applied config.\n");
    out.push_str("# TYPE lb_config_generation gauge\n");
    let _ = writeln!(out, "lb_config_generation {}", status.generation);
    out.push_str("# HELP lb_config_last_reload_ok Whether the last reload attempt succeeded.\n");
    out.push_str("# TYPE lb_config_last_reload_ok gauge\n");
    let _ = writeln!(
        out,
        "lb_config_last_reload_ok {}",
        u8::from(status.last_error.is_none())
    );
    out.push_str(
        "# HELP lb_retries_total Requests retried on another backend after a failed connect.\n",
    );
    out.push_str("# TYPE lb_retries_total counter\n");
    let _ = writeln!(
        out,
        "lb_retries_total {}",
        global.retries.load(Ordering::Relaxed)
    );
    out.push_str(
        "# HELP lb_passive_ejections_total Backends taken out of rotation by a failed connect.\n",
    );
    out.push_str("# TYPE lb_passive_ejections_total counter\n");
    let _ = writeln!(
        out,
        "lb_passive_ejections_total {}",
        global.ejections.load(Ordering::Relaxed)
    );
    out.push_str("# HELP lb_upgrades_open Upgrade tunnels (e.g. WebSocket) open now.\n");
    out.push_str("# TYPE lb_upgrades_open gauge\n");
    let _ = writeln!(
        out,
        "lb_upgrades_open {}",
        global.upgrades_open.load(Ordering::Relaxed)
    );
    out.push_str("# HELP lb_timeouts_total Exchanges and tunnels closed by a timeout after the response head, by kind (read, send, tunnel_idle).\n");
    out.push_str("# TYPE lb_timeouts_total counter\n");
    for (kind, counter) in [
        ("read", &global.timeouts_read),
        ("send", &global.timeouts_send),
        ("tunnel_idle", &global.timeouts_tunnel_idle),
    ] {
        let _ = writeln!(
            out,
            "lb_timeouts_total{{kind=\"{kind}\"}} {}",
            counter.load(Ordering::Relaxed)
        );
    }
    out.push_str("# HELP lb_git_commits_total Commits of control-API changes ([control] git_commit), by result.\n");
    out.push_str("# TYPE lb_git_commits_total counter\n");
    let _ = writeln!(
        out,
        "lb_git_commits_total{{result=\"ok\"}} {}",
        global.git_commits_ok.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "lb_git_commits_total{{result=\"error\"}} {}",
        global.git_commits_failed.load(Ordering::Relaxed)
    );
    out.push_str("# HELP lb_pools Pools in the applied config.\n");
    out.push_str("# TYPE lb_pools gauge\n");
    let _ = writeln!(out, "lb_pools {}", topology.pools.len());
    out
}

/// Appends `lb_tls_certificate_expiry_seconds{name}`: for each `(name, notAfter as Unix time)`
/// of the served certificates (one per SAN name), so an alert
/// `lb_tls_certificate_expiry_seconds - time() < 14 * 86400` fires before a name lapses.
pub fn render_certificate_expiry<'a>(
    out: &mut String,
    names: impl Iterator<Item = (&'a str, i64)>,
) {
    out.push_str("# HELP lb_tls_certificate_expiry_seconds When each served certificate expires (notAfter, Unix time), by SAN name.\n");
    out.push_str("# TYPE lb_tls_certificate_expiry_seconds gauge\n");
    for (name, not_after) in names {
        let _ = writeln!(
            out,
            "lb_tls_certificate_expiry_seconds{{name=\"{}\"}} {not_after}",
            label(name)
        );
    }
}
