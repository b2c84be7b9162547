//! apply: owns the one path by which lb.toml text becomes the running [`Topology`]:
//! read → parse → validate → build → swap → reconcile checkers. The file watcher and every
//! control-API mutation go through it, serialised by one writer lock. It never serves requests.
//!
//! Mutations edit the file's *text* (so comments survive), write it atomically, and then apply
//! the written text exactly as a human save would be applied. The file is the only truth.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::{ArcSwap, ArcSwapOption};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use crate::config::edit::{self, EditError, Edited, PoolSpec};
use crate::config::write::{self, WriteError};
use crate::config::{self, AdminState, BackendAddr, BackendsSpans, Config, Diagnostic, PoolConfig};
use crate::health::{self, Checkers, ProbeClient};
use crate::metrics::Global;
use crate::topology::{Backend, BackendKey, CheckSettings, Pool, SharedTopology, Topology};

/// The parts of the config that only take effect when lb starts.
#[derive(Debug, Clone)]
pub struct Startup {
    pub listen: config::Listen,
    pub server: config::Server,
    pub control: config::Control,
    /// The data plane's `[tls]` at start; `tls::watch` follows its later changes.
    pub tls: Option<config::TlsConfig>,
}

/// The settings read once at start, as the file has them (before any flag overrides them).
#[derive(Debug, Clone, PartialEq, Eq)]
struct StartOnly {
    listen: config::Listen,
    server: config::Server,
    token_file: Option<PathBuf>,
    tls: Option<config::ControlTls>,
    log: config::Log,
}

impl StartOnly {
    fn of(config: &Config) -> StartOnly {
        StartOnly {
            listen: config.listen.clone(),
            server: config.server.clone(),
            token_file: config.control.token_file.clone(),
            tls: config.control.tls.clone(),
            log: config.log.clone(),
        }
    }

    /// The keys whose value in `now` differs from `self`, in file order.
    fn changed(&self, now: &StartOnly) -> Vec<&'static str> {
        let (a, b) = (self, now);
        [
            ("listen.http", a.listen.http != b.listen.http),
            ("listen.grpc", a.listen.grpc != b.listen.grpc),
            ("listen.admin", a.listen.admin != b.listen.admin),
            (
                "server.header_timeout",
                a.server.header_timeout != b.server.header_timeout,
            ),
            (
                "server.drain_timeout",
                a.server.drain_timeout != b.server.drain_timeout,
            ),
            (
                "server.idle_timeout",
                a.server.idle_timeout != b.server.idle_timeout,
            ),
            (
                "server.max_connections",
                a.server.max_connections != b.server.max_connections,
            ),
            ("server.workers", a.server.workers != b.server.workers),
            ("control.token_file", a.token_file != b.token_file),
            (
                "control.tls_cert",
                a.tls.as_ref().map(|t| &t.cert) != b.tls.as_ref().map(|t| &t.cert),
            ),
            (
                "control.tls_key",
                a.tls.as_ref().map(|t| &t.key) != b.tls.as_ref().map(|t| &t.key),
            ),
            (
                "control.client_ca",
                a.tls.as_ref().and_then(|t| t.client_ca.as_ref())
                    != b.tls.as_ref().and_then(|t| t.client_ca.as_ref()),
            ),
            ("log.access", a.log.access != b.log.access),
            ("log.format", a.log.json != b.log.json),
        ]
        .into_iter()
        .filter_map(|(key, changed)| changed.then_some(key))
        .collect()
    }
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
    /// Drain, disable or re-enable a declared backend (a one-line edit of its entry).
    SetBackendState {
        pattern: String,
        backend: BackendAddr,
        state: AdminState,
    },
}

impl Mutation {
    /// The pool it changes.
    pub fn pattern(&self) -> &str {
        match self {
            Mutation::AddPool { pattern, .. }
            | Mutation::RemovePool { pattern }
            | Mutation::AddBackend { pattern, .. }
            | Mutation::RemoveBackend { pattern, .. }
            | Mutation::SetBackendState { pattern, .. } => pattern,
        }
    }

    /// The RPC-style name, for logs and commit messages.
    pub fn describe(&self) -> String {
        match self {
            Mutation::AddPool { pattern, .. } => format!("AddPool {pattern}"),
            Mutation::RemovePool { pattern } => format!("RemovePool {pattern}"),
            Mutation::AddBackend { pattern, backend } => format!("AddBackend {pattern} {backend}"),
            Mutation::RemoveBackend { pattern, backend } => {
                format!("RemoveBackend {pattern} {backend}")
            }
            Mutation::SetBackendState {
                pattern,
                backend,
                state,
            } => {
                let verb = match state {
                    AdminState::Enabled => "EnableBackend",
                    AdminState::Drain => "DrainBackend",
                    AdminState::Disabled => "DisableBackend",
                };
                format!("{verb} {pattern} {backend}")
            }
        }
    }
}

/// Optimistic concurrency: apply a mutation only if the file is still what the caller saw.
#[derive(Debug, Clone, Default)]
pub struct Precondition {
    /// SHA-256 (hex) of the file content the caller last read (from status or PoolHealth).
    pub content_hash: Option<String>,
    /// The applied generation the caller last read.
    pub generation: Option<u64>,
}

/// Who asked for a mutation and under what condition.
#[derive(Debug, Clone, Default)]
pub struct MutateOptions {
    pub precondition: Precondition,
    /// The caller's name (gRPC `x-lb-actor`), recorded in git commits.
    pub actor: Option<String>,
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
    #[error("the file changed since you read it ({reason}); re-read status and retry")]
    Aborted { reason: String },
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
    /// The file no longer holds what the watcher saw settle: another save is under way, and its
    /// own event reloads it (see [`Applier::reload_settled`]).
    Moving,
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
    /// Health transitions, for `WatchHealth`.
    events: health::Events,
    /// How the file looked on disk right after lb's own last write, while it is the applied
    /// content: the watcher compares a `stat` with it instead of re-reading and re-hashing the
    /// file for the event lb's own rename produces. Outside the writer lock so that check never
    /// waits for (or delays) a mutation.
    written: ArcSwapOption<Stamp>,
}

/// What `stat` says about a file: enough to tell that it is still the very file lb wrote.
/// Any write or rename over it changes the inode, the size or the change time (which no
/// user call can set); the one blind spot is an in-place write of the same length in the
/// same timestamp tick as lb's rename, which the watcher's periodic full re-read catches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    /// The stamp of what `path` designates now (symlinks followed), when it can be had.
    #[cfg(unix)]
    fn of(path: &Path) -> Option<Stamp> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        Some(Stamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }

    /// Without a change time to rely on, never: every event is a full re-read.
    #[cfg(not(unix))]
    fn of(_path: &Path) -> Option<Stamp> {
        None
    }
}

struct WriterState {
    /// The start-only settings of the first config applied: what this process runs with.
    started_with: Option<StartOnly>,
    /// The start-only keys the file last differed in from `started_with`, so a reload says
    /// "restart needed" once per change rather than on every save.
    restart_pending: Vec<&'static str>,
    checkers: Checkers,
    applied_hash: Option<[u8; 32]>,
    /// The config of the applied file (its routes moved into the topology): a mutation of
    /// unchanged text checks existence against it instead of parsing the file again, and a
    /// backend edit re-validates only the edited pool against it (`config::reparse_backends`).
    applied: Option<Config>,
    /// Where each applied pool's `backends` array is in the applied text (parallel to
    /// `applied.pools`): a backend edit of unchanged text finds its array there instead of
    /// parsing the whole file.
    backends_spans: BackendsSpans,
    /// The last content that failed to parse, so a broken file is reported once, not per poll.
    rejected_hash: Option<[u8; 32]>,
}

impl Applier {
    /// Loads `path` once; fails when it cannot be read or is invalid.
    pub async fn load(path: &Path) -> Result<(Arc<Applier>, Startup), config::Error> {
        let (config, text, spans) = config::load_with_spans(path)?;
        let (events, _) = tokio::sync::broadcast::channel(1024);
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
                started_with: None,
                restart_pending: Vec::new(),
                checkers: Checkers::new(events.clone()),
                applied_hash: None,
                applied: None,
                backends_spans: Vec::new(),
                rejected_hash: None,
            }),
            probe_client: health::probe_client(),
            metrics: Arc::default(),
            events,
            written: ArcSwapOption::empty(),
        });
        // Settings that only take effect at start are returned to the caller; the pools go into
        // the first topology.
        let startup = Startup {
            listen: config.listen.clone(),
            server: config.server.clone(),
            control: config.control.clone(),
            tls: config.tls.clone(),
        };
        let mut state = applier.state.lock().await;
        applier.apply(&mut state, (config, spans), &text, &[], None);
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

    /// A receiver of health transitions from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<health::HealthEvent> {
        self.events.subscribe()
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

    /// Whether the file on disk is, by `stat`, exactly the one lb itself last wrote and applied:
    /// then a watcher event is lb's own rename and there is nothing to re-read. A cheap check
    /// that takes no lock; `false` whenever in doubt.
    pub fn is_own_write(&self) -> bool {
        let recorded = self.written.load();
        recorded
            .as_deref()
            .is_some_and(|recorded| Stamp::of(&self.path).as_ref() == Some(recorded))
    }

    /// Re-reads the file and applies it if its content changed. An invalid file changes nothing
    /// and is kept as the last error.
    pub async fn reload(&self) -> Result<Reloaded, config::Error> {
        self.reload_settled(None).await
    }

    /// [`Applier::reload`], applying only the `settled` content the watcher saw hold still.
    ///
    /// NOTE: the watcher waits for a save to settle and this reads the file again, under the
    /// writer lock; a save that starts in between (an in-place one truncates first) would
    /// otherwise be read half-done, and an empty or cut-off file is often valid TOML with fewer
    /// pools (seen under load: a reload test's requests got 404 for a moment).
    pub async fn reload_settled(&self, settled: Option<&[u8]>) -> Result<Reloaded, config::Error> {
        let mut state = self.state.lock().await;
        let text = std::fs::read_to_string(&self.path).map_err(|source| config::Error::Read {
            path: self.path.clone(),
            source,
        });
        let result = text.and_then(|text| {
            if settled.is_some_and(|settled| settled != text.as_bytes()) {
                return Ok(Reloaded::Moving);
            }
            let hash = sha256(&text);
            if state.applied_hash == Some(hash) {
                return Ok(Reloaded::Unchanged);
            }
            if state.rejected_hash == Some(hash) {
                return Ok(Reloaded::StillInvalid);
            }
            let parsed = config::parse_with_spans(&text).map_err(|diagnostics| {
                state.rejected_hash = Some(hash);
                config::Error::Invalid {
                    path: self.path.clone(),
                    diagnostics,
                }
            })?;
            // What is applied now is someone else's file, not lb's last write.
            self.written.store(None);
            Ok(Reloaded::Applied {
                generation: self.apply(&mut state, parsed, &text, &[], None),
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
    pub async fn mutate(
        &self,
        mutation: Mutation,
        options: &MutateOptions,
    ) -> Result<u64, MutateError> {
        let mut state = self.state.lock().await;
        let read = || {
            std::fs::read_to_string(&self.path).map_err(|source| MutateError::Read {
                path: self.path.clone(),
                source,
            })
        };
        let mut text = read()?;
        self.check_precondition(&state, &text, &options.precondition)?;
        // A human save that lands between our read and our rename would be overwritten; re-read
        // just before writing and redo the edit on the newer text when it changed.
        let mut attempts = 0;
        let (new_text, parsed, only, seeds) = loop {
            let parsed;
            // `is_applied`: `current` is the applied config itself, so a result that differs
            // from it in one pool differs from what runs in that pool only.
            let (current, spans, is_applied) = match &state.applied {
                Some(applied) if state.applied_hash == Some(sha256(&text)) => {
                    (applied, &state.backends_spans, true)
                }
                _ => {
                    parsed = config::parse_with_spans(&text).map_err(|diagnostics| {
                        MutateError::FileInvalid {
                            path: self.path.clone(),
                            diagnostics,
                        }
                    })?;
                    (&parsed.0, &parsed.1, false)
                }
            };
            let known = known_backends_span(current, spans, &text, mutation.pattern());
            let (edited, seeds) = self
                .edit(&current.pools, &text, &mutation, known.clone())
                .await?;
            // A backend edit that replaced only the array at its recorded (and checked) span
            // re-validates that pool alone and moves the recorded spans after it; anything else
            // (or any doubt) is parsed in full, as a human save is, which records them afresh.
            let reparsed = edited
                .backends
                .filter(|span| known.as_ref() == Some(span))
                .and_then(|span| {
                    let new_len = (edited.text.len() + span.len()).checked_sub(text.len())?;
                    let spans = shifted(spans, &span, new_len)?;
                    let index = current
                        .pools
                        .iter()
                        .position(|p| p.pattern == mutation.pattern())?;
                    let config = config::reparse_backends(
                        current,
                        &text,
                        &edited.text,
                        mutation.pattern(),
                        span,
                    )?;
                    Some(((config, spans), index))
                });
            let new_text = edited.text;
            let (parsed, only) = match reparsed {
                Some((parsed, index)) => (parsed, is_applied.then_some(index)),
                None => (
                    config::parse_with_spans(&new_text)
                        .map_err(|diagnostics| MutateError::Rejected { diagnostics })?,
                    None,
                ),
            };
            let latest = read()?;
            attempts += 1;
            if latest == text || attempts >= 3 {
                break (new_text, parsed, only, seeds);
            }
            text = latest;
        };
        // Until the new file is stamped, a watcher event means "re-read".
        self.written.store(None);
        write::write_atomic(&self.path, &new_text)?;
        // Stamped right after the rename. A save landing in between would be taken for ours
        // only if it had the same length too; the watcher's periodic full re-read still
        // catches it (it never trusts the stamp).
        // Recorded before the apply below (which this lock guarantees will follow), so the
        // event of the rename, arriving meanwhile, already finds it.
        self.written.store(
            Stamp::of(&self.path)
                .filter(|s| s.len == new_text.len() as u64)
                .map(Arc::new),
        );
        let git_commit = parsed.0.control.git_commit;
        let generation = self.apply(&mut state, parsed, &new_text, &seeds, only);
        drop(state);
        tracing::info!(generation, change = %mutation.describe(), actor = options.actor.as_deref().unwrap_or("-"), "control API change applied");
        if git_commit {
            crate::history::commit(
                &self.path,
                &mutation.describe(),
                options.actor.as_deref(),
                &self.metrics,
            )
            .await;
        }
        Ok(generation)
    }

    /// ABORTED unless the file on disk and the applied generation are what the caller saw.
    fn check_precondition(
        &self,
        state: &WriterState,
        text: &str,
        precondition: &Precondition,
    ) -> Result<(), MutateError> {
        if let Some(expected) = &precondition.content_hash {
            let actual = hex(&sha256(text));
            if !actual.eq_ignore_ascii_case(expected.trim()) {
                return Err(MutateError::Aborted {
                    reason: format!("content sha256 is {actual}, you expected {expected}"),
                });
            }
        }
        if let Some(expected) = precondition.generation {
            let applied = self.status.load().generation;
            let pending = state.applied_hash != Some(sha256(text));
            if applied != expected || pending {
                return Err(MutateError::Aborted {
                    reason: if pending {
                        "an edit on disk has not been applied yet".to_owned()
                    } else {
                        format!("generation is {applied}, you expected {expected}")
                    },
                });
            }
        }
        Ok(())
    }

    /// Computes the edited text, checking existence against the file as it is now. Returns the
    /// backends that were just probed healthy, so they take traffic as soon as the RPC returns.
    async fn edit(
        &self,
        current: &[PoolConfig],
        text: &str,
        mutation: &Mutation,
        known: Option<std::ops::Range<usize>>,
    ) -> Result<(Edited, Vec<BackendKey>), MutateError> {
        let find = |pattern: &str| current.iter().find(|p| p.pattern == pattern);
        let pool = |pattern: &str| {
            find(pattern).ok_or_else(|| MutateError::PoolNotFound {
                pattern: pattern.to_owned(),
            })
        };
        match mutation {
            Mutation::AddPool { pattern, spec } => {
                if find(pattern).is_some() {
                    return Err(MutateError::PoolExists {
                        pattern: pattern.clone(),
                    });
                }
                Ok((whole(edit::add_pool(text, pattern, spec)?), Vec::new()))
            }
            Mutation::RemovePool { pattern } => {
                pool(pattern)?;
                Ok((whole(edit::remove_pool(text, pattern)?), Vec::new()))
            }
            Mutation::AddBackend { pattern, backend } => {
                let pool = pool(pattern)?;
                if pool.backend(backend).is_some() {
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
                    edit::add_backend_edit(text, pattern, &backend.to_string(), known)?,
                    vec![seed],
                ))
            }
            Mutation::RemoveBackend { pattern, backend } => {
                if pool(pattern)?.backend(backend).is_none() {
                    return Err(MutateError::BackendNotFound {
                        pattern: pattern.clone(),
                        backend: backend.clone(),
                    });
                }
                let matches = |entry: &str| entry.parse::<BackendAddr>().as_ref() == Ok(backend);
                Ok((
                    edit::remove_backend_edit(text, pattern, &matches, known)?,
                    Vec::new(),
                ))
            }
            Mutation::SetBackendState {
                pattern,
                backend,
                state,
            } => {
                let declared = pool(pattern)?.backend(backend).ok_or_else(|| {
                    MutateError::BackendNotFound {
                        pattern: pattern.clone(),
                        backend: backend.clone(),
                    }
                })?;
                if declared.state == *state {
                    // Idempotent: nothing to write, and no need to fail a rollout script.
                    return Ok((whole(text.to_owned()), Vec::new()));
                }
                let matches = |entry: &str| entry.parse::<BackendAddr>().as_ref() == Ok(backend);
                Ok((
                    edit::set_backend_state_edit(text, pattern, &matches, state.as_str(), known)?,
                    Vec::new(),
                ))
            }
        }
    }

    /// Logs when the file's start-only settings (listeners, server limits, control security,
    /// logging) differ from those this process started with: the pools of such a save apply at
    /// once, these stay as they are until lb restarts, and the log says so.
    fn note_start_only(&self, state: &mut WriterState, now: StartOnly) {
        let Some(started_with) = &state.started_with else {
            state.started_with = Some(now);
            return;
        };
        let changed = started_with.changed(&now);
        if changed == state.restart_pending {
            return;
        }
        if changed.is_empty() {
            tracing::info!(path = %self.path.display(), "start-only settings match the running ones again");
        } else {
            tracing::warn!(path = %self.path.display(), keys = %changed.join(", "), "lb.toml changed settings that take effect only at start; restart lb to apply them (the pools were applied)");
        }
        state.restart_pending = changed;
    }

    /// Builds one pool of the next snapshot from its config, reusing the `Arc<Backend>` of every
    /// backend still declared, and reconciles its checkers.
    fn build_pool(
        &self,
        checkers: &mut Checkers,
        pool_config: &PoolConfig,
        seeds: &[BackendKey],
    ) -> Arc<Pool> {
        let pattern: Arc<str> = Arc::from(pool_config.pattern.as_str());
        // One per pool, shared by its checkers: 10,000 backends are not 10,000 clones.
        let settings = Arc::new(CheckSettings::of(pool_config));
        let mut wanted = Vec::with_capacity(pool_config.backends.len());
        let backends = pool_config
            .backends
            .iter()
            .map(|declared| {
                let key = BackendKey {
                    pattern: Arc::clone(&pattern),
                    backend: declared.addr.clone(),
                };
                let backend = match checkers.backend(&key) {
                    Some(existing) => Arc::clone(existing),
                    None => Arc::new(Backend::new(declared.addr.clone(), seeds.contains(&key))),
                };
                backend.set_admin(declared.state);
                // A disabled backend is not checked, and not in rotation until it is
                // re-enabled and passes again.
                let checks = if declared.state == AdminState::Disabled {
                    backend.set_healthy(false);
                    backend.connections.close_all();
                    None
                } else {
                    Some(Arc::clone(&settings))
                };
                wanted.push((key.backend, Arc::clone(&backend), checks));
                backend
            })
            .collect();
        checkers.reconcile_pool(&pattern, wanted, &self.probe_client);
        Arc::new(Pool {
            pattern,
            pool_type: pool_config.pool_type,
            connect_timeout: pool_config.connect_timeout,
            request_timeout: pool_config.request_timeout,
            retries: pool_config.retries,
            backends,
        })
    }

    /// Builds the next topology from a valid config, swaps it in, and reconciles the checkers.
    /// Backends that stay declared keep their `Arc<Backend>`: health, in-flight and pooled
    /// connections survive. `seeds` start healthy (they were probed a moment ago).
    fn apply(
        &self,
        state: &mut WriterState,
        (mut config, spans): (Config, BackendsSpans),
        text: &str,
        seeds: &[BackendKey],
        only: Option<usize>,
    ) -> u64 {
        let generation = self.status.load().generation + 1;
        config.resolve_paths(&self.path);
        self.note_start_only(state, StartOnly::of(&config));
        // The running snapshot's pools by pattern, each with the config it was built from (the
        // two lists are built together, in file order), so unchanged pools carry over whole.
        let previous = self.topology.load_full();
        let applied_pools = state.applied.as_ref().map_or(&[][..], |c| &c.pools[..]);
        // The caller knows only pool `only` may differ from the applied config (a backend edit
        // re-validated alone, `config::reparse_backends`): the others are carried over without
        // comparing 999 configs, and no pool came or went. Only when the lists line up.
        let only = only.filter(|&i| {
            i < config.pools.len()
                && previous.pools.len() == config.pools.len()
                && applied_pools.len() == config.pools.len()
                && applied_pools.get(i).map(|p| &p.pattern)
                    == config.pools.get(i).map(|p| &p.pattern)
                && seeds.iter().all(|s| *s.pattern == *config.pools[i].pattern)
        });
        let carried: HashMap<&str, (&PoolConfig, &Arc<Pool>)> =
            if only.is_none() && previous.pools.len() == applied_pools.len() {
                applied_pools
                    .iter()
                    .zip(&previous.pools)
                    .map(|(config, pool)| (config.pattern.as_str(), (config, pool)))
                    .collect()
            } else {
                HashMap::new()
            };
        let pools = if let Some(i) = only {
            let mut pools = previous.pools.clone();
            pools[i] = self.build_pool(&mut state.checkers, &config.pools[i], seeds);
            pools
        } else {
            let mut pools = Vec::with_capacity(config.pools.len());
            for pool_config in &config.pools {
                let seeded = seeds.iter().any(|s| *s.pattern == *pool_config.pattern);
                if let Some((before, pool)) = carried.get(pool_config.pattern.as_str()) {
                    if *before == pool_config && !seeded {
                        pools.push(Arc::clone(pool));
                        continue;
                    }
                }
                pools.push(self.build_pool(&mut state.checkers, pool_config, seeds));
            }
            let declared: HashSet<&str> = config.pools.iter().map(|p| p.pattern.as_str()).collect();
            state
                .checkers
                .retain_pools(|pattern| declared.contains(pattern));
            pools
        };
        self.topology.store(Arc::new(Topology {
            generation,
            routes: std::mem::take(&mut config.routes),
            pools,
        }));
        let hash = sha256(text);
        state.applied_hash = Some(hash);
        state.applied = Some(config);
        state.backends_spans = spans;
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

/// Where pool `pattern`'s `backends` array is in `text`, by the recorded `spans` of the text
/// `current` was parsed from, provided the bytes there are one array holding exactly the
/// entries `current` has for that pool. `None`: let the edit find it by parsing.
fn known_backends_span(
    current: &Config,
    spans: &BackendsSpans,
    text: &str,
    pattern: &str,
) -> Option<std::ops::Range<usize>> {
    let index = current.pools.iter().position(|p| p.pattern == pattern)?;
    let span = spans.get(index)?.clone()?;
    let entries = config::backends_at(text, span.clone(), pattern)?;
    (entries == current.pools[index].backends).then_some(span)
}

/// The recorded spans after the array at `old` was replaced by `new_len` bytes: that array's
/// span resized, the ones after it moved. `None` when `old` is not one of them exactly or
/// overlaps another (then the new text is parsed in full).
fn shifted(
    spans: &BackendsSpans,
    old: &std::ops::Range<usize>,
    new_len: usize,
) -> Option<BackendsSpans> {
    if !spans.iter().any(|s| s.as_ref() == Some(old)) {
        return None;
    }
    spans
        .iter()
        .map(|span| match span {
            None => Some(None),
            Some(s) if s == old => Some(Some(old.start..old.start + new_len)),
            Some(s) if s.end <= old.start => Some(Some(s.clone())),
            Some(s) if s.start >= old.end => Some(Some(
                s.start - old.len() + new_len..s.end - old.len() + new_len,
            )),
            Some(_) => None,
        })
        .collect()
}

/// An edit whose result is parsed in full.
fn whole(text: String) -> Edited {
    Edited {
        text,
        backends: None,
    }
}

fn sha256(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTEN: &str = "[listen]\nhttp = \"127.0.0.1:0\"\ngrpc = \"127.0.0.1:0\"\n\n";

    /// An lb.toml of [`LISTEN`] and `pools` in a fresh temporary directory (kept alive by the
    /// returned guard), loaded.
    async fn load_pools(pools: &str) -> (tempfile::TempDir, PathBuf, Arc<Applier>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lb.toml");
        std::fs::write(&path, format!("{LISTEN}{pools}")).unwrap();
        let (applier, _) = Applier::load(&path).await.unwrap();
        (dir, path, applier)
    }

    fn pool(pattern: &str, backends: &[&str]) -> String {
        let list: Vec<String> = backends.iter().map(|b| format!("\"{b}\"")).collect();
        format!(
            "[pools.\"{pattern}\"]\ninterval = \"1h\"\nbackends = [{}]\n\n",
            list.join(", ")
        )
    }

    #[tokio::test]
    async fn a_reload_applies_only_the_content_that_settled() {
        let (_dir, path, applier) = load_pools(&pool("/a/", &["127.0.0.1:1"])).await;
        let generation = applier.topology().load().generation;
        // The watcher saw one text settle; the file now holds another (a save under way).
        let next = format!("{LISTEN}{}", pool("/b/", &["127.0.0.1:2"]));
        std::fs::write(&path, &next).unwrap();
        let outcome = applier.reload_settled(Some(b"[pools]\n")).await.unwrap();
        assert!(matches!(outcome, Reloaded::Moving));
        assert_eq!(applier.topology().load().generation, generation);
        assert!(applier.topology().load().pool("/a/").is_some());
        // Once what it saw is what the file holds, it applies.
        let outcome = applier.reload_settled(Some(next.as_bytes())).await.unwrap();
        assert!(matches!(outcome, Reloaded::Applied { .. }));
        assert!(applier.topology().load().pool("/b/").is_some());
    }

    #[tokio::test]
    async fn an_apply_rebuilds_only_the_pools_whose_config_changed() {
        let listen = LISTEN; // for the hand-written saves below
        let (a, b, c) = ("127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3");
        let (_dir, path, applier) = load_pools(&format!(
            "{}{}{}",
            pool("/a/", &[a]),
            pool("/b/", &[a, b]),
            pool("/c/", &[c])
        ))
        .await;
        let before = applier.topology().load_full();
        assert_eq!(applier.n_checkers().await, 4);

        // /b/ loses a backend, /c/ goes, /d/ arrives; /a/ is untouched.
        std::fs::write(
            &path,
            format!(
                "{listen}{}{}{}",
                pool("/a/", &[a]),
                pool("/b/", &[b]),
                pool("/d/", &[c])
            ),
        )
        .unwrap();
        assert!(matches!(
            applier.reload().await.unwrap(),
            Reloaded::Applied { .. }
        ));
        let after = applier.topology().load_full();
        let pool = |t: &Arc<Topology>, p: &str| t.pool(p).map(|pool| pool as *const Pool);
        assert!(pool(&before, "/a/").is_some());
        assert_eq!(pool(&before, "/a/"), pool(&after, "/a/"));
        let (old_b, new_b) = (before.pool("/b/").unwrap(), after.pool("/b/").unwrap());
        assert!(!std::ptr::eq(old_b, new_b));
        // The backend that stayed keeps its live state (health, counters, connections).
        assert!(Arc::ptr_eq(&old_b.backends[1], &new_b.backends[0]));
        assert!(after.pool("/c/").is_none());
        // /a/ 1 + /b/ 1 + /d/ 1: /b/'s removed backend and /c/'s checker stopped.
        assert_eq!(applier.n_checkers().await, 3);
    }

    /// Backend mutations take the re-validate-one-pool path; what they apply must be exactly
    /// what a full parse of the written file gives, as if a person had saved it.
    #[tokio::test]
    async fn a_backend_mutation_applies_what_a_full_parse_of_the_file_gives() {
        let (a, b) = ("127.0.0.1:1", "127.0.0.1:2");
        let (_dir, path, applier) =
            load_pools(&format!("{}{}", pool("/a/", &[a, b]), pool("/b/", &[a]))).await;
        let addr = |s: &str| s.parse::<BackendAddr>().unwrap();
        let mutations = [
            Mutation::SetBackendState {
                pattern: "/a/".into(),
                backend: addr(b),
                state: AdminState::Drain,
            },
            Mutation::RemoveBackend {
                pattern: "/a/".into(),
                backend: addr(a),
            },
            Mutation::SetBackendState {
                pattern: "/a/".into(),
                backend: addr(b),
                state: AdminState::Enabled,
            },
        ];
        for mutation in mutations {
            applier
                .mutate(mutation, &MutateOptions::default())
                .await
                .unwrap();
            let (full, text) = config::load(&path).unwrap();
            let state = applier.state.lock().await;
            let applied = state.applied.as_ref().unwrap();
            assert_eq!(applied.pools, full.pools);
            assert_eq!(applied.listen, full.listen);
            assert_eq!(state.applied_hash, Some(sha256(&text)));
        }
        let topology = applier.topology().load_full();
        let a_pool = topology.pool("/a/").unwrap();
        assert_eq!(a_pool.backends.len(), 1);
        assert_eq!(a_pool.backends[0].addr, addr(b));
        // /a/'s remaining backend and /b/'s one are checked.
        assert_eq!(applier.n_checkers().await, 2);
    }

    /// The recorded `backends` spans, moved after every splice, are where a full parse of the
    /// written file puts them, so the next edit finds its array without parsing; wrong ones are
    /// not trusted (the edit parses the file, as before) and are replaced by correct ones.
    #[tokio::test]
    async fn backend_edits_keep_the_recorded_array_spans_right_and_distrust_wrong_ones() {
        let (a, b, c) = ("127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3");
        let multiline = format!(
            "[pools.\"/m/\"]\nbackends = [\n  # keep\n  \"{a}\",\n  {{ addr = \"{b}\", state = \"drain\" }},\n]\ninterval = \"1h\"\n\n"
        );
        let (_dir, path, applier) = load_pools(&format!(
            "{}{multiline}{}[pools.\"/none/\"]\ninterval = \"1h\"\n\n{}",
            pool("/a/", &[a, b]),
            pool("/b/", &[a]),
            pool("/c/", &[c])
        ))
        .await;
        let addr = |s: &str| s.parse::<BackendAddr>().unwrap();
        let set = |pattern: &str, backend: &str, state| Mutation::SetBackendState {
            pattern: pattern.into(),
            backend: addr(backend),
            state,
        };
        let remove = |pattern: &str, backend: &str| Mutation::RemoveBackend {
            pattern: pattern.into(),
            backend: addr(backend),
        };
        let check = |label: &str, state: &WriterState| {
            let (full, text) = config::load(&path).unwrap();
            let (_, spans) = config::parse_with_spans(&text).unwrap();
            let applied = state.applied.as_ref().unwrap();
            assert_eq!(applied.pools, full.pools, "{label}");
            assert_eq!(state.backends_spans, spans, "{label}");
            assert_eq!(state.applied_hash, Some(sha256(&text)), "{label}");
            let topology = applier.topology().load_full();
            for (config, pool) in full.pools.iter().zip(&topology.pools) {
                assert_eq!(*pool.pattern, *config.pattern, "{label}");
                let running: Vec<_> = pool
                    .backends
                    .iter()
                    .map(|b| (b.addr.clone(), b.admin()))
                    .collect();
                let declared: Vec<_> = config
                    .backends
                    .iter()
                    .map(|b| (b.addr.clone(), b.state))
                    .collect();
                assert_eq!(running, declared, "{label}: {}", config.pattern);
            }
            for pool in ["/a/", "/m/", "/b/", "/c/"] {
                assert!(
                    known_backends_span(applied, &state.backends_spans, &text, pool).is_some(),
                    "{label}: {pool}"
                );
            }
        };
        check("loaded", &*applier.state.lock().await);
        let mutations = [
            set("/m/", a, AdminState::Disabled),
            remove("/a/", a),
            set("/m/", b, AdminState::Enabled),
            set("/c/", c, AdminState::Drain),
            remove("/m/", a),
            set("/a/", b, AdminState::Drain),
        ];
        for (i, mutation) in mutations.into_iter().enumerate() {
            // Every other edit starts from spans that are wrong: it must not trust them.
            if i % 2 == 1 {
                let mut state = applier.state.lock().await;
                let n = state.backends_spans.len();
                state.backends_spans = match i {
                    // Off by one: not an array where the edit looks.
                    1 => state
                        .backends_spans
                        .iter()
                        .map(|s| s.as_ref().map(|s| s.start + 1..s.end + 1))
                        .collect(),
                    3 => vec![None; n],
                    // /a/ and /c/ given each other's span: arrays, but not the pool's own.
                    // (Two pools whose entries are equal could not be told apart this way: the
                    // spans are trusted for where they point, as they come from a parse of
                    // these very bytes; only their contents are checked.)
                    _ => {
                        let mut spans = state.backends_spans.clone();
                        spans.swap(0, 4);
                        spans
                    }
                };
            }
            let label = mutation.describe();
            applier
                .mutate(mutation, &MutateOptions::default())
                .await
                .unwrap();
            check(&label, &*applier.state.lock().await);
        }
    }

    /// A backend edit carries every other pool over without comparing it only when it edited
    /// the applied file: after a person's unapplied save changed another pool, that change
    /// runs too.
    #[tokio::test]
    async fn a_backend_edit_on_an_unapplied_save_applies_the_whole_save() {
        let listen = LISTEN; // for the hand-written saves below
        let (a, b, c) = ("127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3");
        let (_dir, path, applier) =
            load_pools(&format!("{}{}", pool("/a/", &[a, b]), pool("/b/", &[a]))).await;
        let addr = |s: &str| s.parse::<BackendAddr>().unwrap();
        // Saved by hand, not reloaded (no watcher here): /b/ gets another backend.
        std::fs::write(
            &path,
            format!("{listen}{}{}", pool("/a/", &[a, b]), pool("/b/", &[a, c])),
        )
        .unwrap();
        applier
            .mutate(
                Mutation::RemoveBackend {
                    pattern: "/a/".into(),
                    backend: addr(a),
                },
                &MutateOptions::default(),
            )
            .await
            .unwrap();
        let topology = applier.topology().load_full();
        let backends = |pattern: &str| -> Vec<BackendAddr> {
            let pool = topology.pool(pattern).unwrap();
            pool.backends.iter().map(|b| b.addr.clone()).collect()
        };
        assert_eq!(backends("/a/"), vec![addr(b)]);
        assert_eq!(backends("/b/"), vec![addr(a), addr(c)]);
        assert_eq!(applier.n_checkers().await, 3);
    }

    /// The watcher skips the event of lb's own write by `stat`; a person's save right after an
    /// API change (here in place, with the same length, the hardest case for a stat check) must
    /// still be applied.
    #[tokio::test]
    async fn a_human_edit_right_after_an_api_change_is_applied() {
        let (a, b, c) = ("127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3");
        let (_dir, path, applier) =
            load_pools(&format!("{}{}", pool("/a/", &[a, b]), pool("/b/", &[b]))).await;
        assert!(!applier.is_own_write(), "loaded, not written by lb");
        let watcher = tokio::spawn(crate::watch::start(Arc::clone(&applier)).unwrap());
        let addr = |s: &str| s.parse::<BackendAddr>().unwrap();
        for round in 0..3 {
            let (from, to) = if round % 2 == 0 { (b, c) } else { (c, b) };
            let state = [AdminState::Drain, AdminState::Enabled][round % 2];
            applier
                .mutate(
                    Mutation::SetBackendState {
                        pattern: "/a/".into(),
                        backend: addr(a),
                        state,
                    },
                    &MutateOptions::default(),
                )
                .await
                .unwrap();
            assert!(applier.is_own_write());
            // At once: /b/'s backend swapped for one of the same length, in place.
            let text = std::fs::read_to_string(&path).unwrap();
            let edited = text.replace(
                &format!("[pools.\"/b/\"]\ninterval = \"1h\"\nbackends = [\"{from}\"]"),
                &format!("[pools.\"/b/\"]\ninterval = \"1h\"\nbackends = [\"{to}\"]"),
            );
            assert_ne!(edited, text);
            assert_eq!(edited.len(), text.len());
            std::fs::write(&path, &edited).unwrap();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            loop {
                let topology = applier.topology().load_full();
                let b_pool = topology.pool("/b/").unwrap();
                if b_pool.backends.len() == 1 && b_pool.backends[0].addr == addr(to) {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "round {round}: the human edit was not applied"
                );
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            assert!(!applier.is_own_write());
        }
        watcher.abort();
    }
}
