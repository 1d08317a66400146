"""gunicorn settings that run the near cache's node in the gunicorn master: one listener
for the host, started before the workers fork, closed when gunicorn exits."""
import os

import uwcache

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
_node = None


def on_starting(server):  # gunicorn hook: in the master, before any worker exists
    global _node
    caching = (uwcache.Caching()
               .add_cache("django-near", max_items=10_000, block_size=4096, key_size=250)
               # ":1:" is the start of every key of Django's default key function (version 1)
               .add_near("django-near", redis=REDIS_URL, prefix=":1:", max_ttl=300, lease_ms=300))
    _node = caching.start()


def on_exit(server):
    if _node is not None:
        _node.close()
