"""A ``cachelib`` cache on a uwcache shared-memory cache (the base of the Flask-Caching backend).

::

    from uwcache.contrib.cachelib import UWCache

    cache = UWCache("pages", default_timeout=300, key_prefix="app:", max_items=10000, block_size=4096)
    cache.set("home", html)
    cache.inc("hits")                 # atomic across every process

Constructor: ``UWCache(name="default", default_timeout=300, key_prefix=None, namespace=None,
serializer="pickle", ignore_delete_many_errors=True, **add_cache_options)``. The cache is
opened in each process on first use (create it before forking freely). Semantics are
cachelib's: timeout ``None`` = the default, ``0`` = never expires, negative = already
expired; ``set``/``add`` return False when the value cannot be stored (too large for an
item, cache full) instead of raising; ``get`` returns None for a missing or unreadable value;
``inc``/``dec`` create a missing key and are atomic for integer values; ``clear`` empties the
whole cache, or with a ``key_prefix`` only the keys under it.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any, Callable, Dict, List, Optional, Union

from cachelib.base import BaseCache

from ..cache import Cache
from ..errors import CacheFull, KeyTooLong, ValueTooLarge
from ..memoize import LazyCache
from ..serializers import Codec, add_to_counter, engine_expires

__all__ = ["UWCache"]

log = logging.getLogger("uwcache.contrib.cachelib")

Timeout = Union[int, float, dt.timedelta, None]


class UWCache(BaseCache):
    """cachelib ``BaseCache`` storing into the named uwcache cache ``name``."""

    def __init__(
        self,
        name: str = "default",
        default_timeout: Union[int, dt.timedelta] = 300,
        key_prefix: Union[str, Callable[[], str], None] = None,
        namespace: Optional[str] = None,
        serializer: Any = None,
        ignore_delete_many_errors: bool = True,
        **cache_options: Any,
    ) -> None:
        BaseCache.__init__(self, default_timeout=default_timeout)
        if isinstance(self.default_timeout, dt.timedelta):  # cachelib < 0.17 keeps it as given
            self.default_timeout = int(self.default_timeout.total_seconds())
        self.ignore_delete_many_errors = ignore_delete_many_errors
        self.key_prefix = key_prefix or ""
        owner = f"{type(self).__module__}.{type(self).__qualname__}(name={name!r})"
        self._lazy = LazyCache(name, namespace=namespace, owner=owner, **cache_options)
        if serializer is None:
            # a subclass may name its serializer as a class attribute, as cachelib's caches do
            declared = next(k.__dict__["serializer"] for k in type(self).__mro__ if "serializer" in k.__dict__)
            serializer = "pickle" if isinstance(declared, property) else declared
        self._codec = Codec(serializer)

    # Flask-Caching assigns ``cache.serializer`` when CACHE_SERIALIZER is set.
    @property
    def serializer(self) -> Any:
        return self._codec.serializer

    @serializer.setter
    def serializer(self, value: Any) -> None:
        self._codec = Codec(value)

    @property
    def cache(self) -> Cache:
        """This process's :class:`uwcache.Cache` (opened on first use)."""
        return self._lazy.get()

    def _key(self, key: Union[str, Callable[[], str]]) -> str:
        if callable(key):
            key = key()
        prefix = self.key_prefix() if callable(self.key_prefix) else self.key_prefix
        return f"{prefix}{key}"

    def _expires(self, timeout: Timeout) -> Optional[int]:
        """Engine expires for a cachelib timeout; None when the value is expired at once."""
        seconds = self._normalize_timeout(timeout)  # type: ignore[arg-type]
        if seconds == 0:
            return 0
        if seconds < 0:
            return None
        return engine_expires(seconds)

    def _decode(self, raw: Optional[bytes]) -> Any:
        if raw is None:
            return None
        try:
            return self._codec.decode(raw)
        except Exception as exc:  # cachelib: "the value if it exists and is readable, else None"
            log.warning("uwcache: unreadable cached value ignored: %s", exc)
            return None

    # -- cachelib's API ---------------------------------------------------------------------

    def get(self, key: str) -> Any:
        try:
            return self._decode(self.cache.get(self._key(key)))
        except KeyTooLong:
            return None

    def get_many(self, *keys: str) -> List[Any]:
        made = [self._key(key) for key in keys]
        try:
            found = self.cache.get_many(made)
        except KeyTooLong:  # such a key cannot be cached: it reads as None, the others normally
            return [self.get(key) for key in keys]
        return [self._decode(found.get(k)) for k in made]

    def get_dict(self, *keys: str) -> Dict[str, Any]:
        return dict(zip(keys, self.get_many(*keys)))

    def set(self, key: str, value: Any, timeout: Timeout = None) -> bool:
        data = self._codec.encode(value)  # pickling errors raise, as cachelib documents
        k = self._key(key)
        expires = self._expires(timeout)
        cache = self.cache
        try:
            if expires is None:
                cache.delete(k)
                return True
            cache.set(k, data, expires)
            return True
        except (ValueTooLarge, CacheFull, KeyTooLong) as exc:
            if not isinstance(exc, KeyTooLong):
                cache.delete(k)  # never leave a stale value behind a failed set
            log.warning("uwcache: value for %r not cached: %s", k, exc)
            return False

    def add(self, key: str, value: Any, timeout: Timeout = None) -> bool:
        data = self._codec.encode(value)
        k = self._key(key)
        expires = self._expires(timeout)
        cache = self.cache
        try:
            if expires is None:
                return k not in cache
            return cache.add(k, data, expires)
        except (ValueTooLarge, CacheFull, KeyTooLong) as exc:
            log.warning("uwcache: value for %r not added: %s", k, exc)
            return False

    def set_many(self, mapping: Dict[str, Any], timeout: Timeout = None) -> List[Any]:
        expires = self._expires(timeout)
        made = {self._key(key): (key, self._codec.encode(value)) for key, value in mapping.items()}
        cache = self.cache
        try:
            if expires is None:
                cache.delete_many(made)
                return list(mapping)
            full = cache.set_many({k: encoded for k, (_, encoded) in made.items()}, expires)
        except (ValueTooLarge, CacheFull, KeyTooLong):
            # one bad entry raises for the whole batch before anything is written: store one
            # by one so that only that key fails
            return [key for key, value in mapping.items() if self.set(key, value, timeout)]
        if full:
            cache.delete_many(full)  # never leave a stale value behind a failed set
            log.warning("uwcache: %d values not cached, the cache is full", len(full))
        failed = set(full)
        return [key for k, (key, _) in made.items() if k not in failed]

    def delete_many(self, *keys: str) -> List[Any]:
        made = [self._key(key) for key in keys]
        try:
            self.cache.delete_many(made)
        except KeyTooLong:  # such a key cannot be in the cache: delete the others one by one
            for key in keys:
                self.delete(key)
        return list(keys)  # every key is absent afterwards: all count as deleted (cachelib)

    def delete(self, key: str) -> bool:
        try:
            return self.cache.delete(self._key(key))
        except KeyTooLong:
            return False

    def has(self, key: str) -> bool:
        try:
            return self._key(key) in self.cache
        except KeyTooLong:
            return False

    def clear(self) -> bool:
        cache = self.cache
        prefix = self.key_prefix() if callable(self.key_prefix) else self.key_prefix
        if not prefix:
            cache.clear()
            return True
        start = prefix.encode()
        for k in cache.keys():
            if k.startswith(start):
                cache.delete(k)
        return True

    def inc(self, key: str, delta: int = 1) -> Any:
        return add_to_counter(self.cache, self._key(key), delta, self._codec, create=True, missing=KeyError)

    def dec(self, key: str, delta: int = 1) -> Any:
        return self.inc(key, -delta)
