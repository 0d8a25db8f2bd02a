"""Thumbs up / down on an answer: tied to its turn and Neo session, logged and counted.

Teams delivers the feedback buttons' result as a ``message/submitAction`` invoke whose
``replyToId`` is the bot message that was rated, and does not store it anywhere itself
(teams-platform.md §6.4). The relay maps that message id back to the turn that sent it in one
indexed lookup (``Store.find_delivered_turn``: a finished turn indexes the Teams activity ids its
delivery record holds — ``activity_ids``, the streamed message's ``stream_id``), logs one line with
the bot, session and turn, and reports the reaction to the hooks in :data:`ON_FEEDBACK`
(``relay_feedback_total`` on ``/metrics``). Neo documents no per-message feedback endpoint for a
platform caller (its ``Feedback`` tag is "end-user feedback links (signed-URL auth)" with
undocumented paths, neo-chat-api.md §a.4 "Feedback", §b item 17), so nothing is forwarded to Neo.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from relay.domain import ConversationRef, Turn
from relay.store.base import Store

log = logging.getLogger(__name__)

# Called with (bot id, reaction) for every recorded submission; relay.ops.metrics attaches here.
ON_FEEDBACK: list[Callable[[str, str], None]] = []


@dataclass(frozen=True, slots=True)
class FeedbackEvent:
    ref: ConversationRef
    reply_to_id: str | None  # the rated bot message
    reaction: str  # "like" | "dislike" (anything else is recorded as given)
    comment_chars: int  # the free-text comment's length: its text is user content, never logged
    user_aad_id: str | None


class FeedbackRecorder:
    """Finds the rated turn and records the feedback; never raises."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def find_turn(self, ref: ConversationRef, activity_id: str) -> Turn | None:
        return await self._store.find_delivered_turn(ref.bot_id, ref.conversation_id, activity_id)

    async def record(self, event: FeedbackEvent) -> Turn | None:
        turn = None
        if event.reply_to_id:
            try:
                turn = await self.find_turn(event.ref, event.reply_to_id)
            except Exception:  # a store hiccup must not lose the count
                log.exception("feedback: could not look up the rated message")
        for hook in list(ON_FEEDBACK):
            hook(event.ref.bot_id, event.reaction)
        log.info(
            "feedback %s on message %s: bot %s session %s turn %s (comment: %d chars)",
            event.reaction,
            event.reply_to_id,
            event.ref.bot_id,
            turn.session_id if turn else None,
            turn.turn_id if turn else None,
            event.comment_chars,
            extra={"turn_id": turn.turn_id if turn else None},
        )
        return turn
