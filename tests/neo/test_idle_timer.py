"""relay.neo.idle_timer: one timer per connection that bounds reads like asyncio.timeout did."""

from __future__ import annotations

import asyncio
import time

import pytest

from relay.neo.idle_timer import IdleTimer


async def test_a_read_longer_than_the_armed_delay_times_out() -> None:
    with IdleTimer() as timer:
        timer.arm(0.05)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await timer.reading(asyncio.sleep(5))
        assert time.monotonic() - started < 1


async def test_rearming_moves_the_deadline_without_expiring() -> None:
    """Six reads of 40 ms, each armed for 100 ms: 240 ms in all, no timeout."""
    with IdleTimer() as timer:
        for _ in range(6):
            timer.arm(0.1)
            assert await timer.reading(asyncio.sleep(0.04, result="ok")) == "ok"


async def test_an_earlier_deadline_replaces_a_later_one() -> None:
    with IdleTimer() as timer:
        timer.arm(5)
        timer.arm(0.05)  # e.g. the terminal grace after a long idle limit
        with pytest.raises(TimeoutError):
            await timer.reading(asyncio.sleep(5))


async def test_a_deadline_passing_between_reads_cancels_nothing() -> None:
    """Journaling an id or handing a chunk on is not a read: it may outlast the deadline."""
    with IdleTimer() as timer:
        timer.arm(0.02)
        await timer.reading(asyncio.sleep(0))
        await asyncio.sleep(0.1)  # past the deadline, outside reading()
        timer.arm(0.5)
        assert await timer.reading(asyncio.sleep(0.01, result=1)) == 1


async def test_an_outside_cancellation_stays_a_cancellation() -> None:
    async def read() -> None:
        with IdleTimer() as timer:
            timer.arm(5)
            await timer.reading(asyncio.sleep(5))

    task = asyncio.create_task(read())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
