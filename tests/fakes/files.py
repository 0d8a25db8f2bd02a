"""A recording file host on 127.0.0.1: stands in for SharePoint/OneDrive ``downloadUrl``s.

It serves whatever bytes a test puts in :attr:`FileServer.files` and records every request with
its ``Authorization`` header, so a test can prove the bot token never reached a non-Bot-Framework
host (DESIGN.md invariant 7). ``/slow/<name>`` streams the file in small pieces, so a size cap has
to cut the download off while it is still arriving.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class FileRequest:
    path: str
    authorization: str | None


@dataclass
class FileServer:
    files: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    requests: list[FileRequest] = field(default_factory=list)
    base_url: str = ""
    _runner: web.AppRunner | None = None

    def url(self, name: str, *, slow: bool = False) -> str:
        return f"{self.base_url}/{'slow' if slow else 'files'}/{name}"

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/files/{name}", self._serve)
        app.router.add_get("/slow/{name}", self._serve_slowly)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.base_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _record(self, request: web.Request) -> tuple[bytes, str] | None:
        self.requests.append(FileRequest(request.path, request.headers.get("Authorization")))
        return self.files.get(request.match_info["name"])

    async def _serve(self, request: web.Request) -> web.Response:
        found = self._record(request)
        if found is None:
            return web.Response(status=404)
        return web.Response(body=found[0], content_type=found[1])

    async def _serve_slowly(self, request: web.Request) -> web.StreamResponse:
        found = self._record(request)
        if found is None:
            return web.Response(status=404)
        response = web.StreamResponse(headers={"Content-Type": found[1]})
        response.enable_chunked_encoding()  # no Content-Length: only the streamed cap can stop it
        await response.prepare(request)
        data = found[0]
        for start in range(0, len(data), 1024):
            await response.write(data[start : start + 1024])
            await asyncio.sleep(0)
        await response.write_eof()
        return response
