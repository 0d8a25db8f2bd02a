"""End to end: a turn shows only its own events, even while a stopped turn keeps producing.

The Neo emulator runs a session's turns one after another (a per-session workflow queue), so the
turn the user stopped goes on writing into the session stream after the next turn's
``since_cursor``. Both scoping assumptions of ``relay.neo.events`` are driven: chunks that name
their ``chat_turn_id``, and plain chunks where the new turn's ``start`` is the boundary.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from relay.devtools.neo_emulator_streams import TurnInput
from relay.domain import BotId, ConversationId, TurnState
from tests.fakes.harness import BOT_A, Harness, answer_script

OLD_WORDS = 60


def _script(turn: TurnInput) -> list[dict[str, object]]:
    if turn.message != "tell me a long story":
        return answer_script(turn)
    deltas = [
        {"type": "text-delta", "id": "t", "delta": f"old-{i} " + ("\n\n" if i % 5 == 4 else "")}
        for i in range(OLD_WORDS)
    ]
    return [
        {"type": "start"},
        {"type": "text-start", "id": "t"},
        *deltas,
        {"type": "text-end", "id": "t"},
        {"type": "finish"},
    ]


def _streamed_texts(h: Harness, conv: str) -> list[str]:
    return [r.activity.get("text") or "" for r in h.teams.stream_requests(conv) if r.status < 300]


@pytest.mark.parametrize("name_turns", [False, True], ids=["start-chunk", "chat-turn-id"])
async def test_stop_then_a_new_question_never_shows_the_old_answer(
    harness: Harness, name_turns: bool
) -> None:
    h = harness
    conv = f"a:scope-{name_turns}"
    h.neo.script = _script
    h.neo.chunk_delay = 0.05  # the old answer takes ~3 s to write
    h.neo.name_turns = name_turns
    await h.deliver(h.activity(BOT_A, "tell me a long story", conversation_id=conv), bot=BOT_A)
    await h.wait_for(
        lambda: sum("old-" in t for t in _streamed_texts(h, conv)) >= 2,
        what="two streamed updates of the old answer",
    )
    second = h.teams.stream_requests(conv)[1].activity
    [stream_id] = [e["streamId"] for e in second["entities"] if e.get("type") == "streaminfo"]
    h.teams.press_stop(stream_id)
    bot, cid = BotId(BOT_A.app_id), ConversationId(conv)

    async def old_turn_state() -> TurnState:
        [old] = await h.components.store.conversation_turns(bot, cid)
        return old.state

    end = time.monotonic() + 10
    while await old_turn_state() is not TurnState.CANCELLED:
        assert time.monotonic() < end, "the old turn did not end after Stop"
        await asyncio.sleep(0.05)
    sent_after_stop = len(h.teams.received)
    # The old turn is still being written by Neo when the new question arrives.
    session = next(iter(h.neo.sessions.values()))
    assert session.turn is not None
    assert not session.turn.done()
    await h.deliver(h.activity(BOT_A, "and now?", conversation_id=conv), bot=BOT_A)
    await h.wait_for(
        lambda: any(t.startswith("Answer to: and now?") for t in h.teams.visible_text(conv)),
        timeout=15,
        what="the new answer",
    )
    await h.wait_idle()
    later = [r.activity for r in h.teams.received[sent_after_stop:] if r.status < 300]
    assert later, "the new answer was sent"
    for activity in later:
        assert "old-" not in (activity.get("text") or ""), activity
    assert h.teams.visible_text(conv)[-1] == "Answer to: and now?"
    turns = await h.components.store.conversation_turns(bot, cid)
    assert [t.state for t in turns] == [TurnState.CANCELLED, TurnState.DELIVERED]
    assert turns[0].last_event_id  # the stopped turn's last event id is journaled too
    assert h.teams.violations == []
