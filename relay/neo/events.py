"""Read one Neo chat turn off the SSE tail, surviving dropped connections and stalled streams.

``NeoClient.tail`` is one raw SSE connection; a Teams answer needs more than that. This module
turns it into "the chunks of one turn, each exactly once": it resumes a dropped connection with
``Last-Event-Id`` (documented for reconnects, neo-chat-api.md §a.4 [TAIL]), drops replayed events
by id, skips whatever is not a JSON object, decides where the turn ends (``[DONE]``, or end of
body after a terminal chunk, ai-sdk-v6-stream.md §3 "What ends a turn") and bounds every wait with a
first-event, an idle and a total limit, because an upstream LLM stream must never hang a turn
(peers-and-pitfalls.md §5 "Unbounded/hung LLM streams"). Parsing stays minimal — one
JSON parse per event (orjson, ``relay.fastjson``); meaning is ``relay.neo.chunks``' job.

Tail scoping (DESIGN.md invariant 9). One session is one event stream shared by all its turns,
and a turn the relay stopped tailing (Stop, deadline, failed tail) keeps writing into it, after the
next turn's ``since_cursor``. Which events are a turn's own is undocumented (neo-chat-api.md §b
items 1 and 3), so :class:`_Scope` handles both plausible shapes. *Assumption A*: if an event names
its turn — a ``chat_turn_id`` (or ``chatTurnId``) field on the chunk, or an envelope
``{"chat_turn_id": …, "chunk": {…}}`` — it is compared with the 202's ``chat_turn_id`` and events
of other turns are skipped. *Assumption B*: otherwise every turn's chunks begin with a ``start``
chunk (the AI SDK's default, ai-sdk-v6-stream.md §2), so when the previous turn did not reach its
terminal chunk (``TailScope.await_start``) everything before this turn's ``start`` — the old
turn's deltas, its ``finish`` and its ``[DONE]`` — is skipped. Skipped events still advance the
journaled event id.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from relay import fastjson
from relay.config import Settings
from relay.domain import EventId, SessionId
from relay.errors import AmbiguousError, RetryableError
from relay.neo.chunks import TERMINAL_TYPES
from relay.neo.client import SERVICE, NeoClient, SseFrame
from relay.neo.idle_timer import IdleTimer
from relay.turn_seams import TailScope

log = logging.getLogger(__name__)

DONE = "[DONE]"
OnEventId = Callable[[EventId], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class TailLimits:
    """Time and retry limits of one turn's tail (seconds).

    ``first_byte``: wait for a connection's first event; ``idle``: longest gap between events;
    ``total``: wall-clock cap for the whole turn, reconnects included; ``max_reconnects``: how many
    reconnects in a row may make no progress (a connection that delivered a new event resets the
    count, so benign proxy cuts on a long turn do not exhaust it — ``total`` still bounds
    everything); ``backoff_base`` / ``backoff_cap``: exponential backoff with jitter between
    reconnects; ``terminal_grace``: after ``finish`` / ``error`` / ``abort``, how long to wait for
    ``[DONE]`` or end of body before calling the turn over (Neo may keep the session stream open
    after a turn, neo-chat-api.md §b item 3).
    """

    first_byte: float = 60.0
    idle: float = 120.0
    total: float = 900.0
    max_reconnects: int = 10
    backoff_base: float = 0.2
    backoff_cap: float = 5.0
    terminal_grace: float = 2.0

    @classmethod
    def from_settings(cls, settings: Settings) -> TailLimits:
        return cls(
            first_byte=settings.sse_first_byte_timeout,
            idle=settings.sse_idle_timeout,
            total=settings.sse_total_timeout,
            max_reconnects=settings.sse_max_reconnects,
        )

    def backoff(self, attempt: int) -> float:
        """Delay before reconnect ``attempt`` (1-based): half fixed, half random (equal jitter)."""
        ceiling = min(self.backoff_cap, self.backoff_base * 2.0 ** max(0, attempt - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


def _redis_key(event_id: str | None) -> tuple[int, int] | None:
    """Sortable form of a Redis stream id ``<ms>-<seq>``; None for anything else."""
    if not event_id:
        return None
    ms, _, seq = event_id.partition("-")
    if not ms.isdigit() or (seq and not seq.isdigit()):
        return None
    return int(ms), int(seq or 0)


def tail_turn(
    client: NeoClient,
    session_id: SessionId,
    *,
    since: EventId | None,
    limits: TailLimits,
    on_event_id: OnEventId | None = None,
    scope: TailScope | None = None,
) -> AsyncGenerator[dict[str, Any], None]:
    """Yield the chunk dicts of one turn, in order and each once, across reconnects.

    Args:
        since: the post's ``since_cursor`` (the tail starts strictly after it), or a journaled
            ``last_event_id`` when resuming a turn after a restart.
        on_event_id: awaited once per new SSE ``id`` (before its chunk is yielded), so the
            caller can journal how far the turn got.

    Raises:
        RetryableError: ``max_reconnects`` reconnects in a row made no progress; tailing again
            later from the last journaled id is safe.
        AmbiguousError: the ``total`` time limit passed; the turn may still be running or may
            have finished on Neo's side, so the message must not be posted again.
        PermanentError / CredentialError: Neo refused the tail (4xx), from ``NeoClient.tail``.
    """
    # The generator itself, not a wrapper re-yielding it: every layer of async generators is
    # paid once per event (bench/README.md "Where a streamed turn's CPU goes"); closing it
    # closes its connection.
    return _TurnTail(client, session_id, since, limits, on_event_id, scope).chunks()


class _TurnTail:
    """The state of one turn's tail across its connections."""

    def __init__(
        self,
        client: NeoClient,
        session_id: SessionId,
        since: EventId | None,
        limits: TailLimits,
        on_event_id: OnEventId | None,
        scope: TailScope | None = None,
    ) -> None:
        self._client = client
        self._scope = _Scope(scope)
        self._session_id = session_id
        self._since = since
        self._limits = limits
        self._on_event_id = on_event_id
        self._loop = asyncio.get_running_loop()
        self._deadline = self._loop.time() + limits.total
        self._seen: set[str] = set()
        # Ids up to `since` belong to earlier turns, even if a server replays them (§a.4 [AM]).
        self._high_water = _redis_key(since)
        self._idless_delivered = 0
        self._connections = 0
        self.last_id: EventId | None = None
        self.finished = False  # the turn is over: stop without reconnecting
        self.terminal_seen = False
        self.progress = False
        self.reason = ""
        self.retry_after: float | None = None

    def _remaining(self) -> float:
        return self._deadline - self._loop.time()

    def _over_time(self) -> AmbiguousError:
        return AmbiguousError(
            "neo stream exceeded total time", service=SERVICE, code="stream_timeout"
        )

    async def chunks(self) -> AsyncGenerator[dict[str, Any], None]:
        failures = 0
        while True:
            self.progress, self.retry_after = False, None
            async with aclosing(self._connection()) as connection:
                async for chunk in connection:
                    yield chunk
            if self.finished:
                return
            failures = 1 if self.progress else failures + 1
            if failures > self._limits.max_reconnects:
                raise RetryableError(
                    f"neo stream kept failing without progress ({failures} times; {self.reason})",
                    service=SERVICE,
                    code="stream_dropped",
                )
            delay = max(self._limits.backoff(failures), self.retry_after or 0.0)
            if delay >= self._remaining():
                raise self._over_time()
            log.info("neo tail %s: %s; reconnecting in %.2fs", self._session_id, self.reason, delay)
            await asyncio.sleep(delay)

    async def _connection(self) -> AsyncGenerator[dict[str, Any], None]:
        """One SSE connection; sets ``finished`` or ``reason`` before it ends."""
        resume = self.last_id or self._since
        self._connections += 1
        await self._client.before_request()  # Neo's budget: not part of the first-byte wait
        # A reconnect sends the resume point both ways: Last-Event-Id is the documented
        # reconnect mechanism, `since` covers a server that only reads the query [TAIL].
        frames = self._client.tail(
            self._session_id, since=resume, last_event_id=resume if self._connections > 1 else None
        )
        # Without ids a server can only replay from `since`; skip what was already delivered.
        skip = self._idless_delivered if self.last_id is None else 0
        first = True
        with IdleTimer() as timer:
            async with aclosing(frames):
                while True:
                    remaining = self._remaining()
                    if remaining <= 0:
                        raise self._over_time()
                    wait = self._limits.first_byte if first else self._limits.idle
                    if self.terminal_seen:
                        wait = min(wait, self._limits.terminal_grace)
                    timer.arm(min(wait, remaining))
                    try:
                        frame = await timer.reading(anext(frames))
                    except StopAsyncIteration:
                        self.finished = self.terminal_seen
                        self.reason = "connection closed before the turn ended"
                        return
                    except TimeoutError:
                        if self._remaining() <= 0:
                            raise self._over_time() from None
                        self.finished = self.terminal_seen
                        self.reason = f"no event within {wait:g}s" + (
                            " of connecting" if first else ""
                        )
                        return
                    except (RetryableError, AmbiguousError) as exc:
                        self.reason, self.retry_after = str(exc), getattr(exc, "retry_after", None)
                        return
                    first = False
                    if frame.id is None and skip > 0 and frame.data.strip() not in ("", DONE):
                        skip -= 1
                        continue
                    chunk = await self._accept(frame)
                    if chunk is not None:
                        yield chunk
                    if self.finished:
                        return

    async def _accept(self, frame: SseFrame) -> dict[str, Any] | None:
        """Dedupe by id, notice ``[DONE]`` and terminal chunks, parse one JSON object."""
        if frame.id is not None:
            key = _redis_key(frame.id)
            replayed = self._high_water is not None and key is not None and key <= self._high_water
            if frame.id in self._seen or replayed:
                log.debug("neo tail: event %s already delivered, skipped", frame.id)
                return None
            self._seen.add(frame.id)
            if key is not None:
                self._high_water = max(key, self._high_water or key)
            self.last_id = frame.id
            self.progress = True
            if self._on_event_id is not None:
                await self._on_event_id(frame.id)
        data = frame.data.strip()
        if data == DONE:
            # An earlier turn's [DONE] (before this turn began) does not end this turn.
            self.finished = self._scope.started
            return None
        if not data:
            return None  # an id-only or retry-only event
        if frame.id is None:
            self.progress = True
            if self.last_id is None:
                self._idless_delivered += 1
        try:
            chunk = fastjson.loads(data)
        except ValueError:
            log.debug("neo tail: non-JSON data skipped (%d chars)", len(data))
            return None
        if not isinstance(chunk, dict):
            log.debug("neo tail: JSON %s instead of an object, skipped", type(chunk).__name__)
            return None
        chunk = self._scope.admit(chunk)
        if chunk is None:
            return None
        if chunk.get("type") in TERMINAL_TYPES:
            self.terminal_seen = True
        return chunk


_TURN_KEYS = ("chat_turn_id", "chatTurnId")


class _Scope:
    """Decides which chunks are this turn's own (module docstring, assumptions A and B)."""

    def __init__(self, scope: TailScope | None) -> None:
        self._own = scope.chat_turn_id if scope else None
        self._own_seen = False
        self.started = not (scope is not None and scope.await_start)

    def admit(self, chunk: dict[str, Any]) -> dict[str, Any] | None:
        named = next((v for k in _TURN_KEYS if isinstance(v := chunk.get(k), str) and v), None)
        inner = chunk.get("chunk")
        if named is not None and isinstance(inner, dict):
            chunk = inner  # a {chat_turn_id, chunk} envelope
        if named is not None and self._own is not None:
            if named != self._own:
                if not self._own_seen:
                    self.started = False  # another turn is still writing: its [DONE] is not ours
                log.debug("neo tail: chunk of turn %s skipped", named)
                return None
            self._own_seen = self.started = True
            return chunk
        if not self.started:
            if chunk.get("type") != "start":
                return None  # the previous, unfinished turn's leftovers
            self.started = True
        return chunk
