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
    /// Connect and request timeout, e.g. 10s.
    #[arg(long, global = true, default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
    #[command(subcommand)]
    command: Command,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    lb::config::parse_duration(text)
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

/// Adds the bearer token to every request when one is configured.
#[derive(Clone)]
struct Auth(Option<MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Auth {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

fn main() -> ExitCode {
    let args = Args::parse_from(lbctl::normalise_args(std::env::args()));
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
        .connect_timeout(args.timeout)
        .timeout(args.timeout);
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
    Ok(LoadBalancerClient::with_interceptor(channel, Auth(auth)))
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

async fn run(args: Args) -> anyhow::Result<String> {
    // Resolve what to do before connecting, so usage errors never wait on the network.
    enum Action {
        AddPool(String),
        RemovePool(String),
        AddBackend(String, BackendAddr),
        RemoveBackend(String, BackendAddr),
        PoolHealth(String),
    }
    let pattern = |name: &str| required(&args.pattern, "pattern", name).cloned();
    let action = match &args.command {
        Command::AddPool => Action::AddPool(pattern("addPool")?),
        Command::RemovePool => Action::RemovePool(pattern("removePool")?),
        Command::AddBackend => {
            Action::AddBackend(pattern("addBackend")?, flag_backend(&args, "addBackend")?)
        }
        Command::RemoveBackend => Action::RemoveBackend(
            pattern("removeBackend")?,
            flag_backend(&args, "removeBackend")?,
        ),
        Command::PoolHealth => Action::PoolHealth(pattern("poolHealth")?),
        Command::Pool(PoolCommand::Add { pattern }) => Action::AddPool(pattern.clone()),
        Command::Pool(PoolCommand::Remove { pattern }) => Action::RemovePool(pattern.clone()),
        Command::Pool(PoolCommand::Health { pattern }) => Action::PoolHealth(pattern.clone()),
        Command::Backend(BackendCommand::Add { pattern, backend }) => {
            Action::AddBackend(pattern.clone(), backend.clone())
        }
        Command::Backend(BackendCommand::Remove { pattern, backend }) => {
            Action::RemoveBackend(pattern.clone(), backend.clone())
        }
    };
    let mut client = connect(&args).await?;
    match action {
        Action::AddPool(pattern) => {
            client
                .add_pool(add_pool_req(&pattern))
                .await
                .map_err(rpc_error)?;
            Ok(format!("added pool {pattern}\n"))
        }
        Action::RemovePool(pattern) => {
            let request = proto::RemovePoolReq {
                pattern: pattern.clone(),
            };
            client.remove_pool(request).await.map_err(rpc_error)?;
            Ok(format!("removed pool {pattern}\n"))
        }
        Action::AddBackend(pattern, backend) => {
            let request = proto::AddBackendReq {
                pattern: pattern.clone(),
                backend: Some(ip_backend(&backend)),
            };
            client.add_backend(request).await.map_err(rpc_error)?;
            Ok(format!("added backend {backend} to pool {pattern}\n"))
        }
        Action::RemoveBackend(pattern, backend) => {
            let request = proto::RemoveBackendReq {
                pattern: pattern.clone(),
                backend: Some(ip_backend(&backend)),
            };
            client.remove_backend(request).await.map_err(rpc_error)?;
            Ok(format!("removed backend {backend} from pool {pattern}\n"))
        }
        Action::PoolHealth(pattern) => {
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
            Ok(lbctl::render_pool_health(&pattern, &health))
        }
    }
}
