"""End to end: the install greeting (installationUpdate add / conversationUpdate adding the bot)."""

from __future__ import annotations

import time
from typing import Any

from relay.commands import DEFAULT_GREETING
from tests.fakes.harness import BOT_A, Harness


def _install(h: Harness, conv: str, activity_id: str, *, kind: str = "personal") -> dict[str, Any]:
    """Shaped like fixtures/teams-activities/installation-update-add.json."""
    return h.event(
        "installationUpdate",
        conversation_id=conv,
        conversation_type=kind,
        activity_id=activity_id,
        action="add",
    )


def _bot_added(h: Harness, conv: str, activity_id: str, member: str) -> dict[str, Any]:
    """Shaped like fixtures/teams-activities/conversation-update-bot-added.json."""
    act = h.event(
        "conversationUpdate",
        conversation_id=conv,
        conversation_type="channel",
        activity_id=activity_id,
        membersAdded=[{"id": member}],
    )
    act["channelData"].update(eventType="teamMemberAdded")
    return act


async def test_install_greets_with_the_channel_welcome_message_once(harness: Harness) -> None:
    h = harness
    h.neo.branding[(BOT_A.app_id, BOT_A.tenant_id)] = {
        "display_name": "Contoso IT",
        "welcome_message": "Welcome to Contoso IT support! Ask me anything.",
    }
    conv = "a:conv-install"
    first = _install(h, conv, "f:install-1")
    assert (await h.deliver(first, bot=BOT_A)).status == 200
    assert (await h.deliver(first, bot=BOT_A)).status == 200  # Teams' re-delivery
    # Teams also reports the same install as a conversationUpdate adding the bot.
    again = _bot_added(h, conv, "f:install-2", BOT_A.recipient_id)
    assert (await h.deliver(again, bot=BOT_A)).status == 200
    await h.wait_for(lambda: len(h.teams.messages(conv)) >= 1, what="the greeting")
    await h.wait_idle()

    assert [m["text"] for m in h.teams.messages(conv)] == [
        "Welcome to Contoso IT support! Ask me anything."
    ]
    assert h.neo.install_events == [
        {"bot_id": BOT_A.app_id, "end_client_tenant_id": BOT_A.tenant_id}
    ]
    # The greeting is a new post, not a reply to the (non-message) install event.
    assert "replyToId" not in h.teams.messages(conv)[0]
    assert h.neo.posted_messages == []


async def test_unmatched_install_gets_the_neutral_greeting(harness: Harness) -> None:
    h = harness
    conv = "19:team-general@thread.tacv2"
    await h.deliver(_bot_added(h, conv, "f:add-1", BOT_A.recipient_id), bot=BOT_A)
    await h.wait_for(lambda: len(h.teams.messages(conv)) == 1, what="the greeting")
    # In a channel only @mentions reach the bot, so the neutral greeting says how to ask.
    assert h.teams.messages(conv)[0]["text"] == (
        "Hi! I'm your support assistant. In this channel, @mention me (Contoso Bot) with your "
        "question, and I'll answer here. Type @Contoso Bot **/help** to see what else I can do."
    )
    assert len(h.neo.install_events) == 1


async def test_someone_else_joining_is_not_an_install(harness: Harness) -> None:
    h = harness
    await h.deliver(
        _bot_added(h, "19:team-x@thread.tacv2", "f:add-2", "29:new-colleague"), bot=BOT_A
    )
    removed = _install(h, "a:conv-removed", "f:remove-1")
    removed["action"] = "remove"
    await h.deliver(removed, bot=BOT_A)
    await h.wait_idle()
    assert h.neo.requests == []
    assert h.teams.received == []


async def test_the_webhook_does_not_wait_for_neo_and_neo_failure_still_greets(
    harness: Harness,
) -> None:
    h = harness
    h.neo.hang_next("install", 1.0)
    h.neo.fail_next("install", 500, times=5)
    conv = "a:conv-slow-install"
    started = time.monotonic()
    assert (await h.deliver(_install(h, conv, "f:install-slow"), bot=BOT_A)).status == 200
    assert time.monotonic() - started < 0.5  # answered before Neo answered
    await h.wait_for(lambda: len(h.teams.messages(conv)) == 1, timeout=15, what="the greeting")
    assert h.teams.messages(conv)[0]["text"] == DEFAULT_GREETING
