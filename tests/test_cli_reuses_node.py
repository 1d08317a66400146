"""`uwcache run` reuses the node (issue 14 point 9): stats serving, the cache-full warning,
sizes and start-up descriptions have one copy, and the node behaves as the CLI did."""

from __future__ import annotations

import logging
import socket

import pytest

import uwcache
from uwcache import cache as cache_module
from uwcache import cli, node as node_module, options as options_module


def test_one_copy_of_each() -> None:
    assert cli.describe_cache is node_module.describe_cache
    assert cli.FullWatch is node_module.FullWatch
    human = options_module._human_size
    assert cli._human_size is node_module._human_size is cache_module._human_size is human
    assert human(1536) == "1.5 KiB" and human(5 * 2**40) == "5 TiB"
    assert [human(n) for n in (100, 4096, 64 * 2**20, 2**40 + 2**39)] == [
        "100 bytes", "4 KiB", "64 MiB", "1.5 TiB"]
    # the engine's full warning and the CLI's watch of other processes use one wording
    assert cache_module.full_warning("c", False) == '*** DANGER cache "c" is FULL !!! ***'
    assert cache_module.full_warning("c", True) == 'LRU item will be purged from cache "c"'
    assert not hasattr(cli, "StatsServer") and not hasattr(cli, "_describe_cache")


def test_node_stats_errors_name_the_address_and_the_reader_is_closed(namespace, caplog) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    caching = uwcache.Caching(namespace).add_cache("web", max_items=10, block_size=32)
    try:
        with pytest.raises(uwcache.ConfigError, match=rf"stats='127.0.0.1:{port}': cannot listen on 127.0.0.1:{port}"):
            caching.start(stats=f"127.0.0.1:{port}")
    finally:
        busy.close()
    with pytest.raises(uwcache.ConfigError, match="stats='nowhere'"):
        caching.start(stats="nowhere")
    other = uwcache.open_cache("other", namespace=namespace, max_items=10, block_size=32)
    try:
        with caplog.at_level(logging.INFO, logger="uwcache"):
            with caching.start(stats="127.0.0.1:0") as node:
                url = node.stats_url
                reader = node._stats_reader
                assert [e["name"] for e in reader.collect()] == ["web", "other"]
                assert reader._attached  # "other" is attached by the reader
        assert f"stats: {url} (JSON) and {url}metrics (Prometheus)" in caplog.text
        assert not reader._attached  # closing the node closed the reader and its attachments
    finally:
        other.close()


def test_full_watch_reports_full_events_of_other_writers(namespace, caplog) -> None:
    # the watch reads the `full` counter alone (stats() would scan every record for expired
    # items each second) and logs the events another writer caused since its last check
    cache = uwcache.open_cache("fw", namespace=namespace, max_items=3, block_size=16, full_silent=True)
    watch = node_module.FullWatch({"fw": uwcache.open_cache("fw", namespace=namespace, max_items=3, block_size=16)})
    for i in range(4):
        try:
            cache.set(f"k{i}", b"v")  # the slots run out: a full event each time it fails
        except uwcache.CacheFull:
            pass
    assert cache._full_events() == cache.stats()["full"] >= 1
    with caplog.at_level(logging.WARNING, logger="uwcache"):
        watch.check()
        watch.check()  # nothing new: nothing logged
    lines = [r.getMessage() for r in caplog.records if "FULL" in r.getMessage()]
    assert len(lines) == 1 and 'cache "fw" is FULL' in lines[0], lines
    cache.close()
