"""Framework backends of the near cache (issue 11, semantics 9): Django (django-redis's
format), cachelib and Flask-Caching (their RedisCache format), against a real redis-server."""
import pickle

import pytest


import django_settings  # noqa: E402

django_settings.configure()

from django.core.exceptions import ImproperlyConfigured  # noqa: E402

import uwcache  # noqa: E402
from near_servers import Server, redis_server_bin  # noqa: E402


@pytest.fixture(scope="module")
def server():
    s = Server(redis_server_bin())
    yield s
    s.close()


@pytest.fixture
def plain(server):
    yield from server.flushed_client()


def start_node(namespace, url, prefix):
    caching = (uwcache.Caching(namespace=namespace).add_cache("pages", max_items=1000, block_size=1024)
               .add_near("pages", redis=url, prefix=prefix))
    node = caching.start()
    assert node._near.listeners[0].connected.wait(5)
    return node


def test_django_near_cache_reads_and_writes_django_redis_format(namespace, server, plain):
    from uwcache.contrib.django import NearCache

    with start_node(namespace, server.url, ":1:"):
        cache = NearCache(server.url, {"OPTIONS": {"CACHE": "pages", "NAMESPACE": namespace}, "TIMEOUT": 60})
        # what django-redis wrote: ":1:key", integers as digits, other values pickled
        plain.set(":1:obj", pickle.dumps({"a": [1, 2]}))
        plain.set(":1:n", b"41")
        assert cache.near.sync(5.0)
        assert cache.get("obj") == {"a": [1, 2]} and cache.get("obj") == {"a": [1, 2]}
        assert cache.near.cache._near_peek(b":1:obj") == pickle.dumps({"a": [1, 2]})  # served by the L1
        assert cache.incr("n") == 42 and plain.get(":1:n") == b"42" and cache.get("n") == 42
        cache.set("page", "<html>", timeout=30)
        assert pickle.loads(plain.get(":1:page")) == "<html>" and 0 < plain.ttl(":1:page") <= 30
        assert cache.add("page", "other") is False and cache.add("new", 1) is True
        assert cache.get_many(["page", "new", "missing"]) == {"page": "<html>", "new": 1}
        assert cache.has_key("page") and not cache.has_key("missing")
        assert cache.delete("page") is True and cache.get("page", "gone") == "gone"
        plain.set(":1:obj", pickle.dumps("changed by another host"))
        assert cache.near.sync(5.0)
        assert cache.get("obj") == "changed by another host"
        with pytest.raises(ValueError):
            cache.incr("missing")
        cache.set("x", 1, timeout=0)  # Django: 0 = expire now
        assert plain.get(":1:x") is None
        cache.clear()
        assert plain.keys(":1:*") == []


def test_django_near_cache_configuration_errors(namespace, server, plain):
    from uwcache.contrib.django import NearCache

    with pytest.raises(ImproperlyConfigured, match="unknown OPTIONS"):
        NearCache(server.url, {"OPTIONS": {"MAX_ENTRIES": 3}})
    with start_node(namespace, server.url, "app:"):
        wrong = NearCache("redis://127.0.0.1:1/0", {"OPTIONS": {"CACHE": "pages", "NAMESPACE": namespace}})
        with pytest.raises(ImproperlyConfigured, match="is not the Redis"):
            wrong.get("k")
        mismatch = NearCache(server.url, {"OPTIONS": {"CACHE": "pages", "NAMESPACE": namespace}})
        with pytest.raises(uwcache.ConfigError, match="does not start with"):
            mismatch.get("k")


def test_cachelib_near_cache_interoperates_with_cachelib_redis_cache(namespace, server, plain):
    from cachelib.redis import RedisCache

    from uwcache.contrib.cachelib import NearCache

    with start_node(namespace, server.url, "app:"):
        theirs = RedisCache(host="127.0.0.1", port=server.port, key_prefix="app:")
        ours = NearCache(server.url, cache="pages", namespace=namespace, key_prefix="app:")
        theirs.set("obj", {"x": 1})
        theirs.set("n", 5)
        assert ours.near.sync(5.0)
        assert ours.get("obj") == {"x": 1} and ours.get("n") == 5
        assert ours.inc("n", 2) == 7 and theirs.get("n") == 7
        assert ours.set("mine", [1, "two"], timeout=20) is True
        assert theirs.get("mine") == [1, "two"]
        assert ours.add("mine", 0) is False
        assert ours.get_many("obj", "mine", "none") == [{"x": 1}, [1, "two"], None]
        theirs.set("obj", "updated")
        assert ours.near.sync(5.0)
        assert ours.get("obj") == "updated"
        assert ours.delete("obj") and theirs.get("obj") is None
        assert ours.has("mine") and ours.clear() and theirs.get("mine") is None


def test_flask_caching_near_cache(namespace, server, plain):
    from flask import Flask
    from flask_caching import Cache

    with start_node(namespace, server.url, "flask_cache_"):
        app = Flask(__name__)
        cache = Cache(app, config={"CACHE_TYPE": "uwcache.contrib.flask.NearCache", "CACHE_REDIS_URL": server.url,
                                   "CACHE_UWCACHE_NAME": "pages", "CACHE_UWCACHE_NAMESPACE": namespace})
        other_app = Flask("other")
        theirs = Cache(other_app, config={"CACHE_TYPE": "RedisCache", "CACHE_REDIS_URL": server.url})
        calls = []

        @cache.memoize(timeout=30)
        def square(x):
            calls.append(x)
            return x * x

        with app.app_context():
            assert square(3) == 9 and square(3) == 9 and calls == [3]
            cache.set("k", {"v": 1})
        assert plain.get("flask_cache_k").startswith(b"!")  # Flask-Caching's RedisCache format
        with other_app.app_context():
            assert theirs.get("k") == {"v": 1}
            theirs.set("k", "from RedisCache")
        with app.app_context():
            assert cache.cache.near.sync(5.0)
            assert cache.get("k") == "from RedisCache"
