"""tail_turn's turn scoping over real loopback SSE (relay.neo.events, assumptions A and B).

One session stream carries every turn; these tests put a previous turn's leftovers after the new
turn's ``since_cursor`` and check that only the new turn's chunks come out, whether the events
name their ``chat_turn_id`` (plain field or ``{chat_turn_id, chunk}`` envelope) or not.
"""

from __future__ import annotations

import asyncio
import json

from relay.devtools.neo_emulator import NeoEmulator
from relay.domain import BotId, EventId, ModelTier, SessionId
from relay.neo.chunks import assemble
from relay.neo.client import NeoClient
from relay.neo.events import tail_turn
from relay.turn_seams import TailScope
from tests.neo.test_events import LIMITS, expected_text


async def _two_turns(
    emulator: NeoEmulator, neo: NeoClient
) -> tuple[SessionId, EventId | None, str | None]:
    """A slow first turn, and a second one posted while the first is still being written."""
    emulator.chunk_delay = 0.02
    session = await neo.create_session(bot_id=BotId("b"), inbound_tenant_id=None, title="t")
    sid = session.session_id
    await neo.post_message(
        sid,
        message=" ".join(f"old{i}" for i in range(30)),
        client_message_id="1",
        model_tier=ModelTier.FAST,
    )
    while len(emulator.sessions[sid].log.events) < 5:
        await asyncio.sleep(0.01)
    posted = await neo.post_message(
        sid, message="new question", client_message_id="2", model_tier=ModelTier.FAST
    )
    return sid, posted.since_cursor, posted.chat_turn_id


async def _text(neo: NeoClient, sid: SessionId, since: EventId | None, scope: TailScope) -> str:
    chunks = [c async for c in tail_turn(neo, sid, since=since, limits=LIMITS, scope=scope)]
    return assemble(chunks).text


async def test_without_scope_the_old_turn_bleeds_in(emulator: NeoEmulator, neo: NeoClient) -> None:
    sid, since, _ = await _two_turns(emulator, neo)
    text = await _text(neo, sid, since, TailScope())
    assert "old" in text  # the failure the scoping exists for


async def test_await_start_skips_the_old_turns_leftovers(
    emulator: NeoEmulator, neo: NeoClient
) -> None:
    sid, since, _ = await _two_turns(emulator, neo)
    text = await _text(neo, sid, since, TailScope(await_start=True))
    assert text == expected_text("new question")


async def test_named_turns_are_filtered_by_chat_turn_id(
    emulator: NeoEmulator, neo: NeoClient
) -> None:
    emulator.name_turns = True
    sid, since, chat_turn_id = await _two_turns(emulator, neo)
    text = await _text(neo, sid, since, TailScope(chat_turn_id=chat_turn_id))
    assert text == expected_text("new question")


async def test_a_turn_id_envelope_is_unwrapped_and_filtered(
    emulator: NeoEmulator, neo: NeoClient
) -> None:
    session = await neo.create_session(bot_id=BotId("b"), inbound_tenant_id=None, title="t")
    log = emulator.sessions[session.session_id].log

    def put(turn: str, chunk: dict[str, object]) -> None:
        log.append(json.dumps({"chat_turn_id": turn, "chunk": chunk}))

    since = EventId(log.last_id)
    put("old", {"type": "text-delta", "id": "t", "delta": "stale "})
    put("old", {"type": "finish"})
    log.append("[DONE]")  # the old turn's end does not end ours
    put("mine", {"type": "start"})
    put("mine", {"type": "text-start", "id": "t"})
    put("mine", {"type": "text-delta", "id": "t", "delta": "fresh"})
    put("old", {"type": "text-delta", "id": "t", "delta": " late"})
    put("mine", {"type": "text-end", "id": "t"})
    put("mine", {"type": "finish"})
    log.append("[DONE]")
    scope = TailScope(chat_turn_id="mine")
    assert await _text(neo, session.session_id, since, scope) == "fresh"
