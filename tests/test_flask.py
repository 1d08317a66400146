"""The Flask-Caching backend, configured through the app config, with Flask-Caching's semantics."""
from __future__ import annotations

import math
import os
import time

import pytest

from cachelib.serializers import JSONSerializer as CachelibJSON  # noqa: E402
from flask import Flask  # noqa: E402
from flask_caching import Cache  # noqa: E402

import uwcache  # noqa: E402
from uwcache.contrib.flask import UWCache  # noqa: E402
from forks import run_in_forks

GEOMETRY = {"max_items": 100, "block_size": 1024, "key_size": 256, "hash_size": 64}


def make_app(namespace, **config):
    app = Flask(__name__)
    settings = dict(
        CACHE_TYPE="uwcache.contrib.flask.UWCache",
        CACHE_UWCACHE_NAME="flask",
        CACHE_UWCACHE_NAMESPACE=namespace,
        CACHE_OPTIONS=dict(GEOMETRY),
    )
    settings.update(config)
    app.config.update(settings)
    return app


@pytest.fixture
def app(namespace):
    return make_app(namespace)


@pytest.fixture
def cache(app):
    return Cache(app)


@pytest.fixture
def c(cache, app):
    """The backend object Flask-Caching built from the config."""
    with app.app_context():
        return cache.cache


def test_configured_through_the_app_config(app, cache, c, namespace):
    assert isinstance(c, UWCache)
    shared = c.cache
    assert isinstance(shared, uwcache.Cache)
    assert (shared.name, shared.namespace, shared.max_items, shared.block_size) == ("flask", namespace, 100, 1024)
    assert c.default_timeout == 300
    assert c.key_prefix == "flask_cache_"  # Flask-Caching's default CACHE_KEY_PREFIX
    with app.app_context():
        cache.set("k", "v")
        assert cache.get("k") == "v"
    assert shared.get("flask_cache_k") is not None


def test_config_keys_and_options(namespace):
    app = make_app(namespace, CACHE_DEFAULT_TIMEOUT=42, CACHE_KEY_PREFIX="my:", CACHE_UWCACHE_SERIALIZER="json",
                   CACHE_OPTIONS=dict(GEOMETRY, name="other", full_purge_lru=True))
    c = Cache(app).cache
    assert c.cache.name == "other" and c.cache.options.full_purge_lru
    assert (c.default_timeout, c.key_prefix, c.serializer) == (42, "my:", "json")
    c.set("doc", (1, 2))
    assert c.get("doc") == [1, 2]
    assert 42 <= c.cache.ttl("my:doc") <= 43


def test_cache_serializer_setting_is_honoured(namespace):
    app = make_app(namespace, CACHE_SERIALIZER=CachelibJSON)
    c = Cache(app).cache
    c.set("doc", {"a": 1})
    assert c.get("doc") == {"a": 1}
    assert c.cache.get("flask_cache_doc")[17:] == b'{"a": 1}'


# -- Flask-Caching's generic backend expectations ---------------------------------------------


def test_generic_get_dict_set_get_many(c):
    assert c.set("a", "a") and c.set("b", "b")
    assert c.get_dict("a", "b") == {"a": "a", "b": "b"}
    for i in range(3):
        assert c.set(str(i), i * i)
    assert [c.get(str(i)) for i in range(3)] == [0, 1, 4]
    assert c.set("foo", ["bar"]) and c.set("spam", "eggs")
    assert c.get_many("foo", "spam") == [["bar"], "eggs"]
    assert c.set_many({"foo": "bar", "spam": ["eggs"]})
    assert c.get("foo") == "bar" and c.get("spam") == ["eggs"]


def test_generic_add_delete(c):
    assert c.add("foo", "bar")
    assert c.get("foo") == "bar"
    assert not c.add("foo", "qux")
    assert c.get("foo") == "bar"
    assert c.delete("foo")
    assert c.get("foo") is None
    assert c.add("foo", "bar") and c.add("spam", "eggs")
    assert c.delete_many("foo", "spam")
    assert c.get("foo") is None and c.get("spam") is None


def test_generic_inc_dec_true_false_bytes_has(c):
    assert c.set("foo", 1)
    assert c.inc("foo") == c.get("foo") == 2
    assert c.dec("foo") == c.get("foo") == 1
    assert c.delete("foo")
    assert c.set("t", True) and c.get("t") is True
    assert c.set("f", False) and c.get("f") is False
    assert c.set("bytes", b"bar") and c.get("bytes") == b"bar"
    assert c.has("foo") is False
    assert c.set("foo", "bar") and c.has("foo") is True
    c.delete("foo")
    assert c.has("foo") is False


def test_generic_timeout(c):
    t0 = time.time()
    c.set("foo", "bar", 0)
    c.set("baz", "qux", 1)
    assert c.get("baz") == "qux"
    time.sleep(max(0.0, math.ceil(t0 + 1) - time.time()) + 0.05)
    assert c.get("foo") == "bar"  # 0 = no timeout
    assert c.get("baz") is None


def test_delete_many_strictness_follows_the_config(namespace):
    strict = Cache(make_app(namespace)).cache  # Flask-Caching passes CACHE_IGNORE_ERRORS=False
    assert strict.ignore_delete_many_errors is False
    assert strict.delete_many("never", "set") == ["never", "set"]  # absent keys are deleted keys


# -- the decorators ---------------------------------------------------------------------------


def test_cached_view_and_memoize(app, cache):
    renders = []

    @app.route("/page")
    @cache.cached(timeout=60)
    def page():
        renders.append(1)
        return f"page {len(renders)}"

    calls = []

    @cache.memoize(60)
    def square(x):
        calls.append(x)
        return x * x

    client = app.test_client()
    assert client.get("/page").data == b"page 1"
    assert client.get("/page").data == b"page 1"
    assert len(renders) == 1
    with app.app_context():
        assert square(4) == 16 and square(4) == 16 and calls == [4]
        cache.delete_memoized(square, 4)
        assert square(4) == 16 and calls == [4, 4]
        cache.clear()
    assert client.get("/page").data == b"page 2"


def test_cached_view_is_shared_with_another_process(namespace):
    def build():
        app = make_app(namespace)
        cache = Cache(app)

        @app.route("/pid")
        @cache.cached(timeout=60)
        def pid():
            return str(os.getpid())

        return app

    parent_app = build()
    assert parent_app.test_client().get("/pid").data == str(os.getpid()).encode()
    r, w = os.pipe()
    child = os.fork()
    if child == 0:  # a separate process with its own app: it gets the parent's page
        code = 1
        try:
            body = build().test_client().get("/pid").data
            os.write(w, body)
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    assert os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]) == 0
    with os.fdopen(r, "rb") as pipe:
        assert pipe.read() == str(os.getpid()).encode()


def test_inc_is_atomic_across_processes(c):
    def child(i):
        for _ in range(250):
            c.inc("hits")

    assert run_in_forks(4, child) == [0] * 4
    assert c.get("hits") == 1000
