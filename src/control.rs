//! control: owns the gRPC control API (`rollout.lb.LoadBalancer`). It validates requests and
//! hands every change to `apply`; it never edits lb.toml or the topology itself.

pub mod proto;
mod service;

pub use service::ControlService;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use crate::apply::Applier;
use proto::load_balancer_server::LoadBalancerServer;

/// Serves the control API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    applier: Arc<Applier>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(LoadBalancerServer::new(ControlService::new(applier)))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
}
