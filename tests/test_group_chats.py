"""End to end: group chats and channels answer only when mentioned; each gets its own session."""

from __future__ import annotations

from relay.domain import BotId, ConversationId
from tests.fakes.harness import BOT_A, Harness, answer_script


async def test_unmentioned_group_and_channel_messages_are_acknowledged_and_ignored(
    harness: Harness,
) -> None:
    h = harness
    for conv, kind in (
        ("19:group-quiet@thread.v2", "groupChat"),
        ("19:chan-quiet@thread.tacv2;messageid=1700000000001", "channel"),
    ):
        act = h.activity(
            BOT_A,
            "anyone know the wifi password?",
            conversation_id=conv,
            conversation_type=kind,
            mention=False,
        )
        assert (await h.deliver(act, bot=BOT_A)).status == 200
    # A mention of someone else is not a mention of the bot.
    other = h.activity(
        BOT_A,
        "hi",
        conversation_id="19:group-quiet@thread.v2",
        conversation_type="groupChat",
        mention=False,
    )
    other["text"] = "<at>Jordan</at> hi"
    other["entities"] = [
        {
            "type": "mention",
            "mentioned": {"id": "29:jordan", "name": "Jordan"},
            "text": "<at>Jordan</at>",
        }
    ]
    assert (await h.deliver(other, bot=BOT_A)).status == 200
    await h.wait_idle()
    assert h.neo.requests == []
    assert h.teams.received == []


async def test_each_group_chat_and_channel_thread_gets_its_own_session(harness: Harness) -> None:
    h = harness
    h.neo.script = answer_script
    group = "19:group-a@thread.v2"
    thread_1 = "19:chan@thread.tacv2;messageid=1700000000001"
    thread_2 = "19:chan@thread.tacv2;messageid=1700000000002"
    cases = [
        (group, "groupChat"),
        (thread_1, "channel"),
        (thread_2, "channel"),
        (group, "groupChat"),
    ]
    for n, (conv, kind) in enumerate(cases):
        act = h.activity(BOT_A, f"question {n}", conversation_id=conv, conversation_type=kind)
        assert (await h.deliver(act, bot=BOT_A)).status == 200
    await h.wait_for(lambda: len(h.teams.messages()) == 4, what="four answers")

    # The bot's mention was removed before the text reached the agent.
    assert sorted(m["message"] for m in h.neo.posted_messages) == [
        f"question {n}" for n in range(4)
    ]
    store = h.components.store
    sessions = {
        conv: (await store.get_session(BotId(BOT_A.app_id), ConversationId(conv)))
        for conv in (group, thread_1, thread_2)
    }
    ids = {conv: rec.session_id for conv, rec in sessions.items() if rec is not None}
    assert len(set(ids.values())) == 3  # three conversations, three sessions
    # The group chat's second question continued its session; each answer went to its own thread.
    by_session = {}
    for m in h.neo.posted_messages:
        by_session.setdefault(m["session_id"], []).append(m["message"])
    assert by_session[ids[group]] == ["question 0", "question 3"]
    assert by_session[ids[thread_1]] == ["question 1"]
    assert next(m["text"] for m in h.teams.messages(thread_2)).startswith("Answer to: question 2")
    assert h.teams.violations == []  # never streamed outside 1:1
