"""The cache server: what a uWSGI ``--socket`` serves for its caches (modifier1 111).

One request per connection, as uWSGI: the magic protocol (modifier2 17: get, exists, del,
clear, set, update on any cache by name), full dumps for ``sync`` (modifier2 6) and the
simple commands 0-5 on the default cache, with the headers uWSGI meant to send (reference
7.4).  Failure is a closed connection without a reply, exactly what uWSGI clients expect.
Writes go through the public Cache API, so they are replicated like local writes.

One thread runs an event loop over non-blocking sockets, so idle or slow connections
cost a file descriptor and a few hundred bytes, never a thread:

* every request is read incrementally: memory grows only with the bytes that arrived,
  never with what a header announces, and a value may not exceed the largest item of
  the cache it is meant for;
* a connection that sends nothing for ``idle_timeout`` seconds, or has not delivered its
  whole request within ``timeout`` (plus one second per MiB of value), is closed;
* at most ``max_connections`` are open; a new one beyond that closes the least recently
  active connection that is still reading its request (the oldest idle first);
* ``accept`` failing for lack of file descriptors (EMFILE, ENFILE) or memory closes the
  oldest idle connections and backs off; it never ends the loop, so a flood on another
  server of the same process (the stats server) cannot stop this one, and the reverse.

With a ``secret`` the server sends a challenge on connect and serves only clients that
answer it (:func:`uwcache.wire.auth_response`); plain uWSGI clients cannot.
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import socket
import stat
import threading
import time
import weakref
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from .. import wire
from ..errors import CacheError, ConfigError
from ..address import format_address, is_loopback, parse_address, unix_sockaddr
from ..errors import AddressError
from .client import DEFAULT_TIMEOUT
from ..failsafe import RateLimitedLog
from .udp import NetCounter, count, resolve
from .waker import Waker, stop_thread

log = logging.getLogger("uwcache.net")

_NOT_FOUND = (b"HTTP/1.0 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n"
              b"\r\nNot Found")

def default_max_connections() -> int:
    """The default cap on open connections: half of this process's file descriptor limit
    (the rest is for everything else), between 64 and 4096."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        return 256
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return 4096
    return max(64, min(4096, soft // 2))
#: file name of the default UNIX socket inside the namespace directory (``server=True``)
SOCKET_NAME = "server.sock"
#: a request may take this long on top of the timeout per MiB of value (slow links)
_SECONDS_PER_MIB = 1.0
_SWEEP_INTERVAL = 0.1
_ACCEPT_BACKOFF = 0.1
_MAX_DUMPS = 2  # a dump is a copy of the whole cache in memory: a few at a time
_RECV_CHUNK = 256 * 1024
_OUT_OF_FDS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)

# connection stages
_AUTH, _HEAD, _BODY, _VALUE, _WRITE = range(5)


def default_socket_path(namespace: Optional[str] = None) -> str:
    """The UNIX socket ``server=True`` listens on: ``<namespace dir>/server.sock``, inside
    the owner-only (0700) namespace directory, so only the owning user can connect."""
    from ..cache import namespace_dir

    return os.path.join(namespace_dir(namespace, create=True), SOCKET_NAME)


_live_servers: "weakref.WeakSet[CacheServer]" = weakref.WeakSet()


def _forget_in_child() -> None:
    # a forked child inherits the listening socket and the connections but not the loop
    # thread: close its copies so that connections are refused or ended, not left open,
    # once the parent stops
    for server in list(_live_servers):
        server._abandon()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


class _Refused(Exception):
    """Close the connection without a reply (uWSGI's way of saying no)."""


class _Conn:
    __slots__ = ("sock", "buf", "need", "stage", "last", "deadline", "out", "nonce", "header",
                 "request", "cache", "dump", "got", "held")

    def __init__(self, sock: socket.socket, now: float, timeout: float) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.need = 4
        self.stage = _HEAD
        self.last = now
        self.deadline = now + timeout
        self.out: List[memoryview] = []
        self.nonce = b""
        self.header: Optional[wire.Header] = None
        self.request: Optional[wire.MagicRequest] = None
        self.cache: Any = None
        self.dump = False
        self.got = 0  # bytes received in all
        self.held = 0  # bytes of request or reply held in memory for it (dumps excepted)


class CacheServer:
    """Serves the caches of a node on ``host:port`` (IPv4/IPv6; an empty host means
    127.0.0.1, ``0.0.0.0``/``[::]`` every address) or a UNIX socket path (``@name``: a
    Linux abstract socket).  ``caches`` is ordered: the first is the default.

    ``secret``: require the challenge-response of :func:`uwcache.wire.auth_response`
    before any command (None: uWSGI's unauthenticated protocol).  ``max_buffered``: the
    bytes of requests and replies held in memory for all connections together (default:
    64 MiB or twice the largest item, whichever is more; dumps are limited apart)."""

    def __init__(self, address: str, caches: Dict[str, Any], *, timeout: float = DEFAULT_TIMEOUT,
                 max_connections: Optional[int] = None, idle_timeout: Optional[float] = None,
                 secret: Optional[str] = None, default_path: bool = False,
                 max_buffered: Optional[int] = None) -> None:
        if not caches:
            raise ConfigError("the cache server needs at least one cache")
        if max_connections is None:
            max_connections = default_max_connections()
        if max_connections < 1:
            raise ConfigError(f"max_connections must be >= 1, got {max_connections!r}")
        try:
            parsed = parse_address(address, option="server", unix=True, port0=True)
        except AddressError as exc:
            raise ConfigError(f"server={address!r}: {exc}; expected host:port or a UNIX socket path") from None
        if secret is not None and (not isinstance(secret, str) or not secret):
            raise ConfigError("the server secret must be a non-empty str")
        self.caches = dict(caches)
        self.default = next(iter(self.caches.values()))
        self.timeout = float(timeout)
        self.idle_timeout = float(idle_timeout if idle_timeout is not None else timeout)
        self.max_connections = int(max_connections)
        self._secret = secret.encode("utf-8") if secret is not None else None
        self._default_path = default_path
        self._log = RateLimitedLog(log)
        self._unix_path: Optional[str] = None
        self._conns: Dict[int, _Conn] = {}
        self._dumps = 0
        self._held = 0
        largest = max(int(c.max_item_size) for c in self.caches.values())
        #: requests being read and replies being sent may hold this much in all; beyond
        #: it the least recently active connections are dropped
        self.max_buffered = int(max_buffered) if max_buffered is not None else max(64 << 20, 2 * largest)
        self._stop = False
        self._closed = False
        self._paused_until = 0.0
        self._next_sweep = 0.0
        try:
            self._listener = self._listen(parsed)
        except OSError as exc:
            raise ConfigError(f"server={address!r}: cannot listen: {exc.strerror or exc}") from None
        self._selector = selectors.DefaultSelector()
        self._waker = Waker(self._selector, "wake")
        self._selector.register(self._listener, selectors.EVENT_READ, "listen")
        self._thread: Optional[threading.Thread] = None
        self._pid = os.getpid()
        _live_servers.add(self)

    # -- listening --------------------------------------------------------------------------

    def _listen(self, parsed: Union[Tuple[str, int], str]) -> socket.socket:
        if isinstance(parsed, str):
            return _listening(socket.AF_UNIX, lambda sock: self._bind_unix(sock, parsed))
        host, port = parsed  # a bare ":port" is already loopback (uwcache.address)
        family: int = socket.AF_INET6 if ":" in host else socket.AF_INET
        sockaddr: Tuple[Any, ...] = (host, port)
        if ":" not in host:  # a name or an IPv4 address: bind what it resolves to
            family, sockaddr = resolve("server", f"{host}:{port}", host, port, socket.SOCK_STREAM,
                                       socket.AI_PASSIVE)

        def bind(sock: socket.socket) -> None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(sockaddr)

        return _listening(family, bind)

    def _bind_unix(self, sock: socket.socket, path: str) -> None:
        if not path.startswith("@"):
            _remove_stale_socket(path)
        sock.bind(unix_sockaddr(path))
        if not path.startswith("@"):
            self._unix_path = path
            if self._default_path:
                os.chmod(path, 0o600)

    @property
    def address(self) -> str:
        """Where the server listens, as ``host:port`` (the real port if 0 was asked) or a path."""
        name = self._listener.getsockname()
        if isinstance(name, tuple):
            return format_address((name[0], name[1]))
        if isinstance(name, bytes):  # an abstract socket: "\0name" is spelled "@name"
            return "@" + name[1:].decode(errors="replace") if name[:1] == b"\0" else name.decode()
        return str(name)

    def exposure(self) -> Tuple[int, str]:
        """(log level, sentence): who can reach this server and what they can do."""
        what = "read, write and clear every cache of this node and fetch full dumps"
        if self._secret is not None:
            return logging.INFO, f"clients must prove the shared secret before any command on {self.address}"
        name = self._listener.getsockname()
        if isinstance(name, tuple):
            if is_loopback(name[0]):
                return logging.WARNING, (f"the cache server on {self.address} has no secret: every local user "
                                         f"and every container sharing this network can {what}")
            return logging.WARNING, (f"the cache server listens on {self.address}, not only on loopback, and "
                                     f"has no secret: whoever reaches it over the network can {what}")
        if isinstance(name, bytes) or str(name).startswith("@") or not name:
            return logging.WARNING, (f"the cache server on the abstract socket {self.address} has no secret: "
                                     f"abstract sockets have no permissions, so every local user can {what}")
        try:
            mode = os.stat(self._unix_path or str(name)).st_mode
        except OSError:
            mode = 0
        if mode & (stat.S_IWGRP | stat.S_IWOTH) and not self._default_path:
            return logging.WARNING, (f"the cache server socket {self.address} is writable by other users and "
                                     f"has no secret: whoever can reach the file can {what}")
        return logging.INFO, f"the cache server socket {self.address} is reachable by its owner only"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="uwcache-server", daemon=True)
        self._thread.start()
        log.info("uwcache cache server listening on %s", self.address)
        level, sentence = self.exposure()
        log.log(level, "%s", sentence)

    def close(self) -> None:
        _live_servers.discard(self)
        if self._closed:
            return
        if os.getpid() != self._pid:
            self._abandon()
            return
        self._stop = True
        stop_thread(self._waker, self._thread)
        self._thread = None
        self._closed = True
        for conn in list(self._conns.values()):
            self._drop(conn)
        self._close_sockets()
        if self._unix_path:
            try:
                os.unlink(self._unix_path)
            except OSError:
                pass
            self._unix_path = None

    def _abandon(self) -> None:
        """In a forked child: close this process's copies, leave the parent's server alone."""
        if self._closed:
            return
        self._closed = self._stop = True
        self._thread = None
        self._unix_path = None
        for conn in self._conns.values():
            try:
                conn.sock.close()
            except OSError:
                pass
        self._conns.clear()
        self._close_sockets()

    def _close_sockets(self) -> None:
        self._waker.close()
        for obj in (self._selector, self._listener):
            try:
                obj.close()
            except OSError:
                pass

    @property
    def connections(self) -> int:
        """Connections open now (reading a request or writing a reply)."""
        return len(self._conns)

    # -- the loop ---------------------------------------------------------------------------

    def _run(self) -> None:
        pid = os.getpid()
        while not self._stop:
            try:
                self._step()
            except Exception as exc:  # a bug must not end the server: log, breathe, go on
                if self._stop or os.getpid() != pid:
                    return
                self._log(logging.ERROR, "loop", "cache server: unexpected error in the loop: %r", exc)
                time.sleep(0.05)

    def _step(self) -> None:
        now = time.monotonic()
        timeout = max(min(self._next_sweep - now, _SWEEP_INTERVAL), 0.0) if self._conns or self._paused_until \
            else None
        events = self._selector.select(timeout)
        if self._stop:
            return
        for key, mask in events:
            if key.data == "wake":
                self._waker.drain()
            elif key.data == "listen":
                self._accept()
            else:
                conn: _Conn = key.data
                if self._conns.get(id(conn)) is not conn or conn.sock.fileno() < 0:
                    continue
                try:
                    if mask & selectors.EVENT_READ and conn.stage != _WRITE:
                        self._on_readable(conn)
                    elif mask & selectors.EVENT_WRITE and conn.stage == _WRITE:
                        self._on_writable(conn)
                except Exception as exc:  # a bug must not take the server down: count, log, close
                    count(conn.cache or self.default, NetCounter.REQUEST_ERRORS)
                    self._log(logging.ERROR, "bug", "cache server: unexpected error: %r", exc)
                    self._drop(conn)
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + _SWEEP_INTERVAL
            self._sweep(now)

    def _sweep(self, now: float) -> None:
        if self._paused_until and now >= self._paused_until:
            self._paused_until = 0.0
            try:
                self._selector.register(self._listener, selectors.EVENT_READ, "listen")
            except (KeyError, ValueError):
                pass
        for conn in list(self._conns.values()):
            if now > conn.deadline or now - conn.last > self.idle_timeout:
                self._fail(conn, "too slow" if conn.got else "idle", logging.INFO)

    def _accept(self) -> None:
        for _ in range(64):
            try:
                sock, _addr = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _OUT_OF_FDS:
                    self._out_of_fds(exc)
                else:  # ECONNABORTED and friends: that client is gone, go on
                    self._log(logging.DEBUG, "accept", "cache server: accept: %s", exc)
                return
            now = time.monotonic()
            if len(self._conns) >= self.max_connections and not self._evict(1):
                sock.close()  # every connection is busy writing: nothing is idle to drop
                self._log(logging.WARNING, "full", "cache server: %d connections, none idle: refused one",
                          len(self._conns))
                continue
            try:
                sock.setblocking(False)
                if sock.family in (socket.AF_INET, socket.AF_INET6):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conn = _Conn(sock, now, self.timeout)
                if self._secret is not None:
                    conn.nonce = os.urandom(wire.AUTH_NONCE_SIZE)
                    conn.stage, conn.need = _AUTH, wire.AUTH_PACKET_SIZE
                    sock.send(wire.encode_auth_challenge(conn.nonce))  # a few bytes: fits any buffer
                self._selector.register(sock, selectors.EVENT_READ, conn)
            except OSError as exc:
                sock.close()
                self._log(logging.INFO, "acc2", "cache server: dropped a new connection: %s", exc)
                continue
            self._conns[id(conn)] = conn

    def _out_of_fds(self, exc: OSError) -> None:
        dropped = self._evict(max(1, len(self._conns) // 8))
        self._log(logging.WARNING, "emfile", "cache server: accept failed (%s); closed %d idle connections%s",
                  exc.strerror or exc, dropped, "" if dropped else ", pausing accepts briefly")
        if not dropped:
            self._paused_until = time.monotonic() + _ACCEPT_BACKOFF
            try:
                self._selector.unregister(self._listener)
            except (KeyError, ValueError):
                pass

    def _evict(self, n: int) -> int:
        """Close up to `n` connections still reading: the oldest that sent nothing first,
        then the least recently active.  Returns how many were closed."""
        readers = [c for c in self._conns.values() if c.stage != _WRITE]
        readers.sort(key=lambda c: (c.got > 0, c.last))
        for conn in readers[:n]:
            self._fail(conn, "dropped to make room for a new connection", logging.INFO)
        return min(n, len(readers))

    def _hold(self, conn: _Conn, held: int) -> None:
        self._held += held - conn.held
        conn.held = held

    def _shed(self, keep: _Conn) -> None:
        """Over the memory budget: drop the least recently active other connections."""
        if self._held <= self.max_buffered:
            return
        others = sorted((c for c in self._conns.values() if c is not keep and c.held), key=lambda c: c.last)
        for conn in others:
            self._fail(conn, "dropped: the server holds too much for its connections", logging.WARNING)
            if self._held <= self.max_buffered:
                return

    def _drop(self, conn: _Conn) -> None:
        if self._conns.pop(id(conn), None) is None:
            return
        self._hold(conn, 0)
        if conn.dump:
            self._dumps -= 1
        try:
            self._selector.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass
        try:
            conn.sock.shutdown(socket.SHUT_WR)  # FIN first, as socketserver does: the client
        except OSError:                         # reads a clean close, not a reset
            pass
        try:
            conn.sock.close()
        except OSError:
            pass
        conn.buf = bytearray()
        conn.out = []

    def _fail(self, conn: _Conn, why: Any, level: int = logging.INFO) -> None:
        count(conn.cache or self.default, NetCounter.REQUEST_ERRORS)
        self._log(level, "req", "cache server: closed a request: %s", why)
        self._drop(conn)

    # -- reading ----------------------------------------------------------------------------

    def _on_readable(self, conn: _Conn) -> None:
        want = min(conn.need - len(conn.buf), _RECV_CHUNK)
        try:
            data = conn.sock.recv(max(want, 1))
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fail(conn, exc)
            return
        if not data:
            self._fail(conn, "the client closed before the request was complete"
                       if conn.got else "the client closed without a request")
            return
        conn.got += len(data)
        conn.last = time.monotonic()
        conn.buf += data
        self._hold(conn, len(conn.buf))
        self._shed(conn)
        try:
            while conn.stage != _WRITE and len(conn.buf) >= conn.need:
                self._advance(conn)
        except (_Refused, wire.WireError, CacheError, OSError, ValueError, OverflowError) as exc:
            self._fail(conn, exc)

    def _advance(self, conn: _Conn) -> None:
        """The bytes of the current stage are complete: parse them and move on."""
        if conn.stage == _AUTH:
            if not wire.check_auth(bytes(conn.buf[:wire.AUTH_PACKET_SIZE]), self._secret or b"", conn.nonce):
                raise _Refused("authentication failed (wrong or missing secret)")
            del conn.buf[:wire.AUTH_PACKET_SIZE]
            conn.stage, conn.need = _HEAD, 4
        elif conn.stage == _HEAD:
            header = wire.decode_header(bytes(conn.buf[:4]))
            if header.modifier1 != wire.MODIFIER1_CACHE:
                raise _Refused(f"modifier1 {header.modifier1} is not the cache's (111)")
            conn.header = header
            conn.stage, conn.need = _BODY, 4 + header.datasize
        elif conn.stage == _BODY:
            assert conn.header is not None
            body = bytes(conn.buf[4:conn.need])
            if conn.header.modifier2 == wire.MOD2_MAGIC:
                request = wire.decode_magic_request(body)
                conn.cache = self._cache(request.cache)
                conn.request = request
                if request.cmd in (b"set", b"update"):
                    cache = conn.cache
                    if not 1 <= request.size <= cache.max_item_size:
                        raise _Refused(f"value size {request.size} outside 1..{cache.max_item_size} "
                                       f"(max item size of cache {cache.name!r})")
                    conn.deadline += request.size / (1 << 20) * _SECONDS_PER_MIB
                    conn.stage, conn.need = _VALUE, conn.need + request.size
                    return
            self._reply(conn, self._dispatch(conn.header.modifier2, body, conn))
        elif conn.stage == _VALUE:
            assert conn.header is not None and conn.request is not None
            start = 4 + conn.header.datasize
            value = bytes(conn.buf[start:conn.need])
            conn.buf = bytearray()
            self._reply(conn, self._magic_write(conn.request, conn.cache, value))

    # -- writing ----------------------------------------------------------------------------

    def _reply(self, conn: _Conn, parts: List[bytes]) -> None:
        cache = conn.cache or self.default
        count(cache, NetCounter.REQUESTS)
        conn.buf = bytearray()
        conn.stage = _WRITE
        conn.out = [memoryview(p) for p in parts if p]
        size = sum(len(p) for p in conn.out)
        self._hold(conn, 0 if conn.dump else size)
        self._shed(conn)
        now = time.monotonic()
        conn.last = now
        conn.deadline = now + self.timeout + size / (1 << 20) * _SECONDS_PER_MIB
        self._on_writable(conn)
        if self._conns.get(id(conn)) is conn:
            self._selector.modify(conn.sock, selectors.EVENT_WRITE, conn)

    def _on_writable(self, conn: _Conn) -> None:
        while conn.out:
            try:
                n = conn.sock.send(conn.out[0][:_RECV_CHUNK * 4])
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # the client went away: the request was served, nothing to count
                self._log(logging.DEBUG, "send", "cache server: send: %s", exc)
                self._drop(conn)
                return
            conn.last = time.monotonic()
            if conn.held:
                self._hold(conn, max(conn.held - n, 0))
            head = conn.out[0][n:]
            if len(head):
                conn.out[0] = head
                return
            conn.out.pop(0)
        self._drop(conn)  # one request per connection: done

    # -- requests ---------------------------------------------------------------------------

    def _cache(self, name: Optional[bytes]) -> Any:
        if not name:
            return self.default
        try:
            return self.caches[name.decode("utf-8")]
        except (KeyError, UnicodeDecodeError):
            raise _Refused(f"unknown cache {name[:64]!r}") from None

    def _dispatch(self, mod2: int, body: bytes, conn: _Conn) -> List[bytes]:
        """Serve one request; returns the reply parts (empty: close without a reply).  A
        refusal raises."""
        if mod2 == wire.MOD2_MAGIC:
            assert conn.request is not None
            return self._magic_read(conn.request, conn.cache)
        if mod2 == wire.MOD2_DUMP:
            cache = conn.cache = self._cache(wire.decode_dump_request(body))
            if cache.hash_algo not in ("djb33x", "murmur2"):
                # a uWSGI node loads a dump as is and chains its items by the hash in each record
                raise _Refused(f"no dump of cache {cache.name!r}: its hash_algo {cache.hash_algo!r} is not one of uWSGI's")
            if self._dumps >= _MAX_DUMPS:
                raise _Refused("too many dumps in progress")
            image = cache._export_image()
            conn.dump = True
            self._dumps += 1
            count(cache, NetCounter.DUMPS)
            return [wire.encode_dump_reply_header(cache.max_items, cache.block_size, len(image)), image]
        cache = conn.cache = self.default
        if mod2 in (wire.MOD2_GET, wire.MOD2_STREAM_GET):
            if not body:
                raise _Refused("empty key")
            value = cache.get(body)
            if mod2 == wire.MOD2_STREAM_GET:
                return [wire.encode_simple_stream_reply(value)]
            if value is None:
                return []  # a miss is a close, like uWSGI (not an error)
            return [wire.encode_simple_get_reply(value)]
        if mod2 == wire.MOD2_SET:
            key, value = wire.decode_simple_set(body)
            if not cache.add(key, value):
                raise _Refused("simple set of an existing key")
            return []
        if mod2 == wire.MOD2_DEL:
            if not body:
                raise _Refused("empty key")
            cache.delete(body)
            return []
        if mod2 in (wire.MOD2_DICT, wire.MOD2_DICT_404):
            parts = []
            total = 0
            for kind, key in wire.decode_simple_lookups(body):
                value = cache.get(key)
                if value is None and kind == b"get":
                    value = _NOT_FOUND
                if value is not None:
                    total += len(value)
                    if total > self.max_buffered:  # thousands of keys naming big values
                        raise _Refused(f"the reply would exceed {self.max_buffered} bytes")
                    parts.append(value)
            return parts
        raise _Refused(f"unknown modifier2 {mod2}")

    def _magic_read(self, request: wire.MagicRequest, cache: Any) -> List[bytes]:
        cmd, key = request.cmd, request.key
        if cmd == b"get":
            found = cache._get_with_expiry(key)
            return [wire.encode_magic_ok(found[0], found[1])] if found is not None else []
        if cmd == b"exists":
            return [wire.encode_magic_ok()] if key in cache else []
        if cmd == b"del":
            return [wire.encode_magic_ok()] if cache.delete(key) else []
        if cmd == b"clear":
            cache.clear()
            return [wire.encode_magic_ok()]
        raise _Refused(f"magic command {cmd!r} without its value")  # set/update go through _VALUE

    def _magic_write(self, request: wire.MagicRequest, cache: Any, value: bytes) -> List[bytes]:
        if request.cmd == b"set":
            ok = cache.add(request.key, value, request.expires)
        else:
            cache.set(request.key, value, request.expires)
            ok = True
        return [wire.encode_magic_ok()] if ok else []


def _listening(family: int, bind: Callable[[socket.socket], None]) -> socket.socket:
    """A non-blocking stream socket of `family`, bound by `bind`, listening; closed on error."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        bind(sock)
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _remove_stale_socket(path: str) -> None:
    """Replace a socket file left by a dead server; refuse one a live server answers on."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise OSError(f"{path} exists and is not a socket")
    if st.st_uid != os.geteuid():
        raise OSError(f"{path} belongs to uid {st.st_uid}, not to us: refusing to replace it")
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
