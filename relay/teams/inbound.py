"""Inbound Teams activities → the relay's own types (Turn, or an event the relay answers itself).

Teams facts this module encodes (reference teams-platform.md §3): the bot is ``recipient.id``
``28:<appId>``; the tenant is ``conversation.tenantId`` with ``channelData.tenant.id`` as
fallback; in group chats and channels the text carries
``<at>Bot</at>`` for the mention, which is removed before the text goes to the agent; pasted images
are Bot Framework attachment URLs that need the bot token, paperclip files carry a pre-authenticated
``downloadUrl``; the sibling ``text/html`` attachment of an inline image is useless to a bot. The
activity is the relay's own light model (:mod:`relay.teams.inbound_model`), not botbuilder's.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from relay.domain import (
    ActivityId,
    BotId,
    ConversationId,
    ConversationRef,
    ConversationType,
    InboundFile,
    TenantId,
    Turn,
    User,
    make_turn_id,
)
from relay.errors import InboundError
from relay.teams.inbound_model import InboundActivity, parse_inbound

FILE_DOWNLOAD_INFO = "application/vnd.microsoft.teams.file.download.info"


@dataclass(frozen=True, slots=True)
class Ignored:
    """An activity the relay acknowledges and does nothing more with."""

    reason: str


def parse_activity(body: dict[str, Any]) -> InboundActivity:
    """The fields the relay reads (:mod:`relay.teams.inbound_model`); refuse non-activities."""
    activity = parse_inbound(body)
    if not isinstance(activity.type, str) or not activity.type:
        raise InboundError("activity has no type")
    if activity.type != "ping" and not activity.conversation.id:
        raise InboundError("activity has no conversation.id")
    if activity.service_url is not None and not isinstance(activity.service_url, str):
        raise InboundError("serviceUrl must be a string")
    return activity


def bot_id_of(activity: InboundActivity) -> BotId | None:
    """The bot an activity is addressed to: ``recipient.id`` without the ``28:`` prefix."""
    rid = activity.recipient.id if activity.recipient is not None else None
    if not isinstance(rid, str) or not rid:
        return None
    return BotId(rid.removeprefix("28:").lower())


def tenant_of(activity: InboundActivity) -> TenantId | None:
    tenant = activity.conversation.tenant_id
    if not tenant and isinstance(activity.channel_data, dict):
        t = activity.channel_data.get("tenant")
        tenant = t.get("id") if isinstance(t, dict) else None
    return TenantId(str(tenant)) if tenant else None


def conversation_ref(activity: InboundActivity, bot_id: BotId) -> ConversationRef:
    conv = activity.conversation
    ctype = ConversationType.parse(conv.conversation_type)
    if ctype is ConversationType.PERSONAL and conv.is_group:
        ctype = ConversationType.GROUP_CHAT
    return ConversationRef(
        bot_id=bot_id,
        service_url=str(activity.service_url or ""),
        conversation_id=ConversationId(conv.id or ""),
        conversation_type=ctype,
        tenant_id=tenant_of(activity),
        channel_id=str(activity.channel_id or "msteams"),
        bot_name=getattr(activity.recipient, "name", None),
        reply_to_id=ActivityId(activity.id) if isinstance(activity.id, str) else None,
    )


def _mentions_recipient(activity: InboundActivity) -> list[str]:
    """The literal mention texts (``<at>Bot</at>``) of entities that mention this bot."""
    rid = getattr(activity.recipient, "id", None)
    texts: list[str] = []
    for entity in activity.entities or []:
        if getattr(entity, "type", None) != "mention":
            continue
        props = getattr(entity, "additional_properties", None) or {}
        mentioned = props.get("mentioned") or {}
        if isinstance(mentioned, dict) and mentioned.get("id") == rid:
            text = props.get("text")
            texts.append(text if isinstance(text, str) else "")
    return texts


_AT_TAG = re.compile(r"<at[^>]*>.*?</at>", re.IGNORECASE | re.DOTALL)


def clean_text(activity: InboundActivity) -> tuple[str, bool]:
    """The message text without this bot's @mention, trimmed; and whether the bot was mentioned."""
    text = activity.text if isinstance(activity.text, str) else ""
    mentions = _mentions_recipient(activity)
    for literal in mentions:
        # A mention entity without its text: the first <at>…</at> is the bot's own mention.
        text = text.replace(literal, " ", 1) if literal else _AT_TAG.sub(" ", text, count=1)
    # remove_recipient_mention leaves the surrounding spaces behind (checked, §3): trim them.
    return text.strip(), bool(mentions)


def inbound_files(activity: InboundActivity) -> list[InboundFile]:
    files: list[InboundFile] = []
    for att in activity.attachments:  # "attachments": [null] items are already dropped (fuzzing)
        ctype = att.content_type if isinstance(att.content_type, str) else ""
        if ctype == FILE_DOWNLOAD_INFO and isinstance(att.content, dict):
            url = att.content.get("downloadUrl")
            if isinstance(url, str) and url:
                mime = _mime_from_name(att.name) or "application/octet-stream"
                files.append(InboundFile(url=url, content_type=mime, name=att.name))
        elif ctype.startswith("image/") and isinstance(att.content_url, str) and att.content_url:
            files.append(
                InboundFile(
                    url=att.content_url, content_type=ctype, name=att.name, needs_bot_token=True
                )
            )
    return files


_EXT_MIME = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "webp": "image/webp",
    "pdf": "application/pdf",
    "txt": "text/plain",
    "csv": "text/csv",
    "log": "text/plain",
    "json": "application/json",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


def _mime_from_name(name: str | None) -> str | None:
    if not name or "." not in name:
        return None
    return _EXT_MIME.get(name.rsplit(".", 1)[1].lower())


def user_of(activity: InboundActivity) -> User:
    """The sender: Teams user id ``29:…``, Entra object id and display name when present."""
    sender = activity.from_property
    return User(
        id=str(getattr(sender, "id", "") or ""),
        aad_object_id=getattr(sender, "aad_object_id", None),
        name=getattr(sender, "name", None),
    )


def to_turn(activity: InboundActivity, bot_id: BotId) -> Turn | Ignored:
    """A message activity → the Turn to journal, or why it is ignored."""
    if activity.type != "message":
        return Ignored(f"activity type {activity.type!r}")
    if not isinstance(activity.id, str) or not activity.id:
        return Ignored("message without an id cannot be de-duplicated")
    ref = conversation_ref(activity, bot_id)
    text, mentioned = clean_text(activity)
    if ref.conversation_type is not ConversationType.PERSONAL and not mentioned:
        # Group chats and channels: answer only when @mentioned (Neo's default mention mode).
        return Ignored("group message without a mention of the bot")
    files = inbound_files(activity)
    if not text and not files:
        return Ignored("empty message")
    user = user_of(activity)
    now = time.time()
    return Turn(
        turn_id=make_turn_id(bot_id, ref.conversation_id, ActivityId(activity.id)),
        ref=ref,
        activity_id=ActivityId(activity.id),
        user=user,
        text=text,
        files=files,
        created_at=now,
        updated_at=now,
    )
