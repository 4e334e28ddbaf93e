# The preloader's side of its protocol with devrun (src/preload/protocol.rs mirrors it): the
# keys of every message kind, checked on the way in and out. devrun runs this file and runner.py
# as one script (`python -c`, this one first); the unit tests import runner, which imports this.
import json

# The protocol version: devrun's must be the same (it checks our hello; we check its spec).
PROTOCOL = 3


class ProtocolError(Exception):
    """devrun sent something this preloader cannot read (or this preloader would send
    something devrun cannot)."""


# A value's check: (what it must be, the test).
TEXT = ("a string", lambda v: isinstance(v, str))
NUMBER = ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool))


def optional(check):
    return (f"{check[0]} or null", lambda v: v is None or check[1](v))


def list_of(check, plural):
    return (f"a list of {plural}", lambda v: isinstance(v, list) and all(map(check[1], v)))


TEXTS = ("an object of strings", lambda v: isinstance(v, dict) and all(
    isinstance(k, str) and isinstance(x, str) for k, x in v.items()))
MODULE = {"name": TEXT, "file": TEXT, "by": optional(TEXT)}
MODULES = ("a list of modules", lambda v: isinstance(v, list) and all(
    is_message(m, MODULE) for m in v))
READ = {"file": TEXT, "by": TEXT}
READS = ("a list of files read", lambda v: isinstance(v, list) and all(
    is_message(m, READ) for m in v))

# What devrun gives when it starts us (DEVRUN_PRELOAD_SPEC).
SPEC = {
    "version": NUMBER,
    "root": TEXT,
    "modules": optional(list_of(TEXT, "strings")),  # null: "auto"
    "module": optional(TEXT),
    "script": optional(TEXT),
    "spare": ("a boolean", lambda v: isinstance(v, bool)),
}
# What devrun asks, by kind.
RUN = {
    "env": TEXTS, "cwd": TEXT, "module": optional(TEXT), "script": optional(TEXT),
    "args": list_of(TEXT, "strings"), "fds": list_of(NUMBER, "integers"), "title": TEXT,
}
# "fork" to a preloader, "run" (once) to a spare.
REQUESTS = {"fork": RUN, "run": RUN}
# What we say, by kind.
REPLIES = {
    "hello": {"version": NUMBER},
    "skipped": {"module": TEXT, "error": TEXT},
    "refused": {"reason": TEXT},
    "loaded": {"imported": NUMBER, "modules": MODULES, "read": READS},
    "forked": {"pid": NUMBER},
    "running": {"pid": NUMBER},
    "stale": {"file": TEXT},
    "exited": {"pid": NUMBER, "status": NUMBER},
    "error": {"message": TEXT},
}


def is_message(value, keys):
    try:
        check(value, keys, "")
        return True
    except ProtocolError:
        return False


def check(message, keys, what):
    """`message` is an object with exactly `keys`, each value as its check says; returns it.
    Else ProtocolError, saying what is wrong with `what`."""
    if not isinstance(message, dict):
        raise ProtocolError(f"{what} is not an object: {message!r:.200}")
    missing = sorted(set(keys) - set(message))
    unknown = sorted(set(message) - set(keys))
    if missing or unknown:
        said = [f"lacks {', '.join(missing)}"] if missing else []
        said += [f"has unknown {', '.join(unknown)}"] if unknown else []
        raise ProtocolError(f"{what} {' and '.join(said)}")
    for key, (must_be, test) in keys.items():
        if not test(message[key]):
            raise ProtocolError(f"{what}: `{key}` must be {must_be}, not {message[key]!r:.200}")
    return message


def read_spec(text):
    """devrun's spec, checked (its protocol version must be ours)."""
    try:
        spec = json.loads(text)
    except ValueError as e:
        raise ProtocolError(f"the spec is not JSON ({e})")
    check(spec, SPEC, "the spec")
    if spec["version"] != PROTOCOL:
        raise ProtocolError(
            f"devrun speaks protocol version {spec['version']}, this preloader {PROTOCOL}")
    return spec


def read_request(line):
    """One request line from devrun, checked: (kind, its fields)."""
    try:
        request = json.loads(line)
    except ValueError as e:
        raise ProtocolError(f"a request is not JSON ({e}): {line!r:.200}")
    if not isinstance(request, dict) or request.get("kind") not in REQUESTS:
        raise ProtocolError(f"a request of no known kind: {request!r:.200}")
    kind = request.pop("kind")
    check(request, REQUESTS[kind], f"the {kind} request")
    if not (request["module"] or request["script"]):
        raise ProtocolError(f"the {kind} request names neither a module nor a script")
    return kind, request


def reply(kind, **fields):
    """The line saying `kind` with `fields` (checked: devrun would refuse anything else)."""
    if kind not in REPLIES:
        raise ProtocolError(f"no reply is called {kind}")
    check(fields, REPLIES[kind], f"the {kind} reply")
    return (json.dumps({"kind": kind, **fields}) + "\n").encode()


def send(sock, kind, **fields):
    sock.sendall(reply(kind, **fields))
