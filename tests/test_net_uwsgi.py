"""Interoperability with a real uWSGI node (from PyPI) on 127.0.0.1, in both directions:
UDP replication, remote access (magic protocol) and sync dumps (uwsgi-behaviour.md §5, 6, 7, 13)."""

from __future__ import annotations


import pytest

import uwcache
import uwcache.uwsgi as compat
from uwcache.remote import RemoteCache

from oracle import free_port, run_ops, start_uwsgi_server, uwsgi_log
from waiting import wait_for

pytestmark = pytest.mark.uwsgi

GEOMETRY = dict(block_size=64, key_size=32)
UWSGI_GEOMETRY = "blocksize=64,keysize=32"


@pytest.fixture(scope="module")
def uwsgi_node(uwsgi_bin):
    """A long-running uWSGI: cache "c" receives UDP, "s" is a sync source, both served
    on a uwsgi socket."""
    args = ["--master", "--die-on-term",
            "--cache2", f"name=c,items=20,{UWSGI_GEOMETRY},udp=127.0.0.1:{{udp}}",
            "--cache2", f"name=s,items=10,{UWSGI_GEOMETRY}",
            "--socket", "127.0.0.1:{port}"]
    with start_uwsgi_server(args, ready_log='udp server for cache "c"') as srv:
        yield srv


# --------------------------------------------------------------------------- uwcache -> uWSGI


def test_replication_to_uwsgi(uwsgi_node, namespace):
    caching = uwcache.Caching(namespace).add_cache(
        "c", max_items=20, udp_clients=[f"127.0.0.1:{uwsgi_node.ports['udp0']}"], **GEOMETRY)
    remote = RemoteCache(f"c@127.0.0.1:{uwsgi_node.port}")
    with caching.start() as node:
        cache = node.cache()
        cache.set("k", b"one")
        cache.set("k", b"two", expires=100)
        cache.set("gone", b"x")
        cache.incr("n", 5)
        cache.incr("n", 5)
        cache.delete("gone")  # uWSGI applies it thanks to the two pad bytes
        cache.set("marker", b"m")
        wait_for(lambda: remote.get("marker") == b"m", what="uWSGI to apply our packets")
        value, expires = remote.get_with_expiry("k")
        assert value == b"two" and expires == cache._get_with_expiry("k")[1]  # absolute, same second
        assert remote.get_int("n") == 10  # the result, not the operand (uWSGI would hold 5)
        assert "gone" not in remote
        assert node.stats()[0]["net_sent"] == 7
    assert uwsgi_node.alive()


def test_signed_packets_do_nothing_on_uwsgi(uwsgi_node, namespace):
    """A signed mesh cannot talk to plain uWSGI: it ignores modifier2 110 (and survives)."""
    caching = uwcache.Caching(namespace, secret="s3cret").add_cache(
        "c", max_items=20, udp_clients=[f"127.0.0.1:{uwsgi_node.ports['udp0']}"], **GEOMETRY)
    plain = uwcache.Caching(namespace + "-plain").add_cache(
        "c", max_items=20, udp_clients=[f"127.0.0.1:{uwsgi_node.ports['udp0']}"], **GEOMETRY)
    remote = RemoteCache(f"c@127.0.0.1:{uwsgi_node.port}")
    with caching.start() as signed_node, plain.start() as plain_node:
        signed_node.cache().set("signed", b"s")
        plain_node.cache().set("plain-after", b"p")  # sent after: arrives after
        wait_for(lambda: remote.get("plain-after") == b"p", what="the unsigned packet")
        assert remote.get("signed") is None
    assert uwsgi_node.alive()


def test_remote_access_to_uwsgi(uwsgi_node):
    spec = f"c@127.0.0.1:{uwsgi_node.port}"
    # the uWSGI-compatible functions, in a process without any local cache
    assert compat.cache_set("ck", "v", 0, spec) is True
    assert compat.cache_set("ck", "again", 0, spec) is None  # set fails on an existing key
    assert compat.cache_get("ck", spec) == b"v"
    assert compat.cache_update("ck", "w", 30, spec) is True
    assert compat.cache_get("ck", f"c@localhost:{uwsgi_node.port}") == b"w"  # uWSGI itself: no DNS
    assert compat.cache_exists("ck", spec) is True and compat.cache_exists("zz", spec) is None
    assert compat.cache_del("ck", spec) is True and compat.cache_del("ck", spec) is None
    assert compat.cache_inc("ci", 5, 0, spec) is True and compat.cache_inc("ci", 5, 0, spec) is True
    assert compat.cache_num("ci", spec) == 5  # uWSGI's protocol: update to the operand
    assert compat.cache_get("ck", f"nope@127.0.0.1:{uwsgi_node.port}") is None
    # the native remote API against real uWSGI
    remote = RemoteCache(spec)
    remote.set("rk", b"rv", expires=60)
    assert remote.get("rk") == b"rv" and 58 <= remote.ttl("rk") <= 60
    assert remote.add("rk", b"x") is False and remote.add("rk2", b"x") is True
    assert "rk2" in remote and remote.delete("rk2") and "rk2" not in remote
    with pytest.raises(uwcache.CacheError, match="refused"):
        remote.set("big", b"x" * 65)  # uWSGI checks size <= blocksize and closes
    # clear on a separate cache, so the other tests keep theirs
    RemoteCache(f"s@127.0.0.1:{uwsgi_node.port}").set("tmp", b"t")
    assert compat.cache_clear(f"s@127.0.0.1:{uwsgi_node.port}") is True
    assert RemoteCache(f"s@127.0.0.1:{uwsgi_node.port}").get("tmp") is None


def test_sync_from_uwsgi(uwsgi_node, namespace, caplog):
    source = RemoteCache(f"s@127.0.0.1:{uwsgi_node.port}")
    source.set("a", b"A", expires=100)
    source.set("b", b"B")
    _, uwsgi_expiry = source.get_with_expiry("a")
    dead = f"127.0.0.1:{free_port()}"
    caching = uwcache.Caching(namespace).add_cache(
        "s", max_items=10, sync_from=[dead, f"127.0.0.1:{uwsgi_node.port}"], **GEOMETRY)
    with caching.start() as node:
        cache = node.cache()
        assert cache._get_with_expiry("a") == (b"A", uwsgi_expiry)
        assert cache.get("b") == b"B" and cache.check() is None
        cache.set("c", b"C")  # the free list and chains were rebuilt: writes work
        assert sorted(cache.keys()) == [b"a", b"b", b"c"]
    assert "no dump from " + dead in caplog.text


# --------------------------------------------------------------------------- uWSGI -> uwcache


def test_replication_and_remote_access_from_uwsgi(namespace):
    udp = free_port("udp")
    caching = uwcache.Caching(namespace)
    caching.add_cache("c", max_items=20, udp_servers=[f"127.0.0.1:{udp}"], **GEOMETRY)
    caching.add_cache("r", max_items=20, **GEOMETRY)
    caching.add_cache("z", max_items=20, **GEOMETRY)
    with caching.start(server="127.0.0.1:0") as node:
        node.cache("z").set("zz", b"1")
        r = f"r@{node.server_address}"
        res = run_ops(f"name=c,items=20,{UWSGI_GEOMETRY},nodes=127.0.0.1:{udp}", [
            # replication: uWSGI writes locally and sends to our udp_servers
            ("cache_set", "k", "v1", 0),
            ("cache_update", "k", "v2", 100),
            ("cache_set", "d", "x"),
            ("cache_del", "d"),                   # uWSGI's unpadded delete: we apply it
            ("cache_inc", "n", 5),
            ("cache_inc", "n", 5),
            ("time",),
            # remote access: uWSGI's client against our server
            ("cache_set", "rk", "rv", 0, r),
            ("cache_set", "rk", "again", 0, r),
            ("cache_get", "rk", r),
            ("cache_exists", "rk", r),
            ("cache_update", "rk", "new", 60, r),
            ("cache_get", "rk", r),
            ("cache_del", "rk", r),
            ("cache_exists", "rk", r),
            ("cache_get", "rk", r),
            ("cache_set", "big", "x" * 65, 0, r),  # > block_size: we close, uWSGI says None
            ("cache_set", "ttl", "t", 100, r),
            ("cache_inc", "m", 5, 0, r),
            ("cache_num", "m", r),
            ("cache_get", "rk", f"nope@{node.server_address}"),
            ("cache_get", "ttl", f"r@localhost:{node.server_address.rsplit(':', 1)[1]}"),
            ("cache_keys", r),
            ("cache_clear", f"z@{node.server_address}"),
        ])
        assert res[7:] == [
            True, None, b"rv", True, True, b"new", True, None, None, None,
            True, True, 5,                        # remote math: the operand becomes the value
            None,                                 # unknown cache
            None,                                 # uWSGI does not resolve "localhost"
            {"raises": "ValueError"},             # no remote cache_keys in uWSGI
            True,
        ], uwsgi_log()
        uwsgi_now = int(res[6])
        cache = node.cache()
        wait_for(lambda: node.stats()[0]["net_received"] >= 6, what="uWSGI's 6 packets")
        value, expires = cache._get_with_expiry("k")
        assert value == b"v2" and uwsgi_now + 99 <= expires <= uwsgi_now + 101
        assert "d" not in cache
        # uWSGI's sender bug (uwsgi-behaviour.md §5.5): it replicates the operand, not the counter
        assert cache.get_int("n") == 5
        rcache = node.cache("r")
        assert 98 <= rcache.ttl("ttl") <= 100   # relative on the wire, stored absolute
        assert rcache.get_int("m") == 5 and "big" not in rcache
        assert len(node.cache("z")) == 0
        assert node.stats()[0]["net_dropped"] == 0


def test_uwsgi_syncs_from_us(namespace):
    caching = uwcache.Caching(namespace).add_cache("c", max_items=10, **GEOMETRY)
    with caching.start(server="127.0.0.1:0") as node:
        cache = node.cache()
        cache.set("k", b"value")
        cache.set("t", b"ttl", expires=100)
        cache.incr("n", 7)
        cache.set("gone", b"x")
        cache.delete("gone")
        res = run_ops(f"name=c,items=10,{UWSGI_GEOMETRY},sync={node.server_address}", [
            ("cache_get", "k"), ("cache_get", "t"), ("cache_num", "n"), ("cache_get", "gone"),
            ("cache_keys",), ("cache_set", "new", "after sync"), ("cache_get", "new"),
        ])
        assert res[:4] == [b"value", b"ttl", 7, None]
        assert sorted(res[4]) == [b"k", b"n", b"t"]
        assert res[5:] == [True, b"after sync"]
        log = uwsgi_log()
        assert "[cache-sync] getting cache dump from " + node.server_address in log
        assert "restored 3 items" in log
        assert node.stats()[0]["net_dumps"] == 1
