"""Shared fixtures for the Neo package tests: the AI SDK v6 fixture files and a live emulator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from relay.devtools.neo_emulator import NeoEmulator
from relay.neo.client import NeoClient
from tests.paths import fixture

API_KEY = "neo_sk_test_Sup3rS3cretValue0123456789"


def fixtures_dir() -> Path:
    """``tests/fixtures/aisdk-v6``: real ``ai@6.0.326`` streams (see its README for provenance)."""
    return fixture("aisdk-v6")


@pytest.fixture
def aisdk_fixtures() -> Path:
    return fixtures_dir()


@pytest.fixture
async def emulator() -> AsyncIterator[NeoEmulator]:
    emu = NeoEmulator(API_KEY)
    await emu.start()
    try:
        yield emu
    finally:
        await emu.stop()


@pytest.fixture
async def neo(emulator: NeoEmulator) -> AsyncIterator[NeoClient]:
    assert emulator.base_url is not None
    async with NeoClient(
        emulator.base_url, SecretStr(API_KEY), connect_timeout=2, request_timeout=2
    ) as client:
        yield client
