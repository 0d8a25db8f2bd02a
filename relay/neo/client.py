"""Typed async calls to the Neo public API, with every failure translated into ``relay.errors``.

The ``relay.neo`` package is the only place that touches httpx. This module holds the typed calls
— one method per endpoint of neo-chat-api.md §d the relay uses — and turns each response into the
project's types; it is split along its seams: pools, auth and the ``{data, meta}`` envelope in
``relay.neo.http``; every failure (HTTP status, ``error.code``, transport errors) mapped onto the
relay's exception tree in ``relay.neo.http_errors``, so the pipeline branches on *what it may do
next* rather than on library types (neo-chat-api.md §a.3; peers-and-pitfalls.md §6.5 lesson 2);
the streaming exchanges (SSE tail, blob PUT) in ``relay.neo.sse``; result types in
``relay.neo.models``. ``tail`` is deliberately low level (one SSE connection, raw frames);
resume, dedupe, turn scoping and timeouts live in ``relay.neo.events``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Sequence
from typing import Any, Literal
from urllib.parse import quote

import httpx

from relay import fastjson
from relay.domain import BotId, EventId, ModelTier, SessionId, TenantId
from relay.neo.http import NeoHttp
from relay.neo.http_errors import (
    SERVICE,
    bad_response,
    first_str,
    is_duplicate_code,
    opt_str,
    parse_error,
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
_CHAT = "/public-api/chat/sessions"


class NeoClient(NeoHttp):
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
            body = fastjson.loads(response.content)
        except ValueError:
            body = None
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            bad_response(what, "data is not a list", None, idempotent=True)
        return [item for item in data if isinstance(item, dict)]

    # -- SSE tail --------------------------------------------------------------------------

    def tail(
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
        ``lastEventId`` semantics) is reported as None so callers can dedupe by id safely. The
        caller waits for Neo's budget first (:meth:`before_request`), outside its own timeouts.

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
        # The generator itself (no re-yielding wrapper: one layer less per event).
        return sse_frames(
            self._http,
            f"{_session_path(session_id)}/events",
            params=params,
            headers=headers,
            timeout=timeout,
            refused=lambda r: self._raise_for(r, "GET events", idempotent=True),
            transport=lambda e: self._transport_error(e, "GET events", idempotent=True),
            opened=self._observe,
        )


# -- helpers -------------------------------------------------------------------------------


def _session_path(session_id: SessionId) -> str:
    return f"{_CHAT}/{quote(session_id, safe='')}"
