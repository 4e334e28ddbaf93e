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

if __name__ == "__main__":
    unittest.main()
