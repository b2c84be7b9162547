//! A fleet's git side for the `[sync]` tests: a bare repository holding lb.toml (a path
//! remote), a human's clone of it, lb instances started on their own clones, and what an
//! instance says of its sync.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use lb::control::proto;

use super::{control, eventually, Lb};

/// How long an instance may take to follow the remote in these tests.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Runs git in `dir` with a fixed identity; panics with its stderr when it fails.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = try_git(dir, args);
    assert!(out.0, "git {args:?} in {}: {}", dir.display(), out.2);
    out.1
}

/// Runs git in `dir`: (success, stdout, stderr).
pub fn try_git(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "a human")
        .env("GIT_AUTHOR_EMAIL", "human@example.com")
        .env("GIT_COMMITTER_NAME", "a human")
        .env("GIT_COMMITTER_EMAIL", "human@example.com")
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .expect("run git");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A bare repository whose `main` holds `lb.toml`, and a human's clone of it.
pub struct Remote {
    pub root: tempfile::TempDir,
}

impl Remote {
    pub fn new(config: impl Fn(&Path) -> String) -> Remote {
        let root = tempfile::tempdir().expect("temp dir");
        let remote = Remote { root };
        git(
            remote.root.path(),
            &["init", "--quiet", "--bare", "-b", "main", "remote.git"],
        );
        git(
            remote.root.path(),
            &["clone", "--quiet", remote.bare().to_str().unwrap(), "human"],
        );
        std::fs::write(remote.human().join("lb.toml"), config(&remote.bare())).unwrap();
        git(&remote.human(), &["checkout", "--quiet", "-b", "main"]);
        git(&remote.human(), &["add", "lb.toml"]);
        git(
            &remote.human(),
            &["commit", "--quiet", "-m", "the first topology"],
        );
        git(&remote.human(), &["push", "--quiet", "origin", "main"]);
        remote
    }

    pub fn bare(&self) -> PathBuf {
        self.root.path().join("remote.git")
    }

    pub fn human(&self) -> PathBuf {
        self.root.path().join("human")
    }

    pub fn head(&self) -> String {
        git(&self.bare(), &["rev-parse", "main"])
    }

    /// Starts lb on a fresh clone.
    pub fn start_lb(&self) -> Lb {
        self.start_lb_with(&[])
    }

    /// Starts lb (with extra arguments) on a fresh clone and waits until it serves the remote's
    /// head; returns it with that commit.
    pub async fn start_serving(&self, extra: &[&str]) -> (Lb, String) {
        let lb = self.start_lb_with(extra);
        let first = self.head();
        eventually(PATIENCE, "serving the first commit", || async {
            serving(&lb).await == first
        })
        .await;
        (lb, first)
    }

    /// Installs `script` as the remote's pre-receive hook.
    pub fn pre_receive(&self, script: &str) {
        use std::os::unix::fs::PermissionsExt;
        let hook = self.bare().join("hooks").join("pre-receive");
        std::fs::write(&hook, script).unwrap();
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// Starts lb on a fresh clone, with extra arguments.
    pub fn start_lb_with(&self, extra: &[&str]) -> Lb {
        let dir = tempfile::tempdir().expect("temp dir");
        git(
            dir.path(),
            &[
                "clone",
                "--quiet",
                "-b",
                "main",
                self.bare().to_str().unwrap(),
                "tree",
            ],
        );
        let config = dir.path().join("tree").join("lb.toml");
        Lb::start_at(dir, config, extra)
    }
}

pub async fn sync_status(lb: &Lb) -> proto::SyncStatus {
    let mut client = control(lb).await;
    client
        .status(proto::StatusReq::default())
        .await
        .expect("Status")
        .into_inner()
        .sync
        .expect("Status has sync")
}

pub async fn serving(lb: &Lb) -> String {
    sync_status(lb).await.serving_commit
}

/// A human's change to lb.toml in the clone `human`, committed and pushed directly (pulling
/// first, and again when an instance pushed in between). Returns its commit.
pub fn human_push_in(human: &Path, change: impl Fn(&str) -> String, message: &str) -> String {
    for _ in 0..20 {
        git(human, &["pull", "--quiet", "--rebase", "origin", "main"]);
        let text = std::fs::read_to_string(human.join("lb.toml")).unwrap();
        std::fs::write(human.join("lb.toml"), change(&text)).unwrap();
        git(human, &["commit", "--quiet", "-am", message]);
        if try_git(human, &["push", "--quiet", "origin", "main"]).0 {
            return git(human, &["rev-parse", "HEAD"]);
        }
        git(human, &["reset", "--quiet", "--hard", "HEAD~1"]);
    }
    panic!("the human's push was refused 20 times");
}
