#!/usr/bin/env bash
# Endurance run: scripts/soak.sh [--seconds 60] [--load auto|wrk|python] [--clients N]
#
# Builds release, then scripts/soak.py starts sample-web backends and lb on 127.0.0.1, drives
# steady load, reloads lb.toml every 300 ms, restarts backends, churns lbctl add/remove, and writes
# 60 garbage saves in a row. It prints failed requests (target 0), lb's RSS growth (target
# < 10 MiB), thread and fd counts, and exits non-zero when a target is missed. Loopback only;
# every process it starts is stopped on exit (also on Ctrl-C).
set -euo pipefail
cd "$(dirname "$0")/.."

target="${CARGO_TARGET_DIR:-target}"
echo "== cargo build --release (lb, lbctl, sample-web)"
cargo build --release --workspace --locked --quiet

python3 scripts/soak.py --bin "$target/release" "$@" &
driver=$!
# The driver stops its own children in a finally block; SIGTERM reaches it here.
trap 'kill -TERM "$driver" 2>/dev/null || true; wait "$driver" 2>/dev/null || true' INT TERM
wait "$driver"
