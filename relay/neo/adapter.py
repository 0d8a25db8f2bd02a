"""Adapts the Neo client to the pipeline's :class:`relay.turns.NeoApi` seam.

The pipeline is written against a small protocol in the project's own types so that it never
imports httpx; this module is the one place that knows both sides. It also turns the settings'
time limits into the tail's :class:`relay.neo.events.TailLimits`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Literal

from relay.commands import Greeting
from relay.config import Settings
from relay.domain import BotId, EventId, ModelTier, SessionId, TenantId, UploadedFile
from relay.neo.chunks import ReplyAssembler
from relay.neo.client import NeoAttachment, NeoClient
from relay.neo.events import TailLimits, tail_turn
from relay.turn_seams import NewSession, Posted, TailScope


class NeoAdapter:
    """``NeoApi`` implemented with :class:`NeoClient` and :func:`tail_turn`."""

    def __init__(self, settings: Settings, *, client: NeoClient | None = None) -> None:
        self.client = client or NeoClient(
            settings.neo_api_base_url,
            settings.neo_api_key,
            connect_timeout=settings.neo_connect_timeout,
            request_timeout=settings.neo_request_timeout,
        )
        self._limits = TailLimits.from_settings(settings)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def create_session(
        self, *, bot_id: BotId, tenant_id: TenantId | None, title: str
    ) -> NewSession:
        s = await self.client.create_session(
            bot_id=bot_id, inbound_tenant_id=tenant_id, title=title
        )
        return NewSession(
            session_id=s.session_id, show_progress=s.show_progress, request_id=s.request_id
        )

    async def post_message(
        self,
        session_id: SessionId,
        *,
        text: str,
        client_message_id: str,
        model_tier: ModelTier,
        attachments: Sequence[UploadedFile] = (),
    ) -> Posted:
        p = await self.client.post_message(
            session_id,
            message=text,
            client_message_id=client_message_id,
            model_tier=model_tier,
            attachments=[NeoAttachment(a.blob_path, a.mime, a.filename) for a in attachments],
        )
        return Posted(
            since_cursor=p.since_cursor,
            chat_turn_id=p.chat_turn_id,
            show_progress=p.show_progress,
            duplicate=p.duplicate,
            request_id=p.request_id,
        )

    async def upload_file(
        self, session_id: SessionId, *, data: bytes, mime: str, filename: str | None
    ) -> UploadedFile:
        """upload-url, then the SAS PUT (which refuses images over ``max_image_bytes`` first)."""
        grant = await self.client.upload_url(session_id, content_type=mime, filename=filename)
        await self.client.put_blob(grant, data)
        return UploadedFile(blob_path=grant.blob_path, mime=grant.mime, filename=filename)

    async def reset_session(self, session_id: SessionId) -> None:
        await self.client.reset_session(session_id)

    async def install_event(self, *, bot_id: BotId, tenant_id: TenantId) -> Greeting:
        b = await self.client.install_event(bot_id=bot_id, end_client_tenant_id=tenant_id)
        return Greeting(
            matched=b.matched, welcome_message=b.welcome_message, display_name=b.display_name
        )

    async def til_decision(
        self,
        til_request_id: str,
        *,
        action: Literal["approve", "reject"],
        acting_end_user: str | None,
        acting_end_user_name: str | None,
    ) -> None:
        await self.client.til_decision(
            til_request_id,
            action=action,
            acting_end_user=acting_end_user,
            acting_end_user_name=acting_end_user_name,
        )

    def tail(
        self,
        session_id: SessionId,
        *,
        since: EventId | None,
        on_event_id: Callable[[EventId], Awaitable[None]],
        scope: TailScope | None = None,
    ) -> AsyncIterator[dict[str, object]]:
        return tail_turn(
            self.client,
            session_id,
            since=since,
            limits=self._limits,
            on_event_id=on_event_id,
            scope=scope,
        )

    def assembler(self) -> ReplyAssembler:
        return ReplyAssembler()
