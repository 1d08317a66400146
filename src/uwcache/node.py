"""What uWSGI's master does for its caches, for one process: create or attach every
configured cache, preload items and files, sweep expired items and msync stores.

Any number of processes may start a Node on the same configuration; they share the
caches. The sweep of each cache is done by one of them at a time (a lease in the cache's
header, renewed every round; if its holder dies another node takes over after the lease
runs out, at most three sweep intervals later).

The network duties (``uwcache.net``, docs/network.md): a Node loads ``sync_from`` dumps
before the preloads, replicates the writes made through its caches to their
``udp_clients``, receives for their ``udp_servers`` (one process per machine does; the
others stand by and take over when it exits) and, with ``server=``, serves remote access
and dumps to uWSGI and uwcache peers.
"""

from __future__ import annotations

import encodings.idna  # noqa: F401  (fork safety: see below)
import logging
import os
import struct
import threading
import time
import zlib
from typing import Any, Dict, List, Optional, Union

from . import _engine
from .cache import REGION_MAGIC, Cache, _collect_quietly, full_warning, namespace_dir, open_region, region_path
from .config import Caching
from .errors import CacheError, ConfigError, CorruptStore, UnknownCache
from .options import _human_size

# A node's threads never import a module for the first time: everything they use is imported
# here or by the modules start() imports, in the thread that starts the node. A process that
# forks while one of its threads is importing a module (gunicorn forks its workers right after
# on_starting, while the near listeners connect to Redis) leaves the child that module's
# import lock held by a thread the child does not have: the child's first import of it waits
# forever. The first getaddrinfo() of a host name given as str imports the idna codec
# (encodings.idna, stringprep, unicodedata); a gunicorn worker hung that way on its first
# Redis connection.

log = logging.getLogger("uwcache")


_LEASE_INTERVALS = 3


def gzip_like_uwsgi(data: bytes) -> bytes:
    """A gzip member byte-identical to uWSGI's ``load-file-in-cache-gzip`` output:
    mtime 0, OS 3, raw deflate at the default level with memLevel 9, sync-flushed and then
    closed by an empty final block (checked against real uWSGI)."""
    deflate = zlib.compressobj(-1, zlib.DEFLATED, -15, 9)
    body = deflate.compress(data) + deflate.flush(zlib.Z_SYNC_FLUSH) + deflate.flush()
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03"
    return header + body + struct.pack("<II", zlib.crc32(data) & 0xFFFFFFFF, len(data) & 0xFFFFFFFF)


class Node:
    """The running caches of one :class:`~uwcache.Caching` in this process.

    ``node = caching.start()``; ``node.cache(name)`` gives a :class:`~uwcache.Cache`;
    ``node.close()`` (or ``with caching.start() as node:``) stops the background work,
    flushes stores and detaches. The caches themselves stay in shared memory for the
    other processes.

    ``server="host:port"`` (or a UNIX socket path) serves the caches to uWSGI and uwcache
    peers (remote access and dumps; port 0 picks a free port, see :attr:`server_address`);
    a bare ``":port"`` means 127.0.0.1.  ``server=True`` listens on the UNIX socket
    ``<namespace dir>/server.sock``, which only the owning user can reach.
    ``server_secret`` makes clients prove a shared secret before any command (None: the
    Caching's ``secret`` if it has one; False: none, uWSGI's open protocol).
    ``max_connections`` caps the server's open connections (the least recently active
    idle ones are dropped first; default: half the file descriptor limit, 64 to 4096).  ``replay_window``: signed replication packets whose
    timestamp is further than this many seconds from our clock are refused.
    ``net_timeout`` bounds every network wait: sync dumps, server requests.
    ``stats="host:port"`` serves the namespace's stats over HTTP, JSON at ``/`` and
    Prometheus text at ``/metrics`` (a bare port means 127.0.0.1; see :attr:`stats_url`).
    """

    def __init__(self, caching: Caching, *, sweeper: bool = True, server: Union[str, bool, None] = None,
                 stats: Optional[str] = None, register_compat: bool = True,
                 net_timeout: float = 4.0, server_secret: Union[str, bool, None] = None,
                 max_connections: Optional[int] = None, replay_window: int = 30) -> None:
        caching.validate()
        if not net_timeout > 0:
            raise ConfigError(f"net_timeout must be > 0 seconds, got {net_timeout!r}")
        self.caching = caching
        self.net_timeout = float(net_timeout)
        if isinstance(replay_window, bool) or not isinstance(replay_window, int) or not 1 <= replay_window <= 86400:
            raise ConfigError(f"replay_window must be an int of seconds in 1..86400, got {replay_window!r}")
        self.replay_window = replay_window
        self._sender: Any = None
        self._receiver: Any = None
        self._server: Any = None
        self._stats_server: Any = None
        self._stats_reader: Any = None
        self._near: Any = None  # near cache listeners (issue 11)
        self.namespace = caching.namespace
        self._caches: Dict[str, Cache] = {}
        self._stop = threading.Event()
        self._threads: List[threading.Thread] = []
        self._registered: List[str] = []
        self._pid = os.getpid()
        self._closed = False
        self._reported_broken: set = set()
        try:
            for options in caching.caches:
                self._caches[options.name] = open_region(options, self.namespace)
                log.info("%s", self._describe(self._caches[options.name]))
            self._sync_from()
            self._preload()
            if register_compat:
                for name, cache in self._caches.items():
                    if _engine._compat_register(name, cache):
                        self._registered.append(name)
            self._start_network(server, server_secret, max_connections)
            if getattr(caching, "near_options", None):
                from .near import NearListeners

                self._near = NearListeners.start(self)
            if stats is not None:
                self._start_stats(stats)
            if sweeper and not caching.no_expire and any(not o.no_expire for o in caching.caches):
                self._spawn(self._sweeper_loop, "uwcache-sweeper")
            if any(o.store and o.store_sync_interval for o in caching.caches):
                self._spawn(self._store_sync_loop, "uwcache-store-sync")
        except BaseException:
            self.close()
            raise

    # -- access -----------------------------------------------------------------------------

    def cache(self, name: Optional[str] = None) -> Cache:
        """The cache called ``name`` (None: the default cache, the first configured)."""
        if self._closed:
            raise CacheError("the node is closed")
        if name is None:
            name = self.caching.default_cache_name
        try:
            return self._caches[name]
        except KeyError:
            configured = ", ".join(repr(n) for n in self._caches) or "none"
            raise UnknownCache(f"no cache named {name!r} in this node (configured: {configured})") from None

    @property
    def caches(self) -> Dict[str, Cache]:
        """Every cache of the node, by name, in configuration order."""
        return dict(self._caches)

    def stats(self) -> List[Dict[str, Any]]:
        """One stats dict per cache (uWSGI's stats-server ``caches`` list, plus extras,
        including the network counters ``net_*`` shared by every process)."""
        return [cache.stats() for cache in self._caches.values()]

    @property
    def server_address(self) -> Optional[str]:
        """Where this node's cache server listens (``host:port`` with the real port, or a
        socket path); None without ``server=``."""
        return self._server.address if self._server is not None else None

    @property
    def udp_receiving(self) -> List[str]:
        """Caches whose ``udp_servers`` this process is bound to (the others' receivers
        run in another process of the same caches, or this one is on standby)."""
        return self._receiver.owned if self._receiver is not None else []

    def sweep(self) -> Dict[str, int]:
        """Free expired items of every cache now; returns how many per cache."""
        return {name: cache._sweep(force=True)[0] for name, cache in self._caches.items()}

    # -- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the sweeper, flush stores, detach every cache. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._stats_server is not None:
            self._stats_server.close()
        if self._stats_reader is not None:
            self._stats_reader.close()
        self._stop_network()
        self._stop.set()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=10)
        forked = os.getpid() != self._pid
        for name in self._registered:
            _engine._compat_unregister(name, self._caches.get(name))
        for cache in self._caches.values():
            if cache.closed:
                continue
            try:
                if not forked:
                    cache._sweeper_release(self._pid)
                if cache.options.store:
                    cache.flush()
            except CorruptStore:  # truncated underneath us: nothing left to release or flush
                pass
            cache.close()

    @property
    def stats_url(self) -> Optional[str]:
        """Where ``stats=`` serves the JSON stats (``/``) and Prometheus text (``/metrics``)."""
        return self._stats_server.url if self._stats_server is not None else None

    def _start_stats(self, address: str, label: Optional[str] = None) -> None:
        """Serve the namespace's stats on `address` (``Node(stats=...)``, ``uwcache run
        --stats``); `label` names the option in errors (default ``stats='...'``)."""
        from .net.stats import StatsServer, parse_address
        from .stats import NamespaceStats

        label = label or f"stats={address!r}"
        try:
            host, port = parse_address(address)
        except ConfigError as exc:
            raise ConfigError(f"{label}: {exc}") from None
        reader = NamespaceStats(self.namespace, owned=self._caches)
        try:
            self._stats_server = StatsServer(address, reader.collect)
        except OSError as exc:
            reader.close()
            raise ConfigError(f"{label}: cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
        self._stats_reader = reader
        self._stats_server.start()
        url = self._stats_server.url
        log.info("stats: %s (JSON) and %smetrics (Prometheus)", url, url)

    def __enter__(self) -> "Node":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ", ".join(self._caches)
        return f"<uwcache.Node namespace={self.namespace!r} caches=[{state}]>"

    # -- start-up ---------------------------------------------------------------------------

    @staticmethod
    def _describe(cache: Cache) -> str:
        o = cache.options
        items_area = (_engine.ITEM_HEADER_SIZE + o.key_size) * o.max_items
        data_area = o.block_size * o.blocks
        bitmap = (o.blocks + 7) // 8 if o.mode_bitmap else 0
        return (f'*** Cache "{o.name}" initialized: {cache.region_size // (1024 * 1024)}MB '
                f"(key: {_engine.ITEM_HEADER_SIZE + o.key_size} bytes, keys: {items_area} bytes, data: {data_area} bytes, "
                f"bitmap: {bitmap} bytes) reserved at {cache.path} ***")

    def _sync_from(self) -> None:
        caches = [c for c in self._caches.values() if c.options.sync_from]
        if caches:
            from .net.sync import sync_cache

            for cache in caches:
                try:
                    sync_cache(cache, cache.options.sync_from, timeout=self.net_timeout)
                except Exception as exc:  # a hostile or broken peer must not stop the node
                    log.error('[cache-sync] cache "%s": sync_from failed: %r; starting without it', cache.name, exc)

    def _start_network(self, server: Union[str, bool, None], server_secret: Union[str, bool, None],
                       max_connections: Optional[int]) -> None:
        senders = [c for c in self._caches.values() if c.options.udp_clients]
        receivers = [c for c in self._caches.values() if c.options.udp_servers]
        if senders:
            from .net.udp import Sender

            self._sender = Sender()
            for cache in senders:
                self._sender.attach(cache)
        if receivers:
            from .net.udp import UdpReceiver

            self._receiver = UdpReceiver.for_caches(
                receivers, namespace_dir(self.namespace, create=True),
                lambda c: os.path.basename(region_path(c.name, self.namespace)), self.replay_window)
            self._receiver.start()
        if server is not None and server is not False:
            from .net.server import CacheServer, default_socket_path

            if server_secret is None:
                secret = self.caching.secret
            elif server_secret is False:
                secret = None
            elif isinstance(server_secret, str) and server_secret:
                secret = server_secret
            else:
                raise ConfigError("server_secret must be a non-empty str, None (the Caching's secret) or False")
            default_path = server is True
            address = default_socket_path(self.namespace) if default_path else server
            if not isinstance(address, str):
                raise ConfigError(f"server must be 'host:port', a UNIX socket path or True, got {server!r}")
            self._server = CacheServer(address, self._caches, timeout=self.net_timeout, secret=secret,
                                       max_connections=max_connections, default_path=default_path)
            self._server.start()
        if self._sender is not None or self._receiver is not None:
            unsigned = sorted({c.name for c in senders + receivers if c.options.secret is None})
            if unsigned:
                log.warning("replication without a secret for cache(s) %s: every datagram that reaches a "
                            "udp_servers address is applied, whoever sent it (anyone who can send to it can "
                            "write and delete keys), and what is sent can be read on the way; give the "
                            "caches a secret unless they replicate with real uWSGI nodes",
                            ", ".join(repr(n) for n in unsigned))

    def _stop_network(self) -> None:
        for part in ("_near", "_server", "_receiver", "_sender"):
            obj = getattr(self, part, None)
            if obj is not None:
                try:
                    obj.close()
                except Exception as exc:  # keep closing the rest
                    log.warning("closing the network (%s) failed: %s", part.strip("_"), exc)
                setattr(self, part, None)

    def _preload(self) -> None:
        for item in self.caching.items:
            target = self.cache(item.cache_name)
            self._store_preload(target, item.key_bytes, item.value_bytes, "cache",
                                f"add_item({item.key!r})")
        for entry in self.caching.files:
            target = self.cache(entry.cache_name)
            try:
                with open(entry.path, "rb") as f:
                    data = f.read()
            except OSError as exc:
                raise ConfigError(f"add_file({entry.path!r}): unable to read the file: {exc.strerror}") from exc
            if not data:
                raise ConfigError(f"add_file({entry.path!r}): the file is empty (a cache cannot store empty values)")
            value = gzip_like_uwsgi(data) if entry.gzip else data
            self._store_preload(target, entry.path.encode(), value, "cache-gzip" if entry.gzip else "cache",
                                f"add_file({entry.path!r}{', gzip=True' if entry.gzip else ''})")

    @staticmethod
    def _store_preload(cache: Cache, key: bytes, value: bytes, tag: str, what: str) -> None:
        if len(value) > cache.max_item_size:
            raise ConfigError(
                f"{what}: the value is {len(value)} bytes, more than the {cache.max_item_size} bytes one item of "
                f"cache {cache.name!r} can hold (block_size={cache.block_size}"
                f"{', block_count=%d' % cache.blocks if cache.options.mode_bitmap else ''})"
            )
        try:
            # set semantics, like uWSGI: an item restored from a store is not overwritten
            stored = cache._add_unreplicated(key, value)
        except CacheError as exc:
            raise ConfigError(f"{what}: {exc}") from exc
        if stored:
            log.info('[%s] stored "%s" in "%s"', tag, key.decode(errors="replace"), cache.name)
        else:
            log.info('[%s] "%s" is already in "%s", kept', tag, key.decode(errors="replace"), cache.name)

    # -- background work --------------------------------------------------------------------

    def _spawn(self, target: Any, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _sweeper_loop(self) -> None:
        interval = self.caching.expire_scan_interval
        lease = interval * _LEASE_INTERVALS
        eligible = [c for c in self._caches.values() if not c.options.no_expire]
        while not self._stop.wait(interval):
            if os.getpid() != self._pid:
                return  # a forked child does not inherit this duty
            for cache in eligible:
                try:
                    if not cache._sweeper_claim(self._pid, lease):
                        continue
                    freed, keys = cache._sweep(report=self.caching.report_freed)
                except CorruptStore as exc:  # its file was truncated or wiped by another process
                    if cache.name not in self._reported_broken:
                        self._reported_broken.add(cache.name)
                        log.error("cache %r is unusable in this node: %s", cache.name, exc)
                    continue
                except CacheError as exc:  # closed underneath us during shutdown
                    log.debug("sweeper: %s", exc)
                    continue
                if freed and self.caching.report_freed:
                    for key in keys or ():
                        log.info('freed "%s" from cache "%s"', key.decode(errors="replace"), cache.name)
                    log.info('freed %d items for cache "%s"', freed, cache.name)
            for cache in self._caches.values():
                self._check_region_file(cache)
                if cache.options.store is None:  # old generations whose last user died without closing
                    _collect_quietly(cache.name, self.namespace)

    def _check_region_file(self, cache: Cache) -> None:
        """Log (once) a region file that another process truncated or wiped under us."""
        if cache.name in self._reported_broken or cache.closed:
            return
        try:
            size = os.fstat(cache._fd).st_size
            magic = os.pread(cache._fd, 8, 0)
        except OSError:
            return
        if size < cache.region_size:
            problem = f"its file {cache.path} was truncated to {size} bytes by another process"
        elif magic != REGION_MAGIC:
            problem = f"its file {cache.path} was wiped (truncated and extended again?) by another process"
        else:
            return
        self._reported_broken.add(cache.name)
        log.error("cache %r is unusable in this node: %s; its calls raise CorruptStore: restart the node",
                  cache.name, problem)

    def _store_sync_loop(self) -> None:
        stores = [c for c in self._caches.values() if c.options.store and c.options.store_sync_interval]
        tick = min(c.options.store_sync_interval for c in stores)
        last: Dict[str, float] = {c.name: time.monotonic() for c in stores}
        while not self._stop.wait(tick):
            for cache in stores:
                if time.monotonic() - last[cache.name] >= cache.options.store_sync_interval:
                    try:
                        cache.flush()
                    except (OSError, ValueError) as exc:
                        log.warning("msync of cache %r failed: %s", cache.name, exc)
                    last[cache.name] = time.monotonic()


# -- what `uwcache run` reports (kept here so the CLI has no second copy) -------------------


def describe_cache(cache: Cache, caching: Caching) -> str:
    """One line that says what a cache of this node is, for people (``uwcache run``'s start-up)."""
    o = cache.options
    if o.mode_bitmap:
        layout = (f"values up to {_human_size(o.max_item_size)} "
                  f"(bitmap: {o.blocks} blocks of {_human_size(o.block_size)})")
    else:
        layout = f"values up to {_human_size(o.block_size)} (one block each)"
    if caching.no_expire or o.no_expire:
        expiry = "not swept (no_expire): freed when a write needs the room"
    else:
        expiry = f"swept every {caching.expire_scan_interval} s"
    extras = [name for name, on in (("full_purge_lru", o.full_purge_lru), ("lazy_expire", o.lazy_expire),
                                    ("clear_on_full", o.clear_on_full), ("full_silent", o.full_silent),
                                    ("use_lastmod", o.use_lastmod)) if on]
    if o.sweep_on_full:
        extras.append(f"sweep_on_full={o.sweep_on_full}")
    if o.store:
        sync = f"msync every {o.store_sync_interval} s" if o.store_sync_interval else "flushed by the kernel"
        where = f"persistent in {o.store} ({sync})"
    else:
        where = "memory only"
    return (f'cache "{o.name}": {o.capacity} items, {layout}, keys up to {o.key_size} bytes, '
            f"{o.hash_algo} hash with {o.hash_size} buckets, {_human_size(cache.region_size)} of shared memory, "
            f"{where}; expired items {expiry}" + (f"; {', '.join(extras)}" if extras else ""))


class FullWatch:
    """Logs uWSGI's "cache full" warning when a cache's ``full`` counter grows, whoever wrote:
    workers are other processes whose logs may go nowhere. At most once per check per cache."""

    def __init__(self, caches: Dict[str, Cache]) -> None:
        self._caches = {n: c for n, c in caches.items() if not c.options.full_silent}
        # the counter alone: stats() also counts expired items by scanning every record
        self._last = {n: c._full_events() for n, c in self._caches.items()}
        self._when = time.monotonic()

    def check(self) -> None:
        now = time.monotonic()
        for name, cache in self._caches.items():
            try:
                full = cache._full_events()
            except CacheError:
                continue
            delta = full - self._last[name]
            self._last[name] = full
            if delta > 0:
                log.warning("%s (%d full event%s in the last %.0f s)", full_warning(name, cache.options.full_purge_lru),
                            delta, "s" if delta > 1 else "", max(1.0, now - self._when))
        self._when = now
