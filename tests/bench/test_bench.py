"""The benchmark's own correctness: its latency formula, and one tiny end-to-end run.

The smoke run is the real thing at toy scale (issuer thread, helper process, ``relay serve``,
baseline process, all on 127.0.0.1): it proves the command works, that both systems complete
every streamed turn within Teams' rules, and that no process outlives the run.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.common import chunk_text, machine_ticks, newest_chunk, percentile, relay_added
from bench.neo_calls import measure as measure_calls
from bench.neo_shard import decode_cursor, encode_cursor, merge_answers
from bench.neo_tail import events, measure

ROOT = Path(__file__).resolve().parents[2]


def test_relay_added_counts_only_what_pacing_does_not_explain() -> None:
    # Chunk emitted at 10.0, update allowed from 11.0, received 11.02: 20 ms added.
    assert relay_added(11.02, 10.0, 11.0, math.inf) == pytest.approx(0.02)
    # Chunk emitted after the gate: measured from its emission.
    assert relay_added(12.01, 12.0, 11.0, math.inf) == pytest.approx(0.01)
    # A newer paragraph existed before the gate but is missing: stale since it was emitted.
    assert relay_added(11.02, 10.0, 11.0, 10.5) == pytest.approx(0.52)
    # A newer paragraph emitted after the gate (racing the POST) is no fault of the relay.
    assert relay_added(11.02, 10.0, 11.0, 11.01) == pytest.approx(0.02)


def test_numbered_words_identify_the_newest_chunk() -> None:
    text = "".join(chunk_text(i, 4) for i in range(8)).rstrip()
    assert text.endswith("w7")
    assert newest_chunk(text) == 7
    assert newest_chunk("Working on it…") is None
    assert percentile([3.0, 1.0, 2.0, 4.0], 50) == 2.0
    assert percentile([float(i) for i in range(100)], 99) == 98.0


def test_sharded_neo_ids_carry_the_turn_and_order_like_redis_ids() -> None:
    first = encode_cursor(123_456, "stream s100-00042")
    assert decode_cursor(first) == (123_456, "stream s100-00042", 0)
    ids = [encode_cursor(123_456, "stream s100-00042", i) for i in range(1, 200)]
    keys = [tuple(int(x) for x in i.split("-")) for i in [first, *ids]]
    assert keys == sorted(keys)  # increasing, as SSE ids
    assert len(set(keys)) == 200  # and strictly so
    assert decode_cursor(ids[-1]) == (123_456, "stream s100-00042", 199)
    assert decode_cursor("not-a-cursor") is None


def test_shards_records_merge_into_one_answer_per_conversation() -> None:
    a = {"c1": {"chunks": 4, "paragraph": 4, "emitted": [1.0, 2.0, None, None], "done": None}}
    b = {"c1": {"chunks": 4, "paragraph": 4, "emitted": [None, 2.5, 3.0, 4.0], "done": 4.1}}
    c = {"c2": {"chunks": 3, "paragraph": 3, "emitted": [5.0, None, 6.0], "done": None}}
    merged = merge_answers([a, b, c])
    assert merged["c1"] == {
        "chunks": 4,
        "paragraph": 4,
        "emitted": [1.0, 2.0, 3.0, 4.0],
        "done": 4.1,
    }
    assert merged["c2"]["emitted"] == [5.0]  # only the served prefix can be indexed by chunk


def test_machine_ticks_count_this_process_burning_a_core() -> None:
    (busy0, total0), cpu0 = machine_ticks(), time.process_time()
    while time.process_time() - cpu0 < 0.3:  # bounded: 0.3 s of this process's CPU
        pass
    (busy1, total1) = machine_ticks()
    busy, total = busy1 - busy0, total1 - total0
    ticks = os.sysconf("SC_CLK_TCK")
    # At least most of the 0.3 s burnt here, and never more busy time than there was time.
    assert 0.2 * ticks <= busy <= total, (busy, total)


def test_smoke_run_measures_relay_and_baseline_and_cleans_up(tmp_path: Path) -> None:
    out = tmp_path / "smoke.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "NEO_"))}
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert "| ack p99 ms @ 20/s |" in proc.stdout
    for system in ("relay", "baseline"):
        data = result[system]
        assert data["ack"]["statuses"] == {"200": data["ack"]["sent"]}, system
        (step,) = data["steps"]
        assert step["completed"] == step["concurrency"] == 4, (system, step)
        assert step["errors"] == step["violations"] == step["unparsed_updates"] == 0, step
        assert step["relay_added"]["n"] >= 4, step  # every turn streamed text updates
        assert step["cpu_seconds"] > 0
        # The machine as a whole is judged too: busy cores between none and all of them.
        assert 0 < step["harness"]["machine"]["cpu_share"] <= os.cpu_count(), step["harness"]
        for pid in data["pids"]:
            assert not Path(f"/proc/{pid}").exists(), f"{system} {pid} still running"
    assert result["machine"]["nproc"] == os.cpu_count()
    assert "cpu_per_turn_ratio" in result["summary"]


def test_neo_tail_bench_reads_every_event_of_every_stream() -> None:
    """bench.neo_tail runs the production tail; it asserts each tail yielded every chunk."""
    assert len(events(3)) == 6  # start, 3 deltas, finish, [DONE]
    figures = asyncio.run(measure(streams=3, chunks=5, rounds=2))
    assert len(figures) == 2
    assert 0 < figures[0] <= figures[1]


def test_neo_calls_bench_times_the_relay_client_and_aiohttp() -> None:
    """bench.neo_calls makes real calls through both clients (a failed call raises)."""
    figures = asyncio.run(measure_calls(calls=20, rounds=2))
    assert set(figures) == {"relay", "aiohttp"}
    assert all(us > 0 for us in figures.values()), figures
