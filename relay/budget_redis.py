"""``RedisBudgets``: the deployment's rate budgets in the Redis the replicas share.

Why Redis and why one script: every replica must see every other replica's requests, and a check
followed by a separate write would let two replicas take the last unit together. The script below
runs atomically in Redis, reads the time from Redis itself (one clock for all replicas), merges a
server's hint the caller learnt (``relay.budgets.Hint``) and counts the request, or answers how long
until it fits — one round-trip per take. Why not the ``limits`` library: its moving window needs a
second call to learn when to retry, checks one window per call, and has no place for a server's own
``X-RateLimit-*`` word, which would cost another round-trip per request. The log is a sorted set of
take times (ms) per key, trimmed to the longest window and expiring with it; the hint is a hash that
expires when the server's window resets. Keys start with the store's prefix.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Sequence
from typing import Any, Final

import redis.asyncio as aioredis

from relay.budgets import BudgetBase, Grant, Hint, Window, check_windows
from relay.store.redis import DEFAULT_PREFIX, parse_redis_url

# KEYS: the log (zset: member -> take time in ms), the hint (hash: rem, reset ms, seen ms).
# ARGV: cost, slack ms, a member prefix unique to this call, hint seen ms ('' = none), hint
#   remaining, hint reset ms, then (window ms, limit) pairs.
# Returns {wait ms, remaining}: wait 0 means the take was counted; remaining -1 = unbounded.
TAKE: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cost, slack = tonumber(ARGV[1]), tonumber(ARGV[2])
local wait, left = 0, -1
if ARGV[4] ~= '' and tonumber(ARGV[6]) > now then
  local seen = tonumber(redis.call('HGET', KEYS[2], 'seen') or '0')
  if tonumber(ARGV[4]) > seen then
    redis.call('HSET', KEYS[2], 'seen', ARGV[4], 'rem', ARGV[5], 'reset', ARGV[6])
    redis.call('PEXPIREAT', KEYS[2], tonumber(ARGV[6]))
  end
end
local h = redis.call('HMGET', KEYS[2], 'rem', 'reset')
local rem, reset = tonumber(h[1]), tonumber(h[2])
local hinted = rem ~= nil and reset ~= nil and reset > now
if hinted then
  if rem < cost then wait = reset - now else left = rem - cost end
end
local longest = 0
for i = 7, #ARGV, 2 do
  longest = math.max(longest, tonumber(ARGV[i]) + slack)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - longest)
for i = 7, #ARGV, 2 do
  local span, limit = tonumber(ARGV[i]) + slack, tonumber(ARGV[i + 1])
  local inside = redis.call('ZCOUNT', KEYS[1], '(' .. (now - span), '+inf')
  local over = inside + cost - limit
  if over > 0 then
    -- the over-th oldest take in this window must leave it first
    local oldest = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. (now - span), '+inf',
      'WITHSCORES', 'LIMIT', over - 1, 1)
    wait = math.max(wait, tonumber(oldest[2]) + span - now)
  elseif left < 0 or limit - inside - cost < left then
    left = limit - inside - cost
  end
end
if wait > 0 then return {math.ceil(wait), 0} end
for i = 1, cost do redis.call('ZADD', KEYS[1], now, ARGV[3] .. i) end
redis.call('PEXPIRE', KEYS[1], math.ceil(longest) + 1000)
if hinted then redis.call('HINCRBY', KEYS[2], 'rem', -cost) end
return {0, left}
"""


class RedisBudgets(BudgetBase):
    """Budgets in Redis under ``prefix``: ``budget:<key>`` (the log), ``budget-hint:<key>``."""

    def __init__(self, url: str, *, prefix: str = DEFAULT_PREFIX) -> None:
        super().__init__()
        self._url = url
        self.prefix = prefix
        self._client: aioredis.Redis | None = None
        self._script: Any = None
        self._member = f"{uuid.uuid4().hex[:12]}:"  # take members unique across replicas
        self._counter = itertools.count()
        self.round_trips = 0  # script calls made: the cost this module adds (bench, tests)

    @classmethod
    def from_url(cls, url: str) -> RedisBudgets:
        client_url, prefix = parse_redis_url(url)
        return cls(client_url, prefix=prefix)

    def __repr__(self) -> str:
        return f"RedisBudgets(prefix={self.prefix!r})"  # never the URL: it may hold a password

    def _connect(self) -> Any:
        if self._client is None:
            # Opened on first use: a relay whose budgets are never needed holds no connection.
            self._client = aioredis.Redis.from_url(
                self._url, socket_timeout=5.0, socket_connect_timeout=5.0
            )
            self._script = self._client.register_script(TAKE)
        return self._script

    async def take(
        self,
        key: str,
        windows: Sequence[Window],
        *,
        cost: int = 1,
        hint: Hint | None = None,
        slack: float = 0.0,
    ) -> Grant:
        check_windows(windows, cost)
        script = self._connect()
        hinted = (
            ("", "0", "0")
            if hint is None
            else (str(int(hint.seen * 1000)), str(hint.remaining), str(int(hint.reset * 1000)))
        )
        args: list[str | int] = [cost, int(slack * 1000), f"{self._member}{next(self._counter)}:"]
        args += hinted
        for seconds, limit in windows:
            args += [int(seconds * 1000), limit]
        self.round_trips += 1
        wait_ms, left = await script(
            keys=[f"{self.prefix}budget:{key}", f"{self.prefix}budget-hint:{key}"], args=args
        )
        wait_ms, left = int(wait_ms), int(left)
        return Grant(wait_ms / 1000, left if left >= 0 else 2**31)

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
