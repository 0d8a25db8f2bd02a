"""What the relay keeps, for how long, and how it forgets: the rules every store backend follows.

The journal holds personal data — message text, display names, Entra object ids, conversation ids
— that the relay needs only while a turn runs (to resume it after a crash) and briefly afterwards
(to map a 👍/👎 back to its turn). Keeping it for ever makes an install grow without bound and
leaves an MSP unable to answer a retention or erasure request (GDPR art. 5(1)(e), art. 17)
without opening the database by hand (issue 16). So, in every backend:

- a turn that reaches a final state keeps no content: its message text and file URLs are cleared,
  its delivery record loses the answer text it held for a resumed stream
  (:data:`ANSWER_TEXT_KEYS`), and the Teams activity ids it sent go into an index (activity id →
  turn) for feedback;
- finished turns, their index rows, claims and session mappings idle for longer than the retention
  period (``RELAY_RETENTION``) are deleted — SQLite by :class:`RetentionSweeper` calling
  ``Store.prune``, Redis by a TTL set when a turn finishes; unfinished turns are never pruned;
- ``Store.forget_conversation`` / ``forget_user`` (``relay forget``) erase one conversation or one
  person at once and report what they deleted, as :class:`Erased`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from typing import Any, Protocol

from relay.domain import Turn

log = logging.getLogger(__name__)

DEFAULT_RETENTION = 30 * 86400.0

# The fields of a delivery record that hold answer text (relay.teams.stream keeps what the open
# stream shows, so a resumed run can close it). A finished turn drops them; its bookkeeping
# (ids, counts, flags) stays. A sink that records text in a new field must list it here.
# The streamed text a resumed run closes with, and the final journaled ahead of its sending
# (relay.teams.stream_state).
ANSWER_TEXT_KEYS = frozenset({"shown_text", "closing"})


def delivered_ids(delivery: dict[str, Any]) -> set[str]:
    """Every Teams activity id a turn's delivery record says it sent."""
    raw = delivery.get("activity_ids")
    ids = {str(i) for i in raw if i} if isinstance(raw, list) else set()
    for key in ("stream_id", "activity_id"):
        value = delivery.get(key)
        if isinstance(value, str) and value:
            ids.add(value)
    return ids


def final_delivery(delivery: dict[str, Any]) -> dict[str, Any]:
    """The part of a delivery record a finished turn keeps: all but the answer text."""
    return {k: v for k, v in delivery.items() if k not in ANSWER_TEXT_KEYS}


def scrub_finished(turn: Turn) -> None:
    """Clear what recovery needed and a finished turn does not: the message text and file URLs."""
    if turn.state.is_final:
        turn.text = ""
        turn.files = []


def claim_mentions(key: str, bot_id: str | None, conversation_id: str) -> bool:
    """Does claim ``key`` (``<kind>:<bot>:<conversation>[:<more>]``) belong to the conversation?

    Claims are named that way by their writers (install greetings, invoke de-duplication); a
    conversation id may itself contain ``:``, hence the prefix test rather than a split.
    """
    _kind, _, rest = key.partition(":")
    bot, _, tail = rest.partition(":")
    if bot_id is not None and bot != bot_id:
        return False
    return tail == conversation_id or tail.startswith(conversation_id + ":")


class Erased(Counter[str]):
    """What a prune or an erasure deleted, by kind (``turns``, ``sessions``, ``claims``, ...).

    ``neo_sessions`` names the Neo sessions the erased turns and mappings belonged to: the relay
    cannot delete what Neo keeps, so ``relay forget`` prints them for the MSP to erase there.
    """

    def __init__(self) -> None:
        super().__init__()
        self.neo_sessions: set[str] = set()

    def merge(self, other: Erased) -> None:
        self.update(other)
        self.neo_sessions |= other.neo_sessions

    def describe(self) -> str:
        parts = [f"{n} {kind}" for kind, n in sorted(self.items()) if n]
        return ", ".join(parts) if parts else "nothing"


class Prunable(Protocol):
    async def prune(self, *, batch: int = 500) -> Erased: ...


def sweep_interval(retention: float) -> float:
    """How often to prune: a fifth of the retention period, between 1 s and 5 minutes."""
    return min(max(retention / 5, 1.0), 300.0)


class RetentionSweeper:
    """Calls ``store.prune()`` every :func:`sweep_interval` until stopped; never raises."""

    def __init__(self, store: Prunable, retention: float) -> None:
        self._store = store
        self.interval = sweep_interval(retention)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="relay-retention")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def sweep(self) -> Erased:
        erased = await self._store.prune()
        if erased.total():
            log.info("retention: deleted %s", erased.describe())
        return erased

    async def _loop(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:  # a store hiccup: try again next time
                log.exception("retention sweep failed")
            await asyncio.sleep(self.interval)
