//! Rollout-grade operations: drain/disable/enable kept in the file, waiting for a drain,
//! optimistic concurrency, latency-aware balancing and git history. The rolling upgrade built
//! on them (`lbctl rollout rolling`) is tests/rolling.rs.

mod support;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;
use lb::control::proto;
use support::remote::git;
use support::{eventually, get, Backend, Lb};
use tonic::Code;

async fn backend_state(
    client: &mut support::Control,
    addr: std::net::SocketAddr,
) -> proto::BackendHealth {
    let health = support::pool_health(client, "/").await;
    health
        .backends
        .into_iter()
        .find(|b| support::ip_backend(addr, "") == b.backend)
        .expect("backend listed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_finishes_in_flight_takes_no_new_requests_and_is_one_line() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let text = format!(
        "# rollout\n{}",
        support::pool("/", &[a.addr, b.addr], "100ms")
    );
    let lb = Arc::new(Lb::start(&text));
    let mut client = support::control(&lb).await;
    let http = support::client();
    eventually(Duration::from_secs(5), "both serve", || async {
        get(&http, &lb.url("/")).await;
        a.hits() > 0 && b.hits() > 0
    })
    .await;

    // A slow request on a, then drain a.
    a.set_delay_ms(800);
    let started = a.started();
    let slow = {
        let lb = Arc::clone(&lb);
        tokio::spawn(async move {
            let client = support::client();
            let deadline = Instant::now() + Duration::from_secs(5);
            // p2c may pick b; repeat until one request is in flight on a.
            loop {
                let (status, body) = get(&client, &lb.url("/")).await;
                if body == "a" || Instant::now() > deadline {
                    return (status, body);
                }
            }
        })
    };
    eventually(Duration::from_secs(5), "slow request on a", || async {
        a.started() > started
    })
    .await;
    client
        .drain_backend(proto::DrainBackendReq {
            pattern: "/".into(),
            backend: support::ip_backend(a.addr, ""),
            if_match: None,
        })
        .await
        .unwrap();
    let drained = std::fs::read_to_string(&lb.config).unwrap();
    assert_eq!(
        drained,
        text.replace(
            &format!("  \"{}\",", a.addr),
            &format!("  {{ addr = \"{}\", state = \"drain\" }},", a.addr)
        )
    );
    let state = backend_state(&mut client, a.addr).await;
    assert_eq!(state.admin_state, proto::AdminState::AsDrain as i32);
    assert_eq!(state.in_flight, 1);
    let a_hits = a.started();
    for _ in 0..20 {
        assert_eq!(get(&http, &lb.url("/")).await.1, "b");
    }
    assert_eq!(a.started(), a_hits, "a drained backend took a new request");

    // lbctl wait --drained returns once the slow request finished.
    let lbctl = Command::new(env!("CARGO_BIN_EXE_lbctl"))
        .arg(format!("--lb={}", lb.grpc.unwrap()))
        .args([
            "wait",
            "--drained",
            "--pattern=/",
            &format!("--ip={}", a.addr.ip()),
            &format!("--port={}", a.addr.port()),
            "--timeout=10s",
        ])
        .output()
        .unwrap();
    assert!(
        lbctl.status.success(),
        "{}",
        String::from_utf8_lossy(&lbctl.stderr)
    );
    assert_eq!(slow.await.unwrap(), (StatusCode::OK, "a".to_owned()));
    assert_eq!(backend_state(&mut client, a.addr).await.in_flight, 0);

    client
        .enable_backend(proto::EnableBackendReq {
            pattern: "/".into(),
            backend: support::ip_backend(a.addr, ""),
            if_match: None,
        })
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(&lb.config).unwrap(),
        text,
        "enable restores the file"
    );
    a.set_delay_ms(0);
    eventually(Duration::from_secs(5), "a back in rotation", || async {
        get(&http, &lb.url("/")).await;
        a.started() > a_hits + 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_gives_up_with_a_clear_message() {
    let a = Backend::start("a").await;
    a.set_delay_ms(3000);
    let lb = Arc::new(Lb::start(&support::pool("/", &[a.addr], "100ms")));
    let http = support::client();
    eventually(Duration::from_secs(5), "a healthy", || async {
        support::backend_is_healthy(&lb, "/", a.addr).await
    })
    .await;
    let background = {
        let lb = Arc::clone(&lb);
        tokio::spawn(async move { get(&support::client(), &lb.url("/")).await })
    };
    eventually(Duration::from_secs(3), "request in flight", || async {
        a.started() == 1
    })
    .await;
    let out = Command::new(env!("CARGO_BIN_EXE_lbctl"))
        .arg(format!("--lb={}", lb.grpc.unwrap()))
        .args([
            "wait",
            "--drained",
            "--pattern=/",
            &format!("--ip={}", a.addr.ip()),
            &format!("--port={}", a.addr.port()),
            "--timeout=300ms",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("still has 1 request(s) in flight"),
        "{stderr}"
    );
    drop(http);
    background.abort();
}

#[tokio::test]
async fn disable_stops_traffic_and_checks_enable_brings_it_back() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let lb = Lb::start(&support::pool("/", &[a.addr, b.addr], "100ms"));
    let mut client = support::control(&lb).await;
    let http = support::client();
    eventually(Duration::from_secs(5), "both healthy", || async {
        let h = client
            .clone()
            .pool_health(proto::PoolHealthReq {
                pattern: "/".into(),
                healthy: true,
                sick: false,
            })
            .await;
        h.map(|h| h.into_inner().health.unwrap().backends.len() == 2)
            .unwrap_or(false)
    })
    .await;
    client
        .disable_backend(proto::DisableBackendReq {
            pattern: "/".into(),
            backend: support::ip_backend(a.addr, ""),
            if_match: None,
        })
        .await
        .unwrap();
    assert!(std::fs::read_to_string(&lb.config)
        .unwrap()
        .contains("state = \"disabled\""));
    let state = backend_state(&mut client, a.addr).await;
    assert_eq!(state.admin_state, proto::AdminState::AsDisabled as i32);
    for _ in 0..20 {
        assert_eq!(get(&http, &lb.url("/")).await.1, "b");
    }
    client
        .enable_backend(proto::EnableBackendReq {
            pattern: "/".into(),
            backend: support::ip_backend(a.addr, ""),
            if_match: None,
        })
        .await
        .unwrap();
    eventually(Duration::from_secs(5), "a takes traffic again", || async {
        get(&http, &lb.url("/")).await.1 == "a"
    })
    .await;
}

#[tokio::test]
async fn a_stale_precondition_aborts_and_changes_nothing() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let lb = Lb::start(&support::pool("/", &[a.addr], "100ms"));
    let mut client = support::control(&lb).await;
    let status = client
        .status(proto::StatusReq::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.content_hash.len(), 64);
    let health = client
        .pool_health(proto::PoolHealthReq {
            pattern: "/".into(),
            healthy: true,
            sick: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (health.generation, health.content_hash.as_str()),
        (status.generation, status.content_hash.as_str())
    );

    // Someone edits the file (a comment) after we read the hash.
    let edited = format!(
        "# edited by hand\n{}",
        std::fs::read_to_string(&lb.config).unwrap()
    );
    std::fs::write(&lb.config, &edited).unwrap();
    let stale = proto::Precondition {
        content_hash: status.content_hash.clone(),
        generation: 0,
    };
    let error = client
        .add_backend(proto::AddBackendReq {
            pattern: "/".into(),
            backend: support::ip_backend(b.addr, ""),
            if_match: Some(stale),
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::Aborted, "{}", error.message());
    assert_eq!(std::fs::read_to_string(&lb.config).unwrap(), edited);

    let stale_generation = proto::Precondition {
        content_hash: String::new(),
        generation: status.generation + 5,
    };
    let error = client
        .remove_pool(proto::RemovePoolReq {
            pattern: "/".into(),
            if_match: Some(stale_generation),
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::Aborted);

    // The hash of what is on disk now passes.
    let fresh = {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(edited.as_bytes());
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    client
        .add_backend(proto::AddBackendReq {
            pattern: "/".into(),
            backend: support::ip_backend(b.addr, ""),
            if_match: Some(proto::Precondition {
                content_hash: fresh,
                generation: 0,
            }),
        })
        .await
        .expect("a fresh precondition passes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2c_ewma_sends_most_traffic_to_the_fast_backend() {
    let (slow, fast) = (Backend::start("slow").await, Backend::start("fast").await);
    slow.set_delay_ms(40);
    let text = format!(
        "[pools.\"/\"]\ntype = \"p2c_ewma\"\ninterval = \"100ms\"\nbackends = [\"{}\", \"{}\"]\n",
        slow.addr, fast.addr
    );
    let lb = Arc::new(Lb::start(&text));
    let http = support::client();
    eventually(Duration::from_secs(5), "both healthy", || async {
        lb.logs()
            .iter()
            .filter(|l| l.contains("backend healthy"))
            .count()
            == 2
    })
    .await;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let lb = Arc::clone(&lb);
        tasks.push(tokio::spawn(async move {
            let client = support::client();
            for _ in 0..50 {
                assert_eq!(get(&client, &lb.url("/")).await.0, StatusCode::OK);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    drop(http);
    let (s, f) = (slow.hits(), fast.hits());
    assert_eq!(s + f, 200);
    assert!(f >= 160, "fast got {f} of 200, slow {s}");
}

#[tokio::test]
async fn git_history_commits_only_lb_toml_with_the_actor() {
    if Command::new("git").arg("--version").output().is_err() {
        eprintln!("git is not installed; skipping");
        return;
    }
    let b = Backend::start("b").await;
    let dir = tempfile::tempdir().unwrap();
    let git = |args: &[&str]| support::remote::git(dir.path(), args);
    git(&["init", "-q"]);
    let config = dir.path().join("lb.toml");
    std::fs::write(
        &config,
        "[control]\ngit_commit = true\n\n[pools.\"/\"]\nbackends = [\n]\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("other.txt"), "staged, not ours\n").unwrap();
    git(&["add", "lb.toml"]);
    git(&["commit", "-qm", "initial"]);
    git(&["add", "other.txt"]);
    let lb = Lb::start_at(dir, config, &[]);
    let mut client = support::control(&lb).await;
    let mut request = tonic::Request::new(proto::AddBackendReq {
        pattern: "/".into(),
        backend: support::ip_backend(b.addr, ""),
        if_match: None,
    });
    request
        .metadata_mut()
        .insert("x-lb-actor", "alice".parse().unwrap());
    client.add_backend(request).await.unwrap();
    let git_in = |args: &[&str]| {
        let out = Command::new("git")
            .current_dir(lb.dir())
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    eventually(Duration::from_secs(5), "a commit", || async {
        git_in(&["log", "--oneline"]).lines().count() == 2
    })
    .await;
    let message = git_in(&["log", "-1", "--format=%B"]);
    assert!(
        message.contains(&format!("AddBackend / {}", b.addr)) && message.contains("alice"),
        "{message}"
    );
    let files = git_in(&["show", "--name-only", "--format=", "HEAD"]);
    assert_eq!(files.trim(), "lb.toml");
    let staged = git_in(&["diff", "--cached", "--name-only"]);
    assert_eq!(
        staged.trim(),
        "other.txt",
        "other staged changes must stay staged"
    );
}

/// Changes made at once each get a commit of their own, holding exactly that change, in the
/// order they were applied: the commit is made under the writer lock, before the RPC answers.
#[tokio::test]
async fn concurrent_changes_commit_one_each_before_they_answer() {
    if Command::new("git").arg("--version").output().is_err() {
        eprintln!("git is not installed; skipping");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    git(dir.path(), &["init", "-q"]);
    let config = dir.path().join("lb.toml");
    std::fs::write(
        &config,
        "[control]\ngit_commit = true\n\n[pools.\"/\"]\nbackends = [\n]\n",
    )
    .unwrap();
    git(dir.path(), &["add", "lb.toml"]);
    git(dir.path(), &["commit", "-qm", "initial"]);
    let lb = Lb::start_at(dir, config, &[]);
    const N: usize = 8;
    let mut tasks = Vec::new();
    for i in 0..N {
        let mut client = support::control(&lb).await;
        tasks.push(tokio::spawn(async move {
            client
                .add_pool(support::add_pool_req(&format!("/p{i}/")))
                .await
                .map(drop)
        }));
    }
    for task in tasks {
        task.await.unwrap().expect("AddPool");
    }
    // No waiting: every change answered, so every commit is made.
    let log = git(lb.dir(), &["log", "--format=%H"]);
    let commits: Vec<&str> = log.lines().collect();
    assert_eq!(commits.len(), N + 1, "one commit per change:\n{log}");
    for commit in &commits[..N] {
        let message = git(lb.dir(), &["log", "-1", "--format=%s", commit]);
        let diff = git(lb.dir(), &["show", "--format=", "-U0", commit]);
        let added: Vec<&str> = diff.lines().filter(|l| l.starts_with("+[pools.")).collect();
        assert_eq!(added.len(), 1, "{commit} adds one pool:\n{diff}");
        let pattern = added[0]
            .trim_start_matches("+[pools.\"")
            .trim_end_matches("\"]");
        assert!(
            message.contains(pattern),
            "{commit}'s message {message:?} names the pool it adds, {pattern}"
        );
    }
}
