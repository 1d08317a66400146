"""The engine's near-cache operations (no Redis needed): lease, fill, batched invalidate,
generation and trust deadline (issue 11, semantics 3, 4 and 8)."""
import os
import time

import pytest

import uwcache
from forks import run_in_forks

NOW_MS = lambda: int(time.monotonic() * 1000)  # noqa: E731


@pytest.fixture
def cache(namespace):
    c = uwcache.open_cache("l1", namespace=namespace, max_items=600, block_size=256, key_size=100)
    c._near_trust(0, NOW_MS() + 60_000)
    yield c
    c.close()


def lease(c, key, lease_ms=300):
    return c._near_lease(key, 0, lease_ms)


def test_a_lease_is_never_a_value(cache):
    t = lease(cache, b"p:a")
    assert t > 0
    assert cache.get(b"p:a") is None and b"p:a" not in cache and cache.keys() == []
    assert cache._near_peek(b"p:a") is None
    assert lease(cache, b"p:a") == 0  # another filler waits
    assert cache._near_fill(b"p:a", t, b"value", 30, 0) == 0
    assert cache._near_peek(b"p:a") == b"value" and cache.get(b"p:a") == b"value"
    assert 29 <= cache.ttl(b"p:a") <= 30


def test_fill_needs_the_lease_of_its_token(cache):
    t = lease(cache, b"k")
    assert cache._near_fill(b"k", t + 1, b"v", 10, 0) == 1  # a wrong token is a lost lease
    assert cache._near_fill(b"k", 12345, b"v", 10, 0) == 1
    assert cache._near_fill(b"nolease", t, b"v", 10, 0) == 1
    assert cache._near_peek(b"k") is None
    assert cache._near_fill(b"k", t, b"v", 10, 0) == 0
    assert cache._near_fill(b"k", t, b"w", 10, 0) == 1  # a token fills once
    assert cache._near_peek(b"k") == b"v"


def test_invalidate_and_delete_remove_leases(cache):
    t1, t2 = lease(cache, b"a"), lease(cache, b"b")
    cache._add_unreplicated(b"c", b"x")
    assert cache._near_invalidate([b"a", b"b", b"c", b"missing"]) == 1
    assert cache._near_fill(b"a", t1, b"stale", 10, 0) == 1
    assert cache._near_fill(b"b", t2, b"stale", 10, 0) == 1
    assert cache.get(b"a") is None and cache.get(b"c") is None
    st = cache._near_state()["stats"]
    assert st[1] == 2 and st[4] == 4  # lost leases, invalidations received


def test_release_frees_the_lease_for_the_next_filler(cache):
    t = lease(cache, b"k")
    assert cache._near_release(b"k", t + 1) is False
    assert cache._near_release(b"k", t) is True
    assert lease(cache, b"k") > 0


def test_an_expired_lease_is_taken_over(cache):
    t = lease(cache, b"k", lease_ms=20)
    assert lease(cache, b"k") == 0
    time.sleep(0.05)
    t2 = lease(cache, b"k")
    assert t2 > 0 and t2 != t
    assert cache._near_fill(b"k", t, b"old", 10, 0) == 1
    assert cache._near_fill(b"k", t2, b"new", 10, 0) == 0


def test_generation_bump_kills_every_earlier_fill_and_lease(cache):
    for k in (b"a", b"b"):
        cache._near_fill(k, lease(cache, k), b"v", 10, 0)
    pending = lease(cache, b"c")
    gen = cache._near_state()["gen"][0]
    assert cache._near_bump(0) == gen + 1
    assert cache._near_peek(b"a") is None and cache._near_peek(b"b") is None
    assert cache.get(b"a") == b"v"  # the raw view still holds the bytes until overwritten
    assert cache._near_fill(b"c", pending, b"v", 10, 0) == 1
    cache._near_fill(b"a", lease(cache, b"a"), b"v2", 10, 0)
    assert cache._near_peek(b"a") == b"v2"


def test_past_the_trust_deadline_nothing_is_served_nor_filled(cache):
    t = lease(cache, b"a")
    cache._near_fill(b"a", t, b"v", 10, 0)
    t2 = lease(cache, b"b")
    cache._near_trust(0, NOW_MS() - 20)  # the coarse clock may lag one tick
    assert cache._near_peek(b"a") is False
    assert lease(cache, b"x") == -1
    assert cache._near_fill(b"b", t2, b"v", 10, 0) == 2
    cache._near_trust(0, NOW_MS() + 60_000)
    assert cache._near_peek(b"a") == b"v" and cache._near_peek(b"b") is None
    assert cache._near_state()["stats"][3] >= 1  # untrusted reads


def test_plain_sets_are_not_near_hits(cache):
    cache.set(b"p", b"from Cache.set")
    assert cache._near_peek(b"p") is None


def test_the_lease_table_is_bounded(cache):
    tokens = [lease(cache, b"k%d" % i) for i in range(300)]
    assert all(t > 0 for t in tokens[:256]) and -2 in tokens
    assert cache._near_state()["leases_live"] == 256
    for i, t in enumerate(tokens[:256]):
        assert cache._near_fill(b"k%d" % i, t, b"v", 10, 0) == 0
    assert cache._near_state()["leases_live"] == 0
    assert lease(cache, b"more") > 0


def test_a_value_too_large_is_not_filled(cache):
    t = lease(cache, b"big")
    assert cache._near_fill(b"big", t, b"x" * 1000, 10, 0) == 3
    assert lease(cache, b"big") > 0  # the lease went with the failed fill


def test_leases_are_host_wide(cache, namespace):
    t = lease(cache, b"shared")

    def child(i):
        other = uwcache.attach("l1", namespace=namespace)
        if other._near_lease(b"shared", 0, 300) != 0:
            return False
        other._near_invalidate([b"shared"])
        return True

    assert run_in_forks(1, child) == [0]
    assert cache._near_fill(b"shared", t, b"v", 10, 0) == 1


def test_bad_arguments_are_typed_errors(cache):
    with pytest.raises(uwcache.KeyTooLong):
        lease(cache, b"x" * 101)
    with pytest.raises(uwcache.EmptyValue):
        lease(cache, b"")
    with pytest.raises(TypeError):
        cache._near_invalidate([b"a", "b"])
    with pytest.raises(ValueError):
        cache._near_trust(99, 0)
    with pytest.raises(uwcache.CacheError):
        cache._near_bump(16)


def test_format_version_has_near_state():
    from uwcache import _engine

    assert _engine.HEADER_SIZE == 32768


def test_a_near_fill_overwritten_by_a_writer_that_dies_mid_copy_is_never_served_torn(cache):
    # format 5+ (robust stripes): the dead writer's record is flagged UWC_REC_WRITING (format 6:
    # when its stripe is taken over) and its stripe stays odd; a near read must give the old
    # value, the new one or nothing, never a mix
    import signal

    old, new = b"A" * 200, b"B" * 200
    for round_ in range(5):
        assert cache._near_fill(b"n:k", lease(cache, b"n:k"), old, 30, 0) == 0
        assert cache._near_peek(b"n:k") == old
        pid = os.fork()
        if pid == 0:
            cache._debug_crash_mid_write(b"n:k", new)
            os._exit(3)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        got = cache._near_peek(b"n:k")
        assert got in (None, old, new), f"round {round_}: a torn near value was served"
        assert cache.check() is None
        cache.delete(b"n:k")


def test_format_version_has_the_lock_redesign():
    from uwcache import _engine

    assert _engine.FORMAT_VERSION >= 5  # 5: robust stripe mutexes, lazy free stack, byte/block counters
