"""Thumbs up / down on an answer: tied to its turn and Neo session, logged and counted.

Teams delivers the feedback buttons' result as a ``message/submitAction`` invoke whose
``replyToId`` is the bot message that was rated, and does not store it anywhere itself
(teams-platform.md §6.4). The relay maps that message id back to the turn that sent it — the
presenters record each sent activity id in the turn's delivery record (``activity_ids``; the
streamed final message's id is the ``stream_id``) — and logs one line with the bot, session and
turn, plus a counter for metrics. Neo documents no per-message feedback endpoint for a platform
caller (its ``Feedback`` tag is "end-user feedback links (signed-URL auth)" with undocumented
paths, neo-chat-api.md §a.4 "Feedback", §b item 17), so nothing is forwarded to Neo.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

from relay.domain import ConversationRef, Turn
from relay.store.base import Store

log = logging.getLogger(__name__)

LOOKBACK_TURNS = 50  # feedback is given on recent answers; older ones are counted unmatched

# (bot id, reaction) → submissions; the metrics module can export this as a labelled counter.
FEEDBACK_COUNTS: Counter[tuple[str, str]] = Counter()


@dataclass(frozen=True, slots=True)
class FeedbackEvent:
    ref: ConversationRef
    reply_to_id: str | None  # the rated bot message
    reaction: str  # "like" | "dislike" (anything else is recorded as given)
    comment_chars: int  # the free-text comment's length: its text is user content, never logged
    user_aad_id: str | None


def delivered_ids(delivery: dict[str, object]) -> set[str]:
    """Every Teams activity id a turn's delivery record says it sent."""
    raw = delivery.get("activity_ids")
    ids = {str(i) for i in raw if i} if isinstance(raw, list) else set()
    stream_id = delivery.get("stream_id")
    if isinstance(stream_id, str) and stream_id:
        ids.add(stream_id)
    return ids


class FeedbackRecorder:
    """Finds the rated turn and records the feedback; never raises."""

    def __init__(self, store: Store, *, lookback: int = LOOKBACK_TURNS) -> None:
        self._store = store
        self._lookback = lookback

    async def find_turn(self, ref: ConversationRef, activity_id: str) -> Turn | None:
        turns = await self._store.conversation_turns(ref.bot_id, ref.conversation_id)
        for turn in reversed(turns[-self._lookback :]):
            if activity_id in delivered_ids(await self._store.get_delivery(turn.turn_id)):
                return turn
        return None

    async def record(self, event: FeedbackEvent) -> Turn | None:
        turn = None
        if event.reply_to_id:
            try:
                turn = await self.find_turn(event.ref, event.reply_to_id)
            except Exception:  # a store hiccup must not lose the count
                log.exception("feedback: could not look up the rated message")
        FEEDBACK_COUNTS[(event.ref.bot_id, event.reaction)] += 1
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
