#!/usr/bin/env bash
# Sends lb traffic for a few seconds, then loads lb's admin dashboard once in headless Chromium,
# with less virtual time than one poll takes, and checks what the first load shows: the last
# seconds' requests/s and p99 already drawn from lb's own history (/history.json), every pool
# with its status badge, every backend with its health, status codes, errors, retries,
# ejections, last check and its reason, down-since, the header's version, uptime and open
# connections, and the reload history with who made each generation.
# (Chromium writes a valueless attribute back as `name=""`: the patterns below say so.)
# Saves a screenshot ($SCREENSHOT, else target/dashboard.png, which CI keeps as an artifact) and
# checks it is a real picture.
# Needs Debian's chromium (`apt-get install chromium`), curl and python3; builds lb itself;
# loopback only. Exit 0 when every check passed.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v chromium >/dev/null || { echo "needs chromium: apt-get install chromium" >&2; exit 2; }
cargo build --quiet --workspace --bins
target="${CARGO_TARGET_DIR:-target}"
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT

# Waits up to 15 s for a line matching $2 in the log $1.
wait_for() {
  for _ in $(seq 1 300); do grep -q "$2" "$1" && return 0; sleep 0.05; done
  echo "dashboard-check: no \"$2\" in $1 after 15s" >&2; cat "$1" >&2; exit 1
}

"$target/debug/sample-web" --port 0 --node dash 2>"$work/backend.log" &
pids+=("$!")
wait_for "$work/backend.log" listening
backend=$(sed -n 's/.*listening on //p' "$work/backend.log")
# Pool /c/ has a canary (on a dead address, so its share falls back) and a rollout that holds.
canary_pool='[pools."/c/"]
interval = "200ms"
backends = ["'"$backend"'"]

[pools."/c/".canary]
backends = ["127.0.0.1:9"]
weight = 10

[pools."/c/".rollout]
steps = [10, 100]
bake = "1h"'
cat > "$work/lb.toml" <<TOML
[pools."/"]
interval = "200ms"
backends = ["$backend", "127.0.0.1:9"]

$canary_pool
TOML
"$target/debug/lb" --config "$work/lb.toml" --http 127.0.0.1:0 --grpc 127.0.0.1:0 --admin 127.0.0.1:0 2>"$work/lb.log" &
pids+=("$!")
wait_for "$work/lb.log" 'listener="admin"'
admin=$(sed -n 's/.*listener="admin" addr=\([^ ]*\).*/\1/p' "$work/lb.log")
http=$(sed -n 's/.*listener="http" addr=\([^ ]*\).*/\1/p' "$work/lb.log")
wait_for "$work/lb.log" "backend healthy pool=/ backend=$backend"

# A save after that (generation 3), for the reload history.
# lb has started the rollout by now or will: keep whatever it wrote, add a comment on top.
wait_for "$work/lb.log" 'rollout moved'
{ echo '# saved again'; cat "$work/lb.toml"; } > "$work/lb.toml.new"
mv "$work/lb.toml.new" "$work/lb.toml"
wait_for "$work/lb.log" 'generation=3'

# Traffic for a bounded few seconds, all of it before the page opens: what the page shows of it
# comes from lb's history, not from the page's own polls.
traffic_seconds=8
( end=$((SECONDS + traffic_seconds)); while [ $SECONDS -lt $end ]; do curl -s -o /dev/null "http://$http/" || true; curl -s -o /dev/null "http://$http/c/" || true; done )

chrome() {
  chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$work/chrome" --run-all-compositor-stages-before-draw "$@" 2>>"$work/chrome.log"
}
# One load: 500 ms of virtual time is less than the page's one-second poll, so everything drawn
# came with the first /history.json and /status.json (the page counts its refreshes). The reload
# history sees generation 3 applied (1: the file at start, 2: the rollout started by lb, 3: the
# save).
chrome --virtual-time-budget=500 --dump-dom "http://$admin/" > "$work/dom.html"
shot="${SCREENSHOT:-$target/dashboard.png}"
mkdir -p "$(dirname "$shot")"
chrome --virtual-time-budget=500 --window-size=1280,1100 --screenshot="$shot" "http://$admin/" || true

passed=0; failed=0
check() { if "$@"; then passed=$((passed+1)); echo "ok   $label"; else failed=$((failed+1)); echo "FAIL $label"; fi; }
has() { grep -q -- "$1" "$work/dom.html"; }
label="the pool / is listed";                       check has 'data-pool="/"'
label="its badge shows PS_DEGRADED (one backend down)"; check has 'PS_DEGRADED'
label="the live backend is listed";                 check has "data-backend=\"$backend\""
label="a backend shows BS_HEALTHY";                 check has 'BS_HEALTHY'
label="the dead backend is listed";                 check has 'data-backend="127.0.0.1:9"'
label="a backend shows BS_SICK";                    check has 'BS_SICK'
label="the generation is shown";                    check has 'generation 3'
label="the page drew from its first load, no poll";  check has '<body data-refreshes="1">'
label="the requests/s sparkline holds the past seconds"; check python3 - "$work/dom.html" <<'PY'
import re, sys
dom = open(sys.argv[1]).read()
chart = re.search(r'<svg data-chart="rps"[^>]*>.*?<polyline points="([^"]+)"', dom)
sys.exit(0 if chart and len(chart.group(1).split()) >= 8 else 1)
PY
label="requests/s was above zero for most of the traffic's seconds";  check python3 - "$work/dom.html" <<'PY'
import re, sys
# A point above the baseline (y below height - 3) is a sample with requests.
dom = open(sys.argv[1]).read()
chart = re.search(r'<svg data-chart="rps" width="\d+" height="(\d+)".*?<polyline points="([^"]+)"', dom)
ys = [float(p.split(",")[1]) for p in chart.group(2).split()] if chart else []
busy = [y for y in ys if y < int(chart.group(1)) - 3] if chart else []
sys.exit(0 if len(busy) >= 5 else 1)
PY
label="a p99 sparkline with a value in ms";         check python3 - "$work/dom.html" <<'PY'
import re, sys
dom = open(sys.argv[1]).read()
ok = re.search(r'<svg data-chart="p99".*?<polyline points="[^"]+"', dom) and re.search(r'data-value="p99">[0-9.]+ ms<', dom)
sys.exit(0 if ok else 1)
PY
label="the header shows the version";             check has "data-value=\"version\">$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)<"
label="the header shows the uptime";              check grep -Eq 'data-value="uptime">[0-9]+m [0-9]+s<' "$work/dom.html"
label="the header shows open connections";        check has 'data-value="connections">'
label="the live backend's 2xx are counted";       check python3 - "$work/dom.html" "$backend" <<'PY'
import re, sys
dom, backend = open(sys.argv[1]).read(), sys.argv[2]
row = re.search(r'<tr data-backend="%s">.*?</tr>' % re.escape(backend), dom)
sys.exit(0 if row and re.search(r'data-class="2xx"[^>]*>2xx [1-9][0-9]*<', row.group(0)) else 1)
PY
label="the live backend's bytes out and in are counted"; check python3 - "$work/dom.html" "$backend" <<'PY'
import re, sys
dom, backend = open(sys.argv[1]).read(), sys.argv[2]
row = re.search(r'<tr data-backend="%s">.*?</tr>' % re.escape(backend), dom)
sys.exit(0 if row and re.search(r'data-bytes="">[1-9][0-9.]* (B|KiB|MiB) / [1-9][0-9.]* (B|KiB|MiB)<', row.group(0)) else 1)
PY
label="the dead backend's last check failed, with its reason and down-since"; check python3 - "$work/dom.html" <<'PY'
import re, sys
dom = open(sys.argv[1]).read()
row = re.search(r'<tr data-backend="127.0.0.1:9">.*?</tr>', dom)
row = row.group(0) if row else ""
ok = re.search(r'<td data-last-check=""><span class="down">fail</span>', row) \
    and re.search(r'<td class="reason" data-reason="">[^<]*\w[^<]*</td>', row) \
    and re.search(r'<td data-down-since="">[0-9]+[smhd]</td>', row)
sys.exit(0 if ok else 1)
PY
label="the pool shows its retries and ejections";  check grep -Eq 'data-value="retries">[0-9]+<.*data-value="ejections">[0-9]+<' "$work/dom.html"
label="the reload history lists generation 3 applied"; check has 'data-generation="3" data-outcome="applied"'
label="the canary's weight is shown";               check has 'data-value="weight">10%'
label="stable and canary share the req/s chart";    check python3 - "$work/dom.html" <<'PY'
import re, sys
dom = open(sys.argv[1]).read()
chart = re.search(r'<svg data-chart="canary-rps".*?</svg>', dom)
ok = chart and 'data-side="stable"' in chart.group(0) and 'data-side="canary"' in chart.group(0)
sys.exit(0 if ok else 1)
PY
label="the rollout's ladder marks its running step"; check has '<span class="step current">10%</span>'
label="the reload history says a file save made it"; check has '<td data-who="">file save</td>'
label="the screenshot is a real picture (PNG over 10 KB)"; check python3 - "$shot" <<'PY'
import os, sys
data = open(sys.argv[1], "rb").read() if os.path.exists(sys.argv[1]) else b""
sys.exit(0 if data.startswith(b"\x89PNG") and len(data) > 10_000 else 1)
PY
echo "dashboard: $passed passed, $failed failed (screenshot: $shot)"
[ "$failed" -eq 0 ]
