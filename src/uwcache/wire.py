"""Sans-IO codec of the uwsgi packet formats spoken by uWSGI's cache.

Nothing here touches a socket, a thread or a file: every function turns values into
bytes or bytes into values, so the network code (``uwcache.net``) stays small and this
module can be fuzzed.  Everything takes and returns :class:`bytes`; a key or name given as
:class:`str` is encoded as UTF-8.  Every decoding failure raises a subclass of
:class:`WireError` (itself a :class:`ValueError` and a :class:`uwcache.errors.CacheError`):

* :class:`Truncated` -- the data ends before a length field says it should;
* :class:`Malformed` -- a field is invalid (wrong modifier, empty key, non-digit number,
  trailing garbage, unknown command);
* :class:`Oversized` -- a value does not fit a 16-bit length field or a UDP datagram
  (uWSGI silently truncates such lengths; we refuse);
* :class:`BadSignature` -- a signed replication packet failed verification.

Formats (all integers little-endian; see docs/internals/uwsgi-behaviour.md, sections
5, 6, 7):

Packet
    ``u8 modifier1 | u16le datasize | u8 modifier2 | body``; ``datasize`` counts the body
    only.  The cache uses ``modifier1 = 111``; ``modifier2`` is the command.

Vars
    repeated ``u16le keylen | key | u16le vallen | value``; keys are non-empty, numbers
    are ASCII decimal, a repeated var: the last one wins.
Array (modifier2 1)
    repeated ``u16le len | bytes``; zero-length items are skipped.

UDP replication (one datagram per operation, no vars, no names)
    * set/update, modifier2 10: ``u16le keylen | key | u16le vallen | value | u16le
      explen | expires`` where ``expires`` is absolute seconds in ASCII decimal, ``"0"``
      for none.  Receivers also accept the packet without the expires section.
    * delete, modifier2 11: ``u16le keylen | key`` -- real uWSGI receivers drop this exact
      form (a length check off by two), so :func:`encode_udp_delete` appends two zero
      bytes by default, which they do apply.  :func:`decode_udp` accepts both forms.

Signed replication envelope, version 2 (a uwcache extension), modifier2 110: see
:func:`sign_replication`.  The MAC covers a sender id, an epoch and a sequence number,
the cache name and the destination address, so that a receiver which remembers the
highest sequence per sender (``uwcache.net.seen``) refuses every replay.  Nodes send and
accept only version 2.

Signed replication envelope, version 1 (legacy: :func:`sign_udp` / :func:`verify_udp`,
no longer sent nor accepted by nodes, since it can be replayed to another receiver, after
a restart or once the replay memory overflowed), modifier2 110::

    6f | u16le datasize | 6e                       outer header (modifier1 111, modifier2 110)
    u16le version (= 1)
    u64le timestamp                                sender's clock, seconds since the epoch
    8 bytes nonce                                  random per packet
    inner packet                                   a complete unsigned UDP datagram
                                                   (header included: mod2 10 or 11)
    32 bytes HMAC-SHA256(secret, every byte above, outer header included)

    The inner packet's length is ``datasize - 50``.  A receiver verifies the MAC with
    :func:`hmac.compare_digest`, rejects timestamps more than ``max_skew`` seconds away
    from its own clock, and (with a :class:`ReplayGuard`) rejects a (timestamp, nonce)
    pair it has already accepted inside that window.  The modifier2 value keeps the two
    kinds apart: :func:`decode_udp` refuses a signed envelope (it cannot check it) and
    :func:`verify_udp` refuses an unsigned packet, so a uwcache receiver never mistakes
    one for the other.  A real uWSGI receiver acts only on modifier2 10 and 11 and
    silently ignores every other value, so a signed packet reaching it is harmless (and
    does nothing): replicate to real uWSGI nodes unsigned.

Cache server authentication (uwcache extension, only when the server has a secret)
    on connect the server sends ``[111, 18, 113]`` + ``u16le version (1) | 16-byte nonce``;
    the client answers ``[111, 32, 112]`` + HMAC-SHA256(secret, context | nonce) before
    its request (:func:`auth_response`).  Anything else is closed without a reply.

Full dump (``sync``)
    request: packet modifier2 6 whose body is the raw cache name (empty = first cache);
    reply: ``[111, u16le len(vars), 7]`` + vars ``items``, ``blocksize`` + the raw
    items-and-data image, which is NOT counted in datasize and carries no length of its
    own (the receiver reads exactly its own store size).

Magic remote access, modifier2 17
    request: vars ``cmd``, ``key``, (set/update:) ``size``, [``expires`` if > 0], ``size``
    again, [``cache`` when the caller named one, even empty]; set/update send the value
    bytes right after the packet (not counted in datasize).  ``expires`` is relative.
    reply: vars ``status=ok`` [, ``size``, [``expires`` (absolute) if non-zero]] + the
    value bytes after the packet for get.  Failure is a closed connection, never a reply.

Simple commands, modifier2 0-5 (always the server's default cache)
    0 get / 5 stream-get: raw key; 1 set: array (key, value); 2 delete: raw key;
    3/4: vars whose ``key``/``get`` entries are lookups.  The replies of 0 and 5 should
    start with ``[111, vallen, 0]`` and ``[111, 0, 0, 1 or 0]``; real uWSGI writes four
    junk bytes instead, so a client skips four bytes without reading them.
"""

from __future__ import annotations

import hashlib
import hmac
import heapq
import ipaddress
import os
import struct
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Tuple, Union

from .errors import BadSignature, CacheError, Malformed, Oversized, Truncated, WireError  # noqa: F401 (re-exported)

__all__ = [
    "to_bytes",
    # errors
    "WireError",
    "Truncated",
    "Malformed",
    "Oversized",
    "BadSignature",
    # constants
    "MODIFIER1_CACHE",
    "MOD2_GET",
    "MOD2_SET",
    "MOD2_DEL",
    "MOD2_DICT",
    "MOD2_DICT_404",
    "MOD2_STREAM_GET",
    "MOD2_DUMP",
    "MOD2_DUMP_REPLY",
    "MOD2_UDP_SET",
    "MOD2_UDP_DELETE",
    "MOD2_MAGIC",
    "MOD2_SIGNED",
    "MAX_FIELD",
    "MAX_UDP_PAYLOAD",
    "MAX_UINT64",
    "SIGNED_VERSION",
    "SIGNED_OVERHEAD",
    # packets
    "Header",
    "Packet",
    "encode_packet",
    "decode_header",
    "split_packet",
    "PacketReader",
    # vars / arrays
    "encode_vars",
    "decode_vars",
    "decode_var_list",
    "encode_array",
    "decode_array",
    # UDP replication
    "UdpSet",
    "UdpDelete",
    "encode_udp_set",
    "encode_udp_delete",
    "decode_udp",
    "is_signed",
    "sign_udp",
    "verify_udp",
    "ReplayGuard",
    "SIGNED_VERSION_2",
    "SignedPacket",
    "sign_replication",
    "open_replication",
    "signed_overhead",
    "normalize_destination",
    # cache server authentication
    "MOD2_AUTH",
    "MOD2_AUTH_CHALLENGE",
    "AUTH_NONCE_SIZE",
    "AUTH_PACKET_SIZE",
    "AUTH_CHALLENGE_SIZE",
    "encode_auth_challenge",
    "decode_auth_challenge",
    "auth_response",
    "check_auth",
    # dump
    "DumpInfo",
    "encode_dump_request",
    "decode_dump_request",
    "encode_dump_reply_header",
    "parse_dump_reply",
    # magic
    "MAGIC_COMMANDS",
    "MagicRequest",
    "MagicReply",
    "encode_magic_request",
    "encode_magic_get",
    "encode_magic_exists",
    "encode_magic_del",
    "encode_magic_clear",
    "encode_magic_set",
    "encode_magic_update",
    "decode_magic_request",
    "encode_magic_ok",
    "decode_magic_reply",
    "magic_trailer",
    # simple commands
    "encode_simple_get",
    "encode_simple_set",
    "encode_simple_del",
    "encode_simple_dict",
    "encode_simple_stream_get",
    "decode_simple_set",
    "decode_simple_lookups",
    "encode_simple_get_reply",
    "encode_simple_stream_reply",
    "parse_simple_reply",
]


# --------------------------------------------------------------------------- errors


# WireError, Truncated, Malformed, Oversized and BadSignature live in uwcache.errors (imported above).


# --------------------------------------------------------------------------- constants

MODIFIER1_CACHE = 111

MOD2_GET = 0
MOD2_SET = 1
MOD2_DEL = 2
MOD2_DICT = 3
MOD2_DICT_404 = 4
MOD2_STREAM_GET = 5
MOD2_DUMP = 6
MOD2_DUMP_REPLY = 7
MOD2_UDP_SET = 10
MOD2_UDP_DELETE = 11
MOD2_MAGIC = 17
MOD2_SIGNED = 110  # uwcache extension; unused by uWSGI, which ignores it
MOD2_AUTH = 112  # uwcache extension: a client's answer to the server's challenge
MOD2_AUTH_CHALLENGE = 113  # uwcache extension: a server with a secret sends it first

MAX_FIELD = 0xFFFF  #: largest value of a u16le length (datasize, key/value lengths)
MAX_UDP_PAYLOAD = 65507  #: 65535 - 8 (UDP header) - 20 (IPv4 header)
MAX_UINT64 = 2**64 - 1

SIGNED_VERSION = 1
_MAC_SIZE = 32
_NONCE_SIZE = 8
_SIGNED_PREFIX = struct.Struct("<HQ")  # version, timestamp
#: bytes a signed envelope adds to the inner datagram (outer header not counted)
SIGNED_OVERHEAD = _SIGNED_PREFIX.size + _NONCE_SIZE + _MAC_SIZE

_HEADER = struct.Struct("<BHB")
_U16 = struct.Struct("<H")
_MAX_DIGITS = 20  # len(str(MAX_UINT64))

Bytesish = Union[bytes, bytearray, memoryview, str]


# --------------------------------------------------------------------------- helpers


def to_bytes(value: Bytesish, what: str) -> bytes:
    """bytes for `value`; str becomes UTF-8 (the rule every uwcache client applies)."""
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{what} must be bytes or str, not {type(value).__name__}")


_b = to_bytes


def _num(value: int, what: str) -> bytes:
    """ASCII decimal of an unsigned 64-bit integer (uWSGI's numbers are all u64)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if value < 0 or value > MAX_UINT64:
        raise Malformed(f"{what} must be between 0 and 2**64-1, got {value}")
    return str(value).encode("ascii")


def _parse_uint(raw: bytes, what: str) -> int:
    """Strict ASCII decimal -> int: digits only, non-empty, fits in 64 bits."""
    if not raw:
        raise Malformed(f"{what} is empty, expected an ASCII decimal number")
    if len(raw) > _MAX_DIGITS or not raw.isdigit():
        raise Malformed(f"{what} is not an unsigned 64-bit ASCII decimal number: {raw[:24]!r}")
    value = int(raw)
    if value > MAX_UINT64:
        raise Malformed(f"{what} does not fit in 64 bits: {raw!r}")
    return value


def _field(data: bytes, what: str, *, limit: int = MAX_FIELD, extra: str = "") -> bytes:
    """u16le length + data."""
    if len(data) > limit:
        raise Oversized(
            f"{what} is {len(data)} bytes; its u16 length field allows at most {limit}{extra}"
        )
    return _U16.pack(len(data)) + data


def _take(buf: bytes, pos: int, size: int, what: str) -> Tuple[bytes, int]:
    end = pos + size
    if end > len(buf):
        raise Truncated(f"{what}: need {size} bytes at offset {pos}, only {len(buf) - pos} left")
    return buf[pos:end], end


def _take_u16(buf: bytes, pos: int, what: str) -> Tuple[int, int]:
    raw, pos = _take(buf, pos, 2, what)
    return _U16.unpack(raw)[0], pos


# --------------------------------------------------------------------------- packets


@dataclass(frozen=True)
class Header:
    """The 4-byte uwsgi packet header."""

    modifier1: int
    datasize: int
    modifier2: int


@dataclass(frozen=True)
class Packet:
    """A complete packet from a stream: its header, its body and, for the commands that
    send raw bytes after the packet (magic set/update requests, magic get replies, dump
    replies), those bytes as ``trailer``."""

    header: Header
    body: bytes
    trailer: bytes = b""


def encode_packet(modifier2: int, body: Bytesish, modifier1: int = MODIFIER1_CACHE) -> bytes:
    """Header + body.  Refuses a body over 65535 bytes (the datasize field is 16 bits)."""
    for name, mod in (("modifier1", modifier1), ("modifier2", modifier2)):
        if isinstance(mod, bool) or not isinstance(mod, int):
            raise TypeError(f"{name} must be an int")
        if not 0 <= mod <= 255:
            raise Malformed(f"{name} must be between 0 and 255, got {mod}")
    body = _b(body, "body")
    if len(body) > MAX_FIELD:
        raise Oversized(
            f"packet body is {len(body)} bytes; the uwsgi header's u16 datasize allows at "
            f"most {MAX_FIELD}"
        )
    return _HEADER.pack(modifier1, len(body), modifier2) + body


def decode_header(data: bytes) -> Header:
    """The header at the start of `data` (only its first 4 bytes are read)."""
    if len(data) < 4:
        raise Truncated(f"a uwsgi header is 4 bytes, got {len(data)}")
    return Header(*_HEADER.unpack_from(data))


def split_packet(data: bytes) -> Tuple[Header, bytes, bytes]:
    """(header, body, rest) of the first packet in `data`; Truncated if incomplete."""
    header = decode_header(data)
    end = 4 + header.datasize
    if len(data) < end:
        raise Truncated(
            f"packet body is {header.datasize} bytes, only {len(data) - 4} received"
        )
    data = bytes(data)
    return header, data[4:end], data[end:]


TrailerPolicy = Callable[[Header, bytes], int]


class PacketReader:
    """Incremental packet parser for a byte stream (TCP or UNIX socket).

    ``feed(data)`` buffers `data` and returns the packets it completed.  Some commands send
    raw bytes after a packet, outside its datasize; ``trailer(header, body)`` says how many
    (0 = none) and may raise a :class:`WireError` to refuse the packet -- use
    :func:`magic_trailer` for modifier2 17, or e.g. ``lambda h, b: image_size if
    h.modifier2 == 7 else 0`` for a dump reply.  Without a policy there are no trailers.

    After an error the stream cannot be resynchronised: every later ``feed`` raises the
    same error again.
    """

    def __init__(self, trailer: Optional[TrailerPolicy] = None) -> None:
        self._trailer = trailer
        self._buf = bytearray()
        self._pending: Optional[Tuple[Header, bytes, int]] = None  # waiting for a trailer
        self._error: Optional[WireError] = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned in a packet."""
        extra = 0
        if self._pending is not None:
            extra = 4 + len(self._pending[1])
        return extra + len(self._buf)

    def feed(self, data: Bytesish) -> List[Packet]:
        """Add received bytes; return the packets completed, in order."""
        if self._error is not None:
            raise self._error
        self._buf += _b(data, "data")
        out: List[Packet] = []
        try:
            while True:
                packet = self._next()
                if packet is None:
                    return out
                out.append(packet)
        except WireError as exc:
            self._error = exc
            raise

    def _next(self) -> Optional[Packet]:
        buf = self._buf
        if self._pending is None:
            if len(buf) < 4:
                return None
            header = Header(*_HEADER.unpack_from(buf))
            end = 4 + header.datasize
            if len(buf) < end:
                return None
            body = bytes(buf[4:end])
            del buf[:end]
            extra = self._trailer(header, body) if self._trailer is not None else 0
            if isinstance(extra, bool) or not isinstance(extra, int) or extra < 0:
                raise TypeError("the trailer policy must return a non-negative int")
            self._pending = (header, body, extra)
        header, body, extra = self._pending
        if len(buf) < extra:
            return None
        trailer = bytes(buf[:extra])
        del buf[:extra]
        self._pending = None
        return Packet(header, body, trailer)

    def take_buffer(self) -> bytes:
        """Remove and return the bytes not yet parsed (e.g. to switch to raw reading).
        Not allowed while a packet waits for its trailer."""
        if self._pending is not None:
            raise Truncated("a packet is still waiting for its trailing bytes")
        data = bytes(self._buf)
        self._buf.clear()
        return data

    def eof(self) -> None:
        """Call when the peer closed: raises Truncated if a partial packet is pending."""
        if self._error is not None:
            raise self._error
        if self._pending is not None:
            header, _, extra = self._pending
            raise Truncated(
                f"connection closed after {len(self._buf)} of the {extra} bytes that follow "
                f"the modifier2 {header.modifier2} packet"
            )
        if self._buf:
            raise Truncated(f"connection closed inside a packet ({len(self._buf)} bytes pending)")


# --------------------------------------------------------------------------- vars / arrays


def encode_vars(pairs: Iterable[Tuple[Bytesish, Union[Bytesish, int]]]) -> bytes:
    """uwsgi vars from (key, value) pairs, in order.  Ints become ASCII decimal."""
    parts: List[bytes] = []
    for key, value in pairs:
        k = _b(key, "var name")
        if not k:
            raise Malformed("a uwsgi var name must not be empty")
        if isinstance(value, int) and not isinstance(value, bool):
            v = _num(value, f"var {k!r}")
        else:
            v = _b(value, f"var {k!r}")  # type: ignore[arg-type]
        parts.append(_field(k, f"var name {k[:32]!r}"))
        parts.append(_field(v, f"value of var {k[:32]!r}"))
    return b"".join(parts)


def decode_var_list(body: bytes, *, strict: bool = True) -> List[Tuple[bytes, bytes]]:
    """uwsgi vars as a list of (key, value) pairs in wire order (repeats kept).

    strict: a zero-length name raises Malformed, any overrun Truncated.  Not strict: the
    pairs parsed before the first error are returned (uWSGI's clients behave so).
    """
    body = bytes(body)
    out: List[Tuple[bytes, bytes]] = []
    pos = 0
    try:
        while pos < len(body):
            keylen, pos = _take_u16(body, pos, "var name length")
            if keylen == 0:
                raise Malformed(f"zero-length var name at offset {pos - 2}")
            key, pos = _take(body, pos, keylen, "var name")
            vallen, pos = _take_u16(body, pos, f"length of var {key[:32]!r}")
            value, pos = _take(body, pos, vallen, f"value of var {key[:32]!r}")
            out.append((key, value))
    except WireError:
        if strict:
            raise
    return out


def decode_vars(body: bytes, *, strict: bool = True) -> Dict[bytes, bytes]:
    """uwsgi vars as a dict; a repeated var: the last one wins.  See decode_var_list."""
    return dict(decode_var_list(body, strict=strict))


def encode_array(items: Iterable[Bytesish]) -> bytes:
    """uwsgi array (modifier2 1 body): u16le length + bytes per item."""
    return b"".join(_field(_b(item, "array item"), "array item") for item in items)


def decode_array(body: bytes, *, strict: bool = True) -> List[bytes]:
    """Items of a uwsgi array, zero-length items skipped (as uWSGI does).  strict=False
    returns the items parsed before an overrun instead of raising Truncated."""
    body = bytes(body)
    out: List[bytes] = []
    pos = 0
    try:
        while pos < len(body):
            size, pos = _take_u16(body, pos, "array item length")
            item, pos = _take(body, pos, size, "array item")
            if item:
                out.append(item)
    except WireError:
        if strict:
            raise
    return out


# --------------------------------------------------------------------------- UDP replication


@dataclass(frozen=True)
class UdpSet:
    """A replicated set/update: ``expires`` is absolute seconds, 0 = never."""

    key: bytes
    value: bytes
    expires: int = 0


@dataclass(frozen=True)
class UdpDelete:
    """A replicated delete."""

    key: bytes


UdpMessage = Union[UdpSet, UdpDelete]

_TRUNC_NOTE = " (uWSGI would silently truncate the length; uwcache refuses)"


def _udp_key(key: Bytesish) -> bytes:
    k = _b(key, "key")
    if not k:
        raise Malformed("a replicated key must not be empty")
    return k


def encode_udp_set(key: Bytesish, value: Bytesish, expires: int = 0) -> bytes:
    """Replication datagram for set/update (modifier2 10).  `expires` is absolute, 0 = none.

    Raises Oversized if the key or the value exceeds 65535 bytes, or if the datagram
    exceeds 65507 bytes (the largest UDP payload over IPv4; there is no fragmentation
    at this level).
    """
    k = _udp_key(key)
    v = _b(value, "value")
    body = (
        _field(k, "replicated key", extra=_TRUNC_NOTE)
        + _field(v, "replicated value", extra=_TRUNC_NOTE)
        + _field(_num(expires, "expires"), "expires")
    )
    return _udp_datagram(MOD2_UDP_SET, body, f" (key {len(k)}, value {len(v)})")


def _udp_datagram(modifier2: int, body: bytes, sizes: str) -> bytes:
    """Header + body, refused when it would not fit one UDP datagram (uWSGI truncates)."""
    total = 4 + len(body)
    if total > MAX_UDP_PAYLOAD:
        raise Oversized(
            f"replication datagram would be {total} bytes{sizes}; a UDP datagram carries at most "
            f"{MAX_UDP_PAYLOAD} bytes"
        )
    return _HEADER.pack(MODIFIER1_CACHE, len(body), modifier2) + body


def encode_udp_delete(key: Bytesish, *, pad: bool = True) -> bytes:
    """Replication datagram for delete (modifier2 11).

    pad=True (default) appends two zero bytes: real uWSGI receivers drop the unpadded form
    that uWSGI itself sends (their length check is off by two) and apply the padded one.
    """
    k = _udp_key(key)
    body = _field(k, "replicated key", extra=_TRUNC_NOTE) + (b"\0\0" if pad else b"")
    return _udp_datagram(MOD2_UDP_DELETE, body, "")


def _check_datagram(datagram: bytes) -> Header:
    header = decode_header(datagram)
    if header.modifier1 != MODIFIER1_CACHE:
        raise Malformed(f"modifier1 is {header.modifier1}, expected {MODIFIER1_CACHE}")
    actual = len(datagram) - 4
    if header.datasize > actual:
        raise Truncated(f"datasize says {header.datasize} body bytes, datagram has {actual}")
    if header.datasize < actual:
        raise Malformed(
            f"datasize says {header.datasize} body bytes, datagram has {actual} (trailing bytes)"
        )
    return header


def decode_udp(datagram: bytes) -> UdpMessage:
    """Parse one received replication datagram.

    Accepts what a uWSGI receiver applies, checked properly: set with or without the
    expires section, delete with or without the two zero pad bytes.  Everything else
    raises: wrong modifier1, datasize != len - 4, overruns, empty key, an expires that is
    not an unsigned decimal, trailing bytes, a signed envelope (use :func:`verify_udp`)
    and any other modifier2.
    """
    datagram = bytes(datagram)
    header = _check_datagram(datagram)
    if header.modifier2 == MOD2_SIGNED:
        raise Malformed("this is a signed replication packet; verify it with verify_udp()")
    if header.modifier2 not in (MOD2_UDP_SET, MOD2_UDP_DELETE):
        raise Malformed(f"modifier2 {header.modifier2} is not a replication command (10 or 11)")
    body = datagram[4:]
    keylen, pos = _take_u16(body, 0, "key length")
    key, pos = _take(body, pos, keylen, "key")
    if not key:
        raise Malformed("empty key in a replication packet")
    rest = body[pos:]
    if header.modifier2 == MOD2_UDP_DELETE:
        if rest in (b"", b"\0\0"):
            return UdpDelete(key)
        raise Malformed(
            f"delete packet has {len(rest)} bytes after the key; expected none or two zero bytes"
        )
    vallen, pos = _take_u16(body, pos, "value length")
    value, pos = _take(body, pos, vallen, "value")
    if pos == len(body):
        return UdpSet(key, value, 0)
    explen, pos = _take_u16(body, pos, "expires length")
    raw, pos = _take(body, pos, explen, "expires")
    if pos != len(body):
        raise Malformed(f"{len(body) - pos} trailing bytes after the expires field")
    return UdpSet(key, value, _parse_uint(raw, "expires"))


def is_signed(datagram: bytes) -> bool:
    """True if `datagram` claims to be a signed envelope (cheap check, nothing verified)."""
    return len(datagram) >= 4 and datagram[0] == MODIFIER1_CACHE and datagram[3] == MOD2_SIGNED


def _mac(secret: bytes, data: bytes) -> bytes:
    return hmac.new(secret, data, hashlib.sha256).digest()


def _secret(secret: Bytesish) -> bytes:
    s = _b(secret, "secret")
    if not s:
        raise ValueError("the replication secret must not be empty")
    return s


def sign_udp(
    datagram: bytes,
    secret: Bytesish,
    *,
    timestamp: int,
    nonce: Optional[bytes] = None,
) -> bytes:
    """Wrap a replication datagram (from encode_udp_set/encode_udp_delete) in a signed
    envelope (modifier2 110, format in the module docstring).  `nonce` defaults to 8
    random bytes; pass one only for reproducible tests.
    """
    secret = _secret(secret)
    inner = bytes(datagram)
    decode_udp(inner)  # sign only what a receiver could apply
    if nonce is None:
        nonce = os.urandom(_NONCE_SIZE)
    nonce = bytes(nonce)
    if len(nonce) != _NONCE_SIZE:
        raise Malformed(f"the nonce must be {_NONCE_SIZE} bytes, got {len(nonce)}")
    if isinstance(timestamp, bool) or not isinstance(timestamp, int):
        raise TypeError("timestamp must be an int")
    if not 0 <= timestamp <= MAX_UINT64:
        raise Malformed(f"timestamp must be between 0 and 2**64-1, got {timestamp}")
    datasize = SIGNED_OVERHEAD + len(inner)
    if 4 + datasize > MAX_UDP_PAYLOAD:
        raise Oversized(
            f"signed datagram would be {4 + datasize} bytes (the envelope adds "
            f"{4 + SIGNED_OVERHEAD}); a UDP datagram carries at most {MAX_UDP_PAYLOAD} bytes"
        )
    signed = (
        _HEADER.pack(MODIFIER1_CACHE, datasize, MOD2_SIGNED)
        + _SIGNED_PREFIX.pack(SIGNED_VERSION, timestamp)
        + nonce
        + inner
    )
    return signed + _mac(secret, signed)


class ReplayGuard:
    """Remembers the (timestamp, nonce) pairs accepted within the skew window so that a
    captured signed packet cannot be replayed while its timestamp is still fresh.

    Give it the same `max_skew` as :func:`verify_udp` (a shorter one is refused there).
    Pure in-memory state, not thread-safe (one per receiver).  Keeps at most
    `max_entries`; beyond that the oldest are forgotten (only authentic packets get here,
    so only a holder of the secret can fill it).
    """

    def __init__(self, max_skew: int = 30, max_entries: int = 100_000) -> None:
        if max_skew < 0 or max_entries < 1:
            raise ValueError("max_skew must be >= 0 and max_entries >= 1")
        self.max_skew = max_skew
        self.max_entries = max_entries
        self._seen: set = set()
        self._heap: List[Tuple[int, bytes]] = []

    def __len__(self) -> int:
        return len(self._seen)

    def check(self, timestamp: int, nonce: bytes, now: int) -> None:
        """Record the pair; raise BadSignature if it was already seen."""
        heap, seen = self._heap, self._seen
        # an entry can be accepted again only while now <= timestamp + max_skew
        while heap and (heap[0][0] + self.max_skew < now or len(heap) >= self.max_entries):
            seen.discard(heapq.heappop(heap))
        entry = (timestamp, bytes(nonce))
        if entry in seen:
            raise BadSignature("replayed packet (timestamp and nonce already seen)")
        seen.add(entry)
        heapq.heappush(heap, entry)


def verify_udp(
    datagram: bytes,
    secret: Bytesish,
    *,
    now: int,
    max_skew: int = 30,
    replay_guard: Optional[ReplayGuard] = None,
) -> bytes:
    """Check a signed envelope and return the inner (unsigned) datagram, to be passed to
    :func:`decode_udp`.  Raises BadSignature if the datagram is not a signed envelope,
    its version is unknown, the MAC does not match, its timestamp is more than `max_skew`
    seconds from `now`, or `replay_guard` has seen it already.
    """
    secret = _secret(secret)
    if replay_guard is not None and replay_guard.max_skew < max_skew:
        raise ValueError(
            f"replay_guard.max_skew ({replay_guard.max_skew}) is shorter than max_skew "
            f"({max_skew}): it would forget packets that are still fresh"
        )
    datagram = bytes(datagram)
    if len(datagram) < 4 + SIGNED_OVERHEAD:
        raise BadSignature(
            f"not a signed replication packet: {len(datagram)} bytes, at least "
            f"{4 + SIGNED_OVERHEAD} needed"
        )
    modifier1, datasize, modifier2 = _HEADER.unpack_from(datagram)
    if modifier1 != MODIFIER1_CACHE or modifier2 != MOD2_SIGNED:
        raise BadSignature(
            f"not a signed replication packet (modifier1 {modifier1}, modifier2 {modifier2}; "
            f"expected {MODIFIER1_CACHE}, {MOD2_SIGNED})"
        )
    if datasize != len(datagram) - 4:
        raise BadSignature(
            f"signed packet datasize {datasize} does not match its length {len(datagram) - 4}"
        )
    version, timestamp = _SIGNED_PREFIX.unpack_from(datagram, 4)
    if version != SIGNED_VERSION:
        raise BadSignature(f"unsupported signed envelope version {version}")
    signed, mac = datagram[:-_MAC_SIZE], datagram[-_MAC_SIZE:]
    if not hmac.compare_digest(_mac(secret, signed), mac):
        raise BadSignature("signature mismatch (wrong secret or altered packet)")
    if timestamp + max_skew < now:
        raise BadSignature(f"stale packet: signed at {timestamp}, now {now}, window {max_skew}s")
    if timestamp > now + max_skew:
        raise BadSignature(
            f"packet from the future: signed at {timestamp}, now {now}, window {max_skew}s"
        )
    start = 4 + _SIGNED_PREFIX.size
    nonce = datagram[start : start + _NONCE_SIZE]
    if replay_guard is not None:
        replay_guard.check(timestamp, nonce, now)
    return signed[start + _NONCE_SIZE :]


# --------------------------------------------------------------------------- signed v2

#: the envelope version nodes send and accept (version 1, :func:`sign_udp`, has no
#: sender sequence and is refused by uwcache receivers since it can be replayed)
SIGNED_VERSION_2 = 2
_SIGNED2_PREFIX = struct.Struct("<HQQQQ")  # version, timestamp, sender, epoch, sequence
_MAX_NAME = 0xFF


@dataclass(frozen=True)
class SignedPacket:
    """A version 2 envelope whose MAC verified (nothing else is checked yet: the receiver
    checks the time window, the cache name, the destination and the sequence)."""

    timestamp: int
    sender: int
    epoch: int
    sequence: int
    cache: bytes
    destination: Optional[Tuple[str, int]]
    inner: bytes


def _pack_destination(destination: Optional[Tuple[str, int]]) -> bytes:
    if destination is None:
        return b"\0"
    host, port = destination[0], int(destination[1])
    if not 0 <= port <= 0xFFFF:
        raise Malformed(f"destination port {port} out of range")
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        raise Malformed(f"destination {host!r} is not a numeric IP address") from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # v4-mapped: the IPv4 address it stands for
    return (b"\4" if ip.version == 4 else b"\6") + ip.packed + _U16.pack(port)


def _unpack_destination(data: bytes, pos: int) -> Tuple[Optional[Tuple[str, int]], int]:
    family, pos = data[pos], pos + 1
    if family == 0:
        return None, pos
    size = {4: 4, 6: 16}.get(family)
    if size is None:
        raise BadSignature(f"unknown destination family {family}")
    raw, pos = data[pos:pos + size], pos + size
    (port,) = _U16.unpack_from(data, pos)
    return (str(ipaddress.ip_address(raw)), port), pos + 2


def normalize_destination(host: str, port: int) -> Tuple[str, int]:
    """A destination as the envelope carries it (a v4-mapped IPv6 address becomes IPv4)."""
    dest, _ = _unpack_destination(_pack_destination((host, port)), 0)
    assert dest is not None
    return dest


def signed_overhead(cache: Bytesish, destination: Optional[Tuple[str, int]] = ("::", 0)) -> int:
    """Bytes a version 2 envelope adds to the inner datagram (outer header included)."""
    return 4 + _SIGNED2_PREFIX.size + 1 + len(_b(cache, "cache name")) + len(_pack_destination(destination)) \
        + _MAC_SIZE


def sign_replication(
    datagram: bytes,
    secret: Bytesish,
    *,
    timestamp: int,
    sender: int,
    epoch: int,
    sequence: int,
    cache: Bytesish,
    destination: Optional[Tuple[str, int]],
) -> bytes:
    """Wrap a replication datagram in a version 2 signed envelope (modifier2 110)::

        6f | u16le datasize | 6e
        u16le version (= 2) | u64le timestamp | u64le sender | u64le epoch | u64le sequence
        u8 name length | cache name
        u8 family (0 none, 4, 6) | 4 or 16 address bytes | u16le port   (the destination)
        inner datagram (mod2 10 or 11, header included)
        32 bytes HMAC-SHA256(secret, every byte above)

    The MAC covers who sent it (`sender`, `epoch`, `sequence`), for which cache and to
    which address, so a receiver can refuse a copy sent anywhere else or a second time.
    """
    secret = _secret(secret)
    inner = bytes(datagram)
    decode_udp(inner)  # sign only what a receiver could apply
    name = _b(cache, "cache name")
    if len(name) > _MAX_NAME:
        raise Oversized(f"cache name of {len(name)} bytes: a signed envelope carries at most {_MAX_NAME}")
    for what, v in (("timestamp", timestamp), ("sender", sender), ("epoch", epoch), ("sequence", sequence)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{what} must be an int")
        if not 0 <= v <= MAX_UINT64:
            raise Malformed(f"{what} must be between 0 and 2**64-1, got {v}")
    body = (_SIGNED2_PREFIX.pack(SIGNED_VERSION_2, timestamp, sender, epoch, sequence)
            + bytes([len(name)]) + name + _pack_destination(destination) + inner)
    datasize = len(body) + _MAC_SIZE
    if 4 + datasize > MAX_UDP_PAYLOAD:
        raise Oversized(f"signed datagram would be {4 + datasize} bytes; a UDP datagram carries at most "
                        f"{MAX_UDP_PAYLOAD} bytes")
    signed = _HEADER.pack(MODIFIER1_CACHE, datasize, MOD2_SIGNED) + body
    return signed + _mac(secret, signed)


def open_replication(datagram: bytes, secret: Bytesish) -> SignedPacket:
    """Check the structure and MAC of a version 2 envelope; BadSignature otherwise
    (unsigned, version 1, truncated, forged or altered)."""
    secret = _secret(secret)
    datagram = bytes(datagram)
    minimum = 4 + _SIGNED2_PREFIX.size + 2 + _MAC_SIZE
    if len(datagram) < 4 + 2:
        raise BadSignature(f"not a signed replication packet: {len(datagram)} bytes")
    modifier1, datasize, modifier2 = _HEADER.unpack_from(datagram)
    if modifier1 != MODIFIER1_CACHE or modifier2 != MOD2_SIGNED:
        raise BadSignature(f"not a signed replication packet (modifier1 {modifier1}, modifier2 {modifier2}; "
                           f"expected {MODIFIER1_CACHE}, {MOD2_SIGNED})")
    if datasize != len(datagram) - 4:
        raise BadSignature(f"signed packet datasize {datasize} does not match its length {len(datagram) - 4}")
    (version,) = _U16.unpack_from(datagram, 4)
    if version != SIGNED_VERSION_2:
        raise BadSignature(f"signed envelope version {version}: only version {SIGNED_VERSION_2} (with a "
                           "sender sequence) is accepted; version 1 can be replayed")
    if len(datagram) < minimum:
        raise BadSignature(f"signed packet of {len(datagram)} bytes is truncated")
    signed, mac = datagram[:-_MAC_SIZE], datagram[-_MAC_SIZE:]
    if not hmac.compare_digest(_mac(secret, signed), mac):
        raise BadSignature("signature mismatch (wrong secret or altered packet)")
    try:
        _, timestamp, sender, epoch, sequence = _SIGNED2_PREFIX.unpack_from(signed, 4)
        pos = 4 + _SIGNED2_PREFIX.size
        size = signed[pos]
        name = signed[pos + 1:pos + 1 + size]
        pos += 1 + size
        destination, pos = _unpack_destination(signed, pos)
    except (IndexError, struct.error, ValueError):
        raise BadSignature("malformed signed envelope") from None
    if len(name) != size or pos > len(signed):
        raise BadSignature("malformed signed envelope")
    return SignedPacket(timestamp, sender, epoch, sequence, name, destination, signed[pos:])


# --------------------------------------------------------------------------- server auth

#: random bytes of a server challenge
AUTH_NONCE_SIZE = 16
AUTH_VERSION = 1
_AUTH_CONTEXT = b"uwcache cache-server auth v1\0"
#: size of the client's answer: header + HMAC-SHA256
AUTH_PACKET_SIZE = 4 + _MAC_SIZE
#: size of the server's challenge: header + u16 version + nonce
AUTH_CHALLENGE_SIZE = 4 + 2 + AUTH_NONCE_SIZE


def encode_auth_challenge(nonce: bytes) -> bytes:
    """What a cache server with a secret sends first on every connection (modifier2 113):
    ``u16le version | nonce``.  uWSGI never sends this (its clients cannot answer it)."""
    if len(nonce) != AUTH_NONCE_SIZE:
        raise Malformed(f"the challenge nonce must be {AUTH_NONCE_SIZE} bytes")
    return encode_packet(MOD2_AUTH_CHALLENGE, _U16.pack(AUTH_VERSION) + bytes(nonce))


def decode_auth_challenge(data: bytes) -> bytes:
    """The nonce of a server challenge (exactly AUTH_CHALLENGE_SIZE bytes)."""
    data = bytes(data)
    if len(data) != AUTH_CHALLENGE_SIZE:
        raise Malformed(f"a challenge is {AUTH_CHALLENGE_SIZE} bytes, got {len(data)}")
    header = decode_header(data)
    if header.modifier1 != MODIFIER1_CACHE or header.modifier2 != MOD2_AUTH_CHALLENGE \
            or header.datasize != AUTH_CHALLENGE_SIZE - 4:
        raise Malformed(f"not an auth challenge (modifiers {header.modifier1}/{header.modifier2}): "
                        "the server does not use a secret, or is not a uwcache server")
    (version,) = _U16.unpack_from(data, 4)
    if version != AUTH_VERSION:
        raise Malformed(f"unsupported auth challenge version {version}")
    return data[6:]


def auth_response(secret: Bytesish, nonce: bytes) -> bytes:
    """The client's answer to a challenge (modifier2 112): HMAC-SHA256(secret, context |
    nonce).  Sent before the request on the same connection."""
    return encode_packet(MOD2_AUTH, _mac(_secret(secret), _AUTH_CONTEXT + bytes(nonce)))


def check_auth(packet: bytes, secret: Bytesish, nonce: bytes) -> bool:
    """True if `packet` (AUTH_PACKET_SIZE bytes) answers the challenge `nonce` with `secret`."""
    if len(packet) != AUTH_PACKET_SIZE or not secret:
        return False
    return hmac.compare_digest(bytes(packet), auth_response(secret, nonce))


# --------------------------------------------------------------------------- full dump


@dataclass(frozen=True)
class DumpInfo:
    """The vars of a dump reply (None when missing) and where the raw image starts."""

    items: Optional[int]
    blocksize: Optional[int]
    image_offset: int = 0


def encode_dump_request(cache_name: Bytesish = b"") -> bytes:
    """Dump request: modifier2 6, body = the raw cache name (empty = the first cache)."""
    return encode_packet(MOD2_DUMP, _b(cache_name, "cache name"))


def decode_dump_request(body: bytes) -> bytes:
    """The cache name of a dump request (b"" = the server's first cache)."""
    return bytes(body)


def encode_dump_reply_header(items: int, blocksize: int, image_size: int) -> bytes:
    """Header and vars of a dump reply: ``[111, len(vars), 7]`` + ``items``, ``blocksize``.

    The raw image (`image_size` bytes) follows, NOT counted in datasize and with no length
    field: the receiver reads exactly its own store size.  `image_size` is only checked.
    """
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 0:
        raise Malformed(f"image_size must be a non-negative int, got {image_size!r}")
    body = encode_vars([(b"items", items), (b"blocksize", blocksize)])
    return encode_packet(MOD2_DUMP_REPLY, body)


def parse_dump_reply(header_and_vars: bytes) -> DumpInfo:
    """Parse the header and vars of a dump reply (bytes beyond them are ignored).

    The vars are parsed leniently like uWSGI's client: what parsed before an error counts,
    missing vars are None.  A present var that is not a number raises Malformed.
    """
    data = bytes(header_and_vars)
    header = decode_header(data)
    if header.modifier1 != MODIFIER1_CACHE or header.modifier2 != MOD2_DUMP_REPLY:
        raise Malformed(
            f"not a dump reply: modifier1 {header.modifier1}, modifier2 {header.modifier2}"
        )
    end = 4 + header.datasize
    if len(data) < end:
        raise Truncated(f"dump reply vars are {header.datasize} bytes, got {len(data) - 4}")
    found = decode_vars(data[4:end], strict=False)
    items = found.get(b"items")
    blocksize = found.get(b"blocksize")
    return DumpInfo(
        items=None if items is None else _parse_uint(items, "dump var items"),
        blocksize=None if blocksize is None else _parse_uint(blocksize, "dump var blocksize"),
        image_offset=end,
    )


# --------------------------------------------------------------------------- magic (17)

MAGIC_COMMANDS = (b"get", b"exists", b"del", b"clear", b"set", b"update")
_KEYED = frozenset((b"get", b"exists", b"del", b"set", b"update"))
_WITH_VALUE = frozenset((b"set", b"update"))


@dataclass(frozen=True)
class MagicRequest:
    """A decoded modifier2 17 request.  ``cache`` is None when absent; b"" (present but
    empty) also means the server's default cache.  ``expires`` is relative seconds."""

    cmd: bytes
    key: bytes = b""
    cache: Optional[bytes] = None
    size: int = 0
    expires: int = 0

    @property
    def value_size(self) -> int:
        """Bytes of value that follow the packet (set/update only)."""
        return self.size if self.cmd in _WITH_VALUE else 0


@dataclass(frozen=True)
class MagicReply:
    """A decoded modifier2 17 reply; for get, ``size`` value bytes follow the packet and
    ``expires`` is absolute (0 = none)."""

    status: bytes
    size: int = 0
    expires: int = 0

    @property
    def ok(self) -> bool:
        return self.status == b"ok"


def encode_magic_request(
    cmd: Bytesish,
    key: Optional[Bytesish] = None,
    *,
    value: Optional[Bytesish] = None,
    expires: int = 0,
    cache: Optional[Bytesish] = None,
) -> bytes:
    """A modifier2 17 request with the vars in the order real uWSGI clients send them,
    followed (set/update) by the value bytes, which datasize does not count.

    `cache` None sends no ``cache`` var; b"" sends an empty one (uWSGI does so whenever
    the cache argument contained ``@``).  `expires` is relative and sent only if > 0.
    """
    c = _b(cmd, "cmd")
    if c not in MAGIC_COMMANDS:
        raise Malformed(f"unknown magic command {c!r}; expected one of {MAGIC_COMMANDS}")
    pairs: List[Tuple[Bytesish, Union[Bytesish, int]]] = [(b"cmd", c)]
    if c in _KEYED:
        if key is None:
            raise Malformed(f"magic {c.decode()} needs a key")
        k = _b(key, "key")
        if not k:
            raise Malformed("a cache key must not be empty")
        pairs.append((b"key", k))
    elif key is not None:
        raise Malformed(f"magic {c.decode()} takes no key")
    v = b""
    if c in _WITH_VALUE:
        if value is None:
            raise Malformed(f"magic {c.decode()} needs a value")
        v = _b(value, "value")
        if not v:
            raise Malformed("uWSGI servers refuse an empty value (size must be at least 1)")
        pairs.append((b"size", len(v)))
        if expires:
            pairs.append((b"expires", expires))
        pairs.append((b"size", len(v)))  # uWSGI clients send it twice
    else:
        if value is not None:
            raise Malformed(f"magic {c.decode()} takes no value")
        if expires:
            raise Malformed(f"magic {c.decode()} takes no expires")
    _num(expires, "expires")
    if cache is not None:
        pairs.append((b"cache", _b(cache, "cache name")))
    return encode_packet(MOD2_MAGIC, encode_vars(pairs)) + v


def encode_magic_get(key: Bytesish, *, cache: Optional[Bytesish] = None) -> bytes:
    return encode_magic_request(b"get", key, cache=cache)


def encode_magic_exists(key: Bytesish, *, cache: Optional[Bytesish] = None) -> bytes:
    return encode_magic_request(b"exists", key, cache=cache)


def encode_magic_del(key: Bytesish, *, cache: Optional[Bytesish] = None) -> bytes:
    return encode_magic_request(b"del", key, cache=cache)


def encode_magic_clear(*, cache: Optional[Bytesish] = None) -> bytes:
    return encode_magic_request(b"clear", cache=cache)


def encode_magic_set(
    key: Bytesish, value: Bytesish, expires: int = 0, *, cache: Optional[Bytesish] = None
) -> bytes:
    """Packet + value; `expires` is relative seconds (0 = none)."""
    return encode_magic_request(b"set", key, value=value, expires=expires, cache=cache)


def encode_magic_update(
    key: Bytesish, value: Bytesish, expires: int = 0, *, cache: Optional[Bytesish] = None
) -> bytes:
    """Packet + value; `expires` is relative seconds (0 = none)."""
    return encode_magic_request(b"update", key, value=value, expires=expires, cache=cache)


def decode_magic_request(body: bytes) -> MagicRequest:
    """Decode the vars of a modifier2 17 request (strict, like uWSGI's server).

    Raises Malformed for a missing or unknown ``cmd``, a missing or empty ``key`` on a
    keyed command and a ``size``/``expires`` that is not a decimal number.  Size limits
    (``1 <= size <= max_item_size``) are the server's to check.
    """
    found = decode_vars(body)
    cmd = found.get(b"cmd")
    if cmd is None:
        raise Malformed("magic request without a cmd var")
    if cmd not in MAGIC_COMMANDS:
        raise Malformed(f"unknown magic command {cmd[:32]!r}")
    key = found.get(b"key", b"")
    if cmd in _KEYED and not key:
        raise Malformed(f"magic {cmd.decode()} without a key")
    size = found.get(b"size")
    expires = found.get(b"expires")
    return MagicRequest(
        cmd=cmd,
        key=key,
        cache=found.get(b"cache"),
        size=0 if size is None else _parse_uint(size, "size"),
        expires=0 if expires is None else _parse_uint(expires, "expires"),
    )


def encode_magic_ok(value: Optional[Bytesish] = None, expires: int = 0) -> bytes:
    """The only reply uWSGI sends: ``status=ok``; for get also ``size`` and, if non-zero,
    the absolute ``expires``, then the value bytes after the packet."""
    pairs: List[Tuple[Bytesish, Union[Bytesish, int]]] = [(b"status", b"ok")]
    v = b""
    if value is None:
        if expires:
            raise Malformed("expires is only sent with a value (get replies)")
    else:
        v = _b(value, "value")
        pairs.append((b"size", len(v)))
        if expires:
            pairs.append((b"expires", expires))
    _num(expires, "expires")
    return encode_packet(MOD2_MAGIC, encode_vars(pairs)) + v


def decode_magic_reply(body: bytes) -> MagicReply:
    """Decode the vars of a modifier2 17 reply (strict, like uWSGI's client)."""
    found = decode_vars(body)
    size = found.get(b"size")
    expires = found.get(b"expires")
    return MagicReply(
        status=found.get(b"status", b""),
        size=0 if size is None else _parse_uint(size, "size"),
        expires=0 if expires is None else _parse_uint(expires, "expires"),
    )


def magic_trailer(max_size: int, *, reply: bool = False) -> TrailerPolicy:
    """A PacketReader trailer policy for modifier2 17 streams.

    Requests (reply=False): set/update are followed by ``size`` value bytes; a size of 0 or
    above `max_size` raises Oversized/Malformed before any of it is buffered.  Replies
    (reply=True): a ``status=ok`` reply with a ``size`` is followed by that many bytes.
    Packets of other modifier2 values get no trailer.
    """

    def policy(header: Header, body: bytes) -> int:
        if header.modifier2 != MOD2_MAGIC:
            return 0
        if reply:
            size = decode_magic_reply(body).size
        else:
            request = decode_magic_request(body)
            size = request.value_size
            if request.cmd in _WITH_VALUE and size == 0:
                raise Malformed("magic set/update with size 0")
        if size > max_size:
            raise Oversized(f"value of {size} bytes exceeds the limit of {max_size}")
        return size

    return policy


# --------------------------------------------------------------------------- simple (0-5)


def encode_simple_get(key: Bytesish) -> bytes:
    """modifier2 0 request: raw key."""
    return encode_packet(MOD2_GET, _udp_key(key))


def encode_simple_set(key: Bytesish, value: Bytesish) -> bytes:
    """modifier2 1 request: array (key, value); stored without TTL, no reply."""
    k, v = _udp_key(key), _b(value, "value")
    if not v:
        raise Malformed("empty value: uWSGI skips zero-length array items")
    return encode_packet(MOD2_SET, encode_array([k, v]))


def encode_simple_del(key: Bytesish) -> bytes:
    """modifier2 2 request: raw key; no reply."""
    return encode_packet(MOD2_DEL, _udp_key(key))


def encode_simple_dict(pairs: Iterable[Tuple[Bytesish, Bytesish]], *, http_404: bool = False) -> bytes:
    """modifier2 3 (or 4 with http_404) request: vars whose ``key``/``get`` are lookups."""
    return encode_packet(MOD2_DICT_404 if http_404 else MOD2_DICT, encode_vars(pairs))


def encode_simple_stream_get(key: Bytesish) -> bytes:
    """modifier2 5 request: raw key."""
    return encode_packet(MOD2_STREAM_GET, _udp_key(key))


def decode_simple_set(body: bytes) -> Tuple[bytes, bytes]:
    """(key, value) of a modifier2 1 body: the first two non-empty array items (a third
    is ignored, as uWSGI reads at most three)."""
    items = decode_array(body)
    if len(items) < 2:
        raise Malformed(f"simple set needs a key and a value, got {len(items)} item(s)")
    return items[0], items[1]


def decode_simple_lookups(body: bytes, *, strict: bool = True) -> List[Tuple[bytes, bytes]]:
    """The lookups of a modifier2 3/4 body, in order: (b"key" or b"get", cache key) for
    each such var with a non-empty value; other vars are ignored."""
    return [
        (name, value)
        for name, value in decode_var_list(body, strict=strict)
        if name in (b"key", b"get") and value
    ]


def encode_simple_get_reply(value: Bytesish) -> bytes:
    """modifier2 0 hit reply with the intended header ``[111, vallen, 0]`` (a miss is a
    closed connection).  Values over 65535 bytes do not fit the header: Oversized."""
    return encode_packet(MOD2_GET, _b(value, "value"))


def encode_simple_stream_reply(value: Optional[Bytesish]) -> bytes:
    """modifier2 5 reply with the intended header: hit ``[111, 0, 0, 1]`` + value,
    miss (None) ``[111, 0, 0, 0]``."""
    if value is None:
        return _HEADER.pack(MODIFIER1_CACHE, 0, 0)
    return _HEADER.pack(MODIFIER1_CACHE, 0, 1) + _b(value, "value")


def parse_simple_reply(data: bytes) -> Optional[bytes]:
    """Value from everything read (until close) after a modifier2 0 or 5 request.

    The 4 header bytes are skipped without being read (real uWSGI writes junk there).
    Nothing received, or only a header, means a miss: None.
    """
    if not data:
        return None
    if len(data) < 4:
        raise Truncated(f"reply of {len(data)} bytes is shorter than its 4-byte header")
    return bytes(data[4:]) or None
