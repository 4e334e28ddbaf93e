#!/usr/bin/env python3
"""Stack benchmark (issue 11), one sitting, stdlib only, Linux.

    bench/stack.py [--runs 10] [--edits 10] [--rounds 2] [--devrun PATH] [--python PATH]

(1) Stack start: launch -> every member ready, for a stack of the FastAPI backend under uvicorn
    (fixtures/fastapi_app), the stand-in dev server and a worker (fixtures/stack), all started
    at once (no `after`), against each member's own command started alone, without devrun, in
    the same sitting (interleaved, medians over --runs). Target: stack <= slowest member alone
    + 50 ms. Also shown: the three commands started at once without devrun (what sharing the
    cores costs by itself), devrun running the backend alone, and the stack with web
    `after = ["backend"]` against backend alone + web alone (the chain is serial by design).
    Ready is observed from outside, the same way for every variant: the backend answers
    GET /health, the dev server GET /, the worker has written its start line.

(2) Backend restart latency (save -> new code served) in that stack against devrun with the
    backend alone, with ../shared/bench/reload_probe.py, alternating --rounds times of --edits
    saves each; medians and their ratio. Target: ratio <= 1.05.

Needs .venv-test (scripts/test makes it) and a devrun binary (default target/release/devrun,
built here when missing).
"""

import argparse
import glob
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POLL_S = 0.005


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def listening(port):
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Scratch:
    """A scratch project: the FastAPI app at the root, fixtures/stack in web/, configs."""

    def __init__(self, python):
        self.dir = tempfile.mkdtemp(prefix="devrun-stack-bench-")
        shutil.copytree(os.path.join(REPO, "fixtures", "fastapi_app", "app"), os.path.join(self.dir, "app"))
        shutil.copytree(os.path.join(REPO, "fixtures", "stack"), os.path.join(self.dir, "web"))
        self.records = os.path.join(self.dir, ".records")  # outside the watch filter (not .py)
        os.makedirs(self.records)
        self.python = python
        self.backend_port = free_port()
        self.web_port = free_port()
        self.worker_record = os.path.join(self.records, "worker.jsonl")

    def backend_cmd(self):
        return [self.python, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(self.backend_port)]

    def web_cmd(self):
        return [self.python, "devserver.py", "--port", str(self.web_port)]  # cwd web/

    def worker_cmd(self):
        return [self.python, "web/worker.py", "--record", self.worker_record]

    def write_config(self, name, members, web_after=False):
        def arr(cmd):
            """The command as devrun gets it: its port as the `{port}` placeholder."""
            return json.dumps(cmd).replace(f'"{self.backend_port}"', '"{port}"').replace(f'"{self.web_port}"', '"{port}"')

        text = f"""command = {arr(self.backend_cmd())}
port = {self.backend_port}

[watch]
debounce_ms = 50

[ready]
http = "/health"
"""
        if members:
            after = 'after = ["backend"]\n' if web_after else ""
            text += f"""
[processes.web]
command = {arr(self.web_cmd())}
cwd = "web"
port = {self.web_port}
env = {{ VITE_API_URL = "http://{{host}}:{{ports.backend}}" }}
ready = {{ http = "/" }}
{after}
[processes.worker]
command = {arr(self.worker_cmd())}
"""
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def worker_started(scratch):
    try:
        return os.path.getsize(scratch.worker_record) > 0
    except OSError:
        return False


def start(cmd, cwd):
    return subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL, start_new_session=True)


def stop(proc, sig, ports):
    """Ends what was started (devrun: SIGINT, its own teardown) and waits for the ports."""
    try:
        proc.send_signal(sig)
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # anything of a direct start left in its session
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + 10
    while any(listening(p) for p in ports) and time.monotonic() < deadline:
        time.sleep(0.02)


def time_to(checks, proc, timeout=60):
    """Seconds from now until every check holds (each polled until it does)."""
    t0 = time.monotonic()
    pending = list(checks)
    while pending:
        if proc.poll() is not None:
            raise SystemExit(f"exited early with {proc.returncode}: {proc.args}")
        if time.monotonic() - t0 > timeout:
            raise SystemExit(f"not ready within {timeout} s: {proc.args}")
        pending = [c for c in pending if not c()]
        if pending:
            time.sleep(POLL_S)
    return time.monotonic() - t0


def measure_start(s, devrun, config, checks, ports):
    if os.path.exists(s.worker_record):
        os.remove(s.worker_record)
    t0 = time.monotonic()
    proc = start([devrun, "--config", config], s.dir)
    time_to(checks, proc)
    elapsed = time.monotonic() - t0
    stop(proc, signal.SIGINT, ports)
    return elapsed


def measure_direct(s, cmd, cwd, check, ports):
    if os.path.exists(s.worker_record):
        os.remove(s.worker_record)
    t0 = time.monotonic()
    proc = start(cmd, cwd)
    time_to([check], proc)
    elapsed = time.monotonic() - t0
    stop(proc, signal.SIGTERM, ports)
    return elapsed


def measure_parallel(s, commands, checks, ports):
    """Every member's own command started at once, without devrun: the machine's floor for
    starting them side by side (they share its cores)."""
    if os.path.exists(s.worker_record):
        os.remove(s.worker_record)
    t0 = time.monotonic()
    procs = [start(cmd, cwd) for cmd, cwd in commands]
    for proc, check in zip(procs, checks):
        time_to([check], proc)
    elapsed = time.monotonic() - t0
    for proc in procs:
        stop(proc, signal.SIGTERM, ports)
    return elapsed


def ms(seconds):
    return f"{seconds * 1000:7.0f} ms"


def stack_start(s, devrun, runs):
    stack_cfg = s.write_config("stack.toml", members=True)
    chain_cfg = s.write_config("chain.toml", members=True, web_after=True)
    alone_cfg = s.write_config("alone.toml", members=False)
    backend_ready = lambda: answers(s.backend_port, "/health")  # noqa: E731
    web_ready = lambda: answers(s.web_port, "/")  # noqa: E731
    worker_ready = lambda: worker_started(s)  # noqa: E731
    all_ready = [backend_ready, web_ready, worker_ready]
    ports = [s.backend_port, s.web_port]
    web_dir = os.path.join(s.dir, "web")
    t = {k: [] for k in ("stack", "chain", "devrun_backend", "backend", "web", "worker", "parallel")}
    everyone = [(s.backend_cmd(), s.dir), (s.web_cmd(), web_dir), (s.worker_cmd(), s.dir)]
    for i in range(runs):
        t["stack"].append(measure_start(s, devrun, stack_cfg, all_ready, ports))
        t["parallel"].append(measure_parallel(s, everyone, all_ready, ports))
        t["backend"].append(measure_direct(s, s.backend_cmd(), s.dir, backend_ready, ports))
        t["web"].append(measure_direct(s, s.web_cmd(), web_dir, web_ready, ports))
        t["worker"].append(measure_direct(s, s.worker_cmd(), s.dir, worker_ready, ports))
        t["devrun_backend"].append(measure_start(s, devrun, alone_cfg, [backend_ready], ports))
        t["chain"].append(measure_start(s, devrun, chain_cfg, all_ready, ports))
        print(f"  run {i + 1}/{runs}: " + ", ".join(f"{k} {v[-1] * 1000:.0f}" for k, v in t.items()) + " (ms)",
              file=sys.stderr, flush=True)
    med = {k: statistics.median(v) for k, v in t.items()}
    slowest = max(("backend", "web", "worker"), key=lambda k: med[k])
    print(f"(1) stack start, launch -> all ready (medians of {runs} runs, interleaved)")
    print(f"    alone, no devrun:  backend {ms(med['backend'])}   web {ms(med['web'])}   worker {ms(med['worker'])}")
    print(f"    all three at once, no devrun:       {ms(med['parallel'])}   (the cores shared, no supervisor)")
    print(f"    devrun, backend alone:              {ms(med['devrun_backend'])}")
    print(f"    devrun, stack (no after):           {ms(med['stack'])}   = slowest alone ({slowest}) "
          f"{(med['stack'] - med[slowest]) * 1000:+.0f} ms (target <= +50 ms); "
          f"= all at once without devrun {(med['stack'] - med['parallel']) * 1000:+.0f} ms")
    chain_floor = med["backend"] + med["web"]
    print(f"    devrun, stack (web after backend):  {ms(med['chain'])}   = backend + web alone "
          f"{(med['chain'] - chain_floor) * 1000:+.0f} ms")
    return alone_cfg, stack_cfg


def probe(args, s, label, config, results):
    out = os.path.join(results, label)
    cmd = f"{args.devrun} --config {config}"
    subprocess.run([sys.executable, args.probe, "--quiet", "--label", label, "--cwd", s.dir, "--results-dir", out,
                    "-n", str(args.edits), "--port", str(s.backend_port), "--edit", "app/version.py", "--cmd", cmd],
                   check=True, stdout=subprocess.DEVNULL)
    path = [p for p in glob.glob(os.path.join(out, "*.json")) if not p.endswith(".samples.json")][0]
    with open(path) as f:
        summary = json.load(f)
    return [it["latency_s"] for it in summary.get("iterations", []) if it.get("ok")], args.edits


def restart_latency(args, s, alone_cfg, stack_cfg):
    results = os.path.join(s.dir, ".results")
    lat = {"alone": [], "stack": []}
    failed = {"alone": 0, "stack": 0}
    for r in range(args.rounds):
        for label, cfg in (("alone", alone_cfg), ("stack", stack_cfg)):
            ok, n = probe(args, s, f"{label}-{r}", cfg, results)
            lat[label] += ok
            failed[label] += n - len(ok)
            print(f"  round {r + 1}/{args.rounds} {label}: median {statistics.median(ok) * 1000:.0f} ms "
                  f"({len(ok)}/{n} ok)", file=sys.stderr, flush=True)
    med = {k: statistics.median(v) for k, v in lat.items()}
    print(f"(2) backend restart, save -> new code served (reload_probe.py, {args.rounds} alternating rounds "
          f"of {args.edits} saves)")
    print(f"    devrun, backend alone: median {ms(med['alone'])}   ({len(lat['alone'])} ok, {failed['alone']} failed)")
    print(f"    devrun, stack:         median {ms(med['stack'])}   ({len(lat['stack'])} ok, {failed['stack']} failed)")
    print(f"    ratio stack / alone: {med['stack'] / med['alone']:.3f} (target <= 1.05)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--edits", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--devrun", default=os.path.join(REPO, "target", "release", "devrun"))
    ap.add_argument("--python", default=os.path.join(REPO, ".venv-test", "bin", "python"))
    ap.add_argument("--probe", default=next(
        (p for p in (os.path.join(REPO, "..", "shared", "bench", "reload_probe.py"),
                     "/work/shared/bench/reload_probe.py") if os.path.exists(p)),
        "reload_probe.py"))
    args = ap.parse_args()
    args.devrun = os.path.abspath(args.devrun)
    if not os.path.exists(args.devrun):
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=REPO, check=True)
    s = Scratch(os.path.abspath(args.python))
    try:
        print(f"devrun {args.devrun}; python {s.python}; {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}")
        alone_cfg, stack_cfg = stack_start(s, args.devrun, args.runs)
        restart_latency(args, s, alone_cfg, stack_cfg)
    finally:
        s.cleanup()


if __name__ == "__main__":
    main()
