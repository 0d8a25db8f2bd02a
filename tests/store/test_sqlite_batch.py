"""Group commit in ``relay.store.sqlite_batch``: concurrent writes share one transaction, each
caller hears back only after that commit, and a failing write rolls back alone."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from relay.store.sqlite_batch import BatchedConnection


def _schema(db: sqlite3.Connection) -> None:
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER NOT NULL)")


def _outside(path: Path) -> list[tuple[str, int]]:
    """What another connection sees: only committed rows."""
    with sqlite3.connect(path) as conn:
        return sorted(conn.execute("SELECT k, v FROM t"))


async def test_concurrent_writes_share_commits_and_are_committed_when_awaited(
    tmp_path: Path,
) -> None:
    path = tmp_path / "b.db"
    db = BatchedConnection(str(path))
    await db.open(_schema)
    try:
        # Hold the thread busy so that the writes queue up behind it and form one batch. The
        # writes are submitted only once the thread is inside the blocker: submitted together,
        # the thread could take the first few into the blocker's batch and the rest into a second.
        gate, inside = threading.Event(), threading.Event()

        def block(_c: object) -> bool:
            inside.set()
            return gate.wait(5)

        blocker = asyncio.ensure_future(db.read(block))
        await asyncio.to_thread(inside.wait, 5)
        writes = [
            asyncio.ensure_future(
                db.write(lambda c, i=i: c.execute("INSERT INTO t VALUES (?, ?)", (f"k{i}", i)))
            )
            for i in range(50)
        ]
        await asyncio.sleep(0.05)
        assert not any(w.done() for w in writes)
        gate.set()
        await blocker
        for i, w in enumerate(writes):
            await w
            # Every awaited write is visible to another connection: it was committed first.
            assert (f"k{i}", i) in _outside(path)
        assert db.stats.writes == 50
        assert db.stats.commits == 1
    finally:
        await db.close()


async def test_a_failing_write_rolls_back_alone(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    db = BatchedConnection(str(path))
    await db.open(_schema)
    try:
        gate = threading.Event()
        blocker = asyncio.ensure_future(db.read(lambda _c: gate.wait(5)))

        def half_then_fail(c: sqlite3.Connection) -> None:
            c.execute("INSERT INTO t VALUES ('half', 1)")
            c.execute("INSERT INTO t VALUES ('a', 2)")  # duplicate key: the whole op is undone

        first = asyncio.ensure_future(
            db.write(lambda c: c.execute("INSERT INTO t VALUES ('a', 1)"))
        )
        broken = asyncio.ensure_future(db.write(half_then_fail))
        last = asyncio.ensure_future(db.write(lambda c: c.execute("INSERT INTO t VALUES ('b', 3)")))
        gate.set()
        await blocker
        await first
        with pytest.raises(sqlite3.IntegrityError):
            await broken
        await last
        assert _outside(path) == [("a", 1), ("b", 3)]
        assert db.stats.commits == 1
    finally:
        await db.close()


async def test_exclusive_runs_outside_the_batch_transaction(tmp_path: Path) -> None:
    db = BatchedConnection(str(tmp_path / "b.db"))
    await db.open(_schema)
    try:
        w = asyncio.ensure_future(db.write(lambda c: c.execute("INSERT INTO t VALUES ('x', 1)")))
        in_txn = await db.exclusive(lambda c: c.in_transaction)
        await w
        assert in_txn is False
        # A checkpoint is refused inside a transaction; here it runs.
        assert await db.exclusive(lambda c: c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone())
    finally:
        await db.close()


async def test_closed_connection_refuses_and_open_errors_surface(tmp_path: Path) -> None:
    db = BatchedConnection(str(tmp_path / "b.db"))
    await db.open(_schema)
    await db.close()
    with pytest.raises(RuntimeError, match="not open"):
        await db.read(lambda c: c.execute("SELECT 1").fetchone())

    missing_dir = BatchedConnection(str(tmp_path / "no" / "such" / "dir" / "b.db"))
    with pytest.raises(sqlite3.OperationalError):
        await missing_dir.open(_schema)
    assert not missing_dir.is_open
