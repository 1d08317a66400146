"""Deliberate differences from uWSGI that docs/caveats.md lists, each pinned against real
uWSGI (tests/oracle.py): the same operations run in uWSGI and through uwcache.uwsgi, and
the test asserts both answers, so a change on either side shows up here."""
import time

import oracle
import pytest

import uwcache
import uwcache.uwsgi as uwsgi

pytestmark = [pytest.mark.uwsgi, pytest.mark.usefixtures("uwsgi_bin")]


def run_uwcache(cache2, ops, namespace):
    node = uwcache.Caching.from_cache2(cache2, namespace=namespace).start(sweeper=False)
    try:
        return [getattr(uwsgi, op[0])(*op[1:]) for op in ops], node.cache().check()
    finally:
        node.close()


# 6 blocks of 8 bytes and a free item slot: a, b, c (two blocks) and d fill five blocks; the
# value of "big" needs a run of three, which only evicting a, b and c frees.
BITMAP_LRU = "name=c,items=6,blocks=6,blocksize=8,bitmap=1,purge_lru=1,keysize=16"
FILL_THEN_BIG = [
    ("cache_set", b"a", b"1"),
    ("cache_set", b"b", b"2"),
    ("cache_set", b"c", b"3" * 16),
    ("cache_set", b"d", b"4"),
    ("cache_set", b"big", b"x" * 24),
    ("cache_keys",),
]


def test_bitmap_purge_lru_evicts_until_the_value_fits(namespace):
    """uWSGI evicts the least recently used item once and fails the write; uwcache keeps
    evicting (oldest first) until a run of blocks for the value is free, and stores it."""
    expected = oracle.run_ops(BITMAP_LRU, FILL_THEN_BIG)
    assert expected[:4] == [True] * 4
    assert expected[4] is None  # uWSGI: the write fails...
    assert sorted(expected[5]) == [b"b", b"c", b"d"]  # ...after evicting one item

    got, check = run_uwcache(BITMAP_LRU, FILL_THEN_BIG, namespace)
    assert check is None
    assert got[:4] == [True] * 4
    assert got[4] is True  # uwcache: stored
    assert sorted(got[5]) == [b"big", b"d"]  # a, b and c (oldest first) evicted


def test_bitmap_math_keeps_the_counter(namespace):
    """uWSGI applies a math op on an existing key of a bitmap cache to a fresh run (1, 1,
    1...); uwcache to the stored value, as in single-block mode."""
    cache2 = "name=c,items=10,blocks=10,blocksize=8,bitmap=1,keysize=16"
    ops = [("cache_inc", b"n"), ("cache_inc", b"n"), ("cache_inc", b"n"), ("cache_num", b"n")]
    assert oracle.run_ops(cache2, ops)[3] == 1
    got, check = run_uwcache(cache2, ops, namespace)
    assert got[3] == 3 and check is None


def test_a_full_write_frees_expired_items_first(namespace):
    """Without a sweeper (no master), uWSGI fails a write while expired items hold every
    slot; uwcache frees them and stores the value."""
    cache2 = "name=c,items=3,blocksize=8,keysize=16"
    ops = [("cache_set", b"a", b"1", 1), ("cache_set", b"b", b"2", 1), ("sleep", 2.1),
           ("cache_set", b"c", b"3"), ("cache_get", b"a")]
    expected = oracle.run_ops(cache2, ops)
    assert expected[3] is None  # uWSGI: full
    assert expected[4] == b"1"  # and it still returns the expired item (also listed)
    node = uwcache.Caching.from_cache2(cache2, namespace=namespace).start(sweeper=False)
    try:
        assert uwsgi.cache_set(b"a", b"1", 1) and uwsgi.cache_set(b"b", b"2", 1)
        time.sleep(2.1)
        assert uwsgi.cache_set(b"c", b"3") is True
        assert uwsgi.cache_get(b"a") is None
    finally:
        node.close()
