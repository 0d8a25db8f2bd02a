"""Bot Connector REST calls (send, update, typing) for every bot, on one aiohttp session.

Why not botbuilder's ``ConnectorClient`` / ``continue_conversation``: it builds a new msrest client
per call (≈ 12 ms of CPU, reference teams-platform.md §10), runs each request through ``requests``
in a thread pool, applies its own urllib3 retry policy to updates behind our back, and hides the
status code and ``Retry-After`` that pacing and Teams' streaming rules depend on. The wire format
is still botbuilder's: callers hand in the plain dicts of :mod:`relay.teams.activities`
(botbuilder's serialisation without msrest's per-object cost), encoded with orjson. Everything
here checks the ``serviceUrl`` against the allow-list *before* a token is fetched or a byte is
sent (DESIGN.md invariant 7), paces through the per-conversation limiter and the deployment's
per-tenant budget (``relay.teams.pacing``), and translates failures into :mod:`relay.errors`
classes so the retry policy in :mod:`relay.retry` can decide.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp
import orjson
from yarl import URL

from relay.allowlist import HostAllowlist
from relay.budgets import Budgets, LocalBudgets
from relay.domain import ActivityId, BotId, ConversationRef
from relay.errors import (
    AmbiguousError,
    CredentialError,
    PermanentError,
    RetryableError,
    StreamCancelled,
    StreamNotAllowed,
    StreamRejected,
    StreamTimedOut,
    UpstreamError,
)
from relay.retry import parse_retry_after
from relay.teams.activities import Payload
from relay.teams.pacing import (
    PER_CONVERSATION_WINDOWS,
    PER_TENANT_WINDOWS,
    SlidingWindowLimiter,
    tenant_key,
)

log = logging.getLogger(__name__)


class TokenSource(Protocol):
    """Where outbound Bot Framework tokens come from (``relay.teams.auth.TokenProvider``)."""

    async def token(self, bot_id: BotId) -> str: ...

    def invalidate(self, bot_id: BotId) -> None: ...


@dataclass(frozen=True, slots=True)
class SendResult:
    activity_id: ActivityId | None  # 201 {"id": ...}; a 202 {} has none
    status: int


# Hooks for metrics without importing them here: (operation, status or exception name).
OnResult = Callable[[str, str], None]


class BotConnector:
    """Posts activities into Teams conversations on behalf of any registered bot."""

    def __init__(
        self,
        *,
        tokens: TokenSource | None,
        allowlist: HostAllowlist,
        timeout: float = 20.0,
        on_result: OnResult | None = None,
        budgets: Budgets | None = None,
    ) -> None:
        self._tokens = tokens  # None: anonymous mode (local emulators) — no Authorization header
        self._allowlist = allowlist
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=min(timeout, 10.0))
        self._session: aiohttp.ClientSession | None = None
        self._per_conversation = SlidingWindowLimiter(PER_CONVERSATION_WINDOWS)
        # Per (bot, tenant): shared by every replica when the store is Redis (relay.budgets).
        self._budgets = budgets if budgets is not None else LocalBudgets()
        self._on_result = on_result

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, connector=aiohttp.TCPConnector(limit=512)
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(
        self, ref: ConversationRef, activity: Payload, *, idempotent: bool = False
    ) -> SendResult:
        """POST a new activity. ``idempotent`` marks typing/stream updates that may be repeated."""
        url = _conversation_url(ref, "activities")
        return await self._call("POST", ref, url, activity, idempotent=idempotent)

    async def update(self, ref: ConversationRef, activity_id: str, activity: Payload) -> SendResult:
        """PUT an existing activity in place (idempotent by nature)."""
        url = _conversation_url(ref, "activities", path_segment(activity_id))
        return await self._call("PUT", ref, url, activity, idempotent=True)

    async def _call(
        self, method: str, ref: ConversationRef, url: URL, activity: Payload, *, idempotent: bool
    ) -> SendResult:
        if not self._allowlist.allows(ref.service_url):
            # Refused before a token is fetched: a forged serviceUrl never sees the bot's token.
            raise PermanentError(
                "serviceUrl is not on RELAY_SERVICE_URL_ALLOWLIST",
                service="teams",
                code="ServiceUrlNotAllowed",
            )
        if self._session is None:
            await self.start()
        assert self._session is not None
        body = encode_activity(activity)
        headers = {"Content-Type": "application/json; charset=utf-8"}
        if self._tokens is not None:
            headers["Authorization"] = f"Bearer {await self._tokens.token(ref.bot_id)}"
        await self._per_conversation.acquire((ref.bot_id, ref.conversation_id))
        await self._budgets.acquire(tenant_key(ref.bot_id, ref.tenant_id), PER_TENANT_WINDOWS)
        op = f"{method} {activity.get('type')}"
        try:
            # No redirects: a 307/308 would re-send the activity to a host never allow-listed.
            async with self._session.request(
                method, url, data=body, headers=headers, allow_redirects=False
            ) as resp:
                text = await resp.text()
                status = resp.status
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        except (aiohttp.ClientConnectorError, aiohttp.ClientConnectionResetError) as exc:
            # Connection refused / reset before a response: for a create this may still have been
            # delivered if the reset came after the body was sent, so it is ambiguous.
            self._report(op, type(exc).__name__)
            cls = (
                RetryableError if isinstance(exc, aiohttp.ClientConnectorError) else AmbiguousError
            )
            raise cls(f"connection failed: {exc.__class__.__name__}", service="teams") from None
        except (TimeoutError, aiohttp.ClientError) as exc:
            self._report(op, type(exc).__name__)
            raise AmbiguousError(
                f"no response: {exc.__class__.__name__}", service="teams"
            ) from None
        self._report(op, str(status))
        if status in (200, 201, 202):
            return SendResult(activity_id=_response_id(text), status=status)
        if status == 401 and self._tokens is not None:
            self._tokens.invalidate(ref.bot_id)
        raise classify_failure(status, text, retry_after, idempotent=idempotent)

    def _report(self, op: str, outcome: str) -> None:
        if self._on_result is not None:
            self._on_result(op, outcome)


def encode_activity(activity: Payload) -> bytes:
    """The request body: orjson (UTF-8, compact), or the stdlib for what orjson refuses.

    orjson rejects lone surrogates (a ``\\ud83d`` split across two Neo chunks decodes to one) and
    non-string keys; ``json.dumps`` escapes the former and stringifies the latter, as before.
    """
    try:
        body: bytes = orjson.dumps(activity)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return json.dumps(activity, separators=(",", ":")).encode()
    return body


def path_segment(value: str) -> str:
    """``value`` percent-encoded as exactly one URL path segment.

    ``quote`` leaves ``.`` alone, and a segment that is ``.`` or ``..`` is a path step: a
    conversation id of ``..`` would send the reply to ``{serviceUrl}/v3/activities`` (issue 16).
    Dots are encoded only in such an all-dots segment, where they cannot mean anything else.
    """
    segment = quote(value, safe="")
    return segment.replace(".", "%2E") if segment.strip(".") == "" else segment


def _conversation_url(ref: ConversationRef, *tail: str) -> URL:
    """``{serviceUrl}/v3/conversations/{id}/...``, sent exactly as built (``encoded=True``).

    Without ``encoded=True`` yarl would decode ``%2E%2E`` and normalise the path again.
    """
    base = str(URL(ref.service_url.rstrip("/")))  # the serviceUrl itself, properly encoded
    path = "/".join(("v3", "conversations", path_segment(ref.conversation_id), *tail))
    return URL(f"{base}/{path}", encoded=True)


def _response_id(text: str) -> ActivityId | None:
    try:
        data = json.loads(text) if text else {}
    except ValueError:
        return None
    value = data.get("id") if isinstance(data, dict) else None
    return ActivityId(value) if isinstance(value, str) and value else None


def _error_fields(text: str) -> tuple[str | None, str]:
    try:
        data: Any = json.loads(text)
    except ValueError:
        return None, text[:200]
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        return err.get("code"), str(err.get("message") or "")[:500]
    if isinstance(data, dict) and "message" in data:
        return data.get("code"), str(data["message"])[:500]
    return None, text[:200]


def classify_failure(
    status: int, text: str, retry_after: float | None, *, idempotent: bool
) -> UpstreamError:
    """Map a Bot Connector failure to what the caller may do (reference teams-platform.md §1.1, §2).

    The streaming 403s all share the code ``ContentStreamNotAllowed``; only the message tells them
    apart, and two different messages contain "not allowed" (teams.py#500), so match precisely.
    """
    code, message = _error_fields(text)
    kw: dict[str, Any] = {"service": "teams", "status": status, "code": code}
    low = message.lower()
    if status == 429:
        return RetryableError(message or "throttled", retry_after=retry_after, **kw)
    if status == 403 and (code == "ContentStreamNotAllowed" or "content stream" in low):
        if "cancel" in low:  # "canceled" in the docs, "cancelled" in the wild
            return StreamCancelled(message, **kw)
        if "exceeded streaming time" in low:
            return StreamTimedOut(message, **kw)
        if "already completed" in low:
            return StreamRejected(message, **kw)
        if "size too large" in low or "previously streamed content" in low:
            return StreamRejected(message, **kw)
        return StreamNotAllowed(message, **kw)
    if status == 405 or (
        status == 400 and "streamingnotenabled" in f"{code} {low}".replace(" ", "")
    ):
        return StreamNotAllowed(message or "streaming not enabled here", **kw)
    if status == 401:
        return CredentialError(message or "bot token refused", **kw)
    if status in (412, 503):
        # Not processed: safe to repeat even for a create.
        return RetryableError(message or "unavailable", retry_after=retry_after, **kw)
    if status in (408, 500, 502, 504):
        if idempotent:
            return RetryableError(message or "server error", retry_after=retry_after, **kw)
        return AmbiguousError(message or "server error", **kw)
    return PermanentError(message or f"HTTP {status}", **kw)
