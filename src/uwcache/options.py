"""The options of one cache, checked: :class:`CacheOptions`, the preloads, the near tier's
options, the cache2 keys, the default geometry and the budget form, and the namespace.

Every check names the option it refuses and, where uWSGI would have accepted the value and
then misbehaved, says so (see :mod:`uwcache.config`). This module sits below everything that
opens a cache: ``uwcache.attach`` needs it, and it needs only the engine's constants, the
address parser and the errors. The cache2 and ini syntaxes are :mod:`uwcache.uwsgi_config`;
``Caching``, which gathers caches into one configuration, is :mod:`uwcache.config`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple, Union

from . import _engine
from .address import parse_address
from .errors import ConfigError

__all__ = [
    "CacheOptions",
    "PreloadItem",
    "PreloadFile",
    "NearOptions",
    "RedisEndpoint",
    "parse_redis_url",
    "resolve_namespace",
    "cache_options",
    "parse_size",
    "NAMESPACE_ENV",
    "DEFAULT_NAMESPACE",
    "MAX_MEMORY_BYTES",
    "CACHE2_KEYS",
    "HASH_ALGOS",
    "DEFAULT_GEOMETRY",
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

StrOrBytes = Union[str, bytes]


# --------------------------------------------------------------------------------------------
# The namespace
# --------------------------------------------------------------------------------------------


def resolve_namespace(namespace: Optional[str] = None) -> str:
    """The namespace to use: ``namespace`` if given, else ``$UWCACHE_NAMESPACE``, else
    ``"default"``; ConfigError unless it is 1..64 characters of ``A-Z a-z 0-9 . _ -`` not
    starting with ``.`` (it becomes part of shared-memory file names)."""
    source = "namespace"
    if namespace is None:
        namespace = os.environ.get(NAMESPACE_ENV) or DEFAULT_NAMESPACE
        source = f"namespace (from ${NAMESPACE_ENV})" if os.environ.get(NAMESPACE_ENV) else source
    if not isinstance(namespace, str) or not _NAMESPACE_RE.fullmatch(namespace):
        raise ConfigError(
            f"{source} must be 1..64 characters of A-Z a-z 0-9 . _ - not starting with '.', got "
            f"{namespace!r} (it becomes part of shared-memory file names)")
    return namespace



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
    """1536 -> '1.5 KiB', 4096 -> '4 KiB', 100 -> '100 bytes' (one decimal, a trailing '.0'
    dropped). The one size formatter: options' messages and sizing, and the cache's, the
    node's and the CLI's."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            text = f"{size:.1f}".rstrip("0").rstrip(".") if unit != "bytes" else str(int(size))
            return f"{text} {unit}"
        size /= 1024
    return str(size)  # pragma: no cover


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
# The near tier (uwcache.near): which Redis, which prefix, which bounds
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RedisEndpoint:
    host: str = "127.0.0.1"
    port: int = 6379
    unix_path: Optional[str] = None
    db: int = 0
    username: Optional[str] = None
    password: Optional[str] = None
    tls: bool = False
    tls_verify: bool = True

    def describe(self) -> str:
        return f"unix:{self.unix_path}" if self.unix_path else f"{self.host}:{self.port}"


def parse_redis_url(url: str) -> RedisEndpoint:
    """``redis://[user:pass@]host[:port][/db]``, ``rediss://…`` (TLS), ``unix:///path[?db=N]``."""
    if not isinstance(url, str) or not url:
        raise ConfigError(f"near redis must be a redis://, rediss:// or unix:// URL, got {url!r}")
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qs(parts.query)
    user = urllib.parse.unquote(parts.username) if parts.username else None
    password = urllib.parse.unquote(parts.password) if parts.password is not None else None
    try:
        if parts.scheme == "unix":
            if not parts.path:
                raise ConfigError(f"near redis URL {url!r} has no socket path")
            db = int(query.get("db", ["0"])[0])
            return RedisEndpoint(unix_path=parts.path, db=db, username=user, password=password)
        if parts.scheme not in ("redis", "rediss"):
            raise ConfigError(f"near redis URL {url!r}: scheme must be redis, rediss or unix")
        db_text = parts.path.strip("/") or query.get("db", ["0"])[0]
        verify = query.get("ssl_cert_reqs", ["required"])[0].lower() != "none"
        return RedisEndpoint(host=parts.hostname or "127.0.0.1", port=parts.port or 6379, db=int(db_text),
                             username=user, password=password, tls=parts.scheme == "rediss", tls_verify=verify)
    except ValueError as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"near redis URL {url!r} is invalid: {exc}") from None



@dataclasses.dataclass(frozen=True)
class NearOptions:
    """One near tier: which cache is the L1, which Redis is the truth, and its bounds."""

    name: str
    redis: str
    prefix: str = ""
    max_ttl: int = 300
    lease_ms: int = 300
    resp: str = "auto"   # "auto" (RESP3, else the RESP2 fallback), "3" or "2"

    def __post_init__(self) -> None:
        if isinstance(self.redis, (list, tuple)):  # cluster seeds: kept as one comma-separated str
            object.__setattr__(self, "redis", ",".join(str(u) for u in self.redis))
        if not isinstance(self.redis, str):
            raise ConfigError(f"near redis must be a URL or a list of cluster seed URLs, got {self.redis!r}")
        for url in self.redis.split(","):
            parse_redis_url(url.strip())
        if not isinstance(self.prefix, str):
            raise ConfigError(f"near prefix must be a str, got {self.prefix!r}")
        for field, low in (("max_ttl", 1), ("lease_ms", 10)):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < low or value > 2**31 - 1:
                raise ConfigError(f"near {field} must be an int >= {low}, got {value!r}")
        if self.resp not in ("auto", "2", "3"):
            raise ConfigError(f"near resp must be 'auto', '2' or '3', got {self.resp!r}")

    @property
    def cluster(self) -> bool:
        """A list of seeds (or a comma-separated string of them) means Redis Cluster."""
        return "," in self.redis

    @property
    def seeds(self) -> List[RedisEndpoint]:
        return [parse_redis_url(u.strip()) for u in self.redis.split(",")]

    @property
    def endpoint(self) -> RedisEndpoint:
        return self.seeds[0]

    @property
    def prefix_bytes(self) -> bytes:
        return self.prefix.encode("utf-8")
