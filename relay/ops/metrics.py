"""Prometheus metrics: what an operator needs to see the relay is answering, and how fast.

One :class:`RelayMetrics` per application, each on its own ``CollectorRegistry``, so several apps in
one process (the tests) never clash and ``GET /metrics`` shows only its own app. The counters are
fed without the measured modules knowing about Prometheus: the Bot Connector and the Neo client
report through their result hooks, the store is wrapped in a timing proxy, the worker's runner and
the reply sinks in thin observers, and ``relay.retry`` calls a module-level hook list. Per streamed
chunk the only work added is one boolean test in :class:`_ObservedSink` (DESIGN.md "Performance
notes": metrics are amortised, never per chunk).

Label values are bounded and never secret (invariant 7): bot labels are registered Entra app ids
(public identifiers) or ``unregistered``, activity types come from a fixed list, error codes are
squeezed to ``[a-z0-9_]`` and truncated, and nothing taken from a header or body is used verbatim.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import time
from collections.abc import Awaitable, Callable, Container, Iterable
from contextvars import ContextVar
from typing import Any, cast

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from relay import feedback, retry
from relay.domain import Reply, Turn, TurnState
from relay.errors import AmbiguousError
from relay.ops.logs import turn_context
from relay.store.base import Store
from relay.turns import ReplySink, SinkFactory

_ACTIVITY_TYPES = frozenset(
    {
        "message",
        "conversationUpdate",
        "installationUpdate",
        "invoke",
        "messageReaction",
        "messageUpdate",
        "messageDelete",
        "typing",
        "event",
        "endOfConversation",
    }
)
# Latency buckets (seconds): an answer's first text typically lands in 1–10 s, a full agent turn
# can take minutes (sse_total_timeout defaults to 900 s).
_TURN_BUCKETS = (0.25, 0.5, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 300, 600, 900)
_STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
_CODE = re.compile(r"[^a-z0-9_]+")

_active: ContextVar[RelayMetrics | None] = ContextVar("relay_metrics", default=None)


def _code_label(code: str | None) -> str:
    """An upstream error code as a bounded label: lower-case ``[a-z0-9_]``, at most 40 chars."""
    if not code:
        return "none"
    return _CODE.sub("_", code.lower()).strip("_")[:40] or "none"


def _status_label(status: str) -> str:
    # A status code, or a transport exception's class name; anything else collapses.
    return status if status.isdigit() or status.isidentifier() else "other"


class RelayMetrics:
    """Every relay metric, on one registry.

    ``known_bots`` bounds the ``bot`` label: the app wiring points it at the live bot registry,
    so bots added by a reload are labelled by id and any other id is ``unregistered``.
    """

    def __init__(self, bots: Iterable[str] = ()) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.started_at = time.time()
        self.known_bots: Container[str] = frozenset(b.lower() for b in bots)
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.activities = Counter(
            "relay_activities",
            "Authenticated Teams activities by type and bot",
            ["type", "bot"],
            registry=r,
        )
        self.inbound = Counter(
            "relay_inbound_responses",
            "POST /api/messages answers by HTTP status",
            ["status"],
            registry=r,
        )
        self.turns = Counter("relay_turns", "Turns that ended, by outcome", ["outcome"], registry=r)
        self.first_text = Histogram(
            "relay_turn_first_text_seconds",
            "Activity arrival to the first answer text handed to the Teams sink",
            buckets=_TURN_BUCKETS,
            registry=r,
        )
        self.final_answer = Histogram(
            "relay_turn_final_answer_seconds",
            "Activity arrival to the final answer delivered to Teams",
            buckets=_TURN_BUCKETS,
            registry=r,
        )
        self.active_streams = Gauge(
            "relay_active_streams",
            "Turns with an open reply sink (Neo tail + Teams output)",
            registry=r,
        )
        self.neo_errors = Counter(
            "relay_neo_errors",
            "Failed Neo API calls by HTTP status (or transport) and code",
            ["status", "code"],
            registry=r,
        )
        self.teams_requests = Counter(
            "relay_teams_requests",
            "Bot Connector calls by operation and status",
            ["operation", "status"],
            registry=r,
        )
        self.teams_errors = Counter(
            "relay_teams_errors",
            "Failed Bot Connector calls by operation and status",
            ["operation", "status"],
            registry=r,
        )
        self.throttled = Counter(
            "relay_throttled", "HTTP 429 answers from upstream services", ["service"], registry=r
        )
        self.retries = Counter(
            "relay_retries",
            "Retries scheduled by relay.retry, by policy and error class",
            ["policy", "kind"],
            registry=r,
        )
        self.feedback = Counter(
            "relay_feedback",
            "Thumbs up/down submissions on answers, by reaction (like, dislike, other)",
            ["reaction"],
            registry=r,
        )
        self.store_seconds = Histogram(
            "relay_store_seconds",
            "Store call latency by operation",
            ["operation"],
            buckets=_STORE_BUCKETS,
            registry=r,
        )

    # -- call-site hooks -------------------------------------------------------------------

    def bot_label(self, bot_id: str | None) -> str:
        if bot_id and bot_id.lower() in self.known_bots:
            return bot_id.lower()
        return "unregistered"

    def activity(self, activity_type: str | None, bot_id: str | None) -> None:
        kind = activity_type if activity_type in _ACTIVITY_TYPES else "other"
        self.activities.labels(kind, self.bot_label(bot_id)).inc()

    def teams_result(self, operation: str, status: str) -> None:
        """``relay.teams.connector.OnResult``: one call per Bot Connector request."""
        op = operation.replace("ActivityTypes.", "")[:40]  # botbuilder's enum, by name
        status = _status_label(status)
        self.teams_requests.labels(op, status).inc()
        if status not in ("200", "201", "202"):
            self.teams_errors.labels(op, status).inc()
        if status == "429":
            self.throttled.labels("teams").inc()

    def neo_error(self, status: int | None, code: str | None) -> None:
        """``relay.neo.client`` error hook: one call per failed Neo request."""
        label = str(status) if status is not None else "transport"
        self.neo_errors.labels(label, _code_label(code)).inc()
        if status == 429:
            self.throttled.labels("neo").inc()

    def retried(self, policy: retry.RetryPolicy, error: BaseException) -> None:
        kind = "ambiguous" if isinstance(error, AmbiguousError) else "retryable"
        self.retries.labels(policy.name, kind).inc()

    def turn_ended(self, outcome: str) -> None:
        self.turns.labels(outcome).inc()

    # -- wiring ----------------------------------------------------------------------------

    def attach_retries(self) -> None:
        """Count retries made by this app's tasks (and by tasks of no app) until detached."""
        retry.ON_RETRY.append(self._on_retry)

    def detach_retries(self) -> None:
        if self._on_retry in retry.ON_RETRY:
            retry.ON_RETRY.remove(self._on_retry)

    def attach_feedback(self) -> None:
        """Count feedback recorded by this app's tasks (relay.feedback.ON_FEEDBACK)."""
        feedback.ON_FEEDBACK.append(self._on_feedback)

    def detach_feedback(self) -> None:
        if self._on_feedback in feedback.ON_FEEDBACK:
            feedback.ON_FEEDBACK.remove(self._on_feedback)

    def _on_feedback(self, bot_id: str, reaction: str) -> None:
        owner = _active.get()
        if owner is None or owner is self:
            self.feedback.labels(reaction if reaction in ("like", "dislike") else "other").inc()

    def _on_retry(self, policy: retry.RetryPolicy, error: BaseException) -> None:
        owner = _active.get()
        if owner is None or owner is self:
            self.retried(policy, error)

    def timed_store(self, store: Store) -> Store:
        return cast(Store, _TimedStore(store, self.store_seconds))

    def observe_sinks(self, sinks: SinkFactory) -> SinkFactory:
        return _ObservedSinks(sinks, self)

    def observe_runner(
        self, run: Callable[[Turn], Awaitable[None]]
    ) -> Callable[[Turn], Awaitable[None]]:
        """Wrap the worker's runner: correlated logs inside the turn, its outcome counted."""

        async def observed(turn: Turn) -> None:
            token = _active.set(self)
            try:
                with turn_context(turn):
                    await run(turn)
            except asyncio.CancelledError:
                self.turn_ended("interrupted")  # shutdown: the next start resumes it
                raise
            finally:
                _active.reset(token)
            if turn.state.is_final:
                self.turn_ended(turn.state.value)
            else:
                self.turn_ended("unfinished")

        return observed

    def middleware(self) -> Any:
        """aiohttp middleware: counts /api/messages answers, marks the request as this app's."""

        @web.middleware
        async def metrics_middleware(
            request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
        ) -> web.StreamResponse:
            if request.path != "/api/messages":
                return await handler(request)
            token = _active.set(self)
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                self.inbound.labels(str(exc.status)).inc()
                raise
            finally:
                _active.reset(token)
            self.inbound.labels(str(response.status)).inc()
            return response

        return metrics_middleware

    async def handle(self, request: web.Request) -> web.Response:
        """``GET /metrics``: Prometheus text 0.0.4, or OpenMetrics when the scraper asks for it."""
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encoder(self.registry), headers={"Content-Type": content_type})


class _TimedStore:
    """Forwards every call to the wrapped store, timing its coroutine methods.

    Generic on purpose: a method added to the ``Store`` protocol later is timed without a change
    here. Each wrapper is built once per method name and cached on the instance.
    """

    def __init__(self, inner: Store, histogram: Histogram) -> None:
        self._inner = inner
        self._histogram = histogram

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not inspect.iscoroutinefunction(attr):
            return attr
        child = self._histogram.labels(name)

        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await attr(*args, **kwargs)
            finally:
                child.observe(time.perf_counter() - started)

        setattr(self, name, timed)
        return timed


class _ObservedSinks:
    def __init__(self, inner: SinkFactory, metrics: RelayMetrics) -> None:
        self._inner = inner
        self._metrics = metrics

    def open(self, turn: Turn, *, segment: int = 0, streamed: bool = True) -> ReplySink:
        sink = self._inner.open(turn, segment=segment, streamed=streamed)
        return _ObservedSink(sink, turn, self._metrics)


class _ObservedSink:
    """Times a turn's first text and final answer; counts the sink as an active stream.

    Latencies are measured from the journaled arrival (``turn.created_at``) and only for turns
    this process received and ran from the start: a turn resumed after a restart would report the
    outage, not the relay's speed.
    """

    def __init__(self, inner: ReplySink, turn: Turn, metrics: RelayMetrics) -> None:
        self._inner = inner
        self._metrics = metrics
        self._arrived = turn.created_at
        self._timed = (
            turn.state is TurnState.RECEIVED
            and turn.attempts == 0
            and turn.created_at >= metrics.started_at
        )
        self._text_seen = not self._timed
        self._started = False

    def _since_arrival(self) -> float:
        return max(0.0, time.time() - self._arrived)

    async def start(self, *, show_progress: bool) -> None:
        self._started = True
        self._metrics.active_streams.inc()
        await self._inner.start(show_progress=show_progress)

    async def update(self, reply: Reply) -> None:
        if not self._text_seen and reply.text:
            self._text_seen = True
            self._metrics.first_text.observe(self._since_arrival())
        await self._inner.update(reply)

    async def finish(self, reply: Reply) -> None:
        await self._inner.finish(reply)
        if self._timed:
            if not self._text_seen and reply.text:
                self._text_seen = True
                self._metrics.first_text.observe(self._since_arrival())
            self._metrics.final_answer.observe(self._since_arrival())

    async def fail(self, message: str) -> None:
        await self._inner.fail(message)

    async def close(self, *, interrupted: bool = False) -> None:
        try:
            await self._inner.close(interrupted=interrupted)
        finally:
            if self._started:
                self._started = False
                self._metrics.active_streams.dec()

    def __getattr__(self, name: str) -> Any:
        # Sinks may grow optional extras (e.g. a stream's cancel hook); pass them through.
        return getattr(self._inner, name)
