//! Client certificates on `listen.https` (`[tls] client_ca`) in the real lb: a client holding a
//! certificate from that CA is served, over HTTP/1.1 and HTTP/2, and its subject is in the
//! access line; one without a certificate, or with one from another CA, is refused in the
//! handshake and reaches no backend; every failed handshake is counted by its reason.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::StatusCode;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use support::certs::{provider, Ca, Leaf};
use support::{Backend, Lb};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Every wait in these tests ends within this.
const PATIENCE: Duration = Duration::from_secs(10);

/// lb serving `site.test` on an HTTPS listener that requires certificates from `clients`.
struct Site {
    lb: Lb,
    https: SocketAddr,
    admin: SocketAddr,
    server_ca: Ca,
}

fn start(backend: &Backend, clients: &Ca) -> Site {
    let server_ca = Ca::new("server CA");
    let dir = tempfile::tempdir().expect("temp dir");
    server_ca.server(&["site.test"]).write(dir.path(), "site");
    clients.write(&dir.path().join("clients-ca.pem"));
    let config = dir.path().join("lb.toml");
    let text = format!(
        "[listen]\nhttps = \"127.0.0.1:0\"\n\n[server]\nheader_timeout = \"500ms\"\n\n\
         [tls]\nclient_ca = \"clients-ca.pem\"\n\n\
         [[tls.certificates]]\ncert = \"site.pem\"\nkey = \"site.key\"\n\n{}",
        support::pool("/", &[backend.addr], "100ms")
    );
    std::fs::write(&config, text).expect("write config");
    let lb = Lb::start_at(dir, config, &["--admin", "127.0.0.1:0"]);
    Site {
        https: listener_addr(&lb, "https"),
        admin: listener_addr(&lb, "admin"),
        lb,
        server_ca,
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

/// `lb_tls_handshake_failures_total{reason="REASON"}` as /metrics has it now.
async fn handshake_failures(site: &Site, reason: &str) -> Option<u64> {
    let url = format!("http://{}/metrics", site.admin);
    let (_, text) = support::get(&support::client(), &url).await;
    let sample = format!("lb_tls_handshake_failures_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(sample.as_str()))
        .and_then(|n| n.parse().ok())
}

impl Site {
    /// A TLS connection offering `alpn` and presenting `cert` when given; `Err` when the
    /// handshake fails as the client sees it.
    async fn connect(
        &self,
        cert: Option<&Leaf>,
        alpn: &[u8],
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let mut roots = RootCertStore::empty();
        roots.add(self.server_ca.der.clone()).expect("trust");
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots);
        let mut config = match cert {
            Some(leaf) => builder
                .with_client_auth_cert(vec![leaf.der.clone()], leaf.key())
                .expect("client certificate"),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![alpn.to_vec()];
        let tcp = TcpStream::connect(self.https).await.expect("connect");
        let name = ServerName::try_from("site.test").expect("name");
        let handshake = TlsConnector::from(Arc::new(config)).connect(name, tcp);
        tokio::time::timeout(PATIENCE, handshake)
            .await
            .expect("handshake in time")
    }
}

/// `GET /x` with `connection: close` on `stream`; everything lb sent until it closed (a
/// refused handshake shows as an error or nothing).
async fn get_over_http1(mut stream: TlsStream<TcpStream>) -> String {
    let request = b"GET /x HTTP/1.1\r\nhost: site.test\r\nconnection: close\r\n\r\n";
    if stream.write_all(request).await.is_err() {
        return String::new();
    }
    let mut input = Vec::new();
    let read = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut input)).await;
    assert!(read.is_ok(), "lb neither answered nor closed");
    String::from_utf8_lossy(&input).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_from_client_ca_is_served_and_its_subject_logged() {
    let backend = Backend::start("web").await;
    let clients = Ca::new("clients CA");
    let site = start(&backend, &clients);
    let alice = clients.client("alice");

    let stream = site
        .connect(Some(&alice), b"http/1.1")
        .await
        .expect("handshake");
    let response = get_over_http1(stream).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("web"), "{response}");
    let line = site.lb.wait_for_log("lb::access", PATIENCE);
    assert!(line.contains(" client_cert=\"CN=alice\""), "{line}");

    // HTTP/2 over the same kind of connection: the subject is on its access line too.
    let stream = site.connect(Some(&alice), b"h2").await.expect("handshake");
    let mut sender = support::h2_connection(stream).await;
    let (status, _, body) = support::h2_get(&mut sender, "https://site.test/h2").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"web");
    let line = site.lb.wait_for_log("path=\"/h2\"", PATIENCE);
    assert!(line.contains(" client_cert=\"CN=alice\""), "{line}");
    assert_eq!(backend.seen().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_a_certificate_or_with_a_foreign_one_is_refused_and_counted() {
    let backend = Backend::start("web").await;
    let clients = Ca::new("clients CA");
    let site = start(&backend, &clients);
    let mallory = Ca::new("other CA").client("mallory");

    for cert in [None, Some(&mallory)] {
        // TLS 1.3 lets the client finish its side before lb has checked its certificate: the
        // refusal then arrives as an alert in place of the response.
        let response = match site.connect(cert, b"http/1.1").await {
            Ok(stream) => get_over_http1(stream).await,
            Err(_) => String::new(),
        };
        assert!(
            !response.contains("HTTP/1.1"),
            "served without a good certificate: {response}"
        );
    }
    assert!(backend.seen().is_empty(), "nothing reached the backend");
    assert!(
        site.lb.find_log("lb::access").is_none(),
        "{}",
        site.lb.logs().join("\n")
    );
    support::eventually(
        PATIENCE,
        "two refused client certificates counted",
        || async { handshake_failures(&site, "client_certificate").await == Some(2) },
    )
    .await;

    // Cleartext HTTP on the HTTPS listener is no TLS: a protocol failure.
    let mut tcp = TcpStream::connect(site.https).await.expect("connect");
    tcp.write_all(b"GET / HTTP/1.1\r\nhost: site.test\r\n\r\n")
        .await
        .expect("write");
    let mut input = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut input)).await;
    support::eventually(PATIENCE, "the cleartext request counted", || async {
        handshake_failures(&site, "protocol").await == Some(1)
    })
    .await;

    // A client that closes before its hello, and one that never sends it (closed at
    // header_timeout).
    drop(TcpStream::connect(site.https).await.expect("connect"));
    support::eventually(PATIENCE, "the closed handshake counted", || async {
        handshake_failures(&site, "closed").await == Some(1)
    })
    .await;
    let mut silent = TcpStream::connect(site.https).await.expect("connect");
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(PATIENCE, silent.read(&mut byte)).await;
    assert!(matches!(read, Ok(Ok(0) | Err(_))), "{read:?}");
    support::eventually(PATIENCE, "the unfinished handshake counted", || async {
        handshake_failures(&site, "timeout").await == Some(1)
    })
    .await;
    assert_eq!(
        handshake_failures(&site, "client_certificate").await,
        Some(2)
    );
}
