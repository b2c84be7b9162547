//! apply: owns the one path by which lb.toml text becomes the running [`Topology`]:
//! read → parse → validate → build → swap → reconcile checkers. The file watcher and every
//! control-API mutation go through it, serialised by one writer lock. It never serves requests.
//!
//! Mutations edit the file's *text* (so comments survive), write it atomically, and then apply
//! the written text exactly as a human save would be applied. The file is the only truth.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use crate::config::edit::{self, EditError, PoolSpec};
use crate::config::write::{self, WriteError};
use crate::config::{self, BackendAddr, Config, Diagnostic};
use crate::health::{self, Checkers, ProbeClient};
use crate::metrics::Global;
use crate::proxy::Upstream;
use crate::topology::{Backend, BackendKey, CheckSettings, Pool, SharedTopology, Topology};

/// The parts of the config that only take effect when lb starts.
#[derive(Debug, Clone)]
pub struct Startup {
    pub listen: config::Listen,
    pub server: config::Server,
    pub control: config::Control,
}

/// A change requested through the control API.
#[derive(Debug, Clone)]
pub enum Mutation {
    AddPool {
        pattern: String,
        spec: PoolSpec,
    },
    RemovePool {
        pattern: String,
    },
    AddBackend {
        pattern: String,
        backend: BackendAddr,
    },
    RemoveBackend {
        pattern: String,
        backend: BackendAddr,
    },
}

/// Why a mutation changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum MutateError {
    #[error("no pool {pattern:?}")]
    PoolNotFound { pattern: String },
    #[error("pool {pattern:?} already exists")]
    PoolExists { pattern: String },
    #[error("pool {pattern:?} has no backend {backend}")]
    BackendNotFound {
        pattern: String,
        backend: BackendAddr,
    },
    #[error("pool {pattern:?} already has backend {backend}")]
    BackendExists {
        pattern: String,
        backend: BackendAddr,
    },
    #[error("backend {backend} failed its health check, not added: {reason}")]
    BackendUnhealthy {
        backend: BackendAddr,
        reason: String,
    },
    #[error("the change would make the config invalid: {}", join(diagnostics))]
    Rejected { diagnostics: Vec<Diagnostic> },
    #[error(
        "{path} is currently invalid; fix or revert it first: {}",
        join(diagnostics)
    )]
    FileInvalid {
        path: PathBuf,
        diagnostics: Vec<Diagnostic>,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Edit(#[from] EditError),
    #[error(transparent)]
    Write(#[from] WriteError),
}

fn join(diagnostics: &[Diagnostic]) -> String {
    diagnostics
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// What the last reload attempt did; read by status APIs and metrics.
#[derive(Debug, Clone)]
pub struct Status {
    pub generation: u64,
    /// SHA-256 of the applied file content, lowercase hex.
    pub content_hash: String,
    pub applied_at: SystemTime,
    /// The last reload error (every diagnostic as `PATH:LINE:COL: message`), cleared by the
    /// next successful apply.
    pub last_error: Option<String>,
}

/// How a reload from disk ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reloaded {
    Applied {
        generation: u64,
    },
    /// The file's content equals what is applied (e.g. lb's own write-back).
    Unchanged,
    /// The file still holds the content last rejected; the error was reported then.
    StillInvalid,
}

pub struct Applier {
    path: PathBuf,
    topology: SharedTopology,
    status: ArcSwap<Status>,
    /// The writer lock: whoever holds it is the only one reading-for-edit, writing and applying.
    state: Mutex<WriterState>,
    probe_client: ProbeClient,
    /// Process-wide counters; reload outcomes are recorded here, the proxy records the rest.
    metrics: Arc<Global>,
}

struct WriterState {
    checkers: Checkers,
    /// One client per distinct connect timeout, reused by every topology.
    upstreams: HashMap<Duration, Upstream>,
    applied_hash: Option<[u8; 32]>,
    /// The last content that failed to parse, so a broken file is reported once, not per poll.
    rejected_hash: Option<[u8; 32]>,
}

impl Applier {
    /// Loads `path` once; fails when it cannot be read or is invalid.
    pub async fn load(path: &Path) -> Result<(Arc<Applier>, Startup), config::Error> {
        let (config, text) = config::load(path)?;
        let applier = Arc::new(Applier {
            path: path.to_path_buf(),
            topology: Arc::new(ArcSwap::from_pointee(Topology::empty())),
            status: ArcSwap::from_pointee(Status {
                generation: 0,
                content_hash: String::new(),
                applied_at: SystemTime::now(),
                last_error: None,
            }),
            state: Mutex::new(WriterState {
                checkers: Checkers::default(),
                upstreams: HashMap::new(),
                applied_hash: None,
                rejected_hash: None,
            }),
            probe_client: health::probe_client(),
            metrics: Arc::default(),
        });
        // Settings that only take effect at start are returned to the caller; the pools go into
        // the first topology.
        let startup = Startup {
            listen: config.listen.clone(),
            server: config.server.clone(),
            control: config.control.clone(),
        };
        let mut state = applier.state.lock().await;
        applier.apply(&mut state, config, &text, &[]);
        drop(state);
        Ok((applier, startup))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The handle the proxy reads.
    pub fn topology(&self) -> &SharedTopology {
        &self.topology
    }

    pub fn metrics(&self) -> &Arc<Global> {
        &self.metrics
    }

    pub fn status(&self) -> Arc<Status> {
        self.status.load_full()
    }

    /// Number of running health checkers (for leak checks and metrics).
    pub async fn n_checkers(&self) -> usize {
        self.state.lock().await.checkers.len()
    }

    /// Re-reads the file and applies it if its content changed. An invalid file changes nothing
    /// and is kept as the last error.
    pub async fn reload(&self) -> Result<Reloaded, config::Error> {
        let mut state = self.state.lock().await;
        let text = std::fs::read_to_string(&self.path).map_err(|source| config::Error::Read {
            path: self.path.clone(),
            source,
        });
        let result = text.and_then(|text| {
            let hash = sha256(&text);
            if state.applied_hash == Some(hash) {
                return Ok(Reloaded::Unchanged);
            }
            if state.rejected_hash == Some(hash) {
                return Ok(Reloaded::StillInvalid);
            }
            let config = config::parse(&text).map_err(|diagnostics| {
                state.rejected_hash = Some(hash);
                config::Error::Invalid {
                    path: self.path.clone(),
                    diagnostics,
                }
            })?;
            Ok(Reloaded::Applied {
                generation: self.apply(&mut state, config, &text, &[]),
            })
        });
        match &result {
            Ok(Reloaded::Applied { .. }) => {
                self.metrics.reloads_ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.metrics.reloads_error.fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => {}
        }
        if let Err(e) = &result {
            let mut status = Status::clone(&self.status.load());
            status.last_error = Some(e.to_string());
            self.status.store(Arc::new(status));
        }
        result
    }

    /// Applies one control-API change: re-read the file (a person may have saved since the last
    /// reload), edit its text, write it atomically, then apply what was written. On any error
    /// neither the file nor the running state changes.
    pub async fn mutate(&self, mutation: Mutation) -> Result<u64, MutateError> {
        let mut state = self.state.lock().await;
        let read = || {
            std::fs::read_to_string(&self.path).map_err(|source| MutateError::Read {
                path: self.path.clone(),
                source,
            })
        };
        let mut text = read()?;
        // A human save that lands between our read and our rename would be overwritten; re-read
        // just before writing and redo the edit on the newer text when it changed.
        let mut attempts = 0;
        let (new_text, config, seeds) = loop {
            let current = config::parse(&text).map_err(|diagnostics| MutateError::FileInvalid {
                path: self.path.clone(),
                diagnostics,
            })?;
            let (new_text, seeds) = self.edit(&current, &text, &mutation).await?;
            let config = config::parse(&new_text)
                .map_err(|diagnostics| MutateError::Rejected { diagnostics })?;
            let latest = read()?;
            attempts += 1;
            if latest == text || attempts >= 3 {
                break (new_text, config, seeds);
            }
            text = latest;
        };
        write::write_atomic(&self.path, &new_text)?;
        Ok(self.apply(&mut state, config, &new_text, &seeds))
    }

    /// Computes the edited text, checking existence against the file as it is now. Returns the
    /// backends that were just probed healthy, so they take traffic as soon as the RPC returns.
    async fn edit(
        &self,
        current: &Config,
        text: &str,
        mutation: &Mutation,
    ) -> Result<(String, Vec<BackendKey>), MutateError> {
        let pool = |pattern: &str| {
            current
                .pool(pattern)
                .ok_or_else(|| MutateError::PoolNotFound {
                    pattern: pattern.to_owned(),
                })
        };
        match mutation {
            Mutation::AddPool { pattern, spec } => {
                if current.pool(pattern).is_some() {
                    return Err(MutateError::PoolExists {
                        pattern: pattern.clone(),
                    });
                }
                Ok((edit::add_pool(text, pattern, spec)?, Vec::new()))
            }
            Mutation::RemovePool { pattern } => {
                pool(pattern)?;
                Ok((edit::remove_pool(text, pattern)?, Vec::new()))
            }
            Mutation::AddBackend { pattern, backend } => {
                let pool = pool(pattern)?;
                if pool.backends.contains(backend) {
                    return Err(MutateError::BackendExists {
                        pattern: pattern.clone(),
                        backend: backend.clone(),
                    });
                }
                health::probe(&self.probe_client, backend.addr, &pool.health_checks)
                    .await
                    .map_err(|reason| MutateError::BackendUnhealthy {
                        backend: backend.clone(),
                        reason,
                    })?;
                let seed = BackendKey {
                    pattern: Arc::from(pattern.as_str()),
                    backend: backend.clone(),
                };
                Ok((
                    edit::add_backend(text, pattern, &backend.to_string())?,
                    vec![seed],
                ))
            }
            Mutation::RemoveBackend { pattern, backend } => {
                if !pool(pattern)?.backends.contains(backend) {
                    return Err(MutateError::BackendNotFound {
                        pattern: pattern.clone(),
                        backend: backend.clone(),
                    });
                }
                let matches = |entry: &str| entry.parse::<BackendAddr>().as_ref() == Ok(backend);
                Ok((edit::remove_backend(text, pattern, &matches)?, Vec::new()))
            }
        }
    }

    /// Builds the next topology from a valid config, swaps it in, and reconciles the checkers.
    /// Backends that stay declared keep their `Arc<Backend>`: health, in-flight and pooled
    /// connections survive. `seeds` start healthy (they were probed a moment ago).
    fn apply(
        &self,
        state: &mut WriterState,
        config: Config,
        text: &str,
        seeds: &[BackendKey],
    ) -> u64 {
        let generation = self.status.load().generation + 1;
        let mut wanted = Vec::new();
        let pools = config
            .pools
            .iter()
            .map(|pool_config| {
                let pattern: Arc<str> = Arc::from(pool_config.pattern.as_str());
                let settings = CheckSettings::of(pool_config);
                let backends = pool_config
                    .backends
                    .iter()
                    .map(|addr| {
                        let key = BackendKey {
                            pattern: Arc::clone(&pattern),
                            backend: addr.clone(),
                        };
                        let backend = match state.checkers.backend(&key) {
                            Some(existing) => Arc::clone(existing),
                            None => Arc::new(Backend::new(addr.clone(), seeds.contains(&key))),
                        };
                        wanted.push((key, Arc::clone(&backend), settings.clone()));
                        backend
                    })
                    .collect();
                let upstream = state
                    .upstreams
                    .entry(pool_config.connect_timeout)
                    .or_insert_with(|| Upstream::new(pool_config.connect_timeout))
                    .clone();
                Pool {
                    upstream,
                    pattern,
                    pool_type: pool_config.pool_type,
                    connect_timeout: pool_config.connect_timeout,
                    request_timeout: pool_config.request_timeout,
                    retries: pool_config.retries,
                    backends,
                }
            })
            .collect();
        self.topology.store(Arc::new(Topology {
            generation,
            routes: config.routes,
            pools,
        }));
        state.checkers.reconcile(wanted, &self.probe_client);
        let hash = sha256(text);
        state.applied_hash = Some(hash);
        self.status.store(Arc::new(Status {
            generation,
            content_hash: hex(&hash),
            applied_at: SystemTime::now(),
            last_error: None,
        }));
        tracing::info!(generation, path = %self.path.display(), "config applied");
        generation
    }
}

fn sha256(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
