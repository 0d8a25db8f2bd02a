"""Shared fixtures: the loopback end-to-end harness and fast retry delays."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from relay import retry
from tests.fakes.harness import Harness, close_harness, make_harness


@pytest.fixture(autouse=True)
def _fast_retries() -> Iterator[None]:
    """Retry delays shrink 100× in tests; the policies themselves stay as declared."""
    retry.set_delay_scale(0.01)
    yield
    retry.set_delay_scale(1.0)


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    h = await make_harness(tmp_path)
    try:
        yield h
    finally:
        await close_harness(h)
