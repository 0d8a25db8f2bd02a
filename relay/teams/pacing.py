"""Outbound pacing inside Teams' published rate limits: the relay waits rather than get a 429.

Teams limits a bot per conversation ("thread") to 7 sends in 1 s, 8 in 2 s, 60 in 30 s and 1800 in
an hour, and an app to 50 requests per second per tenant, of which ~30 is the safe planning figure
(reference teams-platform.md §2). The per-tenant window belongs to the whole deployment, so it is a
shared budget (``relay.budgets``, key :func:`tenant_key`, in Redis with several replicas). The
per-conversation windows stay in this process: a conversation's turns run on the one replica
holding its lease (``relay.replicas``), and an hour-long log per conversation in Redis would cost
up to 1,800 entries each. :class:`SlidingWindowLimiter` keeps, per key, the send times of the
longest window and makes ``acquire`` sleep until every window has room. Keys are cheap: one deque
per active conversation, dropped once idle for the longest window.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Hashable

PER_CONVERSATION_WINDOWS: tuple[tuple[float, int], ...] = (
    (1.0, 7),
    (2.0, 8),
    (30.0, 60),
    (3600.0, 1800),
)
PER_TENANT_WINDOWS: tuple[tuple[float, int], ...] = ((1.0, 30),)


def tenant_key(bot_id: str, tenant_id: str | None) -> str:
    """The shared budget of one bot app in one tenant."""
    return f"teams:{bot_id}:{tenant_id or '-'}"


class SlidingWindowLimiter:
    """``await acquire(key)`` returns once a send under ``key`` fits every (seconds, n) window."""

    def __init__(self, windows: tuple[tuple[float, int], ...]) -> None:
        self._windows = tuple(sorted(windows))
        self._longest = max(w for w, _ in self._windows)
        self._cap = max(n for _, n in self._windows)
        self._sent: dict[Hashable, deque[float]] = {}
        self._locks: dict[Hashable, asyncio.Lock] = {}

    def _wait_needed(self, times: deque[float], now: float) -> float:
        while times and now - times[0] >= self._longest:
            times.popleft()
        wait = 0.0
        for seconds, count in self._windows:
            # The count-th most recent send must have left this window.
            if len(times) >= count:
                oldest_in_budget = times[-count]
                wait = max(wait, oldest_in_budget + seconds - now)
        return wait

    async def acquire(self, key: Hashable) -> None:
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            times = self._sent.setdefault(key, deque(maxlen=self._cap))
            while True:
                now = time.monotonic()
                wait = self._wait_needed(times, now)
                if wait <= 0:
                    times.append(now)
                    break
                await asyncio.sleep(wait)
        if not lock.locked() and len(self._locks) > 10_000:
            self._gc(time.monotonic())

    def _gc(self, now: float) -> None:
        for key in [k for k, t in self._sent.items() if not t or now - t[-1] >= self._longest]:
            self._sent.pop(key, None)
            lock = self._locks.get(key)
            if lock is not None and not lock.locked():
                self._locks.pop(key, None)
