"""A local emulator of the Neo public API, for the test suite and the ``relay demo`` command.

It implements the documented chat contract (neo-chat-api.md §a.3–a.8, §d) on 127.0.0.1 with
aiohttp: ``{data, meta}`` / ``{error, meta}`` envelopes with a ``meta.request_id`` and
``X-RateLimit-*`` headers on every response (an optional ``rate_limit`` enforces them with 429 and
``Retry-After``, ``neo_emulator_ratelimit``), Bearer auth on every ``/public-api`` call, sessions,
202 message posts with ``since_cursor``, the SSE tail (``id: <ms>-<seq>`` per event, resume strictly
after ``since`` / ``Last-Event-Id``, live until the turn's ``[DONE]``), reset, attachment upload
grants with an emulated SAS ``PUT``, install branding and TIL decisions. Where Neo leaves a detail
undocumented (§b) the emulator picks one plausible answer and says so. Fault knobs
(:meth:`NeoEmulator.fail_next`, :meth:`~NeoEmulator.drop_stream_after`,
:meth:`~NeoEmulator.stall_stream_after`, :meth:`~NeoEmulator.hang_before_first_byte`) let tests
drive the client's error and resume paths over real HTTP instead of mocking httpx.

Conversation lifecycle knobs (each an assumption about Neo, written out in
``neo_emulator_lifecycle``): :meth:`~NeoEmulator.archive_session` (posts then get 409
``session_archived``, as after a dashboard archive), :meth:`~NeoEmulator.delete_session` (404),
:meth:`~NeoEmulator.forbid_session` (403: the channel was re-pointed to another owner),
:meth:`~NeoEmulator.null_since_cursor` (a 202 whose ``since_cursor`` is null, as Neo's docs allow
"under Redis failure"), ``til_pause`` ("hold" / "end": a TIL part pauses the turn until its
decision) and ``name_turns`` (chunks carry their ``chat_turn_id``). Turns of one session always
run one after another, so a turn the relay stopped tailing keeps writing into the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from relay.devtools.neo_emulator_features import REQUEST_ID, FeatureHandlers
from relay.devtools.neo_emulator_lifecycle import (
    Decisions,
    LifecycleKnobs,
    TurnPlan,
    cancel_quietly,
    play_turn,
)
from relay.devtools.neo_emulator_ratelimit import RATE_LIMIT, RateWindow, retry_after
from relay.devtools.neo_emulator_streams import (
    EmulatedSession,
    Fault,
    RecordedRequest,
    RecordedResponse,
    Script,
    StreamFault,
    TurnInput,
    echo_script,
    fixture_script,
    json_object,
    message_problem,
    now_iso,
    serve_events,
    take_fault,
)

__all__ = [
    "REQUEST_ID",
    "NeoEmulator",
    "RecordedRequest",
    "RecordedResponse",
    "TurnInput",
    "echo_script",
    "fixture_script",
]

DEFAULT_UNMAPPED_MESSAGE = (
    "This Microsoft 365 tenant is not linked to a company yet. Ask your IT provider to link it "
    "in the Neo dashboard."
)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class NeoEmulator(LifecycleKnobs, FeatureHandlers):
    """An in-process Neo API on 127.0.0.1.

    Usage::

        neo = NeoEmulator("neo_sk_test_0123456789abcdef")
        base_url = await neo.start()
        ...  # point a NeoClient at base_url
        await neo.stop()
    """

    def __init__(
        self,
        api_key: str,
        *,
        script: Script = echo_script,
        chunk_delay: float = 0.0,
        first_chunk_delay: float = 0.0,
        show_progress: bool = True,
        max_image_bytes: int = 5 * 1024 * 1024,
        unmapped_tenants: set[str] | None = None,
        unmapped_message: str = DEFAULT_UNMAPPED_MESSAGE,
        branding: dict[tuple[str, str], dict[str, Any]] | None = None,
        til_forbidden: set[str] | None = None,
        til_pause: str | None = None,
        name_turns: bool = False,
        rate_limit: int | None = None,
        rate_window: float = 60.0,
    ) -> None:
        self.api_key = api_key
        self.script = script
        self.chunk_delay = chunk_delay
        self.first_chunk_delay = first_chunk_delay
        self.show_progress = show_progress
        self.max_image_bytes = max_image_bytes
        self.unmapped_tenants = set(unmapped_tenants or ())
        self.unmapped_message = unmapped_message
        self.branding = dict(branding or {})
        self.til_forbidden = set(til_forbidden or ())
        self.til_pause = til_pause
        self.name_turns = name_turns
        self.decisions = Decisions()
        self.forbidden_sessions: set[str] = set()
        self._null_cursors = 0
        self._lost_answers: list[StreamFault] = []
        # The duplicate client_message_id 409's code is undocumented (§b item 12).
        self.duplicate_code = "duplicate_client_message_id"
        self._side: dict[str, set[asyncio.Task[None]]] = {}  # session id -> continuations
        self.requests: list[RecordedRequest] = []
        self.responses: list[RecordedResponse] = []
        self.sessions: dict[str, EmulatedSession] = {}
        self.posted_messages: list[dict[str, Any]] = []
        self.blobs: dict[str, tuple[bytes, str | None]] = {}
        self.til_decisions: dict[str, dict[str, Any]] = {}
        self.install_events: list[dict[str, Any]] = []
        self._grants: dict[str, str] = {}  # sas signature -> blob path
        self._faults: dict[str, list[Fault]] = {}
        self._drops: list[StreamFault] = []
        self._stalls: list[StreamFault] = []
        self._hangs: dict[str, list[StreamFault]] = {}
        # Reported on every response; enforced (429 + Retry-After) only with a rate_limit.
        self.rate = RateWindow(rate_limit or RATE_LIMIT, rate_window, enforce=bool(rate_limit))
        self._runner: web.AppRunner | None = None
        self.base_url: str | None = None
        self.app = self._build_app()

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on ``host:port`` (0 = any free port) and return the base URL."""
        # handler_cancellation: a client that hangs up must end its (possibly waiting) handler.
        self._runner = web.AppRunner(
            self.app, handler_cancellation=True, shutdown_timeout=0.2, access_log=None
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, shutdown_timeout=0.2)
        await site.start()
        bound_port = self._runner.addresses[0][1]
        self.base_url = f"http://{host}:{bound_port}"
        return self.base_url

    async def stop(self) -> None:
        for session in self.sessions.values():
            await cancel_quietly(session.turn)
        for tasks in self._side.values():
            for task in list(tasks):
                await cancel_quietly(task)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- fault injection ----------------------------------------------------------------------

    def fail_next(
        self,
        path_kind: str,
        status: int,
        *,
        code: str | None = None,
        retry_after: str | float | None = None,
        times: int = 1,
        message: str | None = None,
        raw_body: str | None = None,
    ) -> None:
        """Answer the next ``times`` calls of ``path_kind`` with an error.

        ``path_kind`` is one of create_session, post_message, events, reset, upload, blob,
        install, til. ``raw_body`` replaces the JSON envelope with a non-JSON body.
        """
        ra = None if retry_after is None else str(retry_after)
        fault = Fault(status, code, ra, message, raw_body, times)
        self._faults.setdefault(path_kind, []).append(fault)

    def drop_stream_after(self, n_events: int, times: int = 1) -> None:
        """Cut the TCP connection of the next ``times`` tails after ``n_events`` events each."""
        self._drops.append(StreamFault(after=n_events, times=times))

    def stall_stream_after(self, n_events: int, seconds: float, times: int = 1) -> None:
        """Go silent for ``seconds`` after ``n_events`` events, on the next ``times`` tails."""
        self._stalls.append(StreamFault(after=n_events, times=times, seconds=seconds))

    def hang_before_first_byte(self, seconds: float, times: int = 1) -> None:
        """Delay the response headers of the next ``times`` tails by ``seconds``."""
        self.hang_next("events", seconds, times)

    def hang_next(self, path_kind: str, seconds: float, times: int = 1) -> None:
        """Sleep ``seconds`` before answering the next ``times`` calls of ``path_kind``."""
        self._hangs.setdefault(path_kind, []).append(StreamFault(0, times, seconds))

    # -- helpers ------------------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.on_response_prepare.append(self._add_headers)
        chat = "/public-api/chat/sessions"
        app.router.add_post(chat, self._create_session)
        app.router.add_post(chat + "/{sid}/messages", self._post_message)
        app.router.add_get(chat + "/{sid}/events", self._events)
        app.router.add_post(chat + "/{sid}/reset", self._reset)
        app.router.add_post(chat + "/{sid}/attachments/upload-url", self._upload_url)
        app.router.add_put("/blobs/{path:.+}", self._put_blob)
        app.router.add_post("/public-api/channels/install-events", self._install)
        app.router.add_post("/public-api/til-requests/{rid}/decision", self._til_decision)
        app.router.add_get("/public-api/til-requests", self._til_list)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        request[REQUEST_ID] = str(uuid.uuid4())
        body: Any = None
        if request.method != "PUT" and request.can_read_body:
            with contextlib.suppress(ValueError):
                body = await request.json()
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.requests.append(
            RecordedRequest(request.method, request.path, body, headers, dict(request.query))
        )
        authorized = request.headers.get("Authorization") == f"Bearer {self.api_key}"
        if request.path.startswith("/public-api/") and not authorized:
            return self._error(request, 401, "UNAUTHORIZED", "missing or invalid credential")
        if request.path.startswith("/public-api/") and (wait := self.rate.hit()) is not None:
            headers = {"Retry-After": retry_after(wait)}
            return self._error(request, 429, "rate_limited", "too many requests", headers=headers)
        try:
            return await handler(request)
        except web.HTTPException as exc:  # unknown path / method: still an error envelope
            if exc.status < 400:
                raise
            code = "not_found" if exc.status == 404 else f"http_{exc.status}"
            return self._error(request, exc.status, code, exc.reason)

    async def _add_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers.update(self.rate.headers())
        request_id = request.get(REQUEST_ID)
        if request_id is not None:
            response.headers["X-Request-Id"] = request_id
        self.responses.append(
            RecordedResponse(request.method, request.path, response.status, request_id)
        )

    async def _injected(self, request: web.Request, kind: str) -> web.Response | None:
        if (hang := take_fault(self._hangs.get(kind, []))) is not None:
            await asyncio.sleep(hang.seconds)
        queue = self._faults.get(kind)
        if not queue:
            return None
        fault = queue[0]
        fault.times -= 1
        if fault.times <= 0:
            queue.pop(0)
        headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else None
        if fault.raw_body is not None:
            return web.Response(
                status=fault.status, text=fault.raw_body, content_type="text/html", headers=headers
            )
        code = fault.code or f"http_{fault.status}"
        message = fault.message or f"injected {fault.status} for {kind}"
        return self._error(request, fault.status, code, message, headers=headers)

    # -- chat ---------------------------------------------------------------------------------

    async def _create_session(self, request: web.Request) -> web.StreamResponse:
        if (injected := await self._injected(request, "create_session")) is not None:
            return injected
        body = await json_object(request)
        if body is None or (body.get("agent_id") is None) == (
            body.get("managed_agent_key") is None
        ):
            return self._error(
                request, 400, "validation_error", "give exactly one of agent_id, managed_agent_key"
            )
        tenant = body.get("inbound_tenant_id")
        if tenant in self.unmapped_tenants:
            return self._error(request, 409, "end_company_not_mapped", self.unmapped_message)
        session = EmulatedSession(
            id=f"cs_{uuid.uuid4().hex[:16]}",
            bot_id=body.get("bot_id"),
            tenant=tenant,
            title=str(body.get("title") or ""),
            show_progress=self.show_progress,
            created_at=now_iso(),
        )
        self.sessions[session.id] = session
        return self._ok(request, session.resource(), status=201)

    async def _post_message(self, request: web.Request) -> web.StreamResponse:
        if (injected := await self._injected(request, "post_message")) is not None:
            return injected
        session = self._session(request)
        if session is None:
            return self._not_found(request)
        body = await json_object(request)
        problem = message_problem(body)
        if body is None or problem:
            return self._error(request, 400, "validation_error", problem or "body must be JSON")
        client_id = body.get("client_message_id")
        if client_id and client_id in session.client_message_ids:
            # The docs promise "409 with the original message id" but not where (§b item 12).
            original = session.client_message_ids[client_id]
            return self._error(
                request,
                409,
                self.duplicate_code,
                "a message with this client_message_id already exists",
                details={"message_id": original},
            )
        if session.id in self.forbidden_sessions:
            return self._error(request, 403, "FORBIDDEN", "this session belongs to another owner")
        if session.archived_at is not None:
            return self._error(request, 409, "session_archived", "the session was archived")
        message_id = f"um_{uuid.uuid4().hex[:16]}"
        if client_id:
            session.client_message_ids[client_id] = message_id
        since_cursor = session.log.last_id  # snapshotted before the turn is enqueued [AM]
        chat_turn_id = f"chat-turn-{uuid.uuid4().hex[:12]}"
        turn = TurnInput(
            session_id=session.id,
            message=str(body.get("message") or ""),
            model_tier=str(body.get("model_tier") or "FAST"),
            attachments=list(body.get("attachments") or []),
            bot_id=session.bot_id,
            tenant=session.tenant,
            chat_turn_id=chat_turn_id,
        )
        self.posted_messages.append({**body, "session_id": session.id, "message_id": message_id})
        session.turn = asyncio.create_task(self._run(session.turn, turn, session))
        null_cursor = self._null_cursors > 0
        self._null_cursors -= int(null_cursor)
        if (lost := take_fault(self._lost_answers)) is not None:
            await asyncio.sleep(lost.seconds)
        data = {
            "chat_turn_id": chat_turn_id,
            "since_cursor": None if null_cursor else since_cursor,
            "user_message_id": message_id,
            "show_agent_progress_steps": session.show_progress,
        }
        return self._ok(request, data, status=202)

    async def _run(
        self, previous: asyncio.Task[None] | None, turn: TurnInput, session: EmulatedSession
    ) -> None:
        """Play one turn once the session's previous one is done (bench/emu.py overrides it)."""
        plan = TurnPlan(
            chunks=self.script(turn),
            chat_turn_id=turn.chat_turn_id,
            chunk_delay=self.chunk_delay,
            first_chunk_delay=self.first_chunk_delay,
            til_pause=self.til_pause,
            name_turns=self.name_turns,
        )
        await play_turn(
            previous, session, plan, self.decisions, lambda t: self._spawn_side(session.id, t)
        )

    async def _events(self, request: web.Request) -> web.StreamResponse:
        if (injected := await self._injected(request, "events")) is not None:
            return injected
        session = self._session(request)
        if session is None:
            return self._not_found(request)
        # Last-Event-Id wins over ?since: it is what a reconnecting EventSource sends.
        after = request.headers.get("Last-Event-Id") or request.query.get("since")
        drop, stall = take_fault(self._drops), take_fault(self._stalls)
        return await serve_events(request, session.log, after, drop=drop, stall=stall)

    async def _reset(self, request: web.Request) -> web.StreamResponse:
        if (injected := await self._injected(request, "reset")) is not None:
            return injected
        session = self._session(request)
        if session is None:
            return self._not_found(request)
        if session.archived_at is None:
            session.archived_at = now_iso()
        await cancel_quietly(session.turn)
        for task in list(self._side.get(session.id, ())):
            await cancel_quietly(task)
        return self._ok(request, session.resource())
