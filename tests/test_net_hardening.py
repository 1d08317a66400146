"""Hardening of the network doors (issue 9): floods on the cache server, its secret and
default UNIX socket, bare-port binds, replays of signed replication, hostile sync peers."""

from __future__ import annotations

import json
import logging
import os
import resource
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

import uwcache
from uwcache import wire
from uwcache.remote import RemoteCache, RemoteError, RemoteUnavailable
from second_user import exit_code_as, throwaway_user


def _raise_nofile(want: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        target = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert soft >= want, f"RLIMIT_NOFILE is {soft}; the test needs {want} descriptors"


def _host_port(address):
    host, port = address.rsplit(":", 1)
    return host, int(port)


def _open_idle(address, n):
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.settimeout(5)
        s.connect(_host_port(address))
        socks.append(s)
    return socks


# --------------------------------------------------------------------------- floods


@pytest.mark.slow
def test_good_client_served_while_1000_idle_and_slow_connections_are_open(namespace):
    _raise_nofile(4096)
    caching = uwcache.Caching(namespace).add_cache("c", max_items=10, block_size=64)
    with caching.start(server="127.0.0.1:0", net_timeout=30.0) as node:
        node.cache().set("k", b"v")
        idle = _open_idle(node.server_address, 900)
        slow = _open_idle(node.server_address, 100)
        try:
            for s in slow:  # slow clients: a byte of a header, then nothing more
                s.send(b"\x6f")
            _wait(lambda: node._server.connections >= 1000, "the server to accept them all")
            for attempt in range(5):
                started = time.monotonic()
                assert RemoteCache("c@" + node.server_address, timeout=2).get("k") == b"v"
                assert time.monotonic() - started < 2
            assert node._server.connections >= 1000  # all of them still open
        finally:
            for s in idle + slow:
                s.close()


@pytest.mark.slow
def test_connection_cap_drops_the_oldest_idle_first(namespace):
    caching = uwcache.Caching(namespace).add_cache("c", max_items=10, block_size=64)
    with caching.start(server="127.0.0.1:0", net_timeout=30.0, max_connections=50) as node:
        node.cache().set("k", b"v")
        idle = _open_idle(node.server_address, 300)
        try:
            for attempt in range(5):
                started = time.monotonic()
                assert RemoteCache("c@" + node.server_address, timeout=2).get("k") == b"v"
                assert time.monotonic() - started < 2
            assert node._server.connections <= 50
            newest = idle[-1]  # still open: the oldest went first
            newest.sendall(wire.encode_magic_get("k"))
            assert b"status\x02\x00ok" in newest.recv(100)
            oldest = idle[0]
            oldest.settimeout(2)
            assert oldest.recv(10) == b""  # closed by the server
        finally:
            for s in idle:
                s.close()


_NODE_SCRIPT = """
import os, resource, sys, time, uwcache
limit = int(sys.argv[2])
if limit:
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
caching = uwcache.Caching(sys.argv[1]).add_cache("c", max_items=2, block_size=(16 << 20) + 4096)
node = caching.start(server="127.0.0.1:0", stats="127.0.0.1:0", net_timeout=20.0,
                     max_connections=int(sys.argv[3]))
node.cache().set("k", b"v")
print(node.server_address, node.stats_url, flush=True)
sys.stdin.read()
node.close()
"""


def _spawn_node(namespace, nofile=0, max_connections=256):
    proc = subprocess.Popen([sys.executable, "-c", _NODE_SCRIPT, namespace, str(nofile), str(max_connections)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().split()
    assert len(line) == 2, "the node did not start"
    return proc, line[0], line[1]


def _rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.slow
def test_announced_16mib_values_do_not_grow_the_node(namespace):
    proc, address, _ = _spawn_node(namespace)
    socks = []
    try:
        time.sleep(0.3)
        before = _rss_kib(proc.pid)
        announce = wire.encode_packet(17, wire.encode_vars(
            [(b"cmd", b"update"), (b"key", b"big"), (b"size", str(16 << 20).encode())]))
        for _ in range(64):
            s = socket.create_connection(_host_port(address), timeout=5)
            s.sendall(announce + b"x" * 100)  # a few value bytes, then nothing
            socks.append(s)
        time.sleep(1.0)
        grown = _rss_kib(proc.pid) - before
        assert grown < 6 * 1024, f"the node grew by {grown} KiB for 64 announced 16 MiB values"
        assert RemoteCache("c@" + address, timeout=3).get("k") == b"v"
    finally:
        for s in socks:
            s.close()
        proc.communicate("", timeout=20)


@pytest.mark.slow
def test_cache_server_survives_emfile_and_the_stats_server_keeps_working(namespace):
    # 60 descriptors for the whole node; a flood of 150 idle connections exhausts them.
    # The cache server drops its oldest idle connections and serves; the stats server in
    # the same process still answers, and the cache server's thread is not killed.
    proc, address, stats_url = _spawn_node(namespace, nofile=60, max_connections=10_000)
    flood = []
    try:
        for _ in range(150):
            try:
                flood.append(socket.create_connection(_host_port(address), timeout=2))
            except OSError:
                break
        time.sleep(0.3)
        for attempt in range(3):
            assert RemoteCache("c@" + address, timeout=3).get("k") == b"v"
        for s in flood:
            s.close()
        flood.clear()
        with urllib.request.urlopen(stats_url, timeout=5) as reply:
            assert json.load(reply)["caches"][0]["name"] == "c"
        # and the other way round: the stats server's descriptors exhausted for a moment
        host, port = stats_url.split("//", 1)[1].rstrip("/").rsplit(":", 1)
        for _ in range(150):
            try:
                flood.append(socket.create_connection((host, int(port)), timeout=0.5))
            except OSError:
                break  # the stats server's backlog is full: flooded enough
        time.sleep(0.3)
        for s in flood:
            s.close()
        flood.clear()
        deadline = time.monotonic() + 10
        while True:  # once the stats flood ends, the cache server serves again
            try:
                assert RemoteCache("c@" + address, timeout=2).get("k") == b"v"
                break
            except RemoteUnavailable:
                assert time.monotonic() < deadline, "the cache server did not recover"
                time.sleep(0.2)
    finally:
        for s in flood:
            s.close()
        proc.communicate("", timeout=30)
    assert proc.returncode == 0


def test_value_larger_than_the_cache_item_is_refused_before_reading(namespace):
    caching = uwcache.Caching(namespace).add_cache("c", max_items=10, block_size=64)
    with caching.start(server="127.0.0.1:0", net_timeout=5.0) as node:
        announce = wire.encode_packet(17, wire.encode_vars(
            [(b"cmd", b"set"), (b"key", b"big"), (b"size", b"65")]))
        started = time.monotonic()
        with socket.create_connection(_host_port(node.server_address), timeout=5) as s:
            s.sendall(announce)
            assert s.recv(10) == b""  # closed at once, not after net_timeout
        assert time.monotonic() - started < 2
        assert node.stats()[0]["net_request_errors"] == 1


# --------------------------------------------------------------------------- secret, socket, binds


def test_server_secret_challenge(namespace, caplog):
    caching = uwcache.Caching(namespace).add_cache("c", max_items=10, block_size=64)
    with caching.start(server="127.0.0.1:0", server_secret="s3cret", net_timeout=2.0) as node:
        node.cache().set("k", b"v")
        good = RemoteCache("c@" + node.server_address, secret="s3cret")
        assert good.get("k") == b"v"
        good.set("k2", b"w")
        assert node.cache().get("k2") == b"w"
        wrong = RemoteCache("c@" + node.server_address, secret="wrong")
        assert wrong.get("k") is None  # the server closes the connection: nothing served
        with pytest.raises(RemoteError):
            wrong.set("k", b"forged")
        assert node.cache().get("k") == b"v"
        # a uWSGI-style client without a secret: it reads the challenge, not a reply
        with pytest.raises(RemoteError):
            RemoteCache("c@" + node.server_address).get("k")
        with socket.create_connection(_host_port(node.server_address), timeout=5) as s:
            challenge = s.recv(64)
            s.sendall(wire.encode_magic_get("k"))  # no answer to the challenge
            assert s.recv(64) == b""
        assert len(challenge) == wire.AUTH_CHALLENGE_SIZE
        assert node.stats()[0]["net_request_errors"] >= 2
        # uwcache.uwsgi's compat functions carry no secret: refused (None), never served
        from uwcache import uwsgi as compat
        assert compat.cache_get("k", "c@" + node.server_address) is None


def test_server_secret_defaults_to_the_caching_secret(namespace):
    caching = uwcache.Caching(namespace, secret="mesh").add_cache("c", max_items=10, block_size=64)
    with caching.start(server="127.0.0.1:0", net_timeout=2.0) as node:
        node.cache().set("k", b"v")
        assert RemoteCache("c@" + node.server_address, secret="mesh").get("k") == b"v"
        with pytest.raises(RemoteError):
            RemoteCache("c@" + node.server_address).get("k")
    with caching.start(server="127.0.0.1:0", server_secret=False, net_timeout=2.0) as node:
        assert RemoteCache("c@" + node.server_address).get("k") == b"v"  # explicitly open


def test_default_server_is_an_owner_only_unix_socket(namespace, caplog):
    from uwcache.net.server import default_socket_path

    caching = uwcache.Caching(namespace).add_cache("c", max_items=10, block_size=64)
    with caplog.at_level(logging.INFO, logger="uwcache.net"):
        with caching.start(server=True) as node:
            path = node.server_address
            assert path == default_socket_path(namespace)
            assert not path.startswith("@")
            st = os.stat(path)
            assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
            assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
            node.cache().set("k", b"v")
            assert RemoteCache("c@" + path).get("k") == b"v"
        assert not os.path.exists(path)
    assert "reachable by its owner only" in caplog.text


def test_open_servers_warn_what_is_exposed(namespace, caplog):
    caching = uwcache.Caching(namespace).add_cache("c", max_items=10, block_size=64)
    with caplog.at_level(logging.WARNING, logger="uwcache.net"):
        with caching.start(server="127.0.0.1:0"):
            pass
        assert "has no secret" in caplog.text and "read, write and clear every cache" in caplog.text
        caplog.clear()
        with caching.start(server=f"@uwcache-test-{namespace}"):
            pass
        assert "abstract sockets have no permissions" in caplog.text


def test_bare_port_binds_loopback(namespace):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    caching = uwcache.Caching(namespace).add_cache("c", max_items=10, block_size=64)
    with caching.start(server=f":{port}") as node:
        assert node.server_address == f"127.0.0.1:{port}"


# --------------------------------------------------------------------------- replays


def _free_udp():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _send(port, datagram):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(datagram, ("127.0.0.1", port))


def _wait(predicate, what, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _rejected(node, name="c"):
    return next(s for s in node.stats() if s["name"] == name)["net_rejected"]


@pytest.mark.slow
def test_signed_replays_are_refused_after_restart_elsewhere_and_after_100k_newer(namespace):
    from uwcache import _engine

    secret = "mesh secret"
    p_b, p_d, p_c = _free_udp(), _free_udp(), _free_udp()
    receiver_b = (uwcache.Caching(namespace + "-b", secret=secret)
                  .add_cache("c", max_items=10, block_size=64, udp_servers=[f"127.0.0.1:{p_b}"])
                  .add_cache("d", max_items=10, block_size=64, udp_servers=[f"127.0.0.1:{p_d}"]))
    receiver_c = uwcache.Caching(namespace + "-c", secret=secret).add_cache(
        "c", max_items=10, block_size=64, udp_servers=[f"127.0.0.1:{p_c}"])
    sender = uwcache.Caching(namespace + "-a", secret=secret).add_cache(
        "c", max_items=10, block_size=64, udp_clients=[f"127.0.0.1:{p_b}"])
    with sender.start() as node_a, receiver_c.start() as node_c:
        replicator = node_a.cache()._on_write
        # what an eavesdropper captures of A's packets to B (the very bytes A sends)
        captured = [replicator.datagrams(_engine.OP_SET, b"k", b"old-%d" % i, 0)[0] for i in range(3)]
        with receiver_b.start() as node_b:
            for datagram in captured:
                _send(p_b, datagram)
            _wait(lambda: node_b.cache().get("k") == b"old-2", "the captured packets, once")
            node_a.cache().set("k", b"new")
            _wait(lambda: node_b.cache().get("k") == b"new", "a genuine write")
            # 1. replayed while B runs
            _send(p_b, captured[1])
            _send(p_b, wire.encode_udp_set("flag", "1"))  # unsigned marker: rejected too
            _wait(lambda: _rejected(node_b) == 2, "two rejections")
        # 2. replayed after B restarts (its replay memory is a file of the namespace)
        with receiver_b.start() as node_b:
            for datagram in captured:
                _send(p_b, datagram)
            _wait(lambda: _rejected(node_b) == 2 + 3, "rejections after the restart")
            # 3. replayed to another cache of B that shares the secret
            _send(p_d, captured[0])
            _wait(lambda: _rejected(node_b, "d") == 1, "rejection by another cache")
            # 4. replayed to another node that shares the secret (A never sent to C)
            _send(p_c, captured[0])
            _wait(lambda: _rejected(node_c) == 1, "rejection by another node")
            assert "k" not in node_c.cache() and "k" not in node_b.cache("d")
            # 5. after 100,000 newer packets (every 50th and the last 64 really sent)
            newer = [replicator.datagrams(_engine.OP_SET, b"n", b"%d" % i, 0)[0] for i in range(100_000)]
            sent = newer[::50] + newer[-64:]
            for i, datagram in enumerate(sent):
                _send(p_b, datagram)
                if i % 200 == 199:
                    time.sleep(0.01)  # let the receiver keep up (UDP drops what overflows)
            _wait(lambda: node_b.cache().get("n") == b"99999", "the newest packet")
            before = _rejected(node_b)
            for datagram in captured + newer[:3] + newer[-70:-64:2] + newer[-1:]:
                _send(p_b, datagram)
            _wait(lambda: _rejected(node_b) == before + 3 + 3 + 3 + 1, "replays after 100,000 newer")
            assert node_b.cache().get("k") == b"new" and node_b.cache().get("n") == b"99999"


def test_replay_memory_file_is_private_and_links_are_refused(namespace, shm_dir):
    port = _free_udp()
    caching = uwcache.Caching(namespace, secret="s").add_cache(
        "c", max_items=10, block_size=64, udp_servers=[f"127.0.0.1:{port}"])
    with caching.start():
        pass
    ns_dir = os.path.join(shm_dir, "uwcache-" + namespace)
    seen = os.path.join(ns_dir, "c.cache.udp-seen")
    assert stat.S_IMODE(os.stat(seen).st_mode) == 0o600
    victim = os.path.join(shm_dir, f"victim-{namespace}")
    with open(victim, "wb") as f:
        f.write(b"precious")
    for name in ("c.cache.udp-seen", "c.cache.udp-lock"):
        os.unlink(os.path.join(ns_dir, name))
        os.symlink(victim, os.path.join(ns_dir, name))
        with pytest.raises(uwcache.CacheError, match="symbolic link"):
            caching.start()
        os.unlink(os.path.join(ns_dir, name))
    with open(victim, "rb") as f:
        assert f.read() == b"precious"


def test_forked_sender_gets_its_own_sequence(namespace):
    port = _free_udp()
    receiver = uwcache.Caching(namespace + "-r", secret="s").add_cache(
        "c", max_items=10, block_size=64, udp_servers=[f"127.0.0.1:{port}"])
    sender = uwcache.Caching(namespace + "-s", secret="s").add_cache(
        "c", max_items=10, block_size=64, udp_clients=[f"127.0.0.1:{port}"])
    with receiver.start() as rnode, sender.start() as snode:
        snode.cache().set("parent", b"1")
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            code = 1
            try:
                snode.cache().set("child", b"1")  # the same sequence number as the parent's next
                code = 0
            finally:
                os._exit(code)
        os.waitpid(pid, 0)
        snode.cache().set("parent2", b"1")
        _wait(lambda: all(k in rnode.cache() for k in ("parent", "child", "parent2")), "every write")
        assert _rejected(rnode) == 0


# --------------------------------------------------------------------------- hostile sync peers


class _FakePeer:
    """A TCP server that answers every connection with `reply(sock)` (a hostile peer)."""

    def __init__(self, reply):
        self.reply = reply
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.address = "127.0.0.1:%d" % self.listener.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        self.listener.settimeout(0.2)
        while not self.stop.is_set():
            try:
                sock, _ = self.listener.accept()
            except OSError:
                continue
            with sock:
                sock.settimeout(0.5)
                try:
                    sock.recv(4096)  # the dump request
                    self.reply(sock, self.stop)
                except OSError:
                    pass

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self.listener.close()


def _dump_header(items, blocksize):
    return wire.encode_packet(7, wire.encode_vars([(b"items", items), (b"blocksize", blocksize)]))


def _endless(sock, stop):
    sock.sendall(_dump_header(10, 64))
    chunk = b"\xff" * 65536
    while not stop.is_set():
        sock.sendall(chunk)


HOSTILE = {
    "huge items": lambda s, stop: s.sendall(_dump_header(2**63, 1 << 40) + b"x" * 1000),
    "huge blocksize": lambda s, stop: s.sendall(_dump_header(10, 2**64 - 1)),
    "garbage": lambda s, stop: s.sendall(os.urandom(4096)),
    "endless stream": _endless,
    "wrong geometry": lambda s, stop: s.sendall(_dump_header(10, 64) + b"\0" * 100),
    "damaged image": lambda s, stop: s.sendall(_dump_header(10, 64) + os.urandom((88 + 32) * 10 + 64 * 10)),
    "zero items": lambda s, stop: s.sendall(_dump_header(0, 64)),
    "silence": lambda s, stop: stop.wait(3),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_sync_peer_cannot_stop_the_node(namespace, caplog, kind):
    peer = _FakePeer(HOSTILE[kind])
    try:
        caching = uwcache.Caching(namespace).add_cache(
            "c", max_items=10, block_size=64, key_size=32, sync_from=[peer.address])
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="uwcache.net"):
            with caching.start(net_timeout=1.0) as node:
                node.cache().set("k", b"v")
                assert node.cache().get("k") == b"v"
        assert time.monotonic() - started < 8
        assert f"no dump from {peer.address}" in caplog.text or "dropped" in caplog.text
    finally:
        peer.close()


def test_sync_from_a_server_with_the_mesh_secret(namespace):
    mesh = uwcache.Caching(namespace + "-a", secret="mesh").add_cache("c", max_items=10, block_size=64)
    with mesh.start(server="127.0.0.1:0", net_timeout=2.0) as source:
        source.cache().set("k", b"v")
        joiner = uwcache.Caching(namespace + "-b", secret="mesh").add_cache(
            "c", max_items=10, block_size=64, sync_from=[source.server_address])
        with joiner.start(net_timeout=2.0) as node:
            assert node.cache().get("k") == b"v"
        outsider = uwcache.Caching(namespace + "-c").add_cache(
            "c", max_items=10, block_size=64, sync_from=[source.server_address])
        with outsider.start(net_timeout=1.0) as node:  # no secret: no dump, but it starts
            assert "k" not in node.cache()


def test_udp_bare_port_binds_loopback():
    from uwcache.net.udp import bind_udp

    port = _free_udp()
    sock = bind_udp("udp_servers", f":{port}")
    try:
        assert sock.getsockname() == ("127.0.0.1", port)
    finally:
        sock.close()


def test_clients_that_do_not_read_replies_cannot_pile_up_memory(namespace):
    from uwcache.net.server import CacheServer

    size = 8 << 20  # more than the kernel buffers of a connection take
    caching = uwcache.Caching(namespace).add_cache("c", max_items=3, block_size=size + 64)
    with caching.start() as node:
        node.cache().set("big", b"x" * size)
        node.cache().set("k", b"v")
        server = CacheServer("127.0.0.1:0", node.caches, timeout=20.0, max_buffered=2 * size)
        server.start()
        hogs = []
        try:
            for _ in range(10):  # each asks for 8 MiB and never reads it
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                s.connect(_host_port(server.address))
                s.sendall(wire.encode_magic_get("big"))
                hogs.append(s)
            time.sleep(0.5)
            assert server._held <= 3 * size
            assert RemoteCache("c@" + server.address, timeout=2).get("k") == b"v"
            assert node.stats()[0]["net_request_errors"] >= 5  # the oldest hogs were dropped
        finally:
            for s in hogs:
                s.close()
            server.close()


# --------------------------------------------------------------------------- codec and replay memory


def _v2(**extra):
    fields = dict(timestamp=1_700_000_000, sender=7, epoch=9, sequence=3, cache="c",
                  destination=("127.0.0.1", 3031))
    fields.update(extra)
    return wire.sign_replication(wire.encode_udp_set("k", "v", 5), "secret", **fields)


def test_signed_v2_round_trip_and_every_altered_byte_is_refused():
    signed = _v2()
    packet = wire.open_replication(signed, "secret")
    assert (packet.timestamp, packet.sender, packet.epoch, packet.sequence) == (1_700_000_000, 7, 9, 3)
    assert packet.cache == b"c" and packet.destination == ("127.0.0.1", 3031)
    assert wire.decode_udp(packet.inner) == wire.UdpSet(b"k", b"v", 5)
    for pos in range(len(signed)):
        altered = bytearray(signed)
        altered[pos] ^= 0x41
        with pytest.raises(wire.BadSignature):
            wire.open_replication(bytes(altered), "secret")
    for cut in (1, 10, len(signed) - 5):
        with pytest.raises(wire.BadSignature):
            wire.open_replication(signed[:-cut], "secret")
    with pytest.raises(wire.BadSignature, match="mismatch"):
        wire.open_replication(signed, "other")
    with pytest.raises(wire.BadSignature, match="version 1"):
        wire.open_replication(wire.sign_udp(wire.encode_udp_set("k", "v"), "secret", timestamp=1), "secret")
    mapped = wire.open_replication(_v2(destination=("::ffff:10.0.0.5", 9)), "secret")
    assert mapped.destination == ("10.0.0.5", 9)
    v6 = wire.open_replication(_v2(destination=("::1", 9)), "secret")
    assert v6.destination == ("::1", 9)
    with pytest.raises(wire.Malformed):
        _v2(destination=("localhost", 1))  # numeric addresses only


def test_server_auth_codec():
    nonce = os.urandom(wire.AUTH_NONCE_SIZE)
    challenge = wire.encode_auth_challenge(nonce)
    assert len(challenge) == wire.AUTH_CHALLENGE_SIZE and wire.decode_auth_challenge(challenge) == nonce
    answer = wire.auth_response("s", nonce)
    assert len(answer) == wire.AUTH_PACKET_SIZE
    assert wire.check_auth(answer, b"s", nonce)
    assert not wire.check_auth(answer, b"t", nonce)
    assert not wire.check_auth(answer, b"s", os.urandom(wire.AUTH_NONCE_SIZE))
    assert not wire.check_auth(answer[:-1], b"s", nonce)
    with pytest.raises(wire.Malformed, match="not an auth challenge"):
        wire.decode_auth_challenge(wire.encode_packet(17, b"\0" * (wire.AUTH_CHALLENGE_SIZE - 4)))


def test_seen_table_window_epochs_and_capacity(tmp_path):
    from uwcache.net import seen as seen_mod

    directory = str(tmp_path)
    os.chmod(directory, 0o700)
    table = seen_mod.SeenTable(directory, "t.udp-seen", window=30)
    now = 1_000_000
    assert table.check(5, 1, 10, now, now) is None
    assert table.check(5, 1, 12, now, now) is None
    assert table.check(5, 1, 11, now, now) is None      # reordered: applied once
    assert "already" in table.check(5, 1, 11, now, now)
    assert "already" in table.check(5, 1, 12, now, now)
    assert table.check(5, 1, 100_012, now, now) is None
    assert "behind" in table.check(5, 1, 100_011 - 64, now, now)
    assert "epoch" in table.check(5, 0, 10**9, now, now)
    assert table.check(5, 2, 1, now, now) is None        # a new epoch starts over
    table.close()
    again = seen_mod.SeenTable(directory, "t.udp-seen", window=30)  # a restart remembers
    assert "already" in again.check(5, 2, 1, now, now)
    # more fresh senders than places: refused, not accepted unchecked
    crowd = [seen_mod.SLOTS * i + 77 for i in range(1, seen_mod.PROBES + 2)]
    results = [again.check(s, 1, 1, now, now) for s in crowd]
    assert results[:-1] == [None] * seen_mod.PROBES and "too many" in results[-1]
    # once their packets are older than twice the window, their places are reused
    later = now + 61
    assert again.check(crowd[-1], 1, 1, later, later) is None
    again.close()
    assert stat.S_IMODE(os.stat(os.path.join(directory, "t.udp-seen")).st_mode) == 0o600


def test_replay_memory_refusals_stay_config_errors(tmp_path):
    """The replay memory opens through uwcache._fs's checks (issue 14: one helper), and what
    it refuses is still a ConfigError: a file open to others, a directory others can write
    to, a link."""
    from uwcache.net import seen as seen_mod

    directory = str(tmp_path)
    os.chmod(directory, 0o700)
    seen_mod.SeenTable(directory, "t.udp-seen", window=30).close()
    path = os.path.join(directory, "t.udp-seen")
    os.chmod(path, 0o640)
    with pytest.raises(uwcache.ConfigError, match=r"refusing the replay memory .*t\.udp-seen: its mode is 0640, not 0600"):
        seen_mod.SeenTable(directory, "t.udp-seen", window=30)
    os.chmod(path, 0o600)
    os.chmod(directory, 0o770)
    with pytest.raises(uwcache.ConfigError, match="it must be ours and writable by us only"):
        seen_mod.SeenTable(directory, "t.udp-seen", window=30)
    os.chmod(directory, 0o700)
    os.symlink(path, os.path.join(directory, "link.udp-seen"))
    with pytest.raises(uwcache.ConfigError, match="symbolic link"):
        seen_mod.SeenTable(directory, "link.udp-seen", window=30)
    seen_mod.SeenTable(directory, "t.udp-seen", window=30).close()  # the file itself is still fine


# --------------------------------------------------------------------------- a second local user


@pytest.fixture
def second_user():
    """(uid, gid) of a throw-away local user, created with useradd and removed after."""
    yield from throwaway_user("uwc")


def _try_connect(path):
    def attempt():
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(b"\0" + path[1:].encode() if path.startswith("@") else path)
            return 0
        except PermissionError:
            return 13
        except OSError:
            return 1
        finally:
            s.close()
    return attempt


def test_another_user_cannot_reach_the_default_socket(namespace, second_user, tmp_path, monkeypatch):
    root = tmp_path / "shm"
    root.mkdir()
    os.chmod(tmp_path, 0o755)
    os.chmod(root, 0o755)  # a world-traversable shm dir: only the namespace directory protects
    monkeypatch.setenv("UWCACHE_SHM_DIR", str(root))
    caching = uwcache.Caching(namespace).add_cache("c", max_items=10, block_size=64)
    with caching.start(server=True) as node:
        assert exit_code_as(second_user, _try_connect(node.server_address)) == 13
        assert _try_connect(node.server_address)() == 0  # its owner can
    # an abstract socket has no permissions: the other user connects (hence the warning)
    with caching.start(server=f"@uwcache-test-{namespace}") as node:
        assert exit_code_as(second_user, _try_connect(node.server_address)) == 0


def test_unsigned_replication_warns_what_is_exposed(namespace, caplog):
    port = _free_udp()
    caching = uwcache.Caching(namespace).add_cache(
        "c", max_items=10, block_size=64, udp_servers=[f"127.0.0.1:{port}"], udp_clients=[f"127.0.0.1:{port}"])
    with caplog.at_level(logging.WARNING):
        with caching.start():
            pass
    assert "replication without a secret for cache(s) 'c'" in caplog.text
    assert "without a secret: every local user" in caplog.text
    caplog.clear()
    signed = uwcache.Caching(namespace + "-s", secret="s").add_cache(
        "c", max_items=10, block_size=64, udp_servers=[f"127.0.0.1:{port}"])
    with caplog.at_level(logging.WARNING):
        with signed.start():
            pass
    assert "without a secret" not in caplog.text


def test_lookup_requests_cannot_amplify_a_reply_beyond_the_budget(namespace):
    from uwcache.net.server import CacheServer

    caching = uwcache.Caching(namespace).add_cache("c", max_items=3, block_size=70_000)
    with caching.start() as node:
        node.cache().set("b", b"x" * 65_000)
        server = CacheServer("127.0.0.1:0", node.caches, timeout=5.0, max_buffered=1 << 20)
        server.start()
        try:
            many = wire.encode_simple_dict([(b"key", b"b")] * 100)  # 100 x 65 kB asked in 500 bytes
            with socket.create_connection(_host_port(server.address), timeout=5) as s:
                s.sendall(many)
                assert s.recv(10) == b""
            few = wire.encode_simple_dict([(b"key", b"b")] * 2)
            with socket.create_connection(_host_port(server.address), timeout=5) as s:
                s.sendall(few)
                got = b""
                while chunk := s.recv(1 << 16):
                    got += chunk
            assert got == b"x" * 130_000
        finally:
            server.close()


def test_signed_replication_over_ipv6_checks_the_destination(namespace):
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("::1", 0))
        except OSError as exc:
            print(f"SKIP REASON: no IPv6 loopback: {exc}")
            pytest.skip(f"no IPv6 loopback: {exc}")
        port = s.getsockname()[1]
    receiver = uwcache.Caching(namespace + "-r", secret="s").add_cache(
        "c", max_items=10, block_size=64, udp_servers=[f"[::1]:{port}"])
    sender = uwcache.Caching(namespace + "-s", secret="s").add_cache(
        "c", max_items=10, block_size=64, udp_clients=[f"[::1]:{port}"])
    with receiver.start() as rnode, sender.start() as snode:
        snode.cache().set("k", b"v")
        _wait(lambda: rnode.cache().get("k") == b"v", "an IPv6 signed packet")
        elsewhere = wire.sign_replication(wire.encode_udp_set("x", "y"), "s", timestamp=int(time.time()),
                                          sender=1, epoch=1, sequence=1, cache="c",
                                          destination=("::1", port + 1))
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.sendto(elsewhere, ("::1", port))
        _wait(lambda: _rejected(rnode) == 1, "a redirected IPv6 packet")
        assert "x" not in rnode.cache()


def test_replay_window_is_configurable(namespace):
    port = _free_udp()
    caching = uwcache.Caching(namespace, secret="s").add_cache(
        "c", max_items=10, block_size=64, udp_servers=[f"127.0.0.1:{port}"])
    with pytest.raises(uwcache.ConfigError, match="replay_window"):
        caching.start(replay_window=0)
    sequence = iter(range(1, 10))

    def packet(key, age):
        return wire.sign_replication(wire.encode_udp_set(key, "v"), "s", timestamp=int(time.time()) - age,
                                     sender=42, epoch=1, sequence=next(sequence), cache="c",
                                     destination=("127.0.0.1", port))

    with caching.start(replay_window=5) as node:
        _send(port, packet("old", 10))
        _send(port, packet("fresh", 2))
        _wait(lambda: "fresh" in node.cache(), "the fresh packet")
        assert "old" not in node.cache() and _rejected(node) == 1
    with caching.start() as node:  # the default window, 30 s
        _send(port, packet("old", 10))
        _wait(lambda: "old" in node.cache(), "a 10 s old packet")
