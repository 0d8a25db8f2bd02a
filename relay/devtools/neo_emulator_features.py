"""The emulated Neo's attachment, channel and approval endpoints (split out of ``neo_emulator``).

Upload grants with an emulated Azure SAS ``PUT`` ([UPIMG], [UPDOC]: the client enforces
``max_image_bytes``), install branding ([CHINSTALL]) and TIL decisions ([TILDEC], [TILLIST]).
A decision also releases a turn paused on that request (``neo_emulator_lifecycle``). A mixin of
:class:`relay.devtools.neo_emulator.NeoEmulator`; the ``{data, meta}`` / ``{error, meta}``
envelope helpers live here and serve the whole emulator.
"""

from __future__ import annotations

import secrets
import uuid
from typing import Any
from urllib.parse import quote

from aiohttp import web

from relay.devtools.neo_emulator_lifecycle import Decisions
from relay.devtools.neo_emulator_streams import EmulatedSession, json_object, now_iso

ACCEPTED_TYPES = (
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "application/pdf",
    "text/plain",
)


REQUEST_ID = web.RequestKey("request_id", str)


class FeatureHandlers:
    """Request handlers for uploads, install events and TIL requests, and the envelope helpers
    every handler of the emulator uses."""

    max_image_bytes: int
    blobs: dict[str, tuple[bytes, str | None]]
    branding: dict[tuple[str, str], dict[str, Any]]
    install_events: list[dict[str, Any]]
    til_forbidden: set[str]
    til_decisions: dict[str, dict[str, Any]]
    decisions: Decisions
    _grants: dict[str, str]
    sessions: dict[str, EmulatedSession]

    async def _injected(self, request: web.Request, kind: str) -> web.Response | None:
        raise NotImplementedError

    def _ok(self, request: web.Request, data: Any, status: int = 200) -> web.Response:
        meta = {"request_id": request[REQUEST_ID]}
        return web.json_response({"data": data, "meta": meta}, status=status)

    def _error(
        self,
        request: web.Request,
        status: int,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        error: dict[str, Any] = {"code": code, "message": message}
        if details is not None:
            error["details"] = details
        body = {"error": error, "meta": {"request_id": request[REQUEST_ID]}}
        return web.json_response(body, status=status, headers=headers)

    def _session(self, request: web.Request) -> EmulatedSession | None:
        return self.sessions.get(request.match_info["sid"])

    def _not_found(self, request: web.Request) -> web.Response:
        return self._error(request, 404, "not_found", "session not found")

    async def _upload_url(self, request: web.Request) -> web.StreamResponse:
        if (injected := await self._injected(request, "upload")) is not None:
            return injected
        session = self._session(request)
        if session is None:
            return self._not_found(request)
        body = await json_object(request) or {}
        content_type = body.get("content_type")
        if content_type not in ACCEPTED_TYPES:
            return self._error(
                request,
                400,
                "validation_error",
                f"content_type must be one of {', '.join(ACCEPTED_TYPES)}",
                details={"field": "content_type", "accepted": list(ACCEPTED_TYPES)},
            )
        filename = str(body.get("filename") or "upload").replace("/", "_")
        blob_path = f"chat/{session.id}/{uuid.uuid4().hex[:12]}/{filename}"
        signature = secrets.token_urlsafe(16)
        self._grants[signature] = blob_path
        url = f"{request.url.origin()}/blobs/{quote(blob_path)}?sig={signature}"
        data = {
            "upload_url": url,
            "blob_path": blob_path,
            "mime": content_type,
            "max_image_bytes": self.max_image_bytes,
        }
        return self._ok(request, data)

    async def _put_blob(self, request: web.Request) -> web.StreamResponse:
        if (injected := await self._injected(request, "blob")) is not None:
            return injected
        blob_path = self._grants.get(request.query.get("sig", ""))
        if blob_path is None or blob_path != request.match_info["path"]:
            return web.Response(status=403, headers={"x-ms-error-code": "AuthenticationFailed"})
        if request.headers.get("x-ms-blob-type") != "BlockBlob":
            return web.Response(status=400, headers={"x-ms-error-code": "MissingRequiredHeader"})
        data = await request.read()
        self.blobs[blob_path] = (data, request.headers.get("x-ms-blob-content-type"))
        return web.Response(status=201)

    # -- channels and approvals ---------------------------------------------------------------

    async def _install(self, request: web.Request) -> web.StreamResponse:
        if (injected := await self._injected(request, "install")) is not None:
            return injected
        body = await json_object(request) or {}
        bot_id, tenant = body.get("bot_id"), body.get("end_client_tenant_id")
        if not bot_id or not tenant:
            return self._error(
                request, 400, "validation_error", "bot_id and end_client_tenant_id are required"
            )
        self.install_events.append(body)
        brand = self.branding.get((str(bot_id), str(tenant)))
        data = {
            "display_name": (brand or {}).get("display_name", "Neo"),
            "matched": brand is not None,
            "welcome_message": (brand or {}).get("welcome_message"),
        }
        return self._ok(request, data)

    async def _til_list(self, request: web.Request) -> web.StreamResponse:
        """The decided requests, newest first, one page (``page_size`` 1-200) [TILLIST]."""
        if (injected := await self._injected(request, "til")) is not None:
            return injected
        try:
            size = int(request.query.get("page_size", "50"))
        except ValueError:
            size = 0
        if not 1 <= size <= 200:
            return self._error(request, 400, "validation_error", "page_size must be 1-200")
        items = [{"id": rid, **body} for rid, body in reversed(self.til_decisions.items())]
        return self._ok(request, items[:size])

    async def _til_decision(self, request: web.Request) -> web.StreamResponse:
        if (injected := await self._injected(request, "til")) is not None:
            return injected
        rid = request.match_info["rid"]
        body = await json_object(request) or {}
        if body.get("action") not in ("approve", "reject"):
            return self._error(request, 400, "validation_error", "action must be approve|reject")
        if rid in self.til_forbidden:
            return self._error(request, 403, "FORBIDDEN", "not allowed to decide this request")
        if rid in self.til_decisions:
            return self._error(request, 409, "already_resolved", "this request was already decided")
        self.til_decisions[rid] = body
        self.decisions.decide(rid)  # a turn paused on this request goes on
        user = body.get("acting_end_user")
        data = {
            "id": int(rid) if rid.isdigit() else rid,
            "status": "APPROVED" if body["action"] == "approve" else "REJECTED",
            "comment": body.get("note"),
            "decided_by": {"id": user, "name": body.get("acting_end_user_name") or user},
            "updated_at": now_iso(),
        }
        return self._ok(request, data)
