"""How ``SqliteStore`` writes a ``Turn`` as a ``turns`` row and reads it back.

Kept apart from ``sqlite.py`` (the store's statements and their atomicity) so the mapping between
the domain type and the columns — JSON for the nested parts, ``None`` for absent ids — reads in one
place. The column order is ``relay.store.sqlite._TURN_COLUMNS``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

from relay.domain import (
    ActivityId,
    ConversationRef,
    EventId,
    InboundFile,
    ModelTier,
    SessionId,
    Turn,
    TurnId,
    TurnState,
    User,
)

_T = TypeVar("_T")


def turn_params(turn: Turn) -> tuple[Any, ...]:
    """Every column of ``_TURN_COLUMNS`` except the two timestamps, in order."""
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
    # ensure_ascii=False: user text and names stay readable in an operator's sqlite3 shell.
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))
