"""End to end: Teams activity → Neo session → Neo turn → SSE tail → answer in the same conversation.

Everything runs over real HTTP on loopback (see tests/fakes/harness.py); botbuilder's real JWT
validation checks every inbound token, msal really fetches every outbound token, and the Teams
connector emulator checks those tokens on every post.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from relay.devtools.neo_emulator_streams import TurnInput
from tests.fakes.harness import BOT_A, BOT_B, Harness, close_harness, make_harness


def _answer_for(text: str) -> list[dict[str, object]]:
    return [
        {"type": "start", "messageId": "m1"},
        {"type": "start-step"},
        {"type": "text-start", "id": "t"},
        {"type": "text-delta", "id": "t", "delta": "Answer to: "},
        {"type": "text-delta", "id": "t", "delta": text},
        {"type": "text-end", "id": "t"},
        {"type": "finish-step"},
        {"type": "finish", "finishReason": "stop"},
    ]


def _script(turn: TurnInput) -> list[dict[str, object]]:
    return _answer_for(turn.message)


async def test_two_bots_each_answered_in_their_own_conversation(harness: Harness) -> None:
    harness.neo.script = _script
    a = harness.activity(BOT_A, "hello from A", conversation_id="a:conv-A")
    b = harness.activity(BOT_B, "hello from B", conversation_id="a:conv-B")
    assert (await harness.deliver(a, bot=BOT_A)).status == 200
    assert (await harness.deliver(b, bot=BOT_B)).status == 200
    await harness.wait_for(lambda: len(harness.teams.messages()) == 2, what="two answers")

    [msg_a] = harness.teams.messages("a:conv-A")
    [msg_b] = harness.teams.messages("a:conv-B")
    assert msg_a["text"].startswith("Answer to: hello from A")
    assert msg_b["text"].startswith("Answer to: hello from B")
    # Each answer went out with its own bot's token and identity.
    by_conv = {
        r.conversation_id: r for r in harness.teams.received if r.activity.get("type") == "message"
    }
    assert by_conv["a:conv-A"].app_id == BOT_A.app_id
    assert by_conv["a:conv-B"].app_id == BOT_B.app_id
    assert msg_a["from"]["id"] == BOT_A.recipient_id
    # Sessions were created as the platform caller, with bot and tenant routing fields.
    sessions = [r.json for r in harness.neo.requests if r.path == "/public-api/chat/sessions"]
    assert {(s["bot_id"], s["inbound_tenant_id"], s["managed_agent_key"]) for s in sessions} == {
        (BOT_A.app_id, BOT_A.tenant_id, "NEO_SUPPORT"),
        (BOT_B.app_id, BOT_B.tenant_id, "NEO_SUPPORT"),
    }
    assert harness.teams.violations == []


async def test_bad_tokens_are_401_and_the_relay_keeps_serving(harness: Harness) -> None:
    issuer = harness.issuer
    act = harness.activity(BOT_A, "hi")
    url = act["serviceUrl"]
    other_url = "http://127.0.0.1:1/elsewhere/"
    cases: dict[str, str | None] = {
        "missing header": "",
        "garbage": "not-a-jwt",
        "foreign key": issuer.foreign_key_token(BOT_A.app_id, url),
        "unknown kid": issuer.unknown_kid_token(BOT_A.app_id, url),
        "expired": issuer.expired_token(BOT_A.app_id, url),
        "wrong issuer": issuer.sign(BOT_A.app_id, url, issuer="https://evil.example"),
        "unregistered audience": issuer.sign("deadbeef-0000-0000-0000-000000000000", url),
        "serviceurl mismatch": issuer.sign(BOT_A.app_id, other_url),
        "endorsement mismatch": issuer.unendorsed_token(BOT_A.app_id, url),
        "token for another bot": issuer.sign(BOT_B.app_id, url),
    }
    for name, token in cases.items():
        resp = await harness.deliver(dict(act, id=f"bad-{name}"), token=token)
        assert resp.status == 401, name
    # Nothing reached Neo, and a good request still works.
    assert harness.neo.posted_messages == []
    assert (await harness.deliver(act, bot=BOT_A)).status == 200
    await harness.wait_for(lambda: len(harness.teams.messages()) == 1, what="the answer")


async def test_malformed_requests_get_clear_4xx(harness: Harness) -> None:
    assert harness.http is not None
    url = f"{harness.relay_url}/api/messages"
    async with harness.http.post(url, data="{}", headers={"Content-Type": "text/plain"}) as r:
        assert r.status == 415
    async with harness.http.post(
        url, data="{not json", headers={"Content-Type": "application/json"}
    ) as r:
        assert r.status == 400
    async with harness.http.post(
        url, data="[1,2]", headers={"Content-Type": "application/json"}
    ) as r:
        assert r.status == 400
    huge = b'{"text": "' + b"x" * (harness.settings.max_body_bytes + 10) + b'"}'
    async with harness.http.post(url, data=huge, headers={"Content-Type": "application/json"}) as r:
        assert r.status == 413
    async with harness.http.get(f"{harness.relay_url}/healthz") as r:
        assert r.status == 200
    async with harness.http.get(f"{harness.relay_url}/readyz") as r:
        assert r.status == 200


async def test_redelivered_activity_makes_one_turn_and_one_answer(harness: Harness) -> None:
    harness.neo.script = _script
    act = harness.activity(BOT_A, "only once please")
    statuses = [(await harness.deliver(act, bot=BOT_A)).status for _ in range(3)]
    assert statuses == [200, 200, 200]
    await harness.wait_for(lambda: len(harness.teams.messages()) == 1, what="the answer")
    await harness.wait_idle()
    await asyncio.sleep(0.2)
    assert len(harness.neo.posted_messages) == 1
    assert len(harness.teams.messages()) == 1


async def test_ack_is_immediate_while_neo_takes_20_seconds(tmp_path: Path) -> None:
    h = await make_harness(tmp_path, shutdown_grace=0.2)
    try:
        h.neo.first_chunk_delay = 20.0
        act = h.activity(BOT_A, "slow question")
        started = time.perf_counter()
        resp = await h.deliver(act, bot=BOT_A)
        elapsed = time.perf_counter() - started
        assert resp.status == 200
        assert elapsed < 0.5, f"inbound answered after {elapsed:.3f}s"
        await h.wait_for(lambda: len(h.neo.posted_messages) == 1, what="the turn to be posted")
        assert h.teams.messages() == []  # still waiting for Neo, in the background
    finally:
        await close_harness(h)


async def test_second_turn_reuses_session_and_passes_new_since_cursor(harness: Harness) -> None:
    harness.neo.script = _script
    conv = "a:conv-two-turns"
    await harness.deliver(harness.activity(BOT_A, "first", conversation_id=conv), bot=BOT_A)
    await harness.wait_for(lambda: len(harness.teams.messages(conv)) == 1, what="first answer")
    await harness.deliver(harness.activity(BOT_A, "second", conversation_id=conv), bot=BOT_A)
    await harness.wait_for(lambda: len(harness.teams.messages(conv)) == 2, what="second answer")

    creates = [r for r in harness.neo.requests if r.path == "/public-api/chat/sessions"]
    assert len(creates) == 1
    texts = [m["text"] for m in harness.teams.messages(conv)]
    assert texts[0].startswith("Answer to: first")
    assert texts[1].startswith("Answer to: second")
    assert "first" not in texts[1]  # the second tail started after the first turn's events
    tails = [r for r in harness.neo.requests if r.path.endswith("/events")]
    sinces = [r.query.get("since") for r in tails]
    assert len(sinces) == 2
    assert sinces[1] is not None
    assert sinces[1] != sinces[0]


async def test_end_company_not_mapped_is_shown_verbatim_without_retry(harness: Harness) -> None:
    harness.neo.unmapped_tenants.add(BOT_A.tenant_id)
    await harness.deliver(harness.activity(BOT_A, "hi"), bot=BOT_A)
    await harness.wait_for(lambda: len(harness.teams.messages()) == 1, what="the error message")
    [msg] = harness.teams.messages()
    assert msg["text"] == harness.neo.unmapped_message
    creates = [r for r in harness.neo.requests if r.path == "/public-api/chat/sessions"]
    assert len(creates) == 1


@pytest.mark.parametrize("status", [500, 400])
async def test_neo_failure_gives_a_readable_message_with_request_id(
    harness: Harness, status: int
) -> None:
    harness.neo.fail_next("post_message", status, times=10)
    await harness.deliver(harness.activity(BOT_A, "hi"), bot=BOT_A)
    await harness.wait_for(
        lambda: len(harness.teams.messages()) == 1, timeout=15, what="the error message"
    )
    [msg] = harness.teams.messages()
    failed = [r for r in harness.neo.responses if r.path.endswith("/messages")][-1]
    assert "couldn't get an answer" in msg["text"]
    assert failed.request_id
    assert failed.request_id in msg["text"]
