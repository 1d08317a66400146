"""The HTTP stats server: `uwcache run --stats ADDR` and uwcache.net.stats used directly."""

from __future__ import annotations

import http.client
import json
import re
import socket
import urllib.error
import urllib.request

import pytest

import uwcache
from uwcache.net.stats import NamespaceStats, StatsServer, parse_address, prometheus_text

from test_cli import UWSGI_KEYS, RunningNode, stats_json, uwcache_cmd


def fetch(url: str) -> tuple:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.headers.get("Content-Type"), response.read()


@pytest.mark.parametrize("text, expected", [
    ("9191", ("127.0.0.1", 9191)),          # a bare port is loopback
    ("127.0.0.1:0", ("127.0.0.1", 0)),
    ("localhost:8080", ("localhost", 8080)),
    (":9191", ("0.0.0.0", 9191)),           # uWSGI's spelling of "every address"
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
            assert list(document) == ["caches"]
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
