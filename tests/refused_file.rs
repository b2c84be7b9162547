//! No control-API write is based on a file lb refused: while lb.toml holds a save the reload
//! path refuses (empty, invalid, a `backend_tls.ca` that cannot be used), every mutation is
//! refused with FAILED_PRECONDITION naming the problem, the file keeps the refused save, and the
//! pools that were running keep serving. And a save of the applied content clears the failure.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use lb::control::proto;
use support::{add_pool_req, eventually, get, ip_backend, Backend, Control, Lb};

const PATIENCE: Duration = Duration::from_secs(5);

/// Every kind of mutation, each on a pool and backend the applied config has (AddBackend's
/// backend is `new`), with its result.
async fn every_mutation(
    control: &Control,
    declared: SocketAddr,
    new: SocketAddr,
) -> Vec<(&'static str, Result<(), tonic::Status>)> {
    let mut c = control.clone();
    let backend = || ip_backend(declared, "");
    vec![
        ("AddPool", c.add_pool(add_pool_req("/x/")).await.map(drop)),
        (
            "RemovePool",
            c.remove_pool(proto::RemovePoolReq {
                pattern: "/api/".to_owned(),
                if_match: None,
            })
            .await
            .map(drop),
        ),
        (
            "AddBackend",
            c.add_backend(proto::AddBackendReq {
                pattern: "/api/".to_owned(),
                backend: ip_backend(new, ""),
                if_match: None,
            })
            .await
            .map(drop),
        ),
        (
            "RemoveBackend",
            c.remove_backend(proto::RemoveBackendReq {
                pattern: "/".to_owned(),
                backend: backend(),
                if_match: None,
            })
            .await
            .map(drop),
        ),
        (
            "DrainBackend",
            c.drain_backend(proto::DrainBackendReq {
                pattern: "/".to_owned(),
                backend: backend(),
                if_match: None,
            })
            .await
            .map(drop),
        ),
        (
            "DisableBackend",
            c.disable_backend(proto::DisableBackendReq {
                pattern: "/".to_owned(),
                backend: backend(),
                if_match: None,
            })
            .await
            .map(drop),
        ),
        // Already enabled: idempotent on a good file, refused on a refused one all the same.
        (
            "EnableBackend",
            c.enable_backend(proto::EnableBackendReq {
                pattern: "/".to_owned(),
                backend: backend(),
                if_match: None,
            })
            .await
            .map(drop),
        ),
    ]
}

async fn status(control: &Control) -> proto::StatusResp {
    control
        .clone()
        .status(proto::StatusReq::default())
        .await
        .expect("Status")
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_mutation_is_written_over_a_file_the_reload_refused() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let good = format!(
        "{}\n{}",
        support::pool("/", &[a.addr], "1s"),
        support::pool("/api/", &[b.addr], "1s")
    );
    let lb = Lb::start(&good);
    let client = support::client();
    eventually(PATIENCE, "both pools serving", || async {
        get(&client, &lb.url("/")).await.1 == "a" && get(&client, &lb.url("/api/")).await.1 == "b"
    })
    .await;
    let control = support::control(&lb).await;
    let unused: SocketAddr = "127.0.0.1:1".parse().unwrap();

    // (what, the refused save, a word of the problem that every answer must name)
    let refused_saves = [
        ("an empty save", String::new(), "allow_empty = true"),
        (
            "a truncated save",
            "[listen]\nhttp = \"127.0.0.1:0\"\n".to_owned(),
            "allow_empty = true",
        ),
        (
            "an unknown key",
            format!("bogus_key = 1\n{good}"),
            "bogus_key",
        ),
        (
            "a backend_tls.ca that cannot be read",
            format!("{good}\n[pools.\"/tls/\"]\nbackends = [\"{unused}\"]\nbackend_tls = {{ ca = \"missing-ca.pem\" }}\n"),
            "missing-ca.pem",
        ),
    ];
    for (what, text, problem) in &refused_saves {
        std::fs::write(&lb.config, text).unwrap();
        eventually(PATIENCE, &format!("{what} refused"), || async {
            let status = status(&control).await;
            !status.last_reload_ok && status.last_error.contains(problem)
        })
        .await;
        for (rpc, result) in every_mutation(&control, a.addr, unused).await {
            let error = result.expect_err(&format!("{rpc} over {what} succeeded"));
            assert_eq!(
                error.code(),
                tonic::Code::FailedPrecondition,
                "{rpc} over {what}: {error:?}"
            );
            assert!(
                error.message().contains(problem),
                "{rpc} over {what} does not name the problem ({problem}): {error:?}"
            );
            assert_eq!(
                std::fs::read_to_string(&lb.config).unwrap(),
                *text,
                "{rpc} over {what} wrote the file"
            );
        }
        for _ in 0..5 {
            assert_eq!(get(&client, &lb.url("/")).await.1, "a", "{what}");
            assert_eq!(get(&client, &lb.url("/api/")).await.1, "b", "{what}");
        }
        let running = status(&control).await;
        assert_eq!(
            running
                .pools
                .iter()
                .map(|p| p.pattern.as_str())
                .collect::<Vec<_>>(),
            ["/", "/api/"],
            "{what}: {running:?}"
        );
    }

    // Once the file is one lb applies again, the same changes go through.
    std::fs::write(&lb.config, &good).unwrap();
    eventually(PATIENCE, "the good file back", || async {
        status(&control).await.last_reload_ok
    })
    .await;
    let mut c = control.clone();
    c.add_pool(add_pool_req("/x/")).await.expect("AddPool");
    let written = std::fs::read_to_string(&lb.config).unwrap();
    assert!(
        written.starts_with(&good) && written.contains("[pools.\"/x/\"]"),
        "{written}"
    );
}

/// `lb_config_last_reload_ok`'s value in lb's `/metrics`.
async fn last_reload_ok_metric(client: &support::HttpClient, admin: &str) -> Option<String> {
    let (_, metrics) = get(client, &format!("http://{admin}/metrics")).await;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("lb_config_last_reload_ok "))
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn putting_back_the_applied_content_clears_the_failure() {
    let a = Backend::start("a").await;
    let good = support::pool("/", &[a.addr], "1s");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("lb.toml");
    std::fs::write(&config, &good).unwrap();
    let lb = Lb::start_at(dir, config, &["--admin", "127.0.0.1:0"]);
    let admin = lb
        .wait_for_log("listener=\"admin\"", PATIENCE)
        .split("addr=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("admin addr in the log")
        .to_owned();
    let client = support::client();
    let control = support::control(&lb).await;
    eventually(PATIENCE, "serving", || async {
        get(&client, &lb.url("/")).await.1 == "a"
    })
    .await;
    let applied = status(&control).await;
    assert!(applied.last_reload_ok, "{applied:?}");

    for (what, broken) in [("an invalid save", "[pools.\"/\"\n"), ("an empty save", "")] {
        std::fs::write(&lb.config, broken).unwrap();
        eventually(PATIENCE, &format!("{what} refused"), || async {
            !status(&control).await.last_reload_ok
                && last_reload_ok_metric(&client, &admin).await.as_deref() == Some("0")
        })
        .await;

        // The exact bytes being served, put back: the reload finds them applied already, and
        // the failure is over.
        std::fs::write(&lb.config, &good).unwrap();
        eventually(PATIENCE, &format!("{what} put right"), || async {
            let status = status(&control).await;
            status.last_reload_ok
                && status.last_error.is_empty()
                && last_reload_ok_metric(&client, &admin).await.as_deref() == Some("1")
        })
        .await;
        let after = status(&control).await;
        assert_eq!(
            after.generation, applied.generation,
            "{what}: nothing new applied"
        );
        assert_eq!(after.content_hash, applied.content_hash, "{what}");
    }
    assert_eq!(get(&client, &lb.url("/")).await.1, "a");
}
