"""The exceptions uwcache raises. Every one derives from :class:`CacheError`.

Messages name the limit that was hit and the option that sets it, so a user can fix
the configuration without reading the source.
"""

from __future__ import annotations


class CacheError(Exception):
    """Base class of every error raised by uwcache."""


class ConfigError(CacheError, ValueError):
    """An invalid configuration value; the message names the option and its accepted range."""


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


__all__ = [
    "CacheError",
    "ConfigError",
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
]
