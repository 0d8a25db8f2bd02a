"""The SQLite schema, as numbered migrations applied in order at ``SqliteStore.open()``.

A relay that is upgraded in place must find its journal readable, so the schema only ever grows
by appending a migration: a migration, once released, is never edited or renumbered. Each one runs
inside a single transaction together with the ``schema_version`` row that records it, so a crash
half-way through an upgrade leaves the old schema intact rather than a half-built new one
(:func:`migrate`). Kept apart from ``sqlite.py`` so the schema can be read (and reviewed) in one
place.
"""

from __future__ import annotations

import sqlite3
from typing import Final

from relay.errors import ConfigError

# The store's statements use upserts with RETURNING (3.35) and the built-in JSON functions (3.38).
MIN_SQLITE = (3, 38, 0)

# (version, sql). Versions are strictly increasing (checked below, at import time).
MIGRATIONS: Final[list[tuple[int, str]]] = [
    (
        1,
        """
        CREATE TABLE sessions (
            bot_id          TEXT    NOT NULL,
            conversation_id TEXT    NOT NULL,
            session_id      TEXT    NOT NULL,
            last_event_id   TEXT,
            show_progress   INTEGER NOT NULL DEFAULT 0,
            created_at      REAL    NOT NULL,
            updated_at      REAL    NOT NULL,
            PRIMARY KEY (bot_id, conversation_id)
        );

        -- One row per Teams activity. `seq` is the arrival order: wall-clock timestamps can tie
        -- or step backwards, a counter assigned inside the INSERT cannot.
        CREATE TABLE turns (
            turn_id         TEXT    PRIMARY KEY,
            seq             INTEGER NOT NULL UNIQUE,
            bot_id          TEXT    NOT NULL,
            conversation_id TEXT    NOT NULL,
            activity_id     TEXT    NOT NULL,
            ref_json        TEXT    NOT NULL,
            user_json       TEXT    NOT NULL,
            text            TEXT    NOT NULL,
            model_tier      TEXT    NOT NULL,
            files_json      TEXT    NOT NULL DEFAULT '[]',
            state           TEXT    NOT NULL,
            session_id      TEXT,
            since_cursor    TEXT,
            chat_turn_id    TEXT,
            last_event_id   TEXT,
            attempts        INTEGER NOT NULL DEFAULT 0,
            error           TEXT,
            delivery_json   TEXT    NOT NULL DEFAULT '{}',
            created_at      REAL    NOT NULL,
            updated_at      REAL    NOT NULL
        );
        -- Recovery at start-up asks for the unfinished turns; the worker for one conversation's.
        CREATE INDEX turns_by_state ON turns (state);
        CREATE INDEX turns_by_conversation ON turns (bot_id, conversation_id, seq);

        CREATE TABLE claims (
            key        TEXT PRIMARY KEY,
            expires_at REAL NOT NULL
        );
        """,
    ),
    (
        2,
        """
        -- relay.commands: /reset, /help and install greetings are journaled turns too, so they
        -- run in conversation order; NULL for ordinary messages.
        ALTER TABLE turns ADD COLUMN command TEXT;
        """,
    ),
    (
        3,
        """
        -- Store.merge_note: small JSON records per conversation (the approvals shown in it, how
        -- the last turn's tail ended). `expires_at` lets open() drop stale ones.
        CREATE TABLE conversation_notes (
            bot_id          TEXT NOT NULL,
            conversation_id TEXT NOT NULL,
            name            TEXT NOT NULL,
            data_json       TEXT NOT NULL,
            expires_at      REAL NOT NULL,
            PRIMARY KEY (bot_id, conversation_id, name)
        );
        """,
    ),
    (
        4,
        """
        -- Retention (relay.store.sqlite_lifecycle): finished turns are deleted by age, so the
        -- sweep asks for (state, updated_at); this index also serves the unfinished-turns query.
        CREATE INDEX turns_by_state_age ON turns (state, updated_at);
        DROP INDEX turns_by_state;
        -- A claim older than the retention period goes too, whatever its own TTL.
        ALTER TABLE claims ADD COLUMN created_at REAL NOT NULL DEFAULT 0;
        -- Feedback names the rated Teams message; this maps it to its turn in one lookup. Rows
        -- go with their turn (retention, relay forget) through the foreign key.
        CREATE TABLE delivered_activities (
            bot_id          TEXT NOT NULL,
            conversation_id TEXT NOT NULL,
            activity_id     TEXT NOT NULL,
            turn_id         TEXT NOT NULL REFERENCES turns (turn_id) ON DELETE CASCADE,
            PRIMARY KEY (bot_id, conversation_id, activity_id)
        );
        CREATE INDEX delivered_by_turn ON delivered_activities (turn_id);
        """,
    ),
]

if [v for v, _ in MIGRATIONS] != sorted({v for v, _ in MIGRATIONS}):
    raise RuntimeError("relay.store.migrations.MIGRATIONS must have strictly increasing versions")


def migrate(db: sqlite3.Connection) -> None:
    """Apply the pending migrations, all in one IMMEDIATE transaction.

    IMMEDIATE takes the write lock before reading the version, so a second process opening the
    same file at the same moment waits (busy_timeout) instead of applying the same migration twice.
    """
    if sqlite3.sqlite_version_info < MIN_SQLITE:
        raise ConfigError(
            "RELAY_DATABASE_URL",
            f"this Python's SQLite is {sqlite3.sqlite_version}; a sqlite:// journal needs"
            f" {'.'.join(map(str, MIN_SQLITE))} or newer (or use redis://)",
        )
    db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY)")
    db.execute("BEGIN IMMEDIATE")
    try:
        row = db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()
        current = int(row[0]) if row is not None else 0
        for version, sql in MIGRATIONS:
            if version <= current:
                continue
            for statement in split_statements(sql):
                db.execute(statement)
            db.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def split_statements(sql: str) -> list[str]:
    """Split a migration into single statements.

    ``executescript`` would be simpler, but Python's sqlite3 commits any open transaction before
    running a script, which would break the one-transaction-per-migration guarantee. Accumulating
    lines until ``sqlite3.complete_statement`` agrees keeps ``CREATE TRIGGER ... BEGIN ...; END``
    bodies (semicolons inside) in one piece should a later migration need one.
    """
    statements: list[str] = []
    buffer = ""
    for line in sql.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statement = buffer.strip()
            if statement.rstrip(";").strip():
                statements.append(statement)
            buffer = ""
    if buffer.strip() and not _only_comments(buffer):
        raise ValueError(f"incomplete SQL statement in migration: {buffer.strip()[:80]!r}")
    return statements


def _only_comments(text: str) -> bool:
    return all(not line.strip() or line.strip().startswith("--") for line in text.splitlines())
