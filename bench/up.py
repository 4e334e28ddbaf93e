#!/usr/bin/env python3
"""`devrun up` benchmark (issue 23), one sitting, stdlib only, Linux.

    bench/up.py [--runs 10] [--devrun PATH] [--python PATH]

(1) `devrun up` -> returns (every member ready, lines printed), for the FastAPI fixture under
    uvicorn, against the backend's own command started alone without devrun (launch -> first
    answer to GET /health), interleaved, medians over --runs; each `up` is followed by
    `devrun down`. Target: up <= backend alone + 100 ms.
(2) `devrun up` when the project already runs under a devrun whose members are ready
    (starts nothing, prints the same lines). Target: < 50 ms.

Needs .venv-test (scripts/test makes it) and a devrun binary (default target/release/devrun).
"""

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def backend_alone(python, cwd, port):
    """Seconds from launch to the first 200 of the backend started without devrun."""
    began = time.perf_counter()
    proc = subprocess.Popen(
        [python, "-m", "uvicorn", "app.main:app", "--port", str(port)],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while not answers(port):
            if proc.poll() is not None:
                sys.exit("the backend exited")
            time.sleep(0.002)
        return time.perf_counter() - began
    finally:
        proc.terminate()
        proc.wait()


def timed(cmd, cwd):
    began = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{cmd} failed ({done.returncode}):\n{done.stderr}")
    return time.perf_counter() - began


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--devrun", default=os.path.join(REPO, "target/release/devrun"))
    ap.add_argument("--python", default=os.path.join(REPO, ".venv-test/bin/python"))
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="devrun-up-bench-")
    app = os.path.join(work, "fastapi")
    shutil.copytree(os.path.join(REPO, "fixtures/fastapi_app"), app)
    port = free_port()
    with open(os.path.join(app, "devrun.toml"), "w") as f:
        f.write(
            f'command = ["{args.python}", "-m", "uvicorn", "app.main:app", "--port", "{{port}}"]\n'
            f"port = {port}\n[ready]\nhttp = \"/health\"\n"
        )
    alone, up, again = [], [], []
    try:
        for _ in range(args.runs):
            alone.append(backend_alone(args.python, app, port))
            up.append(timed([args.devrun, "up"], app))
            again.append(timed([args.devrun, "up"], app))
            timed([args.devrun, "down"], app)
    finally:
        subprocess.run([args.devrun, "down"], cwd=app, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    ms = lambda xs: statistics.median(xs) * 1000  # noqa: E731
    print(f"runs: {args.runs} (medians; load {os.getloadavg()[0]:.1f})")
    print(f"backend alone, launch -> ready:     {ms(alone):7.1f} ms")
    print(f"devrun up -> returned:              {ms(up):7.1f} ms  ({ms(up) - ms(alone):+.1f} ms)")
    print(f"devrun up, already running:         {ms(again):7.1f} ms")


if __name__ == "__main__":
    main()
