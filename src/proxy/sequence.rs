//! The request policy both engines share, each rule written once: the proxy's context
//! ([`Proxy`]), routing a request to a pool or to lb's own answer ([`route`],
//! [`Proxy::https_redirect`]), the two-level selection of a backend (the canary split, then
//! P2C within the side: [`Attempts::pick`]), the retry and passive-ejection rules ([`Attempts`],
//! [`attempt_failed`]), a pool's rate limit ([`Proxy::over_rate_limit`], after routing and
//! before a backend is picked), lb's own answers when no backend answered ([`Failure`]) and the
//! account of a request (its stats and access line: [`Proxy::account`]). It decides nothing of a
//! protocol's wire: `proxy::h1` and `proxy::h2` turn their bytes and frames into the calls here.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, StatusCode};

use super::headers::ForwardedClient;
use super::stall::{AfterHead, Timeout};
use super::upstream::ExchangeError;
use super::{Peer, PeerTrust};
use crate::access_log::{self, AccessLog};
use crate::balance;
use crate::canary::split::{self, force_from_header, Available};
use crate::canary::stats::Outcome;
use crate::canary::Side;
use crate::config::{Cidr, RateLimitKey, Sticky};
use crate::metrics::Global;
use crate::routing::Route;
use crate::topology::{Backend, Pool, SharedTopology, Topology};

/// Request bodies up to this many bytes are read whole before a backend is picked, in both
/// engines: a malformed one never reaches a backend, and a failed attempt can send it again.
pub const MAX_BUFFERED_BODY: usize = 64 * 1024;

/// Everything the request path needs; cheap to share between connections.
pub struct Proxy {
    pub(super) topology: SharedTopology,
    pub(super) metrics: Arc<Global>,
    pub(super) access_log: AccessLog,
    /// The timeouts after a response head, on both engines and in tunnels.
    pub(super) after_head: AfterHead,
    /// `redirect_https`: the port cleartext requests are sent to over HTTPS.
    redirect_https: Option<u16>,
    /// `[server] trusted_proxies`; `None` when unset.
    trusted_proxies: Option<Box<[Cidr]>>,
}

/// The kinds of a rate limit's keys, so an address and a header value never share a bucket.
const KEY_IP: u8 = 0;
const KEY_HEADER: u8 = 1;

impl Proxy {
    /// A proxy over the shared topology, reporting to `metrics` and `access_log`.
    pub fn new(
        topology: SharedTopology,
        metrics: Arc<Global>,
        access_log: AccessLog,
        after_head: AfterHead,
    ) -> Proxy {
        Proxy {
            topology,
            metrics,
            access_log,
            after_head,
            redirect_https: None,
            trusted_proxies: None,
        }
    }

    /// `[server] trusted_proxies`: peers in these networks are believed about their clients'
    /// addresses (`X-Forwarded-For`); the field of any other peer is replaced.
    pub fn trust_proxies(&mut self, networks: Vec<Cidr>) {
        self.trusted_proxies = Some(networks.into_boxed_slice());
    }

    /// What a request from the peer `ip` makes of its `X-Forwarded-For`.
    pub(super) fn peer_trust(&self, ip: IpAddr) -> PeerTrust {
        match &self.trusted_proxies {
            None => PeerTrust::Unset,
            Some(networks) if networks.iter().any(|n| n.contains(ip)) => PeerTrust::Trusted,
            Some(_) => PeerTrust::Untrusted,
        }
    }

    /// The client's IP address: the peer's, or, from a trusted proxy, the one its
    /// `X-Forwarded-For` gives ([`ForwardedClient`]).
    pub(super) fn client_ip(&self, client: Peer<'_>, fields: &impl Fields) -> IpAddr {
        let peer = client.addr.ip().to_canonical();
        match (&self.trusted_proxies, self.peer_trust(peer)) {
            (Some(trusted), PeerTrust::Trusted) => {
                let mut forwarded = ForwardedClient::new(trusted);
                fields.find("x-forwarded-for", |value| {
                    forwarded.feed(value);
                    None::<()>
                });
                forwarded.client(peer)
            }
            _ => peer,
        }
    }

    /// A pool's `rate_limit`, checked once routing chose `pool` and before any backend is
    /// picked: `Some` answer, 429 with `Retry-After` (whole seconds, at least 1), when the
    /// request's key has spent its bucket; counted in `lb_rate_limited_total`. The key is the
    /// client's IP address ([`Proxy::client_ip`]) or a header's value (the client's address for
    /// a request without it). `started`: when the request began, the limiter's clock.
    pub(super) fn over_rate_limit(
        &self,
        pool: &Pool,
        client: Peer<'_>,
        fields: &impl Fields,
        started: Instant,
    ) -> Option<LocalAnswer> {
        let limit = pool.rate_limit.as_ref()?;
        let limiter = &limit.limiter;
        let by_header = match &limit.key {
            RateLimitKey::Ip => None,
            RateLimitKey::Header(name) => fields.find(name, |value| {
                (!value.is_empty()).then(|| limiter.key(KEY_HEADER, value))
            }),
        };
        let key = by_header.unwrap_or_else(|| match self.client_ip(client, fields) {
            IpAddr::V4(ip) => limiter.key(KEY_IP, &ip.octets()),
            IpAddr::V6(ip) => limiter.key(KEY_IP, &ip.octets()),
        });
        let limited = limiter.check(key, started).err()?;
        limit.limited.fetch_add(1, Ordering::Relaxed);
        Some(LocalAnswer {
            status: StatusCode::TOO_MANY_REQUESTS,
            text: "too many requests\n",
            header: Some((
                "retry-after",
                itoa::Buffer::new()
                    .format(limited.retry_after_secs())
                    .to_owned(),
            )),
        })
    }

    /// `redirect_https`: cleartext requests get 308 to the same URL over HTTPS on `port`.
    pub fn redirect_to_https(&mut self, port: u16) {
        self.redirect_https = Some(port);
    }

    /// With `redirect_https`, lb's answer to a cleartext request, in both protocols: 308 to
    /// the same host, path and query over HTTPS (the port left out when 443), or 400 when the
    /// request names no host (HTTP/1.0 without `Host`): there is no URL to send it to, and
    /// serving it in cleartext would defeat the redirect. `None`: the request is routed as usual
    /// (it came over TLS, or no redirect is set).
    pub(super) fn https_redirect(
        &self,
        https: bool,
        host: &str,
        path: &str,
        query: Option<&str>,
    ) -> Option<LocalAnswer> {
        let port = self.redirect_https.filter(|_| !https)?;
        let name = crate::routing::strip_port(host);
        if name.is_empty() {
            return Some(LocalAnswer {
                status: StatusCode::BAD_REQUEST,
                text: "redirect_https: the request names no host to redirect to\n",
                header: None,
            });
        }
        let mut location = String::with_capacity(16 + host.len() + path.len());
        location.push_str("https://");
        location.push_str(name);
        if port != 443 {
            location.push(':');
            location.push_str(&port.to_string());
        }
        location.push_str(path);
        if let Some(query) = query {
            location.push('?');
            location.push_str(query);
        }
        Some(LocalAnswer {
            status: StatusCode::PERMANENT_REDIRECT,
            text: "",
            header: Some(("location", location)),
        })
    }

    /// Counts one answered request in its backend's stats (or lb's own, for answers no backend
    /// gave) and in its canary side's window, and writes its access line.
    pub(super) fn account(
        &self,
        client: Peer<'_>,
        method: &Method,
        path: &str,
        status: u16,
        placed: Placed<'_>,
        elapsed: Duration,
    ) {
        match placed.backend {
            Some(backend) => backend.stats.record(status, elapsed),
            None => self.metrics.local.record(status, elapsed),
        }
        if let (Some(pool), Some(side)) = (placed.pool, placed.side) {
            if let Some(canary) = &pool.canary {
                let outcome = if placed.by_lb {
                    Outcome::Lb(status)
                } else {
                    Outcome::Backend(status)
                };
                canary.comparison.record(side, outcome, elapsed);
            }
        }
        self.access_log.write(&access_log::Line {
            client: client.addr,
            client_cert: client.cert,
            method,
            path,
            status,
            pool: placed.pool.map(|p| &*p.pattern),
            backend: placed.backend.map(|b| b.authority.as_str()),
            duration: elapsed,
            timeout: None,
            error: placed.error,
        });
    }

    /// Counts a timeout after a response head and says so in the process log.
    pub(super) fn timed_out(&self, timeout: Timeout, backend: Option<&Backend>) {
        timeout.count(&self.metrics);
        let backend = backend.map(|b| b.authority.as_str()).unwrap_or("-");
        tracing::info!(
            timeout = timeout.key(),
            backend,
            "closed both sides after a timeout"
        );
    }
}

/// Where a request went, for its account: its pool, the side of the pool's canary split
/// (`None` before a backend was picked), the backend, and whether the answer is lb's own.
#[derive(Clone, Copy, Default)]
pub(super) struct Placed<'a> {
    pub pool: Option<&'a Pool>,
    pub side: Option<Side>,
    pub backend: Option<&'a Arc<Backend>>,
    /// lb answered (a 502, 503, 504 or a refusal), not a backend.
    pub by_lb: bool,
    /// Why lb answered itself after a backend failed, for the access line.
    pub error: Option<&'a str>,
}

impl<'a> Placed<'a> {
    /// lb's own answer, before or without a pool.
    pub fn nowhere() -> Placed<'a> {
        Placed {
            by_lb: true,
            ..Placed::default()
        }
    }

    /// lb's own answer for a request of `pool` that reached no backend's side.
    pub fn refused(pool: &'a Pool) -> Placed<'a> {
        Placed {
            pool: Some(pool),
            by_lb: true,
            ..Placed::default()
        }
    }

    /// A backend's response.
    pub fn answered(pool: &'a Pool, side: Side, backend: &'a Arc<Backend>) -> Placed<'a> {
        Placed {
            pool: Some(pool),
            side: Some(side),
            backend: Some(backend),
            by_lb: false,
            error: None,
        }
    }

    /// lb's answer `failure` for a request of `pool`.
    pub fn failed(pool: &'a Pool, failure: &'a Failure) -> Placed<'a> {
        Placed {
            pool: Some(pool),
            side: failure.side,
            backend: failure.backend.as_ref(),
            by_lb: true,
            error: failure.error.as_deref(),
        }
    }
}

/// A request's header fields as the canary split reads them, over either protocol's head.
pub(super) trait Fields {
    /// The first value of the field `name` (lowercase) for which `f` gives `Some`, the fields
    /// taken in the order the client sent them.
    fn find<'a, T>(&'a self, name: &str, f: impl FnMut(&'a [u8]) -> Option<T>) -> Option<T>;
}

/// What the split reads of a request: its sticky key and its force header, by the canary's
/// settings. A sticky header sent twice is no key (which one would be ambiguous): the request
/// is split by the counter.
fn split_request<'a>(
    canary: &crate::topology::Canary,
    fields: &'a impl Fields,
) -> split::Request<'a> {
    let sticky_key = match &canary.sticky {
        None => None,
        Some(Sticky::Cookie(name)) => fields.find("cookie", |value| cookie_value(value, name)),
        Some(Sticky::Header(name)) => {
            let (mut first, mut twice) = (None, false);
            fields.find(name, |value| {
                twice = first.is_some();
                first = first.or(Some(value));
                twice.then_some(())
            });
            first.filter(|value: &&[u8]| !twice && !value.is_empty())
        }
    };
    let force = canary
        .force_header
        .as_deref()
        .and_then(|name| fields.find(name, force_from_header));
    split::Request { sticky_key, force }
}

/// The value of cookie `name` in one `Cookie` field (`a=1; b=2`, RFC 6265 §5.4), if present and
/// not empty.
fn cookie_value<'a>(field: &'a [u8], name: &str) -> Option<&'a [u8]> {
    field.split(|&b| b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let at = pair.iter().position(|&b| b == b'=')?;
        let (key, value) = (&pair[..at], &pair[at + 1..]);
        let value = value
            .strip_prefix(b"\"")
            .and_then(|v| v.strip_suffix(b"\""))
            .unwrap_or(value);
        (key == name.as_bytes() && !value.is_empty()).then_some(value)
    })
}

impl Fields for http::HeaderMap {
    fn find<'a, T>(&'a self, name: &str, f: impl FnMut(&'a [u8]) -> Option<T>) -> Option<T> {
        self.get_all(name).iter().map(|v| v.as_bytes()).find_map(f)
    }
}

/// What routing decided for a request, in both protocols.
pub(super) enum Routed<'t> {
    Pool(&'t Pool),
    Local(LocalAnswer),
}

/// An answer lb gives without a backend (a redirect, 405, 404), as both protocols' engines render
/// it: the status, a short `text/plain` body (none when empty), and one header if any.
pub(super) struct LocalAnswer {
    pub status: StatusCode,
    pub text: &'static str,
    /// `location` or `allow` (lowercase), and its value.
    pub header: Option<(&'static str, String)>,
}

/// Routes a request, for both protocols; `query` is the target's query without its `?`.
pub(super) fn route<'t>(
    topology: &'t Topology,
    method: &Method,
    host: &str,
    path: &str,
    query: Option<&str>,
) -> Routed<'t> {
    let not_found = || {
        Routed::Local(LocalAnswer {
            status: StatusCode::NOT_FOUND,
            text: "404 page not found\n",
            header: None,
        })
    };
    match topology.routes.route(method, host, path) {
        Route::Matched(&idx) => topology
            .pools
            .get(idx)
            .map_or_else(not_found, |pool| Routed::Pool(pool)),
        Route::Redirect(mut location) => {
            if let Some(query) = query {
                location.push('?');
                location.push_str(query);
            }
            Routed::Local(LocalAnswer {
                status: StatusCode::MOVED_PERMANENTLY,
                text: "",
                header: Some(("location", location)),
            })
        }
        Route::MethodNotAllowed => Routed::Local(LocalAnswer {
            status: StatusCode::METHOD_NOT_ALLOWED,
            text: "method not allowed\n",
            header: Some((
                "allow",
                topology.routes.allowed_methods(host, path).join(", "),
            )),
        }),
        Route::NotFound => not_found(),
    }
}

/// A short answer lb gives when no backend answered; the same on both paths.
pub(super) struct Failure {
    pub status: StatusCode,
    pub text: &'static str,
    /// The backend that failed after the request may have reached it, for its stats.
    pub backend: Option<Arc<Backend>>,
    /// What went wrong with the backend (its error and causes), for the access line.
    pub error: Option<Box<str>>,
    /// The side of the pool's canary split the request was on, for its window.
    pub side: Option<Side>,
}

impl Failure {
    pub fn new(status: StatusCode, text: &'static str) -> Failure {
        Failure {
            status,
            text,
            backend: None,
            error: None,
            side: None,
        }
    }

    /// No backend of the pool is in rotation.
    pub fn no_backend() -> Failure {
        Failure::new(StatusCode::SERVICE_UNAVAILABLE, "no healthy backend\n")
    }

    /// `request_timeout` passed before the response head; never retried.
    fn timed_out(pool: &Pool, backend: Arc<Backend>) -> Failure {
        tracing::warn!(pool = %pool.pattern, backend = %backend.addr, timeout = ?pool.request_timeout, "backend timed out");
        Failure {
            backend: Some(backend),
            ..Failure::new(StatusCode::GATEWAY_TIMEOUT, "backend timed out\n")
        }
    }
}

/// The selection and retry rules of both protocols: which backend each attempt of a request
/// goes to, and what a failed one comes to (see [`attempt_failed`]).
///
/// Two levels, as linkerd2-proxy splits traffic: the first attempt chooses the side of a pool
/// with a canary (`canary::split`: force header, sticky key, or the weighted counter; a side
/// with no backend in rotation hands the request to the other, counted), then P2C picks within
/// that side — weights never enter P2C, which would bend them. A retry goes to another
/// backend of the side in rotation when there is one, else to the same one again, except after
/// a malformed answer: that backend is not asked again. A side left with nothing in rotation
/// mid-request (its last backend ejected) hands the retry to the other side.
#[derive(Default)]
pub(super) struct Attempts {
    n_retries: u32,
    /// The side chosen at the first pick; stable for a pool without a canary.
    side: Option<Side>,
    /// The last failed attempt: its backend is avoided by the retry, and its answer is given
    /// when no backend is left to retry on.
    failed: Option<(Arc<Backend>, Failure)>,
    /// The last failure rules its backend out for this request.
    exclude_failed: bool,
}

impl Attempts {
    /// The backend for the next attempt, or the answer to give when none is left. `fields`:
    /// the request's header fields, read only for a pool whose canary is sticky or forced.
    pub fn pick(
        &mut self,
        pool: &Pool,
        fields: &impl Fields,
        rng: &mut fastrand::Rng,
    ) -> Result<Arc<Backend>, Failure> {
        let side = *self.side.get_or_insert_with(|| choose_side(pool, fields));
        let picked = match &self.failed {
            Some((last, _)) => {
                let exclude = |b: &&Arc<Backend>| !(self.exclude_failed && Arc::ptr_eq(b, last));
                balance::pick_other(pool, side, rng, last)
                    .filter(exclude)
                    .map(|b| (side, b))
                    .or_else(|| {
                        let other = side.other();
                        let canary = pool.canary.as_ref()?;
                        let backend = balance::pick_backend(pool, other, rng).filter(exclude)?;
                        canary.comparison.record_fallback(side);
                        Some((other, backend))
                    })
            }
            None => balance::pick_backend(pool, side, rng).map(|b| (side, b)),
        };
        match picked {
            Some((side, backend)) => {
                self.side = Some(side);
                Ok(Arc::clone(backend))
            }
            None => Err(self.failed.take().map_or_else(
                || Failure {
                    side: Some(side),
                    ..Failure::no_backend()
                },
                |(_, failure)| failure,
            )),
        }
    }

    /// The side the request is on (stable until the first pick, and for a pool without a
    /// canary).
    pub fn side(&self) -> Side {
        self.side.unwrap_or(Side::Stable)
    }

    /// Accounts a failed attempt; `Some` with the answer to give when it is the last one.
    pub fn failed(
        &mut self,
        pool: &Pool,
        backend: Arc<Backend>,
        error: &ExchangeError,
        replay: Replay,
    ) -> Option<Failure> {
        let (retry, mut failure) = attempt_failed(pool, &backend, error, replay);
        failure.side = Some(self.side());
        if let (Some(canary), ExchangeError::Connect { .. }) = (&pool.canary, error) {
            canary.comparison.record_connect_failure(self.side());
        }
        if !(retry && self.n_retries < pool.retries) {
            return Some(failure);
        }
        self.n_retries += 1;
        backend.count_retry();
        self.exclude_failed = error.is_malformed();
        self.failed = Some((backend, failure));
        None
    }

    /// `request_timeout` passed before `backend`'s response head: the answer, never retried.
    pub fn timed_out(&self, pool: &Pool, backend: Arc<Backend>) -> Failure {
        if let Some(canary) = &pool.canary {
            canary.comparison.record_timeout(self.side());
        }
        Failure {
            side: Some(self.side()),
            ..Failure::timed_out(pool, backend)
        }
    }
}

/// The first level of the selection: the side of `pool` a request goes to (stable for a pool
/// without a canary).
fn choose_side(pool: &Pool, fields: &impl Fields) -> Side {
    let Some(canary) = &pool.canary else {
        return Side::Stable;
    };
    let available = Available {
        stable: balance::side_in_rotation(pool, Side::Stable),
        canary: balance::side_in_rotation(pool, Side::Canary),
    };
    let request = if canary.sticky.is_some() || canary.force_header.is_some() {
        split_request(canary, fields)
    } else {
        split::Request::default()
    };
    let choice = canary
        .comparison
        .split
        .choose(canary.weight, request, available);
    if choice.fell_back {
        canary.comparison.record_fallback(choice.side.other());
    }
    choice.side
}

/// Whether a failed attempt may go again on another backend, by what the backend may have seen.
#[derive(Clone, Copy)]
pub(super) struct Replay {
    /// The request was not sent (a failed connect): its body, if any, can still be sent.
    pub unsent: bool,
    /// The request may have reached the backend, which then failed before answering (reset,
    /// closed: typically a restart). Like nginx's `proxy_next_upstream`, only an idempotent
    /// request whose body can be sent again goes again.
    pub sent: bool,
}

/// What a failed attempt comes to, on both paths: a refused or timed-out connect takes the
/// backend out of rotation (passive health, never a pool's last in rotation: `Pool::eject`; the
/// active checker brings it back) and may be retried per `replay.unsent`; any other failure is
/// logged and may be retried per `replay.sent`.
/// Returns whether to retry (within the pool's `retries`) and the answer if not.
pub(super) fn attempt_failed(
    pool: &Pool,
    backend: &Arc<Backend>,
    error: &ExchangeError,
    replay: Replay,
) -> (bool, Failure) {
    // Written once: the log line and, if no retry answers, the access line carry it.
    let reason = crate::errors::error_chain(error);
    if let ExchangeError::Connect { .. } = error {
        if pool.eject(backend) {
            tracing::warn!(pool = %pool.pattern, backend = %backend.addr, error = %reason, "connect failed; backend out of rotation");
        }
        let failure = if is_timeout(error) {
            Failure::new(StatusCode::GATEWAY_TIMEOUT, "backend connect timed out\n")
        } else {
            Failure::new(StatusCode::BAD_GATEWAY, "backend unavailable\n")
        };
        let failure = Failure {
            error: Some(reason.into()),
            ..failure
        };
        return (replay.unsent, failure);
    }
    tracing::warn!(pool = %pool.pattern, backend = %backend.addr, error = %reason, "backend request failed");
    let failure = Failure {
        backend: Some(Arc::clone(backend)),
        error: Some(reason.into()),
        ..Failure::new(StatusCode::BAD_GATEWAY, "backend failed\n")
    };
    (replay.sent, failure)
}

/// Methods that RFC 9110 (section 9.2.2) defines as idempotent: sending one twice has the effect
/// of sending it once, so it may be retried after the backend may have seen it.
pub(super) fn is_idempotent(method: &http::Method) -> bool {
    use http::Method;
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// True when an error (or one of its sources) is an I/O timeout, such as `connect_timeout`.
fn is_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        source = cause.source();
    }
    false
}
