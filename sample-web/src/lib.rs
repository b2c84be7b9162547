//! sample-web: a tiny HTTP backend for trying lb. `/healthz` answers `ok`; every other path,
//! whatever the method, answers `Hello web from node NAME`, as the original Go sample backend
//! does (its greeting is registered on Go's `/` pattern, which matches everything), so a
//! backend behind any pool (`/api/`, `GET example.com/{id}`) still says which node answered.
//!
//! It is a library as well as a binary so that `lb demo` and the tests can run it in-process.

#![forbid(unsafe_code)]

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// A short random node id, used when no `--node` is given.
pub fn random_node_id() -> String {
    format!("{:08x}", fastrand::u32(..))
}

/// Serves on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, node: String) {
    let greeting = Bytes::from(format!("Hello web from node {node}\n"));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let greeting = greeting.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let greeting = greeting.clone();
                async move { Ok::<_, Infallible>(answer(&request, greeting)) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// `ok` on `/healthz`, the greeting on every other path; 200 for every method (hyper leaves the
/// body out of a HEAD answer).
fn answer(request: &Request<hyper::body::Incoming>, greeting: Bytes) -> Response<Full<Bytes>> {
    let body = match request.uri().path() {
        "/healthz" => Bytes::from_static(b"ok"),
        _ => greeting,
    };
    Response::new(Full::new(body))
}
