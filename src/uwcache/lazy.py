"""LazyCache: a cache named by configuration, opened in each process on first use.

Every framework backend (``uwcache.contrib``) and :func:`uwcache.memoize` holds its cache
through one; it sits beside :mod:`uwcache.cache` (it only needs the cache and its options).
Re-exported as ``uwcache.LazyCache`` and ``uwcache.memoize.LazyCache``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from typing import Any, Dict, Optional, Tuple

from .cache import Cache, attach, open_cache
from .options import CacheOptions, cache_options, resolve_namespace
from .errors import RegionMismatch, UnknownCache

__all__ = ["LazyCache"]

log = logging.getLogger("uwcache.memoize")

# -------------------------------------------------------------------------------------------
# LazyCache: one Cache per process per (namespace, name), opened on first use
# -------------------------------------------------------------------------------------------

_registry: Dict[Tuple[str, str], Cache] = {}
_registry_lock = threading.Lock()
_fork_epoch = 0


def _after_fork_in_child() -> None:
    # The parent's mappings stay valid in the child, but each process opens its own handle
    # (the locks and flock of the parent's are the parent's business).
    global _fork_epoch, _registry_lock
    _fork_epoch += 1
    _registry.clear()
    _registry_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class LazyCache:
    """A cache named by configuration, opened in each process on first use.

    Safe to create at import time, before a server forks its workers (gunicorn's
    ``preload_app``, multiprocessing): nothing is mapped until :meth:`get`, and a forked child
    opens its own handle. Every LazyCache of one process naming the same cache shares one
    :class:`~uwcache.Cache`. The options are checked at creation (:class:`~uwcache.ConfigError`);
    a cache that already exists with another geometry raises :class:`~uwcache.RegionMismatch`
    on first use, with ``owner`` in the message to say which configuration is at fault.

    With ``attach_existing=True`` (what ``memoize("name")`` uses) the options are only the
    ones to create the cache with when it does not exist yet: an existing cache is attached
    whatever its geometry, so ``memoize("api")`` next to ``open_cache("api", ...)`` uses the
    cache that ``open_cache`` made.
    """

    __slots__ = ("name", "namespace", "options", "owner", "attach_existing", "_cache", "_epoch")

    def __init__(self, name: str, *, namespace: Optional[str] = None, owner: str = "",
                 attach_existing: bool = False, **options: Any) -> None:
        self.name = name
        self.namespace = resolve_namespace(namespace)
        self.options = cache_options(name, options)  # validates now, not in a worker; one default geometry
        self.owner = owner or f"cache {name!r}"
        self.attach_existing = attach_existing
        self._cache: Optional[Cache] = None
        self._epoch = -1

    def get(self) -> Cache:
        """This process's :class:`~uwcache.Cache` (opened or attached now if needed)."""
        cache = self._cache
        if cache is not None and self._epoch == _fork_epoch and not cache.closed:
            return cache
        return self._open()

    __call__ = get

    def _open(self) -> Cache:
        key = (self.namespace, self.name)
        with _registry_lock:
            cache = _registry.get(key)
            if cache is None or cache.closed:
                cache = self._attach() if self.attach_existing else None
                if cache is not None:
                    # not registered: its options come from the region's header, and a backend
                    # of this process that configures the cache in full must not be compared
                    # with them
                    self._cache = cache
                    self._epoch = _fork_epoch
                    return cache
                try:
                    cache = open_cache(self.name, namespace=self.namespace, **_options_kwargs(self.options))
                except RegionMismatch as exc:
                    hint = ("; memoize(name) attaches whatever exists: open the cache with its options "
                            "before the first call" if self.attach_existing else "")
                    raise RegionMismatch(
                        f"{self.owner}: {exc} (every user of cache {self.name!r} in namespace "
                        f"{self.namespace!r}, in this process or another, must give the same options{hint})"
                    ) from exc
                if self.attach_existing:
                    log.info("%s: no cache %r in namespace %r yet: created it with open_cache's defaults "
                             "(to choose its options, open it before the first call)",
                             self.owner, self.name, self.namespace)
                _registry[key] = cache
            elif cache.options != self.options and not self.attach_existing:
                raise RegionMismatch(
                    f"{self.owner}: cache {self.name!r} in namespace {self.namespace!r} is already open in "
                    f"this process with other options ({_diff(cache.options, self.options)}); "
                    "give every user of one cache the same options"
                )
            self._cache = cache
            self._epoch = _fork_epoch
            return cache

    def _attach(self) -> Optional[Cache]:
        try:
            return attach(self.name, namespace=self.namespace)
        except UnknownCache:
            return None  # not there yet: create it with the given options

    def __repr__(self) -> str:
        return f"<uwcache.LazyCache {self.name!r} namespace={self.namespace!r}>"


def _options_kwargs(options: CacheOptions) -> Dict[str, Any]:
    values = {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}
    del values["name"]
    if values["budget"] is None:
        del values["budget"]
    return values


def _diff(have: CacheOptions, want: CacheOptions) -> str:
    parts = [
        f"{f.name}={getattr(have, f.name)!r} vs {getattr(want, f.name)!r}"
        for f in dataclasses.fields(have)
        if f.name not in ("secret", "budget") and getattr(have, f.name) != getattr(want, f.name)
    ]
    return ", ".join(parts) or "secret differs"
