"""Streaming behaviour: the Teams emulator's rules, and the relay's stream under real timing.

The first half proves the connector emulator answers each breach the way Teams does (reference
teams-platform.md §1.1 error table) and records it, so the relay tests that assert
``violations == []`` would catch a real breach. The second half runs the relay end to end.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.devtools.neo_emulator_streams import fixture_script
from relay.devtools.teams_connector import TeamsConnectorEmulator
from relay.domain import BotId, ConversationId, Reply, make_turn_id
from relay.teams.markdown import to_teams_markdown
from relay.teams.render import final_message_payload
from relay.teams.stream import NO_ANSWER
from relay.teams.stream_text import streamable_text
from tests.fakes.harness import BOT_A, Harness, close_harness, make_harness
from tests.paths import fixture
from tests.teams.stream_support import (
    NeoGate,
    delivery_record,
    first_paragraph_streamed,
    text_chunks,
)

FULL_SSE = fixture("aisdk-v6", "full.sse")
GAP = 0.06  # the emulator below insists on 0.05 s between requests of a stream

# ------------------------------------------------------------------------------------------------
# The emulator's rules, one test each.
# ------------------------------------------------------------------------------------------------


@pytest.fixture
async def teams() -> AsyncIterator[TeamsConnectorEmulator]:
    emulator = TeamsConnectorEmulator(min_stream_interval=0.05)
    await emulator.start()
    try:
        yield emulator
    finally:
        await emulator.stop()


class Client:
    def __init__(self, teams: TeamsConnectorEmulator, http: aiohttp.ClientSession) -> None:
        self.teams, self.http = teams, http

    async def post(
        self,
        kind: str,
        text: str | None,
        *,
        stream_type: str = "streaming",
        seq: int | None = None,
        stream_id: str | None = None,
        conv: str = "a:1",
        conversation_type: str = "personal",
    ) -> tuple[int, dict[str, Any]]:
        info: dict[str, Any] = {"type": "streaminfo", "streamType": stream_type}
        if seq is not None:
            info["streamSequence"] = seq
        if stream_id is not None:
            info["streamId"] = stream_id
        body = {
            "type": kind,
            "text": text,
            "conversation": {"id": conv, "conversationType": conversation_type},
            "entities": [info],
        }
        url = f"{self.teams.base_url}v3/conversations/{conv}/activities"
        async with self.http.post(url, json=body) as resp:
            return resp.status, await resp.json()

    async def open(self, text: str = "Working…", **kw: Any) -> str:
        status, body = await self.post("typing", text, stream_type="informative", seq=1, **kw)
        assert status == 201
        await asyncio.sleep(GAP)
        return str(body["id"])


@pytest.fixture
async def client(teams: TeamsConnectorEmulator) -> AsyncIterator[Client]:
    async with aiohttp.ClientSession() as http:
        yield Client(teams, http)


def _code(body: dict[str, Any]) -> str:
    return f"{body['error']['code']}: {body['error']['message']}"


async def test_rule_text_must_be_cumulative(client: Client) -> None:
    sid = await client.open()
    assert (await client.post("typing", "A brown", seq=2, stream_id=sid))[0] == 202
    await asyncio.sleep(GAP)
    status, body = await client.post("typing", "A fox", seq=3, stream_id=sid)
    assert status == 403
    assert "previously streamed content" in _code(body)
    assert client.teams.violations == ["streamed text is not cumulative"]


async def test_rule_sequence_must_increase(client: Client) -> None:
    sid = await client.open()
    assert (await client.post("typing", "A", seq=2, stream_id=sid))[0] == 202
    await asyncio.sleep(GAP)
    status, body = await client.post("typing", "A b", seq=2, stream_id=sid)
    assert status == 202
    assert body["error"]["code"] == "ContentStreamSequenceOrderPreConditionFailed"
    assert client.teams.violations == ["stream sequence 2 after 2"]


async def test_rule_first_update_has_sequence_one(client: Client) -> None:
    await client.post("typing", "Working…", stream_type="informative", seq=3)
    assert client.teams.violations == ["first stream update has sequence 3"]


async def test_rule_no_faster_than_the_minimum_interval(client: Client) -> None:
    sid = await client.open()
    assert (await client.post("typing", "A", seq=2, stream_id=sid))[0] == 202
    status, _ = await client.post("typing", "A b", seq=3, stream_id=sid)  # no pause
    assert status == 429
    assert client.teams.violations[0].startswith(f"stream {sid} updated")


async def test_rule_one_request_in_flight(client: Client) -> None:
    sid = await client.open()
    client.teams.latency = 0.2
    await asyncio.gather(
        client.post("typing", "A", seq=2, stream_id=sid),
        client.post("typing", "A b", seq=3, stream_id=sid),
    )
    assert "a stream request sent while the previous one was in flight" in client.teams.violations


async def test_rule_two_minute_cap(client: Client) -> None:
    client.teams.stream_cap_seconds = 0.1
    sid = await client.open()
    await asyncio.sleep(0.1)
    status, body = await client.post("typing", "A", seq=2, stream_id=sid)
    assert status == 403
    assert "exceeded streaming time" in _code(body)


async def test_rule_final_carries_no_sequence(client: Client) -> None:
    sid = await client.open()
    status, _ = await client.post("message", "Done", stream_type="final", seq=2, stream_id=sid)
    assert status == 400
    assert client.teams.violations == ["final message carries streamSequence"]


async def test_rule_final_must_start_with_the_streamed_text(client: Client) -> None:
    sid = await client.open()
    await client.post("typing", "A brown fox", seq=2, stream_id=sid)
    await asyncio.sleep(GAP)
    status, _ = await client.post("message", "A fox", stream_type="final", stream_id=sid)
    assert status == 403
    assert client.teams.violations == ["final text does not contain the streamed text"]


async def test_rule_nothing_after_the_final(client: Client) -> None:
    sid = await client.open()
    status, _ = await client.post("message", "Done", stream_type="final", stream_id=sid)
    assert status == 200
    await asyncio.sleep(GAP)
    status, body = await client.post("typing", "Done more", seq=2, stream_id=sid)
    assert status == 403
    assert "already completed" in _code(body)
    assert client.teams.violations == ["request after the final message"]


async def test_rule_no_streaming_outside_personal_chats(client: Client) -> None:
    status, _ = await client.post(
        "typing", "Working…", stream_type="informative", seq=1, conversation_type="groupChat"
    )
    assert status == 405
    assert client.teams.violations == ["streaming attempted in a groupChat conversation"]


async def test_rule_informative_text_at_most_1000_chars(client: Client) -> None:
    status, _ = await client.post("typing", "x" * 1001, stream_type="informative", seq=1)
    assert status == 400
    assert client.teams.violations == ["informative update over 1000 characters"]


async def test_rule_one_stream_per_chat(client: Client) -> None:
    await client.open()
    await client.open()
    assert client.teams.violations == ["second concurrent stream in one chat"]


async def test_rule_stop_cancels_the_stream(client: Client) -> None:
    sid = await client.open()
    client.teams.press_stop(sid)
    status, body = await client.post("typing", "A", seq=2, stream_id=sid)
    assert status == 403
    assert "cancel" in _code(body)
    assert client.teams.violations == []  # pressing Stop is the user's right, not a breach


# ------------------------------------------------------------------------------------------------
# Streamable text: always a prefix of what comes later and of the final message.
# ------------------------------------------------------------------------------------------------

_BLOCKS = st.sampled_from(
    [
        "Plain words here.",
        "**bold** and <b>html</b> [1]",
        "# Heading",
        "Title\n===",
        "- item one\n- item two",
        "| a | b |\n|---|---|\n| 1 | 2 |",
        "```python\nx = 1\n\ny = [1]\n```",
        "> quoted\n> text",
        "",
    ]
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_BLOCKS, min_size=1, max_size=8), st.integers(min_value=0, max_value=400))
def test_streamable_text_is_prefix_stable(blocks: list[str], cut: int) -> None:
    full = "\n\n".join(blocks)
    early = streamable_text(full[:cut], 40_000)
    later = streamable_text(full, 40_000)
    final = final_message_payload(Reply(text_parts=[full]))[0]
    assert later.startswith(early)
    if final.in_place:  # tables shown in a card: the stream closes with its text, then replaces
        assert to_teams_markdown(full).text.startswith(later)
    else:
        assert final.text.startswith(later)


# ------------------------------------------------------------------------------------------------
# End to end.
# ------------------------------------------------------------------------------------------------


def _stream_gaps(h: Harness, conv: str) -> list[float]:
    times = [r.at for r in h.teams.stream_requests(conv)]
    return [b - a for a, b in itertools.pairwise(times)]


async def test_full_fixture_streams_within_the_rules_at_real_pace(harness: Harness) -> None:
    conv = "a:natural"
    harness.neo.script = fixture_script(FULL_SSE)
    harness.neo.chunk_delay = 0.05  # ~1.4 s of agent output
    await harness.deliver(harness.activity(BOT_A, "weather?", conversation_id=conv), bot=BOT_A)
    await harness.wait_for(lambda: len(harness.teams.messages(conv)) == 1, what="the answer")
    await harness.wait_idle()
    assert harness.teams.violations == []
    requests = harness.teams.stream_requests(conv)
    sequences = [r.activity["entities"][0].get("streamSequence") for r in requests]
    assert sequences == [*range(1, len(requests)), None]
    assert min(_stream_gaps(harness, conv)) >= 0.2  # RELAY_STREAM_INTERVAL in the harness
    [final] = harness.teams.messages(conv)
    assert final["text"] == "Let me check the weather.\n\nIt is 21°C and sunny in Berlin.\n\n[1]"
    assert 3 <= len(requests) <= 10


async def test_delivery_record_lets_a_restart_skip_what_was_shown(harness: Harness) -> None:
    conv = "a:record"
    harness.neo.script = fixture_script(FULL_SSE)
    act = harness.activity(BOT_A, "weather?", conversation_id=conv)
    await harness.deliver(act, bot=BOT_A)
    await harness.wait_for(lambda: len(harness.teams.messages(conv)) == 1, what="the answer")
    await harness.wait_idle()
    turn_id = make_turn_id(BotId(BOT_A.app_id), ConversationId(conv), act["id"])
    record = await harness.components.store.get_delivery(turn_id)
    [final] = harness.teams.messages(conv)
    assert record["mode"] == "stream"
    assert record["stream_id"] == final["entities"][0]["streamId"]
    assert record["sequence"] == len(harness.teams.stream_requests(conv)) - 1
    assert record["shown_chars"] == len(final["text"])
    assert record["stream_closed"] is True
    assert record["plan"] == "rest"
    assert record["cancelled"] is False


async def test_teams_cap_403_delivers_only_the_remainder(tmp_path: Path) -> None:
    h = await make_harness(tmp_path, stream_max_seconds=30.0)
    h.teams.stream_cap_seconds = 0.8  # Teams ends the stream before the relay's own budget
    try:
        conv = "a:cap403"
        gate = NeoGate(h)
        await h.deliver(h.activity(BOT_A, "long job", conversation_id=conv), bot=BOT_A)
        await gate.push(*text_chunks("Para one.\n\nParatwo"))
        await asyncio.sleep(0.8)
        await gate.push(*text_chunks(" continues.\n\nParathree.", start=False))
        await h.wait_for(
            lambda: h.teams.stream_requests(conv)[-1].status == 403, what="the cap's 403"
        )
        await gate.push(*text_chunks("", start=False, end=True), done=True)
        await h.wait_for(lambda: len(h.teams.messages(conv)) == 1, what="the remainder")
        await h.wait_idle()
        assert h.teams.violations == []
        # The streamed "Para one." stays as Teams closed it; only the rest is sent, once.
        assert h.teams.stream_requests(conv)[-2].activity["text"] == "Para one."
        assert h.teams.visible_text(conv) == ["Paratwo continues.\n\nParathree."]
    finally:
        await close_harness(h)


async def test_failure_mid_stream_closes_the_stream_with_the_error(tmp_path: Path) -> None:
    h = await make_harness(tmp_path, sse_max_reconnects=0)
    try:
        conv = "a:fail"
        h.neo.script = lambda turn: text_chunks("Para one.\n\nParatwo", end=True)
        h.neo.chunk_delay = 0.6
        h.neo.drop_stream_after(4, times=5)
        await h.deliver(h.activity(BOT_A, "hi", conversation_id=conv), bot=BOT_A)
        await h.wait_for(lambda: len(h.teams.messages(conv)) == 1, timeout=15, what="the error")
        await h.wait_idle()
        [final] = h.teams.messages(conv)
        assert final["text"].startswith("Para one.\n\nSorry, I couldn't get an answer")
        assert final["entities"][0] == {
            "type": "streaminfo",
            "streamId": h.teams.stream_requests(conv)[1].activity["entities"][0]["streamId"],
            "streamType": "final",
        }
        assert h.teams.violations == []
    finally:
        await close_harness(h)


async def test_rewritten_text_is_replaced_in_place_not_repeated(harness: Harness) -> None:
    conv = "a:reset-step"
    gate = NeoGate(harness)
    await harness.deliver(harness.activity(BOT_A, "hi", conversation_id=conv), bot=BOT_A)
    await gate.push(*text_chunks("Draft one.\n\nDraft"))
    await harness.wait_for(
        lambda: any(
            r.activity.get("text") == "Draft one." for r in harness.teams.stream_requests(conv)
        ),
        what="the draft to stream",
    )
    await gate.push(
        {"type": "reset-step"},
        {"type": "text-start", "id": "t2"},
        {"type": "text-delta", "id": "t2", "delta": "Better answer.\n\nFor real."},
        {"type": "text-end", "id": "t2"},
        {"type": "finish-step"},
        {"type": "finish", "finishReason": "stop"},
        done=True,
    )
    await harness.wait_for(lambda: len(harness.teams.messages(conv)) == 2, what="the answer")
    await harness.wait_idle()
    assert harness.teams.violations == []
    assert harness.teams.visible_text(conv) == ["Better answer.\n\nFor real."]


async def test_group_edit_in_place_posts_early_and_edits_to_the_rich_final(
    tmp_path: Path,
) -> None:
    h = await make_harness(tmp_path, group_edit_in_place=True)
    try:
        conv = "19:edit-in-place@thread.v2"
        gate = NeoGate(h)
        act = h.activity(BOT_A, "hi", conversation_id=conv, conversation_type="groupChat")
        await h.deliver(act, bot=BOT_A)
        await gate.push(*text_chunks("Para one.\n\nParatwo"))
        await h.wait_for(lambda: len(h.teams.messages(conv)) == 1, what="the early message")
        await gate.push(*text_chunks(" continues.\n\nParathree [1].", start=False))
        await h.wait_for(lambda: len(h.teams.messages(conv)) == 2, what="an edit")
        source = {"type": "source-url", "sourceId": "s", "url": "https://example.com/kb"}
        await gate.push(source, *text_chunks("", start=False, end=True), done=True)
        await h.wait_for(lambda: len(h.teams.messages(conv)) == 3, what="the final edit")
        await h.wait_idle()
        sent = [r for r in h.teams.received if r.activity.get("type") == "message"]
        assert [r.method for r in sent] == ["POST", "PUT", "PUT"]
        assert [r.activity["text"] for r in sent[:2]] == [
            "Para one.",
            "Para one.\n\nParatwo continues.\n\nParathree",  # word by word: "[1]." waits
        ]
        final = sent[-1].activity
        assert final["channelData"] == {"feedbackLoop": {"type": "default"}}
        assert final["entities"][0]["additionalType"] == ["AIGeneratedContent"]
        assert len(final["entities"][0]["citation"]) == 1
        assert sent[2].at - sent[1].at >= 0.26  # RELAY_STREAM_INTERVAL 0.2 × 4/3
        assert h.teams.visible_text(conv) == ["Para one.\n\nParatwo continues.\n\nParathree [1]."]
        assert h.teams.stream_requests(conv) == []  # no streaming outside 1:1 chats
        assert h.teams.violations == []
    finally:
        await close_harness(h)


def _finals(h: Harness, conv: str) -> list[dict[str, Any]]:
    return [
        m
        for m in h.teams.messages(conv)
        if (m.get("entities") or [{}])[0].get("type") == "streaminfo"
    ]


async def test_restart_mid_stream_closes_the_old_stream_then_sends_the_rest(
    tmp_path: Path,
) -> None:
    h = await make_harness(tmp_path, shutdown_grace=0.1)
    try:
        conv = "a:restart"
        gate, _act = await first_paragraph_streamed(h, conv)
        old_stream = h.teams.stream_requests(conv)[-1].activity["entities"][0]["streamId"]
        await h.stop_relay()  # the turn is interrupted mid-stream; its journal stays
        sent_before_restart = len(h.teams.received)
        await h.start_relay()  # resumes unfinished turns, re-reading the answer from Neo
        await h.wait_for(lambda: len(h.teams.messages(conv)) == 1, what="the old stream's final")
        # Nothing was sent while stopped; the first thing after the restart closes the old stream
        # with exactly the text Teams showed, plain (the rich features go with the answer).
        [closing] = [r.activity for r in h.teams.received[sent_before_restart:] if r.streaming]
        assert closing["type"] == "message"
        assert closing["text"] == "Para one."
        assert closing["entities"] == [
            {"type": "streaminfo", "streamId": old_stream, "streamType": "final"}
        ]
        await gate.push(*text_chunks(" continues.", start=False, end=True), done=True)
        await h.wait_for(lambda: len(h.teams.messages(conv)) == 2, what="the rest")
        await h.wait_idle()
        assert h.teams.visible_text(conv) == ["Para one.", "Paratwo continues."]
        assert len(_finals(h, conv)) == 1
        rest = h.teams.messages(conv)[-1]
        assert rest["entities"][0]["additionalType"] == ["AIGeneratedContent"]
        assert rest["channelData"] == {"feedbackLoop": {"type": "default"}}

        # The chat's next answer streams again: the old stream no longer blocks it (§1.1).
        await h.deliver(h.activity(BOT_A, "and now?", conversation_id=conv), bot=BOT_A)
        await h.wait_for(lambda: len(h.neo.posted_messages) == 2, what="the second question")
        await gate.push(*text_chunks("Second answer.\n\nDone.", end=True), done=True)
        await h.wait_for(lambda: len(h.teams.messages(conv)) == 3, what="the second answer")
        await h.wait_idle()
        assert h.teams.messages(conv)[-1]["text"] == "Second answer.\n\nDone."
        assert len(_finals(h, conv)) == 2
        assert h.teams.violations == []
    finally:
        await close_harness(h)


async def test_restart_after_only_progress_finalises_the_old_stream_with_the_answer(
    tmp_path: Path,
) -> None:
    h = await make_harness(tmp_path, shutdown_grace=0.1)
    try:
        conv = "a:restart-early"
        gate = NeoGate(h)
        await h.deliver(h.activity(BOT_A, "hi", conversation_id=conv), bot=BOT_A)
        await h.wait_for(lambda: len(h.teams.stream_requests(conv)) == 1, what="the progress")
        await gate.push(*text_chunks("No blank line yet"), settle=False)
        await h.stop_relay()
        await h.start_relay()
        await gate.push(*text_chunks(" — whole answer.", start=False, end=True), done=True)
        await h.wait_for(lambda: len(h.teams.messages(conv)) == 1, what="the answer")
        await h.wait_idle()
        # The bubble that showed "Working on it…" became the rich answer: one stream, one final.
        assert h.teams.visible_text(conv) == ["No blank line yet — whole answer."]
        [final] = _finals(h, conv)
        assert final["entities"][0]["streamType"] == "final"
        assert final["entities"][1]["additionalType"] == ["AIGeneratedContent"]
        requests = h.teams.stream_requests(conv)
        assert [r.activity["type"] for r in requests] == ["typing", "message"]  # one stream
        assert h.teams.violations == []
    finally:
        await close_harness(h)


async def test_a_stream_that_teams_already_ended_is_not_closed_twice(tmp_path: Path) -> None:
    h = await make_harness(tmp_path, shutdown_grace=0.1)
    try:
        conv = "a:restart-ended"
        gate, _act = await first_paragraph_streamed(h, conv)
        await h.stop_relay()
        h.teams.stream_cap_seconds = 0.0  # by the restart Teams has timed the stream out
        await h.start_relay()
        await gate.push(*text_chunks(" continues.", start=False, end=True), done=True)
        await h.wait_for(lambda: len(h.teams.messages(conv)) == 1, what="the rest")
        await h.wait_idle()
        refused = h.teams.stream_requests(conv)[-1]
        assert (refused.activity["type"], refused.status) == ("message", 403)  # treated as closed
        assert h.teams.visible_text(conv) == ["Paratwo continues."]
        assert h.teams.violations == []
    finally:
        await close_harness(h)


async def test_a_turn_without_an_answer_closes_its_stream(tmp_path: Path) -> None:
    h = await make_harness(tmp_path)
    try:
        conv = "a:no-answer"
        h.neo.max_image_bytes = 100
        h.teams.attachments["big"] = (b"\x89PNG\r\n\x1a\n" + b"0" * 5000, "image/png")
        act = h.activity(BOT_A, "", conversation_id=conv)  # only an unusable image
        act["attachments"] = [
            {"contentType": "image/*", "contentUrl": h.teams.attachment_url("big")}
        ]
        h.teams.latency = 0.05  # the progress update is out before the file is refused
        await h.deliver(act, bot=BOT_A)
        await h.wait_for(lambda: len(h.teams.messages(conv)) == 2, what="notice and final")
        await h.wait_idle()
        assert h.neo.posted_messages == []
        requests = h.teams.stream_requests(conv)
        assert [r.activity["entities"][0]["streamType"] for r in requests] == [
            "informative",
            "final",
        ]
        assert requests[-1].activity["text"] == NO_ANSWER
        assert requests[-1].status == 200
        assert h.teams.violations == []
    finally:
        await close_harness(h)


async def test_an_update_is_journaled_before_it_is_sent(tmp_path: Path) -> None:
    """Write-ahead (relay.teams.stream_state): while an update waits for Teams' answer, the
    delivery record already holds its text, so a crash then closes the stream with it."""
    h = await make_harness(tmp_path)
    try:
        conv = "a:ahead"
        gate, act = await first_paragraph_streamed(h, conv)
        h.teams.pause()
        await gate.push(*text_chunks(" continues.\n\nParathree", start=False), settle=False)
        await h.wait_for(lambda: len(h.teams.stream_requests(conv)) == 3, what="an update")
        on_the_wire = h.teams.stream_requests(conv)[-1]
        assert on_the_wire.status == 0  # recorded, not answered yet
        record = await delivery_record(h, act)
        text = on_the_wire.activity["text"]
        assert text == "Para one.\n\nParatwo continues."
        assert (record["shown_text"], record["shown_chars"]) == (text, len(text))
        assert (record["sequence"], record["stream_closed"]) == (3, False)
        h.teams.resume()
        await gate.push(*text_chunks(".", start=False, end=True), done=True)
        await h.wait_idle()
        assert h.teams.visible_text(conv) == ["Para one.\n\nParatwo continues.\n\nParathree."]
        assert h.teams.violations == []
    finally:
        h.teams.resume()
        await close_harness(h)


async def test_shutdown_mid_stream_sends_nothing_more(tmp_path: Path) -> None:
    h = await make_harness(tmp_path, shutdown_grace=0.1)
    try:
        conv = "a:shutdown"
        gate, act = await first_paragraph_streamed(h, conv)
        h.teams.latency = 0.3  # the next update is on the wire when the relay stops
        await gate.push(*text_chunks(" continues.\n\nParathree", start=False), settle=False)
        await h.wait_for(lambda: len(h.teams.stream_requests(conv)) == 3, what="an update")
        count = len(h.teams.received)
        await h.stop_relay()
        await asyncio.sleep(0.5)
        assert len(h.teams.received) == count  # no final, no notice, no typing
        # The update that was on the wire finished and was journaled: the next run knows it.
        record = await delivery_record(h, act)
        shown = "Para one.\n\nParatwo continues."
        assert h.teams.stream_requests(conv)[-1].activity["text"] == shown
        assert (record["shown_text"], record["stream_closed"]) == (shown, False)
        h.teams.latency = 0.0
        await h.start_relay()
        await gate.push(*text_chunks(".", start=False, end=True), done=True)
        await h.wait_for(lambda: len(h.teams.messages(conv)) == 2, what="final and rest")
        await h.wait_idle()
        assert h.teams.visible_text(conv) == [shown, "Parathree."]
        assert h.teams.violations == []
    finally:
        await close_harness(h)
