"""Admission control: at most ``RELAY_MAX_ACTIVE_TURNS`` conversations run turns at once.

Why: a relay process has one event loop, and every running turn spends CPU on it (Neo calls, the
SSE tail, Teams updates, journal writes). Past the loop's capacity the webhook's own answer waits
behind turn work, and after ~15 s Teams re-delivers (teams-platform.md §0.2) — overload then turns
into failures. So the webhook stays the cheap part (authentication and one journal write, in
``relay.teams.dispatch``), and this gate decides what runs: a conversation already running takes
its next turn in order (``relay.worker``); a new one runs if a slot is free, otherwise only its key
waits here, in arrival order — the turns themselves wait in the journal (state ``received``) and
are read back from the store when a slot frees, so a flood costs a small entry per waiting
conversation, not a task per turn. The count alone cannot size every load (a 15 s stream costs the
loop far less per second than a burst of 1-second answers), so new conversations also wait while
the loop itself is late: :class:`LoopLag` samples how late a short sleep wakes, and past
``max_lag`` (``RELAY_ADMISSION_MAX_LAG_MS``) only conversations already running go on, which keeps
the webhook's answer within about that lag. Starting is the expensive part of a turn (session
lookup or creation, the POST, opening the event stream: a burst of them starves the loop for
hundreds of ms), so :class:`StartSlots` also bounds the turns in that phase
(``RELAY_MAX_STARTING_TURNS``): a slot is held from the run's start to its first chunk
(:func:`first_chunk`) or for ``hold`` s at most, and while all are held new conversations wait
here too. A conversation that waited more than ``busy_after`` s gets one "Busy — your question is
queued" notice (:class:`BusyNotifier`, ``relay.teams.busy``). Nothing is dropped: a waiting key
stays until its turns have been handed to the worker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Coroutine
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol

from relay.domain import BotId, ConversationId, ConversationRef, Turn, TurnId

log = logging.getLogger(__name__)

ConversationKey = tuple[BotId, ConversationId]
LoadTurns = Callable[[BotId, ConversationId], Awaitable[list[Turn]]]
# Seconds a conversation may wait for a slot before its user is told (the "a few seconds").
BUSY_AFTER = 3.0
# Seconds a turn holds its start slot at most when no chunk comes (a slow Neo must not stall the
# others: past this the turn is waiting on the network, which costs the loop nothing).
START_HOLD = 2.0
# Busy notices being sent at once (see AdmissionGate._pump_notices).
NOTICES_IN_FLIGHT = 4


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


class LoopLag:
    """How late this event loop wakes from a ``period`` s sleep: the worst of the last
    ``window`` samples (0 when idle). ``on_sample`` runs after each sample."""

    def __init__(self, period: float = 0.025, window: int = 4) -> None:
        self.period = period
        self._samples: deque[float] = deque([0.0], maxlen=window)
        self._task: asyncio.Task[None] | None = None
        self.on_sample: Callable[[], None] | None = None

    @property
    def lag(self) -> float:
        return max(self._samples)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="loop-lag")

    async def _run(self) -> None:
        while True:
            t0 = time.monotonic()
            await asyncio.sleep(self.period)
            self._samples.append(max(0.0, time.monotonic() - t0 - self.period))
            if self.on_sample is not None:
                self.on_sample()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


class Worker(Protocol):
    """What the gate needs of ``relay.worker.ConversationWorker``."""

    @property
    def active(self) -> int: ...

    def running(self, key: ConversationKey) -> bool: ...

    def submit(self, turn: Turn) -> bool: ...


class BusyNotifier(Protocol):
    """Tells the user of a waiting turn that it is queued (``relay.teams.busy.TeamsBusyNotice``)."""

    async def queued(self, turn_id: TurnId, ref: ConversationRef) -> None: ...


@dataclass(slots=True)
class _Waiting:
    since: float  # monotonic
    turn_id: TurnId  # the first waiting turn: the one whose user is told
    ref: ConversationRef
    noticed: bool = False
    notice: asyncio.Task[None] | None = None  # admission waits for it: one stream per chat


class AdmissionGate:
    """``submit`` in front of the worker; call :meth:`released` when a conversation goes idle."""

    def __init__(
        self,
        worker: Worker,
        load: LoadTurns,
        *,
        max_active: int,
        notifier: BusyNotifier | None = None,
        busy_after: float = BUSY_AFTER,
        max_lag: float | None = None,
        lag: LoopLag | None = None,
        starts: StartSlots | None = None,
    ) -> None:
        if max_active < 1:
            raise ValueError("max_active must be at least 1")
        self._worker = worker
        self._load = load
        self.max_active = max_active
        self._notifier = notifier
        self._busy_after = busy_after
        self._waiting: OrderedDict[ConversationKey, _Waiting] = OrderedDict()
        self._admitting = 0  # conversations popped from the queue whose turns are being read
        self._notifying = 0  # busy notices being sent
        self._tasks: set[asyncio.Task[None]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._max_lag = max_lag
        self._lag = lag if lag is not None or max_lag is None else LoopLag()
        if self._lag is not None:
            self._lag.on_sample = self._retry
        self._starts = starts
        if starts is not None:
            starts.on_free = self._retry

    @property
    def waiting(self) -> int:
        """Conversations whose turns wait in the journal for a slot."""
        return len(self._waiting)

    def start(self) -> None:
        if self._lag is not None:
            self._lag.start()

    def _full(self) -> bool:
        busy = self._worker.active + self._admitting
        if busy >= self.max_active:
            return True
        # Conversations being admitted will take a start slot too.
        if self._starts is not None and self._starts.held + self._admitting >= self._starts.limit:
            return True
        # A late loop admits nothing new, but never stalls completely: one conversation may run.
        return (
            busy > 0
            and self._lag is not None
            and self._max_lag is not None
            and self._lag.lag > self._max_lag
        )

    def _retry(self) -> None:
        if self._waiting and not self._full():
            self.released(None)

    def submit(self, turn: Turn) -> bool:
        """Run ``turn`` now (behind its conversation's earlier turns) or leave it journaled until
        a slot frees. True if it was accepted either way (False: the worker refused it)."""
        key = (turn.bot_id, turn.conversation_id)
        if self._worker.running(key):
            return self._worker.submit(turn)  # its conversation already holds a slot
        if key in self._waiting:
            return True  # read back from the journal with the turns before it
        if not self._waiting and not self._full():
            return self._worker.submit(turn)
        self._waiting[key] = _Waiting(time.monotonic(), turn.turn_id, turn.ref)
        if len(self._waiting) == 1 or len(self._waiting) % 100 == 0:
            log.info("busy: %d conversation(s) wait for a turn slot", len(self._waiting))
        self._ensure_ticker()
        return True

    def released(self, key: ConversationKey | None) -> None:
        """A conversation went idle (worker hook): admit waiting conversations into free slots."""
        while self._waiting and not self._full():
            next_key, entry = self._waiting.popitem(last=False)
            self._admitting += 1
            self._spawn(self._admit(next_key, entry))

    async def _admit(self, key: ConversationKey, entry: _Waiting) -> None:
        if entry.notice is not None:
            # The notice may be opening the chat's stream: the turn's sink must see it journaled.
            await asyncio.gather(entry.notice, return_exceptions=True)
        try:
            turns = await self._load(*key)
        except Exception as exc:
            # The store is unreachable: the conversation keeps its place at the front.
            log.warning("could not read waiting turns (%s); retrying", type(exc).__name__)
            await asyncio.sleep(1.0)
            self._admitting -= 1
            if key not in self._waiting:
                self._waiting[key] = entry
                self._waiting.move_to_end(key, last=False)
            self.released(key)
            return
        self._admitting -= 1
        submitted = sum(self._worker.submit(t) for t in turns)
        if not submitted:
            self.released(key)  # nothing left to run there (finished meanwhile): next one

    # -- the busy notice ---------------------------------------------------------------------------

    def _ensure_ticker(self) -> None:
        if self._notifier is not None and (self._ticker is None or self._ticker.done()):
            self._ticker = asyncio.create_task(self._tick(), name="admission-busy-notices")

    async def _tick(self) -> None:
        """Every half second while anything waits: notify conversations waiting too long."""
        assert self._notifier is not None
        period = min(0.5, self._busy_after / 2) if self._busy_after > 0 else 0.5
        while self._waiting:
            self._pump_notices()
            await asyncio.sleep(period)

    def _pump_notices(self) -> None:
        """Start notices for the longest-waiting conversations, at most ``NOTICES_IN_FLIGHT`` at
        once: each opens a Teams stream, and hundreds at once would starve the webhook — the very
        thing the wait is for. A finished notice starts the next one."""
        now = time.monotonic()
        for entry in list(self._waiting.values()):
            if self._notifying >= NOTICES_IN_FLIGHT or now - entry.since < self._busy_after:
                break  # arrival order: everything after it waited less
            if not entry.noticed:
                entry.noticed = True
                self._notifying += 1
                entry.notice = self._spawn(self._notify(entry))

    async def _notify(self, entry: _Waiting) -> None:
        assert self._notifier is not None
        try:
            await self._notifier.queued(entry.turn_id, entry.ref)
        except Exception as exc:  # best effort: the answer still comes when a slot frees
            log.warning("could not send the busy notice of turn %s: %s", entry.turn_id, exc)
        finally:
            self._notifying -= 1
            if self._waiting:
                self._pump_notices()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        """Stop notices and admissions; waiting turns stay journaled for the next start."""
        self._waiting.clear()  # first: a cancelled notice must not start the next one
        tasks = [*self._tasks, *([self._ticker] if self._ticker else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._lag is not None:
            await self._lag.stop()
