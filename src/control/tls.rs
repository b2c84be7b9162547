//! control::tls: owns turning the control listener's PEM files into tonic's rustls settings, for
//! lb (server side) and lbctl (client side). It never opens a socket and never reads lb.toml.
//!
//! Every file is read and parsed (by [`crate::pem`]) before tonic sees it, because tonic only
//! says "Error parsing TLS certificate." and an operator needs to know which file to fix.

use std::path::PathBuf;
use std::time::Duration;

use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::config::ControlTls;
pub use crate::pem::{read_certificates, read_key};

/// A client must finish its TLS handshake within this; one that connects and stalls holds a
/// task at most this long.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the control listener's TLS settings cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate, key or CA file cannot be read or holds no usable PEM block.
    #[error(transparent)]
    File(#[from] crate::pem::Error),
    /// The files read, but rustls (through tonic) refuses them together.
    #[error("control TLS certificate {cert} with key {key}{} cannot be used: {reason}", client_ca.as_ref().map(|ca| format!(" and client CA {}", ca.display())).unwrap_or_default())]
    Unusable {
        /// `[control] tls_cert`.
        cert: PathBuf,
        /// `[control] tls_key`.
        key: PathBuf,
        /// `[control] client_ca`, when mutual TLS is on.
        client_ca: Option<PathBuf>,
        /// What rustls says is wrong.
        reason: String,
    },
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
