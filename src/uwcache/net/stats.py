"""Stats of every cache of a namespace, read straight from shared memory, and an HTTP server
that serves them.

``GET /`` answers uWSGI's stats-server shape, ``{"caches": [...]}``, each cache's keys in
uWSGI's order (name, hash, hashsize, keysize, max_items, blocks, blocksize, items, hits,
miss, full, last_modified_at) followed by uwcache's extras. ``GET /metrics`` answers the
same numbers in Prometheus' text format. No node is needed to read stats: any process
can attach a cache by name and read its counters.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

from ..cache import Cache, attach, list_caches
from ..config import _resolve_namespace as resolve_namespace
from ..errors import CacheError

log = logging.getLogger("uwcache")

__all__ = [
    "UWSGI_STATS_KEYS",
    "NamespaceStats",
    "StatsServer",
    "parse_address",
    "stats_document",
    "stats_json",
    "prometheus_text",
]

# The keys of one cache in uWSGI's stats-server JSON, in its order (reference section 8).
UWSGI_STATS_KEYS = ("name", "hash", "hashsize", "keysize", "max_items", "blocks", "blocksize",
                    "items", "hits", "miss", "full", "last_modified_at")

DEFAULT_HOST = "127.0.0.1"


def parse_address(address: str) -> Tuple[str, int]:
    """``HOST:PORT`` -> (host, port). A bare port means loopback; ``:PORT`` means every
    address (uWSGI's spelling); ``[::1]:PORT`` is IPv6. Port 0 asks for a free port."""
    text = address.strip()
    if text.isdigit():
        host, port_text = DEFAULT_HOST, text
    else:
        host, colon, port_text = text.rpartition(":")
        if not colon:
            raise ValueError(f"stats address {address!r}: expected HOST:PORT, :PORT or a bare PORT")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        elif ":" in host:
            raise ValueError(f"stats address {address!r}: write IPv6 addresses in brackets, e.g. [::1]:9191")
        if not host:
            host = "0.0.0.0"
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"stats address {address!r}: the port must be a number in 0..65535")
    return host, int(port_text)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and 'localhost'."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class NamespaceStats:
    """Reads the stats of every cache in a namespace, attaching caches as they appear.

    ``owned`` are caches this process already has open (a node's): they are used as they
    are, first and in their order; the others are attached by name and kept attached
    until their region disappears or :meth:`close` is called. Thread-safe.
    """

    def __init__(self, namespace: Optional[str] = None, owned: Optional[Mapping[str, Cache]] = None) -> None:
        self.namespace = resolve_namespace(namespace)
        self._owned: Dict[str, Cache] = dict(owned or {})
        self._attached: Dict[str, Cache] = {}
        self._lock = threading.Lock()
        self._reported: set = set()

    def names(self) -> List[str]:
        """The caches of the namespace: the owned ones first, then the others by name."""
        present = list_caches(self.namespace)
        return [n for n in self._owned] + [n for n in present if n not in self._owned]

    def caches(self, only: Optional[Iterable[str]] = None) -> List[Cache]:
        """Open Cache objects for the namespace (or only the named ones, which must exist)."""
        with self._lock:
            present = self.names()
            for name in list(self._attached):
                if name not in present:  # region removed: let it go
                    self._attached.pop(name).close()
            wanted = present if only is None else list(only)
            result = []
            for name in wanted:
                cache = self._owned.get(name) or self._attached.get(name)
                if cache is None or cache.closed:
                    try:
                        cache = self._attached[name] = attach(name, namespace=self.namespace)
                    except CacheError as exc:
                        if only is not None:
                            raise
                        if name not in self._reported:  # once, not on every scrape
                            self._reported.add(name)
                            log.warning("stats: cannot attach cache %r: %s", name, exc)
                        continue
                result.append(cache)
            return result

    def collect(self, only: Optional[Iterable[str]] = None) -> List[Dict[str, Any]]:
        """One stats dict per cache (:meth:`uwcache.Cache.stats`: uWSGI's keys, uwcache's
        extras, then the network counters ``net_*`` shared by every process)."""
        stats = []
        for cache in self.caches(only):
            try:
                stats.append(cache.stats())
            except CacheError:  # closed by its owner while we were reading (shutdown)
                continue
        return stats

    def close(self) -> None:
        """Detach the caches this object attached (owned caches are left alone)."""
        with self._lock:
            for cache in self._attached.values():
                cache.close()
            self._attached.clear()

    def __enter__(self) -> "NamespaceStats":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def stats_document(stats: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The JSON document: ``{"caches": [...]}``, like uWSGI's stats server."""
    return {"caches": stats}


def stats_json(stats: List[Dict[str, Any]], *, indent: Optional[int] = None) -> str:
    return json.dumps(stats_document(stats), indent=indent)


# (stats key, metric name, type, help). Counters get the conventional _total suffix.
_METRICS = (
    ("items", "uwcache_items", "gauge", "Live items in the cache (expired ones included until swept)."),
    ("capacity", "uwcache_capacity_items", "gauge", "Items the cache can hold (max_items - 1)."),
    ("max_items", "uwcache_max_items", "gauge", "Item slots, slot 0 included (max_items)."),
    ("blocks", "uwcache_blocks", "gauge", "Data blocks."),
    ("blocksize", "uwcache_block_size_bytes", "gauge", "Bytes per data block."),
    ("blocks_used", "uwcache_blocks_used", "gauge", "Data blocks in use."),
    ("bytes_used", "uwcache_value_bytes", "gauge", "Bytes of values stored."),
    ("memory", "uwcache_memory_bytes", "gauge", "Shared memory mapped for the cache."),
    ("fragmentation", "uwcache_fragmentation_ratio", "gauge",
     "1 - largest free run / free blocks (bitmap mode; 0 otherwise)."),
    ("expired_pending", "uwcache_expired_pending_items", "gauge", "Expired items not swept yet."),
    ("hits", "uwcache_hits_total", "counter", "Lookups that found the key."),
    ("miss", "uwcache_misses_total", "counter", "Lookups that did not find the key."),
    ("writes", "uwcache_writes_total", "counter", "Successful writes."),
    ("full", "uwcache_full_total", "counter", "Times the cache was full on a write."),
    ("evictions", "uwcache_evictions_total", "counter", "Items evicted to make room (LRU, clear_on_full)."),
    ("expired_freed", "uwcache_expired_freed_total", "counter", "Expired items freed."),
    ("repairs", "uwcache_repairs_total", "counter", "Structure repairs after a process died holding the lock."),
    ("last_modified_at", "uwcache_last_modified_timestamp_seconds", "gauge",
     "Unix time of the last modification (0 unless use_lastmod)."),
)


def _label(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _net_metrics(stats: List[Dict[str, Any]]) -> List[Tuple[str, str, str, str]]:
    """Every ``net_*`` counter present becomes ``uwcache_net_*_total``."""
    keys = sorted({key for entry in stats for key in entry if key.startswith("net_")})
    return [(key, f"uwcache_{key}_total", "counter", f"Network counter {key} (see docs/network.md).")
            for key in keys]


def prometheus_text(stats: List[Dict[str, Any]]) -> str:
    """The stats in Prometheus' text exposition format (version 0.0.4)."""
    lines: List[str] = []
    for key, metric, kind, help_text in (*_METRICS, *_net_metrics(stats)):
        lines.append(f"# HELP {metric} {help_text}")
        lines.append(f"# TYPE {metric} {kind}")
        for entry in stats:
            if key not in entry:
                continue
            labels = f'namespace="{_label(entry.get("namespace", ""))}",cache="{_label(entry["name"])}"'
            lines.append(f"{metric}{{{labels}}} {entry[key]}")
    lines.extend(_near_lines(stats))
    return "\n".join(lines) + "\n"


# near cache (issue 11): the stats' "near" section, one metric per key
_NEAR_GAUGES = {"generation", "listener_lag_us", "trusted_for_ms", "leases_live", "ttl_only"}


def _near_lines(stats: List[Dict[str, Any]]) -> List[str]:
    entries = [e for e in stats if isinstance(e.get("near"), dict)]
    keys = sorted({k for e in entries for k in e["near"]})
    lines: List[str] = []
    for key in keys:
        gauge = key in _NEAR_GAUGES
        metric = f"uwcache_near_{key}" + ("" if gauge else "_total")
        lines.append(f"# HELP {metric} Near cache {key.replace('_', ' ')} (see docs/near.md).")
        lines.append(f"# TYPE {metric} {'gauge' if gauge else 'counter'}")
        for entry in entries:
            if key in entry["near"]:
                labels = f'namespace="{_label(entry.get("namespace", ""))}",cache="{_label(entry["name"])}"'
                lines.append(f"{metric}{{{labels}}} {entry['near'][key]}")
    return lines


class _Handler(BaseHTTPRequestHandler):
    server: "_HTTPServer"
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._answer(send_body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(send_body=False)

    def _answer(self, *, send_body: bool) -> None:
        path = self.path.split("?", 1)[0]
        status = 200
        try:
            if path in ("/", "/json"):
                body = stats_json(self.server.collect()).encode()
                ctype = "application/json"
            elif path == "/metrics":
                body = prometheus_text(self.server.collect()).encode()
                ctype = "text/plain; version=0.0.4; charset=utf-8"
            else:
                status, ctype = 404, "application/json"
                body = json.dumps({"error": f"no such path {path!r}: try / (JSON) or /metrics"}).encode()
        except Exception as exc:  # a stats reader must answer, whatever happened underneath
            status, ctype = 500, "application/json"
            body = json.dumps({"error": str(exc)}).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug("stats http: " + format, *args)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    collect: Callable[[], List[Dict[str, Any]]]


class StatsServer:
    """An HTTP server answering ``/`` (JSON) and ``/metrics`` (Prometheus) in a thread.

    ``collect`` returns the list of cache stats to serve (e.g. ``NamespaceStats.collect``).
    Binding happens in the constructor, so a busy port fails there with OSError.
    """

    def __init__(self, address: str, collect: Callable[[], List[Dict[str, Any]]]) -> None:
        host, port = parse_address(address)
        server_class: type = _HTTPServer
        if ":" in host:
            server_class = type("_HTTPServer6", (_HTTPServer,), {"address_family": socket.AF_INET6})
        self._httpd = server_class((host, port), _Handler)
        self._httpd.collect = collect
        self._thread: Optional[threading.Thread] = None
        self.host = host
        self.port = self._httpd.server_address[1]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

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
