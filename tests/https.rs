//! HTTPS on `listen.https` in the real lb: certificates made at test time with rcgen, chosen by
//! SNI (the default without one), ALPN choosing HTTP/2 or HTTP/1.1, both proxied to a real
//! backend; a renewed certificate for new handshakes only; a handshake bounded by
//! `header_timeout` that holds one connection slot, and a connection silent before its
//! ClientHello that gives its slot to a new client; `redirect_https` on the cleartext listener.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Empty;
use hyper::{Request, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use support::certs::{Ca, Leaf};
use support::raw::{header, status_of};
use support::{eventually, Backend, Lb};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Every wait in these tests ends within this.
const PATIENCE: Duration = Duration::from_secs(10);

/// lb with `a.test` and `b.test` (the default) on an HTTPS listener, one pool to `backend`, and
/// `extra` lb.toml text (e.g. `[server]` limits).
struct Site {
    lb: Lb,
    https: SocketAddr,
    ca: Ca,
    a: Leaf,
    b: Leaf,
}

fn start(backend: &Backend, listen: &str, extra: &str, args: &[&str]) -> Site {
    let ca = Ca::new("test CA");
    let a = ca.server(&["a.test"]);
    let b = ca.server(&["b.test"]);
    let dir = tempfile::tempdir().expect("temp dir");
    a.write(dir.path(), "a");
    b.write(dir.path(), "b");
    let config = dir.path().join("lb.toml");
    let text = format!(
        "[listen]\nhttps = \"127.0.0.1:0\"\n{listen}\n{extra}\n\
         [[tls.certificates]]\ncert = \"a.pem\"\nkey = \"a.key\"\n\n\
         [[tls.certificates]]\ncert = \"b.pem\"\nkey = \"b.key\"\ndefault = true\n\n{}",
        support::pool("/", &[backend.addr], "100ms")
    );
    std::fs::write(&config, text).expect("write config");
    let lb = Lb::start_at(dir, config, args);
    let https = listener_addr(&lb, "https");
    Site {
        lb,
        https,
        ca,
        a,
        b,
    }
}

/// The bound address lb logged for `listener`.
fn listener_addr(lb: &Lb, listener: &str) -> SocketAddr {
    let line = lb.wait_for_log(&format!("listener=\"{listener}\""), PATIENCE);
    let start = line.find("addr=").expect("addr") + "addr=".len();
    line[start..]
        .split_whitespace()
        .next()
        .and_then(|a| a.parse().ok())
        .expect("listener address")
}

impl Site {
    /// A TLS connection to lb offering `alpn`, with SNI `sni` (none: checked as `b.test`).
    async fn connect(&self, sni: Option<&str>, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.der.clone()).expect("trust the CA");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config.enable_sni = sni.is_some();
        let name = ServerName::try_from(sni.unwrap_or("b.test").to_owned()).expect("name");
        let tcp = TcpStream::connect(self.https).await.expect("connect");
        let handshake = TlsConnector::from(Arc::new(config)).connect(name, tcp);
        tokio::time::timeout(PATIENCE, handshake)
            .await
            .expect("handshake in time")
            .expect("handshake")
    }
}

/// The leaf certificate lb presented on `stream`.
fn presented(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    let certificates = stream
        .get_ref()
        .1
        .peer_certificates()
        .expect("certificates");
    certificates[0].clone().into_owned()
}

/// One HTTP/1.1 request on `stream`; the response's head and body (read by content-length).
async fn http1_get(stream: &mut TlsStream<TcpStream>, host: &str, close: bool) -> (String, String) {
    let connection = if close { "close" } else { "keep-alive" };
    let request = format!("GET /x HTTP/1.1\r\nhost: {host}\r\nconnection: {connection}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut input = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(end) = support::raw::find(&input, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&input[..end + 4]).into_owned();
            let length: usize = header(&head, "content-length")
                .and_then(|l| l.parse().ok())
                .unwrap_or(0);
            if input.len() >= end + 4 + length {
                let body = String::from_utf8_lossy(&input[end + 4..end + 4 + length]);
                return (head, body.into_owned());
            }
        }
        let mut buf = [0u8; 4096];
        let read = tokio::time::timeout_at(deadline.into(), stream.read(&mut buf))
            .await
            .expect("response in time")
            .expect("read");
        assert!(read > 0, "closed before the response: {input:?}");
        input.extend_from_slice(&buf[..read]);
    }
}

#[tokio::test]
async fn sni_picks_the_certificate_and_alpn_picks_the_protocol() {
    let backend = Backend::start("web").await;
    let site = start(&backend, "", "", &[]);

    // http/1.1 with SNI a.test: a.test's certificate, lb's HTTP/1.x engine.
    let mut stream = site.connect(Some("a.test"), &[b"http/1.1"]).await;
    assert_eq!(presented(&stream), site.a.der);
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (head, body) = http1_get(&mut stream, "a.test", true).await;
    assert_eq!(status_of(&head), 200, "{head}");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, "web");
    // lb closes with close_notify: the client sees a clean end, not a cut.
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut rest)).await;
    assert!(matches!(ended, Ok(Ok(0))), "{ended:?}");

    // h2 with SNI b.test: b.test's certificate, HTTP/2.
    let stream = site.connect(Some("b.test"), &[b"h2", b"http/1.1"]).await;
    assert_eq!(presented(&stream), site.b.der);
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut sender = support::h2_connection(stream).await;
    let (status, version, body) = support::h2_get(&mut sender, "https://b.test/y").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(version, Version::HTTP_2);
    assert_eq!(&body[..], b"web");

    // Without SNI: the default certificate.
    let mut stream = site.connect(None, &[]).await;
    assert_eq!(presented(&stream), site.b.der);
    let (head, body) = http1_get(&mut stream, "b.test", true).await;
    assert_eq!(status_of(&head), 200, "{head}");
    assert_eq!(body, "web");

    // Each request reached the backend marked as HTTPS, over either protocol.
    let seen = backend.seen();
    assert_eq!(seen.len(), 3, "every request reached the backend");
    for request in &seen {
        assert_eq!(
            request.headers.get("x-forwarded-proto").map(String::as_str),
            Some("https"),
            "{} {}",
            request.method,
            request.path_and_query
        );
    }
}

#[tokio::test]
async fn a_renewed_certificate_serves_new_handshakes_and_open_connections_keep_working() {
    let backend = Backend::start("web").await;
    let site = start(&backend, "", "", &[]);
    let mut held = site.connect(Some("a.test"), &[b"http/1.1"]).await;
    assert_eq!(presented(&held), site.a.der);
    let (head, _) = http1_get(&mut held, "a.test", false).await;
    assert_eq!(status_of(&head), 200, "{head}");

    let renewed = site.ca.server(&["a.test"]);
    // The key first: until the certificate matches it, lb keeps the old pair.
    std::fs::write(site.lb.dir().join("a.key"), &renewed.key_pem).expect("write key");
    std::fs::write(site.lb.dir().join("a.pem"), &renewed.cert_pem).expect("write cert");
    eventually(PATIENCE, "a handshake with the renewed certificate", || {
        let site = &site;
        let renewed = &renewed.der;
        async move { presented(&site.connect(Some("a.test"), &[]).await) == *renewed }
    })
    .await;

    // The connection made before the renewal still serves requests.
    let (head, body) = http1_get(&mut held, "a.test", false).await;
    assert_eq!(status_of(&head), 200, "{head}");
    assert_eq!(body, "web");
}

#[tokio::test]
async fn a_connection_silent_before_its_client_hello_gives_way_to_a_new_client() {
    let backend = Backend::start("web").await;
    let site = start(
        &backend,
        "",
        "[server]\nheader_timeout = \"30s\"\nmax_connections = 1\n",
        &[],
    );
    // TCP only, never a ClientHello: it holds lb's only connection slot, idle.
    let mut silent = TcpStream::connect(site.https).await.expect("connect");
    let mut probe = [0u8; 1];
    // Accepted (lb holds it) before the next client comes: a read that times out says lb
    // neither answered nor closed it.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), silent.peek(&mut probe))
            .await
            .is_err()
    );
    let opened = Instant::now();
    let mut stream = site.connect(Some("a.test"), &[b"http/1.1"]).await;
    let (head, body) = http1_get(&mut stream, "a.test", true).await;
    let served_after = opened.elapsed();
    assert_eq!(status_of(&head), 200, "{head}");
    assert_eq!(body, "web");
    // Far below the header timeout: the silent one was closed for it, not waited out.
    assert!(
        served_after < Duration::from_secs(1),
        "the second client waited {served_after:?}"
    );
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(PATIENCE, silent.read(&mut buf))
        .await
        .expect("closed in time");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

/// Over TLS too, an HTTP/2 connection with no open stream is idle: closed (GOAWAY) for a new
/// client when the budget is spent, and its client sees its connection end.
#[tokio::test]
async fn an_idle_http2_connection_over_tls_gives_way_to_a_new_client() {
    let backend = Backend::start("web").await;
    let site = start(
        &backend,
        "",
        "[server]\nheader_timeout = \"30s\"\nidle_timeout = \"1h\"\nmax_connections = 1\n",
        &[],
    );
    let stream = site.connect(Some("a.test"), &[b"h2"]).await;
    let mut sender = support::h2_connection(stream).await;
    let (status, _, _) = support::h2_get(&mut sender, "https://a.test/").await;
    assert_eq!(status, 200);

    let opened = Instant::now();
    let mut next = site.connect(Some("a.test"), &[b"http/1.1"]).await;
    let (head, body) = http1_get(&mut next, "a.test", true).await;
    assert_eq!(status_of(&head), 200, "{head}");
    assert_eq!(body, "web");
    assert!(
        opened.elapsed() < Duration::from_secs(1),
        "the new client waited {:?}",
        opened.elapsed()
    );
    // The first client's connection was closed for it.
    eventually(PATIENCE, "the idle HTTP/2 connection closed", || {
        std::future::ready(sender.is_closed())
    })
    .await;
}

#[tokio::test]
async fn an_unfinished_handshake_is_closed_after_header_timeout_holding_one_slot() {
    let backend = Backend::start("web").await;
    let site = start(
        &backend,
        "",
        "[server]\nheader_timeout = \"500ms\"\nmax_connections = 1\n",
        &[],
    );
    // A handshake begun (a ClientHello's first bytes) and never finished: not idle, so it holds
    // lb's only connection slot until the header timeout.
    let mut stalled = TcpStream::connect(site.https).await.expect("connect");
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .expect("write");
    let opened = Instant::now();
    // Connected (queued in the backlog) while the slot is taken; served once it is free.
    let mut stream = site.connect(Some("a.test"), &[b"http/1.1"]).await;
    let served_after = opened.elapsed();
    let (head, body) = http1_get(&mut stream, "a.test", true).await;
    assert_eq!(status_of(&head), 200, "{head}");
    assert_eq!(body, "web");
    assert!(
        served_after >= Duration::from_millis(400),
        "the second client waited for the slot: {served_after:?}"
    );

    // The stalled client was closed at the header timeout.
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(PATIENCE, stalled.read(&mut buf))
        .await
        .expect("closed in time");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(opened.elapsed() < PATIENCE);
}

#[tokio::test]
async fn redirect_https_answers_cleartext_requests_with_308_to_the_https_url() {
    let backend = Backend::start("web").await;
    let site = start(
        &backend,
        "redirect_https = true",
        "",
        &["--admin", "127.0.0.1:0"],
    );
    let port = site.https.port();

    // HTTP/1.1 on the cleartext listener: 308 to the same host (without its port), path and
    // query, on the HTTPS listener's port.
    let mut wire = support::raw::Wire::connect(&site.lb).await;
    wire.send(b"GET /a/b?x=1&y=2 HTTP/1.1\r\nhost: a.test:8080\r\n\r\n")
        .await;
    let head = wire.head().await.expect("response head");
    assert_eq!(status_of(&head), 308, "{head}");
    assert_eq!(
        header(&head, "location").as_deref(),
        Some(format!("https://a.test:{port}/a/b?x=1&y=2").as_str()),
        "{head}"
    );

    // h2c prior knowledge too.
    let tcp = TcpStream::connect(site.lb.http).await.expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2c handshake");
    tokio::spawn(connection);
    let request = Request::get("http://b.test/c")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let response = tokio::time::timeout(PATIENCE, sender.send_request(request))
        .await
        .expect("response in time")
        .expect("response");
    assert_eq!(response.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        response.headers()["location"],
        format!("https://b.test:{port}/c").as_str()
    );

    // The HTTPS listener serves the request itself.
    let mut stream = site.connect(Some("a.test"), &[b"http/1.1"]).await;
    let (head, body) = http1_get(&mut stream, "a.test", true).await;
    assert_eq!(status_of(&head), 200, "{head}");
    assert_eq!(body, "web");
    assert_eq!(
        backend.seen().len(),
        1,
        "only the HTTPS request was proxied"
    );

    // lb's own endpoints, on the admin listener, answer as always.
    let admin = listener_addr(&site.lb, "admin");
    let (status, _) =
        support::get(&support::client(), &format!("http://{admin}/status.json")).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn redirect_https_refuses_a_request_without_host_rather_than_serve_it_in_cleartext() {
    let backend = Backend::start("web").await;
    let site = start(&backend, "redirect_https = true", "", &[]);
    let mut wire = support::raw::Wire::connect(&site.lb).await;
    wire.send(b"GET /a HTTP/1.0\r\n\r\n").await;
    let head = wire.head().await.expect("response head");
    assert_eq!(status_of(&head), 400, "{head}");
    assert_eq!(header(&head, "location"), None, "{head}");
    assert!(backend.seen().is_empty(), "nothing went to the backend");
}

#[tokio::test]
async fn a_saved_tls_section_reaches_new_handshakes_through_the_reload() {
    let backend = Backend::start("web").await;
    let site = start(&backend, "", "", &[]);
    let mut stream = site.connect(None, &[b"http/1.1"]).await;
    assert_eq!(presented(&stream), site.b.der, "b.test is the default");
    let (head, _) = http1_get(&mut stream, "b.test", true).await;
    assert_eq!(status_of(&head), 200, "{head}");

    // A save whose [tls] names a third pair only: once applied, every handshake gets it.
    let c = site.ca.server(&["c.test"]);
    c.write(site.lb.dir(), "c");
    let text = std::fs::read_to_string(&site.lb.config).expect("read lb.toml");
    let start = text.find("[[tls.certificates]]").expect("[tls]");
    let end = text.find("[pools.").expect("pools");
    let saved = format!(
        "{}[[tls.certificates]]\ncert = \"c.pem\"\nkey = \"c.key\"\n\n{}",
        &text[..start],
        &text[end..]
    );
    std::fs::write(&site.lb.config, saved).expect("save lb.toml");
    site.lb
        .log_eventually("tls certificates reloaded", PATIENCE)
        .await;
    let stream = site.connect(Some("c.test"), &[b"http/1.1"]).await;
    assert_eq!(presented(&stream), c.der);
}

#[tokio::test]
async fn pipelined_requests_in_separate_tls_records_are_each_answered() {
    let backend = Backend::start("web").await;
    let site = start(&backend, "", "", &[]);
    let mut stream = site.connect(Some("a.test"), &[b"http/1.1"]).await;
    // Three requests, each flushed as its own TLS record before any answer is read: lb must
    // answer the ones it decrypted early without waiting for the socket to turn readable again.
    for _ in 0..3 {
        stream
            .write_all(b"GET /x HTTP/1.1\r\nhost: a.test\r\n\r\n")
            .await
            .expect("write");
        stream.flush().await.expect("flush");
    }
    let mut input = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while String::from_utf8_lossy(&input)
        .matches("\r\n\r\nweb")
        .count()
        < 3
    {
        let mut buf = [0u8; 4096];
        let read = tokio::time::timeout_at(deadline.into(), stream.read(&mut buf))
            .await
            .expect("three answers in time")
            .expect("read");
        assert!(read > 0, "closed before three answers: {input:?}");
        input.extend_from_slice(&buf[..read]);
    }
    let text = String::from_utf8_lossy(&input);
    assert_eq!(text.matches("HTTP/1.1 200").count(), 3, "{text}");
}
