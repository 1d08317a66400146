"""uWSGI's own syntaxes for caches: ``--cache2`` values and ini files, read and written.

A uWSGI deployment moves to uwcache, or back, without retyping its cache setup. Where uWSGI
accepts a value silently and then misbehaves (``bitmap=0`` enables bitmap mode, a bare
``bitmap`` does nothing, ``64k`` means 64, ``hash=rr`` makes lookups miss) this module raises
:class:`~uwcache.errors.ConfigError` with a message that says what uWSGI would have done and
what to write instead. An error about one ini line or one ``(option, value)`` pair is an
:class:`~uwcache.errors.OptionError`, which names the option, its value and its line itself.

It sits between the checked options (:mod:`uwcache.options`) and ``Caching``
(:mod:`uwcache.config`), which it fills but does not import.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
from typing import IO, TYPE_CHECKING, Any, Callable, Dict, Iterable, Iterator, List, NamedTuple, Optional, Tuple, TypeVar, Union

from .errors import ConfigError, OptionError
from .options import (
    _BOOL_FIELDS,
    _LIST_FIELDS,
    _UINT_FIELDS,
    CACHE2_KEYS,
    CacheOptions,
    PreloadFile,
    PreloadItem,
    StrOrBytes,
)

if TYPE_CHECKING:  # pragma: no cover - Caching sits above this module: it calls in, never back
    from .config import Caching

__all__ = ["parse_cache2", "format_cache2"]

_T = TypeVar("_T")
_DIGITS_RE = re.compile(r"[0-9]+")
_SIGNED_DIGITS_RE = re.compile(r"[+-]?[0-9]+")

# cache2 keys in uwsgiconf's emission order (uwsgi-behaviour.md §1.5), then the extras uwsgiconf lacks.
_EMIT_ORDER: Tuple[Tuple[str, str], ...] = (
    ("name", "name"), ("max_items", "maxitems"), ("no_expire", "no_expire"), ("store", "store"),
    ("store_sync_interval", "storesync"), ("store_delete", "store_delete"), ("hash_algo", "hash"),
    ("hash_size", "hash_size"), ("key_size", "key_size"), ("udp_clients", "nodes"),
    ("udp_servers", "udp_servers"), ("block_size", "blocksize"), ("block_count", "blocks"),
    ("sync_from", "sync"), ("mode_bitmap", "bitmap"), ("use_lastmod", "lastmod"),
    ("full_silent", "ignore_full"), ("full_purge_lru", "purge_lru"),
    ("math_initial", "math_initial"), ("lazy_expire", "lazy_expire"),
    ("sweep_on_full", "sweep_on_full"), ("clear_on_full", "clear_on_full"),
)

_FIELD_DEFAULTS = {f.name: f.default for f in dataclasses.fields(CacheOptions)}

_TRUE_WORDS = ("1", "true", "yes", "on")
_FALSE_WORDS = ("0", "false", "no", "off")




# --------------------------------------------------------------------------------------------
# cache2 values: parse and format
# --------------------------------------------------------------------------------------------


def _split_escaped(text: str, separator: str) -> List[str]:
    """Split on ``separator``; a backslash makes the next character literal (uWSGI's kvlist)."""
    pieces: List[str] = []
    current: List[str] = []
    chars = iter(text)
    for ch in chars:
        if ch == "\\":
            escaped = next(chars, None)
            if escaped is None:
                raise ConfigError(f"cache2 value {text!r} ends with a lone backslash; write '\\\\' for a backslash")
            current.append(escaped)
        elif ch == separator:
            pieces.append("".join(current))
            current = []
        else:
            current.append(ch)
    pieces.append("".join(current))
    return pieces


def _escape(value: str) -> str:
    """Backslash-escape what the cache2 splitter would otherwise eat."""
    return value.replace("\\", "\\\\").replace(",", "\\,")


def _parse_uint(key: str, raw: str) -> int:
    """Plain decimal digits only: uWSGI's strtoul reads '64k' as 64 and '-1' as 2**64-1."""
    if not _DIGITS_RE.fullmatch(raw):
        raise ConfigError(
            f"cache2 key '{key}' has value {raw!r}: expected plain decimal digits (e.g. {key}=4096); "
            f"no sign, suffix (64k) or spaces - uWSGI would read only the leading digits")
    return int(raw)


def _parse_int64(key: str, raw: str) -> int:
    """A signed decimal integer (math_initial), range-checked by CacheOptions."""
    if not _SIGNED_DIGITS_RE.fullmatch(raw):
        raise ConfigError(f"cache2 key '{key}' has value {raw!r}: expected a signed decimal integer (e.g. {key}=-5)")
    return int(raw)


def _parse_bool(key: str, raw: str) -> bool:
    """Only explicit 'on' words: uWSGI turns a boolean on whatever its value, even '0'."""
    if raw.lower() in _TRUE_WORDS:
        return True
    raise ConfigError(
        f"cache2 key '{key}' has value {raw!r}: uWSGI treats a boolean key as ON whenever it is "
        f"present, whatever its value (so '{key}=0' ENABLES it); to disable {key}, omit the key; "
        f"to enable it write '{key}=1' (accepted: {', '.join(_TRUE_WORDS)})")


def _parse_list(key: str, raw: str) -> Tuple[str, ...]:
    """A ';'-separated list; empty entries are mistakes (a stray ';'), not addresses."""
    entries = tuple(raw.split(";"))
    if any(not entry for entry in entries):
        raise ConfigError(f"cache2 key '{key}' has value {raw!r}: expected entries separated by ';', without empty ones")
    return entries


def _parse_text(key: str, raw: str) -> str:
    """Names, paths and hash names are taken verbatim; CacheOptions validates them."""
    return raw


def _parser_for(field_name: str) -> Any:
    """The function that turns a raw cache2 value into the field's Python value."""
    if field_name in _BOOL_FIELDS:
        return _parse_bool
    if field_name in _LIST_FIELDS:
        return _parse_list
    if field_name == "math_initial":
        return _parse_int64
    if field_name in _UINT_FIELDS:
        return _parse_uint
    return _parse_text


def _unknown_key_error(key: str, piece: str) -> ConfigError:
    """Explain an unknown key, with a hint for the two common slips."""
    accepted = ", ".join(sorted(CACHE2_KEYS))
    if key == "max-items":
        hint = "uWSGI's docs spell it 'max-items' but uWSGI does not accept it: use items, maxitems or max_items"
    elif key.strip() in CACHE2_KEYS:
        hint = f"remove the spaces around {key.strip()!r} (keys are matched exactly)"
    else:
        hint = "uWSGI would ignore it silently"
    return ConfigError(f"cache2 key {key!r} (in {piece!r}) is unknown: {hint}; accepted keys: {accepted}")


def _bare_word_error(piece: str) -> ConfigError:
    """A piece without '=' is silently dropped by uWSGI, which is never what was meant."""
    if piece == "":
        return ConfigError("cache2 value has an empty entry (two commas in a row, or a leading/trailing comma)")
    field_name = CACHE2_KEYS.get(piece)
    if field_name in _BOOL_FIELDS:
        fix = f"write '{piece}=1'"
    else:
        fix = f"write '{piece}=VALUE'" if field_name else "write key=value"
    return ConfigError(
        f"cache2 entry {piece!r} has no '=': uWSGI silently ignores it (so it does NOT enable or set "
        f"anything); {fix}")


def _parse_cache2_fields(value: str) -> Dict[str, Any]:
    """cache2 text -> {field: value}, rejecting bare words, unknown keys and conflicting repeats."""
    found: Dict[str, Tuple[str, Any, str]] = {}
    for piece in _split_escaped(value, ","):
        key, equals, raw = piece.partition("=")
        if not equals:
            raise _bare_word_error(piece)
        field_name = CACHE2_KEYS.get(key)
        if field_name is None:
            raise _unknown_key_error(key, piece)
        parsed = _parser_for(field_name)(key, raw)
        if field_name in found and found[field_name][1] != parsed:
            raise ConfigError(
                f"cache2 sets {field_name} twice with different values ({found[field_name][0]}="
                f"{found[field_name][2]!r} and {key}={raw!r}); uWSGI would keep the last one silently, "
                f"uwcache asks you to keep one")
        found[field_name] = (key, parsed, raw)
    return {name: parsed for name, (_key, parsed, _raw) in found.items()}


def _cache2_options(value: str, *, store_sync_default: int = 0) -> CacheOptions:
    """cache2 text -> CacheOptions; an error says what is wrong, and the caller which value.

    ``store_sync_default`` is the ini-wide ``cache-store-sync`` default for ``storesync``."""
    fields = _parse_cache2_fields(value)
    for required, example in (("name", "name=mycache"), ("max_items", "items=1000")):
        if required not in fields:
            raise ConfigError(f"cache2 needs {required!r} (e.g. {example})")
    fields.setdefault("store_sync_interval", store_sync_default)
    return CacheOptions(**fields)


def _restating(value: object, parse: Callable[[str], _T]) -> _T:
    """``parse(value)`` for the public entry points: a str, and errors that start by restating
    the value (``cache2 'VALUE': what is wrong``), since the inner checks do not."""
    if not isinstance(value, str):
        raise ConfigError(f"a cache2 value must be a str, got {value!r}")
    try:
        return parse(value)
    except ConfigError as exc:
        raise ConfigError(f"cache2 {value!r}: {exc}") from None


def parse_cache2(value: str) -> CacheOptions:
    """Parse one uWSGI ``--cache2`` value (``name=x,items=100,...``) into CacheOptions.

    Stricter than uWSGI: every entry must be ``key=value`` with a known key, numbers are plain
    digits, booleans only take on-words, and a key repeated with another value is an error.
    """
    return _restating(value, _cache2_options)


def _format_value(field_name: str, value: Any) -> str:
    """Python value -> cache2 text (booleans are only ever written as 1)."""
    if isinstance(value, bool):
        return "1"
    if isinstance(value, tuple):
        return ";".join(value)
    return str(value)


def format_cache2(options: CacheOptions) -> str:
    """CacheOptions -> one ``--cache2`` value, keys in uwsgiconf's order, defaults omitted.

    A false boolean is never written: uWSGI reads any present boolean key as on. ``secret``
    is never written (uWSGI has no such key, and argv is visible to every local user).
    """
    parts = []
    for field_name, key in _EMIT_ORDER:
        value = getattr(options, field_name)
        is_required = field_name in ("name", "max_items")
        if not is_required and (value == _FIELD_DEFAULTS[field_name] or value is False):
            continue
        parts.append(f"{key}={_escape(_format_value(field_name, value))}")
    return ",".join(parts)


# --------------------------------------------------------------------------------------------
# The near tier's cache2 keys (``uwcache run --cache2 name=x,items=..,near=redis://…``)
# --------------------------------------------------------------------------------------------

_CACHE2_NEAR_KEYS = {"near": "redis", "prefix": "prefix", "maxttl": "max_ttl", "lease": "lease_ms", "resp": "resp"}


def _split_near_keys(value: str) -> Tuple[str, Optional[Dict[str, Any]]]:
    """(the plain cache2 rest, add_near keyword arguments or None); an error says what is
    wrong, and the caller which value."""
    if not any(k + "=" in value for k in _CACHE2_NEAR_KEYS):
        return value, None
    rest: List[str] = []
    near_kw: Dict[str, Any] = {}
    for piece in _split_escaped(value, ","):
        key, equals, raw = piece.partition("=")
        field = _CACHE2_NEAR_KEYS.get(key) if equals else None
        if field is None:
            rest.append(_escape(piece))
            continue
        if field in near_kw and near_kw[field] != raw:
            raise ConfigError(f"{key} is given twice with different values")
        near_kw[field] = raw
    if not near_kw:
        return value, None
    if "redis" not in near_kw:
        verb = "needs" if len(near_kw) == 1 else "need"
        raise ConfigError(f"{', '.join(sorted(near_kw))} {verb} near=redis://… (the Redis URL)")
    for field in ("max_ttl", "lease_ms"):
        if field in near_kw:
            raw = near_kw[field]
            if not raw.isdigit():
                raise ConfigError(f"{field} must be a whole number, got {raw!r}")
            near_kw[field] = int(raw)
    return ",".join(rest), near_kw


def split_cache2_near(value: str) -> Tuple[str, Optional[Dict[str, Any]]]:
    """Take the near-cache keys out of a cache2 value: (the plain cache2 rest, add_near kwargs
    or None). ``near=`` is the Redis URL; ``prefix=``, ``maxttl=`` (s), ``lease=`` (ms),
    ``resp=`` need it."""
    if not isinstance(value, str):
        return value, None
    return _restating(value, _split_near_keys)


def _cache2_entry(value: str, *, store_sync_default: int = 0) -> Tuple[CacheOptions, Optional[Dict[str, Any]]]:
    """A cache2 value, near keys included -> (CacheOptions, add_near kwargs or None); an error
    says what is wrong, and the caller which value."""
    plain, near_kw = _split_near_keys(value)
    return _cache2_options(plain, store_sync_default=store_sync_default), near_kw


def cache2_entry(value: str) -> Tuple[CacheOptions, Optional[Dict[str, Any]]]:
    """What ``Caching.from_cache2`` adds for one value: (CacheOptions, add_near kwargs or None)."""
    return _restating(value, _cache2_entry)


# --------------------------------------------------------------------------------------------
# Writing uWSGI options
# --------------------------------------------------------------------------------------------


def _decode_for_uwsgi(what: str, value: StrOrBytes) -> str:
    """uWSGI options are text: bytes must be UTF-8 to be written out."""
    if isinstance(value, str):
        return value
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {value!r} is not UTF-8 text, so it cannot be written as a uWSGI option") from None


def _preload_entry(cache_name: str, payload: str, what: str) -> str:
    """``CACHE PAYLOAD``: always named, since a nameless entry goes into every cache in uWSGI."""
    if " " in cache_name:
        raise ConfigError(
            f"{what} targets cache {cache_name!r}, whose name contains a space: uWSGI takes the text "
            f"before the first space as the cache name, so it cannot be expressed as a uWSGI option")
    entry = f"{cache_name} {payload}"
    if "\0" in entry:
        raise ConfigError(f"{what} contains a NUL character, which a uWSGI option cannot carry")
    return entry


def _item_entry(item: PreloadItem, cache_name: str) -> str:
    """``CACHE KEY=VALUE``; a key with '=' cannot be written (uWSGI splits at the first '=')."""
    key = _decode_for_uwsgi("add_item key", item.key)
    value = _decode_for_uwsgi("add_item value", item.value)
    what = f"add_item({key!r})"
    if "=" in key:
        raise ConfigError(
            f"{what}: the key contains '=', but uWSGI splits add-cache-item at the first '=', so it "
            f"cannot be expressed as a uWSGI option")
    return _preload_entry(cache_name, f"{key}={value}", what)


def _ini_line(option: str, value: str) -> str:
    """``option = value``, refusing values an ini file would alter (trimmed, unquoted, split)."""
    problem = None
    if "\n" in value or "\r" in value:
        problem = "contains a line break"
    elif value != value.strip(" \t"):
        problem = "starts or ends with whitespace, which the ini reader strips"
    elif len(value) >= 2 and value.startswith('"') and value.endswith('"'):
        problem = "is wrapped in double quotes, which the ini reader removes"
    if problem:
        raise ConfigError(f"{option} value {value!r} {problem}: it cannot be written to an ini file "
                          f"(use to_uwsgi_args() or change the value)")
    return f"{option} = {value}"


# --------------------------------------------------------------------------------------------
# Reading uWSGI ini files
# --------------------------------------------------------------------------------------------

_INI_WHITESPACE = " \t\r"


def _decode_ini(data: bytes, where: str) -> str:
    """ini files are UTF-8 text; say so rather than leak a UnicodeDecodeError."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where} is not UTF-8 text (byte {exc.start})") from None


def _read_source(source: Union[str, os.PathLike, IO[str], IO[bytes]]) -> Tuple[str, str]:
    """(text, description) from a path, a file-like object, or ini text containing a newline."""
    if hasattr(source, "read"):
        data = source.read()  # type: ignore[union-attr]
        where = str(getattr(source, "name", "<ini>"))
        return (_decode_ini(data, where) if isinstance(data, bytes) else data), where
    if isinstance(source, str) and "\n" in source:
        return source, "<ini>"
    if isinstance(source, (str, os.PathLike)):
        path = pathlib.Path(source)
        try:
            return _decode_ini(path.read_bytes(), str(path)), str(path)
        except OSError as exc:
            raise ConfigError(f"cannot read ini file {str(path)!r}: {exc.strerror or exc}") from None
    raise ConfigError(f"from_ini source must be a path, a file object or ini text, got {source!r}")


def _section_options(text: str, section: str, where: str) -> Iterator[Tuple[int, str, str]]:
    """Yield (line number, key, value) of ``section``, the way uWSGI's own ini reader splits.

    uWSGI trims spaces/tabs/CR around lines, keys and values, takes comments only at the start
    of a line, and repeats keys freely (one ``cache2`` line per cache), which is why this is
    not configparser. uwcache also removes one pair of double quotes around a value.
    """
    current = None
    seen = False
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.strip(_INI_WHITESPACE)
        if not line or line[0] in "#;":
            continue
        if line[0] == "[":
            current = line[1:-1] if line.endswith("]") else line[1:]
            seen = seen or current == section
            continue
        if current != section:
            continue
        key, _equals, value = line.partition("=")
        value = value.strip(_INI_WHITESPACE)
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        yield number, key.rstrip(_INI_WHITESPACE), value
    if not seen:
        raise ConfigError(f"{where}: there is no [{section}] section")


def _parse_flag(option: str, raw: str) -> bool:
    """ini flags: empty or an on-word is True, an off-word False (as uWSGI reads flag options)."""
    lowered = raw.lower()
    if lowered == "" or lowered in _TRUE_WORDS:
        return True
    if lowered in _FALSE_WORDS:
        return False
    raise ConfigError(f"option '{option}' has value {raw!r}: expected one of true, false, 1, 0, yes, no, on, off")


def _parse_ini_uint(option: str, raw: str) -> int:
    """Decimal digits, as for cache2 numbers."""
    if not _DIGITS_RE.fullmatch(raw):
        raise ConfigError(f"option '{option}' has value {raw!r}: expected plain decimal digits (no sign or suffix)")
    return int(raw)


# Options read from ini files: name -> (kind, parser). "single" options may repeat only with
# the same value; "list" options collect one entry per line.
_INI_SINGLE = {
    "cache": _parse_ini_uint,
    "cache-blocksize": _parse_ini_uint,
    "cache-store": lambda option, raw: raw,
    "cache-store-sync": _parse_ini_uint,
    "cache-sync": lambda option, raw: raw,
    "cache-use-last-modified": _parse_flag,
    "cache-no-expire": _parse_flag,
    "cache-expire-freq": _parse_ini_uint,
    "cache-report-freed-items": _parse_flag,
}
_INI_LIST = ("cache2", "cache-udp-server", "cache-udp-node", "add-cache-item", "files")
_INI_FILE_OPTIONS = {"load-file-in-cache": False, "load-file-in-cache-gzip": True}  # option -> gzip
_LEGACY_OPTIONS = ("cache-blocksize", "cache-store", "cache-sync", "cache-use-last-modified",
                   "cache-udp-server", "cache-udp-node")


class _Entry(NamedTuple):
    """One option as read: an ini line (``line`` is its number) or a pair (``line`` None)."""

    line: Optional[int]
    option: str
    raw: str

    def first(self) -> str:
        """Where an earlier value came from, for the message about a conflicting repeat."""
        return f"line {self.line}" if self.line is not None else f"the pair ({self.option!r}, {self.raw!r})"


class _IniOptions:
    """The cache options of one ini section (and the pairs after it), before they fill a Caching."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.single: Dict[str, Tuple[_Entry, Any]] = {}  # option -> (entry, parsed value)
        self.lists: Dict[str, List[_Entry]] = {name: [] for name in _INI_LIST}  # option -> entries

    def error(self, entry: _Entry, detail: str, restated: str = "") -> OptionError:
        """The error about one entry: ``WHERE line N: ...`` for an ini line, ``OPTION 'VALUE': ...``
        for a pair; ``restated`` (say ``cache2 'VALUE': ``) goes before ``detail`` in a line's
        message only, since a pair's message already shows the value."""
        if entry.line is not None:
            message = f"{self.where} line {entry.line}: {restated}{detail}"
        else:
            message = f"{entry.option} {entry.raw!r}: {detail}"
        return OptionError(message, option=entry.option, value=entry.raw, line=entry.line, detail=detail)

    def add(self, entry: _Entry) -> None:
        """Record one option; non-cache options are ignored."""
        option, raw = entry.option, entry.raw
        if option in _INI_FILE_OPTIONS:  # one list for both, so their relative order is kept
            self.lists["files"].append(entry)
            return
        if option in self.lists:
            self.lists[option].append(entry)
            return
        parser = _INI_SINGLE.get(option)
        if parser is None:
            return
        try:
            value = parser(option, raw)
        except ConfigError as exc:
            raise self.error(entry, str(exc)) from None
        previous = self.single.get(option)
        if previous is not None and previous[1] != value:
            raise self.error(entry, f"{option} is set again with a different value ({raw!r}, first on "
                                    f"{previous[0].first()}); uWSGI would keep the last one silently")
        self.single[option] = (entry, value)

    def get(self, option: str, default: Any = None) -> Any:
        """The parsed value of a single-valued option."""
        return self.single[option][1] if option in self.single else default


def _legacy_cache(opts: _IniOptions) -> Optional[CacheOptions]:
    """The pre-1.9 ``cache = N`` cache named 'default', or None when not configured."""
    items = opts.get("cache", 0)
    if not items:
        stray = [o for o in _LEGACY_OPTIONS if o in opts.single or opts.lists.get(o)]
        if stray:
            raise ConfigError(f"{opts.where}: {stray[0]} has no effect without 'cache = N' (the legacy "
                              f"cache it configures); use a cache2 key instead")
        return None
    fields: Dict[str, Any] = {"name": "default", "max_items": items,
                    "store_sync_interval": opts.get("cache-store-sync", 0)}
    simple = {"cache-blocksize": "block_size", "cache-store": "store",
              "cache-use-last-modified": "use_lastmod"}
    for option, field_name in simple.items():
        if option in opts.single:
            fields[field_name] = opts.get(option)
    if "cache-sync" in opts.single:
        fields["sync_from"] = (opts.get("cache-sync"),)
    fields["udp_servers"] = tuple(entry.raw for entry in opts.lists["cache-udp-server"])
    fields["udp_clients"] = tuple(entry.raw for entry in opts.lists["cache-udp-node"])
    try:
        return CacheOptions(**fields)
    except ConfigError as exc:
        raise ConfigError(f"{opts.where}: legacy 'cache = {items}': {exc}") from None


def _add_caches(opts: _IniOptions, caching: Caching) -> None:
    """The legacy cache, then one cache per cache2 entry (with its near tier), in order."""
    legacy = _legacy_cache(opts)
    if legacy is not None:
        caching._append_cache(legacy)
    store_sync = opts.get("cache-store-sync", 0)
    for entry in opts.lists["cache2"]:
        try:
            options, near_kw = _cache2_entry(entry.raw, store_sync_default=store_sync)
        except ConfigError as exc:
            raise opts.error(entry, str(exc), restated=f"cache2 {entry.raw!r}: ") from None
        try:
            caching._append_cache(options)
            if near_kw is not None:
                caching.add_near(options.name, **near_kw)
        except ConfigError as exc:
            raise opts.error(entry, str(exc)) from None


def _split_preload(opts: _IniOptions, caching: Caching, entry: _Entry) -> Iterator[Tuple[Optional[str], str]]:
    """Yield (cache name, payload) for one preload entry; a nameless entry goes to every cache."""
    option, raw = entry.option, entry.raw
    if not raw:
        raise opts.error(entry, f"{option} is empty")
    if not caching.caches:
        raise opts.error(entry, f"{option} = {raw!r} but no cache is configured")
    name, space, payload = raw.partition(" ")
    if not space:
        for cache in caching.caches:  # uWSGI stores a nameless entry in every cache
            yield cache.name, raw
        return
    if name not in {cache.name for cache in caching.caches}:
        hint = ""
        if option == "add-cache-item" and "=" in name:
            hint = (" - this looks like KEY=VALUE with a space in the value, which uWSGI would have "
                    "stored nowhere; write 'CACHE KEY=VALUE' to name the cache explicitly")
        raise opts.error(entry, f"{option} = {raw!r}: uWSGI reads the text before the first space "
                                f"({name!r}) as a cache name, and no cache has that name{hint}")
    yield name, payload


def _add_preloads(opts: _IniOptions, caching: Caching) -> None:
    """Turn add-cache-item / load-file-in-cache[-gzip] entries into explicit per-cache preloads."""
    for entry in opts.lists["add-cache-item"]:
        raw = entry.raw
        for cache_name, payload in _split_preload(opts, caching, entry):
            key, equals, value = payload.partition("=")
            if not equals:
                raise opts.error(entry, f"add-cache-item = {raw!r} has no '=': expected [CACHE ]KEY=VALUE")
            try:
                caching.items.append(PreloadItem(key, value, cache_name))
            except ConfigError as exc:
                raise opts.error(entry, f"add-cache-item = {raw!r}: {exc}") from None
    for entry in opts.lists["files"]:
        option, raw = entry.option, entry.raw
        for cache_name, path in _split_preload(opts, caching, entry):
            try:
                caching.files.append(PreloadFile(path, _INI_FILE_OPTIONS[option], cache_name))
            except ConfigError as exc:
                raise opts.error(entry, f"{option} = {raw!r}: {exc}") from None


def _apply_basic_params(opts: _IniOptions, caching: Caching) -> None:
    """cache-no-expire / cache-expire-freq / cache-report-freed-items; freq 0 means 3, as in uWSGI."""
    frequency = opts.get("cache-expire-freq")
    if frequency == 0:
        frequency = 3
    try:
        caching.set_basic_params(expire_scan_interval=frequency)
    except ConfigError as exc:  # out of range: the only way a parsed value can fail here
        raise opts.error(opts.single["cache-expire-freq"][0], str(exc)) from None
    caching.set_basic_params(no_expire=opts.get("cache-no-expire"), report_freed=opts.get("cache-report-freed-items"))


IniSource = Union[str, "os.PathLike[str]", IO[str], IO[bytes]]


def read_uwsgi_options(caching: Caching, options: Iterable[Tuple[str, Optional[str]]] = (), *,
                       ini: Optional[IniSource] = None, section: str = "uwsgi") -> Caching:
    """Fill ``caching`` from the ``[section]`` of ``ini`` (if given), then from ``options``.

    ``options`` are ``(option, value)`` pairs as uWSGI names them (``("cache2", "name=a,items=10")``,
    no leading dashes; a value None is a flag, as :meth:`Caching._uwsgi_options` writes them),
    read after the section's lines, as uWSGI reads command-line options after a config file.
    Their values are taken as given (an ini line's value is trimmed and unquoted). Options that
    are not about caches are ignored. Preload entries without a cache name are expanded into
    one entry per cache, which is what uWSGI does with them. An error about one line or pair
    is an :class:`~uwcache.errors.OptionError` that names it.
    """
    entries: List[_Entry] = []
    where = "uWSGI options"
    if ini is not None:
        text, where = _read_source(ini)
        entries = [_Entry(line, option, raw) for line, option, raw in _section_options(text, section, where)]
    for pair in options:
        if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str)
                and isinstance(pair[1], (str, type(None)))):
            raise ConfigError(f"uWSGI options must be (option, value) pairs of str (value None for a flag), "
                              f"got {pair!r}")
        entries.append(_Entry(None, pair[0], "" if pair[1] is None else pair[1]))
    opts = _IniOptions(where)
    for entry in entries:
        opts.add(entry)
    _add_caches(opts, caching)
    _apply_basic_params(opts, caching)
    _add_preloads(opts, caching)
    return caching.validate()
