"""Downloads the files and images a Teams user sent, without ever leaking the bot's token.

Two kinds arrive (teams-platform.md §5): a pasted picture is a Bot Framework attachment URL that
answers 401 without ``Authorization: Bearer <bot token>``; a paperclip file carries a
pre-authenticated SharePoint/OneDrive ``downloadUrl`` that needs no token at all. Both URLs come
from the request body, so each is checked before anything is sent: the bot token goes only to a
Bot Framework host (``relay.allowlist.BOT_FRAMEWORK_TOKEN_HOSTS``) or to the very origin of the
conversation's ``serviceUrl`` (which the webhook already checked against its allow-list and the
JWT's ``serviceurl`` claim binds) — DESIGN.md invariant 7; a file URL must match
``RELAY_FILE_DOWNLOAD_ALLOWLIST``. Redirects are followed by hand (at most three), each hop checked
by the same rule, so a redirect cannot carry the token elsewhere. Bodies are streamed and cut off
at ``max_bytes``; every request has a total timeout.
"""

from __future__ import annotations

import logging
from urllib.parse import urljoin, urlsplit

import aiohttp

from relay.allowlist import BOT_FRAMEWORK_TOKEN_HOSTS, HostAllowlist
from relay.attachments import HOST_NOT_ALLOWED, TOO_LARGE
from relay.domain import ConversationRef, InboundFile
from relay.errors import PermanentError, RetryableError
from relay.teams.connector import TokenSource

log = logging.getLogger(__name__)

MAX_REDIRECTS = 3
_CHUNK = 64 * 1024
_TOKEN_HOSTS = HostAllowlist.parse(list(BOT_FRAMEWORK_TOKEN_HOSTS))


_DEFAULT_PORTS = {"https": 443, "http": 80}


def _origin(url: str) -> tuple[str, str, int | None] | None:
    """(scheme, host, port) with the scheme's default port filled in, so ``:443`` compares equal."""
    try:
        parts = urlsplit(url)
        if parts.username is not None or parts.password is not None:
            return None  # credentials in a URL are never ours to forward
        scheme = parts.scheme.lower()
        port = parts.port if parts.port is not None else _DEFAULT_PORTS.get(scheme)
        return (scheme, (parts.hostname or "").lower(), port)
    except ValueError:
        return None


def token_may_go_to(url: str, ref: ConversationRef) -> bool:
    """May the bot token be sent to ``url``? A Bot Framework host over https on port 443, or the
    conversation's own serviceUrl origin — scheme, host and port."""
    origin = _origin(url)
    if origin is None or not origin[1]:
        return False
    if origin[0] == "https" and origin[2] == 443 and _TOKEN_HOSTS.allows(url):
        return True
    return origin == _origin(ref.service_url)


def _size_text(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n // 1024} KB" if n >= 1024 else f"{n} B"


class TeamsFileFetcher:
    """``relay.attachments.FileFetcher`` for Teams inline images and paperclip files."""

    def __init__(
        self,
        *,
        tokens: TokenSource | None,
        file_allowlist: HostAllowlist,
        timeout: float = 30.0,
    ) -> None:
        self._tokens = tokens  # None: anonymous mode (local emulators) — never a token
        self._files = file_allowlist
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=min(timeout, 10.0))
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _allowed(self, url: str, ref: ConversationRef, file: InboundFile) -> bool:
        return token_may_go_to(url, ref) if file.needs_bot_token else self._files.allows(url)

    async def fetch(self, ref: ConversationRef, file: InboundFile, *, max_bytes: int) -> bytes:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        url = file.url
        for _hop in range(MAX_REDIRECTS + 1):
            if not self._allowed(url, ref, file):
                log.warning("refused attachment download from %s", urlsplit(url).hostname)
                raise PermanentError(
                    "download host not allowed", service="teams", code=HOST_NOT_ALLOWED
                )
            headers = {}
            if file.needs_bot_token and self._tokens is not None:
                headers["Authorization"] = f"Bearer {await self._tokens.token(ref.bot_id)}"
            location = await self._get(url, headers, max_bytes, ref)
            if isinstance(location, bytes):
                return location
            url = urljoin(url, location)
        raise PermanentError("too many redirects", service="teams", code="download_failed")

    async def _get(
        self, url: str, headers: dict[str, str], max_bytes: int, ref: ConversationRef
    ) -> bytes | str:
        """The body, or the ``Location`` of a redirect."""
        assert self._session is not None
        try:
            async with self._session.get(url, headers=headers, allow_redirects=False) as resp:
                if resp.status in (301, 302, 303, 307, 308) and resp.headers.get("Location"):
                    return resp.headers["Location"]
                self._check_status(resp.status, ref)
                if resp.content_length is not None and resp.content_length > max_bytes:
                    raise _too_large(max_bytes)
                body = bytearray()
                async for chunk in resp.content.iter_chunked(_CHUNK):
                    body += chunk
                    if len(body) > max_bytes:
                        raise _too_large(max_bytes)  # stop reading: never hold more than that
                return bytes(body)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise RetryableError(
                f"download failed: {exc.__class__.__name__}",
                service="teams",
                code="download_failed",
            ) from None

    def _check_status(self, status: int, ref: ConversationRef) -> None:
        if 200 <= status < 300:
            return
        if status == 401 and self._tokens is not None:
            self._tokens.invalidate(ref.bot_id)  # a stale token: the retry fetches a fresh one
            raise RetryableError("download refused (401)", service="teams", status=status)
        if status == 429 or status >= 500:
            raise RetryableError(f"download failed ({status})", service="teams", status=status)
        raise PermanentError(
            f"download failed ({status})", service="teams", status=status, code="download_failed"
        )


def _too_large(max_bytes: int) -> PermanentError:
    return PermanentError(
        f"it is larger than {_size_text(max_bytes)}", service="teams", code=TOO_LARGE
    )
