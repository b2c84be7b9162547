//! apply::snapshot: owns building the next [`Topology`] from a validated config and swapping it
//! in: unchanged pools carried over as the same `Arc<Pool>`, backends that stay keep their
//! `Arc<Backend>`, new ones start as their first probe said, checkers reconciled. It never
//! reads or writes the file.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use super::{hex, sha256, Applier, Probed, Status, WriterState};
use crate::canary::split::Weight;
use crate::canary::Comparison;
use crate::config::{self, AdminState, BackendsSpans, Config, PoolConfig};
use crate::health::{self, Checkers};
use crate::topology::{Backend, BackendKey, Canary, CheckSettings, Pool, RateLimit, Topology};

/// The settings read once at start, as the file has them (before any flag overrides them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct StartOnly {
    listen: config::Listen,
    server: config::Server,
    token_file: Option<PathBuf>,
    tls: Option<config::ControlTls>,
    log: config::Log,
    read_only: bool,
    sync: Option<config::SyncConfig>,
}

impl StartOnly {
    pub(super) fn of(config: &Config) -> StartOnly {
        StartOnly {
            listen: config.listen.clone(),
            server: config.server.clone(),
            token_file: config.control.token_file.clone(),
            tls: config.control.tls.clone(),
            log: config.log.clone(),
            read_only: config.control.read_only,
            // `peers` is read on every reload (the rollout driver's), not at start.
            sync: config.sync.clone().map(|sync| config::SyncConfig {
                peers: Vec::new(),
                ..sync
            }),
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
                "server.read_timeout",
                a.server.read_timeout != b.server.read_timeout,
            ),
            (
                "server.send_timeout",
                a.server.send_timeout != b.server.send_timeout,
            ),
            (
                "server.tunnel_idle_timeout",
                a.server.tunnel_idle_timeout != b.server.tunnel_idle_timeout,
            ),
            (
                "server.max_connections",
                a.server.max_connections != b.server.max_connections,
            ),
            (
                "server.max_connections_per_ip",
                a.server.max_connections_per_ip != b.server.max_connections_per_ip,
            ),
            ("server.workers", a.server.workers != b.server.workers),
            (
                "server.trusted_proxies",
                a.server.trusted_proxies != b.server.trusted_proxies,
            ),
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
            ("control.read_only", a.read_only != b.read_only),
            ("sync", a.sync != b.sync),
        ]
        .into_iter()
        .filter_map(|(key, changed)| changed.then_some(key))
        .collect()
    }
}

// === impl Applier ===

impl Applier {
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
        probed: &Probed,
        previous: Option<&Pool>,
    ) -> Arc<Pool> {
        let pattern: Arc<str> = Arc::from(pool_config.pattern.as_str());
        // One per pool, shared by its checkers: 10,000 backends are not 10,000 clones.
        let tls = pool_config
            .backend_tls
            .as_ref()
            .map(|settings| super::backend_connector(&pool_config.pattern, settings));
        let settings = Arc::new(CheckSettings::of(pool_config, tls.clone()));
        let canary_backends = pool_config.canary_backends();
        let mut wanted = Vec::with_capacity(pool_config.backends.len() + canary_backends.len());
        let backends = pool_config
            .backends
            .iter()
            .chain(canary_backends)
            .map(|declared| {
                let key = BackendKey {
                    pattern: Arc::clone(&pattern),
                    backend: declared.addr.clone(),
                };
                let speaking = checkers.backend_speaking(&key, pool_config.backend_tls.as_ref());
                let backend = match speaking {
                    Some(existing) => {
                        let before = existing.admin();
                        if before != declared.state {
                            let rotation = match declared.state {
                                AdminState::Enabled if existing.is_healthy() => "back in rotation",
                                AdminState::Enabled => "in rotation once its checks pass",
                                AdminState::Drain => "out of rotation, requests in flight finish",
                                AdminState::Disabled => "out of rotation, not checked",
                            };
                            health::announce(
                                checkers.events(),
                                &pattern,
                                (existing, true),
                                health::Cause::Admin,
                                format!(
                                    "{} -> {}: {rotation}",
                                    before.as_str(),
                                    declared.state.as_str()
                                ),
                            );
                        }
                        Arc::clone(existing)
                    }
                    // New to the pool: healthy or sick as its first probe said (sick if none).
                    None => {
                        let backend = Backend::new(declared.addr.clone(), false);
                        // The first probe is a check like the checker's: counted and logged.
                        if let Some(probe) = probed.get(&key) {
                            health::record(
                                &key,
                                &backend,
                                &settings.checks,
                                &probe.outcome,
                                probe.took,
                                checkers.events(),
                            );
                        }
                        // Only a pool that ran before gains it by a reload; the first load adds
                        // every backend.
                        if previous.is_some() {
                            health::announce(
                                checkers.events(),
                                &pattern,
                                (&backend, true),
                                health::Cause::Reload,
                                format!("added to the pool, {}", declared.state.as_str()),
                            );
                        }
                        Arc::new(backend)
                    }
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
        if let Some(previous) = previous {
            for gone in previous
                .backends
                .iter()
                .filter(|b| !wanted.iter().any(|(addr, _, _)| *addr == b.addr))
            {
                health::announce(
                    checkers.events(),
                    &pattern,
                    (gone, false),
                    health::Cause::Reload,
                    "removed from the pool".to_owned(),
                );
            }
        }
        checkers.reconcile_pool(&pattern, wanted);
        let canary = pool_config.canary.as_ref().map(|canary| Canary {
            weight: Weight::from_percent(canary.weight),
            sticky: canary.sticky.clone(),
            force_header: canary.force_header.as_deref().map(Box::from),
            // The same comparison while the pool keeps a canary: the split stays exact and the
            // windows keep their figures through a weight change.
            comparison: previous.and_then(|p| p.canary.as_ref()).map_or_else(
                || Arc::new(Comparison::new()),
                |c| Arc::clone(&c.comparison),
            ),
        });
        // The same buckets while the limit is unchanged: a reload gives no client a fresh burst.
        let rate_limit = pool_config
            .rate_limit
            .as_ref()
            .map(|limit| RateLimit::of(limit, previous.and_then(|p| p.rate_limit.as_ref())));
        Arc::new(Pool {
            pattern,
            pool_type: pool_config.pool_type,
            connect_timeout: pool_config.connect_timeout,
            request_timeout: pool_config.request_timeout,
            retries: pool_config.retries,
            backend_tls: tls,
            backends,
            n_stable: pool_config.backends.len(),
            canary,
            rate_limit,
        })
    }

    /// Builds the next topology from a valid config, swaps it in, and reconciles the checkers.
    /// Backends that stay declared keep their `Arc<Backend>`: health, in-flight and pooled
    /// connections survive. A backend new to its pool starts as its first probe (in `probed`,
    /// taken a moment ago) said. `applied_by` says what made this generation ([`Status`]).
    pub(super) fn apply(
        &self,
        state: &mut WriterState,
        (mut config, spans): (Config, BackendsSpans),
        text: &str,
        probed: &Probed,
        only: Option<usize>,
        applied_by: String,
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
        // What changes, key by key, logged as `lbctl plan` shows it (a backend edit: that pool).
        let changes = match (only, state.applied.as_ref()) {
            (Some(i), Some(_)) => config::diff::pool_diff(&applied_pools[i], &config.pools[i]),
            (None, Some(applied)) => config::diff::diff(applied, &config),
            (_, None) => Vec::new(),
        };
        super::plan::log_changes(&changes, generation);
        let pools = if let Some(i) = only {
            let mut pools = previous.pools.clone();
            let before = previous.pools.get(i).map(|p| &**p);
            pools[i] = self.build_pool(&mut state.checkers, &config.pools[i], probed, before);
            pools
        } else {
            let mut pools = Vec::with_capacity(config.pools.len());
            let previous_pools: HashMap<&str, &Pool> =
                previous.pools.iter().map(|p| (&*p.pattern, &**p)).collect();
            for pool_config in &config.pools {
                if let Some((before, pool)) = carried.get(pool_config.pattern.as_str()) {
                    if *before == pool_config {
                        pools.push(Arc::clone(pool));
                        continue;
                    }
                }
                let before = previous_pools.get(pool_config.pattern.as_str()).copied();
                pools.push(self.build_pool(&mut state.checkers, pool_config, probed, before));
            }
            let declared: HashSet<&str> = config.pools.iter().map(|p| p.pattern.as_str()).collect();
            for gone in previous
                .pools
                .iter()
                .filter(|p| !declared.contains(&*p.pattern))
            {
                for backend in gone.backends.iter() {
                    health::announce(
                        state.checkers.events(),
                        &gone.pattern,
                        (backend, false),
                        health::Cause::Reload,
                        "its pool was removed".to_owned(),
                    );
                }
            }
            state
                .checkers
                .retain_pools(|pattern| declared.contains(pattern));
            pools
        };
        self.topology.store(Arc::new(Topology {
            generation,
            routes: Arc::clone(&config.routes),
            pools,
        }));
        self.tls.send_if_modified(|applied| {
            let changed = *applied != config.tls;
            if changed {
                applied.clone_from(&config.tls);
            }
            changed
        });
        let rollouts: Vec<PoolConfig> = config
            .pools
            .iter()
            .filter(|p| p.rollout.is_some())
            .cloned()
            .collect();
        self.rollouts.store(Arc::new(rollouts));
        let peers = config.sync.as_ref().map(|s| s.peers.clone());
        if **self.peers.load() != peers.clone().unwrap_or_default() {
            self.peers.store(Arc::new(peers.unwrap_or_default()));
        }
        let hash = sha256(text);
        state.applied_hash = Some(hash);
        state.applied = Some(config);
        state.backends_spans = spans;
        self.status.store(Arc::new(Status {
            generation,
            content_hash: hex(&hash),
            applied_at: SystemTime::now(),
            applied_by,
            last_error: None,
        }));
        tracing::info!(generation, path = %self.path.display(), "config applied");
        generation
    }
}
