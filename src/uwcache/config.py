"""Configuration of uwcache: :class:`Caching`, the caches, the global sweeper options and
the startup preloads of one application.

The public surface mirrors uwsgiconf's ``Caching`` (``set_basic_params``, ``add_item``,
``add_file``, ``add_cache``) so existing uwsgiconf code ports by changing an import, and it
reads and writes uWSGI's own options (``--cache2`` values and ini files) so a uWSGI
deployment can move to uwcache, or back, without retyping its cache setup.

``Caching`` sits above the options it gathers: the checks of one cache are
:mod:`uwcache.options`, the cache2 and ini syntaxes :mod:`uwcache.uwsgi_config`, and this
module re-exports their public names from where they were before the split. Nothing here
touches shared memory or files other than the ini file it is asked to read; the node does
the rest at start.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import TYPE_CHECKING, Any, Iterable, List, Optional, Tuple, Union

from .errors import ConfigError, UnknownCache

# The option checks and the uWSGI syntaxes lived here before they were split out; their names
# stay importable from uwcache.config.
from .options import (  # noqa: F401  (re-exported)
    BUDGET_BLOCK_SIZE,
    BUDGET_MAX_VALUE,
    BUDGET_OPTIONS,
    CACHE2_KEYS,
    DEFAULT_GEOMETRY,
    DEFAULT_NAMESPACE,
    FREE_STACK_ENTRY_BYTES,
    GEOMETRY_OPTIONS,
    HASH_ALGOS,
    HASH_BUCKET_BYTES,
    INT64_MAX,
    INT64_MIN,
    ITEM_HEADER_BYTES,
    MAX_MEMORY_BYTES,
    NAMESPACE_ENV,
    PARTIAL_MAX_ITEMS,
    REGION_HEADER_BYTES,
    CacheOptions,
    NearOptions,
    PreloadFile,
    PreloadItem,
    StrOrBytes,
    _check_bool,
    _check_int,
    _check_secret,
    budget_geometry,
    cache_options,
    describe_sizing,
    parse_size,
    resolve_namespace,
)
from .uwsgi_config import (  # noqa: F401  (re-exported)
    IniSource,
    _ini_line,
    _item_entry,
    _preload_entry,
    cache2_entry,
    format_cache2,
    parse_cache2,
    read_uwsgi_options,
)

if TYPE_CHECKING:  # pragma: no cover - only for type checkers; node.py is written elsewhere
    from .node import Node

__all__ = [
    "CacheOptions",
    "PreloadItem",
    "PreloadFile",
    "Caching",
    "parse_cache2",
    "format_cache2",
    "NAMESPACE_ENV",
    "DEFAULT_NAMESPACE",
    "MAX_MEMORY_BYTES",
    "CACHE2_KEYS",
    "HASH_ALGOS",
    "DEFAULT_GEOMETRY",
    "cache_options",
    "parse_size",
]

_resolve_namespace = resolve_namespace  # its name before it was public (uwcache.options)

AddressList = Union[str, Iterable[str], None]



class Caching:
    """The caching setup of one application: caches, sweeper options and startup preloads.

    Same method names and arguments as uwsgiconf's ``Caching``; every method returns ``self``
    so calls chain. Nothing is created until :meth:`start`.
    """

    def __init__(self, namespace: Optional[str] = None, *, secret: Optional[str] = None) -> None:
        self.namespace: str = resolve_namespace(namespace)
        self.secret: Optional[str] = _check_secret("secret", secret)
        self.no_expire: bool = False
        self.expire_scan_interval: int = 3
        self.report_freed: bool = False
        self.caches: List[CacheOptions] = []
        self.items: List[PreloadItem] = []
        self.files: List[PreloadFile] = []

    # -- the seed's methods ---------------------------------------------------------------

    def set_basic_params(self, *, no_expire: Optional[bool] = None,
                         expire_scan_interval: Optional[int] = None,
                         report_freed: Optional[bool] = None) -> Caching:
        """Global sweeper options; None leaves an option as it is."""
        if no_expire is not None:
            self.no_expire = _check_bool("no_expire", no_expire)
        if expire_scan_interval is not None:
            self.expire_scan_interval = _check_int("expire_scan_interval", expire_scan_interval, 1, 2**31 - 1)
        if report_freed is not None:
            self.report_freed = _check_bool("report_freed", report_freed)
        return self

    def add_item(self, key: StrOrBytes, value: StrOrBytes, *, cache_name: Optional[str] = None) -> Caching:
        """Store ``key`` = ``value`` when the node starts (None: in the default cache)."""
        self.items.append(PreloadItem(key, value, cache_name))
        return self

    def add_file(self, filepath: Union[str, pathlib.Path], *, gzip: bool = False,
                 cache_name: Optional[str] = None) -> Caching:
        """Store a file's content at start under its path text; the node reads it, not this call."""
        if not isinstance(filepath, (str, os.PathLike)):
            raise ConfigError(f"add_file filepath must be a str or pathlib.Path, got {filepath!r}")
        self.files.append(PreloadFile(str(filepath), gzip, cache_name))
        return self

    def add_cache(self, name: str, *, max_items: Optional[int] = None, no_expire: Optional[bool] = None,
                  store: Optional[str] = None, store_sync_interval: Optional[int] = None,
                  store_delete: Optional[bool] = None, hash_algo: Optional[str] = None,
                  hash_size: Optional[int] = None, key_size: Optional[int] = None,
                  udp_clients: AddressList = None, udp_servers: AddressList = None,
                  block_size: Optional[int] = None, block_count: Optional[int] = None,
                  sync_from: AddressList = None, mode_bitmap: Optional[bool] = None,
                  use_lastmod: Optional[bool] = None, full_silent: Optional[bool] = None,
                  full_purge_lru: Optional[bool] = None, math_initial: Optional[int] = None,
                  lazy_expire: Optional[bool] = None, sweep_on_full: Optional[int] = None,
                  clear_on_full: Optional[bool] = None, secret: Optional[str] = None,
                  memory: Union[int, str, None] = None, max_value: Union[int, str, None] = None) -> Caching:
        """Add a cache; every None argument takes its default. Names must be unique.

        With none of max_items/key_size/block_size/block_count/mode_bitmap the cache gets
        DEFAULT_GEOMETRY; with ``memory=`` (and ``max_value=``) the budget form picks it."""
        # Every keyword argument is a CacheOptions field of the same name (or a budget option); None = not given.
        given = {k: v for k, v in locals().items() if k not in ("self", "name") and v is not None}
        self._append_cache(cache_options(name, given))
        return self

    def add_near(self, name: str, *, redis: Any, prefix: str = "", max_ttl: int = 300,
                 lease_ms: int = 300, resp: str = "auto") -> Caching:
        """Put cache ``name`` in front of Redis/Valkey as this host's L1 (see docs/near.md).

        The node runs the invalidation listener; any process uses ``uwcache.near(name)``."""
        self.cache_options(name)  # the L1 must be a configured cache
        near_options = self.__dict__.setdefault("near_options", {})
        near_options[name] = NearOptions(name=name, redis=redis, prefix=prefix, max_ttl=max_ttl,
                                         lease_ms=lease_ms, resp=str(resp))
        return self

    # -- lookups --------------------------------------------------------------------------

    def cache_options(self, name: str) -> CacheOptions:
        """The options of the cache called ``name``; UnknownCache if there is none."""
        for options in self.caches:
            if options.name == name:
                return options
        configured = ", ".join(repr(c.name) for c in self.caches) or "none"
        raise UnknownCache(f"no cache named {name!r} is configured (configured: {configured})")

    @property
    def default_cache_name(self) -> str:
        """The first configured cache, which uWSGI uses when no cache name is given."""
        if not self.caches:
            raise ConfigError("no cache is configured, so there is no default cache; call add_cache() first")
        return self.caches[0].name

    def start(self, **kwargs: Any) -> Node:
        """Create the caches and run the preloads: hand the configuration to a Node."""
        from .node import Node

        return Node(self, **kwargs)

    # -- whole-configuration checks -------------------------------------------------------

    def validate(self) -> Caching:
        """Checks that span options: unique names, basic params, preload targets and sizes."""
        self.set_basic_params(no_expire=self.no_expire, expire_scan_interval=self.expire_scan_interval,
                              report_freed=self.report_freed)
        names = [c.name for c in self.caches]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"cache name {duplicates[0]!r} is used by more than one cache")
        for item in self.items:
            self._check_item_fits(item)
        for preload in self.files:
            self._target_cache(preload.cache_name, f"add_file({preload.path!r})")
        return self

    def _target_cache(self, cache_name: Optional[str], what: str) -> CacheOptions:
        """The cache a preload goes to, or ConfigError naming the preload and the cache."""
        if not self.caches:
            raise ConfigError(f"{what} needs a cache, but no cache is configured; call add_cache() first")
        if cache_name is None:
            return self.caches[0]
        try:
            return self.cache_options(cache_name)
        except UnknownCache:
            configured = ", ".join(repr(c.name) for c in self.caches)
            raise ConfigError(f"{what} names cache {cache_name!r}, which is not configured "
                              f"(configured: {configured})") from None

    def _check_item_fits(self, item: PreloadItem) -> None:
        """A preload that cannot fit would only fail in a log line at start; fail now instead."""
        what = f"add_item({item.key!r})"
        cache = self._target_cache(item.cache_name, what)
        key_len, value_len = len(item.key_bytes), len(item.value_bytes)
        if key_len > cache.key_size:
            raise ConfigError(f"{what}: the key is {key_len} bytes, more than key_size={cache.key_size} "
                              f"of cache {cache.name!r}")
        if value_len > cache.max_item_size:
            raise ConfigError(f"{what}: the value is {value_len} bytes, more than the largest item "
                              f"({cache.max_item_size} bytes, see block_size/mode_bitmap) of cache {cache.name!r}")

    # -- uWSGI configuration in -----------------------------------------------------------

    @classmethod
    def from_cache2(cls, *values: str, namespace: Optional[str] = None,
                    secret: Optional[str] = None) -> Caching:
        """One cache per uWSGI ``--cache2`` value, in order (near keys add its near tier)."""
        caching = cls(namespace, secret=secret)
        for value in values:
            options, near_kw = cache2_entry(value)
            caching._append_cache(options)
            if near_kw is not None:
                caching.add_near(options.name, **near_kw)
        return caching

    @classmethod
    def from_ini(cls, source: IniSource, *, section: str = "uwsgi",
                 namespace: Optional[str] = None, secret: Optional[str] = None) -> Caching:
        """Read the cache options of a uWSGI ini file (path, file object, or text with a newline).

        Options that are not about caches are ignored. Preload entries without a cache name are
        expanded into one entry per cache, which is what uWSGI does with them. An error about
        one line is an :class:`~uwcache.errors.OptionError` that names the line and its option.
        """
        return read_uwsgi_options(cls(namespace, secret=secret), ini=source, section=section)

    @classmethod
    def from_uwsgi_options(cls, options: Iterable[Tuple[str, Optional[str]]], *,
                           ini: Optional[IniSource] = None, section: str = "uwsgi",
                           namespace: Optional[str] = None, secret: Optional[str] = None) -> Caching:
        """uWSGI ``(option, value)`` pairs, such as ``("cache2", "name=a,items=10")`` or
        ``("cache-no-expire", None)``, read in order after the ``[section]`` of ``ini`` if one
        is given, as uWSGI reads command-line options after its config file.

        An error about one pair is an :class:`~uwcache.errors.OptionError` whose ``option``
        and ``value`` are that pair's (and ``line`` None), so a caller can name its own
        argument; ``uwcache run`` does that for its command line.
        """
        return read_uwsgi_options(cls(namespace, secret=secret), options, ini=ini, section=section)

    def _append_cache(self, options: CacheOptions) -> None:
        """Add a cache, inheriting the Caching-wide secret; names must be unique."""
        if any(c.name == options.name for c in self.caches):
            raise ConfigError(f"cache name {options.name!r} is already configured; cache names must be unique")
        if options.secret is None and self.secret is not None:
            options = dataclasses.replace(options, secret=self.secret)
        self.caches.append(options)

    # -- uWSGI configuration out ----------------------------------------------------------

    def to_cache2(self) -> List[str]:
        """One ``--cache2`` value per cache, in creation order."""
        return [format_cache2(options) for options in self.caches]

    def _uwsgi_options(self) -> List[Tuple[str, Optional[str]]]:
        """(option, value) pairs in uWSGI terms; value None = a flag without argument."""
        self.validate()
        pairs: List[Tuple[str, Optional[str]]] = [("cache2", value) for value in self.to_cache2()]
        if self.no_expire:
            pairs.append(("cache-no-expire", None))
        if self.expire_scan_interval != 3:
            pairs.append(("cache-expire-freq", str(self.expire_scan_interval)))
        if self.report_freed:
            pairs.append(("cache-report-freed-items", None))
        for item in self.items:
            pairs.append(("add-cache-item", _item_entry(item, self._target_cache(item.cache_name, "").name)))
        for preload in self.files:
            option = "load-file-in-cache-gzip" if preload.gzip else "load-file-in-cache"
            target = self._target_cache(preload.cache_name, "").name
            pairs.append((option, _preload_entry(target, preload.path, f"add_file({preload.path!r})")))
        return pairs

    def to_ini(self, section: str = "uwsgi") -> str:
        """A uWSGI ini section with these caches; preloads always name their cache."""
        if not isinstance(section, str) or not section or any(c in section for c in "[]\n\r"):
            raise ConfigError(f"section must be a non-empty name without brackets or line breaks, got {section!r}")
        lines = [f"[{section}]"]
        for option, value in self._uwsgi_options():
            lines.append(_ini_line(option, "true" if value is None else value))
        return "\n".join(lines) + "\n"

    def to_uwsgi_args(self) -> List[str]:
        """The same options as uWSGI command-line arguments."""
        args: List[str] = []
        for option, value in self._uwsgi_options():
            args.append(f"--{option}")
            if value is not None:
                args.append(value)
        return args

    # -- comparison and display -----------------------------------------------------------

    def _content(self) -> Tuple[Any, ...]:
        """What the configuration means, independent of namespace and of spelling choices."""
        default = self.caches[0].name if self.caches else None
        items = [(i.key_bytes, i.value_bytes, i.cache_name or default) for i in self.items]
        files = [(f.path, f.gzip, f.cache_name or default) for f in self.files]
        return (list(self.caches), self.no_expire, self.expire_scan_interval, self.report_freed, items, files)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Caching):
            return NotImplemented
        return self._content() == other._content()

    __hash__ = None  # type: ignore[assignment]  # mutable: not usable as a dict key

    def __repr__(self) -> str:
        caches = ", ".join(f"{c.name}(max_items={c.max_items})" for c in self.caches)
        return (f"Caching(namespace={self.namespace!r}, caches=[{caches}], no_expire={self.no_expire}, "
                f"expire_scan_interval={self.expire_scan_interval}, report_freed={self.report_freed}, "
                f"items={len(self.items)}, files={len(self.files)})")
