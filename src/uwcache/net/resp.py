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

from ..errors import CacheError, ProtocolError, ReplyError  # noqa: F401 (re-exported)

__all__ = ["ProtocolError", "ReplyError", "Push", "Parser", "encode_command", "NEED_MORE"]

MAX_BULK = 512 * 1024 * 1024   # Redis's own proto-max-bulk-len default
MAX_AGGREGATE = 1 << 24        # elements in one array, map, set or push
MAX_DEPTH = 32                 # nesting of aggregates
MAX_LINE = 64 * 1024           # a type line (+, -, :, ...) without its CRLF




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


try:  # the C loop for runs of bulk strings (an invalidation's keys); the codec works without it
    from .._engine import _resp_bulks
except ImportError:  # pragma: no cover - the extension is not built
    _resp_bulks = None  # type: ignore[assignment]

_AGGREGATES = frozenset(b"*~>%|")
_ATTRIBUTE = ord("|")


class Parser:
    """Feed bytes, take complete replies. One parser per connection.

    Resumable: a reply split over many reads is parsed once, element by element, with the
    open aggregates kept on a stack, so a large push costs the same in one read or in many."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._stack: List[List[Any]] = []  # open aggregates: [kind, elements still due, items]
        self.accelerated = _resp_bulks is not None

    def feed(self, data: Union[bytes, bytearray, memoryview]) -> None:
        if self._pos > 65536 or (self._pos and self._pos == len(self._buf)):
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def __iter__(self) -> Iterator[Any]:
        while True:
            v = self.gets()
            if v is NEED_MORE:
                return
            yield v

    def _line_end(self, pos: int) -> int:
        end = self._buf.find(b"\r\n", pos, pos + MAX_LINE + 3)
        if end < 0 and len(self._buf) - pos > MAX_LINE + 2:
            raise ProtocolError("RESP line too long")
        return end

    def gets(self) -> Any:
        """The next complete reply, or :data:`NEED_MORE`."""
        buf = self._buf
        stack = self._stack
        pos = self._pos
        size = len(buf)
        while True:
            if pos >= size:
                self._pos = pos
                return NEED_MORE
            kind = buf[pos]
            if kind == 0x24 and stack and self.accelerated:
                frame = stack[-1]
                if frame[1] > 1 and frame[0] != _ATTRIBUTE and frame[0] != 0x25:
                    # all but the last element in C; the last one closes the frame below
                    items, pos = _resp_bulks(buf, pos, frame[1] - 1)
                    if items:
                        frame[2].extend(items)
                        frame[1] -= len(items)
                        continue
            end = self._line_end(pos + 1)
            if end < 0:
                self._pos = pos
                return NEED_MORE
            line = bytes(buf[pos + 1:end])
            if kind == 0x24 or kind == 0x21 or kind == 0x3D:  # $ bulk, ! bulk error, = verbatim
                n = _int(line)
                if n == -1 and kind == 0x24:
                    value: Any = None  # RESP2 null bulk
                    pos = end + 2
                else:
                    if n < 0 or n > MAX_BULK:
                        raise ProtocolError(f"bad RESP bulk length {n}")
                    stop = end + 2 + n
                    if size < stop + 2:
                        self._pos = pos
                        return NEED_MORE
                    if buf[stop] != 13 or buf[stop + 1] != 10:
                        raise ProtocolError("RESP bulk string not followed by CRLF")
                    value = bytes(buf[end + 2:stop])
                    pos = stop + 2
                    if kind == 0x21:
                        value = ReplyError(value.decode("utf-8", "replace"))
                    elif kind == 0x3D:
                        if len(value) < 4 or value[3:4] != b":":
                            raise ProtocolError("RESP3 verbatim string without its format")
                        value = value[4:]
            elif kind in _AGGREGATES:
                n = _int(line)
                pos = end + 2
                if n == -1 and kind == 0x2A:
                    value = None  # RESP2 null array
                elif n < 0 or n > MAX_AGGREGATE:
                    raise ProtocolError(f"bad RESP aggregate length {n}")
                else:
                    if len(stack) >= MAX_DEPTH:
                        raise ProtocolError("RESP reply nested too deeply")
                    due = n * 2 if kind in (0x25, _ATTRIBUTE) else n
                    stack.append([kind, due, []])
                    if due:
                        continue
                    value = self._close(stack.pop())
            else:
                pos = end + 2
                value = self._scalar(kind, line)
            # a complete value: hand it to the aggregates it closes
            while True:
                if value is _ATTR_DONE:
                    break  # an attribute is dropped and takes no element's place
                if not stack:
                    self._pos = pos
                    return value
                frame = stack[-1]
                frame[2].append(value)
                frame[1] -= 1
                if frame[1]:
                    break
                value = self._close(stack.pop())

    @staticmethod
    def _close(frame: List[Any]) -> Any:
        kind, _, items = frame
        if kind == _ATTRIBUTE:
            return _ATTR_DONE
        if kind == 0x3E:
            return Push(items)
        if kind == 0x25:
            pairs = list(zip(items[0::2], items[1::2]))
            try:
                return dict(pairs)
            except TypeError:
                return pairs
        return items

    @staticmethod
    def _scalar(kind: int, line: bytes) -> Any:
        if kind == 0x2B:  # + simple string
            return line.decode("utf-8", "replace")
        if kind == 0x2D:  # - error
            return ReplyError(line.decode("utf-8", "replace"))
        if kind == 0x3A or kind == 0x28:  # : integer, ( big number
            return _int(line)
        if kind == 0x5F:  # _ null
            if line:
                raise ProtocolError("RESP3 null with a payload")
            return None
        if kind == 0x23:  # # boolean
            if line not in (b"t", b"f"):
                raise ProtocolError(f"bad RESP3 boolean {line[:10]!r}")
            return line == b"t"
        if kind == 0x2C:  # , double
            try:
                text = line.decode("ascii")
                if not text or "_" in text or text != text.strip():
                    raise ValueError(text)
                return float(text)
            except (UnicodeDecodeError, ValueError):
                raise ProtocolError(f"bad RESP3 double {line[:40]!r}") from None
        raise ProtocolError(f"unknown RESP type byte {bytes([kind])!r}")


_ATTR_DONE: Any = object()
