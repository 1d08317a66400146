"""A sans-IO codec for Redis's RESP2 and RESP3 (the near cache's listener speaks it).

Like :mod:`uwcache.wire`, nothing here touches a socket: :func:`encode_command` turns a
command into bytes, and a :class:`Parser` is fed whatever bytes arrived and hands back
complete replies. Malformed input raises :class:`ProtocolError`; a reply that is not
complete yet is simply not returned until more bytes come. Limits on lengths and nesting
keep a hostile or broken server from making us allocate without bound.

Reply types: simple strings are ``str``; bulk strings and verbatim strings are ``bytes``;
integers and big numbers ``int``; doubles ``float``; booleans ``bool``; nulls ``None``;
arrays and sets ``list``; maps ``dict`` (``list`` of pairs when a key is unhashable);
errors are returned (not raised) as :class:`ReplyError`; RESP3 pushes are :class:`Push`.
Attributes (``|``) are parsed and dropped.
"""

from __future__ import annotations

from typing import Any, Iterator, List, Optional, Tuple, Union

from ..errors import CacheError

__all__ = ["ProtocolError", "ReplyError", "Push", "Parser", "encode_command", "NEED_MORE"]

MAX_BULK = 512 * 1024 * 1024   # Redis's own proto-max-bulk-len default
MAX_AGGREGATE = 1 << 24        # elements in one array, map, set or push
MAX_DEPTH = 32                 # nesting of aggregates
MAX_LINE = 64 * 1024           # a type line (+, -, :, ...) without its CRLF


class ProtocolError(CacheError, ValueError):
    """The peer sent bytes that are not RESP2/RESP3."""


class ReplyError(Exception):
    """An error reply (``-ERR ...`` or a RESP3 bulk error), returned as a value."""

    @property
    def code(self) -> str:
        text = str(self.args[0]) if self.args else ""
        return text.split(" ", 1)[0]


class Push(list):  # type: ignore[type-arg]
    """A RESP3 out-of-band push (``>``), e.g. ``[b"invalidate", [b"key", ...]]``."""


class _NeedMore(object):
    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_MORE"


NEED_MORE: Any = _NeedMore()


def _arg(value: Union[bytes, bytearray, memoryview, str, int, float]) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bool):
        raise TypeError("RESP arguments may not be bool (say 1/0 or a word)")
    if isinstance(value, (int, float)):
        return repr(value).encode("ascii")
    raise TypeError(f"RESP arguments must be bytes, str, int or float, not {type(value).__name__}")


def encode_command(*args: Union[bytes, bytearray, memoryview, str, int, float]) -> bytes:
    """One command as a RESP array of bulk strings (what every Redis accepts)."""
    if not args:
        raise ValueError("a command needs at least its name")
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        b = _arg(a)
        parts.append(b"$%d\r\n" % len(b))
        parts.append(b)
        parts.append(b"\r\n")
    return b"".join(parts)


def _int(line: bytes) -> int:
    # int() accepts "+1", " 1", "1_0": RESP does not
    body = line[1:] if line[:1] == b"-" else line
    if not body or not body.isdigit():
        raise ProtocolError(f"bad integer in RESP: {line[:40]!r}")
    return int(line)


class Parser:
    """Feed bytes, take complete replies. One parser per connection."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0

    def feed(self, data: Union[bytes, bytearray, memoryview]) -> None:
        if self._pos > 65536 and self._pos * 2 > len(self._buf):
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def gets(self) -> Any:
        """The next complete reply, or :data:`NEED_MORE`."""
        while True:
            got = self._parse(self._pos, 0)
            if got is None:
                return NEED_MORE
            value, end, is_attribute = got
            self._pos = end
            if not is_attribute:
                return value

    def __iter__(self) -> Iterator[Any]:
        while True:
            v = self.gets()
            if v is NEED_MORE:
                return
            yield v

    def _line(self, pos: int) -> Optional[Tuple[bytes, int]]:
        end = self._buf.find(b"\r\n", pos, pos + MAX_LINE + 2)
        if end < 0:
            if len(self._buf) - pos > MAX_LINE + 1:
                raise ProtocolError("RESP line too long")
            return None
        return bytes(self._buf[pos:end]), end + 2

    def _parse(self, pos: int, depth: int) -> Optional[Tuple[Any, int, bool]]:
        if depth > MAX_DEPTH:
            raise ProtocolError("RESP reply nested too deeply")
        if pos >= len(self._buf):
            return None
        kind = self._buf[pos]
        got = self._line(pos + 1)
        if got is None:
            return None
        line, pos = got
        if kind == 0x2B:  # + simple string
            return line.decode("utf-8", "replace"), pos, False
        if kind == 0x2D:  # - error
            return ReplyError(line.decode("utf-8", "replace")), pos, False
        if kind == 0x3A:  # : integer
            return _int(line), pos, False
        if kind == 0x28:  # ( big number
            return _int(line), pos, False
        if kind == 0x5F:  # _ null
            if line:
                raise ProtocolError("RESP3 null with a payload")
            return None, pos, False
        if kind == 0x23:  # # boolean
            if line not in (b"t", b"f"):
                raise ProtocolError(f"bad RESP3 boolean {line[:10]!r}")
            return line == b"t", pos, False
        if kind == 0x2C:  # , double
            try:
                text = line.decode("ascii")
                if not text or "_" in text or text != text.strip():
                    raise ValueError(text)
                return float(text), pos, False
            except (UnicodeDecodeError, ValueError):
                raise ProtocolError(f"bad RESP3 double {line[:40]!r}") from None
        if kind in (0x24, 0x21, 0x3D):  # $ bulk, ! bulk error, = verbatim
            n = _int(line)
            if n == -1 and kind == 0x24:
                return None, pos, False  # RESP2 null bulk
            if n < 0 or n > MAX_BULK:
                raise ProtocolError(f"bad RESP bulk length {n}")
            if len(self._buf) < pos + n + 2:
                return None
            data = bytes(self._buf[pos:pos + n])
            if self._buf[pos + n:pos + n + 2] != b"\r\n":
                raise ProtocolError("RESP bulk string not followed by CRLF")
            pos += n + 2
            if kind == 0x21:
                return ReplyError(data.decode("utf-8", "replace")), pos, False
            if kind == 0x3D:
                if len(data) < 4 or data[3:4] != b":":
                    raise ProtocolError("RESP3 verbatim string without its format")
                return data[4:], pos, False
            return data, pos, False
        if kind in (0x2A, 0x7E, 0x3E, 0x25, 0x7C):  # * array, ~ set, > push, % map, | attribute
            n = _int(line)
            if n == -1 and kind == 0x2A:
                return None, pos, False  # RESP2 null array
            if n < 0 or n > MAX_AGGREGATE:
                raise ProtocolError(f"bad RESP aggregate length {n}")
            count = n * 2 if kind in (0x25, 0x7C) else n
            items: List[Any] = []
            for _ in range(count):
                got2 = self._parse(pos, depth + 1)
                if got2 is None:
                    return None
                value, pos, is_attr = got2
                while is_attr:  # an attribute before an element belongs to that element
                    got2 = self._parse(pos, depth + 1)
                    if got2 is None:
                        return None
                    value, pos, is_attr = got2
                items.append(value)
            if kind == 0x7C:
                return None, pos, True
            if kind == 0x3E:
                return Push(items), pos, False
            if kind == 0x25:
                pairs = list(zip(items[0::2], items[1::2]))
                try:
                    return dict(pairs), pos, False
                except TypeError:
                    return pairs, pos, False
            return items, pos, False
        raise ProtocolError(f"unknown RESP type byte {bytes([kind])!r}")
