"""Plain data the whole relay speaks: ids, the inbound turn, its journal states, the agent's reply.

Nothing here does I/O or imports botbuilder / httpx. The Teams package turns activities into these
types and back; the Neo package turns API responses and SSE chunks into them; the pipeline in
``relay.turns`` only ever sees these. Distinct ``NewType`` ids exist because with many bots and
tenants in one process, mixing a bot id with a tenant id is the bug class mypy can catch for us.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NewType

BotId = NewType("BotId", str)  # the bot's Entra app id (GUID), never with the "28:" prefix
TenantId = NewType("TenantId", str)  # Microsoft 365 tenant of the sender
ConversationId = NewType("ConversationId", str)  # Teams conversation.id (channel threads included)
ActivityId = NewType("ActivityId", str)  # Teams activity.id of the inbound message
SessionId = NewType("SessionId", str)  # Neo chat session id
TurnId = NewType("TurnId", str)  # our own id: hash of (bot, conversation, activity)
EventId = NewType("EventId", str)  # Neo SSE event id (a Redis stream id, e.g. "1714000000000-0")


class ConversationType(StrEnum):
    PERSONAL = "personal"
    GROUP_CHAT = "groupChat"
    CHANNEL = "channel"

    @classmethod
    def parse(cls, value: str | None) -> ConversationType:
        for member in cls:
            if value and member.value.lower() == value.lower():
                return member
        # Teams omits conversationType on some events; 1:1 is the only scope without isGroup.
        return cls.PERSONAL


class ModelTier(StrEnum):
    FAST = "FAST"
    SMART = "SMART"


class TurnState(StrEnum):
    """The turn journal's states, in the order a healthy turn passes through them."""

    RECEIVED = "received"  # journaled, acknowledged to Teams, nothing sent to Neo yet
    SESSION_READY = "session_ready"  # Neo session known
    POSTED = "posted"  # Neo answered 202 (or 409 duplicate): never POST this turn again
    STREAMING = "streaming"  # tail open; last_event_id tracks progress
    DELIVERED = "delivered"  # the answer is in Teams
    FAILED = "failed"  # a readable error is in Teams
    CANCELLED = "cancelled"  # the user stopped it (Stop button, /reset)

    @property
    def is_final(self) -> bool:
        return self in (TurnState.DELIVERED, TurnState.FAILED, TurnState.CANCELLED)


@dataclass(frozen=True, slots=True)
class ConversationRef:
    """Everything needed to post into a Teams conversation later, from any replica."""

    bot_id: BotId
    service_url: str
    conversation_id: ConversationId
    conversation_type: ConversationType
    tenant_id: TenantId | None
    channel_id: str = "msteams"
    bot_name: str | None = None
    reply_to_id: ActivityId | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "bot_id": self.bot_id,
            "service_url": self.service_url,
            "conversation_id": self.conversation_id,
            "conversation_type": self.conversation_type.value,
            "tenant_id": self.tenant_id,
            "channel_id": self.channel_id,
            "bot_name": self.bot_name,
            "reply_to_id": self.reply_to_id,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ConversationRef:
        return cls(
            bot_id=BotId(data["bot_id"]),
            service_url=data["service_url"],
            conversation_id=ConversationId(data["conversation_id"]),
            conversation_type=ConversationType.parse(data.get("conversation_type")),
            tenant_id=TenantId(data["tenant_id"]) if data.get("tenant_id") else None,
            channel_id=data.get("channel_id") or "msteams",
            bot_name=data.get("bot_name"),
            reply_to_id=ActivityId(data["reply_to_id"]) if data.get("reply_to_id") else None,
        )


@dataclass(frozen=True, slots=True)
class User:
    id: str  # Teams user id "29:..."
    aad_object_id: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class InboundFile:
    """A file or image the user sent with the message (fetched by the files step)."""

    url: str
    content_type: str
    name: str | None = None
    needs_bot_token: bool = False  # inline images live behind the Bot Framework token


@dataclass(frozen=True, slots=True)
class UploadedFile:
    """A file already uploaded to Neo's blob storage, referenced by a turn's ``attachments``."""

    blob_path: str
    mime: str
    filename: str | None = None


def make_turn_id(bot_id: BotId, conversation_id: ConversationId, activity_id: ActivityId) -> TurnId:
    """Deterministic turn id: the same Teams activity always maps to the same turn."""
    raw = f"{bot_id}\x1f{conversation_id}\x1f{activity_id}".encode()
    return TurnId(hashlib.sha256(raw).hexdigest()[:32])


def client_message_id(turn_id: TurnId) -> str:
    """Neo's idempotency key for the turn's message (a repeat POST gets 409, no new turn)."""
    return f"teams-{turn_id}"


@dataclass(slots=True)
class Turn:
    """One inbound Teams message on its way to becoming one answer (the journal row)."""

    turn_id: TurnId
    ref: ConversationRef
    activity_id: ActivityId
    user: User
    text: str
    model_tier: ModelTier = ModelTier.FAST
    files: list[InboundFile] = field(default_factory=list)
    # A command the worker runs in conversation order instead of posting (relay.commands):
    # "reset", "help", "install". None: an ordinary message for the agent.
    command: str | None = None
    state: TurnState = TurnState.RECEIVED
    session_id: SessionId | None = None
    since_cursor: EventId | None = None
    chat_turn_id: str | None = None
    last_event_id: EventId | None = None
    attempts: int = 0
    error: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0

    @property
    def bot_id(self) -> BotId:
        return self.ref.bot_id

    @property
    def conversation_id(self) -> ConversationId:
        return self.ref.conversation_id


@dataclass(slots=True)
class SessionRecord:
    bot_id: BotId
    conversation_id: ConversationId
    session_id: SessionId
    last_event_id: EventId | None = None
    show_progress: bool = False
    created_at: float = 0.0
    updated_at: float = 0.0


# ---------------------------------------------------------------------------------------------
# The agent's reply, assembled from AI SDK v6 chunks (relay.neo.chunks builds it).
# ---------------------------------------------------------------------------------------------


class ReplyOutcome(StrEnum):
    COMPLETE = "complete"  # [DONE] / end of body after a normal finish
    ERROR = "error"  # an `error` chunk (text kept, marked failed)
    ABORTED = "aborted"  # an `abort` chunk: the server stopped generating
    INCOMPLETE = "incomplete"  # stream ended with no finish (resume or fail decides)


@dataclass(slots=True)
class Source:
    source_id: str
    url: str | None = None
    title: str | None = None
    media_type: str | None = None
    filename: str | None = None
    snippet: str | None = None  # a passage of the source, when the agent sent one


@dataclass(slots=True)
class FilePart:
    url: str
    media_type: str


@dataclass(slots=True)
class ToolCall:
    tool_call_id: str
    tool_name: str
    state: str = "input-streaming"  # AI SDK part state names
    title: str | None = None
    error_text: str | None = None
    input: Any = None  # never shown to users; kept for approvals and logs at debug level
    output: Any = None


@dataclass(slots=True)
class ApprovalRequest:
    approval_id: str
    tool_call_id: str | None = None
    til_request_id: str | None = None
    tool_name: str | None = None
    description: str | None = None


@dataclass(slots=True)
class Reply:
    """What the agent said, in arrival order; renderers read it, never the raw chunks."""

    message_id: str | None = None
    text_parts: list[str] = field(default_factory=list)
    sources: list[Source] = field(default_factory=list)
    files: list[FilePart] = field(default_factory=list)
    tools: dict[str, ToolCall] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)  # "data-<name>[:id]" -> latest payload
    approvals: list[ApprovalRequest] = field(default_factory=list)
    progress: list[str] = field(default_factory=list)  # human-readable step labels, de-duplicated
    metadata: dict[str, Any] = field(default_factory=dict)
    finish_reason: str | None = None
    error_text: str | None = None
    abort_reason: str | None = None
    outcome: ReplyOutcome = ReplyOutcome.INCOMPLETE

    @property
    def text(self) -> str:
        """The visible answer: every non-empty text part, in order, joined by a blank line."""
        return "\n\n".join(p for p in self.text_parts if p)
