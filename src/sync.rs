//! sync: owns `[sync]`, the git working tree that holds lb.toml and the remote branch a fleet of
//! instances shares: fetching it on an interval, fast-forwarding the working tree, and turning a
//! control-API change into one commit pushed to the remote. It never edits lb.toml's text (the
//! edit is `apply`'s, `Applier::edit_detached`), never builds a topology (every new file goes
//! through `Applier::reload`, the path a human save takes) and never runs on the proxy's
//! workers: git runs as a child process awaited by tokio, each call bounded by
//! [`git::TIMEOUT`] (a remote that hangs fails a mutation with UNAVAILABLE).
//!
//! It runs the `git` binary (through `git`, as `history` does) rather than linking a git
//! library: fetch and push then use the operator's ssh keys, https credential helpers,
//! `insteadOf` rules and proxies exactly as the `git` they already use on that machine, which
//! libgit2 and gitoxide each reimplement in part.
//!
//! A change reaches the fleet exactly once because the remote's branch is a compare-and-swap:
//! the commit is made on the head just fetched, and a push that is not a fast-forward is
//! refused; then the *operation* is redone on the newer head (never the text patch), a bounded
//! number of times. A control-API change is applied here only from its commit on the remote,
//! through the fast-forward, so every instance applies the same text.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::apply::{Applier, MutateError, MutateOptions, Mutation, Reloaded};
use crate::config::SyncConfig;
use crate::git::{self, Output};
use crate::metrics::SyncStatus;

/// How many times a change is redone on a newer remote head when its push is refused.
/// Each lost race means another change landed, so with N instances changing at once a change
/// waits for at most N-1 others per round; 16 covers a busy fleet and still ends.
const MAX_PUSH_ATTEMPTS: u32 = 16;
/// ssh for git when the operator sets none: it fails instead of asking for a passphrase or a
/// host key on a terminal no one watches, and gives up on a host that does not answer (10 s)
/// or stops answering (two unanswered keepalives 5 s apart) within git's deadline.
const DEFAULT_SSH_COMMAND: &str =
    "ssh -o BatchMode=yes -o ConnectTimeout=10 -o ServerAliveInterval=5 -o ServerAliveCountMax=2";
/// Where the remote branch's head is kept in the working tree's repository after each fetch.
const REMOTE_REF: &str = "refs/lb-sync/remote";

/// Why a sync or a fleet-wide change did not happen.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The directory holding lb.toml is not a git working tree, or git cannot run there.
    #[error("[sync] needs the directory holding {path} to be a git working tree (git clone the remote there): {reason}")]
    NotWorkTree {
        /// The config file.
        path: PathBuf,
        /// What git said.
        reason: String,
    },
    /// The remote could not be reached or refused to talk; nothing was changed.
    #[error("cannot reach the [sync] remote {remote}; nothing was changed: {reason}")]
    Unreachable {
        /// The remote's URL.
        remote: String,
        /// What git said.
        reason: String,
    },
    /// The remote declined the push for a reason other than a moved branch (a protected
    /// branch, a hook); nothing was changed.
    #[error("{remote} declined the push to branch {branch}; nothing was changed: {reason}")]
    Declined {
        /// The remote's URL.
        remote: String,
        /// The branch.
        branch: String,
        /// What git and the remote said.
        reason: String,
    },
    /// The branch moved under every attempt; nothing was changed.
    #[error("the [sync] branch {branch} of {remote} moved before each of {attempts} pushes; nothing was changed, retry")]
    Contended {
        /// The remote's URL.
        remote: String,
        /// The branch.
        branch: String,
        /// Pushes tried.
        attempts: u32,
    },
    /// The working tree has commits the remote lacks; it is left as it is.
    #[error("the working tree at {} has commits that {remote} {branch} lacks (HEAD {local}, remote {head}); push or rebase them by hand, nothing was discarded", tree.display())]
    Diverged {
        /// The working tree's top directory.
        tree: PathBuf,
        /// Its HEAD.
        local: String,
        /// The remote's URL.
        remote: String,
        /// The branch.
        branch: String,
        /// The remote branch's head.
        head: String,
    },
    /// The working tree holds the commit, but its lb.toml does not run (invalid, or changed
    /// in the working tree); the running topology is unchanged.
    #[error("commit {commit} is not applied (the running topology is unchanged): {reason}")]
    NotApplied {
        /// The commit.
        commit: String,
        /// Why: the reload's error, or the working tree's difference.
        reason: String,
    },
    /// A local git command failed.
    #[error(transparent)]
    Git(#[from] git::Error),
    /// lb is shutting down: the git work was stopped before it ended.
    #[error("lb is shutting down; the [sync] work did not finish")]
    ShuttingDown,
    /// The change itself is refused (no such pool, precondition, invalid result...).
    #[error(transparent)]
    Mutate(#[from] MutateError),
}

/// A change that is on the remote: the commit carrying it.
#[derive(Debug, Clone)]
pub struct Committed {
    /// The commit id (hex).
    pub commit: String,
    /// Pushes refused because the branch had moved, before this one landed.
    pub retries: u32,
}

/// How many commits of one [`GitSync::commits`] question are looked up.
pub const MAX_PLACED_COMMITS: usize = 64;

/// A commit as `git log` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitInfo {
    /// The commit id (hex).
    pub commit: String,
    /// Its subject line.
    pub subject: String,
    /// Its committer time, in seconds since the Unix epoch.
    pub committed_unix: i64,
}

/// The answer of [`GitSync::commits`].
#[derive(Debug, Clone, Default)]
pub struct Commits {
    /// The served commit, when this repository has one.
    pub serving: Option<CommitInfo>,
    /// The remote head last fetched.
    pub remote_head: Option<CommitInfo>,
    /// Each commit asked about, in order, and whether it is the remote head or an ancestor.
    pub places: Vec<(String, bool)>,
}

/// One instance's link to the fleet's remote branch.
pub struct GitSync {
    applier: Arc<Applier>,
    settings: SyncConfig,
    /// The working tree's top directory (git runs there).
    top: PathBuf,
    /// lb.toml's path inside the repository, as `git show COMMIT:PATH` takes it.
    file: String,
    /// `GIT_SSH_COMMAND` for every git call: the operator's (environment), else none when the
    /// repository sets `core.sshCommand`, else [`DEFAULT_SSH_COMMAND`].
    ssh_command: Option<String>,
    /// Serialises this instance's git work (the periodic fetch, `lbctl sync`, mutations): git
    /// refuses concurrent index and ref updates, and a mutation must see its own head.
    busy: Mutex<()>,
}

// === impl GitSync ===

impl GitSync {
    /// Checks that lb.toml lives in a git working tree and publishes the initial sync status.
    pub async fn open(applier: Arc<Applier>, settings: SyncConfig) -> Result<Arc<GitSync>, Error> {
        let path = applier.path().to_path_buf();
        let not_work_tree = |reason: String| Error::NotWorkTree {
            path: path.clone(),
            reason,
        };
        let real = std::fs::canonicalize(&path).map_err(|e| not_work_tree(e.to_string()))?;
        let (Some(dir), Some(name)) = (real.parent(), real.file_name()) else {
            return Err(not_work_tree("the config path has no directory".to_owned()));
        };
        let top = git(dir, &["rev-parse", "--show-toplevel"], None, &[])
            .await
            .map_err(|e| not_work_tree(e.to_string()))?;
        let prefix = git(dir, &["rev-parse", "--show-prefix"], None, &[])
            .await
            .map_err(|e| not_work_tree(e.to_string()))?;
        let file = format!("{}{}", prefix.trim(), name.to_string_lossy());
        let configured = git(dir, &["config", "--get", "core.sshCommand"], None, &[])
            .await
            .is_ok_and(|command| !command.trim().is_empty());
        let ssh_command = match std::env::var("GIT_SSH_COMMAND") {
            Ok(command) => Some(command),
            Err(_) if configured || std::env::var_os("GIT_SSH").is_some() => None,
            Err(_) => Some(DEFAULT_SSH_COMMAND.to_owned()),
        };
        let sync = Arc::new(GitSync {
            ssh_command,
            applier,
            top: PathBuf::from(top.trim()),
            file,
            busy: Mutex::new(()),
            settings,
        });
        sync.publish(|status| {
            status.remote.clone_from(&sync.settings.remote);
            status.branch.clone_from(&sync.settings.branch);
        });
        Ok(sync)
    }

    /// The remote and branch, for messages that say where changes are made.
    pub fn settings(&self) -> &SyncConfig {
        &self.settings
    }

    /// Fetches every `interval` until `stop` is cancelled; the first fetch is immediate.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut ticks = tokio::time::interval(self.settings.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            // Errors are logged and kept in the status by `sync_here`.
            let _ = self.sync_here().await;
        }
    }

    /// Fetches the remote branch, fast-forwards the working tree to it and reloads lb.toml
    /// through the ordinary path. An unreachable remote, a diverged working tree or a broken
    /// commit changes nothing that runs; each is logged and kept as the status's `last_error`.
    /// The work is a task of its own: it finishes even when the caller stops waiting (an RPC
    /// past its deadline), so git is never stopped halfway.
    pub async fn sync_now(self: &Arc<Self>) -> Result<SyncStatus, Error> {
        let sync = Arc::clone(self);
        finished(tokio::spawn(async move { sync.sync_here().await })).await
    }

    /// [`GitSync::sync_now`], in the caller's task.
    async fn sync_here(&self) -> Result<SyncStatus, Error> {
        let _busy = self.busy.lock().await;
        let result = match self.fetch().await {
            Ok(head) => self.follow(&head).await,
            Err(error) => Err(error),
        };
        if let Err(error) = &result {
            let message = crate::errors::error_chain(error);
            let changed = self.status().last_error.as_deref() != Some(message.as_str());
            if changed {
                tracing::warn!(remote = %self.settings.remote, branch = %self.settings.branch, error = %message, "sync failed; serving the last good topology");
            }
            self.publish(|status| status.last_error = Some(message));
        }
        result.map(|()| self.status())
    }

    /// Makes `mutation` on the remote head's lb.toml, commits and pushes it; refused pushes
    /// (someone pushed first) are redone on the newer head, at most [`MAX_PUSH_ATTEMPTS`]
    /// times. Returns once the commit is on the remote (and, unless this working tree cannot
    /// be fast-forwarded, applied here); on any error the file and the remote are untouched.
    /// The work is a task of its own: it finishes even when the caller stops waiting (an RPC
    /// past its deadline), so git is never stopped halfway and a push that lands is applied.
    pub async fn mutate(
        self: &Arc<Self>,
        mutation: Mutation,
        options: MutateOptions,
    ) -> Result<Committed, Error> {
        let sync = Arc::clone(self);
        finished(tokio::spawn(async move {
            sync.mutate_here(&mutation, &options).await
        }))
        .await
    }

    /// [`GitSync::mutate`], in the caller's task.
    async fn mutate_here(
        &self,
        mutation: &Mutation,
        options: &MutateOptions,
    ) -> Result<Committed, Error> {
        let _busy = self.busy.lock().await;
        let mut probed = false;
        let mut retries = 0;
        for _attempt in 0..MAX_PUSH_ATTEMPTS {
            let head = self.fetch().await?;
            let text = self.show(&head).await?;
            let (edited, config) = self
                .applier
                .edit_detached(text.clone(), mutation.clone(), options.precondition.clone())
                .await?;
            if let (Mutation::AddBackend { pattern, backend }, false) = (mutation, probed) {
                if let Some(pool) = config.pool(pattern) {
                    self.applier
                        .probe_backend(backend, pool)
                        .await
                        .map_err(|reason| MutateError::BackendUnhealthy {
                            backend: backend.clone(),
                            reason,
                        })?;
                    probed = true;
                }
            }
            let commit = if edited == text {
                // Nothing to change (an idempotent state change): the head already carries it.
                head
            } else {
                let commit = self.commit(&head, &edited, mutation, options).await?;
                match self.push(&commit).await? {
                    Pushed::Landed => commit,
                    Pushed::Refused(reason) => {
                        retries += 1;
                        self.applier
                            .metrics()
                            .sync_push_retries
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::info!(change = %mutation.describe(), retries, %reason, "push refused, the branch moved; redoing the change on its new head");
                        // Spreads instances that collided apart before they fetch again; capped,
                        // so a change that lost often is not also the slowest to try again.
                        let jitter = fastrand::u64(0..10 * u64::from(retries.min(5)));
                        tokio::time::sleep(Duration::from_millis(jitter)).await;
                        continue;
                    }
                }
            };
            self.git(&["update-ref", REMOTE_REF, &commit], None, &[])
                .await?;
            self.publish(|status| status.remote_head = Some(commit.clone()));
            tracing::info!(%commit, retries, change = %mutation.describe(), actor = options.actor.as_deref().unwrap_or("-"), remote = %self.settings.remote, "control API change pushed");
            if let Err(error) = self.follow(&commit).await {
                // The change is on the remote: the RPC succeeded; this instance lags until the
                // working tree is fixed, which the status says.
                let message = crate::errors::error_chain(&error);
                tracing::warn!(%commit, error = %message, "change pushed but not applied here");
                self.publish(|status| status.last_error = Some(message));
            }
            return Ok(Committed { commit, retries });
        }
        Err(Error::Contended {
            remote: self.settings.remote.clone(),
            branch: self.settings.branch.clone(),
            attempts: MAX_PUSH_ATTEMPTS,
        })
    }

    /// The served commit and the remote head as `git log` shows them, and where each of
    /// `asked` (other instances' heads and served commits, as `lbctl status --fleet` sends
    /// them) stands against this instance's remote head: what lets the fleet view find the
    /// newest head by ancestry instead of by fetch time. Read-only git, so it does not wait for
    /// a fetch or a change in progress; a commit that is not hex, or beyond the first
    /// [`MAX_PLACED_COMMITS`], is not looked up.
    pub async fn commits(&self, asked: &[String]) -> Commits {
        let status = self.status();
        let mut commits = Commits::default();
        if let Some(serving) = &status.serving_commit {
            commits.serving = self.describe(serving).await;
        }
        if let Some(head) = &status.remote_head {
            commits.remote_head = self.describe(head).await;
        }
        for commit in asked.iter().take(MAX_PLACED_COMMITS) {
            let in_remote_head = match &status.remote_head {
                Some(head) if commit == head => true,
                Some(head) if is_commit_id(commit) => self
                    .git(&["merge-base", "--is-ancestor", commit, head], None, &[])
                    .await
                    .is_ok(),
                _ => false,
            };
            commits.places.push((commit.clone(), in_remote_head));
        }
        commits
    }

    /// `commit`'s subject and committer time, when this repository has it.
    async fn describe(&self, commit: &str) -> Option<CommitInfo> {
        if !is_commit_id(commit) {
            return None;
        }
        let line = self
            .git(&["log", "-1", "--format=%ct%x1f%s", commit], None, &[])
            .await
            .ok()?;
        let (time, subject) = line.trim_end().split_once('\x1f')?;
        Some(CommitInfo {
            commit: commit.to_owned(),
            subject: subject.to_owned(),
            committed_unix: time.parse().ok()?,
        })
    }

    /// The published status.
    pub fn status(&self) -> SyncStatus {
        self.applier
            .metrics()
            .sync
            .load_full()
            .map(|s| SyncStatus::clone(&s))
            .unwrap_or_default()
    }

    fn publish(&self, change: impl FnOnce(&mut SyncStatus)) {
        let mut status = self.status();
        change(&mut status);
        self.applier.metrics().sync.store(Some(Arc::new(status)));
    }

    /// Fetches the branch into [`REMOTE_REF`]; returns its head.
    async fn fetch(&self) -> Result<String, Error> {
        let refspec = format!("+refs/heads/{}:{REMOTE_REF}", self.settings.branch);
        let fetched = self
            .git(
                &[
                    "fetch",
                    "--quiet",
                    "--no-tags",
                    "--no-write-fetch-head",
                    "--",
                    &self.settings.remote,
                    &refspec,
                ],
                None,
                &[],
            )
            .await;
        if let Err(error) = fetched {
            return Err(Error::Unreachable {
                remote: self.settings.remote.clone(),
                reason: error.to_string(),
            });
        }
        let head = self
            .git(&["rev-parse", "--verify", REMOTE_REF], None, &[])
            .await?;
        let head = head.trim().to_owned();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let seen = head.clone();
        self.publish(|status| {
            status.remote_head = Some(seen);
            status.last_success_unix = Some(now);
        });
        Ok(head)
    }

    /// Fast-forwards the working tree to `head` and reloads. A working tree with commits the
    /// remote lacks is reported, never reset: they are someone's work.
    async fn follow(&self, head: &str) -> Result<(), Error> {
        let local = self
            .git(&["rev-parse", "--verify", "HEAD"], None, &[])
            .await?;
        let local = local.trim();
        if local != head {
            let behind = self
                .git(&["merge-base", "--is-ancestor", local, head], None, &[])
                .await
                .is_ok();
            if !behind {
                return Err(Error::Diverged {
                    tree: self.top.clone(),
                    local: local.to_owned(),
                    remote: self.settings.remote.clone(),
                    branch: self.settings.branch.clone(),
                    head: head.to_owned(),
                });
            }
        }
        let digest: crate::apply::ContentHash =
            Sha256::digest(self.show(head).await?.as_bytes()).into();
        // Before the file changes: the watcher may see it first.
        self.applier
            .expect_content(digest, format!("sync {}", head.get(..12).unwrap_or(head)));
        if local != head {
            self.git(&["merge", "--ff-only", "--quiet", head], None, &[])
                .await?;
        }
        let expected = crate::apply::hex(&digest);
        let reloaded = self.applier.reload().await;
        let applied = self.applier.status();
        if applied.content_hash == expected {
            let before = self.status();
            if before.serving_commit.as_deref() != Some(head) {
                tracing::info!(commit = %head, generation = applied.generation, "serving commit");
            }
            if before.last_error.is_some() {
                tracing::info!(commit = %head, remote = %self.settings.remote, "sync recovered");
            }
            self.publish(|status| {
                status.serving_commit = Some(head.to_owned());
                status.last_error = None;
            });
            return Ok(());
        }
        let reason = match reloaded {
            Err(error) => crate::errors::error_chain(&error),
            Ok(Reloaded::StillInvalid) => applied
                .last_error
                .clone()
                .unwrap_or_else(|| "invalid".to_owned()),
            Ok(_) => "lb.toml in the working tree differs from the commit's".to_owned(),
        };
        Err(Error::NotApplied {
            commit: head.to_owned(),
            reason,
        })
    }

    /// lb.toml's text at `commit`.
    async fn show(&self, commit: &str) -> Result<String, Error> {
        self.git(&["show", &format!("{commit}:{}", self.file)], None, &[])
            .await
    }

    /// A commit on `parent` whose lb.toml is `text`, made without touching the working tree or
    /// its index (a private index file), so a refused push leaves nothing behind to clean.
    async fn commit(
        &self,
        parent: &str,
        text: &str,
        mutation: &Mutation,
        options: &MutateOptions,
    ) -> Result<String, Error> {
        let blob = self
            .git(&["hash-object", "-w", "--stdin"], Some(text), &[])
            .await?;
        let git_dir = self
            .git(&["rev-parse", "--absolute-git-dir"], None, &[])
            .await?;
        let index = Path::new(git_dir.trim()).join("lb-sync-index");
        let index = index.to_string_lossy().into_owned();
        let env = [("GIT_INDEX_FILE", index.as_str())];
        self.git(&["read-tree", parent], None, &env).await?;
        let entry = format!("100644,{},{}", blob.trim(), self.file);
        self.git(&["update-index", "--cacheinfo", &entry], None, &env)
            .await?;
        let tree = self.git(&["write-tree"], None, &env).await?;
        let actor = options.actor.as_deref().unwrap_or("unknown");
        let message = mutation.commit_message(options.actor.as_deref());
        let (name, email) = match &self.settings.author {
            Some(author) => split_author(author),
            None => (actor.to_owned(), "lb@localhost".to_owned()),
        };
        let identity = [
            ("GIT_AUTHOR_NAME", name.as_str()),
            ("GIT_AUTHOR_EMAIL", email.as_str()),
        ];
        let commit = self
            .git(
                &["commit-tree", tree.trim(), "-p", parent, "-F", "-"],
                Some(&message),
                &identity,
            )
            .await?;
        Ok(commit.trim().to_owned())
    }

    /// Pushes `commit` as the branch's new head; the remote refuses it unless it descends from
    /// the head there (no `--force`: that refusal is the fleet's compare-and-swap).
    async fn push(&self, commit: &str) -> Result<Pushed, Error> {
        let refspec = format!("{commit}:refs/heads/{}", self.settings.branch);
        let output = self
            .run_git(
                &[
                    "push",
                    "--porcelain",
                    "--quiet",
                    "--",
                    &self.settings.remote,
                    &refspec,
                ],
                None,
                &[],
            )
            .await;
        let unreachable = |reason: String| Error::Unreachable {
            remote: self.settings.remote.clone(),
            reason,
        };
        match output {
            Ok(out) if out.success => Ok(Pushed::Landed),
            Ok(out) if lost_race(&out.stdout) => Ok(Pushed::Refused(out.stdout.trim().to_owned())),
            // The remote answered for this ref and will answer the same to a retry.
            Ok(out)
                if out.stdout.contains("[rejected]")
                    || out.stdout.contains("[remote rejected]") =>
            {
                Err(Error::Declined {
                    remote: self.settings.remote.clone(),
                    branch: self.settings.branch.clone(),
                    reason: format!("{}\n{}", out.stdout.trim(), out.stderr.trim())
                        .trim()
                        .to_owned(),
                })
            }
            Ok(out) => {
                // No answer for the ref: the push may still have landed before the connection
                // dropped, so look before calling it failed (never push a change twice).
                if self.fetch().await.is_ok()
                    && self
                        .git(
                            &["merge-base", "--is-ancestor", commit, REMOTE_REF],
                            None,
                            &[],
                        )
                        .await
                        .is_ok()
                {
                    return Ok(Pushed::Landed);
                }
                Err(unreachable(out.stderr.trim().to_owned()))
            }
            Err(error) => Err(unreachable(error.to_string())),
        }
    }

    async fn git(
        &self,
        args: &[&str],
        stdin: Option<&str>,
        env: &[(&str, &str)],
    ) -> Result<String, Error> {
        Ok(git::checked(args, self.run_git(args, stdin, env).await?)?)
    }

    async fn run_git(
        &self,
        args: &[&str],
        stdin: Option<&str>,
        env: &[(&str, &str)],
    ) -> Result<Output, Error> {
        match &self.ssh_command {
            Some(ssh) => {
                let mut with_ssh = env.to_vec();
                with_ssh.push(("GIT_SSH_COMMAND", ssh.as_str()));
                Ok(git::run(&self.top, args, stdin, &with_ssh).await?)
            }
            None => Ok(git::run(&self.top, args, stdin, env).await?),
        }
    }
}

/// What a push came to.
enum Pushed {
    Landed,
    /// The remote kept its head; its answer.
    Refused(String),
}

/// Whether `push --porcelain`'s answer (its stdout) says the branch moved under the push: it
/// is no longer an ancestor (`[rejected] (non-fast-forward)`, `(fetch first)`), or another push
/// held or changed the ref meanwhile (`[remote rejected]` with `cannot lock ref`,
/// `failed to update ref` or `incorrect old value`). Redoing the change on the new head can
/// succeed then, and only then.
fn lost_race(porcelain: &str) -> bool {
    porcelain.lines().any(|line| {
        (line.contains("[rejected]")
            && (line.contains("non-fast-forward") || line.contains("fetch first")))
            || (line.contains("[remote rejected]")
                && [
                    "cannot lock ref",
                    "failed to update ref",
                    "incorrect old value",
                ]
                .iter()
                .any(|race| line.contains(race)))
    })
}

/// What a spawned piece of git work came to; a panic goes on as it started.
async fn finished<T>(task: tokio::task::JoinHandle<Result<T, Error>>) -> Result<T, Error> {
    match task.await {
        Ok(result) => result,
        Err(error) => match error.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(_) => Err(Error::ShuttingDown),
        },
    }
}

/// `Name <email>` (validated by `config`) as its two parts.
fn split_author(author: &str) -> (String, String) {
    match author.split_once('<') {
        Some((name, email)) => (
            name.trim().to_owned(),
            email.trim_end_matches('>').trim().to_owned(),
        ),
        None => (author.trim().to_owned(), "lb@localhost".to_owned()),
    }
}

/// A full or abbreviated commit id: what may be handed to git as a revision (never an option).
fn is_commit_id(text: &str) -> bool {
    (4..=64).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Runs git in `dir` (before a [`GitSync`] exists); `Ok` with its stdout when it exits 0.
async fn git(
    dir: &Path,
    args: &[&str],
    stdin: Option<&str>,
    env: &[(&str, &str)],
) -> Result<String, Error> {
    Ok(git::stdout(dir, args, stdin, env).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_moved_branch_is_a_lost_race() {
        let line =
            |status: &str| format!("To /srv/lb.git\n!\tabc:refs/heads/main\t{status}\nDone\n");
        for race in [
            "[rejected] (non-fast-forward)",
            "[rejected] (fetch first)",
            "[remote rejected] (cannot lock ref 'refs/heads/main': is at 1 but expected 2)",
            "[remote rejected] (failed to update ref)",
            "[remote rejected] (incorrect old value provided)",
        ] {
            assert!(lost_race(&line(race)), "{race}");
        }
        for declined in [
            "[remote rejected] (pre-receive hook declined)",
            "[remote rejected] (protected branch hook declined)",
            "[remote rejected] (shallow update not allowed)",
        ] {
            assert!(!lost_race(&line(declined)), "{declined}");
        }
    }

    #[test]
    fn an_author_splits_into_name_and_email() {
        assert_eq!(
            split_author("lb fleet <lb@example.com>"),
            ("lb fleet".to_owned(), "lb@example.com".to_owned())
        );
        assert_eq!(
            split_author("ops"),
            ("ops".to_owned(), "lb@localhost".to_owned())
        );
    }
}
