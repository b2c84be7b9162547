#!/usr/bin/env bash
# bench/idle_memory.sh — memory per idle keep-alive HTTP/1.1 client connection: lb, nginx, HAProxy.
#
# Each proxy (one worker/thread) sits in front of one nginx backend. A client opens N
# connections, sends one request on each, reads its whole response and keeps the connection open
# and silent. The figure is (RSS with N idle connections - RSS before them) / N, RSS being
# VmRSS from /proc/PID/status summed over the proxy's processes.
#
#   bench/idle_memory.sh [--connections N] [--settle S] [--lb PATH] [--only lb,nginx,haproxy]
#                        [--keep]
#
# Needs python3 (the client), nginx (the backend); haproxy for its row. Installs nothing. Binds
# 127.0.0.1 only; everything lives in a temp dir removed on exit. Prints one line per proxy:
#   idle-memory <proxy> conns=N before_kib=B after_kib=A per_conn_kib=K
set -euo pipefail

CONNS=4000
SETTLE=2
KEEP=0
ONLY=",lb,nginx,haproxy,"
LB_BIN=""

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --connections) CONNS="$2"; shift 2 ;;
        --settle) SETTLE="$2"; shift 2 ;;
        --lb) LB_BIN="$2"; shift 2 ;;
        --only) ONLY=",$2,"; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "idle_memory.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done

for tool in python3 nginx; do
    command -v "$tool" >/dev/null 2>&1 || { echo "idle_memory.sh: missing: $tool" >&2; exit 2; }
done
if ! command -v haproxy >/dev/null 2>&1; then
    echo "idle_memory.sh: no haproxy; its row is skipped" >&2
    ONLY=${ONLY//,haproxy,/,}
fi
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
if [ -z "$LB_BIN" ]; then
    LB_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/lb"
fi
if [ ! -x "$LB_BIN" ]; then
    echo "idle_memory.sh: no lb binary at $LB_BIN; run 'cargo build --release' (or pass --lb PATH)" >&2
    exit 2
fi
# The client and the proxy each hold one descriptor per connection.
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((CONNS + 100)) ]; then
    ulimit -n $((CONNS + 100)) 2>/dev/null || {
        echo "idle_memory.sh: open-file limit $(ulimit -n) is below $CONNS connections" >&2
        exit 2
    }
fi

# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
bench_setup lb-idle-memory
free_ports 5
BACKEND=$BASE; LB_HTTP=$((BASE + 1)); LB_GRPC=$((BASE + 2))
NGX_HTTP=$((BASE + 3)); HAP_HTTP=$((BASE + 4))
mkdir -p "$TMP/b" "$TMP/ngx" "$TMP/hap" "$TMP/lb"

wait_http() { # port [seconds]
    local deadline=$((SECONDS + ${2:-15})) line
    while [ $SECONDS -lt $deadline ]; do
        line=$( (exec 3<>"/dev/tcp/127.0.0.1/$1" &&
            printf 'GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3 &&
            IFS= read -r -t 2 l <&3 && echo "$l") 2>/dev/null) || line=""
        case "$line" in "HTTP/1."?" 200"*) return 0 ;; esac
        sleep 0.1
    done
    echo "idle_memory.sh: 127.0.0.1:$1 did not answer 200 in time" >&2
    return 1
}
rss_kib() { # VmRSS summed over a pid and its children (nginx's worker)
    local total=0 pid r
    for pid in "$1" $(pgrep -P "$1" 2>/dev/null || true); do
        r=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null) || r=0
        total=$((total + ${r:-0}))
    done
    echo "$total"
}

# The backend: nginx answering "ok".
cat >"$TMP/b/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
error_log $TMP/b/error.log warn;
pid $TMP/b/nginx.pid;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $TMP/b; proxy_temp_path $TMP/b; fastcgi_temp_path $TMP/b;
    uwsgi_temp_path $TMP/b; scgi_temp_path $TMP/b;
    server { listen 127.0.0.1:$BACKEND; location / { return 200 "ok\n"; } }
}
EOF
nginx -p "$TMP/b" -c "$TMP/b/nginx.conf" 2>>"$TMP/b/stderr" &
PIDS+=($!)
wait_http "$BACKEND"

# The client: N connections, one request each, then silent until stdin closes.
cat >"$TMP/client.py" <<'EOF'
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
held = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            sys.exit("connection closed before the response head")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        sys.exit("unexpected response: %r" % head[:40])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = s.recv(4096)
        if not chunk:
            sys.exit("connection closed mid-body")
        body += chunk
    held.append(s)
print("READY", len(held), flush=True)
sys.stdin.read()
EOF

# Measures one proxy: name pid port.
measure() {
    local name=$1 pid=$2 port=$3 before after ready=""
    wait_http "$port" 20
    sleep "$SETTLE"
    before=$(rss_kib "$pid")
    mkfifo "$TMP/$name.hold"
    python3 "$TMP/client.py" "$port" "$CONNS" <"$TMP/$name.hold" >"$TMP/$name.client" &
    local client=$!
    exec 4>"$TMP/$name.hold"
    local deadline=$((SECONDS + 120))
    while [ $SECONDS -lt $deadline ] && kill -0 "$client" 2>/dev/null; do
        ready=$(cat "$TMP/$name.client")
        [ -n "$ready" ] && break
        sleep 0.2
    done
    if [ -z "$ready" ]; then
        echo "idle_memory.sh: $name: the client did not open $CONNS connections" >&2
        exec 4>&-
        return 1
    fi
    sleep "$SETTLE"
    after=$(rss_kib "$pid")
    exec 4>&-
    wait "$client" || true
    awk -v n="$name" -v c="$CONNS" -v b="$before" -v a="$after" 'BEGIN {
        printf "idle-memory %s conns=%d before_kib=%d after_kib=%d per_conn_kib=%.2f\n",
            n, c, b, a, (a - b) / c }'
}

case "$ONLY" in *,lb,*)
    cat >"$TMP/lb/lb.toml" <<EOF
[listen]
http = "127.0.0.1:$LB_HTTP"
grpc = "127.0.0.1:$LB_GRPC"

[server]
workers = 1
header_timeout = "60s"
idle_timeout = "60s"

[pools."/"]
interval = "10s"
health_checks = [{ url_path = "/", healthy_values = ["ok"] }]
backends = ["127.0.0.1:$BACKEND"]
EOF
    RUST_LOG="info,lb::access=off" "$LB_BIN" --config "$TMP/lb/lb.toml" \
        >"$TMP/lb/stdout" 2>"$TMP/lb/log" &
    LB_PID=$!
    PIDS+=($LB_PID)
    measure lb "$LB_PID" "$LB_HTTP"
    kill -TERM "$LB_PID" 2>/dev/null || true
    ;;
esac

case "$ONLY" in *,nginx,*)
    cat >"$TMP/ngx/nginx.conf" <<EOF
daemon off;
worker_processes 1;
worker_rlimit_nofile $((CONNS + 100));
error_log $TMP/ngx/error.log warn;
pid $TMP/ngx/nginx.pid;
events { worker_connections $((CONNS + 100)); }
http {
    access_log off;
    client_body_temp_path $TMP/ngx; proxy_temp_path $TMP/ngx; fastcgi_temp_path $TMP/ngx;
    uwsgi_temp_path $TMP/ngx; scgi_temp_path $TMP/ngx;
    upstream backends { server 127.0.0.1:$BACKEND; keepalive 32; }
    server {
        listen 127.0.0.1:$NGX_HTTP;
        location / {
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
    nginx -p "$TMP/ngx" -c "$TMP/ngx/nginx.conf" 2>>"$TMP/ngx/stderr" &
    NGX_PID=$!
    PIDS+=($NGX_PID)
    measure nginx "$NGX_PID" "$NGX_HTTP"
    kill -TERM "$NGX_PID" 2>/dev/null || true
    ;;
esac

case "$ONLY" in *,haproxy,*)
    cat >"$TMP/hap/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn $((CONNS + 100))
defaults
    mode http
    timeout connect 1s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
frontend fe
    bind 127.0.0.1:$HAP_HTTP
    default_backend be
backend be
    http-reuse always
    server b 127.0.0.1:$BACKEND
EOF
    haproxy -db -f "$TMP/hap/haproxy.cfg" >"$TMP/hap/stdout" 2>"$TMP/hap/stderr" &
    HAP_PID=$!
    PIDS+=($HAP_PID)
    measure haproxy "$HAP_PID" "$HAP_HTTP"
    kill -TERM "$HAP_PID" 2>/dev/null || true
    ;;
esac
