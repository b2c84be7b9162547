//! tls::client: the rustls `ClientConfig` lb uses toward a pool's backends (`backend_tls`).

use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::ServerName;
use sha2::Digest;

use crate::config::BackendTls;
use crate::pem;

/// Why a pool's `backend_tls` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BackendTlsError {
    /// The `ca` file cannot be read or holds no certificate.
    #[error(transparent)]
    File(#[from] pem::Error),
    /// The `ca` bundle holds a certificate rustls cannot trust as a root.
    #[error("backend_tls.ca {path} cannot be used: {reason}")]
    Ca {
        /// The `ca` file.
        path: std::path::PathBuf,
        /// What rustls says is wrong with it.
        reason: String,
    },
    /// Without `ca`, the system trust store yields no root, so no backend could be verified.
    #[error("backend_tls without ca: the system trust store holds no usable certificate{0}")]
    NoSystemRoots(String),
    /// rustls refuses the client settings.
    #[error("cannot build the backend TLS settings: {0}")]
    Settings(String),
}

/// The client config for one pool's backends: trusting `ca` (a PEM bundle) or, without it, the
/// operating system's trust store; offering ALPN `http/1.1` (the upstream connector speaks
/// HTTP/1.1 to backends). The name to verify is [`backend_server_name`]'s.
pub fn backend_client_config(settings: &BackendTls) -> Result<Arc<ClientConfig>, BackendTlsError> {
    client_config(settings).map(|(config, _)| config)
}

/// [`backend_client_config`], with the SHA-256 of the `ca` file it read (none for the system
/// trust store).
fn client_config(
    settings: &BackendTls,
) -> Result<(Arc<ClientConfig>, Option<[u8; 32]>), BackendTlsError> {
    let mut roots = RootCertStore::empty();
    let mut ca_digest = None;
    match &settings.ca {
        Some(path) => {
            let bytes = pem::read(path, "backend_tls.ca")?;
            ca_digest = Some(sha2::Sha256::digest(&bytes).into());
            for cert in pem::certificates_in(&bytes, path, "backend_tls.ca")? {
                roots.add(cert).map_err(|e| BackendTlsError::Ca {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            let (n_added, _) = roots.add_parsable_certificates(native.certs);
            if n_added == 0 {
                let reason = native
                    .errors
                    .first()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default();
                return Err(BackendTlsError::NoSystemRoots(reason));
            }
        }
    }
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| BackendTlsError::Settings(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(config), ca_digest))
}

/// The name lb sends as SNI and checks the backend's certificate against: `server_name` when
/// set (validated when lb.toml was parsed), else the backend's IP address.
pub fn backend_server_name(
    settings: &BackendTls,
    backend_ip: std::net::IpAddr,
) -> ServerName<'static> {
    settings
        .server_name
        .as_deref()
        .and_then(|name| ServerName::try_from(name.to_owned()).ok())
        .unwrap_or(ServerName::IpAddress(backend_ip.into()))
}

/// A pool's `backend_tls` ready for handshakes: the client config (or why it cannot be built)
/// and the name to verify. Built when the pool is applied; two are equal when their settings
/// are, so an unchanged pool keeps its checkers.
pub struct BackendConnector {
    settings: BackendTls,
    /// SHA-256 of the `ca` file the trust was built from: a bundle replaced in place under the same name makes
    /// a connector that differs, so the checkers verify with what requests verify with.
    ca_digest: Option<[u8; 32]>,
    /// `Err`: the `ca` could not be used; every handshake fails with this reason, so the
    /// pool's backends turn sick saying why.
    connector: Result<tokio_rustls::TlsConnector, String>,
}

impl std::fmt::Debug for BackendConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendConnector")
            .field("settings", &self.settings)
            .field("usable", &self.connector.is_ok())
            .finish()
    }
}

impl PartialEq for BackendConnector {
    fn eq(&self, other: &BackendConnector) -> bool {
        self.settings == other.settings && self.ca_digest == other.ca_digest
    }
}

impl Eq for BackendConnector {}

impl BackendConnector {
    /// The `backend_tls` settings it was built from.
    pub fn settings(&self) -> &BackendTls {
        &self.settings
    }

    /// Reads the `ca` bundle (or the system trust store) now. A bundle that cannot be used is
    /// returned as the error and kept as every handshake's failure.
    pub fn new(settings: &BackendTls) -> (BackendConnector, Option<BackendTlsError>) {
        let (connector, ca_digest, error) = match client_config(settings) {
            Ok((config, digest)) => (Ok(tokio_rustls::TlsConnector::from(config)), digest, None),
            Err(error) => (Err(error.to_string()), None, Some(error)),
        };
        let connector = BackendConnector {
            settings: settings.clone(),
            ca_digest,
            connector,
        };
        (connector, error)
    }

    /// The TLS handshake on `tcp`, a new connection to a backend at `ip`, verifying its
    /// certificate against the pool's trust and name. A failure is an
    /// [`std::io::Error`] whose message says why in plain words ("unknown issuer",
    /// "certificate not valid for name …").
    pub async fn handshake(
        &self,
        tcp: tokio::net::TcpStream,
        ip: std::net::IpAddr,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let connector = self
            .connector
            .as_ref()
            .map_err(|reason| std::io::Error::other(format!("TLS not usable: {reason}")))?;
        let name = backend_server_name(&self.settings, ip);
        connector
            .connect(name.clone(), tcp)
            .await
            .map_err(|error| handshake_error(error, &name))
    }
}

/// A failed handshake as an error whose message names the cause: rustls's certificate errors
/// in words, anything else as rustls or the socket says it.
fn handshake_error(error: std::io::Error, name: &ServerName<'_>) -> std::io::Error {
    use rustls::CertificateError;
    let kind = error.kind();
    let reason = match error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidCertificate(cause)) => match cause {
            CertificateError::UnknownIssuer => "unknown issuer".to_owned(),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!("certificate not valid for name {}", name.to_str())
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "certificate expired".to_owned()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "certificate not valid yet".to_owned()
            }
            CertificateError::Revoked => "certificate revoked".to_owned(),
            other => format!("invalid certificate: {other:?}"),
        },
        Some(other) => other.to_string(),
        None => error.to_string(),
    };
    std::io::Error::new(kind, format!("TLS handshake: {reason}"))
}
