//! `[sync]`: a fleet of lb processes, each with its own clone of one bare repository (a path
//! remote), sharing the topology through git: changes through any instance land exactly once,
//! every instance converges on the remote head, and an outage of the remote stops nothing but
//! the changes.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lb::control::proto;
use support::remote::{git, human_push_in, serving, sync_status, Remote, PATIENCE};
use support::{control, eventually, ip_backend, Backend, Lb, Load};

const INTERVAL_MS: u64 = 200;

fn config_text(remote: &Path, backends: &[SocketAddr], extra: &str) -> String {
    format!(
        "{extra}[sync]\nremote = \"{}\"\nbranch = \"main\"\ninterval = \"{INTERVAL_MS}ms\"\n\n{}",
        remote.display(),
        support::pool("/", backends, "100ms")
    )
}

async fn add_backend(lb: &Lb, addr: SocketAddr) -> Result<String, tonic::Status> {
    let mut client = control(lb).await;
    client
        .add_backend(proto::AddBackendReq {
            pattern: "/".to_owned(),
            backend: ip_backend(addr, ""),
            if_match: None,
        })
        .await
        .map(|r| r.into_inner().commit)
}

fn admin_url(lb: &Lb, path: &str) -> String {
    lb.admin_url(path)
}

/// The `retries=N` of every "control API change pushed" line in `lb`'s log.
fn push_retries(lb: &Lb) -> Vec<u32> {
    lb.logs()
        .iter()
        .filter(|line| line.contains("control API change pushed"))
        .filter_map(|line| {
            let rest = line.split("retries=").nth(1)?;
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_share_one_remote_exactly_once() {
    let serving_backend = Backend::start("b0").await;
    let mut added = Vec::new();
    for i in 0..6 {
        added.push(Backend::start(&format!("added{i}")).await);
    }
    let remote = Remote::new(|bare| config_text(bare, &[serving_backend.addr], ""));
    let first = remote.head();
    let lbs: Vec<Arc<Lb>> = (0..3).map(|_| Arc::new(remote.start_lb())).collect();
    for lb in &lbs {
        eventually(
            PATIENCE,
            "each instance serves the first commit",
            || async { serving(lb).await == first },
        )
        .await;
    }
    let loads: Vec<Load> = lbs.iter().map(|lb| Load::start(lb, 2)).collect();

    // Two AddBackends through each instance, concurrently across instances, and a human push.
    let mut changes = tokio::task::JoinSet::new();
    for (i, lb) in lbs.iter().enumerate() {
        let lb = Arc::clone(lb);
        let addrs = [added[2 * i].addr, added[2 * i + 1].addr];
        changes.spawn(async move {
            let mut commits = Vec::new();
            for addr in addrs {
                let commit = add_backend(&lb, addr)
                    .await
                    .unwrap_or_else(|e| panic!("AddBackend {addr} through instance {i}: {e}"));
                assert_eq!(
                    commit.len(),
                    40,
                    "AddBackend answers its commit: {commit:?}"
                );
                commits.push(commit);
            }
            (commits, Instant::now())
        });
    }
    let human_dir = remote.human();
    let human = tokio::task::spawn_blocking(move || {
        let commit = human_push_in(
            &human_dir,
            |text| text.replace("interval = \"100ms\"", "interval = \"150ms\""),
            "a human changes the check interval",
        );
        (commit, Instant::now())
    });
    let mut last_push = Instant::now();
    let mut commits = Vec::new();
    while let Some(done) = changes.join_next().await {
        let (mut these, at) = done.expect("change task");
        commits.append(&mut these);
        last_push = last_push.max(at);
    }
    let (human_commit, at) = human.await.expect("human push");
    last_push = last_push.max(at);
    commits.push(human_commit);

    let head = remote.head();
    let mut convergence = Vec::new();
    for (i, lb) in lbs.iter().enumerate() {
        eventually(
            PATIENCE,
            "every instance serves the remote head",
            || async { serving(lb).await == head },
        )
        .await;
        convergence.push((i, last_push.elapsed()));
    }
    let retries: Vec<Vec<u32>> = lbs.iter().map(|lb| push_retries(lb)).collect();
    eprintln!(
        "fleet: converged on {head} after the last push: {convergence:?} (interval {INTERVAL_MS} ms); push retries per instance: {retries:?}"
    );

    let fleet: Vec<String> = lbs.iter().map(|lb| lb.grpc.unwrap().to_string()).collect();
    let fleet_args = |lbs: &[Arc<Lb>]| {
        let mut args = vec!["status".to_owned(), "--fleet".to_owned()];
        args.extend(fleet.iter().cloned());
        support::lbctl(
            &lbs[0],
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        )
    };
    let (ok, out, err) = fleet_args(&lbs);
    assert!(ok, "{err}");
    assert_eq!(
        out.lines().filter(|l| l.ends_with("  ok")).count(),
        3,
        "{out}"
    );

    // Linear history: the first commit, six changes and the human's, each exactly once.
    let log = git(&remote.bare(), &["log", "--format=%H %s", "main"]);
    eprintln!("{log}");
    assert_eq!(git(&remote.bare(), &["rev-list", "--merges", "main"]), "");
    assert_eq!(log.lines().count(), 8, "{log}");
    for b in &added {
        let subject = format!("lb: AddBackend / {}", b.addr);
        assert_eq!(log.matches(&subject).count(), 1, "{subject} once in\n{log}");
    }
    for commit in &commits {
        assert_eq!(
            log.matches(commit.as_str()).count(),
            1,
            "{commit} in\n{log}"
        );
    }
    let text = git(&remote.bare(), &["show", "main:lb.toml"]);
    assert!(text.contains("interval = \"150ms\""), "{text}");
    for b in &added {
        assert!(text.contains(&b.addr.to_string()), "{} in\n{text}", b.addr);
    }
    // Every instance's pool holds all seven backends.
    for lb in &lbs {
        let mut client = control(lb).await;
        let health = support::pool_health(&mut client, "/").await;
        assert_eq!(health.backends.len(), 7, "{health:?}");
    }

    // The remote goes away: serving goes on, a change fails cleanly and touches nothing.
    let away = remote.root.path().join("remote.git.away");
    std::fs::rename(remote.bare(), &away).unwrap();
    let extra = Backend::start("extra").await;
    let before = std::fs::read_to_string(&lbs[0].config).unwrap();
    let started = Instant::now();
    let refused = add_backend(&lbs[0], extra.addr)
        .await
        .expect_err("AddBackend with the remote gone");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains("cannot reach the [sync] remote"),
        "{refused:?}"
    );
    eprintln!(
        "fleet: AddBackend with the remote gone failed in {:?}",
        started.elapsed()
    );
    assert_eq!(std::fs::read_to_string(&lbs[0].config).unwrap(), before);
    for lb in &lbs {
        eventually(PATIENCE, "the outage shows in the status", || async {
            let status = sync_status(lb).await;
            status.last_error.contains("cannot reach") && status.serving_commit == head
        })
        .await;
    }
    let (ok, out, err) = fleet_args(&lbs);
    assert!(ok, "{err}");
    assert_eq!(out.matches("LAGS: cannot reach").count(), 3, "{out}");
    std::fs::rename(&away, remote.bare()).unwrap();
    assert_eq!(remote.head(), head, "the remote is untouched");

    // Back: a change lands and everyone follows.
    let commit = add_backend(&lbs[1], extra.addr)
        .await
        .expect("AddBackend once the remote is back");
    let back = Instant::now();
    for lb in &lbs {
        eventually(
            PATIENCE,
            "every instance serves the change made after the outage",
            || async {
                let status = sync_status(lb).await;
                status.serving_commit == commit && status.last_error.is_empty()
            },
        )
        .await;
    }
    eprintln!("fleet: after the outage, converged in {:?}", back.elapsed());
    for lb in &lbs {
        lb.log_eventually("sync recovered", PATIENCE).await;
    }

    for (i, load) in loads.into_iter().enumerate() {
        let (ok, failed) = load.finish().await;
        assert!(ok > 0, "instance {i} served requests");
        assert_eq!(
            failed,
            0,
            "instance {i}: {failed} failed of {}",
            ok + failed
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_commit_changes_nothing_and_is_reported_with_its_id() {
    let backend = Backend::start("b0").await;
    let remote = Remote::new(|bare| config_text(bare, &[backend.addr], ""));
    let (lb, first) = remote.start_serving(&["--admin", "127.0.0.1:0"]).await;
    let lb = Arc::new(lb);
    let client = support::client();
    let (_, metrics) = support::get(&client, &admin_url(&lb, "/metrics")).await;
    assert!(
        metrics.contains(&format!("lb_config_commit_info{{commit=\"{first}\"}} 1\n")),
        "{metrics}"
    );
    let fetched = metrics
        .lines()
        .find_map(|l| l.strip_prefix("lb_sync_last_success_timestamp_seconds "))
        .and_then(|v| v.parse::<u64>().ok())
        .expect("lb_sync_last_success_timestamp_seconds");
    assert!(fetched > 1_700_000_000, "{metrics}");
    let load = Load::start(&lb, 2);
    let broken = human_push_in(
        &remote.human(),
        |text| text.replace("backends = [", "backends = [ \"not an address\","),
        "a broken change",
    );
    eventually(
        PATIENCE,
        "the broken commit is reported with its id",
        || async {
            let status = sync_status(&lb).await;
            status.remote_head == broken
                && status.serving_commit == first
                && status.last_error.contains(&broken)
        },
    )
    .await;
    lb.log_eventually(&broken, PATIENCE).await;
    let (_, document) = support::get(&client, &admin_url(&lb, "/status.json")).await;
    let document: serde_json::Value = serde_json::from_str(&document).expect("status.json");
    assert_eq!(
        document["sync"]["serving_commit"],
        first.as_str(),
        "{document}"
    );
    assert_eq!(
        document["sync"]["remote_head"],
        broken.as_str(),
        "{document}"
    );
    // A change through lb refuses to build on the broken head, and pushes nothing.
    let extra = Backend::start("extra").await;
    let refused = add_backend(&lb, extra.addr)
        .await
        .expect_err("on a broken head");
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert_eq!(remote.head(), broken);
    let fixed = human_push_in(
        &remote.human(),
        |text| text.replace("backends = [ \"not an address\",", "backends = ["),
        "fix the broken change",
    );
    eventually(PATIENCE, "the fix is served", || async {
        let status = sync_status(&lb).await;
        status.serving_commit == fixed && status.last_error.is_empty()
    })
    .await;
    let (ok, failed) = load.finish().await;
    assert!(ok > 0);
    assert_eq!(failed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_follower_refuses_changes_and_follows_the_remote() {
    let backend = Backend::start("b0").await;
    let remote =
        Remote::new(|bare| config_text(bare, &[backend.addr], "[control]\nread_only = true\n\n"));
    let (lb, first) = remote.start_serving(&["--admin", "127.0.0.1:0"]).await;
    let extra = Backend::start("extra").await;
    let refused = add_backend(&lb, extra.addr).await.expect_err("read-only");
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(
        refused.message().contains("read_only = true")
            && refused
                .message()
                .contains(&format!("branch main of {}", remote.bare().display())),
        "{refused:?}"
    );
    assert_eq!(remote.head(), first);
    let (ok, out, err) = support::lbctl(&lb, &["status"]);
    assert!(ok, "{err}");
    assert!(out.contains(&format!("commit:      {first}")), "{out}");
    // A human's push is what changes it.
    let pushed = human_push_in(
        &remote.human(),
        |text| {
            text.replace(
                "backends = [",
                &format!("backends = [\n  \"{}\",", extra.addr),
            )
        },
        "add a backend by hand",
    );
    let (ok, out, err) = support::lbctl(&lb, &["sync"]);
    assert!(ok, "{err}");
    assert!(out.contains(&format!("commit:      {pushed}\n")), "{out}");
    let mut client = control(&lb).await;
    assert_eq!(
        support::pool_health(&mut client, "/").await.backends.len(),
        2
    );
    // The dashboard says the sync made this generation, and which commit, whoever applied it
    // first (the sync's reload or the watcher's).
    let (_, document) = support::get(&support::client(), &admin_url(&lb, "/status.json")).await;
    let document: serde_json::Value = serde_json::from_str(&document).expect("status.json");
    assert_eq!(
        document["applied_by"],
        format!("sync {}", &pushed[..12]).as_str(),
        "{document}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_match_is_the_hash_of_the_remote_heads_file() {
    use sha2::{Digest, Sha256};
    let backend = Backend::start("b0").await;
    let remote = Remote::new(|bare| config_text(bare, &[backend.addr], ""));
    let (lb, _) = remote.start_serving(&[]).await;
    // `git` trims its output; the file ends with one newline.
    let hash_at_head = || {
        let text = git(&remote.bare(), &["show", "main:lb.toml"]) + "\n";
        format!("{:x}", Sha256::digest(text))
    };
    let stale = hash_at_head();
    assert_eq!(
        stale,
        control(&lb)
            .await
            .status(proto::StatusReq::default())
            .await
            .expect("Status")
            .into_inner()
            .content_hash,
        "the applied file is the head's"
    );
    // A human moves the head; the hash read before no longer matches.
    human_push_in(
        &remote.human(),
        |text| format!("# reviewed\n{text}"),
        "a comment",
    );
    let extra = Backend::start("extra").await;
    let mut client = control(&lb).await;
    let request = |hash: String| proto::AddBackendReq {
        pattern: "/".to_owned(),
        backend: ip_backend(extra.addr, ""),
        if_match: Some(proto::Precondition {
            content_hash: hash,
            generation: 0,
        }),
    };
    let moved = remote.head();
    let refused = client
        .add_backend(request(stale))
        .await
        .expect_err("stale if_match");
    assert_eq!(refused.code(), tonic::Code::Aborted, "{refused:?}");
    assert_eq!(remote.head(), moved, "nothing pushed");
    let current = hash_at_head();
    let commit = client
        .add_backend(request(current))
        .await
        .expect("if_match of the remote head")
        .into_inner()
        .commit;
    assert_eq!(remote.head(), commit);
    // lbctl says which commit carries a change.
    let another = Backend::start("another").await;
    let (ok, out, err) = support::lbctl(&lb, &["backend", "add", "/", &another.addr.to_string()]);
    assert!(ok, "{err}");
    assert_eq!(
        out,
        format!(
            "added backend {} to pool / in commit {}\n",
            another.addr,
            remote.head()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_commits_the_remote_lacks_are_reported_not_discarded() {
    let backend = Backend::start("b0").await;
    let remote = Remote::new(|bare| config_text(bare, &[backend.addr], ""));
    let (lb, _) = remote.start_serving(&[]).await;
    // Someone commits in this instance's working tree, and someone else pushes.
    let tree = lb.config.parent().unwrap().to_path_buf();
    let text = std::fs::read_to_string(&lb.config).unwrap();
    std::fs::write(&lb.config, format!("# local note\n{text}")).unwrap();
    git(&tree, &["commit", "--quiet", "-am", "a local commit"]);
    let local = git(&tree, &["rev-parse", "HEAD"]);
    let pushed = human_push_in(
        &remote.human(),
        |text| format!("# pushed note\n{text}"),
        "a pushed commit",
    );
    let (ok, out, err) = support::lbctl(&lb, &["sync"]);
    assert!(!ok, "{out}");
    assert!(
        err.contains("FAILED_PRECONDITION")
            && err.contains("has commits that")
            && err.contains(&local),
        "{err}"
    );
    eventually(PATIENCE, "the divergence is in the status", || async {
        let status = sync_status(&lb).await;
        status.remote_head == pushed && status.last_error.contains("nothing was discarded")
    })
    .await;
    assert_eq!(
        git(&tree, &["rev-parse", "HEAD"]),
        local,
        "the local commit is kept"
    );
}

#[test]
fn sync_outside_a_git_working_tree_stops_lb_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("lb.toml");
    std::fs::write(
        &config,
        config_text(
            Path::new("/nonexistent/remote.git"),
            &[],
            "allow_empty = true\n",
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_lb"))
        .arg("--config")
        .arg(&config)
        .args(["--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"])
        // Outside any repository, whatever directory holds the test's tempdir.
        .env("GIT_CEILING_DIRECTORIES", dir.path().parent().unwrap())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn lb");
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for lb") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "lb kept running without a git working tree"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(
        stderr.contains("[sync] needs the directory holding")
            && stderr.contains("git working tree"),
        "{stderr}"
    );
}

/// A TLS backend with `leaf` whose `/healthz` (every path) answers `ok`; stops when dropped.
struct TlsBackend {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl TlsBackend {
    fn start(leaf: &support::certs::Leaf) -> TlsBackend {
        let config = rustls::ServerConfig::builder_with_provider(support::certs::provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der.clone()], leaf.key())
            .expect("backend certificate");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = support::backend_listener(support::LOOPBACK_ANY);
        let addr = listener.local_addr().expect("backend addr");
        let task = support::spawn_backend(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                while connections.try_join_next().is_some() {}
                let acceptor = acceptor.clone();
                connections.spawn(async move {
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(|_request| async {
                        Ok::<_, hyper::Error>(hyper::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from_static(b"ok"),
                        )))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        TlsBackend { addr, task }
    }
}

impl Drop for TlsBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_backend_probes_a_tls_pool_over_its_backend_tls() {
    let ca = support::certs::Ca::new("backend CA");
    let first = TlsBackend::start(&ca.server(&["127.0.0.1"]));
    let remote = Remote::new(|bare| {
        format!(
            "{}backend_tls = {{ ca = \"backend-ca.pem\" }}\n",
            config_text(bare, &[first.addr], "")
        )
    });
    ca.write(&remote.human().join("backend-ca.pem"));
    git(&remote.human(), &["add", "backend-ca.pem"]);
    git(
        &remote.human(),
        &["commit", "--quiet", "-m", "the backends' CA"],
    );
    git(&remote.human(), &["push", "--quiet", "origin", "main"]);
    let lb = remote.start_lb();
    let head = remote.head();
    eventually(PATIENCE, "serving the remote head", || async {
        serving(&lb).await == head
    })
    .await;

    // A plaintext listener cannot answer a TLS check: refused, the remote untouched.
    let plain = Backend::start("plain").await;
    let refused = add_backend(&lb, plain.addr)
        .await
        .expect_err("a plaintext backend in a TLS pool is refused");
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert_eq!(remote.head(), head, "nothing was pushed");

    // A backend with a certificate from the pool's CA passes and lands.
    let second = TlsBackend::start(&ca.server(&["127.0.0.1"]));
    let commit = add_backend(&lb, second.addr)
        .await
        .expect("a TLS backend with the pool's CA is added");
    assert_eq!(remote.head(), commit);
    let text = git(&remote.bare(), &["show", "main:lb.toml"]);
    assert!(text.contains(&second.addr.to_string()), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_whose_caller_gave_up_still_lands_whole() {
    let backend = Backend::start("b0").await;
    let remote = Remote::new(|bare| config_text(bare, &[backend.addr], ""));
    let (lb, first) = remote.start_serving(&[]).await;
    // The remote takes its time over every push, longer than the caller waits.
    remote.pre_receive("#!/bin/sh\nsleep 2\n");
    let added = Backend::start("b1").await;
    let mut client = control(&lb).await;
    let mut request = tonic::Request::new(proto::AddBackendReq {
        pattern: "/".to_owned(),
        backend: ip_backend(added.addr, ""),
        if_match: None,
    });
    request.set_timeout(Duration::from_millis(300));
    let gave_up = client
        .add_backend(request)
        .await
        .expect_err("the caller's deadline passes during the push");
    // The client's own timer or the server's deadline, whichever ends first.
    assert!(
        matches!(
            gave_up.code(),
            tonic::Code::Cancelled | tonic::Code::DeadlineExceeded
        ),
        "{gave_up:?}"
    );
    // The change lands anyway, and this instance applies it.
    eventually(
        PATIENCE,
        "the change is on the remote and served",
        || async {
            let head = remote.head();
            head != first && serving(&lb).await == head
        },
    )
    .await;
    let text = git(&remote.bare(), &["show", "main:lb.toml"]);
    assert!(text.contains(&added.addr.to_string()), "{text}");
    let git_dir = lb.config.parent().unwrap().join(".git");
    assert!(
        !git_dir.join("index.lock").exists(),
        "no lock is left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_the_remote_declines_fails_at_once_with_its_reason() {
    let backend = Backend::start("b0").await;
    let remote = Remote::new(|bare| config_text(bare, &[backend.addr], ""));
    let (lb, first) = remote.start_serving(&[]).await;
    // A protected branch: the remote declines every push, however often it is redone.
    remote.pre_receive("#!/bin/sh\necho 'main is protected' >&2\nexit 1\n");
    let added = Backend::start("b1").await;
    let declined = add_backend(&lb, added.addr)
        .await
        .expect_err("the remote declines the push");
    assert_eq!(
        declined.code(),
        tonic::Code::FailedPrecondition,
        "{declined:?}"
    );
    assert!(
        declined.message().contains("pre-receive hook declined")
            && declined.message().contains("main is protected"),
        "{declined:?}"
    );
    assert_eq!(remote.head(), first, "nothing was pushed");
    assert!(push_retries(&lb).is_empty(), "nothing landed");
    assert!(
        lb.find_log("push refused").is_none(),
        "a declined push is not redone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blank_actor_is_no_actor() {
    let backend = Backend::start("b0").await;
    let remote = Remote::new(|bare| config_text(bare, &[backend.addr], ""));
    let (lb, _) = remote.start_serving(&[]).await;
    let added = Backend::start("b1").await;
    let mut client = control(&lb).await;
    let mut request = tonic::Request::new(proto::AddBackendReq {
        pattern: "/".to_owned(),
        backend: ip_backend(added.addr, ""),
        if_match: None,
    });
    request.metadata_mut().insert(
        "x-lb-actor",
        tonic::metadata::MetadataValue::from_static(" "),
    );
    let commit = client
        .add_backend(request)
        .await
        .expect("a blank actor does not fail the change")
        .into_inner()
        .commit;
    assert_eq!(remote.head(), commit);
    assert_eq!(
        git(&remote.bare(), &["log", "-1", "--format=%an", "main"]),
        "unknown"
    );
}

/// A head this instance refuses (every pool removed without `allow_empty`) gets no change
/// computed on top of it: the redo on the remote head is held to the reload's rules, so the
/// fleet is not handed a file built from a truncated one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_change_is_pushed_on_top_of_a_head_this_instance_refuses() {
    let backend = Backend::start("b0").await;
    let remote = Remote::new(|bare| config_text(bare, &[backend.addr], ""));
    let (lb, first) = remote.start_serving(&[]).await;
    let client = support::client();
    let emptied = human_push_in(
        &remote.human(),
        |text| text.split("[pools.").next().unwrap_or_default().to_owned(),
        "remove every pool by mistake",
    );
    eventually(PATIENCE, "the emptied head refused", || async {
        let status = sync_status(&lb).await;
        status.remote_head == emptied
            && status.serving_commit == first
            && status.last_error.contains("allow_empty = true")
    })
    .await;
    let extra = Backend::start("extra").await;
    let refused = add_backend(&lb, extra.addr)
        .await
        .expect_err("AddBackend on an emptied head");
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(
        refused.message().contains("allow_empty = true"),
        "{refused:?}"
    );
    let mut control = control(&lb).await;
    let refused = control
        .add_pool(support::add_pool_req("/x/"))
        .await
        .expect_err("AddPool on an emptied head");
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert_eq!(remote.head(), emptied, "nothing was pushed");
    assert_eq!(support::get(&client, &lb.url("/")).await.1, "b0");
}

/// `lbctl status --fleet` finds the fleet's head by ancestry, not by fetch time: right after a
/// push, the instance that made it has fetched *before* another instance that has not seen it
/// yet. The view names the one behind, and shows each served commit's subject and age.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_view_finds_the_head_by_ancestry_not_by_fetch_time() {
    let backend = Backend::start("b0").await;
    // No periodic fetch: each one below is the test's.
    let remote = Remote::new(|bare| {
        format!(
            "[sync]\nremote = \"{}\"\nbranch = \"main\"\ninterval = \"1h\"\n\n{}",
            bare.display(),
            support::pool("/", &[backend.addr], "100ms")
        )
    });
    let (pusher, first) = remote.start_serving(&[]).await;
    let (other, _) = remote.start_serving(&[]).await;
    // The remote holds every push until the test lets it land.
    let gate = remote.root.path().join("gate");
    let entered = remote.root.path().join("entered");
    remote.pre_receive(&format!(
        "#!/bin/sh\ntouch '{}'\ni=0\nwhile [ ! -e '{}' ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done\n",
        entered.display(),
        gate.display()
    ));
    let added = Backend::start("b1").await;
    let push = {
        let url = format!("http://{}", pusher.grpc.expect("grpc listener"));
        let addr = added.addr;
        tokio::spawn(async move {
            let mut client = support::Control::connect(url).await.expect("connect");
            client
                .add_backend(proto::AddBackendReq {
                    pattern: "/".to_owned(),
                    backend: ip_backend(addr, ""),
                    if_match: None,
                })
                .await
                .map(|r| r.into_inner().commit)
        })
    };
    eventually(PATIENCE, "the push reaches the remote's hook", || async {
        entered.exists()
    })
    .await;
    let pushed_fetch = sync_status(&pusher).await.last_success_unix;
    // The other instance fetches later (by the clock's second) and still sees the first commit.
    eventually(PATIENCE, "a later second", || async {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            > pushed_fetch
    })
    .await;
    let (ok, _, err) = support::lbctl(&other, &["sync"]);
    assert!(ok, "{err}");
    assert_eq!(sync_status(&other).await.remote_head, first);
    std::fs::write(&gate, "").unwrap();
    let commit = push.await.unwrap().expect("AddBackend lands");
    assert_eq!(serving(&pusher).await, commit);
    let (pusher_at, other_at) = (sync_status(&pusher).await, sync_status(&other).await);
    assert!(
        pusher_at.last_success_unix < other_at.last_success_unix,
        "{pusher_at:?} {other_at:?}"
    );

    let fleet = [
        pusher.grpc.unwrap().to_string(),
        other.grpc.unwrap().to_string(),
    ];
    let (ok, out, err) = support::lbctl(&pusher, &["status", "--fleet", &fleet[0], &fleet[1]]);
    assert!(ok, "{err}");
    let row = |addr: &str| {
        out.lines()
            .find(|line| line.starts_with(addr))
            .unwrap_or_else(|| panic!("a row for {addr} in\n{out}"))
            .to_owned()
    };
    assert!(row(&fleet[0]).ends_with("  ok"), "{out}");
    assert!(
        row(&fleet[1]).ends_with(&format!("LAGS behind {}", &commit[..12])),
        "{out}"
    );
    // The subject of each served commit, and its age.
    let subject = format!("lb: AddBackend / {}", added.addr);
    assert!(row(&fleet[0]).contains(&subject), "{out}");
    assert!(row(&fleet[1]).contains("the first topology"), "{out}");
    assert!(row(&fleet[0]).contains(" ago"), "{out}");
    assert!(
        out.contains(&format!("remote head: {}", &commit[..12])),
        "{out}"
    );

    let (ok, out, err) = support::lbctl(
        &pusher,
        &[
            "status", "--output", "json", "--fleet", &fleet[0], &fleet[1],
        ],
    );
    assert!(ok, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["remote_head"], commit.as_str(), "{json}");
    assert_eq!(json["remote_head_subject"], subject.as_str(), "{json}");
    assert_eq!(json["instances"][0]["state"], "ok", "{json}");
}
