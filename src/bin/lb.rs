//! `lb`: serve, check a config, or run the demo. Flags and logging here; the work is in the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

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
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a config file without serving: exit 0 if valid, else print every error.
    Check { path: PathBuf },
    /// Start two sample backends and lb in front of them (never touches ./lb.toml).
    Demo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        http: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:8081")]
        grpc: SocketAddr,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    if let Some(Command::Check { path }) = &args.command {
        return match lb::config::load(path) {
            Ok(_) => {
                println!("{}: ok", path.display());
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("{error}");
                ExitCode::FAILURE
            }
        };
    }

    // The worker count is a process setting, so it is read before the runtime exists.
    let workers = match &args.command {
        None => lb::config::load(&args.config)
            .ok()
            .and_then(|(config, _)| config.server.workers),
        Some(_) => None,
    };
    // One worker: a current-thread runtime does the same work without the work-stealing
    // scheduler's cross-thread bookkeeping (and without a second, idle thread to wake).
    let mut runtime = match workers {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    runtime.enable_all();
    if let Some(workers) = workers.filter(|w| *w > 1) {
        runtime.worker_threads(workers);
    }
    let runtime = match runtime.build() {
        Ok(r) => r,
        Err(error) => {
            eprintln!("lb: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("lb: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args) -> Result<(), lb::Error> {
    match args.command {
        Some(Command::Demo { http, grpc }) => {
            let demo = lb::demo::start(http, grpc).await?;
            let addr = demo.lb.http_addr();
            println!(
                "lb demo: balancing http://{addr}/ over sample backends {} and {}",
                demo.backends[0], demo.backends[1]
            );
            println!("config: {}", demo.config_path.display());
            println!(
                "try:    curl http://{addr}/   (repeat it: answers come from node a and node b)"
            );
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
            })
            .await?;
            lb.run(lb::shutdown_signal()).await
        }
    }
}
