//! apply: owns the one path by which lb.toml text becomes the running [`Topology`]:
//! read → parse → validate → build → swap → reconcile checkers. The file watcher and every
//! control-API mutation go through it, serialised by one writer lock. It never serves requests.
//!
//! Mutations edit the file's *text* (so comments survive), write it atomically, and then apply
//! the written text exactly as a human save would be applied. The file is the only truth.
//!
//! Layout, each part using only those below it:
//! - this file: the [`Applier`], the writer lock, and the rounds every reload and mutation runs
//!   in (a round under the lock on the blocking pool; between rounds, probes of backends new to
//!   a pool, without the lock);
//! - `transaction`: a mutation's read → check → edit → swap-over-the-text-read transaction;
//! - `plan`: what a candidate text would change (the diff a reload logs), probes included;
//! - `snapshot`: the next `Topology` built from a validated config, swapped in, checkers
//!   reconciled;
//! - `spans`: the recorded `backends` array spans, behind one invariant.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::{ArcSwap, ArcSwapOption};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use crate::config::edit::{EditError, PoolSpec, RolloutEdit};
use crate::config::write::WriteError;
use crate::config::{
    self, AdminState, BackendAddr, BackendsSpans, Config, Diagnostic, PoolConfig, RolloutAt,
};
use crate::health::{self, Checkers};
pub use crate::metrics::Status;
use crate::metrics::{Global, ReloadSource};
use crate::tls::BackendConnector;
use crate::topology::{BackendKey, SharedTopology, Topology};

mod plan;
mod snapshot;
mod spans;
#[cfg(test)]
pub(crate) mod tests;
mod transaction;

pub use plan::{Forecast, Plan, PlanError};
use snapshot::StartOnly;

/// The parts of the config that only take effect when lb starts.
#[derive(Debug, Clone)]
pub struct Startup {
    /// `[listen]`: the sockets to bind.
    pub listen: config::Listen,
    /// `[server]`: client-side timeouts, limits and worker threads.
    pub server: config::Server,
    /// `[control]`: the control API's authentication and history.
    pub control: config::Control,
    /// The data plane's `[tls]` at start; `tls::watch` follows its later changes.
    pub tls: Option<config::TlsConfig>,
    /// `[sync]`: the git remote this instance follows, when set.
    pub sync: Option<config::SyncConfig>,
}

/// A change requested through the control API.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// Appends a new pool table.
    AddPool {
        /// The new pool's pattern.
        pattern: String,
        /// The keys the table is written with.
        spec: PoolSpec,
    },
    /// Deletes a pool table.
    RemovePool {
        /// The pool's pattern.
        pattern: String,
    },
    /// Adds a backend to a pool, once it passes its first probe.
    AddBackend {
        /// The pool's pattern.
        pattern: String,
        /// The backend to add.
        backend: BackendAddr,
    },
    /// Deletes a backend's entry from a pool.
    RemoveBackend {
        /// The pool's pattern.
        pattern: String,
        /// The backend to remove.
        backend: BackendAddr,
    },
    /// Drain, disable or re-enable a declared backend (a one-line edit of its entry).
    SetBackendState {
        /// The pool's pattern.
        pattern: String,
        /// The backend whose state changes.
        backend: BackendAddr,
        /// The state to declare.
        state: AdminState,
    },
    /// A change of a pool's canary or rollout tables: a weight, a rollout started, moved,
    /// paused, aborted or promoted.
    Rollout {
        /// The pool's pattern.
        pattern: String,
        /// The edit.
        change: RolloutEdit,
        /// The rollout's state, step and driver the change was decided on: when the file no
        /// longer has them (someone moved or took over the rollout meanwhile) the change is
        /// ABORTED, so no step is applied twice. `None`: whatever the rollout's progress.
        expect: Option<RolloutAt>,
        /// One line for logs and the commit's subject (`rollout /: step 2 of 4, weight 25%`).
        summary: String,
        /// The commit's body: the figures the change was decided on.
        details: String,
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
            | Mutation::SetBackendState { pattern, .. }
            | Mutation::Rollout { pattern, .. } => pattern,
        }
    }

    /// The git commit message of this change made by `actor`.
    pub fn commit_message(&self, actor: Option<&str>) -> String {
        let actor = actor.unwrap_or("unknown");
        let details = match self {
            Mutation::Rollout { details, .. } if !details.is_empty() => format!("{details}\n\n"),
            _ => String::new(),
        };
        format!(
            "lb: {}\n\n{details}Requested by {actor} through the lb control API.\n",
            self.describe()
        )
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
            Mutation::Rollout { summary, .. } => summary.clone(),
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
    /// What the file must still be for the mutation to apply.
    pub precondition: Precondition,
    /// The caller's name (gRPC `x-lb-actor`), recorded in git commits.
    pub actor: Option<String>,
}

/// Why a mutation changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum MutateError {
    /// No pool has this pattern.
    #[error("no pool {pattern:?}")]
    PoolNotFound {
        /// The pool's pattern.
        pattern: String,
    },
    /// A pool with this pattern already exists.
    #[error("pool {pattern:?} already exists")]
    PoolExists {
        /// The pool's pattern.
        pattern: String,
    },
    /// The pool does not declare this backend.
    #[error("pool {pattern:?} has no backend {backend}")]
    BackendNotFound {
        /// The pool's pattern.
        pattern: String,
        /// The backend asked for.
        backend: BackendAddr,
    },
    /// The pool already declares this backend.
    #[error("pool {pattern:?} already has backend {backend}")]
    BackendExists {
        /// The pool's pattern.
        pattern: String,
        /// The backend asked for.
        backend: BackendAddr,
    },
    /// The file or the generation no longer matches the caller's precondition.
    #[error("the file changed since you read it ({reason}); re-read status and retry")]
    Aborted {
        /// What changed.
        reason: String,
    },
    /// A backend to add failed its first probe.
    #[error("backend {backend} failed its health check, not added: {reason}")]
    BackendUnhealthy {
        /// The backend probed.
        backend: BackendAddr,
        /// Why the probe failed.
        reason: String,
    },
    /// The edited text would not be a valid config.
    #[error("the change would make the config invalid: {}", join(diagnostics))]
    Rejected {
        /// Every problem the edited text has.
        diagnostics: Vec<Diagnostic>,
    },
    /// The file on disk is invalid, so no edit is made on top of it.
    #[error(
        "{path} is currently invalid; fix or revert it first: {}",
        join(diagnostics)
    )]
    FileInvalid {
        /// The config file.
        path: PathBuf,
        /// Every problem in it.
        diagnostics: Vec<Diagnostic>,
    },
    /// The config file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// Why reading failed.
        #[source]
        source: std::io::Error,
    },
    /// The text edit was refused.
    #[error(transparent)]
    Edit(#[from] EditError),
    /// The edited text could not be written.
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

/// How a reload from disk ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reloaded {
    /// The file's content is running as this generation.
    Applied {
        /// The generation now serving.
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

/// The single writer of the running topology: reloads and mutations go through it, one at a time.
pub struct Applier {
    path: PathBuf,
    topology: SharedTopology,
    status: ArcSwap<Status>,
    /// The writer lock: whoever holds it is the only one reading-for-edit, writing and applying.
    /// Never held across a network probe. In an `Arc` so that a round can move its guard onto
    /// a blocking thread (`lock_owned`).
    state: Arc<Mutex<WriterState>>,
    /// Process-wide counters; reload outcomes are recorded here, the proxy records the rest.
    metrics: Arc<Global>,
    /// Health transitions, for `WatchHealth`.
    events: health::Events,
    /// lb's own last write, while it is the applied content: the watcher compares the file
    /// with it instead of settling, locking and re-hashing for the event lb's own swap
    /// produces. Outside the writer lock so that check never waits for (or delays) a mutation.
    written: ArcSwapOption<Written>,
    /// The applied config's `[tls]` (paths resolved), for `tls::watch`: a save that changes it
    /// reaches the certificate store through the same parse as the pools.
    tls: tokio::sync::watch::Sender<Option<config::TlsConfig>>,
    /// Who is about to put which content in the file (the fleet sync, fast-forwarding to a
    /// commit): whichever reload applies it, the watcher's or the sync's own, says so in
    /// `applied_by`.
    expected: ArcSwapOption<(ContentHash, String)>,
    /// The applied config's pools that declare a `[pools."P".rollout]`, for the rollout
    /// controller (which reads them outside the writer lock).
    rollouts: ArcSwap<Vec<PoolConfig>>,
    /// The applied config's `[sync] peers`, for the rollout driver.
    peers: ArcSwap<Vec<String>>,
}

/// A SHA-256 of lb.toml's text.
pub type ContentHash = [u8; 32];

/// The file lb last wrote, as it left it.
struct Written {
    stamp: Stamp,
    text: Arc<str>,
}

/// How many times a reload or mutation may release the writer lock to probe backends new to a
/// pool and start again. Each round probes what the file declares anew since the last, so
/// only a file that keeps declaring new backends uses them all; in the last round a reload
/// applies with any backend still unprobed starting sick, and a mutation fails with ABORTED.
const MAX_PROBE_ROUNDS: usize = 3;
/// Probes in flight at once when a save declares many new backends.
const MAX_PARALLEL_PROBES: usize = 64;
/// How long one round of first probes may take in all: a file declaring thousands of new
/// backends that do not answer holds lb's start (or a save) back this long at most, not for
/// their count times the check timeout.
const MAX_PROBE_ROUND: std::time::Duration = std::time::Duration::from_secs(10);

/// First-probe results of backends new to a pool, by identity.
type Probed = HashMap<BackendKey, FirstProbe>;

/// What a backend's first probe found, and how long it took.
struct FirstProbe {
    /// `Err` says why the backend is sick.
    outcome: Result<(), String>,
    took: std::time::Duration,
}

/// A backend new to its pool, to probe with its pool's checks before any snapshot declares it.
struct Unprobed {
    key: BackendKey,
    checks: config::HealthChecks,
    /// The pool's `backend_tls`, shared by its new backends.
    tls: Option<Arc<BackendConnector>>,
}

/// What one round under the writer lock came to.
enum Step<T> {
    Done(T),
    /// Release the lock, probe these, and run the round again.
    Probe(Vec<Unprobed>),
}

/// What `stat` says about a file: enough to tell that it is no longer the file lb wrote. Any
/// rename over it changes the inode, and any write the size or the change time (which no user
/// call can set), except an in-place write of the same length in the same timestamp tick:
/// hence [`Applier::is_own_write`] compares the bytes of a file that still matches.
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
    fn of(path: &Path) -> Option<Stamp> {
        Stamp::from_metadata(&std::fs::metadata(path).ok()?)
    }

    #[cfg(unix)]
    fn from_metadata(m: &std::fs::Metadata) -> Option<Stamp> {
        use std::os::unix::fs::MetadataExt;
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
    fn from_metadata(_m: &std::fs::Metadata) -> Option<Stamp> {
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
    /// The config of the applied file, whole (its routes are the topology's): a mutation of
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
        let unusable = unusable_backend_cas(&config.pools, None, path);
        if !unusable.is_empty() {
            return Err(config::Error::Invalid {
                path: path.to_path_buf(),
                diagnostics: unusable,
            });
        }
        let (events, _) = tokio::sync::broadcast::channel(1024);
        let applier = Arc::new(Applier {
            path: path.to_path_buf(),
            topology: Arc::new(ArcSwap::from_pointee(Topology::empty())),
            status: ArcSwap::from_pointee(Status {
                generation: 0,
                content_hash: String::new(),
                applied_at: SystemTime::now(),
                applied_by: String::new(),
                last_error: None,
            }),
            state: Arc::new(Mutex::new(WriterState {
                started_with: None,
                restart_pending: Vec::new(),
                checkers: Checkers::new(events.clone()),
                applied_hash: None,
                applied: None,
                backends_spans: Vec::new(),
                rejected_hash: None,
            })),
            metrics: Arc::default(),
            events,
            written: ArcSwapOption::empty(),
            expected: ArcSwapOption::empty(),
            tls: tokio::sync::watch::Sender::new(config.tls.clone()),
            rollouts: ArcSwap::from_pointee(Vec::new()),
            peers: ArcSwap::from_pointee(Vec::new()),
        });
        // Settings that only take effect at start are returned to the caller; the pools go into
        // the first topology.
        let startup = Startup {
            listen: config.listen.clone(),
            server: config.server.clone(),
            control: config.control.clone(),
            tls: config.tls.clone(),
            sync: config.sync.clone(),
        };
        // Every enabled backend gets its first probe before the first topology, as on a reload:
        // lb announces its listeners with the backends that are up already in rotation.
        let mut state = applier.state.lock().await;
        let wanted = unprobed(&state.checkers, &config.pools, &Probed::new(), path);
        let probed: Probed = applier.probe_all(wanted).await.into_iter().collect();
        let applied_by = "start".to_owned();
        applier.apply(
            &mut state,
            (config, spans),
            &text,
            &probed,
            None,
            applied_by,
        );
        drop(state);
        Ok((applier, startup))
    }

    /// The applied pools that declare a rollout, as the file has them.
    pub fn rollout_pools(&self) -> Arc<Vec<PoolConfig>> {
        self.rollouts.load_full()
    }

    /// The applied config's `[sync] peers` (empty without `[sync]`).
    pub fn sync_peers(&self) -> Arc<Vec<String>> {
        self.peers.load_full()
    }

    /// The config file it reads and writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The handle the proxy reads.
    pub fn topology(&self) -> &SharedTopology {
        &self.topology
    }

    /// The applied config's `[tls]` section, as each apply leaves it (`None`: the file has none).
    pub fn tls_settings(&self) -> tokio::sync::watch::Receiver<Option<config::TlsConfig>> {
        self.tls.subscribe()
    }

    /// A receiver of health transitions from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<health::HealthEvent> {
        self.events.subscribe()
    }

    /// Process-wide counters, shared with the proxy and the admin endpoints.
    pub fn metrics(&self) -> &Arc<Global> {
        &self.metrics
    }

    /// What is applied now: generation, content hash, last reload outcome.
    pub fn status(&self) -> Arc<Status> {
        self.status.load_full()
    }

    /// Number of running health checkers (for leak checks and metrics).
    pub async fn n_checkers(&self) -> usize {
        self.state.lock().await.checkers.len()
    }

    /// Whether the file on disk is exactly the one lb itself last wrote and applied: then a
    /// watcher event is lb's own swap and there is nothing to reload. `stat` rules most saves
    /// out at once; a file that still matches it is compared byte for byte with what lb wrote,
    /// since a save written in place with the same length within the same timestamp tick
    /// matches the stamp. Takes no lock (it never waits for, or delays, a mutation); `false`
    /// whenever in doubt. Blocking file I/O: run it off the proxy's workers.
    pub fn is_own_write(&self) -> bool {
        let Some(written) = self.written.load_full() else {
            return false;
        };
        Stamp::of(&self.path).as_ref() == Some(&written.stamp)
            && std::fs::read(&self.path).is_ok_and(|bytes| bytes == written.text.as_bytes())
    }

    /// Says that the file is about to hold the text whose SHA-256 is `hash`, put there by `by`
    /// (e.g. `sync 1a2b3c4d5e6f`): the reload that applies it records `by` as what made the
    /// generation, not `file`.
    pub fn expect_content(&self, hash: ContentHash, by: String) {
        self.expected.store(Some(Arc::new((hash, by))));
    }

    /// Re-reads the file and applies it if its content changed. An invalid file changes nothing
    /// and is kept as the last error; so does a file that would remove every running pool
    /// without saying `allow_empty = true` ([`config::refuse_empty`]).
    pub async fn reload(self: &Arc<Self>) -> Result<Reloaded, config::Error> {
        self.reload_settled(None).await
    }

    /// [`Applier::reload`], applying only the `settled` content the watcher saw hold still.
    ///
    /// NOTE: the watcher waits for a save to settle and this reads the file again, under the
    /// writer lock; a save that starts in between (an in-place one truncates first) would
    /// otherwise be read half-done, and an empty or cut-off file is often valid TOML with fewer
    /// pools (seen under load: a reload test's requests got 404 for a moment).
    ///
    /// Backends new to a pool are probed before the snapshot that declares them is swapped in
    /// (without the writer lock; then the file is read again under it, and whatever is new in
    /// that text and not yet probed is probed in turn), so each enters healthy or sick as its
    /// probe says and replacing every backend of a pool opens no 503 window.
    pub async fn reload_settled(
        self: &Arc<Self>,
        settled: Option<Vec<u8>>,
    ) -> Result<Reloaded, config::Error> {
        let settled: Option<Arc<[u8]>> = settled.map(Arc::from);
        let mut probed = Probed::new();
        // Bounded: in round MAX_PROBE_ROUNDS the round is told not to probe, and ends `Done`.
        let mut round = 0;
        loop {
            round += 1;
            let may_probe = round < MAX_PROBE_ROUNDS;
            let state = Arc::clone(&self.state).lock_owned().await;
            let (this, settled) = (Arc::clone(self), settled.clone());
            let (step, returned) = off_workers(move || {
                let mut state = state;
                let step = this.reload_locked(&mut state, settled.as_deref(), &probed, may_probe);
                (step, probed)
            })
            .await
            .map_err(|source| config::Error::Read {
                path: self.path.clone(),
                source,
            })?;
            probed = returned;
            match step {
                Step::Done(result) => return result,
                Step::Probe(wanted) => probed.extend(self.probe_all(wanted).await),
            }
        }
    }

    /// One round of a reload, under the writer lock, on a blocking thread.
    fn reload_locked(
        &self,
        state: &mut WriterState,
        settled: Option<&[u8]>,
        probed: &Probed,
        may_probe: bool,
    ) -> Step<Result<Reloaded, config::Error>> {
        let text = std::fs::read_to_string(&self.path).map_err(|source| config::Error::Read {
            path: self.path.clone(),
            source,
        });
        let result = text.and_then(|text| {
            if settled.is_some_and(|settled| settled != text.as_bytes()) {
                return Ok(Step::Done(Reloaded::Moving));
            }
            let hash = sha256(&text);
            if state.applied_hash == Some(hash) {
                // A save that puts back what runs ends whatever failure the saves before it
                // left: the file is again the one being served.
                state.rejected_hash = None;
                if self.status.load().last_error.is_some() {
                    let mut status = Status::clone(&self.status.load());
                    status.last_error = None;
                    self.status.store(Arc::new(status));
                }
                return Ok(Step::Done(Reloaded::Unchanged));
            }
            if state.rejected_hash == Some(hash) {
                return Ok(Step::Done(Reloaded::StillInvalid));
            }
            let parsed = accept(&text, state.applied.as_ref(), &self.path).map_err(|refused| {
                // Not remembered when only a CA file is at fault: the fix may be to it, not
                // to lb.toml.
                if refused.in_text {
                    state.rejected_hash = Some(hash);
                }
                config::Error::Invalid {
                    path: self.path.clone(),
                    diagnostics: refused.diagnostics,
                }
            })?;
            let wanted = unprobed(&state.checkers, &parsed.0.pools, probed, &self.path);
            if may_probe && !wanted.is_empty() {
                return Ok(Step::Probe(wanted));
            }
            // What is applied now is someone else's file, not lb's last write.
            self.written.store(None);
            let applied_by = match self.expected.load_full() {
                Some(expected) if expected.0 == hash => {
                    self.expected.store(None);
                    expected.1.clone()
                }
                _ => "file".to_owned(),
            };
            Ok(Step::Done(Reloaded::Applied {
                generation: self.apply(state, parsed, &text, probed, None, applied_by),
            }))
        });
        let result = match result {
            Ok(Step::Probe(wanted)) => return Step::Probe(wanted),
            Ok(Step::Done(reloaded)) => Ok(reloaded),
            Err(e) => Err(e),
        };
        match &result {
            Ok(Reloaded::Applied { .. }) => {
                // The sync names itself in what made the generation (`sync COMMIT`).
                let by_sync = self.status.load().applied_by.starts_with("sync ");
                let source = if by_sync {
                    ReloadSource::Sync
                } else {
                    ReloadSource::File
                };
                self.metrics.reloads.record(source, true);
            }
            Err(_) => {
                // A refused file while the sync waits for its commit's content is the sync's.
                let source = if self.expected.load().is_some() {
                    ReloadSource::Sync
                } else {
                    ReloadSource::File
                };
                self.metrics.reloads.record(source, false);
            }
            Ok(_) => {}
        }
        if let Err(e) = &result {
            let mut status = Status::clone(&self.status.load());
            status.last_error = Some(e.to_string());
            self.status.store(Arc::new(status));
        }
        Step::Done(result)
    }

    /// Applies one control-API change: read the file (a person may have saved since the last
    /// reload), check the caller's precondition against it, edit its text, and swap the result in
    /// only over the very text the edit was computed from (`write::replace`); when a save landed
    /// meanwhile, redo all of it on the newer text, a bounded number of times, then fail with
    /// ABORTED. Then apply what was written. On any error neither the file nor the running
    /// state changes.
    ///
    /// The file work runs on a blocking thread, off the proxy's workers. Backends the edit
    /// declares anew (AddBackend's, or an unapplied save's) are probed without the writer lock
    /// and the whole transaction is then redone under it with their results, so a probe never
    /// holds up other changes and reloads; AddBackend fails when its backend's probe does.
    pub async fn mutate(
        self: &Arc<Self>,
        mutation: Mutation,
        options: &MutateOptions,
    ) -> Result<u64, MutateError> {
        let job = Arc::new((mutation, options.clone()));
        let mut probed = Probed::new();
        // Bounded: in round MAX_PROBE_ROUNDS the round is told not to probe, and ends `Done`.
        let mut round = 0;
        loop {
            round += 1;
            let may_probe = round < MAX_PROBE_ROUNDS;
            let state = Arc::clone(&self.state).lock_owned().await;
            let (this, round_job) = (Arc::clone(self), Arc::clone(&job));
            let (step, returned, state) = off_workers(move || {
                let mut state = state;
                let (mutation, options) = &*round_job;
                let step = this.mutate_locked(&mut state, mutation, options, &probed, may_probe);
                (step, probed, state)
            })
            .await
            .map_err(|source| MutateError::Read {
                path: self.path.clone(),
                source,
            })?;
            probed = returned;
            let step = step.inspect_err(|error| {
                // Only an edit that would not make a valid config is a refused application.
                if matches!(error, MutateError::Rejected { .. }) {
                    self.metrics.reloads.record(ReloadSource::Api, false);
                }
            });
            match step? {
                Step::Done((generation, git_commit)) => {
                    self.metrics.reloads.record(ReloadSource::Api, true);
                    let (mutation, options) = &*job;
                    tracing::info!(generation, change = %mutation.describe(), actor = options.actor.as_deref().unwrap_or("-"), "control API change applied");
                    // Still under the writer lock: the commit holds exactly this change, in
                    // the order the changes were applied, and no later one rides along.
                    if git_commit {
                        crate::history::commit(
                            &self.path,
                            &mutation.commit_message(options.actor.as_deref()),
                            &self.metrics,
                        )
                        .await;
                    }
                    drop(state);
                    return Ok(generation);
                }
                Step::Probe(wanted) => {
                    // Probes run without the writer lock (see above).
                    drop(state);
                    probed.extend(self.probe_all(wanted).await);
                }
            }
        }
    }

    /// One probe of `backend` with `pool`'s checks, over its `backend_tls` when it has one,
    /// bounded by the check timeout: what AddBackend requires of a backend before it declares
    /// it anywhere (`sync` asks it before a push). A relative `backend_tls.ca` is read from
    /// this instance's config directory, off the proxy's workers.
    pub async fn probe_backend(
        &self,
        backend: &BackendAddr,
        pool: &PoolConfig,
    ) -> Result<(), String> {
        let tls = match &pool.backend_tls {
            Some(settings) => {
                let (pattern, settings) = (pool.pattern.clone(), settings.resolved(&self.path));
                let connector = off_workers(move || backend_connector(&pattern, &settings))
                    .await
                    .map_err(|e| e.to_string())?;
                Some(connector)
            }
            None => None,
        };
        health::probe_over(backend.addr, &pool.health_checks, tls.as_deref()).await
    }

    /// Probes each backend in `wanted` once, in parallel (at most [`MAX_PARALLEL_PROBES`] at a
    /// time), with its pool's checks; each probe is bounded by the check timeout, the round by
    /// [`MAX_PROBE_ROUND`].
    async fn probe_all(&self, wanted: Vec<Unprobed>) -> Vec<(BackendKey, FirstProbe)> {
        // One probe takes at most its checks times the check timeout; the round waits at least
        // that long for the slowest, so a lone probe is never cut short.
        let longest_probe = wanted
            .iter()
            .map(|w| {
                w.checks
                    .timeout
                    .saturating_mul(w.checks.checks.len().max(1) as u32)
            })
            .max()
            .unwrap_or_default();
        let deadline = tokio::time::Instant::now()
            + MAX_PROBE_ROUND.max(longest_probe + std::time::Duration::from_secs(1));
        let limit = Arc::new(tokio::sync::Semaphore::new(MAX_PARALLEL_PROBES));
        let mut probes = tokio::task::JoinSet::new();
        for Unprobed { key, checks, tls } in wanted {
            let limit = Arc::clone(&limit);
            probes.spawn(async move {
                let _permit = limit.acquire_owned().await;
                let started = std::time::Instant::now();
                let outcome = health::probe_over(key.backend.addr, &checks, tls.as_deref()).await;
                let took = started.elapsed();
                (key, FirstProbe { outcome, took })
            });
        }
        let mut results = Vec::with_capacity(probes.len());
        // Past the deadline the probes still running are dropped: their backends stay
        // unprobed, start sick and are probed at once by their checkers.
        while let Ok(Some(joined)) = tokio::time::timeout_at(deadline, probes.join_next()).await {
            // A probe task that panicked leaves its backend unprobed: it is probed again (or,
            // in the last round, starts sick).
            if let Ok(result) = joined {
                results.push(result);
            }
        }
        results
    }
}

/// The backends of `pools` that are new to their pool (no live state yet), enabled (a disabled
/// one is not checked and starts sick), and not in `probed`.
/// `config_path`: the file `pools` come from, whose directory a relative `backend_tls.ca` is
/// read from.
fn unprobed(
    checkers: &Checkers,
    pools: &[PoolConfig],
    probed: &Probed,
    config_path: &Path,
) -> Vec<Unprobed> {
    let mut wanted = Vec::new();
    for pool in pools {
        let pattern: Arc<str> = Arc::from(pool.pattern.as_str());
        let speaks = pool
            .backend_tls
            .as_ref()
            .map(|tls| tls.resolved(config_path));
        // Built at the pool's first new backend, then shared by the others.
        let mut tls = None;
        for declared in pool.backends.iter().chain(pool.canary_backends()) {
            let key = BackendKey {
                pattern: Arc::clone(&pattern),
                backend: declared.addr.clone(),
            };
            if declared.state != AdminState::Disabled
                && checkers.backend_speaking(&key, speaks.as_ref()).is_none()
                && !probed.contains_key(&key)
            {
                if tls.is_none() {
                    tls = pool.backend_tls.as_ref().map(|settings| {
                        backend_connector(&pool.pattern, &settings.resolved(config_path))
                    });
                }
                wanted.push(Unprobed {
                    key,
                    checks: pool.health_checks.clone(),
                    tls: tls.clone(),
                });
            }
        }
    }
    wanted
}

/// Why [`accept`] refused a file.
pub(crate) struct Refused {
    /// Every problem found.
    pub(crate) diagnostics: Vec<Diagnostic>,
    /// Whether the text itself is at fault (not a file it names, such as a CA).
    pub(crate) in_text: bool,
}

/// The one set of rules a file must pass for lb to apply it, or to compute any change on top
/// of it: it parses and validates, it does not remove every running pool without saying
/// `allow_empty = true` ([`config::refuse_empty`]; `applied` is what runs), and every
/// `backend_tls.ca` it names can be used. A reload, a control-API mutation, a drain or a
/// sync's redo on the remote head all go through it, so none writes a file computed from one
/// the reload path refuses. Reads CA files: run it off the proxy's workers.
pub(crate) fn accept(
    text: &str,
    applied: Option<&Config>,
    config_path: &Path,
) -> Result<(Config, BackendsSpans), Refused> {
    let running_pools = applied.is_some_and(|c| !c.pools.is_empty());
    let parsed = config::parse_with_spans(text)
        .and_then(|parsed| match config::refuse_empty(&parsed.0) {
            Some(refusal) if running_pools => Err(vec![refusal]),
            _ => Ok(parsed),
        })
        .map_err(|diagnostics| Refused {
            diagnostics,
            in_text: true,
        })?;
    let unusable = unusable_backend_cas(&parsed.0.pools, applied, config_path);
    if !unusable.is_empty() {
        return Err(Refused {
            diagnostics: unusable,
            in_text: false,
        });
    }
    Ok(parsed)
}

/// The pools of `pools` whose `backend_tls.ca` (relative to `config_path`) cannot be used, as
/// the file's diagnostics: such a file is refused like a broken one. Pools whose `backend_tls`
/// is the `applied` config's are not read again. Without `ca` the system trust store is read
/// when the pool is built, as `lb check` leaves it.
fn unusable_backend_cas(
    pools: &[PoolConfig],
    applied: Option<&Config>,
    config_path: &Path,
) -> Vec<Diagnostic> {
    pools
        .iter()
        .filter_map(|pool| {
            let settings = pool
                .backend_tls
                .as_ref()
                .filter(|t| t.ca.is_some())?
                .resolved(config_path);
            let unchanged = applied
                .and_then(|c| c.pool(&pool.pattern))
                .and_then(|p| p.backend_tls.as_ref())
                == Some(&settings);
            if unchanged {
                return None;
            }
            let error = crate::tls::backend_client_config(&settings).err()?;
            Some(Diagnostic {
                position: None,
                message: format!("pool {:?}: {error}", pool.pattern),
            })
        })
        .collect()
}

/// Pool `pattern`'s `backend_tls` ready for handshakes. A `ca` that cannot be used is logged
/// here, and every handshake then fails with the same reason, so the pool's backends are sick
/// saying why. Reads the file: run it off the proxy's workers.
pub(crate) fn backend_connector(
    pattern: &str,
    settings: &config::BackendTls,
) -> Arc<BackendConnector> {
    let (connector, error) = BackendConnector::new(settings);
    if let Some(error) = error {
        tracing::error!(pool = %pattern, %error, "backend_tls cannot be used; every connection to the pool's backends fails");
    }
    Arc::new(connector)
}

/// Runs `work` on tokio's blocking pool, off the proxy's worker threads: the control path's
/// file reads, parsing, hashing, fsync and swap never stall proxying (with `workers = 1` they
/// otherwise would, for their whole duration). `Err` only when the runtime is shutting down.
async fn off_workers<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<T> {
    match tokio::task::spawn_blocking(work).await {
        Ok(done) => Ok(done),
        // The control path does not panic; if it ever did, the panic goes on as it started.
        Err(error) => match error.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(_) => Err(std::io::Error::other("lb is shutting down")),
        },
    }
}

fn sha256(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// A SHA-256 as lowercase hex, through the digest's own `LowerHex`: how a content hash is
/// shown (status, `if_match`, sync's check of what it applied).
pub(crate) fn hex(hash: &[u8; 32]) -> String {
    format!("{:x}", sha2::digest::Output::<Sha256>::from(*hash))
}
