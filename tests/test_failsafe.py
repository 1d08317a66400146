"""Cache failures never become request failures in the framework layers (issue 10, point 4):
by default the call behaves as on a miss and the failure is logged once per 10 s; the
IGNORE_EXCEPTIONS / ignore_exceptions option makes them raise."""
from __future__ import annotations

import asyncio
import logging
import sys

import pytest


import django_settings  # noqa: E402

django_settings.configure()

from flask import Flask  # noqa: E402
from flask_caching import Cache as FlaskCache  # noqa: E402

import uwcache  # noqa: E402
from uwcache.contrib.cachelib import UWCache as CachelibCache  # noqa: E402
from uwcache.contrib.django import UWCache as DjangoCache  # noqa: E402
from uwcache.memoize import memoize  # noqa: E402

import uwcache.lazy as lazy_module  # noqa: E402  (LazyCache opens every layer's cache)

GEOMETRY = {"max_items": 20, "block_size": 256, "key_size": 64, "hash_size": 16}


def closed_opener(real):
    def opener(name, **kwargs):
        cache = real(name, **kwargs)
        cache.close()
        return cache  # what a caller holding a handle closed elsewhere sees

    return opener


def mismatch_opener(name, **kwargs):
    raise uwcache.RegionMismatch(f"cache {name!r}: the store records another path (injected)")


INJECTIONS = {"closed": "closed", "region-mismatch": "mismatch"}


@pytest.fixture(params=sorted(INJECTIONS))
def broken(request, monkeypatch):
    """Every cache the layers open in this test fails: closed, or refused by the opener."""
    if INJECTIONS[request.param] == "closed":
        monkeypatch.setattr(lazy_module, "open_cache", closed_opener(lazy_module.open_cache))
        monkeypatch.setattr(lazy_module, "attach", closed_opener(lazy_module.attach))
        return uwcache.CacheClosed
    monkeypatch.setattr(lazy_module, "open_cache", mismatch_opener)
    return uwcache.RegionMismatch


def failure_records(caplog):
    return [r for r in caplog.records if "treated as a miss" in r.getMessage()]


def test_django_calls_behave_as_misses_and_log_once(broken, namespace, caplog):
    dj = DjangoCache("dj", {"OPTIONS": dict(GEOMETRY, NAMESPACE=namespace)})
    with caplog.at_level(logging.WARNING, logger="uwcache.contrib.django"):
        assert dj.get("k") is None and dj.get("k", "dflt") == "dflt"
        assert dj.set("k", {"v": 1}) is None
        assert dj.add("k", 1) is False
        assert dj.get_many(["a", "b"]) == {}
        assert dj.set_many({"a": 1, "b": 2}) == ["a", "b"]
        assert dj.has_key("k") is False and dj.delete("k") is False and dj.touch("k") is False
        assert dj.incr("n") is None
        assert dj.get_or_set("k", "computed") == "computed"
        dj.delete_many(["a"])
        dj.clear()
        with pytest.raises(ValueError, match="not found"):
            dj.incr_version("k")
        assert asyncio.run(dj.aget("k", "async")) == "async"
    records = failure_records(caplog)
    assert len(records) == 1, [r.getMessage() for r in records]  # rate-limited: once per 10 s
    assert broken.__name__ in records[0].getMessage() and "LOCATION='dj'" in records[0].getMessage()
    assert dj.failure_policy.failures >= 15


def test_django_ignore_exceptions_false_raises(broken, namespace):
    dj = DjangoCache("dj", {"OPTIONS": dict(GEOMETRY, NAMESPACE=namespace, IGNORE_EXCEPTIONS=False)})
    with pytest.raises(broken):
        dj.get("k")
    with pytest.raises(broken):
        dj.set("k", 1)


def test_django_programming_errors_still_raise(broken, namespace):
    import pickle

    from django.core.cache import InvalidCacheKey

    dj = DjangoCache("dj", {"OPTIONS": dict(GEOMETRY, NAMESPACE=namespace)})
    with pytest.raises(InvalidCacheKey):
        dj.get("k" * 100)  # longer than key_size: the framework's contract, not a cache failure

    class Unpicklable:
        def __reduce__(self):
            raise pickle.PicklingError("no")

    with pytest.raises(pickle.PicklingError):
        dj.set("k", Unpicklable())


def test_cachelib_and_flask_calls_behave_as_misses_and_log_once(broken, namespace, caplog):
    cl = CachelibCache("cl", namespace=namespace, **GEOMETRY)
    app = Flask(__name__)
    app.config.update(CACHE_TYPE="uwcache.contrib.flask.UWCache", CACHE_UWCACHE_NAME="fl",
                      CACHE_UWCACHE_NAMESPACE=namespace, CACHE_OPTIONS=dict(GEOMETRY))
    fl = FlaskCache(app)
    with caplog.at_level(logging.WARNING, logger="uwcache.contrib.cachelib"):
        assert cl.get("k") is None and cl.get_many("a", "b") == [None, None]
        assert cl.set("k", 1) is False and cl.add("k", 1) is False and cl.set_many({"a": 1}) == []
        assert cl.has("k") is False and cl.delete("k") is False
        cl.delete_many("k")
        assert cl.inc("n") is None and cl.dec("n") is None  # cachelib: None for backend errors
        assert cl.clear() is False
        with app.app_context():
            assert fl.get("k") is None
            assert fl.set("k", 1) is False

            @fl.memoize(60)
            def square(x):
                return x * x

            assert square(3) == 9 and square(3) == 9
    records = failure_records(caplog)
    assert len(records) == 2, [r.getMessage() for r in records]  # one per backend
    assert {broken.__name__ in r.getMessage() for r in records} == {True}


def test_cachelib_and_flask_can_raise(broken, namespace):
    cl = CachelibCache("cl", namespace=namespace, ignore_exceptions=False, **GEOMETRY)
    with pytest.raises(broken):
        cl.get("k")
    app = Flask(__name__)
    app.config.update(CACHE_TYPE="uwcache.contrib.flask.UWCache", CACHE_UWCACHE_NAME="fl",
                      CACHE_UWCACHE_NAMESPACE=namespace, CACHE_OPTIONS=dict(GEOMETRY),
                      CACHE_UWCACHE_IGNORE_EXCEPTIONS=False)
    fl = FlaskCache(app)
    with app.app_context(), pytest.raises(broken):
        fl.set("k", 1)


def test_memoize_computes_on_failures_and_logs_once(broken, namespace, caplog):
    calls = []

    @memoize("memo", namespace=namespace)
    def f(x):
        calls.append(x)
        return x + 1

    @memoize("memo", namespace=namespace)
    async def g(x):
        calls.append(-x)
        return x - 1

    with caplog.at_level(logging.WARNING, logger="uwcache.memoize"):
        assert f(1) == 2 and f(1) == 2
        assert asyncio.run(g(1)) == 0
        assert f.invalidate(1) is False and f.invalidate_all() == 0
    assert calls == [1, 1, -1]
    assert len(failure_records(caplog)) == 2  # one per decorated function

    @memoize("memo", namespace=namespace, ignore_exceptions=False)
    def strict(x):
        return x

    with pytest.raises(broken):
        strict(1)


def test_a_full_cache_is_a_miss_logged_once(namespace, caplog):
    tiny = dict(GEOMETRY, max_items=3)  # 2 usable slots
    dj = DjangoCache("full", {"OPTIONS": dict(tiny, NAMESPACE=namespace)})
    cl = CachelibCache("full2", namespace=namespace, **tiny)
    with caplog.at_level(logging.WARNING):
        assert dj.set_many({f"k{i}": i for i in range(6)}) == ["k2", "k3", "k4", "k5"]
        assert dj.add("other", 1) is False and dj.get("k5") is None
        assert [cl.set(f"k{i}", i) for i in range(6)] == [True, True, False, False, False, False]
        assert cl.add("other", 1) is False
    full = [r for r in caplog.records if "not cached" in r.getMessage() or "not added" in r.getMessage()]
    assert len(full) == 2, [r.getMessage() for r in full]  # one per backend, not one per refused write
    assert "(3 similar messages suppressed)" not in caplog.text  # the count comes with the next record


def test_cachelib_get_many_reads_a_value_of_another_serializer_as_a_miss(namespace):
    # a JSON reader meets a pickled value: get and get_many give None (logged), never raise
    pickling = CachelibCache("ser", namespace=namespace, **GEOMETRY)
    reading = CachelibCache("ser", namespace=namespace, serializer="json", **GEOMETRY)
    pickling.set("pickled", {1, 2})
    reading.set("doc", {"a": 1})
    assert reading.get("pickled") is None
    assert reading.get_many("pickled", "doc") == [None, {"a": 1}]
    assert reading.has("pickled") is False and reading.has("doc") is True
