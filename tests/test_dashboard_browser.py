"""The stats dashboard in a real browser: headless Chromium loads the page a node serves
(issue 15). Chromium is required: `.ci/run` installs Debian's `chromium`; a missing browser
fails these tests, it never skips them."""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import time
from typing import Any, Dict, List

import pytest

import uwcache
from uwcache import attach
from uwcache.net.stats import NamespaceStats, StatsServer

from test_cli import RunningNode

ARTIFACTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "artifacts")


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("chromium is not installed: the dashboard tests need a real browser "
                "(Debian: apt-get install chromium; .ci/run installs it)", pytrace=False)


def browse(url: str, tmp_path, *extra: str, budget_ms: int = 3000) -> subprocess.CompletedProcess:
    """Run headless Chromium on ``url`` for ``budget_ms`` of virtual time."""
    profile = tmp_path / f"profile-{time.monotonic_ns()}"
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-extensions", "--disable-background-networking", f"--user-data-dir={profile}",
           f"--virtual-time-budget={budget_ms}", *extra, url]
    done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120,
                          env={**os.environ, "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    return done


def dump_dom(url: str, tmp_path, budget_ms: int = 3000) -> str:
    return browse(url, tmp_path, "--dump-dom", budget_ms=budget_ms).stdout.decode()


def shown_items(dom: str) -> Dict[str, int]:
    """Cache name -> the item count the page shows for it."""
    found = re.findall(r'<b class="items-count" data-cache="([^"]*)">([\d,]+)</b>', dom)
    return {html.unescape(name): int(count.replace(",", "")) for name, count in found}


@pytest.mark.slow
def test_dashboard_shows_every_cache_and_follows_writes(namespace, tmp_path):
    with RunningNode(namespace, "--cache2", "name=web,items=100,blocksize=256",
                     "--cache2", "name=api,items=40,blocksize=64",
                     "--cache2", "name=blobs,items=60,blocksize=64,blocks=200,bitmap=1",
                     "--stats", "127.0.0.1:0") as node:
        url = node.wait_for(r"stats: (http://127\.0\.0\.1:\d+/) \(JSON\)").group(1)
        node.wait_ready()
        caches = {name: attach(name, namespace=namespace) for name in ("web", "api", "blobs")}
        for cache, count in {"web": 7, "api": 3, "blobs": 12}.items():
            for i in range(count):
                caches[cache].set(f"key-{i}", "v" * (40 if cache != "blobs" else 50 + 20 * i))
        caches["blobs"].delete("key-4")
        for i in range(5):
            caches["web"].get(f"key-{i * 3}")

        dom = dump_dom(url, tmp_path)
        assert shown_items(dom) == {"web": 7, "api": 3, "blobs": 11}, dom[-3000:]
        assert 'id="status" class="">live' in dom  # polled without an error
        assert "block map:" in dom and "largest free run" in dom  # the bitmap cache's strip
        assert "namespace " + namespace in dom
        assert "key-1" not in dom  # no keys on the page

        for i in range(7, 20):
            caches["web"].set(f"key-{i}", "w")
        caches["api"].delete("key-0")
        assert shown_items(dump_dom(url, tmp_path)) == {"web": 20, "api": 2, "blobs": 11}

        os.makedirs(ARTIFACTS, exist_ok=True)
        shot = os.path.join(ARTIFACTS, "dashboard.png")
        if os.path.exists(shot):
            os.unlink(shot)
        browse(url, tmp_path, f"--screenshot={shot}", "--window-size=1280,900", budget_ms=5000)
        assert os.path.getsize(shot) > 10_000
        with open(shot, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        print(f"dashboard screenshot: {shot}")
        for cache in caches.values():
            cache.close()
        assert node.stop() == 0


class ScriptedServer(StatsServer):
    """A stats server whose answers follow a script, one step per poll: a node that
    restarts, a cache that disappears and one that appears, and a failed poll."""

    def __init__(self, steps: List[Any]) -> None:
        super().__init__("127.0.0.1:0", lambda: [])
        self.steps = steps
        self.polls = 0

    def document(self) -> Dict[str, Any]:
        step = self.steps[min(self.polls, len(self.steps) - 1)]
        self.polls += 1
        if isinstance(step, Exception):
            raise step
        return step


def _cache(name: str, items: int, hits: int) -> Dict[str, Any]:
    return {"name": name, "hash": "djb33x", "items": items, "capacity": 99, "hits": hits, "miss": 1,
            "writes": items, "full": 0, "evictions": 0, "expired_freed": 0, "memory": 4096,
            "mode": "single-block", "purge_lru": False, "blocks": 100, "blocks_used": items, "bytes_used": 10,
            "blocksize": 64, "sweeper_pid": 0}


def _doc(pid: int, started: float, now: float, *caches: Dict[str, Any], **extra: Any) -> Dict[str, Any]:
    return {"caches": list(caches), "node": {"namespace": "scripted", "pid": pid, "version": "x",
                                            "started_at": started, "uptime": now - started, "now": now}, **extra}


@pytest.mark.slow
def test_dashboard_survives_restarts_errors_and_changing_caches(tmp_path):
    steps = [
        _doc(100, 1000.0, 1001.0, _cache("old", 5, 10), _cache("keep", 1, 0)),
        _doc(100, 1000.0, 1002.0, _cache("old", 6, 20), _cache("keep", 2, 0)),
        RuntimeError("the node went away"),
        # another process now: "old" is gone, "fresh" appeared, counters started over
        _doc(200, 1005.0, 1006.0, _cache("keep", 3, 0), _cache("fresh", 9, 0)),
        _doc(200, 1005.0, 1007.0, _cache("keep", 4, 0), _cache("fresh", 9, 0), near={"state": "serving"}),
    ]
    with ScriptedServer(steps) as server:
        dom = dump_dom(server.url, tmp_path, budget_ms=8000)
        assert server.polls >= len(steps)
    assert shown_items(dom) == {"keep": 4, "fresh": 9}, dom[-3000:]
    assert "restarts seen" in dom and "the node went away" in dom  # the failed poll is reported
    assert 'id="status" class="">' in dom  # ... and the page recovered
    assert '<section class="panel" id="near">' in dom and "serving" in dom  # shown once the JSON has it


def test_near_tier_section_is_hidden_without_near_key(tmp_path):
    with ScriptedServer([_doc(1, 1.0, 2.0, _cache("c", 1, 0))]) as server:
        dom = dump_dom(server.url, tmp_path)
    assert shown_items(dom) == {"c": 1}
    assert '<section class="panel" id="near" hidden="">' in dom


def test_dashboard_with_a_token(namespace, tmp_path):
    with attach_or_create(namespace) as cache, NamespaceStats(namespace) as reader, \
            StatsServer("127.0.0.1:0", reader.collect, token="t0k-en") as server:
        cache.set("a", b"1")
        cache.set("b", b"2")
        # the page passes its ?token= on to its polls
        assert shown_items(dump_dom(server.url + "?token=t0k-en", tmp_path)) == {"guarded": 2}
        refused = dump_dom(server.url, tmp_path)
        assert "items-count" not in refused and "a token is required" in refused


def attach_or_create(namespace: str):
    return uwcache.open_cache("guarded", namespace=namespace, max_items=10, block_size=16)
