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

Split along its seams: the protocols it needs are in ``relay.turn_seams``; the session and post
steps (sessions that heal, duplicates by fact, a null ``since_cursor``) in ``relay.sessions``; the
approval-card segments of an answer in ``relay.segments``; the continuation after a decision in
``relay.followups``; which events of the shared session stream are this turn's in
``relay.neo.events`` (this module only decides, from the ``tail`` note of the previous turn,
whether its leftovers must be skipped). Whatever way a tail ends — answer, Stop, deadline, error
— the turn's last event id is journaled on the turn, on the session and in the ``tail`` note.
``/reset`` does not wait behind a running turn: :meth:`TurnPipeline.abort` cancels it (and the
turns queued before the reset) at once, and the reset command then archives the session at Neo,
which cancels the in-flight Neo turn too (neo-chat-api.md §a.4 [RESET]). Teams' Stop ends the
visible stream and the relay's tail; Neo documents no per-turn cancel (reset archives the whole
session, which Stop must not do), so the Neo turn may run on and the next turn skips its output.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from relay.domain import (
    BotId,
    ConversationId,
    Reply,
    ReplyOutcome,
    SessionRecord,
    Turn,
    TurnState,
    UploadedFile,
)
from relay.errors import LeaseLost, PermanentError, RelayError, StreamCancelled
from relay.followups import FOLLOW_SECONDS, FollowUps
from relay.journal import IllegalTransition, check_transition
from relay.segments import Segments
from relay.sessions import SessionSteps
from relay.start_slots import first_chunk
from relay.store.base import Store
from relay.tail_journal import TailJournal
from relay.turn_seams import (
    Assembler,
    CommandHandler,
    FilesStep,
    NeoApi,
    NewSession,
    Notices,
    Posted,
    ReplySink,
    SinkFactory,
    failure_text,
)

__all__ = [
    "Assembler",
    "CommandHandler",
    "FilesStep",
    "NeoApi",
    "NewSession",
    "Posted",
    "ReplySink",
    "SinkFactory",
    "TurnPipeline",
    "failure_text",
]

log = logging.getLogger(__name__)

DEADLINE_TEXT = (
    "Sorry, this is taking far too long, so I've stopped waiting for the answer. Please try again."
)
RESET_STOPPED_TEXT = "Stopped — you started a new conversation."
ABORTED_TEXT = "This answer was stopped before it was ready."
# A turn that was started this many times without finishing (each start after a crash or restart)
# is failed instead of run again: a message that crashes the process must not crash it forever.
MAX_ATTEMPTS = 5
# Telling the user about a failure and releasing the sink are bounded too: the deadline already
# passed, or Teams is the thing failing; neither may keep the turn from reaching a final state.
FAIL_GRACE = 30.0
# After an approval card, how long the tail waits for anything more before it hands the paused
# turn over to relay.followups: the conversation's next message must not queue behind a
# technician who decides tomorrow.
HANDOFF_SECONDS = 60.0
ConversationKey = tuple[BotId, ConversationId]


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
        notices: Notices | None = None,
        approval_follow_seconds: float = FOLLOW_SECONDS,
        handoff_seconds: float = HANDOFF_SECONDS,
    ) -> None:
        self._store = store
        self._neo = neo
        self._sinks = sinks
        self._turn_deadline = turn_deadline
        self._fail_grace = fail_grace
        self._commands = commands  # /reset, /help, install greeting (relay.commands)
        self._files = files  # attachment uploads (relay.attachments)
        self._sessions = SessionSteps(store, neo, notices)
        self.handoff_seconds = handoff_seconds
        self.followups = FollowUps(store, neo, sinks, timeout=approval_follow_seconds)
        # /reset: the turn running per conversation (to cancel it), the turns being cancelled,
        # and per conversation the arrival time of the latest reset (earlier turns are stopped).
        self._running: dict[ConversationKey, tuple[Turn, asyncio.Task[object]]] = {}
        self._aborting: set[str] = set()
        self._cutoff: dict[ConversationKey, float] = {}
        # Before a turn's first Neo request (relay.admission.AdmissionGate.before_neo): may raise
        # relay.budgets.BudgetWait, and the turn, untouched, waits journaled for Neo's budget.
        self.before_neo: Callable[[Turn], Awaitable[None]] | None = None

    def _budget(self, turn: Turn) -> float:
        """Seconds this run may take: what is left of the deadline counted from arrival.

        A turn resumed after a long outage still gets a short run (at most a minute) so that an
        answer Neo already finished can be delivered rather than replaced by an error.
        """
        age = max(0.0, time.time() - turn.created_at) if turn.created_at else 0.0
        return max(self._turn_deadline - age, min(60.0, self._turn_deadline))

    def abort(self, bot_id: BotId, conversation_id: ConversationId, before: float) -> bool:
        """``/reset`` arrived at ``before``: stop the conversation's turns that arrived earlier.

        The one running here is cancelled at once (True); queued ones stop when they come up.
        """
        key = (bot_id, conversation_id)
        self._cutoff[key] = max(before, self._cutoff.get(key, 0.0))
        running = self._running.get(key)
        if running is None:
            return False
        turn, task = running
        if turn.created_at > before or turn.turn_id in self._aborting:
            return False
        self._aborting.add(turn.turn_id)
        task.cancel()
        log.info("turn %s cancelled by /reset", turn.turn_id)
        return True

    def _cut_off(self, turn: Turn) -> bool:
        cutoff = self._cutoff.get((turn.bot_id, turn.conversation_id))
        return cutoff is not None and 0 < turn.created_at <= cutoff

    async def run(self, turn: Turn) -> None:
        if turn.state.is_final:
            return
        if turn.command is not None and self._commands is not None:
            await self._commands.run(turn)  # a command turn, run in conversation order
            return
        if (
            self.before_neo is not None
            and turn.state in (TurnState.RECEIVED, TurnState.SESSION_READY)
            and not self._cut_off(turn)
        ):
            await self.before_neo(turn)  # before the attempt is counted or Teams sees anything
        segments = Segments(self._store, self._sinks, turn, self._sinks.open(turn))
        interrupted = False
        try:
            if self._cut_off(turn):
                await self._stopped_by_reset(turn, segments)
                return
            await self._guarded(turn, segments)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if turn.turn_id not in self._aborting or task is None:
                interrupted = True  # shutdown or a lost lease: the next run resumes (sink.close)
                raise
            task.uncancel()
            await self._stopped_by_reset(turn, segments)
        except StreamCancelled:
            await self._finish(turn, TurnState.CANCELLED, "stopped by the user")
        except TimeoutError:
            # Only our own deadline: asyncio.timeout turns its cancellation into TimeoutError,
            # while a shutdown's cancellation propagates and leaves the journal for the next start.
            if segments.waiting_on_card:
                await self._hand_over(turn, segments)  # the card is the visible outcome
                return
            log.warning("turn %s hit its deadline", turn.turn_id, extra={"turn_id": turn.turn_id})
            await self._fail(turn, segments, DEADLINE_TEXT, "turn deadline exceeded")
        except LeaseLost:
            interrupted = True
            # Another replica owns this conversation now: anything we said would be a second
            # outcome, and our journal writes are fenced off anyway.
            log.info("turn %s handed over to another replica", turn.turn_id)
        except RelayError as exc:
            if segments.waiting_on_card and not isinstance(exc, PermanentError):
                await self._hand_over(turn, segments)
                return
            log.warning("turn %s failed: %s", turn.turn_id, exc, extra={"turn_id": turn.turn_id})
            await self._fail(turn, segments, failure_text(exc), _short(exc))
        except IllegalTransition:
            raise  # a bug: do not paper over it with another journal write
        except Exception as exc:
            log.exception("turn %s crashed", turn.turn_id, extra={"turn_id": turn.turn_id})
            await self._fail(turn, segments, failure_text(exc), _short(exc))
        finally:
            self._aborting.discard(turn.turn_id)
            try:
                async with asyncio.timeout(self._fail_grace):
                    await segments.close_current(interrupted=interrupted)
            except Exception:
                log.exception("closing the reply sink of turn %s failed", turn.turn_id)

    async def _guarded(self, turn: Turn, segments: Segments) -> None:
        """The run itself, under the deadline and registered for ``abort``."""
        key = (turn.bot_id, turn.conversation_id)
        task = asyncio.current_task()
        if task is not None:
            self._running[key] = (turn, task)
        try:
            async with asyncio.timeout(self._budget(turn)):
                await self._run(turn, segments)
        finally:
            # Popped before any other await: a reset can no longer cancel this task.
            if self._running.get(key, (None,))[0] is turn:
                del self._running[key]

    async def _run(self, turn: Turn, segments: Segments) -> None:
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
        segments.show_progress = bool(session and session.show_progress)
        assert segments.sink is not None
        await segments.sink.start(show_progress=segments.show_progress)
        if turn.state is TurnState.RECEIVED:
            session = await self._sessions.ensure(turn, session, deadline)
            await self._advance(turn, TurnState.SESSION_READY)
        if turn.state is TurnState.SESSION_READY and not await self._post(turn, session, deadline):
            # Only files, none usable: the attachments notice is the readable outcome (invariant
            # 3), and there is nothing left to ask Neo (relay.attachments).
            await self._finish(turn, TurnState.FAILED, "no usable attachment and no text")
            return
        reply = await self._tail(turn, segments)
        if segments.shown_tils:
            continued = segments.sink is not None
            await self.followups.turn_ended(turn, segments.shown_tils, continued=continued)
            if not continued:  # everything up to the card is shown; the card is the outcome
                await self._finish(turn, TurnState.DELIVERED, None)
                return
        view = segments.view(reply)
        if reply.outcome is ReplyOutcome.ABORTED and not view.text.strip():
            # Neo stopped the turn (a /reset on another replica, an operator) before any answer.
            await self._tell(turn, segments, ABORTED_TEXT)
            await self._finish(turn, TurnState.CANCELLED, reply.abort_reason or "aborted by Neo")
            return
        if reply.outcome is ReplyOutcome.ERROR and not view.text:
            raise PermanentError(reply.error_text or "the agent reported an error", service="neo")
        assert segments.sink is not None
        await segments.sink.finish(view)
        if reply.outcome is ReplyOutcome.ABORTED:
            await self._finish(turn, TurnState.CANCELLED, reply.abort_reason or "aborted by Neo")
        elif reply.outcome is ReplyOutcome.ERROR:
            # The partial answer and a "stopped early" line are in Teams: a failure, not a delivery.
            await self._finish(turn, TurnState.FAILED, reply.error_text or "agent error")
        else:
            await self._finish(turn, TurnState.DELIVERED, None)

    async def _post(self, turn: Turn, session: SessionRecord | None, deadline: float) -> bool:
        """Post the turn (False: files only, none usable — the user was told, nothing to ask)."""
        assert turn.session_id is not None
        attachments: list[UploadedFile] = []
        if turn.files and self._files is not None:
            attachments = await self._files.prepare(turn, turn.session_id)
        if not turn.text and not attachments:
            return False
        posted, session = await self._sessions.post(turn, session, attachments, deadline)
        # A duplicate's 409 carries no show_agent_progress_steps: keep the session's setting.
        if (
            session is not None
            and not posted.duplicate
            and posted.show_progress != session.show_progress
        ):
            session.show_progress = posted.show_progress
            await self._store.put_session(session)
        # Made durable by the STREAMING write that _tail makes next, with no await in between:
        # one journal write instead of two back to back. A crash before it re-posts with the same
        # client_message_id, which Neo answers 409 (a duplicate, relay.sessions).
        await self._advance(turn, TurnState.POSTED, save=False)
        return True

    async def _tail(self, turn: Turn, segments: Segments) -> Reply:
        assert turn.session_id is not None
        assembler = self._neo.assembler()
        journal = TailJournal(self._store, turn)
        if turn.state is TurnState.POSTED:
            await self._advance(turn, TurnState.STREAMING)
        scope = await journal.scope()
        terminal = started = False
        # Always re-read from since_cursor (not last_event_id): the assembler rebuilds the whole
        # answer, and the sinks' journaled delivery state says what Teams has already shown.
        chunks = self._neo.tail(
            turn.session_id, since=turn.since_cursor, on_event_id=journal.seen, scope=scope
        )
        try:
            while True:
                try:
                    if segments.waiting_on_card:
                        async with asyncio.timeout(self.handoff_seconds):
                            chunk = await anext(chunks)
                    else:
                        # No timer per chunk: the tail bounds its own reads (relay.neo.idle_timer)
                        # and the turn deadline wraps the run; an asyncio.timeout(None) per chunk
                        # was ~3 % of a streamed turn's CPU (py-spy --gil, bench/README.md).
                        chunk = await anext(chunks)
                except StopAsyncIteration:
                    terminal = True
                    break
                except TimeoutError:
                    log.info("turn %s waits on an approval; handed over", turn.turn_id)
                    break
                if not started:
                    started = True
                    first_chunk()  # past its starting phase: frees its start slot
                assembler.feed(chunk)
                await segments.update(assembler.reply)
        finally:
            await _aclose(chunks)
            await journal.ended(terminal)
        return assembler.reply

    async def _hand_over(self, turn: Turn, segments: Segments) -> None:
        """The turn waits on an approval card: the card is its outcome; relay.followups
        delivers what comes after the decision."""
        await self.followups.turn_ended(turn, segments.shown_tils, continued=False)
        if turn.state is TurnState.POSTED:
            await self._advance(turn, TurnState.STREAMING)
        await self._finish(turn, TurnState.DELIVERED, None)

    async def _stopped_by_reset(self, turn: Turn, segments: Segments) -> None:
        await self._tell(turn, segments, RESET_STOPPED_TEXT)
        await self._finish(turn, TurnState.CANCELLED, "stopped by /reset")

    async def _advance(self, turn: Turn, state: TurnState, *, save: bool = True) -> None:
        """The only way the pipeline changes a turn's state: checked, then durable on return
        (``save=False``: only when the caller's very next step is a write that includes it)."""
        check_transition(turn, state)
        turn.state = state
        turn.updated_at = time.time()
        if save:
            await self._store.save_turn(turn)

    async def _finish(self, turn: Turn, state: TurnState, error: str | None) -> None:
        turn.error = error
        await self._advance(turn, state)

    async def _fail(self, turn: Turn, segments: Segments, message: str, reason: str) -> None:
        await self._tell(turn, segments, message)
        await self._finish(turn, TurnState.FAILED, reason)

    async def _tell(self, turn: Turn, segments: Segments, message: str) -> None:
        try:
            async with asyncio.timeout(self._fail_grace):
                sink = segments.sink or await segments.open_next()
                await sink.fail(message)
        except Exception:
            log.exception("could not tell the user about the end of turn %s", turn.turn_id)


async def _aclose(chunks: AsyncIterator[dict[str, object]]) -> None:
    close = getattr(chunks, "aclose", None)
    if close is not None:
        try:
            await close()
        except Exception:
            log.debug("closing a tail failed", exc_info=True)


def _short(exc: BaseException) -> str:
    text = str(exc) or exc.__class__.__name__
    return text[:500]
