"""A turn's answer in segments: an approval card ends one message, what follows starts another.

Neo pauses a chat turn on a technician-in-the-loop (TIL) request and shows it "inline in the
conversation as an approval card" (neo-chat-api.md §a.5 [USING]); the request arrives mid-turn as
a data part. Teams lets only the *final* message of a stream carry attachments (cards) —
teams-platform.md §1.1 "Only the final message may carry attachments" — and a stream must end
within 2 minutes, while a technician may take much longer to decide. So the card cannot wait for
the end of the turn, nor be attached to a stream that stays open: when a TIL request arrives, the
current sink is finished with the reply so far (the renderer turns the request into the card),
which takes at most one pacing interval plus one request — well within 2 s at the default 1.5 s
interval. Anything the agent says after that — the continuation once the decision is in — goes
through a *new* sink (segment 1, 2, …: a new message or stream in the same conversation), which
shows only what came after the card. The TIL ids shown are recorded as conversation notes
(``Store.merge_note``, ``til:<id>``) so that any replica can check that a click is for a request
this conversation really showed (``relay.approvals``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from relay.domain import Reply, Turn
from relay.store.base import Store
from relay.turn_seams import ReplySink, SinkFactory

log = logging.getLogger(__name__)


def til_note(til_request_id: str) -> str:
    """The conversation note recording one TIL request shown there."""
    return f"til:{til_request_id}"


@dataclass(frozen=True, slots=True)
class Mark:
    """How much of the reply earlier segments delivered."""

    text_chars: int = 0
    approvals: int = 0
    files: int = 0


def after(reply: Reply, mark: Mark) -> Reply:
    """The part of ``reply`` that comes after ``mark``: what the next segment shows.

    Text is cut at the delivered length (the assembled text only ever grows by appending);
    sources stay whole because citation markers refer to them by position.
    """
    if mark == Mark():
        return reply
    rest = reply.text[mark.text_chars :].lstrip()
    return replace(
        reply,
        text_parts=[rest] if rest else [],
        approvals=reply.approvals[mark.approvals :],
        files=reply.files[mark.files :],
        progress=[],
    )


def has_content(view: Reply) -> bool:
    return bool(view.text.strip() or view.approvals or view.files)


class Segments:
    """The sinks of one turn run, one per segment (see the module docstring)."""

    def __init__(self, store: Store, sinks: SinkFactory, turn: Turn, first: ReplySink) -> None:
        self._store = store
        self._sinks = sinks
        self._turn = turn
        self.sink: ReplySink | None = first
        self.number = 0
        self.mark = Mark()
        self.shown_tils: list[str] = []  # TIL ids this run showed (or had shown before a restart)
        self.show_progress = False  # the session's setting, once the pipeline read it

    def view(self, reply: Reply) -> Reply:
        return after(reply, self.mark)

    async def update(self, reply: Reply) -> None:
        """Feed the sink what is new; open the next segment's sink once there is something."""
        view = self.view(reply)
        if self.sink is None:
            if not has_content(view):
                return
            await self.open_next()
        assert self.sink is not None
        await self.sink.update(view)
        new = [
            a.til_request_id
            for a in reply.approvals[self.mark.approvals :]
            if a.til_request_id and a.til_request_id not in self.shown_tils
        ]
        if new:
            await self._show_cards(reply, new)

    async def open_next(self) -> ReplySink:
        self.number += 1
        sink = self.sink = self._sinks.open(self._turn, segment=self.number)
        await sink.start(show_progress=self.show_progress)
        return sink

    async def _show_cards(self, reply: Reply, til_ids: list[str]) -> None:
        turn = self._turn
        for til_id in til_ids:
            await self._store.merge_note(
                turn.bot_id,
                turn.conversation_id,
                til_note(til_id),
                {
                    "shown": True,
                    "turn_id": turn.turn_id,
                    "session_id": turn.session_id,
                    "segment": self.number,
                    # The answer text the card shares its message with: the decision replaces
                    # that message in place and must keep the text (relay.teams.messenger).
                    "answer": self.view(reply).text,
                },
            )
        self.shown_tils += til_ids
        assert self.sink is not None
        log.info("turn %s: approval card for TIL %s mid-turn", turn.turn_id, ",".join(til_ids))
        await self.sink.finish(self.view(reply))
        await self.close_current()
        self.mark = Mark(len(reply.text), len(reply.approvals), len(reply.files))

    async def close_current(self, *, interrupted: bool = False) -> None:
        sink, self.sink = self.sink, None
        if sink is not None:
            await sink.close(interrupted=interrupted)

    @property
    def waiting_on_card(self) -> bool:
        """An approval card ended the last segment and nothing has followed it yet."""
        return self.sink is None and bool(self.shown_tils)
