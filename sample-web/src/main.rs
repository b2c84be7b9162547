//! `sample-web --port N [--node NAME] [--addr IP]`: a backend to put behind lb.

#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use clap::Parser;

#[derive(Parser)]
#[command(
    version,
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
    sample_web::serve(listener, node).await;
}
