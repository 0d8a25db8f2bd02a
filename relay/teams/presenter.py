"""Puts a turn's answer into Teams: typing while the agent works, then the final message(s).

This is the non-streamed presentation (group chats and channels always; 1:1 chats when streaming
is unavailable). The typing indicator is refreshed every few seconds because Teams clears it after
about three (reference teams-platform.md §1.5 step 7). Final messages are *creates*, which the Bot
Connector cannot de-duplicate: each piece is journaled as sent right after Teams accepts it, a
restarted relay skips pieces already sent, and an ambiguous failure is never blindly re-sent
(relay.retry).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from botbuilder.schema import Activity

from relay.domain import Reply, Turn
from relay.errors import AmbiguousError, UpstreamError
from relay.retry import TEAMS, retry_call
from relay.store.base import Store
from relay.teams.activities import OpenEntity, message_activity, typing_activity
from relay.teams.connector import BotConnector, SendResult
from relay.teams.render import MessagePayload, final_message_payload

log = logging.getLogger(__name__)

TYPING_REFRESH_SECONDS = 3.0


class TeamsSinks:
    """The :class:`relay.turns.SinkFactory` for Teams conversations."""

    def __init__(
        self,
        connector: BotConnector,
        store: Store,
        *,
        typing_refresh: float = TYPING_REFRESH_SECONDS,
    ) -> None:
        self._connector = connector
        self._store = store
        self._typing_refresh = typing_refresh

    def open(self, turn: Turn) -> FinalMessageSink:
        return FinalMessageSink(
            turn, self._connector, self._store, typing_refresh=self._typing_refresh
        )


class FinalMessageSink:
    """Typing indicator while the agent works, then one rendered message (split if too large)."""

    def __init__(
        self, turn: Turn, connector: BotConnector, store: Store, *, typing_refresh: float
    ) -> None:
        self._turn = turn
        self._connector = connector
        self._store = store
        self._typing_refresh = typing_refresh
        self._typing_task: asyncio.Task[None] | None = None

    async def start(self, *, show_progress: bool) -> None:
        self._typing_task = asyncio.create_task(self._keep_typing())

    async def _keep_typing(self) -> None:
        # Typing is best effort: a failure here must never fail the turn.
        while True:
            with contextlib.suppress(UpstreamError):
                await self._connector.send(
                    self._turn.ref, typing_activity(self._turn.ref), idempotent=True
                )
            await asyncio.sleep(self._typing_refresh)

    async def update(self, reply: Reply) -> None:
        return None

    async def finish(self, reply: Reply) -> None:
        await self._stop_typing()
        await self.send_payloads(final_message_payload(reply))

    async def fail(self, message: str) -> None:
        await self._stop_typing()
        await self.send_payloads(
            [MessagePayload(text=message, entities=[], attachments=[], channel_data={})]
        )

    async def close(self) -> None:
        await self._stop_typing()

    async def _stop_typing(self) -> None:
        if self._typing_task is not None:
            self._typing_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._typing_task
            self._typing_task = None

    def _sender(self, activity: Activity) -> Callable[[], Awaitable[SendResult]]:
        return lambda: self._connector.send(self._turn.ref, activity)

    async def send_payloads(self, payloads: list[MessagePayload]) -> None:
        """Send each piece once, journaling progress so a restart never repeats a piece."""
        delivery = await self._store.get_delivery(self._turn.turn_id)
        sent = int(delivery.get("pieces_sent", 0))
        for index, payload in enumerate(payloads):
            if index < sent:
                continue
            activity = message_activity(
                self._turn.ref,
                payload.text,
                entities=[OpenEntity(e) for e in payload.entities],
                attachments=payload.attachments,
                channel_data=payload.channel_data,
            )
            try:
                await retry_call(self._sender(activity), TEAMS, what="teams send")
            except AmbiguousError:
                # Teams may have shown it; repeating could show it twice. Count it as sent.
                log.warning(
                    "message piece %d of turn %s may not have been delivered",
                    index,
                    self._turn.turn_id,
                )
            delivery["pieces_sent"] = index + 1
            await self._store.save_delivery(self._turn.turn_id, delivery)
