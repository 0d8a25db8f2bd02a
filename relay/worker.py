"""Runs turns in the background: one at a time per conversation, in arrival order.

The webhook must answer Teams in milliseconds (Teams re-delivers after ~15 s, reference
teams-platform.md §0.2), so inbound only journals a turn and hands it here. Each conversation gets a
FIFO queue drained by a single task — a second message in the same chat waits for the first answer,
messages in other chats run concurrently. At start-up, turns a previous process left unfinished are
resubmitted in their original order; at shutdown, running turns get a grace period to finish and are
then cancelled, their journal state left for the next start to resume. With ``starts``
(``relay.start_slots.StartSlots``) every run first holds a start slot — a new conversation's is
reserved the moment it is submitted, so the admission gate sees it at once — and the run can free
it early through ``relay.start_slots.first_chunk``. A turn that would exceed a rate budget
(``relay.budgets.BudgetWait``) ends its conversation's task here: the turn and those behind it stay
journaled and ``on_park`` hands the conversation back to ``relay.admission``, which runs it again,
in order, once the budget has room.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from relay.budgets import BudgetWait
from relay.domain import BotId, ConversationId, Turn, TurnId
from relay.start_slots import CURRENT_START, StartSlot, StartSlots

log = logging.getLogger(__name__)

Runner = Callable[[Turn], Awaitable[None]]
ConversationKey = tuple[BotId, ConversationId]


class ConversationWorker:
    """Serialises turns per (bot, conversation) and runs conversations concurrently."""

    def __init__(
        self,
        run: Runner,
        *,
        max_concurrent: int = 2000,
        on_idle: Callable[[ConversationKey], None] | None = None,
        starts: StartSlots | None = None,
    ) -> None:
        self._run = run
        self._starts = starts
        # Told when a conversation has nothing left to run (relay.admission frees its slot).
        self.on_idle = on_idle
        # Told when a conversation's turn waits for a budget (relay.admission parks it).
        self.on_park: Callable[[ConversationKey, BudgetWait], None] | None = None
        self._queues: dict[ConversationKey, deque[Turn]] = {}
        self._tasks: dict[ConversationKey, asyncio.Task[None]] = {}
        self._queued: set[TurnId] = set()
        self._slots = asyncio.Semaphore(max_concurrent)
        self._accepting = True

    @property
    def active(self) -> int:
        return len(self._tasks)

    def running(self, key: ConversationKey) -> bool:
        """Whether the conversation has a task running or queued turns."""
        return key in self._tasks

    def submit(self, turn: Turn) -> bool:
        """Queue a turn behind earlier ones of its conversation; False if refused or queued."""
        if not self._accepting or turn.turn_id in self._queued:
            return False
        key = (turn.bot_id, turn.conversation_id)
        self._queued.add(turn.turn_id)
        self._queues.setdefault(key, deque()).append(turn)
        if key not in self._tasks:
            first = self._starts.try_take() if self._starts is not None else None
            self._tasks[key] = asyncio.create_task(
                self._drain(key, first), name=f"conversation-{turn.turn_id[:8]}"
            )
        return True

    async def _drain(self, key: ConversationKey, start: StartSlot | None) -> None:
        queue = self._queues[key]
        parked: BudgetWait | None = None
        try:
            # Once draining for shutdown, start no new turn: it would only be cancelled.
            while queue and self._accepting and parked is None:
                turn = queue[0]
                try:
                    async with self._slots:
                        if start is None and self._starts is not None:
                            start = await self._starts.take()
                        token = CURRENT_START.set(start)
                        try:
                            await self._run(turn)
                        finally:
                            CURRENT_START.reset(token)
                            if start is not None:
                                start.release()
                            start = None
                except asyncio.CancelledError:
                    raise
                except BudgetWait as wait:
                    parked = wait  # it and the turns behind it wait journaled, in order
                except Exception:
                    # The pipeline handles its own failures; this only guards the queue itself.
                    log.exception("turn %s escaped the pipeline", turn.turn_id)
                finally:
                    queue.popleft()
                    self._queued.discard(turn.turn_id)
        finally:
            if start is not None:  # cancelled before its run began
                start.release()
            self._tasks.pop(key, None)
            if parked is not None:
                for waiting in queue:
                    self._queued.discard(waiting.turn_id)
                queue.clear()
            if not queue:
                self._queues.pop(key, None)
            if self._accepting:
                if parked is not None and self.on_park is not None:
                    self.on_park(key, parked)
                elif self.on_idle is not None:
                    self.on_idle(key)

    async def drain(self, grace: float) -> None:
        """Stop accepting; wait up to ``grace`` seconds for running turns, then cancel the rest."""
        self._accepting = False
        tasks = list(self._tasks.values())
        if not tasks:
            return
        _done, still = await asyncio.wait(tasks, timeout=grace)
        for task in still:
            task.cancel()
        if still:
            log.info(
                "shutdown: %d conversation(s) interrupted; they resume at next start", len(still)
            )
            await asyncio.gather(*still, return_exceptions=True)
