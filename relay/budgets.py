"""Rate budgets shared by the whole deployment: Teams' per-(app, tenant) limit and Neo's.

Teams allows a bot app about 30-50 requests a second per tenant (teams-platform.md §2) and Neo
1,200 requests per 60 s sliding window per tenant, reporting what is left in ``X-RateLimit-*``
(neo-chat-api.md §a.3). Both limits belong to the deployment, not to one process: N replicas
counting on their own would let N times the budget through. So a budget is a sliding-window log
kept where the replicas meet — :class:`RedisBudgets` (``relay.budget_redis``: one Lua call per
take, atomic across replicas) when ``RELAY_DATABASE_URL`` is Redis, :class:`LocalBudgets` (the same
arithmetic in this process) with SQLite, which serves one process. A *take* never sleeps: it either
counts the request or says how long until it would fit, so a caller decides whether to wait
(a Teams post, a Neo call already under way: :meth:`BudgetBase.acquire`) or to park the whole turn
journaled (``relay.admission``). A server's own word (:class:`Hint`, from Neo's headers or a 429)
rides along with the next take, so what one replica learns slows every replica down without an
extra round-trip. :class:`NeoBudget` is the small object ``relay.neo`` calls before each request
and after each response.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import random
import time
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from relay.domain import ConversationRef, TurnId
from relay.retry import parse_retry_after

Window = tuple[float, int]  # (seconds, requests)


@dataclass(frozen=True, slots=True)
class Grant:
    """The outcome of a take: ``wait`` 0 means counted; otherwise seconds until it would fit.
    ``remaining``: requests left in the tightest window (or the server's hint) after this one."""

    wait: float
    remaining: int


@dataclass(frozen=True, slots=True)
class Hint:
    """What a server said of its own budget: ``remaining`` requests until ``reset`` (epoch s),
    as seen at ``seen`` (epoch s; the freshest word wins)."""

    remaining: int
    reset: float
    seen: float


class BudgetWait(Exception):
    """A turn would exceed a budget for ``wait`` seconds: its conversation waits journaled
    (raised by ``relay.admission.AdmissionGate.before_neo``, handled by ``relay.worker``)."""

    def __init__(self, turn_id: TurnId, ref: ConversationRef, wait: float) -> None:
        super().__init__(f"turn {turn_id} waits {wait:.2f}s for budget")
        self.turn_id, self.ref, self.wait = turn_id, ref, wait


class Budgets(Protocol):
    """Sliding-window budgets by key; ``take`` counts ``cost`` requests or says how long to wait."""

    async def take(
        self,
        key: str,
        windows: Sequence[Window],
        *,
        cost: int = 1,
        hint: Hint | None = None,
        slack: float = 0.0,
    ) -> Grant: ...

    async def acquire(
        self,
        key: str,
        windows: Sequence[Window],
        *,
        cost: int = 1,
        hint: Hint | None = None,
        slack: float = 0.0,
    ) -> Grant: ...

    async def aclose(self) -> None: ...


def check_windows(windows: Sequence[Window], cost: int) -> None:
    if not windows or any(seconds <= 0 or cost > n for seconds, n in windows):
        raise ValueError(f"a take of {cost} can never fit {windows}")


class BudgetBase:
    """``acquire``: take, or sleep and take again, with one poller per key in this process."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}

    async def take(
        self,
        key: str,
        windows: Sequence[Window],
        *,
        cost: int = 1,
        hint: Hint | None = None,
        slack: float = 0.0,
    ) -> Grant:
        raise NotImplementedError

    async def acquire(
        self,
        key: str,
        windows: Sequence[Window],
        *,
        cost: int = 1,
        hint: Hint | None = None,
        slack: float = 0.0,
    ) -> Grant:
        """Return once ``cost`` requests were counted under ``key``.

        The fast path is one take. Past it, waiters of one key queue on a lock, so only one task
        per process polls the shared log (arrival order, no thundering herd of round-trips)."""
        grant = await self.take(key, windows, cost=cost, hint=hint, slack=slack)
        if grant.wait <= 0:
            return grant
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            while grant.wait > 0:
                # A little jitter: replicas woken by the same expiry do not all ask at once.
                await asyncio.sleep(grant.wait + random.uniform(0.0, 0.01))
                grant = await self.take(key, windows, cost=cost, slack=slack)
        if not lock.locked() and self._locks.get(key) is lock:
            del self._locks[key]
        return grant


class LocalBudgets(BudgetBase):
    """In-process sliding-window logs (SQLite deployments: one process holds every budget)."""

    def __init__(self) -> None:
        super().__init__()
        self._logs: dict[str, list[float]] = {}  # monotonic take times, ascending
        self._hints: dict[str, Hint] = {}

    async def take(
        self,
        key: str,
        windows: Sequence[Window],
        *,
        cost: int = 1,
        hint: Hint | None = None,
        slack: float = 0.0,
    ) -> Grant:
        return self.take_now(key, windows, cost=cost, hint=hint, slack=slack)

    def take_now(
        self,
        key: str,
        windows: Sequence[Window],
        *,
        cost: int = 1,
        hint: Hint | None = None,
        slack: float = 0.0,
    ) -> Grant:
        check_windows(windows, cost)
        now, wall = time.monotonic(), time.time()
        wait, left = 0.0, math.inf
        if hint is not None and hint.reset > wall:
            old = self._hints.get(key)
            if old is None or hint.seen > old.seen:
                self._hints[key] = hint
        known = self._hints.get(key)
        if known is not None and known.reset <= wall:
            known = self._hints.pop(key)  # that window is over: the word no longer applies
            known = None
        if known is not None:
            if known.remaining < cost:
                wait = known.reset - wall
            else:
                left = known.remaining - cost
        log = self._logs.setdefault(key, [])
        longest = max(seconds for seconds, _ in windows) + slack
        del log[: bisect_right(log, now - longest)]
        for seconds, limit in windows:
            start = bisect_right(log, now - seconds - slack)
            over = len(log) - start + cost - limit
            if over > 0:
                # The over-th oldest send in this window must leave it first.
                wait = max(wait, log[start + over - 1] + seconds + slack - now)
            else:
                left = min(left, -over)
        if wait > 0:
            return Grant(wait, 0)
        log.extend([now] * cost)
        if known is not None:
            self._hints[key] = Hint(known.remaining - cost, known.reset, known.seen)
        return Grant(0.0, int(min(left, 2**31)))

    async def aclose(self) -> None:
        self._logs.clear()
        self._hints.clear()


def open_budgets(database_url: str) -> Budgets:
    """Budgets where the store is: shared in Redis for ``redis://``, in-process otherwise (the
    URL was already validated by ``relay.store.open_store``)."""
    scheme = database_url.strip().partition("://")[0].lower()
    if scheme in ("redis", "rediss"):
        from relay.budget_redis import RedisBudgets  # redis only where it is used

        return RedisBudgets.from_url(database_url)
    return LocalBudgets()


# -- Neo ---------------------------------------------------------------------------------------

NEO_KEY = "neo"  # Neo counts per tenant; the API key is the tenant, one per deployment
# How much longer than Neo's window a request stays counted here: it is counted when taken, Neo
# counts it when it arrives, a little later (a prepaid take, a busy event loop).
NEO_SLACK = 0.5
# A unit taken when a turn starts pays for that turn's first request if it comes this soon.
PREPAID_SECONDS = 0.25
_prepaid: contextvars.ContextVar[list[float] | None] = contextvars.ContextVar(
    "neo_prepaid", default=None
)


def parse_hint(status: int, headers: Mapping[str, str], now: float) -> Hint | None:
    """Neo's ``X-RateLimit-Remaining`` / ``X-RateLimit-Reset`` (epoch seconds), or a 429's
    ``Retry-After``; None when the response says nothing (no header-driven slowdown)."""
    if status == 429:
        retry_after = parse_retry_after(headers.get("retry-after"))
        return Hint(0, now + (retry_after if retry_after is not None else 1.0), now)
    remaining, reset = headers.get("x-ratelimit-remaining"), headers.get("x-ratelimit-reset")
    if remaining is None or reset is None:
        return None
    try:
        return Hint(int(remaining), float(reset), now)
    except ValueError:
        return None


class NeoBudget:
    """Neo's budget as ``relay.neo`` sees it: ``acquire`` before a request, ``observe`` after."""

    def __init__(self, budgets: Budgets, *, limit: int, window: float) -> None:
        self._budgets = budgets
        self.windows: tuple[Window, ...] = ((window, limit),)
        self._hint: Hint | None = None  # the freshest word not yet handed to the shared log

    def _pending_hint(self) -> Hint | None:
        hint, self._hint = self._hint, None
        return hint

    async def acquire(self) -> None:
        """Wait until one more request fits (a unit prepaid by :meth:`begin_turn` counts)."""
        prepaid = _prepaid.get()
        if prepaid is not None:
            # Spent in place: a task started since the take shares this list, not a copy.
            expires, prepaid[0] = prepaid[0], 0.0
            if time.monotonic() <= expires:
                return
        await self._budgets.acquire(
            NEO_KEY, self.windows, hint=self._pending_hint(), slack=NEO_SLACK
        )

    async def begin_turn(self) -> Grant:
        """Take the unit of a turn's first request now (no wait): 0 = go on, else park."""
        grant = await self._budgets.take(
            NEO_KEY, self.windows, hint=self._pending_hint(), slack=NEO_SLACK
        )
        if grant.wait <= 0:
            _prepaid.set([time.monotonic() + PREPAID_SECONDS])
        return grant

    def observe(self, status: int, headers: Mapping[str, str]) -> None:
        """Every Neo response: remember what it says of the budget (``headers`` is httpx's
        case-insensitive mapping); a fresher word replaces an older one."""
        hint = parse_hint(status, headers, time.time())
        if hint is not None and (self._hint is None or hint.seen >= self._hint.seen):
            self._hint = hint
