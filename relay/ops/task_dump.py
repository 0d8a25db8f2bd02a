"""``kill -USR1 <pid>``: log what every task of the relay's event loop is waiting on.

A relay that holds a conversation and answers nothing is alive — it answers ``/healthz`` and
renews its leases — so neither a crash nor a timeout points at the cause; its tasks do.
``asyncio.Task.get_stack`` shows only a suspended task's outermost frame, so this module follows
each task's chain of awaits (``cr_await`` / ``ag_await`` / ``gi_yieldfrom``) down to the object it
waits on — a future, a lock's waiter, a sleep — and logs one WARNING per dump with every task's
name, its chain (file:line function) and that innermost object. A chain can end early at an
``anext()`` on an async generator, whose awaitable does not expose the generator it drives
(CPython 3.11); the line above it then names the generator being iterated. Nothing is changed or
cancelled: the dump is safe on a production relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

_MAX_DEPTH = 60  # a chain longer than this is cut (it never is, in practice)


def awaiting_chain(coro: Any) -> tuple[list[str], str]:
    """The frames of ``coro``'s await chain, outermost first, and what the innermost awaits."""
    frames: list[str] = []
    obj: Any = coro
    for _ in range(_MAX_DEPTH):
        frame: FrameType | None = (
            getattr(obj, "cr_frame", None)
            or getattr(obj, "ag_frame", None)
            or getattr(obj, "gi_frame", None)
        )
        if frame is not None:
            code = frame.f_code
            frames.append(f"{code.co_filename}:{frame.f_lineno} {code.co_name}")
        inner = (
            getattr(obj, "cr_await", None)
            or getattr(obj, "ag_await", None)
            or getattr(obj, "gi_yieldfrom", None)
        )
        if inner is None:
            break
        obj = inner
    waits_on = "" if obj is coro else _short(obj)
    return frames, waits_on


def dump_tasks(loop: asyncio.AbstractEventLoop | None = None) -> str:
    """A readable listing of every unfinished task on ``loop`` (the running loop by default)."""
    tasks = sorted(asyncio.all_tasks(loop), key=lambda t: t.get_name())
    lines = [f"{len(tasks)} task(s)"]
    for task in tasks:
        frames, waits_on = awaiting_chain(task.get_coro())
        lines.append(f"- {task.get_name()}" + (" (cancelling)" if task.cancelling() else ""))
        lines.extend(f"    {f}" for f in frames)
        if waits_on:
            lines.append(f"    waits on {waits_on}")
    return "\n".join(lines)


def _short(obj: object) -> str:
    if type(obj).__name__ == "FutureIter":  # ``await future`` (C accelerated): hides the future
        return "a future (the frame above says whose)"
    text = repr(obj)
    return text if len(text) <= 300 else text[:297] + "..."


class TaskDumper:
    """Installs the SIGUSR1 handler on the running loop (main thread only) until :meth:`stop`."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        if self._loop is not None or threading.current_thread() is not threading.main_thread():
            return
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGUSR1, self._dump)
            self._loop = loop

    def stop(self) -> None:
        loop, self._loop = self._loop, None
        if loop is not None:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(signal.SIGUSR1)

    def _dump(self) -> None:
        log.warning("task dump (SIGUSR1): %s", dump_tasks(self._loop))
