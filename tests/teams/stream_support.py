"""Helpers for the streaming tests: drive Neo's event log by hand and compare JSON snapshots.

Streaming is about timing, and a snapshot of "the exact JSON the relay posts" must not depend on
it. :class:`NeoGate` makes the emulated agent silent and lets a test append chunks to the turn's
event log itself, between Teams requests it holds with ``TeamsConnectorEmulator.pause()``; so which
state each update carries is decided by the test, not by the scheduler.
"""

from __future__ import annotations

import asyncio
import copy
import difflib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from relay.devtools.neo_emulator_streams import DONE, EventLog, TurnInput
from relay.devtools.teams_connector import Received
from relay.domain import BotId, ConversationId, TurnId, make_turn_id
from relay.store import open_store
from tests.fakes.harness import BOT_A, Harness

SNAPSHOTS = Path(__file__).parent / "snapshots"
SETTLE = 0.3  # time given to the relay to read appended chunks (it needs milliseconds)


class NeoGate:
    """The agent says nothing by itself; :meth:`push` appends chunks to the turn's SSE log."""

    def __init__(self, harness: Harness) -> None:
        self.h = harness
        self._log: EventLog | None = None
        self.turn_id = TurnId("")
        harness.neo.script = self._silent
        harness.neo.first_chunk_delay = 600.0  # the emulator's own [DONE] never comes in a test

    @staticmethod
    def _silent(turn: TurnInput) -> list[dict[str, Any]]:
        return []

    async def log(self) -> EventLog:
        if self._log is None:
            await self.h.wait_for(lambda: bool(self.h.neo.posted_messages), what="the Neo post")
            session_id = self.h.neo.posted_messages[-1]["session_id"]
            self._log = self.h.neo.sessions[session_id].log
        return self._log

    async def push(self, *chunks: dict[str, Any], done: bool = False, settle: bool = True) -> None:
        log = await self.log()
        for chunk in chunks:
            log.append(json.dumps(chunk, ensure_ascii=False))
        if done:
            log.append(DONE)
        if settle:
            await asyncio.sleep(SETTLE)


async def release_one(h: Harness, count: int) -> None:
    """Let the held stream request(s) answer, holding later ones; wait for request ``count``."""
    h.teams.resume()
    h.teams.pause()
    await h.wait_for(
        lambda: len(h.teams.stream_requests()) >= count, what=f"stream request {count}"
    )


async def first_paragraph_streamed(h: Harness, conv: str) -> tuple[NeoGate, dict[str, Any]]:
    """Start a 1:1 answer "Para one.\n\nParatwo" and wait until Teams shows its first paragraph;
    the gate (for the rest of the answer) and the user's activity."""
    gate = NeoGate(h)
    act = h.activity(BOT_A, "hi", conversation_id=conv)
    await h.deliver(act, bot=BOT_A)
    await gate.push(*text_chunks("Para one.\n\nParatwo"))
    await h.wait_for(
        lambda: h.teams.stream_requests(conv)[-1].activity.get("text") == "Para one.",
        what="the first paragraph streamed",
    )
    return gate, act


async def delivery_record(h: Harness, act: dict[str, Any]) -> dict[str, Any]:
    """The turn's journaled delivery record, read through a store of its own (the relay's may be
    stopped)."""
    conv = ConversationId(act["conversation"]["id"])
    turn_id = make_turn_id(BotId(BOT_A.app_id), conv, act["id"])
    store = open_store(h.settings.database_url)
    await store.open()
    try:
        return await store.get_delivery(turn_id)
    finally:
        await store.close()


def text_chunks(text: str, *, start: bool = True, end: bool = False) -> list[dict[str, Any]]:
    head: list[dict[str, Any]] = [
        {"type": "start", "messageId": "m1"},
        {"type": "start-step"},
        {"type": "text-start", "id": "t"},
    ]
    tail: list[dict[str, Any]] = [
        {"type": "text-end", "id": "t"},
        {"type": "finish-step"},
        {"type": "finish", "finishReason": "stop"},
    ]
    body = [{"type": "text-delta", "id": "t", "delta": text}] if text else []
    return (head if start else []) + body + (tail if end else [])


def normalise(received: list[Received], conversation_id: str) -> list[dict[str, Any]]:
    """The requests of one conversation with volatile ids replaced by stable placeholders."""
    names: dict[str, str] = {}

    def name(value: str) -> str:
        return names.setdefault(value, f"<id-{len(names) + 1}>")

    out: list[dict[str, Any]] = []
    for rec in received:
        if rec.conversation_id != conversation_id:
            continue
        act = copy.deepcopy(rec.activity)
        act.pop("_id", None)
        act["serviceUrl"] = "<service-url>"
        act.setdefault("conversation", {})["id"] = "<conversation>"
        if act.get("replyToId"):
            act["replyToId"] = "<reply-to>"
        for entity in act.get("entities") or []:
            if entity.get("type") == "streaminfo" and entity.get("streamId"):
                entity["streamId"] = name(entity["streamId"])
        out.append({"method": rec.method, "status": rec.status, "activity": act})
    return out


def assert_snapshot(name: str, data: list[dict[str, Any]]) -> None:
    """Compare with ``snapshots/<name>.json``; a mismatch fails with a unified diff.

    A missing snapshot (or ``UPDATE_SNAPSHOTS=1``) is written and the test fails once, so a new
    snapshot is always looked at before it is trusted.
    """
    path = SNAPSHOTS / f"{name}.json"
    actual = json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True) + "\n"
    if os.environ.get("UPDATE_SNAPSHOTS") == "1" or not path.exists():
        SNAPSHOTS.mkdir(exist_ok=True)
        path.write_text(actual, encoding="utf-8")
        pytest.fail(f"snapshot {path.name} written; review it and run again")
    expected = path.read_text(encoding="utf-8")
    if actual != expected:
        diff = difflib.unified_diff(
            expected.splitlines(), actual.splitlines(), "expected", "actual", lineterm=""
        )
        pytest.fail(f"activity sequence differs from {path.name}:\n" + "\n".join(diff))
