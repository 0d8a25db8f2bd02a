"""``LocalLeases``: the lease table of a store that belongs to one process (``SqliteStore``).

An embedded SQLite file serves exactly one relay process, so a conversation lease never has to be
seen by another process: an in-memory table is complete, and it is also *right* to forget it on a
restart — every lease in it belonged to the process that just died, and keeping them would only
delay recovery by a lease period. Kept apart from ``sqlite.py`` because it has nothing to do with
SQL, and a second single-process backend could reuse it. Tokens come from one counter, so they
strictly increase per key as the ``Store`` protocol requires.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass

from relay.errors import LeaseLost
from relay.store.base import Fence, current_fence


@dataclass(slots=True)
class _Held:
    owner: str
    token: int
    expires_at: float


class LocalLeases:
    """Conversation leases with fencing tokens, for one process; expiry on the monotonic clock."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._held: dict[str, _Held] = {}
        self._tokens = itertools.count(1)

    def acquire(self, key: str, owner: str, ttl_seconds: float) -> int | None:
        now = self._clock()
        held = self._held.get(key)
        if held is not None and held.expires_at > now:
            return None
        token = next(self._tokens)
        self._held[key] = _Held(owner, token, now + ttl_seconds)
        return token

    def renew(self, key: str, owner: str, token: int, ttl_seconds: float) -> bool:
        now = self._clock()
        held = self._held.get(key)
        if held is None or (held.owner, held.token) != (owner, token) or held.expires_at <= now:
            return False
        held.expires_at = now + ttl_seconds
        return True

    def release(self, key: str, owner: str, token: int) -> None:
        held = self._held.get(key)
        if held is not None and (held.owner, held.token) == (owner, token):
            del self._held[key]

    def holder(self, key: str) -> str | None:
        held = self._held.get(key)
        return held.owner if held is not None and held.expires_at > self._clock() else None

    def check(self, fence: Fence | None) -> None:
        """Raise ``LeaseLost`` unless the (explicit or ambient) fence's lease is live.

        Called right before a write is queued: the store serialises its statements, so the write
        is ordered before anything a later holder of the lease can read.
        """
        fence = current_fence(fence)
        if fence is None:
            return
        held = self._held.get(fence.key)
        if held is None or held.token != fence.token or held.expires_at <= self._clock():
            raise LeaseLost(fence.key, fence.token)
