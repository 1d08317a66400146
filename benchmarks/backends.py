"""One adapter per system under test: bound get/set/delete callables and a close().

Every adapter hands out *bound* callables so the timing loops are identical for all of
them (``for k in keys: get(k)``): the measured difference is the system, not the glue.

The set operation is "create or overwrite" everywhere: ``Cache.set``, uWSGI's and the
compat layer's ``cache_update``, ``SET`` in Redis and memcached.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

import workload as wl


@dataclass
class Ops:
    name: str
    get: Callable[..., Any]
    set: Callable[..., Any]
    delete: Callable[..., Any]
    close: Callable[[], None] = lambda: None
    info: Dict[str, Any] = field(default_factory=dict)
    #: uWSGI-style functions called with the cache name as their last argument
    #: (``get(k, cache)``, ``set(k, v, 0, cache)``, ``delete(k, cache)``): the timing loops
    #: pass it, identically for every system that has one
    cache_arg: Optional[str] = None


@dataclass
class Env:
    """Where the external systems live (filled by bench.py, passed as JSON to the workers)."""

    redis_socket: Optional[str] = None
    memcached_socket: Optional[str] = None
    workdir: str = "/dev/shm"          # diskcache directories go here (tmpfs)
    namespace: str = "bench"           # uwcache namespace
    in_uwsgi: bool = False

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Env":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def uwsgi_available() -> bool:
    try:
        import uwsgi  # noqa: F401  (only importable inside a uWSGI process)
    except ImportError:
        return False
    return hasattr(uwsgi, "cache_get")


# ---- uwcache ----------------------------------------------------------------------------

_nodes: Dict[str, Any] = {}


def uwcache_node(env: Env, specs: List[tuple], *, wyhash: bool = False) -> Any:
    """One Node per namespace holding the benchmark caches (the first is the compat
    functions' default cache). specs: (name, max_items, block_size, hash_size). With wyhash, each
    also gets a twin ``<name>-wy`` with hash_algo="wyhash" for the "uwcache-wyhash" system."""
    import uwcache

    key = env.namespace
    if key not in _nodes:
        caching = uwcache.Caching(namespace=env.namespace)
        for name, max_items, block_size, hash_size in specs:
            caching.add_cache(name, max_items=max_items, block_size=block_size, key_size=wl.KEY_SIZE,
                              hash_size=hash_size)
        for name, max_items, block_size, hash_size in specs if wyhash else ():
            caching.add_cache(name + "-wy", max_items=max_items, block_size=block_size, key_size=wl.KEY_SIZE,
                              hash_size=hash_size, hash_algo="wyhash")
        # no sweeper thread: nothing expires here and uWSGI's --pyrun has none either
        _nodes[key] = uwcache.Node(caching, sweeper=False)
    return _nodes[key]


def close_nodes() -> None:
    import uwcache.cache as uc

    for ns, node in list(_nodes.items()):
        names = list(node.caches)
        node.close()
        for n in names:
            uc.destroy(n, namespace=ns)
        del _nodes[ns]


def make_uwcache(env: Env, cache: str) -> Ops:
    c = _nodes[env.namespace].cache(cache)
    return Ops("uwcache", c.get, c.set, c.delete)


def make_uwcache_wyhash(env: Env, cache: str) -> Ops:
    # the same cache geometry, hashed with wyhash instead of uWSGI's djb33x
    c = _nodes[env.namespace].cache(cache + "-wy")
    return Ops("uwcache-wyhash", c.get, c.set, c.delete)


def make_compat(env: Env, cache: str) -> Ops:
    import uwcache.uwsgi as cu

    # the benchmark cache is the first (default) one on both sides: no cache-name argument
    assert _nodes[env.namespace].caching.default_cache_name == cache
    return Ops("uwcache-compat", cu.cache_get, cu.cache_update, cu.cache_del)


def make_compat_named(env: Env, cache: str) -> Ops:
    import uwcache.uwsgi as cu

    # the same cache as uwcache-compat, named in every call (issue 16: named compat get)
    return Ops("uwcache-compat-named", cu.cache_get, cu.cache_update, cu.cache_del, cache_arg=cache)


def make_uwsgi(env: Env, cache: str) -> Ops:
    import uwsgi

    # the cache is the first --cache2 of the instance, i.e. uWSGI's default cache
    return Ops("uwsgi", uwsgi.cache_get, uwsgi.cache_update, uwsgi.cache_del)


def make_uwsgi_named(env: Env, cache: str) -> Ops:
    import uwsgi

    # the same cache, named in every call: the baseline of uwcache-compat-named
    return Ops("uwsgi-named", uwsgi.cache_get, uwsgi.cache_update, uwsgi.cache_del, cache_arg=cache)


# ---- in-process floors -----------------------------------------------------------------

def make_dict(env: Env, cache: str) -> Ops:
    d: Dict[bytes, bytes] = {}
    return Ops("dict", d.get, d.__setitem__, d.pop, close=d.clear)


def make_cachetools(env: Env, cache: str) -> Ops:
    import cachetools

    c = cachetools.LRUCache(maxsize=wl.MAX_ITEMS)
    return Ops("cachetools", c.get, c.__setitem__, c.pop, close=c.clear)


# ---- external systems ------------------------------------------------------------------

def make_diskcache(env: Env, cache: str, fresh: bool = True) -> Ops:
    import diskcache

    path = os.path.join(env.workdir, f"diskcache-{cache}")
    if fresh:
        shutil.rmtree(path, ignore_errors=True)
    c = diskcache.Cache(directory=path)

    def close() -> None:
        c.close()
        if fresh:
            shutil.rmtree(path, ignore_errors=True)

    return Ops("diskcache", c.get, c.set, c.delete, close=close, info={"path": path})


def make_redis(env: Env, cache: str, fresh: bool = True) -> Ops:
    import redis

    r = redis.Redis(unix_socket_path=env.redis_socket)
    if fresh:
        r.flushdb()

    def close() -> None:
        if fresh:
            r.flushdb()
        r.close()

    return Ops("redis", r.get, r.set, r.delete, close=close)


def make_memcached(env: Env, cache: str, fresh: bool = True) -> Ops:
    from pymemcache.client.base import Client

    # default_noreply=False: every set/delete waits for the server's answer, like the others
    c = Client(env.memcached_socket, default_noreply=False)
    if fresh:
        c.flush_all()

    def close() -> None:
        if fresh:
            c.flush_all()
        c.close()

    return Ops("memcached", c.get, c.set, c.delete, close=close)


#: systems whose client must be created in each process (sockets, sqlite handles)
CONNECT_AFTER_FORK = {"diskcache": make_diskcache, "redis": make_redis, "memcached": make_memcached}


FACTORIES: Dict[str, Callable[[Env, str], Ops]] = {
    "uwcache": make_uwcache,
    "uwcache-compat": make_compat,
    "uwcache-wyhash": make_uwcache_wyhash,
    "uwcache-compat-named": make_compat_named,
    "uwsgi": make_uwsgi,
    "uwsgi-named": make_uwsgi_named,
    "dict": make_dict,
    "cachetools": make_cachetools,
    "diskcache": make_diskcache,
    "redis": make_redis,
    "memcached": make_memcached,
}

ORDER = list(FACTORIES)


def available(env: Env) -> List[str]:
    """The backends this process can run (uWSGI only inside uWSGI, servers only if started)."""
    out = []
    for name in ORDER:
        if name in ("uwsgi", "uwsgi-named") and not uwsgi_available():
            continue
        if name == "redis" and not env.redis_socket:
            continue
        if name == "memcached" and not env.memcached_socket:
            continue
        module = {"cachetools": "cachetools", "diskcache": "diskcache", "redis": "redis",
                  "memcached": "pymemcache"}.get(name)
        if module and importlib.util.find_spec(module) is None:
            continue
        out.append(name)
    return out
