"""A Teams-native streamed answer in a 1:1 chat: progress, cumulative text, one rich final message.

Teams streams a bot message as ``typing`` activities carrying a ``streaminfo`` entity — an
*informative* update (the blue progress bar, ≤ 1000 chars), then cumulative *streaming* text, then
a ``message`` with ``streamType: final``, the stream id and no ``streamSequence`` (reference
teams-platform.md §1.1). The rules that bite peers are enforced by construction here: one sender
task per stream with one request in flight, each request starting at least
:attr:`StreamTiming.interval` after the previous one was answered (Teams allows 1 req/s and
advises 1.5–2 s, §1.1, §2), text that only ever grows (everything the agent wrote, cut back
after a word to keep spans balanced, ``relay.teams.stream_cut``), a final whose text starts with
everything streamed (else 403), and AI label / citations / feedback / attachments only on the final
(§1.1, §6.4). :meth:`TeamsStream.update` is O(1): it stores the reply and sets an event. The sender
sleeps until the pacing window opens, then until new chunks arrive — no polling — so the first
text goes out at the first moment pacing allows after the first word, and cutting costs what
the new text costs (the cutter keeps the rendering of finished paragraphs).

The 2-minute cap (§1.1): at :attr:`StreamTiming.max_seconds` (default 100 s) the sender closes the
stream itself with the text streamed so far and delivers the rest later as normal follow-up
messages; a typing indicator covers the gap. If Teams ends the stream anyway (403 "exceeded
streaming time", or any other refusal mid-stream), the same remainder path runs from the last text
Teams *acknowledged*, so the user never sees text twice and never loses text (peers §5). Stop
(403 "cancel") ends the turn CANCELLED with nothing more sent; "not allowed"/405 before a stream
exists falls back to the typing + normal-message presentation.

The pieces: ``relay.teams.stream_state`` (pacing, phases and the journaled delivery record),
``relay.teams.stream_close`` (every way a stream ends, and what follows it), this module (the
ReplySink and its sender task) and ``relay.teams.stream_cut`` (where the text may be cut).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from relay.domain import Reply
from relay.errors import (
    AmbiguousError,
    LeaseLost,
    RetryableError,
    StreamCancelled,
    UpstreamError,
)
from relay.teams.activities import stream_info, typing_activity
from relay.teams.citations import ai_message_entity
from relay.teams.delivery import send_pieces
from relay.teams.markdown import append_paragraph
from relay.teams.render import MessagePayload, final_message_payload
from relay.teams.stream_close import StreamClosing
from relay.teams.stream_state import Phase, StreamTiming

__all__ = ["NO_ANSWER", "Phase", "StreamTiming", "TeamsStream"]

log = logging.getLogger(__name__)

GENERIC_PROGRESS = "Working on it…"
NO_ANSWER = "No answer to this message."  # the final of a stream whose turn had no answer
INFORMATIVE_MAX_CHARS = 1000  # §1.1: informative text ≤ 1 KB / 1000 characters
HALT_GRACE = 5.0  # an interrupted run waits this long for a stream request already on the wire


class TeamsStream(StreamClosing):
    """The :class:`relay.turns.ReplySink` of a personal chat (see the module docstring)."""

    # -- ReplySink ---------------------------------------------------------------------------------

    async def start(self, *, show_progress: bool) -> None:
        self._show_progress = self._progress_checked = show_progress
        await self._load()
        if self._cancel_error is not None:
            raise self._cancel_error  # Stop was pressed on the stream a previous run left open
        if self.phase is Phase.OPEN and self.stream_id is None:
            self._task = asyncio.create_task(self._sender())
        elif self.phase is not Phase.OPEN and self.phase is not Phase.CANCELLED:
            self._typing.start()
        # OPEN with a stream id: an earlier run's stream that showed only progress; its bubble
        # stays (the agent is at work) and finish() finalises it with the answer.

    async def update(self, reply: Reply) -> None:
        if self._cancel_error is not None:
            raise self._cancel_error  # ends the tail; the pipeline records CANCELLED
        if self._lost is not None:
            raise self._lost
        self._reply = reply
        self._wake.set()

    async def finish(self, reply: Reply) -> None:
        self._reply, self._ended = reply, True
        await self._stop_sender()
        await self._typing.stop()
        if self._cancel_error is not None:
            raise self._cancel_error
        if self._lost is not None:
            raise self._lost
        if self.phase is Phase.CANCELLED:
            return
        if self.phase is Phase.FALLBACK:
            await self._send_follow_ups(final_message_payload(reply, **self._render_kw()))
        elif self.phase is Phase.OPEN and self.stream_id is not None:
            await self._finalise(reply)
        else:
            await self._deliver_remainder(reply)

    async def fail(self, message: str) -> None:
        self._ended = True
        await self._stop_sender()
        await self._typing.stop()
        await self._load()  # failed before start(): still close a stream left open before
        if self.phase is Phase.CANCELLED or self._interrupted:
            return
        if self.phase is Phase.OPEN and self.stream_id is not None and self._shown is not None:
            text = append_paragraph(self._shown, message)
            entities = [ai_message_entity([])] if self._shown else []
            if await self._send_final(MessagePayload(text, entities)):
                return
            if self._cancel_error is not None:
                return
        await send_pieces(
            self._turn,
            self._connector,
            self._store,
            [MessagePayload(message)],
            self._delivery,
            key="notices_sent",
        )

    async def close(self, *, interrupted: bool = False) -> None:
        if interrupted:
            await self._halt()
        else:
            await self._stop_sender()
        await self._typing.stop()
        if self._ended or self._interrupted or self.phase is not Phase.OPEN:
            return
        if self.stream_id is not None and self._shown is not None:
            # The turn ended without an answer (e.g. only unusable files): end the progress
            # bubble, or it stays stuck and blocks the chat's next stream (§1.1).
            entities = [ai_message_entity([])] if self._shown else []
            await self._send_final(MessagePayload(self._shown or NO_ANSWER, entities))

    async def _halt(self) -> None:
        """Shutdown or a lost lease: send nothing more, but let a request already on the wire
        finish (its text was journaled before it left), so that the run that resumes never has
        two requests of one stream in flight."""
        self._interrupted = True
        self._stop.set()
        self._wake.set()
        task, self._task = self._task, None
        if task is not None:
            _done, pending = await asyncio.wait({task}, timeout=HALT_GRACE)
            for late in pending:
                late.cancel()
            await asyncio.gather(task, return_exceptions=True)

    # -- the sender task ---------------------------------------------------------------------------

    async def _stop_sender(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task  # lets an in-flight request finish: one request at a time
            self._task = None

    async def _wait(self, event: asyncio.Event, timeout: float | None) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)

    async def _sender(self) -> None:
        try:
            await self._send_update("informative", self._label() or GENERIC_PROGRESS)
            await self._pump()
        except LeaseLost as exc:
            # Another replica owns the turn now: it closes this stream (_close_abandoned).
            self._lost, self._interrupted = exc, True
            return
        except Exception:
            # A bug here must not lose the answer: finish() delivers it outside the stream.
            log.exception("stream sender of turn %s crashed", self._turn.turn_id)
            if self.phase is Phase.OPEN:
                await self._broken()
        if self.phase in (Phase.CLOSED, Phase.FALLBACK) and not self._stop.is_set():
            self._typing.start()  # the agent is still working: keep the user informed

    async def _pump(self) -> None:
        """Send each update at the first moment pacing allows once there is something new.

        No polling: the loop sleeps until the pacing window opens, then until :meth:`update`
        brings new chunks; text is cut only when it may be sent (its cost stays with the
        pacing cadence, not with the chunk rate)."""
        while self.phase is Phase.OPEN and not self._stop.is_set():
            now = time.monotonic()
            left = self._started + self._timing.max_seconds - now if self.stream_id else None
            if left is not None and left <= 0:
                await self._close_early()
                return
            if self._not_before > now:
                pause = self._not_before - now
                await self._wait(self._stop, pause if left is None else min(pause, left))
                continue
            self._wake.clear()
            nxt = await self._next_update()
            if nxt is None:
                await self._wait(self._wake, left)
            else:
                await self._send_update(*nxt)

    async def _next_update(self) -> tuple[str, str] | None:
        reply, shown = self._reply, self._shown
        if shown is None:
            return None
        candidate = None
        if reply is not None and not self._diverged:
            candidate = self._cutter.advance(reply.text)
        if candidate and candidate != shown:
            if candidate.startswith(shown):
                return "streaming", candidate
            self._diverged = True  # the agent rewrote streamed text (v7 reset-step): stop here
            log.info("turn %s: answer diverged from the streamed text", self._turn.turn_id)
        if shown:
            return None  # no informative updates once text is showing (§1.1)
        if reply is not None and reply.progress and not self._progress_checked:
            # The first turn of a conversation starts before Neo told us the session's setting.
            self._progress_checked = True
            session = await self._store.get_session(self._turn.bot_id, self._turn.conversation_id)
            self._show_progress = bool(session and session.show_progress)
        label = self._label()
        if self.stream_id is None:
            return "informative", label or GENERIC_PROGRESS  # the first request is still due
        if label and label != self._informative:
            return "informative", label
        return None

    def _label(self) -> str | None:
        reply = self._reply
        if self._show_progress and reply is not None and reply.progress:
            return reply.progress[-1][:INFORMATIVE_MAX_CHARS]
        return None

    async def _send_update(self, kind: str, text: str) -> None:
        if self._interrupted:
            return
        seq = self.sequence + 1
        entity = stream_info(stream_type=kind, stream_sequence=seq, stream_id=self.stream_id)
        activity = typing_activity(self._turn.ref, text=text, entities=[entity])
        first = self.stream_id is None
        if not first:  # write-ahead (relay.teams.stream_state): a crash mid-request loses nothing
            await self._journal_ahead(seq, text if kind == "streaming" else None)
        started = time.monotonic()
        try:
            # Only the first request creates something; a repeated update is harmless.
            result = await self._post(activity, idempotent=self.stream_id is not None)
        except RetryableError as exc:  # 429 / 412 / 503: not processed, sequence not used
            await self._retry_later(exc, exc.retry_after)
            return
        except AmbiguousError as exc:
            if self.stream_id is None:
                await self._broken(exc)  # a stream may exist whose id we lost: do not stream
                return
            self.sequence = seq  # may have been processed: never reuse its number
            await self._retry_later(exc, None)
            return
        except StreamCancelled as exc:
            await self._cancelled(exc)
            return
        except UpstreamError as exc:
            await self._broken(exc)
            return
        self._failures = 0
        self.sequence = seq
        if self.stream_id is None:
            if result.activity_id is None:
                await self._broken()
                return
            self.stream_id, self._started = result.activity_id, started
        if kind == "streaming":
            self._shown, self._shown_chars = text, len(text)
        else:
            self._informative = text
        self._ahead = None
        self._prior_closing = None  # the stream is open: a dead run's final never arrived
        if first:  # the stream's id comes with this answer: journal it now
            await self._save()
