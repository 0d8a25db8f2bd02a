"""The benchmark's baseline: the least a Teams → Neo pass-through must do, written only for it.

aiohttp and nothing else of the relay: the same inbound JWT check (PyJWT, RS256, against the
same JWKS, issuer / audience / expiry / ``serviceurl`` claim), an immediate 200, then per turn the
same Neo calls (session per conversation, post the message, read the SSE tail) and the same Teams
posts (an informative update, cumulative ``typing`` updates cut at paragraph ends and sent
``interval`` after the previous answer, one final message). No botbuilder, no journal, no
retries, no dedupe, no metrics: whatever the relay spends beyond this is the price of those.
Configuration comes as one JSON argument from ``bench.run``, including the event loop to run on
(the relay's: uvloop when installed, ``relay/event_loop.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import sys
import time
from typing import Any

import aiohttp
import jwt
from aiohttp import web

from bench.common import HOST


class Baseline:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.interval = float(cfg["interval"])
        self.bots = {b["app_id"]: b for b in cfg["bots"]}
        self.keys: dict[str, Any] = {}
        self.tokens: dict[str, str] = {}
        self.sessions: dict[str, str] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.http: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=300)
        )
        async with self.http.get(self.cfg["openid_metadata_url"]) as r:
            jwks_uri = (await r.json())["jwks_uri"]
        async with self.http.get(jwks_uri) as r:
            for k in (await r.json())["keys"]:
                if "msteams" in k.get("endorsements", []):
                    self.keys[k["kid"]] = jwt.PyJWK(k).key
        tls = ssl.create_default_context(cafile=self.cfg["ca_file"])
        for bot in self.bots.values():  # bot tokens once per bot, like any sane client
            form = {
                "grant_type": "client_credentials",
                "client_id": bot["app_id"],
                "client_secret": bot["secret"],
                "scope": "https://api.botframework.com/.default",
            }
            url = f"{self.cfg['login_url']}/{bot['tenant_id']}/oauth2/v2.0/token"
            async with self.http.post(url, data=form, ssl=tls) as r:
                self.tokens[bot["app_id"]] = (await r.json())["access_token"]

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        if self.http is not None:
            await self.http.close()

    def authenticate(self, header: str, activity: dict[str, Any]) -> str:
        token = header.removeprefix("Bearer ")
        kid = jwt.get_unverified_header(token).get("kid")
        claims = jwt.decode(
            token,
            self.keys[kid],
            algorithms=["RS256"],
            audience=list(self.bots),
            issuer=self.cfg["issuer"],
            leeway=300,
        )
        if claims.get("serviceurl") != activity.get("serviceUrl"):
            raise jwt.InvalidTokenError("serviceurl")
        return str(claims["aud"])

    async def messages(self, request: web.Request) -> web.Response:
        activity = await request.json()
        try:
            bot = self.authenticate(request.headers.get("Authorization", ""), activity)
        except (jwt.PyJWTError, KeyError):
            return web.json_response({"error": "unauthorized"}, status=401)
        if activity.get("type") == "message":
            task = asyncio.create_task(self.turn(bot, activity))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        return web.json_response({}, status=200)

    async def neo(self, method: str, path: str, body: Any = None) -> Any:
        assert self.http is not None
        url = f"{self.cfg['neo_url']}/public-api/chat/sessions{path}"
        headers = {"Authorization": f"Bearer {self.cfg['neo_key']}"}
        async with self.http.request(method, url, json=body, headers=headers) as r:
            return (await r.json())["data"]

    async def teams(self, bot: str, activity: dict[str, Any], body: dict[str, Any]) -> Any:
        assert self.http is not None
        conv = activity["conversation"]["id"]
        url = f"{activity['serviceUrl'].rstrip('/')}/v3/conversations/{conv}/activities"
        body = {
            **body,
            "from": activity["recipient"],
            "recipient": activity["from"],
            "conversation": activity["conversation"],
            "replyToId": activity["id"],
        }
        headers = {"Authorization": f"Bearer {self.tokens[bot]}"}
        async with self.http.post(url, json=body, headers=headers) as r:
            return await r.json()

    async def turn(self, bot: str, activity: dict[str, Any]) -> None:
        conv = activity["conversation"]["id"]
        sid = self.sessions.get(conv)
        if sid is None:
            created = await self.neo(
                "POST",
                "",
                {"managed_agent_key": "NEO_SUPPORT", "bot_id": bot, "title": "bench"},
            )
            sid = self.sessions[conv] = created["id"]
        posted = await self.neo("POST", f"/{sid}/messages", {"message": activity["text"]})
        state: dict[str, Any] = {"text": "", "done": False, "changed": asyncio.Event()}
        reader = asyncio.create_task(self.read_events(sid, posted["since_cursor"], state))
        try:
            await self.stream(bot, activity, state)
        finally:
            reader.cancel()

    async def read_events(self, sid: str, since: str, state: dict[str, Any]) -> None:
        assert self.http is not None
        url = f"{self.cfg['neo_url']}/public-api/chat/sessions/{sid}/events"
        headers = {"Authorization": f"Bearer {self.cfg['neo_key']}"}
        async with self.http.get(url, params={"since": since}, headers=headers) as r:
            async for line in r.content:
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    break
                chunk = json.loads(data)
                if chunk.get("type") == "text-delta":
                    state["text"] += chunk["delta"]
                    state["changed"].set()
        state["done"] = True
        state["changed"].set()

    async def stream(self, bot: str, activity: dict[str, Any], state: dict[str, Any]) -> None:
        def info(kind: str, seq: int | None, sid: str | None) -> dict[str, Any]:
            e: dict[str, Any] = {"type": "streaminfo", "streamType": kind}
            if seq is not None:
                e["streamSequence"] = seq
            if sid is not None:
                e["streamId"] = sid
            return e

        first = {"type": "typing", "text": "Working on it…"}
        first["entities"] = [info("informative", 1, None)]
        stream_id = (await self.teams(bot, activity, first))["id"]
        not_before, seq, shown = time.monotonic() + self.interval, 1, ""
        while not state["done"]:
            state["changed"].clear()
            cut = state["text"].rfind("\n\n")
            candidate = state["text"][:cut].rstrip() if cut > 0 else ""
            if candidate == shown:
                await state["changed"].wait()
                continue
            await asyncio.sleep(max(0.0, not_before - time.monotonic()))
            candidate = state["text"][: state["text"].rfind("\n\n")].rstrip()
            seq += 1
            update = {"type": "typing", "text": candidate}
            update["entities"] = [info("streaming", seq, stream_id)]
            await self.teams(bot, activity, update)
            not_before, shown = time.monotonic() + self.interval, candidate
        await asyncio.sleep(max(0.0, not_before - time.monotonic()))
        final = {"type": "message", "text": state["text"].rstrip()}
        final["entities"] = [info("final", None, stream_id)]
        await self.teams(bot, activity, final)


async def serve(cfg: dict[str, Any]) -> None:
    baseline = Baseline(cfg)
    await baseline.start()
    app = web.Application(client_max_size=256 * 1024)
    app.router.add_post("/api/messages", baseline.messages)
    app.router.add_get("/readyz", lambda r: web.json_response({"status": "ready"}))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, HOST, int(cfg["port"])).start()
    loop = asyncio.get_running_loop()
    stdin_closed = loop.run_in_executor(None, sys.stdin.read)  # ends when bench.run goes away
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stdin_closed, float(cfg.get("max_seconds", 1800)))
    await baseline.close()
    await runner.cleanup()


def main(cfg: dict[str, Any]) -> None:
    """Run on the event loop the relay runs on (``bench.run`` says which): a fair ratio."""
    if cfg.get("event_loop") == "uvloop":
        import uvloop

        uvloop.run(serve(cfg))
    else:
        asyncio.run(serve(cfg))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
