"""Django cache backend on a uwcache shared-memory cache, for any server (gunicorn, uvicorn,
runserver, Celery workers): every process of the machine sees one cache.

::

    CACHES = {
        "default": {
            "BACKEND": "uwcache.contrib.django.UWCache",
            "LOCATION": "django",                 # the cache name
            "TIMEOUT": 300,
            "OPTIONS": {"max_items": 10000, "block_size": 4096, "full_purge_lru": True},
        }
    }

``OPTIONS`` takes every ``add_cache`` option (lower or upper case) plus ``NAMESPACE``
(default ``$UWCACHE_NAMESPACE``, else ``"default"``), ``SERIALIZER`` (``"pickle"``,
``"json"``, ``"raw"`` or a dotted path) and Django's ``MAX_ENTRIES`` (an alias of
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
from typing import Any, Dict, Iterable, List, Optional

from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache, InvalidCacheKey
from django.core.exceptions import ImproperlyConfigured

from ..cache import Cache
from ..config import CacheOptions
from ..errors import CacheFull, ConfigError, ValueTooLarge
from ..memoize import LazyCache
from ..serializers import Codec, add_to_counter, engine_expires

__all__ = ["UWCache"]

log = logging.getLogger("uwcache.contrib.django")

_CACHE_OPTION_NAMES = frozenset(f.name for f in dataclasses.fields(CacheOptions)) - {"name"}


class UWCache(BaseCache):
    """``django.core.cache`` backend storing into a named uwcache cache (``LOCATION``)."""

    def __init__(self, location: str, params: Dict[str, Any]) -> None:
        super().__init__(params)
        name = location or "default"
        options = dict(params.get("OPTIONS") or {})
        extra = {k.lower(): options.pop(k) for k in list(options) if k.upper() in ("NAMESPACE", "SERIALIZER")}
        max_entries = options.pop("MAX_ENTRIES", None)
        options.pop("CULL_FREQUENCY", None)
        cache_options = {k.lower(): v for k, v in options.items()}
        if max_entries is not None:
            cache_options.setdefault("max_items", int(max_entries))
        unknown = sorted(set(cache_options) - _CACHE_OPTION_NAMES)
        owner = f"Django cache backend uwcache.contrib.django.UWCache (LOCATION={name!r})"
        if unknown:
            raise ImproperlyConfigured(
                f"{owner}: unknown OPTIONS {unknown}; accepted: NAMESPACE, SERIALIZER, MAX_ENTRIES, "
                f"CULL_FREQUENCY and the add_cache options {sorted(_CACHE_OPTION_NAMES)}"
            )
        try:
            self._cache = LazyCache(name, namespace=extra.get("namespace"), owner=owner, **cache_options)
            self._codec = Codec(extra.get("serializer", "pickle"))
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
            log.warning("uwcache: value for %r not cached: %s", key, exc)
            return False

    def _decode(self, raw: Optional[bytes], default: Any) -> Any:
        return default if raw is None else self._codec.decode(raw)

    # -- Django's cache API ----------------------------------------------------------------

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
            log.warning("uwcache: value for %r not added: %s", k, exc)
            return False

    def get(self, key: Any, default: Any = None, version: Optional[int] = None) -> Any:
        return self._decode(self.cache.get(self._key(key, version)), default)

    def set(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Optional[int] = None) -> None:
        k = self._key(key, version)
        data = self._codec.encode(value)
        expires = self._expires(timeout)
        if expires is None:
            self.cache.delete(k)
        else:
            self._write(self.cache, k, data, expires)

    def touch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: Optional[int] = None) -> bool:
        # The engine has no "set expiry only": read and rewrite the stored bytes. A write by
        # another process between the two steps is overwritten by the older value.
        k = self._key(key, version)
        cache = self.cache
        expires = self._expires(timeout)
        if expires is None:
            return cache.delete(k)
        raw = cache.get(k)
        if raw is None:
            return False
        return self._write(cache, k, raw, expires)

    def delete(self, key: Any, version: Optional[int] = None) -> bool:
        return self.cache.delete(self._key(key, version))

    def has_key(self, key: Any, version: Optional[int] = None) -> bool:
        return self._key(key, version) in self.cache

    def incr(self, key: Any, delta: int = 1, version: Optional[int] = None) -> Any:
        k = self._key(key, version)
        return add_to_counter(
            self.cache, k, delta, self._codec, create=False, missing=lambda: ValueError(f"Key '{k}' not found")
        )

    def decr(self, key: Any, delta: int = 1, version: Optional[int] = None) -> Any:
        return self.incr(key, -delta, version=version)

    def get_many(self, keys: Iterable[Any], version: Optional[int] = None) -> Dict[Any, Any]:
        made = {self._key(key, version): key for key in keys}
        return {made[k]: self._codec.decode(raw) for k, raw in self.cache.get_many(made).items()}

    def set_many(self, data: Dict[Any, Any], timeout: Any = DEFAULT_TIMEOUT, version: Optional[int] = None) -> List[Any]:
        cache = self.cache
        expires = self._expires(timeout)
        made = {self._key(key, version): (key, self._codec.encode(value)) for key, value in data.items()}
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
            log.warning("uwcache: %d values not cached, cache %r is full", len(full), self._cache.name)
        return [made[k][0] for k in full]

    def delete_many(self, keys: Iterable[Any], version: Optional[int] = None) -> None:
        self.cache.delete_many([self._key(key, version) for key in keys])

    def clear(self) -> None:
        """Empty the whole named cache (every KEY_PREFIX and version sharing the LOCATION)."""
        self.cache.clear()

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
