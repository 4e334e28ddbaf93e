#!/usr/bin/env python3
"""Watching at scale: devrun vs `uvicorn --reload` on a 100,000-file tree (stdlib, Linux).

Builds a project of N files (default 100,000): 1,000 `.py` files in the app, the rest in
`node_modules/` and `.venv/` (ignored by both tools' defaults only where they know them), then for
each tool measures, watcher side only (devrun itself / uvicorn's reloader process):

  spawn_ms   launch -> the backend process exists (first child seen, 1 ms polling)
  ready_ms   launch -> GET /health answers
  idle_cpu   CPU seconds over --idle seconds of idleness (from /proc/PID/schedstat, ns)
  rss_mb     peak RSS (VmHWM)
  watches    inotify watches held (fdinfo `inotify wd:` lines)
  kept_dirs  folders a pruned watcher needs (not under node_modules/.venv/__pycache__)
  reload_ms  median save -> new code served over --edits atomic saves

Usage: bigtree.py --devrun PATH --python VENV_PYTHON [--files 100000] [--idle 30] [--edits 10]
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
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH_APP = os.path.join(HERE, "..", "..", "shared", "bench", "app")


def build_tree(root, files):
    shutil.copytree(BENCH_APP, os.path.join(root, "app"))
    made = 0
    for i in range(1000):  # 1,000 app modules in 50 folders
        d = os.path.join(root, "app", "mods", f"pkg{i // 20:02d}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"m{i % 20:02d}.py"), "w") as f:
            f.write("X = 1\n")
        made += 1
    rest = files - made
    for i in range(rest):
        if i < rest // 2:
            d = os.path.join(root, "node_modules", f"pkg{i // 50:04d}", "lib")
            name = f"f{i % 50:02d}.js"
        else:
            j = i - rest // 2
            d = os.path.join(root, ".venv", "lib", "python3.11", "site-packages", f"pkg{j // 50:04d}")
            name = f"m{j % 50:02d}.py"
        if i % 50 == 0 or (i == rest // 2):
            os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, name), "w") as f:
            f.write("x = 1\n")
    kept = 0
    for dirpath, dirnames, _ in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in ("node_modules", ".venv", "__pycache__", ".devrun")]
        kept += 1
    return kept


def children(pid):
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(p) for p in f.read().split()]
    except OSError:
        pass
    return out


def cpu_ns(pid):
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


def status_kb(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1])
    return 0


def inotify_watches(pid):
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                n += sum(1 for line in f if line.startswith("inotify wd:"))
        except OSError:
            pass
    return n


def get(port, path):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        return json.loads(data.partition(b"\r\n\r\n")[2])
    except (OSError, ValueError):
        return None


def measure(label, cmd, root, port, idle, edits):
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    spawn = ready = None
    try:
        while ready is None:
            if spawn is None and children(proc.pid):
                spawn = time.monotonic() - t0
            if get(port, "/health"):
                ready = time.monotonic() - t0
            if time.monotonic() - t0 > 120:
                raise SystemExit(f"{label}: not ready in 120 s")
            time.sleep(0.001)
        time.sleep(2)  # let start-up work settle before the idle window
        c0 = cpu_ns(proc.pid)
        time.sleep(idle)
        idle_cpu = (cpu_ns(proc.pid) - c0) / 1e9
        watches = inotify_watches(proc.pid)
        lat = []
        vf = os.path.join(root, "app", "version.py")
        for i in range(edits):
            v = f"{label}-{i}-{time.time_ns()}"
            with open(vf + ".tmp", "w") as f:
                f.write(f'VERSION = "{v}"\n' + "#" * i + "\n")
            t = time.monotonic()
            os.replace(vf + ".tmp", vf)
            while (get(port, "/") or {}).get("version") != v:
                if time.monotonic() - t > 30:
                    raise SystemExit(f"{label}: edit {i} never served")
                time.sleep(0.002)
            lat.append(time.monotonic() - t)
            time.sleep(0.5)
        rss = status_kb(proc.pid, "VmHWM:") / 1024
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    return {"tool": label, "spawn_ms": round(spawn * 1000, 1) if spawn else None,
            "ready_ms": round(ready * 1000, 1), "idle_cpu_s": round(idle_cpu, 4),
            "rss_mb": round(rss, 1), "watches": watches,
            "reload_ms": round(statistics.median(lat) * 1000, 1)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--devrun", required=True)
    ap.add_argument("--python", required=True)
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--idle", type=float, default=30)
    ap.add_argument("--edits", type=int, default=10)
    ap.add_argument("--port", type=int, default=8013)
    a = ap.parse_args()
    root = tempfile.mkdtemp(prefix="devrun-bigtree-")
    try:
        t = time.monotonic()
        kept = build_tree(root, a.files)
        print(f"tree: {a.files} files, {kept} kept folders, built in {time.monotonic() - t:.1f} s")
        uv = [a.python, "-m", "uvicorn", "app.main:app", "--port", str(a.port)]
        rows = [
            measure("devrun", [a.devrun, "--port", str(a.port), "--"] + uv, root, a.port, a.idle, a.edits),
            measure("uvicorn --reload", uv + ["--reload"], root, a.port, a.idle, a.edits),
        ]
        for r in rows:
            r["kept_dirs"] = kept
            print(json.dumps(r))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
