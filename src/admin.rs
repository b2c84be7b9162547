//! admin: owns the operator-facing listener — `/metrics` (Prometheus), `/healthz`, `/readyz`,
//! `/status.json`, `/history.json` (the last minutes, kept by [`recent`]), the live dashboard
//! at `/`, and `/rollout/windows`, a pool's canary comparison windows as this instance counted
//! them (what a fleet's rollout driver sums). It only reads the topology, health and counters;
//! it never changes them.

pub mod recent;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::TcpListener;

use crate::apply::Applier;
use crate::canary::{self, Side};
use crate::metrics::{self, Global};
use crate::topology::Topology;

const DASHBOARD: &str = include_str!("admin/dashboard.html");

/// What the admin endpoints read.
pub struct Admin {
    /// Source of the applied status, the config path and the topology.
    pub applier: Arc<Applier>,
    /// Process-wide counters for `/metrics`.
    pub global: Arc<Global>,
    /// The `[tls]` certificates, for their names and expiry; `None` without `[tls]`.
    pub certificates: Option<Arc<crate::tls::Store>>,
    /// This instance's name (`lb --instance`).
    pub instance: Arc<str>,
    /// Whether this instance is one of a `[sync]` fleet (a rollout's `driver` applies).
    pub fleet: bool,
    /// The rollout controller's last looks, the fleet's windows included.
    pub looks: Arc<crate::rollout::Looks>,
    /// The last minutes per pool and backend, filled by [`recent::run`].
    pub recent: Arc<recent::Recorder>,
}

/// `GET /rollout/windows?pool=PATTERN&seconds=N`: one pool's windows as this instance counted
/// them, for a fleet's rollout driver to add up.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct WindowsDoc {
    /// The answering instance's name: the driver skips its own.
    pub instance: String,
    /// The pool's pattern.
    pub pool: String,
    /// The window's length, seconds (at most the windows' 300).
    pub seconds: u64,
    /// The stable side over the window.
    pub stable: canary::stats::Summary,
    /// The canary side over the window.
    pub canary: canary::stats::Summary,
}

/// Serves the admin endpoints until `shutdown` resolves.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "admin accept failed");
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let admin = Arc::clone(&admin);
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let admin = Arc::clone(&admin);
                async move { Ok::<_, Infallible>(admin.answer(&request).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

impl Admin {
    async fn answer(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
        }
        match request.uri().path() {
            "/metrics" => {
                let topology = self.applier.topology().load_full();
                let (status, global) = (self.applier.status(), Arc::clone(&self.global));
                let tls = self.certificates.as_ref().map(|store| metrics::TlsMetrics {
                    // Each served certificate's notAfter, by SAN name.
                    certificates: store
                        .certificates()
                        .into_iter()
                        .flat_map(|c| {
                            let not_after = c.not_after_unix;
                            c.names.into_iter().map(move |name| (name, not_after))
                        })
                        .collect(),
                    reload_ok: store.last_failure().is_none(),
                    reload_failures: store.reload_failures(),
                });
                // A scrape of 10,000 backends takes tens of milliseconds of CPU: it runs on the
                // blocking pool so it never holds up a proxy worker.
                let render = move || metrics::render(topology, status, global, tls);
                match tokio::task::spawn_blocking(render).await {
                    Ok(body) => with_type(body, metrics::CONTENT_TYPE),
                    Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "metrics unavailable\n"),
                }
            }
            "/healthz" => text(StatusCode::OK, "ok\n"),
            // Listeners are bound before the admin server starts and the first config is applied
            // at load, so once this answers, lb is ready.
            "/readyz" => {
                if self.applier.status().generation > 0 {
                    text(StatusCode::OK, "ready\n")
                } else {
                    text(StatusCode::SERVICE_UNAVAILABLE, "no config applied yet\n")
                }
            }
            "/status.json" => {
                let topology = self.applier.topology().load();
                let body = serde_json::to_string(&self.status(&topology)).unwrap_or_default();
                with_type(body, "application/json")
            }
            "/history.json" => {
                let seconds = history_seconds(request.uri().query());
                let topology = self.applier.topology().load_full();
                let recent = Arc::clone(&self.recent);
                // Serialising every ring takes a while for thousands of backends: on the
                // blocking pool, as the sampler's writes are.
                let document = move || {
                    serde_json::to_string(&recent.document(&topology, seconds)).unwrap_or_default()
                };
                match tokio::task::spawn_blocking(document).await {
                    Ok(body) => with_type(body, "application/json"),
                    Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "history unavailable\n"),
                }
            }
            "/" => with_type(DASHBOARD.to_owned(), "text/html; charset=utf-8"),
            "/rollout/windows" => self.windows(request.uri().query().unwrap_or_default()),
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    /// `/rollout/windows`: `pool` (percent-encoded) and `seconds` (1 to 300, default 60).
    fn windows(&self, query: &str) -> Response<Full<Bytes>> {
        let (mut pool, mut seconds) = (None, canary::COMPARISON_SECONDS);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match (key, percent_decode(value)) {
                ("pool", Some(value)) => pool = Some(value),
                ("seconds", Some(value)) => match value.parse::<u64>() {
                    Ok(n @ 1..=canary::stats::WINDOW_SECONDS) => seconds = n,
                    _ => {
                        return text(
                            StatusCode::BAD_REQUEST,
                            "seconds must be a whole number from 1 to 300\n",
                        )
                    }
                },
                _ => {
                    return text(
                        StatusCode::BAD_REQUEST,
                        "the query takes pool=PATTERN (percent-encoded) and seconds=N\n",
                    )
                }
            }
        }
        let Some(pool) = pool else {
            return text(StatusCode::BAD_REQUEST, "pool=PATTERN is required\n");
        };
        let topology = self.applier.topology().load();
        if topology.pool(&pool).is_none() {
            return text(StatusCode::NOT_FOUND, "no such pool\n");
        }
        let (stable, canary) = crate::rollout::local_windows(&pool, &topology, seconds);
        let doc = WindowsDoc {
            instance: self.instance.to_string(),
            pool,
            seconds,
            stable,
            canary,
        };
        with_type(
            serde_json::to_string(&doc).unwrap_or_default(),
            "application/json",
        )
    }

    /// The `/status.json` document for `topology`.
    pub fn status(&self, topology: &Topology) -> StatusDoc {
        let me = self.fleet.then_some(&*self.instance);
        let status = self.applier.status();
        let tls_failure = self.certificates.as_ref().and_then(|s| s.last_failure());
        let (rollouts, now) = (self.applier.rollout_pools(), std::time::SystemTime::now());
        let global = &self.global;
        let started = global.started_at.0;
        StatusDoc {
            instance: self.instance.to_string(),
            version: env!("CARGO_PKG_VERSION"),
            started_at_unix: started
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            uptime_seconds: now.duration_since(started).map_or(0, |d| d.as_secs()),
            connections_open: global
                .connections_open
                .load(std::sync::atomic::Ordering::Relaxed),
            listeners: global
                .listeners
                .load()
                .iter()
                .map(|l| ListenerDoc {
                    addr: l.addr.clone(),
                    connections_open: l.open.load(std::sync::atomic::Ordering::Relaxed),
                })
                .collect(),
            config_path: self.applier.path().display().to_string(),
            generation: status.generation,
            content_hash: status.content_hash.clone(),
            applied_at_unix: status
                .applied_at
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            applied_by: status.applied_by.clone(),
            last_error: status.last_error.clone(),
            certificates: self
                .certificates
                .as_ref()
                .map(|store| store.certificates())
                .unwrap_or_default(),
            tls_reload_error: tls_failure.as_ref().map(|f| f.error.clone()),
            tls_reload_failed_since_unix: tls_failure.as_ref().map(|f| f.since_unix),
            sync: self
                .applier
                .metrics()
                .sync
                .load_full()
                .map(|s| crate::metrics::SyncStatus::clone(&s)),
            pools: topology
                .pools
                .iter()
                .map(|pool| {
                    let rollout = rollouts
                        .iter()
                        .find(|p| *p.pattern == *pool.pattern)
                        .and_then(|p| {
                            crate::rollout::status_view(p, topology, &self.looks, me, now)
                        })
                        .map(|view| rollout_doc(&view));
                    let n_healthy = pool.n_healthy();
                    let n_in_rotation = pool.backends.iter().filter(|b| b.in_rotation()).count();
                    PoolDoc {
                        pattern: pool.pattern.to_string(),
                        status: pool_status(pool.backends.len(), n_healthy),
                        state: pool_state(pool.backends.len(), n_healthy, n_in_rotation),
                        healthy: n_healthy,
                        total: pool.backends.len(),
                        canary: pool.canary.as_ref().map(|canary| canary_doc(pool, canary)),
                        rollout,
                        rate_limit: pool.rate_limit.as_ref().map(|limit| RateLimitDoc {
                            requests_per_second: limit.config.requests_per_second.0,
                            burst: limit.config.burst,
                            key: limit.key.to_string(),
                            limited: limit.limited(),
                        }),
                        backends: pool
                            .backends
                            .iter()
                            .enumerate()
                            .map(|(i, b)| backend_doc(b, i < pool.n_stable))
                            .collect(),
                    }
                })
                .collect(),
        }
    }
}

fn backend_doc(b: &crate::topology::Backend, stable: bool) -> BackendDoc {
    let last_check = b.checks.last_at_ms().map(|at| {
        let failure = b.checks.last_failure();
        LastCheckDoc {
            result: if failure.is_some() { "fail" } else { "pass" },
            reason: failure.map(|r| r.to_string()),
            at_unix_ms: at,
            duration_ms: b.checks.last_seconds() * 1000.0,
        }
    });
    BackendDoc {
        side: if stable { "stable" } else { "canary" },
        addr: b.addr.host_port(),
        url_path: b.addr.url_path.clone(),
        healthy: b.is_healthy(),
        ejected: b.is_ejected(),
        admin: b.admin().as_str(),
        in_flight: b.in_flight(),
        requests: b.stats.count(),
        codes: b
            .stats
            .codes()
            .map(|(code, n)| (code.to_string(), n))
            .collect(),
        errors: b.stats.errors(),
        retries: b.retries(),
        ejections: b.ejections(),
        bytes_sent: b.traffic.sent(),
        bytes_received: b.traffic.received(),
        checks_passed: b.checks.passed(),
        checks_failed: b.checks.failed(),
        last_check,
        down_since_unix_ms: b.down_since_ms(),
    }
}

/// `/history.json?seconds=N`: the last N samples (at least 1); all that is kept without it
/// or with a value that is not a number.
fn history_seconds(query: Option<&str>) -> usize {
    query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix("seconds=")?.parse::<usize>().ok())
        .map_or(recent::RING_SECONDS, |n| n.clamp(1, recent::RING_SECONDS))
}

/// `PS_EMPTY` with no backends, `PS_FULL` when all are healthy, else `PS_DEGRADED`.
pub fn pool_status(n_backends: usize, n_healthy: usize) -> &'static str {
    if n_backends == 0 {
        "PS_EMPTY"
    } else if n_healthy == n_backends {
        "PS_FULL"
    } else {
        "PS_DEGRADED"
    }
}

/// What a person reads for a pool: `empty` (no backends), `down` (backends, none in rotation:
/// every request gets 503), `up` (all healthy) or `degraded`. The wire enum has no `down` (the
/// original tool's `PS_DEGRADED` covers it), so this is the human-facing word beside it.
pub fn pool_state(n_backends: usize, n_healthy: usize, n_in_rotation: usize) -> &'static str {
    if n_backends == 0 {
        "empty"
    } else if n_in_rotation == 0 {
        "down"
    } else if n_healthy == n_backends {
        "up"
    } else {
        "degraded"
    }
}

/// The `/status.json` document: what is applied and every pool's health.
#[derive(Serialize)]
pub struct StatusDoc {
    /// This instance's name (`lb --instance`, `LB_INSTANCE`, else the hostname).
    pub instance: String,
    /// lb's version.
    pub version: &'static str,
    /// When this process started, Unix seconds.
    pub started_at_unix: u64,
    /// Seconds since then.
    pub uptime_seconds: u64,
    /// Client connections open now, of `max_connections`.
    pub connections_open: u64,
    /// Each client listener (`listen.http`, then `listen.https`) and its open connections.
    pub listeners: Vec<ListenerDoc>,
    /// The config file lb reads.
    pub config_path: String,
    /// The applied generation.
    pub generation: u64,
    /// SHA-256 of the applied file content, lowercase hex.
    pub content_hash: String,
    /// When it was applied, in seconds since the Unix epoch.
    pub applied_at_unix: u64,
    /// What made the applied generation: `start`, `file` (a save) or the control-API change and
    /// its actor ([`crate::metrics::Status::applied_by`]).
    pub applied_by: String,
    /// The last reload error, until the next successful apply.
    pub last_error: Option<String>,
    /// Each `[tls]` certificate: its file, SAN names, validity and whether it is the default.
    pub certificates: Vec<crate::tls::CertificateInfo>,
    /// Why the last reload of the `[tls]` certificate files was refused (the previous ones are
    /// still served), until one reads good files again; `null` otherwise.
    pub tls_reload_error: Option<String>,
    /// Since when (Unix seconds) that reload has been failing this way.
    pub tls_reload_failed_since_unix: Option<i64>,
    /// `[sync]`: the commit served, the remote head last seen and when; absent without it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync: Option<crate::metrics::SyncStatus>,
    /// In file order.
    pub pools: Vec<PoolDoc>,
}

/// One pool in `/status.json`.
#[derive(Serialize)]
pub struct PoolDoc {
    /// The pool's pattern as written.
    pub pattern: String,
    /// `PS_EMPTY`, `PS_FULL` or `PS_DEGRADED` ([`pool_status`]).
    pub status: &'static str,
    /// `empty`, `up`, `degraded` or `down` ([`pool_state`]): what the dashboard shows.
    pub state: &'static str,
    /// Backends that are healthy.
    pub healthy: usize,
    /// Backends declared.
    pub total: usize,
    /// Stable then canary, each in file order.
    pub backends: Vec<BackendDoc>,
    /// The pool's canary split and both sides' figures; absent without a canary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryDoc>,
    /// The pool's rollout: the step ladder, the verdict on the step so far, what comes next;
    /// absent without `[pools."P".rollout]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutDoc>,
    /// The pool's `rate_limit` and the requests it answered 429; absent without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitDoc>,
}

/// A pool's `rate_limit` in `/status.json`.
#[derive(Serialize)]
pub struct RateLimitDoc {
    /// The rate each key's bucket refills at.
    pub requests_per_second: f64,
    /// Requests a key may make at once beyond the rate.
    pub burst: u32,
    /// `ip` or `header:NAME`.
    pub key: String,
    /// Requests answered 429 (`lb_rate_limited_total`).
    pub limited: u64,
}

/// A pool's rollout in `/status.json`.
#[derive(Serialize)]
pub struct RolloutDoc {
    /// `new`, `running`, `paused`, `aborted` or `done`.
    pub state: &'static str,
    /// The current step, 1-based.
    pub step: usize,
    /// Every step's canary weight.
    pub steps: Vec<u8>,
    /// How long the current step has run, seconds.
    pub in_step_seconds: u64,
    /// The step's minimum length, seconds.
    pub bake_seconds: u64,
    /// `pass`, `fail` or `not enough data`: the step so far.
    pub verdict: &'static str,
    /// A failing verdict's reasons, with figures.
    pub verdict_reasons: Vec<String>,
    /// What lb does next, in words.
    pub next: String,
    /// Why the state is what it is.
    pub reason: Option<String>,
    /// With `[sync]`: the instance that moves the rollout; absent when none has claimed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// The canary's weight the file declares now, percent.
    pub weight_percent: Option<u8>,
    /// On the driver: the peers whose windows are in the verdict, those down and those
    /// unreachable, as of the controller's last look.
    pub peers_summed: Vec<String>,
    /// Peers where nothing listens.
    pub peers_down: Vec<String>,
    /// Peers that did not answer.
    pub peers_unreachable: Vec<String>,
}

fn rollout_doc(view: &crate::rollout::View) -> RolloutDoc {
    use crate::canary::verdict::Verdict;
    let progress = &view.rollout.progress;
    let (verdict, verdict_reasons) = match &view.verdict {
        Verdict::Pass => ("pass", Vec::new()),
        Verdict::Fail { reasons } => ("fail", reasons.iter().map(ToString::to_string).collect()),
        Verdict::NotEnoughData { .. } => ("not enough data", Vec::new()),
    };
    RolloutDoc {
        state: progress
            .state
            .map_or("new", crate::config::RolloutState::as_str),
        step: progress.step,
        steps: view.rollout.steps.clone(),
        in_step_seconds: view.in_step.as_secs(),
        bake_seconds: view.rollout.bake.as_secs(),
        verdict,
        verdict_reasons,
        next: crate::rollout::next_text(view),
        reason: progress.reason.clone(),
        driver: progress.driver.clone(),
        weight_percent: view.weight,
        peers_summed: view.peers.summed.clone(),
        peers_down: view.peers.down_addrs(),
        peers_unreachable: view.peers.unreachable_addrs(),
    }
}

/// A pool's canary in `/status.json`: the split's settings and each side over the last
/// [`canary::COMPARISON_SECONDS`].
#[derive(Serialize)]
pub struct CanaryDoc {
    /// The canary's share of the pool's requests, in percent.
    pub weight_percent: f64,
    /// `cookie:NAME`, `header:NAME`, or absent.
    pub sticky: Option<String>,
    /// The header whose `always` / `never` chooses the side, or absent.
    pub force_header: Option<String>,
    /// The window the sides' figures cover.
    pub window_seconds: u64,
    /// The pool's `backends`.
    pub stable: SideDoc,
    /// The canary's `backends`.
    pub canary: SideDoc,
}

/// One side of a canary split in `/status.json`.
#[derive(Serialize)]
pub struct SideDoc {
    /// Backends on the side.
    pub backends: usize,
    /// Of those, in rotation.
    pub in_rotation: usize,
    /// Requests finished in the window.
    pub requests: u64,
    /// Their errors: backend 5xx and lb's own 502/503/504.
    pub errors: u64,
    /// `errors / requests`; 0 without requests.
    pub error_rate: f64,
    /// Median time to response head, milliseconds; absent with no request in the window.
    pub p50_ms: Option<f64>,
    /// 99th percentile time to response head, milliseconds; absent with no request.
    pub p99_ms: Option<f64>,
    /// Requests meant for this side that went to the other, since the canary was declared.
    pub fell_back: u64,
}

fn canary_doc(pool: &crate::topology::Pool, canary: &crate::topology::Canary) -> CanaryDoc {
    let window = canary::COMPARISON_SECONDS;
    let (stable, canary_summary) = canary.comparison.summaries(window);
    let side = |side: Side, summary: &canary::stats::Summary| {
        let backends = pool.side(side);
        let ms = |d: Option<std::time::Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
        SideDoc {
            backends: backends.len(),
            in_rotation: backends.iter().filter(|b| b.in_rotation()).count(),
            requests: summary.requests,
            errors: summary.errors(),
            error_rate: summary.error_rate(),
            p50_ms: ms(summary.p50()),
            p99_ms: ms(summary.p99()),
            fell_back: canary.comparison.fallbacks(side),
        }
    };
    CanaryDoc {
        weight_percent: f64::from(canary.weight.buckets()) / 100.0,
        sticky: canary.sticky.as_ref().map(ToString::to_string),
        force_header: canary.force_header.as_deref().map(str::to_owned),
        window_seconds: window,
        stable: side(Side::Stable, &stable),
        canary: side(Side::Canary, &canary_summary),
    }
}

/// One client listener in `/status.json`.
#[derive(Serialize)]
pub struct ListenerDoc {
    /// Its bound address.
    pub addr: String,
    /// Client connections it accepted that are open now.
    pub connections_open: u64,
}

/// A backend's last active health check in `/status.json`.
#[derive(Serialize)]
pub struct LastCheckDoc {
    /// `pass` or `fail`.
    pub result: &'static str,
    /// Why it failed; absent when it passed.
    pub reason: Option<String>,
    /// When it ended, Unix milliseconds.
    pub at_unix_ms: u64,
    /// How long it took, milliseconds.
    pub duration_ms: f64,
}

/// One backend in `/status.json`.
#[derive(Serialize)]
pub struct BackendDoc {
    /// `stable`, or `canary` for a backend of the pool's canary.
    pub side: &'static str,
    /// `IP:PORT`.
    pub addr: String,
    /// The path prefixed to each request; empty for none.
    pub url_path: String,
    /// Checks passing and not ejected.
    pub healthy: bool,
    /// `enabled`, `drain` or `disabled`, as declared in lb.toml.
    pub admin: &'static str,
    /// Requests sent to it and not yet finished.
    pub in_flight: u64,
    /// Requests it has answered since lb started.
    pub requests: u64,
    /// Taken out of rotation by a failed connect and not back yet (`healthy` is false then).
    pub ejected: bool,
    /// Those requests by status code (`"0"`: a code outside 100..=599), codes seen only.
    pub codes: std::collections::BTreeMap<String, u64>,
    /// Of those, errors: 5xx (a backend's, or lb's own 502/504 after it failed) and code 0.
    pub errors: u64,
    /// Attempts here that failed and were retried on another backend.
    pub retries: u64,
    /// Times a failed connect took it out of rotation.
    pub ejections: u64,
    /// Bytes lb sent to it on request connections (HTTP bytes; probes not counted).
    pub bytes_sent: u64,
    /// Bytes lb received from it on request connections.
    pub bytes_received: u64,
    /// Active checks passed since it was declared.
    pub checks_passed: u64,
    /// Active checks failed since it was declared.
    pub checks_failed: u64,
    /// The last active check; absent before the first.
    pub last_check: Option<LastCheckDoc>,
    /// Since when it has been out of health (sick or ejected), Unix milliseconds; absent while
    /// healthy.
    pub down_since_unix_ms: Option<u64>,
}

/// Decodes `%XX` escapes and `+` (a space, as forms send it); `None` for a broken escape or
/// text that is not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'%' => {
                let hex = [bytes.next()?, bytes.next()?];
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                let hex = std::str::from_utf8(&hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
}

fn with_type(body: String, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn a_pattern_comes_back_from_its_percent_encoding() {
        assert_eq!(percent_decode("%2F").as_deref(), Some("/"));
        assert_eq!(
            percent_decode("GET+example.com%2Fapi%2F%7Bid%7D").as_deref(),
            Some("GET example.com/api/{id}")
        );
        assert_eq!(percent_decode("%E2%9C%93").as_deref(), Some("\u{2713}"));
        assert_eq!(percent_decode("%2"), None);
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%+1"), None);
        assert_eq!(percent_decode("%FF"), None, "not UTF-8");
    }
}
