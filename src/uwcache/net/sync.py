"""``sync_from``: load a full dump of a cache from a peer at start (uWSGI's ``sync=``).

Request (modifier2 6, body = the cache name), reply ``[111, len(vars), 7]`` + vars
``items`` and ``blocksize`` + the raw image (items area then data area, uWSGI's layout).
The image carries no length and no key_size/blocks: uWSGI's client assumes the peer's
geometry equals its own.  We read the image size implied by the peer's ``items`` and
``blocksize`` with *our* ``key_size`` (and, in single-block mode, blocks = items; in
bitmap mode our ``block_count``), then require the peer to close right after it: a dump
longer or shorter than that means the geometries differ and the dump is refused, where
uWSGI would load garbage.  A dump that fits is translated item by item into our layout
(hash chains, free list, bitmap and LRU rebuilt; expired items skipped; items too big for
this cache dropped and counted in the log).

A peer is not trusted: the dump it announces may be at most :func:`max_dump_size` bytes
(geometries beyond it are refused before anything is read), bytes are buffered only as
they arrive, the whole dump must arrive within ``timeout`` plus one second per MiB, and
anything wrong with a peer (garbage, a huge announced size, an endless stream, a
mismatched geometry, a damaged image) is logged and the next peer is tried.  The node
starts in every case.

Items are written over the local cache (same keys replaced, others kept): several
processes may start a node on one shared cache, and a later one must not wipe what the
first already holds.  uWSGI replaces the whole memory.
"""

from __future__ import annotations

import logging
import socket
from typing import Any, Optional, Sequence, Tuple

from .. import _engine, wire
from ..address import parse_address
from ..errors import AddressError, CacheError, SyncError
from .client import DEFAULT_TIMEOUT, Stream, connect, send_all

log = logging.getLogger("uwcache.net")

#: uWSGI waits this long for the connection to a sync peer
CONNECT_TIMEOUT = 3.0
#: a peer's dump may be this many times the size of our own image (other geometries are
#: translated), and at least MIN_DUMP_LIMIT bytes
DUMP_SIZE_FACTOR = 8
MIN_DUMP_LIMIT = 256 << 20


def _geometry(cache: Any, info: wire.DumpInfo) -> Tuple[int, int, int, int]:
    """(items, key_size, block_size, blocks) of the peer's image, as far as we can know."""
    items = info.items if info.items is not None else cache.max_items
    block_size = info.blocksize if info.blocksize is not None else cache.block_size
    if cache.options.mode_bitmap:
        blocks = cache.blocks
    else:
        blocks = items
    return items, cache.key_size, block_size, blocks


def max_dump_size(cache: Any) -> int:
    """The largest dump image accepted from a peer for `cache`."""
    own = _engine.image_size(cache.max_items, cache.key_size, cache.block_size, cache.blocks)
    return max(DUMP_SIZE_FACTOR * own, MIN_DUMP_LIMIT)


def fetch_dump(cache: Any, address: str, *, timeout: float = DEFAULT_TIMEOUT,
               secret: Optional[str] = None) -> Tuple[bytes, Tuple[int, int, int, int]]:
    """Ask `address` for the dump of the cache named like `cache`; (image, geometry).
    Raises OSError (unreachable, timeout) or SyncError/WireError (bad or mismatched dump).
    `secret`: answer the challenge of a peer server that has one."""
    try:
        parsed = parse_address(address, option="sync_from", unix=True)
    except AddressError as exc:
        raise SyncError(str(exc)) from None
    with connect(parsed, min(timeout, CONNECT_TIMEOUT)) as sock:
        if secret is not None:
            nonce = wire.decode_auth_challenge(Stream(sock, timeout).read_exact(wire.AUTH_CHALLENGE_SIZE))
            send_all(sock, wire.auth_response(secret, nonce), timeout)
        send_all(sock, wire.encode_dump_request(cache.name), timeout)
        stream = Stream(sock, timeout)
        head = stream.read_exact(4)
        header = wire.decode_header(head)
        body = stream.read_exact(header.datasize)
        info = wire.parse_dump_reply(head + body)
        items, key_size, block_size, blocks = geometry = _geometry(cache, info)
        if items < 2 or block_size < 1:
            raise SyncError(f"the peer announces an unusable geometry: items={items}, blocksize={block_size}")
        size = _engine.image_size(items, key_size, block_size, blocks)
        limit = max_dump_size(cache)
        if size > limit:
            raise SyncError(f"the peer announces a dump of {size} bytes (items={items}, blocksize={block_size}); "
                            f"at most {limit} are accepted for this cache")
        stream.allow(size)
        described = (f"items={items}, blocksize={block_size} from the peer, keysize={key_size}, "
                     f"blocks={blocks} assumed from this cache")
        try:
            image = stream.read_exact(size)
        except wire.Truncated as exc:
            raise SyncError(f"the dump is shorter than expected ({exc}) for {described}: "
                            "the peer's key_size or block count differ from ours") from None
        try:
            extra = stream.recv(1)
        except (socket.timeout, ConnectionResetError):
            extra = b""  # the peer keeps the connection open or resets it: nothing more comes
        if extra:
            raise SyncError(f"the dump is longer than the {size} bytes expected for {described}: "
                            "the peer's key_size or block count differ from ours")
    return image, geometry


def sync_cache(cache: Any, addresses: Sequence[str], *, timeout: float = DEFAULT_TIMEOUT) -> Optional[str]:
    """Load the first valid dump among `addresses` (in order) into `cache`; returns the
    address used, or None (with a warning) when every peer failed -- the node then
    starts with what it has, where uWSGI exits."""
    for address in addresses:
        log.info("[cache-sync] getting cache dump of \"%s\" from %s ...", cache.name, address)
        try:
            image, (items, key_size, block_size, blocks) = fetch_dump(cache, address, timeout=timeout,
                                                                      secret=cache.options.secret)
            bitmap = bool(cache.options.mode_bitmap) or blocks != items
            loaded, dropped = cache._import_image(image, items, key_size, block_size, blocks, bitmap)
        except (OSError, CacheError, ValueError, OverflowError, MemoryError) as exc:  # WireError, SyncError too
            log.warning('[cache-sync] cache "%s": no dump from %s: %s; trying the next sync node...',
                        cache.name, address, exc.strerror if isinstance(exc, OSError) and exc.strerror else exc)
            continue
        except Exception as exc:  # whatever a peer sends must not stop the node from starting
            log.error('[cache-sync] cache "%s": the dump from %s failed unexpectedly: %r; trying the next '
                      "sync node...", cache.name, address, exc)
            continue
        finally:
            image = b""
        log.info('[cache-sync] cache "%s": restored %d items from %s', cache.name, loaded, address)
        if dropped:
            log.warning('[cache-sync] cache "%s": %d items of the dump from %s were dropped (damaged, or too '
                        "big for this cache's key_size/block_size/max_items)", cache.name, dropped, address)
        return address
    if addresses:
        log.warning('[cache-sync] cache "%s": every sync node failed (%s); starting without their data',
                    cache.name, ", ".join(addresses))
    return None
