"""Unit tests of bootstrap.py (plain unittest; needs uvicorn: scripts/test runs them with the
interpreter of .venv-test). Each case runs in a fresh interpreter: patch() changes uvicorn's
Server class for the whole process."""
import os
import subprocess
import sys
import tempfile
import textwrap
import unittest

BOOTSTRAP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bootstrap.py")


def run(code, env=None, args=()):
    """Runs `code` as a script through the bootstrap; returns (exit code, stdout, stderr)."""
    with tempfile.TemporaryDirectory() as folder:
        script = os.path.join(folder, "script.py")
        with open(script, "w") as f:
            f.write(textwrap.dedent(code))
        done = subprocess.run(
            [sys.executable, BOOTSTRAP, script, *args],
            env={**os.environ, **(env or {})},
            capture_output=True,
            text=True,
            timeout=60,
        )
        return done.returncode, done.stdout, done.stderr


PATCHED = (
    "import sys, uvicorn.server\n"
    "print(uvicorn.server.Server.main_loop.__module__)\n"
    "print(sys.argv[1:])\n"
)


class BootstrapTest(unittest.TestCase):
    def test_without_the_variable_nothing_is_patched_and_the_script_runs_with_its_args(self):
        code, out, err = run(PATCHED, args=("a", "--b"))
        self.assertEqual(code, 0, err)
        self.assertEqual(out.split("\n")[:2], ["uvicorn.server", "['a', '--b']"])

    def test_a_known_version_is_patched_and_the_variables_are_gone(self):
        listed = "import os; print([k for k in os.environ if k.startswith('DEVRUN_FAST')])\n"
        code, out, err = run(PATCHED + listed, env={"DEVRUN_FAST_STOP": "5000"})
        self.assertEqual(code, 0, err)
        self.assertEqual(out.split("\n")[0], "__main__")
        self.assertEqual(out.split("\n")[2], "[]")

    def test_an_unknown_version_is_reported_and_left_alone(self):
        with tempfile.TemporaryDirectory() as folder:
            shim = os.path.join(folder, "sitecustomize.py")
            with open(shim, "w") as f:
                f.write("import uvicorn\nuvicorn.__version__ = '0.1.0'\n")
            report = os.path.join(folder, "report")
            env = {"DEVRUN_FAST_STOP": "5000", "DEVRUN_FAST_STOP_REPORT": report,
                   "PYTHONPATH": folder}
            code, out, err = run(PATCHED, env=env)
            self.assertEqual(code, 0, err)
            self.assertEqual(out.split("\n")[0], "uvicorn.server")
            with open(report) as f:
                self.assertEqual(f.read(), "unknown 0.1.0\n")

    def test_an_exit_status_and_a_traceback_are_the_scripts(self):
        code, _, err = run("raise SystemExit(3)\n", env={"DEVRUN_FAST_STOP": "5000"})
        self.assertEqual(code, 3)
        code, _, err = run("def f():\n    1 / 0\nf()\n", env={"DEVRUN_FAST_STOP": "5000"})
        self.assertEqual(code, 1)
        self.assertIn("ZeroDivisionError", err)
        self.assertIn("script.py", err)


class ImportReportTest(unittest.TestCase):
    def test_only_project_files_outside_virtualenvs_are_reported(self):
        import importlib.util
        spec = importlib.util.spec_from_file_location("_bootstrap_under_test", BOOTSTRAP)
        bootstrap = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bootstrap)
        with tempfile.TemporaryDirectory() as root:
            for rel in ("app/local.py", "env/lib/x.py", ".venv/lib/y.py", "lib/site-packages/z.py"):
                os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
                open(os.path.join(root, rel), "w").close()
            open(os.path.join(root, "env", "pyvenv.cfg"), "w").close()
            real = os.path.realpath(root)
            check = lambda rel: bootstrap.project_file(root, real, os.path.join(root, rel))
            self.assertEqual(check("app/local.py"), os.path.join(root, "app", "local.py"))
            for rel in ("env/lib/x.py", ".venv/lib/y.py", "lib/site-packages/z.py"):
                self.assertEqual(check(rel), "", rel)
            self.assertEqual(bootstrap.project_file(root, real, "/usr/lib/os.py"), "")

    def test_sys_modules_is_scanned_once_the_imports_held_still(self):
        """Not in the middle of the start's imports (a scan there slowed a cold start of a
        pandas app by ~25 ms), nor twice for the same count; a count that never holds still is
        scanned every REPORT_LATEST s all the same."""
        sys.path.insert(0, os.path.dirname(BOOTSTRAP))
        import bootstrap
        settle, latest = bootstrap.REPORT_SETTLE, bootstrap.REPORT_LATEST
        self.assertFalse(bootstrap.scan_due(900, -1, 0.0, 0.5))  # importing
        self.assertFalse(bootstrap.scan_due(900, -1, settle / 2, latest / 2))
        self.assertTrue(bootstrap.scan_due(900, -1, settle, 0.5))  # held still
        self.assertFalse(bootstrap.scan_due(900, 900, settle * 10, latest * 10))  # scanned
        self.assertTrue(bootstrap.scan_due(950, 900, 0.0, latest))  # never still

    def test_the_running_script_reports_its_project_imports(self):
        with tempfile.TemporaryDirectory() as folder:
            report = os.path.join(folder, "imports")
            code = f"""
                import sys, time
                sys.path.insert(0, {folder!r})
                open({os.path.join(folder, "mine.py")!r}, "w").close()
                import mine
                for _ in range(100):
                    if __import__("os").path.exists({report!r}):
                        break
                    time.sleep(0.05)
            """
            env = {"DEVRUN_IMPORTS_REPORT": report, "DEVRUN_IMPORTS_ROOT": folder}
            status, _, err = run(code, env=env)
            self.assertEqual(status, 0, err)
            with open(report) as f:
                self.assertIn(os.path.join(folder, "mine.py") + "\n", f.read())


class ReloadTest(unittest.TestCase):
    def test_a_reload_request_drops_jinja_caches_and_is_answered(self):
        with tempfile.TemporaryDirectory() as folder:
            report, fifo = os.path.join(folder, "imports"), os.path.join(folder, "reload")
            done = os.path.join(folder, "reloaded")
            code = f"""
                import os, time, jinja2
                loader = jinja2.DictLoader({{"t": "v1"}})
                env = jinja2.Environment(loader=loader, auto_reload=False)
                assert env.get_template("t").render() == "v1"
                loader.mapping["t"] = "v2"
                assert env.get_template("t").render() == "v1"  # cached
                for _ in range(100):
                    if os.path.exists({fifo!r}):
                        break
                    time.sleep(0.02)
                w = os.open({fifo!r}, os.O_WRONLY | os.O_NONBLOCK)
                os.write(w, b"7\\n")
                for _ in range(200):
                    if os.path.exists({done!r}):
                        break
                    time.sleep(0.01)
                print(env.get_template("t").render())
            """
            env = {"DEVRUN_IMPORTS_REPORT": report, "DEVRUN_IMPORTS_ROOT": folder,
                   "DEVRUN_RELOAD": fifo}
            status, out, err = run(code, env=env)
            self.assertEqual(status, 0, err)
            self.assertEqual(out.strip(), "v2")
            with open(done) as f:
                self.assertEqual(f.read(), "7 jinja2\n")

    def test_without_a_template_engine_the_answer_is_nothing(self):
        import importlib.util
        spec = importlib.util.spec_from_file_location("_bootstrap_reload", BOOTSTRAP)
        bootstrap = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bootstrap)
        saved = {k: sys.modules.pop(k) for k in list(sys.modules) if k.startswith(("jinja2", "django"))}
        try:
            self.assertEqual(bootstrap.drop_template_caches(), [])
        finally:
            sys.modules.update(saved)



class GracefulBreak(unittest.TestCase):
    """Windows' CTRL_BREAK raises KeyboardInterrupt where the program installed no handler."""

    def test_installed_only_where_there_is_sigbreak_and_no_handler(self):
        sys.path.insert(0, os.path.dirname(BOOTSTRAP))
        import bootstrap

        class FakeSignal:
            SIGBREAK = 21
            SIG_DFL = object()

            def __init__(self, current):
                self.handlers = {21: current}

            def getsignal(self, signum):
                return self.handlers[signum]

            def signal(self, signum, handler):
                self.handlers[signum] = handler

        windows = FakeSignal(FakeSignal.SIG_DFL)
        self.assertTrue(bootstrap.graceful_break(windows))
        with self.assertRaises(KeyboardInterrupt):
            windows.handlers[21](21, None)
        own = FakeSignal(print)  # the program's own handler stays
        self.assertFalse(bootstrap.graceful_break(own))
        self.assertIs(own.handlers[21], print)
        import signal
        if not hasattr(signal, "SIGBREAK"):  # Linux and macOS: nothing to do
            self.assertFalse(bootstrap.graceful_break())

class HeldSocket(unittest.TestCase):
    """`socket = "inherit"` on Windows: the bootstrap takes the handed-over socket and uvicorn
    serves it. Shown here with a Unix fd (socket.socket(fileno=) takes both)."""

    def test_serve_held_serves_the_socket_on_a_selector_loop(self):
        sys.path.insert(0, os.path.dirname(BOOTSTRAP))
        import asyncio
        import socket
        import types
        import bootstrap
        seen = {}

        class Server:
            def __init__(self):
                self.config = types.SimpleNamespace(fd=7, host="0.0.0.0", port=1)

            def run(self, sockets=None):
                seen["stock"] = sockets

            async def serve(self):
                loop = asyncio.get_running_loop()
                seen["loop"] = loop
                config = self.config
                server = await loop.create_server(asyncio.Protocol, host=config.host,
                                                  port=config.port, backlog=5)
                seen["served"] = server.sockets[0].getsockname()
                seen["config"] = (config.fd, config.host, config.port)
                # Another server the app starts is its own.
                other = await loop.create_server(asyncio.Protocol, host="127.0.0.1", port=0)
                seen["other"] = other.sockets[0].getsockname()
                server.close()
                other.close()

        held = socket.socket()
        held.bind(("127.0.0.1", 0))
        held.listen(5)
        address = held.getsockname()
        bootstrap.serve_held(Server, held)
        Server().run()
        self.assertEqual(seen["served"], address)
        self.assertEqual(seen["config"], (None,) + address)  # --fd dropped, the address said
        self.assertNotEqual(seen["other"], address)
        # The selector loop, never the proactor (Windows' IOCP would tie the socket to us).
        self.assertIsInstance(seen["loop"], asyncio.SelectorEventLoop)
        Server().run(sockets=["own"])  # uvicorn's reloader or workers: as it was
        self.assertEqual(seen["stock"], ["own"])
        held.close()

    def test_where_the_socket_cannot_be_described_its_address_gives_the_family(self):
        sys.path.insert(0, os.path.dirname(BOOTSTRAP))
        import socket
        import types
        import bootstrap

        def wine_socket(*args, fileno=None):
            if fileno is not None:  # Wine: SO_PROTOCOL_INFOW fails on an inherited socket
                raise OSError(10038, "not a socket")
            return socket.socket(*args)

        net = types.SimpleNamespace(socket=wine_socket, AF_INET=socket.AF_INET,
                                    AF_INET6=socket.AF_INET6, SOCK_STREAM=socket.SOCK_STREAM)
        for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            try:
                original = socket.socket(family)
                original.bind((host, 0))
            except OSError:
                continue  # no IPv6 here
            taken = bootstrap.held_socket(os.dup(original.fileno()), net)
            self.assertEqual(taken.family, family)
            self.assertEqual(taken.getsockname()[1], original.getsockname()[1])
            taken.close()
            original.close()

    def test_without_the_variable_nothing_is_taken(self):
        sys.path.insert(0, os.path.dirname(BOOTSTRAP))
        import bootstrap
        self.assertIsNone(bootstrap.hand_over_socket({}))

    def test_a_spare_takes_the_socket_shared_for_it(self):
        """Issue 19: a warm spare gets the held socket as `socket.share()` bytes (hex) with its
        run request, rebuilt with `fromshare` (Windows only; here a stand-in that records)."""
        import socket
        import types
        sys.path.insert(0, os.path.dirname(BOOTSTRAP))
        import bootstrap
        original = socket.socket()
        original.bind(("127.0.0.1", 0))
        given = []

        def fromshare(info):
            given.append(info)
            return socket.socket(fileno=os.dup(original.fileno()))

        net = types.SimpleNamespace(fromshare=fromshare)
        environ = {"DEVRUN_HELD_SOCKET_SHARE": "00ff10", "OTHER": "1"}
        # uvicorn's Server is left unpatched in this process: the import fails here.
        from unittest import mock
        with mock.patch.dict(sys.modules, {"uvicorn": None, "uvicorn.server": None}):
            taken = bootstrap.hand_over_socket(environ, net)
        try:
            self.assertEqual(given, [b"\x00\xff\x10"])
            self.assertEqual(environ, {"OTHER": "1"})
            self.assertEqual(taken.getsockname(), original.getsockname())
            self.assertFalse(taken.get_inheritable())
        finally:
            taken.close()
            original.close()

    def test_uvicorn_serves_the_held_socket_not_its_own_port(self):
        import socket
        held = socket.socket()
        held.bind(("127.0.0.1", 0))
        held.listen(16)
        held.set_inheritable(True)
        port = held.getsockname()[1]
        app = """
            import os, socket, sys, uvicorn
            assert "DEVRUN_HELD_SOCKET" not in os.environ
            async def app(scope, receive, send):
                if scope["type"] != "http":
                    return
                held = [s for s in server.servers[0].sockets]
                body = repr((os.environ.get("DEVRUN_HELD_SOCKET"), held[0].getsockname()[1],
                             os.get_inheritable(held[0].fileno()))).encode()
                await send({"type": "http.response.start", "status": 200, "headers": []})
                await send({"type": "http.response.body", "body": body})
                server.should_exit = True
            config = uvicorn.Config(app, host="127.0.0.1", port=1, log_level="warning")
            server = uvicorn.Server(config)
            server.run()
        """
        with tempfile.TemporaryDirectory() as folder:
            script = os.path.join(folder, "serve.py")
            with open(script, "w") as f:
                f.write(textwrap.dedent(app))
            child = subprocess.Popen(
                [sys.executable, BOOTSTRAP, script],
                env={**os.environ, "DEVRUN_HELD_SOCKET": str(held.fileno())},
                pass_fds=[held.fileno()],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
            try:
                # Connections queue on the held socket until the server accepts them.
                with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
                    client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    answer = b""
                    while chunk := client.recv(4096):
                        answer += chunk
                _, err = child.communicate(timeout=30)
            finally:
                child.kill()
                held.close()
        self.assertEqual(child.returncode, 0, err)
        self.assertTrue(answer.startswith(b"HTTP/1.1 200"), answer)
        # The variable is gone, the port served is the held one, no longer inheritable.
        self.assertIn(repr((None, port, False)).encode(), answer)


if __name__ == "__main__":
    unittest.main()
