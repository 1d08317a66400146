"""The one address rule of uwcache: every option, listener and client reads addresses here.

Forms (see docs/caveats.md, "``--stats :PORT`` listens on loopback only"):

* ``HOST:PORT`` -> ``(HOST, PORT)``; HOST is a name, an IPv4 address or ``[IPv6]``
  (an IPv6 address must be in brackets: ``[::1]:3031``).
* a bare ``PORT`` and ``:PORT`` -> ``("127.0.0.1", PORT)``: loopback, where uWSGI reads
  ``:PORT`` as every address (write ``0.0.0.0:PORT`` for that).
* where the caller accepts one (``unix=True``), a UNIX socket path: a string that starts
  with ``/``, ``./`` or ``@`` (a Linux abstract socket), or any other string without ``:``
  that is not a port number.

PORT is 1..65535, or 0..65535 where the caller binds (``port0=True``: 0 asks for a free
port). Anything else raises :class:`~uwcache.errors.AddressError` (a ``ConfigError``)
whose message starts with the caller's ``option`` label.
"""

from __future__ import annotations

import ipaddress
from typing import Tuple, Union

from .errors import AddressError

__all__ = ["DEFAULT_HOST", "Address", "TcpAddress", "AddressError", "parse_address", "parse_tcp",
           "format_address", "unix_sockaddr", "is_loopback"]

#: the host of a bare ``PORT`` or ``:PORT``
DEFAULT_HOST = "127.0.0.1"

TcpAddress = Tuple[str, int]
Address = Union[TcpAddress, str]  # (host, port) or a UNIX socket path ("@name" = abstract)

_UNIX_PREFIXES = ("/", "./", "@")


def _is_port(text: str) -> bool:
    return text.isascii() and text.isdigit()


def parse_address(address: object, *, option: str = "address", unix: bool = False,
                  port0: bool = False) -> Address:
    """`address` -> ``(host, port)``, or the path itself for a UNIX socket when `unix`."""
    lowest = 0 if port0 else 1
    accepted = f"HOST:PORT, [IPv6]:PORT, :PORT or PORT with PORT {lowest}..65535"
    if unix:
        accepted += ", or a unix socket path"
    if (not isinstance(address, str) or not address or address != address.strip()
            or ";" in address or "\0" in address):
        raise AddressError(f"{option} entry {address!r} is not valid: expected {accepted}")
    if unix and address.startswith(_UNIX_PREFIXES):
        return address
    if _is_port(address):
        host, port = DEFAULT_HOST, address
    else:
        host, colon, port = address.rpartition(":")
        if not colon:
            if unix:
                return address
            raise AddressError(f"{option} entry {address!r} has no port: expected {accepted}")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
            if not host:
                raise AddressError(f"{option} entry {address!r} has an empty IPv6 host: expected {accepted}")
        elif ":" in host:
            raise AddressError(f"{option} entry {address!r}: write IPv6 addresses in brackets, "
                               f"e.g. [::1]:{port}")
        elif not host:
            host = DEFAULT_HOST
        if any(ch.isspace() for ch in host):
            raise AddressError(f"{option} entry {address!r} has a space in its host: expected {accepted}")
    if not _is_port(port) or not lowest <= int(port) <= 65535:
        raise AddressError(f"{option} entry {address!r} has an invalid port {port!r}: expected {accepted}")
    return host, int(port)


def parse_tcp(address: object, *, option: str = "address", port0: bool = False) -> TcpAddress:
    """:func:`parse_address` for callers that need a TCP/UDP ``(host, port)``."""
    parsed = parse_address(address, option=option, port0=port0)
    assert not isinstance(parsed, str)
    return parsed


def format_address(address: Address) -> str:
    """The text form of a parsed address (IPv6 hosts in brackets)."""
    if isinstance(address, str):
        return address
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def unix_sockaddr(path: str) -> Union[str, bytes]:
    """The sockaddr of a UNIX path; ``@name`` is the abstract socket ``\\0name``."""
    return b"\0" + path[1:].encode() if path.startswith("@") else path


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 (with or without a ``%scope``) and ``localhost``; False for
    every other host, the wildcard addresses included."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False
