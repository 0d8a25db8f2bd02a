"""The aiohttp application: routes, start-up/shutdown of every component, health endpoints.

``create_app(settings)`` is the whole public surface of the service. ``POST /api/messages`` does
only what must happen before Teams gets its answer — size and type checks, Bot Framework
authentication, the serviceUrl allow-list, journaling the turn (which de-duplicates Teams'
re-deliveries) — and hands the turn to the background worker; nothing on this path waits for Neo
(DESIGN.md invariant 4).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from relay.allowlist import HostAllowlist
from relay.config import Settings
from relay.errors import AuthError, InboundError
from relay.neo.adapter import NeoAdapter
from relay.store import open_store
from relay.store.base import Store
from relay.teams.auth import InboundAuthenticator, MultiBotCredentialsFactory, TokenProvider
from relay.teams.connector import BotConnector
from relay.teams.inbound import Ignored, bot_id_of, parse_activity, to_turn
from relay.teams.presenter import TeamsSinks
from relay.turns import TurnPipeline
from relay.worker import ConversationWorker

log = logging.getLogger(__name__)


@dataclass
class Components:
    settings: Settings
    store: Store
    neo: NeoAdapter
    tokens: TokenProvider | None
    authenticator: InboundAuthenticator
    connector: BotConnector
    pipeline: TurnPipeline
    worker: ConversationWorker
    allowlist: HostAllowlist


COMPONENTS: web.AppKey[Components] = web.AppKey("components", Components)
SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)


def create_app(settings: Settings) -> web.Application:
    """Build the relay's aiohttp application; components start in ``on_startup``."""
    app = web.Application(client_max_size=settings.max_body_bytes)
    app.router.add_post("/api/messages", handle_messages)
    app.router.add_get("/healthz", handle_healthz)
    app.router.add_get("/readyz", handle_readyz)
    app.on_startup.append(_startup)
    app.on_shutdown.append(_shutdown)
    app[SETTINGS] = settings
    return app


async def _startup(app: web.Application) -> None:
    settings = app[SETTINGS]
    store = open_store(settings.database_url)
    await store.open()
    verify: str | bool = str(settings.login_ca_file) if settings.login_ca_file else True
    tokens = TokenProvider(settings, verify=verify) if settings.bots else None
    factory = MultiBotCredentialsFactory(settings, tokens)
    authenticator = InboundAuthenticator(settings, factory)
    await authenticator.start()
    allowlist = HostAllowlist.parse(settings.service_url_allowlist)
    connector = BotConnector(tokens=tokens, allowlist=allowlist)
    await connector.start()
    neo = NeoAdapter(settings)
    pipeline = TurnPipeline(store, neo, TeamsSinks(connector, store))
    worker = ConversationWorker(pipeline.run)
    app[COMPONENTS] = Components(
        settings, store, neo, tokens, authenticator, connector, pipeline, worker, allowlist
    )
    resumed = 0
    for turn in await store.unfinished_turns():
        resumed += worker.submit(turn)
    log.info("relay ready: %d bot(s), %d unfinished turn(s) resumed", len(settings.bots), resumed)


async def _shutdown(app: web.Application) -> None:
    c = app.get(COMPONENTS)
    if c is None:
        return
    await c.worker.drain(c.settings.shutdown_grace)
    await c.authenticator.stop()
    await c.connector.close()
    if c.tokens is not None:
        c.tokens.close()
    await c.neo.aclose()
    await c.store.close()


def _reject(status: int, reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=status)


async def handle_messages(request: web.Request) -> web.Response:
    c = request.app[COMPONENTS]
    if "application/json" not in request.headers.get("Content-Type", "").lower():
        return _reject(415, "Content-Type must be application/json")
    if request.content_length is not None and request.content_length > c.settings.max_body_bytes:
        return _reject(413, "body too large")
    try:
        raw = await request.content.read(c.settings.max_body_bytes + 1)
    except Exception:
        return _reject(400, "could not read body")
    if len(raw) > c.settings.max_body_bytes:
        return _reject(413, "body too large")
    try:
        body: Any = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return _reject(400, "body is not valid JSON")
    if not isinstance(body, dict):
        return _reject(400, "body must be a JSON object")
    try:
        activity = parse_activity(body)
        auth = await c.authenticator.authenticate(request.headers.get("Authorization"), activity)
    except AuthError as exc:
        log.info("rejected inbound request: %s", exc.reason)
        return _reject(401, exc.reason)
    except InboundError as exc:
        return _reject(exc.status, exc.reason)
    bot_id = auth.bot_id or bot_id_of(activity)
    if bot_id is None:
        return _reject(400, "activity has no recipient")
    if activity.service_url and not c.allowlist.allows(activity.service_url):
        log.warning("refused activity for bot %s: serviceUrl host not allowed", bot_id)
        return _reject(403, "serviceUrl is not allowed")
    outcome = to_turn(activity, bot_id)
    if isinstance(outcome, Ignored):
        log.debug("ignored activity: %s", outcome.reason)
        return web.Response(status=200)
    if await c.store.add_turn(outcome):
        c.worker.submit(outcome)
    else:
        log.info("duplicate delivery of activity %s acknowledged", outcome.activity_id)
    return web.Response(status=200)


async def handle_healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def handle_readyz(request: web.Request) -> web.Response:
    c = request.app.get(COMPONENTS)
    if c is None:
        return web.json_response({"status": "starting"}, status=503)
    try:
        await c.store.ping()
    except Exception as exc:
        return web.json_response(
            {"status": "store unreachable", "error": type(exc).__name__}, status=503
        )
    return web.json_response({"status": "ready"})
