//! tls: owns the data plane's TLS material — reading and checking the `[tls]` certificate pairs,
//! choosing a certificate by SNI, the rustls `ServerConfig` a new handshake loads (swapped
//! whole on reload), watching the certificate files, and the rustls `ClientConfig` of a pool's
//! `backend_tls` with the client handshake on a connection its caller opened
//! ([`BackendConnector`]). It never accepts or opens a connection, never reads or writes lb.toml
//! and never touches the topology: the listener and the upstream connector take what it builds.
//!
//! - `Store`: an `ArcSwap` of the built [`ServerConfig`] and what it was built from. A handshake
//!   loads it once; [`Store::reload`] builds a new one from the files and swaps it in only when
//!   every pair is good, so a broken renewal changes nothing and open connections keep theirs.
//! - `SniResolver`: exact names, then the one-label wildcard (`*.example.com` covers
//!   `a.example.com`, not `example.com` nor `a.b.example.com`, as RFC 6125 §6.4.3 and browsers
//!   read it), then the default certificate or nothing (`unknown_sni = "refuse"`).
//! - `watch`: notices renewals (certbot rewriting `live/` symlinks, a Kubernetes Secret's
//!   `..data` swap) by watching the files' directories, as `crate::watch` does for lb.toml.
//!
//! Keys are parsed into rustls signing keys and never formatted: errors name the file, never
//! quote it.

mod client;
mod watch;

pub use client::{backend_client_config, backend_server_name, BackendConnector, BackendTlsError};
pub use watch::{start as watch, WatchError};

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::{ArcSwap, ArcSwapOption};
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::{CertificateFiles, TlsConfig, TlsVersion, UnknownSni};
use crate::pem;

/// ALPN protocols offered, in server preference order: HTTP/2 to a client that offers it.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Why a `[tls]` section or one of its files cannot be used. Each names the file to fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A certificate or key file cannot be read or holds no usable PEM block.
    #[error(transparent)]
    File(#[from] pem::Error),
    /// The key file's public key is not the certificate's: the pair was mixed up.
    #[error("tls.certificates key {key} does not belong to certificate {cert} (their public keys differ)")]
    KeyMismatch {
        /// The `cert` file of the pair.
        cert: PathBuf,
        /// The `key` file that does not match it.
        key: PathBuf,
    },
    /// rustls cannot turn the key into a signing key (an unsupported algorithm, say).
    #[error("tls.certificates key {key} cannot be used: {reason}")]
    Key {
        /// The `key` file.
        key: PathBuf,
        /// What rustls says is wrong with it.
        reason: String,
    },
    /// The certificate (or its SAN extension) does not parse as X.509.
    #[error("tls.certificates cert {cert} is not a readable X.509 certificate: {reason}")]
    Certificate {
        /// The `cert` file.
        cert: PathBuf,
        /// What the parser says is wrong with it.
        reason: String,
    },
    /// The certificate's validity ended before now; serving it would fail every handshake.
    #[error("tls.certificates cert {cert} expired at {not_after} (notAfter); renew it")]
    Expired {
        /// The `cert` file.
        cert: PathBuf,
        /// Its notAfter, as the certificate states it.
        not_after: String,
    },
    /// The certificate's validity starts after now (a wrong clock or an early deploy).
    #[error("tls.certificates cert {cert} is not valid before {not_before} (notBefore); check the clock or the certificate")]
    NotYetValid {
        /// The `cert` file.
        cert: PathBuf,
        /// Its notBefore, as the certificate states it.
        not_before: String,
    },
    /// The `client_ca` bundle cannot serve as the roots that verify client certificates.
    #[error("tls.client_ca {path} cannot be used: {reason}")]
    ClientCa {
        /// The `client_ca` file.
        path: PathBuf,
        /// What rustls says is wrong with it.
        reason: String,
    },
    /// rustls refuses the combination of settings (versions, client verifier).
    #[error("cannot build the TLS settings: {0}")]
    Settings(String),
}

/// A problem `lb check` finds in the files lb.toml names for TLS.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The `[tls]` certificate pairs or client CA cannot be loaded.
    #[error(transparent)]
    Certificates(#[from] Error),
    /// A pool's `backend_tls` cannot be built.
    #[error("pool {pattern:?}: {error}")]
    Backend {
        /// The pool's pattern, naming it in lb.toml.
        pattern: String,
        /// What is wrong with its `backend_tls`.
        error: BackendTlsError,
    },
}

/// What `lb check` verifies beyond lb.toml itself: the `[tls]` pairs and client CA, as a start
/// or reload would load them, and each pool's `backend_tls.ca`. Returns every problem.
pub fn check_files(config: &crate::config::Config) -> Vec<CheckError> {
    let mut problems = Vec::new();
    if let Some(settings) = &config.tls {
        if let Err(error) = build(settings, now_unix()) {
            problems.push(CheckError::Certificates(error));
        }
    }
    for pool in &config.pools {
        if let Some(backend_tls) = pool.backend_tls.as_ref().filter(|t| t.ca.is_some()) {
            if let Err(error) = backend_client_config(backend_tls) {
                problems.push(CheckError::Backend {
                    pattern: pool.pattern.clone(),
                    error,
                });
            }
        }
    }
    problems
}

/// One loaded certificate as `/status.json`, `lbctl status` and the metrics show it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CertificateInfo {
    /// The `cert` file it came from.
    pub cert: PathBuf,
    /// Its SAN DNS names, lowercase, as SNI matches them.
    pub names: Vec<String>,
    /// Start of its validity (notBefore), in Unix seconds.
    pub not_before_unix: i64,
    /// End of its validity (notAfter), in Unix seconds; the expiry metric reports it.
    pub not_after_unix: i64,
    /// Served to clients with no SNI or an unknown name (unless `unknown_sni = "refuse"`).
    pub default: bool,
}

/// The data plane's TLS settings as of the last good load; see the module doc.
pub struct Store {
    current: ArcSwap<Loaded>,
    /// Why the last reload was refused; cleared by the next one that reads good files (the
    /// ones being served included), so a fixed renewal no longer reads as failing.
    failure: ArcSwapOption<ReloadFailure>,
    /// Reloads refused since start, for `lb_tls_reload_failures_total`.
    failures: AtomicU64,
}

/// A refused reload of the certificate files: the previous ones are still served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadFailure {
    /// Why, naming the file.
    pub error: String,
    /// When this error was first seen (Unix seconds); a retry failing the same way keeps it.
    pub since_unix: i64,
}

/// One build: the rustls config and what it was made of.
struct Loaded {
    server_config: Arc<ServerConfig>,
    /// The resolver inside `server_config`, typed, so tests can ask it directly.
    #[cfg(test)]
    resolver: Arc<SniResolver>,
    settings: TlsConfig,
    certificates: Vec<CertificateInfo>,
    /// SHA-256 over the settings and every file's bytes: a reload that reads the same bytes
    /// keeps the running config (and its session cache) instead of swapping in an equal one.
    fingerprint: [u8; 32],
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let current = self.current.load();
        f.debug_struct("Store")
            .field("certificates", &current.certificates)
            .finish_non_exhaustive()
    }
}

// === impl Store ===

impl Store {
    /// Reads and checks every file of `settings` and builds the server config.
    pub fn load(settings: &TlsConfig) -> Result<Store, Error> {
        let loaded = build(settings, now_unix())?;
        log_loaded(&loaded);
        Ok(Store {
            current: ArcSwap::from_pointee(loaded),
            failure: ArcSwapOption::empty(),
            failures: AtomicU64::new(0),
        })
    }

    /// Why the last reload was refused, while no later one has read good files.
    pub fn last_failure(&self) -> Option<Arc<ReloadFailure>> {
        self.failure.load_full()
    }

    /// Reloads refused since start.
    pub fn reload_failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Rebuilds from `settings` and the files as they are now. On any error the running config
    /// stays as it is and the error names the file.
    pub fn reload(&self, settings: &TlsConfig) -> Result<(), Error> {
        self.reload_at(settings, now_unix()).map(|_| ())
    }

    /// [`reload`](Self::reload) at a given time; `true` when a new config was swapped in.
    fn reload_at(&self, settings: &TlsConfig, now: i64) -> Result<bool, Error> {
        let loaded = match build(settings, now) {
            Ok(loaded) => loaded,
            Err(error) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                let error_text = error.to_string();
                let since_unix = match self.failure.load_full() {
                    Some(previous) if previous.error == error_text => previous.since_unix,
                    _ => now,
                };
                self.failure.store(Some(Arc::new(ReloadFailure {
                    error: error_text,
                    since_unix,
                })));
                return Err(error);
            }
        };
        self.failure.store(None);
        if loaded.fingerprint == self.current.load().fingerprint {
            return Ok(false);
        }
        log_loaded(&loaded);
        self.current.store(Arc::new(loaded));
        Ok(true)
    }

    /// The config a new handshake uses (one atomic load; a connection keeps the one it got).
    pub fn server_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.current.load().server_config)
    }

    /// The settings the running config was built from.
    pub fn settings(&self) -> TlsConfig {
        self.current.load().settings.clone()
    }

    /// The certificates the running config serves, for status and metrics.
    pub fn certificates(&self) -> Vec<CertificateInfo> {
        self.current.load().certificates.clone()
    }
}

fn log_loaded(loaded: &Loaded) {
    for cert in &loaded.certificates {
        tracing::info!(cert = %cert.cert.display(), names = ?cert.names, not_after_unix = cert.not_after_unix, "tls certificate loaded");
    }
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The ring provider, as tonic's control listener uses.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every pair, checks it at time `now` and builds the server config.
fn build(settings: &TlsConfig, now: i64) -> Result<Loaded, Error> {
    let provider = provider();
    let mut hasher = Sha256::new();
    hasher.update(format!("{settings:?}").as_bytes());
    let mut resolver = SniResolver::default();
    let mut certificates = Vec::with_capacity(settings.certificates.len());
    let default_files = settings.default_certificate();
    for files in &settings.certificates {
        let pair = Pair::read(files, &provider, now, &mut hasher)?;
        let is_default = default_files == Some(files);
        let key = Arc::new(pair.key);
        for name in &pair.names {
            resolver.insert(name, &key);
        }
        if is_default && settings.unknown_sni == UnknownSni::Default {
            resolver.default = Some(Arc::clone(&key));
        }
        certificates.push(CertificateInfo {
            cert: files.cert.clone(),
            names: pair.names,
            not_before_unix: pair.not_before,
            not_after_unix: pair.not_after,
            default: is_default,
        });
    }
    let versions: &[&rustls::SupportedProtocolVersion] = match settings.min_version {
        TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::V1_3 => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions)
        .map_err(|e| Error::Settings(e.to_string()))?;
    let builder = match &settings.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let bytes = pem::read(path, "tls.client_ca")?;
            hasher.update(&bytes);
            let mut roots = RootCertStore::empty();
            for cert in pem::certificates_in(&bytes, path, "tls.client_ca")? {
                roots.add(cert).map_err(|e| Error::ClientCa {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| Error::ClientCa {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let resolver = Arc::new(resolver);
    let mut server_config =
        builder.with_cert_resolver(Arc::clone(&resolver) as Arc<dyn ResolvesServerCert>);
    server_config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Loaded {
        server_config: Arc::new(server_config),
        #[cfg(test)]
        resolver,
        settings: settings.clone(),
        certificates,
        fingerprint: hasher.finalize().into(),
    })
}

/// A checked certificate chain with its signing key.
struct Pair {
    key: CertifiedKey,
    names: Vec<String>,
    not_before: i64,
    not_after: i64,
}

impl Pair {
    /// Reads `files`, checks that the key is the leaf's and that the leaf is valid at `now`.
    fn read(
        files: &CertificateFiles,
        provider: &CryptoProvider,
        now: i64,
        hasher: &mut Sha256,
    ) -> Result<Pair, Error> {
        let cert_bytes = pem::read(&files.cert, "tls.certificates cert")?;
        let chain = pem::certificates_in(&cert_bytes, &files.cert, "tls.certificates cert")?;
        warn_if_readable_by_others(&files.key);
        let key_bytes = pem::read(&files.key, "tls.certificates key")?;
        let key_der = pem::key_in(&key_bytes, &files.key, "tls.certificates key")?;
        hasher.update(&cert_bytes);
        hasher.update(&key_bytes);

        let leaf = Leaf::parse(&chain[0], &files.cert)?;
        if now < leaf.not_before {
            return Err(Error::NotYetValid {
                cert: files.cert.clone(),
                not_before: leaf.not_before_text,
            });
        }
        if now > leaf.not_after {
            return Err(Error::Expired {
                cert: files.cert.clone(),
                not_after: leaf.not_after_text,
            });
        }
        let signing_key = provider
            .key_provider
            .load_private_key(key_der)
            .map_err(|e| Error::Key {
                key: files.key.clone(),
                reason: e.to_string(),
            })?;
        let key = CertifiedKey::new(chain, signing_key);
        match key.keys_match() {
            Ok(()) => {}
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
                return Err(Error::KeyMismatch {
                    cert: files.cert.clone(),
                    key: files.key.clone(),
                })
            }
            // ring's keys all know their public key; an unknown answer is not a mismatch.
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(e) => {
                return Err(Error::Certificate {
                    cert: files.cert.clone(),
                    reason: e.to_string(),
                })
            }
        }
        Ok(Pair {
            key,
            names: leaf.names,
            not_before: leaf.not_before,
            not_after: leaf.not_after,
        })
    }
}

/// What lb reads from a leaf certificate (x509-parser: rustls-webpki checks chains but does not
/// expose the validity window or the SAN list).
struct Leaf {
    names: Vec<String>,
    not_before: i64,
    not_after: i64,
    not_before_text: String,
    not_after_text: String,
}

/// The subject of a certificate as RFC 4514 writes a distinguished name (`CN=alice, O=Ops`),
/// for the access log of a client that presented it; `None` when it does not parse (the
/// handshake verified it, so that does not happen) or names nothing.
pub fn subject_of(der: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject().to_string();
    (!subject.is_empty()).then_some(subject)
}

impl Leaf {
    fn parse(der: &CertificateDer<'_>, path: &Path) -> Result<Leaf, Error> {
        let error = |reason: String| Error::Certificate {
            cert: path.to_path_buf(),
            reason,
        };
        let (_, cert) =
            x509_parser::parse_x509_certificate(der).map_err(|e| error(e.to_string()))?;
        let validity = cert.validity();
        let mut names = Vec::new();
        if let Some(san) = cert
            .subject_alternative_name()
            .map_err(|e| error(e.to_string()))?
        {
            for name in &san.value.general_names {
                if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                    let dns = dns.to_ascii_lowercase();
                    if !names.contains(&dns) {
                        names.push(dns);
                    }
                }
            }
        }
        Ok(Leaf {
            names,
            not_before: validity.not_before.timestamp(),
            not_after: validity.not_after.timestamp(),
            not_before_text: validity.not_before.to_string(),
            not_after_text: validity.not_after.to_string(),
        })
    }
}

/// A private key file that group or others may read is a warning, as ssh says of its keys:
/// a renewal tool or a Secret mount that left it 0644 exposes the key to every local user.
fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    key = %path.display(),
                    mode = format!("{mode:o}"),
                    "tls key file is readable by group or others; chmod 600 (or 640 with a group only lb is in)"
                );
            }
        }
    }
}

/// Picks a certificate by SNI; see the module doc for the rules.
#[derive(Default)]
struct SniResolver {
    /// Lowercase full names.
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` kept as `example.com`: what the one wildcard label may stand before.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    /// For no SNI or an unknown name; `None` refuses the handshake.
    default: Option<Arc<CertifiedKey>>,
}

impl std::fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: a CertifiedKey holds the signing key.
        f.debug_struct("SniResolver")
            .field("exact", &self.exact.keys().collect::<Vec<_>>())
            .field("wildcard", &self.wildcard.keys().collect::<Vec<_>>())
            .field("default", &self.default.is_some())
            .finish()
    }
}

// === impl SniResolver ===

impl SniResolver {
    /// Adds `name` (lowercase); the first certificate listed keeps a name two of them share.
    fn insert(&mut self, name: &str, key: &Arc<CertifiedKey>) {
        let (map, name) = match name.strip_prefix("*.") {
            Some(parent) => (&mut self.wildcard, parent),
            None => (&mut self.exact, name),
        };
        map.entry(name.to_owned())
            .or_insert_with(|| Arc::clone(key));
    }

    /// The certificate for `server_name`, by exact name, then by wildcard, then the default.
    fn pick(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let found = server_name.and_then(|name| {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            self.exact.get(&name).or_else(|| {
                let (label, parent) = name.split_once('.')?;
                if label.is_empty() {
                    return None;
                }
                self.wildcard.get(parent)
            })
        });
        found.or(self.default.as_ref()).cloned()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.pick(hello.server_name())
    }
}

#[cfg(test)]
mod tests;
