"""Client side of uWSGI's cache protocols: connect, send one request, read one reply.

uWSGI opens one connection per remote operation and signals failure by closing it, so
every call here is: connect (TCP ``host:port`` with host names and IPv6 resolved, or a
UNIX socket path), send, read until the reply is complete or the peer closes, close.
Packet encoding and parsing is :mod:`uwcache.wire`'s; this module only moves bytes.

Also the hook behind ``uwcache.uwsgi.cache_*(..., "name@host:port")``: :func:`compat_call`
speaks exactly what a uWSGI client sends (including its remote math quirk, below) and
returns uWSGI's conventions (``True``/value on success, ``None`` on any failure).
"""

from __future__ import annotations

import logging
import socket
import struct
import time
from typing import Any, Callable, Dict, Optional, Tuple, Union

from .. import wire
from ..address import Address, TcpAddress, format_address, unix_sockaddr  # noqa: F401 (re-exported)
from ..address import parse_address as _parse
from ..errors import AddressError

log = logging.getLogger("uwcache.net")

#: seconds to wait for a connection or for the next bytes (uWSGI's --socket-timeout)
DEFAULT_TIMEOUT = 4.0
#: a reply value may take this long on top of the timeout per MiB (slow links, big values)
_SECONDS_PER_MIB = 1.0
#: largest get reply a client accepts (a peer's size var is not trusted blindly)
MAX_REPLY_VALUE = 1 << 31



def parse_address(address: str, *, allow_unix: bool = True, allow_port0: bool = False) -> Address:
    """The client's reading of :func:`uwcache.address.parse_address` (UNIX paths accepted)."""
    return _parse(address, unix=allow_unix, port0=allow_port0)


def connect(address: Address, timeout: float = DEFAULT_TIMEOUT, *, secret: Optional[str] = None) -> socket.socket:
    """A connected stream socket with `timeout` set (OSError on failure).  With a
    `secret`, the server's challenge is answered first (wire.WireError if the server
    sends no challenge, i.e. it has no secret or is not a uwcache server)."""
    sock = _connect(address, timeout)
    if secret is None:
        return sock
    try:
        nonce = wire.decode_auth_challenge(Stream(sock, timeout).read_exact(wire.AUTH_CHALLENGE_SIZE))
        send_all(sock, wire.auth_response(secret, nonce), timeout)
    except BaseException:
        sock.close()
        raise
    return sock


def _connect(address: Address, timeout: float) -> socket.socket:
    if isinstance(address, str):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(unix_sockaddr(address))
        except BaseException:
            sock.close()
            raise
        return sock
    host, port = address
    # create_connection resolves names and tries every address (e.g. ::1 then 127.0.0.1)
    sock = socket.create_connection((host or "127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class Stream:
    """Reads from a socket against a deadline, so a peer that trickles bytes times out
    as surely as a silent one. `allow(n)` extends the deadline for a large payload."""

    def __init__(self, sock: socket.socket, timeout: float) -> None:
        self.sock = sock
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout

    def allow(self, nbytes: int) -> None:
        self.deadline += nbytes / (1 << 20) * _SECONDS_PER_MIB

    def _wait(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("the peer is too slow")
        self.sock.settimeout(min(left, self.timeout))

    def recv(self, size: int = 65536) -> bytes:
        self._wait()
        return self.sock.recv(size)

    def read_exact(self, size: int) -> bytes:
        """Exactly `size` bytes; wire.Truncated if the peer closes before.  Memory grows
        with the bytes that arrive, never with what `size` announces."""
        buf = bytearray()
        while len(buf) < size:
            self._wait()
            chunk = self.sock.recv(min(size - len(buf), 1 << 20))
            if not chunk:
                raise wire.Truncated(f"connection closed after {len(buf)} of {size} bytes")
            buf += chunk
        return bytes(buf)

    def read_packet(self, policy: Optional[wire.TrailerPolicy] = None) -> Optional[wire.Packet]:
        """One packet (with its trailer); None if the peer closed before sending anything."""
        reader = wire.PacketReader(self._extending(policy) if policy else None)
        while True:
            data = self.recv()
            if not data:
                reader.eof()  # raises Truncated inside a packet
                return None
            packets = reader.feed(data)
            if packets:
                return packets[0]

    def _extending(self, policy: wire.TrailerPolicy) -> wire.TrailerPolicy:
        def wrapped(header: wire.Header, body: bytes) -> int:
            size = policy(header, body)
            self.allow(size)
            return size

        return wrapped


def send_all(sock: socket.socket, data: bytes, timeout: float, chunk: int = 1 << 20) -> None:
    """sendall in chunks, each with its own timeout (a big dump over a slow link is fine,
    a peer that stops reading is not)."""
    view = memoryview(data)
    sock.settimeout(timeout)
    for start in range(0, len(view), chunk):
        sock.sendall(view[start : start + chunk])


# --------------------------------------------------------------------------- magic (17)


def magic_request(address: Address, packet: bytes, *, timeout: float = DEFAULT_TIMEOUT,
                  max_value: int = MAX_REPLY_VALUE, secret: Optional[str] = None
                  ) -> Optional[Tuple[wire.MagicReply, bytes]]:
    """Send one modifier2 17 request; (reply, value) on ``status=ok``, None when the server
    closed without a reply (uWSGI's only failure signal).  OSError if it cannot be
    reached or times out, wire.WireError if it answers garbage.  `secret`: answer the
    challenge of a server that has one (:mod:`uwcache.net.server`)."""
    with connect(address, timeout, secret=secret) as sock:
        send_all(sock, packet, timeout)
        packet_in = Stream(sock, timeout).read_packet(wire.magic_trailer(max_value, reply=True))
    if packet_in is None:
        return None
    header = packet_in.header
    if header.modifier1 == wire.MODIFIER1_CACHE and header.modifier2 == wire.MOD2_AUTH_CHALLENGE:
        raise wire.Malformed("the server requires a shared secret (it sent an auth challenge)")
    if header.modifier1 != wire.MODIFIER1_CACHE or header.modifier2 != wire.MOD2_MAGIC:
        raise wire.Malformed(f"unexpected reply modifiers {header.modifier1}/{header.modifier2}")
    reply = wire.decode_magic_reply(packet_in.body)
    if not reply.ok:
        return None
    return reply, packet_in.trailer


def split_remote(spec: str) -> Tuple[str, Address]:
    """``name@address`` -> (name, parsed address); the name may be empty (remote default)."""
    name, at, addr = spec.partition("@")
    if not at:
        raise AddressError(f"{spec!r} is not a remote cache (expected name@host:port)")
    return name, parse_address(addr)


# --------------------------------------------------------------------------- compat hook


def _b(value: Union[str, bytes]) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def _ok(result: Optional[Tuple[wire.MagicReply, bytes]]) -> Optional[bool]:
    return True if result is not None else None


def _get(args: Tuple[Any, ...], timeout: float) -> Optional[bytes]:
    key, spec = args[0], args[-1]
    name, address = split_remote(spec)
    res = magic_request(address, wire.encode_magic_get(_b(key), cache=name), timeout=timeout)
    if res is None or res[0].size == 0:
        return None
    return res[1]


def _keyed(cmd: bytes) -> Callable[[Tuple[Any, ...], float], Optional[bool]]:
    def call(args: Tuple[Any, ...], timeout: float) -> Optional[bool]:
        name, address = split_remote(args[-1])
        packet = wire.encode_magic_request(cmd, _b(args[0]), cache=name)
        return _ok(magic_request(address, packet, timeout=timeout))

    return call


def _write(cmd: bytes) -> Callable[[Tuple[Any, ...], float], Optional[bool]]:
    def call(args: Tuple[Any, ...], timeout: float) -> Optional[bool]:
        key, value, expires, spec = args
        name, address = split_remote(spec)
        packet = wire.encode_magic_request(cmd, _b(key), value=_b(value),
                                           expires=max(int(expires), 0), cache=name)
        return _ok(magic_request(address, packet, timeout=timeout))

    return call


def _math(args: Tuple[Any, ...], timeout: float) -> Optional[bool]:
    # uWSGI's client sends a remote inc/dec/mul/div as `update key = the 8-byte operand`
    # (the server never computes anything); kept byte for byte so uWSGI servers see what
    # their own clients send.  RemoteCache refuses math instead.
    key, operand, expires, spec = args
    return _write(b"update")((key, struct.pack("<q", operand), expires, spec), timeout)


def _clear(args: Tuple[Any, ...], timeout: float) -> Optional[bool]:
    name, address = split_remote(args[-1])
    return _ok(magic_request(address, wire.encode_magic_clear(cache=name), timeout=timeout))


_COMPAT: Dict[str, Callable[[Tuple[Any, ...], float], Any]] = {
    "get": _get,
    "exists": _keyed(b"exists"),
    "del": _keyed(b"del"),
    "set": _write(b"set"),
    "update": _write(b"update"),
    "clear": _clear,
    "inc": _math,
    "dec": _math,
    "mul": _math,
    "div": _math,
}

#: timeout of the compat functions' remote calls (uWSGI: --socket-timeout, default 4 s)
compat_timeout = DEFAULT_TIMEOUT


def compat_call(op: str, args: Tuple[Any, ...]) -> Any:
    """The ``_engine._compat_set_remote`` hook: run a uWSGI-style remote call.  Any
    failure (unreachable, refused, timeout, bad reply, bad address) gives None."""
    handler = _COMPAT.get(op)
    if handler is None:
        return None
    try:
        return handler(args, compat_timeout)
    except (OSError, ValueError, OverflowError, struct.error) as exc:  # WireError is a ValueError
        log.debug("remote cache_%s(%r) failed: %s", op, args[-1] if args else None, exc)
        return None
