"""Admission control: past RELAY_MAX_ACTIVE_TURNS turns wait journaled, users hear they are queued.

The first test drives the gate with the real worker and a real SQLite journal: conversations past
the limit hold no task and no turn in memory, only a key, and run later in arrival order with every
turn once. The second is end to end (webhook → journal → Neo emulator → Teams emulator): a user
whose turn waits sees the "Busy" progress bar, then the answer finishes that same stream.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from relay.admission import NOTICES_IN_FLIGHT, AdmissionGate
from relay.app import ADMISSION
from relay.domain import (
    ActivityId,
    BotId,
    ConversationId,
    ConversationRef,
    ConversationType,
    Turn,
    TurnId,
    TurnState,
    User,
)
from relay.replicas import ConversationLeases
from relay.start_slots import START_HOLD, StartSlots, first_chunk
from relay.store.sqlite import SqliteStore
from relay.teams.busy import BUSY_TEXT
from relay.worker import ConversationWorker
from tests.fakes.harness import BOT_A, close_harness, make_harness
from tests.fakes.user_view import assert_each_once, user_view
from tests.test_reliability import _answer, _words


def _turn(conv: str, n: int) -> Turn:
    ref = ConversationRef(
        BotId("b"), "https://x/", ConversationId(conv), ConversationType.PERSONAL, None
    )
    now = time.time()
    return Turn(
        TurnId(f"{conv}-{n}"),
        ref,
        ActivityId(str(n)),
        User("29:u"),
        f"m{n}",
        created_at=now,
        updated_at=now,
    )


async def test_turns_past_the_limit_wait_in_the_journal_and_run_once_in_order(
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path / "j.db")
    await store.open()
    log: list[str] = []
    running: set[str] = set()
    peak = 0
    go = asyncio.Event()

    async def run(turn: Turn) -> None:
        nonlocal peak
        running.add(turn.conversation_id)
        peak = max(peak, len(running))
        await go.wait()
        await asyncio.sleep(0.01)
        log.append(turn.turn_id)
        turn.state = TurnState.DELIVERED  # what the pipeline journals at the end
        await store.save_turn(turn)
        running.discard(turn.conversation_id)

    worker = ConversationWorker(run)
    gate = AdmissionGate(worker, store.unfinished_conversation_turns, max_active=2)
    worker.on_idle = gate.released
    try:
        for n in range(3):
            for conv in ("a", "b", "c", "d", "e"):
                turn = _turn(conv, n)
                assert await store.add_turn(turn)  # what the webhook does first
                assert gate.submit(turn)
        await asyncio.sleep(0.05)
        # Two conversations run; three wait as keys only: no task, no turn held by the worker.
        assert worker.active == 2
        assert gate.waiting == 3
        assert sorted(worker._queues) == [(BotId("b"), ConversationId(c)) for c in ("a", "b")]
        go.set()
        end = time.monotonic() + 10
        while len(log) < 15 and time.monotonic() < end:
            await asyncio.sleep(0.02)
        assert peak == 2
        assert len(log) == len(set(log)) == 15  # each turn once
        for conv in "abcde":
            assert [t for t in log if t.startswith(conv)] == [f"{conv}-{n}" for n in range(3)]
        # Waiting conversations ran in arrival order after the first two.
        firsts = [log.index(f"{c}-0") for c in "cde"]
        assert firsts == sorted(firsts)
        while worker.active and time.monotonic() < end:  # the last turns log, then save
            await asyncio.sleep(0.01)
        assert await store.unfinished_turns() == []
    finally:
        await gate.close()
        await worker.drain(1)
        await store.close()


async def test_a_queued_user_sees_busy_then_the_answer_on_the_same_stream(
    tmp_path: Path,
) -> None:
    h = await make_harness(
        tmp_path,
        max_active_turns=1,
        busy_notice_after=0.3,
        admission_max_lag_ms=10_000,  # only the count limits here (a loaded CI machine lags)
    )
    try:
        words = _words(12)
        h.neo.script = lambda turn: _answer(words)
        h.neo.chunk_delay = 0.1  # the first answer holds the only slot for ~1.2 s
        first = h.activity(BOT_A, "first")
        second = h.activity(BOT_A, "second")
        c1, c2 = first["conversation"]["id"], second["conversation"]["id"]
        assert (await h.deliver(first, bot=BOT_A)).status == 200
        await h.wait_for(lambda: bool(h.teams.stream_requests(c1)), 10, "the first stream")
        assert (await h.deliver(second, bot=BOT_A)).status == 200
        gate = h.app[ADMISSION]
        assert gate.waiting == 1
        (waiting,) = await h.components.store.unfinished_conversation_turns(
            BOT_A.app_id,  # type: ignore[arg-type]
            ConversationId(c2),
        )
        assert waiting.state is TurnState.RECEIVED  # journaled, not started
        await h.wait_for(lambda: bool(h.teams.stream_requests(c2)), 10, "the busy notice")
        busy = h.teams.stream_requests(c2)[0].activity
        assert busy["text"] == BUSY_TEXT
        assert busy["entities"][0]["streamType"] == "informative"
        await h.wait_for(lambda: bool(h.teams.messages(c2)), 20, "the queued answer")
        await h.wait_idle(timeout=15)
        for conv in (c1, c2):
            assert_each_once(user_view(h.teams, conv), [w.strip() for w in words])
        finals = [
            r.activity for r in h.teams.stream_requests(c2) if r.activity["type"] == "message"
        ]
        stream_ids = {
            e.get("streamId")
            for r in h.teams.stream_requests(c2)[1:]
            for e in r.activity["entities"]
            if e["type"] == "streaminfo"
        }
        assert len(finals) == 1
        assert len(stream_ids) == 1  # the answer finished the stream the busy notice opened
        assert h.teams.violations == []
        turns = await h.components.store.conversation_turns(
            BOT_A.app_id,  # type: ignore[arg-type]
            ConversationId(c2),
        )
        assert [t.state for t in turns] == [TurnState.DELIVERED]
        assert gate.waiting == 0
    finally:
        await close_harness(h)


async def test_a_burst_of_starts_waits_journaled_and_each_first_chunk_frees_a_slot(
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path / "j.db")
    await store.open()
    starting: set[str] = set()
    peak_starting = 0
    chunks, finish = asyncio.Event(), asyncio.Event()
    done: list[str] = []

    async def run(turn: Turn) -> None:
        nonlocal peak_starting
        starting.add(turn.conversation_id)
        peak_starting = max(peak_starting, len(starting))
        await chunks.wait()  # Neo's first chunk
        starting.discard(turn.conversation_id)
        first_chunk()
        await finish.wait()  # the rest of the answer streams
        turn.state = TurnState.DELIVERED
        await store.save_turn(turn)
        done.append(turn.turn_id)

    starts = StartSlots(2, hold=60)
    worker = ConversationWorker(run, starts=starts)
    gate = AdmissionGate(worker, store.unfinished_conversation_turns, max_active=100, starts=starts)
    worker.on_idle = gate.released
    try:
        for conv in "abcdef":
            turn = _turn(conv, 0)
            assert await store.add_turn(turn)
            assert gate.submit(turn)
        await asyncio.sleep(0.05)
        # Two start; four wait as keys (journaled), though 100 could be active.
        assert (worker.active, gate.waiting, starts.held) == (2, 4, 2)
        chunks.set()
        end = time.monotonic() + 10
        while worker.active < 6 and time.monotonic() < end:
            await asyncio.sleep(0.02)
        # Every turn is past its first chunk and still streaming: the start slots are free.
        assert (worker.active, gate.waiting, starts.held) == (6, 0, 0)
        assert peak_starting == 2
        finish.set()
        while len(done) < 6 and time.monotonic() < end:
            await asyncio.sleep(0.02)
        assert sorted(done) == [f"{c}-0" for c in "abcdef"]
        assert await store.unfinished_turns() == []
    finally:
        await gate.close()
        await worker.drain(1)
        await store.close()


async def test_a_start_slot_frees_itself_when_no_chunk_comes(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "j.db")
    await store.open()
    hang = asyncio.Event()

    async def run(turn: Turn) -> None:
        await hang.wait()  # a Neo that sends nothing

    starts = StartSlots(1, hold=0.2)
    worker = ConversationWorker(run, starts=starts)
    gate = AdmissionGate(worker, store.unfinished_conversation_turns, max_active=100, starts=starts)
    worker.on_idle = gate.released
    try:
        for conv in "ab":
            turn = _turn(conv, 0)
            assert await store.add_turn(turn)
            assert gate.submit(turn)
        await asyncio.sleep(0.05)
        assert (worker.active, gate.waiting) == (1, 1)
        await asyncio.sleep(0.4)
        assert (worker.active, gate.waiting) == (2, 0)
    finally:
        hang.set()
        await gate.close()
        await worker.drain(1)
        await store.close()
    assert starts.held == 0


async def test_the_next_stream_starts_at_the_first_chunk_of_the_one_before(
    tmp_path: Path,
) -> None:
    """End to end: one start slot, two conversations; the second starts while the first still
    streams, so the real pipeline freed the slot at its first chunk (not at its end)."""
    h = await make_harness(
        tmp_path, max_starting_turns=1, admission_max_lag_ms=10_000, busy_notice_after=60
    )
    try:
        words = _words(40)
        h.neo.script = lambda turn: _answer(words)
        h.neo.chunk_delay = 0.1  # each answer streams for ~4 s
        first = h.activity(BOT_A, "first")
        second = h.activity(BOT_A, "second")
        c1, c2 = first["conversation"]["id"], second["conversation"]["id"]
        assert (await h.deliver(first, bot=BOT_A)).status == 200
        assert (await h.deliver(second, bot=BOT_A)).status == 200
        await h.wait_for(lambda: bool(h.teams.stream_requests(c2)), 10, "the second stream")
        assert not h.teams.messages(c1)  # the first answer is not finished yet
        # Each run opens its stream as it starts: the second did not wait out the slot's 2 s hold.
        gap = h.teams.stream_requests(c2)[0].at - h.teams.stream_requests(c1)[0].at
        assert gap < START_HOLD * 0.75
        await h.wait_idle(timeout=20)
        for conv in (c1, c2):
            assert_each_once(user_view(h.teams, conv), [w.strip() for w in words])
    finally:
        await close_harness(h)


async def test_start_slots_hand_over_in_order_past_a_cancelled_waiter() -> None:
    freed: list[int] = []
    starts = StartSlots(1, hold=60)
    starts.on_free = lambda: freed.append(starts.held)
    first = starts.try_take()
    assert first is not None
    assert starts.full
    assert starts.try_take() is None
    second = asyncio.ensure_future(starts.take())
    third = asyncio.ensure_future(starts.take())
    await asyncio.sleep(0)
    second.cancel()
    await asyncio.gather(second, return_exceptions=True)
    first.release()
    first.release()  # idempotent: the slot is handed over once
    slot = await asyncio.wait_for(third, 1)
    assert (starts.held, freed) == (1, [])  # handed over, never freed in between
    slot.release()
    assert (starts.held, freed) == (0, [0])


async def test_busy_notices_go_out_a_few_at_a_time_oldest_first(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "j.db")
    await store.open()
    hang = asyncio.Event()
    sent: list[TurnId] = []
    in_flight = peak = 0

    class SlowNotice:
        async def queued(self, turn_id: TurnId, ref: ConversationRef) -> None:
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(0.02)  # a Teams round-trip
            sent.append(turn_id)
            in_flight -= 1

    async def run(turn: Turn) -> None:
        await hang.wait()

    worker = ConversationWorker(run)
    gate = AdmissionGate(
        worker,
        store.unfinished_conversation_turns,
        max_active=1,
        notifier=SlowNotice(),
        busy_after=0.05,
    )
    worker.on_idle = gate.released
    convs = [f"c{i:02}" for i in range(21)]
    try:
        for conv in convs:
            turn = _turn(conv, 0)
            assert await store.add_turn(turn)
            assert gate.submit(turn)
        end = time.monotonic() + 10
        while len(sent) < 20 and time.monotonic() < end:
            await asyncio.sleep(0.02)
        assert sent == [TurnId(f"{c}-0") for c in convs[1:]]  # all who wait, oldest first
        assert peak == NOTICES_IN_FLIGHT
    finally:
        hang.set()
        await gate.close()
        await worker.drain(1)
        await store.close()


async def test_the_lease_sweep_does_not_resubmit_conversations_the_gate_already_holds(
    tmp_path: Path,
) -> None:
    """A conversation running here, or waiting journaled for a slot (or for Neo's budget), looks
    abandoned to the sweep when its turns have not changed for a lease period; the gate already
    has it, so the sweep (through ``adopt``) must count and log nothing as resubmitted."""
    store = SqliteStore(tmp_path / "j.db", clock=lambda: time.time() - 60)  # journaled long ago
    await store.open()
    hang = asyncio.Event()

    async def run(turn: Turn) -> None:
        await hang.wait()

    worker = ConversationWorker(run)
    gate = AdmissionGate(worker, store.unfinished_conversation_turns, max_active=1)
    worker.on_idle = gate.released
    leases = ConversationLeases(store, run, ttl=0.3, owner="replica-a")
    try:
        for conv in "ab":
            turn = _turn(conv, 0)
            assert await store.add_turn(turn)
            assert gate.submit(turn)
        assert (worker.active, gate.waiting) == (1, 1)
        assert await leases.sweep(gate.adopt) == 0
        assert (worker.active, gate.waiting) == (1, 1)
        # A conversation only the journal knows (its replica died) is taken up, and counted.
        assert await store.add_turn(_turn("c", 0))
        assert await leases.sweep(gate.adopt) == 1
        assert (worker.active, gate.waiting) == (1, 2)
    finally:
        hang.set()
        await gate.close()
        await worker.drain(1)
        await store.close()
