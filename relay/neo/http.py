"""The Neo client's HTTP plumbing: pools, timeouts, auth, the success envelope, error mapping.

Split out of ``relay.neo.client`` (which keeps the typed API calls): :class:`NeoHttp` owns the
``httpx.AsyncClient`` — over one aiohttp connection pool (``relay.neo.transport``), with explicit
per-phase timeouts — adds the ``Authorization`` header — the API key is a ``SecretStr`` unwrapped
only here, never logged and scrubbed from every error message — unwraps Neo's ``{data, meta}``
envelope and hands failures to ``relay.neo.http_errors`` (neo-chat-api.md §a.2-a.3).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, NoReturn, Protocol, Self

import httpx
from pydantic import SecretStr

from relay import fastjson
from relay.errors import UpstreamError
from relay.neo.http_errors import bad_response, error_for, opt_str, transport_error
from relay.neo.transport import AiohttpTransport

log = logging.getLogger("relay.neo.client")

USER_AGENT = "neo-teams-relay/0.1"
# Every answer in progress holds one connection for its SSE tail, so the pool must be as large as
# the turns one process runs at once (httpx's default of 100 once capped a relay at ~100 answers
# and failed the rest with PoolTimeout). The connections go through one aiohttp pool
# (``relay.neo.transport``): httpcore's pool scanned every pooled connection on each request, which
# made it the largest Neo cost of the event loop (bench/README.md "Profile").
MAX_CONNECTIONS = 5200
# Short calls wait for a slot *in front of* the pool, so a burst of new turns queues on an O(1)
# semaphore and can never take the connections the tails need.
CALL_CONCURRENCY = 64


class RequestBudget(Protocol):
    """Neo's rate budget (``relay.budgets.NeoBudget``): awaited before every request, told every
    response's status and headers (``X-RateLimit-*``, ``Retry-After``)."""

    async def acquire(self) -> None: ...

    def observe(self, status: int, headers: Mapping[str, str]) -> None: ...


class NeoHttp:
    """Pools, auth and envelope handling shared by every Neo call (base of ``NeoClient``)."""

    def __init__(
        self,
        base_url: str,
        api_key: SecretStr,
        *,
        connect_timeout: float = 10,
        request_timeout: float = 30,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """``transport`` replaces the shared aiohttp pool (tests); it is closed by ``aclose``."""
        self._api_key = api_key
        # Observer of every failed request, (status or None for transport, error code): metrics.
        self.on_error: Callable[[int | None, str | None], None] | None = None
        # The budget hook: None = no rate budget (RELAY_NEO_RATE_LIMIT=0, tools, tests).
        self.budget: RequestBudget | None = None
        self._connect_timeout = connect_timeout
        self._request_timeout = request_timeout
        self._call_slots = asyncio.Semaphore(CALL_CONCURRENCY)
        # One client for calls and SSE tails: a tail passes its own read timeout per request.
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            timeout=httpx.Timeout(
                connect=connect_timeout,
                read=request_timeout,
                write=request_timeout,
                pool=connect_timeout,
            ),
            headers={"User-Agent": USER_AGENT},
            transport=transport or AiohttpTransport(limit=MAX_CONNECTIONS),
            follow_redirects=False,
        )

    async def aclose(self) -> None:
        await self._http.aclose()  # closes the transport too

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- plumbing --------------------------------------------------------------------------

    def _bearer(self) -> str:
        return f"Bearer {self._api_key.get_secret_value()}"

    async def _call(
        self, method: str, path: str, *, json: Any, idempotent: bool
    ) -> tuple[dict[str, Any], str | None]:
        what = f"{method} {path}"
        response = await self._send(method, path, json=json, what=what, idempotent=idempotent)
        return self._unwrap(response, what, idempotent=idempotent)

    async def before_request(self) -> None:
        """Wait until Neo's budget has room for one more request (tails call it themselves,
        outside their first-byte timeout: ``relay.neo.events``)."""
        if self.budget is not None:
            await self.budget.acquire()

    def _observe(self, response: httpx.Response) -> None:
        if self.budget is not None:
            self.budget.observe(response.status_code, response.headers)

    async def _send(
        self, method: str, path: str, *, json: Any, what: str, idempotent: bool
    ) -> httpx.Response:
        await self.before_request()  # before the call slot: a budget wait holds no slot
        try:
            # The slot wait counts as the pool wait: same limit, same PoolTimeout as before.
            async with asyncio.timeout(self._connect_timeout):
                await self._call_slots.acquire()
        except TimeoutError:
            exc = httpx.PoolTimeout("no free Neo call slot")
            raise self._transport_error(exc, what, idempotent=idempotent) from None
        headers = {"Authorization": self._bearer()}
        content = None
        if json is not None:
            content = fastjson.dumps(json)
            headers["Content-Type"] = "application/json"
        try:
            response = await self._http.request(method, path, content=content, headers=headers)
            self._observe(response)
            return response
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
            body = fastjson.loads(response.content)
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
