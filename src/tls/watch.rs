//! tls::watch: owns noticing that a certificate, key or client-CA file, or the applied
//! config's `[tls]` section, changed, and reloading the [`Store`] from them. It never reads
//! lb.toml (`apply` hands it each applied `[tls]`) and never writes a file.
//!
//! Renewals change the files, not lb.toml: certbot points `live/NAME/*.pem` symlinks at new
//! files in `archive/`, a Kubernetes Secret volume swaps its `..data` symlink. So, as
//! `crate::watch` does for lb.toml, it watches each file's directory (and its resolved
//! target's) for the names that can change what the path reads. A rebuild reads every file
//! again and swaps only when all pairs are good; the store skips a rebuild that read the same
//! bytes, so a spurious event costs a few small reads.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::Store;
use crate::config::TlsConfig;
use crate::watched::{relevant_names, watched_dirs};

/// How long to let a renewal's burst of writes and renames (certificate, then key) settle.
const DEBOUNCE: Duration = Duration::from_millis(200);
/// A safety net for file systems that drop events (some network and overlay mounts).
const POLL: Duration = Duration::from_secs(30);

/// Why the certificate files' directories cannot be watched; renewals then need a reload.
#[derive(Debug, thiserror::Error)]
#[error("cannot watch {path} for certificate renewals: {source}")]
pub struct WatchError {
    path: PathBuf,
    #[source]
    source: notify::Error,
}

/// Every file the settings read.
fn watched_files(settings: &TlsConfig) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for pair in &settings.certificates {
        files.push(pair.cert.clone());
        files.push(pair.key.clone());
    }
    files.extend(settings.client_ca.clone());
    files
}

/// Starts watching; the returned future reloads `store` on every change until dropped.
/// `applied` carries the `[tls]` of each config `apply` applies (a broken lb.toml is never
/// applied, so it leaves the certificates as they are; a file without `[tls]` too).
pub fn start(
    store: Arc<Store>,
    applied: tokio::sync::watch::Receiver<Option<TlsConfig>>,
) -> Result<impl Future<Output = ()>, WatchError> {
    let (tx, rx) = mpsc::channel::<()>(1);
    let watcher = watch_files(&watched_files(&store.settings()), tx.clone())?;
    Ok(run(store, applied, watcher, tx, rx))
}

async fn run(
    store: Arc<Store>,
    mut applied: tokio::sync::watch::Receiver<Option<TlsConfig>>,
    // Kept alive for as long as this future: dropping it stops the events.
    mut _watcher: notify::RecommendedWatcher,
    tx: mpsc::Sender<()>,
    mut rx: mpsc::Receiver<()>,
) {
    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    poll.tick().await;
    // The start's settings are the store's already.
    applied.mark_unchanged();
    // Cleared if the applier goes away (only at shutdown): the files are still watched.
    let mut follow_applied = true;
    loop {
        let mut settings = None;
        tokio::select! {
            event = rx.recv() => {
                if event.is_none() {
                    return;
                }
                tokio::time::sleep(DEBOUNCE).await;
                while rx.try_recv().is_ok() {}
            }
            changed = applied.changed(), if follow_applied => match changed {
                Ok(()) => settings = applied.borrow_and_update().clone(),
                Err(_) => {
                    follow_applied = false;
                    continue;
                }
            },
            _ = poll.tick() => {}
        }
        // The file's `[tls]` as last applied; the running settings when it has none.
        let settings = settings.unwrap_or_else(|| store.settings());
        let before = watched_files(&store.settings());
        // File reads, PEM and X.509 parsing and key loading stay off the proxy's workers.
        let reload = {
            let store = Arc::clone(&store);
            tokio::task::spawn_blocking(move || reload(&store, &settings))
        };
        if reload.await.is_err() {
            tracing::error!("tls reload task failed; still serving the previous certificates");
        }
        let after = watched_files(&store.settings());
        if after != before {
            match watch_files(&after, tx.clone()) {
                Ok(new_watcher) => _watcher = new_watcher,
                Err(error) => {
                    tracing::error!(%error, "still watching the previous certificate files")
                }
            }
        }
    }
}

/// Rebuilds from `settings`, logging the outcome.
fn reload(store: &Store, settings: &TlsConfig) {
    match store.reload_at(settings, super::now_unix()) {
        Ok(true) => tracing::info!("tls certificates reloaded"),
        Ok(false) => {}
        Err(error) => {
            tracing::error!("tls reload rejected, still serving the previous certificates: {error}")
        }
    }
}

fn watch_files(
    files: &[PathBuf],
    tx: mpsc::Sender<()>,
) -> Result<notify::RecommendedWatcher, WatchError> {
    let mut dirs = BTreeSet::new();
    let mut names: BTreeSet<OsString> = BTreeSet::new();
    for file in files {
        dirs.extend(watched_dirs(file));
        names.extend(relevant_names(file));
    }
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if matches!(event.kind, EventKind::Access(_)) {
            return;
        }
        // No paths means the watcher lost track (a rescan): re-read to be safe.
        let ours = event.paths.is_empty()
            || event
                .paths
                .iter()
                .any(|p| p.file_name().is_some_and(|n| names.contains(n)));
        if ours {
            // A full channel already means "reload pending".
            let _ = tx.try_send(());
        }
    })
    .map_err(|source| WatchError {
        path: files.first().cloned().unwrap_or_default(),
        source,
    })?;
    for dir in dirs {
        watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(|source| WatchError {
                path: dir.clone(),
                source,
            })?;
    }
    Ok(watcher)
}
