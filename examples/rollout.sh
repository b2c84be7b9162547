#!/usr/bin/env bash
# A rolling upgrade with lb: for each backend, drain -> wait -> upgrade -> enable.
#
# Self-contained: builds lb, lbctl and sample-web, starts three sample-web "v1" processes and lb
# in front of them (all on 127.0.0.1), keeps a request loop running, then replaces every backend
# with a "v2" process one at a time. Every step is a one-line change to lb.toml, so the file's
# git history (if you keep it in git) shows the whole rollout.
#
#   examples/rollout.sh            # uses ports 18081 (control), 18080 (http), 18091-18093
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet --workspace --bins
bin=target/release
work=$(mktemp -d)
pids=()
cleanup() { touch "$work/stop"; kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

ports=(18091 18092 18093)
declare -A backend_pid
start_backend() { # port version
  "$bin/sample-web" --port "$1" --node "$2-$1" 2>>"$work/backends.log" &
  backend_pid[$1]=$!
  pids+=("$!")
}
for port in "${ports[@]}"; do start_backend "$port" v1; done

cat > "$work/lb.toml" <<TOML
[control]
git_commit = true          # every control-API change becomes a commit of this file

[listen]
http = "127.0.0.1:18080"
grpc = "127.0.0.1:18081"

[pools."/"]
interval = "200ms"
backends = [
  "127.0.0.1:18091",
  "127.0.0.1:18092",
  "127.0.0.1:18093",
]
TOML
# Keep the config in git, as you would in production.
if command -v git >/dev/null; then
  git -C "$work" init -q
  git -C "$work" add lb.toml
  git -C "$work" -c user.name=ops -c user.email=ops@example.com commit -qm "lb.toml: three v1 backends"
fi
"$bin/lb" --config "$work/lb.toml" 2>"$work/lb.log" &
pids+=("$!")
# lbctl sends $USER as the actor recorded in each commit.
export USER="${USER:-ops}"
lbctl() { "$bin/lbctl" --lb=127.0.0.1:18081 "$@"; }

# Wait until the pool is full.
for _ in $(seq 1 50); do
  lbctl --pattern=/ poolHealth 2>/dev/null | grep -q PS_FULL && break
  sleep 0.1
done
lbctl --pattern=/ poolHealth

# Steady traffic while we roll; count failures.
( ok=0; failed=0
  while [ ! -e "$work/stop" ]; do
    if curl -fsS -o /dev/null --max-time 5 http://127.0.0.1:18080/; then ok=$((ok+1)); else failed=$((failed+1)); fi
  done
  echo "$ok $failed" > "$work/traffic" ) &
traffic=$!
pids+=("$traffic")

for port in "${ports[@]}"; do
  echo "== upgrading 127.0.0.1:$port"
  lbctl --pattern=/ --ip=127.0.0.1 --port="$port" drain
  lbctl --pattern=/ --ip=127.0.0.1 --port="$port" wait --drained --timeout=30s
  kill "${backend_pid[$port]}"; wait "${backend_pid[$port]}" 2>/dev/null || true
  start_backend "$port" v2
  lbctl --pattern=/ --ip=127.0.0.1 --port="$port" enable
  for _ in $(seq 1 50); do
    lbctl --pattern=/ poolHealth | grep "127.0.0.1:$port " | grep -q BS_HEALTHY && break
    sleep 0.1
  done
done

touch "$work/stop"; wait "$traffic"
read -r ok failed < "$work/traffic"
lbctl --pattern=/ poolHealth
echo "requests during the rollout: $ok ok, $failed failed"
if command -v git >/dev/null; then
  echo "== git log -p lb.toml"
  git -C "$work" log -p --format='commit %h%n%s%n%b' -- lb.toml
fi
curl -s http://127.0.0.1:18080/
[ "$failed" -eq 0 ]
