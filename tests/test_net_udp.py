"""UDP replication between uwcache nodes on loopback: set/update/delete/expiry/math,
signed meshes against forged and replayed packets, malformed datagrams, oversize values,
forked writers and receiver takeover (reference sections 5, 12)."""

from __future__ import annotations

import logging
import os
import socket
import struct
import time

import pytest

import uwcache
from uwcache import wire
from uwcache.net.udp import NetCounter, max_replicated_value

from oracle import free_port
from waiting import wait_for


def send(port: int, datagram: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(datagram, ("127.0.0.1", port))


def net(node, name=None):
    """The net_* counters of one cache of a node, from Node.stats()."""
    cache = node.cache(name)
    return next(s for s in node.stats() if s["name"] == cache.name)


@pytest.fixture
def pair(namespace):
    """A sender node and a receiver node (separate namespaces = separate machines)."""
    port = free_port("udp")
    common = dict(max_items=20, block_size=128, key_size=64)
    sender = uwcache.Caching(namespace + "-a").add_cache("c", udp_clients=[f"127.0.0.1:{port}"], **common)
    receiver = uwcache.Caching(namespace + "-b").add_cache("c", udp_servers=[f"127.0.0.1:{port}"], **common)
    with receiver.start() as rnode, sender.start() as snode:
        yield snode, rnode, port


def test_set_update_delete_replicate(pair):
    snode, rnode, _ = pair
    src, dst = snode.cache(), rnode.cache()
    src.set("k", b"one")
    wait_for(lambda: dst.get("k") == b"one", what="set")
    src.set("k", b"two")  # overwrite = update
    wait_for(lambda: dst.get("k") == b"two", what="update")
    assert src.add("new", "x") and not src.add("new", "y")
    wait_for(lambda: dst.get("new") == b"x", what="add")
    assert src.delete("k")
    wait_for(lambda: "k" not in dst, what="delete")
    src["item"] = b"v"
    del src["item"]
    src.set("last", b"marker")
    wait_for(lambda: dst.get("last") == b"marker", what="marker")
    assert "item" not in dst
    # the receiver applies without re-sending, the sender counts one datagram per write
    assert net(rnode)["net_sent"] == 0
    assert net(snode)["net_sent"] == 7
    assert net(rnode)["net_received"] == 7
    assert net(rnode)["net_dropped"] == net(rnode)["net_rejected"] == 0


def test_expiry_is_replicated_absolute(pair):
    snode, rnode, port = pair
    src, dst = snode.cache(), rnode.cache()
    src.set("ttl", b"v", expires=120)
    wait_for(lambda: "ttl" in dst, what="ttl item")
    assert dst._get_with_expiry("ttl") == src._get_with_expiry("ttl")
    assert 118 <= dst.ttl("ttl") <= 120
    # an absolute expiry in the past arrives already expired and is never returned
    send(port, wire.encode_udp_set("old", "v", int(time.time()) - 5))
    send(port, wire.encode_udp_set("marker", "m", 0))
    wait_for(lambda: "marker" in dst, what="marker")
    assert dst.get("old") is None and "old" not in dst


def test_math_replicates_the_result(pair):
    # uWSGI replicates the operand (replicas hold 5 after two incr(5)); we send the result
    snode, rnode, _ = pair
    src, dst = snode.cache(), rnode.cache()
    src.incr("n", 5)
    src.incr("n", 5)
    src.mul("n", 3)
    assert src.get_int("n") == 30
    wait_for(lambda: dst.get_int("n") == 30, what="math result")
    assert dst.get("n") == struct.pack("<q", 30)


def test_wire_bytes_of_every_write_kind(namespace):
    """What a peer receives, byte for byte: sets with absolute expiry, padded deletes, the
    math result, from the native API and from the uWSGI-compatible functions."""
    import uwcache.uwsgi as uwsgi

    port = free_port("udp")
    caching = uwcache.Caching(namespace).add_cache(
        "wirecache", max_items=8, block_size=32, key_size=16, udp_clients=[f"127.0.0.1:{port}"])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind(("127.0.0.1", port))
        peer.settimeout(2)
        with caching.start() as node:
            cache = node.cache()
            cache.set("k", b"val")
            assert peer.recv(65536) == bytes.fromhex("6f0b000a01006b030076616c010030")  # uwsgi-behaviour.md §5.1
            before = int(time.time())
            cache.set("t", b"v", expires=30)
            msg = wire.decode_udp(peer.recv(65536))
            # the engine reads time(), which glibc serves from the coarse clock: near a second
            # boundary it may still say the previous second that time.time() has left
            assert msg.key == b"t" and before + 29 <= msg.expires <= int(time.time()) + 30
            cache.delete("k")
            assert peer.recv(65536) == bytes.fromhex("6f05000b01006b0000")  # padded: uWSGI applies it
            assert uwsgi.cache_set("c", "1", 0, "wirecache") is True
            assert wire.decode_udp(peer.recv(65536)) == wire.UdpSet(b"c", b"1", 0)
            assert uwsgi.cache_inc("n", 5, 0, "wirecache") and uwsgi.cache_inc("n", 5, 0, "wirecache")
            assert wire.decode_udp(peer.recv(65536)).value == struct.pack("<q", 5)
            assert wire.decode_udp(peer.recv(65536)).value == struct.pack("<q", 10)  # result, not operand
            assert uwsgi.cache_del("c", "wirecache") is True
            assert wire.decode_udp(peer.recv(65536)) == wire.UdpDelete(b"c")
            assert uwsgi.cache_del("c", "wirecache") is None  # a failed write sends nothing
            cache.set("end", b"e")
            assert wire.decode_udp(peer.recv(65536)).key == b"end"


def test_clear_is_not_replicated_but_counted(pair, caplog):
    snode, rnode, _ = pair
    src, dst = snode.cache(), rnode.cache()
    src.set("a", b"1")
    wait_for(lambda: "a" in dst)
    with caplog.at_level(logging.WARNING, logger="uwcache.net"):
        src.clear()
    assert net(snode)["net_unreplicated"] == 1
    assert "clear() is not replicated" in caplog.text
    assert dst.get("a") == b"1"


def test_value_too_large_for_a_datagram(namespace, caplog):
    port = free_port("udp")
    caching = uwcache.Caching(namespace).add_cache(
        "big", max_items=4, block_size=70000, key_size=16, udp_clients=[f"127.0.0.1:{port}"])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind(("127.0.0.1", port))
        peer.settimeout(2)
        with caplog.at_level(logging.INFO, logger="uwcache.net"):
            node = caching.start()
        with node:
            assert "do not fit one UDP datagram" in caplog.text  # warned at start
            cache = node.cache()
            # header 4 + key 2+1 + value 2+n + expires 2+1 ("0") <= 65507
            limit = 65507 - 12
            assert max_replicated_value(16, signed=False) <= limit  # the start-up warning's bound
            with caplog.at_level(logging.WARNING, logger="uwcache.net"):
                cache.set("k", b"x" * (limit + 1))  # stored locally, refused for the wire
            assert cache.get("k") == b"x" * (limit + 1)
            assert net(node)["net_unreplicated"] == 1
            assert "NOT replicated" in caplog.text and "65507" in caplog.text
            cache.set("j", b"y" * limit)  # the largest value that fits is sent
            data = peer.recv(65536)
            assert len(data) == 65507
            assert wire.decode_udp(data) == wire.UdpSet(b"j", b"y" * limit, 0)
            assert net(node)["net_sent"] == 1


def test_malformed_datagrams_are_dropped_and_counted(namespace):
    port = free_port("udp")
    caching = uwcache.Caching(namespace).add_cache(
        "c", max_items=8, block_size=16, key_size=8, udp_servers=[f"127.0.0.1:{port}"])
    good = wire.encode_udp_set("k", "v")
    bad = [
        b"",                                      # empty datagram
        b"\x00",                                  # shorter than a header
        b"GET / HTTP/1.0\r\n\r\n",                # not uwsgi at all
        bytes([112]) + good[1:],                  # wrong modifier1
        good[:-1],                                # truncated (datasize too big)
        good + b"\x00",                           # trailing byte
        bytes([111, 3, 0, 99, 1, 0, 107]),        # unknown modifier2
        wire.encode_packet(10, b"\x00\x00\x01\x00v"),  # empty key
        wire.encode_packet(10, b"\x01\x00k\x01\x00v\x02\x00-1"),  # non-digit expires
        wire.encode_packet(11, b"\x05\x00ab"),     # key length overruns
        os.urandom(65507),                         # largest datagram, random bytes
    ]
    with caching.start() as node:
        for datagram in bad:
            send(port, datagram)
        # valid but not applicable: the value is larger than block_size, the key than key_size
        send(port, wire.encode_udp_set("k", b"v" * 17))
        send(port, wire.encode_udp_set("k" * 9, b"v"))
        send(port, good)
        cache = node.cache()
        wait_for(lambda: cache.get("k") == b"v", what="good packet")
        stats = net(node)
        assert stats["net_dropped"] == len(bad)
        assert stats["net_apply_errors"] == 2
        assert stats["net_received"] == 1
        assert cache.check() is None


def test_unpadded_delete_accepted(pair):
    # uWSGI's own senders omit the two pad bytes; we accept both forms
    snode, rnode, port = pair
    dst = rnode.cache()
    send(port, wire.encode_udp_set("a", "1"))
    send(port, wire.encode_udp_set("b", "2"))
    wait_for(lambda: "a" in dst and "b" in dst)
    send(port, wire.encode_udp_delete("a", pad=False))
    send(port, wire.encode_udp_delete("b", pad=True))
    wait_for(lambda: "a" not in dst and "b" not in dst, what="both deletes")


# --------------------------------------------------------------------------- signing


@pytest.fixture
def signed(namespace):
    port = free_port("udp")
    receiver = uwcache.Caching(namespace + "-r", secret="s3cret").add_cache(
        "c", max_items=10, block_size=64, key_size=16, udp_servers=[f"127.0.0.1:{port}"])
    with receiver.start() as node:
        yield node, port


def test_signed_mesh_replicates(signed, namespace):
    rnode, port = signed
    sender = uwcache.Caching(namespace + "-s", secret="s3cret").add_cache(
        "c", max_items=10, block_size=64, key_size=16, udp_clients=[f"127.0.0.1:{port}"])
    with sender.start() as snode:
        snode.cache().set("k", b"v", expires=60)
        snode.cache().delete("k")
        snode.cache().set("k2", b"v2")
        wait_for(lambda: rnode.cache().get("k2") == b"v2", what="signed set")
        assert "k" not in rnode.cache()
    assert net(rnode)["net_received"] == 3
    assert net(rnode)["net_rejected"] == 0


def test_forged_and_replayed_packets_rejected(signed):
    rnode, port = signed
    cache = rnode.cache()
    now = int(time.time())
    sequence = iter(range(1, 100))

    def sign(inner, secret="s3cret", timestamp=now, **extra):
        fields = dict(timestamp=timestamp, sender=0xABC, epoch=1, sequence=next(sequence), cache="c",
                      destination=("127.0.0.1", port))
        fields.update(extra)
        return wire.sign_replication(inner, secret, **fields)

    inner = wire.encode_udp_set("evil", "x")
    valid = sign(wire.encode_udp_set("good", "ok"))
    tampered = bytearray(sign(wire.encode_udp_set("evil", "y")))
    tampered[-40] ^= 1  # flip a bit of the inner packet: the MAC no longer matches
    attacks = [
        inner,                                                      # unsigned
        wire.encode_udp_delete("good"),                            # unsigned delete
        sign(inner, "wrong secret"),                               # forged
        bytes(tampered),                                           # altered in flight
        sign(inner, timestamp=now - 3600),                         # stale (replayed much later)
        sign(inner, timestamp=now + 3600),                         # from the future
        wire.sign_udp(inner, "s3cret", timestamp=now),             # version 1: no sequence, refused
        sign(inner, cache="other"),                                # signed for another cache
        sign(inner, destination=("127.0.0.1", port + 1)),          # sent to another address
    ]
    send(port, valid)
    wait_for(lambda: cache.get("good") == b"ok", what="valid signed packet")
    for datagram in attacks:
        send(port, datagram)
    send(port, valid)  # replay of an accepted packet inside the window
    send(port, sign(wire.encode_udp_set("marker", "m")))
    wait_for(lambda: "marker" in cache, what="marker")
    stats = net(rnode)
    assert stats["net_rejected"] == len(attacks) + 1
    assert stats["net_received"] == 2
    assert "evil" not in cache and cache.get("good") == b"ok"


def test_unsigned_receiver_rejects_signed_packets(namespace):
    port = free_port("udp")
    caching = uwcache.Caching(namespace).add_cache(
        "c", max_items=4, block_size=16, key_size=8, udp_servers=[f"127.0.0.1:{port}"])
    with caching.start() as node:
        send(port, wire.sign_udp(wire.encode_udp_set("k", "v"), "x", timestamp=int(time.time())))
        send(port, wire.encode_udp_set("m", "v"))
        wait_for(lambda: "m" in node.cache())
        assert "k" not in node.cache()
        assert net(node)["net_rejected"] == 1


# --------------------------------------------------------------------------- processes


def test_forked_writer_replicates(pair):
    snode, rnode, _ = pair
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            snode.cache().set("from-child", b"c")
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    wait_for(lambda: rnode.cache().get("from-child") == b"c", what="child's write")


def test_another_process_with_a_node_replicates(pair):
    """Any process that starts a Node on the same configuration sends its writes; the
    counters are shared through the cache's memory."""
    import subprocess
    import sys

    snode, rnode, port = pair
    code = f"""
import uwcache
caching = uwcache.Caching({snode.namespace!r}).add_cache(
    "c", max_items=20, block_size=128, key_size=64, udp_clients=["127.0.0.1:{port}"])
with caching.start(sweeper=False) as node:
    node.cache().set("from-other-process", b"p")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    wait_for(lambda: rnode.cache().get("from-other-process") == b"p", what="the other process's write")
    assert net(snode)["net_sent"] == 1  # counted in shared memory by the other process


def test_second_node_stands_by_and_takes_over(namespace):
    port = free_port("udp")
    caching = uwcache.Caching(namespace).add_cache(
        "c", max_items=4, block_size=16, key_size=8, udp_servers=[f"127.0.0.1:{port}"])
    first = caching.start()
    second = caching.start()  # same caches: the receiver duty is taken, no bind error
    try:
        assert first.udp_receiving == ["c"] and second.udp_receiving == []
        send(port, wire.encode_udp_set("a", "1"))
        wait_for(lambda: "a" in second.cache(), what="shared memory sees the first's receipt")
        first.close()
        wait_for(lambda: second.udp_receiving == ["c"], what="takeover")
        send(port, wire.encode_udp_set("b", "2"))
        wait_for(lambda: "b" in second.cache(), what="receipt after takeover")
    finally:
        first.close()
        second.close()


def test_bad_peer_addresses_fail_at_start(namespace):
    caching = uwcache.Caching(namespace).add_cache(
        "c", max_items=4, block_size=16, udp_clients=["no-such-host.invalid:3000"])
    with pytest.raises(uwcache.ConfigError, match="cannot resolve"):
        caching.start()
    port = free_port("udp")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        squatter.bind(("127.0.0.1", port))
        caching = uwcache.Caching(namespace + "x").add_cache(
            "c", max_items=4, block_size=16, udp_servers=[f"127.0.0.1:{port}"])
        with pytest.raises(uwcache.ConfigError, match="cannot listen"):
            caching.start()


def test_close_stops_receiving_fast(namespace):
    port = free_port("udp")
    caching = uwcache.Caching(namespace).add_cache(
        "c", max_items=4, block_size=16, udp_servers=[f"127.0.0.1:{port}"])
    node = caching.start()
    started = time.monotonic()
    node.close()
    assert time.monotonic() - started < 1.0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", port))  # the port is free again


def test_counter_indices_are_stable():
    # the counters live in shared memory: other processes and versions read them by index
    assert [c.value for c in NetCounter] == list(range(10))
    assert NetCounter.SENT == 0 and NetCounter.DUMPS == 9
