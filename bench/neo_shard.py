"""The benchmark's Neo API: stateless, so several processes can serve one port (``SO_REUSEPORT``).

At 1,000 concurrent answers of 10 chunks/s the Neo side writes 10,000 SSE events a second — more
than one Python process can stamp on time, which would make the harness, not the relay, the thing
measured. So the benchmark starts ``--neo-shards`` processes listening on the same port, and the
kernel spreads the relay's connections over them. A relay's calls of one turn (post the message,
then tail its events, perhaps reconnecting) reach arbitrary shards, so no shard keeps a turn: the
message post answers a ``since_cursor`` that encodes everything the tail needs — when the turn
started (``CLOCK_MONOTONIC`` ms, one clock for every process of the machine) and the message
itself (``<mode> <conversation>``, as an integer) — and every SSE id continues that encoding
(``<ms>-<message × 10⁵ + event index + 1>``, a Redis-style id the relay can order and resume
after). The answer is a pure function of it: ``stream`` answers ``chunks`` numbered words on an
absolute schedule of ``rate``/s, ``ack`` answers 3 at once. Each shard records when it emitted
each chunk it served (the scheduled time when the relay connected late, so a slow relay is still
charged); ``bench.helpers`` merges the shards' records. Only the calls a benchmark turn makes are
served: create session, post message, tail events.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bench.common import NEO_KEY, chunk_text
from relay.devtools.neo_emulator_streams import DONE, SSE_HEADERS

_INDEX = 10**5  # room for the event index in an id's sequence part
_CHAT = "/public-api/chat/sessions"


@dataclass
class Answer:
    """What this shard emitted of one conversation's answer (monotonic clock)."""

    chunks: int
    paragraph: int
    emitted: list[float | None] = field(default_factory=list)
    done_at: float | None = None


def encode_cursor(started_ms: int, message: str, index: int = 0) -> str:
    """The SSE id of event ``index`` (0 = before the first) of a turn posted at ``started_ms``."""
    packed = int.from_bytes(message.encode(), "big")
    return f"{started_ms}-{packed * _INDEX + index}"


def decode_cursor(cursor: str) -> tuple[int, str, int] | None:
    """``(started_ms, message, index)`` of an id made by :func:`encode_cursor`; None otherwise."""
    ms, _, seq = cursor.partition("-")
    if not ms.isdigit() or not seq.isdigit():
        return None
    packed, index = divmod(int(seq), _INDEX)
    raw = packed.to_bytes((packed.bit_length() + 7) // 8, "big")
    try:
        return int(ms), raw.decode(), index
    except UnicodeDecodeError:
        return None


class ShardedNeo:
    """One shard: the Neo calls a benchmark turn makes, answered from the cursor alone."""

    def __init__(self, *, chunks: int, rate: float, paragraph: int) -> None:
        self.chunks, self.rate, self.paragraph = chunks, rate, paragraph
        self.answers: dict[str, Answer] = {}
        self.app = web.Application(middlewares=[self._auth])
        self.app.router.add_post(_CHAT, self._create_session)
        self.app.router.add_post(_CHAT + "/{sid}/messages", self._post_message)
        self.app.router.add_get(_CHAT + "/{sid}/events", self._events)

    @staticmethod
    def _meta() -> dict[str, str]:
        return {"request_id": f"req-{random.getrandbits(48):x}"}

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {NEO_KEY}":
            body = {"error": {"code": "UNAUTHORIZED", "message": "bad key"}, "meta": self._meta()}
            return web.json_response(body, status=401)
        response: web.StreamResponse = await handler(request)
        return response

    async def _create_session(self, request: web.Request) -> web.Response:
        body = await request.json()
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        session = {  # the resource the project's emulator answers (neo-chat-api.md §a.4)
            "id": f"cs_{uuid.uuid4().hex[:16]}",
            "agent_id": 1,
            "client_id": "bench-client",
            "channel": "TEAMS",
            "title": str(body.get("title") or ""),
            "created_at": now,
            "updated_at": now,
            "archived_at": None,
            "show_agent_progress_steps": False,
        }
        return web.json_response({"data": session, "meta": self._meta()}, status=201)

    async def _post_message(self, request: web.Request) -> web.Response:
        body = await request.json()
        started_ms = int(time.monotonic() * 1000)
        data = {
            "chat_turn_id": f"chat-turn-{uuid.uuid4().hex[:12]}",
            "since_cursor": encode_cursor(started_ms, str(body.get("message") or "")),
            "user_message_id": f"um_{uuid.uuid4().hex[:16]}",
            "show_agent_progress_steps": False,
        }
        return web.json_response({"data": data, "meta": self._meta()}, status=202)

    def _plan(self, message: str) -> tuple[str, int, float, int]:
        mode, _, conversation = message.partition(" ")
        if mode == "stream":
            return conversation, self.chunks, self.rate, self.paragraph
        return conversation, 3, 0.0, 3

    async def _events(self, request: web.Request) -> web.StreamResponse:
        after = request.headers.get("Last-Event-Id") or request.query.get("since") or ""
        decoded = decode_cursor(after)
        if decoded is None:
            body = {"error": {"code": "not_found", "message": "unknown cursor"}, "meta": {}}
            return web.json_response(body, status=404)
        started_ms, message, done_index = decoded
        conversation, n, rate, paragraph = self._plan(message)
        answer = self.answers.get(conversation)
        if answer is None or answer.chunks != n:
            answer = self.answers[conversation] = Answer(n, paragraph, [None] * n)
        start = started_ms / 1000
        connected = time.monotonic()
        response = web.StreamResponse(status=200, headers=SSE_HEADERS)
        await response.prepare(request)
        # Events: 0 start, 1 text-start, 2..n+1 the words, n+2 text-end, n+3 finish, n+4 [DONE].
        for index in range(done_index, n + 5):
            data: str
            if index == 0:
                data = json.dumps({"type": "start", "messageId": f"msg-{conversation}"})
            elif index == 1:
                data = '{"type":"text-start","id":"t0"}'
            elif index < n + 2:
                i = index - 2
                due = start + (i / rate if rate else 0.0)
                if (wait := due - time.monotonic()) > 0:
                    await asyncio.sleep(wait)  # absolute schedule: no drift
                delta = chunk_text(i, paragraph)
                data = json.dumps({"type": "text-delta", "id": "t0", "delta": delta})
                # Emitted when due, or when written if this shard woke late (its lag probe says).
                answer.emitted[i] = due if due < connected else time.monotonic()
            elif index == n + 2:
                data = '{"type":"text-end","id":"t0"}'
            elif index == n + 3:
                data = '{"type":"finish","finishReason":"stop"}'
            else:
                data = DONE
                answer.done_at = time.monotonic()
            event_id = encode_cursor(started_ms, message, index + 1)
            await response.write(f"id: {event_id}\ndata: {data}\n\n".encode())
        await response.write_eof()
        return response

    def stats(self, full: bool) -> dict[str, Any]:
        answers = {
            c: {
                "chunks": a.chunks,
                "paragraph": a.paragraph,
                "emitted": a.emitted,
                "done": a.done_at,
            }
            for c, a in self.answers.items()
        }
        return {"answers": answers if full else {}, "turns": len(self.answers)}

    def reset(self) -> None:
        self.answers.clear()

    async def start(self, host: str, port: int) -> tuple[web.AppRunner, str]:
        """Serve on ``host:port`` with ``SO_REUSEPORT`` (0: any free port, for the first shard)."""
        runner = web.AppRunner(self.app, handler_cancellation=True, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port, reuse_port=True, shutdown_timeout=0.2).start()
        return runner, f"http://{host}:{runner.addresses[0][1]}"


def merge_answers(parts: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """One record per conversation from every shard's: the earliest emission of each chunk (a
    resumed tail may re-serve chunks another shard served first), the latest ``[DONE]``."""
    merged: dict[str, dict[str, Any]] = {}
    for part in parts:
        for conv, a in part.items():
            m = merged.get(conv)
            if m is None or m["chunks"] != a["chunks"]:
                merged[conv] = {**a, "emitted": list(a["emitted"])}
                continue
            m["emitted"] = [
                x if y is None else y if x is None else min(x, y)
                for x, y in zip(m["emitted"], a["emitted"], strict=True)
            ]
            if a["done"] is not None:
                m["done"] = a["done"] if m["done"] is None else max(m["done"], a["done"])
    for m in merged.values():  # consumers index emissions by chunk: keep the served prefix
        emitted = m["emitted"]
        end = next((i for i, t in enumerate(emitted) if t is None), len(emitted))
        m["emitted"] = emitted[:end]
    return merged
