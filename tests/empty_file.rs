//! An empty or truncated lb.toml is valid TOML with no pools: applied, it would answer 404 to
//! everything. It is refused as a reload and by `lb check`, like a broken save, unless the file
//! says `allow_empty = true`.

mod support;

use std::time::Duration;

use lb::control::proto;
use support::{eventually, get, Backend, Lb};

#[test]
fn check_refuses_a_file_without_pools_unless_it_allows_it() {
    for text in ["", "# truncated\n", "[listen]\nhttp = \"127.0.0.1:8080\"\n"] {
        let (ok, stderr) = support::lb_check(text);
        assert!(!ok, "{text:?} passed");
        assert!(
            stderr.starts_with("PATH:1:1: ") && stderr.contains("allow_empty = true"),
            "{text:?}: {stderr}"
        );
    }
    let (ok, stderr) = support::lb_check("allow_empty = true\n");
    assert!(ok, "{stderr}");
}

#[tokio::test]
async fn an_empty_save_is_refused_and_an_explicit_one_applies() {
    let a = Backend::start("a").await;
    let lb = Lb::start(&support::pool("/", &[a.addr], "1s"));
    let client = support::client();
    eventually(Duration::from_secs(5), "a serving", || async {
        get(&client, &lb.url("/")).await.1 == "a"
    })
    .await;
    let mut control = support::control(&lb).await;
    let status = || {
        let mut control = control.clone();
        async move {
            control
                .status(proto::StatusReq::default())
                .await
                .unwrap()
                .into_inner()
        }
    };

    // A truncated save: still serving, and the status says why.
    std::fs::write(&lb.config, "").unwrap();
    support::reload_error(&lb, Duration::from_secs(3)).await;
    let refused = status().await;
    assert!(!refused.last_reload_ok, "{refused:?}");
    assert!(
        refused.last_error.contains("lb.toml:1:1: ")
            && refused.last_error.contains("allow_empty = true"),
        "{refused:?}"
    );
    for _ in 0..10 {
        assert_eq!(get(&client, &lb.url("/")).await.1, "a");
    }

    // Said explicitly, it applies: no pool, so 404.
    std::fs::write(&lb.config, "allow_empty = true\n").unwrap();
    eventually(Duration::from_secs(3), "the empty file applied", || async {
        get(&client, &lb.url("/")).await.0 == http::StatusCode::NOT_FOUND
    })
    .await;
    assert!(status().await.last_reload_ok);
    let _ = control.list_pools(proto::ListPoolsReq {}).await.unwrap();
}
