"""Neo's rate limit over real HTTP: the emulator enforces it, the client's budget hook avoids it.

The emulator (``relay.devtools.neo_emulator_ratelimit``) counts ``/public-api`` requests in a
sliding window, reports ``X-RateLimit-*`` on every response and answers 429 with ``Retry-After``
past the limit. A ``NeoClient`` with a ``NeoBudget`` whose own window is far too generous must
still never see that 429, because it reads the headers of every response — the SSE tail's too —
and waits for ``X-RateLimit-Reset`` once ``Remaining`` is gone. Without the hook it gets the 429.
"""

from __future__ import annotations

import time

import pytest

from relay.budgets import LocalBudgets, NeoBudget
from relay.devtools.neo_emulator import NeoEmulator
from relay.domain import BotId, ModelTier, TenantId
from relay.errors import RetryableError
from relay.neo.client import NeoClient


async def test_the_emulator_enforces_its_window_with_429_and_retry_after(
    emulator: NeoEmulator, neo: NeoClient
) -> None:
    emulator.rate.limit, emulator.rate.window, emulator.rate.enforce = 2, 30.0, True
    await neo.list_til_requests(page_size=1)
    await neo.list_til_requests(page_size=1)
    with pytest.raises(RetryableError) as info:
        await neo.list_til_requests(page_size=1)
    assert info.value.status == 429
    assert info.value.retry_after is not None
    assert 29 <= info.value.retry_after <= 31
    assert emulator.rate.refused == 1
    headers = emulator.rate.headers()
    assert headers["X-RateLimit-Limit"] == "2"
    assert headers["X-RateLimit-Remaining"] == "0"
    assert 29 <= int(headers["X-RateLimit-Reset"]) - time.time() <= 31


async def test_the_budget_hook_slows_down_on_neo_headers_before_a_429(
    emulator: NeoEmulator, neo: NeoClient
) -> None:
    # Neo allows 3 per 2 s; our own budget would allow 1,000 a minute: only the headers can help.
    emulator.rate.limit, emulator.rate.window, emulator.rate.enforce = 3, 2.0, True
    neo.budget = NeoBudget(LocalBudgets(), limit=1000, window=60)
    session = await neo.create_session(
        bot_id=BotId("b"), inbound_tenant_id=TenantId("t"), title="x"
    )  # Remaining 2
    posted = await neo.post_message(
        session.session_id, message="hi", client_message_id="c1", model_tier=ModelTier.FAST
    )  # Remaining 1
    await neo.before_request()  # what relay.neo.events does before opening a tail
    frames = neo.tail(session.session_id, posted.since_cursor)
    await anext(frames)  # the tail's response head says Remaining 0
    await frames.aclose()
    started = time.monotonic()
    await neo.list_til_requests(page_size=1)  # waits for Neo's reset instead of a 429
    assert time.monotonic() - started >= 0.5
    assert emulator.rate.refused == 0


async def test_a_neo_without_the_headers_means_no_slowdown(
    emulator: NeoEmulator, neo: NeoClient
) -> None:
    # Reported, not enforced: with its headers this Neo would say "0 left for 30 s" after 3.
    emulator.rate.limit, emulator.rate.window = 3, 30.0
    neo.budget = NeoBudget(LocalBudgets(), limit=1000, window=60)
    emulator.rate.headers = lambda now=None: {}  # type: ignore[method-assign]
    started = time.monotonic()
    for _ in range(5):
        await neo.list_til_requests(page_size=1)
    assert time.monotonic() - started < 2.0
