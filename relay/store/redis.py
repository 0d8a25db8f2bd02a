"""``RedisStore``: the ``Store`` protocol on one shared Redis, for several relay replicas.

Teams may deliver consecutive messages of one conversation to different replicas, and a replica may
die mid-answer (DESIGN.md invariants 1, 2 and 5). Everything the replicas must agree on therefore
lives here: the turn journal (dedupe on the turn id and the arrival sequence number are one atomic
script, so the first replica to journal an activity wins and its number orders the conversation),
the session map, delivery progress, one-shot claims, and the conversation leases with fencing tokens
that ``relay.replicas`` uses to run each conversation on one replica at a time. Multi-key writes
are Lua scripts (``relay.store.redis_scripts``); reads are pipelined. Keys share one prefix (default
``relay:``), so several relays — or test runs — can share a Redis. One Redis primary (optionally
with replicas/Sentinel) is assumed: the scripts touch keys of several hash slots, so Redis Cluster
is not supported.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from relay.domain import (
    BotId,
    ConversationId,
    EventId,
    SessionId,
    SessionRecord,
    Turn,
    TurnId,
)
from relay.errors import ConfigError, LeaseLost
from relay.store import redis_lifecycle as lifecycle
from relay.store import redis_rows as codec
from relay.store import redis_scripts as lua
from relay.store.base import NOTE_TTL_SECONDS, Fence, current_fence
from relay.store.lifecycle import (
    DEFAULT_RETENTION,
    Erased,
    delivered_ids,
    final_delivery,
    scrub_finished,
)

DEFAULT_PREFIX = "relay:"
_KEY = "RELAY_DATABASE_URL"


def parse_redis_url(url: str) -> tuple[str, str]:
    """Split ``redis[s]://[user:pass@]host[:port][/db][?prefix=...]`` into (client URL, prefix).

    ``prefix`` is ours, so it is removed before redis-py sees the URL (it would refuse it). The URL
    is never echoed in an error: it may carry a password (invariant 7).
    """
    parts = urlsplit(url)
    if not parts.hostname:
        raise ConfigError(_KEY, "redis URL has no host")
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefixes = [v for k, v in query if k == "prefix"]
    prefix = prefixes[-1] if prefixes else DEFAULT_PREFIX
    if not prefix:
        raise ConfigError(_KEY, "redis URL prefix= must not be empty")
    rest = urlencode([(k, v) for k, v in query if k != "prefix"])
    return urlunsplit(parts._replace(query=rest)), prefix


class RedisStore:
    """The ``Store`` protocol on Redis; every key starts with ``prefix``."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        clock: Callable[[], float] = time.time,
        retention: float = DEFAULT_RETENTION,
    ) -> None:
        self._url = url
        self.prefix = prefix
        self.retention = retention  # the TTL of finished turns, idle sessions and claims
        self._ttl_ms = codec.ms(retention)
        self._clock = clock  # wall clock: turn and session timestamps outlive the process
        self._client: aioredis.Redis | None = None
        self._scripts: dict[str, AsyncScript] = {}

    @classmethod
    def from_url(cls, url: str, *, retention: float = DEFAULT_RETENTION) -> RedisStore:
        client_url, prefix = parse_redis_url(url)
        return cls(client_url, prefix=prefix, retention=retention)

    def __repr__(self) -> str:
        return f"RedisStore(prefix={self.prefix!r})"  # never the URL: it may hold a password

    # -- lifecycle -----------------------------------------------------------------------------

    async def open(self) -> None:
        if self._client is not None:
            return
        # redis-py's own bounded reconnect (3 tries, jittered backoff) absorbs a dropped
        # connection or a failover; a Redis that stays away surfaces as an error to the caller.
        client = aioredis.Redis.from_url(
            self._url, decode_responses=True, socket_timeout=5.0, socket_connect_timeout=5.0
        )
        try:
            await client.ping()
        except BaseException:
            await client.aclose()
            raise
        self._scripts = {
            name: client.register_script(getattr(lua, name))
            for name in (
                "ADD_TURN",
                "SAVE_TURN",
                "SAVE_DELIVERY",
                "PUT_SESSION",
                "DELETE_SESSION",
                "SET_SESSION_CURSOR",
                "ACQUIRE_LEASE",
                "RENEW_LEASE",
                "RELEASE_LEASE",
            )
        }
        self._client = client

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def ping(self) -> None:
        await self._redis.ping()

    @property
    def _redis(self) -> aioredis.Redis:
        # A closed redis-py client reconnects on use; a closed store must not (ping must fail).
        if self._client is None:
            raise RuntimeError(f"{self!r} is not open")
        return self._client

    # decode_responses=True: every reply is str; these say so to the type checker.
    async def _hgetall(self, key: str) -> dict[str, str]:
        return cast(dict[str, str], await self._redis.hgetall(key))

    async def _zrange(self, key: str, limit: int | None = None) -> list[str]:
        end = -1 if limit is None else max(limit, 1) - 1
        ids = cast(list[str], await self._redis.zrange(key, 0, end))
        return ids if limit is None else ids[:limit]

    async def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        self._redis  # noqa: B018 - raises if closed
        return await self._scripts[name](keys=keys, args=args)

    # -- keys ----------------------------------------------------------------------------------

    def _k(self, *parts: str) -> str:
        # Bot ids are GUIDs (no ':'), so "bot:conversation" cannot be ambiguous.
        return self.prefix + ":".join(parts)

    def _conv_keys(self, bot_id: BotId, conversation_id: ConversationId) -> tuple[str, str]:
        return self._k("conv", bot_id, conversation_id), self._k("open", bot_id, conversation_id)

    def _fence_args(self, fence: Fence | None) -> tuple[str, str]:
        fence = current_fence(fence)
        if fence is None:
            return self._k("lease"), ""  # any key: an empty token skips the check
        return self._k("lease", fence.key), str(fence.token)

    @staticmethod
    def _checked(result: Any, fence: Fence | None) -> int:
        if int(result) == -1:
            held = current_fence(fence)
            assert held is not None
            raise LeaseLost(held.key, held.token)
        return int(result)

    # -- turn journal --------------------------------------------------------------------------

    async def add_turn(self, turn: Turn) -> bool:
        now = self._clock()
        created_at = turn.created_at or now
        conv, open_ = self._conv_keys(turn.bot_id, turn.conversation_id)
        keys = [self._k("turn", turn.turn_id), self._k("seq"), conv, open_, self._k("unfinished")]
        args = [
            turn.turn_id,
            codec.dumps(codec.fixed(turn)),
            codec.dumps(codec.mutable(turn)),
            turn.state.value,
            "1" if turn.state.is_final else "0",
            repr(created_at),
            repr(now),
        ]
        inserted = int(await self._run("ADD_TURN", keys, args)) > 0
        if inserted:
            turn.created_at, turn.updated_at = created_at, now
        return inserted

    async def get_turn(self, turn_id: TurnId) -> Turn | None:
        data = await self._hgetall(self._k("turn", turn_id))
        return codec.to_turn(data) if data else None

    async def save_turn(self, turn: Turn, *, fence: Fence | None = None) -> None:
        now = self._clock()
        lease, token = self._fence_args(fence)
        conv, open_ = self._conv_keys(turn.bot_id, turn.conversation_id)
        session = self._k("session", turn.bot_id, turn.conversation_id)
        keys = [lease, self._k("turn", turn.turn_id), open_, self._k("unfinished"), conv, session]
        args = [
            token,
            turn.turn_id,
            codec.dumps(codec.mutable(turn)),
            turn.state.value,
            "1" if turn.state.is_final else "0",
            repr(now),
        ]
        if turn.state.is_final:
            # Recovery is over: keep only what feedback needs, and let it all expire (lifecycle).
            scrub_finished(turn)
            delivery = await self.get_delivery(turn.turn_id)
            ids = sorted(delivered_ids(delivery))
            keys += [self._msg_key(turn.bot_id, turn.conversation_id, i) for i in ids]
            args += [
                str(self._ttl_ms),
                codec.dumps(codec.fixed(turn)),
                codec.dumps(final_delivery(delivery)),
                self._k("turn", ""),
            ]
        if self._checked(await self._run("SAVE_TURN", keys, args), fence) == 0:
            raise KeyError(turn.turn_id)
        turn.updated_at = now

    async def _load(self, turn_ids: list[str]) -> list[Turn]:
        if not turn_ids:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for turn_id in turn_ids:
                pipe.hgetall(self._k("turn", turn_id))
            rows: list[dict[str, str]] = await pipe.execute()
        return [codec.to_turn(row) for row in rows if row]

    async def unfinished_turns(self, limit: int = 1000) -> list[Turn]:
        ids = await self._zrange(self._k("unfinished"), limit)
        # A turn may finish between the two round trips: filter on the state actually read.
        return [t for t in await self._load(ids) if not t.state.is_final]

    async def conversation_turns(
        self, bot_id: BotId, conversation_id: ConversationId
    ) -> list[Turn]:
        conv, _ = self._conv_keys(bot_id, conversation_id)
        return await self._load(await self._zrange(conv))

    async def unfinished_conversation_turns(
        self, bot_id: BotId, conversation_id: ConversationId, limit: int = 100
    ) -> list[Turn]:
        _, open_ = self._conv_keys(bot_id, conversation_id)
        ids = await self._zrange(open_, limit)
        return [t for t in await self._load(ids) if not t.state.is_final]

    async def save_delivery(
        self, turn_id: TurnId, data: dict[str, Any], *, fence: Fence | None = None
    ) -> None:
        lease, token = self._fence_args(fence)
        keys = [lease, self._k("turn", turn_id)]
        args = [token, codec.dumps(data), codec.dumps(final_delivery(data)), codec.FINAL_STATES]
        if self._checked(await self._run("SAVE_DELIVERY", keys, args), fence) == 0:
            raise KeyError(turn_id)

    async def get_delivery(self, turn_id: TurnId) -> dict[str, Any]:
        raw = await self._redis.hget(self._k("turn", turn_id), "delivery")
        data = json.loads(raw) if raw else {}
        return data if isinstance(data, dict) else {}

    # -- sessions ------------------------------------------------------------------------------

    async def get_session(
        self, bot_id: BotId, conversation_id: ConversationId
    ) -> SessionRecord | None:
        row = await self._hgetall(self._k("session", bot_id, conversation_id))
        if not row:
            return None
        return SessionRecord(
            bot_id=bot_id,
            conversation_id=conversation_id,
            session_id=SessionId(row["session_id"]),
            last_event_id=EventId(row["last_event_id"]) if row.get("last_event_id") else None,
            show_progress=row.get("show_progress") == "1",
            created_at=float(row["created_at"]),
            updated_at=float(row["updated_at"]),
        )

    async def put_session(self, rec: SessionRecord, *, fence: Fence | None = None) -> None:
        now = self._clock()
        lease, token = self._fence_args(fence)
        keys = [lease, self._k("session", rec.bot_id, rec.conversation_id)]
        args = [
            token,
            rec.session_id,
            rec.last_event_id or "",  # event ids are never empty: "" means none
            "1" if rec.show_progress else "0",
            repr(rec.created_at or now),
            repr(now),
            str(self._ttl_ms),
        ]
        self._checked(await self._run("PUT_SESSION", keys, args), fence)
        rec.updated_at = now

    async def delete_session(
        self, bot_id: BotId, conversation_id: ConversationId, *, fence: Fence | None = None
    ) -> None:
        lease, token = self._fence_args(fence)
        keys = [lease, self._k("session", bot_id, conversation_id)]
        self._checked(await self._run("DELETE_SESSION", keys, [token]), fence)

    async def set_session_cursor(
        self,
        bot_id: BotId,
        conversation_id: ConversationId,
        last_event_id: EventId,
        *,
        fence: Fence | None = None,
    ) -> None:
        lease, token = self._fence_args(fence)
        keys = [lease, self._k("session", bot_id, conversation_id)]
        args = [token, last_event_id, repr(self._clock()), str(self._ttl_ms)]
        self._checked(await self._run("SET_SESSION_CURSOR", keys, args), fence)

    # -- retention and erasure: relay.store.lifecycle, relay.store.redis_lifecycle --------------

    def _msg_key(self, bot_id: str, conversation_id: str, activity_id: str) -> str:
        return self._k("msg", bot_id, lifecycle.conversation_digest(conversation_id), activity_id)

    async def release_claim(self, key: str) -> None:
        await self._redis.delete(self._k("claim", key))

    async def find_delivered_turn(
        self, bot_id: BotId, conversation_id: ConversationId, activity_id: str
    ) -> Turn | None:
        turn_id = await self._redis.get(self._msg_key(bot_id, conversation_id, activity_id))
        return await self.get_turn(TurnId(str(turn_id))) if turn_id else None

    async def prune(self, *, batch: int = 500) -> Erased:
        return Erased()  # every key the relay writes expires by itself (TTLs set above)

    async def forget_conversation(
        self, conversation_id: ConversationId, bot_id: BotId | None = None
    ) -> Erased:
        r, prefix = self._redis, self.prefix
        return await lifecycle.forget_conversation(r, prefix, conversation_id, bot_id)

    async def forget_user(self, aad_object_id: str) -> Erased:
        return await lifecycle.forget_user(self._redis, self.prefix, aad_object_id)

    # -- one-shot claims and leases ------------------------------------------------------------

    async def claim_once(self, key: str, ttl_seconds: float) -> bool:
        ttl = codec.ms(min(ttl_seconds, self.retention))  # no claim outlives the retention period
        ok = await self._redis.set(self._k("claim", key), "1", nx=True, px=ttl)
        return bool(ok)

    async def acquire_lease(self, key: str, owner: str, ttl_seconds: float) -> int | None:
        keys = [self._k("lease", key), self._k("lease-token")]
        token = await self._run("ACQUIRE_LEASE", keys, [owner, codec.ms(ttl_seconds)])
        return int(token) if token is not None else None

    async def renew_lease(self, key: str, owner: str, token: int, ttl_seconds: float) -> bool:
        args = [owner, str(token), codec.ms(ttl_seconds)]
        return int(await self._run("RENEW_LEASE", [self._k("lease", key)], args)) == 1

    async def release_lease(self, key: str, owner: str, token: int) -> None:
        await self._run("RELEASE_LEASE", [self._k("lease", key)], [owner, str(token)])

    async def lease_holder(self, key: str) -> str | None:
        owner = await self._redis.hget(self._k("lease", key), "owner")
        return str(owner) if owner else None

    # -- conversation notes (issue 13's block) --------------------------------------------------

    def _note_key(self, bot_id: BotId, conversation_id: ConversationId, name: str) -> str:
        return self._k("note", bot_id, lifecycle.conversation_digest(conversation_id), name)

    async def merge_note(
        self,
        bot_id: BotId,
        conversation_id: ConversationId,
        name: str,
        fields: dict[str, Any],
    ) -> dict[str, Any]:
        key = self._note_key(bot_id, conversation_id, name)
        present = {k: codec.dumps(v) for k, v in fields.items() if v is not None}
        absent = [k for k, v in fields.items() if v is None]
        # MULTI/EXEC: the write and the read are one atomic step, one field per hash entry.
        async with self._redis.pipeline(transaction=True) as pipe:
            if present:
                pipe.hset(key, mapping=cast(dict[Any, Any], present))
            if absent:
                pipe.hdel(key, *absent)
            pipe.hgetall(key)
            pipe.pexpire(key, codec.ms(min(NOTE_TTL_SECONDS, self.retention)))
            results = await pipe.execute()
        return _note(cast(dict[str, str], results[-2]))

    async def get_note(
        self, bot_id: BotId, conversation_id: ConversationId, name: str
    ) -> dict[str, Any] | None:
        row = await self._hgetall(self._note_key(bot_id, conversation_id, name))
        return _note(row) if row else None


def _note(row: dict[str, str]) -> dict[str, Any]:
    return {k: json.loads(v) for k, v in row.items()}
