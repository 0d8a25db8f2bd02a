"""Start slots: at most ``RELAY_MAX_STARTING_TURNS`` turns in their starting phase at once.

Why: starting is the expensive part of a turn (session lookup or creation, the POST, opening the
event stream), and a burst of starts starves the event loop for hundreds of ms — the webhook's
answer then waits behind them (bench/README.md). A slot is held from a run's start to its first
chunk from Neo (:func:`first_chunk`) or for ``hold`` s at most (past that the turn waits on the
network, which costs the loop nothing). ``relay.admission`` keeps new conversations waiting,
journaled, while all slots are held; ``relay.worker`` takes a slot around each run.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from contextvars import ContextVar

# Seconds a turn holds its start slot at most when no chunk comes (a slow Neo must not stall the
# others: past this the turn is waiting on the network, which costs the loop nothing).
START_HOLD = 2.0


class StartSlots:
    """At most ``limit`` turns in their starting phase; ``on_free`` runs when one ends it.

    ``try_take`` reserves synchronously (the gate's caller learns at once whether it is full);
    ``take`` waits in arrival order. Each held slot is a :class:`StartSlot`, freed by
    ``release`` — at the first chunk, after ``hold`` s, or when the run ends, whichever is first.
    """

    def __init__(self, limit: int, *, hold: float = START_HOLD) -> None:
        if limit < 1:
            raise ValueError("the starting-turn limit must be at least 1")
        self.limit = limit
        self.hold = hold
        self.held = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self.on_free: Callable[[], None] | None = None

    @property
    def full(self) -> bool:
        return self.held >= self.limit

    def try_take(self) -> StartSlot | None:
        if self.held >= self.limit or self._waiters:
            return None
        self.held += 1
        return StartSlot(self)

    async def take(self) -> StartSlot:
        slot = self.try_take()
        if slot is not None:
            return slot
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # _free handed its slot over: held already counts it
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._free()  # handed over just as we were cancelled: pass it on
            else:
                self._waiters.remove(waiter)
            raise
        return StartSlot(self)

    def _free(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.held -= 1
        if self.on_free is not None:
            self.on_free()


class StartSlot:
    """One held start slot; ``release`` is idempotent and also runs ``hold`` s after creation."""

    __slots__ = ("_slots", "_timer")

    def __init__(self, slots: StartSlots) -> None:
        self._slots: StartSlots | None = slots
        self._timer = asyncio.get_running_loop().call_later(slots.hold, self.release)

    def release(self) -> None:
        slots, self._slots = self._slots, None
        if slots is not None:
            self._timer.cancel()
            slots._free()


# The start slot of the turn the current task runs (set by relay.worker around a run).
CURRENT_START: ContextVar[StartSlot | None] = ContextVar("relay_start_slot", default=None)


def first_chunk() -> None:
    """The running turn has its first chunk from Neo: it is past its starting phase."""
    slot = CURRENT_START.get()
    if slot is not None:
        slot.release()
