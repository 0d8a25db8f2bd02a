"""The inbound activity as the relay reads it: only the fields the webhook uses, straight from JSON.

botbuilder's ``Activity().deserialize(body)`` walks msrest's 43-attribute map and builds a model
object for every nested account, entity and attachment on every request — the webhook's largest
cost after authentication. :func:`parse_inbound` builds just what :mod:`relay.teams.inbound`,
:mod:`relay.teams.dispatch` and botbuilder's token validation read (``channel_id``,
``service_url``, ``recipient.role``), under botbuilder's attribute names, so the code downstream
is unchanged. msrest's behaviour that the webhook relied on is kept: a string field given a number
holds its ``str()``; a nested object that is not an object, or a list that is not a list, refuses
the body (400); ``null`` list items are skipped; an entity keeps its keys besides ``type`` in
``additional_properties``; the conversation's tenant is read from ``tenantId`` (what Teams sends)
or ``tenantID`` (botbuilder's own key).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from relay.errors import InboundError


def _str(value: Any) -> str | None:
    """msrest's ``str`` deserialisation: None stays None, scalars become their text."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        raise InboundError("not a Bot Framework activity: a text field holds an object")
    return str(value)


def _obj(body: dict[str, Any], key: str) -> dict[str, Any] | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InboundError(f"not a Bot Framework activity: {key} is not an object")
    return value


def _items(body: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = body.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise InboundError(f"not a Bot Framework activity: {key} is not a list")
    items = [v for v in value if v is not None]
    if not all(isinstance(v, dict) for v in items):
        raise InboundError(f"not a Bot Framework activity: {key} holds a non-object")
    return items


_BOOL_TEXT = {"true": True, "1": True, "false": False, "0": False}


@dataclass(slots=True)
class Account:
    """``from``, ``recipient``, or a member added (botbuilder's ``ChannelAccount``)."""

    id: str | None = None
    name: str | None = None
    aad_object_id: str | None = None
    role: str | None = None

    @classmethod
    def of(cls, data: dict[str, Any] | None) -> Account | None:
        if data is None:
            return None
        return cls(
            _str(data.get("id")),
            _str(data.get("name")),
            _str(data.get("aadObjectId")),
            _str(data.get("role")),
        )


@dataclass(slots=True)
class Conversation:
    id: str | None = None
    conversation_type: str | None = None
    is_group: bool | None = None
    tenant_id: str | None = None


@dataclass(slots=True)
class Entity:
    type: str | None = None
    additional_properties: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Attachment:
    content_type: str | None = None
    content_url: str | None = None
    content: Any = None
    name: str | None = None


@dataclass(slots=True)
class InboundActivity:
    """One inbound activity, with botbuilder ``Activity``'s attribute names for what it keeps."""

    type: str | None = None
    id: str | None = None
    channel_id: str | None = None
    service_url: str | None = None
    text: str | None = None
    action: str | None = None
    name: str | None = None
    reply_to_id: str | None = None
    value: Any = None
    channel_data: Any = None
    relates_to: Any = None  # read (for the emulator only) by botbuilder's anonymous path
    conversation: Conversation = field(default_factory=Conversation)  # empty when absent
    from_property: Account | None = None
    recipient: Account | None = None
    members_added: list[Account] = field(default_factory=list)
    entities: list[Entity] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)


def _conversation(data: dict[str, Any] | None) -> Conversation:
    if data is None:
        return Conversation()
    is_group = data.get("isGroup")
    if is_group is not None and not isinstance(is_group, bool):
        # msrest's bool: also the strings true/false and the numbers 1/0.
        is_group = _BOOL_TEXT.get(str(is_group).lower())
        if is_group is None:
            raise InboundError("not a Bot Framework activity: conversation.isGroup is not a bool")
    tenant = data.get("tenantId")
    return Conversation(
        id=_str(data.get("id")),
        conversation_type=_str(data.get("conversationType")),
        is_group=is_group,
        tenant_id=_str(tenant if tenant else data.get("tenantID")),
    )


def _entity(data: dict[str, Any]) -> Entity:
    return Entity(_str(data.get("type")), {k: v for k, v in data.items() if k != "type"})


def _attachment(data: dict[str, Any]) -> Attachment:
    return Attachment(
        content_type=_str(data.get("contentType")),
        content_url=_str(data.get("contentUrl")),
        content=data.get("content"),
        name=_str(data.get("name")),
    )


def parse_inbound(body: dict[str, Any]) -> InboundActivity:
    """The fields the relay uses; :class:`InboundError` (400) for a body that is not an activity."""
    members = [Account.of(m) for m in _items(body, "membersAdded")]
    return InboundActivity(
        type=_str(body.get("type")),
        id=_str(body.get("id")),
        channel_id=_str(body.get("channelId")),
        service_url=_str(body.get("serviceUrl")),
        text=_str(body.get("text")),
        action=_str(body.get("action")),
        name=_str(body.get("name")),
        reply_to_id=_str(body.get("replyToId")),
        value=body.get("value"),
        channel_data=body.get("channelData"),
        relates_to=body.get("relatesTo"),
        conversation=_conversation(_obj(body, "conversation")),
        from_property=Account.of(_obj(body, "from")),
        recipient=Account.of(_obj(body, "recipient")),
        members_added=[m for m in members if m is not None],
        entities=[_entity(e) for e in _items(body, "entities")],
        attachments=[_attachment(a) for a in _items(body, "attachments")],
    )
