"""Stats of every cache of a namespace, read straight from shared memory, and an HTTP server
that serves them (the offline reader itself, :class:`NamespaceStats` and the JSON and
Prometheus forms, lives in :mod:`uwcache.stats`; its names are re-exported here).

``GET /`` answers a browser (``Accept: text/html``) with the dashboard, a page shipped in
the package (dashboard.html: plain JavaScript and inline SVG that polls ``/stats.json``
every second), and everything else with uWSGI's stats-server shape, ``{"caches": [...]}``,
each cache's keys in uWSGI's order (name, hash, hashsize, keysize, max_items, blocks,
blocksize, items, hits, miss, full, last_modified_at) followed by uwcache's extras, plus a
``node`` section. ``GET /stats.json`` is always the JSON. ``GET /metrics`` answers the
same numbers in Prometheus' text format. No node is needed to read stats: any process
can attach a cache by name and read its counters.
"""

from __future__ import annotations

import errno
import hmac
import json
import logging
import os
import socket
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..address import DEFAULT_HOST, is_loopback, parse_tcp  # noqa: F401  (re-exported)
from ..stats import (  # noqa: F401  (the offline reader lives in uwcache.stats; re-exported)
    MAX_BLOCK_MAP_SEGMENTS,
    UWSGI_STATS_KEYS,
    NamespaceStats,
    block_map,
    prometheus_text,
    stats_document,
    stats_json,
)

log = logging.getLogger("uwcache")

__all__ = [
    "UWSGI_STATS_KEYS",
    "NamespaceStats",
    "block_map",
    "wants_html",
    "StatsServer",
    "parse_address",
    "stats_document",
    "stats_json",
    "prometheus_text",
]


def parse_address(address: str) -> Tuple[str, int]:
    """The stats server's reading of :func:`uwcache.address.parse_address`: port 0 asks
    for a free port, no UNIX paths."""
    return parse_tcp(address, option="stats address", port0=True)


def wants_html(accept: Optional[str]) -> bool:
    """Content negotiation for ``/``: True when the Accept header prefers ``text/html`` to
    ``application/json`` (a browser); a tie, ``*/*`` or no header keeps the JSON."""
    if not accept:
        return False
    quality: Dict[str, float] = {}
    for part in accept.split(","):
        media, _, params = part.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        media = media.strip().lower()
        if media:
            quality[media] = max(q, quality.get(media, 0.0))

    def q_of(media: str) -> float:
        kind = media.split("/")[0] + "/*"
        for candidate in (media, kind, "*/*"):
            if candidate in quality:
                return quality[candidate]
        return 0.0

    html = quality.get("text/html", 0.0)
    return html > 0 and html > q_of("application/json")


def _dashboard_page() -> bytes:
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "dashboard.html"), "rb") as f:
        return f.read()


class _Handler(BaseHTTPRequestHandler):
    server: "_HTTPServer"
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.idle_timeout)  # every blocking read and write is bounded

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._answer(send_body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(send_body=False)

    def _authorised(self, query: str) -> bool:
        token = self.server.token
        if token is None:
            return True
        offered = [v for k, v in urllib.parse.parse_qsl(query) if k == "token"]
        offered.append(self.headers.get("X-Uwcache-Token", ""))
        auth = self.headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            offered.append(auth[7:].strip())
        return any(hmac.compare_digest(o.encode(), token.encode()) for o in offered if o)

    def _answer(self, *, send_body: bool) -> None:
        self.server.busy(self.connection)
        path, _, query = self.path.partition("?")
        status = 200
        extra: Dict[str, str] = {}
        try:
            if not self._authorised(query):
                status, ctype = 401, "application/json"
                body = json.dumps({"error": "a token is required: ?token=... or the X-Uwcache-Token header"}).encode()
            elif path == "/" and wants_html(self.headers.get("Accept")) or path == "/dashboard":
                body, ctype = self.server.page, "text/html; charset=utf-8"
                extra["Content-Security-Policy"] = ("default-src 'none'; script-src 'unsafe-inline'; "
                                                    "style-src 'unsafe-inline'; connect-src 'self'; img-src data:")
                extra["X-Content-Type-Options"] = "nosniff"
            elif path in ("/", "/json", "/stats.json"):
                body = json.dumps(self.server.document()).encode()
                ctype = "application/json"
            elif path == "/metrics":
                body = prometheus_text(self.server.collect()).encode()
                ctype = "text/plain; version=0.0.4; charset=utf-8"
            else:
                status, ctype = 404, "application/json"
                body = json.dumps({"error": f"no such path {path!r}: try / (JSON, or the dashboard in a "
                                            "browser), /stats.json or /metrics"}).encode()
        except Exception as exc:  # a stats reader must answer, whatever happened underneath
            status, ctype = 500, "application/json"
            body = json.dumps({"error": str(exc)}).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if path == "/":
            self.send_header("Vary", "Accept")
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        if send_body:
            self.wfile.write(body)
        self.wfile.flush()
        self.server.waiting(self.connection)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug("stats http: " + format, *args)


class _HTTPServer(ThreadingHTTPServer):
    """One thread per connection, at most ``max_connections`` of them.

    Every connection is *waiting* (for its next request, or for the rest of one) or *busy*
    (answering). A connection that waits longer than ``idle_timeout`` is shut down; when the
    cap is reached, a new connection shuts down the one that has waited longest, and is
    refused when every connection is busy. Failing accepts (out of file descriptors) back
    off instead of spinning.
    """

    daemon_threads = True
    request_queue_size = 128
    collect: Callable[[], List[Dict[str, Any]]]
    document: Callable[[], Dict[str, Any]]
    page: bytes
    token: Optional[str]
    idle_timeout: float
    max_connections: int

    def server_bind(self) -> None:
        self._conns: Dict[socket.socket, List[Any]] = {}  # socket -> [waiting since or None]
        self._conns_lock = threading.Lock()
        self.dropped = 0
        self._accept_warned = -10.0
        super().server_bind()

    def get_request(self) -> Tuple[socket.socket, Any]:
        try:
            return super().get_request()
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                now = time.monotonic()
                if now - self._accept_warned >= 10:  # once in a while, not ten times a second
                    self._accept_warned = now
                    log.warning("stats http: cannot accept a connection: %s", exc.strerror)
                time.sleep(0.1)  # the process is out of descriptors: do not spin
            raise

    def verify_request(self, request: Any, client_address: Any) -> bool:
        now = time.monotonic()
        victim = None
        with self._conns_lock:
            if len(self._conns) >= self.max_connections:
                waiting = [(entry[0], sock) for sock, entry in self._conns.items() if entry[0] is not None]
                if not waiting:
                    return False  # every connection is answering: refuse this one
                victim = min(waiting, key=lambda pair: pair[0])[1]
                del self._conns[victim]
            self._conns[request] = [now]
        if victim is not None:
            self._drop(victim)
        return True

    def _drop(self, sock: socket.socket) -> None:
        self.dropped += 1
        try:
            sock.shutdown(socket.SHUT_RDWR)  # its thread sees the end of the stream and exits
        except OSError:
            pass

    def busy(self, sock: socket.socket) -> None:
        with self._conns_lock:
            entry = self._conns.get(sock)
            if entry is not None:
                entry[0] = None

    def waiting(self, sock: socket.socket) -> None:
        with self._conns_lock:
            entry = self._conns.get(sock)
            if entry is not None:
                entry[0] = time.monotonic()

    def service_actions(self) -> None:
        deadline = time.monotonic() - self.idle_timeout
        with self._conns_lock:
            stale = [sock for sock, entry in self._conns.items() if entry[0] is not None and entry[0] < deadline]
            for sock in stale:
                del self._conns[sock]
        for sock in stale:
            self._drop(sock)

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.pop(request, None)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client that went away mid-answer, or a connection dropped to make room
        log.debug("stats http: error serving %s", client_address, exc_info=True)

    @property
    def open_connections(self) -> int:
        with self._conns_lock:
            return len(self._conns)


DEFAULT_MAX_CONNECTIONS = 64
DEFAULT_IDLE_TIMEOUT = 10.0


class StatsServer:
    """An HTTP server in a thread: the dashboard (``/`` for browsers, ``/dashboard``), JSON
    (``/`` for everything else, ``/stats.json``) and Prometheus text (``/metrics``).

    ``collect`` returns the list of cache stats to serve (e.g. ``NamespaceStats.collect``).
    Binding happens in the constructor, so a busy port fails there with OSError. A bare port
    or ``:PORT`` binds 127.0.0.1; any other address is logged as a warning, since there is
    no authentication unless ``token`` (or ``$UWCACHE_STATS_TOKEN``) is set: then every
    request must carry it, as ``?token=`` or an ``X-Uwcache-Token`` (or ``Authorization:
    Bearer``) header. At most ``max_connections`` connections are open at once (the one
    idle longest is dropped for a new one) and a connection idle or slow for
    ``idle_timeout`` seconds is closed.
    """

    def __init__(self, address: str, collect: Callable[[], List[Dict[str, Any]]], *,
                 namespace: Optional[str] = None, token: Optional[str] = None,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 idle_timeout: float = DEFAULT_IDLE_TIMEOUT) -> None:
        host, port = parse_address(address)
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections!r}")
        if not idle_timeout > 0:
            raise ValueError(f"idle_timeout must be > 0 seconds, got {idle_timeout!r}")
        if token is None:
            token = os.environ.get("UWCACHE_STATS_TOKEN") or None
        if namespace is None and isinstance(getattr(collect, "__self__", None), NamespaceStats):
            namespace = collect.__self__.namespace  # type: ignore[attr-defined]
        self.namespace = namespace
        self.started_at = time.time()
        server_class: type = _HTTPServer
        if ":" in host:
            server_class = type("_HTTPServer6", (_HTTPServer,), {"address_family": socket.AF_INET6})
        self._httpd = server_class((host, port), _Handler)
        self._httpd.collect = collect
        self._httpd.document = self.document
        self._httpd.page = _dashboard_page()
        self._httpd.token = token
        self._httpd.max_connections = int(max_connections)
        self._httpd.idle_timeout = float(idle_timeout)
        self._thread: Optional[threading.Thread] = None
        self.host = host
        self.port = self._httpd.server_address[1]
        if not is_loopback(host):
            log.warning("stats are served on %s, not only on loopback: whoever reaches it can read cache names "
                        "and counters%s", host, "" if token else " (no token is set: there is no authentication)")

    def document(self) -> Dict[str, Any]:
        """What ``/stats.json`` answers: :func:`stats_document` plus a ``node`` section
        (namespace, pid, uwcache version, start time and uptime of this server's process)."""
        stats = self._httpd.collect()
        now = time.time()
        doc = stats_document(stats)
        doc["node"] = {
            "namespace": self.namespace if self.namespace is not None
            else (stats[0].get("namespace") if stats else None),
            "pid": os.getpid(),
            "version": _version(),
            "started_at": round(self.started_at, 3),
            "uptime": round(now - self.started_at, 3),
            "now": round(now, 3),
        }
        return doc

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    @property
    def open_connections(self) -> int:
        """Connections open right now (waiting or being answered)."""
        return self._httpd.open_connections

    def start(self) -> "StatsServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="uwcache-stats-http", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and release the port. Safe to call twice."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> "StatsServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _version() -> str:
    from .. import __version__

    return __version__
