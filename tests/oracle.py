"""Real uWSGI as a test oracle for uwcache.

This module runs operation sequences inside a real ``uwsgi`` process (installed from
PyPI) and hands the results back as ordinary Python objects, so tests can compare
uwcache against the behaviour of the implementation it re-implements.

It has no pytest dependency and does not import ``uwcache``.

Main entry points
-----------------
``find_uwsgi() -> str``
    Path of the uwsgi executable (``$UWCACHE_UWSGI``, else ``uwsgi`` next to
    ``sys.executable``, else ``$PATH``).

``run_ops(cache2, ops, *, extra_args=(), timeout=60, return_log=False, master=None,
cwd=None, env=None)``
    Start ``uwsgi --cache2 ... [extra_args] --pyrun <script>`` (no master unless
    needed), execute every op as ``getattr(uwsgi, op[0])(*op[1:])`` and return the list
    of results (or ``(results, log)`` with ``return_log=True``). An op that raises gives
    ``{"raises": "<ExceptionClassName>"}``. Pseudo-ops (handled by the script, not by
    the ``uwsgi`` module):

    * ``("sleep", seconds)``      -> None, ``time.sleep(seconds)``
    * ``("time",)``               -> ``time.time()`` (float) inside the uWSGI process
    * ``("read_file", path)``     -> the file's bytes (e.g. a live ``store=`` file:
      it is ``mmap``-ed ``MAP_SHARED`` so it shows the current cache memory)
    * ``("stats",)``              -> the stats-server JSON as a dict (its
      ``"caches"`` list is uwsgi-behaviour.md §8). Using it turns on
      ``--master`` and ``--stats 127.0.0.1:<free port>``: a master also starts the
      cache sweeper (every 3 s by default) and adds about 1 s to the run.

    Note ``("log", text)`` is not a pseudo-op: it calls ``uwsgi.log(text)``, which
    writes ``text`` into uWSGI's log, handy to locate the log lines an op produced.

    If uWSGI does not finish the script (bad ``--cache2`` -> exit 1, a crash such as
    SIGFPE, or ``timeout``) :class:`OracleError` is raised with ``.returncode``,
    ``.log`` and ``.results`` (the results of the ops completed before that).

    Without a master (the default) there is no cache sweeper and no UDP server thread;
    TTLs are then only enforced by ``lazy_expire``/``sweep_on_full``.

    Implementation note: in ``--pyrun`` mode uWSGI points the worker's fd 1 at its
    log (stderr), so the script's result lines are interleaved with uWSGI's log lines
    in the order they happened; they carry a per-run random marker and are removed
    from the log returned to callers.

``uwsgi_log() -> str``
    uWSGI's stderr+stdout text of the last ``run_ops``/``run_raw`` call (the result
    lines of the harness itself are removed; ``[uwcache-oracle] op N ... raised ...``
    lines give the message of each exception an op raised).

``run_raw(args, *, timeout=60, cwd=None, env=None) -> RawRun``
    Run ``uwsgi <args>`` to completion (e.g. to check that a bad ``--cache2`` exits
    with an error). ``RawRun`` has ``returncode``, ``stdout``, ``stderr``, ``log``.

``start_uwsgi_server(args, *, ready_log=None, wait_ports=None, timeout=30, cwd=None,
env=None)``
    Context manager running a long-lived uWSGI. Placeholders in ``args`` are
    replaced by free 127.0.0.1 ports: ``{port}``/``{port0}``, ``{port1}``, ... (TCP)
    and ``{udp}``/``{udp0}``, ``{udp1}``, ... (UDP). It waits until every TCP
    placeholder port accepts connections (and ``ready_log`` appears in the log, if
    given), yields a :class:`UwsgiServer` (``.ports`` dict, ``.tcp_ports``,
    ``.udp_ports``, ``.proc``, ``.log()``, ``.wait_for_log()``, ``.stop()``) and
    kills the whole process group on exit.

``free_port(kind="tcp") -> int``
    A currently free TCP or UDP port on 127.0.0.1.

Argument/result encoding: bytes, bytearray, tuples and lists (nested) survive the
JSON hop in both directions; str, int (any size), float, bool and None are native.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Optional, Sequence, Union

__all__ = [
    "OracleError",
    "RawRun",
    "UwsgiServer",
    "find_uwsgi",
    "free_port",
    "run_ops",
    "run_raw",
    "start_uwsgi_server",
    "uwsgi_log",
    "PSEUDO_OPS",
]

PSEUDO_OPS = ("sleep", "time", "read_file", "stats")

INSTALL_HINT = (
    "real uWSGI is needed as the test oracle but no uwsgi executable was found. "
    "Install it into the interpreter's environment (`python -m pip install uwsgi`, "
    "it compiles from source in about a minute and needs gcc and the Python headers) "
    "or point UWCACHE_UWSGI at a uwsgi binary."
)


class OracleError(RuntimeError):
    """uWSGI did not run the ops to completion (bad config, crash, timeout...)."""

    def __init__(self, message: str, *, log: str = "", returncode: Optional[int] = None,
                 results: Optional[list] = None):
        super().__init__(message)
        self.log = log
        self.returncode = returncode
        #: results of the ops that completed before the failure
        self.results = results if results is not None else []

    def __str__(self) -> str:  # include the log tail, it is what explains the failure
        base = super().__str__()
        tail = "\n".join(self.log.splitlines()[-40:])
        return f"{base} (returncode={self.returncode})\n--- uWSGI log (tail) ---\n{tail}"


# --------------------------------------------------------------------------- locating

def find_uwsgi() -> str:
    """Return the path of the uwsgi executable or raise RuntimeError with a hint."""
    env = os.environ.get("UWCACHE_UWSGI")
    if env:
        if os.path.isfile(env) and os.access(env, os.X_OK):
            return env
        found = shutil.which(env)
        if found:
            return found
        raise RuntimeError(f"UWCACHE_UWSGI={env!r} is not an executable file. {INSTALL_HINT}")
    # next to the running interpreter (same venv); do not resolve symlinks, a venv's
    # python is usually a symlink to the system interpreter
    candidate = os.path.join(os.path.dirname(sys.executable), "uwsgi")
    if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
        return candidate
    found = shutil.which("uwsgi")
    if found:
        return found
    raise RuntimeError(INSTALL_HINT)


# --------------------------------------------------------------------------- encoding

def _encode(obj: Any) -> Any:
    if isinstance(obj, bytes):
        return {"b64": base64.b64encode(obj).decode("ascii")}
    if isinstance(obj, bytearray):
        return {"bytearray": base64.b64encode(bytes(obj)).decode("ascii")}
    if isinstance(obj, memoryview):
        return {"b64": base64.b64encode(obj.tobytes()).decode("ascii")}
    if isinstance(obj, tuple):
        return {"tuple": [_encode(x) for x in obj]}
    if isinstance(obj, list):
        return [_encode(x) for x in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"oracle cannot pass {type(obj).__name__} values to uWSGI: {obj!r}")


def _decode(obj: Any) -> Any:
    if isinstance(obj, list):
        return [_decode(x) for x in obj]
    if isinstance(obj, dict) and len(obj) == 1:
        ((tag, val),) = obj.items()
        if tag == "b64":
            return base64.b64decode(val)
        if tag == "bytearray":
            return bytearray(base64.b64decode(val))
        if tag == "tuple":
            return tuple(_decode(x) for x in val)
        if tag == "json":
            return val
        if tag == "raises":
            return {"raises": val}
    if isinstance(obj, dict):
        return {k: _decode(v) for k, v in obj.items()}
    return obj


# The script executed by uWSGI (--pyrun). Kept free of any uWSGI source text; it uses
# only the stdlib plus the embedded `uwsgi` module. Results are streamed one line per op
# so that a crash in the middle (e.g. SIGFPE) still leaves the earlier results.
_SCRIPT = r'''
import base64, json, socket, sys, time, traceback
import uwsgi

OPS_FILE = %(ops_file)r
MARK = %(mark)r
STATS_PORT = %(stats_port)r


def dec(o):
    if isinstance(o, list):
        return [dec(x) for x in o]
    if isinstance(o, dict):
        (tag, val), = o.items()
        if tag == "b64":
            return base64.b64decode(val)
        if tag == "bytearray":
            return bytearray(base64.b64decode(val))
        if tag == "tuple":
            return tuple(dec(x) for x in val)
        raise ValueError("bad tag %%r" %% tag)
    return o


def enc(o):
    if isinstance(o, bytes):
        return {"b64": base64.b64encode(o).decode("ascii")}
    if isinstance(o, bytearray):
        return {"bytearray": base64.b64encode(bytes(o)).decode("ascii")}
    if isinstance(o, tuple):
        return {"tuple": [enc(x) for x in o]}
    if isinstance(o, list):
        return [enc(x) for x in o]
    if isinstance(o, dict):
        return {"json": o}
    if o is None or isinstance(o, (bool, int, float, str)):
        return o
    return {"repr": repr(o)}


def stats():
    deadline = time.time() + 10
    while True:
        try:
            s = socket.create_connection(("127.0.0.1", STATS_PORT), timeout=5)
            break
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.02)
    chunks = []
    with s:
        while True:
            c = s.recv(65536)
            if not c:
                break
            chunks.append(c)
    return json.loads(b"".join(chunks).decode("utf-8"))


def run(op):
    name, args = op[0], op[1:]
    if name == "sleep":
        time.sleep(*args)
        return None
    if name == "time":
        return time.time()
    if name == "read_file":
        with open(args[0], "rb") as f:
            return f.read()
    if name == "stats":
        return stats()
    return getattr(uwsgi, name)(*args)


def emit(line):
    sys.stdout.write(MARK + " " + line + "\n")
    sys.stdout.flush()


with open(OPS_FILE) as f:
    OPS = [dec(op) for op in json.load(f)]

for i, op in enumerate(OPS):
    try:
        res = enc(run(op))
    except BaseException as e:
        res = {"raises": type(e).__name__}
        sys.stderr.write("[uwcache-oracle] op %%d %%s raised %%s: %%s\n"
                         %% (i, op[0], type(e).__name__, e))
        sys.stderr.flush()
    emit("R %%d %%s" %% (i, json.dumps(res)))
emit("END")
'''


# --------------------------------------------------------------------------- runs

@dataclass
class RawRun:
    args: list
    returncode: int
    stdout: str
    stderr: str

    @property
    def log(self) -> str:
        return self.stderr + self.stdout


_last_log: str = ""


def uwsgi_log() -> str:
    """uWSGI's own output (stderr then stdout, harness result lines removed) of the
    last run_ops()/run_raw() call in this process (also after an OracleError)."""
    return _last_log


def _run_process(argv: Sequence[str], timeout: float, cwd, env) -> tuple:
    """Run to completion; returns (returncode, stdout, stderr, timed_out). On timeout
    the whole process group is killed and the output so far is returned."""
    proc = subprocess.Popen(
        list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, cwd=cwd, env=env, start_new_session=True,
    )
    timed_out = False
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc)
        out, err = proc.communicate()
    finally:
        if proc.poll() is None:  # pragma: no cover - interrupted
            _kill_group(proc)
    # make sure no stray worker of this run survives its master
    _kill_group(proc, quiet=True)
    return proc.returncode, _text(out), _text(err), timed_out


def _text(b: Optional[bytes]) -> str:
    return (b or b"").decode("utf-8", "replace")


def _kill_group(proc: subprocess.Popen, quiet: bool = False) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if not quiet:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            pass


def run_raw(args: Sequence[str], *, timeout: float = 60, cwd=None, env=None) -> RawRun:
    """Run ``uwsgi <args>`` until it exits; return code and output (no harness script)."""
    global _last_log
    argv = [find_uwsgi(), *args]
    rc, out, err, timed_out = _run_process(argv, timeout, cwd, env)
    run = RawRun(argv, rc, out, err)
    _last_log = run.log
    if timed_out:
        raise OracleError(f"uWSGI did not exit within {timeout} s: {' '.join(argv)}",
                          log=run.log, returncode=rc)
    return run


def _as_list(cache2: Union[str, Iterable[str], None]) -> list:
    if cache2 is None:
        return []
    if isinstance(cache2, str):
        return [cache2]
    return list(cache2)


def run_ops(cache2: Union[str, Sequence[str], None], ops: Sequence[Sequence[Any]], *,
            extra_args: Sequence[str] = (), timeout: float = 60, return_log: bool = False,
            master: Optional[bool] = None, cwd=None, env=None):
    """Run ``ops`` inside one real uWSGI process and return their results.

    ``cache2``: one ``--cache2`` value or a list of them (``[]`` = no cache at all).
    ``ops``: sequence of tuples ``(function_name, *args)``; see the module docstring for
    pseudo-ops. ``master``: force ``--master`` on/off; by default it is added only when
    a ``("stats",)`` op needs the stats server.

    Returns the list of results, or ``(results, log)`` if ``return_log``. Raises
    :class:`OracleError` when uWSGI does not complete the script (configuration error,
    crash, timeout); ``err.results`` holds the results obtained before that.
    """
    global _last_log
    ops = [tuple(op) for op in ops]
    for op in ops:
        if not op or not isinstance(op[0], str):
            raise ValueError(f"an op must be a tuple (name, *args), got {op!r}")
    uses_stats = any(op[0] == "stats" for op in ops)
    if master is None:
        master = uses_stats
    if uses_stats and not master:
        raise ValueError("the ('stats',) pseudo-op needs master=True")

    mark = "@@UWCACHE-ORACLE-" + secrets.token_hex(8) + "@@"
    uwsgi_bin = find_uwsgi()
    with tempfile.TemporaryDirectory(prefix="uwcache-oracle-") as tmp:
        ops_file = os.path.join(tmp, "ops.json")
        script = os.path.join(tmp, "oracle_script.py")
        stats_port = free_port("tcp") if uses_stats else None
        with open(ops_file, "w") as f:
            json.dump([_encode(list(op)) for op in ops], f)
        with open(script, "w") as f:
            f.write(_SCRIPT % {"ops_file": ops_file, "mark": mark, "stats_port": stats_port})

        argv = [uwsgi_bin]
        for c in _as_list(cache2):
            argv += ["--cache2", c]
        argv += list(extra_args)
        if master:
            argv += ["--master"]
        if uses_stats:
            argv += ["--stats", f"127.0.0.1:{stats_port}"]
        argv += ["--pyrun", script]

        rc, out, err, timed_out = _run_process(argv, timeout, cwd, env)

    results: dict = {}
    done = False
    other_lines = []
    prefix = mark + " "
    # uWSGI points the worker's stdout at its log (stderr), so look in both streams
    for line in (err + out).splitlines(keepends=True):
        if line.startswith(prefix):
            body = line[len(prefix):].rstrip("\n")
            if body == "END":
                done = True
            else:
                _, idx, payload = body.split(" ", 2)
                results[int(idx)] = _decode(json.loads(payload))
        else:
            other_lines.append(line)
    log = "".join(other_lines)
    _last_log = log
    ordered = [results[i] for i in sorted(results)]
    if timed_out:
        raise OracleError(
            f"uWSGI did not finish within {timeout} s "
            f"({len(ordered)}/{len(ops)} ops done): {' '.join(argv)}",
            log=log, returncode=rc, results=ordered,
        )
    if not done:
        raise OracleError(
            f"uWSGI did not run the oracle script to completion "
            f"({len(ordered)}/{len(ops)} ops done): {' '.join(argv)}",
            log=log, returncode=rc, results=ordered,
        )
    return (ordered, log) if return_log else ordered


# --------------------------------------------------------------------------- ports

_handed_out: set = set()


def free_port(kind: str = "tcp") -> int:
    """Return a port that is currently free on 127.0.0.1 (``kind``: "tcp" or "udp").

    The same port is not returned twice by this process (as long as the OS offers
    others), which avoids collisions when several ports are picked before any is bound.
    """
    if kind not in ("tcp", "udp"):
        raise ValueError("kind must be 'tcp' or 'udp'")
    stype = socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM
    for _ in range(50):
        with socket.socket(socket.AF_INET, stype) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        # make sure the other protocol is free too, so a port is usable for both
        other = socket.SOCK_DGRAM if kind == "tcp" else socket.SOCK_STREAM
        try:
            with socket.socket(socket.AF_INET, other) as s2:
                s2.bind(("127.0.0.1", port))
        except OSError:
            continue
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    return port


# --------------------------------------------------------------------------- servers

_PLACEHOLDER = re.compile(r"\{(port|udp)(\d*)\}")


class UwsgiServer:
    """A running long-lived uWSGI started by :func:`start_uwsgi_server`."""

    def __init__(self, proc: subprocess.Popen, argv: list, ports: dict, log_path: str):
        self.proc = proc
        self.argv = argv
        #: placeholder name -> port, e.g. {"port0": 40001, "port1": 40002, "udp0": 40003}
        self.ports = ports
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def tcp_ports(self) -> list:
        return [self.ports[k] for k in sorted(
            (k for k in self.ports if k.startswith("port")), key=lambda k: int(k[4:]))]

    @property
    def udp_ports(self) -> list:
        return [self.ports[k] for k in sorted(
            (k for k in self.ports if k.startswith("udp")), key=lambda k: int(k[3:]))]

    @property
    def port(self) -> int:
        """The first TCP placeholder port ({port}/{port0})."""
        return self.ports["port0"]

    def log(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_for_log(self, text: str, timeout: float = 10, start: int = 0) -> str:
        """Wait until ``text`` appears in the log (after character ``start``)."""
        deadline = time.monotonic() + timeout
        while True:
            log = self.log()
            if text in log[start:]:
                return log
            if self.proc.poll() is not None:
                raise OracleError(f"uWSGI exited while waiting for {text!r}",
                                  log=log, returncode=self.proc.returncode)
            if time.monotonic() > deadline:
                raise OracleError(f"{text!r} did not appear in the uWSGI log within "
                                  f"{timeout} s", log=log, returncode=self.proc.poll())
            time.sleep(0.02)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, graceful: bool = True, timeout: float = 10) -> int:
        """Stop the server: SIGINT to the master first (if ``graceful``), then SIGKILL
        to the whole process group. Returns the exit code."""
        if self.proc.poll() is None and graceful:
            try:
                self.proc.send_signal(signal.SIGINT)
                self.proc.wait(timeout=timeout)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                pass
        _kill_group(self.proc)
        return self.proc.returncode


def _wait_tcp(port: int, proc: subprocess.Popen, deadline: float) -> None:
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise TimeoutError(port)
        time.sleep(0.02)


@contextlib.contextmanager
def start_uwsgi_server(args: Sequence[str], *, ready_log: Optional[str] = None,
                       wait_ports: Optional[Sequence[int]] = None, timeout: float = 30,
                       cwd=None, env=None) -> Iterator[UwsgiServer]:
    """Run a long-lived uWSGI for the duration of a ``with`` block.

    ``args`` are uWSGI arguments; ``{port}``, ``{port0}``, ``{port1}``... are replaced by
    free TCP ports and ``{udp}``, ``{udp0}``... by free UDP ports (all meant for
    127.0.0.1; ``{port}`` is ``{port0}``, ``{udp}`` is ``{udp0}``). Typical use::

        with start_uwsgi_server(["--master", "--die-on-term",
                                 "--cache2", "name=c,items=10,udp=127.0.0.1:{udp}",
                                 "--socket", "127.0.0.1:{port}",
                                 "--wsgi-file", app]) as srv:
            srv.port, srv.ports["udp0"], srv.log()

    Readiness: every TCP placeholder port (or ``wait_ports``) accepts a connection and
    ``ready_log`` (if given) is in the log; with neither, the log must show a spawned
    worker. The process group is killed when the block ends.
    """
    ports: dict = {}

    def repl(m: "re.Match") -> str:
        kind, idx = m.group(1), m.group(2) or "0"
        key = f"{kind}{int(idx)}"
        if key not in ports:
            ports[key] = free_port("tcp" if kind == "port" else "udp")
        return str(ports[key])

    argv = [find_uwsgi(), *[_PLACEHOLDER.sub(repl, str(a)) for a in args]]
    tmpdir = tempfile.mkdtemp(prefix="uwcache-oracle-srv-")
    log_path = os.path.join(tmpdir, "uwsgi.log")
    logf = open(log_path, "wb")
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf,
                                stderr=subprocess.STDOUT, cwd=cwd, env=env,
                                start_new_session=True)
    finally:
        logf.close()
    server = UwsgiServer(proc, argv, ports, log_path)
    try:
        deadline = time.monotonic() + timeout
        tcp = list(wait_ports) if wait_ports is not None else server.tcp_ports
        try:
            for p in tcp:
                _wait_tcp(p, proc, deadline)
            if ready_log is not None:
                server.wait_for_log(ready_log, timeout=max(0.1, deadline - time.monotonic()))
            elif not tcp:
                server.wait_for_log("spawned uWSGI", timeout=max(0.1, deadline - time.monotonic()))
        except (TimeoutError, OracleError) as e:
            raise OracleError(f"uWSGI server did not become ready ({e}): {' '.join(argv)}",
                              log=server.log(), returncode=proc.poll()) from None
        yield server
    finally:
        server.stop(graceful=False)
        shutil.rmtree(tmpdir, ignore_errors=True)
