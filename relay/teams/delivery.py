"""Shared delivery mechanics of both Teams presentations: the typing keep-alive and journaled sends.

The streamed sink (``relay.teams.stream``) and the typing-plus-final-message sink
(``relay.teams.presenter``) both need the same two things, so they live here once: a typing
indicator refreshed every few seconds (Teams clears it after about three, reference
teams-platform.md §1.5 step 7), and a sender of normal message pieces that journals each piece in
the turn's delivery record right after Teams accepted it, so a restarted relay skips what is
already in the chat. Message *creates* are never retried after an ambiguous failure: the Bot
Connector has no idempotency key and a replay would show the user the text twice (§2 "SDK
reality", peers-and-pitfalls.md §5; the policy itself is in ``relay.retry``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from relay.domain import Turn
from relay.errors import AmbiguousError, UpstreamError
from relay.retry import TEAMS, retry_call
from relay.store.base import Store
from relay.teams.activities import Payload, message_activity, open_entity, typing_activity
from relay.teams.connector import BotConnector, SendResult
from relay.teams.render import MessagePayload

log = logging.getLogger(__name__)

TYPING_REFRESH_SECONDS = 3.0


class TypingKeeper:
    """A best-effort typing indicator, re-sent every ``refresh`` seconds until stopped."""

    def __init__(self, turn: Turn, connector: BotConnector, refresh: float) -> None:
        self._turn = turn
        self._connector = connector
        self._refresh = refresh
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            # Typing is best effort: a failure here must never fail the turn. Retrying a typing
            # indicator is harmless (idempotent=True lets the connector classify 5xx as retryable).
            with contextlib.suppress(UpstreamError):
                await self._connector.send(
                    self._turn.ref, typing_activity(self._turn.ref), idempotent=True
                )
            await asyncio.sleep(self._refresh)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def payload_activity_parts(payload: MessagePayload) -> dict[str, Any]:
    """Keyword arguments of :func:`relay.teams.activities.message_activity` for ``payload``."""
    return {
        "entities": [open_entity(e) for e in payload.entities],
        "attachments": payload.attachments,
        "channel_data": payload.channel_data,
    }


def _sender(
    connector: BotConnector, turn: Turn, activity: Payload
) -> Callable[[], Awaitable[SendResult]]:
    return lambda: connector.send(turn.ref, activity)


async def send_pieces(
    turn: Turn,
    connector: BotConnector,
    store: Store,
    payloads: list[MessagePayload],
    delivery: dict[str, Any],
    *,
    key: str = "pieces_sent",
) -> None:
    """Send each payload as a normal message once; ``delivery[key]`` counts those sent.

    ``delivery`` is the turn's journaled delivery record; it is saved after every piece. Error
    notices use their own ``key`` so an answer piece already sent never hides the notice.
    """
    sent = int(delivery.get(key, 0))
    for index, payload in enumerate(payloads):
        if index < sent:
            continue  # already in the chat before a restart
        activity = message_activity(turn.ref, payload.text, **payload_activity_parts(payload))
        try:
            result = await retry_call(_sender(connector, turn, activity), TEAMS, what="teams send")
            if result.activity_id:  # feedback names the rated message by it (relay.feedback)
                delivery.setdefault("activity_ids", []).append(result.activity_id)
        except AmbiguousError:
            # Teams may have shown it; repeating could show it twice. Count it as sent.
            log.warning(
                "message piece %d of turn %s may not have been delivered", index, turn.turn_id
            )
        delivery[key] = index + 1
        await store.save_delivery(turn.turn_id, delivery)
