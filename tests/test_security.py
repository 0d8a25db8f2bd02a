"""The bot's token goes only to allowed hosts, and no secret ever reaches a log line.

DESIGN.md invariant 7; reference peers-and-pitfalls.md §1 ("Inbound auth": a forged ``serviceUrl``
is the classic way to make a bot leak its token) and teams-platform.md §5. The forged-serviceUrl
cases use a recording server on 127.0.0.1 that is *not* on the allow-list (the allow-list is
narrowed to the Teams emulator's own port), so any request it receives is a leak. The
``relay serve`` subprocess's stderr is scanned the same way in ``test_recovery_process.py``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from relay.domain import BotId, Turn, TurnState
from relay.teams.inbound import parse_activity, to_turn
from tests.fakes.harness import BOT_A, BOT_B, NEO_KEY, Harness, close_harness, make_harness
from tests.test_reliability import _echo


class Recorder:
    """A loopback HTTP server that records every request it gets (any path, any method)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str | None]] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _any(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path, request.headers.get("Authorization")))
        return web.json_response({"id": "leaked"}, status=201)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._any)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def narrowed(tmp_path: Path) -> AsyncIterator[tuple[Harness, Recorder]]:
    """A harness whose allow-list admits only the Teams emulator's port, plus a recorder."""
    h = await make_harness(tmp_path)
    recorder = Recorder()
    await recorder.start()
    try:
        await h.stop_relay()
        port = h.service_url.rstrip("/").rsplit(":", 1)[1]
        allow = (f"http://127.0.0.1:{port}",)
        h.settings = h.settings.model_copy(update={"service_url_allowlist": allow})
        await h.start_relay()
        h.neo.script = _echo
        yield h, recorder
    finally:
        await recorder.stop()
        await close_harness(h)


async def test_forged_service_url_with_a_valid_token_is_refused_before_any_call(
    narrowed: tuple[Harness, Recorder],
) -> None:
    h, recorder = narrowed
    act = h.activity(BOT_A, "send your token to me", serviceUrl=recorder.url)
    # A token that really was issued for this serviceUrl: authentication alone would pass.
    token = h.issuer.sign(BOT_A.app_id, recorder.url)
    resp = await h.deliver(act, token=token)
    assert resp.status == 403
    # The allowed serviceUrl still works, so the refusal above was the allow-list's doing.
    ok = h.activity(BOT_A, "legit")
    assert (await h.deliver(ok, bot=BOT_A)).status == 200
    await h.wait_for(lambda: h.teams.messages(), 10, "the legit answer")
    await h.wait_idle()
    assert recorder.requests == []
    assert [m["message"] for m in h.neo.posted_messages] == ["legit"]


async def test_a_journaled_turn_with_a_foreign_service_url_never_sends_its_token(
    narrowed: tuple[Harness, Recorder],
) -> None:
    """Defence in depth: the connector checks again, e.g. for a turn journaled before the
    allow-list was tightened and resumed at start-up."""
    h, recorder = narrowed
    act = h.activity(BOT_A, "journaled earlier", serviceUrl=recorder.url)
    turn = to_turn(parse_activity(act), BotId(BOT_A.app_id))
    assert isinstance(turn, Turn)
    store = h.components.store
    assert await store.add_turn(turn)
    h.components.worker.submit(turn)
    await h.wait_idle()
    assert recorder.requests == []
    done = await store.get_turn(turn.turn_id)
    assert done is not None
    assert done.state is TurnState.FAILED  # ended, not stuck, and nothing sent anywhere


async def test_no_secret_in_any_log_line_of_a_whole_conversation(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    h = harness
    h.neo.script = _echo
    outbound: set[str] = set()
    verify = h.teams.verify_token
    assert verify is not None

    def recording_verify(token: str) -> str:
        outbound.add(token)
        return verify(token)

    h.teams.verify_token = recording_verify
    inbound: list[str] = []
    caplog.set_level(logging.DEBUG)
    conv = "a:secrets-1:1"
    for i, text in enumerate(["first question", "second question", "third question"]):
        act = h.activity(BOT_A, text, conversation_id=conv)
        token = h.issuer.sign(BOT_A.app_id, act["serviceUrl"])
        inbound.append(token)
        assert (await h.deliver(act, token=token)).status == 200
        await h.wait_for(lambda n=i: len(h.teams.messages(conv)) > n, 10, f"answer {i}")
    # An error turn (Neo keeps failing), in a group chat of the other bot.
    h.neo.fail_next("post_message", 503, times=10)
    act = h.activity(BOT_B, "this one fails", conversation_type="groupChat")
    token = h.issuer.sign(BOT_B.app_id, act["serviceUrl"])
    inbound.append(token)
    assert (await h.deliver(act, token=token)).status == 200
    await h.wait_for(lambda: h.teams.messages(act["conversation"]["id"]), 10, "the error")
    # A forged token (wrong key) and an expired one: logged as rejections, never verbatim.
    for bad in (
        h.issuer.foreign_key_token(BOT_A.app_id, act["serviceUrl"]),
        h.issuer.expired_token(BOT_A.app_id, act["serviceUrl"]),
    ):
        inbound.append(bad)
        assert (await h.deliver(dict(act, id="bad"), token=bad)).status == 401
    await h.wait_idle()

    assert outbound, "the Teams emulator saw the relay's bot tokens"
    secrets = [NEO_KEY, BOT_A.secret, BOT_B.secret, *inbound, *outbound]
    lines = [caplog.text]
    for record in caplog.records:
        lines.append(record.getMessage())
        lines.append(repr(record.__dict__))
    everything = "\n".join(lines)
    assert len(caplog.records) > 20
    assert any(r.levelno == logging.DEBUG for r in caplog.records)
    for secret in secrets:
        assert secret not in everything
        if secret.count(".") == 2:  # a JWT: not even its signature alone
            assert secret.rsplit(".", 1)[1] not in everything
