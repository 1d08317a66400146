"""Network layer: UDP replication, the cache server, remote access, sync and stats."""
