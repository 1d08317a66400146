"""The exceptions uwcache raises. Every one derives from :class:`CacheError`.

Messages name the limit that was hit and the option that sets it, so a user can fix
the configuration without reading the source.
"""

from __future__ import annotations


class CacheError(Exception):
    """Base class of every error raised by uwcache."""


class ConfigError(CacheError, ValueError):
    """An invalid configuration value; the message names the option and its accepted range."""


class OptionError(ConfigError):
    """A uWSGI option uwcache refuses: one ini line, or one ``(option, value)`` pair given to
    :meth:`uwcache.Caching.from_uwsgi_options`. It names the option itself, so a caller (the
    ``uwcache run`` command line) can say which of its own arguments is wrong.

    ``option`` is the option as uWSGI spells it (``cache2``, ``add-cache-item``), ``value`` its
    value as given, ``line`` its line in the ini file (None for a pair), and ``detail`` what is
    wrong with it; the message puts them together.
    """

    def __init__(self, message: str, *, option: str = "", value: str = "", line: int | None = None,
                 detail: str = "") -> None:
        super().__init__(message)
        self.option = option
        self.value = value
        self.line = line
        self.detail = detail or message


class KeyTooLong(CacheError, ValueError):
    """The key is longer than the cache's ``key_size``."""


class ValueTooLarge(CacheError, ValueError):
    """The value does not fit in one item (``block_size``, or ``block_size * block_count`` in bitmap mode)."""


class EmptyValue(CacheError, ValueError):
    """Keys and values must be at least one byte long (as in uWSGI)."""


class CacheFull(CacheError):
    """No free item slot (``max_items``) or no free run of blocks (bitmap mode) for the value."""


class NotAnInteger(CacheError, TypeError):
    """A math operation or ``get_int`` met a value that is not an 8-byte signed integer."""


class RegionMismatch(CacheError):
    """An existing shared-memory region or store file does not match the configuration."""


class CorruptStore(RegionMismatch):
    """A store file is not a uwcache store, or its header is damaged."""


class SharedMemoryFull(CacheError):
    """A new region does not fit in the free space of its directory (``/dev/shm``, a tmpfs, a disk).

    Raised when the cache is created, never later: a region's memory is reserved at creation.
    """


class CacheClosed(CacheError):
    """The cache was closed in this process."""


class UnknownCache(CacheError, KeyError):
    """No cache of that name is configured or attached."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable
        return str(self.args[0]) if self.args else ""


class AddressError(ConfigError):
    """An address that is not one of the forms :mod:`uwcache.address` accepts."""


class SerializerMismatch(CacheError, ValueError):
    """A stored value was written with a serializer this reader does not accept.

    Raised instead of unpickling a pickle-tagged value in a layer configured for JSON or raw
    bytes (see the trust model in :mod:`uwcache.serializers`), and when processes sharing a
    cache use different custom serializers' tags. All processes of an app must use the same
    serializer.
    """


# -- the uWSGI wire codec (uwcache.wire)


class WireError(CacheError, ValueError):
    """Bytes that are not a valid packet, or values that cannot be put in one."""


class Truncated(WireError):
    """The data ends before a length field says it should."""


class Malformed(WireError):
    """A field is invalid: wrong modifier, empty key, bad number, trailing bytes, ..."""


class Oversized(WireError):
    """A length does not fit its 16-bit field or the packet does not fit a UDP datagram."""


class BadSignature(WireError):
    """A signed replication packet is not authentic, not signed, stale or replayed."""


# -- the network (uwcache.remote, uwcache.net.*)


class RemoteError(CacheError):
    """The remote node refused the request or answered something unusable."""


class RemoteUnavailable(RemoteError, ConnectionError):
    """The remote node cannot be reached, or did not answer within the timeout."""


class SyncError(CacheError):
    """A peer did not deliver a usable dump."""


class ProtocolError(CacheError, ValueError):
    """The peer sent bytes that are not RESP2/RESP3."""


class ReplyError(CacheError):
    """An error reply (``-ERR ...`` or a RESP3 bulk error), returned as a value."""

    @property
    def code(self) -> str:
        text = str(self.args[0]) if self.args else ""
        return text.split(" ", 1)[0]


# -- the command line (uwcache.cli)


class CLIError(CacheError):
    """A failure to report as ``uwcache: error: <message>`` with a non-zero exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


__all__ = [
    "CacheError",
    "ConfigError",
    "OptionError",
    "KeyTooLong",
    "ValueTooLarge",
    "EmptyValue",
    "CacheFull",
    "NotAnInteger",
    "RegionMismatch",
    "CorruptStore",
    "SharedMemoryFull",
    "CacheClosed",
    "UnknownCache",
    "AddressError",
    "SerializerMismatch",
    "WireError",
    "Truncated",
    "Malformed",
    "Oversized",
    "BadSignature",
    "RemoteError",
    "RemoteUnavailable",
    "SyncError",
    "ProtocolError",
    "ReplyError",
    "CLIError",
]
