"""``relay forget`` as an operator runs it: a real process, on both stores, printing what it did."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from relay.store import RedisStore, SqliteStore, Store
from tests.fakes.harness import NEO_KEY
from tests.fakes.redis_server import RedisServer
from tests.store.test_lifecycle import ALICE, ALICE_DM, BOT, GROUP, _populate

REPO = Path(__file__).resolve().parents[1]


async def _relay_forget(database_url: str, *args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "NEO_"))}
    env.update(NEO_API_KEY=NEO_KEY, RELAY_ALLOW_ANONYMOUS="true", RELAY_DATABASE_URL=database_url)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "relay", "forget", *args, env=env, cwd=str(REPO),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
async def test_relay_forget_user_erases_them_and_leaves_others_intact(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str
) -> None:
    store: Store
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'relay.db'}"
        store = SqliteStore(tmp_path / "relay.db")
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        prefix = server.new_prefix()
        url = server.url(prefix=prefix)
        store = RedisStore(server.url(), prefix=prefix)
    await store.open()
    try:
        turns = await _populate(store)
    finally:
        await store.close()

    code, out, err = await _relay_forget(url, "--user", ALICE)
    assert code == 0, err
    assert f"relay forget user {ALICE}: deleted" in out
    assert "4 turns" in out
    assert "2 sessions" in out
    assert "1 claims" in out
    assert f"erase them in Neo too): sess-{ALICE_DM}, sess-group" in out

    await store.open()
    try:
        assert await store.get_turn(turns["alice-dm"].turn_id) is None
        assert await store.get_turn(turns["alice-group"].turn_id) is None
        assert await store.get_turn(turns["bob-dm"].turn_id) is not None
        assert await store.get_turn(turns["bob-group"].turn_id) is not None
        assert await store.get_session(BOT, GROUP) is not None
    finally:
        await store.close()

    code, out, _ = await _relay_forget(url, "--user", ALICE)  # idempotent
    assert (code, out.strip()) == (0, f"relay forget user {ALICE}: deleted nothing")
    code, out, _ = await _relay_forget(url, "--conversation", "a:1bob-dm", "--bot", BOT)
    assert code == 0
    assert "1 turns" in out
    assert "1 sessions" in out


async def test_relay_forget_refuses_bot_without_conversation() -> None:
    code, _, err = await _relay_forget("sqlite:///:memory:", "--user", ALICE, "--bot", BOT)
    assert code == 2
    assert "--bot needs --conversation" in err
