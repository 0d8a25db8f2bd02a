"""relay.event_loop: `relay serve` runs on uvloop when it is installed and wanted, else asyncio."""

from __future__ import annotations

import asyncio
import sys
from importlib.metadata import version

import pytest
import uvloop

from relay.event_loop import new_event_loop


def _run_on(loop: asyncio.AbstractEventLoop) -> str:
    async def name() -> str:
        await asyncio.sleep(0)
        return type(asyncio.get_running_loop()).__module__

    try:
        return loop.run_until_complete(name())
    finally:
        loop.close()


def test_uvloop_when_installed_and_wanted() -> None:
    loop, name = new_event_loop(True)
    assert isinstance(loop, uvloop.Loop)
    assert name == f"uvloop {version('uvloop')}"
    assert _run_on(loop).startswith("uvloop")


def test_asyncio_when_turned_off() -> None:
    loop, name = new_event_loop(False)
    assert not isinstance(loop, uvloop.Loop)
    assert "RELAY_UVLOOP=false" in name
    assert _run_on(loop).startswith("asyncio")


def test_asyncio_when_uvloop_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # makes `import uvloop` fail
    loop, name = new_event_loop(True)
    assert not isinstance(loop, uvloop.Loop)
    assert "not installed" in name
    assert _run_on(loop).startswith("asyncio")
