"""The aiohttp application: routes, start-up/shutdown of every component, health endpoints.

``create_app(settings)`` is the whole public surface of the service. ``POST /api/messages`` does
only what must happen before Teams gets its answer — size and type checks, the body's shape
(``relay.teams.guard``), Bot Framework authentication, the channel and serviceUrl allow-lists,
journaling the turn (which de-duplicates Teams' re-deliveries) — and hands the turn to the
background worker; nothing on this path waits for Neo (DESIGN.md invariant 4). ``/metrics`` is
not on this application's port but on a private listener of its own (``RELAY_METRICS_PORT``).
"""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage

from relay.admission import AdmissionGate
from relay.allowlist import HostAllowlist
from relay.budgets import Budgets, NeoBudget, open_budgets
from relay.config import Settings
from relay.errors import AuthError, ConfigError, InboundError
from relay.neo.adapter import NeoAdapter
from relay.ops.logs import bot_secret_values, register_secrets
from relay.ops.metrics import RelayMetrics
from relay.ops.task_dump import TaskDumper
from relay.registry import BotRegistry, RegistryReloader
from relay.replicas import ConversationLeases
from relay.start_slots import StartSlots
from relay.store import open_store
from relay.store.base import Store
from relay.store.lifecycle import RetentionSweeper
from relay.teams.auth import InboundAuthenticator, MultiBotCredentialsFactory, TokenProvider
from relay.teams.busy import TeamsBusyNotice
from relay.teams.connector import BotConnector
from relay.teams.dispatch import Features, InboundDispatcher
from relay.teams.guard import check_activity, load_body
from relay.teams.inbound import bot_id_of, parse_activity
from relay.teams.presenter import SinkOptions, TeamsSinks
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
# The live bot registry (relay/registry.py) and what reloads it on SIGHUP / file change.
REGISTRY: web.AppKey[BotRegistry] = web.AppKey("registry", BotRegistry)
RELOADER: web.AppKey[RegistryReloader] = web.AppKey("registry_reloader", RegistryReloader)
METRICS: web.AppKey[RelayMetrics] = web.AppKey("metrics", RelayMetrics)
# Commands, files, greetings, approvals, feedback (relay/teams/dispatch.py).
FEATURES: web.AppKey[Features] = web.AppKey("features", Features)
DISPATCHER: web.AppKey[InboundDispatcher] = web.AppKey("dispatcher", InboundDispatcher)
# Conversation leases: one replica at a time per conversation (relay/replicas.py).
LEASES: web.AppKey[ConversationLeases] = web.AppKey("leases", ConversationLeases)
# The private metrics listener (RELAY_METRICS_HOST/PORT) and the URL it answers on.
METRICS_RUNNER: web.AppKey[web.AppRunner] = web.AppKey("metrics_runner", web.AppRunner)
METRICS_URL: web.AppKey[str] = web.AppKey("metrics_url", str)
# Deletes what is older than RELAY_RETENTION (relay/store/lifecycle.py).
SWEEPER: web.AppKey[RetentionSweeper] = web.AppKey("retention_sweeper", RetentionSweeper)
TASK_DUMPER: web.AppKey[TaskDumper] = web.AppKey("task_dumper", TaskDumper)


class _QuietBadRequests(logging.Filter):
    """aiohttp answers a malformed HTTP request (an 8 KB header line, a broken request line) with
    400 itself, but logs it as an error with a traceback: on a public port that lets anyone fill
    the logs with tracebacks. Such a record becomes one INFO line naming the refusal."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, BadHttpMessage):
            record.msg, record.args = "refused a malformed HTTP request: %s", (type(exc).__name__,)
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


_QUIET_BAD_REQUESTS = _QuietBadRequests()
# At most RELAY_MAX_ACTIVE_TURNS conversations run; the rest wait journaled (relay/admission.py).
ADMISSION: web.AppKey[AdmissionGate] = web.AppKey("admission", AdmissionGate)
# Teams' per-tenant and Neo's rate budgets, in Redis when replicas share one (relay/budgets.py).
BUDGETS: web.AppKey[Budgets] = web.AppKey("budgets", Budgets)


def create_app(settings: Settings) -> web.Application:
    """Build the relay's aiohttp application; components start in ``on_startup``."""
    logging.getLogger("aiohttp.server").addFilter(_QUIET_BAD_REQUESTS)  # idempotent: one object
    metrics = RelayMetrics(bots=[b.app_id for b in settings.bots])
    app = web.Application(
        client_max_size=settings.max_body_bytes, middlewares=[metrics.middleware()]
    )
    app[METRICS] = metrics
    # No /metrics here: it lists every registered bot id (an MSP's customer list) with its
    # volumes, so it is served only on the private listener `_start_metrics` opens.
    app.router.add_post("/api/messages", handle_messages)
    app.router.add_get("/healthz", handle_healthz)
    app.router.add_get("/readyz", handle_readyz)
    app.on_startup.append(_startup)
    app.on_shutdown.append(_shutdown)
    app.on_cleanup.append(_stop_metrics)
    app[SETTINGS] = settings
    app[REGISTRY] = BotRegistry(settings.bots)
    return app


async def _startup(app: web.Application) -> None:
    settings, metrics = app[SETTINGS], app[METRICS]
    dumper = app[TASK_DUMPER] = TaskDumper()  # kill -USR1: what every task waits on
    dumper.start()
    metrics.attach_retries()
    metrics.attach_feedback()
    store = metrics.timed_store(open_store(settings.database_url, retention=settings.retention))
    await store.open()
    sweeper = app[SWEEPER] = RetentionSweeper(store, settings.retention)
    sweeper.start()
    verify: str | bool = str(settings.login_ca_file) if settings.login_ca_file else True
    registry = app[REGISTRY]
    metrics.known_bots = registry  # bot labels follow reloads; new bots' secrets are redacted
    registry.subscribe(lambda _: register_secrets(bot_secret_values(registry.bots)))
    tokens = TokenProvider(settings, registry=registry, verify=verify) if settings.bots else None
    factory = MultiBotCredentialsFactory(settings, tokens)
    authenticator = InboundAuthenticator(settings, factory)
    await authenticator.start()
    if settings.bots_file is not None and settings.bots:  # never in anonymous mode
        reloader = RegistryReloader(
            registry,
            settings.bots_file,
            env=settings.environment,  # secrets resolve where the settings' did (relay demo)
            interval=settings.bots_reload_interval,
        )
        await reloader.start()
        app[RELOADER] = reloader
    allowlist = HostAllowlist.parse(settings.service_url_allowlist)
    budgets = app[BUDGETS] = open_budgets(settings.database_url)
    connector = BotConnector(
        tokens=tokens, allowlist=allowlist, on_result=metrics.teams_result, budgets=budgets
    )
    await connector.start()
    neo = NeoAdapter(settings)
    neo.client.on_error = metrics.neo_error
    neo_budget = None
    if settings.neo_rate_limit:
        neo_budget = NeoBudget(
            budgets, limit=settings.neo_rate_limit, window=settings.neo_rate_window
        )
        neo.client.budget = neo_budget  # every Neo request waits for it and reports to it
    features = app[FEATURES] = Features(settings, store, neo, connector, tokens)
    pipeline = TurnPipeline(
        store,
        neo,
        metrics.observe_sinks(TeamsSinks(connector, store, SinkOptions.from_settings(settings))),
        turn_deadline=settings.turn_deadline,
        commands=features.commands,
        files=features.files,
        notices=features.messenger,
        approval_follow_seconds=settings.approval_follow_seconds,
    )
    features.use_pipeline(pipeline)  # /reset cancels running turns; approvals start follow-ups
    run = metrics.observe_runner(pipeline.run)
    leases = app[LEASES] = ConversationLeases(store, run, ttl=settings.lease_seconds)
    # Why no lease with a single-process store (SQLite): there is no other replica to hand a
    # conversation to, the worker already runs it in order, and a renewal merely late under CPU
    # load would cancel our own turn (bench at 200/s: 5,018 leases "lost", 613 turns failed).
    single = bool(getattr(store, "single_process", False))
    starts = StartSlots(settings.max_starting_turns)
    worker = ConversationWorker(run if single else leases.run, starts=starts)
    gate = app[ADMISSION] = AdmissionGate(
        worker,
        store.unfinished_conversation_turns,
        max_active=settings.max_active_turns,
        notifier=TeamsBusyNotice(connector, store),
        busy_after=settings.busy_notice_after,
        max_lag=settings.admission_max_lag_ms / 1000,
        starts=starts,
        budget=neo_budget,
    )
    worker.on_idle = gate.released
    worker.on_park = gate.parked  # a turn waiting for Neo's budget waits journaled, in the gate
    pipeline.before_neo = gate.before_neo
    gate.start()
    app[DISPATCHER] = features.dispatcher(gate.submit)
    app[COMPONENTS] = Components(
        settings, store, neo, tokens, authenticator, connector, pipeline, worker, allowlist
    )
    resumed = 0
    for turn in await store.unfinished_turns():
        resumed += gate.submit(turn)
    # Picks up conversations whose replica died; with one process, turns a run left unfinished.
    leases.start_sweeper(gate.adopt)
    await _start_metrics(app)
    log.info("relay ready: %d bot(s), %d unfinished turn(s) resumed", len(settings.bots), resumed)


async def freeze_startup_heap(app: web.Application) -> None:
    """Start-up hook of the ``relay serve`` process (not of apps built in tests): move every
    object alive after start-up (modules, botbuilder's and msrest's tables, ~90,000 objects) out
    of the garbage collector's sight. Otherwise each full collection walks them all, 70–120 ms
    with the loop stopped on the 2-core bench machine, and the webhook's p99 is that pause."""
    gc.collect()
    gc.freeze()
    log.debug("gc: %d start-up objects frozen", gc.get_freeze_count())


async def _start_metrics(app: web.Application) -> None:
    """``GET /metrics`` on its own listener, for Prometheus only (default 127.0.0.1:9464)."""
    settings = app[SETTINGS]
    metrics_app = web.Application()
    metrics_app.router.add_get("/metrics", app[METRICS].handle)
    runner = web.AppRunner(metrics_app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.metrics_host, settings.metrics_port).start()
    except OSError as exc:
        await runner.cleanup()
        where = f"{settings.metrics_host}:{settings.metrics_port}"
        reason = f"cannot listen on {where}: {exc.strerror}"
        raise ConfigError("RELAY_METRICS_PORT", reason) from None
    app[METRICS_RUNNER] = runner
    host, port = runner.addresses[0][:2]
    app[METRICS_URL] = f"http://{host}:{port}/metrics"
    log.info("metrics on %s", app[METRICS_URL])


async def _stop_metrics(app: web.Application) -> None:
    if (runner := app.get(METRICS_RUNNER)) is not None:
        await runner.cleanup()


async def _shutdown(app: web.Application) -> None:
    if (dumper := app.get(TASK_DUMPER)) is not None:
        dumper.stop()
    app[METRICS].detach_retries()
    app[METRICS].detach_feedback()
    if (sweeper := app.get(SWEEPER)) is not None:
        await sweeper.stop()
    c = app.get(COMPONENTS)
    if c is None:
        return
    if (reloader := app.get(RELOADER)) is not None:
        await reloader.stop()
    await app[DISPATCHER].close(c.settings.shutdown_grace)
    await app[LEASES].stop()
    await app[ADMISSION].close()
    await c.worker.drain(c.settings.shutdown_grace)
    await app[FEATURES].close()
    await c.authenticator.stop()
    await c.connector.close()
    if c.tokens is not None:
        c.tokens.close()
    await c.neo.aclose()
    await app[BUDGETS].aclose()
    await c.store.close()


async def _read_limited(request: web.Request, limit: int) -> bytes:
    """The body, or its first ``limit`` bytes; ``content.read(n)`` alone returns only what is
    buffered so far, which truncates a body that arrives in several TCP segments."""
    parts: list[bytes] = []
    size = 0
    while size < limit:
        part = await request.content.read(limit - size)
        if not part:
            break
        parts.append(part)
        size += len(part)
    return b"".join(parts)


def _reject(status: int, reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=status)


async def handle_messages(request: web.Request) -> web.Response:
    c = request.app[COMPONENTS]
    if "application/json" not in request.headers.get("Content-Type", "").lower():
        return _reject(415, "Content-Type must be application/json")
    if request.content_length is not None and request.content_length > c.settings.max_body_bytes:
        return _reject(413, "body too large")
    try:
        raw = await _read_limited(request, c.settings.max_body_bytes + 1)
    except Exception:
        return _reject(400, "could not read body")
    if len(raw) > c.settings.max_body_bytes:
        return _reject(413, "body too large")
    try:
        # Bounded depth, repaired text, sane ids and a serviceUrl — before anything trusts the
        # body (relay.teams.guard): a 5xx from this endpoint is a bug, whatever the input.
        body = load_body(raw)
        check_activity(body)
        activity = parse_activity(body)
        auth = await c.authenticator.authenticate(request.headers.get("Authorization"), activity)
    except AuthError as exc:
        log.info("rejected inbound request: %s", exc.reason)
        return _reject(401, exc.reason)
    except InboundError as exc:
        return _reject(exc.status, exc.reason)
    bot_id = auth.bot_id or bot_id_of(activity)
    request.app[METRICS].activity(activity.type, bot_id)
    if bot_id is None:
        return _reject(400, "activity has no recipient")
    if str(activity.channel_id or "").lower() not in c.settings.channels:
        # A Teams relay: Web Chat / Direct Line traffic for a registered bot carries no tenant
        # and must never reach Neo (RELAY_CHANNELS).
        log.info("refused %r activity for bot %s: channel not served", activity.channel_id, bot_id)
        return _reject(403, "channel is not served by this relay")
    if activity.service_url is not None and not c.allowlist.allows(activity.service_url):
        log.warning("refused activity for bot %s: serviceUrl host not allowed", bot_id)
        return _reject(403, "serviceUrl is not allowed")
    return await request.app[DISPATCHER].dispatch(activity, bot_id)


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
