//! tls::watch: owns noticing that a certificate, key or client-CA file, or lb.toml's `[tls]`
//! section, changed, and reloading the [`Store`] from them. It never writes a file.
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
use std::path::{Path, PathBuf};
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

/// Every file the settings read, and lb.toml (for its `[tls]` section).
fn watched_files(settings: &TlsConfig, config_path: &Path) -> Vec<PathBuf> {
    let mut files = vec![config_path.to_path_buf()];
    for pair in &settings.certificates {
        files.push(pair.cert.clone());
        files.push(pair.key.clone());
    }
    files.extend(settings.client_ca.clone());
    files
}

/// Starts watching; the returned future reloads `store` on every change until dropped.
/// `config_path` is lb.toml: a change to its `[tls]` section (in a file that is valid as a
/// whole) is applied too; a broken lb.toml leaves the certificates as they are.
pub fn start(
    store: Arc<Store>,
    config_path: PathBuf,
) -> Result<impl Future<Output = ()>, WatchError> {
    let (tx, rx) = mpsc::channel::<()>(1);
    let watcher = watch_files(&watched_files(&store.settings(), &config_path), tx.clone())?;
    Ok(run(store, config_path, watcher, tx, rx))
}

async fn run(
    store: Arc<Store>,
    config_path: PathBuf,
    // Kept alive for as long as this future: dropping it stops the events.
    mut _watcher: notify::RecommendedWatcher,
    tx: mpsc::Sender<()>,
    mut rx: mpsc::Receiver<()>,
) {
    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    poll.tick().await;
    loop {
        tokio::select! {
            event = rx.recv() => {
                if event.is_none() {
                    return;
                }
                tokio::time::sleep(DEBOUNCE).await;
                while rx.try_recv().is_ok() {}
            }
            _ = poll.tick() => {}
        }
        let before = watched_files(&store.settings(), &config_path);
        // File reads, PEM and X.509 parsing and key loading stay off the proxy's workers.
        let reload = {
            let store = Arc::clone(&store);
            let config_path = config_path.clone();
            tokio::task::spawn_blocking(move || reload(&store, &config_path))
        };
        if reload.await.is_err() {
            tracing::error!("tls reload task failed; still serving the previous certificates");
        }
        let after = watched_files(&store.settings(), &config_path);
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

/// Rebuilds from lb.toml's `[tls]` (when the file is valid and has one) or the running
/// settings, logging the outcome.
fn reload(store: &Store, config_path: &Path) {
    let settings = match crate::config::load(config_path) {
        Ok((config, _)) => config.tls.unwrap_or_else(|| store.settings()),
        // `apply` reports a broken lb.toml; the certificate files may still be renewed.
        Err(_) => store.settings(),
    };
    match store.reload_at(&settings, super::now_unix()) {
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
