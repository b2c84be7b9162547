//! config: owns lb.toml — its typed model, parsing with line:col diagnostics, validation,
//! comment-preserving edits and atomic writes. It never touches the running topology or health.
//!
//! - `model`: the validated, typed configuration and its defaults.
//! - `parse`: text -> [`Config`], every error as a [`Diagnostic`] with a position.
//! - `edit`: smallest-diff text edits used by the control API (toml_edit).
//! - `write`: atomic replacement of the file on disk.
//! - `keys`: the key paths the parser accepts, for the reference's test.
//! - `diff`: what differs between two configs, key by key (`lbctl plan`, the reload log).

pub mod diff;
mod duration;
pub mod edit;
mod keys;
mod model;
mod parse;
pub mod write;

pub use duration::{format_duration, parse_duration};
pub use model::{
    AccessLog, AdminState, BackendAddr, BackendAddrError, BackendConfig, BackendTls, CanaryConfig,
    CertificateFiles, Cidr, CidrError, Config, Control, ControlTls, HealthCheck, HealthChecks,
    Listen, Log, OnFailure, OnSuccess, PoolConfig, PoolType, RateLimitConfig, RateLimitKey,
    RolloutAt, RolloutConfig, RolloutProgress, RolloutState, Server, Share, Sticky, SyncConfig,
    TlsConfig, TlsVersion, UnknownSni, DEFAULT_BAKE, DEFAULT_CHECK_TIMEOUT,
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_DOWN_INTERVAL, DEFAULT_IDLE_TIMEOUT, DEFAULT_INTERVAL,
    DEFAULT_MAX_ERROR_INCREASE, DEFAULT_MAX_ERROR_RATE, DEFAULT_MAX_P99_RATIO,
    DEFAULT_MIN_REQUESTS, DEFAULT_REQUEST_TIMEOUT, DEFAULT_SYNC_INTERVAL,
};
pub use parse::{
    backends_at, key_paths, parse, parse_with_spans, refuse_empty, reparse_backends, BackendsSpans,
    Diagnostic,
};

use std::fmt;
use std::path::{Path, PathBuf};

/// Why a config file could not become a [`Config`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file as given.
        path: PathBuf,
        /// Why reading failed.
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is not a valid config.
    #[error("{}", Invalid { path, diagnostics })]
    Invalid {
        /// The file as given.
        path: PathBuf,
        /// Every problem found, in file order.
        diagnostics: Vec<Diagnostic>,
    },
}

/// Displays every diagnostic as `PATH:LINE:COL: message`, one per line.
struct Invalid<'a> {
    path: &'a Path,
    diagnostics: &'a [Diagnostic],
}

impl fmt::Display for Invalid<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}", d.display_with(self.path))?;
        }
        Ok(())
    }
}

/// Reads and validates the file at `path`, returning the config (its relative paths resolved
/// against the file's directory) and the exact text it came from.
pub fn load(path: &Path) -> Result<(Config, String), Error> {
    load_with_spans(path).map(|(config, text, _)| (config, text))
}

/// [`load`], also saying where each pool's `backends` array is in the text.
pub fn load_with_spans(path: &Path) -> Result<(Config, String, BackendsSpans), Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let (mut config, spans) = parse_with_spans(&text).map_err(|diagnostics| Error::Invalid {
        path: path.to_path_buf(),
        diagnostics,
    })?;
    config.resolve_paths(path);
    Ok((config, text, spans))
}

#[cfg(test)]
mod tests;
