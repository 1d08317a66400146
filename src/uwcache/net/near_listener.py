"""The near cache's invalidation listener: one thread per Redis master, in the Node.

It keeps one connection with ``CLIENT TRACKING on BCAST PREFIX <prefix>`` (RESP3, or the
RESP2 fallback: a ``__redis__:invalidate`` subscriber plus a tracking connection that
``REDIRECT``\\ s to it), deletes every invalidated key and its lease from shared memory in
one engine call per batch, and renews the shard's trust deadline on each PONG: a PING sent
at ``t`` and answered proves every invalidation of a write acknowledged before ``t`` has
been applied, so readers may trust the L1 until ``t + lease_ms``. Every (re)connect and
every flush (a null invalidation) bumps the shard's generation, which kills every earlier
fill at once.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import select
import socket
import ssl
import threading
import time
from collections import deque
from typing import Any, Deque, List, Optional, Tuple

from .resp import NEED_MORE, Parser, ProtocolError, Push, ReplyError, encode_command

# Module level only: the listener threads must not import anything for the first time
# (fork safety, see uwcache/node.py, which also imports the idna codec their
# getaddrinfo() needs).

log = logging.getLogger("uwcache.near")

# engine stat slots (engine/cache.h, UWC_NEAR_*)
STAT_FILLS, STAT_LOST, STAT_WAITS, STAT_UNTRUSTED, STAT_INVALIDATIONS, STAT_LAG_US, STAT_LEASES_FULL, \
    STAT_FLUSHES, STAT_RECONNECTS, STAT_READ_THROUGH, STAT_TTL_ONLY = range(11)


class _Conn:
    """A blocking socket with a RESP parser (connect, send, read replies with a deadline)."""

    def __init__(self, endpoint: Any, timeout: float) -> None:
        if endpoint.unix_path:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(endpoint.unix_path)
        else:
            sock = socket.create_connection((endpoint.host, endpoint.port), timeout=timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if endpoint.tls:
                ctx = ssl.create_default_context()
                if not endpoint.tls_verify:
                    ctx.check_hostname = False
                    ctx.verify_mode = ssl.CERT_NONE
                sock = ctx.wrap_socket(sock, server_hostname=endpoint.host)
        self.sock = sock
        self.parser = Parser()
        self.timeout = timeout

    def send(self, *args: Any) -> None:
        self.sock.sendall(encode_command(*args))

    def fill(self, wait: float) -> bool:
        """Read what is there (waiting up to ``wait`` s); False if nothing came."""
        if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
            ready = True
        else:
            ready = bool(select.select([self.sock], [], [], max(wait, 0.0))[0])
        if not ready:
            return False
        self.sock.settimeout(self.timeout)
        data = self.sock.recv(1 << 18)
        if not data:
            raise ConnectionError("the server closed the connection")
        self.parser.feed(data)
        return True

    def reply(self, pushes: Optional[List[Any]] = None) -> Any:
        """The next reply that is not a push (pushes met meanwhile go to ``pushes``)."""
        end = time.monotonic() + self.timeout
        while True:
            item = self.parser.gets()
            if item is NEED_MORE:
                left = end - time.monotonic()
                if left <= 0:
                    raise TimeoutError("no reply from the server in time")
                self.fill(left)
                continue
            if isinstance(item, Push):
                if pushes is not None:
                    pushes.append(item)
                continue
            return item

    def call(self, *args: Any) -> Any:
        self.send(*args)
        return self.reply()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def _ok(reply: Any, what: str) -> Any:
    if isinstance(reply, ReplyError):
        raise reply
    return reply


class NearListener:
    """Listener of one shard (one master) for one near cache."""

    def __init__(self, cache: Any, endpoint: Any, prefix: bytes, lease_ms: int, *, shard: int = 0,
                 resp: str = "auto", connect_timeout: float = 2.0, max_ttl: int = 300) -> None:
        self.cache = cache
        self.endpoint = endpoint
        self.prefix = prefix
        self.lease_ms = int(lease_ms)
        self.shard = shard
        self.resp = resp
        self.connect_timeout = connect_timeout
        self.ping_interval = max(self.lease_ms / 4000.0, 0.005)
        self.protocol = 0          # 3 or 2 once connected
        self.max_ttl = max_ttl
        self.ttl_only = False      # the server has no usable CLIENT TRACKING
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._conns: List[_Conn] = []

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"uwcache-near-{self.cache.name}-{self.shard}",
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        for c in list(self._conns):
            try:
                c.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._untrust()

    def _untrust(self) -> None:
        try:
            self.cache._near_trust(self.shard, 0)
        except Exception:  # the cache may be closed already
            pass

    def _run(self) -> None:
        backoff = 0.02
        first = True
        while not self._stop.is_set():
            try:
                self._session(first)
                backoff = 0.02
            except (OSError, ProtocolError, ReplyError, TimeoutError, ConnectionError, ValueError) as exc:
                if not self._stop.is_set():
                    log.warning("near cache %r: listener connection to %s lost: %s", self.cache.name,
                                self.endpoint.describe(), exc)
            finally:
                self._untrust()
                self.connected.clear()
                for c in self._conns:
                    c.close()
                self._conns = []
            first = False
            self._stop.wait(backoff)
            backoff = min(backoff * 2, 1.0)

    # -- one connected session ---------------------------------------------------------

    def _auth_args(self) -> List[Any]:
        ep = self.endpoint
        if ep.password is None:
            return []
        return ["AUTH", ep.username or "default", ep.password]

    def _open(self) -> _Conn:
        c = _Conn(self.endpoint, self.connect_timeout)
        self._conns.append(c)
        return c

    def _session(self, first: bool) -> None:
        main = self._open()
        pushes: List[Any] = []
        helper: Optional[_Conn] = None
        if self.resp in ("auto", "3"):
            hello = main.call("HELLO", 3, *self._auth_args())
            if isinstance(hello, ReplyError):
                if self.resp == "3":
                    raise hello
                self.protocol = 2
            else:
                self.protocol = 3
        else:
            self.protocol = 2
        tracking_error: Optional[ReplyError] = None
        if self.protocol == 3:
            reply = main.call("CLIENT", "TRACKING", "on", "BCAST", "PREFIX", self.prefix)
            if isinstance(reply, ReplyError):
                tracking_error = reply
        else:
            if self.endpoint.password is not None:
                _ok(main.call(*self._auth_args()), "AUTH")
            client_id = main.call("CLIENT", "ID")
            if isinstance(client_id, ReplyError):
                tracking_error = client_id
            else:
                helper = self._open()
                if self.endpoint.password is not None:
                    _ok(helper.call(*self._auth_args()), "AUTH")
                reply = helper.call("CLIENT", "TRACKING", "on", "REDIRECT", client_id, "BCAST", "PREFIX", self.prefix)
                if isinstance(reply, ReplyError):
                    tracking_error = reply
                    helper.close()
                    self._conns.remove(helper)
                    helper = None
                else:
                    main.send("SUBSCRIBE", "__redis__:invalidate")
                    sub = _ok(main.reply(), "SUBSCRIBE")
                    if not (isinstance(sub, list) and sub and sub[0] == b"subscribe"):
                        raise ProtocolError(f"unexpected SUBSCRIBE reply {sub!r}")
        if tracking_error is not None:
            # Dragonfly, Garnet and friends: no invalidations. Entries then live up to
            # max_ttl (or the key's TTL), and the deadline only tracks that Redis answers.
            if not self.ttl_only:
                log.warning("near cache %r: %s has no usable CLIENT TRACKING (%s): TTL-only mode, an entry may be "
                            "stale for up to max_ttl=%ds", self.cache.name, self.endpoint.describe(), tracking_error,
                            self.max_ttl)
            self.ttl_only = True
        else:
            self.ttl_only = False
        self.cache._near_count(STAT_TTL_ONLY, int(self.ttl_only))
        # invalidations missed while we were away are unknown: kill every earlier fill
        gen = self.cache._near_bump(self.shard)
        if not first:
            self.cache._near_count(STAT_RECONNECTS, 1)
        log.info("near cache %r: listening to %s (RESP%d%s, prefix %r, generation %d)", self.cache.name,
                 self.endpoint.describe(), self.protocol, ", TTL-only" if self.ttl_only else "", self.prefix, gen)
        self._apply(pushes)
        self._loop(main, helper)

    def _loop(self, main: _Conn, helper: Optional[_Conn]) -> None:
        pings: Deque[float] = deque()       # send times of unanswered PINGs on main
        helper_pings: Deque[float] = deque()
        helper_ok = float("inf") if helper is None else 0.0  # RESP2: the tracking side must answer too
        next_ping = 0.0
        lease_s = self.lease_ms / 1000.0
        conns = [main] if helper is None else [main, helper]
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_ping:
                if pings and now - pings[0] > max(lease_s, 1.0):
                    raise TimeoutError("PING unanswered for longer than the lease")
                if helper is not None:
                    helper.send("PING")
                    helper_pings.append(now)
                main.send("PING")
                pings.append(now)
                next_ping = now + self.ping_interval
            ready = select.select([c.sock for c in conns], [], [], max(next_ping - time.monotonic(), 0.0))[0]
            if helper is not None and helper.sock in ready:
                helper.fill(0)
                for item in helper.parser:
                    if isinstance(item, ReplyError):
                        raise item
                    if helper_pings and not isinstance(item, Push):
                        helper_ok = helper_pings.popleft()
            if main.sock not in ready:
                continue
            main.fill(0)
            batch: List[Any] = []
            for item in main.parser:
                if isinstance(item, Push) or (self.protocol == 2 and isinstance(item, list) and item
                                              and item[0] == b"message"):
                    batch.append(item)
                    continue
                # a PONG ("PONG", or [b"pong", b""] while subscribed): apply what came before it
                self._apply(batch)
                batch = []
                if isinstance(item, ReplyError):
                    raise item
                if not pings:
                    continue
                sent = pings.popleft()
                trusted_from = min(sent, helper_ok)
                self.cache._near_trust(self.shard, int(trusted_from * 1000) + self.lease_ms)
                self.cache._near_count(STAT_LAG_US, int((time.monotonic() - sent) * 1e6))
                self.connected.set()
            self._apply(batch)

    def _apply(self, items: List[Any]) -> None:
        keys: List[bytes] = []
        for item in items:
            if not item:
                continue
            kind = item[0]
            if kind == b"invalidate" and len(item) >= 2:
                payload = item[1]
            elif kind == b"message" and len(item) >= 3:
                payload = item[2]
            else:
                continue  # other pushes (tracking-redir-broken, pubsub) are not ours
            if payload is None:  # FLUSHALL / FLUSHDB: everything goes
                if keys:
                    self.cache._near_invalidate(keys)
                    keys = []
                self.cache._near_bump(self.shard)
                self.cache._near_count(STAT_FLUSHES, 1)
                continue
            if isinstance(payload, list):
                keys.extend(payload)
        if keys:
            try:
                self.cache._near_invalidate(keys)
            except TypeError:  # a non-bytes element: a server bug, skip it
                self.cache._near_invalidate([k for k in keys if isinstance(k, bytes)])


class ClusterSupervisor:
    """Redis Cluster: one :class:`NearListener` per master, each with its own shard (its own
    generation and trust deadline), and the slot map the workers use to find a key's shard.

    The topology is read with ``CLUSTER SLOTS`` from any reachable node, at start and every
    ``refresh_s`` (sooner when a listener has lost its master). A master that goes away
    takes only its shard's trust with it; its slots move to the shard of their new master."""

    def __init__(self, cache: Any, options: Any, shards_path: str, *, refresh_s: float = 1.0) -> None:
        self.cache = cache
        self.options = options
        self.shards_path = shards_path
        self.refresh_s = refresh_s
        self.listeners: dict = {}          # "host:port" -> NearListener
        self.shard_of: dict = {}           # "host:port" -> shard index (kept while the node lives)
        self.connected = _AllConnected(self)
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._slots: List[Tuple[int, int, str]] = []

    def start(self) -> None:
        self._refresh()
        self._thread = threading.Thread(target=self._run, name=f"uwcache-near-cluster-{self.cache.name}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        for listener in list(self.listeners.values()):
            listener.close()
        self.listeners = {}

    def _run(self) -> None:
        while not self._stop.wait(self.refresh_s):
            try:
                self._refresh()
            except Exception as exc:  # keep supervising: the listeners keep their shards meanwhile
                log.warning("near cache %r: cluster topology refresh failed: %s", self.cache.name, exc)

    def _topology(self) -> List[Tuple[int, int, str]]:
        known = [f"{e.host}:{e.port}" for e in self.options.seeds] + list(self.shard_of)
        last: Optional[BaseException] = None
        for address in dict.fromkeys(known):
            host, _, port = address.rpartition(":")
            seed = dataclasses.replace(self.options.seeds[0], host=host, port=int(port), unix_path=None)
            try:
                conn = _Conn(seed, 2.0)
            except OSError as exc:
                last = exc
                continue
            try:
                if seed.password is not None:
                    _ok(conn.call("AUTH", seed.username or "default", seed.password), "AUTH")
                reply = _ok(conn.call("CLUSTER", "SLOTS"), "CLUSTER SLOTS")
            except (OSError, ReplyError, ProtocolError, TimeoutError) as exc:
                last = exc
                continue
            finally:
                conn.close()
            slots = []
            for entry in reply:
                first, end_slot, master = int(entry[0]), int(entry[1]), entry[2]
                mhost = master[0].decode() if isinstance(master[0], bytes) else str(master[0])
                slots.append((first, end_slot, f"{mhost or host}:{int(master[1])}"))
            if slots:
                return sorted(slots)
        raise ConnectionError(f"no cluster node answered CLUSTER SLOTS (last error: {last})")

    def _refresh(self) -> None:
        slots = self._topology()
        masters = sorted({m for _, _, m in slots})
        for address in masters:
            if address not in self.shard_of:
                free = sorted(set(range(16)) - set(self.shard_of.values()))
                if not free:  # forget masters that are gone to reuse their shard
                    for old in [a for a in self.shard_of if a not in masters]:
                        del self.shard_of[old]
                    free = sorted(set(range(16)) - set(self.shard_of.values()))
                if not free:
                    raise ValueError("more than 16 cluster masters: the near cache keeps 16 shards")
                self.shard_of[address] = free[0]
        for address in list(self.listeners):
            if address not in masters:  # no longer a master: its shard stops being trusted
                self.listeners.pop(address).close()
        for address in masters:
            if address not in self.listeners:
                host, _, port = address.rpartition(":")
                endpoint = dataclasses.replace(self.options.seeds[0], host=host, port=int(port), unix_path=None)
                listener = NearListener(self.cache, endpoint, self.options.prefix_bytes, self.options.lease_ms,
                                        shard=self.shard_of[address], resp=self.options.resp,
                                        max_ttl=self.options.max_ttl)
                listener.start()
                self.listeners[address] = listener
        if slots != self._slots:
            table = [[first, last, self.shard_of[m]] for first, last, m in slots]
            tmp = f"{self.shards_path}.{os.getpid()}.tmp"
            with open(tmp, "w") as f:
                json.dump({"slots": table, "masters": {m: self.shard_of[m] for m in masters}}, f)
            os.replace(tmp, self.shards_path)
            self._slots = slots
            log.info("near cache %r: cluster of %d masters (%s)", self.cache.name, len(masters),
                     ", ".join(f"{m}=shard {self.shard_of[m]}" for m in masters))


class _AllConnected:
    """``connected`` of a cluster: set while every master's listener is connected."""

    def __init__(self, supervisor: ClusterSupervisor) -> None:
        self._supervisor = supervisor

    def is_set(self) -> bool:
        listeners = list(self._supervisor.listeners.values())
        return bool(listeners) and all(listener.connected.is_set() for listener in listeners)

    def wait(self, timeout: Optional[float] = None) -> bool:
        end = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            if end is not None and time.monotonic() >= end:
                return False
            time.sleep(0.01)
        return True
