//! config::diff: what differs between two valid configs, key by key, as lb.toml names the keys.
//! `lbctl plan` shows it before a file is applied and `apply` logs it when one is, so what a plan
//! shows is what a reload logs. Pure: it reads two [`Config`]s and nothing else.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use super::{
    format_duration, AccessLog, BackendConfig, BackendTls, CanaryConfig, Config, HealthCheck,
    PoolConfig, RateLimitConfig, RolloutConfig, RolloutProgress,
};

/// One key whose value differs; `before` / `after` are `None` where the key (or the pool, the
/// backend, the table) is absent on that side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The key as lb.toml spells it: `pools."/".interval`, `listen.http`,
    /// `pools."/".backends."10.0.0.1:80"`, `tls.certificates[0].cert`.
    pub key: String,
    /// The value that runs, as TOML text (`"10s"`, `3`, `["ok", "OK"]`).
    pub before: Option<String>,
    /// The value the other file has.
    pub after: Option<String>,
    /// The key is read only at start: a reload leaves it as it is until lb restarts.
    pub restart: bool,
}

/// What a [`Change`] does to its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// The key, pool or backend appears.
    Add,
    /// It goes away.
    Remove,
    /// Its value changes.
    Change,
}

impl Change {
    /// Whether it adds, removes or changes its key.
    pub fn kind(&self) -> ChangeKind {
        match (&self.before, &self.after) {
            (None, _) => ChangeKind::Add,
            (_, None) => ChangeKind::Remove,
            _ => ChangeKind::Change,
        }
    }
}

impl fmt::Display for Change {
    /// `~ KEY: BEFORE -> AFTER`, `+ KEY = AFTER`, `- KEY = BEFORE`; `(restart needed)` after a
    /// start-only key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.before, &self.after) {
            (Some(before), Some(after)) => write!(f, "~ {}: {before} -> {after}", self.key)?,
            (None, Some(after)) => write!(f, "+ {} = {after}", self.key)?,
            (Some(before), None) => write!(f, "- {} = {before}", self.key)?,
            (None, None) => write!(f, "~ {}", self.key)?,
        }
        if self.restart {
            write!(f, " (restart needed)")?;
        }
        Ok(())
    }
}

/// Every key whose value differs from `before` to `after`, in file order: the top level,
/// `[listen]`, `[server]`, `[control]`, `[sync]`, `[log]`, `[tls]`, then the pools (`after`'s
/// order, then those only `before` has). Defaults count as values: a key written out with its
/// default value is no change.
pub fn diff(before: &Config, after: &Config) -> Vec<Change> {
    let mut out = Changes::default();
    out.value("allow_empty", false, before.allow_empty, after.allow_empty);
    globals(&mut out, before, after);
    tls(&mut out, before, after);
    for pool in &after.pools {
        match before.pool(&pool.pattern) {
            Some(old) => pool_diff_into(&mut out, old, pool),
            None => {
                let key = pool_key(&pool.pattern);
                out.push(&key, false, None, Some(pool_summary(pool)));
                for b in &pool.backends {
                    out.push(&backend_key(&key, b), false, None, Some(backend_value(b)));
                }
            }
        }
    }
    for pool in &before.pools {
        if after.pool(&pool.pattern).is_none() {
            let key = pool_key(&pool.pattern);
            out.push(&key, false, Some(pool_summary(pool)), None);
            for b in &pool.backends {
                out.push(&backend_key(&key, b), false, Some(backend_value(b)), None);
            }
        }
    }
    out.0
}

/// What differs within one pool declared on both sides (same pattern).
pub fn pool_diff(before: &PoolConfig, after: &PoolConfig) -> Vec<Change> {
    let mut out = Changes::default();
    pool_diff_into(&mut out, before, after);
    out.0
}

#[derive(Default)]
struct Changes(Vec<Change>);

impl Changes {
    fn push(&mut self, key: &str, restart: bool, before: Option<String>, after: Option<String>) {
        if before != after {
            self.0.push(Change {
                key: key.to_owned(),
                before,
                after,
                restart,
            });
        }
    }

    /// A key with a value on both sides.
    fn value<T: Toml + PartialEq>(&mut self, key: &str, restart: bool, before: T, after: T) {
        if before != after {
            self.push(key, restart, Some(before.toml()), Some(after.toml()));
        }
    }

    /// A key that may be unset on either side.
    fn optional<T: Toml + PartialEq>(
        &mut self,
        key: &str,
        restart: bool,
        before: Option<T>,
        after: Option<T>,
    ) {
        if before != after {
            self.push(
                key,
                restart,
                before.map(|v| v.toml()),
                after.map(|v| v.toml()),
            );
        }
    }
}

/// A value as lb.toml writes it.
trait Toml {
    fn toml(&self) -> String;
}

impl Toml for bool {
    fn toml(&self) -> String {
        self.to_string()
    }
}

impl Toml for u32 {
    fn toml(&self) -> String {
        self.to_string()
    }
}

impl Toml for usize {
    fn toml(&self) -> String {
        self.to_string()
    }
}

impl Toml for Duration {
    fn toml(&self) -> String {
        quote(&format_duration(*self))
    }
}

impl Toml for &str {
    fn toml(&self) -> String {
        quote(self)
    }
}

impl Toml for &String {
    fn toml(&self) -> String {
        quote(self)
    }
}

impl Toml for std::net::SocketAddr {
    fn toml(&self) -> String {
        quote(&self.to_string())
    }
}

impl Toml for &Path {
    fn toml(&self) -> String {
        quote(&self.display().to_string())
    }
}

impl Toml for &std::path::PathBuf {
    fn toml(&self) -> String {
        quote(&self.display().to_string())
    }
}

impl Toml for &[String] {
    fn toml(&self) -> String {
        let items: Vec<String> = self.iter().map(|s| quote(s)).collect();
        format!("[{}]", items.join(", "))
    }
}

/// A TOML basic string (JSON's escapes are TOML's for everything a config holds).
fn quote(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| format!("\"{text}\""))
}

fn globals(out: &mut Changes, a: &Config, b: &Config) {
    let (la, lb) = (&a.listen, &b.listen);
    out.value("listen.http", true, la.http, lb.http);
    out.value("listen.grpc", true, la.grpc, lb.grpc);
    out.optional("listen.admin", true, la.admin, lb.admin);
    if la.https != lb.https {
        let list = |l: &[std::net::SocketAddr]| {
            (!l.is_empty()).then(|| {
                let items: Vec<String> = l.iter().map(|a| a.toml()).collect();
                format!("[{}]", items.join(", "))
            })
        };
        out.push("listen.https", true, list(&la.https), list(&lb.https));
    }
    out.value(
        "listen.redirect_https",
        true,
        la.redirect_https,
        lb.redirect_https,
    );
    let (sa, sb) = (&a.server, &b.server);
    for (key, x, y) in [
        (
            "server.header_timeout",
            sa.header_timeout,
            sb.header_timeout,
        ),
        ("server.drain_timeout", sa.drain_timeout, sb.drain_timeout),
        ("server.idle_timeout", sa.idle_timeout, sb.idle_timeout),
        ("server.read_timeout", sa.read_timeout, sb.read_timeout),
        ("server.send_timeout", sa.send_timeout, sb.send_timeout),
        (
            "server.tunnel_idle_timeout",
            sa.tunnel_idle_timeout,
            sb.tunnel_idle_timeout,
        ),
    ] {
        out.value(key, true, x, y);
    }
    out.value(
        "server.max_connections",
        true,
        sa.max_connections,
        sb.max_connections,
    );
    out.optional("server.workers", true, sa.workers, sb.workers);
    let networks = |list: &[super::Cidr]| {
        let items: Vec<String> = list.iter().map(|n| quote(&n.to_string())).collect();
        format!("[{}]", items.join(", "))
    };
    out.push(
        "server.trusted_proxies",
        true,
        sa.trusted_proxies.as_deref().map(networks),
        sb.trusted_proxies.as_deref().map(networks),
    );
    let (ca, cb) = (&a.control, &b.control);
    out.optional(
        "control.token_file",
        true,
        ca.token_file.as_ref(),
        cb.token_file.as_ref(),
    );
    out.value("control.git_commit", false, ca.git_commit, cb.git_commit);
    out.optional(
        "control.tls_cert",
        true,
        ca.tls.as_ref().map(|t| &t.cert),
        cb.tls.as_ref().map(|t| &t.cert),
    );
    out.optional(
        "control.tls_key",
        true,
        ca.tls.as_ref().map(|t| &t.key),
        cb.tls.as_ref().map(|t| &t.key),
    );
    out.optional(
        "control.client_ca",
        true,
        ca.tls.as_ref().and_then(|t| t.client_ca.as_ref()),
        cb.tls.as_ref().and_then(|t| t.client_ca.as_ref()),
    );
    out.value("control.read_only", true, ca.read_only, cb.read_only);
    match (&a.sync, &b.sync) {
        (Some(x), Some(y)) => {
            out.value("sync.remote", true, &x.remote, &y.remote);
            out.value("sync.branch", true, &x.branch, &y.branch);
            out.value("sync.interval", true, x.interval, y.interval);
            out.optional("sync.author", true, x.author.as_ref(), y.author.as_ref());
            let peers = |s: &super::SyncConfig| {
                let quoted: Vec<String> = s.peers.iter().map(|p| quote(p)).collect();
                format!("[{}]", quoted.join(", "))
            };
            out.push("sync.peers", false, Some(peers(x)), Some(peers(y)));
        }
        (x, y) => {
            let summary = |s: &super::SyncConfig| format!("{{ remote = {} }}", quote(&s.remote));
            out.push(
                "sync",
                true,
                x.as_ref().map(summary),
                y.as_ref().map(summary),
            );
        }
    }
    let access = |log: &super::Log| match &log.access {
        AccessLog::Stderr => quote("stderr"),
        AccessLog::Off => quote("off"),
        AccessLog::File(path) => path.as_path().toml(),
    };
    out.push(
        "log.access",
        true,
        Some(access(&a.log)),
        Some(access(&b.log)),
    );
    let format = |json: bool| quote(if json { "json" } else { "text" });
    out.push(
        "log.format",
        true,
        Some(format(a.log.json)),
        Some(format(b.log.json)),
    );
}

fn tls(out: &mut Changes, a: &Config, b: &Config) {
    let (x, y) = match (&a.tls, &b.tls) {
        (Some(x), Some(y)) => (x, y),
        (x, y) => {
            let summary = |t: &super::TlsConfig| format!("{} certificates", t.certificates.len());
            out.push(
                "tls",
                false,
                x.as_ref().map(summary),
                y.as_ref().map(summary),
            );
            return;
        }
    };
    out.value(
        "tls.min_version",
        false,
        x.min_version.as_str(),
        y.min_version.as_str(),
    );
    let sni = |u: super::UnknownSni| match u {
        super::UnknownSni::Default => "default",
        super::UnknownSni::Refuse => "refuse",
    };
    out.value(
        "tls.unknown_sni",
        false,
        sni(x.unknown_sni),
        sni(y.unknown_sni),
    );
    out.optional(
        "tls.client_ca",
        false,
        x.client_ca.as_ref(),
        y.client_ca.as_ref(),
    );
    let n = x.certificates.len().max(y.certificates.len());
    for i in 0..n {
        let key = format!("tls.certificates[{i}]");
        match (x.certificates.get(i), y.certificates.get(i)) {
            (Some(c), Some(d)) => {
                out.value(&format!("{key}.cert"), false, &c.cert, &d.cert);
                out.value(&format!("{key}.key"), false, &c.key, &d.key);
                out.value(&format!("{key}.default"), false, c.default, d.default);
            }
            (c, d) => {
                let summary = |c: &super::CertificateFiles| {
                    format!("{{ cert = {} }}", c.cert.as_path().toml())
                };
                out.push(&key, false, c.map(summary), d.map(summary));
            }
        }
    }
}

/// `pools."PATTERN"`.
fn pool_key(pattern: &str) -> String {
    format!("pools.{}", quote(pattern))
}

fn backend_key(pool_key: &str, backend: &BackendConfig) -> String {
    format!("{pool_key}.backends.{}", quote(&backend.addr.to_string()))
}

fn backend_value(backend: &BackendConfig) -> String {
    format!("{{ state = {} }}", quote(backend.state.as_str()))
}

fn pool_summary(pool: &PoolConfig) -> String {
    format!(
        "{{ type = {}, backends = {} }}",
        quote(pool.pool_type.as_str()),
        pool.backends.len()
    )
}

fn check_value(check: &HealthCheck) -> String {
    format!(
        "{{ url_path = {}, healthy_values = {} }}",
        quote(&check.url_path),
        check.healthy_values.as_slice().toml()
    )
}

fn backend_tls_value(tls: &BackendTls) -> String {
    let mut parts = Vec::new();
    if let Some(ca) = &tls.ca {
        parts.push(format!("ca = {}", ca.toml()));
    }
    if let Some(name) = &tls.server_name {
        parts.push(format!("server_name = {}", quote(name)));
    }
    format!("{{ {} }}", parts.join(", "))
}

fn pool_diff_into(out: &mut Changes, a: &PoolConfig, b: &PoolConfig) {
    if a == b {
        return;
    }
    let key = pool_key(&b.pattern);
    let k = |name: &str| format!("{key}.{name}");
    out.value(
        &k("type"),
        false,
        a.pool_type.as_str(),
        b.pool_type.as_str(),
    );
    out.value(&k("interval"), false, a.interval, b.interval);
    out.value(&k("down_interval"), false, a.down_interval, b.down_interval);
    let (ha, hb) = (&a.health_checks, &b.health_checks);
    for i in 0..ha.checks.len().max(hb.checks.len()) {
        let check_key = k(&format!("health_checks[{i}]"));
        match (ha.checks.get(i), hb.checks.get(i)) {
            (Some(x), Some(y)) => {
                out.value(
                    &format!("{check_key}.url_path"),
                    false,
                    &x.url_path,
                    &y.url_path,
                );
                out.value(
                    &format!("{check_key}.healthy_values"),
                    false,
                    x.healthy_values.as_slice(),
                    y.healthy_values.as_slice(),
                );
            }
            (x, y) => out.push(&check_key, false, x.map(check_value), y.map(check_value)),
        }
    }
    out.value(&k("check_timeout"), false, ha.timeout, hb.timeout);
    out.value(&k("rise"), false, ha.rise, hb.rise);
    out.value(&k("fall"), false, ha.fall, hb.fall);
    out.value(
        &k("connect_timeout"),
        false,
        a.connect_timeout,
        b.connect_timeout,
    );
    out.value(
        &k("request_timeout"),
        false,
        a.request_timeout,
        b.request_timeout,
    );
    out.value(&k("retries"), false, a.retries, b.retries);
    out.value(&k("idle_timeout"), false, a.idle_timeout, b.idle_timeout);
    match (&a.backend_tls, &b.backend_tls) {
        (Some(x), Some(y)) => {
            out.optional(&k("backend_tls.ca"), false, x.ca.as_ref(), y.ca.as_ref());
            out.optional(
                &k("backend_tls.server_name"),
                false,
                x.server_name.as_ref(),
                y.server_name.as_ref(),
            );
        }
        (x, y) => out.push(
            &k("backend_tls"),
            false,
            x.as_ref().map(backend_tls_value),
            y.as_ref().map(backend_tls_value),
        ),
    }
    backends_into(out, &key, &a.backends, &b.backends);
    let canary_key = k("canary");
    match (&a.canary, &b.canary) {
        (Some(x), Some(y)) => {
            let ck = |name: &str| format!("{canary_key}.{name}");
            out.value(
                &ck("weight"),
                false,
                u32::from(x.weight),
                u32::from(y.weight),
            );
            let sticky = |c: &CanaryConfig| c.sticky.as_ref().map(ToString::to_string);
            out.optional(&ck("sticky"), false, sticky(x).as_ref(), sticky(y).as_ref());
            out.optional(
                &ck("force_header"),
                false,
                x.force_header.as_ref(),
                y.force_header.as_ref(),
            );
            backends_into(out, &canary_key, &x.backends, &y.backends);
        }
        (x, y) => out.push(
            &canary_key,
            false,
            x.as_ref().map(canary_value),
            y.as_ref().map(canary_value),
        ),
    }
    rollout_into(out, &k("rollout"), a.rollout.as_ref(), b.rollout.as_ref());
    rate_limit_into(
        out,
        &k("rate_limit"),
        a.rate_limit.as_ref(),
        b.rate_limit.as_ref(),
    );
}

/// A pool's `rate_limit`, key by key when both sides have one.
fn rate_limit_into(
    out: &mut Changes,
    key: &str,
    a: Option<&RateLimitConfig>,
    b: Option<&RateLimitConfig>,
) {
    let (Some(x), Some(y)) = (a, b) else {
        out.push(key, false, a.map(rate_limit_value), b.map(rate_limit_value));
        return;
    };
    let rk = |name: &str| format!("{key}.{name}");
    out.push(
        &rk("requests_per_second"),
        false,
        Some(x.requests_per_second.0.to_string()),
        Some(y.requests_per_second.0.to_string()),
    );
    out.value(&rk("burst"), false, x.burst, y.burst);
    out.push(
        &rk("key"),
        false,
        Some(quote(&x.key.to_string())),
        Some(quote(&y.key.to_string())),
    );
}

fn rate_limit_value(limit: &RateLimitConfig) -> String {
    format!(
        "{{ requests_per_second = {}, burst = {}, key = {} }}",
        limit.requests_per_second.0,
        limit.burst,
        quote(&limit.key.to_string())
    )
}

/// Each key of a pool's `[pools."P".rollout]` that differs, its progress keys included: a
/// review of a file sees a rollout started, moved, paused or ended.
fn rollout_into(
    out: &mut Changes,
    key: &str,
    a: Option<&RolloutConfig>,
    b: Option<&RolloutConfig>,
) {
    let (Some(x), Some(y)) = (a, b) else {
        out.push(key, false, a.map(rollout_value), b.map(rollout_value));
        return;
    };
    let rk = |name: &str| format!("{key}.{name}");
    let steps = |r: &RolloutConfig| {
        let steps: Vec<String> = r.steps.iter().map(ToString::to_string).collect();
        format!("[{}]", steps.join(", "))
    };
    out.push(&rk("steps"), false, Some(steps(x)), Some(steps(y)));
    out.value(&rk("bake"), false, x.bake, y.bake);
    out.push(
        &rk("min_requests"),
        false,
        Some(x.min_requests.to_string()),
        Some(y.min_requests.to_string()),
    );
    for (name, before, after) in [
        ("max_error_rate", x.max_error_rate, y.max_error_rate),
        (
            "max_error_increase",
            x.max_error_increase,
            y.max_error_increase,
        ),
        ("max_p99_ratio", x.max_p99_ratio, y.max_p99_ratio),
    ] {
        out.push(
            &rk(name),
            false,
            Some(before.0.to_string()),
            Some(after.0.to_string()),
        );
    }
    let on_failure = |r: &RolloutConfig| quote(r.on_failure.as_str());
    out.push(
        &rk("on_failure"),
        false,
        Some(on_failure(x)),
        Some(on_failure(y)),
    );
    let on_success = |r: &RolloutConfig| quote(r.on_success.as_str());
    out.push(
        &rk("on_success"),
        false,
        Some(on_success(x)),
        Some(on_success(y)),
    );
    let (px, py) = (&x.progress, &y.progress);
    let state = |p: &RolloutProgress| p.state.map(|s| quote(s.as_str()));
    out.push(&rk("state"), false, state(px), state(py));
    out.value(&rk("step"), false, px.step, py.step);
    let started = |p: &RolloutProgress| {
        p.step_started
            .map(|at| quote(&humantime::format_rfc3339_millis(at).to_string()))
    };
    out.push(&rk("step_started"), false, started(px), started(py));
    out.optional(&rk("reason"), false, px.reason.as_ref(), py.reason.as_ref());
    out.optional(&rk("driver"), false, px.driver.as_ref(), py.driver.as_ref());
}

fn rollout_value(rollout: &RolloutConfig) -> String {
    let state = rollout.progress.state.map_or("new", |s| s.as_str());
    format!(
        "{{ steps = {}, state = {} }}",
        rollout.steps.len(),
        quote(state)
    )
}

fn canary_value(canary: &CanaryConfig) -> String {
    format!(
        "{{ weight = {}, backends = {} }}",
        canary.weight,
        canary.backends.len()
    )
}

/// The backends of one list (a pool's, or its canary's: `key` is the table holding it) that
/// came, went or changed state.
fn backends_into(out: &mut Changes, key: &str, a: &[BackendConfig], b: &[BackendConfig]) {
    let find = |list: &[BackendConfig], backend: &BackendConfig| {
        list.iter().position(|x| x.addr == backend.addr)
    };
    for backend in b {
        match find(a, backend).map(|i| &a[i]) {
            Some(old) => out.value(
                &format!("{}.state", backend_key(key, backend)),
                false,
                old.state.as_str(),
                backend.state.as_str(),
            ),
            None => out.push(
                &backend_key(key, backend),
                false,
                None,
                Some(backend_value(backend)),
            ),
        }
    }
    for backend in a {
        if find(b, backend).is_none() {
            out.push(
                &backend_key(key, backend),
                false,
                Some(backend_value(backend)),
                None,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Config {
        crate::config::parse(text).expect("valid")
    }

    #[test]
    fn equal_files_differ_in_nothing_and_defaults_count_as_values() {
        let a = parse("[pools.\"/\"]\nbackends = [\"127.0.0.1:1\"]\n");
        let b = parse("[server]\nheader_timeout = \"10s\"\n[pools.\"/\"]\ninterval = \"10s\"\nbackends = [\"127.0.0.1:1\"]\n");
        assert_eq!(diff(&a, &b), []);
    }

    #[test]
    fn a_canary_s_weight_keys_and_backends_are_changes_of_their_own() {
        let pool = "[pools.\"/\"]\nbackends = [\"127.0.0.1:1\"]\n";
        let a = parse(pool);
        let b = parse(&format!(
            "{pool}[pools.\"/\".canary]\nbackends = [\"127.0.0.1:2\"]\nweight = 5\n"
        ));
        let c = parse(&format!(
            "{pool}[pools.\"/\".canary]\nbackends = [\"127.0.0.1:3\"]\nweight = 25\nsticky = \"cookie:s\"\n"
        ));
        let lines = |x: &Config, y: &Config| -> Vec<String> {
            diff(x, y).iter().map(ToString::to_string).collect()
        };
        assert_eq!(
            lines(&a, &b),
            ["+ pools.\"/\".canary = { weight = 5, backends = 1 }"]
        );
        assert_eq!(
            lines(&b, &c),
            [
                "~ pools.\"/\".canary.weight: 5 -> 25",
                "+ pools.\"/\".canary.sticky = \"cookie:s\"",
                "+ pools.\"/\".canary.backends.\"127.0.0.1:3\" = { state = \"enabled\" }",
                "- pools.\"/\".canary.backends.\"127.0.0.1:2\" = { state = \"enabled\" }",
            ]
        );
    }

    #[test]
    fn a_rate_limit_and_trusted_proxies_are_changes_key_by_key() {
        let pool = "[pools.\"/\"]\nbackends = [\"127.0.0.1:1\"]\n";
        let a = parse(pool);
        let b = parse(&format!(
            "[server]\ntrusted_proxies = [\"10.0.0.0/8\"]\n{pool}rate_limit = {{ requests_per_second = 10, burst = 5 }}\n"
        ));
        let c = parse(&format!(
            "{pool}rate_limit = {{ requests_per_second = 2.5, burst = 5, key = \"header:X-Api-Key\" }}\n"
        ));
        let lines = |x: &Config, y: &Config| -> Vec<String> {
            diff(x, y).iter().map(ToString::to_string).collect()
        };
        assert_eq!(
            lines(&a, &b),
            [
                "+ server.trusted_proxies = [\"10.0.0.0/8\"] (restart needed)",
                "+ pools.\"/\".rate_limit = { requests_per_second = 10, burst = 5, key = \"ip\" }",
            ]
        );
        assert_eq!(
            lines(&b, &c),
            [
                "- server.trusted_proxies = [\"10.0.0.0/8\"] (restart needed)",
                "~ pools.\"/\".rate_limit.requests_per_second: 10 -> 2.5",
                "~ pools.\"/\".rate_limit.key: \"ip\" -> \"header:x-api-key\"",
            ]
        );
    }

    #[test]
    fn each_change_names_its_key_and_both_values() {
        let a = parse("[pools.\"/\"]\nbackends = [\"127.0.0.1:1\"]\n");
        let b = parse(
            "[listen]\nhttp = \"127.0.0.1:9\"\n[pools.\"/\"]\ninterval = \"30s\"\nretries = 3\n\
             health_checks = [{ url_path = \"/status\", healthy_values = [\"up\"] }]\n\
             backends = [{ addr = \"127.0.0.1:1\", state = \"drain\" }, \"127.0.0.1:2\"]\n",
        );
        let lines: Vec<String> = diff(&a, &b).iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "~ listen.http: \"0.0.0.0:8080\" -> \"127.0.0.1:9\" (restart needed)",
                "~ pools.\"/\".interval: \"10s\" -> \"30s\"",
                "~ pools.\"/\".health_checks[0].url_path: \"/healthz\" -> \"/status\"",
                "~ pools.\"/\".health_checks[0].healthy_values: [\"ok\", \"OK\"] -> [\"up\"]",
                "~ pools.\"/\".retries: 1 -> 3",
                "~ pools.\"/\".backends.\"127.0.0.1:1\".state: \"enabled\" -> \"drain\"",
                "+ pools.\"/\".backends.\"127.0.0.1:2\" = { state = \"enabled\" }",
            ]
        );
    }
}
