"""The load generator's view of the helper processes: one Neo, several Teams shards.

It resets and reads them together, turns their raw records into the benchmark's latencies (the
Teams shards say which chunk each update showed and when; Neo says when it emitted that chunk), and
judges whether a helper — or the load generator itself — was the limit of a phase: a process whose
event loop woke late by more than :data:`LAG_LIMIT_MS` at p99, or that used at least
:data:`CPU_LIMIT` of a core, stamps its times late, so the phase measured the harness, not the
system under test. The same holds for the machine as a whole: with more busy processes than
cores, each waits in the run queue although none crosses its own marks, so a phase in which the
machine's CPUs were at least :data:`MACHINE_LIMIT` busy over any half second is reported as
``machine``. ``bench.run`` prints that verdict next to every figure.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bench.common import cpu_seconds, is_paragraph_end, machine_ticks, relay_added, summary_ms
from bench.neo_shard import merge_answers

LAG_LIMIT_MS = 10.0
CPU_LIMIT = 0.9  # of one core
MACHINE_LIMIT = 0.9  # of all the machine's CPUs


@dataclass
class Helper:
    name: str
    url: str
    control: str
    pid: int


@dataclass
class Usage:
    """CPU seconds of every harness process at the start of a phase (see :meth:`Helpers.usage`)."""

    started: float
    ticks: tuple[int, int]  # the machine's (busy, total), see machine_ticks
    cpu: dict[str, float] = field(default_factory=dict)


class LagProbe:
    """How late this process's event loop wakes up: sleeps ``period`` s, records the overshoot."""

    def __init__(self, period: float = 0.01) -> None:
        self.period = period
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            t0 = time.monotonic()
            await asyncio.sleep(self.period)
            self.lags.append(max(0.0, time.monotonic() - t0 - self.period))
            if len(self.lags) > 200_000:  # ~30 min at 10 ms: bounded
                del self.lags[:100_000]

    def stats(self) -> dict[str, Any]:
        return summary_ms(self.lags)


class MachineProbe:
    """How busy the machine's CPUs are, every ``period`` s: a step's average hides its ramp, when
    a thousand turns start within seconds, so the peak interval is what is judged."""

    def __init__(self, period: float = 0.5) -> None:
        self.period = period
        self.samples: list[tuple[float, int, int]] = []  # (monotonic, busy ticks, total ticks)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            self.samples.append((time.monotonic(), *machine_ticks()))
            if len(self.samples) > 20_000:  # ~3 h at 0.5 s: bounded
                del self.samples[:10_000]
            await asyncio.sleep(self.period)

    def peak_share(self, since: float) -> float:
        """The busiest interval's share of all CPUs since ``since`` (monotonic); 0 if none."""
        recent = [s for s in self.samples if s[0] >= since]
        shares = [
            (b1 - b0) / (t1 - t0)
            for (_, b0, t0), (_, b1, t1) in itertools.pairwise(recent)
            if t1 > t0
        ]
        return round(max(shares, default=0.0), 2)


class Helpers:
    def __init__(self, neo: list[Helper], teams: list[Helper], http: aiohttp.ClientSession) -> None:
        self.neo, self.teams, self.http = neo, teams, http
        self.all = [*neo, *teams]
        self.probe = LagProbe()  # the load generator's own loop
        self.machine = MachineProbe()

    async def _get(self, helper: Helper, path: str) -> dict[str, Any]:
        async with self.http.get(f"{helper.control}/bench/{path}") as r:
            result: dict[str, Any] = await r.json()
            return result

    async def reset(self) -> None:
        async def one(h: Helper) -> None:
            async with self.http.post(f"{h.control}/bench/reset") as r:
                await r.read()

        await asyncio.gather(*(one(h) for h in self.all))
        self.probe.lags.clear()

    async def counts(self) -> dict[str, int]:
        """Messages (finals and plain messages) and errors seen by all Teams shards together."""
        parts = await asyncio.gather(*(self._get(h, "stats") for h in self.teams))
        return {
            "messages": sum(p["messages"] for p in parts),
            "errors": sum(p["errors"] for p in parts),
        }

    def usage(self) -> Usage:
        cpu = {h.name: cpu_seconds(h.pid) for h in self.all}
        cpu["loadgen"] = cpu_seconds(os.getpid())
        return Usage(time.monotonic(), machine_ticks(), cpu)

    async def full_stats(self, since: Usage) -> dict[str, Any]:
        """The latencies of everything since the last reset, and the harness's own load."""
        neo = await asyncio.gather(*(self._get(h, "stats?full=1") for h in self.neo))
        shards = await asyncio.gather(*(self._get(h, "stats?full=1") for h in self.teams))
        answers = merge_answers([part["answers"] for part in neo])
        updates: list[float] = []
        finals: list[float] = []
        unparsed = 0
        for shard in shards:
            for conv, k, at, gate in shard["updates"]:
                answer = answers.get(conv)
                if answer is None or not answer["emitted"]:
                    continue  # an informative-like update of a turn that has no text yet
                if k < 0 or k >= len(answer["emitted"]):
                    unparsed += 1
                    continue
                nxt = next_state_change(answer, k)
                updates.append(relay_added(at, answer["emitted"][k], gate, nxt))
            for conv, at, gate in shard["finals"]:
                answer = answers.get(conv)
                if answer and answer["chunks"] > 3 and answer["done"] is not None:
                    finals.append(at - max(answer["done"], gate))
        elapsed = max(1e-6, time.monotonic() - since.started)
        harness: dict[str, Any] = {}
        lags = {h.name: part["lag"] for h, part in zip(self.neo, neo, strict=True)}
        lags["loadgen"] = self.probe.stats()
        lags |= {h.name: s["lag"] for h, s in zip(self.teams, shards, strict=True)}
        now = self.usage().cpu
        for name, cpu0 in since.cpu.items():
            share = round((now[name] - cpu0) / elapsed, 2)
            lag = lags.get(name, {}).get("p99_ms", 0.0)
            harness[name] = {
                "cpu_share": share,
                "lag_p99_ms": lag,
                "saturated": share >= CPU_LIMIT or (lag == lag and lag > LAG_LIMIT_MS),
            }
        (busy1, total1), (busy0, total0) = machine_ticks(), since.ticks
        if total1 > total0:
            peak = self.machine.peak_share(since.started)
            harness["machine"] = {
                # cores busy on average, like the processes' figure; the peak is of all CPUs
                "cpu_share": round((busy1 - busy0) / (total1 - total0) * (os.cpu_count() or 1), 2),
                "peak_share": peak,
                "lag_p99_ms": 0.0,  # no loop of its own
                "saturated": peak >= MACHINE_LIMIT,
            }
        return {
            "updates": updates,
            "finals": finals,
            "unparsed": unparsed,
            "messages": sum(s["messages"] for s in shards),
            "errors": sum(s["errors"] for s in shards),
            "violations": [v for s in shards for v in s["violations"]][:20],
            "violation_count": sum(s["violation_count"] for s in shards),
            "harness": harness,
            "harness_saturated": sorted(n for n, h in harness.items() if h["saturated"]),
            "relay_added": summary_ms(updates),
            "final_added": summary_ms(finals),
        }


def next_state_change(answer: dict[str, Any], k: int) -> float:
    """Emission of the first paragraph end after chunk ``k`` (inf: not emitted yet)."""
    emitted = answer["emitted"]
    for j in range(k + 1, len(emitted)):
        if is_paragraph_end(j, answer["paragraph"]):
            return float(emitted[j])
    return float("inf")
