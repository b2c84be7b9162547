#!/usr/bin/env bash
# Wire compatibility: a Python client generated from docs/contract.md's wire table (rollout_lb.proto,
# checked against the table by table.py) drives lb.
#
#   tests/wire/run.sh                                  build lb + sample-web, start both, run
#   tests/wire/run.sh --lb HOST:PORT [--backend IP:PORT]   drive an lb that is already running
#
# With --lb, --backend names a backend that lb can health-check (it must answer /healthz with
# `ok`); without it a sample-web is started here on 127.0.0.1. Needs python3 and PyPI: grpcio and
# grpcio-tools go into a venv under the cargo target dir ($CARGO_TARGET_DIR or ./target), or
# $WIRE_VENV. Exit 0 when every check passed.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
target="${CARGO_TARGET_DIR:-$root/target}"
venv="${WIRE_VENV:-$target/wire-venv}"

lb_addr=""
backend=""
while [ $# -gt 0 ]; do
  case "$1" in
    --lb) lb_addr="${2:?--lb needs HOST:PORT}"; shift 2 ;;
    --lb=*) lb_addr="${1#--lb=}"; shift ;;
    --backend) backend="${2:?--backend needs IP:PORT}"; shift 2 ;;
    --backend=*) backend="${1#--backend=}"; shift ;;
    -h|--help) sed -n '2,10s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
done

if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check grpcio grpcio-tools
fi

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in ${pids[@]+"${pids[@]}"}; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# The proto says what the contract's table says; then stubs: a broken proto fails here, before
# anything is started or connected to.
python3 tests/wire/table.py docs/contract.md tests/wire/rollout_lb.proto
"$venv/bin/python" -m grpc_tools.protoc -I tests/wire --python_out="$work" \
  --grpc_python_out="$work" tests/wire/rollout_lb.proto

# Waits up to 15 s for a line matching $2 in the log $1.
wait_for() {
  for _ in $(seq 1 300); do grep -q "$2" "$1" && return 0; sleep 0.05; done
  echo "run.sh: no \"$2\" in $1 after 15s:" >&2
  cat "$1" >&2
  exit 1
}

if [ -z "$lb_addr" ]; then
  cargo build --quiet --workspace --bins
elif [ -z "$backend" ]; then
  cargo build --quiet -p sample-web
fi

if [ -z "$backend" ]; then
  "$target/debug/sample-web" --port 0 --node wire 2>"$work/backend.log" &
  pids+=("$!")
  wait_for "$work/backend.log" listening
  backend=$(sed -n 's/.*listening on //p' "$work/backend.log")
fi

own_lb=false
if [ -z "$lb_addr" ]; then
  own_lb=true
  printf '# wire test\n' > "$work/lb.toml"
  "$target/debug/lb" --config "$work/lb.toml" --http 127.0.0.1:0 --grpc 127.0.0.1:0 \
    2>"$work/lb.log" &
  pids+=("$!")
  wait_for "$work/lb.log" 'listener="grpc"'
  lb_addr=$(sed -n 's/.*listener="grpc" addr=\([^ ]*\).*/\1/p' "$work/lb.log")
fi

"$venv/bin/python" tests/wire/client.py --lb "$lb_addr" --backend "$backend" --stubs "$work"

if $own_lb; then
  # Everything was added and removed again: the file is back to what it was.
  [ "$(cat "$work/lb.toml")" = "# wire test" ] || {
    echo "lb.toml not restored:"
    cat "$work/lb.toml"
    exit 1
  }
fi
