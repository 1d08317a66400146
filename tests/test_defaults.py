"""Issue 10 §2: one default geometry for every entry point, and the budget form
(``memory=``, ``max_value=``) that sizes a cache to fit a memory budget."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

import uwcache
from uwcache.cli import DEFAULT_CACHE2
from uwcache.config import DEFAULT_GEOMETRY, cache_options, parse_size
from uwcache.errors import ConfigError
from uwcache.memoize import LazyCache, memoize


import django_settings  # noqa: E402

django_settings.configure()

from uwcache.contrib.cachelib import UWCache as CachelibCache  # noqa: E402
from uwcache.contrib.django import UWCache as DjangoCache  # noqa: E402
from uwcache.contrib.flask import UWCache as FlaskCache  # noqa: E402

MiB = 2**20
LAYOUT = ("max_items", "key_size", "block_size", "blocks", "mode_bitmap", "hash_size", "memory_bytes")


def layout(options: uwcache.CacheOptions) -> tuple:
    return tuple(getattr(options, name) for name in LAYOUT)


def test_every_entry_point_has_the_same_default_geometry(namespace):
    expected = layout(cache_options("x", {}))
    assert expected == (4096, 250, 4096, 4096, True, 65536, expected[-1])
    assert expected[-1] <= 18 * MiB  # well inside Docker's 64 MiB /dev/shm

    with uwcache.open_cache("plain", namespace=namespace) as cache:
        opened = layout(cache.options)
        assert cache.region_size == expected[-1]  # memory_bytes is the engine's own size
    added = layout(uwcache.Caching(namespace=namespace).add_cache("added").cache_options("added"))
    cli_run = layout(uwcache.parse_cache2(DEFAULT_CACHE2))
    dj = DjangoCache("dj", {"OPTIONS": {"NAMESPACE": namespace}})
    fl = FlaskCache.factory(None, {"CACHE_UWCACHE_NAMESPACE": namespace}, [], {})
    cl = CachelibCache("cl", namespace=namespace)
    lazy = LazyCache("lazy", namespace=namespace)

    @memoize("memo", namespace=namespace)
    def square(x):
        return x * x

    assert square(3) == 9
    memo = uwcache.attach("memo", namespace=namespace)
    try:
        for name, got in [("open_cache", opened), ("add_cache", added), ("uwcache run", cli_run),
                          ("django", layout(dj._cache.options)), ("flask", layout(fl._lazy.options)),
                          ("cachelib", layout(cl._lazy.options)), ("LazyCache", layout(lazy.options)),
                          ("memoize", layout(memo.options))]:
            assert got == expected, name
    finally:
        memo.close()
    assert DEFAULT_GEOMETRY["key_size"] == 250


def test_explicit_options_keep_uwsgi_defaults_as_before(namespace):
    o = uwcache.Caching().add_cache("a", max_items=100).cache_options("a")
    assert (o.key_size, o.block_size, o.mode_bitmap, o.block_count) == (2048, 65536, False, None)
    with uwcache.open_cache("b", namespace=namespace, block_size=4096) as cache:
        assert (cache.max_items, cache.key_size, cache.block_size) == (1000, 2048, 4096)
    dj = DjangoCache("dj", {"OPTIONS": {"MAX_ENTRIES": 50, "NAMESPACE": namespace}})
    assert (dj._cache.options.max_items, dj._cache.options.key_size) == (50, 2048)
    assert LazyCache("l", max_items=10).options.block_size == 65536
    assert uwcache.parse_cache2("name=c,items=3").key_size == 2048  # cache2 is uWSGI's


@pytest.mark.parametrize("text, size", [
    (65536, 65536), ("65536", 65536), ("64MiB", 64 * MiB), ("64 MiB", 64 * MiB), ("1MB", 10**6),
    ("512KiB", 512 * 1024), ("1.5GiB", 3 * 2**29), ("2kb", 2000), ("100B", 100),
])
def test_parse_size(text, size):
    assert parse_size("memory", text) == size


@pytest.mark.parametrize("memory, max_value", [("64MiB", "1MiB"), ("16MiB", "256KiB"), ("1MiB", "100KiB"),
                                               ("2GiB", "8MiB"), (10**6, 100)])
def test_budget_fits_and_holds_a_max_value(memory, max_value):
    o = cache_options("b", {"memory": memory, "max_value": max_value})
    assert o.memory_bytes <= parse_size("m", memory)
    assert o.memory_bytes > 0.97 * parse_size("m", memory)  # and uses most of it
    assert o.mode_bitmap and o.max_item_size >= parse_size("v", max_value)
    assert o.blocks >= o.max_items and o.key_size == 250
    assert o.budget == (parse_size("m", memory), parse_size("v", max_value))


def test_budget_cache_stores_a_max_value_and_many_small_ones(namespace):
    with uwcache.open_cache("budget", namespace=namespace, memory="8MiB", max_value="1MiB") as cache:
        assert cache.region_size <= 8 * MiB
        cache.set("big", b"B" * MiB)
        small = {f"k{i}": b"s" * 200 for i in range(1000)}
        assert cache.set_many(small) == []
        assert cache.get("big") == b"B" * MiB and len(cache) == 1001
        stats = cache.stats()
        assert stats["sizing"].startswith("budget 8 MiB: bitmap, 4 KiB blocks × ")
        assert "max value 1 MiB" in stats["sizing"] and f"up to {cache.capacity} items" in stats["sizing"]


def test_budget_with_max_items_and_in_every_front_end(namespace):
    o = cache_options("x", {"memory": "16MiB", "max_value": "1MiB", "max_items": 500, "key_size": 100})
    assert (o.max_items, o.key_size) == (500, 100) and o.blocks > 3000 and o.memory_bytes <= 16 * MiB
    added = uwcache.Caching().add_cache("a", memory="16MiB", max_value="1MiB").cache_options("a")
    assert layout(added) == layout(cache_options("a", {"memory": 16 * MiB, "max_value": MiB}))
    dj = DjangoCache("dj", {"OPTIONS": {"MEMORY": "16MiB", "MAX_VALUE": "1MiB", "NAMESPACE": namespace}})
    fl = FlaskCache.factory(None, {}, [], {"namespace": namespace, "memory": "16MiB", "max_value": "1MiB"})
    for options in (dj._cache.options, fl._lazy.options, LazyCache("l", memory="16MiB", max_value="1MiB").options):
        assert layout(options) == layout(added)
    dj.set("page", "x" * 500_000)  # Django returns None
    assert dj.get("page") == "x" * 500_000
    # the budget is a size, not part of the identity: the same layout attaches the same region
    assert uwcache.Caching().add_cache("a", memory="16MiB").cache_options("a").budget == (16 * MiB, MiB)


@pytest.mark.parametrize("options, words", [
    ({"memory": "1MiB", "max_value": "2MiB"}, ["max_value", "larger than memory"]),
    ({"memory": "lots"}, ["memory", "'lots'"]),
    ({"memory": "64XB"}, ["memory", "64XB"]),
    ({"memory": "64Mi"}, ["memory"]),
    ({"memory": True}, ["memory"]),
    ({"memory": 0}, ["memory"]),
    ({"memory": "64MiB", "max_value": "big"}, ["max_value"]),
    ({"max_value": "1MiB"}, ["max_value needs memory"]),
    ({"memory": "4KiB"}, ["memory", "too small"]),
    ({"memory": "2MiB", "max_value": "1900KiB"}, ["max_value", "too small"]),
    ({"memory": "64MiB", "max_items": 100_000}, ["max_items=100000", "too small"]),
    ({"memory": "64MiB", "block_count": 10}, ["block_count", "budget"]),
    ({"memory": "64MiB", "mode_bitmap": False}, ["mode_bitmap"]),
])
def test_bad_budgets_name_the_option(options, words):
    with pytest.raises(ConfigError) as err:
        cache_options("bad", options)
    for word in words:
        assert word in str(err.value)
    with pytest.raises(ConfigError):
        uwcache.Caching().add_cache("bad", **options)


def test_django_bad_budget_is_improperly_configured(namespace):
    from django.core.exceptions import ImproperlyConfigured
    with pytest.raises((ImproperlyConfigured, ConfigError), match="max_value"):
        DjangoCache("dj", {"OPTIONS": {"MEMORY": "1MiB", "MAX_VALUE": "8MiB", "NAMESPACE": namespace}})


def test_uwcache_stats_shows_the_sizing(namespace):
    with uwcache.open_cache("sized", namespace=namespace, memory="4MiB", max_value="512KiB") as cache:
        done = subprocess.run([sys.executable, "-m", "uwcache", "--namespace", namespace, "stats"],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        line = next(x for x in done.stdout.splitlines() if x.startswith("sized: "))
        assert f"bitmap, 4 KiB blocks × {cache.blocks}" in line and f"up to {cache.capacity} items" in line
        done = subprocess.run([sys.executable, "-m", "uwcache", "--namespace", namespace, "stats", "--json"],
                              capture_output=True, text=True, timeout=30)
        (entry,) = json.loads(done.stdout)["caches"]
        assert entry["sizing"].startswith("bitmap, 4 KiB blocks")
        assert cache.stats()["sizing"].startswith("budget 4 MiB: ")  # the process that gave the budget


def test_value_not_cached_warning_is_rate_limited(namespace, caplog):
    cl = CachelibCache("tiny", namespace=namespace, max_items=10, block_size=256)
    with caplog.at_level(logging.WARNING):
        assert [cl.set(f"k{i}", "x" * 5000) for i in range(20)] == [False] * 20
    records = [r for r in caplog.records if "not cached" in r.getMessage()]
    assert len(records) == 1, [r.getMessage() for r in records]
