"""End to end: approval cards mid-turn, and the agent's continuation after the decision.

The Neo emulator pauses a turn on its TIL part until the decision arrives, in both plausible ways
(``relay.devtools.neo_emulator_lifecycle``): "hold" keeps the turn open, "end" finishes it with the
request pending and continues as a new message after the decision.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from relay.approvals import NOT_SHOWN_TEXT
from relay.devtools.neo_emulator_streams import TurnInput
from relay.domain import BotId, ConversationId, TurnState
from tests.fakes.harness import BOT_A, Harness, answer_script, close_harness, make_harness
from tests.fakes.user_view import posted_approval_cards

TECH_AAD = "00000000-0000-0000-0000-0000000000a1"  # the harness's sender
BEFORE = "I'll restart the print spooler once a technician approves."
AFTER = "Done: the spooler on SRV-01 was restarted and the queue is moving again."


def _til_script(turn: TurnInput) -> list[dict[str, object]]:
    return [
        {"type": "start"},
        {"type": "text-start", "id": "t"},
        {"type": "text-delta", "id": "t", "delta": BEFORE},
        {"type": "text-end", "id": "t"},
        {"type": "data-til", "id": "til-42", "data": {"til_request_id": 42, "title": "Restart"}},
        {"type": "text-start", "id": "t2"},
        {"type": "text-delta", "id": "t2", "delta": AFTER},
        {"type": "text-end", "id": "t2"},
        {"type": "finish"},
    ]


def _cards(h: Harness, conv: str) -> list[dict[str, Any]]:
    return posted_approval_cards(h.teams, conv)


def _click(
    h: Harness, conv: str, card_id: str | None, til_id: str, activity_id: str
) -> dict[str, Any]:
    act = h.activity(BOT_A, "", conversation_id=conv, mention=False, activity_id=activity_id)
    del act["text"]
    act.update(replyToId=card_id, value={"action": "approve", "til_request_id": til_id})
    return act


def _decisions(h: Harness) -> list[Any]:
    return [r for r in h.neo.requests if r.path.endswith("/decision")]


async def _card_within_two_seconds(h: Harness, conv: str) -> dict[str, Any]:
    h.neo.script = _til_script
    await h.deliver(h.activity(BOT_A, "the printer is stuck", conversation_id=conv), bot=BOT_A)
    started = time.monotonic()
    await h.wait_for(lambda: bool(_cards(h, conv)), timeout=2.0, what="the card within 2 s")
    assert time.monotonic() - started < 2.0
    [card] = _cards(h, conv)
    assert AFTER not in json.dumps(h.teams.received[-1].activity)
    return card


async def _approve_and_see_the_continuation(h: Harness, conv: str, card: dict[str, Any]) -> None:
    resp = await h.deliver(_click(h, conv, card.get("_id"), "42", "click-1"), bot=BOT_A)
    assert resp.status == 200
    await h.wait_for(lambda: bool(h.neo.til_decisions), what="the decision")
    [decision] = _decisions(h)
    assert decision.json["acting_end_user"] == TECH_AAD
    assert decision.json["action"] == "approve"
    await h.wait_for(
        lambda: any(AFTER in t for t in h.teams.visible_text(conv)),
        timeout=10,
        what="the continuation",
    )
    await h.wait_idle()
    texts = h.teams.visible_text(conv)
    first = next(i for i, t in enumerate(texts) if BEFORE in t)
    after = next(i for i, t in enumerate(texts) if AFTER in t)
    assert first < after  # a new message, after the answer and its card
    assert BEFORE not in texts[after]  # the continuation shows only what came after the card
    assert sum(AFTER in t for t in texts) == 1
    assert h.teams.violations == []


async def test_a_paused_turn_shows_its_card_at_once_and_its_continuation(
    harness: Harness,
) -> None:
    h = harness
    conv = "a:til-hold"
    h.neo.til_pause = "hold"
    card = await _card_within_two_seconds(h, conv)
    # The turn is still open at Neo, waiting for the decision.
    [turn] = await h.components.store.conversation_turns(BotId(BOT_A.app_id), ConversationId(conv))
    assert not turn.state.is_final
    await _approve_and_see_the_continuation(h, conv, card)
    [turn] = await h.components.store.conversation_turns(BotId(BOT_A.app_id), ConversationId(conv))
    assert turn.state is TurnState.DELIVERED


async def test_a_turn_that_ended_pending_gets_its_continuation_as_a_new_message(
    harness: Harness,
) -> None:
    h = harness
    conv = "19:til-end@thread.v2"
    h.neo.til_pause = "end"
    h.neo.script = _til_script
    group = {"conversation_id": conv, "conversation_type": "groupChat"}
    await h.deliver(h.activity(BOT_A, "the printer is stuck", **group), bot=BOT_A)
    await h.wait_for(lambda: bool(_cards(h, conv)), timeout=2.0, what="the card within 2 s")
    await h.wait_idle()
    [turn] = await h.components.store.conversation_turns(BotId(BOT_A.app_id), ConversationId(conv))
    assert turn.state is TurnState.DELIVERED  # the turn ended with the request pending
    [card] = _cards(h, conv)
    click = _click(h, conv, card.get("_id"), "42", "click-e")
    click["conversation"].update(conversationType="groupChat", isGroup=True)
    await h.deliver(click, bot=BOT_A)
    await h.wait_for(
        lambda: any(AFTER in (m.get("text") or "") for m in h.teams.messages(conv)),
        timeout=10,
        what="the continuation as a new message",
    )
    await h.wait_idle()
    texts = h.teams.visible_text(conv)  # what the user sees, the card's update applied in place
    answer = next(i for i, t in enumerate(texts) if BEFORE in t)
    after = next(i for i, t in enumerate(texts) if AFTER in t)
    assert answer < after  # a new message, below the answer (whose text the decision kept)
    assert BEFORE not in texts[after]
    assert sum(AFTER in t for t in texts) == 1
    assert _decisions(h)[0].json["acting_end_user"] == TECH_AAD
    assert len(h.neo.posted_messages) == 1  # the click posted no turn
    assert h.teams.violations == []


async def test_a_click_for_a_til_never_shown_calls_neo_not_at_all(harness: Harness) -> None:
    h = harness
    conv = "a:til-forged"
    h.neo.til_pause = "hold"
    card = await _card_within_two_seconds(h, conv)
    # A forged id in the same chat, and the real card's id replayed into another chat.
    await h.deliver(_click(h, conv, card.get("_id"), "999", "forged-1"), bot=BOT_A)
    other = "a:til-other-chat"
    await h.deliver(_click(h, other, card.get("_id"), "42", "forged-2"), bot=BOT_A)
    await h.wait_for(
        lambda: (
            NOT_SHOWN_TEXT in h.teams.visible_text(conv)
            and NOT_SHOWN_TEXT in h.teams.visible_text(other)
        ),
        what="the two refusals",
    )
    assert _decisions(h) == []
    assert h.neo.til_decisions == {}
    # The real click still works afterwards.
    await _approve_and_see_the_continuation(h, conv, card)


async def test_a_turn_waiting_on_approval_does_not_block_the_conversation(
    harness: Harness,
) -> None:
    """The tail hands a paused turn over; the next question is answered without the old
    turn's continuation, which arrives on its own after the decision."""
    h = harness
    conv = "a:til-handoff"
    h.neo.til_pause = "hold"
    h.components.pipeline.handoff_seconds = 0.5

    def script(turn: TurnInput) -> list[dict[str, object]]:
        return _til_script(turn) if turn.message == "the printer is stuck" else answer_script(turn)

    h.neo.script = script
    await h.deliver(h.activity(BOT_A, "the printer is stuck", conversation_id=conv), bot=BOT_A)
    await h.wait_for(lambda: bool(_cards(h, conv)), timeout=2.0, what="the card")
    bot, cid = BotId(BOT_A.app_id), ConversationId(conv)
    await h.wait_idle()
    [first] = await h.components.store.conversation_turns(bot, cid)
    assert first.state is TurnState.DELIVERED  # handed over while Neo still waits
    # Neo queues the next question behind the paused turn (one session, one queue).
    await h.deliver(h.activity(BOT_A, "is the VPN up?", conversation_id=conv), bot=BOT_A)
    await h.wait_for(
        lambda: sum(r.path.endswith("/events") for r in h.neo.requests) == 2,
        what="the next question posted and tailed before the decision",
    )
    [card] = _cards(h, conv)
    await h.deliver(_click(h, conv, card.get("_id"), "42", "click-h"), bot=BOT_A)
    await h.wait_for(
        lambda: (
            any(t.startswith("Answer to: is the VPN up?") for t in h.teams.visible_text(conv))
            and any(AFTER in t for t in h.teams.visible_text(conv))
        ),
        timeout=10,
        what="the continuation and the next answer",
    )
    await h.wait_idle()
    texts = h.teams.visible_text(conv)
    assert sum(AFTER in t for t in texts) == 1
    [answer] = [t for t in texts if t.startswith("Answer to: is the VPN up?")]
    assert AFTER not in answer
    assert [t.state for t in await h.components.store.conversation_turns(bot, cid)] == [
        TurnState.DELIVERED,
        TurnState.DELIVERED,
    ]
    assert h.teams.violations == []


async def test_a_restart_while_the_turn_waits_on_its_card_shows_the_card_once(
    tmp_path: Path,
) -> None:
    h = await make_harness(tmp_path, RELAY_SHUTDOWN_GRACE="0")
    try:
        conv = "a:til-restart"
        h.neo.til_pause = "hold"
        card = await _card_within_two_seconds(h, conv)
        await h.stop_relay()  # the paused turn is interrupted, its journal kept
        await h.start_relay()  # recovery re-reads the turn's events from its since_cursor
        bot, cid = BotId(BOT_A.app_id), ConversationId(conv)
        await h.wait_for(lambda: h.components.worker.active == 1, what="the resumed turn")
        await _approve_and_see_the_continuation(h, conv, card)
        assert len(_cards(h, conv)) == 1  # the resumed run did not post the card again
        assert sum(BEFORE in t for t in h.teams.visible_text(conv)) == 1
        [turn] = await h.components.store.conversation_turns(bot, cid)
        assert turn.state is TurnState.DELIVERED
        assert turn.attempts == 2
        assert len(h.neo.posted_messages) == 1
    finally:
        await close_harness(h)
