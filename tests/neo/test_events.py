"""tail_turn over real loopback SSE: resume after cuts, since semantics, timeouts, tolerance."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from pydantic import SecretStr

from relay.devtools.neo_emulator import NeoEmulator
from relay.devtools.neo_emulator_streams import TurnInput, echo_script, fixture_script
from relay.domain import BotId, EventId, ModelTier, ReplyOutcome, SessionId
from relay.errors import AmbiguousError, CredentialError, PermanentError, RetryableError
from relay.neo.chunks import assemble
from relay.neo.client import NeoClient
from relay.neo.events import TailLimits, tail_turn
from tests.neo.conftest import API_KEY

LIMITS = TailLimits(
    first_byte=2.0,
    idle=2.0,
    total=10.0,
    max_reconnects=10,
    backoff_base=0.01,
    backoff_cap=0.05,
    terminal_grace=0.3,
)
LONG_MESSAGE = " ".join(f"word{i}" for i in range(40))


def expected_text(message: str) -> str:
    turn = TurnInput("s", message, "FAST", [], None, None)
    return assemble(echo_script(turn)).text


async def post(neo: NeoClient, message: str, cmid: str = "c1") -> tuple[SessionId, EventId | None]:
    session = await neo.create_session(bot_id=BotId("b"), inbound_tenant_id=None, title="t")
    posted = await neo.post_message(
        session.session_id, message=message, client_message_id=cmid, model_tier=ModelTier.FAST
    )
    return session.session_id, posted.since_cursor


async def collect(
    neo: NeoClient, sid: SessionId, since: EventId | None, limits: TailLimits = LIMITS
) -> tuple[list[dict[str, Any]], list[EventId]]:
    ids: list[EventId] = []

    async def remember(event_id: EventId) -> None:
        ids.append(event_id)

    chunks = [
        c async for c in tail_turn(neo, sid, since=since, limits=limits, on_event_id=remember)
    ]
    return chunks, ids


def event_requests(emulator: NeoEmulator) -> list[Any]:
    return [r for r in emulator.requests if r.path.endswith("/events")]


async def test_stream_cut_five_times_gives_exact_text(
    emulator: NeoEmulator, neo: NeoClient
) -> None:
    emulator.chunk_delay = 0.002
    emulator.drop_stream_after(4, times=5)
    sid, since = await post(neo, LONG_MESSAGE)

    chunks, ids = await collect(neo, sid, since)

    turn = TurnInput(sid, LONG_MESSAGE, "FAST", [], None, None)
    assert chunks == echo_script(turn)  # every chunk exactly once, in order
    assert assemble(chunks).text == expected_text(LONG_MESSAGE)
    assert len(ids) == len(set(ids))
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))
    tails = event_requests(emulator)
    assert len(tails) == 6
    assert "last-event-id" not in tails[0].headers
    assert all(r.headers.get("last-event-id") for r in tails[1:])


async def test_second_turn_starts_strictly_after_the_first(
    emulator: NeoEmulator, neo: NeoClient
) -> None:
    sid, since = await post(neo, "first question")
    first, _ = await collect(neo, sid, since)
    assert assemble(first).text == expected_text("first question")

    posted = await neo.post_message(
        sid, message="second question", client_message_id="c2", model_tier=ModelTier.FAST
    )
    assert posted.since_cursor is not None
    assert posted.since_cursor != since
    second, ids = await collect(neo, sid, posted.since_cursor)
    assert assemble(second).text == expected_text("second question")
    assert [c["type"] for c in second].count("start") == 1
    key = tuple(map(int, posted.since_cursor.split("-")))
    assert all(tuple(map(int, i.split("-"))) > key for i in ids)


async def test_idle_timeout_triggers_reconnect(emulator: NeoEmulator, neo: NeoClient) -> None:
    emulator.stall_stream_after(3, seconds=3.0)
    sid, since = await post(neo, LONG_MESSAGE)
    limits = TailLimits(**{**_fields(LIMITS), "idle": 0.2})
    chunks, _ = await collect(neo, sid, since, limits)
    assert assemble(chunks).text == expected_text(LONG_MESSAGE)
    assert len(event_requests(emulator)) == 2


async def test_first_byte_timeout_triggers_reconnect(emulator: NeoEmulator, neo: NeoClient) -> None:
    emulator.hang_before_first_byte(3.0)
    sid, since = await post(neo, "hello there")
    limits = TailLimits(**{**_fields(LIMITS), "first_byte": 0.2})
    chunks, _ = await collect(neo, sid, since, limits)
    assert assemble(chunks).outcome is ReplyOutcome.COMPLETE
    assert len(event_requests(emulator)) == 2


async def test_reconnect_budget_exhausted(emulator: NeoEmulator, neo: NeoClient) -> None:
    emulator.drop_stream_after(0, times=100)
    sid, since = await post(neo, "hello")
    limits = TailLimits(**{**_fields(LIMITS), "max_reconnects": 2})
    with pytest.raises(RetryableError, match="without progress"):
        await collect(neo, sid, since, limits)
    assert len(event_requests(emulator)) == 3


async def test_total_time_limit_is_ambiguous(emulator: NeoEmulator, neo: NeoClient) -> None:
    emulator.chunk_delay = 0.05
    sid, since = await post(neo, LONG_MESSAGE)
    limits = TailLimits(**{**_fields(LIMITS), "total": 0.4})
    with pytest.raises(AmbiguousError, match="total time"):
        await collect(neo, sid, since, limits)


async def test_tail_4xx_is_permanent(emulator: NeoEmulator, neo: NeoClient) -> None:
    emulator.fail_next("events", 404, code="not_found")
    emulator.fail_next("events", 403, code="FORBIDDEN")
    sid, since = await post(neo, "hi")
    with pytest.raises(PermanentError):
        await collect(neo, sid, since)
    with pytest.raises(CredentialError):
        await collect(neo, sid, since)
    assert len(event_requests(emulator)) == 2  # neither was retried


async def test_tail_429_and_503_are_retried(emulator: NeoEmulator, neo: NeoClient) -> None:
    emulator.fail_next("events", 429, retry_after=0.05)
    emulator.fail_next("events", 503)
    sid, since = await post(neo, "hi there")
    chunks, _ = await collect(neo, sid, since)
    assert assemble(chunks).text == expected_text("hi there")
    assert len(event_requests(emulator)) == 3


async def test_reset_mid_turn_ends_with_abort(emulator: NeoEmulator, neo: NeoClient) -> None:
    emulator.chunk_delay = 0.05
    sid, since = await post(neo, LONG_MESSAGE)
    seen: list[dict[str, Any]] = []
    async for chunk in tail_turn(neo, sid, since=since, limits=LIMITS):
        seen.append(chunk)
        if len(seen) == 4:
            await neo.reset_session(sid)
    reply = assemble(seen)
    assert reply.outcome is ReplyOutcome.ABORTED
    assert reply.text.startswith("You said:")


async def test_fixture_script_replays_a_real_stream(
    emulator: NeoEmulator, neo: NeoClient, aisdk_fixtures: Path
) -> None:
    golden = json.loads((aisdk_fixtures / "full.final-message.json").read_text())
    emulator.script = fixture_script(aisdk_fixtures / "full.sse")
    emulator.drop_stream_after(10)
    sid, since = await post(neo, "weather?")
    chunks, _ = await collect(neo, sid, since)
    reply = assemble(chunks)
    assert reply.text == "\n\n".join(p["text"] for p in golden["parts"] if p["type"] == "text")
    assert reply.outcome is ReplyOutcome.COMPLETE
    assert reply.data == {"data-status:status-1": {"phase": "done"}}


# -- hand-written SSE bodies ---------------------------------------------------------------------

Route = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def sse_server() -> AsyncIterator[Callable[[Route], Awaitable[NeoClient]]]:
    runners: list[web.AppRunner] = []
    clients: list[NeoClient] = []

    async def start(route: Route) -> NeoClient:
        app = web.Application()
        app.router.add_get("/public-api/chat/sessions/{sid}/events", route)
        runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.2)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        client = NeoClient(f"http://127.0.0.1:{port}", SecretStr(API_KEY))
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.aclose()
    for runner in runners:
        await runner.cleanup()


async def _stream(request: web.Request, body: bytes, *, cut: bool = False) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    await response.write(body)
    if cut and request.transport is not None:
        request.transport.abort()
        return response
    await response.write_eof()
    return response


async def test_garbage_and_odd_framing_are_tolerated(
    sse_server: Callable[[Route], Awaitable[NeoClient]],
) -> None:
    body = (
        b": keep-alive comment\r\n\r\n"
        b"retry: 1000\r\n\r\n"
        b'event: message\r\nid: 1-0\r\ndata: {"type":"start"}\r\n\r\n'
        b"id: 2-0\ndata: not json at all\n\n"
        b"id: 3-0\ndata: [1, 2, 3]\n\n"
        b'id: 4-0\ndata: "a string"\n\n'
        b'data: {"type":"text-delta",\n'
        b'data: "id":"t","delta":"Hello "}\n\n'
        b'data:{"type":"text-delta","id":"t","delta":"world"}\n\n'
        b'id: 5-0\ndata: {"type":"finish","finishReason":"stop"}\n\n'
        b"id: 6-0\ndata: [DONE]\n\n"
    )

    async def route(request: web.Request) -> web.StreamResponse:
        return await _stream(request, body)

    neo = await sse_server(route)
    chunks, ids = await collect(neo, SessionId("s"), None)
    assert [c["type"] for c in chunks] == ["start", "text-delta", "text-delta", "finish"]
    assert assemble(chunks).text == "Hello world"
    assert ids == ["1-0", "2-0", "3-0", "4-0", "5-0", "6-0"]


async def test_end_of_body_after_finish_without_done_ends_the_turn(
    sse_server: Callable[[Route], Awaitable[NeoClient]],
) -> None:
    calls = 0

    async def route(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        return await _stream(request, b'data: {"type":"finish"}\n\n')

    neo = await sse_server(route)
    chunks, _ = await collect(neo, SessionId("s"), None)
    assert chunks == [{"type": "finish"}]
    assert calls == 1


async def test_open_stream_after_terminal_chunk_ends_after_grace(
    sse_server: Callable[[Route], Awaitable[NeoClient]],
) -> None:
    async def route(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b'id: 1-0\ndata: {"type":"abort","reason":"stop"}\n\n')
        await asyncio.sleep(5)  # keeps the session stream open, like a long-lived tail
        return response

    neo = await sse_server(route)
    chunks, _ = await collect(neo, SessionId("s"), None)
    assert assemble(chunks).outcome is ReplyOutcome.ABORTED


async def test_replayed_old_events_are_dropped_by_id(
    sse_server: Callable[[Route], Awaitable[NeoClient]],
) -> None:
    """A server that ignores `since` (replaying the previous turn) must not leak old chunks."""
    connections = 0

    async def route(request: web.Request) -> web.StreamResponse:
        nonlocal connections
        connections += 1
        old = b'id: 5-0\ndata: {"type":"text-delta","id":"t","delta":"OLD "}\n\n'
        new = b'id: 7-0\ndata: {"type":"text-delta","id":"t","delta":"new "}\n\n'
        if connections == 1:
            return await _stream(request, old + new, cut=True)
        rest = b'id: 8-0\ndata: {"type":"finish"}\n\nid: 9-0\ndata: [DONE]\n\n'
        return await _stream(request, old + new + rest)

    neo = await sse_server(route)
    chunks, ids = await collect(neo, SessionId("s"), EventId("6-0"))
    assert assemble(chunks).text == "new "
    assert ids == ["7-0", "8-0", "9-0"]


async def test_idless_stream_resumes_without_repeats(
    sse_server: Callable[[Route], Awaitable[NeoClient]],
) -> None:
    connections = 0
    events = [
        b'data: {"type":"text-delta","id":"t","delta":"a"}\n\n',
        b'data: {"type":"text-delta","id":"t","delta":"b"}\n\n',
        b'data: {"type":"text-delta","id":"t","delta":"c"}\n\n',
        b'data: {"type":"finish"}\n\ndata: [DONE]\n\n',
    ]

    async def route(request: web.Request) -> web.StreamResponse:
        nonlocal connections
        connections += 1
        if connections == 1:
            return await _stream(request, b"".join(events[:2]), cut=True)
        return await _stream(request, b"".join(events))

    neo = await sse_server(route)
    chunks, _ = await collect(neo, SessionId("s"), EventId("1-0"))
    assert assemble(chunks).text == "abc"


def _fields(limits: TailLimits) -> dict[str, Any]:
    return {name: getattr(limits, name) for name in limits.__dataclass_fields__}
