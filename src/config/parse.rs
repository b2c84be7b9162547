//! Text -> [`Config`]: serde for shape (unknown keys, types), then semantic validation that keeps
//! each value's span so every error can point at `LINE:COL`.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::duration::parse_duration;
use super::model::*;
use crate::routing::{Pattern, Router};

/// One problem in a config file, with its 1-based position when one applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// 1-based line and column; `None` for a problem of the file as a whole.
    pub position: Option<(usize, usize)>,
    /// What is wrong, and what to write instead.
    pub message: String,
}

impl Diagnostic {
    fn at(text: &str, span: Option<Range<usize>>, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            position: span.map(|s| line_col(text, s.start)),
            message: message.into(),
        }
    }

    /// `PATH:LINE:COL: message`, or `PATH: message` without a position.
    pub fn display_with<'a>(&'a self, path: &'a Path) -> impl fmt::Display + 'a {
        DisplayWith {
            diagnostic: self,
            path,
        }
    }
}

struct DisplayWith<'a> {
    diagnostic: &'a Diagnostic,
    path: &'a Path,
}

impl fmt::Display for DisplayWith<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.display();
        match self.diagnostic.position {
            Some((line, col)) => write!(f, "{path}:{line}:{col}: {}", self.diagnostic.message),
            None => write!(f, "{path}: {}", self.diagnostic.message),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, col)) => write!(f, "{line}:{col}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, col)
}

// === raw shape, as serde sees it ===

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    allow_empty: bool,
    #[serde(default)]
    listen: RawListen,
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    control: RawControl,
    #[serde(default)]
    log: RawLog,
    sync: Option<Spanned<RawSync>>,
    tls: Option<Spanned<RawTls>>,
    #[serde(default)]
    pools: BTreeMap<Spanned<String>, RawPool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawListen {
    http: Option<Spanned<String>>,
    grpc: Option<Spanned<String>>,
    admin: Option<Spanned<String>>,
    https: Option<Spanned<RawAddrs>>,
    redirect_https: Option<Spanned<bool>>,
}

/// `"IP:PORT"` or `["IP:PORT", ...]`.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawAddrs {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    certificates: Option<Spanned<Vec<Spanned<RawCertificate>>>>,
    min_version: Option<Spanned<String>>,
    unknown_sni: Option<Spanned<String>>,
    client_ca: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCertificate {
    cert: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
    default: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackendTls {
    ca: Option<Spanned<String>>,
    server_name: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    header_timeout: Option<Spanned<String>>,
    drain_timeout: Option<Spanned<String>>,
    idle_timeout: Option<Spanned<String>>,
    read_timeout: Option<Spanned<String>>,
    send_timeout: Option<Spanned<String>>,
    tunnel_idle_timeout: Option<Spanned<String>>,
    max_connections: Option<Spanned<i64>>,
    max_connections_per_ip: Option<Spanned<i64>>,
    workers: Option<Spanned<i64>>,
    trusted_proxies: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLog {
    access: Option<Spanned<String>>,
    format: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawControl {
    token_file: Option<Spanned<String>>,
    #[serde(default)]
    git_commit: bool,
    tls_cert: Option<Spanned<String>>,
    tls_key: Option<Spanned<String>>,
    client_ca: Option<Spanned<String>>,
    #[serde(default)]
    read_only: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSync {
    remote: Option<Spanned<String>>,
    branch: Option<Spanned<String>>,
    interval: Option<Spanned<String>>,
    author: Option<Spanned<String>>,
    peers: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPool {
    #[serde(rename = "type")]
    pool_type: Option<Spanned<String>>,
    interval: Option<Spanned<String>>,
    down_interval: Option<Spanned<String>>,
    health_checks: Option<Spanned<Vec<Spanned<RawHealthCheck>>>>,
    check_timeout: Option<Spanned<String>>,
    rise: Option<Spanned<i64>>,
    fall: Option<Spanned<i64>>,
    backends: Option<Spanned<Vec<Spanned<RawBackend>>>>,
    connect_timeout: Option<Spanned<String>>,
    request_timeout: Option<Spanned<String>>,
    retries: Option<Spanned<i64>>,
    idle_timeout: Option<Spanned<String>>,
    backend_tls: Option<Spanned<RawBackendTls>>,
    canary: Option<Spanned<RawCanary>>,
    rollout: Option<Spanned<RawRollout>>,
    rate_limit: Option<Spanned<RawRateLimit>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    requests_per_second: Option<Spanned<f64>>,
    burst: Option<Spanned<i64>>,
    key: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRollout {
    steps: Option<Spanned<Vec<Spanned<i64>>>>,
    bake: Option<Spanned<String>>,
    min_requests: Option<Spanned<i64>>,
    max_error_rate: Option<Spanned<f64>>,
    max_error_increase: Option<Spanned<f64>>,
    max_p99_ratio: Option<Spanned<f64>>,
    on_failure: Option<Spanned<String>>,
    on_success: Option<Spanned<String>>,
    state: Option<Spanned<String>>,
    step: Option<Spanned<i64>>,
    step_started: Option<Spanned<String>>,
    reason: Option<Spanned<String>>,
    driver: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCanary {
    backends: Option<Spanned<Vec<Spanned<RawBackend>>>>,
    weight: Option<Spanned<i64>>,
    sticky: Option<Spanned<String>>,
    force_header: Option<Spanned<String>>,
}

/// `"IP:PORT[/path]"` or `{ addr = "IP:PORT[/path]", state = "drain" }`.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawBackend {
    Plain(String),
    Table(RawBackendTable),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackendTable {
    addr: String,
    #[serde(default)]
    state: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealthCheck {
    url_path: Option<Spanned<String>>,
    healthy_values: Option<Spanned<Vec<String>>>,
}

/// Every key path the parser accepts, dotted (`listen.http`, `pools.*.backend_tls.ca`; `*` is a
/// pool's pattern, an array's elements share its path), read off the types above.
pub fn key_paths() -> Vec<String> {
    let mut paths = super::keys::field_paths::<RawConfig>("");
    // An untagged enum hides its table form from the trace: a backend entry's keys.
    paths.extend(super::keys::field_paths::<RawBackendTable>(
        "pools.*.backends",
    ));
    paths.extend(super::keys::field_paths::<RawBackendTable>(
        "pools.*.canary.backends",
    ));
    paths
}

// === validation ===

/// Parses and validates lb.toml text, reporting every problem found (not just the first).
pub fn parse(text: &str) -> Result<Config, Vec<Diagnostic>> {
    parse_with_spans(text).map(|(config, _)| config)
}

/// Where each pool's `backends` array is in the text it was parsed from, in `Config::pools`
/// order: `None` for a pool without the key. A backend edit uses it to find the array without
/// parsing the whole file again.
pub type BackendsSpans = Vec<Option<Range<usize>>>;

/// [`parse`], also saying where each pool's `backends` array is.
pub fn parse_with_spans(text: &str) -> Result<(Config, BackendsSpans), Vec<Diagnostic>> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        vec![Diagnostic::at(
            text,
            e.span(),
            e.message().trim().to_owned(),
        )]
    })?;
    let mut v = Validator {
        text,
        diagnostics: Vec::new(),
        backends_spans: Vec::new(),
    };
    let config = v.config(raw);
    match config {
        Some(config)
            if v.diagnostics.is_empty() && v.backends_spans.len() == config.pools.len() =>
        {
            Ok((config, v.backends_spans))
        }
        _ => {
            v.diagnostics.sort_by_key(|d| d.position);
            Err(v.diagnostics)
        }
    }
}

/// Why `config` must not replace a running one: it has no pools and does not say
/// `allow_empty = true`. An empty or truncated save is valid TOML with no pools, and applying
/// it would answer 404 to every request; reported like a broken save, at 1:1.
pub fn refuse_empty(config: &Config) -> Option<Diagnostic> {
    (config.pools.is_empty() && !config.allow_empty).then(|| Diagnostic {
        position: Some((1, 1)),
        message:
            "no pools: applying this file would remove every pool (an empty or truncated \
                  save?); if that is meant, say so with `allow_empty = true` at the top of the file"
                .to_owned(),
    })
}

/// A lone `backends = [...]` line, for [`reparse_backends`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackends {
    backends: Spanned<Vec<Spanned<RawBackend>>>,
}

/// What [`parse`] returns for `new_text`, computed from `old` without parsing the whole text,
/// when `new_text` is `old_text` with only pool `pattern`'s `backends` array (at `old_span`
/// in `old_text`) replaced, and `old` is what `parse(old_text)` returned (its paths may be
/// resolved: they are re-resolved the same way; its routes are rebuilt).
///
/// Why it is the same config: the bytes before and after the array are checked to be
/// `old_text`'s; the old bytes at `old_span` are checked to be an array holding `old`'s
/// entries for that pool, and the new bytes to be exactly one array value (a value ends where
/// it ends, so the text around it reads as it did). Only that pool's entries can differ, and
/// they are validated by the same code as in a full parse; pool-to-pool checks (pattern
/// conflicts) do not look at backends. On a large file this costs a clone of the pools and
/// a route rebuild instead of a parse of the whole text.
///
/// `None` whenever any of that does not hold or the new entries are invalid: the caller then
/// parses in full, which also gives the errors their positions in the file.
pub fn reparse_backends(
    old: &Config,
    old_text: &str,
    new_text: &str,
    pattern: &str,
    old_span: Range<usize>,
) -> Option<Config> {
    let index = old.pools.iter().position(|p| p.pattern == pattern)?;
    // A canary's addresses must stay apart from the stable ones: a check across both arrays
    // that only the full parse makes.
    if old.pools[index].canary.is_some() {
        return None;
    }
    let before = old_text.get(..old_span.start)?;
    let after = old_text.get(old_span.end..)?;
    if !new_text.starts_with(before) || !new_text.ends_with(after) {
        return None;
    }
    let new_array = new_text.get(old_span.start..new_text.len().checked_sub(after.len())?)?;
    let old_array = old_text.get(old_span)?;
    if lone_backends(old_array, pattern)? != old.pools[index].backends {
        return None;
    }
    let backends = lone_backends(new_array, pattern)?;

    let mut pools = old.pools.clone();
    pools[index].backends = backends;
    // The patterns are old's, which all parsed and did not conflict: this is the same build.
    let patterns = pools
        .iter()
        .enumerate()
        .map(|(i, pool)| Pattern::parse(&pool.pattern).ok().map(|p| (p, i)))
        .collect::<Option<Vec<_>>>()?;
    let routes = Arc::new(Router::new(patterns).ok()?);
    Some(Config {
        listen: old.listen.clone(),
        server: old.server.clone(),
        control: old.control.clone(),
        log: old.log.clone(),
        sync: old.sync.clone(),
        tls: old.tls.clone(),
        pools,
        allow_empty: old.allow_empty,
        routes,
    })
}

/// The validated entries of the one array value at `span` in `text` (pool `pattern`'s), or
/// `None` when the bytes there are anything else or an entry is invalid.
pub fn backends_at(text: &str, span: Range<usize>, pattern: &str) -> Option<Vec<BackendConfig>> {
    lone_backends(text.get(span)?, pattern)
}

/// The validated entries of `array` (the text of one array value and nothing else), or `None`
/// when it is anything else or any entry is invalid.
fn lone_backends(array: &str, pattern: &str) -> Option<Vec<BackendConfig>> {
    const KEY: &str = "backends = ";
    if !array.starts_with('[') || !array.ends_with(']') {
        return None;
    }
    let line = format!("{KEY}{array}\n");
    let raw: RawBackends = toml::from_str(&line).ok()?;
    if raw.backends.span() != (KEY.len()..KEY.len() + array.len()) {
        return None;
    }
    let mut v = Validator {
        text: &line,
        diagnostics: Vec::new(),
        backends_spans: Vec::new(),
    };
    let backends = v.backends(pattern, raw.backends.into_inner());
    v.diagnostics.is_empty().then_some(backends)
}

struct Validator<'a> {
    text: &'a str,
    diagnostics: Vec<Diagnostic>,
    /// One per pool returned by `pool`, in the same order (see [`BackendsSpans`]).
    backends_spans: BackendsSpans,
}

impl Validator<'_> {
    fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.diagnostics
            .push(Diagnostic::at(self.text, Some(span), message));
    }

    fn config(&mut self, raw: RawConfig) -> Option<Config> {
        let defaults = Listen::default();
        let http = self.socket_addr(raw.listen.http, "listen.http", defaults.http);
        let tls_span = raw.tls.as_ref().map(Spanned::span);
        let tls = raw.tls.and_then(|t| self.tls(t));
        let (https, redirect_https) = self.https(
            raw.listen.https,
            raw.listen.redirect_https,
            http,
            tls_span.is_some(),
        );
        let listen = Listen {
            http,
            grpc: self.socket_addr(raw.listen.grpc, "listen.grpc", defaults.grpc),
            admin: raw
                .listen
                .admin
                .map(|a| self.socket_addr(Some(a), "listen.admin", defaults.http)),
            https,
            redirect_https,
        };
        let server_defaults = Server::default();
        let server = Server {
            header_timeout: self
                .duration(raw.server.header_timeout, server_defaults.header_timeout),
            drain_timeout: self.duration(raw.server.drain_timeout, server_defaults.drain_timeout),
            idle_timeout: self.duration(raw.server.idle_timeout, server_defaults.idle_timeout),
            read_timeout: self.duration(raw.server.read_timeout, server_defaults.read_timeout),
            send_timeout: self.duration(raw.server.send_timeout, server_defaults.send_timeout),
            tunnel_idle_timeout: self.duration(
                raw.server.tunnel_idle_timeout,
                server_defaults.tunnel_idle_timeout,
            ),
            max_connections: match raw.server.max_connections {
                None => server_defaults.max_connections,
                Some(n) => {
                    let span = n.span();
                    match usize::try_from(*n.get_ref()) {
                        Ok(n) if (1..=1_000_000).contains(&n) => n,
                        _ => {
                            self.error(
                                span,
                                "server.max_connections must be between 1 and 1000000",
                            );
                            server_defaults.max_connections
                        }
                    }
                }
            },
            max_connections_per_ip: raw.server.max_connections_per_ip.and_then(|n| {
                let span = n.span();
                match u32::try_from(*n.get_ref()) {
                    Ok(n) if (1..=1_000_000).contains(&n) => Some(n),
                    _ => {
                        self.error(
                            span,
                            "server.max_connections_per_ip must be between 1 and 1000000",
                        );
                        None
                    }
                }
            }),
            workers: raw.server.workers.and_then(|w| {
                let span = w.span();
                match usize::try_from(*w.get_ref()) {
                    Ok(n) if (1..=1024).contains(&n) => Some(n),
                    _ => {
                        self.error(span, "server.workers must be between 1 and 1024");
                        None
                    }
                }
            }),
            trusted_proxies: raw
                .server
                .trusted_proxies
                .map(|list| self.trusted_proxies(list)),
        };
        let control = Control {
            token_file: raw
                .control
                .token_file
                .map(|t| PathBuf::from(t.into_inner())),
            git_commit: raw.control.git_commit,
            tls: self.control_tls(
                raw.control.tls_cert,
                raw.control.tls_key,
                raw.control.client_ca,
            ),
            read_only: raw.control.read_only,
        };
        let sync = raw.sync.and_then(|s| self.sync(s));

        let log = Log {
            access: match raw.log.access {
                None => AccessLog::Stderr,
                Some(a) => match a.get_ref().as_str() {
                    "stderr" => AccessLog::Stderr,
                    "off" => AccessLog::Off,
                    "" => {
                        self.error(
                            a.span(),
                            "log.access is empty (use \"stderr\", \"off\" or a file path)",
                        );
                        AccessLog::Stderr
                    }
                    path => AccessLog::File(PathBuf::from(path)),
                },
            },
            json: match raw.log.format {
                None => false,
                Some(f) => match f.get_ref().as_str() {
                    "text" => false,
                    "json" => true,
                    other => {
                        self.error(
                            f.span(),
                            format!("log.format {other:?} is not \"text\" or \"json\""),
                        );
                        false
                    }
                },
            },
        };

        let mut pools = Vec::with_capacity(raw.pools.len());
        let mut patterns = Vec::with_capacity(raw.pools.len());
        let mut pattern_spans = Vec::with_capacity(raw.pools.len());
        // Keep file order, so that errors and listings follow what a person reads.
        let mut raw_pools: Vec<_> = raw.pools.into_iter().collect();
        raw_pools.sort_by_key(|(key, _)| key.span().start);
        for (key, raw_pool) in raw_pools {
            let span = key.span();
            let pattern_text = key.into_inner();
            let pattern = match Pattern::parse(&pattern_text) {
                Ok(p) => Some(p),
                Err(e) => {
                    self.error(span.clone(), format!("bad pattern {pattern_text:?}: {e}"));
                    None
                }
            };
            let backends_span = raw_pool.backends.as_ref().map(Spanned::span);
            if let Some(pool) = self.pool(pattern_text, raw_pool) {
                self.backends_spans.push(backends_span);
                if let Some(pattern) = pattern {
                    patterns.push((pattern, pools.len()));
                    pattern_spans.push(span);
                }
                pools.push(pool);
            }
        }
        let routes = match Router::new(patterns) {
            Ok(r) => Some(r),
            Err(conflict) => {
                let span = pools
                    .iter()
                    .position(|p| p.pattern == conflict.new)
                    .and_then(|i| pattern_spans.get(i).cloned())
                    .unwrap_or(0..0);
                self.error(span, conflict.to_string());
                None
            }
        };
        Some(Config {
            listen,
            server,
            control,
            log,
            sync,
            tls,
            pools,
            allow_empty: raw.allow_empty,
            routes: Arc::new(routes?),
        })
    }

    fn pool(&mut self, pattern: String, raw: RawPool) -> Option<PoolConfig> {
        let pool_type = match raw.pool_type {
            None => PoolType::P2c,
            Some(t) if t.get_ref() == "p2c" => PoolType::P2c,
            Some(t) if t.get_ref() == "p2c_ewma" => PoolType::P2cEwma,
            Some(t) => {
                self.error(
                    t.span(),
                    format!(
                        "unknown pool type {:?} (supported: \"p2c\", \"p2c_ewma\")",
                        t.get_ref()
                    ),
                );
                PoolType::P2c
            }
        };
        let interval = self.duration(raw.interval, DEFAULT_INTERVAL);
        let down_interval = self.duration(raw.down_interval, DEFAULT_DOWN_INTERVAL);
        let checks = match raw.health_checks {
            None => vec![HealthCheck::default()],
            Some(checks) => {
                let span = checks.span();
                let checks = checks.into_inner();
                if checks.is_empty() {
                    self.error(
                        span,
                        "health_checks is empty: a pool needs at least one check (omit the key for the default /healthz check)",
                    );
                }
                checks.into_iter().map(|c| self.health_check(c)).collect()
            }
        };
        let health_checks = HealthChecks {
            checks,
            timeout: self.duration(raw.check_timeout, DEFAULT_CHECK_TIMEOUT),
            rise: self.streak(raw.rise, "rise", "passing checks to become healthy"),
            fall: self.streak(raw.fall, "fall", "failing checks to become sick"),
        };
        let backends = self.backends(
            &pattern,
            raw.backends.map(Spanned::into_inner).unwrap_or_default(),
        );
        let connect_timeout = self.duration(raw.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        let request_timeout = self.duration(raw.request_timeout, DEFAULT_REQUEST_TIMEOUT);
        let idle_timeout = self.duration(raw.idle_timeout, DEFAULT_IDLE_TIMEOUT);
        let retries = match raw.retries {
            None => 1,
            Some(r) => match u32::try_from(*r.get_ref()) {
                Ok(n) if n <= 10 => n,
                _ => {
                    self.error(r.span(), "retries must be between 0 and 10");
                    1
                }
            },
        };
        let backend_tls = raw.backend_tls.map(|t| self.backend_tls(&pattern, t));
        let raw_canary_span = raw.canary.as_ref().map(Spanned::span);
        let canary = raw.canary.map(|c| self.canary(&pattern, c, &backends));
        let rollout = raw
            .rollout
            .map(|r| self.rollout(r, canary.as_ref(), raw_canary_span));
        let rate_limit = raw.rate_limit.and_then(|r| self.rate_limit(&pattern, r));
        Some(PoolConfig {
            pattern,
            pool_type,
            interval,
            down_interval,
            health_checks,
            backends,
            connect_timeout,
            request_timeout,
            retries,
            idle_timeout,
            backend_tls,
            canary,
            rollout,
            rate_limit,
        })
    }

    /// `[server] trusted_proxies`: a list of networks (`ADDR/PREFIX` or one address), each
    /// with no host bits set and listed once.
    fn trusted_proxies(&mut self, raw: Spanned<Vec<Spanned<String>>>) -> Vec<Cidr> {
        let mut networks: Vec<Cidr> = Vec::new();
        for entry in raw.into_inner() {
            match entry.get_ref().trim().parse::<Cidr>() {
                Ok(network) if networks.contains(&network) => self.error(
                    entry.span(),
                    format!("server.trusted_proxies lists {network} twice"),
                ),
                Ok(network) => networks.push(network),
                Err(e) => self.error(entry.span(), format!("server.trusted_proxies: {e}")),
            }
        }
        networks
    }

    /// A pool's `rate_limit = { requests_per_second = N, burst = M, key = "ip" }`: a rate above
    /// zero (at most one request a nanosecond), a burst of 0 or more, and a known key.
    fn rate_limit(&mut self, pattern: &str, raw: Spanned<RawRateLimit>) -> Option<RateLimitConfig> {
        let span = raw.span();
        let raw = raw.into_inner();
        let requests_per_second = match raw.requests_per_second {
            None => {
                self.error(
                    span,
                    format!("pool {pattern:?}: rate_limit needs requests_per_second (e.g. rate_limit = {{ requests_per_second = 100, burst = 50 }})"),
                );
                None
            }
            Some(rate) => {
                let value = *rate.get_ref();
                if value.is_finite() && value > 0.0 && value <= 1e9 {
                    Some(Share(value))
                } else {
                    self.error(
                        rate.span(),
                        "rate_limit.requests_per_second must be a number above 0 (0.5 is one request every 2 s) and at most 1000000000",
                    );
                    None
                }
            }
        };
        let burst = match raw.burst {
            None => Some(0),
            Some(burst) => match u32::try_from(*burst.get_ref()) {
                Ok(n) if n <= 1_000_000 => Some(n),
                _ => {
                    self.error(
                        burst.span(),
                        "rate_limit.burst must be a whole number from 0 to 1000000 (the requests a client may make at once beyond the rate)",
                    );
                    None
                }
            },
        };
        let key = match raw.key {
            None => Some(RateLimitKey::Ip),
            Some(key) => {
                let text = key.get_ref().trim();
                let parsed = match text.split_once(':') {
                    None if text == "ip" => Some(RateLimitKey::Ip),
                    Some((kind, name))
                        if kind.trim() == "header" && is_header_name(name.trim()) =>
                    {
                        Some(RateLimitKey::Header(name.trim().to_ascii_lowercase()))
                    }
                    _ => None,
                };
                if parsed.is_none() {
                    self.error(
                        key.span(),
                        format!(
                            "rate_limit.key {:?} is not \"ip\" or \"header:NAME\" with a valid header name",
                            key.get_ref()
                        ),
                    );
                }
                parsed
            }
        };
        Some(RateLimitConfig {
            requests_per_second: requests_per_second?,
            burst: burst?,
            key: key?,
        })
    }

    /// `[pools."P".rollout]`: strictly ascending steps of 1..=100, the thresholds a step is
    /// judged by, and the progress keys lb writes. A rollout that has not ended needs a canary
    /// with backends to roll out.
    fn rollout(
        &mut self,
        raw: Spanned<RawRollout>,
        canary: Option<&CanaryConfig>,
        canary_span: Option<Range<usize>>,
    ) -> RolloutConfig {
        let span = raw.span();
        let raw = raw.into_inner();
        let mut steps = Vec::new();
        match raw.steps {
            None => self.error(
                span.clone(),
                "rollout needs steps: the canary weight of each step, e.g. steps = [5, 25, 50, 100]",
            ),
            Some(list) => {
                let list_span = list.span();
                let was_empty = list.get_ref().is_empty();
                for step in list.into_inner() {
                    match u8::try_from(*step.get_ref()) {
                        Ok(n @ 1..=100) if steps.last().is_none_or(|last| n > *last) => {
                            steps.push(n)
                        }
                        _ => self.error(
                            step.span(),
                            "rollout steps must be whole percents from 1 to 100, each larger than the one before",
                        ),
                    }
                }
                if was_empty {
                    self.error(list_span, "rollout steps is empty: give at least one weight");
                }
            }
        }
        let bake = self.duration(raw.bake, DEFAULT_BAKE);
        let min_requests = match raw.min_requests {
            None => DEFAULT_MIN_REQUESTS,
            Some(n) => match u64::try_from(*n.get_ref()) {
                Ok(n) if n >= 1 => n,
                _ => {
                    self.error(n.span(), "min_requests must be at least 1");
                    DEFAULT_MIN_REQUESTS
                }
            },
        };
        let mut share = |raw: Option<Spanned<f64>>, default: f64, max: f64, key: &str| match raw {
            None => Share(default),
            Some(v) => {
                let value = *v.get_ref();
                let floor = if max.is_infinite() { 1.0 } else { 0.0 };
                if value.is_finite() && value >= floor && value <= max {
                    Share(value)
                } else if max.is_infinite() {
                    self.error(v.span(), format!("{key} must be a number of at least 1"));
                    Share(default)
                } else {
                    self.error(
                        v.span(),
                        format!("{key} must be a share from 0 to 1 (0.01 is 1%)"),
                    );
                    Share(default)
                }
            }
        };
        let max_error_rate = share(
            raw.max_error_rate,
            DEFAULT_MAX_ERROR_RATE,
            1.0,
            "max_error_rate",
        );
        let max_error_increase = share(
            raw.max_error_increase,
            DEFAULT_MAX_ERROR_INCREASE,
            1.0,
            "max_error_increase",
        );
        let max_p99_ratio = share(
            raw.max_p99_ratio,
            DEFAULT_MAX_P99_RATIO,
            f64::INFINITY,
            "max_p99_ratio",
        );
        let on_failure = match raw
            .on_failure
            .as_ref()
            .map(|v| (v.get_ref().as_str(), v.span()))
        {
            None | Some(("abort", _)) => OnFailure::Abort,
            Some(("pause", _)) => OnFailure::Pause,
            Some((other, span)) => {
                self.error(
                    span,
                    format!("on_failure {other:?} is not \"abort\" or \"pause\""),
                );
                OnFailure::Abort
            }
        };
        let on_success = match raw
            .on_success
            .as_ref()
            .map(|v| (v.get_ref().as_str(), v.span()))
        {
            None | Some(("promote", _)) => OnSuccess::Promote,
            Some(("pause", _)) => OnSuccess::Pause,
            Some((other, span)) => {
                self.error(
                    span,
                    format!("on_success {other:?} is not \"promote\" or \"pause\""),
                );
                OnSuccess::Promote
            }
        };
        let state = raw.state.as_ref().and_then(|v| {
            let state = RolloutState::parse(v.get_ref());
            if state.is_none() {
                self.error(
                    v.span(),
                    format!(
                        "rollout state {:?} is not \"running\", \"paused\", \"aborted\" or \"done\"",
                        v.get_ref()
                    ),
                );
            }
            state
        });
        let step = match raw.step {
            None => 1,
            Some(n) => match usize::try_from(*n.get_ref()) {
                Ok(n) if n >= 1 && (steps.is_empty() || n <= steps.len()) => n,
                _ => {
                    self.error(
                        n.span(),
                        format!(
                            "rollout step must be from 1 to {} (the number of steps)",
                            steps.len().max(1)
                        ),
                    );
                    1
                }
            },
        };
        let step_started = raw.step_started.and_then(|v| {
            match humantime::parse_rfc3339_weak(v.get_ref().trim()) {
                Ok(at) => Some(at),
                Err(_) => {
                    self.error(
                        v.span(),
                        "step_started must be an RFC 3339 time in quotes, e.g. \"2026-12-07T20:00:00Z\"",
                    );
                    None
                }
            }
        });
        let reason = raw.reason.map(Spanned::into_inner);
        let driver = match raw.driver {
            Some(d) if d.get_ref().trim().is_empty() => {
                self.error(
                    d.span(),
                    "rollout driver is empty: the name of the instance that drives it (lb --instance)",
                );
                None
            }
            d => d.map(Spanned::into_inner),
        };
        let ended = matches!(state, Some(RolloutState::Done));
        if !ended && canary.is_none_or(|c| c.backends.is_empty()) {
            self.error(
                canary_span.unwrap_or(span),
                "a rollout needs a canary to roll out: declare [pools.\"P\".canary] with its backends (or set the rollout's state = \"done\")",
            );
        }
        RolloutConfig {
            steps,
            bake,
            min_requests,
            max_error_rate,
            max_error_increase,
            max_p99_ratio,
            on_failure,
            on_success,
            progress: RolloutProgress {
                state,
                step,
                step_started,
                reason,
                driver,
            },
        }
    }

    /// `[pools."P".canary]`: its backends (validated as the pool's, and none of the pool's
    /// stable ones), a weight of 0..=100, and the optional sticky key and force header.
    fn canary(
        &mut self,
        pattern: &str,
        raw: Spanned<RawCanary>,
        stable: &[BackendConfig],
    ) -> CanaryConfig {
        let span = raw.span();
        let raw = raw.into_inner();
        let backends = raw.backends.map_or_else(Vec::new, |entries| {
            self.backends_apart(pattern, entries.into_inner(), stable)
        });
        let weight = match raw.weight {
            None => {
                self.error(
                    span,
                    "canary needs a weight: the percent of the pool's requests it takes (0-100)",
                );
                0
            }
            Some(w) => match u8::try_from(*w.get_ref()) {
                Ok(n) if n <= 100 => n,
                _ => {
                    self.error(
                        w.span(),
                        "canary weight must be a whole percent from 0 to 100",
                    );
                    0
                }
            },
        };
        let sticky = raw.sticky.and_then(|raw| {
            let (kind, name) = raw.get_ref().split_once(':').unwrap_or(("", ""));
            let name = name.trim();
            let sticky = match kind.trim() {
                "cookie" if is_cookie_name(name) => Some(Sticky::Cookie(name.to_owned())),
                "header" if is_header_name(name) => Some(Sticky::Header(name.to_ascii_lowercase())),
                _ => None,
            };
            if sticky.is_none() {
                self.error(
                    raw.span(),
                    format!(
                        "sticky {:?} is not \"cookie:NAME\" or \"header:NAME\" with a valid name",
                        raw.get_ref()
                    ),
                );
            }
            sticky
        });
        let force_header = raw.force_header.and_then(|raw| {
            let name = raw.get_ref().trim();
            if is_header_name(name) {
                Some(name.to_ascii_lowercase())
            } else {
                self.error(
                    raw.span(),
                    format!(
                        "force_header {:?} is not a valid header name",
                        raw.get_ref()
                    ),
                );
                None
            }
        });
        CanaryConfig {
            backends,
            weight,
            sticky,
            force_header,
        }
    }

    /// `[listen] https` (one address or a list) and `redirect_https`. An HTTPS listener needs
    /// `[tls]` certificates; a redirect needs an HTTPS listener to send clients to.
    fn https(
        &mut self,
        raw: Option<Spanned<RawAddrs>>,
        redirect: Option<Spanned<bool>>,
        http: SocketAddr,
        has_tls: bool,
    ) -> (Vec<SocketAddr>, bool) {
        let mut https = Vec::new();
        let mut https_span = None;
        if let Some(raw) = raw {
            let span = raw.span();
            let texts = match raw.into_inner() {
                RawAddrs::One(text) => vec![text],
                RawAddrs::Many(texts) => texts,
            };
            if texts.is_empty() {
                self.error(
                    span.clone(),
                    "listen.https is an empty list (omit the key for no HTTPS listener)",
                );
            }
            for text in texts {
                // Point at the address itself inside a list, not at the list's `[`.
                let at = self
                    .text
                    .get(span.clone())
                    .and_then(|list| list.find(&format!("{text:?}")))
                    .map_or(span.clone(), |i| span.start + i..span.start + i + 1);
                match text.parse::<SocketAddr>() {
                    Ok(addr) if addr == http => self.error(
                        at,
                        format!("listen.https {addr} is also listen.http: one port serves either cleartext or TLS"),
                    ),
                    Ok(addr) if https.contains(&addr) => {
                        self.error(at, format!("listen.https lists {addr} twice"));
                    }
                    Ok(addr) => https.push(addr),
                    Err(_) => self.error(
                        at,
                        format!("listen.https {text:?} is not IP:PORT (e.g. \"0.0.0.0:8443\", \"[::]:8443\")"),
                    ),
                }
            }
            https_span = Some(span);
        }
        if let Some(span) = https_span {
            if !has_tls {
                self.error(
                    span,
                    "listen.https needs certificates: add a [[tls.certificates]] entry with cert and key (PEM files)",
                );
            }
        }
        let redirect_https = match redirect {
            Some(r) if *r.get_ref() && https.is_empty() => {
                self.error(
                    r.span(),
                    "listen.redirect_https needs listen.https: there is no HTTPS listener to redirect to",
                );
                false
            }
            Some(r) => r.into_inner(),
            None => false,
        };
        (https, redirect_https)
    }

    /// `[tls]`: at least one certificate pair, at most one `default = true`, a known version
    /// and `unknown_sni` policy.
    fn tls(&mut self, raw: Spanned<RawTls>) -> Option<TlsConfig> {
        let span = raw.span();
        let raw = raw.into_inner();
        let mut certificates = Vec::new();
        let mut default_seen = false;
        let entries = raw
            .certificates
            .map(Spanned::into_inner)
            .unwrap_or_default();
        if entries.is_empty() {
            self.error(
                span,
                "[tls] needs at least one [[tls.certificates]] entry with cert and key (PEM files)",
            );
        }
        for entry in entries {
            let entry_span = entry.span();
            let entry = entry.into_inner();
            let default = match entry.default {
                Some(d) if *d.get_ref() && default_seen => {
                    self.error(
                        d.span(),
                        "only one [[tls.certificates]] entry may say default = true",
                    );
                    false
                }
                Some(d) => d.into_inner(),
                None => false,
            };
            default_seen |= default;
            let cert = match entry.cert {
                Some(c) => self.file_path(c, "tls.certificates cert"),
                None => {
                    self.error(
                        entry_span.clone(),
                        "[[tls.certificates]] needs cert (the certificate chain, PEM)",
                    );
                    None
                }
            };
            let key = match entry.key {
                Some(k) => self.file_path(k, "tls.certificates key"),
                None => {
                    self.error(
                        entry_span,
                        "[[tls.certificates]] needs key (the certificate's private key, PEM)",
                    );
                    None
                }
            };
            if let (Some(cert), Some(key)) = (cert, key) {
                certificates.push(CertificateFiles { cert, key, default });
            }
        }
        let min_version = match raw.min_version {
            None => TlsVersion::V1_2,
            Some(v) => match v.get_ref().as_str() {
                "1.2" => TlsVersion::V1_2,
                "1.3" => TlsVersion::V1_3,
                other => {
                    self.error(
                        v.span(),
                        format!("tls.min_version {other:?} is not \"1.2\" or \"1.3\""),
                    );
                    TlsVersion::V1_2
                }
            },
        };
        let unknown_sni = match raw.unknown_sni {
            None => UnknownSni::Default,
            Some(u) => match u.get_ref().as_str() {
                "default" => UnknownSni::Default,
                "refuse" => UnknownSni::Refuse,
                other => {
                    self.error(
                        u.span(),
                        format!("tls.unknown_sni {other:?} is not \"default\" (serve the default certificate) or \"refuse\" (fail the handshake)"),
                    );
                    UnknownSni::Default
                }
            },
        };
        let client_ca = raw
            .client_ca
            .and_then(|ca| self.file_path(ca, "tls.client_ca"));
        (!certificates.is_empty()).then_some(TlsConfig {
            certificates,
            min_version,
            unknown_sni,
            client_ca,
        })
    }

    /// A pool's `backend_tls = { ca = "...", server_name = "..." }`.
    fn backend_tls(&mut self, pattern: &str, raw: Spanned<RawBackendTls>) -> BackendTls {
        let raw = raw.into_inner();
        let ca = raw.ca.and_then(|ca| self.file_path(ca, "backend_tls.ca"));
        let server_name = raw.server_name.and_then(|name| {
            match rustls_pki_types::ServerName::try_from(name.get_ref().as_str()) {
                Ok(_) => Some(name.into_inner()),
                Err(_) => {
                    self.error(
                        name.span(),
                        format!(
                            "pool {pattern:?}: backend_tls.server_name {:?} is not a DNS name or IP address",
                            name.get_ref()
                        ),
                    );
                    None
                }
            }
        });
        BackendTls { ca, server_name }
    }

    /// One pool's `backends` entries: each parsed, with its admin state, no address twice.
    fn backends(&mut self, pattern: &str, raw: Vec<Spanned<RawBackend>>) -> Vec<BackendConfig> {
        self.backends_apart(pattern, raw, &[])
    }

    /// [`Validator::backends`], refusing also the addresses in `taken` (a canary's entries may
    /// not be the pool's stable ones).
    fn backends_apart(
        &mut self,
        pattern: &str,
        raw: Vec<Spanned<RawBackend>>,
        taken: &[BackendConfig],
    ) -> Vec<BackendConfig> {
        let mut seen = HashSet::with_capacity(raw.len());
        let mut backends = Vec::with_capacity(raw.len());
        for entry in raw {
            let span = entry.span();
            let (addr, state) = match entry.into_inner() {
                RawBackend::Plain(addr) => (addr, AdminState::Enabled),
                RawBackend::Table(table) => {
                    let state = match table.state.as_deref() {
                        None => AdminState::Enabled,
                        Some(text) => match AdminState::parse(text) {
                            Some(state) => state,
                            None => {
                                self.error(
                                    span.clone(),
                                    format!("unknown backend state {text:?} (use \"enabled\", \"drain\" or \"disabled\")"),
                                );
                                AdminState::Enabled
                            }
                        },
                    };
                    (table.addr, state)
                }
            };
            match addr.parse::<BackendAddr>() {
                Ok(addr) => {
                    if !seen.insert(addr.clone()) {
                        self.error(
                            span,
                            format!("duplicate backend {addr} in pool {pattern:?}"),
                        );
                    } else if taken.iter().any(|t| t.addr == addr) {
                        self.error(
                            span,
                            format!("backend {addr} of pool {pattern:?} is both stable and canary; declare it on one side"),
                        );
                    } else {
                        backends.push(BackendConfig { addr, state });
                    }
                }
                Err(e) => self.error(span, e.to_string()),
            }
        }
        backends
    }

    /// `rise` or `fall`: a count of consecutive check results, 1 (the default) or more.
    fn streak(&mut self, raw: Option<Spanned<i64>>, key: &str, meaning: &str) -> u32 {
        let Some(raw) = raw else { return 1 };
        match u32::try_from(*raw.get_ref()) {
            Ok(n) if n >= 1 => n,
            _ => {
                self.error(
                    raw.span(),
                    format!(
                        "{key} = {} is out of range: it counts consecutive {meaning}, 1 or more (1 acts on a single check)",
                        raw.get_ref()
                    ),
                );
                1
            }
        }
    }

    fn health_check(&mut self, raw: Spanned<RawHealthCheck>) -> HealthCheck {
        let raw = raw.into_inner();
        let defaults = HealthCheck::default();
        let url_path = match raw.url_path {
            None => defaults.url_path,
            Some(p) if p.get_ref().starts_with('/') => p.into_inner(),
            Some(p) => {
                self.error(
                    p.span(),
                    format!("health check url_path {:?} must start with /", p.get_ref()),
                );
                defaults.url_path
            }
        };
        let healthy_values = match raw.healthy_values {
            None => defaults.healthy_values,
            Some(values) => {
                if values.get_ref().is_empty() || values.get_ref().iter().any(String::is_empty) {
                    self.error(
                        values.span(),
                        "healthy_values must list at least one non-empty value",
                    );
                }
                values.into_inner()
            }
        };
        HealthCheck {
            url_path,
            healthy_values,
        }
    }

    /// `tls_cert` and `tls_key` come together; `client_ca` only with them (client certificates
    /// are a part of the TLS handshake).
    fn control_tls(
        &mut self,
        cert: Option<Spanned<String>>,
        key: Option<Spanned<String>>,
        client_ca: Option<Spanned<String>>,
    ) -> Option<ControlTls> {
        let (cert_span, key_span) = (
            cert.as_ref().map(Spanned::span),
            key.as_ref().map(Spanned::span),
        );
        let cert = cert.and_then(|c| self.file_path(c, "control.tls_cert"));
        let key = key.and_then(|k| self.file_path(k, "control.tls_key"));
        let client_ca = match client_ca {
            Some(ca) if cert_span.is_none() || key_span.is_none() => {
                self.error(
                    ca.span(),
                    "control.client_ca needs control.tls_cert and control.tls_key: client certificates are only checked over TLS",
                );
                None
            }
            ca => ca.and_then(|ca| self.file_path(ca, "control.client_ca")),
        };
        match (cert_span, key_span) {
            (Some(span), None) => self.error(
                span,
                "control.tls_cert needs control.tls_key (the certificate's private key, PEM)",
            ),
            (None, Some(span)) => self.error(
                span,
                "control.tls_key needs control.tls_cert (the certificate chain, PEM)",
            ),
            _ => {}
        }
        Some(ControlTls {
            cert: cert?,
            key: key?,
            client_ca,
        })
    }

    /// `[sync]`: `remote` and `branch` are required; `author` reads `Name <email>`.
    fn sync(&mut self, raw: Spanned<RawSync>) -> Option<SyncConfig> {
        let table = raw.span();
        let raw = raw.into_inner();
        let remote = match raw.remote {
            None => {
                self.error(
                    table.clone(),
                    "[sync] needs remote (a URL git accepts, e.g. \"git@example.com:ops/lb-config.git\" or a path)",
                );
                None
            }
            Some(r) if r.get_ref().trim().is_empty() => {
                self.error(r.span(), "sync.remote is empty (a URL git accepts)");
                None
            }
            // git would read a leading dash as an option.
            Some(r) if r.get_ref().starts_with('-') => {
                self.error(r.span(), "sync.remote must not start with '-'");
                None
            }
            Some(r) => match credential_in_url(r.get_ref()) {
                Some(what) => {
                    self.error(
                        r.span(),
                        format!("sync.remote carries {what} in its URL, which logs, errors and /status.json would show: write the URL without it and give git the credential through a credential helper (git config credential.helper) or an ssh key"),
                    );
                    None
                }
                None => Some(r.into_inner()),
            },
        };
        let branch = match raw.branch {
            None => {
                self.error(table, "[sync] needs branch (e.g. branch = \"main\")");
                None
            }
            Some(b) if !valid_branch(b.get_ref()) => {
                self.error(
                    b.span(),
                    format!(
                        "sync.branch {:?} is not a branch name (letters, digits and . _ - /, not starting with - or /)",
                        b.get_ref()
                    ),
                );
                None
            }
            Some(b) => Some(b.into_inner()),
        };
        let interval = self.duration(raw.interval, DEFAULT_SYNC_INTERVAL);
        let author = match raw.author {
            None => None,
            Some(a) if !valid_author(a.get_ref()) => {
                self.error(
                    a.span(),
                    format!(
                        "sync.author {:?} is not \"Name <email>\" (e.g. \"lb fleet <lb@example.com>\")",
                        a.get_ref()
                    ),
                );
                None
            }
            Some(a) => Some(a.into_inner()),
        };
        let mut peers: Vec<String> = Vec::new();
        for peer in raw.peers.map(Spanned::into_inner).unwrap_or_default() {
            let text = peer.get_ref().trim();
            if !valid_peer(text) {
                self.error(
                    peer.span(),
                    format!(
                        "sync.peers entry {:?} is not HOST:PORT (an instance's admin listener, e.g. \"lb-2.internal:9090\" or \"10.0.0.7:9090\")",
                        peer.get_ref()
                    ),
                );
            } else if peers.iter().any(|p| p == text) {
                self.error(
                    peer.span(),
                    format!("sync.peers lists {text:?} twice: its windows would count twice"),
                );
            } else {
                peers.push(text.to_owned());
            }
        }
        Some(SyncConfig {
            remote: remote?,
            branch: branch?,
            interval,
            author,
            peers,
        })
    }

    /// A file path value; empty is an error.
    fn file_path(&mut self, raw: Spanned<String>, key: &str) -> Option<PathBuf> {
        if raw.get_ref().trim().is_empty() {
            self.error(raw.span(), format!("{key} is empty (a path to a PEM file)"));
            return None;
        }
        Some(PathBuf::from(raw.into_inner()))
    }

    fn duration(&mut self, raw: Option<Spanned<String>>, default: Duration) -> Duration {
        let Some(raw) = raw else { return default };
        match parse_duration(raw.get_ref()) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                self.error(
                    raw.span(),
                    format!("duration {:?} must be above zero", raw.get_ref()),
                );
                default
            }
            Err(e) => {
                self.error(raw.span(), e);
                default
            }
        }
    }

    fn socket_addr(
        &mut self,
        raw: Option<Spanned<String>>,
        key: &str,
        default: SocketAddr,
    ) -> SocketAddr {
        let Some(raw) = raw else { return default };
        match raw.get_ref().parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                self.error(
                    raw.span(),
                    format!(
                        "{key} {:?} is not IP:PORT (e.g. \"127.0.0.1:8080\", \"[::1]:8080\")",
                        raw.get_ref()
                    ),
                );
                default
            }
        }
    }
}

/// What secret a git URL carries in its userinfo (`scheme://userinfo@host/...`), if any: a
/// password (`user:password@`), or over http(s) any user name (a token often stands there).
/// An ssh user (`ssh://git@host/`, `git@host:path`) is no secret.
/// An HTTP field name: a non-empty token (RFC 9110 §5.1), not a pseudo-header.
fn is_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(is_tchar)
}

/// A cookie name: a token too (RFC 6265 §4.1.1).
fn is_cookie_name(name: &str) -> bool {
    is_header_name(name)
}

fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

fn credential_in_url(remote: &str) -> Option<&'static str> {
    let (scheme, rest) = remote.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let (userinfo, _host) = authority.rsplit_once('@')?;
    if userinfo.contains(':') {
        return Some("a password (user:password@)");
    }
    let web = ["http", "https", "ftp", "ftps"]
        .iter()
        .any(|web| scheme.eq_ignore_ascii_case(web));
    web.then_some("a user name (over http(s) often a token)")
}

/// A branch name git accepts and no command line can take for an option.
fn valid_branch(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(['-', '/'])
        && !name.ends_with(['/', '.'])
        && !name.contains("..")
        && !name.contains("//")
        && !name.ends_with(".lock")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'))
}

/// `HOST:PORT` for a peer's admin listener: an IP address (IPv6 in brackets) or a DNS name,
/// and a port from 1 to 65535.
fn valid_peer(text: &str) -> bool {
    if text
        .parse::<std::net::SocketAddr>()
        .is_ok_and(|a| a.port() != 0)
    {
        return true;
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return false;
    };
    let port_ok = port.parse::<u16>().is_ok_and(|p| p != 0);
    let name_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    port_ok && name_ok
}

/// `Name <email>`, both parts non-empty, no angle brackets or newlines inside.
fn valid_author(text: &str) -> bool {
    let Some((name, rest)) = text.split_once('<') else {
        return false;
    };
    let Some(email) = rest.strip_suffix('>') else {
        return false;
    };
    let clean = |s: &str| !s.contains(['<', '>', '\n', '\r']);
    !name.trim().is_empty() && !email.trim().is_empty() && clean(name) && clean(email)
}
