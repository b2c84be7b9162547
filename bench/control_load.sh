#!/usr/bin/env bash
# bench/control_load.sh — does control-API work stall the data plane? lb runs with
# `[server] workers = 1`; proxied p99 is measured with wrk idle, then while lbctl runs 20
# mutations a second (AddBackend and RemoveBackend of a live backend, alternately), in
# interleaved rounds. Prints both p99s (medians over rounds) and their ratio (target <= 1.5x).
#
#   bench/control_load.sh [--rounds N] [--duration S] [--connections C] [--rate R]
#                         [--pools P] [--lb PATH] [--lbctl PATH] [--keep]
#
# --pools adds P more pools (one disabled backend each) so each mutation parses, hashes and
# writes a file of some size. lb.toml lives under $TMPDIR (a real disk, so fsync costs).
# Needs: wrk nginx taskset (Debian: wrk nginx util-linux). Installs nothing. Binds 127.0.0.1
# only; everything lives in a temp dir removed on exit.
set -euo pipefail

ROUNDS=3
DURATION=10
CONNS=32
RATE=20
POOLS=200
KEEP=0
LB_BIN=""
LBCTL_BIN=""
PROXY_CPU=0
LOAD_CPU=1

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS="$2"; shift 2 ;;
        --duration) DURATION="$2"; shift 2 ;;
        --connections) CONNS="$2"; shift 2 ;;
        --rate) RATE="$2"; shift 2 ;;
        --pools) POOLS="$2"; shift 2 ;;
        --lb) LB_BIN="$2"; shift 2 ;;
        --lbctl) LBCTL_BIN="$2"; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "control_load.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done

missing=()
for tool in wrk nginx taskset; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "control_load.sh: missing: ${missing[*]} (sudo apt-get install wrk nginx util-linux)" >&2
    exit 2
fi

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}/release"
LB_BIN="${LB_BIN:-$TARGET/lb}"
LBCTL_BIN="${LBCTL_BIN:-$TARGET/lbctl}"
for bin in "$LB_BIN" "$LBCTL_BIN"; do
    if [ ! -x "$bin" ]; then
        echo "control_load.sh: no binary at $bin; run 'cargo build --release' (or pass --lb/--lbctl)" >&2
        exit 2
    fi
done
if [ "$(nproc)" -lt 2 ]; then
    echo "control_load.sh: needs at least 2 CPUs (lb on CPU 0, load on CPU 1)" >&2
    exit 2
fi
if [ "$(nproc)" -gt 2 ]; then LOAD_CPU="1-$(($(nproc) - 1))"; fi

# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
bench_setup lb-control-bench
free_ports 5
B1=$BASE; B2=$((BASE + 1)); B3=$((BASE + 2)); LB_HTTP=$((BASE + 3)); LB_GRPC=$((BASE + 4))

wait_http() { # port path expect-status
    local deadline=$((SECONDS + 15)) line
    while [ $SECONDS -lt $deadline ]; do
        line=$( (exec 3<>"/dev/tcp/127.0.0.1/$1" &&
            printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$2" >&3 &&
            IFS= read -r -t 2 l <&3 && echo "$l") 2>/dev/null) || line=""
        case "$line" in "HTTP/1."?" $3"*) return 0 ;; esac
        sleep 0.1
    done
    echo "control_load.sh: 127.0.0.1:$1$2 did not answer $3 in time" >&2
    return 1
}

# ---------------------------------------------------------------- backends (CPU $LOAD_CPU)
for b in "$B1" "$B2" "$B3"; do
    mkdir -p "$TMP/b$b"
    cat >"$TMP/b$b/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
error_log $TMP/b$b/error.log warn;
pid $TMP/b$b/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $TMP/b$b; proxy_temp_path $TMP/b$b; fastcgi_temp_path $TMP/b$b;
    uwsgi_temp_path $TMP/b$b; scgi_temp_path $TMP/b$b;
    keepalive_requests 1000000;
    default_type text/plain;
    server {
        listen 127.0.0.1:$b;
        location / { return 200 "ok\n"; }
    }
}
EOF
    taskset -c "$LOAD_CPU" nginx -p "$TMP/b$b" -c "$TMP/b$b/nginx.conf" 2>>"$TMP/b$b/stderr" &
    PIDS+=($!)
    wait_http "$b" / 200
done

# ---------------------------------------------------------------- lb (CPU $PROXY_CPU)
mkdir -p "$TMP/lb"
{
    cat <<EOF
[listen]
http = "127.0.0.1:$LB_HTTP"
grpc = "127.0.0.1:$LB_GRPC"

[server]
workers = 1

[pools."/"]
interval = "10s"
health_checks = [{ url_path = "/", healthy_values = ["ok"] }]
backends = ["127.0.0.1:$B1", "127.0.0.1:$B2"]
EOF
    for i in $(seq 1 "$POOLS"); do
        printf '\n[pools."/p%d/"]\nbackends = [{ addr = "127.0.0.1:9", state = "disabled" }]\n' "$i"
    done
} >"$TMP/lb/lb.toml"
RUST_LOG="info,lb::access=off" taskset -c "$PROXY_CPU" "$LB_BIN" --config "$TMP/lb/lb.toml" \
    >"$TMP/lb/stdout" 2>"$TMP/lb/log" &
PIDS+=($!)
wait_http "$LB_HTTP" / 200

# ---------------------------------------------------------------- rounds
# wrk's "99%" latency line in microseconds.
p99_us() {
    awk '$1 == "99%" {
        v = $2; unit = v; sub(/[0-9.]+/, "", unit); sub(/[a-z]+$/, "", v);
        if (unit == "us") print v; else if (unit == "ms") print v * 1000; else if (unit == "s") print v * 1000000;
    }' "$1"
}
median() { sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

# Runs lbctl AddBackend/RemoveBackend of backend 3 alternately, $RATE a second, until
# $TMP/stop exists (checked between calls, so a round never ends with a change half made);
# counts successes and failures in files.
mutate_loop() {
    local period_ns=$((1000000000 / RATE)) next i=0 cmd
    # Start with whichever change the file allows.
    if grep -q "127.0.0.1:$B3\"" "$TMP/lb/lb.toml"; then i=1; fi
    next=$(date +%s%N)
    while [ ! -e "$TMP/stop" ]; do
        if [ $((i % 2)) = 0 ]; then cmd=addBackend; else cmd=removeBackend; fi
        if taskset -c "$LOAD_CPU" "$LBCTL_BIN" --lb="127.0.0.1:$LB_GRPC" --pattern=/ \
            --ip=127.0.0.1 --port="$B3" --url_path=/ "$cmd" >/dev/null 2>>"$TMP/lbctl.err"; then
            echo >>"$TMP/mutations.ok"
        else
            echo >>"$TMP/mutations.failed"
        fi
        i=$((i + 1))
        next=$((next + period_ns))
        local now wait_ns
        now=$(date +%s%N)
        wait_ns=$((next - now))
        if [ "$wait_ns" -gt 0 ]; then sleep "$(printf '0.%09d' "$wait_ns")"; fi
    done
}

wrk_run() { # output-file
    taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency \
        "http://127.0.0.1:$LB_HTTP/" >"$1"
}

: >"$TMP/idle.p99"; : >"$TMP/busy.p99"; : >"$TMP/mutations.ok"; : >"$TMP/mutations.failed"
taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$LB_HTTP/" >/dev/null # warm-up
for round in $(seq 1 "$ROUNDS"); do
    wrk_run "$TMP/idle.$round"
    p99_us "$TMP/idle.$round" >>"$TMP/idle.p99"
    ok_before=$(wc -l <"$TMP/mutations.ok")
    rm -f "$TMP/stop"
    mutate_loop &
    MUTATOR=$!
    wrk_run "$TMP/busy.$round"
    touch "$TMP/stop"
    wait "$MUTATOR" 2>/dev/null || true
    p99_us "$TMP/busy.$round" >>"$TMP/busy.p99"
    ok_after=$(wc -l <"$TMP/mutations.ok")
    printf 'round %d: idle p99 %s us, under mutations p99 %s us (%d mutations, %.1f/s)\n' \
        "$round" "$(tail -1 "$TMP/idle.p99")" "$(tail -1 "$TMP/busy.p99")" \
        $((ok_after - ok_before)) "$(echo "($ok_after - $ok_before) / $DURATION" | bc -l)"
done

IDLE=$(median <"$TMP/idle.p99")
BUSY=$(median <"$TMP/busy.p99")
FAILED=$(wc -l <"$TMP/mutations.failed")
echo
echo "workers = 1, $CONNS connections, $DURATION s x $ROUNDS rounds, $RATE mutations/s target, $((POOLS + 1)) pools"
printf 'idle p99:            %8.0f us\n' "$IDLE"
printf 'under mutations p99: %8.0f us\n' "$BUSY"
printf 'ratio:               %8.2f x (target <= 1.5)\n' "$(echo "$BUSY / $IDLE" | bc -l)"
if [ "$FAILED" -gt 0 ]; then
    echo "failed mutations: $FAILED (first errors below)"
    head -5 "$TMP/lbctl.err"
fi
