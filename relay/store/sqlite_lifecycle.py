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
import sqlite3
from dataclasses import dataclass

from relay.domain import ConversationType, TurnState
from relay.store.lifecycle import (
    Erased,
    claim_mentions,
    delivered_ids,
    final_delivery,
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


def prepare(db: sqlite3.Connection) -> None:
    """Pragmas that make deletes remove bytes; run before the schema is created or migrated."""
    db.execute("PRAGMA secure_delete=ON")
    row = db.execute("PRAGMA auto_vacuum").fetchone()
    if row is not None and int(row[0]) != 2:  # 2 = INCREMENTAL
        db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        existing = db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        if existing is not None and int(existing[0]) > 0:
            # A file created before retention existed: the mode only changes with a rebuild.
            db.execute("VACUUM")


def release_space(db: sqlite3.Connection) -> None:
    """Move the WAL into the database and truncate it; give freed pages back to the disk.

    Outside any transaction (``BatchedConnection.exclusive``): a checkpoint cannot run in one.
    """
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.execute("PRAGMA incremental_vacuum")


def delete_expired(
    db: sqlite3.Connection, r: Retained, *, now: float, retention: float, batch: int
) -> int:
    """One bounded batch of :data:`RETAINED` row ``r``'s expired rows (a sweep calls it until a
    batch comes back short, at most ``MAX_BATCHES`` times, each its own short write)."""
    # Assembled from RETAINED's constants only; values are bound parameters.
    sql = (
        f"DELETE FROM {r.table} WHERE rowid IN"  # noqa: S608
        f" (SELECT rowid FROM {r.table} WHERE {r.expired} LIMIT {int(batch)})"
    )
    return max(db.execute(sql, {"now": now, "cutoff": now - retention}).rowcount, 0)


def forget_conversation(db: sqlite3.Connection, conversation_id: str, bot_id: str | None) -> Erased:
    """Delete everything held about one conversation (of one bot, or of every bot), in the
    caller's transaction; the caller then runs :func:`release_space`."""
    erased = Erased()
    erased.neo_sessions |= _session_ids(db, conversation_id, bot_id)
    for r in RETAINED:
        if r.conversation is None:
            continue
        bot_col, conv_col = r.conversation
        where = f"{conv_col} = ?" + (f" AND {bot_col} = ?" if bot_id is not None else "")
        params = (conversation_id, bot_id) if bot_id is not None else (conversation_id,)
        cur = db.execute(f"DELETE FROM {r.table} WHERE {where}", params)  # noqa: S608
        erased[r.table] += max(cur.rowcount, 0)
    erased["claims"] += _forget_claims(db, conversation_id, bot_id)
    return erased


def _session_ids(db: sqlite3.Connection, conversation_id: str, bot_id: str | None) -> set[str]:
    """The Neo sessions a conversation's mapping and turns name."""
    bot = " AND bot_id = ?" if bot_id is not None else ""
    params = (conversation_id, bot_id) if bot_id is not None else (conversation_id,)
    sql = (
        f"SELECT session_id FROM sessions WHERE conversation_id = ?{bot}"  # noqa: S608
        f" UNION SELECT session_id FROM turns WHERE conversation_id = ?{bot}"
        " AND session_id IS NOT NULL"
    )
    return {str(row[0]) for row in db.execute(sql, params + params).fetchall()}


def _forget_claims(db: sqlite3.Connection, conversation_id: str, bot_id: str | None) -> int:
    rows = db.execute("SELECT key FROM claims WHERE instr(key, ?) > 0", (conversation_id,))
    keys = [row[0] for row in rows.fetchall()]
    doomed = [(k,) for k in keys if claim_mentions(k, bot_id, conversation_id)]
    if doomed:
        db.executemany("DELETE FROM claims WHERE key = ?", doomed)
    return len(doomed)


def forget_user(db: sqlite3.Connection, aad_object_id: str) -> Erased:
    """Delete a person's turns; their 1:1 conversations (session mapping included) entirely.

    In a group chat or channel the session is shared with others, so only the person's own turns
    go. The turns are found by the Entra object id Teams sent with each message. One transaction;
    the caller then runs :func:`release_space`.
    """
    sql = (
        "SELECT turn_id, bot_id, conversation_id, ref_json, session_id FROM turns"
        " WHERE lower(json_extract(user_json, '$.aad_object_id')) = lower(?)"
    )
    rows = db.execute(sql, (aad_object_id,)).fetchall()
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
        erased.merge(forget_conversation(db, conversation_id, bot_id))
    if shared:
        db.executemany("DELETE FROM turns WHERE turn_id = ?", shared)
        erased["turns"] += len(shared)
    return erased


def finish_turn(db: sqlite3.Connection, turn_id: str, bot_id: str, conversation_id: str) -> None:
    """A turn turning final: clear its text, files and answer; index the Teams messages it sent.

    Runs in the same write (one transaction) as the state change that makes the turn final; the
    caller has already scrubbed its own ``Turn`` (``relay.store.lifecycle.scrub_finished``)."""
    row = db.execute("SELECT delivery_json FROM turns WHERE turn_id = ?", (turn_id,))
    found = row.fetchone()
    if found is None:
        return  # the caller's UPDATE reports the unknown turn
    delivery = json.loads(found[0] or "{}")
    delivery = delivery if isinstance(delivery, dict) else {}
    index_delivered(db, turn_id, bot_id, conversation_id, delivered_ids(delivery))
    sql = "UPDATE turns SET text = '', files_json = '[]', delivery_json = ? WHERE turn_id = ?"
    db.execute(sql, (dumps(final_delivery(delivery)), turn_id))


def index_delivered(
    db: sqlite3.Connection, turn_id: str, bot_id: str, conversation_id: str, ids: set[str]
) -> None:
    """Record which Teams activities the finished turn sent (feedback's one-lookup index)."""
    if ids:
        db.executemany(
            "INSERT INTO delivered_activities (bot_id, conversation_id, activity_id, turn_id)"
            " VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [(bot_id, conversation_id, activity_id, turn_id) for activity_id in sorted(ids)],
        )


def delivered_turn_id(
    db: sqlite3.Connection, bot_id: str, conversation_id: str, activity_id: str
) -> str | None:
    sql = (
        "SELECT turn_id FROM delivered_activities"
        " WHERE bot_id = ? AND conversation_id = ? AND activity_id = ?"
    )
    row = db.execute(sql, (bot_id, conversation_id, activity_id)).fetchone()
    return str(row[0]) if row is not None else None
