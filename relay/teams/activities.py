"""Outbound activities as botbuilder schema objects, with entities that survive serialisation.

botbuilder 4.17's ``Entity`` keeps only ``type`` when it serialises: ``streaminfo`` fields, the
schema.org AI label and citations would silently vanish (reference teams-platform.md §1.5, checked).
:class:`OpenEntity` declares a catch-all ``additional_properties`` mapping so every key we set goes
on the wire; :class:`StreamInfo` is the typed streaming entity. Contract tests assert the JSON.
"""

from __future__ import annotations

from typing import Any, ClassVar

from botbuilder.schema import (
    Activity,
    ActivityTypes,
    Attachment,
    ChannelAccount,
    ConversationAccount,
    Entity,
)

from relay.domain import ConversationRef


class OpenEntity(Entity):  # type: ignore[misc]
    """An entity that serialises every key it was given (``@type``, ``citation``, …)."""

    _attribute_map: ClassVar[dict[str, dict[str, str]]] = {
        "type": {"key": "type", "type": "str"},
        "additional_properties": {"key": "", "type": "{object}"},
    }

    def __init__(self, data: dict[str, Any]) -> None:
        rest = {k: v for k, v in data.items() if k != "type"}
        super().__init__(type=data["type"])
        self.additional_properties = rest


class StreamInfo(Entity):  # type: ignore[misc]
    """The ``streaminfo`` entity of Teams streaming (streamSequence must be absent on the final)."""

    _attribute_map: ClassVar[dict[str, dict[str, str]]] = {
        "type": {"key": "type", "type": "str"},
        "stream_id": {"key": "streamId", "type": "str"},
        "stream_type": {"key": "streamType", "type": "str"},
        "stream_sequence": {"key": "streamSequence", "type": "int"},
    }

    def __init__(
        self, *, stream_type: str, stream_sequence: int | None = None, stream_id: str | None = None
    ) -> None:
        super().__init__(type="streaminfo")
        self.stream_type = stream_type
        self.stream_sequence = stream_sequence
        self.stream_id = stream_id


def _base(ref: ConversationRef, activity_type: str) -> Activity:
    return Activity(
        type=activity_type,
        channel_id=ref.channel_id,
        service_url=ref.service_url,
        conversation=ConversationAccount(
            id=ref.conversation_id,
            conversation_type=ref.conversation_type.value,
            tenant_id=ref.tenant_id,
        ),
        from_property=ChannelAccount(id=f"28:{ref.bot_id}", name=ref.bot_name),
        reply_to_id=ref.reply_to_id,
    )


def message_activity(
    ref: ConversationRef,
    text: str,
    *,
    entities: list[Entity] | None = None,
    attachments: list[dict[str, Any]] | None = None,
    channel_data: dict[str, Any] | None = None,
) -> Activity:
    activity = _base(ref, ActivityTypes.message)
    activity.text = text or None
    activity.text_format = "markdown"
    activity.entities = entities or None
    if attachments:
        activity.attachments = [
            Attachment(
                content_type=a.get("contentType"),
                content_url=a.get("contentUrl"),
                content=a.get("content"),
                name=a.get("name"),
            )
            for a in attachments
        ]
    activity.channel_data = channel_data or None
    return activity


def typing_activity(
    ref: ConversationRef, *, text: str | None = None, entities: list[Entity] | None = None
) -> Activity:
    activity = _base(ref, ActivityTypes.typing)
    activity.text = text
    activity.entities = entities or None
    return activity
