"""The pipeline's seams: what ``relay.turns`` needs from Neo and Teams, in the project's types.

Split out of ``relay.turns`` so the pipeline module holds only the pipeline. Neo is reached
through :class:`NeoApi` (implemented by ``relay.neo.adapter``), Teams through :class:`ReplySink`
objects and :class:`Notices` (``relay.teams``); neither package is imported by the core. Also
here: the one user-visible failure format (:func:`failure_text`), shared by every module that
tells a user something went wrong.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from relay.domain import (
    BotId,
    ConversationRef,
    EventId,
    ModelTier,
    Reply,
    SessionId,
    TenantId,
    Turn,
    UploadedFile,
)
from relay.errors import UpstreamError, UserFacingError


@dataclass(frozen=True, slots=True)
class TailScope:
    """Which events of the session stream belong to this turn (``relay.neo.events``).

    ``chat_turn_id``: the 202's id; an event envelope naming another turn is skipped (if Neo's
    envelopes name turns at all — undocumented). ``await_start``: the previous turn of the session
    did not reach its terminal chunk, so its leftovers may follow ``since``; skip everything until
    this turn's own ``start`` chunk.
    """

    chat_turn_id: str | None = None
    await_start: bool = False


@dataclass(frozen=True, slots=True)
class NewSession:
    session_id: SessionId
    show_progress: bool
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class Posted:
    since_cursor: EventId | None
    chat_turn_id: str | None
    show_progress: bool
    duplicate: bool
    request_id: str | None = None


class NeoApi(Protocol):
    """What the pipeline needs from Neo (adapter: ``relay.neo.adapter.NeoAdapter``)."""

    async def create_session(
        self, *, bot_id: BotId, tenant_id: TenantId | None, title: str
    ) -> NewSession: ...

    async def post_message(
        self,
        session_id: SessionId,
        *,
        text: str,
        client_message_id: str,
        model_tier: ModelTier,
        attachments: Sequence[UploadedFile] = (),
    ) -> Posted: ...

    def tail(
        self,
        session_id: SessionId,
        *,
        since: EventId | None,
        on_event_id: Callable[[EventId], Awaitable[None]],
        scope: TailScope | None = None,
    ) -> AsyncIterator[dict[str, object]]:
        """The chunks of one turn after ``since`` (``scope``: which events are this turn's)."""
        ...

    async def reset_session(self, session_id: SessionId) -> None: ...

    def assembler(self) -> Assembler: ...


class Assembler(Protocol):
    """Folds AI SDK v6 chunks into a :class:`Reply` (``relay.neo.chunks.ReplyAssembler``)."""

    def feed(self, chunk: dict[str, object]) -> None: ...

    @property
    def reply(self) -> Reply: ...


class ReplySink(Protocol):
    """One turn's answer on its way into Teams (streamed, or typing + one final message)."""

    async def start(self, *, show_progress: bool) -> None: ...

    async def update(self, reply: Reply) -> None:
        """New chunks arrived; cheap — the sink decides when to actually send."""

    async def finish(self, reply: Reply) -> None: ...

    async def fail(self, message: str) -> None: ...

    async def close(self, *, interrupted: bool = False) -> None:
        """Release timers/tasks; called once, last, on every path.

        ``interrupted``: the run was cancelled (shutdown, lost lease) or handed over, so send
        nothing more — the next run resumes from the journal. Otherwise a sink still showing
        something unfinished (a turn that ended without finish/fail) ends it.
        """


class SinkFactory(Protocol):
    def open(self, turn: Turn, *, segment: int = 0, streamed: bool = True) -> ReplySink:
        """A sink for ``turn``; ``segment`` > 0 is a continuation after an approval card: a new
        message (or stream) of its own, never the journaled stream of an earlier segment.
        ``streamed=False``: normal messages even in a 1:1 chat (a follow-up must not open a
        second stream beside the next turn's: one stream per chat, teams-platform.md §1.1)."""
        ...


class Notices(Protocol):
    """Posts a short plain line into a conversation (``relay.teams.messenger.TeamsMessenger``)."""

    async def say(self, ref: ConversationRef, text: str) -> str | None: ...


class CommandHandler(Protocol):
    """Runs a turn whose ``command`` is set (``relay.commands.CommandRunner``)."""

    async def run(self, turn: Turn) -> None: ...


class FilesStep(Protocol):
    """Uploads a turn's files before it is posted (``relay.attachments.AttachmentStep``)."""

    async def prepare(self, turn: Turn, session_id: SessionId) -> list[UploadedFile]: ...


# ----------------------------------------------------------------------------------------------
# User-visible failure text (one consistent format; Neo's request_id when we have one)
# ----------------------------------------------------------------------------------------------


def failure_text(exc: BaseException, *, doing: str = "get an answer") -> str:
    """The one user-visible error format: Neo's own words, or a short apology + request id."""
    if isinstance(exc, UserFacingError):
        return exc.message  # written for end users by Neo (end_company_not_mapped): verbatim
    rid = exc.request_id if isinstance(exc, UpstreamError) else None
    ref = f" (reference: {rid})" if rid else ""
    if isinstance(exc, UpstreamError) and exc.service == "neo" and exc.status == 429:
        return (
            "Neo is busy right now and couldn't take your message. "
            f"Please try again in a minute.{ref}"
        )
    return f"Sorry, I couldn't {doing} this time. Please try again.{ref}"
