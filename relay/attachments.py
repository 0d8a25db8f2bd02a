"""The files step of a turn: Teams download → Neo upload grant → SAS PUT → ``attachments``.

Neo takes at most six attachments per turn and never sees the bytes (they go straight to blob
storage), so the client must enforce ``max_image_bytes`` itself (neo-chat-api.md §a.4 [AM],
[UPIMG], [UPDOC]). Teams labels a pasted picture only ``image/*`` (teams-platform.md §5), so the
real type is read from the image's first bytes. Every file that cannot be passed on is explained to
the user in one short notice, and the turn goes ahead with the rest; a message that had only files,
none of them usable, ends with that notice instead of an empty question to the agent. This module
is core: downloads (``relay.teams.files``) and uploads (``relay.neo.adapter``) sit behind protocols.
"""

from __future__ import annotations

import logging
from typing import Protocol

from relay.commands import Messenger
from relay.domain import ConversationRef, InboundFile, SessionId, Turn, UploadedFile
from relay.errors import RelayError, UpstreamError
from relay.retry import DOWNLOAD, NEO, retry_call

log = logging.getLogger(__name__)

MAX_ATTACHMENTS = 6  # per turn [AM]
TOO_LARGE = "too_large"
HOST_NOT_ALLOWED = "host_not_allowed"

_IMAGE_EXT = {"image/png": "png", "image/jpeg": "jpg", "image/gif": "gif", "image/webp": "webp"}


class FileFetcher(Protocol):
    """Downloads one inbound file, at most ``max_bytes`` (``relay.teams.files.TeamsFileFetcher``).

    Raises ``PermanentError`` with code ``too_large`` / ``host_not_allowed``, or another
    :class:`relay.errors.UpstreamError` for a failed download.
    """

    async def fetch(self, ref: ConversationRef, file: InboundFile, *, max_bytes: int) -> bytes: ...


class UploadNeo(Protocol):
    async def upload_file(
        self, session_id: SessionId, *, data: bytes, mime: str, filename: str | None
    ) -> UploadedFile: ...


def sniff_image(data: bytes) -> str | None:
    """The image type the bytes really are (PNG, JPEG, GIF, WebP), else None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def _label(file: InboundFile, index: int) -> str:
    name = (file.name or "").replace("*", "").replace("`", "").strip()
    return f"**{name[:80]}**" if name else f"image {index + 1}"


def _notice(exc: RelayError, label: str) -> str:
    """One line telling the user why a file was left out (Neo's own words where it has them)."""
    code = exc.code if isinstance(exc, UpstreamError) else None
    if code == TOO_LARGE and isinstance(exc, UpstreamError):
        return f"{label} is too large to pass on: {exc.message}."
    if code == HOST_NOT_ALLOWED:
        return f"I couldn't fetch {label}: it isn't stored in a place I'm allowed to download from."
    if isinstance(exc, UpstreamError) and exc.service == "neo" and exc.status == 400:
        # The upload grant refuses a content type with a message naming the accepted ones.
        return f"{label} can't be passed to the agent: {exc.message}"
    rid = exc.request_id if isinstance(exc, UpstreamError) else None
    ref = f" (reference: {rid})" if rid else ""
    return f"I couldn't pass on {label} this time.{ref}"


class UnsupportedType(RelayError):
    """A file the relay can tell Neo will not take (e.g. an ``image/*`` that is no image)."""


class AttachmentStep:
    """Uploads a turn's files to Neo; says which ones were left out and why."""

    def __init__(
        self, fetcher: FileFetcher, neo: UploadNeo, messenger: Messenger, *, max_bytes: int
    ) -> None:
        self._fetcher = fetcher
        self._neo = neo
        self._messenger = messenger
        self._max_bytes = max_bytes

    async def prepare(self, turn: Turn, session_id: SessionId) -> list[UploadedFile]:
        """Upload up to six of ``turn.files``; the user hears about every file left out."""
        notices: list[str] = []
        if len(turn.files) > MAX_ATTACHMENTS:
            notices.append(
                f"You sent {len(turn.files)} files; the agent takes at most {MAX_ATTACHMENTS} "
                f"per message, so I passed on the first {MAX_ATTACHMENTS}."
            )
        uploaded: list[UploadedFile] = []
        for index, file in enumerate(turn.files[:MAX_ATTACHMENTS]):
            try:
                uploaded.append(await self._one(turn, session_id, file, index))
            except UnsupportedType as exc:
                notices.append(f"{_label(file, index)} {exc}")
            except RelayError as exc:
                log.info("attachment %d of turn %s left out: %s", index, turn.turn_id, exc)
                notices.append(_notice(exc, _label(file, index)))
        if notices:
            await self._messenger.say(turn.ref, "\n\n".join(notices))
        return uploaded

    async def _one(
        self, turn: Turn, session_id: SessionId, file: InboundFile, index: int
    ) -> UploadedFile:
        data = await retry_call(
            lambda: self._fetcher.fetch(turn.ref, file, max_bytes=self._max_bytes),
            DOWNLOAD,
            idempotent=True,  # a GET
            what="attachment download",
        )
        mime, filename = file.content_type, file.name
        sniffed = sniff_image(data)
        if mime.startswith("image/") or sniffed:
            if sniffed is None:
                raise UnsupportedType(
                    "doesn't look like a PNG, JPEG, GIF or WebP image, so I couldn't pass it on."
                )
            mime = sniffed  # the bytes win over Teams' "image/*" or a misleading extension
            filename = filename or f"image-{index + 1}.{_IMAGE_EXT[sniffed]}"
        return await retry_call(
            lambda: self._neo.upload_file(session_id, data=data, mime=mime, filename=filename),
            NEO,
            idempotent=True,  # a new grant and a new blob each time; nothing visible repeats
            what="neo attachment upload",
        )
