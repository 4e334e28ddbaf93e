# devrun's bootstrap for every Python backend (embedded in the devrun binary; see
# src/fast_stop.rs). Cold start: `python [options] BOOTSTRAP (-m MODULE | SCRIPT) ARGS...` runs
# the command as `python -m MODULE ARGS` / `python SCRIPT ARGS` would, after `patch()` (uvicorn
# only) and `report_imports()`. A forked (preloaded) generation loads this file and calls both
# before it runs the command (runner.py).
#
# report_imports() tells devrun which project files the backend imported (sys.modules), so the
# watch follows them even where .gitignore names them (a gitignored settings/local.py): a
# daemon thread writes them to DEVRUN_IMPORTS_REPORT whenever sys.modules grew or shrank and
# then held still for REPORT_SETTLE s (a length check every REPORT_EVERY s). Not in the
# middle of the start's imports: a scan of a thousand modules there took the GIL from them
# and made a cold start of a pandas app ~25 ms slower.
#
# uvicorn notices a stop signal only on its main loop's 0.1 s tick, and its shutdown always
# sleeps 0.1 s after asking connections to close. patch() makes both event-driven, for the
# uvicorn versions whose Server it was written against (KNOWN), and leaves any other alone
# (written to the report file, which devrun says once): the signal wakes the main loop at once;
# shutdown closes idle keep-alive connections (as uvicorn does), waits for in-flight requests
# and tasks to finish, bounded by devrun's stop timeout, then runs the lifespan shutdown. The
# exit is uvicorn's own (it re-raises the signal it caught).
#
# hand_over_socket() (Windows, `socket = "inherit"`): devrun holds the listening socket and each
# generation inherits its handle, whose value is in DEVRUN_HELD_SOCKET. It is taken at once and
# made non-inheritable (nothing the app starts may hold it: the job's end proves it let go), and
# uvicorn's Server.run serves it when not given sockets of its own, on a SelectorEventLoop: the
# ProactorEventLoop would tie the socket to this process's completion port, and the next
# generation's would then fail (WinError 87 in _register_with_iocp; why uvicorn itself uses the
# selector loop in subprocesses).
# Unit tests: test_bootstrap.py, next to this file.
import asyncio
import os
import runpy
import signal
import sys
import threading
import time

# Versions whose uvicorn/server.py this patch was written against (Server.main_loop,
# shutdown, _wait_tasks_to_complete, handle_exit).
KNOWN = ("0.55.",)
# How often shutdown looks whether the connections and tasks are gone.
POLL = 0.002
# Of devrun's stop timeout, what draining may take: the rest is for the lifespan shutdown.
DRAIN_SHARE = 0.8
# How often sys.modules' length is looked at, and how long it must hold still before the
# project's imports are scanned and reported.
REPORT_EVERY = 0.1
REPORT_SETTLE = 0.25
# A module count that never holds still is scanned this often all the same.
REPORT_LATEST = 2.0
# Folders whose modules are never the project's own code.
NOT_PROJECT = {"site-packages", "dist-packages", ".venv", "venv", "node_modules", "__pycache__",
               ".tox", ".nox", ".git"}


def patch():
    """Patches uvicorn's Server when devrun asked for it (DEVRUN_FAST_STOP: the stop timeout,
    ms) and the installed uvicorn is a known version. Says an unknown one in the report file
    (DEVRUN_FAST_STOP_REPORT). Returns whether it patched."""
    timeout_ms = os.environ.pop("DEVRUN_FAST_STOP", None)
    report = os.environ.pop("DEVRUN_FAST_STOP_REPORT", None)
    if not timeout_ms:
        return False
    try:
        import uvicorn
        import uvicorn.server
    except Exception:
        return False  # the command itself fails the same way, and says why
    version = str(getattr(uvicorn, "__version__", "unknown"))
    if not version.startswith(KNOWN):
        if report:
            try:
                with open(report, "w") as f:
                    f.write(f"unknown {version}\n")
            except OSError:
                pass
        return False
    install(uvicorn.server, int(timeout_ms) / 1000 * DRAIN_SHARE)
    return True


def resolve(future):
    if not future.done():
        future.set_result(None)


def install(server_module, bound):
    """Replaces Server.main_loop, shutdown and handle_exit (uvicorn 0.55's, otherwise as is)."""
    Server = server_module.Server
    logger = server_module.logger
    stock_handle_exit = Server.handle_exit

    def handle_exit(self, sig, frame):
        stock_handle_exit(self, sig, frame)
        # Runs in the main thread, possibly inside the loop's select: wake it through its
        # self-pipe.
        loop, tick = getattr(self, "_devrun_loop", None), getattr(self, "_devrun_tick", None)
        if loop is not None and tick is not None:
            try:
                loop.call_soon_threadsafe(resolve, tick)
            except RuntimeError:
                pass  # the loop is closed: nothing waits for the tick any more

    async def main_loop(self):
        loop = asyncio.get_running_loop()
        self._devrun_loop = loop
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter += 1
            counter = counter % 864000
            # The stock 0.1 s tick, which a stop signal ends at once.
            self._devrun_tick = tick = loop.create_future()
            timer = loop.call_later(0.1, resolve, tick)
            try:
                await tick
            finally:
                timer.cancel()
            should_exit = await self.on_tick(counter)

    async def shutdown(self, sockets=None):
        logger.info("Shutting down")
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        # Idle connections close at once; a busy one once its response is sent.
        for connection in list(self.server_state.connections):
            connection.shutdown()
        limit = bound
        if self.config.timeout_graceful_shutdown is not None:
            limit = min(limit, self.config.timeout_graceful_shutdown)
        try:
            async with asyncio.timeout(limit):
                await drain(self)
        except TimeoutError:
            logger.error(
                "Cancel %s running task(s), timeout graceful shutdown exceeded",
                len(self.server_state.tasks),
            )
            for t in self.server_state.tasks:
                t.cancel(msg="Task cancelled, timeout graceful shutdown exceeded")
        if not self.force_exit:
            await self.lifespan.shutdown()

    Server.handle_exit = handle_exit
    Server.main_loop = main_loop
    Server.shutdown = shutdown


async def drain(server):
    """uvicorn's _wait_tasks_to_complete, looking every POLL instead of every 0.1 s (and saying
    it waits only for connections still open after the first look)."""
    state = server.server_state
    await asyncio.sleep(POLL)  # closed transports call connection_lost on the next iterations
    if state.connections and not server.force_exit:
        server_logger().info("Waiting for connections to close. (CTRL+C to force quit)")
        while state.connections and not server.force_exit:
            await asyncio.sleep(POLL)
    if state.tasks and not server.force_exit:
        server_logger().info("Waiting for background tasks to complete. (CTRL+C to force quit)")
        while state.tasks and not server.force_exit:
            await asyncio.sleep(POLL)
    for listener in server.servers:
        await listener.wait_closed()


def server_logger():
    import uvicorn.server
    return uvicorn.server.logger


def set_title(title):
    """What `ps` shows for this process: the command devrun was given (Linux; as the
    preloader's forks do), a JSON list of its words (written NUL-separated, as an argv is) or
    a plain string. Written over the original argv area, never longer than it."""
    try:
        import ctypes
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end (proc(5) 48, 49)
    except (OSError, IndexError, ValueError, ImportError):
        return
    size = end - start
    if start <= 0 or size <= 1:
        return
    try:
        import json
        words = json.loads(title) if title.startswith("[") else [title]
    except ValueError:
        words = [title]
    text = b"\0".join(str(w).encode(errors="replace") for w in words)[: size - 1]
    ctypes.memmove(start, text + b"\0" * (size - len(text)), size)


def report_imports():
    """Starts the reporter thread when devrun asked for it (DEVRUN_IMPORTS_REPORT: the file,
    DEVRUN_IMPORTS_ROOT: the project root). Returns whether it started. With DEVRUN_RELOAD
    (a FIFO's path), the same thread drops the template caches when devrun asks (reload)."""
    report = os.environ.pop("DEVRUN_IMPORTS_REPORT", None)
    root = os.environ.pop("DEVRUN_IMPORTS_ROOT", None)
    fifo = open_reload_fifo(os.environ.pop("DEVRUN_RELOAD", None))
    if not report or not root:
        return False
    thread = threading.Thread(
        target=reporter, args=(report, root, fifo), name="devrun-imports", daemon=True
    )
    thread.start()
    return True


def open_reload_fifo(path):
    """The FIFO devrun writes a request number to, opened to read (made when missing), with a
    write end of our own held open so it never reads as closed. None when it cannot be had."""
    if not path or not hasattr(os, "mkfifo"):
        return None
    try:
        if not os.path.exists(path):
            os.mkfifo(path, 0o600)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        os.open(path, os.O_WRONLY | os.O_NONBLOCK)  # held: select never sees EOF
        return fd
    except OSError:
        return None


def reporter(report, root, fifo):
    """Writes the project's imported files whenever they change, and answers reload requests
    (never raises: a reporter that fails leaves the backend alone)."""
    try:
        import select
        known, scanned, written, verdicts = len(sys.modules), -1, None, {}
        changed_at = scanned_at = time.monotonic()
        while True:
            if fifo is None:
                time.sleep(REPORT_EVERY)
            elif select.select([fifo], [], [], REPORT_EVERY)[0]:
                answer_reloads(fifo, report)
            count, now = len(sys.modules), time.monotonic()
            if count != known:
                known, changed_at = count, now
            if not scan_due(count, scanned, now - changed_at, now - scanned_at):
                continue
            scanned, scanned_at = count, now
            files = project_files(root, verdicts)
            if files != written:
                write_report(report, files)
                written = files
    except Exception:
        return


def scan_due(count, scanned, still_for, since_scan):
    """Whether to scan sys.modules now: its length `count` is not the last scan's, and it held
    still for REPORT_SETTLE s (not in the middle of the imports), or the last scan is
    REPORT_LATEST s old (imports that never stop)."""
    if count == scanned:
        return False
    return still_for >= REPORT_SETTLE or since_scan >= REPORT_LATEST


def answer_reloads(fifo, report):
    """Drops the template caches for the last request number read, then says it is done
    (`reloaded` beside the import report: the number, then what was dropped)."""
    numbers = os.read(fifo, 4096).split()
    if not numbers:
        return
    dropped = drop_template_caches()
    done = os.path.join(os.path.dirname(report), "reloaded")
    partial = done + ".partial"
    with open(partial, "w", encoding="utf-8") as f:
        f.write(f"{numbers[-1].decode(errors='replace')} {' '.join(dropped) or 'nothing'}\n")
    os.replace(partial, done)


def drop_template_caches():
    """Every template cache of the frameworks this process imported: Django's template
    engines (their loaders' caches), and every Jinja2 environment (Flask's, Starlette's,
    Django's Jinja2 backend). The next render reads the templates from disk."""
    dropped = []
    if "django.template" in sys.modules:
        try:
            from django.template import engines
            for backend in engines.all():
                for loader in getattr(getattr(backend, "engine", None), "template_loaders", ()):
                    reset = getattr(loader, "reset", None)
                    if reset is not None:
                        reset()
            dropped.append("django")
        except Exception:
            pass
    jinja2 = sys.modules.get("jinja2")
    if jinja2 is not None:
        import gc
        environments = [o for o in gc.get_objects() if isinstance(o, jinja2.Environment)]
        for environment in environments:
            if environment.cache is not None:
                environment.cache.clear()
        if environments:
            dropped.append("jinja2")
    return dropped


def project_files(root, verdicts):
    """The source files of the modules in sys.modules that are the project's: under `root`,
    outside virtualenvs and installed packages, named under `root` as devrun gave it.
    `verdicts` caches each file's answer."""
    real_root = os.path.realpath(root)
    files = set()
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if not isinstance(path, str) or not path.endswith(".py"):
            continue
        if path not in verdicts:
            verdicts[path] = project_file(root, real_root, path)
        if verdicts[path]:
            files.add(verdicts[path])
    return files


def project_file(root, real_root, path):
    """`path` named under `root` when it is project code, else "" ."""
    real = os.path.realpath(path)
    if not real.startswith(real_root + os.sep):
        return ""
    relative = os.path.relpath(real, real_root)
    folders = relative.split(os.sep)[:-1]
    if any(folder in NOT_PROJECT for folder in folders):
        return ""
    # A virtualenv under another name (any folder holding a pyvenv.cfg).
    here = real_root
    for folder in folders:
        here = os.path.join(here, folder)
        if os.path.exists(os.path.join(here, "pyvenv.cfg")):
            return ""
    return os.path.join(root, relative)


def write_report(report, files):
    """One path a line, replaced whole so devrun never reads half a list."""
    partial = report + ".partial"
    with open(partial, "w", encoding="utf-8") as f:
        f.write("".join(f"{path}\n" for path in sorted(files)))
    os.replace(partial, report)


def graceful_break(sig=signal):
    """Windows: devrun stops a backend with CTRL_BREAK, and a program with no handler for it is
    ended at once, its shutdown skipped. Where none is installed yet, CTRL_BREAK raises
    KeyboardInterrupt instead, so the program's own Ctrl-C shutdown runs (Django's runserver,
    Flask, a plain script); a program that installs its own later (uvicorn) keeps its own.
    Returns whether it installed one (never where the OS has no SIGBREAK)."""
    sigbreak = getattr(sig, "SIGBREAK", None)
    if sigbreak is None or sig.getsignal(sigbreak) is not sig.SIG_DFL:
        return False
    sig.signal(sigbreak, interrupt)
    return True


def interrupt(signum, frame):
    raise KeyboardInterrupt


def hand_over_socket(environ=os.environ, net=None):
    """Takes the listening socket devrun handed over, makes it non-inheritable, and has uvicorn
    serve it (when uvicorn is installed). A cold start inherited it (DEVRUN_HELD_SOCKET: its
    handle or fd); a warm spare, started long before, gets it duplicated for its own pid
    (DEVRUN_HELD_SOCKET_SHARE: the hex of the WSAPROTOCOL_INFOW, for `socket.fromshare`).
    Returns the socket, or None when devrun handed none."""
    if net is None:
        import socket as net
    value = environ.pop("DEVRUN_HELD_SOCKET", None)
    shared = environ.pop("DEVRUN_HELD_SOCKET_SHARE", None)
    if shared:
        sock = net.fromshare(bytes.fromhex(shared))
    elif value:
        sock = held_socket(int(value), net)
    else:
        return None
    sock.set_inheritable(False)
    try:
        import uvicorn.server
    except Exception:
        return sock  # the command itself fails the same way, and says why
    serve_held(uvicorn.server.Server, sock)
    return sock


def held_socket(handle, net=None):
    """The socket object for an inherited socket `handle` (`net`: the socket module). Wine's
    Winsock cannot describe an inherited socket (getsockopt SO_PROTOCOL_INFOW fails with
    WSAENOTSOCK), though it serves it: there its own address says the family."""
    if net is None:
        import socket as net
    try:
        return net.socket(fileno=handle)
    except OSError:
        probe = net.socket(net.AF_INET, net.SOCK_STREAM, 0, handle)
        family = net.AF_INET6 if len(probe.getsockname()) == 4 else net.AF_INET
        probe.detach()
        return net.socket(family, net.SOCK_STREAM, 0, handle)


def serve_held(server_class, sock, loop_class=asyncio.SelectorEventLoop):
    """Server.run without sockets of its own serves `sock`, on a loop of `loop_class` whose
    create_server, asked for the address of `sock` (which the config is set to), serves `sock`
    itself, once. uvicorn's own `--fd` (a devrun.toml shared with Unix) names the same socket
    and is dropped. Not through Server.run(sockets=...): that path asks platform.system(),
    which Wine 8 aborts (its propsys.dll lacks VariantToString), and says no "running on" line.
    Given sockets (uvicorn's reloader or workers), it runs as it would."""
    stock_run = server_class.run

    def run(self, sockets=None):
        if sockets is not None:
            return stock_run(self, sockets=sockets)
        config = self.config
        config.fd = None
        config.host, config.port = sock.getsockname()[:2]
        wanted = (config.host, config.port)

        class HeldLoop(loop_class):
            taken = False

            async def create_server(self, factory, host=None, port=None, **kwargs):
                if not HeldLoop.taken and kwargs.get("sock") is None and (host, port) == wanted:
                    HeldLoop.taken = True
                    kwargs["sock"] = sock
                    return await super().create_server(factory, **kwargs)
                return await super().create_server(factory, host, port, **kwargs)

        if not hasattr(asyncio, "Runner"):  # Python 3.10
            loop = HeldLoop()
            try:
                return loop.run_until_complete(self.serve())
            finally:
                loop.close()
        with asyncio.Runner(loop_factory=HeldLoop) as runner:
            return runner.run(self.serve())

    server_class.run = run


def main(argv):
    """Runs `-m MODULE ARGS` or `SCRIPT ARGS` as the interpreter would, patched."""
    title = os.environ.pop("DEVRUN_FAST_STOP_TITLE", None)
    if title and sys.platform.startswith("linux"):
        set_title(title)
    hand_over_socket()
    patch()
    report_imports()
    graceful_break()
    if len(argv) >= 2 and argv[0] == "-m":
        module, args = argv[1], argv[2:]
        sys.argv = [module] + args
        sys.path[0] = os.getcwd()
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    elif argv:
        script, args = argv[0], argv[1:]
        sys.argv = [script] + args
        sys.path[0] = os.path.dirname(os.path.abspath(script))
        runpy.run_path(script, run_name="__main__")
    else:
        sys.exit("devrun's fast-stop bootstrap needs `-m MODULE` or a script")


if __name__ == "__main__":
    main(sys.argv[1:])
