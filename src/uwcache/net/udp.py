"""UDP replication, wire-compatible with uWSGI's ``nodes=`` (sender) and ``udp=`` (receiver).

Sender: :class:`Replicator` is installed as a cache's ``_on_write`` hook.  After every
successful write through that Cache object it sends one datagram per peer: set/update
(modifier2 10, the stored value and its *absolute* expiry -- for math operations the
result, not the operand) or delete (modifier2 11 with the two pad bytes real uWSGI
receivers need).  With a secret the datagram is wrapped in a signed envelope
(:func:`uwcache.wire.sign_replication`, version 2), which plain uWSGI ignores: the MAC
covers a random sender id, an epoch (the sender's start time), a sequence number, the
cache name and the peer's address, so a copy replayed later, elsewhere or again is
refused.  Sending never raises into
the writer: failures are counted and logged (rate-limited).

Receiver: :class:`UdpReceiver` is one thread per node that binds the ``udp_servers``
addresses of its caches and applies what arrives with ``_set_unreplicated``/``_delete_unreplicated``
(never re-sent).  Malformed, truncated, oversized or unknown datagrams are dropped and
counted; with a secret only authentic, fresh, unreplayed envelopes addressed to this
cache at this address are applied.  The highest sequence seen per sender is kept in
:class:`uwcache.net.seen.SeenTable`, a file of the namespace directory, so a restart
of the receiver does not reopen the door to replays.

Only one process per machine needs to receive for a cache (the cache is shared memory),
so the receiver of a cache is guarded by an ``flock`` on a file next to its region: a
node that finds it taken stays on standby and takes over when the holder exits.

The counters live in the cache's shared header (``cache._net_counter``), so every
process sees the same numbers; :func:`net_stats` names them.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import itertools
import logging
import os
import selectors
import socket
import threading
import time
import weakref
from typing import Any, Dict, List, Optional, Tuple

from .. import _engine, wire
from .._fs import open_private_path
from ..address import is_loopback, parse_tcp  # noqa: F401  (is_loopback re-exported)
from ..errors import CacheError, ConfigError
from ..failsafe import RateLimitedLog
from ..counters import NetCounter, count, net_stats  # noqa: F401  (re-exported)
from .seen import SeenTable
from .waker import Waker, stop_thread

log = logging.getLogger("uwcache.net")

#: signed packets older or newer than this many seconds are refused (clock skew window;
#: ``Node(replay_window=...)`` overrides it per node)
MAX_SKEW = 30
_IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # Linux's value; Python does not export it
_RCVBUF = 4 << 20  # ask for a large receive buffer: bursts of writes arrive at once
_STANDBY_RETRY = 0.5  # seconds between takeover attempts of a standby receiver


# --------------------------------------------------------------------------- addresses


def _split(option: str, address: str) -> Tuple[str, int]:
    return parse_tcp(address, option=option)


def resolve(option: str, address: str, host: str, port: int, kind: int, flags: int = 0) -> Tuple[int, Tuple[Any, ...]]:
    """(family, sockaddr) for `host`, IPv4 first: uWSGI peers speak IPv4 only, and
    ``localhost`` often resolves to ``::1`` before ``127.0.0.1``."""
    try:
        infos = socket.getaddrinfo(host, port, 0, kind, 0, flags)
    except socket.gaierror as exc:
        raise ConfigError(f"{option} entry {address!r}: cannot resolve {host!r}: {exc.strerror}") from None
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    family, _, _, _, sockaddr = infos[0]
    return family, sockaddr


def resolve_peer(option: str, address: str) -> Tuple[int, Tuple[Any, ...]]:
    """(family, sockaddr) of a peer; host names resolve once, here (uWSGI does the same)."""
    host, port = _split(option, address)
    return resolve(option, address, host, port, socket.SOCK_DGRAM)


def _is_multicast_v4(host: str) -> bool:
    try:
        return ipaddress.IPv4Address(host).is_multicast
    except ValueError:
        return False


def bind_udp(option: str, address: str) -> socket.socket:
    """A non-blocking UDP socket bound to `address`.

    An empty host (a bare ``:port``) means 127.0.0.1 (uWSGI: every address; write
    ``0.0.0.0:port`` for that).
    An IPv4 multicast group (224.0.0.0/4) is joined on the default interface;
    ``255.255.255.255`` receives broadcasts (bound to every address, as uWSGI does).
    """
    host, port = _split(option, address)
    mreq = None
    family: int
    if host == "255.255.255.255":
        family, sockaddr = socket.AF_INET, ("0.0.0.0", port)
    elif _is_multicast_v4(host):
        family, sockaddr = socket.AF_INET, (host, port)
        mreq = socket.inet_aton(host) + socket.inet_aton("0.0.0.0")
    else:
        family, sockaddr = resolve(option, address, host, port, socket.SOCK_DGRAM, socket.AI_PASSIVE)
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if mreq is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if host == "255.255.255.255":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
        except OSError:
            pass
        sock.bind(sockaddr)
        if mreq is not None:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        hint = " (another program listens there?)" if exc.errno == errno.EADDRINUSE else ""
        raise ConfigError(f"{option} entry {address!r}: cannot listen: {exc.strerror}{hint}") from None
    return sock


# --------------------------------------------------------------------------- sender


def max_replicated_value(key_size: int, signed: bool, cache_name: str = "") -> int:
    """Largest value that fits one replication datagram with a key of `key_size` bytes
    and the longest expiry field (20 digits)."""
    room = wire.MAX_UDP_PAYLOAD - 4 - 2 - key_size - 2 - 2 - 20
    if signed:
        room -= wire.signed_overhead(cache_name)
    return max(room, 0)


_live_replicators: "weakref.WeakSet[Replicator]" = weakref.WeakSet()


def _new_sender_id() -> int:
    while True:
        sender = int.from_bytes(os.urandom(8), "little")
        if sender:
            return sender


class Replicator:
    """The ``_on_write`` hook of one cache: sends each write to every peer.

    One non-blocking socket per address family, shared by the caches of a node (and
    inherited by forked children, which replicate their writes too)."""

    def __init__(self, cache: Any, peers: List[Tuple[int, Tuple[Any, ...]]], sockets: Dict[int, socket.socket],
                 secret: Optional[str], limiter: RateLimitedLog) -> None:
        self.cache = cache
        self.name = cache.name
        self.peers = [(sockets[family], sockaddr) for family, sockaddr in peers]
        self.secret = secret
        self._log = limiter
        self.destinations = [wire.normalize_destination(sockaddr[0], sockaddr[1]) for _, sockaddr in peers]
        self.reseed()
        _live_replicators.add(self)

    def reseed(self) -> None:
        """A new sender identity: a random id, the start time as epoch, sequence from 1
        (a forked child gets its own, so that parent and child never share a sequence)."""
        self.sender = _new_sender_id()
        self.epoch = time.time_ns()
        self._sequence = itertools.count(1)

    def datagrams(self, op: int, key: bytes, value: bytes, expires: int) -> List[bytes]:
        """The datagram for each peer (in order) of one write; wire errors raise."""
        if op == _engine.OP_SET:
            datagram = wire.encode_udp_set(key, value, expires)
        else:
            datagram = wire.encode_udp_delete(key)
        if self.secret is None:
            return [datagram] * len(self.peers)
        sequence = next(self._sequence)
        now = int(time.time())
        return [wire.sign_replication(datagram, self.secret, timestamp=now, sender=self.sender, epoch=self.epoch,
                                      sequence=sequence, cache=self.name, destination=dest)
                for dest in self.destinations]

    def __call__(self, op: int, key: bytes, value: bytes, expires: int) -> None:
        try:
            if op not in (_engine.OP_SET, _engine.OP_DELETE):
                # clear: uWSGI sends one empty-key delete per slot, which every receiver
                # (uWSGI's and ours) ignores; sending nothing is the same, minus the flood
                count(self.cache, NetCounter.UNREPLICATED)
                self._log(logging.WARNING, "clear:" + self.name,
                          'cache "%s": clear() is not replicated (uWSGI has no clear packet)', self.name)
                return
            datagrams = self.datagrams(op, key, value, expires)
        except wire.Oversized as exc:
            count(self.cache, NetCounter.UNREPLICATED)
            self._log(logging.WARNING, "big:" + self.name,
                      'cache "%s": key %r stored locally but NOT replicated: %s', self.name,
                      key[:64], exc)
            return
        except Exception as exc:  # never raise into the writer
            count(self.cache, NetCounter.SEND_ERRORS)
            self._log(logging.ERROR, "enc:" + self.name, 'cache "%s": replication failed: %s', self.name, exc)
            return
        sent = 0
        for (sock, sockaddr), datagram in zip(self.peers, datagrams):
            try:
                sock.sendto(datagram, sockaddr)
                sent += 1
            except OSError as exc:
                count(self.cache, NetCounter.SEND_ERRORS)
                self._log(logging.WARNING, f"send:{self.name}:{sockaddr}",
                          '[cache-udp-node] cache "%s": sendto %s failed: %s', self.name,
                          sockaddr, exc.strerror or exc)
        if sent:
            count(self.cache, NetCounter.SENT, sent)


class Sender:
    """The sockets and hooks of a node's replicated caches."""

    def __init__(self) -> None:
        self.sockets: Dict[int, socket.socket] = {}
        self.hooked: List[Any] = []
        self._log = RateLimitedLog(log)

    def attach(self, cache: Any) -> None:
        options = cache.options
        option = f"cache {cache.name!r}: udp_clients"
        peers = [resolve_peer(option, address) for address in options.udp_clients]
        for family, sockaddr in peers:
            if family not in self.sockets:
                sock = socket.socket(family, socket.SOCK_DGRAM)
                sock.setblocking(False)
                self.sockets[family] = sock
            if family == socket.AF_INET and sockaddr[0] == "255.255.255.255":
                self.sockets[family].setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        limit = max_replicated_value(cache.key_size, options.secret is not None, cache.name)
        if cache.max_item_size > limit:
            log.info('cache "%s": values over about %d bytes do not fit one UDP datagram; '
                     "they are stored locally but not replicated (counted in net_unreplicated)",
                     cache.name, limit)
        cache._on_write = Replicator(cache, peers, self.sockets, options.secret, self._log)
        self.hooked.append(cache)
        log.info('[cache-udp-node] cache "%s" replicates to %s%s', cache.name,
                 ", ".join(options.udp_clients), " (signed)" if options.secret else "")

    def close(self) -> None:
        for cache in self.hooked:
            if isinstance(getattr(cache, "_on_write", None), Replicator):
                cache._on_write = None
        self.hooked.clear()
        for sock in self.sockets.values():
            sock.close()
        self.sockets.clear()


# --------------------------------------------------------------------------- receiver


class _Endpoint:
    """The receiving side of one cache: its sockets (once bound) and its guard lock."""

    def __init__(self, cache: Any, directory: str, file_name: str, window: int = MAX_SKEW) -> None:
        self.cache = cache
        self.name = cache.name
        self.name_bytes = cache.name.encode("utf-8")
        self.addresses = cache.options.udp_servers
        self.secret = cache.options.secret
        self.window = int(window)
        self.directory = directory
        self.file_name = file_name
        self.lock_path = os.path.join(directory, file_name + ".udp-lock")
        self.lock_fd: Optional[int] = None
        self.seen: Optional[SeenTable] = None
        self.sockets: List[socket.socket] = []

    def try_own(self) -> bool:
        """Take the receiver duty of this cache if no other process holds it."""
        # in the namespace directory: never follow a link planted there, the file must be ours
        fd = open_private_path(self.lock_path, os.O_RDWR | os.O_CREAT, what="the UDP receiver lock file")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        try:
            option = f"cache {self.name!r}: udp_servers"
            for address in self.addresses:
                self.sockets.append(bind_udp(option, address))
            if self.secret is not None:
                self.seen = SeenTable(self.directory, self.file_name + ".udp-seen", self.window)
                for sock in self.sockets:  # learn the address each datagram was sent to
                    if sock.family == socket.AF_INET6:
                        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
                    else:
                        sock.setsockopt(socket.IPPROTO_IP, _IP_PKTINFO, 1)
        except BaseException:
            self._release(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self.lock_fd = fd
        for address, sock in zip(self.addresses, self.sockets):
            log.info('*** udp server for cache "%s" running on %s ***', self.name, address)
            if self.secret is None:
                who = ("every local user (and every container sharing this network)"
                       if is_loopback(sock.getsockname()[0]) else "anyone who can send a datagram to it")
                log.warning('cache "%s": replication packets are accepted on %s without a secret: %s can '
                            "write and delete keys of this cache", self.name, address, who)
        return True

    def holder(self) -> str:
        try:
            fd = open_private_path(self.lock_path, os.O_RDONLY, what="the UDP receiver lock file")
            try:
                return os.read(fd, 32).decode(errors="replace") or "?"
            finally:
                os.close(fd)
        except (OSError, CacheError):
            return "?"

    def _release(self, fd: int) -> None:
        for sock in self.sockets:
            sock.close()
        self.sockets.clear()
        if self.seen is not None:
            self.seen.close()
            self.seen = None
        os.close(fd)  # drops the flock

    def close(self) -> None:
        if self.lock_fd is not None:
            self._release(self.lock_fd)
            self.lock_fd = None

    def _verify(self, datagram: bytes, arrived: Optional[Tuple[str, int]]) -> bytes:
        """The inner datagram of an envelope that passes every check; BadSignature else."""
        assert self.secret is not None
        packet = wire.open_replication(datagram, self.secret)
        now = int(time.time())
        if packet.timestamp + self.window < now:
            raise wire.BadSignature(f"stale packet: signed at {packet.timestamp}, now {now}, "
                                    f"window {self.window}s")
        if packet.timestamp > now + self.window:
            raise wire.BadSignature(f"packet from the future: signed at {packet.timestamp}, now {now}, "
                                    f"window {self.window}s")
        if packet.cache != self.name_bytes:
            raise wire.BadSignature(f"packet signed for cache {packet.cache[:64]!r}, not this one")
        if packet.destination is not None and arrived is not None and packet.destination != arrived:
            raise wire.BadSignature(
                f"packet addressed to {packet.destination[0]}:{packet.destination[1]} arrived at "
                f"{arrived[0]}:{arrived[1]} (a copy replayed to another node, or NAT / port forwarding "
                "between the nodes, which signed replication does not support)")
        if self.seen is None:
            raise wire.BadSignature("no replay memory (receiver closed)")
        why = self.seen.check(packet.sender, packet.epoch, packet.sequence, packet.timestamp, now)
        if why is not None:
            raise wire.BadSignature(why)
        return packet.inner

    def apply(self, datagram: bytes, limiter: RateLimitedLog, arrived: Optional[Tuple[str, int]] = None) -> None:
        """Verify, decode and apply one datagram; every failure is counted, none raises.
        `arrived`: the (address, port) it was sent to, for signed caches."""
        cache = self.cache
        if self.secret is not None:
            try:
                datagram = self._verify(datagram, arrived)
            except wire.BadSignature as exc:
                count(cache, NetCounter.REJECTED)
                limiter(logging.WARNING, "rej:" + self.name,
                        'cache "%s": replication packet rejected: %s', self.name, exc)
                return
        elif wire.is_signed(datagram):
            count(cache, NetCounter.REJECTED)
            limiter(logging.WARNING, "rej:" + self.name,
                    'cache "%s": signed replication packet received but this cache has no secret', self.name)
            return
        try:
            message = wire.decode_udp(datagram)
        except wire.WireError as exc:
            count(cache, NetCounter.DROPPED)
            limiter(logging.INFO, "drop:" + self.name, 'cache "%s": dropped a bad replication packet: %s',
                    self.name, exc)
            return
        try:
            if isinstance(message, wire.UdpSet):
                cache._set_unreplicated(message.key, message.value, message.expires)
            else:
                cache._delete_unreplicated(message.key)
        except (CacheError, ValueError, OverflowError) as exc:
            count(cache, NetCounter.APPLY_ERRORS)
            limiter(logging.WARNING, "apply:" + self.name,
                    '[cache-udp-server] cache "%s": unable to update cache: %s', self.name, exc)
            return
        count(cache, NetCounter.RECEIVED)


_CMSG_SPACE = socket.CMSG_SPACE(20) + socket.CMSG_SPACE(20)


def _destination(ancdata: List[Tuple[int, int, bytes]], port: int) -> Optional[Tuple[str, int]]:
    """The (address, port) a datagram was sent to, from its IP_PKTINFO/IPV6_PKTINFO."""
    for level, kind, data in ancdata:
        try:
            if level == socket.IPPROTO_IP and kind == _IP_PKTINFO and len(data) >= 12:
                return wire.normalize_destination(socket.inet_ntop(socket.AF_INET, data[8:12]), port)
            if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO and len(data) >= 16:
                return wire.normalize_destination(socket.inet_ntop(socket.AF_INET6, data[:16]), port)
        except (ValueError, OSError):
            return None
    return None


_live_receivers: "weakref.WeakSet[UdpReceiver]" = weakref.WeakSet()


def _forget_in_child() -> None:
    # a forked child inherits the bound sockets and the guard lock but not the thread:
    # close its copies so the port and the duty are released when the parent lets go
    for receiver in list(_live_receivers):
        receiver._abandon()
    # and it sends as a sender of its own (parent and child must not share a sequence)
    for replicator in list(_live_replicators):
        replicator.reseed()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


class UdpReceiver:
    """One thread receiving for every cache of a node that has ``udp_servers``."""

    def __init__(self, endpoints: List[_Endpoint]) -> None:
        self.endpoints = endpoints
        self._log = RateLimitedLog(log)
        self._selector = selectors.DefaultSelector()
        self._waker = Waker(self._selector)
        self._stop = self._closed = False
        self._thread: Optional[threading.Thread] = None
        _live_receivers.add(self)
        try:
            for endpoint in endpoints:  # bind now so that start-up errors reach the caller
                if endpoint.try_own():
                    self._register(endpoint)
                else:
                    log.info('udp server for cache "%s" is run by another process (pid %s); '
                             "this one takes over if it exits", endpoint.name, endpoint.holder())
        except BaseException:
            self.close()
            raise

    @classmethod
    def for_caches(cls, caches: List[Any], directory: str, file_name_of: Any,
                   window: int = MAX_SKEW) -> "UdpReceiver":
        """`directory`: the namespace directory (lock and replay files live there);
        `file_name_of(cache)`: the base name of a cache's files in it."""
        return cls([_Endpoint(c, directory, file_name_of(c), window) for c in caches])

    def _register(self, endpoint: _Endpoint) -> None:
        for sock in endpoint.sockets:
            self._selector.register(sock, selectors.EVENT_READ, endpoint)

    @property
    def owned(self) -> List[str]:
        """Names of the caches this process is receiving for."""
        return [e.name for e in self.endpoints if e.lock_fd is not None]

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="uwcache-udp", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        pid = os.getpid()
        next_try = time.monotonic() + _STANDBY_RETRY
        while not self._stop:
            standby = [e for e in self.endpoints if e.lock_fd is None]
            timeout = max(next_try - time.monotonic(), 0.0) if standby else None
            try:
                events = self._selector.select(timeout)
            except (OSError, ValueError):
                if self._stop:
                    return
                raise
            if self._stop or os.getpid() != pid:
                return
            for key, _ in events:
                if key.data is None:
                    self._waker.drain()
                    continue
                self._read(key.fileobj, key.data)  # type: ignore[arg-type]
            if standby and time.monotonic() >= next_try:
                next_try = time.monotonic() + _STANDBY_RETRY
                for endpoint in standby:
                    self._take_over(endpoint)

    def _read(self, sock: socket.socket, endpoint: _Endpoint) -> None:
        signed = endpoint.secret is not None
        port = sock.getsockname()[1]
        for _ in range(256):  # bounded, so one busy socket cannot starve the others
            arrived = None
            try:
                if signed:
                    datagram, ancdata, _, _ = sock.recvmsg(65536, _CMSG_SPACE)
                    arrived = _destination(ancdata, port)
                else:
                    datagram = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. ECONNREFUSED reported for an earlier send
                self._log(logging.DEBUG, "recv", "udp recv: %s", exc)
                return
            try:
                endpoint.apply(datagram, self._log, arrived)
            except Exception as exc:  # a bug must not stop replication: count, log, go on
                count(endpoint.cache, NetCounter.DROPPED)
                self._log(logging.ERROR, "bug", "udp receiver: unexpected error: %r", exc)

    def _take_over(self, endpoint: _Endpoint) -> None:
        try:
            if endpoint.try_own():
                self._register(endpoint)
                log.warning('udp server for cache "%s" taken over by pid %d', endpoint.name, os.getpid())
        except (ConfigError, OSError) as exc:
            self._log(logging.WARNING, "takeover:" + endpoint.name,
                      'udp server for cache "%s": takeover failed: %s', endpoint.name, exc)

    def _abandon(self) -> None:
        if self._closed:
            return
        self._closed = self._stop = True
        self._thread = None
        for endpoint in self.endpoints:
            for sock in endpoint.sockets:
                sock.close()
            endpoint.sockets.clear()
            if endpoint.lock_fd is not None:
                os.close(endpoint.lock_fd)  # our copy only: the parent keeps the lock
                endpoint.lock_fd = None
            if endpoint.seen is not None:
                endpoint.seen.close()
                endpoint.seen = None
        self._selector.close()
        self._waker.close()

    def close(self) -> None:
        _live_receivers.discard(self)
        if self._closed:
            return
        self._closed = self._stop = True
        stop_thread(self._waker, self._thread)
        for endpoint in self.endpoints:
            endpoint.close()
        self._selector.close()
        self._waker.close()
