//! pem: owns reading PEM certificate and private-key files, with errors that name the file and
//! never quote a key's bytes. It never builds TLS settings and never opens a socket; `control`
//! (the control listener, lbctl) and `tls` (the data plane) build on it.

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why a PEM file cannot be used. `what` says which setting the file came from
/// ("control TLS certificate", "--tls-ca", "tls.certificates key").
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file cannot be read (missing, unreadable).
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// The setting the file came from.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why reading failed.
        #[source]
        source: std::io::Error,
    },
    /// The file holds no certificate block (a key or an empty file in its place, say).
    #[error("{what} {path} holds no PEM certificate (a `-----BEGIN CERTIFICATE-----` block)")]
    NoCertificate {
        /// The setting the file came from.
        what: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// The file holds no private key block of a supported kind.
    #[error("{what} {path} holds no PEM private key (a `-----BEGIN PRIVATE KEY-----`, `RSA PRIVATE KEY` or `EC PRIVATE KEY` block)")]
    NoKey {
        /// The setting the file came from.
        what: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// The file has PEM framing that does not decode (bad base64, a truncated block).
    #[error("{what} {path} is not valid PEM: {reason}")]
    Pem {
        /// The setting the file came from.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What the PEM parser says is wrong, without the file's bytes.
        reason: String,
    },
}

/// Reads a PEM file of one or more certificates (a chain, or a CA bundle) and checks that it
/// holds at least one; returns the file's bytes.
pub fn read_certificates(path: &Path, what: &'static str) -> Result<Vec<u8>, Error> {
    let bytes = read(path, what)?;
    certificates_in(&bytes, path, what)?;
    Ok(bytes)
}

/// Reads a PEM private key file (PKCS#8, PKCS#1 or SEC1) and checks that it holds one; returns
/// the file's bytes.
pub fn read_key(path: &Path, what: &'static str) -> Result<Vec<u8>, Error> {
    let bytes = read(path, what)?;
    key_in(&bytes, path, what)?;
    Ok(bytes)
}

/// The certificates in `bytes` (read from `path`), at least one.
pub fn certificates_in(
    bytes: &[u8],
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(e, path, what))?;
    if certs.is_empty() {
        return Err(Error::NoCertificate {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The first private key in `bytes` (read from `path`).
pub fn key_in(
    bytes: &[u8],
    path: &Path,
    what: &'static str,
) -> Result<PrivateKeyDer<'static>, Error> {
    match PrivateKeyDer::from_pem_slice(bytes) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) => Err(Error::NoKey {
            what,
            path: path.to_path_buf(),
        }),
        Err(e) => Err(pem_error(e, path, what)),
    }
}

/// The whole file.
pub fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// A PEM syntax error as a reason that names the bad marker line but never quotes the base64
/// body, which in a key file is the key.
fn pem_error(error: pem::Error, path: &Path, what: &'static str) -> Error {
    let reason = match error {
        pem::Error::MissingSectionEnd { end_marker } => {
            format!(
                "no `-----END {}-----` line",
                String::from_utf8_lossy(&end_marker)
            )
        }
        pem::Error::IllegalSectionStart { line } => {
            format!("bad section start {:?}", String::from_utf8_lossy(&line))
        }
        pem::Error::Base64Decode(_) => "a block's body is not valid base64".to_owned(),
        other => other.to_string(),
    };
    Error::Pem {
        what,
        path: path.to_path_buf(),
        reason,
    }
}
