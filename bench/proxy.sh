#!/usr/bin/env bash
# bench/proxy.sh — lb against nginx, HAProxy and no proxy at all, on one core each.
#
# Two nginx backends (one worker each) sit on CPU 1 with the load generators; every proxy runs
# pinned to CPU 0 with one worker/thread. Rounds are interleaved (lb, nginx, haproxy, direct,
# lb, ...) and the tables show medians over rounds with the spread (min-max).
#
#   bench/proxy.sh [--rounds N] [--duration S] [--connections C] [--lb PATH]
#                  [--workloads LIST|all] [--logs on|off|both] [--idle-conns N]
#                  [--only lb,nginx,haproxy,direct] [--keep]
#
# Workloads (default h1,h2):
#   h1        GET, wrk, C keep-alive connections (64)
#   h2        GET, h2load, h2c prior knowledge, 16 connections x 4 streams
#   h1-c1000  GET, wrk, 1000 keep-alive connections
#   h1-canary GET as h1, against a second lb whose pool splits stable (backend 1) and a canary
#             (backend 2) at weight 10, sticky off: the cost of the split beside plain h1 (lb only)
#   h1-limit  GET as h1, against a second lb whose pool has a rate_limit far above the load
#             (1000000/s, burst 1000, key "ip"): the cost of the check beside plain h1 (lb only)
#   chunked   POST of 64 KiB in 16 chunks of 4 KiB (Transfer-Encoding: chunked), wrk, C conns
#   req1m     POST of a 1 MiB body (Content-Length), wrk, 16 connections
#   resp1m    GET of a 1 MiB response, wrk, 16 connections
#   h2-req1m  POST of a 1 MiB body over h2c, h2load, 16 connections x 1 stream
#   idle-h1   memory per idle HTTP/1.1 connection: N connections (--idle-conns, 2000), one
#             request each, then idle: (RSS after - RSS before) / N, on freshly started proxies
#   idle-h2   the same over h2c (one stream each)
#   slow-dl   memory per stalled download: 1000 connections ask for 1 MiB and stop reading after
#             the response head; (RSS after - RSS before) / 1000, on freshly started proxies
# --logs both runs each proxy twice, with its access log on (to a file) and off.
# nginx streams request and response bodies (proxy_request_buffering and proxy_buffering off
# for /upload and /1m); NGX_BUFFERING=on in the environment keeps its buffering defaults.
#
# Needs: wrk nginx haproxy h2load taskset python3 (Debian: wrk nginx haproxy nghttp2-client
# util-linux python3). Installs nothing. Binds 127.0.0.1 only; everything lives in a temp dir
# removed on exit.
set -euo pipefail

ARGS="$*"
ROUNDS=3
DURATION=5
CONNS=64
BIG_CONNS=16    # req1m and resp1m
MANY_CONNS=1000 # h1-c1000
H2_CLIENTS=16   # h2load: 16 connections x 4 concurrent streams = 64 requests in flight
H2_STREAMS=4
IDLE_CONNS=2000
WORKLOADS="h1,h2"
LOGS="both"
KEEP=0
ONLY=",lb,nginx,haproxy,direct,"
LB_BIN=""
PROXY_CPU=0
LOAD_CPU=1
ALL_WORKLOADS="h1,h2,h1-c1000,h1-canary,h1-limit,chunked,req1m,resp1m,h2-req1m,idle-h1,idle-h2,slow-dl"

usage() { sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS="$2"; shift 2 ;;
        --duration) DURATION="$2"; shift 2 ;;
        --connections) CONNS="$2"; shift 2 ;;
        --lb) LB_BIN="$2"; shift 2 ;;
        --workloads) WORKLOADS="$2"; shift 2 ;;
        --logs) LOGS="$2"; shift 2 ;;
        --idle-conns) IDLE_CONNS="$2"; shift 2 ;;
        --no-h2) WORKLOADS="h1"; shift ;;
        --no-access-log) LOGS="off"; shift ;;
        --keep) KEEP=1; shift ;;
        --only) ONLY=",$2,"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "proxy.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done
[ "$WORKLOADS" = all ] && WORKLOADS="$ALL_WORKLOADS"
for w in ${WORKLOADS//,/ }; do
    case ",$ALL_WORKLOADS," in *",$w,"*) ;;
        *) echo "proxy.sh: unknown workload: $w (known: $ALL_WORKLOADS)" >&2; exit 2 ;;
    esac
done
case "$LOGS" in
    on|off) LOG_SETTINGS="$LOGS" ;;
    both) LOG_SETTINGS="off on" ;;
    *) echo "proxy.sh: --logs takes on, off or both" >&2; exit 2 ;;
esac
selected() { case ",$WORKLOADS," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
wanted() { case "$ONLY" in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

BENCH="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$BENCH/.." && pwd)"
# shellcheck source=bench/lib.sh
source "$BENCH/lib.sh"
require_tools proxy.sh "wrk nginx haproxy nghttp2-client util-linux python3" \
    wrk nginx haproxy h2load taskset python3
find_lb proxy.sh
split_cpus proxy.sh
# Idle connections, the 1000-connection runs and the proxies' backend connections need fds.
MAXCONN=$((IDLE_CONNS + 1000)) # each proxy's connection limit
fd_limit_for proxy.sh "$MAXCONN"
bench_setup lb-bench

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
free_ports 3
B1=$BASE; B2=$((BASE + 1)); B1_H2=$((BASE + 2))
mkdir -p "$TMP/b1" "$TMP/b2" "$TMP/runs"
head -c 1048576 /dev/zero >"$TMP/1m.bin"
backend_conf() { # dir port [h2port]
    cat >"$1/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 8192;
error_log $1/error.log warn;
pid $1/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $1; proxy_temp_path $1; fastcgi_temp_path $1;
    uwsgi_temp_path $1; scgi_temp_path $1;
    keepalive_requests 1000000;
    client_max_body_size 0;
    sendfile on;
    default_type text/plain;
    upstream self$2 { server 127.0.0.1:$2; keepalive 64; }
    server {
        listen 127.0.0.1:$2;
        ${3:+listen 127.0.0.1:$3 http2;}
        location / { return 200 "ok\n"; }
        location = /1m { alias $TMP/1m.bin; }
        # An upload is read whole (in memory) before the answer, which comes from / by way of
        # a bodiless request to this same server: \`return\` alone answers before the body is in.
        location /upload {
            client_body_buffer_size 2m;
            proxy_pass http://self$2/;
            proxy_http_version 1.1;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header Transfer-Encoding "";
            proxy_set_header Connection "";
        }
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
wait_http "$B1" /1m 200

# ---------------------------------------------------------------- proxies (CPU $PROXY_CPU)
# A set of the three proxies, named TAG, with access logs LOG (on|off). Records each proxy's
# pid, HTTP/1.1 port and h2c port in PID[TAG.name], PORT[TAG.name], H2PORT[TAG.name].
declare -A PID PORT H2PORT
start_set() { # tag log
    local tag=$1 log=$2 dir="$TMP/$1" ngx_access hap_log hap_httplog lb_access
    # nginx streams /upload and /1m bodies, as lb (past 64 KiB) and HAProxy do, rather than
    # buffering them through temp files; NGX_BUFFERING=on keeps nginx's default buffering.
    local ngx_buffering=${NGX_BUFFERING:-off}
    free_ports 6
    local lb_http=$BASE lb_grpc=$((BASE + 1)) ngx_http=$((BASE + 2)) ngx_h2=$((BASE + 3))
    local hap_http=$((BASE + 4)) hap_h2=$((BASE + 5))
    mkdir -p "$dir/lb" "$dir/ngx" "$dir/hap"
    # nginx's worker may run as another user (nobody, when started as root): its temp files
    # (request bodies and responses it buffers) go in $dir/ngx.
    chmod 711 "$TMP" "$dir"
    chmod 1777 "$dir/ngx"
    if [ "$log" = on ]; then
        ngx_access="access_log $dir/ngx/access.log;"
        hap_log="log stderr format raw local0 info"
        hap_httplog="option httplog"
        lb_access="$dir/lb/access.log"
    else
        ngx_access="access_log off;"
        hap_log=""
        hap_httplog="option dontlog-normal"
        lb_access="off"
    fi

    cat >"$dir/lb/lb.toml" <<EOF
[listen]
http = "127.0.0.1:$lb_http"
grpc = "127.0.0.1:$lb_grpc"

[server]
workers = 1
max_connections = $MAXCONN
header_timeout = "30s"
drain_timeout = "1s"

[log]
access = "$lb_access"

[pools."/"]
interval = "10s"
health_checks = [{ url_path = "/", healthy_values = ["ok"] }]
backends = ["127.0.0.1:$B1", "127.0.0.1:$B2"]
EOF
    taskset -c "$PROXY_CPU" "$LB_BIN" --config "$dir/lb/lb.toml" \
        >"$dir/lb/stdout" 2>"$dir/lb/stderr" &
    PID[$tag.lb]=$!; PORT[$tag.lb]=$lb_http; H2PORT[$tag.lb]=$lb_http
    PIDS+=($!)

    if selected h1-canary; then
        # The same lb with the pool's second backend as a canary at weight 10.
        free_ports 2
        mkdir -p "$dir/lbc"
        sed -e "s/127.0.0.1:$lb_http\"/127.0.0.1:$BASE\"/" -e "s/127.0.0.1:$lb_grpc\"/127.0.0.1:$((BASE + 1))\"/" \
            -e "s|$dir/lb/access.log|$dir/lbc/access.log|" \
            -e "s/^backends = .*/backends = [\"127.0.0.1:$B1\"]/" "$dir/lb/lb.toml" >"$dir/lbc/lb.toml"
        printf '\n[pools."/".canary]\nbackends = ["127.0.0.1:%s"]\nweight = 10\n' "$B2" >>"$dir/lbc/lb.toml"
        taskset -c "$PROXY_CPU" "$LB_BIN" --config "$dir/lbc/lb.toml" \
            >"$dir/lbc/stdout" 2>"$dir/lbc/stderr" &
        PID[$tag.lbc]=$!; PORT[$tag.lbc]=$BASE; H2PORT[$tag.lbc]=$BASE
        PIDS+=($!)
    fi
    if selected h1-limit; then
        # The same lb with a rate limit on the pool that the load never reaches (every request
        # comes from 127.0.0.1: one key, one bucket).
        free_ports 2
        mkdir -p "$dir/lbl"
        sed -e "s/127.0.0.1:$lb_http\"/127.0.0.1:$BASE\"/" -e "s/127.0.0.1:$lb_grpc\"/127.0.0.1:$((BASE + 1))\"/" \
            -e "s|$dir/lb/access.log|$dir/lbl/access.log|" "$dir/lb/lb.toml" >"$dir/lbl/lb.toml"
        printf 'rate_limit = { requests_per_second = 1000000, burst = 1000, key = "ip" }\n' >>"$dir/lbl/lb.toml"
        taskset -c "$PROXY_CPU" "$LB_BIN" --config "$dir/lbl/lb.toml" \
            >"$dir/lbl/stdout" 2>"$dir/lbl/stderr" &
        PID[$tag.lbl]=$!; PORT[$tag.lbl]=$BASE; H2PORT[$tag.lbl]=$BASE
        PIDS+=($!)
    fi

    cat >"$dir/ngx/nginx.conf" <<EOF
daemon off;
worker_processes 1;
worker_rlimit_nofile $((2 * MAXCONN + 100));
error_log $dir/ngx/error.log warn;
pid $dir/ngx/nginx.pid;
events { worker_connections $((2 * MAXCONN)); }
http {
    $ngx_access
    client_body_temp_path $dir/ngx; proxy_temp_path $dir/ngx; fastcgi_temp_path $dir/ngx;
    uwsgi_temp_path $dir/ngx; scgi_temp_path $dir/ngx;
    keepalive_requests 1000000;
    keepalive_timeout 30s;
    client_max_body_size 0;
    upstream backends {
        server 127.0.0.1:$B1;
        server 127.0.0.1:$B2;
        keepalive 128;
    }
    server {
        listen 127.0.0.1:$ngx_http;
        listen 127.0.0.1:$ngx_h2 http2;
        location / {
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
        }
        location /upload {
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_request_buffering $ngx_buffering;
        }
        location = /1m {
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_buffering $ngx_buffering;
        }
    }
}
EOF
    taskset -c "$PROXY_CPU" nginx -p "$dir/ngx" -c "$dir/ngx/nginx.conf" \
        2>>"$dir/ngx/stderr" &
    PID[$tag.nginx]=$!; PORT[$tag.nginx]=$ngx_http; H2PORT[$tag.nginx]=$ngx_h2
    PIDS+=($!)

    cat >"$dir/hap/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn $MAXCONN
    $hap_log
defaults
    mode http
    log global
    $hap_httplog
    option forwardfor
    http-reuse always
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 30s
frontend fe
    bind 127.0.0.1:$hap_http
    bind 127.0.0.1:$hap_h2 proto h2
    default_backend be
backend be
    balance leastconn
    server b1 127.0.0.1:$B1
    server b2 127.0.0.1:$B2
EOF
    taskset -c "$PROXY_CPU" haproxy -db -f "$dir/hap/haproxy.cfg" \
        >"$dir/hap/stdout" 2>"$dir/hap/access.log" &
    PID[$tag.haproxy]=$!; PORT[$tag.haproxy]=$hap_http; H2PORT[$tag.haproxy]=$hap_h2
    PIDS+=($!)

    wait_http "$lb_http" / 200 20   # 200 only once a backend passed its first health check
    wait_http "$ngx_http" / 200
    wait_http "$hap_http" / 200
    if selected h1-canary; then wait_http "${PORT[$tag.lbc]}" / 200 20; fi
    if selected h1-limit; then wait_http "${PORT[$tag.lbl]}" / 200 20; fi
}

stop_set() { # tag
    local name pid
    for name in lb lbc lbl nginx haproxy; do
        pid=${PID[$1.$name]:-}
        [ -n "$pid" ] || continue
        kill -TERM "$pid" 2>/dev/null || true
        # Bounded: lb drains for at most its drain_timeout (1 s).
        timeout 5 tail --pid="$pid" -f /dev/null 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    done
}

PID[direct]=-; PORT[direct]=$B1; H2PORT[direct]=$B1_H2

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
# chunked: 16 chunks of 4 KiB. The request is written whole here, as wrk's own formatting would
# add a Content-Length.
{ cat <<'EOF'
local chunk = string.rep("a", 4096)
local parts = {}
for i = 1, 16 do parts[#parts + 1] = string.format("%x\r\n%s\r\n", #chunk, chunk) end
local upload = "POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\n" ..
  "Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n" ..
  table.concat(parts) .. "0\r\n\r\n"
request = function() return upload end
EOF
  cat "$TMP/report.lua"; } >"$TMP/chunked.lua"
{ cat <<'EOF'
wrk.method = "POST"
wrk.path = "/upload"
wrk.headers["Content-Type"] = "application/octet-stream"
wrk.body = string.rep("a", 1048576)
EOF
  cat "$TMP/report.lua"; } >"$TMP/req1m.lua"

RESULTS="$TMP/results.tsv"
IDLE_RESULTS="$TMP/idle.tsv"
: >"$RESULTS"
: >"$IDLE_RESULTS"

# One run: workload log name pid(or -) port h2port round
run_one() {
    local workload=$1 log=$2 name=$3 pid=$4 port=$5 h2port=$6 round=$7
    local out="$TMP/runs/$1-$2-$3-$7" t0=0 t1=0 reqs rps p50 p99 errs rss cpu
    local script="$TMP/report.lua" conns=$CONNS path=/
    [ "$pid" != - ] && t0=$(cpu_ticks "$pid")
    if [ "$workload" = h2 ] || [ "$workload" = h2-req1m ]; then
        local h2args=(-c"$H2_CLIENTS" -m"$H2_STREAMS") url="http://127.0.0.1:$h2port/"
        [ "$workload" = h2-req1m ] && { h2args=(-c"$BIG_CONNS" -m1 -d "$TMP/1m.bin"); url+=upload; }
        taskset -c "$LOAD_CPU" h2load "${h2args[@]}" -D"$DURATION" \
            --log-file="$out.log" "$url" >"$out" 2>&1 || true
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
    else
        case "$workload" in
            h1-c1000) conns=$MANY_CONNS ;;
            chunked) script="$TMP/chunked.lua" ;;
            req1m) script="$TMP/req1m.lua"; conns=$BIG_CONNS ;;
            resp1m) path=/1m; conns=$BIG_CONNS ;;
        esac
        taskset -c "$LOAD_CPU" wrk -t1 -c"$conns" -d"${DURATION}s" --timeout 5s \
            -s "$script" "http://127.0.0.1:$port$path" >"$out" 2>&1 || true
        read -r reqs dur_us p50 p99 st sock < <(awk '/^RESULT/ {print $2, $3, $4, $5, $6, $7}' "$out")
        reqs=${reqs:-0}
        rps=$(awk -v r="$reqs" -v d="${dur_us:-1}" 'BEGIN {printf "%.0f", r / (d / 1e6)}')
        errs=$(( ${st:-0} + ${sock:-0} ))
    fi
    if [ "$pid" != - ]; then
        t1=$(cpu_ticks "$pid")
        rss=$(rss_kib "$pid")
        cpu=$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v r="$reqs" \
            'BEGIN {if (r > 0) printf "%.2f", d / hz * 1e6 / r; else print "nan"}')
    else
        rss=-; cpu=-
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$workload" "$log" "$name" "$round" \
        "$rps" "${p50:-0}" "${p99:-0}" "$errs" "$rss" "$cpu" >>"$RESULTS"
    printf '  %-8s %-4s %-3s %-8s round %s: %8s req/s  p50 %7.3f ms  p99 %7.3f ms  errors %s  rss %s KiB  cpu %s us/req\n' \
        "$workload" "logs" "$log" "$name" "$round" "$rps" "${p50:-0}" "${p99:-0}" "$errs" "$rss" "$cpu" >&2
}

# Memory per idle connection: workload (idle-h1|idle-h2|slow-dl) log name pid port round
idle_one() {
    local workload=$1 log=$2 name=$3 pid=$4 port=$5 round=$6 proto=${1#idle-} count=$IDLE_CONNS
    local out="$TMP/runs/$1-$2-$3-$6" before after opened failed holder deadline
    [ "$workload" = slow-dl ] && { proto=h1-slow; count=$MANY_CONNS; }
    before=$(rss_kib "$pid")
    taskset -c "$LOAD_CPU" python3 "$BENCH/idle_conns.py" "$port" "$count" "$proto" \
        >"$out" 2>&1 &
    holder=$!
    PIDS+=($holder)
    deadline=$((SECONDS + 90))
    while ! grep -q '^READY' "$out" && [ $SECONDS -lt $deadline ] && kill -0 "$holder" 2>/dev/null; do
        sleep 0.2
    done
    read -r _ opened failed < <(grep '^READY' "$out" || echo "READY 0 $count")
    sleep 1 # let the proxy settle (nginx's worker frees request pools after the answer)
    after=$(rss_kib "$pid")
    kill -TERM "$holder" 2>/dev/null || true
    wait "$holder" 2>/dev/null || true
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$workload" "$log" "$name" "$round" \
        "$before" "$after" "$opened" "$failed" >>"$IDLE_RESULTS"
    printf '  %-8s logs %-3s %-8s round %s: RSS %s -> %s KiB with %s idle connections (%s failed)\n' \
        "$workload" "$log" "$name" "$round" "$before" "$after" "$opened" "$failed" >&2
}

THROUGHPUT=()
for w in ${WORKLOADS//,/ }; do case "$w" in idle-*|slow-dl) ;; *) THROUGHPUT+=("$w") ;; esac; done
IDLE=()
for w in ${WORKLOADS//,/ }; do case "$w" in idle-*|slow-dl) IDLE+=("$w") ;; esac; done

echo "proxy.sh: workloads $WORKLOADS; access logs $LOGS; $ROUNDS rounds x ${DURATION}s;" \
    "proxies on CPU $PROXY_CPU, load on CPU $LOAD_CPU" >&2

# Idle connections first, each on freshly started proxies so memory freed by earlier runs
# does not hide the growth.
for round in $(seq 1 "$ROUNDS"); do
    for workload in "${IDLE[@]}"; do
        for log in $LOG_SETTINGS; do
            start_set "idle$round$workload$log" "$log"
            for name in lb nginx haproxy; do
                wanted "$name" || continue
                tag="idle$round$workload$log.$name"
                port=${PORT[$tag]}; [ "$workload" = idle-h2 ] && port=${H2PORT[$tag]}
                idle_one "$workload" "$log" "$name" "${PID[$tag]}" "$port" "$round"
            done
            stop_set "idle$round$workload$log"
        done
    done
done

if [ ${#THROUGHPUT[@]} -gt 0 ]; then
    TARGETS=()
    for log in $LOG_SETTINGS; do
        start_set "$log" "$log"
        for name in lb nginx haproxy; do TARGETS+=("$log $name $log.$name"); done
    done
    TARGETS+=("- direct direct")
    # Warm-up: fill connection pools and caches, untimed.
    for t in "${TARGETS[@]}"; do
        read -r _ _ key <<<"$t"
        taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d1s "http://127.0.0.1:${PORT[$key]}/" \
            >/dev/null 2>&1 || true
    done
    for round in $(seq 1 "$ROUNDS"); do
        for workload in "${THROUGHPUT[@]}"; do
            for t in "${TARGETS[@]}"; do
                read -r log name key <<<"$t"
                wanted "$name" || continue
                if [ "$workload" = h1-canary ]; then
                    # lb only, on the lb with the canary.
                    [ "$name" = lb ] || continue
                    key="$log.lbc"
                fi
                if [ "$workload" = h1-limit ]; then
                    # lb only, on the lb with the rate limit.
                    [ "$name" = lb ] || continue
                    key="$log.lbl"
                fi
                run_one "$workload" "$log" "$name" "${PID[$key]}" "${PORT[$key]}" \
                    "${H2PORT[$key]}" "$round"
            done
        done
    done
fi

# ---------------------------------------------------------------- report
median() { sort -g | awk '{v[NR] = $1} END {if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
spread() { sort -g | awk '{v[NR] = $1} END {if (NR == 0) print "-"; else printf "%.0f-%.0f", v[1], v[NR]}'; }
rows() { awk -F'\t' -v w="$1" -v l="$2" -v n="$3" -v c="$4" \
    '$1 == w && $2 == l && $3 == n {print $c}' "$RESULTS"; }
col() { rows "$@" | median; }

echo
echo "Command: bench/proxy.sh $ARGS"
echo "Machine: $NCPU x $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), $(uname -sr); $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "Rounds: $ROUNDS x ${DURATION}s, interleaved; medians, req/s spread min-max. Proxies pinned to CPU $PROXY_CPU (1 worker), wrk/h2load + 2 nginx backends on CPU $LOAD_CPU."
echo "Connections: h1 and chunked $CONNS (wrk -t1), h2 $H2_CLIENTS x $H2_STREAMS streams (h2load, h2c), h1-c1000 $MANY_CONNS, req1m/resp1m/h2-req1m $BIG_CONNS."
if [ ${#THROUGHPUT[@]} -gt 0 ]; then
    echo
    echo "| workload | logs | proxy | req/s | spread | p50 ms | p99 ms | errors | RSS MiB | CPU µs/req |"
    echo "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"
    for workload in "${THROUGHPUT[@]}"; do
        for t in "${TARGETS[@]}"; do
            read -r log name _ <<<"$t"
            wanted "$name" || continue
            rps=$(col "$workload" "$log" "$name" 5); sp=$(rows "$workload" "$log" "$name" 5 | spread)
            p50=$(col "$workload" "$log" "$name" 6); p99=$(col "$workload" "$log" "$name" 7)
            errs=$(col "$workload" "$log" "$name" 8); rss=$(col "$workload" "$log" "$name" 9)
            cpu=$(col "$workload" "$log" "$name" 10)
            rss_mib=$(awk -v r="$rss" 'BEGIN {if (r == "nan" || r == "") print "-"; else printf "%.1f", r / 1024}')
            [ "$name" = direct ] && { rss_mib="-"; cpu="-"; }
            printf '| %s | %s | %s | %.0f | %s | %.2f | %.2f | %.0f | %s | %s |\n' "$workload" \
                "$log" "$name" "$rps" "$sp" "$p50" "$p99" "$errs" "$rss_mib" "$cpu"
        done
    done
    echo
    if wanted lb && wanted nginx && wanted haproxy; then
        for workload in "${THROUGHPUT[@]}"; do
            case "$workload" in h1-canary|h1-limit) continue ;; esac # lb only: compared with h1 below
            for log in $LOG_SETTINGS; do
                awk -v w="$workload" -v g="$log" \
                    -v l="$(col "$workload" "$log" lb 5)" -v lp="$(col "$workload" "$log" lb 7)" \
                    -v lc="$(col "$workload" "$log" lb 10)" \
                    -v n="$(col "$workload" "$log" nginx 5)" -v np="$(col "$workload" "$log" nginx 7)" \
                    -v nc="$(col "$workload" "$log" nginx 10)" \
                    -v h="$(col "$workload" "$log" haproxy 5)" -v hp="$(col "$workload" "$log" haproxy 7)" \
                    -v hc="$(col "$workload" "$log" haproxy 10)" 'BEGIN {
                    best = (n >= h) ? "nginx" : "haproxy"; br = (n >= h) ? n : h; bp = (n >= h) ? np : hp
                    bc = (nc <= hc) ? nc : hc
                    printf "%s, logs %s: lb vs best peer (%s): req/s x%.2f, p99 x%.2f; CPU/req x%.2f the leaner peer\n",
                        w, g, best, l / br, lp / bp, lc / bc }'
            done
        done
    fi
    if selected h1-canary && selected h1 && wanted lb; then
        for log in $LOG_SETTINGS; do
            awk -v g="$log" -v c="$(col h1-canary "$log" lb 10)" -v p="$(col h1 "$log" lb 10)" \
                -v cr="$(col h1-canary "$log" lb 5)" -v pr="$(col h1 "$log" lb 5)" 'BEGIN {
                if (p > 0 && pr > 0) printf "h1-canary, logs %s: lb with a weight-10 canary vs plain h1: CPU/req x%.3f, req/s x%.3f\n", g, c / p, cr / pr }'
        done
    fi
    if selected h1-limit && selected h1 && wanted lb; then
        for log in $LOG_SETTINGS; do
            awk -v g="$log" -v c="$(col h1-limit "$log" lb 10)" -v p="$(col h1 "$log" lb 10)" \
                -v cr="$(col h1-limit "$log" lb 5)" -v pr="$(col h1 "$log" lb 5)" 'BEGIN {
                if (p > 0 && pr > 0) printf "h1-limit, logs %s: lb with a rate limit above the load vs plain h1: CPU/req x%.3f, req/s x%.3f\n", g, c / p, cr / pr }'
        done
    fi
fi
if [ ${#IDLE[@]} -gt 0 ]; then
    echo
    echo "Memory per idle connection: $IDLE_CONNS connections, one request each, then idle (slow-dl: $MANY_CONNS stalled 1 MiB downloads); (RSS after - RSS before) / connections, freshly started proxies, medians over rounds."
    echo
    echo "| workload | logs | proxy | RSS before MiB | RSS after MiB | KiB/conn | spread | failed |"
    echo "|---|---|---|---:|---:|---:|---:|---:|"
    for workload in "${IDLE[@]}"; do
        for log in $LOG_SETTINGS; do
            for name in lb nginx haproxy; do
                wanted "$name" || continue
                awk -F'\t' -v w="$workload" -v l="$log" -v n="$name" '
                    $1 == w && $2 == l && $3 == n {
                        k++; b[k] = $5; a[k] = $6; f += $8
                        per[k] = ($7 > 0) ? ($6 - $5) / $7 : 0 }
                    function med(x, m,   i, j, t) {
                        for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++)
                            if (x[j] < x[i]) { t = x[i]; x[i] = x[j]; x[j] = t }
                        return (m % 2) ? x[(m + 1) / 2] : (x[m / 2] + x[m / 2 + 1]) / 2 }
                    END {
                        if (k == 0) exit
                        mb = med(b, k); ma = med(a, k); mp = med(per, k)
                        printf "| %s | %s | %s | %.1f | %.1f | %.2f | %.2f-%.2f | %d |\n",
                            w, l, n, mb / 1024, ma / 1024, mp, per[1], per[k], f }' "$IDLE_RESULTS"
            done
        done
    done
fi
