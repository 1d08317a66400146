"""Django cache backend on a uwcache shared-memory cache, for any server (gunicorn, uvicorn,
runserver, Celery workers): every process of the machine sees one cache.

::

    CACHES = {
        "default": {
            "BACKEND": "uwcache.contrib.django.UWCache",
            "LOCATION": "django",                 # the cache name
            "TIMEOUT": 300,
            "OPTIONS": {"memory": "16MiB", "max_value": "1MiB", "full_purge_lru": True},
        }
    }

``OPTIONS`` takes every ``add_cache`` option (lower or upper case, including the budget form
``MEMORY``/``MAX_VALUE``; with no layout option the cache gets the one default layout of
:data:`uwcache.config.DEFAULT_GEOMETRY`) plus ``NAMESPACE``
(default ``$UWCACHE_NAMESPACE``, else ``"default"``), ``SERIALIZER`` (``"pickle"``,
``"json"``, ``"raw"``, a dotted path or a serializer object: a serializer that is not
uwcache's own gets every value), ``SECRET`` (the key that signs pickled values; default: the
cache's replication ``secret``, else the namespace's key file, see :mod:`uwcache.signing`),
``IGNORE_EXCEPTIONS`` (default True: a cache failure is logged at a limited rate and the call
behaves as on a miss; False raises, see :mod:`uwcache.failsafe`) and Django's
``MAX_ENTRIES`` (an alias of
``max_items`` when that is not given; ``CULL_FREQUENCY`` is ignored: enable
``full_purge_lru`` to evict instead of refusing writes when full).

Semantics are Django's (see docs/frameworks.md for the details and the few documented
differences): a failed write (value larger than an item, cache full) is not raised: like
Django's memcached backends, ``set`` deletes the old value and logs a warning, ``add``
returns False and ``set_many`` returns the key. A key longer than the cache's ``key_size``
raises ``InvalidCacheKey`` from every operation, as the memcached backends do for theirs.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, Dict, Iterable, List, Optional

# Django ships no type information (django-stubs is a separate, Django-version-pinned
# package); mypy treats these names as Any
from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache, InvalidCacheKey  # type: ignore[import-untyped]
from django.core.exceptions import ImproperlyConfigured  # type: ignore[import-untyped]

from ..cache import Cache
from ..options import BUDGET_OPTIONS, CacheOptions
from ..errors import CacheFull, ConfigError, ValueTooLarge
from ..failsafe import FailurePolicy, guarded
from ..lazy import LazyCache
from ..serializers import MISS, Codec, add_to_counter, engine_expires
from ..signing import ValueSigner

__all__ = ["UWCache", "NearCache"]

log = logging.getLogger("uwcache.contrib.django")

_CACHE_OPTION_NAMES = (frozenset(f.name for f in dataclasses.fields(CacheOptions)) - {"name", "budget"}
                       | frozenset(BUDGET_OPTIONS))
_BACKEND_OPTION_NAMES = ("NAMESPACE", "SERIALIZER", "SECRET", "IGNORE_EXCEPTIONS")


_guarded = guarded  # failsafe.guarded: a cache failure is a miss, or raises, per the policy


def _constant(value: Any) -> Callable[[tuple, dict], Any]:
    return lambda args, kwargs: value


def _default_argument(args: tuple, kwargs: dict) -> Any:
    return args[1] if len(args) > 1 else kwargs.get("default")


def _all_keys(args: tuple, kwargs: dict) -> List[Any]:
    return list(args[0] if args else kwargs.get("data", ()))


def _not_found(args: tuple, kwargs: dict) -> Any:
    raise ValueError(f"Key '{args[0] if args else kwargs.get('key')}' not found (the cache failed)")


class UWCache(BaseCache):
    """``django.core.cache`` backend storing into a named uwcache cache (``LOCATION``)."""

    def __init__(self, location: str, params: Dict[str, Any]) -> None:
        super().__init__(params)
        name = location or "default"
        options = dict(params.get("OPTIONS") or {})
        extra = {k.lower(): options.pop(k) for k in list(options) if k.upper() in _BACKEND_OPTION_NAMES}
        max_entries = options.pop("MAX_ENTRIES", None)
        options.pop("CULL_FREQUENCY", None)
        cache_options = {k.lower(): v for k, v in options.items()}
        if max_entries is not None:
            cache_options.setdefault("max_items", int(max_entries))
        unknown = sorted(set(cache_options) - _CACHE_OPTION_NAMES)
        owner = f"Django cache backend uwcache.contrib.django.UWCache (LOCATION={name!r})"
        if unknown:
            raise ImproperlyConfigured(
                f"{owner}: unknown OPTIONS {unknown}; accepted: {', '.join(_BACKEND_OPTION_NAMES)}, MAX_ENTRIES, "
                f"CULL_FREQUENCY and the add_cache options {sorted(_CACHE_OPTION_NAMES)}"
            )
        try:
            self._cache = LazyCache(name, namespace=extra.get("namespace"), owner=owner, **cache_options)
            secret = extra.get("secret")
            signer = ValueSigner(self._cache.namespace, secret if secret is not None else self._cache.options.secret)
            self.serializer = extra.get("serializer", "pickle")  #: as configured
            self._codec = Codec(self.serializer, signer=signer, owner=owner)
            self.failure_policy = FailurePolicy(owner, log, extra.get("ignore_exceptions", True))
        except (ConfigError, ValueError, TypeError, ImportError) as exc:
            raise ImproperlyConfigured(f"{owner}: {exc}") from exc
        self._key_bytes_limit = self._cache.options.key_size

    # -- plumbing ---------------------------------------------------------------------------

    @property
    def cache(self) -> Cache:
        """This process's :class:`uwcache.Cache` (opened on first use)."""
        return self._cache.get()

    def _key(self, key: Any, version: Optional[int]) -> str:
        k = self.make_and_validate_key(key, version=version)
        # a str of n characters has at most 4n UTF-8 bytes: encode only when it may not fit
        if len(k) * 4 > self._key_bytes_limit and len(k.encode("utf-8", "surrogatepass")) > self._key_bytes_limit:
            raise InvalidCacheKey(
                f"Cache key is longer than the {self._key_bytes_limit} bytes allowed by key_size of "
                f"uwcache cache {self._cache.name!r}: {k!r}"
            )
        return k

    def _expires(self, timeout: Any) -> Optional[int]:
        """The engine's expires for a Django timeout; None when the value must not be kept."""
        if timeout is DEFAULT_TIMEOUT:
            timeout = self.default_timeout
        if timeout is None:
            return 0
        if timeout <= 0:
            return None
        return engine_expires(timeout)

    def _write(self, cache: Cache, key: str, data: bytes, expires: int) -> bool:
        try:
            cache.set(key, data, expires)
            return True
        except (ValueTooLarge, CacheFull) as exc:
            # memcached semantics: never leave the previous value behind a failed set
            cache.delete(key)
            self.failure_policy.warn(type(exc).__name__, "uwcache: value for %r not cached: %s", key, exc)
            return False

    def _decode(self, raw: Optional[bytes], default: Any) -> Any:
        if raw is None:
            return default
        value = self._codec.decode(raw)
        return default if value is MISS else value

    @property
    def rejected_values(self) -> int:
        """Values this backend refused (in this process) because their signature did not verify."""
        return self._codec.rejected

    # -- Django's cache API ----------------------------------------------------------------

    @_guarded(_constant(False))
    def add(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Optional[int] = None) -> bool:
        k = self._key(key, version)
        data = self._codec.encode(value)
        expires = self._expires(timeout)
        cache = self.cache
        if expires is None:  # stored and gone at once, as in Django: True unless the key exists
            return k not in cache
        try:
            return cache.add(k, data, expires)
        except (ValueTooLarge, CacheFull) as exc:
            self.failure_policy.warn(type(exc).__name__, "uwcache: value for %r not added: %s", k, exc)
            return False

    @_guarded(_default_argument)
    def get(self, key: Any, default: Any = None, version: Optional[int] = None) -> Any:
        k = self._key(key, version)  # an invalid key raises even when the cache fails
        return self._decode(self.cache.get(k), default)

    @_guarded(_constant(None))
    def set(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Optional[int] = None) -> None:
        k = self._key(key, version)
        data = self._codec.encode(value)
        expires = self._expires(timeout)
        if expires is None:
            self.cache.delete(k)
        else:
            self._write(self.cache, k, data, expires)

    @_guarded(_constant(False))
    def touch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: Optional[int] = None) -> bool:
        k = self._key(key, version)
        expires = self._expires(timeout)
        if expires is None:
            return self.cache.delete(k)
        return self.cache.touch(k, expires)  # one engine operation: the value is left alone

    @_guarded(_constant(False))
    def delete(self, key: Any, version: Optional[int] = None) -> bool:
        k = self._key(key, version)
        return self.cache.delete(k)

    @_guarded(_constant(False))
    def has_key(self, key: Any, version: Optional[int] = None) -> bool:
        raw = self.cache.get(self._key(key, version))
        return raw is not None and self._codec.readable(raw)  # a forged value is no value

    @_guarded(_constant(None))
    def incr(self, key: Any, delta: int = 1, version: Optional[int] = None) -> Any:
        k = self._key(key, version)
        return add_to_counter(
            self.cache, k, delta, self._codec, create=False, missing=lambda: ValueError(f"Key '{k}' not found")
        )

    def decr(self, key: Any, delta: int = 1, version: Optional[int] = None) -> Any:
        return self.incr(key, -delta, version=version)

    @_guarded(lambda args, kwargs: {})
    def get_many(self, keys: Iterable[Any], version: Optional[int] = None) -> Dict[Any, Any]:
        made = {self._key(key, version): key for key in keys}
        found: Dict[Any, Any] = {}
        for k, raw in self.cache.get_many(made).items():
            value = self._codec.decode(raw)
            if value is not MISS:  # a value whose signature does not verify is a miss
                found[made[k]] = value
        return found

    @_guarded(_all_keys)
    def set_many(self, data: Dict[Any, Any], timeout: Any = DEFAULT_TIMEOUT, version: Optional[int] = None) -> List[Any]:
        encoded_items = [(key, self._key(key, version), self._codec.encode(value)) for key, value in data.items()]
        cache = self.cache
        expires = self._expires(timeout)
        made = {k: (key, encoded) for key, k, encoded in encoded_items}
        if expires is None:
            cache.delete_many(made)
            return []
        try:
            full = cache.set_many({k: encoded for k, (_, encoded) in made.items()}, expires)
        except (ValueTooLarge, CacheFull):
            # a value too large raises for the whole batch before anything is written:
            # store one by one so that only that key fails
            return [key for k, (key, encoded) in made.items() if not self._write(cache, k, encoded, expires)]
        if full:
            cache.delete_many(full)  # never leave the previous value behind a failed set
            self.failure_policy.warn("CacheFull", "uwcache: %d values not cached, cache %r is full", len(full), self._cache.name)
        return [made[k][0] for k in full]

    @_guarded(_constant(None))
    def delete_many(self, keys: Iterable[Any], version: Optional[int] = None) -> None:
        self.cache.delete_many([self._key(key, version) for key in keys])

    @_guarded(_constant(None))
    def clear(self) -> None:
        """Empty the whole named cache (every KEY_PREFIX and version sharing the LOCATION)."""
        self.cache.clear()

    @_guarded(_not_found)
    def incr_version(self, key: Any, delta: int = 1, version: Optional[int] = None) -> int:
        # Moves the stored bytes as they are, keeping the remaining TTL (Django's default
        # re-sets the value with the default timeout).
        if version is None:
            version = self.version
        old = self._key(key, version)
        new = self._key(key, version + delta)
        cache = self.cache
        raw = cache.get(old)
        if raw is None:
            raise ValueError(f"Key '{old}' not found")
        try:
            ttl = cache.ttl(old) or 0
        except KeyError:
            ttl = 0
        self._write(cache, new, raw, ttl)
        cache.delete(old)
        return version + delta

    def close(self, **kwargs: Any) -> None:
        """Nothing to do: Django calls this after every request, and the shared mapping is
        kept for the life of the process (reopening it per request would only cost time)."""

    # -- async variants: these calls never block on I/O, so run them inline ---------------------
    # (BaseCache's defaults would hop to a thread for each call, which costs more than the call.)

    async def aadd(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Optional[int] = None) -> bool:
        return self.add(key, value, timeout, version)

    async def aget(self, key: Any, default: Any = None, version: Optional[int] = None) -> Any:
        return self.get(key, default, version)

    async def aset(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Optional[int] = None) -> None:
        self.set(key, value, timeout, version)

    async def atouch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: Optional[int] = None) -> bool:
        return self.touch(key, timeout, version)

    async def adelete(self, key: Any, version: Optional[int] = None) -> bool:
        return self.delete(key, version)

    async def aget_many(self, keys: Iterable[Any], version: Optional[int] = None) -> Dict[Any, Any]:
        return self.get_many(keys, version)

    async def aget_or_set(self, key: Any, default: Any, timeout: Any = DEFAULT_TIMEOUT,
                          version: Optional[int] = None) -> Any:
        return self.get_or_set(key, default, timeout, version)

    async def ahas_key(self, key: Any, version: Optional[int] = None) -> bool:
        return self.has_key(key, version)

    async def aincr(self, key: Any, delta: int = 1, version: Optional[int] = None) -> Any:
        return self.incr(key, delta, version)

    async def adecr(self, key: Any, delta: int = 1, version: Optional[int] = None) -> Any:
        return self.decr(key, delta, version)

    async def aset_many(self, data: Dict[Any, Any], timeout: Any = DEFAULT_TIMEOUT,
                        version: Optional[int] = None) -> List[Any]:
        return self.set_many(data, timeout, version)

    async def adelete_many(self, keys: Iterable[Any], version: Optional[int] = None) -> None:
        self.delete_many(keys, version)

    async def aclear(self) -> None:
        self.clear()

    async def aincr_version(self, key: Any, delta: int = 1, version: Optional[int] = None) -> int:
        return self.incr_version(key, delta, version)

    async def adecr_version(self, key: Any, delta: int = 1, version: Optional[int] = None) -> int:
        return self.decr_version(key, delta, version)

    async def aclose(self, **kwargs: Any) -> None:
        self.close(**kwargs)


# ==== near cache (issue 11): a django-redis-compatible backend with the host's L1 in front ====


def _django_redis_encode(value: Any) -> bytes:
    """django-redis's default format: integers as their digits (so INCR works), the rest pickled."""
    import pickle

    if isinstance(value, int) and not isinstance(value, bool):
        return str(value).encode()
    return pickle.dumps(value, pickle.HIGHEST_PROTOCOL)


def _django_redis_decode(raw: Optional[bytes]) -> Any:
    import pickle

    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        return pickle.loads(raw)


class NearCache(BaseCache):
    """Django backend on Redis with the host's uwcache L1 in front (issue 11, docs/near.md).

    ::

        CACHES = {"default": {
            "BACKEND": "uwcache.contrib.django.NearCache",
            "LOCATION": "redis://127.0.0.1:6379/0",           # the Redis the node's add_near names
            "OPTIONS": {"CACHE": "pages", "NAMESPACE": None},   # the near cache's uwcache cache
        }}

    Keys and values use django-redis's format (``:1:key``; integers as digits, other values
    pickled), so it drops in front of an existing django-redis deployment. The node that runs
    the listener must be started (``uwcache run --cache2 name=pages,...,near=redis://…``).
    """

    def __init__(self, location: str, params: Dict[str, Any]) -> None:
        super().__init__(params)
        options = {k.upper(): v for k, v in (params.get("OPTIONS") or {}).items()}
        unknown = sorted(set(options) - {"CACHE", "NAMESPACE"})
        self._owner = f"Django cache backend uwcache.contrib.django.NearCache (LOCATION={location!r})"
        if unknown:
            raise ImproperlyConfigured(f"{self._owner}: unknown OPTIONS {unknown}; accepted: CACHE, NAMESPACE")
        self._location = location
        self._cache_name = options.get("CACHE") or "default"
        self._namespace = options.get("NAMESPACE")
        self._handle: Any = None

    @property
    def near(self) -> Any:
        if self._handle is None:
            from ..near import near_for_backend

            try:
                self._handle = near_for_backend(self._cache_name, self._namespace, self._location, self._owner)
            except ConfigError as exc:
                raise ImproperlyConfigured(str(exc)) from exc
        return self._handle

    def _k(self, key: Any, version: Optional[int]) -> str:
        from ..near import unprefixed

        return unprefixed(self.near, self.make_and_validate_key(key, version=version), self._owner)

    def _ex(self, timeout: Any) -> Optional[int]:
        """Seconds for SET EX, None for no expiry, 0 for 'already expired'."""
        t = self.default_timeout if timeout is DEFAULT_TIMEOUT else timeout
        if t is None:
            return None
        return max(0, int(-(-t // 1)))  # whole seconds, rounded up; <= 0 means expire now

    def get(self, key: Any, default: Any = None, version: Optional[int] = None) -> Any:
        raw = self.near.get(self._k(key, version))
        return default if raw is None else _django_redis_decode(raw)

    def set(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Optional[int] = None) -> None:
        k, ex = self._k(key, version), self._ex(timeout)
        if ex == 0:
            self.near.delete(k)
            return
        self.near.set(k, _django_redis_encode(value), ex=ex)

    def add(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Optional[int] = None) -> bool:
        k, ex = self._k(key, version), self._ex(timeout)
        if ex == 0:
            return False
        near = self.near
        rkey = near.prefix + k.encode()
        done = near.redis.set(rkey, _django_redis_encode(value), ex=ex, nx=True)
        near.cache._near_invalidate([rkey])
        return bool(done)

    def touch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: Optional[int] = None) -> bool:
        near = self.near
        rkey = near.prefix + self._k(key, version).encode()
        ex = self._ex(timeout)
        done = near.redis.persist(rkey) if ex is None else near.redis.expire(rkey, ex)
        if ex is None:
            done = bool(done) or bool(near.redis.exists(rkey))
        near.cache._near_invalidate([rkey])
        return bool(done)

    def delete(self, key: Any, version: Optional[int] = None) -> bool:
        return bool(self.near.delete(self._k(key, version)))

    def has_key(self, key: Any, version: Optional[int] = None) -> bool:
        return self.near.get(self._k(key, version)) is not None

    def get_many(self, keys: Iterable[Any], version: Optional[int] = None) -> Dict[Any, Any]:
        mapping = {self._k(key, version): key for key in keys}
        found = self.near.get_many(list(mapping))
        return {mapping[k]: _django_redis_decode(v) for k, v in found.items()}

    def set_many(self, data: Dict[Any, Any], timeout: Any = DEFAULT_TIMEOUT,
                 version: Optional[int] = None) -> List[Any]:
        for key, value in data.items():
            self.set(key, value, timeout, version)
        return []

    def delete_many(self, keys: Iterable[Any], version: Optional[int] = None) -> None:
        near = self.near
        rkeys = [near.prefix + self._k(key, version).encode() for key in keys]
        if rkeys:
            near.redis.delete(*rkeys)
            near.cache._near_invalidate(rkeys)

    def incr(self, key: Any, delta: int = 1, version: Optional[int] = None) -> int:
        near = self.near
        k = self._k(key, version)
        if not near.redis.exists(near.prefix + k.encode()):
            raise ValueError(f"Key '{key}' not found")
        return int(near.incr(k, delta))

    def decr(self, key: Any, delta: int = 1, version: Optional[int] = None) -> int:
        return self.incr(key, -delta, version)

    def clear(self) -> None:
        from ..near import delete_prefixed

        near = self.near
        base, prefix = f"{self.key_prefix}:", near.options.prefix  # Django keys: "<KEY_PREFIX>:<version>:<key>"
        delete_prefixed(near, prefix if prefix.startswith(base) else base)

    def close(self, **kwargs: Any) -> None:
        pass
