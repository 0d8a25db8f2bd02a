"""After an approval: deliver what the agent does next when no turn is tailing any more.

Whether Neo keeps a chat turn open until a TIL request is decided, or ends it with the request
pending and continues after the decision, is undocumented (neo-chat-api.md §b item 18). The first
case needs nothing special: the pipeline is still tailing and delivers the continuation as a new
segment (``relay.segments``). In the second case — and when the pipeline stopped waiting on a
paused turn so the conversation is not blocked — nobody would tail the continuation. This module
closes that gap: when a request is both *decided* (a click, ``relay.approvals``) and its turn
*ended* without showing anything after the card, it tails the session from that turn's last event
id for a bounded time (``RELAY_APPROVAL_FOLLOW_SECONDS``, default 10 minutes) and delivers any
continuation as a new message in the same conversation — a normal message even in a 1:1 chat,
since a stream could collide with the next turn's (one stream per chat, teams-platform.md §1.1).
The two facts arrive in either order and
on any replica: each side merges its fact into the request's conversation note and reads the
merged note back (``Store.merge_note`` is atomic), so whichever side completes the pair starts the
tail, and a claim makes sure only one does. A follow-up is a background task, not a journaled
turn: a restart while it waits loses it (the card and the decision are still shown).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from relay.domain import BotId, ConversationId, EventId, SessionId, Turn
from relay.errors import RelayError
from relay.segments import Mark, after, has_content, til_note
from relay.store.base import Store
from relay.turn_seams import NeoApi, ReplySink, SinkFactory

log = logging.getLogger(__name__)

FOLLOW_SECONDS = 600.0
FOLLOW_CLAIM_TTL = 86400.0


class FollowUps:
    """Starts and tracks the continuation tails (see the module docstring)."""

    def __init__(
        self, store: Store, neo: NeoApi, sinks: SinkFactory, *, timeout: float = FOLLOW_SECONDS
    ) -> None:
        self._store = store
        self._neo = neo
        self._sinks = sinks
        self.timeout = timeout
        self._tasks: set[asyncio.Task[None]] = set()

    async def turn_ended(self, turn: Turn, til_ids: list[str], *, continued: bool) -> None:
        """The turn that showed these requests is over (``continued``: it showed more after)."""
        for til_id in til_ids:
            fields = {"ended": True, "continued": continued, "last_event_id": turn.last_event_id}
            note = await self._store.merge_note(
                turn.bot_id, turn.conversation_id, til_note(til_id), fields
            )
            await self._maybe_start(turn.bot_id, turn.conversation_id, til_id, note)

    async def decided(
        self, bot_id: BotId, conversation_id: ConversationId, til_id: str, action: str
    ) -> None:
        """A technician's decision was recorded with Neo."""
        note = await self._store.merge_note(
            bot_id, conversation_id, til_note(til_id), {"decided": action}
        )
        await self._maybe_start(bot_id, conversation_id, til_id, note)

    async def _maybe_start(
        self, bot_id: BotId, conversation_id: ConversationId, til_id: str, note: dict[str, Any]
    ) -> None:
        if not (note.get("decided") and note.get("ended")) or note.get("continued"):
            return
        claim = f"til-follow:{bot_id}:{conversation_id}:{til_id}"
        if not await self._store.claim_once(claim, FOLLOW_CLAIM_TTL):
            return
        task = asyncio.create_task(self._follow(til_id, note), name=f"til-follow-{til_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _follow(self, til_id: str, note: dict[str, Any]) -> None:
        turn = await self._store.get_turn(note.get("turn_id", ""))
        session_id = note.get("session_id")
        if turn is None or not isinstance(session_id, str):
            log.warning("TIL %s: its turn is gone; no continuation to deliver", til_id)
            return
        since = note.get("last_event_id")
        segment = int(note.get("segment", 0)) + 1
        sink: ReplySink | None = None
        try:
            async with asyncio.timeout(self.timeout):
                sink = await self._deliver(turn, SessionId(session_id), since, segment)
        except TimeoutError:
            log.info("TIL %s: no continuation within %.0fs", til_id, self.timeout)
        except RelayError as exc:
            log.warning("TIL %s: continuation not delivered: %s", til_id, exc)
        finally:
            if sink is not None:
                with contextlib.suppress(Exception):
                    await sink.close()

    async def _deliver(
        self, turn: Turn, session_id: SessionId, since: Any, segment: int
    ) -> ReplySink | None:
        """Tail from ``since`` to the continuation's end; a sink opens at its first content."""
        assembler = self._neo.assembler()
        sink: ReplySink | None = None

        async def seen(_: EventId) -> None:
            return None

        cursor = EventId(since) if isinstance(since, str) and since else None
        async for chunk in self._neo.tail(session_id, since=cursor, on_event_id=seen):
            assembler.feed(chunk)
            reply = after(assembler.reply, Mark())
            if sink is None and has_content(reply):
                sink = self._sinks.open(turn, segment=segment, streamed=False)
                await sink.start(show_progress=False)
            if sink is not None:
                await sink.update(reply)
        if sink is not None:
            await sink.finish(assembler.reply)
            log.info("turn %s: continuation after an approval delivered", turn.turn_id)
        return sink

    async def close(self, grace: float = 1.0) -> None:
        """Cancel the follow-ups still waiting (shutdown)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
