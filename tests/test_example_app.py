"""The example apps under gunicorn (Flask, Django) or uvicorn (the asyncio app) with 4
workers: one cache for all of them, end to end.

Each app is started as a subprocess on 127.0.0.1 and driven over HTTP with urllib. The
checks are what a user would look at: the page is rendered once and served by every worker,
the hit counter's total is exact (and every returned count is unique), and a value stored
through one worker is read through another.
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple

import pytest

from oracle import free_port

pytestmark = pytest.mark.slow

EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "examples")
APPS = {"flask": ("flask_app", "app:app"), "django": ("django_app", "app:application"),
        "asyncio": ("asyncio_app", "app:app")}
WORKERS = 4

Reply = Tuple[int, Dict[str, str], bytes]


def http(base: str, path: str, method: str = "GET", body: Optional[bytes] = None) -> Reply:
    req = urllib.request.Request(base + path, data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, _headers(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, _headers(err.headers), err.read()


def _headers(message: Any) -> Dict[str, str]:
    # HTTP header names are case-insensitive: uvicorn sends them in lower case
    return {name.title(): value for name, value in message.items()}


def many(base: str, path: str, count: int, method: str = "GET", body: Optional[bytes] = None) -> List[Reply]:
    """``count`` requests, 8 at a time, so that several workers take part."""
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda _: http(base, path, method, body), range(count)))


def _uvicorn_args(port: int, app_dir: str, target: str) -> List[str]:
    return [sys.executable, "-m", "uvicorn", "--workers", str(WORKERS), "--host", "127.0.0.1",
            "--port", str(port), "--app-dir", app_dir, "--timeout-graceful-shutdown", "5", target]


def _gunicorn_args(port: int, app_dir: str, target: str) -> List[str]:
    args = [sys.executable, "-m", "gunicorn", "-w", str(WORKERS), "-b", f"127.0.0.1:{port}",
            "--chdir", app_dir, "--graceful-timeout", "5"]
    import gunicorn.config

    if hasattr(gunicorn.config, "ControlSocketDisable"):  # gunicorn >= 25 opens one in $HOME
        args.append("--no-control-socket")
    return args + [target]


@pytest.fixture(scope="module", params=sorted(APPS))
def server(request: pytest.FixtureRequest) -> Iterator[str]:
    """One server per example app (4 workers), in a namespace of its own."""
    kind = request.param
    app_dir, target = APPS[kind]
    port = free_port()
    log_path = request.getfixturevalue("tmp_path_factory").mktemp(kind) / "server.log"
    env = dict(os.environ, UWCACHE_NAMESPACE=f"example-{kind}-{os.getpid()}")  # shm dir: conftest's
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            (_uvicorn_args if kind == "asyncio" else _gunicorn_args)(port, os.path.join(EXAMPLES, app_dir), target),
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 30
        while not _answers(base):
            if proc.poll() is not None:
                pytest.fail(f"{kind} server exited with {proc.returncode}:\n{log_path.read_text()}")
            if time.time() > deadline:
                pytest.fail(f"{kind} server did not answer in 30 s:\n{log_path.read_text()}")
            time.sleep(0.1)
        _wait_for_workers(base, log_path)
        yield base
    finally:
        proc.send_signal(signal.SIGINT)  # gunicorn: quick shutdown; uvicorn: graceful
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def _wait_for_workers(base: str, log_path: Any) -> None:
    """Until every worker has answered (each boots on its own): the tests need several."""
    seen: Set[str] = set()
    deadline = time.time() + 20
    while len(seen) < WORKERS and time.time() < deadline:
        seen.update(headers["X-Worker"] for _, headers, _ in many(base, "/hits", 16))
    if len(seen) < 2:
        pytest.fail(f"only worker(s) {seen} answered in 20 s:\n{log_path.read_text()}")


def _answers(base: str) -> bool:
    try:
        return http(base, "/hits")[0] == 200
    except OSError:
        return False


def test_workers_share_one_page_cache(server):
    # One request renders and caches the page. (Concurrent first requests could each render
    # it: cache_page and Flask-Caching do not lock against that dogpile; uwcache is not involved.)
    status, headers, first = http(server, "/")
    assert status == 200
    replies: List[Reply] = [(status, headers, first)]
    for _ in range(25):  # batches until several workers have served the page
        replies += many(server, "/", 16)
        if len({headers["X-Worker"] for _, headers, _ in replies}) >= 2:
            break
    assert {status for status, _, _ in replies} == {200}
    assert len({headers["X-Worker"] for _, headers, _ in replies}) >= 2, "only one worker answered"
    bodies = {body for _, _, body in replies}
    assert bodies == {first}, "every worker must serve the one cached rendering"
    assert b"rendered by worker" in first


def test_hit_counter_total_is_exact(server):
    replies: List[Reply] = []
    while len(replies) < 200 or len({headers["X-Worker"] for _, headers, _ in replies}) < 2:
        replies += many(server, "/hit", 40, method="POST", body=b"")
        assert len(replies) <= 1000, "only one worker answered"
    assert {status for status, _, _ in replies} == {200}
    counts = sorted(json.loads(body)["hits"] for _, _, body in replies)
    assert counts == list(range(1, len(replies) + 1))  # atomic: no count lost, none repeated
    assert json.loads(http(server, "/hits")[2]) == {"hits": len(replies)}


def test_value_set_by_one_worker_is_read_by_another(server):
    status, headers, _ = http(server, "/values/greeting", "PUT", b"hello from one worker")
    assert status == 200
    writer = headers["X-Worker"]
    readers = set()
    for _ in range(25):  # until another worker answers
        for status, headers, body in many(server, "/values/greeting", 8):
            assert status == 200
            assert json.loads(body) == {"value": "hello from one worker"}
            readers.add(headers["X-Worker"])
        if readers - {writer}:
            break
    assert readers - {writer}, "no other worker answered"
