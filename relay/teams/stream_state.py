"""The journaled state of one Teams stream: pacing, phase, and what Teams has acknowledged.

A stream request must start at least :attr:`StreamTiming.interval` after the previous one was
answered (Teams allows 1 req/s and advises 1.5–2 s, reference teams-platform.md §1.1, §2), and a
relay restarted mid-turn must know what Teams shows. This module holds that state, the one
place that posts a stream request (:meth:`StreamState._post`) and the journal writes.

Crash safety: the turn's delivery record (``Store.save_delivery(turn_id, dict)``) is written
*before* every stream update but the first (write-ahead: the update's sequence and, for a
streaming update, its text), after the first (whose response names the stream), and after every
final or refusal. It holds::

    mode           "stream" (this module) or "messages" (no stream; normal messages only)
    stream_id      Teams stream id (the first update's 201 id), or absent
    sequence       the last streamSequence used (or about to be)
    shown_chars    characters of the rendered answer text visible in the streamed message: while
                   the stream is open, of the last update sent or about to be sent
    shown_text     that text itself, while the stream is open (a resumed run closes with it)
    last_request_at  wall-clock time of the last stream request (paces that closing final)
    stream_closed  true once the final went out, or Teams ended the stream
    plan           "rest": follow-ups are final_message_payload()[1:];
                   "remainder": follow-ups are the text after shown_chars, re-split
    pieces_sent    follow-up (or fallback) messages already sent, in plan order
    activity_ids   ids of those messages (``relay.feedback`` maps a rating back to the turn)
    notices_sent   error notices already sent
    cancelled      true once the user pressed Stop
    closing        while a final is on the wire: {"text": the answer text it shows, "plan": the
                   plan once it is accepted} (write-ahead too; see below)

A relay restarted mid-turn (or another replica taking the turn over) finds ``mode == "stream"``.
If that stream is still open, Teams keeps showing its bubble and refuses a second stream in the
chat (§1.1 "one concurrent streaming response per chat"). When it shows text, the resumed run
first closes it with a plain final whose text is exactly ``shown_text`` — it does not stream on:
the old stream's start time belongs to a dead process, and a plain close is always valid — and
everything after ``shown_chars`` / ``pieces_sent`` follows as normal messages. When it shows only
progress, the bubble stays while the agent works and the answer (or error) becomes its final. A
refusal of either final ("already completed", timed out, not allowed) counts as closed. An
interrupted run (shutdown, lost lease) sends nothing more — it only lets a request already on the
wire finish — and leaves the close to the next run; a turn that ends without an
answer (files only, none usable) closes its stream with the streamed text, or
``relay.teams.stream.NO_ANSWER``.

Why write-ahead: a run killed while an update is on the wire cannot know whether Teams applied it.
The update's text extends what Teams shows either way, and a final is accepted only if it starts
with the streamed text (§1.1, 403 otherwise), so closing with the journaled text is valid in both
cases. Journaled after Teams' answer instead, such a crash left the older text in the record: the
close was refused, the bubble kept the newer text and the follow-up repeated it
(``tests/test_recovery_process.py``). A final is journaled ahead as ``closing`` for the same
reason: if a run dies while its final is on the wire, the next run's first request on that stream
either goes through (the final never arrived) or is refused as "already completed" — then that
final did arrive, and the run continues from what it showed, under its plan.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from relay.domain import Reply, Turn
from relay.errors import LeaseLost, StreamCancelled, StreamRejected, UpstreamError
from relay.retry import TEAMS
from relay.store.base import Store
from relay.teams.activities import Payload
from relay.teams.connector import BotConnector, SendResult
from relay.teams.delivery import TYPING_REFRESH_SECONDS, TypingKeeper
from relay.teams.render import MESSAGE_LIMIT_BYTES
from relay.teams.stream_cut import StreamCutter

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StreamTiming:
    """Pacing and limits of one stream (``RELAY_STREAM_INTERVAL``, ``RELAY_STREAM_MAX_SECONDS``)."""

    interval: float = 1.5  # from one response to the next request; Teams: 1 req/s, advice 1.5–2 s
    max_seconds: float = 100.0  # close the stream ourselves well before Teams' 120 s cap
    typing_refresh: float = TYPING_REFRESH_SECONDS
    message_limit_bytes: int = MESSAGE_LIMIT_BYTES

    @property
    def text_limit_bytes(self) -> int:
        """Streamed text stops growing here: half a message, so the final's first piece (whose
        budget is at least half the limit after the entity overhead) always starts with it."""
        return self.message_limit_bytes // 2


class Phase(StrEnum):
    OPEN = "open"  # the stream may still be updated (or has not started yet)
    CLOSED = "closed"  # final sent by us, or Teams ended it: the rest goes as normal messages
    FALLBACK = "fallback"  # no stream at all: typing + normal messages
    CANCELLED = "cancelled"  # the user pressed Stop


class StreamState:
    """What one stream knows and journals; :class:`relay.teams.stream.TeamsStream` builds on it."""

    def __init__(
        self, turn: Turn, connector: BotConnector, store: Store, timing: StreamTiming
    ) -> None:
        self._turn = turn
        self._connector = connector
        self._store = store
        self._timing = timing
        self._typing = TypingKeeper(turn, connector, timing.typing_refresh)
        self._reply: Reply | None = None
        self._cutter = StreamCutter(timing.text_limit_bytes)
        self._wake = asyncio.Event()  # new reply data, or stop
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.phase = Phase.OPEN
        self._cancel_error: StreamCancelled | None = None
        self.stream_id: str | None = None
        self.sequence = 0
        self._shown: str | None = ""  # acknowledged streamed text (None: unknown after restart)
        self._shown_chars = 0
        self._informative: str | None = None
        self._diverged = False
        self._started = 0.0  # monotonic time of the first accepted request
        self._not_before = 0.0  # earliest start of the next request
        self._failures = 0
        self._show_progress = False
        self._progress_checked = False
        self._delivery: dict[str, Any] = {}
        self._loaded = False  # the delivery record was read (and an abandoned stream closed)
        self._ended = False  # finish() or fail() ran
        self._interrupted = False  # shutdown or lost lease: send nothing more
        self._lost: LeaseLost | None = None
        self._last_request_at: float | None = None  # wall clock, journaled for the next run
        # (sequence, streamed text or None for an informative update) of the update journaled
        # ahead and not yet acknowledged (see "write-ahead" in the module docstring)
        self._ahead: tuple[int, str | None] | None = None
        self._closing: dict[str, Any] | None = None  # this run's final, journaled ahead
        self._prior_closing: dict[str, Any] | None = None  # a dead run's, maybe shown already

    async def _post(self, activity: Payload, *, idempotent: bool) -> SendResult:
        """One stream request. The pause runs from its *end*: Teams times arrivals, and ours
        happens somewhere between start and end (token fetch, pacing), so end + interval is the
        only schedule that can never arrive early (§1.1 "only after a successful response")."""
        try:
            return await self._connector.send(self._turn.ref, activity, idempotent=idempotent)
        finally:
            self._not_before = time.monotonic() + self._timing.interval
            self._last_request_at = time.time()

    async def _retry_later(self, exc: UpstreamError, retry_after: float | None) -> None:
        self._failures += 1
        if self._failures >= TEAMS.attempts:
            await self._broken(exc)
            return
        if retry_after is None:
            retry_after = min(TEAMS.cap, self._timing.interval * 2 ** (self._failures - 1))
        retry_after = min(retry_after, TEAMS.max_retry_after)
        log.info("stream update of turn %s waits %.2fs: %s", self._turn.turn_id, retry_after, exc)
        self._not_before = max(self._not_before, time.monotonic() + retry_after)

    async def _broken(self, exc: BaseException | None = None) -> None:
        """Teams refused the stream: finish outside it from the last acknowledged text — or,
        when a dead run's final is what closed it, from what that final shows."""
        prior, self._prior_closing = self._prior_closing, None
        if prior is not None and _already_completed(exc):
            # The final a killed run had on the wire arrived: continue from what it shows.
            log.info("turn %s: the previous run's final arrived", self._turn.turn_id)
            self._closed_by(prior)
            await self._save()
            return
        if exc is not None:
            log.warning("stream of turn %s ended by Teams: %s", self._turn.turn_id, exc)
        self.phase = Phase.CLOSED if self.stream_id is not None else Phase.FALLBACK
        await self._save()

    def _closed_by(self, closing: dict[str, Any]) -> None:
        """The stream is closed by the final ``closing`` describes (ours or a dead run's)."""
        self.phase = Phase.CLOSED
        self._shown = str(closing["text"])
        self._shown_chars = len(self._shown)
        if closing.get("plan"):
            self._delivery["plan"] = closing["plan"]
        self._closing = self._prior_closing = None

    async def _cancelled(self, exc: StreamCancelled) -> None:
        log.info("turn %s: the user pressed Stop", self._turn.turn_id)
        self.phase, self._cancel_error = Phase.CANCELLED, exc
        await self._save()

    async def _journal_ahead(self, sequence: int, text: str | None) -> None:
        """Before sending update ``sequence`` on an existing stream: make it durable first."""
        self._ahead = (sequence, text)
        self._last_request_at = time.time()
        await self._save()

    async def _save(self) -> None:
        d = self._delivery
        d["mode"] = "messages" if self.phase is Phase.FALLBACK else "stream"
        if self.stream_id is not None:
            d["stream_id"] = self.stream_id
        sequence, shown, chars = self.sequence, self._shown or "", self._shown_chars
        if self.phase is Phase.OPEN:
            if self._ahead is not None:  # an update on the wire: its text extends ``shown``
                ahead_sequence, ahead_text = self._ahead
                sequence = max(sequence, ahead_sequence)
                if ahead_text is not None:
                    shown, chars = ahead_text, len(ahead_text)
            d["shown_text"] = shown  # what a resumed run closes the stream with
            # A dead run's unresolved final comes first: if it arrived, it closed the stream.
            closing = self._prior_closing or self._closing
            if closing is not None:
                d["closing"] = closing
            else:
                d.pop("closing", None)
        else:
            d.pop("shown_text", None)
            d.pop("closing", None)
        d["sequence"], d["shown_chars"] = sequence, chars
        if self._last_request_at is not None:
            d["last_request_at"] = self._last_request_at
        d["stream_closed"] = self.phase is not Phase.OPEN
        d["cancelled"] = self.phase is Phase.CANCELLED
        await self._store.save_delivery(self._turn.turn_id, d)


def _already_completed(exc: BaseException | None) -> bool:
    """Teams' refusal of any request on a stream whose final it has accepted (§1.1 errors)."""
    return isinstance(exc, StreamRejected) and "already completed" in exc.message.lower()
