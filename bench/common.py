"""What the benchmark's processes share: the bots, the answer text, the latency formula, /proc.

The answer a benchmark turn streams is made of numbered words (``w0 w1 … w9\\n\\n w10 …``): one
text-delta chunk per word, a paragraph every ``paragraph`` chunks. The Teams side can then tell
from any cumulative update which chunk is the newest it contains (the last number in the text),
and the Neo side records when each chunk was emitted, so :func:`relay_added` can be computed per
update without trusting anything the system under test reports.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Any

HOST = "127.0.0.1"  # the only address any benchmark process binds or calls
NEO_KEY = "neo_sk_bench_0123456789abcdefABCDEF"
ISSUER = "https://issuer.bench"


@dataclass(frozen=True)
class BenchBot:
    app_id: str
    tenant_id: str
    secret: str
    name: str


BOTS = [
    BenchBot(
        f"b{i:07d}-2222-3333-4444-555555555555",
        f"c{i:07d}-8888-7777-6666-555555555555",
        f"bench-secret-{i}-0123456789",
        f"Bench Bot {i}",
    )
    for i in range(4)
]


def tenant_for(index: int, tenants: int = 64) -> str:
    """Customer tenants: many, so Teams' per-tenant budget (30 req/s, §2) is not what we measure."""
    return f"{index % tenants:08d}-aaaa-bbbb-cccc-dddddddddddd"


def chunk_text(i: int, paragraph: int) -> str:
    """The delta of chunk ``i``: a numbered word; the last word of a paragraph ends it."""
    return f"w{i}\n\n" if (i + 1) % paragraph == 0 else f"w{i} "


def is_paragraph_end(i: int, paragraph: int) -> bool:
    return (i + 1) % paragraph == 0


_LAST_WORD = re.compile(r"w(\d+)\s*$")


def newest_chunk(text: str) -> int | None:
    """The index of the newest chunk a cumulative text contains (None: no numbered word)."""
    m = _LAST_WORD.search(text)
    return int(m.group(1)) if m else None


def relay_added(received: float, emitted: float, gate: float, next_emitted: float) -> float:
    """Relay-added latency of one streamed update (README "Benchmarks", definition).

    ``received``: when the connector got the update; ``emitted``: when Neo emitted the newest
    chunk it contains; ``gate``: the earliest moment the pacing rule allowed this update (the
    previous stream request's answer + the stream interval; -inf for none); ``next_emitted``: when
    the next chunk that would have changed the streamable text was emitted (inf if not yet).
    Content is "due" at max(emitted, gate); if a newer streamable chunk already existed before
    the gate, the content was stale from that chunk's emission, which counts instead.
    """
    return received - max(emitted, min(gate, next_emitted))


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summary_ms(values_s: list[float]) -> dict[str, Any]:
    """p50 / p99 / max in milliseconds, and the count."""
    return {
        "n": len(values_s),
        "p50_ms": round(percentile(values_s, 50) * 1000, 2),
        "p99_ms": round(percentile(values_s, 99) * 1000, 2),
        "max_ms": round(max(values_s) * 1000, 2) if values_s else math.nan,
    }


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # fields 14 and 15 of stat(5)


def machine_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine since boot, all CPUs, from /proc/stat.

    Busy is everything but idle and iowait; steal counts as busy (a neighbour had the CPU)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])  # guest time is already inside user (proc(5))
    return total - idle, total


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc/<pid>/status."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def machine() -> dict[str, Any]:
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"nproc": os.cpu_count(), "cpu_model": model, "loadavg_start": load_average()}


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]
