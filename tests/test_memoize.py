"""memoize: the key rule, invalidation, expiry, async, and sharing across processes; LazyCache."""
from __future__ import annotations

import asyncio
import datetime
import decimal
import enum
import inspect
import logging
import math
import os
import time
import uuid

import pytest

import uwcache
from uwcache.memoize import LazyCache, memoize

GEOMETRY = {"max_items": 100, "block_size": 512, "key_size": 256, "hash_size": 64}


@pytest.fixture
def cache(namespace):
    c = uwcache.open_cache("memo", namespace=namespace, **GEOMETRY)
    yield c
    c.close()


class Color(enum.Enum):
    RED = 1
    BLUE = 2


def test_results_are_cached_per_arguments(cache):
    calls = []

    @memoize(cache)
    def add(a, b=10):
        calls.append((a, b))
        return a + b

    assert add(1) == 11
    assert add(1) == 11
    assert add(1, 10) == 11 and add(a=1) == 11 and add(b=10, a=1) == 11  # bound: one call
    assert calls == [(1, 10)]
    assert add(1, 2) == 3
    assert calls == [(1, 10), (1, 2)]
    assert add.cache_key(1) == add.cache_key(a=1, b=10) != add.cache_key(1, 2)
    assert add.cache_key(1).startswith("memoize:test_memoize.test_results_are_cached_per_arguments.<locals>.add:")


def test_types_are_part_of_the_key(cache):
    @memoize(cache)
    def ident(x):
        return x

    keys = {ident.cache_key(v) for v in (1, 1.0, True, "1", b"1", (1,), [1], Color.RED, decimal.Decimal(1))}
    assert len(keys) == 9
    assert ident.cache_key({"a": 1, "b": 2}) == ident.cache_key({"b": 2, "a": 1})  # order-free
    assert ident.cache_key({3, 1, 2}) == ident.cache_key({2, 3, 1})
    assert ident.cache_key(frozenset({1})) != ident.cache_key({1})


def test_supported_argument_types_round_trip(cache):
    calls = []

    @memoize(cache)
    def describe(*args, **kwargs):
        calls.append(1)
        return repr((args, sorted(kwargs.items())))

    args = (None, True, 2, 3.5, 1j, "s", b"b", bytearray(b"ba"), (1, [2, {"k": {4}}]), frozenset({"f"}),
            datetime.datetime(2024, 1, 1, 12), datetime.date(2024, 1, 1), datetime.time(1, 2),
            datetime.timedelta(days=1), decimal.Decimal("1.5"), uuid.UUID(int=7), Color.BLUE)
    first = describe(*args, extra=[1, 2])
    assert describe(*args, extra=[1, 2]) == first
    assert len(calls) == 1


def test_unstable_arguments_raise_with_a_hint(cache):
    @memoize(cache)
    def f(obj):
        return 1

    with pytest.raises(TypeError, match=r"argument 'obj' of type .*object.*ignore=.*key="):
        f(object())


def test_ignore_and_custom_key(cache):
    class Repo:
        def __init__(self):
            self.calls = 0

        @memoize(cache, ignore=("self",))
        def load(self, item_id):
            self.calls += 1
            return {"id": item_id}

    a, b = Repo(), Repo()
    assert a.load(5) == {"id": 5}
    assert b.load(5) == {"id": 5}  # self is left out: one entry for every instance
    assert (a.calls, b.calls) == (1, 0)

    @memoize(cache, key=lambda user, **_: f"user:{user['id']}")
    def profile(user, verbose=False):
        return user["name"]

    assert profile({"id": 1, "name": "ann"}) == "ann"
    assert profile({"id": 1, "name": "changed"}) == "ann"
    assert profile.cache_key({"id": 1}).endswith(":user:1")
    with pytest.raises(uwcache.ConfigError, match="ignore"):
        memoize(cache, ignore=("nope",))(lambda x: x)


def test_none_results_are_cached(cache):
    calls = []

    @memoize(cache)
    def nothing(x):
        calls.append(x)

    assert nothing(1) is None and nothing(1) is None
    assert calls == [1]


def test_invalidate_one_call_or_all(cache):
    calls = []

    @memoize(cache)
    def square(x):
        calls.append(x)
        return x * x

    @memoize(cache)
    def other(x):
        return -x

    for x in (1, 2, 3):
        square(x)
    other(1)
    assert square.invalidate(2) is True
    assert square.invalidate(2) is False
    square(2)
    assert calls == [1, 2, 3, 2]
    assert square.invalidate_all() == 3
    square(1)
    assert calls == [1, 2, 3, 2, 1]
    assert other.cache_key(1).encode() in cache.keys()  # other functions keep their entries


def test_expiry(cache):
    calls = []

    @memoize(cache, expires=1)
    def now(x):
        calls.append(x)
        return len(calls)

    t0 = time.time()
    assert now("a") == 1 and now("a") == 1
    _, expires = cache._get_with_expiry(now.cache_key("a"))
    assert t0 + 1 <= expires <= t0 + 2
    time.sleep(max(0.0, math.ceil(t0 + 1) - time.time()) + 0.05)
    assert now("a") == 2
    with pytest.raises(uwcache.ConfigError):
        memoize(cache, expires=-1)


def test_async_functions(cache):
    calls = []

    @memoize(cache, expires=30)
    async def fetch(x):
        calls.append(x)
        await asyncio.sleep(0)
        return {"x": x}

    async def scenario():
        assert await fetch(1) == {"x": 1}
        assert await fetch(1) == {"x": 1}
        assert await fetch(2) == {"x": 2}
        assert fetch.invalidate(1) is True
        assert await fetch(1) == {"x": 1}

    assert asyncio.iscoroutinefunction(fetch)
    asyncio.run(scenario())
    assert calls == [1, 2, 1]


def test_serializers_and_uncacheable_results(cache, caplog):
    @memoize(cache, serializer="json")
    def doc(x):
        return {"x": (x,)}

    assert doc(1) == {"x": (1,)}  # computed: the real result
    assert doc(1) == {"x": [1]}  # cached: as JSON gives it back

    @memoize(cache)
    def big(n):
        return "x" * n

    with caplog.at_level(logging.WARNING, logger="uwcache.memoize"):
        assert big(5000) == "x" * 5000  # larger than an item: returned anyway, logged
    assert "not cached" in caplog.text
    assert big.cache_key(5000).encode() not in cache.keys()

    @memoize(cache)
    def unpicklable():
        return lambda: 1

    assert callable(unpicklable())


def test_cache_by_name_opens_lazily(namespace):
    calls = []

    @memoize("by-name", namespace=namespace)
    def f(x):
        calls.append(x)
        return x

    assert "by-name" not in uwcache.list_caches(namespace)  # nothing opened at decoration
    assert f(1) == 1 and f(1) == 1 and calls == [1]
    assert "by-name" in uwcache.list_caches(namespace)


def test_shared_across_processes(cache):
    calls = []

    @memoize(cache)
    def compute(x):
        calls.append(x)
        return {"pid": os.getpid(), "x": x}

    parent = compute(1)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            got = compute(1)  # the parent's result
            compute(2)  # computed here, for the parent
            os.write(w, str(got["pid"]).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    with os.fdopen(r) as pipe:
        assert int(pipe.read()) == parent["pid"] == os.getpid()
    assert compute(2)["pid"] == pid
    assert calls == [1]


# -- LazyCache --------------------------------------------------------------------------------


def test_lazy_cache_opens_once_per_process_and_again_after_fork(namespace):
    lazy = LazyCache("lazy", namespace=namespace, **GEOMETRY)
    other = LazyCache("lazy", namespace=namespace, **GEOMETRY)
    assert "lazy" not in uwcache.list_caches(namespace)
    first = lazy.get()
    assert other.get() is first and lazy() is first
    first.set("k", b"parent")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            child = lazy.get()
            os.write(w, b"new" if child is not first else b"same")
            os.write(w, child.get("k"))
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    with os.fdopen(r, "rb") as pipe:
        assert pipe.read() == b"newparent"
    first.close()
    assert lazy.get() is not first and lazy.get().get("k") == b"parent"  # reopened after close


def test_lazy_cache_checks_options_early_and_mismatches_clearly(namespace):
    with pytest.raises(uwcache.ConfigError, match="block_size"):
        LazyCache("bad", namespace=namespace, max_items=10, block_size=0)
    LazyCache("geo", namespace=namespace, max_items=10, block_size=64).get()
    with pytest.raises(uwcache.RegionMismatch, match=r"my app: .*block_size=64 vs 128"):
        LazyCache("geo", namespace=namespace, owner="my app", max_items=10, block_size=128).get()


def test_memoize_by_name_next_to_open_cache_uses_that_cache(namespace):
    """Issue 12.3: @memoize("api") beside open_cache("api", ...) failed every call with a
    RegionMismatch blaming "other processes" (it tried to create "api" with its defaults)."""
    api = uwcache.open_cache("api", namespace=namespace, max_items=50, block_size=2048, key_size=128)
    calls = []

    @memoize("api", namespace=namespace, expires=60)
    def lookup(x):
        calls.append(x)
        return {"x": x}

    @memoize("api", namespace=namespace)
    async def alookup(x):
        calls.append(-x)
        return [x]

    assert lookup(1) == {"x": 1} and lookup(1) == {"x": 1} and calls == [1]
    assert asyncio.run(alookup(2)) == [2] and asyncio.run(alookup(2)) == [2] and calls == [1, -2]
    assert lookup.cache_key(1).encode() in api.keys()  # stored in the cache open_cache made
    assert api.max_items == 50


def test_memoize_by_name_creates_the_cache_when_there_is_none(namespace):
    @memoize("fresh", namespace=namespace)
    def f(x):
        return x

    assert f(3) == 3 and f(3) == 3
    assert uwcache.attach("fresh", namespace=namespace).get(f.cache_key(3)) is not None


def test_async_hit_neither_calls_nor_awaits_the_function(cache):
    started = []

    @memoize(cache)
    async def slow(x):
        started.append(x)
        await asyncio.sleep(0)
        return x * 2

    assert inspect.iscoroutinefunction(slow)
    assert asyncio.run(slow(4)) == 8

    async def hit():
        coro = slow(4)
        assert inspect.iscoroutine(coro)
        return await coro

    assert asyncio.run(hit()) == 8
    assert started == [4]  # the hit never created the function's coroutine


def test_memoize_by_name_and_a_configured_backend_share_one_cache_in_a_process(namespace):
    from uwcache.contrib.cachelib import UWCache

    geometry = dict(max_items=40, block_size=1024, key_size=256, hash_size=64, full_purge_lru=True)
    UWCache("both", namespace=namespace, **geometry).set("warm", 1)  # creates it, fully configured

    @memoize("both", namespace=namespace)
    def f(x):
        return [x]

    assert f(1) == [1] and f(1) == [1]
    backend = UWCache("both", namespace=namespace, **geometry)  # compared with its own options only
    assert backend.get("warm") == 1 and backend.cache.get(f.cache_key(1)) is not None
