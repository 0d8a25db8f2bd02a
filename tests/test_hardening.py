"""End to end: what ``POST /api/messages`` refuses, and where ``/metrics`` is (issue 16).

Real relay on loopback with the token issuer, Neo and Teams emulators. Each refusal is checked
for its status *and* for having reached nothing: no Neo call, no journaled turn, no Teams post.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from relay.domain import ActivityId, BotId, ConversationId, ConversationRef, ConversationType
from relay.teams.connector import _conversation_url, path_segment
from tests.fakes.harness import BOT_A, Harness, answer_script, close_harness, make_harness


async def _post_raw(h: Harness, data: bytes, *, service_url: str | None = None) -> int:
    assert h.http is not None
    token = h.issuer.sign(BOT_A.app_id, service_url or h.service_url)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    async with h.http.post(f"{h.relay_url}/api/messages", data=data, headers=headers) as resp:
        await resp.read()
        return resp.status


async def _nothing_reached(h: Harness, conv: str) -> None:
    await h.wait_idle()
    assert h.neo.requests == []
    assert h.teams.received == []
    store = h.components.store
    assert await store.conversation_turns(BotId(BOT_A.app_id), ConversationId(conv)) == []


@pytest.mark.parametrize("channel", ["webchat", "directline", "emulator"])
async def test_another_channel_with_a_valid_token_gets_403_and_never_reaches_neo(
    harness: Harness, channel: str
) -> None:
    h = harness
    act = h.activity(BOT_A, "hello from the web", conversation_id="a:web-1", channelId=channel)
    # A genuine token for that channel: signed by a key Bot Framework endorses for it.
    kid = h.issuer.add_key(endorsements=(channel,))
    token = h.issuer.sign(BOT_A.app_id, h.service_url, kid=kid)
    assert (await h.deliver(act, token=token)).status == 403
    await _nothing_reached(h, "a:web-1")


async def test_a_channel_listed_in_relay_channels_is_served(tmp_path: Path) -> None:
    h = await make_harness(tmp_path, channels="msteams,webchat")
    try:
        h.neo.script = answer_script
        act = h.activity(BOT_A, "hello", conversation_id="a:web-2", channelId="webchat")
        kid = h.issuer.add_key(endorsements=("webchat",))
        token = h.issuer.sign(BOT_A.app_id, h.service_url, kid=kid)
        assert (await h.deliver(act, token=token)).status == 200
        await h.wait_for(lambda: bool(h.teams.messages("a:web-2")), what="the answer")
    finally:
        await close_harness(h)


async def test_metrics_are_on_their_own_listener_only(harness: Harness) -> None:
    h = harness
    assert h.http is not None
    async with h.http.get(f"{h.relay_url}/metrics") as resp:
        assert resp.status == 404
    assert h.metrics_url.startswith("http://127.0.0.1:")
    assert not h.metrics_url.startswith(h.relay_url)
    async with h.http.get(h.metrics_url) as resp:
        assert resp.status == 200
        text = await resp.text()
    assert "relay_turns_total" in text
    assert "relay_feedback_total" in text or "# TYPE relay_feedback_total" in text
    # The probes stay on the public port.
    async with h.http.get(f"{h.relay_url}/healthz") as resp:
        assert resp.status == 200


async def test_nesting_deeper_than_the_bound_is_a_400_even_before_authentication(
    harness: Harness,
) -> None:
    h = harness
    assert h.http is not None
    for deep in (b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 5_000 + b"1" + b"}" * 5_000):
        async with h.http.post(
            f"{h.relay_url}/api/messages", data=deep, headers={"Content-Type": "application/json"}
        ) as resp:
            assert resp.status == 400
            assert "deeper" in (await resp.json())["error"]


@pytest.mark.parametrize(
    ("field", "value", "status"),
    [
        ("serviceUrl", None, 400),
        ("serviceUrl", "__missing__", 400),
        ("serviceUrl", 42, 400),
        ("serviceUrl", "ftp://127.0.0.1/", 400),
        ("conversation", {"id": ".."}, 400),
        ("conversation", {"id": "."}, 400),
        ("conversation", {"id": "x" * 10_000}, 400),
        ("conversation", {"id": "a\u0000b"}, 400),
        ("conversation", {"id": 7}, 400),
        ("id", "y" * 5_000, 400),
        ("from", {"id": "29:\u0007"}, 400),
    ],
)
async def test_unusable_ids_and_service_urls_are_refused_before_anything_is_called(
    harness: Harness, field: str, value: object, status: int
) -> None:
    h = harness
    act = h.activity(BOT_A, "hi", conversation_id="a:hostile")
    if value == "__missing__":
        del act[field]
    else:
        act[field] = value
    assert await _post_raw(h, json.dumps(act).encode()) == status
    await _nothing_reached(h, "a:hostile")


async def test_lone_surrogates_are_repaired_and_the_message_is_answered(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    h = harness
    h.neo.script = answer_script
    conv = "a:surrogate\ud800"
    act = h.activity(BOT_A, "broken \ud83d text \udc00 here", conversation_id=conv)
    act["from"]["name"] = "Zo\ud800e"
    caplog.set_level(logging.DEBUG)
    assert await _post_raw(h, json.dumps(act).encode()) == 200  # "\\ud800" escapes on the wire
    repaired = "a:surrogate\ufffd"
    await h.wait_for(lambda: bool(h.teams.messages(repaired)), what="the answer")
    [posted] = h.neo.posted_messages
    assert posted["message"] == "broken \ufffd text \ufffd here"
    assert not [r for r in caplog.records if r.exc_info]


def test_ids_always_become_one_url_path_segment() -> None:
    assert path_segment("..") == "%2E%2E"
    assert path_segment(".") == "%2E"
    assert path_segment("a/b") == "a%2Fb"
    assert path_segment("19:x@thread.v2") == "19%3Ax%40thread.v2"  # dots inside stay
    ref = ConversationRef(
        bot_id=BotId("b"),
        service_url="https://smba.trafficmanager.net/emea/",
        conversation_id=ConversationId(".."),
        conversation_type=ConversationType.PERSONAL,
        tenant_id=None,
    )
    url = _conversation_url(ref, "activities", path_segment(ActivityId("..")))
    assert url.raw_path == "/emea/v3/conversations/%2E%2E/activities/%2E%2E"
    assert url.host == "smba.trafficmanager.net"


async def test_a_malformed_http_request_is_a_400_without_a_traceback_in_the_logs(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    h = harness
    assert h.http is not None
    caplog.set_level(logging.DEBUG)
    headers = {"Content-Type": "application/json", "Authorization": "Bearer " + "x" * 20_000}
    async with h.http.post(f"{h.relay_url}/api/messages", data=b"{}", headers=headers) as resp:
        assert resp.status == 400
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert any("malformed HTTP request: LineTooLong" in r.getMessage() for r in caplog.records)
