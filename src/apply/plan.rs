//! apply::plan: what applying a candidate text would change, without applying it: the candidate
//! passes the same acceptance rules as a reload ([`super::accept`]), is diffed against the applied
//! config with [`config::diff`] (the function the reload log uses), and every pool whose health
//! check or `backend_tls` changes has its backends probed once the new way. It never writes the
//! file, swaps a snapshot or touches a checker.

use std::sync::Arc;

use super::{accept, backend_connector, off_workers, Applier, Unprobed};
use crate::config::{self, diff::Change, AdminState, Diagnostic};
use crate::topology::BackendKey;

/// What a candidate would change on the running instance.
#[derive(Debug)]
pub struct Plan {
    /// Every key that differs, in file order.
    pub changes: Vec<Change>,
    /// One per pool whose checks would change, in the candidate's pool order.
    pub forecasts: Vec<Forecast>,
    /// The applied generation compared with.
    pub generation: u64,
    /// The SHA-256 (hex) of the applied file compared with.
    pub content_hash: String,
}

/// A pool's declared backends probed with the candidate's checks.
#[derive(Debug)]
pub struct Forecast {
    /// The pool.
    pub pattern: String,
    /// How many backends were probed (every one but the disabled).
    pub probed: usize,
    /// The backends that failed, with why.
    pub failing: Vec<(config::BackendAddr, String)>,
    /// No enabled backend passes: the pool would answer 503.
    pub pool_down: bool,
}

/// Why no plan was made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The candidate is not a file lb would apply.
    #[error("the candidate is invalid: {}", super::join(diagnostics))]
    Invalid {
        /// Every problem found.
        diagnostics: Vec<Diagnostic>,
    },
    /// lb is shutting down.
    #[error("lb is shutting down")]
    ShuttingDown,
}

impl Applier {
    /// What applying `text` as lb.toml would change, with a forecast of every changed health
    /// check probed against its pool's backends. Changes nothing.
    pub async fn plan(self: &Arc<Self>, text: String) -> Result<Plan, PlanError> {
        let state = Arc::clone(&self.state).lock_owned().await;
        let this = Arc::clone(self);
        let (changes, probes, status) = off_workers(move || {
            let mut candidate = accept(&text, state.applied.as_ref(), &this.path)
                .map_err(|refused| PlanError::Invalid {
                    diagnostics: refused.diagnostics,
                })?
                .0;
            candidate.resolve_paths(&this.path);
            let applied = state.applied.as_ref();
            let changes = applied.map_or_else(Vec::new, |a| config::diff::diff(a, &candidate));
            let mut probes = Vec::new();
            for pool in &candidate.pools {
                let Some(running) = applied.and_then(|a| a.pool(&pool.pattern)) else {
                    continue;
                };
                if running.health_checks == pool.health_checks
                    && running.backend_tls == pool.backend_tls
                {
                    continue;
                }
                let tls = pool
                    .backend_tls
                    .as_ref()
                    .map(|settings| backend_connector(&pool.pattern, settings));
                let pattern: Arc<str> = Arc::from(pool.pattern.as_str());
                let wanted: Vec<(Unprobed, AdminState)> = pool
                    .backends
                    .iter()
                    .filter(|b| b.state != AdminState::Disabled)
                    .map(|b| {
                        let unprobed = Unprobed {
                            key: BackendKey {
                                pattern: Arc::clone(&pattern),
                                backend: b.addr.clone(),
                            },
                            checks: pool.health_checks.clone(),
                            tls: tls.clone(),
                        };
                        (unprobed, b.state)
                    })
                    .collect();
                probes.push((pool.pattern.clone(), wanted));
            }
            Ok::<_, PlanError>((changes, probes, this.status.load_full()))
        })
        .await
        .map_err(|_| PlanError::ShuttingDown)??;
        let mut forecasts = Vec::with_capacity(probes.len());
        for (pattern, wanted) in probes {
            let states: Vec<(config::BackendAddr, AdminState)> = wanted
                .iter()
                .map(|(u, state)| (u.key.backend.clone(), *state))
                .collect();
            let results = self
                .probe_all(wanted.into_iter().map(|(u, _)| u).collect())
                .await;
            let mut failing = Vec::new();
            let mut enabled_passing = false;
            for (backend, state) in &states {
                let outcome = results
                    .iter()
                    .find(|(key, _)| &key.backend == backend)
                    .map(|(_, probe)| probe.outcome.clone())
                    .unwrap_or_else(|| Err("the probe did not finish in time".to_owned()));
                match outcome {
                    Ok(()) => enabled_passing |= *state == AdminState::Enabled,
                    Err(reason) => failing.push((backend.clone(), reason)),
                }
            }
            forecasts.push(Forecast {
                pattern,
                probed: states.len(),
                failing,
                pool_down: !states.is_empty() && !enabled_passing,
            });
        }
        Ok(Plan {
            changes,
            forecasts,
            generation: status.generation,
            content_hash: status.content_hash.clone(),
        })
    }
}

/// The changes of a reload, logged one line each, so what `lbctl plan` showed is what the log
/// says when the file is applied.
pub(super) fn log_changes(changes: &[Change], generation: u64) {
    for change in changes {
        tracing::info!(
            generation,
            key = %change.key,
            before = change.before.as_deref().unwrap_or("-"),
            after = change.after.as_deref().unwrap_or("-"),
            restart = change.restart,
            "config change"
        );
    }
}
