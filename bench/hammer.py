#!/usr/bin/env python3
"""Refused connections across restarts (issue: zero refused with `socket = "inherit"`).

A client sends GET / every 5 ms on a fresh connection while the app's version module is saved
--restarts times; for each setup it reports failed requests by kind, whether any answer came
from an older version after a newer one (stale), and the request latency distribution.
Setups, run one after the other: devrun with socket = "inherit", devrun default, uvicorn --reload.

Usage: hammer.py --devrun PATH --python VENV_PYTHON [--restarts 20] [--port 8014]
"""
import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH_APP = os.path.join(HERE, "..", "..", "shared", "bench", "app")


def request(port):
    t0 = time.monotonic()
    s = socket.socket()
    s.settimeout(5)
    try:
        s.connect(("127.0.0.1", port))
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        if not head:
            return "empty", None, time.monotonic() - t0
        return "ok", json.loads(body)["version"], time.monotonic() - t0
    except ConnectionRefusedError:
        return "refused", None, time.monotonic() - t0
    except ConnectionResetError:
        return "reset", None, time.monotonic() - t0
    except (socket.timeout, TimeoutError):
        return "timeout", None, time.monotonic() - t0
    except (OSError, ValueError, KeyError) as e:
        return type(e).__name__, None, time.monotonic() - t0
    finally:
        s.close()


def run(label, cmd, root, port, restarts):
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    results, stop = [], threading.Event()
    try:
        deadline = time.monotonic() + 60
        while request(port)[0] != "ok":
            if time.monotonic() > deadline:
                raise SystemExit(f"{label}: never ready")
            time.sleep(0.01)

        def hammer():
            while not stop.is_set():
                results.append(request(port))
                time.sleep(0.005)
        t = threading.Thread(target=hammer)
        t.start()
        vf = os.path.join(root, "app", "version.py")
        for i in range(1, restarts + 1):
            with open(vf + ".tmp", "w") as f:
                f.write(f'VERSION = "{label}-{i:03d}"\n' + "#" * i + "\n")
            os.replace(vf + ".tmp", vf)
            want = f"{label}-{i:03d}"
            while not results or results[-1][1] != want:
                time.sleep(0.005)
            time.sleep(0.3)
        stop.set()
        t.join()
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    failures = {}
    for kind, _, _ in results:
        if kind != "ok":
            failures[kind] = failures.get(kind, 0) + 1
    versions = [v for k, v, _ in results if k == "ok" and v.startswith(label)]
    stale = sum(1 for a, b in zip(versions, versions[1:]) if b < a)
    lat = sorted(d for k, _, d in results if k == "ok")
    pct = lambda q: lat[int(q * (len(lat) - 1))] * 1000
    return (f"{label:18s} requests {len(results):5d} | failed {sum(failures.values()):3d} {failures} | "
            f"stale {stale} | latency ms p50 {pct(0.5):.1f} p99 {pct(0.99):.1f} max {lat[-1] * 1000:.1f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--devrun", required=True)
    ap.add_argument("--python", required=True)
    ap.add_argument("--restarts", type=int, default=20)
    ap.add_argument("--port", type=int, default=8014)
    ap.add_argument("--only", default="", help="comma list of setups to run")
    a = ap.parse_args()
    root = tempfile.mkdtemp(prefix="devrun-hammer-")
    try:
        shutil.copytree(BENCH_APP, os.path.join(root, "app"))
        port = str(a.port)
        with open(os.path.join(root, "inherit.toml"), "w") as f:
            f.write(f'command = ["{a.python}", "-m", "uvicorn", "app.main:app", "--fd", "{{fd}}"]\n'
                    f"port = {port}\n[server]\nsocket = \"inherit\"\n")
        setups = {
            "devrun-inherit": [a.devrun, "--config", "inherit.toml"],
            "devrun-default": [a.devrun, "--port", port, "--", a.python, "-m", "uvicorn", "app.main:app", "--port", port],
            "uvicorn-reload": [a.python, "-m", "uvicorn", "app.main:app", "--port", port, "--reload"],
        }
        only = [s for s in a.only.split(",") if s]
        for label, cmd in setups.items():
            if not only or label in only:
                print(run(label, cmd, root, a.port, a.restarts), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
