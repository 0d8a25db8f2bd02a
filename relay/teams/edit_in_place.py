"""Optional live answers in group chats and channels: post early, then edit the message in place.

Teams does not stream outside 1:1 chats (reference teams-platform.md §1.1), so by default a group
sees a typing indicator and then one final message (``relay.teams.presenter.FinalMessageSink``).
With ``RELAY_GROUP_EDIT_IN_PLACE=true`` the first complete paragraphs are posted as a normal
message as soon as they exist and the message is then updated with ``PUT .../activities/{id}``
at a gentle cadence (§1.5 step 7), at least :attr:`EditInPlaceSink.interval` apart and inside the
per-conversation limits the connector paces (§2); the last update carries the rich final payload
(AI label, citations, feedback). Updates by id are idempotent, so the connector may retry them;
the one create is never replayed after an ambiguous failure (``relay.retry``). If an edit fails
for good, the final is sent as a new message: some text may then show twice, but none is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from relay.domain import Reply, Turn
from relay.errors import UpstreamError
from relay.store.base import Store
from relay.teams.activities import message_activity
from relay.teams.connector import BotConnector
from relay.teams.delivery import TypingKeeper, payload_activity_parts, send_pieces
from relay.teams.markdown import append_paragraph
from relay.teams.render import MessagePayload, final_message_payload
from relay.teams.stream_cut import StreamCutter

log = logging.getLogger(__name__)


class EditInPlaceSink:
    """A :class:`relay.turns.ReplySink` that grows one message by editing it."""

    def __init__(
        self,
        turn: Turn,
        connector: BotConnector,
        store: Store,
        *,
        interval: float,
        typing_refresh: float,
        message_limit_bytes: int,
    ) -> None:
        self._turn = turn
        self._connector = connector
        self._store = store
        self.interval = interval
        self._limit = message_limit_bytes
        self._typing = TypingKeeper(turn, connector, typing_refresh)
        self._reply: Reply | None = None
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._delivery: dict[str, Any] = {}
        self.activity_id: str | None = None
        self._shown = ""
        self._cutter = StreamCutter(message_limit_bytes // 2)
        self._editable = True
        self._not_before = 0.0

    async def start(self, *, show_progress: bool) -> None:
        self._delivery = await self._store.get_delivery(self._turn.turn_id)
        self._delivery["mode"] = "edit"
        self.activity_id = self._delivery.get("activity_id")
        self._typing.start()
        self._task = asyncio.create_task(self._sender())

    async def update(self, reply: Reply) -> None:
        self._reply = reply
        self._wake.set()

    async def _sender(self) -> None:
        while self._editable and not self._stop.is_set():
            self._wake.clear()
            reply = self._reply
            text = self._cutter.advance(reply.text) if reply else ""
            if not text or text == self._shown:
                await self._wake.wait()
                continue
            pause = self._not_before - time.monotonic()
            if pause > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), pause)
                continue
            try:
                await self._show(MessagePayload(text))
            except UpstreamError as exc:
                log.warning("turn %s: live edit failed, final only: %s", self._turn.turn_id, exc)
                self._editable = False

    async def _show(self, payload: MessagePayload) -> None:
        activity = message_activity(self._turn.ref, payload.text, **payload_activity_parts(payload))
        self._not_before = time.monotonic() + self.interval
        if self.activity_id is None:
            result = await self._connector.send(self._turn.ref, activity)
            await self._typing.stop()
            if result.activity_id is None:
                raise UpstreamError("Teams returned no message id", service="teams")
            self.activity_id = self._delivery["activity_id"] = result.activity_id
            self._delivery.setdefault("activity_ids", []).append(result.activity_id)
        else:
            await self._connector.update(self._turn.ref, self.activity_id, activity)
        self._shown = payload.text
        await self._store.save_delivery(self._turn.turn_id, self._delivery)

    async def _stop_sender(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task  # an edit in flight completes first: one request at a time
            self._task = None
        await self._typing.stop()

    async def finish(self, reply: Reply) -> None:
        await self._stop_sender()
        payloads = final_message_payload(
            reply, limit_bytes=self._limit, reference=self._turn.chat_turn_id
        )
        await self._deliver(payloads[0], payloads[1:], "pieces_sent")

    async def fail(self, message: str) -> None:
        await self._stop_sender()
        text = append_paragraph(self._shown, message)
        await self._deliver(MessagePayload(text), [], "notices_sent")

    async def _deliver(self, first: MessagePayload, rest: list[MessagePayload], key: str) -> None:
        if self.activity_id is not None and self._editable:
            await asyncio.sleep(max(0.0, self._not_before - time.monotonic()))
            try:
                await self._show(first)
            except UpstreamError as exc:
                log.warning("turn %s: final edit failed, sending anew: %s", self._turn.turn_id, exc)
            else:
                first = MessagePayload("")  # delivered in place
        pieces = ([first] if first.text else []) + rest
        await send_pieces(self._turn, self._connector, self._store, pieces, self._delivery, key=key)

    async def close(self, *, interrupted: bool = False) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._typing.stop()
