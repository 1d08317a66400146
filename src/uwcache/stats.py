"""The offline stats reader: the stats of every cache of a namespace, read from the regions
without a node or a server, and their JSON and Prometheus forms.

``uwcache stats``, ``uwcache top`` and a node's stats server (:mod:`uwcache.net.stats`, which
re-exports these names) all read through it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from . import _engine
from .cache import Cache, attach, current_path, generations, list_caches, region_format
from .options import resolve_namespace
from .errors import CacheError

__all__ = [
    "UWSGI_STATS_KEYS",
    "NamespaceStats",
    "block_map",
    "stats_document",
    "stats_json",
    "prometheus_text",
]

log = logging.getLogger("uwcache")

# The keys of one cache in uWSGI's stats-server JSON, in its order (reference section 8).
UWSGI_STATS_KEYS = ("name", "hash", "hashsize", "keysize", "max_items", "blocks", "blocksize",
                    "items", "hits", "miss", "full", "last_modified_at")

MAX_BLOCK_MAP_SEGMENTS = 200



def _other_release_generation(name: str, path: str) -> Optional[Dict[str, Any]]:
    """The entry of an old generation in use that this release cannot attach because another
    uwcache release made it (an upgrade that changed the region format): what the file says
    without reading the format. None for a damaged or vanished one."""
    version = region_format(path)
    if version is None or version == _engine.FORMAT_VERSION:
        return None
    try:
        size = os.stat(path).st_size
    except OSError:
        return None
    return {"name": name, "generation": "old", "readable": False, "format": version, "path": path, "memory": size}


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
                # region removed, or a newer generation took over: let the old one go (its last
                # user frees it) and attach the current one
                if name not in present or self._attached[name].path != current_path(name, self.namespace):
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

    def collect(self, only: Optional[Iterable[str]] = None, *, old_generations: bool = False) -> List[Dict[str, Any]]:
        """One stats dict per cache (:meth:`uwcache.Cache.stats`: uWSGI's keys, uwcache's
        extras, then the network counters ``net_*`` shared by every process), plus
        ``block_map`` (:func:`block_map`) for bitmap caches and ``replication`` (its
        ``peers`` and ``listen`` addresses) for caches this process configured with them.

        With ``old_generations``, each cache is followed by its older generations that are
        still in use (a deploy that changed the options), with ``"generation": "old"``. One
        that another uwcache release made (another region format) cannot be read: its entry
        has only ``name, generation, readable`` (False), ``format, path`` and ``memory``.
        """
        stats = []
        for cache in self.caches(only):
            try:
                entry = cache.stats()
                if entry.get("mode") == "bitmap":
                    entry["block_map"] = block_map(cache._block_bitmap(), cache.blocks)
            except CacheError:  # closed by its owner while we were reading (shutdown)
                continue
            options = cache.options
            if options.udp_clients or options.udp_servers:
                entry["replication"] = {"peers": list(options.udp_clients), "listen": list(options.udp_servers)}
            stats.append(entry)
            if old_generations and cache.options.store is None:
                stats.extend(self._old_generations(cache))
        return stats

    def _old_generations(self, cache: Cache) -> List[Dict[str, Any]]:
        found = []
        for generation in generations(cache.name, self.namespace):
            if generation["current"] or not generation["in_use"] or generation["path"] == cache.path:
                continue
            try:  # attached only while read: holding it would keep it from being freed
                with attach(cache.name, namespace=self.namespace, generation=generation["path"]) as old:
                    stats = old.stats()
            except CacheError:
                other = _other_release_generation(cache.name, generation["path"])
                if other is not None:
                    found.append(other)
                continue
            stats["generation"] = "old"
            found.append(stats)
        return found

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


def block_map(bitmap: bytes, blocks: int, max_segments: int = MAX_BLOCK_MAP_SEGMENTS) -> Dict[str, Any]:
    """A bounded summary of a bitmap cache's block map (``bitmap``: one bit per block, most
    significant first, set = used).

    ``segments`` lists the runs as ``[used, length]`` pairs (``used`` is 1 or 0) when there
    are at most ``max_segments`` runs; otherwise the map is cut into at most
    ``max_segments`` bins of ``bin_blocks`` blocks and ``bins`` gives the used blocks of
    each. ``largest_free_run``/``largest_free_start`` are exact: a value needs that many
    consecutive free blocks to be stored.
    """
    bits = format(int.from_bytes(bitmap, "big"), f"0{len(bitmap) * 8}b")[:blocks] if blocks > 0 else ""
    used = bits.count("1")
    runs = (bits.count("01") + bits.count("10") + 1) if bits else 0
    largest = max(map(len, bits.split("1"))) if bits else 0
    summary: Dict[str, Any] = {
        "blocks": len(bits),
        "used": used,
        "free": len(bits) - used,
        "runs": runs,
        "largest_free_run": largest,
        "largest_free_start": bits.find("0" * largest) if largest else -1,
    }
    if runs <= max_segments:
        summary["segments"] = [[1 if m.group()[0] == "1" else 0, len(m.group())]
                               for m in re.finditer(r"0+|1+", bits)]
    else:
        size = -(-len(bits) // max_segments)
        summary["bin_blocks"] = size
        summary["bins"] = [bits.count("1", i, i + size) for i in range(0, len(bits), size)]
    return summary


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
