//! The stable-toolchain fallback for the fuzz targets: a seeded, time-bounded random mutator over
//! the seeds in `seeds/` and the tokens in `dicts/`, calling the same checks (`lb_fuzz::*`) as
//! the libFuzzer targets. No coverage feedback, so it finds far less than libFuzzer does, but it
//! needs no nightly toolchain and no sanitizer runtime.
//!
//! `LB_FUZZ_SECONDS` (default 3) bounds each target; `LB_FUZZ_SEED` (default fixed) makes a run
//! reproducible. A failing input is written to `artifacts/random-TARGET-SEED-ITER` and its path
//! printed, so it can be replayed with `cargo fuzz run TARGET FILE` or added as a unit test.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = root().join("seeds").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

/// The quoted tokens of a libFuzzer dictionary (`"..."` lines, `\xNN` and `\"` escapes).
fn dict(name: &str) -> Vec<Vec<u8>> {
    let text = std::fs::read_to_string(root().join("dicts").join(name)).unwrap();
    text.lines()
        .filter_map(|l| l.trim().strip_prefix('"')?.strip_suffix('"').map(unescape))
        .collect()
}

fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            if b[i + 1] == b'x' && i + 3 < b.len() {
                if let Ok(v) = u8::from_str_radix(&s[i + 2..i + 4], 16) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
            out.push(b[i + 1]);
            i += 2;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

fn mutate(rng: &mut fastrand::Rng, input: &mut Vec<u8>, tokens: &[Vec<u8>], pool: &[Vec<u8>]) {
    for _ in 0..rng.usize(1..=4) {
        let at = rng.usize(0..=input.len());
        match rng.u8(0..32) {
            0..=9 => {
                let t = &tokens[rng.usize(0..tokens.len())];
                input.splice(at..at, t.iter().copied());
            }
            10..=13 if !input.is_empty() => {
                let end = (at + rng.usize(1..16)).min(input.len());
                input.drain(at.min(end)..end);
            }
            14..=16 if !input.is_empty() => {
                let i = rng.usize(0..input.len());
                input[i] = rng.u8(..);
            }
            17..=20 if !input.is_empty() => {
                let i = rng.usize(0..input.len());
                const SPECIAL: &[u8] = b" \n\t\"'#[]{}=,./:\\%$";
                input[i] = SPECIAL[rng.usize(0..SPECIAL.len())];
            }
            21..=24 if !input.is_empty() => {
                // Duplicate a random slice somewhere else.
                let start = rng.usize(0..input.len());
                let end = (start + rng.usize(1..64)).min(input.len());
                let chunk = input[start..end].to_vec();
                input.splice(at..at, chunk);
            }
            25..=29 => {
                // Splice in part of another seed.
                let other = &pool[rng.usize(0..pool.len())];
                if !other.is_empty() {
                    let start = rng.usize(0..other.len());
                    let end = (start + rng.usize(1..128)).min(other.len());
                    input.splice(at..at, other[start..end].iter().copied());
                }
            }
            30 => input.truncate(at),
            _ => {}
        }
    }
    input.truncate(64 * 1024);
}

fn run(target: &str, dict_name: &str, check: fn(&[u8])) {
    let seconds: u64 = std::env::var("LB_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let seed: u64 = std::env::var("LB_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x1b_f022);
    let mut rng = fastrand::Rng::with_seed(seed);
    let seeds = seeds(target);
    let tokens = dict(dict_name);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    // Inputs that did not panic, kept to mutate further (a crude corpus, capped).
    let mut corpus = seeds.clone();
    let mut execs: u64 = 0;
    for s in &seeds {
        check(s);
    }
    while Instant::now() < deadline {
        for _ in 0..64 {
            let mut input = corpus[rng.usize(0..corpus.len())].clone();
            mutate(&mut rng, &mut input, &tokens, &seeds);
            let result = std::panic::catch_unwind(|| check(&input));
            execs += 1;
            if let Err(panic) = result {
                let path = save(target, seed, execs, &input);
                std::panic::resume_unwind(Box::new(format!(
                    "{target}: input saved to {} ({:?})",
                    path.display(),
                    panic
                        .downcast_ref::<String>()
                        .map(String::as_str)
                        .or(panic.downcast_ref::<&str>().copied())
                )));
            }
            if corpus.len() < 512 && rng.u8(0..8) == 0 {
                corpus.push(input);
            } else if rng.u8(0..4) == 0 {
                let i = rng.usize(seeds.len()..corpus.len().max(seeds.len() + 1));
                if i < corpus.len() {
                    corpus[i] = input;
                }
            }
        }
    }
    println!("random {target}: seed {seed}, {execs} execs in {seconds}s, no finding");
}

fn save(target: &str, seed: u64, iter: u64, input: &[u8]) -> PathBuf {
    let dir = root().join("artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("random-{target}-{seed}-{iter}"));
    std::fs::write(&path, input).unwrap();
    Path::new(&path).to_path_buf()
}

#[test]
fn config() {
    run("config", "toml.dict", lb_fuzz::config);
}

#[test]
fn pattern() {
    run("pattern", "pattern.dict", lb_fuzz::pattern);
}

#[test]
fn edit() {
    run("edit", "edit.dict", lb_fuzz::edit);
}

#[test]
fn request_head() {
    run("request_head", "http1.dict", lb_fuzz::request_head);
}

#[test]
fn chunked() {
    run("chunked", "http1.dict", lb_fuzz::chunked);
}

#[test]
fn response_head() {
    run("response_head", "http1.dict", lb_fuzz::response_head);
}
