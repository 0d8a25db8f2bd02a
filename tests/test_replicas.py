"""Several replicas sharing one store: per-conversation order, and a replica's death.

First ``relay.replicas.ConversationLeases`` in one process — two "replicas" on one store (SQLite
and a real Redis) — then the real thing: two ``python -m relay serve`` processes on one real Redis
(tests/fakes/redis_server.py) under a key prefix of their own, with the Neo and Teams emulators in
the test. Consecutive messages of each conversation go to alternating replicas (two of them racing
each other), as Teams' load balancing may do, and one replica is SIGKILLed while it streams an
answer. What users see (the Teams connector emulator's record) must be every answer exactly once,
in the order the store journaled the messages (DESIGN.md invariants 2, 3 and 5). Leases are 2 s
here (``RELAY_LEASE_SECONDS``), so a dead replica's conversations resume within about 2-3 s.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from relay.devtools.neo_emulator_streams import TurnInput
from relay.domain import (
    ActivityId,
    BotId,
    ConversationId,
    ConversationRef,
    ConversationType,
    Turn,
    TurnState,
    User,
    make_turn_id,
)
from relay.errors import LeaseLost
from relay.replicas import ConversationLeases, lease_key
from relay.store import RedisStore, SqliteStore, Store
from relay.store.base import current_fence
from tests.fakes.harness import BOT_A, Harness, close_harness, make_harness
from tests.fakes.redis_server import RedisServer
from tests.fakes.relay_process import RelayProcess, relay_env
from tests.fakes.replica_report import lease_owners, stuck_report, undelivered
from tests.fakes.user_view import user_view
from tests.test_reliability import _answer

LEASE_SECONDS = 2.0
MESSAGES_PER_CONVERSATION = 3
# Group chats get one final message per answer; 1:1 chats get it streamed (relay.teams.stream).
CONVERSATIONS = [(f"19:replicas-{i}@thread.v2", "groupChat") for i in range(4)] + [
    (f"a:replicas-{i}", "personal") for i in (4, 5)
]


def _words(message: str) -> list[str]:
    tag = message.replace(" ", "")  # "c1 m2" -> "c1m2": every word of every answer is unique
    return [f"{tag}w{j:02d}" for j in range(16)]


def _script(turn: TurnInput) -> list[dict[str, object]]:
    # Which message it answers, then paragraphs of unique words (a stream shows whole
    # paragraphs), about 1 s of chunks in all.
    deltas = [f"Answer to: {turn.message}\n\n"]
    deltas += [w + ("\n\n" if j % 4 == 3 else " ") for j, w in enumerate(_words(turn.message))]
    return _answer(deltas)


def _first_seen(h: Harness, conv: str, needle: str) -> int:
    """Index of the first accepted activity in ``conv`` showing ``needle`` (-1: never)."""
    for index, rec in enumerate(h.teams.received):
        if rec.conversation_id == conv and rec.status < 300 and needle in str(rec.activity):
            return index
    return -1


# -- ConversationLeases in one process: two "replicas" on one store ------------------------------

BOT = BotId("00000000-0000-0000-0000-0000000000aa")
CONV = ConversationId("a:lease-conversation")


def _turn(n: int, conv: ConversationId = CONV) -> Turn:
    url = "https://smba.trafficmanager.net/emea/"
    ref = ConversationRef(BOT, url, conv, ConversationType.PERSONAL, None)
    activity = ActivityId(f"act-{n}")
    return Turn(make_turn_id(BOT, conv, activity), ref, activity, User("29:u"), f"message {n}")


@pytest.fixture(params=["sqlite", "redis"])
async def shared(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    """One store both replicas use (SQLite: in memory; Redis: a prefix of this test's own)."""
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        store: Store = RedisStore(server.url(), prefix=server.new_prefix())
    else:
        store = SqliteStore(":memory:")
    await store.open()
    try:
        yield store
    finally:
        await store.close()


class _Recorder:
    """A turn runner that records who ran what, can be held at a gate, and journals the outcome."""

    def __init__(self, store: Store, name: str, log: list[str]) -> None:
        self.store, self.name, self.log = store, name, log
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()

    async def __call__(self, turn: Turn) -> None:
        self.log.append(f"{self.name}:{turn.text}")
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        turn.state = TurnState.DELIVERED
        await self.store.save_turn(turn)  # fenced by the lease the runner is called under


async def test_turns_journaled_on_both_replicas_run_in_order_on_the_holder(shared: Store) -> None:
    log: list[str] = []
    run_a, run_b = _Recorder(shared, "A", log), _Recorder(shared, "B", log)
    a = ConversationLeases(shared, run_a, ttl=5, owner="replica-a")
    b = ConversationLeases(shared, run_b, ttl=5, owner="replica-b")
    first, second, third = _turn(1), _turn(2), _turn(3)
    await shared.add_turn(first)
    run_a.gate = asyncio.Event()
    holder = asyncio.create_task(a.run(first))
    await asyncio.wait_for(run_a.entered.wait(), 5)
    await shared.add_turn(second)  # journaled by B while A holds the conversation
    await shared.add_turn(third)
    await asyncio.wait_for(b.run(second), 5)  # B cannot lease: it leaves the turn to A
    assert log == ["A:message 1"]
    run_a.gate.set()
    await asyncio.wait_for(holder, 5)
    assert log == ["A:message 1", "A:message 2", "A:message 3"]
    assert await shared.unfinished_turns() == []
    # A let go: the conversation can be leased again at once.
    assert await shared.acquire_lease(lease_key(BOT, CONV), "replica-b", 5) is not None


async def test_a_lost_lease_cancels_the_turn_and_fences_off_its_writes(shared: Store) -> None:
    fences = []

    async def stalls(turn: Turn) -> None:
        fences.append(current_fence())
        await asyncio.sleep(30)  # far longer than the lease

    a = ConversationLeases(shared, stalls, ttl=0.3, owner="replica-a")
    turn = _turn(1)
    await shared.add_turn(turn)
    holder = asyncio.create_task(a.run(turn))
    while not fences:
        await asyncio.sleep(0.01)
    fence = fences[0]
    assert fence is not None
    assert fence.key == lease_key(BOT, CONV)
    # Another replica takes over (as if A had stalled past its lease).
    await shared.release_lease(fence.key, "replica-a", fence.token)
    assert await shared.acquire_lease(fence.key, "replica-b", 5) is not None
    started = time.monotonic()
    await asyncio.wait_for(holder, 2)  # A notices at its next renewal and stops, quietly
    assert time.monotonic() - started < 0.3
    with pytest.raises(LeaseLost):
        await shared.save_turn(turn, fence=fence)
    assert [t.turn_id for t in await shared.unfinished_turns()] == [turn.turn_id]


async def test_a_holder_that_cannot_renew_stops_before_its_lease_ends(
    shared: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered = asyncio.Event()

    async def stalls(turn: Turn) -> None:
        entered.set()
        await asyncio.sleep(30)

    async def unreachable(*args: object) -> bool:
        raise ConnectionError("store unreachable")

    a = ConversationLeases(shared, stalls, ttl=0.6, owner="replica-a")
    turn = _turn(1)
    await shared.add_turn(turn)
    holder = asyncio.create_task(a.run(turn))
    await asyncio.wait_for(entered.wait(), 5)
    started = time.monotonic()
    monkeypatch.setattr(shared, "renew_lease", unreachable)
    await asyncio.wait_for(holder, 2)
    # Gave up at ttl - ttl/3 after taking the lease, before anyone else could have it.
    assert time.monotonic() - started < 0.6
    monkeypatch.undo()
    assert await shared.acquire_lease(lease_key(BOT, CONV), "replica-b", 5) is not None  # released


async def test_the_sweep_resumes_a_conversation_whose_holder_died(shared: Store) -> None:
    log: list[str] = []
    b = ConversationLeases(shared, _Recorder(shared, "B", log), ttl=0.3, owner="replica-b")
    orphan, busy = _turn(1), _turn(2, ConversationId("a:busy"))
    await shared.add_turn(orphan)
    # A "dead" replica holds the orphan's conversation: B leaves the turn alone until it expires.
    assert await shared.acquire_lease(lease_key(BOT, CONV), "replica-dead", 0.3) is not None
    await b.run(orphan)
    assert log == []
    await asyncio.sleep(0.35)
    await shared.add_turn(busy)  # just journaled: its replica is about to run it, not a sweep
    submitted: list[Turn] = []
    assert await b.sweep(lambda t: submitted.append(t) is None) == 1
    assert [t.turn_id for t in submitted] == [orphan.turn_id]
    await b.run(submitted[0])
    assert log == ["B:message 1"]


async def test_a_conversation_that_never_moves_is_reported_once_with_its_lease_holder(
    shared: Store, caplog: pytest.LogCaptureFixture
) -> None:
    a = ConversationLeases(shared, _Recorder(shared, "A", []), ttl=0.2, owner="replica-a")
    stuck = _turn(1)
    await shared.add_turn(stuck)
    # Another replica holds the conversation and renews, but its turn never changes.
    assert await shared.acquire_lease(lease_key(BOT, CONV), "replica-stuck", 60) is not None
    assert await shared.lease_holder(lease_key(BOT, CONV)) == "replica-stuck"
    taken: list[Turn] = []
    await asyncio.sleep(0.25)  # one lease period: abandoned-looking, not yet stalled
    with caplog.at_level(logging.WARNING, logger="relay.replicas"):
        assert await a.sweep(lambda t: taken.append(t) is None) == 1
        assert "stalled" not in caplog.text
        await asyncio.sleep(0.6)  # four lease periods in all
        assert await a.sweep(lambda t: taken.append(t) is None) == 1
        assert await a.sweep(lambda t: taken.append(t) is None) == 1
    stalls = [r.getMessage() for r in caplog.records if "stalled" in r.getMessage()]
    assert len(stalls) == 1, stalls  # once per turn, not once per sweep
    assert stuck.turn_id in stalls[0]
    assert "lease held by replica-stuck" in stalls[0]
    # Refused by the worker (it runs or waits here already): not this replica's to report.
    caplog.clear()
    other = ConversationLeases(shared, _Recorder(shared, "B", []), ttl=0.1, owner="replica-b")
    with caplog.at_level(logging.WARNING, logger="relay.replicas"):
        assert await other.sweep(lambda t: False) == 0
    assert "stalled" not in caplog.text


async def _wait(predicate: object, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        result = predicate() if callable(predicate) else predicate
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


async def test_two_replicas_one_killed_mid_answer_every_answer_once_in_order(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    h = await make_harness(tmp_path, bots=[BOT_A])
    await h.stop_relay()  # only the emulators are used; the relays are the two processes below
    h.neo.script = _script
    h.neo.chunk_delay = 0.15  # about 3 s per answer: streams show text before the final
    prefix = redis_server.new_prefix()
    env = relay_env(
        h,
        RELAY_DATABASE_URL=redis_server.url(prefix=prefix),
        RELAY_LEASE_SECONDS=str(LEASE_SECONDS),
        RELAY_LOG_LEVEL="INFO",
    )
    client = aioredis.Redis(port=redis_server.port, decode_responses=True)
    store = RedisStore(redis_server.url(), prefix=prefix)
    await store.open()
    replicas: list[RelayProcess] = []
    try:
        replicas.append(await RelayProcess.start(env, tmp_path / "replica-a.log"))
        replicas.append(await RelayProcess.start(env, tmp_path / "replica-b.log"))
        first, second = replicas
        conversations = [conv for conv, _ in CONVERSATIONS]

        sent: dict[str, str] = {}  # activity id -> text (a finished turn's journal keeps no text)

        async def deliver(i: int, k: int) -> None:
            conv, kind = CONVERSATIONS[i]
            act = h.activity(BOT_A, f"c{i} m{k}", conversation_id=conv, conversation_type=kind)
            sent[act["id"]] = f"c{i} m{k}"
            url = (first if (i + k) % 2 == 0 else second).url  # next message: other replica
            async with aiohttp.ClientSession() as http:
                token = h.issuer.sign(BOT_A.app_id, act["serviceUrl"])
                headers = {"Authorization": f"Bearer {token}"}
                async with http.post(f"{url}/api/messages", json=act, headers=headers) as resp:
                    assert resp.status == 200

        # m0 and m1 of each conversation race each other to the two replicas; m2 comes after.
        await asyncio.gather(*(deliver(i, k) for i in range(len(conversations)) for k in (0, 1)))
        await asyncio.gather(*(deliver(i, 2) for i in range(len(conversations))))

        # Kill a replica while a 1:1 answer it streams is half on the user's screen (and, with
        # it, whatever else that replica holds: the race decides who leases which conversation).
        victims: list[RelayProcess] = []

        async def text_half_shown() -> bool:
            owners = await lease_owners(client, prefix)
            for stream in list(h.teams._streams.values()):  # the emulator's open streams
                owner = owners.get(f"conv:{BOT_A.app_id}:{stream.conversation_id}")
                if owner and stream.text and not stream.finished:
                    victims.extend(r for r in replicas if f":{r.proc.pid}:" in owner)
                    return True
            return False

        await _wait(text_half_shown, 30, "streamed text of an unfinished answer")
        a, b = victims[0], next(r for r in replicas if r is not victims[0])
        a_owner = f":{a.proc.pid}:"
        held_by_a = {
            key.split(":", 2)[2]
            for key, owner in (await lease_owners(client, prefix)).items()
            if a_owner in owner
        }
        await a.kill()  # SIGKILL: no shutdown, no lease release
        killed_at = time.monotonic()
        shown_before = {c: len(user_view(h.teams, c)) for c in held_by_a}

        pending: list[str] = []  # what is not delivered yet, for the failure message

        async def all_delivered() -> bool:
            pending[:] = await undelivered(
                store, BOT_A.app_id, conversations, MESSAGES_PER_CONVERSATION
            )
            return not pending

        try:
            await _wait(all_delivered, 60, "every answer (replica B alone)")
        except AssertionError as exc:
            report = await stuck_report(pending, [b], redis_port=redis_server.port, prefix=prefix)
            raise AssertionError(f"{exc}\n{report}") from None
        all_done = time.monotonic() - killed_at
        recovered = [
            r.at - killed_at
            for r in h.teams.received
            if r.conversation_id in held_by_a and r.at > killed_at
        ]
        await asyncio.sleep(LEASE_SECONDS + 1)  # anything doubled would show up by now
        print(
            f"\nthe killed replica held {len(held_by_a)} conversation(s) (bubbles shown: "
            f"{shown_before}); first post to them {min(recovered, default=-1):.2f} s after the "
            f"kill; every answer in {all_done:.2f} s"
        )

        for conv in conversations:
            # Arrival order is the order the store journaled them in, whichever replica did.
            turns = await store.conversation_turns(BOT_A.app_id, conv)  # type: ignore[arg-type]
            journaled = [sent[t.activity_id] for t in turns]
            assert sorted(m.split()[-1] for m in journaled) == ["m0", "m1", "m2"]
            headers = [f"Answer to: {m}" for m in journaled]
            seen = [_first_seen(h, conv, header) for header in headers]
            assert -1 not in seen, (conv, journaled, seen)
            assert seen == sorted(seen), (conv, journaled, seen)
            # Every word of every answer exactly once on the user's screen: none lost, none twice.
            everything = "\n".join(user_view(h.teams, conv))
            for message in journaled:
                for word in [f"Answer to: {message}", *_words(message)]:
                    assert everything.count(word) == 1, (conv, word, user_view(h.teams, conv))
        assert held_by_a, "the killed replica held no conversation"
        assert recovered, "nothing was sent to the killed replica's conversations afterwards"
        assert min(recovered) < LEASE_SECONDS * 3  # the lease expiry, plus one sweep
        assert len(h.neo.posted_messages) == len(conversations) * MESSAGES_PER_CONVERSATION
        # Includes "second concurrent stream in one chat": the replica that resumes a personal
        # chat's turn closes the dead replica's stream first (relay.teams.stream).
        assert h.teams.violations == []
        assert "Traceback" not in b.log(), b.log()[-3000:]
    finally:
        for replica in replicas:
            await replica.kill()
        await store.close()
        await client.aclose()
        await close_harness(h)
