"""End to end: a failed install greeting is retried (bounded), delivered once, never lost.

The greeting used to be claimed before it was sent, so a send that failed left the claim behind and
the install silent for an hour (issue 16). Teams here is the loopback connector emulator failing
the greeting's POSTs with 503 (retryable) more times than one round of the Teams retry policy.
"""

from __future__ import annotations

from typing import Any

from relay.commands import DEFAULT_GREETING
from relay.domain import BotId, ConversationId
from relay.retry import GREETING, TEAMS
from tests.fakes.harness import BOT_A, Harness


def _install(h: Harness, conv: str, activity_id: str) -> dict[str, Any]:
    return h.event(
        "installationUpdate", conversation_id=conv, activity_id=activity_id, action="add"
    )


def _greeting_posts(h: Harness, conv: str) -> list[int]:
    return [r.status for r in h.teams.received if r.conversation_id == conv and r.method == "POST"]


async def test_a_greeting_that_fails_for_longer_than_one_retry_round_is_delivered_once(
    harness: Harness,
) -> None:
    h = harness
    conv = "a:conv-greet-retry"
    failures = TEAMS.attempts + 2  # one whole round of Teams retries, and then some
    h.teams.fail_next(503, code="ServiceUnavailable", times=failures)
    assert (await h.deliver(_install(h, conv, "f:install-r1"), bot=BOT_A)).status == 200
    await h.wait_for(lambda: len(h.teams.messages(conv)) == 1, 30, "the greeting")
    await h.wait_idle()
    assert [m["text"] for m in h.teams.messages(conv)] == [DEFAULT_GREETING]
    assert _greeting_posts(h, conv) == [503] * failures + [201]
    # The second event of the same install finds the mark: no second greeting.
    await h.deliver(_install(h, conv, "f:install-r2"), bot=BOT_A)
    await h.wait_idle()
    assert len(h.teams.messages(conv)) == 1


async def test_a_greeting_that_cannot_be_sent_gives_its_claim_back(harness: Harness) -> None:
    h = harness
    conv = "a:conv-greet-down"
    h.teams.fail_next(503, code="ServiceUnavailable", times=GREETING.attempts * TEAMS.attempts)
    await h.deliver(_install(h, conv, "f:install-d1"), bot=BOT_A)
    await h.wait_for(
        lambda: len(_greeting_posts(h, conv)) == GREETING.attempts * TEAMS.attempts, 60, "retries"
    )
    await h.wait_idle()
    [turn] = await h.components.store.conversation_turns(BotId(BOT_A.app_id), ConversationId(conv))
    assert turn.state.value == "failed"
    assert h.teams.messages(conv) == []
    # Not silenced for an hour: the install's next event (Teams sends two) greets.
    await h.deliver(_install(h, conv, "f:install-d2"), bot=BOT_A)
    await h.wait_for(lambda: len(h.teams.messages(conv)) == 1, 30, "the greeting")
    await h.wait_idle()
    assert [m["text"] for m in h.teams.messages(conv)] == [DEFAULT_GREETING]
