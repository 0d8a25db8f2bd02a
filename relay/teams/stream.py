"""A Teams-native streamed answer in a 1:1 chat: progress, cumulative text, one rich final message.

Teams streams a bot message as ``typing`` activities carrying a ``streaminfo`` entity — an
*informative* update (the blue progress bar, ≤ 1000 chars), then cumulative *streaming* text, then
a ``message`` with ``streamType: final``, the stream id and no ``streamSequence`` (reference
teams-platform.md §1.1). The rules that bite peers are enforced by construction here: one sender
task per stream with one request in flight, each request starting at least
:attr:`StreamTiming.interval` after the previous one was answered (Teams allows 1 req/s and
advises 1.5–2 s, §1.1, §2), text that only ever grows (a rendered prefix
cut at a blank line outside code, where ``relay.teams.markdown`` is prefix-stable), a final whose
text starts with everything streamed (else 403), and AI label / citations / feedback / attachments
only on the final (§1.1, §6.4). :meth:`TeamsStream.update` is O(1): it stores the reply and sets an
event; all rendering happens in the sender at the pacing cadence (DESIGN.md performance notes).

The 2-minute cap (§1.1): at :attr:`StreamTiming.max_seconds` (default 100 s) the sender closes the
stream itself with the text streamed so far and delivers the rest later as normal follow-up
messages; a typing indicator covers the gap. If Teams ends the stream anyway (403 "exceeded
streaming time", or any other refusal mid-stream), the same remainder path runs from the last text
Teams *acknowledged*, so the user never sees text twice and never loses text (peers §5). Stop
(403 "cancel") ends the turn CANCELLED with nothing more sent; "not allowed"/405 before a stream
exists falls back to the typing + normal-message presentation.

Crash safety: after every accepted request the turn's delivery record
(``Store.save_delivery(turn_id, dict)``) holds::

    mode           "stream" (this module) or "messages" (no stream; normal messages only)
    stream_id      Teams stream id (the first update's 201 id), or absent
    sequence       the last streamSequence used
    shown_chars    characters of the rendered answer text visible in the streamed message
    shown_text     that text itself, while the stream is open (a resumed run closes with it)
    last_request_at  wall-clock time of the last stream request (paces that closing final)
    stream_closed  true once the final went out, or Teams ended the stream
    plan           "rest": follow-ups are final_message_payload()[1:];
                   "remainder": follow-ups are the text after shown_chars, re-split
    pieces_sent    follow-up (or fallback) messages already sent, in plan order
    activity_ids   ids of those messages (``relay.feedback`` maps a rating back to the turn)
    notices_sent   error notices already sent
    cancelled      true once the user pressed Stop

A relay restarted mid-turn (or another replica taking the turn over) finds ``mode == "stream"``.
If that stream is still open, Teams keeps showing its bubble and refuses a second stream in the
chat (§1.1 "one concurrent streaming response per chat"). When it shows text, the resumed run
first closes it with a plain final whose text is exactly ``shown_text`` — it does not stream on:
the old stream's start time belongs to a dead process, and a plain close is always valid — and
everything after ``shown_chars`` / ``pieces_sent`` follows as normal messages. When it shows only
progress, the bubble stays while the agent works and the answer (or error) becomes its final. A
refusal of either final ("already completed", timed out, not allowed) counts as closed. An
interrupted run (shutdown, lost lease) sends nothing more — it only lets a request already on the
wire finish and be journaled — and leaves the close to the next run; a turn that ends without an
answer (files only, none usable) closes its stream with the streamed text, or :data:`NO_ANSWER`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from botbuilder.schema import Activity

from relay.domain import Reply, Turn
from relay.errors import (
    AmbiguousError,
    LeaseLost,
    PermanentError,
    RetryableError,
    StreamCancelled,
    StreamRejected,
    UpstreamError,
)
from relay.retry import TEAMS, retry_call
from relay.store.base import Store
from relay.teams.activities import OpenEntity, StreamInfo, message_activity, typing_activity
from relay.teams.citations import (
    ai_message_entity,
    build_citations,
)
from relay.teams.connector import BotConnector, SendResult
from relay.teams.delivery import TYPING_REFRESH_SECONDS, TypingKeeper, send_pieces
from relay.teams.markdown import append_paragraph, to_teams_markdown
from relay.teams.render import (
    MESSAGE_LIMIT_BYTES,
    MessagePayload,
    final_message_payload,
)
from relay.teams.stream_cut import StreamCutter
from relay.teams.stream_text import remainder_payloads

log = logging.getLogger(__name__)

GENERIC_PROGRESS = "Working on it…"
STILL_WORKING = "Still working on it — the rest of the answer follows in a new message."
NO_ANSWER = "No answer to this message."  # the final of a stream whose turn had no answer
INFORMATIVE_MAX_CHARS = 1000  # §1.1: informative text ≤ 1 KB / 1000 characters
HALT_GRACE = 5.0  # an interrupted run waits this long for a stream request already on the wire


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


class TeamsStream:
    """The :class:`relay.turns.ReplySink` of a personal chat (see the module docstring)."""

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

    async def _load(self) -> None:
        """Restore the journaled delivery state, closing a stream a previous run left open."""
        if self._loaded:
            return
        self._loaded = True
        d = self._delivery = await self._store.get_delivery(self._turn.turn_id)
        if d.get("cancelled"):
            self.phase = Phase.CANCELLED
        elif d.get("mode") == "stream" and d.get("stream_id"):
            self.stream_id, self.sequence = str(d["stream_id"]), int(d.get("sequence", 0))
            self._shown_chars = int(d.get("shown_chars", 0))
            shown = d.get("shown_text")
            if (
                d.get("stream_closed")
                or not isinstance(shown, str)
                or len(shown) != self._shown_chars
            ):
                self.phase, self._shown = Phase.CLOSED, None  # closed (or its text unknown)
            elif shown:
                await self._close_abandoned(shown, d.get("last_request_at"))
            else:
                self._shown = ""  # only progress was shown: the answer can still be its final
        elif d.get("mode") == "messages":
            self.phase = Phase.FALLBACK

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
        finish and be journaled, so the run that resumes knows exactly what Teams shows."""
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
        entity = StreamInfo(stream_type=kind, stream_sequence=seq, stream_id=self.stream_id)
        activity = typing_activity(self._turn.ref, text=text, entities=[entity])
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
        await self._save()

    async def _post(self, activity: Activity, *, idempotent: bool) -> SendResult:
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
        """Teams refused the stream: finish outside it from the last acknowledged text."""
        if exc is not None:
            log.warning("stream of turn %s ended by Teams: %s", self._turn.turn_id, exc)
        self.phase = Phase.CLOSED if self.stream_id is not None else Phase.FALLBACK
        await self._save()

    async def _cancelled(self, exc: StreamCancelled) -> None:
        log.info("turn %s: the user pressed Stop", self._turn.turn_id)
        self.phase, self._cancel_error = Phase.CANCELLED, exc
        await self._save()

    async def _save(self) -> None:
        d = self._delivery
        d["mode"] = "messages" if self.phase is Phase.FALLBACK else "stream"
        if self.stream_id is not None:
            d["stream_id"] = self.stream_id
        d["sequence"] = self.sequence
        d["shown_chars"] = self._shown_chars
        if self.phase is Phase.OPEN:
            d["shown_text"] = self._shown or ""  # what a resumed run closes the stream with
        else:
            d.pop("shown_text", None)
        if self._last_request_at is not None:
            d["last_request_at"] = self._last_request_at
        d["stream_closed"] = self.phase is not Phase.OPEN
        d["cancelled"] = self.phase is Phase.CANCELLED
        await self._store.save_delivery(self._turn.turn_id, d)

    # -- closing the stream ------------------------------------------------------------------------

    async def _close_abandoned(self, shown: str, last_request_at: object) -> None:
        """End the stream a previous run left open with exactly the text Teams acknowledged,
        plain (no AI label, citations or buttons: those belong to the answer that follows); the
        rest goes out as normal messages (module docstring)."""
        log.info("turn %s: closing stream %s left open", self._turn.turn_id, self.stream_id)
        interval = self._timing.interval
        wait = interval  # that run's last request may have been a moment ago (1 req/s, §1.1)
        if isinstance(last_request_at, int | float):
            wait = min(interval, max(0.0, float(last_request_at) + interval - time.time()))
        self._not_before = time.monotonic() + wait
        self._shown = shown
        self._delivery["plan"] = "remainder"
        await self._send_final(MessagePayload(shown))

    async def _close_early(self) -> None:
        """The time budget is spent: close with what is safe to show; the rest follows later."""
        reply = self._reply
        text = self._shown or ""
        if reply is not None and not self._diverged:
            candidate = self._cutter.advance(reply.text)
            text = candidate if candidate and candidate.startswith(text) else text
        entities: list[dict[str, Any]] = []
        if text:
            cited_text, citations = build_citations(text, reply.sources if reply else [])
            entities = [ai_message_entity(citations if cited_text == text else [])]
        payload = MessagePayload(text or STILL_WORKING, entities)
        if await self._send_final(payload, answer_chars=len(text)):
            self._delivery["plan"] = "remainder"
            await self._save()

    async def _finalise(self, reply: Reply) -> None:
        payloads = final_message_payload(reply, **self._render_kw())
        first, rest = payloads[0], payloads[1:]
        shown = self._shown or ""
        if first.text.startswith(shown):
            if await self._send_final(first):
                self._delivery["plan"] = "rest"
                await self._save()
                await self._send_follow_ups(rest)
                return
        elif to_teams_markdown(reply.text).text.startswith(shown):
            # A long answer whose first piece ends before the streamed words (pieces end at
            # paragraphs): close with exactly the streamed text, the rest follows (§1.1).
            cited, citations = build_citations(shown, reply.sources)
            entity = ai_message_entity(citations if cited == shown else [])
            if await self._send_final(MessagePayload(shown, [entity])):
                self._delivery["plan"] = "remainder"
                await self._save()
        # Teams 403s a final that does not start with the streamed text (§1.1): close with
        # exactly that text, then replace the message in place (teams.py does the same).
        elif await self._send_final(MessagePayload(shown, [ai_message_entity([])])):
            # Journal the plan first: a resumed run must not re-send what the replace shows.
            self._delivery["plan"] = "rest"
            await self._save()
            await self._replace_in_place(first)
            await self._send_follow_ups(rest)
            return
        if self._cancel_error is not None:
            raise self._cancel_error
        await self._deliver_remainder(reply)

    async def _send_final(
        self, payload: MessagePayload, *, answer_chars: int | None = None
    ) -> bool:
        """Close the stream with ``payload``; False when Teams refused (phase is then CLOSED)."""
        assert self.stream_id is not None
        parts: dict[str, Any] = {
            "entities": [
                StreamInfo(stream_type="final", stream_id=self.stream_id),
                *(OpenEntity(e) for e in payload.entities),
            ],
            "attachments": payload.attachments,
            "channel_data": payload.channel_data,
        }
        activity = message_activity(self._turn.ref, payload.text, **parts)
        ambiguous = False
        for _ in range(TEAMS.attempts):
            await asyncio.sleep(max(0.0, self._not_before - time.monotonic()))
            if self._interrupted:
                return False
            try:
                # Idempotent by stream id: a replay after success is refused "already completed".
                await self._post(activity, idempotent=True)
            except RetryableError as exc:
                wait = exc.retry_after if exc.retry_after is not None else TEAMS.base
                wait = min(wait, TEAMS.max_retry_after)  # never sooner than the pacing allows
                self._not_before = max(self._not_before, time.monotonic() + wait)
                continue
            except AmbiguousError:
                ambiguous = True
                continue
            except StreamCancelled as exc:
                await self._cancelled(exc)
                return False
            except StreamRejected as exc:
                if not (ambiguous and "already completed" in exc.message.lower()):
                    await self._broken(exc)
                    return False
            except UpstreamError as exc:
                await self._broken(exc)
                return False
            self.phase = Phase.CLOSED
            self._shown = payload.text if answer_chars is None else payload.text[:answer_chars]
            self._shown_chars = len(self._shown)
            await self._save()
            return True
        await self._broken()
        return False

    async def _replace_in_place(self, payload: MessagePayload) -> None:
        assert self.stream_id is not None
        activity = message_activity(
            self._turn.ref,
            payload.text,
            entities=[OpenEntity(e) for e in payload.entities],
            attachments=payload.attachments,
            channel_data=payload.channel_data,
        )
        stream_id = self.stream_id
        try:
            # An update by id is idempotent, so transient and ambiguous failures are retried.
            await retry_call(
                lambda: self._connector.update(self._turn.ref, stream_id, activity),
                TEAMS,
                idempotent=True,
                what="teams update",
            )
        except AmbiguousError as exc:
            # It may have been applied: sending anew could show the answer twice.
            log.warning("turn %s: in-place update unconfirmed (%s)", self._turn.turn_id, exc)
        except PermanentError as exc:
            # Refused for good (e.g. the message is gone): the answer must still reach the user.
            log.warning(
                "turn %s: in-place update refused (%s); sending anew", self._turn.turn_id, exc
            )
            await self._connector.send(self._turn.ref, activity)

    # -- outside the stream ------------------------------------------------------------------------

    def _render_kw(self) -> dict[str, Any]:
        return {
            "limit_bytes": self._timing.message_limit_bytes,
            "reference": self._turn.chat_turn_id,
        }

    async def _send_follow_ups(self, payloads: list[MessagePayload]) -> None:
        await send_pieces(self._turn, self._connector, self._store, payloads, self._delivery)

    async def _deliver_remainder(self, reply: Reply) -> None:
        """What Teams has not shown yet, as normal messages (never repeating shown text)."""
        if self._delivery.get("plan") == "rest":  # restarted after a successful final
            await self._send_follow_ups(final_message_payload(reply, **self._render_kw())[1:])
            return
        self._delivery["plan"] = "remainder"
        limit = self._timing.message_limit_bytes
        reference = self._turn.chat_turn_id
        await self._send_follow_ups(
            remainder_payloads(reply, self._shown, self._shown_chars, limit, reference)
        )
