"""Runs ``python -m relay serve`` as a real subprocess against the in-test emulators.

The emulators (Neo, Teams connector) run on the test's event loop and the token issuer in threads;
the relay process reaches them over 127.0.0.1, configured only by environment variables — the same
ones :func:`tests.fakes.harness.make_harness` uses — so a test can SIGKILL or SIGTERM a real relay
and start another on the same SQLite file. Every wait is bounded and :meth:`RelayProcess.kill` is
safe to call in any teardown.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from tests.fakes.harness import NEO_KEY, Harness, write_bots_file

REPO = Path(__file__).resolve().parents[2]


def relay_env(h: Harness, **extra: str) -> dict[str, str]:
    """The environment of a relay process wired to ``h``'s emulators and SQLite file."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "NEO_"))}
    base.update(write_bots_file(h.tmp / "bots.toml", h.bots))
    base.update(
        {
            "NEO_API_KEY": NEO_KEY,
            "NEO_API_BASE_URL": str(h.neo.base_url),
            "RELAY_BOTS_FILE": str(h.tmp / "bots.toml"),
            "RELAY_DATABASE_URL": h.settings.database_url,
            "RELAY_SERVICE_URL_ALLOWLIST": "http://127.0.0.1",
            "RELAY_OPENID_METADATA_URL": h.issuer.openid_metadata_url,
            "RELAY_TOKEN_ISSUER": h.issuer.issuer,
            "RELAY_LOGIN_URL": h.issuer.login_url,
            "RELAY_LOGIN_CA_FILE": h.issuer.ca_file,
            "RELAY_LOG_LEVEL": "DEBUG",
            "RELAY_METRICS_PORT": "0",  # a free port: several relay processes may run at once
            "PYTHONUNBUFFERED": "1",
        }
    )
    base.update(extra)
    return base


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RelayProcess:
    proc: asyncio.subprocess.Process
    url: str
    log_path: Path

    @classmethod
    async def start(
        cls, env: dict[str, str], log_path: Path, timeout: float = 30.0
    ) -> RelayProcess:
        port = _free_port()
        log = log_path.open("ab")
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "relay", "serve", "--host", "127.0.0.1", "--port", str(port),
                env=env, cwd=str(REPO), stdout=log, stderr=log,
            )  # fmt: skip
        finally:
            log.close()
        relay = cls(proc, f"http://127.0.0.1:{port}", log_path)
        try:
            await relay._wait_ready(timeout)
        except BaseException:
            await relay.kill()
            raise
        return relay

    async def _wait_ready(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < end:
                if self.proc.returncode is not None:
                    raise AssertionError(f"relay exited early:\n{self.log()[-3000:]}")
                try:
                    async with http.get(f"{self.url}/readyz") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError(f"relay not ready within {timeout}s:\n{self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def task_dump(self, timeout: float = 5.0) -> str:
        """SIGUSR1 (``relay.ops.task_dump``): the dump it logs, or a note why there is none."""
        if self.proc.returncode is not None:
            return f"(exited with {self.proc.returncode}: no task dump)"
        before = len(self.log())
        self.proc.send_signal(signal.SIGUSR1)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            text = self.log()[before:]
            start = text.find("task dump (SIGUSR1)")
            if start >= 0:
                await asyncio.sleep(0.2)  # let the whole record reach the file
                return self.log()[before + start :]
            await asyncio.sleep(0.05)
        return f"(no task dump within {timeout} s)"

    async def signal_and_wait(self, sig: int, timeout: float) -> int:
        """Send ``sig`` and wait (bounded) for the exit status."""
        self.proc.send_signal(sig)
        try:
            async with asyncio.timeout(timeout):
                return await self.proc.wait()
        except TimeoutError:
            await self.kill()
            raise AssertionError(f"relay did not exit within {timeout}s of {sig}") from None

    async def kill(self) -> None:
        """SIGKILL if still running, then reap. Safe to call twice."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            try:
                async with asyncio.timeout(10):
                    await self.proc.wait()
            except TimeoutError:
                pass
