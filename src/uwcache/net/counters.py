"""Re-exports :mod:`uwcache.counters` (the network counters are slots of the region header)."""

from ..counters import NetCounter, count, net_stats

__all__ = ["NetCounter", "count", "net_stats"]
