"""The Django backend against Django's cache API contract, and shared across processes."""
from __future__ import annotations

import asyncio
import datetime
import decimal
import logging
import math
import pickle
import subprocess
import sys
import textwrap
import time

import pytest

# django, flask-caching, cachelib and gunicorn are in the test extra: a missing one fails loudly

import django_settings  # noqa: E402

django_settings.configure()

from django.core.cache import CacheKeyWarning, InvalidCacheKey, caches  # noqa: E402
from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from django.http import HttpResponse  # noqa: E402
from django.test import RequestFactory, override_settings  # noqa: E402
from django.views.decorators.cache import cache_page  # noqa: E402

import uwcache  # noqa: E402
from uwcache.contrib.django import UWCache  # noqa: E402
from uwcache.serializers import SerializerMismatch  # noqa: E402
from forks import run_in_forks

BACKEND = "uwcache.contrib.django.UWCache"
OPTIONS = {"max_items": 200, "block_size": 1024, "key_size": 512, "hash_size": 64}


def custom_key_func(key, key_prefix, version):
    return "CUSTOM-" + "-".join([key_prefix, str(version), key])


class Unpicklable:
    def __getstate__(self):
        raise pickle.PickleError("no")


def module_function():
    return 42


class ModuleClass:
    pass


def caches_setting(namespace, **params):
    """Django's test layout: several aliases on one LOCATION (one shared cache)."""
    base = {"BACKEND": BACKEND, "LOCATION": "django", "OPTIONS": dict(OPTIONS, NAMESPACE=namespace)}
    base.update(params)
    variants = {
        "default": {},
        "prefix": {"KEY_PREFIX": "cacheprefix"},
        "v2": {"VERSION": 2},
        "custom_key": {"KEY_FUNCTION": custom_key_func},
        "custom_key2": {"KEY_FUNCTION": "test_django.custom_key_func"},
    }
    return {alias: dict(base, **extra) for alias, extra in variants.items()}


@pytest.fixture
def dj(namespace):
    """Django's ``caches`` configured the Django way, every alias on one uwcache cache."""
    with override_settings(CACHES=caches_setting(namespace)):
        yield caches


@pytest.fixture
def cache(dj):
    return dj["default"]


def wait_past(deadline):
    """Sleep until the wall clock is past ``deadline`` (an item's latest possible expiry)."""
    time.sleep(max(0.0, deadline - time.time()) + 0.05)


# -- configuration ----------------------------------------------------------------------------


def test_configured_the_django_way(cache, namespace):
    from django.core.cache import cache as default_cache

    assert isinstance(cache, UWCache)
    shared = cache.cache
    assert isinstance(shared, uwcache.Cache)
    assert shared.name == "django" and shared.namespace == namespace
    assert shared.options.max_items == 200 and shared.options.block_size == 1024
    assert cache.default_timeout == 300
    default_cache.set("via-proxy", "ok")
    assert shared.get(":1:via-proxy") is not None  # Django's key layout: prefix:version:key
    # every alias on the LOCATION shares this process's one mapping
    assert caches["v2"].cache is shared


def test_options_are_case_insensitive_and_max_entries_is_max_items(namespace):
    backend = UWCache("upper", {"OPTIONS": {"MAX_ENTRIES": 50, "BLOCK_SIZE": 256, "NAMESPACE": namespace}})
    assert backend.cache.options.max_items == 50 and backend.cache.options.block_size == 256
    both = UWCache("both", {"OPTIONS": {"max_items": 20, "MAX_ENTRIES": 99, "namespace": namespace}})
    assert both.cache.max_items == 20


def test_unknown_or_invalid_options_are_improperly_configured(namespace):
    with pytest.raises(ImproperlyConfigured, match="unknown OPTIONS.*'blocksize'"):
        UWCache("bad", {"OPTIONS": {"blocksize": 10, "NAMESPACE": namespace}})
    with pytest.raises(ImproperlyConfigured, match="block_size"):
        UWCache("bad", {"OPTIONS": {"block_size": -1, "NAMESPACE": namespace}})
    with pytest.raises(ImproperlyConfigured, match="serializer"):
        UWCache("bad", {"OPTIONS": {"SERIALIZER": "yaml", "NAMESPACE": namespace}})


def test_other_geometry_raises_region_mismatch_naming_the_location(namespace):
    first = UWCache("geo", {"OPTIONS": {"max_items": 10, "block_size": 128, "NAMESPACE": namespace}})
    first.set("k", 1)
    # same process: the per-process registry names the differing option (IGNORE_EXCEPTIONS=False
    # raises; the default's miss is tested in test_cache_failures_are_misses_by_default)
    strict = {"max_items": 10, "block_size": 256, "NAMESPACE": namespace, "IGNORE_EXCEPTIONS": False}
    other = UWCache("geo", {"OPTIONS": strict})
    with pytest.raises(uwcache.RegionMismatch, match=r"LOCATION='geo'.*block_size=128 vs 256"):
        other.get("k")
    # another process holding it with the old options: no error on either side
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, uwcache
            c = uwcache.open_cache("geo2", namespace={namespace!r}, max_items=10, block_size=128)
            print("ready", flush=True); sys.stdin.read()
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        mismatched = UWCache("geo2", {"OPTIONS": dict(strict)})
        # a deploy that changes the options: the new configuration gets its own generation
        mismatched.set("k", 1)
        assert mismatched.get("k") == 1
    finally:
        holder.stdin.close()
        holder.wait(10)


def test_namespace_defaults_to_the_environment(namespace, monkeypatch):
    monkeypatch.setenv("UWCACHE_NAMESPACE", namespace)
    backend = UWCache("envns", {"OPTIONS": {"max_items": 10}})
    assert backend.cache.namespace == namespace


# -- the basic contract -----------------------------------------------------------------------


def test_simple_get_set_and_default(cache):
    cache.set("key", "value")
    assert cache.get("key") == "value"
    assert cache.get("does_not_exist") is None
    assert cache.get("does_not_exist", "bang!") == "bang!"
    cache.set("key_default_none", None)
    assert cache.get("key_default_none", default="default") is None


def test_add(cache):
    assert cache.add("addkey1", "value") is True
    assert cache.add("addkey1", "newvalue") is False
    assert cache.get("addkey1") == "value"


def test_prefix_and_custom_key_functions_isolate(dj):
    cache = dj["default"]
    cache.set("somekey", "value")
    assert dj["prefix"].has_key("somekey") is False
    dj["prefix"].set("somekey", "value2")
    assert cache.get("somekey") == "value"
    assert dj["prefix"].get("somekey") == "value2"
    assert dj["custom_key"].get("somekey") is None
    dj["custom_key"].set("answer2", 42)
    assert cache.get("answer2") is None
    assert dj["custom_key2"].get("answer2") == 42


def test_get_many_set_many_delete_many(cache):
    assert cache.set_many({"a": "a", "b": "b", "c": "c", "d": "d"}) == []
    assert cache.get_many(["a", "c", "d"]) == {"a": "a", "c": "c", "d": "d"}
    assert cache.get_many(iter(["a", "b", "e"])) == {"a": "a", "b": "b"}
    cache.set_many({"x": None, "y": 1})
    assert cache.get_many(["x", "y"]) == {"x": None, "y": 1}
    assert cache.set_many({}) == []
    assert cache.delete_many(["a", "b"]) is None
    assert cache.get_many(["a", "b", "c"]) == {"c": "c"}
    assert cache.delete_many([]) is None


def test_delete_has_key_in_and_clear(cache):
    cache.set_many({"key1": "spam", "key2": "eggs"})
    assert cache.delete("key1") is True
    assert cache.delete("key1") is False
    assert cache.get("key2") == "eggs"
    cache.set("null", None)
    assert cache.has_key("null") is True and "null" in cache
    assert cache.has_key("key1") is False and "key1" not in cache
    cache.clear()
    assert cache.get("key2") is None and not cache.has_key("null")


def test_data_types_round_trip(cache):
    values = {
        "string": "this is a string",
        "unicode": "Iñtërnâtiônàlizætiøn",
        "int": 42,
        "negative": -7,
        "bool": True,
        "false": False,
        "float": 1.5,
        "bigint": 2**70,
        "list": [1, 2, 3, 4],
        "tuple": (1, 2, 3, 4),
        "dict": {"A": 1, "B": 2},
        "set": {1, 2},
        "function": module_function,
        "class": ModuleClass,
        "bytes": b"\x00\x01binary",
        "eight_bytes": b"12345678",
        "seven_char_str": "1234567",
        "decimal": decimal.Decimal("1.10"),
        "datetime": datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
        "response": HttpResponse(b"page", headers={"X-A": "1"}),
    }
    for key, value in values.items():
        cache.set(key, value)
    for key, value in values.items():
        got = cache.get(key)
        if key == "response":
            assert got.content == b"page" and got["X-A"] == "1"
        else:
            assert got == value and type(got) is type(value), key
    assert cache.get("bool") is True  # a bool is not stored as a counter


def test_unicode_keys_and_values(cache):
    stuff = {"ascii": "ascii_value", "Iñtërnâtiônàlizætiøn": "Iñtërnâtiônàlizætiøn2", "ascii2": {"x": 1}}
    for key, value in stuff.items():
        cache.set(key, value)
        assert cache.get(key) == value
        assert cache.delete(key) is True
        assert cache.add(key, value) is True
        assert cache.get(key) == value


def test_get_or_set(cache):
    assert cache.get_or_set("projector", 42) == 42
    assert cache.get("projector") == 42
    assert cache.get_or_set("projector", 1) == 42
    assert cache.get_or_set("mykey", lambda: "value") == "value"
    assert cache.get_or_set("null", None) is None
    assert cache.get("null", "default") is None  # None was stored
    assert cache.get_or_set("brian", 1979, version=2) == 1979
    assert cache.get("brian", version=1) is None
    with pytest.raises(TypeError):
        cache.get_or_set("brian")


def test_pickling_errors_are_raised(cache):
    with pytest.raises(pickle.PickleError):
        cache.set("unpicklable", Unpicklable())
    with pytest.raises(pickle.PickleError):
        cache.add("unpicklable", Unpicklable())


def test_close_keeps_the_cache_usable(cache):
    cache.set("k", "v")
    cache.close()
    assert cache.get("k") == "v"
    assert not cache.cache.closed


# -- incr / decr ------------------------------------------------------------------------------


def test_incr_decr(cache):
    cache.set("answer", 41)
    assert cache.incr("answer") == 42
    assert cache.get("answer") == 42
    assert cache.incr("answer", 10) == 52
    assert cache.incr("answer", -10) == 42
    assert cache.decr("answer") == 41
    assert cache.decr("answer", 10) == 31
    assert cache.decr("answer", -10) == 41


def test_incr_decr_errors(cache):
    for op, delta in ((cache.incr, 1), (cache.incr, -1), (cache.decr, 1), (cache.decr, -1)):
        with pytest.raises(ValueError):
            op("does_not_exist", delta)
    assert cache.has_key("does_not_exist") is False  # a failed incr does not create the key
    cache.set("null", None)
    with pytest.raises(TypeError):
        cache.incr("null")
    with pytest.raises(TypeError):
        cache.decr("null")
    cache.set("text", "abc")
    with pytest.raises(TypeError):
        cache.incr("text")
    assert cache.get("text") == "abc"


def test_integers_are_native_counters(cache):
    cache.set("hits", 5)
    assert cache.cache.get_int(cache.make_key("hits")) == 5  # a plain uwcache user reads it
    cache.cache.incr(cache.make_key("hits"), 10)  # and updates it
    assert cache.get("hits") == 15
    assert cache.incr("hits") == 16


def test_incr_of_non_counter_numbers_follows_python(cache):
    cache.set("float", 1.5)
    assert cache.incr("float") == 2.5
    cache.set("big", 2**63 - 1)
    assert cache.incr("big") == 2**63  # no 64-bit wrap-around
    assert cache.get("big") == 2**63
    assert cache.decr("big") == 2**63 - 1
    cache.set("low", -(2**63))
    assert cache.decr("low") == -(2**63) - 1
    cache.set("dec", decimal.Decimal("1.5"))
    assert cache.incr("dec", decimal.Decimal("0.25")) == decimal.Decimal("1.75")


def test_incr_keeps_the_expiry(cache):
    cache.set("value", 1, timeout=1000)
    key = cache.make_key("value")
    _, expires_before = cache.cache._get_with_expiry(key)
    assert cache.incr("value") == 2
    assert cache.decr("value") == 1
    assert cache.cache._get_with_expiry(key)[1] == expires_before
    cache.set("forever", 1, timeout=None)
    cache.incr("forever")
    assert cache.cache.ttl(cache.make_key("forever")) is None


# -- timeouts ---------------------------------------------------------------------------------


def test_timeouts_expire_never_early_and_never_much_late(cache):
    t0 = time.time()
    cache.set("expire1", "very quickly", 1)
    cache.set("expire2", "very quickly", 1)
    cache.set("expire3", "very quickly", 1)
    cache.set_many({"many1": "spam", "many2": "eggs"}, 1)
    cache.set("touched", "x", timeout=1)
    assert cache.touch("touched", timeout=5) is True
    # the deadline is rounded up to the engine's second: at least the timeout, at most +1 s
    _, expires = cache.cache._get_with_expiry(cache.make_key("expire1"))
    assert t0 + 1 <= expires <= t0 + 2
    wait_past(math.ceil(t0 + 1))
    assert cache.get("expire1") is None
    assert cache.add("expire2", "newvalue") is True
    assert cache.get("expire2") == "newvalue"
    assert cache.has_key("expire3") is False
    assert cache.get_many(["many1", "many2"]) == {}
    assert cache.get("touched") == "x"


def test_float_and_long_timeouts(cache):
    cache.set("float", "spam", 100.2)
    assert cache.get("float") == "spam"
    assert 100 <= cache.cache.ttl(cache.make_key("float")) <= 102
    month = 60 * 60 * 24 * 30 + 1  # memcached would read this as a timestamp; Django means seconds
    cache.set("key1", "eggs", month)
    assert cache.add("key2", "ham", month) is True
    cache.set_many({"key3": "sausage"}, month)
    assert cache.get_many(["key1", "key2", "key3"]) == {"key1": "eggs", "key2": "ham", "key3": "sausage"}
    assert month <= cache.cache.ttl(cache.make_key("key1")) <= month + 1
    cache.set("eons", "x", 10**15)  # past the engine's range: kept forever
    assert cache.get("eons") == "x" and cache.cache.ttl(cache.make_key("eons")) is None


def test_forever_timeout(cache, namespace):
    cache.set("key1", "eggs", None)
    assert cache.get("key1") == "eggs"
    assert cache.cache.ttl(cache.make_key("key1")) is None
    assert cache.add("key2", "ham", None) is True
    assert cache.add("key1", "new eggs", None) is False
    cache.set_many({"key3": "sausage"}, None)
    assert cache.get_many(["key1", "key2", "key3"]) == {"key1": "eggs", "key2": "ham", "key3": "sausage"}
    cache.set("key5", "belgian fries", timeout=1)
    assert cache.touch("key5", timeout=None) is True
    assert cache.cache.ttl(cache.make_key("key5")) is None
    with override_settings(CACHES=caches_setting(namespace, TIMEOUT=None)):
        caches["default"].set("infinite", "bar")
        assert caches["default"].cache.ttl(":1:infinite") is None


@pytest.mark.parametrize("timeout", [0, -1, -3.5])
def test_zero_and_negative_timeouts_do_not_keep_the_value(cache, timeout):
    cache.set("key1", "old")
    cache.set("key1", "eggs", timeout)
    assert cache.get("key1") is None  # and the old value is gone too
    assert cache.add("key2", "ham", timeout) is True
    assert cache.get("key2") is None
    cache.set("key2b", "there")
    assert cache.add("key2b", "ham", timeout) is False
    cache.set_many({"key3": "sausage", "key4": "lobster bisque"}, timeout)
    assert cache.get_many(["key3", "key4"]) == {}
    cache.set("key5", "belgian fries", timeout=5)
    assert cache.touch("key5", timeout=timeout) is True
    assert cache.get("key5") is None
    assert cache.touch("key5", timeout=timeout) is False


def test_touch(cache):
    cache.set("expire1", "very quickly", timeout=1)
    assert cache.touch("expire1", timeout=4) is True
    assert 4 <= cache.cache.ttl(cache.make_key("expire1")) <= 5
    cache.set("expire2", "x", timeout=1)
    assert cache.touch("expire2") is True  # the default timeout
    assert 300 <= cache.cache.ttl(cache.make_key("expire2")) <= 301
    assert cache.get("expire2") == "x"
    assert cache.touch("nonexistent") is False


# -- versions ---------------------------------------------------------------------------------


def test_versioning_get_set_add_delete(dj):
    cache, v2 = dj["default"], dj["v2"]
    cache.set("answer1", 42)
    assert cache.get("answer1", version=1) == 42 and cache.get("answer1", version=2) is None
    assert v2.get("answer1") is None and v2.get("answer1", version=1) == 42
    cache.set("answer2", 42, version=2)
    assert cache.get("answer2") is None and v2.get("answer2") == 42
    assert cache.add("answer3", 42, version=2) is True
    assert cache.add("answer3", 37, version=2) is False
    assert cache.add("answer3", 37, version=1) is True
    assert v2.get("answer3") == 42 and cache.get("answer3") == 37
    assert v2.has_key("answer3", version=1) is True
    cache.set("answer4", 37, version=1)
    cache.set("answer4", 42, version=2)
    assert v2.delete("answer4") is True
    assert cache.get("answer4", version=1) == 37 and cache.get("answer4", version=2) is None
    v2.set_many({"ford": 37, "arthur": 42}, version=1)
    assert cache.get_many(["ford", "arthur"]) == {"ford": 37, "arthur": 42}
    assert v2.get_many(["ford", "arthur"]) == {}


def test_versioning_incr_decr(dj):
    cache, v2 = dj["default"], dj["v2"]
    cache.set("answer1", 37, version=1)
    cache.set("answer1", 42, version=2)
    assert cache.incr("answer1") == 38
    assert cache.get("answer1", version=2) == 42
    assert v2.incr("answer1") == 43
    assert v2.decr("answer1", version=1) == 37
    assert cache.get("answer1", version=1) == 37 and cache.get("answer1", version=2) == 43


def test_incr_version_and_decr_version(dj):
    cache, v2 = dj["default"], dj["v2"]
    cache.set("answer", 42, version=2)
    assert cache.incr_version("answer", version=2) == 3
    assert cache.get("answer", version=2) is None
    assert cache.get("answer", version=3) == 42
    v2.set("answer2", 42)
    assert v2.incr_version("answer2") == 3
    assert v2.get("answer2") is None and v2.get("answer2", version=3) == 42
    assert cache.decr_version("answer", version=3) == 2
    assert cache.get("answer", version=2) == 42
    with pytest.raises(ValueError):
        cache.incr_version("does_not_exist")
    with pytest.raises(ValueError):
        cache.decr_version("does_not_exist", version=2)
    cache.set("null", None)
    assert cache.incr_version("null") == 2
    assert cache.has_key("null", version=2)
    # the value keeps its remaining time to live (Django's default would reset it)
    cache.set("ttl", "x", timeout=50)
    cache.incr_version("ttl")
    assert 49 <= cache.cache.ttl(cache.make_key("ttl", version=2)) <= 51
    cache.set("counter", 7)
    cache.incr_version("counter")
    assert cache.incr("counter", version=2) == 8  # still a native counter


# -- keys -------------------------------------------------------------------------------------


def _ops(key):
    return [
        ("add", [key, 1]), ("get", [key]), ("set", [key, 1]), ("incr", [key]), ("decr", [key]),
        ("touch", [key]), ("has_key", [key]), ("delete", [key]),
        ("get_many", [[key, "b"]]), ("set_many", [{key: 1, "b": 2}]), ("delete_many", [[key, "b"]]),
    ]


@pytest.mark.parametrize("key, message", [
    ("key with spaces and 清", "Cache key contains characters that will cause errors if used with memcached: %r"),
    ("a" * 250 + "清", "Cache key will cause errors if used with memcached: %r (longer than 250)"),
])
def test_memcached_unsafe_keys_warn(cache, key, message):
    cache.key_func = lambda key, *args: key  # as Django's own test: no prefix to hide the problem
    for operation, args in _ops(key):
        with pytest.warns(CacheKeyWarning) as record:
            getattr(cache, operation)(*args)
        assert str(record[0].message) == message % key, operation


@pytest.mark.filterwarnings("ignore::django.core.cache.CacheKeyWarning")
def test_keys_longer_than_key_size_are_invalid(cache):
    key = "k" * 600  # key_size is 512 bytes
    for operation, args in _ops(key):
        with pytest.raises(InvalidCacheKey, match="key_size"):
            getattr(cache, operation)(*args)
    cache.set("é" * 200, "two bytes each: 400 of 512")  # measured in UTF-8 bytes
    assert cache.get("é" * 200) == "two bytes each: 400 of 512"
    with pytest.raises(InvalidCacheKey):
        cache.set("é" * 300, "600 bytes")


# -- failed writes ----------------------------------------------------------------------------


def test_failed_set_deletes_the_old_value_and_logs(cache, caplog):
    cache.set("page", "small")
    with caplog.at_level(logging.WARNING, logger="uwcache.contrib.django"):
        cache.set("page", "x" * 5000)  # larger than one 1024-byte item: not raised
    assert cache.get("page") is None  # memcached semantics: never serve the stale value
    assert "not cached" in caplog.text and "block_size" in caplog.text
    assert cache.add("page", "y" * 5000) is False
    assert cache.set_many({"ok": 1, "big": "z" * 5000}) == ["big"]
    assert cache.get("ok") == 1


def test_full_cache_refuses_writes_without_raising(namespace):
    small = UWCache("small", {"OPTIONS": {"max_items": 4, "block_size": 64, "NAMESPACE": namespace}})
    assert small.set_many({f"k{i}": i for i in range(5)}) == ["k3", "k4"]  # 3 items fit
    lru = UWCache("lru", {"OPTIONS": {"max_items": 4, "block_size": 64, "full_purge_lru": True,
                                      "NAMESPACE": namespace}})
    assert lru.set_many({f"k{i}": i for i in range(5)}) == []  # evicts the least recently used
    assert lru.get_many(["k0", "k1", "k2", "k3", "k4"]) == {"k2": 2, "k3": 3, "k4": 4}


# -- serializers ------------------------------------------------------------------------------


def test_json_serializer_and_refusal_to_unpickle(namespace):
    opts = {"max_items": 20, "block_size": 256, "NAMESPACE": namespace}
    js = UWCache("ser", {"OPTIONS": dict(opts, SERIALIZER="json")})
    js.set("doc", {"a": [1, 2], "b": None})
    js.set("raw", b"\xff\x00bytes")
    js.set("n", 3)
    assert js.get("doc") == {"a": [1, 2], "b": None}
    assert js.get("raw") == b"\xff\x00bytes" and js.incr("n") == 4
    with pytest.raises(TypeError):
        js.set("obj", ModuleClass())
    pickling = UWCache("ser", {"OPTIONS": opts})
    pickling.set("pickled", {1, 2})
    assert pickling.get("doc") == {"a": [1, 2], "b": None}  # JSON is safe for everyone to read
    assert js.get("pickled", "miss") == "miss"  # refused, and by default a miss (logged)
    strict = UWCache("ser", {"OPTIONS": dict(opts, SERIALIZER="json", IGNORE_EXCEPTIONS=False)})
    with pytest.raises(SerializerMismatch, match="refusing to unpickle"):
        strict.get("pickled")


def test_values_written_by_plain_uwcache_users_come_back_as_bytes(cache):
    cache.cache.set(cache.make_key("foreign"), b"<html>from uwsgi.cache_set</html>")
    assert cache.get("foreign") == b"<html>from uwsgi.cache_set</html>"


# -- async ------------------------------------------------------------------------------------


def test_async_variants(dj):
    cache, v2 = dj["default"], dj["v2"]

    async def scenario():
        await cache.aset("k", "v")
        assert await cache.aget("k") == "v"
        assert await cache.aget("missing", "dflt") == "dflt"
        assert await cache.aadd("k", "other") is False
        assert await cache.ahas_key("k") is True
        assert await cache.atouch("k", 30) is True
        assert await cache.aset_many({"a": 1, "b": 2}) == []
        assert await cache.aget_many(["a", "b", "z"]) == {"a": 1, "b": 2}
        assert await cache.aincr("a", 5) == 6
        assert await cache.adecr("a") == 5
        with pytest.raises(ValueError):
            await cache.aincr("nope")
        assert await cache.aget_or_set("g", lambda: "computed") == "computed"
        assert await cache.aincr_version("k") == 2
        assert await v2.aget("k") == "v"
        assert await cache.adecr_version("k", version=2) == 1
        assert await cache.adelete("k") is True
        await cache.adelete_many(["a", "b"])
        assert await cache.aget_many(["a", "b"]) == {}
        await cache.aclear()
        assert await cache.aget("g") is None
        await cache.aclose()

    asyncio.run(scenario())


# -- Django machinery on top ------------------------------------------------------------------


def test_cache_page_serves_the_cached_response(cache, namespace):
    calls = []

    @cache_page(60)
    def view(request):
        calls.append(1)
        return HttpResponse(f"rendered {len(calls)}")

    with override_settings(CACHES=caches_setting(namespace), CACHE_MIDDLEWARE_KEY_PREFIX="site"):
        first = view(RequestFactory().get("/page"))
        second = view(RequestFactory().get("/page"))
    assert first.content == second.content == b"rendered 1"
    assert len(calls) == 1


def test_cache_session_backend(dj):
    from django.contrib.sessions.backends.cache import SessionStore

    session = SessionStore()
    session["user"] = 7
    session.save()
    again = SessionStore(session_key=session.session_key)
    assert again["user"] == 7
    again.flush()
    assert SessionStore(session_key=session.session_key).get("user") is None


# -- across processes -------------------------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import sys
    import django
    from django.conf import settings
    ns, idx, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    settings.configure(CACHES={"default": {
        "BACKEND": "uwcache.contrib.django.UWCache", "LOCATION": "django",
        "OPTIONS": {"max_items": 200, "block_size": 1024, "key_size": 512, "hash_size": 64, "NAMESPACE": ns},
    }})
    django.setup()
    from django.core.cache import cache
    for _ in range(n):
        cache.incr("hits")
    cache.set(f"from-{idx}", {"child": idx})
    print(repr(cache.get("from-parent")), flush=True)
    """
)


def test_independent_processes_share_the_cache(cache, namespace):
    cache.set("hits", 0)
    cache.set("from-parent", ["set", "by", "the", "parent"])
    children, per_child = 4, 300
    procs = [
        subprocess.Popen([sys.executable, "-c", _CHILD, namespace, str(i), str(per_child)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(children)
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err
        assert out.strip() == "['set', 'by', 'the', 'parent']"
    assert cache.get("hits") == children * per_child  # atomic incr across processes
    assert cache.get_many([f"from-{i}" for i in range(children)]) == {
        f"from-{i}": {"child": i} for i in range(children)
    }


def test_forked_workers_reopen_lazily_and_count_exactly(namespace):
    backend = UWCache("forked", {"OPTIONS": {"max_items": 50, "block_size": 128, "NAMESPACE": namespace}})
    backend.set("n", 0)  # opened in the parent before the fork, like gunicorn's preload_app
    parent_handle = backend.cache

    def child(i):
        for _ in range(250):
            backend.incr("n")
        return backend.cache is not parent_handle  # each worker opened its own handle

    assert run_in_forks(4, child) == [0] * 4
    assert backend.get("n") == 1000
