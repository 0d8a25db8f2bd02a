"""A real Redis for the tests: the one on 127.0.0.1:6379 if it answers, else one we start.

The Redis backend and the several-replicas tests must run against a real server (CI must not skip
them), so when nothing answers on the default port a throw-away ``redis-server`` is started on a
free loopback port with persistence off, and stopped at the end of the session. Every test works
under its own key prefix below one per-session root, and the session deletes that root at the end,
so a developer's own Redis is left as it was.
"""

from __future__ import annotations

import contextlib
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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_or_find(workdir: Path, *, timeout: float = 10.0) -> RedisServer:
    """The machine's Redis on 6379 if it answers; else a new ``redis-server`` in ``workdir``."""
    if answers(DEFAULT_PORT):
        return RedisServer(DEFAULT_PORT)
    return start_private(workdir, timeout=timeout)


def start_private(workdir: Path, *, timeout: float = 10.0) -> RedisServer:
    """A new ``redis-server`` on a free loopback port, persistence off; ``stop()`` ends it."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail(
            "no Redis answers on 127.0.0.1:6379 and redis-server is not installed: "
            "install it (apt-get install -y redis-server) — the Redis store tests must not skip"
        )
    port = _free_port()
    args = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    args += ["--appendonly", "no", "--dir", str(workdir)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = RedisServer(port, proc)
    deadline = time.monotonic() + timeout
    while not answers(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            with contextlib.suppress(Exception):
                server.stop()
            pytest.fail(f"redis-server did not start on 127.0.0.1:{port} within {timeout} s")
        time.sleep(0.05)
    return server
