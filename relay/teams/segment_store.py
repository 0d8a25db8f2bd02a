"""Delivery journal of a continuation segment: the sinks' ``Store``, nested one level down.

An answer interrupted by an approval card continues in a new message or stream (``relay.segments``).
Every sink journals what Teams shows under the turn's id (``Store.save_delivery``), and the first
segment's record holds the stream id that Teams has already closed; a continuation reusing it would
post into a finished stream (teams-platform.md §1.1). :class:`SegmentDeliveries` gives segment *n*
its own record, kept inside the turn's under ``segments[n]``, so the sinks (``relay.teams.stream``,
``relay.teams.presenter``) run unchanged and a resumed run finds each segment's progress.
"""

from __future__ import annotations

from typing import Any, cast

from relay.domain import TurnId
from relay.store.base import Fence, Store


class SegmentDeliveries:
    """A ``Store`` whose delivery records are those of one continuation segment."""

    def __init__(self, store: Store, segment: int) -> None:
        self._store = store
        self._key = str(segment)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def get_delivery(self, turn_id: TurnId) -> dict[str, Any]:
        whole = await self._store.get_delivery(turn_id)
        segments = whole.get("segments")
        mine = segments.get(self._key) if isinstance(segments, dict) else None
        return dict(mine) if isinstance(mine, dict) else {}

    async def save_delivery(
        self, turn_id: TurnId, data: dict[str, Any], *, fence: Fence | None = None
    ) -> None:
        # Read-modify-write is safe: one run writes a turn's segments one after another.
        whole = await self._store.get_delivery(turn_id)
        segments = whole.get("segments")
        segments = dict(segments) if isinstance(segments, dict) else {}
        segments[self._key] = data
        whole["segments"] = segments
        await self._store.save_delivery(turn_id, whole, fence=fence)


def segment_store(store: Store, segment: int) -> Store:
    """``store`` itself for the first segment, else the segment's nested view of it."""
    return store if segment == 0 else cast(Store, SegmentDeliveries(store, segment))
