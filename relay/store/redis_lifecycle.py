"""Erasure on Redis: ``relay forget`` for the keys ``RedisStore`` writes.

Retention needs no code here: every key that holds conversation data gets a TTL when its turn
finishes or its session is written (``relay.store.redis_scripts``). The keys that never expire
hold none — the ``seq`` and ``lease-token`` counters (expiring them would break arrival order and
fencing), the ``unfinished`` index (unfinished turns are never pruned) and short-lived leases.
Erasure must find keys by conversation and by person: by conversation through the key names
(:data:`CONVERSATION_KEYS`, the one list of per-conversation key families), by person by scanning
the turn hashes (an operator's command, so O(keys) is acceptable; SCAN never blocks Redis).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis

from relay.domain import ConversationType
from relay.store.lifecycle import Erased, claim_mentions, delivered_ids

SCAN_COUNT = 1000


@dataclass(frozen=True, slots=True)
class KeyFamily:
    """Keys ``<prefix><name>:<bot>:<conversation>`` (``:<more>`` after it if ``suffix``)."""

    name: str
    label: str | None = None  # what `relay forget` reports it deleted (None: an internal index)
    suffix: bool = False  # more segments follow the conversation (an activity id, a note name)
    digest: bool = False  # the conversation id appears as conversation_digest(id)


# Every key family stored under one (bot, conversation): `relay forget` deletes them all. Turn
# hashes are reached through the `conv`/`open` members, claims by their name (claim_mentions).
CONVERSATION_KEYS: tuple[KeyFamily, ...] = (
    KeyFamily("conv"),
    KeyFamily("open"),
    KeyFamily("session", "sessions"),
    KeyFamily("msg", "index entries", suffix=True, digest=True),
    KeyFamily(
        "note", "notes", suffix=True, digest=True
    ),  # approvals shown, how the last tail ended
)


def conversation_digest(conversation_id: str) -> str:
    """A conversation id as one ``:``-free key segment (activity ids follow it in ``msg`` keys)."""
    return hashlib.sha256(conversation_id.encode()).hexdigest()[:24]


_GLOB = re.compile(r"([*?\[\]\\])")


def _glob_escape(text: str) -> str:
    return _GLOB.sub(r"\\\1", text)


async def _scan(r: aioredis.Redis, pattern: str) -> list[str]:
    return [str(k) async for k in r.scan_iter(match=pattern, count=SCAN_COUNT)]


def _owner(key: str, family: KeyFamily, prefix: str, conv: str) -> str | None:
    """The bot id of a family key of conversation ``conv``, or None if it is another's."""
    bot, _, rest = key[len(prefix) + len(family.name) + 1 :].partition(":")
    if rest == conv or (family.suffix and rest.startswith(conv + ":")):
        return bot
    return None


async def forget_conversation(
    r: aioredis.Redis, prefix: str, conversation_id: str, bot_id: str | None
) -> Erased:
    """Delete the conversation's turns, session, index and claims (of one bot, or every bot)."""
    erased = Erased()
    turn_ids: set[str] = set()
    bot_glob = _glob_escape(bot_id) if bot_id else "*"
    for family in CONVERSATION_KEYS:
        conv = conversation_digest(conversation_id) if family.digest else conversation_id
        pattern = f"{_glob_escape(prefix)}{family.name}:{bot_glob}:{_glob_escape(conv)}"
        keys = [
            k
            for k in await _scan(r, pattern + (":*" if family.suffix else ""))
            if _owner(k, family, prefix, conv) is not None
        ]
        if family.name in ("conv", "open"):  # the journal's indexes name the turns
            for key in keys:
                turn_ids.update(str(m) for m in await r.zrange(key, 0, -1))
        if family.name == "session":
            for key in keys:
                if session_id := await r.hget(key, "session_id"):
                    erased.neo_sessions.add(str(session_id))
        if keys:
            deleted = int(await r.delete(*keys))
            if family.label:
                erased[family.label] += deleted
    claims = [
        k
        for k in await _scan(r, f"{_glob_escape(prefix)}claim:*")
        if claim_mentions(k[len(prefix) + len("claim:") :], bot_id, conversation_id)
    ]
    if claims:
        erased["claims"] += int(await r.delete(*claims))
    if turn_ids:
        erased.neo_sessions |= await _turn_sessions(r, [f"{prefix}turn:{t}" for t in turn_ids])
        await r.zrem(f"{prefix}unfinished", *turn_ids)
        erased["turns"] += int(await r.delete(*(f"{prefix}turn:{t}" for t in turn_ids)))
    return erased


async def _turn_sessions(r: aioredis.Redis, keys: list[str]) -> set[str]:
    """The Neo sessions the turns at ``keys`` were posted to."""
    async with r.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hget(key, "mut")
        values = cast(list[str | None], await pipe.execute())
    sessions = {json.loads(v).get("session_id") for v in values if v}
    return {str(s) for s in sessions if s}


async def _turn_rows(r: aioredis.Redis, prefix: str) -> list[tuple[str, dict[str, Any]]]:
    keys = await _scan(r, f"{_glob_escape(prefix)}turn:*")
    rows: list[tuple[str, dict[str, Any]]] = []
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        async with r.pipeline(transaction=False) as pipe:
            for key in chunk:
                pipe.hget(key, "fixed")
            values = cast(list[str | None], await pipe.execute())
        rows += [(k, json.loads(v)) for k, v in zip(chunk, values, strict=True) if v]
    return rows


async def forget_user(r: aioredis.Redis, prefix: str, aad_object_id: str) -> Erased:
    """Delete a person's turns; their 1:1 conversations (session mapping included) entirely."""
    wanted = aad_object_id.lower()
    erased = Erased()
    personal: set[tuple[str, str]] = set()
    shared: list[tuple[str, dict[str, Any]]] = []
    for key, fixed in await _turn_rows(r, prefix):
        aad = (fixed.get("user") or {}).get("aad_object_id")
        if not isinstance(aad, str) or aad.lower() != wanted:
            continue
        ref = fixed.get("ref") or {}
        if ConversationType.parse(ref.get("conversation_type")) is ConversationType.PERSONAL:
            personal.add((str(ref.get("bot_id")), str(ref.get("conversation_id"))))
        else:
            shared.append((key, ref))
    for bot_id, conversation_id in sorted(personal):
        erased.merge(await forget_conversation(r, prefix, conversation_id, bot_id))
    if shared:
        erased.neo_sessions |= await _turn_sessions(r, [key for key, _ in shared])
    for key, ref in shared:
        turn_id = key[len(prefix) + len("turn:") :]
        bot, conv = str(ref.get("bot_id")), str(ref.get("conversation_id"))
        raw = await r.hget(key, "delivery")
        delivery = json.loads(raw) if raw else {}
        ids = delivered_ids(delivery) if isinstance(delivery, dict) else set()
        if ids:
            digest = conversation_digest(conv)
            erased["index entries"] += int(
                await r.delete(*(f"{prefix}msg:{bot}:{digest}:{i}" for i in ids))
            )
        for family in ("conv", "open"):
            await r.zrem(f"{prefix}{family}:{bot}:{conv}", turn_id)
        await r.zrem(f"{prefix}unfinished", turn_id)
        erased["turns"] += int(await r.delete(key))
    return erased
