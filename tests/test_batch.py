"""The batch API: get_many, set_many, delete_many and touch (issue 12.4)."""
import os
import random
import signal
import time

import pytest

import uwcache
from uwcache import _engine

PAST = 1  # an absolute expiry long gone: the item is stored already expired


@pytest.fixture(params=["single-block", "bitmap-lru"])
def cache(request, namespace):
    extra = {"mode_bitmap": True, "block_count": 40, "full_purge_lru": True} if request.param == "bitmap-lru" else {}
    c = uwcache.open_cache("batch", namespace=namespace, max_items=20, block_size=64, key_size=32, hash_size=32,
                           **extra)
    yield c
    c.close()


def test_get_many_returns_present_keys_under_the_callers_keys(cache):
    cache.set("a", b"1")
    cache.set(b"b", b"22")
    got = cache.get_many(["a", b"b", "missing", b"a"])
    assert got == {"a": b"1", b"b": b"22", b"a": b"1"}
    assert "missing" not in got
    assert cache.get_many([]) == {}
    # any iterable of keys; buffers come back as bytes keys
    assert cache.get_many(k for k in ("a",)) == {"a": b"1"}
    assert cache.get_many([bytearray(b"b"), memoryview(b"a")]) == {b"b": b"22", b"a": b"1"}


def test_get_many_counts_hits_and_misses(cache):
    cache.set("a", b"1")
    before = cache.stats()
    cache.get_many(["a", "x", "y"])
    after = cache.stats()
    assert after["hits"] - before["hits"] == 1
    assert after["miss"] - before["miss"] == 2


def test_expired_keys_are_absent(cache):
    cache.set("live", b"v")
    cache._set_unreplicated("dead", b"v", PAST)
    assert cache.get_many(["live", "dead"]) == {"live": b"v"}
    assert cache.touch("dead", 100) is False  # touching does not revive it
    assert cache.get("dead") is None
    cache._set_unreplicated("dead2", b"v", PAST)
    assert cache.delete_many(["dead2", "live"]) == 1  # an expired key was not there


def test_set_many_stores_every_pair_with_one_expiry(cache):
    assert cache.set_many({"a": b"1", b"b": "two", "c": memoryview(b"3")}, expires=100) == []
    assert cache.get_many(["a", "b", "c"]) == {"a": b"1", "b": b"two", "c": b"3"}
    assert 99 <= cache.ttl("a") <= 100
    # pairs work too, and without expires the TTL goes (like set)
    assert cache.set_many([("a", b"one")]) == []
    assert cache.get("a") == b"one" and cache.ttl("a") is None
    assert cache.stats()["writes"] >= 4


def test_delete_many_counts_what_was_there(cache):
    cache.set_many({"a": b"1", "b": b"2", "c": b"3"})
    assert cache.delete_many(["a", "b", "nope", "a"]) == 2
    assert cache.keys() == [b"c"]
    assert cache.delete_many([]) == 0


def test_touch_sets_and_removes_the_expiry(cache):
    cache.set("k", b"v")
    assert cache.touch("k", 50) is True
    assert 49 <= cache.ttl("k") <= 50
    assert cache.touch("k", 0) is True  # 0 = never expires
    assert cache.ttl("k") is None
    assert cache.get("k") == b"v"
    assert cache.touch("absent", 10) is False
    with pytest.raises(ValueError, match="expires must be >= 0"):
        cache.touch("k", -1)
    with pytest.raises(TypeError):
        cache.touch("k")  # expires is required


def test_touch_makes_an_item_expire(namespace):
    c = uwcache.open_cache("touch", namespace=namespace, max_items=10)
    c.set("k", b"v")
    assert c.touch("k", 1)
    deadline = time.time() + 3
    while c.get("k") is not None and time.time() < deadline:
        time.sleep(0.1)
    assert c.get_many(["k"]) == {}
    c.close()


def test_a_bad_key_anywhere_raises_before_anything_happens(cache):
    """Errors are raised for the whole batch, before any key is read or written."""
    long_key = "x" * 33  # key_size is 32
    with pytest.raises(uwcache.KeyTooLong, match="33 bytes is longer than the 32 bytes"):
        cache.set_many({"ok": b"v", long_key: b"v"})
    assert cache.get("ok") is None  # nothing was written
    with pytest.raises(uwcache.KeyTooLong):
        cache.get_many(["ok", long_key])
    cache.set("ok", b"v")
    with pytest.raises(uwcache.KeyTooLong):
        cache.delete_many(["ok", long_key])
    assert cache.get("ok") == b"v"  # nothing was deleted
    with pytest.raises(uwcache.EmptyValue, match="keys must not be empty"):
        cache.get_many(["ok", ""])
    with pytest.raises(uwcache.KeyTooLong):
        cache.touch(long_key, 1)


def test_bad_values_raise_before_anything_is_written(cache):
    with pytest.raises(uwcache.EmptyValue):
        cache.set_many({"a": b"v", "b": b""})
    with pytest.raises(uwcache.ValueTooLarge):
        cache.set_many({"a": b"v", "b": b"x" * (cache.max_item_size + 1)})
    assert cache.get("a") is None


def test_non_bytes_keys_and_values_are_type_errors(cache):
    with pytest.raises(TypeError, match="key must be bytes or str, not int"):
        cache.get_many(["a", 1])
    with pytest.raises(TypeError, match="key must be bytes or str"):
        cache.delete_many([None])
    with pytest.raises(TypeError, match="value must be bytes or str, not int"):
        cache.set_many({"a": 1})
    with pytest.raises(TypeError, match="key must be bytes or str"):
        cache.set_many({3: b"v"})
    with pytest.raises(TypeError, match="iterable of keys"):
        cache.get_many(5)
    with pytest.raises(TypeError, match=r"\(key, value\) pairs"):
        cache.set_many(["ab"])
    assert len(cache) == 0


def test_set_many_on_a_full_cache_returns_the_keys_not_stored(namespace):
    c = uwcache.open_cache("full", namespace=namespace, max_items=4, block_size=16)  # 3 usable slots
    c.set("old", b"v")
    failed = c.set_many({"a": b"1", "b": b"2", "c": b"3"})
    assert failed == ["c"]
    assert c.get_many(["old", "a", "b", "c"]) == {"old": b"v", "a": b"1", "b": b"2"}
    assert c.stats()["full"] == 1
    c.close()


def test_set_many_in_lru_mode_evicts_like_set(namespace):
    c = uwcache.open_cache("lru", namespace=namespace, max_items=4, block_size=16, full_purge_lru=True)
    assert c.set_many({f"k{i}": b"v" for i in range(5)}) == []
    assert sorted(c.keys()) == [b"k2", b"k3", b"k4"]
    c.close()


def test_large_batches_cross_lock_chunks(namespace):
    c = uwcache.open_cache("big", namespace=namespace, max_items=1001, block_size=16, full_purge_lru=True)
    data = {f"key{i}": str(i).encode() for i in range(1000)}
    assert c.set_many(data) == []
    assert c.get_many(list(data)) == data
    assert c.delete_many(list(data)[:500]) == 500
    assert len(c) == 500 and c.check() is None
    c.close()


def test_closed_cache(namespace):
    c = uwcache.open_cache("closed", namespace=namespace)
    c.close()
    for call in (lambda: c.get_many(["a"]), lambda: c.set_many({"a": b"v"}), lambda: c.delete_many(["a"]),
                 lambda: c.touch("a", 1)):
        with pytest.raises(uwcache.CacheClosed):
            call()


def test_batch_writes_fire_the_write_hook(cache):
    """Replication sees each write of a batch as a write (and a touch as a set with the new expiry)."""
    seen = []
    cache._on_write = lambda op, key, value, expires: seen.append((op, key, value, expires))
    cache.set_many({"a": b"1", "b": b"2"})
    cache.delete_many(["a", "zz"])
    cache.touch("b", 0)
    cache._on_write = None
    assert seen == [
        (_engine.OP_SET, b"a", b"1", 0),
        (_engine.OP_SET, b"b", b"2", 0),
        (_engine.OP_DELETE, b"a", b"", 0),
        (_engine.OP_SET, b"b", b"2", 0),
    ]


# ---- get_many's fast paths (keys read in place, the caller's key objects reused, memory
# prefetched in caches over 1 MiB): every kind of key and every path gives what get gives ----


class _Str(str):
    pass


class _Bytes(bytes):
    pass


def test_get_many_keys_are_the_callers_own_objects(cache):
    cache.set("a", b"1")
    cache.set("ключ", b"non-ascii")  # not ASCII: read through its UTF-8, as get does
    cache.set(b"b", b"2")
    sub, bsub, plain = _Str("a"), _Bytes(b"b"), "".join(["ke", "y"])
    cache.set(plain, b"3")
    got = cache.get_many([sub, "ключ", bsub, plain])
    assert got == {"a": b"1", "ключ": b"non-ascii", b"b": b"2", "key": b"3"}
    keys = list(got)
    assert keys[0] is sub and type(keys[0]) is _Str  # a str subclass stays what was given
    assert keys[2] is bsub and type(keys[2]) is _Bytes
    assert keys[3] is plain
    assert got["ключ"] == cache.get("ключ")


def test_get_many_duplicate_keys_give_one_entry_and_count_each_read(cache):
    cache.set("a", b"1")
    before = cache.stats()
    got = cache.get_many(["a", "a", b"a", "x", "x"])
    assert got == {"a": b"1", b"a": b"1"}
    assert list(got) == ["a", b"a"]  # in the order first given
    after = cache.stats()
    # as five get() calls would count them
    assert after["hits"] - before["hits"] == 3
    assert after["miss"] - before["miss"] == 2


def test_get_many_takes_any_iterable(cache):
    cache.set_many({"a": b"1", "b": b"2"})
    want = {"a": b"1", "b": b"2"}
    assert cache.get_many(("a", "b", "c")) == want
    assert cache.get_many(k for k in "abc") == want
    assert cache.get_many({"a": 0, "b": 0, "c": 0}) == want  # a dict's keys
    assert cache.get_many({"a", "b", "c"}) == want
    assert cache.get_many(iter(["a", "b", "c"])) == want


class _BadHash(str):
    def __hash__(self):
        raise RuntimeError("no hash")


def test_get_many_errors_leave_no_partial_result_and_read_nothing(cache):
    cache.set_many({"a": b"1", "b": b"2"})
    before = cache.stats()
    for bad, exc in ((5, TypeError), ("\ud800", UnicodeEncodeError), ("", uwcache.EmptyValue),
                     ("x" * 33, uwcache.KeyTooLong)):
        with pytest.raises(exc):
            cache.get_many(["a"] * 60 + [bad] + ["b"] * 60)
    after = cache.stats()
    assert (after["hits"], after["miss"]) == (before["hits"], before["miss"])  # nothing was read
    # a key whose hash fails only when the dict is built: the error, not a partial dict
    with pytest.raises(RuntimeError, match="no hash"):
        cache.get_many(["a", _BadHash("b")])
    assert cache.get_many(["a", "b"]) == {"a": b"1", "b": b"2"}


def test_get_many_in_a_lazy_expire_cache_deletes_the_expired_keys_it_meets(namespace):
    # get_many reads without the lock; an expired key it meets in a lazy_expire cache goes
    # through get's locked path, which deletes it (as get does); the keys around it, in the
    # same groups of eight, are read as usual and each read counted once
    c = uwcache.open_cache("lazy", namespace=namespace, max_items=60, block_size=64, key_size=32,
                           hash_size=64, lazy_expire=True)
    live = {f"live{i}": b"v%d" % i for i in range(30)}
    assert c.set_many(live) == []
    dead = [f"dead{i}" for i in range(6)]
    for k in dead:
        c._set_unreplicated(k, b"x", PAST)
    asked = list(live)
    for i, k in enumerate(dead):
        asked.insert(i * 5 + 3, k)
    before = c.stats()
    assert before["items"] == 36
    assert c.get_many(asked) == live
    after = c.stats()
    assert after["items"] == 30  # the expired ones are gone
    assert sorted(c.keys()) == sorted(k.encode() for k in live)
    assert (after["hits"] - before["hits"], after["miss"] - before["miss"]) == (30, 6)
    c.close()


@pytest.mark.parametrize("hash_algo", ["djb33x", "murmur2"])
@pytest.mark.parametrize("mode", ["single-block", "bitmap"])
def test_get_many_finds_keys_of_every_length_and_byte(namespace, hash_algo, mode):
    # get_many hashes each full group of eight keys at once (djb33x: side by side in vector
    # lanes, over the shortest key's length, then each key's tail alone); it must land every
    # key where set() put it: lengths 1..64 mixed within a group, bytes >= 0x80 (djb33x
    # sign-extends them, as uWSGI), groups of equal lengths, and a last group of 3
    r = random.Random(20261130)
    extra = dict(mode_bitmap=True, block_count=2000) if mode == "bitmap" else {}
    c = uwcache.open_cache("lengths", namespace=namespace, max_items=1200, block_size=64, key_size=64,
                           hash_size=65536, hash_algo=hash_algo, **extra)
    keys = [bytes(r.randrange(256) for _ in range(1 + i % 64)) for i in range(400)]
    keys += [bytes(r.randrange(128, 256) for _ in range(n)) for n in (4, 7, 8, 12, 16, 17, 31, 64) for _ in range(8)]
    keys += [f"key:{i:08d}".encode() for i in range(83)]  # 83: the last group is not full
    keys = list(dict.fromkeys(keys))
    values = {k: bytes([r.randrange(256)]) * r.randrange(1, 60) for k in keys}
    assert c.set_many(values) == []
    shuffled = keys[:]
    r.shuffle(shuffled)
    for asked in (keys, shuffled, [b"absent"] + keys[:7], keys[:8] + [b"x" * 64, b"x" * 65][:1]):
        want = {k: values[k] for k in asked if k in values}
        assert c.get_many(asked) == want
    c.close()


@pytest.mark.parametrize("mode", ["single-block", "bitmap"])
def test_get_many_of_thousands_of_keys_in_a_cache_over_1_mib(namespace, mode):
    # big enough for the engine's prefetching path; 5003 keys: not a multiple of its groups of 8
    extra = dict(mode_bitmap=True, block_count=40000) if mode == "bitmap" else {}
    c = uwcache.open_cache("huge", namespace=namespace, max_items=20000, block_size=64, key_size=64,
                           hash_size=32768, **extra)
    assert c.region_size >= 1 << 20
    present = {f"key:{i}": f"value {i}".encode() * (1 + i % 5) for i in range(0, 10006, 2)}
    assert c.set_many(present) == []
    c._set_unreplicated("key:expired", b"v", PAST)
    asked = [f"key:{i}" for i in range(5003)] + ["key:expired", "key:10004"]
    want = {k: present[k] for k in asked if k in present}
    assert c.get_many(asked) == want
    assert want == {k: v for k in asked if (v := c.get(k)) is not None}
    before = c.stats()["miss"]
    assert c.get_many(["nope"] * 200_000) == {}  # a long list of one missing key
    assert c.stats()["miss"] - before == 200_000
    c.close()


@pytest.mark.slow
@pytest.mark.parametrize("items", [20, 20000])  # under and over the prefetching threshold
def test_get_many_never_returns_a_torn_value_while_writers_run(namespace, items):
    c = uwcache.open_cache("race", namespace=namespace, max_items=items, block_size=512, key_size=32,
                           hash_size=32 if items == 20 else 32768)
    keys = [f"k{i}" for i in range(16)]
    c.set_many({k: b"a" * 100 for k in keys})
    writer = os.fork()
    if writer == 0:
        r = random.Random(1)
        try:
            while True:  # uniform values of changing letters and lengths
                c.set(keys[r.randrange(16)], bytes([r.randrange(97, 123)]) * r.randrange(1, 500))
        finally:
            os._exit(0)
    try:
        end, rounds = time.time() + 1.5, 0
        while time.time() < end:
            for k, v in c.get_many(keys).items():
                assert v == v[:1] * len(v), f"a torn value for {k}"
            rounds += 1
        assert rounds > 100
    finally:
        os.kill(writer, signal.SIGKILL)
        os.waitpid(writer, 0)
    c.close()
