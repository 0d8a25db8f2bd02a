"""An httpx transport that sends through one aiohttp connection pool (Neo calls and SSE tails).

httpx stays the API of ``relay.neo`` (its request building, ``Response`` and exception types are
what the client and its tests are written against), but its default transport, httpcore, costs
more CPU per request than the rest of a turn's Neo work: pool bookkeeping that scans every pooled
connection, anyio stream wrappers and socket-readability probes (bench/README.md "Profile").
aiohttp — already the relay's server and the baseline's client — keeps connections per host in an
O(1) pool and parses HTTP in C. This module bridges the two: one shared ``aiohttp.ClientSession``
with one ``TCPConnector``, a response body streamed chunk by chunk, and every aiohttp failure
mapped onto the httpx exception that means the same thing, because ``relay.neo.http_errors``
decides from that type whether a call may have reached Neo: connect failures →
``httpx.ConnectError`` / ``ConnectTimeout`` (nothing sent: even a create may be repeated), a
dropped connection → ``httpx.RemoteProtocolError`` / ``ReadError`` and a stalled one →
``httpx.ReadTimeout`` (may have taken effect: a create is ambiguous). The ``httpx-aiohttp``
package does the same bridging but maps every ``ClientConnectionError`` — a server that dropped
the connection after receiving a request included — to ``ConnectTimeout``, which would make a
create that reached Neo look safe to repeat; hence this module.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp
import httpx
import yarl

# Checked in this order (most specific first): connect failures are the only ones that prove the
# request never left, so they must win over their base classes (ClientOSError, …).
_CONNECT: tuple[type[BaseException], ...] = (
    aiohttp.ClientConnectorError,  # refused, DNS, TLS handshake, proxy
    aiohttp.ServerFingerprintMismatch,  # the TLS peer was not the pinned one: nothing sent
)


class _Body(httpx.AsyncByteStream):
    """An aiohttp response body as an httpx stream: chunks as they arrive, errors mapped."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _mapped():
            # iter_any: whatever the socket delivered, one await per read (an SSE event is
            # usually one TCP segment), instead of fixed-size reassembly.
            async for chunk in self._response.content.iter_any():
                yield chunk

    async def aclose(self) -> None:
        # A body read to its end returns the connection to the pool; one abandoned midway (a
        # tail the relay stopped reading) closes it, as aiohttp cannot reuse it.
        self._response.release()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """``httpx.AsyncBaseTransport`` over one ``aiohttp.ClientSession``, created on first use
    (inside the running event loop) and closed by :meth:`aclose`. Several ``httpx.AsyncClient``
    may share one instance; ``aclose`` is idempotent.

    Args:
        limit: most connections open at once (aiohttp waits for a free one past it).
        keepalive: seconds an idle connection is kept for reuse.
    """

    def __init__(self, *, limit: int = 0, keepalive: float = 15.0) -> None:
        self._limit = limit
        self._keepalive = keepalive
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[tuple[float | None, float | None], aiohttp.ClientTimeout] = {}

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._limit,
                limit_per_host=0,
                keepalive_timeout=self._keepalive,
                # httpx's TLS defaults (certifi's CAs, SSL_CERT_FILE / SSL_CERT_DIR honoured), so
                # Neo and the blob store are trusted exactly as they were under httpcore.
                ssl=httpx.create_ssl_context(),
            )
            # No cookie jar, no auto-decompression, no raise_for_status: httpx does those.
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                timeout=aiohttp.ClientTimeout(total=None),
            )
        return self._session

    def _timeout(self, request: httpx.Request) -> aiohttp.ClientTimeout:
        """httpx's per-phase timeouts in aiohttp's terms, one object per distinct pair.

        httpx ``connect`` + ``pool`` → aiohttp ``connect`` (waiting for a pool slot and
        connecting), httpx ``read`` → ``sock_read`` (longest gap between reads, the same
        meaning); ``write`` has no aiohttp equivalent (request bodies here are small)."""
        spec: dict[str, float | None] = request.extensions.get("timeout", {})
        connect, pool = spec.get("connect"), spec.get("pool")
        key = (None if connect is None else connect + (pool or 0.0), spec.get("read"))
        timeout = self._timeouts.get(key)
        if timeout is None:
            timeout = self._timeouts[key] = aiohttp.ClientTimeout(
                total=None, connect=key[0], sock_connect=connect, sock_read=key[1]
            )
        return timeout

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            body: bytes | None = request.content or None
        except httpx.RequestNotRead:
            body = await request.aread() or None
        # httpx has already encoded the URL; encoded=True spares yarl a second pass.
        url = yarl.URL(str(request.url), encoded=True)
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw]
        with _mapped():
            response = await self._client().request(
                request.method,
                url,
                headers=headers,
                data=body,
                allow_redirects=False,
                timeout=self._timeout(request),
                # httpx already set Host, Accept, Accept-Encoding, User-Agent, Content-Length.
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            )
        extensions: dict[str, Any] = {"http_version": b"HTTP/1.1"}
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode("latin-1", "replace")
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_Body(response),
            request=request,
            extensions=extensions,
        )

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()


@contextmanager
def _mapped() -> Iterator[None]:
    """Re-raise an aiohttp failure as the httpx exception with the same meaning (module doc)."""
    try:
        yield
    except _CONNECT as exc:
        raise httpx.ConnectError(_text(exc)) from exc
    except aiohttp.ConnectionTimeoutError as exc:
        raise httpx.ConnectTimeout(_text(exc)) from exc
    except (aiohttp.SocketTimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise httpx.ReadTimeout(_text(exc)) from exc
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as exc:
        # The peer closed before (or while) sending the response: the request may have landed.
        raise httpx.RemoteProtocolError(_text(exc)) from exc
    except aiohttp.ClientResponseError as exc:  # an unparseable status line or headers
        raise httpx.RemoteProtocolError(_text(exc)) from exc
    except (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError) as exc:
        raise httpx.UnsupportedProtocol(_text(exc)) from exc
    except (aiohttp.ClientOSError, aiohttp.ClientConnectionError) as exc:  # reset, broken pipe
        raise httpx.ReadError(_text(exc)) from exc
    except aiohttp.ClientError as exc:
        raise httpx.TransportError(_text(exc)) from exc
    except TimeoutError as exc:
        # aiohttp's own timers (a caller's asyncio.timeout arrives here as CancelledError).
        raise httpx.ReadTimeout(_text(exc)) from exc


def _text(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
