//! sample-web: a tiny HTTP backend for trying lb. `/healthz` answers `ok`; every other path,
//! whatever the method, answers `Hello web from node NAME`, as the original Go sample backend
//! does (its greeting is registered on Go's `/` pattern, which matches everything), so a
//! backend behind any pool (`/api/`, `GET example.com/{id}`) still says which node answered.
//!
//! For canary demos and tests it can misbehave on purpose ([`Behaviour`]): name a version in the
//! greeting, answer a share of requests with 500, and add latency. `/healthz` is spared both the
//! errors and the delay, so a bad version stays in rotation and only a comparison of the two
//! sides' traffic can catch it. The default behaviour is the original's exactly.
//!
//! It is a library as well as a binary so that `lb demo` and the tests can run it in-process.

#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// A short random node id, used when no `--node` is given.
pub fn random_node_id() -> String {
    format!("{:08x}", fastrand::u32(..))
}

/// How a sample-web instance answers; `Behaviour::new(node)` is the original's.
#[derive(Clone, Debug, PartialEq)]
pub struct Behaviour {
    /// Named in the greeting.
    pub node: String,
    /// Named in the greeting after the node when set: `Hello web from node N version V`.
    pub version: Option<String>,
    /// The share of greeting requests (not `/healthz`) answered 500, in `0.0..=1.0`.
    pub error_rate: f64,
    /// Added before every greeting answer (not `/healthz`).
    pub delay: Duration,
}

impl Behaviour {
    /// The original behaviour for `node`: no version, no errors, no delay.
    pub fn new(node: impl Into<String>) -> Behaviour {
        Behaviour {
            node: node.into(),
            version: None,
            error_rate: 0.0,
            delay: Duration::ZERO,
        }
    }

    fn greeting(&self) -> Bytes {
        match &self.version {
            None => Bytes::from(format!("Hello web from node {}\n", self.node)),
            Some(version) => Bytes::from(format!(
                "Hello web from node {} version {version}\n",
                self.node
            )),
        }
    }
}

/// Why an `--error-rate` is refused.
#[derive(Debug, PartialEq)]
pub struct BadErrorRate(pub String);

impl std::fmt::Display for BadErrorRate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "error rate {:?} is not a number from 0 to 1 (e.g. 0.2 for one request in five)",
            self.0
        )
    }
}

impl std::error::Error for BadErrorRate {}

/// Parses an error rate: a number in `0..=1`.
pub fn parse_error_rate(text: &str) -> Result<f64, BadErrorRate> {
    match text.trim().parse::<f64>() {
        Ok(rate) if (0.0..=1.0).contains(&rate) => Ok(rate),
        _ => Err(BadErrorRate(text.to_owned())),
    }
}

/// Decides which greeting requests fail: the n-th (1-based) fails when `floor(n * rate)` steps
/// up, so any run of requests fails within one of `rate` times its length, spread evenly rather
/// than drawn: tests can count on the share without a seed.
#[derive(Debug)]
pub struct ErrorSchedule {
    rate: f64,
    served: AtomicU64,
}

impl ErrorSchedule {
    /// A schedule failing `rate` of requests (clamped to `0..=1`).
    pub fn new(rate: f64) -> ErrorSchedule {
        ErrorSchedule {
            rate: rate.clamp(0.0, 1.0),
            served: AtomicU64::new(0),
        }
    }

    /// Counts one request; true when it is to fail.
    pub fn next_fails(&self) -> bool {
        if self.rate <= 0.0 {
            return false;
        }
        let n = self.served.fetch_add(1, Ordering::Relaxed) + 1;
        // f64 holds every count a test or demo reaches exactly.
        (n as f64 * self.rate).floor() > ((n - 1) as f64 * self.rate).floor()
    }
}

/// Serves the original behaviour on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, node: String) {
    serve_with(listener, Behaviour::new(node)).await;
}

/// Serves `behaviour` on `listener` until the task is dropped.
pub async fn serve_with(listener: TcpListener, behaviour: Behaviour) {
    let shared = Arc::new(Shared {
        greeting: behaviour.greeting(),
        errors: ErrorSchedule::new(behaviour.error_rate),
        delay: behaviour.delay,
    });
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(answer(&request, &shared).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

struct Shared {
    greeting: Bytes,
    errors: ErrorSchedule,
    delay: Duration,
}

/// `ok` on `/healthz`, the greeting on every other path; 200 for every method (hyper leaves the
/// body out of a HEAD answer) unless the error schedule says 500.
async fn answer(
    request: &Request<hyper::body::Incoming>,
    shared: &Shared,
) -> Response<Full<Bytes>> {
    if request.uri().path() == "/healthz" {
        return Response::new(Full::new(Bytes::from_static(b"ok")));
    }
    if !shared.delay.is_zero() {
        tokio::time::sleep(shared.delay).await;
    }
    if shared.errors.next_fails() {
        let mut response = Response::new(Full::new(Bytes::from_static(
            b"sample-web: failing on purpose (--error-rate)\n",
        )));
        *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        return response;
    }
    Response::new(Full::new(shared.greeting.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failures(rate: f64, requests: u64) -> u64 {
        let schedule = ErrorSchedule::new(rate);
        (0..requests).filter(|_| schedule.next_fails()).count() as u64
    }

    #[test]
    fn the_error_schedule_fails_the_share_asked_in_every_prefix() {
        assert_eq!(failures(0.0, 1000), 0);
        assert_eq!(failures(1.0, 1000), 1000);
        assert_eq!(failures(0.2, 1000), 200);
        assert_eq!(failures(0.25, 7), 1);
        let schedule = ErrorSchedule::new(0.1);
        let pattern: Vec<bool> = (0..20).map(|_| schedule.next_fails()).collect();
        let failed_at: Vec<usize> = (0..20).filter(|&i| pattern[i]).collect();
        assert_eq!(failed_at, vec![9, 19], "spread evenly, not bunched");
    }

    #[test]
    fn error_rates_outside_zero_to_one_are_refused() {
        assert_eq!(parse_error_rate("0.2"), Ok(0.2));
        assert_eq!(parse_error_rate("1"), Ok(1.0));
        for bad in ["1.5", "-0.1", "abc", "NaN", ""] {
            assert!(parse_error_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_greeting_names_the_version_only_when_given() {
        let mut behaviour = Behaviour::new("n1");
        assert_eq!(behaviour.greeting(), "Hello web from node n1\n");
        behaviour.version = Some("v2".into());
        assert_eq!(behaviour.greeting(), "Hello web from node n1 version v2\n");
    }
}
