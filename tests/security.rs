//! A closed control plane: no network-reachable control API without a token, and a token that
//! is checked on every RPC.

mod support;

use std::process::Command;

use lb::control::proto::{self, load_balancer_client::LoadBalancerClient};
use support::{Backend, Lb};
use tonic::Code;

#[test]
fn refuses_a_non_loopback_control_listener_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.toml");
    std::fs::write(&path, "[listen]\ngrpc = \"0.0.0.0:0\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lb"))
        .arg("--config")
        .arg(&path)
        .args(["--http", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("token_file") && stderr.contains("--insecure-control"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_every_rpc_needs_it() {
    let a = Backend::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    let token_path = dir.path().join("token");
    std::fs::write(&token_path, "s3cret-token\n").unwrap();
    let config = dir.path().join("lb.toml");
    let text = format!(
        "[control]\ntoken_file = \"{}\"\n\n{}",
        token_path.display(),
        support::pool("/", &[a.addr], "100ms")
    );
    std::fs::write(&config, &text).unwrap();
    let lb = Lb::start_at(dir, config, &[]);
    let url = format!("http://{}", lb.grpc.unwrap());
    let mut client = LoadBalancerClient::connect(url.clone()).await.unwrap();

    let remove = || proto::RemovePoolReq {
        pattern: "/".into(),
        ..Default::default()
    };
    let status = client.remove_pool(remove()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{}", status.message());
    let mut wrong = tonic::Request::new(remove());
    wrong
        .metadata_mut()
        .insert("authorization", "Bearer nope".parse().unwrap());
    assert_eq!(
        client.remove_pool(wrong).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    assert_eq!(
        std::fs::read_to_string(&lb.config).unwrap(),
        text,
        "an unauthenticated RPC changed the file"
    );

    let mut health = tonic::Request::new(proto::PoolHealthReq {
        pattern: "/".into(),
        healthy: true,
        sick: true,
    });
    health
        .metadata_mut()
        .insert("authorization", "Bearer s3cret-token".parse().unwrap());
    client
        .pool_health(health)
        .await
        .expect("the right token is accepted");

    // lbctl sends it from --token-file or LB_TOKEN.
    let out = Command::new(env!("CARGO_BIN_EXE_lbctl"))
        .arg(format!("--lb={}", lb.grpc.unwrap()))
        .args(["--pattern=/", "poolHealth"])
        .env("LB_TOKEN", "s3cret-token")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_lbctl"))
        .arg(format!("--lb={}", lb.grpc.unwrap()))
        .args(["--pattern=/", "poolHealth"])
        .env_remove("LB_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr)
        .to_lowercase()
        .contains("unauthenticated"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_cannot_be_written_gives_failed_precondition_and_changes_nothing() {
    use std::os::unix::fs::PermissionsExt;
    let a = Backend::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("lb.toml");
    let text = support::pool("/", &[a.addr], "100ms");
    std::fs::write(&config, &text).unwrap();
    let lb = Lb::start_unprivileged(dir, config);
    let http = support::client();
    support::eventually(std::time::Duration::from_secs(5), "a serving", || async {
        support::get(&http, &lb.url("/")).await.1 == "a"
    })
    .await;

    // lb (not root) can no longer create its temp file beside lb.toml.
    std::fs::set_permissions(lb.dir(), std::fs::Permissions::from_mode(0o555)).unwrap();
    let mut client = support::control(&lb).await;
    let status = client
        .remove_pool(proto::RemovePoolReq {
            pattern: "/".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    std::fs::set_permissions(lb.dir(), std::fs::Permissions::from_mode(0o755)).unwrap();

    assert_eq!(
        status.code(),
        Code::FailedPrecondition,
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("Permission denied")
            && status.message().contains(&*lb.config.to_string_lossy()),
        "the OS error and the path: {}",
        status.message()
    );
    assert_eq!(std::fs::read_to_string(&lb.config).unwrap(), text);
    assert_eq!(support::get(&http, &lb.url("/")).await.1, "a");
    let pools = client
        .list_pools(proto::ListPoolsReq::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pools.pools.len(), 1, "the pool is still there");
}
