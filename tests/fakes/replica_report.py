"""What the multi-replica tests print when an answer never comes: which turns are not delivered,
who holds which conversation lease, and what every live replica's tasks wait on.

A conversation that stalls across replicas leaves no error anywhere — the holder is alive and
renews its lease — so the failure message has to carry the state: the journal's view of each
undelivered turn, the lease owners in Redis, and a SIGUSR1 task dump (``relay.ops.task_dump``) of
each replica still running, with its log's tail.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import redis.asyncio as aioredis

from relay.domain import BotId, ConversationId, TurnState
from relay.store.base import Store
from tests.fakes.relay_process import RelayProcess


async def undelivered(
    store: Store, bot_id: BotId, conversations: Iterable[str], per_conversation: int
) -> list[str]:
    """One line per turn not yet delivered (or not yet journaled); empty once all are."""
    lines: list[str] = []
    for conv in conversations:
        turns = await store.conversation_turns(bot_id, ConversationId(conv))
        if len(turns) < per_conversation:
            lines.append(f"{conv}: {len(turns)} of {per_conversation} turns journaled")
        lines.extend(
            f"{conv} {t.turn_id}: {t.state.value}, attempts {t.attempts}, error {t.error}, "
            f"updated {t.updated_at:.1f}"
            for t in turns
            if t.state is not TurnState.DELIVERED
        )
    return lines


async def lease_owners(client: aioredis.Redis, prefix: str) -> dict[str, str]:
    """conversation lease key -> owner, as Redis has them now."""
    owners: dict[str, str] = {}
    async for key in client.scan_iter(match=f"{prefix}lease:conv:*"):
        owner = await client.hget(key, "owner")
        if owner:
            owners[key.removeprefix(f"{prefix}lease:")] = owner
    return owners


async def stuck_report(
    pending: Sequence[str],
    replicas: Sequence[RelayProcess],
    *,
    redis_port: int,
    prefix: str,
) -> str:
    client = aioredis.Redis(port=redis_port, decode_responses=True)
    try:
        owners = await lease_owners(client, prefix)
    finally:
        await client.aclose()
    parts = ["not delivered:", *pending, "leases:", *(f"{k} {v}" for k, v in owners.items())]
    for replica in replicas:
        tail = replica.log()[-3000:]  # before the dump, which is logged too
        parts.append(f"--- replica pid {replica.proc.pid}: log tail")
        parts.append(tail)
        parts.append(f"--- replica pid {replica.proc.pid}: task dump")
        parts.append((await replica.task_dump())[:30000])
    return "\n".join(parts)
