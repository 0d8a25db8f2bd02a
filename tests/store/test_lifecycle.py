"""Retention and erasure (``relay.store.lifecycle``) on every backend: real SQLite, real Redis.

What a finished turn keeps, what expires after the retention period (never an unfinished turn),
and what ``forget_user`` / ``forget_conversation`` delete — and what they leave alone.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from relay.domain import (
    ActivityId,
    BotId,
    ConversationId,
    ConversationRef,
    ConversationType,
    InboundFile,
    SessionId,
    SessionRecord,
    TenantId,
    Turn,
    TurnState,
    User,
    make_turn_id,
)
from relay.store import RedisStore, SqliteStore, Store
from tests.fakes.redis_server import RedisServer

BOT = BotId("00000000-0000-0000-0000-00000000000a")
OTHER_BOT = BotId("00000000-0000-0000-0000-00000000000b")
ALICE, BOB = "aaaaaaaa-0000-0000-0000-0000000000a1", "bbbbbbbb-0000-0000-0000-0000000000b2"
ALICE_DM, BOB_DM = ConversationId("a:1alice-dm"), ConversationId("a:1bob-dm")
GROUP = ConversationId("19:team-chat@thread.v2")

Factory = Callable[..., Store]


@pytest.fixture(params=["sqlite", "redis"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Factory:
    if request.param == "sqlite":
        return lambda **kw: SqliteStore(tmp_path / "relay.db", **kw)
    server: RedisServer = request.getfixturevalue("redis_server")
    prefix = server.new_prefix()
    return lambda **kw: RedisStore(server.url(), prefix=prefix, **kw)


@pytest.fixture
async def store(make_store: Factory) -> AsyncIterator[Store]:
    s = make_store()
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def turn(
    n: int,
    *,
    conv: ConversationId = ALICE_DM,
    user: str = ALICE,
    bot: BotId = BOT,
    kind: ConversationType = ConversationType.PERSONAL,
) -> Turn:
    activity = ActivityId(f"act-{n}")
    return Turn(
        turn_id=make_turn_id(bot, conv, activity),
        ref=ConversationRef(
            bot_id=bot,
            service_url="https://smba.trafficmanager.net/emea/",
            conversation_id=conv,
            conversation_type=kind,
            tenant_id=TenantId("tenant-1"),
        ),
        activity_id=activity,
        user=User(id=f"29:{user}", aad_object_id=user, name="Avery Example"),
        text=f"secret question {n}",
        files=[InboundFile(url="https://contoso.sharepoint.com/x.pdf", content_type="x/y")],
    )


async def finish(store: Store, t: Turn, delivery: dict[str, object] | None = None) -> None:
    await store.add_turn(t)
    await store.save_delivery(t.turn_id, delivery or {"shown_text": "the answer", "sequence": 3})
    t.state = TurnState.DELIVERED
    await store.save_turn(t)


async def session(store: Store, conv: ConversationId, bot: BotId = BOT) -> None:
    await store.put_session(SessionRecord(bot, conv, SessionId(f"sess-{conv}")))


# -- what a finished turn keeps --------------------------------------------------------------------


async def test_a_finished_turn_keeps_its_bookkeeping_but_no_text(store: Store) -> None:
    t = turn(1)
    record = {"stream_id": "s-1", "activity_ids": ["m-2"], "shown_chars": 6, "plan": "rest"}
    closing = {"text": "answer", "plan": "rest"}  # a final journaled ahead, never confirmed
    await finish(store, t, {**record, "shown_text": "answer", "closing": closing})
    assert (t.text, t.files) == ("", [])  # the object in hand matches the journal
    assert await store.get_turn(t.turn_id) == t
    assert await store.get_delivery(t.turn_id) == record
    # A sink writing after the end cannot bring the answer text back.
    await store.save_delivery(t.turn_id, {"stream_id": "s-1", "shown_text": "answer again"})
    assert await store.get_delivery(t.turn_id) == {"stream_id": "s-1"}


async def test_an_unfinished_turn_keeps_what_recovery_needs(store: Store) -> None:
    t = turn(1)
    await store.add_turn(t)
    await store.save_delivery(t.turn_id, {"shown_text": "half an answer"})
    t.state = TurnState.STREAMING
    await store.save_turn(t)
    got = await store.get_turn(t.turn_id)
    assert got is not None
    assert got.text == "secret question 1"
    assert got.files
    assert await store.get_delivery(t.turn_id) == {"shown_text": "half an answer"}


async def test_feedback_finds_the_turn_by_any_message_it_sent(store: Store) -> None:
    turns = [turn(i) for i in range(60)]  # more than the old 50-turn look-back
    for i, t in enumerate(turns):
        await finish(store, t, {"stream_id": f"s-{i}", "activity_ids": [f"m-{i}", f"n-{i}"]})
    for probe, i in (("s-0", 0), ("n-0", 0), ("m-59", 59)):
        found = await store.find_delivered_turn(BOT, ALICE_DM, probe)
        assert found is not None
        assert found.turn_id == turns[i].turn_id
    assert await store.find_delivered_turn(BOT, ALICE_DM, "unknown") is None
    assert await store.find_delivered_turn(BOT, BOB_DM, "s-0") is None  # per conversation
    assert await store.find_delivered_turn(OTHER_BOT, ALICE_DM, "s-0") is None


async def test_a_released_claim_is_claimable_again(store: Store) -> None:
    assert await store.claim_once("install:bot:a:1", 3600)
    assert not await store.claim_once("install:bot:a:1", 3600)
    await store.release_claim("install:bot:a:1")
    assert await store.claim_once("install:bot:a:1", 3600)
    await store.release_claim("never-claimed")  # no error


# -- retention -------------------------------------------------------------------------------------


async def test_retention_deletes_finished_turns_claims_and_idle_sessions_only(
    make_store: Factory,
) -> None:
    store = make_store(retention=1.0)
    await store.open()
    try:
        done, running = turn(1), turn(2)
        await finish(store, done, {"stream_id": "s-1"})
        await store.add_turn(running)
        await session(store, ALICE_DM)
        assert await store.claim_once("install:bot:a:1alice-dm", 3600)
        await asyncio.sleep(1.3)
        # SQLite deletes on the sweep; Redis keys have expired by themselves.
        erased = await store.prune()
        if isinstance(store, SqliteStore):
            assert erased["turns"] == 1
            assert erased["sessions"] == 1
            assert erased["claims"] == 1
        assert await store.get_turn(done.turn_id) is None
        assert await store.find_delivered_turn(BOT, ALICE_DM, "s-1") is None
        assert await store.get_session(BOT, ALICE_DM) is None
        assert await store.claim_once("install:bot:a:1alice-dm", 3600)  # claimable again
        kept = await store.get_turn(running.turn_id)
        assert kept is not None
        assert kept.text == "secret question 2"
        assert [t.turn_id for t in await store.unfinished_turns()] == [running.turn_id]
    finally:
        await store.close()


async def test_redis_sets_a_ttl_on_every_key_a_finished_turn_leaves(
    redis_server: RedisServer,
) -> None:
    prefix = redis_server.new_prefix()
    store = RedisStore(redis_server.url(), prefix=prefix, retention=3600)
    await store.open()
    try:
        running = turn(2)
        await finish(store, turn(1), {"stream_id": "s-1"})
        await store.add_turn(running)
        await session(store, ALICE_DM)
        await store.claim_once("invoke:x", 86400)
        r = store._redis
        ttls = {str(k)[len(prefix) :]: await r.pttl(k) async for k in r.scan_iter(f"{prefix}*")}
        # Counters, and what recovery still needs: the conversation's index expires only once
        # nothing in it is unfinished.
        never = {"seq", "unfinished", f"turn:{running.turn_id}"}
        never |= {f"open:{BOT}:{ALICE_DM}", f"conv:{BOT}:{ALICE_DM}"}
        assert never <= set(ttls)
        for key, ttl in ttls.items():
            if key in never:
                assert ttl == -1, key
            else:
                assert 0 < ttl <= 3_600_000, key
        running.state = TurnState.FAILED
        await store.save_turn(running)
        assert 0 < await r.pttl(f"{prefix}conv:{BOT}:{ALICE_DM}") <= 3_600_000
    finally:
        await store.close()


async def test_an_existing_sqlite_file_is_converted_to_incremental_vacuum(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE leftover (x)")
        assert db.execute("PRAGMA auto_vacuum").fetchone() == (0,)
    store = SqliteStore(path)
    await store.open()
    await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA auto_vacuum").fetchone() == (2,)  # INCREMENTAL


# -- erasure ---------------------------------------------------------------------------------------


async def _populate(store: Store) -> dict[str, Turn]:
    turns = {
        "alice-dm": turn(1),
        "alice-dm-running": turn(2),
        "alice-group": turn(3, conv=GROUP, kind=ConversationType.GROUP_CHAT),
        "bob-group": turn(4, conv=GROUP, user=BOB, kind=ConversationType.GROUP_CHAT),
        "bob-dm": turn(5, conv=BOB_DM, user=BOB),
        "alice-other-bot": turn(6, bot=OTHER_BOT),
    }
    turns["alice-group"].session_id = SessionId("sess-group")
    for name, t in turns.items():
        if name == "alice-dm-running":
            await store.add_turn(t)
        else:
            await finish(store, t, {"stream_id": f"s-{name}"})
    for conv in (ALICE_DM, BOB_DM, GROUP):
        await session(store, conv)
    await session(store, ALICE_DM, OTHER_BOT)
    assert await store.claim_once(f"install:{BOT}:{ALICE_DM}", 3600)
    assert await store.claim_once(f"install:{BOT}:{BOB_DM}", 3600)
    return turns


async def test_forget_user_removes_their_turns_and_dm_mappings_and_keeps_others(
    store: Store,
) -> None:
    turns = await _populate(store)
    erased = await store.forget_user(ALICE.upper())  # Entra ids compare case-insensitively
    assert erased["turns"] == 4
    assert erased["sessions"] == 2
    assert erased["claims"] == 1
    # What the MSP must also erase in Neo: her DM's session, and the shared one she wrote in.
    assert erased.neo_sessions == {f"sess-{ALICE_DM}", "sess-group"}
    for name in ("alice-dm", "alice-dm-running", "alice-group", "alice-other-bot"):
        assert await store.get_turn(turns[name].turn_id) is None, name
    assert await store.get_session(BOT, ALICE_DM) is None
    assert await store.get_session(OTHER_BOT, ALICE_DM) is None
    assert await store.find_delivered_turn(BOT, ALICE_DM, "s-alice-dm") is None
    assert await store.unfinished_turns() == []
    # Bob, and the group chat's shared session, are untouched.
    for name in ("bob-group", "bob-dm"):
        assert await store.get_turn(turns[name].turn_id) is not None, name
    assert await store.get_session(BOT, GROUP) is not None
    assert await store.get_session(BOT, BOB_DM) is not None
    assert not await store.claim_once(f"install:{BOT}:{BOB_DM}", 3600)
    found = await store.find_delivered_turn(BOT, GROUP, "s-bob-group")
    assert found is not None
    assert found.turn_id == turns["bob-group"].turn_id
    assert [t.turn_id for t in await store.conversation_turns(BOT, GROUP)] == [
        turns["bob-group"].turn_id
    ]
    # Idempotent: nothing left to delete.
    assert (await store.forget_user(ALICE)).total() == 0


async def test_forget_conversation_of_one_bot_or_of_every_bot(store: Store) -> None:
    turns = await _populate(store)
    erased = await store.forget_conversation(ALICE_DM, BOT)
    assert erased["turns"] == 2
    assert erased["sessions"] == 1
    assert erased["claims"] == 1
    assert await store.get_turn(turns["alice-other-bot"].turn_id) is not None
    assert await store.get_session(OTHER_BOT, ALICE_DM) is not None
    erased = await store.forget_conversation(ALICE_DM)
    assert erased["turns"] == 1
    assert erased["sessions"] == 1
    assert await store.get_turn(turns["alice-other-bot"].turn_id) is None
    assert await store.get_turn(turns["bob-dm"].turn_id) is not None
    assert (await store.forget_conversation(ALICE_DM)).total() == 0
