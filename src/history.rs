//! history: owns the opt-in git history of control-API changes (`[control] git_commit = true`).
//! It commits lb.toml only — never other staged changes — and never fails a mutation: a failed
//! commit is logged and counted. It never edits the file.
//!
//! It runs the `git` binary through `git` (why the binary: see there).

use std::path::Path;
use std::sync::atomic::Ordering;

use crate::git;
use crate::metrics::Global;

/// Commits the current content of `path` with `message` (`Mutation::commit_message`).
pub async fn commit(path: &Path, message: &str, metrics: &Global) {
    match try_commit(path, message).await {
        Ok(()) => {
            metrics.git_commits_ok.fetch_add(1, Ordering::Relaxed);
        }
        Err(error) => {
            metrics.git_commits_failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(path = %path.display(), %error, "git commit of the control change failed (the change itself was applied)");
        }
    }
}

async fn try_commit(path: &Path, message: &str) -> Result<(), String> {
    // Commit the real file, not a symlink to it.
    let file = std::fs::canonicalize(path)
        .map_err(|e| format!("cannot resolve {}: {e}", path.display()))?;
    let dir = file.parent().ok_or("the config has no parent directory")?;
    let name = file
        .file_name()
        .and_then(|name| name.to_str())
        .ok_or("the config's file name is not UTF-8")?;
    // An author for machines that have none configured (`git::run` sets the committer).
    let author_name = std::env::var("GIT_AUTHOR_NAME").unwrap_or_else(|_| "lb".into());
    let author_email = std::env::var("GIT_AUTHOR_EMAIL").unwrap_or_else(|_| "lb@localhost".into());
    let env = [
        ("GIT_AUTHOR_NAME", author_name.as_str()),
        ("GIT_AUTHOR_EMAIL", author_email.as_str()),
    ];
    git::stdout(dir, &["add", "--", name], None, &env)
        .await
        .map_err(|e| e.to_string())?;
    // `--only` commits just this path's content and leaves anything else staged untouched.
    git::stdout(
        dir,
        &["commit", "--quiet", "--only", "-m", message, "--", name],
        None,
        &env,
    )
    .await
    .map(drop)
    .map_err(|e| e.to_string())
}
