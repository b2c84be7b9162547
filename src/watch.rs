//! watch: owns noticing that lb.toml changed on disk and asking `apply` to reload it. It never
//! parses or writes the file itself.
//!
//! It watches the *directories* (of the path as given and of its resolved target), not the file's
//! inode, so in-place writes, editors' save-by-rename and Kubernetes ConfigMap symlink swaps
//! (`lb.toml -> ..data/lb.toml`, `..data` replaced by rename) are all seen. Events are debounced
//! briefly; `apply` skips content it has already applied, so lb's own write-back is a no-op, and
//! an event for a file that is still the one lb wrote (by `stat`, then byte for byte) is not
//! settled or reloaded. A save that lands after lb's write is never taken for it: the `stat` lb
//! compares with is taken through its own handle on the file it wrote, and the bytes must match.
//!
//! A periodic re-read backs notification up on file systems that drop events. `LB_WATCH_POLL=off`
//! in lb's environment at start turns it off, so tests of the watcher fail when notification
//! fails instead of passing through the poll.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::apply::{Applier, Reloaded};
use crate::watched::{relevant_names, watched_dirs};

/// How long to wait for an editor's burst of events (truncate, write, rename) to settle.
const DEBOUNCE: Duration = Duration::from_millis(30);
/// A safety net for file systems that drop events: re-read this often regardless.
const POLL: Duration = Duration::from_secs(2);
/// The environment variable that turns [`POLL`] off when it says `off`.
const POLL_SWITCH: &str = "LB_WATCH_POLL";

/// Why the config file cannot be watched.
#[derive(Debug, thiserror::Error)]
#[error("cannot watch {path}: {source}")]
pub struct Error {
    path: PathBuf,
    #[source]
    source: notify::Error,
}

/// Waits (bounded) until the file reads the same twice, DEBOUNCE apart, and is not empty;
/// returns that content, which is what the reload may apply.
///
/// An in-place save truncates the file and then writes it; a reload between the two would apply
/// an empty or cut-off file, which can be *valid* TOML that declares fewer pools. Waiting for the
/// content to settle closes that window; a zero-length file is only taken as finished once it
/// has stayed empty for the whole bounded wait (then, or when it never held still within the bound,
/// `None`: the reload applies what it reads).
async fn settle(path: &Path) -> Option<Vec<u8>> {
    // tokio::fs reads on the blocking pool, off the proxy's workers.
    let mut previous = tokio::fs::read(path).await.ok();
    for _ in 0..20 {
        tokio::time::sleep(DEBOUNCE).await;
        let current = tokio::fs::read(path).await.ok();
        if current == previous && current.as_ref().is_some_and(|c| !c.is_empty()) {
            return current;
        }
        previous = current;
    }
    None
}

/// Starts watching; the returned future reloads on every change until dropped.
pub fn start(applier: Arc<Applier>) -> Result<impl std::future::Future<Output = ()>, Error> {
    let polling = std::env::var_os(POLL_SWITCH).is_none_or(|value| value != "off");
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let names = relevant_names(applier.path());
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Opening or reading a file changes nothing; lb's own reload of the file produces such
        // events, so reacting to them would re-read the file forever. Closing a file that was
        // written does matter: it marks the end of an in-place save.
        let relevant = |kind: &EventKind| match kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
            EventKind::Access(_) => false,
            _ => true,
        };
        // No paths means the watcher lost track (a rescan): re-read to be safe.
        let ours = |paths: &[PathBuf]| {
            paths.is_empty()
                || paths
                    .iter()
                    .any(|p| p.file_name().is_some_and(|n| names.contains(n)))
        };
        if matches!(&event, Ok(e) if relevant(&e.kind) && ours(&e.paths)) {
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
            let polled = tokio::select! {
                event = rx.recv() => {
                    if event.is_none() {
                        return;
                    }
                    while rx.try_recv().is_ok() {}
                    false
                }
                _ = poll.tick(), if polling => true,
            };
            // lb's own write-back (a control-API change) produces events too; when the file is
            // still the one lb wrote and applied, re-reading a large file twice to settle and
            // once more under the writer lock would only compete with the next change. A save after
            // it changes the stat or the bytes; the periodic poll never takes this shortcut.
            if !polled {
                let own = Arc::clone(&applier);
                let is_own_write = tokio::task::spawn_blocking(move || own.is_own_write()).await;
                if is_own_write.unwrap_or(false) {
                    continue;
                }
            }
            let settled = settle(applier.path()).await;
            match applier.reload_settled(settled).await {
                Ok(Reloaded::Applied { generation }) => {
                    tracing::info!(generation, "reloaded {}", applier.path().display())
                }
                Ok(Reloaded::Unchanged | Reloaded::StillInvalid) => {}
                // Another save started after this one settled: its own event (or the poll)
                // reloads it once it settles.
                Ok(Reloaded::Moving) => {
                    tracing::debug!(
                        "{} changed again while reloading; waiting for it to settle",
                        applier.path().display()
                    )
                }
                Err(error) => {
                    tracing::error!("reload rejected, still serving the previous config:\n{error}")
                }
            }
        }
    })
}

#[cfg(test)]
mod tests;
