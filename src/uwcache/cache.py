"""Opening, creating and attaching caches by name; the public :class:`Cache` type.

Every cache lives in one mapped region: a file in shared memory (``/dev/shm``) or, with
``store=``, the store file itself. Processes find a cache by namespace and name:

    <shm dir>/uwcache-<namespace>/<name>.cache                the name entry: a small regular file
    <shm dir>/uwcache-<namespace>/<name>@<digest>.region      a memory-only region, one per geometry

The name entry says ``region <file>`` (the current generation) or ``store <absolute path>``.
A process whose options give another geometry opens (or creates) another generation instead
of failing; an old generation is unlinked by the first open or close that finds it unused.
The namespace directory must be ours with mode 0700, and every file is opened relative to it
with ``O_NOFOLLOW`` and checked with ``fstat`` (:mod:`uwcache._fs`). A region's whole size is
reserved when it is created (``posix_fallocate``), or :class:`SharedMemoryFull` is raised.

Who is attached is tracked with ``flock``: every process that maps a region holds a shared
lock on it (forked children inherit it). Opening is serialised by an ``fcntl`` lock on the
region's first byte. An opener that can take the flock exclusively knows nobody else is
attached: the region is *cold* (its users exited, or the machine restarted), so it gets a
fresh mutex and its derived structures are rebuilt from the items before use.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import mmap
import os
import stat
import struct
import time
import urllib.parse
from typing import Any, Dict, List, Optional, Tuple, Union

from . import _engine, _fs
from .options import CacheOptions, _human_size, cache_options, resolve_namespace
from .counters import near_stats, net_stats
from .errors import CacheError, CorruptStore, RegionMismatch, SharedMemoryFull, UnknownCache

class _Log:
    """The "uwcache" logger, looked up on each use: a process that only attaches to a cache
    does not import logging (about a third of the attach path's import time)."""

    def __getattr__(self, name: str) -> Any:
        import logging

        return getattr(logging.getLogger("uwcache"), name)


log: Any = _Log()

_REGION_SUFFIX = ".cache"
_GENERATION_SUFFIX = ".region"


def shm_dir() -> str:
    """Where memory-only regions live: ``$UWCACHE_SHM_DIR``, else ``/dev/shm``."""
    configured = os.environ.get("UWCACHE_SHM_DIR")
    if configured:
        return configured
    return "/dev/shm" if os.path.isdir("/dev/shm") else "/tmp"


def namespace_dir(namespace: Optional[str] = None, *, create: bool = False) -> str:
    """The directory holding one namespace's regions (created owner-only on demand).

    With ``create`` the directory is also checked: it must be ours, mode 0700, not a link
    (:mod:`uwcache._fs`); otherwise :class:`CacheError` names the path and its owner.
    """
    ns = resolve_namespace(namespace)
    path = os.path.join(shm_dir(), "uwcache-" + ns)
    if create:
        fd = _namespace_fd(ns, create=True)
        assert fd is not None  # created or refused
        os.close(fd)
    return path


def _namespace_fd(ns: str, *, create: bool) -> Optional[int]:
    """A descriptor on the namespace directory, checked; None when it does not exist."""
    base = shm_dir()
    if create and not os.path.lexists(base):
        try:
            os.makedirs(base, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise CacheError(f"cannot create the shared-memory directory {base}: {exc.strerror}") from exc
    elif not create and not os.path.isdir(base):
        return None
    base_fd = _fs.open_dir(base, "the shared-memory directory")
    try:
        return _fs.private_dir(base_fd, base, "uwcache-" + ns, create=create)
    finally:
        os.close(base_fd)


def _file_name(cache_name: str) -> str:
    # names may hold '/', spaces or unicode: keep the file name portable and reversible
    return _quoted(cache_name) + _REGION_SUFFIX


def _quoted(cache_name: str) -> str:
    return urllib.parse.quote(cache_name, safe="")  # never holds '@' (quoted): it separates generations


def region_path(cache_name: str, namespace: Optional[str] = None) -> str:
    """The name entry of a cache: a small file that says where its current region is."""
    return os.path.join(namespace_dir(namespace), _file_name(cache_name))


def list_caches(namespace: Optional[str] = None) -> List[str]:
    """Names of the caches that have a region in the namespace (live or left over)."""
    fd = _namespace_fd(resolve_namespace(namespace), create=False)
    if fd is None:
        return []
    try:
        entries = sorted(os.listdir(fd))
    finally:
        os.close(fd)
    return [urllib.parse.unquote(e[: -len(_REGION_SUFFIX)]) for e in entries if e.endswith(_REGION_SUFFIX)]


# -- the name entry -------------------------------------------------------------------------
#
# ``<name>.cache`` is a small regular file, never a link: ``region <file>`` names the current
# generation of a memory-only cache (``<name>@<digest>.region`` in the same directory),
# ``store <absolute path>`` the store file of a persistent one. It is replaced atomically.

Entry = Tuple[str, str]


def _read_entry(dir_fd: int, ns_path: str, name: str) -> Optional[Entry]:
    path = os.path.join(ns_path, _file_name(name))
    try:
        fd = os.open(_file_name(name), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # an older uwcache's link to a store: never followed, replaced
            return None
        raise CacheError(f"cannot read the cache entry {path}: {exc.strerror}") from exc
    try:
        _fs.check_private_file(fd, path, "the cache entry")
        data = os.read(fd, 8192)
    finally:
        os.close(fd)
    try:
        kind, _, value = data.decode("utf-8").rstrip("\n").partition(" ")
    except UnicodeDecodeError:
        return None
    if kind == "region" and _is_generation_of(value, name):
        return (kind, value)
    if kind == "store" and os.path.isabs(value):
        return (kind, value)
    return None  # a leftover of an older uwcache (a region or a link): replaced on the next open


def _write_entry(dir_fd: int, name: str, entry: Entry) -> None:
    tmp = f".{_quoted(name)}.{os.getpid()}.tmp"
    try:
        os.unlink(tmp, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
    try:
        os.write(fd, f"{entry[0]} {entry[1]}\n".encode("utf-8"))
    finally:
        os.close(fd)
    os.rename(tmp, _file_name(name), src_dir_fd=dir_fd, dst_dir_fd=dir_fd)  # replaces, never follows


def _generation_file(name: str, params: "EngineParams") -> str:
    """``<name>@<digest>.region``: one file per geometry, so a deploy that changes it gets a new one."""
    shared = _engine.OPT_BITMAP | _engine.OPT_LRU | _engine.OPT_LAZY | _engine.OPT_CLEAR_ON_FULL
    identity = (_engine.FORMAT_VERSION,) + tuple(params[:6]) + (params[6] & shared,) + tuple(params[7:9])
    digest = hashlib.sha256(repr(identity).encode()).hexdigest()[:12]
    return f"{_quoted(name)}@{digest}{_GENERATION_SUFFIX}"


def _is_generation_of(file_name: str, name: str) -> bool:
    prefix = _quoted(name) + "@"
    return (file_name.startswith(prefix) and file_name.endswith(_GENERATION_SUFFIX) and "/" not in file_name
            and len(file_name) > len(prefix) + len(_GENERATION_SUFFIX))


_OFD_SETLK = getattr(fcntl, "F_OFD_SETLK", None)
_OFD_SETLKW = getattr(fcntl, "F_OFD_SETLKW", None)


def _ofd_lock(fd: int, kind: int, command: int) -> None:
    # struct flock: l_type, l_whence, l_start, l_len, l_pid (0 for open-file-description locks)
    fcntl.fcntl(fd, command, struct.pack("hhqqi4x", kind, os.SEEK_SET, 0, 1, 0))


_use_ofd = _OFD_SETLK is not None and _OFD_SETLKW is not None


def _opener_lock(fd: int, *, blocking: bool) -> None:
    """The opener lock on byte 0. An open-file-description lock where Linux has them: unlike a
    process-wide ``lockf`` it also keeps two threads of one process apart, and closing another
    descriptor of the file does not drop it. Both kinds exclude each other across processes."""
    global _use_ofd
    if _use_ofd:
        try:
            _ofd_lock(fd, fcntl.F_WRLCK, _OFD_SETLKW if blocking else _OFD_SETLK)  # type: ignore[arg-type]
            return
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # EAGAIN/EACCES: held by another opener
                raise
            _use_ofd = False  # a kernel without OFD locks
    fcntl.lockf(fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)


def _opener_unlock(fd: int) -> None:
    if _use_ofd:
        _ofd_lock(fd, fcntl.F_UNLCK, _OFD_SETLK)  # type: ignore[arg-type]
    else:
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, 0)


def _probe_unused(dir_fd: int, file_name: str) -> Optional[int]:
    """An fd holding the opener lock and the exclusive flock of an unused region, else None."""
    try:
        fd = os.open(file_name, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        if os.fstat(fd).st_uid != os.geteuid():
            raise OSError
        _opener_lock(fd, blocking=False)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _existing_namespace(namespace: Optional[str]) -> Tuple[str, str, Optional[int]]:
    """(the namespace, its directory, a descriptor of it or None where it does not exist)."""
    ns = resolve_namespace(namespace)
    return ns, os.path.join(shm_dir(), "uwcache-" + ns), _namespace_fd(ns, create=False)


def generations(name: str, namespace: Optional[str] = None) -> List[Dict[str, Any]]:
    """The memory-only regions of one cache: ``{"path", "current", "in_use"}`` each, current first.

    A deploy that changes a cache's options makes a new generation; an old one is freed by the
    first open or close after its last user has gone.
    """
    _ns, ns_path, fd = _existing_namespace(namespace)
    if fd is None:
        return []
    try:
        entry = _read_entry(fd, ns_path, name)
        current = entry[1] if entry is not None and entry[0] == "region" else None
        found = []
        for file_name in sorted(os.listdir(fd)):
            if not _is_generation_of(file_name, name):
                continue
            probe = _probe_unused(fd, file_name)
            if probe is not None:
                os.close(probe)
            found.append({"path": os.path.join(ns_path, file_name), "current": file_name == current,
                          "in_use": probe is None})
    finally:
        os.close(fd)
    found.sort(key=lambda g: not g["current"])
    return found


REGION_MAGIC = b"UWCACHE\0"  # the first 8 bytes of every region; the format version follows


def _header_version(head: bytes) -> Optional[int]:
    """The format version in a region header's first 12 bytes, or None without the magic."""
    if len(head) < 12 or head[:8] != REGION_MAGIC:
        return None
    version: int = struct.unpack_from("=I", head, 8)[0]
    return version


def region_format(path: str) -> Optional[int]:
    """The format version in the header of the uwcache region at ``path``, or None when the
    file is not one (or cannot be read). Tells a region of another uwcache release, which
    :func:`attach` refuses, from a damaged one."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        head = os.pread(fd, 12, 0)
    except OSError:
        return None
    finally:
        os.close(fd)
    return _header_version(head)


def current_path(name: str, namespace: Optional[str] = None) -> Optional[str]:
    """The path of the region (or store file) that the name entry of ``name`` points at."""
    _ns, ns_path, fd = _existing_namespace(namespace)
    if fd is None:
        return None
    try:
        entry = _read_entry(fd, ns_path, name)
    finally:
        os.close(fd)
    if entry is None:
        return None
    return entry[1] if entry[0] == "store" else os.path.join(ns_path, entry[1])


def collect_generations(name: str, namespace: Optional[str] = None, *, keep: Optional[str] = None) -> List[str]:
    """Unlink the memory-only regions of ``name`` that nobody uses and that are not current.

    Returns the paths freed. Safe against concurrent openers: a region is removed only while
    this process holds its opener lock and its exclusive flock.
    """
    _ns, ns_path, fd = _existing_namespace(namespace)
    if fd is None:
        return []
    freed = []
    try:
        entry = _read_entry(fd, ns_path, name)
        current = entry[1] if entry is not None and entry[0] == "region" else None
        for file_name in os.listdir(fd):
            if file_name in (current, keep) or not _is_generation_of(file_name, name):
                continue
            probe = _probe_unused(fd, file_name)
            if probe is None:
                continue
            try:
                if os.fstat(probe).st_nlink:
                    os.unlink(file_name, dir_fd=fd)
                    freed.append(os.path.join(ns_path, file_name))
                    log.info("cache %r: freed an old generation nobody uses any more: %s", name, freed[-1])
            finally:
                os.close(probe)
    finally:
        os.close(fd)
    return freed


def _collect_quietly(name: str, namespace: str, keep: Optional[str] = None) -> None:
    try:
        collect_generations(name, namespace, keep=keep)
    except Exception as exc:  # housekeeping: never fails the caller
        log.debug("cache %r: collecting old generations failed: %s", name, exc)


def _peek(data: bytes, file_size: int, path: str) -> Dict[str, Any]:
    """The engine's header reader; a name that is not UTF-8 is corruption too."""
    try:
        return _engine.peek_header(data, file_size)
    except UnicodeDecodeError:
        raise CorruptStore(f"{path}: the cache name in the region header is not valid UTF-8 (damaged header)") from None


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


_HASH_IDS = {"djb33x": _engine.HASH_DJB33X, "murmur2": _engine.HASH_MURMUR2, "wyhash": _engine.HASH_WYHASH}
_HASH_NAMES = {v: k for k, v in _HASH_IDS.items()}


def engine_params(options: CacheOptions) -> EngineParams:
    """The engine's geometry tuple for a cache's options."""
    flags = 0
    for field, bit in _OPTION_BITS:
        if getattr(options, field):
            flags |= bit
    algo = _HASH_IDS.get(options.hash_algo, _engine.HASH_DJB33X)
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
        hash_algo=_HASH_NAMES.get(header["hash_algo"], "djb33x"),
        math_initial=header["math_initial"],
        sweep_on_full=header["sweep_on_full"],
        **switches,
    )


def full_warning(name: str, evicted: bool) -> str:
    """uWSGI's "cache full" wording, so log scrapers keep working (the engine's writes and
    ``uwcache run``'s watch of other processes' writes both log it)."""
    if evicted:
        return f'LRU item will be purged from cache "{name}"'
    return f'*** DANGER cache "{name}" is FULL !!! ***'


def _log_full(name: str, evicted: bool) -> None:
    # rate-limited by the engine binding
    log.warning("%s", full_warning(name, evicted))


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
    _map: Union[mmap.mmap, _HugeRegion]

    def __init__(self, region: Union[mmap.mmap, _HugeRegion], options: CacheOptions, params: EngineParams,
                 mode: int, *, fd: int, namespace: str, path: str) -> None:
        """Map ``region`` (opened on ``fd``) in ``mode``: ``_engine.MODE_CREATE``, ``MODE_ATTACH`` or
        ``MODE_RECOVER``. Use :func:`open_cache`, :func:`attach` or a :class:`~uwcache.Node`."""
        buffer = region.view if isinstance(region, _HugeRegion) else region
        super().__init__(buffer, options.name, params, mode, on_full=_log_full)
        self.options = options
        self.namespace = namespace
        self.path = path
        self._fd = fd
        self._map = region

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
            sizing=opts.sizing,
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
        if os.path.exists(region_path(self.name, self.namespace) + ".near.json"):  # near cache (issue 11)
            stats["near"] = near_stats(self)
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
        if self.options.store is None:  # we may have been the last user of an old generation
            _collect_quietly(self.name, self.namespace)

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


def _space_problem(name: str, size: int, directory: str, free: int, *, store: bool = False) -> Optional[str]:
    """Why a region of ``size`` bytes cannot be reserved with ``free`` bytes free, or None."""
    if size <= free:
        return None
    if store:
        room = "free the disk, move the store file (store=)"
    else:
        room = ("give it more room (Docker: docker run --shm-size=..., Compose: shm_size), point "
                "UWCACHE_SHM_DIR at a bigger tmpfs")
    return (f"cache {name!r} needs {_human_size(size)} ({size} bytes) of {'disk' if store else 'memory'}, but "
            f"{directory} has only {_human_size(free)} ({free} bytes) free: {room}, or make the cache smaller "
            "(max_items, block_size, block_count)")


def _reserve(fd: int, path: str, name: str, size: int, reclaimed: int, store: bool) -> None:
    """Give the (empty or unusable) file ``size`` bytes of committed storage, or raise SharedMemoryFull.

    posix_fallocate allocates every page now, so no later write into the mapping can fault
    with SIGBUS because the tmpfs or disk is full.
    """
    directory = os.path.dirname(path)
    vfs = os.fstatvfs(fd)
    free = vfs.f_bavail * vfs.f_frsize + reclaimed
    problem = _space_problem(name, size, directory, free, store=store)
    if problem is not None:
        raise SharedMemoryFull(problem)
    os.ftruncate(fd, 0)
    if not store and size >= HUGE_MIN_REGION:
        _seed_huge_pages(fd, size)
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        os.ftruncate(fd, 0)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.ENOMEM):
            vfs = os.fstatvfs(fd)
            raise SharedMemoryFull(_space_problem(name, size, directory, min(free, vfs.f_bavail * vfs.f_frsize),
                                                  store=store)
                                   or f"cache {name!r}: reserving {size} bytes in {directory} failed: "
                                   f"{exc.strerror}") from None
        raise CacheError(f"cannot reserve {size} bytes for cache {name!r} in {path}: {exc.strerror}") from exc


def open_region(options: CacheOptions, namespace: Optional[str] = None, *, attach_only: bool = False) -> Cache:
    """Create or attach the region of one cache and return a :class:`Cache` on it.

    A memory-only cache's region is ``<name>@<geometry digest>.region`` in the namespace
    directory: processes with other options get another generation instead of an error. The
    name entry ``<name>.cache`` records the current generation, or the store file.
    """
    ns = resolve_namespace(namespace)
    params = engine_params(options)
    size = _engine.region_size(params)
    _warn_long_chains(options)
    dir_fd = _namespace_fd(ns, create=True)
    assert dir_fd is not None
    ns_path = os.path.join(shm_dir(), "uwcache-" + ns)
    try:
        entry = _read_entry(dir_fd, ns_path, options.name)
        if options.store is not None:
            cache, mode = _open_store(options, params, size, ns, entry, attach_only)
            wanted: Entry = ("store", cache.path)
        else:
            cache, mode = _open_generation(dir_fd, ns_path, options, params, size, ns, attach_only)
            wanted = ("region", os.path.basename(cache.path))
        try:
            if entry != wanted and (options.store is not None or not _entry_alive(dir_fd, entry)
                                    or (not attach_only and _newer(dir_fd, mode, entry))):
                _write_entry(dir_fd, options.name, wanted)
        except OSError as exc:
            log.warning("cache %r: cannot update its entry in %s: %s", options.name, ns_path, exc.strerror)
    finally:
        os.close(dir_fd)
    if options.store is None:
        _collect_quietly(options.name, ns, keep=os.path.basename(cache.path))
    return cache


def _newer(dir_fd: int, mode: int, entry: Optional[Entry]) -> bool:
    """Whether the region we opened becomes the current generation.

    A new generation always does. A cold one reopened does only if nobody uses the current
    one: an old configuration starting again next to the new one must not take the name back.
    """
    if mode == _engine.MODE_CREATE:
        return True
    if mode != _engine.MODE_RECOVER or entry is None or entry[0] != "region":
        return False
    probe = _probe_unused(dir_fd, entry[1])
    if probe is None:
        return False
    os.close(probe)
    return True


def _entry_alive(dir_fd: int, entry: Optional[Entry]) -> bool:
    if entry is None:
        return False
    try:
        if entry[0] == "store":
            return os.path.exists(entry[1])
        os.stat(entry[1], dir_fd=dir_fd, follow_symlinks=False)
        return True
    except OSError:
        return False


def _open_generation(dir_fd: int, ns_path: str, options: CacheOptions, params: EngineParams, size: int, ns: str,
                     attach_only: bool) -> Tuple[Cache, int]:
    file_name = _generation_file(options.name, params)
    path = os.path.join(ns_path, file_name)
    for _ in range(8):
        opened = _open_file(dir_fd, file_name, path, "the region", options, params, size, ns, False, attach_only, True)
        if opened is not None:
            return opened
        # freed as unused between our open and our lock: make it again
    raise CacheError(f"cannot open the region {path}: it keeps being removed while opened")


def _open_store(options: CacheOptions, params: EngineParams, size: int, ns: str, entry: Optional[Entry],
                attach_only: bool) -> Tuple[Cache, int]:
    path = os.path.abspath(str(options.store))
    if entry is not None and entry[0] == "store" and entry[1] != path and os.path.exists(entry[1]):
        raise RegionMismatch(
            f"cache {options.name!r} in namespace {ns!r} already uses the store file {entry[1]}, but this "
            f"configuration says {path} (a relative store path resolved from another working directory?). "
            "Use the same absolute path; to move the store, remove the old cache's entry first "
            "(uwcache.cache.destroy)")
    parent, base = os.path.split(path)
    parent_fd = _fs.open_dir(parent, "the directory of the store file")
    try:
        opened = _open_file(parent_fd, base, path, "the store file", options, params, size, ns, True, attach_only,
                            False)
    finally:
        os.close(parent_fd)
    if opened is None:
        raise CacheError(f"the store file {path} was removed while it was being opened")
    return opened


def _open_file(dir_fd: int, name: str, path: str, what: str, options: CacheOptions, params: EngineParams,
               size: int, ns: str, persistent: bool, attach_only: bool, ours: bool) -> Optional[Tuple[Cache, int]]:
    """Open file ``name`` of ``dir_fd`` (created unless ``attach_only``), then the region in it
    (see _open_locked); None if the file was unlinked between the open and the lock."""
    flags = os.O_RDWR | (0 if attach_only else os.O_CREAT)
    try:
        fd = _fs.open_private(dir_fd, name, flags, path=path, what=what)
    except FileNotFoundError:
        raise UnknownCache(f"no cache named {options.name!r} in namespace {ns!r} (looked for {path})") from None
    except CacheError:
        raise
    except OSError as exc:
        raise CacheError(f"cannot open {what} {path}: {exc.strerror}") from exc

    def remove() -> None:
        os.unlink(name, dir_fd=dir_fd)

    try:
        opened = _open_locked(fd, path, ns, options, params, size, persistent, attach_only, remove, ours)
    except BaseException:
        os.close(fd)
        raise
    if opened is None:
        os.close(fd)
    return opened


def _open_locked(fd: int, path: str, ns: str, options: CacheOptions, params: EngineParams, size: int,
                 persistent: bool, attach_only: bool, remove: Any, ours: bool) -> Optional[Tuple[Cache, int]]:
    """Open the region under the opener lock; None if the file was unlinked before we got it."""
    _opener_lock(fd, blocking=True)  # one opener at a time
    try:
        st = os.fstat(fd)
        if st.st_nlink == 0:
            return None
        if not stat.S_ISREG(st.st_mode):
            raise CorruptStore(f"{path} is not a regular file")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            cold = True
        except BlockingIOError:
            cold = False
        mode = _choose_mode(fd, path, options, params, size, st.st_size, cold, persistent, attach_only)
        if mode == _engine.MODE_CREATE:
            try:
                _reserve(fd, path, options.name, size, st.st_blocks * 512 if st.st_size else 0, persistent)
            except CacheError:
                if ours or st.st_size == 0:  # leave nothing half-made behind
                    try:
                        remove()
                    except OSError:
                        pass
                raise
            if persistent:
                log.info("creating a new cache store file: %s", path)
        # the creator (or recoverer) collapses the region onto 2 MiB pages and marks the file;
        # an attacher of a marked file collapses too, which only maps the pages it finds
        # already huge 2 MiB at a time (its page faults would map them 4 KiB at a time)
        attaching = mode == _engine.MODE_ATTACH
        region = _map_region(fd, size, persistent, collapse=not attaching or _marked_huge(fd))
        if not attaching and isinstance(region, _HugeRegion) and region.collapsed:
            _mark_huge(fd)
        try:
            cache = Cache(region, options, params, mode, fd=fd, namespace=ns, path=path)
        except BaseException:
            try:
                region.close()
            except BufferError:
                pass  # still exported by the half-made Cache: unmapped when it is collected
            raise
        if mode == _engine.MODE_RECOVER:
            dropped = cache._recovered_dropped
            if persistent:
                log.info("recovered cache from backing store file: %s (%d items)", path, len(cache))
            if dropped:
                log.warning("cache %r: dropped %d damaged items while recovering %s", options.name, dropped, path)
        fcntl.flock(fd, fcntl.LOCK_SH)  # we are attached from now on
        return cache, mode
    finally:
        _opener_unlock(fd)


# Memory-only regions from this size up are mapped on 2 MiB pages where the kernel agrees
# (issue 16): a get in a large cache touches a table entry, a record and a value block at
# random, and with 4 KiB pages each of them is also a TLB miss.
HUGE_PAGE = 2 << 20
HUGE_MIN_REGION = 8 << 20


class _HugeRegion:
    """A region file mapped at a 2 MiB-aligned address inside an anonymous reservation and
    collapsed onto 2 MiB pages (``_engine.map_huge``); ``view`` is the region's buffer."""

    __slots__ = ("_reservation", "_offset", "_size", "view", "collapsed")

    def __init__(self, fd: int, size: int, collapse: bool = True) -> None:
        self._reservation = mmap.mmap(-1, size + HUGE_PAGE, flags=mmap.MAP_PRIVATE)
        try:
            self._offset, self.collapsed = _engine.map_huge(self._reservation, fd, size, collapse)
        except BaseException:
            self._reservation.close()
            raise
        self._size = size
        self.view = memoryview(self._reservation)[self._offset:self._offset + size]

    def close(self) -> None:
        self.view.release()
        self._reservation.close()

    def flush(self) -> None:
        self._reservation.flush(self._offset, self._size)


_HUGE_XATTR = "user.uwcache.huge"


def _mark_huge(fd: int) -> None:
    """Record on the region file that its pages are huge (tmpfs keeps user xattrs, Linux 6.6+)."""
    try:
        os.setxattr(fd, _HUGE_XATTR, b"1")
    except (OSError, AttributeError):
        pass  # unmarked: attachers simply map it 4 KiB at a time


def _marked_huge(fd: int) -> bool:
    """Whether the creator left the file on 2 MiB pages: then collapsing costs an attacher
    only the page-table work, where a file on 4 KiB pages would be copied (about 1 ms/MiB)."""
    try:
        return os.getxattr(fd, _HUGE_XATTR) == b"1"
    except (OSError, AttributeError):
        return False


def _seed_huge_pages(fd: int, size: int) -> None:
    """Put a new, empty region file on 2 MiB pages before its memory is reserved.

    The kernel collapses a range whose 4 KiB pages all exist by copying them into a new huge
    page (about 1 s per GiB); a range holding a single page is collapsed as cheaply as it is
    zeroed. So one byte is written per 2 MiB, the file collapsed, and only then reserved
    (posix_fallocate keeps the huge pages and fills whatever the kernel left on small ones).
    Any refusal leaves the file on 4 KiB pages, as before."""
    try:
        os.ftruncate(fd, size)
        for offset in range(0, size - HUGE_PAGE + 1, HUGE_PAGE):
            os.pwrite(fd, b"\0", offset)
        _HugeRegion(fd, size, True).close()
    except OSError as exc:
        log.debug("seeding %d bytes on 2 MiB pages failed (%s): 4 KiB pages", size, exc)


def _map_region(fd: int, size: int, persistent: bool, *, collapse: bool = True) -> Union[mmap.mmap, _HugeRegion]:
    """Map a region file: on 2 MiB pages when it is a large memory-only region, else plainly."""
    if not persistent and size >= HUGE_MIN_REGION:
        try:
            return _HugeRegion(fd, size, collapse)
        except OSError as exc:
            log.debug("mapping %d bytes 2 MiB-aligned failed (%s): using a plain mapping", size, exc)
    return mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)


class _Damaged(str):
    """A region problem that is damage (an unreadable header), not another configuration."""


def _choose_mode(fd: int, path: str, options: CacheOptions, params: EngineParams, size: int, file_size: int,
                 cold: bool, persistent: bool, attach_only: bool) -> int:
    """_engine.MODE_CREATE, MODE_ATTACH or MODE_RECOVER for this region, or raise why it cannot be used."""
    if file_size == 0:
        if attach_only:
            raise UnknownCache(f"cache {options.name!r} has an empty region at {path}")
        return _engine.MODE_CREATE
    header = os.pread(fd, min(file_size, _engine.HEADER_SIZE), 0)
    upgrade_to = _engine.cold_upgrade_to(header) if cold else 0
    if upgrade_to:  # judged as the upgraded header; the file changes only if it will be used
        upgrade_from = _header_version(header) or 0  # cold_upgrade_to checked the magic
        header = header[:8] + struct.pack("=I", upgrade_to) + header[12:]
    problem = _region_problem(fd, header, options, params, size, file_size)
    if problem is None:
        if upgrade_to:
            _upgrade_cold_format(fd, path, upgrade_from, upgrade_to)
        return _engine.MODE_RECOVER if cold else _engine.MODE_ATTACH
    error = CorruptStore if isinstance(problem, _Damaged) else RegionMismatch
    if not cold:
        raise error(
            f"cache {options.name!r} is in use by other processes with another configuration: {problem}. "
            "Stop them or use the same options."
        )
    if persistent and not options.store_delete:
        raise error(
            f"the store file {path} does not match cache {options.name!r}: {problem}. "
            "Remove it, fix the options, or set store_delete=True to recreate it."
        )
    if persistent:
        log.warning("Removing invalid cache store file: %s (%s)", path, problem)
    else:
        log.info("recreating the memory region of cache %r: %s", options.name, problem)
    return _engine.MODE_CREATE


def _upgrade_cold_format(fd: int, path: str, old: int, to: int) -> None:
    """Rewrite the format version of an unused region of an older, compatible format (a store
    kept across an upgrade of uwcache), so that its items are recovered instead of refused.
    Called only once the region, judged as upgraded, is known to fit the configuration."""
    os.pwrite(fd, struct.pack("=I", to), 8)  # the version field, after the 8-byte magic
    log.info("%s: format %d upgraded to %d in place (nobody had it open)", path, old, to)


def _region_problem(fd: int, header: bytes, options: CacheOptions, params: EngineParams, size: int,
                    file_size: int) -> Optional[str]:
    """Why the existing region (its header given) cannot be used with params, or None."""
    try:
        return _engine.region_problem(header, file_size, params)
    except CorruptStore as exc:
        hint = ""
        if file_size % 8 == 0 and os.pread(fd, 8, 0) != REGION_MAGIC:
            hint = " (a uWSGI store file has no header: import it with uwcache.import_uwsgi_store)"
        return _Damaged(f"{exc}{hint}")


def open_cache(name: str, *, namespace: Optional[str] = None, **options: Any) -> Cache:
    """Create or attach one cache without a :class:`~uwcache.Node`.

    Takes the options of :meth:`uwcache.Caching.add_cache`: with no geometry option the cache
    gets :data:`uwcache.config.DEFAULT_GEOMETRY`; ``memory=``/``max_value=`` size it by budget.
    The sweeper is not run here:
    expired items are still never returned, they just keep their slot until a node sweeps
    or a write needs the room.
    """
    return open_region(cache_options(name, options), namespace)


def attach(name: str, *, namespace: Optional[str] = None, generation: Optional[str] = None) -> Cache:
    """Attach an existing cache by name, taking its geometry from the region itself.

    A memory-only cache is attached at its current (newest) generation, or at ``generation``
    (a path from :func:`generations`).
    """
    ns = resolve_namespace(namespace)
    ns_path = os.path.join(shm_dir(), "uwcache-" + ns)
    missing = UnknownCache(f"no cache named {name!r} in namespace {ns!r} (looked for {os.path.join(ns_path, _file_name(name))})")
    dir_fd = _namespace_fd(ns, create=False)
    if dir_fd is None:
        raise missing
    try:
        entry = _read_entry(dir_fd, ns_path, name)
        if generation is not None:
            if not _is_generation_of(os.path.basename(generation), name):
                raise UnknownCache(f"{generation} is not a generation of cache {name!r}")
            entry = ("region", os.path.basename(generation))
        if entry is None:
            raise missing
        try:
            if entry[0] == "store":
                fd = _fs.open_private_path(entry[1], os.O_RDONLY, what="the store file")
                path = entry[1]
            else:
                path = os.path.join(ns_path, entry[1])
                fd = _fs.open_private(dir_fd, entry[1], os.O_RDONLY, path=path, what="the region")
        except FileNotFoundError:
            raise missing from None
    finally:
        os.close(dir_fd)
    try:
        header = _peek(os.pread(fd, _engine.HEADER_SIZE, 0), os.fstat(fd).st_size, path)
    finally:
        os.close(fd)
    options = _options_from_header(name, header)
    if entry[0] == "store":
        import dataclasses

        options = dataclasses.replace(options, store=entry[1])
    return open_region(options, ns, attach_only=True)


def destroy(name: str, *, namespace: Optional[str] = None) -> bool:
    """Remove a cache's entry and its memory-only regions (processes still attached keep their
    mapping); a persistent cache's store file is kept."""
    ns = resolve_namespace(namespace)
    dir_fd = _namespace_fd(ns, create=False)
    if dir_fd is None:
        return False
    removed = False
    try:
        for file_name in os.listdir(dir_fd):
            if file_name == _file_name(name) or _is_generation_of(file_name, name):
                try:
                    os.unlink(file_name, dir_fd=dir_fd)
                    removed = True
                except FileNotFoundError:
                    pass
    finally:
        os.close(dir_fd)
    return removed


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
    expected = _engine.image_size(max_items, key_size, block_size, blocks)
    with open(path, "rb") as f:
        image = f.read()
    if len(image) != expected:
        raise CorruptStore(
            f"{path} is {len(image)} bytes, but a uWSGI store with max_items={max_items}, key_size={key_size}, "
            f"block_size={block_size}, block_count={blocks} is {expected} bytes: pass the geometry it was written with"
        )
    return cache._import_image(image, max_items, key_size, block_size, blocks, mode_bitmap)
