# Shared by the bench scripts (sourced, not run): a work directory that is removed with every
# process the script started, and a run of free loopback ports. The caller sets KEEP (1 keeps
# the work directory) and appends the PIDs it starts to PIDS.

# Makes $TMP (named after $1) and arranges for cleanup on exit or interrupt.
bench_setup() {
    TMP=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
    PIDS=()
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
}

bench_cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    sleep 0.3
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    if [ "$KEEP" = 1 ]; then echo "kept $TMP" >&2; else rm -rf "$TMP"; fi
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Sets BASE to the first of $1 consecutive free loopback ports, from a random start below the
# kernel's ephemeral range: thousands of idle clients and the proxies' backend connections hold
# ephemeral ports, and a listener cannot bind one of those.
EPHEMERAL_LOW=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
free_ports() {
    local n=$1 ok i
    BASE=$((10000 + RANDOM % (EPHEMERAL_LOW > 11000 ? EPHEMERAL_LOW - 11000 : 1000)))
    while :; do
        ok=1
        for ((i = 0; i < n; i++)); do port_free $((BASE + i)) || { ok=0; break; }; done
        [ "$ok" = 1 ] && return 0
        BASE=$((BASE + n))
    done
}

# The checks the proxy benches share, each exiting 2 with what to do. $1 names the script in
# messages.

# Every tool named after $1 and the Debian packages to install ($2) is on PATH.
require_tools() {
    local name=$1 packages=$2 tool missing=()
    shift 2
    for tool in "$@"; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "$name: missing: ${missing[*]}" >&2
        echo "install them with:" >&2
        echo "  sudo apt-get install $packages" >&2
        exit 2
    fi
}

# Sets LB_BIN (when empty) to the release build under ROOT, and checks it is there.
find_lb() {
    [ -n "$LB_BIN" ] || LB_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/lb"
    if [ ! -x "$LB_BIN" ]; then
        echo "$1: no lb binary at $LB_BIN; run 'cargo build --release' (or pass --lb PATH)" >&2
        exit 2
    fi
}

# At least two CPUs (NCPU): the proxy on CPU 0, the load on the rest (LOAD_CPU, every core
# but the proxy's).
split_cpus() {
    NCPU=$(nproc)
    if [ "$NCPU" -lt 2 ]; then
        echo "$1: needs at least 2 CPUs (proxy on CPU 0, load on CPU 1)" >&2
        exit 2
    fi
    if [ "$NCPU" -gt 2 ]; then LOAD_CPU="1-$((NCPU - 1))"; fi
}

# Raises the fd limit to the hard one; it must hold $2 connections per proxy (each has a
# client and a backend side, and HAProxy and nginx want a few more).
fd_limit_for() {
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((2 * $2 + 100)) ]; then
        echo "$1: --idle-conns $IDLE_CONNS needs an fd limit of $((2 * $2 + 100))" >&2
        exit 2
    fi
}
