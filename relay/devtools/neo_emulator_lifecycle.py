"""How the emulated Neo runs a session's turns: queueing, TIL pauses, continuations, cancels.

Split out of ``neo_emulator`` (its HTTP surface). Each behaviour is an *assumption about Neo*
that the relay is built against; none of it is documented beyond what is cited:

- **Turns of one session run one after another**, like a per-session workflow queue ([AM]: a post
  "enqueues a ``ChatTurnWorkflow``"). A turn the relay stopped tailing (Teams Stop, deadline)
  keeps producing, so its remaining chunks land after the next turn's ``since_cursor``.
- **Every turn's chunks begin with a ``start`` chunk** (the AI SDK's ``toUIMessageStream``
  default, ai-sdk-v6-stream.md §2); with ``name_turns`` each chunk also carries the 202's
  ``chat_turn_id`` (Neo's envelope shape is undocumented, neo-chat-api.md §b item 1).
- **A TIL request is a ``data-til`` part** with ``til_request_id`` (§b item 18). Two pause
  styles, both plausible: ``"hold"`` keeps the turn open until the decision arrives, then
  continues the same message; ``"end"`` ends the turn (``finish``, ``[DONE]``) with the request
  pending and, after the decision, appends the continuation as a new message (``start`` …
  ``finish``, ``[DONE]``) to the session stream.
- **Reset cancels the in-flight turn** [RESET]: the stream ends with ``abort`` then ``[DONE]``;
  a queued turn and a held continuation are cancelled with it.
- **A session that is gone refuses posts**: archived (dashboard or reset) → 409
  ``session_archived``; deleted → 404 ``not_found``; its channel re-pointed to another owner →
  403 ``FORBIDDEN`` ("404 not found *or not yours*", neo-chat-api.md §a.3; the codes themselves
  are undocumented). A repeated ``client_message_id`` is checked first and answers 409 with a
  configurable code (``duplicate_code``) and ``details.message_id`` (§b item 12).
- **``since_cursor`` may be null** on a 202 ([AM]: "may be None … under Redis failure").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from relay.devtools.neo_emulator_streams import (
    DONE,
    EmulatedSession,
    EventLog,
    StreamFault,
    now_iso,
    run_turn,
)

TIL_TYPES = ("data-til", "data-approval", "data-til-request", "data-approval-request")


def til_id_of(chunk: dict[str, Any]) -> str | None:
    """The TIL request id of a ``data-til``-like chunk, else None."""
    data = chunk.get("data")
    if chunk.get("type") not in TIL_TYPES or not isinstance(data, dict):
        return None
    rid = data.get("til_request_id")
    return str(rid) if rid is not None else None


@dataclass
class Decisions:
    """TIL decisions as events a paused turn can wait for."""

    _events: dict[str, asyncio.Event] = field(default_factory=dict)

    def event(self, til_id: str) -> asyncio.Event:
        return self._events.setdefault(til_id, asyncio.Event())

    def decide(self, til_id: str) -> None:
        self.event(til_id).set()


@dataclass(frozen=True, slots=True)
class TurnPlan:
    """One posted turn as the emulated agent will play it."""

    chunks: list[dict[str, Any]]
    chat_turn_id: str
    chunk_delay: float
    first_chunk_delay: float
    til_pause: str | None  # None, "hold" or "end"
    name_turns: bool


def _named(chunks: list[dict[str, Any]], plan: TurnPlan) -> list[dict[str, Any]]:
    if not plan.name_turns:
        return chunks
    return [{**c, "chat_turn_id": plan.chat_turn_id} for c in chunks]


def _split_at_til(chunks: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[Any], str]:
    for i, chunk in enumerate(chunks):
        if (til := til_id_of(chunk)) is not None:
            return chunks[: i + 1], chunks[i + 1 :], til
    return chunks, [], ""


async def play_turn(
    previous: asyncio.Task[None] | None,
    session: EmulatedSession,
    plan: TurnPlan,
    decisions: Decisions,
    spawn: Callable[[asyncio.Task[None]], None],
) -> None:
    """Wait for the session's previous turn, then append this one's chunks (see module doc)."""
    if previous is not None and not previous.done():
        try:
            await asyncio.wait([previous])
        except asyncio.CancelledError:
            previous.cancel()  # a reset cancels the queue behind the running turn too
            raise
    log = session.log
    head, rest, til = _split_at_til(plan.chunks) if plan.til_pause else (plan.chunks, [], "")
    delay, first = plan.chunk_delay, plan.first_chunk_delay
    if not til:
        await run_turn(log, _named(head, plan), chunk_delay=delay, first_chunk_delay=first)
        return
    if plan.til_pause == "hold":
        await run_turn(
            log, _named(head, plan), chunk_delay=delay, first_chunk_delay=first, done=False
        )
        await _wait_or_abort(log, decisions.event(til))
        await run_turn(log, _named(rest, plan), chunk_delay=plan.chunk_delay, first_chunk_delay=0)
        return
    # "end": the turn finishes with the request pending; the decision starts a continuation.
    ended = _named([*head, {"type": "finish"}], plan)
    await run_turn(log, ended, chunk_delay=delay, first_chunk_delay=first)
    continuation = [{"type": "start"}, *(c for c in rest if c.get("type") != "start")]
    task = asyncio.create_task(_continue_after(log, decisions.event(til), continuation, plan))
    spawn(task)


async def _wait_or_abort(log: EventLog, decided: asyncio.Event) -> None:
    try:
        await decided.wait()
    except asyncio.CancelledError:
        log.append(json.dumps({"type": "abort", "reason": "session reset"}))
        log.append(DONE)
        raise


async def _continue_after(
    log: EventLog, decided: asyncio.Event, chunks: list[dict[str, Any]], plan: TurnPlan
) -> None:
    await decided.wait()
    await run_turn(log, _named(chunks, plan), chunk_delay=plan.chunk_delay, first_chunk_delay=0)


async def cancel_quietly(task: asyncio.Task[None] | None) -> None:
    if task is not None and not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class LifecycleKnobs:
    """The lifecycle knobs of :class:`relay.devtools.neo_emulator.NeoEmulator` (a mixin)."""

    sessions: dict[str, EmulatedSession]
    forbidden_sessions: set[str]
    _null_cursors: int
    _lost_answers: list[StreamFault]
    _side: dict[str, set[asyncio.Task[None]]]

    def archive_session(self, session_id: str) -> None:
        """Archive as the dashboard does: later posts get 409 ``session_archived``."""
        self.sessions[session_id].archived_at = now_iso()

    def delete_session(self, session_id: str) -> None:
        """Forget the session: every later call on it gets 404."""
        self.sessions.pop(session_id)

    def forbid_session(self, session_id: str) -> None:
        """The session is no longer this caller's (its channel was re-pointed): 403."""
        self.forbidden_sessions.add(session_id)

    def null_since_cursor(self, times: int = 1) -> None:
        """Answer the next ``times`` posts with ``since_cursor: null`` [AM: "may be None"]."""
        self._null_cursors += times

    def lose_next_answer(self, seconds: float, times: int = 1) -> None:
        """Process the next ``times`` posts, then hold their 202 for ``seconds`` (a client
        timing out sees an ambiguous failure of a post that did happen)."""
        self._lost_answers.append(StreamFault(0, times, seconds))

    def _spawn_side(self, session_id: str, task: asyncio.Task[None]) -> None:
        tasks = self._side.setdefault(session_id, set())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
