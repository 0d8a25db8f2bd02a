"""``python -m bench.neo_tail``: the relay's own CPU per SSE event of the Neo tail, no sockets.

The end-to-end benchmark (``bench.run``) measures a whole turn on a shared machine, where a few
microseconds per event drown in the noise. This one runs the production ``NeoClient`` +
``tail_turn`` over an in-memory transport that yields one event per loop turn (a text-delta chunk
with a Redis-style id, as Neo sends them), so what it times is exactly the relay's per-event
Python: the httpx response stream, httpx-sse, the idle timer, dedupe, the JSON parse.
``--loopback MS`` reads the events over real sockets instead, from a child process that sends each
stream one every MS ms, so the HTTP transport and the event loop's socket work count too. It
prints the minimum and median of seven rounds of ``--streams`` concurrent tails, in microseconds
of this process's CPU per event; ``--uvloop`` runs it on uvloop. Used to decide the Neo-side
levers (bench/README.md "Neo side").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import httpx
from aiohttp import web
from pydantic import SecretStr

from relay.domain import SessionId
from relay.neo.client import NeoClient
from relay.neo.events import TailLimits, tail_turn

LIMITS = TailLimits()


def events(chunks: int) -> list[bytes]:
    body = [b'id: 1700000000000-1\ndata: {"type":"start","messageId":"m"}\n\n']
    for i in range(chunks):
        chunk = json.dumps({"type": "text-delta", "id": "t1", "delta": f"word{i} "})
        body.append(f"id: 1700000000000-{i + 2}\ndata: {chunk}\n\n".encode())
    body.append(f'id: 1700000000000-{chunks + 2}\ndata: {{"type":"finish"}}\n\n'.encode())
    return [*body, b"data: [DONE]\n\n"]


class _Body(httpx.AsyncByteStream):
    def __init__(self, body: list[bytes]) -> None:
        self._body = body

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for event in self._body:
            await asyncio.sleep(0)  # one event per loop turn, as from a socket
            yield event


class _Neo(httpx.AsyncBaseTransport):
    def __init__(self, body: list[bytes]) -> None:
        self._body = body

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        headers = {"content-type": "text/event-stream"}
        return httpx.Response(200, headers=headers, stream=_Body(self._body))


async def serve(port: int, chunks: int, interval: float) -> None:
    """``--serve``: the events over real HTTP, one every ``interval`` s per stream (a child
    process, so its CPU is not the relay's)."""
    body = events(chunks)

    async def tail(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        # The relay hangs up after [DONE], as it does on Neo: no error for the last write.
        with contextlib.suppress(ConnectionError):
            for event in body:
                await response.write(event)
                await asyncio.sleep(interval)
            await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/public-api/chat/sessions/{sid}/events", tail)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent goes


async def measure(
    streams: int, chunks: int, rounds: int = 7, base_url: str | None = None
) -> list[float]:
    body = events(chunks)
    transport = None if base_url else _Neo(body)
    async with NeoClient(
        base_url or "http://neo.invalid", SecretStr("k"), transport=transport
    ) as neo:

        async def one(i: int) -> None:
            got = [c async for c in tail_turn(neo, SessionId(f"s{i}"), since=None, limits=LIMITS)]
            assert len(got) == chunks + 2, len(got)

        await asyncio.gather(*(one(i) for i in range(4)))  # warm-up
        per_event = []
        for _ in range(rounds):
            started = time.process_time()
            await asyncio.gather(*(one(i) for i in range(streams)))
            per_event.append((time.process_time() - started) * 1e6 / (streams * len(body)))
    return sorted(per_event)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.neo_tail", description=__doc__)
    p.add_argument("--streams", type=int, default=50)
    p.add_argument("--chunks", type=int, default=200)
    p.add_argument("--uvloop", action="store_true")
    p.add_argument(
        "--loopback",
        type=float,
        metavar="MS",
        help="over real sockets: a child process serves each stream one event per MS ms",
    )
    p.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # the --loopback child
    args = p.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve, args.chunks, args.loopback / 1000))
        return
    server, base_url = None, None
    if args.loopback is not None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        argv = [sys.executable, "-m", "bench.neo_tail", "--serve", str(port)]
        argv += ["--chunks", str(args.chunks), "--loopback", str(args.loopback)]
        server = subprocess.Popen(argv, stdin=subprocess.PIPE)
        base_url = f"http://127.0.0.1:{port}"
        time.sleep(2)  # the child imports and listens
    try:
        run = measure(args.streams, args.chunks, base_url=base_url)
        if args.uvloop:
            import uvloop

            result = uvloop.run(run)
        else:
            result = asyncio.run(run)
    finally:
        if server is not None:
            server.terminate()
            server.wait()
    where = "loopback" if base_url else "in memory"
    loop = "uvloop" if args.uvloop else "asyncio"
    mid = result[len(result) // 2]
    print(f"{where}, {loop}: min {result[0]:.2f} median {mid:.2f} us CPU per event")


if __name__ == "__main__":
    main()
