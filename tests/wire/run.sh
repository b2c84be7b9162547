#!/usr/bin/env bash
# Wire compatibility: a Python client generated from SPEC.md's table drives a real lb.
# Needs python3 and PyPI (grpcio, grpcio-tools go into a venv under target/). Builds lb itself.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
venv="$root/target/wire-venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check grpcio grpcio-tools
fi
cargo build --quiet --workspace --bins
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT
"$venv/bin/python" -m grpc_tools.protoc -I tests/wire --python_out="$work" --grpc_python_out="$work" tests/wire/rollout_lb.proto

target/debug/sample-web --port 0 --node wire 2>"$work/backend.log" &
pids+=("$!")
for _ in $(seq 1 100); do grep -q listening "$work/backend.log" && break; sleep 0.05; done
backend=$(sed -n 's/.*listening on //p' "$work/backend.log")
printf '# wire test\n' > "$work/lb.toml"
target/debug/lb --config "$work/lb.toml" --http 127.0.0.1:0 --grpc 127.0.0.1:0 2>"$work/lb.log" &
pids+=("$!")
for _ in $(seq 1 100); do grep -q 'listener="grpc"' "$work/lb.log" && break; sleep 0.05; done
grpc=$(sed -n 's/.*listener="grpc" addr=\([^ ]*\).*/\1/p' "$work/lb.log")
"$venv/bin/python" tests/wire/client.py --lb "$grpc" --backend "$backend" --stubs "$work"
# Everything was added and removed again: the file is back to what it was.
[ "$(cat "$work/lb.toml")" = "# wire test" ] || { echo "lb.toml not restored:"; cat "$work/lb.toml"; exit 1; }
