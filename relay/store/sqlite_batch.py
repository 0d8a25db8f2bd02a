"""``BatchedConnection``: the store's one SQLite connection, on one thread, with group commit.

Why it exists: every journal step used to be its own autocommit transaction sent through
aiosqlite, which costs a thread round-trip per statement (and one more to close each cursor) and
one commit per write. Under a burst of turns the loop spent its time waking up for those
round-trips and the connection's thread spent it committing. Here a caller hands a whole
operation (a plain function on a ``sqlite3.Connection``) to the thread in one round-trip; the
thread takes everything queued at that moment, runs the writes inside one ``BEGIN IMMEDIATE`` ...
``COMMIT`` (each under its own ``SAVEPOINT``, so one failing write rolls back alone), and resolves
every caller of the batch with one wake-up of the loop, *after* the commit. Durability is
therefore unchanged: a write's ``await`` returns only once it is committed (in the WAL), and a
kill -9 before that loses only writes whose callers never heard back. Reads run in the same queue
(SQLite serialises one connection anyway); ``exclusive`` runs an operation alone, outside any
transaction, for what SQLite refuses inside one (``VACUUM``, ``wal_checkpoint``, migrations that
manage their own ``BEGIN``).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

_T = TypeVar("_T")
Op = Callable[[sqlite3.Connection], Any]

_READ, _WRITE, _EXCLUSIVE = 0, 1, 2
# Writes per transaction at most: a longer batch would only delay the first caller's answer.
MAX_BATCH = 512


@dataclass(slots=True)
class _Job:
    kind: int
    op: Op
    future: asyncio.Future[Any]
    result: Any = None
    error: BaseException | None = None


@dataclass(slots=True)
class BatchStats:
    """What the writer did: logical writes, and the commits that made them durable."""

    writes: int = 0
    commits: int = 0

    @property
    def writes_per_commit(self) -> float:
        return self.writes / self.commits if self.commits else 0.0


class BatchedConnection:
    """One ``sqlite3`` connection owned by one daemon thread; see the module docstring."""

    def __init__(self, path: str, *, name: str = "sqlite") -> None:
        self.path = path
        self.stats = BatchStats()
        self._name = name
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def open(self, prepare: Op) -> None:
        """Connect on the thread and run ``prepare`` (pragmas, schema) there; raises its errors."""
        if self._thread is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
        self._thread.start()
        try:
            await self.exclusive(prepare)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Finish what is queued, close the connection, stop the thread."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._queue.put(None)
        await asyncio.to_thread(thread.join)

    @property
    def is_open(self) -> bool:
        return self._thread is not None

    async def read(self, op: Callable[[sqlite3.Connection], _T]) -> _T:
        return await self._submit(_READ, op)  # type: ignore[no-any-return]

    async def write(self, op: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``op`` in the next group transaction; returns once that transaction committed."""
        return await self._submit(_WRITE, op)  # type: ignore[no-any-return]

    async def exclusive(self, op: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``op`` alone in autocommit mode (it may BEGIN/COMMIT itself)."""
        return await self._submit(_EXCLUSIVE, op)  # type: ignore[no-any-return]

    def _submit(self, kind: int, op: Op) -> asyncio.Future[Any]:
        if self._thread is None or self._loop is None:
            raise RuntimeError(f"{self.path!r} is not open")
        future = self._loop.create_future()
        self._queue.put(_Job(kind, op, future))
        return future

    # -- the thread --------------------------------------------------------------------------------

    def _serve(self) -> None:
        try:
            # isolation_level=None: the module never opens transactions behind our back.
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
        except Exception as exc:
            self._refuse(exc)  # until close(): every job gets the reason
            return
        try:
            while True:
                first = self._queue.get()
                if first is None:
                    break
                batch = [first]
                stop = False
                while len(batch) < MAX_BATCH:
                    try:
                        job = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if job is None:
                        stop = True
                        break
                    batch.append(job)
                self._run_batch(conn, batch)
                self._deliver(batch)
                if stop:
                    break
        finally:
            conn.close()

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Job]) -> None:
        pending: list[_Job] = []  # writes of the open transaction, not yet committed
        for job in batch:
            if job.kind == _WRITE:
                if not pending and not self._begin(conn, job):
                    continue
                pending.append(job)
                self._one_write(conn, job, pending)
            else:
                if job.kind == _EXCLUSIVE and pending:
                    self._commit(conn, pending)
                    pending = []
                try:
                    job.result = job.op(conn)
                except Exception as exc:
                    job.error = exc
        if pending:
            self._commit(conn, pending)

    def _begin(self, conn: sqlite3.Connection, job: _Job) -> bool:
        try:
            # IMMEDIATE: take the write lock now (waiting busy_timeout for another process), so
            # no statement inside the batch can fail on a lock upgrade half-way.
            conn.execute("BEGIN IMMEDIATE")
        except Exception as exc:
            job.error = exc
            return False
        return True

    def _one_write(self, conn: sqlite3.Connection, job: _Job, pending: list[_Job]) -> None:
        conn.execute("SAVEPOINT w")
        try:
            job.result = job.op(conn)
            conn.execute("RELEASE w")
        except Exception as exc:
            job.error = exc
            if conn.in_transaction:
                conn.execute("ROLLBACK TO w")
                conn.execute("RELEASE w")
            else:
                # The error ended the whole transaction (disk full, I/O): the writes before this
                # one are gone too, and their callers must hear so.
                for other in pending:
                    if other.error is None:
                        other.error = exc
                pending.clear()

    def _commit(self, conn: sqlite3.Connection, pending: list[_Job]) -> None:
        self.stats.writes += len(pending)
        try:
            conn.execute("COMMIT")
            self.stats.commits += 1
        except Exception as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for job in pending:
                if job.error is None:
                    job.result, job.error = None, exc

    def _deliver(self, batch: list[_Job]) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            self._loop.call_soon_threadsafe(_resolve, batch)

    def _refuse(self, exc: BaseException) -> None:
        while (job := self._queue.get()) is not None:
            job.error = exc
            self._deliver([job])


def _resolve(batch: list[_Job]) -> None:
    """On the loop: hand each caller its result (one wake-up for the whole batch)."""
    for job in batch:
        if job.future.done():
            continue  # the caller was cancelled; its write still happened (or not) as usual
        if job.error is not None:
            job.future.set_exception(job.error)
        else:
            job.future.set_result(job.result)
