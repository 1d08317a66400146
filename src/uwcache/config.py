"""Configuration of uwcache: the caches, the global sweeper options and the startup preloads.

The public surface mirrors uwsgiconf's ``Caching`` (``set_basic_params``, ``add_item``,
``add_file``, ``add_cache``) so existing uwsgiconf code ports by changing an import, and it
reads and writes uWSGI's own options (``--cache2`` values and ini files) so a uWSGI
deployment can move to uwcache, or back, without retyping its cache setup.

Where uWSGI accepts a value silently and then misbehaves (``bitmap=0`` enables bitmap mode, a
bare ``bitmap`` does nothing, ``64k`` means 64, ``hash=rr`` makes lookups miss) this module
raises :class:`~uwcache.errors.ConfigError` with a message that says what uWSGI would have
done and what to write instead. Nothing here touches shared memory or files other than the
ini file it is asked to read; the node does the rest at start.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import re
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, Dict, Iterable, Iterator, List, Optional, Tuple, Union

from . import _engine
from .address import parse_address
from .errors import ConfigError, UnknownCache

if TYPE_CHECKING:  # pragma: no cover - only for type checkers; node.py is written elsewhere
    from .node import Node

__all__ = [
    "CacheOptions",
    "PreloadItem",
    "PreloadFile",
    "Caching",
    "parse_cache2",
    "format_cache2",
    "NAMESPACE_ENV",
    "DEFAULT_NAMESPACE",
    "MAX_MEMORY_BYTES",
    "CACHE2_KEYS",
    "HASH_ALGOS",
    "DEFAULT_GEOMETRY",
    "cache_options",
    "parse_size",
]

NAMESPACE_ENV = "UWCACHE_NAMESPACE"
DEFAULT_NAMESPACE = "default"
MAX_MEMORY_BYTES = 2**40  # one TiB: past this a typo (blocksize in bytes vs KiB) is likelier than intent

HASH_ALGOS = ("djb33x", "murmur2", "wyhash")  # wyhash: ours, not uWSGI's (see _validate_hash)
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# The region's geometry is the engine's (one source: engine/cache.h, exported by the binding);
# these names serve the budget arithmetic below and the error messages.
ITEM_HEADER_BYTES = _engine.ITEM_HEADER_SIZE
HASH_BUCKET_BYTES = 8  # a 32-bit slot index and a 32-bit hash tag per bucket (uWSGI: 8 bytes)
FREE_STACK_ENTRY_BYTES = 4
REGION_HEADER_BYTES = _engine.HEADER_SIZE  # the engine's header: locks, stripes, per-process counters
_AREA_ALIGN = 64  # every area starts on a cache line
_REGION_ALIGN = 4096  # the region is a whole number of pages
_LIMITS = _engine.LIMITS  # (min, max) of each geometry option, as the engine checks them

_NAMESPACE_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")
_DIGITS_RE = re.compile(r"[0-9]+")
_SIGNED_DIGITS_RE = re.compile(r"[+-]?[0-9]+")

StrOrBytes = Union[str, bytes]
AddressList = Union[str, Iterable[str], None]


# --------------------------------------------------------------------------------------------
# Small checks shared by every option. Each names the option so the message is actionable.
# --------------------------------------------------------------------------------------------


def _is_int(value: object) -> bool:
    """True for real ints only: ``True`` is an int in Python but never a valid count."""
    return isinstance(value, int) and not isinstance(value, bool)


def _check_int(option: str, value: object, low: int, high: Optional[int], why: str = "") -> int:
    """Return ``value`` if it is an int within ``low..high`` (``high`` None = unbounded)."""
    accepted = f"an int in {low}..{high}" if high is not None else f"an int >= {low}"
    if not _is_int(value):
        raise ConfigError(f"{option} must be {accepted}, got {value!r} ({type(value).__name__})")
    assert isinstance(value, int)
    if value < low or (high is not None and value > high):
        raise ConfigError(f"{option} must be {accepted}, got {value}{why}")
    return value


def _check_bool(option: str, value: object) -> bool:
    """Booleans must be real bools so that ``no_expire="no"`` cannot silently mean True."""
    if not isinstance(value, bool):
        raise ConfigError(f"{option} must be True or False, got {value!r} ({type(value).__name__})")
    return value


def _check_text(option: str, value: object, max_len: int) -> str:
    """A non-empty str without NUL or line breaks (they cannot travel through argv or ini)."""
    if not isinstance(value, str):
        raise ConfigError(f"{option} must be a str, got {value!r} ({type(value).__name__})")
    if not 1 <= len(value) <= max_len:
        raise ConfigError(f"{option} must be 1..{max_len} characters long, got {len(value)}: {value!r}")
    for bad, label in (("\0", "NUL"), ("\n", "newline"), ("\r", "carriage return")):
        if bad in value:
            raise ConfigError(f"{option} must not contain a {label} character, got {value!r}")
    return value


def _check_cache_name(option: str, value: object) -> str:
    """Cache names: 1..200 characters, no NUL or line breaks."""
    return _check_text(option, value, 200)


def _check_path(option: str, value: object) -> str:
    """A path given as str or os.PathLike, returned as str (what the node opens)."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        raise ConfigError(f"{option} must be a non-empty path (str or os.PathLike), got {value!r}")
    return _check_text(option, value, 4096)


def _check_secret(option: str, value: object) -> Optional[str]:
    """A replication secret is None (unsigned) or a non-empty str."""
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{option} must be None or a non-empty str")
    return value


def _as_tuple(option: str, value: object) -> Tuple[str, ...]:
    """Lists may be given as one str, or a list/tuple of str; stored as a tuple."""
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ConfigError(f"{option} must be a str or a list of str, got {value!r}")


# --------------------------------------------------------------------------------------------
# CacheOptions
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CacheOptions:
    """Everything that defines one cache; validated on creation, so an instance is always usable.

    Field names follow uwsgiconf's ``add_cache`` arguments; the extras (``math_initial`` ...
    ``clear_on_full``) are cache2 keys uwsgiconf cannot express. ``secret`` signs replication.
    """

    name: str
    max_items: int
    no_expire: bool = False
    store: Optional[str] = None
    store_sync_interval: int = 0
    store_delete: bool = False
    hash_algo: str = "djb33x"
    hash_size: int = 65536
    key_size: int = 2048
    udp_clients: Tuple[str, ...] = ()
    udp_servers: Tuple[str, ...] = ()
    block_size: int = 65536
    block_count: Optional[int] = None
    sync_from: Tuple[str, ...] = ()
    mode_bitmap: bool = False
    use_lastmod: bool = False
    full_silent: bool = False
    full_purge_lru: bool = False
    math_initial: int = 0
    lazy_expire: bool = False
    sweep_on_full: int = 0
    clear_on_full: bool = False
    secret: Optional[str] = field(default=None, repr=False)  # never shown in logs or reprs
    # (memory, max_value) in bytes when the geometry came from the budget form (cache_options):
    # informational only, shown by stats; never part of the identity or of cache2
    budget: Optional[Tuple[int, int]] = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Normalise the forms the API accepts (str for a 1-list, PathLike for store) first, so
        # equality and hashing see one canonical value.
        for name in _LIST_FIELDS:
            object.__setattr__(self, name, _as_tuple(self._label(name), getattr(self, name)))
        if self.store is not None:
            # absolute from here on: the store is part of the cache's identity, whatever the cwd later
            object.__setattr__(self, "store", os.path.abspath(_check_path(self._label("store"), self.store)))
        self.validate()

    # -- derived values -----------------------------------------------------------------

    @property
    def blocks(self) -> int:
        """Number of data blocks: ``block_count`` in bitmap mode, else one per item slot."""
        return self.block_count if self.block_count is not None else self.max_items

    @property
    def max_item_size(self) -> int:
        """Largest value the cache accepts, in bytes."""
        return self.block_size * self.blocks if self.mode_bitmap else self.block_size

    @property
    def capacity(self) -> int:
        """Items the cache can hold: slot 0 is reserved as uWSGI's NULL item."""
        return self.max_items - 1

    @property
    def item_record_size(self) -> int:
        """Bytes per item slot: the fixed record plus the key buffer."""
        return ITEM_HEADER_BYTES + self.key_size

    @property
    def memory_bytes(self) -> int:
        """Shared memory the cache needs: items, data, hash table, free stack, bitmap, header."""
        return sum(self._memory_parts().values())

    def _memory_parts(self) -> Dict[str, int]:
        """The memory areas by name (the engine's own layout), so an oversize error can say
        which one dominates; they sum exactly to the size of the region (or store file)."""
        params = (self.max_items, self.key_size, self.block_size, self.blocks, self.hash_size, 0,
                  _engine.OPT_BITMAP if self.mode_bitmap else 0, 0, 0)
        try:
            return dict(_engine.region_layout(params))
        except ValueError:
            # past what the engine can lay out at all (2**46 bytes): the areas' plain sizes,
            # for the message of _validate_memory only
            return {"items": self.item_record_size * self.max_items, "data": self.block_size * self.blocks,
                    "hash table": HASH_BUCKET_BYTES * self.hash_size}

    @property
    def sizing(self) -> str:
        """What the geometry holds, in words (``uwcache stats``), with the budget it came from."""
        return describe_sizing(self.mode_bitmap, self.block_size, self.blocks, self.capacity,
                               self.key_size, self.memory_bytes, self.budget)

    # -- validation -----------------------------------------------------------------------

    def _label(self, option: str) -> str:
        """``cache 'x': option (cache2 alias/alias)`` so the user finds the option in any syntax."""
        keys = [key for key, field_name in CACHE2_KEYS.items() if field_name == option]
        where = f" (cache2 {'/'.join(keys)})" if keys else ""
        name = self.name if isinstance(self.name, str) else "?"
        return f"cache {name!r}: {option}{where}"

    def validate(self) -> CacheOptions:
        """Raise ConfigError for any invalid value; return self so it can be chained."""
        _check_cache_name("cache name", self.name)
        label = self._label
        _check_int(label("max_items"), self.max_items, 2, _LIMITS["max_items"][1],
                   " (max_items counts slot 0, which is reserved: 1 would hold nothing; "
                   "capacity is max_items - 1)")
        _check_int(label("block_size"), self.block_size, 1, _LIMITS["block_size"][1])
        _check_int(label("hash_size"), self.hash_size, 1, _LIMITS["hash_size"][1])
        _check_int(label("key_size"), self.key_size, 1, _LIMITS["key_size"][1])
        _check_int(label("store_sync_interval"), self.store_sync_interval, 0, INT64_MAX)
        _check_int(label("sweep_on_full"), self.sweep_on_full, 0, INT64_MAX)
        _check_int(label("math_initial"), self.math_initial, INT64_MIN, INT64_MAX)
        for name in _BOOL_FIELDS:
            _check_bool(label(name), getattr(self, name))
        self._validate_hash()
        self._validate_blocks()
        self._validate_addresses()
        if self.store is not None:
            _check_path(label("store"), self.store)
        _check_secret(label("secret"), self.secret)
        if self.budget is not None and not (isinstance(self.budget, tuple) and len(self.budget) == 2
                                            and all(_is_int(v) and v > 0 for v in self.budget)):
            raise ConfigError(f"{label('budget')} must be a (memory, max_value) pair of byte counts, "
                              f"got {self.budget!r}: give memory= and max_value= instead")
        self._validate_memory()
        return self

    def _validate_hash(self) -> None:
        """Only the two real hash functions: uWSGI's random/rand/rr would scatter lookups."""
        algo = self.hash_algo
        accepted = "accepted: " + ", ".join(HASH_ALGOS)
        if algo in ("random", "rand", "rr"):
            raise ConfigError(
                f"{self._label('hash_algo')} is {algo!r}: uWSGI accepts it but it is a load-balancing "
                f"'hash' that returns a different bucket on every call, so lookups miss the items "
                f"just stored; {accepted}")
        if algo not in HASH_ALGOS:
            raise ConfigError(f"{self._label('hash_algo')} must be one of {', '.join(HASH_ALGOS)}, got {algo!r}")
        if algo == "wyhash":
            # uWSGI peers exchange item records (dumps) that carry uWSGI's hash of each key
            for peers in ("udp_clients", "sync_from"):
                if getattr(self, peers):
                    raise ConfigError(
                        f"{self._label('hash_algo')} is 'wyhash', which uWSGI does not have, and "
                        f"{self._label(peers)} makes this cache a peer of uWSGI nodes, whose dumps carry "
                        f"uWSGI's hash of every key: use djb33x (the default) or murmur2 for a replicated cache")

    def _validate_blocks(self) -> None:
        """block_count only means something in bitmap mode, and must cover every item slot."""
        if self.block_count is None:
            return
        label = self._label("block_count")
        _check_int(label, self.block_count, 1, 2**40)
        if not self.mode_bitmap:
            raise ConfigError(
                f"{label} is set but mode_bitmap is off: in single-block mode every item uses "
                f"exactly one block, so extra blocks are allocated and never used; enable "
                f"mode_bitmap (cache2 'bitmap=1') or drop block_count")
        if self.block_count < self.max_items:
            raise ConfigError(f"{label} must be >= max_items ({self.max_items}), got {self.block_count}")

    def _validate_addresses(self) -> None:
        """Replication peers and listeners must be usable addresses (uWSGI skips bad ones)."""
        for address in self.udp_clients:
            parse_address(address, option=self._label("udp_clients"))
        for address in self.udp_servers:
            parse_address(address, option=self._label("udp_servers"))
        for address in self.sync_from:
            parse_address(address, option=self._label("sync_from"), unix=True)

    def _validate_memory(self) -> None:
        """Refuse sizes that cannot be mapped, naming the area that needs the most."""
        parts = self._memory_parts()
        total = sum(parts.values())
        if total > MAX_MEMORY_BYTES:
            biggest = max(parts, key=lambda k: parts[k])
            raise ConfigError(
                f"cache {self.name!r} would need {total} bytes ({total / 2**30:.1f} GiB) of memory, "
                f"more than the limit of {MAX_MEMORY_BYTES} bytes (1 TiB); the {biggest} area alone is "
                f"{parts[biggest]} bytes: lower max_items, block_size, block_count, key_size or hash_size")


# --------------------------------------------------------------------------------------------
# One default geometry, and the budget form (memory=, max_value=)
# --------------------------------------------------------------------------------------------

#: The geometry every entry point uses when none of GEOMETRY_OPTIONS is given (open_cache,
#: Caching.add_cache, ``uwcache run`` without a configuration, the Django/Flask/cachelib backends,
#: memoize): 4095 items, values up to 16 MiB in 4 KiB blocks, keys up to 250 bytes (memcached's
#: and Django's limit); 17.6 MiB of shared memory, well inside Docker's 64 MiB /dev/shm.
DEFAULT_GEOMETRY: Dict[str, Any] = {
    "max_items": 4096, "key_size": 250, "block_size": 4096, "block_count": 4096, "mode_bitmap": True,
}
#: Giving any of these (without memory=) keeps uWSGI's defaults for the others, exactly as before:
#: key_size 2048, block_size 65536, single-block mode, and max_items 1000 where it may be omitted.
GEOMETRY_OPTIONS = ("max_items", "key_size", "block_size", "block_count", "mode_bitmap")
PARTIAL_MAX_ITEMS = 1000
BUDGET_OPTIONS = ("memory", "max_value")
BUDGET_BLOCK_SIZE = 4096
BUDGET_MAX_VALUE = 2**20  # max_value when only memory= is given (at most a quarter of memory)

_SIZE_RE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?i?B?)\s*", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "m": 10**6, "mb": 10**6, "mib": 2**20,
               "g": 10**9, "gb": 10**9, "gib": 2**30, "t": 10**12, "tb": 10**12, "tib": 2**40}


def parse_size(option: str, value: object) -> int:
    """Bytes from an int or a string such as ``"64MiB"``, ``"1 MB"``, ``"512KiB"`` (KiB/MiB/GiB are
    powers of 1024, KB/MB/GB of 1000). ConfigError naming ``option`` for anything else."""
    accepted = "expected a number of bytes or a size such as '64MiB', '512KiB', '1GB'"
    if _is_int(value):
        size = int(value)  # type: ignore[call-overload]
    elif isinstance(value, str):
        match = _SIZE_RE.fullmatch(value)
        unit = match.group(2).lower() if match else ""
        if match is None or unit not in _SIZE_UNITS or unit in ("i", "ki", "mi", "gi", "ti"):
            raise ConfigError(f"{option} is {value!r}: {accepted}")
        size = int(float(match.group(1)) * _SIZE_UNITS[unit])
    else:
        raise ConfigError(f"{option} must be an int or a str, got {type(value).__name__} {value!r}: {accepted}")
    if not 1 <= size <= MAX_MEMORY_BYTES:
        raise ConfigError(f"{option} is {value!r} ({size} bytes): must be between 1 byte and 1 TiB")
    return size


def _human_size(size: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            text = f"{size:.1f}".rstrip("0").rstrip(".") if unit != "bytes" else str(int(size))
            return f"{text} {unit}"
        size /= 1024
    return f"{size} TiB"  # pragma: no cover


def describe_sizing(bitmap: bool, block_size: int, blocks: int, capacity: int, key_size: int,
                    memory: int, budget: Optional[Tuple[int, int]] = None) -> str:
    """``budget 64 MiB: bitmap, 4 KiB blocks × 15000, max value 1 MiB, up to 14999 items, ...``."""
    if bitmap:
        largest = budget[1] if budget is not None else block_size * blocks
        layout = f"bitmap, {_human_size(block_size)} blocks × {blocks}, max value {_human_size(largest)}"
    else:
        layout = f"single-block, {_human_size(block_size)} blocks × {capacity}, max value {_human_size(block_size)}"
    text = f"{layout}, up to {capacity} items, keys up to {key_size} bytes, {_human_size(memory)} of shared memory"
    if budget is not None:
        text = f"budget {_human_size(budget[0])}: {text}"
    return text


def cache_options(name: str, options: Dict[str, Any], *, what: str = "") -> CacheOptions:
    """CacheOptions for ``name`` from the keyword options of add_cache/open_cache/the backends:

    * ``memory=`` (and optionally ``max_value=``, ``max_items=``, ``key_size=``, ``hash_size=``,
      ``block_size=``): the budget form, see :func:`budget_geometry`;
    * none of GEOMETRY_OPTIONS: DEFAULT_GEOMETRY;
    * some of them: uWSGI's defaults for the rest, max_items 1000 if omitted (as before).
    """
    opts = {k: v for k, v in options.items() if v is not None}
    label = f"cache {name!r}" + (f" ({what})" if what else "")
    if "memory" in opts or "max_value" in opts:
        if "memory" not in opts:
            raise ConfigError(f"{label}: max_value needs memory= too (the budget form: "
                              f"memory='64MiB', max_value='1MiB'); or drop max_value")
        memory, max_value = opts.pop("memory"), opts.pop("max_value", None)
        opts.update(budget_geometry(name, memory, max_value, **{k: opts.pop(k) for k in list(opts)
                                                                 if k in GEOMETRY_OPTIONS + ("hash_size",)}))
    elif not any(k in opts for k in GEOMETRY_OPTIONS):
        opts.update(DEFAULT_GEOMETRY)
    else:
        opts.setdefault("max_items", PARTIAL_MAX_ITEMS)
    return CacheOptions(name=name, **opts)


def budget_geometry(name: str, memory: object, max_value: object = None, *, max_items: Optional[int] = None,
                    key_size: Optional[int] = None, hash_size: Optional[int] = None,
                    block_size: Optional[int] = None, block_count: Optional[int] = None,
                    mode_bitmap: Optional[bool] = None) -> Dict[str, Any]:
    """The geometry that fits ``memory`` bytes of shared memory (the whole region: header, item
    records, hash table, data) and stores a value of ``max_value`` bytes.

    Bitmap mode with ``block_size`` (4 KiB, or the next power of two >= max_value if smaller);
    ``key_size`` 250; one block per item slot unless ``max_items`` is given, in which case the
    rest of the budget goes to blocks. ``block_count`` and ``mode_bitmap=False`` are chosen by
    the budget, so giving them raises ConfigError. Returns CacheOptions keyword arguments.
    """
    label = f"cache {name!r}"
    mem = parse_size(f"{label}: memory", memory)
    if max_value is None:
        value = min(BUDGET_MAX_VALUE, max(1, mem // 4))
    else:
        value = parse_size(f"{label}: max_value", max_value)
        if value > mem:
            raise ConfigError(f"{label}: max_value ({_human_size(value)}) is larger than memory "
                              f"({_human_size(mem)}): one value cannot be bigger than the whole cache")
    if block_count is not None:
        raise ConfigError(f"{label}: block_count is chosen by the budget form (memory=): drop block_count, "
                          f"or drop memory/max_value and give the whole geometry")
    if mode_bitmap is not None and not mode_bitmap:
        raise ConfigError(f"{label}: mode_bitmap=False conflicts with the budget form (memory=), which uses "
                          f"bitmap mode so that values up to max_value fit; drop mode_bitmap")
    for option, given in (("max_items", max_items), ("key_size", key_size), ("hash_size", hash_size),
                          ("block_size", block_size)):
        if given is not None:
            _check_int(f"{label}: {option}", given, *_LIMITS[option])
    if block_size is None:
        block_size = BUDGET_BLOCK_SIZE
        while block_size > 64 and block_size // 2 >= value:
            block_size //= 2
    if key_size is None:
        key_size = DEFAULT_GEOMETRY["key_size"]
    per_item = ITEM_HEADER_BYTES + key_size + FREE_STACK_ENTRY_BYTES
    per_block = block_size + 1 / 8
    if hash_size is None:
        estimate = max(1, int(mem // (per_item + per_block)))
        hash_size = min(2**22, max(1024, 1 << (estimate - 1).bit_length()))
    fixed = REGION_HEADER_BYTES + HASH_BUCKET_BYTES * hash_size + 8 * _AREA_ALIGN + _REGION_ALIGN
    room = mem - fixed
    if max_items is None:
        items = int(room // (per_item + per_block))
        blocks = items
    else:
        items = max_items
        blocks = int((room - items * per_item) // per_block)
    short = (f"{label}: memory={_human_size(mem)} is too small for")
    if items < 2 or blocks < items:
        raise ConfigError(f"{short} {'max_items=' + str(max_items) if max_items else 'even 2 items'} "
                          f"(keys up to {key_size} bytes, {hash_size} hash buckets, one {block_size}-byte block "
                          f"per item): raise memory, or lower max_items/key_size")
    if blocks * block_size < value:
        raise ConfigError(f"{short} a value of max_value={_human_size(value)} with the rest of the cache "
                          f"(room for {_human_size(blocks * block_size)} of values): raise memory or lower max_value")
    geometry: Dict[str, Any] = {"max_items": items, "key_size": key_size, "hash_size": hash_size, "block_size": block_size,
                "block_count": blocks, "mode_bitmap": True, "budget": (mem, value)}
    # the arithmetic above keeps a margin for alignment; check the exact size, as the engine computes it
    for _ in range(64):
        if CacheOptions(name=name, **geometry).memory_bytes <= mem:
            return geometry
        geometry["block_count"] -= 1
        if max_items is None:
            geometry["max_items"] -= 1
    raise ConfigError(f"{short} this geometry: raise memory")  # pragma: no cover - the margin covers it


_BOOL_FIELDS = (
    "no_expire", "store_delete", "mode_bitmap", "use_lastmod", "full_silent",
    "full_purge_lru", "lazy_expire", "clear_on_full",
)
_LIST_FIELDS = ("udp_clients", "udp_servers", "sync_from")
_UINT_FIELDS = (
    "max_items", "store_sync_interval", "hash_size", "key_size", "block_size", "block_count",
    "sweep_on_full",
)

# cache2 keys in uwsgiconf's emission order (uwsgi-behaviour.md §1.5), then the extras uwsgiconf lacks.
_EMIT_ORDER: Tuple[Tuple[str, str], ...] = (
    ("name", "name"), ("max_items", "maxitems"), ("no_expire", "no_expire"), ("store", "store"),
    ("store_sync_interval", "storesync"), ("store_delete", "store_delete"), ("hash_algo", "hash"),
    ("hash_size", "hash_size"), ("key_size", "key_size"), ("udp_clients", "nodes"),
    ("udp_servers", "udp_servers"), ("block_size", "blocksize"), ("block_count", "blocks"),
    ("sync_from", "sync"), ("mode_bitmap", "bitmap"), ("use_lastmod", "lastmod"),
    ("full_silent", "ignore_full"), ("full_purge_lru", "purge_lru"),
    ("math_initial", "math_initial"), ("lazy_expire", "lazy_expire"),
    ("sweep_on_full", "sweep_on_full"), ("clear_on_full", "clear_on_full"),
)

# Every cache2 key uWSGI understands (uwsgi-behaviour.md §1.2), with its aliases.
CACHE2_KEYS: Dict[str, str] = {
    "name": "name",
    "max_items": "max_items", "maxitems": "max_items", "items": "max_items",
    "blocksize": "block_size",
    "blocks": "block_count",
    "hash": "hash_algo",
    "hashsize": "hash_size", "hash_size": "hash_size",
    "keysize": "key_size", "key_size": "key_size",
    "store": "store",
    "store_sync": "store_sync_interval", "storesync": "store_sync_interval",
    "store_delete": "store_delete", "storedelete": "store_delete",
    "node": "udp_clients", "nodes": "udp_clients",
    "sync": "sync_from",
    "udp": "udp_servers", "udp_servers": "udp_servers", "udp_server": "udp_servers",
    "udpservers": "udp_servers", "udpserver": "udp_servers",
    "bitmap": "mode_bitmap",
    "lastmod": "use_lastmod",
    "math_initial": "math_initial",
    "ignore_full": "full_silent",
    "purge_lru": "full_purge_lru", "lru": "full_purge_lru",
    "lazy_expire": "lazy_expire", "lazy": "lazy_expire",
    "sweep_on_full": "sweep_on_full",
    "clear_on_full": "clear_on_full",
    "no_expire": "no_expire",
}
_FIELD_DEFAULTS = {f.name: f.default for f in dataclasses.fields(CacheOptions)}

_TRUE_WORDS = ("1", "true", "yes", "on")
_FALSE_WORDS = ("0", "false", "no", "off")


# --------------------------------------------------------------------------------------------
# cache2 values: parse and format
# --------------------------------------------------------------------------------------------


def _split_escaped(text: str, separator: str) -> List[str]:
    """Split on ``separator``; a backslash makes the next character literal (uWSGI's kvlist)."""
    pieces: List[str] = []
    current: List[str] = []
    chars = iter(text)
    for ch in chars:
        if ch == "\\":
            escaped = next(chars, None)
            if escaped is None:
                raise ConfigError(f"cache2 value {text!r} ends with a lone backslash; write '\\\\' for a backslash")
            current.append(escaped)
        elif ch == separator:
            pieces.append("".join(current))
            current = []
        else:
            current.append(ch)
    pieces.append("".join(current))
    return pieces


def _escape(value: str) -> str:
    """Backslash-escape what the cache2 splitter would otherwise eat."""
    return value.replace("\\", "\\\\").replace(",", "\\,")


def _parse_uint(key: str, raw: str) -> int:
    """Plain decimal digits only: uWSGI's strtoul reads '64k' as 64 and '-1' as 2**64-1."""
    if not _DIGITS_RE.fullmatch(raw):
        raise ConfigError(
            f"cache2 key '{key}' has value {raw!r}: expected plain decimal digits (e.g. {key}=4096); "
            f"no sign, suffix (64k) or spaces - uWSGI would read only the leading digits")
    return int(raw)


def _parse_int64(key: str, raw: str) -> int:
    """A signed decimal integer (math_initial), range-checked by CacheOptions."""
    if not _SIGNED_DIGITS_RE.fullmatch(raw):
        raise ConfigError(f"cache2 key '{key}' has value {raw!r}: expected a signed decimal integer (e.g. {key}=-5)")
    return int(raw)


def _parse_bool(key: str, raw: str) -> bool:
    """Only explicit 'on' words: uWSGI turns a boolean on whatever its value, even '0'."""
    if raw.lower() in _TRUE_WORDS:
        return True
    raise ConfigError(
        f"cache2 key '{key}' has value {raw!r}: uWSGI treats a boolean key as ON whenever it is "
        f"present, whatever its value (so '{key}=0' ENABLES it); to disable {key}, omit the key; "
        f"to enable it write '{key}=1' (accepted: {', '.join(_TRUE_WORDS)})")


def _parse_list(key: str, raw: str) -> Tuple[str, ...]:
    """A ';'-separated list; empty entries are mistakes (a stray ';'), not addresses."""
    entries = tuple(raw.split(";"))
    if any(not entry for entry in entries):
        raise ConfigError(f"cache2 key '{key}' has value {raw!r}: expected entries separated by ';', without empty ones")
    return entries


def _parse_text(key: str, raw: str) -> str:
    """Names, paths and hash names are taken verbatim; CacheOptions validates them."""
    return raw


def _parser_for(field_name: str) -> Any:
    """The function that turns a raw cache2 value into the field's Python value."""
    if field_name in _BOOL_FIELDS:
        return _parse_bool
    if field_name in _LIST_FIELDS:
        return _parse_list
    if field_name == "math_initial":
        return _parse_int64
    if field_name in _UINT_FIELDS:
        return _parse_uint
    return _parse_text


def _unknown_key_error(key: str, piece: str) -> ConfigError:
    """Explain an unknown key, with a hint for the two common slips."""
    accepted = ", ".join(sorted(CACHE2_KEYS))
    if key == "max-items":
        hint = "uWSGI's docs spell it 'max-items' but uWSGI does not accept it: use items, maxitems or max_items"
    elif key.strip() in CACHE2_KEYS:
        hint = f"remove the spaces around {key.strip()!r} (keys are matched exactly)"
    else:
        hint = "uWSGI would ignore it silently"
    return ConfigError(f"cache2 key {key!r} (in {piece!r}) is unknown: {hint}; accepted keys: {accepted}")


def _bare_word_error(piece: str) -> ConfigError:
    """A piece without '=' is silently dropped by uWSGI, which is never what was meant."""
    if piece == "":
        return ConfigError("cache2 value has an empty entry (two commas in a row, or a leading/trailing comma)")
    field_name = CACHE2_KEYS.get(piece)
    if field_name in _BOOL_FIELDS:
        fix = f"write '{piece}=1'"
    else:
        fix = f"write '{piece}=VALUE'" if field_name else "write key=value"
    return ConfigError(
        f"cache2 entry {piece!r} has no '=': uWSGI silently ignores it (so it does NOT enable or set "
        f"anything); {fix}")


def _parse_cache2_fields(value: str) -> Dict[str, Any]:
    """cache2 text -> {field: value}, rejecting bare words, unknown keys and conflicting repeats."""
    found: Dict[str, Tuple[str, Any, str]] = {}
    for piece in _split_escaped(value, ","):
        key, equals, raw = piece.partition("=")
        if not equals:
            raise _bare_word_error(piece)
        field_name = CACHE2_KEYS.get(key)
        if field_name is None:
            raise _unknown_key_error(key, piece)
        parsed = _parser_for(field_name)(key, raw)
        if field_name in found and found[field_name][1] != parsed:
            raise ConfigError(
                f"cache2 sets {field_name} twice with different values ({found[field_name][0]}="
                f"{found[field_name][2]!r} and {key}={raw!r}); uWSGI would keep the last one silently, "
                f"uwcache asks you to keep one")
        found[field_name] = (key, parsed, raw)
    return {name: parsed for name, (_key, parsed, _raw) in found.items()}


def _parse_cache2(value: object, *, store_sync_default: int = 0) -> CacheOptions:
    """parse_cache2 with the ini-wide ``cache-store-sync`` default for ``storesync``."""
    if not isinstance(value, str):
        raise ConfigError(f"a cache2 value must be a str, got {value!r}")
    try:
        fields = _parse_cache2_fields(value)
        for required, example in (("name", "name=mycache"), ("max_items", "items=1000")):
            if required not in fields:
                raise ConfigError(f"cache2 needs {required!r} (e.g. {example})")
        fields.setdefault("store_sync_interval", store_sync_default)
        return CacheOptions(**fields)
    except ConfigError as exc:
        raise ConfigError(f"cache2 {value!r}: {exc}") from None


def parse_cache2(value: str) -> CacheOptions:
    """Parse one uWSGI ``--cache2`` value (``name=x,items=100,...``) into CacheOptions.

    Stricter than uWSGI: every entry must be ``key=value`` with a known key, numbers are plain
    digits, booleans only take on-words, and a key repeated with another value is an error.
    """
    return _parse_cache2(value)


def _format_value(field_name: str, value: Any) -> str:
    """Python value -> cache2 text (booleans are only ever written as 1)."""
    if isinstance(value, bool):
        return "1"
    if isinstance(value, tuple):
        return ";".join(value)
    return str(value)


def format_cache2(options: CacheOptions) -> str:
    """CacheOptions -> one ``--cache2`` value, keys in uwsgiconf's order, defaults omitted.

    A false boolean is never written: uWSGI reads any present boolean key as on. ``secret``
    is never written (uWSGI has no such key, and argv is visible to every local user).
    """
    parts = []
    for field_name, key in _EMIT_ORDER:
        value = getattr(options, field_name)
        is_required = field_name in ("name", "max_items")
        if not is_required and (value == _FIELD_DEFAULTS[field_name] or value is False):
            continue
        parts.append(f"{key}={_escape(_format_value(field_name, value))}")
    return ",".join(parts)


# --------------------------------------------------------------------------------------------
# Preloads
# --------------------------------------------------------------------------------------------


def _check_blob(option: str, value: object) -> StrOrBytes:
    """Preload keys and values: non-empty str or bytes (uWSGI refuses empty ones)."""
    if not isinstance(value, (str, bytes)):
        raise ConfigError(f"{option} must be str or bytes, got {value!r} ({type(value).__name__})")
    if not value:
        raise ConfigError(f"{option} must not be empty (uWSGI refuses empty keys and values)")
    return value


def _to_bytes(value: StrOrBytes) -> bytes:
    """The bytes the node will store: str is UTF-8 encoded."""
    return value.encode("utf-8") if isinstance(value, str) else value


def _check_optional_cache_name(option: str, value: object) -> Optional[str]:
    """None means the default cache; anything else must be a valid cache name."""
    return None if value is None else _check_cache_name(option, value)


@dataclass(frozen=True)
class PreloadItem:
    """An item stored when the node starts (uWSGI ``add-cache-item``); an existing key wins."""

    key: StrOrBytes
    value: StrOrBytes
    cache_name: Optional[str] = None  # None = the default cache (the first one configured)

    def __post_init__(self) -> None:
        _check_blob("add_item key", self.key)
        _check_blob("add_item value", self.value)
        _check_optional_cache_name("add_item cache_name", self.cache_name)

    @property
    def key_bytes(self) -> bytes:
        """The key as stored (str keys are UTF-8)."""
        return _to_bytes(self.key)

    @property
    def value_bytes(self) -> bytes:
        """The value as stored (str values are UTF-8)."""
        return _to_bytes(self.value)


@dataclass(frozen=True)
class PreloadFile:
    """A file whose content is stored at start under its path text (uWSGI ``load-file-in-cache``)."""

    path: str
    gzip: bool = False
    cache_name: Optional[str] = None  # None = the default cache (the first one configured)

    def __post_init__(self) -> None:
        _check_text("add_file filepath", self.path, 4096)
        _check_bool("add_file gzip", self.gzip)
        _check_optional_cache_name("add_file cache_name", self.cache_name)


# --------------------------------------------------------------------------------------------
# Writing uWSGI options
# --------------------------------------------------------------------------------------------


def _decode_for_uwsgi(what: str, value: StrOrBytes) -> str:
    """uWSGI options are text: bytes must be UTF-8 to be written out."""
    if isinstance(value, str):
        return value
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {value!r} is not UTF-8 text, so it cannot be written as a uWSGI option") from None


def _preload_entry(cache_name: str, payload: str, what: str) -> str:
    """``CACHE PAYLOAD``: always named, since a nameless entry goes into every cache in uWSGI."""
    if " " in cache_name:
        raise ConfigError(
            f"{what} targets cache {cache_name!r}, whose name contains a space: uWSGI takes the text "
            f"before the first space as the cache name, so it cannot be expressed as a uWSGI option")
    entry = f"{cache_name} {payload}"
    if "\0" in entry:
        raise ConfigError(f"{what} contains a NUL character, which a uWSGI option cannot carry")
    return entry


def _item_entry(item: PreloadItem, cache_name: str) -> str:
    """``CACHE KEY=VALUE``; a key with '=' cannot be written (uWSGI splits at the first '=')."""
    key = _decode_for_uwsgi("add_item key", item.key)
    value = _decode_for_uwsgi("add_item value", item.value)
    what = f"add_item({key!r})"
    if "=" in key:
        raise ConfigError(
            f"{what}: the key contains '=', but uWSGI splits add-cache-item at the first '=', so it "
            f"cannot be expressed as a uWSGI option")
    return _preload_entry(cache_name, f"{key}={value}", what)


def _ini_line(option: str, value: str) -> str:
    """``option = value``, refusing values an ini file would alter (trimmed, unquoted, split)."""
    problem = None
    if "\n" in value or "\r" in value:
        problem = "contains a line break"
    elif value != value.strip(" \t"):
        problem = "starts or ends with whitespace, which the ini reader strips"
    elif len(value) >= 2 and value.startswith('"') and value.endswith('"'):
        problem = "is wrapped in double quotes, which the ini reader removes"
    if problem:
        raise ConfigError(f"{option} value {value!r} {problem}: it cannot be written to an ini file "
                          f"(use to_uwsgi_args() or change the value)")
    return f"{option} = {value}"


# --------------------------------------------------------------------------------------------
# Reading uWSGI ini files
# --------------------------------------------------------------------------------------------

_INI_WHITESPACE = " \t\r"


def _decode_ini(data: bytes, where: str) -> str:
    """ini files are UTF-8 text; say so rather than leak a UnicodeDecodeError."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where} is not UTF-8 text (byte {exc.start})") from None


def _read_source(source: Union[str, os.PathLike, IO[str], IO[bytes]]) -> Tuple[str, str]:
    """(text, description) from a path, a file-like object, or ini text containing a newline."""
    if hasattr(source, "read"):
        data = source.read()  # type: ignore[union-attr]
        where = str(getattr(source, "name", "<ini>"))
        return (_decode_ini(data, where) if isinstance(data, bytes) else data), where
    if isinstance(source, str) and "\n" in source:
        return source, "<ini>"
    if isinstance(source, (str, os.PathLike)):
        path = pathlib.Path(source)
        try:
            return _decode_ini(path.read_bytes(), str(path)), str(path)
        except OSError as exc:
            raise ConfigError(f"cannot read ini file {str(path)!r}: {exc.strerror or exc}") from None
    raise ConfigError(f"from_ini source must be a path, a file object or ini text, got {source!r}")


def _section_options(text: str, section: str, where: str) -> Iterator[Tuple[int, str, str]]:
    """Yield (line number, key, value) of ``section``, the way uWSGI's own ini reader splits.

    uWSGI trims spaces/tabs/CR around lines, keys and values, takes comments only at the start
    of a line, and repeats keys freely (one ``cache2`` line per cache), which is why this is
    not configparser. uwcache also removes one pair of double quotes around a value.
    """
    current = None
    seen = False
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.strip(_INI_WHITESPACE)
        if not line or line[0] in "#;":
            continue
        if line[0] == "[":
            current = line[1:-1] if line.endswith("]") else line[1:]
            seen = seen or current == section
            continue
        if current != section:
            continue
        key, _equals, value = line.partition("=")
        value = value.strip(_INI_WHITESPACE)
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        yield number, key.rstrip(_INI_WHITESPACE), value
    if not seen:
        raise ConfigError(f"{where}: there is no [{section}] section")


def _parse_flag(option: str, raw: str) -> bool:
    """ini flags: empty or an on-word is True, an off-word False (as uWSGI reads flag options)."""
    lowered = raw.lower()
    if lowered == "" or lowered in _TRUE_WORDS:
        return True
    if lowered in _FALSE_WORDS:
        return False
    raise ConfigError(f"option '{option}' has value {raw!r}: expected one of true, false, 1, 0, yes, no, on, off")


def _parse_ini_uint(option: str, raw: str) -> int:
    """Decimal digits, as for cache2 numbers."""
    if not _DIGITS_RE.fullmatch(raw):
        raise ConfigError(f"option '{option}' has value {raw!r}: expected plain decimal digits (no sign or suffix)")
    return int(raw)


# Options read from ini files: name -> (kind, parser). "single" options may repeat only with
# the same value; "list" options collect one entry per line.
_INI_SINGLE = {
    "cache": _parse_ini_uint,
    "cache-blocksize": _parse_ini_uint,
    "cache-store": lambda option, raw: raw,
    "cache-store-sync": _parse_ini_uint,
    "cache-sync": lambda option, raw: raw,
    "cache-use-last-modified": _parse_flag,
    "cache-no-expire": _parse_flag,
    "cache-expire-freq": _parse_ini_uint,
    "cache-report-freed-items": _parse_flag,
}
_INI_LIST = ("cache2", "cache-udp-server", "cache-udp-node", "add-cache-item", "files")
_INI_FILE_OPTIONS = {"load-file-in-cache": False, "load-file-in-cache-gzip": True}  # option -> gzip
_LEGACY_OPTIONS = ("cache-blocksize", "cache-store", "cache-sync", "cache-use-last-modified",
                   "cache-udp-server", "cache-udp-node")


class _IniOptions:
    """The cache options of one ini section, before they become a Caching."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.single: Dict[str, Tuple[int, Any]] = {}  # option -> (line, parsed value)
        self.lists: Dict[str, List[Tuple[int, Any]]] = {name: [] for name in _INI_LIST}  # option -> [(line, raw)]

    def error(self, line: int, message: str) -> ConfigError:
        """Prefix a message with the file and line it comes from."""
        return ConfigError(f"{self.where} line {line}: {message}")

    def add(self, line: int, option: str, raw: str) -> None:
        """Record one option line; non-cache options are ignored."""
        if option in _INI_FILE_OPTIONS:  # one list for both, so their relative order is kept
            self.lists["files"].append((line, (option, raw)))
            return
        if option in self.lists:
            self.lists[option].append((line, raw))
            return
        parser = _INI_SINGLE.get(option)
        if parser is None:
            return
        try:
            value = parser(option, raw)
        except ConfigError as exc:
            raise self.error(line, str(exc)) from None
        previous = self.single.get(option)
        if previous is not None and previous[1] != value:
            raise self.error(line, f"{option} is set again with a different value ({raw!r}, first on "
                                   f"line {previous[0]}); uWSGI would keep the last one silently")
        self.single[option] = (line, value)

    def get(self, option: str, default: Any = None) -> Any:
        """The parsed value of a single-valued option."""
        return self.single[option][1] if option in self.single else default


def _legacy_cache(opts: _IniOptions) -> Optional[CacheOptions]:
    """The pre-1.9 ``cache = N`` cache named 'default', or None when not configured."""
    items = opts.get("cache", 0)
    if not items:
        stray = [o for o in _LEGACY_OPTIONS if o in opts.single or opts.lists.get(o)]
        if stray:
            raise ConfigError(f"{opts.where}: {stray[0]} has no effect without 'cache = N' (the legacy "
                              f"cache it configures); use a cache2 key instead")
        return None
    fields: Dict[str, Any] = {"name": "default", "max_items": items,
                    "store_sync_interval": opts.get("cache-store-sync", 0)}
    simple = {"cache-blocksize": "block_size", "cache-store": "store",
              "cache-use-last-modified": "use_lastmod"}
    for option, field_name in simple.items():
        if option in opts.single:
            fields[field_name] = opts.get(option)
    if "cache-sync" in opts.single:
        fields["sync_from"] = (opts.get("cache-sync"),)
    fields["udp_servers"] = tuple(raw for _line, raw in opts.lists["cache-udp-server"])
    fields["udp_clients"] = tuple(raw for _line, raw in opts.lists["cache-udp-node"])
    try:
        return CacheOptions(**fields)
    except ConfigError as exc:
        raise ConfigError(f"{opts.where}: legacy 'cache = {items}': {exc}") from None


def _split_preload(opts: _IniOptions, caching: Caching, option: str, line: int,
                   raw: str) -> Iterator[Tuple[Optional[str], str]]:
    """Yield (cache name, payload) for one preload line; a nameless entry goes to every cache."""
    if not raw:
        raise opts.error(line, f"{option} is empty")
    if not caching.caches:
        raise opts.error(line, f"{option} = {raw!r} but no cache is configured")
    name, space, payload = raw.partition(" ")
    if not space:
        for cache in caching.caches:  # uWSGI stores a nameless entry in every cache
            yield cache.name, raw
        return
    if name not in {cache.name for cache in caching.caches}:
        hint = ""
        if option == "add-cache-item" and "=" in name:
            hint = (" - this looks like KEY=VALUE with a space in the value, which uWSGI would have "
                    "stored nowhere; write 'CACHE KEY=VALUE' to name the cache explicitly")
        raise opts.error(line, f"{option} = {raw!r}: uWSGI reads the text before the first space "
                               f"({name!r}) as a cache name, and no cache has that name{hint}")
    yield name, payload


def _add_preloads(opts: _IniOptions, caching: Caching) -> None:
    """Turn add-cache-item / load-file-in-cache[-gzip] lines into explicit per-cache preloads."""
    for line, raw in opts.lists["add-cache-item"]:
        for cache_name, payload in _split_preload(opts, caching, "add-cache-item", line, raw):
            key, equals, value = payload.partition("=")
            if not equals:
                raise opts.error(line, f"add-cache-item = {raw!r} has no '=': expected [CACHE ]KEY=VALUE")
            try:
                caching.items.append(PreloadItem(key, value, cache_name))
            except ConfigError as exc:
                raise opts.error(line, f"add-cache-item = {raw!r}: {exc}") from None
    for line, (option, raw) in opts.lists["files"]:
        for cache_name, path in _split_preload(opts, caching, option, line, raw):
            try:
                caching.files.append(PreloadFile(path, _INI_FILE_OPTIONS[option], cache_name))
            except ConfigError as exc:
                raise opts.error(line, f"{option} = {raw!r}: {exc}") from None


def _apply_basic_params(opts: _IniOptions, caching: Caching) -> None:
    """cache-no-expire / cache-expire-freq / cache-report-freed-items; freq 0 means 3, as in uWSGI."""
    frequency = opts.get("cache-expire-freq")
    if frequency == 0:
        frequency = 3
    try:
        caching.set_basic_params(
            no_expire=opts.get("cache-no-expire"),
            expire_scan_interval=frequency,
            report_freed=opts.get("cache-report-freed-items"),
        )
    except ConfigError as exc:
        raise ConfigError(f"{opts.where}: {exc}") from None


# --------------------------------------------------------------------------------------------
# Caching
# --------------------------------------------------------------------------------------------


def _resolve_namespace(namespace: Optional[str]) -> str:
    """Explicit namespace, else $UWCACHE_NAMESPACE, else 'default'; validated either way."""
    source = "namespace"
    if namespace is None:
        namespace = os.environ.get(NAMESPACE_ENV) or DEFAULT_NAMESPACE
        source = f"namespace (from ${NAMESPACE_ENV})" if os.environ.get(NAMESPACE_ENV) else source
    if not isinstance(namespace, str) or not _NAMESPACE_RE.fullmatch(namespace):
        raise ConfigError(
            f"{source} must be 1..64 characters of A-Z a-z 0-9 . _ - not starting with '.', got "
            f"{namespace!r} (it becomes part of shared-memory file names)")
    return namespace


class Caching:
    """The caching setup of one application: caches, sweeper options and startup preloads.

    Same method names and arguments as uwsgiconf's ``Caching``; every method returns ``self``
    so calls chain. Nothing is created until :meth:`start`.
    """

    def __init__(self, namespace: Optional[str] = None, *, secret: Optional[str] = None) -> None:
        self.namespace: str = _resolve_namespace(namespace)
        self.secret: Optional[str] = _check_secret("secret", secret)
        self.no_expire: bool = False
        self.expire_scan_interval: int = 3
        self.report_freed: bool = False
        self.caches: List[CacheOptions] = []
        self.items: List[PreloadItem] = []
        self.files: List[PreloadFile] = []

    # -- the seed's methods ---------------------------------------------------------------

    def set_basic_params(self, *, no_expire: Optional[bool] = None,
                         expire_scan_interval: Optional[int] = None,
                         report_freed: Optional[bool] = None) -> Caching:
        """Global sweeper options; None leaves an option as it is."""
        if no_expire is not None:
            self.no_expire = _check_bool("no_expire", no_expire)
        if expire_scan_interval is not None:
            self.expire_scan_interval = _check_int("expire_scan_interval", expire_scan_interval, 1, 2**31 - 1)
        if report_freed is not None:
            self.report_freed = _check_bool("report_freed", report_freed)
        return self

    def add_item(self, key: StrOrBytes, value: StrOrBytes, *, cache_name: Optional[str] = None) -> Caching:
        """Store ``key`` = ``value`` when the node starts (None: in the default cache)."""
        self.items.append(PreloadItem(key, value, cache_name))
        return self

    def add_file(self, filepath: Union[str, pathlib.Path], *, gzip: bool = False,
                 cache_name: Optional[str] = None) -> Caching:
        """Store a file's content at start under its path text; the node reads it, not this call."""
        if not isinstance(filepath, (str, os.PathLike)):
            raise ConfigError(f"add_file filepath must be a str or pathlib.Path, got {filepath!r}")
        self.files.append(PreloadFile(str(filepath), gzip, cache_name))
        return self

    def add_cache(self, name: str, *, max_items: Optional[int] = None, no_expire: Optional[bool] = None,
                  store: Optional[str] = None, store_sync_interval: Optional[int] = None,
                  store_delete: Optional[bool] = None, hash_algo: Optional[str] = None,
                  hash_size: Optional[int] = None, key_size: Optional[int] = None,
                  udp_clients: AddressList = None, udp_servers: AddressList = None,
                  block_size: Optional[int] = None, block_count: Optional[int] = None,
                  sync_from: AddressList = None, mode_bitmap: Optional[bool] = None,
                  use_lastmod: Optional[bool] = None, full_silent: Optional[bool] = None,
                  full_purge_lru: Optional[bool] = None, math_initial: Optional[int] = None,
                  lazy_expire: Optional[bool] = None, sweep_on_full: Optional[int] = None,
                  clear_on_full: Optional[bool] = None, secret: Optional[str] = None,
                  memory: Union[int, str, None] = None, max_value: Union[int, str, None] = None) -> Caching:
        """Add a cache; every None argument takes its default. Names must be unique.

        With none of max_items/key_size/block_size/block_count/mode_bitmap the cache gets
        DEFAULT_GEOMETRY; with ``memory=`` (and ``max_value=``) the budget form picks it."""
        # Every keyword argument is a CacheOptions field of the same name (or a budget option); None = not given.
        given = {k: v for k, v in locals().items() if k not in ("self", "name") and v is not None}
        self._append_cache(cache_options(name, given))
        return self

    def add_near(self, name: str, *, redis: Any, prefix: str = "", max_ttl: int = 300,
                 lease_ms: int = 300, resp: str = "auto") -> Caching:
        """Put cache ``name`` in front of Redis/Valkey as this host's L1 (see docs/near.md).

        The node runs the invalidation listener; any process uses ``uwcache.near(name)``."""
        from .near import NearOptions

        self.cache_options(name)  # the L1 must be a configured cache
        near_options = self.__dict__.setdefault("near_options", {})
        near_options[name] = NearOptions(name=name, redis=redis, prefix=prefix, max_ttl=max_ttl,
                                         lease_ms=lease_ms, resp=str(resp))
        return self

    def _append_cache_with_near(self, value: str, parse: Any) -> None:
        """A cache2 value that may carry the near cache's keys (near=, prefix=, maxttl=, lease=)."""
        from .near import split_cache2_near

        plain, near_kw = split_cache2_near(value)
        options = parse(plain)
        self._append_cache(options)
        if near_kw is not None:
            self.add_near(options.name, **near_kw)

    # -- lookups --------------------------------------------------------------------------

    def cache_options(self, name: str) -> CacheOptions:
        """The options of the cache called ``name``; UnknownCache if there is none."""
        for options in self.caches:
            if options.name == name:
                return options
        configured = ", ".join(repr(c.name) for c in self.caches) or "none"
        raise UnknownCache(f"no cache named {name!r} is configured (configured: {configured})")

    @property
    def default_cache_name(self) -> str:
        """The first configured cache, which uWSGI uses when no cache name is given."""
        if not self.caches:
            raise ConfigError("no cache is configured, so there is no default cache; call add_cache() first")
        return self.caches[0].name

    def start(self, **kwargs: Any) -> Node:
        """Create the caches and run the preloads: hand the configuration to a Node."""
        from .node import Node

        return Node(self, **kwargs)

    # -- whole-configuration checks -------------------------------------------------------

    def validate(self) -> Caching:
        """Checks that span options: unique names, basic params, preload targets and sizes."""
        self.set_basic_params(no_expire=self.no_expire, expire_scan_interval=self.expire_scan_interval,
                              report_freed=self.report_freed)
        names = [c.name for c in self.caches]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"cache name {duplicates[0]!r} is used by more than one cache")
        for item in self.items:
            self._check_item_fits(item)
        for preload in self.files:
            self._target_cache(preload.cache_name, f"add_file({preload.path!r})")
        return self

    def _target_cache(self, cache_name: Optional[str], what: str) -> CacheOptions:
        """The cache a preload goes to, or ConfigError naming the preload and the cache."""
        if not self.caches:
            raise ConfigError(f"{what} needs a cache, but no cache is configured; call add_cache() first")
        if cache_name is None:
            return self.caches[0]
        try:
            return self.cache_options(cache_name)
        except UnknownCache:
            configured = ", ".join(repr(c.name) for c in self.caches)
            raise ConfigError(f"{what} names cache {cache_name!r}, which is not configured "
                              f"(configured: {configured})") from None

    def _check_item_fits(self, item: PreloadItem) -> None:
        """A preload that cannot fit would only fail in a log line at start; fail now instead."""
        what = f"add_item({item.key!r})"
        cache = self._target_cache(item.cache_name, what)
        key_len, value_len = len(item.key_bytes), len(item.value_bytes)
        if key_len > cache.key_size:
            raise ConfigError(f"{what}: the key is {key_len} bytes, more than key_size={cache.key_size} "
                              f"of cache {cache.name!r}")
        if value_len > cache.max_item_size:
            raise ConfigError(f"{what}: the value is {value_len} bytes, more than the largest item "
                              f"({cache.max_item_size} bytes, see block_size/mode_bitmap) of cache {cache.name!r}")

    # -- uWSGI configuration in -----------------------------------------------------------

    @classmethod
    def from_cache2(cls, *values: str, namespace: Optional[str] = None,
                    secret: Optional[str] = None) -> Caching:
        """One cache per uWSGI ``--cache2`` value, in order."""
        caching = cls(namespace, secret=secret)
        for value in values:
            caching._append_cache_with_near(value, lambda plain: parse_cache2(plain))
        return caching

    @classmethod
    def from_ini(cls, source: Union[str, os.PathLike, IO[str], IO[bytes]], *, section: str = "uwsgi",
                 namespace: Optional[str] = None, secret: Optional[str] = None) -> Caching:
        """Read the cache options of a uWSGI ini file (path, file object, or text with a newline).

        Options that are not about caches are ignored. Preload entries without a cache name are
        expanded into one entry per cache, which is what uWSGI does with them.
        """
        text, where = _read_source(source)
        opts = _IniOptions(where)
        for line, option, raw in _section_options(text, section, where):
            opts.add(line, option, raw)
        caching = cls(namespace, secret=secret)
        legacy = _legacy_cache(opts)
        if legacy is not None:
            caching._append_cache(legacy)
        store_sync = opts.get("cache-store-sync", 0)
        for line, raw in opts.lists["cache2"]:
            try:
                caching._append_cache_with_near(raw, lambda plain: _parse_cache2(plain, store_sync_default=store_sync))
            except ConfigError as exc:
                raise opts.error(line, str(exc)) from None
        _apply_basic_params(opts, caching)
        _add_preloads(opts, caching)
        return caching.validate()

    def _append_cache(self, options: CacheOptions) -> None:
        """Add a cache, inheriting the Caching-wide secret; names must be unique."""
        if any(c.name == options.name for c in self.caches):
            raise ConfigError(f"cache name {options.name!r} is already configured; cache names must be unique")
        if options.secret is None and self.secret is not None:
            options = dataclasses.replace(options, secret=self.secret)
        self.caches.append(options)

    # -- uWSGI configuration out ----------------------------------------------------------

    def to_cache2(self) -> List[str]:
        """One ``--cache2`` value per cache, in creation order."""
        return [format_cache2(options) for options in self.caches]

    def _uwsgi_options(self) -> List[Tuple[str, Optional[str]]]:
        """(option, value) pairs in uWSGI terms; value None = a flag without argument."""
        self.validate()
        pairs: List[Tuple[str, Optional[str]]] = [("cache2", value) for value in self.to_cache2()]
        if self.no_expire:
            pairs.append(("cache-no-expire", None))
        if self.expire_scan_interval != 3:
            pairs.append(("cache-expire-freq", str(self.expire_scan_interval)))
        if self.report_freed:
            pairs.append(("cache-report-freed-items", None))
        for item in self.items:
            pairs.append(("add-cache-item", _item_entry(item, self._target_cache(item.cache_name, "").name)))
        for preload in self.files:
            option = "load-file-in-cache-gzip" if preload.gzip else "load-file-in-cache"
            target = self._target_cache(preload.cache_name, "").name
            pairs.append((option, _preload_entry(target, preload.path, f"add_file({preload.path!r})")))
        return pairs

    def to_ini(self, section: str = "uwsgi") -> str:
        """A uWSGI ini section with these caches; preloads always name their cache."""
        if not isinstance(section, str) or not section or any(c in section for c in "[]\n\r"):
            raise ConfigError(f"section must be a non-empty name without brackets or line breaks, got {section!r}")
        lines = [f"[{section}]"]
        for option, value in self._uwsgi_options():
            lines.append(_ini_line(option, "true" if value is None else value))
        return "\n".join(lines) + "\n"

    def to_uwsgi_args(self) -> List[str]:
        """The same options as uWSGI command-line arguments."""
        args: List[str] = []
        for option, value in self._uwsgi_options():
            args.append(f"--{option}")
            if value is not None:
                args.append(value)
        return args

    # -- comparison and display -----------------------------------------------------------

    def _content(self) -> Tuple[Any, ...]:
        """What the configuration means, independent of namespace and of spelling choices."""
        default = self.caches[0].name if self.caches else None
        items = [(i.key_bytes, i.value_bytes, i.cache_name or default) for i in self.items]
        files = [(f.path, f.gzip, f.cache_name or default) for f in self.files]
        return (list(self.caches), self.no_expire, self.expire_scan_interval, self.report_freed, items, files)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Caching):
            return NotImplemented
        return self._content() == other._content()

    __hash__ = None  # type: ignore[assignment]  # mutable: not usable as a dict key

    def __repr__(self) -> str:
        caches = ", ".join(f"{c.name}(max_items={c.max_items})" for c in self.caches)
        return (f"Caching(namespace={self.namespace!r}, caches=[{caches}], no_expire={self.no_expire}, "
                f"expire_scan_interval={self.expire_scan_interval}, report_freed={self.report_freed}, "
                f"items={len(self.items)}, files={len(self.files)})")
