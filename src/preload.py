# devrun's preloader (embedded in the devrun binary, run as `python -c`; see src/preload.rs).
# It imports third-party modules once, then forks one child per generation. It never serves
# and never imports project code on purpose: devrun checks what it loaded with its watch filter.
# Protocol: one JSON object per line over the Unix socket named by DEVRUN_PRELOAD_SOCKET.
import array
import ast
import ctypes
import gc
import importlib
import importlib.util
import json
import os
import runpy
import fcntl
import select
import signal
import socket
import sys

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


def send(sock, obj):
    sock.sendall((json.dumps(obj) + "\n").encode())


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


def preload(sock, modules):
    """Imports `modules` one at a time. Returns the loaded files, or None when refused."""
    loaded_by, count = {}, 0
    for name in modules:
        optional = name.startswith("?")
        name = name.lstrip("?")
        before = set(sys.modules)
        try:
            if optional and (name in sys.modules or not findable(name)):
                continue
            importlib.import_module(name)
            count += 1
        except BaseException as e:  # the child would fail the same way: leave it to the child
            if not optional:
                send(sock, {"skipped": name, "error": f"{type(e).__name__}: {e}"})
            continue
        for new in set(sys.modules) - before:
            loaded_by[new] = name
        if thread_count() > 1:
            reason = f"preloading {name} started a thread"
            if "numpy" in sys.modules:
                # numpy's BLAS (OpenBLAS, MKL) starts its thread pool at import.
                reason += (
                    " (numpy's BLAS thread pool: set OPENBLAS_NUM_THREADS=1 and"
                    " OMP_NUM_THREADS=1 in [env] to preload it)"
                )
            send(sock, {"refused": reason})
            return None
    loaded = []
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if isinstance(path, str):
            loaded.append([name, os.path.abspath(path), loaded_by.get(name, "")])
    return loaded, count


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


def stamps(loaded):
    result = {}
    for _, path, _ in loaded:
        try:
            st = os.stat(path)
            result[path] = (st.st_mtime_ns, st.st_size)
        except OSError:
            result[path] = None
    return result


def first_stale(stamped):
    for path, before in stamped.items():
        try:
            st = os.stat(path)
            now = (st.st_mtime_ns, st.st_size)
        except OSError:
            now = None
        if now != before:
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
        send(sock, {"exited": pid, "status": status})


def receive(sock, pending):
    """Reads what devrun sent; descriptors passed with it (SCM_RIGHTS) go to `pending`."""
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
    """Forks on request; returns the request in the child, never in the preloader."""
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
            request = json.loads(line)
            # The descriptors sent with this request, as (number in the child, ours).
            targets = request.get("fds", [])
            fds = list(zip(targets, pending[: len(targets)]))
            del pending[: len(targets)]
            stale = first_stale(stamped)
            if stale:
                send(sock, {"stale": stale})
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
            send(sock, {"forked": pid})


def place(fds):
    """Puts each received descriptor at its number (0 stdin, 2 stderr, 3 the held socket),
    inheritable as in a cold start. Moved out of the way first: one may sit on another's
    number."""
    moved = [(target, fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)) for target, fd in fds]
    for _, fd in fds:
        os.close(fd)
    for target, fd in moved:
        os.dup2(fd, target)
        os.close(fd)


def set_title(title):
    """What `ps` shows for this process: the command it runs, not the preloader's. Written
    over the original argv area (as PostgreSQL and setproctitle do; never longer than it)."""
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
    """What `python -m MODULE args` or `python SCRIPT args` would do, in the forked child."""
    os.setpgid(0, 0)
    pdeathsig(libc, request["parent"])
    place(request["fds"])
    os.environ.clear()
    os.environ.update(request["env"])
    if 3 in [target for target, _ in request["fds"]]:
        os.environ["LISTEN_FDS"] = "1"
        os.environ["LISTEN_PID"] = str(os.getpid())  # systemd's convention: this very process
    os.chdir(request["cwd"])
    if request.get("title"):
        set_title(request["title"])
    if request.get("module"):
        sys.argv = [request["module"]] + request["args"]
        sys.path[0] = request["cwd"]
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
    else:
        script = os.path.abspath(request["script"])
        sys.argv = [request["script"]] + request["args"]
        sys.path[0] = os.path.dirname(script)
        runpy.run_path(script, run_name="__main__")


def main():
    libc = ctypes.CDLL(None, use_errno=True)
    pdeathsig(libc, int(os.environ.pop("DEVRUN_PRELOAD_PARENT")))
    spec = json.loads(os.environ.pop("DEVRUN_PRELOAD_SPEC"))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(os.environ.pop("DEVRUN_PRELOAD_SOCKET"))
    root = os.path.realpath(spec["root"])
    if spec.get("script"):
        sys.path[0] = os.path.dirname(os.path.abspath(spec["script"]))
    modules = spec["modules"]
    if modules is None:
        modules = auto_modules(root, spec.get("module"))
    result = preload(sock, modules)
    if result is None:
        sys.exit(0)
    loaded, count = result
    stamped = stamps(loaded)
    send(sock, {"loaded": loaded, "modules": count})
    return serve(sock, stamped), libc


if __name__ == "__main__":
    child, libc = main()
    del main
    run_child(child, libc)
