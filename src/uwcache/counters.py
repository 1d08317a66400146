"""The counters every process shares in a cache's header: the network counters (replication
and the cache server add to them) and the near tier's; stats read them without a node.

They are slots of the region header, so they live beside the cache; ``uwcache.net.counters``
and ``uwcache.near`` re-export them."""

from __future__ import annotations

import enum
from typing import Any, Dict

from .errors import CacheError


class NetCounter(enum.IntEnum):
    """Indices of the network counters in a cache's shared header (``_net_counter``).

    The stats key of each is ``net_`` + the lower-case name (see :func:`net_stats`)."""

    SENT = 0  #: replication datagrams sent (one per peer and write)
    SEND_ERRORS = 1  #: datagrams the OS refused to send (unreachable network, full buffer...)
    RECEIVED = 2  #: replication datagrams received and applied
    DROPPED = 3  #: received datagrams dropped: malformed, truncated, oversized, unknown command
    REJECTED = 4  #: received datagrams refused by the secret: unsigned, forged, stale, replayed
    APPLY_ERRORS = 5  #: valid datagrams the cache could not apply (key too long, value too large, full)
    UNREPLICATED = 6  #: local writes not sent: too large for a datagram, or clear()
    REQUESTS = 7  #: remote-access requests (magic, simple commands) served by the cache server
    REQUEST_ERRORS = 8  #: remote-access requests refused: malformed, oversized, too slow
    DUMPS = 9  #: full dumps served (sync_from of a peer)


def net_stats(cache: Any) -> Dict[str, int]:
    """The network counters of a cache as stats keys (``net_sent``, ``net_received``...)."""
    return {"net_" + c.name.lower(): cache._net_counter(int(c)) for c in NetCounter}


def count(cache: Any, counter: NetCounter, n: int = 1) -> None:
    """Add to a shared counter; a closed cache (shutdown race) is ignored."""
    try:
        cache._net_counter(int(counter), n)
    except CacheError:
        pass


# -- the near tier's counters (uwcache.near; docs/near.md) ---------------------------------

#: the near tier's shared counters, in the order of the engine's ``_near_state()["stats"]``
NEAR_STAT_NAMES = ("fills", "lost_leases", "lease_waits", "untrusted_reads", "invalidations_received",
                   "listener_lag_us", "leases_full", "flushes", "reconnects", "read_through", "ttl_only")


def near_stats(cache: Any) -> Dict[str, Any]:
    """The ``near`` section of a cache's stats (shared by every process of the host)."""
    state = cache._near_state()
    raw = cache._stats_raw()
    out: Dict[str, Any] = {"hits": raw["hits"], "misses": raw["miss"]}
    for name, value in zip(NEAR_STAT_NAMES, state["stats"]):
        out[name] = value
    out["generation"] = state["gen"][0]
    out["trusted_for_ms"] = max(0, state["deadline_ms"][0] - state["now_ms"])
    out["leases_live"] = state["leases_live"]
    return out
