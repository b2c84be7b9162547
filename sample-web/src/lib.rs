//! sample-web: a tiny HTTP backend for trying lb. `GET /` answers `Hello web from node NAME`,
//! `GET /healthz` answers `ok`; anything else is 404.
//!
//! It is a library as well as a binary so that `lb demo` and the tests can run it in-process.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
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

fn answer(request: &Request<hyper::body::Incoming>, greeting: Bytes) -> Response<Full<Bytes>> {
    let (status, body) = match (request.method(), request.uri().path()) {
        (&Method::GET | &Method::HEAD, "/") => (StatusCode::OK, greeting),
        (&Method::GET | &Method::HEAD, "/healthz") => (StatusCode::OK, Bytes::from_static(b"ok")),
        _ => (
            StatusCode::NOT_FOUND,
            Bytes::from_static(b"404 page not found\n"),
        ),
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
}
