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

import sys as _sys
import types as _types

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

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (type checkers read it as True)
if TYPE_CHECKING:  # type checkers see the real names; at run time they are imported lazily
    from typing import Callable as _Callable

    from .cache import Cache, attach, import_uwsgi_store, list_caches, open_cache
    from .config import Caching
    from .options import CacheOptions, PreloadFile, PreloadItem
    from .uwsgi_config import format_cache2, parse_cache2
    from .lazy import LazyCache
    from .memoize import memoize
    from .node import Node
    from .remote import RemoteCache, RemoteError, RemoteUnavailable
    from .uwsgi import install_uwsgi_module

# Everything else is imported on first use (PEP 562), so that `import uwcache` stays cheap
# and a process that only attaches to a cache never loads the network layer, memoize or
# the CLI. `from uwcache import X` works for every name in __all__.
_LAZY = {
    "CacheOptions": "options",
    "Caching": "config",
    "PreloadFile": "options",
    "PreloadItem": "options",
    "format_cache2": "uwsgi_config",
    "parse_cache2": "uwsgi_config",
    "Cache": "cache",
    "attach": "cache",
    "import_uwsgi_store": "cache",
    "list_caches": "cache",
    "open_cache": "cache",
    "Node": "node",
    "LazyCache": "lazy",
    "RemoteCache": "remote",
    "RemoteError": "remote",
    "RemoteUnavailable": "remote",
    "install_uwsgi_module": "uwsgi",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'uwcache' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module("." + module, __name__), name)
    globals()[name] = value
    return value


def _function_over_submodule(attr: str, load: "_Callable[[], object]", doc: str) -> property:
    """A package attribute that is a function although a submodule has its name: the import
    system binds the submodule on the package once it is loaded, and that one assignment is
    ignored; any other (a test's monkeypatch, mock.patch) replaces the function as usual."""
    override = "_override_" + attr

    def get(self: _types.ModuleType) -> object:
        value = self.__dict__.get(override)
        return load() if value is None else value

    def set_(self: _types.ModuleType, value: object) -> None:
        if isinstance(value, _types.ModuleType) and value.__name__ == f"{__name__}.{attr}":
            return
        self.__dict__[override] = value

    def delete(self: _types.ModuleType) -> None:  # back to the function (mock.patch's undo)
        self.__dict__.pop(override, None)

    return property(get, set_, delete, doc=doc)


def _load_memoize() -> object:
    from .memoize import memoize as decorator

    return decorator


def _load_near() -> object:
    from .near import near as function

    return function


class _Package(_types.ModuleType):
    """``uwcache.memoize`` is the decorator and ``uwcache.near`` the near-tier function, though
    submodules have the same names."""

    memoize = _function_over_submodule("memoize", _load_memoize, "The memoize decorator (uwcache.memoize.memoize).")
    near = _function_over_submodule(
        "near", _load_near,
        "The near tier (L1 in front of Redis) of a cache: ``uwcache.near(name)``, see :func:`uwcache.near.near`.")


_sys.modules[__name__].__class__ = _Package


def __dir__() -> list:
    return sorted(set(globals()) | set(_LAZY) | {"memoize", "near"})


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
    "SharedMemoryFull",
    "UnknownCache",
    "ValueTooLarge",
    "attach",
    "import_uwsgi_store",
    "install_uwsgi_module",
    "format_cache2",
    "list_caches",
    "memoize",
    "near",
    "open_cache",
    "parse_cache2",
    "__version__",
]
