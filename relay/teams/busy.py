"""The "Busy — your question is queued" notice of a turn waiting for a slot (relay.admission).

In a 1:1 chat it is the *informative* update that opens the turn's Teams stream (the progress bar,
teams-platform.md §1.1), journaled in the turn's delivery record exactly as ``relay.teams.stream``
journals its own first update (``mode``/``stream_id``/``sequence``/``shown_text``, that module's
docstring): when the turn runs, the stream sink adopts the open stream and finishes it with the
answer instead of opening a second stream in the chat (Teams allows one at a time). Group chats
and channels have no streaming and no progress bar; they get a typing indicator, not an extra
message in a shared thread.
"""

from __future__ import annotations

import time

from relay.domain import ConversationRef, ConversationType, TurnId
from relay.store.base import Store
from relay.teams.activities import stream_info, typing_activity
from relay.teams.connector import BotConnector

BUSY_TEXT = "Busy — your question is queued. I'll answer as soon as I can."


class TeamsBusyNotice:
    """``relay.admission.BusyNotifier`` for Teams."""

    def __init__(self, connector: BotConnector, store: Store, text: str = BUSY_TEXT) -> None:
        self._connector = connector
        self._store = store
        self._text = text

    async def queued(self, turn_id: TurnId, ref: ConversationRef) -> None:
        if ref.conversation_type is not ConversationType.PERSONAL:
            await self._connector.send(ref, typing_activity(ref), idempotent=True)
            return
        if await self._store.get_delivery(turn_id):
            return  # an earlier run already showed something: that run's state stands
        entity = stream_info(stream_type="informative", stream_sequence=1)
        result = await self._connector.send(
            ref, typing_activity(ref, text=self._text, entities=[entity])
        )
        if result.activity_id is None:
            return  # no stream id: nothing the sink could continue; it opens its own stream
        await self._store.save_delivery(
            turn_id,
            {
                "mode": "stream",
                "stream_id": result.activity_id,
                "sequence": 1,
                "shown_chars": 0,
                "shown_text": "",
                "last_request_at": time.time(),
                "stream_closed": False,
                "cancelled": False,
            },
        )
