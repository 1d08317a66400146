"""The cache server (remote access, simple commands, dumps), RemoteCache, the compat
``name@host:port`` functions and sync_from, between uwcache nodes (uwsgi-behaviour.md §6, 7)."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

import uwcache
from uwcache import wire
from uwcache.remote import RemoteCache, RemoteError, RemoteUnavailable

from oracle import free_port


def caching(namespace, **extra):
    c = uwcache.Caching(namespace)
    c.add_cache("c", max_items=10, block_size=64, key_size=32, **extra)
    c.add_cache("other", max_items=5, block_size=16, key_size=8)
    return c


@pytest.fixture
def served(namespace):
    with caching(namespace).start(server="127.0.0.1:0", net_timeout=1.0) as node:
        yield node


def request(node, data: bytes, *, shut: bool = False) -> bytes:
    """Send raw bytes to the node's server, return everything it answers until close."""
    host, port = node.server_address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        try:  # the server may hang up before reading everything: that is its answer
            s.sendall(data)
            if shut:
                s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, ConnectionAbortedError):
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def counters(node, name="c"):
    return next(s for s in node.stats() if s["name"] == name)


# --------------------------------------------------------------------------- RemoteCache


def test_remote_cache_api(served):
    local = served.cache()
    remote = RemoteCache("c@" + served.server_address, timeout=2)
    assert remote.name == "c" and remote.address == served.server_address
    remote.set("k", b"v")
    assert local.get("k") == b"v" and remote.get("k") == b"v" and remote["k"] == b"v"
    remote.set("k", "overwritten", expires=50)
    value, expires = remote.get_with_expiry("k")
    assert value == b"overwritten" and abs(expires - (int(time.time()) + 50)) <= 1
    assert 48 <= remote.ttl("k") <= 50 and local.ttl("k") == remote.ttl("k")
    assert remote.add("k", "x") is False and remote.add("new", "x") is True
    assert "new" in remote and "nope" not in remote
    assert remote.get("nope") is None and remote.get("nope", b"d") == b"d"
    with pytest.raises(KeyError):
        remote["nope"]
    with pytest.raises(KeyError):
        remote.ttl("nope")
    assert remote.delete("new") is True and remote.delete("new") is False
    with pytest.raises(KeyError):
        del remote["new"]
    local.incr("n", 42)
    assert remote.get_int("n") == 42 and remote.get_int("missing", 7) == 7
    with pytest.raises(uwcache.NotAnInteger):
        remote.get_int("k")
    # other caches by name; an empty name or none is the server's default (first) cache
    other = RemoteCache("other@" + served.server_address)
    other["o"] = b"1"
    assert served.cache("other").get("o") == b"1" and local.get("o") is None
    assert RemoteCache(served.server_address).get("k") == b"overwritten"
    assert RemoteCache("@" + served.server_address).get("k") == b"overwritten"
    remote.clear()
    assert len(local) == 0 and served.cache("other").get("o") == b"1"


def test_remote_cache_errors(served):
    remote = RemoteCache("c@" + served.server_address, timeout=2)
    with pytest.raises(RemoteError, match="refused to store"):
        remote.set("k", b"x" * 65)  # block_size 64: the server closes, we explain
    with pytest.raises(RemoteError, match="refused to store"):
        remote.set("k" * 33, b"x")  # key_size 32
    with pytest.raises(RemoteError, match="refused to store"):
        remote.add("new", b"x" * 65)
    with pytest.raises(uwcache.EmptyValue):
        remote.set("", b"x")
    with pytest.raises(uwcache.EmptyValue):
        remote.set("k", b"")
    with pytest.raises(ValueError):
        remote.set("k", b"v", expires=-1)
    for call in (remote.keys, lambda: len(remote), lambda: list(remote),
                 lambda: remote.incr("n"), lambda: remote.decr("n"), lambda: remote.mul("n"),
                 lambda: remote.div("n")):
        with pytest.raises(NotImplementedError, match="protocol"):
            call()
    unknown = RemoteCache("nope@" + served.server_address)
    assert unknown.get("k") is None  # unknown cache: the server closes, like a miss
    with pytest.raises(RemoteError):
        unknown.set("k", b"v")
    with pytest.raises(ValueError):
        RemoteCache("c@host-without-port:")


def test_remote_cache_dead_and_silent_peers():
    dead = RemoteCache(f"c@127.0.0.1:{free_port()}", timeout=1)
    with pytest.raises(RemoteUnavailable):
        dead.get("k")
    assert isinstance(RemoteUnavailable("x"), ConnectionError)
    # a peer that accepts but never answers: the call gives up after the timeout
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        remote = RemoteCache(f"c@127.0.0.1:{silent.getsockname()[1]}", timeout=0.3)
        started = time.monotonic()
        with pytest.raises(RemoteUnavailable, match="0.3 s"):
            remote.get("k")
        assert time.monotonic() - started < 2


def test_remote_host_names_resolve(served):
    port = served.server_address.rsplit(":", 1)[1]
    served.cache().set("k", b"v")
    assert RemoteCache(f"c@localhost:{port}").get("k") == b"v"  # uWSGI: no DNS at all


def test_unix_socket_server(namespace, tmp_path):
    path = str(tmp_path / "cache.sock")
    with caching(namespace).start(server=path) as node:
        assert node.server_address == path
        remote = RemoteCache("c@" + path)
        remote.set("k", b"v")
        assert node.cache().get("k") == b"v" and remote.get("k") == b"v"
    assert not os.path.exists(path)


# --------------------------------------------------------------------------- uWSGI functions


def test_compat_functions_in_a_plain_process(served):
    """uwcache.uwsgi's name@host:port calls work in a process that never started a Node."""
    served.cache().set("k", b"remote")
    spec = "c@" + served.server_address
    code = f"""
import uwcache.uwsgi as u
spec = {spec!r}
print(repr([
    u.cache_get("k", spec), u.cache_exists("k", spec), u.cache_exists("zz", spec),
    u.cache_set("k", "again", 0, spec), u.cache_set("s", "v", 0, spec),
    u.cache_update("s", "w", 60, spec), u.cache_get("s", spec), u.cache_del("s", spec),
    u.cache_del("s", spec), u.cache_get("k", "nope@" + spec.split("@")[1]),
    u.cache_inc("n", 5, 0, spec), u.cache_num("n", spec),
    u.cache_get("k", "c@127.0.0.1:1"), u.cache_get("k", "c@nonsense"),
]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
                         env=dict(os.environ))
    assert out.returncode == 0, out.stderr
    assert eval(out.stdout) == [
        b"remote", True, None,
        None, True,               # set on an existing key fails, like uWSGI
        True, b"w", True,
        None, None,
        True, 5,                  # remote math sends the operand as the value (uWSGI's protocol)
        None, None,               # unreachable / not an address: None, no exception
    ]
    assert "s" not in served.cache()
    assert served.cache().get_int("n") == 5


def test_compat_remote_clear(served):
    import uwcache.uwsgi as u

    served.cache().set("k", b"v")
    assert u.cache_clear("c@" + served.server_address) is True
    assert len(served.cache()) == 0


def test_remote_writes_are_replicated(namespace):
    """Like uWSGI, a write that arrives over the network is replicated over UDP."""
    port = free_port("udp")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind(("127.0.0.1", port))
        peer.settimeout(2)
        with caching(namespace, udp_clients=[f"127.0.0.1:{port}"]).start(server="127.0.0.1:0") as node:
            remote = RemoteCache("c@" + node.server_address)
            remote.set("k", b"v", expires=30)
            message = wire.decode_udp(peer.recv(65536))
            assert (message.key, message.value) == (b"k", b"v")
            assert message.expires == node.cache()._get_with_expiry("k")[1]
            assert remote.delete("k")
            assert wire.decode_udp(peer.recv(65536)) == wire.UdpDelete(b"k")


# --------------------------------------------------------------------------- raw protocol


def test_magic_reply_bytes(served):
    served.cache().set("k", b"remote1")
    reply = request(served, wire.encode_magic_get("k", cache="c"))
    assert reply == bytes.fromhex("6f150011") + wire.encode_vars([(b"status", b"ok"), (b"size", b"7")]) + b"remote1"
    assert request(served, wire.encode_magic_get("missing")) == b""  # close = failure
    assert request(served, wire.encode_magic_exists("k")) == wire.encode_magic_ok()


def test_simple_commands(served):
    cache = served.cache()
    assert request(served, wire.encode_simple_set("s", "v"), shut=True) == b""
    assert cache.get("s") == b"v"
    assert request(served, wire.encode_simple_get("s")) == wire.encode_simple_get_reply(b"v")
    assert request(served, wire.encode_simple_get("missing")) == b""
    assert request(served, wire.encode_simple_stream_get("s")) == bytes([111, 0, 0, 1]) + b"v"
    assert request(served, wire.encode_simple_stream_get("missing")) == bytes([111, 0, 0, 0])
    assert wire.parse_simple_reply(request(served, wire.encode_simple_get("s"))) == b"v"
    # 3/4: lookups do find the key here (uWSGI's always miss: a shadowed length)
    assert request(served, wire.encode_simple_dict([(b"key", b"s"), (b"key", b"missing")])) == b"v"
    assert request(served, wire.encode_simple_dict([(b"get", b"missing")], http_404=True)).startswith(
        b"HTTP/1.0 404 Not Found")
    assert request(served, wire.encode_simple_del("s"), shut=True) == b""
    assert "s" not in cache


def test_bad_requests_are_closed_and_counted(served):
    cache = served.cache()
    cache.set("k", b"v")
    before = counters(served)["net_request_errors"]
    bad = [
        b"GET / HTTP/1.0\r\n\r\n",                              # not uwsgi (modifier1 71)
        bytes([111, 5, 0, 17]) + b"\x03\x00cmd",               # truncated vars, then close
        wire.encode_packet(17, wire.encode_vars([(b"cmd", b"rm"), (b"key", b"k")])),  # unknown cmd
        wire.encode_packet(17, wire.encode_vars([(b"cmd", b"get")])),                # no key
        wire.encode_magic_get("k", cache="no-such-cache"),
        wire.encode_packet(99, b""),                             # unknown modifier2
        wire.encode_dump_request("no-such-cache"),
        # a set announcing more than max_item_size: refused before reading the value
        wire.encode_packet(17, wire.encode_vars([(b"cmd", b"set"), (b"key", b"big"), (b"size", b"100000")])),
    ]
    for data in bad:
        assert request(served, data, shut=True) == b""
    assert counters(served)["net_request_errors"] - before == len(bad)
    assert RemoteCache("c@" + served.server_address).get("k") == b"v"  # still serving


def test_slow_clients_are_cut_off(served):
    host, port = served.server_address.rsplit(":", 1)
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"\x6f")  # one byte of a header, then nothing (net_timeout=1.0)
        assert s.recv(10) == b""
    assert 0.5 < time.monotonic() - started < 4
    # a trickling client does not get more time than a silent one: 22 bytes at 0.15 s each
    # would take 3.3 s, the server hangs up after net_timeout
    started = time.monotonic()
    packet = wire.encode_magic_get("k")
    assert len(packet) == 22
    with socket.create_connection((host, int(port)), timeout=5) as s:
        try:
            for byte in packet:
                s.send(bytes([byte]))
                time.sleep(0.15)
        except OSError:
            pass
    assert time.monotonic() - started < 2.6


def test_many_parallel_clients(served):
    served.cache().set("k", b"v")
    results = []

    def worker():
        remote = RemoteCache("c@" + served.server_address)
        results.extend(remote.get("k") for _ in range(20))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [b"v"] * 160


def test_server_address_errors(namespace):
    with pytest.raises(uwcache.ConfigError, match="server="):
        caching(namespace).start(server="127.0.0.1:notaport")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen(1)
        port = squatter.getsockname()[1]
        with pytest.raises(uwcache.ConfigError, match="cannot listen"):
            caching(namespace).start(server=f"127.0.0.1:{port}")


# --------------------------------------------------------------------------- dumps, sync_from


def test_dump_reply_layout(served):
    cache = served.cache()
    cache.set("k", b"v")
    data = request(served, wire.encode_dump_request("c"))
    info = wire.parse_dump_reply(data)
    assert (info.items, info.blocksize) == (10, 64)
    assert len(data) - info.image_offset == (88 + 32) * 10 + 64 * 10
    assert data[info.image_offset:] == cache._export_image()
    assert wire.parse_dump_reply(request(served, wire.encode_dump_request(""))).items == 10  # first cache
    assert counters(served)["net_dumps"] == 2


def test_sync_from_a_uwcache_node(served, namespace):
    src = served.cache()
    src.set("a", b"1")
    src.set("t", b"2", expires=100)
    src.incr("n", 3)
    served.cache("other").set("o", b"x")
    dead = f"127.0.0.1:{free_port()}"
    target = caching(namespace + "-t", sync_from=[dead, served.server_address])
    target.add_item("pre", "loaded after the sync")
    with target.start() as node:
        dst = node.cache()
        assert sorted(dst.keys()) == [b"a", b"n", b"pre", b"t"]
        assert dst._get_with_expiry("t") == src._get_with_expiry("t")
        assert dst.get_int("n") == 3 and dst.check() is None
        assert node.cache("other").get("o") is None  # only caches with sync_from load a dump


def test_sync_from_all_dead_starts_empty(namespace, caplog, tmp_path):
    peers = [f"127.0.0.1:{free_port()}", str(tmp_path / "no.sock")]
    with caplog.at_level(logging.WARNING, logger="uwcache.net"):
        started = time.monotonic()
        with caching(namespace, sync_from=peers).start() as node:
            assert len(node.cache()) == 0
            node.cache().set("works", b"yes")
        assert time.monotonic() - started < 3
    assert "every sync node failed" in caplog.text
    assert caplog.text.count("no dump from") == 2


def test_sync_from_a_silent_peer_times_out(namespace, caplog):
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        peer = f"127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="uwcache.net"):
            with caching(namespace, sync_from=[peer]).start(net_timeout=0.3) as node:
                assert len(node.cache()) == 0
        assert time.monotonic() - started < 3
    assert "every sync node failed" in caplog.text


def test_sync_refuses_a_dump_of_another_geometry(served, namespace, caplog):
    served.cache().set("a", b"1")
    other = uwcache.Caching(namespace + "-g").add_cache(
        "c", max_items=10, block_size=64, key_size=16, sync_from=[served.server_address])
    with caplog.at_level(logging.WARNING, logger="uwcache.net"):
        with other.start() as node:
            assert len(node.cache()) == 0
    assert "key_size or block count differ" in caplog.text


def test_sync_translates_items_and_blocksize(served, namespace):
    # the dump announces items/blocksize: a peer with other values is translated
    served.cache().set("a", b"1")
    served.cache().set("b", b"x" * 40)
    smaller = uwcache.Caching(namespace + "-s").add_cache(
        "c", max_items=4, block_size=32, key_size=32, sync_from=[served.server_address])
    with smaller.start() as node:
        assert node.cache().get("a") == b"1"
        assert "b" not in node.cache()  # 40 bytes do not fit block_size 32: dropped, logged


def test_sync_into_bitmap_cache(namespace):
    src = uwcache.Caching(namespace + "-src").add_cache(
        "bm", max_items=8, block_size=16, block_count=32, mode_bitmap=True, key_size=16)
    with src.start(server="127.0.0.1:0") as snode:
        snode.cache().set("long", b"L" * 100)  # spans 7 blocks
        snode.cache().set("short", b"s")
        dst = uwcache.Caching(namespace + "-dst").add_cache(
            "bm", max_items=8, block_size=16, block_count=32, mode_bitmap=True, key_size=16,
            sync_from=[snode.server_address])
        with dst.start() as node:
            cache = node.cache()
            assert cache.get("long") == b"L" * 100 and cache.get("short") == b"s"
            cache.set("more", b"M" * 200)  # the bitmap was rebuilt: no overlap with synced items
            assert cache.get("long") == b"L" * 100 and cache.check() is None
