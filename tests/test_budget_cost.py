"""What the shared budgets cost: one Redis round-trip per Neo request and per Teams post.

A relay on a real Redis store (so its budgets are ``RedisBudgets``) answers 1:1 and group chat
turns against the emulators; the Lua calls it made are compared with the requests the emulators
received. A turn's first Neo request is paid by the take its admission made (``before_neo``), so
with no waiting the two counts match exactly; a first request later than ``PREPAID_SECONDS`` on a
loaded machine takes once more, which is the only slack allowed.
"""

from __future__ import annotations

from pathlib import Path

from relay.app import BUDGETS
from relay.budget_redis import RedisBudgets
from tests.fakes.harness import BOT_A, close_harness, make_harness
from tests.fakes.redis_server import RedisServer
from tests.test_reliability import _answer, _words


async def test_one_redis_call_per_neo_request_and_per_teams_post(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    url = redis_server.url(prefix=redis_server.new_prefix())
    h = await make_harness(tmp_path, bots=[BOT_A], database_url=url)
    try:
        budgets = h.app[BUDGETS]
        assert isinstance(budgets, RedisBudgets)
        words = _words(8)
        h.neo.script = lambda turn: _answer(words)
        h.neo.chunk_delay = 0.05
        turns = 0
        for kind in ("personal", "groupChat"):
            for n in range(3):
                conv = f"a:cost-{n}" if kind == "personal" else f"19:cost-{n}@thread.v2"
                act = h.activity(BOT_A, f"q{n}", conversation_id=conv, conversation_type=kind)
                assert (await h.deliver(act, bot=BOT_A)).status == 200
                turns += 1
        await h.wait_idle(timeout=30)
        neo = len([r for r in h.neo.requests if r.path.startswith("/public-api/")])
        teams = len(h.teams.received)
        calls = budgets.round_trips
        print(f"\n{turns} turns: {neo} Neo requests + {teams} Teams requests, {calls} Redis calls")
        assert neo >= 3 * turns  # create session, post, tail
        assert neo + teams <= calls <= neo + teams + turns
    finally:
        await close_harness(h)
