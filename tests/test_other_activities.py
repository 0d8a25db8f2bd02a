"""End to end: any other activity gets a quick, correct 200 and nothing else: no turn, no crash."""

from __future__ import annotations

from typing import Any

from relay.domain import BotId, ConversationId
from tests.fakes.harness import BOT_A, Harness

CONV = "a:conv-other"


def _event(h: Harness, kind: str, **extra: Any) -> dict[str, Any]:
    return h.event(kind, conversation_id=CONV, **extra)


CASES: dict[str, dict[str, Any]] = {
    # fixtures/teams-activities/message-update-edit.json: an edit is not a new question.
    "edit": {
        "kind": "messageUpdate",
        "text": "How do I reset my VPN password on macOS?",
        "channelData": {"eventType": "editMessage"},
    },
    "undelete": {"kind": "messageUpdate", "channelData": {"eventType": "undeleteMessage"}},
    "delete": {"kind": "messageDelete", "channelData": {"eventType": "softDeleteMessage"}},
    # fixtures/teams-activities/message-reaction.json
    "reaction": {"kind": "messageReaction", "reactionsAdded": [{"type": "like"}], "replyToId": "1"},
    "read receipt": {"kind": "event", "name": "application/vnd.microsoft.readReceipt"},
    "typing": {"kind": "typing"},
    "uninstall": {"kind": "installationUpdate", "action": "remove"},
    "upgrade": {"kind": "installationUpdate", "action": "add-upgrade"},
    "members removed": {"kind": "conversationUpdate", "membersRemoved": [{"id": "29:x"}]},
    "brand new type": {"kind": "somethingTeamsInventsNext", "value": {"x": 1}},
}


async def test_non_message_activities_are_acknowledged_and_ignored(harness: Harness) -> None:
    h = harness
    for case, raw in CASES.items():
        spec = dict(raw)
        resp = await h.deliver(_event(h, spec.pop("kind"), **spec), bot=BOT_A)
        assert resp.status == 200, case
        assert await resp.text() == "", case
    await h.wait_idle()
    assert h.neo.requests == []
    assert h.teams.received == []
    turns = await h.components.store.conversation_turns(BotId(BOT_A.app_id), ConversationId(CONV))
    assert turns == []


async def test_unknown_invokes_get_200_with_an_empty_json_object(harness: Harness) -> None:
    h = harness
    for name in ("task/fetch", "composeExtension/query", "message/fetchTask", None):
        resp = await h.deliver(_event(h, "invoke", name=name, value={"a": 1}), bot=BOT_A)
        assert resp.status == 200, name
        assert await resp.json() == {}, name
    await h.wait_idle()
    assert h.neo.requests == []
    assert h.teams.received == []


async def test_a_foreign_card_submit_is_ignored_and_the_relay_keeps_serving(
    harness: Harness,
) -> None:
    h = harness
    # fixtures/teams-activities/adaptive-card-submit.json: some other card's Action.Submit.
    submit = h.activity(BOT_A, "", conversation_id=CONV, mention=False)
    del submit["text"]
    submit.update(replyToId="1795187700112", value={"action": "rate_answer", "rating": "4"})
    assert (await h.deliver(submit, bot=BOT_A)).status == 200
    execute = _event(
        h,
        "invoke",
        name="adaptiveCard/action",
        value={"action": {"type": "Action.Execute", "verb": "x", "data": {"requestId": "R-1"}}},
    )
    resp = await h.deliver(execute, bot=BOT_A)
    assert resp.status == 200
    assert (await resp.json())["statusCode"] == 200
    await h.wait_idle()
    assert h.neo.requests == []
    # ...and a normal question right after is answered as usual.
    await h.deliver(h.activity(BOT_A, "still there?", conversation_id=CONV), bot=BOT_A)
    await h.wait_for(lambda: bool(h.teams.messages(CONV)), what="the answer")
    assert [m["message"] for m in h.neo.posted_messages] == ["still there?"]
