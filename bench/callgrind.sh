#!/usr/bin/env bash
# bench/callgrind.sh — instructions per proxied request: lb under callgrind, in front of one nginx
# `return 200` backend, driven by h2load over HTTP/1.1 or h2c. The counters are zeroed after a
# warm-up and dumped after the measured requests, so start-up and shutdown are left out.
#
#   bench/callgrind.sh [--proto h1|h2] [--requests N] [--logs on|off] [--lb PATH] [--top K]
#                      [--rate-limit] [--keep]
#
# --rate-limit gives the pool a rate_limit far above the load (1000000/s, burst 1000, key "ip"),
# to count what the check costs.
#
# Prints the instructions per request and the K functions with the highest self cost; the
# callgrind file stays in the work directory with --keep (read it with callgrind_annotate).
# Needs: valgrind nginx h2load taskset. Binds 127.0.0.1 only.
set -euo pipefail

PROTO=h2
REQUESTS=20000
WARMUP=2000
LOG=off
TOP=25
KEEP=0
LB_BIN=""
RATE_LIMIT=""
while [ $# -gt 0 ]; do
    case "$1" in
        --proto) PROTO="$2"; shift 2 ;;
        --requests) REQUESTS="$2"; shift 2 ;;
        --logs) LOG="$2"; shift 2 ;;
        --lb) LB_BIN="$2"; shift 2 ;;
        --top) TOP="$2"; shift 2 ;;
        --rate-limit) RATE_LIMIT='rate_limit = { requests_per_second = 1000000, burst = 1000, key = "ip" }'; shift ;;
        --keep) KEEP=1; shift ;;
        -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "callgrind.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done
case "$PROTO" in h1|h2) ;; *) echo "callgrind.sh: --proto takes h1 or h2" >&2; exit 2 ;; esac
case "$LOG" in on|off) ;; *) echo "callgrind.sh: --logs takes on or off" >&2; exit 2 ;; esac
for tool in valgrind callgrind_control callgrind_annotate nginx h2load taskset curl; do
    command -v "$tool" >/dev/null 2>&1 || { echo "callgrind.sh: missing: $tool" >&2; exit 2; }
done
BENCH="$(cd "$(dirname "$0")" && pwd)"
[ -n "$LB_BIN" ] || LB_BIN="${CARGO_TARGET_DIR:-$BENCH/../target}/release/lb"
[ -x "$LB_BIN" ] || { echo "callgrind.sh: no lb binary at $LB_BIN; run 'cargo build --release'" >&2; exit 2; }

# shellcheck source=bench/lib.sh
source "$BENCH/lib.sh"
bench_setup lb-callgrind
free_ports 3
BACKEND=$BASE; LB_HTTP=$((BASE + 1)); LB_GRPC=$((BASE + 2))

cat >"$TMP/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
error_log $TMP/error.log warn;
pid $TMP/nginx.pid;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $TMP; proxy_temp_path $TMP; fastcgi_temp_path $TMP;
    uwsgi_temp_path $TMP; scgi_temp_path $TMP;
    keepalive_requests 1000000;
    default_type text/plain;
    server { listen 127.0.0.1:$BACKEND; location / { return 200 "ok\n"; } }
}
EOF
taskset -c 1 nginx -p "$TMP" -c "$TMP/nginx.conf" 2>>"$TMP/nginx.stderr" &
PIDS+=($!)

ACCESS=off
[ "$LOG" = on ] && ACCESS="$TMP/access.log"
cat >"$TMP/lb.toml" <<EOF
[listen]
http = "127.0.0.1:$LB_HTTP"
grpc = "127.0.0.1:$LB_GRPC"

[server]
workers = 1
drain_timeout = "1s"

[log]
access = "$ACCESS"

[pools."/"]
interval = "10s"
health_checks = [{ url_path = "/", healthy_values = ["ok"] }]
backends = ["127.0.0.1:$BACKEND"]
$RATE_LIMIT
EOF
OUT="$TMP/callgrind.out"
taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$OUT" \
    "$LB_BIN" --config "$TMP/lb.toml" >"$TMP/lb.stdout" 2>"$TMP/lb.stderr" &
VG=$!
PIDS+=($VG)

# lb answers 200 once the backend passed its probe; under valgrind that takes seconds.
deadline=$((SECONDS + 120))
until curl -sf "http://127.0.0.1:$LB_HTTP/" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { echo "callgrind.sh: lb did not answer in 120 s" >&2; exit 1; }
    sleep 0.5
done

load() { # requests
    local args=(-c16 -m4)
    [ "$PROTO" = h1 ] && args=(--h1 -c16 -m1)
    taskset -c 1 h2load "${args[@]}" -n"$1" "http://127.0.0.1:$LB_HTTP/" >"$TMP/h2load.out" 2>&1
    grep -q "$1 succeeded" "$TMP/h2load.out" ||
        { echo "callgrind.sh: not every request succeeded:" >&2; cat "$TMP/h2load.out" >&2; exit 1; }
}
load "$WARMUP"
callgrind_control -z "$VG" >/dev/null
load "$REQUESTS"
callgrind_control -d "$VG" >/dev/null
DUMP=$(ls "$OUT".* 2>/dev/null | sort | tail -1)
[ -n "$DUMP" ] || { echo "callgrind.sh: no dump written" >&2; exit 1; }

TOTAL=$(awk '/^(summary|totals):/ {print $2; exit}' "$DUMP")
echo "$PROTO, access log $LOG, $REQUESTS requests after $WARMUP warm-up: $TOTAL instructions," \
    "$(awk -v t="$TOTAL" -v n="$REQUESTS" 'BEGIN {printf "%.1f", t / n / 1000}')k per request"
echo
echo "self cost per request (instructions), top $TOP:"
callgrind_annotate --inclusive=no --threshold=100 "$DUMP" 2>/dev/null |
    awk -v n="$REQUESTS" -v top="$TOP" -v total="$TOTAL" '
        /^-+$/ {sep++; next}
        sep == 6 && /^ *[0-9,]+ / {
            cost = $1; gsub(",", "", cost)
            # main and its callers show up with their inclusive cost: not a self cost.
            if (cost > total / 2) next
            line = $0; sub(/^ *[0-9,]+ +\([^)]*\) +/, "", line); sub(/ \[.*$/, "", line)
            printf "%8.0f  %s\n", cost / n, line
            if (++shown == top) exit }'
