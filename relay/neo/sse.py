"""The two streaming HTTP exchanges of the Neo client: the SSE tail and the blob PUT.

Split out of ``relay.neo.client``, which keeps the JSON calls and builds these requests (auth,
``since`` / ``Last-Event-Id``, timeouts). For the tail, this module reads the
``text/event-stream`` with httpx-sse and yields one :class:`SseFrame` per event; resume, dedupe,
turn scoping and time limits are ``relay.neo.events``' job. An ``id`` the decoder carries over
from an earlier event (SSE ``lastEventId`` semantics) is reported as None, so callers can dedupe by
id safely (neo-chat-api.md §a.4 [TAIL], §b items 1 and 5).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import NoReturn

import httpx
from httpx_sse import SSEError, aconnect_sse

from relay.domain import EventId
from relay.errors import PermanentError, RetryableError, UpstreamError
from relay.neo.http_errors import SERVICE
from relay.neo.models import SseFrame, UploadGrant
from relay.retry import parse_retry_after


async def sse_frames(
    http: httpx.AsyncClient,
    url: str,
    *,
    params: dict[str, str] | None,
    headers: dict[str, str],
    timeout: httpx.Timeout,
    refused: Callable[[httpx.Response], NoReturn],
    transport: Callable[[httpx.HTTPError], UpstreamError],
    opened: Callable[[httpx.Response], None] | None = None,
) -> AsyncGenerator[SseFrame, None]:
    """Yield the events of one connection until the body ends; errors via ``refused`` /
    ``transport`` (the client's mapping onto ``relay.errors``); ``opened`` sees the response
    head (its rate-limit headers) first."""
    previous_id = ""
    try:
        async with aconnect_sse(
            http, "GET", url, params=params, headers=headers, timeout=timeout
        ) as source:
            response = source.response
            if opened is not None:
                opened(response)
            if not response.is_success:
                await response.aread()
                refused(response)
            if response.status_code == 204:  # "no active stream" in the SDK's resume API
                return
            async for sse in source.aiter_sse():
                own_id = sse.id if sse.id and sse.id != previous_id else None
                previous_id = sse.id or previous_id
                yield SseFrame(
                    id=EventId(own_id) if own_id else None, event=sse.event or None, data=sse.data
                )
    except SSEError as exc:
        raise PermanentError(
            "neo events did not answer with text/event-stream", service=SERVICE, code="not_sse"
        ) from exc
    except httpx.HTTPError as exc:
        raise transport(exc) from exc


async def put_blob(
    http: httpx.AsyncClient,
    grant: UploadGrant,
    data: bytes,
    *,
    transport: Callable[[httpx.HTTPError], UpstreamError],
) -> None:
    """PUT the bytes to the SAS URL: no ``Authorization`` header, the signature is the URL.

    ``max_image_bytes`` must be enforced by the client because the API never sees the bytes
    (neo-chat-api.md §a.4 "Attachment upload grant"); it is applied to ``image/*`` only, as its
    name says. Azure errors come back as XML, so the code is read from ``x-ms-error-code``.
    """
    limit = grant.max_image_bytes
    if limit is not None and grant.mime.startswith("image/") and len(data) > limit:
        raise PermanentError(
            f"image is {len(data)} bytes, Neo accepts at most {limit}",
            service=SERVICE,
            code="too_large",
        )
    headers = {"x-ms-blob-type": "BlockBlob", "x-ms-blob-content-type": grant.mime}
    try:
        response = await http.put(grant.upload_url, content=data, headers=headers)
    except httpx.HTTPError as exc:
        raise transport(exc) from exc
    if response.is_success:
        return
    code = response.headers.get("x-ms-error-code") or f"http_{response.status_code}"
    message = f"blob upload refused: {response.reason_phrase or response.status_code}"
    if response.status_code == 429 or response.status_code >= 500:
        raise RetryableError(
            message,
            service=SERVICE,
            status=response.status_code,
            code=code,
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
        )
    # A refused SAS (403) is the grant's problem, not our API key: ask for a new grant.
    raise PermanentError(message, service=SERVICE, status=response.status_code, code=code)
