#!/usr/bin/env python3
"""Issue 21 point 6: template save → fresh page served, under devrun, on fixtures/bakery
(Django runserver, cached template loaders) and fixtures/flaskr (Flask without --debug, Jinja's
cache): with `[watch] reload_only` (the default: the generation drops its template caches) and
with `reload_only = []` (a restart). Each save is an atomic rename of the template with a new
marker; the time is until GET answers with that marker (polled every 2 ms); the pid says
whether the backend restarted.

Usage: bench/template_reload.py --python VENV/bin/python [-n 12] [--devrun target/release/devrun]
(the interpreter needs django and flask)."""
import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = {
    "django": ("bakery", ["manage.py", "runserver", "127.0.0.1:{port}", "--noreload"],
               "bakerydemo/templates/base/page.html", "/page"),
    "flask": ("flaskr", ["-m", "flask", "--app", "flaskr", "run", "--port", "{port}"],
              "flaskr/templates/blog/index.html", "/"),
}


def get(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.read().decode()
    except Exception:
        return None


def wait_for(port, path, text, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = get(port, path)
        if body is not None and text in body:
            return body
        time.sleep(0.002)
    raise SystemExit(f"GET {path} never showed {text!r}")


def pid_in(body):
    return int(body.split("pid=")[1].split("<")[0].split()[0].strip())


def run(case, reload_only, args):
    fixture, command, template, page = CASES[case]
    with tempfile.TemporaryDirectory() as tmp:
        project = os.path.join(tmp, "project")
        shutil.copytree(os.path.join(ROOT, "fixtures", fixture), project)
        port = args.port
        toml = {
            "command": [args.python] + [c.replace("{port}", str(port)) for c in command],
        }
        config = f"command = {json.dumps(toml['command'])}\nport = {port}\n[watch]\n" \
                 f"include = [\"**/*.py\", \"**/*.html\"]\n"
        if not reload_only:
            config += "reload_only = []\n"
        with open(os.path.join(project, "devrun.toml"), "w") as f:
            f.write(config)
        devrun = subprocess.Popen([args.devrun], cwd=project, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            path = os.path.join(project, template)
            with open(path) as f:
                original = f.read()
            first = wait_for(port, page, "template v1")
            times, restarts, pid = [], 0, pid_in(first)
            for i in range(args.n):
                marker = f"template s{i}"
                partial = path + ".bench~"
                with open(partial, "w") as f:
                    f.write(original.replace("template v1", marker))
                start = time.monotonic()
                os.replace(partial, path)
                body = wait_for(port, page, marker)
                times.append(time.monotonic() - start)
                restarts += pid_in(body) != pid
                pid = pid_in(body)
                time.sleep(0.3)
            label = f"{case} {'reload_only' if reload_only else 'restart'}"
            ms = [t * 1000 for t in times]
            print(f"{label:22} median {statistics.median(ms):7.1f} ms  min {min(ms):7.1f}  "
                  f"max {max(ms):7.1f}  restarts {restarts}/{args.n}")
        finally:
            os.killpg(devrun.pid, signal.SIGINT)
            devrun.wait(timeout=30)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--python", required=True)
    parser.add_argument("--devrun", default=os.path.join(ROOT, "target", "release", "devrun"))
    parser.add_argument("-n", type=int, default=12)
    parser.add_argument("--port", type=int, default=8433)
    args = parser.parse_args()
    for case in CASES:
        for reload_only in (True, False):
            run(case, reload_only, args)


if __name__ == "__main__":
    sys.exit(main())
