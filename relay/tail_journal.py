"""Where a turn's tail is in the session stream, journaled: checkpoints, scope, how it ended.

Split out of ``relay.turns``. One Neo session is one event stream shared by all its turns
(DESIGN.md invariant 9), so the pipeline journals, for every tail whatever its outcome — answer,
Stop, deadline, failure — the last event id it saw: on the turn (checkpointed while it runs), on
the session (``set_session_cursor``: where the next turn starts if Neo's ``since_cursor`` is null)
and in the conversation's ``tail`` note, together with whether the tail reached the turn's
terminal chunk. The next turn reads that note: if the previous turn on the same session did not
end, its leftovers may follow the new ``since_cursor``, and the new tail skips them
(``TailScope.await_start``; the skipping itself is ``relay.neo.events``' job). A run resumed
after a restart decides exactly as its first run did, from the note it wrote then.
"""

from __future__ import annotations

import logging
import time

from relay.domain import EventId, Turn
from relay.store.base import Store
from relay.turn_seams import TailScope

log = logging.getLogger(__name__)

TAIL_NOTE = "tail"  # the conversation note saying how the last tail on the session ended


class TailJournal:
    """The journal side of one turn's tail (see the module docstring)."""

    # Why 5 s, not 1 s: a resumed run re-reads from since_cursor (not last_event_id), so mid-turn
    # checkpoints only keep ``updated_at`` fresh for the lease sweep (which waits a whole lease
    # period, 15 s by default); at 1 s they were ~40 % of a streamed turn's journal writes.
    INTERVAL = 5.0

    def __init__(self, store: Store, turn: Turn, interval: float = INTERVAL) -> None:
        self._store = store
        self._turn = turn
        self._interval = interval
        self._last_write = float("-inf")  # the first event is journaled at once
        self._dirty = False

    async def scope(self) -> TailScope:
        """Skip the previous turn's leftovers if it did not reach its terminal chunk."""
        turn = self._turn
        note = await self._store.get_note(turn.bot_id, turn.conversation_id, TAIL_NOTE) or {}
        if note.get("turn_id") == turn.turn_id:
            await_start = bool(note.get("await_start"))  # a resumed run decides as the first did
        else:
            await_start = note.get("session_id") == turn.session_id and not note.get("terminal")
            fields = {
                "turn_id": turn.turn_id,
                "session_id": turn.session_id,
                "await_start": await_start,
                "terminal": False,  # until this tail says otherwise (a crash leaves it so)
            }
            await self._store.merge_note(turn.bot_id, turn.conversation_id, TAIL_NOTE, fields)
        return TailScope(chat_turn_id=turn.chat_turn_id, await_start=await_start)

    async def seen(self, event_id: EventId) -> None:
        """Every new event id: at the first event, then at most every ``interval`` seconds."""
        self._turn.last_event_id = event_id
        self._dirty = True
        if time.monotonic() - self._last_write >= self._interval:
            await self.flush()

    async def flush(self) -> None:
        if self._dirty:
            self._dirty = False
            self._last_write = time.monotonic()
            self._turn.updated_at = time.time()
            await self._store.save_turn(self._turn)

    async def ended(self, terminal: bool) -> None:
        """Journal the turn's last event id whatever the outcome, and how the tail ended."""
        turn = self._turn
        try:
            await self.flush()
            if turn.last_event_id:
                await self._store.set_session_cursor(
                    turn.bot_id, turn.conversation_id, turn.last_event_id
                )
            fields = {"last_event_id": turn.last_event_id, "terminal": terminal}
            await self._store.merge_note(turn.bot_id, turn.conversation_id, TAIL_NOTE, fields)
        except Exception:
            log.warning("turn %s: could not journal where its tail ended", turn.turn_id)
