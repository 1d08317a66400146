"""examples/django_near under gunicorn (2 workers) in front of a private redis-server: the
node runs in the gunicorn master, the workers share the L1, and a write made by another
client in django-redis's format is what every worker reads."""
import json
import os
import pickle
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from near_servers import Server, free_port, redis_server_bin

pytestmark = pytest.mark.slow
APP_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "examples", "django_near")


def http(base, path, method="GET", body=None):
    req = urllib.request.Request(base + path, data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_django_near_example(tmp_path):
    redis_server = Server(redis_server_bin())
    port = free_port()
    env = dict(os.environ, UWCACHE_NAMESPACE=f"example-near-{os.getpid()}", REDIS_URL=redis_server.url)
    log_path = tmp_path / "gunicorn.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "-w", "2",
                                 "-b", f"127.0.0.1:{port}", "--chdir", APP_DIR, "app:application"],
                                cwd=APP_DIR, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 30
        while True:
            try:
                if http(base, "/stats")[0] == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"gunicorn did not start:\n{log_path.read_text()}")
            time.sleep(0.1)
        check_requests(base, redis_server, log_path)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        redis_server.close()


def check_requests(base, redis_server, log_path):
    try:
        assert http(base, "/values/greeting", "PUT", b"hello")[0] == 200
        plain = redis_server.client()
        assert pickle.loads(plain.get(":1:value:greeting")) == "hello"  # django-redis's format
        replies = [json.loads(http(base, "/values/greeting")[1]) for _ in range(20)]
        assert {r["value"] for r in replies} == {"hello"}
        plain.set(":1:value:greeting", pickle.dumps("changed by another client"))
        end = time.time() + 5
        while json.loads(http(base, "/values/greeting")[1])["value"] != "changed by another client":
            assert time.time() < end, "the L1 kept the old value"
            time.sleep(0.05)
        stats = json.loads(http(base, "/stats")[1])
        assert stats["fills"] >= 1 and stats["hits"] >= 1 and stats["invalidations_received"] >= 1
        plain.close()
    except (OSError, AssertionError) as exc:
        pytest.fail(f"{exc!r}; gunicorn's log:\n{log_path.read_text()}")
