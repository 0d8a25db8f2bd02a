"""Typed async calls to the Neo public API, with every failure translated into ``relay.errors``.

This module (with ``relay.neo.events``) is the only place that touches httpx: it owns one shared
``httpx.AsyncClient`` with explicit per-phase timeouts, unwraps Neo's ``{data, meta}`` envelope and
maps every failure — HTTP status, ``error.code``, transport errors — onto the relay's exception tree
so the pipeline branches on *what it may do next* rather than on library types (reference:
neo-chat-api.md §a.3 "Envelopes, errors, rate limits"; peers-and-pitfalls.md §6.5 lesson 2). The
API key is a ``SecretStr`` that is only unwrapped to build the ``Authorization`` header; it is
never logged and is scrubbed from every error message. ``tail`` is deliberately low level (one SSE
connection, raw frames); resume, dedupe and timeouts live in ``relay.neo.events``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import aclosing
from types import TracebackType
from typing import Any, Literal, NoReturn, Self
from urllib.parse import quote

import httpx
from pydantic import SecretStr

from relay.domain import BotId, EventId, ModelTier, SessionId, TenantId
from relay.errors import UpstreamError
from relay.neo.http_errors import (
    SERVICE,
    bad_response,
    error_for,
    first_str,
    is_duplicate_code,
    opt_str,
    parse_error,
    transport_error,
)
from relay.neo.models import (
    InstallBranding,
    NeoAttachment,
    NeoSession,
    PostedMessage,
    SseFrame,
    UploadGrant,
)
from relay.neo.sse import put_blob, sse_frames

__all__ = [
    "SERVICE",
    "InstallBranding",
    "NeoAttachment",
    "NeoClient",
    "NeoSession",
    "PostedMessage",
    "SseFrame",
    "UploadGrant",
]

log = logging.getLogger(__name__)

MANAGED_AGENT_KEY = "NEO_SUPPORT"
USER_AGENT = "neo-teams-relay/0.1"
# Every answer in progress holds one connection for its SSE tail, so the tail pool must be as large
# as the turns one process runs at once: httpx's default (100) capped a relay at ~100 concurrent
# answers and failed the rest with PoolTimeout. Tails get a pool of their own because httpcore
# scans every pooled connection on every request (and, with more connections than its keep-alive
# limit, closes each idle one after use): sharing one pool made each short call pay for all open
# tails (bench/, README "Benchmarks").
# Few idle connections kept, because every idle one costs a socket-readability probe (anyio
# extra-attribute dict + poll) on each request of its pool: a tail lasts seconds, so a fresh
# connection per tail is cheaper than keeping finished ones (py-spy: ~10 % of the event loop).
TAIL_POOL_LIMITS = httpx.Limits(max_connections=5000, max_keepalive_connections=8)
CALL_POOL_LIMITS = httpx.Limits(max_connections=200, max_keepalive_connections=16)
# Short calls wait for a slot *in front of* the pool: httpcore matches each queued request against
# every connection whenever one is added or closed (O(queued x connections)), which a burst of
# new turns made the largest cost of the event loop (py-spy: ~20 %); a semaphore queue is O(1).
CALL_CONCURRENCY = 64
_CHAT = "/public-api/chat/sessions"


class NeoClient:
    """The Neo public API over one shared ``httpx.AsyncClient``.

    Usage::

        async with NeoClient(settings.neo_api_base_url, settings.neo_api_key) as neo:
            session = await neo.create_session(bot_id=bot, inbound_tenant_id=tenant, title="Teams")
            posted = await neo.post_message(session.session_id, message="hi",
                                            client_message_id="teams-1", model_tier=ModelTier.FAST)

    Error mapping (``relay.neo.http_errors``): 429/503 and connect failures are retryable; what
    may have reached Neo without a usable answer is ``RetryableError`` for idempotent calls
    (reset, upload-url, install-events, blob PUT, tail) and ``AmbiguousError`` for the others
    (create session, post message, TIL decision; peers-and-pitfalls.md §5). A 409 naming a
    duplicate ``client_message_id`` is ``duplicate=True``; any other 409 is a ``PermanentError``
    the pipeline classifies by fact (``relay.turn_post``).
    """

    def __init__(
        self,
        base_url: str,
        api_key: SecretStr,
        *,
        connect_timeout: float = 10,
        request_timeout: float = 30,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._api_key = api_key
        # Observer of every failed request, (status or None for transport, error code): metrics.
        self.on_error: Callable[[int | None, str | None], None] | None = None
        self._connect_timeout = connect_timeout
        self._request_timeout = request_timeout
        self._call_slots = asyncio.Semaphore(CALL_CONCURRENCY)
        self._http, self._tail_http = (
            httpx.AsyncClient(
                base_url=base_url.rstrip("/"),
                timeout=httpx.Timeout(
                    connect=connect_timeout,
                    read=request_timeout,
                    write=request_timeout,
                    pool=connect_timeout,
                ),
                headers={"User-Agent": USER_AGENT},
                limits=limits,
                transport=transport,
                follow_redirects=False,
            )
            for limits in (CALL_POOL_LIMITS, TAIL_POOL_LIMITS)
        )

    async def aclose(self) -> None:
        await self._http.aclose()
        await self._tail_http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- chat ------------------------------------------------------------------------------

    async def create_session(
        self, *, bot_id: BotId, inbound_tenant_id: TenantId | None, title: str
    ) -> NeoSession:
        """Create a Neo Support session routed by bot and tenant (neo-chat-api.md §a.4 [CS]).

        Raises:
            UserFacingError: 409 ``end_company_not_mapped``; its message is meant for the user.
        """
        body = {
            "managed_agent_key": MANAGED_AGENT_KEY,
            "bot_id": bot_id,
            "inbound_tenant_id": inbound_tenant_id,
            "title": title,
        }
        data, request_id = await self._call("POST", _CHAT, json=body, idempotent=False)
        session_id = data.get("id")
        if not isinstance(session_id, str) or not session_id:
            bad_response("create_session", "data.id missing", request_id, idempotent=False)
        return NeoSession(
            session_id=SessionId(session_id),
            show_progress=bool(data.get("show_agent_progress_steps", False)),
            request_id=request_id,
        )

    async def post_message(
        self,
        session_id: SessionId,
        *,
        message: str,
        client_message_id: str,
        model_tier: ModelTier,
        attachments: Sequence[NeoAttachment] = (),
    ) -> PostedMessage:
        """Append a user message and enqueue a turn (202); a replayed id returns ``duplicate``."""
        body: dict[str, Any] = {
            "message": message,
            "client_message_id": client_message_id,
            "model_tier": model_tier.value,
        }
        if attachments:
            body["attachments"] = [a.to_wire() for a in attachments]
        what = "POST messages"
        path = f"{_session_path(session_id)}/messages"
        response = await self._send("POST", path, json=body, what=what, idempotent=False)
        if response.status_code == 409:
            code, _, details, request_id = parse_error(response)
            if is_duplicate_code(code):
                log.info("neo: duplicate client_message_id, no new turn (request %s)", request_id)
                return PostedMessage(
                    chat_turn_id=None,
                    since_cursor=None,
                    user_message_id=first_str(details, "message_id", "user_message_id"),
                    duplicate=True,
                    request_id=request_id,
                )
        data, request_id = self._unwrap(response, what, idempotent=False)
        cursor = data.get("since_cursor")
        return PostedMessage(
            chat_turn_id=opt_str(data.get("chat_turn_id")),
            since_cursor=EventId(cursor) if isinstance(cursor, str) and cursor else None,
            user_message_id=opt_str(data.get("user_message_id")),
            show_progress=bool(data.get("show_agent_progress_steps", False)),
            request_id=request_id,
        )

    async def reset_session(self, session_id: SessionId) -> None:
        """Archive the session and cancel its in-flight turn; idempotent (200 again) [RESET].

        The path ``POST /public-api/chat/sessions/{id}/reset`` is an assumption: Neo documents the
        endpoint but not its path (neo-chat-api.md §b item 8).
        """
        await self._call("POST", f"{_session_path(session_id)}/reset", json={}, idempotent=True)

    async def upload_url(
        self, session_id: SessionId, *, content_type: str, filename: str | None
    ) -> UploadGrant:
        """Ask for a single-blob SAS URL for one attachment [UPIMG, UPDOC]."""
        body = {"content_type": content_type, "filename": filename}
        path = f"{_session_path(session_id)}/attachments/upload-url"
        data, request_id = await self._call("POST", path, json=body, idempotent=True)
        url, blob_path = data.get("upload_url"), data.get("blob_path")
        if not isinstance(url, str) or not isinstance(blob_path, str):
            bad_response("upload_url", "upload_url/blob_path missing", request_id, idempotent=True)
        limit = data.get("max_image_bytes")
        return UploadGrant(
            upload_url=url,
            blob_path=blob_path,
            mime=opt_str(data.get("mime")) or content_type,
            max_image_bytes=limit
            if isinstance(limit, int) and not isinstance(limit, bool)
            else None,
        )

    async def put_blob(self, grant: UploadGrant, data: bytes) -> None:
        """PUT the bytes to the SAS URL: no ``Authorization`` header, the signature is the URL.

        ``max_image_bytes`` must be enforced by the client because the API never sees the bytes
        (neo-chat-api.md §a.4 "Attachment upload grant"); it is applied to ``image/*`` only, as its
        name says. Azure errors come back as XML, so the code is read from ``x-ms-error-code``.
        """
        await put_blob(
            self._http,
            grant,
            data,
            transport=lambda e: self._transport_error(e, "PUT blob", idempotent=True),
        )

    # -- channels and approvals ------------------------------------------------------------

    async def install_event(
        self, *, bot_id: BotId, end_client_tenant_id: TenantId
    ) -> InstallBranding:
        """Report a Teams install; returns the greeting branding (platform only) [CHINSTALL]."""
        body = {"bot_id": bot_id, "end_client_tenant_id": end_client_tenant_id}
        data, _ = await self._call(
            "POST", "/public-api/channels/install-events", json=body, idempotent=True
        )
        return InstallBranding(
            display_name=opt_str(data.get("display_name")),
            matched=bool(data.get("matched", False)),
            welcome_message=opt_str(data.get("welcome_message")),
        )

    async def til_decision(
        self,
        request_id: str,
        *,
        action: Literal["approve", "reject"],
        acting_end_user: str | None,
        acting_end_user_name: str | None,
        note: str | None = None,
    ) -> dict[str, Any]:
        """Approve or reject a TIL request; returns the updated ``TilRequest`` ``data`` [TILDEC].

        Raises:
            PermanentError: 409 when it was already resolved (``exc.status == 409``).
        """
        body: dict[str, Any] = {"action": action}
        for key, value in (
            ("acting_end_user", acting_end_user),
            ("acting_end_user_name", acting_end_user_name),
            ("note", note),
        ):
            if value is not None:
                body[key] = value
        path = f"/public-api/til-requests/{quote(str(request_id), safe='')}/decision"
        data, _ = await self._call("POST", path, json=body, idempotent=False)
        return data

    async def list_til_requests(self, *, page_size: int = 50) -> list[dict[str, Any]]:
        """One page of TIL requests (``data: TilRequest[]``) [TILLIST]. ``relay check`` uses
        ``page_size=1`` as its cheap authenticated, read-only probe of the API key."""
        what = "GET /public-api/til-requests"
        path = f"/public-api/til-requests?page_size={max(1, min(page_size, 200))}"
        response = await self._send("GET", path, json=None, what=what, idempotent=True)
        if not response.is_success:
            self._raise_for(response, what, idempotent=True)
        try:
            body = response.json()
        except ValueError:
            body = None
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            bad_response(what, "data is not a list", None, idempotent=True)
        return [item for item in data if isinstance(item, dict)]

    # -- SSE tail --------------------------------------------------------------------------

    async def tail(
        self,
        session_id: SessionId,
        since: EventId | None,
        last_event_id: EventId | None = None,
        *,
        read_timeout: float | None = None,
    ) -> AsyncGenerator[SseFrame, None]:
        """One SSE connection to ``GET .../events``; yields every event, ends at end of body.

        ``since`` goes in the query, ``last_event_id`` in the ``Last-Event-Id`` header (both are
        documented ways to resume, [TAIL]). The read timeout defaults to none because the caller
        (``relay.neo.events``) enforces first-byte / idle / total limits itself. Comments are
        dropped by httpx-sse; an ``id`` the decoder carries over from an earlier event (SSE
        ``lastEventId`` semantics) is reported as None so callers can dedupe by id safely.

        Raises:
            RetryableError: the connection failed or dropped (a GET is always safe to repeat),
                or 429 / 5xx.
            PermanentError / CredentialError: any other refusal.
        """
        params: dict[str, str] | None = {"since": since} if since else None
        headers = {"Authorization": self._bearer()}
        if last_event_id:
            headers["Last-Event-Id"] = last_event_id
        timeout = httpx.Timeout(
            connect=self._connect_timeout,
            read=read_timeout,
            write=self._request_timeout,
            pool=self._connect_timeout,
        )
        frames = sse_frames(
            self._tail_http,
            f"{_session_path(session_id)}/events",
            params=params,
            headers=headers,
            timeout=timeout,
            refused=lambda r: self._raise_for(r, "GET events", idempotent=True),
            transport=lambda e: self._transport_error(e, "GET events", idempotent=True),
        )
        async with aclosing(frames):
            async for frame in frames:
                yield frame

    # -- plumbing --------------------------------------------------------------------------

    def _bearer(self) -> str:
        return f"Bearer {self._api_key.get_secret_value()}"

    async def _call(
        self, method: str, path: str, *, json: Any, idempotent: bool
    ) -> tuple[dict[str, Any], str | None]:
        what = f"{method} {path}"
        response = await self._send(method, path, json=json, what=what, idempotent=idempotent)
        return self._unwrap(response, what, idempotent=idempotent)

    async def _send(
        self, method: str, path: str, *, json: Any, what: str, idempotent: bool
    ) -> httpx.Response:
        try:
            # The slot wait counts as the pool wait: same limit, same PoolTimeout as before.
            async with asyncio.timeout(self._connect_timeout):
                await self._call_slots.acquire()
        except TimeoutError:
            exc = httpx.PoolTimeout("no free Neo call slot")
            raise self._transport_error(exc, what, idempotent=idempotent) from None
        try:
            return await self._http.request(
                method, path, json=json, headers={"Authorization": self._bearer()}
            )
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, what, idempotent=idempotent) from exc
        finally:
            self._call_slots.release()

    def _unwrap(
        self, response: httpx.Response, what: str, *, idempotent: bool
    ) -> tuple[dict[str, Any], str | None]:
        """The ``data`` object and ``meta.request_id`` of a success envelope, or raise."""
        if not response.is_success:
            self._raise_for(response, what, idempotent=idempotent)
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            bad_response(what, "body is not a JSON object", None, idempotent=idempotent)
        meta = body.get("meta")
        request_id = opt_str(meta.get("request_id")) if isinstance(meta, dict) else None
        data = body.get("data")
        log.debug("neo %s -> %s (request %s)", what, response.status_code, request_id)
        return (data if isinstance(data, dict) else {}), request_id

    def _raise_for(self, response: httpx.Response, what: str, *, idempotent: bool) -> NoReturn:
        raise error_for(
            response, what, idempotent=idempotent, scrub=self._scrub, on_error=self.on_error
        )

    def _transport_error(
        self, exc: httpx.HTTPError, what: str, *, idempotent: bool
    ) -> UpstreamError:
        return transport_error(exc, what, idempotent=idempotent, on_error=self.on_error)

    def _scrub(self, text: str) -> str:
        secret = self._api_key.get_secret_value()
        return text.replace(secret, "***") if secret else text


# -- helpers -------------------------------------------------------------------------------


def _session_path(session_id: SessionId) -> str:
    return f"{_CHAT}/{quote(session_id, safe='')}"
