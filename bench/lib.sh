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
