"""Neo's error envelope and transport failures, mapped onto ``relay.errors`` (split from client).

Every failed Neo call ends here: the ``{error:{code,message,details?}, meta:{request_id}}``
envelope (neo-chat-api.md §a.3 [ERR]) is read — tolerating any other body — and the status, the
code and whether the call may have taken effect decide the exception class, so the pipeline
branches on what it may do next (errors.py) rather than on httpx types. ``client.py`` keeps the
calls; this module keeps the classification, which is the part reviewers check against the docs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, NoReturn

import httpx

from relay.errors import (
    AmbiguousError,
    CredentialError,
    PermanentError,
    RetryableError,
    UpstreamError,
    UserFacingError,
)
from relay.retry import parse_retry_after

log = logging.getLogger("relay.neo.client")

SERVICE = "neo"
OnError = Callable[[int | None, str | None], None]


def error_for(
    response: httpx.Response,
    what: str,
    *,
    idempotent: bool,
    scrub: Callable[[str], str],
    on_error: OnError | None,
) -> UpstreamError:
    """The exception for a non-2xx ``response`` (the caller raises it)."""
    status = response.status_code
    code, message, _, request_id = parse_error(response)
    message = scrub(message)
    log.info(
        "neo %s failed: %s %s (request %s)",
        what,
        status,
        code,
        request_id,
        extra={"request_id": request_id},
    )
    if on_error is not None:
        on_error(status, code)
    common: dict[str, Any] = {
        "service": SERVICE,
        "status": status,
        "code": code,
        "request_id": request_id,
    }
    if status in (429, 503) or (status >= 500 and idempotent):
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        return RetryableError(message, retry_after=retry_after, **common)
    if status >= 500 or status == 408:
        # A create that failed with 500/502/504 may still have happened (errors.py
        # AmbiguousError; peers-and-pitfalls.md §5 "2–3× delivery after 5xx").
        return AmbiguousError(message, **common)
    if status in (401, 403):
        return CredentialError(message, **common)
    if status == 409 and (code or "").lower() == "end_company_not_mapped":
        # The message is written for the end user and must be relayed verbatim [CS].
        return UserFacingError(message, **common)
    return PermanentError(message, **common)


def transport_error(
    exc: httpx.HTTPError, what: str, *, idempotent: bool, on_error: OnError | None
) -> UpstreamError:
    """The exception for a request that failed below HTTP (connect, read, pool)."""
    kind = type(exc).__name__
    message = f"{what}: {kind}"
    log.info("neo %s transport failure: %s", what, kind)
    if on_error is not None:
        on_error(None, kind)
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        # Nothing reached Neo, so even a create may be repeated.
        return RetryableError(message, service=SERVICE, code="connect_failed")
    if idempotent:
        return RetryableError(message, service=SERVICE, code="transport_error")
    return AmbiguousError(message, service=SERVICE, code="transport_error")


def opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def first_str(data: dict[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = data.get(key)
        if isinstance(value, str | int) and not isinstance(value, bool):
            return str(value)
    return None


def is_duplicate_code(code: str | None) -> bool:
    # The duplicate code string is undocumented (neo-chat-api.md §b item 12): accept any code
    # naming a duplicate, case-insensitively; any other 409 (e.g. session_archived) still raises.
    return code is not None and "duplicate" in code.lower()


def parse_error(response: httpx.Response) -> tuple[str | None, str, dict[str, Any], str | None]:
    """Read ``{error:{code,message,details?}, meta:{request_id}}``; tolerate any other body."""
    fallback = f"HTTP {response.status_code} {response.reason_phrase}".strip()
    try:
        body = response.json()
    except ValueError:
        body = None
    header_id = response.headers.get("x-request-id")
    if not isinstance(body, dict):
        return None, f"{fallback} (non-JSON error body)", {}, header_id
    error: dict[str, Any] = body["error"] if isinstance(body.get("error"), dict) else {}
    meta: dict[str, Any] = body["meta"] if isinstance(body.get("meta"), dict) else {}
    details: dict[str, Any] = error["details"] if isinstance(error.get("details"), dict) else {}
    code = opt_str(error.get("code"))
    message = opt_str(error.get("message")) or fallback
    return code, message, details, opt_str(meta.get("request_id")) or header_id


def bad_response(what: str, why: str, request_id: str | None, *, idempotent: bool) -> NoReturn:
    # A 2xx we cannot read still means the call took effect, so a create must not be replayed.
    cls = RetryableError if idempotent else AmbiguousError
    raise cls(
        f"{what}: unreadable response ({why})",
        service=SERVICE,
        code="invalid_response",
        request_id=request_id,
    )
