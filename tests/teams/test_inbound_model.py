"""The light inbound model reads every field the relay uses exactly as botbuilder's msrest did.

botbuilder's ``Activity().deserialize`` is the oracle: for generated Teams-shaped activities each
field the webhook reads must agree; bodies msrest refused, or that have no usable shape, are 400s.
"""

from __future__ import annotations

from typing import Any

import pytest
from botbuilder.schema import Activity
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.errors import InboundError
from relay.teams.inbound import parse_activity, tenant_of
from relay.teams.inbound_model import parse_inbound

_text = st.text(max_size=30)
_scalar = st.none() | _text | st.integers(-1000, 1000)
_json: Any = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=6,
)
_account = st.fixed_dictionaries(
    {}, optional={"id": _scalar, "name": _scalar, "aadObjectId": _scalar, "role": _scalar}
)
_conversation = st.fixed_dictionaries(
    {"id": st.text(min_size=1, max_size=20)},
    optional={
        "conversationType": st.sampled_from(["personal", "groupChat", "channel"]),
        "isGroup": st.booleans(),
        "tenantId": _scalar,
        "tenantID": _scalar,
        "name": _text,
    },
)
_entity = st.fixed_dictionaries(
    {"type": st.sampled_from(["mention", "clientInfo", "https://schema.org/Message"])},
    optional={"mentioned": _account, "text": _text, "locale": _text, "extra": _json},
)
_attachment = st.fixed_dictionaries(
    {},
    optional={
        "contentType": st.sampled_from(["image/png", "text/html", "application/pdf"]),
        "contentUrl": _text,
        "content": _json,
        "name": _scalar,
    },
)
_activity = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["message", "invoke", "conversationUpdate", "installationUpdate"]),
        "conversation": _conversation,
    },
    optional={
        "id": _scalar,
        "channelId": st.sampled_from(["msteams", "webchat"]),
        "serviceUrl": st.just("https://smba.trafficmanager.net/emea/"),
        "text": _scalar,
        "action": _scalar,
        "name": _scalar,
        "replyToId": _scalar,
        "value": _json,
        "channelData": _json,
        "from": _account,
        "recipient": _account,
        "membersAdded": st.lists(_account, max_size=3),
        "entities": st.lists(_entity, max_size=3),
        "attachments": st.lists(st.none() | _attachment, max_size=3),
        "timestamp": st.just("2026-12-05T08:00:00.000Z"),
        "locale": _text,
    },
)


def _account_fields(account: Any) -> Any:
    if account is None:
        return None
    return (account.id, account.name, account.aad_object_id, account.role)


@settings(max_examples=300, deadline=None)
@given(body=_activity)
def test_every_field_the_relay_reads_matches_botbuilder(body: dict[str, Any]) -> None:
    ours = parse_inbound(body)
    theirs = Activity().deserialize(body)
    for name in ("type", "id", "channel_id", "service_url", "text", "action", "name"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert ours.reply_to_id == theirs.reply_to_id
    assert ours.value == theirs.value
    assert ours.channel_data == theirs.channel_data
    conv, their_conv = ours.conversation, theirs.conversation
    assert (conv.id, conv.conversation_type, conv.is_group) == (
        their_conv.id,
        their_conv.conversation_type,
        their_conv.is_group,
    )
    extra = their_conv.additional_properties or {}
    tenant = extra.get("tenantId") or their_conv.tenant_id  # what tenant_of read, then str()
    assert conv.tenant_id == (None if tenant is None else str(tenant))
    assert _account_fields(ours.from_property) == _account_fields(theirs.from_property)
    assert _account_fields(ours.recipient) == _account_fields(theirs.recipient)
    assert [_account_fields(m) for m in ours.members_added] == [
        _account_fields(m) for m in theirs.members_added or []
    ]
    assert [(e.type, e.additional_properties) for e in ours.entities] == [
        (e.type, e.additional_properties or {}) for e in theirs.entities or []
    ]
    assert [(a.content_type, a.content_url, a.content, a.name) for a in ours.attachments] == [
        (a.content_type, a.content_url, a.content, a.name)
        for a in theirs.attachments or []
        if a is not None
    ]


def test_the_tenant_falls_back_to_channel_data() -> None:
    body = {
        "type": "message",
        "conversation": {"id": "a:1"},
        "channelData": {"tenant": {"id": "t-1"}},
    }
    assert tenant_of(parse_activity(body)) == "t-1"
    body["conversation"] = {"id": "a:1", "tenantId": "t-2"}
    assert tenant_of(parse_activity(body)) == "t-2"


@pytest.mark.parametrize(
    "patch",
    [
        {"conversation": "a:1"},
        {"from": ["29:x"]},
        {"recipient": 5},
        {"entities": {"type": "mention"}},
        {"attachments": ["image/png"]},
        {"membersAdded": [1]},
        {"text": {"nested": True}},
        {"conversation": {"id": "a:1", "isGroup": "maybe"}},
        {"conversation": {}},
        {"type": ""},
        {"type": None},
    ],
)
def test_bodies_that_are_not_activities_are_refused(patch: dict[str, Any]) -> None:
    body = {"type": "message", "id": "1", "conversation": {"id": "a:1"}, **patch}
    with pytest.raises(InboundError) as info:
        parse_activity(body)
    assert info.value.status == 400
