#!/usr/bin/env python3
"""The client of the Wine lane's py_inherit scenario and of scripts/bench-wine-refused: GET /
on 127.0.0.1:PORT on a fresh connection, one after the other (a pause of PAUSE s between), from
the Linux side, until the file STOP exists (and, if STOP names a generation, until that one
answered, for at most STOP_WAIT s). Then prints one line:

    answered N refused N reset N timeout N other N gens G1,G2,...

refused: the connection was refused (nothing listened: what `socket = "inherit"` must never let
happen); reset: a connection accepted and then dropped without an answer (an in-flight request
of a generation the stop killed: Wine cannot deliver CTRL_BREAK, so every stop is a kill);
timeout: no answer within 20 s (under Wine: a connection accepted for a generation that was
killed, which wineserver keeps open with no process to answer it); gens: the generations that answered, in order, each once.

Usage: hammer.py PORT STOP [PAUSE]
"""
import json
import os
import socket
import sys
import time

STOP_WAIT = 60


def request(port):
    """One GET /: ("ok", gen) or (kind of failure, None)."""
    s = socket.socket()
    s.settimeout(20)  # a connection waits in the held socket's queue while no generation runs
    try:
        s.connect(("127.0.0.1", port))
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            return ("reset" if not data else "other"), None
        return "ok", str(json.loads(body).get("gen"))
    except ConnectionRefusedError:
        return "refused", None
    except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError):
        return "reset", None
    except (socket.timeout, TimeoutError):
        return "timeout", None
    except (OSError, ValueError):
        return "other", None
    finally:
        s.close()


def main():
    port, stop = int(sys.argv[1]), sys.argv[2]
    pause = float(sys.argv[3]) if len(sys.argv) > 3 else 0.005
    counts = {"answered": 0, "refused": 0, "reset": 0, "timeout": 0, "other": 0}
    gens = []
    stop_seen = None
    while True:
        if os.path.exists(stop):
            # A STOP naming a generation waits (up to STOP_WAIT s) until that one answered: a
            # request stuck in a timeout meanwhile (see above) must not end the count early.
            stop_seen = stop_seen or time.monotonic()
            with open(stop) as f:
                wanted = f.read().strip()
            if not wanted or gens[-1:] == [wanted] or time.monotonic() - stop_seen > STOP_WAIT:
                break
        kind, gen = request(port)
        counts["answered" if kind == "ok" else kind] += 1
        if gen is not None and (not gens or gens[-1] != gen):
            gens.append(gen)
        time.sleep(pause)
    line = " ".join(f"{k} {v}" for k, v in counts.items())
    print(f"{line} gens {','.join(gens)}", flush=True)


if __name__ == "__main__":
    main()
