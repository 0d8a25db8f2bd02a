"""A Bot Connector (Teams side) emulator that records every activity and enforces Teams' rules.

Used by the tests, the benchmarks and the ``relay chat`` / ``relay demo`` tools, so they all check
the relay against the same contract. It serves the REST calls the relay makes
(``POST/PUT {serviceUrl}/v3/conversations/{id}/activities[/{activityId}]``) and enforces what real
Teams enforces on streamed messages (reference teams-platform.md §1.1, §2): streaming only in 1:1
chats, one stream per chat, sequence numbers from 1 increasing, cumulative text, informative text
≤ 1000 chars, ≥ 1 s between requests of a stream and one request in flight, the 2-minute cap, no
``streamSequence`` on the final message, nothing after the final, and the Stop button. A breach gets
the same error Teams returns *and* is appended to :attr:`violations`, so a test that only looks at
the happy path still fails loudly.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Received:
    method: str
    conversation_id: str
    activity: dict[str, Any]
    at: float
    app_id: str | None  # bot app id proven by the Authorization header (None: anonymous)
    status: int = 0
    streaming: bool = False  # carries a streaminfo entity (a stream request)


@dataclass
class _Stream:
    stream_id: str
    conversation_id: str
    started: float
    last_request: float
    sequence: int = 0
    text: str = ""
    in_flight: int = 0
    finished: bool = False
    cancelled: bool = False


@dataclass
class _Fault:
    status: int
    code: str | None
    message: str
    retry_after: float | None
    match: Callable[[dict[str, Any]], bool]
    times: int


@dataclass
class TeamsConnectorEmulator:
    """An aiohttp app standing in for ``https://smba.trafficmanager.net/...``."""

    verify_token: Callable[[str], str] | None = None  # token → app id, raises when invalid
    stream_cap_seconds: float = 120.0
    min_stream_interval: float = 1.0
    latency: float = 0.0
    conversation_types: dict[str, str] = field(default_factory=dict)
    # Inline-image bytes served at {serviceUrl}v3/attachments/{id}/views/original, behind the bot
    # token like the real thing (teams-platform.md §5); ``attachment_auth`` records who asked.
    attachments: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    attachment_auth: list[str | None] = field(default_factory=list)
    # Called with each request once answered (``relay chat`` shows activities as they arrive).
    on_activity: Callable[[Received], None] | None = None
    received: list[Received] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    _streams: dict[str, _Stream] = field(default_factory=dict)
    _faults: list[_Fault] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1000))
    _in_flight: dict[str, int] = field(default_factory=dict)  # conversation → stream requests
    _gate: asyncio.Event = field(default_factory=asyncio.Event)
    _hold: Callable[[dict[str, Any]], bool] | None = None  # pause(match): which requests wait
    _runner: web.AppRunner | None = None
    base_url: str = ""

    # -- test controls ---------------------------------------------------------------------------

    def fail_next(
        self,
        status: int,
        *,
        code: str | None = None,
        message: str = "",
        retry_after: float | None = None,
        times: int = 1,
        match: Callable[[dict[str, Any]], bool] = lambda a: True,
    ) -> None:
        self._faults.append(_Fault(status, code, message, retry_after, match, times))

    def __post_init__(self) -> None:
        self._gate.set()

    def pause(self, match: Callable[[dict[str, Any]], bool] | None = None) -> None:
        """Hold every response — or, given ``match``, those to the activities it accepts —
        until :meth:`resume` (requests are still recorded when they arrive)."""
        self._hold = match
        self._gate.clear()

    def resume(self) -> None:
        """Answer the held requests; a :meth:`pause` right after holds only later ones."""
        self._hold = None
        self._gate.set()

    def stream_requests(self, conversation_id: str | None = None) -> list[Received]:
        """Requests that carried a ``streaminfo`` entity, in arrival order."""
        return [
            r
            for r in self.received
            if r.streaming and (conversation_id is None or r.conversation_id == conversation_id)
        ]

    def press_stop(self, stream_id: str) -> None:
        self._streams[stream_id].cancelled = True

    def messages(self, conversation_id: str | None = None) -> list[dict[str, Any]]:
        """Accepted ``message`` activities (finals and normal messages), in order."""
        return [
            r.activity
            for r in self.received
            if r.activity.get("type") == "message"
            and r.status < 300
            and (conversation_id is None or r.conversation_id == conversation_id)
        ]

    def visible_text(self, conversation_id: str) -> list[str]:
        """What the user ends up seeing as separate messages, updates applied in place."""
        shown: dict[str, str] = {}
        order: list[str] = []
        for r in self.received:
            if (
                r.conversation_id != conversation_id
                or r.status >= 300
                or r.activity.get("type") != "message"
            ):
                continue
            key = r.activity.get("_id") or ""
            if key not in shown:
                order.append(key)
            shown[key] = r.activity.get("text") or ""
        return [shown[k] for k in order]

    # -- server ------------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v3/conversations/{cid}/activities", self._post)
        app.router.add_post("/v3/conversations/{cid}/activities/{aid}", self._post)
        app.router.add_put("/v3/conversations/{cid}/activities/{aid}", self._put)
        app.router.add_get("/v3/attachments/{aid}/views/{view}", self._attachment)
        return app

    def attachment_url(self, attachment_id: str) -> str:
        return f"{self.base_url}v3/attachments/{attachment_id}/views/original"

    async def _attachment(self, request: web.Request) -> web.Response:
        header = request.headers.get("Authorization")
        self.attachment_auth.append(header)
        if self.verify_token is not None:
            try:
                self.verify_token((header or "").removeprefix("Bearer ").strip())
            except Exception:
                return _error(401, "Unauthorized", "Authorization has been denied.")
        found = self.attachments.get(request.match_info["aid"])
        if found is None:
            return _error(404, "NotFound", "attachment not found")
        return web.Response(body=found[0], content_type=found[1])

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.base_url = f"http://{host}:{self._runner.addresses[0][1]}/"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- handlers ----------------------------------------------------------------------------------

    async def _common(self, request: web.Request) -> tuple[Received, web.Response | None]:
        app_id: str | None = None
        header = request.headers.get("Authorization", "")
        if self.verify_token is not None:
            try:
                app_id = self.verify_token(header.removeprefix("Bearer ").strip())
            except Exception:
                rec = Received(
                    request.method, request.match_info["cid"], {}, time.monotonic(), None, 401
                )
                self.received.append(rec)
                return rec, _error(
                    401, "Unauthorized", "Authorization has been denied for this request."
                )
        try:
            activity = json.loads(await request.read())
        except ValueError:
            activity = {}
        rec = Received(
            request.method, request.match_info["cid"], activity, time.monotonic(), app_id
        )
        self.received.append(rec)
        rec.streaming = _stream_info(activity) is not None
        if rec.streaming:
            # One request in flight per stream (§1.1 "only after a successful response"); one
            # stream per chat, so counting per conversation is counting per stream.
            if self._in_flight.get(rec.conversation_id, 0) > 0:
                self._violation("a stream request sent while the previous one was in flight")
            self._in_flight[rec.conversation_id] = self._in_flight.get(rec.conversation_id, 0) + 1
        if self.latency:
            await asyncio.sleep(self.latency)
        if self._hold is None or self._hold(activity):
            await self._gate.wait()
        for fault in self._faults:
            if fault.times > 0 and fault.match(activity):
                fault.times -= 1
                headers = (
                    {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
                )
                return rec, _error(fault.status, fault.code, fault.message, headers)
        return rec, None

    async def _put(self, request: web.Request) -> web.Response:
        rec, early = await self._common(request)
        if early is None:
            rec.activity["_id"] = request.match_info["aid"]
            early = web.json_response({"id": request.match_info["aid"]}, status=200)
        rec.status = early.status
        if self.on_activity is not None:
            self.on_activity(rec)
        return early

    async def _post(self, request: web.Request) -> web.Response:
        rec, early = await self._common(request)
        response = early or self._handle(rec)
        rec.status = response.status
        if rec.streaming:
            self._in_flight[rec.conversation_id] -= 1
        if self.on_activity is not None:
            self.on_activity(rec)
        return response

    def _handle(self, rec: Received) -> web.Response:
        activity = rec.activity
        info = _stream_info(activity)
        if info is None:
            new_id = str(next(self._ids))
            if activity.get("type") == "message":
                activity["_id"] = new_id
                return web.json_response({"id": new_id}, status=201)
            return web.json_response({}, status=200)
        return self._stream(rec, info)

    def _violation(self, text: str) -> None:
        self.violations.append(text)

    def _stream(self, rec: Received, info: dict[str, Any]) -> web.Response:
        activity, now = rec.activity, rec.at
        ctype = self.conversation_types.get(rec.conversation_id) or (
            activity.get("conversation") or {}
        ).get("conversationType", "personal")
        stream_type = info.get("streamType", "streaming")
        is_final = activity.get("type") == "message"
        if ctype != "personal":
            self._violation(f"streaming attempted in a {ctype} conversation")
            return _error(405, "BadArgument", "Streaming is not enabled for non personal scope")
        if is_final != (stream_type == "final"):
            self._violation(f"{activity.get('type')} activity with streamType {stream_type}")
            return _error(
                400,
                "BadSyntax",
                "Only start streaming and continue streaming types are allowed as a typing "
                "activity",
            )
        if stream_type == "informative" and len(activity.get("text") or "") > 1000:
            self._violation("informative update over 1000 characters")
            return _error(400, "BadRequest", "Informative message is too long")
        stream_id = info.get("streamId")
        if not stream_id:
            if is_final:
                self._violation("final message without streamId")
                return _error(400, "BadRequest", "Final streaming activity must carry streamId")
            for other in self._streams.values():
                if (
                    other.conversation_id == rec.conversation_id
                    and not other.finished
                    and not other.cancelled
                    and now - other.started <= self.stream_cap_seconds  # expired streams end
                ):
                    self._violation("second concurrent stream in one chat")
            if info.get("streamSequence") != 1:
                self._violation(f"first stream update has sequence {info.get('streamSequence')}")
            if not activity.get("text"):
                return _error(400, "BadRequest", "Start streaming activities should include text")
            stream_id = str(next(self._ids))
            stream = _Stream(
                stream_id, rec.conversation_id, started=now, last_request=now, sequence=1
            )
            if stream_type == "streaming":
                stream.text = activity.get("text") or ""
            self._streams[stream_id] = stream
            return web.json_response({"id": stream_id}, status=201)
        existing = self._streams.get(stream_id)
        if existing is None:
            self._violation(f"unknown streamId {stream_id}")
            return _error(400, "BadRequest", "Unknown stream")
        return self._continue(existing, activity, info, is_final, stream_type, now)

    def _continue(
        self,
        stream: _Stream,
        activity: dict[str, Any],
        info: dict[str, Any],
        is_final: bool,
        stream_type: str,
        now: float,
    ) -> web.Response:
        if stream.cancelled:
            return _error(403, "ContentStreamNotAllowed", "Content stream was cancelled by user.")
        if stream.finished:
            self._violation("request after the final message")
            return _error(
                403,
                "ContentStreamNotAllowed",
                "Content stream is not allowed on an already completed streamed message",
            )
        if now - stream.started > self.stream_cap_seconds:
            return _error(
                403,
                "ContentStreamNotAllowed",
                "Content stream finished due to exceeded streaming time.",
            )
        if now - stream.last_request < self.min_stream_interval * 0.95:
            self._violation(
                f"stream {stream.stream_id} updated {now - stream.last_request:.2f}s after the "
                "previous request"
            )
            return _error(429, None, "API calls quota exceeded", {"Retry-After": "1"})
        stream.last_request = now
        text = activity.get("text") or ""
        if is_final:
            if "streamSequence" in info:
                self._violation("final message carries streamSequence")
                return _error(
                    400, "BadRequest", "Final streaming activity must not carry streamSequence"
                )
            if not text.startswith(stream.text):
                self._violation("final text does not contain the streamed text")
                return _error(
                    403,
                    "ContentStreamNotAllowed",
                    "Request streamed content should contain the previously streamed content",
                )
            stream.finished = True
            activity["_id"] = stream.stream_id
            return web.json_response({"id": stream.stream_id}, status=200)
        seq = info.get("streamSequence")
        if not isinstance(seq, int) or seq <= stream.sequence:
            self._violation(f"stream sequence {seq} after {stream.sequence}")
            return web.json_response(
                {
                    "error": {
                        "code": "ContentStreamSequenceOrderPreConditionFailed",
                        "message": "PreCondition failed",
                    }
                },
                status=202,
            )
        stream.sequence = seq
        if stream_type == "streaming":
            if not text.startswith(stream.text):
                self._violation("streamed text is not cumulative")
                return _error(
                    403,
                    "ContentStreamNotAllowed",
                    "Request streamed content should contain the previously streamed content",
                )
            stream.text = text
        return web.json_response({}, status=202)


def _stream_info(activity: dict[str, Any]) -> dict[str, Any] | None:
    entities = activity.get("entities")
    return next(
        (
            e
            for e in (entities if isinstance(entities, list) else [])
            if isinstance(e, dict) and e.get("type") == "streaminfo"
        ),
        None,
    )


def _error(
    status: int, code: str | None, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(
        {"error": {"code": code, "message": message}}, status=status, headers=headers
    )
