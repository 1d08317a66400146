"""The cachelib cache against cachelib's expectations, and shared across processes."""
from __future__ import annotations

import datetime as dt
import json
import logging
import math
import time

import pytest

from cachelib.serializers import JSONSerializer as CachelibJSON  # noqa: E402

import uwcache  # noqa: E402
from uwcache.contrib.cachelib import UWCache  # noqa: E402
from forks import run_in_forks

GEOMETRY = {"max_items": 100, "block_size": 512, "key_size": 256, "hash_size": 64}

# cachelib's own sample data (its tests' TestData)
SAMPLE_NUMBERS = [0, 10, 1024000, 9, 5000000000000, 99, 738, 2000000]
SAMPLE_PAIRS = {
    "128": False,
    "beef": True,
    "crevettes": {},
    "1024": "spam",
    "bacon": "eggs",
    "sausage": 2048,
    "3072": [],
    "brandy": [{}, "fried eggs"],
    "lobster": ["baked beans", [512]],
    "4096": {"sauce": [], 256: "truffle"},
}


@pytest.fixture
def make(namespace):
    def factory(**kwargs):
        options = dict(GEOMETRY, namespace=namespace)
        options.update(kwargs)
        return UWCache(options.pop("name", "cl"), **options)

    return factory


@pytest.fixture
def c(make):
    return make()


def test_set_get(c):
    for k, v in SAMPLE_PAIRS.items():
        assert c.set(k, v) is True
        got = c.get(k)
        assert got == v and type(got) is type(v)


def test_set_get_many_and_get_dict(c):
    assert c.set_many(SAMPLE_PAIRS) == list(SAMPLE_PAIRS)
    assert c.get_many(*SAMPLE_PAIRS) == list(SAMPLE_PAIRS.values())
    assert c.get_dict(*SAMPLE_PAIRS) == SAMPLE_PAIRS
    assert c.get_many("nope", "bacon") == [None, "eggs"]


def test_delete_and_delete_many(c):
    for k, v in SAMPLE_PAIRS.items():
        c.set(k, v)
        assert c.delete(k) is True
        assert c.get(k) is None
    assert c.delete("absent") is False
    c.set_many(SAMPLE_PAIRS)
    assert c.delete_many(*SAMPLE_PAIRS) == list(SAMPLE_PAIRS)
    assert not any(c.get_many(*SAMPLE_PAIRS))
    c.set("bacon", "spam")
    assert c.delete_many("eggs", "bacon") == ["eggs", "bacon"]  # absent keys count as deleted
    assert c.get("bacon") is None


def test_add(c):
    c.set_many(SAMPLE_PAIRS)
    for k in SAMPLE_PAIRS:
        assert c.add(k, "updated") is False
    assert c.get_many(*SAMPLE_PAIRS) == list(SAMPLE_PAIRS.values())
    for k, v in SAMPLE_PAIRS.items():
        assert c.add(f"{k}-new", v) is True
        assert c.get(f"{k}-new") == v


def test_inc_dec(c):
    for n in SAMPLE_NUMBERS:
        assert not c.get(f"{n}-key-inc")
        assert c.inc(f"{n}-key-inc", n) == n  # a missing key starts at 0
        assert c.get(f"{n}-key-inc") == n
        assert c.dec(f"{n}-key-dec", n) == -n
        assert c.get(f"{n}-key-dec") == -n
        assert c.dec(f"{n}-key-inc", 5) == n - 5
    assert c.inc("counter") == 1 and c.inc("counter") == 2 and c.dec("counter", 3) == -1
    c.set("float", 0.5)
    assert c.inc("float") == 1.5  # not a counter: read-add-write, Python's arithmetic
    c.set("text", "abc")
    with pytest.raises(TypeError):
        c.inc("text")


def test_has(c):
    assert c.has("foo") is False
    c.set("foo", "bar")
    assert c.has("foo") is True
    c.set("none", None)
    assert c.has("none") is True and c.get("none") is None
    c.delete("foo")
    assert c.has("foo") is False


def test_clear_whole_cache_or_only_the_prefix(make):
    plain = make()
    app = make(key_prefix="app:")
    other = make(key_prefix="other:")
    plain.set("k", 1)
    app.set("k", 2)
    other.set("k", 3)
    assert app.clear() is True
    assert app.get("k") is None
    assert other.get("k") == 3 and plain.get("k") == 1
    assert plain.clear() is True
    assert other.get("k") is None


def test_key_prefix_may_be_callable_and_keys_may_be_callables(make):
    c = make(key_prefix=lambda: "dyn:")
    assert c.set(lambda: "bacon", "sausages")
    assert c.get("bacon") == "sausages"
    assert c.cache.get("dyn:bacon") is not None


def test_expiration(c):
    t0 = time.time()
    for k, v in SAMPLE_PAIRS.items():
        c.set(f"{k}-t0", v, timeout=0)
        c.set(f"{k}-t1", v, timeout=1)
    c.set("delta", "x", timeout=dt.timedelta(seconds=1))
    time.sleep(max(0.0, math.ceil(t0 + 1) - time.time()) + 0.05)
    for k, v in SAMPLE_PAIRS.items():
        assert c.get(f"{k}-t0") == v  # 0 = never expires
        assert c.get(f"{k}-t1") is None
        assert c.has(f"{k}-t1") is False
    assert c.get("delta") is None


def test_default_and_negative_timeouts(make):
    c = make(default_timeout=50)
    c.set("default", 1)
    assert 50 <= c.cache.ttl("default") <= 51
    c.set("forever", 1, timeout=0)
    assert c.cache.ttl("forever") is None
    c.set("gone", "old")
    assert c.set("gone", "new", timeout=-1) is True  # stored already expired, as SimpleCache
    assert c.get("gone") is None and c.has("gone") is False
    assert c.add("gone2", "x", timeout=-1) is True
    assert c.get("gone2") is None
    assert make(name="td", default_timeout=dt.timedelta(minutes=2)).default_timeout == 120


def test_failed_writes_return_false(make, caplog):
    c = make()
    c.set("page", "small")
    with caplog.at_level(logging.WARNING, logger="uwcache.contrib.cachelib"):
        assert c.set("page", "x" * 2000) is False
    assert c.get("page") is None  # the stale value is not left behind
    assert "block_size" in caplog.text
    assert c.add("page", "x" * 2000) is False
    assert c.set_many({"ok": 1, "big": "x" * 2000}) == ["ok"]
    long_key = "k" * 300  # key_size is 256
    assert c.set(long_key, 1) is False
    assert c.get(long_key) is None and c.has(long_key) is False and c.delete(long_key) is False
    full = make(name="full", max_items=3, block_size=64)
    assert full.set_many({"a": 1, "b": 2, "c": 3}) == ["a", "b"]


def test_pickling_errors_raise(c):
    class Unpicklable:
        def __reduce__(self):
            raise TypeError("cannot pickle this")

    with pytest.raises(TypeError):
        c.set("bad", Unpicklable())


def test_serializer_choices(make):
    js = make(name="js", serializer="json")
    js.set("doc", {"a": (1, 2)})
    assert js.get("doc") == {"a": [1, 2]}
    raw = make(name="raw", serializer="raw")
    raw.set("b", b"bytes")
    raw.set("s", "text")
    raw.set("n", 5)
    assert (raw.get("b"), raw.get("s"), raw.inc("n")) == (b"bytes", "text", 6)
    with pytest.raises(TypeError, match="raw serializer"):
        raw.set("obj", {"a": 1})


def test_unreadable_values_read_as_none(make, caplog):
    pickler = make(name="mixed")
    pickler.set("obj", {1, 2})
    reader = make(name="mixed", serializer="json")
    with caplog.at_level(logging.WARNING, logger="uwcache.contrib.cachelib"):
        assert reader.get("obj") is None  # cachelib: "the value if it exists and is readable"
    assert "refusing to unpickle" in caplog.text


class SillySerializer:
    """cachelib's test serializer: anything with dumps/loads."""

    def dumps(self, value):
        return repr(value).encode()

    def loads(self, bvalue):
        return eval(bvalue.decode())  # test-only


class CustomCache(UWCache):
    serializer = SillySerializer()


def test_subclass_serializer_attribute_is_used(namespace):
    c = CustomCache("silly", namespace=namespace, **GEOMETRY)
    c.set("v", {"x": [1, 2]})
    assert c.get("v") == {"x": [1, 2]}
    assert c.cache.get("v")[17:] == b"{'x': [1, 2]}"


def test_serializer_assignment_and_cachelib_serializers(c):
    c.serializer = CachelibJSON()
    c.set("doc", {"k": "v"})
    assert c.get("doc") == {"k": "v"}
    assert json.loads(c.cache.get("doc")[17:]) == {"k": "v"}


def test_processes_share_counters_and_values(make):
    c = make(name="shared")

    def child(i):
        for _ in range(250):
            c.inc("hits")
        c.set(f"child-{i}", {"i": i})

    assert run_in_forks(4, child) == [0] * 4
    assert c.get("hits") == 1000
    assert c.get_many(*(f"child-{i}" for i in range(4))) == [{"i": i} for i in range(4)]
    assert uwcache.attach("shared", namespace=c._lazy.namespace).get_int("hits") == 1000


def test_uwcache_serializers_by_dotted_path_keep_the_fast_path(make):
    js = make(name="dotted", serializer="uwcache.serializers.JSONSerializer")
    js.set("doc", {"a": 1})
    js.set("s", "text")
    assert js.get("doc") == {"a": 1} and js.get("s") == "text"
    assert js.cache.get("s") == b"\x02text"  # native str: uwcache's own serializer
    assert js.inc("n") == 1


class Counting:
    """A user's serializer: it must see every value, str, bytes and int included."""

    def __init__(self):
        self.dumped, self.loaded = [], 0

    def dumps(self, value):
        self.dumped.append(value)
        return json.dumps(value if not isinstance(value, bytes) else value.decode()).encode()

    def loads(self, data):
        self.loaded += 1
        return json.loads(data)


def test_a_users_serializer_gets_every_value_and_is_returned_as_assigned(make):
    counting = Counting()
    c = make(name="every", serializer=counting)
    assert c.serializer is counting
    for value in ("text", 7, {"a": 1}):
        assert c.set("k", value) and c.get("k") == value
    c.set("b", b"bytes")
    assert counting.dumped == ["text", 7, {"a": 1}, b"bytes"] and counting.loaded == 3
    assert c.cache.get("k")[0] == 0x05  # tagged custom, signed
    later = Counting()
    c.serializer = later  # cachelib's pattern: assigned after construction
    c.set("k2", "v")
    assert c.serializer is later and later.dumped == ["v"]
    assert c.inc("hits") == 1 and c.inc("hits") == 2  # counters stay native (atomic)


def test_subclass_serializer_then_assignment_uses_the_assigned_one(namespace):
    c = CustomCache("silly2", namespace=namespace, **GEOMETRY)  # declares serializer = SillySerializer()
    assert isinstance(c.serializer, SillySerializer)
    c.serializer = CachelibJSON()  # was silently ignored before
    c.set("doc", {"k": [1]})
    assert isinstance(c.serializer, CachelibJSON)
    assert json.loads(c.cache.get("doc")[17:]) == {"k": [1]}
    assert c.get("doc") == {"k": [1]}


def test_a_serializer_may_return_empty_bytes(make):
    class Blank:
        def dumps(self, value):
            return b""

        def loads(self, data):
            return "blank" if data == b"" else data

    c = make(name="blank", serializer=Blank())
    assert c.set("k", "anything") and c.get("k") == "blank" and c.rejected_values == 0
