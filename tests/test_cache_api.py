"""The native Cache API: semantics, types, errors and their messages."""
import os
import time

import pytest

import uwcache
from uwcache import _engine


@pytest.fixture
def cache(namespace):
    c = uwcache.open_cache("api", namespace=namespace, max_items=10, block_size=64, key_size=32, hash_size=64)
    yield c
    c.close()


def test_set_get_overwrite_and_default(cache):
    assert cache.get("k") is None
    assert cache.get("k", b"dflt") == b"dflt"
    assert cache.set("k", b"v1") is None
    assert cache.get("k") == b"v1"
    cache.set("k", b"value-2")
    assert cache.get(b"k") == b"value-2"
    cache.set("k", b"z")  # shorter value: only the new length comes back
    assert cache.get("k") == b"z"


def test_str_is_utf8_and_buffers_are_accepted(cache):
    cache.set("clé", "välue")
    assert cache.get("clé".encode()) == "välue".encode()
    cache.set(bytearray(b"ba"), memoryview(b"mv"))
    assert cache.get(memoryview(b"ba")) == b"mv"


def test_wrong_types_raise_type_error(cache):
    with pytest.raises(TypeError, match="key must be bytes or str"):
        cache.get(12)
    with pytest.raises(TypeError, match="value must be bytes or str"):
        cache.set("k", 12)
    with pytest.raises(TypeError, match="expires must be an int"):
        cache.set("k", b"v", 1.5)
    with pytest.raises(TypeError, match="unexpected keyword"):
        cache.set("k", b"v", ttl=3)


def test_add_only_when_absent(cache):
    assert cache.add("a", b"1") is True
    assert cache.add("a", b"2") is False
    assert cache.get("a") == b"1"


def test_delete_contains_len_keys_clear(cache):
    for k in ("a", "b", "c"):
        cache.set(k, k.upper())
    assert len(cache) == 3 and "b" in cache and "zz" not in cache
    assert sorted(cache.keys()) == [b"a", b"b", b"c"]
    assert sorted(cache) == [b"a", b"b", b"c"]
    assert cache.delete("b") is True
    assert cache.delete("b") is False
    assert "b" not in cache and len(cache) == 2
    cache.clear()
    assert len(cache) == 0 and cache.keys() == []
    cache.set("after", b"clear")
    assert cache.get("after") == b"clear"


def test_mapping_protocol(cache):
    cache["m"] = b"1"
    assert cache["m"] == b"1"
    del cache["m"]
    with pytest.raises(KeyError):
        cache["m"]
    with pytest.raises(KeyError):
        del cache["m"]


def test_limits_raise_typed_errors_that_name_the_option(cache):
    with pytest.raises(uwcache.KeyTooLong, match=r"33 bytes.*32 bytes allowed by key_size"):
        cache.set("k" * 33, b"v")
    cache.set("k" * 32, b"v")
    with pytest.raises(uwcache.ValueTooLarge, match=r"65 bytes.*64 bytes.*block_size"):
        cache.set("big", b"x" * 65)
    cache.set("big", b"x" * 64)
    with pytest.raises(uwcache.EmptyValue):
        cache.set("", b"v")
    with pytest.raises(uwcache.EmptyValue):
        cache.set("e", b"")
    # every typed error is a CacheError (and a ValueError where it is one)
    assert issubclass(uwcache.KeyTooLong, uwcache.CacheError) and issubclass(uwcache.KeyTooLong, ValueError)


def test_full_cache_raises_and_counts(cache, caplog):
    for i in range(cache.capacity):
        cache.set(f"k{i}", b"v")
    assert len(cache) == cache.capacity == 9
    with caplog.at_level("WARNING", logger="uwcache"):
        with pytest.raises(uwcache.CacheFull, match=r"all 9 items are in use \(max_items=10"):
            cache.set("one-more", b"v")
    assert 'DANGER cache "api" is FULL' in caplog.text
    assert cache.stats()["full"] == 1
    cache.set("k0", b"overwrite is fine when full")
    assert cache.add("k1", b"x") is False


def test_expiry_is_never_returned(cache):
    cache.set("t", b"v", expires=1)
    assert 0 <= cache.ttl("t") <= 1
    cache.set("forever", b"v")
    assert cache.ttl("forever") is None
    with pytest.raises(KeyError):
        cache.ttl("missing")
    deadline = time.time() + 3
    while cache.get("t") is not None and time.time() < deadline:
        time.sleep(0.1)
    assert cache.get("t") is None
    assert "t" not in cache
    assert b"t" not in cache.keys()
    # an expired key is absent for add() too (uWSGI would refuse until its sweeper ran)
    assert cache.add("t", b"again") is True
    assert cache.get("t") == b"again"


def test_negative_expires_is_refused(cache):
    with pytest.raises(ValueError, match="expires must be >= 0"):
        cache.set("k", b"v", expires=-1)


def test_set_without_expires_removes_a_ttl(cache):
    cache.set("k", b"v", expires=100)
    assert cache.ttl("k") is not None
    cache.set("k", b"v2")
    assert cache.ttl("k") is None


def test_math_ops(cache):
    assert cache.incr("n") == 1
    assert cache.incr("n", 10) == 11
    assert cache.decr("n", 2) == 9
    assert cache.mul("n", 3) == 27
    assert cache.div("n", 2) == 13
    assert cache.get_int("n") == 13
    assert cache.get("n") == (13).to_bytes(8, "little")
    assert cache.decr("neg") == -1
    assert cache.div("neg", 0) == 0  # x/0 stores 0, like uWSGI
    cache.set("trunc", (-7).to_bytes(8, "little", signed=True))
    assert cache.div("trunc", 2) == -3  # C truncation, not Python floor division
    cache.set("max", (2**63 - 1).to_bytes(8, "little"))
    assert cache.incr("max") == -(2**63)  # int64 wrap-around
    cache.set("min", (-(2**63)).to_bytes(8, "little", signed=True))
    assert cache.div("min", -1) == -(2**63)  # uWSGI dies with SIGFPE inside its lock here
    with pytest.raises(OverflowError):
        cache.incr("n", 2**63)


def test_math_on_non_integer_raises(cache):
    cache.set("s", b"hello")
    with pytest.raises(uwcache.NotAnInteger, match="not an 8-byte integer"):
        cache.incr("s")
    assert cache.get("s") == b"hello"
    with pytest.raises(uwcache.NotAnInteger):
        cache.get_int("s")
    assert cache.get_int("missing") is None
    assert cache.get_int("missing", 7) == 7


def test_math_keeps_ttl_and_creates_with_ttl(cache):
    assert cache.incr("c", 1, expires=100) == 1
    ttl = cache.ttl("c")
    assert ttl is not None and 98 <= ttl <= 100
    cache.incr("c", 1, expires=5)  # existing key: expiry untouched (uWSGI's FIXEXPIRE)
    assert cache.ttl("c") >= 98


def test_math_initial(namespace):
    c = uwcache.open_cache("mi", namespace=namespace, max_items=10, block_size=16, math_initial=10)
    try:
        assert c.incr("a") == 11
        assert c.mul("b", 2) == 20
        assert c.div("c", 3) == 3
        assert c.decr("d") == 9
    finally:
        c.close()


def test_bitmap_math_keeps_the_counter(namespace):
    # uWSGI restarts the counter in bitmap mode (its bug 12.8); we keep counting
    c = uwcache.open_cache("bm", namespace=namespace, max_items=10, block_size=4, block_count=40, mode_bitmap=True)
    try:
        for _ in range(3):
            c.incr("c")
        assert c.get_int("c") == 3
        assert c.check() is None
    finally:
        c.close()


def test_closed_cache_raises(namespace):
    c = uwcache.open_cache("closed", namespace=namespace, max_items=4, block_size=8)
    c.set("k", b"v")
    c.close()
    assert c.closed
    with pytest.raises(uwcache.CacheClosed):
        c.get("k")
    c.close()  # idempotent


def test_stats_shape(cache):
    cache.set("a", b"1")
    cache.get("a")
    cache.get("nope")
    s = cache.stats()
    uwsgi_keys = ["name", "hash", "hashsize", "keysize", "max_items", "blocks", "blocksize", "items", "hits", "miss",
                  "full", "last_modified_at"]
    assert list(s)[: len(uwsgi_keys)] == uwsgi_keys
    assert (s["name"], s["hash"], s["items"], s["hits"], s["miss"]) == ("api", "djb33x", 1, 1, 1)
    assert s["memory"] == cache.region_size and s["capacity"] == 9


def test_lastmod(namespace):
    c = uwcache.open_cache("lm", namespace=namespace, max_items=4, block_size=8, use_lastmod=True)
    try:
        assert c.stats()["last_modified_at"] == 0
        c.set("k", b"v")
        assert abs(c.stats()["last_modified_at"] - time.time()) < 5
    finally:
        c.close()


@pytest.mark.parametrize(
    "algo,key,expected",
    [
        ("djb33x", b"ab", 5860902),
        ("djb33x", b"k1", 5861311),
        ("djb33x", b"hello", 178056679),
        ("djb33x", b"\xc3\xa9\xc3\xbf", 2085995667),
        ("murmur2", b"a", 2456313694),
        ("murmur2", b"ab", 446775395),
        ("murmur2", b"abc", 324500635),
        ("murmur2", b"abcd", 646393889),
        ("murmur2", b"abcde", 155512662),
        ("murmur2", b"hello", 2484800906),
        ("murmur2", b"\xc3\xa9", 547727751),
        ("murmur2", b"\xc3\xa9\xc3\xa9", 2809265621),
        ("murmur2", b"x\xc3\xbf\xc3\xbe", 1855193583),
    ],
)
def test_hashes_match_uwsgi(algo, key, expected):
    assert _engine.hash(key, algo) == expected


def test_murmur2_cache_works(namespace):
    c = uwcache.open_cache("mm", namespace=namespace, max_items=50, block_size=8, hash_algo="murmur2", hash_size=7)
    try:
        for i in range(40):
            c.set(f"key{i}", str(i))
        assert all(c.get(f"key{i}") == str(i).encode() for i in range(40))
        assert c.check() is None
    finally:
        c.close()


def test_lru_evicts_least_recently_used(namespace):
    c = uwcache.open_cache("lru", namespace=namespace, max_items=4, block_size=8, full_purge_lru=True)
    try:
        c.set("a", b"1")
        c.set("b", b"2")
        c.set("c", b"3")
        c.get("a")  # a is now the most recent
        c.set("d", b"4")  # evicts b
        assert c.get("b") is None
        assert {k for k in c.keys()} == {b"a", b"c", b"d"}
        assert c.stats()["evictions"] == 1
        assert c.check() is None
    finally:
        c.close()


def test_lru_keeps_ttls(namespace):
    # uWSGI stores purge_lru TTLs unconverted, so they never expire (its bug 12.18)
    c = uwcache.open_cache("lruttl", namespace=namespace, max_items=4, block_size=8, full_purge_lru=True)
    try:
        c.set("t", b"v", expires=60)
        assert c.get("t") == b"v"
        assert 58 <= c.ttl("t") <= 60
    finally:
        c.close()


def test_bitmap_values_span_blocks(namespace):
    c = uwcache.open_cache("bmv", namespace=namespace, max_items=4, block_size=10, block_count=10, mode_bitmap=True)
    try:
        c.set("big", b"x" * 100)
        assert c.get("big") == b"x" * 100
        with pytest.raises(uwcache.CacheFull, match="no run of 1 free blocks"):
            c.set("more", b"y")
        c.delete("big")
        c.set("a", b"a" * 35)
        c.set("b", b"b" * 25)
        assert c.stats()["blocks_used"] == 7
        assert c.check() is None
    finally:
        c.close()


@pytest.mark.parametrize("opts", [dict(max_items=7, key_size=13, block_size=100, hash_size=777),
                                  dict(max_items=1000, mode_bitmap=True, block_count=3000, block_size=1),
                                  dict(max_items=4096, key_size=256, block_size=4096)])
def test_memory_bytes_is_the_region_size(namespace, opts):
    # the sizing docs promise CacheOptions.memory_bytes is what the cache maps
    c = uwcache.open_cache("size", namespace=namespace, **opts)
    try:
        assert c.options.memory_bytes == c.region_size == os.path.getsize(c.path)
    finally:
        c.close()


def test_long_chains_are_warned_about(namespace, caplog):
    with caplog.at_level("WARNING", logger="uwcache"):
        c = uwcache.open_cache("chains", namespace=namespace, max_items=1001, block_size=8, hash_size=100)
    c.close()
    assert "average 10 items per chain when full" in caplog.text and "set hash_size" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="uwcache"):
        uwcache.open_cache("short", namespace=namespace, max_items=1001, block_size=8, hash_size=1000).close()
    assert "chain" not in caplog.text
