//! The gRPC control API and lbctl, end to end: every RPC, every error code, minimal diffs of the
//! file, read-your-writes, and persistence across restarts.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use http::StatusCode;
use lb::control::proto;
use support::{add_pool_req, eventually, get, Backend, Lb};
use tonic::Code;

const HEADER: &str = "# lb.toml under test\n[listen]\nhttp = \"127.0.0.1:0\" # kept\n\n";

fn read(lb: &Lb) -> String {
    std::fs::read_to_string(&lb.config).unwrap()
}

/// Lines in `after` but not in `before`, and the other way round (a poor man's diff, enough to
/// assert one-line changes).
fn diff(before: &str, after: &str) -> (Vec<String>, Vec<String>) {
    let b: Vec<&str> = before.lines().collect();
    let a: Vec<&str> = after.lines().collect();
    let added = a
        .iter()
        .filter(|l| !b.contains(l))
        .map(|l| l.to_string())
        .collect();
    let removed = b
        .iter()
        .filter(|l| !a.contains(l))
        .map(|l| l.to_string())
        .collect();
    (added, removed)
}

#[tokio::test]
async fn add_and_remove_backend_are_one_line_diffs_and_take_effect_at_once() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let text = format!(
        "{HEADER}# the root pool\n[pools.\"/\"]\ninterval = \"1s\" # slow on purpose\nbackends = [\n  \"{}\", # first\n]\n",
        a.addr
    );
    let lb = Lb::start(&text);
    let mut client = support::control(&lb).await;

    client
        .add_backend(proto::AddBackendReq {
            pattern: "/".into(),
            backend: support::ip_backend(b.addr, ""),
            ..Default::default()
        })
        .await
        .expect("AddBackend");
    let after_add = read(&lb);
    let (added, removed) = diff(&text, &after_add);
    assert_eq!(
        added,
        vec![format!("  \"{}\",", b.addr)],
        "file:\n{after_add}"
    );
    assert!(removed.is_empty());
    assert_eq!(after_add.lines().count(), text.lines().count() + 1);

    // Read your writes: PoolHealth and routing see b as soon as the RPC returned.
    let health = support::pool_health(&mut client, "/").await;
    assert_eq!(health.backends.len(), 2);
    let http = support::client();
    let mut from_b = false;
    for _ in 0..40 {
        from_b |= get(&http, &lb.url("/")).await.1 == "b";
    }
    assert!(from_b, "b took no traffic right after AddBackend");

    client
        .remove_backend(proto::RemoveBackendReq {
            pattern: "/".into(),
            backend: support::ip_backend(b.addr, "/"),
            ..Default::default()
        })
        .await
        .expect("RemoveBackend");
    assert_eq!(
        read(&lb),
        text,
        "AddBackend then RemoveBackend must restore the file byte for byte"
    );
    let b_hits = b.hits();
    for _ in 0..20 {
        assert_eq!(get(&http, &lb.url("/")).await.1, "a");
    }
    assert_eq!(b.hits(), b_hits);
}

#[tokio::test]
async fn add_pool_then_remove_pool_restores_the_file() {
    let a = Backend::start("a").await;
    let text = format!(
        "{HEADER}[pools.\"/\"]\nbackends = [\"{}\"] # inline\n",
        a.addr
    );
    let lb = Lb::start(&text);
    let mut client = support::control(&lb).await;
    client
        .add_pool(add_pool_req("/api/"))
        .await
        .expect("AddPool");
    let with_pool = read(&lb);
    assert!(
        with_pool.starts_with(&text),
        "AddPool must only append:\n{with_pool}"
    );
    assert!(with_pool.contains("[pools.\"/api/\"]"));
    let health = support::pool_health(&mut client, "/api/").await;
    assert_eq!(health.status, proto::PoolStatus::PsEmpty as i32);

    client
        .add_backend(proto::AddBackendReq {
            pattern: "/api/".into(),
            backend: support::ip_backend(a.addr, ""),
            ..Default::default()
        })
        .await
        .expect("AddBackend to the new pool");
    let http = support::client();
    assert_eq!(
        get(&http, &lb.url("/api/x")).await,
        (StatusCode::OK, "a".to_owned())
    );
    client
        .remove_backend(proto::RemoveBackendReq {
            pattern: "/api/".into(),
            backend: support::ip_backend(a.addr, ""),
            ..Default::default()
        })
        .await
        .unwrap();
    client
        .remove_pool(proto::RemovePoolReq {
            pattern: "/api/".into(),
            ..Default::default()
        })
        .await
        .expect("RemovePool");
    assert_eq!(read(&lb), text);
}

#[tokio::test]
async fn every_error_code_and_the_file_is_untouched_after_each() {
    let a = Backend::start("a").await;
    let sick = Backend::start("sick").await;
    sick.set_healthy(false);
    let text = format!(
        "{HEADER}[pools.\"/\"]\nbackends = [\n  \"{}\",\n]\n",
        a.addr
    );
    let lb = Lb::start(&text);
    let mut client = support::control(&lb).await;

    let mut no_checks = add_pool_req("/x/");
    no_checks.health_checks = None;
    let mut unknown_type = add_pool_req("/x/");
    unknown_type.pool_type = proto::PoolType::PtUnknown as i32;
    let mut empty_values = add_pool_req("/x/");
    if let Some(checks) = empty_values.health_checks.as_mut() {
        checks.health_checks[0].health_check = Some(proto::health_check::HealthCheck::StatusCheck(
            proto::StatusCheck {
                url_path: "/healthz".into(),
                healthy_values: vec![],
            },
        ));
    }
    let mut missing_oneof = add_pool_req("/x/");
    if let Some(checks) = missing_oneof.health_checks.as_mut() {
        checks.health_checks[0].health_check = None;
    }
    let cases: Vec<(&str, Code, Result<(), tonic::Status>)> = vec![
        (
            "empty pattern",
            Code::InvalidArgument,
            client.add_pool(add_pool_req("")).await.map(drop),
        ),
        (
            "bad pattern",
            Code::InvalidArgument,
            client.add_pool(add_pool_req("no-slash")).await.map(drop),
        ),
        (
            "PT_UNKNOWN",
            Code::InvalidArgument,
            client.add_pool(unknown_type).await.map(drop),
        ),
        (
            "no health check",
            Code::InvalidArgument,
            client.add_pool(no_checks).await.map(drop),
        ),
        (
            "empty healthy_values",
            Code::InvalidArgument,
            client.add_pool(empty_values).await.map(drop),
        ),
        (
            "missing check oneof",
            Code::InvalidArgument,
            client.add_pool(missing_oneof).await.map(drop),
        ),
        (
            "pool exists",
            Code::AlreadyExists,
            client.add_pool(add_pool_req("/")).await.map(drop),
        ),
        (
            "bad ip",
            Code::InvalidArgument,
            client
                .add_backend(proto::AddBackendReq {
                    pattern: "/".into(),
                    backend: Some(proto::Backend {
                        backend: Some(proto::backend::Backend::IpBackend(proto::IpBackend {
                            ip: "300.1.1.1".into(),
                            port: 80,
                            url_path: String::new(),
                        })),
                    }),
                    if_match: None,
                })
                .await
                .map(drop),
        ),
        (
            "port 0",
            Code::InvalidArgument,
            client
                .add_backend(proto::AddBackendReq {
                    pattern: "/".into(),
                    backend: support::ip_backend("127.0.0.1:0".parse().unwrap(), ""),
                    ..Default::default()
                })
                .await
                .map(drop),
        ),
        (
            "port 70000",
            Code::InvalidArgument,
            client
                .add_backend(proto::AddBackendReq {
                    pattern: "/".into(),
                    backend: Some(proto::Backend {
                        backend: Some(proto::backend::Backend::IpBackend(proto::IpBackend {
                            ip: "127.0.0.1".into(),
                            port: 70000,
                            url_path: String::new(),
                        })),
                    }),
                    if_match: None,
                })
                .await
                .map(drop),
        ),
        (
            "missing backend oneof",
            Code::InvalidArgument,
            client
                .add_backend(proto::AddBackendReq {
                    pattern: "/".into(),
                    backend: None,
                    ..Default::default()
                })
                .await
                .map(drop),
        ),
        (
            "backend exists",
            Code::AlreadyExists,
            client
                .add_backend(proto::AddBackendReq {
                    pattern: "/".into(),
                    backend: support::ip_backend(a.addr, "/"),
                    ..Default::default()
                })
                .await
                .map(drop),
        ),
        (
            "unhealthy backend",
            Code::FailedPrecondition,
            client
                .add_backend(proto::AddBackendReq {
                    pattern: "/".into(),
                    backend: support::ip_backend(sick.addr, ""),
                    ..Default::default()
                })
                .await
                .map(drop),
        ),
        (
            "no such pool (add backend)",
            Code::NotFound,
            client
                .add_backend(proto::AddBackendReq {
                    pattern: "/nope/".into(),
                    backend: support::ip_backend(a.addr, ""),
                    ..Default::default()
                })
                .await
                .map(drop),
        ),
        (
            "no such backend",
            Code::NotFound,
            client
                .remove_backend(proto::RemoveBackendReq {
                    pattern: "/".into(),
                    backend: support::ip_backend(sick.addr, ""),
                    ..Default::default()
                })
                .await
                .map(drop),
        ),
        (
            "no such pool (remove)",
            Code::NotFound,
            client
                .remove_pool(proto::RemovePoolReq {
                    pattern: "/nope/".into(),
                    ..Default::default()
                })
                .await
                .map(drop),
        ),
        (
            "no such pool (health)",
            Code::NotFound,
            client
                .pool_health(proto::PoolHealthReq {
                    pattern: "/nope/".into(),
                    healthy: true,
                    sick: true,
                })
                .await
                .map(drop),
        ),
    ];
    for (what, code, result) in cases {
        let status = result.expect_err(what);
        assert_eq!(status.code(), code, "{what}: {}", status.message());
        assert!(!status.message().is_empty(), "{what}: empty message");
        assert_eq!(read(&lb), text, "{what}: the file changed");
    }
}

#[tokio::test]
async fn pool_health_filters_by_healthy_and_sick() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    b.set_healthy(false);
    let lb = Lb::start(&format!(
        "{HEADER}{}",
        support::pool("/", &[a.addr, b.addr], "100ms")
    ));
    let mut client = support::control(&lb).await;
    let ask = |healthy, sick| proto::PoolHealthReq {
        pattern: "/".into(),
        healthy,
        sick,
    };
    eventually(Duration::from_secs(5), "a healthy", || {
        let mut client = client.clone();
        async move {
            let h = client
                .pool_health(ask(true, false))
                .await
                .unwrap()
                .into_inner()
                .health
                .unwrap();
            h.backends.len() == 1
        }
    })
    .await;
    let both = client
        .pool_health(ask(true, true))
        .await
        .unwrap()
        .into_inner()
        .health
        .unwrap();
    assert_eq!(both.status, proto::PoolStatus::PsDegraded as i32);
    assert_eq!(both.backends.len(), 2);
    let sick = client
        .pool_health(ask(false, true))
        .await
        .unwrap()
        .into_inner()
        .health
        .unwrap();
    assert_eq!(sick.backends.len(), 1);
    assert_eq!(sick.backends[0].status, proto::BackendStatus::BsSick as i32);
    let none = client
        .pool_health(ask(false, false))
        .await
        .unwrap()
        .into_inner()
        .health
        .unwrap();
    assert!(none.backends.is_empty());
    b.set_healthy(true);
    eventually(Duration::from_secs(5), "pool full", || {
        let mut client = client.clone();
        async move {
            let h = client
                .pool_health(ask(true, true))
                .await
                .unwrap()
                .into_inner()
                .health
                .unwrap();
            h.status == proto::PoolStatus::PsFull as i32
        }
    })
    .await;
}

#[tokio::test]
async fn api_changes_survive_a_restart_and_keep_the_file_mode() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let text = format!(
        "{HEADER}[pools.\"/\"]\nbackends = [\n  \"{}\",\n]\n",
        a.addr
    );
    let lb = Lb::start(&text);
    std::fs::set_permissions(&lb.config, std::fs::Permissions::from_mode(0o640)).unwrap();
    let mut client = support::control(&lb).await;
    client
        .add_backend(proto::AddBackendReq {
            pattern: "/".into(),
            backend: support::ip_backend(b.addr, ""),
            ..Default::default()
        })
        .await
        .unwrap();
    let mode = std::fs::metadata(&lb.config).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);

    let lb = lb.restart(&[]);
    let mut client = support::control(&lb).await;
    eventually(
        Duration::from_secs(5),
        "both backends back after restart",
        || {
            let mut client = client.clone();
            async move {
                let h = client
                    .pool_health(proto::PoolHealthReq {
                        pattern: "/".into(),
                        healthy: true,
                        sick: false,
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .health
                    .unwrap();
                h.backends.len() == 2
            }
        },
    )
    .await;
    let _ = client
        .remove_pool(proto::RemovePoolReq {
            pattern: "/".into(),
            ..Default::default()
        })
        .await
        .unwrap();
}

// lbctl runs as a blocking child process; the in-process backend needs another thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lbctl_drives_all_five_commands() {
    let b = Backend::start("b").await;
    let lb = Lb::start(HEADER);
    let (ip, port) = (b.addr.ip().to_string(), b.addr.port().to_string());
    let ip_flag = format!("--ip={ip}");
    let port_flag = format!("--port={port}");

    let (ok, _, err) = support::lbctl(&lb, &["--pattern=/", "addPool"]);
    assert!(ok, "addPool: {err}");
    let (ok, _, err) = support::lbctl(
        &lb,
        &[
            "--pattern=/",
            &ip_flag,
            &port_flag,
            "--url_path=/",
            "addBackend",
        ],
    );
    assert!(ok, "addBackend: {err}");
    assert!(read(&lb).contains(&format!("\"{}\"", b.addr)));
    let (ok, out, err) = support::lbctl(&lb, &["--pattern=/", "poolHealth"]);
    assert!(ok, "poolHealth: {err}");
    assert!(out.contains("PS_FULL"), "{out}");
    assert!(
        out.contains(&b.addr.to_string()) && out.contains("BS_HEALTHY"),
        "{out}"
    );
    let http = support::client();
    assert_eq!(get(&http, &lb.url("/")).await.1, "b");

    let (ok, _, err) = support::lbctl(
        &lb,
        &[
            "--pattern=/",
            &ip_flag,
            &port_flag,
            "--url_path=/",
            "removeBackend",
        ],
    );
    assert!(ok, "removeBackend: {err}");
    assert!(!read(&lb).contains(&format!("\"{}\"", b.addr)));
    let (ok, _, err) = support::lbctl(&lb, &["--pattern=/", "removePool"]);
    assert!(ok, "removePool: {err}");
    assert_eq!(read(&lb), HEADER);

    // Errors: one line on stderr, non-zero exit, no panic.
    let (ok, _, err) = support::lbctl(&lb, &["--pattern=/", "removePool"]);
    assert!(!ok);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
