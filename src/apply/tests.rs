//! apply's tests: the transaction, the snapshot building and the recorded spans together, on
//! real files in temporary directories.

use super::spans::known_backends_span;
use super::*;
use crate::topology::Pool;

pub(crate) const LISTEN: &str = "[listen]\nhttp = \"127.0.0.1:0\"\ngrpc = \"127.0.0.1:0\"\n\n";

/// An lb.toml of [`LISTEN`] and `pools` in a fresh temporary directory (kept alive by the
/// returned guard), loaded.
pub(crate) async fn load_pools(pools: &str) -> (tempfile::TempDir, PathBuf, Arc<Applier>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.toml");
    std::fs::write(&path, format!("{LISTEN}{pools}")).unwrap();
    let (applier, _) = Applier::load(&path).await.unwrap();
    (dir, path, applier)
}

/// A pool `pattern` over `backends`, checked hourly (only the first probe runs).
pub(crate) fn pool(pattern: &str, backends: &[&str]) -> String {
    let list: Vec<String> = backends.iter().map(|b| format!("\"{b}\"")).collect();
    format!(
        "[pools.\"{pattern}\"]\ninterval = \"1h\"\nbackends = [{}]\n\n",
        list.join(", ")
    )
}

#[tokio::test]
async fn a_reload_applies_only_the_content_that_settled() {
    let (_dir, path, applier) = load_pools(&pool("/a/", &["127.0.0.1:1"])).await;
    let generation = applier.topology().load().generation;
    // The watcher saw one text settle; the file now holds another (a save under way).
    let next = format!("{LISTEN}{}", pool("/b/", &["127.0.0.1:2"]));
    std::fs::write(&path, &next).unwrap();
    let outcome = applier
        .reload_settled(Some(b"[pools]\n".to_vec()))
        .await
        .unwrap();
    assert!(matches!(outcome, Reloaded::Moving));
    assert_eq!(applier.topology().load().generation, generation);
    assert!(applier.topology().load().pool("/a/").is_some());
    // Once what it saw is what the file holds, it applies.
    let outcome = applier
        .reload_settled(Some(next.into_bytes()))
        .await
        .unwrap();
    assert!(matches!(outcome, Reloaded::Applied { .. }));
    assert!(applier.topology().load().pool("/b/").is_some());
}

#[tokio::test]
async fn an_apply_rebuilds_only_the_pools_whose_config_changed() {
    let listen = LISTEN; // for the hand-written saves below
    let (a, b, c) = ("127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3");
    let (_dir, path, applier) = load_pools(&format!(
        "{}{}{}",
        pool("/a/", &[a]),
        pool("/b/", &[a, b]),
        pool("/c/", &[c])
    ))
    .await;
    let before = applier.topology().load_full();
    assert_eq!(applier.n_checkers().await, 4);

    // /b/ loses a backend, /c/ goes, /d/ arrives; /a/ is untouched.
    std::fs::write(
        &path,
        format!(
            "{listen}{}{}{}",
            pool("/a/", &[a]),
            pool("/b/", &[b]),
            pool("/d/", &[c])
        ),
    )
    .unwrap();
    assert!(matches!(
        applier.reload().await.unwrap(),
        Reloaded::Applied { .. }
    ));
    let after = applier.topology().load_full();
    let pool = |t: &Arc<Topology>, p: &str| t.pool(p).map(|pool| pool as *const Pool);
    assert!(pool(&before, "/a/").is_some());
    assert_eq!(pool(&before, "/a/"), pool(&after, "/a/"));
    let (old_b, new_b) = (before.pool("/b/").unwrap(), after.pool("/b/").unwrap());
    assert!(!std::ptr::eq(old_b, new_b));
    // The backend that stayed keeps its live state (health, counters, connections).
    assert!(Arc::ptr_eq(&old_b.backends[1], &new_b.backends[0]));
    assert!(after.pool("/c/").is_none());
    // /a/ 1 + /b/ 1 + /d/ 1: /b/'s removed backend and /c/'s checker stopped.
    assert_eq!(applier.n_checkers().await, 3);
}

/// Backend mutations take the re-validate-one-pool path; what they apply must be exactly
/// what a full parse of the written file gives, as if a person had saved it.
#[tokio::test]
async fn a_backend_mutation_applies_what_a_full_parse_of_the_file_gives() {
    let (a, b) = ("127.0.0.1:1", "127.0.0.1:2");
    let (_dir, path, applier) =
        load_pools(&format!("{}{}", pool("/a/", &[a, b]), pool("/b/", &[a]))).await;
    let addr = |s: &str| s.parse::<BackendAddr>().unwrap();
    let mutations = [
        Mutation::SetBackendState {
            pattern: "/a/".into(),
            backend: addr(b),
            state: AdminState::Drain,
        },
        Mutation::RemoveBackend {
            pattern: "/a/".into(),
            backend: addr(a),
        },
        Mutation::SetBackendState {
            pattern: "/a/".into(),
            backend: addr(b),
            state: AdminState::Enabled,
        },
    ];
    for mutation in mutations {
        applier
            .mutate(mutation, &MutateOptions::default())
            .await
            .unwrap();
        let (full, text) = config::load(&path).unwrap();
        let state = applier.state.lock().await;
        let applied = state.applied.as_ref().unwrap();
        assert_eq!(applied.pools, full.pools);
        assert_eq!(applied.listen, full.listen);
        assert_eq!(state.applied_hash, Some(sha256(&text)));
    }
    let topology = applier.topology().load_full();
    let a_pool = topology.pool("/a/").unwrap();
    assert_eq!(a_pool.backends.len(), 1);
    assert_eq!(a_pool.backends[0].addr, addr(b));
    // /a/'s remaining backend and /b/'s one are checked.
    assert_eq!(applier.n_checkers().await, 2);
}

/// The recorded `backends` spans, moved after every splice, are where a full parse of the
/// written file puts them, so the next edit finds its array without parsing; wrong ones are
/// not trusted (the edit parses the file to find its array) and are replaced by correct ones.
#[tokio::test]
async fn backend_edits_keep_the_recorded_array_spans_right_and_distrust_wrong_ones() {
    let (a, b, c) = ("127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3");
    let multiline = format!(
        "[pools.\"/m/\"]\nbackends = [\n  # keep\n  \"{a}\",\n  {{ addr = \"{b}\", state = \"drain\" }},\n]\ninterval = \"1h\"\n\n"
    );
    let (_dir, path, applier) = load_pools(&format!(
        "{}{multiline}{}[pools.\"/none/\"]\ninterval = \"1h\"\n\n{}",
        pool("/a/", &[a, b]),
        pool("/b/", &[a]),
        pool("/c/", &[c])
    ))
    .await;
    let addr = |s: &str| s.parse::<BackendAddr>().unwrap();
    let set = |pattern: &str, backend: &str, state| Mutation::SetBackendState {
        pattern: pattern.into(),
        backend: addr(backend),
        state,
    };
    let remove = |pattern: &str, backend: &str| Mutation::RemoveBackend {
        pattern: pattern.into(),
        backend: addr(backend),
    };
    let check = |label: &str, state: &WriterState| {
        let (full, text) = config::load(&path).unwrap();
        let (_, spans) = config::parse_with_spans(&text).unwrap();
        let applied = state.applied.as_ref().unwrap();
        assert_eq!(applied.pools, full.pools, "{label}");
        assert_eq!(state.backends_spans, spans, "{label}");
        assert_eq!(state.applied_hash, Some(sha256(&text)), "{label}");
        let topology = applier.topology().load_full();
        for (config, pool) in full.pools.iter().zip(&topology.pools) {
            assert_eq!(*pool.pattern, *config.pattern, "{label}");
            let running: Vec<_> = pool
                .backends
                .iter()
                .map(|b| (b.addr.clone(), b.admin()))
                .collect();
            let declared: Vec<_> = config
                .backends
                .iter()
                .map(|b| (b.addr.clone(), b.state))
                .collect();
            assert_eq!(running, declared, "{label}: {}", config.pattern);
        }
        for pool in ["/a/", "/m/", "/b/", "/c/"] {
            assert!(
                known_backends_span(applied, &state.backends_spans, &text, pool).is_some(),
                "{label}: {pool}"
            );
        }
    };
    check("loaded", &*applier.state.lock().await);
    let mutations = [
        set("/m/", a, AdminState::Disabled),
        remove("/a/", a),
        set("/m/", b, AdminState::Enabled),
        set("/c/", c, AdminState::Drain),
        remove("/m/", a),
        set("/a/", b, AdminState::Drain),
    ];
    for (i, mutation) in mutations.into_iter().enumerate() {
        // Every other edit starts from spans that are wrong: it must not trust them.
        if i % 2 == 1 {
            let mut state = applier.state.lock().await;
            let n = state.backends_spans.len();
            state.backends_spans = match i {
                // Off by one: not an array where the edit looks.
                1 => state
                    .backends_spans
                    .iter()
                    .map(|s| s.as_ref().map(|s| s.start + 1..s.end + 1))
                    .collect(),
                3 => vec![None; n],
                // /a/ and /c/ given each other's span: arrays, but not the pool's own.
                // (Two pools whose entries are equal could not be told apart this way: the
                // spans are trusted for where they point, as they come from a parse of
                // these very bytes; only their contents are checked.)
                _ => {
                    let mut spans = state.backends_spans.clone();
                    spans.swap(0, 4);
                    spans
                }
            };
        }
        let label = mutation.describe();
        applier
            .mutate(mutation, &MutateOptions::default())
            .await
            .unwrap();
        check(&label, &*applier.state.lock().await);
    }
}

/// A backend edit carries every other pool over without comparing it only when it edited
/// the applied file: after a person's unapplied save changed another pool, that change
/// runs too.
#[tokio::test]
async fn a_backend_edit_on_an_unapplied_save_applies_the_whole_save() {
    let listen = LISTEN; // for the hand-written saves below
    let (a, b, c) = ("127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3");
    let (_dir, path, applier) =
        load_pools(&format!("{}{}", pool("/a/", &[a, b]), pool("/b/", &[a]))).await;
    let addr = |s: &str| s.parse::<BackendAddr>().unwrap();
    // Saved by hand, not reloaded (no watcher here): /b/ gets another backend.
    std::fs::write(
        &path,
        format!("{listen}{}{}", pool("/a/", &[a, b]), pool("/b/", &[a, c])),
    )
    .unwrap();
    applier
        .mutate(
            Mutation::RemoveBackend {
                pattern: "/a/".into(),
                backend: addr(a),
            },
            &MutateOptions::default(),
        )
        .await
        .unwrap();
    let topology = applier.topology().load_full();
    let backends = |pattern: &str| -> Vec<BackendAddr> {
        let pool = topology.pool(pattern).unwrap();
        pool.backends.iter().map(|b| b.addr.clone()).collect()
    };
    assert_eq!(backends("/a/"), vec![addr(b)]);
    assert_eq!(backends("/b/"), vec![addr(a), addr(c)]);
    assert_eq!(applier.n_checkers().await, 3);
}

/// AddBackend's probe runs without the writer lock: a change made meanwhile completes while
/// the probe of a backend that accepts and never answers still waits for its timeout.
#[tokio::test]
async fn the_writer_lock_is_not_held_across_a_probe() {
    let (a, b) = ("127.0.0.1:1", "127.0.0.1:2");
    let (_dir, _path, applier) = load_pools(&pool("/a/", &[a, b])).await;
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let (accepted_tx, accepted) = tokio::sync::oneshot::channel();
    let _silent = tokio::spawn(async move {
        let (socket, _) = silent.accept().await.unwrap();
        let _ = accepted_tx.send(());
        // Holds the connection open and never answers.
        std::future::pending::<()>().await;
        drop(socket);
    });
    let add = tokio::spawn({
        let applier = Arc::clone(&applier);
        async move {
            let backend: BackendAddr = silent_addr.to_string().parse().unwrap();
            applier
                .mutate(
                    Mutation::AddBackend {
                        pattern: "/a/".into(),
                        backend,
                    },
                    &MutateOptions::default(),
                )
                .await
        }
    });
    tokio::time::timeout(std::time::Duration::from_secs(5), accepted)
        .await
        .expect("the probe connects")
        .unwrap();
    applier
        .mutate(
            Mutation::SetBackendState {
                pattern: "/a/".into(),
                backend: a.parse().unwrap(),
                state: AdminState::Drain,
            },
            &MutateOptions::default(),
        )
        .await
        .unwrap();
    assert!(
        !add.is_finished(),
        "the change waited for the probe to time out"
    );
    let refused = add.await.unwrap().unwrap_err();
    assert!(
        matches!(refused, MutateError::BackendUnhealthy { .. }),
        "{refused}"
    );
}

/// A backend new to a pool enters healthy or sick as its first probe says, before the
/// reload that declares it returns (no window where a live new backend is out of rotation).
#[tokio::test]
async fn a_new_backend_enters_as_its_first_probe_says() {
    let live = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let live_addr = live.local_addr().unwrap();
    tokio::spawn(sample_web::serve(live, "live".into()));
    let dead = "127.0.0.1:1";
    let (_dir, path, applier) = load_pools(&pool("/a/", &[dead])).await;
    let long = |backends: &[&str]| format!("{LISTEN}{}", pool("/a/", backends));
    std::fs::write(&path, long(&[dead, &live_addr.to_string()])).unwrap();
    assert!(matches!(
        applier.reload().await.unwrap(),
        Reloaded::Applied { .. }
    ));
    let topology = applier.topology().load_full();
    let backends = &topology.pool("/a/").unwrap().backends;
    assert_eq!(backends.len(), 2);
    assert!(!backends[0].is_healthy(), "{dead} is refused");
    assert!(backends[1].is_healthy(), "{live_addr} answers ok");
}

/// Sync's redo on the remote head's file holds that file to the rules a reload here applies:
/// an empty head, or one naming a CA that cannot be used, gets no change computed on top of
/// it (which would then be pushed to every instance).
#[tokio::test]
async fn a_change_on_the_remote_head_is_refused_when_this_instance_would_refuse_the_head() {
    let (_dir, _path, applier) = load_pools(&pool("/a/", &["127.0.0.1:1"])).await;
    let add_pool = Mutation::AddPool {
        pattern: "/x/".to_owned(),
        spec: crate::config::edit::PoolSpec {
            pool_type: "p2c".to_owned(),
            interval: "1h".to_owned(),
            health_checks: vec![crate::config::edit::HealthCheckSpec {
                url_path: "/healthz".to_owned(),
                healthy_values: vec!["ok".to_owned()],
            }],
        },
    };
    let unusable_ca = format!(
        "{LISTEN}{}backend_tls = {{ ca = \"no-such-ca.pem\" }}\n",
        pool("/a/", &["127.0.0.1:1"])
    );
    for (head, problem) in [
        (String::new(), "allow_empty = true"),
        (LISTEN.to_owned(), "allow_empty = true"),
        (unusable_ca, "no-such-ca.pem"),
    ] {
        let refused = applier
            .edit_detached(head.clone(), add_pool.clone(), Precondition::default())
            .await;
        match refused {
            Err(MutateError::FileInvalid { diagnostics, .. }) => assert!(
                diagnostics.iter().any(|d| d.to_string().contains(problem)),
                "{head:?}: {diagnostics:?}"
            ),
            other => panic!("{head:?}: {other:?}"),
        }
    }
    // An empty head that says so is one this instance would apply: the change is computed.
    let (text, config) = applier
        .edit_detached(
            "allow_empty = true\n".to_owned(),
            add_pool,
            Precondition::default(),
        )
        .await
        .unwrap();
    assert!(text.contains("/x/"), "{text}");
    assert!(config.pool("/x/").is_some());
}
