"""A ``cachelib`` cache on a uwcache shared-memory cache (the base of the Flask-Caching backend).

::

    from uwcache.contrib.cachelib import UWCache

    cache = UWCache("pages", default_timeout=300, key_prefix="app:", memory="16MiB", max_value="1MiB")
    cache.set("home", html)
    cache.inc("hits")                 # atomic across every process

Constructor: ``UWCache(name="default", default_timeout=300, key_prefix=None, namespace=None,
serializer=None, ignore_delete_many_errors=True, secret=None, ignore_exceptions=True,
**add_cache_options)``. The cache is opened in each process on first use (create it before
forking freely). Semantics are cachelib's: timeout ``None`` = the default, ``0`` = never
expires, negative = already expired; ``set``/``add`` return False when the value cannot be
stored (too large for an item, cache full) instead of raising; ``get`` returns None for a
missing or unreadable value; ``inc``/``dec`` create a missing key and are atomic for integer
values; ``clear`` empties the whole cache, or with a ``key_prefix`` only the keys under it.

Serializer: ``serializer`` (argument, class attribute of a subclass, or a later
``cache.serializer = ...``) holds exactly what was given. uwcache's default
(:class:`DefaultSerializer`, a cachelib ``SimpleSerializer``) pickles, stores ``int``,
``bytes`` and ``str`` natively and signs pickles; any other serializer gets every value.
Pickled and custom-serialized values are signed (see :mod:`uwcache.signing`): ``secret``
gives the key, else the cache's replication secret, else the namespace's key file.

Failures: by default a cache failure (see :mod:`uwcache.failsafe`) is logged at a limited rate
and the call behaves as on a miss (``get`` None, ``set``/``add``/``has``/``delete`` False,
``inc`` None as cachelib documents for backend errors); ``ignore_exceptions=False`` raises.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any, Callable, Dict, List, Optional, Union

from cachelib.base import BaseCache
from cachelib.serializers import SimpleSerializer

from ..cache import Cache
from ..errors import CacheError, CacheFull, KeyTooLong, ValueTooLarge
from ..failsafe import FailurePolicy, guarded
from ..lazy import LazyCache
from ..serializers import MISS, Codec, add_to_counter, engine_expires
from ..signing import ValueSigner

__all__ = ["UWCache", "DefaultSerializer", "NearCache"]

log = logging.getLogger("uwcache.contrib.cachelib")

Timeout = Union[int, float, dt.timedelta, None]


class DefaultSerializer(SimpleSerializer):
    """uwcache's default serializer for the cachelib and Flask backends.

    A cachelib ``SimpleSerializer`` (pickle), so code that checks for one is satisfied; the
    backend recognises it and keeps its fast path: ``int`` (an atomic counter), ``bytes`` and
    ``str`` are stored natively, other values are pickled and signed.
    """


_guarded = guarded  # failsafe.guarded: a cache failure is a miss, or raises, per the policy


class UWCache(BaseCache):
    """cachelib ``BaseCache`` storing into the named uwcache cache ``name``."""

    #: what was assigned (by the constructor, a subclass or ``cache.serializer = ...``)
    serializer: Any = DefaultSerializer()

    def __init__(
        self,
        name: str = "default",
        default_timeout: Union[int, dt.timedelta] = 300,
        key_prefix: Union[str, Callable[[], str], None] = None,
        namespace: Optional[str] = None,
        serializer: Any = None,
        ignore_delete_many_errors: bool = True,
        *,
        secret: Union[str, bytes, None] = None,
        ignore_exceptions: bool = True,
        **cache_options: Any,
    ) -> None:
        BaseCache.__init__(self, default_timeout=default_timeout)
        if isinstance(self.default_timeout, dt.timedelta):  # cachelib < 0.17 keeps it as given
            self.default_timeout = int(self.default_timeout.total_seconds())
        self.ignore_delete_many_errors = ignore_delete_many_errors
        self.key_prefix = key_prefix or ""
        owner = f"{type(self).__module__}.{type(self).__qualname__}(name={name!r})"
        self.failure_policy = FailurePolicy(owner, log, ignore_exceptions)
        self._lazy = LazyCache(name, namespace=namespace, owner=owner, **cache_options)
        self._signer = ValueSigner(self._lazy.namespace, secret if secret is not None else self._lazy.options.secret)
        self._owner = owner
        if serializer is not None:
            self.serializer = serializer
        self._codec_spec: Any = None
        self._codec_cache = self._make_codec(self.serializer)  # a bad serializer fails here, not later

    def _make_codec(self, spec: Any) -> Codec:
        self._codec_spec = spec
        return Codec("pickle" if isinstance(spec, DefaultSerializer) else spec, signer=self._signer,
                     owner=self._owner)

    @property
    def _codec(self) -> Codec:
        """The codec for the serializer assigned now (rebuilt when ``serializer`` changes)."""
        spec = self.serializer
        if spec is not self._codec_spec:
            self._codec_cache = self._make_codec(spec)
        return self._codec_cache

    @property
    def rejected_values(self) -> int:
        """Values this backend refused (in this process) because their signature did not verify."""
        return self._codec_cache.rejected

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
        value = self._codec.decode(raw)
        return None if value is MISS else value

    # -- cachelib's API ---------------------------------------------------------------------

    @_guarded(None)
    def get(self, key: str) -> Any:
        try:
            return self._decode(self.cache.get(self._key(key)))
        except KeyTooLong:
            return None

    def get_many(self, *keys: str) -> List[Any]:
        made = [self._key(key) for key in keys]
        try:
            found = self.cache.get_many(made)
            return [self._decode(found.get(k)) for k in made]
        except (CacheError, OSError):
            # a key too long reads as None and the others normally; a failing cache, or a value
            # of another serializer, reads as a miss, logged once: all through get(), key by key
            return [self.get(key) for key in keys]

    def get_dict(self, *keys: str) -> Dict[str, Any]:
        return dict(zip(keys, self.get_many(*keys)))

    @_guarded(False)
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
            self.failure_policy.warn(type(exc).__name__, "uwcache: value for %r not cached: %s", k, exc)
            return False

    @_guarded(False)
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
            self.failure_policy.warn(type(exc).__name__, "uwcache: value for %r not added: %s", k, exc)
            return False

    def set_many(self, mapping: Dict[str, Any], timeout: Timeout = None) -> List[Any]:
        expires = self._expires(timeout)
        made = {self._key(key): (key, self._codec.encode(value)) for key, value in mapping.items()}
        try:
            cache = self.cache
            if expires is None:
                cache.delete_many(made)
                return list(mapping)
            full = cache.set_many({k: encoded for k, (_, encoded) in made.items()}, expires)
        except (CacheError, OSError):
            # one bad entry raises for the whole batch before anything is written (and a failing
            # cache raises too): store one by one, so that only that key fails, logged once
            return [key for key, value in mapping.items() if self.set(key, value, timeout)]
        if full:
            cache.delete_many(full)  # never leave a stale value behind a failed set
            self.failure_policy.warn("CacheFull", "uwcache: %d values not cached, the cache is full", len(full))
        failed = set(full)
        return [key for k, (key, _) in made.items() if k not in failed]

    def delete_many(self, *keys: str) -> List[Any]:
        made = [self._key(key) for key in keys]
        try:
            self.cache.delete_many(made)
        except (CacheError, OSError):  # a key too long, or a failing cache: one by one, guarded
            for key in keys:
                self.delete(key)
        return list(keys)  # every key is absent afterwards: all count as deleted (cachelib)

    @_guarded(False)
    def delete(self, key: str) -> bool:
        try:
            return self.cache.delete(self._key(key))
        except KeyTooLong:
            return False

    @_guarded(False)
    def has(self, key: str) -> bool:
        try:
            raw = self.cache.get(self._key(key))
        except KeyTooLong:
            return False
        return raw is not None and self._codec.readable(raw)  # a forged value is no value

    @_guarded(False)
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

    @_guarded(None)
    def inc(self, key: str, delta: int = 1) -> Any:
        return add_to_counter(self.cache, self._key(key), delta, self._codec, create=True, missing=KeyError)

    def dec(self, key: str, delta: int = 1) -> Any:
        return self.inc(key, -delta)


# ==== near cache (issue 11): cachelib's RedisCache format with the host's L1 in front ====


def _cachelib_redis_dumps(value: Any) -> bytes:
    """cachelib's RedisCache format: integers as digits (so INCR works), the rest "!" + pickle."""
    import pickle

    if isinstance(value, int) and not isinstance(value, bool):
        return str(value).encode("ascii")
    return b"!" + pickle.dumps(value)


def _cachelib_redis_loads(raw: Optional[bytes]) -> Any:
    import pickle

    if raw is None:
        return None
    if raw.startswith(b"!"):
        try:
            return pickle.loads(raw[1:])
        except pickle.PickleError:
            return None
    try:
        return int(raw)
    except ValueError:
        return None  # not ours: cachelib also answers None for what it cannot read


class NearCache(BaseCache):
    """cachelib cache on Redis (cachelib's ``RedisCache`` key and value format) with the
    host's uwcache L1 in front (docs/near.md)::

        cache = NearCache("redis://127.0.0.1:6379/0", cache="pages", key_prefix="app:")

    ``cache`` names the uwcache cache the node's ``add_near`` put in front of that Redis;
    the near prefix must be a prefix of ``key_prefix`` (or empty)."""

    def __init__(self, location: Optional[str] = None, default_timeout: Union[int, dt.timedelta] = 300,
                 key_prefix: Optional[str] = None, cache: str = "default", namespace: Optional[str] = None,
                 **unused: Any) -> None:
        BaseCache.__init__(self, default_timeout=default_timeout)
        if isinstance(self.default_timeout, dt.timedelta):
            self.default_timeout = int(self.default_timeout.total_seconds())
        self.location = location
        self.key_prefix = key_prefix or ""
        self._cache_name = cache
        self._namespace = namespace
        self._owner = f"{type(self).__module__}.{type(self).__qualname__}({location!r})"
        self._handle: Any = None

    @property
    def near(self) -> Any:
        if self._handle is None:
            from ..near import near_for_backend

            self._handle = near_for_backend(self._cache_name, self._namespace, self.location, self._owner)
        return self._handle

    def _k(self, key: str) -> str:
        from ..near import unprefixed

        return unprefixed(self.near, self.key_prefix + key, self._owner)

    def _rk(self, key: str) -> bytes:
        return self.near.prefix + self._k(key).encode()

    def _ex(self, timeout: Timeout) -> Optional[int]:
        """None = never; -1 = already expired; else seconds (cachelib: 0 = never)."""
        t = self._normalize_timeout(timeout)  # type: ignore[arg-type]
        if isinstance(t, dt.timedelta):
            t = int(t.total_seconds())
        if t == 0:
            return None
        return -1 if t < 0 else int(t)

    def get(self, key: str) -> Any:
        return _cachelib_redis_loads(self.near.get(self._k(key)))

    def get_many(self, *keys: str) -> List[Any]:
        found = self.near.get_many([self._k(k) for k in keys])
        return [_cachelib_redis_loads(found.get(self._k(k))) for k in keys]

    def get_dict(self, *keys: str) -> Dict[str, Any]:
        return dict(zip(keys, self.get_many(*keys)))

    def set(self, key: str, value: Any, timeout: Timeout = None) -> bool:
        ex = self._ex(timeout)
        if ex == -1:
            self.delete(key)
            return True
        return bool(self.near.set(self._k(key), _cachelib_redis_dumps(value), ex=ex))

    def add(self, key: str, value: Any, timeout: Timeout = None) -> bool:
        ex = self._ex(timeout)
        if ex == -1:
            return False
        rkey = self._rk(key)
        done = self.near.redis.set(rkey, _cachelib_redis_dumps(value), ex=ex, nx=True)
        self.near.cache._near_invalidate([rkey])
        return bool(done)

    def set_many(self, mapping: Dict[str, Any], timeout: Timeout = None) -> List[Any]:
        return [k for k, v in mapping.items() if not self.set(k, v, timeout)]

    def delete(self, key: str) -> bool:
        return bool(self.near.delete(self._k(key)))

    def delete_many(self, *keys: str) -> List[Any]:
        rkeys = [self._rk(k) for k in keys]
        if rkeys:
            self.near.redis.delete(*rkeys)
            self.near.cache._near_invalidate(rkeys)
        return list(keys)

    def has(self, key: str) -> bool:
        return bool(self.near.redis.exists(self._rk(key)))

    def clear(self) -> bool:
        from ..near import delete_prefixed

        prefix = self.near.options.prefix
        delete_prefixed(self.near, self.key_prefix if self.key_prefix.startswith(prefix) else prefix)
        return True

    def inc(self, key: str, delta: int = 1) -> Any:
        return self.near.incr(self._k(key), delta)

    def dec(self, key: str, delta: int = 1) -> Any:
        return self.near.decr(self._k(key), delta)
