//! control::tls: owns reading the control listener's PEM files and turning them into tonic's
//! rustls settings, for lb (server side) and lbctl (client side). It never opens a socket and
//! never reads lb.toml.
//!
//! Every file is read and parsed here before tonic sees it, because tonic only says "Error
//! parsing TLS certificate." and an operator needs to know which file to fix.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::config::ControlTls;

/// A client must finish its TLS handshake within this; one that connects and stalls holds a
/// task for no longer.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a PEM file or the TLS settings built from it cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {path} holds no PEM certificate (a `-----BEGIN CERTIFICATE-----` block)")]
    NoCertificate { what: &'static str, path: PathBuf },
    #[error("{what} {path} holds no PEM private key (a `-----BEGIN PRIVATE KEY-----`, `RSA PRIVATE KEY` or `EC PRIVATE KEY` block)")]
    NoKey { what: &'static str, path: PathBuf },
    #[error("{what} {path} is not valid PEM: {reason}")]
    Pem {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("control TLS certificate {cert} with key {key}{} cannot be used: {reason}", client_ca.as_ref().map(|ca| format!(" and client CA {}", ca.display())).unwrap_or_default())]
    Unusable {
        cert: PathBuf,
        key: PathBuf,
        client_ca: Option<PathBuf>,
        reason: String,
    },
}

/// Reads a PEM file of one or more certificates (a chain, or a CA bundle) and checks that it
/// holds at least one. `what` names the file in errors ("control TLS certificate", "--tls-ca").
pub fn read_certificates(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    let bytes = read(path, what)?;
    let mut n_certs = 0;
    for cert in CertificateDer::pem_slice_iter(&bytes) {
        cert.map_err(|e| pem_error(e, path, what))?;
        n_certs += 1;
    }
    if n_certs == 0 {
        return Err(TlsError::NoCertificate {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(bytes)
}

/// Reads a PEM private key file (PKCS#8, PKCS#1 or SEC1) and checks that it holds one.
pub fn read_key(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    let bytes = read(path, what)?;
    match PrivateKeyDer::from_pem_slice(&bytes) {
        Ok(_) => Ok(bytes),
        Err(pem::Error::NoItemsFound) => Err(TlsError::NoKey {
            what,
            path: path.to_path_buf(),
        }),
        Err(e) => Err(pem_error(e, path, what)),
    }
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn pem_error(error: pem::Error, path: &Path, what: &'static str) -> TlsError {
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
        other => other.to_string(),
    };
    TlsError::Pem {
        what,
        path: path.to_path_buf(),
        reason,
    }
}

/// The control listener's TLS settings, read and checked once at start.
#[derive(Clone)]
pub struct ServerTls {
    config: ServerTlsConfig,
    mutual: bool,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("mutual", &self.mutual)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Reads `[control] tls_cert`, `tls_key` and `client_ca`, and builds the rustls config
    /// from them, so a bad file stops lb at start with the file's name.
    pub fn load(files: &ControlTls) -> Result<ServerTls, TlsError> {
        let cert = read_certificates(&files.cert, "control TLS certificate (tls_cert)")?;
        let key = read_key(&files.key, "control TLS key (tls_key)")?;
        let mut config = ServerTlsConfig::new()
            .identity(Identity::from_pem(cert, key))
            .timeout(HANDSHAKE_TIMEOUT);
        if let Some(path) = &files.client_ca {
            let ca = read_certificates(path, "control client CA (client_ca)")?;
            config = config.client_ca_root(Certificate::from_pem(ca));
        }
        // NOTE: tonic builds the rustls config only when the server is assembled. Assemble one
        // now and drop it, so that a key that does not belong to its certificate fails here,
        // while lb can still refuse to start, and not later inside the spawned control task.
        tonic::transport::Server::builder()
            .tls_config(config.clone())
            .map_err(|error| TlsError::Unusable {
                cert: files.cert.clone(),
                key: files.key.clone(),
                client_ca: files.client_ca.clone(),
                reason: crate::errors::error_chain(&error),
            })?;
        Ok(ServerTls {
            config,
            mutual: files.client_ca.is_some(),
        })
    }

    /// Whether clients must present a certificate signed by `client_ca`.
    pub fn is_mutual(&self) -> bool {
        self.mutual
    }

    pub(super) fn config(&self) -> ServerTlsConfig {
        self.config.clone()
    }
}

#[cfg(test)]
mod tests;
