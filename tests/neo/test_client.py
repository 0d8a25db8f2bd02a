"""NeoClient against the emulator over real loopback HTTP: calls, envelopes, error mapping."""

from __future__ import annotations

import email.utils
import socket
import time

import pytest
from pydantic import SecretStr

from relay.devtools.neo_emulator import NeoEmulator
from relay.domain import BotId, EventId, ModelTier, SessionId, TenantId
from relay.errors import (
    AmbiguousError,
    CredentialError,
    PermanentError,
    RetryableError,
    UpstreamError,
    UserFacingError,
)
from relay.neo.client import NeoAttachment, NeoClient
from relay.retry import parse_retry_after
from tests.neo.conftest import API_KEY

BOT = BotId("6b0a2a4e-1111-4c1c-9e55-000000000001")
TENANT = TenantId("0f1e2d3c-2222-4b4b-8a8a-000000000002")


async def _session(neo: NeoClient) -> SessionId:
    return (await neo.create_session(bot_id=BOT, inbound_tenant_id=TENANT, title="t")).session_id


async def test_create_session_sends_the_documented_body(
    neo: NeoClient, emulator: NeoEmulator
) -> None:
    session = await neo.create_session(bot_id=BOT, inbound_tenant_id=TENANT, title="Teams chat")
    assert session.session_id in emulator.sessions
    assert session.show_progress is True
    assert session.request_id
    sent = emulator.requests[-1]
    assert sent.json == {
        "managed_agent_key": "NEO_SUPPORT",
        "bot_id": BOT,
        "inbound_tenant_id": TENANT,
        "title": "Teams chat",
    }
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"
    answered = emulator.responses[-1]
    assert (answered.status, answered.request_id) == (201, session.request_id)


async def test_post_message_202_and_duplicate(neo: NeoClient, emulator: NeoEmulator) -> None:
    sid = await _session(neo)
    first = await neo.post_message(
        sid, message="hello", client_message_id="teams-1", model_tier=ModelTier.SMART
    )
    assert not first.duplicate
    assert first.chat_turn_id
    assert first.user_message_id
    assert first.request_id
    assert first.since_cursor == EventId("0-0")
    assert emulator.posted_messages[-1]["model_tier"] == "SMART"

    again = await neo.post_message(
        sid, message="hello", client_message_id="teams-1", model_tier=ModelTier.SMART
    )
    assert again.duplicate
    assert again.user_message_id == first.user_message_id
    assert again.chat_turn_id is None
    assert again.since_cursor is None
    assert len(emulator.posted_messages) == 1  # no new turn


async def test_post_message_attachments_omit_none_fields(
    neo: NeoClient, emulator: NeoEmulator
) -> None:
    sid = await _session(neo)
    attachments = [
        NeoAttachment(blob_path="chat/a.png", mime="image/png"),
        NeoAttachment(blob_path="chat/b.pdf", mime="application/pdf", filename="b.pdf", alt="B"),
    ]
    await neo.post_message(
        sid, message="", client_message_id="c", model_tier=ModelTier.FAST, attachments=attachments
    )
    assert emulator.requests[-1].json["attachments"] == [
        {"blob_path": "chat/a.png", "mime": "image/png"},
        {"blob_path": "chat/b.pdf", "mime": "application/pdf", "filename": "b.pdf", "alt": "B"},
    ]


async def test_archived_session_409_raises(neo: NeoClient) -> None:
    sid = await _session(neo)
    await neo.reset_session(sid)
    await neo.reset_session(sid)  # idempotent
    with pytest.raises(PermanentError) as info:
        await neo.post_message(sid, message="x", client_message_id="c", model_tier=ModelTier.FAST)
    assert (info.value.status, info.value.code) == (409, "session_archived")
    assert not isinstance(info.value, UserFacingError)


async def test_upload_and_put_blob_without_authorization(
    neo: NeoClient, emulator: NeoEmulator
) -> None:
    sid = await _session(neo)
    grant = await neo.upload_url(sid, content_type="image/png", filename="shot.png")
    assert grant.mime == "image/png"
    assert grant.max_image_bytes == 5 * 1024 * 1024
    await neo.put_blob(grant, b"\x89PNG...")
    assert emulator.blobs[grant.blob_path] == (b"\x89PNG...", "image/png")
    put = emulator.requests[-1]
    assert put.method == "PUT"
    assert "authorization" not in put.headers
    assert put.headers["x-ms-blob-type"] == "BlockBlob"


async def test_upload_refuses_unaccepted_type_and_oversized_image(neo: NeoClient) -> None:
    sid = await _session(neo)
    with pytest.raises(PermanentError) as info:
        await neo.upload_url(sid, content_type="application/x-msdownload", filename=None)
    assert (info.value.status, info.value.code) == (400, "validation_error")
    assert "image/png" in info.value.message
    grant = await neo.upload_url(sid, content_type="image/png", filename=None)
    small = type(grant)(grant.upload_url, grant.blob_path, grant.mime, max_image_bytes=3)
    with pytest.raises(PermanentError, match="at most 3"):
        await neo.put_blob(small, b"four")


async def test_install_event_branding(emulator: NeoEmulator, neo: NeoClient) -> None:
    emulator.branding[(BOT, TENANT)] = {"display_name": "Acme IT", "welcome_message": "Hi!"}
    matched = await neo.install_event(bot_id=BOT, end_client_tenant_id=TENANT)
    assert (matched.display_name, matched.matched, matched.welcome_message) == (
        "Acme IT",
        True,
        "Hi!",
    )
    other = await neo.install_event(bot_id=BOT, end_client_tenant_id=TenantId("other"))
    assert other.matched is False


async def test_til_decision_records_and_409_when_already_decided(
    emulator: NeoEmulator, neo: NeoClient
) -> None:
    data = await neo.til_decision(
        "42", action="approve", acting_end_user="aad-1", acting_end_user_name="Ann"
    )
    assert data["id"] == 42
    assert data["status"] == "APPROVED"
    assert emulator.til_decisions["42"] == {
        "action": "approve",
        "acting_end_user": "aad-1",
        "acting_end_user_name": "Ann",
    }
    with pytest.raises(PermanentError) as info:
        await neo.til_decision(
            "42", action="reject", acting_end_user=None, acting_end_user_name=None
        )
    assert info.value.status == 409
    emulator.til_forbidden.add("7")
    with pytest.raises(CredentialError):
        await neo.til_decision(
            "7", action="approve", acting_end_user=None, acting_end_user_name=None
        )


async def test_429_with_retry_after_seconds(emulator: NeoEmulator, neo: NeoClient) -> None:
    emulator.fail_next("create_session", 429, code="rate_limited", retry_after=7)
    with pytest.raises(RetryableError) as info:
        await _session(neo)
    err = info.value
    assert (err.service, err.status, err.code, err.retry_after) == ("neo", 429, "rate_limited", 7)
    assert err.request_id
    await _session(neo)  # the fault was consumed


async def test_429_with_retry_after_http_date(emulator: NeoEmulator, neo: NeoClient) -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    emulator.fail_next("post_message", 429, retry_after=when)
    sid = await _session(neo)
    with pytest.raises(RetryableError) as info:
        await neo.post_message(sid, message="x", client_message_id="c", model_tier=ModelTier.FAST)
    assert info.value.retry_after is not None
    assert 25 <= info.value.retry_after <= 31


def test_parse_retry_after() -> None:
    assert parse_retry_after("2.5") == 2.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480 - 10) == 10
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


async def test_5xx_on_idempotent_calls_is_retryable(emulator: NeoEmulator, neo: NeoClient) -> None:
    emulator.fail_next("reset", 500, code="internal")
    sid = await _session(neo)
    with pytest.raises(RetryableError) as info:
        await neo.reset_session(sid)
    assert (info.value.status, info.value.code) == (500, "internal")


async def test_500_on_a_create_is_ambiguous_but_503_is_retryable(
    emulator: NeoEmulator, neo: NeoClient
) -> None:
    emulator.fail_next("create_session", 500)
    with pytest.raises(AmbiguousError) as info:
        await _session(neo)
    assert info.value.status == 500
    emulator.fail_next("post_message", 503, retry_after=1)
    sid = await _session(neo)
    with pytest.raises(RetryableError) as retry:
        await neo.post_message(sid, message="x", client_message_id="c", model_tier=ModelTier.FAST)
    assert retry.value.retry_after == 1


async def test_401_is_a_credential_error_without_the_key(emulator: NeoEmulator) -> None:
    assert emulator.base_url
    async with NeoClient(emulator.base_url, SecretStr("neo_sk_test_WrongKey12345678")) as bad:
        with pytest.raises(CredentialError) as info:
            await _session(bad)
    assert info.value.status == 401
    assert info.value.code == "UNAUTHORIZED"
    assert "WrongKey" not in str(info.value)
    assert "WrongKey" not in repr(info.value)


async def test_end_company_not_mapped_is_user_facing_and_verbatim(
    emulator: NeoEmulator, neo: NeoClient
) -> None:
    emulator.unmapped_tenants.add(TENANT)
    with pytest.raises(UserFacingError) as info:
        await _session(neo)
    assert info.value.message == emulator.unmapped_message
    assert info.value.status == 409


async def test_error_codes_compared_case_insensitively(
    emulator: NeoEmulator, neo: NeoClient
) -> None:
    emulator.fail_next("create_session", 409, code="END_COMPANY_NOT_MAPPED", message="Ask IT.")
    with pytest.raises(UserFacingError, match=r"Ask IT\."):
        await _session(neo)


async def test_other_4xx_is_permanent(emulator: NeoEmulator, neo: NeoClient) -> None:
    with pytest.raises(PermanentError) as info:
        await neo.reset_session(SessionId("does-not-exist"))
    assert (info.value.status, info.value.code) == (404, "not_found")


async def test_non_json_error_body(emulator: NeoEmulator, neo: NeoClient) -> None:
    emulator.fail_next("upload", 502, raw_body="<html><h1>Bad Gateway</h1></html>")
    sid = await _session(neo)
    with pytest.raises(RetryableError) as info:
        await neo.upload_url(sid, content_type="image/png", filename=None)
    assert info.value.status == 502
    assert "non-JSON" in info.value.message
    assert "<html>" not in str(info.value)
    assert info.value.request_id  # from the X-Request-Id header


async def test_connection_refused_is_retryable() -> None:
    with socket.socket() as sock:  # grab a free port, then close it: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with NeoClient(f"http://127.0.0.1:{port}", SecretStr(API_KEY), connect_timeout=1) as c:
        with pytest.raises(RetryableError) as info:
            await _session(c)
    assert info.value.code == "connect_failed"
    assert API_KEY not in str(info.value)


async def test_read_timeout_on_a_create_is_ambiguous(emulator: NeoEmulator) -> None:
    assert emulator.base_url
    async with NeoClient(emulator.base_url, SecretStr(API_KEY), request_timeout=0.2) as c:
        sid = await _session(c)
        emulator.hang_next("create_session", 1.0)
        with pytest.raises(AmbiguousError) as info:
            await _session(c)
        assert info.value.code == "transport_error"
        emulator.hang_next("reset", 1.0)  # the same failure on an idempotent call
        with pytest.raises(RetryableError):
            await c.reset_session(sid)
        emulator.hang_before_first_byte(1.0)
        with pytest.raises(RetryableError):  # a GET is idempotent too
            async for _ in c.tail(sid, since=None, read_timeout=0.2):
                pass


async def test_api_key_never_in_any_error_text(emulator: NeoEmulator, neo: NeoClient) -> None:
    errors: list[UpstreamError] = []
    for status in (400, 401, 403, 409, 429, 500):
        emulator.fail_next("create_session", status, message=f"echo {API_KEY}")
        with pytest.raises(UpstreamError) as info:
            await _session(neo)
        errors.append(info.value)
    for err in errors:
        assert API_KEY not in str(err)
        assert API_KEY not in repr(err)
        assert "***" in err.message


async def test_tail_yields_frames_with_ids(neo: NeoClient) -> None:
    sid = await _session(neo)
    posted = await neo.post_message(
        sid, message="hi", client_message_id="c", model_tier=ModelTier.FAST
    )
    frames = [f async for f in neo.tail(sid, posted.since_cursor)]
    assert frames[-1].data == "[DONE]"
    assert all(f.id for f in frames)
    assert len({f.id for f in frames}) == len(frames)


async def test_tail_4xx_is_permanent(emulator: NeoEmulator, neo: NeoClient) -> None:
    emulator.fail_next("events", 404, code="not_found")
    with pytest.raises(PermanentError):
        async for _ in neo.tail(SessionId("x"), None):
            pass


async def test_ambiguous_create_on_dropped_response(emulator: NeoEmulator) -> None:
    """A create whose response never arrives may have happened: AmbiguousError, not Retryable."""
    assert emulator.base_url
    emulator.fail_next("create_session", 200, raw_body="not json at all")
    async with NeoClient(emulator.base_url, SecretStr(API_KEY)) as c:
        with pytest.raises(AmbiguousError) as info:
            await _session(c)
    assert info.value.code == "invalid_response"
