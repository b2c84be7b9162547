#!/usr/bin/env bash
# bench/proxy.sh — lb against nginx, HAProxy and no proxy at all, on one core each.
#
# Two nginx backends (`return 200`, one worker each) sit on CPU 1 with the load generators; every
# proxy runs pinned to CPU 0 with one worker/thread. Rounds are interleaved (lb, nginx, haproxy,
# direct, lb, ...) and the table shows medians over rounds.
#
#   bench/proxy.sh [--rounds N] [--duration S] [--connections C] [--lb PATH] [--no-h2]
#                  [--no-access-log] [--only lb,nginx,haproxy,direct] [--keep]
#
# Needs: wrk nginx haproxy h2load taskset (Debian: wrk nginx haproxy nghttp2-client util-linux).
# Installs nothing. Binds 127.0.0.1 only; everything lives in a temp dir removed on exit.
set -euo pipefail

ROUNDS=3
DURATION=5
CONNS=64
H2=1
H2_CLIENTS=16   # h2load: 16 connections x 4 concurrent streams = 64 requests in flight
H2_STREAMS=4
ACCESS_LOG=1
KEEP=0
ONLY=",lb,nginx,haproxy,direct,"
LB_BIN=""
PROXY_CPU=0
LOAD_CPU=1

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS="$2"; shift 2 ;;
        --duration) DURATION="$2"; shift 2 ;;
        --connections) CONNS="$2"; shift 2 ;;
        --lb) LB_BIN="$2"; shift 2 ;;
        --no-h2) H2=0; shift ;;
        --no-access-log) ACCESS_LOG=0; shift ;;
        --keep) KEEP=1; shift ;;
        --only) ONLY=",$2,"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "proxy.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done

missing=()
for tool in wrk nginx haproxy h2load taskset; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "proxy.sh: missing: ${missing[*]}" >&2
    echo "install them with:" >&2
    echo "  sudo apt-get install wrk nginx haproxy nghttp2-client util-linux" >&2
    exit 2
fi

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
if [ -z "$LB_BIN" ]; then
    LB_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/lb"
fi
if [ ! -x "$LB_BIN" ]; then
    echo "proxy.sh: no lb binary at $LB_BIN; run 'cargo build --release' (or pass --lb PATH)" >&2
    exit 2
fi
NCPU=$(nproc)
if [ "$NCPU" -lt 2 ]; then
    echo "proxy.sh: needs at least 2 CPUs (proxy on CPU 0, load on CPU 1)" >&2
    exit 2
fi
# With more cores, give the load generator and the backends every core but the proxy's.
if [ "$NCPU" -gt 2 ]; then LOAD_CPU="1-$((NCPU - 1))"; fi

# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
bench_setup lb-bench
free_ports 10
B1=$BASE; B2=$((BASE + 1)); B1_H2=$((BASE + 2))
LB_HTTP=$((BASE + 3)); LB_GRPC=$((BASE + 4))
NGX_HTTP=$((BASE + 5)); NGX_H2=$((BASE + 6))
HAP_HTTP=$((BASE + 7)); HAP_H2=$((BASE + 8))

wait_http() { # port path expect-status [seconds]
    local deadline=$((SECONDS + ${4:-15})) line
    while [ $SECONDS -lt $deadline ]; do
        line=$( (exec 3<>"/dev/tcp/127.0.0.1/$1" &&
            printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$2" >&3 &&
            IFS= read -r -t 2 l <&3 && echo "$l") 2>/dev/null) || line=""
        case "$line" in "HTTP/1."?" $3"*) return 0 ;; esac
        sleep 0.1
    done
    echo "proxy.sh: 127.0.0.1:$1$2 did not answer $3 in time" >&2
    return 1
}

# ---------------------------------------------------------------- backends (CPU $LOAD_CPU)
mkdir -p "$TMP/b1" "$TMP/b2" "$TMP/ngx" "$TMP/hap" "$TMP/lb" "$TMP/runs" "$TMP/logs"
backend_conf() { # dir port [h2port]
    cat >"$1/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
error_log $1/error.log warn;
pid $1/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $1; proxy_temp_path $1; fastcgi_temp_path $1;
    uwsgi_temp_path $1; scgi_temp_path $1;
    keepalive_requests 1000000;
    default_type text/plain;
    server {
        listen 127.0.0.1:$2;
        ${3:+listen 127.0.0.1:$3 http2;}
        location / { return 200 "ok\n"; }
    }
}
EOF
}
backend_conf "$TMP/b1" "$B1" "$B1_H2"
backend_conf "$TMP/b2" "$B2"
taskset -c "$LOAD_CPU" nginx -p "$TMP/b1" -c "$TMP/b1/nginx.conf" 2>>"$TMP/b1/stderr" &
PIDS+=($!)
taskset -c "$LOAD_CPU" nginx -p "$TMP/b2" -c "$TMP/b2/nginx.conf" 2>>"$TMP/b2/stderr" &
PIDS+=($!)
wait_http "$B1" / 200
wait_http "$B2" / 200

# ---------------------------------------------------------------- proxies (CPU $PROXY_CPU)
if [ "$ACCESS_LOG" = 1 ]; then
    NGX_ACCESS="access_log $TMP/ngx/access.log;"
    HAP_LOG="log stderr format raw local0 info"
    HAP_HTTPLOG="option httplog"
    LB_LOG="${LB_RUST_LOG:-info}"
else
    NGX_ACCESS="access_log off;"
    HAP_LOG=""
    HAP_HTTPLOG="option dontlog-normal"
    LB_LOG="${LB_RUST_LOG:-info,lb::access=off}"
fi

# lb
cat >"$TMP/lb/lb.toml" <<EOF
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
RUST_LOG="$LB_LOG" taskset -c "$PROXY_CPU" "$LB_BIN" --config "$TMP/lb/lb.toml" \
    >"$TMP/logs/lb.stdout" 2>"$TMP/logs/lb.log" &
LB_PID=$!
PIDS+=($LB_PID)

# nginx as a reverse proxy
cat >"$TMP/ngx/nginx.conf" <<EOF
daemon off;
worker_processes 1;
error_log $TMP/ngx/error.log warn;
pid $TMP/ngx/nginx.pid;
events { worker_connections 4096; }
http {
    $NGX_ACCESS
    client_body_temp_path $TMP/ngx; proxy_temp_path $TMP/ngx; fastcgi_temp_path $TMP/ngx;
    uwsgi_temp_path $TMP/ngx; scgi_temp_path $TMP/ngx;
    keepalive_requests 1000000;
    upstream backends {
        server 127.0.0.1:$B1;
        server 127.0.0.1:$B2;
        keepalive 128;
    }
    server {
        listen 127.0.0.1:$NGX_HTTP;
        listen 127.0.0.1:$NGX_H2 http2;
        location / {
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
        }
    }
}
EOF
taskset -c "$PROXY_CPU" nginx -p "$TMP/ngx" -c "$TMP/ngx/nginx.conf" 2>>"$TMP/ngx/stderr" &
NGX_PID=$!
PIDS+=($NGX_PID)

# HAProxy
cat >"$TMP/hap/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 4096
    $HAP_LOG
defaults
    mode http
    log global
    $HAP_HTTPLOG
    option forwardfor
    http-reuse always
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 30s
frontend fe
    bind 127.0.0.1:$HAP_HTTP
    bind 127.0.0.1:$HAP_H2 proto h2
    default_backend be
backend be
    balance leastconn
    server b1 127.0.0.1:$B1
    server b2 127.0.0.1:$B2
EOF
taskset -c "$PROXY_CPU" haproxy -db -f "$TMP/hap/haproxy.cfg" \
    >"$TMP/hap/stdout" 2>"$TMP/hap/access.log" &
HAP_PID=$!
PIDS+=($HAP_PID)

wait_http "$LB_HTTP" / 200 20   # 200 only once a backend passed its first health check
wait_http "$NGX_HTTP" / 200
wait_http "$HAP_HTTP" / 200

# ---------------------------------------------------------------- measurement
# All processes of a proxy: the main pid and its children (nginx's worker).
proc_tree() {
    local pid=$1 child
    echo "$pid"
    for child in $(pgrep -P "$pid" 2>/dev/null || true); do echo "$child"; done
}
cpu_ticks() { # sum of utime+stime over the tree
    local total=0 pid t
    for pid in $(proc_tree "$1"); do
        t=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{print $12 + $13}') || t=0
        total=$((total + ${t:-0}))
    done
    echo "$total"
}
rss_kib() { # sum of VmRSS over the tree
    local total=0 pid r
    for pid in $(proc_tree "$1"); do
        r=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null) || r=0
        total=$((total + ${r:-0}))
    done
    echo "$total"
}
CLK_TCK=$(getconf CLK_TCK)

cat >"$TMP/report.lua" <<'EOF'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %.4f %.4f %d %d\n",
    summary.requests, summary.duration,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    e.status, e.connect + e.read + e.write + e.timeout))
end
EOF

RESULTS="$TMP/results.tsv"
: >"$RESULTS"

# One run: name proto pid(or -) port round
run_one() {
    local name=$1 proto=$2 pid=$3 port=$4 round=$5 out="$TMP/runs/$1-$2-$5"
    local t0=0 t1=0 reqs rps p50 p99 errs rss cpu
    [ "$pid" != - ] && t0=$(cpu_ticks "$pid")
    if [ "$proto" = h1 ]; then
        taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" --timeout 5s \
            -s "$TMP/report.lua" "http://127.0.0.1:$port/" >"$out" 2>&1 || true
        read -r reqs dur_us p50 p99 st sock < <(awk '/^RESULT/ {print $2, $3, $4, $5, $6, $7}' "$out")
        reqs=${reqs:-0}
        rps=$(awk -v r="$reqs" -v d="${dur_us:-1}" 'BEGIN {printf "%.0f", r / (d / 1e6)}')
        errs=$(( ${st:-0} + ${sock:-0} ))
    else
        taskset -c "$LOAD_CPU" h2load -c"$H2_CLIENTS" -m"$H2_STREAMS" -D"$DURATION" \
            --log-file="$out.log" "http://127.0.0.1:$port/" >"$out" 2>&1 || true
        reqs=$(awk '/^requests:/ {print $8}' "$out")   # succeeded
        reqs=${reqs:-0}
        rps=$(awk '/^finished in/ {gsub(",", "", $4); printf "%.0f", $4}' "$out")
        local failed non2xx
        failed=$(awk '/^requests:/ {print $10 + $12}' "$out")  # failed + errored
        non2xx=$(awk '/^status codes:/ {print $5 + $7 + $9}' "$out")
        errs=$(( ${failed:-0} + ${non2xx:-0} ))
        # p50/p99 from the per-request log (3rd column: microseconds to response end).
        read -r p50 p99 < <(awk '{print $3}' "$out.log" | sort -n | awk '
            {v[NR] = $1} END {
                if (NR == 0) {print "0 0"; exit}
                i50 = int(NR * 0.50); if (i50 < 1) i50 = 1
                i99 = int(NR * 0.99); if (i99 < 1) i99 = 1
                printf "%.4f %.4f\n", v[i50] / 1000, v[i99] / 1000 }')
        rm -f "$out.log"
    fi
    if [ "$pid" != - ]; then
        t1=$(cpu_ticks "$pid")
        rss=$(rss_kib "$pid")
        cpu=$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v r="$reqs" \
            'BEGIN {if (r > 0) printf "%.2f", d / hz * 1e6 / r; else print "nan"}')
    else
        rss=-; cpu=-
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
        "$name" "$proto" "$round" "$rps" "$p50" "$p99" "$errs" "$rss" "$cpu" >>"$RESULTS"
    printf '  %-8s %-3s round %s: %8s req/s  p50 %7.3f ms  p99 %7.3f ms  errors %s  rss %s KiB  cpu %s us/req\n' \
        "$name" "$proto" "$round" "$rps" "$p50" "$p99" "$errs" "$rss" "$cpu" >&2
}

TARGETS=("lb $LB_PID $LB_HTTP $LB_HTTP" "nginx $NGX_PID $NGX_HTTP $NGX_H2"
         "haproxy $HAP_PID $HAP_HTTP $HAP_H2" "direct - $B1 $B1_H2")

LB_IDLE_RSS=$(rss_kib "$LB_PID")
echo "proxy.sh: $ROUNDS rounds x ${DURATION}s, $CONNS connections (h1)," \
    "h2: $H2_CLIENTS x $H2_STREAMS streams; proxies on CPU $PROXY_CPU, load on CPU $LOAD_CPU;" \
    "access logs $([ "$ACCESS_LOG" = 1 ] && echo on || echo off)" >&2
# Warm-up: fill connection pools and caches, untimed.
for t in "${TARGETS[@]}"; do
    read -r _ _ port _ <<<"$t"
    taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d1s "http://127.0.0.1:$port/" >/dev/null 2>&1 || true
done
for round in $(seq 1 "$ROUNDS"); do
    for t in "${TARGETS[@]}"; do
        read -r name pid port h2port <<<"$t"
        case "$ONLY" in *",$name,"*) ;; *) continue ;; esac
        run_one "$name" h1 "$pid" "$port" "$round"
        if [ "$H2" = 1 ]; then run_one "$name" h2 "$pid" "$h2port" "$round"; fi
    done
done
LB_END_RSS=$(rss_kib "$LB_PID")

# ---------------------------------------------------------------- report
median() { sort -g | awk '{v[NR] = $1} END {if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
col() { awk -F'\t' -v n="$1" -v p="$2" -v c="$3" '$1 == n && $2 == p {print $c}' "$RESULTS" | median; }

echo
echo "Machine: $NCPU x $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), $(uname -sr); $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "Rounds: $ROUNDS x ${DURATION}s, interleaved; medians. Proxies pinned to CPU $PROXY_CPU (1 worker), wrk/h2load + 2 nginx backends on CPU $LOAD_CPU."
echo "h1: wrk -t1 -c$CONNS keep-alive; h2: h2load -c$H2_CLIENTS -m$H2_STREAMS (h2c prior knowledge). Access logs: $([ "$ACCESS_LOG" = 1 ] && echo on || echo off)."
echo
echo "| proxy | proto | req/s | p50 ms | p99 ms | errors | RSS MiB | CPU µs/req |"
echo "|---|---|---:|---:|---:|---:|---:|---:|"
PROTOS="h1"; [ "$H2" = 1 ] && PROTOS="h1 h2"
for proto in $PROTOS; do
    for name in lb nginx haproxy direct; do
        case "$ONLY" in *",$name,"*) ;; *) continue ;; esac
        rps=$(col "$name" "$proto" 4); p50=$(col "$name" "$proto" 5); p99=$(col "$name" "$proto" 6)
        errs=$(col "$name" "$proto" 7); rss=$(col "$name" "$proto" 8); cpu=$(col "$name" "$proto" 9)
        rss_mib=$(awk -v r="$rss" 'BEGIN {if (r == "nan" || r == "") print "-"; else printf "%.1f", r / 1024}')
        [ "$name" = direct ] && { rss_mib="-"; cpu="-"; }
        printf '| %s | %s | %.0f | %.2f | %.2f | %.0f | %s | %s |\n' \
            "$name" "$proto" "$rps" "$p50" "$p99" "$errs" "$rss_mib" "$cpu"
    done
done
echo
[ "$ONLY" = ",lb,nginx,haproxy,direct," ] && for proto in $PROTOS; do
    lb_rps=$(col lb "$proto" 4); lb_p99=$(col lb "$proto" 6)
    ngx_rps=$(col nginx "$proto" 4); hap_rps=$(col haproxy "$proto" 4)
    ngx_p99=$(col nginx "$proto" 6); hap_p99=$(col haproxy "$proto" 6)
    dir_rps=$(col direct "$proto" 4)
    awk -v p="$proto" -v l="$lb_rps" -v lp="$lb_p99" -v n="$ngx_rps" -v h="$hap_rps" \
        -v np="$ngx_p99" -v hp="$hap_p99" -v d="$dir_rps" 'BEGIN {
        best = (n >= h) ? "nginx" : "haproxy"; br = (n >= h) ? n : h; bp = (n >= h) ? np : hp
        printf "%s: lb vs best peer (%s): req/s x%.2f, p99 x%.2f; lb vs direct: req/s x%.2f\n",
            p, best, l / br, lp / bp, l / d }'
done
echo "lb RSS: $(awk -v r="$LB_IDLE_RSS" 'BEGIN {printf "%.1f", r / 1024}') MiB before the runs, $(awk -v r="$LB_END_RSS" 'BEGIN {printf "%.1f", r / 1024}') MiB after"
