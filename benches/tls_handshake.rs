//! A full (not resumed) TLS handshake in memory (no sockets) against `lb::tls::Store`'s server config: ECDSA
//! P-256 certificates chosen by SNI among 2 and 100, TLS 1.3 and 1.2. It measures what one new
//! connection costs lb's CPU in rustls + ring + the SNI resolver, both sides included.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use lb::config::{CertificateFiles, TlsConfig, TlsVersion, UnknownSni};
use rcgen::{CertificateParams, DnType, KeyPair};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use rustls_pki_types::ServerName;

/// `n` self-signed certificates `host0.test`..; returns the settings and a client trusting all.
fn certificates(dir: &Path, n: usize) -> (TlsConfig, RootCertStore) {
    let mut roots = RootCertStore::empty();
    let mut files = Vec::with_capacity(n);
    for i in 0..n {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(vec![format!("host{i}.test")]).expect("params");
        // A distinct subject per certificate: the client finds its trust anchor by name, so
        // the bench measures one verification, not one per anchor with rcgen's shared default.
        params
            .distinguished_name
            .push(DnType::CommonName, format!("host{i}.test"));
        let cert = params.self_signed(&key).expect("cert");
        roots.add(cert.der().clone()).expect("root");
        let (cert_path, key_path) = (dir.join(format!("{i}.pem")), dir.join(format!("{i}.key")));
        std::fs::write(&cert_path, cert.pem()).expect("write");
        std::fs::write(&key_path, key.serialize_pem()).expect("write");
        files.push(CertificateFiles {
            cert: cert_path,
            key: key_path,
            default: false,
        });
    }
    let settings = TlsConfig {
        certificates: files,
        min_version: TlsVersion::V1_2,
        unknown_sni: UnknownSni::Default,
        client_ca: None,
    };
    (settings, roots)
}

/// Moves every pending TLS record from one side to the other until both finish the handshake.
fn handshake(client: &Arc<ClientConfig>, server: &Arc<ServerConfig>, name: &ServerName<'static>) {
    let mut client = ClientConnection::new(Arc::clone(client), name.clone()).expect("client");
    let mut server = ServerConnection::new(Arc::clone(server)).expect("server");
    let mut buf = Vec::with_capacity(8192);
    for _ in 0..10 {
        buf.clear();
        client.write_tls(&mut buf).expect("client write");
        server.read_tls(&mut &buf[..]).expect("server read");
        server.process_new_packets().expect("server process");
        buf.clear();
        server.write_tls(&mut buf).expect("server write");
        client.read_tls(&mut &buf[..]).expect("client read");
        client.process_new_packets().expect("client process");
        if !client.is_handshaking() && !server.is_handshaking() {
            return;
        }
    }
    panic!("the handshake did not finish in 10 rounds");
}

fn tls_handshake(c: &mut Criterion) {
    let mut group = c.benchmark_group("tls/handshake");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(30);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    for n in [2usize, 100] {
        let dir = tempfile::tempdir().expect("temp dir");
        let (settings, roots) = certificates(dir.path(), n);
        let server = lb::tls::Store::load(&settings)
            .expect("store")
            .server_config();
        let name = ServerName::try_from(format!("host{}.test", n - 1)).expect("name");
        for (version, versions) in [
            ("1.3", &[&rustls::version::TLS13][..]),
            ("1.2", &[&rustls::version::TLS12][..]),
        ] {
            let mut client = ClientConfig::builder_with_provider(Arc::clone(&provider))
                .with_protocol_versions(versions)
                .expect("versions")
                .with_root_certificates(roots.clone())
                .with_no_client_auth();
            // Full handshakes only: a resumed TLS 1.2 session skips the key exchange and the
            // certificate, which is not what a new client costs.
            client.resumption = rustls::client::Resumption::disabled();
            let client = Arc::new(client);
            group.bench_with_input(
                BenchmarkId::new(format!("tls{version}"), format!("{n}_certs")),
                &(),
                |b, ()| b.iter(|| handshake(black_box(&client), &server, &name)),
            );
        }
    }
    group.finish();
}

criterion_group!(benches, tls_handshake);
criterion_main!(benches);
