"""Contract tests: the exact JSON activity sequence the relay posts to Teams, per scenario.

Peers broke streaming when an SDK changed a field (peers-and-pitfalls.md §5, botbuilder-js#4902),
so every scenario's requests are normalised (ids, URLs) and compared with a reviewed snapshot in
``snapshots/``. The emulator's rule checks run on every request too (``violations``).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from relay.devtools.neo_emulator_streams import read_sse_chunks
from relay.domain import BotId, ConversationId, TurnState, make_turn_id
from tests.fakes.harness import BOT_A, Harness, close_harness, make_harness
from tests.paths import fixture
from tests.teams.stream_support import (
    NeoGate,
    assert_snapshot,
    normalise,
    release_one,
    text_chunks,
)

FULL_SSE = fixture("aisdk-v6", "full.sse")
SOURCE = {"type": "source-url", "sourceId": "s1", "url": "https://example.com/kb", "title": "KB"}


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    harness = await make_harness(tmp_path, stream_max_seconds=30.0)
    try:
        yield harness
    finally:
        await close_harness(harness)


async def _start(h: Harness, conv: str, *, paused: bool = True) -> NeoGate:
    gate = NeoGate(h)
    if paused:
        h.teams.pause()
    activity = h.activity(BOT_A, "weather in Berlin?", conversation_id=conv)
    gate.turn_id = make_turn_id(BotId(BOT_A.app_id), ConversationId(conv), activity["id"])
    await h.deliver(activity, bot=BOT_A)
    await h.wait_for(lambda: len(h.teams.stream_requests(conv)) >= 1, what="the first update")
    await gate.log()
    return gate


async def _typing_answered(h: Harness, conv: str) -> None:
    await h.wait_for(
        lambda: any(
            r.conversation_id == conv and r.status == 200 and not r.streaming
            for r in h.teams.received
        ),
        what="the typing indicator",
    )


async def _finished(h: Harness, conv: str, messages: int) -> None:
    h.teams.resume()
    await h.wait_for(lambda: len(h.teams.messages(conv)) >= messages, what="the answer")
    await h.wait_idle()


async def test_personal_answer_with_progress_text_and_citations(h: Harness) -> None:
    conv = "a:contract-full"
    chunks = read_sse_chunks(FULL_SSE)
    gate = await _start(h, conv)
    await gate.push(*chunks[0:8])  # data-status, start, start-step, reasoning → "Thinking…"
    await release_one(h, 2)
    await gate.push(*chunks[8:17])  # text without a blank line yet, tool call: its words show
    await release_one(h, 3)
    await gate.push(*chunks[17:22])  # second step's text: the first paragraph is complete
    await release_one(h, 4)
    await gate.push(*chunks[22:], done=True)  # source, finish
    await _finished(h, conv, 1)
    assert h.teams.violations == []
    assert_snapshot("personal_full", normalise(h.teams.received, conv))


async def test_group_chat_answer_is_typing_then_one_rich_message(h: Harness) -> None:
    conv = "19:contract-group@thread.v2"
    gate = NeoGate(h)
    act = h.activity(BOT_A, "weather?", conversation_id=conv, conversation_type="groupChat")
    await h.deliver(act, bot=BOT_A)
    await _typing_answered(h, conv)  # before the reply exists, so the snapshot is stable
    await gate.push(*read_sse_chunks(FULL_SSE), done=True)
    await _finished(h, conv, 1)
    assert h.teams.violations == []
    assert_snapshot("group_chat", normalise(h.teams.received, conv))


async def test_stop_mid_stream_ends_the_turn_cancelled_without_a_final(h: Harness) -> None:
    conv = "a:contract-stop"
    gate = await _start(h, conv, paused=False)
    await gate.push(*text_chunks("First paragraph.\n\nSecond"))
    await h.wait_for(lambda: len(h.teams.stream_requests(conv)) == 2, what="streamed text")
    stream_id = h.teams.stream_requests(conv)[0].activity.get("_id") or "1000"
    h.teams.press_stop(stream_id)
    await gate.push(*text_chunks(" paragraph.\n\nThird", start=False), settle=False)
    await h.wait_for(
        lambda: [r.status for r in h.teams.stream_requests(conv)] == [201, 202, 403],
        what="Teams refusing the update after Stop",
    )
    # The sink notices Stop in its sender; the turn ends at the agent's next chunk (update()
    # raises StreamCancelled), and nothing more goes to Teams.
    await gate.push(*text_chunks(" more", start=False), settle=False)
    await h.wait_idle()
    turn = await h.components.store.get_turn(gate.turn_id)
    assert turn is not None
    assert turn.state is TurnState.CANCELLED
    assert (await h.components.store.get_delivery(gate.turn_id))["cancelled"] is True
    assert h.teams.messages(conv) == []
    assert h.teams.violations == []
    assert_snapshot("personal_stop", normalise(h.teams.received, conv))


async def test_two_minute_budget_closes_the_stream_and_sends_the_rest(tmp_path: Path) -> None:
    h = await make_harness(tmp_path, stream_max_seconds=1.0)
    h.teams.stream_cap_seconds = 1.6  # Teams' 120 s cap, scaled like the relay's 100 s budget
    try:
        conv = "a:contract-cap"
        gate = await _start(h, conv, paused=False)
        await gate.push(*text_chunks("Para one.\n\nParatwo"))
        await h.wait_for(lambda: len(h.teams.messages(conv)) == 1, timeout=5, what="early final")
        await h.wait_for(lambda: len(h.teams.received) >= 4, what="the typing indicator")
        await gate.push(
            *text_chunks(" continues.\n\nParathree [1].", start=False),
            SOURCE,
            *text_chunks("", start=False, end=True)[1:],
            done=True,
        )
        await _finished(h, conv, 2)
        assert h.teams.violations == []
        assert h.teams.visible_text(conv) == [
            "Para one.",
            "Paratwo continues.\n\nParathree [1].",
        ]
        assert_snapshot("personal_budget", normalise(h.teams.received, conv))
    finally:
        await close_harness(h)


async def test_streaming_not_allowed_falls_back_to_a_normal_message(h: Harness) -> None:
    conv = "a:contract-403"
    h.teams.fail_next(
        403,
        code="ContentStreamNotAllowed",
        message="Content stream is not allowed",
        match=lambda a: any(e.get("type") == "streaminfo" for e in a.get("entities") or []),
    )
    gate = NeoGate(h)
    await h.deliver(h.activity(BOT_A, "weather?", conversation_id=conv), bot=BOT_A)
    await _typing_answered(h, conv)
    await gate.push(*read_sse_chunks(FULL_SSE), done=True)
    await _finished(h, conv, 1)
    assert h.teams.violations == []
    assert_snapshot("personal_not_allowed", normalise(h.teams.received, conv))


async def test_429_waits_for_retry_after_then_continues(h: Harness) -> None:
    conv = "a:contract-429"
    h.teams.fail_next(
        429,
        message="API calls quota exceeded",
        retry_after=0.5,
        match=lambda a: a.get("type") == "typing" and "Hello" in (a.get("text") or ""),
    )
    gate = await _start(h, conv, paused=False)
    await gate.push(*text_chunks("Hello there.\n\nMore"))
    await h.wait_for(lambda: len(h.teams.stream_requests(conv)) == 3, what="the retried update")
    first, retried = h.teams.stream_requests(conv)[1:3]
    assert first.status == 429
    assert retried.at - first.at >= 0.5
    await gate.push(*text_chunks(" text.", start=False, end=True), done=True)
    await _finished(h, conv, 1)
    assert h.teams.violations == []
    assert_snapshot("personal_429", normalise(h.teams.received, conv))


async def test_answer_longer_than_one_message(tmp_path: Path) -> None:
    h = await make_harness(tmp_path, message_limit_bytes=1000)
    try:
        conv = "a:contract-long"
        paragraphs = [f"Paragraph {i}: " + "lorem ipsum dolor sit amet " * 4 for i in range(8)]
        gate = await _start(h, conv)
        await gate.push(*text_chunks("\n\n".join(paragraphs)))
        await release_one(h, 2)
        await gate.push(*text_chunks("", start=False, end=True), done=True)
        await _finished(h, conv, 3)
        assert h.teams.violations == []
        visible = h.teams.visible_text(conv)
        assert len(visible) >= 3
        streamed = [r.activity["text"] for r in h.teams.stream_requests(conv)[1:-1]]
        assert streamed
        assert streamed[-1].startswith("Paragraph 0")
        assert visible[0].startswith(streamed[-1])
        # Every word once, in order: nothing repeated from the stream, nothing lost.
        assert " ".join(visible).split() == " ".join(paragraphs).split()
        assert_snapshot("personal_long", normalise(h.teams.received, conv))
    finally:
        await close_harness(h)


async def _answer_at_once(h: Harness, conv: str, *chunks: dict[str, Any]) -> None:
    gate = await _start(h, conv, paused=False)
    await gate.push(*chunks, done=True)
    await h.wait_for(lambda: bool(h.teams.messages(conv)), what="the final")
    await h.wait_idle()
    assert h.teams.violations == []


async def test_approval_only_answer_is_one_final_with_the_card(h: Harness) -> None:
    conv = "a:contract-approval"
    til = {"til_request_id": 42, "description": "Restart the print spooler on PRN-01"}
    steps = text_chunks("", end=True)
    await _answer_at_once(h, conv, *steps[:2], {"type": "data-til", "data": til}, *steps[3:])
    assert_snapshot("personal_approval_only", normalise(h.teams.received, conv))


async def test_error_ending_keeps_the_text_and_says_it_stopped_early(h: Harness) -> None:
    conv = "a:contract-error"
    await _answer_at_once(
        h,
        conv,
        *text_chunks("Partial ans"),
        {"type": "error", "errorText": "model error: rate limited"},
        {"type": "finish", "finishReason": "error"},
    )
    sent = normalise(h.teams.received, conv)
    final = sent[-1]["activity"]
    final["text"] = re.sub(r"\(ref chat-turn-\w+\)", "(ref <chat-turn>)", final["text"])
    assert_snapshot("personal_error_ending", sent)


async def test_table_final_replaces_the_streamed_rows_in_place(h: Harness) -> None:
    conv = "a:contract-table"
    table = "| Method | Command |\n|---|---|\n| PowerShell | `Restart-Service Spooler` |"
    gate = await _start(h, conv, paused=False)
    await gate.push(*text_chunks(f"Two ways.\n\n{table}\n\n"))
    await h.wait_for(
        lambda: "**Method**" in (h.teams.stream_requests(conv)[-1].activity.get("text") or ""),
        what="the flattened row streamed",
    )
    await gate.push(*text_chunks("Then print a test page.", start=False, end=True), done=True)
    await h.wait_for(lambda: len(h.teams.messages(conv)) == 2, what="the replace")
    await h.wait_idle()
    assert h.teams.violations == []
    assert_snapshot("personal_table_in_place", normalise(h.teams.received, conv))
