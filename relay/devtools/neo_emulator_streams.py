"""The emulated Neo session state and event stream, and the agent scripts that fill it.

Split out of ``neo_emulator`` so its HTTP surface stays readable. A :class:`EventLog` plays the
per-session Redis stream behind ``GET .../events``: ids are ``<ms>-<seq>`` and strictly increasing,
readers resume *strictly after* an id and live readers wait for appends (neo-chat-api.md §a.4
"Tail chat-session events", §b item 5 — the id format is inferred, not documented);
:func:`serve_events` writes it as SSE, with the fault knobs applied. A *script* is the emulated
agent: it turns one :class:`TurnInput` into the AI SDK v6 chunks of one answer
(ai-sdk-v6-stream.md §2), which :func:`run_turn` appends with optional pacing, then ``[DONE]``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

DONE = "[DONE]"


@dataclass(frozen=True, slots=True)
class TurnInput:
    """What the emulated agent sees for one turn."""

    session_id: str
    message: str
    model_tier: str
    attachments: list[dict[str, Any]]
    bot_id: str | None
    tenant: str | None
    chat_turn_id: str = ""  # the 202's id for this turn


Script = Callable[[TurnInput], list[dict[str, Any]]]


def parse_event_id(event_id: str) -> tuple[int, int] | None:
    """``"<ms>-<seq>"`` (or a bare ``"<ms>"``) as a sortable tuple; None when malformed."""
    ms, _, seq = event_id.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        return None


@dataclass(slots=True)
class StreamEvent:
    id: str
    data: str  # a JSON chunk or "[DONE]"


@dataclass
class EventLog:
    """An append-only, Redis-stream-like log of one session's SSE events."""

    events: list[StreamEvent] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _last: tuple[int, int] = (0, 0)

    @property
    def last_id(self) -> str:
        """The newest id, or ``"0-0"`` (Redis' "before everything") for an empty stream."""
        return self.events[-1].id if self.events else "0-0"

    def append(self, data: str) -> StreamEvent:
        ms = int(time.time() * 1000)
        last_ms, last_seq = self._last
        self._last = (ms, 0) if ms > last_ms else (last_ms, last_seq + 1)
        event = StreamEvent(id=f"{self._last[0]}-{self._last[1]}", data=data)
        self.events.append(event)
        # Wake every waiting reader, then re-arm for the next append.
        self._changed.set()
        self._changed = asyncio.Event()
        return event

    def index_after(self, after: str | None) -> int:
        """Position of the first event strictly after ``after`` (None or unknown → from start)."""
        key = parse_event_id(after) if after else None
        if key is None:
            return 0
        for i, event in enumerate(self.events):
            if (parse_event_id(event.id) or (0, 0)) > key:
                return i
        return len(self.events)

    async def wait_beyond(self, index: int) -> None:
        """Return once the log holds more than ``index`` events."""
        while len(self.events) <= index:
            await self._changed.wait()


def echo_script(turn: TurnInput) -> list[dict[str, Any]]:
    """A short, realistic v6 answer echoing the user's message word by word."""
    words = (turn.message or "(no text)").split()
    deltas = ["You said: ", *[w + " " for w in words[:-1]], *words[-1:]]
    return [
        {"type": "start", "messageId": f"msg-{turn.session_id[-8:]}"},
        {"type": "start-step"},
        {"type": "text-start", "id": "t0"},
        *({"type": "text-delta", "id": "t0", "delta": d} for d in deltas),
        {"type": "text-end", "id": "t0"},
        {"type": "finish-step"},
        {"type": "finish", "finishReason": "stop"},
    ]


def read_sse_chunks(path: Path) -> list[dict[str, Any]]:
    """The JSON chunks of a ``.sse`` file (``data:`` lines joined per event; ``[DONE]`` dropped)."""
    chunks: list[dict[str, Any]] = []
    for block in path.read_text(encoding="utf-8").replace("\r\n", "\n").split("\n\n"):
        data = "\n".join(
            line[5:].removeprefix(" ") for line in block.split("\n") if line.startswith("data:")
        )
        if data and data != DONE:
            chunk = json.loads(data)
            if isinstance(chunk, dict):
                chunks.append(chunk)
    return chunks


def fixture_script(path: Path | str) -> Script:
    """A script replaying a recorded v6 ``.sse`` file verbatim, whatever the user said."""
    chunks = read_sse_chunks(Path(path))

    def script(turn: TurnInput) -> list[dict[str, Any]]:
        return [dict(c) for c in chunks]

    return script


async def run_turn(
    log: EventLog,
    chunks: list[dict[str, Any]],
    *,
    chunk_delay: float,
    first_chunk_delay: float,
    done: bool = True,
) -> None:
    """Append one turn's chunks and ``[DONE]``; a cancel (reset) appends ``abort`` first.

    ``done=False``: the turn goes on later (paused on a TIL request), so no ``[DONE]`` yet.

    On cancellation the stream still ends the way a server-side abort does in the AI SDK — an
    ``abort`` chunk then ``[DONE]``, no ``finish`` (ai-sdk-v6-stream.md §2, ``abort`` row) — so a
    live tail sees the cancelled turn end instead of hanging.
    """
    try:
        if first_chunk_delay > 0:
            await asyncio.sleep(first_chunk_delay)
        for i, chunk in enumerate(chunks):
            if i and chunk_delay > 0:
                await asyncio.sleep(chunk_delay)
            log.append(json.dumps(chunk, ensure_ascii=False))
    except asyncio.CancelledError:
        log.append(json.dumps({"type": "abort", "reason": "session reset"}))
        log.append(DONE)
        raise
    if done:
        log.append(DONE)


SSE_HEADERS = {  # what a v6 server sends (ai-sdk-v6-stream.md §1 "Headers")
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "Connection": "keep-alive",
    "x-vercel-ai-ui-message-stream": "v1",
    "x-accel-buffering": "no",
}


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    method: str
    path: str
    json: Any  # the parsed JSON body, or None
    headers: dict[str, str]  # header names lower-cased
    query: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RecordedResponse:
    method: str
    path: str
    status: int
    request_id: str | None


@dataclass(slots=True)
class EmulatedSession:
    id: str
    bot_id: str | None
    tenant: str | None
    title: str
    show_progress: bool
    created_at: str
    log: EventLog = field(default_factory=EventLog)
    archived_at: str | None = None
    turn: asyncio.Task[None] | None = None
    client_message_ids: dict[str, str] = field(default_factory=dict)

    def resource(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "agent_id": 1,
            "client_id": "emulated-client",
            "channel": "TEAMS",
            "title": self.title,
            "created_at": self.created_at,
            "updated_at": self.archived_at or self.created_at,
            "archived_at": self.archived_at,
            "show_agent_progress_steps": self.show_progress,
        }


@dataclass(slots=True)
class Fault:
    status: int
    code: str | None
    retry_after: str | None
    message: str | None
    raw_body: str | None
    times: int


@dataclass(slots=True)
class StreamFault:
    after: int
    times: int
    seconds: float = 0.0  # 0 = cut the connection; > 0 = stall that long


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def take_fault(faults: list[StreamFault]) -> StreamFault | None:
    """Consume one use of the first queued fault."""
    if not faults:
        return None
    fault = faults[0]
    fault.times -= 1
    if fault.times <= 0:
        faults.pop(0)
    return fault


async def json_object(request: web.Request) -> dict[str, Any] | None:
    try:
        body = await request.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def message_problem(body: dict[str, Any] | None) -> str | None:
    if body is None:
        return "body must be a JSON object"
    attachments = body.get("attachments") or []
    if not isinstance(attachments, list) or len(attachments) > 6:
        return "attachments: at most 6 per turn"
    if any(not isinstance(a, dict) or not a.get("blob_path") for a in attachments):
        return "attachments[].blob_path is required"
    if not body.get("message") and not attachments:
        return "message may be empty only with at least one attachment"
    if body.get("model_tier", "FAST") not in ("FAST", "SMART"):
        return "model_tier must be FAST or SMART"
    return None


async def serve_events(
    request: web.Request,
    log: EventLog,
    after: str | None,
    *,
    drop: StreamFault | None,
    stall: StreamFault | None,
) -> web.StreamResponse:
    """Serve ``log`` strictly after ``after``, one ``id:``/``data:`` event each, until ``[DONE]``.

    Live: waits for appends while the turn runs. ``drop`` cuts the TCP connection abruptly after
    that many events (no ``[DONE]``, no end of the chunked body); ``stall`` goes silent instead.
    """
    response = web.StreamResponse(status=200, headers=SSE_HEADERS)
    await response.prepare(request)
    index, sent = log.index_after(after), 0
    while True:
        await log.wait_beyond(index)
        event = log.events[index]
        index += 1
        if drop is not None and sent == drop.after:
            if request.transport is not None:
                request.transport.abort()  # abrupt: no [DONE], no final chunk of the body
            return response
        if stall is not None and sent == stall.after:
            await asyncio.sleep(stall.seconds)
        await response.write(f"id: {event.id}\ndata: {event.data}\n\n".encode())
        sent += 1
        if event.data == DONE:
            break
    await response.write_eof()
    return response
