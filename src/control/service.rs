//! The `rollout.lb.LoadBalancer` service: validates each RPC, turns it into an
//! [`apply::Mutation`](crate::apply::Mutation), and maps errors to gRPC codes in one place.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataMap;
use tonic::{Code, Request, Response, Status};

use super::proto::{self, load_balancer_server::LoadBalancer};
use super::rollout::Action;
use crate::admin::pool_status;
use crate::apply::{Applier, MutateError, MutateOptions, Mutation, Plan, PlanError, Precondition};
use crate::config::diff::ChangeKind;
use crate::config::edit::{HealthCheckSpec, PoolSpec};
use crate::config::{format_duration, AdminState, BackendAddr, DEFAULT_INTERVAL};
use crate::health;
use crate::metrics::SyncStatus;
use crate::routing::Pattern;
use crate::sync::{self, GitSync};
use crate::topology::{Backend, Pool};

/// The control API over one [`Applier`].
pub struct ControlService {
    applier: Arc<Applier>,
    /// Cancelled when lb begins to shut down: open health watches end with `UNAVAILABLE`, so the
    /// control server's graceful stop never waits on a client that would watch forever.
    shutting_down: CancellationToken,
    /// The data plane's `[tls]` certificates, listed by Status.
    certificates: Option<Arc<crate::tls::Store>>,
    /// Where mutations go: refused, pushed to the `[sync]` remote, or written to the file.
    writes: Writes,
    /// The rollout controller's last looks, for RolloutStatus.
    looks: Arc<crate::rollout::Looks>,
}

/// Where the control API's mutations go.
#[derive(Clone, Default)]
pub struct Writes {
    /// `[control] read_only`: every mutation is refused with FAILED_PRECONDITION.
    pub read_only: bool,
    /// `[sync]`: mutations are commits pushed to the remote; `lbctl sync` fetches it.
    pub sync: Option<Arc<GitSync>>,
    /// This instance's name (`lb --instance`): with `[sync]`, what a rollout's `driver` names.
    pub instance: Arc<str>,
}

impl ControlService {
    /// The service over `applier`; open health watches end when `shutting_down` is cancelled.
    pub fn new(applier: Arc<Applier>, shutting_down: CancellationToken) -> ControlService {
        ControlService {
            applier,
            shutting_down,
            certificates: None,
            writes: Writes::default(),
            looks: Arc::default(),
        }
    }

    /// Answers RolloutStatus from the rollout controller's `looks` where they are recent.
    pub fn with_looks(mut self, looks: Arc<crate::rollout::Looks>) -> ControlService {
        self.looks = looks;
        self
    }

    /// Sends mutations where `writes` says.
    pub fn with_writes(mut self, writes: Writes) -> ControlService {
        self.writes = writes;
        self
    }

    /// Lists `store`'s certificates in Status.
    pub fn with_certificates(mut self, store: Option<Arc<crate::tls::Store>>) -> ControlService {
        self.certificates = store;
        self
    }
}

/// The last item of every health watch once shutdown begins; tonic ends a server stream with
/// the first error it yields.
fn shutting_down() -> Status {
    Status::unavailable("lb is shutting down")
}

/// Every error the control API returns goes through here, so codes are decided in one place.
fn status(error: MutateError) -> Status {
    let code = match &error {
        MutateError::PoolNotFound { .. } | MutateError::BackendNotFound { .. } => Code::NotFound,
        MutateError::PoolExists { .. } | MutateError::BackendExists { .. } => Code::AlreadyExists,
        MutateError::Aborted { .. } => Code::Aborted,
        MutateError::Rejected { .. } => Code::InvalidArgument,
        MutateError::BackendUnhealthy { .. }
        | MutateError::FileInvalid { .. }
        | MutateError::Write(_)
        | MutateError::Edit(_) => Code::FailedPrecondition,
        MutateError::Read { .. } => Code::Unavailable,
    };
    Status::new(code, error.to_string())
}

/// A `[sync]` error as a gRPC status: the change's own refusals keep their codes; an
/// unreachable remote or a failing git is UNAVAILABLE (retry later), a branch that kept moving
/// ABORTED (retry now).
fn sync_status(error: sync::Error) -> Status {
    let code = match error {
        sync::Error::Mutate(error) => return status(error),
        sync::Error::Contended { .. } => Code::Aborted,
        sync::Error::Unreachable { .. } | sync::Error::Git(_) | sync::Error::ShuttingDown => {
            Code::Unavailable
        }
        sync::Error::NotWorkTree { .. }
        | sync::Error::Diverged { .. }
        | sync::Error::Declined { .. }
        | sync::Error::NotApplied { .. } => Code::FailedPrecondition,
    };
    Status::new(code, crate::errors::error_chain(&error))
}

fn proto_sync(status: &SyncStatus) -> proto::SyncStatus {
    proto::SyncStatus {
        remote: status.remote.clone(),
        branch: status.branch.clone(),
        serving_commit: status.serving_commit.clone().unwrap_or_default(),
        remote_head: status.remote_head.clone().unwrap_or_default(),
        last_success_unix: status.last_success_unix.unwrap_or(0),
        last_error: status.last_error.clone().unwrap_or_default(),
        ..proto::SyncStatus::default()
    }
}

fn proto_commit(info: sync::CommitInfo) -> proto::CommitInfo {
    proto::CommitInfo {
        commit: info.commit,
        subject: info.subject,
        committed_unix: info.committed_unix,
    }
}

fn proto_plan(plan: Plan) -> proto::PlanResp {
    proto::PlanResp {
        changes: plan
            .changes
            .into_iter()
            .map(|change| proto::ConfigChange {
                kind: match change.kind() {
                    ChangeKind::Add => proto::ChangeKind::CkAdd,
                    ChangeKind::Remove => proto::ChangeKind::CkRemove,
                    ChangeKind::Change => proto::ChangeKind::CkChange,
                } as i32,
                key: change.key,
                before: change.before.unwrap_or_default(),
                after: change.after.unwrap_or_default(),
                restart: change.restart,
            })
            .collect(),
        forecasts: plan
            .forecasts
            .into_iter()
            .map(|forecast| proto::CheckForecast {
                pattern: forecast.pattern,
                probed: u32::try_from(forecast.probed).unwrap_or(u32::MAX),
                failing: forecast
                    .failing
                    .into_iter()
                    .map(|(backend, reason)| proto::BackendFailure {
                        backend: backend.to_string(),
                        reason,
                    })
                    .collect(),
                pool_down: forecast.pool_down,
            })
            .collect(),
        generation: plan.generation,
        content_hash: plan.content_hash,
    }
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

/// The caller and precondition of a mutating RPC. An actor that is empty or only blanks is
/// none (git refuses an empty author name).
fn options(metadata: &MetadataMap, if_match: Option<proto::Precondition>) -> MutateOptions {
    let actor = metadata
        .get("x-lb-actor")
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            let printable: String = v.chars().filter(|c| !c.is_control()).take(128).collect();
            printable.trim().to_owned()
        })
        .filter(|actor| !actor.is_empty());
    let precondition = if_match.map_or_else(Precondition::default, |p| Precondition {
        content_hash: Some(p.content_hash).filter(|h| !h.is_empty()),
        generation: Some(p.generation).filter(|g| *g != 0),
    });
    MutateOptions {
        precondition,
        actor,
    }
}

fn proto_backend(backend: &Backend) -> proto::Backend {
    proto::Backend {
        backend: Some(proto::backend::Backend::IpBackend(proto::IpBackend {
            ip: backend.addr.addr.ip().to_string(),
            port: i32::from(backend.addr.addr.port()),
            url_path: backend.addr.url_path.clone(),
        })),
    }
}

fn admin_state(state: AdminState) -> proto::AdminState {
    match state {
        AdminState::Enabled => proto::AdminState::AsEnabled,
        AdminState::Drain => proto::AdminState::AsDrain,
        AdminState::Disabled => proto::AdminState::AsDisabled,
    }
}

fn proto_pool_status(n_backends: usize, n_healthy: usize) -> proto::PoolStatus {
    match pool_status(n_backends, n_healthy) {
        "PS_EMPTY" => proto::PoolStatus::PsEmpty,
        "PS_FULL" => proto::PoolStatus::PsFull,
        _ => proto::PoolStatus::PsDegraded,
    }
}

/// A backend's cumulative counters as the wire has them. Each counter is read on its own
/// (relaxed), so a reading taken while requests finish may be off by those few.
fn backend_stats(backend: &Backend) -> proto::BackendStats {
    let mut classes = [0u64; 4];
    for (code, count) in backend.stats.codes() {
        let class = match code {
            100..=299 => 0,
            300..=399 => 1,
            400..=499 => 2,
            _ => 3,
        };
        classes[class] += count;
    }
    let buckets = backend.stats.bucket_counts();
    // Counted last by `record`, so read last; a reading's skew is what saturates here.
    let requests = backend.stats.count();
    let slower = requests.saturating_sub(buckets.iter().sum());
    proto::BackendStats {
        requests,
        responses_by_class: classes.to_vec(),
        latency_bounds_seconds: crate::stats::BUCKETS.to_vec(),
        latency_counts: buckets.iter().copied().chain([slower]).collect(),
        checks_passed: backend.checks.passed(),
        checks_failed: backend.checks.failed(),
    }
}

fn pool_health(pool: &Pool, healthy: bool, sick: bool) -> proto::PoolHealth {
    let backends = pool
        .backends
        .iter()
        .enumerate()
        .filter(|(_, b)| if b.is_healthy() { healthy } else { sick })
        .map(|(i, b)| proto::BackendHealth {
            canary: i >= pool.n_stable,
            backend: Some(proto_backend(b)),
            status: if b.is_healthy() {
                proto::BackendStatus::BsHealthy
            } else {
                proto::BackendStatus::BsSick
            } as i32,
            admin_state: admin_state(b.admin()) as i32,
            in_flight: b.in_flight(),
            stats: Some(backend_stats(b)),
        })
        .collect();
    proto::PoolHealth {
        status: proto_pool_status(pool.backends.len(), pool.n_healthy()) as i32,
        backends,
    }
}

impl Writes {
    /// This instance's name when it is one of a `[sync]` fleet (where a rollout's `driver`
    /// applies); `None` alone.
    pub fn fleet_name(&self) -> Option<&str> {
        self.sync.as_ref().map(|_| &*self.instance)
    }

    /// Runs one mutation of `applier`'s file where these writes go; with `[sync]`, returns
    /// the commit carrying it. The rollout controller's changes come through here too.
    pub async fn mutate(
        &self,
        applier: &Arc<Applier>,
        mutation: Mutation,
        options: MutateOptions,
    ) -> Result<String, Status> {
        if self.read_only {
            let place = match &self.sync {
                Some(sync) => format!(
                    "commit to branch {} of {}",
                    sync.settings().branch,
                    sync.settings().remote
                ),
                None => {
                    "edit the file's source (its repository, ConfigMap or deploy tool)".to_owned()
                }
            };
            return Err(Status::failed_precondition(format!(
                "this instance is read-only ([control] read_only = true in {}); to change the topology, {place}",
                applier.path().display()
            )));
        }
        match &self.sync {
            Some(sync) => sync
                .mutate(mutation, options)
                .await
                .map(|committed| committed.commit)
                .map_err(sync_status),
            None => applier
                .mutate(mutation, &options)
                .await
                .map(|_| String::new())
                .map_err(status),
        }
    }
}

impl ControlService {
    /// Runs one mutation where [`Writes`] says; with `[sync]`, returns the commit carrying it.
    async fn mutate(&self, mutation: Mutation, options: MutateOptions) -> Result<String, Status> {
        self.writes.mutate(&self.applier, mutation, options).await
    }

    /// The running pool `pattern`; NOT_FOUND when there is none.
    fn live_pool(&self, pattern: &str) -> Result<Arc<Pool>, Status> {
        let topology = self.applier.topology().load();
        topology
            .pools
            .iter()
            .find(|p| &*p.pattern == pattern)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("no pool {pattern:?}")))
    }

    fn rollout_now(&self, pattern: &str) -> Result<proto::RolloutStatusResp, Status> {
        rollout_status_of(&self.applier, &self.looks, &self.writes, pattern)
    }

    async fn rollout_action(
        &self,
        request: Request<proto::RolloutActionReq>,
        action: Action,
    ) -> Result<Response<proto::RolloutActionResp>, Status> {
        let (metadata, _, request) = request.into_parts();
        let pattern = pattern(&request.pattern)?;
        self.live_pool(&pattern)?;
        let options = options(&metadata, request.if_match);
        let pools = self.applier.rollout_pools();
        let pool = pools.iter().find(|p| p.pattern == pattern).ok_or_else(|| {
            Status::failed_precondition(format!(
                "pool {pattern:?} has no rollout: start one with `lbctl rollout start {pattern}`"
            ))
        })?;
        let actor = options
            .actor
            .clone()
            .unwrap_or_else(|| "unknown".to_owned());
        let mutation = super::rollout::action(pool, action, &actor, self.writes.fleet_name())?;
        let commit = self.mutate(mutation, options).await?;
        Ok(Response::new(proto::RolloutActionResp { commit }))
    }

    async fn set_state(
        &self,
        metadata: &MetadataMap,
        pattern_text: &str,
        backend_msg: Option<proto::Backend>,
        if_match: Option<proto::Precondition>,
        state: AdminState,
    ) -> Result<String, Status> {
        let mutation = Mutation::SetBackendState {
            pattern: pattern(pattern_text)?,
            backend: backend(backend_msg)?,
            state,
        };
        self.mutate(mutation, options(metadata, if_match)).await
    }
}

type HealthStream = Pin<Box<dyn Stream<Item = Result<proto::HealthEvent, Status>> + Send>>;
type RolloutStream = Pin<Box<dyn Stream<Item = Result<proto::RolloutStatusResp, Status>> + Send>>;

/// RolloutStatus of pool `pattern` as `applier` runs it now (the controller's recent `looks`
/// where there are any), answered by the instance `writes` names.
fn rollout_status_of(
    applier: &Applier,
    looks: &crate::rollout::Looks,
    writes: &Writes,
    pattern: &str,
) -> Result<proto::RolloutStatusResp, Status> {
    let topology = applier.topology().load();
    if topology.pool(pattern).is_none() {
        return Err(Status::not_found(format!("no pool {pattern:?}")));
    }
    let pools = applier.rollout_pools();
    match pools.iter().find(|p| p.pattern == pattern) {
        Some(pool) => super::rollout::status(
            pool,
            &topology,
            looks,
            (&writes.instance, writes.sync.is_some()),
            std::time::SystemTime::now(),
        ),
        None => Err(Status::failed_precondition(format!(
            "pool {pattern:?} has no rollout: start one with `lbctl rollout start {pattern}` or declare [pools.{pattern:?}.rollout]"
        ))),
    }
}

#[tonic::async_trait]
impl LoadBalancer for ControlService {
    async fn add_pool(
        &self,
        request: Request<proto::AddPoolReq>,
    ) -> Result<Response<proto::AddPoolResp>, Status> {
        let (metadata, _, request) = request.into_parts();
        let mutation = Mutation::AddPool {
            pattern: pattern(&request.pattern)?,
            spec: pool_spec(&request)?,
        };
        let commit = self
            .mutate(mutation, options(&metadata, request.if_match))
            .await?;
        Ok(Response::new(proto::AddPoolResp { commit }))
    }

    async fn remove_pool(
        &self,
        request: Request<proto::RemovePoolReq>,
    ) -> Result<Response<proto::RemovePoolResp>, Status> {
        let (metadata, _, request) = request.into_parts();
        let mutation = Mutation::RemovePool {
            pattern: pattern(&request.pattern)?,
        };
        let commit = self
            .mutate(mutation, options(&metadata, request.if_match))
            .await?;
        Ok(Response::new(proto::RemovePoolResp { commit }))
    }

    async fn add_backend(
        &self,
        request: Request<proto::AddBackendReq>,
    ) -> Result<Response<proto::AddBackendResp>, Status> {
        let (metadata, _, request) = request.into_parts();
        let mutation = Mutation::AddBackend {
            pattern: pattern(&request.pattern)?,
            backend: backend(request.backend)?,
        };
        let commit = self
            .mutate(mutation, options(&metadata, request.if_match))
            .await?;
        Ok(Response::new(proto::AddBackendResp { commit }))
    }

    async fn remove_backend(
        &self,
        request: Request<proto::RemoveBackendReq>,
    ) -> Result<Response<proto::RemoveBackendResp>, Status> {
        let (metadata, _, request) = request.into_parts();
        let mutation = Mutation::RemoveBackend {
            pattern: pattern(&request.pattern)?,
            backend: backend(request.backend)?,
        };
        let commit = self
            .mutate(mutation, options(&metadata, request.if_match))
            .await?;
        Ok(Response::new(proto::RemoveBackendResp { commit }))
    }

    async fn pool_health(
        &self,
        request: Request<proto::PoolHealthReq>,
    ) -> Result<Response<proto::PoolHealthResp>, Status> {
        let request = request.into_inner();
        let pattern = pattern(&request.pattern)?;
        // Status before topology: the hash then never describes a newer file than the pools.
        let applied = self.applier.status();
        let topology = self.applier.topology().load();
        let pool = topology
            .pool(&pattern)
            .ok_or_else(|| status(MutateError::PoolNotFound { pattern }))?;
        Ok(Response::new(proto::PoolHealthResp {
            health: Some(pool_health(pool, request.healthy, request.sick)),
            generation: topology.generation,
            content_hash: if applied.generation == topology.generation {
                applied.content_hash.clone()
            } else {
                String::new()
            },
        }))
    }

    async fn drain_backend(
        &self,
        request: Request<proto::DrainBackendReq>,
    ) -> Result<Response<proto::DrainBackendResp>, Status> {
        let (metadata, _, r) = request.into_parts();
        let commit = self
            .set_state(
                &metadata,
                &r.pattern,
                r.backend,
                r.if_match,
                AdminState::Drain,
            )
            .await?;
        Ok(Response::new(proto::DrainBackendResp { commit }))
    }

    async fn enable_backend(
        &self,
        request: Request<proto::EnableBackendReq>,
    ) -> Result<Response<proto::EnableBackendResp>, Status> {
        let (metadata, _, r) = request.into_parts();
        let commit = self
            .set_state(
                &metadata,
                &r.pattern,
                r.backend,
                r.if_match,
                AdminState::Enabled,
            )
            .await?;
        Ok(Response::new(proto::EnableBackendResp { commit }))
    }

    async fn disable_backend(
        &self,
        request: Request<proto::DisableBackendReq>,
    ) -> Result<Response<proto::DisableBackendResp>, Status> {
        let (metadata, _, r) = request.into_parts();
        let commit = self
            .set_state(
                &metadata,
                &r.pattern,
                r.backend,
                r.if_match,
                AdminState::Disabled,
            )
            .await?;
        Ok(Response::new(proto::DisableBackendResp { commit }))
    }

    async fn status(
        &self,
        request: Request<proto::StatusReq>,
    ) -> Result<Response<proto::StatusResp>, Status> {
        let mut sync_status = self
            .applier
            .metrics()
            .sync
            .load_full()
            .map(|status| proto_sync(&status));
        if let (Some(proto_status), Some(sync)) = (&mut sync_status, &self.writes.sync) {
            let commits = sync.commits(&request.get_ref().commits).await;
            proto_status.serving = commits.serving.map(proto_commit);
            proto_status.remote_head_info = commits.remote_head.map(proto_commit);
            proto_status.places = commits
                .places
                .into_iter()
                .map(|(commit, in_remote_head)| proto::CommitPlace {
                    commit,
                    in_remote_head,
                })
                .collect();
        }
        let applied = self.applier.status();
        let tls_failure = self.certificates.as_ref().and_then(|s| s.last_failure());
        let topology = self.applier.topology().load();
        let pools = topology
            .pools
            .iter()
            .map(|pool| proto::PoolSummary {
                pattern: pool.pattern.to_string(),
                status: proto_pool_status(pool.backends.len(), pool.n_healthy()) as i32,
                healthy: u32::try_from(pool.n_healthy()).unwrap_or(u32::MAX),
                total: u32::try_from(pool.backends.len()).unwrap_or(u32::MAX),
                pool_type: pool.pool_type.as_str().to_owned(),
            })
            .collect();
        Ok(Response::new(proto::StatusResp {
            config_path: self.applier.path().display().to_string(),
            generation: applied.generation,
            content_hash: applied.content_hash.clone(),
            last_reload_ok: applied.last_error.is_none(),
            last_error: applied.last_error.clone().unwrap_or_default(),
            pools,
            applied_at_unix: applied
                .applied_at
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            certificates: self
                .certificates
                .as_ref()
                .map(|store| store.certificates())
                .unwrap_or_default()
                .into_iter()
                .map(|c| proto::CertificateSummary {
                    cert: c.cert.display().to_string(),
                    names: c.names,
                    not_before_unix: c.not_before_unix,
                    not_after_unix: c.not_after_unix,
                    is_default: c.default,
                })
                .collect(),
            sync: sync_status,
            tls_reload_error: tls_failure
                .as_ref()
                .map(|f| f.error.clone())
                .unwrap_or_default(),
            tls_reload_failed_since_unix: tls_failure.map_or(0, |f| f.since_unix),
            instance: self.writes.instance.to_string(),
        }))
    }

    async fn canary_status(
        &self,
        request: Request<proto::CanaryStatusReq>,
    ) -> Result<Response<proto::CanaryStatusResp>, Status> {
        let topology = self.applier.topology().load();
        super::canary::status(&topology, request.get_ref()).map(Response::new)
    }

    async fn set_canary_weight(
        &self,
        request: Request<proto::SetCanaryWeightReq>,
    ) -> Result<Response<proto::SetCanaryWeightResp>, Status> {
        let (metadata, _, request) = request.into_parts();
        let pattern = pattern(&request.pattern)?;
        let has_canary = self.live_pool(&pattern)?.canary.is_some();
        let mutation = super::rollout::set_weight(&pattern, has_canary, request.weight_percent)?;
        let commit = self
            .mutate(mutation, options(&metadata, request.if_match))
            .await?;
        Ok(Response::new(proto::SetCanaryWeightResp { commit }))
    }

    async fn rollout_start(
        &self,
        request: Request<proto::RolloutStartReq>,
    ) -> Result<Response<proto::RolloutActionResp>, Status> {
        let (metadata, _, request) = request.into_parts();
        let pattern = pattern(&request.pattern)?;
        let has_canary = !self
            .live_pool(&pattern)?
            .side(crate::canary::Side::Canary)
            .is_empty();
        let canary = request
            .canary
            .iter()
            .map(|b| backend(Some(b.clone())))
            .collect::<Result<Vec<_>, Status>>()?;
        let pools = self.applier.rollout_pools();
        let rollout = pools
            .iter()
            .find(|p| p.pattern == pattern)
            .and_then(|p| p.rollout.as_ref());
        let mutation = super::rollout::start(
            &pattern,
            rollout,
            has_canary,
            &request,
            canary,
            self.writes.fleet_name(),
        )?;
        let commit = self
            .mutate(mutation, options(&metadata, request.if_match.clone()))
            .await?;
        Ok(Response::new(proto::RolloutActionResp { commit }))
    }

    async fn rollout_status(
        &self,
        request: Request<proto::RolloutStatusReq>,
    ) -> Result<Response<proto::RolloutStatusResp>, Status> {
        self.rollout_now(&request.get_ref().pattern)
            .map(Response::new)
    }

    async fn rollout_pause(
        &self,
        request: Request<proto::RolloutActionReq>,
    ) -> Result<Response<proto::RolloutActionResp>, Status> {
        self.rollout_action(request, Action::Pause).await
    }

    async fn rollout_resume(
        &self,
        request: Request<proto::RolloutActionReq>,
    ) -> Result<Response<proto::RolloutActionResp>, Status> {
        self.rollout_action(request, Action::Resume).await
    }

    async fn rollout_promote(
        &self,
        request: Request<proto::RolloutActionReq>,
    ) -> Result<Response<proto::RolloutActionResp>, Status> {
        self.rollout_action(request, Action::Promote).await
    }

    async fn rollout_abort(
        &self,
        request: Request<proto::RolloutActionReq>,
    ) -> Result<Response<proto::RolloutActionResp>, Status> {
        self.rollout_action(request, Action::Abort).await
    }

    type WatchRolloutStream = RolloutStream;

    async fn watch_rollout(
        &self,
        request: Request<proto::RolloutStatusReq>,
    ) -> Result<Response<RolloutStream>, Status> {
        let pattern = request.into_inner().pattern;
        // The first answer now, so an unknown pool or a pool without rollout fails the call.
        let first = self.rollout_now(&pattern)?;
        let applier = Arc::clone(&self.applier);
        let (looks, writes) = (Arc::clone(&self.looks), self.writes.clone());
        let shutting_down = self.shutting_down.clone();
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let key = |s: &proto::RolloutStatusResp| {
                (
                    s.state.clone(),
                    s.step,
                    s.weight_percent,
                    s.reason.clone(),
                    s.next.clone(),
                    s.verdict,
                )
            };
            let mut last = key(&first);
            if sender.send(Ok(first)).await.is_err() {
                return;
            }
            let mut tick = tokio::time::interval(crate::rollout::TICK);
            loop {
                tokio::select! {
                    () = shutting_down.cancelled() => {
                        let _ = sender.send(Err(super::service::shutting_down())).await;
                        return;
                    }
                    () = sender.closed() => return,
                    _ = tick.tick() => {}
                }
                let now = rollout_status_of(&applier, &looks, &writes, &pattern);
                let ended = match &now {
                    Ok(status) if key(status) == last => continue,
                    Ok(status) => {
                        last = key(status);
                        false
                    }
                    Err(_) => true,
                };
                if sender.send(now).await.is_err() || ended {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }

    async fn sync(
        &self,
        _request: Request<proto::SyncReq>,
    ) -> Result<Response<proto::SyncResp>, Status> {
        let Some(sync) = &self.writes.sync else {
            return Err(Status::failed_precondition(format!(
                "{} has no [sync] table: this instance follows no git remote",
                self.applier.path().display()
            )));
        };
        let status = sync.sync_now().await.map_err(sync_status)?;
        Ok(Response::new(proto::SyncResp {
            sync: Some(proto_sync(&status)),
        }))
    }

    async fn list_pools(
        &self,
        _request: Request<proto::ListPoolsReq>,
    ) -> Result<Response<proto::ListPoolsResp>, Status> {
        let applied = self.applier.status();
        let topology = self.applier.topology().load();
        Ok(Response::new(proto::ListPoolsResp {
            pools: topology
                .pools
                .iter()
                .map(|pool| proto::PoolInfo {
                    pattern: pool.pattern.to_string(),
                    health: Some(pool_health(pool, true, true)),
                })
                .collect(),
            generation: topology.generation,
            content_hash: applied.content_hash.clone(),
        }))
    }

    async fn plan(
        &self,
        request: Request<proto::PlanReq>,
    ) -> Result<Response<proto::PlanResp>, Status> {
        let plan = self
            .applier
            .plan(request.into_inner().config)
            .await
            .map_err(|error| match error {
                PlanError::Invalid { .. } => Status::invalid_argument(error.to_string()),
                PlanError::ShuttingDown => shutting_down(),
            })?;
        Ok(Response::new(proto_plan(plan)))
    }

    type WatchHealthStream = HealthStream;

    async fn watch_health(
        &self,
        request: Request<proto::WatchHealthReq>,
    ) -> Result<Response<HealthStream>, Status> {
        let only = request.into_inner().pattern;
        if self.shutting_down.is_cancelled() {
            return Err(shutting_down());
        }
        tracing::debug!(pattern = %only, "health watch opened");
        let events = tokio_stream::wrappers::BroadcastStream::new(self.applier.subscribe());
        let stream = StreamExt::filter_map(events, move |event| {
            // A lagging subscriber skips what it missed rather than ending the stream.
            let event = event.ok()?;
            if !only.is_empty() && *event.pattern != *only {
                return None;
            }
            let backend = Backend::new(event.backend.clone(), event.healthy);
            Some(Ok(proto::HealthEvent {
                pattern: event.pattern.to_string(),
                backend: Some(proto_backend(&backend)),
                status: if event.healthy {
                    proto::BackendStatus::BsHealthy
                } else {
                    proto::BackendStatus::BsSick
                } as i32,
                reason: event.reason,
                cause: match event.cause {
                    health::Cause::Check => proto::EventCause::EcCheck,
                    health::Cause::Ejection => proto::EventCause::EcEjection,
                    health::Cause::Readmission => proto::EventCause::EcReadmission,
                    health::Cause::Admin => proto::EventCause::EcAdmin,
                    health::Cause::Reload => proto::EventCause::EcReload,
                } as i32,
                unix_ms: event
                    .at
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            }))
        });
        // Pending until shutdown begins, then the stream's last item.
        let farewell = StreamExt::then(
            tokio_stream::once(self.shutting_down.clone()),
            |shutdown| async move {
                shutdown.cancelled().await;
                Err(shutting_down())
            },
        );
        Ok(Response::new(Box::pin(StreamExt::merge(stream, farewell))))
    }
}
