//! metrics: owns the process-wide counters ([`Global`]), the reload [`Status`] and the Prometheus
//! text rendering of every counter. Counters live beside the state they describe as atomics (the
//! per-backend ones in each `Backend`, typed in `crate::stats`), so recording costs the request
//! path a few relaxed increments and no lock. A scrape walks the current topology in a
//! `prometheus_client` [`Collector`] and the crate's Prometheus text encoder writes the
//! exposition. It never decides health or routing.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    prometheus_text, DescriptorEncoder, EncodeGaugeValue, EncodeLabelSet, EncodeMetric,
    MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::canary::{self, stats::Summary, Side};
use crate::stats::{RequestStats, BUCKETS};
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
    /// What made that generation: `start` (the file as lb started), `file` (a save, seen by the
    /// watcher or the poll), or the control-API change with its actor when the caller sent one
    /// (`AddBackend /api/ 10.0.0.1:80 by alice`). Empty before the first load.
    pub applied_by: String,
    /// The last reload error (every diagnostic as `PATH:LINE:COL: message`), cleared by the
    /// next successful apply.
    pub last_error: Option<String>,
}

/// Process-wide counters that are not per backend.
#[derive(Default, Debug)]
pub struct Global {
    /// Config applications, by what asked for them and result.
    pub reloads: Reloads,
    /// When this process started counting (lb's start), for `process_start_time_seconds`.
    pub started_at: StartedAt,
    /// Requests answered without a backend (404, 301, 405, 503), by status code.
    pub local: RequestStats,
    /// Upgrade tunnels (e.g. WebSocket) open now.
    pub upgrades_open: AtomicU64,
    /// Exchanges and tunnels closed by a timeout after the response head, by `[server]` key.
    pub timeouts_read: AtomicU64,
    /// Closed by `send_timeout`.
    pub timeouts_send: AtomicU64,
    /// Closed by `tunnel_idle_timeout`.
    pub timeouts_tunnel_idle: AtomicU64,
    /// Client connections open now (each holding one of `max_connections`).
    pub connections_open: AtomicU64,
    /// Each client listener (`listen.http`, then every `listen.https`) with its open
    /// connections, set once by `proxy::serve` before it accepts.
    pub listeners: arc_swap::ArcSwap<Box<[ListenerStats]>>,
    /// Idle client connections closed to admit a new one when `max_connections` was spent.
    pub connections_evicted: AtomicU64,
    /// Client connections closed at accept: their address had `max_connections_per_ip` open.
    pub connections_refused_per_ip: AtomicU64,
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
    /// `[sync]`: what this instance serves of its git remote; `None` without `[sync]`. Kept
    /// here (written by `sync`) so `admin`, `control` and the metrics read it without
    /// importing `sync`.
    pub sync: arc_swap::ArcSwapOption<SyncStatus>,
    /// `[sync]` pushes refused because the branch had moved, each redone on the new head.
    pub sync_push_retries: AtomicU64,
}

/// One client listener and what it holds now.
#[derive(Debug)]
pub struct ListenerStats {
    /// Its bound address, the `listener` label.
    pub addr: String,
    /// Client connections it accepted that are open now.
    pub open: AtomicU64,
}

impl Global {
    /// Declares the client listeners, in the order `proxy::serve` indexes them.
    pub fn set_listeners(&self, addrs: impl IntoIterator<Item = String>) {
        let listeners = addrs
            .into_iter()
            .map(|addr| ListenerStats {
                addr,
                open: AtomicU64::new(0),
            })
            .collect();
        self.listeners.store(Arc::new(listeners));
    }
}

/// What asked for a config application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadSource {
    /// A save of lb.toml, seen by the watcher or the poll.
    File,
    /// A control-API change lb wrote itself.
    Api,
    /// The fleet sync fast-forwarding to a commit of the remote (a control-API change with
    /// `[sync]` arrives this way too).
    Sync,
}

impl ReloadSource {
    const ALL: [ReloadSource; 3] = [ReloadSource::File, ReloadSource::Api, ReloadSource::Sync];

    fn as_str(self) -> &'static str {
        match self {
            ReloadSource::File => "file",
            ReloadSource::Api => "api",
            ReloadSource::Sync => "sync",
        }
    }
}

/// Config applications by [`ReloadSource`] and result (`ok`, `error`).
#[derive(Debug, Default)]
pub struct Reloads([[AtomicU64; 2]; 3]);

impl Reloads {
    /// Counts one application that succeeded (`ok`) or was refused.
    pub fn record(&self, source: ReloadSource, ok: bool) {
        self.0[source as usize][usize::from(!ok)].fetch_add(1, Ordering::Relaxed);
    }

    /// The count so far.
    pub fn get(&self, source: ReloadSource, ok: bool) -> u64 {
        self.0[source as usize][usize::from(!ok)].load(Ordering::Relaxed)
    }
}

/// The process's start, taken when its [`Global`] is made (as lb starts).
#[derive(Debug)]
pub struct StartedAt(pub std::time::SystemTime);

impl Default for StartedAt {
    fn default() -> StartedAt {
        StartedAt(std::time::SystemTime::now())
    }
}

/// `[sync]`: the git remote as this instance last saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SyncStatus {
    /// The remote's URL, as `[sync] remote` has it.
    pub remote: String,
    /// The branch followed.
    pub branch: String,
    /// The commit whose lb.toml is the applied config; `None` until one is.
    pub serving_commit: Option<String>,
    /// The remote branch's head at the last successful fetch.
    pub remote_head: Option<String>,
    /// When the last fetch succeeded, in seconds since the Unix epoch.
    pub last_success_unix: Option<u64>,
    /// Why the last fetch or follow failed (unreachable remote, broken commit, diverged
    /// working tree); `None` once one succeeds.
    pub last_error: Option<String>,
}

/// The `Content-Type` of what [`render`] writes: the Prometheus text format, version 0.0.4,
/// which every Prometheus-compatible scraper reads whatever it asks for in `Accept`.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Renders every metric in the Prometheus text format (version 0.0.4): `prometheus_client`'s
/// encoder writes the names, `# HELP`/`# TYPE` lines, label escaping and numbers; [`Scrape`]
/// reads the atomics.
///
/// `tls` is the `[tls]` certificate store as a scrape reads it; `None` without `[tls]`.
pub fn render(
    topology: Arc<Topology>,
    status: Arc<Status>,
    global: Arc<Global>,
    tls: Option<TlsMetrics>,
) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape {
        topology,
        status,
        global,
        tls,
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
    tls: Option<TlsMetrics>,
}

/// What `/metrics` shows of the `[tls]` certificate store.
#[derive(Debug, Clone)]
pub struct TlsMetrics {
    /// The served certificates' `(SAN name, notAfter as Unix time)`, one per name.
    pub certificates: Vec<(String, i64)>,
    /// The last reload of the certificate files succeeded (or none failed since start).
    pub reload_ok: bool,
    /// Reloads of the certificate files refused since start.
    pub reload_failures: u64,
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
            let counts = b.stats.bucket_counts();
            let buckets: [(f64, u64); BUCKETS.len()] =
                std::array::from_fn(|i| (BUCKETS[i], counts[i]));
            family
                .encode_family(labels)?
                .encode_histogram::<NoLabelSet>(
                    b.stats.sum_seconds(),
                    b.stats.count(),
                    &buckets,
                    None,
                )?;
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
            "lb_backend_sent_bytes",
            "Bytes lb sent to the backend on request connections (HTTP bytes; health checks not counted).",
            None,
            MetricType::Counter,
        )?;
        for (labels, b) in &backends {
            counter(&mut family, labels, b.traffic.sent())?;
        }

        let mut family = encoder.encode_descriptor(
            "lb_backend_received_bytes",
            "Bytes lb received from the backend on request connections (HTTP bytes; health checks not counted).",
            None,
            MetricType::Counter,
        )?;
        for (labels, b) in &backends {
            counter(&mut family, labels, b.traffic.received())?;
        }

        let mut family = encoder.encode_descriptor(
            "lb_health_checks",
            "Active health checks, by pool, backend and result.",
            None,
            MetricType::Counter,
        )?;
        for (labels, b) in &backends {
            for (result, n) in [("pass", b.checks.passed()), ("fail", b.checks.failed())] {
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
            gauge(&mut family, labels, b.checks.last_seconds())?;
        }

        let mut family = encoder.encode_descriptor(
            "lb_config_reloads",
            "Config applications, by source (file: a save; api: a control-API change; sync: a commit the fleet sync followed) and result.",
            None,
            MetricType::Counter,
        )?;
        for source in ReloadSource::ALL {
            for (result, ok) in [("ok", true), ("error", false)] {
                let labels = [("source", source.as_str()), ("result", result)];
                counter(&mut family, &labels, global.reloads.get(source, ok))?;
            }
        }

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

        let mut family = encoder.encode_descriptor(
            "lb_retries",
            "Requests retried on another backend after a failed attempt, by the pool and the backend that failed.",
            None,
            MetricType::Counter,
        )?;
        for (labels, b) in &backends {
            counter(&mut family, labels, b.retries())?;
        }

        let mut family = encoder.encode_descriptor(
            "lb_passive_ejections",
            "Times a backend was taken out of rotation by a failed connect, by pool and backend.",
            None,
            MetricType::Counter,
        )?;
        for (labels, b) in &backends {
            counter(&mut family, labels, b.ejections())?;
        }

        let mut family = encoder.encode_descriptor(
            "lb_build",
            "lb's version, as a label; the value is 1.",
            None,
            MetricType::Info,
        )?;
        family.encode_info(&[("version", env!("CARGO_PKG_VERSION"))])?;

        process_metrics(&mut encoder, global)?;

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

        let family = encoder.encode_descriptor(
            "lb_client_connections_open",
            "Client connections open now, of server.max_connections.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(global.connections_open.load(Ordering::Relaxed)).encode(family)?;

        let mut family = encoder.encode_descriptor(
            "lb_listener_connections_open",
            "Client connections open now, by the listener that accepted them.",
            None,
            MetricType::Gauge,
        )?;
        for listener in global.listeners.load().iter() {
            let labels = [("listener", listener.addr.as_str())];
            gauge(&mut family, &labels, listener.open.load(Ordering::Relaxed))?;
        }

        let family = encoder.encode_descriptor(
            "lb_client_connections_evicted",
            "Idle client connections closed to admit a new one when server.max_connections was spent.",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(global.connections_evicted.load(Ordering::Relaxed)).encode(family)?;

        counters_by(
            &mut encoder,
            (
                "lb_client_connections_refused",
                "Client connections closed at accept, by reason (per_ip: server.max_connections_per_ip).",
            ),
            "reason",
            [("per_ip", &global.connections_refused_per_ip)],
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

        if let Some(sync) = global.sync.load_full() {
            let mut family = encoder.encode_descriptor(
                "lb_config_commit_info",
                "The git commit whose lb.toml is applied ([sync]); always 1.",
                None,
                MetricType::Gauge,
            )?;
            if let Some(commit) = &sync.serving_commit {
                gauge(&mut family, &[("commit", commit.as_str())], 1)?;
            }
            let family = encoder.encode_descriptor(
                "lb_sync_last_success_timestamp_seconds",
                "When the last fetch of the [sync] remote succeeded (Unix time; 0 before the first).",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(sync.last_success_unix.unwrap_or(0)).encode(family)?;
            let family = encoder.encode_descriptor(
                "lb_sync_push_retries",
                "Pushes of control-API changes refused because the branch had moved, then redone.",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(global.sync_push_retries.load(Ordering::Relaxed)).encode(family)?;
        }

        encode_canaries(&mut encoder, topology)?;
        encode_rate_limits(&mut encoder, topology)?;

        let family = encoder.encode_descriptor(
            "lb_pools",
            "Pools in the applied config.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(topology.pools.len()).encode(family)?;

        let Some(tls) = &self.tls else {
            return Ok(());
        };
        let family = encoder.encode_descriptor(
            "lb_tls_last_reload_ok",
            "1 when the last reload of the [tls] certificate files succeeded, 0 while a refused one (the previous certificates still served) is not fixed.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(i64::from(tls.reload_ok)).encode(family)?;
        let family = encoder.encode_descriptor(
            "lb_tls_reload_failures",
            "Reloads of the [tls] certificate files refused (a pair that does not match, an expired or unreadable file).",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(tls.reload_failures).encode(family)?;
        // An alert `lb_tls_certificate_expiry_seconds - time() < 14 * 86400` fires before a
        // name lapses.
        let mut family = encoder.encode_descriptor(
            "lb_tls_certificate_expiry_timestamp_seconds",
            "When each served certificate expires (notAfter, Unix time), by SAN name.",
            None,
            MetricType::Gauge,
        )?;
        for (name, not_after) in &tls.certificates {
            gauge(&mut family, &[("name", name.as_str())], *not_after)?;
        }
        // The same, under its former name, for one release (README says so).
        let mut family = encoder.encode_descriptor(
            "lb_tls_certificate_expiry_seconds",
            "Deprecated: lb_tls_certificate_expiry_timestamp_seconds under its former name.",
            None,
            MetricType::Gauge,
        )?;
        for (name, not_after) in &tls.certificates {
            gauge(&mut family, &[("name", name.as_str())], *not_after)?;
        }
        Ok(())
    }
}

/// `lb_rate_limited_total`, for the pools with a `rate_limit`.
fn encode_rate_limits(encoder: &mut DescriptorEncoder, topology: &Topology) -> fmt::Result {
    let mut limited = topology
        .pools
        .iter()
        .filter_map(|pool| Some((&*pool.pattern, pool.rate_limit.as_ref()?.limited())))
        .peekable();
    if limited.peek().is_none() {
        return Ok(());
    }
    let mut family = encoder.encode_descriptor(
        "lb_rate_limited",
        "Requests answered 429 by the pool's rate_limit, by pool.",
        None,
        MetricType::Counter,
    )?;
    for (pool, n) in limited {
        counter(&mut family, &[("pool", pool)], n)?;
    }
    Ok(())
}

/// The canary families, for the pools that have one: the weight, the split's fallbacks, and
/// each side's figures over the last [`canary::COMPARISON_SECONDS`] (gauges: a sliding window
/// goes down as well as up; the per-backend counters above are the running totals).
fn encode_canaries(encoder: &mut DescriptorEncoder, topology: &Topology) -> fmt::Result {
    let canaries: Vec<(&str, &crate::topology::Canary)> = topology
        .pools
        .iter()
        .filter_map(|pool| Some((&*pool.pattern, pool.canary.as_ref()?)))
        .collect();
    if canaries.is_empty() {
        return Ok(());
    }
    let mut family = encoder.encode_descriptor(
        "lb_canary_weight_percent",
        "The canary's share of its pool's requests, in percent.",
        None,
        MetricType::Gauge,
    )?;
    for (pool, c) in &canaries {
        let percent = f64::from(c.weight.buckets()) / 100.0;
        gauge(&mut family, &[("pool", *pool)], percent)?;
    }
    let mut family = encoder.encode_descriptor(
        "lb_canary_fallbacks",
        "Requests the split meant for a side (label side) that went to the other, which alone had a backend in rotation.",
        None,
        MetricType::Counter,
    )?;
    for (pool, c) in &canaries {
        for side in [Side::Stable, Side::Canary] {
            let labels = [("pool", *pool), ("side", side.as_str())];
            counter(&mut family, &labels, c.comparison.fallbacks(side))?;
        }
    }
    let windows: Vec<(&str, [(Side, Summary); 2])> = canaries
        .iter()
        .map(|(pool, c)| {
            let (stable, canary) = c.comparison.summaries(canary::COMPARISON_SECONDS);
            (*pool, [(Side::Stable, stable), (Side::Canary, canary)])
        })
        .collect();
    type Figure = fn(&Summary) -> Option<f64>;
    let families: [(&str, &str, Figure); 4] = [
        (
            "lb_canary_window_requests",
            "Requests each side finished in the comparison window.",
            |s| Some(s.requests as f64),
        ),
        (
            "lb_canary_window_errors",
            "Each side's errors in the comparison window: 5xx from backends and lb's own 502/503/504.",
            |s| Some(s.errors() as f64),
        ),
        (
            "lb_canary_window_p50_seconds",
            "Each side's median time to response head in the comparison window.",
            |s| s.p50().map(|d| d.as_secs_f64()),
        ),
        (
            "lb_canary_window_p99_seconds",
            "Each side's 99th percentile time to response head in the comparison window.",
            |s| s.p99().map(|d| d.as_secs_f64()),
        ),
    ];
    for (name, help, value) in families {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (pool, sides) in &windows {
            for (side, summary) in sides {
                if let Some(v) = value(summary) {
                    gauge(&mut family, &[("pool", *pool), ("side", side.as_str())], v)?;
                }
            }
        }
    }
    Ok(())
}

/// The process metrics every Prometheus client exports, read from `/proc/self` (Linux; a
/// figure that cannot be read is left out): CPU seconds, resident memory, open and allowed file
/// descriptors, and the start time.
fn process_metrics(encoder: &mut DescriptorEncoder, global: &Global) -> fmt::Result {
    // Linux reports CPU time in /proc in USER_HZ ticks, 100 a second on every architecture lb
    // builds for; Prometheus' own procfs library assumes the same.
    const USER_HZ: f64 = 100.0;
    let stat = std::fs::read_to_string("/proc/self/stat").ok();
    // The fields after the command (which may hold spaces), from field 3 (state) on.
    let fields: Vec<&str> = stat
        .as_deref()
        .and_then(|s| s.rsplit_once(')'))
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    // utime and stime are fields 14 and 15: indices 11 and 12 here.
    if let (Some(user), Some(system)) = (ticks(11), ticks(12)) {
        let family = encoder.encode_descriptor(
            "process_cpu_seconds",
            "User and system CPU time spent, in seconds.",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new((user + system) as f64 / USER_HZ).encode(family)?;
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
    if let Some(kib) = rss_kib {
        let family = encoder.encode_descriptor(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(kib.saturating_mul(1024)).encode(family)?;
    }
    if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
        let family = encoder.encode_descriptor(
            "process_open_fds",
            "Open file descriptors.",
            None,
            MetricType::Gauge,
        )?;
        // The directory's own descriptor, open while it is read, is not lb's.
        ConstGauge::new(entries.count().saturating_sub(1) as u64).encode(family)?;
    }
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let max_fds = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(max) = max_fds {
        let family = encoder.encode_descriptor(
            "process_max_fds",
            "The limit on open file descriptors.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(max).encode(family)?;
    }
    let family = encoder.encode_descriptor(
        "process_start_time_seconds",
        "When the process started, in seconds since the Unix epoch.",
        None,
        MetricType::Gauge,
    )?;
    let started = global
        .started_at
        .0
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    ConstGauge::new(started).encode(family)?;
    Ok(())
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
    use std::time::Duration;

    fn status(generation: u64) -> Arc<Status> {
        Arc::new(Status {
            generation,
            content_hash: String::new(),
            applied_by: String::new(),
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
            n_stable: 1,
            canary: None,
            rate_limit: None,
        }));
        let global = Global::default();
        global.local.record(404, Duration::from_micros(10));
        global.reloads.record(ReloadSource::File, true);
        global.timeouts_send.fetch_add(2, Ordering::Relaxed);
        global.set_listeners(["127.0.0.1:8080".to_owned()]);
        render(Arc::new(topology), status(3), Arc::new(global), None)
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
lb_request_duration_seconds_bucket{pool="/a\"b\\c",backend="127.0.0.1:9001",le="0.0001"} 0
lb_request_duration_seconds_bucket{pool="/a\"b\\c",backend="127.0.0.1:9001",le="0.00025"} 0
lb_request_duration_seconds_bucket{pool="/a\"b\\c",backend="127.0.0.1:9001",le="0.0005"} 0
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
lb_request_duration_seconds_bucket{pool="/a\"b\\c",backend="127.0.0.1:9001",le="5"} 1
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
# HELP lb_backend_sent_bytes_total Bytes lb sent to the backend on request connections (HTTP bytes; health checks not counted).
# TYPE lb_backend_sent_bytes_total counter
lb_backend_sent_bytes_total{pool="/a\"b\\c",backend="127.0.0.1:9001"} 0
# HELP lb_backend_received_bytes_total Bytes lb received from the backend on request connections (HTTP bytes; health checks not counted).
# TYPE lb_backend_received_bytes_total counter
lb_backend_received_bytes_total{pool="/a\"b\\c",backend="127.0.0.1:9001"} 0
# HELP lb_health_checks_total Active health checks, by pool, backend and result.
# TYPE lb_health_checks_total counter
lb_health_checks_total{pool="/a\"b\\c",backend="127.0.0.1:9001",result="pass"} 1
lb_health_checks_total{pool="/a\"b\\c",backend="127.0.0.1:9001",result="fail"} 0
# HELP lb_health_check_duration_seconds How long the last health check took.
# TYPE lb_health_check_duration_seconds gauge
lb_health_check_duration_seconds{pool="/a\"b\\c",backend="127.0.0.1:9001"} 0.0015
# HELP lb_config_reloads_total Config applications, by source (file: a save; api: a control-API change; sync: a commit the fleet sync followed) and result.
# TYPE lb_config_reloads_total counter
lb_config_reloads_total{source="file",result="ok"} 1
lb_config_reloads_total{source="file",result="error"} 0
lb_config_reloads_total{source="api",result="ok"} 0
lb_config_reloads_total{source="api",result="error"} 0
lb_config_reloads_total{source="sync",result="ok"} 0
lb_config_reloads_total{source="sync",result="error"} 0
# HELP lb_config_generation The generation of the applied config.
# TYPE lb_config_generation gauge
lb_config_generation 3
# HELP lb_config_last_reload_ok Whether the last reload attempt succeeded.
# TYPE lb_config_last_reload_ok gauge
lb_config_last_reload_ok 1
# HELP lb_retries_total Requests retried on another backend after a failed attempt, by the pool and the backend that failed.
# TYPE lb_retries_total counter
lb_retries_total{pool="/a\"b\\c",backend="127.0.0.1:9001"} 0
# HELP lb_passive_ejections_total Times a backend was taken out of rotation by a failed connect, by pool and backend.
# TYPE lb_passive_ejections_total counter
lb_passive_ejections_total{pool="/a\"b\\c",backend="127.0.0.1:9001"} 0
# HELP lb_build_info lb's version, as a label; the value is 1.
# TYPE lb_build_info gauge
lb_build_info{version="VERSION"} 1
# HELP lb_upgrades_open Upgrade tunnels (e.g. WebSocket) open now.
# TYPE lb_upgrades_open gauge
lb_upgrades_open 0
# HELP lb_timeouts_total Exchanges and tunnels closed by a timeout after the response head, by kind (read, send, tunnel_idle).
# TYPE lb_timeouts_total counter
lb_timeouts_total{kind="read"} 0
lb_timeouts_total{kind="send"} 2
lb_timeouts_total{kind="tunnel_idle"} 0
# HELP lb_client_connections_open Client connections open now, of server.max_connections.
# TYPE lb_client_connections_open gauge
lb_client_connections_open 0
# HELP lb_listener_connections_open Client connections open now, by the listener that accepted them.
# TYPE lb_listener_connections_open gauge
lb_listener_connections_open{listener="127.0.0.1:8080"} 0
# HELP lb_client_connections_evicted_total Idle client connections closed to admit a new one when server.max_connections was spent.
# TYPE lb_client_connections_evicted_total counter
lb_client_connections_evicted_total 0
# HELP lb_client_connections_refused_total Client connections closed at accept, by reason (per_ip: server.max_connections_per_ip).
# TYPE lb_client_connections_refused_total counter
lb_client_connections_refused_total{reason="per_ip"} 0
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
"#
        .replace("VERSION", env!("CARGO_PKG_VERSION"));
        // The process figures vary from run to run: their presence is checked on its own.
        let scraped = scrape();
        let (process, rest): (Vec<&str>, Vec<&str>) = scraped
            .lines()
            .partition(|l| l.starts_with("process_") || l.contains(" process_"));
        assert_eq!(rest.join("\n") + "\n", expected);
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_max_fds ",
            "process_start_time_seconds ",
        ] {
            assert!(
                process.iter().any(|l| l.starts_with(name)),
                "{name} in {process:?}"
            );
        }
    }
}
