"""relay.neo.transport against raw loopback servers: what reaches the wire, and which httpx
exception each way of failing becomes (the client decides from it whether a create may be
repeated, so a dropped connection must never look like a connect failure)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from pydantic import SecretStr

from relay.devtools.issuer import LocalIssuer
from relay.domain import BotId, SessionId, TenantId
from relay.errors import AmbiguousError, RetryableError
from relay.neo.client import NeoClient
from relay.neo.transport import AiohttpTransport

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawServer:
    """An asyncio TCP server whose every connection runs ``handler``; counts connections."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        finally:
            writer.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"


Serve = Callable[[Handler], Awaitable[RawServer]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[RawServer] = []

    async def start(handler: Handler) -> RawServer:
        raw = RawServer(handler)
        raw.server = await asyncio.start_server(raw._serve, "127.0.0.1", 0)
        servers.append(raw)
        return raw

    yield start
    for raw in servers:
        assert raw.server is not None
        raw.server.close()


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """The head and the body (by Content-Length) of one request."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return head, await reader.readexactly(length) if length else b""


def response(body: bytes, *, status: bytes = b"200 OK", extra: bytes = b"") -> bytes:
    head = b"HTTP/1.1 " + status + b"\r\nContent-Length: %d\r\n" % len(body) + extra + b"\r\n"
    return head + body


async def test_request_and_response_pass_through_on_one_reused_connection(serve: Serve) -> None:
    heads: list[bytes] = []

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head, body = await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            heads.append(head)
            extra = b"Set-Thing: a\r\nSet-Thing: b\r\nContent-Type: application/json\r\n"
            writer.write(response(body, status=b"201 Made Up", extra=extra))
            await writer.drain()

    server = await serve(echo)
    transport = AiohttpTransport()
    async with httpx.AsyncClient(base_url=server.url, transport=transport) as client:
        for n in range(2):
            r = await client.post("/p/a%20b?x=1%2F2", json={"n": n}, headers={"X-Key": "v"})
            assert r.status_code == 201
            assert r.reason_phrase == "Made Up"
            assert r.json() == {"n": n}
            assert r.headers.get_list("set-thing") == ["a", "b"]
    assert server.connections == 1  # kept alive and reused
    first = heads[0].decode().lower()
    assert first.startswith("post /p/a%20b?x=1%2f2 http/1.1")  # not re-quoted
    assert "x-key: v" in first
    assert "content-type: application/json" in first
    assert first.count("user-agent:") == 1  # httpx's, not a second one from aiohttp
    await transport.aclose()  # idempotent after the client closed it


async def test_body_is_streamed_as_it_arrives(serve: Serve) -> None:
    release = asyncio.Event()

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        await release.wait()
        writer.write(b"4\r\nlast\r\n0\r\n\r\n")
        await writer.drain()

    server = await serve(slow)
    async with (
        httpx.AsyncClient(transport=AiohttpTransport()) as client,
        client.stream("GET", server.url) as r,
    ):
        chunks = r.aiter_bytes()
        assert await anext(chunks) == b"first"  # before the server sent the rest
        release.set()
        assert b"".join([c async for c in chunks]) == b"last"


async def test_abandoned_stream_closes_its_connection(serve: Serve) -> None:
    eof = asyncio.Event()

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
        await writer.drain()
        await reader.read()  # returns at EOF: the client closed the connection
        eof.set()

    server = await serve(endless)
    async with httpx.AsyncClient(transport=AiohttpTransport()) as client:
        async with client.stream("GET", server.url) as r:
            assert await anext(r.aiter_bytes()) == b"abc"
        await asyncio.wait_for(eof.wait(), 5)


async def test_connection_refused_is_a_connect_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with httpx.AsyncClient(transport=AiohttpTransport()) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{port}/")


async def test_waiting_for_a_full_pool_is_a_connect_timeout(serve: Serve) -> None:
    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n")
        await writer.drain()
        await reader.read()

    server = await serve(hold)
    timeout = httpx.Timeout(5, connect=0.2, pool=0.0)
    transport = AiohttpTransport(limit=1)
    async with (
        httpx.AsyncClient(transport=transport, timeout=timeout) as client,
        client.stream("GET", server.url),  # holds the only connection
    ):
        with pytest.raises(httpx.ConnectTimeout):
            await client.get(server.url)


async def test_silence_is_a_read_timeout(serve: Serve) -> None:
    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await reader.read()

    server = await serve(mute)
    async with httpx.AsyncClient(transport=AiohttpTransport(), timeout=0.2) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.get(server.url)


async def test_drop_before_the_response_is_a_protocol_error(serve: Serve) -> None:
    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)  # the request arrived, then the connection goes

    server = await serve(drop)
    async with httpx.AsyncClient(transport=AiohttpTransport()) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post(server.url, json={})


async def test_drop_mid_body_is_a_protocol_error(serve: Serve) -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
        await writer.drain()

    server = await serve(cut)
    async with httpx.AsyncClient(transport=AiohttpTransport()) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(server.url)


async def test_garbage_status_line_is_a_protocol_error(serve: Serve) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()

    server = await serve(garbage)
    async with httpx.AsyncClient(transport=AiohttpTransport()) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(server.url)


async def test_client_classifies_a_dropped_create_as_ambiguous(serve: Serve) -> None:
    """The point of mapping by meaning: the create reached Neo, so it must not be repeated;
    a refused connection (nothing reached Neo) stays retryable."""

    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)

    server = await serve(drop)
    async with NeoClient(server.url, SecretStr("k")) as neo:
        with pytest.raises(AmbiguousError) as info:
            await neo.create_session(bot_id=BotId("b"), inbound_tenant_id=TenantId("t"), title="")
        assert info.value.code == "transport_error"
        with pytest.raises(RetryableError):
            await neo.reset_session(SessionId("s"))


async def test_tls_trusts_what_httpx_trusted(monkeypatch: pytest.MonkeyPatch) -> None:
    """httpx's TLS defaults: an unknown CA is a connect failure; SSL_CERT_FILE adds one."""
    with LocalIssuer() as issuer:  # an HTTPS server whose certificate only its own CA signs
        async with httpx.AsyncClient(transport=AiohttpTransport()) as client:
            with pytest.raises(httpx.ConnectError):
                await client.get(issuer.login_url)
        monkeypatch.setenv("SSL_CERT_FILE", issuer.ca_file)
        async with httpx.AsyncClient(transport=AiohttpTransport()) as client:
            response = await client.get(f"{issuer.login_url}/no-such-path")
        assert 400 <= response.status_code < 500  # a TLS handshake, then an HTTP answer
