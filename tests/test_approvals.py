"""End to end: a TIL approval card, a technician's click → Neo decision → the card replaced."""

from __future__ import annotations

import json
from typing import Any

from relay.devtools.neo_emulator_streams import TurnInput
from tests.fakes.harness import BOT_A, Harness
from tests.fakes.user_view import posted_approval_cards

GROUP = "19:approvals@thread.v2"
TECH_AAD = "00000000-0000-0000-0000-0000000000a1"  # the harness's sender


def _til_turn(turn: TurnInput) -> list[dict[str, object]]:
    return [
        {"type": "start"},
        {"type": "text-start", "id": "t"},
        {"type": "text-delta", "id": "t", "delta": "I can restart the spooler for you."},
        {"type": "text-end", "id": "t"},
        {
            "type": "data-til",
            "id": "til-42",
            "data": {"til_request_id": 42, "description": "Restart the print spooler on SRV-01"},
        },
        {"type": "finish"},
    ]


def _bare_approval(turn: TurnInput) -> list[dict[str, object]]:
    return [
        {"type": "start"},
        {"type": "tool-input-start", "toolCallId": "c1", "toolName": "restartService"},
        {
            "type": "tool-input-available",
            "toolCallId": "c1",
            "toolName": "restartService",
            "input": {"service": "spooler"},
        },
        {"type": "tool-approval-request", "approvalId": "ap-1", "toolCallId": "c1"},
        {"type": "finish"},
    ]


def _cards(h: Harness, conv: str) -> list[dict[str, Any]]:
    return posted_approval_cards(h.teams, conv)


def _click(
    h: Harness,
    card: dict[str, Any],
    action: str,
    activity_id: str,
    name: str = "Avery Example",
    conv: str = GROUP,
    kind: str = "groupChat",
) -> dict[str, Any]:
    """Shaped like fixtures/teams-activities/adaptive-card-submit.json (no text, no mention)."""
    [button] = [
        b for b in card["attachments"][0]["content"]["actions"] if b["data"]["action"] == action
    ]
    act = h.activity(
        BOT_A,
        "",
        conversation_id=conv,
        conversation_type=kind,
        mention=False,
        activity_id=activity_id,
    )
    del act["text"]
    act["from"]["name"] = name
    act.update(replyToId=card["_id"], value=button["data"])
    return act


def _updates(h: Harness) -> list[dict[str, Any]]:
    return [r.activity for r in h.teams.received if r.method == "PUT" and r.status < 300]


async def _show_card(
    h: Harness, script: Any = _til_turn, conv: str = GROUP, kind: str = "groupChat"
) -> dict[str, Any]:
    h.neo.script = script
    await h.deliver(
        h.activity(BOT_A, "printer is stuck", conversation_id=conv, conversation_type=kind),
        bot=BOT_A,
    )
    await h.wait_for(lambda: bool(_cards(h, conv)), what="the approval card")
    [card] = _cards(h, conv)
    return card


async def test_in_a_personal_chat_the_card_follows_the_streamed_answer(harness: Harness) -> None:
    h = harness
    conv = "a:conv-approval"
    card = await _show_card(h, conv=conv, kind="personal")
    await h.wait_idle()
    texts = [m.get("text") or "" for m in h.teams.messages(conv)]
    assert texts[0].startswith("I can restart the spooler")  # the answer first, then the card
    assert h.teams.messages(conv)[-1]["_id"] == card["_id"]
    await h.deliver(_click(h, card, "approve", "click-p", conv=conv, kind="personal"), bot=BOT_A)
    await h.wait_for(lambda: len(_updates(h)) == 1, what="the card update")
    assert "Approved by Avery Example" in json.dumps(_updates(h)[0])
    assert h.teams.violations == []


async def test_approve_records_the_decision_and_replaces_the_card(harness: Harness) -> None:
    h = harness
    card = await _show_card(h)
    content = card["attachments"][0]["content"]
    assert content["version"] == "1.5"
    assert card["text"].startswith("I can restart the spooler")  # one bubble: text + card
    assert "Restart the print spooler on SRV-01" in str(content["body"])
    assert [
        (b["type"], b["data"]["action"], b["data"]["til_request_id"]) for b in content["actions"]
    ] == [
        ("Action.Submit", "approve", "42"),
        ("Action.Submit", "reject", "42"),
    ]
    assert (await h.deliver(_click(h, card, "approve", "click-1"), bot=BOT_A)).status == 200
    await h.wait_for(lambda: len(_updates(h)) == 1, what="the card update")
    assert h.neo.til_decisions == {
        "42": {
            "action": "approve",
            "acting_end_user": TECH_AAD,
            "acting_end_user_name": "Avery Example",
        }
    }
    [update] = _updates(h)
    assert update["_id"] == card["_id"]  # replaced in place
    new = update["attachments"][0]["content"]
    assert "Approved by Avery Example" in str(new["body"])
    assert "actions" not in new

    # Teams re-delivers the same click: no second decision.
    await h.deliver(_click(h, card, "approve", "click-1"), bot=BOT_A)
    # A second technician clicks Reject on the decided card: Neo says 409 → "already decided".
    await h.deliver(_click(h, card, "reject", "click-2", name="Jordan Sample"), bot=BOT_A)
    await h.wait_for(lambda: len(_updates(h)) == 2, what="the second card update")
    assert list(h.neo.til_decisions) == ["42"]
    assert sum(1 for r in h.neo.requests if r.path.endswith("/decision")) == 2
    second = _updates(h)[1]["attachments"][0]["content"]
    assert "already decided" in str(second["body"])
    assert "actions" not in second
    assert h.neo.posted_messages[0]["message"] == "printer is stuck"
    assert len(h.neo.posted_messages) == 1  # clicks are not turns


async def test_not_allowed_keeps_the_buttons_with_a_note(harness: Harness) -> None:
    h = harness
    h.neo.til_forbidden.add("42")
    card = await _show_card(h)
    await h.deliver(_click(h, card, "reject", "click-3"), bot=BOT_A)
    await h.wait_for(lambda: len(_updates(h)) == 1, what="the card update")
    new = _updates(h)[0]["attachments"][0]["content"]
    assert "not allowed" in str(new["body"])
    assert [b["data"]["action"] for b in new["actions"]] == ["approve", "reject"]
    assert h.neo.til_decisions == {}


async def test_a_failed_decision_says_so_with_the_request_id(harness: Harness) -> None:
    h = harness
    card = await _show_card(h)
    h.neo.fail_next("til", 400, code="validation_error", message="bad")
    await h.deliver(_click(h, card, "approve", "click-4"), bot=BOT_A)
    await h.wait_for(lambda: len(_updates(h)) == 1, what="the card update")
    failed = next(r for r in h.neo.responses if r.path.endswith("/decision"))
    body = str(_updates(h)[0]["attachments"][0]["content"]["body"])
    assert "couldn't record the decision" in body
    assert failed.request_id in body


async def test_a_bare_tool_approval_is_shown_read_only(harness: Harness) -> None:
    h = harness
    card = await _show_card(h, _bare_approval)
    content = card["attachments"][0]["content"]
    assert "actions" not in content  # no til_request_id: Neo has no decision endpoint for it
    assert "can't be decided from Teams" in str(content["body"])
    assert "Restart service" in str(content["body"])  # the action in words, not the identifier


async def test_action_execute_invoke_is_answered_and_decided(harness: Harness) -> None:
    h = harness
    card = await _show_card(h)
    invoke = h.activity(
        BOT_A,
        "",
        conversation_id=GROUP,
        conversation_type="groupChat",
        mention=False,
        activity_id="f:execute-1",
    )
    del invoke["text"]
    invoke.update(
        type="invoke",
        name="adaptiveCard/action",
        replyToId=card["_id"],
        value={
            "action": {
                "type": "Action.Execute",
                "verb": "approve",
                "data": {"action": "approve", "til_request_id": "42"},
            }
        },
    )
    resp = await h.deliver(invoke, bot=BOT_A)
    assert resp.status == 200
    body = await resp.json()
    assert body["statusCode"] == 200
    assert body["type"] == "application/vnd.microsoft.activity.message"
    await h.wait_for(lambda: len(_updates(h)) == 1, what="the card update")
    assert h.neo.til_decisions["42"]["action"] == "approve"
