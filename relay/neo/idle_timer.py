"""One time limit per SSE connection, moved by each event without creating a timer.

The tail bounds every wait for the next event (first byte, idle gap, terminal grace, the turn's
total). ``asyncio.timeout`` around each read creates, reschedules and cancels a loop timer per
event — at 10 events a second per answer, about a fifth of the tail's CPU (py-spy, bench/README.md
"Profile"). :class:`IdleTimer` keeps one loop timer per connection: arming it for a later moment
only stores the new deadline, and when the timer fires early it re-arms itself for the stored
one. It interrupts only a wait the tail marked as a read (:meth:`reading`): a deadline that passes
while the tail is journaling an id or handing a chunk on cancels nothing, exactly like the
``asyncio.timeout`` it replaces, which existed only around the read. Expiry cancels the task the
way ``asyncio.timeout`` does (and is told apart from any other cancellation the same way, by
``Task.uncancel``), and the read raises ``TimeoutError``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Self, TypeVar

T = TypeVar("T")


class IdleTimer:
    """Use as ``with IdleTimer() as timer:`` around one connection (inside the event loop)."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task: asyncio.Task[object] | None = None  # the one in reading(), if any
        self._due = 0.0
        self._handle: asyncio.TimerHandle | None = None
        self._expired = False

    def arm(self, delay: float) -> None:
        """The next read may wait ``delay`` seconds from now."""
        self._due = due = self._loop.time() + delay
        handle = self._handle
        if handle is None or handle.when() > due:  # the rare deadline that moves earlier
            if handle is not None:
                handle.cancel()
            self._handle = self._loop.call_at(due, self._fire)

    async def reading(self, awaitable: Awaitable[T]) -> T:
        """Await ``awaitable``, cancelled with ``TimeoutError`` once the armed deadline passes."""
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("IdleTimer.reading needs a running task")
        cancelling = task.cancelling()
        self._task, self._expired = task, False
        try:
            return await awaitable
        except asyncio.CancelledError:
            # Ours only if nobody else asked for a cancellation meanwhile (asyncio.timeout's rule).
            if self._expired and task.uncancel() <= cancelling:
                raise TimeoutError from None
            raise
        finally:
            self._task = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        self._handle = None
        task = self._task
        if task is None:
            return  # not waiting on the network now: the next arm() schedules again
        if self._loop.time() < self._due:
            self._handle = self._loop.call_at(self._due, self._fire)
            return
        self._expired = True
        task.cancel()
