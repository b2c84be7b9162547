//! TLS to backends (`backend_tls`) in the real lb: in-process TLS backends with certificates
//! from a test CA; requests (HTTP/1.x and HTTP/2 clients, bodies small and streamed) and health
//! checks go over TLS; a certificate from another CA or for another name makes a backend sick
//! with the reason, and a backend whose certificate turns bad between checks is ejected at the
//! failed connect while its requests go to a good backend.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::certs::{provider, Ca, Leaf};
use support::{backend_listener, spawn_backend, Lb, LOOPBACK_ANY};
use tokio_rustls::TlsAcceptor;

/// Every wait in these tests ends within this.
const PATIENCE: Duration = Duration::from_secs(10);

/// The name the pool verifies its backends' certificates against.
const NAME: &str = "api.internal";

/// An HTTP/1.1 backend behind TLS with `leaf`: `/healthz` answers `ok`; any other request
/// answers `NAME BODY_LEN`. Stops (closing its connections) when dropped.
struct TlsBackend {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    /// Connections that carried at least one request other than a health check.
    proxied: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsBackend {
    fn start(name: &str, leaf: &Leaf) -> TlsBackend {
        TlsBackend::start_on(LOOPBACK_ANY, name, leaf)
    }

    fn start_on(addr: SocketAddr, name: &str, leaf: &Leaf) -> TlsBackend {
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der.clone()], leaf.key())
            .expect("backend certificate");
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = backend_listener(addr);
        let addr = listener.local_addr().expect("backend addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let proxied = Arc::new(AtomicUsize::new(0));
        let (name, counted, connections_counted) = (
            Bytes::from(name.to_owned()),
            Arc::clone(&hits),
            Arc::clone(&proxied),
        );
        let task = spawn_backend(async move {
            // Connections belong to this task: stopping it closes them, as a killed process.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                while connections.try_join_next().is_some() {}
                let (acceptor, name, hits, proxied) = (
                    acceptor.clone(),
                    name.clone(),
                    Arc::clone(&counted),
                    Arc::clone(&connections_counted),
                );
                let first = Arc::new(std::sync::atomic::AtomicBool::new(true));
                connections.spawn(async move {
                    // A client that refuses the certificate ends the handshake here.
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                        let (name, hits) = (name.clone(), Arc::clone(&hits));
                        let (proxied, first) = (Arc::clone(&proxied), Arc::clone(&first));
                        async move {
                            if request.uri().path() == "/healthz" {
                                return Ok::<_, hyper::Error>(Response::new(Full::new(
                                    Bytes::from_static(b"ok"),
                                )));
                            }
                            if first.swap(false, Ordering::SeqCst) {
                                proxied.fetch_add(1, Ordering::SeqCst);
                            }
                            let body = request.into_body().collect().await?.to_bytes();
                            hits.fetch_add(1, Ordering::SeqCst);
                            let text = format!("{} {}", String::from_utf8_lossy(&name), body.len());
                            Ok(Response::new(Full::new(Bytes::from(text))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        TlsBackend {
            addr,
            hits,
            proxied,
            task,
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Stops it and waits until its listener and connections are closed.
    async fn kill(mut self) -> SocketAddr {
        self.task.abort();
        let task = std::mem::replace(&mut self.task, spawn_backend(async {}));
        let _ = task.await;
        self.addr
    }
}

impl Drop for TlsBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// lb with one pool over `backends`, checked every `interval`, with `backend_tls` trusting
/// `ca` and naming `server_name` when given.
fn start_lb(ca: &Ca, server_name: Option<&str>, backends: &[SocketAddr], interval: &str) -> Lb {
    let dir = tempfile::tempdir().expect("temp dir");
    ca.write(&dir.path().join("backend-ca.pem"));
    let name = server_name.map_or(String::new(), |n| format!(", server_name = \"{n}\""));
    let text = format!(
        "{}backend_tls = {{ ca = \"backend-ca.pem\"{name} }}\n",
        support::pool("/", backends, interval)
    );
    let config = dir.path().join("lb.toml");
    std::fs::write(&config, text).expect("write config");
    Lb::start_at(dir, config, &[])
}

/// `method` `path` through lb with `body`, over HTTP/2 (h2c) when `h2`; status and body text.
async fn request(
    lb: &Lb,
    h2: bool,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> (StatusCode, String) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(h2)
        .build_http();
    let request = Request::builder()
        .method(method)
        .uri(lb.url(path))
        .body(Full::new(Bytes::from(body)))
        .expect("request");
    support::send(&client, request).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_and_checks_go_over_tls_verified_with_the_pools_ca() {
    let ca = Ca::new("backend CA");
    let backend = TlsBackend::start("tls-a", &ca.server(&[NAME]));
    let lb = start_lb(&ca, Some(NAME), &[backend.addr], "100ms");
    // Startup probed it over TLS: it is in rotation at once.
    for h2 in [false, true] {
        let (status, body) = request(&lb, h2, "GET", "/", Vec::new()).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, "tls-a 0"),
            "h2={h2}"
        );
        // A small body (read whole, or through hyper's client on HTTP/2) and one large
        // enough to be streamed by the HTTP/1.x engine.
        for len in [1000, 300_000] {
            let (status, body) = request(&lb, h2, "POST", "/upload", vec![b'x'; len]).await;
            assert_eq!(status, StatusCode::OK, "h2={h2} len={len}: {body}");
            assert_eq!(body, format!("tls-a {len}"), "h2={h2}");
        }
    }
    assert_eq!(backend.hits(), 6);
    assert!(
        lb.find_log("backend sick").is_none(),
        "{}",
        lb.logs().join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_server_name_the_backend_ip_is_verified() {
    let ca = Ca::new("backend CA");
    let backend = TlsBackend::start("by-ip", &ca.server(&["127.0.0.1"]));
    let lb = start_lb(&ca, None, &[backend.addr], "100ms");
    let (status, body) = request(&lb, false, "GET", "/", Vec::new()).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "by-ip 0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_or_misnamed_certificate_makes_the_backend_sick_with_the_reason() {
    let ca = Ca::new("backend CA");
    let good = TlsBackend::start("good", &ca.server(&[NAME]));
    let foreign = TlsBackend::start("foreign", &Ca::new("other CA").server(&[NAME]));
    let misnamed = TlsBackend::start("misnamed", &ca.server(&["other.internal"]));
    let lb = start_lb(
        &ca,
        Some(NAME),
        &[good.addr, foreign.addr, misnamed.addr],
        "100ms",
    );
    let foreign_line = lb.wait_for_log(&format!("backend={}", foreign.addr), PATIENCE);
    assert!(
        foreign_line.contains("backend sick") && foreign_line.contains("unknown issuer"),
        "{foreign_line}"
    );
    let misnamed_line = lb.wait_for_log(&format!("backend={}", misnamed.addr), PATIENCE);
    assert!(
        misnamed_line.contains("backend sick")
            && misnamed_line.contains("certificate not valid for name api.internal"),
        "{misnamed_line}"
    );
    for _ in 0..10 {
        let (status, body) = request(&lb, false, "GET", "/", Vec::new()).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "good 0"));
    }
    assert_eq!((foreign.hits(), misnamed.hits()), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_refused_at_connect_ejects_the_backend_and_the_request_goes_elsewhere() {
    let ca = Ca::new("backend CA");
    let good = TlsBackend::start("good", &ca.server(&[NAME]));
    let turning = TlsBackend::start("turning", &ca.server(&[NAME]));
    // Checks an hour apart: only a request's connect can find the bad certificate.
    let lb = start_lb(&ca, Some(NAME), &[good.addr, turning.addr], "1h");
    let (status, _) = request(&lb, false, "GET", "/", Vec::new()).await;
    assert_eq!(status, StatusCode::OK);
    // Restarted with a certificate from another CA: its connections close with the old one.
    let addr = turning.kill().await;
    let turned = TlsBackend::start_on(addr, "turned", &Ca::new("other CA").server(&[NAME]));
    let ejected = format!("backend={addr}");
    // Each request picks one of two backends at random until the bad one is ejected.
    for _ in 0..100 {
        let (status, body) = request(&lb, false, "GET", "/", Vec::new()).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "good 0"));
        if lb
            .find_log("connect failed; backend out of rotation")
            .is_some()
        {
            break;
        }
    }
    let line = lb.wait_for_log("connect failed; backend out of rotation", PATIENCE);
    assert!(
        line.contains(&ejected) && line.contains("unknown issuer"),
        "{line}"
    );
    assert_eq!(turned.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_no_backend_takes_the_request_the_access_line_says_why() {
    let ca = Ca::new("backend CA");
    let only = TlsBackend::start("only", &ca.server(&[NAME]));
    let lb = start_lb(&ca, Some(NAME), &[only.addr], "1h");
    let (status, _) = request(&lb, false, "GET", "/", Vec::new()).await;
    assert_eq!(status, StatusCode::OK);
    // Its certificate turns bad between checks; as the pool's last backend in rotation it
    // stays there, and the request has nowhere else to go.
    let addr = only.kill().await;
    let _turned = TlsBackend::start_on(addr, "turned", &ca.server(&["other.internal"]));
    let (status, _) = request(&lb, false, "GET", "/after", Vec::new()).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let line = lb.wait_for_log("path=\"/after\"", PATIENCE);
    assert!(
        line.contains(&format!(
            "error=\"cannot connect to {addr}: TLS handshake: certificate not valid for name api.internal\""
        )),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_naming_an_unusable_ca_changes_nothing_until_the_file_is_fixed() {
    let ca = Ca::new("backend CA");
    let backend = TlsBackend::start("tls-a", &ca.server(&[NAME]));
    let lb = start_lb(&ca, Some(NAME), &[backend.addr], "100ms");
    // The save names a CA file that is not there yet: refused, with the file's name.
    let text = std::fs::read_to_string(&lb.config).expect("read lb.toml");
    let saved = text.replace("backend-ca.pem", "renewed-ca.pem");
    std::fs::write(&lb.config, saved).expect("save lb.toml");
    lb.log_eventually("renewed-ca.pem", PATIENCE).await;
    assert!(lb.find_log("generation=2").is_none());
    let (status, body) = request(&lb, false, "GET", "/", Vec::new()).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "tls-a 0"));
    // The file appears: the watcher's next look applies the same save.
    ca.write(&lb.dir().join("renewed-ca.pem"));
    support::generation_reached(&lb, 2, PATIENCE).await;
    let (status, body) = request(&lb, false, "GET", "/", Vec::new()).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "tls-a 0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_requests_reuse_one_tls_connection_to_the_backend() {
    let ca = Ca::new("backend CA");
    let backend = TlsBackend::start("tls-a", &ca.server(&[NAME]));
    let lb = start_lb(&ca, Some(NAME), &[backend.addr], "100ms");
    // One client connection each, so each response has ended in lb (its backend socket back
    // in the idle set) before the next request is read.
    let mut wire = support::raw::Wire::connect(&lb).await;
    for i in 0..5 {
        let response = wire
            .exchange(&format!("GET /h1/{i} HTTP/1.1\r\nhost: t\r\n\r\n"))
            .await;
        assert_eq!(response.status, 200, "{}", response.head);
        assert_eq!(response.text(), "tls-a 0");
    }
    let tcp = tokio::net::TcpStream::connect(lb.http)
        .await
        .expect("connect");
    let mut sender = support::h2_connection(tcp).await;
    for i in 0..5 {
        let (status, _, body) = support::h2_get(&mut sender, &format!("http://t/h2/{i}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(&body[..], b"tls-a 0");
    }
    // lb's HTTP/1.x engine and send_plain (bodiless HTTP/2 requests) share the idle sockets.
    assert_eq!(backend.hits(), 10);
    assert_eq!(backend.proxied.load(Ordering::SeqCst), 1);
}

/// A pool switched from cleartext to `backend_tls` speaks to its backend anew: the backend is
/// probed over TLS before the save applies (a cleartext backend turns sick), and the cleartext
/// connection a request in flight hands back after the switch is closed, never reused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_switched_to_tls_never_reuses_a_cleartext_connection() {
    let ca = Ca::new("backend CA");
    let backend = support::Backend::start("plain").await;
    let dir = tempfile::tempdir().expect("temp dir");
    ca.write(&dir.path().join("backend-ca.pem"));
    let config = dir.path().join("lb.toml");
    let plain = support::pool("/", &[backend.addr], "1h");
    std::fs::write(&config, &plain).expect("write config");
    let lb = Arc::new(Lb::start_at(dir, config, &[]));
    // A request in flight on a cleartext connection while the pool switches to TLS.
    let in_flight = {
        let lb = Arc::clone(&lb);
        tokio::spawn(async move { request(&lb, false, "GET", "/slow/1500", Vec::new()).await })
    };
    support::eventually(PATIENCE, "the slow request at the backend", || async {
        backend.started() >= 1
    })
    .await;
    let tls =
        format!("{plain}backend_tls = {{ ca = \"backend-ca.pem\", server_name = \"{NAME}\" }}\n");
    std::fs::write(&lb.config, tls).expect("save lb.toml");
    support::generation_reached(&lb, 2, PATIENCE).await;
    let (status, body) = in_flight.await.expect("in-flight request");
    assert_eq!((status, body.as_str()), (StatusCode::OK, "plain"));
    // The backend answers only cleartext: the TLS probe made it sick, and no request reaches
    // it over the connection the slow request handed back.
    let hits = backend.hits();
    let (status, _) = request(&lb, false, "GET", "/", Vec::new()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        backend.hits(),
        hits,
        "a request went over a cleartext connection"
    );
    let sick = lb
        .find_log("backend sick")
        .expect("the TLS probe's verdict");
    assert!(sick.contains("TLS") || sick.contains("tls"), "{sick}");
}
