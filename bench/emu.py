"""The benchmark's network edge, one role per process: the Neo API emulator or a Teams connector.

``--role neo``: one shard of the stateless Neo API of ``bench.neo_shard`` (several shards share
one port; ``--port`` is the first shard's): the agent streams numbered words at a fixed rate and
records when it emitted each chunk (per conversation: the user's message names it).
``--role teams``: the project's own connector emulator (``relay/devtools``), specialised: it
answers after a random 30–80 ms and records, per streamed update, which chunk it shows, when it
arrived and when pacing first allowed it; ``bench.run`` starts several of these shards
(the load generator spreads conversations over their ``serviceUrl``\\ s) and computes the
relay-added latency itself from both sides' records (:func:`bench.common.relay_added`; one
``CLOCK_MONOTONIC`` serves every process of the machine). Every helper also runs a loop-lag probe:
a helper whose own event loop is late stamps late times, so ``bench.run`` reports it as saturated
rather than charging the system under test. A small control API (``/bench/stats``,
``/bench/reset``) lets the load generator read the figures. Each helper exits by itself after
``--max-seconds`` or when its stdin closes.

    python -m bench.emu --role neo --chunks 150 --chunk-rate 10 --paragraph 10 [--port P]
    python -m bench.emu --role teams --interval 1.5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import time
from typing import Any

from aiohttp import web

from bench.common import HOST, newest_chunk
from bench.helpers import LagProbe
from bench.neo_shard import ShardedNeo
from relay.devtools.teams_connector import Received, TeamsConnectorEmulator


class BenchConnector(TeamsConnectorEmulator):
    """The Teams connector emulator with a random per-request latency and raw observations."""

    def __init__(self, *, interval: float, latency: tuple[float, float]) -> None:
        # Teams' own floor is 1 req/s per stream (§1.1); shorter test intervals scale it down.
        super().__init__(min_stream_interval=min(1.0, interval * 0.8), on_activity=self._observe)
        self.interval, self.latency_range = interval, latency
        self.reset()

    @property  # type: ignore[override]
    def latency(self) -> float:
        lo, hi = self.latency_range
        return random.uniform(lo, hi)

    @latency.setter
    def latency(self, value: float) -> None:  # the dataclass __init__ sets it; ours is a range
        pass

    def reset(self) -> None:
        # [conversation, newest chunk shown (-1: none parsed), received, gate]
        self.updates: list[tuple[str, int, float, float]] = []
        self.finals: list[tuple[str, float, float]] = []  # [conversation, received, gate]
        self.informatives = 0
        self.messages = 0  # final stream messages and normal messages (fallbacks, errors)
        self.errors = 0
        self._answered: dict[str, float] = {}
        self.violations.clear()
        self.received.clear()  # (streams still open stay known; finals prune them)

    def _observe(self, rec: Received) -> None:
        now = time.monotonic()
        self.received.clear()  # the base class keeps every request; the benchmark needs none
        if rec.status >= 400:
            self.errors += 1
            return
        conv = rec.conversation_id.removeprefix("a:")
        gate = self._answered.get(conv, float("-inf")) + self.interval
        if rec.streaming:
            self._answered[conv] = now
        entities = rec.activity.get("entities") or []
        info = next((e for e in entities if e.get("type") == "streaminfo"), {})
        kind = info.get("streamType") if rec.streaming else None
        if kind == "informative":
            self.informatives += 1
        elif kind == "streaming":
            k = newest_chunk(rec.activity.get("text") or "")
            self.updates.append((conv, -1 if k is None else k, rec.at, gate))
        elif kind == "final":
            self._answered.pop(conv, None)
            self._streams.pop(str(info.get("streamId")), None)  # keeps the base class's scan short
            self.finals.append((conv, rec.at, gate))
            self.messages += 1
        elif rec.activity.get("type") == "message":
            self.messages += 1

    def stats(self, full: bool) -> dict[str, Any]:
        return {
            "updates": self.updates if full else [],
            "finals": self.finals if full else [],
            "informatives": self.informatives,
            "messages": self.messages,
            "errors": self.errors,
            "violations": list(self.violations[:20]),
            "violation_count": len(self.violations),
        }


def control_app(role: ShardedNeo | BenchConnector, probe: LagProbe) -> web.Application:
    async def stats(request: web.Request) -> web.Response:
        out = role.stats(full=bool(request.query.get("full")))
        out["lag"] = probe.stats()
        return web.json_response(out)

    async def reset(request: web.Request) -> web.Response:
        role.reset()
        probe.lags.clear()
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/bench/stats", stats)
    app.router.add_post("/bench/reset", reset)
    return app


async def serve(args: argparse.Namespace) -> None:
    role: ShardedNeo | BenchConnector
    if args.role == "neo":
        role = ShardedNeo(chunks=args.chunks, rate=args.chunk_rate, paragraph=args.paragraph)
        neo_runner, url = await role.start(HOST, args.port)
    else:
        latency = (args.latency_min / 1000, args.latency_max / 1000)
        role = BenchConnector(interval=args.interval, latency=latency)
        url = await role.start(HOST)
    probe = LagProbe()
    probe.start()
    runner = web.AppRunner(control_app(role, probe), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, HOST, 0).start()
    control = f"http://{HOST}:{runner.addresses[0][1]}"
    print(json.dumps({"url": url, "control": control}), flush=True)
    loop = asyncio.get_running_loop()
    stdin_closed = loop.run_in_executor(None, sys.stdin.read)  # the parent went away
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stdin_closed, args.max_seconds)
    await runner.cleanup()
    if isinstance(role, ShardedNeo):
        await neo_runner.cleanup()
    else:
        await role.stop()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="bench.emu", description=__doc__)
    p.add_argument("--role", choices=("neo", "teams"), required=True)
    p.add_argument("--chunks", type=int, default=150)
    p.add_argument("--chunk-rate", type=float, default=10.0)
    p.add_argument("--paragraph", type=int, default=10)
    p.add_argument("--port", type=int, default=0, help="neo: a shard's shared port (0: any)")
    p.add_argument("--interval", type=float, default=1.5)
    p.add_argument("--latency-min", type=float, default=30.0, help="ms")
    p.add_argument("--latency-max", type=float, default=80.0, help="ms")
    p.add_argument("--max-seconds", type=float, default=1800.0)
    asyncio.run(serve(p.parse_args(argv)))


if __name__ == "__main__":
    main()
