//! The `rollout.lb.LoadBalancer` service: validates each RPC, turns it into an
//! [`apply::Mutation`](crate::apply::Mutation), and maps errors to gRPC codes in one place.

use std::net::IpAddr;
use std::sync::Arc;

use tonic::{Code, Request, Response, Status};

use super::proto::{self, load_balancer_server::LoadBalancer};
use crate::apply::{Applier, MutateError, Mutation};
use crate::config::edit::{HealthCheckSpec, PoolSpec};
use crate::config::{format_duration, BackendAddr, DEFAULT_INTERVAL};
use crate::routing::Pattern;
use crate::topology::Pool;

/// The control API over one [`Applier`].
pub struct ControlService {
    applier: Arc<Applier>,
}

impl ControlService {
    pub fn new(applier: Arc<Applier>) -> ControlService {
        ControlService { applier }
    }
}

/// Every error the control API returns goes through here, so codes are decided in one place.
fn status(error: MutateError) -> Status {
    let code = match &error {
        MutateError::PoolNotFound { .. } | MutateError::BackendNotFound { .. } => Code::NotFound,
        MutateError::PoolExists { .. } | MutateError::BackendExists { .. } => Code::AlreadyExists,
        MutateError::Rejected { .. } => Code::InvalidArgument,
        MutateError::BackendUnhealthy { .. }
        | MutateError::FileInvalid { .. }
        | MutateError::Write(_)
        | MutateError::Edit(_) => Code::FailedPrecondition,
        MutateError::Read { .. } => Code::Unavailable,
    };
    Status::new(code, error.to_string())
}

fn invalid(message: impl Into<String>) -> Status {
    Status::invalid_argument(message)
}

/// A pattern as the file will hold it; must parse as a ServeMux pattern.
fn pattern(text: &str) -> Result<String, Status> {
    if text.is_empty() {
        return Err(invalid("pattern is empty (e.g. \"/\" or \"/api/\")"));
    }
    Pattern::parse(text).map_err(|e| invalid(format!("bad pattern {text:?}: {e}")))?;
    Ok(text.to_owned())
}

fn backend(backend: Option<proto::Backend>) -> Result<BackendAddr, Status> {
    let Some(proto::backend::Backend::IpBackend(ip_backend)) = backend.and_then(|b| b.backend)
    else {
        return Err(invalid("backend is missing (set backend.ip_backend)"));
    };
    let ip: IpAddr = ip_backend
        .ip
        .parse()
        .map_err(|_| invalid(format!("{:?} is not an IP address", ip_backend.ip)))?;
    let port = u16::try_from(ip_backend.port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| invalid(format!("port {} is outside 1-65535", ip_backend.port)))?;
    BackendAddr::new(ip, port, &ip_backend.url_path).map_err(|e| invalid(e.to_string()))
}

fn pool_spec(request: &proto::AddPoolReq) -> Result<PoolSpec, Status> {
    if request.pool_type != proto::PoolType::PtP2c as i32 {
        return Err(invalid("pool_type must be PT_P2C"));
    }
    let checks = request
        .health_checks
        .as_ref()
        .filter(|c| !c.health_checks.is_empty())
        .ok_or_else(|| invalid("a pool needs at least one health check"))?;
    let interval = match checks.interval_secs {
        0 => DEFAULT_INTERVAL,
        s if s > 0 => std::time::Duration::from_secs(s.unsigned_abs().into()),
        s => return Err(invalid(format!("interval_secs {s} is negative"))),
    };
    let health_checks = checks
        .health_checks
        .iter()
        .map(|check| match &check.health_check {
            Some(proto::health_check::HealthCheck::StatusCheck(status_check)) => {
                if status_check.healthy_values.is_empty()
                    || status_check.healthy_values.iter().any(String::is_empty)
                {
                    return Err(invalid(
                        "a status check needs at least one non-empty healthy value",
                    ));
                }
                let url_path = match status_check.url_path.as_str() {
                    "" => "/healthz".to_owned(),
                    p if p.starts_with('/') => p.to_owned(),
                    p => {
                        return Err(invalid(format!(
                            "health check url_path {p:?} must start with /"
                        )))
                    }
                };
                Ok(HealthCheckSpec {
                    url_path,
                    healthy_values: status_check.healthy_values.clone(),
                })
            }
            None => Err(invalid("a health check is missing its status_check")),
        })
        .collect::<Result<Vec<_>, Status>>()?;
    Ok(PoolSpec {
        pool_type: "p2c".to_owned(),
        interval: format_duration(interval),
        health_checks,
    })
}

fn pool_health(pool: &Pool, healthy: bool, sick: bool) -> proto::PoolHealth {
    let n_healthy = pool.n_healthy();
    let pool_status = if pool.backends.is_empty() {
        proto::PoolStatus::PsEmpty
    } else if n_healthy == pool.backends.len() {
        proto::PoolStatus::PsFull
    } else {
        proto::PoolStatus::PsDegraded
    };
    let backends = pool
        .backends
        .iter()
        .filter(|b| if b.is_healthy() { healthy } else { sick })
        .map(|b| proto::BackendHealth {
            backend: Some(proto::Backend {
                backend: Some(proto::backend::Backend::IpBackend(proto::IpBackend {
                    ip: b.addr.addr.ip().to_string(),
                    port: i32::from(b.addr.addr.port()),
                    url_path: b.addr.url_path.clone(),
                })),
            }),
            status: if b.is_healthy() {
                proto::BackendStatus::BsHealthy
            } else {
                proto::BackendStatus::BsSick
            } as i32,
        })
        .collect();
    proto::PoolHealth {
        status: pool_status as i32,
        backends,
    }
}

#[tonic::async_trait]
impl LoadBalancer for ControlService {
    async fn add_pool(
        &self,
        request: Request<proto::AddPoolReq>,
    ) -> Result<Response<proto::AddPoolResp>, Status> {
        let request = request.into_inner();
        let mutation = Mutation::AddPool {
            pattern: pattern(&request.pattern)?,
            spec: pool_spec(&request)?,
        };
        self.applier.mutate(mutation).await.map_err(status)?;
        Ok(Response::new(proto::AddPoolResp {}))
    }

    async fn remove_pool(
        &self,
        request: Request<proto::RemovePoolReq>,
    ) -> Result<Response<proto::RemovePoolResp>, Status> {
        let request = request.into_inner();
        let mutation = Mutation::RemovePool {
            pattern: pattern(&request.pattern)?,
        };
        self.applier.mutate(mutation).await.map_err(status)?;
        Ok(Response::new(proto::RemovePoolResp {}))
    }

    async fn add_backend(
        &self,
        request: Request<proto::AddBackendReq>,
    ) -> Result<Response<proto::AddBackendResp>, Status> {
        let request = request.into_inner();
        let mutation = Mutation::AddBackend {
            pattern: pattern(&request.pattern)?,
            backend: backend(request.backend)?,
        };
        self.applier.mutate(mutation).await.map_err(status)?;
        Ok(Response::new(proto::AddBackendResp {}))
    }

    async fn remove_backend(
        &self,
        request: Request<proto::RemoveBackendReq>,
    ) -> Result<Response<proto::RemoveBackendResp>, Status> {
        let request = request.into_inner();
        let mutation = Mutation::RemoveBackend {
            pattern: pattern(&request.pattern)?,
            backend: backend(request.backend)?,
        };
        self.applier.mutate(mutation).await.map_err(status)?;
        Ok(Response::new(proto::RemoveBackendResp {}))
    }

    async fn pool_health(
        &self,
        request: Request<proto::PoolHealthReq>,
    ) -> Result<Response<proto::PoolHealthResp>, Status> {
        let request = request.into_inner();
        let pattern = pattern(&request.pattern)?;
        let topology = self.applier.topology().load();
        let pool = topology
            .pool(&pattern)
            .ok_or_else(|| status(MutateError::PoolNotFound { pattern }))?;
        Ok(Response::new(proto::PoolHealthResp {
            health: Some(pool_health(pool, request.healthy, request.sick)),
        }))
    }
}
