//! `sample-web --port N [--node NAME] [--addr IP] [--version TEXT] [--error-rate F]
//! [--delay DURATION]`: a backend to put behind lb, which can misbehave for canary demos.

#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use clap::Parser;
use sample_web::Behaviour;

#[derive(Parser)]
#[command(
    disable_version_flag = true,
    about = "A tiny HTTP backend: /healthz answers ok, every other path names the node"
)]
struct Args {
    /// Port to listen on (0 picks a free one).
    #[arg(long)]
    port: u16,
    /// Name shown in `Hello web from node NAME` [default: a random id].
    #[arg(long)]
    node: Option<String>,
    /// Address to listen on; loopback unless widened on purpose.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    addr: IpAddr,
    /// Version named in the greeting: `Hello web from node NAME version TEXT` [default: none].
    #[arg(long, value_name = "TEXT")]
    version: Option<String>,
    /// Share of requests (0 to 1) answered 500, spread evenly (every 1/F-th); /healthz is spared.
    #[arg(long, value_name = "F", default_value = "0", value_parser = sample_web::parse_error_rate)]
    error_rate: f64,
    /// Latency added to every answer but /healthz's, e.g. 200ms.
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = parse_delay)]
    delay: Duration,
}

fn parse_delay(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|error| format!("{error} (a duration such as 200ms or 1s)"))
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let node = args.node.unwrap_or_else(sample_web::random_node_id);
    let addr = SocketAddr::new(args.addr, args.port);
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(error) => {
            eprintln!("sample-web: cannot listen on {addr}: {error}");
            std::process::exit(1);
        }
    };
    let bound = listener.local_addr().map_or(addr, |a| a);
    eprintln!("sample-web: node {node} listening on {bound}");
    let behaviour = Behaviour {
        node,
        version: args.version,
        error_rate: args.error_rate,
        delay: args.delay,
    };
    sample_web::serve_with(listener, behaviour).await;
}
