"""How ``RedisStore`` writes a ``Turn`` as a hash and reads it back.

A turn hash holds two JSON fields: ``fixed`` (what ``add_turn`` journals once: the conversation
reference, user, text, files, command) and ``mut`` (what every ``save_turn`` rewrites), plus
``state``, ``seq``, timestamps and the ``delivery`` record. Kept apart from ``redis.py`` (the
store's commands and scripts) so the mapping between the domain type and the fields reads in one
place.
"""

from __future__ import annotations

import json
from typing import Any

from relay import fastjson
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

FINAL_STATES = "," + ",".join(s.value for s in TurnState if s.is_final) + ","


def ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def fixed(turn: Turn) -> dict[str, Any]:
    """The fields fixed at ``add_turn`` (``save_turn`` never rewrites them)."""
    return {
        "turn_id": turn.turn_id,
        "ref": turn.ref.to_json(),
        "activity_id": turn.activity_id,
        "user": {
            "id": turn.user.id,
            "aad_object_id": turn.user.aad_object_id,
            "name": turn.user.name,
        },
        "text": turn.text,
        "model_tier": turn.model_tier.value,
        "files": [
            {"url": f.url, "content_type": f.content_type, "name": f.name, "bot": f.needs_bot_token}
            for f in turn.files
        ],
        "command": turn.command,
    }


def mutable(turn: Turn) -> dict[str, Any]:
    return {
        "state": turn.state.value,
        "session_id": turn.session_id,
        "since_cursor": turn.since_cursor,
        "chat_turn_id": turn.chat_turn_id,
        "last_event_id": turn.last_event_id,
        "attempts": turn.attempts,
        "error": turn.error,
    }


def to_turn(row: dict[str, str]) -> Turn:
    fixed, mut = json.loads(row["fixed"]), json.loads(row["mut"])
    user = fixed["user"]
    return Turn(
        turn_id=TurnId(fixed["turn_id"]),
        ref=ConversationRef.from_json(fixed["ref"]),
        activity_id=ActivityId(fixed["activity_id"]),
        user=User(id=user["id"], aad_object_id=user.get("aad_object_id"), name=user.get("name")),
        text=fixed["text"],
        model_tier=ModelTier(fixed["model_tier"]),
        files=[
            InboundFile(
                url=f["url"],
                content_type=f["content_type"],
                name=f.get("name"),
                needs_bot_token=bool(f.get("bot")),
            )
            for f in fixed["files"]
        ],
        command=fixed.get("command"),
        state=TurnState(mut["state"]),
        session_id=SessionId(mut["session_id"]) if mut["session_id"] else None,
        since_cursor=EventId(mut["since_cursor"]) if mut["since_cursor"] else None,
        chat_turn_id=mut["chat_turn_id"],
        last_event_id=EventId(mut["last_event_id"]) if mut["last_event_id"] else None,
        attempts=int(mut["attempts"]),
        error=mut["error"],
        created_at=float(row["created_at"]),
        updated_at=float(row["updated_at"]),
    )


def dumps(data: Any) -> str:
    # Compact, non-ASCII kept (user text stays readable to an operator), orjson's speed: one of
    # these runs before every Teams update of a stream (the write-ahead delivery record).
    return fastjson.dumps_text(data)
