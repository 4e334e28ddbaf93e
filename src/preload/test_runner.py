"""Unit tests of the preloader's pure helpers and its side of the protocol (stdlib only).

Run: python -m unittest discover -s src/preload   (scripts/test does, before cargo test)."""
import json
import os
import socket
import sys
import tempfile
import textwrap
import unittest

import runner


def write(root, relative, text):
    path = os.path.join(root, relative)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(textwrap.dedent(text))
    return path


class Project(unittest.TestCase):
    """A temporary project folder, on sys.path as a cold start's would be."""

    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.root = os.path.realpath(self.dir.name)
        sys.path.insert(0, self.root)
        self.modules = set(sys.modules)

    def tearDown(self):
        sys.path.remove(self.root)
        for name in set(sys.modules) - self.modules:
            del sys.modules[name]
        self.dir.cleanup()


class ImportedNames(Project):
    def test_absolute_imports_of_every_project_file(self):
        write(self.root, "app/main.py", """
            import fastapi, a.b
            from sqlalchemy.orm import Session, relationship
            from pydantic import *
            from . import sibling
            from .models import User
            def later():
                import json
        """)
        write(self.root, "tools/broken.py", "def (:\n")
        self.assertEqual(runner.imported_names(self.root), {
            "fastapi", "a.b", "sqlalchemy.orm", "?sqlalchemy.orm.Session",
            "?sqlalchemy.orm.relationship", "pydantic", "json",
        })

    def test_skips_hidden_built_vendored_and_virtualenv_folders(self):
        write(self.root, "app.py", "import kept\n")
        for folder in (".hidden", "node_modules", "build", "__pycache__", "site-packages"):
            write(self.root, f"{folder}/x.py", "import skipped\n")
        write(self.root, "venv/pyvenv.cfg", "home = /usr/bin\n")
        write(self.root, "venv/lib/y.py", "import skipped\n")
        self.assertEqual(runner.imported_names(self.root), {"kept"})


class ThirdParty(Project):
    def test_outside_the_project_and_not_built_in(self):
        write(self.root, "mine/__init__.py", "")
        write(self.root, "alone.py", "")
        self.assertTrue(runner.third_party(self.root, "json"))  # the stdlib is preloadable
        self.assertTrue(runner.third_party(self.root, "unittest"))  # a package
        self.assertFalse(runner.third_party(self.root, "sys"))  # built in
        self.assertFalse(runner.third_party(self.root, "mine"))
        self.assertFalse(runner.third_party(self.root, "alone"))
        self.assertFalse(runner.third_party(self.root, "no_such_module_devrun"))

    def test_a_virtualenv_inside_the_project_is_not_project_code(self):
        site = os.path.join(self.root, ".venv/lib/site-packages")
        write(site, "vendored/__init__.py", "")
        sys.path.insert(0, site)
        try:
            self.assertTrue(runner.third_party(self.root, "vendored"))
        finally:
            sys.path.remove(site)


class AutoModules(Project):
    def test_the_main_module_then_third_party_imports_then_runtime_extras(self):
        write(self.root, "app/__init__.py", "")
        write(self.root, "app/main.py", """
            import json.decoder
            import app.models
            from email.mime import text
            import no_such_module_devrun
        """)
        chosen = runner.auto_modules(self.root, "uvicorn")
        self.assertEqual(chosen[:4], ["uvicorn", "email.mime", "json.decoder", "?email.mime.text"])
        extras = [f"?{extra}" for extra in runner.RUNTIME_EXTRAS["uvicorn"]]
        self.assertEqual(chosen[4:], extras)
        self.assertFalse([n for n in chosen if "app" in n.split(".") or "no_such" in n])

    def test_a_script_command_has_no_main_module(self):
        write(self.root, "server.py", "import json\n")
        self.assertEqual(runner.auto_modules(self.root, None), ["json"])


class DevrunNames(Project):
    def test_a_relative_name_that_is_no_file_here_is_none(self):
        """Windows' embeddable Python runs its stdlib from a zip whose code objects are named
        `keyword.py`: no file of the project (a relative name that is one still counts)."""
        write(self.root, "settings.py", "X = 1\n")
        here = os.getcwd()
        os.chdir(self.root)
        try:
            self.assertIsNone(runner.as_devrun_names(self.root, self.root, "keyword.py"))
            self.assertIsNone(runner.as_devrun_names(self.root, self.root, "<string>"))
            self.assertEqual(runner.as_devrun_names(self.root, self.root, "settings.py"),
                             os.path.join(self.root, "settings.py"))
        finally:
            os.chdir(here)


class Stamps(unittest.TestCase):
    def test_a_changed_a_removed_or_a_new_file_is_stale(self):
        with tempfile.TemporaryDirectory() as root:
            kept, changed = write(root, "kept.py", "a\n"), write(root, "changed.py", "b\n")
            missing = os.path.join(root, "missing.py")
            modules = [{"name": n, "file": p, "by": None} for n, p in
                       (("kept", kept), ("changed", changed), ("missing", missing))]
            stamped = runner.stamps(modules)
            self.assertEqual(stamped[missing], None)
            self.assertIsNone(runner.first_stale(stamped))
            write(root, "changed.py", "bb\n")
            self.assertEqual(runner.first_stale(stamped), changed)
            del stamped[changed]
            self.assertIsNone(runner.first_stale(stamped))
            write(root, "missing.py", "")
            self.assertEqual(runner.first_stale(stamped), missing)
            os.remove(missing)
            os.remove(kept)
            self.assertEqual(runner.first_stale(stamped), kept)

    def test_a_rewrite_that_keeps_size_and_mtime_is_stale(self):
        with tempfile.TemporaryDirectory() as root:
            dep = write(root, "dep.py", "VALUE = 'a1'\n")
            before = os.stat(dep)
            stamped = runner.stamps([{"name": "dep", "file": dep, "by": "dep"}])
            os.replace(write(root, "new.py", "VALUE = 'b2'\n"), dep)
            os.utime(dep, ns=(before.st_atime_ns, before.st_mtime_ns))
            self.assertEqual(os.stat(dep).st_size, before.st_size)
            self.assertEqual(runner.first_stale(stamped), dep)

    def test_a_package_installed_into_a_path_folder_is_stale(self):
        with tempfile.TemporaryDirectory() as project, tempfile.TemporaryDirectory() as site:
            project = os.path.realpath(project)
            venv = os.path.join(project, ".venv", "lib", "site-packages")
            os.makedirs(venv)
            os.makedirs(os.path.join(project, "src"))  # the project's own: changes with it
            saved, cwd = sys.path[:], os.getcwd()
            sys.path[:] = ["", project, os.path.join(project, "src"), venv, site]
            try:
                os.chdir(project)
                folders = runner.package_folders(project)
            finally:
                sys.path[:] = saved
                os.chdir(cwd)
            self.assertEqual(folders, [venv, os.path.realpath(site)])
            stamped = {f: runner.stamp(f) for f in folders}
            write(site, "__editable__.x.pth", "/somewhere\n")
            self.assertEqual(runner.first_stale(stamped), os.path.realpath(site))


class Findable(unittest.TestCase):
    def test_only_installed_submodules(self):
        self.assertTrue(runner.findable("json.decoder"))
        self.assertFalse(runner.findable("os.path"))  # an attribute of module os
        self.assertFalse(runner.findable("json.no_such_module_devrun"))
        self.assertFalse(runner.findable("no_such_module_devrun.x"))


def by_name(loaded):
    return {module["name"]: module["by"] for module in loaded}


def fork_request(**changes):
    request = {
        "kind": "fork", "env": {"PORT": "8000"}, "cwd": "/p", "module": "uvicorn",
        "script": None, "args": ["app:app"], "fds": [2, 3], "title": "python -m uvicorn app:app",
    }
    request.update(changes)
    return json.dumps(request).encode()


class Protocol(unittest.TestCase):
    """Mirrors src/preload/protocol.rs: devrun's messages are checked key by key."""

    def test_the_spec_needs_every_key_and_this_version(self):
        spec = {"version": runner.PROTOCOL, "root": "/p", "modules": None, "module": "uvicorn",
                "script": None, "spare": True}
        self.assertEqual(runner.read_spec(json.dumps(spec)), spec)
        listed = dict(spec, modules=["fastapi"])
        self.assertEqual(runner.read_spec(json.dumps(listed)), listed)
        for bad, said in [
            (dict(spec, version=runner.PROTOCOL + 1), "protocol version"),
            ({k: v for k, v in spec.items() if k != "root"}, "lacks root"),
            (dict(spec, extra=1), "has unknown extra"),
            (dict(spec, modules="fastapi"), "`modules` must be a list of strings or null"),
            (dict(spec, modules=[1]), "`modules` must be"),
            (dict(spec, version=True), "`version` must be an integer"),
            (dict(spec, spare=1), "`spare` must be a boolean"),
        ]:
            with self.assertRaises(runner.ProtocolError) as caught:
                runner.read_spec(json.dumps(bad))
            self.assertIn(said, str(caught.exception))
        for text in ("", "not json", "[]"):
            with self.assertRaises(runner.ProtocolError):
                runner.read_spec(text)

    def test_a_fork_request_is_checked_key_by_key(self):
        kind, request = runner.read_request(fork_request())
        self.assertEqual((kind, request["module"], request["fds"]), ("fork", "uvicorn", [2, 3]))
        kind, request = runner.read_request(fork_request(kind="run", fds=[3]))
        self.assertEqual((kind, request["fds"]), ("run", [3]))
        for line, said in [
            (b"not json", "not JSON"),
            (b'{"env": {}}', "no known kind"),
            (fork_request(kind="exec"), "no known kind"),
            (fork_request(fds=["2"]), "`fds` must be a list of integers"),
            (fork_request(env={"PORT": 8000}), "`env` must be an object of strings"),
            (fork_request(title=None), "`title` must be a string"),
            (fork_request(module=None), "neither a module nor a script"),
            (fork_request(extra=1), "has unknown extra"),
        ]:
            with self.assertRaises(runner.ProtocolError) as caught:
                runner.read_request(line)
            self.assertIn(said, str(caught.exception))

    def test_replies_are_tagged_lines_with_their_keys(self):
        line = runner.reply("forked", pid=42)
        self.assertTrue(line.endswith(b"\n"))
        self.assertEqual(json.loads(line), {"kind": "forked", "pid": 42})
        self.assertEqual(json.loads(runner.reply("running", pid=7)), {"kind": "running", "pid": 7})
        module = {"name": "json", "file": "/usr/lib/json/__init__.py", "by": None}
        read = [{"file": "/p/hooks.py", "by": "pluggy"}]
        loaded = json.loads(runner.reply("loaded", imported=1, modules=[module], read=read))
        self.assertEqual(loaded["modules"], [module])
        self.assertEqual(loaded["read"], read)
        for kind, fields in [
            ("forked", {}),
            ("forked", {"pid": "42"}),
            ("welcome", {}),
            ("loaded", {"imported": 1, "modules": [{"name": "json"}], "read": []}),
            ("loaded", {"imported": 1, "modules": [], "read": [{"file": "/p/x.py"}]}),
        ]:
            with self.assertRaises(runner.ProtocolError):
                runner.reply(kind, **fields)


class Preload(Project):
    """What `preload` says while importing, read off a socket pair."""

    def setUp(self):
        super().setUp()
        self.sock, self.peer = socket.socketpair()
        self.peer.settimeout(10)

    def tearDown(self):
        self.sock.close()
        self.peer.close()
        super().tearDown()

    def said(self):
        self.sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := self.peer.recv(65536):
            data += chunk
        return [json.loads(line) for line in data.splitlines()]

    def test_a_module_that_raises_is_skipped_and_said(self):
        write(self.root, "good_devrun.py", "import json\n")
        write(self.root, "raises_devrun.py", "raise RuntimeError('broken on purpose')\n")
        write(self.root, "pkg_devrun/__init__.py", "")
        write(self.root, "pkg_devrun/sub.py", "")
        names = ["good_devrun", "raises_devrun", "?no_such_module_devrun", "?json.decoder",
                 "?pkg_devrun.sub", "?pkg_devrun.missing"]
        loaded, imported, read = runner.preload(self.sock, names, self.root)
        self.assertEqual(imported, 2)  # an optional one already imported is not counted again
        self.assertEqual(by_name(loaded)["pkg_devrun"], "pkg_devrun.sub")
        by = by_name(loaded)
        self.assertEqual(by["good_devrun"], "good_devrun")
        self.assertEqual(by["json"], None)  # loaded before any preload
        self.assertEqual(self.said(), [{"kind": "skipped", "module": "raises_devrun",
                                        "error": "RuntimeError: broken on purpose"}])

    def test_a_module_that_starts_a_thread_is_refused_and_named(self):
        write(self.root, "threaded_devrun.py", """
            import threading
            stop = threading.Event()
            thread = threading.Thread(target=stop.wait)
            thread.start()
        """)
        try:
            self.assertIsNone(runner.preload(self.sock, ["json", "threaded_devrun"], self.root))
        finally:
            threaded = sys.modules["threaded_devrun"]
            threaded.stop.set()
            threaded.thread.join()
        [refused] = self.said()
        self.assertEqual(refused["kind"], "refused")
        self.assertIn("preloading threaded_devrun started a thread", refused["reason"])

    def test_a_spare_imports_a_thread_starting_module(self):
        write(self.root, "threaded_spare_devrun.py", """
            import threading
            stop = threading.Event()
            thread = threading.Thread(target=stop.wait)
            thread.start()
        """)
        try:
            result = runner.preload(self.sock, ["threaded_spare_devrun"], self.root, spare=True)
        finally:
            threaded = sys.modules["threaded_spare_devrun"]
            threaded.stop.set()
            threaded.thread.join()
        self.assertIsNotNone(result)
        self.assertEqual(result[1], 1)
        self.assertEqual(self.said(), [])

    def library(self, name, source):
        """A module outside the project (a library), importable."""
        lib = tempfile.TemporaryDirectory()
        self.addCleanup(lib.cleanup)
        sys.path.append(lib.name)
        self.addCleanup(sys.path.remove, lib.name)
        write(lib.name, f"{name}.py", source)

    def test_a_project_file_run_by_path_is_said_as_read_with_its_importer(self):
        write(self.root, "hooks.py", "HOOK = 1\n")
        write(self.root, "settings.cfg", "x = 1\n")
        write(self.root, "plain.py", "X = 1\n")
        self.library("loader_devrun", """
            import importlib.util, os
            spec = importlib.util.spec_from_file_location("hooks", os.path.join(ROOT, "hooks.py"))
            hooks = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(hooks)
            with open(os.path.join(ROOT, "plain.py")) as f:
                exec(f.read())
            with open(os.path.join(ROOT, "settings.cfg")) as f:
                f.read()
            with open(os.path.join(ROOT, "written.log"), "w") as f:
                f.write("x")
        """.replace("ROOT", repr(self.root)))
        _, _, read = runner.preload(self.sock, ["json", "loader_devrun"], self.root)
        files = {r["file"]: r["by"] for r in read}
        for name in ("hooks.py", "plain.py", "settings.cfg"):
            self.assertEqual(files.get(os.path.join(self.root, name)), "loader_devrun", files)
        self.assertNotIn(os.path.join(self.root, "written.log"), files)  # written, not read
        self.assertTrue(all(f.startswith(self.root + os.sep) for f in files), files)

    def test_project_code_reached_through_a_symlink_is_named_inside_the_project(self):
        write(self.root, "app_devrun/__init__.py", "")
        link = tempfile.mkdtemp()
        self.addCleanup(os.rmdir, link)
        os.symlink(self.root, os.path.join(link, "via"))
        self.addCleanup(os.unlink, os.path.join(link, "via"))
        sys.path.insert(0, os.path.join(link, "via"))  # found there first
        self.addCleanup(sys.path.remove, os.path.join(link, "via"))
        self.library("sneaky_devrun", "import app_devrun\n")
        loaded, _, _ = runner.preload(self.sock, ["sneaky_devrun"], self.root)
        files = {m["name"]: m["file"] for m in loaded}
        self.assertEqual(files["app_devrun"], os.path.join(self.root, "app_devrun", "__init__.py"))

    def test_a_module_that_opens_a_socket_is_refused_and_the_socket_named(self):
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen()
        self.addCleanup(server.close)
        port = server.getsockname()[1]
        self.library("connects_devrun", f"""
            import socket
            conn = socket.create_connection(("127.0.0.1", {port}))
        """)
        try:
            self.assertIsNone(runner.preload(self.sock, ["json", "connects_devrun"], self.root))
        finally:
            sys.modules["connects_devrun"].conn.close()
        [refused] = self.said()
        self.assertEqual(refused["kind"], "refused")
        self.assertIn("preloading connects_devrun opened a socket", refused["reason"])
        self.assertIn(f"a TCP connection to 127.0.0.1:{port}", refused["reason"])


if __name__ == "__main__":
    unittest.main()
