"""The `uwcache` command, run as a user runs it: a subprocess (`python -m uwcache ...`).

`run` nodes are started in the background, awaited on their "ready" log line, queried with
the other commands, and stopped with SIGTERM/SIGINT (exit code 0 expected). The shared
memory directory comes from conftest (UWCACHE_SHM_DIR, inherited).
"""

from __future__ import annotations

import gzip
import json
import pickle
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import time
from typing import List, Optional

import pytest

import uwcache
from uwcache.cli import DEFAULT_CACHE2, top_frame

UWSGI_KEYS = ["name", "hash", "hashsize", "keysize", "max_items", "blocks", "blocksize",
              "items", "hits", "miss", "full", "last_modified_at"]


def uwcache_cmd(namespace: Optional[str], *args: str, input: Optional[bytes] = None, cwd: Optional[str] = None,
                timeout: float = 30) -> subprocess.CompletedProcess:
    """Run one `uwcache` command to completion; stdout/stderr as bytes."""
    argv = [sys.executable, "-m", "uwcache", *args]
    if namespace is not None:
        argv += ["--namespace", namespace]
    return subprocess.run(argv, input=input, capture_output=True, timeout=timeout, cwd=cwd)


class RunningNode:
    """`uwcache run ...` in the background; its log (stderr) is collected line by line."""

    def __init__(self, namespace: str, *args: str, cwd: Optional[str] = None) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "uwcache", "run", "--namespace", namespace, *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=cwd)
        self.lines: List[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with self._changed:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def log(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 20) -> re.Match:
        """The first log line matching ``pattern``; fails if the process exits or time runs out."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines:
                    match = regex.search(line)
                    if match:
                        return match
                if self.proc.poll() is not None and not self._reader.is_alive():
                    pytest.fail(f"uwcache run exited ({self.proc.returncode}) before {pattern!r}:\n{self.log}")
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(f"no {pattern!r} in the log after {timeout} s:\n{self.log}")
                self._changed.wait(min(left, 0.2))

    def wait_ready(self) -> "RunningNode":
        self.wait_for(r"uwcache node ready")
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"uwcache run did not stop within {timeout} s after {sig!r}:\n{self.log}")
        self._reader.join(5)
        return code

    def __enter__(self) -> "RunningNode":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(5)


def stats_json(namespace: str) -> dict:
    done = uwcache_cmd(namespace, "stats", "--json")
    assert done.returncode == 0, done.stderr.decode()
    return json.loads(done.stdout)


def cache_stats(namespace: str, name: str) -> dict:
    return {c["name"]: c for c in stats_json(namespace)["caches"]}[name]


def write(path, text: str) -> str:
    path.write_text(textwrap.dedent(text))
    return str(path)


# --------------------------------------------------------------------------------------------


def test_version_and_help():
    done = uwcache_cmd(None, "--version")
    assert done.returncode == 0
    assert done.stdout.decode().strip() == f"uwcache {uwcache.__version__}"
    done = uwcache_cmd(None, "--help")
    assert done.returncode == 0
    for command in ("run", "stats", "top", "get", "set", "del", "keys", "clear", "incr"):
        assert command in done.stdout.decode()
    assert uwcache_cmd(None).returncode == 2  # no command: usage error


def test_run_embedded_default_then_sigterm(namespace):
    with RunningNode(namespace) as node:
        node.wait_ready()
        assert f"--cache2 {DEFAULT_CACHE2}" in node.log  # the default is printed
        assert re.search(r'\*\*\* Cache "default" initialized: \d+MB .* reserved at .*default@\w+\.region', node.log)
        assert "MiB of shared memory" in node.log
        stats = stats_json(namespace)
        assert [c["name"] for c in stats["caches"]] == ["default"]
        default = stats["caches"][0]
        assert list(default)[:12] == UWSGI_KEYS  # uWSGI's stats-server shape, then extras
        planned = uwcache.parse_cache2(DEFAULT_CACHE2).memory_bytes
        assert default["memory"] == planned  # memory_bytes is exactly the region size
        assert default["memory"] < 32 * 2**20  # fits a small /dev/shm (Docker's default is 64 MiB)
        assert default["sweeper_pid"] in (0, node.proc.pid)
        assert node.stop(signal.SIGTERM) == 0
        assert "received SIGTERM, stopping" in node.log
        assert "stopped: caches detached" in node.log


def test_tools_against_a_running_node(namespace):
    with RunningNode(namespace, "--cache2", "name=kv,items=100,blocksize=256",
                     "--cache2", "name=nums,items=10,blocksize=8,math_initial=100") as node:
        node.wait_ready()
        assert uwcache_cmd(namespace, "set", "kv", "greeting", "hello world").returncode == 0
        done = uwcache_cmd(namespace, "get", "kv", "greeting")
        assert (done.returncode, done.stdout) == (0, b"hello world")  # raw bytes, no newline

        binary = bytes(range(256))
        assert uwcache_cmd(namespace, "set", "kv", "blob", "--stdin", input=binary).returncode == 0
        assert uwcache_cmd(namespace, "get", "kv", "blob").stdout == binary

        done = uwcache_cmd(namespace, "get", "kv", "absent")
        assert done.returncode == 1 and done.stdout == b""
        assert b"'absent' not found in cache 'kv'" in done.stderr

        done = uwcache_cmd(namespace, "keys", "kv")
        assert sorted(done.stdout.splitlines()) == [b"blob", b"greeting"]

        assert uwcache_cmd(namespace, "incr", "nums", "hits").stdout == b"101\n"  # math_initial 100
        assert uwcache_cmd(namespace, "incr", "nums", "hits", "9").stdout == b"110\n"
        assert uwcache_cmd(namespace, "decr", "nums", "hits", "20").stdout == b"90\n"
        with uwcache.attach("nums", namespace=namespace) as nums:
            assert nums.get_int("hits") == 90
        done = uwcache_cmd(namespace, "incr", "kv", "greeting")  # not an 8-byte integer
        assert done.returncode == 1 and b"8-byte integer" in done.stderr

        assert uwcache_cmd(namespace, "del", "kv", "greeting").returncode == 0
        done = uwcache_cmd(namespace, "del", "kv", "greeting")
        assert done.returncode == 1 and b"not found" in done.stderr

        done = uwcache_cmd(namespace, "clear", "kv")
        assert done.returncode == 0 and b"1 item" in done.stdout
        assert uwcache_cmd(namespace, "keys", "kv").stdout == b""

        kv = cache_stats(namespace, "kv")
        assert kv["hits"] >= 2 and kv["miss"] >= 1 and kv["writes"] >= 2  # the node keeps counters warm

        done = uwcache_cmd(namespace, "get", "nosuchcache", "k")
        assert done.returncode == 1
        assert b"no cache named 'nosuchcache'" in done.stderr and b"kv, nums" in done.stderr
        assert node.stop() == 0


def test_unknown_namespace_is_a_clear_error(namespace):
    for args in (("stats",), ("stats", "--json"), ("top", "--once"), ("get", "c", "k"), ("keys", "c"),
                 ("set", "c", "k", "v"), ("clear", "c"), ("incr", "c", "k")):
        done = uwcache_cmd(namespace, *args)
        assert done.returncode == 1, args
        assert f"namespace '{namespace}' has no caches".encode() in done.stderr, args
    done = uwcache_cmd("not a namespace!", "stats")
    assert done.returncode == 1 and b"namespace" in done.stderr


def test_namespace_from_environment(namespace):
    cache = uwcache.open_cache("envcache", namespace=namespace, max_items=10, block_size=16)
    try:
        env = dict(os.environ, UWCACHE_NAMESPACE=namespace)
        done = subprocess.run([sys.executable, "-m", "uwcache", "set", "envcache", "k", "v"], env=env)
        assert done.returncode == 0
        assert cache.get("k") == b"v"
        # --namespace may also come before the command
        done = subprocess.run([sys.executable, "-m", "uwcache", "--namespace", namespace, "get", "envcache", "k"],
                              capture_output=True)
        assert (done.returncode, done.stdout) == (0, b"v")
    finally:
        cache.close()


def test_stats_and_top_read_shared_memory_without_a_node(namespace):
    cache = uwcache.open_cache("plain", namespace=namespace, max_items=11, block_size=64)
    try:
        for i in range(5):
            cache.set(f"k{i}", b"x" * 10)
        cache.get("k0")
        cache.get("missing")
        done = uwcache_cmd(namespace, "stats")
        assert done.returncode == 0, done.stderr
        lines = done.stdout.decode().splitlines()
        header = lines[1].split()
        row = dict(zip(header, lines[2].split()))
        assert row["CACHE"] == "plain"
        assert (row["ITEMS"], row["CAPACITY"], row["FILL"], row["HITS"], row["MISS"]) == ("5", "10", "50.0%", "1", "1")

        done = uwcache_cmd(namespace, "stats", "--json")
        (entry,) = json.loads(done.stdout)["caches"]
        assert entry["items"] == 5 and entry["max_items"] == 11 and entry["blocksize"] == 64

        done = uwcache_cmd(namespace, "top", "--once", "--interval", "0.2")
        assert done.returncode == 0, done.stderr
        text = done.stdout.decode()
        assert f'namespace "{namespace}"' in text and "OPS/S" in text
        assert re.search(r"^plain\s+5/10\s+50\.0%", text, re.M)

        done = uwcache_cmd(namespace, "stats", "nope")
        assert done.returncode == 1 and b"no cache named 'nope'" in done.stderr
    finally:
        cache.close()


def test_top_frame_rates():
    base = {"name": "c", "items": 50, "capacity": 100, "mode": "single-block", "blocks": 101, "blocks_used": 50,
            "hits": 100, "miss": 100, "writes": 10, "full": 1, "evictions": 0, "expired_freed": 0,
            "expired_pending": 0}
    later = dict(base, hits=400, miss=200, writes=30, full=5)
    lines = top_frame("ns", {"c": base}, {"c": later}, 2.0)
    header, row = lines[2].split(), lines[3].split()
    cells = dict(zip(header, row))
    assert cells["OPS/S"] == "210"  # (300 hits + 100 misses + 20 writes) / 2 s
    assert cells["HIT%"] == "75.0%"  # over the interval: 300 / 400
    assert cells["FULL"] == "5" and cells["FULL/S"] == "2"
    assert cells["FILL"] == "50.0%"
    first = top_frame("ns", None, {"c": base}, 0.0)
    assert dict(zip(first[2].split(), first[3].split()))["OPS/S"] == "-"


def test_sweeper_frees_expired_items_and_reports(namespace, tmp_path):
    ini = write(tmp_path / "app.ini", """\
        [uwsgi]
        master = true
        cache2 = name=sessions,items=20,blocksize=64
        cache-expire-freq = 1
        cache-report-freed-items = true
        """)
    with RunningNode(namespace, "--ini", ini) as node:
        node.wait_ready()
        assert "swept every 1 s" in node.log
        assert uwcache_cmd(namespace, "set", "sessions", "long", "v", "--expires", "300").returncode == 0
        assert uwcache_cmd(namespace, "set", "sessions", "short", "v", "--expires", "1").returncode == 0
        # "short" lasts at most 1 s (whole seconds), then the sweeper frees it within ~1 s
        deadline = time.monotonic() + 15
        while cache_stats(namespace, "sessions")["items"] != 1:
            assert time.monotonic() < deadline, f"the expired item was never swept:\n{node.log}"
            time.sleep(0.3)
        node.wait_for(r'freed 1 items for cache "sessions"', timeout=5)
        assert uwcache_cmd(namespace, "get", "sessions", "long").stdout == b"v"
        stats = cache_stats(namespace, "sessions")
        assert stats["expired_freed"] == 1 and stats["sweeper_pid"] == node.proc.pid
        assert node.stop(signal.SIGINT) == 0
        assert "received SIGINT, stopping" in node.log


def test_ini_preloads_items_and_files(namespace, tmp_path):
    (tmp_path / "index.html").write_bytes(b"<h1>hello</h1>\n" * 20)
    ini = write(tmp_path / "site.ini", """\
        [uwsgi]
        cache2 = name=pages,items=10,blocksize=4096
        cache2 = name=meta,items=10,blocksize=64
        add-cache-item = pages motd=hello = world
        add-cache-item = version=1.2
        load-file-in-cache = pages index.html
        load-file-in-cache-gzip = meta index.html
        """)
    with RunningNode(namespace, "--ini", ini, cwd=str(tmp_path)) as node:
        node.wait_ready()
        assert '[cache] stored "motd" in "pages"' in node.log
        assert '[cache] stored "index.html" in "pages"' in node.log
        assert uwcache_cmd(namespace, "get", "pages", "motd").stdout == b"hello = world"
        # a nameless add-cache-item goes into every cache, as in uWSGI
        assert uwcache_cmd(namespace, "get", "pages", "version").stdout == b"1.2"
        assert uwcache_cmd(namespace, "get", "meta", "version").stdout == b"1.2"
        assert uwcache_cmd(namespace, "get", "pages", "index.html").stdout == (tmp_path / "index.html").read_bytes()
        packed = uwcache_cmd(namespace, "get", "meta", "index.html").stdout
        assert gzip.decompress(packed) == (tmp_path / "index.html").read_bytes()
        assert node.stop() == 0


def test_missing_preload_file_is_a_clear_error(namespace, tmp_path):
    ini = write(tmp_path / "app.ini", """\
        [uwsgi]
        cache2 = name=files,items=10,blocksize=1024
        load-file-in-cache = files static/missing.css
        """)
    done = subprocess.run([sys.executable, "-m", "uwcache", "run", "--namespace", namespace, "--ini", ini],
                          capture_output=True, timeout=30, cwd=str(tmp_path))
    assert done.returncode == 1
    err = done.stderr.decode()
    assert "static/missing.css" in err and "No such file" in err
    assert "uwcache node ready" not in err

    # the same from the command line, with uWSGI's option name
    done = subprocess.run([sys.executable, "-m", "uwcache", "run", "--namespace", namespace,
                           "--cache2", "name=files,items=10,blocksize=1024", "--load-file-in-cache", "nope.txt"],
                          capture_output=True, timeout=30, cwd=str(tmp_path))
    assert done.returncode == 1 and b"nope.txt" in done.stderr


def test_configuration_errors(namespace, tmp_path):
    def run(*args: str) -> subprocess.CompletedProcess:
        return uwcache_cmd(namespace, "run", *args, cwd=str(tmp_path))

    done = run("--cache2", "name=x,items=10,blocksize=64k")
    assert done.returncode == 1
    assert b"--cache2 'name=x,items=10,blocksize=64k'" in done.stderr and b"64k" in done.stderr
    done = run("--ini", str(tmp_path / "nothere.ini"))
    assert done.returncode == 1 and b"nothere.ini" in done.stderr
    ini = write(tmp_path / "other.ini", "[app]\ncache2 = name=x,items=10\n")
    done = run("--ini", ini)
    assert done.returncode == 1 and b"no [uwsgi] section" in done.stderr
    ini_ok = write(tmp_path / "ok.ini", "[uwsgi]\ncache2 = name=x,items=10\n")
    done = run("--ini", ini_ok, "--config", "x.py")
    assert done.returncode == 2 and b"cannot be combined" in done.stderr
    done = run("--stats", "not-an-address")
    assert done.returncode == 2 and b"stats address" in done.stderr


def test_command_line_option_errors_name_the_option(tmp_path, monkeypatch):
    """`uwcache run`'s uWSGI options go to the parser as (option, value) pairs, and an error
    about one names it as typed, from the error's own fields (issue 14: no regex over text)."""
    from uwcache import cli
    from uwcache.errors import ConfigError, OptionError

    def build(*options, ini=None):
        return cli.caching_from_uwsgi_options(ini, list(options), None)

    with pytest.raises(ConfigError) as info:
        build(("--cache2", "name=x,items=10,blocksize=64k"))
    message = str(info.value)
    assert message.startswith("--cache2 'name=x,items=10,blocksize=64k': cache2 key 'blocksize' has value '64k'")
    assert message.count("name=x,items=10,blocksize=64k") == 1
    # these used to say "command line: ..." or "first on line 2" (a line of an ini text the
    # command made up from its arguments)
    with pytest.raises(ConfigError, match=r"^--cache-expire-freq '2147483648': expire_scan_interval must be"):
        build(("--cache2", "name=x,items=10"), ("--cache-expire-freq", str(2**31)))
    with pytest.raises(ConfigError) as info:
        build(("--cache-expire-freq", "5"), ("--cache-expire-freq", "6"))
    assert str(info.value).startswith("--cache-expire-freq '6': cache-expire-freq is set again")
    assert "first on the pair ('cache-expire-freq', '5')" in str(info.value) and "line" not in str(info.value)

    # with an ini file: its lines keep their numbers, the options their names
    ini = write(tmp_path / "app.ini", "[uwsgi]\ncache2 = name=a,items=10\ncache2 = name=b,items=1\n")
    with pytest.raises(OptionError) as info:
        build(("--cache2", "name=c,items=10"), ini=ini)
    assert (info.value.line, info.value.option) == (3, "cache2") and str(info.value).startswith(f"{ini} line 3: ")
    ini = write(tmp_path / "ok.ini", "[uwsgi]\ncache2 = name=a,items=10\n")
    with pytest.raises(ConfigError, match=r"^--cache2 'name=a,items=5': cache name 'a' is already configured"):
        build(("--cache2", "name=a,items=5"), ini=ini)
    caching = build(("--cache2", "name=b,items=5"), ("--cache-report-freed-items", "true"), ini=f"{ini}:uwsgi")
    assert [c.name for c in caching.caches] == ["a", "b"] and caching.report_freed

    # the option comes from the error object, whatever its text says
    def refuse(*args, **kwargs):
        raise OptionError("a message that names no option", option="cache-expire-freq", value="9", detail="made up")

    monkeypatch.setattr(cli.Caching, "from_uwsgi_options", refuse)
    with pytest.raises(ConfigError) as info:
        build(("--cache2", "name=x,items=10"))
    assert str(info.value) == "--cache-expire-freq '9': made up"


def test_ini_section_and_command_line_options_combine(namespace, tmp_path):
    ini = write(tmp_path / "multi.ini", """\
        [uwsgi]
        cache2 = name=ignored,items=10
        [worker]
        cache2 = name=first,items=10,blocksize=32
        """)
    with RunningNode(namespace, "--ini", f"{ini}:worker", "--cache2", "name=second,items=5,blocksize=32",
                     "--add-cache-item", "second k=v") as node:
        node.wait_ready()
        assert [c["name"] for c in stats_json(namespace)["caches"]] == ["first", "second"]
        assert uwcache_cmd(namespace, "get", "second", "k").stdout == b"v"
        assert node.stop() == 0


def test_python_config_file(namespace, tmp_path):
    write(tmp_path / "variable.py", """\
        import uwcache

        caching = (
            uwcache.Caching()
            .add_cache("pyconf", max_items=10, block_size=128)
            .add_item("hello", "from python")
        )
        """)
    with RunningNode(namespace, "--config", str(tmp_path / "variable.py")) as node:
        node.wait_ready()
        assert "configuration from Python config" in node.log
        assert uwcache_cmd(namespace, "get", "pyconf", "hello").stdout == b"from python"
        assert node.stop() == 0

    write(tmp_path / "function.py", """\
        import uwcache

        def caching():
            return uwcache.Caching().add_cache("built", max_items=5, block_size=16)
        """)
    with RunningNode(namespace, "--config", str(tmp_path / "function.py")) as node:
        node.wait_ready()
        assert [c["name"] for c in stats_json(namespace)["caches"]] == ["built", "pyconf"]
        assert node.stop() == 0

    write(tmp_path / "empty.py", "x = 1\n")
    done = uwcache_cmd(namespace, "run", "--config", str(tmp_path / "empty.py"))
    assert done.returncode == 1 and b"does not define `caching`" in done.stderr
    write(tmp_path / "other_ns.py", "import uwcache\ncaching = uwcache.Caching('elsewhere').add_cache('a', max_items=2)\n")
    done = uwcache_cmd(namespace, "run", "--config", str(tmp_path / "other_ns.py"))
    assert done.returncode == 1 and b"elsewhere" in done.stderr


def test_full_cache_warning_is_logged_unless_full_silent(namespace):
    with RunningNode(namespace, "--cache2", "name=tiny,items=3,blocksize=8",
                     "--cache2", "name=quiet,items=2,blocksize=8,ignore_full=1") as node:
        node.wait_ready()
        for key in ("a", "b"):
            assert uwcache_cmd(namespace, "set", "tiny", key, "1").returncode == 0
        done = uwcache_cmd(namespace, "set", "tiny", "c", "1")
        assert done.returncode == 1 and b"full" in done.stderr
        node.wait_for(r'WARNING: \*\*\* DANGER cache "tiny" is FULL !!! \*\*\*', timeout=10)
        assert uwcache_cmd(namespace, "set", "quiet", "a", "1").returncode == 0
        assert uwcache_cmd(namespace, "set", "quiet", "b", "1").returncode == 1
        assert cache_stats(namespace, "quiet")["full"] == 1
        time.sleep(1.5)  # one more round of the full watch
        assert node.stop() == 0
        assert 'cache "quiet" is FULL' not in node.log


def test_store_is_flushed_on_stop_and_restored(namespace, tmp_path):
    store = tmp_path / "persist.store"
    args = ("--cache2", f"name=persist,items=10,blocksize=64,store={store}")
    with RunningNode(namespace, *args) as node:
        node.wait_ready()
        assert uwcache_cmd(namespace, "set", "persist", "k", "kept").returncode == 0
        assert node.stop() == 0
        assert "stores flushed" in node.log
    for leftover in uwcache.list_caches(namespace):
        uwcache.cache.destroy(leftover, namespace=namespace)
    with RunningNode(namespace, *args) as node:
        node.wait_ready()
        assert uwcache_cmd(namespace, "get", "persist", "k").stdout == b"kept"
        assert node.stop() == 0


def test_bare_server_option_listens_on_the_owner_only_socket(namespace):
    from uwcache.net.server import default_socket_path
    from uwcache.remote import RemoteCache

    path = default_socket_path(namespace)
    with RunningNode(namespace, "--cache2", "name=s,items=10", "--server") as node:
        node.wait_ready()
        node.wait_for(rf"cache server listening on {re.escape(path)}")
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        remote = RemoteCache("s@" + path)
        remote.set("k", b"v")
        assert remote.get("k") == b"v"
        assert node.stop() == 0


def test_server_option_serves_or_reports_clearly(namespace):
    """--server starts the cache server; without the network layer it fails loudly (exit 1)."""
    from oracle import free_port

    address = f"127.0.0.1:{free_port()}"
    with RunningNode(namespace, "--cache2", "name=s,items=10", "--server", address) as node:
        deadline = time.monotonic() + 20
        while node.proc.poll() is None and "uwcache node ready" not in node.log:
            assert time.monotonic() < deadline, node.log
            time.sleep(0.1)
        if node.proc.poll() is not None:  # the network layer is not built yet: say so, exit non-zero
            assert node.proc.returncode == 1
            node._reader.join(5)
            assert f"--server {address}" in node.log and "not built yet" in node.log
        else:
            node.wait_for(rf"cache server listening on {re.escape(address)}")
            host, port = address.rsplit(":", 1)
            socket.create_connection((host, int(port)), timeout=5).close()
            assert node.stop() == 0


def test_run_takes_the_replication_secret_from_an_owner_only_file(namespace, tmp_path):
    from uwcache.remote import RemoteCache, RemoteError

    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    secret.chmod(0o644)
    done = subprocess.run([sys.executable, "-m", "uwcache", "run", "--namespace", namespace, "--cache2",
                           "name=s,items=10", "--secret-file", str(secret)], capture_output=True, timeout=30)
    assert done.returncode != 0 and b"other users could read" in done.stderr and b"chmod 600" in done.stderr
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)  # refused at once, not waited on
    done = subprocess.run([sys.executable, "-m", "uwcache", "run", "--namespace", namespace, "--cache2",
                           "name=s,items=10", "--secret-file", str(fifo)], capture_output=True, timeout=30)
    assert done.returncode != 0 and b"not a regular file" in done.stderr
    secret.chmod(0o600)
    path = os.path.join(str(tmp_path), "server.sock")
    with RunningNode(namespace, "--cache2", "name=s,items=10,nodes=127.0.0.1:9", "--server", path,
                     "--secret-file", str(secret)) as node:
        node.wait_ready()
        node.wait_for(r"cache server listening on")
        assert "replication without a secret" not in node.log
        assert "s3cret" not in node.log and all("s3cret" not in arg for arg in node.proc.args)
        RemoteCache("s@" + path, secret="s3cret").set("k", b"v")  # the trailing newline is not part of it
        with pytest.raises(RemoteError):
            RemoteCache("s@" + path).set("k", b"forged")
        assert RemoteCache("s@" + path, secret="s3cret").get("k") == b"v"
        assert node.stop() == 0


def test_get_int_prints_a_counter(namespace):
    cache = uwcache.open_cache("nums", namespace=namespace, max_items=10, block_size=16)
    try:
        cache.incr("hits", 41)
        cache.incr("hits")
        cache.set("text", b"hello")
        done = uwcache_cmd(namespace, "get", "nums", "hits", "--int")
        assert (done.returncode, done.stdout) == (0, b"42\n")
        done = uwcache_cmd(namespace, "get", "nums", "text", "--int")
        assert done.returncode == 1 and b"5 bytes, not an 8-byte integer" in done.stderr
        done = uwcache_cmd(namespace, "get", "nums", "missing", "--int")
        assert done.returncode == 1 and b"not found" in done.stderr
    finally:
        cache.close()


def test_get_decode_reads_what_the_framework_backends_wrote(namespace, tmp_path):
    from uwcache.contrib.cachelib import UWCache

    pickled = UWCache("objs", namespace=namespace, max_items=10, block_size=512)
    as_json = UWCache("docs", namespace=namespace, serializer="json", max_items=10, block_size=512)
    try:
        pickled.set("user", {"name": "ada", "ids": (1, 2)})
        pickled.set("count", 7)
        as_json.set("doc", {"title": "hé", "tags": ["a", "b"]})
        done = uwcache_cmd(namespace, "get", "objs", "user", "--decode", "pickle")
        assert done.returncode == 0, done.stderr
        assert done.stdout.decode() == "{'ids': (1, 2), 'name': 'ada'}\n"
        done = uwcache_cmd(namespace, "get", "objs", "count", "--decode", "pickle")
        assert done.stdout == b"7\n"
        done = uwcache_cmd(namespace, "get", "docs", "doc", "--decode", "json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {"title": "hé", "tags": ["a", "b"]}
        # a JSON reader refuses to unpickle
        done = uwcache_cmd(namespace, "get", "objs", "user", "--decode", "json")
        assert done.returncode == 1 and b"cannot decode the value as json" in done.stderr
        # a pickle that does not carry the namespace's signature is never unpickled
        pickled.cache.set("forged", b"\x03" + pickle.dumps({"x": 1}))
        done = uwcache_cmd(namespace, "get", "objs", "forged", "--decode", "pickle")
        assert done.returncode == 1 and b"signature does not verify" in done.stderr
        signed = UWCache("objs", namespace=namespace, secret="s3", max_items=10, block_size=512)
        signed.set("with-secret", [1])
        secret_file = tmp_path / "secret"
        secret_file.write_text("s3\n")
        secret_file.chmod(0o600)
        done = uwcache_cmd(namespace, "get", "objs", "with-secret", "--decode", "pickle", "--secret-file",
                           str(secret_file))
        assert done.returncode == 0 and done.stdout == b"[1]\n", done.stderr
        done = uwcache_cmd(namespace, "get", "objs", "user", "--decode", "yaml")
        assert done.returncode == 2  # usage error: only pickle and json
        done = uwcache_cmd(namespace, "get", "objs", "user", "--int", "--decode", "json")
        assert done.returncode == 2
    finally:
        pickled.cache.close()
        as_json.cache.close()


def test_drop_refuses_while_in_use_then_frees_the_memory(namespace, shm_dir):
    cache = uwcache.open_cache("old", namespace=namespace, max_items=10, block_size=16)
    path = cache.path
    done = uwcache_cmd(namespace, "drop", "old")
    assert done.returncode == 1
    assert f"cache 'old' is in use by PID {os.getpid()}: stop it first".encode() in done.stderr
    assert os.path.exists(path)
    cache.close()
    done = uwcache_cmd(namespace, "drop", "old")
    assert done.returncode == 0, done.stderr
    assert b'dropped cache "old"' in done.stdout and b"memory freed" in done.stdout
    assert not os.path.exists(path)
    assert uwcache.list_caches(namespace) == []


def test_drop_lists_every_user(namespace):
    cache = uwcache.open_cache("shared", namespace=namespace, max_items=10, block_size=16)
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time, uwcache
        c = uwcache.attach("shared", namespace={namespace!r})
        print("ready", flush=True)
        sys.stdin.read()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert child.stdout.readline() == b"ready\n"
        done = uwcache_cmd(namespace, "drop", "shared")
        pids = sorted([os.getpid(), child.pid])
        assert f"in use by PIDs {pids[0]}, {pids[1]}: stop them first".encode() in done.stderr, done.stderr
    finally:
        child.communicate(b"", timeout=10)
        cache.close()
    assert uwcache_cmd(namespace, "drop", "shared").returncode == 0


def test_did_you_mean_for_caches_and_namespaces(namespace):
    other_namespace = namespace + "-unrelated"
    cache = uwcache.open_cache("sessions", namespace=namespace, max_items=10, block_size=16)
    other = uwcache.open_cache("x", namespace=other_namespace, max_items=10, block_size=16)
    try:
        for command in (("get", "sesions", "k"), ("drop", "sesions"), ("stats", "sesions")):
            done = uwcache_cmd(namespace, *command)
            assert done.returncode == 1
            assert b"no cache named 'sesions'" in done.stderr and b"(did you mean 'sessions'?)" in done.stderr
        typo = namespace[:-1] + "x" + namespace[-1]
        done = uwcache_cmd(typo, "stats")
        assert done.returncode == 1
        assert f"namespace '{typo}' has no caches (did you mean '{namespace}'?)".encode() in done.stderr
        # an error, not a list of every namespace of the machine
        assert other_namespace.encode() not in done.stderr
        done = uwcache_cmd("nothing-like-it-at-all", "stats")
        assert done.returncode == 1 and b"did you mean" not in done.stderr and namespace.encode() not in done.stderr
    finally:
        cache.close()
        other.close()
