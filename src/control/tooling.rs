//! The standard gRPC services that tooling expects beside `rollout.lb.LoadBalancer`:
//! `grpc.health.v1.Health` (Kubernetes' gRPC probes, `grpc_health_probe`) and server reflection
//! (`grpcurl`, which lists and calls services without a local copy of the proto). It never reads
//! or changes the topology; the health it reports is the control server's own, not a backend's.

use std::pin::Pin;

use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use super::proto::load_balancer_server::LoadBalancerServer;
use super::ControlService;

/// `grpc.health.v1.Health` for the control listener: `SERVING` for `""` (the server as a whole)
/// and for `rollout.lb.LoadBalancer` until shutdown begins, `NOT_SERVING` from then on; any other
/// name is `NOT_FOUND`, as the protocol asks.
pub struct ControlHealth {
    /// Cancelled when lb begins to shut down: checks answer `NOT_SERVING` and watches send it and
    /// end, so a watching probe never holds the shutdown up.
    shutting_down: CancellationToken,
}

impl ControlHealth {
    pub fn server(shutting_down: CancellationToken) -> HealthServer<ControlHealth> {
        HealthServer::new(ControlHealth { shutting_down })
    }

    fn status(&self, service: &str) -> Result<ServingStatus, Status> {
        if !service.is_empty() && service != LoadBalancerServer::<ControlService>::NAME {
            return Err(Status::not_found(format!(
                "no service {service:?} here; ask for \"\" or {:?}",
                LoadBalancerServer::<ControlService>::NAME
            )));
        }
        Ok(if self.shutting_down.is_cancelled() {
            ServingStatus::NotServing
        } else {
            ServingStatus::Serving
        })
    }
}

fn response(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status as i32,
    }
}

type HealthStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for ControlHealth {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let status = self.status(&request.get_ref().service)?;
        Ok(Response::new(response(status)))
    }

    type WatchStream = HealthStream;

    /// The status now and, when shutdown begins, `NOT_SERVING` and the end of the stream.
    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthStream>, Status> {
        let status = self.status(&request.get_ref().service)?;
        let now = tokio_stream::once(Ok(response(status)));
        if status == ServingStatus::NotServing {
            return Ok(Response::new(Box::pin(now)));
        }
        let at_shutdown = StreamExt::then(
            tokio_stream::once(self.shutting_down.clone()),
            |shutting_down| async move {
                shutting_down.cancelled().await;
                Ok(response(ServingStatus::NotServing))
            },
        );
        Ok(Response::new(Box::pin(now.chain(at_shutdown))))
    }
}

/// Server reflection over `rollout.lb.LoadBalancer` and `grpc.health.v1.Health`; the caller
/// builds v1 and v1alpha from it (grpcurl asks for v1 and falls back to v1alpha), each of which
/// also describes itself.
pub fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(super::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}
