//! `lbctl`: drives a running lb over its gRPC control API; flags, connection and exit codes only.
//! Rendering and argv normalisation live in `lb::lbctl`; it never reads or writes lb.toml itself.
//!
//! Accepts the original Go tool's invocation exactly (`lbctl --lb=ADDR --pattern=/ addPool`,
//! single-dash flags included) and idiomatic aliases (`lbctl pool add /`).
//!
//! Exit codes: 0 on success, 1 when the lb cannot be reached or answers with an error (one line
//! on stderr: `lbctl: error: CODE: message` or `lbctl: cannot reach lb at ADDR: reason`), 2 for
//! usage errors (clap's, and a command missing a flag it needs).

#![forbid(unsafe_code)]

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, Subcommand};
use lb::config::BackendAddr;
use lb::control::proto::{self, load_balancer_client::LoadBalancerClient};
use lb::control::tls::{read_certificates, read_key};
use lb::errors::error_chain;
use lb::lbctl;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

#[derive(Parser)]
#[command(
    name = "lbctl",
    version,
    about = "Control a running lb: pools, backends, health"
)]
struct Args {
    /// The lb control API address.
    #[arg(long, global = true, default_value = "127.0.0.1:8081")]
    lb: String,
    /// The pool's pattern (original-style commands).
    #[arg(long, global = true)]
    pattern: Option<String>,
    /// Backend IP (original-style commands).
    #[arg(long, global = true)]
    ip: Option<IpAddr>,
    /// Backend port (original-style commands).
    #[arg(long, global = true)]
    port: Option<i64>,
    /// Backend url_path, joined in front of forwarded paths.
    #[arg(long = "url_path", global = true, default_value = "")]
    url_path: String,
    /// File holding the control token (sent as `authorization: Bearer ...`).
    #[arg(long, global = true, env = "LB_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// CA certificate (PEM) to trust for lb's control certificate; connects over TLS.
    #[arg(long, global = true, env = "LB_TLS_CA", value_name = "PATH")]
    tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS, with --tls-key.
    #[arg(long, global = true, env = "LB_TLS_CERT", value_name = "PATH")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, global = true, env = "LB_TLS_KEY", value_name = "PATH")]
    tls_key: Option<PathBuf>,
    /// Name to check lb's certificate against [default: the host in --lb].
    #[arg(long, global = true, env = "LB_TLS_SERVER_NAME", value_name = "NAME")]
    tls_server_name: Option<String>,
    /// Connect and per-RPC timeout, e.g. 10s.
    #[arg(long, global = true, default_value = "10s", value_parser = parse_duration)]
    rpc_timeout: Duration,
    /// Only apply the change if lb.toml still has this SHA-256 (from `lbctl status`).
    #[arg(long = "if-match", global = true)]
    if_match: Option<String>,
    /// Output format for status, pools and poolHealth.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    lb::config::parse_duration(text)
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Add the pool --pattern (P2C, one /healthz check expecting ok/OK, every 10 s).
    #[command(name = "addPool")]
    AddPool,
    /// Remove the pool --pattern.
    #[command(name = "removePool")]
    RemovePool,
    /// Add --ip:--port[--url_path] to the pool --pattern (it must pass its health check).
    #[command(name = "addBackend")]
    AddBackend,
    /// Remove --ip:--port[--url_path] from the pool --pattern.
    #[command(name = "removeBackend")]
    RemoveBackend,
    /// Show the pool --pattern's status and each backend's health.
    #[command(name = "poolHealth")]
    PoolHealth,
    /// Pools: `lbctl pool add|remove|health PATTERN`.
    #[command(subcommand)]
    Pool(PoolCommand),
    /// Backends: `lbctl backend add|remove PATTERN IP:PORT[/url_path]`.
    #[command(subcommand)]
    Backend(BackendCommand),
    /// Drain --ip:--port in --pattern: finish in-flight requests, take no new ones (kept in lb.toml).
    Drain,
    /// Put a drained or disabled backend back into rotation.
    Enable,
    /// Take --ip:--port in --pattern out of rotation and stop checking it (kept in lb.toml).
    Disable,
    /// Wait until the backend has no request in flight (use after drain).
    Wait {
        /// Wait for zero requests in flight.
        #[arg(long, required = true)]
        drained: bool,
        /// Give up after this long, e.g. 60s.
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// The config file, its generation and hash, the last reload outcome, and every pool.
    Status {
        /// With [sync]: these instances side by side (commit served, remote head, last fetch),
        /// saying which lag.
        #[arg(long, num_args = 1.., value_name = "ADDR")]
        fleet: Vec<String>,
    },
    /// Every pool with every backend's health, admin state and in-flight requests.
    Pools,
    /// Stream health transitions until interrupted (--pattern to filter).
    Watch,
    /// Show what applying FILE would change on the running lb, key by key, probing a changed
    /// health check against the pool's backends.
    Plan {
        file: PathBuf,
        /// Exit 0 when nothing would change, 2 when something would, 1 on error (as
        /// `terraform plan -detailed-exitcode`).
        #[arg(long = "detailed-exitcode")]
        detailed_exitcode: bool,
    },
    /// With [sync]: fetch the git remote now, fast-forward and reload; show the sync status.
    Sync,
    /// A pool's canary: `lbctl canary status POOL`, `lbctl canary weight POOL PERCENT`.
    #[command(subcommand)]
    Canary(CanaryCommand),
    /// Rollouts: lb-driven canary steps (`lbctl rollout start|status|pause|resume|promote|abort|watch
    /// POOL`) and the rolling upgrade of a pool's backends (`lbctl rollout rolling POOL --run CMD`).
    #[command(subcommand)]
    Rollout(RolloutCommand),
}

#[derive(Subcommand)]
enum RolloutCommand {
    /// Start (or restart) POOL's rollout at step 1: the canary takes the first step's weight,
    /// and lb moves it through the steps, judging each.
    Start {
        pattern: String,
        /// The canary's backends (default: the ones [pools."P".canary] declares).
        #[arg(long = "canary", value_name = "IP:PORT[/url_path]", num_args = 1..)]
        canary: Vec<BackendAddr>,
        /// The canary weight of each step, e.g. 5,25,50,100 (default: the file's, else these).
        #[arg(long, value_delimiter = ',')]
        steps: Vec<u32>,
        /// How long each step lasts at least, e.g. 2m (default: the file's, else 1m).
        #[arg(long, value_parser = parse_duration)]
        bake: Option<Duration>,
        /// Requests the canary needs in a step before it is judged (with the thresholds below;
        /// default: the file's).
        #[arg(long)]
        min_requests: Option<u64>,
        /// The canary's error rate may not exceed this share (0-1).
        #[arg(long, default_value_t = 0.05, requires = "min_requests")]
        max_error_rate: f64,
        /// The canary's error rate may not exceed stable's by more than this share (0-1).
        #[arg(long, default_value_t = 0.01, requires = "min_requests")]
        max_error_increase: f64,
        /// The canary's p99 may not exceed stable's times this.
        #[arg(long, default_value_t = 1.5, requires = "min_requests")]
        max_p99_ratio: f64,
        /// What a failed step does: abort or pause.
        #[arg(long, value_parser = ["abort", "pause"])]
        on_failure: Option<String>,
        /// What passing the last step does: promote or pause.
        #[arg(long, value_parser = ["promote", "pause"])]
        on_success: Option<String>,
    },
    /// Where POOL's rollout is: step, weight, time in step, the verdict so far with figures,
    /// and what lb does next.
    Status { pattern: String },
    /// Hold POOL's running rollout at its step.
    Pause { pattern: String },
    /// Go on with POOL's paused rollout from its step.
    Resume { pattern: String },
    /// Skip the remaining steps: the canary's backends become POOL's.
    Promote { pattern: String },
    /// Stop POOL's rollout: canary weight 0, its backends drained.
    Abort { pattern: String },
    /// Print each change of POOL's rollout as it happens; exits 0 when it is done, 1 when it
    /// is aborted.
    Watch { pattern: String },
    /// Upgrade every backend of POOL in turn: the canaries one at a time, then the rest
    /// --concurrency at a time. Each is drained, waited for, has CMD run for it (here, by
    /// `sh -c`, with LB_BACKEND_IP, LB_BACKEND_PORT, LB_BACKEND and LB_POOL set), must pass a
    /// health check, is enabled, then baked: its traffic over --bake against the rest of the
    /// pool's. A failed canary stops the rollout; so do more than --max-failures failures. A
    /// failed backend stays drained. Exit 0 only when every backend was upgraded.
    Rolling(RollingArgs),
}

#[derive(clap::Args)]
struct RollingArgs {
    /// The pool's pattern.
    pattern: String,
    /// The upgrade command, run by `sh -c` on this machine for each backend while it is drained;
    /// exit 0 means upgraded.
    #[arg(long = "run", value_name = "CMD")]
    run: String,
    /// Backends upgraded first, one at a time; any failure among them stops the rollout.
    #[arg(long, default_value_t = 1)]
    canaries: usize,
    /// Backends upgraded at once after the canaries.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    concurrency: u32,
    /// Failures tolerated after the canaries; one more stops the rollout.
    #[arg(long, default_value_t = 2)]
    max_failures: usize,
    /// How long each enabled backend's traffic is watched and compared with the rest of the pool.
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    bake: Duration,
    /// The bound on each backend's drain, command and health wait together.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    timeout: Duration,
    /// Requests each side needs in the bake before it is judged (fewer: a pass, said so).
    #[arg(long, default_value_t = lb::control::DEFAULT_THRESHOLDS.min_requests)]
    min_requests: u64,
    /// The backend's error rate over the bake may not exceed this share (0-1).
    #[arg(long, default_value_t = lb::control::DEFAULT_THRESHOLDS.max_error_rate, value_parser = parse_share)]
    max_error_rate: f64,
    /// Its error rate may not exceed the rest of the pool's by more than this share (0-1).
    #[arg(long, default_value_t = lb::control::DEFAULT_THRESHOLDS.max_error_increase, value_parser = parse_share)]
    max_error_increase: f64,
    /// Its p99 may not exceed the rest of the pool's times this (at least 1).
    #[arg(long, default_value_t = lb::control::DEFAULT_THRESHOLDS.max_p99_ratio, value_parser = parse_ratio)]
    max_p99_ratio: f64,
}

fn parse_share(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(share) if (0.0..=1.0).contains(&share) => Ok(share),
        _ => Err(format!("{text:?} is not a share from 0 to 1")),
    }
}

fn parse_ratio(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(ratio) if ratio.is_finite() && ratio >= 1.0 => Ok(ratio),
        _ => Err(format!("{text:?} is not a ratio of at least 1")),
    }
}

#[derive(Subcommand)]
enum CanaryCommand {
    /// Stable and canary side by side over a window (requests, error rate, p50/p95/p99) and
    /// the verdict: pass, fail with its figures, or not enough data.
    Status {
        pattern: String,
        /// The window compared, up to 300s.
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        window: Duration,
        /// Requests each side needs in the window before anything is judged.
        #[arg(long, default_value_t = 100)]
        min_requests: u64,
        /// The canary's error rate may not exceed this share (0-1).
        #[arg(long, default_value_t = 0.05)]
        max_error_rate: f64,
        /// The canary's error rate may not exceed stable's by more than this share (0-1).
        #[arg(long, default_value_t = 0.01)]
        max_error_increase: f64,
        /// The canary's p99 may not exceed stable's times this.
        #[arg(long, default_value_t = 1.5)]
        max_p99_ratio: f64,
    },
    /// Set POOL's canary weight (percent of its requests, 0-100): a one-line edit of lb.toml.
    Weight { pattern: String, percent: u32 },
}

#[derive(Subcommand)]
enum PoolCommand {
    Add { pattern: String },
    Remove { pattern: String },
    Health { pattern: String },
}

#[derive(Subcommand)]
enum BackendCommand {
    Add {
        pattern: String,
        backend: BackendAddr,
    },
    Remove {
        pattern: String,
        backend: BackendAddr,
    },
}

type Client = LoadBalancerClient<InterceptedService<Channel, Auth>>;

/// Adds the bearer token (when configured) and the caller's name to every request.
#[derive(Clone)]
struct Auth {
    token: Option<MetadataValue<tonic::metadata::Ascii>>,
    actor: Option<MetadataValue<tonic::metadata::Ascii>>,
}

impl tonic::service::Interceptor for Auth {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.token {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        if let Some(value) = &self.actor {
            request.metadata_mut().insert("x-lb-actor", value.clone());
        }
        Ok(request)
    }
}

/// A command line that parsed but cannot run: a command missing a flag it needs, or a flag value
/// out of range. Reported like clap's own usage errors (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
struct Usage {
    kind: ErrorKind,
    /// The subcommand whose usage line to print, when there is one.
    command: Option<&'static str>,
    message: String,
}

/// The control API could not be reached at all (refused, timed out, unresolvable).
#[derive(Debug, thiserror::Error)]
#[error("cannot reach lb at {addr}: {reason}")]
struct Unreachable {
    addr: String,
    reason: String,
}

fn main() -> ExitCode {
    let args = Args::parse_from(lbctl::normalise_args(std::env::args()));
    let (tls, client_cert) = (args.tls_ca.is_some(), args.tls_cert.is_some());
    let target = args.lb.clone();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(error) => {
            eprintln!("lbctl: error: cannot start: {error}");
            return ExitCode::FAILURE;
        }
    };
    let detailed = matches!(
        args.command,
        Command::Plan {
            detailed_exitcode: true,
            ..
        }
    );
    let outcome = runtime.block_on(async {
        match &args.command {
            Command::Plan { file, .. } => plan(&args, file).await,
            _ => run(args).await.map(|text| (text, false)),
        }
    });
    match outcome {
        Ok((output, changes)) => {
            print!("{output}");
            if detailed && changes {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(error) => {
            if let Some(usage) = error.downcast_ref::<Usage>() {
                usage_exit(usage);
            }
            let line = match error.downcast_ref::<Unreachable>() {
                Some(unreachable) => format!("lbctl: {unreachable}"),
                None => format!("lbctl: error: {error:#}"),
            };
            let probed = if lbctl::worth_a_probe(&line) {
                runtime.block_on(diagnose(&target, tls))
            } else {
                None
            };
            match (probed, lbctl::tls_hint(&line, tls, client_cert)) {
                (Some(cause), _) => {
                    eprintln!("lbctl: error: {cause}\n  (the call failed with: {line})")
                }
                (None, Some(hint)) => eprintln!("{line} ({hint})"),
                (None, None) => eprintln!("{line}"),
            }
            ExitCode::FAILURE
        }
    }
}

/// What listens at `lb` when a call failed on the wire: one plain `GET /status.json` over
/// HTTP/1, whose first bytes (an HTTP/1 status line, a TLS alert, or nothing lbctl knows) say
/// whether it is lb's admin or data port, a TLS listener or a plaintext one. Bounded to 2 s.
async fn diagnose(lb: &str, tls: bool) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = lb
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/');
    let (mut answer, mut connected) = (Vec::new(), false);
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        connected = true;
        let request =
            format!("GET /status.json HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut chunk = [0u8; 4096];
        while answer.len() < 64 * 1024 {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&chunk[..n]),
            }
        }
        Some(())
    };
    // A listener that keeps the connection open answers with what it sent within the bound.
    let _ = tokio::time::timeout(Duration::from_secs(2), exchange).await;
    if !connected {
        return None;
    }
    lbctl::diagnosis(addr, &answer, tls)
}

/// Prints a usage error in clap's format, with the subcommand's usage line, and exits 2.
fn usage_exit(usage: &Usage) -> ! {
    let mut command = Args::command();
    command.build();
    let mut command = usage
        .command
        .and_then(|name| command.find_subcommand(name).cloned())
        .unwrap_or(command);
    command.error(usage.kind, &usage.message).exit()
}

fn token(args: &Args) -> anyhow::Result<Option<String>> {
    if let Some(path) = &args.token_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read token file {}", path.display()))?;
        return Ok(Some(text.trim().to_owned()));
    }
    Ok(std::env::var("LB_TOKEN")
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty()))
}

/// A flag given without the one it needs (exit 2).
fn needs(flag: &str, other: &str) -> Usage {
    Usage {
        kind: ErrorKind::MissingRequiredArgument,
        command: None,
        message: format!("{flag} needs {other}"),
    }
}

/// The client TLS settings from --tls-ca, --tls-cert, --tls-key and --tls-server-name; `None`
/// for plaintext. Files are read here, so a missing one is named before any network wait.
fn tls_config(args: &Args) -> anyhow::Result<Option<ClientTlsConfig>> {
    let Some(ca) = &args.tls_ca else {
        if args.tls_cert.is_some() || args.tls_key.is_some() {
            let flag = if args.tls_cert.is_some() {
                "--tls-cert"
            } else {
                "--tls-key"
            };
            return Err(needs(
                flag,
                "--tls-ca PATH (the CA that signed lb's control certificate)",
            )
            .into());
        }
        if args.tls_server_name.is_some() {
            return Err(needs("--tls-server-name", "--tls-ca PATH").into());
        }
        return Ok(None);
    };
    let ca = read_certificates(ca, "--tls-ca").map_err(tls_file_error)?;
    let mut config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .timeout(args.rpc_timeout);
    match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let cert = read_certificates(cert, "--tls-cert").map_err(tls_file_error)?;
            let key = read_key(key, "--tls-key").map_err(tls_file_error)?;
            config = config.identity(Identity::from_pem(cert, key));
        }
        (Some(_), None) => return Err(needs("--tls-cert", "--tls-key PATH").into()),
        (None, Some(_)) => return Err(needs("--tls-key", "--tls-cert PATH").into()),
        (None, None) => {}
    }
    if let Some(name) = &args.tls_server_name {
        config = config.domain_name(name.clone());
    }
    Ok(Some(config))
}

async fn connect(args: &Args) -> anyhow::Result<Client> {
    connect_to(args, &args.lb).await
}

/// A client of the instance at `addr`, with `args`' token and TLS settings.
async fn connect_to(args: &Args, addr: &str) -> anyhow::Result<Client> {
    // Local problems (a bad --lb, an unreadable token or TLS file) are reported before any
    // network wait.
    let tls = tls_config(args)?;
    let url = lbctl::endpoint(addr, tls.is_some()).map_err(|e| Usage {
        kind: ErrorKind::ArgumentConflict,
        command: None,
        message: e.to_string(),
    })?;
    let endpoint = Endpoint::from_shared(url).map_err(|_| Usage {
        kind: ErrorKind::ValueValidation,
        command: None,
        message: format!("{addr:?} is not HOST:PORT or a URL"),
    })?;
    let endpoint = match tls {
        Some(tls) => endpoint
            .tls_config(tls)
            .map_err(|e| anyhow!("cannot use the TLS settings: {}", error_chain(&e)))?,
        None => endpoint,
    };
    let auth = match token(args)? {
        Some(token) => Some(format!("Bearer {token}").parse().map_err(|_| {
            anyhow!("the control token contains characters not allowed in a header")
        })?),
        None => None,
    };
    let endpoint = endpoint.connect_timeout(args.rpc_timeout);
    // Streams (watch) must outlive the per-RPC timeout; unary calls set it per request.
    let endpoint = if matches!(
        args.command,
        Command::Watch | Command::Rollout(RolloutCommand::Watch { .. })
    ) {
        endpoint
    } else {
        endpoint.timeout(args.rpc_timeout)
    };
    let channel = endpoint.connect().await.map_err(|e| Unreachable {
        addr: addr.to_owned(),
        reason: error_chain(&e),
    })?;
    let actor = os_user().and_then(|user| user.parse().ok());
    Ok(LoadBalancerClient::with_interceptor(
        channel,
        Auth { token: auth, actor },
    ))
}

/// Who runs lbctl, for the commit's "Requested by": `$USER`, `$LOGNAME`, else the name the
/// system's user database gives the process's user id (`id -un`), as `git` and `ssh` fall back.
fn os_user() -> Option<String> {
    let from_env = ["USER", "LOGNAME"]
        .into_iter()
        .filter_map(|name| std::env::var(name).ok())
        .find(|value| !value.trim().is_empty());
    from_env.or_else(|| {
        let out = std::process::Command::new("id").arg("-un").output().ok()?;
        let name = String::from_utf8(out.stdout).ok()?;
        let name = name.trim();
        (out.status.success() && !name.is_empty()).then(|| name.to_owned())
    })
}

/// The flag `flag` that the original-style `command` cannot run without.
fn required<'a, T>(
    value: &'a Option<T>,
    flag: &str,
    command: &'static str,
) -> anyhow::Result<&'a T> {
    value.as_ref().ok_or_else(|| {
        Usage {
            kind: ErrorKind::MissingRequiredArgument,
            command: Some(command),
            message: format!("{command} needs --{flag}"),
        }
        .into()
    })
}

fn ip_backend(backend: &BackendAddr) -> proto::Backend {
    proto::Backend {
        backend: Some(proto::backend::Backend::IpBackend(proto::IpBackend {
            ip: backend.addr.ip().to_string(),
            port: i32::from(backend.addr.port()),
            url_path: backend.url_path.clone(),
        })),
    }
}

/// The original tool's addPool defaults: P2C, `/healthz` expecting `ok` or `OK`, every 10 s.
fn add_pool_req(pattern: &str) -> proto::AddPoolReq {
    proto::AddPoolReq {
        pattern: pattern.to_owned(),
        pool_type: proto::PoolType::PtP2c as i32,
        health_checks: Some(proto::HealthChecks {
            health_checks: vec![proto::HealthCheck {
                health_check: Some(proto::health_check::HealthCheck::StatusCheck(
                    proto::StatusCheck {
                        url_path: "/healthz".to_owned(),
                        healthy_values: vec!["ok".to_owned(), "OK".to_owned()],
                    },
                )),
            }],
            interval_secs: 10,
        }),
        if_match: None,
    }
}

/// The backend named by --ip, --port and --url_path.
fn flag_backend(args: &Args, command: &'static str) -> anyhow::Result<BackendAddr> {
    let invalid = |message: String| Usage {
        kind: ErrorKind::ValueValidation,
        command: Some(command),
        message,
    };
    let ip = *required(&args.ip, "ip", command)?;
    let port = *required(&args.port, "port", command)?;
    let port = u16::try_from(port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| invalid(format!("--port {port} is outside 1-65535")))?;
    Ok(BackendAddr::new(ip, port, &args.url_path).map_err(|e| invalid(e.to_string()))?)
}

fn rpc_error(status: tonic::Status) -> anyhow::Error {
    // A connection that fails under an RPC (a TLS alert, a reset) arrives as a status whose
    // message is only "transport error"; the cause says what happened.
    let message = match std::error::Error::source(&status).map(error_chain) {
        Some(cause) if cause.starts_with(status.message()) => cause,
        Some(cause) => format!("{}: {cause}", status.message()),
        None => status.message().to_owned(),
    };
    anyhow!("{}: {message}", lbctl::code_name(status.code()))
}

/// A TLS file error as one line (its message already carries the OS error).
fn tls_file_error(error: lb::pem::Error) -> anyhow::Error {
    anyhow!("{error}")
}

fn if_match(args: &Args) -> Option<proto::Precondition> {
    args.if_match.as_ref().map(|hash| proto::Precondition {
        content_hash: hash.clone(),
        generation: 0,
    })
}

/// Runs the command: resolves its flags first, so usage errors never wait on the network, then
/// connects and makes the call. Returns what to print on stdout.
async fn run(args: Args) -> anyhow::Result<String> {
    let pattern = |name: &'static str| required(&args.pattern, "pattern", name).cloned();
    match &args.command {
        Command::Pool(PoolCommand::Add { pattern }) => add_pool(&args, pattern.clone()).await,
        Command::AddPool => add_pool(&args, pattern("addPool")?).await,
        Command::Pool(PoolCommand::Remove { pattern }) => remove_pool(&args, pattern.clone()).await,
        Command::RemovePool => remove_pool(&args, pattern("removePool")?).await,
        Command::Backend(BackendCommand::Add { pattern, backend }) => {
            add_backend(&args, pattern.clone(), backend.clone()).await
        }
        Command::AddBackend => {
            let pattern = pattern("addBackend")?;
            add_backend(&args, pattern, flag_backend(&args, "addBackend")?).await
        }
        Command::Backend(BackendCommand::Remove { pattern, backend }) => {
            remove_backend(&args, pattern.clone(), backend.clone()).await
        }
        Command::RemoveBackend => {
            let pattern = pattern("removeBackend")?;
            remove_backend(&args, pattern, flag_backend(&args, "removeBackend")?).await
        }
        Command::Pool(PoolCommand::Health { pattern }) => pool_health(&args, pattern.clone()).await,
        Command::PoolHealth => pool_health(&args, pattern("poolHealth")?).await,
        Command::Drain => set_state(&args, AdminChange::Drain).await,
        Command::Enable => set_state(&args, AdminChange::Enable).await,
        Command::Disable => set_state(&args, AdminChange::Disable).await,
        Command::Wait { timeout, .. } => {
            let (pattern, backend) = (pattern("wait")?, flag_backend(&args, "wait")?);
            wait_drained(&args, pattern, backend, *timeout).await
        }
        Command::Status { fleet } if fleet.is_empty() => status(&args).await,
        Command::Status { fleet } => status_fleet(&args, fleet).await,
        Command::Pools => pools(&args).await,
        Command::Watch => watch(&args).await,
        Command::Plan { file, .. } => plan(&args, file).await.map(|(text, _)| text),
        Command::Sync => sync(&args).await,
        Command::Canary(CanaryCommand::Status {
            pattern,
            window,
            min_requests,
            max_error_rate,
            max_error_increase,
            max_p99_ratio,
        }) => {
            let request = proto::CanaryStatusReq {
                pattern: pattern.clone(),
                window_seconds: u32::try_from(window.as_secs()).unwrap_or(u32::MAX).max(1),
                thresholds: Some(proto::CanaryThresholds {
                    min_requests: *min_requests,
                    max_error_rate: *max_error_rate,
                    max_error_increase: *max_error_increase,
                    max_p99_ratio: *max_p99_ratio,
                }),
            };
            canary_status(&args, request).await
        }
        Command::Canary(CanaryCommand::Weight { pattern, percent }) => {
            let mut client = connect(&args).await?;
            let request = proto::SetCanaryWeightReq {
                pattern: pattern.clone(),
                weight_percent: *percent,
                if_match: if_match(&args),
            };
            let commit = client.set_canary_weight(request).await.map_err(rpc_error)?;
            Ok(format!(
                "canary of pool {pattern}: weight {percent}%{}\n",
                lbctl::in_commit(&commit.get_ref().commit)
            ))
        }
        Command::Rollout(command) => rollout(&args, command).await,
    }
}

async fn rollout(args: &Args, command: &RolloutCommand) -> anyhow::Result<String> {
    if matches!(command, RolloutCommand::Rolling(_)) && args.if_match.is_some() {
        return Err(Usage {
            kind: ErrorKind::ArgumentConflict,
            command: None,
            message:
                "--if-match does not apply to rollout rolling: each of its steps changes lb.toml"
                    .to_owned(),
        }
        .into());
    }
    let mut client = connect(args).await?;
    let action = |pattern: &String| proto::RolloutActionReq {
        pattern: pattern.clone(),
        if_match: if_match(args),
    };
    let (done, pattern, response) = match command {
        RolloutCommand::Start {
            pattern,
            canary,
            steps,
            bake,
            min_requests,
            max_error_rate,
            max_error_increase,
            max_p99_ratio,
            on_failure,
            on_success,
        } => {
            let request = proto::RolloutStartReq {
                pattern: pattern.clone(),
                canary: canary.iter().map(ip_backend).collect(),
                steps: steps.clone(),
                bake_seconds: bake
                    .map_or(0, |b| u32::try_from(b.as_secs()).unwrap_or(u32::MAX).max(1)),
                thresholds: min_requests.map(|min_requests| proto::CanaryThresholds {
                    min_requests,
                    max_error_rate: *max_error_rate,
                    max_error_increase: *max_error_increase,
                    max_p99_ratio: *max_p99_ratio,
                }),
                on_failure: on_failure.clone().unwrap_or_default(),
                on_success: on_success.clone().unwrap_or_default(),
                if_match: if_match(args),
            };
            (
                "started the rollout of",
                pattern,
                client.rollout_start(request).await,
            )
        }
        RolloutCommand::Pause { pattern } => (
            "paused the rollout of",
            pattern,
            client.rollout_pause(action(pattern)).await,
        ),
        RolloutCommand::Resume { pattern } => (
            "resumed the rollout of",
            pattern,
            client.rollout_resume(action(pattern)).await,
        ),
        RolloutCommand::Promote { pattern } => (
            "promoted the canary of",
            pattern,
            client.rollout_promote(action(pattern)).await,
        ),
        RolloutCommand::Abort { pattern } => (
            "aborted the rollout of",
            pattern,
            client.rollout_abort(action(pattern)).await,
        ),
        RolloutCommand::Status { pattern } => {
            let request = proto::RolloutStatusReq {
                pattern: pattern.clone(),
            };
            let status = client
                .rollout_status(request)
                .await
                .map_err(rpc_error)?
                .into_inner();
            return Ok(match args.output {
                Output::Json => lbctl::json_text(&lbctl::rollout_json(&status)),
                Output::Text => lbctl::render_rollout_status(&status),
            });
        }
        RolloutCommand::Rolling(rolling) => return rollout_rolling(args, rolling, client).await,
        RolloutCommand::Watch { pattern } => {
            return rollout_watch(&mut client, args, pattern).await
        }
    };
    let commit = response.map_err(rpc_error)?;
    Ok(format!(
        "{done} pool {pattern}{}\n",
        lbctl::in_commit(&commit.get_ref().commit)
    ))
}

/// A rollout that ended aborted, for the exit code of `lbctl rollout watch`.
#[derive(Debug, thiserror::Error)]
#[error("the rollout of {pattern} was aborted: {reason}")]
struct RolloutAborted {
    pattern: String,
    reason: String,
}

async fn rollout_watch(client: &mut Client, args: &Args, pattern: &str) -> anyhow::Result<String> {
    use std::io::Write;
    let request = proto::RolloutStatusReq {
        pattern: pattern.to_owned(),
    };
    let mut stream = client
        .watch_rollout(request)
        .await
        .map_err(rpc_error)?
        .into_inner();
    while let Some(status) = stream.message().await.map_err(rpc_error)? {
        let line = match args.output {
            Output::Json => lbctl::rollout_json(&status).to_string(),
            Output::Text => lbctl::render_rollout_line(&status),
        };
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{line}");
        let _ = stdout.flush();
        match status.state.as_str() {
            "done" => return Ok(String::new()),
            "aborted" => {
                return Err(RolloutAborted {
                    pattern: pattern.to_owned(),
                    reason: status.reason,
                }
                .into())
            }
            _ => {}
        }
    }
    Ok(String::new())
}

/// Colour only for text on a terminal.
fn colour(args: &Args) -> bool {
    args.output == Output::Text && std::io::IsTerminal::is_terminal(&std::io::stdout())
}

async fn add_pool(args: &Args, pattern: String) -> anyhow::Result<String> {
    let mut client = connect(args).await?;
    let mut request = add_pool_req(&pattern);
    request.if_match = if_match(args);
    let commit = client.add_pool(request).await.map_err(rpc_error)?;
    Ok(format!(
        "added pool {pattern}{}\n",
        lbctl::in_commit(&commit.get_ref().commit)
    ))
}

async fn remove_pool(args: &Args, pattern: String) -> anyhow::Result<String> {
    let mut client = connect(args).await?;
    let request = proto::RemovePoolReq {
        pattern: pattern.clone(),
        if_match: if_match(args),
    };
    let commit = client.remove_pool(request).await.map_err(rpc_error)?;
    Ok(format!(
        "removed pool {pattern}{}\n",
        lbctl::in_commit(&commit.get_ref().commit)
    ))
}

async fn add_backend(args: &Args, pattern: String, backend: BackendAddr) -> anyhow::Result<String> {
    let mut client = connect(args).await?;
    let request = proto::AddBackendReq {
        pattern: pattern.clone(),
        backend: Some(ip_backend(&backend)),
        if_match: if_match(args),
    };
    let commit = client.add_backend(request).await.map_err(rpc_error)?;
    Ok(format!(
        "added backend {backend} to pool {pattern}{}\n",
        lbctl::in_commit(&commit.get_ref().commit)
    ))
}

async fn remove_backend(
    args: &Args,
    pattern: String,
    backend: BackendAddr,
) -> anyhow::Result<String> {
    let mut client = connect(args).await?;
    let request = proto::RemoveBackendReq {
        pattern: pattern.clone(),
        backend: Some(ip_backend(&backend)),
        if_match: if_match(args),
    };
    let commit = client.remove_backend(request).await.map_err(rpc_error)?;
    Ok(format!(
        "removed backend {backend} from pool {pattern}{}\n",
        lbctl::in_commit(&commit.get_ref().commit)
    ))
}

/// Every backend of the pool, healthy and sick.
async fn fetch_pool_health(
    client: &mut Client,
    pattern: &str,
) -> anyhow::Result<proto::PoolHealth> {
    let request = proto::PoolHealthReq {
        pattern: pattern.to_owned(),
        healthy: true,
        sick: true,
    };
    let response = client.pool_health(request).await.map_err(rpc_error)?;
    Ok(response.into_inner().health.unwrap_or_default())
}

async fn canary_status(args: &Args, request: proto::CanaryStatusReq) -> anyhow::Result<String> {
    let mut client = connect(args).await?;
    let status = client
        .canary_status(request)
        .await
        .map_err(rpc_error)?
        .into_inner();
    Ok(match args.output {
        Output::Json => lbctl::json_text(&lbctl::canary_json(&status)),
        Output::Text => lbctl::render_canary_status(&status, colour(args)),
    })
}

async fn pool_health(args: &Args, pattern: String) -> anyhow::Result<String> {
    let mut client = connect(args).await?;
    let health = fetch_pool_health(&mut client, &pattern).await?;
    Ok(match args.output {
        Output::Json => lbctl::json_text(&lbctl::pool_json(&pattern, &health)),
        Output::Text => lbctl::render_pool_health(&pattern, &health, colour(args)),
    })
}

/// The administrative state commands: `drain`, `enable`, `disable`.
#[derive(Clone, Copy)]
enum AdminChange {
    Drain,
    Enable,
    Disable,
}

async fn set_state(args: &Args, change: AdminChange) -> anyhow::Result<String> {
    let (name, done) = match change {
        AdminChange::Drain => ("drain", "draining"),
        AdminChange::Enable => ("enable", "enabled"),
        AdminChange::Disable => ("disable", "disabled"),
    };
    let pattern = required(&args.pattern, "pattern", name)?.clone();
    let backend = flag_backend(args, name)?;
    let mut client = connect(args).await?;
    let (p, b, m) = (pattern.clone(), Some(ip_backend(&backend)), if_match(args));
    let commit = match change {
        AdminChange::Drain => client
            .drain_backend(proto::DrainBackendReq {
                pattern: p,
                backend: b,
                if_match: m,
            })
            .await
            .map(|r| r.into_inner().commit),
        AdminChange::Enable => client
            .enable_backend(proto::EnableBackendReq {
                pattern: p,
                backend: b,
                if_match: m,
            })
            .await
            .map(|r| r.into_inner().commit),
        AdminChange::Disable => client
            .disable_backend(proto::DisableBackendReq {
                pattern: p,
                backend: b,
                if_match: m,
            })
            .await
            .map(|r| r.into_inner().commit),
    }
    .map_err(rpc_error)?;
    Ok(format!(
        "{done} backend {backend} in pool {pattern}{}\n",
        lbctl::in_commit(&commit)
    ))
}

/// Polls PoolHealth every 100 ms until the backend has no request in flight, or `timeout`.
async fn wait_drained(
    args: &Args,
    pattern: String,
    backend: BackendAddr,
    timeout: Duration,
) -> anyhow::Result<String> {
    let mut client = connect(args).await?;
    let deadline = tokio::time::Instant::now() + timeout;
    let label = backend.to_string();
    loop {
        let health = fetch_pool_health(&mut client, &pattern).await?;
        let entry = health
            .backends
            .iter()
            .find(|b| lbctl::backend_label(b) == label)
            .ok_or_else(|| anyhow!("pool {pattern} has no backend {label}"))?;
        if entry.in_flight == 0 {
            return Ok(format!(
                "backend {label} in pool {pattern} has no request in flight\n"
            ));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(anyhow!(
                "backend {label} in pool {pattern} still has {} request(s) in flight after {timeout:?}",
                entry.in_flight
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn status(args: &Args) -> anyhow::Result<String> {
    let mut client = connect(args).await?;
    let status = client
        .status(proto::StatusReq::default())
        .await
        .map_err(rpc_error)?
        .into_inner();
    Ok(match args.output {
        Output::Json => lbctl::json_text(&lbctl::status_json(&status)),
        Output::Text => lbctl::render_status(&status, colour(args)),
    })
}

/// `status --fleet`: each instance's sync status, asked in turn; an unreachable one is a row
/// saying so, not a failure of the command. A second round asks each instance where the heads
/// and served commits of the first stand against its own remote head, which is how the fleet's
/// head is found (by ancestry: the one holding all the others).
async fn status_fleet(args: &Args, fleet: &[String]) -> anyhow::Result<String> {
    let first = fleet_round(args, fleet, Vec::new()).await;
    let commits = lbctl::fleet_commits(&first);
    let rows = if commits.is_empty() {
        first
    } else {
        fleet_round(args, fleet, commits).await
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    Ok(match args.output {
        Output::Json => lbctl::json_text(&lbctl::fleet_json(&rows)),
        Output::Text => lbctl::render_fleet(&rows, now),
    })
}

/// One Status of every instance, with `commits` to place.
async fn fleet_round(args: &Args, fleet: &[String], commits: Vec<String>) -> Vec<lbctl::FleetRow> {
    let mut rows = Vec::with_capacity(fleet.len());
    for addr in fleet {
        let answer = match connect_to(args, addr).await {
            Ok(mut client) => client
                .status(proto::StatusReq {
                    commits: commits.clone(),
                })
                .await
                .map(tonic::Response::into_inner)
                .map_err(|status| format!("{:?}: {}", status.code(), status.message())),
            Err(error) => Err(error_chain(error.as_ref())),
        };
        rows.push((addr.clone(), answer));
    }
    rows
}

async fn sync(args: &Args) -> anyhow::Result<String> {
    let mut client = connect(args).await?;
    let sync = client
        .sync(proto::SyncReq {})
        .await
        .map_err(rpc_error)?
        .into_inner()
        .sync
        .unwrap_or_default();
    Ok(match args.output {
        Output::Json => lbctl::json_text(&lbctl::sync_json(&sync)),
        Output::Text => lbctl::render_sync(&sync),
    })
}

async fn pools(args: &Args) -> anyhow::Result<String> {
    let mut client = connect(args).await?;
    let pools = client
        .list_pools(proto::ListPoolsReq {})
        .await
        .map_err(rpc_error)?
        .into_inner();
    Ok(match args.output {
        Output::Json => lbctl::json_text(&lbctl::pools_json(&pools)),
        Output::Text => lbctl::render_pools(&pools, colour(args)),
    })
}

/// Prints each health transition as it arrives, until the stream ends or lbctl is interrupted.
async fn watch(args: &Args) -> anyhow::Result<String> {
    use std::io::Write;
    let mut client = connect(args).await?;
    let request = proto::WatchHealthReq {
        pattern: args.pattern.clone().unwrap_or_default(),
    };
    let mut stream = client
        .watch_health(request)
        .await
        .map_err(rpc_error)?
        .into_inner();
    let (json, colour) = (args.output == Output::Json, colour(args));
    while let Some(event) = stream.message().await.map_err(rpc_error)? {
        let line = lbctl::render_event(&event, json, colour);
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{line}");
        let _ = stdout.flush();
    }
    Ok(String::new())
}

/// What applying `file` would change on the running lb, and whether anything would; the file
/// is validated here first, so its errors carry its own path and positions.
async fn plan(args: &Args, file: &Path) -> anyhow::Result<(String, bool)> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    lb::config::parse(&text).map_err(|diagnostics| {
        let lines: Vec<String> = diagnostics
            .iter()
            .map(|d| d.display_with(file).to_string())
            .collect();
        anyhow!("{} is invalid:\n{}", file.display(), lines.join("\n"))
    })?;
    let mut client = connect(args).await?;
    let plan = client
        .plan(proto::PlanReq { config: text })
        .await
        .map_err(rpc_error)?
        .into_inner();
    let text = if args.output == Output::Json {
        lbctl::json_text(&lbctl::plan_json(&plan))
    } else {
        lbctl::plan(&plan)
    };
    Ok((text, !plan.changes.is_empty()))
}

/// lbctl's side of a rolling upgrade: the control API through its client, the command on this
/// machine, progress on stdout (stderr with `--output json`, whose stdout is the summary).
struct Rolling {
    client: Client,
    pattern: String,
    command: String,
    json: bool,
}

impl Rolling {
    fn error(status: tonic::Status) -> lbctl::rolling::ControlError {
        lbctl::rolling::ControlError(format!("{:#}", rpc_error(status)))
    }
}

impl lbctl::rolling::Control for Rolling {
    async fn pool_health(&self) -> Result<proto::PoolHealth, lbctl::rolling::ControlError> {
        fetch_pool_health(&mut self.client.clone(), &self.pattern)
            .await
            .map_err(|e| lbctl::rolling::ControlError(format!("{e:#}")))
    }

    async fn drain(&self, backend: &BackendAddr) -> Result<String, lbctl::rolling::ControlError> {
        let request = proto::DrainBackendReq {
            pattern: self.pattern.clone(),
            backend: Some(ip_backend(backend)),
            if_match: None,
        };
        let response = self.client.clone().drain_backend(request).await;
        response
            .map(|r| r.into_inner().commit)
            .map_err(Rolling::error)
    }

    async fn enable(&self, backend: &BackendAddr) -> Result<String, lbctl::rolling::ControlError> {
        let request = proto::EnableBackendReq {
            pattern: self.pattern.clone(),
            backend: Some(ip_backend(backend)),
            if_match: None,
        };
        let response = self.client.clone().enable_backend(request).await;
        response
            .map(|r| r.into_inner().commit)
            .map_err(Rolling::error)
    }

    async fn run(
        &self,
        backend: &BackendAddr,
        timeout: Duration,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<(), lbctl::rolling::CommandError> {
        let env = [
            ("LB_BACKEND_IP", backend.addr.ip().to_string()),
            ("LB_BACKEND_PORT", backend.addr.port().to_string()),
            ("LB_BACKEND", backend.to_string()),
            ("LB_POOL", self.pattern.clone()),
        ];
        let prefix = format!("{backend}| ");
        lbctl::rolling::run_command(&self.command, &env, &prefix, self.json, timeout, cancel).await
    }

    fn say(&self, line: &str) {
        if self.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }
}

/// `rollout rolling`: runs the workflow, prints its report, and fails unless every backend was
/// upgraded. Ctrl-C stops it where it is (nothing new starts, nothing is undone).
async fn rollout_rolling(
    args: &Args,
    rolling: &RollingArgs,
    client: Client,
) -> anyhow::Result<String> {
    let settings = lbctl::rolling::Settings {
        pattern: rolling.pattern.clone(),
        command: rolling.run.clone(),
        canaries: rolling.canaries,
        concurrency: usize::try_from(rolling.concurrency).unwrap_or(usize::MAX),
        max_failures: rolling.max_failures,
        bake: rolling.bake,
        timeout: rolling.timeout,
        thresholds: lb::canary::verdict::Thresholds {
            min_requests: rolling.min_requests.max(1),
            max_error_rate: rolling.max_error_rate,
            max_error_increase: rolling.max_error_increase,
            max_p99_ratio: rolling.max_p99_ratio,
        },
    };
    let control = Rolling {
        client,
        pattern: rolling.pattern.clone(),
        command: rolling.run.clone(),
        json: args.output == Output::Json,
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    let interrupt = cancel.clone();
    let on_ctrl_c = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("lbctl: interrupted: no new backend starts; each is left as it is");
            interrupt.cancel();
        }
    });
    let report = lbctl::rolling::run(&control, &settings, &cancel).await;
    on_ctrl_c.abort();
    let report = report.map_err(|e| anyhow!("{e}"))?;
    if control.json {
        print!("{}", lbctl::json_text(&report.json()));
    } else {
        print!("\n{}", report.render());
    }
    if report.complete() {
        return Ok(String::new());
    }
    Err(anyhow!(
        "the rolling upgrade of pool {} is incomplete: {}",
        report.pattern,
        report
            .stopped
            .clone()
            .unwrap_or_else(|| format!("{} backend(s) failed", report.failures()))
    ))
}
