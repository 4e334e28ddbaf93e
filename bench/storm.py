#!/usr/bin/env python3
"""Storm: how many generations a burst of saves gives, devrun binaries side by side.

Each trial starts devrun on a stdlib backend, waits for it to serve, writes --files `.py` files
across 20 new folders as fast as it can, waits for quiet, and counts the generations devrun
started (DEVRUN_GENERATION of the backend that serves at the end). A storm written within the
settle ceiling (2 s) should give exactly one new generation, whatever the load. --busy N runs N
busy loops beside it, to stand in for a loaded CI machine.

Usage: storm.py --devrun A [--devrun B ...] [--trials 10] [--files 2000] [--busy 1]
"""
import argparse, json, os, shutil, signal, socket, subprocess, sys, tempfile, time

SERVER = r'''
import json, os, signal, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        b = json.dumps({"generation": os.environ["DEVRUN_GENERATION"]}).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(b))); self.end_headers(); self.wfile.write(b)
    def log_message(self, *a): pass
HTTPServer.allow_reuse_address = True
s = HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H)
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
s.serve_forever()
'''


def get(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        return int(json.loads(data.partition(b"\r\n\r\n")[2])["generation"])
    except (OSError, ValueError, KeyError):
        return None


def trial(devrun, files, port):
    work = tempfile.mkdtemp(prefix="devrun-storm-")
    try:
        with open(os.path.join(work, "server.py"), "w") as f:
            f.write(SERVER)
        with open(os.path.join(work, "devrun.toml"), "w") as f:
            f.write(f'command = ["{sys.executable}", "server.py"]\nport = {port}\n[watch]\ndebounce_ms = 50\n')
        proc = subprocess.Popen([devrun], cwd=work, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            deadline = time.monotonic() + 30
            while get(port) != 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            t0 = time.monotonic()
            per = max(1, files // 20)
            for d in range(20):
                os.mkdir(os.path.join(work, f"s{d:02}"))
                for i in range(per):
                    with open(os.path.join(work, f"s{d:02}", f"m{i:03}.py"), "w") as f:
                        f.write(f"N = {i}\n")
            took = time.monotonic() - t0
            last, quiet_since = None, time.monotonic()
            while time.monotonic() - quiet_since < 2.0:
                g = get(port)
                if g != last:
                    last, quiet_since = g, time.monotonic()
                time.sleep(0.05)
            return took, last
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--devrun", action="append", required=True)
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--busy", type=int, default=1)
    ap.add_argument("--port", type=int, default=8043)
    args = ap.parse_args()
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    results = {d: [] for d in args.devrun}
    try:
        for _ in range(args.trials):
            for d in args.devrun:  # interleaved, so both see the same load
                results[d].append(trial(os.path.abspath(d), args.files, args.port))
    finally:
        for b in busy:
            b.kill()
    for d, rows in results.items():
        within = [g for took, g in rows if took < 1.5]
        extra = sum(1 for g in within if g != 2)
        print(f"{d}: {len(within)} of {len(rows)} storms written within 1.5 s; "
              f"{extra} of those gave more than one restart; generations: "
              + ", ".join(f"{g}({took:.1f}s)" for took, g in rows))


if __name__ == "__main__":
    main()
