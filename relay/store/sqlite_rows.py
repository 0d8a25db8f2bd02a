"""How ``SqliteStore`` writes a ``Turn`` as a ``turns`` row and reads it (and a session) back.

Kept apart from ``sqlite.py`` (the store's operations and their atomicity) so the mapping between
the domain types and the columns — JSON for the nested parts, ``None`` for absent ids — and the
``turns`` statements built from the column list read in one place.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

from relay import fastjson
from relay.domain import (
    ActivityId,
    BotId,
    ConversationId,
    ConversationRef,
    EventId,
    InboundFile,
    ModelTier,
    SessionId,
    SessionRecord,
    Turn,
    TurnId,
    TurnState,
    User,
)

_T = TypeVar("_T")

# Compared with `state IN (...)`, not `NOT IN (final)`, so the turns_by_state_age index is used.
UNFINISHED = tuple(s.value for s in TurnState if not s.is_final)
FINAL = tuple(s.value for s in TurnState if s.is_final)

TURN_COLUMNS = (
    "turn_id, bot_id, conversation_id, activity_id, ref_json, user_json, text, model_tier,"
    " files_json, state, session_id, since_cursor, chat_turn_id, last_event_id, attempts, error,"
    " command, created_at, updated_at"
)
# The SQL is assembled once from the constants above (no input reaches it; values are always bound
# parameters), hence the S608 waivers.
SELECT_TURNS = f"SELECT {TURN_COLUMNS} FROM turns"  # noqa: S608
# seq = MAX(seq) + 1 inside the INSERT: a write statement takes the write lock before it reads, so
# concurrent inserts cannot share a number (and UNIQUE would refuse it anyway). A new turn always
# sorts after every turn still in the table, which is the order the worker needs; a number could
# only be reused after the newest rows were deleted, and then nothing is left to mis-order.
INSERT_TURN = (
    f"INSERT INTO turns (seq, {TURN_COLUMNS})"  # noqa: S608
    " VALUES ((SELECT COALESCE(MAX(seq), 0) + 1 FROM turns), "
    + ", ".join("?" * (TURN_COLUMNS.count(",") + 1))
    + ") ON CONFLICT (turn_id) DO NOTHING"
)
SELECT_UNFINISHED = (
    f"{SELECT_TURNS} WHERE state IN ({', '.join('?' * len(UNFINISHED))}) ORDER BY seq LIMIT ?"
)
SAVE_DELIVERY = (
    "UPDATE turns SET delivery_json = CASE WHEN state IN"  # noqa: S608
    f" ({', '.join('?' * len(FINAL))}) THEN ? ELSE ? END WHERE turn_id = ?"
)


def turn_params(turn: Turn) -> tuple[Any, ...]:
    """Every column of ``TURN_COLUMNS`` except the two timestamps, in order."""
    return (
        turn.turn_id,
        turn.bot_id,
        turn.conversation_id,
        turn.activity_id,
        dumps(turn.ref.to_json()),
        dumps(_user_to_json(turn.user)),
        turn.text,
        turn.model_tier.value,
        dumps([_file_to_json(f) for f in turn.files]),
        turn.state.value,
        turn.session_id,
        turn.since_cursor,
        turn.chat_turn_id,
        turn.last_event_id,
        turn.attempts,
        turn.error,
        turn.command,
    )


def row_to_turn(row: sqlite3.Row) -> Turn:
    user = json.loads(row["user_json"])
    return Turn(
        turn_id=TurnId(row["turn_id"]),
        ref=ConversationRef.from_json(json.loads(row["ref_json"])),
        activity_id=ActivityId(row["activity_id"]),
        user=User(id=user["id"], aad_object_id=user.get("aad_object_id"), name=user.get("name")),
        text=row["text"],
        model_tier=ModelTier(row["model_tier"]),
        files=[_file_from_json(f) for f in json.loads(row["files_json"] or "[]")],
        state=TurnState(row["state"]),
        session_id=opt(SessionId, row["session_id"]),
        since_cursor=opt(EventId, row["since_cursor"]),
        chat_turn_id=row["chat_turn_id"],
        last_event_id=opt(EventId, row["last_event_id"]),
        attempts=int(row["attempts"]),
        error=row["error"],
        command=row["command"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def row_to_session(
    bot_id: BotId, conversation_id: ConversationId, row: sqlite3.Row
) -> SessionRecord:
    return SessionRecord(
        bot_id=bot_id,
        conversation_id=conversation_id,
        session_id=SessionId(row["session_id"]),
        last_event_id=opt(EventId, row["last_event_id"]),
        show_progress=bool(row["show_progress"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _user_to_json(user: User) -> dict[str, Any]:
    return {"id": user.id, "aad_object_id": user.aad_object_id, "name": user.name}


def _file_to_json(f: InboundFile) -> dict[str, Any]:
    return {
        "url": f.url,
        "content_type": f.content_type,
        "name": f.name,
        "needs_bot_token": f.needs_bot_token,
    }


def _file_from_json(data: dict[str, Any]) -> InboundFile:
    return InboundFile(
        url=data["url"],
        content_type=data["content_type"],
        name=data.get("name"),
        needs_bot_token=bool(data.get("needs_bot_token", False)),
    )


def opt(kind: Callable[[str], _T], value: str | None) -> _T | None:
    return kind(value) if value is not None else None


def dumps(data: Any) -> str:
    # Compact, non-ASCII kept (user text stays readable to an operator), orjson's speed: one of
    # these runs before every Teams update of a stream (the write-ahead delivery record).
    return fastjson.dumps_text(data)
