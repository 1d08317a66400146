"""RemoteCache: a cache of another node (uwcache or uWSGI) through uWSGI's remote protocol.

    cache = uwcache.RemoteCache("sessions@10.0.0.5:3031", timeout=4.0)
    cache.set("k", b"v", expires=60)
    cache.get("k")

Every call is one connection and one request (the "magic" protocol, modifier2 17), like a
uWSGI worker's ``cache_get(key, "name@host:port")``.  Host names and IPv6 resolve; an
address without ``:`` is a UNIX socket path.  The protocol's only failure signal is a
closed connection, so a refused write cannot say why (too big, cache full...).

What the protocol cannot do is refused, not faked: there is no command to list keys or
count items (``keys()``, ``len()``, iteration), and no atomic math (uWSGI's own client
sends the operand as the new value; a get + compute + update would race), so ``incr`` and
friends raise :class:`NotImplementedError`.
"""

from __future__ import annotations

import socket
import struct
import time
from typing import Any, Iterator, List, NoReturn, Optional, Tuple, Union

from . import wire
from .address import format_address, parse_address
from .errors import AddressError, EmptyValue, KeyTooLong, NotAnInteger, RemoteError, RemoteUnavailable
from .net.client import DEFAULT_TIMEOUT, magic_request

__all__ = ["RemoteCache", "RemoteError", "RemoteUnavailable"]

Bytesish = Union[bytes, bytearray, memoryview, str]


def _key(key: Bytesish) -> bytes:
    k = wire.to_bytes(key, "key")
    if not k:
        raise EmptyValue("keys must not be empty")
    if len(k) > wire.MAX_FIELD:
        raise KeyTooLong(f"key of {len(k)} bytes: uWSGI's remote protocol carries at most {wire.MAX_FIELD}")
    return k


def _expires(expires: int) -> int:
    if isinstance(expires, bool) or not isinstance(expires, int):
        raise TypeError("expires must be an int (seconds, 0 = never)")
    if expires < 0:
        raise ValueError("expires must be >= 0 (seconds, 0 = never)")
    return expires


class RemoteCache:
    """One cache of a remote node, addressed as ``"name@host:port"`` (``"@host:port"`` or
    just ``"host:port"``: the remote node's default cache; ``"name@/path/to.sock"``: a
    UNIX socket, such as a node's default ``<namespace dir>/server.sock``).

    ``secret``: the shared secret of a server started with one (it is never sent: the
    client answers the server's challenge with an HMAC)."""

    def __init__(self, spec: str, *, timeout: float = DEFAULT_TIMEOUT, secret: Optional[str] = None) -> None:
        if not isinstance(spec, str):
            raise TypeError("spec must be a str like 'name@host:port'")
        if "@" in spec:
            name, _, address = spec.partition("@")
        else:
            name, address = "", spec
        try:
            self._address = parse_address(address, unix=True)
        except AddressError as exc:
            raise ValueError(f"RemoteCache({spec!r}): {exc}; expected 'name@host:port'") from None
        if timeout <= 0:
            raise ValueError("timeout must be > 0 seconds")
        if secret is not None and (not isinstance(secret, str) or not secret):
            raise ValueError("secret must be a non-empty str (the server's shared secret) or None")
        self.name: str = name
        self.timeout = float(timeout)
        self._secret = secret

    @property
    def address(self) -> str:
        return format_address(self._address)

    # -- transport --------------------------------------------------------------------------

    def _call(self, packet: bytes) -> Optional[Tuple[wire.MagicReply, bytes]]:
        try:
            return magic_request(self._address, packet, timeout=self.timeout, secret=self._secret)
        except (socket.timeout, TimeoutError) as exc:
            raise RemoteUnavailable(f"{self._where()}: no answer within {self.timeout:g} s") from exc
        except OSError as exc:
            raise RemoteUnavailable(f"{self._where()}: {exc.strerror or exc}") from exc
        except wire.WireError as exc:
            raise RemoteError(f"{self._where()}: unusable reply: {exc}") from exc

    def _where(self) -> str:
        return f"cache {self.name or '(default)'!r} at {self.address}"

    def _refused(self, what: str) -> NoReturn:
        raise RemoteError(f"{self._where()} refused to {what} (the key or value is too large for it, "
                          "or it is full: uWSGI's protocol does not say which)")

    # -- reads ------------------------------------------------------------------------------

    def get_with_expiry(self, key: Bytesish) -> Optional[Tuple[bytes, int]]:
        """(value, absolute expiry in seconds or 0) or None when missing."""
        res = self._call(wire.encode_magic_get(_key(key), cache=self.name))
        if res is None or res[0].size == 0:
            return None
        return res[1], res[0].expires

    def get(self, key: Bytesish, default: Any = None) -> Any:
        found = self.get_with_expiry(key)
        return default if found is None else found[0]

    def get_int(self, key: Bytesish, default: Any = None) -> Any:
        """The 8-byte little-endian signed integer stored under `key` (math values)."""
        value = self.get(key)
        if value is None:
            return default
        if len(value) != 8:
            raise NotAnInteger(f"the value of {key!r} is {len(value)} bytes, not an 8-byte integer")
        return struct.unpack("<q", value)[0]

    def ttl(self, key: Bytesish) -> Optional[int]:
        """Seconds left before `key` expires, None if it never does; KeyError if missing."""
        found = self.get_with_expiry(key)
        if found is None:
            raise KeyError(key)
        if not found[1]:
            return None
        return max(found[1] - int(time.time()), 0)

    def __contains__(self, key: Bytesish) -> bool:
        return self._call(wire.encode_magic_exists(_key(key), cache=self.name)) is not None

    def __getitem__(self, key: Bytesish) -> bytes:
        found = self.get_with_expiry(key)
        if found is None:
            raise KeyError(key)
        return found[0]

    # -- writes -----------------------------------------------------------------------------

    def _value(self, value: Bytesish) -> bytes:
        v = wire.to_bytes(value, "value")
        if not v:
            raise EmptyValue("values must not be empty (uWSGI's cache cannot store an empty value)")
        return v

    def set(self, key: Bytesish, value: Bytesish, expires: int = 0) -> None:
        """Create or overwrite (uWSGI's ``update``); `expires` in seconds, 0 = never."""
        k, v = _key(key), self._value(value)
        if self._call(wire.encode_magic_update(k, v, _expires(expires), cache=self.name)) is None:
            self._refused(f"store {k[:64]!r} ({len(v)} bytes)")

    def add(self, key: Bytesish, value: Bytesish, expires: int = 0) -> bool:
        """Store only if absent (uWSGI's ``set``); False if the key exists."""
        k, v = _key(key), self._value(value)
        if self._call(wire.encode_magic_set(k, v, _expires(expires), cache=self.name)) is not None:
            return True
        if k in self:  # the protocol has one failure signal: find out which failure it was
            return False
        self._refused(f"store {k[:64]!r} ({len(v)} bytes)")

    def delete(self, key: Bytesish) -> bool:
        """True if the key existed and was deleted."""
        return self._call(wire.encode_magic_del(_key(key), cache=self.name)) is not None

    def clear(self) -> None:
        """Delete every item of the remote cache.  (A real uWSGI server clears only as
        many slots as its *first* cache has: uwsgi-behaviour.md §7.5.)"""
        if self._call(wire.encode_magic_clear(cache=self.name)) is None:
            raise RemoteError(f"{self._where()} refused to clear (unknown cache?)")

    def __setitem__(self, key: Bytesish, value: Bytesish) -> None:
        self.set(key, value)

    def __delitem__(self, key: Bytesish) -> None:
        if not self.delete(key):
            raise KeyError(key)

    # -- what the protocol cannot do --------------------------------------------------------

    def _no(self, what: str, why: str) -> NoReturn:
        raise NotImplementedError(f"RemoteCache.{what}: {why}")

    def keys(self) -> List[bytes]:
        self._no("keys()", "uWSGI's remote protocol has no command to list keys")

    def __len__(self) -> int:
        self._no("len()", "uWSGI's remote protocol has no command to count items")

    def __iter__(self) -> Iterator[bytes]:
        self._no("iteration", "uWSGI's remote protocol has no command to list keys")

    def _math(self, name: str) -> NoReturn:
        self._no(f"{name}()", "uWSGI's remote protocol has no atomic math (its client sends the operand "
                 "as the new value, and get + update would lose concurrent increments)")

    def incr(self, key: Bytesish, n: int = 1, expires: int = 0) -> int:
        self._math("incr")

    def decr(self, key: Bytesish, n: int = 1, expires: int = 0) -> int:
        self._math("decr")

    def mul(self, key: Bytesish, n: int = 2, expires: int = 0) -> int:
        self._math("mul")

    def div(self, key: Bytesish, n: int = 2, expires: int = 0) -> int:
        self._math("div")

    # -- lifecycle (nothing is held open between calls) -------------------------------------

    def close(self) -> None:
        """Nothing to release: each call uses its own connection."""

    def __enter__(self) -> "RemoteCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<uwcache.RemoteCache {self.name or '(default)'!r} at {self.address}>"
