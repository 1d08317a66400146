"""The ``uwcache`` command: run a node in the foreground, and tools that read and write caches.

``uwcache run`` is what uWSGI's master does for its caches (create or attach them, preload,
sweep, flush stores), as a process of its own. Every other command attaches caches by name
straight from shared memory, so it works with or without a running node.

Exit codes: 0 success, 1 error (message on stderr; for ``get``/``del``: the key is missing),
2 bad command line, 130 interrupted.
"""

from __future__ import annotations

import argparse
import difflib
import fcntl
import json
import logging
import os
import pprint
import runpy
import signal
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from . import __version__, _fs
from ._engine import FORMAT_VERSION
from .cache import Cache, attach, list_caches, namespace_dir, region_path, shm_dir
from .config import Caching
from .errors import CacheError, CLIError, ConfigError, NotAnInteger, OptionError, UnknownCache
from .net.stats import parse_address
from .node import FullWatch, describe_cache
from .options import _human_size, cache_options, resolve_namespace
from .stats import NamespaceStats, prometheus_text, stats_json
from .uwsgi_config import format_cache2

log = logging.getLogger("uwcache")

# The cache `uwcache run` creates when given no configuration. Bitmap mode so one cache takes
# small and large values alike; about 18 MiB, which fits Docker's default 64 MiB /dev/shm.
# the one default geometry (config.DEFAULT_GEOMETRY), as the cache2 line the start-up log shows
DEFAULT_CACHE2 = format_cache2(cache_options("default", {}))

# uWSGI options `run` accepts on its command line, as in an ini file; flags take no value.
UWSGI_RUN_OPTIONS = {
    "--cache2": "CACHE2",
    "--cache-expire-freq": "SECONDS",
    "--add-cache-item": "[CACHE ]KEY=VALUE",
    "--load-file-in-cache": "[CACHE ]PATH",
    "--load-file-in-cache-gzip": "[CACHE ]PATH",
}
UWSGI_RUN_FLAGS = ("--cache-report-freed-items", "--cache-no-expire")


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _arg_bytes(text: str) -> bytes:
    """argv text back to the exact bytes typed (Python decodes argv with surrogateescape)."""
    return os.fsencode(text)


def _show(data: bytes) -> str:
    return data.decode("utf-8", errors="backslashreplace")


def known_namespaces() -> List[str]:
    """Namespaces that have a directory in the shared-memory directory."""
    try:
        entries = sorted(os.listdir(shm_dir()))
    except OSError:
        return []
    return [e[len("uwcache-"):] for e in entries
            if e.startswith("uwcache-") and os.path.isdir(os.path.join(shm_dir(), e))]


def _has_caches(namespace: str) -> bool:
    try:
        return bool(list_caches(namespace))
    except CacheError:  # a directory we do not trust (another user's): not offered as a hint
        return False


def _did_you_mean(word: str, choices: Sequence[str]) -> str:
    """' (did you mean 'x'?)' for the closest choice, '' when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _require_namespace(namespace: str) -> List[str]:
    """The caches of a namespace; CLIError when it has none."""
    names = list_caches(namespace)
    if not names:
        with_caches = [n for n in known_namespaces() if n != namespace and _has_caches(n)]
        # a guess at a typo, never the list of every namespace of the machine (of every user)
        raise CLIError(f"namespace {namespace!r} has no caches{_did_you_mean(namespace, with_caches)} "
                       f"(looked in {namespace_dir(namespace)}). "
                       "Start a node with `uwcache run`, or pass --namespace / set UWCACHE_NAMESPACE")
    return names


def _unknown_cache(name: str, namespace: str, names: Sequence[str]) -> CLIError:
    return CLIError(f"no cache named {name!r} in namespace {namespace!r}{_did_you_mean(name, names)} "
                    f"(caches there: {', '.join(names)})")


def _open(name: str, namespace: str) -> Cache:
    """Attach a cache by name, with messages that say what exists instead."""
    names = _require_namespace(namespace)
    if name not in names:
        raise _unknown_cache(name, namespace, names)
    return attach(name, namespace=namespace)


def _write_stdout(data: bytes) -> None:
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


# --------------------------------------------------------------------------------------------
# Configuration of `run`
# --------------------------------------------------------------------------------------------


class _UwsgiOption(argparse.Action):
    """Collect uWSGI options in command-line order, as (option, value) pairs."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: Optional[str] = None) -> None:
        collected = list(getattr(namespace, self.dest) or [])
        collected.append((option_string or "", "true" if self.nargs == 0 else values))
        setattr(namespace, self.dest, collected)


def _split_ini_argument(argument: str) -> Tuple[str, str]:
    """``file.ini`` or uWSGI's ``file.ini:section``."""
    if not os.path.exists(argument) and ":" in argument:
        path, _colon, section = argument.rpartition(":")
        if path and section:
            return path, section
    return argument, "uwsgi"


def caching_from_uwsgi_options(ini: Optional[str], options: Sequence[Tuple[str, str]],
                               namespace: Optional[str], secret: Optional[str] = None) -> Caching:
    """A Caching from an ini file and/or uWSGI options given on the command line.

    The command-line options are read after the file's section, so they mean exactly what
    they mean to uWSGI (nameless preloads go into every cache, caches are created in order).
    An error in one of them names the option as it was typed, not a line.
    """
    path, section = (None, "uwsgi") if ini is None else _split_ini_argument(ini)
    if path is not None and not os.path.exists(path):
        raise CLIError(f"ini file {path!r} does not exist")
    pairs = []
    for option, value in options:
        if "\n" in value or "\r" in value:
            raise CLIError(f"{option} {value!r}: a value cannot contain a line break")
        pairs.append((option[2:], value))  # uWSGI's name for "--cache2" is "cache2"
    try:
        return Caching.from_uwsgi_options(pairs, ini=path, section=section, namespace=namespace, secret=secret)
    except OptionError as exc:
        if exc.line is not None:  # a line of the ini file: its message names the file and line
            raise
        raise ConfigError(f"--{exc.option} {exc.value!r}: {exc.detail}") from None


def caching_from_python(path: str, namespace: Optional[str]) -> Caching:
    """Run a Python configuration file; it must define ``caching``: a Caching, or a function
    without arguments that returns one."""
    if not os.path.isfile(path):
        raise CLIError(f"config file {path!r} does not exist")
    if namespace is not None:  # so a bare Caching() in the file lands in the chosen namespace
        os.environ["UWCACHE_NAMESPACE"] = namespace
    directory = os.path.dirname(os.path.abspath(path))
    if directory not in sys.path:  # the file may import its neighbours
        sys.path.insert(0, directory)
    try:
        scope = runpy.run_path(path, run_name="__uwcache_config__")
    except CacheError:
        raise
    except SystemExit:
        raise CLIError(f"config file {path!r} called exit()") from None
    except Exception as exc:
        import traceback

        traceback.print_exc()
        raise CLIError(f"config file {path!r} failed: {type(exc).__name__}: {exc}") from None
    if "caching" not in scope:
        raise CLIError(f"config file {path!r} does not define `caching`: it must set a module-level "
                       "`caching = uwcache.Caching()...`, or define `def caching(): return uwcache.Caching()...`")
    caching = scope["caching"]
    if callable(caching) and not isinstance(caching, Caching):
        caching = caching()
    if not isinstance(caching, Caching):
        raise CLIError(f"config file {path!r}: `caching` is a {type(caching).__name__}, not a uwcache.Caching")
    if namespace is not None and caching.namespace != namespace:
        raise CLIError(f"config file {path!r} builds namespace {caching.namespace!r} but --namespace says "
                       f"{namespace!r}; drop one of them")
    return caching


def read_secret_file(path: str, option: str = "--secret-file") -> str:
    """The secret kept in `path`: its text without the final line break. The file must be a
    regular file of this user that nobody else can read (uwcache._fs, as for store files)."""
    try:
        # O_NONBLOCK: a FIFO at that path is refused as "not a regular file" instead of hanging
        fd = _fs.open_private_path(path, os.O_RDONLY | os.O_NONBLOCK, what="the secret file", exact_mode=True)
    except CacheError as exc:
        raise CLIError(f"{option}: {exc}; chmod 600 {path}" if "mode" in str(exc) else f"{option}: {exc}") from None
    except OSError as exc:
        raise CLIError(f"{option} {path!r}: {exc.strerror or exc}") from None
    try:
        data = os.read(fd, 65537)
    finally:
        os.close(fd)
    try:
        secret = data.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise CLIError(f"{option} {path!r} is not UTF-8 text") from None
    if not secret or len(data) > 65536:
        raise CLIError(f"{option} {path!r} must hold one non-empty line of at most 64 KiB")
    return secret


def build_caching(args: argparse.Namespace) -> Tuple[Caching, str]:
    """The configuration `run` uses, and a phrase saying where it came from."""
    namespace = getattr(args, "namespace", None)
    uwsgi_options = args.uwsgi_options or []
    secret_file = getattr(args, "secret_file", None)
    secret = read_secret_file(secret_file) if secret_file is not None else None
    if args.config is not None:
        if args.ini is not None or uwsgi_options:
            raise CLIError("--config cannot be combined with --ini or uWSGI options (--cache2 ...): "
                           "build everything in the Python file", code=2)
        if secret is not None:
            raise CLIError("--config cannot be combined with --secret-file: give Caching(secret=...) in the "
                           "Python file", code=2)
        return caching_from_python(args.config, namespace), f"Python config {args.config}"
    if args.ini is not None or uwsgi_options:
        caching = caching_from_uwsgi_options(args.ini, uwsgi_options, namespace, secret)
        if not caching.caches:
            raise CLIError(f"{args.ini or 'the command line'} configures no cache (no cache2 or cache option)")
        sources = ([f"ini {args.ini}"] if args.ini else []) + (["command-line options"] if uwsgi_options else [])
        return caching, " + ".join(sources)
    caching = Caching.from_cache2(DEFAULT_CACHE2, namespace=namespace, secret=secret)
    return caching, f"the embedded default (no configuration given): --cache2 {DEFAULT_CACHE2}"


# --------------------------------------------------------------------------------------------
# run
# --------------------------------------------------------------------------------------------


class _RunFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.levelno >= logging.WARNING:
            text = text.replace(" | ", f" | {record.levelname}: ", 1)
        return text


def _setup_logging(level: int, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_RunFormatter(fmt, "%Y-%m-%d %H:%M:%S"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


def cmd_run(args: argparse.Namespace) -> int:
    _setup_logging(logging.WARNING if args.quiet else logging.INFO, "%(asctime)s | %(message)s")
    stop = threading.Event()
    received: List[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        received.append(signum)
        stop.set()
        # a second Ctrl-C while stopping interrupts for real
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    stopping = [signal.SIGINT, signal.SIGTERM]
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:  # a closed terminal stops cleanly; nohup still wins
        stopping.append(signal.SIGHUP)
    previous = {sig: signal.signal(sig, on_signal) for sig in stopping}
    try:
        return _run(args, stop, received)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run(args: argparse.Namespace, stop: threading.Event, received: List[int]) -> int:
    if args.stats is not None:
        try:
            parse_address(args.stats)
        except ValueError as exc:
            raise CLIError(str(exc), code=2) from None
    caching, origin = build_caching(args)
    log.info("uwcache %s (pid %d): configuration from %s", __version__, os.getpid(), origin)
    log.info('namespace "%s": shared memory regions in %s', caching.namespace, namespace_dir(caching.namespace))
    start_args: Dict[str, Any] = {}
    if args.server is not None:
        start_args["server"] = args.server or True  # bare --server: <namespace dir>/server.sock
    try:
        node = caching.start(**start_args)
    except NotImplementedError as exc:
        what = f"--server {args.server}: " if args.server is not None else ""
        raise CLIError(f"cannot start the node: {what}{exc}") from None
    try:
        caches = node.caches
        for cache in caches.values():
            log.info("%s", describe_cache(cache, caching))
        total = sum(c.region_size for c in caches.values())
        log.info("%d cache%s, %s of shared memory in all", len(caches), "" if len(caches) == 1 else "s",
                 _human_size(total))
        if args.stats is not None:
            try:
                node._start_stats(args.stats, f"--stats {args.stats}")  # the node serves, as with Node(stats=)
            except ConfigError as exc:
                raise CLIError(str(exc)) from None
        log.info('uwcache node ready: namespace "%s", caches: %s (pid %d); stop with Ctrl-C or SIGTERM',
                 caching.namespace, ", ".join(caches), os.getpid())
        watch = FullWatch(caches)
        while not stop.wait(1.0):
            watch.check()
        watch.check()
        name = signal.Signals(received[0]).name if received else "a signal"
        log.info("received %s, stopping", name)
    finally:
        stores = [str(c.options.store) for c in node.caches.values() if c.options.store]
        in_memory = len(node.caches) - len(stores)
        node.close()
    log.info("stopped: caches detached%s%s", f", stores flushed ({', '.join(stores)})" if stores else "",
             f"; the memory-only regions stay in {namespace_dir(caching.namespace)} for the next node "
             "(delete the files to free the memory)" if in_memory else "")
    return 0


# --------------------------------------------------------------------------------------------
# stats / top
# --------------------------------------------------------------------------------------------


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> List[str]:
    """Aligned columns: the first ``left`` columns left-aligned, the rest right-aligned."""
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows)]
    lines = []
    for row in (headers, *rows):
        cells = [str(v).ljust(w) if i < left else str(v).rjust(w) for i, (v, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
    return lines


def _percent(part: float, whole: float) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "-"


def _data_fill(s: Dict[str, Any]) -> Tuple[int, int]:
    total = s["blocks"] if s["mode"] == "bitmap" else s["capacity"]
    return s["blocks_used"], total


def stats_table(stats: List[Dict[str, Any]]) -> List[str]:
    headers = ("CACHE", "ITEMS", "CAPACITY", "FILL", "DATA", "HITS", "MISS", "HIT%", "WRITES", "FULL",
               "EVICTED", "EXPIRED", "MEMORY", "MODE")
    rows = []
    for s in stats:
        used, total = _data_fill(s)
        name = s["name"] + (" (old generation)" if s.get("generation") == "old" else "")
        rows.append((name, s["items"], s["capacity"], _percent(s["items"], s["capacity"]),
                     _percent(used, total), s["hits"], s["miss"], _percent(s["hits"], s["hits"] + s["miss"]),
                     s["writes"], s["full"], s["evictions"], s["expired_freed"], _human_size(s["memory"]),
                     s["mode"] + (",lru" if s["purge_lru"] else "")))
    return _table(headers, rows)


def cmd_stats(args: argparse.Namespace) -> int:
    namespace = resolve_namespace(args.namespace)
    names = _require_namespace(namespace)
    for name in args.caches:
        if name not in names:
            raise _unknown_cache(name, namespace, names)
    with NamespaceStats(namespace) as reader:
        stats = reader.collect(args.caches or None, old_generations=not args.prometheus)
    if not stats:
        raise CLIError(f"none of the caches of namespace {namespace!r} could be read (see the warnings above)")
    if args.json:
        print(stats_json(stats, indent=2 if args.pretty else None))
    elif args.prometheus:
        sys.stdout.write(prometheus_text(stats))
    else:
        count = sum(1 for s in stats if s.get("generation") != "old")
        print(f'namespace "{namespace}" ({namespace_dir(namespace)}): {count} cache'
              f"{'' if count == 1 else 's'}")
        print("\n".join(stats_table([s for s in stats if s.get("readable", True)])))
        for s in stats:  # the geometry (and the budget= it came from, when this process knows it)
            if s.get("sizing") and s.get("generation") != "old":
                print(f'{s["name"]}: {s["sizing"]}')
        for s in stats:  # old generations of another release: no counters to show
            if not s.get("readable", True):
                print(f'{s["name"]} (old generation): made by another uwcache release (region format '
                      f'{s["format"]}; this one reads {FORMAT_VERSION}), {_human_size(s["memory"])}, still in use: '
                      f'{s["path"]}; freed once its last process exits')
    return 0


def top_frame(namespace: str, previous: Optional[Dict[str, Dict[str, Any]]], current: Dict[str, Dict[str, Any]],
              elapsed: float) -> List[str]:
    """One screen of `uwcache top`: rates come from the difference of two samples."""
    headers = ("CACHE", "ITEMS", "FILL", "DATA", "HIT%", "OPS/S", "GETS/S", "SETS/S", "FULL", "FULL/S",
               "EVICTED", "EXPIRED", "PENDING")
    rows = []
    for name, s in current.items():
        p = (previous or {}).get(name)
        used, total = _data_fill(s)
        if p is not None and elapsed > 0:
            d_hits, d_miss = s["hits"] - p["hits"], s["miss"] - p["miss"]
            d_writes, d_full = s["writes"] - p["writes"], s["full"] - p["full"]
            hit = _percent(d_hits, d_hits + d_miss) if d_hits + d_miss else _percent(s["hits"], s["hits"] + s["miss"])
            ops = f"{(d_hits + d_miss + d_writes) / elapsed:.0f}"
            gets, sets, full_rate = (f"{(d_hits + d_miss) / elapsed:.0f}", f"{d_writes / elapsed:.0f}",
                                     f"{d_full / elapsed:.0f}")
        else:
            hit = _percent(s["hits"], s["hits"] + s["miss"])
            ops = gets = sets = full_rate = "-"
        rows.append((name, f"{s['items']}/{s['capacity']}", _percent(s["items"], s["capacity"]),
                     _percent(used, total), hit, ops, gets, sets, s["full"], full_rate, s["evictions"],
                     s["expired_freed"], s["expired_pending"]))
    title = (f'uwcache top - namespace "{namespace}" - {time.strftime("%H:%M:%S")} - '
             f"{len(current)} cache{'' if len(current) == 1 else 's'}"
             + (f" - rates over {elapsed:.1f} s" if previous is not None else ""))
    return [title, ""] + (_table(headers, rows) if rows else ["(no caches)"])


def cmd_top(args: argparse.Namespace) -> int:
    namespace = resolve_namespace(args.namespace)
    _require_namespace(namespace)
    if args.interval <= 0:
        raise CLIError("--interval must be more than 0 seconds", code=2)
    with NamespaceStats(namespace) as reader:

        def sample() -> Tuple[float, Dict[str, Dict[str, Any]]]:
            return time.monotonic(), {s["name"]: s for s in reader.collect()}

        if args.once:
            t0, first = sample()
            time.sleep(args.interval)
            t1, second = sample()
            print("\n".join(top_frame(namespace, first, second, t1 - t0)))
            return 0
        if sys.stdout.isatty() and os.environ.get("TERM", "dumb") != "dumb":
            return _top_curses(namespace, sample, args.interval)
        t0, previous = sample()
        print("\n".join(top_frame(namespace, None, previous, 0.0)), flush=True)
        try:
            while True:
                time.sleep(args.interval)
                t1, current = sample()
                print("\n" + "\n".join(top_frame(namespace, previous, current, t1 - t0)), flush=True)
                t0, previous = t1, current
        except KeyboardInterrupt:
            return 0


def _top_curses(namespace: str, sample: Callable[[], Tuple[float, Dict[str, Dict[str, Any]]]],
                interval: float) -> int:
    import curses

    def loop(screen: Any) -> None:
        try:
            curses.curs_set(0)
        except curses.error:
            pass
        screen.timeout(int(interval * 1000))
        t0, previous = sample()
        lines = top_frame(namespace, None, previous, 0.0)
        while True:
            screen.erase()
            height, width = screen.getmaxyx()
            for row, line in enumerate(lines[: height - 1] + ["", "q: quit"][: max(0, height - len(lines))]):
                try:
                    screen.addnstr(row, 0, line, max(1, width - 1))
                except curses.error:
                    pass
            screen.refresh()
            key = screen.getch()
            if key in (ord("q"), ord("Q"), 27):
                return
            t1, current = sample()
            if t1 - t0 >= interval * 0.5 or key == -1:
                lines = top_frame(namespace, previous, current, t1 - t0)
                t0, previous = t1, current

    try:
        curses.wrapper(loop)
    except KeyboardInterrupt:
        pass
    return 0


# --------------------------------------------------------------------------------------------
# get / set / del / keys / clear / incr / decr
# --------------------------------------------------------------------------------------------


def _decode_value(value: bytes, how: str, namespace: str, secret: Optional[str]) -> str:
    """A value written by the framework backends or memoize, decoded for printing."""
    # serializers.Codec.decode is the one reader of the backends' format (tags, counters, the
    # HMAC of pickled values): never parse it here. The key is the backends' own: the
    # namespace's key file, or the secret they were given.
    from .serializers import MISS, Codec, SerializerMismatch
    from .signing import ValueSigner

    try:
        obj = Codec(how, signer=ValueSigner(namespace, secret)).decode(value)
    except SerializerMismatch as exc:
        raise CLIError(f"cannot decode the value as {how}: {exc}") from None
    except Exception as exc:  # corrupt or foreign bytes: say so, never a traceback
        raise CLIError(f"cannot decode the value as {how} ({type(exc).__name__}: {exc}); "
                       "print it raw without --decode") from None
    if obj is MISS:
        raise CLIError("the value's signature does not verify: it was signed with another key (pass the "
                       "backend's secret with --secret-file), or it is forged; it was not unpickled")
    if how == "json":
        return json.dumps(obj, ensure_ascii=False, default=repr)
    return pprint.pformat(obj)


def cmd_get(args: argparse.Namespace) -> int:
    namespace = resolve_namespace(args.namespace)
    with _open(args.cache, namespace) as cache:
        key = _arg_bytes(args.key)
        if args.int:
            try:
                number = cache.get_int(key)
            except NotAnInteger as exc:
                raise CLIError(f"{exc} (uwcache get without --int prints it raw)") from None
            shown = None if number is None else f"{number}\n".encode()
        else:
            value = cache.get(key)
            if value is None:
                shown = None
            elif args.decode:
                secret = read_secret_file(args.secret_file) if args.secret_file is not None else None
                shown = (_decode_value(value, args.decode, namespace, secret) + "\n").encode()
            else:
                shown = value + (b"\n" if args.newline else b"")
    if shown is None:
        print(f"uwcache: key {args.key!r} not found in cache {args.cache!r}", file=sys.stderr)
        return 1
    _write_stdout(shown)
    return 0


def region_users(path: str) -> List[int]:
    """PIDs whose memory maps ``path`` (from /proc/PID/maps; processes we may not read are missed)."""
    real = os.path.realpath(path)
    wanted = {path, real}
    users = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/maps", "rb") as maps:
                for line in maps:
                    fields = line.split(None, 5)
                    if len(fields) == 6 and os.fsdecode(fields[5].rstrip(b"\n")) in wanted:
                        users.append(int(entry))
                        break
        except OSError:  # gone, or another user's process
            continue
    return sorted(users)


def cmd_drop(args: argparse.Namespace) -> int:
    from . import _fs
    from .cache import current_path, generations

    namespace = resolve_namespace(args.namespace)
    names = _require_namespace(namespace)
    if args.cache not in names:
        raise _unknown_cache(args.cache, namespace, names)
    entry = region_path(args.cache, namespace)
    target = current_path(args.cache, namespace)
    regions = [g["path"] for g in generations(args.cache, namespace)]
    store = target if target is not None and target not in regions else None
    held: List[int] = []
    try:
        busy: List[str] = []
        size = 0
        for path in regions + ([store] if store else []):
            try:
                fd = _fs.open_private_path(path, os.O_RDWR, what="the cache's region")
            except FileNotFoundError:
                continue
            held.append(fd)
            # every attached process holds a shared flock (see cache.py); the opener lock keeps
            # a new one from attaching while we look and unlink
            fcntl.lockf(fd, fcntl.LOCK_EX, 1, 0)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                busy.append(path)
                continue
            if path != store:
                size += os.fstat(fd).st_size
        if busy:
            pids = sorted({pid for path in busy for pid in region_users(path)})
            who = (f"PID{'s' if len(pids) > 1 else ''} {', '.join(map(str, pids))}" if pids
                   else "processes this user cannot see (another user, or another PID namespace)")
            them = "it" if len(pids) == 1 else "them"
            raise CLIError(f"cache {args.cache!r} is in use by {who}: stop {them} first (its memory was not removed)")
        for path in regions:
            os.unlink(path)
        try:
            os.unlink(entry)
        except FileNotFoundError:
            pass
    finally:
        for fd in held:
            os.close(fd)
    if store:
        print(f'dropped cache "{args.cache}" from namespace "{namespace}"; its store file {store} is kept')
    else:
        print(f'dropped cache "{args.cache}" from namespace "{namespace}": {_human_size(size)} of memory freed')
    return 0


def cmd_set(args: argparse.Namespace) -> int:
    namespace = resolve_namespace(args.namespace)
    if args.stdin == (args.value is not None):
        raise CLIError("give the value either as an argument or with --stdin (not both)", code=2)
    value = sys.stdin.buffer.read() if args.stdin else _arg_bytes(args.value)
    with _open(args.cache, namespace) as cache:
        if args.add:
            if not cache.add(_arg_bytes(args.key), value, expires=args.expires):
                print(f"uwcache: key {args.key!r} already exists in cache {args.cache!r}", file=sys.stderr)
                return 1
        else:
            cache.set(_arg_bytes(args.key), value, expires=args.expires)
    return 0


def cmd_del(args: argparse.Namespace) -> int:
    namespace = resolve_namespace(args.namespace)
    with _open(args.cache, namespace) as cache:
        deleted = cache.delete(_arg_bytes(args.key))
    if not deleted:
        print(f"uwcache: key {args.key!r} not found in cache {args.cache!r}", file=sys.stderr)
        return 1
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    namespace = resolve_namespace(args.namespace)
    with _open(args.cache, namespace) as cache:
        keys = cache.keys()
    end = b"\0" if args.null else b"\n"
    _write_stdout(b"".join(key + end for key in keys))
    return 0


def cmd_clear(args: argparse.Namespace) -> int:
    namespace = resolve_namespace(args.namespace)
    with _open(args.cache, namespace) as cache:
        count = len(cache)
        cache.clear()
    print(f'cleared cache "{args.cache}" ({count} item{"" if count == 1 else "s"})')
    return 0


def _math(args: argparse.Namespace, op: str) -> int:
    namespace = resolve_namespace(args.namespace)
    with _open(args.cache, namespace) as cache:
        result = getattr(cache, op)(_arg_bytes(args.key), args.n, expires=args.expires)
    print(result)
    return 0


def cmd_incr(args: argparse.Namespace) -> int:
    return _math(args, "incr")


def cmd_decr(args: argparse.Namespace) -> int:
    return _math(args, "decr")


# --------------------------------------------------------------------------------------------
# argument parsing
# --------------------------------------------------------------------------------------------


def _seconds(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole seconds, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more seconds, got {value}")
    return value


def _int64(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not -(2**63) <= value < 2**63:
        raise argparse.ArgumentTypeError(f"{value} does not fit in a signed 64-bit integer")
    return value


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--namespace", "-n", default=argparse.SUPPRESS, metavar="NS",
                        help="namespace of the caches (default: $UWCACHE_NAMESPACE, else 'default')")
    parser = argparse.ArgumentParser(
        prog="uwcache", parents=[common],
        description="uWSGI's cache framework as a standalone shared-memory cache: run a node, inspect and "
                    "edit caches.",
        epilog="Docs: docs/cli.md. Every command reads caches straight from shared memory; only `run` "
               "keeps the expiry sweeper and preloads going.")
    parser.add_argument("--version", action="version", version=f"uwcache {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    run = sub.add_parser("run", parents=[common], help="run a node in the foreground (caches, preloads, sweeper)",
                         description="Create or attach the configured caches, preload items and files, sweep "
                                     "expired items and flush stores until Ctrl-C or SIGTERM. Without any "
                                     "configuration one cache named 'default' is created.")
    run.add_argument("--ini", metavar="FILE[:SECTION]",
                     help="read the cache options of a uWSGI ini file (section [uwsgi] unless given)")
    run.add_argument("--config", metavar="FILE.py",
                     help="a Python file that defines `caching` (a uwcache.Caching, or a function returning one)")
    for option, metavar in UWSGI_RUN_OPTIONS.items():
        run.add_argument(option, metavar=metavar, dest="uwsgi_options", action=_UwsgiOption,
                         help=f"uWSGI's {option} option (repeatable where uWSGI's is)")
    for option in UWSGI_RUN_FLAGS:
        run.add_argument(option, dest="uwsgi_options", nargs=0, action=_UwsgiOption, help=f"uWSGI's {option}")
    run.add_argument("--stats", metavar="ADDR",
                     help="serve stats over HTTP: a dashboard at / for browsers, JSON at / and /stats.json, "
                          "Prometheus at /metrics. ADDR is HOST:PORT, a bare PORT or :PORT (both 127.0.0.1; "
                          "0.0.0.0:PORT for every address); port 0 picks a free one")
    run.add_argument("--server", metavar="ADDR", nargs="?", const="",
                     help="serve the caches (uWSGI cache protocol) on ADDR: HOST:PORT (:PORT = 127.0.0.1) or a "
                          "UNIX socket path; without ADDR, the owner-only socket <namespace dir>/server.sock")
    run.add_argument("--secret-file", metavar="FILE",
                     help="sign and verify replication packets, and challenge --server clients, with the secret "
                          "in FILE (one line; owner-only, mode 600); the command line would show it to every user")
    run.add_argument("--quiet", "-q", action="store_true", help="log warnings and errors only")
    run.set_defaults(func=cmd_run, uwsgi_options=[])

    stats = sub.add_parser("stats", parents=[common], help="stats of every cache of the namespace",
                           description="Read the counters of every cache straight from shared memory.")
    stats.add_argument("caches", nargs="*", metavar="CACHE", help="only these caches")
    form = stats.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true",
                      help='print {"caches": [...]} in uWSGI\'s stats-server shape, plus extras')
    form.add_argument("--prometheus", action="store_true", help="print Prometheus text format")
    stats.add_argument("--pretty", action="store_true", help="indent the JSON")
    stats.set_defaults(func=cmd_stats)

    top = sub.add_parser("top", parents=[common], help="live view of fill, hit ratio, ops/s, full events",
                         description="A live view like uWSGI's cache monitor (curses on a terminal, plain "
                                     "frames otherwise; q or Ctrl-C quits).")
    top.add_argument("--interval", "-i", type=float, default=1.0, metavar="S", help="seconds between samples")
    top.add_argument("--once", action="store_true", help="print one frame (rates over one interval) and exit")
    top.set_defaults(func=cmd_top)

    get = sub.add_parser("get", parents=[common], help="print a value (raw bytes) to stdout",
                         description="Print a value as raw bytes; exit 1 if the key is missing.")
    get.add_argument("cache")
    get.add_argument("key")
    get.add_argument("--newline", action="store_true", help="add a newline after the value")
    shown = get.add_mutually_exclusive_group()
    shown.add_argument("--int", action="store_true", help="print a counter (8-byte integer, as incr writes it)")
    shown.add_argument("--decode", choices=("pickle", "json"),
                       help="decode a value written by the framework backends or memoize and print it "
                            "(pickled values are unpickled only when their signature verifies)")
    get.add_argument("--secret-file", metavar="FILE",
                     help="with --decode: a file (one line, mode 600) holding the secret the backends sign with "
                          "(default: the namespace's key file)")
    get.set_defaults(func=cmd_get)

    set_ = sub.add_parser("set", parents=[common], help="store a value", description="Create or overwrite a key.")
    set_.add_argument("cache")
    set_.add_argument("key")
    set_.add_argument("value", nargs="?", help="the value (UTF-8 text); or use --stdin")
    set_.add_argument("--stdin", action="store_true", help="read the value (bytes) from standard input")
    set_.add_argument("--expires", "-e", type=_seconds, default=0, metavar="S", help="time to live; 0 = never")
    set_.add_argument("--add", action="store_true", help="only if the key is absent (exit 1 otherwise)")
    set_.set_defaults(func=cmd_set)

    delete = sub.add_parser("del", parents=[common], help="delete a key", description="Exit 1 if the key is missing.")
    delete.add_argument("cache")
    delete.add_argument("key")
    delete.set_defaults(func=cmd_del)

    keys = sub.add_parser("keys", parents=[common], help="list the keys of a cache, one per line")
    keys.add_argument("cache")
    keys.add_argument("--null", "-0", action="store_true", help="end each key with NUL instead of a newline")
    keys.set_defaults(func=cmd_keys)

    clear = sub.add_parser("clear", parents=[common], help="delete every item of a cache")
    clear.add_argument("cache")
    clear.set_defaults(func=cmd_clear)

    drop = sub.add_parser("drop", parents=[common], help="remove an unused cache's memory",
                          description="Delete a cache's region (its memory) when no process uses it; "
                                      "refuse, naming the PIDs, while some do. A store file is kept.")
    drop.add_argument("cache")
    drop.set_defaults(func=cmd_drop)

    for name, verb, func in (("incr", "add N to", cmd_incr), ("decr", "subtract N from", cmd_decr)):
        math = sub.add_parser(name, parents=[common], help=f"{verb} an integer (8-byte value), print the result",
                              description=f"{verb.capitalize()} a signed 64-bit counter; a missing key starts "
                                          "at the cache's math_initial.")
        math.add_argument("cache")
        math.add_argument("key")
        math.add_argument("n", nargs="?", type=_int64, default=1, metavar="N", help="default 1")
        math.add_argument("--expires", "-e", type=_seconds, default=0, metavar="S",
                          help="time to live if the key is created")
        math.set_defaults(func=func)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``uwcache`` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "namespace"):
        args.namespace = None
    if args.command != "run":
        # library warnings (e.g. "cache full") on stderr without Python's logging noise
        _setup_logging(logging.WARNING, "uwcache | %(message)s")
    try:
        args.namespace = None if args.namespace is None else resolve_namespace(args.namespace)
        return args.func(args)
    except CLIError as exc:
        print(f"uwcache: error: {exc}", file=sys.stderr)
        return exc.code
    except UnknownCache as exc:
        print(f"uwcache: error: {exc}", file=sys.stderr)
        return 1
    except CacheError as exc:
        print(f"uwcache: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # the reader went away (`uwcache keys c | head`): not worth a traceback; point stdout
        # at /dev/null so the interpreter's final flush does not complain either
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 1
    except KeyboardInterrupt:
        return 130
