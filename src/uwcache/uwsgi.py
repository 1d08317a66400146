"""uWSGI's cache functions, for code written against the ``uwsgi`` module.

    import uwcache.uwsgi as uwsgi
    uwsgi.cache_set("k", "v", 60, "mycache")

Same signatures (positional only), argument conversions and return conventions as uWSGI's
Python plugin: ``True`` on success, ``None`` on failure, ``cache_num`` 0 when missing,
``cache_keys`` raising ``ValueError`` for an unknown cache. Cache names resolve among the
caches opened by a :class:`uwcache.Node` in this process; no name means the first one
configured (uWSGI's default cache). A ``name@host:port`` cache goes to a remote uWSGI or
uwcache node over uWSGI's "magic" protocol (host names resolve; an unreachable node gives
``None``, as in uWSGI).

Differences from uWSGI, all deliberate: an expired item is never returned (uWSGI returns it
until its sweeper runs); ``cache_set`` on an expired key succeeds; math operations on a
bitmap cache keep the counter (uWSGI restarts it); ``INT64_MIN / -1`` gives ``INT64_MIN``
instead of killing the process inside the cache lock.
"""

from ._engine import (  # noqa: F401  (re-exported, C functions)
    cache_clear,
    cache_dec,
    cache_del,
    cache_div,
    cache_exists,
    cache_get,
    cache_inc,
    cache_keys,
    cache_mul,
    cache_num,
    cache_set,
    cache_update,
)

from . import _engine


def _compat_remote(op: str, args: tuple) -> object:
    """Calls whose cache is ``name@host:port``: the network client, imported on first use
    so that importing this module stays cheap."""
    from .net.client import compat_call

    return compat_call(op, args)


_engine._compat_set_remote(_compat_remote)

__all__ = [
    "cache_get",
    "cache_set",
    "cache_update",
    "cache_del",
    "cache_exists",
    "cache_clear",
    "cache_keys",
    "cache_inc",
    "cache_dec",
    "cache_mul",
    "cache_div",
    "cache_num",
]
