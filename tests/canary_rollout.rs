//! Rollouts lb drives itself, through real lb and sample-web processes: a plan in lb.toml
//! starts, each step is judged on lb's own windows and becomes a git commit, a good canary is
//! promoted, a failing one (errors, then latency) is aborted by lb with the figures in the
//! commit, a rollout without traffic holds, a restarted lb resumes at its step, and a person's
//! edit of the weight pauses it.

mod support;

use std::sync::Arc;
use std::time::Duration;

use hyper::StatusCode;
use support::remote::git;
use support::{eventually, healthy_eventually, Lb, Load, SampleWeb};

const WAIT: Duration = Duration::from_secs(30);

/// lb.toml: pool `/` over `stable`, a canary `canary` at weight 0, and the rollout table
/// `plan` (its keys, one per line), with every control change committed.
fn config(stable: &SampleWeb, canary: &SampleWeb, plan: &str) -> String {
    format!(
        "[control]\ngit_commit = true\n\n\
         [pools.\"/\"]\ninterval = \"100ms\"\nbackends = [\n  \"{}\",\n]\n\n\
         [pools.\"/\".canary]\nbackends = [\"{}\"]\nweight = 0 # set by the rollout\n\n\
         [pools.\"/\".rollout]\n{plan}",
        stable.addr, canary.addr
    )
}

/// Starts lb on `text` in a fresh git repository (the file committed) with both backends up.
async fn start(text: &str, stable: &SampleWeb) -> Lb {
    let dir = tempfile::tempdir().expect("temp dir");
    git(dir.path(), &["init", "-q"]);
    let path = dir.path().join("lb.toml");
    std::fs::write(&path, text).expect("write lb.toml");
    git(dir.path(), &["add", "lb.toml"]);
    git(dir.path(), &["commit", "-qm", "initial"]);
    let lb = Lb::start_at(dir, path, &["--admin", "127.0.0.1:0"]);
    healthy_eventually(&lb, "/", stable.addr, WAIT).await;
    lb
}

fn file(lb: &Lb) -> String {
    std::fs::read_to_string(&lb.config).expect("read lb.toml")
}

/// Waits until lb.toml holds `needle`.
async fn file_eventually(lb: &Lb, needle: &str, timeout: Duration) -> String {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let text = file(lb);
        if text.contains(needle) {
            return text;
        }
        if tokio::time::Instant::now() >= deadline {
            let (_, status, _) = support::lbctl(lb, &["rollout", "status", "/"]);
            panic!("timed out after {timeout:?} waiting for lb.toml to hold {needle:?}:\n{text}\n{status}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the history has a commit whose subject holds `needle` (a change's commit
/// follows its write).
async fn commit_eventually(lb: &Lb, needle: &str) -> Vec<String> {
    eventually(WAIT, &format!("a commit {needle:?}"), || async {
        subjects(lb).iter().any(|s| s.contains(needle))
    })
    .await;
    subjects(lb)
}

/// Subjects of the commits after the initial one, oldest first.
fn subjects(lb: &Lb) -> Vec<String> {
    git(lb.dir(), &["log", "--reverse", "--format=%s"])
        .lines()
        .skip(1)
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_good_canary_goes_through_every_step_and_is_promoted_one_commit_each() {
    let stable = SampleWeb::start(&["--node", "stable"]);
    let canary = SampleWeb::start(&["--node", "canary", "--version", "v2"]);
    let text = config(
        &stable,
        &canary,
        "steps = [5, 25, 50, 100]\nbake = \"1s\"\nmin_requests = 20\nmax_p99_ratio = 1000\nmax_error_increase = 1\n",
    );
    let lb = Arc::new(start(&text, &stable).await);
    let load = Load::start(&lb, 4);
    let promoted = file_eventually(&lb, "state = \"done\"", Duration::from_secs(60)).await;
    let (ok, failed) = load.finish().await;
    commit_eventually(&lb, "promoted").await;
    assert_eq!(failed, 0, "{ok} answered");
    assert!(!promoted.contains("[pools.\"/\".canary]"), "{promoted}");
    assert!(
        promoted.contains(&format!("backends = [\n  \"{}\",\n]", canary.addr)),
        "the canary's backend is the pool's, in the array's layout: {promoted}"
    );
    assert_eq!(
        subjects(&lb),
        [
            "lb: rollout /: started, step 1 of 4, canary weight 5%",
            "lb: rollout /: step 2 of 4, canary weight 25%",
            "lb: rollout /: step 3 of 4, canary weight 50%",
            "lb: rollout /: step 4 of 4, canary weight 100%",
            "lb: rollout /: promoted, the canary's backends are the pool's",
        ]
    );
    let step_two = git(lb.dir(), &["log", "--format=%B", "-1", "HEAD~3"]);
    assert!(step_two.contains("Step 1 (5%) passed"), "{step_two}");
    assert!(
        step_two.contains("canary ") && step_two.contains(" requests, "),
        "{step_two}"
    );
    assert!(
        step_two.contains("Requested by lb rollout controller"),
        "{step_two}"
    );
    let body = support::get(&support::client(), &lb.url("/")).await.1;
    assert!(body.contains("v2"), "the promoted backend answers: {body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_canary_answering_errors_is_aborted_at_its_first_step_with_the_figures() {
    let stable = SampleWeb::start(&["--node", "stable"]);
    let canary = SampleWeb::start(&["--node", "canary", "--error-rate", "0.2"]);
    let text = config(
        &stable,
        &canary,
        "steps = [10, 50, 100]\nbake = \"30s\"\nmin_requests = 30\n",
    );
    let lb = Arc::new(start(&text, &stable).await);
    let load = Load::start(&lb, 4);
    let aborted = file_eventually(&lb, "state = \"aborted\"", WAIT).await;
    load.finish().await;
    commit_eventually(&lb, "aborted").await;
    assert!(
        aborted.contains("weight = 0 # set by the rollout"),
        "{aborted}"
    );
    assert!(
        aborted.contains(&format!(
            "{{ addr = \"{}\", state = \"drain\" }}",
            canary.addr
        )),
        "the canary stays declared, drained: {aborted}"
    );
    assert!(aborted.contains("step = 1\n"), "{aborted}");
    assert_eq!(
        subjects(&lb).last().map(String::as_str),
        Some("lb: rollout /: aborted at step 1 (10%), canary weight 0%")
    );
    let message = git(lb.dir(), &["log", "--format=%B", "-1"]);
    assert!(message.contains("Step 1 (10%) failed."), "{message}");
    assert!(message.contains("canary error rate"), "{message}");
    assert!(message.contains("stable "), "{message}");
    // The bake was never waited for: a failing step fails as soon as it has the requests.
    let started = subjects(&lb).len();
    assert_eq!(started, 2, "{:?}", subjects(&lb));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_canary_is_aborted_by_the_p99_rule() {
    let stable = SampleWeb::start(&["--node", "stable"]);
    let canary = SampleWeb::start(&["--node", "canary", "--delay", "200ms"]);
    let text = config(
        &stable,
        &canary,
        "steps = [20, 100]\nbake = \"30s\"\nmin_requests = 20\n",
    );
    let lb = Arc::new(start(&text, &stable).await);
    let load = Load::start(&lb, 8);
    file_eventually(&lb, "state = \"aborted\"", WAIT).await;
    let (_, failed) = load.finish().await;
    commit_eventually(&lb, "aborted").await;
    assert_eq!(failed, 0, "slow is not failed");
    let message = git(lb.dir(), &["log", "--format=%B", "-1"]);
    assert!(message.contains("canary p99"), "{message}");
    assert!(!message.contains("canary error rate"), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_traffic_a_rollout_holds_and_says_what_it_needs() {
    let stable = SampleWeb::start(&["--node", "stable"]);
    let canary = SampleWeb::start(&["--node", "canary"]);
    let text = config(
        &stable,
        &canary,
        "steps = [5, 100]\nbake = \"1s\"\nmin_requests = 50\n",
    );
    let lb = start(&text, &stable).await;
    file_eventually(&lb, "state = \"running\"", WAIT).await;
    // Past the bake with no request: the controller waits, whatever time passes.
    let (ok, out, err) = support::lbctl(&lb, &["rollout", "status", "/"]);
    assert!(ok, "{err}");
    assert!(out.contains("step 1 of 2"), "{out}");
    eventually(WAIT, "status saying it waits for requests", || async {
        let (_, out, _) = support::lbctl(&lb, &["rollout", "status", "/"]);
        out.contains("waiting for 50 more canary requests")
    })
    .await;
    let (status, body) = support::get(&support::client(), &lb.admin_url("/status.json")).await;
    assert_eq!(status, StatusCode::OK);
    let doc: serde_json::Value = serde_json::from_str(&body).expect("status.json");
    let rollout = &doc["pools"][0]["rollout"];
    assert_eq!(rollout["state"], "running", "{body}");
    assert_eq!(rollout["steps"], serde_json::json!([5, 100]));
    assert_eq!(rollout["verdict"], "not enough data");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let text = file(&lb);
    assert!(
        text.contains("state = \"running\"") && text.contains("step = 1\n"),
        "{text}"
    );
    assert_eq!(
        subjects(&lb).len(),
        1,
        "only the start: {:?}",
        subjects(&lb)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_lb_resumes_the_rollout_at_its_step() {
    let stable = SampleWeb::start(&["--node", "stable"]);
    let canary = SampleWeb::start(&["--node", "canary"]);
    let text = config(
        &stable,
        &canary,
        "steps = [10, 50, 100]\nbake = \"3s\"\nmin_requests = 20\nmax_p99_ratio = 1000\nmax_error_increase = 1\n",
    );
    let lb = start(&text, &stable).await;
    let client = support::client();
    // Traffic until step 2 is reached, then none: the rollout holds at step 2. (The bake is
    // long enough that the requests sent before this loop sees the step cannot pass it.)
    let deadline = tokio::time::Instant::now() + WAIT;
    while !file(&lb).contains("step = 2\n") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "step 2 in time: {}",
            file(&lb)
        );
        let (status, body) = support::get(&client, &lb.url("/")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    commit_eventually(&lb, "step 2 of 3").await;
    let lb = lb.restart(&["--admin", "127.0.0.1:0"]);
    healthy_eventually(&lb, "/", canary.addr, WAIT).await;
    let (ok, out, err) = support::lbctl(&lb, &["rollout", "status", "/"]);
    assert!(ok, "{err}");
    assert!(out.contains("step 2 of 3"), "resumed at its step: {out}");
    let client = support::client();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !file(&lb).contains("state = \"done\"") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "done in time: {}",
            file(&lb)
        );
        let (status, body) = support::get(&client, &lb.url("/")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let subjects = commit_eventually(&lb, "promoted").await;
    let step_two = subjects
        .iter()
        .filter(|s| s.contains("step 2 of 3"))
        .count();
    assert_eq!(step_two, 1, "step 2 applied once: {subjects:?}");
    assert!(
        subjects.iter().any(|s| s.contains("step 3 of 3")),
        "{subjects:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_person_s_edit_of_the_weight_pauses_the_rollout() {
    let stable = SampleWeb::start(&["--node", "stable"]);
    let canary = SampleWeb::start(&["--node", "canary"]);
    let text = config(
        &stable,
        &canary,
        "steps = [5, 100]\nbake = \"1h\"\nmin_requests = 20\n",
    );
    let lb = start(&text, &stable).await;
    let running = file_eventually(&lb, "state = \"running\"", WAIT).await;
    let edited = running.replace(
        "weight = 5 # set by the rollout",
        "weight = 40 # set by the rollout",
    );
    assert_ne!(edited, running);
    std::fs::write(&lb.config, &edited).expect("write lb.toml");
    let paused = file_eventually(&lb, "state = \"paused\"", WAIT).await;
    assert!(
        paused.contains("weight = 40"),
        "the person's weight stands: {paused}"
    );
    assert!(
        paused.contains("set to 40% in lb.toml, step 1 wants 5%"),
        "{paused}"
    );
    let (ok, out, err) = support::lbctl(&lb, &["rollout", "resume", "/"]);
    assert!(ok, "{out}{err}");
    let resumed = file_eventually(&lb, "state = \"running\"", WAIT).await;
    assert!(
        resumed.contains("weight = 5 # set by the rollout"),
        "{resumed}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn lbctl_starts_pauses_aborts_and_promotes_a_rollout_by_hand() {
    let stable = SampleWeb::start(&["--node", "stable"]);
    let canary = SampleWeb::start(&["--node", "canary"]);
    let text = format!(
        "[control]\ngit_commit = true\n\n[pools.\"/\"]\ninterval = \"100ms\"\nbackends = [\"{}\"]\n",
        stable.addr
    );
    let lb = start(&text, &stable).await;
    let addr = canary.addr.to_string();
    let (ok, _, err) = support::lbctl(&lb, &["rollout", "status", "/"]);
    assert!(!ok && err.contains("has no rollout"), "{err}");
    let (ok, _, err) = support::lbctl(&lb, &["rollout", "start", "/"]);
    assert!(!ok && err.contains("--canary"), "no canary named: {err}");
    let (ok, out, err) = support::lbctl(
        &lb,
        &[
            "rollout", "start", "/", "--canary", &addr, "--steps", "10,60", "--bake", "1h",
        ],
    );
    assert!(ok, "{out}{err}");
    let started = file_eventually(&lb, "state = \"running\"", WAIT).await;
    assert!(
        started.contains(&format!(
            "[pools.\"/\".canary]\nbackends = [\"{addr}\"]\nweight = 10\n"
        )),
        "{started}"
    );
    assert!(
        started.contains("steps = [10, 60]\nbake = \"1h\"\n"),
        "{started}"
    );
    let (ok, out, err) = support::lbctl(&lb, &["--output", "json", "rollout", "status", "/"]);
    assert!(ok, "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(status["state"], "running");
    assert_eq!(status["steps"], serde_json::json!([10, 60]));
    assert_eq!(status["weight_percent"], 10);

    // DrainBackend and EnableBackend reach a canary backend: one line of the canary's array.
    let port = canary.addr.port().to_string();
    let flags = ["--pattern=/", "--ip=127.0.0.1", &format!("--port={port}")];
    let (ok, out, err) = support::lbctl(&lb, &[&flags[..], &["drain"]].concat());
    assert!(ok, "{out}{err}");
    let drained = file_eventually(
        &lb,
        &format!("{{ addr = \"{addr}\", state = \"drain\" }}"),
        WAIT,
    )
    .await;
    assert!(drained.contains("weight = 10\n"), "{drained}");
    let (ok, out, err) = support::lbctl(&lb, &[&flags[..], &["enable"]].concat());
    assert!(ok, "{out}{err}");
    file_eventually(
        &lb,
        &format!("backends = [\"{addr}\"]\nweight = 10\n"),
        WAIT,
    )
    .await;
    let (ok, out, err) = support::lbctl(&lb, &["rollout", "pause", "/"]);
    assert!(ok, "{out}{err}");
    file_eventually(&lb, "state = \"paused\"", WAIT).await;
    let (ok, _, err) = support::lbctl(&lb, &["rollout", "pause", "/"]);
    assert!(!ok && err.contains("only a running rollout"), "{err}");
    let (ok, out, err) = support::lbctl(&lb, &["canary", "weight", "/", "30"]);
    assert!(ok, "{out}{err}");
    file_eventually(&lb, "weight = 30\n", WAIT).await;
    let (ok, _, err) = support::lbctl(&lb, &["canary", "weight", "/", "101"]);
    assert!(!ok && err.contains("not a percent"), "{err}");

    let (ok, out, err) = support::lbctl(&lb, &["rollout", "abort", "/"]);
    assert!(ok, "{out}{err}");
    let aborted = file_eventually(&lb, "state = \"aborted\"", WAIT).await;
    assert!(aborted.contains("weight = 0\n"), "{aborted}");
    assert!(
        aborted.contains(&format!("{{ addr = \"{addr}\", state = \"drain\" }}")),
        "{aborted}"
    );
    let (ok, _, err) = support::lbctl(&lb, &["rollout", "resume", "/"]);
    assert!(!ok && err.contains("only a paused rollout"), "{err}");

    // Started again: the drained canary is enabled at the first step's weight.
    let (ok, out, err) = support::lbctl(&lb, &["rollout", "start", "/"]);
    assert!(ok, "{out}{err}");
    let restarted = file_eventually(&lb, "state = \"running\"", WAIT).await;
    assert!(
        restarted.contains(&format!("backends = [\"{addr}\"]\nweight = 10\n")),
        "{restarted}"
    );
    let (ok, out, err) = support::lbctl(&lb, &["rollout", "promote", "/"]);
    assert!(ok, "{out}{err}");
    let promoted = file_eventually(&lb, "state = \"done\"", WAIT).await;
    assert!(
        promoted.contains(&format!("backends = [\"{addr}\"]\n")),
        "{promoted}"
    );
    assert!(!promoted.contains(&stable.addr.to_string()), "{promoted}");
    let subjects = commit_eventually(&lb, "promoted by hand").await;
    assert!(
        subjects
            .iter()
            .any(|s| s.contains("aborted by hand at step 1 of 2")),
        "{subjects:?}"
    );
    let body = support::get(&support::client(), &lb.url("/")).await.1;
    assert!(body.contains("canary"), "{body}");
}
