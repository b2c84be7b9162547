#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for a bounded time: scripts/fuzz.sh [SECONDS] (default 60 each).
#
#   targets: config (lb::config::parse), pattern (Pattern::parse + Router::new + route),
#            edit (config::edit add/remove backend/pool; output stays TOML, round trips),
#            request_head, chunked, response_head (proxy::h1's wire code through
#            lb::proxy::fuzzing, against httparse and a strict reference chunked decoder)
#
# How it runs, and why:
# - cargo-fuzz (libFuzzer + AddressSanitizer) needs a NIGHTLY toolchain: it passes
#   -Zsanitizer=address and other -Z flags that stable rustc refuses. The script never installs
#   a toolchain: it uses `cargo +nightly` only when `rustup toolchain list` already shows a
#   nightly, and installs cargo-fuzz from crates.io (`cargo install cargo-fuzz --locked`, a few
#   minutes, once per machine) when it is missing.
# - Without a nightly (or with LB_FUZZ_STABLE=1), it falls back to fuzz/tests/random.rs: the
#   same checks (fuzz/src/lib.rs) driven by a seeded random mutator over fuzz/seeds and
#   fuzz/dicts, on stable. No coverage feedback, so it is weaker, but it needs nothing else.
#   LB_FUZZ_SEED picks the seed (a fixed one by default, so a run is reproducible).
# - CI does not run this script: the first nightly build of lb with sanitizers takes ~7 minutes on
#   two cores, and a useful fuzz run minutes more. CI runs the stable random runner for 5 s per
#   target instead (.ci/run), a smoke test rather than a search. Run this before touching
#   config/, routing/ or proxy/h1, and keep each finding as a unit test next to the code.
#
# Findings: libFuzzer writes crashing inputs to fuzz/artifacts/TARGET/; replay one with
# `cargo +nightly fuzz run TARGET fuzz/artifacts/TARGET/crash-...`. The random runner writes to
# fuzz/artifacts/random-TARGET-SEED-N. The script exits non-zero if any target found something.
set -uo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH="${1:-60}"
TARGETS=(config pattern edit request_head chunked response_head)
declare -A DICT=([config]=toml.dict [pattern]=pattern.dict [edit]=edit.dict
    [request_head]=http1.dict [chunked]=http1.dict [response_head]=http1.dict)

have_nightly() {
    command -v rustup >/dev/null && rustup toolchain list | grep -q '^nightly'
}

stable_fallback() {
    echo "== fuzz (stable random runner, ${SECONDS_EACH}s per target)"
    LB_FUZZ_SECONDS="$SECONDS_EACH" cargo test --manifest-path fuzz/Cargo.toml --release \
        --no-default-features --test random -- --nocapture --test-threads 1
}

if [[ "${LB_FUZZ_STABLE:-0}" == 1 ]] || ! have_nightly; then
    have_nightly || echo "no nightly toolchain here (rustup toolchain list); cargo-fuzz cannot run"
    stable_fallback
    exit $?
fi

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz (cargo install cargo-fuzz --locked)"
    if ! cargo install cargo-fuzz --locked; then
        echo "cargo-fuzz could not be installed; using the stable random runner"
        stable_fallback
        exit $?
    fi
fi

echo "== cargo +nightly fuzz build -O"
cargo +nightly fuzz build -O || exit 1

status=0
for t in "${TARGETS[@]}"; do
    corpus="fuzz/corpus/$t"
    mkdir -p "$corpus" "fuzz/artifacts/$t"
    log="fuzz/artifacts/$t.log"
    echo "== fuzz $t for ${SECONDS_EACH}s (log: $log)"
    # New inputs go to the first directory (git-ignored); fuzz/seeds/$t is read only.
    cargo +nightly fuzz run -O "$t" "$corpus" "fuzz/seeds/$t" -- \
        -max_total_time="$SECONDS_EACH" -max_len=16384 -timeout=10 -rss_limit_mb=2048 \
        -dict="fuzz/dicts/${DICT[$t]}" -print_final_stats=1 >"$log" 2>&1
    rc=$?
    grep -E '^stat::number_of_executed_units|^stat::peak_rss_mb|^#[0-9]+ *DONE' "$log" | sed 's/^/   /'
    if [[ $rc -ne 0 ]]; then
        status=1
        echo "   FINDING in $t (exit $rc):"
        grep -E 'panicked at|ERROR: (libFuzzer|AddressSanitizer)|Test unit written to' "$log" | sed 's/^/   /'
    else
        echo "   no finding"
    fi
done
exit $status
