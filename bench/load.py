"""The load generator: signed Teams activities at an open-loop rate, and stepped streaming loads.

Runs in the benchmark's main process (never in the relay's). Activities look like Teams' (a 1:1
``message`` with ``serviceUrl``, tenant, recipient ``28:<app id>``) and carry an RS256 channel
token from the local issuer; like the real channel, one token per bot is reused until it expires
(teams-platform.md §4.1), so every request still pays the full signature check on the server.
Open loop: request *i* is due at ``start + i / rate`` whatever happened to earlier ones, and its
latency is measured from that due time, so a stalled server cannot hide its queue (no
coordinated omission).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from bench.common import BOTS, cpu_seconds, rss_bytes, summary_ms, tenant_for
from bench.helpers import Helpers
from relay.devtools.issuer import LocalIssuer

_ids = itertools.count(1)


@dataclass
class Target:
    """A server under test: where it listens and which process to read /proc of."""

    name: str
    url: str
    pid: int


class Traffic:
    """Builds and sends signed activities; one aiohttp session, bounded connection pool.

    Conversation *i* is served by Teams shard ``i % shards`` (its ``serviceUrl``); the channel
    token names that URL (``serviceurl`` claim), so there is one token per bot and shard."""

    def __init__(self, issuer: LocalIssuer, helpers: Helpers, http: aiohttp.ClientSession) -> None:
        self.issuer, self.helpers, self.http = issuer, helpers, http
        self.service_urls = [h.url for h in helpers.teams]
        self.tokens = {
            (b.app_id, url): issuer.sign(b.app_id, url, expires_in=3600)
            for b in BOTS
            for url in self.service_urls
        }

    def activity(self, index: int, conversation: str, text: str) -> tuple[str, dict[str, Any]]:
        bot = BOTS[index % len(BOTS)]
        tenant = tenant_for(index)
        service_url = self.service_urls[index % len(self.service_urls)]
        body = {
            "type": "message",
            "id": f"{int(time.time() * 1000)}{next(_ids)}",
            "timestamp": "2026-11-22T10:00:00.000Z",
            "serviceUrl": service_url,
            "channelId": "msteams",
            "from": {"id": f"29:user-{index}", "name": "Bench User", "aadObjectId": f"u-{index}"},
            "conversation": {
                "id": f"a:{conversation}",
                "conversationType": "personal",
                "tenantId": tenant,
            },
            "recipient": {"id": f"28:{bot.app_id}", "name": bot.name},
            "text": text,
            "textFormat": "plain",
            "channelData": {"tenant": {"id": tenant}},
            "entities": [],
        }
        return bot.app_id, body

    async def post(self, target: Target, bot_id: str, body: dict[str, Any]) -> int:
        token = self.tokens[(bot_id, body["serviceUrl"])]
        headers = {"Authorization": f"Bearer {token}"}
        async with self.http.post(f"{target.url}/api/messages", json=body, headers=headers) as r:
            await r.read()
            return r.status

    async def ack_phase(
        self, target: Target, rate: float, seconds: float, tag: str
    ) -> dict[str, Any]:
        """``rate`` activities/s for ``seconds`` to ``rate * 5`` conversations (short answers)."""
        total, conversations = int(rate * seconds), max(1, int(rate * 5))
        latencies: list[float] = []
        statuses: dict[int, int] = {}
        usage = self.helpers.usage()
        cpu0, start = cpu_seconds(target.pid), time.monotonic() + 0.2

        async def one(i: int) -> None:
            due = start + i / rate
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            conv = f"{tag}-{i % conversations:06d}"
            bot_id, body = self.activity(i, conv, f"ack {conv}")
            try:
                status = await self.post(target, bot_id, body)
            except (aiohttp.ClientError, TimeoutError):
                status = 0
            latencies.append(time.monotonic() - due)
            statuses[status] = statuses.get(status, 0) + 1

        await asyncio.gather(*(one(i) for i in range(total)))
        elapsed = time.monotonic() - start
        harness = (await self.helpers.full_stats(usage))["harness"]
        return {
            "rate": rate,
            "seconds": seconds,
            "sent": total,
            "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "latency": summary_ms(latencies),
            "achieved_rate": round(total / elapsed, 1),
            "cpu_seconds": round(cpu_seconds(target.pid) - cpu0, 2),
            "harness": harness,
            "harness_saturated": sorted(n for n, h in harness.items() if h["saturated"]),
        }

    async def stream_step(
        self, target: Target, concurrency: int, ramp: float, limit: float, tag: str
    ) -> dict[str, Any]:
        """``concurrency`` streamed turns started over ``ramp`` s; waits (≤ ``limit`` s) for all
        finals; CPU and peak RSS of the target across the step."""
        await self.helpers.reset()
        await asyncio.sleep(0.5)
        rss0, cpu0 = rss_bytes(target.pid), cpu_seconds(target.pid)
        usage = self.helpers.usage()
        started = time.monotonic()

        async def one(i: int) -> int:
            await asyncio.sleep(ramp * i / concurrency)
            conv = f"{tag}-{i:05d}"
            bot_id, body = self.activity(i, conv, f"stream {conv}")
            try:
                return await self.post(target, bot_id, body)
            except (aiohttp.ClientError, TimeoutError):
                return 0

        sends = asyncio.gather(*(one(i) for i in range(concurrency)))
        peak = rss0
        while time.monotonic() - started < limit:
            await asyncio.sleep(0.25)
            peak = max(peak, rss_bytes(target.pid))
            counts = await self.helpers.counts()
            if counts["messages"] + counts["errors"] >= concurrency and sends.done():
                break
        statuses = await sends
        await asyncio.sleep(0.5)  # the last journal writes after the final
        cpu = cpu_seconds(target.pid) - cpu0
        stats = await self.helpers.full_stats(usage)
        return {
            "concurrency": concurrency,
            "accepted": sum(1 for s in statuses if s == 200),
            "completed": stats["messages"],
            "errors": stats["errors"],
            "violations": stats["violation_count"],
            "violation_examples": stats["violations"][:3],
            "unparsed_updates": stats["unparsed"],
            "relay_added": stats["relay_added"],
            "final_added": stats["final_added"],
            "harness": stats["harness"],
            "harness_saturated": stats["harness_saturated"],
            "seconds": round(time.monotonic() - started, 1),
            "cpu_seconds": round(cpu, 2),
            "cpu_ms_per_turn": round(cpu / concurrency * 1000, 2),
            "rss_idle_mb": round(rss0 / 2**20, 1),
            "rss_peak_mb": round(peak / 2**20, 1),
            "kb_per_stream": round((peak - rss0) / concurrency / 1024, 1),
        }
