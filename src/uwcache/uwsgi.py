"""uWSGI's cache functions, for code written against the ``uwsgi`` module.

    import uwcache.uwsgi as uwsgi
    uwsgi.cache_set("k", "v", 60, "mycache")

or, for code that does ``import uwsgi`` itself (Flask-Caching's and cachelib's
``UWSGICache``, django-uwsgi-cache), once at start-up::

    uwcache.install_uwsgi_module()     # later `import uwsgi` returns this module

Same signatures (positional only), argument conversions and return conventions as uWSGI's
Python plugin: ``True`` on success, ``None`` on failure, ``cache_num`` 0 when missing,
``cache_keys`` raising ``ValueError`` for an unknown cache. Cache names resolve among the
caches opened by a :class:`uwcache.Node` in this process (and those given to
:func:`install_uwsgi_module`); no name means the first one (uWSGI's default cache). A
``name@host:port`` cache goes to a remote uWSGI or uwcache node over uWSGI's "magic"
protocol (host names resolve; an unreachable node gives ``None``, as in uWSGI).

Besides the twelve ``cache_*`` functions the module has ``opt``: uWSGI's option dict as
uWSGI 2.0 fills it, here only ``{"cache2": b"name=...,items=..."}`` for the last cache
registered (repeated options keep their last value in uWSGI's ``opt`` too), or ``{}`` when
no cache is registered. Every other attribute of uWSGI's module (``version``, ``worker_id``,
``lock``, ``mule_msg``, ``register_signal``, ...) raises ``AttributeError`` naming this
module as uwcache's stand-in, so ``hasattr(uwsgi, "spooler")``-style feature checks answer
False.

Differences from uWSGI, all deliberate (docs/caveats.md has the full list): an expired item
is never returned (uWSGI returns it until its sweeper runs); ``cache_set`` on an expired key
succeeds; math operations on a bitmap cache keep the counter (uWSGI restarts it);
``INT64_MIN / -1`` gives ``INT64_MIN`` instead of killing the process inside the cache lock;
with ``purge_lru`` in bitmap mode a write keeps evicting the least recently used items until
its value's run of blocks fits (uWSGI evicts one item and fails the write if that was not
enough).
"""

from __future__ import annotations

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

import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: this module stays cheap
if TYPE_CHECKING:
    from typing import Any, Dict, Union

from . import _engine

#: marks this module as uwcache's stand-in (a real uWSGI module never has it)
__uwcache__ = True


def _compat_remote(op: str, args: tuple) -> object:
    """Calls whose cache is ``name@host:port``: the network client, imported on first use
    so that importing this module stays cheap."""
    from .net.client import compat_call

    return compat_call(op, args)


_engine._compat_set_remote(_compat_remote)

# Attributes of uWSGI 2.0's module that this stand-in does not provide (beyond the cache API).
_UWSGI_ONLY = frozenset("""
    SPOOL_IGNORE SPOOL_OK SPOOL_RETRY SymbolsImporter SymbolsZipImporter ZipImporter accepting
    add_cron add_file_monitor add_rb_timer add_timer add_var alarm applications async_connect
    async_sleep buffer_size call chunked_read chunked_read_nb cl close connect connection_fd
    cores disconnect embedded_data extract farm_get_msg farm_msg get_logvar green_schedule
    has_threads hostname i_am_the_lord i_am_the_spooler in_farm is_a_reload is_connected
    is_locked listen_queue lock log log_this_request logsize loop lord_scroll magic_table
    masterpid mem metric_dec metric_div metric_get metric_inc metric_mul metric_set
    metric_set_max metric_set_min micros mule_get_msg mule_id mule_msg numproc offload
    parsefile ready ready_fd recv register_rpc register_signal reload request_id rpc rpc_list
    scrolls send sendfile set_logvar set_user_harakiri set_warning_message setprocname signal
    signal_received signal_registered signal_wait sockets spooler start_response started_on
    stop suspend total_requests unbit unlock version version_info wait_fd_read wait_fd_write
    websocket_handshake websocket_recv websocket_recv_nb websocket_send websocket_send_binary
    worker_id workers
""".split())


def _opt() -> Dict[str, Union[bytes, bool]]:
    """uWSGI's ``opt`` for the registered caches (computed on each access)."""
    from .uwsgi_config import format_cache2

    opt: Dict[str, Union[bytes, bool]] = {}
    for cache in _engine._compat_registry().values():
        options = getattr(cache, "options", None)
        if options is not None and not cache.closed:
            opt["cache2"] = format_cache2(options).encode()  # the last one wins, as in uWSGI
    return opt


def __getattr__(name: str) -> Any:
    if name == "opt":
        return _opt()
    if name in _UWSGI_ONLY:
        raise AttributeError(
            f"uwsgi.{name} is not available: this 'uwsgi' module is uwcache's stand-in "
            "(uwcache.uwsgi, installed by uwcache.install_uwsgi_module()), which provides only "
            "uWSGI's cache functions and opt; run the application under uWSGI for the rest"
        )
    raise AttributeError(f"module 'uwsgi' has no attribute {name!r}")


def _real_uwsgi_loaded() -> bool:
    """True inside a uWSGI process: its Python plugin puts its module in sys.modules before
    loading the application."""
    existing = sys.modules.get("uwsgi")
    return existing is not None and not getattr(existing, "__uwcache__", False)


def install_uwsgi_module(*caches: Any) -> bool:
    """Make a later ``import uwsgi`` return this module (opt-in, once at start-up).

    ``caches`` (:class:`uwcache.Cache` objects, e.g. from :func:`uwcache.open_cache`) become
    reachable by name from the ``cache_*`` functions, like the caches of a
    :class:`uwcache.Node` (which registers its own); the first cache registered in the
    process is the default one. Inside a real uWSGI process nothing is installed or
    registered and False is returned, so the same code runs under uWSGI and elsewhere.
    Returns True when ``import uwsgi`` now gives this module.
    """
    if _real_uwsgi_loaded():
        import logging

        logging.getLogger("uwcache").info(
            "uwcache.install_uwsgi_module(): running under uWSGI, its own uwsgi module is kept")
        return False
    for cache in caches:
        if not isinstance(cache, _engine.CacheBase):
            raise TypeError(f"install_uwsgi_module() takes uwcache.Cache objects, not {type(cache).__name__}")
        registered = _engine._compat_registry().get(cache.name)
        if registered is not None and registered is not cache:
            if not registered.closed:
                raise ValueError(f"another open cache named {cache.name!r} is already registered for the uwsgi functions")
            _engine._compat_unregister(cache.name, registered)
        _engine._compat_register(cache.name, cache)
    sys.modules["uwsgi"] = sys.modules[__name__]
    return True


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
    "install_uwsgi_module",
]
