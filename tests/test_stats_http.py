"""The HTTP stats server: `uwcache run --stats ADDR` and uwcache.net.stats used directly."""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import resource
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Dict, Optional

import pytest

import uwcache
from uwcache.remote import RemoteCache
from uwcache.net.stats import NamespaceStats, StatsServer, block_map, parse_address, prometheus_text, wants_html

from test_cli import UWSGI_KEYS, RunningNode, stats_json, uwcache_cmd


def fetch(url: str) -> tuple:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.headers.get("Content-Type"), response.read()


@pytest.mark.parametrize("text, expected", [
    ("9191", ("127.0.0.1", 9191)),          # a bare port is loopback
    ("127.0.0.1:0", ("127.0.0.1", 0)),
    ("localhost:8080", ("localhost", 8080)),
    (":9191", ("127.0.0.1", 9191)),         # uWSGI's "every address": loopback here (caveats.md)
    ("0.0.0.0:9191", ("0.0.0.0", 9191)),    # every address must be asked for
    ("[::1]:9191", ("::1", 9191)),
])
def test_parse_address(text, expected):
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["", "host", "host:port", "1.2.3.4:70000", "::1:80", "-1"])
def test_parse_address_rejects(text):
    with pytest.raises(ValueError):
        parse_address(text)


def test_server_in_process_serves_json_and_metrics(namespace):
    a = uwcache.open_cache("alpha", namespace=namespace, max_items=5, block_size=16)
    try:
        a.set("k", b"v")
        a.get("k")
        a.get("nope")
        with NamespaceStats(namespace) as reader, StatsServer("127.0.0.1:0", reader.collect) as server:
            assert server.url.startswith("http://127.0.0.1:") and server.port > 0
            status, ctype, body = fetch(server.url)
            assert status == 200 and ctype == "application/json"
            document = json.loads(body)
            assert list(document) == ["caches", "node"]
            (alpha,) = document["caches"]
            assert list(alpha)[:12] == UWSGI_KEYS
            assert (alpha["name"], alpha["items"], alpha["hits"], alpha["miss"]) == ("alpha", 1, 1, 1)

            # a cache created after the server started shows up on the next request
            b = uwcache.open_cache("beta", namespace=namespace, max_items=3, block_size=16)
            try:
                names = [c["name"] for c in json.loads(fetch(server.url)[2])["caches"]]
                assert names == ["alpha", "beta"]
            finally:
                b.close()

            status, ctype, body = fetch(server.url + "metrics")
            assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
            text = body.decode()
            assert "# TYPE uwcache_hits_total counter" in text
            assert f'uwcache_items{{namespace="{namespace}",cache="alpha"}} 1' in text
            assert f'uwcache_misses_total{{namespace="{namespace}",cache="alpha"}} 1' in text

            with pytest.raises(urllib.error.HTTPError) as missing:
                fetch(server.url + "nothing-here")
            assert missing.value.code == 404

            conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
            conn.request("HEAD", "/")
            response = conn.getresponse()
            assert response.status == 200 and response.read() == b""
            conn.close()
        with pytest.raises(OSError):  # closed: the port is released
            socket.create_connection((server.host, server.port), timeout=2).close()
    finally:
        a.close()


def test_network_counters_are_included(namespace):
    with uwcache.open_cache("n", namespace=namespace, max_items=5, block_size=16) as cache:
        cache._net_counter(0, 3)  # as the replication sender counts
        with NamespaceStats(namespace) as reader:
            (entry,) = reader.collect()
        net = {k: v for k, v in entry.items() if k.startswith("net_")}
        assert net and 3 in net.values()
        assert list(entry).index("last_modified_at") < list(entry).index(next(iter(net)))
        text = prometheus_text([entry])
        assert f'uwcache_{next(k for k, v in net.items() if v == 3)}_total{{namespace="{namespace}",cache="n"}} 3' in text


def test_prometheus_escapes_label_values():
    text = prometheus_text([{"name": 'we"ird\\name\n', "namespace": "ns", "items": 3}])
    assert 'uwcache_items{namespace="ns",cache="we\\"ird\\\\name\\n"} 3' in text


def test_run_with_stats_serves_the_same_json_as_stats_command(namespace):
    with RunningNode(namespace, "--cache2", "name=web,items=50,blocksize=128",
                     "--cache2", "name=api,items=20,blocksize=64", "--stats", "127.0.0.1:0") as node:
        match = node.wait_for(r"stats: (http://127\.0\.0\.1:\d+/) \(JSON\)")
        node.wait_ready()
        url = match.group(1)
        assert uwcache_cmd(namespace, "set", "web", "page", "x" * 100).returncode == 0
        status, _ctype, body = fetch(url)
        served = json.loads(body)
        assert [c["name"] for c in served["caches"]] == ["web", "api"]  # the node's order
        assert served["caches"][0]["items"] == 1 and served["caches"][0]["bytes_used"] == 100
        from_command = stats_json(namespace)
        assert [list(c) for c in served["caches"]] == [list(c) for c in from_command["caches"]]
        assert re.search(rf'uwcache_writes_total{{namespace="{namespace}",cache="web"}} 1\b',
                         fetch(url + "metrics")[2].decode())
        assert node.stop() == 0


def test_run_stats_port_in_use_is_an_error(namespace):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        port = busy.getsockname()[1]
        done = uwcache_cmd(namespace, "run", "--cache2", "name=x,items=10", "--stats", f"127.0.0.1:{port}")
        assert done.returncode == 1
        assert f"--stats 127.0.0.1:{port}: cannot listen".encode() in done.stderr
    finally:
        busy.close()


# --------------------------------------------------------------------------------------------
# issue 15: the dashboard, content negotiation, the node section, block maps, the token
# --------------------------------------------------------------------------------------------

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"


def get(server: StatsServer, path: str, headers: Optional[Dict[str, str]] = None) -> tuple:
    """(status, headers, body) of one request; errors are answers too."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


@pytest.mark.parametrize("accept, html", [
    (None, False),
    ("*/*", False),                                   # curl, Prometheus-like clients
    ("application/json", False),
    ("application/json, text/html;q=0.5", False),
    (BROWSER_ACCEPT, True),                           # Chromium, Firefox
    ("text/html", True),
    ("text/html;q=0", False),
    ("text/*, application/json;q=0.2", False),        # text/* is not text/html... only a wildcard
    ("text/html, application/json", False),           # a tie keeps today's JSON
])
def test_wants_html(accept, html):
    assert wants_html(accept) is html


@pytest.fixture
def served(namespace):
    web = uwcache.open_cache("web", namespace=namespace, max_items=20, block_size=64)
    blocks = uwcache.open_cache("blobs", namespace=namespace, max_items=20, block_size=16, block_count=64,
                                mode_bitmap=True)
    web.set("secret-key-1234", b"secret-value-5678")
    with NamespaceStats(namespace) as reader, StatsServer("127.0.0.1:0", reader.collect) as server:
        yield server, web, blocks
    web.close()
    blocks.close()


def test_browsers_get_the_page_and_everyone_else_json(served):
    server, web, _ = served
    status, headers, body = get(server, "/", {"Accept": BROWSER_ACCEPT})
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Vary"] == "Accept"
    page = body.decode()
    assert page.startswith("<!DOCTYPE html>") and "stats.json" in page and "<svg" not in page.split("<script>")[0]
    # self-contained: nothing is loaded from anywhere else, and the browser may not either
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "connect-src 'self'" in headers["Content-Security-Policy"]
    assert get(server, "/dashboard")[2] == body  # the page without negotiation

    for path, accept in [("/", None), ("/", "*/*"), ("/", "application/json"), ("/stats.json", BROWSER_ACCEPT),
                         ("/json", None)]:
        status, headers, raw = get(server, path, {"Accept": accept} if accept else {})
        assert (status, headers["Content-Type"]) == (200, "application/json"), (path, accept)
        assert [c["name"] for c in json.loads(raw)["caches"]] == ["blobs", "web"]

    status, headers, raw = get(server, "/metrics", {"Accept": BROWSER_ACCEPT})  # /metrics unchanged
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    # stats are not data: no key and no value anywhere
    for path in ("/", "/stats.json", "/metrics", "/dashboard"):
        everything = get(server, path, {"Accept": BROWSER_ACCEPT})[2]
        assert b"secret-key" not in everything and b"secret-value" not in everything


def test_json_node_section(served):
    server, _, _ = served
    before = time.time()
    node = json.loads(get(server, "/stats.json")[2])["node"]
    assert node["pid"] == os.getpid() and node["namespace"] == server.namespace
    assert node["version"] == uwcache.__version__
    assert 0 <= node["uptime"] < 60 and node["started_at"] <= before <= node["now"]


def test_block_map_of_a_bitmap_cache(served):
    server, _, blobs = served
    # 64 blocks of 16 bytes: fill 10 items of 3 blocks, free two of them in the middle
    for i in range(10):
        blobs.set(f"b{i}", b"x" * 40)
    blobs.delete("b3")
    blobs.delete("b4")
    caches = {c["name"]: c for c in json.loads(get(server, "/stats.json")[2])["caches"]}
    assert "block_map" not in caches["web"]  # single-block caches have no block map
    entry = caches["blobs"]
    bmap = entry["block_map"]
    assert (bmap["blocks"], bmap["used"], bmap["free"]) == (64, 24, 40)
    assert sum(length for _used, length in bmap["segments"]) == 64
    assert sum(length for used, length in bmap["segments"] if used) == entry["blocks_used"] == 24
    assert bmap["runs"] == len(bmap["segments"]) == 4  # used, free (b3+b4), used, free tail
    assert [used for used, _ in bmap["segments"]] == [1, 0, 1, 0]
    assert bmap["segments"][1] == [0, 6]
    assert bmap["largest_free_run"] == 34 and bmap["largest_free_start"] == 30
    # the same numbers the engine reports
    assert entry["fragmentation"] == round(1 - 34 / 40, 4)


def test_block_map_is_bounded():
    checker = bytes([0b10101010]) * 1000  # 8,000 blocks, every other one used: 8,000 runs
    summary = block_map(checker, 7999)
    assert summary["runs"] == 7999 and "segments" not in summary
    assert len(summary["bins"]) <= 200 and summary["bin_blocks"] * len(summary["bins"]) >= 7999
    assert sum(summary["bins"]) == summary["used"] == 4000
    assert summary["largest_free_run"] == 1
    full = block_map(b"\xff\xff", 12)
    assert full["segments"] == [[1, 12]] and full["largest_free_run"] == 0 and full["largest_free_start"] == -1
    empty = block_map(b"\x00\x0f", 12)  # the padding bits past block 12 are not blocks
    assert empty["segments"] == [[0, 12]] and empty["largest_free_run"] == 12


def test_token_guards_every_path(namespace, monkeypatch):
    with uwcache.open_cache("t", namespace=namespace, max_items=5, block_size=16), \
            NamespaceStats(namespace) as reader, \
            StatsServer("127.0.0.1:0", reader.collect, token="s3cret") as server:
        for path in ("/", "/stats.json", "/metrics", "/dashboard"):
            status, _, body = get(server, path, {"Accept": BROWSER_ACCEPT})
            assert status == 401 and b"token" in body and b'"t"' not in body
        assert get(server, "/stats.json?token=wrong")[0] == 401
        assert get(server, "/stats.json?token=s3cret")[0] == 200
        assert get(server, "/?token=s3cret", {"Accept": BROWSER_ACCEPT})[1]["Content-Type"].startswith("text/html")
        assert get(server, "/metrics", {"X-Uwcache-Token": "s3cret"})[0] == 200
        assert get(server, "/stats.json", {"Authorization": "Bearer s3cret"})[0] == 200
    monkeypatch.setenv("UWCACHE_STATS_TOKEN", "from-env")
    with NamespaceStats(namespace) as reader, StatsServer("127.0.0.1:0", reader.collect) as server:
        assert get(server, "/stats.json")[0] == 401
        assert get(server, "/stats.json?token=from-env")[0] == 200


def test_a_failing_collect_is_a_500_not_a_dead_server():
    calls = []

    def collect():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("region vanished")
        return []

    with StatsServer("127.0.0.1:0", collect) as server:
        status, _, body = get(server, "/stats.json")
        assert status == 500 and json.loads(body) == {"error": "region vanished"}
        assert json.loads(get(server, "/stats.json")[2])["caches"] == []


# --------------------------------------------------------------------------------------------
# issue 9: the stats door under floods; the default bind address
# --------------------------------------------------------------------------------------------


def test_node_stats_colon_port_binds_loopback(namespace, caplog):
    caching = uwcache.Caching(namespace=namespace)
    caching.add_cache("c", max_items=5, block_size=16)
    with caching.start(stats=":0") as node:
        assert node.stats_url.startswith("http://127.0.0.1:")
        assert node._stats_server._httpd.socket.getsockname()[0] == "127.0.0.1"
    with caplog.at_level(logging.WARNING, logger="uwcache"), caching.start(stats="0.0.0.0:0") as node:
        assert node.stats_url.startswith("http://0.0.0.0:")
    assert any("not only on loopback" in r.getMessage() and "no authentication" in r.getMessage()
               for r in caplog.records)


def test_idle_and_slow_connections_time_out():
    with StatsServer("127.0.0.1:0", lambda: [], idle_timeout=0.5) as server:
        idle = socket.create_connection((server.host, server.port), timeout=5)
        slow = socket.create_connection((server.host, server.port), timeout=5)
        slow.sendall(b"GET /stats.json HTTP/1.1\r\nHost: x\r\n")  # ... and never the blank line
        keep_alive = socket.create_connection((server.host, server.port), timeout=5)
        keep_alive.sendall(b"GET /stats.json HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.1)
        assert server.open_connections == 3
        started = time.monotonic()
        assert idle.recv(100) == b""   # closed by the server
        assert slow.recv(100) == b""
        assert keep_alive.recv(4096).startswith(b"HTTP/1.1 200")
        assert keep_alive.recv(100) == b""  # idle after its answer: closed as well
        assert time.monotonic() - started < 3
        deadline = time.monotonic() + 3
        while server.open_connections and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.open_connections == 0
        for sock in (idle, slow, keep_alive):
            sock.close()


def test_connection_cap_drops_the_oldest_idle_first():
    with StatsServer("127.0.0.1:0", lambda: [], max_connections=4, idle_timeout=30) as server:
        idle = []
        for _ in range(4):
            idle.append(socket.create_connection((server.host, server.port), timeout=5))
            time.sleep(0.05)  # accepted in this order
        deadline = time.monotonic() + 3
        while server.open_connections < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.open_connections == 4
        status, _, body = get(server, "/stats.json")  # a fifth: the oldest idle one makes room
        assert status == 200 and json.loads(body)["caches"] == []
        assert idle[0].recv(100) == b""
        for sock in idle[1:]:  # the others are still open
            sock.setblocking(False)
            with pytest.raises(BlockingIOError):
                sock.recv(100)
            sock.close()
        idle[0].close()


class LimitedNode(RunningNode):
    """`uwcache run` with at most ``nofile`` open file descriptors (a common default)."""

    def __init__(self, namespace: str, *args: str, nofile: int = 1024) -> None:
        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        self.proc = subprocess.Popen([sys.executable, "-m", "uwcache", "run", "--namespace", namespace, *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=limit)
        self.lines = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"^Threads:\s+(\d+)", f.read(), re.M).group(1))


@pytest.mark.slow
def test_1100_idle_connections_do_not_take_the_node_down(namespace):
    idle_count = 1100
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = idle_count + 200
    if soft < wanted:  # this test's own side of the connections
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.fail(f"this test needs {wanted} file descriptors; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    idle = []
    with LimitedNode(namespace, "--cache2", "name=web,items=50,blocksize=128", "--stats", "127.0.0.1:0",
                     "--server", "127.0.0.1:0") as node:
        try:
            url = node.wait_for(r"stats: (http://127\.0\.0\.1:\d+/) \(JSON\)").group(1)
            server = node.wait_for(r"cache server listening on (\S+)").group(1)
            node.wait_ready()
            host, port = url[len("http://"):].rstrip("/").split(":")
            remote = RemoteCache("web@" + server, timeout=5)
            remote.set("k", b"before")
            for _ in range(idle_count):
                idle.append(socket.create_connection((host, int(port)), timeout=10))
            time.sleep(0.5)
            pid = node.proc.pid
            cpu = _cpu_seconds(pid)
            time.sleep(1.0)
            assert _cpu_seconds(pid) - cpu < 0.3, "the node burns CPU with idle connections open"
            assert len(os.listdir(f"/proc/{pid}/fd")) < 200
            assert _threads(pid) < 150
            # a good client is served (by both doors) while 1,000+ idle connections are open
            for _ in range(3):
                status, _ctype, body = fetch(url + "stats.json")
                assert status == 200 and json.loads(body)["caches"][0]["name"] == "web"
            remote.set("k", b"during")
            assert remote.get("k") == b"during"
            assert node.proc.poll() is None
        finally:
            for sock in idle:
                sock.close()
        assert node.stop() == 0


@pytest.mark.slow
def test_out_of_descriptors_backs_off_instead_of_spinning(namespace):
    # a node allowed so few descriptors that accepting fails (EMFILE) before the cap is reached
    with LimitedNode(namespace, "--cache2", "name=web,items=50,blocksize=128", "--stats", "127.0.0.1:0",
                     nofile=40) as node:
        url = node.wait_for(r"stats: (http://127\.0\.0\.1:\d+/) \(JSON\)").group(1)
        node.wait_ready()
        host, port = url[len("http://"):].rstrip("/").split(":")
        pid = node.proc.pid
        idle = [socket.create_connection((host, int(port)), timeout=10) for _ in range(80)]
        try:
            node.wait_for(r"stats http: cannot accept a connection: Too many open files")
            cpu = _cpu_seconds(pid)
            time.sleep(1.0)
            assert _cpu_seconds(pid) - cpu < 0.3, "the accept loop spins when out of descriptors"
        finally:
            for sock in idle:
                sock.close()
        # once descriptors are free again, clients are served
        status, _ctype, body = fetch(url + "stats.json")
        assert status == 200 and json.loads(body)["caches"][0]["name"] == "web"
        assert node.stop() == 0
