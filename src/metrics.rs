//! metrics: owns lock-free request statistics and their Prometheus text rendering. Counters live
//! beside the state they describe (per backend, per pool) as atomics, so recording costs the
//! request path a few relaxed increments and no lock. A scrape walks the current topology in a
//! `prometheus_client` [`Collector`] and the crate's Prometheus text encoder writes the
//! exposition. It never decides health or routing.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    prometheus_text, DescriptorEncoder, EncodeGaugeValue, EncodeLabelSet, EncodeMetric,
    MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::topology::{Backend, Topology};

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
    /// TLS handshakes on `listen.https` not finished within `header_timeout`.
    pub tls_handshakes_timed_out: AtomicU64,
    /// TLS handshakes the client closed or reset before they finished.
    pub tls_handshakes_closed: AtomicU64,
    /// TLS handshakes refused for the client's certificate (none, or not from `client_ca`).
    pub tls_handshakes_client_certificate: AtomicU64,
    /// TLS handshakes that failed otherwise: not TLS, nothing in common (versions, suites),
    /// or the client's alert (e.g. it refused lb's certificate).
    pub tls_handshakes_protocol: AtomicU64,
    /// Control-API changes committed to git.
    pub git_commits_ok: AtomicU64,
    /// Control-API changes whose git commit failed.
    pub git_commits_failed: AtomicU64,
}

/// The `Content-Type` of what [`render`] writes: the Prometheus text format, version 0.0.4,
/// which every Prometheus-compatible scraper reads whatever it asks for in `Accept`.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Renders every metric in the Prometheus text format (version 0.0.4): `prometheus_client`'s
/// encoder writes the names, `# HELP`/`# TYPE` lines, label escaping and numbers; [`Scrape`]
/// reads the atomics.
///
/// `certificates` are the served certificates' `(SAN name, notAfter as Unix time)`, one per
/// name, for `lb_tls_certificate_expiry_seconds` (left out without `[tls]`).
pub fn render(
    topology: Arc<Topology>,
    status: Arc<Status>,
    global: Arc<Global>,
    certificates: Vec<(String, i64)>,
) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape {
        topology,
        status,
        global,
        certificates,
    }));
    let mut out = String::new();
    // Writing to a String cannot fail and `Scrape` returns no error of its own.
    let _ = prometheus_text::encode(&mut out, &registry);
    out
}

/// One scrape: the topology, status and counters it reads, encoded on demand. The metric
/// families are declared in `encode`, each by one `encode_descriptor` call (name, help, type)
/// followed by its samples. Counter names omit `_total`: the encoder appends it.
struct Scrape {
    topology: Arc<Topology>,
    status: Arc<Status>,
    global: Arc<Global>,
    certificates: Vec<(String, i64)>,
}

impl std::fmt::Debug for Scrape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scrape")
            .field("generation", &self.topology.generation)
            .finish_non_exhaustive()
    }
}

/// The labels of a per-backend sample.
type BackendLabels<'a> = [(&'static str, &'a str); 2];

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let (topology, status, global) = (&*self.topology, &*self.status, &*self.global);
        let backends: Vec<(BackendLabels, &Backend)> = topology
            .pools
            .iter()
            .flat_map(|pool| {
                pool.backends.iter().map(move |b| {
                    let labels = [("pool", &*pool.pattern), ("backend", b.authority.as_str())];
                    (labels, &**b)
                })
            })
            .collect();

        let mut family = encoder.encode_descriptor(
            "lb_requests",
            "Requests answered, by pool, backend and status code.",
            None,
            MetricType::Counter,
        )?;
        for (labels, b) in &backends {
            for (code, n) in b.stats.codes() {
                counter(&mut family, &(*labels, [("code", code)]), n)?;
            }
        }
        for (code, n) in global.local.codes() {
            let labels = [("pool", ""), ("backend", "")];
            counter(&mut family, &(labels, [("code", code)]), n)?;
        }

        let mut family = encoder.encode_descriptor(
            "lb_request_duration_seconds",
            "Time from request to response head, by pool and backend.",
            None,
            MetricType::Histogram,
        )?;
        for (labels, b) in &backends {
            let buckets: [(f64, u64); BUCKETS.len()] =
                std::array::from_fn(|i| (BUCKETS[i], b.stats.buckets[i].load(Ordering::Relaxed)));
            let sum = b.stats.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
            family
                .encode_family(labels)?
                .encode_histogram::<NoLabelSet>(sum, b.stats.count(), &buckets, None)?;
        }

        let mut family = encoder.encode_descriptor(
            "lb_backend_healthy",
            "Whether the backend is in rotation (1) or not (0).",
            None,
            MetricType::Gauge,
        )?;
        for (labels, b) in &backends {
            gauge(&mut family, labels, u64::from(b.is_healthy()))?;
        }

        let mut family = encoder.encode_descriptor(
            "lb_backend_in_flight",
            "Requests (and upgrade tunnels) open to the backend.",
            None,
            MetricType::Gauge,
        )?;
        for (labels, b) in &backends {
            gauge(&mut family, labels, b.in_flight())?;
        }

        let mut family = encoder.encode_descriptor(
            "lb_health_checks",
            "Active health checks, by pool, backend and result.",
            None,
            MetricType::Counter,
        )?;
        for (labels, b) in &backends {
            for (result, n) in [("pass", &b.checks.passed), ("fail", &b.checks.failed)] {
                let n = n.load(Ordering::Relaxed);
                counter(&mut family, &(*labels, [("result", result)]), n)?;
            }
        }

        let mut family = encoder.encode_descriptor(
            "lb_health_check_duration_seconds",
            "How long the last health check took.",
            None,
            MetricType::Gauge,
        )?;
        for (labels, b) in &backends {
            let seconds = b.checks.last_micros.load(Ordering::Relaxed) as f64 / 1e6;
            gauge(&mut family, labels, seconds)?;
        }

        counters_by(
            &mut encoder,
            (
                "lb_config_reloads",
                "Config applications from the file, by result.",
            ),
            "result",
            [("ok", &global.reloads_ok), ("error", &global.reloads_error)],
        )?;

        let family = encoder.encode_descriptor(
            "lb_config_generation",
            "The generation of the applied config.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(status.generation).encode(family)?;

        let family = encoder.encode_descriptor(
            "lb_config_last_reload_ok",
            "Whether the last reload attempt succeeded.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(u64::from(status.last_error.is_none())).encode(family)?;

        let family = encoder.encode_descriptor(
            "lb_retries",
            "Requests retried on another backend after a failed connect.",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(global.retries.load(Ordering::Relaxed)).encode(family)?;

        let family = encoder.encode_descriptor(
            "lb_passive_ejections",
            "Backends taken out of rotation by a failed connect.",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(global.ejections.load(Ordering::Relaxed)).encode(family)?;

        let family = encoder.encode_descriptor(
            "lb_upgrades_open",
            "Upgrade tunnels (e.g. WebSocket) open now.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(global.upgrades_open.load(Ordering::Relaxed)).encode(family)?;

        counters_by(
            &mut encoder,
            (
                "lb_timeouts",
                "Exchanges and tunnels closed by a timeout after the response head, by kind (read, send, tunnel_idle).",
            ),
            "kind",
            [
                ("read", &global.timeouts_read),
                ("send", &global.timeouts_send),
                ("tunnel_idle", &global.timeouts_tunnel_idle),
            ],
        )?;

        counters_by(
            &mut encoder,
            (
                "lb_tls_handshake_failures",
                "TLS handshakes on listen.https that failed, by reason (timeout, closed, client_certificate, protocol).",
            ),
            "reason",
            [
                ("timeout", &global.tls_handshakes_timed_out),
                ("closed", &global.tls_handshakes_closed),
                ("client_certificate", &global.tls_handshakes_client_certificate),
                ("protocol", &global.tls_handshakes_protocol),
            ],
        )?;

        counters_by(
            &mut encoder,
            (
                "lb_git_commits",
                "Commits of control-API changes ([control] git_commit), by result.",
            ),
            "result",
            [
                ("ok", &global.git_commits_ok),
                ("error", &global.git_commits_failed),
            ],
        )?;

        let family = encoder.encode_descriptor(
            "lb_pools",
            "Pools in the applied config.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(topology.pools.len()).encode(family)?;

        if self.certificates.is_empty() {
            return Ok(());
        }
        // An alert `lb_tls_certificate_expiry_seconds - time() < 14 * 86400` fires before a
        // name lapses.
        let mut family = encoder.encode_descriptor(
            "lb_tls_certificate_expiry_seconds",
            "When each served certificate expires (notAfter, Unix time), by SAN name.",
            None,
            MetricType::Gauge,
        )?;
        for (name, not_after) in &self.certificates {
            gauge(&mut family, &[("name", name.as_str())], *not_after)?;
        }
        Ok(())
    }
}

/// One sample of a counter family.
fn counter(family: &mut MetricEncoder, labels: &impl EncodeLabelSet, value: u64) -> fmt::Result {
    ConstCounter::new(value).encode(family.encode_family(labels)?)
}

/// A counter family with one label, a sample per `(label value, counter)`.
fn counters_by<const N: usize>(
    encoder: &mut DescriptorEncoder,
    (name, help): (&str, &str),
    label: &'static str,
    samples: [(&'static str, &AtomicU64); N],
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, n) in samples {
        counter(&mut family, &[(label, value)], n.load(Ordering::Relaxed))?;
    }
    Ok(())
}

/// One sample of a gauge family.
fn gauge(
    family: &mut MetricEncoder,
    labels: &impl EncodeLabelSet,
    value: impl EncodeGaugeValue,
) -> fmt::Result {
    ConstGauge::new(value).encode(family.encode_family(labels)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PoolType;
    use crate::topology::Pool;

    fn status(generation: u64) -> Arc<Status> {
        Arc::new(Status {
            generation,
            content_hash: String::new(),
            applied_at: std::time::SystemTime::UNIX_EPOCH,
            last_error: None,
        })
    }

    /// One pool (a pattern with characters the format escapes), one backend with two
    /// requests (one past the last bucket) and a passed check; one local 404.
    fn scrape() -> String {
        let backend = Arc::new(Backend::new("127.0.0.1:9001".parse().unwrap(), true));
        backend.stats.record(200, Duration::from_millis(3));
        backend.stats.record(503, Duration::from_secs(20));
        backend.checks.record(true, Duration::from_micros(1500));
        let mut topology = Topology::empty();
        topology.pools.push(Arc::new(Pool {
            pattern: "/a\"b\\c".into(),
            pool_type: PoolType::P2c,
            connect_timeout: Duration::from_secs(1),
            backend_tls: None,
            request_timeout: Duration::from_secs(1),
            retries: 0,
            backends: Box::new([backend]),
        }));
        let global = Global::default();
        global.local.record(404, Duration::from_micros(10));
        global.reloads_ok.fetch_add(1, Ordering::Relaxed);
        global.timeouts_send.fetch_add(2, Ordering::Relaxed);
        render(Arc::new(topology), status(3), Arc::new(global), Vec::new())
    }

    /// Every family, its `# HELP`/`# TYPE` lines, label escaping, cumulative buckets with
    /// `+Inf`, and no OpenMetrics `# EOF`: the 0.0.4 text scrapers and the tests parse.
    #[test]
    fn renders_every_family_in_prometheus_text_format() {
        let expected = r#"# HELP lb_requests_total Requests answered, by pool, backend and status code.
# TYPE lb_requests_total counter
lb_requests_total{pool="/a\"b\\c",backend="127.0.0.1:9001",code="200"} 1
lb_requests_total{pool="/a\"b\\c",backend="127.0.0.1:9001",code="503"} 1
lb_requests_total{pool="",backend="",code="404"} 1
# HELP lb_request_duration_seconds Time from request to response head, by pool and backend.
# TYPE lb_request_duration_seconds histogram
lb_request_duration_seconds_bucket{pool="/a\"b\\c",backend="127.0.0.1:9001",le="0.001"} 0
lb_request_duration_seconds_bucket{pool="/a\"b\\c",backend="127.0.0.1:9001",le="0.0025"} 0
lb_request_duration_seconds_bucket{pool="/a\"b\\c",backend="127.0.0.1:9001",le="0.005"} 1
lb_request_duration_seconds_bucket{pool="/a\"b\\c",backend="127.0.0.1:9001",le="0.01"} 1
lb_request_duration_seconds_bucket{pool="/a\"b\\c",backend="127.0.0.1:9001",le="0.025"} 1
lb_request_duration_seconds_bucket{pool="/a\"b\\c",backend="127.0.0.1:9001",le="0.05"} 1
lb_request_duration_seconds_bucket{pool="/a\"b\\c",backend="127.0.0.1:9001",le="0.1"} 1
lb_request_duration_seconds_bucket{pool="/a\"b\\c",backend="127.0.0.1:9001",le="0.25"} 1
lb_request_duration_seconds_bucket{pool="/a\"b\\c",backend="127.0.0.1:9001",le="0.5"} 1
lb_request_duration_seconds_bucket{pool="/a\"b\\c",backend="127.0.0.1:9001",le="1"} 1
lb_request_duration_seconds_bucket{pool="/a\"b\\c",backend="127.0.0.1:9001",le="2.5"} 1
lb_request_duration_seconds_bucket{pool="/a\"b\\c",backend="127.0.0.1:9001",le="10"} 1
lb_request_duration_seconds_bucket{pool="/a\"b\\c",backend="127.0.0.1:9001",le="+Inf"} 2
lb_request_duration_seconds_sum{pool="/a\"b\\c",backend="127.0.0.1:9001"} 20.003
lb_request_duration_seconds_count{pool="/a\"b\\c",backend="127.0.0.1:9001"} 2
# HELP lb_backend_healthy Whether the backend is in rotation (1) or not (0).
# TYPE lb_backend_healthy gauge
lb_backend_healthy{pool="/a\"b\\c",backend="127.0.0.1:9001"} 1
# HELP lb_backend_in_flight Requests (and upgrade tunnels) open to the backend.
# TYPE lb_backend_in_flight gauge
lb_backend_in_flight{pool="/a\"b\\c",backend="127.0.0.1:9001"} 0
# HELP lb_health_checks_total Active health checks, by pool, backend and result.
# TYPE lb_health_checks_total counter
lb_health_checks_total{pool="/a\"b\\c",backend="127.0.0.1:9001",result="pass"} 1
lb_health_checks_total{pool="/a\"b\\c",backend="127.0.0.1:9001",result="fail"} 0
# HELP lb_health_check_duration_seconds How long the last health check took.
# TYPE lb_health_check_duration_seconds gauge
lb_health_check_duration_seconds{pool="/a\"b\\c",backend="127.0.0.1:9001"} 0.0015
# HELP lb_config_reloads_total Config applications from the file, by result.
# TYPE lb_config_reloads_total counter
lb_config_reloads_total{result="ok"} 1
lb_config_reloads_total{result="error"} 0
# HELP lb_config_generation The generation of the applied config.
# TYPE lb_config_generation gauge
lb_config_generation 3
# HELP lb_config_last_reload_ok Whether the last reload attempt succeeded.
# TYPE lb_config_last_reload_ok gauge
lb_config_last_reload_ok 1
# HELP lb_retries_total Requests retried on another backend after a failed connect.
# TYPE lb_retries_total counter
lb_retries_total 0
# HELP lb_passive_ejections_total Backends taken out of rotation by a failed connect.
# TYPE lb_passive_ejections_total counter
lb_passive_ejections_total 0
# HELP lb_upgrades_open Upgrade tunnels (e.g. WebSocket) open now.
# TYPE lb_upgrades_open gauge
lb_upgrades_open 0
# HELP lb_timeouts_total Exchanges and tunnels closed by a timeout after the response head, by kind (read, send, tunnel_idle).
# TYPE lb_timeouts_total counter
lb_timeouts_total{kind="read"} 0
lb_timeouts_total{kind="send"} 2
lb_timeouts_total{kind="tunnel_idle"} 0
# HELP lb_tls_handshake_failures_total TLS handshakes on listen.https that failed, by reason (timeout, closed, client_certificate, protocol).
# TYPE lb_tls_handshake_failures_total counter
lb_tls_handshake_failures_total{reason="timeout"} 0
lb_tls_handshake_failures_total{reason="closed"} 0
lb_tls_handshake_failures_total{reason="client_certificate"} 0
lb_tls_handshake_failures_total{reason="protocol"} 0
# HELP lb_git_commits_total Commits of control-API changes ([control] git_commit), by result.
# TYPE lb_git_commits_total counter
lb_git_commits_total{result="ok"} 0
lb_git_commits_total{result="error"} 0
# HELP lb_pools Pools in the applied config.
# TYPE lb_pools gauge
lb_pools 1
"#;
        assert_eq!(scrape(), expected);
    }
}
