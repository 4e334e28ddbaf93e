# devrun's preloader (embedded in the devrun binary, run as `python -c`; see src/preload.rs).
# It imports third-party modules once, then forks one child per generation. It never serves
# and never imports project code on purpose: devrun checks what it loaded with its watch filter.
# Protocol (src/preload/protocol.rs): one JSON object per line over the Unix socket named by
# DEVRUN_PRELOAD_SOCKET (on Windows, the named pipe named by DEVRUN_PRELOAD_PIPE), each with its
# `kind`; the keys of each kind are below (SPEC, REQUESTS, REPLIES) and checked on the way in
# and out. Only a spare (`spare` in the spec) runs off Linux: forking, `/proc` and prctl are
# Linux's. Unit tests: test_runner.py, next to this file.
import array
import ast
import ctypes
import gc
import importlib
import importlib.util
import json
import os
import runpy
import select
import signal
import socket
import sys

try:
    import fcntl
except ImportError:  # Windows: no descriptors are passed there
    fcntl = None

if __name__ != "__main__":  # imported by the unit tests; devrun prepends the file itself
    from runner_protocol import *  # noqa: F401,F403

# /proc, prctl and fork are this OS's only (Wine shows Windows programs a Linux /proc too).
LINUX = sys.platform.startswith("linux")
PR_SET_PDEATHSIG = 1
# Descriptors one fork request can carry (stdin, stdout, stderr, the held socket).
MAX_FDS = 4
SKIP_DIRS = {"node_modules", "__pycache__", "site-packages", "dist-packages", "build", "dist"}
MAX_FILES = 5000
# What a library imports only once it runs (a server's event loop and protocols, the database
# dialect an engine loads by its URL, ...), so "auto" preloads it too when it preloads the
# library; each only if installed. Found by diffing `sys.modules` in a served fork.
RUNTIME_EXTRAS = {
    "uvicorn": [
        "uvicorn.loops.auto", "uvicorn.loops.uvloop", "uvicorn.loops.asyncio",
        "uvicorn.protocols.http.auto", "uvicorn.protocols.http.h11_impl",
        "uvicorn.protocols.http.httptools_impl", "uvicorn.protocols.websockets.auto",
        "uvicorn.lifespan.on", "uvloop", "httptools", "h11", "websockets", "encodings.idna",
    ],
    "fastapi": ["fastapi.telemetry._runtime"],
    # create_engine() imports the dialect its URL names; SQLite's driver is in the stdlib.
    "sqlalchemy": [
        "sqlalchemy.dialects.sqlite", "sqlalchemy.dialects.sqlite.pysqlite", "sqlite3",
        "sqlalchemy.dialects.postgresql", "sqlalchemy.dialects.mysql",
    ],
}


def pdeathsig(libc, parent):
    # Die with the parent; it may already be gone between fork and prctl.
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def is_project_path(root, path):
    # A guess that keeps obvious project code out of "auto"; devrun's watch filter decides.
    real = os.path.realpath(path)
    inside = real == root or real.startswith(root + os.sep)
    return inside and "site-packages" not in real and "dist-packages" not in real


def imported_names(root):
    """Every absolute import in the project's files: `a.b` for `import a.b` and `from a.b import
    c`, plus `?a.b.c` (a submodule only if it is one) for the latter."""
    names, seen = set(), 0
    for folder, dirs, files in os.walk(root):
        dirs[:] = [
            d for d in dirs
            if not d.startswith(".") and d not in SKIP_DIRS
            and not os.path.exists(os.path.join(folder, d, "pyvenv.cfg"))
        ]
        for name in files:
            if not name.endswith(".py") or seen >= MAX_FILES:
                continue
            seen += 1
            try:
                with open(os.path.join(folder, name), "rb") as f:
                    tree = ast.parse(f.read())
            except (OSError, SyntaxError, ValueError):
                continue
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names.update(a.name for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module)
                    names.update(f"?{node.module}.{a.name}" for a in node.names if a.name != "*")
    return names


def auto_modules(root, main_module):
    """What "auto" preloads: the module the command runs, then each name the project imports
    whose top-level module is third-party (parents before their submodules), then the runtime
    extras of the libraries among them (all `?`: only if installed)."""
    chosen, verdicts = [main_module] if main_module else [], {}
    for name in sorted(imported_names(root), key=lambda n: (n.lstrip("?").count("."), n)):
        top = name.lstrip("?").split(".")[0]
        if top not in verdicts:
            verdicts[top] = third_party(root, top)
        if verdicts[top] and name not in chosen:
            chosen.append(name)
    tops = {name.lstrip("?").split(".")[0] for name in chosen}
    for top in sorted(tops & set(RUNTIME_EXTRAS)):
        chosen += [f"?{extra}" for extra in RUNTIME_EXTRAS[top] if f"?{extra}" not in chosen]
    return chosen


def third_party(root, name):
    """Whether top-level module `name` resolves outside the project (and is not built in)."""
    if name in sys.builtin_module_names:
        return False
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return False
    if spec is None:
        return False
    origin = spec.origin
    if origin in (None, "built-in", "frozen"):
        locations = list(spec.submodule_search_locations or [])
        origin = locations[0] if locations else None
    return not (origin is None or origin in ("built-in", "frozen") or is_project_path(root, origin))


def thread_count():
    return len(os.listdir("/proc/self/task"))


# What the audit hook records into while a preload imports (a list), else None. A hook cannot
# be removed: outside preloading (and in every fork) it returns at once.
_recording = [None]


def audit(event, args):
    """Files read (`open` for reading), compiled or run (`exec`): a library can run a project
    file without importing it as a module (`spec_from_file_location` + `exec_module`, or
    `open` + `exec`), and `sys.modules` never shows it."""
    into = _recording[0]
    if into is None:
        return
    try:
        if event == "open":
            path, mode, flags = args
            reading = (mode is None and (flags or 0) & os.O_ACCMODE != os.O_WRONLY) or (
                mode is not None and ("r" in mode or "+" in mode))
            if reading and not isinstance(path, int):
                into.append(path)
        elif event == "compile" and len(args) > 1:
            into.append(args[1])
        elif event == "exec":
            into.append(getattr(args[0], "co_filename", None))
    except Exception:  # never fail the operation audited
        pass


def as_devrun_names(root, shown_root, path):
    """`path` as devrun names project files (under `shown_root`, the root devrun gave) when it
    is inside the project once symlinks are resolved (`root` is resolved), else its absolute
    path, or None when it is no file (`<string>`, a descriptor, or a relative name that is no
    file here: the stdlib of Windows' embeddable Python runs from a zip whose code objects
    name `keyword.py`)."""
    try:
        path = os.fsdecode(os.fspath(path))
    except TypeError:
        return None
    if not path or path.startswith("<"):
        return None
    if not os.path.isabs(path) and not os.path.exists(path):
        return None
    real = os.path.realpath(path)
    if real != root and real.startswith(root + os.sep):
        return os.path.join(shown_root, os.path.relpath(real, root))
    return os.path.abspath(path)


def sockets():
    """This process's sockets: {descriptor: its inode} (none where there is no /proc: only a
    fork needs them, and only Linux forks)."""
    found = {}
    try:
        fds = os.listdir("/proc/self/fd") if LINUX else []
    except OSError:
        return found
    for fd in fds:
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:"):
            found[int(fd)] = target
    return found


def describe_socket(fd):
    """`a TCP connection to 10.0.0.5:5432`, `a listening socket on 127.0.0.1:8000`, ..."""
    try:
        s = socket.socket(fileno=os.dup(fd))
    except OSError:
        return f"descriptor {fd}"
    with s:
        kind = {socket.AF_INET: "TCP", socket.AF_INET6: "TCP", socket.AF_UNIX: "Unix"}.get(
            s.family, str(s.family))
        if s.type == socket.SOCK_DGRAM:
            kind = "UDP" if kind == "TCP" else kind + " datagram"
        try:
            return f"a {kind} connection to {address(s.getpeername())}"
        except OSError:
            pass
        try:
            return f"a {kind} socket on {address(s.getsockname())}"
        except OSError:
            return f"a {kind} socket"


def address(addr):
    if isinstance(addr, tuple):
        return f"{addr[0]}:{addr[1]}"
    return os.fsdecode(addr) or "(unnamed)"


def refusal(name, opened):
    """Why preloading `name` cannot be forked from: a thread, or sockets every fork would share."""
    if thread_count() > 1:
        reason = f"preloading {name} started a thread"
        if "numpy" in sys.modules:
            # numpy's BLAS (OpenBLAS, MKL) starts its thread pool at import.
            reason += (
                " (numpy's BLAS thread pool: set OPENBLAS_NUM_THREADS=1 and"
                " OMP_NUM_THREADS=1 in [env] to preload it)"
            )
        return reason
    if opened:
        said = ", ".join(describe_socket(fd) for fd in sorted(opened))
        return (f"preloading {name} opened a socket, which every fork would share: {said} "
                "(open it when the app starts, not at import)")
    return None


def preload(sock, modules, root, shown_root=None, spare=False):
    """Imports `modules` one at a time (a name with `?` only if it is an installed module).
    Returns (every module with a file, with the preloaded name whose import loaded it; how many
    of `modules` were imported; every file inside the project (`root`, resolved) one of them
    read or ran, with that name), or None when refused (said). Files are named as devrun
    names them (under `shown_root`, the root it gave). A `spare` never forks: a thread or a
    socket is no reason to refuse."""
    shown_root = shown_root or root
    loaded_by, read_by, count = {}, {}, 0
    sys.addaudithook(audit)
    for name in modules:
        optional = name.startswith("?")
        name = name.lstrip("?")
        before, sockets_before = set(sys.modules), sockets()
        _recording[0] = reads = []
        try:
            if optional and (name in sys.modules or not findable(name)):
                continue
            importlib.import_module(name)
            count += 1
        except BaseException as e:  # the child would fail the same way: leave it to the child
            if not optional:
                send(sock, "skipped", module=name, error=f"{type(e).__name__}: {e}")
            continue
        finally:
            _recording[0] = None
        for new in set(sys.modules) - before:
            loaded_by[new] = name
        for path in reads:
            path = as_devrun_names(root, shown_root, path)
            if path and path.startswith(shown_root + os.sep):
                read_by.setdefault(path, name)
        # New sockets; a copy of the channel to devrun is no connection of the library's (and
        # anything it writes there is caught by the protocol).
        opened = {fd for fd, inode in sockets().items()
                  if sockets_before.get(fd) != inode and inode != sockets_before.get(sock.fileno())}
        reason = None if spare else refusal(name, opened)
        if reason:
            send(sock, "refused", reason=reason)
            return None
    loaded = []
    for name, module in list(sys.modules.items()):
        path = as_devrun_names(root, shown_root, getattr(module, "__file__", None))
        if isinstance(getattr(module, "__file__", None), str) and path:
            loaded.append({"name": name, "file": path, "by": loaded_by.get(name)})
    read = [{"file": path, "by": by} for path, by in sorted(read_by.items())]
    return loaded, count, read


def findable(name):
    """`a.b` is a module (not an attribute of module `a`) and is installed. Finding it imports
    its parent packages (`uvicorn.protocols.websockets` for an extra below it), which then
    count as imported by this name."""
    parent = name.rpartition(".")[0]
    if parent and parent in sys.modules and not hasattr(sys.modules[parent], "__path__"):
        return False
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def stamp(path):
    """What tells a file (or folder) changed: mtime and size, and inode and ctime too, which a
    rewrite that keeps size and mtime (`cp -p`, `rsync -t`, a tool restoring them) still
    changes. None if it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns)


def stamps(loaded):
    """Each loaded file's stamp."""
    return {module["file"]: stamp(module["file"]) for module in loaded}


def package_folders(root):
    """The folders on `sys.path` outside the project (a virtualenv's inside it too): a package
    installed or removed there (`pip install -e`: a new `.pth` and `.dist-info`) changes the
    folder's stamp, and only a fresh interpreter reads a new `.pth`."""
    folders = []
    for entry in sys.path:
        real = os.path.realpath(entry or ".")
        inside = real == root or real.startswith(root + os.sep)
        packages = "site-packages" in real or "dist-packages" in real
        if os.path.isdir(real) and (not inside or (packages and real != root)):
            folders.append(real)
    return folders


def first_stale(stamped):
    """The first file whose stamp differs from `stamped` (changed, gone or back), or None."""
    for path, before in stamped.items():
        if stamp(path) != before:
            return path
    return None


def reap(sock):
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        send(sock, "exited", pid=pid, status=status)


class Pipe:
    """Windows: the named pipe devrun serves, opened as a file; it carries lines only."""

    def __init__(self, name):
        self.file = open(name, "r+b", buffering=0)

    def sendall(self, data):
        view = memoryview(data)
        while view:
            view = view[self.file.write(view):]

    def read(self):
        try:
            return self.file.read(65536) or b""
        except OSError:  # devrun closed its end
            return b""

    def fileno(self):
        return self.file.fileno()

    def close(self):
        self.file.close()


def connect():
    """The channel devrun named: its Unix socket, or on Windows its named pipe."""
    pipe = os.environ.pop("DEVRUN_PRELOAD_PIPE", None)
    if pipe:
        return Pipe(pipe)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(os.environ.pop("DEVRUN_PRELOAD_SOCKET"))
    return sock


def receive(sock, pending):
    """Reads what devrun sent; descriptors passed with it (SCM_RIGHTS) go to `pending`."""
    if isinstance(sock, Pipe):
        return sock.read()
    data, ancillary, _, _ = sock.recvmsg(
        65536, socket.CMSG_SPACE(MAX_FDS * 4), getattr(socket, "MSG_CMSG_CLOEXEC", 0)
    )
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds = array.array("i")
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
            pending.extend(fds)
    return data


def serve(sock, stamped):
    """Forks on request; returns the request in the child, never in the preloader. A request
    it cannot read ends it (said as `error`)."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    buffer, pending = b"", []
    # Everything loaded so far lives as long as the preloader: the children's collections
    # need not walk it (nor touch, and so copy, its pages).
    gc.collect()
    gc.freeze()
    while True:
        try:
            ready, _, _ = select.select([sock, wake_r], [], [])
        except InterruptedError:
            continue
        if wake_r in ready:
            try:
                os.read(wake_r, 4096)
            except BlockingIOError:
                pass
            reap(sock)
        if sock not in ready:
            continue
        data = receive(sock, pending)
        if not data:
            sys.exit(0)  # devrun closed the channel; children die with us (pdeathsig)
        buffer += data
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            try:
                kind, request = read_request(line)
                if kind != "fork":
                    raise ProtocolError(f"a preloader forks; it was asked to {kind}")
            except ProtocolError as e:
                send(sock, "error", message=str(e))
                sys.exit(1)
            # The descriptors sent with this request, as (number in the child, ours). They
            # came with the line's first byte, so they are here by its end.
            targets = request["fds"]
            if len(pending) < len(targets):
                send(sock, "error", message=(
                    f"the fork request names {len(targets)} descriptors; {len(pending)} came"))
                sys.exit(1)
            fds = list(zip(targets, pending[: len(targets)]))
            del pending[: len(targets)]
            stale = first_stale(stamped)
            if stale:
                send(sock, "stale", file=stale)
                sys.exit(0)
            me = os.getpid()
            for stream in (sys.stdout, sys.stderr):
                stream.flush()  # else the child would write what is buffered once more
            pid = os.fork()
            if pid == 0:
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                for fd in (wake_r, wake_w):
                    os.close(fd)
                sock.close()
                request["parent"] = me
                request["fds"] = fds
                return request
            # Only the child holds them now: the pipes' ends close when it exits, and the
            # held socket is devrun's and this generation's alone.
            for _, fd in fds:
                os.close(fd)
            try:
                # The child does the same: whichever runs first, the group exists before
                # devrun hears of the pid and may signal it.
                os.setpgid(pid, pid)
            except OSError:
                pass  # the child already did (or is gone: devrun finds that out itself)
            send(sock, "forked", pid=pid)


def wait_to_run(sock, stamped):
    """A spare's wait: for its one `run` request, returned (with its descriptors, as a fork's
    child gets them) once it said `running`; `stale` (and exit) if a file it loaded changed;
    devrun closing the channel ends it."""
    buffer, pending = b"", []
    while b"\n" not in buffer:
        data = receive(sock, pending)
        if not data:
            sys.exit(0)
        buffer += data
    line = buffer.split(b"\n", 1)[0]
    try:
        kind, request = read_request(line)
        if kind != "run":
            raise ProtocolError(f"a spare runs once; it was asked to {kind}")
        if len(pending) < len(request["fds"]):
            raise ProtocolError(f"the run request names {len(request['fds'])} descriptors; "
                                f"{len(pending)} came")
    except ProtocolError as e:
        send(sock, "error", message=str(e))
        sys.exit(1)
    stale = first_stale(stamped)
    if stale:
        send(sock, "stale", file=stale)
        sys.exit(0)
    request["fds"] = list(zip(request["fds"], pending))
    send(sock, "running", pid=os.getpid())
    sock.close()
    return request


def place(fds):
    """Puts each received descriptor at its number (0 stdin, 1 stdout, 2 stderr, 3 the held
    socket), inheritable as in a cold start. Moved out of the way first: one may sit on
    another's number."""
    moved = [(target, fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)) for target, fd in fds]
    for _, fd in fds:
        os.close(fd)
    for target, fd in moved:
        os.dup2(fd, target)
        os.close(fd)


def set_title(title):
    """What `ps` shows for this process: the command it runs, not the preloader's. Written
    over the original argv area (as PostgreSQL and setproctitle do; never longer than it).
    Linux only."""
    if not LINUX:
        return
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end (proc(5) 48, 49)
    except (OSError, IndexError, ValueError):
        return
    size = end - start
    if start <= 0 or size <= 1:
        return
    text = title.encode(errors="replace")[: size - 1]
    ctypes.memmove(start, text + b"\0" * (size - len(text)), size)


def run_child(request, libc):
    """What `python -m MODULE args` or `python SCRIPT args` would do, in the forked child (or
    in the spare itself, which already leads its group and dies with devrun)."""
    if "parent" in request:
        os.setpgid(0, 0)
        pdeathsig(libc, request["parent"])
    place(request["fds"])
    os.environ.clear()
    os.environ.update(request["env"])
    if 3 in [target for target, _ in request["fds"]]:
        os.environ["LISTEN_FDS"] = "1"
        os.environ["LISTEN_PID"] = str(os.getpid())  # systemd's convention: this very process
    os.chdir(request["cwd"])
    if request["title"]:
        set_title(request["title"])
    held = bootstrap()
    args = request["args"]
    if held is not None:  # Windows: `{fd}` is the handle the socket got here
        args = [arg.replace("{fd}", str(held.fileno())) for arg in args]
    if request["module"]:
        sys.argv = [request["module"]] + args
        sys.path[0] = request["cwd"]
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
    else:
        script = os.path.abspath(request["script"])
        sys.argv = [request["script"]] + args
        sys.path[0] = os.path.dirname(script)
        runpy.run_path(script, run_name="__main__")


def bootstrap():
    """devrun's bootstrap (src/fast_stop/bootstrap.py, named by DEVRUN_FAST_STOP_SCRIPT), as a
    cold start runs it: on Windows the held socket handed to uvicorn (returned) and CTRL_BREAK
    as Ctrl-C; uvicorn's fast stop patched; the import report started."""
    script = os.environ.pop("DEVRUN_FAST_STOP_SCRIPT", None)
    if not script:
        return None
    spec = importlib.util.spec_from_file_location("_devrun_fast_stop", script)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except OSError:
        return None  # gone (devrun exited): the stock stop
    held = module.hand_over_socket()
    module.patch()
    report_imports(module)
    module.graceful_break()
    return held


def report_imports(bootstrap):
    """The bootstrap's import reporter, started in the child (a thread does not survive the
    fork): devrun watches the project files this generation imported (bootstrap.py)."""
    start = getattr(bootstrap, "report_imports", None)
    if start is not None:
        start()


def main():
    libc = None
    parent = int(os.environ.pop("DEVRUN_PRELOAD_PARENT"))
    if LINUX:
        libc = ctypes.CDLL(None, use_errno=True)
        pdeathsig(libc, parent)
    # Elsewhere a spare learns devrun is gone when the channel closes (and its job, on
    # Windows, dies with devrun).
    sock = connect()
    send(sock, "hello", version=PROTOCOL)
    try:
        spec = read_spec(os.environ.pop("DEVRUN_PRELOAD_SPEC", ""))
    except ProtocolError as e:
        send(sock, "error", message=str(e))
        sys.exit(1)
    root = os.path.realpath(spec["root"])
    if spec["script"]:
        sys.path[0] = os.path.dirname(os.path.abspath(spec["script"]))
    else:
        sys.path[0] = ""  # as with `-c` (the current folder), also when run from a file
    modules = spec["modules"]
    if modules is None:
        modules = auto_modules(root, spec["module"])
    result = preload(sock, modules, root, spec["root"], spare=spec["spare"])
    if result is None:
        sys.exit(0)
    loaded, count, read = result
    stamped = stamps(loaded + read)
    stamped.update((folder, stamp(folder)) for folder in package_folders(root))
    send(sock, "loaded", imported=count, modules=loaded, read=read)
    if spec["spare"]:
        return wait_to_run(sock, stamped), libc
    return serve(sock, stamped), libc


if __name__ == "__main__":
    child, libc = main()
    del main
    run_child(child, libc)
