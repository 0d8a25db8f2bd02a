"""The sliding-window budgets (relay.budgets): in-process and in a real Redis, shared by replicas.

Both implementations run the same cases: a window lets exactly its limit through and says how long
until the next request fits, rolls over, holds under concurrency (two ``RedisBudgets`` play two
replicas on one Redis), honours several windows at once, and slows down on a server's own word
(``X-RateLimit-Remaining`` / ``Reset``, a 429's ``Retry-After``) — across replicas too. The Redis
cost is counted on the server: one script call per take.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest
import redis

from relay.budget_redis import RedisBudgets
from relay.budgets import BudgetBase, Hint, LocalBudgets, NeoBudget, open_budgets, parse_hint
from tests.fakes.redis_server import RedisServer

Factory = Callable[[], BudgetBase]


@pytest.fixture(params=["local", "redis"])
async def make(request: pytest.FixtureRequest) -> AsyncIterator[Factory]:
    """Budgets of one kind; with Redis every instance shares one prefix (one per replica)."""
    made: list[BudgetBase] = []
    if request.param == "local":
        shared = LocalBudgets()

        def factory() -> BudgetBase:
            return shared  # one process: one log

    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        url = server.url(prefix=server.new_prefix())

        def factory() -> BudgetBase:
            budgets = open_budgets(url)
            assert isinstance(budgets, RedisBudgets)
            made.append(budgets)
            return budgets

    yield factory
    for b in made:
        await b.aclose()


async def test_a_window_lets_its_limit_through_then_says_when(make: Factory) -> None:
    budgets = make()
    grants = [await budgets.take("k", ((0.5, 3),)) for _ in range(3)]
    assert [g.wait for g in grants] == [0, 0, 0]
    assert [g.remaining for g in grants] == [2, 1, 0]
    refused = await budgets.take("k", ((0.5, 3),))
    assert 0.35 < refused.wait <= 0.5
    assert (await budgets.take("other", ((0.5, 3),))).wait == 0  # keys are independent
    await asyncio.sleep(refused.wait + 0.02)  # the window rolls over
    assert (await budgets.take("k", ((0.5, 3),))).wait == 0


async def test_several_windows_at_once_and_slack(make: Factory) -> None:
    budgets = make()
    windows = ((0.2, 2), (0.6, 3))
    assert [(await budgets.take("m", windows)).wait for _ in range(2)] == [0, 0]
    first = await budgets.take("m", windows)
    assert 0.1 < first.wait <= 0.2  # the short window binds
    await asyncio.sleep(first.wait + 0.02)
    assert (await budgets.take("m", windows)).wait == 0
    longer = await budgets.take("m", windows)
    assert longer.wait > 0.3  # now the long one does: 3 in 0.6 s
    # Slack keeps a request counted beyond its window (it reached the server a little later).
    assert (await budgets.take("s", ((0.2, 1),), slack=0.3)).wait == 0
    assert 0.4 < (await budgets.take("s", ((0.2, 1),), slack=0.3)).wait <= 0.5


async def test_concurrent_acquires_from_two_replicas_never_exceed_the_window(
    make: Factory,
) -> None:
    a, b = make(), make()
    window, limit = 0.4, 5
    done: list[float] = []

    async def one(budgets: BudgetBase) -> None:
        await budgets.acquire("c", ((window, limit),))
        done.append(time.monotonic())

    started = time.monotonic()
    await asyncio.gather(*(one(a if i % 2 else b) for i in range(20)))
    done.sort()
    # 20 requests at 5 per 0.4 s: the last one cannot come before three full windows passed.
    assert done[-1] - started >= 3 * window - 0.05
    for i in range(len(done) - limit):
        # Any `limit` + 1 grants span at least one window (less the call's own latency).
        assert done[i + limit] - done[i] >= window - 0.05, (i, done)


async def test_a_server_hint_slows_every_replica_down(make: Factory) -> None:
    a, b = make(), make()
    wide = ((60.0, 1000),)  # our own window is far from binding: only the hint can slow us
    now = time.time()
    hint = Hint(remaining=2, reset=now + 0.6, seen=now)
    assert (await a.take("n", wide, hint=hint)).remaining == 1
    assert (await b.take("n", wide)).wait == 0  # the other replica counts against the word
    refused = await b.take("n", wide)
    assert 0.3 < refused.wait <= 0.6
    # An older word does not override a fresher one; a stale one (reset passed) is ignored.
    older = Hint(remaining=50, reset=now + 0.6, seen=now - 1)
    assert (await a.take("n", wide, hint=older)).wait > 0
    await asyncio.sleep(refused.wait + 0.02)
    assert (await a.take("n", wide)).wait == 0
    stale = Hint(remaining=0, reset=time.time() - 1, seen=time.time())
    assert (await a.take("n", wide, hint=stale)).wait == 0


async def test_one_redis_call_per_take(redis_server: RedisServer) -> None:
    budgets = open_budgets(redis_server.url(prefix=redis_server.new_prefix()))
    probe = redis.Redis(host="127.0.0.1", port=redis_server.port)
    try:
        await budgets.take("warm", ((1.0, 100),))  # loads the script once

        def script_calls() -> int:
            stats = probe.info("commandstats")
            return sum(
                int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("evalsha", "eval")
            )

        before = script_calls()
        for _ in range(10):
            await budgets.take("t", ((1.0, 5),))  # granted or refused: one call either way
        hint = Hint(3, time.time() + 1, time.time())
        await budgets.acquire("h", ((1.0, 100),), hint=hint)
        # Other tests may share this Redis only between tests, never during one.
        assert script_calls() - before == 11
    finally:
        probe.close()
        await budgets.aclose()


def test_neo_headers_become_hints() -> None:
    now = 1000.0
    hdr = {"x-ratelimit-remaining": "7", "x-ratelimit-reset": "1030", "x-ratelimit-limit": "9"}
    assert parse_hint(200, hdr, now) == Hint(7, 1030.0, now)
    assert parse_hint(200, {}, now) is None  # a Neo without the headers: no slowdown
    assert parse_hint(200, {"x-ratelimit-remaining": "x", "x-ratelimit-reset": "1"}, now) is None
    assert parse_hint(429, {"retry-after": "4"}, now) == Hint(0, 1004.0, now)


async def test_neo_budget_learns_from_responses_and_prepays_a_turn() -> None:
    budgets = LocalBudgets()
    neo = NeoBudget(budgets, limit=100, window=60)
    await neo.acquire()
    reset = time.time() + 0.5
    neo.observe(200, {"x-ratelimit-remaining": "1", "x-ratelimit-reset": f"{reset}"})
    await neo.acquire()  # the last one Neo has left
    started = time.monotonic()
    await neo.acquire()  # slowed down until Neo's reset, before any 429
    assert time.monotonic() - started >= 0.4
    # A turn's begin takes its first request's unit: that request then costs nothing more.
    grant = await neo.begin_turn()
    assert grant.wait == 0
    left = (await budgets.take("neo", neo.windows)).remaining
    await neo.acquire()  # prepaid
    assert (await budgets.take("neo", neo.windows)).remaining == left - 1
