"""The hash tag beside each chain head (format 3): lookups that skip records must still find
every live item and miss every absent one, through any order of inserts and deletes."""
import random

import pytest

import uwcache
from uwcache import _engine


def test_format_version_has_the_tagged_table():
    assert _engine.FORMAT_VERSION >= 4  # 4: chain-head tags (3 added the near state)


@pytest.mark.parametrize("algo", ["djb33x", "murmur2", "wyhash"])
def test_chains_with_tags_survive_churn(namespace, algo):
    rng = random.Random(7)
    c = uwcache.open_cache("tags", namespace=namespace, max_items=200, block_size=8, key_size=16,
                           hash_size=13, hash_algo=algo)
    try:
        live = {}
        for step in range(3000):
            k = f"k{rng.randrange(400)}".encode()
            if rng.random() < 0.55 and len(live) < 199:
                v = str(step).encode()
                c.set(k, v)
                live[k] = v
            else:
                assert c.delete(k) == (k in live)
                live.pop(k, None)
            if step % 250 == 0:
                assert c.check() is None  # includes: every bucket's tag matches its head
        assert c.check() is None
        for i in range(400):
            k = f"k{i}".encode()
            assert c.get(k) == live.get(k)
            assert (k in c) == (k in live)
    finally:
        c.close()


def test_single_item_bucket_miss_and_hit(namespace):
    # one bucket per key: a miss is answered from the tag, a hit still reads the record
    c = uwcache.open_cache("one", namespace=namespace, max_items=10, block_size=8, hash_size=1 << 20)
    try:
        c.set(b"present", b"v")
        assert c.get(b"present") == b"v"
        assert c.get(b"absent") is None
        c.delete(b"present")
        assert c.get(b"present") is None
        assert c.check() is None
    finally:
        c.close()
