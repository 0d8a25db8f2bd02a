"""A relay on its own SQLite file runs turns without conversation leases (relay/app.py).

With one process per database there is no other replica to hand a conversation to, so a lease
could only ever hurt: under CPU overload its renewal came late and the holder cancelled its own
turn (README "Benchmarks": 613 turns failed at 200 activities/s). This starves the event loop for
longer than a whole lease period in the middle of a streamed answer and checks that the turn still
ends once, on its first attempt.
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from relay.domain import ConversationId, TurnState
from tests.fakes.harness import BOT_A, close_harness, make_harness
from tests.fakes.user_view import assert_each_once, user_view
from tests.test_reliability import _answer, _words


async def test_a_starved_event_loop_does_not_cancel_a_sqlite_turn(
    tmp_path: object, caplog: pytest.LogCaptureFixture
) -> None:
    h = await make_harness(tmp_path, RELAY_LEASE_SECONDS="0.6")  # type: ignore[arg-type]
    try:
        words = _words(20)
        deltas = [w if i % 5 != 4 else w.strip() + "\n\n" for i, w in enumerate(words)]
        h.neo.script = lambda turn: _answer(deltas)
        h.neo.chunk_delay = 0.05
        act = h.activity(BOT_A, "a slow machine")
        conv = act["conversation"]["id"]
        with caplog.at_level(logging.INFO):
            assert (await h.deliver(act, bot=BOT_A)).status == 200
            await asyncio.sleep(0.3)  # the turn is running
            time.sleep(1.0)  # the whole loop starved: longer than the lease period (0.6 s)
            await h.wait_for(lambda: h.teams.messages(conv), 15, "the answer")
            await h.wait_idle(timeout=15)
        assert "lost mid-turn" not in caplog.text
        turns = await h.components.store.conversation_turns(BOT_A.app_id, ConversationId(conv))  # type: ignore[arg-type]
        assert [(t.state, t.attempts) for t in turns] == [(TurnState.DELIVERED, 1)]
        assert_each_once(user_view(h.teams, conv), [w.strip() for w in words])
    finally:
        await close_harness(h)
