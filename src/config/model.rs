//! The validated configuration: what lb.toml means once every default is applied.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::routing::Router;

/// A pool's health-check `interval` when the file sets none.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// A pool's `down_interval` when the file sets none: a backend out of rotation is probed this
/// often (HAProxy's `downinter`), so one that comes back takes traffic within about as long.
pub const DEFAULT_DOWN_INTERVAL: Duration = Duration::from_secs(1);
/// A pool's `connect_timeout` when the file sets none.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// A pool's `request_timeout` when the file sets none.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// A pool's `check_timeout` when the file sets none.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(1);
/// A pool's backend `idle_timeout` when the file sets none.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// A rollout's `bake` when the file sets none.
pub const DEFAULT_BAKE: Duration = Duration::from_secs(60);
/// A rollout's `min_requests` when the file sets none: enough for a p99 to mean something.
pub const DEFAULT_MIN_REQUESTS: u64 = 100;
/// A rollout's `max_error_rate` when the file sets none.
pub const DEFAULT_MAX_ERROR_RATE: f64 = 0.05;
/// A rollout's `max_error_increase` when the file sets none.
pub const DEFAULT_MAX_ERROR_INCREASE: f64 = 0.01;
/// A rollout's `max_p99_ratio` when the file sets none.
pub const DEFAULT_MAX_P99_RATIO: f64 = 1.5;

/// A whole, valid lb.toml.
#[derive(Debug)]
pub struct Config {
    /// `[listen]`: the addresses lb binds.
    pub listen: Listen,
    /// `[server]`: client-side timeouts and limits.
    pub server: Server,
    /// `[control]`: how the control API authenticates and records changes.
    pub control: Control,
    /// `[log]`: where logs go and in what format.
    pub log: Log,
    /// `[sync]`: the git remote this instance follows and pushes its changes to; `None` without
    /// a `[sync]` table.
    pub sync: Option<SyncConfig>,
    /// The data plane's certificates and TLS settings; `None` without a `[tls]` table.
    pub tls: Option<TlsConfig>,
    /// In file order.
    pub pools: Vec<PoolConfig>,
    /// `allow_empty = true`: the file means to have no pools. Without it, a file with none (an
    /// empty or truncated save is valid TOML) is refused as a reload and by `lb check`
    /// ([`crate::config::refuse_empty`]).
    pub allow_empty: bool,
    /// Every pool's pattern compiled once; the value is the index into `pools`. Building it is
    /// also how pattern conflicts are found, so validation and the topology share one build:
    /// the applied `Config` and its `Topology` hold the same `Arc`.
    pub routes: Arc<Router<usize>>,
}

impl Config {
    /// The pool whose pattern is exactly `pattern`, as written in the file.
    pub fn pool(&self, pattern: &str) -> Option<&PoolConfig> {
        self.pools.iter().find(|p| p.pattern == pattern)
    }

    /// Makes every relative file path in the config (`control.token_file`, `tls_cert`,
    /// `tls_key`, `client_ca`, `log.access`, the `[tls]` files and each pool's
    /// `backend_tls.ca`) relative to the directory holding the config file,
    /// as Prometheus' web config file does, so a secret kept beside lb.toml is found whatever
    /// directory lb was started from. The result is absolute, so resolving twice changes
    /// nothing.
    pub fn resolve_paths(&mut self, config_path: &Path) {
        let Some(dir) = config_dir(config_path) else {
            return;
        };
        let resolve = |path: &mut PathBuf| {
            if path.is_relative() {
                *path = dir.join(&*path);
            }
        };
        if let Some(path) = &mut self.control.token_file {
            resolve(path);
        }
        if let Some(tls) = &mut self.control.tls {
            resolve(&mut tls.cert);
            resolve(&mut tls.key);
            if let Some(path) = &mut tls.client_ca {
                resolve(path);
            }
        }
        if let AccessLog::File(path) = &mut self.log.access {
            resolve(path);
        }
        if let Some(tls) = &mut self.tls {
            for files in &mut tls.certificates {
                resolve(&mut files.cert);
                resolve(&mut files.key);
            }
            if let Some(path) = &mut tls.client_ca {
                resolve(path);
            }
        }
        for pool in &mut self.pools {
            if let Some(BackendTls { ca: Some(path), .. }) = &mut pool.backend_tls {
                resolve(path);
            }
        }
    }
}

/// `[listen]`: the sockets lb serves on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    /// The proxy listener for client traffic.
    pub http: SocketAddr,
    /// The gRPC control API listener.
    pub grpc: SocketAddr,
    /// The admin listener (`/metrics`, `/healthz`, dashboard); off when `None`.
    pub admin: Option<SocketAddr>,
    /// `[listen] https`: one or several addresses serving TLS with the `[tls]` certificates.
    pub https: Vec<SocketAddr>,
    /// `[listen] redirect_https`: the cleartext listener answers 308 to the HTTPS URL.
    pub redirect_https: bool,
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            http: SocketAddr::from(([0, 0, 0, 0], 8080)),
            grpc: SocketAddr::from(([127, 0, 0, 1], 8081)),
            admin: None,
            https: Vec::new(),
            redirect_https: false,
        }
    }
}

/// `[server]`: limits and timeouts on the client side of the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// A client must send its whole request head within this.
    pub header_timeout: Duration,
    /// How long in-flight requests may finish after SIGTERM.
    pub drain_timeout: Duration,
    /// A client connection with no request in flight and no byte received is closed after this.
    pub idle_timeout: Duration,
    /// After a response head, the backend may be silent this long while its body is awaited.
    pub read_timeout: Duration,
    /// A client may take no response byte for this long.
    pub send_timeout: Duration,
    /// An upgrade tunnel may carry no byte either way for this long.
    pub tunnel_idle_timeout: Duration,
    /// Client connections open at once; past it the idle ones are evicted for new ones, and
    /// while none is idle more wait in the listen backlog.
    pub max_connections: usize,
    /// Client connections open at once from one IP address; `None`: no such limit.
    pub max_connections_per_ip: Option<u32>,
    /// Runtime worker threads; `None` means one per core.
    pub workers: Option<usize>,
    /// `trusted_proxies`: the peers whose `X-Forwarded-For` lb believes (a pool's
    /// `rate_limit` keyed by `"ip"` reads the client from it) and passes on. `None` (unset): no
    /// peer is believed, and a client's `X-Forwarded-For` is passed on with the peer appended,
    /// as lb always did; `Some` (an empty list too): the field of a peer outside the list is
    /// replaced by the peer's address.
    pub trusted_proxies: Option<Vec<Cidr>>,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            header_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            read_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            tunnel_idle_timeout: Duration::from_secs(3600),
            max_connections: 10_000,
            max_connections_per_ip: None,
            workers: None,
            trusted_proxies: None,
        }
    }
}

/// Where logs go. Process settings: they take effect at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log {
    /// Where the access log goes.
    pub access: AccessLog,
    /// Log lines as JSON objects rather than text.
    pub json: bool,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            access: AccessLog::Stderr,
            json: false,
        }
    }
}

/// The one-line-per-request access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLog {
    /// One line per request on standard error.
    Stderr,
    /// No access log.
    Off,
    /// Appended to this file.
    File(PathBuf),
}

/// `[control]`: authentication and change history of the control API.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Control {
    /// A file holding the bearer token every control call must carry; no token check when `None`.
    pub token_file: Option<PathBuf>,
    /// Commit each successful control-API change to the git work tree holding lb.toml.
    pub git_commit: bool,
    /// TLS for the control listener; plaintext HTTP/2 (h2c) when `None`.
    pub tls: Option<ControlTls>,
    /// Refuse every mutation (FAILED_PRECONDITION): this instance follows a file changed
    /// elsewhere (a ConfigMap, a git remote, a deploy tool).
    pub read_only: bool,
}

/// `[sync] interval` when the file sets none.
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_secs(10);

/// `[sync]`: the directory holding lb.toml is a git working tree that follows `branch` of
/// `remote`; control-API changes are committed and pushed there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncConfig {
    /// Any URL git accepts (ssh, https, a path); git's own credential setup applies.
    pub remote: String,
    /// The branch every instance follows and pushes to.
    pub branch: String,
    /// How often the remote is fetched.
    pub interval: Duration,
    /// `Name <email>` for the commits of control-API changes; the caller's name when `None`.
    pub author: Option<String>,
    /// The admin listeners (`HOST:PORT`) of every instance of the fleet, this one's may be
    /// among them: a rollout's driver sums their windows. Read on every reload.
    pub peers: Vec<String>,
}

/// `[control] tls_cert`, `tls_key` and `client_ca`: PEM files, read once at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlTls {
    /// The server's certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key of the leaf certificate.
    pub key: PathBuf,
    /// When set, every client must present a certificate signed by one of these CAs (mutual
    /// TLS), which lb counts as authentication.
    pub client_ca: Option<PathBuf>,
}

/// `[tls]`: the data plane's certificates, chosen by SNI, and the handshake settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// `[[tls.certificates]]` in file order; never empty.
    pub certificates: Vec<CertificateFiles>,
    /// The lowest protocol version offered.
    pub min_version: TlsVersion,
    /// What a client gets that sends no SNI or a name no certificate covers.
    pub unknown_sni: UnknownSni,
    /// When set, clients must present a certificate signed by one of these CAs.
    pub client_ca: Option<PathBuf>,
}

impl TlsConfig {
    /// The certificate marked `default = true`, else the first one listed.
    pub fn default_certificate(&self) -> Option<&CertificateFiles> {
        self.certificates
            .iter()
            .find(|c| c.default)
            .or_else(|| self.certificates.first())
    }
}

/// One `[[tls.certificates]]` entry: PEM files, re-read when they change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The leaf's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// Served to clients with no SNI or an unknown name (when `unknown_sni = "default"`).
    pub default: bool,
}

/// `[tls] min_version`: the lowest TLS version the HTTPS listeners offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3.
    #[default]
    V1_2,
    /// TLS 1.3 only.
    V1_3,
}

impl TlsVersion {
    /// The version as the file spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsVersion::V1_2 => "1.2",
            TlsVersion::V1_3 => "1.3",
        }
    }
}

/// `[tls] unknown_sni`: what a handshake without SNI, or with a name no certificate covers, gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnknownSni {
    /// The default certificate (`default = true`, else the first listed).
    #[default]
    Default,
    /// No certificate: the handshake fails.
    Refuse,
}

/// A pool's `backend_tls`: lb speaks TLS to its backends.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BackendTls {
    /// PEM bundle of the CAs that sign the backends' certificates; the system roots when `None`.
    pub ca: Option<PathBuf>,
    /// The name checked against the backends' certificates and sent as SNI; the backend's IP
    /// address when `None`.
    pub server_name: Option<String>,
}

impl BackendTls {
    /// These settings with `ca` made relative to `config_path`'s directory, as
    /// [`Config::resolve_paths`] makes it.
    pub fn resolved(&self, config_path: &Path) -> BackendTls {
        let mut settings = self.clone();
        if let (Some(ca), Some(dir)) = (&mut settings.ca, config_dir(config_path)) {
            if ca.is_relative() {
                *ca = dir.join(&*ca);
            }
        }
        settings
    }
}

/// The absolute directory of the config file, which its relative paths start from. `None` only
/// when the working directory is gone; the paths are then left as written and opening them
/// reports the problem.
fn config_dir(config_path: &Path) -> Option<PathBuf> {
    let dir = match config_path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::path::absolute(dir).ok()
}

/// A pool's `type`: how it picks a backend for each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolType {
    /// Power of two choices by requests in flight.
    P2c,
    /// Power of two choices by peak-EWMA latency weighted by requests in flight.
    P2cEwma,
}

impl PoolType {
    /// The name the file uses for this type.
    pub fn as_str(self) -> &'static str {
        match self {
            PoolType::P2c => "p2c",
            PoolType::P2cEwma => "p2c_ewma",
        }
    }
}

/// What an operator declared about a backend, apart from its health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AdminState {
    /// Takes traffic when healthy.
    #[default]
    Enabled,
    /// Finishes in-flight requests, takes no new ones, keeps being health-checked.
    Drain,
    /// Takes no traffic and is not health-checked.
    Disabled,
}

impl AdminState {
    /// The name the file uses for this state.
    pub fn as_str(self) -> &'static str {
        match self {
            AdminState::Enabled => "enabled",
            AdminState::Drain => "drain",
            AdminState::Disabled => "disabled",
        }
    }

    /// Reads the name the file uses; `None` for an unknown one.
    pub fn parse(text: &str) -> Option<AdminState> {
        match text {
            "enabled" => Some(AdminState::Enabled),
            "drain" => Some(AdminState::Drain),
            "disabled" => Some(AdminState::Disabled),
            _ => None,
        }
    }
}

/// One entry of a pool's `backends`: `"IP:PORT[/path]"` or `{ addr = "...", state = "drain" }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    /// Where the backend listens, and the path prefixed to each request.
    pub addr: BackendAddr,
    /// Whether the operator lets it take traffic.
    pub state: AdminState,
}

impl PoolConfig {
    /// The backend declared with this address, if any.
    pub fn backend(&self, addr: &BackendAddr) -> Option<&BackendConfig> {
        self.backends.iter().find(|b| &b.addr == addr)
    }

    /// The canary's backends; empty without a canary.
    pub fn canary_backends(&self) -> &[BackendConfig] {
        self.canary.as_ref().map_or(&[], |c| &c.backends)
    }
}

/// One `[pools."PATTERN"]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// The pattern exactly as written in the file; it is the pool's identity.
    pub pattern: String,
    /// How a backend is picked.
    pub pool_type: PoolType,
    /// Time between two health probes of a backend.
    pub interval: Duration,
    /// Time between two probes of a backend out of rotation (sick or ejected); `interval` when
    /// that is shorter.
    pub down_interval: Duration,
    /// What a probe checks and how results change a backend's state.
    pub health_checks: HealthChecks,
    /// In file order.
    pub backends: Vec<BackendConfig>,
    /// How long connecting to a backend may take.
    pub connect_timeout: Duration,
    /// How long a backend may take to send its response head.
    pub request_timeout: Duration,
    /// How many times a failed connect (or a cut-off idempotent request) is retried on another backend.
    pub retries: u32,
    /// A kept-alive connection to a backend unused this long is closed.
    pub idle_timeout: Duration,
    /// TLS to this pool's backends; cleartext when `None`.
    pub backend_tls: Option<BackendTls>,
    /// `[pools."P".canary]`: backends beside the stable ones and the share they take.
    pub canary: Option<CanaryConfig>,
    /// `[pools."P".rollout]`: the steps the canary's weight goes through and where it is.
    pub rollout: Option<RolloutConfig>,
    /// `rate_limit`: a token bucket per client key; requests beyond it get 429.
    pub rate_limit: Option<RateLimitConfig>,
}

/// A pool's `rate_limit = { requests_per_second = N, burst = M, key = "ip" }`: nginx's
/// `limit_req ... burst=M nodelay`, one bucket per key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// The rate a key's bucket refills at; above zero.
    pub requests_per_second: Share,
    /// Requests a key may make at once beyond the one the rate allows (nginx's `burst`): a full
    /// bucket holds `burst + 1`.
    pub burst: u32,
    /// What a request's bucket is chosen by.
    pub key: RateLimitKey,
}

/// `key` of a pool's `rate_limit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateLimitKey {
    /// The client's IP address: the peer's, or from `X-Forwarded-For` when the peer is one of
    /// `[server] trusted_proxies`.
    Ip,
    /// A request header's value (the name lowercase); a request without it is keyed by its
    /// client's IP address, as with `Ip`.
    Header(String),
}

impl fmt::Display for RateLimitKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RateLimitKey::Ip => f.write_str("ip"),
            RateLimitKey::Header(name) => write!(f, "header:{name}"),
        }
    }
}

/// An IP network, `ADDR/PREFIX` (`10.0.0.0/8`, `fd00::/8`), or one address (`/32`, `/128`).
/// Its host bits are zero (the parser refuses `10.1.2.3/8`, which is most likely a typo).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    /// The network's first address.
    pub network: IpAddr,
    /// How many leading bits are the network's: 0-32 for IPv4, 0-128 for IPv6.
    pub prefix: u8,
}

/// Why text is not a [`Cidr`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// Not `ADDR/PREFIX` or an address.
    #[error("{0:?} is not an IP network (ADDR/PREFIX, e.g. \"10.0.0.0/8\", \"fd00::/8\", or one address)")]
    Shape(String),
    /// The prefix is longer than the address.
    #[error("{0:?}: the prefix length is above {1} for this address family")]
    Prefix(String, u8),
    /// Bits set past the prefix.
    #[error("{text:?} has bits set past its prefix: the network is {network}")]
    HostBits {
        /// As written.
        text: String,
        /// The network it would mean.
        network: Cidr,
    },
}

impl Cidr {
    /// Whether `ip` is inside the network. An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, as
    /// a dual-stack socket reports an IPv4 peer) counts as its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask_v4(u32::from(ip), self.prefix) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask_v6(u128::from(ip), self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

/// `bits` with every bit past the first `prefix` cleared.
fn mask_v4(bits: u32, prefix: u8) -> u32 {
    bits & !(u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0))
}

/// `bits` with every bit past the first `prefix` cleared.
fn mask_v6(bits: u128, prefix: u8) -> u128 {
    bits & !(u128::MAX.checked_shr(u32::from(prefix)).unwrap_or(0))
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Cidr, CidrError> {
        let shape = || CidrError::Shape(text.to_owned());
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| shape())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.len() <= 3 => {
                p.parse::<u8>().map_err(|_| shape())?
            }
            Some(_) => return Err(shape()),
        };
        if prefix > max {
            return Err(CidrError::Prefix(text.to_owned(), max));
        }
        let network = match addr {
            IpAddr::V4(a) => IpAddr::V4(mask_v4(u32::from(a), prefix).into()),
            IpAddr::V6(a) => IpAddr::V6(mask_v6(u128::from(a), prefix).into()),
        };
        let cidr = Cidr { network, prefix };
        if network != addr {
            return Err(CidrError::HostBits {
                text: text.to_owned(),
                network: cidr,
            });
        }
        Ok(cidr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// A pool's `[pools."P".canary]` table: its backends (checked, drained and disabled like the
/// pool's own) and how requests are split between them and the stable `backends`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanaryConfig {
    /// In file order; no address is also among the pool's stable `backends`.
    pub backends: Vec<BackendConfig>,
    /// Percent of the pool's requests the canary takes, 0..=100.
    pub weight: u8,
    /// What keeps one client on one side; `None`: each request is split afresh.
    pub sticky: Option<Sticky>,
    /// A request header (lowercase) whose `always` / `never` sends the request to the canary /
    /// stable whatever the weight.
    pub force_header: Option<String>,
}

/// A pool's `[pools."P".rollout]` table: the plan a rollout follows (its steps and the rules a
/// step is judged by) and its progress, which lb writes back as the rollout moves, so a
/// restarted lb resumes where it was and the file's history is the rollout's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutConfig {
    /// The canary weight of each step, strictly ascending, each 1..=100.
    pub steps: Vec<u8>,
    /// A step lasts at least this long.
    pub bake: Duration,
    /// ... and until the canary has served this many requests in it.
    pub min_requests: u64,
    /// The canary's error rate may not exceed this share.
    pub max_error_rate: Share,
    /// The canary's error rate may not exceed the stable side's by more than this share.
    pub max_error_increase: Share,
    /// The canary's p99 may not exceed this multiple of the stable side's.
    pub max_p99_ratio: Share,
    /// What a failed step does.
    pub on_failure: OnFailure,
    /// What passing the last step does.
    pub on_success: OnSuccess,
    /// Where the rollout is.
    pub progress: RolloutProgress,
}

/// A non-negative, finite number from the file (the parser refuses anything else), so that it
/// can be compared for equality.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Share(pub f64);

impl Eq for Share {}

/// `on_failure`: what a step whose verdict fails does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// The canary's weight goes to 0, its backends are drained and the rollout stops.
    Abort,
    /// The rollout holds at its step for a person to decide.
    Pause,
}

impl OnFailure {
    /// The name the file uses.
    pub fn as_str(self) -> &'static str {
        match self {
            OnFailure::Abort => "abort",
            OnFailure::Pause => "pause",
        }
    }
}

/// `on_success`: what passing the last step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnSuccess {
    /// The canary's backends become the pool's backends and the canary table goes.
    Promote,
    /// The rollout holds at its last step for a person to promote.
    Pause,
}

impl OnSuccess {
    /// The name the file uses.
    pub fn as_str(self) -> &'static str {
        match self {
            OnSuccess::Promote => "promote",
            OnSuccess::Pause => "pause",
        }
    }
}

/// `state` of a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutState {
    /// lb judges each step and moves on by itself.
    Running,
    /// Held: nothing moves until `lbctl rollout resume` (or an edit of `state`).
    Paused,
    /// Stopped by a failed step or a person: the canary takes no traffic.
    Aborted,
    /// Promoted: the canary's backends are the pool's.
    Done,
}

impl RolloutState {
    /// The name the file uses.
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Running => "running",
            RolloutState::Paused => "paused",
            RolloutState::Aborted => "aborted",
            RolloutState::Done => "done",
        }
    }

    /// Reads the name the file uses; `None` for an unknown one.
    pub fn parse(text: &str) -> Option<RolloutState> {
        [
            RolloutState::Running,
            RolloutState::Paused,
            RolloutState::Aborted,
            RolloutState::Done,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// Where a rollout is: the keys lb writes as it moves (a person may write them too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutProgress {
    /// `None`: a plan no one has started; lb starts it at step 1 (a plan merged into the file
    /// is a rollout begun, as with a Kubernetes rollout's spec).
    pub state: Option<RolloutState>,
    /// The current step, 1-based; 1 when unset.
    pub step: usize,
    /// When the current step began; `None` until lb writes it.
    pub step_started: Option<std::time::SystemTime>,
    /// Why the state is what it is (the last verdict, or who paused it).
    pub reason: Option<String>,
    /// With `[sync]`: the instance (`lb --instance`) whose controller moves the rollout; the
    /// others follow the file. `None`: no instance has claimed it.
    pub driver: Option<String>,
}

/// The progress a change to a rollout was decided on: state, step and driver. A change made
/// on it is refused when the file no longer has it, so a step is never applied twice and a
/// takeover and a move of the old driver cannot both land.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutAt {
    /// `state`; `None`: not started.
    pub state: Option<RolloutState>,
    /// `step`.
    pub step: usize,
    /// `driver`.
    pub driver: Option<String>,
}

impl RolloutProgress {
    /// Where the rollout is, as a change's condition.
    pub fn at(&self) -> RolloutAt {
        RolloutAt {
            state: self.state,
            step: self.step,
            driver: self.driver.clone(),
        }
    }
}

impl std::fmt::Display for RolloutAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state.map_or("not started", RolloutState::as_str);
        write!(f, "{state} at step {}", self.step)?;
        if let Some(driver) = &self.driver {
            write!(f, ", driven by {driver}")?;
        }
        Ok(())
    }
}

impl RolloutConfig {
    /// The weight the current step gives the canary.
    pub fn step_weight(&self) -> u8 {
        self.weight_at(self.progress.step)
    }

    /// The weight step `step` (1-based) gives the canary; 0 past the last.
    pub fn weight_at(&self, step: usize) -> u8 {
        self.steps.get(step.saturating_sub(1)).copied().unwrap_or(0)
    }
}

/// `sticky = "cookie:NAME"` or `"header:NAME"`: the value that keeps a client on one side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sticky {
    /// A cookie's value (from the `Cookie` fields).
    Cookie(String),
    /// A request header's value; the name is lowercase.
    Header(String),
}

impl std::fmt::Display for Sticky {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sticky::Cookie(name) => write!(f, "cookie:{name}"),
            Sticky::Header(name) => write!(f, "header:{name}"),
        }
    }
}

/// How a pool's backends are checked: the checks (all must pass), how long one probe may take,
/// and how many consecutive results change a backend's state.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HealthChecks {
    /// Every check a probe runs; a backend passes when all pass.
    pub checks: Vec<HealthCheck>,
    /// One probe of every check, connect to last body byte (`check_timeout`).
    pub timeout: Duration,
    /// Consecutive passing probes that bring a sick backend back into rotation.
    pub rise: u32,
    /// Consecutive failing probes that take a healthy backend out of rotation.
    pub fall: u32,
}

impl Default for HealthChecks {
    fn default() -> HealthChecks {
        HealthChecks {
            checks: vec![HealthCheck::default()],
            timeout: DEFAULT_CHECK_TIMEOUT,
            rise: 1,
            fall: 1,
        }
    }
}

/// A status check: `GET http://IP:PORT{url_path}` passes when the status is 2xx and the body,
/// with surrounding whitespace trimmed, equals one of `healthy_values`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HealthCheck {
    /// The path requested on the backend.
    pub url_path: String,
    /// Bodies, whitespace trimmed, that count as healthy.
    pub healthy_values: Vec<String>,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            url_path: "/healthz".to_owned(),
            healthy_values: vec!["ok".to_owned(), "OK".to_owned()],
        }
    }
}

/// A backend as declared: `IP:PORT[/url_path]`.
///
/// The url_path `/` means the same as none (joining `/` in front of a path changes nothing), so
/// it is normalised away: `127.0.0.1:80/` and `127.0.0.1:80` are one backend.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendAddr {
    /// The backend's IP and port.
    pub addr: SocketAddr,
    /// Empty, or a path starting with `/` and longer than `/`.
    pub url_path: String,
}

/// Why text or parts do not make a [`BackendAddr`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendAddrError {
    /// Not `IP:PORT[/url_path]`.
    #[error("backend {0:?} is not IP:PORT[/url_path] (IPv6 as [::1]:PORT)")]
    Shape(String),
    /// The host is not an IP address.
    #[error("backend {input:?}: {ip:?} is not an IP address (host names are not resolved)")]
    Ip {
        /// The backend as written.
        input: String,
        /// The host part.
        ip: String,
    },
    /// The port is not in 1-65535.
    #[error("backend {input:?}: port {port} is outside 1-65535")]
    Port {
        /// The backend as written.
        input: String,
        /// The port part.
        port: String,
    },
    /// The url_path given apart from the address does not start with `/`.
    #[error("backend {addr}: url_path {url_path:?} must start with \"/\" (e.g. \"/{url_path}\")")]
    UrlPathRelative {
        /// The backend's IP:PORT.
        addr: SocketAddr,
        /// The path as given.
        url_path: String,
    },
    /// The url_path is not a valid URI path.
    #[error(
        "backend {input:?}: url_path {url_path:?} is not a URL path (visible ASCII a URI path \
         allows, percent-encoded otherwise; no query or fragment)"
    )]
    UrlPath {
        /// The backend as written.
        input: String,
        /// The path part.
        url_path: String,
    },
}

impl BackendAddr {
    /// A backend from its parts, checked as the file's `IP:PORT[/url_path]` form is.
    pub fn new(ip: IpAddr, port: u16, url_path: &str) -> Result<BackendAddr, BackendAddrError> {
        let input = format!("{}{url_path}", SocketAddr::new(ip, port));
        if port == 0 {
            return Err(BackendAddrError::Port {
                input,
                port: port.to_string(),
            });
        }
        if !url_path.is_empty() && !url_path.starts_with('/') {
            return Err(BackendAddrError::UrlPathRelative {
                addr: SocketAddr::new(ip, port),
                url_path: url_path.to_owned(),
            });
        }
        check_url_path(&input, url_path)?;
        Ok(BackendAddr {
            addr: SocketAddr::new(ip, port),
            url_path: normalise_url_path(url_path),
        })
    }

    /// `IP:PORT`, the label used in logs, metrics and the health table.
    pub fn host_port(&self) -> String {
        self.addr.to_string()
    }
}

/// A url_path is a prefix of every target the backend gets, for HTTP/1 and HTTP/2 clients alike:
/// it must read as a URI path (`http::uri::PathAndQuery`) without a query or fragment, so any
/// join with a valid target is a valid target. Checked once, where a backend is declared (the
/// file, the control API), never per request.
fn check_url_path(input: &str, url_path: &str) -> Result<(), BackendAddrError> {
    let error = || BackendAddrError::UrlPath {
        input: input.to_owned(),
        url_path: url_path.to_owned(),
    };
    if url_path.is_empty() {
        return Ok(());
    }
    // Visible ASCII only: an HTTP/1 request line carries the path as it is.
    if url_path.contains(['?', '#']) || !url_path.bytes().all(|b| (0x21..0x7F).contains(&b)) {
        return Err(error());
    }
    match http::uri::PathAndQuery::try_from(url_path) {
        Ok(parsed) if parsed.as_str() == url_path && parsed.query().is_none() => Ok(()),
        _ => Err(error()),
    }
}

fn normalise_url_path(url_path: &str) -> String {
    if url_path == "/" {
        String::new()
    } else {
        url_path.to_owned()
    }
}

impl FromStr for BackendAddr {
    type Err = BackendAddrError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let shape = || BackendAddrError::Shape(input.to_owned());
        // The host part ends at the first `/` after the port; IPv6 hosts are bracketed.
        let (host, port_and_path) = if let Some(rest) = input.strip_prefix('[') {
            let (ip, rest) = rest.split_once(']').ok_or_else(shape)?;
            (ip, rest.strip_prefix(':').ok_or_else(shape)?)
        } else {
            input.split_once(':').ok_or_else(shape)?
        };
        let (port, url_path) = match port_and_path.find('/') {
            Some(i) => port_and_path.split_at(i),
            None => (port_and_path, ""),
        };
        let ip: IpAddr = host.parse().map_err(|_| BackendAddrError::Ip {
            input: input.to_owned(),
            ip: host.to_owned(),
        })?;
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(shape());
        }
        let port_error = || BackendAddrError::Port {
            input: input.to_owned(),
            port: port.to_owned(),
        };
        let port: u16 = port.parse().map_err(|_| port_error())?;
        if port == 0 {
            return Err(port_error());
        }
        if url_path
            .chars()
            .any(|c| c.is_whitespace() || c == '?' || c == '#')
        {
            return Err(shape());
        }
        check_url_path(input, url_path)?;
        Ok(BackendAddr {
            addr: SocketAddr::new(ip, port),
            url_path: normalise_url_path(url_path),
        })
    }
}

impl fmt::Display for BackendAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.addr, self.url_path)
    }
}
