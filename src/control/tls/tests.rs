use std::path::{Path, PathBuf};

use rcgen::{CertificateParams, KeyPair};

use super::*;

/// A self-signed certificate for localhost and its key, as PEM.
fn self_signed() -> (String, String) {
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .self_signed(&key)
        .expect("certificate");
    (cert.pem(), key.serialize_pem())
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

#[test]
fn certificates_and_keys_are_read_and_checked() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = self_signed();
    let cert_path = write(dir.path(), "cert.pem", &cert);
    let key_path = write(dir.path(), "key.pem", &key);
    assert!(read_certificates(&cert_path, "cert").is_ok());
    assert!(read_key(&key_path, "key").is_ok());

    // Each file in the other's place says what is missing, naming the file.
    let error = read_certificates(&key_path, "control TLS certificate").unwrap_err();
    assert!(
        matches!(error, crate::pem::Error::NoCertificate { .. }),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        format!(
            "control TLS certificate {} holds no PEM certificate (a `-----BEGIN CERTIFICATE-----` block)",
            key_path.display()
        )
    );
    let error = read_key(&cert_path, "control TLS key").unwrap_err();
    assert!(
        matches!(error, crate::pem::Error::NoKey { .. }),
        "{error:?}"
    );
    assert!(error.to_string().starts_with(&format!(
        "control TLS key {} holds no PEM private key",
        cert_path.display()
    )));
}

#[test]
fn missing_and_broken_files_are_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("nope.pem");
    let error = read_certificates(&missing, "--tls-ca").unwrap_err();
    assert!(matches!(error, crate::pem::Error::Read { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .starts_with(&format!("cannot read --tls-ca {}: ", missing.display())),
        "{error}"
    );

    let broken = write(
        dir.path(),
        "broken.pem",
        "-----BEGIN CERTIFICATE-----\nMIIB\n",
    );
    let error = read_certificates(&broken, "control TLS certificate").unwrap_err();
    assert!(matches!(error, crate::pem::Error::Pem { .. }), "{error:?}");
    assert!(
        error.to_string().contains("END CERTIFICATE"),
        "the missing end marker is named: {error}"
    );
    let empty = write(dir.path(), "empty.pem", "");
    assert!(matches!(
        read_certificates(&empty, "x").unwrap_err(),
        crate::pem::Error::NoCertificate { .. }
    ));
}

#[test]
fn the_server_settings_need_a_key_that_matches_the_certificate() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = self_signed();
    let (other_cert, other_key) = self_signed();
    let files = ControlTls {
        cert: write(dir.path(), "cert.pem", &cert),
        key: write(dir.path(), "key.pem", &key),
        client_ca: None,
    };
    let tls = ServerTls::load(&files).expect("a matching pair loads");
    assert!(!tls.is_mutual());

    let mutual = ControlTls {
        client_ca: Some(write(dir.path(), "ca.pem", &other_cert)),
        ..files.clone()
    };
    assert!(ServerTls::load(&mutual).expect("mutual loads").is_mutual());

    let mismatched = ControlTls {
        key: write(dir.path(), "other-key.pem", &other_key),
        ..files
    };
    let error = ServerTls::load(&mismatched).unwrap_err();
    assert!(matches!(error, TlsError::Unusable { .. }), "{error:?}");
    let text = error.to_string();
    assert!(
        text.contains("cert.pem") && text.contains("other-key.pem"),
        "{text}"
    );
}
