"""The near cache: one uwcache L1 per host in front of Redis or Valkey (issue 11).

Redis holds the truth; the L1 (a uwcache cache, shared by every process of the host)
holds the same bytes Redis holds under the same key (``prefix + key``). The Node runs one
listener per Redis master (:mod:`uwcache.net.near_listener`) that deletes invalidated keys
and renews a trust deadline; any process reads through :func:`near`::

    caching = (uwcache.Caching()
               .add_cache("pages", max_items=100_000, block_size=4096, key_size=200)
               .add_near("pages", redis="redis://127.0.0.1:6379/0", prefix="app:pages:",
                         max_ttl=300, lease_ms=300))
    with caching.start() as node:
        pages = uwcache.near("pages")
        pages.get("home")

A miss takes a lease (a per-fill token in shared memory), reads ``GET`` + ``PTTL`` and
fills only if the lease is still there; any invalidation or delete in between removes the
lease, so a value read before a write can never land after its invalidation. See
docs/near.md for the guarantees and their measured bounds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import json
import os
import time
from typing import Any, Awaitable, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from .counters import near_stats  # noqa: F401  (re-exported)
from .errors import CacheError, ConfigError
# the near tier's options are checked with the other options, and its cache2 keys read with
# the other cache2 keys; their names stay importable from here
from .options import NearOptions, RedisEndpoint, parse_redis_url, resolve_namespace
from .uwsgi_config import split_cache2_near  # noqa: F401  (re-exported)

__all__ = ["NearOptions", "Near", "near", "RedisEndpoint", "parse_redis_url"]

Key = Union[str, bytes]
Value = Union[str, bytes]

_STAT_WAITS, _STAT_READ_THROUGH = 2, 9


# -- configuration (the options themselves are uwcache.options') ----------------------------

_MAX_SHARDS = 16  # engine/cache.h UWC_NEAR_SHARDS: one per cluster master


def _sidecar_path(name: str, namespace: Optional[str]) -> str:
    from .cache import region_path

    return region_path(name, namespace) + ".near.json"


def _shards_path(name: str, namespace: Optional[str]) -> str:
    from .cache import region_path

    return region_path(name, namespace) + ".near-shards.json"


def write_sidecar(options: NearOptions, namespace: Optional[str]) -> None:
    """Where every process of the host finds the near tier of a cache (owner-only file)."""
    path = _sidecar_path(options.name, namespace)
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(dataclasses.asdict(options), f)
    os.replace(tmp, path)


def read_sidecar(name: str, namespace: Optional[str]) -> NearOptions:
    path = _sidecar_path(name, namespace)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise CacheError(f"cache {name!r} has no near tier: configure it with Caching().add_near({name!r}, redis=…) "
                         f"and start the node (looked for {path})") from None
    with os.fdopen(fd) as f:
        return NearOptions(**json.load(f))


def _to_bytes(value: Value, what: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"near {what} must be bytes or str, not {type(value).__name__}")


# -- the per-process handle ---------------------------------------------------------------


class Near:
    """The near tier of one cache, in this process. Get it with :func:`uwcache.near`.

    ``get`` is a C call from the L1 down on a hit; a miss goes to Redis (leased, single
    flight across the host). Values are the bytes Redis holds; ``str`` values are written as
    UTF-8. Counters (``incr``/``decr``) go straight to Redis.
    """

    def __init__(self, cache: Any, options: NearOptions) -> None:
        self.cache = cache
        self.options = options
        self.prefix = options.prefix_bytes
        self._redis_client: Any = None
        self._async_client: Any = None
        self._pid = os.getpid()
        self._rtt = 0.001            # moving average of one GET+PTTL round trip, seconds
        self._before_fill: Optional[Callable[[bytes], None]] = None  # tests: runs between the read and the fill
        self._leases = True          # tests: False = naive fill (lease taken after the read)
        self._cluster = options.cluster
        self._slot_map: List[Tuple[int, int, int]] = []  # (first slot, last slot, shard)
        self._slot_map_stamp: Optional[int] = None
        cache._near_bind(self.prefix, self._miss)
        self.get: Callable[[Key], Optional[bytes]] = cache._near_get  # type: ignore[assignment]

    # -- clients (created lazily, per process) -------------------------------------------

    def _new_client(self, asyncio_client: bool) -> Any:
        if not self._cluster:
            if asyncio_client:
                import redis.asyncio

                return redis.asyncio.Redis.from_url(self.options.redis, **REDIS_TIMEOUTS)
            import redis

            return redis.Redis.from_url(self.options.redis, **REDIS_TIMEOUTS)
        seed = self.options.endpoint
        kw: Dict[str, Any] = {"username": seed.username, "password": seed.password, "ssl": seed.tls,
                              **REDIS_TIMEOUTS}
        if asyncio_client:
            from redis.asyncio.cluster import ClusterNode as AsyncNode
            from redis.asyncio.cluster import RedisCluster as AsyncCluster

            return AsyncCluster(startup_nodes=[AsyncNode(e.host, e.port) for e in self.options.seeds], **kw)
        from redis.cluster import ClusterNode, RedisCluster

        return RedisCluster(startup_nodes=[ClusterNode(e.host, e.port) for e in self.options.seeds], **kw)

    @property
    def redis(self) -> Any:
        """This process's redis-py client (``RedisCluster`` for a cluster; recreated after fork)."""
        client = self._redis_client
        if client is None or self._pid != os.getpid():
            with _client_lock:  # one client per process: a replaced client closes its pool
                if self._redis_client is None or self._pid != os.getpid():
                    self._redis_client = self._new_client(False)
                    self._async_client = None
                    self._pid = os.getpid()
                client = self._redis_client
        return client

    @property
    def aredis(self) -> Any:
        if self._async_client is None or self._pid != os.getpid():
            self.redis  # noqa: B018 - resets the per-process state after a fork
            self._async_client = self._new_client(True)
        return self._async_client

    def _shard(self, rkey: bytes) -> int:
        """The shard (cluster master) that holds ``rkey``; -1 when the node has not mapped it."""
        if not self._cluster:
            return 0
        from redis.crc import key_slot

        path = _shards_path(self.options.name, self.cache.namespace)
        try:
            stamp = os.stat(path).st_mtime_ns
        except FileNotFoundError:
            return -1
        if stamp != self._slot_map_stamp:
            try:
                with open(path) as f:
                    self._slot_map = [tuple(r) for r in json.load(f)["slots"]]  # type: ignore[misc]
            except (OSError, ValueError, KeyError):
                return -1
            self._slot_map_stamp = stamp
        slot = key_slot(rkey)
        for first, last, shard in self._slot_map:
            if first <= slot <= last:
                return shard
        return -1

    def _rkey(self, key: Key) -> bytes:
        return self.prefix + _to_bytes(key, "key")

    # -- sync API ----------------------------------------------------------------------------

    def get(self, key: Key) -> Optional[bytes]:  # type: ignore[no-redef]  # replaced per instance by the C call
        """The value of ``prefix + key`` (bytes), or None when Redis has no such key."""
        return self.cache._near_get(key)  # type: ignore[no-any-return]

    def _miss(self, key: Key, untrusted: bool) -> Optional[bytes]:
        rkey = self._rkey(key)
        if untrusted:
            return self.redis.get(rkey)  # type: ignore[no-any-return]
        waited = False
        shard = self._shard(rkey)
        while True:
            if shard < 0:
                token = -1
            else:
                token = self.cache._near_lease(rkey, shard, self.options.lease_ms) if self._leases else 1
            if token > 0:
                return self._fetch_fill(rkey, token, shard)
            if token < 0 or waited:
                self.cache._near_count(_STAT_READ_THROUGH, 1)
                return self.redis.get(rkey)  # type: ignore[no-any-return]
            # another process is filling this key: wait about one round trip for it
            self.cache._near_count(_STAT_WAITS, 1)
            end = time.monotonic() + self._wait_budget()
            while time.monotonic() < end:
                time.sleep(0.0001)
                got = self.cache._near_peek(rkey)
                if got.__class__ is bytes:
                    return got  # type: ignore[no-any-return]
                if got is False:
                    break
            waited = True

    def _wait_budget(self) -> float:
        return min(max(3 * self._rtt, 0.002), self.options.lease_ms / 1000.0)

    def _ttl(self, pttl: int) -> int:
        if pttl == -1:
            return self.options.max_ttl
        return min(pttl // 1000, self.options.max_ttl)  # whole seconds, never past Redis's expiry

    def _pipeline(self) -> Any:
        # a cluster pipeline is not a transaction: GET and PTTL then go separately, which is
        # fine: a write between them also invalidates the key and drops the lease
        return self.redis.pipeline() if self._cluster else self.redis.pipeline(transaction=True)

    def _fetch_fill(self, rkey: bytes, token: int, shard: int = 0) -> Optional[bytes]:
        t0 = time.monotonic()
        try:
            pipe = self._pipeline()
            pipe.get(rkey)
            pipe.pttl(rkey)
            value, pttl = pipe.execute()
        except BaseException:
            if self._leases:
                self.cache._near_release(rkey, token)
            raise
        self._rtt = 0.8 * self._rtt + 0.2 * (time.monotonic() - t0)
        return self._fill(rkey, token, value, pttl, shard)

    def _fill(self, rkey: bytes, token: int, value: Optional[bytes], pttl: int, shard: int = 0) -> Optional[bytes]:
        ttl = self._ttl(pttl) if value is not None else 0
        if ttl <= 0 or not value:
            if self._leases:
                self.cache._near_release(rkey, token)
            return value
        if self._before_fill is not None:
            self._before_fill(rkey)
        if not self._leases:  # the naive fill the leases exist to prevent (tests only)
            token = self.cache._near_lease(rkey, shard, self.options.lease_ms)
            if token <= 0:
                return value
        self.cache._near_fill(rkey, token, value, ttl, shard)
        return value

    def get_many(self, keys: Iterable[Key]) -> Dict[Key, bytes]:
        """``{key: value}`` for the keys Redis has (misses fetched in one pipeline)."""
        out: Dict[Key, bytes] = {}
        leased: List[Tuple[Key, bytes, int, int]] = []
        through: List[Tuple[Key, bytes]] = []
        for key in keys:
            rkey = self._rkey(key)
            got = self.cache._near_peek(rkey)
            if got.__class__ is bytes:
                out[key] = got
                continue
            shard = self._shard(rkey) if got is None else -1
            token = self.cache._near_lease(rkey, shard, self.options.lease_ms) if shard >= 0 else -1
            if token > 0:
                leased.append((key, rkey, token, shard))
            else:
                through.append((key, rkey))
        if leased:
            pipe = self._pipeline()
            for _, rkey, _, _ in leased:
                pipe.get(rkey)
                pipe.pttl(rkey)
            try:
                replies = pipe.execute()
            except BaseException:
                for _, rkey, token, _ in leased:
                    self.cache._near_release(rkey, token)
                raise
            for i, (key, rkey, token, shard) in enumerate(leased):
                value = self._fill(rkey, token, replies[2 * i], replies[2 * i + 1], shard)
                if value is not None:
                    out[key] = value
        if through:
            mget = self.redis.mget_nonatomic if self._cluster else self.redis.mget
            for (key, _), value in zip(through, mget([r for _, r in through])):
                if value is not None:
                    out[key] = value
        return out

    def set(self, key: Key, value: Value, ex: Optional[int] = None) -> bool:
        """``SET prefix+key value [EX ex]`` in Redis, then delete the key from the host's L1."""
        rkey = self._rkey(key)
        ok = self.redis.set(rkey, _to_bytes(value, "value"), ex=ex)
        self.cache._near_invalidate([rkey])
        return bool(ok)

    def delete(self, key: Key) -> bool:
        """``DEL`` in Redis, then delete the key (and any lease) from the host's L1."""
        rkey = self._rkey(key)
        n = self.redis.delete(rkey)
        self.cache._near_invalidate([rkey])
        return bool(n)

    def get_or_set(self, key: Key, loader: Callable[[], Value], ex: Optional[int] = None) -> bytes:
        """The value; on a miss, ``loader()`` is called and its result stored (and returned)."""
        value = self.get(key)
        if value is not None:
            return value
        fresh = _to_bytes(loader(), "value")
        self.set(key, fresh, ex=ex)
        return fresh

    def incr(self, key: Key, n: int = 1) -> int:
        """``INCRBY`` in Redis (counters are never cached in the L1)."""
        rkey = self._rkey(key)
        value = self.redis.incrby(rkey, n)
        self.cache._near_invalidate([rkey])
        return int(value)

    def decr(self, key: Key, n: int = 1) -> int:
        rkey = self._rkey(key)
        value = self.redis.decrby(rkey, n)
        self.cache._near_invalidate([rkey])
        return int(value)

    # -- asyncio API -------------------------------------------------------------------------

    async def aget(self, key: Key) -> Optional[bytes]:
        rkey = self._rkey(key)
        got = self.cache._near_peek(rkey)
        if got.__class__ is bytes:
            return got  # type: ignore[no-any-return]
        if got is False:
            return await self.aredis.get(rkey)  # type: ignore[no-any-return]
        waited = False
        shard = self._shard(rkey)
        while True:
            token = self.cache._near_lease(rkey, shard, self.options.lease_ms) if shard >= 0 else -1
            if token > 0:
                t0 = time.monotonic()
                try:
                    pipe = self.aredis.pipeline() if self._cluster else self.aredis.pipeline(transaction=True)
                    async with pipe:
                        pipe.get(rkey)
                        pipe.pttl(rkey)
                        value, pttl = await pipe.execute()
                except BaseException:
                    self.cache._near_release(rkey, token)
                    raise
                self._rtt = 0.8 * self._rtt + 0.2 * (time.monotonic() - t0)
                return self._fill(rkey, token, value, pttl, shard)
            if token < 0 or waited:
                self.cache._near_count(_STAT_READ_THROUGH, 1)
                return await self.aredis.get(rkey)  # type: ignore[no-any-return]
            self.cache._near_count(_STAT_WAITS, 1)
            end = time.monotonic() + self._wait_budget()
            while time.monotonic() < end:
                await asyncio.sleep(0.0002)
                got = self.cache._near_peek(rkey)
                if got.__class__ is bytes:
                    return got  # type: ignore[no-any-return]
                if got is False:
                    break
            waited = True

    async def aget_many(self, keys: Iterable[Key]) -> Dict[Key, bytes]:
        out: Dict[Key, bytes] = {}
        for key in keys:
            value = await self.aget(key)
            if value is not None:
                out[key] = value
        return out

    async def aset(self, key: Key, value: Value, ex: Optional[int] = None) -> bool:
        rkey = self._rkey(key)
        ok = await self.aredis.set(rkey, _to_bytes(value, "value"), ex=ex)
        self.cache._near_invalidate([rkey])
        return bool(ok)

    async def adelete(self, key: Key) -> bool:
        rkey = self._rkey(key)
        n = await self.aredis.delete(rkey)
        self.cache._near_invalidate([rkey])
        return bool(n)

    async def aget_or_set(self, key: Key, loader: Callable[[], Union[Value, Awaitable[Value]]],
                          ex: Optional[int] = None) -> bytes:
        value = await self.aget(key)
        if value is not None:
            return value
        got = loader()
        if asyncio.iscoroutine(got) or isinstance(got, asyncio.Future):
            got = await got
        fresh = _to_bytes(got, "value")  # type: ignore[arg-type]
        await self.aset(key, fresh, ex=ex)
        return fresh

    def sync(self, timeout: float = 1.0) -> bool:
        """Wait until every invalidation of a write acknowledged before this call has been
        applied to the L1 (the listener's next PONG proves it). False on timeout."""
        since_ms = time.monotonic() * 1000.0 + self.options.lease_ms
        end = time.monotonic() + timeout
        while True:
            if self._cluster:
                self._shard(b"")  # reload the node's slot map if it changed
                shards = sorted({r[2] for r in self._slot_map})
            else:
                shards = [0]
            deadlines = self.cache._near_state()["deadline_ms"]
            if shards and all(deadlines[i] >= since_ms for i in shards):
                return True
            if time.monotonic() >= end:
                return False
            time.sleep(0.001)

    # -- introspection -----------------------------------------------------------------------

    def stats(self) -> Dict[str, Any]:
        return near_stats(self.cache)

    def __repr__(self) -> str:
        return f"<uwcache.Near {self.cache.name!r} -> {self.options.endpoint.describe()} prefix={self.options.prefix!r}>"


# -- process-wide registry ----------------------------------------------------------------

_handles: Dict[Tuple[str, str], Near] = {}
_client_lock = threading.Lock()

# A Redis that stops answering must fail a request, not hang its worker for good (redis-py
# waits forever by default). Seconds; a query string in the URL (`?socket_timeout=0.5`,
# `?socket_connect_timeout=...`) takes precedence for a single Redis.
REDIS_TIMEOUTS: Dict[str, Any] = {"socket_connect_timeout": 2.0, "socket_timeout": 5.0}


def _new_lock_in_child() -> None:
    # a thread of the parent may have held the lock at fork(): the child, which lacks that
    # thread, would wait for it for good on its first client
    global _client_lock
    _client_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_lock_in_child)


def near(name: str, *, namespace: Optional[str] = None) -> Near:
    """The near tier of cache ``name`` in this process (any process of the host).

    The node that runs the listener (``Caching().add_near(...)``, ``caching.start()``)
    publishes the tier's settings next to the cache; this attaches the cache and returns
    one :class:`Near` per process.
    """
    ns = resolve_namespace(namespace)
    handle = _handles.get((ns, name))
    if handle is not None and not handle.cache.closed:
        return handle
    options = read_sidecar(name, ns)
    from .cache import attach

    handle = Near(attach(name, namespace=ns), options)
    _handles[(ns, name)] = handle
    return handle


class NearListeners:
    """The node's listeners, one per near tier (standalone Redis: one master each)."""

    def __init__(self) -> None:
        from .net.near_listener import NearListener

        self._cls = NearListener
        self.listeners: List[Any] = []

    @classmethod
    def start(cls, node: Any) -> "NearListeners":
        self = cls()
        for options in getattr(node.caching, "near_options", {}).values():
            cache = node.cache(options.name)
            write_sidecar(options, node.namespace)
            if options.cluster:
                from .net.near_listener import ClusterSupervisor

                supervisor = ClusterSupervisor(cache, options, _shards_path(options.name, node.namespace))
                supervisor.start()
                self.listeners.append(supervisor)
                continue
            listener = self._cls(cache, options.endpoint, options.prefix_bytes, options.lease_ms, resp=options.resp,
                                 max_ttl=options.max_ttl)
            listener.start()
            self.listeners.append(listener)
        return self

    def close(self) -> None:
        for listener in self.listeners:
            listener.close()
        self.listeners = []


def near_for_backend(cache_name: str, namespace: Optional[str], redis_url: Optional[str], owner: str) -> Near:
    """The near tier a framework backend uses; its LOCATION must be the node's Redis URL."""
    handle = near(cache_name, namespace=namespace)
    if redis_url and redis_url != handle.options.redis:
        raise ConfigError(f"{owner}: LOCATION {redis_url!r} is not the Redis of near cache {cache_name!r} "
                          f"({handle.options.redis!r}, set by the node's add_near)")
    return handle


def unprefixed(handle: Near, full_key: str, owner: str) -> str:
    """A framework's full Redis key minus the near tier's prefix (which it must start with)."""
    prefix = handle.options.prefix
    if not full_key.startswith(prefix):
        raise ConfigError(f"{owner}: the Redis key {full_key!r} does not start with the near cache's prefix "
                          f"{prefix!r}: give add_near a prefix that the backend's keys start with (or '')")
    return full_key[len(prefix):]


def delete_prefixed(handle: Near, pattern_prefix: str) -> int:
    """Delete every Redis key starting with ``pattern_prefix`` (SCAN + DEL in batches)."""
    escaped = "".join("\\" + c if c in "*?[]\\" else c for c in pattern_prefix)
    client = handle.redis
    removed = 0
    batch: List[bytes] = []
    for key in client.scan_iter(match=escaped + "*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            removed += client.delete(*batch)
            handle.cache._near_invalidate(batch)
            batch = []
    if batch:
        removed += client.delete(*batch)
        handle.cache._near_invalidate(batch)
    return removed


class _CallableModule(type(os)):  # type: ignore[misc]
    """``uwcache.near`` is both this module and the function: importing the module makes it
    the package's attribute, so the module answers calls too."""

    def __call__(self, name: str, *, namespace: Optional[str] = None) -> Near:
        return near(name, namespace=namespace)


import sys as _sys  # noqa: E402

_sys.modules[__name__].__class__ = _CallableModule
