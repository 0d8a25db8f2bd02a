"""``SqliteStore``: the embedded default backend of ``relay.store.base.Store``, on one file.

It exists so a single relay replica needs no external database. The one SQLite connection lives on
its own thread (``relay.store.sqlite_batch``), so the event loop never blocks on disk; that thread
also serialises every operation, which is what makes ``add_turn`` and ``claim_once`` atomic without
any lock of our own, and it commits concurrent writes together (group commit: a write returns once
its batch is committed). Each method hands the thread one plain function, so a write that takes
several statements (a turn turning final) is one round-trip and one transaction. One database file
belongs to one relay process; several replicas need the Redis backend.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from relay.domain import (
    BotId,
    ConversationId,
    EventId,
    SessionRecord,
    Turn,
    TurnId,
)
from relay.store import sqlite_lifecycle as lifecycle
from relay.store import sqlite_rows as codec
from relay.store.base import NOTE_TTL_SECONDS, Fence
from relay.store.leases import LocalLeases
from relay.store.lifecycle import (
    DEFAULT_RETENTION,
    Erased,
    final_delivery,
    scrub_finished,
)
from relay.store.migrations import migrate
from relay.store.sqlite_batch import BatchedConnection

log = logging.getLogger(__name__)

MEMORY = ":memory:"


class SqliteStore:
    """The ``Store`` protocol on SQLite (WAL). ``path`` is a file path or ``":memory:"``."""

    # One relay process per file: no other replica can run its conversations (relay/app.py then
    # runs turns without conversation leases; the worker alone keeps their order).
    single_process = True

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout_ms: int = 5000,
        clock: Callable[[], float] = time.time,
        retention: float = DEFAULT_RETENTION,
    ) -> None:
        self.path = str(path)
        self.retention = retention  # seconds finished turns and idle sessions are kept
        self._busy_timeout_ms = busy_timeout_ms
        # Wall clock, not monotonic: timestamps and claim expiries outlive the process.
        self._clock = clock
        self._db: BatchedConnection | None = None
        # In memory: the file has one process, so nobody else needs to see its leases.
        self._leases = LocalLeases()

    def __repr__(self) -> str:
        return f"SqliteStore({self.path!r})"

    # -- lifecycle -----------------------------------------------------------------------------

    async def open(self) -> None:
        if self._db is not None:
            return
        if self.path != MEMORY:
            await asyncio.to_thread(Path(self.path).parent.mkdir, parents=True, exist_ok=True)
        db = BatchedConnection(self.path, name=f"sqlite:{Path(self.path).name}")
        await db.open(self._prepare)
        self._db = db

    def _prepare(self, db: sqlite3.Connection) -> None:
        # Before the schema exists: auto_vacuum can only be chosen then (or with a VACUUM).
        lifecycle.prepare(db)
        # WAL + synchronous=NORMAL: a commit is in the WAL (the OS page cache) before the write
        # returns, so it survives the process being killed (kill -9, OOM, crash) — the case
        # invariant 5 is about. It does not fsync per commit, so a power loss (or a kernel
        # crash) can drop the last few commits; FULL would buy that with an fsync on every
        # journal commit. A lost write means a step is redone, and the deterministic
        # client_message_id makes a re-POST to Neo a harmless 409. WAL also lets reads run
        # alongside a write.
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        # Wait (rather than fail at once) if another connection — an operator's sqlite3 shell,
        # a process still shutting down — holds the write lock.
        db.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_ms)}")
        db.execute("PRAGMA foreign_keys=ON")
        migrate(db)
        # Expired claims are dead weight; dropping them here keeps the table bounded.
        db.execute("DELETE FROM claims WHERE expires_at <= ?", (self._clock(),))
        db.execute("DELETE FROM conversation_notes WHERE expires_at <= ?", (self._clock(),))

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            await db.close()
            s = db.stats
            if s.commits:
                log.info(
                    "journal: %d writes in %d commits (%.1f per commit)",
                    s.writes,
                    s.commits,
                    s.writes_per_commit,
                )

    async def ping(self) -> None:
        await self._conn.read(lambda db: db.execute("SELECT 1").fetchone())

    @property
    def _conn(self) -> BatchedConnection:
        if self._db is None:
            raise RuntimeError(f"{self!r} is not open")
        return self._db

    # -- turn journal --------------------------------------------------------------------------

    async def add_turn(self, turn: Turn) -> bool:
        now = self._clock()
        created_at = turn.created_at or now
        params = (*codec.turn_params(turn), created_at, now)
        inserted = await self._conn.write(
            lambda db: db.execute(codec.INSERT_TURN, params).rowcount == 1
        )
        if inserted:
            turn.created_at, turn.updated_at = created_at, now
        return inserted

    async def get_turn(self, turn_id: TurnId) -> Turn | None:
        sql = f"{codec.SELECT_TURNS} WHERE turn_id = ?"
        row = await self._conn.read(lambda db: db.execute(sql, (turn_id,)).fetchone())
        return codec.row_to_turn(row) if row is not None else None

    async def save_turn(self, turn: Turn, *, fence: Fence | None = None) -> None:
        self._leases.check(fence)
        now = self._clock()
        final = turn.state.is_final
        if final:
            scrub_finished(turn)
        sql = (
            "UPDATE turns SET state = ?, session_id = ?, since_cursor = ?, chat_turn_id = ?,"
            " last_event_id = ?, attempts = ?, error = ?, updated_at = ? WHERE turn_id = ?"
        )
        params = (
            turn.state.value,
            turn.session_id,
            turn.since_cursor,
            turn.chat_turn_id,
            turn.last_event_id,
            turn.attempts,
            turn.error,
            now,
            turn.turn_id,
        )
        turn_id, bot_id, conversation_id = turn.turn_id, turn.bot_id, turn.conversation_id

        def write(db: sqlite3.Connection) -> int:
            if final:  # one transaction with the state change
                lifecycle.finish_turn(db, turn_id, bot_id, conversation_id)
            return int(db.execute(sql, params).rowcount)

        if await self._conn.write(write) != 1:
            raise KeyError(turn.turn_id)
        turn.updated_at = now

    async def unfinished_turns(self, limit: int = 1000) -> list[Turn]:
        params = (*codec.UNFINISHED, limit)
        rows = await self._conn.read(
            lambda db: db.execute(codec.SELECT_UNFINISHED, params).fetchall()
        )
        return [codec.row_to_turn(r) for r in rows]

    async def conversation_turns(
        self, bot_id: BotId, conversation_id: ConversationId
    ) -> list[Turn]:
        sql = f"{codec.SELECT_TURNS} WHERE bot_id = ? AND conversation_id = ? ORDER BY seq"
        params = (bot_id, conversation_id)
        rows = await self._conn.read(lambda db: db.execute(sql, params).fetchall())
        return [codec.row_to_turn(r) for r in rows]

    async def unfinished_conversation_turns(
        self, bot_id: BotId, conversation_id: ConversationId, limit: int = 100
    ) -> list[Turn]:
        sql = (
            f"{codec.SELECT_TURNS} WHERE bot_id = ? AND conversation_id = ?"
            f" AND state IN ({', '.join('?' * len(codec.UNFINISHED))}) ORDER BY seq LIMIT ?"
        )
        params = (bot_id, conversation_id, *codec.UNFINISHED, limit)
        rows = await self._conn.read(lambda db: db.execute(sql, params).fetchall())
        return [codec.row_to_turn(r) for r in rows]

    async def save_delivery(
        self, turn_id: TurnId, data: dict[str, Any], *, fence: Fence | None = None
    ) -> None:
        self._leases.check(fence)
        # updated_at is left alone: it belongs to the Turn fields, and bumping it here would make
        # the caller's Turn object stale (unequal to get_turn) after every streamed update.
        # A finished turn keeps no answer text, even if a sink writes after the end.
        params = (*codec.FINAL, codec.dumps(final_delivery(data)), codec.dumps(data), turn_id)
        changed = await self._conn.write(
            lambda db: db.execute(codec.SAVE_DELIVERY, params).rowcount
        )
        if changed != 1:
            raise KeyError(turn_id)

    async def get_delivery(self, turn_id: TurnId) -> dict[str, Any]:
        sql = "SELECT delivery_json FROM turns WHERE turn_id = ?"
        row = await self._conn.read(lambda db: db.execute(sql, (turn_id,)).fetchone())
        if row is None:
            return {}
        data = json.loads(row["delivery_json"] or "{}")
        return data if isinstance(data, dict) else {}

    # -- sessions ------------------------------------------------------------------------------

    async def get_session(
        self, bot_id: BotId, conversation_id: ConversationId
    ) -> SessionRecord | None:
        sql = (
            "SELECT session_id, last_event_id, show_progress, created_at, updated_at"
            " FROM sessions WHERE bot_id = ? AND conversation_id = ?"
        )
        params = (bot_id, conversation_id)
        row = await self._conn.read(lambda db: db.execute(sql, params).fetchone())
        return codec.row_to_session(bot_id, conversation_id, row) if row is not None else None

    async def put_session(self, rec: SessionRecord, *, fence: Fence | None = None) -> None:
        self._leases.check(fence)
        now = self._clock()
        sql = (
            "INSERT INTO sessions (bot_id, conversation_id, session_id, last_event_id,"
            " show_progress, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (bot_id, conversation_id) DO UPDATE SET"
            "  created_at = CASE WHEN sessions.session_id = excluded.session_id"
            "   THEN sessions.created_at ELSE excluded.created_at END,"
            "  session_id = excluded.session_id, last_event_id = excluded.last_event_id,"
            "  show_progress = excluded.show_progress, updated_at = excluded.updated_at"
        )
        params = (
            rec.bot_id,
            rec.conversation_id,
            rec.session_id,
            rec.last_event_id,
            int(rec.show_progress),
            rec.created_at or now,
            now,
        )
        await self._conn.write(lambda db: db.execute(sql, params))
        rec.updated_at = now

    async def delete_session(
        self, bot_id: BotId, conversation_id: ConversationId, *, fence: Fence | None = None
    ) -> None:
        self._leases.check(fence)
        sql = "DELETE FROM sessions WHERE bot_id = ? AND conversation_id = ?"
        await self._conn.write(lambda db: db.execute(sql, (bot_id, conversation_id)))

    async def set_session_cursor(
        self,
        bot_id: BotId,
        conversation_id: ConversationId,
        last_event_id: EventId,
        *,
        fence: Fence | None = None,
    ) -> None:
        self._leases.check(fence)
        sql = (
            "UPDATE sessions SET last_event_id = ?, updated_at = ?"
            " WHERE bot_id = ? AND conversation_id = ?"
        )
        params = (last_event_id, self._clock(), bot_id, conversation_id)
        await self._conn.write(lambda db: db.execute(sql, params))

    # -- one-shot claims -----------------------------------------------------------------------

    async def claim_once(self, key: str, ttl_seconds: float) -> bool:
        now = self._clock()
        # One statement: insert, or take over an expired claim; a live claim makes the DO UPDATE's
        # WHERE false, so no row changes and rowcount is 0.
        sql = (
            "INSERT INTO claims (key, expires_at, created_at) VALUES (?, ?, ?)"
            " ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at,"
            " created_at = excluded.created_at WHERE claims.expires_at <= ?"
        )
        params = (key, now + ttl_seconds, now, now)
        return await self._conn.write(lambda db: db.execute(sql, params).rowcount == 1)

    # -- conversation notes (issue 13's block) --------------------------------------------------

    async def merge_note(
        self,
        bot_id: BotId,
        conversation_id: ConversationId,
        name: str,
        fields: dict[str, Any],
    ) -> dict[str, Any]:
        now = self._clock()
        # One statement merges (json_patch; a None value removes the field) and returns the
        # merged note, so concurrent merges cannot lose each other's fields and the caller sees
        # exactly the note its own merge produced (one round-trip to the writer thread, not two).
        sql = (
            "INSERT INTO conversation_notes (bot_id, conversation_id, name, data_json, expires_at)"
            " VALUES (?, ?, ?, json_patch('{}', ?), ?)"
            " ON CONFLICT (bot_id, conversation_id, name) DO UPDATE SET"
            " data_json = CASE WHEN conversation_notes.expires_at <= ? THEN excluded.data_json"
            " ELSE json_patch(conversation_notes.data_json, ?) END,"
            " expires_at = excluded.expires_at RETURNING data_json"
        )
        patch = codec.dumps(fields)
        expires = now + min(NOTE_TTL_SECONDS, self.retention)
        params = (bot_id, conversation_id, name, patch, expires, now, patch)
        # fetchall: the statement must be finished before the write's SAVEPOINT is released.
        rows = await self._conn.write(lambda db: db.execute(sql, params).fetchall())
        data = json.loads(rows[0][0]) if rows else {}
        return data if isinstance(data, dict) else {}

    async def get_note(
        self, bot_id: BotId, conversation_id: ConversationId, name: str
    ) -> dict[str, Any] | None:
        sql = (
            "SELECT data_json FROM conversation_notes WHERE bot_id = ? AND conversation_id = ?"
            " AND name = ? AND expires_at > ?"
        )
        params = (bot_id, conversation_id, name, self._clock())
        row = await self._conn.read(lambda db: db.execute(sql, params).fetchone())
        if row is None:
            return None
        data = json.loads(row["data_json"])
        return data if isinstance(data, dict) else {}

    # -- leases: in memory, see relay.store.leases ----------------------------------------------

    async def acquire_lease(self, key: str, owner: str, ttl_seconds: float) -> int | None:
        return self._leases.acquire(key, owner, ttl_seconds)

    async def renew_lease(self, key: str, owner: str, token: int, ttl_seconds: float) -> bool:
        return self._leases.renew(key, owner, token, ttl_seconds)

    async def release_lease(self, key: str, owner: str, token: int) -> None:
        self._leases.release(key, owner, token)

    async def lease_holder(self, key: str) -> str | None:
        return self._leases.holder(key)

    # -- retention and erasure: relay.store.lifecycle, relay.store.sqlite_lifecycle -------------

    async def release_claim(self, key: str) -> None:
        await self._conn.write(lambda db: db.execute("DELETE FROM claims WHERE key = ?", (key,)))

    async def find_delivered_turn(
        self, bot_id: BotId, conversation_id: ConversationId, activity_id: str
    ) -> Turn | None:
        turn_id = await self._conn.read(
            lambda db: lifecycle.delivered_turn_id(db, bot_id, conversation_id, activity_id)
        )
        return await self.get_turn(TurnId(turn_id)) if turn_id is not None else None

    async def prune(self, *, batch: int = 500) -> Erased:
        """Every expired row, in bounded batches (each its own short write), then the space."""
        now = self._clock()
        erased = Erased()
        for r in lifecycle.RETAINED:
            for _ in range(lifecycle.MAX_BATCHES):
                n = await self._conn.write(
                    lambda db, r=r: lifecycle.delete_expired(  # type: ignore[misc]
                        db, r, now=now, retention=self.retention, batch=batch
                    )
                )
                erased[r.table] += n
                if n < batch:
                    break
        await self._conn.exclusive(lifecycle.release_space)
        return erased

    async def forget_conversation(
        self, conversation_id: ConversationId, bot_id: BotId | None = None
    ) -> Erased:
        erased = await self._conn.write(
            lambda db: lifecycle.forget_conversation(db, conversation_id, bot_id)
        )
        await self._conn.exclusive(lifecycle.release_space)
        return erased

    async def forget_user(self, aad_object_id: str) -> Erased:
        erased = await self._conn.write(lambda db: lifecycle.forget_user(db, aad_object_id))
        await self._conn.exclusive(lifecycle.release_space)
        return erased
