//! `lbctl rollout rolling`: real lb, real sample-web processes, a real upgrade command (a shell
//! script that stops the sample-web on $LB_BACKEND_PORT and starts `--version v2` there), real
//! git history of each drain and enable.

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;
use lb::control::proto;
use support::remote::git;
use support::{Lb, SampleWeb};

/// The upgrade command's script. It refuses a port with a `fail-PORT` file; otherwise it stops
/// the process whose pid is in `PORT.pid` and starts sample-web `--version v2` (plus the
/// script's arguments) on the same port, writing the new pid to `PORT.v2.pid`.
const UPGRADE: &str = r#"set -eu
dir="$(dirname "$0")"
port="$LB_BACKEND_PORT"
echo "upgrading $LB_BACKEND_IP:$port of pool $LB_POOL"
if [ -e "$dir/fail-$port" ]; then echo "refusing to upgrade $port" >&2; exit 1; fi
pid="$(cat "$dir/$port.pid")"
kill "$pid"
# The old process is the test's child: once it has exited it stays a zombie until the test
# reaps it, so wait for that state (or for it to be gone), bounded.
n=0
while [ -r "/proc/$pid/stat" ] && [ "$(cut -d' ' -f3 "/proc/$pid/stat")" != Z ]; do
  n=$((n+1)); [ "$n" -lt 500 ] || { echo "$pid did not exit" >&2; exit 1; }
  sleep 0.01
done
"$SAMPLE_WEB" --port "$port" --node "n$port" --version v2 "$@" >>"$dir/v2.log" 2>&1 &
echo $! > "$dir/$port.v2.pid"
"#;

/// The script's directory; kills every v2 process the script started when dropped (the v1
/// processes are the test's own [`SampleWeb`]s, killed by theirs).
struct Upgrades {
    dir: tempfile::TempDir,
}

impl Upgrades {
    fn new(v1: &[SampleWeb]) -> Upgrades {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("upgrade.sh"), UPGRADE).unwrap();
        for web in v1 {
            std::fs::write(
                dir.path().join(format!("{}.pid", web.addr.port())),
                web.pid().to_string(),
            )
            .unwrap();
        }
        Upgrades { dir }
    }

    /// `--run`'s value: the script with `args` for the new sample-web.
    fn command(&self, args: &str) -> String {
        format!("sh {}/upgrade.sh {args}", self.dir.path().display())
    }

    /// Makes the command fail for `addr`.
    fn refuse(&self, addr: SocketAddr) {
        std::fs::write(self.dir.path().join(format!("fail-{}", addr.port())), "").unwrap();
    }
}

impl Drop for Upgrades {
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir(self.dir.path()) else {
            return;
        };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().ends_with(".v2.pid") {
                if let Ok(pid) = std::fs::read_to_string(entry.path()) {
                    let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
                }
            }
        }
    }
}

fn git_installed() -> bool {
    Command::new("git").arg("--version").output().is_ok()
}

/// `n` sample-web v1 processes and lb in front of them, its lb.toml in git with
/// `git_commit = true`; waits (bounded) until every backend is healthy.
async fn pool_of(n: usize) -> (Vec<SampleWeb>, Arc<Lb>, String) {
    let webs: Vec<SampleWeb> = (0..n)
        .map(|i| SampleWeb::start(&["--node", &format!("b{i}"), "--version", "v1"]))
        .collect();
    let addrs: Vec<SocketAddr> = webs.iter().map(|w| w.addr).collect();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("lb.toml");
    let text = format!(
        "[control]\ngit_commit = true\n\n{}",
        support::pool("/", &addrs, "100ms")
    );
    std::fs::write(&config, &text).unwrap();
    git(dir.path(), &["init", "-q"]);
    git(dir.path(), &["add", "lb.toml"]);
    git(dir.path(), &["commit", "-qm", "v1"]);
    let lb = Arc::new(Lb::start_at(dir, config, &[]));
    for addr in &addrs {
        support::healthy_eventually(&lb, "/", *addr, Duration::from_secs(10)).await;
    }
    (webs, lb, text)
}

/// Runs `lbctl rollout rolling / ARGS` (bounded); returns (success, stdout, stderr).
async fn rollout(lb: &Lb, args: &[&str]) -> (bool, String, String) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_lbctl"));
    command
        .arg(format!("--lb={}", lb.grpc.unwrap()))
        .args(["rollout", "rolling", "/"])
        .args(args)
        .env("USER", "ops")
        .env("SAMPLE_WEB", support::sample_web_bin())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(90), command.output())
        .await
        .expect("lbctl rollout finished in time")
        .expect("run lbctl");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    eprintln!("lbctl stdout:\n{stdout}\nlbctl stderr:\n{stderr}");
    (out.status.success(), stdout, stderr)
}

/// The drains and enables in lb.toml's git history, oldest first: `Drain PORT` / `Enable PORT`.
fn history(lb: &Lb) -> Vec<String> {
    git(lb.dir(), &["log", "--reverse", "--format=%s"])
        .lines()
        .filter_map(|subject| {
            let (verb, rest) = subject.strip_prefix("lb: ")?.split_once(' ')?;
            let port = rest.rsplit(':').next()?;
            let verb = verb.strip_suffix("Backend")?;
            Some(format!("{verb} {port}"))
        })
        .collect()
}

fn admin_state(health: &proto::PoolHealth, addr: SocketAddr) -> i32 {
    health
        .backends
        .iter()
        .find(|b| support::ip_backend(addr, "") == b.backend)
        .expect("backend listed")
        .admin_state
}

/// What the backend at `addr` answers directly (not through lb).
async fn greeting(addr: SocketAddr) -> String {
    support::get(&support::client(), &format!("http://{addr}/"))
        .await
        .1
}

/// Client tasks sending `GET /` through lb every few milliseconds, each at most
/// `max_per_task` requests and 60 s, until stopped.
struct PacedLoad {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<bool>>,
}

impl PacedLoad {
    fn start(lb: &Arc<Lb>, tasks: usize, max_per_task: usize) -> PacedLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let tasks = (0..tasks)
            .map(|_| {
                let (lb, stop) = (Arc::clone(lb), Arc::clone(&stop));
                let (ok, failed) = (Arc::clone(&ok), Arc::clone(&failed));
                tokio::spawn(async move {
                    let client = support::client();
                    let deadline = Instant::now() + Duration::from_secs(60);
                    let mut tick = tokio::time::interval(Duration::from_millis(5));
                    for _ in 0..max_per_task {
                        if stop.load(Ordering::SeqCst) || Instant::now() > deadline {
                            return true;
                        }
                        tick.tick().await;
                        match support::get(&client, &lb.url("/")).await {
                            (StatusCode::OK, _) => ok.fetch_add(1, Ordering::SeqCst),
                            (status, body) => {
                                eprintln!("failed request: {status} {body:?}");
                                failed.fetch_add(1, Ordering::SeqCst)
                            }
                        };
                    }
                    false
                })
            })
            .collect();
        PacedLoad {
            stop,
            ok,
            failed,
            tasks,
        }
    }

    /// Stops the load; returns (ok, failed). Panics if a task ran out of requests before it
    /// was stopped (the load would not have covered the whole rollout).
    async fn finish(self) -> (usize, usize) {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            assert!(
                task.await.unwrap(),
                "the load ran out before the rollout ended"
            );
        }
        (
            self.ok.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_sample_webs_upgrade_to_v2_under_load_failing_no_request() {
    if !git_installed() {
        eprintln!("git is not installed; skipping");
        return;
    }
    let (webs, lb, text) = pool_of(3).await;
    let upgrades = Upgrades::new(&webs);
    let ports: Vec<String> = webs.iter().map(|w| w.addr.port().to_string()).collect();
    let load = PacedLoad::start(&lb, 2, 5000);
    let (ok, stdout, stderr) = rollout(
        &lb,
        &[
            "--run",
            &upgrades.command(""),
            "--canaries=1",
            "--concurrency=2",
            "--bake=1s",
            "--timeout=30s",
            "--min-requests=10",
        ],
    )
    .await;
    let (answered, failed) = load.finish().await;
    assert!(ok, "{stderr}");
    assert_eq!(failed, 0, "{answered} answered");
    assert!(answered > 100, "{answered} answered");
    for web in &webs {
        let label = web.addr.to_string();
        for step in [
            "draining",
            "drained (no request in flight)",
            "command succeeded",
            "healthy",
            "enabled",
            "bake ",
        ] {
            assert!(
                stdout.contains(&format!("{label}: {step}")),
                "no {step:?} for {label}:\n{stdout}"
            );
        }
        // The command's own output, prefixed with its backend.
        assert!(
            stdout.contains(&format!("{label}| upgrading {label} of pool /")),
            "{stdout}"
        );
        assert!(greeting(web.addr).await.contains("version v2"));
    }
    assert!(
        stdout.contains("pool /: 3 of 3 backends upgraded, 0 failed"),
        "{stdout}"
    );
    // The canary alone, then the other two together: both drained before either is enabled.
    let log = history(&lb);
    assert_eq!(log.len(), 6, "{log:?}");
    assert_eq!(
        log[..4],
        [
            format!("Drain {}", ports[0]),
            format!("Enable {}", ports[0]),
            format!("Drain {}", ports[1]),
            format!("Drain {}", ports[2]),
        ]
    );
    let mut last: Vec<String> = log[4..].to_vec();
    last.sort();
    let mut expected = vec![
        format!("Enable {}", ports[1]),
        format!("Enable {}", ports[2]),
    ];
    expected.sort();
    assert_eq!(last, expected);
    assert_eq!(
        std::fs::read_to_string(&lb.config).unwrap(),
        text,
        "every backend is enabled again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_failing_on_the_canary_stops_the_rollout_leaving_it_drained() {
    if !git_installed() {
        eprintln!("git is not installed; skipping");
        return;
    }
    let (webs, lb, _) = pool_of(3).await;
    let upgrades = Upgrades::new(&webs);
    upgrades.refuse(webs[0].addr);
    let (ok, stdout, stderr) = rollout(
        &lb,
        &["--run", &upgrades.command(""), "--bake=1s", "--timeout=30s"],
    )
    .await;
    assert!(!ok);
    let canary = webs[0].addr;
    assert!(
        stderr.contains(&format!("canary {canary} failed")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{canary}| refusing to upgrade")),
        "{stderr}"
    );
    assert!(
        stdout.contains(&format!(
            "{canary}: command failed: the command failed (exit status 1); left drained"
        )),
        "{stdout}"
    );
    let health = support::pool_health(&mut support::control(&lb).await, "/").await;
    assert_eq!(
        admin_state(&health, canary),
        proto::AdminState::AsDrain as i32
    );
    for web in &webs[1..] {
        assert_eq!(
            admin_state(&health, web.addr),
            proto::AdminState::AsEnabled as i32
        );
        assert!(greeting(web.addr).await.contains("version v1"));
    }
    assert_eq!(history(&lb), [format!("Drain {}", canary.port())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rollout_stops_once_failures_exceed_max_failures() {
    if !git_installed() {
        eprintln!("git is not installed; skipping");
        return;
    }
    let (webs, lb, _) = pool_of(5).await;
    let upgrades = Upgrades::new(&webs);
    upgrades.refuse(webs[1].addr);
    upgrades.refuse(webs[2].addr);
    let (ok, stdout, stderr) = rollout(
        &lb,
        &[
            "--run",
            &upgrades.command(""),
            "--concurrency=1",
            "--max-failures=1",
            "--bake=1s",
            "--timeout=30s",
            "--output=json",
        ],
    )
    .await;
    assert!(!ok);
    assert!(
        stderr.contains("2 backends failed, more than --max-failures 1"),
        "{stderr}"
    );
    // No traffic: the canary's bake has no data, which is a pass, said so.
    assert!(stderr.contains("not enough data"), "{stderr}");
    assert!(stderr.contains("counted as a pass"), "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("a JSON summary");
    let outcomes: Vec<&str> = report["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        ["upgraded", "failed", "failed", "not started", "not started"]
    );
    assert_eq!(report["complete"], false);
    assert_eq!(report["backends"][1]["left"], "drained");
    let health = support::pool_health(&mut support::control(&lb).await, "/").await;
    let states: Vec<i32> = webs.iter().map(|w| admin_state(&health, w.addr)).collect();
    let (enabled, drain) = (
        proto::AdminState::AsEnabled as i32,
        proto::AdminState::AsDrain as i32,
    );
    assert_eq!(states, [enabled, drain, drain, enabled, enabled]);
    assert!(greeting(webs[0].addr).await.contains("version v2"));
    for web in &webs[3..] {
        assert!(greeting(web.addr).await.contains("version v1"));
    }
    let port = |i: usize| webs[i].addr.port();
    assert_eq!(
        history(&lb),
        [
            format!("Drain {}", port(0)),
            format!("Enable {}", port(0)),
            format!("Drain {}", port(1)),
            format!("Drain {}", port(2)),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_erring_in_its_bake_is_drained_again_and_stops_the_rollout() {
    if !git_installed() {
        eprintln!("git is not installed; skipping");
        return;
    }
    let (webs, lb, _) = pool_of(3).await;
    let upgrades = Upgrades::new(&webs);
    let load = PacedLoad::start(&lb, 2, 5000);
    let (ok, stdout, stderr) = rollout(
        &lb,
        &[
            "--run",
            &upgrades.command("--error-rate 0.5"),
            "--bake=2s",
            "--timeout=30s",
            "--min-requests=10",
        ],
    )
    .await;
    load.finish().await;
    assert!(!ok);
    let canary = webs[0].addr;
    assert!(
        stdout.contains(&format!("{canary}: bake fail: backend ")),
        "{stdout}"
    );
    assert!(stdout.contains("canary error rate"), "{stdout}");
    assert!(
        stderr.contains(&format!("canary {canary} failed")),
        "{stderr}"
    );
    let health = support::pool_health(&mut support::control(&lb).await, "/").await;
    assert_eq!(
        admin_state(&health, canary),
        proto::AdminState::AsDrain as i32
    );
    let port = canary.port();
    assert_eq!(
        history(&lb),
        [
            format!("Drain {port}"),
            format!("Enable {port}"),
            format!("Drain {port}")
        ]
    );
    assert!(greeting(webs[1].addr).await.contains("version v1"));
}
