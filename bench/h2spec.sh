#!/usr/bin/env bash
# Runs h2spec against lb, over TLS and on the shared cleartext port, N times each, and prints
# how many of the cases passed in each run. h2spec is not fetched here (CI cannot fetch it):
# build it from github.com/summerwind/h2spec (GOPATH mode works with Debian's golang-go,
# golang-golang-x-net-dev, golang-github-spf13-cobra-dev and golang-github-fatih-color-dev)
# and pass its path.
#
#   bash bench/h2spec.sh --h2spec PATH [--runs 10] [--lb target/release/lb]
#
# The backend is sample-web, which answers without reading the request body, so a request lb
# forwarded before its body was whole and valid would be answered (the class h2spec's body
# cases catch). Exit 0 when every TLS run passed every case and every cleartext run passed
# every case but "3.5/2" (bytes that are not the preface are an HTTP/1.x request there).
set -euo pipefail
cd "$(dirname "$0")/.."

h2spec=""
runs=10
lb=target/release/lb
while [ $# -gt 0 ]; do
  case "$1" in
    --h2spec) h2spec=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --lb) lb=$2; shift 2 ;;
    *) echo "h2spec.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -x "$h2spec" ] || { echo "h2spec.sh: --h2spec PATH (an h2spec binary) is required" >&2; exit 2; }
cargo build --quiet --release --locked --bin lb --bin sample-web
sample_web="$(dirname "$lb")/sample-web"

work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT

# Waits up to 10 s for a line matching $2 in the log $1.
wait_for() {
  for _ in $(seq 1 200); do grep -q "$2" "$1" && return 0; sleep 0.05; done
  echo "h2spec.sh: no \"$2\" in $1 after 10s" >&2; cat "$1" >&2; exit 1
}

openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -days 2 \
  -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost" \
  -keyout "$work/lb.key" -out "$work/lb.pem" 2>/dev/null
chmod 600 "$work/lb.key"

"$sample_web" --port 0 --node h2spec 2>"$work/backend.log" &
pids+=("$!")
wait_for "$work/backend.log" listening
backend=$(sed -n 's/.*listening on //p' "$work/backend.log")
cat > "$work/lb.toml" <<TOML
[listen]
https = "127.0.0.1:0"

[[tls.certificates]]
cert = "lb.pem"
key = "lb.key"

[log]
access = "off"

[pools."/"]
interval = "200ms"
backends = ["$backend"]
TOML
"$lb" --config "$work/lb.toml" --http 127.0.0.1:0 --grpc 127.0.0.1:0 --admin 127.0.0.1:0 2>"$work/lb.log" &
pids+=("$!")
wait_for "$work/lb.log" 'listener="https"'
wait_for "$work/lb.log" 'listener="http"'
port_of() { sed -n "s/.*listener=\"$1\" addr=[^ ]*:\([0-9]*\).*/\1/p" "$work/lb.log" | head -1; }
https=$(port_of https)
http=$(port_of http)
wait_for "$work/lb.log" 'backend healthy'

failed=0
for mode in tls cleartext; do
  for run in $(seq 1 "$runs"); do
    if [ "$mode" = tls ]; then args=(-t -k -p "$https"); else args=(-p "$http"); fi
    out="$work/$mode-$run.txt"
    "$h2spec" "${args[@]}" -o 2 >"$out" 2>&1 || true
    summary=$(grep -E '^[0-9]+ tests, [0-9]+ passed' "$out" | tail -1)
    failures=$(grep -cE '^\s+× ' "$out" || true)
    echo "$mode run $run: $summary"
    if [ "$mode" = tls ] && [ "$failures" -ne 0 ]; then
      failed=1; grep -E '^\s+× ' "$out" >&2
    fi
    if [ "$mode" = cleartext ]; then
      other=$(grep -E '^\s+× ' "$out" | grep -v '× 2: Sends invalid connection preface' || true)
      if [ -n "$other" ]; then failed=1; echo "$other" >&2; fi
    fi
  done
done
exit "$failed"
