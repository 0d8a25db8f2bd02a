"""The conversation worker: arrival order per conversation, concurrency across, bounded drain."""

from __future__ import annotations

import asyncio
import time

from relay.domain import (
    ActivityId,
    BotId,
    ConversationId,
    ConversationRef,
    ConversationType,
    Turn,
    TurnId,
    User,
)
from relay.worker import ConversationWorker


def _turn(conv: str, n: int) -> Turn:
    ref = ConversationRef(
        BotId("b"), "https://x/", ConversationId(conv), ConversationType.PERSONAL, None
    )
    return Turn(TurnId(f"{conv}-{n}"), ref, ActivityId(str(n)), User("29:u"), f"m{n}")


async def test_turns_of_a_conversation_run_in_order_and_conversations_in_parallel() -> None:
    log: list[str] = []
    running: set[str] = set()
    overlap: list[bool] = []

    async def run(turn: Turn) -> None:
        conv = turn.conversation_id
        overlap.append(conv in running)
        running.add(conv)
        await asyncio.sleep(0.02)
        log.append(turn.turn_id)
        running.discard(conv)

    worker = ConversationWorker(run)
    started = time.monotonic()
    for n in range(5):
        for conv in ("a", "b", "c"):
            assert worker.submit(_turn(conv, n))
    assert not worker.submit(_turn("a", 0))  # already queued: not run twice
    while worker.active:
        await asyncio.sleep(0.01)
    for conv in ("a", "b", "c"):
        assert [t for t in log if t.startswith(conv)] == [f"{conv}-{n}" for n in range(5)]
    assert not any(overlap)
    assert time.monotonic() - started < 0.02 * 15  # the three conversations overlapped


async def test_drain_waits_for_the_grace_then_cancels_and_refuses_new_turns() -> None:
    finished: list[str] = []
    cancelled: list[str] = []

    async def run(turn: Turn) -> None:
        try:
            await asyncio.sleep(0.05 if turn.conversation_id == "quick" else 30)
            finished.append(turn.turn_id)
        except asyncio.CancelledError:
            cancelled.append(turn.turn_id)
            raise

    worker = ConversationWorker(run)
    worker.submit(_turn("quick", 1))
    worker.submit(_turn("slow", 1))
    worker.submit(_turn("slow", 2))  # queued behind the slow one: never started
    await asyncio.sleep(0)
    started = time.monotonic()
    await worker.drain(0.3)
    assert time.monotonic() - started < 1.0
    assert finished == ["quick-1"]
    assert cancelled == ["slow-1"]
    assert worker.active == 0
    assert not worker.submit(_turn("late", 1))
