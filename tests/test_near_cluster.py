"""The near cache in front of a Redis Cluster / Valkey cluster of 3 masters (issue 11,
semantics 6): one listener per master, a generation and trust deadline per shard, and a
lost master only untrusts its own shard."""
import os
import signal
import time

import pytest

import uwcache
from near_servers import Cluster, redis_server_bin, valkey_server_bin

pytestmark = pytest.mark.slow
BINARIES = {"redis": redis_server_bin, "valkey": valkey_server_bin}


@pytest.fixture(params=sorted(BINARIES))
def cluster(request):
    c = Cluster(BINARIES[request.param]())
    yield c
    c.close()


def start(namespace, cluster, lease_ms=300):
    caching = (uwcache.Caching(namespace=namespace)
               .add_cache("pages", max_items=5000, block_size=1024, key_size=200)
               .add_near("pages", redis=cluster.urls, prefix="app:", lease_ms=lease_ms))
    node = caching.start()
    assert node._near.listeners[0].connected.wait(10), "not every master's listener connected"
    return node


def test_cluster_reads_writes_and_invalidations_on_every_shard(namespace, cluster):
    from redis.crc import key_slot

    with start(namespace, cluster) as node:
        near = uwcache.near("pages", namespace=namespace)
        plain = cluster.client()
        keys = [f"k{i}" for i in range(60)]
        for k in keys:
            plain.set("app:" + k, b"old")
        assert near.sync(5.0)
        shards = {near._shard(("app:" + k).encode()) for k in keys}
        assert len(shards) == 3  # the keys spread over the 3 masters
        assert near.get_many(keys) == {k: b"old" for k in keys}
        assert all(near.cache._near_peek(("app:" + k).encode()) == b"old" for k in keys)  # in the L1
        for k in keys:
            plain.set("app:" + k, b"new")
        assert near.sync(5.0)
        assert all(near.cache._near_peek(("app:" + k).encode()) is None for k in keys)  # invalidated
        assert all(near.get(k) == b"new" for k in keys)
        near.set("mine", "v")
        assert plain.get("app:mine") == b"v" and near.get("mine") == b"v"

        async def async_side():
            assert await near.aset("async", "a") is True
            assert await near.aget("async") == b"a"
            assert await near.aget_many(["async", "mine"]) == {"async": b"a", "mine": b"v"}
            assert await near.adelete("async") is True
            await near.aredis.aclose()

        import asyncio

        asyncio.run(async_side())
        state = near.cache._near_state()
        assert sorted(g for g in state["gen"] if g) and sum(1 for g in state["gen"] if g >= 1) >= 3
        assert key_slot(b"app:mine") >= 0
        plain.close()


def test_a_lost_master_untrusts_only_its_shard(namespace, cluster):
    with start(namespace, cluster, lease_ms=200) as node:
        near = uwcache.near("pages", namespace=namespace)
        plain = cluster.client()
        keys = [f"k{i}" for i in range(60)]
        for k in keys:
            plain.set("app:" + k, b"v")
        assert near.sync(5.0)
        assert near.get_many(keys) == {k: b"v" for k in keys}
        victim = cluster.servers[0]
        victim_shard = near._slot_map and next(
            shard for m, shard in _masters(near).items() if m.endswith(f":{victim.port}"))
        victim.kill()
        time.sleep(0.4)  # past lease_ms: the victim's shard is no longer trusted
        on_victim = [k for k in keys if near._shard(("app:" + k).encode()) == victim_shard]
        elsewhere = [k for k in keys if k not in on_victim]
        assert on_victim and elsewhere
        assert all(near.cache._near_peek(("app:" + k).encode()) is False for k in on_victim)
        assert all(near.cache._near_peek(("app:" + k).encode()) == b"v" for k in elsewhere)
        assert all(near.get(k) == b"v" for k in elsewhere)


def _masters(near):
    import json

    from uwcache.near import _shards_path

    with open(_shards_path("pages", near.cache.namespace)) as f:
        return json.load(f)["masters"]
