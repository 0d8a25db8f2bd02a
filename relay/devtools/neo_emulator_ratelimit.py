"""The emulated Neo's rate limit: a per-tenant sliding window, reported on every response.

Neo allows 1,200 requests per 60 s sliding window per tenant, and every response carries
``X-RateLimit-Limit``, ``X-RateLimit-Remaining`` and ``X-RateLimit-Reset`` (Unix epoch seconds);
over the limit it answers ``429`` with ``Retry-After: <seconds>`` (neo-chat-api.md §a.3 [RL]).
The emulator has one API key, hence one tenant and one window. By default it only reports the
window; with a ``limit`` it enforces it, so tests can prove the relay never provokes a 429. Where
Neo leaves details open, the emulator picks: only ``/public-api`` requests count, a refused
request does not, ``Reset`` is when the oldest counted request leaves the window (rounded up: the
first moment a refused request would fit), and ``Retry-After`` is that wait in whole seconds.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_right

RATE_LIMIT = 1200  # requests per 60 s per tenant (neo-chat-api.md §a.3 [RL])


class RateWindow:
    """Counts requests in a sliding window; ``enforce``: refuse those over ``limit``."""

    def __init__(self, limit: int = RATE_LIMIT, window: float = 60.0, *, enforce: bool = False):
        self.limit, self.window, self.enforce = limit, window, enforce
        self._hits: list[float] = []  # monotonic arrival times, ascending
        self.refused = 0  # 429s answered

    def _trim(self, now: float) -> None:
        del self._hits[: bisect_right(self._hits, now - self.window)]

    def hit(self, now: float | None = None) -> float | None:
        """Count one request; over an enforced limit, count nothing and return the seconds until
        one would fit."""
        now = time.monotonic() if now is None else now
        self._trim(now)
        if self.enforce and len(self._hits) >= self.limit:
            self.refused += 1
            return self._hits[0] + self.window - now
        self._hits.append(now)
        return None

    def headers(self, now: float | None = None) -> dict[str, str]:
        now = time.monotonic() if now is None else now
        self._trim(now)
        until = self._hits[0] + self.window - now if self._hits else 0.0
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(max(0, self.limit - len(self._hits))),
            "X-RateLimit-Reset": str(math.ceil(time.time() + until)),
        }


def retry_after(seconds: float) -> str:
    """``Retry-After`` in whole seconds, never 0 (the request did not fit now)."""
    return str(max(1, math.ceil(seconds)))
