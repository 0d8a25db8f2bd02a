"""relay.ops.task_dump: SIGUSR1 logs each task's chain of awaits, down to what it waits on."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from relay.ops.task_dump import awaiting_chain, dump_tasks
from tests.fakes.harness import close_harness, make_harness
from tests.fakes.relay_process import RelayProcess, relay_env


async def _inner(lock: asyncio.Lock) -> None:
    async with lock:
        pass


async def _outer(lock: asyncio.Lock) -> None:
    await _inner(lock)


async def test_the_dump_follows_a_task_down_to_the_lock_it_waits_for() -> None:
    lock = asyncio.Lock()
    await lock.acquire()
    stuck = asyncio.create_task(_outer(lock), name="stuck-on-a-lock")
    await asyncio.sleep(0)
    try:
        frames, waits_on = awaiting_chain(stuck.get_coro())
        names = [f.rsplit(" ", 1)[1] for f in frames]
        assert names == ["_outer", "_inner", "__aenter__", "acquire"]  # into asyncio.Lock itself
        assert "test_task_dump.py" in frames[1]
        assert waits_on.startswith("a future")
        dump = dump_tasks()
        assert "- stuck-on-a-lock\n" in dump
        assert "acquire\n    waits on a future" in dump
    finally:
        stuck.cancel()
        lock.release()


async def test_the_dump_names_the_generator_an_async_for_is_reading() -> None:
    gate = asyncio.Event()

    async def events() -> object:
        await gate.wait()
        yield 1

    async def reader() -> None:
        async for _ in events():  # type: ignore[attr-defined]
            pass

    task = asyncio.create_task(reader(), name="reader")
    await asyncio.sleep(0)
    try:
        frames, waits_on = awaiting_chain(task.get_coro())
        # The chain stops at the anext() (CPython 3.11 hides the generator behind it); the frame
        # above it is the `async for` line, which names the generator.
        assert len(frames) == 1, frames
        assert frames[0].endswith(" reader"), frames
        assert "async_generator_asend" in waits_on
    finally:
        task.cancel()


async def test_sigusr1_logs_a_dump_and_the_relay_goes_on(tmp_path: Path) -> None:
    h = await make_harness(tmp_path)
    await h.stop_relay()
    relay = await RelayProcess.start(relay_env(h, RELAY_LOG_LEVEL="INFO"), tmp_path / "r.log")
    try:
        dump = await relay.task_dump()
        assert "task dump (SIGUSR1)" in dump, dump
        assert "- lease-sweeper" in dump  # the relay's own named tasks are listed
        assert "waits on" in dump
        assert relay.proc.returncode is None
        assert await relay.signal_and_wait(signal.SIGTERM, 15) == 0
    finally:
        await relay.kill()
        await close_harness(h)
