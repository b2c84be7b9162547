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

/// Every git command is stopped after this (a remote that stops answering, a hook that hangs).
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// How long a git command past its deadline has, after SIGTERM, to remove its lock files and
/// end with its children before they are all sent SIGKILL.
const GRACE: Duration = Duration::from_secs(2);

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

/// Runs git in `dir` with no terminal prompt, stopped (with its children) after [`TIMEOUT`];
/// `Ok` whatever its exit status, `Err` when it could not run or took too long.
pub async fn run(
    dir: &Path,
    args: &[&str],
    stdin: Option<&str>,
    env: &[(&str, &str)],
) -> Result<Output, Error> {
    run_within(TIMEOUT, dir, args, stdin, env).await
}

/// [`run`] with a deadline of `timeout`. git runs in a process group of its own, so what it
/// starts (ssh, hooks, credential helpers) is stopped with it: past the deadline the group is
/// sent SIGTERM (git removes its lock files), then SIGKILL after [`GRACE`]; a call dropped
/// before git ends sends the group SIGKILL.
async fn run_within(
    timeout: Duration,
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
    #[cfg(unix)]
    command.process_group(0);
    let mut child = command
        .spawn()
        .map_err(|e| failed(format!("cannot run git (is it installed?): {e}")))?;
    let group = Group::of(&child);
    let mut work = std::pin::pin!(async move {
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
    });
    if let Ok(result) = tokio::time::timeout(timeout, &mut work).await {
        group.ended();
        return result;
    }
    group.terminate();
    if tokio::time::timeout(GRACE, &mut work).await.is_ok() {
        group.ended();
    }
    // Not ended: dropping `group` sends SIGKILL to all of it.
    Err(failed(format!("no answer within {timeout:?}")))
}

/// The process group of a running git (its pid: it is spawned with `process_group(0)`); sent
/// SIGKILL when dropped before [`Group::ended`].
struct Group {
    #[cfg(unix)]
    leader: Option<rustix::process::Pid>,
    /// git has not been seen to end.
    running: bool,
}

impl Group {
    fn of(child: &tokio::process::Child) -> Group {
        Group {
            #[cfg(unix)]
            leader: child
                .id()
                .and_then(|id| i32::try_from(id).ok())
                .and_then(rustix::process::Pid::from_raw),
            running: child.id().is_some(),
        }
    }

    /// Asks every process of the group to stop.
    fn terminate(&self) {
        #[cfg(unix)]
        self.signal(rustix::process::Signal::TERM);
    }

    /// git has exited and its output is read: nothing is left to stop.
    fn ended(mut self) {
        self.running = false;
    }

    #[cfg(unix)]
    fn signal(&self, signal: rustix::process::Signal) {
        if let (true, Some(leader)) = (self.running, self.leader) {
            // ESRCH: every process of the group has already exited.
            let _ = rustix::process::kill_process_group(leader, signal);
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        #[cfg(unix)]
        self.signal(rustix::process::Signal::KILL);
    }
}

fn subcommand(args: &[&str]) -> String {
    args.first().copied().unwrap_or_default().to_owned()
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// A git past its deadline is stopped with the processes it started (here a shell alias's
    /// `sleep`, as ssh would be), within the grace period.
    #[tokio::test]
    async fn a_git_past_its_deadline_is_stopped_with_its_children() {
        let dir = tempfile::tempdir().expect("temp dir");
        let pid_file = dir.path().join("child.pid");
        let alias = format!(
            "alias.hang=!sleep 60 & echo $! > '{}'; wait",
            pid_file.display()
        );
        let error = run_within(
            Duration::from_millis(500),
            dir.path(),
            &["-c", &alias, "hang"],
            None,
            &[],
        )
        .await
        .err()
        .expect("the deadline passes");
        assert!(error.reason.contains("no answer within"), "{error}");
        let pid = std::fs::read_to_string(&pid_file).expect("the alias wrote its child's pid");
        let stat = format!("/proc/{}/stat", pid.trim());
        // The orphaned sleep is reaped by init once killed; until then it is a zombie.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let alive = std::fs::read_to_string(&stat).is_ok_and(|s| {
                s.split_whitespace()
                    .nth(2)
                    .is_some_and(|state| state != "Z")
            });
            if !alive {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "git's child {} survived the deadline",
                pid.trim()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
