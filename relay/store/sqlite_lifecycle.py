"""Retention and erasure on SQLite: deletes that really remove the bytes from the files.

A ``DELETE`` alone leaves the row's bytes in the database file (a freed page, or the free space of
a page still in use) and in the write-ahead log until it is overwritten — possibly never. So the
store runs with ``secure_delete`` (freed content is zeroed), ``auto_vacuum=INCREMENTAL`` (freed
pages can be returned to the file system; an older file is converted once with ``VACUUM``), and
every prune or erasure ends with ``wal_checkpoint(TRUNCATE)`` and ``incremental_vacuum``. Deletes
are bounded batches, so a sweep never holds the write lock for long. What exists and how it
expires is one list, :data:`RETAINED`: a table added to the schema is covered by adding a line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import aiosqlite

from relay.domain import ConversationType, Turn, TurnState
from relay.store.lifecycle import (
    Erased,
    claim_mentions,
    delivered_ids,
    final_delivery,
    scrub_finished,
)
from relay.store.sqlite_rows import dumps

_FINAL = tuple(s.value for s in TurnState if s.is_final)
_FINAL_SQL = ", ".join(f"'{s}'" for s in _FINAL)  # enum values: constants, never input

MAX_BATCHES = 20  # per table and sweep; what is left waits for the next sweep


@dataclass(frozen=True, slots=True)
class Retained:
    """One table the relay writes: when a row expires, and which conversation it belongs to."""

    table: str
    expired: str  # SQL condition; may use the bound parameters :cutoff (now - retention), :now
    conversation: tuple[str, str] | None = ("bot_id", "conversation_id")  # None: keyed otherwise


# Every table that holds conversation data. delivered_activities rows go with their turn (ON
# DELETE CASCADE); schema_version holds none.
RETAINED: tuple[Retained, ...] = (
    Retained("turns", f"state IN ({_FINAL_SQL}) AND updated_at < :cutoff"),
    Retained("sessions", "updated_at < :cutoff"),
    Retained("claims", "expires_at <= :now OR created_at < :cutoff", conversation=None),
    # Notes expire at min(their TTL, the retention period) from their last write.
    Retained("conversation_notes", "expires_at <= :now"),
)


async def prepare(db: aiosqlite.Connection) -> None:
    """Pragmas that make deletes remove bytes; run before the schema is created or migrated."""
    await db.execute("PRAGMA secure_delete=ON")
    async with db.execute("PRAGMA auto_vacuum") as cur:
        row = await cur.fetchone()
    if row is not None and int(row[0]) != 2:  # 2 = INCREMENTAL
        await db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        async with db.execute("SELECT COUNT(*) FROM sqlite_master") as cur:
            existing = await cur.fetchone()
        if existing is not None and int(existing[0]) > 0:
            # A file created before retention existed: the mode only changes with a rebuild.
            await db.execute("VACUUM")


async def release_space(db: aiosqlite.Connection) -> None:
    """Move the WAL into the database and truncate it; give freed pages back to the disk."""
    await db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    await db.execute("PRAGMA incremental_vacuum")


async def _delete_batched(
    db: aiosqlite.Connection, table: str, where: str, params: dict[str, float], batch: int
) -> int:
    # Assembled from RETAINED's constants only; values are bound parameters.
    sql = (
        f"DELETE FROM {table} WHERE rowid IN"  # noqa: S608
        f" (SELECT rowid FROM {table} WHERE {where} LIMIT {int(batch)})"
    )
    deleted = 0
    for _ in range(MAX_BATCHES):
        async with db.execute(sql, params) as cur:
            n = cur.rowcount
        deleted += max(n, 0)
        if n < batch:
            break
    return deleted


async def prune(db: aiosqlite.Connection, *, now: float, retention: float, batch: int) -> Erased:
    """Delete every row :data:`RETAINED` says has expired; then release the space."""
    params = {"now": now, "cutoff": now - retention}
    erased = Erased()
    for r in RETAINED:
        erased[r.table] += await _delete_batched(db, r.table, r.expired, params, batch)
    await release_space(db)
    return erased


async def forget_conversation(
    db: aiosqlite.Connection, conversation_id: str, bot_id: str | None
) -> Erased:
    """Delete everything held about one conversation (of one bot, or of every bot)."""
    erased = Erased()
    erased.neo_sessions |= await _session_ids(db, conversation_id, bot_id)
    for r in RETAINED:
        if r.conversation is None:
            continue
        bot_col, conv_col = r.conversation
        where = f"{conv_col} = ?" + (f" AND {bot_col} = ?" if bot_id is not None else "")
        params = (conversation_id, bot_id) if bot_id is not None else (conversation_id,)
        async with db.execute(f"DELETE FROM {r.table} WHERE {where}", params) as cur:  # noqa: S608
            erased[r.table] += max(cur.rowcount, 0)
    erased["claims"] += await _forget_claims(db, conversation_id, bot_id)
    await release_space(db)
    return erased


async def _session_ids(
    db: aiosqlite.Connection, conversation_id: str, bot_id: str | None
) -> set[str]:
    """The Neo sessions a conversation's mapping and turns name."""
    bot = " AND bot_id = ?" if bot_id is not None else ""
    params = (conversation_id, bot_id) if bot_id is not None else (conversation_id,)
    sql = (
        f"SELECT session_id FROM sessions WHERE conversation_id = ?{bot}"  # noqa: S608
        f" UNION SELECT session_id FROM turns WHERE conversation_id = ?{bot}"
        " AND session_id IS NOT NULL"
    )
    async with db.execute(sql, params + params) as cur:
        return {str(row[0]) for row in await cur.fetchall()}


async def _forget_claims(db: aiosqlite.Connection, conversation_id: str, bot_id: str | None) -> int:
    async with db.execute(
        "SELECT key FROM claims WHERE instr(key, ?) > 0", (conversation_id,)
    ) as cur:
        keys = [row[0] for row in await cur.fetchall()]
    doomed = [(k,) for k in keys if claim_mentions(k, bot_id, conversation_id)]
    if doomed:
        await db.executemany("DELETE FROM claims WHERE key = ?", doomed)
    return len(doomed)


async def forget_user(db: aiosqlite.Connection, aad_object_id: str) -> Erased:
    """Delete a person's turns; their 1:1 conversations (session mapping included) entirely.

    In a group chat or channel the session is shared with others, so only the person's own turns
    go. The turns are found by the Entra object id Teams sent with each message.
    """
    sql = (
        "SELECT turn_id, bot_id, conversation_id, ref_json, session_id FROM turns"
        " WHERE lower(json_extract(user_json, '$.aad_object_id')) = lower(?)"
    )
    async with db.execute(sql, (aad_object_id,)) as cur:
        rows = await cur.fetchall()
    erased = Erased()
    personal: set[tuple[str, str]] = set()
    shared: list[tuple[str]] = []
    for turn_id, bot_id, conversation_id, ref_json, session_id in rows:
        kind = json.loads(ref_json).get("conversation_type")
        if ConversationType.parse(kind) is ConversationType.PERSONAL:
            personal.add((bot_id, conversation_id))
        else:
            shared.append((turn_id,))
            if session_id:
                erased.neo_sessions.add(str(session_id))
    for bot_id, conversation_id in sorted(personal):
        erased.merge(await forget_conversation(db, conversation_id, bot_id))
    if shared:
        await db.executemany("DELETE FROM turns WHERE turn_id = ?", shared)
        erased["turns"] += len(shared)
        await release_space(db)
    return erased


async def finish_turn(db: aiosqlite.Connection, turn: Turn) -> None:
    """A turn turning final: clear its text, files and answer; index the Teams messages it sent."""
    scrub_finished(turn)
    async with db.execute(
        "SELECT delivery_json FROM turns WHERE turn_id = ?", (turn.turn_id,)
    ) as cur:
        row = await cur.fetchone()
    if row is None:
        return  # the caller's UPDATE reports the unknown turn
    delivery = json.loads(row[0] or "{}")
    delivery = delivery if isinstance(delivery, dict) else {}
    await index_delivered(
        db, turn.turn_id, turn.bot_id, turn.conversation_id, delivered_ids(delivery)
    )
    sql = "UPDATE turns SET text = '', files_json = '[]', delivery_json = ? WHERE turn_id = ?"
    async with db.execute(sql, (dumps(final_delivery(delivery)), turn.turn_id)):
        pass


async def index_delivered(
    db: aiosqlite.Connection, turn_id: str, bot_id: str, conversation_id: str, ids: set[str]
) -> None:
    """Record which Teams activities the finished turn sent (feedback's one-lookup index)."""
    if ids:
        await db.executemany(
            "INSERT INTO delivered_activities (bot_id, conversation_id, activity_id, turn_id)"
            " VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [(bot_id, conversation_id, activity_id, turn_id) for activity_id in sorted(ids)],
        )


async def delivered_turn_id(
    db: aiosqlite.Connection, bot_id: str, conversation_id: str, activity_id: str
) -> str | None:
    sql = (
        "SELECT turn_id FROM delivered_activities"
        " WHERE bot_id = ? AND conversation_id = ? AND activity_id = ?"
    )
    async with db.execute(sql, (bot_id, conversation_id, activity_id)) as cur:
        row = await cur.fetchone()
    return str(row[0]) if row is not None else None
