#!/usr/bin/env bash
# bench/https.sh — lb against nginx and HAProxy terminating TLS 1.3, on one core each.
#
# The layout of bench/proxy.sh: two nginx backends (one worker each, cleartext) sit on CPU 1
# with the load generators; every proxy runs pinned to CPU 0 with one worker/thread and its
# access log off. All three serve the same ECDSA P-256 self-signed certificate for bench.test
# (made with openssl in the temp dir), TLS 1.3 only, ALPN h2 and http/1.1. Rounds are
# interleaved (lb, nginx, haproxy, lb, ...) and the tables show medians over rounds with the
# spread (min-max).
#
#   bench/https.sh [--rounds N] [--duration S] [--idle-conns N] [--lb PATH]
#                  [--workloads LIST] [--only lb,nginx,haproxy] [--keep]
#
# Workloads (default h1,h2,conn,idle):
#   h1    GET over HTTPS keep-alive, HTTP/1.1, wrk, 64 connections
#   h2    GET over HTTPS, HTTP/2 (ALPN h2), h2load, 64 connections x 10 streams
#   conn  new TLS connections per second: GET with `Connection: close`, wrk, 32 connections;
#         every request is a full handshake (wrk resumes no session)
#   idle  memory per idle TLS connection: N connections (--idle-conns, 2000), one HTTP/1.1
#         request each, then idle: (RSS after - RSS before) / N, on freshly started proxies
# CPU per request (or per connection, for conn) is the proxy's utime + stime over the run
# divided by the requests answered.
#
# Needs: wrk nginx haproxy h2load openssl curl taskset python3 (Debian: wrk nginx haproxy
# nghttp2-client openssl curl util-linux python3). Installs nothing. Binds 127.0.0.1 only;
# everything lives in a temp dir removed on exit.
set -euo pipefail

ARGS="$*"
ROUNDS=2
DURATION=5
CONNS=64          # h1
H2_CLIENTS=64     # h2: 64 connections x 10 concurrent streams
H2_STREAMS=10
CONN_CLIENTS=32   # conn
IDLE_CONNS=2000
WORKLOADS="h1,h2,conn,idle"
KEEP=0
ONLY=",lb,nginx,haproxy,"
LB_BIN=""
PROXY_CPU=0
LOAD_CPU=1
ALL_WORKLOADS="h1,h2,conn,idle"

usage() { sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS="$2"; shift 2 ;;
        --duration) DURATION="$2"; shift 2 ;;
        --idle-conns) IDLE_CONNS="$2"; shift 2 ;;
        --lb) LB_BIN="$2"; shift 2 ;;
        --workloads) WORKLOADS="$2"; shift 2 ;;
        --only) ONLY=",$2,"; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "https.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done
for w in ${WORKLOADS//,/ }; do
    case ",$ALL_WORKLOADS," in *",$w,"*) ;;
        *) echo "https.sh: unknown workload: $w (known: $ALL_WORKLOADS)" >&2; exit 2 ;;
    esac
done
selected() { case ",$WORKLOADS," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
wanted() { case "$ONLY" in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

BENCH="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$BENCH/.." && pwd)"
# shellcheck source=bench/lib.sh
source "$BENCH/lib.sh"
require_tools https.sh "wrk nginx haproxy nghttp2-client openssl curl util-linux python3" \
    wrk nginx haproxy h2load openssl curl taskset python3
find_lb https.sh
split_cpus https.sh
MAXCONN=$((IDLE_CONNS + 1000)) # each proxy's connection limit
fd_limit_for https.sh "$MAXCONN"
bench_setup lb-https-bench

wait_https() { # port [seconds]: until GET / over TLS answers 200
    local deadline=$((SECONDS + ${2:-15}))
    while [ $SECONDS -lt $deadline ]; do
        [ "$(curl -sk --max-time 2 -o /dev/null -w '%{http_code}' \
            --resolve "bench.test:$1:127.0.0.1" "https://bench.test:$1/")" = 200 ] && return 0
        sleep 0.1
    done
    echo "https.sh: https://127.0.0.1:$1/ did not answer 200 in time" >&2
    return 1
}
wait_http() { # port
    local deadline=$((SECONDS + 15))
    while [ $SECONDS -lt $deadline ]; do
        [ "$(curl -s --max-time 2 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/")" = 200 ] &&
            return 0
        sleep 0.1
    done
    echo "https.sh: http://127.0.0.1:$1/ did not answer 200 in time" >&2
    return 1
}

# ---------------------------------------------------------------- certificate
CERT="$TMP/bench.test.pem"; KEY="$TMP/bench.test.key"; COMBINED="$TMP/bench.test.combined.pem"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=bench.test -addext subjectAltName=DNS:bench.test \
    -keyout "$KEY" -out "$CERT" 2>/dev/null
cat "$CERT" "$KEY" >"$COMBINED"
chmod 644 "$KEY" "$COMBINED" # nginx's worker may run as nobody; the key is a throwaway

# ---------------------------------------------------------------- backends (CPU $LOAD_CPU)
free_ports 2
B1=$BASE; B2=$((BASE + 1))
mkdir -p "$TMP/b1" "$TMP/b2" "$TMP/runs"
backend_conf() { # dir port
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
    default_type text/plain;
    server {
        listen 127.0.0.1:$2;
        location / { return 200 "ok\n"; }
    }
}
EOF
}
for b in 1 2; do
    port=$B1; [ $b = 2 ] && port=$B2
    backend_conf "$TMP/b$b" "$port"
    taskset -c "$LOAD_CPU" nginx -p "$TMP/b$b" -c "$TMP/b$b/nginx.conf" 2>>"$TMP/b$b/stderr" &
    PIDS+=($!)
done
wait_http "$B1"
wait_http "$B2"

# ---------------------------------------------------------------- proxies (CPU $PROXY_CPU)
# A set of the three proxies, named TAG. Records each proxy's pid and HTTPS port in
# PID[TAG.name] and PORT[TAG.name].
declare -A PID PORT
start_set() { # tag
    local tag=$1 dir="$TMP/$1"
    free_ports 5
    local lb_https=$BASE lb_grpc=$((BASE + 1)) ngx_https=$((BASE + 2)) hap_https=$((BASE + 3))
    local lb_http=$((BASE + 4))
    mkdir -p "$dir/lb" "$dir/ngx" "$dir/hap"
    chmod 711 "$TMP" "$dir"
    chmod 1777 "$dir/ngx"

    # The cleartext listener is on loopback too (unset, it would take 0.0.0.0:8080); unused.
    cat >"$dir/lb/lb.toml" <<EOF
[listen]
https = "127.0.0.1:$lb_https"
http = "127.0.0.1:$lb_http"
grpc = "127.0.0.1:$lb_grpc"

[server]
workers = 1
max_connections = $MAXCONN
header_timeout = "30s"
drain_timeout = "1s"

[log]
access = "off"

[tls]
min_version = "1.3"

[[tls.certificates]]
cert = "$CERT"
key = "$KEY"

[pools."/"]
interval = "10s"
health_checks = [{ url_path = "/", healthy_values = ["ok"] }]
backends = ["127.0.0.1:$B1", "127.0.0.1:$B2"]
EOF
    if wanted lb; then
        taskset -c "$PROXY_CPU" "$LB_BIN" --config "$dir/lb/lb.toml" \
            >"$dir/lb/stdout" 2>"$dir/lb/stderr" &
        PID[$tag.lb]=$!; PORT[$tag.lb]=$lb_https
        PIDS+=($!)
    fi

    # nginx 1.22 (Debian 12) takes `http2` on the listen line; newer ones also `http2 on;`.
    cat >"$dir/ngx/nginx.conf" <<EOF
daemon off;
worker_processes 1;
worker_rlimit_nofile $((2 * MAXCONN + 100));
error_log $dir/ngx/error.log warn;
pid $dir/ngx/nginx.pid;
events { worker_connections $((2 * MAXCONN)); }
http {
    access_log off;
    client_body_temp_path $dir/ngx; proxy_temp_path $dir/ngx; fastcgi_temp_path $dir/ngx;
    uwsgi_temp_path $dir/ngx; scgi_temp_path $dir/ngx;
    keepalive_requests 1000000;
    keepalive_timeout 30s;
    upstream backends {
        server 127.0.0.1:$B1;
        server 127.0.0.1:$B2;
        keepalive 128;
    }
    server {
        listen 127.0.0.1:$ngx_https ssl http2;
        server_name bench.test;
        ssl_certificate $CERT;
        ssl_certificate_key $KEY;
        ssl_protocols TLSv1.3;
        location / {
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto https;
        }
    }
}
EOF
    if wanted nginx; then
        taskset -c "$PROXY_CPU" nginx -p "$dir/ngx" -c "$dir/ngx/nginx.conf" \
            2>>"$dir/ngx/stderr" &
        PID[$tag.nginx]=$!; PORT[$tag.nginx]=$ngx_https
        PIDS+=($!)
    fi

    cat >"$dir/hap/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn $MAXCONN
defaults
    mode http
    option dontlog-normal
    option forwardfor
    http-reuse always
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 30s
frontend fe
    bind 127.0.0.1:$hap_https ssl crt $COMBINED alpn h2,http/1.1 ssl-min-ver TLSv1.3
    http-request set-header X-Forwarded-Proto https
    default_backend be
backend be
    balance leastconn
    server b1 127.0.0.1:$B1
    server b2 127.0.0.1:$B2
EOF
    if wanted haproxy; then
        taskset -c "$PROXY_CPU" haproxy -db -f "$dir/hap/haproxy.cfg" \
            >"$dir/hap/stdout" 2>"$dir/hap/stderr" &
        PID[$tag.haproxy]=$!; PORT[$tag.haproxy]=$hap_https
        PIDS+=($!)
    fi

    local name
    for name in lb nginx haproxy; do
        wanted "$name" && wait_https "${PORT[$tag.$name]}" 20
    done
    return 0
}

stop_set() { # tag
    local name pid
    for name in lb nginx haproxy; do
        wanted "$name" || continue
        pid=${PID[$1.$name]}
        kill -TERM "$pid" 2>/dev/null || true
        timeout 5 tail --pid="$pid" -f /dev/null 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    done
}

# ---------------------------------------------------------------- measurement
proc_tree() {
    local pid=$1 child
    echo "$pid"
    for child in $(pgrep -P "$pid" 2>/dev/null || true); do echo "$child"; done
}
cpu_ticks() {
    local total=0 pid t
    for pid in $(proc_tree "$1"); do
        t=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{print $12 + $13}') || t=0
        total=$((total + ${t:-0}))
    done
    echo "$total"
}
rss_kib() {
    local total=0 pid r
    for pid in $(proc_tree "$1"); do
        r=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null) || r=0
        total=$((total + ${r:-0}))
    done
    echo "$total"
}
CLK_TCK=$(getconf CLK_TCK)

cat >"$TMP/report.lua" <<'EOF'
wrk.headers["Host"] = "bench.test"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %.4f %.4f %d %d\n",
    summary.requests, summary.duration,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    e.status, e.connect + e.read + e.write + e.timeout))
end
EOF
{ echo 'wrk.headers["Connection"] = "close"'; cat "$TMP/report.lua"; } >"$TMP/close.lua"

RESULTS="$TMP/results.tsv"
IDLE_RESULTS="$TMP/idle.tsv"
: >"$RESULTS"; : >"$IDLE_RESULTS"

# One timed run: workload name pid port round
run_one() {
    local workload=$1 name=$2 pid=$3 port=$4 round=$5
    local out="$TMP/runs/$1-$2-$5" t0 t1 reqs rps p50 p99 errs cpu
    t0=$(cpu_ticks "$pid")
    if [ "$workload" = h2 ]; then
        taskset -c "$LOAD_CPU" h2load -c"$H2_CLIENTS" -m"$H2_STREAMS" -D"$DURATION" \
            --log-file="$out.log" "https://127.0.0.1:$port/" >"$out" 2>&1 || true
        grep -q 'Application protocol: h2' "$out" ||
            echo "https.sh: $name did not negotiate h2 (see $out)" >&2
        reqs=$(awk '/^requests:/ {print $8}' "$out"); reqs=${reqs:-0}
        rps=$(awk '/^finished in/ {gsub(",", "", $4); printf "%.0f", $4}' "$out")
        local failed non2xx
        failed=$(awk '/^requests:/ {print $10 + $12}' "$out")
        non2xx=$(awk '/^status codes:/ {print $5 + $7 + $9}' "$out")
        errs=$(( ${failed:-0} + ${non2xx:-0} ))
        read -r p50 p99 < <(awk '{print $3}' "$out.log" 2>/dev/null | sort -n | awk '
            {v[NR] = $1} END {
                if (NR == 0) {print "0 0"; exit}
                i50 = int(NR * 0.50); if (i50 < 1) i50 = 1
                i99 = int(NR * 0.99); if (i99 < 1) i99 = 1
                printf "%.4f %.4f\n", v[i50] / 1000, v[i99] / 1000 }')
        rm -f "$out.log"
    else
        local conns=$CONNS script="$TMP/report.lua"
        [ "$workload" = conn ] && { conns=$CONN_CLIENTS; script="$TMP/close.lua"; }
        taskset -c "$LOAD_CPU" wrk -t1 -c"$conns" -d"${DURATION}s" --timeout 5s \
            -s "$script" "https://127.0.0.1:$port/" >"$out" 2>&1 || true
        local dur_us st sock
        read -r reqs dur_us p50 p99 st sock < <(awk '/^RESULT/ {print $2, $3, $4, $5, $6, $7}' "$out")
        reqs=${reqs:-0}
        rps=$(awk -v r="$reqs" -v d="${dur_us:-1}" 'BEGIN {printf "%.0f", r / (d / 1e6)}')
        errs=$(( ${st:-0} + ${sock:-0} ))
    fi
    t1=$(cpu_ticks "$pid")
    cpu=$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v r="$reqs" \
        'BEGIN {if (r > 0) printf "%.2f", d / hz * 1e6 / r; else print "nan"}')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$workload" "$name" "$round" \
        "$rps" "${p50:-0}" "${p99:-0}" "$errs" "$cpu" >>"$RESULTS"
    printf '  %-5s %-8s round %s: %8s req/s  p50 %7.3f ms  p99 %7.3f ms  errors %s  cpu %s us/req\n' \
        "$workload" "$name" "$round" "$rps" "${p50:-0}" "${p99:-0}" "$errs" "$cpu" >&2
}

# Memory per idle TLS connection: name pid port round
idle_one() {
    local name=$1 pid=$2 port=$3 round=$4
    local out="$TMP/runs/idle-$1-$4" before after opened failed holder deadline
    before=$(rss_kib "$pid")
    : >"$out"
    taskset -c "$LOAD_CPU" python3 "$BENCH/idle_tls.py" "$port" "$IDLE_CONNS" >"$out" 2>&1 &
    holder=$!
    PIDS+=($holder)
    deadline=$((SECONDS + 90))
    while ! grep -q '^READY' "$out" && [ $SECONDS -lt $deadline ] && kill -0 "$holder" 2>/dev/null; do
        sleep 0.2
    done
    read -r _ opened failed < <(grep '^READY' "$out" || echo "READY 0 $IDLE_CONNS")
    sleep 1 # let the proxy settle (nginx's worker frees request pools after the answer)
    after=$(rss_kib "$pid")
    kill -TERM "$holder" 2>/dev/null || true
    wait "$holder" 2>/dev/null || true
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$round" "$before" "$after" "$opened" "$failed" \
        >>"$IDLE_RESULTS"
    printf '  idle  %-8s round %s: RSS %s -> %s KiB with %s idle TLS connections (%s failed)\n' \
        "$name" "$round" "$before" "$after" "$opened" "$failed" >&2
}

THROUGHPUT=()
for w in h1 h2 conn; do selected "$w" && THROUGHPUT+=("$w"); done

echo "https.sh: workloads $WORKLOADS; $ROUNDS rounds x ${DURATION}s;" \
    "proxies on CPU $PROXY_CPU, load on CPU $LOAD_CPU" >&2

if selected idle; then
    for round in $(seq 1 "$ROUNDS"); do
        start_set "idle$round"
        for name in lb nginx haproxy; do
            wanted "$name" || continue
            idle_one "$name" "${PID[idle$round.$name]}" "${PORT[idle$round.$name]}" "$round"
        done
        stop_set "idle$round"
    done
fi

if [ ${#THROUGHPUT[@]} -gt 0 ]; then
    start_set run
    for name in lb nginx haproxy; do # warm-up: backend connection pools, untimed
        wanted "$name" || continue
        taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d1s -s "$TMP/report.lua" \
            "https://127.0.0.1:${PORT[run.$name]}/" >/dev/null 2>&1 || true
    done
    for round in $(seq 1 "$ROUNDS"); do
        for workload in "${THROUGHPUT[@]}"; do
            for name in lb nginx haproxy; do
                wanted "$name" || continue
                run_one "$workload" "$name" "${PID[run.$name]}" "${PORT[run.$name]}" "$round"
            done
        done
    done
fi

# ---------------------------------------------------------------- report
median() { sort -g | awk '{v[NR] = $1} END {if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
spread() { sort -g | awk '{v[NR] = $1} END {if (NR == 0) print "-"; else printf "%.0f-%.0f", v[1], v[NR]}'; }
rows() { awk -F'\t' -v w="$1" -v n="$2" -v c="$3" '$1 == w && $2 == n {print $c}' "$RESULTS"; }
col() { rows "$@" | median; }

echo
echo "Command: bench/https.sh $ARGS"
echo "Machine: $NCPU x $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), $(uname -sr); load average $(cut -d' ' -f1-3 /proc/loadavg); $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "Rounds: $ROUNDS x ${DURATION}s, interleaved; medians, req/s spread min-max. Proxies pinned to CPU $PROXY_CPU (1 worker, access log off), wrk/h2load + 2 nginx backends on CPU $LOAD_CPU."
echo "TLS 1.3, ECDSA P-256 certificate, $(openssl version | cut -d' ' -f1-2) for nginx/HAProxy/clients. h1: wrk $CONNS keep-alive conns; h2: h2load $H2_CLIENTS conns x $H2_STREAMS streams; conn: wrk $CONN_CLIENTS conns, Connection: close (one full handshake per request)."
if [ ${#THROUGHPUT[@]} -gt 0 ]; then
    echo
    echo "| workload | proxy | req/s | spread | p50 ms | p99 ms | errors | CPU µs/req |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|"
    for workload in "${THROUGHPUT[@]}"; do
        for name in lb nginx haproxy; do
            wanted "$name" || continue
            printf '| %s | %s | %.0f | %s | %.2f | %.2f | %.0f | %s |\n' "$workload" "$name" \
                "$(col "$workload" "$name" 4)" "$(rows "$workload" "$name" 4 | spread)" \
                "$(col "$workload" "$name" 5)" "$(col "$workload" "$name" 6)" \
                "$(col "$workload" "$name" 7)" "$(col "$workload" "$name" 8)"
        done
    done
fi
if selected idle; then
    echo
    echo "Memory per idle TLS connection: $IDLE_CONNS connections, one HTTP/1.1 request each, then idle; (RSS after - RSS before) / connections, freshly started proxies, medians over rounds."
    echo
    echo "| proxy | RSS before MiB | RSS after MiB | KiB/conn | spread | failed |"
    echo "|---|---:|---:|---:|---:|---:|"
    for name in lb nginx haproxy; do
        wanted "$name" || continue
        awk -F'\t' -v n="$name" '
            $1 == n { k++; b[k] = $3; a[k] = $4; f += $6; per[k] = ($5 > 0) ? ($4 - $3) / $5 : 0 }
            function med(x, m,   i, j, t) {
                for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++)
                    if (x[j] < x[i]) { t = x[i]; x[i] = x[j]; x[j] = t }
                return (m % 2) ? x[(m + 1) / 2] : (x[m / 2] + x[m / 2 + 1]) / 2 }
            END {
                if (k == 0) exit
                mb = med(b, k); ma = med(a, k); mp = med(per, k)
                printf "| %s | %.1f | %.1f | %.2f | %.2f-%.2f | %d |\n",
                    n, mb / 1024, ma / 1024, mp, per[1], per[k], f }' "$IDLE_RESULTS"
    done
fi
