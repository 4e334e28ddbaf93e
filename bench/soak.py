#!/usr/bin/env python3
"""Soak: 1,000 restarts in a row, and what devrun holds while doing them.

Runs devrun on a stdlib backend (no third-party imports, so a restart costs ~100 ms and the
run stays short), saves the backend's version module --restarts times, and after each save waits
until GET / serves the new version (save -> served latency). Every --every restarts it samples
devrun itself from /proc: open fds, RSS, threads, zombie children, live descendants. A leak shows
as a column that grows; drift shows as the last block's latency above the first's.

Modes, one after the other: `plain` (devrun binds nothing) and `inherit` (`socket = "inherit"`).

Usage: soak.py --devrun PATH [--restarts 1000] [--every 100] [--port 8041] [--modes plain,inherit]
Linux only (reads /proc). Prints one table per mode and exits non-zero if anything leaked.
"""
import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

BACKEND = r'''
import json, os, signal, socket, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from version import VERSION

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"version": VERSION, "pid": os.getpid()}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass

port = int(os.environ["PORT"])
if os.environ.get("LISTEN_FDS") == "1":
    server = HTTPServer(("127.0.0.1", port), Handler, bind_and_activate=False)
    server.socket = socket.socket(fileno=3)
else:
    HTTPServer.allow_reuse_address = True
    server = HTTPServer(("127.0.0.1", port), Handler)
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
server.serve_forever()
'''


def get(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        return json.loads(data.partition(b"\r\n\r\n")[2])
    except (OSError, ValueError):
        return None


def proc_status(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def children(pid):
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(p) for p in f.read().split()]
        except OSError:
            pass
    return found


def descendants(pid):
    out, queue = [], [pid]
    while queue:
        for child in children(queue.pop()):
            out.append(child)
            queue.append(child)
    return out


def state(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0]
    except OSError:
        return None


def sample(devrun):
    status = proc_status(devrun)
    kids = descendants(devrun)
    return {
        "fds": len(os.listdir(f"/proc/{devrun}/fd")),
        "rss_kb": int(status["VmRSS"].split()[0]),
        "threads": int(status["Threads"]),
        "zombies": sum(1 for p in children(devrun) if state(p) == "Z"),
        "alive": sum(1 for p in kids if state(p) not in (None, "Z")),
    }


def save(path, version):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"VERSION = {version!r}\n")
    os.replace(tmp, path)


def wait_served(port, version, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = get(port)
        if answer and answer.get("version") == version:
            return answer
        time.sleep(0.002)
    return None


def soak(args, mode):
    work = tempfile.mkdtemp(prefix=f"devrun-soak-{mode}-")
    with open(os.path.join(work, "server.py"), "w") as f:
        f.write(BACKEND)
    version_py = os.path.join(work, "version.py")
    save(version_py, "v0")
    with open(os.path.join(work, "devrun.toml"), "w") as f:
        f.write(
            f'command = ["{sys.executable}", "server.py"]\nport = {args.port}\n'
            f'[watch]\ndebounce_ms = 20\n'
            + ('[server]\nsocket = "inherit"\n' if mode == "inherit" else "")
        )
    devrun = subprocess.Popen(
        [args.devrun], cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    rows, latencies, failures = [], [], 0
    try:
        if not wait_served(args.port, "v0", 30):
            raise SystemExit(f"{mode}: devrun never served v0")
        rows.append((0, sample(devrun.pid)))
        for i in range(1, args.restarts + 1):
            version = f"v{i}"
            time.sleep(0.03)  # a person saves no faster; also keeps mtimes distinct
            t0 = time.monotonic()
            save(version_py, version)
            if wait_served(args.port, version) is None:
                failures += 1
                continue
            latencies.append(time.monotonic() - t0)
            if i % args.every == 0:
                rows.append((i, sample(devrun.pid)))
    finally:
        devrun.send_signal(signal.SIGTERM)
        try:
            code = devrun.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(devrun.pid, signal.SIGKILL)
            code = "killed"
    return rows, latencies, failures, code


def report(mode, rows, latencies, failures, code, every):
    print(f"\n## {mode}: {len(latencies)} restarts served, {failures} not served, devrun exit {code}")
    print(f"{'restarts':>8} {'fds':>5} {'rss_kb':>7} {'threads':>7} {'zombies':>7} {'alive':>5}")
    for i, s in rows:
        print(f"{i:>8} {s['fds']:>5} {s['rss_kb']:>7} {s['threads']:>7} {s['zombies']:>7} {s['alive']:>5}")
    first, last = latencies[:every], latencies[-every:]
    if first and last:
        f, l = statistics.median(first) * 1000, statistics.median(last) * 1000
        print(f"save -> served, median: first {len(first)} {f:.0f} ms, last {len(last)} {l:.0f} ms "
              f"(ratio {l / f:.2f}); p90 overall "
              f"{statistics.quantiles(latencies, n=10)[-1] * 1000:.0f} ms")
    # A transient fd (a readiness probe mid-flight) may show in one sample: a leak is growth
    # that stays, so compare the last sample with the first after startup, with slack of 2.
    base, end = rows[1][1] if len(rows) > 1 else rows[0][1], rows[-1][1]
    leaked = (
        end["fds"] > base["fds"] + 2
        or end["threads"] > base["threads"] + 2
        or any(s["zombies"] for _, s in rows)
        or any(s["alive"] != rows[0][1]["alive"] for _, s in rows)
    )
    return not leaked and failures == 0 and code == 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devrun", required=True)
    parser.add_argument("--restarts", type=int, default=1000)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--port", type=int, default=8041)
    parser.add_argument("--modes", default="plain,inherit")
    args = parser.parse_args()
    args.devrun = os.path.abspath(args.devrun)
    ok = True
    for mode in args.modes.split(","):
        ok &= report(mode, *soak(args, mode), args.every)
    print("\nsoak: ok" if ok else "\nsoak: LEAK OR FAILURE (see the tables)")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
