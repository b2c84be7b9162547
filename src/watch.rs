//! watch: owns noticing that lb.toml changed on disk and asking `apply` to reload it. It never
//! parses or writes the file itself.
//!
//! It watches the *directories* (of the path as given and of its resolved target), not the file's
//! inode, so in-place writes, editors' save-by-rename and Kubernetes ConfigMap symlink swaps
//! (`lb.toml -> ..data/lb.toml`, `..data` replaced by rename) are all seen. Events are debounced
//! briefly; `apply` skips content it has already applied, so lb's own write-back is a no-op.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::apply::{Applier, Reloaded};

/// How long to wait for an editor's burst of events (truncate, write, rename) to settle.
const DEBOUNCE: Duration = Duration::from_millis(30);
/// A safety net for file systems that drop events: re-read this often regardless.
const POLL: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
#[error("cannot watch {path}: {source}")]
pub struct Error {
    path: PathBuf,
    #[source]
    source: notify::Error,
}

/// Directories whose changes can change what `path` reads as.
fn watched_dirs(path: &Path) -> BTreeSet<PathBuf> {
    let mut dirs = BTreeSet::new();
    let parent = |p: &Path| match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    dirs.insert(parent(path));
    if let Ok(target) = std::fs::canonicalize(path) {
        dirs.insert(parent(&target));
    }
    dirs
}

/// Starts watching; the returned future reloads on every change until dropped.
pub fn start(applier: Arc<Applier>) -> Result<impl std::future::Future<Output = ()>, Error> {
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Opening or reading a file (`Access`) changes nothing; lb's own reload of the file
        // produces such events, so reacting to them would re-read the file forever.
        if matches!(&event, Ok(e) if !matches!(e.kind, notify::EventKind::Access(_))) {
            // A full channel already means "reload pending"; nothing is lost by dropping this.
            let _ = tx.try_send(());
        }
    })
    .map_err(|source| Error {
        path: applier.path().to_path_buf(),
        source,
    })?;
    for dir in watched_dirs(applier.path()) {
        watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(|source| Error {
                path: dir.clone(),
                source,
            })?;
    }
    Ok(async move {
        // The watcher stops when dropped; keep it alive as long as this future.
        let _watcher = watcher;
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
            match applier.reload().await {
                Ok(Reloaded::Applied { generation }) => {
                    tracing::info!(generation, "reloaded {}", applier.path().display())
                }
                Ok(Reloaded::Unchanged | Reloaded::StillInvalid) => {}
                Err(error) => {
                    tracing::error!("reload rejected, still serving the previous config:\n{error}")
                }
            }
        }
    })
}
