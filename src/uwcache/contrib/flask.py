"""Flask-Caching backend on a uwcache shared-memory cache: every worker of the machine shares it.

::

    app.config.update(
        CACHE_TYPE="uwcache.contrib.flask.UWCache",
        CACHE_DEFAULT_TIMEOUT=300,
        CACHE_KEY_PREFIX="myapp:",                # Flask-Caching's default is "flask_cache_"
        CACHE_UWCACHE_NAME="flask",               # the cache name (default "flask")
        CACHE_UWCACHE_NAMESPACE=None,             # default $UWCACHE_NAMESPACE, else "default"
        CACHE_UWCACHE_SERIALIZER=None,            # uwcache's default (pickle), or "json", "raw"
        CACHE_UWCACHE_SECRET=None,                # key for signing pickles (default: see below)
        CACHE_UWCACHE_IGNORE_EXCEPTIONS=True,     # cache failures act as misses (False: raise)
        CACHE_OPTIONS={"memory": "16MiB", "max_value": "1MiB", "full_purge_lru": True},
    )
    cache = Cache(app)

``CACHE_OPTIONS`` holds the ``add_cache`` options of the cache (and may also give ``name``,
``namespace``, ``serializer`` or ``key_prefix``). Flask-Caching's ``CACHE_SERIALIZER`` is
honoured too: it gets every value, and ``backend.serializer`` is the object Flask-Caching
assigned. Pickled values are signed (the key: ``CACHE_UWCACHE_SECRET``, else the cache's
replication ``secret``, else the namespace's key file; see :mod:`uwcache.signing`).
Semantics are those of :class:`uwcache.contrib.cachelib.UWCache`, which this class extends.
"""

from __future__ import annotations

from typing import Any, Dict, List

from flask_caching.backends.base import BaseCache as FlaskBaseCache

from . import cachelib as _cachelib

__all__ = ["UWCache", "NearCache"]


class UWCache(_cachelib.UWCache, FlaskBaseCache):
    """Flask-Caching backend: ``CACHE_TYPE = "uwcache.contrib.flask.UWCache"``."""

    def __init__(self, name: str = "flask", default_timeout: int = 300, *args: Any,
                 ignore_delete_many_errors: bool = False, ignore_errors: Any = None, **kwargs: Any) -> None:
        if ignore_errors is not None:  # Flask-Caching < 2.4 spells it this way
            ignore_delete_many_errors = bool(ignore_errors)
        kwargs["ignore_delete_many_errors"] = ignore_delete_many_errors
        super().__init__(name, default_timeout, *args, **kwargs)
        self.ignore_errors = ignore_delete_many_errors  # read by Flask-Caching < 2.4's delete_many

    @classmethod
    def factory(cls, app: Any, config: Dict[str, Any], args: List[Any], kwargs: Dict[str, Any]) -> "UWCache":
        """Called by Flask-Caching with the app config and ``CACHE_ARGS``/``CACHE_OPTIONS``."""
        from_config = {
            "name": config.get("CACHE_UWCACHE_NAME"),
            "namespace": config.get("CACHE_UWCACHE_NAMESPACE"),
            "serializer": config.get("CACHE_UWCACHE_SERIALIZER"),
            "key_prefix": config.get("CACHE_KEY_PREFIX"),
            "secret": config.get("CACHE_UWCACHE_SECRET"),
            "ignore_exceptions": config.get("CACHE_UWCACHE_IGNORE_EXCEPTIONS"),
        }
        for option, value in from_config.items():
            if value is not None:
                kwargs.setdefault(option, value)
        return cls(*args, **kwargs)


# ==== near cache (issue 11) ====


class NearCache(_cachelib.NearCache, FlaskBaseCache):
    """Flask-Caching on Redis (Flask-Caching's RedisCache format) with the host's uwcache L1
    in front: ``CACHE_TYPE = "uwcache.contrib.flask.NearCache"``, ``CACHE_REDIS_URL`` = the
    node's Redis, ``CACHE_UWCACHE_NAME`` = the near cache's uwcache cache."""

    def __init__(self, *args: Any, ignore_errors: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ignore_errors = bool(ignore_errors)

    @classmethod
    def factory(cls, app: Any, config: Dict[str, Any], args: List[Any], kwargs: Dict[str, Any]) -> "NearCache":
        kwargs.setdefault("location", config.get("CACHE_REDIS_URL"))
        kwargs.setdefault("cache", config.get("CACHE_UWCACHE_NAME") or "default")
        if config.get("CACHE_UWCACHE_NAMESPACE") is not None:
            kwargs.setdefault("namespace", config["CACHE_UWCACHE_NAMESPACE"])
        kwargs.setdefault("key_prefix", config.get("CACHE_KEY_PREFIX") or "flask_cache_")
        kwargs.setdefault("default_timeout", config.get("CACHE_DEFAULT_TIMEOUT", 300))
        return cls(*args, **kwargs)
