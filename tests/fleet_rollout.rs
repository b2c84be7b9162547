//! One canary rollout across a `[sync]` fleet of real lb processes: the instance that starts
//! it drives it and judges each step on the sum of every peer's windows (so traffic sent only
//! to the others counts), every instance serves each step's weight within a couple of sync
//! intervals, the rollout holds while its driver is gone, `lbctl rollout resume` on another
//! instance takes it over and finishes it, and each step is one commit of the remote. A canary
//! failing only on another instance's traffic is aborted by the driver, and a peer that does
//! not answer holds a step that would pass.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::remote::{git, human_push_in, serving, Remote, PATIENCE};
use support::{eventually, Lb, Load, SampleWeb};

const INTERVAL_MS: u64 = 200;
const WAIT: Duration = Duration::from_secs(40);

/// lb.toml of the fleet: `[sync]` over `bare` and pool `/` over `stable` with a declared
/// canary at weight 0 (no rollout yet; `lbctl rollout start` writes one).
fn config_text(bare: &Path, stable: &SampleWeb, canary: &SampleWeb) -> String {
    format!(
        "[sync]\nremote = \"{}\"\nbranch = \"main\"\ninterval = \"{INTERVAL_MS}ms\"\n\n\
         [pools.\"/\"]\ninterval = \"100ms\"\nbackends = [\"{}\"]\n\n\
         [pools.\"/\".canary]\nbackends = [\"{}\"]\nweight = 0\n",
        bare.display(),
        stable.addr,
        canary.addr
    )
}

/// The admin listener's `HOST:PORT`.
fn admin_addr(lb: &Lb) -> String {
    lb.admin_url("")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned()
}

/// Starts one instance named `name` on a fresh clone, with an admin listener.
fn start(remote: &Remote, name: &str) -> Lb {
    remote.start_lb_with(&["--admin", "127.0.0.1:0", "--instance", name])
}

/// Puts `peers` in `[sync]` by a human's commit and waits until every instance of `lbs`
/// serves it.
async fn set_peers(remote: &Remote, lbs: &[&Lb], peers: &[String]) {
    let list: Vec<String> = peers.iter().map(|p| format!("\"{p}\"")).collect();
    let line = format!("peers = [{}]\n", list.join(", "));
    let commit = human_push_in(
        &remote.human(),
        |text| {
            let kept: String = text
                .lines()
                .filter(|l| !l.starts_with("peers = "))
                .map(|l| format!("{l}\n"))
                .collect();
            kept.replacen(
                "branch = \"main\"\n",
                &format!("branch = \"main\"\n{line}"),
                1,
            )
        },
        "the fleet's admin listeners",
    );
    for lb in lbs {
        eventually(PATIENCE, "every instance serves the peers", || async {
            serving(lb).await == commit
        })
        .await;
    }
}

async fn status_json(lb: &Lb) -> serde_json::Value {
    let (status, body) = support::get(&support::client(), &lb.admin_url("/status.json")).await;
    assert_eq!(status, http::StatusCode::OK, "{body}");
    serde_json::from_str(&body).expect("status.json")
}

/// The canary weight `lb` serves, from its /status.json.
async fn weight(lb: &Lb) -> f64 {
    status_json(lb).await["pools"][0]["canary"]["weight_percent"]
        .as_f64()
        .unwrap_or(-1.0)
}

/// The remote's lb.toml.
fn remote_file(remote: &Remote) -> String {
    git(&remote.bare(), &["show", "main:lb.toml"])
}

/// The remote's commit subjects, oldest first.
fn subjects(remote: &Remote) -> Vec<String> {
    git(&remote.bare(), &["log", "--reverse", "--format=%s", "main"])
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The body of the remote's commit whose subject holds `needle`.
fn body_of(remote: &Remote, needle: &str) -> String {
    let log = git(&remote.bare(), &["log", "--format=%H %s", "main"]);
    let hash = log
        .lines()
        .find(|l| l.contains(needle))
        .and_then(|l| l.split(' ').next())
        .unwrap_or_else(|| panic!("a commit {needle:?} in\n{log}"));
    git(&remote.bare(), &["log", "--format=%B", "-1", hash])
}

/// Waits until the remote has a commit whose subject holds `needle`; returns when it saw it.
async fn commit_eventually(remote: &Remote, needle: &str, lbs: &[&Lb]) -> Instant {
    let deadline = Instant::now() + WAIT;
    loop {
        if subjects(remote).iter().any(|s| s.contains(needle)) {
            return Instant::now();
        }
        if Instant::now() >= deadline {
            let mut states = String::new();
            for lb in lbs {
                let (_, out, err) = support::lbctl(lb, &["rollout", "status", "/"]);
                states.push_str(&format!("{out}{err}\n"));
            }
            panic!(
                "no commit {needle:?} within {WAIT:?}: {:?}\n{states}",
                subjects(remote)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until every instance of `lbs` serves canary weight `percent`; returns how long each
/// took from `since` (the instances watched together).
async fn all_serve(lbs: &[&Lb], percent: f64, since: Instant) -> Vec<Duration> {
    let deadline = since + PATIENCE;
    let mut took: Vec<Option<Duration>> = vec![None; lbs.len()];
    while took.iter().any(Option::is_none) {
        assert!(
            Instant::now() < deadline,
            "every instance serves {percent}% within {PATIENCE:?}: {took:?}"
        );
        for (i, lb) in lbs.iter().enumerate() {
            if took[i].is_none() && weight(lb).await == percent {
                took[i] = Some(since.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    took.into_iter().flatten().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rollout_driven_by_one_instance_counts_the_fleet_s_traffic_survives_its_driver_and_lands_once_a_step(
) {
    let stable = SampleWeb::start(&["--node", "stable"]);
    let canary = SampleWeb::start(&["--node", "canary", "--version", "v2"]);
    let remote = Remote::new(|bare| config_text(bare, &stable, &canary));
    let a = start(&remote, "a");
    let b = Arc::new(start(&remote, "b"));
    let c = Arc::new(start(&remote, "c"));
    let peers = [admin_addr(&a), admin_addr(&b), admin_addr(&c)];
    set_peers(&remote, &[&a, &b, &c], &peers).await;
    for (lb, name) in [(&a, "a"), (&*b, "b"), (&*c, "c")] {
        assert_eq!(status_json(lb).await["instance"], name);
        assert_eq!(support::status(lb).await.instance, name);
    }

    // Traffic only to b and c; the rollout starts on a, which never sees a request.
    let loads = [Load::start(&b, 2), Load::start(&c, 2)];
    let (ok, out, err) = support::lbctl(
        &a,
        &[
            "rollout",
            "start",
            "/",
            "--steps",
            "10,50,100",
            "--bake",
            "2s",
            "--min-requests",
            "20",
            "--max-error-increase",
            "1",
            "--max-p99-ratio",
            "1000",
        ],
    );
    assert!(ok, "{out}{err}");
    let all = [&a, &*b, &*c];
    let landed = commit_eventually(&remote, "started, step 1 of 3", &all).await;
    assert!(remote_file(&remote).contains("driver = \"a\""));
    let mut followed = vec![("step 1", all_serve(&all, 10.0, landed).await)];
    let landed = commit_eventually(&remote, "step 2 of 3", &all).await;
    followed.push(("step 2", all_serve(&all, 50.0, landed).await));
    eprintln!("fleet rollout: every instance served each step after {followed:?} (interval {INTERVAL_MS} ms)");
    for (step, took) in &followed {
        // Two sync intervals to fetch and apply, and as much again for a loaded machine.
        for took in took {
            assert!(
                *took <= Duration::from_millis(4 * INTERVAL_MS),
                "{step}: {followed:?}"
            );
        }
    }
    let step_two = body_of(&remote, "step 2 of 3");
    assert!(
        step_two.contains("Judged on the windows of a, b, c."),
        "a's verdict summed b's and c's windows: {step_two}"
    );
    let (_, own) = support::get(
        &support::client(),
        &a.admin_url("/rollout/windows?pool=%2F&seconds=300"),
    )
    .await;
    let own: serde_json::Value = serde_json::from_str(&own).expect("windows");
    assert_eq!(own["instance"], "a");
    assert_eq!(
        own["canary"]["requests"], 0,
        "a served no request: the steps passed on b's and c's: {own}"
    );

    // b and c follow; they say who drives.
    let doc = status_json(&b).await;
    let rollout = &doc["pools"][0]["rollout"];
    assert_eq!(rollout["driver"], "a", "{doc}");
    assert!(
        rollout["next"]
            .as_str()
            .is_some_and(|n| n.starts_with("driven by a")),
        "{doc}"
    );

    // The driver goes: nothing moves, however long the steps have baked.
    let mut a = a;
    a.terminate(Duration::from_secs(10));
    let before = subjects(&remote);
    let held_since = Instant::now();
    while held_since.elapsed() < Duration::from_secs(3) {
        assert_eq!(
            subjects(&remote),
            before,
            "the rollout holds without its driver"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (ok, out, err) = support::lbctl(&b, &["rollout", "status", "/"]);
    assert!(ok, "{err}");
    assert!(out.contains("driver: a (this is b)"), "{out}");
    assert!(out.contains("driven by a"), "{out}");

    // b takes over and finishes; a's address refuses connections, so it counts as down.
    for load in loads {
        load.finish().await;
    }
    let loads = [Load::start(&b, 2), Load::start(&c, 2)];
    let (ok, out, err) = support::lbctl(&b, &["rollout", "resume", "/"]);
    assert!(ok, "{out}{err}");
    let live = [&*b, &*c];
    commit_eventually(&remote, "driven by b", &live).await;
    let landed = commit_eventually(&remote, "step 3 of 3", &live).await;
    all_serve(&live, 100.0, landed).await;
    commit_eventually(&remote, "promoted", &live).await;
    let mut failed = 0;
    for load in loads {
        failed += load.finish().await.1;
    }
    assert_eq!(failed, 0);
    let step_three = body_of(&remote, "step 3 of 3");
    assert!(
        step_three.contains(&format!(
            "Judged on the windows of b, c; down: {}.",
            peers[0]
        )),
        "{step_three}"
    );
    let text = remote_file(&remote);
    assert!(text.contains("state = \"done\""), "{text}");
    assert!(text.contains("driver = \"b\""), "{text}");

    // Each step once, in a linear history.
    let subjects = subjects(&remote);
    eprintln!("{subjects:#?}");
    assert_eq!(git(&remote.bare(), &["rev-list", "--merges", "main"]), "");
    for needle in [
        "rollout /: started, step 1 of 3",
        "rollout /: step 2 of 3",
        "rollout /: driven by b from step 2 of 3",
        "rollout /: step 3 of 3",
        "rollout /: promoted",
    ] {
        assert_eq!(
            subjects.iter().filter(|s| s.contains(needle)).count(),
            1,
            "{needle:?} once in {subjects:#?}"
        );
    }
    assert_eq!(
        subjects.iter().filter(|s| s.contains("rollout /")).count(),
        5,
        "{subjects:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_canary_failing_only_on_another_instance_s_traffic_is_aborted_by_the_driver() {
    let stable = SampleWeb::start(&["--node", "stable"]);
    let canary = SampleWeb::start(&["--node", "canary", "--error-rate", "0.3"]);
    let remote = Remote::new(|bare| config_text(bare, &stable, &canary));
    let a = start(&remote, "a");
    let b = Arc::new(start(&remote, "b"));
    set_peers(&remote, &[&a, &b], &[admin_addr(&a), admin_addr(&b)]).await;
    let (ok, out, err) = support::lbctl(
        &a,
        &[
            "rollout",
            "start",
            "/",
            "--steps",
            "20,100",
            "--bake",
            "1h",
            "--min-requests",
            "30",
        ],
    );
    assert!(ok, "{out}{err}");
    let load = Load::start(&b, 4);
    commit_eventually(&remote, "aborted at step 1", &[&a, &*b]).await;
    load.finish().await;
    let text = remote_file(&remote);
    assert!(text.contains("state = \"aborted\""), "{text}");
    assert!(text.contains("driver = \"a\""), "{text}");
    let body = body_of(&remote, "aborted at step 1");
    assert!(body.contains("canary error rate"), "{body}");
    assert!(
        body.contains("Judged on the windows of a, b."),
        "a decided it, on b's windows: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_step_that_would_pass_holds_while_a_peer_does_not_answer() {
    let stable = SampleWeb::start(&["--node", "stable"]);
    let canary = SampleWeb::start(&["--node", "canary"]);
    let remote = Remote::new(|bare| config_text(bare, &stable, &canary));
    let a = Arc::new(start(&remote, "a"));
    // A peer that takes the connection and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_addr = silent.local_addr().expect("addr").to_string();
    set_peers(&remote, &[&a], &[admin_addr(&a), silent_addr.clone()]).await;
    let load = Load::start(&a, 2);
    let (ok, out, err) = support::lbctl(
        &a,
        &[
            "rollout",
            "start",
            "/",
            "--steps",
            "10,100",
            "--bake",
            "1s",
            "--min-requests",
            "10",
            "--max-error-increase",
            "1",
            "--max-p99-ratio",
            "1000",
        ],
    );
    assert!(ok, "{out}{err}");
    commit_eventually(&remote, "started, step 1 of 2", &[&a]).await;
    let holding = format!("holding: peer {silent_addr} unreachable (no answer within 1s)");
    eventually(
        WAIT,
        "a's status says it holds for the silent peer",
        || async {
            let doc = status_json(&a).await;
            doc["pools"][0]["rollout"]["next"]
                .as_str()
                .is_some_and(|n| n.starts_with(&holding))
        },
    )
    .await;
    let (ok, out, err) = support::lbctl(&a, &["rollout", "status", "/"]);
    assert!(ok, "{err}");
    assert!(out.contains(&format!("unreachable {silent_addr}")), "{out}");
    // The bake is long over and the figures pass, yet nothing moves.
    let before = subjects(&remote);
    let held_since = Instant::now();
    while held_since.elapsed() < Duration::from_secs(3) {
        assert_eq!(subjects(&remote), before, "held for the silent peer");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The peer leaves the list: the step passes.
    set_peers(&remote, &[&a], &[admin_addr(&a)]).await;
    commit_eventually(&remote, "step 2 of 2", &[&a]).await;
    load.finish().await;
    drop(silent);
}
