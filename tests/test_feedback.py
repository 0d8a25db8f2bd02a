"""End to end: 👍/👎 feedback (``message/submitAction``) → empty 200, tied to its turn, counted."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from relay.app import METRICS
from relay.domain import BotId, ConversationId
from tests.fakes.harness import BOT_A, Harness, answer_script


def _count(h: Harness, reaction: str) -> float:
    """``relay_feedback_total{reaction=...}`` as this relay's /metrics would show it."""
    registry = h.app[METRICS].registry
    return registry.get_sample_value("relay_feedback_total", {"reaction": reaction}) or 0.0


def _feedback(
    h: Harness, conv: str, kind: str, reply_to: str, activity_id: str, reaction: str = "like"
) -> dict[str, Any]:
    """Shaped like fixtures/teams-activities/feedback-submit-action.json."""
    return h.event(
        "invoke",
        conversation_id=conv,
        conversation_type=kind,
        activity_id=activity_id,
        name="message/submitAction",
        replyToId=reply_to,
        value={
            "actionName": "feedback",
            "actionValue": {
                "reaction": reaction,
                "feedback": json.dumps({"feedbackText": "Clear steps, worked first time."}),
            },
        },
    )


@pytest.mark.parametrize(
    ("conv", "kind"), [("19:fb-group@thread.v2", "groupChat"), ("a:conv-fb", "personal")]
)
async def test_feedback_gets_an_empty_200_and_is_recorded_with_its_turn(
    harness: Harness, caplog: pytest.LogCaptureFixture, conv: str, kind: str
) -> None:
    h = harness
    h.neo.script = answer_script
    await h.deliver(
        h.activity(BOT_A, "how do I reset MFA?", conversation_id=conv, conversation_type=kind),
        bot=BOT_A,
    )
    await h.wait_for(lambda: bool(h.teams.messages(conv)), what="the answer")
    await h.wait_idle()
    answer_id = h.teams.messages(conv)[-1]["_id"]
    store = h.components.store
    [turn] = await store.conversation_turns(BotId(BOT_A.app_id), ConversationId(conv))
    neo_calls = len(h.neo.requests)
    before = _count(h, "dislike")

    caplog.set_level(logging.INFO, logger="relay.feedback")
    act = _feedback(h, conv, kind, answer_id, f"f:fb-{kind}", reaction="dislike")
    resp = await h.deliver(act, bot=BOT_A)
    assert resp.status == 200
    assert await resp.text() == ""  # a non-empty body makes Teams answer 400 (§6.4)
    await h.wait_for(lambda: _count(h, "dislike") == before + 1, what="the count")
    [line] = [r.getMessage() for r in caplog.records if r.name == "relay.feedback"]
    assert turn.turn_id in line
    assert turn.session_id in line
    assert "Clear steps" not in line  # the comment is user content: only its length is logged

    # A re-delivery is counted once; nothing was forwarded to Neo (it documents no such API).
    assert (await h.deliver(act, bot=BOT_A)).status == 200
    await h.wait_idle()
    assert _count(h, "dislike") == before + 1
    assert _count(h, "like") == 0
    assert len(h.neo.requests) == neo_calls
    assert len(h.teams.messages(conv)) == 1  # and nothing said in the chat


async def test_feedback_on_an_unknown_message_is_still_acknowledged(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    h = harness
    caplog.set_level(logging.INFO, logger="relay.feedback")
    before = _count(h, "like")
    resp = await h.deliver(_feedback(h, "a:conv-none", "personal", "123", "f:fb-x"), bot=BOT_A)
    assert resp.status == 200
    assert await resp.text() == ""
    await h.wait_for(lambda: _count(h, "like") == before + 1, what="count")
    assert any("turn None" in r.getMessage() for r in caplog.records)
