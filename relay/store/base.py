"""The ``Store`` protocol: the relay's durable state, whatever holds it.

The pipeline and the worker only ever talk to this protocol, so the embedded SQLite backend (one
replica) and a Redis backend (several replicas) are interchangeable, and one contract test suite
(``tests/store/test_contract.py``) holds every backend to the same behaviour. What must be durable
is what a restart needs to resume a turn without repeating a visible effect (DESIGN.md, invariants
1, 2 and 5): the turn journal with its arrival order, the conversation → Neo session map, the Teams
streaming progress of each turn, and one-shot claims such as "greeted this install already".
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from relay.domain import BotId, ConversationId, EventId, SessionRecord, Turn, TurnId
from relay.store.lifecycle import Erased


@dataclass(frozen=True, slots=True)
class Fence:
    """Proof of holding lease ``key``: the fencing ``token`` ``acquire_lease`` returned.

    A fenced write is accepted only while this token's lease is live (held, not expired); else it
    is refused with ``relay.errors.LeaseLost`` and nothing is written. That is what keeps a replica
    that stalled past its lease from overwriting the journal of the replica that took the
    conversation over (relay.replicas).
    """

    key: str
    token: int


# The fence of the lease the current task runs under (relay.replicas sets it around a turn), so
# the pipeline and the sinks fence every conversation write without passing a token around.
# How long a conversation note outlives its last write (Store.merge_note): the approvals shown
# in a conversation must stay checkable for as long as a technician may still click a card.
NOTE_TTL_SECONDS = 30 * 86400.0

_AMBIENT_FENCE: ContextVar[Fence | None] = ContextVar("relay_store_fence", default=None)


def current_fence(explicit: Fence | None = None) -> Fence | None:
    """The fence a write should carry: ``explicit`` if given, else the ambient one (or None)."""
    return explicit if explicit is not None else _AMBIENT_FENCE.get()


@contextlib.contextmanager
def fenced(fence: Fence | None) -> Iterator[None]:
    """Run the block (and the tasks it creates) with ``fence`` as the ambient write fence."""
    token = _AMBIENT_FENCE.set(fence)
    try:
        yield
    finally:
        _AMBIENT_FENCE.reset(token)


@runtime_checkable
class Store(Protocol):
    """Durable relay state. Every method is safe to call concurrently from many tasks.

    Timestamps (``created_at``, ``updated_at``) are wall-clock seconds set by the store;
    ``add_turn`` and ``save_turn`` also write them back onto the ``Turn`` passed in, so that the
    object in hand equals what ``get_turn`` returns.

    The conversation writes (``save_turn``, ``save_delivery``, ``put_session``,
    ``delete_session``, ``set_session_cursor``) take an optional ``fence`` (default: the ambient
    one, see ``fenced``) and raise ``relay.errors.LeaseLost`` without writing when it is stale.
    """

    async def open(self) -> None:
        """Connect and bring the schema up to date. Must be awaited before any other call."""

    async def close(self) -> None:
        """Release the connection. Idempotent; the store may be opened again afterwards."""

    async def ping(self) -> None:
        """Return if the backend answers a trivial query; raise otherwise (used by /readyz)."""

    # -- turn journal --------------------------------------------------------------------------

    async def add_turn(self, turn: Turn) -> bool:
        """Journal a new turn; False (and no change) if a turn with that id exists already.

        This is the inbound dedupe — Teams re-delivers an activity it thinks we missed — so it is
        atomic: of any number of concurrent calls with one ``turn_id``, exactly one returns True.
        The store assigns the turn its arrival sequence number here.
        """

    async def get_turn(self, turn_id: TurnId) -> Turn | None:
        """The journaled turn, or None if no turn has that id."""

    async def save_turn(self, turn: Turn, *, fence: Fence | None = None) -> None:
        """Persist the turn's mutable fields and bump ``updated_at``; durable when it returns.

        Mutable fields: state, session_id, since_cursor, chat_turn_id, last_event_id, attempts,
        error. The rest (conversation ref, user, text, files, model tier) is fixed at ``add_turn``.
        Raises ``KeyError`` for a turn that was never added: that is a bug, not a race.
        """

    async def unfinished_turns(self, limit: int = 1000) -> list[Turn]:
        """Turns not in a final state, oldest (first arrived) first — what recovery resumes."""

    async def conversation_turns(
        self, bot_id: BotId, conversation_id: ConversationId
    ) -> list[Turn]:
        """Every turn of one conversation, in arrival order."""

    async def unfinished_conversation_turns(
        self, bot_id: BotId, conversation_id: ConversationId, limit: int = 100
    ) -> list[Turn]:
        """The conversation's turns not in a final state, in arrival order (what runs next)."""

    async def save_delivery(
        self, turn_id: TurnId, data: dict[str, Any], *, fence: Fence | None = None
    ) -> None:
        """Replace the turn's delivery progress (Teams stream id, sequence, characters shown, ...).

        ``data`` must be JSON-serialisable. Leaves the turn's ``updated_at`` alone. Raises
        ``KeyError`` for an unknown turn.
        """

    async def get_delivery(self, turn_id: TurnId) -> dict[str, Any]:
        """The turn's delivery progress; ``{}`` if none was saved or the turn is unknown."""

    # -- sessions ------------------------------------------------------------------------------

    async def get_session(
        self, bot_id: BotId, conversation_id: ConversationId
    ) -> SessionRecord | None:
        """The Neo session mapped to this conversation, if any."""

    async def put_session(self, rec: SessionRecord, *, fence: Fence | None = None) -> None:
        """Insert or replace the conversation's session mapping.

        ``created_at`` survives an upsert that keeps the same ``session_id``; a new session id
        takes the record's ``created_at`` (or now, if it is 0).
        """

    async def delete_session(
        self, bot_id: BotId, conversation_id: ConversationId, *, fence: Fence | None = None
    ) -> None:
        """Forget the conversation's session (e.g. /reset). No error if there is none."""

    async def set_session_cursor(
        self,
        bot_id: BotId,
        conversation_id: ConversationId,
        last_event_id: EventId,
        *,
        fence: Fence | None = None,
    ) -> None:
        """Record the last SSE event seen in the session.

        A no-op if the session is gone: a tail finishing after /reset must not resurrect it.
        """

    # -- one-shot claims -----------------------------------------------------------------------

    async def claim_once(self, key: str, ttl_seconds: float) -> bool:
        """True for the first caller of ``key`` until ``ttl_seconds`` pass; then claimable again."""

    # -- leases (one conversation, one replica at a time: relay.replicas) ---------------------

    async def acquire_lease(self, key: str, owner: str, ttl_seconds: float) -> int | None:
        """Take lease ``key`` for ``ttl_seconds`` if nobody holds it; its fencing token, or None.

        Not re-entrant: a live lease is refused to its own owner too. Tokens strictly increase
        with every acquisition (of any key, by any replica) for the store's lifetime.
        """

    async def renew_lease(self, key: str, owner: str, token: int, ttl_seconds: float) -> bool:
        """Extend the lease to ``ttl_seconds`` from now if (owner, token) still holds it."""

    async def release_lease(self, key: str, owner: str, token: int) -> None:
        """Give the lease up at once if (owner, token) still holds it; else do nothing."""

    async def lease_holder(self, key: str) -> str | None:
        """The owner holding lease ``key`` now, or None (for diagnostics: it may change at once)."""

    # -- conversation notes (relay.turn_scope, relay.approvals: issue 13's block) --------------

    async def merge_note(
        self,
        bot_id: BotId,
        conversation_id: ConversationId,
        name: str,
        fields: dict[str, Any],
    ) -> dict[str, Any]:
        """Merge ``fields`` (JSON values) into the conversation's note ``name``; return the note.

        Atomic per call: the returned note holds these fields and every merge that completed
        before, so two parties that each merge-then-read cannot both miss the other's write
        (an approval decided while the turn that showed it ends). A note lives
        :data:`NOTE_TTL_SECONDS` after its last merge. Unfenced on purpose: approval clicks and
        ``/reset`` write them from outside the conversation's lease.
        """

    async def get_note(
        self, bot_id: BotId, conversation_id: ConversationId, name: str
    ) -> dict[str, Any] | None:
        """The conversation's note ``name``, or None if it was never written (or expired)."""

    # -- retention and erasure (relay.store.lifecycle: issue 16's block) ----------------------

    async def release_claim(self, key: str) -> None:
        """Give a ``claim_once`` claim back at once (the claimed work failed); no error if none."""

    async def find_delivered_turn(
        self, bot_id: BotId, conversation_id: ConversationId, activity_id: str
    ) -> Turn | None:
        """The finished turn that sent Teams activity ``activity_id`` (feedback's lookup), if any.

        Indexed when the turn reaches a final state; a final ``save_turn`` also clears the turn's
        text and files and drops the answer text from its delivery record.
        """

    async def prune(self, *, batch: int = 500) -> Erased:
        """Delete finished turns, claims and session mappings older than the retention period.

        Unfinished turns are never deleted. Backends whose records expire by themselves (Redis
        TTLs) may have nothing to do here.
        """

    async def forget_conversation(
        self, conversation_id: ConversationId, bot_id: BotId | None = None
    ) -> Erased:
        """Delete everything held about a conversation (of ``bot_id``, or of every bot)."""

    async def forget_user(self, aad_object_id: str) -> Erased:
        """Delete a person's turns, and their 1:1 conversations with every bot entirely."""
