"""Opening, creating and attaching caches by name; the public :class:`Cache` type.

Every cache lives in one mapped region: a file in shared memory (``/dev/shm``) or, with
``store=``, the store file itself. Processes find a cache by namespace and name:

    <shm dir>/uwcache-<namespace>/<name>.cache      (a symlink to the store file when persistent)

Who is attached is tracked with ``flock``: every process that maps a region holds a shared
lock on it (forked children inherit it). Opening is serialised by an ``fcntl`` lock on the
region's first byte. An opener that can take the flock exclusively knows nobody else is
attached: the region is *cold* (its users exited, or the machine restarted), so it gets a
fresh mutex and its derived structures are rebuilt from the items before use.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import mmap
import os
import stat
import time
import urllib.parse
from typing import Any, Dict, List, Optional, Tuple

from . import _engine
from .config import CacheOptions
from .config import _resolve_namespace as resolve_namespace
from .errors import CacheError, CorruptStore, RegionMismatch, UnknownCache
from .net.counters import net_stats

log = logging.getLogger("uwcache")

_REGION_SUFFIX = ".cache"


def shm_dir() -> str:
    """Where memory-only regions live: ``$UWCACHE_SHM_DIR``, else ``/dev/shm``."""
    configured = os.environ.get("UWCACHE_SHM_DIR")
    if configured:
        return configured
    return "/dev/shm" if os.path.isdir("/dev/shm") else "/tmp"


def namespace_dir(namespace: Optional[str] = None, *, create: bool = False) -> str:
    """The directory holding one namespace's regions (created owner-only on demand)."""
    path = os.path.join(shm_dir(), "uwcache-" + resolve_namespace(namespace))
    if create:
        try:
            os.makedirs(path, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise CacheError(f"cannot create the namespace directory {path}: {exc.strerror}") from exc
    return path


def _file_name(cache_name: str) -> str:
    # names may hold '/', spaces or unicode: keep the file name portable and reversible
    return urllib.parse.quote(cache_name, safe="") + _REGION_SUFFIX


def region_path(cache_name: str, namespace: Optional[str] = None) -> str:
    return os.path.join(namespace_dir(namespace), _file_name(cache_name))


def list_caches(namespace: Optional[str] = None) -> List[str]:
    """Names of the caches that have a region in the namespace (live or left over)."""
    try:
        entries = sorted(os.listdir(namespace_dir(namespace)))
    except FileNotFoundError:
        return []
    return [urllib.parse.unquote(e[: -len(_REGION_SUFFIX)]) for e in entries if e.endswith(_REGION_SUFFIX)]


EngineParams = Tuple[int, int, int, int, int, int, int, int, int]


# CacheOptions booleans and the engine's option bits, both ways
_OPTION_BITS = (
    ("mode_bitmap", _engine.OPT_BITMAP),
    ("full_purge_lru", _engine.OPT_LRU),
    ("lazy_expire", _engine.OPT_LAZY),
    ("no_expire", _engine.OPT_NO_EXPIRE),
    ("use_lastmod", _engine.OPT_LASTMOD),
    ("clear_on_full", _engine.OPT_CLEAR_ON_FULL),
    ("full_silent", _engine.OPT_FULL_SILENT),
)


def engine_params(options: CacheOptions) -> EngineParams:
    """The engine's geometry tuple for a cache's options."""
    flags = 0
    for field, bit in _OPTION_BITS:
        if getattr(options, field):
            flags |= bit
    algo = _engine.HASH_MURMUR2 if options.hash_algo == "murmur2" else _engine.HASH_DJB33X
    return (
        options.max_items,
        options.key_size,
        options.block_size,
        options.blocks,
        options.hash_size,
        algo,
        flags,
        options.math_initial,
        options.sweep_on_full,
    )


def _options_from_header(name: str, header: Dict[str, Any]) -> CacheOptions:
    flags = header["options"]
    switches: Dict[str, Any] = {field: bool(flags & bit) for field, bit in _OPTION_BITS}
    return CacheOptions(
        name=name,
        max_items=header["max_items"],
        key_size=header["key_size"],
        block_size=header["block_size"],
        block_count=header["blocks"] if flags & _engine.OPT_BITMAP else None,
        hash_size=header["hash_size"],
        hash_algo="murmur2" if header["hash_algo"] == _engine.HASH_MURMUR2 else "djb33x",
        math_initial=header["math_initial"],
        sweep_on_full=header["sweep_on_full"],
        **switches,
    )


def _log_full(name: str, evicted: bool) -> None:
    # uWSGI's wording, so log scrapers keep working; rate-limited by the engine binding
    if evicted:
        log.warning('LRU item will be purged from cache "%s"', name)
    else:
        log.warning('*** DANGER cache "%s" is FULL !!! ***', name)


class Cache(_engine.CacheBase):
    """One shared-memory cache mapped into this process.

    Get one from :meth:`uwcache.Node.cache` or :func:`uwcache.open_cache`. Keys and values
    are bytes (``str`` is encoded as UTF-8); values come back as ``bytes``. ``get``, ``set``,
    ``add``, ``delete``, ``in``, ``incr``/``decr``/``mul``/``div`` and ``get_int`` are C
    from the call down.

    Batch methods (C too): ``get_many(keys) -> dict`` (missing and expired keys absent; the
    dict is keyed by the objects given, bytes for other buffers), ``set_many(mapping,
    expires=0) -> list`` of the keys not stored because the cache is full, ``delete_many(keys)
    -> int`` present keys deleted, ``touch(key, expires) -> bool`` (new expiry, 0 = never;
    False when absent). A bad key or value anywhere in a batch raises the error ``get``/``set``
    would raise (``KeyTooLong``, ``EmptyValue``, ``ValueTooLarge``, ``TypeError``) before
    anything is read or written.
    """

    __slots__ = ("options", "namespace", "path", "_fd", "_map")

    options: CacheOptions
    namespace: str
    path: str
    _fd: int
    _map: mmap.mmap

    def stats(self) -> Dict[str, Any]:
        """Counters in uWSGI's stats-server shape, then uwcache's extras."""
        raw = self._stats_raw()
        opts = self.options
        blocks = self.blocks
        stats: Dict[str, Any] = {
            "name": self.name,
            "hash": self.hash_algo,
            "hashsize": self.hash_size,
            "keysize": self.key_size,
            "max_items": self.max_items,
            "blocks": blocks,
            "blocksize": self.block_size,
            "items": raw["items"],
            "hits": raw["hits"],
            "miss": raw["miss"],
            "full": raw["full"],
            "last_modified_at": raw["last_modified_at"],
        }
        used = raw["blocks_used"]
        free_blocks = (blocks if opts.mode_bitmap else self.capacity) - used
        largest = raw["largest_free_run"]
        stats.update(
            namespace=self.namespace,
            mode="bitmap" if opts.mode_bitmap else "single-block",
            purge_lru=opts.full_purge_lru,
            capacity=self.capacity,
            memory=self.region_size,
            bytes_used=raw["bytes_used"],
            blocks_used=used,
            fragmentation=(round(1.0 - largest / free_blocks, 4) if opts.mode_bitmap and free_blocks > 0 else 0.0),
            expired_pending=raw["expired_pending"],
            evictions=raw["evictions"],
            expired_freed=raw["expired_freed"],
            writes=raw["writes"],
            repairs=raw["repairs"],
            sweeper_pid=raw["sweeper_pid"],
            path=self.path,
        )
        stats.update(net_stats(self))
        return stats

    def close(self) -> None:
        """Detach this process from the cache (the data stays for the other processes)."""
        if self.closed:
            return
        super().close()
        try:
            self._map.close()
        finally:
            os.close(self._fd)

    def flush(self) -> None:
        """Write a persistent cache's dirty pages to its store file now (``msync``)."""
        if not self.closed:
            self._map.flush()

    def check(self) -> Optional[str]:
        """Verify every internal structure; ``None`` when sound, else what is wrong."""
        return self._check()

    def __enter__(self) -> "Cache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self)}/{self.capacity} items"
        return f"<uwcache.Cache {self.name!r} namespace={self.namespace!r} {state}>"


_CHAIN_WARNING = 4  # items per bucket past which lookups walk long chains


def _warn_long_chains(options: CacheOptions) -> None:
    """A full cache with many more items than buckets walks long chains on every lookup."""
    per_bucket = options.capacity / options.hash_size
    if per_bucket > _CHAIN_WARNING:
        log.warning(
            "cache %r: %d items over %d hash buckets (hash_size) average %.0f items per chain when full; "
            "lookups slow down with the chain: set hash_size to about max_items",
            options.name, options.capacity, options.hash_size, per_bucket,
        )


def _create_file(path: str) -> int:
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    try:
        return os.open(path, flags, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # the namespace entry of a store: a symlink we made
            return os.open(path, flags & ~getattr(os, "O_NOFOLLOW", 0), 0o600)
        raise CacheError(f"cannot open the region {path}: {exc.strerror}") from exc


def _link_store(link: str, store_path: str) -> None:
    """Make the namespace entry of a persistent cache point at its store file."""
    target = os.path.abspath(store_path)
    try:
        if os.path.islink(link) and os.readlink(link) == target:
            return
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(target, link)
    except OSError as exc:
        log.warning("cannot link %s to the store %s: %s", link, target, exc.strerror)


def open_region(options: CacheOptions, namespace: Optional[str] = None, *, attach_only: bool = False) -> Cache:
    """Create or attach the region of one cache and return a :class:`Cache` on it."""
    ns = resolve_namespace(namespace)
    ns_dir = namespace_dir(ns, create=True)
    entry = os.path.join(ns_dir, _file_name(options.name))
    persistent = options.store is not None
    path = os.path.abspath(options.store) if options.store is not None else entry
    if attach_only and not os.path.exists(path):
        raise UnknownCache(f"no cache named {options.name!r} in namespace {ns!r} (looked for {path})")
    params = engine_params(options)
    size = _engine.region_size(params)
    _warn_long_chains(options)
    fd = _create_file(path)
    try:
        cache = _open_locked(fd, path, options, params, size, persistent, attach_only)
    except BaseException:
        os.close(fd)
        raise
    if persistent:
        _link_store(entry, path)
    cache.namespace = ns
    cache.path = path
    return cache


def _open_locked(fd: int, path: str, options: CacheOptions, params: EngineParams, size: int,
                 persistent: bool, attach_only: bool) -> Cache:
    fcntl.lockf(fd, fcntl.LOCK_EX, 1, 0)  # one opener at a time
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CorruptStore(f"{path} is not a regular file")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            cold = True
        except BlockingIOError:
            cold = False
        mode = _choose_mode(fd, path, options, params, size, st.st_size, cold, persistent, attach_only)
        if mode == "create":
            os.ftruncate(fd, 0)
            os.ftruncate(fd, size)
            if persistent:
                log.info("creating a new cache store file: %s", path)
        region = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        cache = Cache(region, options.name, params, mode)
        cache.options = options
        cache._fd = fd
        cache._map = region
        cache._on_full = _log_full
        if mode == "recover":
            dropped = cache._recovered_dropped
            if persistent:
                log.info("recovered cache from backing store file: %s (%d items)", path, len(cache))
            if dropped:
                log.warning("cache %r: dropped %d damaged items while recovering %s", options.name, dropped, path)
        fcntl.flock(fd, fcntl.LOCK_SH)  # we are attached from now on
        return cache
    finally:
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, 0)


def _choose_mode(fd: int, path: str, options: CacheOptions, params: EngineParams, size: int, file_size: int,
                 cold: bool, persistent: bool, attach_only: bool) -> str:
    """'create', 'attach' or 'recover' for this region, or raise why it cannot be used."""
    if file_size == 0:
        if attach_only:
            raise UnknownCache(f"cache {options.name!r} has an empty region at {path}")
        return "create"
    problem = _region_problem(fd, path, options, params, size, file_size)
    if problem is None:
        return "recover" if cold else "attach"
    if not cold:
        raise RegionMismatch(
            f"cache {options.name!r} is in use by other processes with another configuration: {problem}. "
            "Stop them or use the same options."
        )
    if persistent and not options.store_delete:
        raise RegionMismatch(
            f"the store file {path} does not match cache {options.name!r}: {problem}. "
            "Remove it, fix the options, or set store_delete=True to recreate it."
        )
    if persistent:
        log.warning("Removing invalid cache store file: %s (%s)", path, problem)
    else:
        log.info("recreating the memory region of cache %r: %s", options.name, problem)
    return "create"


def _region_problem(fd: int, path: str, options: CacheOptions, params: EngineParams, size: int,
                    file_size: int) -> Optional[str]:
    head_len = min(file_size, _engine.HEADER_SIZE)
    try:
        header = _engine.peek_header(os.pread(fd, head_len, 0), file_size)
    except CorruptStore as exc:
        hint = ""
        if file_size % 8 == 0 and os.pread(fd, 8, 0) != b"UWCACHE\0":
            hint = " (a uWSGI store file has no header: import it with uwcache.import_uwsgi_store)"
        return f"{exc}{hint}"
    if not header["ready"]:
        return "its initialisation never finished"
    expected = dict(zip(("max_items", "key_size", "block_size", "blocks", "hash_size", "hash_algo"), params[:6]))
    labels = {"blocks": "block_count", "hash_algo": "hash_algo"}
    for key, want in expected.items():
        if header[key] != want:
            return f"it was created with {labels.get(key, key)}={header[key]}, the configuration says {want}"
    shared = _engine.OPT_BITMAP | _engine.OPT_LRU | _engine.OPT_LAZY | _engine.OPT_CLEAR_ON_FULL
    if (header["options"] ^ params[6]) & shared:
        return "it was created with other mode_bitmap/full_purge_lru/lazy_expire/clear_on_full settings"
    if header["math_initial"] != params[7] or header["sweep_on_full"] != params[8]:
        return "it was created with another math_initial or sweep_on_full"
    if file_size != size:
        return f"its size is {file_size} bytes, {size} expected"
    return None


def open_cache(name: str, *, namespace: Optional[str] = None, max_items: int = 1000, **options: Any) -> Cache:
    """Create or attach one cache without a :class:`~uwcache.Node`.

    Takes the options of :meth:`uwcache.Caching.add_cache`. The sweeper is not run here:
    expired items are still never returned, they just keep their slot until a node sweeps
    or a write needs the room.
    """
    return open_region(CacheOptions(name=name, max_items=max_items, **options), namespace)


def attach(name: str, *, namespace: Optional[str] = None) -> Cache:
    """Attach an existing cache by name, taking its geometry from the region itself."""
    path = region_path(name, namespace)
    try:
        with open(path, "rb") as f:
            header = _engine.peek_header(f.read(_engine.HEADER_SIZE), os.fstat(f.fileno()).st_size)
    except FileNotFoundError:
        raise UnknownCache(
            f"no cache named {name!r} in namespace {resolve_namespace(namespace)!r} (looked for {path})"
        ) from None
    options = _options_from_header(name, header)
    if os.path.islink(path):
        import dataclasses

        options = dataclasses.replace(options, store=os.path.realpath(path))
    return open_region(options, namespace, attach_only=True)


def destroy(name: str, *, namespace: Optional[str] = None) -> bool:
    """Remove a memory-only cache's region (processes still attached keep their mapping)."""
    path = region_path(name, namespace)
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


def now() -> int:
    return int(time.time())


def import_uwsgi_store(cache: Cache, path: str, *, max_items: int, key_size: int = 2048, block_size: int = 65536,
                       block_count: Optional[int] = None, mode_bitmap: bool = False) -> Tuple[int, int]:
    """Copy the items of a real uWSGI store file (``store=`` of uWSGI's ``cache2``) into ``cache``.

    uWSGI's store is a raw image without a header, so its geometry must be given: the
    ``items``/``keysize``/``blocksize``/``blocks`` of the uWSGI configuration that wrote it.
    Expired items are skipped; items that do not fit ``cache`` are counted as dropped.
    Returns ``(loaded, dropped)``.
    """
    blocks = block_count if block_count is not None else max_items
    expected = (88 + key_size) * max_items + block_size * blocks
    with open(path, "rb") as f:
        image = f.read()
    if len(image) != expected:
        raise CorruptStore(
            f"{path} is {len(image)} bytes, but a uWSGI store with max_items={max_items}, key_size={key_size}, "
            f"block_size={block_size}, block_count={blocks} is {expected} bytes: pass the geometry it was written with"
        )
    return cache._import_image(image, max_items, key_size, block_size, blocks, mode_bitmap)
