"""The typed results of Neo API calls (split out of ``relay.neo.client`` to keep it readable).

Plain frozen dataclasses in the project's own types: what ``NeoClient`` returns after unwrapping
Neo's ``{data, meta}`` envelope (neo-chat-api.md §a.3-a.4). No I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass

from relay.domain import EventId, SessionId


@dataclass(frozen=True, slots=True)
class NeoSession:
    session_id: SessionId
    show_progress: bool
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class NeoAttachment:
    """One uploaded blob referenced by ``POST .../messages`` (at most 6 per turn, [AM])."""

    blob_path: str
    mime: str
    filename: str | None = None
    alt: str | None = None

    def to_wire(self) -> dict[str, str]:
        wire = {"blob_path": self.blob_path, "mime": self.mime}
        if self.filename is not None:
            wire["filename"] = self.filename
        if self.alt is not None:
            wire["alt"] = self.alt
        return wire


@dataclass(frozen=True, slots=True)
class PostedMessage:
    """The 202 answer to a posted message, or ``duplicate=True`` for a replayed client_message_id.

    A duplicate enqueues no new turn (neo-chat-api.md §a.4 [AM]); ``user_message_id`` then holds
    the original message id when Neo reports it, and ``chat_turn_id`` / ``since_cursor`` are None.
    """

    chat_turn_id: str | None
    since_cursor: EventId | None
    user_message_id: str | None
    show_progress: bool = False
    duplicate: bool = False
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class UploadGrant:
    upload_url: str  # short-lived single-blob SAS URL: the signature is in the URL itself
    blob_path: str
    mime: str
    max_image_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class InstallBranding:
    display_name: str | None
    matched: bool
    welcome_message: str | None


@dataclass(frozen=True, slots=True)
class SseFrame:
    """One SSE event. ``id`` is the event's own ``id:`` (None when it carried no new id)."""

    id: EventId | None
    event: str | None
    data: str
