//! control: owns the gRPC control API (`rollout.lb.LoadBalancer`), its bearer token and its
//! TLS. It validates requests and hands every change to `apply`; it never edits lb.toml or the
//! topology itself.
//!
//! - `service`: the RPCs.
//! - `canary`: the CanaryStatus answer (a pool's two sides and the verdict).
//! - `rollout`: RolloutStatus, the rollout actions and the rollout controller task.
//! - `peers`: the fleet's windows, fetched from `[sync] peers` for the rollout driver.
//! - `tooling`: `grpc.health.v1.Health` and server reflection, for probes and grpcurl.
//! - `tls`: the listener's (and lbctl's) PEM files and rustls settings.

mod canary;
mod peers;
pub mod proto;
mod rollout;
pub use rollout::{start_mutation as rollout_start_mutation, Controller as RolloutController};
mod service;
pub mod tls;
mod tooling;

pub use canary::DEFAULT_THRESHOLDS;
pub use service::{ControlService, Writes};
pub use tls::{ServerTls, TlsError};

use std::path::{Path, PathBuf};
use std::sync::Arc;

use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;

use proto::load_balancer_server::LoadBalancerServer;

/// Why the control server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The gRPC server failed.
    #[error("{0}")]
    Transport(#[from] tonic::transport::Error),
    /// The reflection service cannot be built.
    #[error("cannot build server reflection from the compiled-in proto: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// Serves the control API (`service`, built over the applier with the same `shutdown`) on
/// `listener` until `shutdown` is cancelled, then stops accepting,
/// ends open health watches (`UNAVAILABLE` for `WatchHealth`, `NOT_SERVING` and a clean end for
/// `grpc.health.v1.Health`) and lets RPCs in flight finish (the caller bounds how long).
///
/// Beside `rollout.lb.LoadBalancer` the listener serves `grpc.health.v1.Health` and server
/// reflection (see `tooling`). With a token, every RPC must carry `authorization: Bearer
/// <token>`, except health checks: Kubernetes' gRPC probe cannot send a header, and a health
/// answer says nothing an outsider could use. With TLS, connections are TLS (ALPN `h2`) and,
/// when it is mutual, each client must present a certificate signed by the configured CA.
pub async fn serve(
    listener: TcpListener,
    service: ControlService,
    token: Option<Token>,
    tls: Option<ServerTls>,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let auth = Auth { token };
    let service = LoadBalancerServer::with_interceptor(service, auth.clone());
    let reflection_v1 = InterceptedService::new(tooling::reflection().build_v1()?, auth.clone());
    let reflection_v1alpha = InterceptedService::new(tooling::reflection().build_v1alpha()?, auth);
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        server = server.tls_config(tls.config())?;
    }
    // Without TCP_NODELAY a unary reply can sit behind the client's delayed ACK (~40 ms a call,
    // found by benches/add_backend.rs); tonic sets it only on listeners it binds itself.
    let incoming = TcpListenerStream::new(listener).map(|stream| {
        stream.inspect(|s| {
            let _ = s.set_nodelay(true);
        })
    });
    server
        .add_service(service)
        .add_service(tooling::ControlHealth::server(shutdown.clone()))
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await?;
    Ok(())
}

/// A shared secret for the control API, read once at start from `[control] token_file`.
#[derive(Clone)]
pub struct Token(Arc<[u8]>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

/// Why the control token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The file cannot be read.
    #[error("cannot read control token file {path}: {source}")]
    Read {
        /// The token file.
        path: PathBuf,
        /// Why reading failed.
        #[source]
        source: std::io::Error,
    },
    /// The file holds only whitespace.
    #[error("control token file {path} is empty; put a long random secret in it (e.g. `openssl rand -hex 32 > {path}`)")]
    Empty {
        /// The token file.
        path: PathBuf,
    },
}

impl Token {
    /// Reads the token file; surrounding whitespace (a trailing newline) is not part of it.
    pub fn read(path: &Path) -> Result<Token, TokenError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let token = text.trim();
        if token.is_empty() {
            return Err(TokenError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(Token(Arc::from(token.as_bytes())))
    }

    /// Compares in time independent of where the first difference is (`subtle`'s `ct_eq`,
    /// written so the optimiser cannot turn it into an early exit). A length mismatch answers
    /// at once: the length is not the secret.
    fn matches(&self, presented: &[u8]) -> bool {
        bool::from(presented.ct_eq(&self.0))
    }
}

/// Checks `authorization: Bearer <token>` on every RPC before it reaches the service.
#[derive(Clone)]
struct Auth {
    token: Option<Token>,
}

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let Some(token) = &self.token else {
            return Ok(request);
        };
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        match presented {
            Some(presented) if token.matches(presented.as_bytes()) => Ok(request),
            Some(_) => Err(tonic::Status::unauthenticated("wrong control token")),
            None => Err(tonic::Status::unauthenticated(
                "this lb requires a control token: send `authorization: Bearer <token>` (lbctl --token-file PATH or LB_TOKEN)",
            )),
        }
    }
}

#[cfg(test)]
mod token_tests {
    use super::*;

    #[test]
    fn only_the_exact_token_matches() {
        let token = Token(Arc::from(&b"s3cret-token"[..]));
        assert!(token.matches(b"s3cret-token"));
        for wrong in [
            &b""[..],
            b"s3cret-toke",
            b"s3cret-token!",
            b"s3cret-tokeN",
            b"S3cret-token",
            b"xxxxxxxxxxxx",
        ] {
            assert!(
                !token.matches(wrong),
                "{:?}",
                String::from_utf8_lossy(wrong)
            );
        }
    }
}
