"""Outbound activities as the plain JSON dicts Teams receives, built directly on the hot path.

Every stream update, typing indicator and final message used to be a ``botbuilder.schema.Activity``
serialised by msrest — a walk of a 43-attribute map per object, for a few keys that never vary in
shape. These builders produce exactly what ``Activity.serialize()`` produced (same keys, same
order, ``None`` left out, botbuilder's ``tenantID`` spelling on the conversation), which
``tests/teams/test_activities_wire.py`` checks against botbuilder itself. Entities keep every key
they were given: ``streaminfo`` fields, the schema.org AI label and citations (botbuilder 4.17's own
``Entity`` would have dropped all but ``type``, reference teams-platform.md §1.5).
"""

from __future__ import annotations

from typing import Any

from relay.domain import ConversationRef

Payload = dict[str, Any]  # one activity as sent (relay.teams.connector serialises it)


def open_entity(data: dict[str, Any]) -> Payload:
    """An entity with every key it was given (``@type``, ``citation``, …), ``type`` first."""
    entity: Payload = {"type": data["type"]}
    entity.update((k, v) for k, v in data.items() if k != "type")
    return entity


def stream_info(
    *, stream_type: str, stream_sequence: int | None = None, stream_id: str | None = None
) -> Payload:
    """The ``streaminfo`` entity of Teams streaming (streamSequence must be absent on the final)."""
    entity: Payload = {"type": "streaminfo"}
    if stream_id is not None:
        entity["streamId"] = stream_id
    entity["streamType"] = stream_type
    if stream_sequence is not None:
        entity["streamSequence"] = stream_sequence
    return entity


def _head(ref: ConversationRef, activity_type: str) -> Payload:
    sender: Payload = {"id": f"28:{ref.bot_id}"}
    if ref.bot_name is not None:
        sender["name"] = ref.bot_name
    conversation: Payload = {
        "conversationType": ref.conversation_type.value,
        "id": ref.conversation_id,
    }
    if ref.tenant_id is not None:
        conversation["tenantID"] = ref.tenant_id  # botbuilder 4.17's key, kept as it always was
    return {
        "type": activity_type,
        "serviceUrl": ref.service_url,
        "channelId": ref.channel_id,
        "from": sender,
        "conversation": conversation,
    }


def _attachment(a: dict[str, Any]) -> Payload:
    out: Payload = {}
    for key in ("contentType", "contentUrl", "content", "name"):
        value = a.get(key)
        if value is not None:
            out[key] = value
    return out


def message_activity(
    ref: ConversationRef,
    text: str,
    *,
    entities: list[Payload] | None = None,
    attachments: list[dict[str, Any]] | None = None,
    channel_data: dict[str, Any] | None = None,
) -> Payload:
    activity = _head(ref, "message")
    activity["textFormat"] = "markdown"
    if text:
        activity["text"] = text
    if attachments:
        activity["attachments"] = [_attachment(a) for a in attachments]
    if entities:
        activity["entities"] = entities
    if channel_data:
        activity["channelData"] = channel_data
    if ref.reply_to_id is not None:
        activity["replyToId"] = ref.reply_to_id
    return activity


def typing_activity(
    ref: ConversationRef, *, text: str | None = None, entities: list[Payload] | None = None
) -> Payload:
    activity = _head(ref, "typing")
    if text is not None:
        activity["text"] = text
    if entities:
        activity["entities"] = entities
    if ref.reply_to_id is not None:
        activity["replyToId"] = ref.reply_to_id
    return activity
