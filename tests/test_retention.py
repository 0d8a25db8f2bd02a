"""End to end: a finished turn's message text leaves the store's files and keys for good.

A relay with ``RELAY_RETENTION=5s`` answers one message whose text holds a unique marker; within
25 s the marker's bytes must be in none of the SQLite files (``.db``, ``-wal``, ``-shm``) — so the
rows are deleted, the freed content zeroed and the WAL truncated — and, on Redis, in no key under
the relay's prefix. Real relay, real SQLite, real Redis, the emulators on loopback.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest

from relay.domain import BotId, ConversationId
from tests.fakes.harness import BOT_A, Harness, answer_script, close_harness, make_harness
from tests.fakes.redis_server import RedisServer

RETENTION = 5.0
WITHIN = 25.0


def _sqlite_holds(tmp_path: Path, marker: bytes) -> list[str]:
    files = [tmp_path / f"relay.db{suffix}" for suffix in ("", "-wal", "-shm")]
    return [f.name for f in files if f.exists() and marker in f.read_bytes()]


async def _redis_holds(h: Harness, prefix: str, marker: str) -> list[str]:
    r = h.components.store._redis  # type: ignore[attr-defined]
    found: list[str] = []
    async for key in r.scan_iter(match=f"{prefix}*", count=1000):
        kind = await r.type(key)
        if kind == "hash":
            value = str(await r.hgetall(key))
        elif kind == "zset":
            value = str(await r.zrange(key, 0, -1))
        elif kind == "string":
            value = str(await r.get(key))
        else:
            value = ""
        if marker in value or marker in str(key):
            found.append(str(key))
    return found


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
async def test_the_marker_of_an_answered_turn_is_gone_after_the_retention_period(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str
) -> None:
    marker = f"MARKER{uuid.uuid4().hex}"
    overrides: dict[str, object] = {"retention": RETENTION}
    prefix = ""
    if backend == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        prefix = server.new_prefix()
        overrides["database_url"] = server.url(prefix=prefix)
    h = await make_harness(tmp_path, **overrides)
    try:
        h.neo.script = answer_script
        conv = "a:conv-retention"
        act = h.activity(BOT_A, f"my laptop {marker} is broken", conversation_id=conv)
        assert (await h.deliver(act, bot=BOT_A)).status == 200
        await h.wait_for(lambda: bool(h.teams.messages(conv)), what="the answer")
        await h.wait_idle()
        assert marker in str(h.teams.messages(conv))  # the answer quoted it: it was there

        store = h.components.store
        bot, conversation = BotId(BOT_A.app_id), ConversationId(conv)

        async def holds() -> list[str]:
            where = (
                _sqlite_holds(tmp_path, marker.encode())
                if backend == "sqlite"
                else await _redis_holds(h, prefix, marker)
            )
            if await store.conversation_turns(bot, conversation):
                where.append("the turn journal")
            if await store.get_session(bot, conversation) is not None:
                where.append("the session map")
            return where

        start = time.monotonic()
        while where := await holds():
            assert time.monotonic() - start < WITHIN, f"still held after {WITHIN} s: {where}"
            await asyncio.sleep(0.5)
        assert time.monotonic() - start >= RETENTION - 1  # the turn itself was kept a while

        # The relay goes on: the next message starts a new Neo session and is answered.
        sessions = len(h.neo.sessions)
        nxt = h.activity(BOT_A, "hello again", conversation_id=conv)
        assert (await h.deliver(nxt, bot=BOT_A)).status == 200
        await h.wait_for(lambda: len(h.teams.messages(conv)) == 2, what="the second answer")
        assert len(h.neo.sessions) == sessions + 1
    finally:
        await close_harness(h)
