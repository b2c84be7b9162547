#!/usr/bin/env bash
# Loads lb's admin dashboard in headless Chromium and checks what it shows: every pool with its
# status badge and every backend with its health, filled in live by the page's script.
# Needs Debian's chromium (`apt-get install chromium`); builds lb itself; loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v chromium >/dev/null || { echo "needs chromium: apt-get install chromium" >&2; exit 2; }
cargo build --quiet --workspace --bins
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT

target/debug/sample-web --port 0 --node dash 2>"$work/backend.log" &
pids+=("$!")
for _ in $(seq 1 100); do grep -q listening "$work/backend.log" && break; sleep 0.05; done
backend=$(sed -n 's/.*listening on //p' "$work/backend.log")
cat > "$work/lb.toml" <<TOML
[pools."/"]
interval = "200ms"
backends = ["$backend", "127.0.0.1:9"]
TOML
target/debug/lb --config "$work/lb.toml" --http 127.0.0.1:0 --grpc 127.0.0.1:0 --admin 127.0.0.1:0 2>"$work/lb.log" &
pids+=("$!")
for _ in $(seq 1 100); do grep -q 'listener="admin"' "$work/lb.log" && break; sleep 0.05; done
admin=$(sed -n 's/.*listener="admin" addr=\([^ ]*\).*/\1/p' "$work/lb.log")
sleep 1 # let the first health checks land (the page polls; this only makes the snapshot stable)

chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$work/chrome" --virtual-time-budget=3000 --dump-dom "http://$admin/" > "$work/dom.html" 2>"$work/chrome.log"
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$work/chrome" --virtual-time-budget=3000 --window-size=1000,600 \
  --screenshot="${SCREENSHOT:-$work/dashboard.png}" "http://$admin/" 2>>"$work/chrome.log" || true

passed=0; failed=0
expect() { if grep -q -- "$1" "$work/dom.html"; then passed=$((passed+1)); echo "ok   $2"; else failed=$((failed+1)); echo "FAIL $2"; fi; }
expect 'data-pool="/"' "the pool / is listed"
expect 'PS_DEGRADED' "its status badge shows PS_DEGRADED (one backend is down)"
expect "data-backend=\"$backend\"" "the live backend is listed"
expect 'BS_HEALTHY' "a backend shows BS_HEALTHY"
expect 'data-backend="127.0.0.1:9"' "the dead backend is listed"
expect 'BS_SICK' "a backend shows BS_SICK"
expect 'generation 1' "the generation is shown"
echo "dashboard: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
