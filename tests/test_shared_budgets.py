"""Neo's rate budget is the deployment's: two replicas on one Redis never make Neo answer 429.

Two real ``python -m relay serve`` processes share a real Redis (tests/fakes/redis_server.py) and
talk to a Neo emulator that enforces 60 requests per window (``RateWindow``, 429 + Retry-After).
The window is 10 s instead of Neo's 60 s to keep the test short; the relay is configured the same
way (``RELAY_NEO_RATE_LIMIT=60``, ``RELAY_NEO_RATE_WINDOW=10``), so the arithmetic is Neo's. Twenty
conversations send two messages each, the two racing each other to different replicas: about 100
Neo requests, so roughly 40 of them must wait for the window to roll over. Each replica alone
would stay under 60; together they would not, unless the window is shared. Every turn must be
answered exactly once, in the order the store journaled it, with no 429 seen by the emulator, and
the replicas must have parked turns (waited journaled) rather than merely been lucky.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from relay.store import RedisStore
from tests.fakes.harness import BOT_A, close_harness, make_harness
from tests.fakes.redis_server import RedisServer
from tests.fakes.relay_process import RelayProcess, relay_env
from tests.fakes.replica_report import stuck_report, undelivered
from tests.fakes.user_view import user_view
from tests.test_replicas import _first_seen, _script, _wait, _words

LIMIT, WINDOW = 60, 10.0
# Mostly group chats (one final message per answer); two 1:1 chats, whose queued users get the
# "Busy" progress bar that the answer then finishes (relay.teams.busy).
CONVERSATIONS = [(f"19:budget-{i}@thread.v2", "groupChat") for i in range(18)] + [
    (f"a:budget-{i}", "personal") for i in (18, 19)
]
MESSAGES = 2


async def test_two_replicas_share_neo_budget_no_429_every_turn_once_in_order(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    h = await make_harness(tmp_path, bots=[BOT_A])
    await h.stop_relay()  # only the emulators are used; the relays are the two processes below
    h.neo.script = _script
    h.neo.chunk_delay = 0.02
    h.neo.rate.limit, h.neo.rate.window, h.neo.rate.enforce = LIMIT, WINDOW, True
    prefix = redis_server.new_prefix()
    env = relay_env(
        h,
        RELAY_DATABASE_URL=redis_server.url(prefix=prefix),
        RELAY_NEO_RATE_LIMIT=str(LIMIT),
        RELAY_NEO_RATE_WINDOW=str(WINDOW),
        RELAY_LEASE_SECONDS="5",
        RELAY_LOG_LEVEL="INFO",
    )
    store = RedisStore(redis_server.url(), prefix=prefix)
    await store.open()
    replicas: list[RelayProcess] = []
    try:
        replicas.append(await RelayProcess.start(env, tmp_path / "replica-a.log"))
        replicas.append(await RelayProcess.start(env, tmp_path / "replica-b.log"))
        sent: dict[str, str] = {}  # activity id -> text

        async def deliver(i: int, k: int) -> None:
            conv, kind = CONVERSATIONS[i]
            act = h.activity(BOT_A, f"c{i} m{k}", conversation_id=conv, conversation_type=kind)
            sent[act["id"]] = f"c{i} m{k}"
            url = replicas[(i + k) % 2].url  # a conversation's messages alternate replicas
            async with aiohttp.ClientSession() as http:
                token = h.issuer.sign(BOT_A.app_id, act["serviceUrl"])
                headers = {"Authorization": f"Bearer {token}"}
                async with http.post(f"{url}/api/messages", json=act, headers=headers) as resp:
                    assert resp.status == 200

        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.gather(
            *(deliver(i, k) for i in range(len(CONVERSATIONS)) for k in range(MESSAGES))
        )

        conversations = [conv for conv, _ in CONVERSATIONS]
        pending: list[str] = []

        async def all_delivered() -> bool:
            pending[:] = await undelivered(store, BOT_A.app_id, conversations, MESSAGES)
            return not pending

        try:
            await _wait(all_delivered, 90, "every answer")
        except AssertionError as exc:
            report = await stuck_report(
                pending, replicas, redis_port=redis_server.port, prefix=prefix
            )
            raise AssertionError(f"{exc}\n{report}") from None
        elapsed = loop.time() - started
        await asyncio.sleep(1.0)  # anything doubled would show up by now
        calls = [r for r in h.neo.requests if r.path.startswith("/public-api/")]
        print(f"\n{len(calls)} Neo requests, every answer in {elapsed:.1f} s")

        assert h.neo.rate.refused == 0  # no 429: the replicas never exceeded the shared window
        assert not [r for r in h.neo.responses if r.status == 429]
        assert len(calls) > LIMIT  # the budget bound: some requests had to wait a window
        assert elapsed > WINDOW
        assert any("neo budget spent" in r.log() for r in replicas)  # turns waited journaled
        assert len(h.neo.posted_messages) == len(CONVERSATIONS) * MESSAGES
        for conv, _ in CONVERSATIONS:
            turns = await store.conversation_turns(BOT_A.app_id, conv)  # type: ignore[arg-type]
            journaled = [sent[t.activity_id] for t in turns]
            seen = [_first_seen(h, conv, f"Answer to: {m}") for m in journaled]
            assert -1 not in seen, (conv, journaled, seen)
            assert seen == sorted(seen), (conv, journaled, seen)  # in journal order
            everything = "\n".join(user_view(h.teams, conv))
            for message in journaled:
                for word in [f"Answer to: {message}", *_words(message)]:
                    assert everything.count(word) == 1, (conv, word, user_view(h.teams, conv))
        assert h.teams.violations == []
        for replica in replicas:
            assert "Traceback" not in replica.log(), replica.log()[-3000:]
    finally:
        for replica in replicas:
            await replica.kill()
        await store.close()
        await close_harness(h)
