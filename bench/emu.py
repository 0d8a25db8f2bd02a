"""The benchmark's network edge in one helper process: Neo API emulator + Teams connector emulator.

Both are the project's own emulators (``relay/devtools``), specialised only where a benchmark
needs it: the Neo agent streams numbered words at a fixed rate and records when it emitted each
chunk (per conversation: the user's message names it), the connector answers after a random
30–80 ms and computes the relay-added latency of every streamed update as it arrives
(:func:`bench.common.relay_added`). A small control API (``/bench/stats``, ``/bench/reset``)
lets the load generator read the figures. It runs in its own process so neither the relay nor
the load generator pays for it, and it exits by itself after ``--max-seconds``.

    python -m bench.emu --chunks 150 --chunk-rate 10 --paragraph 10 --interval 1.5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bench.common import (
    HOST,
    NEO_KEY,
    chunk_text,
    is_paragraph_end,
    newest_chunk,
    relay_added,
)
from relay.devtools.neo_emulator import REQUEST_ID, NeoEmulator
from relay.devtools.neo_emulator_streams import DONE, EmulatedSession, TurnInput
from relay.devtools.teams_connector import Received, TeamsConnectorEmulator


@dataclass
class Answer:
    """One benchmark turn as the Neo side emitted it (monotonic clock, shared by the process)."""

    chunks: int
    paragraph: int
    emitted: list[float] = field(default_factory=list)
    done_at: float | None = None

    def next_state_change(self, k: int) -> float:
        """Emission of the first paragraph end after chunk ``k`` (inf: not emitted yet)."""
        for j in range(k + 1, len(self.emitted)):
            if is_paragraph_end(j, self.paragraph):
                return self.emitted[j]
        return float("inf")


class BenchNeo(NeoEmulator):
    """The Neo emulator with a paced, self-timing agent. Message text: ``<mode> <conversation>``
    where mode ``stream`` answers ``chunks`` words at ``rate``/s and ``ack`` answers 3 at once."""

    def __init__(self, *, chunks: int, rate: float, paragraph: int) -> None:
        super().__init__(NEO_KEY, show_progress=False)
        self.chunks, self.rate, self.paragraph = chunks, rate, paragraph
        self.answers: dict[str, Answer] = {}

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        # The stock middleware records every request and keeps a 60 s hit list for its rate
        # headers (O(hits) per request): right for tests, a bottleneck at benchmark rates.
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response({"error": {"code": "UNAUTHORIZED"}}, status=401)
        request[REQUEST_ID] = f"req-{random.getrandbits(48):x}"
        return await handler(request)

    async def _add_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers["X-Request-Id"] = str(request.get(REQUEST_ID, ""))

    async def _run(
        self, previous: asyncio.Task[None] | None, turn: TurnInput, session: EmulatedSession
    ) -> None:
        if previous is not None and not previous.done():
            await asyncio.wait([previous])
        mode, _, conversation = turn.message.partition(" ")
        n, rate = (self.chunks, self.rate) if mode == "stream" else (3, 0.0)
        answer = self.answers[conversation] = Answer(n, self.paragraph if rate else n)
        log = session.log

        def emit(chunk: dict[str, Any]) -> None:
            log.append(json.dumps(chunk))

        emit({"type": "start", "messageId": f"msg-{conversation}"})
        emit({"type": "text-start", "id": "t0"})
        start = time.monotonic()
        for i in range(n):
            if rate:  # an absolute schedule: no drift however late one wake-up was
                await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
            emit({"type": "text-delta", "id": "t0", "delta": chunk_text(i, answer.paragraph)})
            answer.emitted.append(time.monotonic())
        emit({"type": "text-end", "id": "t0"})
        emit({"type": "finish", "finishReason": "stop"})
        log.append(DONE)
        answer.done_at = time.monotonic()


class BenchConnector(TeamsConnectorEmulator):
    """The Teams connector emulator with a random per-request latency and live statistics."""

    def __init__(self, neo: BenchNeo, *, interval: float, latency: tuple[float, float]) -> None:
        # Teams' own floor is 1 req/s per stream (§1.1); shorter test intervals scale it down.
        super().__init__(min_stream_interval=min(1.0, interval * 0.8), on_activity=self._observe)
        self.neo, self.interval, self.latency_range = neo, interval, latency
        self.reset()

    @property  # type: ignore[override]
    def latency(self) -> float:
        lo, hi = self.latency_range
        return random.uniform(lo, hi)

    @latency.setter
    def latency(self, value: float) -> None:  # the dataclass __init__ sets it; ours is a range
        pass

    def reset(self) -> None:
        self.updates: list[float] = []  # relay-added latency of each streamed update, s
        self.finals: list[float] = []  # last chunk → final message, minus pacing, s
        self.informatives = 0
        self.messages = 0  # normal (non-stream) messages: fallbacks, errors
        self.errors = 0
        self.unparsed = 0
        self._answered: dict[str, float] = {}
        self.violations.clear()
        self.received.clear()  # (streams still open stay known; finals prune them)

    def _observe(self, rec: Received) -> None:
        now = time.monotonic()
        self.received.clear()  # the base class keeps every request; the benchmark needs none
        if rec.status >= 400:
            self.errors += 1
            return
        conv = rec.conversation_id
        answer = self.neo.answers.get(conv.removeprefix("a:"))
        gate = self._answered.get(conv, float("-inf")) + self.interval
        if rec.streaming:
            self._answered[conv] = now
        entities = rec.activity.get("entities") or []
        info = next((e for e in entities if e.get("type") == "streaminfo"), {})
        kind = info.get("streamType") if rec.streaming else None
        if kind == "informative":
            self.informatives += 1
        elif kind == "streaming" and answer is not None and answer.emitted:
            k = newest_chunk(rec.activity.get("text") or "")
            if k is None or k >= len(answer.emitted):
                self.unparsed += 1
                return
            nxt = answer.next_state_change(k)
            self.updates.append(relay_added(rec.at, answer.emitted[k], gate, nxt))
        elif kind == "final" and answer is not None:
            self._answered.pop(conv, None)
            self._streams.pop(str(info.get("streamId")), None)  # keeps the base class's scan short
            if answer.chunks > 3 and answer.done_at is not None:
                self.finals.append(rec.at - max(answer.done_at, gate))
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
            "unparsed": self.unparsed,
            "violations": list(self.violations[:20]),
            "violation_count": len(self.violations),
        }


def control_app(neo: BenchNeo, teams: BenchConnector) -> web.Application:
    async def stats(request: web.Request) -> web.Response:
        return web.json_response(teams.stats(full=bool(request.query.get("full"))))

    async def reset(request: web.Request) -> web.Response:
        teams.reset()
        neo.answers.clear()
        for session in neo.sessions.values():
            session.log.events.clear()  # old turns' events are never read again
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/bench/stats", stats)
    app.router.add_post("/bench/reset", reset)
    return app


async def serve(args: argparse.Namespace) -> None:
    neo = BenchNeo(chunks=args.chunks, rate=args.chunk_rate, paragraph=args.paragraph)
    teams = BenchConnector(
        neo, interval=args.interval, latency=(args.latency_min / 1000, args.latency_max / 1000)
    )
    neo_url = await neo.start(HOST)
    teams_url = await teams.start(HOST)
    runner = web.AppRunner(control_app(neo, teams), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, HOST, 0).start()
    control = f"http://{HOST}:{runner.addresses[0][1]}"
    print(json.dumps({"neo": neo_url, "teams": teams_url, "control": control}), flush=True)
    loop = asyncio.get_running_loop()
    stdin_closed = loop.run_in_executor(None, sys.stdin.read)  # the parent went away
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stdin_closed, args.max_seconds)
    await runner.cleanup()
    await teams.stop()
    await neo.stop()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="bench.emu", description=__doc__)
    p.add_argument("--chunks", type=int, default=150)
    p.add_argument("--chunk-rate", type=float, default=10.0)
    p.add_argument("--paragraph", type=int, default=10)
    p.add_argument("--interval", type=float, default=1.5)
    p.add_argument("--latency-min", type=float, default=30.0, help="ms")
    p.add_argument("--latency-max", type=float, default=80.0, help="ms")
    p.add_argument("--max-seconds", type=float, default=1800.0)
    asyncio.run(serve(p.parse_args(argv)))


if __name__ == "__main__":
    main()
