//! `lb`: serve, check a config, or run the demo. Flags and logging here; the work is in the library.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lb::access_log::AccessLog;
use lb::config::AccessLog as AccessLogConfig;
use lb::log_writer::{BatchWriter, FlushGuard};
use tracing_subscriber::{fmt, EnvFilter};

/// jemalloc rather than the C library's malloc: fewer instructions per request and less memory
/// kept per idle connection (the figures are in bench/RESULTS.md).
#[cfg(unix)]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    version,
    about = "A layer-7 HTTP load balancer whose topology lives in lb.toml"
)]
struct Args {
    /// The config file to serve and watch.
    #[arg(long, default_value = "lb.toml", global = true)]
    config: PathBuf,
    /// Data-plane listen address (overrides [listen] http).
    #[arg(long)]
    http: Option<SocketAddr>,
    /// Control API listen address (overrides [listen] grpc).
    #[arg(long)]
    grpc: Option<SocketAddr>,
    /// Admin listen address for /metrics, /healthz, /readyz and the dashboard (overrides [listen] admin).
    #[arg(long)]
    admin: Option<SocketAddr>,
    /// Allow the control API on a non-loopback address without [control] token_file.
    #[arg(long)]
    insecure_control: bool,
    /// This instance's name in a [sync] fleet: what a rollout's `driver` key names [default:
    /// the hostname, else the admin listen address].
    #[arg(long, env = "LB_INSTANCE")]
    instance: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a config file without serving: exit 0 if valid, else print every error.
    Check {
        /// The file to check [default: --config, i.e. lb.toml].
        path: Option<PathBuf>,
    },
    /// Start two sample backends and lb in front of them (never touches ./lb.toml).
    Demo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        http: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:8081")]
        grpc: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin: SocketAddr,
        /// Add two new versions and roll them out: v2 goes through every step and is
        /// promoted, then v3 (30% errors) is aborted by lb itself; the demo sends the traffic.
        #[arg(long)]
        rollout: bool,
    },
}

/// Sets up logging: the process log on stderr (text or JSON lines), filtered by `RUST_LOG`, and
/// the access log on stderr, off, or in its own file (also off when `RUST_LOG` turns target
/// `lb::access` off). Writes go through [`BatchWriter`]'s background thread so a slow output never
/// blocks a request.
fn init_logging(log: &lb::config::Log) -> Result<(AccessLog, Vec<FlushGuard>), String> {
    use tracing_subscriber::prelude::*;
    let mut guards = Vec::new();
    let (stderr, guard) = BatchWriter::spawn("lb-log", std::io::stderr())
        .map_err(|e| format!("cannot start the log writer: {e}"))?;
    guards.push(guard);
    let ansi = !log.json && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let main = fmt::layer().with_writer(stderr.clone()).with_ansi(ansi);
    let main = if log.json {
        main.json().boxed()
    } else {
        main.boxed()
    };
    tracing_subscriber::registry()
        .with(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with(main)
        .init();
    // The access log is not a tracing event (see lb::access_log), but `RUST_LOG` still decides
    // whether it is on, as its README line promises.
    if !tracing::enabled!(target: "lb::access", tracing::Level::INFO) {
        return Ok((AccessLog::off(), guards));
    }
    let access = match &log.access {
        AccessLogConfig::Off => AccessLog::off(),
        AccessLogConfig::Stderr => AccessLog::new(stderr, log.json),
        AccessLogConfig::File(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("cannot open access log {}: {e}", path.display()))?;
            let (writer, guard) = BatchWriter::spawn("lb-access-log", file)
                .map_err(|e| format!("cannot start the access log writer: {e}"))?;
            guards.push(guard);
            AccessLog::new(writer, log.json)
        }
    };
    Ok((access, guards))
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Process settings (logging, worker threads) are read before anything else starts; a broken
    // file is reported properly by `Lb::bind` below.
    let config = match &args.command {
        None => lb::config::load(&args.config)
            .ok()
            .map(|(config, _)| config),
        Some(_) => None,
    };
    let log = config.as_ref().map(|c| c.log.clone()).unwrap_or_default();
    let (access_log, _log_guards) = match init_logging(&log) {
        Ok(logging) => logging,
        Err(error) => {
            eprintln!("lb: {error}");
            return ExitCode::FAILURE;
        }
    };

    if let Some(Command::Check { path }) = &args.command {
        let path = path.as_ref().unwrap_or(&args.config);
        // A file without pools is refused as a reload of a running lb; check says so too.
        let checked = lb::config::load(path).and_then(|(config, text)| {
            match lb::config::refuse_empty(&config) {
                Some(refusal) => Err(lb::config::Error::Invalid {
                    path: path.clone(),
                    diagnostics: vec![refusal],
                }),
                None => Ok((config, text)),
            }
        });
        return match checked {
            Ok((config, _)) => {
                // The certificate and CA files are checked as a start would load them.
                let problems = lb::tls::check_files(&config);
                for problem in &problems {
                    eprintln!("{}: {problem}", path.display());
                }
                if !problems.is_empty() {
                    return ExitCode::FAILURE;
                }
                println!("{}: ok", path.display());
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("{error}");
                ExitCode::FAILURE
            }
        };
    }

    let workers = config
        .as_ref()
        .and_then(|c| c.server.workers)
        .unwrap_or_else(usable_cpus);
    // One worker: a current-thread runtime does the same work without the work-stealing
    // scheduler's cross-thread bookkeeping (and without a second, idle thread to wake).
    let mut runtime = match workers {
        1 => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    runtime.enable_all();
    if workers > 1 {
        runtime.worker_threads(workers);
    }
    let runtime = match runtime.build() {
        Ok(r) => r,
        Err(error) => {
            eprintln!("lb: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(workers, "runtime started");
    let served = runtime.block_on(serve(args, access_log));
    // `Lb::run` returns by the drain deadline; what it left (an upgrade tunnel, a control
    // connection) is dropped here, and a blocking task (a file write) gets a moment to finish
    // rather than holding the process up.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("lb: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args, access_log: AccessLog) -> Result<(), lb::Error> {
    match args.command {
        Some(Command::Demo {
            http,
            grpc,
            admin,
            rollout,
        }) => {
            let demo = lb::demo::start(http, grpc, admin, access_log, rollout).await?;
            let addr = demo.lb.http_addr();
            println!(
                "lb demo: balancing http://{addr}/ over sample backends {} and {}",
                demo.backends[0], demo.backends[1]
            );
            println!("config: {}", demo.config_path.display());
            println!(
                "try:    curl http://{addr}/   (repeat it: answers come from node a and node b)"
            );
            if let Some(admin) = demo.lb.admin_addr() {
                println!("watch:  http://{admin}/   (live dashboard; /metrics for Prometheus)");
            }
            // Only `lb` is built by the one command README gives: the form printed builds and
            // runs lbctl too, from the same checkout.
            println!(
                "drive:  cargo run --release --bin lbctl -- --lb={} --pattern=/ poolHealth",
                demo.lb.grpc_addr()
            );
            if let [good, bad] = demo.versions[..] {
                println!(
                    "rollout: version v2 ({good}) goes 10% > 50% > 100% and is promoted, 15 s a step at least; then v3 ({bad}, 30% errors) starts and lb aborts it. The demo sends the traffic; the dashboard shows the steps."
                );
                println!(
                    "follow: cargo run --release --bin lbctl -- --lb={} rollout watch /",
                    demo.lb.grpc_addr()
                );
                tokio::spawn(lb::demo::traffic(addr));
                tokio::spawn(lb::demo::second_rollout(
                    std::sync::Arc::clone(demo.lb.applier()),
                    bad,
                ));
            }
            println!("stop:   Ctrl-C");
            demo.lb.run(lb::shutdown_signal()).await
        }
        _ => {
            let lb = lb::Lb::bind(lb::Options {
                config: args.config,
                http: args.http,
                grpc: args.grpc,
                admin: args.admin,
                insecure_control: args.insecure_control,
                instance: args.instance,
                access_log,
            })
            .await?;
            lb.run(lb::shutdown_signal()).await
        }
    }
}

/// The CPUs this process may run on: its affinity mask (`taskset`, a cpuset) and its cgroup's
/// CPU quota (a container's `--cpus`, a Kubernetes CPU limit), as the standard library reads
/// them; 1 when they cannot be read.
fn usable_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}
