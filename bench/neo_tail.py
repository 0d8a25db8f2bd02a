"""``python -m bench.neo_tail``: the relay's own CPU per SSE event of the Neo tail, no sockets.

The end-to-end benchmark (``bench.run``) measures a whole turn on a shared machine, where a few
microseconds per event drown in the noise. This one runs the production ``NeoClient`` +
``tail_turn`` over an in-memory transport that yields one event per loop turn (a text-delta chunk
with a Redis-style id, as Neo sends them), so what it times is exactly the relay's per-event
Python: the httpx response stream, httpx-sse, the idle timer, dedupe, the JSON parse. It prints
the minimum and median of seven rounds of ``--streams`` concurrent tails, in microseconds of
process CPU per event; ``--uvloop`` runs it on uvloop. Used to decide the Neo-side levers
(bench/README.md "Neo tail").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import AsyncIterator

import httpx
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


async def measure(streams: int, chunks: int, rounds: int = 7) -> list[float]:
    body = events(chunks)
    async with NeoClient("http://neo.invalid", SecretStr("k"), transport=_Neo(body)) as neo:

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
    args = p.parse_args()
    run = measure(args.streams, args.chunks)
    if args.uvloop:
        import uvloop

        result = uvloop.run(run)
    else:
        result = asyncio.run(run)
    loop = "uvloop" if args.uvloop else "asyncio"
    print(f"{loop}: min {result[0]:.2f} median {result[len(result) // 2]:.2f} us CPU per event")


if __name__ == "__main__":
    main()
