"""The plain-dict activities equal what botbuilder's ``Activity.serialize()`` put on the wire.

The reference below is the previous implementation (botbuilder schema objects, msrest
serialisation), kept here only as the oracle; the relay sends the dicts of
:mod:`relay.teams.activities`, encoded by :func:`relay.teams.connector.encode_activity`.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import orjson
from botbuilder.schema import (
    Activity,
    ActivityTypes,
    Attachment,
    ChannelAccount,
    ConversationAccount,
    Entity,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.domain import (
    ActivityId,
    BotId,
    ConversationId,
    ConversationRef,
    ConversationType,
    TenantId,
)
from relay.teams.activities import message_activity, open_entity, stream_info, typing_activity
from relay.teams.connector import encode_activity


class _OpenEntity(Entity):  # type: ignore[misc]
    _attribute_map: ClassVar[dict[str, dict[str, str]]] = {
        "type": {"key": "type", "type": "str"},
        "additional_properties": {"key": "", "type": "{object}"},
    }

    def __init__(self, data: dict[str, Any]) -> None:
        super().__init__(type=data["type"])
        self.additional_properties = {k: v for k, v in data.items() if k != "type"}


class _StreamInfo(Entity):  # type: ignore[misc]
    _attribute_map: ClassVar[dict[str, dict[str, str]]] = {
        "type": {"key": "type", "type": "str"},
        "stream_id": {"key": "streamId", "type": "str"},
        "stream_type": {"key": "streamType", "type": "str"},
        "stream_sequence": {"key": "streamSequence", "type": "int"},
    }

    def __init__(self, *, stream_type: str, stream_sequence: Any, stream_id: Any) -> None:
        super().__init__(type="streaminfo")
        self.stream_type, self.stream_sequence, self.stream_id = (
            stream_type,
            stream_sequence,
            stream_id,
        )


def _ref_activity(ref: ConversationRef, kind: str) -> Activity:
    return Activity(
        type=kind,
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


def _reference_message(
    ref: ConversationRef,
    text: str,
    entities: list[Entity],
    attachments: list[dict[str, Any]],
    channel_data: dict[str, Any] | None,
) -> dict[str, Any]:
    activity = _ref_activity(ref, ActivityTypes.message)
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
    result: dict[str, Any] = activity.serialize()
    return result


_text = st.text(max_size=40)
_json: Any = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)
_refs = st.builds(
    ConversationRef,
    bot_id=st.just(BotId("00000000-1111-4111-8111-222222222222")),
    service_url=st.sampled_from(["https://smba.trafficmanager.net/emea/", "http://127.0.0.1:1/"]),
    conversation_id=st.builds(ConversationId, st.text(min_size=1, max_size=20)),
    conversation_type=st.sampled_from(list(ConversationType)),
    tenant_id=st.none() | st.builds(TenantId, st.text(min_size=1, max_size=10)),
    channel_id=st.just("msteams"),
    bot_name=st.none() | _text,
    reply_to_id=st.none() | st.builds(ActivityId, st.text(min_size=1, max_size=10)),
)
_entity_data = st.dictionaries(
    st.sampled_from(["@type", "@context", "additionalType", "citation", "name"]), _json, max_size=4
).map(lambda d: {"type": "https://schema.org/Message", **d})
_attachments = st.lists(
    st.fixed_dictionaries(
        {"contentType": st.sampled_from(["application/vnd.microsoft.card.adaptive", "image/png"])},
        optional={"contentUrl": _text, "content": _json, "name": st.none() | _text},
    ),
    max_size=2,
)


@settings(max_examples=150, deadline=None)
@given(
    ref=_refs,
    text=_text,
    entities=st.lists(_entity_data, max_size=2),
    final=st.none() | st.text(min_size=1, max_size=8),
    attachments=_attachments,
    channel_data=st.none() | st.dictionaries(_text, _json, max_size=3),
)
def test_message_activities_match_botbuilder(
    ref: ConversationRef,
    text: str,
    entities: list[dict[str, Any]],
    final: str | None,
    attachments: list[dict[str, Any]],
    channel_data: dict[str, Any] | None,
) -> None:
    ours_entities = [open_entity(e) for e in entities]
    ref_entities: list[Entity] = [_OpenEntity(e) for e in entities]
    if final is not None:
        ours_entities.insert(0, stream_info(stream_type="final", stream_id=final))
        ref_entities.insert(
            0, _StreamInfo(stream_type="final", stream_sequence=None, stream_id=final)
        )
    ours = message_activity(
        ref, text, entities=ours_entities, attachments=attachments, channel_data=channel_data
    )
    expected = _reference_message(ref, text, ref_entities, attachments, channel_data)
    assert ours == expected
    assert list(ours) == list(expected)  # same key order: byte-identical up to whitespace
    assert json.loads(encode_activity(ours)) == expected


@settings(max_examples=100, deadline=None)
@given(
    ref=_refs,
    text=st.none() | _text,
    kind=st.none() | st.sampled_from(["informative", "streaming"]),
    seq=st.integers(1, 10_000),
    stream_id=st.none() | st.text(min_size=1, max_size=8),
)
def test_typing_activities_match_botbuilder(
    ref: ConversationRef, text: str | None, kind: str | None, seq: int, stream_id: str | None
) -> None:
    activity = _ref_activity(ref, ActivityTypes.typing)
    activity.text = text
    entities = None
    if kind is not None:
        activity.entities = [
            _StreamInfo(stream_type=kind, stream_sequence=seq, stream_id=stream_id)
        ]
        entities = [stream_info(stream_type=kind, stream_sequence=seq, stream_id=stream_id)]
    ours = typing_activity(ref, text=text, entities=entities)
    expected = activity.serialize()
    assert ours == expected
    assert list(ours) == list(expected)


def test_encoding_falls_back_for_what_orjson_refuses() -> None:
    lone = {"type": "message", "text": "half an emoji \ud83d", "channelData": {1: "x"}}
    assert json.loads(encode_activity(lone)) == {
        "type": "message",
        "text": "half an emoji \ud83d",
        "channelData": {"1": "x"},
    }
    plain = {"type": "message", "text": "grüße"}
    assert encode_activity(plain) == orjson.dumps(plain)
