#!/usr/bin/env python3
"""Soak driver for lb (run it through scripts/soak.sh, which builds release first).

Everything is on 127.0.0.1 and bounded by --seconds. It starts four sample-web backends (plus a
fifth for lbctl churn) and lb, then at the same time:

- drives steady load at GET / (wrk when installed, else Python keep-alive clients) and counts
  every request that is not a 200 or that fails outright;
- rewrites lb.toml every 300 ms, alternating the pool's backend set (b1 <-> b4, b2 and b3 stay),
  by editing the text read back from disk, so lbctl's edits survive it;
- restarts one backend process every few seconds (SIGTERM, then the same port again);
- adds and removes the fifth backend through target/release/lbctl, over and over;
- once, at 40% of the run, writes 60 random garbage saves in a row (lb must keep serving), then
  restores the last good text.

At the end it prints failed requests (target 0), lb's RSS at start and end (growth target
< 10 MiB), its thread and open-fd counts, and the reload counters from /metrics.
Exit status: 0 when the targets are met, 1 otherwise.
"""

import argparse
import http.client
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

POOL = "/"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return {
        "rss_kib": int(fields["VmRSS"].split()[0]),
        "hwm_kib": int(fields["VmHWM"].split()[0]),
        "threads": int(fields["Threads"]),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
    }


def http_get(port, path, timeout=2.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace")
    finally:
        conn.close()


def wait_for(what, check, seconds=20.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"soak: timed out waiting for {what}")


def write_atomic(path, text):
    """Save as an editor does: temp file in the same directory, then rename over."""
    tmp = f"{path}.soak-tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Backend:
    def __init__(self, exe, name, port, log):
        self.exe, self.name, self.port, self.log = exe, name, port, log
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [self.exe, "--port", str(self.port), "--node", self.name],
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )
        wait_for(f"backend {self.name}", lambda: http_get(self.port, "/healthz")[0] == 200)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Counters:
    def __init__(self):
        self.lock = threading.Lock()
        self.values = {}
        self.examples = []

    def add(self, key, n=1, example=None):
        with self.lock:
            self.values[key] = self.values.get(key, 0) + n
            if example and len(self.examples) < 10:
                self.examples.append(example)

    def get(self, key):
        with self.lock:
            return self.values.get(key, 0)


def python_load(port, stop, counters, clients):
    def client():
        conn = None
        while not stop.is_set():
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                conn.request("GET", "/")
                resp = conn.getresponse()
                body = resp.read()
                if resp.status == 200 and body.startswith(b"Hello web from node"):
                    counters.add("ok")
                else:
                    counters.add("failed", example=f"{resp.status} {body[:80]!r}")
                if resp.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                counters.add("failed", example=f"{type(e).__name__}: {e}")
                if conn:
                    conn.close()
                conn = None
        if conn:
            conn.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    return threads


def wrk_load(port, seconds, counters):
    """Runs wrk for the whole soak; its totals are parsed when it ends."""
    out = subprocess.run(
        ["wrk", "-t2", "-c16", f"-d{seconds}s", "--timeout", "10s", f"http://127.0.0.1:{port}/"],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
    ).stdout
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    failed = (int(non2xx.group(1)) if non2xx else 0) + (
        sum(int(g) for g in errors.groups()) if errors else 0
    )
    counters.add("ok", total - failed)
    counters.add("failed", failed, example=out if failed else None)


def metrics(admin_port):
    _, text = http_get(admin_port, "/metrics")
    found = {}
    for line in text.splitlines():
        # Summed over the sources (file, api, sync).
        m = re.match(r'lb_config_reloads_total\{source="\w+",result="(\w+)"\} (\d+)', line)
        if m:
            key = f"reloads_{m.group(1)}"
            found[key] = found.get(key, 0) + int(m.group(2))
        m = re.match(r"lb_config_generation (\d+)", line)
        if m:
            found["generation"] = int(m.group(1))
    return found


def config_text(http_port, grpc_port, backends, interval="1s"):
    lines = "\n".join(f'  "127.0.0.1:{b.port}",' for b in backends)
    return f"""# soak config: rewritten every 300 ms by scripts/soak.py
[listen]
http = "127.0.0.1:{http_port}"
grpc = "127.0.0.1:{grpc_port}"

[server]
drain_timeout = "2s"

[pools."{POOL}"]
interval = "{interval}"    # fast, so restarted backends come back quickly
backends = [
{lines}
]
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--bin", default="target/release")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--load", choices=["auto", "wrk", "python"], default="auto")
    ap.add_argument("--seed", type=int, default=20260520)
    args = ap.parse_args()
    # SIGTERM (from soak.sh's trap) unwinds through the finally below, which stops the children.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    rng = random.Random(args.seed)
    seconds = max(10, args.seconds)
    lb_exe = os.path.join(args.bin, "lb")
    lbctl_exe = os.path.join(args.bin, "lbctl")
    web_exe = os.path.join(args.bin, "sample-web")
    for exe in (lb_exe, lbctl_exe, web_exe):
        if not os.access(exe, os.X_OK):
            raise SystemExit(f"soak: {exe} missing; build with cargo build --release")
    use_wrk = args.load == "wrk" or (args.load == "auto" and shutil.which("wrk"))

    work = tempfile.mkdtemp(prefix="lb-soak-")
    log = open(os.path.join(work, "processes.log"), "w")
    backends = [Backend(web_exe, f"b{i}", free_port(), log) for i in range(1, 6)]
    b1, b2, b3, b4, b5 = backends
    http_port, grpc_port, admin_port = free_port(), free_port(), free_port()
    cfg = os.path.join(work, "lb.toml")
    lb = None
    stop = threading.Event()
    counters = Counters()
    try:
        for b in backends:
            b.start()
        write_atomic(cfg, config_text(http_port, grpc_port, [b1, b2, b3]))
        lb = subprocess.Popen(
            [lb_exe, "--config", cfg, "--admin", f"127.0.0.1:{admin_port}"],
            stdout=log,
            stderr=log,
            env={**os.environ, "RUST_LOG": "warn,lb::access=off"},
        )
        wait_for("lb ready", lambda: http_get(admin_port, "/readyz")[0] == 200)
        wait_for("a healthy backend", lambda: http_get(http_port, "/")[0] == 200)
        print(f"soak: {seconds}s, lb pid {lb.pid}, work dir {work}, "
              f"load {'wrk' if use_wrk else f'python x{args.clients}'}", flush=True)

        start = time.monotonic()
        end = start + seconds
        if use_wrk:
            load = [threading.Thread(target=wrk_load, args=(http_port, seconds, counters))]
            load[0].start()
        else:
            load = python_load(http_port, stop, counters, args.clients)
        time.sleep(2)  # warm up before taking the baseline
        before = proc_status(lb.pid)

        def churn():
            """lbctl add/remove of b5, as fast as it answers."""
            add = True
            while not stop.is_set() and time.monotonic() < end - 1:
                verb = "add" if add else "remove"
                r = subprocess.run(
                    [lbctl_exe, "--lb", f"127.0.0.1:{grpc_port}", "backend", verb, POOL,
                     f"127.0.0.1:{b5.port}"],
                    capture_output=True, text=True, timeout=30,
                )
                if r.returncode == 0:
                    counters.add(f"lbctl_{verb}_ok")
                    add = not add
                else:
                    # Expected now and then: a save raced the edit, or garbage is on disk.
                    counters.add(f"lbctl_{verb}_refused")
                    if "already" in r.stderr:
                        add = False
                    elif "no backend" in r.stderr or "not found" in r.stderr.lower():
                        add = True
                    time.sleep(0.1)
                time.sleep(0.05)

        def restarts():
            """Restart b1..b4 in turn, every 4 s."""
            i = 0
            while not stop.is_set() and time.monotonic() < end - 2:
                if stop.wait(4):
                    break
                b = backends[i % 4]
                b.stop()
                b.start()
                counters.add("backend_restarts")
                i += 1

        workers = [threading.Thread(target=f, daemon=True) for f in (churn, restarts)]
        for w in workers:
            w.start()

        # The saver: every 300 ms swap b1 <-> b4 in the text on disk; once, 60 garbage saves.
        garbage_at = start + seconds * 0.4
        garbage_done = False
        good = open(cfg).read()
        while time.monotonic() < end - 1:
            time.sleep(0.3)
            if not garbage_done and time.monotonic() >= garbage_at:
                for _ in range(60):
                    junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400)))
                    text = rng.choice([
                        junk.decode("latin-1"),
                        good[: rng.randrange(len(good))],
                        good.replace("]", "", 1),
                        good.replace("127.0.0.1", "999.0.0.1"),
                        "[pools.\"/\"]\nbackends = [\"nope\"]\n",
                    ])
                    write_atomic(cfg, text)
                    counters.add("garbage_saves")
                    time.sleep(0.03)
                write_atomic(cfg, good)
                garbage_done = True
                continue
            try:
                text = open(cfg).read()
            except OSError:
                continue
            a, b = f'"127.0.0.1:{b1.port}"', f'"127.0.0.1:{b4.port}"'
            if a in text:
                text = text.replace(a, b)
            elif b in text:
                text = text.replace(b, a)
            write_atomic(cfg, text)
            good = text
            counters.add("saves")

        stop.set()
        for t in load + workers:
            t.join(timeout=40)
        time.sleep(0.5)
        after = proc_status(lb.pid)
        m = metrics(admin_port)

        lb.send_signal(signal.SIGTERM)
        try:
            lb_exit = lb.wait(15)
        except subprocess.TimeoutExpired:
            lb_exit = "did not exit in 15 s"

        failed = counters.get("failed")
        ok = counters.get("ok")
        growth = (after["rss_kib"] - before["rss_kib"]) / 1024
        print(f"requests: ok {ok}, failed {failed}  (target: 0 failed)")
        for e in counters.examples:
            print(f"  e.g. {e}")
        print(f"lb RSS: start {before['rss_kib'] / 1024:.1f} MiB, end {after['rss_kib'] / 1024:.1f} MiB, "
              f"growth {growth:+.1f} MiB (target < 10), peak {after['hwm_kib'] / 1024:.1f} MiB")
        print(f"lb threads: start {before['threads']}, end {after['threads']}; "
              f"open fds: start {before['fds']}, end {after['fds']}")
        print(f"saves {counters.get('saves')}, garbage saves {counters.get('garbage_saves')}, "
              f"backend restarts {counters.get('backend_restarts')}")
        print(f"lbctl: add ok {counters.get('lbctl_add_ok')}, remove ok {counters.get('lbctl_remove_ok')}, "
              f"refused {counters.get('lbctl_add_refused') + counters.get('lbctl_remove_refused')}")
        print(f"lb metrics: {m}; exit on SIGTERM: {lb_exit}")
        passed = failed == 0 and growth < 10 and lb_exit == 0 and ok > 0
        print("soak: PASS" if passed else f"soak: FAIL (logs in {work})")
        if passed:
            shutil.rmtree(work, ignore_errors=True)
        return 0 if passed else 1
    finally:
        stop.set()
        if lb and lb.poll() is None:
            lb.kill()
            lb.wait()
        for b in backends:
            b.stop()
        log.close()


if __name__ == "__main__":
    sys.exit(main())
