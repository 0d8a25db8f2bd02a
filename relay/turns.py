"""The turn pipeline: journal → session → post → tail → render → done, one journaled step at a time.

This is the relay's core and it speaks only the project's own types: Neo is reached through the
:class:`NeoApi` protocol (implemented by ``relay.neo``), Teams through :class:`ReplySink` objects
(implemented by ``relay.teams``). Each step records its result in the store *before* the next step
relies on it, so a restarted relay continues a turn where it stopped: a turn whose Neo ``202`` was
journaled is never posted again (and Neo's ``client_message_id`` covers the window before that), and
the answer is re-assembled by re-reading the turn's SSE events from its ``since_cursor``.

The journal is a small state machine (``relay.journal``, checked on every write the pipeline
makes): received → session_ready → posted → streaming → delivered, with failed / cancelled
reachable from any unfinished state and nothing leaving a final state. Every turn
reaches a final state within ``turn_deadline`` seconds of arriving (a hard cap around the whole run,
DESIGN.md invariant 3; peers-and-pitfalls.md §5 "Unbounded/hung LLM streams"), and a turn that keeps
crashing the process is given up after :data:`MAX_ATTEMPTS` runs instead of looping forever.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from relay.domain import (
    BotId,
    EventId,
    ModelTier,
    Reply,
    ReplyOutcome,
    SessionId,
    SessionRecord,
    TenantId,
    Turn,
    TurnState,
    UploadedFile,
    client_message_id,
)
from relay.errors import (
    LeaseLost,
    PermanentError,
    RelayError,
    StreamCancelled,
    UpstreamError,
    UserFacingError,
)
from relay.journal import IllegalTransition, check_transition
from relay.retry import NEO, retry_call
from relay.store.base import Store

log = logging.getLogger(__name__)


DEADLINE_TEXT = (
    "Sorry, this is taking far too long, so I've stopped waiting for the answer. Please try again."
)
# A turn that was started this many times without finishing (each start after a crash or restart)
# is failed instead of run again: a message that crashes the process must not crash it forever.
MAX_ATTEMPTS = 5
# Telling the user about a failure and releasing the sink are bounded too: the deadline already
# passed, or Teams is the thing failing; neither may keep the turn from reaching a final state.
FAIL_GRACE = 30.0


# ----------------------------------------------------------------------------------------------
# The pipeline
# ----------------------------------------------------------------------------------------------


class TurnPipeline:
    """Runs one journaled turn to a final state. Safe to call again on a turn it left unfinished."""

    def __init__(
        self,
        store: Store,
        neo: NeoApi,
        sinks: SinkFactory,
        *,
        turn_deadline: float = 900.0,
        fail_grace: float = FAIL_GRACE,
        commands: CommandHandler | None = None,
        files: FilesStep | None = None,
    ) -> None:
        self._store = store
        self._neo = neo
        self._sinks = sinks
        self._turn_deadline = turn_deadline
        self._fail_grace = fail_grace
        self._commands = commands  # /reset, /help, install greeting (relay.commands)
        self._files = files  # attachment uploads (relay.attachments)

    def _budget(self, turn: Turn) -> float:
        """Seconds this run may take: what is left of the deadline counted from arrival.

        A turn resumed after a long outage still gets a short run (at most a minute) so that an
        answer Neo already finished can be delivered rather than replaced by an error.
        """
        age = max(0.0, time.time() - turn.created_at) if turn.created_at else 0.0
        return max(self._turn_deadline - age, min(60.0, self._turn_deadline))

    async def run(self, turn: Turn) -> None:
        if turn.state.is_final:
            return
        if turn.command is not None and self._commands is not None:
            await self._commands.run(turn)  # a command turn, run in conversation order
            return
        sink = self._sinks.open(turn)
        interrupted = False
        try:
            async with asyncio.timeout(self._budget(turn)):
                await self._run(turn, sink)
        except asyncio.CancelledError:
            interrupted = True  # shutdown or a lost lease: the next run resumes (sink.close)
            raise
        except StreamCancelled:
            await self._finish(turn, TurnState.CANCELLED, "stopped by the user")
        except TimeoutError:
            # Only our own deadline: asyncio.timeout turns its cancellation into TimeoutError,
            # while a shutdown's cancellation propagates and leaves the journal for the next start.
            log.warning("turn %s hit its deadline", turn.turn_id, extra={"turn_id": turn.turn_id})
            await self._fail(turn, sink, DEADLINE_TEXT, "turn deadline exceeded")
        except LeaseLost:
            interrupted = True
            # Another replica owns this conversation now: anything we said would be a second
            # outcome, and our journal writes are fenced off anyway.
            log.info("turn %s handed over to another replica", turn.turn_id)
        except RelayError as exc:
            log.warning("turn %s failed: %s", turn.turn_id, exc, extra={"turn_id": turn.turn_id})
            await self._fail(turn, sink, failure_text(exc), _short(exc))
        except IllegalTransition:
            raise  # a bug: do not paper over it with another journal write
        except Exception as exc:
            log.exception("turn %s crashed", turn.turn_id, extra={"turn_id": turn.turn_id})
            await self._fail(turn, sink, failure_text(exc), _short(exc))
        finally:
            try:
                async with asyncio.timeout(self._fail_grace):
                    await sink.close(interrupted=interrupted)
            except Exception:
                log.exception("closing the reply sink of turn %s failed", turn.turn_id)

    async def _run(self, turn: Turn, sink: ReplySink) -> None:
        deadline = time.monotonic() + self._budget(turn)
        turn.attempts += 1
        # Journal the attempt before doing anything: a turn that crashes the process every time
        # must be noticed at the next start (MAX_ATTEMPTS), not retried forever.
        await self._advance(turn, turn.state)
        if turn.attempts > MAX_ATTEMPTS:
            raise PermanentError(
                f"gave up after {turn.attempts - 1} interrupted attempts", service="relay"
            )
        session = await self._store.get_session(turn.bot_id, turn.conversation_id)
        await sink.start(show_progress=bool(session and session.show_progress))
        if turn.state is TurnState.RECEIVED:
            session = await self._ensure_session(turn, session, deadline)
        if turn.state is TurnState.SESSION_READY and not await self._post(turn, session, deadline):
            # Only files, none usable: the attachments notice is the readable outcome (invariant
            # 3), and there is nothing left to ask Neo (relay.attachments).
            await self._finish(turn, TurnState.FAILED, "no usable attachment and no text")
            return
        reply = await self._tail(turn, sink)
        if reply.outcome is ReplyOutcome.ERROR and not reply.text:
            raise PermanentError(reply.error_text or "the agent reported an error", service="neo")
        await sink.finish(reply)
        if reply.outcome is ReplyOutcome.ABORTED:
            await self._finish(turn, TurnState.CANCELLED, reply.abort_reason or "aborted by Neo")
        else:
            await self._finish(turn, TurnState.DELIVERED, None)

    async def _ensure_session(
        self, turn: Turn, session: SessionRecord | None, deadline: float
    ) -> SessionRecord:
        if session is None:
            title = _title(turn)
            created = await retry_call(
                lambda: self._neo.create_session(
                    bot_id=turn.bot_id, tenant_id=turn.ref.tenant_id, title=title
                ),
                NEO,
                deadline=deadline,
                what="neo create_session",
            )
            now = time.time()
            session = SessionRecord(
                bot_id=turn.bot_id,
                conversation_id=turn.conversation_id,
                session_id=created.session_id,
                show_progress=created.show_progress,
                created_at=now,
                updated_at=now,
            )
            await self._store.put_session(session)
        turn.session_id = session.session_id
        await self._advance(turn, TurnState.SESSION_READY)
        return session

    async def _post(self, turn: Turn, session: SessionRecord | None, deadline: float) -> bool:
        """Post the turn (False: files only, none usable — the user was told, nothing to ask)."""
        assert turn.session_id is not None
        session_id = turn.session_id
        attachments: list[UploadedFile] = []
        if turn.files and self._files is not None:
            attachments = await self._files.prepare(turn, session_id)
        if not turn.text and not attachments:
            return False
        # Retrying a post is safe: the same client_message_id gets a 409 from Neo, never a 2nd turn.
        posted = await retry_call(
            lambda: self._neo.post_message(
                session_id,
                text=turn.text,
                client_message_id=client_message_id(turn.turn_id),
                model_tier=turn.model_tier,
                attachments=attachments,
            ),
            NEO,
            idempotent=True,
            deadline=deadline,
            what="neo post_message",
        )
        if posted.duplicate:
            # Already posted by an earlier attempt whose 202 we never journaled: do not post again;
            # tail from the session's last known event id (the end of the previous turn).
            turn.since_cursor = session.last_event_id if session else None
        else:
            turn.since_cursor = posted.since_cursor
            turn.chat_turn_id = posted.chat_turn_id
        # A duplicate's 409 carries no show_agent_progress_steps: keep the session's setting.
        if (
            session is not None
            and not posted.duplicate
            and posted.show_progress != session.show_progress
        ):
            session.show_progress = posted.show_progress
            await self._store.put_session(session)
        await self._advance(turn, TurnState.POSTED)
        return True

    async def _tail(self, turn: Turn, sink: ReplySink) -> Reply:
        assert turn.session_id is not None
        assembler = self._neo.assembler()
        checkpoint = _Checkpoint(self._store, turn)
        if turn.state is TurnState.POSTED:
            await self._advance(turn, TurnState.STREAMING)
        # Always re-read from since_cursor (not last_event_id): the assembler rebuilds the whole
        # answer, and the sink's journaled delivery state says what Teams has already shown.
        async for chunk in self._neo.tail(
            turn.session_id, since=turn.since_cursor, on_event_id=checkpoint.seen
        ):
            assembler.feed(chunk)
            await sink.update(assembler.reply)
        await checkpoint.flush()
        if turn.last_event_id:
            await self._store.set_session_cursor(
                turn.bot_id, turn.conversation_id, turn.last_event_id
            )
        return assembler.reply

    async def _advance(self, turn: Turn, state: TurnState) -> None:
        """The only way the pipeline changes a turn's state: checked, then durable on return."""
        check_transition(turn, state)
        turn.state = state
        turn.updated_at = time.time()
        await self._store.save_turn(turn)

    async def _finish(self, turn: Turn, state: TurnState, error: str | None) -> None:
        turn.error = error
        await self._advance(turn, state)

    async def _fail(self, turn: Turn, sink: ReplySink, message: str, reason: str) -> None:
        try:
            async with asyncio.timeout(self._fail_grace):
                await sink.fail(message)
        except Exception:
            log.exception("could not tell the user about the failure of turn %s", turn.turn_id)
        await self._finish(turn, TurnState.FAILED, reason)


class _Checkpoint:
    """Persists the turn's last SSE event id: at the first event, then at most every
    ``interval`` seconds (amortised journal writes), and once more at the end (``flush``)."""

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

    async def seen(self, event_id: EventId) -> None:
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


def _title(turn: Turn) -> str:
    words = " ".join(turn.text.split())
    if not words:
        return "Teams conversation"
    return words if len(words) <= 80 else words[:77] + "…"


def _short(exc: BaseException) -> str:
    text = str(exc) or exc.__class__.__name__
    return text[:500]
