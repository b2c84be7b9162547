//! watch's tests: the settling of a save on tokio's paused clock (the debounce is exact and
//! costs no real time), and the watcher in front of a real `Applier` on a temporary file.

use super::*;
use crate::apply::tests::{load_pools, pool};
use crate::apply::{MutateOptions, Mutation};
use crate::config::{AdminState, BackendAddr};

/// A file in a fresh temporary directory holding `text`.
fn file_with(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

#[tokio::test(start_paused = true)]
async fn a_file_that_holds_still_settles_after_one_debounce() {
    let (_dir, path) = file_with("a = 1\n");
    let start = tokio::time::Instant::now();
    assert_eq!(settle(&path).await.as_deref(), Some(&b"a = 1\n"[..]));
    assert_eq!(start.elapsed(), DEBOUNCE);
}

#[tokio::test(start_paused = true)]
async fn a_save_in_progress_is_read_again_until_it_holds_still() {
    let (_dir, path) = file_with("a = 1\n");
    let writer = {
        let path = path.clone();
        tokio::spawn(async move {
            // Between the first read and the one a debounce later.
            tokio::time::sleep(DEBOUNCE / 2).await;
            std::fs::write(&path, "a = 2\n").unwrap();
        })
    };
    let start = tokio::time::Instant::now();
    let settled = settle(&path).await;
    writer.await.unwrap();
    assert_eq!(settled.as_deref(), Some(&b"a = 2\n"[..]));
    // Read at 0 (old), one debounce (new), two debounces (new again): settled.
    assert_eq!(start.elapsed(), DEBOUNCE * 2);
}

#[tokio::test(start_paused = true)]
async fn an_empty_file_is_given_up_on_after_the_bounded_wait() {
    let (_dir, path) = file_with("");
    let start = tokio::time::Instant::now();
    assert_eq!(settle(&path).await, None);
    assert_eq!(start.elapsed(), DEBOUNCE * 20);
}

/// The watcher skips the event of lb's own write by `stat`; a person's save right after an
/// API change (here in place, with the same length, the hardest case for a stat check) must
/// still be applied.
#[tokio::test]
async fn a_human_edit_right_after_an_api_change_is_applied() {
    let (a, b, c) = ("127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3");
    let (_dir, path, applier) =
        load_pools(&format!("{}{}", pool("/a/", &[a, b]), pool("/b/", &[b]))).await;
    assert!(!applier.is_own_write(), "loaded, not written by lb");
    let watcher = tokio::spawn(start(Arc::clone(&applier)).unwrap());
    let addr = |s: &str| s.parse::<BackendAddr>().unwrap();
    for round in 0..3 {
        let (from, to) = if round % 2 == 0 { (b, c) } else { (c, b) };
        let state = [AdminState::Drain, AdminState::Enabled][round % 2];
        applier
            .mutate(
                Mutation::SetBackendState {
                    pattern: "/a/".into(),
                    backend: addr(a),
                    state,
                },
                &MutateOptions::default(),
            )
            .await
            .unwrap();
        assert!(applier.is_own_write());
        // At once: /b/'s backend swapped for one of the same length, in place.
        let text = std::fs::read_to_string(&path).unwrap();
        let edited = text.replace(
            &format!("[pools.\"/b/\"]\ninterval = \"1h\"\nbackends = [\"{from}\"]"),
            &format!("[pools.\"/b/\"]\ninterval = \"1h\"\nbackends = [\"{to}\"]"),
        );
        assert_ne!(edited, text);
        assert_eq!(edited.len(), text.len());
        std::fs::write(&path, &edited).unwrap();
        // Most likely within the same timestamp tick as lb's write, and of the same length.
        assert!(
            !applier.is_own_write(),
            "round {round}: a save right after lb's write was taken for lb's"
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let topology = applier.topology().load_full();
            let b_pool = topology.pool("/b/").unwrap();
            if b_pool.backends.len() == 1 && b_pool.backends[0].addr == addr(to) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: the human edit was not applied"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(!applier.is_own_write());
    }
    watcher.abort();
}
