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
hundreds of ms), so ``relay.start_slots.StartSlots`` also bounds the turns in that phase
(``RELAY_MAX_STARTING_TURNS``): a slot is held from the run's start to its first chunk
(``first_chunk``) or for ``hold`` s at most, and while all are held new conversations wait
here too. A conversation that waited more than ``busy_after`` s gets one "Busy — your question is
queued" notice (:class:`BusyNotifier`, ``relay.teams.busy``). Nothing is dropped: a waiting key
stays until its turns have been handed to the worker.

The same queue holds conversations waiting for Neo's rate budget (``relay.budgets``): before a
turn's first Neo request the pipeline calls :meth:`AdmissionGate.before_neo`, which takes that
request's unit; when the budget is spent for longer than :data:`PARK_AFTER`, it raises
``BudgetWait``, the worker ends the conversation's task and :meth:`AdmissionGate.parked` puts the
conversation back at the front, journaled, with the same busy notice. Until the budget should have
room again nothing new is admitted, and then one conversation at a time probes it — not every
waiting one at once, each to be parked again — until a take reports room for all of them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from relay.budgets import BudgetWait, Grant
from relay.domain import BotId, ConversationId, ConversationRef, Turn, TurnId
from relay.start_slots import StartSlots

log = logging.getLogger(__name__)

ConversationKey = tuple[BotId, ConversationId]
LoadTurns = Callable[[BotId, ConversationId], Awaitable[list[Turn]]]
# Seconds a conversation may wait for a slot before its user is told (the "a few seconds").
BUSY_AFTER = 3.0
# Busy notices being sent at once (see AdmissionGate._pump_notices).
NOTICES_IN_FLIGHT = 4
# A budget wait this short is slept through by the turn; a longer one parks its conversation.
PARK_AFTER = 0.5
# A conversation admitted to probe a spent budget is the only one admitted until it has taken its
# unit, or at most this long (its first turn may need no Neo request at all).
PROBE_SECONDS = 2.0


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


class TurnBudget(Protocol):
    """Neo's budget at a turn's start (``relay.budgets.NeoBudget``)."""

    async def begin_turn(self) -> Grant: ...


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
    parked: bool = False  # waits for budget, at the front: the notice ticker must not stop at it


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
        budget: TurnBudget | None = None,
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
        self._budget = budget
        self._budget_until = 0.0  # monotonic; non-zero: the budget was spent, admit by probes
        self._probe: ConversationKey | None = None
        self._probe_at = 0.0
        self._wakes: set[asyncio.TimerHandle] = set()
        # The turn each conversation was told about: parked again, it is not told twice.
        self._told: dict[ConversationKey, TurnId] = {}

    @property
    def waiting(self) -> int:
        """Conversations whose turns wait in the journal for a slot."""
        return len(self._waiting)

    def start(self) -> None:
        if self._lag is not None:
            self._lag.start()

    def _full(self) -> bool:
        if self._budget_until:
            now = time.monotonic()
            if now < self._budget_until:
                return True
            if self._probe is not None and now - self._probe_at < PROBE_SECONDS:
                return True
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

    def adopt(self, turn: Turn) -> bool:
        """What the lease sweep submits: True only if this took up ``turn``'s conversation. One
        that runs here or waits journaled (for a slot or Neo's budget) looks abandoned to the
        sweep when its turns sat still for a lease period, but it is not: nothing to count."""
        key = (turn.bot_id, turn.conversation_id)
        if self._worker.running(key) or key in self._waiting:
            return False
        return self.submit(turn)

    def released(self, key: ConversationKey | None) -> None:
        """A conversation went idle (worker hook): admit waiting conversations into free slots."""
        if key is not None:
            self._told.pop(key, None)  # idle: its waiting turns have all run
            if key == self._probe:
                self._probe = None
        while self._waiting and not self._full():
            next_key, entry = self._waiting.popitem(last=False)
            if self._budget_until:
                self._probe, self._probe_at = next_key, time.monotonic()
                self._wake_at(PROBE_SECONDS)
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

    # -- Neo's budget -------------------------------------------------------------------------

    async def before_neo(self, turn: Turn) -> None:
        """Pipeline hook before a turn's first Neo request: take its unit of Neo's budget, or
        raise ``BudgetWait`` so that the conversation waits journaled (:meth:`parked`)."""
        if self._budget is None:
            return
        while True:
            try:
                grant = await self._budget.begin_turn()
            except Exception as exc:  # the store is down: the turn's own Neo calls will say so
                log.warning("could not read Neo's budget (%s); going on", type(exc).__name__)
                return
            if grant.wait <= 0:
                break
            if grant.wait > PARK_AFTER:
                raise BudgetWait(turn.turn_id, turn.ref, grant.wait)
            await asyncio.sleep(grant.wait)
        key = (turn.bot_id, turn.conversation_id)
        if self._budget_until and self._probe in (None, key):
            self._probe = None
            if grant.remaining > len(self._waiting):
                self._budget_until = 0.0  # room for everyone waiting: admit as usual again
            self._retry()

    def parked(self, key: ConversationKey, wait: BudgetWait) -> None:
        """Worker hook: ``key``'s next turn waits ``wait.wait`` s for budget, journaled."""
        now = time.monotonic()
        if key == self._probe:
            self._probe = None
        entry = self._waiting.pop(key, None) or _Waiting(now, wait.turn_id, wait.ref)
        entry.parked = True
        entry.noticed = entry.noticed or self._told.get(key) == wait.turn_id
        self._waiting[key] = entry
        self._waiting.move_to_end(key, last=False)  # it ran before everything still waiting
        if not self._budget_until:
            log.info("neo budget spent: conversations wait %.1fs, journaled", wait.wait)
        self._budget_until = max(self._budget_until, now + wait.wait)
        self._wake_at(self._budget_until - now)
        self._ensure_ticker()

    def _wake_at(self, delay: float) -> None:
        """Try admissions again in ``delay`` s (the loop-lag sampler may do it sooner)."""
        loop = asyncio.get_running_loop()
        self._wakes = {w for w in self._wakes if w.when() > loop.time()}  # fired ones go
        self._wakes.add(loop.call_later(delay, self._retry))

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
            if self._notifying >= NOTICES_IN_FLIGHT:
                break
            if now - entry.since < self._busy_after:
                if entry.parked:
                    continue  # parked ones are put at the front, whenever they parked
                break  # arrival order: everything after it waited less
            if not entry.noticed:
                entry.noticed = True
                self._told[(entry.ref.bot_id, entry.ref.conversation_id)] = entry.turn_id
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
        for wake in self._wakes:
            wake.cancel()
        tasks = [*self._tasks, *([self._ticker] if self._ticker else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._lag is not None:
            await self._lag.stop()
