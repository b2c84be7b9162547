//! `lbctl`: drives a running lb over its gRPC control API.
//!
//! Accepts the original Go tool's invocation exactly (`lbctl --lb=ADDR --pattern=/ addPool`,
//! single-dash flags included) and idiomatic aliases (`lbctl pool add /`).

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::{Parser, Subcommand};
use lb::config::BackendAddr;
use lb::control::proto::{self, load_balancer_client::LoadBalancerClient};
use lb::lbctl;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

#[derive(Parser)]
#[command(version, about = "Control a running lb: pools, backends, health")]
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
    Status,
    /// Every pool with every backend's health, admin state and in-flight requests.
    Pools,
    /// Stream health transitions until interrupted (--pattern to filter).
    Watch,
    /// Show what applying FILE would change on the running lb (pools and backends).
    Plan { file: PathBuf },
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

/// Whether to colour statuses (text output on a terminal only).
static COLOUR: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

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

fn main() -> ExitCode {
    let args = Args::parse_from(lbctl::normalise_args(std::env::args()));
    COLOUR.store(
        args.output == Output::Text && std::io::IsTerminal::is_terminal(&std::io::stdout()),
        std::sync::atomic::Ordering::Relaxed,
    );
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
    match runtime.block_on(run(args)) {
        Ok(output) => {
            print!("{output}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("lbctl: error: {error:#}");
            ExitCode::FAILURE
        }
    }
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

async fn connect(args: &Args) -> anyhow::Result<Client> {
    let url = lbctl::endpoint(&args.lb);
    let endpoint = Endpoint::from_shared(url.clone())
        .map_err(|_| anyhow!("--lb {:?} is not HOST:PORT or a URL", args.lb))?
        .connect_timeout(args.rpc_timeout);
    // Streams (watch) must outlive the per-RPC timeout; unary calls set it per request.
    let endpoint = if matches!(args.command, Command::Watch) {
        endpoint
    } else {
        endpoint.timeout(args.rpc_timeout)
    };
    let channel = endpoint.connect().await.map_err(|e| {
        anyhow!(
            "cannot reach lb at {}: {}",
            args.lb,
            lb::health::error_chain(&e)
        )
    })?;
    let auth = match token(args)? {
        Some(token) => Some(format!("Bearer {token}").parse().map_err(|_| {
            anyhow!("the control token contains characters not allowed in a header")
        })?),
        None => None,
    };
    let actor = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .and_then(|user| user.parse().ok());
    Ok(LoadBalancerClient::with_interceptor(
        channel,
        Auth { token: auth, actor },
    ))
}

fn required<'a, T>(value: &'a Option<T>, flag: &str, command: &str) -> anyhow::Result<&'a T> {
    value
        .as_ref()
        .ok_or_else(|| anyhow!("{command} needs --{flag}"))
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
fn flag_backend(args: &Args, command: &str) -> anyhow::Result<BackendAddr> {
    let ip = *required(&args.ip, "ip", command)?;
    let port = *required(&args.port, "port", command)?;
    let port = u16::try_from(port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| anyhow!("--port {port} is outside 1-65535"))?;
    BackendAddr::new(ip, port, &args.url_path).map_err(|e| anyhow!("{e}"))
}

fn rpc_error(status: tonic::Status) -> anyhow::Error {
    anyhow!("{}: {}", lbctl::code_name(status.code()), status.message())
}

fn if_match(args: &Args) -> Option<proto::Precondition> {
    args.if_match.as_ref().map(|hash| proto::Precondition {
        content_hash: hash.clone(),
        generation: 0,
    })
}

fn paint(text: &str) -> String {
    if !COLOUR.load(std::sync::atomic::Ordering::Relaxed) {
        return text.to_owned();
    }
    let colour = match text {
        "PS_FULL" | "BS_HEALTHY" => "32",
        "PS_DEGRADED" | "AS_DRAIN" => "33",
        "PS_EMPTY" | "BS_SICK" | "AS_DISABLED" => "31",
        _ => return text.to_owned(),
    };
    format!("\x1b[{colour}m{text}\x1b[0m")
}

fn admin_name(state: i32) -> &'static str {
    proto::AdminState::try_from(state).map_or("AS_UNKNOWN", |s| s.as_str_name())
}

fn backend_json(b: &proto::BackendHealth) -> serde_json::Value {
    serde_json::json!({
        "backend": lbctl::backend_label(b),
        "status": lbctl::backend_status_name(b.status),
        "admin_state": admin_name(b.admin_state),
        "in_flight": b.in_flight,
    })
}

fn pool_json(pattern: &str, health: &proto::PoolHealth) -> serde_json::Value {
    serde_json::json!({
        "pattern": pattern,
        "status": lbctl::pool_status_name(health.status),
        "backends": health.backends.iter().map(backend_json).collect::<Vec<_>>(),
    })
}

fn pool_text(pattern: &str, health: &proto::PoolHealth) -> String {
    let mut out = lbctl::table(&[
        vec!["POOL".into(), "STATUS".into()],
        vec![
            pattern.to_owned(),
            paint(lbctl::pool_status_name(health.status)),
        ],
    ]);
    out.push('\n');
    let mut rows = vec![vec![
        "BACKEND".into(),
        "STATUS".into(),
        "ADMIN".into(),
        "IN FLIGHT".into(),
    ]];
    rows.extend(health.backends.iter().map(|b| {
        vec![
            lbctl::backend_label(b),
            paint(lbctl::backend_status_name(b.status)),
            paint(admin_name(b.admin_state)),
            b.in_flight.to_string(),
        ]
    }));
    out.push_str(&lbctl::table(&rows));
    out
}

fn json(value: &serde_json::Value) -> String {
    format!(
        "{}\n",
        serde_json::to_string_pretty(value).unwrap_or_default()
    )
}

async fn run(args: Args) -> anyhow::Result<String> {
    // Resolve what to do before connecting, so usage errors never wait on the network.
    let pattern = |name: &str| required(&args.pattern, "pattern", name).cloned();
    let mut client;
    match &args.command {
        Command::AddPool | Command::Pool(PoolCommand::Add { .. }) => {
            let pattern = match &args.command {
                Command::Pool(PoolCommand::Add { pattern }) => pattern.clone(),
                _ => pattern("addPool")?,
            };
            client = connect(&args).await?;
            let mut request = add_pool_req(&pattern);
            request.if_match = if_match(&args);
            client.add_pool(request).await.map_err(rpc_error)?;
            Ok(format!("added pool {pattern}\n"))
        }
        Command::RemovePool | Command::Pool(PoolCommand::Remove { .. }) => {
            let pattern = match &args.command {
                Command::Pool(PoolCommand::Remove { pattern }) => pattern.clone(),
                _ => pattern("removePool")?,
            };
            client = connect(&args).await?;
            let request = proto::RemovePoolReq {
                pattern: pattern.clone(),
                if_match: if_match(&args),
            };
            client.remove_pool(request).await.map_err(rpc_error)?;
            Ok(format!("removed pool {pattern}\n"))
        }
        Command::AddBackend | Command::Backend(BackendCommand::Add { .. }) => {
            let (pattern, backend) = match &args.command {
                Command::Backend(BackendCommand::Add { pattern, backend }) => {
                    (pattern.clone(), backend.clone())
                }
                _ => (pattern("addBackend")?, flag_backend(&args, "addBackend")?),
            };
            client = connect(&args).await?;
            let request = proto::AddBackendReq {
                pattern: pattern.clone(),
                backend: Some(ip_backend(&backend)),
                if_match: if_match(&args),
            };
            client.add_backend(request).await.map_err(rpc_error)?;
            Ok(format!("added backend {backend} to pool {pattern}\n"))
        }
        Command::RemoveBackend | Command::Backend(BackendCommand::Remove { .. }) => {
            let (pattern, backend) = match &args.command {
                Command::Backend(BackendCommand::Remove { pattern, backend }) => {
                    (pattern.clone(), backend.clone())
                }
                _ => (
                    pattern("removeBackend")?,
                    flag_backend(&args, "removeBackend")?,
                ),
            };
            client = connect(&args).await?;
            let request = proto::RemoveBackendReq {
                pattern: pattern.clone(),
                backend: Some(ip_backend(&backend)),
                if_match: if_match(&args),
            };
            client.remove_backend(request).await.map_err(rpc_error)?;
            Ok(format!("removed backend {backend} from pool {pattern}\n"))
        }
        Command::PoolHealth | Command::Pool(PoolCommand::Health { .. }) => {
            let pattern = match &args.command {
                Command::Pool(PoolCommand::Health { pattern }) => pattern.clone(),
                _ => pattern("poolHealth")?,
            };
            client = connect(&args).await?;
            let request = proto::PoolHealthReq {
                pattern: pattern.clone(),
                healthy: true,
                sick: true,
            };
            let response = client
                .pool_health(request)
                .await
                .map_err(rpc_error)?
                .into_inner();
            let health = response.health.unwrap_or_default();
            Ok(match args.output {
                Output::Json => json(&pool_json(&pattern, &health)),
                Output::Text => pool_text(&pattern, &health),
            })
        }
        Command::Drain | Command::Enable | Command::Disable => {
            let name = match args.command {
                Command::Drain => "drain",
                Command::Enable => "enable",
                _ => "disable",
            };
            let (pattern, backend) = (pattern(name)?, flag_backend(&args, name)?);
            client = connect(&args).await?;
            let (p, b, m) = (pattern.clone(), Some(ip_backend(&backend)), if_match(&args));
            match args.command {
                Command::Drain => client
                    .drain_backend(proto::DrainBackendReq {
                        pattern: p,
                        backend: b,
                        if_match: m,
                    })
                    .await
                    .map(drop),
                Command::Enable => client
                    .enable_backend(proto::EnableBackendReq {
                        pattern: p,
                        backend: b,
                        if_match: m,
                    })
                    .await
                    .map(drop),
                _ => client
                    .disable_backend(proto::DisableBackendReq {
                        pattern: p,
                        backend: b,
                        if_match: m,
                    })
                    .await
                    .map(drop),
            }
            .map_err(rpc_error)?;
            let done = match name {
                "drain" => "draining",
                "enable" => "enabled",
                _ => "disabled",
            };
            Ok(format!("{done} backend {backend} in pool {pattern}\n"))
        }
        Command::Wait { timeout, .. } => {
            let (pattern, backend) = (pattern("wait")?, flag_backend(&args, "wait")?);
            client = connect(&args).await?;
            let deadline = tokio::time::Instant::now() + *timeout;
            loop {
                let request = proto::PoolHealthReq {
                    pattern: pattern.clone(),
                    healthy: true,
                    sick: true,
                };
                let health = client
                    .pool_health(request)
                    .await
                    .map_err(rpc_error)?
                    .into_inner()
                    .health
                    .unwrap_or_default();
                let label = backend.to_string();
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
        Command::Status => {
            client = connect(&args).await?;
            let status = client
                .status(proto::StatusReq {})
                .await
                .map_err(rpc_error)?
                .into_inner();
            if args.output == Output::Json {
                return Ok(json(&serde_json::json!({
                    "config_path": status.config_path,
                    "generation": status.generation,
                    "content_hash": status.content_hash,
                    "last_reload_ok": status.last_reload_ok,
                    "last_error": status.last_error,
                    "pools": status.pools.iter().map(|p| serde_json::json!({
                        "pattern": p.pattern, "status": lbctl::pool_status_name(p.status),
                        "healthy": p.healthy, "total": p.total, "type": p.pool_type,
                    })).collect::<Vec<_>>(),
                })));
            }
            let mut out = format!(
                "config:      {}\ngeneration:  {}\nsha256:      {}\nlast reload: {}\n\n",
                status.config_path,
                status.generation,
                status.content_hash,
                if status.last_reload_ok {
                    "ok".to_owned()
                } else {
                    format!("FAILED\n{}", status.last_error)
                }
            );
            let mut rows = vec![vec![
                "POOL".into(),
                "STATUS".into(),
                "HEALTHY".into(),
                "TYPE".into(),
            ]];
            rows.extend(status.pools.iter().map(|p| {
                vec![
                    p.pattern.clone(),
                    paint(lbctl::pool_status_name(p.status)),
                    format!("{}/{}", p.healthy, p.total),
                    p.pool_type.clone(),
                ]
            }));
            out.push_str(&lbctl::table(&rows));
            Ok(out)
        }
        Command::Pools => {
            client = connect(&args).await?;
            let pools = client
                .list_pools(proto::ListPoolsReq {})
                .await
                .map_err(rpc_error)?
                .into_inner();
            if args.output == Output::Json {
                let list: Vec<_> = pools
                    .pools
                    .iter()
                    .map(|p| pool_json(&p.pattern, &p.health.clone().unwrap_or_default()))
                    .collect();
                return Ok(json(&serde_json::json!({
                    "generation": pools.generation,
                    "content_hash": pools.content_hash,
                    "pools": list,
                })));
            }
            Ok(pools
                .pools
                .iter()
                .map(|p| pool_text(&p.pattern, &p.health.clone().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join("\n"))
        }
        Command::Watch => {
            client = connect(&args).await?;
            let request = proto::WatchHealthReq {
                pattern: args.pattern.clone().unwrap_or_default(),
            };
            let mut stream = client
                .watch_health(request)
                .await
                .map_err(rpc_error)?
                .into_inner();
            use std::io::Write;
            while let Some(event) = stream.message().await.map_err(rpc_error)? {
                let label = lbctl::backend_label(&proto::BackendHealth {
                    backend: event.backend.clone(),
                    ..Default::default()
                });
                let line = match args.output {
                    Output::Json => serde_json::json!({
                        "unix_ms": event.unix_ms, "pattern": event.pattern, "backend": label,
                        "status": lbctl::backend_status_name(event.status), "reason": event.reason,
                    })
                    .to_string(),
                    Output::Text => format!(
                        "{}  {}  {}  {}  {}",
                        event.unix_ms,
                        event.pattern,
                        label,
                        paint(lbctl::backend_status_name(event.status)),
                        event.reason
                    ),
                };
                let mut stdout = std::io::stdout().lock();
                let _ = writeln!(stdout, "{line}");
                let _ = stdout.flush();
            }
            Ok(String::new())
        }
        Command::Plan { file } => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let wanted = lb::config::parse(&text).map_err(|diagnostics| {
                let lines: Vec<String> = diagnostics
                    .iter()
                    .map(|d| d.display_with(file).to_string())
                    .collect();
                anyhow!("{} is invalid:\n{}", file.display(), lines.join("\n"))
            })?;
            client = connect(&args).await?;
            let running = client
                .list_pools(proto::ListPoolsReq {})
                .await
                .map_err(rpc_error)?
                .into_inner();
            Ok(lbctl::plan(&wanted, &running))
        }
    }
}
