"""``memoize``: cache a function's results in a shared-memory cache, for every process at once.

::

    from uwcache.memoize import memoize

    @memoize("results", expires=60)          # a cache name, or a Cache / LazyCache
    def price(product_id: int, currency: str = "EUR") -> Decimal: ...

    price(7)                                 # computed, then stored for 60 s
    price(7, "EUR")                          # the same entry (arguments are bound first)
    price.invalidate(7)                      # forget that one call
    price.invalidate_all()                   # forget every call of price

The key rule: the call's arguments are bound to the function's signature (defaults filled in,
so ``f(1)``, ``f(1, "EUR")`` and ``f(x=1)`` are one call), then encoded canonically and hashed
(BLAKE2b, 128 bits) under a prefix naming the function (``memoize:<module>.<qualname>``).
Arguments may be None, bool, int, float, complex, str, bytes, tuple, list, dict, set,
frozenset, and datetime/date/time/timedelta, Decimal, UUID, Enum, nested freely. Values of
different types never share an entry (``1``, ``1.0`` and ``True`` are three calls). Anything
else raises TypeError at call time, because the usual fallbacks (``repr``, ``hash``, pickle)
differ between processes or runs and would silently miss: pass ``ignore=("self",)`` to leave
an argument out, or ``key=`` to build the key yourself.

Results are stored with a :class:`~uwcache.serializers.Codec` (pickle by default, signed:
see :mod:`uwcache.signing`; a result whose signature does not verify is a miss); ``None``
results are cached too. Concurrent misses each compute the value (no lock across processes);
the last one stored wins.

A cache given by name is attached if it exists (whatever its options: open it first with
:func:`uwcache.open_cache` or a :class:`~uwcache.Node` to choose them), and created with
``open_cache``'s defaults otherwise. A cache failure (closed, full, mismatched region...) never
fails the call: the function is called and its result returned, the failure logged at a
limited rate; ``ignore_exceptions=False`` raises instead.

This module also holds :class:`LazyCache`, the per-process handle the framework backends use.
"""

from __future__ import annotations

import datetime
import decimal
import enum
import functools
import hashlib
import inspect
import logging
import struct
import uuid
from typing import Any, Callable, Iterable, Optional, Tuple, TypeVar, Union

from .cache import Cache
from .options import resolve_namespace
from .errors import CacheFull, ConfigError, ValueTooLarge
from .failsafe import FAILURES, FailurePolicy
from .lazy import LazyCache
from .serializers import MISS, Codec, engine_expires
from .signing import ValueSigner

__all__ = ["memoize", "LazyCache", "make_key"]

log = logging.getLogger("uwcache.memoize")

F = TypeVar("F", bound=Callable[..., Any])

CacheLike = Union[Cache, LazyCache, str]


def _resolver(cache: CacheLike, namespace: Optional[str]) -> Callable[[], Cache]:
    if isinstance(cache, str):
        return LazyCache(cache, namespace=namespace, owner=f"memoize cache {cache!r}", attach_existing=True).get
    if isinstance(cache, LazyCache):
        return cache.get
    if isinstance(cache, Cache):
        return lambda: cache
    raise TypeError(f"memoize needs a uwcache.Cache, a LazyCache or a cache name, got {type(cache).__name__}")


def _signing_source(cache: CacheLike, namespace: Optional[str]) -> Tuple[str, Optional[str]]:
    """The namespace whose key file signs results, and the replication secret if one is known."""
    if isinstance(cache, Cache):
        return cache.namespace, cache.options.secret
    if isinstance(cache, LazyCache):
        return cache.namespace, cache.options.secret
    return resolve_namespace(namespace), None


# -------------------------------------------------------------------------------------------
# The argument encoding
# -------------------------------------------------------------------------------------------


def _encode(value: Any, out: bytearray, path: str) -> None:
    """Append a canonical, type-tagged encoding of ``value`` (same bytes in every process)."""
    kind = type(value)
    if value is None:
        out += b"N"
    elif kind is bool:
        out += b"T" if value else b"F"
    elif kind is int:
        _chunk(out, b"i", str(value).encode())
    elif kind is float:
        _chunk(out, b"f", repr(value).encode())
    elif kind is complex:
        _chunk(out, b"c", repr(value).encode())
    elif kind is str:
        _chunk(out, b"s", value.encode("utf-8", "surrogatepass"))
    elif kind is bytes or kind is bytearray:
        _chunk(out, b"b" if kind is bytes else b"B", bytes(value))
    elif kind is tuple or kind is list:
        out += b"(" if kind is tuple else b"["
        out += struct.pack("<Q", len(value))
        for i, item in enumerate(value):
            _encode(item, out, f"{path}[{i}]")
    elif kind is dict:
        items = []
        for k, v in value.items():
            kb = bytearray()
            _encode(k, kb, f"{path} key")
            vb = bytearray()
            _encode(v, vb, f"{path}[{k!r}]")
            items.append((bytes(kb), bytes(vb)))
        out += b"{" + struct.pack("<Q", len(items))
        for key_bytes, value_bytes in sorted(items):
            out += key_bytes + value_bytes
    elif kind is set or kind is frozenset:
        members = []
        for item in value:
            ib = bytearray()
            _encode(item, ib, f"{path} member")
            members.append(bytes(ib))
        out += (b"<" if kind is set else b">") + struct.pack("<Q", len(members))
        for member in sorted(members):
            out += member
    elif isinstance(value, enum.Enum):
        _chunk(out, b"e", f"{kind.__module__}.{kind.__qualname__}".encode())
        _encode(value.value, out, f"{path}.value")
    elif kind in (datetime.datetime, datetime.date, datetime.time):
        _chunk(out, b"d", f"{kind.__name__}:{value.isoformat()}".encode())
    elif kind is datetime.timedelta:
        _chunk(out, b"t", f"{value.days}:{value.seconds}:{value.microseconds}".encode())
    elif kind is decimal.Decimal:
        _chunk(out, b"D", str(value).encode())
    elif kind is uuid.UUID:
        _chunk(out, b"u", value.bytes)
    else:
        raise TypeError(
            f"memoize cannot build a stable key from {path} of type {kind.__module__}.{kind.__qualname__}: "
            "use ignore=(...) to leave that argument out, or key=... to build the key yourself"
        )


def _chunk(out: bytearray, tag: bytes, data: bytes) -> None:
    out += tag + struct.pack("<Q", len(data)) + data


def make_key(prefix: str, bound: inspect.BoundArguments, ignore: Iterable[str] = ()) -> str:
    """The cache key of one call, by the rule in the module docstring."""
    out = bytearray()
    skip = set(ignore)
    for name, value in bound.arguments.items():
        if name in skip:
            continue
        _chunk(out, b"a", name.encode())
        _encode(value, out, f"argument {name!r}")
    return f"{prefix}:{hashlib.blake2b(bytes(out), digest_size=16).hexdigest()}"


# -------------------------------------------------------------------------------------------
# The decorator
# -------------------------------------------------------------------------------------------

def memoize(
    cache: CacheLike,
    expires: float = 0,
    key: Optional[Callable[..., Union[str, bytes]]] = None,
    *,
    prefix: Optional[str] = None,
    ignore: Iterable[str] = (),
    serializer: Any = "pickle",
    namespace: Optional[str] = None,
    secret: Union[str, bytes, None] = None,
    ignore_exceptions: bool = True,
) -> Callable[[F], F]:
    """Cache the results of a plain or ``async`` function in a shared cache.

    :param cache: a :class:`~uwcache.Cache`, a :class:`LazyCache`, or the name of a cache
        opened lazily in each process with :func:`uwcache.open_cache`'s defaults.
    :param expires: seconds a result is kept (int or float, rounded up); 0 = until evicted.
    :param key: ``key(*args, **kwargs) -> str | bytes`` replacing the argument hashing; its
        result goes after the prefix as is (so it must fit the cache's ``key_size``).
    :param prefix: the key prefix (default ``memoize:<module>.<qualname>``); two functions
        with the same prefix share entries.
    :param ignore: names of arguments left out of the key (``("self",)`` for methods).
    :param serializer: ``"pickle"`` (default), ``"json"``, ``"raw"`` or a serializer object.
    :param secret: the key that signs pickled results (default: the replication ``secret`` of
        a given Cache/LazyCache, else the namespace's key file; see :mod:`uwcache.signing`).
    :param ignore_exceptions: True (default): a cache failure is logged at a limited rate and
        the call goes on as on a miss; False: it raises.

    The wrapper gains ``cache_key(*args, **kwargs)``, ``invalidate(*args, **kwargs) -> bool``
    (forget one call, in every process) and ``invalidate_all() -> int`` (forget every call of
    this function; scans the cache's keys). A result that cannot be stored (too large, cache
    full) is returned anyway and logged.
    """
    if isinstance(expires, bool) or not isinstance(expires, (int, float)) or expires < 0:
        raise ConfigError(f"memoize expires must be a number of seconds >= 0 (0 = never), got {expires!r}")
    get_cache = _resolver(cache, namespace)
    ns, replication_secret = _signing_source(cache, namespace)
    owner = f"memoize cache {cache if isinstance(cache, str) else getattr(cache, 'name', '?')!r}"
    signer = ValueSigner(ns, secret if secret is not None else replication_secret)
    codec = Codec(serializer, signer=signer, owner=owner)
    policy = FailurePolicy(owner, log, ignore_exceptions)
    ignored = tuple(ignore)

    def decorate(fn: F) -> F:
        signature = inspect.signature(fn)
        unknown = [name for name in ignored if name not in signature.parameters]
        if unknown:
            raise ConfigError(f"memoize ignore= names no parameter of {fn.__qualname__}: {unknown}")
        key_prefix = prefix if prefix is not None else f"memoize:{fn.__module__}.{fn.__qualname__}"

        def cache_key(*args: Any, **kwargs: Any) -> Union[str, bytes]:
            if key is not None:
                custom = key(*args, **kwargs)
                if isinstance(custom, bytes):
                    return key_prefix.encode() + b":" + custom
                return f"{key_prefix}:{custom}"
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            return make_key(key_prefix, bound, ignored)

        def lookup(k: Union[str, bytes]) -> Tuple[Optional[Cache], Any]:
            try:
                c = get_cache()
                raw = c.get(k)
            except FAILURES as exc:
                policy.handle("get", exc)
                return None, MISS
            if raw is None:
                return c, MISS
            try:
                return c, codec.decode(raw)  # MISS when its signature does not verify
            except FAILURES as exc:
                policy.handle("get", exc)
                return c, MISS
            except Exception as exc:  # a damaged or foreign entry is a miss, not an outage
                log.warning("memoize %s: ignoring an unreadable cached result (%s)", key_prefix, exc)
                return c, MISS

        def store(c: Optional[Cache], k: Union[str, bytes], value: Any) -> None:
            if c is None:  # the cache failed on lookup: do not try again for this call
                return
            try:
                data = codec.encode(value)
            except Exception as exc:  # unpicklable/unencodable results: still return them
                log.warning("memoize %s: result of type %s not cached: %s", key_prefix, type(value).__name__, exc)
                return
            try:
                c.set(k, data, engine_expires(expires) if expires else 0)
            except (ValueTooLarge, CacheFull) as exc:
                policy.warn(type(exc).__name__, "memoize %s: result not cached: %s", key_prefix, exc)
            except FAILURES as exc:
                policy.handle("set", exc)

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                k = cache_key(*args, **kwargs)
                c, value = lookup(k)
                if value is MISS:  # a hit returns without awaiting (or calling) fn
                    value = await fn(*args, **kwargs)
                    store(c, k, value)
                return value

            wrapper: Any = async_wrapper
        else:

            @functools.wraps(fn)
            def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
                k = cache_key(*args, **kwargs)
                c, value = lookup(k)
                if value is MISS:
                    value = fn(*args, **kwargs)
                    store(c, k, value)
                return value

            wrapper = sync_wrapper

        def invalidate(*args: Any, **kwargs: Any) -> bool:
            """Forget the cached result of this call (in every process); True if there was one."""
            k = cache_key(*args, **kwargs)
            try:
                return get_cache().delete(k)
            except FAILURES as exc:
                policy.handle("delete", exc)
                return False

        def invalidate_all() -> int:
            """Forget every cached result of this function; returns how many were dropped."""
            start = key_prefix.encode() + b":"
            try:
                c = get_cache()
                return sum(1 for k in c.keys() if k.startswith(start) and c.delete(k))
            except FAILURES as exc:
                policy.handle("invalidate_all", exc)
                return 0

        wrapper.cache_key = cache_key
        wrapper.invalidate = invalidate
        wrapper.invalidate_all = invalidate_all
        wrapper.cache_prefix = key_prefix
        wrapper.codec = codec  # codec.rejected: results refused because their signature did not verify
        wrapper.failure_policy = policy
        return wrapper  # type: ignore[no-any-return]

    return decorate
