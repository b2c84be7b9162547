//! Certificates made at test time with rcgen; handshakes with tokio-rustls on loopback.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::ClientConfig;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::config::BackendTls;

const BOUND: Duration = Duration::from_secs(10);

/// A CA that signs leaf certificates.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for `names`, valid from `not_before` to `not_after` (years), and
    /// its key, as PEM.
    fn sign_valid(&self, names: &[&str], not_before: i32, not_after: i32) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, &names[0]);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = rcgen::date_time_ymd(not_before, 1, 1);
        params.not_after = rcgen::date_time_ymd(not_after, 1, 1);
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("leaf");
        (cert.pem(), key.serialize_pem())
    }

    fn sign(&self, names: &[&str]) -> (String, String) {
        self.sign_valid(names, 2020, 2099)
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

/// Writes `NAME.pem` and `NAME.key` and returns them as a `[[tls.certificates]]` entry.
fn pair(dir: &Path, name: &str, (cert, key): &(String, String)) -> CertificateFiles {
    CertificateFiles {
        cert: write(dir, &format!("{name}.pem"), cert),
        key: write(dir, &format!("{name}.key"), key),
        default: false,
    }
}

fn settings(certificates: Vec<CertificateFiles>) -> TlsConfig {
    TlsConfig {
        certificates,
        min_version: TlsVersion::V1_2,
        unknown_sni: UnknownSni::Default,
        client_ca: None,
    }
}

/// The leaf the running config's resolver picks for `name`, as DER.
fn picked(store: &Store, name: Option<&str>) -> Option<CertificateDer<'static>> {
    store
        .current
        .load()
        .resolver
        .pick(name)
        .map(|k| k.cert[0].clone())
}

fn leaf_der(pem_text: &str) -> CertificateDer<'static> {
    pem::certificates_in(pem_text.as_bytes(), Path::new("x"), "x").expect("cert")[0].clone()
}

#[test]
fn sni_picks_by_exact_name_then_wildcard_then_default() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = Ca::new("test CA");
    let a = ca.sign(&["a.example.com"]);
    let wild = ca.sign(&["*.example.com", "example.org"]);
    let store = Store::load(&settings(vec![
        pair(dir.path(), "a", &a),
        pair(dir.path(), "wild", &wild),
    ]))
    .expect("load");
    let (a_der, wild_der) = (leaf_der(&a.0), leaf_der(&wild.0));

    assert_eq!(picked(&store, Some("a.example.com")), Some(a_der.clone()));
    assert_eq!(picked(&store, Some("A.Example.COM")), Some(a_der.clone()));
    assert_eq!(
        picked(&store, Some("b.example.com")),
        Some(wild_der.clone())
    );
    assert_eq!(picked(&store, Some("example.org")), Some(wild_der.clone()));
    // One label only: neither the bare domain nor two labels match the wildcard; they get the
    // default (the first listed).
    assert_eq!(picked(&store, Some("example.com")), Some(a_der.clone()));
    assert_eq!(picked(&store, Some("x.b.example.com")), Some(a_der.clone()));
    assert_eq!(picked(&store, None), Some(a_der));

    let certificates = store.certificates();
    assert_eq!(certificates[0].names, ["a.example.com"]);
    assert!(certificates[0].default);
    assert_eq!(certificates[1].names, ["*.example.com", "example.org"]);
    assert_eq!(
        certificates[1].not_after_unix,
        rcgen::date_time_ymd(2099, 1, 1).unix_timestamp()
    );
}

#[test]
fn default_marked_certificate_or_refusal_for_unknown_names() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = Ca::new("test CA");
    let a = ca.sign(&["a.test"]);
    let b = ca.sign(&["b.test"]);
    let mut b_files = pair(dir.path(), "b", &b);
    b_files.default = true;
    let mut tls = settings(vec![pair(dir.path(), "a", &a), b_files]);
    let store = Store::load(&tls).expect("load");
    assert_eq!(picked(&store, Some("unknown.test")), Some(leaf_der(&b.0)));
    assert_eq!(picked(&store, None), Some(leaf_der(&b.0)));

    tls.unknown_sni = UnknownSni::Refuse;
    store.reload(&tls).expect("reload");
    assert_eq!(picked(&store, Some("unknown.test")), None);
    assert_eq!(picked(&store, None), None);
    assert_eq!(picked(&store, Some("a.test")), Some(leaf_der(&a.0)));
}

#[test]
fn broken_pairs_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = Ca::new("test CA");

    let expired = pair(
        dir.path(),
        "expired",
        &ca.sign_valid(&["old.test"], 2000, 2001),
    );
    let error = Store::load(&settings(vec![expired.clone()])).unwrap_err();
    assert!(matches!(error, Error::Expired { .. }), "{error:?}");
    assert!(
        error.to_string().starts_with(&format!(
            "tls.certificates cert {} expired at",
            expired.cert.display()
        )),
        "{error}"
    );

    let future = pair(
        dir.path(),
        "future",
        &ca.sign_valid(&["new.test"], 2090, 2099),
    );
    let error = Store::load(&settings(vec![future])).unwrap_err();
    assert!(matches!(error, Error::NotYetValid { .. }), "{error:?}");

    let (cert, _) = ca.sign(&["a.test"]);
    let (_, other_key) = ca.sign(&["a.test"]);
    let mismatched = pair(dir.path(), "mismatched", &(cert, other_key.clone()));
    let error = Store::load(&settings(vec![mismatched.clone()])).unwrap_err();
    assert!(matches!(error, Error::KeyMismatch { .. }), "{error:?}");
    let message = error.to_string();
    assert_eq!(
        message,
        format!(
            "tls.certificates key {} does not belong to certificate {} (their public keys differ)",
            mismatched.key.display(),
            mismatched.cert.display()
        )
    );
    // The key's body never appears in an error.
    let body = other_key.lines().nth(1).expect("a base64 line");
    assert!(!message.contains(body));

    let not_pem = CertificateFiles {
        cert: write(dir.path(), "not-pem.pem", "hello\n"),
        key: mismatched.key.clone(),
        default: false,
    };
    let error = Store::load(&settings(vec![not_pem.clone()])).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "tls.certificates cert {} holds no PEM certificate (a `-----BEGIN CERTIFICATE-----` block)",
            not_pem.cert.display()
        )
    );

    let broken_key = CertificateFiles {
        cert: mismatched.cert.clone(),
        key: write(
            dir.path(),
            "broken.key",
            "-----BEGIN PRIVATE KEY-----\nnot*base64*at*all\n-----END PRIVATE KEY-----\n",
        ),
        default: false,
    };
    let error = Store::load(&settings(vec![broken_key.clone()])).unwrap_err();
    let message = error.to_string();
    assert!(
        message.starts_with(&format!(
            "tls.certificates key {} ",
            broken_key.key.display()
        )),
        "{message}"
    );
    assert!(!message.contains("not*base64"), "{message}");

    let missing = CertificateFiles {
        cert: dir.path().join("missing.pem"),
        key: mismatched.key,
        default: false,
    };
    let error = Store::load(&settings(vec![missing.clone()])).unwrap_err();
    assert!(
        error.to_string().starts_with(&format!(
            "cannot read tls.certificates cert {}: ",
            missing.cert.display()
        )),
        "{error}"
    );
}

#[test]
fn reload_keeps_the_old_config_on_a_broken_pair_and_takes_a_good_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = Ca::new("test CA");
    let first = ca.sign(&["a.test"]);
    let files = pair(dir.path(), "a", &first);
    let tls = settings(vec![files.clone()]);
    let store = Store::load(&tls).expect("load");
    let before = store.server_config();

    // A renewal that wrote the certificate but a key of another pair: nothing changes.
    let renewed = ca.sign(&["a.test", "www.a.test"]);
    let (_, wrong_key) = ca.sign(&["a.test"]);
    std::fs::write(&files.cert, &renewed.0).expect("write cert");
    std::fs::write(&files.key, &wrong_key).expect("write key");
    let error = store.reload(&tls).unwrap_err();
    assert!(matches!(error, Error::KeyMismatch { .. }), "{error:?}");
    assert!(Arc::ptr_eq(&before, &store.server_config()));
    assert_eq!(store.certificates()[0].names, ["a.test"]);

    // The matching key arrives: the next handshake gets the renewed certificate.
    std::fs::write(&files.key, &renewed.1).expect("write key");
    store.reload(&tls).expect("reload");
    assert!(!Arc::ptr_eq(&before, &store.server_config()));
    assert_eq!(store.certificates()[0].names, ["a.test", "www.a.test"]);
    assert_eq!(picked(&store, Some("a.test")), Some(leaf_der(&renewed.0)));

    // Reading the same bytes again keeps the running config.
    let current = store.server_config();
    store.reload(&tls).expect("reload");
    assert!(Arc::ptr_eq(&current, &store.server_config()));
}

// === real handshakes ===

/// Serves TLS with `store`'s config on loopback: each connection answers the negotiated ALPN
/// protocol and then echoes one line per line it reads.
async fn serve(store: Arc<Store>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = tokio_rustls::TlsAcceptor::from(store.server_config());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let alpn = tls
                    .get_ref()
                    .1
                    .alpn_protocol()
                    .map(<[u8]>::to_vec)
                    .unwrap_or_default();
                let _ = tls.write_all(&alpn).await;
                let _ = tls.write_all(b"\n").await;
                let mut buf = [0u8; 64];
                while let Ok(n) = tls.read(&mut buf).await {
                    if n == 0 || tls.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn client(ca_pem: &str, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in pem::certificates_in(ca_pem.as_bytes(), Path::new("ca"), "ca").expect("ca") {
        roots.add(cert).expect("root");
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

type ClientStream = tokio_rustls::client::TlsStream<TcpStream>;

/// Connects as `name`, returns the stream, the server's leaf and the protocol it announced.
async fn connect(
    addr: std::net::SocketAddr,
    config: Arc<ClientConfig>,
    name: &str,
) -> std::io::Result<(ClientStream, CertificateDer<'static>, String)> {
    tokio::time::timeout(BOUND, async {
        let tcp = TcpStream::connect(addr).await?;
        let server_name = ServerName::try_from(name.to_owned()).expect("name");
        let mut tls = tokio_rustls::TlsConnector::from(config)
            .connect(server_name, tcp)
            .await?;
        let leaf = tls
            .get_ref()
            .1
            .peer_certificates()
            .expect("server certificate")[0]
            .clone();
        let alpn = read_line(&mut tls).await?;
        Ok((tls, leaf, alpn))
    })
    .await
    .expect("handshake within the bound")
}

async fn read_line(tls: &mut ClientStream) -> std::io::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        tls.read_exact(&mut byte).await?;
        if byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

#[tokio::test]
async fn handshakes_negotiate_alpn_and_pick_the_certificate_by_sni() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = Ca::new("test CA");
    let a = ca.sign(&["a.test"]);
    let b = ca.sign(&["b.test"]);
    let store = Arc::new(
        Store::load(&settings(vec![
            pair(dir.path(), "a", &a),
            pair(dir.path(), "b", &b),
        ]))
        .expect("load"),
    );
    let addr = serve(store).await;

    let (_, leaf, alpn) = connect(addr, client(&ca.pem, &[b"h2", b"http/1.1"]), "a.test")
        .await
        .expect("a.test");
    assert_eq!((leaf, alpn.as_str()), (leaf_der(&a.0), "h2"));
    let (_, leaf, alpn) = connect(addr, client(&ca.pem, &[b"http/1.1"]), "b.test")
        .await
        .expect("b.test");
    assert_eq!((leaf, alpn.as_str()), (leaf_der(&b.0), "http/1.1"));
    // No ALPN offered: the connection is still made, with no protocol agreed.
    let (_, _, alpn) = connect(addr, client(&ca.pem, &[]), "a.test")
        .await
        .expect("no ALPN");
    assert_eq!(alpn, "");
}

#[tokio::test]
async fn a_renewed_file_serves_the_next_handshake_while_the_open_connection_keeps_working() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = Ca::new("test CA");
    let first = ca.sign(&["a.test"]);
    let files = pair(dir.path(), "a", &first);
    let tls = settings(vec![files.clone()]);
    let store = Arc::new(Store::load(&tls).expect("load"));
    let (_applied, applied_tls) = tokio::sync::watch::channel(Some(tls.clone()));
    let watcher = tokio::spawn(super::watch(Arc::clone(&store), applied_tls).expect("watch"));
    let addr = serve(Arc::clone(&store)).await;
    let config = client(&ca.pem, &[b"http/1.1"]);
    let (mut held, leaf, _) = connect(addr, Arc::clone(&config), "a.test")
        .await
        .expect("first");
    assert_eq!(leaf, leaf_der(&first.0));

    // Renew as certbot does: new files elsewhere, then the names point at them.
    let renewed = ca.sign(&["a.test"]);
    let new_cert = write(dir.path(), "a-2.pem", &renewed.0);
    let new_key = write(dir.path(), "a-2.key", &renewed.1);
    std::fs::rename(&new_key, &files.key).expect("swap key");
    std::fs::rename(&new_cert, &files.cert).expect("swap cert");

    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        let (_, leaf, _) = connect(addr, Arc::clone(&config), "a.test")
            .await
            .expect("next");
        if leaf == leaf_der(&renewed.0) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the renewal was never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The connection made before the renewal still carries traffic.
    tokio::time::timeout(BOUND, async {
        held.write_all(b"still here\n").await.expect("write");
        assert_eq!(read_line(&mut held).await.expect("read"), "still here");
    })
    .await
    .expect("echo within the bound");
    watcher.abort();
}

#[tokio::test]
async fn tls_1_3_only_refuses_a_1_2_client() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = Ca::new("test CA");
    let mut tls = settings(vec![pair(dir.path(), "a", &ca.sign(&["a.test"]))]);
    tls.min_version = TlsVersion::V1_3;
    let addr = serve(Arc::new(Store::load(&tls).expect("load"))).await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(leaf_der(&ca.pem)).expect("root");
    let only_1_2 = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    assert!(connect(addr, Arc::new(only_1_2), "a.test").await.is_err());
    assert!(connect(addr, client(&ca.pem, &[]), "a.test").await.is_ok());
}

// === backend TLS ===

#[tokio::test]
async fn backend_client_config_trusts_its_private_ca_only() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = Ca::new("backend CA");
    let store = Store::load(&settings(vec![pair(
        dir.path(),
        "api",
        &ca.sign(&["api.internal"]),
    )]))
    .expect("load");
    let addr = serve(Arc::new(store)).await;
    let backend_tls = BackendTls {
        ca: Some(write(dir.path(), "backend-ca.pem", &ca.pem)),
        server_name: Some("api.internal".to_owned()),
    };
    let config = backend_client_config(&backend_tls).expect("client config");
    let name = backend_server_name(&backend_tls, addr.ip());
    assert_eq!(name, ServerName::try_from("api.internal").expect("name"));
    let (_, _, alpn) = connect(addr, config, "api.internal")
        .await
        .expect("trusted");
    assert_eq!(alpn, "http/1.1");

    let wrong = BackendTls {
        ca: Some(write(
            dir.path(),
            "wrong-ca.pem",
            &Ca::new("someone else").pem,
        )),
        server_name: Some("api.internal".to_owned()),
    };
    let config = backend_client_config(&wrong).expect("client config");
    let error = connect(addr, config, "api.internal").await.unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("invalid peer certificate") && message.contains("UnknownIssuer"),
        "{message}"
    );

    let not_a_ca = BackendTls {
        ca: Some(write(dir.path(), "empty.pem", "")),
        server_name: None,
    };
    let error = backend_client_config(&not_a_ca).unwrap_err();
    assert!(error.to_string().starts_with("backend_tls.ca "), "{error}");
    assert_eq!(
        backend_server_name(&not_a_ca, addr.ip()),
        ServerName::IpAddress(addr.ip().into())
    );
}

#[tokio::test]
async fn a_kubernetes_secret_swap_and_a_changed_tls_section_are_picked_up() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = Ca::new("test CA");
    let config = client(&ca.pem, &[b"http/1.1"]);

    // A Secret volume: tls.crt -> ..data/tls.crt, ..data -> ..2026_01_01.
    let secret = dir.path().join("secret");
    let first = ca.sign(&["a.test"]);
    let version = |name: &str, (cert, key): &(String, String)| {
        let path = secret.join(name);
        std::fs::create_dir_all(&path).expect("version dir");
        write(&path, "tls.crt", cert);
        write(&path, "tls.key", key);
    };
    version("..2026_01_01", &first);
    symlink("..2026_01_01", secret.join("..data")).expect("..data");
    symlink("..data/tls.crt", secret.join("tls.crt")).expect("tls.crt");
    symlink("..data/tls.key", secret.join("tls.key")).expect("tls.key");
    let config_path = write(
        dir.path(),
        "lb.toml",
        "[[tls.certificates]]\ncert = \"secret/tls.crt\"\nkey = \"secret/tls.key\"\n",
    );
    let (lb_config, _) = crate::config::load(&config_path).expect("lb.toml");
    let store = Arc::new(Store::load(lb_config.tls.as_ref().expect("[tls]")).expect("load"));
    // What `apply` hands the watcher: each applied config's `[tls]`.
    let (applied, applied_tls) = tokio::sync::watch::channel(lb_config.tls.clone());
    let watcher = tokio::spawn(super::watch(Arc::clone(&store), applied_tls).expect("watch"));
    let addr = serve(Arc::clone(&store)).await;
    let (_, leaf, _) = connect(addr, Arc::clone(&config), "a.test")
        .await
        .expect("first");
    assert_eq!(leaf, leaf_der(&first.0));

    // The kubelet's update: a new version directory, then `..data` replaced by rename.
    let renewed = ca.sign(&["a.test"]);
    version("..2026_02_01", &renewed);
    symlink("..2026_02_01", secret.join("..data_tmp")).expect("..data_tmp");
    std::fs::rename(secret.join("..data_tmp"), secret.join("..data")).expect("swap ..data");
    served_eventually(addr, &config, "a.test", &leaf_der(&renewed.0)).await;

    // An applied lb.toml whose [tls] names another pair: the next handshake gets it.
    let other = ca.sign(&["a.test", "b.test"]);
    pair(dir.path(), "other", &other);
    std::fs::write(
        &config_path,
        "[[tls.certificates]]\ncert = \"other.pem\"\nkey = \"other.key\"\n",
    )
    .expect("rewrite lb.toml");
    let (lb_config, _) = crate::config::load(&config_path).expect("lb.toml");
    applied.send(lb_config.tls).expect("the watcher listens");
    served_eventually(addr, &config, "b.test", &leaf_der(&other.0)).await;
    watcher.abort();
}

/// Connects as `name` until the server presents `expected`, within the bound.
async fn served_eventually(
    addr: std::net::SocketAddr,
    config: &Arc<ClientConfig>,
    name: &str,
    expected: &CertificateDer<'static>,
) {
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        if let Ok((_, leaf, _)) = connect(addr, Arc::clone(config), name).await {
            if &leaf == expected {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name}: the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn client_ca_requires_a_client_certificate_from_that_ca() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = Ca::new("server CA");
    let clients = Ca::new("clients CA");
    let mut tls = settings(vec![pair(dir.path(), "a", &ca.sign(&["a.test"]))]);
    tls.client_ca = Some(write(dir.path(), "clients-ca.pem", &clients.pem));
    let addr = serve(Arc::new(Store::load(&tls).expect("load"))).await;

    // Without a certificate the server refuses the connection (TLS 1.3 reports it on first read).
    let refused = connect(addr, client(&ca.pem, &[]), "a.test").await;
    assert!(
        refused.is_err(),
        "a client without a certificate got through"
    );

    let mut params = CertificateParams::new(vec!["client.test".to_owned()]).expect("params");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().expect("key");
    let cert = params
        .signed_by(&key, &clients.issuer)
        .expect("client cert");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(leaf_der(&ca.pem)).expect("root");
    let with_cert = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .expect("client auth");
    let (_, _, alpn) = connect(addr, Arc::new(with_cert), "a.test")
        .await
        .expect("a client with a certificate from client_ca");
    assert_eq!(alpn, "");
}

/// A connector is the settings and the CA's bytes: a bundle replaced in place under the same
/// name makes a connector that differs (so a pool's checkers are rebuilt with it), the same
/// bytes one that is equal.
#[test]
fn a_ca_replaced_in_place_makes_a_different_connector() {
    let dir = tempfile::tempdir().expect("temp dir");
    let settings = BackendTls {
        ca: Some(write(dir.path(), "backend-ca.pem", &Ca::new("first").pem)),
        server_name: Some("api.internal".to_owned()),
    };
    let (before, error) = BackendConnector::new(&settings);
    assert!(error.is_none(), "{error:?}");
    assert_eq!(before, BackendConnector::new(&settings).0);
    write(dir.path(), "backend-ca.pem", &Ca::new("second").pem);
    let (after, error) = BackendConnector::new(&settings);
    assert!(error.is_none(), "{error:?}");
    assert_ne!(before, after);
}
