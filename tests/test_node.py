"""Node: what uWSGI's master does (preloads, sweeper, its lease across processes)."""
import gzip
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import uwcache
import uwcache.uwsgi as uwsgi


def test_start_cache_close_and_compat_default(namespace):
    caching = uwcache.Caching(namespace).add_cache("first", max_items=10, block_size=32)
    caching.add_cache("second", max_items=10, block_size=32)
    with caching.start() as node:
        assert list(node.caches) == ["first", "second"]
        assert node.cache().name == "first"  # the default cache is the first configured
        assert uwsgi.cache_set("k", "v") is True
        assert node.cache("first").get("k") == b"v"
        assert uwsgi.cache_update("k", "w", 0, "second") is True
        assert node.cache("second").get("k") == b"w"
        assert uwsgi.cache_get("k", "nope") is None
        with pytest.raises(uwcache.UnknownCache, match="configured: 'first', 'second'"):
            node.cache("nope")
        assert [s["name"] for s in node.stats()] == ["first", "second"]
    # closed: the compat functions no longer see the caches
    assert uwsgi.cache_get("k") is None
    with pytest.raises(ValueError, match="no local uWSGI cache available"):
        uwsgi.cache_keys()


def test_named_compat_calls_follow_the_registry(namespace):
    """The last cache name resolved is remembered (a pointer compare per call); it must not
    outlive the node that registered it, and equal names built anew resolve the same."""
    name = "speedy"
    caching = uwcache.Caching(namespace).add_cache("first", max_items=10, block_size=32)
    caching.add_cache(name, max_items=10, block_size=32)
    with caching.start() as node:
        assert uwsgi.cache_set(b"k", b"v1", 0, name) is True
        assert uwsgi.cache_get(b"k", name) == b"v1"
        assert uwsgi.cache_get(b"k", "".join(["spe", "edy"])) == b"v1"  # another str object
        assert uwsgi.cache_exists(b"k", name) is True
        assert uwsgi.cache_get(b"k", "first") is None
        assert node.cache(name).get(b"k") == b"v1"
        with pytest.raises(ValueError, match="embedded null"):
            uwsgi.cache_get(b"k", "spe\x00edy")
        with pytest.raises(TypeError):
            uwsgi.cache_get(b"k", b"speedy")
    # the node is gone: the remembered name must not reach the closed cache
    assert uwsgi.cache_get(b"k", name) is None
    assert uwsgi.cache_set(b"k", b"x", 0, name) is None
    caching2 = uwcache.Caching(namespace + "b").add_cache(name, max_items=10, block_size=32)
    with caching2.start() as node2:
        assert uwsgi.cache_get(b"k", name) is None  # a new, empty cache of that name
        assert uwsgi.cache_set(b"k", b"v2", 0, name) is True
        assert node2.cache(name).get(b"k") == b"v2"
        assert uwsgi.cache_del(b"k", name) is True
        assert uwsgi.cache_get(b"k", name) is None


def test_second_node_attaches_without_clearing(namespace):
    caching = uwcache.Caching(namespace).add_cache("c", max_items=10, block_size=32)
    with caching.start() as one, caching.start() as two:
        one.cache("c").set("k", b"v")
        assert two.cache("c").get("k") == b"v"


def test_preload_items_and_files(namespace, tmp_path, caplog):
    page = tmp_path / "index.html"
    page.write_bytes(b"<h1>hello</h1>" * 20)
    caching = (
        uwcache.Caching(namespace)
        .add_cache("main", max_items=10, block_size=1024)
        .add_cache("other", max_items=10, block_size=1024)
        .add_item("greeting", "hello")
        .add_item("k1", "v1", cache_name="other")
        .add_file(page)
        .add_file(str(page), gzip=True, cache_name="other")
    )
    with caplog.at_level("INFO", logger="uwcache"), caching.start() as node:
        main, other = node.cache("main"), node.cache("other")
        assert main.get("greeting") == b"hello" and other.get("greeting") is None
        assert other.get("k1") == b"v1"
        assert main.get(str(page)) == page.read_bytes()  # the key is the path as given
        packed = other.get(str(page))
        assert packed[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03"
        assert gzip.decompress(packed) == page.read_bytes()
    assert '[cache] stored "greeting" in "main"' in caplog.text


def test_preload_does_not_overwrite_a_restored_item(namespace, tmp_path):
    store = str(tmp_path / "s")
    first = uwcache.Caching(namespace).add_cache("c", max_items=10, block_size=32, store=store)
    with first.start() as node:
        node.cache("c").set("k", b"kept")
    second = uwcache.Caching(namespace).add_cache("c", max_items=10, block_size=32, store=store).add_item("k", "new")
    with second.start() as node:
        assert node.cache("c").get("k") == b"kept"  # set semantics, like uWSGI


def test_preload_errors_name_the_file_and_the_limit(namespace, tmp_path):
    missing = tmp_path / "missing.txt"
    with pytest.raises(uwcache.ConfigError, match=r"missing\.txt.*unable to read"):
        uwcache.Caching(namespace).add_cache("c", max_items=4, block_size=8).add_file(missing).start()
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 100)
    with pytest.raises(uwcache.ConfigError, match=r"big\.bin.*100 bytes.*8 bytes.*block_size=8"):
        uwcache.Caching(namespace).add_cache("c", max_items=4, block_size=8).add_file(big).start()
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with pytest.raises(uwcache.ConfigError, match="empty"):
        uwcache.Caching(namespace).add_cache("c", max_items=4, block_size=8).add_file(empty).start()


@pytest.mark.uwsgi
def test_gzip_preload_is_byte_identical_to_uwsgi(namespace, tmp_path, uwsgi_bin):
    import oracle

    page = tmp_path / "page.txt"
    page.write_bytes(b"The quick brown fox jumps over the lazy dog. " * 50)
    [theirs] = oracle.run_ops("name=z,items=4,blocksize=4096", [("cache_get", str(page), "z")],
                              extra_args=["--load-file-in-cache-gzip", f"z {page}"])
    caching = uwcache.Caching(namespace).add_cache("z", max_items=4, block_size=4096).add_file(page, gzip=True)
    with caching.start() as node:
        assert node.cache("z").get(str(page)) == theirs


@pytest.mark.slow
def test_sweeper_frees_expired_items_and_reports(namespace, caplog):
    caching = uwcache.Caching(namespace).set_basic_params(expire_scan_interval=1, report_freed=True)
    caching.add_cache("s", max_items=10, block_size=16)
    caching.add_cache("keep", max_items=10, block_size=16, no_expire=True)
    with caplog.at_level("INFO", logger="uwcache"), caching.start() as node:
        s, keep = node.cache("s"), node.cache("keep")
        s.set("t", b"v", expires=1)
        s.set("forever", b"v")
        keep.set("t", b"v", expires=1)
        deadline = time.time() + 6
        while len(s) != 1 and time.time() < deadline:
            time.sleep(0.1)
        assert len(s) == 1 and s.get("forever") == b"v"
        assert s.stats()["sweeper_pid"] == os.getpid()
        # no_expire: not swept (but never returned either)
        assert len(keep) == 1 and keep.get("t") is None
    assert 'freed 1 items for cache "s"' in caplog.text
    assert 'freed "t" from cache "s"' in caplog.text


def test_no_expire_basic_param_runs_no_sweeper(namespace):
    caching = uwcache.Caching(namespace).set_basic_params(no_expire=True)
    caching.add_cache("s", max_items=10, block_size=16)
    with caching.start() as node:
        assert not any(t.name == "uwcache-sweeper" for t in node._threads)
        assert node.sweep() == {"s": 0}


_SWEEPING_NODE = textwrap.dedent(
    """
    import sys, time, uwcache
    caching = uwcache.Caching(sys.argv[1]).set_basic_params(expire_scan_interval=1)
    caching.add_cache("shared", max_items=50, block_size=16)
    node = caching.start()
    print("ready", flush=True)
    time.sleep(120)
    """
)


@pytest.mark.slow
def test_one_sweeper_at_a_time_and_takeover_when_it_dies(namespace):
    procs = []
    try:
        for _ in range(2):
            p = subprocess.Popen([sys.executable, "-c", _SWEEPING_NODE, namespace], stdout=subprocess.PIPE)
            assert p.stdout.readline().strip() == b"ready"
            procs.append(p)
        cache = uwcache.attach("shared", namespace=namespace)
        deadline = time.time() + 5
        while cache.stats()["sweeper_pid"] == 0 and time.time() < deadline:
            time.sleep(0.1)
        owner = cache.stats()["sweeper_pid"]
        assert owner in (procs[0].pid, procs[1].pid)
        # for a while, only that process sweeps
        for _ in range(15):
            assert cache.stats()["sweeper_pid"] == owner
            time.sleep(0.1)
        dead = next(p for p in procs if p.pid == owner)
        dead.send_signal(signal.SIGKILL)
        dead.wait()
        survivor = next(p for p in procs if p.pid != owner)
        cache.set("t", b"v", expires=1)
        deadline = time.time() + 8  # the lease is 3 intervals
        while cache.stats()["sweeper_pid"] != survivor.pid and time.time() < deadline:
            time.sleep(0.1)
        assert cache.stats()["sweeper_pid"] == survivor.pid
        deadline = time.time() + 5
        while len(cache) and time.time() < deadline:
            time.sleep(0.1)
        assert len(cache) == 0  # the survivor swept the expired item
        cache.close()
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_node_serves_stats_over_http(namespace):
    import json
    import urllib.request

    caching = uwcache.Caching(namespace).add_cache("web", max_items=10, block_size=32)
    with caching.start(stats="127.0.0.1:0") as node:
        node.cache("web").set("k", b"v")
        node.cache("web").get("k")
        assert node.stats_url.startswith("http://127.0.0.1:")
        doc = json.load(urllib.request.urlopen(node.stats_url, timeout=10))
        [entry] = doc["caches"]
        assert (entry["name"], entry["items"], entry["hits"]) == ("web", 1, 1)
        metrics = urllib.request.urlopen(node.stats_url + "metrics", timeout=10).read().decode()
        assert 'cache="web"' in metrics
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(node.stats_url, timeout=2)


def _python_prints(code: str) -> str:
    """What a fresh ``python -S -c code`` prints, with this checkout's uwcache on its path."""
    src = os.path.dirname(os.path.dirname(os.path.abspath(uwcache.__file__)))
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, PYTHONPATH=src))
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_node_threads_import_nothing_for_the_first_time():
    """A gunicorn master starts the node (its listener threads connect to Redis) and forks its
    workers right away. If a node thread is importing a module at the fork, the worker inherits
    that module's import lock, held by a thread it does not have, and hangs on its first import
    of it: a worker hung that way on its first Redis connection, since the first getaddrinfo()
    of a str host imports the idna codec. So importing the node imports what its threads need,
    in the caller's thread."""
    assert _python_prints(
        "import sys, uwcache.node, uwcache.net.near_listener; "
        "print(sorted(m for m in ('encodings.idna', 'stringprep', 'unicodedata', 'json', 'dataclasses') "
        "if m not in sys.modules))") == "[]"
    # and the first name resolution in a thread then imports nothing new
    assert _python_prints(
        "import sys, socket, threading, uwcache.node; before = set(sys.modules); "
        "t = threading.Thread(target=socket.getaddrinfo, args=('127.0.0.1', 6379)); t.start(); t.join(); "
        "print(sorted(set(sys.modules) - before))") == "[]"
