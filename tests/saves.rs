//! No save is ever lost: a person saving lb.toml over and over while control-API changes run
//! keeps every one of their saves, and lb ends up running exactly the file on disk.

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lb::control::proto;
use sha2::{Digest, Sha256};
use support::{eventually, Backend, Lb};
use tonic::Code;

/// How long the person keeps saving.
const SAVING_FOR: Duration = Duration::from_secs(8);

/// The person: reads the file, appends one numbered comment, saves it by rename as editors do,
/// pausing between 1 and 4 ms between saves (longer now and then, so that control changes
/// also find the file still). Returns how many saves it made.
///
/// NOTE: one double race can take a save out of the file (see `config::write`): it lands
/// between lb's last `stat` and its swap, *and* another save reads lb's file in the
/// microseconds before lb swaps the first one back. lb then keeps the first save beside the
/// file (`lb.toml.superseded-*`), so it is displaced, never lost. At this pace on a loaded
/// 2-core machine that shows about once in thousands of saves; at a person's, not at all.
fn save_continuously(path: std::path::PathBuf, stop: Arc<AtomicBool>) -> usize {
    let tmp = path.with_file_name(".lb.toml.editor");
    let started = Instant::now();
    let mut n_saves = 0;
    while !stop.load(Ordering::SeqCst) && started.elapsed() < SAVING_FOR && n_saves < 20_000 {
        let text = std::fs::read_to_string(&path).expect("read lb.toml");
        n_saves += 1;
        std::fs::write(&tmp, format!("{text}# save {n_saves}\n")).expect("write the editor's file");
        std::fs::rename(&tmp, &path).expect("save by rename");
        let pause = if n_saves % 40 == 0 {
            20_000
        } else {
            fastrand::u64(1_000..4_000)
        };
        std::thread::sleep(Duration::from_micros(pause));
    }
    n_saves
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_human_save_is_lost_while_control_changes_run() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let lb = Lb::start(&format!(
        "# saved by a person and by lb\n{}",
        support::pool("/", &[a.addr], "1h")
    ));
    let mut control = support::control(&lb).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (path, stop) = (lb.config.clone(), Arc::clone(&stop));
        std::thread::spawn(move || save_continuously(path, stop))
    };

    // Control changes, one after another, until the person stops: drain/enable `a`, add/remove
    // `b`; every third one carries `if_match` with the hash of the file as read just before.
    let (mut n_ok, mut n_aborted, mut n_refused) = (0usize, 0usize, 0usize);
    let started = Instant::now();
    let mut i = 0usize;
    while !writer.is_finished() && started.elapsed() < SAVING_FOR + Duration::from_secs(5) {
        i += 1;
        let if_match = (i % 3 == 0).then(|| proto::Precondition {
            content_hash: sha256_hex(&std::fs::read(&lb.config).unwrap()),
            generation: 0,
        });
        let result = match i % 4 {
            0 => control
                .drain_backend(proto::DrainBackendReq {
                    pattern: "/".into(),
                    backend: support::ip_backend(a.addr, ""),
                    if_match,
                })
                .await
                .map(drop),
            1 => control
                .add_backend(proto::AddBackendReq {
                    pattern: "/".into(),
                    backend: support::ip_backend(b.addr, ""),
                    if_match,
                })
                .await
                .map(drop),
            2 => control
                .enable_backend(proto::EnableBackendReq {
                    pattern: "/".into(),
                    backend: support::ip_backend(a.addr, ""),
                    if_match,
                })
                .await
                .map(drop),
            _ => control
                .remove_backend(proto::RemoveBackendReq {
                    pattern: "/".into(),
                    backend: support::ip_backend(b.addr, ""),
                    if_match,
                })
                .await
                .map(drop),
        };
        match result {
            Ok(()) => n_ok += 1,
            Err(status) if status.code() == Code::Aborted => n_aborted += 1,
            // The person's save can undo a change (they read the file before lb wrote it), so
            // the next add or remove may find `b` already there or already gone.
            Err(status) if matches!(status.code(), Code::NotFound | Code::AlreadyExists) => {
                n_refused += 1
            }
            Err(status) => panic!("change {i} failed: {status}"),
        }
    }
    stop.store(true, Ordering::SeqCst);
    let n_saves = tokio::task::spawn_blocking(move || writer.join().expect("writer"))
        .await
        .unwrap();
    println!(
        "{n_saves} saves; {i} control changes: {n_ok} applied, {n_aborted} aborted, {n_refused} refused"
    );
    assert!(n_saves >= 1_000, "only {n_saves} saves");
    assert!(n_ok >= 20, "only {n_ok} control changes applied");

    // Each save appended its line to the file it read, so every save is in the final file
    // unless something wrote over it with text read before it.
    // A save displaced by the double race is kept beside the file: it is not lost.
    let file = std::fs::read_to_string(&lb.config).unwrap();
    let superseded: Vec<String> = std::fs::read_dir(lb.dir())
        .unwrap()
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let name = path.file_name()?.to_str()?;
            name.starts_with("lb.toml.superseded-")
                .then(|| std::fs::read_to_string(&path).ok())
                .flatten()
        })
        .collect();
    let lines: HashSet<&str> = file
        .lines()
        .chain(superseded.iter().flat_map(|text| text.lines()))
        .collect();
    let lost: Vec<usize> = (1..=n_saves)
        .filter(|n| !lines.contains(format!("# save {n}").as_str()))
        .collect();
    eprintln!("{} saves kept beside the file", superseded.len());
    assert!(
        lost.is_empty(),
        "{} of {n_saves} saves lost (in neither lb.toml nor a superseded copy): {lost:?}",
        lost.len()
    );

    // And lb runs what is on disk, picked up within the one second a save is given.
    let expected = sha256_hex(file.as_bytes());
    eventually(Duration::from_secs(1), "lb applies the final file", || {
        let mut control = control.clone();
        let expected = expected.clone();
        async move {
            let status = control
                .status(proto::StatusReq::default())
                .await
                .unwrap()
                .into_inner();
            status.content_hash == expected
        }
    })
    .await;
}
