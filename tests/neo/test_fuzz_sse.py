"""Property tests: no SSE body and no chunk sequence can crash the tail or the reply assembler.

Neo's stream is the least documented part of its contract (neo-chat-api.md §b), so the reader must
survive anything: garbage lines, ids out of order, non-JSON data, JSON that is not an object,
chunks with wrong field types, giant deltas. Bodies are served over real HTTP by a loopback server
and read with the production ``NeoClient`` + ``tail_turn``; chunk sequences are fed to
``ReplyAssembler`` directly. Example counts are fixed and derandomized so CI is stable.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from relay.domain import EventId, Reply, SessionId
from relay.errors import RelayError
from relay.neo.chunks import ReplyAssembler
from relay.neo.client import NeoClient
from relay.neo.events import TailLimits, tail_turn

KEY = SecretStr("neo_sk_test_FuzzFuzz0123456789abcdef")
FUZZ = settings(
    max_examples=200,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
LIMITS = TailLimits(
    first_byte=0.5, idle=0.5, total=0.5, max_reconnects=1, backoff_base=0.001, terminal_grace=0.1
)
CHUNK_TYPES = [
    "start", "start-step", "text-start", "text-delta", "text-end", "reasoning-start",
    "reasoning-delta", "reasoning-end", "tool-input-start", "tool-input-delta",
    "tool-input-available", "tool-output-available", "tool-output-error", "source-url",
    "source-document", "file", "data-status", "data-til", "finish-step", "finish", "error",
    "abort", "message-metadata", "reset-step", "custom", "what-is-this",
]  # fmt: skip

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)  # fmt: skip
field_names = st.sampled_from(
    ["id", "delta", "text", "messageId", "toolCallId", "toolName", "url", "sourceId", "data",
     "errorText", "finishReason", "reason", "mediaType", "title", "input", "output"]
)  # fmt: skip
chunks = st.builds(
    lambda t, fields: {"type": t, **fields},
    st.sampled_from(CHUNK_TYPES) | st.text(max_size=12),
    st.dictionaries(field_names, json_values | st.sampled_from(["t0", "t1", "c1"]), max_size=5),
)


@FUZZ
@given(st.lists(chunks, max_size=25))
def test_the_assembler_never_raises_and_keeps_text_a_string(seq: list[dict[str, Any]]) -> None:
    assembler = ReplyAssembler()
    for chunk in seq:
        assembler.feed(chunk)
        reply: Reply = assembler.reply
        assert isinstance(reply.text, str)
    deltas = sum(len(c["delta"]) for c in seq if isinstance(c.get("delta"), str))
    assert len(assembler.reply.text) <= deltas + 2 * len(seq)  # nothing invented


# -- SSE bodies over real HTTP ----------------------------------------------------------------

sse_lines = st.one_of(
    st.builds(lambda i: f"id: {i}", st.integers(0, 50).map(lambda n: f"17000000{n:05d}-0")),
    st.builds(lambda c: f"data: {json.dumps(c)}", chunks),
    st.builds(lambda v: f"data: {json.dumps(v)}", json_values),
    st.just("data: [DONE]"),
    st.just(""),
    st.just(": keep-alive"),
    st.builds(lambda n: f"retry: {n}", st.integers(-5, 10**6)),
    st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=40).map(
        lambda s: s.replace("\r", " ").replace("\n", " ")
    ),
    st.builds(lambda b: "data: " + b, st.text(max_size=30)),
    st.just("event: message"),
)


class _BodyServer:
    """A loopback SSE endpoint on its own thread and loop, serving whatever body is set next.

    One server for every example (starting one per example costs more than the example).
    """

    def __init__(self) -> None:
        self.body, self.status = b"", 200
        self.loop = asyncio.new_event_loop()
        self.port = 0
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self._thread.start()
        assert ready.wait(10)

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)

        async def events(request: web.Request) -> web.StreamResponse:
            return web.Response(
                status=self.status, body=self.body, content_type="text/event-stream"
            )

        app = web.Application()
        app.router.add_get("/public-api/chat/sessions/{sid}/events", events)
        self._runner = web.AppRunner(app, access_log=None)
        self.loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = self._runner.addresses[0][1]
        ready.set()
        self.loop.run_forever()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


class _Reader:
    """One event loop and one ``NeoClient`` for every example (creating either per example
    costs far more than the example: httpx builds an SSL context per client)."""

    def __init__(self, server: _BodyServer) -> None:
        self.server = server
        self.runner = asyncio.Runner()
        self.client = self.runner.run(self._client())

    async def _client(self) -> NeoClient:
        url = f"http://127.0.0.1:{self.server.port}"
        return NeoClient(url, KEY, connect_timeout=2, request_timeout=2)

    def read(self, body: bytes, status: int = 200) -> list[dict[str, Any]]:
        self.server.body, self.server.status = body, status
        return self.runner.run(_read_all(self.client))

    def close(self) -> None:
        self.runner.run(self.client.aclose())
        self.runner.close()


@pytest.fixture(scope="module")
def reader() -> Iterator[_Reader]:
    server = _BodyServer()
    r = _Reader(server)
    try:
        yield r
    finally:
        r.close()
        server.stop()


async def _read_all(client: NeoClient) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(10):  # LIMITS.total bounds the tail; this bounds the test
            async for chunk in tail_turn(
                client, SessionId("cs_fuzz"), since=EventId("1700000000000-0"), limits=LIMITS
            ):
                assert isinstance(chunk, dict)
                out.append(chunk)
    except RelayError:
        pass  # a classified failure (no progress, timeout, refusal) is an allowed outcome
    return out


@settings(FUZZ, max_examples=100)
@given(st.lists(sse_lines, max_size=30), st.sampled_from(["\n", "\r\n"]))
def test_any_sse_body_yields_only_objects_or_a_classified_error(
    reader: _Reader, lines: list[str], newline: str
) -> None:
    body = newline.join(lines).encode("utf-8", "surrogatepass") + b"\n\n"
    reader.read(body)


@settings(max_examples=30, derandomize=True, deadline=None)
@given(st.binary(max_size=300), st.sampled_from([200, 204, 404, 500, 503]))
def test_binary_garbage_and_error_statuses_never_crash_the_tail(
    reader: _Reader, body: bytes, status: int
) -> None:
    reader.read(body, status)


def test_a_giant_delta_arrives_whole(reader: _Reader) -> None:
    giant = "x" * (2 * 1024 * 1024)
    body = (
        "".join(
            f"id: 1700000000001-{i}\ndata: {json.dumps(c)}\n\n"
            for i, c in enumerate(
                [
                    {"type": "start"},
                    {"type": "text-start", "id": "t"},
                    {"type": "text-delta", "id": "t", "delta": giant},
                    {"type": "text-delta", "id": "t", "delta": 12345},  # wrong type: skipped
                    {"type": "text-end", "id": "t"},
                    {"type": "finish"},
                ]
            )
        )
        + "data: [DONE]\n\n"
    )
    chunks_read = reader.read(body.encode())
    assembler = ReplyAssembler()
    for chunk in chunks_read:
        assembler.feed(chunk)
    assert assembler.reply.text == giant
