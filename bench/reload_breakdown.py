#!/usr/bin/env python3
"""Where devrun's restart time goes, per phase (stdlib only).

Starts devrun with --events json on a FastAPI app, saves a module N times (atomic save: temp file
+ rename), polls GET / every 2 ms until the new version is served, and splits each restart with
devrun's own event timestamps:

  detect   save -> `changed` event (OS notification + filtering)
  stop     `stopping` -> `stopped` (stop signal to the whole group until every process is gone)
  port     `port_released` wait (confirming nothing listens any more)
  settle   rest of the debounce quiet period after the port is free (0 when the stop outlasts it)
  spawn    `started` -> new version served (fresh interpreter: imports, app startup, bind)
  total    save -> new version served

Usage: reload_breakdown.py --devrun PATH --python VENV_PYTHON --app-dir DIR [-n 30] [--port 8012]
       [--preload] [--spare] [--no-fast-stop]
--spare preloads through a warm spare interpreter (`preload_method = "spare"`, written to a
devrun.toml in DIR for the run) and reports the waiting spare's RSS.
DIR must contain the package `app` with app/main.py (FastAPI) and app/version.py (VERSION = "...").
"""
import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import threading
import time


def get_version(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        body = data.partition(b"\r\n\r\n")[2]
        return json.loads(body).get("version")
    except (OSError, ValueError):
        return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--devrun", required=True)
    ap.add_argument("--python", required=True)
    ap.add_argument("--app-dir", required=True)
    ap.add_argument("-n", type=int, default=30)
    ap.add_argument("--port", type=int, default=8012)
    ap.add_argument("--preload", action="store_true", help="run devrun with --preload (issue 12)")
    ap.add_argument("--no-fast-stop", action="store_true",
                    help="run devrun with --no-fast-stop: uvicorn's own stop (issue 19)")
    ap.add_argument("--spare", action="store_true",
                    help="preload through a warm spare interpreter (issue 19)")
    a = ap.parse_args()
    config = os.path.join(a.app_dir, "devrun.toml")
    if a.spare:
        with open(config, "w") as f:
            f.write('[server]\npreload = "auto"\npreload_method = "spare"\n')

    events = []
    cmd = [a.devrun, "--events", "json", "--port", str(a.port)] + (["--preload"] if a.preload else []) \
        + (["--no-fast-stop"] if a.no_fast_stop else []) + ["--",
           a.python, "-m", "uvicorn", "app.main:app", "--port", str(a.port), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, cwd=a.app_dir, stderr=subprocess.PIPE, text=True, start_new_session=True)

    def read_events():
        for line in proc.stderr:
            try:
                ev = json.loads(line)
                ev["_t"] = ev["ts_ms"] / 1000.0
                events.append(ev)
            except ValueError:
                pass
    threading.Thread(target=read_events, daemon=True).start()

    version_file = os.path.join(a.app_dir, "app", "version.py")
    try:
        deadline = time.time() + 30
        while get_version(a.port) is None:
            if time.time() > deadline:
                raise SystemExit("devrun's backend never answered")
            time.sleep(0.01)
        rows = []
        for i in range(a.n):
            version = f"b{i}-{time.time_ns()}"
            tmp = version_file + ".tmp"
            with open(tmp, "w") as f:
                f.write(f'VERSION = "{version}"\n' + "#" * (i % 7) + "\n")
            seen = len(events)
            t_save = time.time()
            os.replace(tmp, version_file)
            while get_version(a.port) != version:
                if time.time() - t_save > 20:
                    raise SystemExit(f"edit {i} never served")
                time.sleep(0.002)
            t_served = time.time()
            time.sleep(0.3)  # let the `ready` event arrive
            evs = {}
            for ev in events[seen:]:
                evs.setdefault(ev["event"], ev)
            try:
                rows.append({
                    "detect": evs["changed"]["_t"] - t_save,
                    "stop": evs["stopped"]["duration_ms"] / 1000,
                    "port": evs["port_released"]["wait_ms"] / 1000,
                    "settle": max(0.0, evs["started"]["_t"] - evs["port_released"]["_t"]),
                    "spawn": t_served - evs["started"]["_t"],
                    "ready_event": evs.get("ready", {}).get("duration_ms", 0) / 1000,
                    "total": t_served - t_save,
                })
            except KeyError as e:
                print(f"edit {i}: missing event {e}")
            time.sleep(0.4)
        spare_rss = waiting_spare_rss(proc.pid) if a.spare else None
    finally:
        if a.spare:
            os.remove(config)
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    print(f"{len(rows)} restarts; median (p90) in ms:")
    for key in ["detect", "stop", "port", "settle", "spawn", "total", "ready_event"]:
        vals = sorted(r[key] for r in rows)
        p90 = vals[int(0.9 * (len(vals) - 1))]
        print(f"  {key:12s} {statistics.median(vals) * 1000:7.1f}  ({p90 * 1000:.1f})")
    if a.spare:
        print(f"  waiting spare RSS: {spare_rss}")


def waiting_spare_rss(devrun):
    """VmRSS of devrun's child that runs the embedded runner (a waiting spare)."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                runner = b"devrun's preloader" in f.read()
            if parent == devrun and runner:
                with open(f"/proc/{pid}/status") as f:
                    return next(l.split(":", 1)[1].strip() for l in f if l.startswith("VmRSS"))
        except (OSError, IndexError, ValueError, StopIteration):
            continue
    return "no waiting spare found"


if __name__ == "__main__":
    main()
