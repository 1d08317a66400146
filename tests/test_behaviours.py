"""uWSGI cache behaviours of one process (reference section 11), run against uwcache.

Behaviours stated in uWSGI terms go through the ``uwcache.uwsgi`` compat functions (``True`` /
``None`` returns, uWSGI signatures); where the native :class:`uwcache.Cache` API says more
(exception types, messages naming the limit and the option) that is checked as well.

Where uwcache deliberately does better than uWSGI (src/uwcache/uwsgi.py docstring, reference
section 12) the test asserts OUR behaviour and a comment names the uWSGI behaviour it replaces.
Numbers in test names are the items of reference section 11.
"""

from __future__ import annotations

import logging
import pathlib
import struct
import subprocess
import sys
import textwrap
import time
from typing import Callable, Dict, Iterator, List, Optional

import pytest

import uwcache
import uwcache.uwsgi as uwsgi
from uwcache import _engine
from uwcache.errors import CacheFull, EmptyValue, KeyTooLong, NotAnInteger, ValueTooLarge

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
FULL_LOG = '*** DANGER cache "c" is FULL !!! ***'
LRU_LOG = 'LRU item will be purged from cache "c"'

StartFn = Callable[..., uwcache.Node]


@pytest.fixture
def start(namespace: str) -> Iterator[StartFn]:
    """start(cache2, ...) -> a Node on those --cache2 values (no sweeper unless asked), closed at
    teardown so the compat functions never see a cache of another test."""
    nodes: List[uwcache.Node] = []

    def _start(*cache2: str, caching: Optional[uwcache.Caching] = None, sweeper: bool = False) -> uwcache.Node:
        if caching is None:
            caching = uwcache.Caching.from_cache2(*cache2, namespace=namespace)
        node = caching.start(sweeper=sweeper)
        nodes.append(node)
        return node

    yield _start
    for node in reversed(nodes):
        node.close()


def records(image: bytes, max_items: int, key_size: int) -> List[Dict[str, object]]:
    """Item records of a uWSGI-layout image (uwsgi-behaviour.md §2.2), slot 0 included."""
    names = ("flags", "keysize", "hash", "valsize", "first_block", "expires", "hits", "prev", "next",
             "lru_prev", "lru_next")
    size = 88 + key_size
    out = []
    for slot in range(max_items):
        rec: Dict[str, object] = dict(zip(names, struct.unpack_from("<11Q", image, slot * size)))
        rec["key"] = image[slot * size + 88: slot * size + 88 + int(rec["keysize"])]  # type: ignore[arg-type]
        out.append(rec)
    return out


def block(image: bytes, max_items: int, key_size: int, block_size: int, index: int) -> bytes:
    data = (88 + key_size) * max_items
    return image[data + index * block_size: data + (index + 1) * block_size]


# --------------------------------------------------------------------------- capacity and sizes


@pytest.mark.parametrize("cache2", ["name=c,items=2,blocksize=16",
                                    "name=c,items=2,blocks=4,blocksize=8,bitmap=1"],
                         ids=["single-block", "bitmap"])
def test_01_items_2_holds_one_key(start: StartFn, caplog: pytest.LogCaptureFixture, cache2: str) -> None:
    cache = start(cache2).cache()
    with caplog.at_level(logging.WARNING, logger="uwcache"):
        assert uwsgi.cache_set("k1", "v") is True
        assert cache.stats()["full"] == 0
        assert uwsgi.cache_set("k2", "v") is None
        assert all(uwsgi.cache_set(f"more{i}", "v") is None for i in range(20))
    # uWSGI logs every failed insertion (12.35); ours at most once a second per process
    assert 1 <= caplog.text.count(FULL_LOG) <= 2
    assert cache.stats()["full"] == 21
    assert uwsgi.cache_get("k1") == b"v" and uwsgi.cache_get("k2") is None
    # the native API says why and which option to raise
    with pytest.raises(CacheFull) as err:
        cache.set("k3", "v")
    assert "max_items=2" in str(err.value)
    assert cache.stats()["full"] == 22


def test_02_bitmap_value_must_fit_in_the_blocks(start: StartFn) -> None:
    start("name=c,blocks=4,items=2,bitmap=1,blocksize=1")
    assert uwsgi.cache_update("key1", "HELLO") is None
    assert uwsgi.cache_update("key1", "HELL") is True
    assert uwsgi.cache_get("key1") == b"HELL"


def test_03_bitmap_reuses_freed_blocks(start: StartFn) -> None:
    start("name=c,blocks=4,items=3,bitmap=1,blocksize=1")
    assert uwsgi.cache_update("key1", "HE") is True
    assert uwsgi.cache_update("key2", "LL") is True
    assert uwsgi.cache_del("key1") is True
    assert uwsgi.cache_update("key1", "HEL") is None  # only 2 blocks are free
    assert uwsgi.cache_update("key1", "HE") is True
    assert [uwsgi.cache_get("key1"), uwsgi.cache_get("key2")] == [b"HE", b"LL"]


def test_04_bitmap_update_needs_room_while_the_old_run_is_held(start: StartFn) -> None:
    cache = start("name=c,blocks=4,items=3,bitmap=1,blocksize=1").cache()
    assert uwsgi.cache_update("key1", "HE") is True
    assert uwsgi.cache_update("key1", "HELL") is None  # 2 held + 4 new > 4
    assert uwsgi.cache_get("key1") == b"HE"
    with pytest.raises(CacheFull) as err:
        cache.set("key1", "HELL")
    assert "block_count=4" in str(err.value) and "4 free blocks" in str(err.value)
    assert uwsgi.cache_del("key1") is True
    assert uwsgi.cache_update("key1", "HELL") is True
    assert uwsgi.cache_get("key1") == b"HELL"


def test_05_bitmap_largest_value(start: StartFn) -> None:
    cache = start("name=c,blocks=17,items=17,bitmap=1,blocksize=1").cache()
    assert uwsgi.cache_set("k", b"x" * 18) is None
    assert uwsgi.cache_set("k", b"x" * 17) is True
    with pytest.raises(ValueTooLarge) as err:
        cache.set("other", b"x" * 18)
    assert "17 bytes" in str(err.value) and "block_size=1" in str(err.value) and "block_count=17" in str(err.value)


BITMAP_5x10 = "name=c,blocks=5,items=5,bitmap=1,blocksize=10"


def test_06_bitmap_slots_run_out_before_blocks(start: StartFn) -> None:
    start(BITMAP_5x10)
    assert [uwsgi.cache_set(f"key{i}", b"x" * 5) for i in range(4)] == [True] * 4
    assert uwsgi.cache_set("key4", b"x" * 5) is None


def test_07_bitmap_big_value_then_small_ones(start: StartFn) -> None:
    start(BITMAP_5x10)
    assert uwsgi.cache_set("big", b"x" * 50) is True
    assert uwsgi.cache_del("big") is True
    assert [uwsgi.cache_set(f"key{i}", b"y" * 10) for i in range(4)] == [True] * 4
    assert uwsgi.cache_set("key4", b"y" * 10) is None


def test_08_bitmap_shrink_then_limits(start: StartFn) -> None:
    start(BITMAP_5x10)
    assert uwsgi.cache_set("k", b"x" * 40) is True
    assert uwsgi.cache_update("k", b"y" * 10) is True  # the one free block takes the new value
    assert uwsgi.cache_get("k") == b"y" * 10
    assert uwsgi.cache_del("k") is True
    assert uwsgi.cache_update("k", b"z" * 51) is None
    assert uwsgi.cache_update("k", b"z" * 50) is True  # update creates
    assert uwsgi.cache_get("k") == b"z" * 50


def test_09_clear_always_succeeds(start: StartFn) -> None:
    start(BITMAP_5x10)
    uwsgi.cache_set("k", "v")
    assert all(uwsgi.cache_clear() is True for _ in range(100))
    assert uwsgi.cache_keys() == []


def test_10_too_big_and_missing_delete_are_none(start: StartFn) -> None:
    start(BITMAP_5x10)
    for _ in range(100):
        assert uwsgi.cache_set("k", b"x" * 51) is None
        assert uwsgi.cache_del("k") is None
    assert uwsgi.cache_keys() == []


def test_11_default_key_size_is_2048(start: StartFn) -> None:
    cache = start("name=c,items=3,blocksize=8").cache()
    assert uwsgi.cache_set(b"k" * 2048, "v") is True
    assert uwsgi.cache_get(b"k" * 2048) == b"v"
    assert uwsgi.cache_set(b"k" * 2049, "v") is None
    assert uwsgi.cache_get(b"k" * 2049) is None
    with pytest.raises(KeyTooLong) as err:
        cache.set(b"k" * 2049, "v")
    assert "2049" in str(err.value) and "2048" in str(err.value) and "key_size" in str(err.value)


def test_12_bitmap_100000_byte_value_round_trips(start: StartFn) -> None:
    cache = start("name=c,blocks=1000,items=2,bitmap=1,blocksize=100").cache()
    value = bytes(range(256)) * 390 + b"\x00tail" * 32  # 100000 bytes, every byte value
    assert len(value) == 100000
    assert uwsgi.cache_set("big", value) is True
    assert uwsgi.cache_get("big") == value
    assert uwsgi.cache_update("big", value + b"!") is None
    assert uwsgi.cache_get("big") == value
    with pytest.raises(ValueTooLarge) as err:
        cache.set("big", value + b"!")
    assert "100000" in str(err.value) and "block_count=1000" in str(err.value)


def test_13_single_block_limit_is_blocksize(start: StartFn) -> None:
    cache = start("name=c,items=2,blocksize=20").cache()
    assert uwsgi.cache_set("k", b"x" * 20) is True
    assert uwsgi.cache_set("j", b"x" * 21) is None
    assert uwsgi.cache_update("k", b"x" * 21) is None
    assert uwsgi.cache_get("k") == b"x" * 20
    with pytest.raises(ValueTooLarge) as err:
        cache.set("k", b"x" * 21)
    assert "21 bytes" in str(err.value) and "20 bytes" in str(err.value) and "block_size" in str(err.value)


def test_14_empty_key_or_value_and_oversize_keys(start: StartFn) -> None:
    cache = start("name=c,items=3,blocksize=8,keysize=65535").cache()
    assert uwsgi.cache_set("k", "") is None
    assert uwsgi.cache_update("k", b"") is None
    assert uwsgi.cache_set("", "v") is None
    assert uwsgi.cache_get("") is None
    assert uwsgi.cache_keys() == []
    with pytest.raises(EmptyValue):
        cache.set("k", b"")
    with pytest.raises(EmptyValue):
        cache.set(b"", b"v")
    # uWSGI passes key lengths as 16 bits, so a 65537-byte key is stored as its first byte
    # (uwsgi-behaviour.md §9, 12.16). Our compat passes the whole length: the key is simply too long.
    assert uwsgi.cache_set(b"Z" * 65537, "v") is None
    assert uwsgi.cache_set(b"Z" * 65536, "v") is None
    assert uwsgi.cache_get(b"Z") is None and uwsgi.cache_keys() == []
    assert uwsgi.cache_set(b"Z" * 65535, "v") is True  # the largest key_size works
    assert uwsgi.cache_get(b"Z" * 65535) == b"v" and uwsgi.cache_get(b"Z" * 65537) is None
    assert uwsgi.cache_keys() == [b"Z" * 65535]


def test_15_bitmap_first_fit_blind_spot(start: StartFn) -> None:
    """uWSGI's first-fit from the hint misses a free run straddling the hint: kept as is."""
    cache = start("name=c,blocks=16,items=10,blocksize=1,bitmap=1").cache()
    for key, size in (("a", 6), ("b", 1), ("c", 1), ("d", 2), ("e", 6)):
        assert uwsgi.cache_set(key, key * size) is True
    assert uwsgi.cache_del("c") is True
    assert uwsgi.cache_set("f", "f") is True
    assert [uwsgi.cache_del(k) for k in "bdf"] == [True] * 3
    # blocks 6..9 are free, the hint is 8: the 4-block run is not found
    assert uwsgi.cache_set("g", "gggg") is None
    with pytest.raises(CacheFull):
        cache.set("g", "gggg")
    assert uwsgi.cache_set("h", "hh") is True
    assert uwsgi.cache_set("i", "ii") is True
    assert cache.stats()["blocks_used"] == 16
    assert [uwsgi.cache_get(k) for k in "aehi"] == [b"a" * 6, b"e" * 6, b"hh", b"ii"]


# --------------------------------------------------------------------------- set / update / delete


def test_16_set_on_existing_key_fails_update_overwrites(start: StartFn) -> None:
    cache = start("name=c,items=4,blocksize=16").cache()
    assert uwsgi.cache_set("k", "old") is True
    assert uwsgi.cache_set("k", "new") is None
    assert uwsgi.cache_get("k") == b"old"
    assert uwsgi.cache_update("k", "new") is True
    assert uwsgi.cache_get("k") == b"new"
    # native: add() is uWSGI's set, set() is uWSGI's update
    assert cache.add("k", "other") is False and cache.get("k") == b"new"
    assert cache.set("k", "native") is None and cache.get("k") == b"native"


def test_17_update_creates_a_missing_key(start: StartFn) -> None:
    start("name=c,items=4,blocksize=16")
    assert uwsgi.cache_exists("k") is None
    assert uwsgi.cache_update("k", "v") is True
    assert uwsgi.cache_exists("k") is True and uwsgi.cache_get("k") == b"v"


def test_18_update_without_expires_removes_the_ttl(start: StartFn) -> None:
    cache = start("name=c,items=4,blocksize=16").cache()
    assert uwsgi.cache_set("k", "v", 60) is True
    assert 58 <= cache.ttl("k") <= 60
    assert uwsgi.cache_update("k", "w") is True
    assert cache.ttl("k") is None
    # (that it then outlives its old TTL is checked in test_expiry_after_one_second)


def test_19_shorter_update_leaves_stale_tail_bytes(start: StartFn) -> None:
    cache = start("name=c,items=4,blocksize=16,keysize=8").cache()
    assert uwsgi.cache_set("k", "xyz") is True
    assert uwsgi.cache_update("k", "zz") is True
    assert uwsgi.cache_get("k") == b"zz"
    image = cache._export_image()
    slot = next(s for s, r in enumerate(records(image, 4, 8)) if r["key"] == b"k")
    assert block(image, 4, 8, 16, slot).startswith(b"zzz")


def test_20_slot_assignment_order(start: StartFn) -> None:
    cache = start("name=c,items=4,blocksize=8,keysize=8").cache()
    for key in "ABC":
        assert uwsgi.cache_set(key, key.lower()) is True
    recs = records(cache._export_image(), 4, 8)
    assert [r["key"] for r in recs] == [b"", b"C", b"B", b"A"]
    assert uwsgi.cache_del("B") is True
    assert uwsgi.cache_set("D", "d") is True
    recs = records(cache._export_image(), 4, 8)
    assert [r["key"] for r in recs] == [b"", b"C", b"D", b"A"]
    assert [r["first_block"] for r in recs[1:]] == [1, 2, 3]  # single-block: block = slot


def test_21_keys_order_is_bucket_then_insertion(start: StartFn) -> None:
    start("name=one,items=10,blocksize=8,hashsize=1", "name=seven,items=20,blocksize=8,hashsize=7",
          "name=mm,items=20,blocksize=8,hashsize=5,hash=murmur2")
    for key in "zyxw":
        assert uwsgi.cache_set(key, "v", 0, "one") is True
    assert uwsgi.cache_keys("one") == [b"z", b"y", b"x", b"w"]
    assert uwsgi.cache_del("y", "one") is True
    assert uwsgi.cache_set("v", "v", 0, "one") is True
    assert uwsgi.cache_keys("one") == [b"z", b"x", b"w", b"v"]

    keys = [b"k%d" % i for i in range(15)] + [b"\xc3\xa9", b"\xff", b"hello"]
    for name, algo, size in (("seven", "djb33x", 7), ("mm", "murmur2", 5)):
        for key in keys:
            assert uwsgi.cache_set(key, "v", 0, name) is True
        buckets = {k: _engine.hash(k, algo) % size for k in keys}
        expected = sorted(keys, key=lambda k: buckets[k])  # stable: insertion order within a bucket
        assert uwsgi.cache_keys(name) == expected
        assert len(set(buckets.values())) >= size - 1  # the order is not trivially insertion order


def test_hash_functions_match_uwsgi() -> None:
    """Reference 2.4 values, observed in real uWSGI store files (signed-char and tail quirks)."""
    djb = {b"ab": 5860902, b"k1": 5861311, b"hello": 178056679, b"\xc3\xa9\xc3\xbf": 2085995667}
    murmur = {b"a": 2456313694, b"ab": 446775395, b"abc": 324500635, b"abcd": 646393889,
              b"abcde": 155512662, b"hello": 2484800906, b"\xc3\xa9": 547727751,
              b"\xc3\xa9\xc3\xa9": 2809265621, b"x\xc3\xbf\xc3\xbe": 1855193583}
    assert {k: _engine.hash(k, "djb33x") for k in djb} == djb
    assert {k: _engine.hash(k) for k in djb} == djb  # djb33x is the default
    assert {k: _engine.hash(k, "murmur2") for k in murmur} == murmur


# --------------------------------------------------------------------------- LRU


def test_22_lru_evicts_the_least_recently_used(start: StartFn, caplog: pytest.LogCaptureFixture) -> None:
    cache = start("name=c,items=3,blocksize=20,purge_lru=1").cache()
    with caplog.at_level(logging.WARNING, logger="uwcache"):
        assert [uwsgi.cache_set(f"KEY{i}", f"HELLO{i}") for i in (1, 2, 3)] == [True] * 3
    assert LRU_LOG in caplog.text
    assert uwsgi.cache_get("KEY1") is None
    assert uwsgi.cache_get("KEY3") == b"HELLO3"
    for i in range(4, 100):
        assert uwsgi.cache_set(f"KEY{i}", f"HELLO{i}") is True
        assert uwsgi.cache_get(f"KEY{i - 2}") is None
    assert sorted(uwsgi.cache_keys()) == [b"KEY98", b"KEY99"]
    assert cache.stats()["evictions"] == 97
    assert cache.check() is None


def test_22b_lru_touch_rules(start: StartFn) -> None:
    """get/num/update move an item to the recent end; exists, math and a failing set do not."""
    start("name=c,items=4,blocksize=8,purge_lru=1")
    for key in "abc":
        uwsgi.cache_set(key, "v")
    uwsgi.cache_get("a")                        # order b c a
    assert uwsgi.cache_exists("b") is True       # no move
    assert uwsgi.cache_set("b", "again") is None  # no move
    uwsgi.cache_set("d", "v")                   # evicts b
    assert uwsgi.cache_keys().count(b"b") == 0
    uwsgi.cache_inc("c")                        # math on an existing key: no move; order c a d
    uwsgi.cache_update("a", "w")                # order c d a
    uwsgi.cache_set("e", "v")                   # evicts c
    assert sorted(uwsgi.cache_keys()) == [b"a", b"d", b"e"]
    uwsgi.cache_num("d")                        # a get: order a e d
    uwsgi.cache_set("f", "v")                   # evicts a
    assert sorted(uwsgi.cache_keys()) == [b"d", b"e", b"f"]


def test_23_lru_order_survives_a_restart(start: StartFn, tmp_path: pathlib.Path) -> None:
    cache2 = f"name=c,items=4,blocksize=16,purge_lru=1,store={tmp_path / 'lru.store'}"
    node = start(cache2)
    for key in ("k1", "k2", "k3"):
        assert uwsgi.cache_set(key, key) is True
    assert uwsgi.cache_get("k1") == b"k1"
    node.close()
    assert uwsgi.cache_get("k1") is None  # no cache registered any more
    start(cache2)
    assert uwsgi.cache_keys() == [b"k2", b"k3", b"k1"]  # djb33x buckets: k4 < k2 < k3 < k1
    assert uwsgi.cache_set("k4", "k4") is True
    assert uwsgi.cache_keys() == [b"k4", b"k3", b"k1"]  # k2 was the least recently used


def test_24_lru_with_lazy_keeps_ttls(start: StartFn) -> None:
    cache = start("name=c,items=4,blocksize=8,purge_lru=1,lazy=1").cache()
    # uWSGI stores the relative TTL as an absolute time (1970) in purge_lru caches, so with
    # lazy_expire the item is deleted on its first lookup (get -> None, 12.18). Ours keeps it.
    assert uwsgi.cache_set("a", "x", 60) is True
    assert uwsgi.cache_get("a") == b"x"
    assert 58 <= cache.ttl("a") <= 60
    assert uwsgi.cache_set("b", "x", 0) is True
    assert uwsgi.cache_get("b") == b"x"


# --------------------------------------------------------------------------- expiry


def test_expiry_after_one_second(start: StartFn) -> None:
    """25, 26, 18 and TTLs of purge_lru caches, with a single sleep and no sweeper."""
    node = start("name=plain,items=6,blocksize=8", "name=lazy,items=6,blocksize=8,lazy=1",
                 "name=lru,items=6,blocksize=8,purge_lru=1")
    for name in ("plain", "lazy", "lru"):
        assert uwsgi.cache_set("t", "v", 1, name) is True
        assert uwsgi.cache_set("long", "v", 60, name) is True
        assert uwsgi.cache_set("keep", "v", 1, name) is True
        assert uwsgi.cache_update("keep", "w", 0, name) is True  # 18: removes the TTL
    time.sleep(1.1)  # uWSGI has whole seconds: TTL 1 is over after at most one second
    for name in ("plain", "lazy", "lru"):
        # 26: uWSGI's cache_keys lists expired items until they are swept or looked up
        # (12.20); ours leaves them out at once
        assert sorted(uwsgi.cache_keys(name)) == [b"keep", b"long"], name
        # 25: uWSGI returns an expired item until its sweeper runs (12.17) and, in a
        # purge_lru cache, never expires it (12.18); ours never returns it
        assert uwsgi.cache_get("t", name) is None, name
        assert uwsgi.cache_exists("t", name) is None, name
        assert uwsgi.cache_num("t", name) == 0, name
        assert uwsgi.cache_get("keep", name) == b"w" and uwsgi.cache_get("long", name) == b"v"
        # 25: uWSGI's cache_set on an expired-but-unswept key fails; ours succeeds
        assert uwsgi.cache_set("t", "new", 0, name) is True, name
        assert uwsgi.cache_get("t", name) == b"new"
        assert node.cache(name).check() is None


def test_29_negative_expires_is_already_expired(start: StartFn) -> None:
    cache = start("name=c,items=4,blocksize=8").cache()
    assert uwsgi.cache_set("k", "v", -1) is True
    # uWSGI stores now-1 and returns the item until its sweeper frees it; ours never does
    assert uwsgi.cache_get("k") is None and uwsgi.cache_exists("k") is None
    assert uwsgi.cache_keys() == []
    assert uwsgi.cache_inc("n", 5, -10) is True
    assert uwsgi.cache_num("n") == 0
    assert uwsgi.cache_set("k", "v2") is True and uwsgi.cache_get("k") == b"v2"
    with pytest.raises(ValueError):  # the native API refuses a negative TTL outright
        cache.set("k", "v", expires=-1)


# --------------------------------------------------------------------------- math


def test_30_inc_single_block(start: StartFn) -> None:
    cache = start("name=c,items=4,blocksize=16").cache()
    assert [uwsgi.cache_inc("c") for _ in range(3)] == [True] * 3
    assert uwsgi.cache_num("c") == 3
    assert uwsgi.cache_get("c") == b"\x03\x00\x00\x00\x00\x00\x00\x00"
    assert cache.incr("c") == 4 and cache.get_int("c") == 4


def test_31_inc_bitmap_keeps_the_counter(start: StartFn) -> None:
    cache = start("name=c,items=4,blocks=8,blocksize=4,bitmap=1").cache()
    # uWSGI allocates a fresh run for every math op on a bitmap cache and restarts from
    # whatever bytes it finds there: three incs give 1 (12.8). Ours keeps counting.
    assert [uwsgi.cache_inc("c") for _ in range(3)] == [True] * 3
    assert uwsgi.cache_num("c") == 3
    assert uwsgi.cache_mul("c", 5) is True and uwsgi.cache_dec("c", 1) is True
    assert uwsgi.cache_num("c") == 14
    assert cache.stats()["blocks_used"] == 2
    assert cache.check() is None


def test_32_math_on_missing_keys_starts_at_math_initial(start: StartFn) -> None:
    start("name=zero,items=10,blocksize=8", "name=ten,items=10,blocksize=8,math_initial=10")
    assert uwsgi.cache_dec("d") is True and uwsgi.cache_num("d") == -1
    assert uwsgi.cache_mul("m", 3) is True and uwsgi.cache_num("m") == 0
    assert uwsgi.cache_div("v", 2) is True and uwsgi.cache_num("v") == 0
    ops = (("cache_inc", 1, 11), ("cache_mul", 2, 20), ("cache_div", 3, 3), ("cache_dec", 1, 9))
    for i, (op, operand, expected) in enumerate(ops):
        assert getattr(uwsgi, op)(f"k{i}", operand, 0, "ten") is True
        assert uwsgi.cache_num(f"k{i}", "ten") == expected
    # default operands: inc/dec by 1, mul/div by 2
    assert uwsgi.cache_inc("x", 10) is True
    assert uwsgi.cache_mul("x") is True and uwsgi.cache_num("x") == 20
    assert uwsgi.cache_div("x") is True and uwsgi.cache_num("x") == 10
    assert uwsgi.cache_inc("x") is True and uwsgi.cache_num("x") == 11
    assert uwsgi.cache_dec("x") is True and uwsgi.cache_num("x") == 10


def test_33_division_truncates_toward_zero_and_by_zero_gives_zero(start: StartFn) -> None:
    cache = start("name=c,items=4,blocksize=8").cache()
    assert uwsgi.cache_inc("x", -7) is True
    assert uwsgi.cache_div("x", 2) is True
    assert uwsgi.cache_num("x") == -3  # C division, not Python's -4
    assert uwsgi.cache_div("x", 0) is True
    assert uwsgi.cache_num("x") == 0
    assert cache.incr("y", 7) == 7 and cache.div("y", -2) == -3 and cache.div("y", 0) == 0


def test_34_int64_wraps(start: StartFn) -> None:
    cache = start("name=c,items=4,blocksize=8").cache()
    assert uwsgi.cache_inc("o", INT64_MAX) is True
    assert uwsgi.cache_inc("o", 1) is True
    assert uwsgi.cache_num("o") == INT64_MIN
    assert uwsgi.cache_dec("o", 1) is True and uwsgi.cache_num("o") == INT64_MAX
    assert uwsgi.cache_mul("o", 2) is True and uwsgi.cache_num("o") == -2
    # INT64_MIN / -1 traps in uWSGI (SIGFPE inside the cache lock, 11.53/12.4); ours wraps
    assert uwsgi.cache_inc("m", INT64_MIN) is True
    assert uwsgi.cache_div("m", -1) is True
    assert uwsgi.cache_num("m") == INT64_MIN
    assert cache.div("m", -1) == INT64_MIN
    assert uwsgi.cache_set("after", "ok") is True  # the cache is still usable
    assert cache.check() is None


def test_35_math_reads_the_first_8_bytes_of_the_block(start: StartFn) -> None:
    cache = start("name=c,items=4,blocksize=16").cache()
    assert uwsgi.cache_set("s", "AAAAA") is True
    assert uwsgi.cache_num("s") == 0  # not 8 bytes
    assert uwsgi.cache_inc("s", 1) is True
    assert uwsgi.cache_get("s") == b"BAAAA\x00\x00\x00"
    # the native API refuses math on a value that is not an 8-byte integer
    assert cache.set("t", "AAAAA") is None
    with pytest.raises(NotAnInteger):
        cache.incr("t")
    with pytest.raises(NotAnInteger):
        cache.get_int("t")
    assert cache.get("t") == b"AAAAA"


def test_math_needs_8_byte_items(start: StartFn) -> None:
    """Blocksize < 8 (single-block): every math op fails (uwsgi-behaviour.md §2.13)."""
    cache = start("name=c,items=4,blocksize=4").cache()
    for op in ("cache_inc", "cache_dec", "cache_mul", "cache_div"):
        assert getattr(uwsgi, op)("k") is None
    assert uwsgi.cache_keys() == []
    with pytest.raises(ValueTooLarge):
        cache.incr("k")


# --------------------------------------------------------------------------- Python surface


def test_36_python_argument_conversions(start: StartFn) -> None:
    start("name=s,items=10,blocksize=64")
    assert uwsgi.cache_set(b"hello", "w\u00e9", 0, "s") is True
    assert uwsgi.cache_get(b"hello", "s") == "w\u00e9".encode()
    assert uwsgi.cache_get("hello") == b"w\xc3\xa9"  # str keys are UTF-8; default cache
    assert uwsgi.cache_set(b"a\x00b", b"\x00") is True  # embedded NULs are fine
    assert uwsgi.cache_get(b"a\x00b") == b"\x00"
    with pytest.raises(TypeError):
        uwsgi.cache_get("hello", b"s")
    with pytest.raises(TypeError):
        uwsgi.cache_set("x", bytearray(b"abc"), 0, "s")
    with pytest.raises(TypeError):
        uwsgi.cache_get(key="hello")  # positional only
    with pytest.raises(TypeError):
        uwsgi.cache_set("x", "y", "60")
    with pytest.raises(ValueError):
        uwsgi.cache_get("hello", "s\x00")
    with pytest.raises(OverflowError):
        uwsgi.cache_inc("x", 2**64)
    for name in ("zzz", "s@"):  # unknown local cache; remote name without a usable address
        assert uwsgi.cache_get("hello", name) is None
        assert uwsgi.cache_set("k", "v", 0, name) is None
        assert uwsgi.cache_update("k", "v", 0, name) is None
        assert uwsgi.cache_del("hello", name) is None
        assert uwsgi.cache_exists("hello", name) is None
        assert uwsgi.cache_inc("k", 1, 0, name) is None
        assert uwsgi.cache_num("k", name) == 0
        assert uwsgi.cache_clear(name) is None
        with pytest.raises(ValueError):
            uwsgi.cache_keys(name)
    assert sorted(uwsgi.cache_keys("s")) == [b"a\x00b", b"hello"]  # nothing leaked in


def test_37_no_cache_configured() -> None:
    """In a fresh interpreter with no Node: every call fails, cache_keys raises ValueError."""
    script = textwrap.dedent("""
        import uwcache.uwsgi as u
        res = [u.cache_get("k"), u.cache_set("k", "v"), u.cache_update("k", "v"), u.cache_del("k"),
               u.cache_exists("k"), u.cache_clear(), u.cache_inc("k"), u.cache_dec("k"),
               u.cache_mul("k"), u.cache_div("k"), u.cache_num("k"), u.cache_get("k", "c")]
        try:
            u.cache_keys()
            res.append("no error")
        except ValueError as e:
            res.append(str(e))
        print(repr(res))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert eval(out.stdout) == [None] * 10 + [0, None, "no local uWSGI cache available"]


# --------------------------------------------------------------------------- preloads and images


def test_41_add_item(start: StartFn, namespace: str) -> None:
    caching = (uwcache.Caching(namespace)
               .add_cache("a", max_items=10, block_size=64)
               .add_cache("s", max_items=10, block_size=64)
               .add_item("hello", "world")
               .add_item("k1", "v1", cache_name="s")
               .add_item("sp", "hello world", cache_name="s"))
    start(caching=caching)
    # uWSGI stores a nameless add-cache-item in EVERY cache (12.33); Caching.add_item follows
    # uwsgiconf's documented meaning, cache_name=None -> the default cache only
    assert uwsgi.cache_get("hello", "a") == b"world"
    assert uwsgi.cache_get("hello", "s") is None
    assert uwsgi.cache_get("k1", "s") == b"v1" and uwsgi.cache_get("k1", "a") is None
    # uWSGI mis-splits a payload containing a space (stored nowhere); ours stores it
    assert uwsgi.cache_get("sp", "s") == b"hello world"


def test_41_add_cache_item_from_ini_goes_to_every_cache(start: StartFn, namespace: str) -> None:
    ini = textwrap.dedent("""
        [uwsgi]
        cache2 = name=a,items=10,blocksize=64
        cache2 = name=s,items=10,blocksize=64
        add-cache-item = hello=world
        add-cache-item = s k1=v1=x
    """)
    start(caching=uwcache.Caching.from_ini(ini, namespace=namespace))
    assert uwsgi.cache_get("hello", "a") == b"world" and uwsgi.cache_get("hello", "s") == b"world"
    assert uwsgi.cache_get("k1", "s") == b"v1=x" and uwsgi.cache_get("k1", "a") is None


def test_41_preload_does_not_overwrite_a_restored_key(start: StartFn, namespace: str, tmp_path: pathlib.Path) -> None:
    def caching() -> uwcache.Caching:
        return (uwcache.Caching(namespace).add_cache("c", max_items=4, block_size=16, store=str(tmp_path / "s"))
                .add_item("k", "preloaded"))

    node = start(caching=caching())
    assert uwsgi.cache_get("k") == b"preloaded"
    assert uwsgi.cache_update("k", "changed") is True
    node.close()
    start(caching=caching())
    assert uwsgi.cache_get("k") == b"changed"


def test_42_export_image_layout(start: StartFn) -> None:
    cache = start("name=c,items=4,keysize=8,blocksize=16").cache()
    assert uwsgi.cache_set("ab", "first") is True
    assert uwsgi.cache_update("k1", "second", 60) is True
    assert uwsgi.cache_inc("hello") is True
    image = cache._export_image()
    assert len(image) == 448  # (88 + 8) * 4 + 16 * 4, no header
    recs = records(image, 4, 8)
    assert image[:96] == bytes(96)  # slot 0 is never used
    expect = {  # reference djb33x values observed in real uWSGI store files
        3: (b"ab", 5860902, b"first", 0x000),
        2: (b"k1", 5861311, b"second", 0x002),
        1: (b"hello", 178056679, struct.pack("<q", 1), 0x232),
    }
    now = time.time()
    for slot, (key, hash_, value, flags) in expect.items():
        rec = recs[slot]
        assert (rec["key"], rec["keysize"], rec["hash"], rec["valsize"], rec["first_block"], rec["flags"]) == \
            (key, len(key), hash_, len(value), slot, flags)
        assert block(image, 4, 8, 16, slot)[: len(value)] == value
        assert (rec["prev"], rec["next"]) == (0, 0)  # default hashsize: all in their own bucket
    assert recs[3]["expires"] == 0 and recs[1]["expires"] == 0
    assert now + 58 <= recs[2]["expires"] <= now + 61  # absolute


def test_42_export_image_chains(start: StartFn) -> None:
    cache = start("name=c,items=5,keysize=8,blocksize=8,hashsize=1").cache()
    for key in "abcd":
        uwsgi.cache_set(key, key)  # slots 4, 3, 2, 1, chained in insertion order
    uwsgi.cache_del("b")
    recs = records(cache._export_image(), 5, 8)
    links = {r["key"]: (r["prev"], r["next"]) for r in recs[1:] if r["keysize"]}
    assert links == {b"a": (0, 2), b"c": (4, 1), b"d": (2, 0)}
    assert recs[3]["keysize"] == 0 and recs[3]["hash"] == 0 and recs[3]["valsize"] == 0
