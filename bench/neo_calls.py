"""``python -m bench.neo_calls``: the relay's CPU per Neo JSON call, against aiohttp alone.

A streamed turn makes three plain requests to Neo besides its SSE events (create the session,
post the message, open the tail). This times the production ``NeoClient.create_session`` —
httpx over the relay's aiohttp transport, the call slots, orjson, the envelope check — against
the same ``POST`` made with an aiohttp ``ClientSession``, as the baseline makes it, both against
one aiohttp server in this process (so the server's share is in both figures). It prints, per
client, the median of ``--rounds`` rounds of ``--calls`` sequential calls, in microseconds of this
process's CPU per call. Used for bench/README.md "What httpx costs per Neo call".
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web
from pydantic import SecretStr

from relay.domain import BotId
from relay.neo.client import NeoClient

SESSIONS = "/public-api/chat/sessions"
ENVELOPE = {"data": {"id": "cs_1", "show_agent_progress_steps": False}, "meta": {"request_id": "r"}}


async def _create(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response(ENVELOPE, status=201)


async def measure(calls: int, rounds: int) -> dict[str, float]:
    """Median CPU µs per call for the relay's client and for aiohttp, alternating rounds."""
    app = web.Application()
    app.router.add_post(SESSIONS, _create)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    base = f"http://127.0.0.1:{port}"
    body = {"managed_agent_key": "NEO_SUPPORT", "bot_id": "b", "inbound_tenant_id": "t"}
    headers = {"Authorization": "Bearer k", "Content-Type": "application/json"}
    try:
        async with NeoClient(base, SecretStr("k")) as neo, aiohttp.ClientSession() as http:

            async def relay() -> None:
                await neo.create_session(bot_id=BotId("b"), inbound_tenant_id=None, title="t")

            async def bare() -> None:
                async with http.post(base + SESSIONS, json=body, headers=headers) as r:
                    assert r.status == 201
                    await r.json()

            clients: dict[str, Callable[[], Awaitable[None]]] = {"relay": relay, "aiohttp": bare}
            figures: dict[str, list[float]] = {name: [] for name in clients}
            for call in clients.values():  # warm-up: connections, caches
                for _ in range(min(calls, 200)):
                    await call()
            for _ in range(rounds):
                for name, call in clients.items():
                    started = time.process_time()
                    for _ in range(calls):
                        await call()
                    figures[name].append((time.process_time() - started) * 1e6 / calls)
    finally:
        await runner.cleanup()
    return {name: statistics.median(values) for name, values in figures.items()}


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.neo_calls", description=__doc__)
    p.add_argument("--calls", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    result = asyncio.run(measure(args.calls, args.rounds))
    for name, us in result.items():
        print(f"{name}: median {us:.0f} us CPU per call (server included)")
    print(f"relay / aiohttp: {result['relay'] / result['aiohttp']:.2f}")


if __name__ == "__main__":
    main()
