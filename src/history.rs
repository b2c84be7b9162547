//! history: owns the opt-in git history of control-API changes (`[control] git_commit = true`).
//! It commits lb.toml only — never other staged changes — and never fails a mutation: a failed
//! commit is logged and counted. It never edits the file.
//!
//! It runs the `git` binary rather than linking a git library: operators already have git where
//! they keep lb.toml in git, hooks and config (signing, identity) then behave as they expect, and
//! the error when git is absent is one clear line.

use std::path::Path;
use std::sync::atomic::Ordering;

use tokio::process::Command;

use crate::metrics::Global;

/// Commits the current content of `path` with a message naming the change and the actor.
pub async fn commit(path: &Path, change: &str, actor: Option<&str>, metrics: &Global) {
    match try_commit(path, change, actor).await {
        Ok(()) => {
            metrics.git_commits_ok.fetch_add(1, Ordering::Relaxed);
        }
        Err(error) => {
            metrics.git_commits_failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(path = %path.display(), %error, "git commit of the control change failed (the change itself was applied)");
        }
    }
}

async fn try_commit(path: &Path, change: &str, actor: Option<&str>) -> Result<(), String> {
    // Commit the real file, not a symlink to it.
    let file = std::fs::canonicalize(path)
        .map_err(|e| format!("cannot resolve {}: {e}", path.display()))?;
    let dir = file.parent().ok_or("the config has no parent directory")?;
    let name = file.file_name().ok_or("the config path has no file name")?;
    let actor = actor.unwrap_or("unknown");
    let message = format!("lb: {change}\n\nRequested by {actor} through the lb control API.\n");
    git(
        dir,
        &[
            std::ffi::OsStr::new("add"),
            std::ffi::OsStr::new("--"),
            name,
        ],
    )
    .await?;
    // `--only` commits just this path's content and leaves anything else staged untouched.
    git(
        dir,
        &[
            std::ffi::OsStr::new("commit"),
            std::ffi::OsStr::new("--quiet"),
            std::ffi::OsStr::new("--only"),
            std::ffi::OsStr::new("-m"),
            std::ffi::OsStr::new(&message),
            std::ffi::OsStr::new("--"),
            name,
        ],
    )
    .await
}

async fn git(dir: &Path, args: &[&std::ffi::OsStr]) -> Result<(), String> {
    let output = Command::new("git")
        .current_dir(dir)
        .args(args)
        // A commit identity for machines that have none configured; an operator's own
        // configuration (user.name/email) still wins.
        .env(
            "GIT_AUTHOR_NAME",
            std::env::var("GIT_AUTHOR_NAME").unwrap_or_else(|_| "lb".into()),
        )
        .env(
            "GIT_AUTHOR_EMAIL",
            std::env::var("GIT_AUTHOR_EMAIL").unwrap_or_else(|_| "lb@localhost".into()),
        )
        .env(
            "GIT_COMMITTER_NAME",
            std::env::var("GIT_COMMITTER_NAME").unwrap_or_else(|_| "lb".into()),
        )
        .env(
            "GIT_COMMITTER_EMAIL",
            std::env::var("GIT_COMMITTER_EMAIL").unwrap_or_else(|_| "lb@localhost".into()),
        )
        .output()
        .await
        .map_err(|e| format!("cannot run git (is it installed?): {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "git {} failed: {}",
            args.first()
                .map(|a| a.to_string_lossy())
                .unwrap_or_default(),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}
