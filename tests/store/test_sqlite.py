"""What only the SQLite backend promises, beyond the shared contract in ``test_contract.py``.

Pragmas, numbered migrations (applied once, atomically) and durability across a ``kill -9`` are
properties of this backend's file, so they are checked here rather than in the contract suite.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys
import textwrap
from pathlib import Path

import pytest

import relay.store.migrations as migrations
from relay.domain import EventId, SessionId, TurnId, TurnState
from relay.errors import ConfigError
from relay.store import SqliteStore
from relay.store.migrations import MIGRATIONS, split_statements

LATEST = MIGRATIONS[-1][0]


def _query(path: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as conn:
        return list(conn.execute(sql))


async def test_pragmas_and_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    store = SqliteStore(path)
    await store.open()
    try:
        # Per-connection pragmas, so they are read through the store's own connection.
        pragmas: dict[str, list[tuple[object, ...]]] = {}
        for name in ("synchronous", "foreign_keys", "busy_timeout"):
            rows = await store._conn.read(lambda db, n=name: db.execute(f"PRAGMA {n}").fetchall())
            pragmas[name] = [tuple(row) for row in rows]
        assert pragmas == {
            "synchronous": [(1,)],  # NORMAL
            "foreign_keys": [(1,)],
            "busy_timeout": [(5000,)],
        }
    finally:
        await store.close()
    # journal_mode=WAL is a property of the file: a fresh connection sees it too.
    assert _query(path, "PRAGMA journal_mode") == [("wal",)]
    assert _query(path, "SELECT version FROM schema_version") == [(v,) for v, _ in MIGRATIONS]


async def test_reopening_applies_no_migration_twice(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    for _ in range(3):
        store = SqliteStore(path)
        await store.open()
        await store.close()
    assert _query(path, "SELECT COUNT(*), MAX(version) FROM schema_version") == [
        (len(MIGRATIONS), LATEST)
    ]


async def test_a_failing_migration_leaves_the_schema_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "relay.db"
    store = SqliteStore(path)
    await store.open()
    await store.close()

    broken = (LATEST + 1, "CREATE TABLE extra (x INTEGER);\nTHIS IS NOT SQL;\n")
    monkeypatch.setattr(migrations, "MIGRATIONS", [*MIGRATIONS, broken])
    with pytest.raises(sqlite3.OperationalError):
        await SqliteStore(path).open()

    assert _query(path, "SELECT MAX(version) FROM schema_version") == [(LATEST,)]
    assert _query(path, "SELECT name FROM sqlite_master WHERE name = 'extra'") == []


async def test_an_old_sqlite_is_a_start_up_error_naming_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 31, 1))
    with pytest.raises(ConfigError) as caught:
        await SqliteStore(tmp_path / "relay.db").open()
    assert caught.value.key == "RELAY_DATABASE_URL"
    assert "3.38.0 or newer" in str(caught.value)


def test_split_statements_keeps_trigger_bodies_whole() -> None:
    sql = """
        -- a comment
        CREATE TABLE a (x INTEGER);
        CREATE TRIGGER t AFTER INSERT ON a BEGIN
            UPDATE a SET x = x + 1;
        END;
        -- trailing comment
    """
    statements = split_statements(sql)
    assert len(statements) == 2
    assert statements[1].startswith("CREATE TRIGGER")
    assert statements[1].endswith("END;")
    with pytest.raises(ValueError, match="incomplete"):
        split_statements("CREATE TABLE b (x INTEGER)")


async def test_expired_claims_are_purged_at_open(tmp_path: Path) -> None:
    now = [1000.0]
    path = tmp_path / "relay.db"
    store = SqliteStore(path, clock=lambda: now[0])
    await store.open()
    assert await store.claim_once("old", 10)
    assert await store.claim_once("live", 1000)
    await store.close()

    now[0] = 1100.0
    await store.open()
    await store.close()
    assert _query(path, "SELECT key FROM claims") == [("live",)]


_CHILD = textwrap.dedent(
    """
    import asyncio, sys, time
    from relay.domain import *
    from relay.store import SqliteStore

    async def main() -> None:
        store = SqliteStore(sys.argv[1])
        await store.open()
        ref = ConversationRef(BotId("bot"), "https://smba.trafficmanager.net/emea/",
                              ConversationId("conv"), ConversationType.PERSONAL, None)
        turn = Turn(TurnId("t-1"), ref, ActivityId("a-1"), User("29:u"), "hello")
        await store.add_turn(turn)
        turn.state, turn.last_event_id = TurnState.STREAMING, EventId("42-0")
        await store.save_turn(turn)
        await store.save_delivery(turn.turn_id, {"stream_id": "st", "sequence": 3})
        await store.put_session(SessionRecord(BotId("bot"), ConversationId("conv"),
                                              SessionId("s-1")))
        print("written", flush=True)
        time.sleep(60)  # never closes: the parent kills us mid-flight

    asyncio.run(main())
    """
)


async def test_committed_writes_survive_kill_9(tmp_path: Path) -> None:
    """WAL + synchronous=NORMAL: every returned write is in the WAL before the process dies."""
    path = tmp_path / "relay.db"
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CHILD, str(path), stdout=asyncio.subprocess.PIPE
    )
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), timeout=20)
        assert line.strip() == b"written"
    finally:
        child.send_signal(signal.SIGKILL)
        await child.wait()
    assert child.returncode == -signal.SIGKILL

    store = SqliteStore(path)
    await store.open()
    try:
        turn = await store.get_turn(TurnId("t-1"))
        assert turn is not None
        assert (turn.state, turn.last_event_id) == (TurnState.STREAMING, EventId("42-0"))
        assert await store.get_delivery(TurnId("t-1")) == {"stream_id": "st", "sequence": 3}
        assert [t.turn_id for t in await store.unfinished_turns()] == ["t-1"]
        session = await store.get_session(turn.bot_id, turn.conversation_id)
        assert session is not None
        assert session.session_id == SessionId("s-1")
    finally:
        await store.close()
