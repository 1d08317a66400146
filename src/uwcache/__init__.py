"""uwcache: uWSGI's caching framework as a standalone library.

A very fast, all-in-memory, shared-memory key-value store that every process of a machine
reads and writes directly, with many named caches configured with uWSGI's ``cache2``
options::

    import uwcache

    caching = uwcache.Caching().add_cache("pages", max_items=1000, block_size=4096)
    with caching.start() as node:
        pages = node.cache("pages")
        pages.set("home", b"<html>...</html>", expires=60)
        assert pages.get("home") == b"<html>...</html>"
"""

from typing import Any

from .errors import (
    CacheClosed,
    CacheError,
    CacheFull,
    ConfigError,
    CorruptStore,
    EmptyValue,
    KeyTooLong,
    NotAnInteger,
    RegionMismatch,
    SharedMemoryFull,
    UnknownCache,
    ValueTooLarge,
)
from .config import CacheOptions, Caching, PreloadFile, PreloadItem, format_cache2, parse_cache2
from .cache import Cache, attach, import_uwsgi_store, list_caches, open_cache
from .node import Node
from .memoize import LazyCache, memoize
from .remote import RemoteCache, RemoteError, RemoteUnavailable

__version__ = "0.1.0"


def near(name: str, *, namespace: "str | None" = None) -> "Any":
    """The near tier (L1 in front of Redis) of cache ``name``: see :func:`uwcache.near.near`."""
    from .near import near as _near

    return _near(name, namespace=namespace)


__all__ = [
    "Cache",
    "CacheClosed",
    "CacheError",
    "CacheFull",
    "CacheOptions",
    "Caching",
    "ConfigError",
    "CorruptStore",
    "EmptyValue",
    "KeyTooLong",
    "LazyCache",
    "Node",
    "NotAnInteger",
    "PreloadFile",
    "PreloadItem",
    "RegionMismatch",
    "RemoteCache",
    "RemoteError",
    "RemoteUnavailable",
    "SharedMemoryFull",
    "UnknownCache",
    "ValueTooLarge",
    "attach",
    "import_uwsgi_store",
    "format_cache2",
    "list_caches",
    "memoize",
    "near",
    "open_cache",
    "parse_cache2",
    "__version__",
]
