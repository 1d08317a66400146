"""Home slots (issue 16, region format 8): a cache of at least 65,536 usable slots puts a new
item in one of two slots picked from its hash when one is free, so that a get starts
fetching the record (and its value) while it reads the hash table: one dependent memory
read fewer in a cache too large for the CPU's caches. Smaller caches keep uWSGI's slot
order, the highest free slot first (docs/caveats.md)."""
import random
import struct

import pytest

import uwcache
from uwcache import _engine

from test_behaviours import records

HOME_MIN_SLOTS = 65536  # usable slots (max_items - 1) from which items go to their homes
KEY_SIZE = 16


def _homes(key: bytes, max_items: int) -> set:
    h = _engine.hash(key, "djb33x")
    return {1 + ((((h * mul) & 0xFFFFFFFF) * (max_items - 1)) >> 32) for mul in (0x9E3779B1, 0x85EBCA77)}


def _slots(cache: uwcache.Cache) -> dict:
    """{key: slot} read from the raw image (uWSGI's record layout)."""
    recs = records(cache._export_image(), cache.max_items, KEY_SIZE)
    return {r["key"]: s for s, r in enumerate(recs) if r["keysize"]}


def _open(namespace, name, max_items, **extra):
    opts = dict(namespace=namespace, max_items=max_items, block_size=16, key_size=KEY_SIZE, hash_size=65536)
    opts.update(extra)
    return uwcache.open_cache(name, **opts)


def test_a_large_cache_puts_items_in_their_home_slots(namespace):
    max_items = HOME_MIN_SLOTS + 1
    cache = _open(namespace, "large", max_items)
    keys = [b"user:%d" % i for i in range(2000)]
    for k in keys:
        cache.set(k, k)
    slots = _slots(cache)
    at_home = sum(slots[k] in _homes(k, max_items) for k in keys)
    # 3% full: both homes are taken for about one key in a thousand
    assert at_home >= 1990, at_home
    assert all(cache.get(k) == k for k in keys)
    assert cache.check() is None
    cache.close()


def test_a_smaller_cache_keeps_uwsgis_slot_order(namespace):
    max_items = HOME_MIN_SLOTS  # one usable slot short
    cache = _open(namespace, "smaller", max_items)
    for k in (b"A", b"B", b"C"):
        cache.set(k, k)
    assert _slots(cache) == {b"A": max_items - 1, b"B": max_items - 2, b"C": max_items - 3}
    cache.delete(b"B")
    cache.set(b"D", b"D")
    assert _slots(cache)[b"D"] == max_items - 2  # the freed slot first, as uWSGI
    cache.close()


MODES = {
    "single-block": {},
    "bitmap": dict(mode_bitmap=True, block_count=3 * HOME_MIN_SLOTS),
    "purge-lru": dict(full_purge_lru=True),
}


@pytest.mark.slow
@pytest.mark.parametrize("mode", list(MODES))
def test_free_lists_stay_exact_through_fills_deletes_and_clears(namespace, mode):
    """Home slots are taken from anywhere in the free lists (the fresh range or the explicit
    stack) and given back to the right one: check() verifies every free slot is listed once,
    with its position, and the live slots below the fresh mark are counted."""
    max_items = HOME_MIN_SLOTS + 1
    cache = _open(namespace, f"fuzz-{mode}", max_items, **MODES[mode])
    rng = random.Random(16)
    model = {}
    capacity = max_items - 1

    def fill(n):
        for _ in range(n):
            k = b"k%d" % rng.randrange(4 * capacity)
            v = bytes([rng.randrange(256)]) * rng.randrange(1, 17)
            try:
                cache.set(k, v)
            except uwcache.CacheFull:
                assert mode != "purge-lru" and len(model) == capacity
                continue
            model[k] = v

    fill(capacity // 2)
    assert cache.check() is None
    fill(2 * capacity)  # to the brim: every fallback pop steps over home slots in the range
    if mode == "purge-lru":
        model = {k: v for k, v in model.items() if cache.get(k) is not None}  # evicted ones gone
    assert len(cache) == len(model) and cache.check() is None
    for k in rng.sample(sorted(model), len(model) // 2):
        assert cache.delete(k)
        del model[k]
    assert cache.check() is None
    # a raw image (dumps, sync) shows free records as uWSGI's: no stack position in prev
    free = [r for r in records(cache._export_image(), max_items, KEY_SIZE)[1:] if not r["keysize"]]
    assert free and {r["prev"] for r in free} == {0}
    fill(capacity // 4)
    if mode == "purge-lru":
        model = {k: v for k, v in model.items() if cache.get(k) is not None}
    assert cache.check() is None
    assert all(cache.get(k) == v for k, v in model.items())
    cache.clear()
    model.clear()
    assert cache.check() is None
    fill(1000)
    assert all(cache.get(k) == v for k, v in model.items())
    assert cache.check() is None
    assert cache._repair() == 0 and cache.check() is None  # a rebuild keeps every item
    assert all(cache.get(k) == v for k, v in model.items())
    cache.close()


def test_a_large_store_of_format_7_opens_as_format_8(namespace, tmp_path):
    """A store kept across the upgrade that brought home slots opens cold, and its rebuild
    derives the free lists (with each free entry's position) from the items alone; new
    items then go to their homes."""
    store = tmp_path / "large.store"
    max_items = HOME_MIN_SLOTS + 1
    old = _open(namespace, "st", max_items, store=str(store))
    for i in range(300):
        old.set(b"old%d" % i, b"v%d" % i)
    for i in range(0, 300, 3):
        old.delete(b"old%d" % i)  # some free slots on the explicit stack
    old.close()
    data = store.read_bytes()
    store.write_bytes(data[:8] + struct.pack("<I", 7) + data[12:])

    again = _open(namespace, "st", max_items, store=str(store))
    assert struct.unpack_from("<I", store.read_bytes(), 8)[0] == _engine.FORMAT_VERSION == 8
    assert again.check() is None
    assert all(again.get(b"old%d" % i) == (None if i % 3 == 0 else b"v%d" % i) for i in range(300))
    keys = [b"new%d" % i for i in range(500)]
    for k in keys:
        again.set(k, k)
    slots = _slots(again)
    assert sum(slots[k] in _homes(k, max_items) for k in keys) >= 490
    assert again.check() is None
    again.close()
