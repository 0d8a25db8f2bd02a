"""The benchmark's verdicts and its printed table (relay vs baseline, ratios, targets).

Kept apart from :mod:`bench.run` so the JSON in ``bench/results`` can be re-rendered:
``python -m bench.report bench/results/<file>.json``.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

ACK_P99_TARGET_MS = 20.0
ACK_2X_P99_TARGET_MS = 50.0
CPU_RATIO_TARGET = 1.5
KB_PER_STREAM_TARGET = 100.0


def _ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b and not math.isnan(a) and not math.isnan(b) else math.nan


def summarise(result: dict[str, Any], p99_target_ms: float) -> dict[str, Any]:
    relay, base = result["relay"], result.get("baseline") or {}
    steps = {s["concurrency"]: s for s in relay["steps"]}
    bsteps = {s["concurrency"]: s for s in base.get("steps", [])}
    ok = [n for n, s in steps.items() if s["passed"]]
    carried = max(ok, default=0)
    common = [n for n in steps if n in bsteps]
    at = max(common, default=0)
    summary: dict[str, Any] = {
        "ack_p99_ms": relay["ack"]["latency"]["p99_ms"],
        "ack_target_met": relay["ack"]["latency"]["p99_ms"] <= ACK_P99_TARGET_MS,
        "sustained_rate": relay["ack"].get("sustained_rate"),
        "harness_saturated": sorted(
            {n for phase in _phases(result) for n in phase.get("harness_saturated", [])}
        ),
        "max_concurrency_within_target": carried,
        "concurrency_target_met": carried >= 1000,
        "p99_target_ms": p99_target_ms,
    }
    if "ack_2x" in relay:
        p99 = relay["ack_2x"]["latency"]["p99_ms"]
        summary["ack_2x_rate"] = relay["ack_2x"]["rate"]
        summary["ack_2x_p99_ms"] = p99
        summary["ack_2x_target_met"] = p99 <= ACK_2X_P99_TARGET_MS
    if carried:
        summary["kb_per_stream"] = steps[carried]["kb_per_stream"]
        summary["memory_target_met"] = steps[carried]["kb_per_stream"] <= KB_PER_STREAM_TARGET
    if base:
        summary["ack_p99_ratio"] = _ratio(
            relay["ack"]["latency"]["p99_ms"], base["ack"]["latency"]["p99_ms"]
        )
    if at:
        r, b = steps[at], bsteps[at]
        summary["compared_at_concurrency"] = at
        summary["cpu_per_turn_ratio"] = _ratio(r["cpu_ms_per_turn"], b["cpu_ms_per_turn"])
        summary["cpu_target_met"] = summary["cpu_per_turn_ratio"] <= CPU_RATIO_TARGET
        summary["relay_added_p99_ratio"] = _ratio(
            r["relay_added"]["p99_ms"], b["relay_added"]["p99_ms"]
        )
    return summary


def _phases(result: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for system in ("relay", "baseline"):
        data = result.get(system) or {}
        out += [data[k] for k in ("ack", "ack_2x") if k in data] + data.get("steps", [])
    return out


def _row(cells: list[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def render_table(result: dict[str, Any]) -> str:
    """A Markdown table: one row per figure, relay | baseline | ratio."""
    relay, base = result["relay"], result.get("baseline") or {}
    bsteps = {s["concurrency"]: s for s in base.get("steps", [])}
    rate = result["config"]["ack_rate"]
    lines = [_row(["figure", "relay", "baseline", "relay / baseline"]), _row(["---"] * 4)]

    def add(name: str, r: float, b: float | None) -> None:
        b_cell = "–" if b is None else b
        lines.append(_row([name, r, b_cell, "–" if b is None else _ratio(r, b)]))

    ra, ba = relay["ack"]["latency"], (base.get("ack") or {}).get("latency")
    add(f"ack p50 ms @ {rate:.0f}/s", ra["p50_ms"], ba and ba["p50_ms"])
    add(f"ack p99 ms @ {rate:.0f}/s", ra["p99_ms"], ba and ba["p99_ms"])
    add("ack CPU s (whole phase)", relay["ack"]["cpu_seconds"], base and base["ack"]["cpu_seconds"])
    add(
        "turns sustained per s",
        relay["ack"].get("sustained_rate", "–"),
        base and base["ack"].get("sustained_rate"),
    )
    if "ack_2x" in relay:
        r2, b2 = relay["ack_2x"], base.get("ack_2x") or {}
        label = (
            f"ack p99 ms @ 2× sustained ({r2['rate']:.0f}/s; baseline {b2.get('rate', 0):.0f}/s)"
        )
        add(label, r2["latency"]["p99_ms"], b2 and b2["latency"]["p99_ms"])
    for s in relay["steps"]:
        n, b = s["concurrency"], bsteps.get(s["concurrency"])
        tag = f"@ {n} streams"
        for key, q in (("relay_added", "p50"), ("relay_added", "p99"), ("final_added", "p99")):
            label = f"{key.replace('_', '-')} {q} ms {tag}"
            add(label, s[key][f"{q}_ms"], b and b[key][f"{q}_ms"])
        add(f"CPU ms per turn {tag}", s["cpu_ms_per_turn"], b and b["cpu_ms_per_turn"])
        add(f"KB RSS per stream {tag}", s["kb_per_stream"], b and b["kb_per_stream"])
        add(f"turns completed {tag}", s["completed"], b and b["completed"])
        add(f"idle RSS MB (fresh process) {tag}", s["rss_idle_mb"], b and b["rss_idle_mb"])
    summary = result.get("summary", {})
    lines.append("")
    lines.append(
        "harness processes saturated (loop lag p99 > 10 ms or ≥ 0.9 core; machine: its CPUs"
        " ≥ 90 % busy) in: "
    )
    lines[-1] += ", ".join(summary.get("harness_saturated") or []) or "none"
    lines.append("targets: " + json.dumps(summary))
    m = result["machine"]
    lines.append(
        f"machine: nproc {m['nproc']}, {m['cpu_model']}, load average at start "
        f"{m['loadavg_start']}, at end {m.get('loadavg_end')}, "
        f"event loop {m.get('event_loop', 'asyncio')} (relay and baseline)"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    print(render_table(json.loads(Path(sys.argv[1]).read_text())))
