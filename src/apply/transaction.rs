//! apply::transaction: owns a mutation's read → edit → swap transaction: every read is checked
//! against the caller's precondition, the edit is computed from that very read, and
//! `config::write::replace` puts the result in place only over it. It never builds snapshots
//! (that is `snapshot`) and never probes (the caller does, without the writer lock).

use std::sync::Arc;

use super::spans::{known_backends_span, shifted};
use super::{
    accept, hex, off_workers, sha256, unprobed, Applier, MutateError, MutateOptions, Mutation,
    Precondition, Probed, Stamp, Step, WriterState, Written,
};
use crate::config::edit::{self, Edited};
use crate::config::write::{self, Replaced};
use crate::config::{self, BackendAddr, BackendsSpans, Config, PoolConfig};
use crate::topology::BackendKey;

/// How many times a mutation re-reads the file and redoes its edit when a save lands while it
/// is being written, before it fails with ABORTED (the file as the last save left it).
const MAX_EDIT_ATTEMPTS: usize = 5;

/// A mutation's result, ready to be written and applied.
struct ConfigEdit {
    text: String,
    parsed: (Config, BackendsSpans),
    /// The one pool that may differ from the applied config (see [`Applier::apply`]).
    only: Option<usize>,
}

// === impl Applier ===

impl Applier {
    /// One round of a mutation, under the writer lock, on a blocking thread: the read, edit,
    /// swap transaction and the apply. Returns the generation and whether to commit to git.
    pub(super) fn mutate_locked(
        &self,
        state: &mut WriterState,
        mutation: &Mutation,
        options: &MutateOptions,
        probed: &Probed,
        may_probe: bool,
    ) -> Result<Step<(u64, bool)>, MutateError> {
        let mut attempt = 0;
        let (edit, metadata) = loop {
            attempt += 1;
            let base = write::read(&self.path).map_err(|source| MutateError::Read {
                path: self.path.clone(),
                source,
            })?;
            self.check_precondition(state, &base.text, &options.precondition)?;
            let edit = self.edit_config(state, &base.text, mutation)?;
            // Backends new to a pool are probed before the snapshot that declares them: all of
            // the edited config's, or only the edited pool's when the others are the applied ones.
            let pools = match edit.only {
                Some(i) => edit.parsed.0.pools.get(i..=i).unwrap_or_default(),
                None => &edit.parsed.0.pools[..],
            };
            let wanted = unprobed(&state.checkers, pools, probed, &self.path);
            if !wanted.is_empty() {
                if !may_probe {
                    return Err(MutateError::Aborted {
                        reason:
                            "the file kept declaring backends not yet probed; nothing was changed"
                                .to_owned(),
                    });
                }
                return Ok(Step::Probe(wanted));
            }
            if let Mutation::AddBackend { pattern, backend } = mutation {
                let key = BackendKey {
                    pattern: Arc::from(pattern.as_str()),
                    backend: backend.clone(),
                };
                if let Some(Err(reason)) = probed.get(&key).map(|p| &p.outcome) {
                    return Err(MutateError::BackendUnhealthy {
                        backend: backend.clone(),
                        reason: reason.clone(),
                    });
                }
            }
            // Until the new file is recorded, a watcher event means "re-read".
            self.written.store(None);
            match write::replace(&self.path, &edit.text, &base)? {
                Replaced::Written(metadata) => break (edit, metadata),
                Replaced::Changed if attempt < MAX_EDIT_ATTEMPTS => continue,
                Replaced::Changed => {
                    return Err(MutateError::Aborted {
                        reason: format!(
                            "{} changed again each of the {attempt} times the edit was redone on it; nothing was changed",
                            self.path.display()
                        ),
                    })
                }
            }
        };
        // Recorded before the apply below (which this lock guarantees will follow), so the
        // event of the swap, arriving meanwhile, already finds it. The metadata comes from lb's
        // own handle on the file it wrote, so a save landing after the swap never matches it.
        let text: Arc<str> = Arc::from(edit.text);
        self.written
            .store(Stamp::from_metadata(&metadata).map(|stamp| {
                Arc::new(Written {
                    stamp,
                    text: Arc::clone(&text),
                })
            }));
        let git_commit = edit.parsed.0.control.git_commit;
        let applied_by = match &options.actor {
            Some(actor) => format!("{} by {actor}", mutation.describe()),
            None => mutation.describe(),
        };
        let generation = self.apply(state, edit.parsed, &text, probed, edit.only, applied_by);
        Ok(Step::Done((generation, git_commit)))
    }

    /// `mutation` applied to `text`, a file that is not (or not yet) this instance's: the new
    /// text and its validated config. `sync` computes a fleet-wide change from the remote
    /// head's file with it. The precondition's `content_hash` is checked against `text`; its
    /// `generation` against what runs here, which must then be `text` itself. The parsing and
    /// hashing run off the proxy's workers.
    pub async fn edit_detached(
        self: &Arc<Self>,
        text: String,
        mutation: Mutation,
        precondition: Precondition,
    ) -> Result<(String, Config), MutateError> {
        let this = Arc::clone(self);
        // Under the writer lock only to read what runs, which the remote head's file is
        // held against; nothing here is written.
        let state = Arc::clone(&self.state).lock_owned().await;
        off_workers(move || {
            let applied = state.applied.as_ref();
            this.edit_detached_here(&text, &mutation, &precondition, applied)
        })
        .await
        .map_err(|source| MutateError::Read {
            path: self.path.clone(),
            source,
        })?
    }

    /// [`Applier::edit_detached`], on the caller's thread.
    fn edit_detached_here(
        &self,
        text: &str,
        mutation: &Mutation,
        precondition: &Precondition,
        applied: Option<&Config>,
    ) -> Result<(String, Config), MutateError> {
        if let Some(expected) = &precondition.content_hash {
            let actual = hex(&sha256(text));
            if !actual.eq_ignore_ascii_case(expected.trim()) {
                return Err(MutateError::Aborted {
                    reason: format!("content sha256 is {actual}, you expected {expected}"),
                });
            }
        }
        if let Some(expected) = precondition.generation {
            let status = self.status.load();
            if status.generation != expected || status.content_hash != hex(&sha256(text)) {
                return Err(MutateError::Aborted {
                    reason: format!(
                        "generation is {}, you expected {expected}, or the remote head is not applied here yet",
                        status.generation
                    ),
                });
            }
        }
        // The remote head's file is held to the rules this instance would apply it by: a
        // change computed from a file lb would refuse is never pushed.
        let (current, _) =
            accept(text, applied, &self.path).map_err(|refused| MutateError::FileInvalid {
                path: self.path.clone(),
                diagnostics: refused.diagnostics,
            })?;
        let edited = edit_text(&current.pools, text, mutation, None)?;
        let parsed = config::parse(&edited.text)
            .map_err(|diagnostics| MutateError::Rejected { diagnostics })?;
        Ok((edited.text, parsed))
    }

    /// `mutation` applied to `text`: the new text and its validated config.
    fn edit_config(
        &self,
        state: &WriterState,
        text: &str,
        mutation: &Mutation,
    ) -> Result<ConfigEdit, MutateError> {
        let parsed;
        // `is_applied`: `current` is the applied config itself, so a result that differs
        // from it in one pool differs from what runs in that pool only.
        let (current, spans, is_applied) = match &state.applied {
            Some(applied) if state.applied_hash == Some(sha256(text)) => {
                (applied, &state.backends_spans, true)
            }
            _ => {
                parsed = accept(text, state.applied.as_ref(), &self.path).map_err(|refused| {
                    MutateError::FileInvalid {
                        path: self.path.clone(),
                        diagnostics: refused.diagnostics,
                    }
                })?;
                (&parsed.0, &parsed.1, false)
            }
        };
        let known = known_backends_span(current, spans, text, mutation.pattern());
        let edited = edit_text(&current.pools, text, mutation, known.clone())?;
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
                    text,
                    &edited.text,
                    mutation.pattern(),
                    span,
                )?;
                Some(((config, spans), index))
            });
        let (parsed, only) = match reparsed {
            Some((parsed, index)) => (parsed, is_applied.then_some(index)),
            None => (
                config::parse_with_spans(&edited.text)
                    .map_err(|diagnostics| MutateError::Rejected { diagnostics })?,
                None,
            ),
        };
        Ok(ConfigEdit {
            text: edited.text,
            parsed,
            only,
        })
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
}

/// Computes the edited text, checking existence against the file as it is now. (AddBackend's
/// probe is the caller's: a backend new to a pool is probed before any snapshot declares it.)
fn edit_text(
    current: &[PoolConfig],
    text: &str,
    mutation: &Mutation,
    known: Option<std::ops::Range<usize>>,
) -> Result<Edited, MutateError> {
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
            Ok(whole(edit::add_pool(text, pattern, spec)?))
        }
        Mutation::RemovePool { pattern } => {
            pool(pattern)?;
            Ok(whole(edit::remove_pool(text, pattern)?))
        }
        Mutation::AddBackend { pattern, backend } => {
            let pool = pool(pattern)?;
            if pool.backend(backend).is_some() {
                return Err(MutateError::BackendExists {
                    pattern: pattern.clone(),
                    backend: backend.clone(),
                });
            }
            Ok(edit::add_backend_edit(
                text,
                pattern,
                &backend.to_string(),
                known,
            )?)
        }
        Mutation::RemoveBackend { pattern, backend } => {
            if pool(pattern)?.backend(backend).is_none() {
                return Err(MutateError::BackendNotFound {
                    pattern: pattern.clone(),
                    backend: backend.clone(),
                });
            }
            let matches = |entry: &str| entry.parse::<BackendAddr>().as_ref() == Ok(backend);
            Ok(edit::remove_backend_edit(text, pattern, &matches, known)?)
        }
        Mutation::SetBackendState {
            pattern,
            backend,
            state,
        } => {
            let pool = pool(pattern)?;
            let matches = |entry: &str| entry.parse::<BackendAddr>().as_ref() == Ok(backend);
            let canary = pool.canary_backends().iter().find(|b| &b.addr == backend);
            if let Some(declared) = canary {
                if declared.state == *state {
                    return Ok(whole(text.to_owned()));
                }
                return Ok(whole(edit::set_canary_backend_state(
                    text,
                    pattern,
                    &matches,
                    state.as_str(),
                )?));
            }
            let declared = pool
                .backend(backend)
                .ok_or_else(|| MutateError::BackendNotFound {
                    pattern: pattern.clone(),
                    backend: backend.clone(),
                })?;
            if declared.state == *state {
                // Idempotent: nothing to write, and no need to fail a rollout script.
                return Ok(whole(text.to_owned()));
            }
            Ok(edit::set_backend_state_edit(
                text,
                pattern,
                &matches,
                state.as_str(),
                known,
            )?)
        }
        Mutation::Rollout {
            pattern,
            change,
            expect,
            ..
        } => {
            let pool = pool(pattern)?;
            if let Some(expected) = expect {
                let now = pool.rollout.as_ref().map(|r| r.progress.at());
                if now.as_ref() != Some(expected) {
                    return Err(MutateError::Aborted {
                        reason: format!(
                            "the rollout of {pattern:?} moved since this change was decided (it is {}); nothing was changed",
                            now.map_or_else(|| "gone".to_owned(), |at| at.to_string())
                        ),
                    });
                }
            }
            Ok(whole(edit::edit_rollout(text, pattern, change)?))
        }
    }
}

/// An edit whose result is parsed in full.
fn whole(text: String) -> Edited {
    Edited {
        text,
        backends: None,
    }
}
