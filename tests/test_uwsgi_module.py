"""`uwcache.install_uwsgi_module()`: `import uwsgi` outside uWSGI (issue 12.2)."""
import os
import pickle
import sys
import textwrap

import pytest

import uwcache
import uwcache.uwsgi
from uwcache import _engine


@pytest.fixture
def clean_uwsgi():
    """No `uwsgi` module and no registered cache before and after each test."""
    saved = sys.modules.pop("uwsgi", None)
    before = dict(_engine._compat_registry())
    yield
    sys.modules.pop("uwsgi", None)
    if saved is not None:
        sys.modules["uwsgi"] = saved
    for name, cache in list(_engine._compat_registry().items()):
        if before.get(name) is not cache:
            _engine._compat_unregister(name, cache)


@pytest.fixture
def cache(namespace, clean_uwsgi):
    c = uwcache.open_cache("mycache", namespace=namespace, max_items=100, block_size=1024)
    yield c
    c.close()


def test_import_uwsgi_gives_the_cache_functions_and_opt(cache):
    with pytest.raises(ImportError):
        import uwsgi  # noqa: F401  (not installed yet: opt-in)
    assert uwcache.install_uwsgi_module(cache) is True
    import uwsgi

    assert uwsgi is uwcache.uwsgi
    assert uwsgi.cache_set("k", b"v", 0, "mycache") is True
    assert uwsgi.cache_get("k") == b"v"  # no name: the default cache
    assert cache.get("k") == b"v"
    # the options as uWSGI 2.0 exposes them: option name -> bytes
    assert uwsgi.opt == {"cache2": b"name=mycache,maxitems=100,blocksize=1024"}
    assert uwcache.parse_cache2(uwsgi.opt["cache2"].decode()).max_items == 100


def test_opt_is_empty_without_caches(clean_uwsgi):
    assert uwcache.uwsgi.opt == {}
    assert uwcache.install_uwsgi_module() is True
    from flask_caching.contrib.uwsgicache import UWSGICache

    with pytest.raises(RuntimeError, match="enable cache2"):
        UWSGICache()


def test_opt_follows_a_node(namespace, clean_uwsgi):
    caching = uwcache.Caching(namespace=namespace).add_cache("first", max_items=10).add_cache("pages", max_items=20, block_size=128)
    uwcache.install_uwsgi_module()
    import uwsgi

    with caching.start(sweeper=False) as node:
        assert uwsgi.opt == {"cache2": b"name=pages,maxitems=20,blocksize=128"}  # the last one, as uWSGI
        assert uwsgi.cache_update("x", b"1", 0, "pages") is True
        assert node.cache("pages").get("x") == b"1"
    assert uwsgi.opt == {}


def test_other_uwsgi_attributes_raise_a_clear_attribute_error(clean_uwsgi):
    uwcache.install_uwsgi_module()
    import uwsgi

    with pytest.raises(AttributeError, match=r"uwsgi.worker_id is not available: this 'uwsgi' module is uwcache's"):
        uwsgi.worker_id()
    assert not hasattr(uwsgi, "version")
    assert not hasattr(uwsgi, "spooler")
    with pytest.raises(AttributeError, match="has no attribute 'not_in_uwsgi'"):
        uwsgi.not_in_uwsgi


def test_flask_caching_uwsgicache_works_on_a_uwcache_cache(cache):
    uwcache.install_uwsgi_module(cache)
    from flask_caching.contrib.uwsgicache import UWSGICache

    backend = UWSGICache(default_timeout=60, cache="mycache")
    assert backend.set("page", {"html": "<p>hi</p>"})
    assert backend.get("page") == {"html": "<p>hi</p>"}
    assert pickle.loads(cache.get("page")) == {"html": "<p>hi</p>"}  # stored in the uwcache cache
    assert 59 <= cache.ttl("page") <= 60
    assert backend.has("page")
    assert backend.add("page", "other") is False
    assert backend.delete("page") is True
    assert backend.get("page") is None
    backend.set("a", 1)
    backend.set("b", 2)
    assert backend.get_many("a", "b", "c") == [1, 2, None]
    assert backend.clear() is True
    assert len(cache) == 0


def test_cachelib_uwsgicache_works_on_a_uwcache_cache(cache):
    uwcache.install_uwsgi_module(cache)
    from cachelib import UWSGICache

    backend = UWSGICache(default_timeout=0, cache="mycache")
    assert backend.set("k", [1, 2])
    assert backend.get("k") == [1, 2]
    assert cache.ttl("k") is None  # timeout 0: never expires
    assert backend.add("new", "x") is True
    assert backend.delete("k") is True and backend.get("k") is None
    assert backend.clear() is True
    assert backend.get("new") is None


def test_django_uwsgi_cache_style_calls(cache):
    """The calls django-uwsgi-cache makes: pickled values through cache_update/get/exists/del/clear."""
    uwcache.install_uwsgi_module(cache)
    import uwsgi

    assert uwsgi.cache_exists(b"key", "mycache") is None
    uwsgi.cache_update(b"key", pickle.dumps({"a": 1}), 30, "mycache")
    assert uwsgi.cache_exists(b"key", "mycache") is True
    assert pickle.loads(uwsgi.cache_get(b"key", "mycache")) == {"a": 1}
    assert uwsgi.cache_del(b"key", "mycache") is True
    uwsgi.cache_update(b"key2", b"v", 0, "mycache")
    assert uwsgi.cache_clear("mycache") is True
    assert uwsgi.cache_keys("mycache") == []


def test_install_checks_its_arguments(cache, namespace):
    with pytest.raises(TypeError, match="takes uwcache.Cache objects"):
        uwcache.install_uwsgi_module("mycache")
    uwcache.install_uwsgi_module(cache)
    other = uwcache.open_cache("mycache", namespace=namespace + "-b", max_items=10)
    with pytest.raises(ValueError, match="another open cache named 'mycache'"):
        uwcache.install_uwsgi_module(other)
    assert uwcache.install_uwsgi_module(cache) is True  # the same cache again is fine
    other.close()


def test_never_installed_over_another_uwsgi_module(clean_uwsgi):
    import types

    real = types.ModuleType("uwsgi")
    real.version = b"2.0.31"
    sys.modules["uwsgi"] = real
    assert uwcache.install_uwsgi_module() is False
    assert sys.modules["uwsgi"] is real


@pytest.mark.uwsgi
def test_inside_real_uwsgi_nothing_is_installed(tmp_path, uwsgi_bin):
    import oracle

    script = tmp_path / "check.py"
    script.write_text(textwrap.dedent("""
        import sys, uwsgi, uwcache
        real = sys.modules["uwsgi"]
        result = uwcache.install_uwsgi_module()
        import uwsgi as after
        print("RESULT", result, after is real, after.version is not None, flush=True)
    """))
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(uwcache.__file__)))
    run = oracle.run_raw(["--cache2", "name=c,items=10", "--pyrun", str(script)], env=env, timeout=60)
    assert "RESULT False True True" in run.log, run.log
