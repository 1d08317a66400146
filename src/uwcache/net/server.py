"""The cache server: what a uWSGI ``--socket`` serves for its caches (modifier1 111).

One request per connection, as uWSGI: the magic protocol (modifier2 17: get, exists, del,
clear, set, update on any cache by name), full dumps for ``sync`` (modifier2 6) and the
simple commands 0-5 on the default cache, with the headers uWSGI meant to send (reference
7.4).  Failure is a closed connection without a reply, exactly what uWSGI clients expect.
Writes go through the public Cache API, so they are replicated like local writes.

A thread per connection (at most ``max_connections`` at once, beyond that new ones are
closed at once); every request must arrive within ``timeout`` seconds (plus one second per
MiB of value), so slow or stalled clients are cut off.
"""

from __future__ import annotations

import logging
import os
import socket
import socketserver
import stat
import threading
import weakref
from typing import Any, Dict, Optional, Tuple, Union

from .. import wire
from ..errors import CacheError, ConfigError
from .client import DEFAULT_TIMEOUT, AddressError, Stream, format_address, parse_address, send_all, unix_sockaddr
from .udp import NetCounter, RateLimitedLog, count, is_loopback, resolve

log = logging.getLogger("uwcache.net")

_NOT_FOUND = (b"HTTP/1.0 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n"
              b"\r\nNot Found")


_live_servers: "weakref.WeakSet[CacheServer]" = weakref.WeakSet()


def _forget_in_child() -> None:
    # a forked child inherits the listening socket but not the serving thread: close its
    # copy so that connections are refused, not left queued, once the parent stops
    for server in list(_live_servers):
        server._thread = None
        server._unix_path = None
        server._server.socket.close()  # type: ignore[attr-defined]  # a TCPServer or UnixStreamServer


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


class _Refused(Exception):
    """Close the connection without a reply (uWSGI's way of saying no)."""


class CacheServer:
    """Serves the caches of a node on ``host:port`` (IPv4/IPv6; an empty host = every
    address) or a UNIX socket path.  ``caches`` is ordered: the first is the default."""

    def __init__(self, address: str, caches: Dict[str, Any], *, timeout: float = DEFAULT_TIMEOUT,
                 max_connections: int = 64) -> None:
        if not caches:
            raise ConfigError("the cache server needs at least one cache")
        try:
            parsed = parse_address(address, allow_port0=True)
        except AddressError as exc:
            raise ConfigError(f"server={address!r}: {exc}; expected host:port or a UNIX socket path") from None
        self.caches = dict(caches)
        self.default = next(iter(self.caches.values()))
        self.timeout = timeout
        self._log = RateLimitedLog()
        self._slots = threading.BoundedSemaphore(max_connections)
        self._dump_slots = threading.BoundedSemaphore(2)
        self._unix_path: Optional[str] = None
        try:
            self._server = self._make_server(parsed)
        except OSError as exc:
            raise ConfigError(f"server={address!r}: cannot listen: {exc.strerror or exc}") from None
        self._thread: Optional[threading.Thread] = None
        self._pid = os.getpid()
        _live_servers.add(self)

    def _make_server(self, parsed: Union[Tuple[str, int], str]) -> socketserver.BaseServer:
        owner = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                owner._handle(self.request)

        if isinstance(parsed, str):
            path = parsed
            if not path.startswith("@"):
                _remove_stale_socket(path)
                self._unix_path = path
            server: socketserver.BaseServer = _UnixServer(unix_sockaddr(path), Handler, self._slots)  # type: ignore[arg-type]
            return server
        host, port = parsed
        family: int = socket.AF_INET6 if ":" in host else socket.AF_INET
        if host and ":" not in host:  # a name or an IPv4 address: bind what it resolves to
            family, sockaddr = resolve("server", f"{host}:{port}", host, port, socket.SOCK_STREAM,
                                       socket.AI_PASSIVE)
            host = sockaddr[0]
        tcp = _TcpServer((host or ("::" if family == socket.AF_INET6 else "0.0.0.0"), port), Handler,
                         self._slots, family)
        return tcp

    @property
    def address(self) -> str:
        """Where the server listens, as ``host:port`` (the real port if 0 was asked) or a path."""
        name = self._server.server_address
        if isinstance(name, tuple):
            return format_address((name[0], name[1]))
        if isinstance(name, bytes):  # an abstract socket: "\0name" is spelled "@name"
            return "@" + name[1:].decode(errors="replace") if name[:1] == b"\0" else name.decode()
        return str(name)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="uwcache-server", daemon=True)
        self._thread.start()
        log.info("uwcache cache server listening on %s", self.address)
        name = self._server.server_address
        if isinstance(name, tuple) and not is_loopback(name[0]):
            log.warning("the cache server listens on %s, not only on loopback: whoever reaches it can read "
                        "and write every cache of this node (uWSGI's protocol has no authentication)",
                        self.address)

    def close(self) -> None:
        _live_servers.discard(self)
        if self._thread is not None and os.getpid() == self._pid:
            self._server.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self._server.server_close()
        if self._unix_path and os.getpid() == self._pid:
            try:
                os.unlink(self._unix_path)
            except OSError:
                pass
            self._unix_path = None

    # -- requests ---------------------------------------------------------------------------

    def _cache(self, name: Optional[bytes]) -> Any:
        if not name:
            return self.default
        try:
            return self.caches[name.decode("utf-8")]
        except (KeyError, UnicodeDecodeError):
            raise _Refused(f"unknown cache {name[:64]!r}") from None

    def _handle(self, sock: socket.socket) -> None:
        stream = Stream(sock, self.timeout)
        counted = self.default
        try:
            head = stream.read_exact(4)
            header = wire.decode_header(head)
            if header.modifier1 != wire.MODIFIER1_CACHE:
                raise _Refused(f"modifier1 {header.modifier1} is not the cache's (111)")
            body = stream.read_exact(header.datasize)
            counted = self._dispatch(header.modifier2, body, stream, sock)
            count(counted, NetCounter.REQUESTS)
        except (_Refused, wire.WireError, CacheError, OSError, ValueError, OverflowError) as exc:
            count(counted, NetCounter.REQUEST_ERRORS)
            self._log(logging.INFO, "req", "cache server: closed a request: %s", exc)
        except Exception as exc:  # a bug must not take the server down: count, log, close
            count(counted, NetCounter.REQUEST_ERRORS)
            self._log(logging.ERROR, "bug", "cache server: unexpected error: %r", exc)

    def _dispatch(self, mod2: int, body: bytes, stream: Stream, sock: socket.socket) -> Any:
        """Serve one request; returns the cache it counted against.  A refusal raises."""
        if mod2 == wire.MOD2_MAGIC:
            return self._magic(body, stream, sock)
        if mod2 == wire.MOD2_DUMP:
            cache = self._cache(wire.decode_dump_request(body))
            if cache.hash_algo not in ("djb33x", "murmur2"):
                # a uWSGI node loads a dump as is and chains its items by the hash in each record
                raise _Refused(f"no dump of cache {cache.name!r}: its hash_algo {cache.hash_algo!r} is not one of uWSGI's")
            # a dump is a copy of the whole cache in memory: a few at a time
            if not self._dump_slots.acquire(timeout=self.timeout):
                raise _Refused("too many dumps in progress")
            try:
                image = cache._export_image()
                send_all(sock, wire.encode_dump_reply_header(cache.max_items, cache.block_size, len(image)),
                         self.timeout)
                send_all(sock, image, self.timeout)
            finally:
                self._dump_slots.release()
            count(cache, NetCounter.DUMPS)
            return cache
        cache = self.default
        if mod2 in (wire.MOD2_GET, wire.MOD2_STREAM_GET):
            if not body:
                raise _Refused("empty key")
            value = cache.get(body)
            if mod2 == wire.MOD2_STREAM_GET:
                send_all(sock, wire.encode_simple_stream_reply(value), self.timeout)
            elif value is None:
                return cache  # a miss is a close, like uWSGI (not an error)
            else:
                send_all(sock, wire.encode_simple_get_reply(value), self.timeout)
        elif mod2 == wire.MOD2_SET:
            key, value = wire.decode_simple_set(body)
            if not cache.add(key, value):
                raise _Refused("simple set of an existing key")
        elif mod2 == wire.MOD2_DEL:
            if not body:
                raise _Refused("empty key")
            cache.delete(body)
        elif mod2 in (wire.MOD2_DICT, wire.MOD2_DICT_404):
            for kind, key in wire.decode_simple_lookups(body):
                value = cache.get(key)
                if value is not None:
                    send_all(sock, value, self.timeout)
                elif kind == b"get":
                    send_all(sock, _NOT_FOUND, self.timeout)
        else:
            raise _Refused(f"unknown modifier2 {mod2}")
        return cache

    def _magic(self, body: bytes, stream: Stream, sock: socket.socket) -> Any:
        request = wire.decode_magic_request(body)
        cache = self._cache(request.cache)
        cmd = request.cmd
        key = request.key
        reply: Optional[bytes] = None
        if cmd == b"get":
            found = cache._get_with_expiry(key)
            if found is not None:
                reply = wire.encode_magic_ok(found[0], found[1])
        elif cmd == b"exists":
            if key in cache:
                reply = wire.encode_magic_ok()
        elif cmd == b"del":
            if cache.delete(key):
                reply = wire.encode_magic_ok()
        elif cmd == b"clear":
            cache.clear()
            reply = wire.encode_magic_ok()
        else:  # set / update: the value follows the packet
            if not 1 <= request.size <= cache.max_item_size:
                raise _Refused(f"value size {request.size} outside 1..{cache.max_item_size} "
                               f"(max item size of cache {cache.name!r})")
            stream.allow(request.size)
            value = stream.read_exact(request.size)
            if cmd == b"set":
                ok = cache.add(key, value, request.expires)
            else:
                cache.set(key, value, request.expires)
                ok = True
            if ok:
                reply = wire.encode_magic_ok()
        if reply is not None:
            send_all(sock, reply, self.timeout)
        return cache


class _Limited:
    """Mixin: refuse connections beyond the slot count instead of queueing threads."""

    _slots: threading.BoundedSemaphore

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # type: ignore[attr-defined]
            return
        try:
            super().process_request(request, client_address)  # type: ignore[misc]
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)  # type: ignore[misc]
        finally:
            self._slots.release()


class _TcpServer(_Limited, socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False
    request_queue_size = 128

    def __init__(self, address: Tuple[str, int], handler: Any, slots: threading.BoundedSemaphore,
                 family: int) -> None:
        self.address_family = family
        self._slots = slots
        super().__init__(address, handler)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


class _UnixServer(_Limited, socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(self, address: Any, handler: Any, slots: threading.BoundedSemaphore) -> None:
        self._slots = slots
        super().__init__(address, handler)


def _remove_stale_socket(path: str) -> None:
    """Replace a socket file left by a dead server; refuse one a live server answers on."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise OSError(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except OSError:
        os.unlink(path)  # nobody listens: stale
        return
    finally:
        probe.close()
    raise OSError(f"another server already listens on {path}")
