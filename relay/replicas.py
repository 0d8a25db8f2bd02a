"""Conversation leases: each conversation's turns run on one replica at a time, in arrival order.

Teams may deliver consecutive messages of one conversation to different replicas, and any replica
may die mid-answer (DESIGN.md invariants 2 and 5). The in-process ``ConversationWorker`` orders a
conversation's turns within one process; this module extends that to several processes sharing one
store. A replica runs a conversation only while it holds the conversation's lease (a store record
with an expiry and a fencing token, ``Store.acquire_lease``), and while holding it runs the
conversation's unfinished turns *from the store*, oldest first — whichever replica journaled them —
so arrival order holds across replicas. A replica that cannot take the lease leaves the turn: the
holder picks it up before letting go (it re-reads the store after each turn, and once more after
releasing). The lease is renewed while a turn runs; a holder that cannot renew in time cancels its
own turn, and every journal write it makes is fenced with its token (``relay.store.base.fenced``),
so a stalled replica can neither answer nor overwrite the journal after another took over. A
periodic sweep on every replica claims conversations whose holder died: once its lease expires,
the turn resumes elsewhere from its journal (``since_cursor`` and the delivery progress say what
Teams has already shown).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from relay.domain import BotId, ConversationId, Turn, TurnId
from relay.errors import LeaseLost
from relay.store.base import Fence, Store, fenced

log = logging.getLogger(__name__)

Runner = Callable[[Turn], Awaitable[None]]
Submit = Callable[[Turn], bool]

# Bounds on one call of ``ConversationLeases.run``: how often it re-takes the lease after finding
# turns that arrived while it let go, and how many turns it runs under one hold.
_MAX_HOLDS = 20
_MAX_TURNS_PER_HOLD = 1000
_RELEASE_TIMEOUT = 2.0
# A conversation the sweep takes up again and again while its oldest unfinished turn stays
# unchanged this many lease periods is stalled, not merely slow: say so once, naming the holder.
STALL_PERIODS = 4


def replica_id() -> str:
    """This process's lease owner name: readable in Redis, unique across restarts."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def lease_key(bot_id: BotId, conversation_id: ConversationId) -> str:
    return f"conv:{bot_id}:{conversation_id}"


@dataclass(slots=True)
class _Hold:
    key: str
    token: int
    asked_at: float  # monotonic time the acquire was sent: the lease ends ttl after, at the latest
    lost: bool = False


class ConversationLeases:
    """Wraps the turn runner: runs a conversation's turns only under its lease.

    ``run`` is what the ``ConversationWorker`` calls for a submitted turn; ``start_sweeper`` starts
    the periodic claim of conversations left behind by a dead replica.
    """

    def __init__(
        self,
        store: Store,
        run: Runner,
        *,
        ttl: float = 15.0,
        owner: str | None = None,
        sweep_interval: float | None = None,
    ) -> None:
        if ttl <= 0:
            raise ValueError("lease ttl must be positive")
        self._store = store
        self._run_turn = run
        self.ttl = ttl
        self.owner = owner or replica_id()
        # Renew three times per period: two renewals can be lost before the lease is at risk.
        self._renew_every = ttl / 3
        self._sweep_every = sweep_interval if sweep_interval is not None else ttl / 3
        self._sweeper: asyncio.Task[None] | None = None
        self._stalled: set[TurnId] = set()  # reported once each; pruned as they finish

    # -- running turns under the lease -----------------------------------------------------------

    async def run(self, turn: Turn) -> None:
        """Run ``turn``'s conversation under its lease, or leave it to the replica holding it."""
        bot, conv = turn.bot_id, turn.conversation_id
        key = lease_key(bot, conv)
        attempted: set[TurnId] = set()
        for _ in range(_MAX_HOLDS):
            asked_at = time.monotonic()
            token = await self._store.acquire_lease(key, self.owner, self.ttl)
            if token is None:
                log.debug("conversation of turn %s is leased elsewhere; left to it", turn.turn_id)
                return
            hold = _Hold(key, token, asked_at)
            try:
                if not await self._hold(hold, bot, conv, attempted):
                    return  # lost the lease, or a turn would not finish: leave the rest
            finally:
                await self._release(hold)
            # A turn journaled by another replica while we held the lease was left to us; it is
            # in the store by now (it was journaled before that replica tried the lease).
            pending = await self._store.unfinished_conversation_turns(bot, conv, limit=1)
            if not pending or pending[0].turn_id in attempted:
                return
        log.warning("conversation %s kept receiving turns; the sweep continues it", key)

    async def _hold(
        self, hold: _Hold, bot: BotId, conv: ConversationId, attempted: set[TurnId]
    ) -> bool:
        """Run unfinished turns in order while the lease holds; False if it should not go on."""
        holder = asyncio.current_task()
        assert holder is not None
        renewer = asyncio.create_task(self._keep_renewed(hold, holder), name=f"lease-{hold.key}")
        try:
            with fenced(Fence(hold.key, hold.token)):
                for _ in range(_MAX_TURNS_PER_HOLD):
                    pending = await self._store.unfinished_conversation_turns(bot, conv, limit=1)
                    if not pending:
                        return True
                    turn = pending[0]
                    if turn.turn_id in attempted:
                        # It did not reach a final state when we ran it (e.g. the store failed):
                        # running later turns first would break the order, so stop here.
                        log.warning("turn %s is still unfinished; leaving it", turn.turn_id)
                        return False
                    # Confirm the hold before each turn: a command turn may post to Teams before
                    # its first (fenced) journal write, so the fence alone would come too late.
                    if hold.lost or not await self._store.renew_lease(
                        hold.key, self.owner, hold.token, self.ttl
                    ):
                        return False
                    attempted.add(turn.turn_id)
                    await self._run_turn(turn)
                return True
        except asyncio.CancelledError:
            if hold.lost and holder.uncancel() == 0:
                log.warning("lease %s lost mid-turn; another replica finishes it", hold.key)
                return False
            raise
        except LeaseLost:
            log.warning("lease %s was taken over; another replica finishes it", hold.key)
            return False
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer

    async def _keep_renewed(self, hold: _Hold, holder: asyncio.Task[Any]) -> None:
        """Renew every ttl/3; cancel the holder once the lease is gone or can no longer be trusted.

        "Trusted" is measured on this process's monotonic clock from the start of the last renewal
        that succeeded, with one renew period of margin, so the holder stops *before* the store
        could hand the conversation to someone else even if its own clock runs a little slow.
        """
        trusted_until = hold.asked_at + self.ttl - self._renew_every
        while True:
            await asyncio.sleep(self._renew_every)
            started = time.monotonic()
            renewed: bool | None
            try:
                async with asyncio.timeout(self._renew_every):
                    renewed = await self._store.renew_lease(
                        hold.key, self.owner, hold.token, self.ttl
                    )
            except Exception as exc:  # store unreachable: keep trying until the lease is at risk
                log.warning("could not renew lease %s: %s", hold.key, type(exc).__name__)
                renewed = None
            if renewed:
                trusted_until = started + self.ttl - self._renew_every
                continue
            if renewed is False or time.monotonic() >= trusted_until:
                hold.lost = True
                holder.cancel()
                return

    async def _release(self, hold: _Hold) -> None:
        # Released at once rather than left to expire, so a rolling restart hands over promptly.
        try:
            async with asyncio.timeout(_RELEASE_TIMEOUT):
                await self._store.release_lease(hold.key, self.owner, hold.token)
        except Exception as exc:
            log.warning("could not release lease %s: %s", hold.key, type(exc).__name__)

    # -- the sweep: conversations whose holder died ----------------------------------------------

    async def sweep(self, submit: Submit) -> int:
        """Submit one turn of each conversation with unfinished turns that looks abandoned.

        A conversation whose turns changed within the last lease period is most likely being
        run right now; it is skipped to save a pointless lease attempt (the lease, not this
        guess, is what keeps the order). Returns how many turns were submitted.
        """
        now = time.time()
        latest: dict[tuple[BotId, ConversationId], float] = {}
        first: dict[tuple[BotId, ConversationId], Turn] = {}
        for turn in await self._store.unfinished_turns():
            key = (turn.bot_id, turn.conversation_id)
            first.setdefault(key, turn)
            latest[key] = max(latest.get(key, 0.0), turn.updated_at)
        submitted = 0
        self._stalled &= {turn.turn_id for turn in first.values()}
        for key, turn in first.items():
            idle = now - latest[key]
            if idle >= self.ttl and submit(turn):
                submitted += 1
                if idle >= STALL_PERIODS * self.ttl and turn.turn_id not in self._stalled:
                    self._stalled.add(turn.turn_id)
                    await self._report_stall(turn, idle)
        return submitted

    async def _report_stall(self, turn: Turn, idle: float) -> None:
        """One WARNING for a conversation that does not move although the sweep keeps taking it
        up: whoever holds its lease is alive (it renews) but its turn is stuck; ``kill -USR1``
        on that replica logs what it waits on (``relay.ops.task_dump``)."""
        key = lease_key(turn.bot_id, turn.conversation_id)
        try:
            holder = await self._store.lease_holder(key)
        except Exception as exc:
            holder = f"unknown ({type(exc).__name__})"
        log.warning(
            "conversation %s stalled: turn %s (%s) unchanged for %.0f s; lease held by %s",
            turn.conversation_id,
            turn.turn_id,
            turn.state.value,
            idle,
            holder or "nobody",
            extra={"turn_id": turn.turn_id},
        )

    def start_sweeper(self, submit: Submit) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_forever(submit), name="lease-sweeper")

    async def _sweep_forever(self, submit: Submit) -> None:
        while True:
            await asyncio.sleep(self._sweep_every)
            try:
                n = await self.sweep(submit)
            except Exception as exc:
                log.warning("lease sweep failed: %s", type(exc).__name__)
                continue
            if n:
                log.info("lease sweep: resubmitted %d abandoned conversation(s)", n)

    async def stop(self) -> None:
        """Stop sweeping; running turns go on (the worker drains them, then they release)."""
        task, self._sweeper = self._sweeper, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
