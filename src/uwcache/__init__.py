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
    UnknownCache,
    ValueTooLarge,
)
from .config import CacheOptions, Caching, PreloadFile, PreloadItem, format_cache2, parse_cache2
from .cache import Cache, attach, import_uwsgi_store, list_caches, open_cache
from .node import Node
from .memoize import LazyCache, memoize
from .remote import RemoteCache, RemoteError, RemoteUnavailable
from .uwsgi import install_uwsgi_module

__version__ = "0.1.0"

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
    "UnknownCache",
    "ValueTooLarge",
    "attach",
    "import_uwsgi_store",
    "install_uwsgi_module",
    "format_cache2",
    "list_caches",
    "memoize",
    "open_cache",
    "parse_cache2",
    "__version__",
]
