//! git: owns running the `git` binary for `history` and `sync`: never a terminal prompt (a
//! credential git cannot find is an error, not a hang), a committer identity for machines with
//! none, and a deadline on every call. It never decides what to run or where.
//!
//! lb runs the `git` binary rather than linking a git library: operators already have git where
//! they keep lb.toml in git, and their hooks, signing, identity, ssh keys, credential helpers,
//! `insteadOf` rules and proxies then behave as they expect; the error when git is absent is
//! one clear line.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// Every git command is killed after this (a remote that stops answering, a hook that hangs).
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A git command that could not run, failed, or took too long.
#[derive(Debug, thiserror::Error)]
#[error("git {command} failed: {reason}")]
pub struct Error {
    /// The git subcommand.
    pub command: String,
    /// What git said (its stderr), or why it could not run.
    pub reason: String,
}

/// A finished git command.
pub struct Output {
    /// It exited 0.
    pub success: bool,
    /// Its standard output, as text.
    pub stdout: String,
    /// Its standard error, as text.
    pub stderr: String,
}

/// Runs git in `dir` with `stdin` on its standard input and `env` added to its environment;
/// `Ok` with its stdout when it exits 0.
pub async fn stdout(
    dir: &Path,
    args: &[&str],
    stdin: Option<&str>,
    env: &[(&str, &str)],
) -> Result<String, Error> {
    checked(args, run(dir, args, stdin, env).await?)
}

/// The stdout of a git command that exited 0; else its stderr as the error.
pub fn checked(args: &[&str], output: Output) -> Result<String, Error> {
    if output.success {
        Ok(output.stdout)
    } else {
        Err(Error {
            command: subcommand(args),
            reason: output.stderr.trim().to_owned(),
        })
    }
}

/// Runs git in `dir` with no terminal prompt, killed (with its child) after [`TIMEOUT`];
/// `Ok` whatever its exit status, `Err` when it could not run or took too long.
pub async fn run(
    dir: &Path,
    args: &[&str],
    stdin: Option<&str>,
    env: &[(&str, &str)],
) -> Result<Output, Error> {
    let failed = |reason: String| Error {
        command: subcommand(args),
        reason,
    };
    let mut command = Command::new("git");
    command
        .current_dir(dir)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env(
            "GIT_COMMITTER_NAME",
            std::env::var("GIT_COMMITTER_NAME").unwrap_or_else(|_| "lb".into()),
        )
        .env(
            "GIT_COMMITTER_EMAIL",
            std::env::var("GIT_COMMITTER_EMAIL").unwrap_or_else(|_| "lb@localhost".into()),
        )
        .envs(env.iter().copied())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let run = async {
        let mut child = command
            .spawn()
            .map_err(|e| failed(format!("cannot run git (is it installed?): {e}")))?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes())
                .await
                .map_err(|e| failed(e.to_string()))?;
        }
        let output = child
            .wait_with_output()
            .await
            .map_err(|e| failed(e.to_string()))?;
        Ok(Output {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    };
    match tokio::time::timeout(TIMEOUT, run).await {
        Ok(result) => result,
        Err(_) => Err(failed(format!("no answer within {TIMEOUT:?}"))),
    }
}

fn subcommand(args: &[&str]) -> String {
    args.first().copied().unwrap_or_default().to_owned()
}
